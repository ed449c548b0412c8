//! Point-in-time recovery against a real cluster whose `archive_command` is `backstop
//! wal-push`: rows written, a time noted, a table dropped; recovered to that time the data
//! is exactly what it was; past the end of the WAL it stops at the newest point and says so;
//! a gap in the archive is refused; pushing a WAL file twice is idempotent and other
//! content under a stored name is refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// As root the server runs as `postgres`: let that user reach the sandbox, the binary and
/// write the storage (the archive_command runs as the server's user).
fn open_to_server_user(sb: &Sandbox) {
    // The archive's folder too: backups (this user) and the archive (the server's user)
    // share the job's folder on file:// storage.
    std::fs::create_dir_all(sb.store().join("app/wal")).unwrap();
    std::fs::create_dir_all(sb.path().join("pgstate")).unwrap();
    if !is_root() {
        return;
    }
    for d in [sb.path().to_path_buf(), sb.jobs()] {
        Command::new("chmod").arg("755").arg(&d).status().unwrap();
    }
    for d in [sb.store(), sb.path().join("pgstate")] {
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&d)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

fn cluster_job(sb: &Sandbox, url: &str) {
    cluster_job_with(sb, url, "");
}

fn cluster_job_with(sb: &Sandbox, url: &str, extra: &str) {
    sb.write_job(
        "app",
        &format!(
            "{extra}\n[source]\ntype = \"postgres-cluster\"\nurl = \"{url}\"\n\n[storage]\nurl = \"file://{}\"\n\n[encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n",
            sb.store().display(),
            sb.recipient,
            sb.identity.display()
        ),
    );
}

/// Switch to a new WAL segment and wait until the server archived it.
fn archive_now(pg: &Pg) {
    let seg = pg.sql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    assert_eq!(seg.len(), 24, "{seg:?}");
    pg.sql("postgres", "SELECT pg_switch_wal()");
    let start = Instant::now();
    loop {
        let last = pg.sql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') || ' ' || failed_count FROM pg_stat_archiver",
        );
        if last
            .split(' ')
            .next()
            .and_then(|l| l.get(..24))
            .is_some_and(|l| l >= seg.as_str())
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "segment {seg} was not archived (archiver: {last}): {}",
            std::fs::read_to_string(pg.dir.path().join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Start a recovered data directory on its own port, run `sql`, stop it.
fn query_recovered(pg: &Pg, data: &Path, sql: &str) -> String {
    with_recovered(pg, data, false, |q| q(sql))
}

/// Start a recovered data directory on its own port (archiving as configured when
/// `archive`, else off), hand `f` a query function, stop it.
fn with_recovered(
    pg: &Pg,
    data: &Path,
    archive: bool,
    f: impl FnOnce(&dyn Fn(&str) -> String) -> String,
) -> String {
    let port = free_port();
    let sock = tempfile::Builder::new()
        .prefix("backstop-sock-")
        .tempdir()
        .unwrap();
    let run = |args: &[&str]| {
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(pg.bindir.join("pg_ctl"));
            c
        } else {
            Command::new(pg.bindir.join("pg_ctl"))
        };
        c.arg("-D").arg(data).args(args).output().unwrap()
    };
    if is_root() {
        Command::new("chown")
            .args(["postgres:postgres"])
            .arg(sock.path())
            .status()
            .unwrap();
    }
    let opts = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1{}",
        sock.path().display(),
        if archive { "" } else { " -c archive_mode=off" }
    );
    let log = sock.path().join("log");
    let out = run(&[
        "-o",
        &opts,
        "-l",
        log.to_str().unwrap(),
        "-w",
        "-t",
        "60",
        "start",
    ]);
    assert!(
        out.status.success(),
        "the recovered cluster does not start: {} {}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let q = |sql: &str| {
        let res = Command::new(pg.bindir.join("psql"))
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!("postgres://postgres@127.0.0.1:{port}/app"))
            .args(["-c", sql])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&res.stdout).trim(),
            String::from_utf8_lossy(&res.stderr).trim()
        )
    };
    let out = f(&q);
    let _ = run(&["-m", "fast", "-w", "stop"]);
    out
}

