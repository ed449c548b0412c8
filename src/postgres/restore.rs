//! PostgreSQL's part of a restore: look at the target read-only, create and drop
//! databases, apply stored roles, and run `pg_restore` from a staged file or while the
//! snapshot downloads (parallel loading of the biggest table). `run::restore` orders these
//! steps; nothing here decides whether the target may be touched.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use super::{self as pg, Conn, quote_ident, quote_literal};
use crate::error::{Error, Result, ResultExt};
use crate::pipeline::{self, Expect};
use crate::snapshot::{self, Manifest};

/// What a target database holds now.
#[derive(Debug)]
pub(crate) struct TargetState {
    pub(crate) exists: bool,
    /// User objects: relations, functions, types, extensions beyond plpgsql, schemas beyond public.
    pub(crate) objects: u64,
    pub(crate) server_major: u32,
    /// The server compresses TOASTed values with pglz by default and was built with lz4.
    pub(crate) toast_pglz_lz4_built: bool,
}

pub(crate) fn maintenance_db(target_db: &str) -> &'static str {
    if target_db == "postgres" {
        "template1"
    } else {
        "postgres"
    }
}

pub(crate) async fn inspect(psql: &Path, conn: &Conn) -> Result<TargetState> {
    let db = conn.url.dbname();
    let admin = conn.with_dbname(maintenance_db(db));
    let rows = pg::query(
        psql,
        &admin,
        &format!(
            "SELECT current_setting('server_version_num'), \
             (SELECT count(*) FROM pg_database WHERE datname = {}), \
             coalesce((SELECT setting = 'pglz' AND 'lz4' = ANY(enumvals) FROM pg_settings \
               WHERE name = 'default_toast_compression'), false)",
            quote_literal(db)
        ),
    )
    .await
    .ctx(format!("cannot reach the target server of {}", conn.url))?;
    let r = rows
        .first()
        .ok_or_else(|| Error::failed("empty answer from the target server"))?;
    let num: u32 = r[0].parse().unwrap_or(0);
    let server_major = if num >= 100000 {
        num / 10000
    } else {
        num / 100
    };
    let exists = r.get(1).is_some_and(|c| c != "0");
    let toast_pglz_lz4_built = r.get(2).is_some_and(|c| c == "t");
    let mut objects = 0;
    if exists {
        let rows = pg::query(
            psql,
            conn,
            "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
               WHERE n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' \
               AND n.nspname NOT LIKE 'pg\\_temp%') \
             + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
               WHERE n.nspname NOT IN ('pg_catalog','information_schema')) \
             + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql') \
             + (SELECT count(*) FROM pg_namespace WHERE nspname NOT IN ('pg_catalog','information_schema','public') \
               AND nspname NOT LIKE 'pg\\_%') \
             + (SELECT count(*) FROM pg_largeobject_metadata)",
        )
        .await
        .ctx(format!("cannot inspect the target database {}", conn.url))?;
        objects = rows.first().and_then(|r| r[0].parse().ok()).unwrap_or(0);
    }
    Ok(TargetState {
        exists,
        objects,
        server_major,
        toast_pglz_lz4_built,
    })
}

/// Drops the half-restored database if the restore is cancelled (SIGINT/SIGTERM drops the
/// future); disarmed once the restore into it has succeeded or been cleaned up.
pub(crate) struct ScratchDb {
    pub(crate) psql: Option<PathBuf>,
    pub(crate) admin: Conn,
    pub(crate) name: String,
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if let Some(psql) = self.psql.take() {
            let (admin, name) = (self.admin.clone(), std::mem::take(&mut self.name));
            crate::cleanup::spawn(async move {
                // pg_restore's sessions end when it is killed; give the server a moment.
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                drop_database(&psql, &admin, &name).await
            });
        }
    }
}

/// A database name of at most 63 bytes: `base` cut to fit, plus `suffix`.
pub(crate) fn db_name(base: &str, suffix: &str) -> String {
    let mut cut = 63usize.saturating_sub(suffix.len()).min(base.len());
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &base[..cut])
}

pub(crate) async fn create_database(
    psql: &Path,
    admin: &Conn,
    name: &str,
    m: &Manifest,
) -> Result<()> {
    let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(name));
    if let Some(enc) = &m.source.encoding {
        sql.push_str(&format!(" ENCODING {}", quote_literal(enc)));
    }
    let with_locale = match (&m.source.collate, &m.source.ctype) {
        (Some(c), Some(t)) => format!(
            "{sql} LC_COLLATE {} LC_CTYPE {}",
            quote_literal(c),
            quote_literal(t)
        ),
        _ => sql.clone(),
    };
    if pg::query(psql, admin, &with_locale).await.is_ok() {
        return Ok(());
    }
    // The target server may lack the source's locale: fall back to its default, loudly.
    tracing::warn!(
        "creating {name} with the source's locale failed; using the target server's default locale"
    );
    pg::query(psql, admin, &sql)
        .await
        .ctx(format!("cannot create database {name} on {}", admin.url))
        .map(|_| ())
}

pub(crate) async fn drop_database(psql: &Path, admin: &Conn, name: &str) {
    if let Err(e) = pg::query(
        psql,
        admin,
        &format!("DROP DATABASE IF EXISTS {}", quote_ident(name)),
    )
    .await
    {
        tracing::warn!("could not drop the scratch database {name}: {e}");
    }
}

/// How a dump is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RestorePlan {
    pub mode: Mode,
    /// Tables whose rows are dealt out to several sessions while they stream.
    pub split: Vec<(String, String)>,
    /// The large objects' contents are dealt out to several sessions too.
    pub split_blobs: bool,
}

