//! Sources a snapshot is read from: PostgreSQL (`pg_dump`) and volumes (directory trees as tar).

pub mod postgres;
pub mod volume;
