//! `backstop status [JOB]`: per job, the last snapshot (age, size, duration), the last
//! failure, the last verified restore and its duration, the next scheduled run, anomalies,
//! and one health word. Read from storage (the source of truth: works on a fresh host that
//! has only the job files and credentials) plus this host's job state (failures leave
//! nothing in storage).
//!
//! Health, worst first: FAILING (the last attempt failed after the newest snapshot, or
//! storage cannot be read), STALE (the newest snapshot is older than `status.max_age`, by
//! default two schedule intervals plus an hour; a day for jobs without a schedule),
//! UNVERIFIED (no passed drill within `verify.max_age`, by default two verify intervals
//! plus a day, else 30 days), OK.

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::config::JobPlan;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum Health {
    Ok,
    Unverified,
    Stale,
    Failing,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Ok => "OK",
            Health::Unverified => "UNVERIFIED",
            Health::Stale => "STALE",
            Health::Failing => "FAILING",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Snap {
    pub snapshot: String,
    pub time: String,
    pub age_seconds: i64,
    pub plaintext_bytes: u64,
    pub stored_bytes: u64,
    pub duration_ms: u64,
    pub trigger: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Failure {
    pub time: String,
    pub age_seconds: i64,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Verified {
    pub snapshot: String,
    pub time: String,
    pub age_seconds: i64,
    pub restore_ms: u64,
}

/// One job's status: the `--json` document is a list of these. Stable: fields are only
/// ever added.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct JobStatus {
    pub job: String,
    pub health: Health,
    /// Why the health is not OK (empty when OK).
    pub reasons: Vec<String>,
    pub snapshots: u64,
    pub last_snapshot: Option<Snap>,
    pub last_failure: Option<Failure>,
    pub last_verified: Option<Verified>,
    pub last_verify_failure: Option<Failure>,
    pub next_run: Option<String>,
    pub next_verify: Option<String>,
    /// Snapshots the shrink alarm marked, newest first.
    pub anomalies: Vec<String>,
    /// Cluster jobs: the WAL archive, the recoverable window and the RPO.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalStatus>,
    /// Jobs with several storages: each one's state.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub storages: Vec<StorageState>,
}

impl JobStatus {
    /// A job's status before anything is known: OK, no snapshots.
    pub(crate) fn empty(job: &str) -> JobStatus {
        JobStatus {
            job: job.to_string(),
            health: Health::Ok,
            reasons: Vec::new(),
            snapshots: 0,
            last_snapshot: None,
            last_failure: None,
            last_verified: None,
            last_verify_failure: None,
            next_run: None,
            next_verify: None,
            anomalies: Vec::new(),
            wal: None,
            storages: Vec::new(),
        }
    }
}

/// One storage of a job with several.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StorageState {
    pub name: String,
    pub url: String,
    /// "ok", "behind" (it lacks the job's newest snapshot) or "unreadable".
    pub state: String,
    /// Its newest complete snapshot of the job's own.
    pub newest: Option<String>,
    /// Snapshots newer than its newest that other storages hold.
    pub missing: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A cluster job's WAL archive.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WalStatus {
    pub files: u64,
    pub newest: Option<String>,
    pub newest_archived: Option<String>,
    /// Age of the newest archived WAL: at most this much committed work is not archived
    /// (the recovery point objective actually met).
    pub rpo_seconds: Option<i64>,
    /// The first segment missing between stored ones.
    pub gap: Option<String>,
    /// The oldest point a restore can reach (the oldest base backup's end).
    pub recoverable_from: Option<String>,
    /// The newest point (the newest archived WAL).
    pub recoverable_until: Option<String>,
}

/// How old the newest archived WAL may be before `status` says archiving stalled (with
/// `archive_timeout` of a few minutes a quiet server still archives this often).
pub(crate) const WAL_STALL: SignedDuration = SignedDuration::from_mins(15);

/// The WAL archive's state for a cluster job, from its catalog (newest first).
pub(crate) async fn wal_status(
    storage: &dyn crate::storage::Storage,
    plan: &JobPlan,
    entries: &[crate::snapshot::Entry],
    now: Timestamp,
) -> crate::error::Result<WalStatus> {
    let oldest = entries.iter().rev().find_map(|e| {
        let (_, size) = crate::snapshot::wal::start_segment(&e.manifest.source)?;
        let end = crate::snapshot::wal::end_segment(&e.manifest.source)?;
        Some((e, (end, size)))
    });
    let (start, size) = match &oldest {
        Some((_, (seg, size))) => (Some(seg.as_str()), *size),
        None => (None, 16 << 20),
    };
    let sum = crate::snapshot::wal::summary(storage, plan, start, size).await?;
    let rpo_seconds = sum
        .newest_archived
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map(|t| age(t, now));
    Ok(WalStatus {
        files: sum.files,
        newest: sum.newest,
        recoverable_until: sum.newest_archived.clone(),
        newest_archived: sum.newest_archived,
        rpo_seconds,
        gap: sum.gap,
        recoverable_from: oldest.map(|(e, _)| e.manifest.finished.clone()),
    })
}

fn interval(expr: &str, tz: &str, now: Timestamp) -> Option<SignedDuration> {
    let s = crate::config::schedule::Schedule::parse(expr, tz).ok()?;
    let a = s.next_after(now)?;
    let b = s.next_after(a)?;
    Some(b.duration_since(a))
}

fn next(expr: Option<&str>, tz: &str, now: Timestamp) -> Option<String> {
    crate::config::schedule::Schedule::parse(expr?, tz)
        .ok()?
        .next_after(now)
        .map(|t| t.to_string())
}

/// How old the newest snapshot may be.
pub(crate) fn max_age(plan: &JobPlan, now: Timestamp) -> SignedDuration {
    if let Some(d) = plan.status_max_age {
        return SignedDuration::from_secs(d.as_secs() as i64);
    }
    match plan
        .schedule
        .as_deref()
        .and_then(|e| interval(e, &plan.timezone, now))
    {
        Some(i) => i * 2 + SignedDuration::from_hours(1),
        None => SignedDuration::from_hours(24),
    }
}

/// How old the newest passed drill may be.
pub(crate) fn verify_max_age(plan: &JobPlan, now: Timestamp) -> SignedDuration {
    let v = plan.verify.as_ref();
    if let Some(d) = v.and_then(|v| v.max_age) {
        return SignedDuration::from_secs(d.as_secs() as i64);
    }
    match v
        .and_then(|v| v.schedule.as_deref())
        .and_then(|e| interval(e, &plan.timezone, now))
    {
        Some(i) => i * 2 + SignedDuration::from_hours(24),
        None => SignedDuration::from_hours(24 * 30),
    }
}

fn age(t: Timestamp, now: Timestamp) -> i64 {
    now.duration_since(t).as_secs()
}

/// Each storage's state, from the merged catalog (`entries`, newest first) and the
/// storages that could not be read.
fn storage_states(
    plan: &JobPlan,
    entries: &[crate::snapshot::Entry],
    down: &[(String, String)],
) -> Vec<StorageState> {
    plan.storages
        .iter()
        .map(|sp| {
            if let Some((_, why)) = down.iter().find(|(n, _)| *n == sp.name) {
                return StorageState {
                    name: sp.name.clone(),
                    url: sp.url.clone(),
                    state: "unreadable".into(),
                    newest: None,
                    missing: 0,
                    error: Some(why.clone()),
                };
            }
            let missing = entries
                .iter()
                .take_while(|e| !e.storages.contains(&sp.name))
                .count() as u64;
            let newest = entries
                .iter()
                .find(|e| e.storages.contains(&sp.name))
                .map(|e| e.id.clone());
            StorageState {
                name: sp.name.clone(),
                url: sp.url.clone(),
                state: if missing > 0 { "behind" } else { "ok" }.into(),
                newest,
                missing,
                error: None,
            }
        })
        .collect()
}

/// A job's history as the status page plots it: what `status` reads anyway.
#[derive(Debug, Clone, Default)]
pub(crate) struct History {
    /// The job's own snapshots, newest first.
    pub snapshots: Vec<SnapPoint>,
    /// Drills of the newest snapshots (the ones `status` reads), any order.
    pub drills: Vec<DrillPoint>,
    /// The newest drill's checks with their values (content facts): only on a host that
    /// holds the job's private key.
    pub last_checks: Option<(String, Vec<crate::snapshot::drill::Check>)>,
}

#[derive(Debug, Clone)]
pub(crate) struct SnapPoint {
    pub id: String,
    pub time: Timestamp,
    pub stored_bytes: u64,
    pub duration_ms: u64,
    pub anomalous: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct DrillPoint {
    pub snapshot: String,
    pub time: Timestamp,
    pub restore_ms: u64,
    pub passed: bool,
    pub checks_passed: u64,
    pub checks_failed: u64,
}

/// The status of `plan` at `now`, and the history it was worked out from.
/// `with_checks`: also read the newest passed drill's checks where this host can decrypt
/// them (the status page; `status` itself never shows content facts).
pub(crate) async fn of_full(
    plan: &JobPlan,
    now: Timestamp,
    with_checks: bool,
) -> (JobStatus, History) {
    let mut history = History::default();
    let local = crate::state::jobstate::load(&plan.name);
    let mut st = JobStatus {
        next_run: next(plan.schedule.as_deref(), &plan.timezone, now),
        next_verify: next(
            plan.verify.as_ref().and_then(|v| v.schedule.as_deref()),
            &plan.timezone,
            now,
        ),
        ..JobStatus::empty(&plan.name)
    };
    let failure = |r: &Option<crate::state::jobstate::Run>| {
        r.as_ref().and_then(|r| {
            let t: Timestamp = r.time.parse().ok()?;
            Some(Failure {
                time: r.time.clone(),
                age_seconds: age(t, now),
                error: r.error.clone().unwrap_or_default(),
            })
        })
    };
    st.last_failure = failure(&local.backup_failed);
    st.last_verify_failure = failure(&local.verify_failed);

    let read = async {
        let storage = crate::snapshot::replicas::open(plan, None).await?;
        let entries = crate::snapshot::catalog(storage.as_ref(), plan).await?;
        let down = crate::snapshot::replicas::of(storage.as_ref())
            .map(|r| r.down())
            .unwrap_or_default();
        // The newest passed drill, looking at the newest snapshots first.
        let mut verified: Option<Verified> = None;
        let mut drills = Vec::new();
        for e in entries.iter().take(30) {
            for s in crate::snapshot::drill::summaries(storage.as_ref(), plan, &e.id).await? {
                let Ok(t) = s.time.parse::<Timestamp>() else {
                    continue;
                };
                drills.push(DrillPoint {
                    snapshot: s.snapshot.clone(),
                    time: t,
                    restore_ms: s.restore_ms,
                    passed: s.outcome == crate::snapshot::drill::Verdict::Passed,
                    checks_passed: s.checks_passed,
                    checks_failed: s.checks_failed,
                });
                if s.outcome == crate::snapshot::drill::Verdict::Passed
                    && verified
                        .as_ref()
                        .is_none_or(|v| v.time.parse::<Timestamp>().is_ok_and(|vt| t > vt))
                {
                    verified = Some(Verified {
                        snapshot: s.snapshot.clone(),
                        time: s.time.clone(),
                        age_seconds: age(t, now),
                        restore_ms: s.restore_ms,
                    });
                }
            }
        }
        // Content facts only where they can be decrypted anyway (the key is on this host).
        let mut last_checks = None;
        if with_checks
            && let Some(v) = &verified
            && let Ok(path) = plan.identity_path(None)
            && path.is_file()
            && let Ok(ids) = crate::pipeline::load_identities(&path)
        {
            match crate::snapshot::drill::latest_checks(storage.as_ref(), plan, &v.snapshot, &ids)
                .await
            {
                Ok(Some(o)) => last_checks = Some((v.snapshot.clone(), o.checks)),
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    "job {}: the last drill's checks: {}",
                    plan.name,
                    e.message()
                ),
            }
        }
        let wal = match plan.source {
            crate::config::SourcePlan::Cluster(_) => {
                Some(wal_status(storage.as_ref(), plan, &entries, now).await?)
            }
            _ => None,
        };
        Ok::<_, crate::error::Error>((entries, verified, wal, down, drills, last_checks))
    };
    let (entries, verified, wal, down, drills, last_checks) = match read.await {
        Ok(v) => v,
        Err(e) => {
            st.health = Health::Failing;
            st.reasons
                .push(format!("cannot read storage: {}", e.message()));
            return (st, history);
        }
    };
    history.drills = drills;
    history.last_checks = last_checks;
    history.snapshots = entries
        .iter()
        .filter_map(|e| {
            Some(SnapPoint {
                id: e.id.clone(),
                time: e.manifest.finished_at()?,
                stored_bytes: e.manifest.stored_bytes,
                duration_ms: e.manifest.duration_ms,
                anomalous: e.manifest.anomalous,
            })
        })
        .collect();
    st.snapshots = entries.len() as u64;
    st.last_verified = verified;
    if plan.storages.len() > 1 {
        st.storages = storage_states(plan, &entries, &down);
        for s in &st.storages {
            match s.state.as_str() {
                "unreadable" => {
                    st.health = st.health.max(Health::Failing);
                    st.reasons.push(format!(
                        "storage {} cannot be read: {}",
                        s.name,
                        s.error.as_deref().unwrap_or("?")
                    ));
                }
                "behind" => {
                    st.health = st.health.max(Health::Failing);
                    let from = st
                        .storages
                        .iter()
                        .find(|o| o.state == "ok")
                        .map(|o| o.name.as_str())
                        .unwrap_or("NAME");
                    st.reasons.push(format!(
                        "storage {} is behind: it lacks the newest {} snapshot(s) (its newest: {}); \
                         `backstop copy {} --from {from} --to {} --all-missing` brings it up to date",
                        s.name,
                        s.missing,
                        s.newest.as_deref().unwrap_or("none"),
                        plan.name,
                        s.name
                    ));
                }
                _ => {}
            }
        }
    }
    if let Some(w) = &wal {
        if let Some(gap) = &w.gap {
            st.health = st.health.max(Health::Failing);
            st.reasons.push(format!(
                "the WAL archive has a gap: segment {gap} is missing while later ones are stored (recovery cannot pass it; take a base backup now)"
            ));
        }
        match w.rpo_seconds {
            Some(s) if s > WAL_STALL.as_secs() => {
                st.health = st.health.max(Health::Failing);
                st.reasons.push(format!(
                    "archiving stalled: the newest WAL ({}) was archived {} ago (allowed: {}); check archive_command or wal-stream",
                    w.newest.as_deref().unwrap_or("?"),
                    crate::text::human_age(SignedDuration::from_secs(s)),
                    crate::text::human_age(WAL_STALL)
                ));
            }
            None if !entries.is_empty() => {
                st.health = st.health.max(Health::Failing);
                st.reasons.push(
                    "no WAL is archived: set archive_command = 'backstop wal-push JOB %p' (or run wal-stream)"
                        .into(),
                );
            }
            _ => {}
        }
    }
    st.wal = wal;
    st.anomalies = entries
        .iter()
        .filter(|e| e.manifest.anomalous)
        .map(|e| format!("{}: shrink alarm", e.id))
        .collect();
    let newest = entries
        .first()
        .and_then(|e| e.manifest.finished_at().map(|t| (e, t)));
    if let Some((e, t)) = newest {
        st.last_snapshot = Some(Snap {
            snapshot: e.id.clone(),
            time: e.manifest.finished.clone(),
            age_seconds: age(t, now),
            plaintext_bytes: e.manifest.plaintext_bytes,
            stored_bytes: e.manifest.stored_bytes,
            duration_ms: e.manifest.duration_ms,
            trigger: e.manifest.trigger.to_string(),
        });
    }

    // Health, worst wins.
    let newest_time = newest.map(|(_, t)| t);
    if let Some(f) = &st.last_failure
        && let Ok(ft) = f.time.parse::<Timestamp>()
        && newest_time.is_none_or(|nt| ft > nt)
    {
        st.health = st.health.max(Health::Failing);
        st.reasons
            .push(format!("the last backup failed: {}", f.error));
    }
    if let Some((e, _)) = newest
        && e.manifest.anomalous
    {
        st.health = st.health.max(Health::Failing);
        st.reasons.push(format!(
            "the newest snapshot {} raised the shrink alarm",
            e.id
        ));
    }
    let limit = max_age(plan, now);
    match newest_time {
        Some(t) if now.duration_since(t) > limit => {
            st.health = st.health.max(Health::Stale);
            st.reasons.push(format!(
                "the newest snapshot is {} old (allowed: {})",
                crate::text::human_age(now.duration_since(t)),
                crate::text::human_age(limit)
            ));
        }
        None => {
            st.health = st.health.max(Health::Stale);
            st.reasons.push("there is no complete snapshot".into());
        }
        _ => {}
    }
    let vlimit = verify_max_age(plan, now);
    let verified_at = st
        .last_verified
        .as_ref()
        .and_then(|v| v.time.parse::<Timestamp>().ok());
    if newest_time.is_some() && verified_at.is_none_or(|t| now.duration_since(t) > vlimit) {
        st.health = st.health.max(Health::Unverified);
        st.reasons.push(match verified_at {
            Some(t) => format!(
                "the last passed restore drill is {} old (allowed: {})",
                crate::text::human_age(now.duration_since(t)),
                crate::text::human_age(vlimit)
            ),
            None => "no restore drill has passed yet (run `backstop verify`)".into(),
        });
    }
    let wal = st.wal.clone();
    crate::state::jobstate::update(&plan.name, |s| {
        s.snapshots = Some(st.snapshots);
        if let Some(w) = &wal {
            s.wal_archived = w.newest_archived.clone();
            s.wal_gap = Some(w.gap.is_some());
        }
    });
    (st, history)
}
