//! Point-in-time recovery of a restored base backup: the recovery settings written into the
//! data directory, the server started privately (no TCP, its socket in a private
//! directory, archiving off) until recovery ends and it promotes, the time reached read
//! from its log, then stopped cleanly and the settings taken out again.

use std::path::{Path, PathBuf};

use super::scratch::{as_server_user, is_root};
use crate::error::{Error, Result};

const BEGIN: &str = "# backstop recovery: begin (removed once recovery ends)";
const END: &str = "# backstop recovery: end";

/// How a recovery ended.
#[derive(Debug, Clone)]
pub(crate) struct Recovered {
    /// The commit time of the last transaction replayed, as the server logged it.
    pub reached: Option<String>,
    /// The WAL ended before the target time: recovered to the newest point instead.
    pub ended_before_target: bool,
}

/// Recover `data` (a base backup, extracted) with `restore_command`, to `time` (a
/// PostgreSQL timestamp with time zone) or to the end of the WAL, and stop it cleanly.
/// `work` is a private directory for the socket and the log.
pub(crate) fn recover(
    bindir: &Path,
    data: &Path,
    work: &Path,
    restore_command: &str,
    time: Option<&str>,
) -> Result<Recovered> {
    write_settings(data, restore_command, time)?;
    std::fs::write(data.join("recovery.signal"), b"")
        .map_err(|e| Error::failed(format!("cannot write recovery.signal: {e}")))?;
    let mut ended_before_target = false;
    let mut attempt = 0;
    let said = loop {
        let log = work.join(format!("recovery-{attempt}.log"));
        let outcome = match start(bindir, data, work, &log) {
            Ok(()) => wait_until_done(&log, data),
            Err(e) => {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                if said.contains(NOT_REACHED) {
                    Outcome::NotReached
                } else {
                    Outcome::Failed(e.message().to_string())
                }
            }
        };
        match outcome {
            Outcome::Done(said) => break said,
            Outcome::NotReached if time.is_some() && attempt == 0 => {
                // Past the end of the archive: the newest consistent point instead.
                ended_before_target = true;
                attempt += 1;
                write_settings(data, restore_command, None)?;
            }
            Outcome::NotReached => {
                return Err(Error::failed(
                    "recovery ended before it reached a consistent point: the WAL it needs is missing from the archive",
                ));
            }
            Outcome::Failed(why) => return Err(Error::failed(why)),
        }
    };
    let stopped = stop(bindir, data);
    remove_settings(data)?;
    stopped?;
    mark_history_ready(data);
    Ok(Recovered {
        reached: reached(&said),
        ended_before_target,
    })
}

const NOT_REACHED: &str = "recovery ended before configured recovery target was reached";

enum Outcome {
    /// Recovered and promoted: the log.
    Done(String),
    /// The WAL ended before the target (the server stopped).
    NotReached,
    Failed(String),
}

