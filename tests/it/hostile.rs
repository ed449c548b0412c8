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

/// A cluster with database `app` holding `t(x)` = `x`, and a file:// job `app` on it.
fn app_job(x: i32) -> (Pg, Sandbox) {
    let pg = Pg::start();
    let sb = Sandbox::new();
    pg.sql("postgres", "CREATE DATABASE app;");
    pg.sql(
        "app",
        &format!("CREATE TABLE t (x int); INSERT INTO t VALUES ({x});"),
    );
    sb.file_job("app", &pg.url("app"), "");
    (pg, sb)
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

/// A tar stream an attacker builds: a symlink to a directory outside the target, then a
/// directory entry and files laid through it.
fn symlink_escape_tar(outside: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let header = || {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    };
    let mut h = header();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "a", outside).unwrap();
    let mut h = header();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_data(&mut h, "a/", std::io::empty()).unwrap();
    let mut h = header();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_data(&mut h, "a/newdir/", std::io::empty())
        .unwrap();
    let mut h = header();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(5);
    h.set_mode(0o644);
    b.append_data(&mut h, "a/evil", &b"owned"[..]).unwrap();
    b.into_inner().unwrap()
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A forged volume snapshot whose entries go through a symlink it laid down itself: restore
/// and verify both refuse it, and the directory outside the target is untouched.
#[test]
fn a_forged_volume_cannot_change_anything_outside_its_target() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let vol = sb.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("f"), b"data").unwrap();
    let outside = sb.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o750)).unwrap();
    sb.volume_job("vol", &vol, "");
    expect_code(&sb.run(&["backup", "vol"]), 0);
    let dir = newest_dir(&sb, "vol");
    forge_object(
        &sb,
        &dir,
        "dump",
        "dump.zst.age",
        &symlink_escape_tar(&outside),
    );
    let target = sb.path().join("restored");
    let out = sb.run(&["restore", "vol", "--to", target.to_str().unwrap()]);
    let err = expect_code(&out, 1);
    assert!(err.contains("symlink"), "{err}");
    let out = sb.run(&["verify", "vol"]);
    let err = expect_code(&out, 1);
    assert!(err.contains("symlink"), "{err}");
    // Nothing outside changed: no new entries, same mode.
    let entries: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
    assert!(entries.is_empty(), "{entries:?}");
    assert_eq!(mode_of(&outside), 0o750);
    assert!(!target.exists(), "a half-restored target was left behind");
}

/// The drill's scratch cluster runs with `trust` authentication, so it must be reachable
/// by no one else: it listens on no TCP address, only on a socket in its 0700 directory.
#[test]
fn the_drill_cluster_listens_on_no_tcp_address() {
    let (_pg, sb) = app_job(1);
    sb.append_job(
        "app",
        "",
        "[verify]\nchecks = [\"SELECT current_setting('listen_addresses') = ''\", \"SELECT inet_server_addr() IS NULL\", \"SELECT current_setting('unix_socket_permissions') = '0700'\"]",
    );
    expect_code(&sb.run(&["backup", "app"]), 0);
    let out = sb.run(&["--json", "verify", "app"]);
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["summary"]["outcome"], "passed", "{r}");
    assert!(r["summary"]["checks_passed"].as_u64().unwrap() >= 4, "{r}");
}

/// Copy snapshot folder `dir` to a new id dated `stamp` (e.g. 20991231T000000Z), with a
/// manifest that claims that time: a snapshot "from the future".
fn forge_future_copy(dir: &Path, stamp: &str) -> String {
    let id = format!("{stamp}-f00d00");
    let new = dir.parent().unwrap().join(&id);
    std::fs::create_dir_all(&new).unwrap();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        std::fs::copy(e.path(), new.join(e.file_name())).unwrap();
    }
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(new.join("manifest.json")).unwrap()).unwrap();
    m["snapshot"] = id.clone().into();
    m["started"] = "2099-12-31T00:00:00Z".into();
    m["finished"] = "2099-12-31T00:00:01Z".into();
    std::fs::remove_file(new.join("manifest.json")).unwrap();
    std::fs::write(new.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    id
}

/// A snapshot dated in the future is never newest: list skips it, restore takes the real
/// newest, and prune's keep_within counts from now, so the real snapshots survive.
#[test]
fn a_snapshot_from_the_future_is_never_newest_and_prune_keeps_the_real_ones() {
    let (pg, sb) = app_job(1);
    sb.append_job("app", "", "[retention]\nkeep_within = \"7d\"");
    expect_code(&sb.run(&["backup", "app"]), 0);
    expect_code(&sb.run(&["backup", "app"]), 0);
    let real: Vec<String> = sb.snapshots("app").into_iter().map(|s| s.0).collect();
    assert_eq!(real.len(), 2);
    let future = forge_future_copy(&newest_dir(&sb, "app"), "20991231T000000Z");
    let listed: Vec<String> = sb.snapshots("app").into_iter().map(|s| s.0).collect();
    assert_eq!(listed, real, "the future-dated snapshot was listed");
    let out = sb.run(&["--json", "restore", "app", "--to", &pg.url("copy")]);
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["snapshot"], real[0].as_str(), "{r}");
    expect_code(&sb.run(&["prune", "app", "--yes"]), 0);
    let after: Vec<String> = sb.snapshots("app").into_iter().map(|s| s.0).collect();
    assert_eq!(after, real, "prune deleted real snapshots");
    assert!(sb.store().join("app").join(&future).exists());
}

