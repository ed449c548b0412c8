//! Rule packs as data: which calls of which programs destroy data, grouped by ecosystem
//! (PostgreSQL tools, ORMs and frameworks, containers, Kubernetes and Helm, infrastructure
//! as code, each cloud and platform CLI, backstop itself). Each rule names programs and
//! the words a risky call of them carries; `matches` is the one interpreter. Rules that
//! need more than words (paths for `rm`, HTTP methods for `curl`, SQL) live in `rules.rs`.

use super::paths::base;

/// One rule (the first word of `rule!` names its pack): a call of one of `programs` whose positional words (options and their values
/// skipped) start with one alternative of each of `words`, that carries one word of each
/// group of `anywhere` somewhere among its arguments, and at least one of `flags` (when
/// there are any).
#[derive(Debug)]
pub(crate) struct CommandRule {
    /// The ecosystem it belongs to ("postgres" and "orm" rules put only databases at risk).
    pub pack: &'static str,
    /// The rule's name, reported in the hook's answer and the audit log.
    pub rule: &'static str,
    pub programs: &'static [&'static str],
    /// Positional words in order; an alternative ending in `*` matches by prefix.
    pub words: &'static [&'static [&'static str]],
    pub anywhere: &'static [&'static [&'static str]],
    pub flags: &'static [&'static str],
}

/// Options that take a value, per program: skipped with their value when positional words
/// are counted (`aws --profile p rds delete-db-instance`, `docker compose -f x.yml down`).
pub(crate) const VALUE_OPTIONS: &[(&[&str], &[&str])] = &[
    (
        &["aws"],
        &[
            "--profile",
            "--region",
            "--output",
            "--endpoint-url",
            "--query",
            "--cli-read-timeout",
            "--cli-connect-timeout",
            "--color",
            "--ca-bundle",
        ],
    ),
    (
        &["docker", "podman", "docker-compose"],
        &[
            "-f",
            "--file",
            "-p",
            "--project-name",
            "--env-file",
            "-H",
            "--host",
            "--context",
            "-c",
            "--project-directory",
            "--profile",
        ],
    ),
    (
        &["kubectl", "oc", "helm"],
        &[
            "-n",
            "--namespace",
            "--context",
            "--kubeconfig",
            "--cluster",
            "--user",
            "-l",
            "--selector",
            "-o",
            "--output",
        ],
    ),
    (
        &["fly", "flyctl"],
        &["-a", "--app", "-c", "--config", "-r", "--region"],
    ),
    (&["railway"], &["-s", "--service", "-e", "--environment"]),
    (&["heroku"], &["-a", "--app", "-r", "--remote"]),
    (
        &["gcloud"],
        &["--project", "--account", "--configuration", "--format"],
    ),
    (
        &["az"],
        &["--subscription", "-g", "--resource-group", "-o", "--output"],
    ),
    (
        &["doctl"],
        &["-t", "--access-token", "--context", "-o", "--output"],
    ),
    (
        &["terraform", "tofu", "terragrunt"],
        &["-chdir", "-var", "-var-file"],
    ),
    (&["supabase"], &["--workdir", "--project-ref"]),
    (&["alembic"], &["-c", "--config", "-n", "--name", "-x"]),
    (&["goose"], &["-dir", "-table"]),
    (&["migrate"], &["-path", "-database", "-source"]),
    (&["pscale"], &["--org"]),
    (&["mc", "rclone", "s3cmd"], &["--config", "-c"]),
];

const DOCKER: &[&str] = &["docker", "podman", "nerdctl"];
const KUBECTL: &[&str] = &["kubectl", "oc"];
const IAC: &[&str] = &["terraform", "tofu", "terragrunt"];
const FLY: &[&str] = &["fly", "flyctl"];
pub(crate) const KUBE_STORAGE: &[&str] = &[
    "pvc",
    "pv",
    "persistentvolumeclaim",
    "persistentvolumeclaims",
    "persistentvolume",
    "persistentvolumes",
    "namespace",
    "namespaces",
    "ns",
    "statefulset",
    "statefulsets",
    "sts",
    // Database operators' clusters (CloudNativePG, Crunchy, Zalando, Percona, MySQL).
    "cluster.postgresql*",
    "clusters.postgresql*",
    "postgrescluster*",
    "postgresql",
    "postgresqls*",
    "perconapgcluster*",
    "perconaxtradbcluster*",
    "innodbcluster*",
    "mysqlcluster*",
];

