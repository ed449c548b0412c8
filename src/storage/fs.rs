//! The `file://` backend, the embedded default: each object is a file below the root.
//! A put writes `KEY.tmp-RANDOM` beside the final name, fsyncs it, renames it into place
//! (refusing to replace an existing object) and fsyncs the directory; the temp file is
//! removed on any error or cancellation, so a reader never sees a partial object.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::{Chunk, ChunkRx, ObjectInfo, Reader, Storage, check_key};
use crate::error::{Error, Result};

pub struct FileStorage {
    root: PathBuf,
}

const _: fn() = || {
    fn assert_storage<T: Storage>() {}
    assert_storage::<FileStorage>();
};

impl FileStorage {
    async fn list_until(&self, prefix: &str, end: Option<&str>) -> Result<Vec<ObjectInfo>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let end = end.map(str::to_string);
        tokio::task::spawn_blocking(move || list_blocking(&root, &prefix, end.as_deref()))
            .await
            .map_err(|e| Error::failed(format!("listing task failed: {e}")))?
    }

    pub fn new(root: PathBuf) -> Self {
        FileStorage { root }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn io_err(&self, what: &str, p: &Path, e: std::io::Error) -> Error {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                " (check the permissions of the storage directory)"
            }
            std::io::ErrorKind::StorageFull => " (the disk is full)",
            _ => "",
        };
        Error::failed(format!("{what} {}: {e}{hint}", p.display()))
    }
}

/// Removes the temp file (and the directories the put created, if left empty) unless
/// disarmed; covers errors and dropped futures alike.
struct TempGuard {
    tmp: Option<PathBuf>,
    root: PathBuf,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.tmp.take() {
            let _ = std::fs::remove_file(&p);
            let mut dir = p.parent().map(Path::to_path_buf);
            while let Some(d) = dir {
                if d == self.root || !d.starts_with(&self.root) || std::fs::remove_dir(&d).is_err()
                {
                    break;
                }
                dir = d.parent().map(Path::to_path_buf);
            }
        }
    }
}

impl FileStorage {
    /// Create `dir` and its parents. A concurrent delete may remove an emptied directory
    /// while another writer creates it (then `create_dir_all` sees it exist, and then not
    /// be a directory): tried again a few times.
    async fn ensure_dir(&self, dir: &Path) -> Result<()> {
        let mut tries = 0;
        loop {
            match tokio::fs::create_dir_all(dir).await {
                Ok(()) => return Ok(()),
                Err(e)
                    if tries < 5
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotFound
                        ) =>
                {
                    tries += 1;
                }
                Err(e) => return Err(self.io_err("cannot create directory", dir, e)),
            }
        }
    }
}

#[async_trait]
impl Storage for FileStorage {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn chunk_size(&self) -> usize {
        4 * crate::config::MIB
    }

    async fn put_stream(&self, key: &str, mut rx: ChunkRx) -> Result<u64> {
        let dest = self.path(key)?;
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        self.ensure_dir(&dir).await?;
        if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
            return Err(Error::failed(format!(
                "refusing to overwrite existing object {}",
                dest.display()
            )));
        }
        let mut rnd = [0u8; 6];
        getrandom::fill(&mut rnd).map_err(|e| Error::failed(format!("random: {e}")))?;
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let tmp = dir.join(format!(".{name}.tmp-{}", hex::encode(rnd)));
        let mut guard = TempGuard {
            tmp: Some(tmp.clone()),
            root: self.root.clone(),
        };
        // A concurrent delete may remove the (then empty) directory between its creation
        // and ours: create it again and retry a few times.
        let mut tries = 0;
        let mut f = loop {
            match tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .await
            {
                Ok(f) => break f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 5 => {
                    tries += 1;
                    self.ensure_dir(&dir).await?;
                }
                Err(e) => return Err(self.io_err("cannot create", &tmp, e)),
            }
        };
        let mut total = 0u64;
        let mut flushed = 0u64;
        let mut ended = false;
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Chunk::Data(d) => {
                    f.write_all(&d)
                        .await
                        .map_err(|e| self.io_err("cannot write", &tmp, e))?;
                    total += d.len() as u64;
                    if total - flushed >= WRITEBACK_STEP {
                        // Start writing back what is written so far (without waiting), so
                        // the fsync at the end has little left to do.
                        f.flush()
                            .await
                            .map_err(|e| self.io_err("cannot write", &tmp, e))?;
                        start_writeback(&f, flushed, total - flushed);
                        flushed = total;
                    }
                }
                Chunk::End => {
                    ended = true;
                    break;
                }
            }
        }
        if !ended {
            return Err(Error::failed(format!(
                "the stream for {key} stopped before its end; nothing was stored"
            )));
        }
        f.flush()
            .await
            .map_err(|e| self.io_err("cannot write", &tmp, e))?;
        f.sync_all()
            .await
            .map_err(|e| self.io_err("cannot fsync", &tmp, e))?;
        drop(f);
        // hard_link fails if dest exists: no silent overwrite even under a race.
        tokio::fs::hard_link(&tmp, &dest)
            .await
            .map_err(|e| self.io_err("cannot commit", &dest, e))?;
        let _ = tokio::fs::remove_file(&tmp).await;
        guard.tmp = None;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(total)
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        if self.head(key).await?.is_some() {
            return Ok(false);
        }
        match self.put_bytes(key, data).await {
            Ok(_) => Ok(true),
            // Lost a race: the hard link found the name taken.
            Err(_) if self.head(key).await?.is_some() => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn clean_incomplete(&self, prefix: &str, before: jiff::Timestamp) -> Result<Vec<String>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || clean_temp_files(&root, &prefix, before))
            .await
            .map_err(|e| Error::failed(format!("cleanup task failed: {e}")))?
    }

    async fn get(&self, key: &str) -> Result<Option<Reader>> {
        let p = self.path(key)?;
        match tokio::fs::File::open(&p).await {
            Ok(f) => Ok(Some(Box::new(tokio::io::BufReader::with_capacity(
                1 << 20,
                f,
            )))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_err("cannot open", &p, e)),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        let p = self.path(key)?;
        match tokio::fs::metadata(&p).await {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_err("cannot stat", &p, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.list_until(prefix, None).await
    }

    async fn list_before(&self, prefix: &str, end: &str) -> Result<Vec<ObjectInfo>> {
        self.list_until(prefix, Some(end)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let p = self.path(key)?;
        match tokio::fs::remove_file(&p).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io_err("cannot delete", &p, e)),
        }
        // Tidy empty snapshot directories, never the root.
        let mut dir = p.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) || std::fs::remove_dir(&d).is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        Ok(())
    }
}