/// A junk manifest of many megabytes is not read whole: list and restore still work from
/// the real snapshots.
#[test]
fn an_oversized_manifest_is_skipped_not_read() {
    let (pg, sb) = app_job(7);
    expect_code(&sb.run(&["backup", "app"]), 0);
    let real = sb.snapshots("app")[0].0.clone();
    let junk = sb.store().join("app").join("20991230T000000Z-0bad00");
    std::fs::create_dir_all(&junk).unwrap();
    let f = std::fs::File::create(junk.join("manifest.json")).unwrap();
    f.set_len(64 << 20).unwrap();
    let listed: Vec<String> = sb.snapshots("app").into_iter().map(|s| s.0).collect();
    assert_eq!(listed, vec![real.clone()]);
    let out = sb.run(&["--json", "restore", "app", "--to", &pg.url("copy")]);
    expect_code(&out, 0);
    assert_eq!(pg.sql("copy", "SELECT sum(x) FROM t"), "7");
}

/// `backstop keygen` into the sandbox, and `[signing]` in job `job`: (public key, key dir).
fn enable_signing(sb: &Sandbox, job: &str) -> (String, PathBuf) {
    let keys = sb.path().join("keys");
    let out = sb.run(&["--json", "keygen", "--out", keys.to_str().unwrap()]);
    expect_code(&out, 0);
    let k: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let public = k["signing_public_key"].as_str().unwrap().to_string();
    sb.append_job(
        job,
        "",
        &format!(
            "[signing]\nkey_file = \"{}\"\ntrusted = [\"{public}\"]",
            keys.join("signing.key").display()
        ),
    );
    (public, keys)
}

