//! Cleanup work that must outlive the future that started it (aborting a multipart upload
//! when a backup is cancelled): spawned here, and awaited by `main` before the process
//! exits, with a time limit.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;

static PENDING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Run `fut` in the background; `wait` will give it time to finish before exit.
pub(crate) fn spawn(fut: impl Future<Output = ()> + Send + 'static) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let h = handle.spawn(fut);
    if let Ok(mut p) = PENDING.lock() {
        p.retain(|h| !h.is_finished());
        p.push(h);
    }
}

/// Wait for pending cleanups, at most `limit`.
pub(crate) async fn wait(limit: Duration) {
    let handles: Vec<_> = match PENDING.lock() {
        Ok(mut p) => p.drain(..).collect(),
        Err(_) => return,
    };
    let all = async {
        for h in handles {
            let _ = h.await;
        }
    };
    let _ = tokio::time::timeout(limit, all).await;
}
