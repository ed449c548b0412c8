//! PostgreSQL, in one place: connections and client programs, the dump and its archive
//! reader (row counts as the stream passes), restores (staged, streamed with parallel
//! loading of the biggest table, or progressive: tables loading side by side as they arrive), and the scratch cluster drills restore into.
//!
//! May import: snapshot, pipeline, storage, state, config, minisign, cleanup, text, error.

pub mod archive;
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
