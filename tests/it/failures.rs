//! Every failure rule of SPEC.md provoked for real: each checks that no snapshot appears,
//! nothing half-written is left, and the restore target is untouched.

use std::time::{Duration, Instant};

use crate::support::*;

fn assert_no_objects(sb: &Sandbox) {
    let mut found = Vec::new();
    if let Ok(rd) = std::fs::read_dir(sb.store()) {
        for e in rd.flatten() {
            for s in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                found.push(s.path());
            }
        }
    }
    assert!(found.is_empty(), "left behind: {found:?}");
}

fn assert_no_snapshots(sb: &Sandbox, job: &str) {
    let out = sb.run(&["--json", "list", job]);
    expect_code(&out, 0);
    assert_eq!(stdout(&out).trim(), "[]");
}

#[test]
fn pg_dump_failure_leaves_no_snapshot() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 4);
    // a backup role that may not read one table: pg_dump starts, streams, then fails
    pg.sql("app", "CREATE ROLE backup LOGIN; GRANT SELECT ON bulk TO backup; CREATE TABLE zz_private (x int); REVOKE ALL ON zz_private FROM PUBLIC;");
    sb.file_job(
        "app",
        &format!("postgres://backup@127.0.0.1:{}/app", pg.port),
        "",
    );
    let out = sb.run(&["backup", "app"]);
    let text = expect_code(&out, 1);
    assert!(
        text.contains("pg_dump") && text.contains("permission denied"),
        "{text}"
    );
    assert!(text.contains("no snapshot was written"), "{text}");
    assert_no_snapshots(&sb, "app");
    assert_no_objects(&sb);
    let audit = sb.audit_lines();
    assert_eq!(audit.last().unwrap()["result"], "error");
}

#[test]
fn unreachable_database_is_a_clear_error() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    sb.file_job("app", &pg.url("does_not_exist"), "");
    let text = expect_code(&sb.run(&["backup", "app"]), 1);
    assert!(text.contains("does_not_exist"), "{text}");
    assert_no_snapshots(&sb, "app");
}

/// pids of processes whose command line contains all of `needles`.
pub(crate) fn pids_with(needles: &[&str]) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if needles.iter().all(|n| cmd.contains(n)) {
            out.push(pid);
        }
    }
    out
}

/// A 120 MiB database, an S3 job with 5 MiB parts, and a backup started in the background
/// that has begun its multipart upload when this returns.
pub(crate) struct MidUpload {
    pub(crate) pg: Pg,
    pub(crate) s3: S3,
    pub(crate) sb: Sandbox,
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) check: backstop::storage::s3::S3Storage,
    pub(crate) child: std::process::Child,
}

pub(crate) fn backup_mid_upload() -> MidUpload {
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
    let child = sb
        .cmd(&["backup", "app"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while rt
        .block_on(backstop::storage::s3::pending_uploads(&check))
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "no multipart upload started");
        std::thread::sleep(Duration::from_millis(50));
    }
    MidUpload {
        pg,
        s3,
        sb,
        rt,
        check,
        child,
    }
}

#[test]
fn pg_dump_killed_mid_stream_leaves_no_snapshot_and_no_multipart_upload() {
    let MidUpload {
        pg,
        s3: _s3,
        sb,
        rt,
        check,
        child,
    } = backup_mid_upload();
    let pids = pids_with(&["pg_dump", &format!(":{}/app", pg.port)]);
    assert!(!pids.is_empty(), "pg_dump not found");
    for p in pids {
        // SAFETY: plain kill(2) of a child process we found.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    let out = child.wait_with_output().unwrap();
    let text = expect_code(&out, 1);
    assert!(text.contains("pg_dump"), "{text}");
    assert_no_snapshots(&sb, "app");
    assert!(
        rt.block_on(backstop::storage::s3::pending_uploads(&check))
            .unwrap()
            .is_empty(),
        "multipart upload not aborted"
    );
    let objs = rt
        .block_on(backstop::storage::Storage::list(&check, ""))
        .unwrap();
    assert!(objs.is_empty(), "{objs:?}");
}

#[test]
fn s3_server_stopped_mid_upload_fails_cleanly() {
    let MidUpload {
        pg,
        mut s3,
        sb,
        rt: _rt,
        check: _check,
        child,
    } = backup_mid_upload();
    s3.kill();
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    let text = expect_code(&out, 1);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "backup hung after the S3 server died"
    );
    assert!(text.contains("S3") || text.contains("s3://"), "{text}");
    assert!(text.contains("no snapshot was written"), "{text}");
    // pg_dump was stopped, not left running
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        pids_with(&["pg_dump", &format!(":{}/app", pg.port)]).is_empty(),
        "pg_dump left running"
    );
    assert_eq!(sb.audit_lines().last().unwrap()["result"], "error");
}