/// The ways a dump is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Pre-data and data through one pg_restore fed by the stream (the big tables' rows
    /// dealt out to several sessions), the archive's head staged beside it; post-data
    /// with `--jobs` from the staged head.
    Stream,
    /// Staged to disk as it streams; each table's data loaded by a pool of sessions once
    /// its block is on disk; the rest and post-data with `--jobs` once every byte is proven.
    Progressive,
    /// Staged and proven whole first, then `pg_restore --jobs`.
    Stage,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Stream => "streamed",
            Mode::Progressive => "progressive",
            Mode::Stage => "staged",
        }
    }
}

/// The smallest table, in rows, worth dealing out to several sessions (starting them costs
/// a few milliseconds per table).
const SPLIT_MIN_ROWS: u64 = 20_000;

/// A table of fewer rows is still dealt out when its COPY data is this big (wide rows).
const SPLIT_MIN_BYTES: u64 = 16 << 20;

/// The fewest rows of such a table worth dealing out: each session needs a few.
const SPLIT_MIN_WIDE_ROWS: u64 = 16;

/// Stream when one table holds 70% or more of the data, or two hold 80% (of their bytes
/// when the snapshot records them, else of their rows; 100,000 rows or 64 MiB or more in
/// all): then loading each with several sessions while the snapshot still downloads
/// beats everything else (a progressive restore would load each by one session, after its
/// block is whole, and the bigger one alone at the end).
/// Otherwise (tables of comparable size, many small tables, or no row counts) restore
/// progressively: the tables load side by side as their blocks arrive, hiding the
/// download. `$BACKSTOP_RESTORE_MODE` = "stream", "progressive" or "stage" decides instead.
///
/// A dump whose manifest records no table-of-contents hash (a snapshot from before it was
/// recorded) is always staged, whatever else says: nothing runs from unproven bytes.
pub(crate) fn plan_restore(
    facts: Option<&crate::postgres::archive::DumpFacts>,
    dump: &snapshot::ObjectEntry,
    sessions: usize,
    server_major: u32,
) -> RestorePlan {
    if !head_provable(dump) {
        tracing::info!(
            "the snapshot records no table-of-contents hash: the dump is downloaded and proven whole before it is restored"
        );
        return RestorePlan {
            mode: Mode::Stage,
            split: Vec::new(),
            split_blobs: false,
        };
    }
    let tables = facts.map(|d| d.tables.as_slice()).unwrap_or(&[]);
    // Saturating: the facts are stored bytes; absurd counts must not overflow.
    let sum = |f: &dyn Fn(&crate::snapshot::facts::TableCount) -> u64| {
        tables.iter().map(f).fold(0u64, u64::saturating_add)
    };
    let total: u64 = sum(&|t| t.rows);
    // Bytes of COPY data weigh the tables when the snapshot records them (rows do not:
    // 60,000 rows of 4 KiB outweigh 200,000 of 60 bytes); rows otherwise.
    let total_bytes: u64 = sum(&|t| t.bytes);
    let weight = |t: &crate::snapshot::facts::TableCount| {
        if total_bytes > 0 { t.bytes } else { t.rows }
    };
    let total_weight: u64 = sum(&weight);
    let candidates: Vec<(String, String, u64)> = tables
        .iter()
        .filter(|t| {
            t.rows >= SPLIT_MIN_ROWS.max(total / 100)
                || (total_bytes > 0
                    && t.rows >= SPLIT_MIN_WIDE_ROWS
                    && t.bytes >= SPLIT_MIN_BYTES.max(total_bytes / 100))
        })
        .map(|t| (t.schema.clone(), t.table.clone(), weight(t)))
        .collect();
    // One dominant table (70%), or two big ones (80%: three comparable tables are not
    // streamed), each dealt out in turn.
    // Over every table: one too few rows to deal out is still best streamed (its load
    // overlaps the download instead of starting after it).
    let mut weights: Vec<u64> = tables.iter().map(weight).collect();
    weights.sort_unstable_by(|a, b| b.cmp(a));
    let biggest: u64 = weights.first().copied().unwrap_or(0);
    let two: u64 = weights
        .iter()
        .take(2)
        .fold(0u64, |a, &w| a.saturating_add(w));
    let dominant = biggest.saturating_mul(10) >= total_weight.saturating_mul(7)
        || two.saturating_mul(10) >= total_weight.saturating_mul(8);
    let big_enough = total >= 100_000 || total_bytes >= 64 << 20;
    let blobs = facts.map(|d| d.large_objects).unwrap_or(0);
    use crate::config::env::RestoreMode;
    let mode = match crate::config::env::restore_mode() {
        Some(RestoreMode::Stream) => Mode::Stream,
        Some(RestoreMode::Progressive) => Mode::Progressive,
        Some(RestoreMode::Stage) => Mode::Stage,
        None if big_enough && dominant => Mode::Stream,
        // Large objects outweigh the rows (pg_restore writes one in about the time it
        // loads 250 rows): streamed, their contents dealt out.
        None if blobs >= SPLIT_MIN_BLOBS && sessions > 1 && blobs.saturating_mul(250) >= total => {
            Mode::Stream
        }
        None => Mode::Progressive,
    };
    // Parallel COPY sessions need pg_stat_progress_copy (PostgreSQL 14) to start safely.
    let split = if mode == Mode::Stream && sessions > 1 && server_major >= 14 {
        candidates.into_iter().map(|(s, t, _)| (s, t)).collect()
    } else {
        Vec::new()
    };
    let split_blobs = mode == Mode::Stream && sessions > 1 && blobs >= SPLIT_MIN_BLOBS;
    RestorePlan {
        mode,
        split,
        split_blobs,
    }
}

