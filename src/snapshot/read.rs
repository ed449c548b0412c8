//! Reading a snapshot's objects back: open one (a missing object is a damaged snapshot),
//! download it, check its size and SHA-256 while age decrypts and zstd decompresses it.

use std::path::Path;
use std::sync::Arc;

use super::{Entry, ObjectEntry};
use crate::error::{Error, Result};
use crate::pipeline::{self, Expect};
use crate::storage::Storage;

/// Open one of a snapshot's stored objects for reading; a missing one is a damaged snapshot.
pub(crate) async fn open_object(
    storage: &dyn Storage,
    entry: &Entry,
    obj: &ObjectEntry,
) -> Result<(String, crate::storage::Reader)> {
    let key = super::object_key(&entry.manifest.job, &entry.id, &obj.name);
    storage.expect(&key, obj.stored_bytes, &obj.sha256);
    // Written once: on a versioned bucket, a rewritten or hidden object is read in the
    // version the manifest describes (its recorded size; the SHA-256 is checked as it
    // streams), not in whatever was put over it. The object's history (from the listing
    // that found the snapshot, or asked for now) and the object are asked for side by
    // side; the plain download is dropped unread when the history leads to the version
    // to read.
    let listed = entry.histories.clone();
    let history = async {
        match listed {
            // Listed with the catalog that found the snapshot: no second listing.
            Some(h) => h,
            None => std::sync::Arc::new(super::history(storage, &key).await),
        }
    };
    let (hist, plain) = tokio::join!(history, storage.get(&key));
    if let Some(h) = hist.get(&key)
        && let Some(why) = h.tampering()
        && let Some(v) =
            h.0.iter()
                .rev()
                .find(|v| !v.delete_marker && v.size == obj.stored_bytes)
    {
        tracing::warn!("{key}: TAMPERING: {why}; reading version {}", v.version_id);
        if let Some(r) = storage.get_version(&key, &v.version_id).await? {
            return Ok((key, r));
        }
    }
    let reader = plain?.ok_or_else(|| missing(storage, entry, &key))?;
    Ok((key, reader))
}

/// A stored object that is not there: the snapshot is damaged.
fn missing(storage: &dyn Storage, entry: &Entry, key: &str) -> Error {
    Error::failed(format!(
        "stored object {key} is missing from {}: snapshot {} is damaged; nothing was restored \
         (pick an older one with --snapshot ID)",
        storage.describe(),
        entry.id
    ))
}

/// Download one object, decrypt and decompress it into `dest`, checking it whole.
pub(crate) async fn fetch(
    storage: &dyn Storage,
    entry: &Entry,
    obj: &ObjectEntry,
    identities: Arc<Vec<Box<dyn age::Identity + Send + Sync>>>,
    dest: &Path,
) -> Result<u64> {
    let (key, reader) = open_object(storage, entry, obj).await?;
    let dest = dest.to_path_buf();
    let name = key.clone();
    let stored = obj.stored_bytes;
    let sha = obj.sha256.clone();
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    tokio::task::spawn_blocking(move || {
        // Decrypted content: readable by this user only, whatever the umask.
        let f = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&dest)
        }
        .map_err(|e| {
            Error::failed(format!(
                "cannot create staging file {}: {e}",
                dest.display()
            ))
        })?;
        let mut w = std::io::BufWriter::with_capacity(pipeline::READ_BUF, f);
        let n = pipeline::decode(
            bridge,
            &identities,
            &Expect {
                name: &name,
                stored_bytes: stored,
                sha256: &sha,
            },
            &mut w,
        )?;
        let f = w
            .into_inner()
            .map_err(|e| Error::failed(format!("writing {}: {}", dest.display(), e.error())))?;
        // No fsync: a staging file lives only until pg_restore has read it; after a crash
        // the restore starts over from storage.
        drop(f);
        Ok(n)
    })
    .await
    .map_err(|e| Error::failed(format!("download task failed: {e}")))?
}
