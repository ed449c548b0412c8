//! Snapshots in storage: ids, the manifest (the commit marker, written last), and the
//! catalog (complete snapshots of a job, newest first). Layout:
//! `PREFIX/JOB/ID/{dump.zst.age, globals.sql.zst.age, facts.json.zst.age, manifest.json}`.
//! A snapshot without a readable manifest does not exist for list, restore or prune.
//! The storage format has its home here, one file per object kind: the manifest and the
//! catalog (this file), facts, pins, drill results; retention and prune planning; reading
//! objects back.
//!
//! May import: pipeline, storage, state, config, minisign, cleanup, text, error.

pub mod drill;
pub mod facts;
pub mod pin;
pub mod prune;
pub mod read;
pub mod replicas;
pub mod retention;
pub mod sign;
pub mod wal;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::JobPlan;
use crate::error::{Error, Result};
use crate::storage::Storage;

pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const MANIFEST: &str = "manifest.json";
pub(crate) const DUMP_OBJECT: &str = "dump.zst.age";
/// A cluster job's base backup: `pg_basebackup`'s tar.
pub(crate) const BASE_OBJECT: &str = "base.tar.zst.age";
pub(crate) const GLOBALS_OBJECT: &str = "globals.sql.zst.age";
pub(crate) const FACTS_OBJECT: &str = "facts.json.zst.age";

/// A new id: UTC time first so ids sort by time, then random hex so two runs in the same
/// second never collide: `20261124T072247Z-3fa9c1`.
pub fn new_id(now: jiff::Timestamp) -> String {
    let mut rnd = [0u8; 3];
    let _ = getrandom::fill(&mut rnd);
    format!("{}-{}", now.strftime("%Y%m%dT%H%M%SZ"), hex::encode(rnd))
}

/// Whether `s` has the shape of a snapshot id (used to validate `--snapshot`).
pub fn is_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 23
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
        && b[17..].iter().all(u8::is_ascii_hexdigit)
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Schedule,
    Manual,
    Snapshot,
    Guard,
    Hook,
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Snapshot => "snapshot",
            Trigger::Guard => "guard",
            Trigger::Hook => "hook",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectEntry {
    /// File name within the snapshot directory.
    pub name: String,
    /// "dump" | "globals" | "facts"
    pub role: String,
    /// "pg_dump-custom" | "sql" | "json"
    pub format: String,
    pub plaintext_bytes: u64,
    pub stored_bytes: u64,
    pub sha256: String,
    /// Dumps: the length of the archive's header and table of contents, and their
    /// SHA-256 (of the plaintext). A restore that runs statements while the object still
    /// downloads proves them against these first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct SourceInfo {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_dump_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A base backup's WAL positions ("X/Y"), its timeline and the cluster's segment size:
    /// what a point-in-time recovery from it needs from the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_segment_size: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CompressionInfo {
    pub algorithm: String,
    pub level: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EncryptionInfo {
    pub algorithm: String,
    pub recipients: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format_version: u32,
    pub backstop_version: String,
    pub job: String,
    pub snapshot: String,
    pub host: String,
    pub source: SourceInfo,
    pub started: String,
    pub finished: String,
    pub duration_ms: u64,
    pub trigger: Trigger,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_until: Option<String>,
    pub compression: CompressionInfo,
    pub encryption: EncryptionInfo,
    pub plaintext_bytes: u64,
    pub stored_bytes: u64,
    pub objects: Vec<ObjectEntry>,
    /// Conditions worth a look, without content facts ("3 files changed during read").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The shrink alarm fired: much less data than the previous snapshot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anomalous: bool,
}

impl Manifest {
    pub(crate) fn object(&self, role: &str) -> Option<&ObjectEntry> {
        self.objects.iter().find(|o| o.role == role)
    }
    pub(crate) fn finished_at(&self) -> Option<jiff::Timestamp> {
        self.finished.parse().ok()
    }
}

pub(crate) fn snapshot_prefix(job: &str, id: &str) -> String {
    format!("{job}/{id}/")
}

pub(crate) fn object_key(job: &str, id: &str, name: &str) -> String {
    format!("{job}/{id}/{name}")
}

/// A complete snapshot as the catalog sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub manifest: Manifest,
    /// The trusted key that signed the manifest, when the job uses signatures.
    pub signed_by: Option<String>,
    /// Why the snapshot is not the job's own (unsigned, wrongly signed, dated in the
    /// future): such a snapshot is never newest and never restored without being asked.
    pub foreign: Option<String>,
    /// Signs that someone rewrote or hid its manifest after it was written (several
    /// versions, delete markers); the original version is what is used.
    pub tampered: Option<String>,
    /// The storages (by name) where it is complete and the job's own, when the job has
    /// several; empty for a job with one storage.
    pub storages: Vec<String>,
    /// The stored versions of the snapshot's objects, as the listing that found it saw
    /// them (one storage); `None` when they are to be asked for object by object.
    pub(crate) histories: Option<Arc<BTreeMap<String, History>>>,
}