/// The fewest large objects worth dealing out to several sessions: pg_restore writes each
/// with three round trips in one session, the others many per statement.
const SPLIT_MIN_BLOBS: u64 = 1_000;

/// Whether [`plan_restore`] can choose anything but a staged restore for this dump,
/// whatever the facts say (its download is then opened before they are read).
pub(crate) fn may_stream(dump: &snapshot::ObjectEntry) -> bool {
    head_provable(dump)
        && crate::config::env::restore_mode() != Some(crate::config::env::RestoreMode::Stage)
}

/// The dump's facts (row counts by table), if the snapshot recorded them.
pub(crate) fn read_dump_facts(path: &Path) -> Option<crate::postgres::archive::DumpFacts> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::snapshot::facts::Facts>(&b).ok())
        .and_then(|f| f.dump)
}

/// Sessions loading the biggest table of a streamed restore: the cores, at most 4
/// (`$BACKSTOP_RESTORE_SESSIONS` decides instead; 1 turns parallel loading off).
pub(crate) fn load_sessions() -> usize {
    crate::config::env::restore_sessions()
}

/// Which tables of a streamed restore have their rows dealt out to several sessions: psql
/// to run them, the (schema, table) list, the number of sessions, whether the large
/// objects are dealt out too.
pub(crate) type Split = (PathBuf, Vec<(String, String)>, usize, bool);

/// One `pg_restore` fed by the download as it is decrypted and decompressed. A fault in
/// the stored bytes (caught by age as it decrypts, or by the SHA-256 at the end) wins over
/// whatever pg_restore says about the broken stream. With `stage_to`, pg_restore runs only
/// the pre-data and data sections, and the archive's head (header and table of contents,
/// all the post-data step reads) is written to that file as it passes, for
/// [`pg_restore_post_data`] once every byte is proven.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn pg_restore_streaming(
    tools: &pg::Tools,
    conn: &Conn,
    reader: crate::storage::Reader,
    identities: Arc<Vec<Box<dyn age::Identity + Send + Sync>>>,
    key: &str,
    obj: &snapshot::ObjectEntry,
    no_owner: bool,
    split: Option<Split>,
    stage_to: Option<PathBuf>,
) -> Result<(u64, Vec<crate::postgres::load::Report>)> {
    let binary = crate::config::env::restore_copy_binary()?;
    let bin = tools.bin("pg_restore");
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(["--exit-on-error", "--no-password", "--dbname"])
        .arg(conn.url.conninfo());
    if no_owner {
        cmd.args(["--no-owner", "--no-acl"]);
    }
    if stage_to.is_some() {
        cmd.args(["--section=pre-data", "--section=data"]);
    }
    let stage_file = match &stage_to {
        Some(p) => Some(std::io::BufWriter::with_capacity(pipeline::READ_BUF, {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
                .map_err(|e| Error::failed(format!("cannot create {}: {e}", p.display())))?
        })),
        None => None,
    };
    cmd.envs(conn.env()?)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::failed(format!("cannot start {}: {e}", bin.display())))?;
    let split = match split {
        Some((psql, tables, sessions, blobs)) => {
            let env = conn.env()?;
            Some(crate::postgres::load::Plan {
                psql,
                conninfo: conn.url.conninfo(),
                env,
                tables,
                sessions,
                blobs,
                binary,
                restore_pid: child.id(),
            })
        }
        None => None,
    };
    let stdin = child.stdin.take();
    if let Some(s) = &stdin {
        pg::widen_pipe(s);
    }
    let mut stderr = child.stderr.take();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = std::io::Read::read_to_string(e, &mut s);
        }
        s
    });
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let (name, stored, sha) = (key.to_string(), obj.stored_bytes, obj.sha256.clone());
    let obj = obj.clone();
    // Only the head is staged (what the post-data step reads); without a recorded head,
    // everything (a streamed restore needs one; this is the safe side).
    let file_left = obj.head_bytes.unwrap_or(u64::MAX);
    let decoded = tokio::task::spawn_blocking(move || {
        let Some(stdin) = stdin else {
            return Err(Error::failed("pg_restore has no stdin".to_string()));
        };
        let w = std::io::BufWriter::with_capacity(pipeline::READ_BUF, stdin);
        let expect = Expect {
            name: &name,
            stored_bytes: stored,
            sha256: &sha,
        };
        match split {
            None => {
                let mut tee = HeadGate::new(Tee::new(stage_file, file_left, w), &obj);
                let n = pipeline::decode_with(bridge, &identities, &expect, |plain| {
                    std::io::copy(plain, &mut tee)
                        .and_then(|n| std::io::Write::flush(&mut tee).map(|_| n))
                        .map_err(|e| Error::failed(format!("writing to pg_restore: {e}")))
                })?;
                tee.into_inner().seal().map_err(stage_error)?;
                Ok((n, Vec::new()))
            }
            Some(plan) => {
                let sw = crate::postgres::load::SplitWriter::new(w, plan);
                let mut tee = HeadGate::new(Tee::new(stage_file, file_left, sw), &obj);
                let n = pipeline::decode_with(bridge, &identities, &expect, |plain| {
                    std::io::copy(plain, &mut tee)
                        .and_then(|n| std::io::Write::flush(&mut tee).map(|_| n))
                        .map_err(|e| match tee.inner().out.failure() {
                            Some(why) => Error::failed(why.to_string()),
                            None => Error::failed(format!("cannot decrypt or decompress: {e}")),
                        })
                })?;
                let mut tee = tee.into_inner();
                tee.seal().map_err(stage_error)?;
                let report = tee
                    .out
                    .finish()
                    .map_err(|e| Error::failed(format!("writing to pg_restore: {e}")))?;
                Ok((n, report))
            }
        }
        // The writer (pg_restore's stdin) is closed here: pg_restore sees the end.
    })
    .await
    .map_err(|e| Error::failed(format!("download task failed: {e}")));
    let decoded = match decoded {
        Ok(r) => r,
        Err(e) => Err(e),
    };
    if decoded.is_err() {
        let _ = child.kill();
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .map_err(|e| Error::failed(format!("waiting for pg_restore: {e}")))?
        .map_err(|e| Error::failed(format!("waiting for pg_restore: {e}")))?;
    let stderr = errs.join().unwrap_or_default();
    let restore_failed = || restore_error(&bin, &status.to_string(), &stderr);
    match decoded {
        // pg_restore stopped reading first: its own error is the one that matters.
        Err(e) if !status.success() && e.message().contains("Broken pipe") => Err(restore_failed()),
        Err(e) if !status.success() && e.message().contains("pg_restore ended before") => {
            Err(restore_failed())
        }
        Err(e) => Err(e),
        Ok(_) if !status.success() => Err(restore_failed()),
        Ok(r) => Ok(r),
    }
}

