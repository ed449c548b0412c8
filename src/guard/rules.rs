//! The risk rules of `backstop hook`: a shell command (or an MCP tool call's arguments)
//! is parsed — pipes, `&&`/`||`/`;`, `sh -c`/`bash -c`, `$(...)`, wrappers like `sudo`
//! and `env`, heredocs and `-c` strings fed to `psql` — and each simple command, and the
//! SQL it carries, is checked against a built-in rule set plus the rules of `hook.toml`.
//! Pure functions: no I/O, so a harmless call is decided in microseconds.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub(crate) use super::shell::{Simple, parse_shell};
pub(crate) use super::sql::risky_sql;

/// A rule that matched: its id and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    pub rule: String,
    pub what: String,
    /// Paths the command removes (for matching volume jobs).
    pub paths: Vec<PathBuf>,
}

/// Extra rules from `hook.toml` in the jobs directory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Extra {
    #[serde(default, rename = "rule")]
    pub rules: Vec<ExtraRule>,
}

/// `[[rule]]`: a program (and optionally words among its arguments), or a text anywhere.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExtraRule {
    pub name: String,
    /// Program name, e.g. "mytool" (matched on the file name).
    pub command: Option<String>,
    /// Words that must all appear among the arguments, e.g. ["cluster", "delete"].
    #[serde(default)]
    pub args: Vec<String>,
    /// Text that makes any call risky wherever it appears (case-insensitive).
    pub contains: Option<String>,
}

/// What the classifier knows of the world: volume paths (for `rm`) and the cwd.
pub(crate) struct Context<'a> {
    pub cwd: Option<&'a Path>,
    pub volume_paths: &'a [PathBuf],
    pub extra: &'a Extra,
}

// ---------------------------------------------------------------------------------------
// Commands

const SQL_CLIENTS: &[&str] = &[
    "psql",
    "pgcli",
    "mysql",
    "mariadb",
    "sqlite3",
    "cockroach",
    "clickhouse-client",
];
const SHELLS: &[&str] = &["sh", "bash", "zsh", "dash", "ksh", "fish"];
/// Wrappers whose arguments are another command.
const WRAPPERS: &[&str] = &[
    "sudo", "doas", "env", "nohup", "time", "nice", "ionice", "exec", "command", "xargs",
    "timeout", "watch", "stdbuf", "setsid", "chroot", "runuser", "su",
];

fn base(w: &str) -> &str {
    w.rsplit('/').next().unwrap_or(w)
}

/// Classify a whole shell command line.
pub(crate) fn classify_shell(src: &str, ctx: &Context) -> Vec<Hit> {
    let mut hits = Vec::new();
    classify_shell_into(src, ctx, &mut hits, 0);
    for r in &ctx.extra.rules {
        if let Some(t) = &r.contains
            && src.to_lowercase().contains(&t.to_lowercase())
        {
            hits.push(hit(&format!("hook.toml: {}", r.name), t));
        }
    }
    dedup(hits)
}

fn dedup(mut hits: Vec<Hit>) -> Vec<Hit> {
    let mut seen = std::collections::BTreeSet::new();
    hits.retain(|h| seen.insert((h.rule.clone(), h.what.clone())));
    hits
}

fn hit(rule: &str, what: &str) -> Hit {
    Hit {
        rule: rule.to_string(),
        what: what.chars().take(200).collect(),
        paths: Vec::new(),
    }
}

/// The prefix of a rule that says the call could not be read in full (too deep, too
/// large): the hook fails closed on it and denies.
pub const LIMIT: &str = "limit:";

fn classify_shell_into(src: &str, ctx: &Context, hits: &mut Vec<Hit>, depth: usize) {
    if depth > 8 {
        hits.push(hit(
            &format!("{LIMIT} commands nested more than 8 deep"),
            src,
        ));
        return;
    }
    let (pipelines, nested) = parse_shell(src);
    for n in nested {
        classify_shell_into(&n, ctx, hits, depth + 1);
    }
    // `cd DIR` changes where later relative paths point.
    let mut cwd: Option<PathBuf> = ctx.cwd.map(Path::to_path_buf);
    for p in &pipelines {
        // A SQL client anywhere in a pipeline: every literal fed into it may be SQL.
        let sql_pipe = p.iter().any(|s| {
            s.words
                .first()
                .is_some_and(|w| SQL_CLIENTS.contains(&base(w)))
        });
        for s in p {
            if s.words.first().map(String::as_str) == Some("cd") {
                let to = s.words.get(1).map(String::as_str).unwrap_or("~/");
                cwd = Some(resolve(to, cwd.as_deref()));
                continue;
            }
            let here = Context {
                cwd: cwd.as_deref(),
                volume_paths: ctx.volume_paths,
                extra: ctx.extra,
            };
            classify_simple(s, &here, hits, depth, sql_pipe);
        }
    }
}