/// Signed snapshots: the manifest's signature checks by hand with minisign; a snapshot
/// forged with the public keys only (and an unsigned one from before signing was turned
/// on) is FOREIGN: listed loudly, never newest, restored only when named with
/// --allow-foreign and confirmed.
#[test]
fn a_forged_snapshot_is_foreign_and_never_restored_unasked() {
    use std::os::unix::fs::PermissionsExt;
    let (pg, sb) = app_job(1);
    // Before signing: an unsigned snapshot.
    expect_code(&sb.run(&["backup", "app"]), 0);
    let unsigned = sb.snapshots("app")[0].0.clone();
    // The attacker's copy of the job: same storage and public age key, no signing key.
    let attacker_jobs = sb.path().join("attacker-jobs");
    std::fs::create_dir_all(&attacker_jobs).unwrap();
    std::fs::copy(sb.jobs().join("app.toml"), attacker_jobs.join("app.toml")).unwrap();
    let (public, keys) = enable_signing(&sb, "app");
    let mode = std::fs::metadata(keys.join("signing.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // keygen never overwrites.
    expect_code(&sb.run(&["keygen", "--out", keys.to_str().unwrap()]), 4);
    expect_code(&sb.run(&["backup", "app"]), 0);
    let own = sb.snapshots("app");
    assert_eq!(
        own.len(),
        1,
        "the unsigned snapshot counted as the job's own: {own:?}"
    );
    let real = own[0].0.clone();
    let dir = sb.store().join("app").join(&real);
    // By hand: minisign checks the manifest with the public key.
    let out = std::process::Command::new("minisign")
        .arg("-Vm")
        .arg(dir.join("manifest.json"))
        .arg("-P")
        .arg(&public)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The attacker: a newer snapshot with other data, encrypted to the public key, with a
    // manifest that agrees and the real signature copied beside it.
    pg.sql("app", "UPDATE t SET x = 666;");
    let attacker = std::process::Command::new(env!("CARGO_BIN_EXE_backstop"))
        .arg("--jobs")
        .arg(&attacker_jobs)
        .args(["backup", "app"])
        .envs(sb.env.iter().cloned())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    expect_code(&attacker, 0);
    let mut ids: Vec<String> = std::fs::read_dir(sb.store().join("app"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != &real && n != &unsigned && n.len() > 20)
        .collect();
    ids.sort();
    let forged = ids.pop().unwrap();
    let fdir = sb.store().join("app").join(&forged);
    // Replace its signature by the real snapshot's: a valid signature, of other bytes.
    let _ = std::fs::remove_file(fdir.join("manifest.json.minisig"));
    std::fs::copy(
        dir.join("manifest.json.minisig"),
        fdir.join("manifest.json.minisig"),
    )
    .unwrap();
    pg.sql("app", "UPDATE t SET x = 1;");
    let out = sb.run(&["list", "app"]);
    let text = expect_code(&out, 0);
    let listing = String::from_utf8_lossy(&out.stdout).to_string() + &text;
    assert!(listing.contains("FOREIGN"), "{listing}");
    assert_eq!(sb.snapshots("app")[0].0, real);
    // restore takes the real one.
    let out = sb.run(&["--json", "restore", "app", "--to", &pg.url("copy")]);
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["snapshot"], real.as_str());
    assert_eq!(pg.sql("copy", "SELECT sum(x) FROM t"), "1");
    // Named: refused (4); named with --allow-foreign but no confirmation: refused (4).
    let err = expect_code(
        &sb.run(&[
            "restore",
            "app",
            "--snapshot",
            &forged,
            "--to",
            &pg.url("copy2"),
        ]),
        4,
    );
    assert!(err.contains("FOREIGN"), "{err}");
    expect_code(
        &sb.run(&[
            "restore",
            "app",
            "--snapshot",
            &forged,
            "--allow-foreign",
            "--to",
            &pg.url("copy2"),
        ]),
        4,
    );
    assert!(!pg.databases().contains(&"copy2".to_string()));
    // Named, allowed and confirmed: restored (and it is the attacker's data).
    expect_code(
        &sb.run(&[
            "restore",
            "app",
            "--snapshot",
            &forged,
            "--allow-foreign",
            "--yes",
            "--to",
            &pg.url("copy2"),
        ]),
        0,
    );
    assert_eq!(pg.sql("copy2", "SELECT sum(x) FROM t"), "666");
}

/// Run `backstop hook` with a Claude Code Bash call of `command`; the hook's stdout.
fn hook_bash(sb: &Sandbox, command: &str) -> String {
    use std::io::Write;
    let input = serde_json::json!({
        "session_id": "s", "cwd": "/tmp", "hook_event_name": "PreToolUse",
        "tool_name": "Bash", "tool_input": {"command": command},
    })
    .to_string();
    let mut child = sb
        .cmd(&["hook"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file below `dir`, with its text (lossy).
fn all_text(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_text(&p));
        } else {
            out.push((
                p.clone(),
                String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned(),
            ));
        }
    }
    out
}

/// Secrets in a risky command (a URL password, a bearer token) reach neither the stored
/// manifest, nor `list`, nor the audit log; a huge harmless command is not logged whole;
/// the state directory is private.
#[test]
fn secrets_in_commands_are_never_stored() {
    use std::os::unix::fs::PermissionsExt;
    let (pg, sb) = app_job(1);
    let risky = "psql postgres://admin:Hunter2Secret@db.internal/app -c 'TRUNCATE t' && \
                 curl -X DELETE -H 'Authorization: Bearer tok_9f8e7d6c5b4a39281706' https://api.example.com/v1/databases/app";
    let answer = hook_bash(&sb, risky);
    assert!(answer.contains("snapshot"), "{answer}");
    assert_eq!(sb.snapshots("app").len(), 1, "{answer}");
    // A harmless call of 1 MiB.
    let huge = format!("echo {}", "a".repeat(1 << 20));
    hook_bash(&sb, &huge);
    // --to with a password, recorded in the audit log.
    let with_pw = pg
        .url("copy")
        .replacen("postgres://", "postgres://postgres:Pw0rdInArgv@", 1);
    sb.run(&["restore", "app", "--to", &with_pw]);
    let out = sb.run(&["list", "app"]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut texts = all_text(&sb.store());
    texts.extend(all_text(&sb.path().join("state")));
    texts.push(("list".into(), listing));
    for secret in ["Hunter2Secret", "tok_9f8e7d6c5b4a39281706", "Pw0rdInArgv"] {
        for (p, t) in &texts {
            assert!(!t.contains(secret), "{secret} stored in {}", p.display());
        }
    }
    let audit = std::fs::read_to_string(sb.path().join("state/audit.log")).unwrap();
    assert!(
        audit.lines().all(|l| l.len() < 16 << 10),
        "an audit line holds a whole huge command"
    );
    // The state directory and what it holds are private.
    let state = sb.path().join("state");
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for (p, _) in all_text(&state) {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o077;
        assert_eq!(mode, 0, "{} is readable by others", p.display());
    }
}

/// Two hosts back up different databases under the same job name into one storage: each
/// restores its own, and the other's snapshots are foreign to it.
#[test]
fn the_same_job_name_on_another_source_is_foreign() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    pg.sql("postgres", "CREATE DATABASE app; CREATE DATABASE other;");
    pg.sql("app", "CREATE TABLE t (x int); INSERT INTO t VALUES (1);");
    pg.sql(
        "other",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (500);",
    );
    sb.file_job("app", &pg.url("app"), "");
    expect_code(&sb.run(&["backup", "app"]), 0);
    let own = sb.snapshots("app")[0].0.clone();
    // The second host: job "app" on database "other", same storage.
    let other_jobs = sb.path().join("other-host-jobs");
    std::fs::create_dir_all(&other_jobs).unwrap();
    let text = std::fs::read_to_string(sb.jobs().join("app.toml"))
        .unwrap()
        .replace(&pg.url("app"), &pg.url("other"));
    std::fs::write(other_jobs.join("app.toml"), text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backstop"))
        .arg("--jobs")
        .arg(&other_jobs)
        .args(["backup", "app"])
        .envs(sb.env.iter().cloned())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    expect_code(&out, 0);
    assert_eq!(
        sb.snapshots("app"),
        vec![(own.clone(), "manual".to_string())]
    );
    let out = sb.run(&["--json", "restore", "app", "--to", &pg.url("copy")]);
    expect_code(&out, 0);
    assert_eq!(pg.sql("copy", "SELECT sum(x) FROM t"), "1");
    let out = sb.run(&["list", "app"]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        listing.contains("FOREIGN (taken from postgres"),
        "{listing}"
    );
}

/// A lease object's `expires` is the holder's word: one from year 9999 blocks the job only
/// until the storage's own write time plus the TTL; and a holder with this host's name on
/// another machine is not taken over as if it were a dead local process.
#[test]
fn leases_trust_neither_the_holders_clock_nor_its_host_name() {
    let (_pg, sb) = app_job(1);
    let lease_dir = sb.store().join("app/lease");
    std::fs::create_dir_all(&lease_dir).unwrap();
    let write = |body: serde_json::Value, age_secs: u64| {
        let p = lease_dir.join("000000000007");
        std::fs::write(&p, body.to_string()).unwrap();
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(age_secs);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    // Same host name, another machine, a pid that does not exist here: still held.
    write(
        serde_json::json!({
            "host": backstop::state::hostname(), "pid": 999_999, "since": "2026-11-25T06:00:00Z",
            "expires": (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(600)).to_string(),
            "action": "backup", "token": "feedface", "machine": "another-machine-0123456789abcdef",
            "ttl_secs": 300,
        }),
        0,
    );
    let text = expect_code(&sb.run(&["backup", "app"]), 5);
    assert!(text.contains("pid 999999"), "{text}");
    // Expires in year 9999, but written 10 minutes ago and never renewed: taken over.
    write(
        serde_json::json!({
            "host": "db-backup-2.example", "pid": 4242, "since": "2026-11-25T06:00:00Z",
            "expires": "9999-12-31T00:00:00Z", "action": "backup", "token": "feedface",
        }),
        600,
    );
    expect_code(&sb.run(&["backup", "app"]), 0);
    assert_eq!(sb.snapshots("app").len(), 1);
}

/// One snapshot of database `app` (made with `setup`) on a versioned (Object Lock,
/// governance) bucket, and a handle on that bucket for the attacker's writes.
fn locked_snapshot(
    bucket: &str,
    setup: &str,
    source_extra: &str,
) -> (
    Pg,
    crate::support::S3,
    Sandbox,
    tokio::runtime::Runtime,
    backstop::storage::s3::S3Storage,
    String,
) {
    let pg = Pg::start();
    let s3 = crate::support::S3::start();
    let sb = Sandbox::new();
    pg.sql("postgres", "CREATE DATABASE app;");
    pg.sql("app", setup);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(s3.storage(bucket, "backups", 5, true));
    sb.s3_job(
        "app",
        &pg.url("app"),
        &s3,
        bucket,
        "object_lock_days = 1\nobject_lock_mode = \"governance\"",
    );
    let job = sb.jobs().join("app.toml");
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(
        &job,
        text.replacen(
            "\n\n[storage]",
            &format!("\n{source_extra}\n\n[storage]"),
            1,
        ),
    )
    .unwrap();
    expect_code(&sb.run(&["backup", "app"]), 0);
    let id = sb.snapshots("app")[0].0.clone();
    (pg, s3, sb, rt, store, id)
}

/// On a versioned (Object Lock) bucket, a bucket writer puts a new version over a
/// snapshot's manifest, then hides it behind a delete marker: backstop's own writes never
/// overwrite; list still shows the snapshot and says TAMPERED; restore uses the original.
#[test]
fn a_rewritten_or_hidden_manifest_is_caught_and_the_original_restores() {
    let (pg, _s3, sb, rt, store, id) = locked_snapshot(
        "locked",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (5);",
        "",
    );
    let key = format!("backups/app/{id}/manifest.json");
    // backstop itself never writes over an object.
    let err = rt
        .block_on(backstop::storage::Storage::put_bytes(
            &store,
            &format!("app/{id}/manifest.json"),
            bytes::Bytes::from_static(b"{}"),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("overwrite"), "{err}");
    // The attacker's plain PUT: a new version over the manifest.
    rt.block_on(
        store
            .client()
            .put_object()
            .bucket("locked")
            .key(&key)
            .body(aws_sdk_s3::primitives::ByteStream::from(
                b"{\"job\":\"app\"}".to_vec(),
            ))
            .send(),
    )
    .unwrap();
    assert_eq!(sb.snapshots("app")[0].0, id);
    let out = sb.run(&["list", "app"]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(listing.contains("TAMPERED"), "{listing}");
    let out = sb.run(&["restore", "app", "--to", &pg.url("copy")]);
    expect_code(&out, 0);
    assert_eq!(pg.sql("copy", "SELECT sum(x) FROM t"), "5");
    // Hidden behind a delete marker: still found, still restores.
    rt.block_on(
        store
            .client()
            .delete_object()
            .bucket("locked")
            .key(&key)
            .send(),
    )
    .unwrap();
    assert_eq!(sb.snapshots("app")[0].0, id);
    let out = sb.run(&["restore", "app", "--to", &pg.url("copy2")]);
    expect_code(&out, 0);
    assert_eq!(pg.sql("copy2", "SELECT sum(x) FROM t"), "5");
}

/// On a versioned (Object Lock) bucket, a bucket writer puts a new version over a
/// snapshot's dump, then hides it behind a delete marker: the restore reads the version the
/// manifest describes (the versions come from the listing that found the snapshot) and
/// brings back the original rows both times.
#[test]
fn a_rewritten_or_hidden_dump_is_read_in_its_original_version() {
    let (pg, _s3, sb, rt, store, id) = locked_snapshot(
        "locked2",
        "CREATE TABLE t (x int); INSERT INTO t SELECT g FROM generate_series(1, 1000) g;",
        "",
    );
    let key = format!("backups/app/{id}/dump.zst.age");
    // The attacker's plain PUT: another age file of another size over the dump.
    let forged = {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg("echo 'DROP TABLE t;' | age -r \"$(age-keygen 2>/dev/null | age-keygen -y)\"")
            .output()
            .expect("age");
        assert!(out.status.success());
        out.stdout
    };
    rt.block_on(
        store
            .client()
            .put_object()
            .bucket("locked2")
            .key(&key)
            .body(aws_sdk_s3::primitives::ByteStream::from(forged))
            .send(),
    )
    .unwrap();
    let out = sb.run(&["restore", "app", "--to", &pg.url("copy")]);
    expect_code(&out, 0);
    assert_eq!(
        pg.sql("copy", "SELECT count(*), sum(x) FROM t"),
        "1000|500500"
    );
    // Hidden behind a delete marker: still read in its original version.
    rt.block_on(
        store
            .client()
            .delete_object()
            .bucket("locked2")
            .key(&key)
            .send(),
    )
    .unwrap();
    let out = sb.run(&["restore", "app", "--to", &pg.url("copy2")]);
    expect_code(&out, 0);
    assert_eq!(
        pg.sql("copy2", "SELECT count(*), sum(x) FROM t"),
        "1000|500500"
    );
}

/// The databases a restore left beside its target (none after a clean run).
fn leftovers(pg: &Pg) -> String {
    pg.sql(
        "postgres",
        "SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE '%restoring%'",
    )
}

/// On a versioned bucket a bucket writer hides the newest snapshot's manifest behind a
/// delete marker, so that the listing of current objects shows only the older one. The
/// restore starts from that listing (it does not wait for the version listing) but swaps
/// nothing in before the versions are seen: it restores the newest snapshot, and leaves no
/// database of the older one behind.
#[test]
fn a_hidden_newest_snapshot_is_found_before_anything_is_swapped_in() {
    let (pg, _s3, sb, rt, store, _older) = locked_snapshot(
        "locked3",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1);",
        "",
    );
    pg.sql("app", "INSERT INTO t VALUES (2);");
    expect_code(&sb.run(&["backup", "app"]), 0);
    let newest = sb.snapshots("app")[0].0.clone();
    rt.block_on(
        store
            .client()
            .delete_object()
            .bucket("locked3")
            .key(format!("backups/app/{newest}/manifest.json"))
            .send(),
    )
    .unwrap();
    let out = sb.run(&["--json", "restore", "app", "--to", &pg.url("copy")]);
    expect_code(&out, 0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["snapshot"], newest.as_str());
    assert_eq!(pg.sql("copy", "SELECT count(*), sum(x) FROM t"), "2|3");
    assert_eq!(leftovers(&pg), "");
}

/// The roles of a snapshot no signature vouches for reach beyond the new database, so
/// they wait for the version listing. A bucket writer puts a manifest of their own over
/// the newest one (a new version; the original stays under Object Lock), naming a roles
/// file of theirs that creates a superuser. The restore starts from the current
/// manifest, but never applies its roles: the versions show it rewritten, and the
/// original snapshot is restored.
#[test]
fn roles_of_a_rewritten_manifest_are_never_applied() {
    let (pg, _s3, sb, rt, store, id) = locked_snapshot(
        "locked4",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2), (3);",
        "globals = true",
    );
    let dir = format!("backups/app/{id}");
    let get = |key: String| {
        rt.block_on(async {
            let o = store
                .client()
                .get_object()
                .bucket("locked4")
                .key(key)
                .send()
                .await
                .unwrap();
            o.body.collect().await.unwrap().into_bytes().to_vec()
        })
    };
    let put = |key: String, body: Vec<u8>| {
        rt.block_on(
            store
                .client()
                .put_object()
                .bucket("locked4")
                .key(key)
                .body(aws_sdk_s3::primitives::ByteStream::from(body))
                .send(),
        )
        .unwrap();
    };
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&get(format!("{dir}/manifest.json"))).unwrap();
    assert!(
        manifest["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["role"] == "globals"),
        "the snapshot stores roles"
    );
    let evil = b"CREATE ROLE intruder WITH SUPERUSER LOGIN PASSWORD 'x';\n";
    let recipient = age::x25519::Recipient::from_str(&sb.recipient).unwrap();
    let comp = backstop::config::CompressionPlan {
        level: 3,
        threads: 1,
    };
    let (bytes, st) = backstop::pipeline::encode_bytes(evil, comp, &[recipient]).unwrap();
    put(format!("{dir}/roles.sql.zst.age"), bytes);
    let objects = manifest["objects"].as_array_mut().unwrap();
    objects.retain(|o| o["role"] != "globals");
    objects.push(serde_json::json!({
        "name": "roles.sql.zst.age", "role": "globals", "format": "sql",
        "plaintext_bytes": evil.len(), "stored_bytes": st.stored_bytes, "sha256": st.sha256,
    }));
    put(
        format!("{dir}/manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    );
    let out = sb.run(&["restore", "app", "--to", &pg.url("copy")]);
    expect_code(&out, 0);
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'intruder'"
        ),
        "0",
        "the rewritten manifest's roles were applied"
    );
    assert_eq!(pg.sql("copy", "SELECT count(*), sum(x) FROM t"), "3|6");
    assert_eq!(leftovers(&pg), "");
}

/// A tmpfs mounted on a directory, unmounted when dropped (the test runs as root, as CI does).
struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(dir: &Path) -> Mounted {
        std::fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount(8) is needed by this test");
        assert!(
            st.success(),
            "this test mounts a tmpfs and needs root (as CI runs); mount failed"
        );
        Mounted(dir.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A volume restored onto a mount point: the tree cannot be renamed across filesystems, so
/// it is staged inside the mount and swapped in entry by entry; the content comes back
/// exactly and the previous content is kept inside, named.
#[test]
fn a_volume_restores_onto_a_mount_point() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let vol = sb.path().join("vol");
    let _mnt = Mounted::tmpfs(&vol);
    std::fs::create_dir_all(vol.join("sub")).unwrap();
    std::fs::write(vol.join("sub/a.txt"), b"alpha").unwrap();
    std::fs::write(vol.join("b.bin"), vec![7u8; 100_000]).unwrap();
    std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o750)).unwrap();
    sb.volume_job("vol", &vol, "");
    expect_code(&sb.run(&["backup", "vol"]), 0);
    // The disaster: the data is replaced.
    std::fs::remove_dir_all(vol.join("sub")).unwrap();
    std::fs::write(vol.join("b.bin"), b"wrong").unwrap();
    std::fs::write(vol.join("junk"), b"junk").unwrap();
    let out = sb.run(&["--json", "restore", "vol", "--yes"]);
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(std::fs::read(vol.join("sub/a.txt")).unwrap(), b"alpha");
    assert_eq!(
        std::fs::read(vol.join("b.bin")).unwrap(),
        vec![7u8; 100_000]
    );
    assert!(!vol.join("junk").exists());
    assert_eq!(
        std::fs::metadata(&vol).unwrap().permissions().mode() & 0o777,
        0o750
    );
    // --yes removed the previous content; nothing else is left inside.
    let names: Vec<String> = std::fs::read_dir(&vol)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?} ({r})");
}

/// A cluster job's WAL archive written by someone with only the public keys: an unsigned
/// marker (for a new file, or put over a real one), or an oversized one, is refused by
/// wal-fetch before a byte is written; the real file still comes back.
#[test]
fn forged_or_oversized_wal_markers_are_refused() {
    let sb = Sandbox::new();
    let job = |jobs: &Path, extra: &str| {
        std::fs::create_dir_all(jobs).unwrap();
        std::fs::write(
            jobs.join("main.toml"),
            format!(
                "[source]\ntype = \"postgres-cluster\"\nurl = \"postgres://postgres@127.0.0.1:1/postgres\"\n\
                 [storage]\nurl = \"file://{}\"\n[encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n{extra}",
                sb.store().display(),
                sb.recipient,
                sb.identity.display()
            ),
        )
        .unwrap();
    };
    job(&sb.jobs(), "");
    enable_signing(&sb, "main");
    // The attacker's copy of the job: same storage and public keys, no signing key.
    let evil = sb.path().join("evil-jobs");
    job(&evil, "");
    let evil_run = |args: &[&str]| {
        let mut all = vec!["--jobs", evil.to_str().unwrap()];
        all.extend_from_slice(args);
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_backstop"));
        c.args(&all).envs(sb.env.iter().cloned());
        c.output().unwrap()
    };
    let seg = |n: u32, fill: u8| {
        let p = sb.path().join(format!("00000001000000000000000{n}"));
        std::fs::write(&p, vec![fill; 200_000]).unwrap();
        p
    };
    let real = seg(3, 1);
    expect_code(&sb.run(&["wal-push", "main", real.to_str().unwrap()]), 0);
    let dir = sb.store().join("main/wal/00000001");
    let fetch = |name: &str| {
        let dest = sb.path().join(format!("fetched-{name}"));
        let out = sb.run(&["wal-fetch", "main", name, dest.to_str().unwrap()]);
        (out, dest)
    };

    // A new file forged with the public key only: unsigned, refused.
    let forged = seg(4, 2);
    expect_code(
        &evil_run(&["wal-push", "main", forged.to_str().unwrap()]),
        0,
    );
    let (out, dest) = fetch("000000010000000000000004");
    let err = expect_code(&out, 1);
    assert!(err.contains("not trusted"), "{err}");
    assert!(!dest.exists(), "nothing written");

    // The real marker replaced by a forged one for other content: refused, not the
    // attacker's bytes.
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("000000010000000000000003")
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    let other = seg(3, 9);
    expect_code(&evil_run(&["wal-push", "main", other.to_str().unwrap()]), 0);
    let (out, dest) = fetch("000000010000000000000003");
    let err = expect_code(&out, 1);
    assert!(err.contains("not trusted"), "{err}");
    assert!(!dest.exists(), "nothing written");

    // An oversized marker is not read whole.
    std::fs::write(
        dir.join("000000010000000000000005.json"),
        vec![b' '; 200_000],
    )
    .unwrap();
    let (out, dest) = fetch("000000010000000000000005");
    let err = expect_code(&out, 1);
    assert!(err.contains("larger than"), "{err}");
    assert!(!dest.exists());

    // The signed file pushed again by the real job comes back whole.
    let again = seg(6, 5);
    expect_code(&sb.run(&["wal-push", "main", again.to_str().unwrap()]), 0);
    let (out, dest) = fetch("000000010000000000000006");
    expect_code(&out, 0);
    assert_eq!(std::fs::read(dest).unwrap(), vec![5u8; 200_000]);
}

/// The next backup starts the pg_dump the last one used (remembered in the state
/// directory) before the server is asked its version. A remembered directory that
/// discovery would not look in is never run from, and a remembered version that is not
/// the one for this server is replaced before a byte of its output is read: the snapshot
/// is made by the right pg_dump and restores.
#[test]
fn a_remembered_pg_dump_outside_the_known_directories_is_never_run() {
    let (pg, sb) = app_job(42);
    expect_code(&sb.run(&["backup", "app"]), 0);
    let state = sb.path().join("state/jobs/app.json");
    let mut st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let real = st["pg_dump"].clone();
    assert!(
        real["dir"].as_str().is_some_and(|d| !d.is_empty()),
        "the first backup remembers its pg_dump: {st}"
    );

    // A directory nobody configured, holding a "pg_dump" that leaves a mark if run.
    let evil = sb.path().join("evil-bin");
    std::fs::create_dir_all(&evil).unwrap();
    let mark = sb.path().join("ran");
    let script = evil.join("pg_dump");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ntouch {}\nexit 0\n", mark.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    st["pg_dump"]["dir"] = serde_json::json!(evil.display().to_string());
    std::fs::write(&state, serde_json::to_vec(&st).unwrap()).unwrap();
    expect_code(&sb.run(&["backup", "app"]), 0);
    assert!(
        !mark.exists(),
        "a remembered unknown directory was run from"
    );

    // The right directory with a version this server does not need: restarted.
    st["pg_dump"] = real.clone();
    st["pg_dump"]["major"] = serde_json::json!(9);
    st["pg_dump"]["version"] = serde_json::json!("9.6.0");
    std::fs::write(&state, serde_json::to_vec(&st).unwrap()).unwrap();
    pg.sql("app", "INSERT INTO t VALUES (43);");
    expect_code(&sb.run(&["backup", "app"]), 0);
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(
        after["pg_dump"], real,
        "the right pg_dump is remembered again"
    );
    let out = sb.run(&["restore", "app", "--to", &pg.url("again")]);
    expect_code(&out, 0);
    assert_eq!(
        pg.sql("again", "SELECT string_agg(x::text, ',' ORDER BY x) FROM t"),
        "42,43"
    );
}

/// A signed job's dump object replaced (the signed manifest left as it is) by a real
/// archive whose table of contents carries a statement that acts outside the new
/// database: a restore that runs statements while the object still downloads (streamed or
/// progressive) must prove them against the manifest first. Nothing runs, nothing is left.
#[test]
fn a_replaced_dump_runs_none_of_its_statements_before_it_is_proven() {
    let (pg, sb) = app_job(7);
    enable_signing(&sb, "app");
    // A comment whose text the attacker rewrites.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let filler: String = (0..160)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap()
        })
        .collect();
    // Several MiB stored, so the head reaches pg_restore long before the object's end.
    pg.sql(
        "app",
        &format!(
            "COMMENT ON TABLE t IS '{filler}';\n\
             CREATE TABLE bulk AS SELECT g, md5(g::text) || md5((g * 7)::text) AS a FROM generate_series(1, 100000) g;"
        ),
    );
    expect_code(&sb.run(&["backup", "app"]), 0);
    let dir = newest_dir(&sb, "app");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let dump = manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["role"] == "dump")
        .unwrap();
    assert_eq!(
        dump["head_sha256"].as_str().map(str::len),
        Some(64),
        "{dump}"
    );

    // The attacker's archive: the same database's dump, its comment rewritten (same
    // length, so the archive stays well formed) into a statement that creates a role.
    let out = std::process::Command::new(crate::support::pg_bindir().join("pg_dump"))
        .args(["-Fc", "--compress=0", "--dbname", &pg.url("app")])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut forged = out.stdout;
    let payload = "x'; CREATE ROLE pwned_by_toc; SELECT '";
    let evil = format!("{payload}{}", "y".repeat(filler.len() - payload.len()));
    let at = forged
        .windows(filler.len())
        .position(|w| w == filler.as_bytes())
        .expect("the comment is in the table of contents");
    forged[at..at + filler.len()].copy_from_slice(evil.as_bytes());
    let recipient = age::x25519::Recipient::from_str(&sb.recipient).unwrap();
    let comp = backstop::config::CompressionPlan {
        level: 3,
        threads: 1,
    };
    let (bytes, _) = backstop::pipeline::encode_bytes(&forged, comp, &[recipient]).unwrap();
    let _ = std::fs::remove_file(dir.join("dump.zst.age"));
    std::fs::write(dir.join("dump.zst.age"), bytes).unwrap();

    let roles = || {
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'pwned_by_toc'",
        )
    };
    for mode in ["stream", "progressive", "stage"] {
        let target = format!("victim_{mode}");
        let out = sb
            .cmd(&["restore", "app", "--to", &pg.url(&target)])
            .env("BACKSTOP_RESTORE_MODE", mode)
            .output()
            .unwrap();
        let said = expect_code(&out, 1);
        // Whichever check speaks first (the head's, or the whole object's once it has
        // all arrived), it says that nothing was restored.
        assert!(
            said.contains("table of contents does not match")
                || said.contains("corrupt or truncated"),
            "{mode}: {said}"
        );
        assert!(
            !said.contains("records no table-of-contents hash"),
            "{mode}: {said}"
        );
        assert_eq!(
            roles(),
            "0",
            "{mode}: a statement of the forged archive ran"
        );
        assert!(!pg.databases().contains(&target), "{mode}: target created");
    }
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert!(
        !pg.databases().iter().any(|d| d.contains("_restoring_")),
        "no half-restored database is left: {:?}",
        pg.databases()
    );

    // The forged archive is a real attack: restored by plain pg_restore, its statement runs.
    let plain = sb.path().join("forged.pgdump");
    std::fs::write(&plain, &forged).unwrap();
    pg.sql("postgres", "CREATE DATABASE scratch;");
    let _ = std::process::Command::new(crate::support::pg_bindir().join("pg_restore"))
        .args(["--section=pre-data", "--dbname", &pg.url("scratch")])
        .arg(&plain)
        .output()
        .unwrap();
    assert_eq!(
        roles(),
        "1",
        "the forged statement runs when nothing checks it"
    );
}

