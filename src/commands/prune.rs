//! `prune [JOB] [--dry-run] [--yes]`: apply retention to one job or all, under each job's
//! lock; print the plan with a reason per snapshot; confirm before deleting (typed on a
//! terminal, `--yes` otherwise, exit 4 without either); record it in the audit log.

use std::io::IsTerminal;

use crate::cli::Global;
use crate::error::{Error, Result};
use crate::job::JobPlan;
use crate::prune::Report;

pub async fn prune(g: &Global, job: Option<&str>, dry_run: bool, yes: bool) -> Result<()> {
    let dir = crate::job::jobs_dir(g.jobs.as_deref());
    let plans = match job {
        Some(j) => vec![crate::job::load(&dir, j)?],
        None => crate::job::load_all(&dir)?,
    };
    let mut reports = Vec::new();
    let mut first_err = None;
    for plan in &plans {
        match prune_one(g, plan, dry_run, yes).await {
            Ok(r) => {
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

pub(super) async fn prune_one(
    g: &Global,
    plan: &JobPlan,
    dry_run: bool,
    yes: bool,
) -> Result<Report> {
    let storage = crate::storage::open(&plan.storage).await?;
    let lock = crate::lock::run_lock(&plan.name, storage.clone(), "prune", g.wait).await?;
    let production = plan.is_production();
    let name = plan.name.clone();
    let quiet = g.json || g.quiet;
    let work = crate::prune::run(plan, storage, dry_run, jiff::Timestamp::now(), |r| {
        confirm(r, &name, production, yes, quiet)
    });
    let res = tokio::select! {
        r = work => r,
        e = lock.lease.lost() => Err(e),
    };
    if let Ok(r) = &res
        && !r.dry_run
    {
        let kept = (r.decisions.len() - r.deleted.len()) as u64;
        crate::jobstate::update(&plan.name, |st| st.snapshots = Some(kept));
        crate::metrics::after_run();
    }
    crate::audit::append(crate::audit::Record {
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

fn confirm(r: &Report, job: &str, production: bool, yes: bool, quiet: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    let n = r.to_delete().count();
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        if !quiet {
            print_report(r);
        }
        let expected = if production { job } else { "yes" };
        eprint!(
            "Delete {n} snapshot(s) and {} leftover(s) of job {job}? Type {expected:?} to go on: ",
            r.leftovers.len()
        );
        let mut line = String::new();
        let ok = tokio::task::block_in_place(|| std::io::stdin().read_line(&mut line)).is_ok()
            && line.trim() == expected;
        if ok {
            return Ok(());
        }
        return Err(Error::refused(format!(
            "prune of job {job} not confirmed; nothing was deleted"
        )));
    }
    Err(Error::refused(format!(
        "refusing to prune job {job} without confirmation: it would delete {n} snapshot(s) and {} leftover(s). \
         Run `backstop prune {job} --dry-run` to see the plan, then pass --yes; nothing was deleted",
        r.leftovers.len()
    )))
}

fn print_report(r: &Report) {
    let keep = r.decisions.iter().filter(|d| d.keep).count();
    let del = r.decisions.len() - keep;
    let verb = if r.dry_run { "would delete" } else { "delete" };
    super::print_line(&format!(
        "job {}: {} snapshot(s): keep {keep}, {verb} {del}{}",
        r.job,
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
}
