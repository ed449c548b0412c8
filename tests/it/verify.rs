//! Restore drills against real parts: a scratch PostgreSQL cluster started by backstop,
//! row counts and `verify.checks` compared, results recorded beside the manifest; volume
//! drills; tampered facts give exit 3; a scratch cluster that cannot start gives exit 1;
//! nothing is left behind.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::support::*;

fn snapshot_dir(sb: &Sandbox, job: &str) -> PathBuf {
    std::fs::read_dir(sb.store().join(job))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

/// Decrypt the facts object, let `edit` change it, encrypt it again to the job's key and
/// fix the manifest's size and hash for it: a consistent snapshot with lying facts.
fn tamper_facts(sb: &Sandbox, job: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let dir = snapshot_dir(sb, job);
    let stored = std::fs::read(dir.join("facts.json.zst.age")).unwrap();
    let ids = backstop::pipeline::load_identities(&sb.identity).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let obj = manifest["objects"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|o| o["role"] == "facts")
        .unwrap();
    let sha = obj["sha256"].as_str().unwrap().to_string();
    let expect = backstop::pipeline::Expect {
        name: "facts",
        stored_bytes: obj["stored_bytes"].as_u64().unwrap(),
        sha256: &sha,
    };
    let mut plain = Vec::new();
    backstop::pipeline::decode(&stored[..], &ids, &expect, &mut plain).unwrap();
    let mut facts: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    edit(&mut facts);
    let recipient = age::x25519::Recipient::from_str(&sb.recipient).unwrap();
    let comp = backstop::config::CompressionPlan {
        level: 3,
        threads: 1,
    };
    let (bytes, st) =
        backstop::pipeline::encode_bytes(&serde_json::to_vec(&facts).unwrap(), comp, &[recipient])
            .unwrap();
    std::fs::remove_file(dir.join("facts.json.zst.age")).unwrap();
    std::fs::write(dir.join("facts.json.zst.age"), bytes).unwrap();
    obj["stored_bytes"] = st.stored_bytes.into();
    obj["sha256"] = st.sha256.into();
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

/// Run with TMPDIR inside the sandbox, so scratch leftovers would be seen.
fn run_in(sb: &Sandbox, tmp: &Path, args: &[&str]) -> std::process::Output {
    std::fs::create_dir_all(tmp).unwrap();
    std::fs::set_permissions(tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    sb.cmd(args).env("TMPDIR", tmp).output().unwrap()
}

fn assert_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn no_scratch_postgres_running(tmp: &Path) {
    let needle = tmp.display().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            assert!(
                !(cmd.contains("postgres") && cmd.contains(&needle)),
                "scratch server still running: {cmd}"
            );
        }
    }
}

#[test]
fn a_drill_of_a_good_snapshot_passes_and_is_recorded() {
    let pg = Pg::start();
    let s3 = S3::start();
    let sb = Sandbox::new();
    load_awkward(&pg, "app");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(s3.storage("offsite", "", 5, false));
    sb.s3_job("app", &pg.url("app"), &s3, "offsite", "");
    let mut job = std::fs::read_to_string(sb.jobs().join("app.toml")).unwrap();
    job.push_str("\n[verify]\nchecks = [\"SELECT count(*) = 5001 FROM \\\"Sales & Ops\\\".\\\"Bookings ✈\\\"\", \"SELECT last_value = 123457 FROM odd_seq\"]\n");
    sb.write_job("app", &job);
    expect_code(&sb.run(&["backup", "app"]), 0);
    let tmp = sb.path().join("tmp");
    let out = run_in(&sb, &tmp, &["--json", "verify", "app"]);
    expect_code(&out, 0);
    let o: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(o["summary"]["outcome"], "passed");
    assert!(o["summary"]["restore_ms"].as_u64().unwrap() > 0);
    let checks = o["checks"].as_array().unwrap();
    // one row count per table, the two statements, and pg_amcheck
    assert_eq!(checks.len(), pg.fingerprint("app").len() + 3, "{o}");
    assert!(
        checks
            .iter()
            .any(|c| c["name"].as_str().unwrap().starts_with("pg_amcheck")),
        "{o}"
    );
    assert!(checks.iter().all(|c| c["ok"] == true), "{o}");
    assert!(
        checks
            .iter()
            .any(|c| c["name"].as_str().unwrap().contains("Bookings ✈") && c["expected"] == "5001")
    );
    assert_empty(&tmp);
    no_scratch_postgres_running(&tmp);
    // the source was not touched
    assert_eq!(
        pg.databases(),
        vec!["app".to_string(), "postgres".to_string()]
    );

    let list: serde_json::Value =
        serde_json::from_slice(&sb.run(&["--json", "list", "app"]).stdout).unwrap();
    assert_eq!(list[0]["verified"], true);
    assert_eq!(list[0]["last_drill"]["outcome"], "passed");
    // the plaintext summary holds no content facts; the details are encrypted
    let s = rt.block_on(s3.storage("offsite", "backups", 5, false));
    let objs = rt
        .block_on(backstop::storage::Storage::list(&s, "app/"))
        .unwrap();
    let summary = objs
        .iter()
        .find(|o| o.key.contains("/verify-") && o.key.ends_with(".json"))
        .expect("summary");
    assert!(
        objs.iter()
            .any(|o| o.key.contains("/verify-") && o.key.ends_with(".json.zst.age"))
    );
    let text = rt
        .block_on(backstop::storage::Storage::get_bytes(&s, &summary.key))
        .unwrap()
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        !text.contains("Bookings") && !text.contains("5001"),
        "{text}"
    );
    assert_eq!(sb.audit_lines().last().unwrap()["action"], "verify");
}