macro_rules! rule {
    ($pack:expr, $rule:expr, $programs:expr, words: $words:expr $(, anywhere: $any:expr)? $(, flags: $flags:expr)?) => {
        CommandRule {
            pack: $pack,
            rule: $rule,
            programs: $programs,
            words: $words,
            anywhere: rule!(@opt $($any)?),
            flags: rule!(@opt $($flags)?),
        }
    };
    (@opt) => { &[] };
    (@opt $e:expr) => { $e };
}

/// The built-in rules.
pub(crate) const RULES: &[CommandRule] = &[
    // PostgreSQL tools.
    rule!("postgres", "dropdb", &["dropdb"], words: &[]),
    rule!("postgres", "pg_dropcluster", &["pg_dropcluster"], words: &[]),
    // Other databases' own tools.
    rule!("databases", "database flush or drop", &["redis-cli", "valkey-cli", "keydb-cli"], words: &[], anywhere: &[&["FLUSHALL", "flushall", "FLUSHDB", "flushdb"]]),
    rule!("databases", "database flush or drop", &["mysqladmin"], words: &[&["drop"]]),
    rule!("databases", "database flush or drop", &["mongorestore"], words: &[], flags: &["--drop"]),
    rule!("databases", "database flush or drop", &["firebase"], words: &[&["firestore:delete", "database:remove"]]),
    // ORMs and frameworks: resets that drop or empty the database they point at.
    rule!("orm", "prisma reset", &["prisma"], words: &[&["migrate"], &["reset"]]),
    rule!("orm", "prisma reset", &["prisma"], words: &[&["db"], &["push"]], flags: &["--force-reset", "--accept-data-loss"]),
    rule!("orm", "rails db reset", &["rails", "rake"], words: &[&["db:drop", "db:reset", "db:schema:load", "db:structure:load", "db:purge", "db:truncate_all", "db:migrate:reset", "db:seed:replant"]]),
    rule!("orm", "django flush", &["manage.py", "django-admin"], words: &[&["flush", "reset_db", "sqlflush"]]),
    rule!("orm", "django migrate to zero", &["manage.py", "django-admin"], words: &[&["migrate"], &["*"], &["zero"]]),
    rule!("orm", "drizzle push --force", &["drizzle-kit"], words: &[&["push", "push:pg"]], flags: &["--force"]),
    rule!("orm", "drizzle drop", &["drizzle-kit"], words: &[&["drop"]]),
    rule!("orm", "sequelize db:drop", &["sequelize", "sequelize-cli"], words: &[&["db:drop", "db:migrate:undo:all", "db:seed:undo:all"]]),
    rule!("orm", "knex rollback --all", &["knex"], words: &[&["migrate:rollback"]], flags: &["--all"]),
    rule!("orm", "alembic downgrade base", &["alembic"], words: &[&["downgrade"], &["base"]]),
    rule!("orm", "laravel migrate:fresh", &["artisan"], words: &[&["migrate:fresh", "migrate:reset", "migrate:refresh", "db:wipe"]]),
    rule!("orm", "ecto reset", &["mix"], words: &[&["ecto.reset", "ecto.drop"]]),
    rule!("orm", "ecto reset", &["mix"], words: &[&["do"]], anywhere: &[&["ecto.reset", "ecto.drop", "ecto.reset,", "ecto.drop,"]]),
    rule!("orm", "typeorm schema:drop", &["typeorm", "typeorm-ts-node-commonjs", "typeorm-ts-node-esm"], words: &[&["schema:drop"]]),
    rule!("orm", "migration tool drop", &["flyway"], words: &[&["clean"]]),
    rule!("orm", "migration tool drop", &["liquibase"], words: &[&["dropAll", "drop-all"]]),
    rule!("orm", "migration tool drop", &["diesel", "sqlx"], words: &[&["database"], &["reset", "drop"]]),
    rule!("orm", "migration tool drop", &["dbmate"], words: &[&["drop"]]),
    rule!("orm", "migration tool drop", &["goose"], words: &[], anywhere: &[&["reset"]]),
    rule!("orm", "migration tool drop", &["migrate"], words: &[], anywhere: &[&["drop"]]),
    rule!("orm", "migration tool drop", &["atlas"], words: &[&["schema"], &["clean"]]),
    rule!("orm", "mikro-orm schema:drop", &["mikro-orm"], words: &[&["schema:drop", "schema:fresh", "migration:fresh"]]),
    rule!("orm", "payload migrate:fresh", &["payload"], words: &[&["migrate:fresh", "migrate:reset", "migrate:down"]]),
    rule!("orm", "hasura reset", &["hasura"], words: &[&["migrate"], &["apply"]], anywhere: &[&["all"]], flags: &["--down"]),
    rule!("orm", "hasura reset", &["hasura"], words: &[&["migrate"], &["delete"]], flags: &["--all"]),
    rule!("orm", "migration tool drop", &["node-pg-migrate"], words: &[&["reset"]]),
    // Containers.
    rule!("containers", "docker volume removal", DOCKER, words: &[&["volume"], &["rm", "remove", "prune"]]),
    rule!("containers", "docker volume removal", DOCKER, words: &[&["compose"], &["down"]], flags: &["-v", "--volumes"]),
    rule!("containers", "docker volume removal", DOCKER, words: &[&["down"]], flags: &["-v", "--volumes"]),
    rule!("containers", "docker volume removal", DOCKER, words: &[&["system"], &["prune"]], flags: &["--volumes"]),
    rule!("containers", "docker volume removal", DOCKER, words: &[&["rm", "container"]], flags: &["-v", "--volumes", "-fv", "-vf"]),
    rule!("containers", "docker volume removal", &["docker-compose"], words: &[&["down"]], flags: &["-v", "--volumes"]),
    // Kubernetes and Helm.
    rule!("kubernetes", "kubectl delete of storage or a namespace", KUBECTL, words: &[&["delete"], KUBE_STORAGE]),
    rule!("kubernetes", "helm uninstall", &["helm"], words: &[&["uninstall", "delete", "del", "un"]]),
    // Infrastructure as code.
    rule!("iac", "terraform destroy", IAC, words: &[&["destroy"]]),
    rule!("iac", "terraform destroy", IAC, words: &[&["apply"]], flags: &["-destroy", "--destroy"]),
    rule!("iac", "terraform destroy", &["terragrunt"], words: &[&["run-all"], &["destroy"]]),
    rule!("iac", "pulumi destroy", &["pulumi"], words: &[&["destroy", "down"]]),
    rule!("iac", "pulumi destroy", &["pulumi"], words: &[&["stack"], &["rm", "remove"]]),
    rule!("iac", "IaC stack removal", &["cdk", "cdktf"], words: &[&["destroy"]]),
    rule!("iac", "IaC stack removal", &["sst"], words: &[&["remove"]]),
    rule!("iac", "IaC stack removal", &["serverless", "sls"], words: &[&["remove"]]),
    rule!("iac", "IaC stack removal", &["copilot"], words: &[&["app", "env", "svc"], &["delete"]]),
    rule!("iac", "IaC stack removal", &["eksctl"], words: &[&["delete"], &["cluster"]]),
    // Platforms.
    rule!("railway", "railway delete", &["railway"], words: &[&["volume"], &["delete", "rm", "remove"]]),
    rule!("railway", "railway delete", &["railway"], words: &[&["down", "delete"]]),
    rule!("fly", "fly destroy", FLY, words: &[&["volumes", "volume", "vol"], &["destroy", "delete", "rm"]]),
    rule!("fly", "fly destroy", FLY, words: &[&["apps", "app", "postgres", "pg", "mpg"], &["destroy", "delete"]]),
    rule!("fly", "fly destroy", FLY, words: &[&["destroy"]]),
    rule!("heroku", "heroku destroy", &["heroku"], words: &[&["pg:reset", "addons:destroy", "apps:destroy", "destroy"]]),
    rule!("supabase", "supabase db reset", &["supabase"], words: &[&["db"], &["reset"]]),
    rule!("supabase", "cloud delete of data", &["supabase"], words: &[&["projects", "branches"], &["delete"]]),
    rule!("neon", "cloud delete of data", &["neonctl", "neon"], words: &[], anywhere: &[&["delete"]]),
    rule!("planetscale", "cloud delete of data", &["pscale"], words: &[&["database", "db", "branch", "backup"], &["delete"]]),
    rule!("turso", "cloud delete of data", &["turso"], words: &[&["db", "database", "group"], &["destroy", "delete"]]),
    rule!("cloudflare", "cloud delete of data", &["wrangler"], words: &[&["r2", "d1", "kv", "vectorize", "hyperdrive", "queues"]], anywhere: &[&["delete"]]),
    rule!("cloudflare", "cloud delete of data", &["wrangler"], words: &[&["d1"], &["delete"]]),
    rule!("ibm", "cloud delete of data", &["ibmcloud"], words: &[], anywhere: &[&["service-instance-delete", "delete"]]),
    rule!("s3 tools", "cloud delete of data", &["mc"], words: &[&["rb"]]),
    rule!("s3 tools", "cloud delete of data", &["mc"], words: &[&["rm"]], flags: &["--recursive", "-r"]),
    rule!("s3 tools", "cloud delete of data", &["rclone"], words: &[&["purge", "delete", "rmdirs"]]),
    rule!("s3 tools", "cloud delete of data", &["s3cmd"], words: &[&["rb"]]),
    rule!("s3 tools", "cloud delete of data", &["s3cmd"], words: &[&["del", "rm"]], flags: &["--recursive", "-r"]),
    // Clouds.
    rule!("aws", "cloud delete of data", &["aws"], words: &[&["rds"], &["delete-db*"]]),
    rule!("aws", "cloud delete of data", &["aws"], words: &[&["ec2"], &["delete-volume", "delete-snapshot"]]),
    rule!("aws", "cloud delete of data", &["aws"], words: &[&["s3"], &["rb"]]),
    rule!("aws", "cloud delete of data", &["aws"], words: &[&["ec2"], &["terminate-instances"]]),
    rule!("aws", "cloud delete of data", &["aws"], words: &[&["lightsail"], &["delete-relational-database*", "delete-disk*", "delete-bucket"]]),
    rule!("aws", "IaC stack removal", &["aws"], words: &[&["cloudformation"], &["delete-stack"]]),
    rule!("aws", "IaC stack removal", &["sam"], words: &[&["delete"]]),
    rule!("aws", "cloud delete of data", &["aws"], words: &[&["s3"], &["sync"]], flags: &["--delete"]),
    rule!("aws", "cloud delete of data", &["aws"], words: &[&["elasticache", "redshift", "docdb", "neptune", "opensearch", "es"], &["delete-*"]]),
    rule!("aws", "cloud delete of data", &["aws"], words: &[&["s3"], &["rm"]], flags: &["--recursive"]),
    rule!("aws", "cloud delete of data", &["aws"], words: &[&["s3api"], &["delete-bucket", "delete-objects"]]),
    rule!("aws", "cloud delete of data", &["aws"], words: &[&["dynamodb"], &["delete-table"]]),
    rule!("aws", "cloud delete of data", &["aws"], words: &[&["efs"], &["delete-file-system"]]),
    rule!("aws", "cloud delete of data", &["aws"], words: &[&["backup"], &["delete-*"]]),
    rule!("gcp", "cloud delete of data", &["gcloud"], words: &[], anywhere: &[&["delete"], &["sql", "disks", "snapshots", "filestore", "spanner", "buckets", "instances"]]),
    rule!("gcp", "cloud delete of data", &["gsutil"], words: &[&["rb"]]),
    rule!("gcp", "cloud delete of data", &["gcloud"], words: &[&["projects"], &["delete"]]),
    rule!("gcp", "cloud delete of data", &["gcloud"], words: &[&["storage"], &["rm"]], flags: &["-r", "--recursive"]),
    rule!("gcp", "cloud delete of data", &["gsutil"], words: &[&["rm"]], flags: &["-r", "-rf", "-R"]),
    rule!("azure", "cloud delete of data", &["az"], words: &[], anywhere: &[&["delete"], &["postgres", "mysql", "sql", "disk", "snapshot", "storage", "cosmosdb"]]),
    rule!("azure", "cloud delete of data", &["az"], words: &[&["group"], &["delete"]]),
    rule!("digitalocean", "cloud delete of data", &["doctl"], words: &[], anywhere: &[&["delete"], &["databases", "database", "volume", "volumes", "snapshot"]]),
    // backstop itself.
    rule!("backstop", "backstop prune --yes", &["backstop"], words: &[], anywhere: &[&["prune"]], flags: &["--yes", "-y"]),
    rule!("backstop", "backstop restore --yes", &["backstop"], words: &[], anywhere: &[&["restore"]], flags: &["--yes", "-y"]),
];

