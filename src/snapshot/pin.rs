//! Pins written after the fact (`pin-TIME.json` beside a manifest): they keep a snapshot
//! from retention until a time. The manifest itself is never rewritten (objects may be
//! locked).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::Storage;

/// A pin written after the fact, beside a snapshot's manifest (`pin-TIME.json`): the
/// manifest itself is never rewritten (objects may be locked).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Pin {
    pub until: String,
    pub reason: String,
    /// The job and snapshot it pins (absent in pins written before 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

pub(crate) const PIN_PREFIX: &str = "pin-";

/// Pin snapshot `id` of `job` until `until`, as a new object beside its manifest.
pub(crate) async fn pin(
    storage: &dyn Storage,
    job: &str,
    id: &str,
    until: Timestamp,
    reason: &str,
    signer: Option<&crate::minisign::SecretKey>,
) -> Result<()> {
    let p = Pin {
        until: until.to_string(),
        reason: reason.to_string(),
        job: Some(job.to_string()),
        snapshot: Some(id.to_string()),
    };
    let name = format!(
        "{PIN_PREFIX}{}.json",
        Timestamp::now().strftime("%Y%m%dT%H%M%S%.fZ")
    );
    let body = serde_json::to_vec_pretty(&p).map_err(|e| Error::failed(e.to_string()))?;
    super::sign::put_signed(
        storage,
        &super::object_key(job, id, &name),
        body.into(),
        signer,
        &format!("backstop pin job={job} snapshot={id}"),
    )
    .await
}
