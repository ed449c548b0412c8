//! `verify JOB [--snapshot ID]`: take the job lock, run a restore drill (and with
//! `verify.sample = "latest+random"` a second one of a random older snapshot), print the
//! checks, record each drill in the audit log. Exit 3 when restored data is wrong.

use crate::cli::Global;
use crate::error::Result;
use crate::run::verify::Options;

pub(crate) async fn verify(g: &Global, job: &str, opts: Options) -> Result<()> {
    let dir = crate::config::jobs_dir(g.jobs.as_deref());
    let plan = crate::config::load(&dir, job)?;
    let _lock = crate::run::lock_job(&plan, "verify", g.wait).await?;
    let storage = crate::snapshot::replicas::open(&plan, None).await?;
    let first = crate::run::drill(&plan, storage.clone(), &opts).await?;
    let random_sample = opts.snapshot.is_none()
        && plan.verify.as_ref().map(|v| v.sample) == Some(crate::config::Sample::LatestAndRandom);
    let second = if random_sample {
        let older: Vec<String> = crate::snapshot::catalog(storage.as_ref(), &plan)
            .await?
            .into_iter()
            .skip(1)
            .map(|e| e.id)
            .collect();
        if older.is_empty() {
            None
        } else {
            let mut r = [0u8; 4];
            let _ = getrandom::fill(&mut r);
            let pick = older[u32::from_le_bytes(r) as usize % older.len()].clone();
            let more = Options {
                snapshot: Some(pick),
                ..opts.clone()
            };
            Some(crate::run::drill(&plan, storage, &more).await?)
        }
    } else {
        None
    };
    if g.json {
        // One document: the newest snapshot's drill; a sampled older one rides along.
        let mut doc = serde_json::to_value(&first).unwrap_or_default();
        if let Some(s) = &second {
            doc["sampled"] = serde_json::to_value(s).unwrap_or_default();
        }
        super::print_json(&doc);
    } else {
        for o in std::iter::once(&first).chain(second.as_ref()) {
            let s = &o.summary;
            super::print_line(&format!(
                "job {}: drill of snapshot {} passed: {} checks in {}, restore took {:.1} s \
                 (download and decrypt {:.1} s, apply {:.1} s; whole drill {:.1} s)",
                s.job,
                s.snapshot,
                s.checks_passed,
                s.scratch,
                s.restore_ms as f64 / 1000.0,
                s.download_ms as f64 / 1000.0,
                s.apply_ms as f64 / 1000.0,
                s.duration_ms as f64 / 1000.0
            ));
        }
    }
    Ok(())
}