/// A tool that runs SQL it is given, other than the SQL clients: the options whose value
/// is SQL or a SQL file, a positional operand that is SQL, and whether it reads SQL on
/// stdin (heredocs, here-strings, pipes).
#[derive(Debug)]
pub(crate) struct SqlRunner {
    pub programs: &'static [&'static str],
    pub words: &'static [&'static str],
    pub sql_options: &'static [&'static str],
    pub file_options: &'static [&'static str],
    /// Index among the positional words (after `words`) of an operand that is SQL.
    pub sql_operand: Option<usize>,
    pub stdin: bool,
}

/// `SqlRunner` in one line: programs, leading words, SQL options, SQL-file options, SQL
/// operand, stdin.
const fn runner(
    programs: &'static [&'static str],
    words: &'static [&'static str],
    sql_options: &'static [&'static str],
    file_options: &'static [&'static str],
    sql_operand: Option<usize>,
    stdin: bool,
) -> SqlRunner {
    SqlRunner {
        programs,
        words,
        sql_options,
        file_options,
        sql_operand,
        stdin,
    }
}

#[rustfmt::skip]
pub(crate) const SQL_RUNNERS: &[SqlRunner] = &[
    runner(&["prisma"], &["db", "execute"], &[], &["--file"], None, true),
    runner(&["wrangler"], &["d1", "execute"], &["--command"], &["--file"], None, false),
    runner(&["turso"], &["db", "shell"], &[], &[], Some(1), true),
    runner(&["manage.py", "django-admin"], &["dbshell"], &[], &[], None, true),
    runner(&["rails"], &["dbconsole"], &[], &[], None, true),
    runner(&["rails"], &["db"], &[], &[], None, true),
    runner(&["heroku"], &["pg:psql"], &["-c", "--command"], &["-f", "--file"], None, true),
    runner(&["cockroach"], &["sql"], &["-e", "--execute"], &["-f", "--file"], None, true),
    runner(&["clickhouse", "clickhouse-client"], &[], &["-q", "--query"], &["--queries-file"], None, true),
    runner(&["sqlcmd"], &[], &["-Q", "-q"], &["-i"], None, false),
    runner(&["duckdb"], &[], &["-c"], &["-f"], Some(1), true),
    runner(&["supabase"], &["db", "query"], &[], &["--file", "-f"], Some(0), true),
    runner(&["fly", "flyctl"], &["postgres", "connect"], &[], &[], None, true),
    runner(&["railway"], &["connect"], &[], &[], None, true),
];

