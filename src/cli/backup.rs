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
    let b = run(g, job, trigger, reason, None).await?;
    if g.json {
        print_json_with(&b);
    } else {
        super::print_line(&summary(&b.manifest));
    }
    partial(g, &b)
}

/// The manifest as `--json` prints it, with the storages that did not get the snapshot.
fn print_json_with(b: &crate::run::Backed) {
    let mut doc = serde_json::to_value(&b.manifest).unwrap_or_default();
    if let Some(msg) = b.partial() {
        doc["failed_storages"] = b
            .behind
            .iter()
            .map(|(n, w)| serde_json::json!({"storage": n, "error": w}))
            .collect();
        doc["error"] = msg.into();
    }
    super::print_json(&doc);
}

/// A snapshot that some storage did not get: the run failed (exit 1), naming it.
fn partial(g: &Global, b: &crate::run::Backed) -> Result<()> {
    let Some(msg) = b.partial() else {
        return Ok(());
    };
    let e = Error::failed(msg);
    Err(if g.json { e.told_in_json() } else { e })
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
    let b = run(g, job, Trigger::Snapshot, Some(reason), Some(until)).await?;
    let m = &b.manifest;
    if g.json {
        print_json_with(&b);
    } else {
        if !g.quiet {
            eprintln!("{}", summary(m));
        }
        // The id is the last line on stdout, for `id=$(backstop snapshot ...)`.
        super::print_line(&m.snapshot);
    }
    partial(g, &b)
}

/// Take one snapshot of `job` (used by `backup`, `snapshot`, `guard` and `hook`), and say
/// which storages did not get it.
pub(super) async fn run(
    g: &Global,
    job: &str,
    trigger: Trigger,
    reason: Option<String>,
    pinned_until: Option<jiff::Timestamp>,
) -> Result<crate::run::Backed> {
    let plan = crate::config::load(&crate::config::jobs_dir(g.jobs.as_deref()), job)?;
    crate::run::backup(&plan, trigger, reason, pinned_until, super::run_opts(g)).await
}

/// For `guard` and `hook`: the snapshot is durable where it was stored, so the command
/// may go on, but a storage that missed it is said loudly on stderr.
pub(super) async fn run_durable(
    g: &Global,
    job: &str,
    trigger: Trigger,
    reason: Option<String>,
    pinned_until: Option<jiff::Timestamp>,
) -> Result<Manifest> {
    let b = run(g, job, trigger, reason, pinned_until).await?;
    if let Some(msg) = b.partial() {
        eprintln!("backstop: WARNING: {msg}");
    }
    Ok(b.manifest)
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
