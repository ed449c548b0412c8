//! Restore drills (`backstop verify`): restore a snapshot with the same code path as
//! `restore`, into a scratch place that is never the job's source, check the data, and
//! record the result beside the manifest as new objects (never rewriting it):
//! `verify-TIME.json` (plaintext summary: time, outcome, durations, counts of checks) and
//! `verify-TIME.json.zst.age` (each check with expected and actual values: content facts).
//!
//! PostgreSQL: a scratch cluster (`initdb` + `pg_ctl` in a temp dir on a free loopback
//! port, as the `postgres` user when run as root, binaries of the snapshot's major version
//! or newer), or `verify.scratch_url` where a `backstop_verify_*` database is created and
//! dropped. Checks: every table's exact row count against the count recorded at backup
//! time, then each `verify.checks` statement must return true.
//! Volumes: extract into a temp dir with every file's hash and metadata checked, then the
//! optional `verify.command` runs with the tree in `$BACKSTOP_RESTORED`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{JobPlan, SourcePlan};
use crate::error::{Error, Kind, Result};
use crate::postgres::checks::{amcheck, run_checks, target_url};
use crate::postgres::scratch::ScratchCluster;
use crate::postgres::{self as pg, Conn, PgUrl, quote_ident};
use crate::snapshot;
use crate::snapshot::drill::{Check, Outcome, Summary, Verdict, record};
use crate::storage::Storage;

#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    pub snapshot: Option<String>,
    pub identity: Option<PathBuf>,
    /// Drill a named foreign snapshot anyway.
    pub allow_foreign: bool,
}

/// Run a drill of `plan`'s snapshot (default: the newest) and record the result.
pub(crate) async fn run(
    plan: &JobPlan,
    storage: Arc<dyn Storage>,
    opts: &Options,
) -> Result<Outcome> {
    let clock = Instant::now();
    let entry = snapshot::pick(
        storage.as_ref(),
        plan,
        opts.snapshot.as_deref(),
        opts.allow_foreign,
    )
    .await?;
    let d = match &plan.source {
        SourcePlan::Postgres(_) => drill_postgres(plan, storage.clone(), &entry, opts).await?,
        SourcePlan::Volume(_) => drill_volume(plan, storage.clone(), &entry, opts).await?,
        SourcePlan::Cluster(_) => drill_cluster(plan, storage.clone(), &entry, opts).await?,
    };
    let checks = d.checks;
    let failed = checks.iter().filter(|c| !c.ok).count() as u64;
    let now = jiff::Timestamp::now();
    let summary = Summary {
        job: plan.name.clone(),
        snapshot: entry.id.clone(),
        time: now.to_string(),
        outcome: if failed == 0 {
            Verdict::Passed
        } else {
            Verdict::Failed
        },
        checks_passed: checks.len() as u64 - failed,
        checks_failed: failed,
        restore_ms: d.restore_ms,
        download_ms: d.download_ms,
        apply_ms: d.apply_ms,
        duration_ms: clock.elapsed().as_millis() as u64,
        restored_bytes: d.restored_bytes,
        scratch: d.scratch,
    };
    let outcome = Outcome { summary, checks };
    record(plan, storage.as_ref(), &entry.id, &outcome, now).await?;
    if failed > 0 {
        let names: Vec<String> = outcome
            .checks
            .iter()
            .filter(|c| !c.ok)
            .take(10)
            .map(|c| format!("{} (expected {}, got {})", c.name, c.expected, c.actual))
            .collect();
        return Err(Error::new(
            Kind::VerifyMismatch,
            format!(
                "drill of job {} snapshot {}: {failed} of {} checks failed: {}",
                plan.name,
                entry.id,
                outcome.checks.len(),
                names.join("; ")
            ),
        ));
    }
    Ok(outcome)
}