fn classify_simple(s: &Simple, ctx: &Context, hits: &mut Vec<Hit>, depth: usize, sql_pipe: bool) {
    let mut words: Vec<&str> = s.words.iter().map(String::as_str).collect();
    // Strip leading VAR=value assignments and wrappers (with their options).
    loop {
        while words.first().is_some_and(|w| is_assignment(w)) {
            words.remove(0);
        }
        let Some(first) = words.first().copied() else {
            break;
        };
        if WRAPPERS.contains(&base(first)) {
            words.remove(0);
            // Options of the wrapper (sudo -u x, timeout 10, nice -n 5).
            while let Some(w) = words.first().copied() {
                if w.starts_with('-') {
                    words.remove(0);
                    if ["-u", "-g", "-n", "-s", "-k", "-c", "-p"].contains(&w) && !words.is_empty()
                    {
                        words.remove(0);
                    }
                } else if w
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == 's' || c == 'm')
                    && !w.is_empty()
                    && w.chars().next().is_some_and(|c| c.is_ascii_digit())
                {
                    words.remove(0); // timeout 10s CMD
                } else if is_assignment(w) {
                    words.remove(0);
                } else {
                    break;
                }
            }
            continue;
        }
        break;
    }
    if words.is_empty() {
        for h in &s.heredocs {
            if sql_pipe {
                sql_hits(h, hits);
            }
        }
        return;
    }
    let joined = words.join(" ");
    // Package runners and interpreters in front of the tool that does the work:
    // `npx prisma ...`, `poetry run alembic ...`, `python manage.py ...`, `php artisan ...`.
    // Interpreters are read before runners come off: `python3 task.py` is Python's.
    let raw_prog = base(words[0]);
    let raw_args: Vec<&str> = words[1..].to_vec();
    let words = super::packs::unwrap_launchers(&words);
    let Some(first) = words.first().copied() else {
        return;
    };
    let prog = base(first);
    let args = &words[1..];

    shell_text(s, first, prog, args, ctx, hits, depth);
    interpreter_code(s, raw_prog, &raw_args, ctx, hits);
    if prog == "eval" {
        classify_shell_into(&args.join(" "), ctx, hits, depth + 1);
    }
    if prog == "ssh" {
        // ssh [opts] host CMD...: the remote command is the words after the host.
        let mut i = 0;
        while i < args.len() && args[i].starts_with('-') {
            i += if ["-p", "-i", "-l", "-o", "-J", "-F"].contains(&args[i]) {
                2
            } else {
                1
            };
        }
        if args.len() > i + 1 {
            classify_shell_into(&args[i + 1..].join(" "), ctx, hits, depth + 1);
        }
    }
    if (prog == "docker" || prog == "podman" || prog == "kubectl") && args.contains(&"exec") {
        // docker exec [opts] CONTAINER CMD..., kubectl exec POD -- CMD...
        let rest: Vec<&str> = match args.iter().position(|a| *a == "--") {
            Some(i) => args[i + 1..].to_vec(),
            None => {
                let e = args.iter().position(|a| *a == "exec").unwrap_or(0);
                let mut i = e + 1;
                while i < args.len() && args[i].starts_with('-') {
                    i += if ["-u", "-e", "-w", "--user", "--env", "--workdir"].contains(&args[i]) {
                        2
                    } else {
                        1
                    };
                }
                args.get(i + 1..).map(<[&str]>::to_vec).unwrap_or_default()
            }
        };
        if !rest.is_empty() {
            let inner = Simple {
                words: rest.iter().map(|s| s.to_string()).collect(),
                heredocs: s.heredocs.clone(),
                inputs: s.inputs.clone(),
            };
            classify_simple(&inner, ctx, hits, depth + 1, sql_pipe);
        }
    }

    sql_client_text(s, prog, args, ctx, hits, sql_pipe);
    let has = |w: &str| args.contains(&w);
    match prog {
        "pg_ctl" | "pg_ctlcluster"
            if has("stop")
                && (args
                    .windows(2)
                    .any(|w| w[0] == "-m" && w[1].starts_with('i'))
                    || args.iter().any(|a| {
                        *a == "-mi"
                            || *a == "-mimmediate"
                            || *a == "--mode=immediate"
                            || *a == "--mode=i"
                    })) =>
        {
            hits.push(hit("pg_ctl stop -m immediate", &joined))
        }
        "rm" | "rmdir" | "shred" | "srm" | "unlink" => {
            let recursive = prog != "rm"
                || args.iter().any(|a| {
                    *a == "--recursive"
                        || (a.starts_with('-')
                            && !a.starts_with("--")
                            && (a.contains('r') || a.contains('R')))
                });
            // Recursive: at, above or inside a volume (a subdirectory is part of its data);
            // a plain `rm FILE` inside one is left to the agent's own rules.
            let touched = volume_targets(
                args.iter().filter(|a| !a.starts_with('-')).copied(),
                ctx,
                recursive,
            );
            if !touched.is_empty() {
                hits.push(Hit {
                    rule: "rm -r of a volume job's path".into(),
                    what: joined.chars().take(200).collect(),
                    paths: touched,
                });
            }
        }
        "find"
            if has("-delete")
                || args.windows(2).any(|w| {
                    matches!(w[0], "-exec" | "-execdir" | "-ok")
                        && matches!(base(w[1]), "rm" | "shred" | "unlink" | "rmdir")
                }) =>
        {
            let touched = volume_targets(
                args.iter().take_while(|a| !a.starts_with('-')).copied(),
                ctx,
                true,
            );
            if !touched.is_empty() {
                hits.push(Hit {
                    rule: "find -delete in a volume job's path".into(),
                    what: joined.chars().take(200).collect(),
                    paths: touched,
                });
            }
        }
        "rsync"
            if args
                .iter()
                .any(|a| a.starts_with("--delete") || *a == "--remove-source-files") =>
        {
            // The destination (the last operand) loses what the source lacks.
            let dst = args
                .iter()
                .rev()
                .find(|a| !a.starts_with('-') && !a.contains(':'));
            let touched = volume_targets(dst.into_iter().copied(), ctx, true);
            if !touched.is_empty() {
                hits.push(Hit {
                    rule: "rsync --delete into a volume job's path".into(),
                    what: joined.chars().take(200).collect(),
                    paths: touched,
                });
            }
        }
        "curl" | "wget" | "http" | "https" | "xh" | "httpie" => {
            if let Some(h) = http_delete(args) {
                hits.push(hit(&h, &joined));
            }
        }
        _ => {}
    }
    for rule in super::packs::matching(prog, args) {
        hits.push(hit(rule, &joined));
    }
    for r in &ctx.extra.rules {
        if let Some(c) = &r.command
            && base(c) == prog
            && r.args.iter().all(|a| args.contains(&a.as_str()))
        {
            hits.push(hit(&format!("hook.toml: {}", r.name), &joined));
        }
    }
}

