//! A job's several storages read as one (`[[storage]]`): the catalog is each storage's
//! catalog merged (a snapshot counts where its manifest is its own, and the entry says
//! where), reads take an object from the first storage that holds a good copy, and a copy
//! that is missing, unreadable or does not match its manifest's size and SHA-256 is marked
//! bad so that the next attempt reads it from another storage. Writes of objects beside a
//! snapshot (drill results, pins) go to every storage that holds the snapshot. A job with
//! one storage never sees this type: it gets the storage itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::Digest;
use tokio::io::{AsyncRead, ReadBuf};

use super::{Entry, MANIFEST};
use crate::config::JobPlan;
use crate::error::{Error, Result};
use crate::storage::{ChunkRx, ObjectInfo, Reader, Storage, VersionInfo};

type Members = Vec<(String, Arc<dyn Storage>)>;

/// See the module comment.
pub struct Replicas {
    members: Members,
    /// Only snapshots on this storage count (`--storage NAME`); it is also read first.
    only: Option<String>,
    expect: Mutex<HashMap<String, (u64, String)>>,
    /// (storage, key) pairs found missing, unreadable or damaged, with the reason.
    bad: Arc<Mutex<BTreeMap<(String, String), String>>>,
    /// Storages that could not be read at all, with the reason.
    down: Mutex<BTreeMap<String, String>>,
}

/// The job's storages read as one: the storage itself when the job has one (and no
/// `prefer` narrows it), else [`Replicas`]. `prefer` names the storage to read first and
/// the only one whose snapshots count.
pub async fn open(plan: &JobPlan, prefer: Option<&str>) -> Result<Arc<dyn Storage>> {
    let mut members = crate::storage::open_all(&plan.storages).await?;
    if let Some(name) = prefer {
        let Some(i) = members.iter().position(|(n, _)| n == name) else {
            return Err(Error::config(format!(
                "--storage {name:?}: job {} has no storage of that name; valid: {}",
                plan.name,
                names(plan).join(", ")
            )));
        };
        let m = members.remove(i);
        members.insert(0, m);
    }
    if members.len() == 1 {
        return Ok(members.remove(0).1);
    }
    Ok(Arc::new(Replicas {
        members,
        only: prefer.map(str::to_string),
        expect: Mutex::new(HashMap::new()),
        bad: Arc::new(Mutex::new(BTreeMap::new())),
        down: Mutex::new(BTreeMap::new()),
    }))
}

/// The names of the job's storages, in the job file's order.
pub fn names(plan: &JobPlan) -> Vec<String> {
    plan.storages.iter().map(|s| s.name.clone()).collect()
}

/// `storage` as [`Replicas`], when it is.
pub fn of(storage: &dyn Storage) -> Option<&Replicas> {
    storage.as_any()?.downcast_ref::<Replicas>()
}

