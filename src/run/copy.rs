//! `copy JOB --from A --to B [--snapshot ID | --all-missing]`: complete snapshots copied
//! between two storages of a job without decrypting them. Only the job's own snapshots
//! are copied (a manifest with a good signature where the job signs); every object is
//! streamed through a size and SHA-256 check against that manifest and committed on the
//! destination only when it matches, the objects beside it (drill results, pins) follow,
//! then the manifest's signature and the manifest last, read back. A leftover object of a
//! failed backup under the same name on the destination is kept when it is byte-for-byte
//! right and replaced otherwise (without a manifest it belongs to no snapshot). The daemon
//! runs this to bring a storage that was down back up to date.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use sha2::Digest;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::config::JobPlan;
use crate::error::{Error, Result};
use crate::snapshot::{self, Entry, MANIFEST};
use crate::storage::{Chunk, Storage};

/// The most an object beside a snapshot (a drill result, a pin, a signature) may hold to
/// be copied; they are a few hundred bytes.
const EXTRA_MAX: u64 = 1 << 20;

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct CopyReport {
    pub job: String,
    pub from: String,
    pub to: String,
    /// Snapshots copied, oldest first.
    pub copied: Vec<String>,
    /// Snapshots the destination already held.
    pub already: Vec<String>,
    /// Stored bytes copied.
    pub bytes: u64,
    /// Snapshots that could not be copied, and why.
    pub errors: Vec<String>,
}

impl CopyReport {
    /// Exit 1 when a snapshot could not be copied.
    pub(crate) fn result(&self) -> Result<()> {
        if self.errors.is_empty() {
            return Ok(());
        }
        Err(Error::failed(format!(
            "copy of job {} from {} to {}: {}",
            self.job,
            self.from,
            self.to,
            self.errors.join("; ")
        )))
    }
}

/// The storage named `name` of `plan`, opened.
async fn storage_named(plan: &JobPlan, name: &str, flag: &str) -> Result<Arc<dyn Storage>> {
    let sp = plan
        .storages
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            Error::config(format!(
                "{flag} {name:?}: job {} has no storage of that name; valid: {}",
                plan.name,
                snapshot::replicas::names(plan).join(", ")
            ))
        })?;
    crate::storage::open(sp).await
}

/// Copy snapshot `only` (or every one `from` holds and `to` lacks) of `plan`.
pub(crate) async fn copy(
    plan: &JobPlan,
    from: &str,
    to: &str,
    only: Option<&str>,
) -> Result<CopyReport> {
    if from == to {
        return Err(Error::config(format!(
            "--from and --to both name storage {from:?}; copy needs two storages of job {}",
            plan.name
        )));
    }
    if let Some(id) = only
        && !snapshot::is_id(id)
    {
        return Err(Error::config(format!(
            "--snapshot {id:?} is not a snapshot id; ids look like 20261124T072247Z-3fa9c1 (see `backstop list {}`)",
            plan.name
        )));
    }
    let src = storage_named(plan, from, "--from").await?;
    let dst = storage_named(plan, to, "--to").await?;
    let lock = super::lock::run_lock(&plan.name, dst.clone(), "copy", false).await?;
    let work = copy_between(plan, src.as_ref(), dst.as_ref(), from, to, only);
    let res = tokio::select! {
        r = work => r,
        e = lock.lease.lost() => Err(e),
    };
    lock.release().await;
    let told = match &res {
        Ok(r) => r.result(),
        Err(e) => Err(Error::failed(e.message().to_string())),
    };
    crate::state::audit::append(crate::state::audit::Record {
        action: "copy",
        job: Some(&plan.name),
        snapshot: only,
        outcome: told.as_ref().map(|_| ()),
        details: match &res {
            Ok(r) => serde_json::to_value(r).unwrap_or_default(),
            Err(_) => serde_json::json!({"from": from, "to": to}),
        },
    });
    res
}

