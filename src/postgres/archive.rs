//! A passive reader of `pg_dump -Fc --compress=0` output as it streams past: it learns
//! the table of contents and counts each table's COPY rows, so a snapshot records exact
//! per-table row counts (taken in the dump's own transaction snapshot) with no second scan
//! of the database. It never alters the stream; if it meets something it does not
//! understand it stops observing and says why, and the backup goes on without counts.
//!
//! Format (pg_backup_archiver.c, pg_backup_custom.c): header "PGDMP", version bytes,
//! int/offset sizes, then the TOC; then data blocks: BLK_DATA (1) + dumpId + chunks
//! (int length + bytes, a zero length ends the block) or BLK_BLOBS (3) + dumpId + per large
//! object (oid + chunks + 0) ending with oid 0. An int is a sign byte plus `int_size`
//! little-endian bytes; a string is an int length (-1: NULL) plus bytes. With no
//! compression a table's data is COPY text, one row per newline.

use std::collections::HashMap;

pub use crate::snapshot::facts::{DumpFacts, TableCount};

#[derive(Debug)]
enum State {
    Head,
    BlockType,
    Int(IntFor),
    Chunk {
        id: i32,
        blob: bool,
        /// Index into `facts.tables`, resolved once per data block (not per chunk).
        table: Option<usize>,
        remaining: usize,
    },
    Failed(String),
}

#[derive(Debug, Clone, Copy)]
enum IntFor {
    DataId,
    BlobsId,
    BlobOid,
    ChunkLen {
        id: i32,
        blob: bool,
        table: Option<usize>,
    },
}

pub struct DumpObserver {
    state: State,
    buf: Vec<u8>,
    last_try: usize,
    int_size: usize,
    facts: DumpFacts,
    /// dumpId -> index into facts.tables
    data_ids: HashMap<i32, usize>,
    /// The last bytes of the current table's data, to find COPY's `\.` end marker.
    tail: [u8; TAIL],
    tail_len: usize,
    /// Data blocks (TABLE DATA and BLOBS dump ids) seen to their end and not yet taken,
    /// when tracking them (a progressive restore); `None` otherwise.
    blocks: Option<Vec<Block>>,
    /// The dump id of the BLOBS block being read.
    blobs_id: i32,
    /// Every TOC entry's dump id, in TOC order.
    entry_ids: Vec<i32>,
    /// The post-data entries to run only once all data is in, in TOC order.
    held_ids: Vec<i32>,
    /// Bytes fed so far, and where the current data block began.
    fed: u64,
    block_start: u64,
    /// Where each data entry's offset field sits in the TOC, and the offsets' width.
    offset_fields: HashMap<i32, usize>,
    off_size: usize,
    /// The length and SHA-256 of the header and table of contents, once read.
    head: Option<(u64, [u8; 32])>,
    /// Every data block seen to its end, when tracking blocks (kept after they are taken).
    starts: Vec<Block>,
    /// Post-data entries to start first (see [`Self::priority_patches`]).
    ranked: Vec<Ranked>,
}

/// Bytes to write into the archive at an offset.
pub(crate) type Patch = (u64, Vec<u8>);

/// A data block seen to its end: its dump id and where it starts in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    pub id: i32,
    pub start: u64,
}

/// How many trailing bytes of a table's data are kept to find its end marker.
const TAIL: usize = 16;

impl Default for DumpObserver {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) enum Parse<T> {
    Ok(T),
    NeedMore,
    Bad(String),
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    int_size: usize,
}

macro_rules! take {
    ($e:expr) => {
        match $e {
            Parse::Ok(v) => v,
            Parse::NeedMore => return Parse::NeedMore,
            Parse::Bad(s) => return Parse::Bad(s),
        }
    };
}

impl Cursor<'_> {
    fn bytes(&mut self, n: usize) -> Parse<&[u8]> {
        if self.pos + n > self.b.len() {
            return Parse::NeedMore;
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Parse::Ok(s)
    }
    fn byte(&mut self) -> Parse<u8> {
        let b = take!(self.bytes(1));
        Parse::Ok(b[0])
    }
    fn int(&mut self) -> Parse<i64> {
        let n = self.int_size;
        let raw = take!(self.bytes(n + 1));
        Parse::Ok(decode_int(raw))
    }
    fn string(&mut self) -> Parse<Option<String>> {
        let len = take!(self.int());
        if len < 0 {
            return Parse::Ok(None);
        }
        if len > (1 << 30) {
            return Parse::Bad(format!("string of {len} bytes in the TOC"));
        }
        let s = take!(self.bytes(len as usize));
        Parse::Ok(Some(String::from_utf8_lossy(s).into_owned()))
    }
}

/// Rows in a piece of COPY text. Most chunks are one row of about 100 bytes ending in a
/// newline: memchr's vector search finds it in a few steps (a byte-by-byte count was 14%
/// of a backup's CPU on a 10-million-row table).
fn count_newlines(b: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', b).count() as u64
}

pub(crate) fn decode_int(raw: &[u8]) -> i64 {
    let mut v: i64 = 0;
    for (i, b) in raw[1..].iter().enumerate().take(8) {
        v |= (*b as i64) << (8 * i);
    }
    if raw[0] != 0 { -v } else { v }
}

impl DumpObserver {
    pub fn new() -> Self {
        DumpObserver {
            state: State::Head,
            buf: Vec::new(),
            last_try: 0,
            int_size: 4,
            facts: DumpFacts::default(),
            data_ids: HashMap::new(),
            tail: [0; TAIL],
            tail_len: 0,
            blocks: None,
            blobs_id: 0,
            entry_ids: Vec::new(),
            held_ids: Vec::new(),
            fed: 0,
            block_start: 0,
            offset_fields: HashMap::new(),
            off_size: 8,
            head: None,
            starts: Vec::new(),
            ranked: Vec::new(),
        }
    }

