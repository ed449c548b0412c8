//! One run of a job, whatever started it (a command, the daemon, `guard`, the hook):
//! the locks and the storage lease, then backup, restore, drill or prune, then the
//! bookkeeping every run shares (job state, metrics, notifications, audit record). The
//! functions here are that bookkeeping, written once.
//!
//! May import: postgres, volume, snapshot, pipeline, storage, state, config, minisign, cleanup,
//! text, error.

pub mod backup;
pub mod copy;
pub mod lease;
pub mod lock;
pub mod notify;
pub mod pitr;
pub mod restore;
pub mod verify;
pub(crate) mod walstream;

use std::sync::Arc;

use crate::config::JobPlan;
use crate::error::Result;
use crate::snapshot::drill::Outcome;
use crate::snapshot::prune::Report;
use crate::snapshot::{Manifest, Trigger};
use crate::state::jobstate::{self, Run};
use crate::storage::Storage;

/// How a run waits and talks.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RunOpts {
    /// Wait for another run of the job to finish instead of exiting with code 5.
    pub wait: bool,
    /// No progress output on stderr.
    pub quiet: bool,
}

/// A confirmation gate: shown what is about to happen, it answers whether to go on. The
/// command line supplies the one implementation (a typed answer on a terminal, `--yes`,
/// else a refusal); the library never reads stdin itself.
pub(crate) type Gate<'a> = &'a (dyn Fn(&GateRequest<'_>) -> Result<()> + Send + Sync);

/// What a gate is asked to allow.
#[derive(Debug)]
pub(crate) struct GateRequest<'a> {
    /// The question, e.g. "Replace database app on db:5432 (12 tables)?".
    pub prompt: &'a str,
    /// What the user must type to go on ("yes", or the job name for production jobs).
    pub expected: &'a str,
    /// The error message when the gate cannot ask (no terminal) and was not told `--yes`.
    pub refusal: &'a str,
}

/// A snapshot taken, and where it went: the storages that did not get it (name, why) and
/// those that did. A job with several storages may have it complete on some only.
pub(crate) struct Backed {
    pub manifest: Manifest,
    pub behind: Vec<(String, String)>,
    pub stored_on: Vec<String>,
}

impl Backed {
    /// What the run says when a storage missed the snapshot; `None` when none did.
    pub(crate) fn partial(&self) -> Option<String> {
        (!self.behind.is_empty())
            .then(|| partial_message(&self.manifest, &self.stored_on, &self.behind))
    }
}

/// Take job `job`'s locks with the lease on the first of `targets` that answers; a storage
/// that cannot be reached for the lease is dropped from the run (the others still get the
/// snapshot). Held by another run: exit code 5 as with one storage.
async fn lock_any(
    job: &str,
    targets: &crate::storage::fanout::Fanout,
    action: &str,
    wait: bool,
) -> Result<lock::RunLock> {
    let mut last = None;
    for (name, s) in targets.live() {
        match lock::run_lock(job, s, action, wait).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == crate::error::Kind::Locked => return Err(e),
            Err(e) => {
                targets.fail(&name, &format!("taking the lease: {}", e.message()));
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| crate::error::Error::failed("the job has no storage")))
}

/// Take `plan`'s locks for `action` with the lease on its first storage that answers
/// (`verify`; `backup` does the same within its fan-out).
pub(crate) async fn lock_job(plan: &JobPlan, action: &str, wait: bool) -> Result<lock::RunLock> {
    let members = crate::storage::open_all(&plan.storages).await?;
    let fan = crate::storage::fanout::Fanout::new(members);
    lock_any(&plan.name, &fan, action, wait).await
}

/// Take one snapshot of `job` under its locks, with notifications, job state, metrics and
/// an audit record. With several storages the snapshot is encoded once and written to all
/// of them; it succeeds when at least one holds it, and says which did not.
pub(crate) async fn backup(
    plan: &JobPlan,
    trigger: Trigger,
    reason: Option<String>,
    pinned_until: Option<jiff::Timestamp>,
    o: RunOpts,
) -> Result<Backed> {
    let members = crate::storage::open_all(&plan.storages).await?;
    let targets = Arc::new(crate::storage::fanout::Fanout::new(members));
    let action = match trigger {
        Trigger::Snapshot | Trigger::Hook => "snapshot",
        Trigger::Guard => "guard",
        _ => "backup",
    };
    // pg_dump's catalog queries run while the lease is taken (nothing is read from it
    // before the locks are held; a refused lock drops it, which kills it). Not when the
    // run may wait for another to finish: the dump would hold its table locks, and its
    // snapshot would age, for the whole wait.
    let early = if o.wait {
        None
    } else {
        backup::early_dump(plan)
    };
    let lock = lock_any(&plan.name, &targets, action, o.wait).await?;
    let started = std::time::Instant::now();
    let opts = backup::Options {
        trigger,
        reason: reason.clone(),
        pinned_until,
        quiet: o.quiet,
        early: std::sync::Mutex::new(early),
    };
    notify::started(plan).await;
    let res = tokio::select! {
        r = backup::run(plan, targets.clone(), &opts) => r,
        e = lock.lease.lost() => Err(e),
    };
    lock.release().await;
    let behind = targets.failures();
    let stored_on: Vec<String> = targets.live().into_iter().map(|(n, _)| n).collect();
    jobstate::update(&plan.name, |st| match &res {
        Ok(m) => {
            st.anomalous = m.anomalous;
            st.backup_ok = Some(Run {
                time: m.finished.clone(),
                snapshot: Some(m.snapshot.clone()),
                duration_ms: m.duration_ms,
                plaintext_bytes: m.plaintext_bytes,
                stored_bytes: m.stored_bytes,
                error: None,
            });
            st.snapshots = st.snapshots.map(|n| n + 1);
        }
        Err(e) => {
            st.backup_failed = Some(Run {
                time: jiff::Timestamp::now().to_string(),
                duration_ms: started.elapsed().as_millis() as u64,
                error: Some(e.message().to_string()),
                ..Default::default()
            })
        }
    });
    crate::state::metrics::after_run();
    // A storage left behind is a failure to be told about, even though the snapshot exists.
    let told = match (&res, behind.is_empty()) {
        (Ok(m), false) => Err(crate::error::Error::failed(partial_message(
            m, &stored_on, &behind,
        ))),
        (Ok(m), true) => Ok(m.clone()),
        (Err(e), _) => Err(crate::error::Error::failed(e.message().to_string())),
    };
    notify::after_backup(plan, trigger, &told).await;
    let storages: Vec<&str> = plan.storages.iter().map(|s| s.url.as_str()).collect();
    crate::state::audit::append(crate::state::audit::Record {
        action,
        job: Some(&plan.name),
        snapshot: res.as_ref().ok().map(|m| m.snapshot.as_str()),
        outcome: told.as_ref().map(|_| ()),
        details: match &res {
            Ok(m) => serde_json::json!({
                "trigger": trigger, "reason": reason, "plaintext_bytes": m.plaintext_bytes,
                "stored_bytes": m.stored_bytes, "duration_ms": m.duration_ms, "storage": storages,
                "stored_on": stored_on, "failed_storages": behind.iter().map(|(n, w)| serde_json::json!({"storage": n, "error": w})).collect::<Vec<_>>(),
            }),
            Err(_) => {
                serde_json::json!({"trigger": trigger, "reason": reason, "storage": storages})
            }
        },
    });
    res.map(|manifest| Backed {
        manifest,
        behind,
        stored_on,
    })
}

/// What a backup that reached only some storages says: where not, why, and what brings
/// it there.
pub(crate) fn partial_message(
    m: &Manifest,
    stored_on: &[String],
    behind: &[(String, String)],
) -> String {
    let names: Vec<&str> = behind.iter().map(|(n, _)| n.as_str()).collect();
    let why: Vec<String> = behind.iter().map(|(n, w)| format!("{n}: {w}")).collect();
    format!(
        "snapshot {} of job {} is complete, but storage {} did not get it ({}); \
         run `backstop copy {} --from {} --to {} --all-missing` once it is back (the daemon does)",
        m.snapshot,
        m.job,
        names.join(", "),
        why.join("; "),
        m.job,
        stored_on.first().map(String::as_str).unwrap_or("NAME"),
        names.first().copied().unwrap_or("NAME")
    )
}

/// Restore a snapshot of `plan` under the job's local lock, audited.
pub(crate) async fn restore(
    plan: &JobPlan,
    opts: &restore::Options,
    gate: Gate<'_>,
) -> Result<restore::Report> {
    let _lock = crate::state::lock::job_lock(&plan.name)?;
    let storage = crate::snapshot::replicas::open(plan, opts.storage.as_deref()).await?;
    // Asked once: a second attempt from another storage's copies does not ask again.
    let approved = std::sync::atomic::AtomicBool::new(false);
    let once = |r: &GateRequest<'_>| -> Result<()> {
        if approved.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        gate(r)?;
        approved.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    };
    let mut res = repairing(&storage, || {
        restore::run(plan, storage.clone(), opts, &once)
    })
    .await;
    if let (Ok(r), Some(rep)) = (&mut res, crate::snapshot::replicas::of(storage.as_ref())) {
        r.repaired = rep.bad_copies();
    }
    crate::state::audit::append(crate::state::audit::Record {
        action: "restore",
        job: Some(&plan.name),
        snapshot: res
            .as_ref()
            .ok()
            .map(|r| r.snapshot.as_str())
            .or(opts.snapshot.as_deref()),
        outcome: res.as_ref().map(|_| ()),
        details: match &res {
            Ok(r) => serde_json::to_value(r).unwrap_or_default(),
            Err(_) => {
                serde_json::json!({"to": opts.to.as_deref().map(crate::postgres::redact), "yes": opts.yes})
            }
        },
    });
    res
}