/// A progressive restore (see [`crate::postgres::progressive`]): the download staged to
/// `stage_to` while `sessions` sessions load each table once its block is on disk; use-lists
/// go in `lists`. `prepare` makes the new database ready (created, roles in) while the
/// download starts; nothing runs against the database before it has. Returns the decoded
/// bytes, how many blocks loaded while streaming, and what `prepare` returned.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn pg_restore_progressive<T>(
    prepare: impl std::future::Future<Output = Result<T>>,
    tools: &pg::Tools,
    conn: &Conn,
    reader: crate::storage::Reader,
    identities: Arc<Vec<Box<dyn age::Identity + Send + Sync>>>,
    key: &str,
    obj: &snapshot::ObjectEntry,
    no_owner: bool,
    sessions: usize,
    stage_to: PathBuf,
    lists: PathBuf,
) -> Result<(u64, usize, T)> {
    use crate::postgres::progressive::{Progressive, Target};
    let target = Target::new(tools, conn, no_owner)?;
    let (name, stored, sha) = (key.to_string(), obj.stored_bytes, obj.sha256.clone());
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let (progress, stager) =
        Progressive::start(target, &stage_to, &lists, sessions, obj.plaintext_bytes)?;
    let mut stager = HeadGate::new(stager, obj);
    let gate = progress.gate();
    let decoding = tokio::task::spawn_blocking(move || {
        let expect = Expect {
            name: &name,
            stored_bytes: stored,
            sha256: &sha,
        };
        let decoded = pipeline::decode_with(bridge, &identities, &expect, |plain| {
            std::io::copy(plain, &mut stager)
                .and_then(|n| std::io::Write::flush(&mut stager).map(|_| n))
                .map_err(|e| match progress.failure() {
                    Some(why) => Error::failed(why),
                    None => Error::failed(format!("cannot decrypt or decompress: {e}")),
                })
        });
        match decoded {
            // Every byte is proven: the rest of the data, then indexes and constraints.
            Ok(n) => progress
                .finish(stager.into_inner())
                .map(|loaded| (n, loaded)),
            Err(e) => {
                let first = progress.failure();
                progress.abort(e.message());
                Err(first.map(Error::failed).unwrap_or(e))
            }
        }
    });
    let prepared = prepare.await;
    match &prepared {
        Ok(_) => gate.open(),
        Err(e) => gate.fail(e.message().to_string()),
    }
    let decoded = decoding
        .await
        .map_err(|e| Error::failed(format!("restore task failed: {e}")))?;
    let t = prepared?;
    let (n, loaded) = decoded?;
    Ok((n, loaded, t))
}

/// The largest archive head (header and table of contents) a restore holds in memory to
/// prove it before anything runs; a manifest recording a bigger one is restored staged.
/// (A 2,000-table schema's is about 2 MiB; this bound keeps a forged manifest from making
/// a restore hold more than the memory target.)
pub(crate) const HEAD_HOLD_MAX: u64 = 32 << 20;

/// Whether `obj` records its archive head (small enough to hold), so its statements can be
/// proven before the rest of the object has arrived: otherwise a restore proves the whole
/// object first (staged).
fn head_provable(obj: &snapshot::ObjectEntry) -> bool {
    obj.head_sha256.is_some() && obj.head_bytes.is_some_and(|n| n > 0 && n <= HEAD_HOLD_MAX)
}

/// Holds the decoded stream back until the archive's header and table of contents (every
/// statement pg_restore will run, and the COPY command each data block is fed to) match
/// the length and SHA-256 the manifest records; only then does a byte reach pg_restore or
/// the staged file. Stored bytes are hostile until proven: without this, a replaced object
/// would run its statements before the SHA-256 of the whole object is checked at its end.
pub(crate) struct HeadGate<W: std::io::Write> {
    out: W,
    /// Still to prove: the head's length and SHA-256 (hex).
    expect: Option<(u64, String)>,
    held: Vec<u8>,
}