    /// An observer that records which data blocks are complete (see [`Self::take_blocks`]),
    /// for a restore: it counts no rows.
    pub(crate) fn tracking_blocks() -> Self {
        DumpObserver {
            blocks: Some(Vec::new()),
            ..Self::new()
        }
    }

    /// How many bytes were fed.
    pub(crate) fn fed(&self) -> u64 {
        self.fed
    }

    /// The stream ended: read a head that is still waiting for more bytes.
    pub(crate) fn settle(&mut self) {
        if let State::Head = self.state {
            self.try_head();
        }
    }

    /// Whether the header and table of contents were read (the data section has begun).
    pub(crate) fn head_read(&self) -> bool {
        !matches!(self.state, State::Head)
    }

    /// The data blocks completed since the last call, in stream order.
    pub(crate) fn take_blocks(&mut self) -> Vec<Block> {
        self.blocks.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The bytes that record where `block` starts, and where they go in the archive: the
    /// TOC entry's data-state byte ("offset set") and the offset, lowest byte first, as
    /// pg_dump writes it when it can seek. With it, pg_restore seeks straight to the block
    /// instead of skipping every chunk (every row) before it.
    pub(crate) fn offset_patch(&self, block: Block) -> Option<Patch> {
        self.offset_field(block.id, block.start)
    }

    /// Entry `id`'s data-state byte ("offset set") and `offset`, and where they go.
    fn offset_field(&self, id: i32, offset: u64) -> Option<Patch> {
        let at = *self.offset_fields.get(&id)?;
        let mut bytes = Vec::with_capacity(1 + self.off_size);
        bytes.push(2); // K_OFFSET_POS_SET
        let mut o = offset;
        for _ in 0..self.off_size {
            bytes.push((o & 0xff) as u8);
            o >>= 8;
        }
        (o == 0).then_some((at as u64, bytes))
    }

    /// Once the stream has ended: offsets for the post-data entries to start first (see
    /// [`Ranked`]), and the length the staged file must have for them. `pg_restore --jobs`
    /// sizes each entry that has an offset by the distance to the next offset (the last by
    /// the file's end), gives a post-data entry the size of its table's data where that is
    /// more, and starts the biggest first. So each ranked entry gets an offset past the
    /// data, spaced by its table's data size plus a step per rank: it starts before its
    /// table's other entries, and after the entries of any table much bigger. Nothing else
    /// changes: pg_restore reads data only of entries that have data (these have none), and
    /// the file's added length is a hole. None when nothing is ranked.
    pub(crate) fn priority_patches(&self) -> Option<(Vec<Patch>, u64)> {
        let end = self.fed;
        let mut starts = self.starts.clone();
        starts.sort_by_key(|b| b.start);
        let size: HashMap<i32, u64> = starts
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let next = starts.get(i + 1).map_or(end, |n| n.start);
                (b.id, next.saturating_sub(b.start))
            })
            .collect();
        let mut at = end;
        let mut patches = Vec::new();
        for r in &self.ranked {
            let base = r.data.iter().filter_map(|d| size.get(d)).max().copied();
            let Some(base) = base.filter(|&b| b > 0) else {
                continue;
            };
            let weight = base.checked_add((base / 1000 + 1).checked_mul(r.rank)?)?;
            patches.push(self.offset_field(r.id, at)?);
            at = at.checked_add(weight)?;
        }
        // The file's end is an offset too: it must fit.
        let fits = self.off_size >= 8 || at >> (8 * self.off_size) == 0;
        (fits && !patches.is_empty()).then_some((patches, at))
    }

    /// The length of the archive's header and table of contents and their SHA-256 (hex),
    /// once read: recorded in the manifest, so a restore can prove the statements it is
    /// about to run before the rest of the stream has arrived.
    pub(crate) fn head_digest(&self) -> Option<(u64, String)> {
        self.head.map(|(n, h)| (n, hex::encode(h)))
    }

    /// Every TOC entry's dump id, once the head was read.
    pub(crate) fn entry_ids(&self) -> &[i32] {
        &self.entry_ids
    }

    /// The post-data entries a parallel restore runs only once all data is in (foreign
    /// keys and triggers of partitioned tables, and what depends on them), in TOC order.
    pub(crate) fn held_ids(&self) -> &[i32] {
        &self.held_ids
    }

    /// Look at the next bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        self.fed += data.len() as u64;
        while !data.is_empty() {
            match &mut self.state {
                State::Failed(_) => return,
                State::Head => {
                    self.buf.extend_from_slice(data);
                    data = &[];
                    // Re-parse only after meaningful growth, to stay linear on big TOCs.
                    if self.buf.len() < self.last_try + self.last_try / 2 + 4096 {
                        continue;
                    }
                    self.last_try = self.buf.len();
                    self.try_head();
                }
                State::BlockType => {
                    self.block_start = self.fed - data.len() as u64;
                    let t = data[0];
                    data = &data[1..];
                    self.state = match t {
                        1 => State::Int(IntFor::DataId),
                        3 => State::Int(IntFor::BlobsId),
                        other => {
                            State::Failed(format!("unknown block type {other} in the data section"))
                        }
                    };
                }
                State::Int(purpose) => {
                    let purpose = *purpose;
                    let width = self.int_size + 1;
                    if self.buf.is_empty() && data.len() >= width {
                        // Fast path: the whole int is in this block (almost always).
                        let v = decode_int(&data[..width]);
                        data = &data[width..];
                        self.on_int(purpose, v);
                        continue;
                    }
                    let take = (width - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.buf.len() == width {
                        let v = decode_int(&self.buf);
                        self.buf.clear();
                        self.on_int(purpose, v);
                    }
                }
                State::Chunk {
                    id,
                    blob,
                    table,
                    remaining,
                } => {
                    let (id, blob, table, remaining) = (*id, *blob, *table, *remaining);
                    let take = remaining.min(data.len());
                    let bytes = &data[..take];
                    // A restore's observer (tracking blocks) needs no counts.
                    if let Some(i) = table.filter(|_| self.blocks.is_none()) {
                        self.facts.tables[i].rows += count_newlines(bytes);
                        self.facts.tables[i].bytes += bytes.len() as u64;
                        self.push_tail(bytes);
                    }
                    data = &data[take..];
                    self.state = if remaining == take {
                        State::Int(IntFor::ChunkLen { id, blob, table })
                    } else {
                        State::Chunk {
                            id,
                            blob,
                            table,
                            remaining: remaining - take,
                        }
                    };
                }
            }
        }
    }

    fn on_int(&mut self, purpose: IntFor, v: i64) {
        self.state = match purpose {
            IntFor::DataId => State::Int(IntFor::ChunkLen {
                id: v as i32,
                blob: false,
                table: self.data_ids.get(&(v as i32)).copied(),
            }),
            IntFor::BlobsId => {
                self.blobs_id = v as i32;
                State::Int(IntFor::BlobOid)
            }
            IntFor::BlobOid if v == 0 => {
                self.block_done(self.blobs_id);
                State::BlockType
            }
            IntFor::BlobOid => {
                self.facts.large_objects += 1;
                State::Int(IntFor::ChunkLen {
                    id: 0,
                    blob: true,
                    table: None,
                })
            }
            IntFor::ChunkLen { blob: true, .. } if v == 0 => State::Int(IntFor::BlobOid),
            IntFor::ChunkLen {
                id,
                table,
                blob: false,
            } if v == 0 => {
                self.end_table_data(table);
                self.block_done(id);
                State::BlockType
            }
            IntFor::ChunkLen { id, blob, table } if v > 0 => State::Chunk {
                id,
                blob,
                table,
                remaining: v as usize,
            },
            IntFor::ChunkLen { .. } => State::Failed(format!("negative chunk length {v}")),
        };
    }

    /// A data block ended: recorded when tracking blocks.
    fn block_done(&mut self, id: i32) {
        if let Some(b) = &mut self.blocks {
            let block = Block {
                id,
                start: self.block_start,
            };
            b.push(block);
            self.starts.push(block);
        }
    }

    /// pg_dump ends each table's COPY data with `\.` and blank lines; those are not rows.
    /// (A data line can never be `\.`: COPY text escapes a backslash as `\\`.)
    fn end_table_data(&mut self, table: Option<usize>) {
        let tail_len = std::mem::take(&mut self.tail_len);
        let tail = &self.tail[TAIL - tail_len..];
        let Some(i) = table else {
            return;
        };
        let newlines = tail.iter().rev().take_while(|&&b| b == b'\n').count();
        let body = &tail[..tail.len() - newlines];
        let at_line_start = body.len() == 2 || body.get(body.len().wrapping_sub(3)) == Some(&b'\n');
        if newlines > 0 && body.ends_with(b"\\.") && at_line_start {
            let t = &mut self.facts.tables[i];
            t.rows = t.rows.saturating_sub(newlines as u64);
        }
    }

    /// Keep the last `TAIL` bytes of a table's data.
    fn push_tail(&mut self, bytes: &[u8]) {
        if bytes.len() >= TAIL {
            self.tail.copy_from_slice(&bytes[bytes.len() - TAIL..]);
            self.tail_len = TAIL;
        } else {
            self.tail.copy_within(bytes.len().., 0);
            self.tail[TAIL - bytes.len()..].copy_from_slice(bytes);
            self.tail_len = (self.tail_len + bytes.len()).min(TAIL);
        }
    }

    fn try_head(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        match self.parse_head(&buf) {
            Parse::Ok(used) => {
                use sha2::Digest;
                self.head = Some((used as u64, sha2::Sha256::digest(&buf[..used]).into()));
                self.state = State::BlockType;
                let rest = buf[used..].to_vec();
                // Fed again below: counted once.
                self.fed -= rest.len() as u64;
                self.feed(&rest);
            }
            Parse::NeedMore => self.buf = buf,
            Parse::Bad(why) => self.state = State::Failed(why),
        }
    }

    fn parse_head(&mut self, b: &[u8]) -> Parse<usize> {
        let h = take!(read_head(b));
        let (v0, v1, v2) = h.version;
        self.int_size = h.int_size;
        self.facts.archive_version = format!("{v0}.{v1}.{v2}");
        self.facts.database = h.database;
        self.facts.toc_entries = h.toc_entries;
        self.data_ids = h.data.iter().enumerate().map(|(i, d)| (d.id, i)).collect();
        self.entry_ids = h.ids;
        self.held_ids = h.held;
        self.ranked = h.ranked;
        self.offset_fields = h.offset_fields.into_iter().collect();
        self.off_size = h.off_size;
        self.facts.tables = h
            .data
            .into_iter()
            .map(|d| TableCount {
                schema: d.schema,
                table: d.table,
                rows: 0,
                bytes: 0,
            })
            .collect();
        Parse::Ok(h.len)
    }

    /// The facts, once the whole stream was seen; an error says why counts are missing.
    pub fn finish(mut self) -> Result<DumpFacts, String> {
        if let State::Head = self.state {
            self.try_head();
            if let State::Head = self.state {
                return Err("the stream ended inside the archive header".into());
            }
        }
        match self.state {
            State::BlockType => {
                self.facts
                    .tables
                    .sort_by(|a, b| (&a.schema, &a.table).cmp(&(&b.schema, &b.table)));
                Ok(self.facts)
            }
            State::Failed(why) => Err(why),
            _ => Err("the stream ended inside a data block".into()),
        }
    }
}

