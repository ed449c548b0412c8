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
            regroup_rerouted(&psql, target, &d.tables, &mut checks).await;
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

/// Partitions whose counts differ only because their rows were routed anew: pg_dump loads
/// hash partitions on an enum column through their partitioned table (the hash depends on
/// the enum's OIDs, which differ in the restored database), so a row may land in another
/// partition than at backup time. For each partition tree with hash partitioning and a
/// failing count, when every one of its partitions has a recorded count and the tree
/// holds as many rows as were recorded for it, its partitions' checks become one check of
/// the tree's total: a lost or extra row still fails it. Range and list partitions keep
/// their own checks. `checks[i]` is the count check of `tables[i]`.
async fn regroup_rerouted(
    psql: &std::path::Path,
    target: &Conn,
    tables: &[crate::snapshot::facts::TableCount],
    checks: &mut Vec<Check>,
) {
    let hex = |s: &str| hex::encode(s.as_bytes());
    let failing: Vec<usize> = (0..tables.len().min(checks.len()))
        .filter(|&i| !checks[i].ok && checks[i].actual.parse::<u64>().is_ok())
        .collect();
    let mut done = std::collections::HashSet::new();
    let mut replace: Vec<(Vec<usize>, Check)> = Vec::new();
    for i in failing {
        let t = &tables[i];
        let name = format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.table));
        // The tree's root and its leaf partitions, names as hex (no name is split or
        // quoted wrongly, whatever it holds).
        let sql = format!(
            "SELECT pg_catalog.encode(pg_catalog.convert_to(n.nspname, 'UTF8'), 'hex'), \
             pg_catalog.encode(pg_catalog.convert_to(c.relname, 'UTF8'), 'hex'), \
             pg_catalog.pg_partition_root({lit}::pg_catalog.regclass)::pg_catalog.regclass::text, \
             EXISTS (SELECT 1 FROM pg_catalog.pg_partition_tree(pg_catalog.pg_partition_root({lit}::pg_catalog.regclass)) h \
             JOIN pg_catalog.pg_partitioned_table pt ON pt.partrelid = h.relid WHERE pt.partstrat = 'h') \
             FROM pg_catalog.pg_partition_tree(pg_catalog.pg_partition_root({lit}::pg_catalog.regclass)) p \
             JOIN pg_catalog.pg_class c ON c.oid = p.relid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE p.isleaf",
            lit = super::quote_literal(&name)
        );
        let Ok(rows) = pg::query(psql, target, &sql).await else {
            continue;
        };
        let Some(root) = rows.first().and_then(|r| r.get(2)).cloned() else {
            continue; // not a partition
        };
        // Only hash partitioning routes a row by a value that can differ between
        // clusters; range and list partitions are compared one by one.
        if rows.first().and_then(|r| r.get(3)).map(String::as_str) != Some("t") {
            continue;
        }
        if !done.insert(root.clone()) {
            continue;
        }
        let mut members = Vec::new();
        let mut complete = true;
        for r in &rows {
            let (Some(s), Some(n)) = (r.first(), r.get(1)) else {
                complete = false;
                break;
            };
            match (0..tables.len())
                .find(|&j| hex(&tables[j].schema) == *s && hex(&tables[j].table) == *n)
            {
                Some(j) => members.push(j),
                None => complete = false,
            }
        }
        let counted: Option<Vec<u64>> = members
            .iter()
            .map(|&j| checks[j].actual.parse::<u64>().ok())
            .collect();
        let (Some(counted), true) = (counted, complete) else {
            continue;
        };
        let expected: u64 = members.iter().map(|&j| tables[j].rows).sum();
        let actual: u64 = counted.iter().sum();
        if expected != actual {
            continue;
        }
        replace.push((
            members,
            Check {
                name: format!(
                    "row count of the {} partitions of {root} (rows routed anew by the restore)",
                    rows.len()
                ),
                expected: expected.to_string(),
                actual: actual.to_string(),
                ok: true,
            },
        ));
    }
    for (members, check) in replace {
        let first = members.iter().copied().min().unwrap_or(0);
        checks[first] = check;
        for &j in &members {
            if j != first {
                checks[j].name.clear();
            }
        }
    }
    checks.retain(|c| !c.name.is_empty());
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
