//! Stored roles (`pg_dumpall --globals-only`) applied to a server, treating the stored text
//! as hostile: it is never run as a psql script. Only role statements pass (`CREATE ROLE`,
//! `ALTER ROLE`, `COMMENT ON ROLE`, `GRANT role TO role`), a statement holding a backslash
//! anywhere is dropped (psql meta-commands such as `\!` need one, so none can reach psql),
//! and roles that exist on the server before the restore are left exactly as they are.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::Conn;
use crate::error::{Error, Result};

/// The largest roles file read back (a real one is kilobytes).
const MAX_GLOBALS_BYTES: u64 = 16 << 20;

/// What applying stored roles did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct RolesReport {
    /// Roles the snapshot created on the server.
    pub created: Vec<String>,
    /// Roles that already existed and were left as they are.
    pub kept: Vec<String>,
    /// Statements dropped because they were not role statements or held a backslash.
    pub refused: usize,
}

/// One statement of the roles file and the role it changes.
#[derive(Debug, PartialEq, Eq)]
struct Statement {
    sql: String,
    role: String,
    creates: bool,
}

/// The statements of a roles file that may run, and how many were refused.
fn plan(text: &str) -> (Vec<Statement>, usize) {
    let mut out = Vec::new();
    let mut refused = 0;
    for stmt in statements(text) {
        let t = stmt.trim();
        if t.is_empty() || t.starts_with("--") {
            continue;
        }
        // pg_dump's own `\restrict KEY` / `\unrestrict KEY` lines carry nothing to apply.
        if t.starts_with("\\restrict ") || t.starts_with("\\unrestrict ") {
            continue;
        }
        if t.contains('\\') {
            refused += 1;
            continue;
        }
        let upper = t.to_ascii_uppercase();
        if upper.starts_with("SET ") {
            continue; // session settings of the dump tool; ours are our own
        }
        let (role, creates) = if let Some(rest) = strip(t, &upper, "CREATE ROLE ") {
            (ident(rest), true)
        } else if let Some(rest) = strip(t, &upper, "ALTER ROLE ") {
            (ident(rest), false)
        } else if let Some(rest) = strip(t, &upper, "COMMENT ON ROLE ") {
            (ident(rest), false)
        } else if upper.starts_with("GRANT ") {
            // GRANT a TO b [WITH ...] [GRANTED BY c]: membership of role b.
            match grantee(t, &upper) {
                Some(r) => (Some(r), false),
                None => (None, false),
            }
        } else {
            (None, false)
        };
        match role {
            Some(role) => out.push(Statement {
                sql: t.to_string(),
                role,
                creates,
            }),
            None => refused += 1,
        }
    }
    (out, refused)
}

fn strip<'a>(t: &'a str, upper: &str, prefix: &str) -> Option<&'a str> {
    upper.starts_with(prefix).then(|| &t[prefix.len()..])
}

/// The identifier at the start of `s`: `"quoted ""name"""` or a bare word.
fn ident(s: &str) -> Option<String> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    name.push('"');
                } else {
                    return Some(name);
                }
            } else {
                name.push(c);
            }
        }
        None
    } else {
        let name: String = s
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
            .collect();
        (!name.is_empty()).then(|| name.to_lowercase())
    }
}

/// The grantee of `GRANT role TO grantee ...`.
fn grantee(t: &str, upper: &str) -> Option<String> {
    // Only role memberships: `GRANT x TO y` with no `ON` (object privileges are not globals).
    let to = upper.find(" TO ")?;
    if upper[..to].contains(" ON ") {
        return None;
    }
    ident(&t[to + 4..])
}

