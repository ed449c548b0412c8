//! The locks a run of a job holds: this host's flock (`state::lock`), then the lease in
//! storage that covers every host (`run::lease`).

use crate::error::Result;
use crate::state::lock::{JobLock, job_lock};

/// Both locks a run of a job holds: this host's flock, then the lease in storage that
/// covers every host. Dropped together.
pub(crate) struct RunLock {
    pub lease: crate::run::lease::Lease,
    _local: JobLock,
}

/// Take job `job`'s local lock and its storage lease for `action`. Held elsewhere: exit
/// code 5 naming the holder; with `wait`, wait for both to be free instead.
pub(crate) async fn run_lock(
    job: &str,
    storage: std::sync::Arc<dyn crate::storage::Storage>,
    action: &str,
    wait: bool,
) -> Result<RunLock> {
    let ttl = crate::config::env::lease_ttl()?;
    let local = loop {
        match job_lock(job) {
            Ok(l) => break l,
            Err(e) if wait && e.kind() == crate::error::Kind::Locked => {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let lease = crate::run::lease::acquire(storage, job, action, ttl, wait).await?;
    Ok(RunLock {
        lease,
        _local: local,
    })
}

impl RunLock {
    /// Give both locks up now, the lease awaited (dropping does the same in the background).
    pub(crate) async fn release(self) {
        self.lease.release().await;
    }
}
