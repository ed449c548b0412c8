//! The byte pipeline, both directions. Backup: plaintext -> zstd -> age -> SHA-256 and
//! byte count -> storage chunks. Restore: stored bytes -> SHA-256 and count -> age ->
//! zstd -> plaintext. Both run on a worker thread (CPU-bound, blocking I/O); zstd uses its
//! own worker threads; memory is a few buffers, whatever the stream's size.
//!
//! May import: config, text, error.

pub mod progress;

use std::io::{self, BufReader, Read, Write};

use sha2::{Digest, Sha256};

use crate::config::CompressionPlan;
use crate::error::{Error, Result};

/// Size of the read buffer between a source and the compressor.
pub(crate) const READ_BUF: usize = 1 << 20;

/// What one object's pipeline measured.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub plaintext_bytes: u64,
    pub stored_bytes: u64,
    pub sha256: String,
}

/// Counts and hashes what passes through to `inner`.
pub(crate) struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
    progress: Option<std::sync::Arc<crate::pipeline::progress::Counters>>,
}

impl<W: Write> HashWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
            progress: None,
        }
    }
    pub(crate) fn finish(self) -> (W, u64, String) {
        (self.inner, self.count, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if let Some(p) = &self.progress {
            p.add_stored(n as u64);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Counts and hashes what is read from `inner`.
pub(crate) struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// Read whatever is left (so the hash covers the whole object), then report.
    pub(crate) fn drain_and_finish(mut self) -> io::Result<(u64, String)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.count, hex::encode(self.hasher.finalize())))
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

type Chain<W> = zstd::stream::write::Encoder<'static, age::stream::StreamWriter<HashWriter<W>>>;

/// A writer that compresses and encrypts what it is given into `out`, counting plaintext
/// and hashing the stored bytes. `finish` completes the zstd frame and the age stream and
/// returns `out` unfinished, so the caller decides whether the object is committed.
pub(crate) struct EncodeWriter<W: Write> {
    z: Chain<W>,
    plaintext: u64,
    progress: Option<std::sync::Arc<crate::pipeline::progress::Counters>>,
}

impl<W: Write> EncodeWriter<W> {
    pub(crate) fn new(
        comp: CompressionPlan,
        recipients: &[age::x25519::Recipient],
        out: W,
        progress: Option<std::sync::Arc<crate::pipeline::progress::Counters>>,
    ) -> Result<Self> {
        let mut hashed = HashWriter::new(out);
        hashed.progress = progress.clone();
        let encryptor =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| {
                    Error::config(format!("cannot encrypt to the job's recipients: {e}"))
                })?;
        let aged = encryptor
            .wrap_output(hashed)
            .map_err(|e| Error::failed(format!("writing the age header: {e}")))?;
        let mut z = zstd::stream::write::Encoder::new(aged, comp.level)
            .map_err(|e| Error::failed(format!("starting zstd: {e}")))?;
        z.include_checksum(true)
            .map_err(|e| Error::failed(format!("zstd: {e}")))?;
        let workers = comp.workers();
        if workers > 1 {
            z.multithread(workers)
                .map_err(|e| Error::failed(format!("zstd workers: {e}")))?;
        }
        Ok(EncodeWriter {
            z,
            plaintext: 0,
            progress,
        })
    }

    pub(crate) fn finish(self) -> Result<(W, Stats)> {
        let aged = self
            .z
            .finish()
            .map_err(|e| Error::from(e).context("finishing zstd"))?;
        let hashed = aged
            .finish()
            .map_err(|e| Error::from(e).context("finishing age"))?;
        let (out, stored, sha) = hashed.finish();
        Ok((
            out,
            Stats {
                plaintext_bytes: self.plaintext,
                stored_bytes: stored,
                sha256: sha,
            },
        ))
    }
}

impl<W: Write> Write for EncodeWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.z.write(buf)?;
        self.plaintext += n as u64;
        if let Some(p) = &self.progress {
            p.add_read(n as u64);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.z.flush()
    }
}

