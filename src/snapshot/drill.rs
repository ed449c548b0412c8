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
    // Signed too (where the job signs): a host that can decrypt it shows its values, and
    // anyone can encrypt to the job's public keys.
    let signer_details = super::sign::signer(plan).ok().flatten();
    super::sign::put_signed(
        storage,
        &super::object_key(&plan.name, id, &format!("{base}.json.zst.age")),
        Bytes::from(enc),
        signer_details.as_ref(),
        &format!("backstop drill details job={} snapshot={id}", plan.name),
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

/// The most a drill's encrypted details may hold.
const DETAILS_MAX: u64 = 4 << 20;

/// The checks of the newest drill of snapshot `id`, decrypted with `identities`: only
/// for a host that holds the private key, and only when the details are the job's own
/// (signed where the job signs). `None` when there are none or they cannot be trusted.
pub(crate) async fn latest_checks(
    storage: &dyn Storage,
    plan: &JobPlan,
    id: &str,
    identities: &[Box<dyn age::Identity + Send + Sync>],
) -> Result<Option<Outcome>> {
    let prefix = super::object_key(&plan.name, id, PREFIX);
    let Some(key) = storage
        .list(&prefix)
        .await?
        .into_iter()
        .filter(|o| o.key.ends_with(".json.zst.age") && o.size <= DETAILS_MAX)
        .map(|o| o.key)
        .max()
    else {
        return Ok(None);
    };
    let Some(enc) = storage.get_bytes_limited(&key, DETAILS_MAX).await? else {
        return Ok(None);
    };
    if let super::sign::Verdict::Foreign(why) =
        super::sign::check(storage, plan, &key, &enc, None).await?
    {
        tracing::warn!("{key}: not trusted ({why}); its checks are not shown");
        return Ok(None);
    }
    let plain = {
        use std::io::Read;
        let dec = age::Decryptor::new_buffered(&enc[..])
            .map_err(|e| Error::failed(format!("{key}: not a readable age file: {e}")))?;
        let r = dec
            .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| Error::failed(format!("{key}: cannot decrypt: {e}")))?;
        let mut z = zstd::stream::read::Decoder::new(r)
            .map_err(|e| Error::failed(format!("{key}: zstd: {e}")))?
            .take(DETAILS_MAX);
        let mut out = Vec::new();
        z.read_to_end(&mut out)
            .map_err(|e| Error::failed(format!("{key}: {e}")))?;
        out
    };
    match serde_json::from_slice::<Outcome>(&plain) {
        Ok(o) if o.summary.job == plan.name && o.summary.snapshot == id => Ok(Some(o)),
        _ => Ok(None),
    }
}
