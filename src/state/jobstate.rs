//! What this host remembers of each job's runs (`STATE/jobs/JOB.json`): the last success
//! and failure of backups and drills, with sizes and durations. Storage stays the source
//! of truth for what exists; this adds what storage cannot say (a failure leaves nothing
//! there) and feeds the metrics file without touching the network.

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::lock::FileLock;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Run {
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    pub duration_ms: u64,
    #[serde(default)]
    pub plaintext_bytes: u64,
    #[serde(default)]
    pub stored_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct JobState {
    pub job: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_ok: Option<Run>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_failed: Option<Run>,
    /// The last drill that passed; `duration_ms` is the restore time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_ok: Option<Run>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_failed: Option<Run>,
    /// The newest snapshot is anomalous (shrink alarm).
    #[serde(default)]
    pub anomalous: bool,
    /// Complete snapshots in storage, when last counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<u64>,
    /// Cluster jobs: when the newest WAL was archived, and whether the archive has a gap,
    /// when `status` last looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_archived: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_gap: Option<bool>,
    /// The pg_dump the last backup of this job used, so the next one can start it before
    /// the server and the installed tools have been asked again (both are still asked,
    /// and a different answer restarts the dump before a byte of it is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_dump: Option<Tool>,
}

/// A client program set remembered from an earlier run: its directory and version.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Tool {
    pub dir: PathBuf,
    pub major: u32,
    pub version: String,
}

fn dir() -> PathBuf {
    super::state_dir().join("jobs")
}

fn path(job: &str) -> PathBuf {
    dir().join(format!("{job}.json"))
}

pub(crate) fn load(job: &str) -> JobState {
    std::fs::read_to_string(path(job))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| JobState {
            job: job.to_string(),
            ..JobState::default()
        })
}

/// Every job this host has state for.
pub(crate) fn load_all() -> Vec<JobState> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir()) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json")
                && let Some(stem) = p.file_stem().and_then(|s| s.to_str())
            {
                out.push(load(stem));
            }
        }
    }
    out.sort_by(|a, b| a.job.cmp(&b.job));
    out
}

/// Change job `job`'s state under a lock (runs of different jobs may finish together).
pub(crate) fn update(job: &str, f: impl FnOnce(&mut JobState)) {
    let d = dir();
    if let Err(e) = super::private_dir(&d) {
        tracing::warn!("cannot keep job state in {}: {e}", d.display());
        return;
    }
    let Ok(lockf) = std::fs::OpenOptions::new()
        .mode(0o600)
        .create(true)
        .truncate(false)
        .write(true)
        .open(d.join(".lock"))
    else {
        return;
    };
    let _g = FileLock::exclusive_blocking(&lockf);
    let mut st = load(job);
    f(&mut st);
    let p = path(job);
    let res = super::write_private(&p, &serde_json::to_vec_pretty(&st).unwrap_or_default());
    if let Err(e) = res {
        tracing::warn!("cannot write {}: {e}", p.display());
    }
}