/// Two storages: a bucket writer of one of them (b) adds a newer snapshot made with the
/// public keys only (unsigned) and hides the real newest one there. The merged catalog
/// still has the real newest (from a) and marks the forged one FOREIGN; restore takes the
/// real one; `--storage b` takes b's newest real one, never the forgery; `copy` from b
/// never spreads the forgery to a, and from a puts the hidden snapshot back on b.
#[test]
fn a_snapshot_forged_on_one_storage_neither_hides_nor_replaces_the_real_one() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    pg.sql("postgres", "CREATE DATABASE app;");
    pg.sql("app", "CREATE TABLE t (x int); INSERT INTO t VALUES (1);");
    let (a, b) = (sb.path().join("store-a"), sb.path().join("store-b"));
    sb.write_job(
        "app",
        &format!(
            "[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n\
             [[storage]]\nname = \"a\"\nurl = \"file://{}\"\n\n\
             [[storage]]\nname = \"b\"\nurl = \"file://{}\"\n\n\
             [encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n",
            pg.url("app"),
            a.display(),
            b.display(),
            sb.recipient,
            sb.identity.display()
        ),
    );
    // The attacker's job: storage b only, the public age key, no signing key.
    let attacker_jobs = sb.path().join("attacker-jobs");
    std::fs::create_dir_all(&attacker_jobs).unwrap();
    std::fs::write(
        attacker_jobs.join("app.toml"),
        format!(
            "[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n[storage]\nurl = \"file://{}\"\n\n\
             [encryption]\nrecipients = [\"{}\"]\n",
            pg.url("app"),
            b.display(),
            sb.recipient
        ),
    )
    .unwrap();
    enable_signing(&sb, "app");
    expect_code(&sb.run(&["backup", "app"]), 0);
    let first = sb.snapshots("app")[0].0.clone();
    pg.sql("app", "UPDATE t SET x = 2;");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    expect_code(&sb.run(&["backup", "app"]), 0);
    let real = sb.snapshots("app")[0].0.clone();
    assert_ne!(first, real);

    pg.sql("app", "UPDATE t SET x = 666;");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backstop"))
        .arg("--jobs")
        .arg(&attacker_jobs)
        .args(["backup", "app"])
        .envs(sb.env.iter().cloned())
        .env("BACKSTOP_STATE_DIR", sb.path().join("attacker-state"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    expect_code(&out, 0);
    let forged = std::fs::read_dir(b.join("app"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() > 20 && n != &first && n != &real)
        .max()
        .expect("the forged snapshot is on b");
    // Hide the real newest on b.
    for f in ["manifest.json", "manifest.json.minisig"] {
        std::fs::remove_file(b.join("app").join(&real).join(f)).unwrap();
    }
    pg.sql("app", "UPDATE t SET x = 0;");

    let out = sb.run(&["--json", "list", "app"]);
    expect_code(&out, 0);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |id: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["snapshot"] == id)
            .cloned()
    };
    assert!(
        row(&forged).is_some_and(|r| r.get("foreign").is_some()),
        "the forged snapshot is listed as foreign: {rows}"
    );
    assert_eq!(sb.snapshots("app")[0].0, real, "{rows}");

    let out = sb.run(&["--json", "restore", "app", "--to", &pg.url("back")]);
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["snapshot"], real.as_str());
    assert_eq!(pg.sql("back", "SELECT sum(x) FROM t"), "2");

    let out = sb.run(&[
        "--json",
        "restore",
        "app",
        "--storage",
        "b",
        "--to",
        &pg.url("from_b"),
    ]);
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["snapshot"], first.as_str(), "b's newest real snapshot");
    assert_eq!(pg.sql("from_b", "SELECT sum(x) FROM t"), "1");

    sb.copy_all_missing("app", "b", "a");
    assert!(
        !a.join("app").join(&forged).exists(),
        "copy spread the forged snapshot to a"
    );
    sb.copy_all_missing("app", "a", "b");
    assert!(
        b.join("app").join(&real).join("manifest.json").exists(),
        "copy put the hidden snapshot back on b"
    );
    assert_eq!(
        std::fs::read(a.join("app").join(&real).join("manifest.json")).unwrap(),
        std::fs::read(b.join("app").join(&real).join("manifest.json")).unwrap()
    );
}