/// The most a manifest may hold (a real one is a few KiB).
pub(crate) const MANIFEST_MAX: u64 = 1 << 20;

/// How far ahead of this host's clock a snapshot's time may be and still be trusted.
pub(crate) const ALLOWED_SKEW: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

/// Complete snapshots of the job that are its own (see [`catalog_all`]), newest first.
pub(crate) async fn catalog(storage: &dyn Storage, plan: &JobPlan) -> Result<Vec<Entry>> {
    Ok(catalog_all(storage, plan)
        .await?
        .into_iter()
        .filter(|e| e.foreign.is_none())
        .collect())
}

/// Complete snapshots of the job, newest first (by the manifest's time, not key names),
/// foreign ones included and marked. Incomplete ones (no manifest) are skipped; an
/// unreadable or oversized manifest is reported as a warning and skipped. A snapshot dated
/// later than now plus [`ALLOWED_SKEW`] (it would stay newest forever) or, for a job with
/// `[signing]`, one without a good signature by a trusted key, is foreign.
pub(crate) async fn catalog_all(storage: &dyn Storage, plan: &JobPlan) -> Result<Vec<Entry>> {
    if let Some(r) = replicas::of(storage) {
        // Several storages: each one's catalog, merged.
        return r.catalog_all(plan).await;
    }
    let prefix = format!("{}/", plan.name);
    // The listing and the versions, side by side (a round trip each).
    let end = snapshots_end(plan);
    let (objects, versions) = tokio::join!(
        storage.list_before(&prefix, &end),
        history_before(storage, &prefix, &end)
    );
    Ok(build(storage, plan, &objects?, &versions, &BTreeMap::new())
        .await?
        .0)
}

/// The manifests a catalog read, by key, as read (before the checks that do not read).
type Read = BTreeMap<String, Seen>;

/// At most this many manifests (and their signatures) are read at once.
const READ_AHEAD: usize = 16;

