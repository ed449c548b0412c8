//! Job files: raw TOML -> checked plan, every section checked at load (ripgrep's
//! low-args -> high-args). Also what configures a run from outside a job file: durations,
//! schedules, PostgreSQL URLs, retention policies and the `BACKSTOP_*` environment.
//!
//! May import: minisign, error.

pub mod duration;
pub mod env;
mod job;
pub mod pgurl;
pub mod retention;
pub mod schedule;

pub(crate) use duration::parse_duration;
pub use job::*;