/// The SQL runner a call of `prog` with `args` is, if any.
pub(crate) fn sql_runner(prog: &str, args: &[&str]) -> Option<&'static SqlRunner> {
    let words = positional(prog, args);
    SQL_RUNNERS
        .iter()
        .find(|r| r.programs.contains(&prog) && words.starts_with(r.words))
}

/// Package runners and interpreters: the program after them does the work. Each entry is a
/// runner and the words that must follow it (`poetry run`, `bundle exec`); options of the
/// runner before the program are skipped.
const LAUNCHERS: &[(&str, &[&str])] = &[
    ("npx", &[]),
    ("pnpx", &[]),
    ("bunx", &[]),
    ("yarn", &[]),
    ("pnpm", &["exec"]),
    ("pnpm", &["dlx"]),
    ("pnpm", &[]),
    ("npm", &["exec"]),
    ("bun", &["x"]),
    ("bun", &["run"]),
    ("deno", &["run"]),
    ("poetry", &["run"]),
    ("uv", &["run"]),
    ("pipenv", &["run"]),
    ("pdm", &["run"]),
    ("hatch", &["run"]),
    ("bundle", &["exec"]),
    ("dotenv", &[]),
    ("php", &[]),
    ("sail", &[]),
    ("doppler", &["run"]),
    ("op", &["run"]),
    ("infisical", &["run"]),
    ("aws-vault", &["exec"]),
    ("with-env", &[]),
    ("node", &[]),
    ("ts-node", &[]),
    ("tsx", &[]),
];