/// pg_ctl may return once the server is consistent, before recovery is over: watch the
/// log until the server is promoted and accepts connections, or until it gives up.
fn wait_until_done(log: &Path, data: &Path) -> Outcome {
    loop {
        let said = std::fs::read_to_string(log).unwrap_or_default();
        if said.contains("database system is ready to accept connections") {
            return Outcome::Done(said);
        }
        if said.contains(NOT_REACHED) {
            wait_for_exit(data);
            return Outcome::NotReached;
        }
        if said.contains("shutting down due to startup process failure")
            || said.contains("database system is shut down")
            || !data.join("postmaster.pid").exists()
        {
            wait_for_exit(data);
            let said = std::fs::read_to_string(log).unwrap_or_default();
            return Outcome::Failed(format!(
                "recovery failed: {}",
                crate::text::summarize(&said)
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn wait_for_exit(data: &Path) {
    for _ in 0..600 {
        if !data.join("postmaster.pid").exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The settings block, replacing any earlier one.
fn write_settings(data: &Path, restore_command: &str, time: Option<&str>) -> Result<()> {
    let mut text = String::new();
    text.push_str(BEGIN);
    text.push('\n');
    text.push_str(&format!(
        "restore_command = {}\n",
        conf_string(restore_command)
    ));
    if let Some(t) = time {
        text.push_str(&format!("recovery_target_time = {}\n", conf_string(t)));
        text.push_str("recovery_target_inclusive = on\n");
    }
    text.push_str("recovery_target_timeline = 'latest'\n");
    text.push_str("recovery_target_action = 'promote'\n");
    text.push_str(END);
    text.push('\n');
    let path = data.join("postgresql.auto.conf");
    let kept = strip_block(&std::fs::read_to_string(&path).unwrap_or_default());
    std::fs::write(&path, format!("{kept}{text}"))
        .map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))
}

fn remove_settings(data: &Path) -> Result<()> {
    let path = data.join("postgresql.auto.conf");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, strip_block(&text))
        .map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))?;
    let _ = std::fs::remove_file(data.join("recovery.signal"));
    Ok(())
}

fn strip_block(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line == BEGIN {
            inside = true;
        } else if line == END {
            inside = false;
        } else if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A postgresql.conf string literal.
fn conf_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn start(bindir: &Path, data: &Path, work: &Path, log: &Path) -> Result<()> {
    let opts = format!(
        "-c listen_addresses='' -k {} -c unix_socket_permissions=0700 -c archive_mode=off -c hot_standby=off{}",
        work.display(),
        // One syncfs instead of an fsync of every file of the extracted base backup.
        if major(bindir) >= 14 {
            " -c recovery_init_sync_method=syncfs"
        } else {
            ""
        }
    );
    let out = as_server_user(&bindir.join("pg_ctl"))
        .arg("-D")
        .arg(data)
        .arg("-l")
        .arg(log)
        .args(["-w", "-t", "86400", "-o", &opts, "start"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::failed(format!("cannot run pg_ctl: {e}")))?;
    if !out.status.success() {
        let said = std::fs::read_to_string(log).unwrap_or_default();
        return Err(Error::failed(format!(
            "the recovering server did not come up: {}",
            crate::text::summarize(&format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                said
            ))
        )));
    }
    Ok(())
}

/// The major version of the server binaries in `bindir` (from the Debian-style path, else 0).
fn major(bindir: &Path) -> u32 {
    bindir
        .components()
        .filter_map(|c| c.as_os_str().to_str()?.parse().ok())
        .next()
        .unwrap_or(0)
}

/// The new timeline's history file is written while archiving is off: mark it ready, so
/// that once this cluster runs with its archive_command (as the new primary) the history
/// goes to the archive first, and later recoveries can follow the new timeline.
fn mark_history_ready(data: &Path) {
    let wal = data.join("pg_wal");
    let Ok(rd) = std::fs::read_dir(&wal) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".history") {
            continue;
        }
        let status = wal.join("archive_status");
        if !status.join(format!("{name}.done")).exists() {
            let ready = status.join(format!("{name}.ready"));
            if std::fs::write(&ready, b"").is_ok() {
                let _ = give_to_server_user(&ready);
            }
        }
    }
}

fn stop(bindir: &Path, data: &Path) -> Result<()> {
    let out = as_server_user(&bindir.join("pg_ctl"))
        .arg("-D")
        .arg(data)
        .args(["-m", "fast", "-w", "-t", "600", "stop"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::failed(format!("cannot run pg_ctl: {e}")))?;
    if !out.status.success() {
        return Err(Error::failed(format!(
            "the recovered server did not stop cleanly: {}",
            crate::text::summarize(&String::from_utf8_lossy(&out.stderr))
        )));
    }
    Ok(())
}

/// The commit time of the last transaction recovery replayed, from the server's log
/// (never the time on a "recovery stopping before commit" line: that commit was not
/// applied). `None` when no transaction was replayed.
fn reached(log: &str) -> Option<String> {
    log.lines()
        .filter_map(|l| l.split_once("last completed transaction was at log time "))
        .map(|(_, t)| t.trim().to_string())
        .next_back()
}

/// A recovered data directory served privately (socket in `work`, no TCP, archiving off)
/// for a drill's checks; stopped on drop.
pub(crate) struct Served {
    bindir: PathBuf,
    data: PathBuf,
    pub url: String,
}

impl Served {
    pub(crate) fn start(bindir: &Path, data: &Path, work: &Path) -> Result<Served> {
        let log = work.join("drill.log");
        start(bindir, data, work, &log)?;
        let dir: String =
            url::form_urlencoded::byte_serialize(work.as_os_str().as_encoded_bytes()).collect();
        Ok(Served {
            bindir: bindir.to_path_buf(),
            data: data.to_path_buf(),
            url: format!("postgres://postgres@localhost:5432/postgres?host={dir}"),
        })
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = stop(&self.bindir, &self.data);
    }
}

/// A private directory the server user can use (socket, log, staged WAL).
pub(crate) fn work_dir(parent: Option<&Path>) -> Result<tempfile::TempDir> {
    let mut b = tempfile::Builder::new();
    b.prefix("backstop-recovery-");
    let dir = match parent {
        Some(p) => b.tempdir_in(p),
        None => b.tempdir(),
    }
    .map_err(|e| Error::failed(format!("cannot create a recovery directory: {e}")))?;
    give_to_server_user(dir.path())?;
    Ok(dir)
}

/// As root, hand `path` (recursively) to the `postgres` user, which runs the server.
pub(crate) fn give_to_server_user(path: &Path) -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    let st = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status();
    if !st.is_ok_and(|s| s.success()) {
        return Err(Error::failed(format!(
            "cannot hand {} to the postgres user (running as root, the server runs as postgres)",
            path.display()
        )));
    }
    Ok(())
}

/// The directory of the server binaries of major `major` or newer.
pub(crate) fn server_bindir(major: u32) -> Result<PathBuf> {
    let tools = super::tools_for("pg_ctl", major)?;
    Ok(tools
        .bin("pg_ctl")
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_block_comes_and_goes() {
        let conf = "# Do not edit\nwork_mem = '8MB'\n";
        let with = format!(
            "{}{BEGIN}\nrestore_command = 'x'\n{END}\n",
            strip_block(conf)
        );
        assert_eq!(strip_block(&with), conf);
        assert_eq!(conf_string("it's"), "'it''s'");
    }

    #[test]
    fn the_time_reached_is_read_from_the_log() {
        let log = "LOG:  starting point-in-time recovery to 2026-11-27 10:15:00+00\n\
                   LOG:  recovery stopping before commit of transaction 745, time 2026-11-27 10:15:01.5+00\n\
                   LOG:  last completed transaction was at log time 2026-11-27 10:14:59.9+00\n";
        assert_eq!(reached(log).unwrap(), "2026-11-27 10:14:59.9+00");
        assert_eq!(reached("nothing"), None);
        // The commit it stopped before was not applied: not the time reached.
        let stopped_only = "LOG:  recovery stopping before commit of transaction 745, time 2026-11-27 10:15:01.5+00\n";
        assert_eq!(reached(stopped_only), None);
    }
}
