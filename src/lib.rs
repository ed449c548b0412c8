//! backstop: backup snapshots of PostgreSQL databases streamed through zstd and age into
//! S3-compatible or file storage, and one-command restores. The library holds everything;
//! the binary is a thin shell around `commands::run`.

pub mod alarm;
pub mod audit;
pub mod backup;
pub mod cleanup;
pub mod cli;
pub mod commands;
pub mod daemon;
pub mod doctor;
pub mod error;
pub mod hook;
pub mod job;
pub mod jobstate;
pub mod lease;
pub mod lock;
pub mod metrics;
pub mod notify;
pub mod pg;
pub mod pgformat;
pub mod pipeline;
pub mod progress;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod rules;
pub mod schedule;
pub mod snapshot;
pub mod source;
pub mod split;
pub mod status;
pub mod storage;
pub mod systemd;

pub use error::{Error, Kind, Result};
pub mod target;
pub mod verify;
