//! `prune` against real storage: the plan, the confirmation gate, pins, leftovers, the
//! stale guard, and S3 Object Lock (locked snapshots survive and are reported).

use crate::support::*;

fn prune_json(sb: &Sandbox, args: &[&str], code: i32) -> serde_json::Value {
    let mut all = vec!["--json", "prune"];
    all.extend_from_slice(args);
    let out = sb.run(&all);
    expect_code(&out, code);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap()[0].clone()
}

fn decision<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["snapshot"] == id)
        .unwrap()
}

#[test]
fn prune_follows_the_rules_pins_and_gate_and_removes_leftovers() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 1);
    sb.file_job("app", &pg.url("app"), "");
    sb.append_job("app", "", "[retention]\nkeep_last = 2\n");
    let mut taken = Vec::new();
    for i in 0..5 {
        let out = if i == 1 {
            sb.run(&[
                "snapshot",
                "app",
                "--reason",
                "migration 42",
                "--keep-for",
                "14d",
            ])
        } else {
            sb.run(&["backup", "app"])
        };
        expect_code(&out, 0);
        taken.push(sb.snapshots("app")[0].0.clone());
    }
    let [b1, b2, b3, b4, b5] = taken.clone().try_into().unwrap();

    // Leftovers: a manifest-less folder from long ago, and one from now (maybe a run still going).
    let old = sb.store().join("app/20200101T000000Z-abcdef");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("dump.zst.age"), b"partial").unwrap();
    let young_id = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ-fedcba")
        .to_string();
    let young = sb.store().join(format!("app/{young_id}"));
    std::fs::create_dir_all(&young).unwrap();
    std::fs::write(young.join("dump.zst.age"), b"partial").unwrap();

    // Dry run: the plan, with reasons; nothing changes.
    let plan = prune_json(&sb, &["app", "--dry-run"], 0);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(decision(&plan, &b5)["keep"], true);
    let r5 = decision(&plan, &b5)["reasons"].to_string();
    assert!(
        r5.contains("newest snapshot") && r5.contains("keep_last 2"),
        "{r5}"
    );
    assert_eq!(decision(&plan, &b4)["keep"], true);
    assert_eq!(decision(&plan, &b2)["keep"], true);
    assert!(
        decision(&plan, &b2)["reasons"]
            .to_string()
            .contains("pinned until")
    );
    assert!(
        decision(&plan, &b2)["reasons"]
            .to_string()
            .contains("migration 42")
    );
    for gone in [&b1, &b3] {
        assert_eq!(decision(&plan, gone)["keep"], false);
        assert_eq!(decision(&plan, gone)["reasons"][0], "no rule keeps it");
    }
    assert!(
        plan["leftovers"]
            .to_string()
            .contains("20200101T000000Z-abcdef")
    );
    assert!(!plan["leftovers"].to_string().contains(&young_id));
    assert_eq!(sb.snapshots("app").len(), 5);
    assert!(old.exists());

    // Off a terminal, without --yes: refused, exit 4, nothing deleted.
    let text = expect_code(&sb.run(&["prune", "app"]), 4);
    assert!(
        text.contains("--yes") && text.contains("nothing was deleted"),
        "{text}"
    );
    assert_eq!(sb.snapshots("app").len(), 5);

    let done = prune_json(&sb, &["app", "--yes"], 0);
    let mut deleted: Vec<String> = done["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    deleted.sort();
    // Ids of snapshots taken within one second need not sort in time order.
    let mut expected = vec![b1.clone(), b3.clone()];
    expected.sort();
    assert_eq!(deleted, expected);
    let left: Vec<String> = sb.snapshots("app").into_iter().map(|(id, _)| id).collect();
    assert_eq!(left, vec![b5.clone(), b4.clone(), b2.clone()]);
    for gone in [&b1, &b3] {
        assert!(
            !sb.store().join("app").join(gone).exists(),
            "{gone} left files behind"
        );
    }
    assert!(!old.exists(), "old leftover not removed");
    assert!(young.exists(), "a young leftover must be left alone");
    // The kept snapshots still restore.
    let out = sb.run(&["restore", "app", "--snapshot", &b2, "--to", &pg.url("back")]);
    expect_code(&out, 0);
    assert_eq!(pg.fingerprint("back"), pg.fingerprint("app"));
    let audit = sb.audit_lines();
    let p = audit.iter().rev().find(|l| l["action"] == "prune").unwrap();
    assert_eq!(p["details"]["deleted"].as_array().unwrap().len(), 2);
}

#[test]
fn prune_refuses_when_backups_have_gone_stale() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 1);
    sb.file_job("app", &pg.url("app"), "");
    sb.append_job(
        "app",
        "",
        "[retention]\nkeep_last = 1\nstale_after = \"3s\"\n",
    );
    expect_code(&sb.run(&["backup", "app"]), 0);
    expect_code(&sb.run(&["backup", "app"]), 0);
    std::thread::sleep(std::time::Duration::from_secs(4));
    let text = expect_code(&sb.run(&["prune", "app", "--yes"]), 4);
    assert!(
        text.contains("stale_after") && text.contains("refusing to prune"),
        "{text}"
    );
    assert_eq!(sb.snapshots("app").len(), 2);
    // A fresh backup lifts the guard.
    expect_code(&sb.run(&["backup", "app"]), 0);
    expect_code(&sb.run(&["prune", "app", "--yes"]), 0);
    assert_eq!(sb.snapshots("app").len(), 1);
}