fn backed_up(pg: &Pg, sb: &Sandbox) -> std::path::PathBuf {
    load_awkward(pg, "app");
    sb.file_job("app", &pg.url("app"), "");
    expect_code(&sb.run(&["backup", "app"]), 0);
    std::fs::read_dir(sb.store().join("app"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

/// With `--yes` the new database is created while the target is inspected, before the
/// identity is read: a restore that then stops (no key) drops it again.
#[test]
fn a_restore_that_stops_before_loading_leaves_no_new_database() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    backed_up(&pg, &sb);
    let dbs = pg.databases();
    let missing = sb.path().join("no-such.key");
    let text = expect_code(
        &sb.run(&[
            "restore",
            "app",
            "--to",
            &pg.url("copy"),
            "--yes",
            "--identity",
            missing.to_str().unwrap(),
        ]),
        2,
    );
    assert!(text.contains("no-such.key"), "{text}");
    assert_eq!(pg.databases(), dbs);
}

#[test]
fn damaged_objects_and_wrong_keys_never_touch_the_target() {
    damaged_objects(None);
}

/// The same faults when the dump is restored while it downloads (into the new database,
/// dropped on any fault) instead of staged first.
#[test]
fn damaged_objects_never_touch_the_target_when_restoring_while_downloading() {
    damaged_objects(Some("stream"));
}

fn damaged_objects(mode: Option<&str>) {
    let pg = Pg::start();
    let mut sb = Sandbox::new();
    if let Some(m) = mode {
        sb.env.push(("BACKSTOP_RESTORE_MODE".into(), m.into()));
    }
    let snap = backed_up(&pg, &sb);
    let dump = snap.join("dump.zst.age");
    let good = std::fs::read(&dump).unwrap();
    let before = pg.fingerprint("app");
    let dbs = pg.databases();
    let copy = pg.url("copy");

    // one flipped byte in the middle
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&dump, &bad).unwrap();
    let text = expect_code(&sb.run(&["restore", "app", "--to", &copy]), 1);
    assert!(text.contains("corrupt"), "{text}");
    let text = expect_code(&sb.run(&["restore", "app", "--yes"]), 1);
    assert!(text.contains("corrupt"), "{text}");
    assert_eq!(pg.databases(), dbs);
    assert_eq!(pg.fingerprint("app"), before);

    // truncated
    std::fs::write(&dump, &good[..good.len() - 1000]).unwrap();
    let text = expect_code(&sb.run(&["restore", "app", "--to", &copy]), 1);
    assert!(text.contains("truncated"), "{text}");
    assert_eq!(pg.databases(), dbs);

    // wrong identity
    std::fs::write(&dump, &good).unwrap();
    let other = sb.path().join("other.key");
    use age::secrecy::ExposeSecret;
    std::fs::write(
        &other,
        age::x25519::Identity::generate()
            .to_string()
            .expose_secret(),
    )
    .unwrap();
    let text = expect_code(
        &sb.run(&[
            "restore",
            "app",
            "--to",
            &copy,
            "--identity",
            other.to_str().unwrap(),
        ]),
        1,
    );
    assert!(text.contains("wrong identity"), "{text}");
    assert_eq!(pg.databases(), dbs);

    // a missing object
    let facts = snap.join("facts.json.zst.age");
    std::fs::rename(&facts, sb.path().join("facts.bak")).unwrap();
    let text = expect_code(&sb.run(&["restore", "app", "--to", &copy]), 1);
    assert!(text.contains("missing"), "{text}");
    assert_eq!(pg.databases(), dbs);

    // and with everything back in place, it restores
    std::fs::rename(sb.path().join("facts.bak"), &facts).unwrap();
    expect_code(&sb.run(&["restore", "app", "--to", &copy]), 0);
    assert_eq!(pg.fingerprint("copy"), before);
}

/// A parallel COPY session that fails (here: a check constraint that only pg_restore's
/// own session passes) fails the restore: the new database is dropped, the target is not
/// created, no session is left behind.
#[test]
fn a_failing_parallel_load_session_fails_the_restore_and_leaves_nothing() {
    let pg = Pg::start();
    let mut sb = Sandbox::new();
    sb.env
        .push(("BACKSTOP_RESTORE_MODE".into(), "stream".into()));
    sb.env
        .push(("BACKSTOP_RESTORE_SESSIONS".into(), "2".into()));
    pg.sql("postgres", "CREATE DATABASE app");
    pg.sql(
        "app",
        "CREATE FUNCTION public.not_parallel() RETURNS boolean LANGUAGE sql IMMUTABLE AS \
           $$ SELECT pg_catalog.current_setting('application_name') <> 'backstop-parallel-load' $$; \
         CREATE TABLE picky (id int, pad text, CHECK (public.not_parallel())); \
         SET application_name = 'loader'; \
         INSERT INTO picky SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 40000) g;",
    );
    sb.file_job("app", &pg.url("app"), "");
    expect_code(&sb.run(&["backup", "app"]), 0);
    let dbs = pg.databases();
    let text = expect_code(&sb.run(&["restore", "app", "--to", &pg.url("copy")]), 1);
    assert!(
        text.contains("parallel COPY session into public.picky failed")
            && text.contains("violates check constraint"),
        "{text}"
    );
    assert_eq!(pg.databases(), dbs);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        // This test's server only: other tests restore at the same time.
        pids_with(&["psql", "_restoring_", &format!(":{}/", pg.port)]).is_empty(),
        "a COPY session was left running"
    );
    // With one session the same snapshot restores (the check passes in pg_restore's).
    let out = sb
        .cmd(&["restore", "app", "--to", &pg.url("copy")])
        .env("BACKSTOP_RESTORE_SESSIONS", "1")
        .output()
        .unwrap();
    expect_code(&out, 0);
    assert_eq!(pg.fingerprint("copy"), pg.fingerprint("app"));
}

