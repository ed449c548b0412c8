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

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{JobPlan, SourcePlan};
use crate::error::{Error, Kind, Result};
use crate::postgres::{self as pg, Conn, PgUrl, quote_ident};
use crate::snapshot;
use crate::snapshot::drill::{Check, Outcome, Summary, Verdict, record};
use crate::storage::Storage;

#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    pub snapshot: Option<String>,
    pub identity: Option<PathBuf>,
}

/// Run a drill of `plan`'s snapshot (default: the newest) and record the result.
pub(crate) async fn run(
    plan: &JobPlan,
    storage: Arc<dyn Storage>,
    opts: &Options,
) -> Result<Outcome> {
    let clock = Instant::now();
    let entry = snapshot::pick(storage.as_ref(), &plan.name, opts.snapshot.as_deref()).await?;
    let d = match &plan.source {
        SourcePlan::Postgres(_) => drill_postgres(plan, storage.clone(), &entry, opts).await?,
        SourcePlan::Volume(_) => drill_volume(plan, storage.clone(), &entry, opts).await?,
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
        snapshot: Some(entry.id.clone()),
        to: Some(restored.display().to_string()),
        yes: true,
        identity: opts.identity.clone(),
        ..Default::default()
    };
    let clock = Instant::now();
    let mut checks = Vec::new();
    let report = match crate::run::restore::run(plan, storage, &ropts, &no_prompt).await {
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
                "scratch cluster PostgreSQL {} on 127.0.0.1:{}",
                c.major, c.port
            );
            (Conn::new(url, None), Some(c), desc)
        }
    };
    let target = scratch_conn.with_dbname(&dbname);
    let has_globals = m.object("globals").is_some();
    let ropts = crate::run::restore::Options {
        snapshot: Some(entry.id.clone()),
        to: Some(target_url(&target)),
        yes: true,
        identity: opts.identity.clone(),
        // Without stored roles the scratch server lacks the owners: restore without them.
        no_owner: !has_globals,
        ..Default::default()
    };
    let clock = Instant::now();
    let result = async {
        let report = crate::run::restore::run(plan, storage.clone(), &ropts, &no_prompt).await?;
        let restore_ms = clock.elapsed().as_millis() as u64;
        let mut checks = run_checks(plan, storage.as_ref(), entry, &target, opts).await?;
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

/// `pg_amcheck` of the restored database (heap and B-tree indexes, every heap tuple found
/// in its indexes), when installed.
async fn amcheck(target: &Conn) -> Option<Check> {
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

fn target_url(c: &Conn) -> String {
    // Restore's --to takes a URL; a password for a configured scratch server stays in
    // the environment (PGPASSWORD / .pgpass), never on a command line.
    c.url.conninfo().replacen("postgresql://", "postgres://", 1)
}

async fn run_checks(
    plan: &JobPlan,
    storage: &dyn Storage,
    entry: &snapshot::Entry,
    target: &Conn,
    opts: &Options,
) -> Result<Vec<Check>> {
    let psql = pg::any_psql()?;
    let mut checks = Vec::new();
    // Row counts recorded at backup time (from the dump's own snapshot).
    let identities = Arc::new(crate::pipeline::load_identities(
        &crate::run::restore::identity_path(plan, opts.identity.as_deref())?,
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

/// A throwaway PostgreSQL cluster; stopped and removed on drop, whatever happened.
pub(crate) struct ScratchCluster {
    dir: Option<tempfile::TempDir>,
    bindir: PathBuf,
    pub port: u16,
    pub major: u32,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn as_server_user(program: &Path) -> std::process::Command {
    if is_root() {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        std::process::Command::new(program)
    }
}

impl ScratchCluster {
    /// Start a cluster with server binaries of major `min_major` or newer.
    pub(crate) async fn start(min_major: u32) -> Result<ScratchCluster> {
        let tools = pg::tools_for("initdb", min_major).map_err(|e| {
            Error::failed(format!(
                "cannot start a scratch cluster: {} (or set verify.scratch_url)",
                e.message()
            ))
        })?;
        tokio::task::spawn_blocking(move || Self::start_blocking(tools))
            .await
            .map_err(|e| Error::failed(format!("scratch cluster task: {e}")))?
    }

    fn start_blocking(tools: pg::Tools) -> Result<ScratchCluster> {
        let dir = tempfile::Builder::new()
            .prefix("backstop-verify-pg-")
            .tempdir()
            .map_err(|e| Error::failed(format!("cannot create a scratch directory: {e}")))?;
        if is_root() {
            let st = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status();
            if !st.is_ok_and(|s| s.success()) {
                return Err(Error::failed(
                    "cannot start a scratch cluster as root: no `postgres` user to own it (create one, or set verify.scratch_url)",
                ));
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| Error::failed(format!("no free port: {e}")))?;
        let mut c = ScratchCluster {
            dir: Some(dir),
            bindir: tools.dir.clone(),
            port,
            major: tools.major,
        };
        let path = c.path().to_path_buf();
        let run = |cmd: &mut std::process::Command, what: &str| -> Result<()> {
            let out = cmd
                .output()
                .map_err(|e| Error::failed(format!("cannot run {what}: {e}")))?;
            if !out.status.success() {
                return Err(Error::failed(format!(
                    "scratch cluster: {what} failed: {}",
                    crate::text::summarize(&String::from_utf8_lossy(&out.stderr))
                )));
            }
            Ok(())
        };
        run(
            as_server_user(&c.bindir.join("initdb"))
                .arg("-D")
                .arg(path.join("data"))
                .args(["-U", "postgres", "-A", "trust", "--no-sync"])
                .stdin(Stdio::null()),
            "initdb",
        )?;
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            path.display()
        );
        run(
            as_server_user(&c.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(path.join("data"))
                .args(["-o", &opts, "-l"])
                .arg(path.join("server.log"))
                .args(["-w", "-t", "120", "start"])
                .stdin(Stdio::null()),
            "pg_ctl start",
        )
        .map_err(|e| {
            let log = std::fs::read_to_string(path.join("server.log")).unwrap_or_default();
            e.context(format!("server log: {}", crate::text::summarize(&log)))
        })?;
        c.port = port;
        Ok(c)
    }

    fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    pub(crate) fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        let data = self.path().join("data");
        if data.join("postmaster.pid").exists() {
            let _ = as_server_user(&self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdin(Stdio::null())
                .output();
        }
        // TempDir removes the directory.
        self.dir.take();
    }
}

/// Drills restore into scratch places with `yes` set: nothing is ever asked.
fn no_prompt(r: &super::GateRequest<'_>) -> Result<()> {
    Err(Error::refused(r.refusal))
}
