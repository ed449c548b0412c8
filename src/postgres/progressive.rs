//! The progressive restore: the decoded archive is staged to disk as it downloads, and a
//! pool of `pg_restore` sessions loads each table's data as soon as its block is complete
//! on disk (pre-data first, from the table of contents at the head of the stream). What is
//! left of the data section, then the post-data section with `--jobs`, run only once every
//! byte is proven. Download, decryption and decompression overlap the loading, and tables
//! of comparable size load side by side.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};

use super::archive::DumpObserver;
use super::{self as pg, Conn};
use crate::error::{Error, Result};

/// How far the work has come; guarded by one mutex, waited on with one condvar.
#[derive(Default)]
struct Shared {
    /// The header and TOC are on disk: pre-data may start (once the database is ready).
    head_ready: bool,
    /// The new database exists (and the roles are in): pre-data may start.
    db_ready: bool,
    /// Pre-data is over (ran, or no head ever came): table data may load.
    pre_data_done: bool,
    /// Pre-data ran successfully.
    pre_data_ran: bool,
    /// Complete blocks on disk, not yet claimed: (dump id, approximate bytes).
    pending: VecDeque<(i32, u64)>,
    pending_bytes: u64,
    /// Blocks handed to a session (loaded, when no failure is recorded).
    claimed: HashSet<i32>,
    /// The stream ended (proven or not): no more blocks come.
    ended: bool,
    /// The first fault; everything stops.
    failure: Option<String>,
    /// pg_restore children running now, to stop on a fault.
    running: Vec<u32>,
    /// The decoded archive's size (from the manifest), how much of it is staged, and when
    /// the stream began: how long the download has yet to run, at its rate so far.
    plain_total: u64,
    staged: u64,
    started: Option<std::time::Instant>,
}

/// Sessions load blocks while the snapshot streams only when the download has at least
/// this long yet to run: near its end, what is left loads faster with the post-data in
/// one `pg_restore --jobs`, which builds indexes beside the loads.
const CLAIM_WHILE_LEFT: std::time::Duration = std::time::Duration::from_secs(1);

impl Shared {
    /// Whether the download has long enough to run for the sessions to claim blocks now.
    fn worth_claiming(&self) -> bool {
        let Some(started) = self.started else {
            return true;
        };
        let elapsed = started.elapsed().as_secs_f64();
        if self.staged == 0 || elapsed <= 0.0 {
            return true;
        }
        let rate = self.staged as f64 / elapsed;
        let left = self.plain_total.saturating_sub(self.staged) as f64 / rate;
        left >= CLAIM_WHILE_LEFT.as_secs_f64()
    }

    /// Whether a session may claim the next pending block now: any while the download has
    /// long to run; near its end only one of at most half a fair share of the whole
    /// archive, so that the cores do not sit idle while the rest of a fast download is
    /// decoded (pgbench with 8 partitions from `file://`: 0.15 s), and the final step is
    /// not held back long by a big table.
    fn may_claim(&self, sessions: usize) -> bool {
        self.worth_claiming()
            || self
                .pending
                .front()
                .is_some_and(|&(_, n)| n <= self.plain_total / (2 * sessions as u64))
    }
}

struct Board {
    state: Mutex<Shared>,
    changed: Condvar,
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record the first fault, stop every running session, wake everyone.
    fn fail(&self, why: String) {
        let mut s = self.lock();
        if s.failure.is_none() {
            s.failure = Some(why);
        }
        for pid in s.running.drain(..) {
            // SAFETY: a plain signal to a child this process started and has not reaped.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        self.changed.notify_all();
    }
}

/// What every `pg_restore` of one progressive restore shares.
#[derive(Clone)]
pub(crate) struct Target {
    pub bin: PathBuf,
    pub conninfo: String,
    pub env: Vec<(String, String)>,
    pub no_owner: bool,
}

impl Target {
    pub(crate) fn new(tools: &pg::Tools, conn: &Conn, no_owner: bool) -> Result<Self> {
        Ok(Target {
            bin: tools.bin("pg_restore"),
            conninfo: conn.url.conninfo(),
            env: conn.env()?,
            no_owner,
        })
    }