impl Replicas {
    /// Copies found bad so far: "KEY on STORAGE: why".
    pub fn bad_copies(&self) -> Vec<String> {
        self.bad
            .lock()
            .map(|b| {
                b.iter()
                    .map(|((s, k), why)| format!("{k} on storage {s}: {why}"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The storages that can be read, in reading order.
    pub fn members(&self) -> Vec<(String, Arc<dyn Storage>)> {
        self.up().cloned().collect()
    }

    /// Storages that could not be read, with the reason.
    pub fn down(&self) -> Vec<(String, String)> {
        self.down
            .lock()
            .map(|d| d.iter().map(|(a, b)| (a.clone(), b.clone())).collect())
            .unwrap_or_default()
    }

    fn mark_down(&self, name: &str, why: &str) {
        tracing::warn!("storage {name} cannot be read: {why}");
        if let Ok(mut d) = self.down.lock() {
            d.entry(name.to_string()).or_insert_with(|| why.to_string());
        }
    }

    fn is_down(&self, name: &str) -> bool {
        self.down
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }

    fn is_bad(&self, name: &str, key: &str) -> bool {
        self.bad
            .lock()
            .map(|b| b.contains_key(&(name.to_string(), key.to_string())))
            .unwrap_or(false)
    }

    fn up(&self) -> impl Iterator<Item = &(String, Arc<dyn Storage>)> {
        self.members.iter().filter(|(n, _)| !self.is_down(n))
    }

    fn primary(&self) -> Result<&Arc<dyn Storage>> {
        self.up().next().map(|(_, s)| s).ok_or_else(|| {
            Error::failed(format!("no storage can be read: {}", self.describe_down()))
        })
    }

    fn describe_down(&self) -> String {
        self.down()
            .into_iter()
            .map(|(n, w)| format!("{n}: {w}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Every storage's catalog merged, newest first: each snapshot once, from the first
    /// storage (in the job file's order) where it is the job's own; `storages` lists every
    /// storage where it is complete and its own. A storage that cannot be read is left
    /// out (and reported by `down`); all of them unreadable is an error.
    pub fn catalog_all<'a>(
        &'a self,
        plan: &'a JobPlan,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<Vec<Entry>>> + Send + 'a>> {
        Box::pin(self.catalog_all_inner(plan))
    }

    async fn catalog_all_inner(&self, plan: &JobPlan) -> Result<Vec<Entry>> {
        let mut merged: BTreeMap<String, Entry> = BTreeMap::new();
        let mut read_any = false;
        for (name, s) in &self.members {
            let entries = match super::catalog_all(s.as_ref(), plan).await {
                Ok(v) => v,
                Err(e) => {
                    self.mark_down(name, e.message());
                    continue;
                }
            };
            read_any = true;
            for mut e in entries {
                // Reads go through every storage: each object's versions are asked there.
                e.histories = None;
                if self.only.as_ref().is_some_and(|o| o != name) {
                    // Seen elsewhere, but only snapshots on the preferred storage count.
                    if let Some(m) = merged.get_mut(&e.id)
                        && e.foreign.is_none()
                        && m.foreign.is_none()
                    {
                        m.storages.push(name.clone());
                    }
                    continue;
                }
                match merged.get_mut(&e.id) {
                    Some(m) if m.foreign.is_some() && e.foreign.is_none() => {
                        let mut e = e;
                        e.storages = vec![name.clone()];
                        *m = e;
                    }
                    Some(m) => {
                        if e.foreign.is_none() && m.foreign.is_none() {
                            m.storages.push(name.clone());
                        }
                    }
                    None => {
                        let mut e = e;
                        e.storages = if e.foreign.is_none() {
                            vec![name.clone()]
                        } else {
                            Vec::new()
                        };
                        merged.insert(e.id.clone(), e);
                    }
                }
            }
        }
        if !read_any {
            return Err(Error::failed(format!(
                "no storage of job {} can be read: {}",
                plan.name,
                self.describe_down()
            )));
        }
        let mut out: Vec<Entry> = merged.into_values().collect();
        out.sort_by(|a, b| {
            (b.manifest.finished_at(), &b.id).cmp(&(a.manifest.finished_at(), &a.id))
        });
        Ok(out)
    }

    /// The storages to write `key` to: for an object beside a snapshot, those holding
    /// the snapshot's manifest; else every storage that can be read.
    async fn targets(&self, key: &str) -> Members {
        let mut parts = key.splitn(3, '/');
        let (job, id) = (parts.next(), parts.next());
        let manifest = match (job, id, parts.next()) {
            (Some(j), Some(i), Some(_)) if super::is_id(i) => {
                Some(super::object_key(j, i, MANIFEST))
            }
            _ => None,
        };
        let mut out = Vec::new();
        for (n, s) in self.up() {
            match &manifest {
                Some(m) => {
                    if matches!(s.head(m).await, Ok(Some(_))) {
                        out.push((n.clone(), s.clone()));
                    }
                }
                None => out.push((n.clone(), s.clone())),
            }
        }
        out
    }
}

/// A reader that checks what it passes against the manifest's size and SHA-256, and on
/// a mismatch or read error marks its copy bad.
struct Checked {
    inner: Reader,
    hasher: sha2::Sha256,
    n: u64,
    size: u64,
    sha256: String,
    storage: String,
    key: String,
    bad: Arc<Mutex<BTreeMap<(String, String), String>>>,
}

impl Checked {
    fn fail(&self, why: String) -> std::io::Error {
        tracing::warn!("{} on storage {}: {why}", self.key, self.storage);
        if let Ok(mut b) = self.bad.lock() {
            b.insert((self.storage.clone(), self.key.clone()), why.clone());
        }
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the copy of {} on storage {} is damaged: {why}",
                self.key, self.storage
            ),
        )
    }
}

impl AsyncRead for Checked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                let k = got.len() as u64;
                if k == 0 {
                    let sum = hex::encode(self.hasher.clone().finalize());
                    if self.n != self.size || sum != self.sha256 {
                        let why = format!(
                            "read {} bytes with SHA-256 {sum}, the manifest says {} bytes with {}",
                            self.n, self.size, self.sha256
                        );
                        return Poll::Ready(Err(self.fail(why)));
                    }
                    return Poll::Ready(Ok(()));
                }
                self.hasher.update(got);
                self.n += k;
                if self.n > self.size {
                    let why = format!("longer than the {} bytes the manifest says", self.size);
                    return Poll::Ready(Err(self.fail(why)));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                let why = format!("reading failed: {e}");
                Poll::Ready(Err(self.fail(why)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[async_trait]
impl Storage for Replicas {
    fn describe(&self) -> String {
        self.members
            .iter()
            .map(|(n, s)| format!("{n} ({})", s.describe()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn chunk_size(&self) -> usize {
        self.members[0].1.chunk_size()
    }

    fn expect(&self, key: &str, stored_bytes: u64, sha256: &str) {
        if let Ok(mut e) = self.expect.lock() {
            e.insert(key.to_string(), (stored_bytes, sha256.to_string()));
        }
    }

    fn as_any(&self) -> Option<&(dyn std::any::Any + Send + Sync)> {
        Some(self)
    }

    async fn put_stream(&self, key: &str, rx: ChunkRx) -> Result<u64> {
        let targets = self.targets(key).await;
        if targets.is_empty() {
            return Err(Error::failed(format!(
                "no storage to write {key} to (none holds its snapshot or none can be read)"
            )));
        }
        let names: Vec<String> = targets.iter().map(|(n, _)| n.clone()).collect();
        let fan = crate::storage::fanout::Fanout::new(targets);
        let n = fan.put_stream(key, rx).await?;
        for (name, why) in fan.failures() {
            tracing::warn!("{key} was not written to storage {name}: {why}");
        }
        tracing::debug!("{key} written to {}", names.join(", "));
        Ok(n)
    }

    async fn get(&self, key: &str) -> Result<Option<Reader>> {
        let want = self.expect.lock().ok().and_then(|e| e.get(key).cloned());
        let mut err = None;
        let mut bad_here = Vec::new();
        for (name, s) in self.up() {
            if self.is_bad(name, key) {
                bad_here.push(name.clone());
                continue;
            }
            match s.get(key).await {
                Ok(Some(r)) => {
                    let Some((size, sha256)) = want.clone() else {
                        return Ok(Some(r));
                    };
                    return Ok(Some(Box::new(Checked {
                        inner: r,
                        hasher: sha2::Sha256::new(),
                        n: 0,
                        size,
                        sha256,
                        storage: name.clone(),
                        key: key.to_string(),
                        bad: self.bad.clone(),
                    })));
                }
                Ok(None) => {
                    if want.is_some()
                        && let Ok(mut b) = self.bad.lock()
                    {
                        b.insert((name.clone(), key.to_string()), "missing".into());
                    }
                }
                Err(e) => {
                    if let Ok(mut b) = self.bad.lock() {
                        b.insert((name.clone(), key.to_string()), e.message().to_string());
                    }
                    err.get_or_insert(e);
                }
            }
        }
        if !bad_here.is_empty() {
            return Err(Error::failed(format!(
                "every copy of {key} is missing or damaged: {}",
                self.bad_copies()
                    .into_iter()
                    .filter(|c| c.starts_with(key))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        match err {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        let mut err = None;
        for (_, s) in self.up() {
            match s.head(key).await {
                Ok(Some(n)) => return Ok(Some(n)),
                Ok(None) => {}
                Err(e) => {
                    err.get_or_insert(e);
                }
            }
        }
        err.map_or(Ok(None), Err)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut read_any = false;
        for (name, s) in &self.members {
            if self.is_down(name) {
                continue;
            }
            match s.list(prefix).await {
                Ok(v) => {
                    read_any = true;
                    for o in v {
                        if seen.insert(o.key.clone()) {
                            out.push(o);
                        }
                    }
                }
                Err(e) => self.mark_down(name, e.message()),
            }
        }
        if !read_any {
            return Err(Error::failed(format!(
                "no storage can be listed: {}",
                self.describe_down()
            )));
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let mut err = None;
        for (_, s) in self.up() {
            if let Err(e) = s.delete(key).await {
                err.get_or_insert(e);
            }
        }
        err.map_or(Ok(()), Err)
    }

    async fn versions(&self, prefix: &str) -> Result<Vec<VersionInfo>> {
        self.primary()?.versions(prefix).await
    }

    async fn get_version(&self, key: &str, version_id: &str) -> Result<Option<Reader>> {
        self.primary()?.get_version(key, version_id).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        self.primary()?.put_if_absent(key, data).await
    }

    async fn locked_until(&self, key: &str) -> Result<Option<jiff::Timestamp>> {
        for (_, s) in self.up() {
            if let Ok(Some(_)) = s.head(key).await {
                return s.locked_until(key).await;
            }
        }
        Ok(None)
    }
}
