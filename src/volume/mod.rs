//! Volumes (directory trees): the tar source with per-file hashes, and the target that
//! extracts beside the live tree and swaps it in only when every file checks out.
//!
//! May import: snapshot, pipeline, storage, state, config, minisign, cleanup, text, error.

pub mod source;
pub mod target;
