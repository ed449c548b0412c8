//! Fault injection for tests: wrappers around a backend that fail a put after a number of
//! bytes, flip a byte on read, or report an object short. Not under cfg(test), so
//! integration tests and the fault-injection job setting can use them.

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Chunk, ChunkRx, ObjectInfo, Reader, Storage};
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct FailPutAfter<S> {
    pub inner: S,
    pub after_bytes: u64,
    pub seen: AtomicU64,
}

impl<S> FailPutAfter<S> {
    pub fn new(inner: S, after_bytes: u64) -> Self {
        FailPutAfter {
            inner,
            after_bytes,
            seen: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl<S: Storage> Storage for FailPutAfter<S> {
    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }
    fn chunk_size(&self) -> usize {
        self.inner.chunk_size()
    }
    async fn put_stream(&self, key: &str, mut rx: ChunkRx) -> Result<u64> {
        // Forward chunks until the byte budget is spent, then drop the inner sender
        // without End: the inner backend must discard what it has.
        let (tx, inner_rx) = mpsc::channel(2);
        let key2 = key.to_string();
        let inner = self.inner.put_stream(&key2, inner_rx);
        let forward = async {
            while let Some(c) = rx.recv().await {
                if let Chunk::Data(d) = &c {
                    let total =
                        self.seen.fetch_add(d.len() as u64, Ordering::SeqCst) + d.len() as u64;
                    if total > self.after_bytes {
                        drop(tx);
                        return Err(Error::failed("injected fault: storage write failed"));
                    }
                }
                if tx.send(c).await.is_err() {
                    break;
                }
            }
            Ok(())
        };
        let (fwd, res) = tokio::join!(forward, inner);
        fwd?;
        res
    }
    async fn get(&self, key: &str) -> Result<Option<Reader>> {
        self.inner.get(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<u64>> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        self.inner.put_if_absent(key, data).await
    }
}

/// Stores faithfully, but reads back data objects (not `manifest.json`) with one byte
/// flipped: what a read-back check must catch.
pub struct FlipOnRead<S> {
    pub inner: S,
}

#[async_trait]
impl<S: Storage> Storage for FlipOnRead<S> {
    fn describe(&self) -> String {
        format!("flip-on-read({})", self.inner.describe())
    }
    fn chunk_size(&self) -> usize {
        self.inner.chunk_size()
    }
    async fn put_stream(&self, key: &str, rx: ChunkRx) -> Result<u64> {
        self.inner.put_stream(key, rx).await
    }
    async fn get(&self, key: &str) -> Result<Option<Reader>> {
        if key.ends_with("manifest.json") {
            return self.inner.get(key).await;
        }
        let Some(mut data) = self.inner.get_bytes_limited(key, u64::MAX / 2).await? else {
            return Ok(None);
        };
        let mid = data.len() / 2;
        if let Some(b) = data.get_mut(mid) {
            *b ^= 0x01;
        }
        Ok(Some(Box::new(std::io::Cursor::new(data))))
    }
    async fn head(&self, key: &str) -> Result<Option<u64>> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        self.inner.put_if_absent(key, data).await
    }
}

/// Stores faithfully, but answers a size query (`HEAD`) for objects whose key ends with
/// `suffix` one byte short: an object truncated after its upload, which the check before
/// a manifest is written must catch.
pub struct ShortHead<S> {
    pub inner: S,
    pub suffix: String,
}

#[async_trait]
impl<S: Storage> Storage for ShortHead<S> {
    fn describe(&self) -> String {
        format!("short-head({})", self.inner.describe())
    }
    fn chunk_size(&self) -> usize {
        self.inner.chunk_size()
    }
    async fn put_stream(&self, key: &str, rx: ChunkRx) -> Result<u64> {
        self.inner.put_stream(key, rx).await
    }
    async fn get(&self, key: &str) -> Result<Option<Reader>> {
        self.inner.get(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<u64>> {
        let size = self.inner.head(key).await?;
        Ok(match size {
            Some(n) if key.ends_with(&self.suffix) => Some(n.saturating_sub(1)),
            other => other,
        })
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        self.inner.put_if_absent(key, data).await
    }
}

/// A server that ignores `If-None-Match: *` (Garage 2.x does): a conditional put always
/// "succeeds" and replaces whatever was there.
pub struct IgnoreConditional<S> {
    pub inner: S,
}

#[async_trait]
impl<S: Storage> Storage for IgnoreConditional<S> {
    fn describe(&self) -> String {
        format!("ignore-conditional({})", self.inner.describe())
    }
    fn chunk_size(&self) -> usize {
        self.inner.chunk_size()
    }
    async fn put_stream(&self, key: &str, rx: ChunkRx) -> Result<u64> {
        self.inner.put_stream(key, rx).await
    }
    async fn get(&self, key: &str) -> Result<Option<Reader>> {
        self.inner.get(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<u64>> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        self.inner.delete(key).await?;
        self.inner.put_bytes(key, data).await?;
        Ok(true)
    }
}
