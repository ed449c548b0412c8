//! Code a call runs in a language: `python -c`, `node -e`, `deno eval`, `php -r`,
//! `mongosh --eval`, `rails runner`, `manage.py shell -c`, `artisan tinker --execute`,
//! scripts and heredocs fed to interpreters and consoles. Read for SQL in the string
//! literals of code that talks to a database, ORM calls that delete every row, and HTTP
//! DELETEs of data resources.

use super::paths::base;
use super::rules::Hit;

/// Interpreters and consoles, and the options that carry code inline.
fn inline_flags(prog: &str) -> Option<&'static [&'static str]> {
    let p = base(prog);
    if p.starts_with("python") || p == "py" {
        return Some(&["-c"]);
    }
    Some(match p {
        "node" | "nodejs" | "bun" | "tsx" | "ts-node" => &["-e", "--eval", "-p", "--print"],
        "ruby" | "perl" | "irb" => &["-e"],
        "php" => &["-r"],
        "deno" => &["eval"],
        "go" => &[],
        "mongosh" | "mongo" => &["--eval"],
        "psql" => return None,
        _ => return None,
    })
}

/// What a call of `words` runs as code: `(inline code, a script file it names, whether it
/// reads code on stdin)`, or None when it is not an interpreter or console.
pub(crate) fn code_call(words: &[&str]) -> Option<(Vec<String>, Option<String>, bool)> {
    let prog = *words.first()?;
    let args = &words[1..];
    // Frameworks' code runners.
    let p = base(prog);
    let sub = args.first().copied().unwrap_or("");
    if matches!(p, "rails" | "rake") && matches!(sub, "runner" | "r") {
        // `rails runner -e production CODE`
        let mut i = 1;
        while args.get(i).is_some_and(|a| a.starts_with('-')) {
            i += if matches!(args[i], "-e" | "--environment") {
                2
            } else {
                1
            };
        }
        let code = args.get(i).map(|s| s.to_string());
        let file = code.clone().filter(|c| c.ends_with(".rb"));
        return Some((code.into_iter().collect(), file, false));
    }
    if matches!(p, "rails") && matches!(sub, "console" | "c" | "dbconsole") {
        return Some((Vec::new(), None, true));
    }
    if matches!(p, "manage.py" | "django-admin") && matches!(sub, "shell" | "shell_plus") {
        let mut code = Vec::new();
        for (i, a) in args.iter().enumerate() {
            if (*a == "-c" || *a == "--command") && i + 1 < args.len() {
                code.push(args[i + 1].to_string());
            } else if let Some(v) = a.strip_prefix("--command=") {
                code.push(v.to_string());
            }
        }
        return Some((code, None, true));
    }
    if p == "artisan" && sub == "tinker" {
        let code = args
            .iter()
            .filter_map(|a| a.strip_prefix("--execute="))
            .map(str::to_string)
            .collect();
        return Some((code, None, true));
    }
    if p == "mix" && sub == "run" {
        let code = args
            .windows(2)
            .filter(|w| w[0] == "-e" || w[0] == "--eval")
            .map(|w| w[1].to_string())
            .collect();
        return Some((code, None, false));
    }
    let flags = inline_flags(prog)?;
    let mut code = Vec::new();
    let mut file = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        if flags.contains(&a) {
            if let Some(v) = args.get(i + 1) {
                code.push(v.to_string());
            }
            break;
        }
        if let Some(v) = a.strip_prefix("--eval=") {
            code.push(v.to_string());
            break;
        }
        if a == "-m" {
            // `python -m scripts.reset_db`: the module's file, when it is the project's.
            if let Some(m) = args.get(i + 1) {
                file = Some(format!("{}.py", m.replace('.', "/")));
            }
            break;
        }
        if a == "run" && matches!(p, "deno" | "go") {
            i += 1;
            continue;
        }
        if !a.starts_with('-') {
            // mongosh's operand is a connection string; its code follows --eval.
            if !(p == "mongosh" || p == "mongo") {
                file = Some(a.to_string());
                break;
            }
        }
        i += 1;
    }
    let stdin = code.is_empty() && file.is_none() || args.contains(&"-");
    Some((code, file, stdin))
}

