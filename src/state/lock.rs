//! Per-job run locks (exit code 5 when another run holds one) and advisory file locks,
//! both with flock(2): released by the kernel when the process dies, so a crash never
//! leaves a stale lock behind.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::error::{Error, Result};

/// Holds an flock until dropped.
pub(crate) struct FileLock<'a> {
    fd: std::os::fd::RawFd,
    _file: std::marker::PhantomData<&'a File>,
}

impl<'a> FileLock<'a> {
    /// Wait for an exclusive lock on `f` (used for short critical sections).
    pub(crate) fn exclusive_blocking(f: &'a File) -> Option<FileLock<'a>> {
        let fd = f.as_raw_fd();
        // SAFETY: fd is a valid open descriptor borrowed for 'a.
        (unsafe { libc::flock(fd, libc::LOCK_EX) } == 0).then_some(FileLock {
            fd,
            _file: std::marker::PhantomData,
        })
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // SAFETY: the descriptor outlives this guard (borrowed for 'a).
        unsafe {
            libc::flock(self.fd, libc::LOCK_UN);
        }
    }
}

/// A held job lock; released on drop or process exit.
pub(crate) struct JobLock {
    _file: File,
}

/// Take job `job`'s lock without waiting; exit code 5 if another run holds it.
pub(crate) fn job_lock(job: &str) -> Result<JobLock> {
    let dir = crate::state::state_dir().join("locks");
    crate::state::private_dir(&dir).map_err(|e| {
        Error::failed(format!(
            "cannot create the lock directory {}: {e} (set BACKSTOP_STATE_DIR to a writable directory)",
            dir.display()
        ))
    })?;
    let path = dir.join(format!("{job}.lock"));
    let file = std::fs::OpenOptions::new()
        .mode(0o600)
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::failed(format!("cannot open the lock file {}: {e}", path.display())))?;
    // SAFETY: the descriptor is valid while `file` lives.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(Error::locked(format!(
            "another run of job {job} is in progress (it holds {}); try again when it has finished",
            path.display()
        )));
    }
    let _ = file.set_len(0);
    let _ = std::io::Write::write_all(&mut &file, format!("{}\n", std::process::id()).as_bytes());
    Ok(JobLock { _file: file })
}