/// The words of a call with package runners and interpreters taken off the front:
/// `npx -y prisma migrate reset` -> `prisma migrate reset`, `python3 -m alembic downgrade
/// base` -> `alembic downgrade base`, `python manage.py flush` -> `manage.py flush`.
#[cfg(test)]
pub(crate) fn unwrap_launchers<'a>(words: &[&'a str]) -> Vec<&'a str> {
    let mut w: Vec<&'a str> = words.to_vec();
    for _ in 0..4 {
        match unwrap_once(&w) {
            Some(i) if i < w.len() => {
                w.drain(..i);
            }
            _ => break,
        }
    }
    w
}

/// Options of package runners that take a value.
const RUNNER_VALUE_OPTIONS: &[&str] = &[
    "--filter",
    "-F",
    "-C",
    "--dir",
    "--prefix",
    "-w",
    "--workspace",
    "--cwd",
    "--directory",
];

/// How many words of a call belong to the runner or interpreter in front (`npx -y`,
/// `poetry run`, `python3 -m`), or None when the first word is the program itself.
pub(crate) fn unwrap_once(w: &[&str]) -> Option<usize> {
    let first = *w.first()?;
    let prog = base(first);
    let mut next = None;
    if matches!(prog, "python" | "python3" | "py") || prog.starts_with("python3.") {
        let mut i = 1;
        while i < w.len() && w[i].starts_with('-') && w[i] != "-m" {
            i += 1;
        }
        if w.get(i) == Some(&"-m") {
            next = Some(i + 1);
        } else if w.get(i).is_some_and(|a| a.ends_with(".py")) {
            next = Some(i);
        }
    } else {
        for (runner, subs) in LAUNCHERS {
            if prog != *runner {
                continue;
            }
            // The runner's options before its verb (`pnpm --filter @shop/db exec`).
            let mut j = 1;
            while !subs.is_empty() && j < w.len() && w[j].starts_with('-') {
                j += if RUNNER_VALUE_OPTIONS.contains(&w[j]) {
                    2
                } else {
                    1
                };
            }
            if !w.get(j..).is_some_and(|rest| rest.starts_with(subs)) {
                continue;
            }
            // Secret injectors run what follows `--` (`doppler run -- CMD`,
            // `aws-vault exec PROFILE -- CMD`).
            if matches!(prog, "doppler" | "op" | "infisical" | "aws-vault") {
                next = w.iter().position(|a| *a == "--").map(|k| k + 1);
                break;
            }
            let mut i = j + subs.len();
            // The runner's own options (`npx -y`, `dotenv -e .env --`).
            while i < w.len() && w[i].starts_with('-') {
                i += if matches!(w[i], "-e" | "-p" | "--package" | "-c") {
                    2
                } else {
                    1
                };
            }
            // A runner with nothing known after it (`yarn build`) is left alone
            // unless a program follows; `php artisan` goes on to `artisan`.
            if i < w.len() {
                next = Some(i);
            }
            break;
        }
    }
    next.filter(|i| *i < w.len())
}

