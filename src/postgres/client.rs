//! PostgreSQL plumbing shared by dump, restore and drills: how to reach a server (password
//! kept out of argv and logs), finding `pg_dump`/`pg_restore`/`psql` of a suitable major
//! version, and running `psql` for small queries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

pub(crate) use crate::config::pgurl::{PgUrl, redact};
use crate::error::{Error, Result};

/// How to reach a server: URL plus an optional password from a file or the URL.
#[derive(Clone, Debug)]
pub(crate) struct Conn {
    pub url: PgUrl,
    pub password_file: Option<PathBuf>,
    /// Settings for every session opened with this connection (`PGOPTIONS`), such as a
    /// restore's; `None` leaves the inherited environment alone.
    pub options: Option<String>,
}

impl Conn {
    pub(crate) fn new(url: PgUrl, password_file: Option<PathBuf>) -> Self {
        Conn {
            url,
            password_file,
            options: None,
        }
    }

    pub(crate) fn with_dbname(&self, db: &str) -> Conn {
        Conn {
            url: self.url.with_dbname(db),
            ..self.clone()
        }
    }

    /// The same connection, its sessions started with `options` (`-c name=value ...`).
    pub(crate) fn with_options(&self, options: String) -> Conn {
        Conn {
            options: Some(options),
            ..self.clone()
        }
    }

    /// Environment for a libpq child: password (file, else URL, else inherited
    /// PGPASSWORD/~/.pgpass), a connect timeout, and no user psqlrc surprises.
    pub(crate) fn env(&self) -> Result<Vec<(String, String)>> {
        let mut env = vec![
            (
                "PGCONNECT_TIMEOUT".to_string(),
                std::env::var("PGCONNECT_TIMEOUT").unwrap_or_else(|_| "15".into()),
            ),
            ("PGAPPNAME".to_string(), "backstop".to_string()),
        ];
        if let Some(f) = &self.password_file {
            let p = std::fs::read_to_string(f).map_err(|e| {
                Error::config(format!(
                    "cannot read source.password_file {}: {e}",
                    f.display()
                ))
            })?;
            env.push((
                "PGPASSWORD".to_string(),
                p.trim_end_matches(['\n', '\r']).to_string(),
            ));
        } else if let Some(p) = self.url.password() {
            env.push(("PGPASSWORD".to_string(), p.to_string()));
        }
        if let Some(o) = &self.options {
            env.push(("PGOPTIONS".to_string(), o.clone()));
        }
        Ok(env)
    }
}

/// A set of PostgreSQL client programs of one major version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tools {
    pub major: u32,
    pub version: String,
    pub dir: PathBuf,
}