    fn command(&self, jobs: usize) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--exit-on-error", "--no-password", "--dbname"])
            .arg(&self.conninfo);
        if jobs > 1 {
            cmd.arg(format!("--jobs={jobs}"));
        }
        if self.no_owner {
            cmd.args(["--no-owner", "--no-acl"]);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }
}

/// Run one pg_restore to its end, registered with the board so a fault elsewhere stops
/// it. `None` when it was stopped because of another fault.
fn run(board: &Board, mut cmd: Command, bin: &Path) -> Option<std::result::Result<(), String>> {
    let child = {
        let mut s = board.lock();
        if s.failure.is_some() {
            return None;
        }
        match cmd.spawn() {
            Ok(c) => {
                s.running.push(c.id());
                c
            }
            Err(e) => return Some(Err(format!("cannot start {}: {e}", bin.display()))),
        }
    };
    let pid = child.id();
    let out = child.wait_with_output();
    let mut s = board.lock();
    s.running.retain(|p| *p != pid);
    if s.failure.is_some() {
        return None;
    }
    drop(s);
    Some(match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(super::restore::restore_error(
            bin,
            &o.status.to_string(),
            &String::from_utf8_lossy(&o.stderr),
        )
        .message()
        .to_string()),
        Err(e) => Err(format!("waiting for {}: {e}", bin.display())),
    })
}

/// The writer the decoded archive goes through: staged to `file`, and every data block
/// announced to the sessions once it is complete on disk.
pub(crate) struct Stager {
    file: std::io::BufWriter<std::fs::File>,
    observer: DumpObserver,
    board: Arc<Board>,
    head_sent: bool,
    pos: u64,
    last_block_end: u64,
    /// Tests: a pause per MiB staged (a slow download).
    delay: Option<(std::time::Duration, u64)>,
}

impl Stager {
    /// Tell the sessions what is newly on disk: the head, and complete blocks.
    fn announce(&mut self) -> std::io::Result<()> {
        let head = self.observer.head_read() && !self.head_sent;
        let blocks = self.observer.take_blocks();
        if !head && blocks.is_empty() {
            return Ok(());
        }
        // On disk before any session reads it, with its offset in the TOC.
        self.file.flush()?;
        for b in &blocks {
            if let Some((at, bytes)) = self.observer.offset_patch(*b) {
                std::os::unix::fs::FileExt::write_all_at(self.file.get_ref(), &bytes, at)?;
            }
        }
        let each = (self.pos - self.last_block_end) / blocks.len().max(1) as u64;
        if !blocks.is_empty() {
            self.last_block_end = self.pos;
        }
        let mut s = self.board.lock();
        s.staged = self.pos;
        if head {
            self.head_sent = true;
            s.head_ready = true;
        }
        for b in blocks {
            s.pending.push_back((b.id, each.max(1)));
            s.pending_bytes += each.max(1);
        }
        self.board.changed.notify_all();
        Ok(())
    }
}

impl Write for Stager {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(why) = self.board.lock().failure.clone() {
            return Err(std::io::Error::other(why));
        }
        self.file.write_all(buf)?;
        self.observer.feed(buf);
        self.pos += buf.len() as u64;
        self.announce()?;
        if let Some((pause, next)) = &mut self.delay
            && self.pos >= *next
        {
            *next = self.pos + (1 << 20);
            std::thread::sleep(*pause);
        }
        Ok(buf.len())
    }

    /// The stream ended: a head shorter than the observer's look-ahead is read now.
    fn flush(&mut self) -> std::io::Result<()> {
        self.observer.settle();
        self.announce()?;
        self.file.flush()
    }
}

/// A progressive restore under way: the [`Stager`] to write the decoded archive into, and
/// the sessions loading from the staged file.
pub(crate) struct Progressive {
    board: Arc<Board>,
    threads: Vec<std::thread::JoinHandle<()>>,
    target: Target,
    staged: PathBuf,
    lists: PathBuf,
    sessions: usize,
}

