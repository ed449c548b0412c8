//! `restore JOB [--snapshot ID] [--to URL] [--yes]`: restore (`run::restore`), confirmed
//! through the gate, and print the result.

use crate::cli::Global;
use crate::error::Result;
use crate::text::human_bytes;

pub(crate) async fn restore(
    g: &Global,
    job: &str,
    opts: crate::run::restore::Options,
) -> Result<()> {
    let dir = crate::config::jobs_dir(g.jobs.as_deref());
    let plan = crate::config::load(&dir, job)?;
    let yes = opts.yes;
    let gate = move |r: &crate::run::GateRequest<'_>| super::gate::confirm(r, yes);
    let res = crate::run::restore(&plan, &opts, &gate).await;
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
