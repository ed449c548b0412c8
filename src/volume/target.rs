//! Volume restore: extract the snapshot's tar stream into a new sibling directory of the
//! target (same filesystem), check every entry against the recorded list (type, mode,
//! mtime, size, SHA-256, link target; owners when root), and only then swap it into place
//! with an atomic rename exchange. Archive entries that are absolute, contain `..`, or hard
//! links that point outside the tree are refused; nothing is written through a symlink.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{File, FileTimes};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::volume::source::{EntryFact, VolumeFacts, decode_path, encode_path};

/// What the target directory holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetState {
    Missing,
    Empty,
    NonEmpty(u64),
}

pub(crate) fn inspect(target: &Path) -> Result<TargetState> {
    match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(TargetState::Missing),
        Err(e) => Err(Error::failed(format!(
            "cannot inspect the target {}: {e}",
            target.display()
        ))),
        Ok(m) if !m.is_dir() => Err(Error::refused(format!(
            "the target {} exists and is not a directory; move it away or restore with --to another path",
            target.display()
        ))),
        Ok(_) => {
            let n = std::fs::read_dir(target)
                .map_err(|e| {
                    Error::failed(format!("cannot list the target {}: {e}", target.display()))
                })?
                .count() as u64;
            Ok(if n == 0 {
                TargetState::Empty
            } else {
                TargetState::NonEmpty(n)
            })
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A relative path with only normal components.
fn check_rel(p: &Path, what: &str) -> Result<()> {
    let ok = !p.as_os_str().is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !ok {
        return Err(Error::failed(format!(
            "refusing archive entry {what} {:?}: absolute paths and `..` are not allowed in a snapshot",
            p.display()
        )));
    }
    Ok(())
}

/// Extract a tar stream into `dst` (an empty directory). Returns the number of entries.
pub(crate) fn extract<R: Read>(reader: R, dst: &Path, facts: &VolumeFacts) -> Result<u64> {
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(false);
    ar.set_preserve_ownerships(is_root());
    ar.set_overwrite(false);
    let mut dirs: Vec<(PathBuf, u32, u64, u64, u64)> = Vec::new();
    let mut n = 0u64;
    let entries = ar
        .entries()
        .map_err(|e| Error::failed(format!("reading the archive: {e}")))?;
    for entry in entries {
        let mut e = entry.map_err(|e| Error::failed(format!("reading the archive: {e}")))?;
        let path = e
            .path()
            .map_err(|e| Error::failed(format!("reading the archive: {e}")))?
            .into_owned();
        check_rel(&path, "path")?;
        let h = e.header();
        let kind = h.entry_type();
        if kind.is_dir() {
            let mode = h.mode().unwrap_or(0o755);
            let mtime = h.mtime().unwrap_or(0);
            let (uid, gid) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));
            // Created beneath `dst` without following any symlink an earlier entry laid
            // down (`a -> /etc`, then `a/`).
            open_dir_beneath(dst, &path, true)?;
            dirs.push((path, mode, mtime, uid, gid));
        } else if kind.is_hard_link()
            || kind.is_symlink()
            || kind.is_file()
            || kind.is_gnu_sparse()
            || kind == tar::EntryType::Continuous
        {
            if kind.is_hard_link() {
                let target = e
                    .link_name()
                    .map_err(|e| Error::failed(format!("reading the archive: {e}")))?
                    .ok_or_else(|| {
                        Error::failed(format!("hard link {} has no target", path.display()))
                    })?;
                check_rel(&target, "hard link target")?;
                if let Some(parent) = target.parent() {
                    open_dir_beneath(dst, parent, false)?;
                }
            }
            if let Some(parent) = path.parent() {
                open_dir_beneath(dst, parent, true)?;
            }
            let done = e.unpack_in(dst).map_err(|err| {
                let cause = std::error::Error::source(&err)
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default();
                Error::failed(format!("extracting {}: {err}{cause}", path.display()))
            })?;
            if !done {
                return Err(Error::failed(format!(
                    "refusing archive entry {}",
                    path.display()
                )));
            }
        } else {
            return Err(Error::failed(format!(
                "unexpected entry type {kind:?} for {} in a volume snapshot",
                path.display()
            )));
        }
        n += 1;
    }
    // Directories last, deepest first: their modes may forbid writes, and extracting
    // their contents changed their mtimes.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
    for (rel, mode, mtime, uid, gid) in dirs {
        let fd = open_dir_beneath(dst, &rel, false)?;
        set_meta_fd(&fd, &rel, mode, mtime as i64, (uid as u32, gid as u32))?;
    }
    set_meta(
        dst,
        facts.root_mode,
        facts.root_mtime,
        (facts.root_uid, facts.root_gid),
    )?;
    Ok(n)
}