/// Shell text a call runs: `sh -c STRING`, heredocs into a shell, a script it names
/// (`bash reset.sh`, `./reset.sh`, `source reset.sh`), read under the cwd.
fn shell_text(
    s: &Simple,
    first: &str,
    prog: &str,
    args: &[&str],
    ctx: &Context,
    hits: &mut Vec<Hit>,
    depth: usize,
) {
    if SHELLS.contains(&prog) {
        let c_flag = args.iter().position(|a| {
            *a == "-c" || (a.starts_with('-') && a.ends_with('c') && !a.starts_with("--"))
        });
        if let Some(i) = c_flag
            && let Some(cmd) = args.get(i + 1)
        {
            classify_shell_into(cmd, ctx, hits, depth + 1);
        }
        for h in &s.heredocs {
            classify_shell_into(h, ctx, hits, depth + 1);
        }
        // `bash reset.sh`: the script the call names, read where it lies under the cwd.
        if c_flag.is_none()
            && let Some(script) = args.iter().find(|a| !a.starts_with('-'))
            && let Some(text) = read_named(script, ctx)
        {
            classify_shell_into(&text, ctx, hits, depth + 1);
        }
        for f in &s.inputs {
            if let Some(text) = read_named(f, ctx) {
                classify_shell_into(&text, ctx, hits, depth + 1);
            }
        }
    }
    // `./reset.sh`, `source reset.sh`
    if (first.starts_with("./") && first.ends_with(".sh")) || prog == "source" || prog == "." {
        let script = if first.starts_with("./") {
            first
        } else {
            args.first().copied().unwrap_or("")
        };
        if let Some(text) = read_named(script, ctx) {
            classify_shell_into(&text, ctx, hits, depth + 1);
        }
    }
}