impl Progressive {
    /// Start the pre-data step and `sessions` loading sessions, all waiting for the stream;
    /// the archive is staged at `staged`, use-lists are written in `lists` (a private
    /// directory).
    pub(crate) fn start(
        target: Target,
        staged: &Path,
        lists: &Path,
        sessions: usize,
        plain_total: u64,
    ) -> Result<(Progressive, Stager)> {
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(staged)
                .map_err(|e| Error::failed(format!("cannot create {}: {e}", staged.display())))?
        };
        let board = Arc::new(Board {
            state: Mutex::new(Shared {
                plain_total,
                started: Some(std::time::Instant::now()),
                ..Shared::default()
            }),
            changed: Condvar::new(),
        });
        let sessions = sessions.max(1);
        let mut threads = Vec::new();
        {
            let (board, target, staged) = (board.clone(), target.clone(), staged.to_path_buf());
            threads.push(std::thread::spawn(move || {
                pre_data(&board, &target, &staged)
            }));
        }
        for lane in 0..sessions {
            let (board, target, staged) = (board.clone(), target.clone(), staged.to_path_buf());
            let list = lists.join(format!("lane-{lane}.list"));
            threads.push(std::thread::spawn(move || {
                load_lane(&board, &target, &staged, &list, sessions)
            }));
        }
        let stager = Stager {
            file: std::io::BufWriter::with_capacity(crate::pipeline::READ_BUF, file),
            observer: DumpObserver::tracking_blocks(),
            board: board.clone(),
            head_sent: false,
            pos: 0,
            last_block_end: 0,
            delay: crate::config::env::test_stream_delay().map(|d| (d, 1 << 20)),
        };
        Ok((
            Progressive {
                board,
                threads,
                target,
                staged: staged.to_path_buf(),
                lists: lists.to_path_buf(),
                sessions,
            },
            stager,
        ))
    }

    /// The handle that says when the new database is ready (it is being created while the
    /// snapshot starts to download); nothing runs against it before.
    pub(crate) fn gate(&self) -> DbGate {
        DbGate {
            board: Some(self.board.clone()),
        }
    }

    /// The first fault a session met, if any (it wins over the broken stream it causes).
    pub(crate) fn failure(&self) -> Option<String> {
        self.board.lock().failure.clone()
    }

    /// Stop everything (the stream failed): no more loading; the caller drops the database.
    pub(crate) fn abort(mut self, why: &str) {
        self.board.fail(why.to_string());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Every byte was proven: let the sessions finish, then load what is left of the data
    /// section (sequences, anything not announced) and the post-data section with `--jobs`.
    /// Returns how many data blocks the sessions loaded while the snapshot streamed.
    pub(crate) fn finish(mut self, stager: Stager) -> Result<usize> {
        let Stager {
            mut file, observer, ..
        } = stager;
        let flushed = file
            .flush()
            .map_err(|e| format!("writing {}: {e}", self.staged.display()));
        drop(file);
        let entry_ids = observer.entry_ids().to_vec();
        let held: HashSet<i32> = observer.held_ids().iter().copied().collect();
        {
            let mut s = self.board.lock();
            s.ended = true;
            self.board.changed.notify_all();
            drop(s);
        }
        if let Err(e) = flushed {
            self.board.fail(e);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let (claimed, failure, pre_data_ran) = {
            let s = self.board.lock();
            (s.claimed.clone(), s.failure.clone(), s.pre_data_ran)
        };
        if let Some(why) = failure {
            return Err(Error::failed(why));
        }
        // Each table's key and slow index builds first in the post-data (an order only: a
        // fault here leaves pg_restore's own).
        match std::fs::OpenOptions::new().write(true).open(&self.staged) {
            Ok(f) => super::restore::rank_post_data(&f, &observer),
            Err(e) => tracing::warn!(
                "the post-data entries keep pg_dump's order ({}: {e})",
                self.staged.display()
            ),
        }
        if !pre_data_ran {
            // The head was never read (an archive version this build does not parse): the
            // proven file restored whole, as a staged restore would.
            let mut cmd = self.target.command(self.sessions.max(2));
            cmd.arg(&self.staged);
            if let Some(Err(e)) = run(&self.board, cmd, &self.target.bin) {
                return Err(Error::failed(e));
            }
            return Ok(0);
        }
        // The rest of the data section (everything no session loaded) and the post-data
        // section in one pg_restore --jobs: its scheduler builds a table's indexes and
        // constraints as soon as the data they depend on is in, beside the loads still
        // going on. pg_restore keeps only the data and post-data entries of this list; a
        // dependency on an entry left out (pre-data, a block a session loaded) counts as
        // met, and every session's load has committed by now.
        // What must wait for every table's data (foreign keys and triggers of partitioned
        // tables, see `archive::held_back`) runs after it, in a pg_restore of its own.
        let rest: Vec<i32> = entry_ids
            .iter()
            .copied()
            .filter(|id| !claimed.contains(id) && !held.contains(id))
            .collect();
        let list = self.lists.join("rest.list");
        write_list(&list, &rest).map_err(Error::failed)?;
        let mut cmd = self.target.command(self.sessions.max(2));
        cmd.arg("--section=data")
            .arg("--section=post-data")
            .arg("--use-list")
            .arg(&list)
            .arg(&self.staged);
        if let Some(Err(e)) = run(&self.board, cmd, &self.target.bin) {
            return Err(Error::failed(e));
        }
        let last: Vec<i32> = entry_ids
            .iter()
            .copied()
            .filter(|id| held.contains(id))
            .collect();
        if !last.is_empty() {
            let list = self.lists.join("last.list");
            write_list(&list, &last).map_err(Error::failed)?;
            let mut cmd = self.target.command(self.sessions.max(2));
            cmd.arg("--use-list").arg(&list).arg(&self.staged);
            if let Some(Err(e)) = run(&self.board, cmd, &self.target.bin) {
                return Err(Error::failed(e));
            }
        }
        Ok(claimed.len())
    }
}

impl Drop for Progressive {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.board.fail("the restore was stopped".into());
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}

/// Says whether the new database could be made ready; dropped unsaid, it stops the restore
/// (so no session waits for a database that never comes).
pub(crate) struct DbGate {
    board: Option<Arc<Board>>,
}

impl DbGate {
    /// The database is ready: pre-data may run once the head is on disk.
    pub(crate) fn open(mut self) {
        if let Some(board) = self.board.take() {
            board.lock().db_ready = true;
            board.changed.notify_all();
        }
    }

    /// The database could not be made ready: everything stops.
    pub(crate) fn fail(mut self, why: String) {
        if let Some(board) = self.board.take() {
            board.fail(why);
        }
    }
}

impl Drop for DbGate {
    fn drop(&mut self) {
        if let Some(board) = self.board.take() {
            board.fail("the restore was stopped".into());
        }
    }
}

/// Pre-data from the staged head (the TOC is all it reads), as soon as it is on disk and
/// the database is ready.
fn pre_data(board: &Board, target: &Target, staged: &Path) {
    {
        let mut s = board.lock();
        while !(s.db_ready && (s.head_ready || s.ended)) && s.failure.is_none() {
            s = board.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.failure.is_some() {
            return;
        }
        if !s.head_ready {
            // No archive head ever came: the final step reports what is wrong with it.
            s.pre_data_done = true;
            board.changed.notify_all();
            return;
        }
    }
    let mut cmd = target.command(1);
    cmd.arg("--section=pre-data").arg(staged);
    match run(board, cmd, &target.bin) {
        Some(Ok(())) => {
            let mut s = board.lock();
            s.pre_data_done = true;
            s.pre_data_ran = true;
            board.changed.notify_all();
        }
        Some(Err(e)) => board.fail(e),
        None => {}
    }
}

/// One loading session: claim complete blocks (half an equal share of what waits), load
/// them with one pg_restore, repeat until the stream ended and nothing waits.
fn load_lane(board: &Board, target: &Target, staged: &Path, list: &Path, sessions: usize) {
    loop {
        let batch = {
            let mut s = board.lock();
            loop {
                if s.failure.is_some() {
                    return;
                }
                // Once every byte is proven, what no session claimed goes to the final
                // pg_restore --jobs with the post-data, which builds each table's indexes
                // while other tables still load.
                if s.ended {
                    return;
                }
                // Claim only when a block waits: with none, a claim would start a pg_restore
                // with nothing to load, one every few milliseconds while the download goes on.
                if s.pre_data_done && !s.pending.is_empty() && s.may_claim(sessions) {
                    break;
                }
                // Woken by news, or to look again at how long the download has left.
                s = board
                    .changed
                    .wait_timeout(s, std::time::Duration::from_millis(100))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            // Half a fair share: the last tables spread over every session.
            let share = (s.pending_bytes / (2 * sessions as u64)).max(1);
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some((id, n)) = s.pending.pop_front() {
                batch.push(id);
                bytes += n;
                s.pending_bytes -= n;
                s.claimed.insert(id);
                if bytes >= share {
                    break;
                }
            }
            batch
        };
        if let Err(e) = write_list(list, &batch) {
            board.fail(e);
            return;
        }
        let mut cmd = target.command(1);
        cmd.arg("--section=data")
            .arg("--use-list")
            .arg(list)
            .arg(staged);
        match run(board, cmd, &target.bin) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                board.fail(e);
                return;
            }
            None => return,
        }
    }
}

/// A pg_restore use-list: one dump id per line (nothing read from the archive goes in).
pub(crate) fn write_list(path: &Path, ids: &[i32]) -> std::result::Result<(), String> {
    let mut text = String::with_capacity(ids.len() * 8);
    for id in ids {
        text.push_str(&id.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
