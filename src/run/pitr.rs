//! Cluster jobs' WAL and point-in-time recovery: `wal-push` (archive_command), `wal-fetch`
//! (restore_command), and `restore --time`: the newest base backup before the time,
//! extracted into a new data directory, the WAL it needs fetched and checked, the server
//! recovering to the time privately, stopped cleanly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::config::{JobPlan, SourcePlan};
use crate::error::{Error, Result};
use crate::snapshot::{self, Entry, wal};
use crate::storage::Storage;

fn cluster_only(plan: &JobPlan, what: &str) -> Result<()> {
    match plan.source {
        SourcePlan::Cluster(_) => Ok(()),
        _ => Err(Error::config(format!(
            "job {}: {what} is for postgres-cluster jobs ([source] type = \"postgres-cluster\"); this job's source is not one",
            plan.name
        ))),
    }
}

/// `wal-push JOB PATH`: store one file PostgreSQL archived.
pub(crate) async fn wal_push(plan: &JobPlan, path: &Path) -> Result<wal::Pushed> {
    cluster_only(plan, "wal-push")?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::config(format!("{} names no file", path.display())))?
        .to_string();
    if wal::timeline_of(&name).is_none() {
        return Err(Error::config(format!(
            "{name:?} is not a file PostgreSQL archives (a 24-hex-digit segment, TIMELINE.history, SEGMENT.partial or SEGMENT.OFFSET.backup)"
        )));
    }
    let data = read_bounded(path)?;
    let signer = crate::snapshot::sign::signer(plan)?;
    let res = push_all(plan, signer.as_ref(), &name, data).await;
    crate::state::audit::append(crate::state::audit::Record {
        action: "wal-push",
        job: Some(&plan.name),
        snapshot: None,
        outcome: res.as_ref().map(|_| ()),
        details: serde_json::json!({ "file": name, "already_stored": matches!(res, Ok(wal::Pushed::AlreadyStored)) }),
    });
    res
}

/// Store one WAL file on every storage of the job. Exit 1 when any storage failed, naming
/// it, after trying all: PostgreSQL then keeps the file and calls again, and the storages
/// that have it answer "already stored" (so a storage that is down holds WAL back on the
/// server until it is back; see README).
pub(crate) async fn push_all(
    plan: &JobPlan,
    signer: Option<&crate::minisign::SecretKey>,
    name: &str,
    data: Vec<u8>,
) -> Result<wal::Pushed> {
    let members = crate::storage::open_all(&plan.storages).await?;
    let several = members.len() > 1;
    let mut first: Option<wal::Pushed> = None;
    let mut failed = Vec::new();
    for (sname, s) in &members {
        match wal::push(s.as_ref(), plan, signer, name, data.clone()).await {
            Ok(p) => {
                if first.is_none() || matches!(p, wal::Pushed::Stored) {
                    first = Some(p);
                }
            }
            Err(e) if several && e.kind() == crate::error::Kind::Failed => {
                failed.push(format!("storage {sname}: {}", e.message()))
            }
            Err(e) => return Err(e),
        }
    }
    if !failed.is_empty() {
        return Err(Error::failed(format!(
            "{name} is stored on {} of {} storages; {}",
            members.len() - failed.len(),
            members.len(),
            failed.join("; ")
        )));
    }
    first.ok_or_else(|| Error::failed("the job has no storage"))
}

/// One archived WAL file, checked, from the first storage that holds a good copy: a
/// missing, damaged or unreadable copy on one storage is read from the next.
async fn fetch_any(
    storage: &dyn Storage,
    plan: &JobPlan,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    name: &str,
) -> Result<Option<Vec<u8>>> {
    let Some(r) = crate::snapshot::replicas::of(storage) else {
        return wal::fetch(storage, plan, identities, name).await;
    };
    let mut err = None;
    for (sname, s) in r.members() {
        match wal::fetch(s.as_ref(), plan, identities, name).await {
            Ok(Some(d)) => return Ok(Some(d)),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(
                    "{name} on storage {sname}: {}; trying the next storage",
                    e.message()
                );
                err = Some(e);
            }
        }
    }
    err.map_or(Ok(None), Err)
}

fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .map_err(|e| Error::failed(format!("cannot open {}: {e}", path.display())))?;
    let mut data = Vec::new();
    f.take(wal::WAL_FILE_MAX + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::failed(format!("cannot read {}: {e}", path.display())))?;
    if data.len() as u64 > wal::WAL_FILE_MAX {
        return Err(Error::failed(format!(
            "{} is larger than a WAL segment can be (1 GiB)",
            path.display()
        )));
    }
    Ok(data)
}

/// `wal-fetch JOB NAME DEST`: write one archived file to DEST (atomically), checked.
/// `Ok(false)`: never archived (how recovery learns the archive ends there).
pub(crate) async fn wal_fetch(
    plan: &JobPlan,
    name: &str,
    dest: &Path,
    identity: Option<&Path>,
) -> Result<bool> {
    cluster_only(plan, "wal-fetch")?;
    let identities = crate::pipeline::load_identities(&plan.identity_path(identity)?)?;
    let storage = crate::snapshot::replicas::open(plan, None).await?;
    let Some(data) = fetch_any(storage.as_ref(), plan, &identities, name).await? else {
        return Ok(false);
    };
    write_atomically(dest, &data)?;
    Ok(true)
}

fn write_atomically(dest: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".backstop-wal-")
        .tempfile_in(dir)
        .map_err(|e| Error::failed(format!("cannot write into {}: {e}", dir.display())))?;
    tmp.write_all(data)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::failed(format!("cannot write {}: {e}", dest.display())))?;
    tmp.persist(dest)
        .map_err(|e| Error::failed(format!("cannot write {}: {e}", dest.display())))?;
    Ok(())
}

/// What `restore --time` did.
#[derive(Debug, Clone, Serialize)]
pub struct PitrReport {
    pub job: String,
    pub base_backup: String,
    pub data_directory: String,
    pub target_time: Option<String>,
    /// The commit time of the last transaction replayed.
    pub reached: Option<String>,
    /// The archive ended before the target: recovered to its newest point.
    pub ended_before_target: bool,
    /// In place: where the previous data directory was moved.
    pub previous_kept_as: Option<String>,
    pub wal_files: usize,
    pub duration_ms: u64,
    /// Where the time went: extracting the base backup, fetching and checking the WAL,
    /// the server's recovery (replay, promotion, clean stop).
    pub extract_ms: u64,
    pub wal_ms: u64,
    pub recovery_ms: u64,
}

/// Options of `restore JOB --time T --to DIR`.
#[derive(Debug, Clone, Default)]
pub struct PitrOptions {
    pub time: Option<String>,
    pub to: Option<String>,
    pub identity: Option<PathBuf>,
    pub staging: Option<PathBuf>,
    /// Recover from this base backup (a drill), not the newest one before the time.
    pub base: Option<String>,
    /// `--storage NAME`: base backups on this storage, read from it first.
    pub storage: Option<String>,
}

/// Parse "2026-11-27 10:15:00+00" (or RFC 3339).
pub(crate) fn parse_time(t: &str) -> Result<jiff::Timestamp> {
    let norm = t.trim().replace(' ', "T");
    let norm = match norm.rsplit_once(['+', '-']) {
        // "+00" -> "+00:00"
        Some((head, off)) if off.len() == 2 && head.contains('T') => {
            format!("{norm}:00")
        }
        _ => norm,
    };
    norm.parse::<jiff::Timestamp>().map_err(|e| {
        Error::config(format!(
            "--time {t:?} is not a time with a zone ({e}); e.g. \"2026-11-27 10:15:00+00\""
        ))
    })
}

