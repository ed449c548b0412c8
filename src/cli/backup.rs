//! `backup JOB` and `snapshot JOB --reason`: one snapshot (`run::backup`), printed.

use crate::cli::Global;
use crate::error::{Error, Result};
use crate::snapshot::{Manifest, Trigger};
use crate::text::human_bytes;

pub(crate) async fn backup(
    g: &Global,
    job: &str,
    trigger: Trigger,
    reason: Option<String>,
) -> Result<()> {
    let m = run(g, job, trigger, reason, None).await?;
    if g.json {
        super::print_json(&m);
    } else {
        super::print_line(&summary(&m));
    }
    Ok(())
}

pub(crate) async fn snapshot(g: &Global, job: &str, reason: String, keep_for: &str) -> Result<()> {
    if reason.trim().is_empty() {
        return Err(Error::config(
            "snapshot needs a non-empty --reason, e.g. --reason \"migration 42\"",
        ));
    }
    let keep = crate::config::parse_duration(keep_for)
        .map_err(|e| Error::config(format!("--keep-for {e}")))?;
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

/// Take one snapshot of `job` (used by `backup`, `snapshot`, `guard` and `hook`).
pub(super) async fn run(
    g: &Global,
    job: &str,
    trigger: Trigger,
    reason: Option<String>,
    pinned_until: Option<jiff::Timestamp>,
) -> Result<Manifest> {
    let plan = crate::config::load(&crate::config::jobs_dir(g.jobs.as_deref()), job)?;
    crate::run::backup(&plan, trigger, reason, pinned_until, super::run_opts(g)).await
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