#[test]
fn non_empty_target_without_yes_is_refused_with_exit_4() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    backed_up(&pg, &sb);
    pg.sql(
        "app",
        "INSERT INTO empty_table VALUES ('changed after the backup')",
    );
    let before = pg.fingerprint("app");
    let dbs = pg.databases();
    let text = expect_code(&sb.run(&["restore", "app"]), 4);
    assert!(
        text.contains("--yes") && text.contains("nothing was changed"),
        "{text}"
    );
    assert_eq!(pg.fingerprint("app"), before);
    assert_eq!(pg.databases(), dbs);
    // an existing non-empty --to target too
    pg.sql("postgres", "CREATE DATABASE other");
    pg.sql("other", "CREATE TABLE keep_me (x int)");
    expect_code(&sb.run(&["restore", "app", "--to", &pg.url("other")]), 4);
    assert_eq!(pg.sql("other", "SELECT count(*) FROM keep_me"), "0");
    let audit = sb.audit_lines();
    assert_eq!(audit.last().unwrap()["exit_code"], 4);
}

#[test]
fn malformed_job_files_exit_2_naming_the_file() {
    let sb = Sandbox::new();
    let cases = [
        (
            "typo",
            "[source]\ntype = \"postgres\"\nurl = \"postgres://x@h/db\"\nurll = 1\n[storage]\nurl = \"file:///tmp/x\"\n[encryption]\nrecipients = []\n",
            "urll",
        ),
        ("broken", "[source\ntype = ", "broken.toml"),
        (
            "nokey",
            "[source]\ntype = \"postgres\"\nurl = \"postgres://x@h/db\"\n[storage]\nurl = \"file:///tmp/x\"\n[encryption]\nrecipients = []\n",
            "recipients",
        ),
        (
            "badlevel",
            &format!(
                "[source]\ntype = \"postgres\"\nurl = \"postgres://x@h/db\"\n[storage]\nurl = \"file:///tmp/x\"\n[encryption]\nrecipients = [\"{}\"]\n[compression]\nlevel = 99\n",
                sb.recipient
            ),
            "compression.level",
        ),
    ];
    for (name, text, want) in cases {
        sb.write_job(name, text);
        let out = sb.run(&["backup", name]);
        let msg = expect_code(&out, 2);
        assert!(msg.contains(&format!("{name}.toml")), "{msg}");
        assert!(msg.contains(want), "{want}: {msg}");
        assert!(!msg.contains("panicked"), "{msg}");
    }
    let msg = expect_code(&sb.run(&["backup", "no_such_job"]), 2);
    assert!(msg.contains("no_such_job"), "{msg}");
    let msg = expect_code(&sb.run(&["restore", "typo", "--snapshot", "../../etc"]), 2);
    assert!(msg.contains("typo.toml"), "{msg}");
}