/// The archive header and table of contents, as far as backstop needs them.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub version: (u8, u8, u8),
    /// Width of an int's value (it is preceded by a sign byte).
    pub int_size: usize,
    pub database: String,
    pub toc_entries: u64,
    /// The TABLE DATA entries, in TOC order.
    pub data: Vec<DataEntry>,
    /// The dump's client encoding (its ENCODING entry).
    pub encoding: Option<String>,
    /// Bytes of header and TOC: the data section starts here.
    pub len: usize,
    /// Every entry's dump id, in TOC order.
    pub ids: Vec<i32>,
    /// Where each entry's data-state byte and offset sit, and the offsets' width.
    pub offset_fields: Vec<(i32, usize)>,
    pub off_size: usize,
    /// Large objects the pre-data section creates, one `BLOB` entry each (pg_dump 16 and
    /// older), the last one's oid (its tag; none if any tag is not an oid), and whether any
    /// `BLOB METADATA` entry (pg_dump 17, many per entry) is there.
    pub blob_entries: u64,
    pub blob_last: Option<u32>,
    pub blob_metadata: bool,
    /// Post-data entries to run only once all data is in (see `held_back`).
    pub held: Vec<i32>,
    /// Post-data entries to start before their table's others (see `ranked`).
    pub ranked: Vec<Ranked>,
}

