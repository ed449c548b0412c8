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
            backstop::job::parse(name, &p, &text, &env)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 2, "expected example jobs in {}", dir.display());
}
