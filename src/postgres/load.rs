//! Parallel loading of the big tables during a streamed restore. pg_restore gets the
//! whole archive as before, except that each big table's rows are dealt out in batches:
//! some stay in its stream, the others go to extra `psql` sessions running the same
//! `COPY ... FROM stdin` into the same table. pg_restore's COPY of a table only ends (and
//! with it, its move on to the next table and to indexes, constraints and triggers) after
//! every extra session has committed, so later steps see all rows, exactly as with one
//! session.
//!
//! The extra sessions connect as soon as the table's data block begins in the stream, and
//! each waits on the server until pg_restore's own COPY of the table is running (seen in
//! `pg_stat_progress_copy`, PostgreSQL 14 and newer) before it starts its own: everything
//! before the data section (CREATE TABLE and friends) is done by then, so no extra session
//! can hold a lock that a schema step waits for, and no rows are dealt to it before. Each
//! session reports how many rows it loaded, and that must equal the rows it was sent.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, SyncSender};

use serde::Serialize;

use crate::postgres::archive::{Head, Parse, decode_int, read_head};
use crate::postgres::binrows;

/// The end of a table's COPY data, `\.` on a line of its own (built once: building a
/// searcher costs more than a search through one piece of the stream).
static END_MARKER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\\.\n"));

/// Rows are dealt out in batches of about this many bytes, cut at row ends.
const BATCH: usize = 256 << 10;

/// A table loading in binary holds a row whole up to this size (its fields' lengths come
/// before their bytes); a wider row goes to pg_restore as text, in pieces as it arrives.
const WIDE: usize = 4 << 20;

/// How to reach the database and which tables to split.
pub(crate) struct Plan {
    pub psql: PathBuf,
    pub conninfo: String,
    pub env: Vec<(String, String)>,
    /// (schema, table) of every table whose rows are dealt out.
    pub tables: Vec<(String, String)>,
    /// Sessions loading the table, pg_restore's included (2 or more).
    pub sessions: usize,
    /// The large objects' contents are dealt out too (a `BLOB` entry per object in the
    /// table of contents, pg_dump 16 and older).
    pub blobs: bool,
    /// A table's rows go to the other sessions in binary where its column types allow.
    pub binary: bool,
    /// pg_restore's process: if it ends before its COPY shows up, nothing waits forever.
    pub restore_pid: u32,
}

/// What the split did to one table, for the restore report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Report {
    pub table: String,
    /// Rows loaded by each session; the first is pg_restore's.
    pub rows_by_session: Vec<u64>,
    /// How the other sessions were sent their rows: `binary` (converted from the dump's
    /// text; pg_restore then loads only rows left as text, such as rows wider than 4 MiB)
    /// or `text`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<&'static str>,
}

#[derive(Clone, Copy, Debug)]
enum IntFor {
    DataId,
    BlobsId,
    BlobOid,
    ChunkLen { blob: bool, target: bool },
}

#[derive(Debug)]
enum St {
    Head,
    BlockType,
    Int(IntFor),
    Chunk {
        remaining: usize,
        target: bool,
        blob: bool,
    },
    /// Not understood: everything goes through untouched (pg_restore judges it).
    Pass,
}

/// A table whose rows are dealt out.
#[derive(Debug, Clone, Default)]
struct Target {
    schema: String,
    table: String,
    copy_stmt: String,
}

struct Lane {
    child: Child,
    /// Its input, written by a thread of its own (which converts rows to binary there).
    tx: Option<SyncSender<Msg>>,
    writer: Option<std::thread::JoinHandle<io::Result<u64>>>,
    /// Rows its writer declined to convert (sent on to pg_restore as text).
    declined: u64,
    /// Drained on its own thread, so a chatty session never blocks on a full pipe.
    stderr: Option<std::thread::JoinHandle<String>>,
    /// What the session printed while it was waited for (its COPY's count comes later).
    said: Vec<u8>,
    rows: u64,
    /// Large objects: the statement being built, the objects written.
    sql: Vec<u8>,
    los: u64,
    /// A COPY was sent to this session: in binary (or text).
    copy: Option<bool>,
}

/// What a session prints once pg_restore's COPY of its table is running.
const READY: &str = "backstop-lane-ready";

/// What a session's writer thread is handed.
enum Msg {
    /// Bytes as they are: statements, rows of text, pieces of a wide row, the trailer.
    Raw(Vec<u8>),
    /// Whole rows of COPY text: written as they are, or converted once told to.
    Rows(Vec<u8>),
    /// Convert the rows from now on (rows it declines go back as text).
    Convert(binrows::Rows),
}

/// A session's writer: everything it is handed goes to the session's input, rows in
/// binary once it is told to convert; rows it declines go to `declined` (for pg_restore).
/// Returns how many it declined.
fn writer(
    mut stdin: impl Write,
    rx: Receiver<Msg>,
    declined: std::sync::mpsc::Sender<Vec<u8>>,
) -> io::Result<u64> {
    let (mut conv, mut out, mut n) = (None::<binrows::Rows>, Vec::new(), 0);
    for m in rx {
        match m {
            Msg::Raw(b) => stdin.write_all(&b)?,
            Msg::Convert(c) => conv = Some(c),
            Msg::Rows(rows) => {
                let Some(c) = conv.as_mut() else {
                    stdin.write_all(&rows)?;
                    continue;
                };
                out.clear();
                let mut text = Vec::new();
                n += c.rows(&rows, &mut out, &mut text);
                stdin.write_all(&out)?;
                if !text.is_empty() {
                    let _ = declined.send(text);
                }
            }
        }
    }
    Ok(n)
}

impl Lane {
    /// Close the session's input once its writer has written everything it was handed.
    fn close_input(&mut self) {
        drop(self.tx.take());
        if let Some(Ok(Ok(n))) = self.writer.take().map(|h| h.join()) {
            self.declined = n;
        }
    }

    /// Close the session's input and wait for it: its exit, all it printed, its errors.
    fn end(&mut self) -> io::Result<(std::process::ExitStatus, String, String)> {
        self.close_input();
        let mut out = String::from_utf8_lossy(&self.said).into_owned();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = io::Read::read_to_string(&mut o, &mut out);
        }
        let status = self.child.wait()?;
        Ok((status, out, self.stderr()))
    }

    fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