/// `restore JOB [--time T] --to DIR` for a cluster job.
pub async fn restore_to_time(plan: &JobPlan, opts: &PitrOptions) -> Result<PitrReport> {
    cluster_only(plan, "restore --time")?;
    let clock = std::time::Instant::now();
    let target = opts.time.as_deref().map(parse_time).transpose()?;
    // Without --to: the job's own data directory, recovered beside it and swapped in.
    let in_place = match (&opts.to, &plan.source) {
        (Some(_), _) => None,
        (None, SourcePlan::Cluster(c)) => match &c.data_directory {
            Some(d) => Some(d.clone()),
            None => {
                return Err(Error::config(format!(
                    "job {}: give --to DIR (a new or empty directory), or set source.data_directory to restore in place",
                    plan.name
                )));
            }
        },
        (None, _) => None,
    };
    let stamp = jiff::Timestamp::now().strftime("%Y%m%d%H%M%S").to_string();
    let to_owned = match &in_place {
        Some(d) => {
            if let Some(pid) = running_postmaster(d) {
                return Err(Error::refused(format!(
                    "the cluster in {} is running (postmaster pid {pid}): stop it first; nothing was changed",
                    d.display()
                )));
            }
            let name = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "data".into());
            d.with_file_name(format!("{name}.restoring-{stamp}"))
                .display()
                .to_string()
        }
        None => opts.to.clone().unwrap_or_default(),
    };
    let to = to_owned.as_str();
    let dir = PathBuf::from(to);
    if !dir.is_absolute() {
        return Err(Error::config(format!(
            "--to {to:?} must be an absolute path"
        )));
    }
    if let Ok(mut rd) = std::fs::read_dir(&dir)
        && rd.next().is_some()
    {
        return Err(Error::refused(format!(
            "--to {to} is not empty; give a new or empty directory (nothing was changed)"
        )));
    }
    let identities = Arc::new(crate::pipeline::load_identities(
        &plan.identity_path(opts.identity.as_deref())?,
    )?);
    let storage = crate::snapshot::replicas::open(plan, opts.storage.as_deref()).await?;
    let base = match &opts.base {
        Some(id) => snapshot::catalog(storage.as_ref(), plan)
            .await?
            .into_iter()
            .find(|e| &e.id == id)
            .ok_or_else(|| Error::failed(format!("job {} has no base backup {id}", plan.name)))?,
        None => pick_base(storage.as_ref(), plan, target).await?,
    };
    let src = &base.manifest.source;
    let (Some(wal_start), Some(seg_size)) = (src.wal_start.as_deref(), src.wal_segment_size) else {
        return Err(Error::failed(format!(
            "base backup {} records no WAL start point or segment size",
            base.id
        )));
    };
    let tli = src.timeline.unwrap_or(1);
    let start_seg = wal::segment_of(wal_start, tli, seg_size).ok_or_else(|| {
        Error::failed(format!(
            "base backup {}: bad WAL start point {wal_start}",
            base.id
        ))
    })?;
    // The tar holds the WAL up to the backup's end; from there on the archive must be whole.
    let end_seg = wal::end_segment(src).unwrap_or_else(|| start_seg.clone());
    let major: u32 = src
        .server_version
        .as_deref()
        .and_then(|v| v.split('.').next()?.parse().ok())
        .unwrap_or(0);
    let bindir = crate::postgres::recovery::server_bindir(major)?;

    // The data directory: created private, the base backup extracted into it.
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::failed(format!("cannot create {}: {e}", dir.display())))?;
    }
    let result = async {
        let t0 = std::time::Instant::now();
        extract_base(storage.clone(), &base, identities.clone(), &dir).await?;
        let extract_ms = t0.elapsed().as_millis() as u64;
        crate::postgres::recovery::give_to_server_user(&dir)?;
        let work = crate::postgres::recovery::work_dir(opts.staging.as_deref())?;
        let staged = work.path().join("wal");
        std::fs::create_dir(&staged)
            .map_err(|e| Error::failed(format!("cannot create {}: {e}", staged.display())))?;
        let n = stage_wal(
            &end_seg,
            storage.clone(),
            plan,
            identities.clone(),
            &start_seg,
            tli,
            seg_size,
            &staged,
        )
        .await?;
        crate::postgres::recovery::give_to_server_user(work.path())?;
        let wal_ms = t0.elapsed().as_millis() as u64 - extract_ms;
        let restore_command = format!("cp \"{}/%f\" \"%p\"", shell_safe(&staged)?);
        let time_pg = target.map(|t| t.strftime("%Y-%m-%d %H:%M:%S%.f+00").to_string());
        let (bindir, dir2, workp) = (bindir.clone(), dir.clone(), work.path().to_path_buf());
        let rec = tokio::task::spawn_blocking(move || {
            crate::postgres::recovery::recover(
                &bindir,
                &dir2,
                &workp,
                &restore_command,
                time_pg.as_deref(),
            )
        })
        .await
        .map_err(|e| Error::failed(format!("recovery task: {e}")))??;
        let recovery_ms = t0.elapsed().as_millis() as u64 - extract_ms - wal_ms;
        Ok::<_, Error>((rec, n, extract_ms, wal_ms, recovery_ms))
    }
    .await;
    let (rec, n, extract_ms, wal_ms, recovery_ms) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.context(format!(
                "restore of job {} to a point in time failed; {} was removed",
                plan.name,
                dir.display()
            )));
        }
    };
    // In place: the old directory aside, the recovered one in its name.
    let mut previous_kept_as = None;
    if let Some(d) = &in_place {
        if d.exists() {
            let name = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "data".into());
            let aside = d.with_file_name(format!("{name}.pre-restore-{stamp}"));
            std::fs::rename(d, &aside).map_err(|e| {
                Error::failed(format!(
                    "recovered into {}, but cannot move {} aside: {e}; move it yourself and rename the recovered directory",
                    dir.display(),
                    d.display()
                ))
            })?;
            previous_kept_as = Some(aside.display().to_string());
        }
        std::fs::rename(&dir, d).map_err(|e| {
            Error::failed(format!(
                "recovered into {}, but cannot rename it to {}: {e}",
                dir.display(),
                d.display()
            ))
        })?;
    }
    let final_dir = in_place.clone().unwrap_or_else(|| dir.clone());
    let report = PitrReport {
        job: plan.name.clone(),
        base_backup: base.id.clone(),
        data_directory: final_dir.display().to_string(),
        previous_kept_as,
        target_time: target.map(|t| t.to_string()),
        reached: rec.reached,
        ended_before_target: rec.ended_before_target,
        wal_files: n,
        duration_ms: clock.elapsed().as_millis() as u64,
        extract_ms,
        wal_ms,
        recovery_ms,
    };
    crate::state::audit::append(crate::state::audit::Record {
        action: "restore",
        job: Some(&plan.name),
        snapshot: Some(&base.id),
        outcome: Ok(()),
        details: serde_json::to_value(&report).unwrap_or_default(),
    });
    Ok(report)
}