/// One restore drill of `plan`, recorded in job state, metrics, notifications (on
/// failure) and the audit log whatever its outcome. The caller holds the run lock.
pub(crate) async fn drill(
    plan: &JobPlan,
    storage: Arc<dyn Storage>,
    opts: &verify::Options,
) -> Result<Outcome> {
    let started = jiff::Timestamp::now();
    let res = repairing(&storage, || verify::run(plan, storage.clone(), opts)).await;
    if let Some(rep) = crate::snapshot::replicas::of(storage.as_ref()) {
        for c in rep.bad_copies() {
            eprintln!(
                "backstop: WARNING: job {}: a stored copy is missing or damaged: {c}",
                plan.name
            );
        }
    }
    jobstate::update(&plan.name, |st| match &res {
        Ok(o) => {
            st.verify_ok = Some(Run {
                time: o.summary.time.clone(),
                snapshot: Some(o.summary.snapshot.clone()),
                duration_ms: o.summary.restore_ms,
                plaintext_bytes: o.summary.restored_bytes,
                ..Default::default()
            })
        }
        Err(e) => {
            st.verify_failed = Some(Run {
                time: started.to_string(),
                snapshot: opts.snapshot.clone(),
                error: Some(e.message().to_string()),
                ..Default::default()
            })
        }
    });
    crate::state::metrics::after_run();
    if let Err(e) = &res {
        notify::verify_failed(plan, e.message()).await;
    }
    crate::state::audit::append(crate::state::audit::Record {
        action: "verify",
        job: Some(&plan.name),
        snapshot: res
            .as_ref()
            .ok()
            .map(|o| o.summary.snapshot.as_str())
            .or(opts.snapshot.as_deref()),
        outcome: res.as_ref().map(|_| ()),
        details: match &res {
            Ok(o) => serde_json::to_value(&o.summary).unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        },
    });
    res
}