/// Compress and encrypt everything `input` yields into `out`. `observe` sees each
/// plaintext block first (row counting). The caller decides whether the result is
/// committed: this returns `out` unfinished, so a failed source (checked by the caller
/// after EOF) never ends the stream.
pub(crate) fn encode<R: Read, W: Write>(
    mut input: R,
    mut observe: impl FnMut(&[u8]),
    comp: CompressionPlan,
    recipients: &[age::x25519::Recipient],
    out: W,
    progress: Option<std::sync::Arc<crate::pipeline::progress::Counters>>,
) -> Result<(W, Stats)> {
    let mut w = EncodeWriter::new(comp, recipients, out, progress)?;
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::from(e).context("reading the source")),
        };
        observe(&buf[..n]);
        w.write_all(&buf[..n])
            .map_err(|e| Error::from(e).context("storing"))?;
    }
    w.finish()
}

/// Load the identities in an age identity file.
pub fn load_identities(
    path: &std::path::Path,
) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>> {
    let f = age::IdentityFile::from_file(path.to_string_lossy().into_owned()).map_err(|e| {
        Error::config(format!(
            "cannot read the identity file {}: {e}; restore needs the private key (age-keygen output) matching the job's recipients",
            path.display()
        ))
    })?;
    let ids = f
        .into_identities()
        .map_err(|e| Error::config(format!("identity file {}: {e}", path.display())))?;
    if ids.is_empty() {
        return Err(Error::config(format!(
            "identity file {} holds no age identities (AGE-SECRET-KEY-1...)",
            path.display()
        )));
    }
    Ok(ids)
}

/// What a stored object must be, from the manifest.
pub struct Expect<'a> {
    pub name: &'a str,
    pub stored_bytes: u64,
    pub sha256: &'a str,
}

/// Decrypt and decompress `input` into `out`, then prove the stored bytes were exactly
/// the ones the manifest recorded. Any mismatch, a wrong key, a truncated or corrupt
/// object is an error naming the object; the caller must treat `out` as garbage then.
pub fn decode<R: Read + Send, W: Write>(
    input: R,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    expect: &Expect<'_>,
    mut out: W,
) -> Result<u64> {
    decode_with(input, identities, expect, |plain| {
        let n = io::copy(plain, &mut out)
            .map_err(|e| Error::failed(format!("cannot decrypt or decompress: {e}")))?;
        out.flush()
            .map_err(|e| Error::failed(format!("writing the staged copy: {e}")))?;
        Ok(n)
    })
}

/// Like `decode`, but hands the plaintext to `consume` as a reader (tar extraction). What
/// `consume` leaves unread is read and checked too; a corrupt object is reported as such
/// even when `consume` tripped over it first.
pub(crate) fn decode_with<R: Read + Send, T>(
    input: R,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    expect: &Expect<'_>,
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    let mut hashed = HashReader::new(input);
    let result = std::thread::scope(|scope| -> Result<T> {
        let dec = age::Decryptor::new_buffered(BufReader::with_capacity(READ_BUF, &mut hashed))
            .map_err(|e| Error::failed(format!("not a readable age file: {e}")))?;
        let plain = dec
            .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => Error::failed(
                    "none of the given identities can decrypt it (wrong identity file for this job?)",
                ),
                other => Error::failed(format!("cannot decrypt: {other}")),
            })?;
        // Reading, hashing and decrypting run on a thread of their own, a few pieces
        // ahead of decompression and of whatever consumes the plaintext: on one thread
        // the three took turns, and the restore's client side ran at one core's pace.
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        scope.spawn(move || read_ahead(plain, tx));
        let mut z = zstd::stream::read::Decoder::new(Pieces::new(rx))
            .map_err(|e| Error::failed(format!("zstd: {e}")))?;
        let t = consume(&mut z)?;
        io::copy(&mut z, &mut io::sink())
            .map_err(|e| Error::failed(format!("cannot decrypt or decompress: {e}")))?;
        Ok(t)
    });
    let (count, sha) = hashed
        .drain_and_finish()
        .map_err(|e| Error::failed(format!("reading stored object {}: {e}", expect.name)))?;
    if count != expect.stored_bytes || sha != expect.sha256 {
        return Err(Error::failed(format!(
            "stored object {} is corrupt or truncated: expected {} bytes with SHA-256 {}, read {} bytes with SHA-256 {}; \
             nothing was restored (try an older snapshot with --snapshot ID)",
            expect.name, expect.stored_bytes, expect.sha256, count, sha
        )));
    }
    result.map_err(|e| {
        let kind = e.kind();
        Error::new(
            kind,
            format!(
                "stored object {}: {}; nothing was restored",
                expect.name,
                e.message()
            ),
        )
    })
}