/// Code an interpreter runs (`python -c`, `node -e`, a script, a heredoc): SQL in its
/// string literals and ORM mass deletes.
fn interpreter_code(
    s: &Simple,
    raw_prog: &str,
    raw_args: &[&str],
    ctx: &Context,
    hits: &mut Vec<Hit>,
) {
    if INTERPRETERS.contains(&raw_prog) || raw_prog.starts_with("python3.") {
        let args = raw_args;
        let mut i = 0;
        let mut code: Vec<String> = s.heredocs.clone();
        while i < args.len() {
            let a = args[i];
            if matches!(a, "-c" | "-e" | "--eval" | "-E" | "-p" | "--print") {
                if let Some(v) = args.get(i + 1) {
                    code.push(v.to_string());
                }
                break;
            }
            if a == "-m" {
                break;
            }
            if !a.starts_with('-') {
                if let Some(text) = read_named(a, ctx) {
                    code.push(text);
                }
                break;
            }
            i += 1;
        }
        for f in &s.inputs {
            code.extend(read_named(f, ctx));
        }
        for c in &code {
            code_hits(c, hits);
        }
    }
}

/// SQL a client runs: `-c`/`--command` strings, heredocs, files (`-f`, `< FILE`), and
/// literals or files piped into it (`echo ... | psql`, `cat reset.sql | psql`).
fn sql_client_text(
    s: &Simple,
    prog: &str,
    args: &[&str],
    ctx: &Context,
    hits: &mut Vec<Hit>,
    sql_pipe: bool,
) {
    if SQL_CLIENTS.contains(&prog) {
        let mut i = 0;
        while i < args.len() {
            let a = args[i];
            if (a == "-f" || a == "--file") && i + 1 < args.len() {
                if let Some(text) = read_named(args[i + 1], ctx) {
                    sql_hits(&text, hits);
                }
                i += 1;
            } else if let Some(f) = a.strip_prefix("--file=") {
                if let Some(text) = read_named(f, ctx) {
                    sql_hits(&text, hits);
                }
            } else if (a == "-c" || a == "--command" || a == "-e" || a == "--execute")
                && i + 1 < args.len()
            {
                sql_hits(args[i + 1], hits);
                i += 1;
            } else if let Some(v) = a
                .strip_prefix("--command=")
                .or_else(|| a.strip_prefix("--execute="))
            {
                sql_hits(v, hits);
            } else if prog == "sqlite3" && i > 0 && !a.starts_with('-') {
                sql_hits(a, hits);
            }
            i += 1;
        }
        for h in &s.heredocs {
            sql_hits(h, hits);
        }
        for f in &s.inputs {
            if let Some(text) = read_named(f, ctx) {
                sql_hits(&text, hits);
            }
        }
    } else if sql_pipe {
        // echo "DROP TABLE x" | psql, cat reset.sql | psql
        if ["echo", "printf", "cat"].contains(&prog) {
            for a in args {
                sql_hits(a, hits);
                if prog == "cat"
                    && let Some(text) = read_named(a, ctx)
                {
                    sql_hits(&text, hits);
                }
            }
        }
        for h in &s.heredocs {
            sql_hits(h, hits);
        }
    }
}

/// The targets (resolved against the cwd) that remove a volume job's data: at, above or
/// inside a volume path, when the removal is `recursive`.
fn volume_targets<'a>(
    targets: impl Iterator<Item = &'a str>,
    ctx: &Context,
    recursive: bool,
) -> Vec<PathBuf> {
    targets
        .map(|a| resolve(a, ctx.cwd))
        .filter(|t| {
            ctx.volume_paths
                .iter()
                .any(|v| recursive && (v.starts_with(t.as_path()) || t.starts_with(v)))
        })
        .collect()
}

fn is_assignment(w: &str) -> bool {
    w.split_once('=').is_some_and(|(k, _)| {
        !k.is_empty()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !k.starts_with(|c: char| c.is_ascii_digit())
    })
}

fn resolve(p: &str, cwd: Option<&Path>) -> PathBuf {
    // A glob removes everything below its literal prefix.
    let literal = match p.find(['*', '?', '[']) {
        Some(i) => &p[..i],
        None => p,
    };
    let literal = if literal.is_empty() { "." } else { literal };
    let path = if let Some(rest) = literal.strip_prefix("~/") {
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(rest))
            .unwrap_or_else(|| PathBuf::from(literal))
    } else {
        PathBuf::from(literal)
    };
    let abs = if path.is_absolute() {
        path
    } else {
        cwd.map(|c| c.join(&path)).unwrap_or(path)
    };
    normalize(&abs)
}