/// Run `attempt` again while the job's storages keep finding copies that are missing or
/// damaged: each new attempt reads those objects from another storage holding the same
/// snapshot. Ends when an attempt succeeds, or fails without finding a new bad copy (the
/// number of copies bounds the attempts).
async fn repairing<T, F, Fut>(storage: &Arc<dyn Storage>, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let bad = || crate::snapshot::replicas::of(storage.as_ref()).map(|r| r.bad_copies().len());
    loop {
        let before = bad();
        let res = attempt().await;
        match (&res, before, bad()) {
            (Err(e), Some(b), Some(a)) if a > b => {
                eprintln!(
                    "backstop: WARNING: {}; trying again with the copies on the other storages",
                    e.message()
                );
            }
            _ => return res,
        }
    }
}

/// Apply `plan`'s retention under its locks, on each storage with that storage's own
/// retention (`[storage.retention]`, else the job's); `gate` is asked before anything is
/// deleted. One report per storage; a storage that cannot be pruned gets a report with
/// the error and the others are still pruned.
pub(crate) async fn prune(
    plan: &JobPlan,
    dry_run: bool,
    o: RunOpts,
    gate: &(dyn Fn(&Report) -> Result<()> + Send + Sync),
) -> Result<Vec<Report>> {
    let several = plan.storages.len() > 1;
    let mut out = Vec::new();
    for sp in &plan.storages {
        let mut one = plan.clone();
        one.storages = vec![sp.clone()];
        if sp.retention.is_some() {
            one.retention = sp.retention.clone();
        }
        match prune_storage(&one, dry_run, o, gate).await {
            Ok(mut r) => {
                r.storage = several.then(|| sp.name.clone());
                out.push(r);
            }
            Err(e) if several && e.kind() != crate::error::Kind::Refused => {
                out.push(Report {
                    job: plan.name.clone(),
                    storage: Some(sp.name.clone()),
                    dry_run,
                    decisions: Vec::new(),
                    stale_after: None,
                    deleted: Vec::new(),
                    leftovers: Vec::new(),
                    errors: vec![format!("storage {}: {}", sp.name, e.message())],
                    wal_removed: Vec::new(),
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Prune one storage (`plan.storages` holds just it).
async fn prune_storage(
    plan: &JobPlan,
    dry_run: bool,
    o: RunOpts,
    gate: &(dyn Fn(&Report) -> Result<()> + Send + Sync),
) -> Result<Report> {
    let storage = crate::storage::open(&plan.storages[0]).await?;
    let lock = lock::run_lock(&plan.name, storage.clone(), "prune", o.wait).await?;
    let work = crate::snapshot::prune::run(plan, storage, dry_run, jiff::Timestamp::now(), gate);
    let res = tokio::select! {
        r = work => r,
        e = lock.lease.lost() => Err(e),
    };
    lock.release().await;
    if let Ok(r) = &res
        && !r.dry_run
    {
        let kept = (r.decisions.len() - r.deleted.len()) as u64;
        jobstate::update(&plan.name, |st| st.snapshots = Some(kept));
        crate::state::metrics::after_run();
    }
    crate::state::audit::append(crate::state::audit::Record {
        action: "prune",
        job: Some(&plan.name),
        snapshot: None,
        outcome: res.as_ref().map(|_| ()),
        details: match &res {
            Ok(r) => serde_json::json!({
                "dry_run": r.dry_run, "deleted": r.deleted, "leftovers": r.leftovers,
                "kept": r.decisions.iter().filter(|d| d.keep).count(), "errors": r.errors,
                "storage": plan.storages[0].name,
            }),
            Err(_) => serde_json::json!({"dry_run": dry_run, "storage": plan.storages[0].name}),
        },
    });
    res
}