/// A cluster job's drill: recover the base backup to a random point between its end and
/// the newest archived WAL into a scratch directory, check that recovery reached that
/// point, then serve it privately and run `pg_amcheck` and `verify.checks`.
async fn drill_cluster(
    plan: &JobPlan,
    storage: Arc<dyn Storage>,
    entry: &crate::snapshot::Entry,
    opts: &Options,
) -> Result<DrillResult> {
    let from = entry
        .manifest
        .finished_at()
        .ok_or_else(|| Error::failed(format!("base backup {} has no end time", entry.id)))?;
    let sum = crate::snapshot::wal::summary(storage.as_ref(), plan, None, 16 << 20).await?;
    let until = sum
        .newest_archived
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .filter(|u| *u > from)
        .unwrap_or(from);
    let span = until.duration_since(from).as_millis().max(0) as u64;
    let mut rnd = [0u8; 8];
    let _ = getrandom::fill(&mut rnd);
    let offset = if span == 0 {
        0
    } else {
        u64::from_le_bytes(rnd) % span
    };
    let target = from + jiff::SignedDuration::from_millis(offset as i64);
    let work = crate::postgres::recovery::work_dir(None)?;
    let data = work.path().join("data");
    let clock = Instant::now();
    let report = crate::run::pitr::restore_to_time(
        plan,
        &crate::run::pitr::PitrOptions {
            time: Some(target.to_string()),
            to: Some(data.display().to_string()),
            identity: opts.identity.clone(),
            staging: None,
            base: Some(entry.id.clone()),
            storage: None,
        },
    )
    .await?;
    let restore_ms = clock.elapsed().as_millis() as u64;
    // Recovery itself failing (a missing or damaged file, a gap) failed the drill above;
    // a point after the archive's last commit recovers to the archive's end, said below.
    let reached = match (&report.reached, report.ended_before_target) {
        (Some(r), false) => format!("recovered to {target} (last commit replayed {r})"),
        (Some(r), true) => format!(
            "asked for {target}; no commit after it in the archive: recovered to its end (last commit {r})"
        ),
        (None, _) => {
            format!("asked for {target}; no transaction after the base backup was replayed")
        }
    };
    // PostgreSQL stops before the first commit after the point: the last one replayed is
    // never later (a later one means the recovery did not honour the point).
    let last = report
        .reached
        .as_deref()
        .and_then(|r| crate::run::pitr::parse_time(r).ok());
    let mut checks = vec![Check {
        name: format!("the last transaction replayed is not after the drill's point {target}"),
        expected: format!("at or before {target}"),
        actual: match (&report.reached, last) {
            (Some(r), Some(_)) => r.clone(),
            (Some(r), None) => format!("unreadable: {r}"),
            (None, _) => "no transaction replayed".into(),
        },
        ok: match (&report.reached, last) {
            (Some(_), Some(l)) => l <= target,
            (Some(_), None) => false,
            (None, _) => true,
        },
    }];
    let major: u32 = entry
        .manifest
        .source
        .server_version
        .as_deref()
        .and_then(|v| v.split('.').next()?.parse().ok())
        .unwrap_or(0);
    let bindir = crate::postgres::recovery::server_bindir(major)?;
    let served = crate::postgres::recovery::Served::start(&bindir, &data, work.path())?;
    // verify.checks run in the database the job's url names.
    let db = match &plan.source {
        SourcePlan::Cluster(c) => c.url.dbname().to_string(),
        _ => "postgres".into(),
    };
    let url = crate::postgres::PgUrl::parse(&served.url)
        .map_err(Error::failed)?
        .with_dbname(&db);
    let conn = Conn::new(url, None);
    if let Some(c) = amcheck(&conn).await {
        checks.push(c);
    }
    checks.extend(crate::postgres::checks::sql_checks(plan, &conn).await?);
    drop(served);
    Ok(DrillResult {
        checks,
        restore_ms,
        download_ms: 0,
        apply_ms: restore_ms,
        restored_bytes: entry.manifest.plaintext_bytes,
        scratch: format!(
            "base backup {} with {} WAL file(s) in a scratch data directory: {reached}",
            entry.id, report.wal_files
        ),
    })
}