fn set_meta(p: &Path, mode: u32, mtime: i64, owner: (u32, u32)) -> Result<()> {
    let err = |e: io::Error| Error::failed(format!("setting the metadata of {}: {e}", p.display()));
    if is_root() {
        let c = CString::new(p.as_os_str().as_bytes()).map_err(|e| Error::failed(e.to_string()))?;
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::lchown(c.as_ptr(), owner.0, owner.1) } != 0 {
            return Err(err(io::Error::last_os_error()));
        }
    }
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    let t = UNIX_EPOCH + Duration::from_secs(mtime.max(0) as u64);
    File::open(p)
        .and_then(|f| f.set_times(FileTimes::new().set_modified(t)))
        .map_err(err)?;
    Ok(())
}

/// Open directory `rel` beneath `root` one component at a time with `O_NOFOLLOW`, creating
/// missing ones when `create`: a symlink anywhere on the way is refused, so no entry of an
/// archive can reach outside the tree it is extracted into.
fn open_dir_beneath(root: &Path, rel: &Path, create: bool) -> Result<OwnedFd> {
    let flags = libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_RDONLY;
    let refuse = |what: &str, e: io::Error| {
        Error::failed(format!(
            "refusing archive entry {}: {what} ({e}); a snapshot may not lay a path through a symlink",
            rel.display()
        ))
    };
    let c = CString::new(root.as_os_str().as_bytes()).map_err(|e| Error::failed(e.to_string()))?;
    // SAFETY: c is a valid NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(refuse(
            "cannot open the extraction directory",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd is a fresh descriptor we own.
    let mut dir = unsafe { OwnedFd::from_raw_fd(fd) };
    for comp in rel.components() {
        let name = match comp {
            Component::Normal(n) => n,
            Component::CurDir => continue,
            _ => {
                return Err(refuse(
                    "not a plain relative path",
                    io::Error::other("bad component"),
                ));
            }
        };
        let cname = CString::new(name.as_bytes()).map_err(|e| Error::failed(e.to_string()))?;
        if create {
            // SAFETY: dir is open and cname NUL-terminated; EEXIST is fine (opened below).
            let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), cname.as_ptr(), 0o700) };
            if rc != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(refuse("cannot create a directory", e));
                }
            }
        }
        // SAFETY: as above; O_NOFOLLOW makes a symlink fail with ELOOP (or ENOTDIR).
        let next = unsafe { libc::openat(dir.as_raw_fd(), cname.as_ptr(), flags) };
        if next < 0 {
            return Err(refuse(
                "a component is not a directory",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: next is a fresh descriptor we own.
        dir = unsafe { OwnedFd::from_raw_fd(next) };
    }
    Ok(dir)
}

/// Set a directory's owner, mode and mtime through its open handle.
fn set_meta_fd(fd: &OwnedFd, rel: &Path, mode: u32, mtime: i64, owner: (u32, u32)) -> Result<()> {
    let err =
        |e: io::Error| Error::failed(format!("setting the metadata of {}: {e}", rel.display()));
    let raw = fd.as_raw_fd();
    // SAFETY: raw is an open descriptor for the calls below.
    if is_root() && unsafe { libc::fchown(raw, owner.0, owner.1) } != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // SAFETY: as above.
    if unsafe { libc::fchmod(raw, (mode & 0o7777) as libc::mode_t) } != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: mtime.max(0) as libc::time_t,
            tv_nsec: 0,
        },
    ];
    // SAFETY: times holds two valid timespecs.
    if unsafe { libc::futimens(raw, times.as_ptr()) } != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