#[test]
fn a_second_run_of_the_same_job_gets_exit_5() {
    use std::os::fd::AsRawFd;
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 1);
    sb.file_job("app", &pg.url("app"), "");
    // A first backup: the next one starts its pg_dump before taking the locks.
    expect_code(&sb.run(&["backup", "app"]), 0);
    let dir = sb.path().join("state/locks");
    std::fs::create_dir_all(&dir).unwrap();
    let f = std::fs::File::create(dir.join("app.lock")).unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let text = expect_code(&sb.run(&["backup", "app"]), 5);
    assert!(text.contains("another run of job app"), "{text}");
    // The pg_dump started early went with the refused run: no session of it is left.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'",
        );
        if left == "0" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a pg_dump session outlived the refused run"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(f);
    expect_code(&sb.run(&["backup", "app"]), 0);
    assert_eq!(sb.snapshots("app").len(), 2);
}

#[test]
fn sigterm_mid_upload_aborts_and_cleans_up() {
    let MidUpload {
        pg,
        s3: _s3,
        sb,
        rt,
        check,
        child,
    } = backup_mid_upload();
    // SAFETY: plain kill(2) of our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let text = expect_code(&out, 1);
    assert!(text.contains("SIGTERM"), "{text}");
    assert_no_snapshots(&sb, "app");
    assert!(
        rt.block_on(backstop::storage::s3::pending_uploads(&check))
            .unwrap()
            .is_empty(),
        "multipart upload not aborted"
    );
    assert!(
        rt.block_on(backstop::storage::Storage::list(&check, ""))
            .unwrap()
            .is_empty()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        pids_with(&["pg_dump", &format!(":{}/app", pg.port)]).is_empty(),
        "pg_dump left running"
    );
}

/// A server with job `app` of bulk rows, backed up to the sandbox's `file://` store.
fn bulk_file_job() -> (Pg, Sandbox, backstop::config::JobPlan) {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 1);
    sb.file_job("app", &pg.url("app"), "");
    let plan = backstop::config::load(&sb.jobs(), "app").unwrap();
    (pg, sb, plan)
}

/// Options of a backup run in process, quiet, with `trigger`.
fn backup_opts(trigger: backstop::snapshot::Trigger) -> backstop::run::backup::Options {
    backstop::run::backup::Options {
        trigger,
        reason: Some("test".into()),
        pinned_until: None,
        quiet: true,
        early: Default::default(),
    }
}

#[test]
fn a_snapshot_before_a_risky_action_reads_every_byte_back() {
    use backstop::run::backup::run;
    use backstop::snapshot::Trigger;
    use backstop::storage::{Storage, faulty::FlipOnRead, fs::FileStorage};
    let (_pg, sb, plan) = bulk_file_job();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let flip: std::sync::Arc<dyn Storage> = std::sync::Arc::new(FlipOnRead {
        inner: FileStorage::new(sb.store()),
    });
    let storage = std::sync::Arc::new(backstop::storage::fanout::Fanout::new(vec![(
        "default".to_string(),
        flip,
    )]));
    // A scheduled backup checks sizes (HEAD) only: the damage on read goes unseen here.
    rt.block_on(run(&plan, storage.clone(), &backup_opts(Trigger::Manual)))
        .unwrap();
    // A snapshot before a risky action reads everything back: the flipped byte fails it,
    // and no manifest is written.
    for trigger in [Trigger::Snapshot, Trigger::Guard, Trigger::Hook] {
        let err = rt
            .block_on(run(&plan, storage.clone(), &backup_opts(trigger)))
            .unwrap_err();
        assert!(err.message().contains("read back as"), "{err}");
    }
    assert_eq!(sb.snapshots("app").len(), 1);
}