/// Split on `;` outside quotes (role names and comments may hold semicolons).
fn statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut comment = false;
    for c in text.chars() {
        cur.push(c);
        if comment {
            if c == '\n' {
                comment = false;
                if quote.is_none() && cur.trim().starts_with("--") {
                    cur.clear();
                }
            }
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '-' if cur.ends_with("--") => comment = true,
                ';' => out.push(std::mem::take(&mut cur)),
                '\n' if cur.trim().starts_with('\\') => out.push(std::mem::take(&mut cur)),
                _ => {}
            },
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// Apply the roles in `file` to the server `admin` reaches. Roles that exist there now are
/// left alone.
pub(crate) async fn apply(psql: &Path, admin: &Conn, file: &Path) -> Result<RolesReport> {
    let text = read_bounded(file)?;
    let (stmts, refused) = plan(&text);
    if refused > 0 {
        tracing::warn!(
            "restoring roles: {refused} statement(s) of the stored roles file were not role statements (or held a backslash) and were not run"
        );
    }
    let existing = super::query(psql, admin, "SELECT rolname FROM pg_roles ORDER BY 1").await?;
    let existing: std::collections::BTreeSet<String> = existing
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .collect();
    let mut report = RolesReport {
        refused,
        ..Default::default()
    };
    let mut script = String::new();
    for s in &stmts {
        if existing.contains(&s.role) {
            if s.creates && !report.kept.contains(&s.role) {
                report.kept.push(s.role.clone());
            }
            continue;
        }
        if s.creates {
            report.created.push(s.role.clone());
        }
        script.push_str(&s.sql);
        if !s.sql.ends_with(';') {
            script.push(';');
        }
        script.push('\n');
    }
    if !report.kept.is_empty() {
        tracing::info!(
            "restoring roles: {} role(s) already exist on the server and were left as they are: {}",
            report.kept.len(),
            report.kept.join(", ")
        );
    }
    if script.is_empty() {
        return Ok(report);
    }
    debug_assert!(!script.contains('\\'));
    let mut child = tokio::process::Command::new(psql)
        .kill_on_drop(true)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=0", "-f", "-", "-d"])
        .arg(admin.url.conninfo())
        .envs(admin.env()?)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::failed(format!("cannot run psql: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| Error::failed(format!("restoring roles: writing to psql: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| Error::failed(format!("cannot run psql: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| l.contains("ERROR")) {
        tracing::warn!("restoring roles: {line}");
    }
    if !out.status.success() {
        return Err(Error::failed(format!(
            "restoring roles failed: {}",
            crate::text::summarize(&stderr)
        )));
    }
    Ok(report)
}

fn read_bounded(file: &Path) -> Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(file)
        .map_err(|e| Error::failed(format!("cannot read {}: {e}", file.display())))?;
    let mut buf = Vec::new();
    f.take(MAX_GLOBALS_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::failed(format!("cannot read {}: {e}", file.display())))?;
    if buf.len() as u64 > MAX_GLOBALS_BYTES {
        return Err(Error::failed(format!(
            "the stored roles file is larger than {} MiB; a real one is kilobytes, so it was not applied",
            MAX_GLOBALS_BYTES >> 20
        )));
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn only_role_statements_without_backslashes_pass() {
        let text = "\\restrict abc\n--\n-- Roles\n--\n\nSET default_transaction_read_only = off;\n\
            CREATE ROLE app;\nALTER ROLE app WITH NOSUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$4096:x$y:z';\n\
            CREATE ROLE \"We;ird\"\"Name\";\nGRANT app TO \"We;ird\"\"Name\" GRANTED BY postgres;\n\
            \\! touch /tmp/pwned\nCOPY (SELECT 1) TO PROGRAM 'id';\nCREATE ROLE evil; \\! id\n\
            GRANT SELECT ON TABLE t TO app;\nCREATE TABLESPACE ts LOCATION '/x';\n\\unrestrict abc\n";
        let (stmts, refused) = plan(text);
        let roles: Vec<(&str, bool)> = stmts.iter().map(|s| (s.role.as_str(), s.creates)).collect();
        assert_eq!(
            roles,
            vec![
                ("app", true),
                ("app", false),
                ("We;ird\"Name", true),
                ("We;ird\"Name", false),
                ("evil", true),
            ]
        );
        // \! line, COPY, the `\! id` tail, GRANT ... ON, CREATE TABLESPACE
        assert_eq!(refused, 5, "{stmts:?}");
        assert!(stmts.iter().all(|s| !s.sql.contains('\\')));
    }
}