/// A writer in front of pg_restore's stdin that splits the target table's rows.
pub(crate) struct SplitWriter<W: Write> {
    out: W,
    plan: Plan,
    st: St,
    buf: Vec<u8>,
    last_try: usize,
    head: Option<Head>,
    /// The tables to split, by their data block's dump id.
    targets: std::collections::HashMap<i32, Target>,
    /// The table whose block is passing now.
    current: Option<Target>,
    /// Its rows go to the other sessions in binary.
    bin: bool,
    /// Rows the sessions' writers declined to convert, for pg_restore's COPY.
    declined_tx: std::sync::mpsc::Sender<Vec<u8>>,
    declined_rx: Receiver<Vec<u8>>,
    encoding: Option<String>,
    batch: Vec<u8>,
    /// How much of `batch` is whole rows (up to its last newline): only the bytes added
    /// since are searched for one, so a row of megabytes arriving in small pieces is
    /// scanned once, not once per piece.
    rows_end: usize,
    /// How much of `batch` has been searched (see [`Self::scan`]).
    scanned: usize,
    /// A row wider than a batch is not held whole: its first part went to this session,
    /// and the rest goes straight after it, up to the row's end.
    open_row: Option<usize>,
    /// From the end marker (`\.`) on: pg_restore's, sent when the block ends.
    tail: Vec<u8>,
    ended: bool,
    next: usize,
    lanes: Vec<Lane>,
    /// Every session has seen pg_restore's COPY of the current table.
    ready: bool,
    /// The large objects block passing now has its objects dealt out.
    blob_split: bool,
    /// The session writing the object passing now (0: pg_restore), where its next byte
    /// goes, the bytes dealt since the turn passed to this session, pg_restore's objects.
    blob_lane: usize,
    blob_oid: u32,
    blob_off: u64,
    turn: usize,
    restore_los: u64,
    restore_rows: u64,
    reports: Vec<Report>,
    failure: Option<String>,
}

impl<W: Write> SplitWriter<W> {
    pub(crate) fn new(out: W, plan: Plan) -> Self {
        let (declined_tx, declined_rx) = std::sync::mpsc::channel();
        SplitWriter {
            out,
            plan,
            st: St::Head,
            buf: Vec::new(),
            last_try: 0,
            head: None,
            targets: Default::default(),
            current: None,
            bin: false,
            declined_tx,
            declined_rx,
            encoding: None,
            batch: Vec::new(),
            rows_end: 0,
            scanned: 0,
            open_row: None,
            tail: Vec::new(),
            ended: false,
            next: 0,
            lanes: Vec::new(),
            ready: false,
            blob_split: false,
            blob_lane: 0,
            blob_oid: 0,
            blob_off: 0,
            turn: 0,
            restore_los: 0,
            restore_rows: 0,
            reports: Vec::new(),
            failure: None,
        }
    }

    /// Why the split failed, when it did (the io::Error says less).
    pub(crate) fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// After the whole stream: what was split, table by table.
    pub(crate) fn finish(mut self) -> io::Result<Vec<Report>> {
        if let St::Head = self.st {
            self.try_head()?;
        }
        if let St::Head = self.st {
            // The stream ended inside the header: pg_restore will say so.
            let rest = std::mem::take(&mut self.buf);
            self.out.write_all(&rest)?;
        }
        if !self.lanes.is_empty() {
            // The stream ended inside the target block: pg_restore will say so.
            self.kill_lanes();
        }
        self.out.flush()?;
        Ok(std::mem::take(&mut self.reports))
    }

    fn fail(&mut self, why: String) -> io::Error {
        self.kill_lanes();
        self.failure = Some(why.clone());
        io::Error::other(why)
    }

    fn kill_lanes(&mut self) {
        for mut l in self.lanes.drain(..) {
            // Killed before its stdin closes: an end of input would commit the rows so far.
            let _ = l.child.kill();
            l.close_input();
            let _ = l.child.wait();
            l.stderr();
        }
    }

    fn int_size(&self) -> usize {
        self.head.as_ref().map(|h| h.int_size).unwrap_or(4)
    }