impl<W: std::io::Write> HeadGate<W> {
    /// A gate proving `obj`'s head (see [`head_provable`]); one that passes everything
    /// when `obj` records none.
    pub(crate) fn new(out: W, obj: &snapshot::ObjectEntry) -> Self {
        let expect = match (obj.head_bytes, &obj.head_sha256) {
            (Some(n), Some(h)) if head_provable(obj) => Some((n, h.to_ascii_lowercase())),
            _ => None,
        };
        HeadGate {
            out,
            expect,
            held: Vec::new(),
        }
    }

    pub(crate) fn inner(&self) -> &W {
        &self.out
    }

    pub(crate) fn into_inner(self) -> W {
        self.out
    }
}

impl<W: std::io::Write> std::io::Write for HeadGate<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some((len, sha)) = &self.expect else {
            return self.out.write(buf);
        };
        let len = *len as usize;
        self.held.extend_from_slice(buf);
        if self.held.len() >= len {
            use sha2::Digest;
            let got = hex::encode(sha2::Sha256::digest(&self.held[..len]));
            if &got != sha {
                return Err(std::io::Error::other(
                    "the archive's table of contents does not match the SHA-256 the manifest records \
                     (the stored object was altered or replaced); nothing from it was run",
                ));
            }
            self.expect = None;
            let held = std::mem::take(&mut self.held);
            self.out.write_all(&held)?;
        }
        Ok(buf.len())
    }

    /// The stream ended (every caller flushes only at its end): a head still held was
    /// shorter than the manifest says.
    fn flush(&mut self) -> std::io::Result<()> {
        if self.expect.is_some() {
            return Err(std::io::Error::other(
                "the archive ended before the table of contents the manifest records; nothing from it was run",
            ));
        }
        self.out.flush()
    }
}

/// Bytes to pg_restore and, when staging, the archive's head (header and table of
/// contents, `file_left` bytes) to the staged file too (the file first: it is what the
/// post-data step reads, and the post-data step reads nothing else, so the data is never
/// written to disk twice).
struct Tee<W: std::io::Write> {
    file: Option<std::io::BufWriter<std::fs::File>>,
    file_left: u64,
    /// Where each data block starts, for [`Tee::seal`].
    observer: crate::postgres::archive::DumpObserver,
    out: W,
}

impl<W: std::io::Write> Tee<W> {
    fn new(file: Option<std::io::BufWriter<std::fs::File>>, file_left: u64, out: W) -> Self {
        Tee {
            file,
            file_left,
            observer: crate::postgres::archive::DumpObserver::tracking_blocks(),
            out,
        }
    }

    /// The whole stream went through: the staged head gets each data block's offset in its
    /// table of contents, and the file the stream's length (the part past the head is a
    /// hole: the post-data step reads no data), as if pg_dump had written a file it could
    /// seek in. From those offsets `pg_restore --jobs` knows each table's size and starts
    /// the indexes and constraints of the biggest tables first; without them it starts
    /// them in the order pg_dump found the objects, and the biggest table's chain of index
    /// builds and checks could start last. (pg_restore takes the last block's size from
    /// the file's end; on a filesystem not known to keep holes free the file is not
    /// lengthened, since that could write the whole dump's size in zeros, and that block
    /// counts as small.)
    fn seal(&mut self) -> std::io::Result<()> {
        let Some(f) = &mut self.file else {
            return Ok(());
        };
        std::io::Write::flush(f)?;
        self.observer.settle();
        let file = f.get_ref();
        for b in self.observer.take_blocks() {
            if let Some((at, bytes)) = self.observer.offset_patch(b) {
                std::os::unix::fs::FileExt::write_all_at(file, &bytes, at)?;
            }
        }
        let end = self.observer.fed();
        if file.metadata()?.len() < end && holes_are_free(file) {
            file.set_len(end)?;
        }
        rank_post_data(file, &self.observer);
        Ok(())
    }
}

/// Once the stream has ended: the staged table of contents gets the offsets that make
/// `pg_restore --jobs` start each table's key and slow index builds before its other
/// post-data entries (see `DumpObserver::priority_patches`), on a filesystem where the
/// file's lengthening is a hole; elsewhere pg_restore keeps its own order. An order only:
/// a fault here (a length the filesystem refuses, say, for a table with a thousand unique
/// keys) is logged and leaves pg_restore's own order, never fails the restore.
pub(crate) fn rank_post_data(
    file: &std::fs::File,
    observer: &crate::postgres::archive::DumpObserver,
) {
    let Some((patches, len)) = observer.priority_patches() else {
        return;
    };
    if !holes_are_free(file) {
        return;
    }
    let ranked = (|| -> std::io::Result<()> {
        if file.metadata()?.len() < len {
            file.set_len(len)?;
        }
        for (at, bytes) in patches {
            std::os::unix::fs::FileExt::write_all_at(file, &bytes, at)?;
        }
        Ok(())
    })();
    if let Err(e) = ranked {
        tracing::warn!("the post-data entries keep pg_dump's order: {e}");
    }
}

/// Whether `file` is on a filesystem where a file lengthened past its end takes no room
/// (a hole), as on ext4, XFS, btrfs, tmpfs, ZFS, F2FS, bcachefs and overlayfs; not on FAT,
/// say, where it writes zeros.
fn holes_are_free(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    const SPARSE: [i64; 8] = [
        0xEF53,      // ext2, ext3, ext4
        0x5846_5342, // XFS
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs
        0x2FC1_2FC1, // ZFS
        0xF2F5_2010, // F2FS
        0xCA45_1A4E, // bcachefs
        0x794C_7630, // overlayfs
    ];
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: fstatfs fills `st` for an open descriptor, or fails and leaves it unread.
    let ok = unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) } == 0;
    if !ok {
        return false;
    }
    // SAFETY: fstatfs succeeded, so `st` is initialized.
    #[allow(clippy::unnecessary_cast)]
    let kind = unsafe { st.assume_init() }.f_type as i64;
    SPARSE.contains(&kind)
}

