//! Fan-out: one stream written to several storages at once. The producer encodes once;
//! every chunk (a shared `Bytes`, not a copy) goes to each live storage's own bounded
//! channel, so memory stays that of one upload per storage and the slowest storage sets
//! the pace. A storage whose upload fails is dropped from the run (its error kept, its
//! partial object aborted) while the others go on; the put fails only when every storage
//! failed or the producer stopped without `End`.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::{Chunk, ChunkRx, ChunkTx, ObjectInfo, Reader, Storage};
use crate::error::{Error, Result};

/// One storage of a fan-out, by its job-file name.
pub struct Member {
    pub name: String,
    pub storage: Arc<dyn Storage>,
    failed: Mutex<Option<String>>,
}

/// Several storages written as one; see the module comment.
pub struct Fanout {
    members: Vec<Member>,
    /// The size hint of the stream being set up (`chunk_size_for`), so that every storage
    /// cuts parts for the same expected size.
    hint: Mutex<Option<u64>>,
}

impl Fanout {
    pub fn new(members: Vec<(String, Arc<dyn Storage>)>) -> Fanout {
        Fanout {
            members: members
                .into_iter()
                .map(|(name, storage)| Member {
                    name,
                    storage,
                    failed: Mutex::new(None),
                })
                .collect(),
            hint: Mutex::new(None),
        }
    }

    /// The storages still in the run, in the job file's order.
    pub fn live(&self) -> Vec<(String, Arc<dyn Storage>)> {
        self.members
            .iter()
            .filter(|m| m.failed.lock().map(|f| f.is_none()).unwrap_or(false))
            .map(|m| (m.name.clone(), m.storage.clone()))
            .collect()
    }

    /// Drop storage `name` from the run, with the reason (the first reason is kept).
    pub fn fail(&self, name: &str, why: &str) {
        for m in &self.members {
            if m.name == name
                && let Ok(mut f) = m.failed.lock()
                && f.is_none()
            {
                tracing::warn!(
                    "storage {name} ({}) dropped from this run: {why}",
                    m.storage.describe()
                );
                *f = Some(why.to_string());
            }
        }
    }

    /// The storages dropped from the run and why, in the job file's order.
    pub fn failures(&self) -> Vec<(String, String)> {
        self.members
            .iter()
            .filter_map(|m| {
                let f = m.failed.lock().ok()?.clone()?;
                Some((m.name.clone(), f))
            })
            .collect()
    }

    fn first(&self) -> Result<Arc<dyn Storage>> {
        self.live()
            .into_iter()
            .next()
            .map(|(_, s)| s)
            .ok_or_else(|| self.all_failed())
    }

    fn all_failed(&self) -> Error {
        let why: Vec<String> = self
            .failures()
            .into_iter()
            .map(|(n, w)| format!("{n}: {w}"))
            .collect();
        Error::failed(format!("every storage failed ({})", why.join("; ")))
    }
}

/// Where one storage's copy of the stream goes: straight through when its part size is
/// the producer's, else re-cut to its own part size.
struct Sink {
    tx: Option<ChunkTx>,
    size: usize,
    buf: Option<BytesMut>,
}

impl Sink {
    async fn send(&mut self, c: Chunk) {
        if let Some(tx) = &self.tx
            && tx.send(c).await.is_err()
        {
            // Its upload ended (failed): it gets nothing more; its own error says why.
            self.tx = None;
        }
    }

    async fn data(&mut self, b: Bytes) {
        match self.buf.as_mut() {
            None => return self.send(Chunk::Data(b)).await,
            Some(buf) => buf.extend_from_slice(&b),
        }
        loop {
            let part = match self.buf.as_mut() {
                Some(buf) if buf.len() >= self.size && self.tx.is_some() => {
                    buf.split_to(self.size).freeze()
                }
                _ => return,
            };
            self.send(Chunk::Data(part)).await;
        }
    }

    async fn end(&mut self) {
        if let Some(buf) = self.buf.as_mut()
            && !buf.is_empty()
        {
            let last = buf.split().freeze();
            self.send(Chunk::Data(last)).await;
        }
        self.send(Chunk::End).await;
    }
}

#[async_trait]
impl Storage for Fanout {
    fn describe(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{} ({})", m.name, m.storage.describe()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn chunk_size(&self) -> usize {
        self.chunk_size_for(None)
    }

