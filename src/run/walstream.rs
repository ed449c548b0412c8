//! `wal-stream JOB`: WAL over a replication connection, for clusters where backstop cannot
//! be the archive_command. `pg_receivewal` (PostgreSQL's own client, through a replication
//! slot so the server keeps every segment until it is received) writes into a private
//! spool directory; each segment it completes (and each timeline history file) is pushed
//! like `wal-push` does, then removed from the spool. Runs until SIGTERM/SIGINT; a dropped
//! connection is retried.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{JobPlan, SourcePlan};
use crate::error::{Error, Result};
use crate::snapshot::wal;

/// The replication slot of a job: `backstop_` and the job name in [a-z0-9_].
pub(crate) fn slot_name(job: &str) -> String {
    let clean: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("backstop_{clean}").chars().take(63).collect()
}

/// Receive and store WAL until `stop` resolves.
pub(crate) async fn run(
    plan: &JobPlan,
    stop: impl std::future::Future<Output = ()>,
) -> Result<u64> {
    let SourcePlan::Cluster(src) = &plan.source else {
        return Err(Error::config(format!(
            "job {}: wal-stream is for postgres-cluster jobs ([source] type = \"postgres-cluster\")",
            plan.name
        )));
    };
    let conn = crate::postgres::Conn::new(src.url.clone(), src.password_file.clone());
    let info = crate::postgres::server_info(&conn)
        .await
        .map_err(|e| e.context(format!("cannot reach the source cluster {}", conn.url)))?;
    let tools = crate::postgres::tools_for("pg_receivewal", info.major())?;
    let bin = tools.bin("pg_receivewal");
    let spool = crate::state::state_dir()
        .join("wal-stream")
        .join(&plan.name);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&spool)
            .map_err(|e| Error::failed(format!("cannot create {}: {e}", spool.display())))?;
    }
    let slot = slot_name(&plan.name);
    let env = conn.env()?;
    // The slot first (kept if it exists): from now on the server keeps what we have not
    // received.
    let out = tokio::process::Command::new(&bin)
        .args([
            "--create-slot",
            "--if-not-exists",
            "--slot",
            &slot,
            "--dbname",
        ])
        .arg(conn.url.conninfo())
        .envs(env.clone())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Error::failed(format!("cannot start {}: {e}", bin.display())))?;
    if !out.status.success() {
        return Err(Error::failed(format!(
            "cannot create the replication slot {slot}: {} (the role needs REPLICATION, and pg_hba.conf a replication entry)",
            crate::text::summarize(&String::from_utf8_lossy(&out.stderr))
        )));
    }
    let signer = crate::snapshot::sign::signer(plan)?;
    tracing::info!(
        "job {}: streaming WAL from {} through slot {slot} into {}",
        plan.name,
        conn.url,
        plan.storages
            .iter()
            .map(|s| format!("{} ({})", s.name, s.url))
            .collect::<Vec<_>>()
            .join(", ")
    );
    tokio::pin!(stop);
    let mut stored = 0u64;
    let mut shipped = std::collections::HashSet::new();
    loop {
        let mut child = tokio::process::Command::new(&bin)
            .args(["--no-loop", "--slot", &slot, "--directory"])
            .arg(&spool)
            .arg("--dbname")
            .arg(conn.url.conninfo())
            .envs(env.clone())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::failed(format!("cannot start {}: {e}", bin.display())))?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let ended = loop {
            tokio::select! {
                _ = &mut stop => break true,
                st = child.wait() => {
                    tracing::warn!("job {}: pg_receivewal ended ({}); reconnecting in 5 s", plan.name,
                        st.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()));
                    break false;
                }
                _ = tick.tick() => {
                    stored += ship(plan, signer.as_ref(), &spool, &mut shipped).await;
                }
            }
        };
        if ended {
            // SIGTERM lets pg_receivewal flush what it has; then ship what is complete.
            if let Some(pid) = child.id() {
                // SAFETY: a plain signal to our own child.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            stored += ship(plan, signer.as_ref(), &spool, &mut shipped).await;
            return Ok(stored);
        }
        stored += ship(plan, signer.as_ref(), &spool, &mut shipped).await;
        tokio::select! {
            _ = &mut stop => return Ok(stored),
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Push every complete file in the spool (oldest first) to every storage, removing each
/// once all have it. A failure leaves the file for the next round (and says so).
async fn ship(
    plan: &JobPlan,
    signer: Option<&crate::minisign::SecretKey>,
    spool: &Path,
    shipped: &mut std::collections::HashSet<String>,
) -> u64 {
    let mut files: Vec<(String, PathBuf)> = match std::fs::read_dir(spool) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                // Complete segments and history files; never `.partial`.
                (wal::is_segment(&name) || name.ends_with(".history")).then(|| (name, e.path()))
            })
            .filter(|(n, _)| wal::timeline_of(n).is_some())
            .collect(),
        Err(_) => return 0,
    };
    files.sort();
    // The newest segment stays in the spool (pg_receivewal resumes after the newest
    // complete file it finds there); older ones go once stored.
    let newest = files
        .iter()
        .rev()
        .find(|(n, _)| wal::is_segment(n))
        .map(|(n, _)| n.clone());
    let mut n = 0;
    for (name, path) in files {
        if shipped.contains(&name) {
            if Some(&name) != newest.as_ref() {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("job {}: cannot read {}: {e}", plan.name, path.display());
                continue;
            }
        };
        match super::pitr::push_all(plan, signer, &name, data).await {
            Ok(_) => {
                if Some(&name) != newest.as_ref() {
                    let _ = std::fs::remove_file(&path);
                }
                shipped.insert(name.clone());
                n += 1;
                tracing::info!("job {}: archived {name} (streamed)", plan.name);
            }
            Err(e) => {
                tracing::error!("job {}: cannot archive {name}: {}", plan.name, e.message());
                crate::state::audit::append(crate::state::audit::Record {
                    action: "wal-stream",
                    job: Some(&plan.name),
                    snapshot: None,
                    outcome: Err(&e),
                    details: serde_json::json!({ "file": name }),
                });
                break;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    #[test]
    fn slot_names_are_what_postgres_accepts() {
        assert_eq!(super::slot_name("Main-DB.prod"), "backstop_main_db_prod");
        assert!(super::slot_name(&"x".repeat(100)).len() <= 63);
    }
}
