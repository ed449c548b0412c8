//! Drill results, written beside a snapshot's manifest as new objects (never rewriting
//! it): `verify-TIME.json` (plaintext summary: time, outcome, durations, counts of checks)
//! and `verify-TIME.json.zst.age` (each check with expected and actual values: content
//! facts, so encrypted).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::JobPlan;
use crate::error::{Error, Result};
use crate::storage::Storage;

/// Whether a drill's checks all passed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verdict {
    Passed,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Check {
    pub name: String,
    pub expected: String,
    pub actual: String,
    pub ok: bool,
}

/// The plaintext summary object: no content facts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Summary {
    pub job: String,
    pub snapshot: String,
    pub time: String,
    pub outcome: Verdict,
    pub checks_passed: u64,
    pub checks_failed: u64,
    /// The measured recovery time: download, decrypt, decompress and restore.
    pub restore_ms: u64,
    /// Of which: download with hash check, decryption and decompression.
    pub download_ms: u64,
    /// Of which: pg_restore (postgres) or the swap into place (volume).
    pub apply_ms: u64,
    pub duration_ms: u64,
    pub restored_bytes: u64,
    pub scratch: String,
}

/// The full result, returned to the caller and stored encrypted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub summary: Summary,
    pub checks: Vec<Check>,
}

pub(crate) const PREFIX: &str = "verify-";

/// Write the summary (plaintext) and the details (encrypted) beside the manifest.
pub(crate) async fn record(
    plan: &JobPlan,
    storage: &dyn Storage,
    id: &str,
    o: &Outcome,
    now: jiff::Timestamp,
) -> Result<()> {
    let stamp = now.strftime("%Y%m%dT%H%M%S%.3fZ").to_string();
    let base = format!("{PREFIX}{stamp}");
    let details =
        serde_json::to_vec(o).map_err(|e| Error::failed(format!("verify result: {e}")))?;
    let comp = plan.compression;
    let recipients = plan.encryption.parsed.clone();
    let (enc, _) = tokio::task::spawn_blocking(move || {
        crate::pipeline::encode_bytes(&details, comp, &recipients)
    })
    .await
    .map_err(|e| Error::failed(format!("encryption task: {e}")))??;
    storage
        .put_bytes(
            &super::object_key(&plan.name, id, &format!("{base}.json.zst.age")),
            Bytes::from(enc),
        )
        .await?;
    let summary = serde_json::to_vec_pretty(&o.summary)
        .map_err(|e| Error::failed(format!("verify summary: {e}")))?;
    // Signed where the job signs; a drill host without the key records an unsigned
    // result, which the job will not count as a proof.
    let signer = match super::sign::signer(plan) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                "the drill result is recorded unsigned and will not count as verified: {}",
                e.message()
            );
            None
        }
    };
    super::sign::put_signed(
        storage,
        &super::object_key(&plan.name, id, &format!("{base}.json")),
        Bytes::from(summary),
        signer.as_ref(),
        &format!("backstop drill job={} snapshot={id}", plan.name),
    )
    .await
}

/// Every recorded drill summary of a snapshot, oldest first.
/// Drill results that are not the job's own (unsigned where the job signs, or naming
/// another snapshot) are left out.
pub(crate) async fn summaries(
    storage: &dyn Storage,
    plan: &JobPlan,
    id: &str,
) -> Result<Vec<Summary>> {
    let prefix = super::object_key(&plan.name, id, PREFIX);
    let mut out = Vec::new();
    for o in storage.list(&prefix).await? {
        if !o.key.ends_with(".json") {
            continue;
        }
        if let Some(b) = super::sign::read_trusted(storage, plan, &o.key).await?
            && let Ok(s) = serde_json::from_slice::<Summary>(&b)
            && s.job == plan.name
            && s.snapshot == id
        {
            out.push(s);
        }
    }
    Ok(out)
}