#[test]
fn prune_on_s3_skips_what_object_lock_still_holds() {
    let pg = Pg::start();
    let s3 = S3::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let locked_store = rt.block_on(s3.storage("locked", "backups", 5, true));
    let plain_store = rt.block_on(s3.storage("plain", "backups", 5, false));
    sb.s3_job(
        "app",
        &pg.url("app"),
        &s3,
        "locked",
        "object_lock_days = 1\nobject_lock_mode = \"governance\"",
    );
    sb.append_job("app", "", "[retention]\nkeep_last = 1\n");
    sb.s3_job("open", &pg.url("app"), &s3, "plain", "");
    sb.append_job("open", "", "[retention]\nkeep_last = 1\n");
    for job in ["app", "open"] {
        for _ in 0..3 {
            expect_code(&sb.run(&["backup", job]), 0);
        }
    }
    // Locked: every snapshot is kept and the lock named as the reason.
    let r = prune_json(&sb, &["app", "--yes"], 0);
    assert!(r["deleted"].as_array().unwrap().is_empty(), "{r}");
    let decisions = r["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 3);
    for d in &decisions[1..] {
        assert_eq!(d["keep"], true, "{d}");
        assert!(
            d["reasons"]
                .to_string()
                .contains("locked by the storage until"),
            "{d}"
        );
    }
    assert_eq!(sb.snapshots("app").len(), 3);
    let objects = rt
        .block_on(backstop::storage::Storage::list(&locked_store, "app/"))
        .unwrap();
    assert_eq!(
        objects
            .iter()
            .filter(|o| o.key.ends_with("/manifest.json"))
            .count(),
        3
    );
    let text = expect_code(&sb.run(&["prune", "app", "--dry-run"]), 0);
    assert!(text.contains("locked by the storage"), "{text}");

    // Unlocked: two go, and every one of their objects with them.
    let newest = sb.snapshots("open")[0].0.clone();
    let r = prune_json(&sb, &["open", "--yes"], 0);
    assert_eq!(r["deleted"].as_array().unwrap().len(), 2, "{r}");
    let objects = rt
        .block_on(backstop::storage::Storage::list(&plain_store, "open/"))
        .unwrap();
    assert!(!objects.is_empty());
    for o in &objects {
        assert!(
            o.key.starts_with(&format!("open/{newest}/")),
            "left: {}",
            o.key
        );
    }
}

#[test]
fn a_truncated_table_raises_the_shrink_alarm_and_the_previous_snapshot_survives_prune() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 2);
    sb.file_job("app", &pg.url("app"), "");
    sb.append_job("app", "", "[retention]\nkeep_last = 1\n");
    expect_code(&sb.run(&["backup", "app"]), 0);
    let good = sb.snapshots("app")[0].0.clone();
    // A normal change: no alarm.
    pg.sql("app", "DELETE FROM bulk WHERE id % 10 = 0");
    let text = expect_code(&sb.run(&["backup", "app"]), 0);
    assert!(!text.contains("shrink alarm"), "{text}");
    let second = sb.snapshots("app")[0].0.clone();
    // The accident.
    pg.sql("app", "TRUNCATE bulk");
    let text = expect_code(&sb.run(&["backup", "app"]), 0);
    assert!(text.contains("WARNING: shrink alarm for job app"), "{text}");
    assert!(text.contains("table public.bulk shrank from"), "{text}");
    let out = sb.run(&["--json", "list", "app"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["anomalous"], true, "{v}");
    // No table names in the plaintext manifest.
    assert!(!v[0]["warnings"].to_string().contains("bulk"), "{v}");
    assert_eq!(v[1]["snapshot"], second.as_str());
    assert_eq!(v[1]["anomalous"], false);
    // The snapshot before the accident is pinned; prune keeps it (keep_last = 1 alone
    // would delete it) and deletes the older, unpinned one.
    let r = prune_json(&sb, &["app", "--yes"], 0);
    let why = decision(&r, &second)["reasons"].to_string();
    assert!(
        why.contains("pinned until") && why.contains("shrink alarm"),
        "{why}"
    );
    assert_eq!(
        r["deleted"].as_array().unwrap(),
        &vec![serde_json::json!(good)]
    );
    let alarm = sb
        .audit_lines()
        .into_iter()
        .find(|l| l["action"] == "alarm")
        .expect("alarm in the audit log");
    assert_eq!(alarm["details"]["previous"], second.as_str());
}

/// Run `backstop ARGS` under a pseudo-terminal (util-linux `script`), typing `input`.
fn on_terminal(sb: &Sandbox, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let exe = env!("CARGO_BIN_EXE_backstop");
    let cmd = format!("{exe} --jobs {} {}", sb.jobs().display(), args.join(" "));
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .envs(sb.env.iter().cloned())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux is needed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_production_prune_on_a_terminal_needs_the_job_name_typed() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 1);
    sb.file_job("app", &pg.url("app"), "");
    sb.append_job(
        "app",
        "environment = \"production\"",
        "[retention]\nkeep_last = 1\n",
    );
    expect_code(&sb.run(&["backup", "app"]), 0);
    expect_code(&sb.run(&["backup", "app"]), 0);
    let out = on_terminal(&sb, &["prune", "app"], "yes\n");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("Type \"app\" to go on"), "{text}");
    assert!(text.contains("not confirmed"), "{text}");
    assert_eq!(sb.snapshots("app").len(), 2);
    let out = on_terminal(&sb, &["prune", "app"], "app\n");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("deleted"), "{text}");
    assert_eq!(sb.snapshots("app").len(), 1);
}
