//! The host's state directory and everything in it: the audit log, each job's remembered
//! runs, local locks, shrink-alarm baselines, the metrics textfile, the daemon's copies of
//! job files. Storage stays the source of truth for what exists; this is what one host
//! remembers.
//!
//! May import: config, text, error.

pub mod audit;
pub mod baselines;
pub mod jobstate;
pub mod lock;
pub mod metrics;

use std::path::PathBuf;

/// The state directory: `$BACKSTOP_STATE_DIR`, else `/var/lib/backstop` for root, else
/// `$XDG_STATE_HOME/backstop`, else `~/.local/state/backstop`.
pub(crate) fn state_dir() -> PathBuf {
    if let Some(d) = crate::config::env::state_dir() {
        return d;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/backstop");
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("backstop");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/state/backstop"),
        None => PathBuf::from("/tmp/backstop-state"),
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; gethostname NUL-terminates within it or fails.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
