//! Which snapshot objects are signed and how they are read: the manifest, pins and drill
//! results each get a minisign signature beside them (`NAME.minisig`, written first) from
//! the job's `[signing] key_file`. A job with `[signing]` accepts such an object only with
//! a good signature by one of its `trusted` keys; anything else is foreign. A job without
//! `[signing]` neither signs nor checks (doctor warns).

use bytes::Bytes;

use crate::config::JobPlan;
use crate::error::{Error, Result};
use crate::minisign::{self, SecretKey};
use crate::storage::Storage;

/// What a signature check said about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The job does not use signatures.
    Unchecked,
    /// Signed by the trusted key with this id.
    Signed(String),
    /// Unsigned or wrongly signed: why.
    Foreign(String),
}

/// The signing key of this host for `plan`, when the job signs. A job with `[signing]`
/// but no readable key file cannot write snapshots of its own: an error (exit 2) before
/// anything is stored.
pub(crate) fn signer(plan: &JobPlan) -> Result<Option<SecretKey>> {
    let Some(sg) = &plan.signing else {
        return Ok(None);
    };
    let Some(path) = &sg.key_file else {
        return Err(Error::config(format!(
            "job {}: [signing] has no key_file on this host, so its snapshots would be foreign to the job; \
             set signing.key_file in {} (create a key with `backstop keygen`)",
            plan.name,
            plan.file.display()
        )));
    };
    let key = SecretKey::load(path)?;
    if !sg.trusted.contains(&key.public()) {
        return Err(Error::config(format!(
            "job {}: the signing key {} ({}) is not among signing.trusted in {}; add {} there",
            plan.name,
            path.display(),
            key.public().id_hex(),
            plan.file.display(),
            key.public().encode()
        )));
    }
    Ok(Some(key))
}

/// Store `data` at `key`, its signature first when `signer` is given.
pub(crate) async fn put_signed(
    storage: &dyn Storage,
    key: &str,
    data: Bytes,
    signer: Option<&SecretKey>,
    comment: &str,
) -> Result<()> {
    if let Some(s) = signer {
        let sig = s.sign(&data, comment);
        storage
            .put_bytes(&format!("{key}{}", minisign::SUFFIX), Bytes::from(sig))
            .await?;
    }
    storage.put_bytes(key, data).await.map(|_| ())
}

/// Check `data` (read from `key`) against its stored signature, as `plan` requires.
/// `sig_version`: read that version of the signature (the original, on a versioned bucket
/// where someone wrote over it).
pub(crate) async fn check(
    storage: &dyn Storage,
    plan: &JobPlan,
    key: &str,
    data: &[u8],
    sig_version: Option<&str>,
) -> Result<Verdict> {
    let Some(sg) = &plan.signing else {
        return Ok(Verdict::Unchecked);
    };
    let sig_key = format!("{key}{}", minisign::SUFFIX);
    let read = match sig_version {
        Some(v) => super::read_version(storage, &sig_key, v, minisign::SIG_MAX).await,
        None => storage.get_bytes_limited(&sig_key, minisign::SIG_MAX).await,
    };
    let sig = match read {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(Verdict::Foreign("unsigned".into())),
        Err(e) => {
            return Ok(Verdict::Foreign(format!(
                "signature unreadable: {}",
                e.message()
            )));
        }
    };
    Ok(match minisign::verify(data, &sig, &sg.trusted) {
        Ok(k) => Verdict::Signed(k.id_hex()),
        Err(why) => Verdict::Foreign(why),
    })
}

/// Read a small object that `plan` needs signed (a pin, a drill result): `None` when it is
/// missing, or foreign (said loudly, never used).
pub(crate) async fn read_trusted(
    storage: &dyn Storage,
    plan: &JobPlan,
    key: &str,
) -> Result<Option<Vec<u8>>> {
    let Some(data) = storage.get_bytes(key).await? else {
        return Ok(None);
    };
    match check(storage, plan, key, &data, None).await? {
        Verdict::Foreign(why) => {
            tracing::warn!("{key}: not trusted ({why}); ignored");
            Ok(None)
        }
        _ => Ok(Some(data)),
    }
}
