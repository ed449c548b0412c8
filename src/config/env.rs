//! The `BACKSTOP_*` environment variables, each read in one place with its meaning and
//! default. Modules call these functions instead of reading the environment themselves.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

fn non_empty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// "Now", or `$BACKSTOP_NOW` (an RFC 3339 time) so tests can look from the future.
pub(crate) fn now() -> jiff::Timestamp {
    non_empty("BACKSTOP_NOW")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(jiff::Timestamp::now)
}

/// `$BACKSTOP_JOBS`: the jobs directory when no `--jobs` flag is given.
pub(crate) fn jobs_dir() -> Option<PathBuf> {
    non_empty("BACKSTOP_JOBS").map(PathBuf::from)
}

/// `$BACKSTOP_STATE_DIR`: the host's state directory.
pub(crate) fn state_dir() -> Option<PathBuf> {
    non_empty("BACKSTOP_STATE_DIR").map(PathBuf::from)
}

/// `$BACKSTOP_AUDIT_LOG`: the audit log's path.
pub(crate) fn audit_log() -> Option<PathBuf> {
    non_empty("BACKSTOP_AUDIT_LOG").map(PathBuf::from)
}

/// `$BACKSTOP_IDENTITY_FILE`: the age private key, when neither a flag nor the job names one.
pub(crate) fn identity_file() -> Option<PathBuf> {
    non_empty("BACKSTOP_IDENTITY_FILE").map(PathBuf::from)
}

/// `$BACKSTOP_PG_BINDIR`: a directory searched first for PostgreSQL client programs.
pub(crate) fn pg_bindir() -> Option<PathBuf> {
    non_empty("BACKSTOP_PG_BINDIR").map(PathBuf::from)
}

/// `$BACKSTOP_DAEMON_PLAN_<JOB>`: the job file text a daemon handed to its run.
pub(crate) fn daemon_plan(job: &str) -> Option<String> {
    std::env::var(daemon_plan_var(job)).ok()
}

pub(crate) fn daemon_plan_var(job: &str) -> String {
    format!("BACKSTOP_DAEMON_PLAN_{job}")
}

/// Default time a lease lives without renewal; renewed every third of it.
pub(crate) const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(300);

/// The lease TTL: `$BACKSTOP_LEASE_TTL` (a duration such as "90s" or "5m"), else 5 minutes.
pub(crate) fn lease_ttl() -> Result<Duration> {
    let Some(v) = non_empty("BACKSTOP_LEASE_TTL") else {
        return Ok(DEFAULT_LEASE_TTL);
    };
    let d = crate::config::parse_duration(&v)
        .map_err(|e| Error::config(format!("BACKSTOP_LEASE_TTL {e}")))?;
    if d < Duration::from_secs(3) {
        return Err(Error::config(format!(
            "BACKSTOP_LEASE_TTL = {v:?} is too short; use at least 3s"
        )));
    }
    Ok(d)
}

/// How often progress lines are logged off a terminal: `$BACKSTOP_PROGRESS_INTERVAL`
/// ("500ms", "10s", ...), else 10 s.
pub(crate) fn progress_interval() -> Duration {
    non_empty("BACKSTOP_PROGRESS_INTERVAL")
        .and_then(|v| match v.trim().strip_suffix("ms") {
            Some(ms) => ms.parse().ok().map(Duration::from_millis),
            None => crate::config::parse_duration(&v).ok(),
        })
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(10))
}

/// How a PostgreSQL restore reads the dump, when forced by `$BACKSTOP_RESTORE_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestoreMode {
    Stream,
    Progressive,
    Stage,
}

pub(crate) fn restore_mode() -> Option<RestoreMode> {
    match non_empty("BACKSTOP_RESTORE_MODE").as_deref() {
        Some("stream") => Some(RestoreMode::Stream),
        Some("progressive") => Some(RestoreMode::Progressive),
        Some("stage") => Some(RestoreMode::Stage),
        _ => None,
    }
}

/// Sessions loading table data in a restore: `$BACKSTOP_RESTORE_SESSIONS` (1 to 16), else
/// the cores, at most 4.
pub(crate) fn restore_sessions() -> usize {
    if let Some(n) = non_empty("BACKSTOP_RESTORE_SESSIONS").and_then(|v| v.parse::<usize>().ok()) {
        return n.clamp(1, 16);
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4)
}

/// Whether a PostgreSQL restore compresses TOASTed values with lz4 where the target server
/// would use pglz: `$BACKSTOP_RESTORE_TOAST_COMPRESSION` is `lz4` (the default) or `server`
/// (the server's own default, whatever it is).
pub(crate) fn restore_toast_lz4() -> Result<bool> {
    one_of_two("BACKSTOP_RESTORE_TOAST_COMPRESSION", "lz4", "server")
}

/// Whether a streamed restore sends the rows it deals out in binary where every column's
/// type allows: `$BACKSTOP_RESTORE_COPY_FORMAT` is `binary` (the default) or `text`.
pub(crate) fn restore_copy_binary() -> Result<bool> {
    one_of_two("BACKSTOP_RESTORE_COPY_FORMAT", "binary", "text")
}

/// A switch with two values: true when `$var` is unset or `yes`, false when it is `no`.
fn one_of_two(var: &str, yes: &str, no: &str) -> Result<bool> {
    match non_empty(var) {
        None => Ok(true),
        Some(v) if v == yes => Ok(true),
        Some(v) if v == no => Ok(false),
        Some(v) => Err(Error::config(format!(
            "{var} = {v:?} is not valid; use {yes:?} or {no:?}"
        ))),
    }
}

/// Tests only: with `$BACKSTOP_TEST_LO_FAULT` set, the sessions writing large objects in
/// a streamed restore write their first piece to an object that does not exist.
pub(crate) fn test_lo_fault() -> bool {
    non_empty("BACKSTOP_TEST_LO_FAULT").is_some()
}

/// Tests only: `$BACKSTOP_TEST_STREAM_DELAY_MS` milliseconds of pause per MiB a progressive
/// restore stages, to play a slow download on loopback.
pub(crate) fn test_stream_delay() -> Option<Duration> {
    non_empty("BACKSTOP_TEST_STREAM_DELAY_MS")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
}