#[test]
fn archived_with_wal_push_and_recovered_to_the_second_before_the_drop() {
    let sb = Sandbox::new();
    open_to_server_user(&sb);
    let archive = format!(
        "BACKSTOP_STATE_DIR={} {} --jobs {} -q wal-push app %p",
        sb.path().join("pgstate").display(),
        env!("CARGO_BIN_EXE_backstop"),
        sb.jobs().display()
    );
    let pg = Pg::start_with_conf(&format!(
        "wal_level = replica\narchive_mode = on\narchive_command = '{archive}'\n"
    ));
    cluster_job(&sb, &pg.url("postgres"));
    pg.sql("postgres", "CREATE DATABASE app");
    pg.sql(
        "app",
        "CREATE TABLE bookings (id int PRIMARY KEY, who text); \
         INSERT INTO bookings SELECT g, 'guest ' || g FROM generate_series(1, 100) g",
    );
    expect_code(&sb.run(&["backup", "app"]), 0);
    let listed = stdout(&sb.run(&["--json", "list", "app"]));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    // Written after the base backup: only the WAL archive has these.
    pg.sql(
        "app",
        "INSERT INTO bookings SELECT g, 'guest ' || g FROM generate_series(101, 250) g",
    );
    archive_now(&pg);
    std::thread::sleep(Duration::from_millis(1200));
    let t = pg.sql(
        "app",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    );
    std::thread::sleep(Duration::from_millis(1200));
    // The mistake, and what came after it.
    pg.sql(
        "app",
        "DROP TABLE bookings; CREATE TABLE after_the_drop (x int)",
    );
    archive_now(&pg);

    // doctor: the archive_command stores the WAL.
    assert_eq!(doctor_wal(&sb), "ok");
    // status: the archive, its RPO and the window; list: the window.
    let out = sb.run(&["--json", "status", "app"]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let w = &st[0]["wal"];
    assert!(w["files"].as_u64().unwrap() >= 3, "{st}");
    assert!(w["rpo_seconds"].as_i64().unwrap() < 120, "{st}");
    assert!(w["gap"].is_null(), "{st}");
    assert!(
        w["recoverable_from"].is_string() && w["recoverable_until"].is_string(),
        "{st}"
    );
    assert_ne!(st[0]["health"], "FAILING", "{st}");
    let listed = stdout(&sb.run(&["list", "app"]));
    assert!(listed.contains("app: recoverable from "), "{listed}");

    let out_dir = out_dir();
    let to = out_dir.path().join("at-t");
    let out = sb.run(&[
        "--json",
        "restore",
        "app",
        "--time",
        &t,
        "--to",
        to.to_str().unwrap(),
    ]);
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["ended_before_target"],
        false,
        "{r} {} {:?} {}",
        String::from_utf8_lossy(&out.stderr),
        walk(&sb.store()),
        std::fs::read_to_string(pg.dir.path().join("server.log")).unwrap_or_default()
    );
    assert!(
        r["reached"].as_str().is_some_and(|s| s < t.as_str()),
        "{r} vs {t} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every booking written before T is back, the same; nothing after T is.
    assert_eq!(
        query_recovered(
            &pg,
            &to,
            "SELECT count(*), sum(id), md5(string_agg(who, ',' ORDER BY id)), to_regclass('after_the_drop') IS NULL FROM bookings"
        ),
        pg.sql(
            "postgres",
            "SELECT 250, sum(g), md5(string_agg('guest ' || g, ',' ORDER BY g)), true FROM generate_series(1, 250) g"
        )
    );

    // One table of the past into another server's existing database (here the same
    // server, database `pick`), and a whole database into a new one.
    pg.sql("postgres", "CREATE DATABASE pick");
    let out = sb.run(&[
        "restore",
        "app",
        "--time",
        &t,
        "--database",
        "app",
        "--table",
        "bookings",
        "--to",
        &pg.url("pick"),
    ]);
    expect_code(&out, 0);
    assert_eq!(
        pg.sql("pick", "SELECT count(*), sum(id) FROM bookings"),
        "250|31375"
    );
    let out = sb.run(&[
        "restore",
        "app",
        "--time",
        &t,
        "--database",
        "app",
        "--to",
        &pg.url("app_at_t"),
    ]);
    expect_code(&out, 0);
    assert_eq!(pg.sql("app_at_t", "SELECT count(*) FROM bookings"), "250");
    // Never over an existing database.
    expect_code(
        &sb.run(&[
            "restore",
            "app",
            "--time",
            &t,
            "--database",
            "app",
            "--to",
            &pg.url("pick"),
        ]),
        4,
    );

    // Past the end of the archive: the newest point, said so.
    let to2 = out_dir.path().join("newest");
    let out = sb.run(&[
        "--json",
        "restore",
        "app",
        "--time",
        "2099-01-01 00:00:00+00",
        "--to",
        to2.to_str().unwrap(),
    ]);
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["ended_before_target"],
        true,
        "{r} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        query_recovered(
            &pg,
            &to2,
            "SELECT to_regclass('bookings') IS NULL, to_regclass('after_the_drop') IS NOT NULL"
        ),
        "t|t"
    );
    // An occupied directory is refused and left alone.
    let out = sb.run(&["restore", "app", "--to", to2.to_str().unwrap()]);
    expect_code(&out, 4);
    assert!(to2.join("PG_VERSION").is_file());

    // A segment missing between stored ones: refused before anything starts.
    let markers: Vec<_> = walk(&sb.store().join("app/wal"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    let mut segs: Vec<_> = markers
        .iter()
        .filter(|p| p.file_stem().is_some_and(|s| s.len() == 24))
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "{segs:?}");
    std::fs::remove_file(segs[segs.len() - 2]).unwrap();
    let to3 = out_dir.path().join("gap");
    let out = sb.run(&["restore", "app", "--to", to3.to_str().unwrap()]);
    let err = expect_code(&out, 1);
    assert!(err.contains("gap"), "{err}");
    assert!(
        !to3.exists(),
        "a failed recovery leaves no directory behind"
    );
    // status says so, and why; so does list.
    let out = sb.run(&["--json", "status", "app"]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st[0]["health"], "FAILING", "{st}");
    assert!(st[0]["wal"]["gap"].is_string(), "{st}");
    assert!(st[0]["reasons"].to_string().contains("gap"), "{st}");
    assert!(stdout(&sb.run(&["list", "app"])).contains("GAP: segment"));

    // A new base backup; retention keeps only it: the old one goes, and with it the WAL
    // only the old one needed (the gap with it); the new one still recovers.
    pg.sql("app", "CREATE TABLE after_the_second (x int)");
    archive_now(&pg);
    expect_code(&sb.run(&["backup", "app"]), 0);
    archive_now(&pg);
    cluster_job_with(&sb, &pg.url("postgres"), "[retention]\nkeep_last = 1\n");
    let before: Vec<String> = segment_names(&sb);
    let out = sb.run(&["--json", "prune", "app", "--yes"]);
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let removed: Vec<String> = r[0]["wal_removed"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(!removed.is_empty(), "{r}");
    let after = segment_names(&sb);
    let newest_base_start = {
        let listed: serde_json::Value =
            serde_json::from_slice(&sb.run(&["--json", "list", "app"]).stdout).unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
        listed[0]["wal_start"].as_str().unwrap().to_string()
    };
    // Every segment removed was older than the kept base backup; none after it went.
    let (hi, lo) = newest_base_start.split_once('/').unwrap();
    let start_pos = format!(
        "{:08X}{:08X}",
        u64::from_str_radix(hi, 16).unwrap(),
        u64::from_str_radix(lo, 16).unwrap() >> 24
    );
    for n in &removed {
        assert!(
            n[8..] < start_pos[..],
            "{n} removed, base starts at {start_pos}"
        );
        assert!(!after.contains(n));
    }
    for n in before.iter().filter(|n| n[8..] >= start_pos[..]) {
        assert!(after.contains(n), "{n} was needed and removed");
    }
    let st: serde_json::Value =
        serde_json::from_slice(&sb.run(&["--json", "status", "app"]).stdout).unwrap();
    assert!(st[0]["wal"]["gap"].is_null(), "{st}");
    let to4 = out_dir.path().join("after-prune");
    expect_code(
        &sb.run(&["restore", "app", "--to", to4.to_str().unwrap()]),
        0,
    );
    assert_eq!(
        query_recovered(
            &pg,
            &to4,
            "SELECT to_regclass('after_the_second') IS NOT NULL"
        ),
        "t"
    );

    // The recovered cluster becomes the new primary (a new timeline) and keeps archiving
    // into the job: its history file and its segments arrive, and a later recovery
    // follows the new timeline to the rows written on it.
    let seg = with_recovered(&pg, &to4, true, |q| {
        assert_eq!(
            q("SELECT timeline_id > 1 FROM pg_control_checkpoint()"),
            "t"
        );
        q("CREATE TABLE on_the_new_timeline AS SELECT generate_series(1, 42) x");
        let seg = q("SELECT pg_walfile_name(pg_current_wal_lsn())");
        q("SELECT pg_switch_wal()");
        let start = Instant::now();
        while !segment_names(&sb).contains(&seg) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{seg} of the new timeline was not archived: {}",
                q("SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        seg
    });
    assert!(!seg.starts_with("00000001"), "{seg}");
    let histories = walk(&sb.store().join("app/wal"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".history.json"))
        .count();
    assert!(
        histories >= 1,
        "the new timeline's history file was not archived"
    );
    let to5 = out_dir.path().join("new-timeline");
    expect_code(
        &sb.run(&["restore", "app", "--to", to5.to_str().unwrap()]),
        0,
    );
    assert_eq!(
        query_recovered(&pg, &to5, "SELECT count(*) FROM on_the_new_timeline"),
        "42"
    );

    // In place, over the job's data_directory: refused while its postmaster runs, refused
    // without confirmation, then the old directory kept aside and the recovered one in
    // its name.
    let inplace = out_dir.path().join("inplace");
    std::fs::create_dir_all(&inplace).unwrap();
    std::fs::write(inplace.join("PG_VERSION"), "15\n").unwrap();
    std::fs::write(inplace.join("old-marker"), "old").unwrap();
    let text = std::fs::read_to_string(sb.jobs().join("app.toml"))
        .unwrap()
        .replace(
            "type = \"postgres-cluster\"",
            &format!(
                "type = \"postgres-cluster\"\ndata_directory = \"{}\"",
                inplace.display()
            ),
        );
    sb.write_job("app", &text);
    std::fs::write(
        inplace.join("postmaster.pid"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    let err = expect_code(&sb.run(&["restore", "app", "--yes"]), 4);
    assert!(err.contains("running"), "{err}");
    std::fs::remove_file(inplace.join("postmaster.pid")).unwrap();
    expect_code(&sb.run(&["restore", "app"]), 4);
    assert!(inplace.join("old-marker").is_file());
    let out = sb.run(&["--json", "restore", "app", "--yes"]);
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let aside = PathBuf::from(r["previous_kept_as"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(aside.join("old-marker")).unwrap(),
        "old"
    );
    assert!(!inplace.join("old-marker").exists());
    assert_eq!(
        query_recovered(&pg, &inplace, "SELECT count(*) FROM on_the_new_timeline"),
        "42"
    );
}

/// Poll `done` until it holds; fail after `secs` seconds with `why()`.
fn wait_until(secs: u64, mut done: impl FnMut() -> bool, why: impl Fn() -> String) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{}", why());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A directory for recovered data directories, reachable by the server's user.
fn out_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("backstop-pitr-")
        .tempdir()
        .unwrap();
    if is_root() {
        Command::new("chmod")
            .arg("755")
            .arg(d.path())
            .status()
            .unwrap();
    }
    d
}

/// The status of doctor's WAL check for job `app`.
fn doctor_wal(sb: &Sandbox) -> String {
    let out = sb.run(&["--json", "doctor", "app"]);
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "wal")
        .unwrap_or_else(|| panic!("no wal check: {checks}"))["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Replication slots of the job (`filter`: more SQL conditions).
fn slots(pg: &Pg, filter: &str) -> String {
    pg.sql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'backstop_app' {filter}"
        ),
    )
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// A child process that a failing test must not leave running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn segment_names(sb: &Sandbox) -> Vec<String> {
    walk(&sb.store().join("app/wal"))
        .into_iter()
        .filter_map(|p| {
            let f = p.file_name()?.to_str()?.to_string();
            let stem = f.strip_suffix(".json")?;
            (stem.len() == 24).then(|| stem.to_string())
        })
        .collect()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn pushing_a_wal_file_twice_is_idempotent_and_other_content_is_refused() {
    let sb = Sandbox::new();
    cluster_job(&sb, "postgres://backup@db.invalid:5432/postgres");
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join("000000010000000000000007");
    let content: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&seg, &content).unwrap();
    let push = |p: &Path| sb.run(&["wal-push", "app", p.to_str().unwrap()]);
    expect_code(&push(&seg), 0);
    expect_code(&push(&seg), 0);
    // Fetched back byte for byte.
    let back = dir.path().join("back");
    expect_code(
        &sb.run(&[
            "wal-fetch",
            "app",
            "000000010000000000000007",
            back.to_str().unwrap(),
        ]),
        0,
    );
    assert_eq!(std::fs::read(&back).unwrap(), content);
    // Other content under the same name: refused, the stored copy kept.
    std::fs::write(&seg, b"something else").unwrap();
    let err = expect_code(&push(&seg), 1);
    assert!(err.contains("different content"), "{err}");
    expect_code(
        &sb.run(&[
            "wal-fetch",
            "app",
            "000000010000000000000007",
            back.to_str().unwrap(),
        ]),
        0,
    );
    assert_eq!(std::fs::read(&back).unwrap(), content);
    // Never archived: exit 1, nothing written. A name that is not a WAL file: exit 2.
    let none = dir.path().join("none");
    expect_code(
        &sb.run(&[
            "wal-fetch",
            "app",
            "000000010000000000000008",
            none.to_str().unwrap(),
        ]),
        1,
    );
    assert!(!none.exists());
    let odd = dir.path().join("..%2fpasswd");
    std::fs::write(&odd, b"x").unwrap();
    expect_code(&push(&odd), 2);
    expect_code(
        &sb.run(&[
            "wal-fetch",
            "app",
            "../../etc/passwd",
            none.to_str().unwrap(),
        ]),
        2,
    );
    // A stored file whose bytes were changed is refused, never handed to PostgreSQL.
    let data: Vec<_> = walk(&sb.store().join("app/wal"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".zst.age"))
        .collect();
    let mut bytes = std::fs::read(&data[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&data[0], bytes).unwrap();
    let bad = dir.path().join("bad");
    let err = expect_code(
        &sb.run(&[
            "wal-fetch",
            "app",
            "000000010000000000000007",
            bad.to_str().unwrap(),
        ]),
        1,
    );
    assert!(err.contains("corrupt"), "{err}");
    assert!(!bad.exists());
}

#[test]
fn wal_stream_through_a_slot_archives_what_a_recovery_needs() {
    let sb = Sandbox::new();
    // No archive_command: the WAL arrives over a replication connection only.
    let pg = Pg::start();
    cluster_job(&sb, &pg.url("postgres"));
    pg.sql("postgres", "CREATE DATABASE app");
    pg.sql("app", "CREATE TABLE orders (id int PRIMARY KEY)");
    // The stream (and its slot) first, then the base backup: from its end on, every
    // segment arrives through the slot.
    let log = sb.path().join("wal-stream.log");
    let mut child = KillOnDrop(
        sb.cmd(&["wal-stream", "app"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    // doctor: nothing archives yet (no archive_command, wal_stream not set).
    assert_eq!(doctor_wal(&sb), "warn");
    // The slot keeps what the stream has not received.
    wait_until(
        30,
        || slots(&pg, "") == "1",
        || format!("no slot: {}", read(&log)),
    );
    expect_code(&sb.run(&["backup", "app"]), 0);
    pg.sql("app", "INSERT INTO orders SELECT generate_series(1, 500)");
    std::thread::sleep(Duration::from_millis(1200));
    let t = pg.sql(
        "app",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    );
    std::thread::sleep(Duration::from_millis(1200));
    pg.sql("app", "DELETE FROM orders WHERE id > 10");
    let seg = pg.sql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    pg.sql("postgres", "SELECT pg_switch_wal()");
    wait_until(
        60,
        || segment_names(&sb).contains(&seg),
        || format!("{seg} was not streamed: {}", read(&log)),
    );
    // SIGTERM: a clean stop.
    unsafe {
        libc::kill(child.0.id() as i32, libc::SIGTERM);
    }
    let st = child.0.wait().unwrap();
    assert!(
        st.success(),
        "{st}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let out_dir = out_dir();
    let to = out_dir.path().join("at-t");
    let out = sb.run(&[
        "--json",
        "restore",
        "app",
        "--time",
        &t,
        "--to",
        to.to_str().unwrap(),
    ]);
    expect_code(&out, 0);
    assert_eq!(
        query_recovered(&pg, &to, "SELECT count(*), sum(id) FROM orders"),
        "500|125250"
    );
    // A drill: the base backup recovered to a random point of the window, served
    // privately, checked (pg_amcheck and verify.checks), the result recorded.
    sb.write_job(
        "app",
        &format!(
            "[source]\ntype = \"postgres-cluster\"\nurl = \"{}\"\n\n[storage]\nurl = \"file://{}\"\n\n[encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n\n[verify]\nchecks = [\"SELECT count(*) = 2 FROM pg_database WHERE datname IN ('app', 'postgres')\"]\n",
            pg.url("postgres"),
            sb.store().display(),
            sb.recipient,
            sb.identity.display()
        ),
    );
    let out = sb.run(&["--json", "verify", "app"]);
    expect_code(&out, 0);
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = d["checks"].to_string();
    assert!(names.contains("verify.checks"), "{d}");
    let st: serde_json::Value =
        serde_json::from_slice(&sb.run(&["--json", "status", "app"]).stdout).unwrap();
    assert!(st[0]["last_verified"].is_object(), "{st}");
    // A check that fails fails the drill (exit 3).
    let text = std::fs::read_to_string(sb.jobs().join("app.toml"))
        .unwrap()
        .replace("= 2 FROM", "= 3 FROM");
    sb.write_job("app", &text);
    expect_code(&sb.run(&["verify", "app"]), 3);
}

#[test]
fn the_daemon_streams_wal_for_cluster_jobs_that_ask() {
    let sb = Sandbox::new();
    let pg = Pg::start();
    sb.write_job(
        "app",
        &format!(
            "[source]\ntype = \"postgres-cluster\"\nurl = \"{}\"\nwal_stream = true\n\n[storage]\nurl = \"file://{}\"\n\n[encryption]\nrecipients = [\"{}\"]\n",
            pg.url("postgres"),
            sb.store().display(),
            sb.recipient,
        ),
    );
    let log = sb.path().join("daemon.log");
    let mut daemon = KillOnDrop(
        sb.cmd(&["daemon"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until(
        30,
        || slots(&pg, "AND active") == "1",
        || format!("no active slot: {}", read(&log)),
    );
    pg.sql(
        "postgres",
        "CREATE TABLE t AS SELECT generate_series(1, 1000) x",
    );
    let seg = pg.sql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    pg.sql("postgres", "SELECT pg_switch_wal()");
    wait_until(
        60,
        || segment_names(&sb).contains(&seg),
        || format!("{seg} was not streamed: {}", read(&log)),
    );
    unsafe {
        libc::kill(daemon.0.id() as i32, libc::SIGTERM);
    }
    let st = daemon.0.wait().unwrap();
    assert!(
        st.success(),
        "{st}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The stream stopped with it: the slot is no longer in use.
    wait_until(
        20,
        || slots(&pg, "AND active") == "0",
        || "wal-stream still running".into(),
    );
}
