//! PostgreSQL, in one place: connections and client programs, the dump and its archive
//! reader (row counts as the stream passes), restores (staged, streamed with parallel
//! loading of the biggest table, or progressive: tables loading side by side as they arrive), and the scratch cluster drills restore into.
//!
//! May import: snapshot, pipeline, storage, state, config, minisign, cleanup, text, error.

pub mod archive;
mod binrows;
pub mod checks;
mod client;
pub mod dump;
pub mod load;
pub(crate) mod progressive;
pub(crate) mod recovery;
pub mod restore;
pub mod roles;
pub mod scratch;

pub(crate) use client::*;

/// Let a pipe to or from a client program hold 1 MiB instead of 64 KiB, so neither side
/// waits on the other at every few rows (the kernel may refuse; then it stays as it was).
pub(crate) fn widen_pipe(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: F_SETPIPE_SZ on a pipe this process owns; a failure changes nothing.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}