/// Check the extracted tree against the recorded list; every difference is named.
pub(crate) fn verify(root: &Path, facts: &VolumeFacts) -> Result<()> {
    let mut problems = Vec::new();
    let mut expected: BTreeMap<PathBuf, &EntryFact> = BTreeMap::new();
    for f in &facts.entries {
        expected.insert(decode_path(&f.path), f);
    }
    let as_root = is_root();
    for (rel, f) in &expected {
        let p = root.join(rel);
        let shown = rel.display();
        let m = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) => {
                problems.push(format!("{shown}: missing ({e})"));
                continue;
            }
        };
        let kind_ok = match f.kind.as_str() {
            "dir" => m.is_dir(),
            "symlink" => m.file_type().is_symlink(),
            "file" | "hardlink" => m.is_file(),
            _ => false,
        };
        if !kind_ok {
            problems.push(format!("{shown}: expected a {}", f.kind));
            continue;
        }
        if f.kind != "symlink" && m.mode() & 0o7777 != f.mode {
            problems.push(format!(
                "{shown}: mode {:o}, expected {:o}",
                m.mode() & 0o7777,
                f.mode
            ));
        }
        if as_root && (m.uid() != f.uid || m.gid() != f.gid) {
            problems.push(format!(
                "{shown}: owner {}:{}, expected {}:{}",
                m.uid(),
                m.gid(),
                f.uid,
                f.gid
            ));
        }
        if f.kind != "symlink" && m.mtime() != f.mtime {
            problems.push(format!(
                "{shown}: mtime {}, expected {}",
                m.mtime(),
                f.mtime
            ));
        }
        match f.kind.as_str() {
            "symlink" => {
                let t = std::fs::read_link(&p)
                    .map(|t| encode_path(&t))
                    .unwrap_or_default();
                if Some(&t) != f.target.as_ref() {
                    problems.push(format!("{shown}: link target differs"));
                }
            }
            "hardlink" => {
                let first = f.target.as_deref().map(decode_path).map(|t| root.join(t));
                let same = first
                    .and_then(|t| std::fs::metadata(t).ok())
                    .is_some_and(|t| t.ino() == m.ino() && t.dev() == m.dev());
                if !same {
                    problems.push(format!("{shown}: not a hard link of its first name"));
                }
            }
            "file" => {
                if m.len() != f.size {
                    problems.push(format!("{shown}: {} bytes, expected {}", m.len(), f.size));
                } else if let Some(want) = &f.sha256 {
                    match hash_file(&p) {
                        Ok(got) if &got == want => {}
                        Ok(_) => problems.push(format!("{shown}: content differs (SHA-256)")),
                        Err(e) => problems.push(format!("{shown}: cannot read ({e})")),
                    }
                }
            }
            _ => {}
        }
        if problems.len() > 20 {
            break;
        }
    }
    // Nothing extra.
    let mut extra = Vec::new();
    walk(root, Path::new(""), &mut |rel| {
        if !expected.contains_key(rel) {
            extra.push(rel.display().to_string());
        }
    })?;
    for x in extra.iter().take(5) {
        problems.push(format!("{x}: not in the snapshot's file list"));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        crate::error::Kind::VerifyMismatch,
        format!(
            "the extracted tree does not match the snapshot's file list ({} problems, e.g. {}); nothing was swapped in",
            problems.len() + extra.len().saturating_sub(5),
            problems
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ),
    ))
}

fn walk(root: &Path, rel: &Path, f: &mut dyn FnMut(&Path)) -> Result<()> {
    let dir = root.join(rel);
    let rd = std::fs::read_dir(&dir)
        .map_err(|e| Error::failed(format!("listing {}: {e}", dir.display())))?;
    for e in rd {
        let e = e.map_err(|e| Error::failed(format!("listing {}: {e}", dir.display())))?;
        let r = rel.join(e.file_name());
        f(&r);
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(root, &r, f)?;
        }
    }
    Ok(())
}

pub fn hash_file(p: &Path) -> io::Result<String> {
    let mut f = File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Atomically exchange two paths (Linux renameat2 RENAME_EXCHANGE); falls back to two
/// renames where the filesystem does not support it.
pub(crate) fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD resolves them relative to cwd.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
        return Err(e);
    }
    let tmp = a.with_extension("backstop-swap");
    std::fs::rename(b, &tmp)?;
    if let Err(e) = std::fs::rename(a, b) {
        let _ = std::fs::rename(&tmp, b);
        return Err(e);
    }
    std::fs::rename(&tmp, a)
}

