//! The scratch cluster drills restore into: `initdb` + `pg_ctl` in a temporary directory,
//! as the `postgres` user when run as root, binaries of the snapshot's major version or
//! newer; stopped and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::{self as pg};
use crate::error::{Error, Result};

/// A throwaway PostgreSQL cluster; stopped and removed on drop, whatever happened.
pub(crate) struct ScratchCluster {
    pub(crate) dir: Option<tempfile::TempDir>,
    pub(crate) bindir: PathBuf,
    pub port: u16,
    pub major: u32,
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub(crate) fn as_server_user(program: &Path) -> std::process::Command {
    if is_root() {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        std::process::Command::new(program)
    }
}

impl ScratchCluster {
    /// Start a cluster with server binaries of major `min_major` or newer.
    pub(crate) async fn start(min_major: u32) -> Result<ScratchCluster> {
        let tools = pg::tools_for("initdb", min_major).map_err(|e| {
            Error::failed(format!(
                "cannot start a scratch cluster: {} (or set verify.scratch_url)",
                e.message()
            ))
        })?;
        tokio::task::spawn_blocking(move || Self::start_blocking(tools))
            .await
            .map_err(|e| Error::failed(format!("scratch cluster task: {e}")))?
    }

    fn start_blocking(tools: pg::Tools) -> Result<ScratchCluster> {
        let dir = tempfile::Builder::new()
            .prefix("backstop-verify-pg-")
            .tempdir()
            .map_err(|e| Error::failed(format!("cannot create a scratch directory: {e}")))?;
        if is_root() {
            let st = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status();
            if !st.is_ok_and(|s| s.success()) {
                return Err(Error::failed(
                    "cannot start a scratch cluster as root: no `postgres` user to own it (create one, or set verify.scratch_url)",
                ));
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| Error::failed(format!("no free port: {e}")))?;
        let mut c = ScratchCluster {
            dir: Some(dir),
            bindir: tools.dir.clone(),
            port,
            major: tools.major,
        };
        let path = c.path().to_path_buf();
        let run = |cmd: &mut std::process::Command, what: &str| -> Result<()> {
            let out = cmd
                .output()
                .map_err(|e| Error::failed(format!("cannot run {what}: {e}")))?;
            if !out.status.success() {
                return Err(Error::failed(format!(
                    "scratch cluster: {what} failed: {}",
                    crate::text::summarize(&String::from_utf8_lossy(&out.stderr))
                )));
            }
            Ok(())
        };
        run(
            as_server_user(&c.bindir.join("initdb"))
                .arg("-D")
                .arg(path.join("data"))
                .args(["-U", "postgres", "-A", "trust", "--no-sync"])
                .stdin(Stdio::null()),
            "initdb",
        )?;
        let opts = format!(
            "-p {port} -k {} -c listen_addresses='' -c unix_socket_permissions=0700 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            path.display()
        );
        run(
            as_server_user(&c.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(path.join("data"))
                .args(["-o", &opts, "-l"])
                .arg(path.join("server.log"))
                .args(["-w", "-t", "120", "start"])
                .stdin(Stdio::null()),
            "pg_ctl start",
        )
        .map_err(|e| {
            let log = std::fs::read_to_string(path.join("server.log")).unwrap_or_default();
            e.context(format!("server log: {}", crate::text::summarize(&log)))
        })?;
        c.port = port;
        Ok(c)
    }

    fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    /// The cluster listens on no TCP address, only on a socket in its own 0700 directory:
    /// a `trust` cluster that other local users cannot reach.
    pub(crate) fn url(&self, db: &str) -> String {
        let dir: String =
            url::form_urlencoded::byte_serialize(self.path().as_os_str().as_encoded_bytes())
                .collect();
        format!(
            "postgres://postgres@localhost:{}/{db}?host={dir}",
            self.port
        )
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        let data = self.path().join("data");
        if data.join("postmaster.pid").exists() {
            let _ = as_server_user(&self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdin(Stdio::null())
                .output();
        }
        // TempDir removes the directory.
        self.dir.take();
    }
}
