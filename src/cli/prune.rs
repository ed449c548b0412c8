//! `prune [JOB] [--dry-run] [--yes]`: apply retention to one job or all (`run::prune`);
//! print the plan with a reason per snapshot; confirm through the gate before deleting.

use std::io::IsTerminal;

use crate::cli::Global;
use crate::config::JobPlan;
use crate::error::{Error, Result};
use crate::snapshot::prune::Report;

pub(crate) async fn prune(g: &Global, job: Option<&str>, dry_run: bool, yes: bool) -> Result<()> {
    let dir = crate::config::jobs_dir(g.jobs.as_deref());
    let plans = match job {
        Some(j) => vec![crate::config::load(&dir, j)?],
        None => crate::config::load_all(&dir)?,
    };
    let mut reports = Vec::new();
    let mut first_err = None;
    for plan in &plans {
        match prune_one(g, plan, dry_run, yes).await {
            Ok(rs) => {
                for r in rs {
                    if !g.json {
                        print_report(&r);
                    }
                    if !r.errors.is_empty() && first_err.is_none() {
                        first_err = Some(Error::failed(format!(
                            "prune of job {}: {}",
                            r.job,
                            r.errors.join("; ")
                        )));
                    }
                    reports.push(r);
                }
            }
            Err(e) if plans.len() > 1 && e.kind() != crate::error::Kind::Refused => {
                eprintln!("backstop: prune of job {}: {}", plan.name, e.message());
                first_err.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    if g.json {
        super::print_json(&reports);
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn prune_one(g: &Global, plan: &JobPlan, dry_run: bool, yes: bool) -> Result<Vec<Report>> {
    let job = plan.name.as_str();
    let quiet = g.json || g.quiet;
    let gate = |r: &Report| -> Result<()> {
        let n = r.to_delete().count();
        let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
        if !yes && interactive && !quiet {
            print_report(r);
        }
        let on = r
            .storage
            .as_ref()
            .map(|s| format!(" on storage {s}"))
            .unwrap_or_default();
        let prompt = format!(
            "Delete {n} snapshot(s), {} leftover(s) and {} WAL file(s) of job {job}{on}?",
            r.leftovers.len(),
            r.wal_removed.len()
        );
        let refusal = format!(
            "refusing to prune job {job} without confirmation: it would delete {n} snapshot(s), {} leftover(s) and {} WAL file(s). \
             Run `backstop prune {job} --dry-run` to see the plan, then pass --yes; nothing was deleted",
            r.leftovers.len(),
            r.wal_removed.len()
        );
        let expected = if plan.is_production() { job } else { "yes" };
        super::gate::confirm(
            &crate::run::GateRequest {
                prompt: &prompt,
                expected,
                refusal: &refusal,
            },
            yes,
        )
        .map_err(|e| {
            if interactive && !yes {
                Error::refused(format!(
                    "prune of job {job} not confirmed; nothing was deleted"
                ))
            } else {
                e
            }
        })
    };
    crate::run::prune(plan, dry_run, super::run_opts(g), &gate).await
}

fn print_report(r: &Report) {
    let keep = r.decisions.iter().filter(|d| d.keep).count();
    let del = r.decisions.len() - keep;
    let verb = if r.dry_run { "would delete" } else { "delete" };
    super::print_line(&format!(
        "job {}{}: {} snapshot(s): keep {keep}, {verb} {del}{}",
        r.job,
        r.storage
            .as_ref()
            .map(|s| format!(" on storage {s}"))
            .unwrap_or_default(),
        r.decisions.len(),
        r.stale_after
            .as_ref()
            .map(|s| format!(" (stale guard: {s})"))
            .unwrap_or_default()
    ));
    for d in &r.decisions {
        let time: String = d
            .time
            .chars()
            .take(16)
            .collect::<String>()
            .replace('T', " ");
        let what = match (d.keep, r.dry_run, r.deleted.contains(&d.snapshot)) {
            (true, _, _) => "keep",
            (false, true, _) => "delete",
            (false, false, true) => "deleted",
            (false, false, false) => "FAILED",
        };
        super::print_line(&format!(
            "  {what:<8} {}  {time}  {}",
            d.snapshot,
            d.reasons.join("; ")
        ));
    }
    for l in &r.leftovers {
        let verb = if r.dry_run { "leftover" } else { "removed" };
        super::print_line(&format!("  {verb:<8} {l}"));
    }
    if let (Some(first), Some(last)) = (r.wal_removed.first(), r.wal_removed.last()) {
        let verb = if r.dry_run { "would remove" } else { "removed" };
        super::print_line(&format!(
            "  WAL      {verb} {} segment(s) {first} .. {last}: older than the oldest kept base backup",
            r.wal_removed.len()
        ));
    }
}