/// The pid of a postmaster running in `data`, if one is.
fn running_postmaster(data: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    alive.then_some(pid)
}

/// Only paths that need no quoting beyond double quotes go into a shell command.
fn shell_safe(p: &Path) -> Result<String> {
    let s = p.display().to_string();
    if s.chars()
        .any(|c| matches!(c, '"' | '$' | '`' | '\\' | '\'' | '\n' | '%'))
    {
        return Err(Error::config(format!(
            "the staging path {s:?} holds characters a restore_command cannot carry; use --staging with a plain path"
        )));
    }
    Ok(s)
}

/// The newest base backup (of this job, trusted) finished before `target` (or the newest).
async fn pick_base(
    storage: &dyn Storage,
    plan: &JobPlan,
    target: Option<jiff::Timestamp>,
) -> Result<Entry> {
    let all = snapshot::catalog(storage, plan).await?;
    all.into_iter()
        .filter(|e| e.manifest.source.kind == "postgres-cluster")
        .find(|e| match (target, e.manifest.finished_at()) {
            (Some(t), Some(f)) => f <= t,
            (None, _) => true,
            _ => false,
        })
        .ok_or_else(|| {
            Error::failed(match target {
                Some(t) => format!(
                    "job {} has no base backup finished before {t} in {} (see `backstop list {}`)",
                    plan.name,
                    storage.describe(),
                    plan.name
                ),
                None => format!(
                    "job {} has no base backup in {}; take one with `backstop backup {}`",
                    plan.name,
                    storage.describe(),
                    plan.name
                ),
            })
        })
}

