//! The storage contract every backend keeps, and the backends (`file://`, `s3://`).
//!
//! Contract (the conformance suite in `tests/` checks every point on every backend):
//! - Keys are `/`-separated paths relative to the storage root (the URL's prefix).
//! - `put_stream` is all-or-nothing: the object becomes visible, whole, only after the
//!   stream's explicit `Chunk::End`. A stream whose sender goes away without `End`, an
//!   error, or a cancelled future leaves nothing visible (S3: the multipart upload is
//!   aborted; file: the temp file is removed).
//! - A put never silently replaces an existing object (snapshot ids are unique; the file
//!   backend refuses, S3 relies on unique keys and Object Lock).
//! - `get` and `head` answer `None` for a missing object: "not found" is never an error,
//!   and every other failure is.
//! - `list` returns every object below a prefix, with sizes, in key order.
//!
//! May import: config, cleanup, error.

pub mod fanout;
pub mod faulty;
pub mod fs;
pub mod s3;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use crate::config::{StorageLocation, StoragePlan};
use crate::error::{Error, Result};

/// One message of a put stream.
#[derive(Debug)]
pub enum Chunk {
    Data(Bytes),
    /// The stream is complete: commit the object.
    End,
}

pub type ChunkTx = mpsc::Sender<Chunk>;
pub type ChunkRx = mpsc::Receiver<Chunk>;

/// A stored object's key and size, and when the storage last wrote it (by the storage's
/// clock, not the writer's), where the backend says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub modified: Option<jiff::Timestamp>,
}

pub type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// One stored version of an object, on a storage that keeps versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub key: String,
    pub version_id: String,
    /// A delete marker: the object looks deleted, but its older versions remain.
    pub delete_marker: bool,
    pub size: u64,
    pub modified: Option<jiff::Timestamp>,
}

#[async_trait]
pub trait Storage: Send + Sync {
    /// A short description for logs ("s3://bucket/prefix", "file:///dir").
    fn describe(&self) -> String;

    /// The size every streamed chunk should have (the multipart part size); the last may
    /// be shorter.
    fn chunk_size(&self) -> usize;

    /// The chunk size for a stream of about `expected` bytes (a hint: the source's size).
    /// S3 grows its part size so that such a stream stays under 10,000 parts.
    fn chunk_size_for(&self, expected: Option<u64>) -> usize {
        let _ = expected;
        self.chunk_size()
    }

    /// How many chunks may wait in the channel (bounds memory with `chunk_size`).
    fn chunks_in_flight(&self) -> usize {
        2
    }

    /// Store a stream at `key`, all-or-nothing. Returns the bytes stored.
    async fn put_stream(&self, key: &str, rx: ChunkRx) -> Result<u64>;

    /// Read an object; `None` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<Reader>>;

    /// An object's size; `None` when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<u64>>;

    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Remove an object; removing a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Abort unfinished uploads below `prefix` (S3 multipart uploads whose id a cancelled
    /// run never learned). Backends without such state do nothing.
    async fn abort_incomplete(&self, prefix: &str) -> Result<()> {
        let _ = prefix;
        Ok(())
    }

    /// Remove unfinished uploads below `prefix` that started before `before` (S3
    /// multipart uploads; the file backend's temp files) and say what was removed. Used
    /// by `prune` for leftovers of killed runs.
    async fn clean_incomplete(&self, prefix: &str, before: jiff::Timestamp) -> Result<Vec<String>> {
        let _ = (prefix, before);
        Ok(Vec::new())
    }

    /// Every version of every object below `prefix`, delete markers included; per key the
    /// versions come newest first (as S3 lists them), then the delete markers. Backends
    /// without versions answer an empty list.
    async fn versions(&self, prefix: &str) -> Result<Vec<VersionInfo>> {
        let _ = prefix;
        Ok(Vec::new())
    }

    /// [`Storage::list`] of the keys below `prefix` that sort before `end` (a job's
    /// snapshots, without its WAL archive and leases, which sort after them). A backend
    /// that lists in key order stops there instead of listing the rest.
    async fn list_before(&self, prefix: &str, end: &str) -> Result<Vec<ObjectInfo>> {
        let mut all = self.list(prefix).await?;
        all.retain(|o| o.key.as_str() < end);
        Ok(all)
    }

    /// [`Storage::versions`] of the keys below `prefix` that sort before `end`.
    async fn versions_before(&self, prefix: &str, end: &str) -> Result<Vec<VersionInfo>> {
        let mut all = self.versions(prefix).await?;
        all.retain(|v| v.key.as_str() < end);
        Ok(all)
    }

    /// Open one version of an object; `None` when it does not exist.
    async fn get_version(&self, key: &str, version_id: &str) -> Result<Option<Reader>> {
        let _ = version_id;
        self.get(key).await
    }

    /// Store a small object only if nothing exists at `key`: `Ok(false)` when something
    /// does (S3: a conditional put with `If-None-Match: *`; file: a hard link, which
    /// fails on an existing name). Used for leases.
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool>;

    /// Until when the storage refuses to delete `key` (S3 Object Lock retention), if it
    /// does. Backends without such locks answer `None`.
    async fn locked_until(&self, key: &str) -> Result<Option<jiff::Timestamp>> {
        let _ = key;
        Ok(None)
    }

    /// What reading `key` back must give (stored size and SHA-256, from a manifest). A
    /// storage that can read the same object from elsewhere checks it as it streams and
    /// tries another copy next time when it does not match; a single storage does nothing
    /// (the reader checks the hash itself).
    fn expect(&self, key: &str, stored_bytes: u64, sha256: &str) {
        let _ = (key, stored_bytes, sha256);
    }

    /// The concrete type, for the few callers that treat several storages read as one
    /// specially (the catalog merges per-storage catalogs).
    fn as_any(&self) -> Option<&(dyn std::any::Any + Send + Sync)> {
        None
    }

    /// Store a small object whole.
    async fn put_bytes(&self, key: &str, data: Bytes) -> Result<u64> {
        let (tx, rx) = mpsc::channel(2);
        tx.send(Chunk::Data(data)).await.ok();
        tx.send(Chunk::End).await.ok();
        drop(tx);
        self.put_stream(key, rx).await
    }

    /// Read a small object whole (at most [`SMALL_OBJECT_MAX`] bytes); `None` when it does
    /// not exist.
    async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.get_bytes_limited(key, SMALL_OBJECT_MAX).await
    }