struct DrillResult {
    checks: Vec<Check>,
    restore_ms: u64,
    download_ms: u64,
    apply_ms: u64,
    restored_bytes: u64,
    scratch: String,
}

impl DrillResult {
    fn new(
        checks: Vec<Check>,
        restore_ms: u64,
        r: Option<&crate::run::restore::Report>,
        scratch: String,
    ) -> Self {
        DrillResult {
            checks,
            restore_ms,
            download_ms: r.map(|r| r.download_ms).unwrap_or(0),
            apply_ms: r.map(|r| r.restore_ms).unwrap_or(0),
            restored_bytes: r.map(|r| r.restored_bytes).unwrap_or(0),
            scratch,
        }
    }
}

async fn drill_volume(
    plan: &JobPlan,
    storage: Arc<dyn Storage>,
    entry: &snapshot::Entry,
    opts: &Options,
) -> Result<DrillResult> {
    let dir = tempfile::Builder::new()
        .prefix("backstop-verify-")
        .tempdir()
        .map_err(|e| Error::failed(format!("cannot create a scratch directory: {e}")))?;
    let restored = dir.path().join("restored");
    let ropts = crate::run::restore::Options {
        allow_foreign: opts.allow_foreign,
        snapshot: Some(entry.id.clone()),
        to: Some(restored.display().to_string()),
        yes: true,
        identity: opts.identity.clone(),
        ..Default::default()
    };
    let clock = Instant::now();
    let mut checks = Vec::new();
    let report = match crate::run::restore::run(plan, storage, &ropts, &drill_gate(opts)).await {
        Ok(r) => r,
        Err(e) if e.kind() == Kind::VerifyMismatch => {
            checks.push(Check {
                name: "files match the recorded list".into(),
                expected: "every file's type, mode, mtime, size and SHA-256".into(),
                actual: e.message().to_string(),
                ok: false,
            });
            let _ = crate::volume::target::make_writable(dir.path());
            return Ok(DrillResult::new(
                checks,
                clock.elapsed().as_millis() as u64,
                None,
                "temp dir".into(),
            ));
        }
        Err(e) => return Err(e.context(format!("drill of job {}: the restore failed", plan.name))),
    };
    let restore_ms = clock.elapsed().as_millis() as u64;
    checks.push(Check {
        name: "files match the recorded list".into(),
        expected: format!("{} files", report.files.unwrap_or(0)),
        actual: format!("{} files checked", report.files.unwrap_or(0)),
        ok: true,
    });
    if let Some(cmd) = plan
        .verify
        .as_ref()
        .and_then(|v| v.command.clone())
        .filter(|c| !c.is_empty())
    {
        let out = tokio::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .env("BACKSTOP_RESTORED", &restored)
            .kill_on_drop(true)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| Error::failed(format!("cannot run verify.command {:?}: {e}", cmd[0])))?;
        checks.push(Check {
            name: format!("verify.command {cmd:?}"),
            expected: "exit 0".into(),
            actual: format!(
                "{}{}",
                out.status,
                if out.status.success() {
                    String::new()
                } else {
                    format!(
                        ": {}",
                        crate::text::summarize(&String::from_utf8_lossy(&out.stderr))
                    )
                }
            ),
            ok: out.status.success(),
        });
    }
    let _ = crate::volume::target::make_writable(dir.path());
    Ok(DrillResult::new(
        checks,
        restore_ms,
        Some(&report),
        "temp dir".into(),
    ))
}