/// Options of `docker run`/`exec` (and compose's) that take a value.
const CONTAINER_VALUE_OPTIONS: &[&str] = &[
    "-e",
    "--env",
    "--env-file",
    "-u",
    "--user",
    "-w",
    "--workdir",
    "-v",
    "--volume",
    "--mount",
    "--name",
    "--network",
    "--net",
    "-p",
    "--publish",
    "--entrypoint",
    "-l",
    "--label",
    "--platform",
    "--pull",
    "--restart",
    "-m",
    "--memory",
    "--cpus",
    "-h",
    "--hostname",
    "--add-host",
    "--device",
    "--log-driver",
    "--group-add",
    "--tmpfs",
    "--ulimit",
    "--cap-add",
    "--cap-drop",
    "--security-opt",
    "-f",
    "--file",
    "--project-name",
    "--profile",
    "--project-directory",
    "-H",
    "--host",
    "--context",
    "-c",
    "--config",
    "--index",
];

/// A command run inside a container, and the container's mounts as (source, target).
pub(crate) type Inside<'a> = (Vec<&'a str>, Vec<(String, String)>);

/// The command a `docker|podman|nerdctl [compose] exec|run ... CONTAINER CMD...` call runs
/// inside the container, with the container's mounts as (source, target) pairs.
pub(crate) fn container_command<'a>(args: &[&'a str]) -> Option<Inside<'a>> {
    let mut mounts = Vec::new();
    let mut i = 0;
    let mut seen_verb = false;
    while i < args.len() {
        let a = args[i];
        let value = if CONTAINER_VALUE_OPTIONS.contains(&a) {
            i += 1;
            args.get(i).copied()
        } else {
            a.split_once('=')
                .filter(|(k, _)| k.starts_with('-'))
                .map(|(_, v)| v)
        };
        if a.starts_with('-') {
            let key = a.split('=').next().unwrap_or(a);
            if let Some(v) = value {
                if matches!(key, "-v" | "--volume") {
                    let mut parts = v.split(':');
                    if let (Some(src), Some(dst)) = (parts.next(), parts.next()) {
                        mounts.push((src.to_string(), dst.to_string()));
                    }
                } else if key == "--mount" {
                    let field = |names: &[&str]| {
                        v.split(',').find_map(|kv| {
                            kv.split_once('=')
                                .filter(|(k, _)| names.contains(k))
                                .map(|(_, x)| x.to_string())
                        })
                    };
                    if let (Some(src), Some(dst)) = (
                        field(&["source", "src"]),
                        field(&["target", "destination", "dst"]),
                    ) {
                        mounts.push((src, dst));
                    }
                }
            }
            i += 1;
            continue;
        }
        if !seen_verb {
            // `compose`, `container` come before the verb.
            if matches!(a, "exec" | "run") {
                seen_verb = true;
            } else if !matches!(a, "compose" | "container") {
                return None;
            }
            i += 1;
            continue;
        }
        // The container, image or service; the rest is the command.
        return Some((args[i + 1..].to_vec(), mounts));
    }
    None
}

