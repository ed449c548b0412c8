//! `backstop daemon`: every job's `schedule` (backup, then prune when retention is set) and
//! `verify.schedule` (restore drill) from one process. Each run is a child process of this
//! binary (`backstop backup JOB --trigger schedule`), so the daemon stays small while idle
//! and a run's memory goes back to the system when it ends.
//!
//! - One run per job at a time: a run due while the job's previous one is still going is
//!   queued once. At most `max_concurrent` runs at once over all jobs.
//! - Catch-up: at start, a run that fell due while the daemon was down, within the
//!   catch-up window, and has no snapshot (or drill) since, runs once.
//! - SIGHUP reloads the job files; a file that no longer loads keeps its old plan, logged.
//! - SIGTERM/SIGINT: stop scheduling, let running work finish within the grace period,
//!   then SIGTERM the runs (each aborts its multipart uploads, stops its scratch cluster,
//!   removes partial objects) and exit 0 once they are gone.
//! - Idle, it sleeps until the next due time (waking at least once a minute to notice
//!   clock changes).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

use crate::config::JobPlan;
use crate::config::schedule::Schedule;
use crate::error::{Error, Result};

pub(crate) struct Options {
    pub jobs_dir: PathBuf,
    pub max_concurrent: usize,
    pub catch_up: Duration,
    pub grace: Duration,
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Serve the status page, `/api/status` and `/metrics` here.
    pub listen: Option<std::net::SocketAddr>,
    /// Required on `listen` as `Authorization: Bearer TOKEN`.
    pub listen_token: Option<String>,
    /// Environment for runs (the daemon's own --metrics-file and --log-format).
    pub child_env: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Backup,
    Verify,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Backup => "backup",
            Kind::Verify => "verify",
        }
    }
}

struct Entry {
    job: String,
    kind: Kind,
    expr: String,
    schedule: Schedule,
    next: Option<Timestamp>,
}

/// A job's checked plan and the text it came from (handed to its runs).
#[derive(Clone)]
struct Loaded {
    plan: JobPlan,
    text: String,
}

/// Load every job; `old` supplies the plan of a job whose file no longer loads.
fn load_plans(
    dir: &std::path::Path,
    old: &BTreeMap<String, Loaded>,
    strict: bool,
) -> Result<BTreeMap<String, Loaded>> {
    let mut plans = BTreeMap::new();
    for name in crate::config::job_names(dir)? {
        match crate::config::load_with_text(dir, &name) {
            Ok((plan, text)) => {
                plans.insert(name, Loaded { plan, text });
            }
            Err(e) if strict => return Err(e),
            Err(e) => match old.get(&name) {
                Some(p) => {
                    tracing::error!(
                        "reload: {}; job {name} keeps its previous plan",
                        e.message()
                    );
                    plans.insert(name, p.clone());
                }
                None => tracing::error!("reload: {}; job {name} is not scheduled", e.message()),
            },
        }
    }
    Ok(plans)
}

fn entries(plans: &BTreeMap<String, Loaded>, now: Timestamp) -> Vec<Entry> {
    let mut out = Vec::new();
    for p in plans.values().map(|l| &l.plan) {
        let verify = p.verify.as_ref().and_then(|v| v.schedule.clone());
        for (kind, expr) in [(Kind::Backup, p.schedule.clone()), (Kind::Verify, verify)] {
            let Some(expr) = expr else { continue };
            match Schedule::parse(&expr, &p.timezone) {
                Ok(schedule) => out.push(Entry {
                    job: p.name.clone(),
                    kind,
                    next: schedule.next_after(now),
                    expr,
                    schedule,
                }),
                Err(why) => tracing::error!("job {}: schedule {expr:?}: {why}", p.name),
            }
        }
    }
    out
}

/// The last due time at or before `now`, within `window`.
fn last_due(s: &Schedule, now: Timestamp, window: Duration) -> Option<Timestamp> {
    let mut t = s.next_after(now - jiff::SignedDuration::from_secs(window.as_secs() as i64))?;
    let mut last = None;
    while t <= now {
        last = Some(t);
        t = s.next_after(t)?;
    }
    last
}

/// Whether `kind` of `plan` has run since `due` (a snapshot, or a drill, finished after it).
async fn ran_since(plan: &JobPlan, kind: Kind, due: Timestamp) -> bool {
    let check = async {
        let storage = crate::snapshot::replicas::open(plan, None).await?;
        let entries = crate::snapshot::catalog(storage.as_ref(), plan).await?;
        Ok::<bool, Error>(match kind {
            Kind::Backup => entries
                .first()
                .and_then(|e| e.manifest.finished_at())
                .is_some_and(|t| t >= due),
            Kind::Verify => match entries.first() {
                Some(e) => crate::snapshot::drill::summaries(storage.as_ref(), plan, &e.id)
                    .await?
                    .iter()
                    .any(|s| s.time.parse::<Timestamp>().is_ok_and(|t| t >= due)),
                None => true, // nothing to drill
            },
        })
    };
    match check.await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(
                "job {}: cannot tell whether the {} due at {due} ran ({}); running it",
                plan.name,
                kind.word(),
                e.message()
            );
            false
        }
    }
}