#[test]
fn wrong_counts_and_failing_checks_give_exit_3_naming_them() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 2);
    sb.file_job("app", &pg.url("app"), "");
    expect_code(&sb.run(&["backup", "app"]), 0);
    tamper_facts(&sb, "app", |f| {
        let t = &mut f["dump"]["tables"][0];
        assert_eq!(t["table"], "bulk");
        t["rows"] = (t["rows"].as_u64().unwrap() + 1).into();
    });
    let tmp = sb.path().join("tmp");
    let text = expect_code(&run_in(&sb, &tmp, &["verify", "app"]), 3);
    assert!(text.contains("\"public\".\"bulk\""), "{text}");
    assert_empty(&tmp);
    let list: serde_json::Value =
        serde_json::from_slice(&sb.run(&["--json", "list", "app"]).stdout).unwrap();
    assert_eq!(list[0]["verified"], false);
    assert_eq!(list[0]["last_drill"]["outcome"], "failed");

    // a failing verify.checks statement
    let mut job = std::fs::read_to_string(sb.jobs().join("app.toml")).unwrap();
    job.push_str("\n[verify]\nchecks = [\"SELECT count(*) > 10000000 FROM bulk\"]\n");
    sb.write_job("app", &job);
    expect_code(&sb.run(&["backup", "app"]), 0);
    let text = expect_code(&run_in(&sb, &tmp, &["verify", "app"]), 3);
    assert!(text.contains("count(*) > 10000000"), "{text}");
    assert_empty(&tmp);
    no_scratch_postgres_running(&tmp);
}

#[test]
fn partitions_whose_rows_are_routed_anew_are_proven_by_their_tree_s_total() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    // Hash partitions on an enum: pg_dump loads them through the partitioned table, and
    // the hash depends on the enum's OIDs, so in the scratch cluster the rows land in
    // other partitions than at backup time. A range-partitioned table beside it.
    pg.sql("postgres", "CREATE DATABASE app;");
    pg.sql(
        "app",
        "CREATE TYPE color AS ENUM ('red', 'green', 'blue', 'black', 'white', 'grey');          CREATE TABLE tickets (id bigint, c color, PRIMARY KEY (id, c)) PARTITION BY HASH (c);          DO $$ BEGIN FOR i IN 0..3 LOOP            EXECUTE format('CREATE TABLE tickets_%s PARTITION OF tickets FOR VALUES WITH (MODULUS 4, REMAINDER %s)', i, i);          END LOOP; END $$;          INSERT INTO tickets SELECT g, (ARRAY['red', 'green', 'blue', 'black', 'white', 'grey'])[1 + g % 6]::color            FROM generate_series(1, 6000) g;          CREATE TABLE days (d date, n int) PARTITION BY RANGE (d);          CREATE TABLE days_1 PARTITION OF days FOR VALUES FROM ('2026-01-01') TO ('2026-07-01');          CREATE TABLE days_2 PARTITION OF days FOR VALUES FROM ('2026-07-01') TO ('2027-01-01');          INSERT INTO days SELECT '2026-01-01'::date + g, g FROM generate_series(0, 364) g;",
    );
    sb.file_job("app", &pg.url("app"), "");
    expect_code(&sb.run(&["backup", "app"]), 0);
    let tmp = sb.path().join("tmp");
    let out = run_in(&sb, &tmp, &["--json", "verify", "app"]);
    expect_code(&out, 0);
    let o: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = o["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["ok"] == true), "{o}");
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    // The tickets are proven as a whole (or, if no row moved, partition by partition);
    // the days' partitions one by one.
    assert!(
        names.iter().any(|n| n.contains("4 partitions of tickets"))
            || names.iter().filter(|n| n.contains("tickets_")).count() == 4,
        "{o}"
    );
    assert!(names.contains(&"row count of \"public\".\"days_1\""), "{o}");
    assert!(names.contains(&"row count of \"public\".\"days_2\""), "{o}");

    // A row the snapshot says it holds and does not, in a partition: the tree's total
    // no longer matches, and the drill fails, naming the partitions.
    tamper_facts(&sb, "app", |f| {
        let t = f["dump"]["tables"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|t| t["table"] == "tickets_0")
            .unwrap();
        t["rows"] = (t["rows"].as_u64().unwrap() + 1).into();
    });
    let text = expect_code(&run_in(&sb, &tmp, &["verify", "app"]), 3);
    assert!(text.contains("\"public\".\"tickets_0\""), "{text}");
    // A row moved between range partitions is not excused either.
    tamper_facts(&sb, "app", |f| {
        for t in f["dump"]["tables"].as_array_mut().unwrap() {
            if t["table"] == "tickets_0" {
                t["rows"] = (t["rows"].as_u64().unwrap() - 1).into();
            }
            if t["table"] == "days_1" {
                t["rows"] = (t["rows"].as_u64().unwrap() + 1).into();
            }
            if t["table"] == "days_2" {
                t["rows"] = (t["rows"].as_u64().unwrap() - 1).into();
            }
        }
    });
    let text = expect_code(&run_in(&sb, &tmp, &["verify", "app"]), 3);
    assert!(text.contains("\"public\".\"days_1\""), "{text}");
    assert_empty(&tmp);
    no_scratch_postgres_running(&tmp);
}

