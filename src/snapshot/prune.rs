//! `prune`: applies a job's retention to its storage. Reads every snapshot's manifest,
//! drill results and pins, asks `retention::plan` what to keep, checks the storage's own
//! locks for each snapshot it would delete, then deletes manifest first (the snapshot is
//! gone for list/restore at once) and its other objects after. Also removes leftovers:
//! snapshot folders without a manifest and unfinished uploads, once older than a day.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::config::JobPlan;
use crate::error::{Error, Result};
use crate::snapshot::retention::{self, Candidate, Decision, Policy};
use crate::snapshot::{self, MANIFEST};
use crate::storage::Storage;

/// Leftovers younger than this are left alone: they may belong to a run still going.
pub(crate) const LEFTOVER_AGE: SignedDuration = SignedDuration::from_hours(24);

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub job: String,
    /// The storage pruned, when the job has several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    pub dry_run: bool,
    /// One decision per complete snapshot, newest first.
    pub decisions: Vec<Decision>,
    /// The stale guard used (an explicit `stale_after`, or the schedule's default).
    pub stale_after: Option<String>,
    /// Snapshots deleted (empty on a dry run).
    pub deleted: Vec<String>,
    /// Leftovers found (and removed unless a dry run): folder or upload descriptions.
    pub leftovers: Vec<String>,
    /// Deletions that failed (the snapshot stays; the run exits 1).
    pub errors: Vec<String>,
    /// Cluster jobs: WAL segments older than the oldest kept base backup's start, which no
    /// kept base backup needs (removed unless a dry run).
    pub wal_removed: Vec<String>,
}

impl Report {
    pub(crate) fn to_delete(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keep)
    }
}

/// What the storage holds for a job, grouped by snapshot id.
#[derive(Default)]
struct Folder {
    objects: Vec<String>,
    has_manifest: bool,
}

/// The stale guard: `retention.stale_after`, else three schedule intervals (at least a day).
pub(crate) fn stale_after(
    plan: &JobPlan,
    policy: &Policy,
    now: Timestamp,
) -> Option<SignedDuration> {
    if policy.stale_after.is_some() {
        return policy.stale_after;
    }
    let s =
        crate::config::schedule::Schedule::parse(plan.schedule.as_deref()?, &plan.timezone).ok()?;
    let a = s.next_after(now)?;
    let b = s.next_after(a)?;
    let interval = b.duration_since(a);
    Some((interval * 3).max(SignedDuration::from_hours(24)))
}