/// The catalog from a listing of the job's current objects and their stored versions
/// (empty: none known). Manifests in `known` whose key and signature show no second
/// version are not read again. Also gives what it read.
async fn build(
    storage: &dyn Storage,
    plan: &JobPlan,
    objects: &[crate::storage::ObjectInfo],
    versions: &BTreeMap<String, History>,
    known: &Read,
) -> Result<(Vec<Entry>, Read)> {
    use futures_util::StreamExt;
    let job = plan.name.as_str();
    let prefix = format!("{job}/");
    let horizon = crate::config::env::now() + ALLOWED_SKEW;
    // Every manifest key, also those hidden behind a delete marker.
    let mut keys: BTreeMap<String, u64> = objects
        .iter()
        .filter(|o| o.key.ends_with(&format!("/{MANIFEST}")))
        .map(|o| (o.key.clone(), o.size))
        .collect();
    // When the storage wrote each manifest, by its own clock.
    let written: BTreeMap<&str, jiff::Timestamp> = objects
        .iter()
        .filter_map(|o| Some((o.key.as_str(), o.modified?)))
        .collect();
    for (k, h) in versions {
        if k.ends_with(&format!("/{MANIFEST}"))
            && let Some(first) = h.original()
        {
            keys.entry(k.clone()).or_insert(first.size);
        }
    }
    // Size and storage time of every object, for the manifest cache's stamps.
    let listed: BTreeMap<&str, (u64, Option<jiff::Timestamp>)> = objects
        .iter()
        .map(|o| (o.key.as_str(), (o.size, o.modified)))
        .collect();
    let trust = plan
        .signing
        .as_ref()
        .map(|s| {
            s.trusted
                .iter()
                .map(|k| k.id_hex())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let mut todo = Vec::new();
    for (key, size) in &keys {
        let Some(rest) = key.strip_prefix(&prefix) else {
            continue;
        };
        let Some((id, name)) = rest.split_once('/') else {
            continue;
        };
        if name != MANIFEST || !is_id(id) {
            continue;
        }
        let hist = versions.get(key.as_str());
        let original = hist.and_then(|h| h.original());
        let size = original.map(|v| v.size).unwrap_or(*size);
        if size > MANIFEST_MAX {
            tracing::warn!(
                "{key}: a manifest of {size} bytes (at most {MANIFEST_MAX} are read); skipped"
            );
            continue;
        }
        let tampered = hist.and_then(|h| h.tampering());
        if let Some(t) = &tampered {
            tracing::warn!("job {job}: snapshot {id}: TAMPERING: {t}");
        }
        let sig_key = format!("{key}{}", crate::minisign::SUFFIX);
        let sig_version = versions
            .get(sig_key.as_str())
            .filter(|h| h.tampering().is_some())
            .and_then(|h| h.original())
            .map(|v| v.version_id.clone());
        // Written once: a manifest seen before under the same size and storage time (and
        // its signature likewise) is not read again (the daemon's status refreshes).
        let stamp = remembering()
            .then(|| {
                let sig = listed.get(sig_key.as_str());
                let w = written.get(key.as_str())?;
                Some(format!(
                    "{}|{key}|{size}|{w}|{:?}|{}",
                    storage.describe(),
                    sig,
                    trust
                ))
            })
            .flatten()
            .filter(|_| tampered.is_none());
        // Read by an earlier pass in its current version, which is the original when
        // neither it nor its signature has another version.
        let have = known
            .get(key.as_str())
            .filter(|_| tampered.is_none() && sig_version.is_none())
            .cloned()
            .or_else(|| {
                stamp
                    .as_ref()
                    .and_then(|st| seen().lock().ok()?.get(st).cloned())
            });
        todo.push(Candidate {
            key,
            id,
            original: original
                .filter(|_| tampered.is_some())
                .map(|v| v.version_id.clone()),
            tampered,
            sig_version,
            stamp,
            have,
        });
    }
    // The manifests not known yet, several at a time, in order.
    let reads: Vec<Result<Option<Seen>>> = futures_util::stream::iter(
        todo.iter()
            .map(|c| read_manifest(storage, plan, c))
            .collect::<Vec<_>>(),
    )
    .buffered(READ_AHEAD)
    .collect()
    .await;
    let mut out = Vec::new();
    let mut read = Read::new();
    for (c, got) in todo.into_iter().zip(reads) {
        let Some((m, signed_by, mut foreign)) = got? else {
            continue;
        };
        let (key, id) = (c.key, c.id);
        read.insert(
            key.to_string(),
            (m.clone(), signed_by.clone(), foreign.clone()),
        );
        if foreign.is_none()
            && let Some(other) = other_source(&m.source, &plan.source)
        {
            foreign = Some(other);
        }
        // A manifest cannot have finished after the storage wrote it.
        if let (Some(t), Some(w)) = (m.finished_at(), written.get(key))
            && t > *w + ALLOWED_SKEW
        {
            foreign = Some(format!(
                "dated {}, after the storage wrote it ({w})",
                m.finished
            ));
        }
        if m.finished_at().is_some_and(|t| t > horizon) || id_time(id).is_some_and(|t| t > horizon)
        {
            foreign = Some(format!(
                "dated {}, ahead of this host's clock by more than {ALLOWED_SKEW:#}",
                m.finished
            ));
        }
        if let Some(why) = &foreign {
            tracing::warn!(
                "job {job}: snapshot {id} is FOREIGN ({why}): not used as a snapshot of this job"
            );
        }
        // The versions of its objects, already listed: reading them needs no new listing.
        let dir = snapshot_prefix(job, id);
        let histories: BTreeMap<String, History> = versions
            .range(dir.clone()..)
            .take_while(|(k, _)| k.starts_with(&dir))
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect();
        out.push(Entry {
            id: id.to_string(),
            manifest: m,
            signed_by,
            foreign,
            tampered: c.tampered,
            storages: Vec::new(),
            histories: Some(Arc::new(histories)),
        });
    }
    out.sort_by(|a, b| (b.manifest.finished_at(), &b.id).cmp(&(a.manifest.finished_at(), &a.id)));
    Ok((out, read))
}

/// The catalog's first entries from a listing of current objects, as [`build`] would sort
/// them, reading manifests newest-written first, [`READ_AHEAD`] at a time, and stopping once
/// none left unread can sort before the newest of this job's own found so far: a manifest
/// that says it finished more than [`ALLOWED_SKEW`] after the storage wrote it is foreign.
/// The early pick of a restore then waits for a few manifests, not for all of them (the
/// full catalog, read meanwhile, still decides what is committed). Without a write time
/// for every manifest, every one is read.
async fn build_newest(
    storage: &dyn Storage,
    plan: &JobPlan,
    objects: &[crate::storage::ObjectInfo],
) -> Result<(Vec<Entry>, Read)> {
    let suffix = format!("/{MANIFEST}");
    let mut manifests: Vec<(&str, jiff::Timestamp)> = Vec::new();
    for o in objects.iter().filter(|o| o.key.ends_with(&suffix)) {
        match o.modified {
            Some(t) => manifests.push((&o.key[..o.key.len() - MANIFEST.len()], t)),
            None => return build(storage, plan, objects, &BTreeMap::new(), &Read::new()).await,
        }
    }
    manifests.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(a.0)));
    let (mut entries, mut known) = (Vec::new(), Read::new());
    let mut done = 0;
    while done < manifests.len() {
        let batch = &manifests[done..(done + READ_AHEAD).min(manifests.len())];
        done += batch.len();
        let dirs: std::collections::BTreeSet<&str> = batch.iter().map(|m| m.0).collect();
        let some: Vec<crate::storage::ObjectInfo> = objects
            .iter()
            .filter(|o| {
                o.key
                    .rfind('/')
                    .is_some_and(|i| dirs.contains(&o.key[..=i]))
            })
            .cloned()
            .collect();
        let (more, read) = build(storage, plan, &some, &BTreeMap::new(), &Read::new()).await?;
        entries.extend(more);
        known.extend(read);
        entries.sort_by(|a, b| {
            (b.manifest.finished_at(), &b.id).cmp(&(a.manifest.finished_at(), &a.id))
        });
        let best = entries
            .iter()
            .find(|e| e.foreign.is_none())
            .and_then(|e| e.manifest.finished_at());
        match (best, manifests.get(done)) {
            (Some(best), Some((_, next))) if *next + ALLOWED_SKEW < best => break,
            _ => {}
        }
    }
    Ok((entries, known))
}