type Children = Arc<Mutex<BTreeSet<i32>>>;

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Run one scheduled action as child processes; returns a line for the log.
#[allow(clippy::too_many_arguments)]
async fn run_one(
    exe: PathBuf,
    dir: PathBuf,
    job: String,
    text: String,
    kind: Kind,
    prune_after: bool,
    storages: Vec<String>,
    permits: Arc<tokio::sync::Semaphore>,
    children: Children,
    child_env: Arc<Vec<(String, String)>>,
) -> (String, Kind, std::result::Result<(), String>) {
    let Ok(_permit) = permits.acquire_owned().await else {
        return (job, kind, Err("the daemon is stopping".into()));
    };
    // The run gets the plan this daemon loaded, even if the file has changed since.
    let pinned = crate::state::state_dir()
        .join("daemon")
        .join(format!("{job}.toml"));
    let stash = crate::state::write_private(&pinned, text.as_bytes());
    if let Err(e) = stash {
        return (
            job,
            kind,
            Err(format!("cannot write {}: {e}", pinned.display())),
        );
    }
    let mut env: Vec<(String, std::ffi::OsString)> = vec![(
        crate::config::env::daemon_plan_var(&job),
        pinned.into_os_string(),
    )];
    env.extend(child_env.iter().map(|(k, v)| (k.clone(), v.into())));
    let args: Vec<String> = match kind {
        Kind::Backup => vec![
            "backup".into(),
            job.clone(),
            "--trigger".into(),
            "schedule".into(),
        ],
        Kind::Verify => vec!["verify".into(), job.clone()],
    };
    let res = child(&exe, &dir, &args, &env, &children).await;
    let res = match res {
        Ok(()) if prune_after => child(
            &exe,
            &dir,
            &["prune".into(), job.clone(), "--yes".into()],
            &env,
            &children,
        )
        .await
        .map_err(|e| format!("the backup succeeded; retention failed: {e}")),
        other => other,
    };
    // Several storages: whatever one holds and another lacks (a storage that was down, a
    // backup that reached only some) is copied across, still encrypted, every byte checked.
    if kind == Kind::Backup {
        for to in &storages {
            for from in storages.iter().filter(|f| *f != to) {
                let args: Vec<String> = vec![
                    "copy".into(),
                    job.clone(),
                    "--from".into(),
                    from.clone(),
                    "--to".into(),
                    to.clone(),
                    "--all-missing".into(),
                ];
                if let Err(e) = child(&exe, &dir, &args, &env, &children).await {
                    tracing::warn!("job {job}: bringing storage {to} up to date from {from}: {e}");
                }
            }
        }
    }
    (job, kind, res)
}

async fn child(
    exe: &std::path::Path,
    dir: &std::path::Path,
    args: &[String],
    env: &[(String, std::ffi::OsString)],
    children: &Children,
) -> std::result::Result<(), String> {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--jobs")
        .arg(dir)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)));
    // Its own process group: a terminal's Ctrl-C reaches the daemon only, which then
    // decides when the runs stop.
    cmd.process_group(0);
    let mut c = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let pid = c.id().map(|p| p as i32);
    if let (Some(pid), Ok(mut set)) = (pid, children.lock()) {
        set.insert(pid);
    }
    let status = c.wait().await;
    if let (Some(pid), Ok(mut set)) = (pid, children.lock()) {
        set.remove(&pid);
    }
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) if s.code() == Some(5) => {
            Err("another run of the job holds its lock (exit 5); skipped".into())
        }
        Ok(s) => Err(format!("`backstop {}` failed ({s})", args.join(" "))),
        Err(e) => Err(format!("waiting for `backstop {}`: {e}", args.join(" "))),
    }
}

fn signal_children(children: &Children, sig: i32) -> usize {
    let pids: Vec<i32> = children
        .lock()
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default();
    for pid in &pids {
        // SAFETY: sending a signal to a child we started; a gone pid only yields ESRCH.
        unsafe {
            libc::kill(*pid, sig);
        }
    }
    pids.len()
}

