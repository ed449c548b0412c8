//! Volume snapshots with real files and processes: every kind of entry round-trips and is
//! compared entry by entry; a PostgreSQL data directory comes back and starts; pre/post
//! commands; damaged objects never reach the target; restore by hand with tar.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::support::*;

/// (type, mode, uid, gid, mtime, size, content hash, link target) of every entry below `root`.
fn describe(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let mut names: Vec<_> = std::fs::read_dir(root.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let r = rel.join(&n);
            let p = root.join(&r);
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let (kind, extra) = if ft.is_dir() {
                ("dir", String::new())
            } else if ft.is_symlink() {
                (
                    "symlink",
                    std::fs::read_link(&p).unwrap().display().to_string(),
                )
            } else if ft.is_file() {
                ("file", backstop::volume::target::hash_file(&p).unwrap())
            } else {
                ("other", String::new())
            };
            let mtime = if ft.is_symlink() { 0 } else { m.mtime() };
            out.insert(
                r.clone(),
                format!(
                    "{kind} {:o} {}:{} {mtime} {} {extra} links={}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid(),
                    if ft.is_dir() { 0 } else { m.len() },
                    if ft.is_file() { m.nlink() } else { 0 }
                ),
            );
            if ft.is_dir() {
                walk(root, &r, out);
            }
        }
    }
    walk(root, Path::new(""), &mut out);
    out
}

fn set_mtime(p: &Path, secs: u64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    std::fs::File::open(p)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_modified(t))
        .unwrap();
}