/// A manifest to consider, and what is known of it before reading anything.
struct Candidate<'k> {
    key: &'k str,
    id: &'k str,
    tampered: Option<String>,
    /// The original version, read instead of the current one when tampered.
    original: Option<String>,
    /// Its signature's original version, when the signature was rewritten.
    sig_version: Option<String>,
    stamp: Option<String>,
    have: Option<Seen>,
}

/// Read one manifest (the version `c` names) and check its signature; `None` when it is
/// gone, unreadable or another job's (warned).
async fn read_manifest(
    storage: &dyn Storage,
    plan: &JobPlan,
    c: &Candidate<'_>,
) -> Result<Option<Seen>> {
    let job = plan.name.as_str();
    if let Some(h) = &c.have {
        return Ok(Some(h.clone()));
    }
    let key = c.key;
    let read = match &c.original {
        Some(v) => read_version(storage, key, v, MANIFEST_MAX).await,
        None => storage.get_bytes_limited(key, MANIFEST_MAX).await,
    };
    let bytes = match read {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::warn!("{key}: {}; skipped", e.message());
            return Ok(None);
        }
    };
    let m = match serde_json::from_slice::<Manifest>(&bytes) {
        Ok(m) if m.job == job && m.snapshot == c.id => m,
        Ok(_) => {
            tracing::warn!("{key}: manifest names another job or snapshot; skipped");
            return Ok(None);
        }
        Err(e) => {
            tracing::warn!("{key}: unreadable manifest ({e}); skipped");
            return Ok(None);
        }
    };
    let (signed_by, foreign) =
        match sign::check(storage, plan, key, &bytes, c.sig_version.as_deref()).await? {
            sign::Verdict::Unchecked => (None, None),
            sign::Verdict::Signed(k) => (Some(k), None),
            sign::Verdict::Foreign(why) => (None, Some(why)),
        };
    if let Some(st) = &c.stamp
        && let Ok(mut cache) = seen().lock()
    {
        if cache.len() >= SEEN_MAX {
            cache.clear();
        }
        cache.insert(st.clone(), (m.clone(), signed_by.clone(), foreign.clone()));
    }
    Ok(Some((m, signed_by, foreign)))
}