/// Work out the plan (and, with `dry_run`, stop there). `confirm` is asked before
/// anything is deleted; it returns an error to refuse.
pub(crate) async fn run(
    plan: &JobPlan,
    storage: Arc<dyn Storage>,
    dry_run: bool,
    now: Timestamp,
    confirm: impl FnOnce(&Report) -> Result<()>,
) -> Result<Report> {
    let job = &plan.name;
    let policy = plan.retention.clone().unwrap_or_default();
    let tz = jiff::tz::TimeZone::get(&plan.timezone)
        .map_err(|e| Error::config(format!("job {job}: timezone {:?}: {e}", plan.timezone)))?;

    // Inventory: every object below JOB/, by snapshot id.
    let prefix = format!("{job}/");
    let mut folders: BTreeMap<String, Folder> = BTreeMap::new();
    for o in storage.list(&prefix).await? {
        let Some((id, name)) = o.key[prefix.len()..].split_once('/') else {
            continue;
        };
        if !snapshot::is_id(id) {
            continue; // lease/ and anything not ours
        }
        let f = folders.entry(id.to_string()).or_default();
        f.has_manifest |= name == MANIFEST;
        f.objects.push(o.key.clone());
    }

    // Complete snapshots, with drills and pins.
    let entries = snapshot::catalog(storage.as_ref(), plan).await?;
    let mut candidates = Vec::new();
    for e in &entries {
        let objects = folders
            .get(&e.id)
            .map(|f| f.objects.as_slice())
            .unwrap_or(&[]);
        let mut verified = false;
        let mut pinned_until = e
            .manifest
            .pinned_until
            .as_deref()
            .and_then(|t| t.parse().ok());
        let mut pin_reason = e.manifest.reason.clone();
        for key in objects {
            let name = key.rsplit('/').next().unwrap_or("");
            if name.starts_with(crate::snapshot::drill::PREFIX)
                && name.ends_with(".json")
                && !verified
            {
                if let Some(b) = super::sign::read_trusted(storage.as_ref(), plan, key).await?
                    && let Ok(s) = serde_json::from_slice::<crate::snapshot::drill::Summary>(&b)
                    && s.snapshot == e.id
                {
                    verified = s.outcome == crate::snapshot::drill::Verdict::Passed;
                }
            } else if name.starts_with(super::pin::PIN_PREFIX)
                && name.ends_with(".json")
                && let Some(b) = super::sign::read_trusted(storage.as_ref(), plan, key).await?
                && let Ok(p) = serde_json::from_slice::<super::pin::Pin>(&b)
                && p.snapshot.as_deref().is_none_or(|s| s == e.id)
                && let Ok(until) = p.until.parse::<Timestamp>()
                && pinned_until.is_none_or(|u| until > u)
            {
                pinned_until = Some(until);
                pin_reason = Some(p.reason);
            }
        }
        let Some(time) = e.manifest.finished_at() else {
            tracing::warn!(
                "job {job}: snapshot {} has no readable finish time; kept",
                e.id
            );
            continue;
        };
        candidates.push(Candidate {
            id: e.id.clone(),
            time,
            pinned_until,
            pin_reason,
            verified,
            locked_until: None,
        });
    }

    let stale = stale_after(plan, &policy, now);
    let effective = Policy {
        stale_after: stale,
        ..policy.clone()
    };
    let first = retention::plan(&candidates, &effective, &tz, now).map_err(|s| {
        let newest = s
            .newest
            .map(|t| format!("the newest snapshot is from {t}"))
            .unwrap_or_else(|| "there is no complete snapshot".into());
        Error::refused(format!(
            "refusing to prune job {job}: {newest}, older than stale_after ({:#}). Backups seem to be failing; \
             rotating away the last good snapshots now would make it worse. Fix the backups \
             (see `backstop list {job}` and the audit log), or raise retention.stale_after",
            s.stale_after
        ))
    })?;
    // Ask the storage about its locks, only for the snapshots the rules would delete.
    let mut locked_any = false;
    for d in first.iter().filter(|d| !d.keep) {
        let until = storage
            .locked_until(&snapshot::object_key(job, &d.snapshot, MANIFEST))
            .await?;
        if let Some(u) = until.filter(|u| *u > now)
            && let Some(c) = candidates.iter_mut().find(|c| c.id == d.snapshot)
        {
            c.locked_until = Some(u);
            locked_any = true;
        }
    }
    let decisions = if locked_any {
        retention::plan(&candidates, &effective, &tz, now).map_err(|_| {
            Error::failed("the retention plan changed while checking locks".to_string())
        })?
    } else {
        first
    };

    // Leftovers: folders without a manifest, older than a day (by the id's time).
    let cutoff = now - LEFTOVER_AGE;
    let mut leftover_keys = Vec::new();
    let mut leftovers = Vec::new();
    for (id, f) in &folders {
        if f.has_manifest {
            continue;
        }
        let started = super::id_time(id);
        if started.is_some_and(|t| t < cutoff) {
            leftovers.push(format!(
                "{job}/{id}/: incomplete snapshot ({} object(s), no manifest)",
                f.objects.len()
            ));
            leftover_keys.extend(f.objects.iter().cloned());
        }
    }

    // Cluster jobs: the WAL only base backups being deleted needed. Never a segment at or
    // after the oldest kept base backup's start (on any timeline), never a history file.
    let mut wal_keys: Vec<(String, Vec<String>)> = Vec::new();
    let oldest_kept_start = entries
        .iter()
        .rev()
        .filter(|e| decisions.iter().any(|d| d.snapshot == e.id && d.keep))
        .find_map(|e| super::wal::start_segment(&e.manifest.source));
    if let (crate::config::SourcePlan::Cluster(_), Some((start, _))) =
        (&plan.source, oldest_kept_start)
    {
        let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for o in storage.list(&super::wal::prefix(job)).await? {
            let file = o.key.rsplit('/').next().unwrap_or("");
            let seg = file.get(..24).unwrap_or("");
            if super::wal::is_segment(seg)
                && file.as_bytes().get(24) == Some(&b'.')
                && seg[8..] < start[8..]
            {
                by_name
                    .entry(seg.to_string())
                    .or_default()
                    .push(o.key.clone());
            }
        }
        wal_keys = by_name.into_iter().collect();
    }

    let mut report = Report {
        storage: None,
        job: job.clone(),
        dry_run,
        decisions,
        stale_after: stale.map(|s| format!("{s:#}")),
        deleted: Vec::new(),
        leftovers,
        errors: Vec::new(),
        wal_removed: wal_keys.iter().map(|(n, _)| n.clone()).collect(),
    };
    if dry_run {
        return Ok(report);
    }
    let deleting =
        report.to_delete().count() > 0 || !leftover_keys.is_empty() || !wal_keys.is_empty();
    if deleting {
        confirm(&report)?;
    }

    let doomed: Vec<String> = report.to_delete().map(|d| d.snapshot.clone()).collect();
    for id in doomed {
        // Manifest first: from here on the snapshot does not exist for list or restore.
        let manifest = snapshot::object_key(job, &id, MANIFEST);
        if let Err(e) = storage.delete(&manifest).await {
            report
                .errors
                .push(format!("snapshot {id}: {}; it was kept", e.message()));
            continue;
        }
        let mut failed = false;
        let others = folders
            .get(&id)
            .map(|f| f.objects.clone())
            .unwrap_or_default();
        for key in others.iter().filter(|k| **k != manifest) {
            if let Err(e) = storage.delete(key).await {
                failed = true;
                report.errors.push(format!(
                    "snapshot {id}: {} (its manifest is gone; the next prune removes the rest)",
                    e.message()
                ));
            }
        }
        if !failed {
            report.deleted.push(id);
        }
    }
    for key in &leftover_keys {
        if let Err(e) = storage.delete(key).await {
            report.errors.push(e.message().to_string());
        }
    }
    for (name, mut keys) in wal_keys {
        // The marker first: from then on the file is not in the archive.
        keys.sort_by_key(|k| !k.ends_with(&format!("{name}.json")));
        for key in keys {
            if let Err(e) = storage.delete(&key).await {
                report.errors.push(format!("WAL {name}: {}", e.message()));
                break;
            }
        }
    }
    match storage.clean_incomplete(&prefix, cutoff).await {
        Ok(more) => report.leftovers.extend(more),
        Err(e) => report.errors.push(e.message().to_string()),
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn id_times() {
        let t = crate::snapshot::id_time("20261124T072247Z-3fa9c1").unwrap();
        assert_eq!(t.to_string(), "2026-11-24T07:22:47Z");
        assert!(crate::snapshot::id_time("lease").is_none());
    }
}