    fn chunk_size_for(&self, expected: Option<u64>) -> usize {
        if let Ok(mut h) = self.hint.lock() {
            *h = expected;
        }
        self.first()
            .map(|s| s.chunk_size_for(expected))
            .unwrap_or(crate::config::DEFAULT_PART_SIZE)
    }

    fn chunks_in_flight(&self) -> usize {
        self.first().map(|s| s.chunks_in_flight()).unwrap_or(2)
    }

    async fn put_stream(&self, key: &str, mut rx: ChunkRx) -> Result<u64> {
        let live = self.live();
        if live.is_empty() {
            return Err(self.all_failed());
        }
        let hint = self.hint.lock().ok().and_then(|h| *h);
        let producer_size = live[0].1.chunk_size_for(hint);
        let mut sinks = Vec::new();
        // Dropped (this put cancelled) aborts every upload, which aborts its object.
        let mut puts = tokio::task::JoinSet::new();
        for (name, s) in &live {
            let (tx, member_rx) = mpsc::channel(s.chunks_in_flight());
            let size = s.chunk_size_for(hint);
            sinks.push(Sink {
                tx: Some(tx),
                size,
                buf: (size != producer_size).then(|| BytesMut::with_capacity(size)),
            });
            let (s, key, name) = (s.clone(), key.to_string(), name.clone());
            puts.spawn(async move { (name, s.put_stream(&key, member_rx).await) });
        }
        let tee = async move {
            let mut ended = false;
            let mut all_dead = false;
            while let Some(c) = rx.recv().await {
                match c {
                    Chunk::Data(b) => {
                        for s in sinks.iter_mut() {
                            s.data(b.clone()).await;
                        }
                    }
                    Chunk::End => {
                        for s in sinks.iter_mut() {
                            s.end().await;
                        }
                        ended = true;
                        break;
                    }
                }
                if sinks.iter().all(|s| s.tx.is_none()) {
                    // Every upload failed: dropping `rx` stops the producer.
                    all_dead = true;
                    break;
                }
            }
            // Dropping the senders without End aborts the uploads that are still open.
            drop(sinks);
            (ended, all_dead)
        };
        let collect = async {
            let mut results = Vec::new();
            while let Some(r) = puts.join_next().await {
                results.push(r.unwrap_or_else(|e| {
                    (
                        String::new(),
                        Err(Error::failed(format!("upload task failed: {e}"))),
                    )
                }));
            }
            results
        };
        let ((ended, all_dead), results) = tokio::join!(tee, collect);
        // The storages' own failures (not the producer stopping) are theirs to carry.
        let blame = ended || all_dead;
        let mut stored = None;
        let mut first_err = None;
        for (name, r) in results {
            match r {
                Ok(n) => {
                    stored.get_or_insert(n);
                }
                Err(e) => {
                    if blame {
                        self.fail(&name, &format!("storing {key}: {}", e.message()));
                    }
                    first_err.get_or_insert(e);
                }
            }
        }
        match (stored, first_err) {
            _ if all_dead => Err(self.all_failed()),
            (Some(n), _) if ended => Ok(n),
            (_, Some(e)) if !ended => Err(e),
            (_, _) if !ended => Err(Error::failed(format!(
                "the stream for {key} stopped before its end; nothing was stored"
            ))),
            _ => Err(self.all_failed()),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Reader>> {
        self.first()?.get(key).await
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        self.first()?.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.first()?.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let mut err = None;
        for (_, s) in self.live() {
            if let Err(e) = s.delete(key).await {
                err.get_or_insert(e);
            }
        }
        err.map_or(Ok(()), Err)
    }

    async fn abort_incomplete(&self, prefix: &str) -> Result<()> {
        for (name, s) in self.live() {
            if let Err(e) = s.abort_incomplete(prefix).await {
                tracing::warn!(
                    "storage {name}: aborting uploads below {prefix}: {}",
                    e.message()
                );
            }
        }
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        let mut all = true;
        for (name, s) in self.live() {
            match s.put_if_absent(key, data.clone()).await {
                Ok(b) => all &= b,
                Err(e) => self.fail(&name, e.message()),
            }
        }
        if self.live().is_empty() {
            return Err(self.all_failed());
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the parts it is sent; fails on part `fail_at` when set (a fault injector:
    /// the tee is what is under test here).
    struct Rec {
        size: usize,
        fail_at: Option<usize>,
        parts: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl Storage for Rec {
        fn describe(&self) -> String {
            "rec".into()
        }
        fn chunk_size(&self) -> usize {
            self.size
        }
        async fn put_stream(&self, _key: &str, mut rx: ChunkRx) -> Result<u64> {
            let mut n = 0;
            while let Some(c) = rx.recv().await {
                match c {
                    Chunk::Data(b) => {
                        let mut p = self.parts.lock().unwrap();
                        if Some(p.len()) == self.fail_at {
                            return Err(Error::failed("injected"));
                        }
                        p.push(b.len());
                        n += b.len() as u64;
                    }
                    Chunk::End => return Ok(n),
                }
            }
            Err(Error::failed("stream ended without End"))
        }
        async fn get(&self, _: &str) -> Result<Option<Reader>> {
            Ok(None)
        }
        async fn head(&self, _: &str) -> Result<Option<u64>> {
            Ok(None)
        }
        async fn list(&self, _: &str) -> Result<Vec<ObjectInfo>> {
            Ok(Vec::new())
        }
        async fn delete(&self, _: &str) -> Result<()> {
            Ok(())
        }
        async fn put_if_absent(&self, _: &str, _: Bytes) -> Result<bool> {
            Ok(true)
        }
    }

    fn rec(size: usize, fail_at: Option<usize>) -> Arc<Rec> {
        Arc::new(Rec {
            size,
            fail_at,
            parts: Mutex::new(Vec::new()),
        })
    }

    async fn feed(fan: &Fanout, data: &[u8], end: bool) -> Result<u64> {
        let (tx, rx) = mpsc::channel(2);
        let size = fan.chunk_size_for(Some(data.len() as u64));
        let chunks: Vec<Bytes> = data.chunks(size).map(Bytes::copy_from_slice).collect();
        let send = async move {
            for c in chunks {
                if tx.send(Chunk::Data(c)).await.is_err() {
                    return;
                }
            }
            if end {
                let _ = tx.send(Chunk::End).await;
            }
        };
        let (_, r) = tokio::join!(send, fan.put_stream("k", rx));
        r
    }

    #[tokio::test]
    async fn every_storage_gets_the_stream_in_its_own_part_size() {
        let (a, b) = (rec(8, None), rec(5, None));
        let fan = Fanout::new(vec![("a".into(), a.clone()), ("b".into(), b.clone())]);
        let data: Vec<u8> = (0..23u8).collect();
        assert_eq!(feed(&fan, &data, true).await.unwrap(), 23);
        assert_eq!(*a.parts.lock().unwrap(), [8, 8, 7]);
        assert_eq!(*b.parts.lock().unwrap(), [5, 5, 5, 5, 3]);
        assert!(fan.failures().is_empty());
    }

    #[tokio::test]
    async fn one_failing_storage_is_dropped_and_the_others_finish() {
        let (a, b) = (rec(4, None), rec(4, Some(1)));
        let fan = Fanout::new(vec![("a".into(), a.clone()), ("b".into(), b.clone())]);
        let data = vec![7u8; 40];
        assert_eq!(feed(&fan, &data, true).await.unwrap(), 40);
        assert_eq!(a.parts.lock().unwrap().iter().sum::<usize>(), 40);
        let f = fan.failures();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, "b");
        assert!(f[0].1.contains("injected"), "{f:?}");
        // The next object goes to the survivor only.
        assert_eq!(fan.live().len(), 1);
        assert_eq!(feed(&fan, &data, true).await.unwrap(), 40);
        assert_eq!(b.parts.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_stream_without_end_fails_everywhere_and_blames_no_storage() {
        let (a, b) = (rec(4, None), rec(3, None));
        let fan = Fanout::new(vec![("a".into(), a), ("b".into(), b)]);
        assert!(feed(&fan, &[1u8; 10], false).await.is_err());
        assert!(fan.failures().is_empty());
        let (c, d) = (rec(4, Some(0)), rec(4, Some(0)));
        let all = Fanout::new(vec![("c".into(), c), ("d".into(), d)]);
        let e = feed(&all, &[1u8; 10], true).await.unwrap_err();
        assert!(
            e.message().contains("every storage failed"),
            "{}",
            e.message()
        );
    }
}
