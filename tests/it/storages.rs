//! Several storages per job (`[[storage]]`), with two real S3 servers (two moto
//! processes) on loopback: fan-out writes the same objects to both, one server killed in
//! the middle of a backup, `copy` bringing it back up to date, restores with a server down
//! and with a damaged or missing object on one of them, retention per storage, and the
//! doctor's same-provider warning.

use std::time::{Duration, Instant};

use backstop::storage::Storage;

use crate::support::*;

/// A postgres job on `url` writing to storage "a" (bucket `one` on `a`) and "b" (bucket
/// `two` on `b`).
fn two_s3_job(sb: &Sandbox, url: &str, a: &S3, b: &S3, extra_a: &str) {
    sb.write_job(
        "app",
        &format!(
            "[source]\ntype = \"postgres\"\nurl = \"{url}\"\n\n\
             [[storage]]\nname = \"a\"\nurl = \"s3://one/backups\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\npath_style = true\npart_size_mib = 5\n{extra_a}\n\n\
             [[storage]]\nname = \"b\"\nurl = \"s3://two/backups\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\npath_style = true\npart_size_mib = 5\n\n\
             [encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n",
            a.endpoint(),
            b.endpoint(),
            sb.recipient,
            sb.identity.display()
        ),
    );
}

/// Every object below the job's prefix: key -> bytes.
fn objects(
    rt: &tokio::runtime::Runtime,
    s: &backstop::storage::s3::S3Storage,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    rt.block_on(async {
        let mut out = std::collections::BTreeMap::new();
        for o in s.list("app/").await.unwrap() {
            if o.key.contains("/lease/") {
                continue;
            }
            let b = s.get_bytes_limited(&o.key, 1 << 30).await.unwrap().unwrap();
            out.insert(o.key, b);
        }
        out
    })
}