/// Remove the temp files (`.NAME.tmp-RANDOM`) of puts that a killed process left below
/// `prefix`, when they were last written before `before`.
fn clean_temp_files(root: &Path, prefix: &str, before: jiff::Timestamp) -> Result<Vec<String>> {
    let start_dir = match prefix.rfind('/') {
        Some(i) => root.join(&prefix[..i]),
        None => root.to_path_buf(),
    };
    let cutoff = std::time::SystemTime::UNIX_EPOCH
        + std::time::Duration::from_secs(before.as_second().max(0) as u64);
    let mut removed = Vec::new();
    let mut stack = vec![start_dir];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in rd.flatten() {
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push(path);
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if ft.is_file() && name.starts_with('.') && name.contains(".tmp-") && old {
                std::fs::remove_file(&path)
                    .map_err(|e| Error::failed(format!("cannot remove {}: {e}", path.display())))?;
                removed.push(
                    path.strip_prefix(root)
                        .unwrap_or(&path)
                        .display()
                        .to_string(),
                );
            }
        }
    }
    Ok(removed)
}

/// The objects below `prefix`; with `end`, only keys that sort before it, and no directory
/// at or past it is read (its keys all sort after it).
fn list_blocking(root: &Path, prefix: &str, end: Option<&str>) -> Result<Vec<ObjectInfo>> {
    // Walk only the directory the prefix is in.
    let start_dir = match prefix.rfind('/') {
        Some(i) => root.join(&prefix[..i]),
        None => root.to_path_buf(),
    };
    let mut out = Vec::new();
    let mut stack = vec![start_dir];
    while let Some(dir) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::failed(format!("cannot list {}: {e}", dir.display()))),
        };
        for entry in rd {
            let entry =
                entry.map_err(|e| Error::failed(format!("cannot list {}: {e}", dir.display())))?;
            let path = entry.path();
            let ft = entry
                .file_type()
                .map_err(|e| Error::failed(format!("{}: {e}", path.display())))?;
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let Some(rel) = rel.to_str() else { continue };
            if end.is_some_and(|e| rel >= e) {
                continue;
            }
            if ft.is_dir() {
                if rel.starts_with(prefix) || prefix.starts_with(&format!("{rel}/")) {
                    stack.push(path);
                }
            } else if ft.is_file()
                && rel.starts_with(prefix)
                && !entry.file_name().to_string_lossy().starts_with('.')
            {
                let meta = entry.metadata().ok();
                out.push(ObjectInfo {
                    key: rel.to_string(),
                    size: meta.as_ref().map(|m| m.len()).unwrap_or(0),
                    modified: meta
                        .and_then(|m| m.modified().ok())
                        .and_then(|t| jiff::Timestamp::try_from(t).ok()),
                });
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// How much of an object is written before its writeback is started.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Ask the kernel to start writing `len` bytes at `offset` of `f` to disk, not waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`); the fsync at the end still makes the object
/// durable. A failure changes nothing.
fn start_writeback(f: &tokio::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a hint on a file descriptor this function borrows for the call.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}