#[test]
fn a_scratch_cluster_that_cannot_start_gives_exit_1() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 1);
    sb.file_job("app", &pg.url("app"), "");
    expect_code(&sb.run(&["backup", "app"]), 0);
    // an initdb that claims the right version and then fails
    let fake = sb.path().join("fakebin");
    std::fs::create_dir(&fake).unwrap();
    let script = fake.join("initdb");
    let major = pg_bindir()
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    std::fs::write(&script, format!("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'initdb (PostgreSQL) {major}.0'; exit 0; fi\necho 'initdb: error: the disk is on fire' >&2\nexit 1\n")).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let tmp = sb.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = sb
        .cmd(&["verify", "app"])
        .env("TMPDIR", &tmp)
        .env("BACKSTOP_PG_BINDIR", &fake)
        .output()
        .unwrap();
    let text = expect_code(&out, 1);
    assert!(text.contains("disk is on fire"), "{text}");
    assert_empty(&tmp);
}

#[test]
fn a_volume_drill_passes_and_fails_when_content_differs() {
    let sb = Sandbox::new();
    let vol = sb.path().join("volume");
    std::fs::create_dir_all(vol.join("sub")).unwrap();
    std::fs::write(vol.join("a.txt"), "alpha").unwrap();
    std::fs::write(vol.join("sub/b.txt"), "beta").unwrap();
    let marker = sb.path().join("command-saw");
    sb.volume_job(
        "files",
        &vol,
        &format!(
            "\n[verify]\ncommand = [\"sh\", \"-c\", \"cat $BACKSTOP_RESTORED/sub/b.txt > '{}'\"]",
            marker.display()
        ),
    );
    // volume_job puts [verify] inside [source]: move it to the end
    let text = std::fs::read_to_string(sb.jobs().join("files.toml")).unwrap();
    let (head, rest) = text.split_once("\n[verify]").unwrap();
    let (verify, tail) = rest.split_once("\n[storage]").unwrap();
    sb.write_job(
        "files",
        &format!("{head}\n[storage]{tail}\n[verify]{verify}\n"),
    );
    expect_code(&sb.run(&["backup", "files"]), 0);
    let tmp = sb.path().join("tmp");
    let out = run_in(&sb, &tmp, &["verify", "files"]);
    expect_code(&out, 0);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "beta");
    assert_empty(&tmp);

    tamper_facts(&sb, "files", |f| {
        for e in f["entries"].as_array_mut().unwrap() {
            if e["path"] == "sub/b.txt" {
                e["sha256"] = "0".repeat(64).into();
            }
        }
    });
    let text = expect_code(&run_in(&sb, &tmp, &["verify", "files"]), 3);
    assert!(text.contains("sub/b.txt"), "{text}");
    assert_empty(&tmp);
    // the source volume was never touched
    assert_eq!(std::fs::read_to_string(vol.join("a.txt")).unwrap(), "alpha");
}

#[test]
fn latest_plus_random_also_proves_an_older_snapshot() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 1);
    sb.file_job("app", &pg.url("app"), "");
    let mut job = std::fs::read_to_string(sb.jobs().join("app.toml")).unwrap();
    job.push_str("\n[verify]\nsample = \"latest+random\"\n");
    sb.write_job("app", &job);
    expect_code(&sb.run(&["backup", "app"]), 0);
    pg.sql("app", "DELETE FROM bulk WHERE id % 2 = 0");
    expect_code(&sb.run(&["backup", "app"]), 0);
    let out = sb.run(&["--json", "verify", "app"]);
    expect_code(&out, 0);
    let o: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(
        o["summary"]["snapshot"], o["sampled"]["summary"]["snapshot"],
        "{o}"
    );
    let list: serde_json::Value =
        serde_json::from_slice(&sb.run(&["--json", "list", "app"]).stdout).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|r| r["verified"] == true),
        "{list}"
    );
    let drills = sb
        .audit_lines()
        .into_iter()
        .filter(|l| l["action"] == "verify")
        .count();
    assert_eq!(drills, 2);
    // an unknown sampling mode is a configuration error
    sb.write_job("app", &job.replace("latest+random", "sometimes"));
    let text = expect_code(&sb.run(&["verify", "app"]), 2);
    assert!(text.contains("verify.sample"), "{text}");
}