/// The options of `prog` that take a value.
fn value_options(prog: &str) -> &'static [&'static str] {
    VALUE_OPTIONS
        .iter()
        .find(|(progs, _)| progs.contains(&prog))
        .map(|(_, opts)| *opts)
        .unwrap_or(&[])
}

/// The positional words of a call: options skipped, with their values when they take one.
pub(crate) fn positional<'a>(prog: &str, args: &[&'a str]) -> Vec<&'a str> {
    let takes_value = value_options(prog);
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        if a == "--" {
            out.extend_from_slice(&args[i + 1..]);
            break;
        }
        if a.starts_with('-') && a.len() > 1 {
            if takes_value.contains(&a) {
                i += 1;
            }
        } else {
            out.push(a);
        }
        i += 1;
    }
    out
}

/// Whether word `w` is alternative `alt`: equal, by prefix for `x*`, and a resource list
/// (`pvc/data,svc/x`) matches when one of its kinds does.
fn word_is(w: &str, alt: &str) -> bool {
    let one = |w: &str| match alt.strip_suffix('*') {
        Some(prefix) => w.starts_with(prefix),
        None => w == alt,
    };
    one(w)
        || w.split(',')
            .any(|part| one(part.split('/').next().unwrap_or("")))
}

impl CommandRule {
    /// Whether a call of `prog` with `args` (and their positional words) matches.
    pub(crate) fn matches(&self, prog: &str, args: &[&str], words: &[&str]) -> bool {
        self.programs.contains(&prog)
            && self.words.len() <= words.len()
            && self
                .words
                .iter()
                .zip(words)
                .all(|(alts, w)| alts.iter().any(|a| word_is(w, a)))
            && self
                .anywhere
                .iter()
                .all(|alts| args.iter().any(|w| alts.iter().any(|a| word_is(w, a))))
            && (self.flags.is_empty() || args.iter().any(|a| self.flags.contains(a)))
    }
}