pub(crate) async fn run(opts: Options) -> Result<()> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::failed(format!("cannot find the backstop binary's path: {e}")))?;
    let dir = std::fs::canonicalize(&opts.jobs_dir)
        .map_err(|e| Error::config(format!("jobs directory {}: {e}", opts.jobs_dir.display())))?;
    if opts.max_concurrent == 0 {
        return Err(Error::config(
            "--max-concurrent 0 would never run anything; use 1 or more",
        ));
    }
    let mut plans = load_plans(&dir, &BTreeMap::new(), true)?;
    let mut sched = entries(&plans, Timestamp::now());
    // The status page and the schedule checks read catalogs again and again: each manifest
    // once is enough (runs, restores and drills are child processes that read everything).
    crate::snapshot::remember_manifests();
    let sig =
        |k: SignalKind| signal(k).map_err(|e| Error::failed(format!("cannot handle signals: {e}")));
    let (mut hup, mut term, mut int) = (
        sig(SignalKind::hangup())?,
        sig(SignalKind::terminate())?,
        sig(SignalKind::interrupt())?,
    );
    let _metrics = match opts.metrics_listen {
        Some(addr) => {
            // Bind now, so a taken port is an error at start rather than a log line.
            let probe = std::net::TcpListener::bind(addr)
                .map_err(|e| Error::failed(format!("--metrics-listen {addr}: {e}")))?;
            drop(probe);
            tracing::info!("serving metrics at http://{addr}/metrics");
            Some(AbortOnDrop(tokio::spawn(async move {
                if let Err(e) = crate::state::metrics::serve(addr).await {
                    tracing::error!("metrics server on {addr}: {e}");
                }
            })))
        }
        None => None,
    };
    // The status page: bound now (a taken port is an error at start), answered from a
    // cache refreshed in the background.
    let site = crate::ops::web::Site::new(plans.values().map(|l| l.plan.clone()).collect());
    let _web = match opts.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::failed(format!("--listen {addr}: {e}")))?;
            tracing::info!("serving the status page at http://{addr}/ (and /api/status, /metrics)");
            let (s1, s2, token) = (site.clone(), site.clone(), opts.listen_token.clone());
            Some((
                AbortOnDrop(tokio::spawn(s1.refresher())),
                AbortOnDrop(tokio::spawn(async move {
                    if let Err(e) = crate::ops::web::serve(listener, s2, token).await {
                        tracing::error!("status page on {addr}: {e}");
                    }
                })),
            ))
        }
        None => None,
    };
    let child_env = Arc::new(opts.child_env.clone());
    let permits = Arc::new(tokio::sync::Semaphore::new(opts.max_concurrent));
    let children: Children = Arc::default();
    let mut running: BTreeSet<String> = BTreeSet::new();
    let mut queued: VecDeque<(String, Kind)> = VecDeque::new();
    let mut tasks = JoinSet::new();
    // Cluster jobs with `wal_stream = true`: `backstop wal-stream JOB` runs all the time,
    // restarted 10 s after it ends, stopped with SIGTERM when the daemon stops.
    let streams: Children = Arc::default();
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut _streamers = Vec::new();
    for (name, l) in &plans {
        if let crate::config::SourcePlan::Cluster(c) = &l.plan.source
            && c.wal_stream
        {
            let (exe, dir, env, streams, stopping, job) = (
                exe.clone(),
                dir.clone(),
                child_env.clone(),
                streams.clone(),
                stopping.clone(),
                name.clone(),
            );
            tracing::info!("job {job}: streaming WAL (wal-stream) while the daemon runs");
            _streamers.push(AbortOnDrop(tokio::spawn(async move {
                let args = ["wal-stream".to_string(), job.clone()];
                let env: Vec<(String, std::ffi::OsString)> =
                    env.iter().map(|(k, v)| (k.clone(), v.into())).collect();
                while !stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    if let Err(e) = child(&exe, &dir, &args, &env, &streams).await {
                        tracing::error!("job {job}: {e}; restarting wal-stream in 10 s");
                    }
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            })));
        }
    }
    tracing::info!(
        "daemon: {} job(s), {} schedule(s) from {}; at most {} run(s) at once",
        plans.len(),
        sched.len(),
        dir.display(),
        opts.max_concurrent
    );
    for e in &sched {
        tracing::info!(
            "job {}: {} on \"{}\", next at {}",
            e.job,
            e.kind.word(),
            e.expr,
            e.next
                .map(|t| t.to_string())
                .unwrap_or_else(|| "never".into())
        );
    }
    // Catch up on runs missed while the daemon was down.
    let now = Timestamp::now();
    for e in &sched {
        if let Some(due) = last_due(&e.schedule, now, opts.catch_up)
            && let Some(l) = plans.get(&e.job)
            && !ran_since(&l.plan, e.kind, due).await
        {
            tracing::info!(
                "job {}: the {} due at {due} was missed; running it now",
                e.job,
                e.kind.word()
            );
            queued.push_back((e.job.clone(), e.kind));
        }
    }
    loop {
        // Start what is queued and free to run.
        let mut i = 0;
        while i < queued.len() {
            let (job, kind) = queued[i].clone();
            if running.contains(&job) {
                i += 1;
                continue;
            }
            queued.remove(i);
            let Some(loaded) = plans.get(&job) else {
                continue;
            };
            let prune_after = kind == Kind::Backup
                && (loaded
                    .plan
                    .retention
                    .as_ref()
                    .is_some_and(|r| r.has_rules())
                    || loaded
                        .plan
                        .storages
                        .iter()
                        .any(|s| s.retention.as_ref().is_some_and(|r| r.has_rules())));
            let text = loaded.text.clone();
            tracing::info!("job {job}: starting scheduled {}", kind.word());
            running.insert(job.clone());
            tasks.spawn(run_one(
                exe.clone(),
                dir.clone(),
                job,
                text,
                kind,
                prune_after,
                if loaded.plan.storages.len() > 1 {
                    loaded
                        .plan
                        .storages
                        .iter()
                        .map(|s| s.name.clone())
                        .collect()
                } else {
                    Vec::new()
                },
                permits.clone(),
                children.clone(),
                child_env.clone(),
            ));
        }
        let now = Timestamp::now();
        let next = sched.iter().filter_map(|e| e.next).min();
        let wait = next
            .map(|t| {
                let d = t.duration_since(now);
                if d.is_negative() {
                    Duration::ZERO
                } else {
                    d.unsigned_abs()
                }
            })
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {
                let now = Timestamp::now();
                for e in sched.iter_mut() {
                    if e.next.is_some_and(|t| t <= now) {
                        if running.contains(&e.job) || queued.iter().any(|(j, k)| *j == e.job && *k == e.kind) {
                            tracing::warn!("job {}: {} due, but the previous run is still going; queued", e.job, e.kind.word());
                        }
                        if !queued.iter().any(|(j, k)| *j == e.job && *k == e.kind) {
                            queued.push_back((e.job.clone(), e.kind));
                        }
                        e.next = e.schedule.next_after(now);
                    }
                }
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok((job, kind, res)) = done {
                    match res {
                        Ok(()) => tracing::info!("job {job}: scheduled {} done", kind.word()),
                        Err(e) => tracing::error!("job {job}: scheduled {}: {e}", kind.word()),
                    }
                    running.remove(&job);
                    site.poke();
                }
            }
            _ = hup.recv() => {
                plans = load_plans(&dir, &plans, false).unwrap_or_else(|e| {
                    tracing::error!("reload: {}; keeping every previous plan", e.message());
                    plans.clone()
                });
                sched = entries(&plans, Timestamp::now());
                site.set_plans(plans.values().map(|l| l.plan.clone()).collect()).await;
                tracing::info!("reloaded: {} job(s), {} schedule(s)", plans.len(), sched.len());
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // Stopping: no new runs; let the running ones finish within the grace period; WAL
    // streams ship what they have and stop.
    stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    signal_children(&streams, libc::SIGTERM);
    permits.close();
    let n = tasks.len();
    if n > 0 {
        tracing::info!(
            "stopping: waiting up to {:?} for {n} run(s) to finish",
            opts.grace
        );
    }
    let drain = async {
        while let Some(done) = tasks.join_next().await {
            if let Ok((job, kind, res)) = done {
                match res {
                    Ok(()) => tracing::info!("job {job}: scheduled {} done", kind.word()),
                    Err(e) => tracing::error!("job {job}: scheduled {}: {e}", kind.word()),
                }
            }
        }
    };
    tokio::pin!(drain);
    if tokio::time::timeout(opts.grace, &mut drain).await.is_err() {
        let n = signal_children(&children, libc::SIGTERM);
        tracing::warn!("grace period over: stopping {n} run(s); each cleans up its partial work");
        if tokio::time::timeout(Duration::from_secs(60), &mut drain)
            .await
            .is_err()
        {
            signal_children(&children, libc::SIGKILL);
            drain.await;
        }
    }
    tracing::info!("daemon stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_due_within_the_window() {
        let s = Schedule::parse("0 */6 * * *", "UTC").unwrap();
        let now: Timestamp = "2026-01-01T13:00:00Z".parse().unwrap();
        let day = Duration::from_secs(86_400);
        assert_eq!(
            last_due(&s, now, day).unwrap().to_string(),
            "2026-01-01T12:00:00Z"
        );
        assert!(last_due(&s, now, Duration::from_secs(1800)).is_none());
    }
}