/// Words in code that show it talks to a database: only then are its string literals SQL.
const DB_MARKERS: &[&str] = &[
    "psycopg",
    "sqlite3",
    "sqlalchemy",
    "asyncpg",
    "pymysql",
    "mysql",
    "require('pg')",
    "require(\"pg\")",
    "from 'pg'",
    "from \"pg\"",
    "postgres",
    "knex",
    "sequelize",
    "prisma",
    "drizzle",
    "typeorm",
    ".query(",
    ".execute(",
    ".exec(",
    ".raw(",
    "execute_sql",
    "pdo",
    "dbi",
    "pg.connect",
    "pg::",
    "activerecord",
    "connection",
    "cursor",
    "sql`",
    "sql(",
    "db.",
    "database",
];

/// SQL in the string literals of code that talks to a database
/// (`cur.execute("TRUNCATE users")`, `knex.raw('DROP TABLE x')`), ORM calls that delete
/// every row, and HTTP DELETEs of data resources (`requests.delete(url)`).
pub(crate) fn code_hits(code: &str, hits: &mut Vec<Hit>) {
    let lower = code.to_lowercase();
    if DB_MARKERS.iter().any(|m| lower.contains(m)) {
        for lit in string_literals(code) {
            super::rules::sql_hits(&lit, hits);
        }
    }
    if let Some(m) = mass_delete(code) {
        hits.push(super::rules::hit("ORM mass delete in code", &m));
    }
    if let Some(url) = http_delete_in_code(code, &lower) {
        hits.push(super::rules::hit("HTTP DELETE of a data resource", &url));
    }
}

/// An ORM call that deletes every row of a model: `User.delete_all` (without a `where`
/// before it on the same statement), `Model.objects.all().delete()`, `deleteMany({})`,
/// drizzle's `db.delete(table)` without `.where`, `metadata.drop_all`, `dropDatabase()`.
fn mass_delete(code: &str) -> Option<String> {
    const ALWAYS: &[&str] = &[
        ".objects.all().delete()",
        ".all().delete()",
        "deleteMany({})",
        "deleteMany()",
        "dropDatabase(",
        ".drop_all(",
        "metadata.drop_all",
        "truncate_all",
        ".dropDatabase()",
    ];
    if let Some(m) = ALWAYS.iter().find(|m| code.contains(*m)) {
        return Some(m.to_string());
    }
    for stmt in code.split([';', '\n']) {
        // MongoDB: `db.users.drop()`, `db.getCollection('x').drop()`.
        if stmt.trim_start().starts_with("db.") && stmt.contains(".drop()") {
            return Some(stmt.trim().chars().take(120).collect());
        }
        for m in [
            ".delete_all",
            ".destroy_all",
            "::truncate()",
            "->truncate()",
        ] {
            if let Some(at) = stmt.find(m) {
                let before = &stmt[..at];
                if !before.contains(".where") && !before.contains(".filter") {
                    return Some(stmt.trim().chars().take(120).collect());
                }
            }
        }
        // SQLAlchemy `session.query(Model).delete()` without a filter.
        if let Some(at) = stmt.find(".query(")
            && let Some(del) = stmt[at..].find(".delete()")
        {
            let chain = &stmt[at..at + del];
            if !chain.contains(".filter") && !chain.contains(".where") && !chain.contains(".get(") {
                return Some(stmt.trim().chars().take(120).collect());
            }
        }
        if let Some(at) = stmt.find("db.delete(") {
            let rest = &stmt[at + "db.delete(".len()..];
            let after = rest
                .split_once(')')
                .map(|(_, a)| a.trim_start())
                .unwrap_or("");
            if !after.starts_with('.') {
                return Some(stmt.trim().chars().take(120).collect());
            }
        }
    }
    None
}

