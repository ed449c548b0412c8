//! `backup JOB` and `snapshot JOB --reason`: take the job lock, run one backup, print the
//! result, record it in the audit log.

use crate::backup::{self, Options};
use crate::cli::Global;
use crate::error::{Error, Result};
use crate::progress::human_bytes;
use crate::snapshot::{Manifest, Trigger};

pub async fn backup(g: &Global, job: &str, trigger: Trigger, reason: Option<String>) -> Result<()> {
    let m = run(g, job, trigger, reason, None).await?;
    if g.json {
        super::print_json(&m);
    } else {
        super::print_line(&summary(&m));
    }
    Ok(())
}

pub async fn snapshot(g: &Global, job: &str, reason: String, keep_for: &str) -> Result<()> {
    if reason.trim().is_empty() {
        return Err(Error::config(
            "snapshot needs a non-empty --reason, e.g. --reason \"migration 42\"",
        ));
    }
    let keep =
        super::parse_duration(keep_for).map_err(|e| Error::config(format!("--keep-for {e}")))?;
    let until = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(keep.as_secs() as i64))
        .map_err(|e| Error::config(format!("--keep-for {keep_for}: {e}")))?;
    let m = run(g, job, Trigger::Snapshot, Some(reason), Some(until)).await?;
    if g.json {
        super::print_json(&m);
    } else {
        if !g.quiet {
            eprintln!("{}", summary(&m));
        }
        // The id is the last line on stdout, for `id=$(backstop snapshot ...)`.
        super::print_line(&m.snapshot);
    }
    Ok(())
}

pub(super) async fn run(
    g: &Global,
    job: &str,
    trigger: Trigger,
    reason: Option<String>,
    pinned_until: Option<jiff::Timestamp>,
) -> Result<Manifest> {
    let dir = crate::job::jobs_dir(g.jobs.as_deref());
    let plan = crate::job::load(&dir, job)?;
    let storage = crate::storage::open(&plan.storage).await?;
    let action = match trigger {
        Trigger::Snapshot | Trigger::Hook => "snapshot",
        Trigger::Guard => "guard",
        _ => "backup",
    };
    let lock = crate::lock::run_lock(&plan.name, storage.clone(), action, g.wait).await?;
    let started = std::time::Instant::now();
    let opts = Options {
        trigger,
        reason: reason.clone(),
        pinned_until,
        quiet: g.quiet || g.json,
    };
    crate::notify::started(&plan).await;
    let res = tokio::select! {
        r = backup::run(&plan, storage.clone(), &opts) => r,
        e = lock.lease.lost() => Err(e),
    };
    crate::jobstate::update(&plan.name, |st| match &res {
        Ok(m) => {
            st.anomalous = m.anomalous;
            st.backup_ok = Some(crate::jobstate::Run {
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
            st.backup_failed = Some(crate::jobstate::Run {
                time: jiff::Timestamp::now().to_string(),
                duration_ms: started.elapsed().as_millis() as u64,
                error: Some(e.message().to_string()),
                ..Default::default()
            })
        }
    });
    crate::metrics::after_run();
    crate::notify::after_backup(&plan, trigger, &res).await;
    crate::audit::append(crate::audit::Record {
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

fn summary(m: &Manifest) -> String {
    let ratio = if m.stored_bytes > 0 {
        m.plaintext_bytes as f64 / m.stored_bytes as f64
    } else {
        0.0
    };
    format!(
        "job {}: snapshot {} complete: {} dumped, {} stored (ratio {ratio:.2}) in {:.1} s",
        m.job,
        m.snapshot,
        human_bytes(m.plaintext_bytes),
        human_bytes(m.stored_bytes),
        m.duration_ms as f64 / 1000.0
    )
}