/// A post-data entry that a parallel restore should start before the other entries of its
/// table: a key (it locks the table, so it waits for every index build on it to end, and
/// the foreign keys that reference it wait for it), or an index that takes long to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ranked {
    pub id: i32,
    /// 2: a primary key, unique or exclusion constraint; 1: a GIN, GiST or SP-GiST index.
    pub rank: u64,
    /// The data entries of the tables it depends on.
    pub data: Vec<i32>,
}

/// One table's data in the archive.
#[derive(Debug, Clone)]
pub(crate) struct DataEntry {
    pub id: i32,
    pub schema: String,
    pub table: String,
    /// "COPY schema.table (cols) FROM stdin;"
    pub copy_stmt: String,
}

pub(crate) fn read_head(b: &[u8]) -> Parse<Head> {
    let mut c = Cursor {
        b,
        pos: 0,
        int_size: 4,
    };
    if take!(c.bytes(5)) != b"PGDMP" {
        return Parse::Bad("not a pg_dump custom-format archive (no PGDMP magic)".into());
    }
    let v = take!(c.bytes(3));
    let version = (v[0], v[1], v[2]);
    if !((1, 12, 0)..=(1, 16, 255)).contains(&version) {
        return Parse::Bad(format!(
            "archive format {}.{}.{} is not one this backstop reads (1.12 to 1.16)",
            v[0], v[1], v[2]
        ));
    }
    let int_size = take!(c.byte()) as usize;
    let _off_size = take!(c.byte());
    if !(1..=8).contains(&int_size) {
        return Parse::Bad(format!("integer size {int_size}"));
    }
    c.int_size = int_size;
    let off_size = _off_size as usize;
    let format = take!(c.byte());
    if format != 1 {
        return Parse::Bad(format!("archive format code {format}, expected 1 (custom)"));
    }
    if version >= (1, 15, 0) {
        let algo = take!(c.byte());
        if algo != 0 {
            return Parse::Bad(
                "the archive is compressed; backstop runs pg_dump with --compress=0".into(),
            );
        }
    } else {
        let level = take!(c.int());
        if level != 0 {
            return Parse::Bad(
                "the archive is compressed; backstop runs pg_dump with --compress=0".into(),
            );
        }
    }
    for _ in 0..7 {
        take!(c.int());
    }
    let dbname = take!(c.string()).unwrap_or_default();
    let _server = take!(c.string());
    let _dumper = take!(c.string());
    let count = take!(c.int());
    let mut data = Vec::new();
    let mut encoding = None;
    let mut ids = Vec::new();
    let mut offset_fields = Vec::new();
    let (mut blob_entries, mut blob_metadata) = (0u64, false);
    let mut blob_last: Option<Option<u32>> = None;
    let mut toc = Vec::new();
    for _ in 0..count.max(0) {
        let id = take!(c.int()) as i32;
        ids.push(id);
        let _had_dumper = take!(c.int());
        let _tableoid = take!(c.string());
        let _oid = take!(c.string());
        let tag = take!(c.string()).unwrap_or_default();
        let desc = take!(c.string()).unwrap_or_default();
        let section = take!(c.int());
        let defn = take!(c.string());
        let _drop = take!(c.string());
        let copy = take!(c.string());
        let namespace = take!(c.string()).unwrap_or_default();
        let _tablespace = take!(c.string());
        if version >= (1, 14, 0) {
            let _tableam = take!(c.string());
        }
        if version >= (1, 16, 0) {
            let _relkind = take!(c.int());
        }
        let _owner = take!(c.string());
        let _with_oids = take!(c.string());
        let mut deps = Vec::new();
        while let Some(d) = take!(c.string()) {
            // A dependency that is not a dump id names nothing pg_restore would wait for.
            if let Ok(d) = d.trim().parse::<i32>() {
                deps.push(d);
            }
        }
        // Custom format's extra TOC data: data-state byte + offset.
        offset_fields.push((id, c.pos));
        take!(c.bytes(1 + off_size));
        let slow = desc == "INDEX"
            && defn.as_deref().is_some_and(|d| {
                [" USING gin (", " USING gist (", " USING spgist ("]
                    .iter()
                    .any(|m| d.contains(m))
            });
        toc.push(TocEntry {
            id,
            desc: desc.clone(),
            section,
            deps,
            slow,
        });
        if desc == "TABLE DATA" {
            data.push(DataEntry {
                id,
                schema: namespace,
                table: tag,
                copy_stmt: copy.unwrap_or_default(),
            });
        } else if desc == "BLOB" {
            blob_entries += 1;
            let oid = tag.parse::<u32>().ok();
            blob_last = Some(if blob_last == Some(None) { None } else { oid });
        } else if desc == "BLOB METADATA" {
            blob_metadata = true;
        } else if desc == "ENCODING" {
            // "SET client_encoding = 'UTF8';"
            encoding = defn
                .as_deref()
                .and_then(|d| d.split('\'').nth(1))
                .map(str::to_string);
        }
    }
    Parse::Ok(Head {
        version,
        int_size,
        database: dbname,
        toc_entries: count.max(0) as u64,
        data,
        encoding,
        len: c.pos,
        ids,
        offset_fields,
        off_size,
        blob_entries,
        blob_last: blob_last.flatten(),
        blob_metadata,
        held: held_back(&toc),
        ranked: ranked(&toc),
    })
}