/// Command lines that code runs through a shell or a process API (`subprocess.run([...])`,
/// `os.system("...")`, `execSync('...')`, Ruby's backticks and `system`): each string
/// literal, and the literals of each `[...]` list joined as one command.
pub(crate) fn shell_in_code(code: &str) -> Vec<String> {
    const RUNNERS: &[&str] = &[
        "subprocess",
        "os.system",
        "os.popen",
        "execsync",
        "exec(",
        "spawn",
        "system(",
        "popen",
        "%x",
        "shell_exec",
        "child_process",
        "execa",
        "$`",
        "Bun.$",
    ];
    let lower = code.to_lowercase();
    if !RUNNERS.iter().any(|r| lower.contains(&r.to_lowercase())) && !code.contains('`') {
        return Vec::new();
    }
    let mut out = string_literals(code);
    // `['dropdb', '-h', host, 'app']`: the literals of a list, in order.
    let mut rest = code;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']') else {
            break;
        };
        let inside = &rest[open + 1..open + close];
        let words = string_literals(inside);
        if words.len() > 1 {
            out.push(words.join(" "));
        }
        rest = &rest[open + close..];
        if rest.len() <= 1 {
            break;
        }
        rest = &rest[1..];
    }
    out
}

/// Nouns in a URL or path that name a data-bearing resource.
pub(crate) const DATA_RESOURCES: &[&str] = &[
    "volume",
    "database",
    "/db",
    "postgres",
    "mysql",
    "redis",
    "snapshot",
    "backup",
    "bucket",
    "cluster",
    "disk",
    "/projects/",
    "/branches/",
    "/stores/",
    "storage",
    ":9200",
    "/_all",
];

/// `requests.delete(URL)`, `httpx.delete`, `axios.delete`, `fetch(URL, {method: 'DELETE'})`
/// where the URL names a data resource.
fn http_delete_in_code(code: &str, lower: &str) -> Option<String> {
    let delete_call = [
        "requests.delete(",
        "httpx.delete(",
        "axios.delete(",
        "session.delete(",
    ]
    .iter()
    .any(|m| lower.contains(m))
        || (lower.contains("fetch(")
            && (lower.contains("method: 'delete'")
                || lower.contains("method: \"delete\"")
                || lower.contains("method:'delete'")
                || lower.contains("method:\"delete\"")));
    if !delete_call {
        return None;
    }
    string_literals(code).into_iter().find(|l| {
        let l = l.to_lowercase();
        l.contains("://") && DATA_RESOURCES.iter().any(|k| l.contains(k))
    })
}

/// The contents of `'...'`, `"..."`, `` `...` `` and triple-quoted literals of code.
pub(crate) fn string_literals(code: &str) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(code: &str) -> Vec<String> {
        let mut hits = Vec::new();
        code_hits(code, &mut hits);
        hits.into_iter().map(|h| h.rule).collect()
    }

    #[test]
    fn sql_counts_only_in_code_that_talks_to_a_database() {
        assert_eq!(rules("print('DROP TABLE users')"), Vec::<String>::new());
        assert_eq!(
            rules("import psycopg; psycopg.connect().execute('DROP TABLE users')"),
            ["SQL DROP"]
        );
        assert_eq!(rules("User.where(id: 4).delete_all"), Vec::<String>::new());
        assert_eq!(rules("User.delete_all"), ["ORM mass delete in code"]);
        assert_eq!(
            rules("await db.delete(users).where(eq(users.id, 1))"),
            Vec::<String>::new()
        );
        assert_eq!(rules("await db.delete(users)"), ["ORM mass delete in code"]);
        assert_eq!(
            rules("requests.delete('https://console.neon.tech/api/v2/projects/p1')"),
            ["HTTP DELETE of a data resource"]
        );
        assert_eq!(
            rules("requests.delete('https://api.example.com/sessions/1')"),
            Vec::<String>::new()
        );
    }
}
