//! Integration tests, one binary, against a real PostgreSQL cluster, the real
//! pg_dump/pg_restore/age/zstd programs and a real S3 server process (moto) on loopback.

mod cli;
mod conformance;
mod corpus;
mod daemon;
mod doctor;
mod failures;
mod hook;
mod hostile;
mod lease;
mod observe;
mod page;
mod pitr;
mod prune;
mod roundtrip;
mod storages;
mod support;
mod systemd;
mod verify;
mod volume;
