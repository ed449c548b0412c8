//! A drill's checks on a restored database: every table's exact row count against the
//! count recorded at backup time, `pg_amcheck`, then each `verify.checks` statement.

use std::process::Stdio;
use std::sync::Arc;

use super::{self as pg, Conn, quote_ident};
use crate::config::JobPlan;
use crate::error::{Error, Result};
use crate::snapshot::drill::Check;
use crate::snapshot::{self};
use crate::storage::Storage;

/// `pg_amcheck` of the restored database (heap and B-tree indexes, every heap tuple found
/// in its indexes), when installed.
pub(crate) async fn amcheck(target: &Conn) -> Option<Check> {
    let bin = pg::installed("pg_amcheck")
        .into_values()
        .next_back()?
        .bin("pg_amcheck");
    let out = tokio::process::Command::new(&bin)
        .args(["--install-missing", "--heapallindexed", "--no-password"])
        .arg(target.url.conninfo())
        .envs(target.env().ok()?)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // Exit 2 means corruption was found; any other failure means the check could not run,
    // which is logged and not counted as a finding.
    if !out.status.success() && out.status.code() != Some(2) {
        tracing::warn!(
            "pg_amcheck could not run ({}): {}",
            out.status,
            crate::text::summarize(&text)
        );
        return None;
    }
    Some(Check {
        name: "pg_amcheck --heapallindexed".into(),
        expected: "no corruption".into(),
        actual: if out.status.success() {
            "no corruption".into()
        } else {
            crate::text::summarize(&text)
        },
        ok: out.status.success(),
    })
}

pub(crate) fn target_url(c: &Conn) -> String {
    // Restore's --to takes a URL; a password for a configured scratch server stays in
    // the environment (PGPASSWORD / .pgpass), never on a command line.
    c.url.conninfo().replacen("postgresql://", "postgres://", 1)
}

pub(crate) async fn run_checks(
    plan: &JobPlan,
    storage: &dyn Storage,
    entry: &snapshot::Entry,
    target: &Conn,
    identity: Option<&std::path::Path>,
) -> Result<Vec<Check>> {
    let psql = pg::any_psql()?;
    let mut checks = Vec::new();
    // Row counts recorded at backup time (from the dump's own snapshot).
    let identities = Arc::new(crate::pipeline::load_identities(
        &plan.identity_path(identity)?,
    )?);
    let facts_obj = entry
        .manifest
        .object("facts")
        .ok_or_else(|| Error::failed(format!("snapshot {} has no facts object", entry.id)))?;
    let tmp = tempfile::tempdir().map_err(|e| Error::failed(format!("temp dir: {e}")))?;
    let p = tmp.path().join("facts.json");
    crate::snapshot::read::fetch(storage, entry, facts_obj, identities, &p).await?;
    let facts: crate::snapshot::facts::Facts = serde_json::from_slice(
        &std::fs::read(&p).map_err(|e| Error::failed(format!("reading facts: {e}")))?,
    )
    .map_err(|e| Error::failed(format!("unreadable facts of snapshot {}: {e}", entry.id)))?;
    match &facts.dump {
        Some(d) => {
            for t in &d.tables {
                let sql = format!(
                    "SELECT count(*) FROM {}.{}",
                    quote_ident(&t.schema),
                    quote_ident(&t.table)
                );
                let actual =
                    match pg::query(&psql, target, &format!("SET row_security = off; {sql}")).await
                    {
                        Ok(rows) => rows
                            .first()
                            .and_then(|r| r.first())
                            .cloned()
                            .unwrap_or_default(),
                        Err(e) => format!("error: {e}"),
                    };
                checks.push(Check {
                    name: format!(
                        "row count of {}.{}",
                        quote_ident(&t.schema),
                        quote_ident(&t.table)
                    ),
                    expected: t.rows.to_string(),
                    ok: actual == t.rows.to_string(),
                    actual,
                });
            }
        }
        None => checks.push(Check {
            name: "row counts recorded at backup time".into(),
            expected: "present".into(),
            actual: facts
                .counts_unavailable
                .clone()
                .unwrap_or_else(|| "missing".into()),
            ok: false,
        }),
    }
    checks.extend(sql_checks(plan, target).await?);
    Ok(checks)
}

/// Each `verify.checks` statement on `target`: it must answer `t`.
pub(crate) async fn sql_checks(plan: &JobPlan, target: &Conn) -> Result<Vec<Check>> {
    let psql = pg::any_psql()?;
    let mut checks = Vec::new();
    for sql in plan
        .verify
        .as_ref()
        .map(|v| v.checks.clone())
        .unwrap_or_default()
    {
        let actual = match pg::query(&psql, target, &sql).await {
            Ok(rows) => rows
                .first()
                .and_then(|r| r.first())
                .cloned()
                .unwrap_or_else(|| "(no row)".into()),
            Err(e) => format!("error: {}", e.message()),
        };
        checks.push(Check {
            name: format!("verify.checks: {sql}"),
            expected: "t".into(),
            ok: actual == "t",
            actual,
        });
    }
    Ok(checks)
}