async fn drill_postgres(
    plan: &JobPlan,
    storage: Arc<dyn Storage>,
    entry: &snapshot::Entry,
    opts: &Options,
) -> Result<DrillResult> {
    let SourcePlan::Postgres(src) = &plan.source else {
        unreachable!("checked by the caller")
    };
    let m = &entry.manifest;
    let major: u32 = m
        .source
        .pg_dump_version
        .as_deref()
        .and_then(|v| v.split('.').next()?.parse().ok())
        .unwrap_or(0);
    let short = &entry.id[entry.id.len() - 6..];
    let dbname = format!(
        "backstop_verify_{}_{short}",
        jiff::Timestamp::now().strftime("%Y%m%d%H%M%S")
    );
    // The scratch server: configured, or our own cluster.
    let (scratch_conn, cluster, scratch_desc) = match plan
        .verify
        .as_ref()
        .and_then(|v| v.scratch_url.clone())
    {
        Some(u) => {
            let url = PgUrl::parse(&u)
                .map_err(|why| Error::config(format!("verify.scratch_url {why}")))?;
            let same_server = url.host() == src.url.host() && url.port() == src.url.port();
            if same_server && url.dbname() == src.url.dbname() {
                return Err(Error::config(format!(
                    "job {}: verify.scratch_url points at the job's own source database {}; a drill must never touch it",
                    plan.name, src.url
                )));
            }
            let desc = format!("{}:{}", url.host(), url.port());
            (Conn::new(url, None), None, desc)
        }
        None => {
            let c = ScratchCluster::start(major).await?;
            let url = PgUrl::parse(&c.url("postgres")).map_err(Error::failed)?;
            let desc = format!(
                "scratch cluster PostgreSQL {} on a private socket (port {})",
                c.major, c.port
            );
            (Conn::new(url, None), Some(c), desc)
        }
    };
    let target = scratch_conn.with_dbname(&dbname);
    // Roles are applied only inside a scratch cluster of our own, never on a shared
    // scratch_url server (whose roles belong to someone else).
    let own_cluster = cluster.is_some();
    let has_globals = own_cluster && m.object("globals").is_some();
    let ropts = crate::run::restore::Options {
        allow_foreign: opts.allow_foreign,
        snapshot: Some(entry.id.clone()),
        to: Some(target_url(&target)),
        yes: true,
        identity: opts.identity.clone(),
        // Without stored roles the scratch server lacks the owners: restore without them.
        no_owner: !has_globals,
        skip_roles: !own_cluster,
        ..Default::default()
    };
    let clock = Instant::now();
    let result = async {
        let report =
            crate::run::restore::run(plan, storage.clone(), &ropts, &drill_gate(opts)).await?;
        let restore_ms = clock.elapsed().as_millis() as u64;
        let mut checks = run_checks(
            plan,
            storage.as_ref(),
            entry,
            &target,
            opts.identity.as_deref(),
        )
        .await?;
        if let Some(c) = amcheck(&target).await {
            checks.push(c);
        }
        Ok::<_, Error>((checks, restore_ms, report))
    }
    .await;
    // Tear down: the database on a configured server, or the whole scratch cluster.
    if cluster.is_none() {
        let admin = scratch_conn.with_dbname("postgres");
        if let Ok(psql) = pg::any_psql() {
            let _ = pg::query(
                &psql,
                &admin,
                &format!("DROP DATABASE IF EXISTS {}", quote_ident(&dbname)),
            )
            .await;
        }
    }
    drop(cluster);
    let (checks, restore_ms, report) = result.map_err(|e| {
        e.context(format!(
            "drill of job {} snapshot {} could not run",
            plan.name, entry.id
        ))
    })?;
    Ok(DrillResult::new(
        checks,
        restore_ms,
        Some(&report),
        scratch_desc,
    ))
}

/// Drills restore into scratch places with `yes` set, so the only question a drill can
/// meet is about a foreign snapshot: `--allow-foreign` answers it, nothing else does.
fn drill_gate(opts: &Options) -> impl Fn(&super::GateRequest<'_>) -> Result<()> + Send + Sync {
    let allow = opts.allow_foreign;
    move |r| {
        if allow {
            Ok(())
        } else {
            Err(Error::refused(r.refusal))
        }
    }
}