/// The rules a call of `prog` with `args` matches (name, pack), without repeats.
pub(crate) fn matching(prog: &str, args: &[&str]) -> Vec<(&'static str, &'static str)> {
    // Asking a tool for its help or version changes nothing.
    if args
        .iter()
        .any(|a| matches!(*a, "--help" | "-?" | "--version"))
    {
        return Vec::new();
    }
    let words = positional(prog, args);
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RULES {
        if r.matches(prog, args, &words) && !out.iter().any(|(n, _)| *n == r.rule) {
            out.push((r.rule, r.pack));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::matching;

    fn m(cmd: &str) -> Vec<&'static str> {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        names(matching(words[0], &words[1..]))
    }

    fn names(found: Vec<(&'static str, &'static str)>) -> Vec<&'static str> {
        found.into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn orm_resets_through_their_runners() {
        let via = |cmd: &str| {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            let w = super::unwrap_launchers(&words);
            names(super::matching(super::base(w[0]), &w[1..]))
        };
        for (cmd, rule) in [
            ("npx prisma migrate reset --force", "prisma reset"),
            ("pnpm dlx prisma db push --force-reset", "prisma reset"),
            ("bin/rails db:drop", "rails db reset"),
            ("bundle exec rake db:schema:load", "rails db reset"),
            ("python manage.py flush --noinput", "django flush"),
            (
                "python3 manage.py migrate billing zero",
                "django migrate to zero",
            ),
            ("npx drizzle-kit push --force", "drizzle push --force"),
            ("npx sequelize-cli db:drop", "sequelize db:drop"),
            ("npx knex migrate:rollback --all", "knex rollback --all"),
            (
                "poetry run alembic downgrade base",
                "alembic downgrade base",
            ),
            ("python -m alembic downgrade base", "alembic downgrade base"),
            ("php artisan migrate:fresh --seed", "laravel migrate:fresh"),
            ("mix ecto.reset", "ecto reset"),
            ("yarn typeorm schema:drop", "typeorm schema:drop"),
        ] {
            assert!(via(cmd).contains(&rule), "{cmd}: {:?}", via(cmd));
        }
        for harmless in [
            "npx prisma migrate dev",
            "python manage.py migrate",
            "php artisan migrate",
            "npx drizzle-kit push",
            "bundle exec rails db:migrate",
            "npx knex migrate:rollback",
            "alembic upgrade head",
            "yarn build",
        ] {
            assert!(via(harmless).is_empty(), "{harmless}: {:?}", via(harmless));
        }
    }

    #[test]
    fn global_options_before_the_service() {
        assert_eq!(
            m(
                "aws --profile prod --region eu-west-1 rds delete-db-instance --db-instance-identifier x"
            ),
            ["cloud delete of data"]
        );
        assert!(m("aws --profile prod rds describe-db-instances").is_empty());
        assert_eq!(
            m("docker compose -f prod.yml down --volumes"),
            ["docker volume removal"]
        );
        assert!(m("docker compose -f prod.yml down").is_empty());
        assert_eq!(
            m("kubectl -n prod delete pvc/data-0"),
            ["kubectl delete of storage or a namespace"]
        );
        assert!(m("kubectl -n prod delete pod/web-0").is_empty());
    }

    #[test]
    fn each_rule_has_a_case_that_fires() {
        for r in super::RULES {
            let prog = r.programs[0];
            let mut args: Vec<&str> = r
                .words
                .iter()
                .map(|alts| alts[0].trim_end_matches('*'))
                .collect();
            for g in r.anywhere {
                args.push(g[0]);
            }
            if let Some(f) = r.flags.first() {
                args.push(f);
            }
            assert!(
                names(matching(prog, &args)).contains(&r.rule),
                "rule {} does not fire on {prog} {}",
                r.rule,
                args.join(" ")
            );
        }
    }
}
