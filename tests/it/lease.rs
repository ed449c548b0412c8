//! One run per job across hosts: the storage lease. A second run with its own state
//! directory (another host, as far as the local lock can tell) exits 5 naming the holder;
//! a killed holder's lease is taken over; a foreign lease expires; `--wait` waits.

use std::time::{Duration, Instant};

use crate::failures::{MidUpload, backup_mid_upload};
use crate::support::*;

fn other_host(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    let state = sb.path().join("state-other-host");
    sb.cmd(args)
        .env("BACKSTOP_STATE_DIR", &state)
        .output()
        .unwrap()
}

#[test]
fn a_second_host_is_refused_by_the_lease_and_a_killed_holder_is_taken_over() {
    let MidUpload {
        pg: _pg,
        s3: _s3,
        sb,
        rt,
        check,
        mut child,
    } = backup_mid_upload();
    let pid = child.id();
    let text = expect_code(&other_host(&sb, &["backup", "app"]), 5);
    assert!(text.contains("locked by another run"), "{text}");
    assert!(text.contains(&format!("pid {pid}")), "{text}");
    assert!(text.contains(&backstop::state::hostname()), "{text}");
    // Kill the holder outright: no cleanup runs, its lease stays in storage.
    child.kill().unwrap();
    child.wait().unwrap();
    let leases = rt
        .block_on(backstop::storage::Storage::list(&check, "app/lease/"))
        .unwrap();
    assert_eq!(leases.len(), 1, "{leases:?}");
    // Same host, holder pid gone: the next run takes the lease over and succeeds.
    let t = Instant::now();
    expect_code(&other_host(&sb, &["backup", "app"]), 0);
    assert!(t.elapsed() < Duration::from_secs(60));
    assert_eq!(sb.snapshots("app").len(), 1);
    // Released afterwards: no lease object is left.
    let leases = rt
        .block_on(backstop::storage::Storage::list(&check, "app/lease/"))
        .unwrap();
    assert!(leases.is_empty(), "{leases:?}");
}

#[test]
fn a_foreign_lease_blocks_until_it_expires_and_wait_waits() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 1);
    sb.file_job("app", &pg.url("app"), "");
    let lease_dir = sb.store().join("app/lease");
    std::fs::create_dir_all(&lease_dir).unwrap();
    let write_lease = |secs: i64| {
        let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(secs);
        let body = serde_json::json!({
            "host": "db-backup-2.example", "pid": 4242, "since": "2026-11-25T06:00:00Z",
            "expires": expires.to_string(), "action": "backup", "token": "feedface",
        });
        std::fs::write(lease_dir.join("000000000007"), body.to_string()).unwrap();
    };
    write_lease(600);
    let text = expect_code(&sb.run(&["backup", "app"]), 5);
    assert!(
        text.contains("db-backup-2.example") && text.contains("pid 4242"),
        "{text}"
    );
    assert!(sb.snapshots("app").is_empty());
    // --wait: waits for the lease to run out, then runs.
    write_lease(4);
    let t = Instant::now();
    expect_code(&sb.run(&["--wait", "backup", "app"]), 0);
    assert!(t.elapsed() >= Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(sb.snapshots("app").len(), 1);
    // The expired foreign lease was superseded and our own released: nothing left.
    let left: Vec<_> = std::fs::read_dir(&lease_dir)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_holder_renews_its_lease_while_it_runs() {
    let MidUpload {
        pg: _pg,
        s3: _s3,
        sb: _sb,
        rt,
        check,
        mut child,
    } = backup_mid_upload_with_ttl("3s");
    // TTL 3 s: renewed every second, each renewal a new generation.
    let newest = || {
        rt.block_on(backstop::storage::Storage::list(&check, "app/lease/"))
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .max()
    };
    let first = newest().expect("no lease while running");
    let mut renewed = None;
    while child.try_wait().unwrap().is_none() {
        if let Some(k) = newest().filter(|k| *k > first) {
            renewed = Some(k);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        renewed.is_some(),
        "the lease {first} was not renewed while the backup ran"
    );
}

fn backup_mid_upload_with_ttl(ttl: &str) -> MidUpload {
    // SAFETY: tests in this binary run in their own processes under nextest.
    unsafe { std::env::set_var("BACKSTOP_LEASE_TTL", ttl) };
    backup_mid_upload()
}
