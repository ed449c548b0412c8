//! The volume source: a directory tree streamed as a standard GNU tar archive (so it
//! restores by hand with `age -d | zstd -d | tar -x`). Keeps regular files, directories
//! (empty ones too), symlinks (not followed), hard links (stored once), permissions, owner
//! and group ids, modification times, and sparse files as GNU sparse entries (holes are
//! not stored). Device nodes, sockets and fifos are skipped and listed. Each file's
//! SHA-256 is taken as it is read; a file whose size or mtime changes while it is read is
//! listed as "changed during read" (and still written with exactly the size its header
//! announced, so the archive stays valid).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// One entry of the tree as recorded in the (encrypted) facts object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct EntryFact {
    /// Path relative to the root; see `encode_path`.
    pub path: String,
    /// "file" | "dir" | "symlink" | "hardlink"
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlink target, or the path a hard link points to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct VolumeFacts {
    pub root_mode: u32,
    pub root_uid: u32,
    pub root_gid: u32,
    pub root_mtime: i64,
    pub files: u64,
    pub bytes: u64,
    pub entries: Vec<EntryFact>,
    /// Device nodes, sockets and fifos, not stored: (path, kind).
    pub skipped: Vec<(String, String)>,
    /// Files whose size or mtime changed while they were read.
    pub changed: Vec<String>,
}

/// Paths go into JSON as UTF-8 when they are; otherwise as "\0" + hex of the raw bytes (a
/// NUL can never occur in a real file name, so the two forms cannot collide).
pub(crate) fn encode_path(p: &Path) -> String {
    let b = p.as_os_str().as_bytes();
    match std::str::from_utf8(b) {
        Ok(s) if !s.starts_with('\0') => s.to_string(),
        _ => format!("\0{}", hex::encode(b)),
    }
}

pub(crate) fn decode_path(s: &str) -> PathBuf {
    match s.strip_prefix('\0').and_then(|h| hex::decode(h).ok()) {
        Some(bytes) => PathBuf::from(OsStr::from_bytes(&bytes)),
        None => PathBuf::from(s),
    }
}

/// Bytes the tree's files occupy on disk (sparse-aware), by a stat-only walk; `None` if
/// the root cannot be read. A size hint, not a promise: the tree may change meanwhile.
pub(crate) fn tree_size(root: &Path) -> Option<u64> {
    fn walk(dir: &Path, total: &mut u64) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                walk(&e.path(), total);
            } else if m.is_file() {
                *total += (m.blocks() * 512).min(m.size());
            }
        }
    }
    std::fs::read_dir(root).ok()?;
    let mut total = 0;
    walk(root, &mut total);
    Some(total)
}

/// Write `root`'s tree as a tar stream into `out`.
pub(crate) fn write_tree<W: Write>(root: &Path, out: W) -> Result<(W, VolumeFacts)> {
    let meta = std::fs::symlink_metadata(root)
        .map_err(|e| Error::failed(format!("cannot read the volume {}: {e}", root.display())))?;
    if !meta.is_dir() {
        return Err(Error::failed(format!(
            "the volume path {} is not a directory",
            root.display()
        )));
    }
    let mut w = TreeWriter {
        root: root.to_path_buf(),
        builder: tar::Builder::new(out),
        facts: VolumeFacts {
            root_mode: meta.mode() & 0o7777,
            root_uid: meta.uid(),
            root_gid: meta.gid(),
            root_mtime: meta.mtime(),
            ..Default::default()
        },
        links: HashMap::new(),
        buf: vec![0u8; 1 << 20],
    };
    w.walk(Path::new(""))?;
    let facts = std::mem::take(&mut w.facts);
    let out = w
        .builder
        .into_inner()
        .map_err(|e| Error::from(e).context("finishing the tar stream"))?;
    Ok((out, facts))
}

struct TreeWriter<W: Write> {
    root: PathBuf,
    builder: tar::Builder<W>,
    facts: VolumeFacts,
    /// (dev, ino) of files with several links -> the first path stored.
    links: HashMap<(u64, u64), PathBuf>,
    buf: Vec<u8>,
}

fn io_ctx(e: io::Error, what: &str, p: &Path) -> Error {
    Error::from(e).context(format!("{what} {}", p.display()))
}

fn header_for(meta: &Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(meta.uid() as u64);
    h.set_gid(meta.gid() as u64);
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_size(0);
    h
}

impl<W: Write> TreeWriter<W> {
    fn fact(&self, rel: &Path, kind: &str, meta: &Metadata) -> EntryFact {
        EntryFact {
            path: encode_path(rel),
            kind: kind.to_string(),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            size: 0,
            sha256: None,
            target: None,
        }
    }

