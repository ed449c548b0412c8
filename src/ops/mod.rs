//! Operating backstop: the scheduler daemon, systemd units, status and health, doctor.
//!
//! May import: run, guard, postgres, volume, snapshot, pipeline, storage, state, config, minisign,
//! cleanup, text, error.

pub mod daemon;
pub mod doctor;
pub mod page;
pub mod status;
pub mod systemd;
pub mod web;
