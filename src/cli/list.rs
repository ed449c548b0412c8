//! `list [JOB]`: complete snapshots, newest first: id, time, size, trigger, reason,
//! verified; foreign ones (unsigned, wrongly signed, dated in the future) marked loudly.

use serde::Serialize;

use crate::cli::Global;
use crate::error::Result;
use crate::text::human_bytes;

#[derive(Serialize)]
struct Row {
    job: String,
    snapshot: String,
    time: String,
    plaintext_bytes: u64,
    stored_bytes: u64,
    duration_ms: u64,
    trigger: String,
    reason: Option<String>,
    pinned_until: Option<String>,
    verified: bool,
    /// The shrink alarm fired for it.
    anomalous: bool,
    warnings: Vec<String>,
    /// The last drill of this snapshot: time, outcome and restore duration.
    last_drill: Option<Drill>,
    /// The trusted key that signed it (jobs with `[signing]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    signed_by: Option<String>,
    /// Why it is not the job's own: never restored or counted without being asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    foreign: Option<String>,
    /// Its manifest was rewritten or hidden after it was written (the original is used).
    #[serde(skip_serializing_if = "Option::is_none")]
    tampered: Option<String>,
    /// Cluster jobs' base backups: the WAL position recovery from it starts at, and the
    /// job's recoverable window (oldest base backup to newest archived WAL).
    #[serde(skip_serializing_if = "Option::is_none")]
    wal_start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recoverable_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recoverable_until: Option<String>,
    /// Jobs with several storages: where the snapshot is complete.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    storages: Vec<String>,
}

#[derive(Serialize)]
struct Drill {
    time: String,
    outcome: crate::snapshot::drill::Verdict,
    restore_ms: u64,
}

pub(crate) async fn list(g: &Global, job: Option<&str>) -> Result<()> {
    let dir = crate::config::jobs_dir(g.jobs.as_deref());
    let plans = match job {
        Some(j) => vec![crate::config::load(&dir, j)?],
        None => crate::config::load_all(&dir)?,
    };
    let mut rows = Vec::new();
    let mut windows = Vec::new();
    for plan in &plans {
        let storage = crate::snapshot::replicas::open(plan, None).await?;
        let all = crate::snapshot::catalog_all(storage.as_ref(), plan).await?;
        if let Some(r) = crate::snapshot::replicas::of(storage.as_ref()) {
            for (name, why) in r.down() {
                eprintln!(
                    "backstop: WARNING: job {}: storage {name} cannot be read ({why}); its snapshots are not listed",
                    plan.name
                );
            }
        }
        let window = match plan.source {
            crate::config::SourcePlan::Cluster(_) => {
                let own: Vec<_> = all
                    .iter()
                    .filter(|e| e.foreign.is_none())
                    .cloned()
                    .collect();
                let now = crate::config::env::now();
                let w = crate::ops::status::wal_status(storage.as_ref(), plan, &own, now).await?;
                windows.push((plan.name.clone(), w.clone()));
                Some(w)
            }
            _ => None,
        };
        for e in all {
            let drills = crate::snapshot::drill::summaries(storage.as_ref(), plan, &e.id).await?;
            let verified = drills
                .iter()
                .any(|d| d.outcome == crate::snapshot::drill::Verdict::Passed);
            let last_drill = drills.last().map(|d| Drill {
                time: d.time.clone(),
                outcome: d.outcome,
                restore_ms: d.restore_ms,
            });
            let m = e.manifest;
            let cluster = window.is_some();
            rows.push(Row {
                wal_start: m.source.wal_start.clone(),
                recoverable_from: window
                    .as_ref()
                    .and_then(|w| w.recoverable_from.clone())
                    .filter(|_| cluster),
                recoverable_until: window
                    .as_ref()
                    .and_then(|w| w.recoverable_until.clone())
                    .filter(|_| cluster),
                job: plan.name.clone(),
                snapshot: e.id,
                time: m.finished,
                plaintext_bytes: m.plaintext_bytes,
                stored_bytes: m.stored_bytes,
                duration_ms: m.duration_ms,
                trigger: m.trigger.to_string(),
                reason: m.reason,
                pinned_until: m.pinned_until,
                verified,
                anomalous: m.anomalous,
                warnings: m.warnings,
                last_drill,
                signed_by: e.signed_by,
                foreign: e.foreign,
                tampered: e.tampered,
                storages: e.storages,
            });
        }
    }
    if g.json {
        super::print_json(&rows);
        return Ok(());
    }
    if rows.is_empty() {
        super::print_line("no snapshots");
        return Ok(());
    }
    super::print_line(&format!(
        "{:<12} {:<24} {:<20} {:>10} {:<9} {:<8} REASON",
        "JOB", "SNAPSHOT", "TIME (UTC)", "STORED", "TRIGGER", "VERIFIED"
    ));
    let several = rows.iter().any(|r| !r.storages.is_empty());
    for r in rows {
        let on = if several {
            format!(
                "[on {}] ",
                if r.storages.is_empty() {
                    "-".to_string()
                } else {
                    r.storages.join(",")
                }
            )
        } else {
            String::new()
        };
        let time: String = r
            .time
            .chars()
            .take(19)
            .collect::<String>()
            .replace('T', " ");
        super::print_line(&format!(
            "{:<12} {:<24} {:<20} {:>10} {:<9} {:<8} {on}{}{}",
            r.job,
            r.snapshot,
            time,
            human_bytes(r.stored_bytes),
            r.trigger,
            if r.verified { "yes" } else { "-" },
            match (&r.foreign, &r.tampered) {
                (Some(why), _) => {
                    format!("FOREIGN ({why}): not restored without --allow-foreign; ")
                }
                (None, Some(t)) => format!("TAMPERED ({t}); "),
                (None, None) if r.anomalous => "ANOMALOUS (shrink alarm) ".to_string(),
                (None, None) => String::new(),
            },
            r.reason.unwrap_or_default()
        ));
    }
    for (job, w) in windows {
        super::print_line(&format!(
            "{job}: recoverable from {} to {} (WAL: {} files, newest {}){}",
            w.recoverable_from.as_deref().unwrap_or("-"),
            w.recoverable_until.as_deref().unwrap_or("-"),
            w.files,
            w.newest.as_deref().unwrap_or("-"),
            w.gap
                .as_deref()
                .map(|g| format!("; GAP: segment {g} is missing"))
                .unwrap_or_default()
        ));
    }
    Ok(())
}