impl Tools {
    pub(crate) fn bin(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        if p.is_file() {
            return p;
        }
        // psql and friends may live only on PATH (Debian's wrappers).
        find_on_path(name).unwrap_or(p)
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `tools` as remembered from an earlier run, if its directory is still one that discovery
/// looks in and still holds `program` (nothing else is ever started from what was
/// remembered).
pub(crate) fn remembered(tool: &crate::state::jobstate::Tool, program: &str) -> Option<Tools> {
    let tools = Tools {
        major: tool.major,
        version: tool.version.clone(),
        dir: tool.dir.clone(),
    };
    let real = std::fs::canonicalize(&tools.dir).ok()?;
    let known = candidate_dirs()
        .iter()
        .filter_map(|d| std::fs::canonicalize(d).ok())
        .any(|d| d == real);
    (known && tools.dir.join(program).is_file()).then_some(tools)
}

/// Directories that may hold PostgreSQL client programs: `$BACKSTOP_PG_BINDIR`, then
/// Debian's `/usr/lib/postgresql/*/bin`, RHEL's `/usr/pgsql-*/bin`, then `PATH`.
fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = crate::config::env::pg_bindir() {
        dirs.push(d);
    }
    for pattern_root in ["/usr/lib/postgresql", "/usr/local/lib/postgresql"] {
        if let Ok(rd) = std::fs::read_dir(pattern_root) {
            for e in rd.flatten() {
                dirs.push(e.path().join("bin"));
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/usr") {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("pgsql-") {
                dirs.push(e.path().join("bin"));
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs
}

/// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` -> (15, "15.18").
pub(crate) fn parse_tool_version(out: &str) -> Option<(u32, String)> {
    let v = out
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let v: String = v
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let v = v.trim_end_matches('.');
    let major = v.split('.').next()?.parse().ok()?;
    Some((major, v.to_string()))
}

/// Every installed version of `program`, by major version (first found per major wins).
/// Each binary is asked for its version once per process: candidates that are the same
/// file (`/bin` and `/usr/bin`, a directory both in PATH and scanned) are asked once, and
/// Debian's `pg_wrapper` (`/usr/bin/psql`, a Perl script that starts the real binary in
/// `/usr/lib/postgresql/*/bin`, which is scanned anyway) is skipped: asking every
/// candidate cost a backup about 0.2 s.
pub(crate) fn installed(program: &str) -> BTreeMap<u32, Tools> {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<BTreeMap<String, BTreeMap<u32, Tools>>>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(found) = cache.lock().ok().and_then(|c| c.get(program).cloned()) {
        return found;
    }
    let mut found = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for dir in candidate_dirs() {
        let p = dir.join(program);
        if !p.is_file() {
            continue;
        }
        let real = std::fs::canonicalize(&p).unwrap_or(p.clone());
        if !seen.insert(real.clone()) || real.file_name().is_some_and(|n| n == "pg_wrapper") {
            continue;
        }
        let Ok(out) = std::process::Command::new(&real).arg("--version").output() else {
            continue;
        };
        if let Some((major, version)) = parse_tool_version(&String::from_utf8_lossy(&out.stdout)) {
            let dir = real.parent().map(Path::to_path_buf).unwrap_or(dir.clone());
            found.entry(major).or_insert(Tools {
                major,
                version,
                dir,
            });
        }
    }
    if let Ok(mut c) = cache.lock() {
        c.insert(program.to_string(), found.clone());
    }
    found
}

/// The client programs to use against a server of major version `server_major`: the
/// lowest installed major that is at least the server's (pg_dump refuses older servers
/// than itself only beyond 9.2, but never dumps a newer one).
pub(crate) fn tools_for(program: &str, server_major: u32) -> Result<Tools> {
    let all = installed(program);
    if let Some((_, t)) = all.range(server_major..).next() {
        return Ok(t.clone());
    }
    let have = if all.is_empty() {
        "none was found".to_string()
    } else {
        format!(
            "found only {}",
            all.values()
                .map(|t| format!("{} {} in {}", program, t.version, t.dir.display()))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(Error::failed(format!(
        "the server runs PostgreSQL {server_major}, which needs {program} {server_major} or newer; {have} \
         (looked in $BACKSTOP_PG_BINDIR, /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin and PATH; \
         on Debian: apt-get install postgresql-client-{server_major})"
    )))
}

/// Any psql at all (newest), for the first query that learns the server's version.
pub(crate) fn any_psql() -> Result<PathBuf> {
    installed("psql")
        .values()
        .next_back()
        .map(|t| t.bin("psql"))
        .ok_or_else(|| {
            Error::failed("psql was not found (looked in /usr/lib/postgresql/*/bin and PATH); install the PostgreSQL client (apt-get install postgresql-client)")
        })
}

/// Run one SQL statement with psql and return its rows, fields split on U+001F.
pub(crate) async fn query(psql: &Path, conn: &Conn, sql: &str) -> Result<Vec<Vec<String>>> {
    let out = Command::new(psql)
        .kill_on_drop(true)
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-F",
            "\x1f",
            "-d",
        ])
        .arg(conn.url.conninfo())
        .arg("-c")
        .arg(sql)
        .envs(conn.env()?)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::failed(format!("cannot run {}: {e}", psql.display())))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::failed(format!(
            "query on {} failed: {}",
            conn.url,
            err.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\x1f').map(str::to_string).collect())
        .collect())
}

/// Quote an identifier for SQL.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quote a string literal for SQL.
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Facts about a server and database learned with one query.
#[derive(Debug, Clone)]
pub(crate) struct ServerInfo {
    pub version_num: u32,
    pub version: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    pub size_bytes: u64,
}

impl ServerInfo {
    pub(crate) fn major(&self) -> u32 {
        if self.version_num >= 100000 {
            self.version_num / 10000
        } else {
            self.version_num / 100
        }
    }
}

pub(crate) async fn server_info(conn: &Conn) -> Result<ServerInfo> {
    let psql = any_psql()?;
    let rows = query(
        &psql,
        conn,
        "SELECT current_setting('server_version_num'), current_setting('server_version'), \
         pg_encoding_to_char(encoding), datcollate, datctype, pg_database_size(oid) \
         FROM pg_database WHERE datname = current_database()",
    )
    .await?;
    let r = rows.first().filter(|r| r.len() == 6).ok_or_else(|| {
        Error::failed(format!(
            "unexpected answer from {} about its version",
            conn.url
        ))
    })?;
    Ok(ServerInfo {
        version_num: r[0].parse().unwrap_or(0),
        version: r[1].clone(),
        encoding: r[2].clone(),
        collate: r[3].clone(),
        ctype: r[4].clone(),
        size_bytes: r[5].parse().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_keeps_password_out_of_conninfo() {
        let u = PgUrl::parse("postgres://backup:s%40cret@db.internal:6543/app?sslmode=require")
            .unwrap();
        assert_eq!(u.password(), Some("s@cret"));
        assert_eq!(u.host(), "db.internal");
        assert_eq!(u.port(), 6543);
        assert_eq!(u.dbname(), "app");
        let c = u.conninfo();
        assert_eq!(
            c,
            "postgresql://backup@db.internal:6543/app?sslmode=require"
        );
        assert!(!format!("{u} {u:?}").contains("cret"));
        assert_eq!(u.with_dbname("postgres").dbname(), "postgres");
    }

    #[test]
    fn url_defaults_and_errors() {
        let u = PgUrl::parse("postgresql://postgres@127.0.0.1").unwrap();
        assert_eq!((u.port(), u.dbname()), (5432, "postgres"));
        assert!(
            PgUrl::parse("mysql://x@y/z")
                .unwrap_err()
                .contains("postgres://")
        );
        assert!(
            PgUrl::parse("postgres://h:5432")
                .unwrap_err()
                .contains("names no database")
        );
        let e = PgUrl::parse("mysql://u:topsecret@h/db").unwrap_err();
        assert!(!e.contains("topsecret"), "{e}");
    }

    #[test]
    fn tool_versions_parse() {
        assert_eq!(
            parse_tool_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some((15, "15.18".to_string()))
        );
        assert_eq!(
            parse_tool_version("pg_dump (PostgreSQL) 17beta2"),
            Some((17, "17".to_string()))
        );
        assert_eq!(parse_tool_version("nothing"), None);
    }
}