fn list_json(sb: &Sandbox) -> Vec<serde_json::Value> {
    let out = sb.run(&["--json", "list", "app"]);
    expect_code(&out, 0);
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn status_json(sb: &Sandbox) -> serde_json::Value {
    let out = sb.run(&["--json", "status", "app"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().map(|a| a[0].clone()).unwrap_or(v)
}

#[test]
fn fan_out_stores_identical_snapshots_and_restores_with_one_server_down() {
    let pg = Pg::start();
    let (a, mut b) = (S3::start(), S3::start());
    let sb = Sandbox::new();
    load_awkward(&pg, "app");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sa = rt.block_on(a.storage("one", "backups", 5, false));
    let sb2 = rt.block_on(b.storage("two", "backups", 5, false));
    two_s3_job(&sb, &pg.url("app"), &a, &b, "");

    let out = sb.run(&["--json", "backup", "app"]);
    expect_code(&out, 0);
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = m["snapshot"].as_str().unwrap().to_string();
    // The same objects, byte for byte, on both servers (encoded once).
    let (on_a, on_b) = (objects(&rt, &sa), objects(&rt, &sb2));
    assert!(
        on_a.keys().any(|k| k.ends_with("/manifest.json")),
        "{:?}",
        on_a.keys()
    );
    assert!(on_a.keys().any(|k| k.ends_with("/dump.zst.age")));
    assert_eq!(on_a, on_b);
    let rows = list_json(&sb);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["storages"], serde_json::json!(["a", "b"]));
    assert_eq!(status_json(&sb)["health"], "UNVERIFIED");

    // Server b gone: restore still works, from a; status names b.
    b.kill();
    let out = sb.run(&["--json", "restore", "app", "--to", &pg.url("copy_a")]);
    let err = expect_code(&out, 0);
    assert_eq!(pg.fingerprint("app"), pg.fingerprint("copy_a"), "{err}");
    let st = status_json(&sb);
    assert_eq!(st["health"], "FAILING");
    let reasons = st["reasons"].to_string();
    assert!(reasons.contains("storage b cannot be read"), "{reasons}");
    assert_eq!(st["storages"][1]["state"], "unreadable");
    assert_eq!(st["storages"][0]["newest"], id.as_str());

    // And with --storage naming the dead one: a clear failure, nothing restored.
    let out = sb.run(&[
        "restore",
        "app",
        "--storage",
        "b",
        "--to",
        &pg.url("copy_b"),
    ]);
    let err = expect_code(&out, 1);
    assert!(err.contains("b"), "{err}");
    assert!(!pg.databases().contains(&"copy_b".to_string()));
    let out = sb.run(&[
        "restore",
        "app",
        "--storage",
        "c",
        "--to",
        &pg.url("copy_b"),
    ]);
    let err = expect_code(&out, 2);
    assert!(err.contains("valid: a, b"), "{err}");
}

/// Wait until storage `s` has an unfinished multipart upload below the job (the backup is
/// in the middle of writing to it).
fn wait_for_upload(
    rt: &tokio::runtime::Runtime,
    s: &backstop::storage::s3::S3Storage,
    bucket: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = rt.block_on(async {
            s.client()
                .list_multipart_uploads()
                .bucket(bucket)
                .send()
                .await
                .map(|r| r.uploads().len())
                .unwrap_or(0)
        });
        if n > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "no upload started on {bucket}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_server_killed_mid_backup_leaves_the_snapshot_on_the_other_and_copy_completes_it() {
    let pg = Pg::start();
    let (a, mut b) = (S3::start(), S3::start());
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 48);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sa = rt.block_on(a.storage("one", "backups", 5, false));
    let sb2 = rt.block_on(b.storage("two", "backups", 5, false));
    two_s3_job(&sb, &pg.url("app"), &a, &b, "");
    // Level 1 and no threads: slow enough to be caught in the middle.
    let text = std::fs::read_to_string(sb.jobs().join("app.toml")).unwrap();
    sb.write_job(
        "app",
        &format!("{text}\n[compression]\nlevel = 1\nthreads = 1\n"),
    );

    let child = sb
        .cmd(&["--json", "backup", "app"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_upload(&rt, &sb2, "two");
    let port = b.port;
    b.kill();
    let out = child.wait_with_output().unwrap();
    let err = expect_code(&out, 1);
    assert!(err.contains("storage b"), "names the storage: {err}");
    assert!(err.contains("is complete"), "{err}");
    assert!(
        err.contains("backstop copy app --from a --to b --all-missing"),
        "{err}"
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = m["snapshot"].as_str().unwrap().to_string();
    // Complete on a, and restorable from it.
    assert!(objects(&rt, &sa).contains_key(&format!("app/{id}/manifest.json")));
    let failed = sb
        .audit_lines()
        .into_iter()
        .rev()
        .find(|l| l["action"] == "backup")
        .unwrap();
    assert_eq!(failed["details"]["failed_storages"][0]["storage"], "b");

    // b comes back empty (a new server on the same port): status says it is behind.
    let b2 = S3::start_on(port);
    let sb3 = rt.block_on(b2.storage("two", "backups", 5, false));
    let st = status_json(&sb);
    assert_eq!(st["health"], "FAILING");
    assert!(
        st["reasons"].to_string().contains("storage b is behind"),
        "{st}"
    );
    assert_eq!(st["storages"][1]["state"], "behind");
    assert_eq!(st["storages"][1]["missing"], 1);

    let r = sb.copy_all_missing("app", "a", "b");
    assert_eq!(r["copied"], serde_json::json!([id]));
    let (on_a, on_b) = (objects(&rt, &sa), objects(&rt, &sb3));
    assert_eq!(on_a, on_b);
    // Nothing left to copy; status is no longer FAILING for b.
    let r = sb.copy_all_missing("app", "a", "b");
    assert_eq!(r["copied"], serde_json::json!([]));
    assert_eq!(r["already"], serde_json::json!([id]));
    let st = status_json(&sb);
    assert!(!st["reasons"].to_string().contains("storage b"), "{st}");
    // The copy restores on its own: a killed, a restore reads b only.
    drop(a);
    let out = sb.run(&["restore", "app", "--to", &pg.url("from_b")]);
    expect_code(&out, 0);
    assert_eq!(pg.fingerprint("app"), pg.fingerprint("from_b"));
}

#[test]
fn a_damaged_or_missing_object_on_one_storage_is_read_from_the_other() {
    let pg = Pg::start();
    let (a, b) = (S3::start(), S3::start());
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 8);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sa = rt.block_on(a.storage("one", "backups", 5, false));
    let sb2 = rt.block_on(b.storage("two", "backups", 5, false));
    two_s3_job(&sb, &pg.url("app"), &a, &b, "");
    let out = sb.run(&["--json", "backup", "app"]);
    expect_code(&out, 0);
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = m["snapshot"].as_str().unwrap().to_string();
    let dump = format!("app/{id}/dump.zst.age");

    // One byte flipped in a's copy of the dump (written over, as a bucket writer could).
    let mut bytes = objects(&rt, &sa)[&dump].clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    rt.block_on(async {
        sa.client()
            .put_object()
            .bucket("one")
            .key(format!("backups/{dump}"))
            .body(bytes.clone().into())
            .send()
            .await
            .unwrap();
    });
    let out = sb.run(&["--json", "restore", "app", "--to", &pg.url("copy1")]);
    let err = expect_code(&out, 0);
    assert_eq!(pg.fingerprint("app"), pg.fingerprint("copy1"));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let repaired = r["repaired"].to_string();
    assert!(
        repaired.contains(&dump) && repaired.contains("storage a"),
        "{repaired} {err}"
    );
    assert!(
        err.contains("trying again with the copies on the other storages"),
        "{err}"
    );

    // b loses the snapshot (manifest and dump): copy from a refuses to spread a's damaged
    // dump, and commits nothing on b.
    rt.block_on(async {
        sb2.delete(&format!("app/{id}/manifest.json"))
            .await
            .unwrap();
        sb2.delete(&dump).await.unwrap();
    });
    let out = sb.run(&[
        "--json",
        "copy",
        "app",
        "--from",
        "a",
        "--to",
        "b",
        "--snapshot",
        &id,
    ]);
    let err = expect_code(&out, 1);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["errors"].to_string().contains("damaged"), "{r} {err}");
    let left = objects(&rt, &sb2);
    assert!(!left.contains_key(&format!("app/{id}/manifest.json")) && !left.contains_key(&dump));
    // Nothing of it on b now.
    let out = sb.run(&[
        "restore",
        "app",
        "--storage",
        "b",
        "--to",
        &pg.url("copy_b"),
    ]);
    let err = expect_code(&out, 1);
    assert!(err.contains("no complete snapshot"), "{err}");
    // No good copy anywhere: a clear failure naming the object, nothing created.
    let out = sb.run(&["restore", "app", "--to", &pg.url("copy3")]);
    let err = expect_code(&out, 1);
    assert!(err.contains(&dump), "{err}");
    assert!(!pg.databases().contains(&"copy3".to_string()));
}

#[test]
fn retention_per_storage_and_the_same_provider_warning() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_awkward(&pg, "app");
    let (fast, slow) = (sb.path().join("fast"), sb.path().join("slow"));
    sb.write_job(
        "app",
        &format!(
            "[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n\
             [retention]\nkeep_last = 3\n\n\
             [[storage]]\nname = \"fast\"\nurl = \"file://{}\"\n[storage.retention]\nkeep_last = 1\n\n\
             [[storage]]\nname = \"slow\"\nurl = \"file://{}\"\n\n\
             [encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n",
            pg.url("app"),
            fast.display(),
            slow.display(),
            sb.recipient,
            sb.identity.display()
        ),
    );
    let mut ids = Vec::new();
    for _ in 0..3 {
        let out = sb.run(&["--json", "backup", "app"]);
        expect_code(&out, 0);
        let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ids.push(m["snapshot"].as_str().unwrap().to_string());
    }
    let out = sb.run(&["--json", "prune", "app", "--yes"]);
    expect_code(&out, 0);
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reports.as_array().unwrap().len(), 2);
    assert_eq!(reports[0]["storage"], "fast");
    assert_eq!(reports[0]["deleted"].as_array().unwrap().len(), 2);
    assert_eq!(reports[1]["deleted"].as_array().unwrap().len(), 0);
    let rows = list_json(&sb);
    let on: Vec<(String, serde_json::Value)> = rows
        .iter()
        .map(|r| {
            (
                r["snapshot"].as_str().unwrap().to_string(),
                r["storages"].clone(),
            )
        })
        .collect();
    assert_eq!(
        on,
        vec![
            (ids[2].clone(), serde_json::json!(["fast", "slow"])),
            (ids[1].clone(), serde_json::json!(["slow"])),
            (ids[0].clone(), serde_json::json!(["slow"])),
        ]
    );
    // The oldest, kept only on slow, restores from there.
    let out = sb.run(&[
        "restore",
        "app",
        "--snapshot",
        &ids[0],
        "--to",
        &pg.url("old"),
    ]);
    expect_code(&out, 0);
    assert_eq!(pg.fingerprint("app"), pg.fingerprint("old"));
    // Both on this host: the doctor says they share a place.
    let out = sb.run(&["--json", "doctor", "app"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("separate providers") && text.contains("share provider this host"),
        "{text}"
    );
}

#[test]
fn the_daemon_brings_a_storage_that_was_down_up_to_date() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 1);
    let (good, bad) = (sb.path().join("good"), sb.path().join("bad"));
    // Storage b's root is a plain file: every write to it fails until it is removed.
    std::fs::write(&bad, b"not a directory").unwrap();
    sb.write_job(
        "app",
        &format!(
            "schedule = \"*/3 * * * * *\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n\
             [[storage]]\nname = \"a\"\nurl = \"file://{}\"\n\n\
             [[storage]]\nname = \"b\"\nurl = \"file://{}\"\n\n\
             [encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n",
            pg.url("app"),
            good.display(),
            bad.display(),
            sb.recipient,
            sb.identity.display()
        ),
    );
    let log = sb.path().join("daemon.log");
    let mut daemon = sb
        .cmd(&["daemon", "--catch-up", "1s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; daemon log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait("a backup that missed storage b", &|| {
        sb.audit_lines().iter().any(|l| {
            l["action"] == "backup" && l["details"]["failed_storages"][0]["storage"] == "b"
        })
    });
    let first: Vec<String> = list_json(&sb)
        .iter()
        .map(|r| r["snapshot"].as_str().unwrap().to_string())
        .collect();
    assert!(!first.is_empty());
    // b comes back: the daemon copies what it missed.
    std::fs::remove_file(&bad).unwrap();
    wait("every snapshot on both storages", &|| {
        let rows = list_json(&sb);
        first.iter().all(|id| {
            rows.iter().any(|r| {
                r["snapshot"] == id.as_str() && r["storages"] == serde_json::json!(["a", "b"])
            })
        })
    });
    assert!(
        sb.audit_lines()
            .iter()
            .any(|l| l["action"] == "copy" && l["result"] == "ok"),
        "a copy is audited"
    );
    // SAFETY: plain kill(2) of our child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    // What was copied restores from b alone.
    let out = sb.run(&[
        "restore",
        "app",
        "--storage",
        "b",
        "--snapshot",
        &first[0],
        "--to",
        &pg.url("from_b"),
    ]);
    expect_code(&out, 0);
    assert_eq!(pg.fingerprint("app"), pg.fingerprint("from_b"));
}

