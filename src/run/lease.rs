//! Leases in storage: one run per job across hosts. The local flock (`lock.rs`) covers one
//! host; the lease covers every host that writes to the same storage.
//!
//! A lease is a chain of small objects `JOB/lease/GENERATION` (zero-padded, so key order is
//! generation order), each created with a conditional put that succeeds only if the name
//! is free (S3 `If-None-Match: *`; a hard link on file://). The newest generation is the
//! state: held by `host`/`pid` until `expires`. Taking the lease and renewing it each
//! create the next generation, so two runs can never both win the same step: the loser's
//! conditional put fails. Releasing deletes the holder's generations. A holder that finds
//! its next generation taken has lost the lease (its expiry passed while it could not renew) and stops.
//! A holder that dies stops renewing; its lease expires after the TTL, or at once when the
//! holder ran on this host and its pid is gone.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::storage::Storage;

/// What a lease object says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Holder {
    pub host: String,
    pub pid: u32,
    /// When this holder took the lease.
    pub since: String,
    /// Until when it holds it without renewal.
    pub expires: String,
    /// What it is doing ("backup", "prune", ...).
    pub action: String,
    pub token: String,
    #[serde(default)]
    pub released: bool,
    /// The holder's machine id (`/etc/machine-id`): host names are not unique.
    #[serde(default)]
    pub machine: String,
    /// The TTL the holder renews within, in seconds.
    #[serde(default)]
    pub ttl_secs: u64,
}

impl Holder {
    fn expires_at(&self) -> jiff::Timestamp {
        self.expires.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }
    /// When the lease ends without renewal: the holder's word, but never later than the
    /// storage's own write time of this generation plus the TTL (a holder whose clock is
    /// off, or a forged `expires` in year 9999, cannot block the job for longer).
    fn effective_expiry(&self, written: Option<jiff::Timestamp>, ttl: Duration) -> jiff::Timestamp {
        let claimed = self.expires_at();
        let ttl = ttl
            .max(Duration::from_secs(self.ttl_secs))
            .min(Duration::from_secs(86_400));
        match written {
            Some(w) => claimed.min(w + jiff::SignedDuration::from_secs(ttl.as_secs() as i64)),
            None => claimed,
        }
    }
    fn alive_here(&self) -> bool {
        let here = if self.machine.is_empty() {
            self.host == crate::state::hostname()
        } else {
            self.machine == crate::state::machine_id()
        };
        if !here {
            return true;
        }
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    pub(crate) fn describe(&self) -> String {
        format!(
            "host {}, pid {}, {} since {} (its lease runs out if not renewed within {} s)",
            self.host,
            self.pid,
            self.action,
            self.since,
            if self.ttl_secs > 0 {
                self.ttl_secs
            } else {
                300
            }
        )
    }
}

fn key(job: &str, generation: u64) -> String {
    format!("{job}/lease/{generation:012}")
}

/// The newest generation, what it says and when the storage wrote it (`None` when the job
/// never had a lease).
async fn newest(
    storage: &dyn Storage,
    job: &str,
) -> Result<Option<(u64, Option<Holder>, Option<jiff::Timestamp>)>> {
    let prefix = format!("{job}/lease/");
    let objects = storage.list(&prefix).await?;
    let Some((generation, written)) = objects
        .iter()
        .filter_map(|o| {
            Some((
                o.key.strip_prefix(&prefix)?.parse::<u64>().ok()?,
                o.modified,
            ))
        })
        .max_by_key(|(g, _)| *g)
    else {
        return Ok(None);
    };
    let holder = storage
        .get_bytes_limited(&key(job, generation), 64 << 10)
        .await
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<Holder>(&b).ok());
    Ok(Some((generation, holder, written)))
}

/// How long contenders for a generation wait before they read each other's claims, on a
/// storage that ignores conditional writes: longer than its listings lag behind writes.
const SETTLE: Duration = Duration::from_millis(1500);

/// Whether `storage` honours conditional creation (`If-None-Match: *`): a second
/// conditional put of one name must fail. Some S3-compatible servers ignore the header.
async fn honours_conditional(storage: &dyn Storage, job: &str, token: &str) -> Result<bool> {
    let probe = format!("{job}/lease/probe-{token}");
    let first = storage
        .put_if_absent(&probe, Bytes::from_static(b"1"))
        .await?;
    let second = storage
        .put_if_absent(&probe, Bytes::from_static(b"2"))
        .await?;
    let _ = storage.delete(&probe).await;
    Ok(first && !second)
}