/// Before a manifest is written, every object is checked where it was stored (side by
/// side): a storage that reports one short gets no manifest and is named, while the other
/// storage of the same run commits the snapshot.
#[test]
fn an_object_stored_short_gets_no_manifest_and_the_other_storage_commits() {
    use backstop::run::backup::run;
    use backstop::snapshot::Trigger;
    use backstop::storage::{Storage, faulty::ShortHead, fs::FileStorage};
    let (_pg, sb, plan) = bulk_file_job();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let other = sb.path().join("other");
    let short: std::sync::Arc<dyn Storage> = std::sync::Arc::new(ShortHead {
        inner: FileStorage::new(other.clone()),
        suffix: "/facts.json.zst.age".into(),
    });
    let good: std::sync::Arc<dyn Storage> = std::sync::Arc::new(FileStorage::new(sb.store()));
    let storage = std::sync::Arc::new(backstop::storage::fanout::Fanout::new(vec![
        ("short".to_string(), short),
        ("default".to_string(), good),
    ]));
    let m = rt
        .block_on(run(&plan, storage.clone(), &backup_opts(Trigger::Manual)))
        .unwrap();
    let failures = storage.failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, "short");
    assert!(
        failures[0].1.contains("facts.json.zst.age") && failures[0].1.contains("expected"),
        "{failures:?}"
    );
    // The good storage holds the snapshot; the short one holds nothing of it.
    assert_eq!(sb.snapshots("app").len(), 1);
    assert_eq!(sb.snapshots("app")[0].0, m.snapshot);
    let left = rt.block_on(FileStorage::new(other).list("app/")).unwrap();
    assert!(
        !left.iter().any(|o| o.key.contains(&m.snapshot)),
        "{left:?}"
    );
}

/// A session writing large objects that fails (a fault injected into its first
/// statement) fails the restore: the new database is dropped, the target is not created,
/// no session is left behind; without the fault the same snapshot restores.
#[test]
fn a_failing_large_object_session_fails_the_restore_and_leaves_nothing() {
    let pg = Pg::start();
    let mut sb = Sandbox::new();
    sb.env
        .push(("BACKSTOP_RESTORE_SESSIONS".into(), "2".into()));
    pg.sql("postgres", "CREATE DATABASE app");
    pg.sql(
        "app",
        "CREATE TABLE docs (id int PRIMARY KEY, body oid); \
         INSERT INTO docs SELECT g, lo_from_bytea(0, decode(repeat(md5(g::text), 50), 'hex')) \
           FROM generate_series(1, 2000) g;",
    );
    sb.file_job("app", &pg.url("app"), "");
    expect_code(&sb.run(&["backup", "app"]), 0);
    let dbs = pg.databases();
    let out = sb
        .cmd(&["restore", "app", "--to", &pg.url("copy")])
        .env("BACKSTOP_TEST_LO_FAULT", "1")
        .output()
        .unwrap();
    let text = expect_code(&out, 1);
    assert!(
        text.contains("parallel session writing large objects failed")
            && text.contains("does not exist"),
        "{text}"
    );
    assert_eq!(pg.databases(), dbs);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        pids_with(&["psql", "_restoring_", &format!(":{}/", pg.port)]).is_empty(),
        "a large object session was left running"
    );
    let out = sb.run(&["--json", "restore", "app", "--to", &pg.url("copy")]);
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["parallel_load"][0]["table"], "(large objects)", "{r}");
    let los = "SELECT count(*), md5(string_agg(md5(lo_get(oid)), ',' ORDER BY oid)) FROM pg_largeobject_metadata";
    assert_eq!(pg.sql("copy", los), pg.sql("app", los));
}