    /// Read an object whole if it holds at most `max` bytes; a larger one is an error that
    /// says so, read no further than `max + 1` bytes (what is stored may be hostile).
    async fn get_bytes_limited(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>> {
        use tokio::io::AsyncReadExt;
        let Some(r) = self.get(key).await? else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        r.take(max + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| Error::failed(format!("reading {key} from {}: {e}", self.describe())))?;
        if buf.len() as u64 > max {
            return Err(Error::failed(format!(
                "{key} in {} is larger than {max} bytes, which no object of its kind is; it was not read",
                self.describe()
            )));
        }
        Ok(Some(buf))
    }
}

/// The most a small object (manifest, pin, drill result, lease) may hold when read whole.
pub const SMALL_OBJECT_MAX: u64 = 16 << 20;

/// Build the backend a job's `[storage]` names.
pub async fn open(plan: &StoragePlan) -> Result<Arc<dyn Storage>> {
    match &plan.location {
        StorageLocation::File { root } => Ok(Arc::new(fs::FileStorage::new(root.clone()))),
        StorageLocation::S3 { .. } => Ok(Arc::new(s3::S3Storage::from_plan(plan, None).await?)),
    }
}

/// Build every storage a job lists, in the job file's order, with its name.
pub async fn open_all(plans: &[StoragePlan]) -> Result<Vec<(String, Arc<dyn Storage>)>> {
    let mut out = Vec::new();
    for p in plans {
        let s = open(p)
            .await
            .map_err(|e| e.context(format!("storage {}", p.name)))?;
        out.push((p.name.clone(), s));
    }
    Ok(out)
}

/// Check a key: relative, `/`-separated, no empty, `.` or `..` segments.
pub fn check_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        return Err(Error::failed(format!("invalid storage key {key:?}")));
    }
    Ok(())
}

/// Splits a byte stream into chunks of exactly `size` bytes (the last may be shorter) and
/// sends them; used by every producer so that S3 parts are equal. Blocking: call it from
/// a worker thread, never from the async runtime.
pub struct ChunkWriter {
    tx: ChunkTx,
    buf: bytes::BytesMut,
    size: usize,
    written: u64,
}

impl ChunkWriter {
    pub fn new(tx: ChunkTx, size: usize) -> Self {
        ChunkWriter {
            tx,
            buf: bytes::BytesMut::with_capacity(size),
            size,
            written: 0,
        }
    }

    fn send(&mut self, data: Bytes) -> std::io::Result<()> {
        self.tx.blocking_send(Chunk::Data(data)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the storage upload stopped")
        })
    }

    /// Flush the last chunk and send `End`: the object is complete.
    pub fn finish(mut self) -> std::io::Result<u64> {
        if !self.buf.is_empty() {
            let last = self.buf.split().freeze();
            self.send(last)?;
        }
        self.tx.blocking_send(Chunk::End).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the storage upload stopped")
        })?;
        Ok(self.written)
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let room = self.size - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.size {
                let full = self.buf.split().freeze();
                self.buf.reserve(self.size);
                self.send(full)?;
            }
        }
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