async fn copy_between(
    plan: &JobPlan,
    src: &dyn Storage,
    dst: &dyn Storage,
    from: &str,
    to: &str,
    only: Option<&str>,
) -> Result<CopyReport> {
    let mut report = CopyReport {
        job: plan.name.clone(),
        from: from.to_string(),
        to: to.to_string(),
        ..Default::default()
    };
    let have = snapshot::catalog_all(src, plan).await?;
    let there = snapshot::catalog_all(dst, plan).await?;
    let mut todo: Vec<&Entry> = Vec::new();
    match only {
        Some(id) => {
            let e = have.iter().find(|e| e.id == id).ok_or_else(|| {
                Error::failed(format!(
                    "storage {from} holds no complete snapshot {id} of job {} (see `backstop list {}`)",
                    plan.name, plan.name
                ))
            })?;
            if let Some(why) = &e.foreign {
                return Err(Error::refused(format!(
                    "snapshot {id} on storage {from} is FOREIGN ({why}); it is not copied"
                )));
            }
            todo.push(e);
        }
        None => todo.extend(have.iter().filter(|e| e.foreign.is_none())),
    }
    // Oldest first, so an interrupted copy leaves the newest for the next run, never a gap
    // in the middle that looks like retention.
    todo.reverse();
    for e in todo {
        if let Some(t) = there.iter().find(|t| t.id == e.id) {
            match &t.foreign {
                None => report.already.push(e.id.clone()),
                Some(why) => report.errors.push(format!(
                    "snapshot {} is on storage {to} already but FOREIGN there ({why}); it was left alone",
                    e.id
                )),
            }
            continue;
        }
        match copy_one(plan, src, dst, e).await {
            Ok(n) => {
                report.bytes += n;
                report.copied.push(e.id.clone());
            }
            Err(err) => report
                .errors
                .push(format!("snapshot {}: {}", e.id, err.message())),
        }
    }
    Ok(report)
}

/// Copy one snapshot, manifest last; returns the stored bytes copied.
async fn copy_one(plan: &JobPlan, src: &dyn Storage, dst: &dyn Storage, e: &Entry) -> Result<u64> {
    let job = plan.name.as_str();
    let mkey = snapshot::object_key(job, &e.id, MANIFEST);
    // The manifest as stored, checked again (it is what goes across, byte for byte).
    let body = src
        .get_bytes_limited(&mkey, snapshot::MANIFEST_MAX)
        .await?
        .ok_or_else(|| Error::failed(format!("{mkey} disappeared from the source")))?;
    let m: snapshot::Manifest = serde_json::from_slice(&body)
        .map_err(|err| Error::failed(format!("{mkey}: unreadable manifest ({err})")))?;
    if m.job != job || m.snapshot != e.id {
        return Err(Error::failed(format!(
            "{mkey} names another job or snapshot"
        )));
    }
    if let snapshot::sign::Verdict::Foreign(why) =
        snapshot::sign::check(src, plan, &mkey, &body, None).await?
    {
        return Err(Error::refused(format!(
            "{mkey} is FOREIGN now ({why}); not copied"
        )));
    }
    let mut bytes = 0;
    let mut names = std::collections::HashSet::new();
    for o in &m.objects {
        if o.name.contains('/') || o.name == MANIFEST {
            return Err(Error::failed(format!(
                "{mkey} lists an object named {:?}, which no snapshot has",
                o.name
            )));
        }
        names.insert(o.name.clone());
        let key = snapshot::object_key(job, &e.id, &o.name);
        bytes += copy_checked(src, dst, &key, o.stored_bytes, &o.sha256).await?;
    }
    // The objects written beside it later (drill results, pins, signatures), as they are:
    // each is signed on its own and checked by whoever reads it.
    let prefix = snapshot::snapshot_prefix(job, &e.id);
    let sig = format!("{MANIFEST}{}", crate::minisign::SUFFIX);
    for o in src.list(&prefix).await? {
        let Some(name) = o.key.strip_prefix(&prefix) else {
            continue;
        };
        if names.contains(name) || name == MANIFEST || name == sig || name.contains('/') {
            continue;
        }
        if o.size > EXTRA_MAX {
            tracing::warn!("{}: {} bytes beside a snapshot; not copied", o.key, o.size);
            continue;
        }
        if dst.head(&o.key).await?.is_some() {
            continue;
        }
        if let Some(data) = src.get_bytes_limited(&o.key, EXTRA_MAX).await? {
            dst.put_bytes(&o.key, Bytes::from(data)).await?;
        }
    }
    let sig_key = format!("{mkey}{}", crate::minisign::SUFFIX);
    if let Some(s) = src
        .get_bytes_limited(&sig_key, crate::minisign::SIG_MAX)
        .await?
    {
        if dst.head(&sig_key).await?.is_some() {
            dst.delete(&sig_key).await?;
        }
        dst.put_bytes(&sig_key, Bytes::from(s)).await?;
    }
    dst.put_bytes(&mkey, Bytes::from(body.clone())).await?;
    match dst.get_bytes_limited(&mkey, snapshot::MANIFEST_MAX).await? {
        Some(back) if back == body => Ok(bytes),
        _ => Err(Error::failed(format!(
            "the manifest {mkey} did not read back as written on the destination"
        ))),
    }
}

