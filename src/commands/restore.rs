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
    let mut msg = if r.kind == "volume" {
        format!(
            "job {}: snapshot {} restored into {} ({} files, {} in {:.1} s, every file checked against its recorded SHA-256)",
            r.job,
            r.snapshot,
            r.target,
            r.files.unwrap_or(0),
            human_bytes(r.restored_bytes),
            r.duration_ms as f64 / 1000.0,
        )
    } else {
        format!(
            "job {}: snapshot {} restored into {} ({} in {:.1} s: download and check {:.1} s, pg_restore {:.1} s)",
            r.job,
            r.snapshot,
            r.target,
            human_bytes(r.restored_bytes),
            r.duration_ms as f64 / 1000.0,
            r.download_ms as f64 / 1000.0,
            r.restore_ms as f64 / 1000.0
        )
    };
    match (&r.previous_kept_as, r.kind.as_str()) {
        (Some(old), "volume") => msg.push_str(&format!(
            "\nthe previous content was kept as {old}; remove it when satisfied"
        )),
        (Some(old), _) => msg.push_str(&format!(
            "\nthe previous database was kept as {old}; drop it when satisfied: DROP DATABASE \"{old}\";"
        )),
        (None, _) => {}
    }
    super::print_line(&msg);
    Ok(())
}
