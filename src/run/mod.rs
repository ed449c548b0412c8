//! One run of a job, whatever started it (a command, the daemon, `guard`, the hook):
//! the locks and the storage lease, then backup, restore, drill or prune, then the
//! bookkeeping every run shares (job state, metrics, notifications, audit record). The
//! functions here are that bookkeeping, written once.
//!
//! May import: postgres, volume, snapshot, pipeline, storage, state, config, minisign, cleanup,
//! text, error.

pub mod backup;
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

/// Take one snapshot of `job` under its locks, with notifications, job state, metrics and
/// an audit record.
pub(crate) async fn backup(
    plan: &JobPlan,
    trigger: Trigger,
    reason: Option<String>,
    pinned_until: Option<jiff::Timestamp>,
    o: RunOpts,
) -> Result<Manifest> {
    let storage = crate::storage::open(&plan.storage).await?;
    let action = match trigger {
        Trigger::Snapshot | Trigger::Hook => "snapshot",
        Trigger::Guard => "guard",
        _ => "backup",
    };
    let lock = lock::run_lock(&plan.name, storage.clone(), action, o.wait).await?;
    let started = std::time::Instant::now();
    let opts = backup::Options {
        trigger,
        reason: reason.clone(),
        pinned_until,
        quiet: o.quiet,
    };
    notify::started(plan).await;
    let res = tokio::select! {
        r = backup::run(plan, storage.clone(), &opts) => r,
        e = lock.lease.lost() => Err(e),
    };
    lock.release().await;
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
    notify::after_backup(plan, trigger, &res).await;
    crate::state::audit::append(crate::state::audit::Record {
        action,
        job: Some(&plan.name),
        snapshot: res.as_ref().ok().map(|m| m.snapshot.as_str()),
        outcome: res.as_ref().map(|_| ()),
        details: match &res {
            Ok(m) => serde_json::json!({
                "trigger": trigger, "reason": reason, "plaintext_bytes": m.plaintext_bytes,
                "stored_bytes": m.stored_bytes, "duration_ms": m.duration_ms, "storage": plan.storage.url,
            }),
            Err(_) => {
                serde_json::json!({"trigger": trigger, "reason": reason, "storage": plan.storage.url})
            }
        },
    });
    res
}

/// Restore a snapshot of `plan` under the job's local lock, audited.
pub(crate) async fn restore(
    plan: &JobPlan,
    opts: &restore::Options,
    gate: Gate<'_>,
) -> Result<restore::Report> {
    let _lock = crate::state::lock::job_lock(&plan.name)?;
    let storage = crate::storage::open(&plan.storage).await?;
    let res = restore::run(plan, storage, opts, gate).await;
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
    let res = verify::run(plan, storage, opts).await;
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

/// Apply `plan`'s retention under its locks; `gate` is asked before anything is deleted.
pub(crate) async fn prune(
    plan: &JobPlan,
    dry_run: bool,
    o: RunOpts,
    gate: &(dyn Fn(&Report) -> Result<()> + Send + Sync),
) -> Result<Report> {
    let storage = crate::storage::open(&plan.storage).await?;
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
            }),
            Err(_) => serde_json::json!({"dry_run": dry_run}),
        },
    });
    res
}