    fn walk(&mut self, rel_dir: &Path) -> Result<()> {
        let dir = self.root.join(rel_dir);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| io_ctx(e, "cannot list", &dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(|e| io_ctx(e, "cannot list", &dir))?;
        names.sort();
        for name in names {
            let rel = rel_dir.join(&name);
            let abs = self.root.join(&rel);
            let meta = match std::fs::symlink_metadata(&abs) {
                Ok(m) => m,
                // Deleted since it was listed: a live volume does that.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.facts.changed.push(encode_path(&rel));
                    continue;
                }
                Err(e) => return Err(io_ctx(e, "cannot stat", &abs)),
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                let h = header_for(&meta, tar::EntryType::Directory);
                self.append(h, &rel, io::empty())?;
                let f = self.fact(&rel, "dir", &meta);
                self.facts.entries.push(f);
                self.walk(&rel)?;
            } else if ft.is_symlink() {
                let target =
                    std::fs::read_link(&abs).map_err(|e| io_ctx(e, "cannot read link", &abs))?;
                let mut h = header_for(&meta, tar::EntryType::Symlink);
                self.builder
                    .append_link(&mut h, &rel, &target)
                    .map_err(|e| io_ctx(e, "cannot store link", &abs))?;
                let mut f = self.fact(&rel, "symlink", &meta);
                f.target = Some(encode_path(&target));
                self.facts.entries.push(f);
            } else if ft.is_file() {
                if meta.nlink() > 1 {
                    let key = (meta.dev(), meta.ino());
                    if let Some(first) = self.links.get(&key).cloned() {
                        let mut h = header_for(&meta, tar::EntryType::Link);
                        self.builder
                            .append_link(&mut h, &rel, &first)
                            .map_err(|e| io_ctx(e, "cannot store hard link", &abs))?;
                        let mut f = self.fact(&rel, "hardlink", &meta);
                        f.target = Some(encode_path(&first));
                        self.facts.entries.push(f);
                        continue;
                    }
                    self.links.insert(key, rel.clone());
                }
                self.file(&rel, &abs, &meta)?;
            } else {
                let kind = if ft.is_fifo() {
                    "fifo"
                } else if ft.is_socket() {
                    "socket"
                } else if ft.is_char_device() {
                    "char device"
                } else if ft.is_block_device() {
                    "block device"
                } else {
                    "unknown"
                };
                tracing::warn!("skipping {kind} {}", abs.display());
                self.facts
                    .skipped
                    .push((encode_path(&rel), kind.to_string()));
            }
        }
        Ok(())
    }

    fn append<R: Read>(&mut self, mut h: tar::Header, rel: &Path, data: R) -> Result<()> {
        self.builder
            .append_data(&mut h, rel, data)
            .map_err(|e| io_ctx(e, "cannot store", rel))
    }

    fn file(&mut self, rel: &Path, abs: &Path, meta: &Metadata) -> Result<()> {
        let mut f = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOATIME)
            .open(abs)
            .or_else(|_| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(abs)
            }) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.facts.changed.push(encode_path(rel));
                return Ok(());
            }
            Err(e) => return Err(io_ctx(e, "cannot open", abs)),
        };
        let size = meta.size();
        let segments = sparse_segments(&mut f, meta).unwrap_or(None);
        let mut h = header_for(meta, tar::EntryType::Regular);
        let mut hasher = Sha256::new();
        match &segments {
            None => h.set_size(size),
            Some(segs) => {
                let stored: u64 = segs.iter().map(|s| s.1).sum();
                h.set_entry_type(tar::EntryType::GNUSparse);
                h.set_size(stored);
                let g = h.as_gnu_mut().expect("a GNU header");
                g.set_real_size(size);
                for (slot, (off, len)) in g.sparse.iter_mut().zip(segs.iter()) {
                    slot.set_offset(*off);
                    slot.set_length(*len);
                }
                g.set_is_extended(segs.len() > 4);
            }
        }
        // Name (long-name extension if needed), then the header, then extension headers
        // and data, all written by hand so the data is hashed as it passes.
        let dst = self.builder.get_mut();
        write_path_header(dst, &mut h, rel)?;
        h.set_cksum();
        dst.write_all(h.as_bytes())
            .map_err(|e| io_ctx(e, "cannot store", abs))?;
        let mut written = 0u64;
        let mut short = false;
        match &segments {
            None => {
                let (n, s) = copy_exact(&mut f, dst, size, &mut hasher, &mut self.buf)?;
                written += n;
                short |= s;
            }
            Some(segs) => {
                let rest: Vec<&(u64, u64)> = segs.iter().skip(4).collect();
                let chunks: Vec<&[&(u64, u64)]> = rest.chunks(21).collect();
                for (i, chunk) in chunks.iter().enumerate() {
                    let mut ext = tar::GnuExtSparseHeader::new();
                    for (slot, (off, len)) in ext.sparse.iter_mut().zip(chunk.iter()) {
                        slot.set_offset(*off);
                        slot.set_length(*len);
                    }
                    ext.set_is_extended(i + 1 < chunks.len());
                    dst.write_all(ext.as_bytes())
                        .map_err(|e| io_ctx(e, "cannot store", abs))?;
                }
                let mut pos = 0u64;
                for (off, len) in segs {
                    hash_zeros(&mut hasher, off - pos);
                    f.seek(SeekFrom::Start(*off))
                        .map_err(|e| io_ctx(e, "cannot read", abs))?;
                    let (n, s) = copy_exact(&mut f, dst, *len, &mut hasher, &mut self.buf)?;
                    written += n;
                    short |= s;
                    pos = off + len;
                }
                hash_zeros(&mut hasher, size.saturating_sub(pos));
            }
        }
        let pad = (512 - written % 512) % 512;
        dst.write_all(&[0u8; 512][..pad as usize])
            .map_err(|e| io_ctx(e, "cannot store", abs))?;
        let after = f.metadata().map_err(|e| io_ctx(e, "cannot stat", abs))?;
        if short
            || after.size() != size
            || after.mtime() != meta.mtime()
            || after.mtime_nsec() != meta.mtime_nsec()
        {
            tracing::warn!("{} changed while it was read", abs.display());
            self.facts.changed.push(encode_path(rel));
        }
        let mut fact = self.fact(rel, "file", meta);
        fact.size = size;
        fact.sha256 = Some(hex::encode(hasher.finalize()));
        self.facts.entries.push(fact);
        self.facts.files += 1;
        self.facts.bytes += size;
        Ok(())
    }
}

