//! The hostile-storage suite: each test plays an attacker who can write to the bucket and
//! knows the public age key every manifest records (nothing more), forges or alters a
//! snapshot, and checks that the attack fails with a clear message and that nothing
//! outside the restore target changes.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::support::{Pg, Sandbox, expect_code};

/// The newest snapshot directory of `job` in the sandbox's file:// store.
fn newest_dir(sb: &Sandbox, job: &str) -> PathBuf {
    let id = sb.snapshots(job)[0].0.clone();
    sb.store().join(job).join(id)
}

/// Replace (or add) object `role` of the snapshot in `dir` with `plaintext`, encrypted to
/// the job's public key, and make the manifest agree: all an attacker with write access
/// and the public key can do.
fn forge_object(sb: &Sandbox, dir: &Path, role: &str, name: &str, plaintext: &[u8]) {
    let recipient = age::x25519::Recipient::from_str(&sb.recipient).unwrap();
    let comp = backstop::config::CompressionPlan {
        level: 3,
        threads: 1,
    };
    let (bytes, st) = backstop::pipeline::encode_bytes(plaintext, comp, &[recipient]).unwrap();
    let _ = std::fs::remove_file(dir.join(name));
    std::fs::write(dir.join(name), bytes).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let objects = manifest["objects"].as_array_mut().unwrap();
    objects.retain(|o| o["role"] != role);
    objects.push(serde_json::json!({
        "name": name, "role": role, "format": "sql",
        "plaintext_bytes": plaintext.len(), "stored_bytes": st.stored_bytes, "sha256": st.sha256,
    }));
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

/// A forged roles file: a psql meta-command that runs a shell command, a server-side
/// program, and a password change of a role that exists on the target. None may happen;
/// new roles from the snapshot are still created.
#[test]
fn a_forged_roles_file_runs_no_command_and_leaves_existing_roles_alone() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    pg.sql(
        "postgres",
        "CREATE ROLE app_owner LOGIN; CREATE ROLE keeper LOGIN PASSWORD 'original'; \
         CREATE DATABASE app OWNER app_owner;",
    );
    pg.sql(
        "app",
        "SET ROLE app_owner; CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2);",
    );
    sb.file_job("app", &pg.url("app"), "globals = true");
    expect_code(&sb.run(&["backup", "app"]), 0);
    let dir = newest_dir(&sb, "app");
    let marker = sb.path().join("pwned");
    let server_marker = sb.path().join("pwned-by-server");
    let keeper_hash = pg.sql(
        "postgres",
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'keeper'",
    );
    let forged = format!(
        "CREATE ROLE app_owner;\nALTER ROLE app_owner WITH LOGIN;\nCREATE ROLE newcomer;\n\
         \\! touch {m}\n\
         ALTER ROLE keeper WITH SUPERUSER PASSWORD 'attacker';\n\
         COPY (SELECT 1) TO PROGRAM 'touch {s}';\n\
         CREATE ROLE sneaky; \\! touch {m}\n",
        m = marker.display(),
        s = server_marker.display()
    );
    forge_object(
        &sb,
        &dir,
        "globals",
        "globals.sql.zst.age",
        forged.as_bytes(),
    );
    pg.sql("postgres", "DROP DATABASE app;");
    let out = sb.run(&["--json", "restore", "app"]);
    expect_code(&out, 0);
    assert!(
        !marker.exists(),
        "a stored psql meta-command ran a shell command"
    );
    assert!(
        !server_marker.exists(),
        "a stored COPY TO PROGRAM ran on the server"
    );
    // The existing role is exactly as it was.
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'keeper'"
        ),
        keeper_hash
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'keeper'"
        ),
        "f"
    );
    // New roles of the snapshot were created, and the report says which were kept.
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname IN ('newcomer', 'sneaky')"
        ),
        "2"
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kept: Vec<&str> = r["roles"]["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(kept.contains(&"app_owner"), "{r}");
    assert_eq!(r["roles"]["refused"], 3, "{r}");
    assert_eq!(pg.sql("app", "SELECT sum(x) FROM t"), "3");
}