/// Read `r` to its end in pieces of 256 KiB, each sent on `tx` (an error too, then stop);
/// stops early once the receiving side is gone.
fn read_ahead(mut r: impl Read, tx: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>) {
    loop {
        let mut buf = vec![0u8; 256 << 10];
        let mut n = 0;
        while n < buf.len() {
            match r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(m) => n += m,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        buf.truncate(n);
        if n == 0 {
            // The end, said explicitly: a thread that stops without it is an error.
            let _ = tx.send(Ok(buf));
            return;
        }
        if tx.send(Ok(buf)).is_err() {
            return;
        }
    }
}

/// The reading end of [`read_ahead`]: the plaintext ends only at its empty piece.
struct Pieces {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    at: usize,
    done: bool,
}

impl Pieces {
    fn new(rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>) -> Self {
        Pieces {
            rx,
            cur: Vec::new(),
            at: 0,
            done: false,
        }
    }
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(piece) => {
                    self.cur = piece?;
                    self.at = 0;
                    self.done = self.cur.is_empty();
                }
                Err(_) => {
                    return Err(io::Error::other(
                        "decryption stopped before the end of the object",
                    ));
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.at);
        buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Encrypt a small object whole (globals, facts).
pub fn encode_bytes(
    data: &[u8],
    comp: CompressionPlan,
    recipients: &[age::x25519::Recipient],
) -> Result<(Vec<u8>, Stats)> {
    let comp = CompressionPlan { threads: 1, ..comp };
    encode(data, |_| {}, comp, recipients, Vec::new(), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn keys() -> (age::x25519::Identity, age::x25519::Recipient) {
        let id = age::x25519::Identity::generate();
        let r = id.to_public();
        (id, r)
    }

    const COMP: CompressionPlan = CompressionPlan {
        level: 3,
        threads: 2,
    };

    #[test]
    fn round_trip_and_every_fault_is_caught() {
        let (id, r) = keys();
        let data: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let (stored, st) = encode(&data[..], |_| {}, COMP, &[r], Vec::new(), None).unwrap();
        assert_eq!(st.plaintext_bytes, data.len() as u64);
        assert_eq!(st.stored_bytes, stored.len() as u64);
        assert!(stored.len() < data.len() / 4);
        let ids: Vec<Box<dyn age::Identity + Send + Sync>> = vec![Box::new(id)];
        let exp = Expect {
            name: "dump",
            stored_bytes: st.stored_bytes,
            sha256: &st.sha256,
        };
        let mut back = Vec::new();
        decode(&stored[..], &ids, &exp, &mut back).unwrap();
        assert_eq!(back, data);

        // a flipped byte
        let mut bad = stored.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        let e = decode(&bad[..], &ids, &exp, &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("corrupt or truncated"), "{e}");
        // truncated
        let e = decode(&stored[..stored.len() - 100], &ids, &exp, &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("corrupt or truncated"), "{e}");
        // wrong key
        let other: Vec<Box<dyn age::Identity + Send + Sync>> = vec![Box::new(keys().0)];
        let e = decode(&stored[..], &other, &exp, &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("wrong identity"), "{e}");
    }

    #[test]
    fn recipients_parse() {
        assert!(age::x25519::Recipient::from_str("age1nope").is_err());
    }
}