/// What a manifest read once gave: the manifest, the key that signed it, why its
/// signature makes it foreign.
type Seen = (Manifest, Option<String>, Option<String>);

/// The most manifests remembered (about 2 KiB each); the memory is dropped and refilled
/// beyond it.
const SEEN_MAX: usize = 50_000;

static REMEMBER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn seen() -> &'static std::sync::Mutex<std::collections::HashMap<String, Seen>> {
    static SEEN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, Seen>>> =
        std::sync::OnceLock::new();
    SEEN.get_or_init(Default::default)
}

fn remembering() -> bool {
    REMEMBER.load(std::sync::atomic::Ordering::Relaxed)
}

/// Remember manifests across catalog reads in this process (the daemon, whose status page
/// refreshes would otherwise read every manifest again each time). Each manifest is known
/// by its storage, key, size and storage write time, and its signature's: written once, a
/// manifest or signature put over it has another time, and is read and checked again.
pub(crate) fn remember_manifests() {
    REMEMBER.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The stored versions of one key, newest first (versioned buckets).
#[derive(Debug, Default, Clone)]
pub(crate) struct History(Vec<crate::storage::VersionInfo>);

impl History {
    /// The first version written (not a delete marker).
    pub(crate) fn original(&self) -> Option<&crate::storage::VersionInfo> {
        self.0.iter().rev().find(|v| !v.delete_marker)
    }

    /// What is wrong with a key that is written once: more than one version, or a delete
    /// marker hiding it.
    pub(crate) fn tampering(&self) -> Option<String> {
        let real = self.0.iter().filter(|v| !v.delete_marker).count();
        let markers = self.0.len() - real;
        (real > 1 || markers > 0).then(|| {
            format!(
                "{real} version(s) and {markers} delete marker(s) under a key that is written once: \
                 it was rewritten or hidden after the snapshot was taken; the original version is used"
            )
        })
    }
}

/// Where a job's snapshots end in key order: ids start with a digit (their year), and the
/// job's other keys (`wal/`, `lease/`, `doctor/`) with a letter, after `:`. The catalog
/// lists no further: a WAL archive of thousands of segments costs it nothing.
fn snapshots_end(plan: &JobPlan) -> String {
    format!("{}/:", plan.name)
}

/// Every key's versions below `prefix`; empty where the storage keeps none (or cannot say).
pub(crate) async fn history(storage: &dyn Storage, prefix: &str) -> BTreeMap<String, History> {
    versions_map(storage.versions(prefix).await, prefix)
}

/// [`history`] of the keys that sort before `end`.
async fn history_before(
    storage: &dyn Storage,
    prefix: &str,
    end: &str,
) -> BTreeMap<String, History> {
    versions_map(storage.versions_before(prefix, end).await, prefix)
}

fn versions_map(
    listed: Result<Vec<crate::storage::VersionInfo>>,
    prefix: &str,
) -> BTreeMap<String, History> {
    let mut out: BTreeMap<String, History> = BTreeMap::new();
    match listed {
        Ok(vs) => {
            for v in vs {
                out.entry(v.key.clone()).or_default().0.push(v);
            }
        }
        Err(e) => tracing::debug!("no version listing for {prefix}: {}", e.message()),
    }
    out
}

/// Read one version of a small object whole, bounded.
pub(crate) async fn read_version(
    storage: &dyn Storage,
    key: &str,
    version_id: &str,
    max: u64,
) -> Result<Option<Vec<u8>>> {
    use tokio::io::AsyncReadExt;
    let Some(r) = storage.get_version(key, version_id).await? else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    r.take(max + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| Error::failed(format!("reading {key} (version {version_id}): {e}")))?;
    if buf.len() as u64 > max {
        return Err(Error::failed(format!(
            "{key} (version {version_id}) is larger than {max} bytes; not read"
        )));
    }
    Ok(Some(buf))
}

/// Why a snapshot's recorded source is not the job's own source, if it is not: another
/// host's database under the same job name must never come back silently.
fn other_source(m: &SourceInfo, job: &crate::config::SourcePlan) -> Option<String> {
    use crate::config::SourcePlan;
    match job {
        SourcePlan::Postgres(pg) => {
            let (host, port, db) = (pg.url.host(), pg.url.port(), pg.url.dbname());
            let same = m.kind == "postgres"
                && m.host.as_deref().is_none_or(|h| h == host)
                && m.port.is_none_or(|p| p == port)
                && m.database.as_deref().is_none_or(|d| d == db);
            (!same).then(|| {
                format!(
                    "taken from {} {}:{}/{}, not this job's source {host}:{port}/{db}",
                    m.kind,
                    m.host.as_deref().unwrap_or("?"),
                    m.port.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                    m.database.as_deref().unwrap_or("?")
                )
            })
        }
        SourcePlan::Cluster(c) => {
            let (host, port) = (c.url.host(), c.url.port());
            let same = m.kind == "postgres-cluster"
                && m.host.as_deref().is_none_or(|h| h == host)
                && m.port.is_none_or(|p| p == port);
            (!same).then(|| {
                format!(
                    "taken from {} {}:{}, not this job's source cluster {host}:{port}",
                    m.kind,
                    m.host.as_deref().unwrap_or("?"),
                    m.port.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                )
            })
        }
        SourcePlan::Volume(v) => {
            let path = v.path.display().to_string();
            let same = m.kind == "volume" && m.path.as_deref().is_none_or(|p| p == path);
            (!same).then(|| {
                format!(
                    "taken from {} {}, not this job's source {path}",
                    m.kind,
                    m.path.as_deref().unwrap_or("?")
                )
            })
        }
    }
}

/// The time a snapshot id starts with (`20261124T072247Z-...`).
pub(crate) fn id_time(id: &str) -> Option<jiff::Timestamp> {
    let stamp = id.split('-').next()?;
    jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// The snapshot to restore: `wanted`, or the newest complete one of the job's own. A
/// foreign snapshot is taken only when named and `allow_foreign` (the caller confirms).
pub(crate) async fn pick(
    storage: &dyn Storage,
    plan: &JobPlan,
    wanted: Option<&str>,
    allow_foreign: bool,
) -> Result<Entry> {
    let job = plan.name.as_str();
    if let Some(id) = wanted
        && !is_id(id)
    {
        return Err(Error::config(format!(
            "--snapshot {id:?} is not a snapshot id; ids look like 20261124T072247Z-3fa9c1 (see `backstop list {job}`)"
        )));
    }
    let all = catalog_all(storage, plan).await?;
    choose(all, storage, plan, wanted, allow_foreign)
}

/// The snapshot `pick` takes from a catalog.
fn choose(
    all: Vec<Entry>,
    storage: &dyn Storage,
    plan: &JobPlan,
    wanted: Option<&str>,
    allow_foreign: bool,
) -> Result<Entry> {
    let job = plan.name.as_str();
    match wanted {
        Some(id) => {
            let e = all.into_iter().find(|e| e.id == id).ok_or_else(|| {
                Error::failed(format!(
                    "job {job} has no complete snapshot {id} in {} (see `backstop list {job}`)",
                    storage.describe()
                ))
            })?;
            match &e.foreign {
                Some(why) if !allow_foreign => Err(Error::refused(format!(
                    "snapshot {id} of job {job} is FOREIGN ({why}): it may have been forged by anyone who can write to {}. \
                     Nothing was restored; to restore it anyway pass --allow-foreign (and confirm)",
                    storage.describe()
                ))),
                _ => Ok(e),
            }
        }
        None => all
            .into_iter()
            .find(|e| e.foreign.is_none())
            .ok_or_else(|| {
                Error::failed(format!(
                    "job {job} has no complete snapshot of its own in {}; nothing to restore (see `backstop list {job}`)",
                    storage.describe()
                ))
            }),
    }
}

/// A spawned task that ends with its owner: aborted when dropped.
pub(crate) struct Owned<T>(tokio::task::JoinHandle<T>);

impl<T> Owned<T> {
    /// What the task gave.
    pub(crate) async fn finish(mut self) -> Result<T> {
        (&mut self.0)
            .await
            .map_err(|e| Error::failed(format!("a listing task failed: {e}")))
    }
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The check behind an early pick: it lists the stored versions and picks again, with
/// everything a full catalog sees.
pub(crate) type Recheck = Owned<Result<Entry>>;

/// Whether an early pick stands against the full catalog's: the same snapshot, with no
/// sign that any of its objects (manifest, signature, data) was rewritten or hidden.
pub(crate) fn early_pick_stands(early: &Entry, full: &Entry) -> bool {
    full.id == early.id
        && full.tampered.is_none()
        && full
            .histories
            .as_ref()
            .is_none_or(|h| h.values().all(|h| h.tampering().is_none()))
}

/// The newest complete snapshot of the job's own, picked from the listing of the current
/// objects alone, so that a restore can start without waiting for the stored versions
/// (on some servers a version listing reads the whole bucket). The versions are listed
/// meanwhile: the [`Recheck`] says which snapshot the full catalog picks, and the caller
/// commits nothing before it agrees ([`early_pick_stands`]). Its entry reads each object
/// in its current version; the SHA-256 in the manifest still proves every byte. With
/// several storages, or when the current listing holds none, the full pick, no check.
pub(crate) async fn pick_latest_early(
    storage: Arc<dyn Storage>,
    plan: &JobPlan,
) -> Result<(Entry, Option<Recheck>)> {
    if replicas::of(storage.as_ref()).is_some() {
        return Ok((pick(storage.as_ref(), plan, None, false).await?, None));
    }
    let prefix = format!("{}/", plan.name);
    let end = snapshots_end(plan);
    let versions = {
        let (st, prefix, end) = (storage.clone(), prefix.clone(), end.clone());
        tokio::spawn(async move { history_before(st.as_ref(), &prefix, &end).await })
    };
    let versions = Owned(versions);
    let objects = storage.list_before(&prefix, &end).await?;
    let (early, known) = build_newest(storage.as_ref(), plan, &objects).await?;
    let full = {
        let (st, plan) = (storage.clone(), plan.clone());
        async move {
            let versions = versions.finish().await?;
            let (all, _) = build(st.as_ref(), &plan, &objects, &versions, &known).await?;
            choose(all, st.as_ref(), &plan, None, false)
        }
    };
    match choose(early, storage.as_ref(), plan, None, false) {
        Ok(e) => Ok((e, Some(Owned(tokio::spawn(full))))),
        // None in sight: the versions may show some hidden.
        Err(_) => Ok((full.await?, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file backend, counting the objects read whole (an observer, not a fake).
    struct Counting {
        inner: crate::storage::fs::FileStorage,
        gets: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Storage for Counting {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn chunk_size(&self) -> usize {
            self.inner.chunk_size()
        }
        async fn put_stream(&self, key: &str, rx: crate::storage::ChunkRx) -> Result<u64> {
            self.inner.put_stream(key, rx).await
        }
        async fn get(&self, key: &str) -> Result<Option<crate::storage::Reader>> {
            self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.get(key).await
        }
        async fn head(&self, key: &str) -> Result<Option<u64>> {
            self.inner.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<crate::storage::ObjectInfo>> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key).await
        }
        async fn put_if_absent(&self, key: &str, data: bytes::Bytes) -> Result<bool> {
            self.inner.put_if_absent(key, data).await
        }
    }

    fn manifest(id: &str, reason: &str) -> Vec<u8> {
        manifest_finished(id, reason, "2026-01-01T00:00:01Z")
    }

    fn manifest_finished(id: &str, reason: &str, finished: &str) -> Vec<u8> {
        let m = Manifest {
            format_version: FORMAT_VERSION,
            backstop_version: "test".into(),
            job: "app".into(),
            snapshot: id.into(),
            host: "h".into(),
            source: SourceInfo {
                kind: "postgres".into(),
                ..Default::default()
            },
            started: "2026-01-01T00:00:00Z".into(),
            finished: finished.into(),
            duration_ms: 1000,
            trigger: Trigger::Manual,
            reason: Some(reason.into()),
            pinned_until: None,
            compression: CompressionInfo {
                algorithm: "zstd".into(),
                level: 3,
            },
            encryption: EncryptionInfo {
                algorithm: "age-x25519".into(),
                recipients: vec![],
            },
            plaintext_bytes: 1,
            stored_bytes: 1,
            objects: vec![],
            warnings: vec![],
            anomalous: false,
        };
        serde_json::to_vec(&m).unwrap()
    }

    /// A job `app` on a `file://` storage in a fresh directory.
    fn file_job() -> (tempfile::TempDir, JobPlan) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[source]\ntype = \"postgres\"\nurl = \"postgres://u@h:5432/app\"\n[storage]\nurl = \"file://{}\"\n\
             [encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n",
            dir.path().display()
        );
        let plan =
            crate::config::parse("app", std::path::Path::new("/x/app.toml"), &text, &|_| None)
                .unwrap();
        (dir, plan)
    }

    fn counting(dir: &tempfile::TempDir) -> Counting {
        Counting {
            inner: crate::storage::fs::FileStorage::new(dir.path().to_path_buf()),
            gets: Default::default(),
        }
    }

    #[tokio::test]
    async fn remembered_manifests_are_read_once_and_again_when_rewritten() {
        let (dir, plan) = file_job();
        let s = counting(&dir);
        let ids = ["20260101T000000Z-aaaaaa", "20260101T000001Z-bbbbbb"];
        for id in ids {
            s.put_bytes(
                &object_key("app", id, MANIFEST),
                manifest(id, "first").into(),
            )
            .await
            .unwrap();
        }
        let reads = || s.gets.load(std::sync::atomic::Ordering::SeqCst);
        remember_manifests();
        assert_eq!(catalog_all(&s, &plan).await.unwrap().len(), 2);
        let first = reads();
        assert!(first >= 2, "{first}");
        assert_eq!(catalog_all(&s, &plan).await.unwrap().len(), 2);
        assert_eq!(reads(), first, "nothing read again");
        // One manifest written over (another size and time): read and seen again.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let key = object_key("app", ids[1], MANIFEST);
        std::fs::write(
            dir.path().join(&key),
            manifest(ids[1], "rewritten by someone"),
        )
        .unwrap();
        let all = catalog_all(&s, &plan).await.unwrap();
        let e = all.iter().find(|e| e.id == ids[1]).unwrap();
        assert_eq!(e.manifest.reason.as_deref(), Some("rewritten by someone"));
        assert!(reads() > first);
    }

    /// A restore's early pick reads the manifests the storage wrote last, a batch at a time,
    /// and stops once no other can sort first: one batch of hourly snapshots, not all of
    /// them. It picks by when a snapshot finished, not by its name (a long backup that
    /// started first and finished last wins), passes over one dated ahead of its write,
    /// and the full catalog, which reads the rest, agrees with it.
    #[tokio::test]
    async fn the_early_pick_reads_the_newest_manifests_only_and_agrees_with_the_full_catalog() {
        let (dir, plan) = file_job();
        let s = Arc::new(counting(&dir));
        let base: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let hour = jiff::SignedDuration::from_hours(1);
        let put = |id: &str, finished: jiff::Timestamp, written: jiff::Timestamp| {
            let key = object_key("app", id, MANIFEST);
            let path = dir.path().join(&key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, manifest_finished(id, "r", &finished.to_string())).unwrap();
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(written.into()).unwrap();
        };
        // 40 hourly snapshots; the first one ran for 100 hours.
        let ids: Vec<String> = (0..40).map(|i| new_id(base + hour * i)).collect();
        for (i, id) in ids.iter().enumerate().skip(1) {
            let at = base + hour * i as i32;
            put(
                id,
                at + jiff::SignedDuration::from_secs(1),
                at + jiff::SignedDuration::from_secs(2),
            );
        }
        let long = base + hour * 100;
        put(&ids[0], long, long + jiff::SignedDuration::from_secs(1));
        // Written last, but saying it finished a day after its write: foreign.
        let forged = new_id(base + hour * 41);
        put(&forged, long + hour * 25, long + hour);
        let reads = || s.gets.load(std::sync::atomic::Ordering::SeqCst);
        let storage: Arc<dyn Storage> = s.clone();
        let (early, recheck) = pick_latest_early(storage, &plan).await.unwrap();
        assert_eq!(early.id, ids[0]);
        let first = reads();
        assert!(first > 0, "nothing read");
        // One batch of manifests (the job signs nothing: one read each), not 41 of them.
        assert!(first <= READ_AHEAD, "{first} reads for the early pick");
        let full = recheck.unwrap().finish().await.unwrap().unwrap();
        assert_eq!(full.id, ids[0]);
        assert!(early_pick_stands(&early, &full));
        assert!(reads() > first, "the full catalog reads the rest");
        assert_eq!(catalog_all(s.as_ref(), &plan).await.unwrap().len(), 41);
    }

    #[test]
    fn ids_sort_by_time_and_validate() {
        let a = new_id("2026-01-01T00:00:00Z".parse().unwrap());
        let b = new_id("2026-01-01T00:00:01Z".parse().unwrap());
        assert!(a < b, "{a} {b}");
        assert!(is_id(&a), "{a}");
        assert!(!is_id("20260101T000000Z-zzzzzz"));
        assert!(!is_id("../etc"));
    }
}