/// Stream one object from `src` to `dst`, committed only when its size and SHA-256 are
/// the manifest's. A copy already on `dst` is kept when right, replaced when not.
async fn copy_checked(
    src: &dyn Storage,
    dst: &dyn Storage,
    key: &str,
    size: u64,
    sha256: &str,
) -> Result<u64> {
    if dst.head(key).await?.is_some() {
        if hash_of(dst, key).await.ok().flatten() == Some((size, sha256.to_string())) {
            return Ok(0);
        }
        dst.delete(key).await.map_err(|e| {
            e.context(format!(
                "{key} on the destination is a wrong leftover that cannot be removed"
            ))
        })?;
    }
    let mut r = src
        .get(key)
        .await?
        .ok_or_else(|| Error::failed(format!("{key} is missing from the source")))?;
    let chunk = dst.chunk_size_for(Some(size));
    let (tx, rx) = mpsc::channel(dst.chunks_in_flight());
    let feed = async move {
        let mut h = sha2::Sha256::new();
        let mut n = 0u64;
        loop {
            let mut buf = vec![0u8; chunk];
            let mut filled = 0;
            while filled < chunk {
                let k = r
                    .read(&mut buf[filled..])
                    .await
                    .map_err(|e| Error::failed(format!("reading {key} from the source: {e}")))?;
                if k == 0 {
                    break;
                }
                filled += k;
            }
            if filled == 0 {
                break;
            }
            buf.truncate(filled);
            h.update(&buf);
            n += filled as u64;
            if n > size {
                return Err(Error::failed(format!(
                    "{key} on the source is longer than the {size} bytes its manifest says"
                )));
            }
            if tx.send(Chunk::Data(Bytes::from(buf))).await.is_err() {
                return Err(Error::failed(format!("the upload of {key} stopped")));
            }
        }
        let sum = hex::encode(h.finalize());
        if n != size || sum != sha256 {
            // No End: the destination aborts the object.
            return Err(Error::failed(format!(
                "{key} on the source is {n} bytes with SHA-256 {sum}, its manifest says {size} bytes with {sha256}: \
                 the source's copy is damaged; nothing of it was committed"
            )));
        }
        tx.send(Chunk::End)
            .await
            .map_err(|_| Error::failed(format!("the upload of {key} stopped")))?;
        Ok(n)
    };
    let (fed, put) = tokio::join!(feed, dst.put_stream(key, rx));
    let n = fed?;
    put?;
    Ok(n)
}

/// The size and SHA-256 of a stored object.
async fn hash_of(s: &dyn Storage, key: &str) -> Result<Option<(u64, String)>> {
    let Some(mut r) = s.get(key).await? else {
        return Ok(None);
    };
    let mut h = sha2::Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = r
            .read(&mut buf)
            .await
            .map_err(|e| Error::failed(format!("reading {key}: {e}")))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok(Some((n, hex::encode(h.finalize()))))
}