/// Write a GNU long-name entry when `rel` does not fit the header, then set the name.
fn write_path_header(dst: &mut dyn Write, h: &mut tar::Header, rel: &Path) -> Result<()> {
    if h.set_path(rel).is_err() || rel.as_os_str().len() >= 100 {
        let bytes = rel.as_os_str().as_bytes();
        let mut ln = tar::Header::new_gnu();
        let name = b"././@LongLink";
        ln.as_gnu_mut().expect("gnu").name[..name.len()].copy_from_slice(name);
        ln.set_mode(0o644);
        ln.set_uid(0);
        ln.set_gid(0);
        ln.set_mtime(0);
        ln.set_size(bytes.len() as u64 + 1);
        ln.set_entry_type(tar::EntryType::new(b'L'));
        ln.set_cksum();
        let io = |e: io::Error| io_ctx(e, "cannot store", rel);
        dst.write_all(ln.as_bytes()).map_err(io)?;
        dst.write_all(bytes).map_err(io)?;
        dst.write_all(&[0]).map_err(io)?;
        let n = bytes.len() as u64 + 1;
        let pad = (512 - n % 512) % 512;
        dst.write_all(&[0u8; 512][..pad as usize]).map_err(io)?;
        // The header keeps a truncated name; readers use the long name.
        let truncated: Vec<u8> = bytes.iter().copied().take(99).collect();
        h.as_old_mut().name = [0; 100];
        h.as_old_mut().name[..truncated.len()].copy_from_slice(&truncated);
    }
    Ok(())
}

/// Copy exactly `len` bytes (zero-padding a file that shrank), hashing them. Returns the
/// bytes written and whether the file came up short.
fn copy_exact(
    f: &mut File,
    dst: &mut dyn Write,
    len: u64,
    hasher: &mut Sha256,
    buf: &mut [u8],
) -> Result<(u64, bool)> {
    let mut left = len;
    while left > 0 {
        let want = (buf.len() as u64).min(left) as usize;
        let n = match f.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::from(e).context("reading a file of the volume")),
        };
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
        left -= n as u64;
    }
    let short = left > 0;
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        buf[..n].fill(0);
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok((len, short))
}

fn hash_zeros(h: &mut Sha256, mut n: u64) {
    static Z: [u8; 65536] = [0; 65536];
    while n > 0 {
        let k = n.min(Z.len() as u64) as usize;
        h.update(&Z[..k]);
        n -= k as u64;
    }
}

/// Data segments (offset, length) of a sparse file, or `None` when it is not sparse.
fn sparse_segments(f: &mut File, meta: &Metadata) -> io::Result<Option<Vec<(u64, u64)>>> {
    use std::os::fd::AsRawFd;
    let size = meta.size();
    if size == 0 || meta.blocks() * 512 >= size {
        return Ok(None);
    }
    let fd = f.as_raw_fd();
    let lseek = |off: u64, whence| -> Option<u64> {
        // SAFETY: lseek on a descriptor we own; no memory is passed.
        let r = unsafe { libc::lseek64(fd, off as i64, whence) };
        (r >= 0).then_some(r as u64)
    };
    let mut segs = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let Some(data) = lseek(pos, libc::SEEK_DATA) else {
            break;
        };
        if data >= size {
            break;
        }
        let hole = lseek(data, libc::SEEK_HOLE).unwrap_or(size).min(size);
        if hole <= data {
            return Ok(None);
        }
        segs.push((data, hole - data));
        pos = hole;
    }
    // A file ending in a hole gets an empty last segment at its end (GNU tar's convention).
    if segs.last().is_none_or(|&(o, l)| o + l < size) {
        segs.push((size, 0));
    }
    f.seek(SeekFrom::Start(0))?;
    Ok(Some(segs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_through_json_strings() {
        let p = PathBuf::from(OsStr::from_bytes(b"dir/caf\xe9 \n.txt"));
        let e = encode_path(&p);
        assert!(e.starts_with('\0'));
        assert_eq!(decode_path(&e), p);
        assert_eq!(encode_path(Path::new("a/ü b")), "a/ü b");
        assert_eq!(decode_path("a/ü b"), PathBuf::from("a/ü b"));
    }
}