/// Remove `.` and `..` without touching the filesystem.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// An HTTP call that deletes data: a GraphQL delete mutation, or DELETE of a data resource.
fn http_delete(args: &[&str]) -> Option<String> {
    let text = args.join(" ");
    if let Some(m) = graphql_delete(&text) {
        return Some(format!("GraphQL delete mutation {m}"));
    }
    let method_delete = args.windows(2).any(|w| {
        (w[0] == "-X" || w[0] == "--request" || w[0] == "--method")
            && w[1].eq_ignore_ascii_case("DELETE")
    }) || args
        .iter()
        .any(|a| a.eq_ignore_ascii_case("-XDELETE") || *a == "DELETE");
    let lower = text.to_lowercase();
    let data_resource = [
        "volume", "database", "/db", "snapshot", "backup", "bucket", "cluster", "disk",
    ]
    .iter()
    .any(|k| lower.contains(k));
    (method_delete && data_resource).then(|| "HTTP DELETE of a data resource".to_string())
}

/// A GraphQL mutation whose name deletes something data-bearing (`volumeDelete`,
/// `deleteDatabase`, `projectDelete`, ...).
pub(crate) fn graphql_delete(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    if !lower.contains("mutation") && !lower.contains("delete") {
        return None;
    }
    let nouns = [
        "volume",
        "database",
        "db",
        "service",
        "project",
        "environment",
        "snapshot",
        "backup",
        "bucket",
        "cluster",
        "disk",
        "plugin",
        "instance",
        "branch",
    ];
    for ident in text.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        let l = ident.to_lowercase();
        if l.len() < 8 || !(l.contains("delete") || l.contains("destroy") || l.contains("drop")) {
            continue;
        }
        if nouns.iter().any(|n| l.contains(n)) {
            return Some(ident.to_string());
        }
    }
    None
}

/// Interpreters whose one-liners and scripts are read for SQL and ORM mass deletes.
const INTERPRETERS: &[&str] = &[
    "python", "python3", "py", "node", "nodejs", "deno", "bun", "ruby", "perl", "php",
];

/// The most of a file a call names that the hook reads.
const READ_MAX: u64 = 1 << 20;

/// The text of a file a call names (`psql -f reset.sql`, `bash reset.sh`), read only when
/// it lies under the call's working directory (after resolving symlinks), is a regular
/// file, and holds at most 1 MiB: the hook reads no other file.
fn read_named(name: &str, ctx: &Context) -> Option<String> {
    use std::io::Read;
    let cwd = ctx.cwd?;
    if name.is_empty() || name.starts_with('-') || name.contains(['$', '*', '?']) {
        return None;
    }
    let path = resolve(name, Some(cwd));
    let real = std::fs::canonicalize(&path).ok()?;
    let root = std::fs::canonicalize(cwd).ok()?;
    if !real.starts_with(&root) {
        return None;
    }
    let f = std::fs::File::open(&real).ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut buf = Vec::new();
    f.take(READ_MAX).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// SQL in the string literals of code (`cur.execute("TRUNCATE users")`,
/// `knex.raw('DROP TABLE x')`), and ORM calls that delete every row.
fn code_hits(code: &str, hits: &mut Vec<Hit>) {
    for lit in string_literals(code) {
        sql_hits(&lit, hits);
    }
    const MASS_DELETES: &[&str] = &[
        ".delete_all",
        ".destroy_all",
        ".all().delete()",
        ".objects.all().delete()",
        "deleteMany({})",
        "deleteMany()",
        "dropDatabase(",
        ".drop_all(",
        "metadata.drop_all",
    ];
    if let Some(m) = MASS_DELETES.iter().find(|m| code.contains(*m)) {
        hits.push(hit("ORM mass delete in code", m));
    }
}

/// The contents of `'...'`, `"..."`, `` `...` `` and triple-quoted literals of code.
fn string_literals(code: &str) -> Vec<String> {
    let b: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let q = b[i];
        if q == '\'' || q == '"' || q == '`' {
            let triple = i + 2 < b.len() && b[i + 1] == q && b[i + 2] == q;
            let open = if triple { 3 } else { 1 };
            let mut j = i + open;
            let mut lit = String::new();
            while j < b.len() {
                if b[j] == '\\' && j + 1 < b.len() {
                    lit.push(b[j + 1]);
                    j += 2;
                    continue;
                }
                if b[j] == q && (!triple || (j + 2 < b.len() && b[j + 1] == q && b[j + 2] == q)) {
                    break;
                }
                lit.push(b[j]);
                j += 1;
            }
            out.push(lit);
            i = j + open;
        } else {
            i += 1;
        }
    }
    out
}

