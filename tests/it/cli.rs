//! The command surface: `snapshot` prints its id last, `list --json` shape, example jobs.

use crate::support::*;

#[test]
fn snapshot_prints_the_id_last_and_is_pinned() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 1);
    sb.file_job("app", &pg.url("app"), "");
    let out = sb.run(&[
        "snapshot",
        "app",
        "--reason",
        "migration 42",
        "--keep-for",
        "3d",
    ]);
    let text = expect_code(&out, 0);
    let id = stdout(&out).lines().last().unwrap().to_string();
    assert!(backstop::snapshot::is_id(&id), "{text}");
    let list: serde_json::Value =
        serde_json::from_slice(&sb.run(&["--json", "list"]).stdout).unwrap();
    let row = &list[0];
    assert_eq!(row["snapshot"], id.as_str());
    assert_eq!(row["trigger"], "snapshot");
    assert_eq!(row["reason"], "migration 42");
    let pinned: jiff::Timestamp = row["pinned_until"].as_str().unwrap().parse().unwrap();
    let days = (pinned - jiff::Timestamp::now()).get_seconds() as f64 / 86400.0;
    assert!((2.9..3.01).contains(&days), "{days}");
    assert!(row["stored_bytes"].as_u64().unwrap() > 0);
    let audit = sb.audit_lines();
    assert_eq!(audit[0]["action"], "snapshot");
    assert_eq!(audit[0]["snapshot"], id.as_str());
    // an empty reason is refused
    expect_code(&sb.run(&["snapshot", "app", "--reason", " "]), 2);
}

#[test]
fn shipped_example_jobs_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
    let env = |k: &str| Some(format!("value-of-{k}"));
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_stem().unwrap().to_str().unwrap();
            backstop::config::parse(name, &p, &text, &env)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 2, "expected example jobs in {}", dir.display());
}

#[test]
fn guard_runs_the_command_only_after_durable_snapshots_and_passes_its_exit_code() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 1);
    pg.sql("postgres", "CREATE DATABASE other");
    sb.file_job("app", &pg.url("app"), "");
    sb.file_job("other", &pg.url("other"), "");
    let marker = sb.path().join("ran");
    let script = format!("touch '{}'; exit 7", marker.display());
    let out = sb.run(&["guard", "app", "other", "--", "sh", "-c", &script]);
    expect_code(&out, 7);
    assert!(marker.exists());
    let list: serde_json::Value =
        serde_json::from_slice(&sb.run(&["--json", "list"]).stdout).unwrap();
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r["trigger"] == "guard" && r["pinned_until"].is_string()),
        "{list}"
    );
    assert!(
        rows[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("guard: sh -c"),
        "{list}"
    );
    let audit = sb.audit_lines();
    let last = audit.last().unwrap();
    assert_eq!(last["action"], "guard");
    assert_eq!(last["details"]["exit_code"], 7);

    // a snapshot that fails: the command is not run
    std::fs::remove_file(&marker).unwrap();
    sb.file_job("broken", &pg.url("no_such_db"), "");
    let text = expect_code(
        &sb.run(&["guard", "app", "broken", "--", "sh", "-c", &script]),
        1,
    );
    assert!(text.contains("was not run"), "{text}");
    assert!(
        !marker.exists(),
        "the command ran although a snapshot failed"
    );
}
