//! `restore JOB [--snapshot ID] [--to URL] [--yes]`: take the job lock, restore, print the
//! result, record it in the audit log.

use crate::cli::Global;
use crate::error::Result;
use crate::progress::human_bytes;

pub async fn restore(g: &Global, job: &str, opts: crate::restore::Options) -> Result<()> {
    let dir = crate::job::jobs_dir(g.jobs.as_deref());
    let plan = crate::job::load(&dir, job)?;
    let _lock = crate::lock::job_lock(&plan.name)?;
    let storage = crate::storage::open(&plan.storage).await?;
    let res = crate::restore::run(&plan, storage, &opts).await;
    crate::audit::append(crate::audit::Record {
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
                serde_json::json!({"to": opts.to.as_deref().map(crate::pg::redact), "yes": opts.yes})
            }
        },
    });
    let r = res?;
    if g.json {
        super::print_json(&r);
        return Ok(());
    }
    let mut msg = format!(
        "job {}: snapshot {} restored into {} ({} in {:.1} s: download and check {:.1} s, pg_restore {:.1} s)",
        r.job,
        r.snapshot,
        r.target,
        human_bytes(r.restored_bytes),
        r.duration_ms as f64 / 1000.0,
        r.download_ms as f64 / 1000.0,
        r.restore_ms as f64 / 1000.0
    );
    if let Some(old) = &r.previous_kept_as {
        msg.push_str(&format!(
            "\nthe previous database was kept as {old}; drop it when satisfied: DROP DATABASE \"{old}\";"
        ));
    }
    super::print_line(&msg);
    Ok(())
}