/// On a storage that ignores conditional writes: claim generation `generation` with an
/// object of our own, let the claims settle, and win only if ours is the least claim and
/// nobody wrote the generation meanwhile. Every contender reads the same claims, so exactly
/// one wins.
async fn win_claim(
    storage: &dyn Storage,
    job: &str,
    generation: u64,
    token: &str,
    settle: Duration,
) -> Result<bool> {
    let prefix = format!("{}.claim-", key(job, generation));
    let mine = format!("{prefix}{token}");
    storage.put_bytes(&mine, Bytes::from_static(b"")).await?;
    tokio::time::sleep(settle).await;
    let dir = format!("{job}/lease/");
    let claims: Vec<String> = storage
        .list(&dir)
        .await?
        .into_iter()
        .filter(|o| o.key.starts_with(&prefix))
        .map(|o| o.key)
        .collect();
    let taken = storage.head(&key(job, generation)).await?.is_some();
    let won = !taken && claims.iter().min() == Some(&mine);
    if !won {
        let _ = storage.delete(&mine).await;
    }
    Ok(won)
}

/// A held lease; renewed in the background until `release` or drop.
pub(crate) struct Lease {
    storage: Arc<dyn Storage>,
    job: String,
    state: Arc<tokio::sync::Mutex<(u64, Holder)>>,
    lost: watch::Receiver<Option<String>>,
    renewer: Option<tokio::task::JoinHandle<()>>,
    released: bool,
}

/// Take job `job`'s lease for `action`. Held by another live run: exit code 5 naming it,
/// or with `wait`, poll until it is free.
pub(crate) async fn acquire(
    storage: Arc<dyn Storage>,
    job: &str,
    action: &str,
    ttl: Duration,
    wait: bool,
) -> Result<Lease> {
    acquire_settling(storage, job, action, ttl, wait, SETTLE).await
}

async fn acquire_settling(
    storage: Arc<dyn Storage>,
    job: &str,
    action: &str,
    ttl: Duration,
    wait: bool,
    settle: Duration,
) -> Result<Lease> {
    let mut tok = [0u8; 8];
    getrandom::fill(&mut tok).map_err(|e| Error::failed(format!("random: {e}")))?;
    let token = hex::encode(tok);
    let since = jiff::Timestamp::now();
    let mut announced = false;
    let conditional = honours_conditional(storage.as_ref(), job, &token).await?;
    if !conditional {
        tracing::debug!(
            "{} ignores conditional writes: the lease is taken by settled claims",
            storage.describe()
        );
    }
    loop {
        let now = jiff::Timestamp::now();
        let current = newest(storage.as_ref(), job).await?;
        let next_gen = current.as_ref().map(|(g, _, _)| g + 1).unwrap_or(1);
        if let Some((_, Some(h), written)) = &current
            && !h.released
            && h.effective_expiry(*written, ttl) > now
        {
            if !h.alive_here() {
                tracing::warn!(
                    "job {job}: the lease holder (pid {} on this host) is gone; taking its lease over",
                    h.pid
                );
            } else if wait {
                if !announced {
                    tracing::info!("job {job}: waiting for the other run ({})", h.describe());
                    announced = true;
                }
                tokio::time::sleep(
                    (ttl / 6).clamp(Duration::from_millis(500), Duration::from_secs(10)),
                )
                .await;
                continue;
            } else {
                return Err(Error::locked(format!(
                    "job {job} is locked by another run: {}, in {}; wait for it with --wait, or if that run died, its lease expires on its own",
                    h.describe(),
                    storage.describe()
                )));
            }
        }
        let holder = Holder {
            host: crate::state::hostname(),
            pid: std::process::id(),
            since: since.to_string(),
            expires: expires_from(ttl),
            action: action.to_string(),
            token: token.clone(),
            released: false,
            machine: crate::state::machine_id(),
            ttl_secs: ttl.as_secs(),
        };
        if !conditional && !win_claim(storage.as_ref(), job, next_gen, &token, settle).await? {
            continue; // another run claimed this generation first: look again
        }
        if !put(storage.as_ref(), job, next_gen, &holder).await? {
            continue; // another run took this generation first: look again
        }
        // Read it back: a server that ignored the condition would show another token.
        let back = storage.get_bytes(&key(job, next_gen)).await?;
        let ours = back
            .and_then(|b| serde_json::from_slice::<Holder>(&b).ok())
            .is_some_and(|h| h.token == token);
        if !ours {
            continue;
        }
        prune_older(storage.as_ref(), job, next_gen).await;
        let state = Arc::new(tokio::sync::Mutex::new((next_gen, holder)));
        let (tx, rx) = watch::channel(None);
        let renewer = tokio::spawn(renew_loop(
            storage.clone(),
            job.to_string(),
            state.clone(),
            ttl,
            tx,
        ));
        return Ok(Lease {
            storage,
            job: job.to_string(),
            state,
            lost: rx,
            renewer: Some(renewer),
            released: false,
        });
    }
}

fn expires_from(ttl: Duration) -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(ttl.as_secs() as i64)).to_string()
}

