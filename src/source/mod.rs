//! Sources a snapshot is read from. Only PostgreSQL (`pg_dump`) for now.

pub mod postgres;
