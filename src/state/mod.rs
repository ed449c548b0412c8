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

/// Create `dir` (and its parents) private to this user: 0700, whatever the umask. The state
/// directory holds table names, row counts and command lines.
pub(crate) fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let root = state_dir();
    let mut fix = vec![dir.to_path_buf()];
    if dir.starts_with(&root) {
        fix.push(root);
    }
    for d in fix {
        let m = std::fs::metadata(&d)?;
        if m.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// Write `bytes` to `path` atomically (temp file, rename), readable by this user only.
pub(crate) fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(d) = path.parent() {
        private_dir(d)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let res = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// This machine's identity: `/etc/machine-id` (or D-Bus's copy), else the host name. Two
/// machines may share a host name; they never share a machine id.
pub(crate) fn machine_id() -> String {
    for p in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
        if let Ok(s) = std::fs::read_to_string(p) {
            let s = s.trim();
            if !s.is_empty() && s.len() <= 64 {
                return s.to_string();
            }
        }
    }
    format!("host:{}", hostname())
}
