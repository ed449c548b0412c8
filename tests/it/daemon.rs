//! The real `backstop daemon` binary: a schedule firing within seconds takes snapshots and
//! applies retention; SIGHUP with a broken file keeps the old plan; a missed run is caught
//! up at start; SIGTERM during a backup leaves nothing half-written and no open upload.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn start_daemon(sb: &Sandbox, extra: &[&str]) -> (Child, std::path::PathBuf) {
    let log = sb.path().join(format!("daemon-{}.log", extra.len()));
    let mut args = vec!["daemon"];
    args.extend_from_slice(extra);
    let child = sb
        .cmd(&args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

fn wait_for(what: &str, log: &std::path::Path, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; daemon log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sigterm(child: &mut Child, limit: Duration) -> i32 {
    // SAFETY: plain kill(2) of our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not stop within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn scheduled_backups(sb: &Sandbox) -> usize {
    sb.audit_lines()
        .iter()
        .filter(|l| {
            l["action"] == "backup" && l["details"]["trigger"] == "schedule" && l["result"] == "ok"
        })
        .count()
}

#[test]
fn daemon_runs_schedules_prunes_reloads_and_stops() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 1);
    sb.file_job("app", &pg.url("app"), "");
    // Every 4 seconds (the seconds form), keep one.
    sb.append_job(
        "app",
        "schedule = \"*/4 * * * * *\"",
        "[retention]\nkeep_last = 1\n",
    );
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let (mut daemon, log) = start_daemon(&sb, &["--catch-up", "1s", "--metrics-listen", &listen]);
    wait_for(
        "two scheduled backups",
        &log,
        Duration::from_secs(90),
        || scheduled_backups(&sb) >= 2,
    );
    // The daemon serves the metrics its runs leave behind.
    let body = {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&listen).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    };
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains("backstop_last_success_timestamp_seconds{job=\"app\"}"),
        "{body}"
    );
    wait_for("a prune", &log, Duration::from_secs(30), || {
        sb.audit_lines()
            .iter()
            .any(|l| l["action"] == "prune" && l["result"] == "ok")
    });
    let snaps = sb.snapshots("app");
    assert!(!snaps.is_empty() && snaps.len() <= 2, "{snaps:?}");
    assert!(snaps.iter().all(|(_, t)| t == "schedule"), "{snaps:?}");

    // A broken job file and SIGHUP: the old plan stays, and it keeps running.
    let good = std::fs::read_to_string(sb.jobs().join("app.toml")).unwrap();
    std::fs::write(
        sb.jobs().join("app.toml"),
        format!("{good}\nbogus_key = 1\n"),
    )
    .unwrap();
    // SAFETY: plain kill(2) of our child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGHUP) };
    let before = scheduled_backups(&sb);
    wait_for(
        "a backup after the reload",
        &log,
        Duration::from_secs(60),
        || scheduled_backups(&sb) > before,
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("keeps its previous plan") && text.contains("bogus_key"),
        "{text}"
    );
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "daemon died on a bad reload"
    );

    assert_eq!(sigterm(&mut daemon, Duration::from_secs(60)), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("daemon stopped"), "{text}");
}

#[test]
fn daemon_catches_up_a_run_missed_while_it_was_down() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 1);
    sb.file_job("app", &pg.url("app"), "");
    // Due every January 1st: the last one was missed (no snapshot since).
    sb.append_job("app", "schedule = \"0 0 1 1 *\"", "");
    let (mut daemon, log) = start_daemon(&sb, &["--catch-up", "400d"]);
    wait_for("the catch-up backup", &log, Duration::from_secs(60), || {
        scheduled_backups(&sb) >= 1
    });
    assert_eq!(sigterm(&mut daemon, Duration::from_secs(30)), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("was missed; running it now"), "{text}");
    // Started again with the snapshot in place: nothing to catch up.
    let (mut daemon, log) = start_daemon(&sb, &["--catch-up", "400d", "--grace", "1s"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sigterm(&mut daemon, Duration::from_secs(30)), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("was missed"), "{text}");
    assert_eq!(scheduled_backups(&sb), 1);
}

#[test]
fn sigterm_during_a_scheduled_backup_leaves_nothing_half_written() {
    let pg = Pg::start();
    let s3 = S3::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 120);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let check = rt.block_on(s3.storage("offsite", "backups", 5, false));
    sb.s3_job(
        "app",
        &pg.url("app"),
        &s3,
        "offsite",
        "part_size_mib = 5\nparts_in_flight = 1",
    );
    sb.append_job("app", "schedule = \"*/2 * * * * *\"", "");
    let (mut daemon, log) = start_daemon(&sb, &["--catch-up", "1s", "--grace", "1s"]);
    wait_for("a multipart upload", &log, Duration::from_secs(60), || {
        !rt.block_on(backstop::storage::s3::pending_uploads(&check))
            .unwrap()
            .is_empty()
    });
    assert_eq!(sigterm(&mut daemon, Duration::from_secs(90)), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("grace period over"), "{text}");
    assert!(
        rt.block_on(backstop::storage::s3::pending_uploads(&check))
            .unwrap()
            .is_empty(),
        "multipart upload left open"
    );
    let left = rt
        .block_on(backstop::storage::Storage::list(&check, ""))
        .unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(sb.snapshots("app").is_empty());
    assert!(
        // This sandbox's runs only: other tests run daemons of their own at the same time.
        crate::failures::pids_with(&[
            "backstop",
            &sb.jobs().display().to_string(),
            "backup",
            "app",
            "--trigger"
        ])
        .is_empty(),
        "a backup run outlived the daemon"
    );
}