async fn extract_base(
    storage: Arc<dyn Storage>,
    base: &Entry,
    identities: Arc<Vec<Box<dyn age::Identity + Send + Sync>>>,
    dir: &Path,
) -> Result<()> {
    let obj = base
        .manifest
        .object("base")
        .ok_or_else(|| Error::failed(format!("base backup {} has no base object", base.id)))?;
    let (key, reader) = crate::snapshot::read::open_object(storage.as_ref(), base, obj).await?;
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let (stored, sha) = (obj.stored_bytes, obj.sha256.clone());
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let expect = crate::pipeline::Expect {
            name: &key,
            stored_bytes: stored,
            sha256: &sha,
        };
        let facts = crate::volume::source::VolumeFacts {
            root_mode: 0o700,
            ..Default::default()
        };
        crate::pipeline::decode_with(bridge, &identities, &expect, |plain| {
            crate::volume::target::extract(plain, &dir, &facts).map(|_| ())
        })
    })
    .await
    .map_err(|e| Error::failed(format!("extraction task: {e}")))?
}

/// Fetch and check every WAL file recovery from `start` may need (history files; segments
/// of this timeline and later ones from `start` on) into `into`. A segment missing between
/// two stored ones is a gap: recovery cannot pass it, which is said before anything starts.
#[allow(clippy::too_many_arguments)]
async fn stage_wal(
    whole_from: &str,
    storage: Arc<dyn Storage>,
    plan: &JobPlan,
    identities: Arc<Vec<Box<dyn age::Identity + Send + Sync>>>,
    start: &str,
    tli: u32,
    seg_size: u64,
    into: &Path,
) -> Result<usize> {
    let names = wal::list(storage.as_ref(), &plan.name).await?;
    let wanted: Vec<&String> = names
        .iter()
        .filter(|n| {
            if n.ends_with(".history") {
                return true;
            }
            wal::is_segment(n)
                && u32::from_str_radix(&n[..8], 16).is_ok_and(|t| t >= tli)
                && n[8..] >= start[8..]
        })
        .collect();
    if let Some(gap) = wal::first_gap(&names, whole_from, seg_size) {
        return Err(Error::failed(format!(
            "the WAL archive of job {} has a gap: segment {gap} is missing while later ones are stored; recovery cannot pass it",
            plan.name
        )));
    }
    // Four at a time: downloads overlap decryption and the hash checks.
    let mut tasks = tokio::task::JoinSet::new();
    let mut queue = wanted
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .into_iter();
    let fetch_one = |n: String| {
        let (storage, plan, identities, p) = (
            storage.clone(),
            plan.clone(),
            identities.clone(),
            into.join(&n),
        );
        async move {
            let data = fetch_any(storage.as_ref(), &plan, &identities, &n)
                .await?
                .ok_or_else(|| Error::failed(format!("WAL file {n} vanished from the archive")))?;
            std::fs::write(&p, &data)
                .map_err(|e| Error::failed(format!("cannot write {}: {e}", p.display())))
        }
    };
    for n in queue.by_ref().take(4) {
        tasks.spawn(fetch_one(n));
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| Error::failed(format!("WAL fetch task: {e}")))??;
        if let Some(n) = queue.next() {
            tasks.spawn(fetch_one(n));
        }
    }
    Ok(wanted.len())
}