/// Whether `target` is a mount point: a directory on another filesystem than its parent.
/// A tree cannot be renamed across filesystems, so such a target is restored inside itself.
pub(crate) fn is_mount_point(target: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Some(parent), Ok(t)) = (target.parent(), std::fs::symlink_metadata(target)) else {
        return false;
    };
    t.is_dir() && std::fs::metadata(parent).is_ok_and(|p| p.dev() != t.dev())
}

/// Swap a restored tree into a mount point, where the mount point itself cannot be
/// renamed: the current entries move into `target/OLD` (0700), then the entries of
/// `staging` (inside the target, same filesystem) move up, and the target takes the
/// recorded root metadata. Not atomic as a whole, but every step is a rename on one
/// filesystem and both trees are complete at every point: old entries in OLD, new ones in
/// the staging directory or in place.
pub(crate) fn swap_into_mount_point(
    staging: &Path,
    target: &Path,
    old_name: &str,
    facts: &VolumeFacts,
) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let err =
        |what: &str, p: &Path, e: io::Error| Error::failed(format!("{what} {}: {e}", p.display()));
    let old = target.join(old_name);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&old)
        .map_err(|e| err("cannot create", &old, e))?;
    let staging_name = staging.file_name().map(|n| n.to_os_string());
    for e in std::fs::read_dir(target).map_err(|e| err("cannot read", target, e))? {
        let e = e.map_err(|e| err("cannot read", target, e))?;
        let n = e.file_name();
        if Some(&n) == staging_name.as_ref() || n == old_name {
            continue;
        }
        std::fs::rename(e.path(), old.join(&n))
            .map_err(|er| err("cannot move the previous entry", &e.path(), er))?;
    }
    for e in std::fs::read_dir(staging).map_err(|e| err("cannot read", staging, e))? {
        let e = e.map_err(|e| err("cannot read", staging, e))?;
        std::fs::rename(e.path(), target.join(e.file_name()))
            .map_err(|er| err("cannot move the restored entry", &e.path(), er))?;
    }
    std::fs::remove_dir(staging).map_err(|e| err("cannot remove", staging, e))?;
    set_meta(
        target,
        facts.root_mode,
        facts.root_mtime,
        (facts.root_uid, facts.root_gid),
    )?;
    Ok(old)
}

/// Removes a directory tree on drop unless disarmed (a failed or cancelled restore).
pub(crate) struct DirGuard(pub Option<PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = make_writable(&p);
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// Directories restored read-only would block their removal.
pub(crate) fn make_writable(p: &Path) -> io::Result<()> {
    let m = std::fs::symlink_metadata(p)?;
    if m.is_dir() {
        std::fs::set_permissions(
            p,
            std::fs::Permissions::from_mode((m.mode() & 0o7777) | 0o700),
        )?;
        for e in std::fs::read_dir(p)? {
            make_writable(&e?.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar archive with one entry whose raw name is `name` (bypassing the builder's
    /// own checks, as a hostile archive would).
    fn hostile(name: &[u8], kind: tar::EntryType, link: Option<&[u8]>) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        }
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(if kind.is_file() { 4 } else { 0 });
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        if kind.is_file() {
            out.extend_from_slice(b"evil");
            out.extend_from_slice(&[0u8; 508]);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    #[test]
    fn traversal_and_outside_links_are_refused() {
        let base = tempfile::tempdir().unwrap();
        let dst = base.path().join("dst");
        let facts = VolumeFacts {
            root_mode: 0o755,
            ..Default::default()
        };
        type Case<'a> = (&'a [u8], tar::EntryType, Option<&'a [u8]>);
        let cases: [Case; 3] = [
            (b"../evil", tar::EntryType::Regular, None),
            (b"/tmp/evil-abs", tar::EntryType::Regular, None),
            (b"innocent", tar::EntryType::Link, Some(b"../../etc/passwd")),
        ];
        for (name, kind, link) in cases {
            std::fs::create_dir_all(&dst).unwrap();
            let archive = hostile(name, kind, link);
            let e = extract(&archive[..], &dst, &facts).unwrap_err();
            assert!(e.to_string().contains("refusing"), "{e}");
            assert!(!base.path().join("evil").exists());
            std::fs::remove_dir_all(&dst).unwrap();
        }
        assert!(!Path::new("/tmp/evil-abs").exists());
    }
}
