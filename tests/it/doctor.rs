//! `backstop doctor` against a real database and moto: a key that can delete backups is
//! warned about; a bucket under Object Lock in compliance mode refuses the canary delete
//! (no warning); broken sources are errors (exit 1).

use serde_json::Value;

use crate::support::*;

fn doctor(sb: &Sandbox, job: &str, code: i32) -> Vec<Value> {
    let out = sb.run(&["--json", "doctor", job]);
    expect_code(&out, code);
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn check<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {checks:?}"))
}

#[test]
fn doctor_warns_about_keys_that_can_delete_and_trusts_compliance_locks() {
    let pg = Pg::start();
    let s3 = S3::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(s3.storage("plain", "backups", 5, false));
    let locked = rt.block_on(s3.storage("locked", "backups", 5, true));
    sb.s3_job("open", &pg.url("app"), &s3, "plain", "");
    sb.s3_job(
        "safe",
        &pg.url("app"),
        &s3,
        "locked",
        "object_lock_days = 1\nobject_lock_mode = \"compliance\"",
    );

    let c = doctor(&sb, "open", 0);
    assert_eq!(check(&c, "database")["status"], "ok", "{c:?}");
    assert_eq!(check(&c, "pg_dump")["status"], "ok", "{c:?}");
    assert_eq!(check(&c, "pg_restore")["status"], "ok", "{c:?}");
    assert_eq!(check(&c, "storage")["status"], "ok", "{c:?}");
    let del = check(&c, "can delete backups");
    assert_eq!(del["status"], "warn", "{del}");
    assert!(
        del["detail"]
            .as_str()
            .unwrap()
            .contains("can wipe every snapshot"),
        "{del}"
    );
    assert_eq!(check(&c, "object lock")["status"], "warn");
    assert_eq!(check(&c, "clock")["status"], "ok");
    // The identity file is on this host (the sandbox's job names it).
    assert_eq!(check(&c, "private key")["status"], "warn");
    assert_eq!(check(&c, "newest snapshot")["status"], "warn");
    assert_eq!(
        check(&c, "signing")["status"],
        "warn",
        "unsigned snapshots are worth a warning"
    );
    expect_code(&sb.run(&["backup", "open"]), 0);
    let c = doctor(&sb, "open", 0);
    assert_eq!(check(&c, "newest snapshot")["status"], "ok", "{c:?}");

    let c = doctor(&sb, "safe", 0);
    let del = check(&c, "can delete backups");
    assert_eq!(del["status"], "ok", "{del}");
    assert!(del["detail"].as_str().unwrap().contains("refused"), "{del}");
    assert_eq!(check(&c, "object lock")["status"], "ok", "{c:?}");
    // The canary is still there, locked.
    let left = rt
        .block_on(backstop::storage::Storage::list(&locked, "safe/doctor/"))
        .unwrap();
    assert_eq!(left.len(), 1, "{left:?}");

    // A database that is not there: an error, exit 1; the table names the job and check.
    sb.s3_job(
        "gone",
        "postgres://postgres@127.0.0.1:1/app",
        &s3,
        "plain",
        "",
    );
    let c = doctor(&sb, "gone", 1);
    assert_eq!(check(&c, "database")["status"], "error");
    let text = expect_code(&sb.run(&["doctor", "gone"]), 1);
    assert!(text.contains("gone") && text.contains("ERROR"), "{text}");
}