impl<W: std::io::Write> std::io::Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = &mut self.file {
            if self.file_left > 0 {
                let n = (buf.len() as u64).min(self.file_left) as usize;
                f.write_all(&buf[..n])?;
                self.file_left -= n as u64;
            }
            self.observer.feed(buf);
        }
        self.out.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(f) = &mut self.file {
            f.flush()?;
        }
        self.out.flush()
    }
}

fn stage_error(e: std::io::Error) -> Error {
    Error::failed(format!("cannot write the staged table of contents: {e}"))
}

/// pg_restore failed: what it said, and the likely fix when the dump's owners are missing.
pub(crate) fn restore_error(bin: &Path, status: &str, stderr: &str) -> Error {
    let hint = if stderr.contains("role") && stderr.contains("does not exist") {
        " (the dump's owners are missing on the target: restore with --no-owner, or store roles with globals = true)"
    } else {
        ""
    };
    Error::failed(format!(
        "{} failed ({status}): {}{hint}",
        bin.display(),
        crate::text::summarize(stderr)
    ))
}

/// Session settings for the restore's connections (`PGOPTIONS`): commits do not wait for
/// the WAL flush (a crash mid-way leaves only the new database, which is dropped and
/// restored again). With `toast_lz4`, values big enough to be compressed are compressed
/// with lz4 instead of the server's default pglz (columns the dump gives a method of their
/// own keep it): pglz made loading 5 KiB jsonb documents 2.5x slower. `maintenance_work_mem`
/// stays the server's own: more memory made GIN index builds 40-60% slower (a bigger
/// accumulator that no longer fits in the caches), made no restore with B-tree keys
/// measurably faster, and the server's memory is the server's to size. JIT compilation is
/// off (PostgreSQL 11 and newer): the one planned query a restore runs at size is each
/// foreign key's check, run once, and compiling it cost more than it saved (a 1.2 million
/// row table's check of a two-column key took 0.58-0.75 s with JIT, 0.44-0.47 s without).
pub(crate) fn session_options(toast_lz4: bool, server_major: u32) -> String {
    let mut o = String::from("-c synchronous_commit=off");
    if toast_lz4 {
        o.push_str(" -c default_toast_compression=lz4");
    }
    if server_major >= 11 {
        o.push_str(" -c jit=off");
    }
    o
}

/// The post-data section (indexes, constraints, triggers) of a staged archive whose data
/// a streamed restore loaded, with `--jobs`.
pub(crate) async fn pg_restore_post_data(
    tools: &pg::Tools,
    conn: &Conn,
    dump: &Path,
    no_owner: bool,
) -> Result<()> {
    pg_restore_sections(tools, conn, dump, no_owner, &["--section=post-data"]).await
}

/// A whole staged archive with `--jobs`. What must wait for every table's data (foreign
/// keys and triggers of partitioned tables, see `archive::held_back`) is held back from
/// that run and restored after it.
pub(crate) async fn pg_restore(
    tools: &pg::Tools,
    conn: &Conn,
    dump: &Path,
    no_owner: bool,
) -> Result<()> {
    let head = tokio::task::spawn_blocking({
        let dump = dump.to_path_buf();
        move || super::archive::head_of_file(&dump)
    })
    .await
    .ok()
    .flatten();
    let Some(head) = head.filter(|h| !h.held.is_empty()) else {
        return pg_restore_sections(tools, conn, dump, no_owner, &[]).await;
    };
    let held: std::collections::HashSet<i32> = head.held.iter().copied().collect();
    let first: Vec<i32> = head
        .ids
        .iter()
        .copied()
        .filter(|id| !held.contains(id))
        .collect();
    let lists = [
        (dump.with_extension("first.list"), first),
        (dump.with_extension("last.list"), head.held.clone()),
    ];
    for (path, ids) in &lists {
        super::progressive::write_list(path, ids).map_err(Error::failed)?;
    }
    for (path, _) in &lists {
        let list = path.to_string_lossy();
        pg_restore_sections(tools, conn, dump, no_owner, &["--use-list", &list]).await?;
    }
    Ok(())
}

