//! The postgres sources: run `pg_dump -Fc --compress=0` (or `pg_basebackup` as a tar) with its stdout streamed to the
//! pipeline and its stderr drained on another thread (so the child never blocks on a full
//! pipe), and `pg_dumpall --globals-only` for roles. A non-zero exit turns the stderr text
//! into the error.

use std::io::Read;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::postgres::{Conn, Tools};

/// Keep at most this much of a child's stderr for the error message.
const STDERR_KEEP: usize = 64 * 1024;

/// A running pg_dump (killed and reaped if dropped before it was waited for).
pub(crate) struct DumpProcess {
    child: Child,
    stderr: Option<JoinHandle<String>>,
    program: String,
    done: bool,
}

impl Drop for DumpProcess {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl DumpProcess {
    /// Start pg_dump of `conn`'s database in custom format, uncompressed (backstop
    /// compresses with zstd, which is faster and smaller than pg_dump's gzip).
    pub(crate) fn start(tools: &Tools, conn: &Conn) -> Result<(DumpProcess, ChildStdout)> {
        start_program(tools, conn, "pg_dump", &["--format=custom", "--compress=0"])
    }

    /// Start `pg_basebackup` of the whole cluster as one tar on stdout: `--wal-method=fetch`
    /// puts the WAL the backup needs to be consistent inside it (it restores without the
    /// archive), `--verbose` reports the WAL positions, the backup manifest goes into the
    /// tar, and the checkpoint is immediate.
    pub(crate) fn start_basebackup(
        tools: &Tools,
        conn: &Conn,
    ) -> Result<(DumpProcess, ChildStdout)> {
        start_program(
            tools,
            conn,
            "pg_basebackup",
            &[
                "--pgdata=-",
                "--format=tar",
                "--wal-method=fetch",
                "--checkpoint=fast",
                "--verbose",
            ],
        )
    }

    /// Wait for the exit and return what the program said on stderr; a failure carries
    /// its own words.
    pub(crate) fn wait_stderr(mut self) -> Result<String> {
        self.done = true;
        let status = self
            .child
            .wait()
            .map_err(|e| Error::failed(format!("waiting for {}: {e}", self.program)))?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if !status.success() {
            return Err(Error::failed(format!(
                "{} failed ({status}): {}",
                self.program,
                crate::text::summarize(&stderr)
            )));
        }
        Ok(stderr)
    }

    /// Stop the child (the upload failed): kill, reap, and return its stderr.
    pub(crate) fn kill(mut self) -> String {
        self.done = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

/// `program ARGS --no-password --dbname CONN` with stdout piped to the caller.
fn start_program(
    tools: &Tools,
    conn: &Conn,
    program: &str,
    args: &[&str],
) -> Result<(DumpProcess, ChildStdout)> {
    let bin = tools.bin(program);
    let mut cmd = Command::new(&bin);
    cmd.args(args)
        .args(["--no-password", "--dbname"])
        .arg(conn.url.conninfo())
        .envs(conn.env()?)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn(cmd, &bin.display().to_string())
}

fn spawn(mut cmd: Command, program: &str) -> Result<(DumpProcess, ChildStdout)> {
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::failed(format!("cannot start {program}: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::failed("no stdout pipe"))?;
    super::widen_pipe(&stdout);
    let stderr = child.stderr.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if kept.len() < STDERR_KEEP {
                            kept.extend_from_slice(&buf[..n]);
                        }
                    }
                }
            }
            String::from_utf8_lossy(&kept).into_owned()
        })
    });
    Ok((
        DumpProcess {
            child,
            stderr,
            program: program.to_string(),
            done: false,
        },
        stdout,
    ))
}

/// Roles and tablespaces (`pg_dumpall --globals-only`), as SQL text.
pub(crate) async fn dump_globals(tools: &Tools, conn: &Conn) -> Result<Vec<u8>> {
    let bin = tools.bin("pg_dumpall");
    let out = tokio::process::Command::new(&bin)
        .kill_on_drop(true)
        .args(["--globals-only", "--no-password", "--dbname"])
        .arg(conn.url.conninfo())
        .envs(conn.env()?)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::failed(format!("cannot start {}: {e}", bin.display())))?;
    if !out.status.success() {
        return Err(Error::failed(format!(
            "{} --globals-only failed ({}): {} (globals = true needs a superuser, or a role that can read pg_authid)",
            bin.display(),
            out.status,
            crate::text::summarize(&String::from_utf8_lossy(&out.stderr))
        )));
    }
    Ok(out.stdout)
}
