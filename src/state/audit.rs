//! The audit log: one JSON line per action (backup, restore, ...) appended to a local file,
//! `$BACKSTOP_AUDIT_LOG`, else `audit.log` in the state directory. Appends use O_APPEND and
//! one write per line under an advisory lock, so concurrent runs never interleave.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use serde::Serialize;

pub(crate) fn log_path() -> PathBuf {
    crate::config::env::audit_log().unwrap_or_else(|| super::state_dir().join("audit.log"))
}

fn user() -> String {
    // SAFETY: getuid has no preconditions; getpwuid returns NULL or a pointer to static
    // storage that we copy from at once (single use, no concurrent getpw* in this process).
    let uid = unsafe { libc::getuid() };
    let from_passwd = unsafe {
        let pw = libc::getpwuid(uid);
        (!pw.is_null() && !(*pw).pw_name.is_null()).then(|| {
            std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned()
        })
    };
    from_passwd
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| format!("uid:{uid}"))
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    user: String,
    host: String,
    pid: u32,
    command: String,
    action: &'a str,
    job: Option<&'a str>,
    snapshot: Option<&'a str>,
    result: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    details: serde_json::Value,
}

/// One recorded action.
pub(crate) struct Record<'a> {
    pub action: &'a str,
    pub job: Option<&'a str>,
    pub snapshot: Option<&'a str>,
    pub outcome: std::result::Result<(), &'a crate::error::Error>,
    pub details: serde_json::Value,
}

/// Append a record. A log that cannot be written is reported on stderr but does not fail
/// the action it records (a backup must not fail because the log disk is full).
pub(crate) fn append(r: Record<'_>) {
    let (result, exit_code, error) = match r.outcome {
        Ok(()) => ("ok", None, None),
        Err(e) => ("error", Some(e.kind().exit_code()), Some(e.message())),
    };
    let line = Line {
        time: jiff::Timestamp::now().to_string(),
        user: user(),
        host: super::hostname(),
        pid: std::process::id(),
        command: crate::text::command_excerpt(
            &std::env::args().collect::<Vec<_>>().join(" "),
            2000,
        )
        .0,
        action: r.action,
        job: r.job,
        snapshot: r.snapshot,
        result,
        exit_code,
        error: error.map(crate::text::redact_secrets),
        details: crate::text::redact_json(r.details),
    };
    let path = log_path();
    if let Err(e) = write_line(&path, &line) {
        eprintln!(
            "backstop: warning: cannot append to the audit log {}: {e} (set BACKSTOP_AUDIT_LOG or BACKSTOP_STATE_DIR)",
            path.display()
        );
    }
}

fn write_line(path: &std::path::Path, line: &Line<'_>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        super::private_dir(dir)?;
    }
    let mut text = serde_json::to_vec(line).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let f = std::fs::OpenOptions::new()
        .mode(0o600)
        .create(true)
        .append(true)
        .open(path)?;
    let _lock = super::lock::FileLock::exclusive_blocking(&f);
    (&f).write_all(&text)?;
    f.sync_data()
}