fn sql_hits(sql: &str, hits: &mut Vec<Hit>) {
    for what in risky_sql(sql) {
        let rule = what.split(':').next().unwrap_or("SQL").to_string();
        hits.push(hit(&rule, &what));
    }
}

/// Classify an MCP tool call: every string in its arguments is checked as SQL, as a
/// GraphQL document, and (for shell-like tools) as a command.
pub(crate) fn classify_json(tool: &str, input: &serde_json::Value, ctx: &Context) -> Vec<Hit> {
    let mut strings = Vec::new();
    collect_strings(input, &mut strings);
    let mut hits = Vec::new();
    let shellish = ["bash", "shell", "exec", "run", "command", "terminal"]
        .iter()
        .any(|k| tool.to_lowercase().contains(k));
    for s in &strings {
        sql_hits(s, &mut hits);
        if let Some(m) = graphql_delete(s) {
            hits.push(hit("GraphQL delete mutation", &format!("{m} in {tool}")));
        }
        if shellish {
            hits.extend(classify_shell(s, ctx));
        }
    }
    let lower_tool = tool.to_lowercase();
    if ["delete", "destroy", "drop", "remove"]
        .iter()
        .any(|v| lower_tool.contains(v))
        && [
            "volume", "database", "db", "snapshot", "backup", "bucket", "project", "service",
            "table", "branch",
        ]
        .iter()
        .any(|n| lower_tool.contains(n))
    {
        hits.push(hit("MCP delete tool", tool));
    }
    for r in &ctx.extra.rules {
        if let Some(t) = &r.contains {
            let t = t.to_lowercase();
            if strings.iter().any(|s| s.to_lowercase().contains(&t)) || lower_tool.contains(&t) {
                hits.push(hit(&format!("hook.toml: {}", r.name), &t));
            }
        }
    }
    dedup(hits)
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => {
            out.push(s.clone());
            // Arguments given as a JSON string (Cursor's beforeMCPExecution).
            if let Ok(inner) = serde_json::from_str::<serde_json::Value>(s)
                && (inner.is_object() || inner.is_array())
            {
                collect_strings(&inner, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(vols: &'a [PathBuf], extra: &'a Extra) -> Context<'a> {
        Context {
            cwd: Some(Path::new("/home/dev/project")),
            volume_paths: vols,
            extra,
        }
    }

    fn rules_of(cmd: &str) -> Vec<String> {
        let vols = vec![PathBuf::from("/var/lib/app-data")];
        let extra = Extra {
            rules: vec![ExtraRule {
                name: "wipe tool".into(),
                command: Some("mytool".into()),
                args: vec!["wipe".into()],
                contains: None,
            }],
        };
        classify_shell(cmd, &ctx(&vols, &extra))
            .into_iter()
            .map(|h| h.rule)
            .collect()
    }

    #[test]
    fn risky_commands_and_where_they_hide() {
        let risky = [
            ("psql -c 'DROP TABLE bookings'", "SQL DROP"),
            ("psql app -c \"truncate events\"", "SQL TRUNCATE"),
            (
                "psql --command='DELETE FROM users'",
                "SQL DELETE without WHERE",
            ),
            (
                "psql -c 'UPDATE users SET admin = true'",
                "SQL UPDATE without WHERE",
            ),
            (
                "psql -c 'DELETE FROM users WHERE 1=1'",
                "SQL DELETE without WHERE",
            ),
            (
                "psql -c 'ALTER TABLE users DROP COLUMN email'",
                "SQL ALTER ... DROP",
            ),
            ("echo 'drop database app;' | psql -h db", "SQL DROP"),
            (
                "psql -h db app <<EOF\nBEGIN;\nDROP TABLE x;\nCOMMIT;\nEOF",
                "SQL DROP",
            ),
            ("cat <<'SQL' | psql\ntruncate t;\nSQL", "SQL TRUNCATE"),
            (
                "bash -c \"psql -c 'drop schema public cascade'\"",
                "SQL DROP",
            ),
            ("sh -c 'cd /tmp && dropdb app'", "dropdb"),
            ("sudo -u postgres dropdb app", "dropdb"),
            ("env PGHOST=db dropdb app", "dropdb"),
            ("ls && dropdb app", "dropdb"),
            ("true; dropdb app", "dropdb"),
            ("x=$(dropdb app)", "dropdb"),
            (
                "pg_ctl stop -D /data -m immediate",
                "pg_ctl stop -m immediate",
            ),
            ("rm -rf /var/lib/app-data", "rm -r of a volume job's path"),
            ("rm -r /var/lib/", "rm -r of a volume job's path"),
            ("sudo rm -fr /var/lib/*", "rm -r of a volume job's path"),
            (
                "cd / && rm -rf var/lib/app-data",
                "rm -r of a volume job's path",
            ),
            ("docker volume rm app_data", "docker volume removal"),
            ("docker volume prune -f", "docker volume removal"),
            ("docker compose down -v", "docker volume removal"),
            (
                "kubectl delete pvc data-app-0",
                "kubectl delete of storage or a namespace",
            ),
            (
                "kubectl -n prod delete namespace prod",
                "kubectl delete of storage or a namespace",
            ),
            (
                "kubectl delete statefulset/db",
                "kubectl delete of storage or a namespace",
            ),
            ("terraform destroy -auto-approve", "terraform destroy"),
            ("terraform apply -destroy", "terraform destroy"),
            ("railway volume delete vol_123", "railway delete"),
            ("railway down -y", "railway delete"),
            ("fly volumes destroy vol_abc -y", "fly destroy"),
            (
                "heroku pg:reset DATABASE_URL --confirm app",
                "heroku destroy",
            ),
            (
                "aws rds delete-db-instance --db-instance-identifier prod",
                "cloud delete of data",
            ),
            (
                "aws ec2 delete-volume --volume-id vol-1",
                "cloud delete of data",
            ),
            ("aws s3 rb s3://backups --force", "cloud delete of data"),
            (
                "aws s3 rm s3://backups/ --recursive",
                "cloud delete of data",
            ),
            (
                "curl -X POST https://backboard.railway.app/graphql/v2 -d '{\"query\":\"mutation { volumeDelete(volumeId: \\\"v1\\\") }\"}'",
                "GraphQL delete mutation volumeDelete",
            ),
            (
                "curl -X DELETE https://api.example.com/v1/databases/prod",
                "HTTP DELETE of a data resource",
            ),
            ("backstop prune app --yes", "backstop prune --yes"),
            (
                "backstop --jobs /etc/backstop/jobs restore app --yes",
                "backstop restore --yes",
            ),
            ("mytool wipe --all", "hook.toml: wipe tool"),
            ("ssh db1 'dropdb app'", "dropdb"),
            (
                "docker exec -it pg psql -U postgres -c 'DROP DATABASE app'",
                "SQL DROP",
            ),
        ];
        for (cmd, want) in risky {
            let got = rules_of(cmd);
            assert!(
                got.iter().any(|r| r == want),
                "{cmd:?}: want {want:?}, got {got:?}"
            );
        }
    }

    #[test]
    fn harmless_commands_pass() {
        for cmd in [
            "ls -la",
            "cargo test",
            "psql -c 'SELECT count(*) FROM users'",
            "psql -c 'DELETE FROM sessions WHERE expires < now()'",
            "psql -c \"UPDATE users SET name = 'x' WHERE id = 1\"",
            "echo 'drop table x'",
            "grep -r DROP src/",
            "rm -rf target/",
            "rm -rf /var/lib/app-data-other",
            "rm /var/lib/app-data/cache.tmp",
            "docker volume ls",
            "docker compose down",
            "kubectl delete pod web-1",
            "terraform plan",
            "aws s3 ls s3://backups",
            "git commit -m 'drop the old table'",
            "backstop prune app --dry-run",
            "mytool status",
            "psql -c \"SELECT 'DROP TABLE x'\"",
        ] {
            let got = rules_of(cmd);
            assert!(got.is_empty(), "{cmd:?} is harmless, got {got:?}");
        }
    }

    #[test]
    fn mcp_arguments() {
        let vols = vec![];
        let extra = Extra::default();
        let c = ctx(&vols, &extra);
        let v = serde_json::json!({"sql": "TRUNCATE orders"});
        assert!(!classify_json("mcp__postgres__query", &v, &c).is_empty());
        let v = serde_json::json!({"query": "SELECT 1"});
        assert!(classify_json("mcp__postgres__query", &v, &c).is_empty());
        let v = serde_json::json!("{\"query\": \"mutation { volumeDelete(id: 1) }\"}");
        assert!(!classify_json("graphql", &v, &c).is_empty());
        assert!(
            !classify_json("mcp__railway__volume_delete", &serde_json::json!({}), &c).is_empty()
        );
    }

    #[test]
    fn the_hook_fails_closed_on_what_it_cannot_read() {
        // An unterminated heredoc is read to the end of the text (it once panicked).
        assert!(rules_of("psql -d app <<SQL\nDROP TABLE users;").contains(&"SQL DROP".to_string()));
        assert!(rules_of("cat <<EOF").is_empty());
        // Nesting past the limit is a limit hit (the hook denies), never "harmless".
        let mut cmd = "psql -c 'SELECT 1'".to_string();
        for _ in 0..12 {
            cmd = format!("bash -c {}", serde_json::to_string(&cmd).unwrap());
        }
        assert!(
            rules_of(&cmd).iter().any(|r| r.starts_with(LIMIT)),
            "{:?}",
            rules_of(&cmd)
        );
        // Many dollar-quoted strings: each is skipped where it closes.
        let many: String = (0..20_000).map(|i| format!("$t{i}$ x $t{i}$ ")).collect();
        assert!(
            rules_of(&format!("psql -c \"SELECT {many}; DROP TABLE t\""))
                .contains(&"SQL DROP".to_string())
        );
    }

    fn rules_in(dir: &Path, cmd: &str) -> Vec<String> {
        let extra = Extra::default();
        let ctx = Context {
            cwd: Some(dir),
            volume_paths: &[],
            extra: &extra,
        };
        classify_shell(cmd, &ctx)
            .into_iter()
            .map(|h| h.rule)
            .collect()
    }

    #[test]
    fn files_scripts_and_one_liners_a_call_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("reset.sql"), "-- reset\nTRUNCATE bookings;\n").unwrap();
        std::fs::write(d.join("fine.sql"), "SELECT 1;\n").unwrap();
        std::fs::write(d.join("wipe.sh"), "#!/bin/sh\npsql -c 'DROP TABLE users'\n").unwrap();
        std::fs::write(
            d.join("task.py"),
            "import psycopg\nwith psycopg.connect() as c:\n    c.execute(\"DELETE FROM users\")\n",
        )
        .unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("evil.sql"), "DROP TABLE x;").unwrap();
        std::os::unix::fs::symlink(outside.path().join("evil.sql"), d.join("link.sql")).unwrap();
        let has = |cmd: &str, rule: &str| {
            let r = rules_in(d, cmd);
            assert!(r.iter().any(|x| x.starts_with(rule)), "{cmd}: {r:?}");
        };
        has("psql -d app -f reset.sql", "SQL TRUNCATE");
        has("psql -d app < reset.sql", "SQL TRUNCATE");
        has("cat reset.sql | psql -d app", "SQL TRUNCATE");
        has(
            "docker exec -i db psql -U postgres < reset.sql",
            "SQL TRUNCATE",
        );
        has("bash wipe.sh", "SQL DROP");
        has("./wipe.sh", "SQL DROP");
        has("python3 task.py", "SQL DELETE");
        has(
            "python3 -c 'import psycopg; psycopg.connect().execute(\"TRUNCATE users\")'",
            "SQL TRUNCATE",
        );
        has(
            "node -e \"require('pg'); c.query('DROP TABLE users')\"",
            "SQL DROP",
        );
        has("ruby -e 'User.delete_all'", "ORM mass delete");
        has("psql <<< \"TRUNCATE users\"", "SQL TRUNCATE");
        has("psql -c $'-- note\\nTRUNCATE users'", "SQL TRUNCATE");
        has("psql -c 'DROP/**/TABLE users'", "SQL DROP");
        // Harmless: a harmless file, a file outside the cwd (through a symlink), a file
        // that is not there.
        assert!(rules_in(d, "psql -f fine.sql").is_empty());
        assert!(rules_in(d, "psql -f link.sql").is_empty());
        assert!(rules_in(d, "psql -f missing.sql").is_empty());
        assert!(rules_in(d, "python3 -c 'print(1)'").is_empty());
    }

    #[test]
    fn parts_of_a_volume_count_and_help_does_not() {
        for (cmd, rule) in [
            (
                "rm -rf /var/lib/app-data/uploads",
                "rm -r of a volume job's path",
            ),
            (
                "shred -u /var/lib/app-data/key",
                "rm -r of a volume job's path",
            ),
            (
                "find /var/lib/app-data -name '*.tmp' -exec rm {} +",
                "find -delete in a volume job's path",
            ),
            (
                "rsync -a --delete ./empty/ /var/lib/app-data/",
                "rsync --delete into a volume job's path",
            ),
        ] {
            assert!(
                rules_of(cmd).contains(&rule.to_string()),
                "{cmd}: {:?}",
                rules_of(cmd)
            );
        }
        for harmless in [
            "rm -rf /tmp/build",
            "dropdb --help",
            "rsync -a --delete /var/lib/app-data/ /backup/app/",
            "find /var/lib/app-data -name x",
            "terraform destroy --help",
        ] {
            assert!(
                rules_of(harmless).is_empty(),
                "{harmless}: {:?}",
                rules_of(harmless)
            );
        }
    }
}