async fn put(storage: &dyn Storage, job: &str, generation: u64, h: &Holder) -> Result<bool> {
    let body = serde_json::to_vec_pretty(h).map_err(|e| Error::failed(e.to_string()))?;
    storage
        .put_if_absent(&key(job, generation), Bytes::from(body))
        .await
}

/// Remove generations before `generation` (best effort: a locked bucket may keep them).
async fn prune_older(storage: &dyn Storage, job: &str, generation: u64) {
    let prefix = format!("{job}/lease/");
    if let Ok(objects) = storage.list(&prefix).await {
        for o in objects {
            let rest = o.key.strip_prefix(&prefix).unwrap_or("");
            let old = rest.parse::<u64>().is_ok_and(|g| g < generation);
            let claim = rest
                .split_once(".claim-")
                .and_then(|(g, _)| g.parse::<u64>().ok())
                .is_some_and(|g| g <= generation);
            if old || claim {
                let _ = storage.delete(&o.key).await;
            }
        }
    }
}

async fn renew_loop(
    storage: Arc<dyn Storage>,
    job: String,
    state: Arc<tokio::sync::Mutex<(u64, Holder)>>,
    ttl: Duration,
    lost: watch::Sender<Option<String>>,
) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        let mut st = state.lock().await;
        let (generation, holder) = &mut *st;
        let mut next = holder.clone();
        next.expires = expires_from(ttl);
        match put(storage.as_ref(), &job, *generation + 1, &next).await {
            Ok(true) => {
                *generation += 1;
                *holder = next;
                let g = *generation;
                drop(st);
                prune_older(storage.as_ref(), &job, g).await;
            }
            Ok(false) => {
                let _ = lost.send(Some(format!(
                    "job {job}: lost the storage lease: another run took it (this run could not renew it in time); stopping"
                )));
                return;
            }
            Err(e) => {
                if holder.expires_at() <= jiff::Timestamp::now() {
                    let _ = lost.send(Some(format!(
                        "job {job}: could not renew the storage lease before it expired: {}; stopping",
                        e.message()
                    )));
                    return;
                }
                tracing::warn!("job {job}: lease renewal failed, retrying: {}", e.message());
            }
        }
    }
}

impl Lease {
    /// Resolves when the lease is lost; the run must stop then.
    pub(crate) async fn lost(&self) -> Error {
        let mut rx = self.lost.clone();
        loop {
            if let Some(why) = rx.borrow().clone() {
                return Error::failed(why);
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Give the lease up now (dropping it does the same in the background).
    pub(crate) async fn release(mut self) {
        self.released = true;
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        release_now(self.storage.clone(), self.job.clone(), self.state.clone()).await;
    }
}

async fn release_now(
    storage: Arc<dyn Storage>,
    job: String,
    state: Arc<tokio::sync::Mutex<(u64, Holder)>>,
) {
    // Deleting our generation frees the lease: the next run finds no live holder and
    // creates a generation of its own (conditionally, so only one can).
    let st = state.lock().await;
    let generation = st.0;
    prune_older(storage.as_ref(), &job, generation).await;
    if let Err(e) = storage.delete(&key(&job, generation)).await {
        tracing::warn!(
            "job {job}: could not release the storage lease ({}); it expires on its own",
            e.message()
        );
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        if !self.released {
            // Cancelled (SIGTERM, an error): release in the background; exit waits for it.
            crate::cleanup::spawn(release_now(
                self.storage.clone(),
                self.job.clone(),
                self.state.clone(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::storage::Storage;
    use crate::storage::faulty::IgnoreConditional;
    use crate::storage::fs::FileStorage;

    /// Two hosts start the same job at the same instant against a storage that ignores
    /// conditional writes: in every round exactly one gets the lease, the other exit 5.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_winner_when_the_storage_ignores_conditional_writes() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(IgnoreConditional {
            inner: FileStorage::new(dir.path().to_path_buf()),
        });
        let ttl = Duration::from_secs(60);
        for round in 0..20 {
            let (a, b) = tokio::join!(
                super::acquire_settling(
                    storage.clone(),
                    "app",
                    "backup",
                    ttl,
                    false,
                    Duration::from_millis(150)
                ),
                super::acquire_settling(
                    storage.clone(),
                    "app",
                    "backup",
                    ttl,
                    false,
                    Duration::from_millis(150)
                ),
            );
            let won: Vec<_> = [a, b].into_iter().collect();
            let winners = won.iter().filter(|r| r.is_ok()).count();
            let why: Vec<String> = won
                .iter()
                .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
                .collect();
            assert_eq!(winners, 1, "round {round}: {winners} winners: {why:?}");
            for r in won {
                match r {
                    Ok(lease) => lease.release().await,
                    Err(e) => assert_eq!(e.kind(), crate::error::Kind::Locked, "{e}"),
                }
            }
        }
    }
}