/// `restore JOB [--time T] --database NAME [--table T]... --to postgres://...`: recover in
/// a scratch directory, serve it privately, and stream one database (or some of its
/// tables) into another server with `pg_dump | pg_restore`. A whole database goes into a
/// new database (refused when it exists); tables go into an existing one (pg_restore
/// refuses a table that exists there).
pub(crate) async fn restore_database(
    plan: &JobPlan,
    opts: &PitrOptions,
    database: &str,
    tables: &[String],
    to_url: &str,
    no_owner: bool,
) -> Result<PitrReport> {
    cluster_only(plan, "restore --database")?;
    let target_url = crate::postgres::PgUrl::parse(to_url)
        .map_err(|why| Error::config(format!("--to {why}")))?;
    let target = crate::postgres::Conn::new(target_url.clone(), None);
    let psql = crate::postgres::any_psql()?;
    let admin = target.with_dbname(crate::postgres::restore::maintenance_db(
        target_url.dbname(),
    ));
    let exists = crate::postgres::query(
        &psql,
        &admin,
        &format!(
            "SELECT count(*) FROM pg_database WHERE datname = {}",
            crate::postgres::quote_literal(target_url.dbname())
        ),
    )
    .await?
    .first()
    .and_then(|r| r.first())
    .is_some_and(|n| n == "1");
    if tables.is_empty() && exists {
        return Err(Error::refused(format!(
            "database {} exists on {}: a whole database is restored into a new one (name another, or drop it); nothing was changed",
            target_url.dbname(),
            target_url
        )));
    }
    if !tables.is_empty() && !exists {
        return Err(Error::config(format!(
            "database {} does not exist on {}: tables are restored into an existing database",
            target_url.dbname(),
            target_url
        )));
    }
    let work = crate::postgres::recovery::work_dir(opts.staging.as_deref())?;
    let data = work.path().join("data");
    let mut report = restore_to_time(
        plan,
        &PitrOptions {
            to: Some(data.display().to_string()),
            ..opts.clone()
        },
    )
    .await?;
    let major = crate::postgres::server_info(&target)
        .await
        .map(|i| i.major())
        .unwrap_or(0);
    let tools = crate::postgres::tools_for("pg_dump", major)?;
    let bindir = crate::postgres::recovery::server_bindir(0)?;
    let served = crate::postgres::recovery::Served::start(&bindir, &data, work.path())?;
    let source_url = crate::postgres::PgUrl::parse(&served.url)
        .map_err(Error::failed)?
        .with_dbname(database);
    if !exists {
        crate::postgres::query(
            &psql,
            &admin,
            &format!(
                "CREATE DATABASE {} TEMPLATE template0",
                crate::postgres::quote_ident(target_url.dbname())
            ),
        )
        .await?;
    }
    let mut dump = std::process::Command::new(tools.bin("pg_dump"));
    dump.args(["--format=custom", "--no-password", "--dbname"])
        .arg(source_url.conninfo());
    for t in tables {
        dump.arg("--table").arg(t);
    }
    let mut dump = dump
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::failed(format!("cannot start pg_dump: {e}")))?;
    let mut restore = std::process::Command::new(tools.bin("pg_restore"));
    restore
        .args(["--exit-on-error", "--no-password", "--dbname"])
        .arg(target_url.conninfo())
        .envs(target.env()?);
    if no_owner {
        restore.args(["--no-owner", "--no-acl"]);
    }
    let out = restore
        .stdin(
            dump.stdout
                .take()
                .map(std::process::Stdio::from)
                .unwrap_or_else(std::process::Stdio::null),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| Error::failed(format!("cannot start pg_restore: {e}")))?;
    let dumped = dump
        .wait_with_output()
        .map_err(|e| Error::failed(format!("waiting for pg_dump: {e}")))?;
    drop(served);
    if !dumped.status.success() || !out.status.success() {
        if !exists {
            let _ = crate::postgres::query(
                &psql,
                &admin,
                &format!(
                    "DROP DATABASE IF EXISTS {}",
                    crate::postgres::quote_ident(target_url.dbname())
                ),
            )
            .await;
        }
        return Err(Error::failed(format!(
            "streaming database {database} of the recovered cluster into {target_url} failed: {}{}",
            crate::text::summarize(&String::from_utf8_lossy(&dumped.stderr)),
            crate::text::summarize(&String::from_utf8_lossy(&out.stderr))
        )));
    }
    report.data_directory = format!("{target_url} (database {database} of the recovered cluster)");
    Ok(report)
}