/// A tree with every kind of entry the volume source keeps, plus a fifo it skips.
fn awkward_tree(root: &Path, big_mib: usize) {
    use std::io::{Seek, SeekFrom, Write};
    std::fs::create_dir_all(root.join("dir with spaces/nested/deeper")).unwrap();
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    std::fs::write(root.join("plain.txt"), "hello\n").unwrap();
    std::fs::write(root.join("zero-bytes"), "").unwrap();
    std::fs::write(root.join("dir with spaces/nested/deeper/file"), "deep").unwrap();
    std::fs::write(root.join("new\nline name"), "newline in the name").unwrap();
    std::fs::write(
        root.join(OsStr::from_bytes(b"latin1-caf\xe9")),
        "not utf-8 name",
    )
    .unwrap();
    std::fs::write(
        root.join(format!("{}-long-name", "x".repeat(180))),
        "long name",
    )
    .unwrap();
    std::fs::write(root.join("secret"), "mode 600").unwrap();
    std::fs::set_permissions(root.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(root.join("script.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        root.join("script.sh"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::os::unix::fs::symlink("plain.txt", root.join("relative-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("absolute-link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling-link")).unwrap();
    std::os::unix::fs::symlink("dir with spaces", root.join("dir-link")).unwrap();
    std::fs::hard_link(
        root.join("plain.txt"),
        root.join("dir with spaces/hard-link"),
    )
    .unwrap();
    // a sparse file: 1 GiB apparent, a few KiB of data
    let mut f = std::fs::File::create(root.join("sparse.img")).unwrap();
    f.set_len(1 << 30).unwrap();
    for off in [0u64, 1 << 29, (1 << 30) - 4096] {
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(&[0xab; 4096]).unwrap();
    }
    drop(f);
    // a big file of varied bytes
    let mut big = std::fs::File::create(root.join("big.bin")).unwrap();
    let block: Vec<u8> = (0..(1 << 20))
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for i in 0..big_mib {
        let mut b = block.clone();
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        big.write_all(&b).unwrap();
    }
    drop(big);
    // owners (when root) and old mtimes
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(root.join("secret"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::chown(root.join("empty dir"), Some(4321), Some(8765)).unwrap();
    }
    for p in [
        "plain.txt",
        "secret",
        "big.bin",
        "empty dir",
        "dir with spaces/nested",
    ] {
        set_mtime(&root.join(p), 1_600_000_000);
    }
    set_mtime(&root.join("dir with spaces"), 1_500_000_000);
    let fifo = std::ffi::CString::new(root.join("a-fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
}

fn without_fifo(mut d: BTreeMap<PathBuf, String>) -> BTreeMap<PathBuf, String> {
    d.remove(Path::new("a-fifo"));
    d
}

#[test]
fn every_kind_of_entry_round_trips_and_a_wiped_volume_comes_back() {
    let sb = Sandbox::new();
    let vol = sb.path().join("volume");
    std::fs::create_dir(&vol).unwrap();
    awkward_tree(&vol, 110);
    let before = without_fifo(describe(&vol));
    sb.volume_job("files", &vol, "");
    let out = sb.run(&["--json", "backup", "files"]);
    expect_code(&out, 0);
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["source"]["kind"], "volume");
    assert!(m["warnings"].to_string().contains("fifos skipped"), "{m}");
    // the sparse file was not inflated: far less than 1 GiB went through the pipeline
    assert!(m["plaintext_bytes"].as_u64().unwrap() < 200 << 20, "{m}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("plain.txt") && !text.contains("big.bin"),
        "file names leaked into the manifest"
    );

    std::fs::remove_dir_all(&vol).unwrap();
    let out = sb.run(&["restore", "files"]);
    let msg = expect_code(&out, 0);
    assert!(msg.contains("checked"), "{msg}");
    assert_eq!(describe(&vol), before);
    let sparse = std::fs::metadata(vol.join("sparse.img")).unwrap();
    assert_eq!(sparse.len(), 1 << 30);
    assert!(
        sparse.blocks() * 512 < 64 << 20,
        "the sparse file was inflated: {} blocks",
        sparse.blocks()
    );
    // nothing left beside the target
    let siblings: Vec<_> = std::fs::read_dir(sb.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !siblings
            .iter()
            .any(|n| n.to_string_lossy().contains("backstop-")),
        "{siblings:?}"
    );
}

#[test]
fn volume_snapshot_restores_by_hand_with_age_zstd_and_tar() {
    let sb = Sandbox::new();
    let vol = sb.path().join("volume");
    std::fs::create_dir(&vol).unwrap();
    awkward_tree(&vol, 3);
    let before = without_fifo(describe(&vol));
    sb.volume_job("files", &vol, "");
    expect_code(&sb.run(&["backup", "files"]), 0);
    let snap = std::fs::read_dir(sb.store().join("files"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let dest = sb.path().join("by-hand");
    std::fs::create_dir(&dest).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; age -d -i '{}' '{}/dump.zst.age' | zstd -d | tar -x --numeric-owner -p -C '{}'",
            sb.identity.display(),
            snap.display(),
            dest.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar by hand failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // GNU tar sets directory mtimes and modes itself; compare all but the root's own entry
    assert_eq!(describe(&dest), before);
}

#[test]
fn a_postgres_data_directory_comes_back_and_starts() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_awkward(&pg, "app");
    let before = pg.fingerprint("app");
    let data = pg.dir.path().join("data");
    let stop = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(pg.bindir.join("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .args(["-m", "fast", "-w", "stop"])
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    sb.volume_job("pgdata", &data, "");
    expect_code(&sb.run(&["backup", "pgdata"]), 0);
    std::fs::remove_dir_all(&data).unwrap();
    expect_code(&sb.run(&["restore", "pgdata"]), 0);
    let start = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(pg.bindir.join("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .args([
            "-o",
            &format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                pg.port,
                pg.dir.path().display()
            ),
            "-l",
        ])
        .arg(pg.dir.path().join("server2.log"))
        .args(["-w", "-t", "60", "start"])
        .output()
        .unwrap();
    assert!(
        start.status.success(),
        "the restored cluster did not start: {}",
        String::from_utf8_lossy(&start.stderr)
    );
    assert_eq!(pg.fingerprint("app"), before);
}

#[test]
fn a_failing_pre_command_means_no_snapshot_and_post_always_runs() {
    let sb = Sandbox::new();
    let vol = sb.path().join("volume");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("f"), "x").unwrap();
    let marker = sb.path().join("post-ran");
    sb.volume_job(
        "files",
        &vol,
        &format!("pre = [\"sh\", \"-c\", \"echo freeze failed >&2; exit 3\"]\npost = [\"touch\", \"{}\"]", marker.display()),
    );
    let text = expect_code(&sb.run(&["backup", "files"]), 1);
    assert!(
        text.contains("pre command") && text.contains("freeze failed"),
        "{text}"
    );
    assert!(marker.exists(), "post did not run after a failed pre");
    assert_eq!(stdout(&sb.run(&["--json", "list", "files"])).trim(), "[]");

    // a read that fails (snapshot_path missing): post runs, no snapshot
    std::fs::remove_file(&marker).unwrap();
    sb.volume_job(
        "files",
        &vol,
        &format!(
            "snapshot_path = \"{}/not-mounted\"\npost = [\"touch\", \"{}\"]",
            sb.path().display(),
            marker.display()
        ),
    );
    let text = expect_code(&sb.run(&["backup", "files"]), 1);
    assert!(text.contains("not-mounted"), "{text}");
    assert!(marker.exists(), "post did not run after a failed read");
    assert_eq!(stdout(&sb.run(&["--json", "list", "files"])).trim(), "[]");
}

#[test]
fn damaged_volume_snapshots_never_touch_the_old_tree() {
    let sb = Sandbox::new();
    let vol = sb.path().join("volume");
    std::fs::create_dir(&vol).unwrap();
    awkward_tree(&vol, 2);
    sb.volume_job("files", &vol, "");
    expect_code(&sb.run(&["backup", "files"]), 0);
    std::fs::write(vol.join("plain.txt"), "changed after the backup\n").unwrap();
    let current = describe(&vol);
    let snap = std::fs::read_dir(sb.store().join("files"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let dump = snap.join("dump.zst.age");
    let good = std::fs::read(&dump).unwrap();

    let mut bad = good.clone();
    let i = bad.len() / 3;
    bad[i] ^= 1;
    std::fs::write(&dump, &bad).unwrap();
    let text = expect_code(&sb.run(&["restore", "files", "--yes"]), 1);
    assert!(text.contains("corrupt"), "{text}");
    assert_eq!(describe(&vol), current);

    std::fs::write(&dump, &good[..good.len() / 2]).unwrap();
    let text = expect_code(&sb.run(&["restore", "files", "--yes"]), 1);
    assert!(text.contains("truncated"), "{text}");
    assert_eq!(describe(&vol), current);
    let leftovers: Vec<_> = std::fs::read_dir(sb.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("backstop-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // a non-empty target needs --yes
    std::fs::write(&dump, &good).unwrap();
    let text = expect_code(&sb.run(&["restore", "files"]), 4);
    assert!(text.contains("--yes"), "{text}");
    assert_eq!(describe(&vol), current);
    // with it, the snapshot's content is back and the old tree is gone
    expect_code(&sb.run(&["restore", "files", "--yes"]), 0);
    assert_eq!(
        std::fs::read_to_string(vol.join("plain.txt")).unwrap(),
        "hello\n"
    );
    // --to another directory
    let elsewhere = sb.path().join("elsewhere");
    expect_code(
        &sb.run(&["restore", "files", "--to", elsewhere.to_str().unwrap()]),
        0,
    );
    assert_eq!(
        without_fifo(describe(&elsewhere)),
        without_fifo(describe(&vol))
    );
}

#[test]
fn a_file_changing_during_the_read_is_flagged_and_strict_fails() {
    let sb = Sandbox::new();
    let vol = sb.path().join("volume");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("growing.log"), vec![b'x'; 64 << 20]).unwrap();
    let pidfile = sb.path().join("writer.pid");
    // pre starts a writer that keeps appending while backstop reads; post stops it
    let pre = format!(
        "pre = [\"sh\", \"-c\", \"(while :; do echo more >> '{}/growing.log'; done) >/dev/null 2>&1 & echo $! > '{}'\"]\npost = [\"sh\", \"-c\", \"kill $(cat '{}')\"]",
        vol.display(),
        pidfile.display(),
        pidfile.display()
    );
    sb.volume_job("live", &vol, &format!("{pre}\nstrict = true"));
    let text = expect_code(&sb.run(&["backup", "live"]), 1);
    assert!(
        text.contains("changed during read") && text.contains("strict"),
        "{text}"
    );
    assert_eq!(stdout(&sb.run(&["--json", "list", "live"])).trim(), "[]");

    sb.volume_job("live", &vol, &pre);
    let out = sb.run(&["--json", "backup", "live"]);
    expect_code(&out, 0);
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        m["warnings"].to_string().contains("changed during read"),
        "{m}"
    );
}
