//! `verify JOB [--snapshot ID]`: take the job lock, run a restore drill, print the
//! checks, record it in the audit log. Exit 3 when the restored data is wrong.

use crate::cli::Global;
use crate::error::Result;

pub async fn verify(g: &Global, job: &str, opts: crate::verify::Options) -> Result<()> {
    let dir = crate::job::jobs_dir(g.jobs.as_deref());
    let plan = crate::job::load(&dir, job)?;
    let _lock = crate::lock::job_lock(&plan.name)?;
    let storage = crate::storage::open(&plan.storage).await?;
    let res = crate::verify::run(&plan, storage, &opts).await;
    crate::audit::append(crate::audit::Record {
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
    let o = res?;
    if g.json {
        super::print_json(&o);
        return Ok(());
    }
    let s = &o.summary;
    super::print_line(&format!(
        "job {}: drill of snapshot {} passed: {} checks in {}, restore took {:.1} s (whole drill {:.1} s)",
        s.job,
        s.snapshot,
        s.checks_passed,
        s.scratch,
        s.restore_ms as f64 / 1000.0,
        s.duration_ms as f64 / 1000.0
    ));
    Ok(())
}