    /// Parse the buffered header and TOC; once whole, pass it on and go on with the rest.
    fn try_head(&mut self) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        match read_head(&buf) {
            Parse::NeedMore => self.buf = buf,
            Parse::Bad(_) => {
                self.st = St::Pass;
                self.out.write_all(&buf)?;
            }
            Parse::Ok(h) => {
                self.out.write_all(&buf[..h.len])?;
                // Only a table whose COPY names the table itself: a partition's rows loaded
                // through its partitioned table (`--load-via-partition-root`, or pg_dump's
                // own choice for hash partitions on an enum) are a COPY into that table,
                // which the sessions would wait for in vain; those stay with pg_restore.
                for d in h.data.iter().filter(|d| {
                    self.plan
                        .tables
                        .iter()
                        .any(|(s, t)| *s == d.schema && *t == d.table)
                        && copies_into(&d.copy_stmt, &d.schema, &d.table)
                }) {
                    self.targets.insert(
                        d.id,
                        Target {
                            schema: d.schema.clone(),
                            table: d.table.clone(),
                            copy_stmt: d.copy_stmt.clone(),
                        },
                    );
                }
                self.encoding = h.encoding.clone();
                let used = h.len;
                self.head = Some(h);
                self.st = St::BlockType;
                self.feed(&buf[used..])?;
            }
        }
        Ok(())
    }

    fn feed(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.st {
                St::Pass => {
                    self.out.write_all(data)?;
                    return Ok(());
                }
                St::Head => {
                    self.buf.extend_from_slice(data);
                    data = &[];
                    // Re-parse only after the buffer grew by half: linear on big TOCs.
                    if self.last_try > 0 && self.buf.len() < self.last_try + self.last_try / 2 {
                        continue;
                    }
                    self.last_try = self.buf.len();
                    self.try_head()?;
                }
                St::BlockType => {
                    let t = data[0];
                    self.out.write_all(&data[..1])?;
                    data = &data[1..];
                    self.st = match t {
                        1 => St::Int(IntFor::DataId),
                        3 => St::Int(IntFor::BlobsId),
                        _ => St::Pass,
                    };
                }
                St::Int(purpose) => {
                    let width = self.int_size() + 1;
                    // An int is at most 9 bytes: kept on the stack (one per row's chunk).
                    let mut int = [0u8; 9];
                    if self.buf.is_empty() && data.len() >= width {
                        int[..width].copy_from_slice(&data[..width]);
                        data = &data[width..];
                    } else {
                        let take = (width - self.buf.len()).min(data.len());
                        self.buf.extend_from_slice(&data[..take]);
                        data = &data[take..];
                        if self.buf.len() < width {
                            continue;
                        }
                        int[..width].copy_from_slice(&self.buf);
                        self.buf.clear();
                    }
                    let raw = &int[..width];
                    let v = decode_int(raw);
                    // pg_restore sees every int but those of rows or objects dealt out.
                    let diverted = match purpose {
                        IntFor::ChunkLen { target: true, .. } => true,
                        IntFor::ChunkLen { blob: true, .. } => self.blob_lane > 0,
                        IntFor::BlobOid if self.blob_split && v != 0 => {
                            self.blob_lane = self.pick_blob_lane();
                            self.blob_oid = v as u32;
                            self.blob_off = 0;
                            if self.blob_lane == 0 {
                                self.restore_los += 1;
                            } else {
                                self.lanes[self.blob_lane - 1].los += 1;
                            }
                            self.blob_lane > 0
                        }
                        IntFor::BlobOid if self.blob_split => {
                            self.end_blobs()?;
                            false
                        }
                        _ => false,
                    };
                    if !diverted {
                        self.out.write_all(raw)?;
                    }
                    self.st = match purpose {
                        IntFor::DataId => {
                            self.current = self.targets.get(&(v as i32)).cloned();
                            let target = self.current.is_some();
                            if target {
                                // pg_restore must see the block start before any session waits.
                                self.out.flush()?;
                                self.start_lanes()?;
                            }
                            St::Int(IntFor::ChunkLen {
                                blob: false,
                                target,
                            })
                        }
                        IntFor::BlobsId => {
                            self.start_blob_lanes()?;
                            St::Int(IntFor::BlobOid)
                        }
                        IntFor::BlobOid if v == 0 => St::BlockType,
                        IntFor::BlobOid => St::Int(IntFor::ChunkLen {
                            blob: true,
                            target: false,
                        }),
                        IntFor::ChunkLen { blob: true, .. } if v == 0 => {
                            self.blob_lane = 0;
                            St::Int(IntFor::BlobOid)
                        }
                        IntFor::ChunkLen { target: true, .. } if v == 0 => {
                            self.end_target(raw)?;
                            St::BlockType
                        }
                        IntFor::ChunkLen { .. } if v == 0 => St::BlockType,
                        IntFor::ChunkLen { target, blob } if v > 0 => St::Chunk {
                            remaining: v as usize,
                            target,
                            blob,
                        },
                        IntFor::ChunkLen { .. } => {
                            return Err(self.fail(format!(
                                "negative chunk length {v} in the archive's data section"
                            )));
                        }
                    };
                }
                St::Chunk {
                    remaining,
                    target,
                    blob,
                } => {
                    let take = remaining.min(data.len());
                    if blob && self.blob_split {
                        self.turn += take;
                    }
                    if target {
                        self.rows_in(&data[..take])?;
                    } else if blob && self.blob_lane > 0 {
                        self.blob_bytes(&data[..take])?;
                    } else {
                        self.out.write_all(&data[..take])?;
                    }
                    data = &data[take..];
                    self.st = if take == remaining {
                        St::Int(IntFor::ChunkLen { blob, target })
                    } else {
                        St::Chunk {
                            remaining: remaining - take,
                            target,
                            blob,
                        }
                    };
                }
            }
        }
        Ok(())
    }

    /// Rows of the target table (COPY text, one row per line). pg_dump writes a chunk per
    /// row, so a piece is mostly appended and nothing more: the batch is searched (for its
    /// last row end and the end marker) once it holds a batch's worth.
    fn rows_in(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if self.ended {
            self.tail.extend_from_slice(bytes);
            return Ok(());
        }
        if let Some(lane) = self.open_row {
            let Some(nl) = memchr::memchr(b'\n', bytes) else {
                return self.send(lane, bytes, 0);
            };
            self.send(lane, &bytes[..=nl], 1)?;
            self.open_row = None;
            bytes = &bytes[nl + 1..];
        }
        if self.batch.capacity() == 0 {
            self.batch.reserve(BATCH + BATCH / 4);
        }
        self.batch.extend_from_slice(bytes);
        if self.batch.len() < BATCH {
            return Ok(());
        }
        self.take_declined()?;
        self.scan();
        if !self.ready {
            self.decide()?;
        }
        if self.rows_end > 0 {
            let mut rest = Vec::with_capacity(BATCH + BATCH / 4);
            rest.extend_from_slice(&self.batch[self.rows_end..]);
            self.batch.truncate(self.rows_end);
            let rows = std::mem::replace(&mut self.batch, rest);
            self.rows_end = 0;
            self.scanned = self.batch.len();
            self.deal(rows)?;
        }
        // What is left is part of one row (no newline past `rows_end`). A batch's worth of
        // it (in binary: 4 MiB of it) begins that row in the next session (in binary:
        // pg_restore's, as text), which gets the rest as it arrives: a row of a gigabyte
        // passes in pieces, never whole in memory.
        let hold = if self.bin { WIDE } else { BATCH };
        if self.batch.len() >= hold && self.rows_end == 0 && !self.ended {
            let lane = if self.bin { 0 } else { self.next_lane() };
            let part = std::mem::take(&mut self.batch);
            self.scanned = 0;
            self.send(lane, &part, 0)?;
            self.open_row = Some(lane);
        }
        Ok(())
    }

    /// Search what the batch gained since the last search: for the end marker (a line
    /// that is exactly `\.`; a row never is, COPY escapes `\`), which ends the rows and
    /// sends everything from it on to `tail`, and for the last row end.
    fn scan(&mut self) {
        let from = self.scanned;
        let scan = from.saturating_sub(2);
        let mut at = None;
        for p in END_MARKER.find_iter(&self.batch[scan..]) {
            let p = scan + p;
            if p == 0 || self.batch[p - 1] == b'\n' {
                at = Some(p);
                break;
            }
        }
        if let Some(p) = at {
            self.tail = self.batch.split_off(p);
            self.ended = true;
            // The marker starts a line: everything before it is whole rows.
            self.rows_end = p;
        } else if let Some(nl) = memchr::memrchr(b'\n', &self.batch[from..]) {
            self.rows_end = from + nl + 1;
        }
        self.scanned = self.batch.len();
    }

    /// The session the next batch goes to: with extra sessions started, each of them in
    /// turn (pg_restore's own COPY gets only rows left as text); otherwise pg_restore.
    fn next_lane(&mut self) -> usize {
        let lane = self.next;
        let n = if self.ready { self.lanes.len() } else { 0 };
        self.next = if n == 0 {
            (self.next + 1) % self.plan.sessions.max(1)
        } else {
            self.next % n + 1
        };
        lane
    }

    /// Send a batch of whole rows to the next session (its writer converts them when the
    /// table loads in binary).
    fn deal(&mut self, rows: Vec<u8>) -> io::Result<()> {
        let lane = self.next_lane();
        let n = memchr::memchr_iter(b'\n', &rows).count() as u64;
        if lane == 0 {
            return self.send(0, &rows, n);
        }
        self.send_msg(lane, Msg::Rows(rows), n)
    }

    /// Rows the writers declined to convert go to pg_restore's COPY, as text.
    fn take_declined(&mut self) -> io::Result<()> {
        while let Ok(rows) = self.declined_rx.try_recv() {
            let n = memchr::memchr_iter(b'\n', &rows).count() as u64;
            self.send(0, &rows, n)?;
        }
        Ok(())
    }

    /// Before the first batch is dealt out: wait until the other sessions have seen
    /// pg_restore's COPY of the table, learn its columns' types from them, and start each
    /// one's COPY: in binary when every column converts and the archive's COPY names the
    /// columns as the table has them, in text otherwise.
    fn decide(&mut self) -> io::Result<()> {
        if self.lanes.is_empty() {
            // A COPY statement not handed to psql: `send` refuses the rows.
            return Ok(());
        }
        self.wait_ready("the table")?;
        let t = self.current.clone().unwrap_or_default();
        let stmt = t.copy_stmt.trim();
        let kinds = if self.plan.binary {
            ready_line(&self.lanes[0].said).and_then(|l| binary_kinds(l, stmt))
        } else {
            None
        };
        let first = match (&kinds, stmt.strip_suffix(" FROM stdin;")) {
            (Some(_), Some(head)) => {
                let mut b = format!("{head} FROM stdin WITH (FORMAT binary);\n").into_bytes();
                b.extend_from_slice(binrows::HEADER);
                b
            }
            _ => format!("{stmt}\n").into_bytes(),
        };
        let binary = kinds.is_some();
        for i in 0..self.lanes.len() {
            self.lanes[i].copy = Some(binary);
            self.send_msg(i + 1, Msg::Raw(first.clone()), 0)?;
            if let Some(k) = &kinds {
                self.send_msg(i + 1, Msg::Convert(binrows::Rows::new(k.clone())), 0)?;
            }
        }
        self.bin = binary;
        self.next = 1;
        Ok(())
    }

    /// Send `bytes`, which end `rows` rows, to session `lane` (0: pg_restore). Only the
    /// end of a row flushes pg_restore's stream.
    fn send(&mut self, lane: usize, bytes: &[u8], rows: u64) -> io::Result<()> {
        if lane == 0 {
            self.restore_rows += rows;
            self.chunk_to_restore(bytes)?;
            return if rows > 0 { self.out.flush() } else { Ok(()) };
        }
        if !self.ready {
            self.wait_ready("the table")?;
        }
        self.send_msg(lane, Msg::Raw(bytes.to_vec()), rows)
    }

    /// Hand session `lane` (1 and up) `msg`, which ends `rows` rows.
    fn send_msg(&mut self, lane: usize, msg: Msg, rows: u64) -> io::Result<()> {
        let l = &mut self.lanes[lane - 1];
        l.rows += rows;
        let sent = l.tx.as_ref().map(|t| t.send(msg).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        let why = self.lane_error(lane - 1);
        Err(self.fail(why))
    }

    fn chunk_to_restore(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut len = vec![0u8];
        len.extend_from_slice(&(bytes.len() as u64).to_le_bytes()[..self.int_size()]);
        self.out.write_all(&len)?;
        self.out.write_all(bytes)
    }

    /// Start the other sessions as the table's data block begins: each connects and waits
    /// on the server for pg_restore's COPY of the table before it runs its own. A COPY
    /// statement that may not be handed to psql starts none (the table is then refused
    /// only if it has rows to deal out).
    fn start_lanes(&mut self) -> io::Result<()> {
        self.ready = false;
        let Some(t) = self.current.clone() else {
            return Ok(());
        };
        if self.plan.sessions < 2 || !plain_copy(&t.copy_stmt) {
            return Ok(());
        }
        // The names travel as hex: no text from the archive inside the block's quotes. They
        // are matched in pg_class (read afresh by each statement), not through a regclass
        // lookup, which a long statement would answer from a catalog snapshot taken before
        // pg_restore created the table.
        let text = |s: &str| {
            format!(
                "pg_catalog.convert_from(pg_catalog.decode('{}', 'hex'), 'UTF8')",
                hex::encode(s.as_bytes())
            )
        };
        let (table, schema) = (text(&t.table), text(&t.schema));
        let wait = wait_until(&format!(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_stat_progress_copy p \
             JOIN pg_catalog.pg_class c ON c.oid = p.relid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE p.datname = pg_catalog.current_database() AND c.relname = {table} AND n.nspname = {schema})"
        ));
        // Ready, with the table's columns as COPY names them (hex) and their types (an
        // enum's as text, a domain's as its base type), in the table's order.
        let ready = format!(
            "SELECT '{READY} ' || COALESCE((SELECT \
               pg_catalog.encode(pg_catalog.convert_to(pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum), 'UTF8'), 'hex') \
               || ' ' || pg_catalog.string_agg((CASE WHEN t.typtype = 'e' THEN 25::pg_catalog.oid \
                 WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END)::pg_catalog.text, ',' ORDER BY a.attnum) \
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = (SELECT c.oid FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               WHERE c.relname = {table} AND n.nspname = {schema}) \
             AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), '-')"
        );
        let then = vec![
            // The session state pg_restore sets for its own data loading.
            "SET row_security = off".to_string(),
            "SET client_min_messages = warning".to_string(),
            "SELECT pg_catalog.set_config('search_path', '', false)".to_string(),
        ];
        // The COPY comes on their input once the first batch is due (`decide`).
        let n = self.plan.sessions;
        self.spawn_lanes(n, &wait, &ready, &then)
    }

    /// Start `count` psql sessions that run `wait`, then `ready` (which prints a line
    /// starting with [`READY`]), then `then`, and then read SQL from their input (a COPY
    /// reads its rows from there too).
    fn spawn_lanes(
        &mut self,
        count: usize,
        wait: &str,
        ready: &str,
        then: &[String],
    ) -> io::Result<()> {
        for _ in 0..count {
            let mut cmd = self.psql();
            cmd.args(["-A", "-t"])
                // A session whose client went away while it waits ends within 0.1 s
                // (PostgreSQL 14 and newer on Linux; elsewhere the wait's deadline ends it).
                .args([
                    "-c",
                    "DO $backstop$ BEGIN PERFORM pg_catalog.set_config('client_connection_check_interval', '100', false); \
                     EXCEPTION WHEN OTHERS THEN NULL; END $backstop$",
                ])
                .args(["-c", wait])
                .args(["-c", ready]);
            for t in then {
                cmd.args(["-c", t]);
            }
            cmd.args(["-f", "-"]);
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            // Named, so an operator can tell these sessions apart in pg_stat_activity.
            cmd.env("PGAPPNAME", "backstop-parallel-load");
            if let Some(enc) = &self.encoding {
                cmd.env("PGCLIENTENCODING", enc);
            }
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    return Err(
                        self.fail(format!("cannot start {}: {e}", self.plan.psql.display()))
                    );
                }
            };
            let (tx, writer) = match child.stdin.take() {
                Some(stdin) => {
                    crate::postgres::widen_pipe(&stdin);
                    let (tx, rx) = std::sync::mpsc::sync_channel(2);
                    let declined = self.declined_tx.clone();
                    let h = std::thread::spawn(move || writer(stdin, rx, declined));
                    (Some(tx), Some(h))
                }
                None => (None, None),
            };
            let stderr = child.stderr.take().map(|mut e| {
                std::thread::spawn(move || {
                    let mut s = String::new();
                    let _ = io::Read::read_to_string(&mut e, &mut s);
                    s
                })
            });
            self.lanes.push(Lane {
                child,
                tx,
                writer,
                declined: 0,
                stderr,
                said: Vec::new(),
                rows: 0,
                sql: Vec::new(),
                los: 0,
                copy: None,
            });
        }
        Ok(())
    }

    /// A large objects block begins: with the objects to deal out, start the sessions
    /// that write them once every object exists (pg_restore creates them empty in its
    /// pre-data section, one `BLOB` entry each, before it reads any data).
    fn start_blob_lanes(&mut self) -> io::Result<()> {
        self.ready = false;
        self.blob_lane = 0;
        self.turn = 0;
        self.next = 0;
        self.restore_los = 0;
        // pg_restore creates them in the order of its table of contents: once the last
        // exists, all do (one that does not would fail its session's statement).
        let last = match &self.head {
            Some(h) if !h.blob_metadata && h.blob_entries > 0 => h.blob_last,
            _ => None,
        };
        self.blob_split = self.plan.blobs && self.plan.sessions > 1 && last.is_some();
        let Some(last) = last.filter(|_| self.blob_split) else {
            return Ok(());
        };
        self.out.flush()?;
        let wait = wait_until(&format!(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_largeobject_metadata WHERE oid = {last}::pg_catalog.oid)"
        ));
        let n = self.plan.sessions - 1;
        self.spawn_lanes(n, &wait, &format!("SELECT '{READY}'"), &[])
    }

    /// The session for the next large object: the same as the last until it was dealt a
    /// batch's worth, then the next in turn.
    fn pick_blob_lane(&mut self) -> usize {
        if self.turn >= BATCH {
            self.turn = 0;
            self.next = (self.next + 1) % self.plan.sessions.max(1);
        }
        self.next
    }

    /// Bytes of the large object passing now, for another session: a row of its next
    /// `lo_put` statement (the bytes as hex: nothing from the archive is read as SQL).
    fn blob_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let lane = self.blob_lane - 1;
        let (mut oid, off) = (self.blob_oid, self.blob_off);
        if self.lanes[lane].rows == 0 && crate::config::env::test_lo_fault() {
            oid = 0;
        }
        self.blob_off += bytes.len() as u64;
        let l = &mut self.lanes[lane];
        l.sql.extend_from_slice(if l.sql.is_empty() {
            b"SELECT pg_catalog.count(pg_catalog.lo_put(v.o, v.f, v.d)) FROM (VALUES ("
        } else {
            b", ("
        });
        write!(
            l.sql,
            "{oid}::pg_catalog.oid, {off}::pg_catalog.int8, pg_catalog.decode('"
        )?;
        l.sql.extend_from_slice(hex::encode(bytes).as_bytes());
        l.sql.extend_from_slice(b"', 'hex'))");
        l.rows += 1;
        if l.sql.len() >= BATCH {
            self.send_blob_sql(lane)?;
        }
        Ok(())
    }

    /// Send a session its statement as built so far.
    fn send_blob_sql(&mut self, lane: usize) -> io::Result<()> {
        if self.lanes[lane].sql.is_empty() {
            return Ok(());
        }
        if !self.ready {
            self.wait_ready("the large objects")?;
        }
        let mut sql = std::mem::take(&mut self.lanes[lane].sql);
        sql.extend_from_slice(b") AS v(o, f, d);\n");
        self.send_msg(lane + 1, Msg::Raw(sql), 0)
    }

    /// The large objects block ends: every session writes what it holds and commits,
    /// each having written every piece it was sent; then pg_restore gets the block's end.
    fn end_blobs(&mut self) -> io::Result<()> {
        for i in 0..self.lanes.len() {
            self.send_blob_sql(i)?;
        }
        if !self.ready {
            self.kill_lanes();
        }
        let mut by_session = vec![self.restore_los];
        for i in 0..self.lanes.len() {
            let (status, out, err) = self.lanes[i].end()?;
            let (sent, los) = (self.lanes[i].rows, self.lanes[i].los);
            // Each statement prints how many pieces it wrote.
            let written: u64 = out
                .lines()
                .skip_while(|l| *l != READY)
                .skip(1)
                .filter_map(|l| l.trim().parse::<u64>().ok())
                .sum();
            if !status.success() || written != sent {
                let why = format!(
                    "a parallel session writing large objects failed ({status}; sent {sent} pieces, written {written}): {}",
                    crate::text::summarize(&err)
                );
                return Err(self.fail(why));
            }
            by_session.push(los);
        }
        self.lanes.clear();
        if by_session.len() > 1 {
            self.reports.push(Report {
                table: "(large objects)".into(),
                rows_by_session: by_session,
                format: None,
            });
        }
        self.blob_split = false;
        self.blob_lane = 0;
        self.ready = false;
        self.next = 0;
        Ok(())
    }

    /// Before the first rows go to another session: wait until every session has seen
    /// pg_restore's COPY of the table, watching that pg_restore is still running.
    fn wait_ready(&mut self, what: &str) -> io::Result<()> {
        if self.lanes.is_empty() {
            let Some(t) = self.current.clone() else {
                return Err(self.fail("rows to deal out outside a table's data block".into()));
            };
            return Err(self.fail(format!(
                "the archive's COPY statement for {}.{} is not a plain `COPY ... FROM stdin;` and is not handed to psql",
                t.schema, t.table
            )));
        }
        loop {
            let waiting: Vec<usize> = (0..self.lanes.len())
                .filter(|&i| ready_line(&self.lanes[i].said).is_none())
                .collect();
            if waiting.is_empty() {
                self.ready = true;
                return Ok(());
            }
            if exited(self.plan.restore_pid) {
                return Err(self.fail(format!(
                    "pg_restore ended before it began loading {what}, dealt out to several sessions"
                )));
            }
            let mut fds: Vec<libc::pollfd> = waiting
                .iter()
                .map(|&i| libc::pollfd {
                    fd: self.lanes[i]
                        .child
                        .stdout
                        .as_ref()
                        .map(|o| o.as_raw_fd())
                        .unwrap_or(-1),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: `fds` is a live array of plain pollfd records of the given length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(self.fail(format!("waiting for the parallel COPY sessions: {e}")));
            }
            for (k, &i) in waiting.iter().enumerate() {
                if fds[k].revents == 0 {
                    continue;
                }
                let mut piece = [0u8; 4096];
                let got = match self.lanes[i].child.stdout.as_mut() {
                    Some(o) => io::Read::read(o, &mut piece),
                    None => Ok(0),
                };
                match got {
                    Ok(0) | Err(_) => {
                        let why = self.lane_error(i);
                        return Err(self.fail(why));
                    }
                    Ok(m) => self.lanes[i].said.extend_from_slice(&piece[..m]),
                }
            }
        }
    }

    fn psql(&self) -> Command {
        let mut cmd = Command::new(&self.plan.psql);
        cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-d", &self.plan.conninfo])
            .envs(self.plan.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// What a failed session said.
    fn lane_error(&mut self, i: usize) -> String {
        let l = &mut self.lanes[i];
        l.close_input();
        let status = l.child.wait();
        let err = l.stderr();
        let status = status.map(|s| s.to_string()).unwrap_or_default();
        if self.blob_split {
            return format!(
                "a parallel session writing large objects failed ({status}): {}",
                crate::text::summarize(&err)
            );
        }
        let t = self.current.clone().unwrap_or_default();
        format!(
            "a parallel COPY session into {}.{} failed ({status}): {}",
            t.schema,
            t.table,
            crate::text::summarize(&err)
        )
    }

    /// The target block ended: every session commits first, then pg_restore gets the
    /// last rows, the end marker and the block's end.
    fn end_target(&mut self, zero: &[u8]) -> io::Result<()> {
        if self.open_row.take().is_some() {
            // pg_dump ends every row, and the data with `\.`: this archive was not its.
            let t = self.current.clone().unwrap_or_default();
            return Err(self.fail(format!(
                "the archive's data for {}.{} ends inside a row",
                t.schema, t.table
            )));
        }
        if !self.ended {
            self.scan();
        }
        let mut last = std::mem::take(&mut self.batch);
        if !last.is_empty() && last.last() != Some(&b'\n') {
            // pg_dump ends every row: a last line without its end is not pg_dump's.
            let t = self.current.clone().unwrap_or_default();
            return Err(self.fail(format!(
                "the archive's data for {}.{} ends inside a row",
                t.schema, t.table
            )));
        }
        self.rows_end = 0;
        self.scanned = 0;
        if self.ready {
            // The last rows go to the next session like the others.
            if !last.is_empty() {
                self.deal(std::mem::take(&mut last))?;
            }
        } else {
            // No rows went to the other sessions: they end without a COPY.
            self.restore_rows += memchr::memchr_iter(b'\n', &last).count() as u64;
            self.kill_lanes();
        }
        let mut rows_by_session = vec![0];
        for i in 0..self.lanes.len() {
            if self.lanes[i].copy == Some(true) {
                self.send_msg(i + 1, Msg::Raw(binrows::TRAILER.to_vec()), 0)?;
            }
            let (status, out, err) = self.lanes[i].end()?;
            let sent = self.lanes[i].rows - self.lanes[i].declined.min(self.lanes[i].rows);
            let loaded = out
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("COPY "))
                .and_then(|n| n.trim().parse::<u64>().ok());
            if !status.success() || loaded != Some(sent) {
                let t = self.current.clone().unwrap_or_default();
                let why = format!(
                    "a parallel COPY session into {}.{} failed ({status}; sent {sent} rows, loaded {}): {}",
                    t.schema,
                    t.table,
                    loaded.map(|n| n.to_string()).unwrap_or("none".into()),
                    crate::text::summarize(&err)
                );
                return Err(self.fail(why));
            }
            rows_by_session.push(sent);
        }
        self.lanes.clear();
        // Every writer is done: the rows they declined go to pg_restore before its end.
        self.take_declined()?;
        last.extend_from_slice(&std::mem::take(&mut self.tail));
        self.chunk_to_restore(&last)?;
        self.out.write_all(zero)?;
        self.out.flush()?;
        rows_by_session[0] = self.restore_rows;
        let t = self.current.take().unwrap_or_default();
        if rows_by_session.len() > 1 {
            self.reports.push(Report {
                table: format!("{}.{}", t.schema, t.table),
                rows_by_session,
                format: Some(if self.bin { "binary" } else { "text" }),
            });
        }
        self.bin = false;
        self.ended = false;
        self.ready = false;
        self.restore_rows = 0;
        self.next = 0;
        Ok(())
    }
}

impl<W: Write> Write for SplitWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(why) = &self.failure {
            return Err(io::Error::other(why.clone()));
        }
        self.feed(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write> Drop for SplitWriter<W> {
    fn drop(&mut self) {
        self.kill_lanes();
    }
}

/// A DO block that returns once `cond` holds, polling every 5 ms with fresh statistics,
/// and fails after 10 minutes.
fn wait_until(cond: &str) -> String {
    format!(
        "DO $backstop$ DECLARE until timestamptz := pg_catalog.clock_timestamp() + interval '10 minutes'; \
         BEGIN WHILE NOT ({cond}) LOOP \
         IF pg_catalog.clock_timestamp() > until THEN \
         RAISE EXCEPTION 'pg_restore did not reach the data dealt out within 10 minutes'; END IF; \
         PERFORM pg_catalog.pg_stat_clear_snapshot(); PERFORM pg_catalog.pg_sleep(0.005); \
         END LOOP; END $backstop$"
    )
}

/// The whole line a session printed once ready, if it has.
fn ready_line(said: &[u8]) -> Option<&str> {
    let at = memchr::memmem::find(said, READY.as_bytes())?;
    if at > 0 && said[at - 1] != b'\n' {
        return None;
    }
    let len = memchr::memchr(b'\n', &said[at..])?;
    std::str::from_utf8(&said[at..at + len]).ok()
}

/// How each column converts to binary, from a session's ready line (`READY HEXCOLS OIDS`):
/// only when the archive's COPY statement lists exactly the table's columns in the
/// table's order and every type converts.
fn binary_kinds(line: &str, stmt: &str) -> Option<Vec<binrows::Kind>> {
    let mut parts = line.split(' ').skip(1);
    let (cols, oids) = (parts.next()?, parts.next()?);
    let cols = String::from_utf8(hex::decode(cols).ok()?).ok()?;
    if cols.is_empty() || !stmt.ends_with(&format!(" ({cols}) FROM stdin;")) {
        return None;
    }
    oids.split(',')
        .map(|o| binrows::Kind::of(o.parse().ok()?))
        .collect()
}

/// Whether a child process has ended (without reaping it).
fn exited(pid: u32) -> bool {
    // SAFETY: waitid with WNOWAIT only inspects the child's state; `info` is plain data.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        r != 0 || info.si_pid() != 0
    }
}

/// Whether a COPY statement loads `schema.table` itself (as pg_dump writes the name:
/// quoted, or bare when it needs no quotes), not another table.
fn copies_into(stmt: &str, schema: &str, table: &str) -> bool {
    let forms = |name: &str| {
        let mut v = vec![format!("\"{}\"", name.replace('"', "\"\""))];
        let bare = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if bare {
            v.push(name.to_string());
        }
        v
    };
    let stmt = stmt.trim_start();
    forms(schema).iter().any(|s| {
        forms(table)
            .iter()
            .any(|t| stmt.starts_with(&format!("COPY {s}.{t} ")))
    })
}

/// Whether a COPY statement read from the archive may be handed to `psql -c`: stored text
/// is hostile, and psql runs a `-c` string that starts with a backslash as a meta-command
/// (`\! ...` runs a shell). Only `COPY ... FROM stdin;` without any backslash passes; any
/// other table is loaded by pg_restore alone.
fn plain_copy(stmt: &str) -> bool {
    let t = stmt.trim();
    t.starts_with("COPY ") && t.ends_with("FROM stdin;") && !t.contains('\\') && !t.contains('\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::archive::DumpObserver;

    #[test]
    fn only_a_copy_into_the_table_itself_is_dealt_out() {
        let c = |stmt: &str, s: &str, t: &str| copies_into(stmt, s, t);
        assert!(c(
            "COPY public.users (id, name) FROM stdin;",
            "public",
            "users"
        ));
        assert!(c("COPY public.\"User\" (id) FROM stdin;", "public", "User"));
        assert!(c("COPY public.\"user\" (id) FROM stdin;", "public", "user"));
        assert!(c(
            "COPY \"my schema\".\"a\"\"b\" (id) FROM stdin;",
            "my schema",
            "a\"b"
        ));
        // A partition loaded through its partitioned table, and look-alikes.
        assert!(!c(
            "COPY public.items (id, c) FROM stdin;",
            "public",
            "items_0"
        ));
        assert!(!c(
            "COPY public.items_0x (id) FROM stdin;",
            "public",
            "items_0"
        ));
        assert!(!c(
            "COPY other.items_0 (id) FROM stdin;",
            "public",
            "items_0"
        ));
        assert!(!c("COPY public.User (id) FROM stdin;", "public", "User"));
        assert!(!c("", "public", "users"));
    }

    /// A session's writer converts the rows it is handed once told to, and hands back as
    /// text, untouched, every row that is not exactly as PostgreSQL writes it (a crafted
    /// archive's): the server then parses those itself, and nothing is guessed.
    #[test]
    fn a_writer_converts_canonical_rows_and_hands_back_the_others() {
        use binrows::Kind;
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        let (dtx, drx) = std::sync::mpsc::channel();
        tx.send(Msg::Raw(
            b"COPY t FROM stdin WITH (FORMAT binary);\n".to_vec(),
        ))
        .unwrap();
        tx.send(Msg::Rows(b"1\tplain\n".to_vec())).unwrap();
        tx.send(Msg::Convert(binrows::Rows::new(vec![
            Kind::Int4,
            Kind::Text,
        ])))
        .unwrap();
        let rows = b"2\ttwo\n+3\tsigned\n4\t\\101octal\n5\n6\t\\N\n7\ta\\tb\n".to_vec();
        tx.send(Msg::Rows(rows)).unwrap();
        drop(tx);
        let mut out = Vec::new();
        let declined = writer(&mut out, rx, dtx).unwrap();
        assert_eq!(declined, 3);
        let back: Vec<u8> = drx.try_iter().flatten().collect();
        assert_eq!(back, b"+3\tsigned\n4\t\\101octal\n5\n");
        let mut want = b"COPY t FROM stdin WITH (FORMAT binary);\n1\tplain\n".to_vec();
        // Field count, then each field's length and bytes (-1: null).
        want.extend_from_slice(&[0, 2, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 3, b't', b'w', b'o']);
        want.extend_from_slice(&[0, 2, 0, 0, 0, 4, 0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff]);
        want.extend_from_slice(&[0, 2, 0, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0, 3, b'a', b'\t', b'b']);
        assert_eq!(out, want);
    }

    fn plan() -> Plan {
        Plan {
            psql: "psql".into(),
            conninfo: String::new(),
            env: Vec::new(),
            tables: vec![("public".into(), "users".into())],
            sessions: 1,
            blobs: true,
            binary: true,
            restore_pid: 0,
        }
    }

    /// With one session the target's rows stay in pg_restore's stream (in one chunk here):
    /// the archive reads the same whatever the sizes of the writes.
    #[test]
    fn one_session_keeps_the_archive_whole_whatever_the_feed_sizes() {
        let a = crate::postgres::archive::tests::archive();
        for step in [1, 2, 3, 5, 7, 64, a.len()] {
            let mut out = Vec::new();
            let mut w = SplitWriter::new(&mut out, plan());
            for piece in a.chunks(step) {
                w.write_all(piece).unwrap();
            }
            assert_eq!(w.finish().unwrap(), Vec::new(), "step {step}");
            // The table's two chunks became one: one length int (5 bytes) fewer.
            assert_eq!(out.len(), a.len() - 5, "step {step}");
            let mut o = DumpObserver::new();
            o.feed(&out);
            let f = o.finish().unwrap();
            assert_eq!(f.tables[0].rows, 3, "step {step}");
            assert_eq!(f.large_objects, 1, "step {step}");
            let text = String::from_utf8_lossy(&out);
            assert!(
                text.contains("1\tann\n2\tb\\nob\n3\tcy\n\\.\n\n\n"),
                "step {step}"
            );
        }
    }

    /// Rows wider than a batch (a file in a bytea column), cut by pg_dump's chunks and by
    /// the writes anywhere: the rows come out in order, byte for byte, whatever the sizes
    /// of the writes, and a chunk the writer hands on ends at a row's end unless it is a
    /// piece of a row wider than a batch (passed on as it arrives, never held whole).
    #[test]
    fn wide_rows_are_dealt_whole_whatever_the_feed_sizes() {
        let mut data = Vec::new();
        for i in 0..7usize {
            // 1.5, 0.4, 1.5, ... batches wide, then narrow rows, then wide again.
            let width = if i % 2 == 0 {
                BATCH * 3 / 2
            } else {
                BATCH * 2 / 5
            };
            data.extend_from_slice(format!("{i}\t").as_bytes());
            data.extend(std::iter::repeat_n(b"0123456789abcdef"[i % 16], width));
            data.push(b'\n');
        }
        for i in 0..2_000 {
            data.extend_from_slice(format!("{i}\tsmall\n").as_bytes());
        }
        data.extend(std::iter::repeat_n(b'f', BATCH * 2));
        data.extend_from_slice(b"\n\\.\n\n\n");
        let rows = memchr::memchr_iter(b'\n', &data).count() - 3;
        let dump_chunks: Vec<&[u8]> = data.chunks(100_003).collect();
        let (a, data_at) = crate::postgres::archive::tests::archive_with_data(&dump_chunks);
        for step in [8 << 10, 1_000, 300_001, a.len()] {
            let mut out = Vec::new();
            let mut w = SplitWriter::new(&mut out, plan());
            for piece in a.chunks(step) {
                w.write_all(piece).unwrap();
            }
            w.finish().unwrap();
            assert_eq!(out[..data_at], a[..data_at], "step {step}");
            // The data block as the writer re-cut it: its chunks, then the end of the block.
            let mut at = data_at + 1 + 5;
            let mut got = Vec::new();
            loop {
                let len = crate::postgres::archive::decode_int(&out[at..at + 5]) as usize;
                at += 5;
                if len == 0 {
                    break;
                }
                got.extend_from_slice(&out[at..at + len]);
                at += len;
                let end = got.len();
                if data[end - 1] != b'\n' {
                    let start = memchr::memrchr(b'\n', &data[..end]).map_or(0, |p| p + 1);
                    let width =
                        memchr::memchr(b'\n', &data[end..]).map_or(data.len(), |p| end + p) - start;
                    assert!(
                        width >= BATCH,
                        "step {step}: a row of {width} bytes cut at {end}"
                    );
                }
            }
            assert_eq!(got, data, "step {step}");
            let mut o = DumpObserver::new();
            o.feed(&out);
            let f = o.finish().unwrap();
            assert_eq!(f.tables[0].rows, rows as u64, "step {step}");
            assert_eq!(f.large_objects, 1, "step {step}");
        }
    }

    /// A data block that ends inside a row wider than a batch (no row end, no end marker:
    /// not pg_dump's) is refused, not loaded as a shorter row.
    #[test]
    fn data_that_ends_inside_a_wide_row_is_refused() {
        let mut data = b"1\tsmall\n2\t".to_vec();
        data.extend(std::iter::repeat_n(b'a', BATCH * 3));
        let (a, _) = crate::postgres::archive::tests::archive_with_data(&[&data]);
        let mut out = Vec::new();
        let mut w = SplitWriter::new(&mut out, plan());
        let mut result = Ok(());
        for piece in a.chunks(8 << 10) {
            result = w.write_all(piece);
            if result.is_err() {
                break;
            }
        }
        let err = result.expect_err("a block ending inside a row was passed on");
        assert!(err.to_string().contains("ends inside a row"), "{err}");
        assert_eq!(
            w.failure(),
            Some("the archive's data for public.users ends inside a row")
        );
    }

    /// A last row without its newline (pg_dump ends every row) is refused, whether the
    /// table's data is smaller than a batch or spans several, and without an end marker
    /// too: nothing after the last whole row is passed on as if it were one.
    #[test]
    fn data_whose_last_row_has_no_end_is_refused() {
        let mut many = Vec::new();
        for i in 0..(BATCH / 8) {
            many.extend_from_slice(format!("{i}\trow\n").as_bytes());
        }
        for rows in [&b"1\tsmall\n"[..], &many] {
            let mut data = rows.to_vec();
            data.extend_from_slice(b"2\tno end");
            let (a, _) = crate::postgres::archive::tests::archive_with_data(&[&data]);
            let mut out = Vec::new();
            let mut w = SplitWriter::new(&mut out, plan());
            let result = a.chunks(8 << 10).try_for_each(|piece| w.write_all(piece));
            let err = result.expect_err("a block ending inside a row was passed on");
            assert!(err.to_string().contains("ends inside a row"), "{err}");
        }
    }

    /// Another table's name: nothing is touched, byte for byte.
    #[test]
    fn other_tables_pass_through_untouched() {
        let a = crate::postgres::archive::tests::archive();
        let mut out = Vec::new();
        let mut p = plan();
        p.tables = vec![("public".into(), "orders".into())];
        let mut w = SplitWriter::new(&mut out, p);
        for piece in a.chunks(3) {
            w.write_all(piece).unwrap();
        }
        assert_eq!(w.finish().unwrap(), Vec::new());
        assert_eq!(out, a);
    }

    /// Not an archive at all: passed through for pg_restore to reject.
    #[test]
    fn garbage_passes_through() {
        let junk = vec![7u8; 10_000];
        let mut out = Vec::new();
        let mut w = SplitWriter::new(&mut out, plan());
        w.write_all(&junk).unwrap();
        w.finish().unwrap();
        assert_eq!(out, junk);
    }

    #[test]
    fn only_plain_copy_statements_reach_psql() {
        assert!(super::plain_copy("COPY public.t (id, x) FROM stdin;"));
        assert!(!super::plain_copy("\\! touch /tmp/x"));
        assert!(!super::plain_copy("COPY t FROM stdin; \\! id"));
        assert!(!super::plain_copy("COPY t (a) FROM PROGRAM 'id';"));
    }
}