/// The header and table of contents of an archive on disk, or `None` when they cannot be
/// read (not an archive this build parses, or a head over 256 MiB).
pub(crate) fn head_of_file(path: &std::path::Path) -> Option<Head> {
    use std::io::Read;
    const MAX: u64 = 256 << 20;
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    let mut want: u64 = 1 << 20;
    loop {
        let have = buf.len() as u64;
        let got = (&mut f).take(want - have).read_to_end(&mut buf).ok()? as u64;
        match read_head(&buf) {
            Parse::Ok(h) => return Some(h),
            Parse::Bad(_) => return None,
            Parse::NeedMore if got == 0 || want >= MAX => return None,
            Parse::NeedMore => want = (want * 4).min(MAX),
        }
    }
}

/// What backstop needs of one TOC entry to order a parallel restore.
struct TocEntry {
    id: i32,
    desc: String,
    section: i64,
    deps: Vec<i32>,
    /// A GIN, GiST or SP-GiST index: several times a B-tree's build time per row.
    slow: bool,
}

/// pg_dump's section codes (pg_backup.h): pre-data, data, post-data.
const SECTION_PRE_DATA: i64 = 2;
const SECTION_DATA: i64 = 3;
const SECTION_POST_DATA: i64 = 4;

/// The dump ids of the tables.
fn table_ids(toc: &[TocEntry]) -> std::collections::HashSet<i32> {
    toc.iter()
        .filter(|e| e.desc == "TABLE")
        .map(|e| e.id)
        .collect()
}

/// The post-data entries a parallel `pg_restore` must not run until every table's data
/// is in, in TOC order: foreign keys, triggers and separate check constraints on a table
/// with no data of its own (a partitioned table, whose rows are its partitions' data),
/// and whatever depends on them (a comment on one).
///
/// pg_restore makes a post-data entry wait for its table's data by pointing its
/// dependency on the table at the table's data entry; a partitioned table has none, so
/// `pg_restore --jobs` may add a foreign key to it while its partitions still load. Every
/// partition loaded after that checks each row against the referenced table (a restore of
/// 2 million rows in 24 partitions took 8.5 s instead of 3.9 s), a trigger would fire for
/// rows that are restored (and change them), and a check constraint added `NOT VALID`
/// would refuse rows the source kept.
fn held_back(toc: &[TocEntry]) -> Vec<i32> {
    use std::collections::{HashMap, HashSet};
    let tables = table_ids(toc);
    let with_data: HashSet<i32> = toc
        .iter()
        .filter(|e| e.desc == "TABLE DATA")
        .flat_map(|e| e.deps.iter().copied())
        .collect();
    let seed = |e: &TocEntry| {
        e.section == SECTION_POST_DATA
            && matches!(
                e.desc.as_str(),
                "FK CONSTRAINT" | "TRIGGER" | "CHECK CONSTRAINT" | "RULE"
            )
            && e.deps
                .iter()
                .any(|d| tables.contains(d) && !with_data.contains(d))
    };
    let mut held: HashSet<i32> = toc.iter().filter(|e| seed(e)).map(|e| e.id).collect();
    if held.is_empty() {
        return Vec::new();
    }
    // Whatever depends on a held entry is held with it (pre-data has run, and data is
    // never held): it would otherwise run first and fail.
    let mut dependents: HashMap<i32, Vec<i32>> = HashMap::new();
    for e in toc {
        if e.section != SECTION_PRE_DATA && e.section != SECTION_DATA {
            for d in &e.deps {
                dependents.entry(*d).or_default().push(e.id);
            }
        }
    }
    let mut queue: Vec<i32> = held.iter().copied().collect();
    while let Some(id) = queue.pop() {
        for &d in dependents.get(&id).map(Vec::as_slice).unwrap_or(&[]) {
            if held.insert(d) {
                queue.push(d);
            }
        }
    }
    toc.iter()
        .filter(|e| held.contains(&e.id))
        .map(|e| e.id)
        .collect()
}