async fn pg_restore_sections(
    tools: &pg::Tools,
    conn: &Conn,
    dump: &Path,
    no_owner: bool,
    sections: &[&str],
) -> Result<()> {
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2);
    let bin = tools.bin("pg_restore");
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.kill_on_drop(true);
    cmd.arg(format!("--jobs={jobs}"))
        .args(["--exit-on-error", "--no-password", "--dbname"])
        .arg(conn.url.conninfo());
    if no_owner {
        cmd.args(["--no-owner", "--no-acl"]);
    }
    let out = cmd
        .args(sections)
        .arg(dump)
        .envs(conn.env()?)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::failed(format!("cannot start {}: {e}", bin.display())))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(restore_error(&bin, &out.status.to_string(), &stderr));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    /// Ranking the post-data is an order only: a staged file that cannot be lengthened or
    /// written (here opened read-only; in the field, a length the filesystem refuses) is
    /// left as it was and the restore goes on; a writable one gets the ranks past its end,
    /// its bytes unchanged up to there but for the ranked entries' offset fields.
    #[test]
    fn a_staged_file_that_cannot_take_the_ranks_is_left_as_it_was() {
        let (head, a) = crate::postgres::archive::tests::ranked_archive();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump");
        std::fs::write(&path, &a).unwrap();
        let mut o = crate::postgres::archive::DumpObserver::tracking_blocks();
        o.feed(&a);
        o.settle();
        let (patches, len) = o.priority_patches().unwrap();
        super::rank_post_data(&std::fs::File::open(&path).unwrap(), &o);
        assert_eq!(std::fs::read(&path).unwrap(), a);
        let rw = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        super::rank_post_data(&rw, &o);
        let b = std::fs::read(&path).unwrap();
        if !super::holes_are_free(&rw) {
            assert_eq!(b, a);
            return;
        }
        assert_eq!(b.len() as u64, len);
        assert!(b[a.len()..].iter().all(|&x| x == 0));
        let mut want = a.clone();
        for (at, bytes) in patches {
            assert!(at as usize + bytes.len() <= head.len());
            want[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        }
        assert_eq!(b[..a.len()], want[..]);
    }

    #[test]
    fn the_staged_head_records_where_each_block_starts_and_the_archive_s_length() {
        use crate::postgres::archive::{Parse, read_head};
        let a = crate::postgres::archive::tests::archive();
        let Parse::Ok(head) = read_head(&a) else {
            panic!("the fixture's head parses")
        };
        // Where the blocks really start, and the head's length.
        let mut o = crate::postgres::archive::DumpObserver::tracking_blocks();
        o.feed(&a);
        o.settle();
        let blocks = o.take_blocks();
        assert_eq!(blocks.len(), 2);
        let head_len = blocks[0].start;
        for step in [1, 7, 4096] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("dump.head");
            let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            let mut tee = super::Tee::new(Some(file), head_len, Vec::new());
            for piece in a.chunks(step) {
                tee.write_all(piece).unwrap();
            }
            tee.seal().unwrap();
            // Everything went through to pg_restore untouched.
            assert_eq!(tee.out, a);
            drop(tee);
            let staged = std::fs::read(&path).unwrap();
            // The archive's length where holes are free (a hole reads as zeros), else the
            // head's.
            let holes = super::holes_are_free(&std::fs::File::open(&path).unwrap());
            let len = if holes { a.len() } else { head_len as usize };
            assert_eq!(staged.len(), len, "step {step}");
            assert!(staged[head_len as usize..].iter().all(|&b| b == 0));
            let Parse::Ok(h) = read_head(&staged) else {
                panic!("step {step}: the staged head does not parse")
            };
            assert_eq!(h.ids, head.ids);
            for ((id, field), b) in h.offset_fields.iter().zip(&blocks) {
                assert_eq!(*id, b.id);
                assert_eq!(staged[*field], 2, "offset set");
                let raw = &staged[field + 1..field + 9];
                assert_eq!(u64::from_le_bytes(raw.try_into().unwrap()), b.start);
            }
        }
        // Nothing staged: nothing to seal.
        let mut tee = super::Tee::new(None, 0, Vec::new());
        tee.write_all(&a).unwrap();
        tee.seal().unwrap();
    }

    #[test]
    fn restore_sessions_skip_the_wal_flush_and_jit_where_the_server_knows_jit() {
        let o = super::session_options(true, 15);
        assert_eq!(
            o,
            "-c synchronous_commit=off -c default_toast_compression=lz4 -c jit=off"
        );
        // PostgreSQL 10 refuses a connection that names a setting it does not have.
        assert_eq!(
            super::session_options(false, 10),
            "-c synchronous_commit=off"
        );
        assert!(super::session_options(false, 11).ends_with("-c jit=off"));
    }

    fn dump_entry(head: &[u8], bytes: Option<u64>) -> crate::snapshot::ObjectEntry {
        use sha2::Digest;
        crate::snapshot::ObjectEntry {
            name: "dump.zst.age".into(),
            role: "dump".into(),
            format: "pg_dump-custom".into(),
            plaintext_bytes: 0,
            stored_bytes: 0,
            sha256: String::new(),
            head_bytes: bytes.or(Some(head.len() as u64)),
            head_sha256: Some(hex::encode(sha2::Sha256::digest(head))),
        }
    }

    #[test]
    fn the_head_gate_holds_everything_back_until_the_head_is_proven() {
        let head = b"PGDMP head and table of contents";
        let mut gate = super::HeadGate::new(Vec::new(), &dump_entry(head, None));
        gate.write_all(&head[..10]).unwrap();
        assert!(gate.inner().is_empty(), "nothing passes before the proof");
        gate.write_all(&head[10..]).unwrap();
        gate.write_all(b"data").unwrap();
        gate.flush().unwrap();
        assert_eq!(gate.into_inner(), [&head[..], b"data"].concat());

        // Another head of the same length: refused, nothing passed.
        let mut gate = super::HeadGate::new(Vec::new(), &dump_entry(head, None));
        let forged = b"PGDMP DROP DATABASE production;!";
        assert!(gate.write_all(&forged[..head.len()]).is_err());
        assert!(gate.inner().is_empty());

        // The stream ends before the head: refused at the end, nothing passed.
        let mut gate = super::HeadGate::new(Vec::new(), &dump_entry(head, None));
        gate.write_all(&head[..5]).unwrap();
        assert!(gate.flush().is_err());
        assert!(gate.inner().is_empty());
    }

    #[test]
    fn an_oversized_or_missing_head_record_means_a_staged_restore() {
        let head = b"head";
        let big = dump_entry(head, Some(super::HEAD_HOLD_MAX + 1));
        assert_eq!(
            super::plan_restore(None, &big, 2, 15).mode,
            super::Mode::Stage
        );
        let mut none = dump_entry(head, None);
        none.head_sha256 = None;
        assert_eq!(
            super::plan_restore(None, &none, 2, 15).mode,
            super::Mode::Stage
        );
        assert_eq!(
            super::plan_restore(None, &dump_entry(head, None), 2, 15).mode,
            super::Mode::Progressive
        );
        // The early download follows the same rule: never opened for a staged restore.
        assert!(!super::may_stream(&big) && !super::may_stream(&none));
        assert!(super::may_stream(&dump_entry(head, None)));
    }

    /// The plan by shape: the table holding most of the data (by bytes when recorded)
    /// streams and is dealt out; comparable tables restore progressively; large objects
    /// that outweigh the rows stream with their contents dealt out.
    #[test]
    fn the_plan_follows_where_the_data_is() {
        use crate::snapshot::facts::{DumpFacts, TableCount};
        let dump = dump_entry(b"head", None);
        let facts = |tables: &[(&str, u64, u64)], large_objects: u64| DumpFacts {
            tables: tables
                .iter()
                .map(|&(t, rows, bytes)| TableCount {
                    schema: "public".into(),
                    table: t.into(),
                    rows,
                    bytes,
                })
                .collect(),
            large_objects,
            ..Default::default()
        };
        let plan = |f: &DumpFacts| super::plan_restore(Some(f), &dump, 2, 15);
        // 60,000 rows of 4 KiB beside 200,000 of 60 bytes: the wide table is the data.
        let wide = facts(
            &[("docs", 60_000, 240 << 20), ("log", 200_000, 12 << 20)],
            0,
        );
        let p = plan(&wide);
        assert_eq!(p.mode, super::Mode::Stream);
        assert!(p.split.contains(&("public".into(), "docs".into())));
        // The same without bytes (an older snapshot): by rows the narrow table holds 77%.
        let old = facts(&[("docs", 60_000, 0), ("log", 200_000, 0)], 0);
        assert_eq!(plan(&old).mode, super::Mode::Stream);
        let even = facts(&[("a", 100_000, 0), ("b", 100_000, 0), ("c", 90_000, 0)], 0);
        assert_eq!(plan(&even).mode, super::Mode::Progressive);
        // Two big tables hold the data: both dealt out, one after the other.
        let two = facts(
            &[
                ("a", 50_000, 94 << 20),
                ("b", 1_500_000, 98 << 20),
                ("c", 1_000, 1 << 20),
            ],
            0,
        );
        let p = plan(&two);
        assert_eq!(p.mode, super::Mode::Stream);
        assert_eq!(p.split.len(), 2);
        // Three comparable tables, or two big ones beside many that hold a third:
        // progressive.
        let three = facts(
            &[
                ("a", 100_000, 30 << 20),
                ("b", 100_000, 35 << 20),
                ("c", 100_000, 35 << 20),
            ],
            0,
        );
        assert_eq!(plan(&three).mode, super::Mode::Progressive);
        let mut spread = vec![("a", 500_000, 100 << 20), ("b", 500_000, 100 << 20)];
        let names: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
        spread.extend(names.iter().map(|n| (n.as_str(), 50_000, 5 << 20)));
        assert_eq!(plan(&facts(&spread, 0)).mode, super::Mode::Progressive);
        // One table of 60,000 wide rows alone (fewer than 100,000 rows in all).
        let alone = facts(&[("docs", 60_000, 240 << 20)], 0);
        assert_eq!(plan(&alone).mode, super::Mode::Stream);
        // 300 files of 1 MiB beside 100,000 small rows: streamed, the files dealt out
        // (progressive, they loaded only once the whole download was decoded: 1.45x the
        // naive pipe from `file://`).
        let files = facts(&[("files", 300, 305 << 20), ("meta", 100_000, 4 << 20)], 0);
        let p = plan(&files);
        assert_eq!(p.mode, super::Mode::Stream);
        assert!(p.split.contains(&("public".into(), "files".into())));
        // A handful of rows is not dealt out, however big; still streamed.
        let few = facts(&[("files", 8, 305 << 20), ("meta", 100_000, 4 << 20)], 0);
        let p = plan(&few);
        assert_eq!(p.mode, super::Mode::Stream);
        assert!(!p.split.contains(&("public".into(), "files".into())));
        // Comparable tables by bytes, though one has most rows.
        let bytes_even = facts(
            &[
                ("a", 300_000, 50 << 20),
                ("b", 40_000, 50 << 20),
                ("c", 30_000, 50 << 20),
            ],
            0,
        );
        assert_eq!(plan(&bytes_even).mode, super::Mode::Progressive);
        // Large objects outweigh the rows.
        let blobs = facts(&[("docs", 15_000, 1 << 20)], 15_000);
        let p = plan(&blobs);
        assert_eq!(p.mode, super::Mode::Stream);
        assert!(p.split_blobs);
        // Absurd counts (the facts are stored bytes) plan without overflowing.
        let absurd = facts(
            &[("a", u64::MAX, u64::MAX), ("b", u64::MAX, u64::MAX)],
            u64::MAX,
        );
        assert_eq!(plan(&absurd).mode, super::Mode::Stream);
        // A few large objects: not dealt out.
        let few = facts(
            &[("a", 100_000, 0), ("b", 100_000, 0), ("c", 90_000, 0)],
            10,
        );
        assert!(!plan(&few).split_blobs);
    }

    #[test]
    fn db_names_fit() {
        let long = "x".repeat(70);
        let n = super::db_name(&long, "_pre_restore_20260101000000");
        assert_eq!(n.len(), 63);
        assert!(n.ends_with("_pre_restore_20260101000000"));
        assert_eq!(super::db_name("app", "_r"), "app_r");
    }
}