#[test]
fn wal_goes_to_every_storage_and_comes_back_from_any() {
    let sb = Sandbox::new();
    let (a, b) = (sb.path().join("a"), sb.path().join("b"));
    // b's root is a plain file at first: pushes to it fail.
    std::fs::write(&b, b"not a directory").unwrap();
    sb.write_job(
        "main",
        &format!(
            "[source]\ntype = \"postgres-cluster\"\nurl = \"postgres://postgres@127.0.0.1:1/postgres\"\n\n\
             [[storage]]\nname = \"a\"\nurl = \"file://{}\"\n\n\
             [[storage]]\nname = \"b\"\nurl = \"file://{}\"\n\n\
             [encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n",
            a.display(),
            b.display(),
            sb.recipient,
            sb.identity.display()
        ),
    );
    let seg = sb.path().join("000000010000000000000003");
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&seg, &data).unwrap();
    let out = sb.run(&["wal-push", "main", seg.to_str().unwrap()]);
    let err = expect_code(&out, 1);
    assert!(err.contains("storage b") && err.contains("1 of 2"), "{err}");
    // PostgreSQL calls again once b is back: a answers "already stored", b stores it.
    std::fs::remove_file(&b).unwrap();
    expect_code(&sb.run(&["wal-push", "main", seg.to_str().unwrap()]), 0);
    // a loses its copy: wal-fetch takes b's, checked.
    let wal_a = a.join("main/wal/00000001");
    for e in std::fs::read_dir(&wal_a).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".zst.age") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let dest = sb.path().join("fetched");
    let out = sb.run(&[
        "wal-fetch",
        "main",
        "000000010000000000000003",
        dest.to_str().unwrap(),
    ]);
    expect_code(&out, 0);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
}