/// The post-data entries to start first among their table's (see [`Ranked`]), in TOC
/// order; only those after every data entry (as pg_dump writes them all), since
/// [`DumpObserver::priority_patches`] gives them positions past the data.
///
/// `pg_restore --jobs` starts the ready entries biggest table first and, within a table,
/// in dump id order (index names' order), skipping one whose table lock conflicts with a
/// running entry. A primary key (`ALTER TABLE ... ADD CONSTRAINT` locks the table) that
/// comes after an index name is then skipped while any index of its table builds, and the
/// foreign keys that need it wait too, with a core idle; a GIN index named after the
/// B-trees starts last and ends last. Measured with `pg_restore --jobs=2` on 317 MiB of
/// dump (900,000 orders with a key, three B-trees and a GIN index on a `tsvector`, beside
/// three tables of 180,000 to 1.35 million rows), 7 alternating runs on 2 cores: 11.8-14.3
/// s (median 13.1) ranked, 12.2-15.2 s (median 14.6) as pg_dump ordered them.
fn ranked(toc: &[TocEntry]) -> Vec<Ranked> {
    use std::collections::HashMap;
    let tables = table_ids(toc);
    let data_of: HashMap<i32, i32> = toc
        .iter()
        .filter(|e| e.desc == "TABLE DATA")
        .flat_map(|e| {
            e.deps
                .iter()
                .filter(|d| tables.contains(d))
                .map(move |&d| (d, e.id))
        })
        .collect();
    let Some(last_data) = toc
        .iter()
        .rposition(|e| e.desc == "TABLE DATA" || e.desc == "BLOBS")
    else {
        return Vec::new();
    };
    toc[last_data + 1..]
        .iter()
        .filter(|e| e.section == SECTION_POST_DATA)
        .filter_map(|e| {
            let rank = match e.desc.as_str() {
                "CONSTRAINT" => 2,
                "INDEX" if e.slow => 1,
                _ => return None,
            };
            let mut data: Vec<i32> = e
                .deps
                .iter()
                .filter_map(|d| data_of.get(d).copied())
                .collect();
            data.sort_unstable();
            data.dedup();
            (!data.is_empty()).then_some(Ranked {
                id: e.id,
                rank,
                data,
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn int(v: i64) -> Vec<u8> {
        let mut out = vec![if v < 0 { 1 } else { 0 }];
        out.extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
        out
    }
    fn s(v: Option<&str>) -> Vec<u8> {
        match v {
            None => int(-1),
            Some(t) => {
                let mut out = int(t.len() as i64);
                out.extend_from_slice(t.as_bytes());
                out
            }
        }
    }

    /// A hand-built 1.14 archive: one table with 3 rows split over two chunks, one blob.
    pub(crate) fn archive() -> Vec<u8> {
        archive_with_data(&[b"1\tann\n2\tb\\nob\n", b"3\tcy\n\\.\n\n\n"]).0
    }

    /// The same archive with the table's COPY data in the chunks given (the end marker
    /// included), and where its data block begins.
    pub(crate) fn archive_with_data(chunks: &[&[u8]]) -> (Vec<u8>, usize) {
        let mut a = b"PGDMP".to_vec();
        a.extend([1, 14, 0, 4, 8, 1]);
        a.extend(int(0)); // compression
        for _ in 0..7 {
            a.extend(int(1));
        }
        for x in ["app", "15.1", "15.1"] {
            a.extend(s(Some(x)));
        }
        a.extend(int(2));
        for (id, tag, desc, ns) in [
            (7, "users", "TABLE DATA", "public"),
            (9, "BLOBS", "BLOBS", ""),
        ] {
            a.extend(int(id));
            a.extend(int(1));
            a.extend(s(Some("0")));
            a.extend(s(Some("0")));
            a.extend(s(Some(tag)));
            a.extend(s(Some(desc)));
            a.extend(int(3));
            // The definition, the drop statement, the COPY statement.
            a.extend(s(Some("")));
            a.extend(s(Some("")));
            let copy = format!("COPY {ns}.{tag} (id, name) FROM stdin;");
            a.extend(s(Some(if desc == "TABLE DATA" { &copy } else { "" })));
            a.extend(s(Some(ns)));
            a.extend(s(None));
            a.extend(s(Some("heap")));
            a.extend(s(Some("postgres")));
            a.extend(s(Some("false")));
            a.extend(s(Some("3")));
            a.extend(s(None));
            a.extend([2u8; 9]);
        }
        let data_at = a.len();
        a.push(1);
        a.extend(int(7));
        for c in chunks {
            a.extend(int(c.len() as i64));
            a.extend_from_slice(c);
        }
        a.extend(int(0));
        a.push(3);
        a.extend(int(9));
        a.extend(int(16400));
        a.extend(s(Some("blob\nbytes\n")));
        a.extend(int(0));
        a.extend(int(0));
        (a, data_at)
    }

    #[test]
    fn counts_rows_whatever_the_feed_sizes() {
        let a = archive();
        for step in [1, 2, 3, 7, 64, a.len()] {
            let mut o = DumpObserver::new();
            for piece in a.chunks(step) {
                o.feed(piece);
            }
            let f = o.finish().unwrap_or_else(|e| panic!("step {step}: {e}"));
            assert_eq!(
                f.tables,
                vec![TableCount {
                    schema: "public".into(),
                    table: "users".into(),
                    rows: 3,
                    // The COPY data's bytes, its end marker included.
                    bytes: 24,
                }]
            );
            assert_eq!(f.large_objects, 1);
            assert_eq!(f.database, "app");
        }
    }

    #[test]
    fn complete_blocks_are_reported_with_their_start_whatever_the_feed_sizes() {
        let a = archive();
        for step in [1, 2, 3, 7, 64, a.len()] {
            let mut o = DumpObserver::tracking_blocks();
            let mut blocks = Vec::new();
            for piece in a.chunks(step) {
                o.feed(piece);
                blocks.extend(o.take_blocks());
            }
            o.settle();
            blocks.extend(o.take_blocks());
            assert_eq!(o.entry_ids(), [7, 9], "step {step}");
            let ids: Vec<i32> = blocks.iter().map(|b| b.id).collect();
            assert_eq!(ids, [7, 9], "step {step}");
            let mut patched = a.clone();
            for (b, kind) in blocks.iter().zip([1u8, 3]) {
                // The start is the block's type byte, followed by its dump id.
                let at = b.start as usize;
                assert_eq!(a[at], kind, "step {step}");
                assert_eq!(a[at + 1..at + 6], int(b.id as i64)[..], "step {step}");
                let (field, bytes) = o.offset_patch(*b).unwrap();
                assert_eq!(bytes.len(), 9);
                assert_eq!(bytes[0], 2);
                patched[field as usize..field as usize + 9].copy_from_slice(&bytes);
            }
            // The patched TOC reads back with each entry's offset at its block.
            let head = match read_head(&patched) {
                Parse::Ok(h) => h,
                _ => panic!("step {step}: the patched head does not parse"),
            };
            for ((id, field), b) in head.offset_fields.iter().zip(&blocks) {
                assert_eq!(*id, b.id);
                let raw = &patched[field + 1..field + 9];
                assert_eq!(u64::from_le_bytes(raw.try_into().unwrap()), b.start);
            }
        }
        // Not tracking: nothing is kept.
        let mut o = DumpObserver::new();
        o.feed(&a);
        assert!(o.take_blocks().is_empty());
    }

    #[test]
    fn truncation_and_garbage_are_reported() {
        let a = archive();
        let mut o = DumpObserver::new();
        o.feed(&a[..a.len() - 3]);
        assert!(o.finish().unwrap_err().contains("inside a data block"));
        let mut o = DumpObserver::new();
        o.feed(b"-- plain SQL, not an archive\n");
        assert!(o.finish().unwrap_err().contains("PGDMP"));
    }

    /// A 1.14 archive's head with these entries: (dump id, desc, section, dependencies).
    fn head_with(entries: &[(i32, &str, i64, &[&str])]) -> Vec<u8> {
        let with: Vec<_> = entries
            .iter()
            .map(|&(id, desc, section, deps)| (id, desc, section, deps, ""))
            .collect();
        head_with_defs(&with)
    }

    /// The same, with each entry's definition.
    fn head_with_defs(entries: &[(i32, &str, i64, &[&str], &str)]) -> Vec<u8> {
        head_sized(entries, 8)
    }

    /// The same, with offsets `off_size` bytes wide.
    fn head_sized(entries: &[(i32, &str, i64, &[&str], &str)], off_size: u8) -> Vec<u8> {
        let mut a = b"PGDMP".to_vec();
        a.extend([1, 14, 0, 4, off_size, 1]);
        a.extend(int(0));
        for _ in 0..7 {
            a.extend(int(1));
        }
        for x in ["app", "15.1", "15.1"] {
            a.extend(s(Some(x)));
        }
        a.extend(int(entries.len() as i64));
        for (id, desc, section, deps, defn) in entries {
            a.extend(int(*id as i64));
            a.extend(int(0));
            a.extend(s(Some("0")));
            a.extend(s(Some("0")));
            a.extend(s(Some("tag")));
            a.extend(s(Some(desc)));
            a.extend(int(*section));
            a.extend(s(Some(defn)));
            for _ in 0..2 {
                a.extend(s(Some("")));
            }
            a.extend(s(Some("public")));
            a.extend(s(None));
            a.extend(s(Some("heap")));
            a.extend(s(Some("postgres")));
            a.extend(s(Some("false")));
            for d in *deps {
                a.extend(s(Some(d)));
            }
            a.extend(s(None));
            a.extend(std::iter::repeat_n(1u8, 1 + off_size as usize));
        }
        a
    }

    /// A head with two tables (a key, a GIN and a B-tree index on the big one, a key and a
    /// GiST index on the small one, a partitioned table's key, a foreign key, a trigger),
    /// and the archive: the head and two data blocks of 50,000 and 5,000 bytes of rows.
    pub(crate) fn ranked_archive() -> (Vec<u8>, Vec<u8>) {
        ranked_archive_sized(8)
    }

    /// The same, with offsets `off_size` bytes wide.
    fn ranked_archive_sized(off_size: u8) -> (Vec<u8>, Vec<u8>) {
        let big_gin = "CREATE INDEX big_tags ON public.big USING gin (tags);";
        let small_gist = "CREATE INDEX small_at ON public.small USING gist (at);";
        let btree = "CREATE INDEX big_n ON public.big USING btree (n);";
        let head = head_sized(
            &[
                (10, "TABLE", 2, &[], ""),
                (11, "TABLE", 2, &[], ""),
                (12, "TABLE", 2, &[], ""), // partitioned: no data of its own
                (20, "TABLE DATA", 3, &["10"], ""),
                (21, "TABLE DATA", 3, &["11"], ""),
                (30, "INDEX", 4, &["10", "10"], btree),
                (31, "INDEX", 4, &["10"], big_gin),
                (32, "CONSTRAINT", 4, &["10"], ""),
                (33, "CONSTRAINT", 4, &["11"], ""),
                (34, "FK CONSTRAINT", 4, &["11", "10", "32"], ""),
                (35, "INDEX", 4, &["11", "garbage"], small_gist),
                (36, "CONSTRAINT", 4, &["12"], ""),
                (37, "TRIGGER", 4, &["10"], ""),
            ],
            off_size,
        );
        let mut a = head.clone();
        for (id, n) in [(20, 50_000), (21, 5_000)] {
            a.push(1);
            a.extend(int(id));
            a.extend(int(n));
            a.extend(std::iter::repeat_n(b'x', n as usize));
            a.extend(int(0));
        }
        (head, a)
    }

    #[test]
    fn a_table_s_key_then_its_slow_indexes_get_the_biggest_sizes_pg_restore_reads() {
        let (head, mut a) = ranked_archive();
        let Parse::Ok(h) = read_head(&head) else {
            panic!("the head parses")
        };
        let rank = |id, rank, data: &[i32]| Ranked {
            id,
            rank,
            data: data.to_vec(),
        };
        assert_eq!(
            h.ranked,
            [
                rank(31, 1, &[20]),
                rank(32, 2, &[20]),
                rank(33, 2, &[21]),
                rank(35, 1, &[21])
            ]
        );
        let mut o = DumpObserver::tracking_blocks();
        for piece in a.chunks(777) {
            o.feed(piece);
        }
        o.settle();
        for b in o.take_blocks() {
            let (at, bytes) = o.offset_patch(b).unwrap();
            a[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        }
        let (patches, len) = o.priority_patches().unwrap();
        assert_eq!(patches.len(), 4);
        assert!(len > a.len() as u64);
        for (at, bytes) in patches {
            a[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        }
        // The sizes as pg_restore reads them: each entry with an offset set runs to the
        // next one (the last to the file's end); a post-data entry takes its table's data
        // size where that is more; the biggest starts first, then the lowest dump id.
        let mut set: Vec<(i32, u64)> = h
            .offset_fields
            .iter()
            .filter(|(_, at)| a[*at] == 2)
            .map(|&(id, at)| {
                let o: [u8; 8] = a[at + 1..at + 9].try_into().unwrap();
                (id, u64::from_le_bytes(o))
            })
            .collect();
        set.sort_by_key(|&(_, o)| o);
        let size = |id: i32| -> u64 {
            let Some(i) = set.iter().position(|&(e, _)| e == id) else {
                return 0;
            };
            set.get(i + 1).map_or(len, |&(_, o)| o) - set[i].1
        };
        // Each block: its type, dump id, one chunk length and the end (16 bytes).
        assert_eq!((size(20), size(21)), (50_016, 5_016));
        let data_of = |t: &str| match t {
            "10" => size(20),
            "11" => size(21),
            _ => 0,
        };
        let deps: [(i32, &[&str]); 8] = [
            (30, &["10"]),
            (31, &["10"]),
            (32, &["10"]),
            (33, &["11"]),
            (34, &["11", "10"]),
            (35, &["11"]),
            (36, &["12"]),
            (37, &["10"]),
        ];
        let mut order: Vec<(u64, i32)> = deps
            .iter()
            .map(|&(id, on)| {
                (
                    on.iter().map(|t| data_of(t)).max().unwrap().max(size(id)),
                    id,
                )
            })
            .collect();
        order.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
        let order: Vec<i32> = order.into_iter().map(|(_, id)| id).collect();
        // The big table's key, its GIN index, then its other entries; the small table's
        // key before its GiST index; the partitioned table's key as before (last: no data).
        assert_eq!(order, [32, 31, 30, 34, 37, 33, 35, 36]);

        // Offsets as narrow as the archive says (2 bytes here, written by an attacker):
        // the data's offsets fit, the ranks past it would not, so none are written.
        let (_, narrow) = ranked_archive_sized(2);
        let mut o = DumpObserver::tracking_blocks();
        o.feed(&narrow);
        o.settle();
        assert!(o.take_blocks().iter().all(|b| o.offset_patch(*b).is_some()));
        assert!(o.priority_patches().is_none());

        // Nothing ranked: nothing to write.
        let plain = head_with(&[
            (10, "TABLE", 2, &[]),
            (20, "TABLE DATA", 3, &["10"]),
            (30, "INDEX", 4, &["10"]),
        ]);
        let mut o = DumpObserver::tracking_blocks();
        o.feed(&plain);
        o.settle();
        assert!(o.priority_patches().is_none());
    }

    #[test]
    fn what_acts_on_a_partitioned_table_s_rows_waits_for_every_partition() {
        let a = head_with(&[
            (10, "TABLE", 2, &[]),
            (11, "TABLE", 2, &[]), // partitioned: no data of its own
            (12, "TABLE", 2, &[]), // its partition
            (13, "TABLE", 2, &[]),
            (14, "VIEW", 2, &[]),
            (15, "FUNCTION", 2, &[]),
            (20, "TABLE DATA", 3, &["10"]),
            (21, "TABLE DATA", 3, &["12"]),
            (22, "TABLE DATA", 3, &["13"]),
            (30, "CONSTRAINT", 4, &["10"]),
            (31, "FK CONSTRAINT", 4, &["11", "30"]),
            (32, "COMMENT", 1, &["31"]),
            (33, "TRIGGER", 4, &["11", "15"]),
            (34, "FK CONSTRAINT", 4, &["13", "30"]),
            (35, "TRIGGER", 4, &["12", "15"]),
            (36, "INDEX", 4, &["11"]),
            (37, "CHECK CONSTRAINT", 4, &[" 11 "]),
            (38, "TRIGGER", 4, &["14", "15"]),
            // Written by an attacker: a cycle, garbage, a pre-data entry after a held one.
            (50, "COMMENT", 1, &["51", "not a number"]),
            (51, "COMMENT", 1, &["50", "33"]),
            (60, "TABLE", 2, &["31"]),
        ]);
        let Parse::Ok(h) = read_head(&a) else {
            panic!("the head parses")
        };
        // The partitioned table's foreign key and the comment on it, its trigger and its
        // check constraint (and the cycle hanging on the trigger); not the foreign key or
        // trigger of a table with data, an index, a view's trigger or pre-data.
        assert_eq!(h.held, [31, 32, 33, 37, 50, 51]);
        let mut o = DumpObserver::tracking_blocks();
        for piece in a.chunks(5) {
            o.feed(piece);
        }
        o.settle();
        assert_eq!(o.held_ids(), [31, 32, 33, 37, 50, 51]);

        // No partitioned table: nothing held.
        let a = head_with(&[
            (10, "TABLE", 2, &[]),
            (20, "TABLE DATA", 3, &["10"]),
            (31, "FK CONSTRAINT", 4, &["10"]),
            (33, "TRIGGER", 4, &["10"]),
        ]);
        let Parse::Ok(h) = read_head(&a) else {
            panic!("the head parses")
        };
        assert!(h.held.is_empty());
    }
}
