//! Prometheus text metrics from this host's job state: written atomically to
//! `--metrics-file` (node_exporter's textfile collector) after every run, and served by
//! `daemon --metrics-listen` on a loopback address. Labelled by job; no network access.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::state::jobstate::{JobState, Run};

static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Set where metrics go for this process (`--metrics-file` / `$BACKSTOP_METRICS_FILE`).
pub(crate) fn configure(path: Option<PathBuf>) {
    let _ = FILE.set(path);
}

/// After a run: rewrite the metrics file if one is configured (failures only logged).
pub(crate) fn after_run() {
    if let Some(Some(p)) = FILE.get()
        && let Err(e) = write_file(p)
    {
        tracing::warn!("cannot write the metrics file {}: {e}", p.display());
    }
}

/// Write every job's metrics to `path` atomically (temp file, then rename).
pub(crate) fn write_file(path: &Path) -> std::io::Result<()> {
    let text = render(&crate::state::jobstate::load_all());
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("backstop.prom");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn ts(r: &Option<Run>) -> Option<f64> {
    r.as_ref()
        .and_then(|r| r.time.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_millisecond() as f64 / 1000.0)
}

fn label(job: &str) -> String {
    job.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The text exposition format for `states`.
pub(crate) fn render(states: &[JobState]) -> String {
    type Get = fn(&JobState) -> Option<f64>;
    let families: [(&str, &str, Get); 13] = [
        (
            "backstop_last_success_timestamp_seconds",
            "Unix time of the job's last successful backup.",
            |s| ts(&s.backup_ok),
        ),
        (
            "backstop_last_failure_timestamp_seconds",
            "Unix time of the job's last failed backup.",
            |s| ts(&s.backup_failed),
        ),
        (
            "backstop_last_run_success",
            "1 when the job's last backup attempt succeeded, 0 when it failed.",
            |s| match (ts(&s.backup_ok), ts(&s.backup_failed)) {
                (None, None) => None,
                (ok, failed) => Some(if ok.unwrap_or(0.0) >= failed.unwrap_or(0.0) {
                    1.0
                } else {
                    0.0
                }),
            },
        ),
        (
            "backstop_last_duration_seconds",
            "Duration of the job's last successful backup.",
            |s| s.backup_ok.as_ref().map(|r| r.duration_ms as f64 / 1000.0),
        ),
        (
            "backstop_last_read_bytes",
            "Bytes read from the source by the last successful backup (before compression).",
            |s| s.backup_ok.as_ref().map(|r| r.plaintext_bytes as f64),
        ),
        (
            "backstop_last_stored_bytes",
            "Bytes stored by the last successful backup.",
            |s| s.backup_ok.as_ref().map(|r| r.stored_bytes as f64),
        ),
        (
            "backstop_last_verified_timestamp_seconds",
            "Unix time of the job's last passed restore drill.",
            |s| ts(&s.verify_ok),
        ),
        (
            "backstop_last_verify_failure_timestamp_seconds",
            "Unix time of the job's last failed restore drill.",
            |s| ts(&s.verify_failed),
        ),
        (
            "backstop_last_restore_duration_seconds",
            "Restore time measured by the last passed drill.",
            |s| s.verify_ok.as_ref().map(|r| r.duration_ms as f64 / 1000.0),
        ),
        (
            "backstop_snapshots",
            "Complete snapshots of the job in storage, when last counted.",
            |s| s.snapshots.map(|n| n as f64),
        ),
        (
            "backstop_wal_last_archived_timestamp_seconds",
            "Cluster jobs: Unix time the newest WAL was archived (RPO = now - this), when status last looked.",
            |s| {
                s.wal_archived
                    .as_deref()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .map(|t| t.as_millisecond() as f64 / 1000.0)
            },
        ),
        (
            "backstop_wal_gap",
            "Cluster jobs: 1 when the WAL archive has a gap recovery cannot pass.",
            |s| s.wal_gap.map(|g| if g { 1.0 } else { 0.0 }),
        ),
        (
            "backstop_anomaly",
            "1 when the newest snapshot raised the shrink alarm.",
            |s| Some(if s.anomalous { 1.0 } else { 0.0 }),
        ),
    ];
    let mut out = String::new();
    for (name, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for s in states {
            if let Some(v) = get(s) {
                let _ = writeln!(out, "{name}{{job=\"{}\"}} {v}", label(&s.job));
            }
        }
    }
    out
}

/// Serve `GET /metrics` on `addr` (loopback only) until the task is dropped.
pub(crate) async fn serve(addr: std::net::SocketAddr) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (mut sock, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("");
            let (status, body, ctype) = if path == "/metrics" || path.starts_with("/metrics?") {
                (
                    "200 OK",
                    render(&crate::state::jobstate::load_all()),
                    "text/plain; version=0.0.4",
                )
            } else {
                ("404 Not Found", "try /metrics\n".to_string(), "text/plain")
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        });
    }
}
