//! backstop: backup snapshots of PostgreSQL databases and volumes streamed through zstd and
//! age into S3-compatible or file storage, and one-command restores. The library holds
//! everything; the binary is a thin shell around `cli::run`.
//!
//! Layers, top to bottom; a module imports only those below it (`scripts/check-layers.py`
//! checks this in CI): cli, ops, run, guard, postgres, volume, snapshot, pipeline, storage,
//! state, config, then the leaves minisign, cleanup, text, error.

pub mod cleanup;
pub mod cli;
pub mod config;
pub mod error;
pub mod guard;
pub mod minisign;
pub mod ops;
pub mod pipeline;
pub mod postgres;
pub mod run;
pub mod snapshot;
pub mod state;
pub mod storage;
pub mod text;
pub mod volume;

pub use error::{Error, Kind, Result};
