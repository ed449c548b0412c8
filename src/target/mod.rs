//! Restore targets beyond PostgreSQL (whose restore lives in `restore.rs`): volumes.

pub mod volume;
