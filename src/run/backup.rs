//! One backup of a job: source -> pipeline -> storage, objects first and the manifest
//! last. The manifest is written only after the source exited successfully and every
//! object is stored and checked by size, so a failed, interrupted or killed run leaves no
//! snapshot (and its incomplete objects are cleaned up). Content facts (table names, row
//! counts) go into an encrypted object, never the plaintext manifest.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::{ClusterSource, JobPlan, PostgresSource, SourcePlan, VolumeSource};
use crate::error::{Error, Result, ResultExt};
use crate::pipeline::progress::{self, Counters};
use crate::pipeline::{self, Stats};
use crate::postgres::archive::DumpObserver;
use crate::postgres::dump::DumpProcess;
use crate::postgres::{self as pg, Conn};
use crate::snapshot::{
    self, CompressionInfo, EncryptionInfo, Manifest, ObjectEntry, SourceInfo, Trigger,
};
use crate::state::baselines::Baseline;
use crate::storage::{ChunkWriter, Storage};
use crate::volume::source::VolumeFacts;

#[derive(Debug)]
pub struct Options {
    pub trigger: Trigger,
    pub reason: Option<String>,
    /// Pin the snapshot against retention until this time.
    pub pinned_until: Option<jiff::Timestamp>,
    pub quiet: bool,
    /// A pg_dump already started (see [`early_dump`]); taken by the backup.
    pub early: std::sync::Mutex<Option<EarlyDump>>,
}

/// A pg_dump started before the run's locks and the server's answers, with the tools the
/// job's last backup used.
pub struct EarlyDump {
    tools: pg::Tools,
    proc: DumpProcess,
    stdout: std::process::ChildStdout,
}

impl std::fmt::Debug for EarlyDump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EarlyDump(pg_dump {})", self.tools.version)
    }
}

/// Start the pg_dump the job's last backup used, at once: its catalog queries (most of a
/// small or many-table database's dump) then run while the lease is taken, the server is
/// asked its version and the installed tools are listed, instead of after. It is read
/// from only once the run holds its locks and both answers agree with the choice;
/// otherwise it is killed (dropping it kills it) and the right one started. Only ever
/// started from a directory that discovery searches. `None` for other sources, or when
/// nothing is remembered.
pub(crate) fn early_dump(plan: &JobPlan) -> Option<EarlyDump> {
    match &plan.source {
        SourcePlan::Postgres(src) => early_dump_for(plan, src),
        _ => None,
    }
}

fn early_dump_for(plan: &JobPlan, src: &PostgresSource) -> Option<EarlyDump> {
    let conn = Conn::new(src.url.clone(), src.password_file.clone());
    let tools = crate::state::jobstate::load(&plan.name)
        .pg_dump
        .and_then(|t| pg::remembered(&t, "pg_dump"))?;
    let (proc, stdout) = DumpProcess::start(&tools, &conn).ok()?;
    Some(EarlyDump {
        tools,
        proc,
        stdout,
    })
}

/// What a source's backup produced: the manifest's source part, the stored objects,
/// warnings, and the figures the shrink alarm compares.
type Sourced = (SourceInfo, Vec<ObjectEntry>, Vec<String>, Baseline);

/// Take one snapshot of `plan` into every storage of `targets` at once (encoded once).
/// The snapshot is complete on each storage whose objects and manifest were all stored;
/// a storage that failed is dropped from `targets` with its reason (the caller reports
/// it), and the run fails only when no storage holds the snapshot.
pub async fn run(
    plan: &JobPlan,
    targets: Arc<crate::storage::fanout::Fanout>,
    opts: &Options,
) -> Result<Manifest> {
    let storage: Arc<dyn Storage> = targets.clone();
    // A job that signs must be able to, before anything is stored.
    let signer = crate::snapshot::sign::signer(plan)?;
    let started = jiff::Timestamp::now();
    let clock = Instant::now();
    let id = snapshot::new_id(started);
    // If this future is dropped (SIGINT/SIGTERM), whatever was stored is removed in the
    // background; on the normal paths below the guard is disarmed.
    let mut guard = LeftoverGuard {
        storage: Some(storage.clone()),
        job: plan.name.clone(),
        id: id.clone(),
    };
    let result = match &plan.source {
        SourcePlan::Postgres(pg) => backup_postgres(plan, pg, storage.clone(), &id, opts).await,
        SourcePlan::Volume(v) => backup_volume(plan, v, storage.clone(), &id, opts).await,
        SourcePlan::Cluster(c) => backup_cluster(plan, c, storage.clone(), &id, opts).await,
    };
    let (source, objects, mut warnings, mut baseline) = match result {
        Ok(v) => v,
        Err(e) => {
            guard.storage = None;
            remove_leftovers(storage.as_ref(), &plan.name, &id).await;
            return Err(e.context(format!(
                "backup of job {} failed; no snapshot was written",
                plan.name
            )));
        }
    };
    // The shrink alarm: compare with the previous snapshot's figures kept on this host.
    baseline.job = plan.name.clone();
    baseline.snapshot = id.clone();
    baseline.time = jiff::Timestamp::now().to_string();
    let previous = crate::state::baselines::load(&plan.name);
    let findings = previous
        .as_ref()
        .map(|p| crate::state::baselines::compare(p, &baseline, plan.alarm.shrink_percent))
        .unwrap_or_default();
    if !findings.is_empty() {
        // Names stay off the plaintext manifest: they are content facts.
        warnings.push(format!(
            "shrink alarm: {} finding(s) beyond {}% against snapshot {} (details in this host's log and audit log)",
            findings.len(),
            plan.alarm.shrink_percent,
            previous.as_ref().map(|p| p.snapshot.as_str()).unwrap_or("?")
        ));
    }
    let finished = jiff::Timestamp::now();
    let manifest = Manifest {
        format_version: snapshot::FORMAT_VERSION,
        backstop_version: env!("CARGO_PKG_VERSION").to_string(),
        job: plan.name.clone(),
        snapshot: id.clone(),
        host: crate::state::hostname(),
        source,
        started: started.to_string(),
        finished: finished.to_string(),
        duration_ms: clock.elapsed().as_millis() as u64,
        trigger: opts.trigger,
        // Stored off-site for good: no secret a user pasted into --reason goes with it.
        reason: opts.reason.as_deref().map(crate::text::redact_secrets),
        pinned_until: opts.pinned_until.map(|t| t.to_string()),
        compression: CompressionInfo {
            algorithm: "zstd".into(),
            level: plan.compression.level,
        },
        encryption: EncryptionInfo {
            algorithm: "age-x25519".into(),
            recipients: plan.encryption.recipients.clone(),
        },
        plaintext_bytes: objects.iter().map(|o| o.plaintext_bytes).sum(),
        stored_bytes: objects.iter().map(|o| o.stored_bytes).sum(),
        objects,
        warnings,
        anomalous: !findings.is_empty(),
    };
    let read_back = matches!(
        opts.trigger,
        Trigger::Snapshot | Trigger::Guard | Trigger::Hook
    );
    // The manifest on each storage that holds every object, checked there; the storages
    // side by side (each a few round trips).
    let mut committed = Vec::new();
    let mut last_err = None;
    let live = targets.live();
    let outcomes = futures_util::future::join_all(
        live.iter()
            .map(|(_, member)| commit(member.as_ref(), &manifest, read_back, signer.as_ref())),
    )
    .await;
    for ((name, member), outcome) in live.into_iter().zip(outcomes) {
        match outcome {
            Ok(()) => committed.push(name),
            Err(e) => {
                targets.fail(&name, e.message());
                remove_leftovers(member.as_ref(), &plan.name, &id).await;
                last_err = Some(e);
            }
        }
    }
    guard.storage = None;
    if committed.is_empty() {
        let e = last_err.unwrap_or_else(|| {
            Error::failed(format!(
                "no storage took the snapshot: {}",
                describe_failures(&targets)
            ))
        });
        return Err(e.context(format!(
            "backup of job {} failed; no snapshot was written",
            plan.name
        )));
    }
    crate::state::baselines::save(&baseline);
    if let Some(prev) = previous.filter(|_| !findings.is_empty()) {
        raise_alarm(
            plan,
            storage.as_ref(),
            &manifest,
            &prev,
            &findings,
            signer.as_ref(),
        )
        .await;
    }
    Ok(manifest)
}

/// Say it loudly, keep the previous snapshot from rotating away, and audit it.
async fn raise_alarm(
    plan: &JobPlan,
    storage: &dyn Storage,
    m: &Manifest,
    prev: &Baseline,
    findings: &[String],
    signer: Option<&crate::minisign::SecretKey>,
) {
    eprintln!(
        "backstop: WARNING: shrink alarm for job {}: snapshot {} is much smaller than {}:",
        plan.name, m.snapshot, prev.snapshot
    );
    for f in findings {
        eprintln!("backstop: WARNING:   {f}");
    }
    let until = jiff::Timestamp::now()
        + jiff::SignedDuration::from_secs(plan.alarm.pin_for.as_secs() as i64);
    let reason = format!(
        "shrink alarm: snapshot {} lost data against this one",
        m.snapshot
    );
    let exists = storage
        .head(&snapshot::object_key(
            &plan.name,
            &prev.snapshot,
            snapshot::MANIFEST,
        ))
        .await
        .ok()
        .flatten()
        .is_some();
    let pinned = if exists {
        match crate::snapshot::pin::pin(storage, &plan.name, &prev.snapshot, until, &reason, signer)
            .await
        {
            Ok(()) => {
                eprintln!(
                    "backstop: WARNING:   the previous snapshot {} is pinned until {until} so retention keeps it",
                    prev.snapshot
                );
                true
            }
            Err(e) => {
                eprintln!(
                    "backstop: WARNING:   could not pin the previous snapshot {}: {}",
                    prev.snapshot,
                    e.message()
                );
                false
            }
        }
    } else {
        false
    };
    crate::state::audit::append(crate::state::audit::Record {
        action: "alarm",
        job: Some(&plan.name),
        snapshot: Some(&m.snapshot),
        outcome: Ok(()),
        details: serde_json::json!({
            "kind": "shrink", "previous": prev.snapshot, "findings": findings,
            "previous_pinned_until": pinned.then(|| until.to_string()),
        }),
    });
}

struct LeftoverGuard {
    storage: Option<Arc<dyn Storage>>,
    job: String,
    id: String,
}

impl Drop for LeftoverGuard {
    fn drop(&mut self) {
        if let Some(storage) = self.storage.take() {
            let (job, id) = (std::mem::take(&mut self.job), std::mem::take(&mut self.id));
            crate::cleanup::spawn(
                async move { remove_leftovers(storage.as_ref(), &job, &id).await },
            );
        }
    }
}

/// Check every object by size, then write the manifest (its signature first) and read it
/// back.
async fn commit(
    storage: &dyn Storage,
    m: &Manifest,
    read_back: bool,
    signer: Option<&crate::minisign::SecretKey>,
) -> Result<()> {
    // Every object checked, side by side (a round trip each), before the manifest.
    futures_util::future::try_join_all(
        m.objects
            .iter()
            .map(|o| check_stored(storage, m, o, read_back)),
    )
    .await?;
    let body = serde_json::to_vec_pretty(m).map_err(|e| Error::failed(format!("manifest: {e}")))?;
    let key = snapshot::object_key(&m.job, &m.snapshot, snapshot::MANIFEST);
    crate::snapshot::sign::put_signed(
        storage,
        &key,
        Bytes::from(body.clone()),
        signer,
        &format!("backstop manifest job={} snapshot={}", m.job, m.snapshot),
    )
    .await?;
    match storage.get_bytes(&key).await? {
        Some(back) if back == body => Ok(()),
        _ => Err(Error::failed(format!(
            "the manifest {key} did not read back as written"
        ))),
    }
}

/// One stored object as the manifest will describe it: there with its size, or (`read_back`,
/// snapshots before a risky action) every byte read back with its SHA-256.
async fn check_stored(
    storage: &dyn Storage,
    m: &Manifest,
    o: &ObjectEntry,
    read_back: bool,
) -> Result<()> {
    let key = snapshot::object_key(&m.job, &m.snapshot, &o.name);
    if read_back {
        // Snapshots before a risky action: read every byte back and check its SHA-256.
        let Some(mut r) = storage.get(&key).await? else {
            return Err(Error::failed(format!(
                "stored object {key} is missing after upload"
            )));
        };
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = tokio::io::AsyncReadExt::read(&mut r, &mut buf)
                .await
                .map_err(|e| Error::failed(format!("reading {key} back: {e}")))?;
            if k == 0 {
                break;
            }
            sha2::Digest::update(&mut h, &buf[..k]);
            n += k as u64;
        }
        let sum = hex::encode(sha2::Digest::finalize(h));
        if n != o.stored_bytes || sum != o.sha256 {
            return Err(Error::failed(format!(
                "stored object {key} read back as {n} bytes with SHA-256 {sum}, expected {} bytes with {}",
                o.stored_bytes, o.sha256
            )));
        }
        return Ok(());
    }
    match storage.head(&key).await? {
        Some(size) if size == o.stored_bytes => {}
        Some(size) => {
            return Err(Error::failed(format!(
                "stored object {key} has {size} bytes, expected {}",
                o.stored_bytes
            )));
        }
        None => {
            return Err(Error::failed(format!(
                "stored object {key} is missing after upload"
            )));
        }
    }
    Ok(())
}

/// "NAME: why; NAME: why" for the storages dropped from a run.
pub(crate) fn describe_failures(targets: &crate::storage::fanout::Fanout) -> String {
    targets
        .failures()
        .into_iter()
        .map(|(n, w)| format!("{n}: {w}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Remove whatever objects a failed run left (best effort: with no manifest they are
/// invisible anyway, and Object Lock may forbid the delete).
async fn remove_leftovers(storage: &dyn Storage, job: &str, id: &str) {
    let prefix = snapshot::snapshot_prefix(job, id);
    if let Err(e) = storage.abort_incomplete(&prefix).await {
        tracing::warn!("could not abort unfinished uploads below {prefix}: {e}");
    }
    if let Ok(objs) = storage.list(&prefix).await {
        for o in objs {
            if let Err(e) = storage.delete(&o.key).await {
                tracing::warn!("could not remove {} of the failed snapshot: {e}", o.key);
            }
        }
    }
}

fn entry(name: &str, role: &str, format: &str, st: &Stats) -> ObjectEntry {
    ObjectEntry {
        name: name.to_string(),
        role: role.to_string(),
        format: format.to_string(),
        plaintext_bytes: st.plaintext_bytes,
        stored_bytes: st.stored_bytes,
        sha256: st.sha256.clone(),
        head_bytes: None,
        head_sha256: None,
    }
}

/// Store the encrypted facts object (content facts never go into the manifest).
async fn put_facts(
    plan: &JobPlan,
    storage: &dyn Storage,
    id: &str,
    facts: &impl Serialize,
) -> Result<ObjectEntry> {
    let key = snapshot::object_key(&plan.name, id, snapshot::FACTS_OBJECT);
    let body = serde_json::to_vec(facts).map_err(|e| Error::failed(format!("facts: {e}")))?;
    let st = put_small(plan, storage, &key, body).await?;
    Ok(entry(snapshot::FACTS_OBJECT, "facts", "json", &st))
}

/// Encrypt a small object and store it whole.
async fn put_small(
    plan: &JobPlan,
    storage: &dyn Storage,
    key: &str,
    data: Vec<u8>,
) -> Result<Stats> {
    let comp = plan.compression;
    let recipients = plan.encryption.parsed.clone();
    let (bytes, st) =
        tokio::task::spawn_blocking(move || pipeline::encode_bytes(&data, comp, &recipients))
            .await
            .map_err(|e| Error::failed(format!("encryption task: {e}")))??;
    storage.put_bytes(key, Bytes::from(bytes)).await?;
    Ok(st)
}

async fn backup_postgres(
    plan: &JobPlan,
    src: &PostgresSource,
    storage: Arc<dyn Storage>,
    id: &str,
    opts: &Options,
) -> Result<Sourced> {
    let conn = Conn::new(src.url.clone(), src.password_file.clone());
    // The pg_dump started before the locks were taken (see [`early_dump`]), or now.
    let early = opts
        .early
        .lock()
        .ok()
        .and_then(|mut e| e.take())
        .map(|e| (e.tools, (e.proc, e.stdout)))
        .or_else(|| early_dump_for(plan, src).map(|e| (e.tools, (e.proc, e.stdout))));
    // Which pg_dump binaries exist is learnt while the server answers (both start
    // processes; together they are most of a small backup's fixed cost).
    let discovery = tokio::task::spawn_blocking(|| pg::installed("pg_dump"));
    let info = pg::server_info(&conn)
        .await
        .ctx(format!("cannot reach the source database {}", conn.url))?;
    let _ = discovery.await;
    let tools = pg::tools_for("pg_dump", info.major())?;
    let early = match early {
        Some((t, p)) if t == tools => Some(p),
        Some((t, p)) => {
            tracing::info!(
                "job {}: pg_dump {} started early is not the one for this server; restarting with pg_dump {}",
                plan.name,
                t.version,
                tools.version
            );
            p.0.kill();
            None
        }
        None => None,
    };
    if early.is_none() {
        let remember = crate::state::jobstate::Tool {
            dir: tools.dir.clone(),
            major: tools.major,
            version: tools.version.clone(),
        };
        crate::state::jobstate::update(&plan.name, |st| st.pg_dump = Some(remember));
    }
    tracing::info!(
        "job {}: dumping {} (PostgreSQL {}) with pg_dump {} into {}",
        plan.name,
        conn.url,
        info.version,
        tools.version,
        storage.describe()
    );
    let mut objects = Vec::new();

    if src.globals {
        let sql = crate::postgres::dump::dump_globals(&tools, &conn).await?;
        let key = snapshot::object_key(&plan.name, id, snapshot::GLOBALS_OBJECT);
        let st = put_small(plan, storage.as_ref(), &key, sql).await?;
        objects.push(entry(snapshot::GLOBALS_OBJECT, "globals", "sql", &st));
    }

    // The dump: pg_dump -> observer -> zstd -> age -> chunks -> storage, concurrently.
    let (proc, stdout) = match early {
        Some(p) => p,
        None => DumpProcess::start(&tools, &conn)?,
    };
    let (stats, facts) = stream_dump(
        plan,
        storage.clone(),
        id,
        snapshot::DUMP_OBJECT,
        Some(info.size_bytes),
        opts.quiet,
        move |w| {
            let mut observer = DumpObserver::new();
            let (stats, said) = encode_process(proc, stdout, |b| observer.feed(b), w)?;
            if !said.trim().is_empty() {
                tracing::warn!("pg_dump: {}", said.trim());
            }
            observer.settle();
            let head = observer.head_digest();
            Ok((stats, (observer.finish(), head)))
        },
    )
    .await?;
    let (facts, head) = facts;
    let mut dump = entry(snapshot::DUMP_OBJECT, "dump", "pg_dump-custom", &stats);
    (dump.head_bytes, dump.head_sha256) = head.unzip();
    objects.push(dump);

    let facts = match facts {
        Ok(d) => crate::snapshot::facts::Facts {
            job: plan.name.clone(),
            snapshot: id.to_string(),
            counted_by: "copy-stream".into(),
            dump: Some(d),
            counts_unavailable: None,
        },
        Err(why) => {
            tracing::warn!("job {}: row counts not recorded: {why}", plan.name);
            crate::snapshot::facts::Facts {
                job: plan.name.clone(),
                snapshot: id.to_string(),
                counted_by: "none".into(),
                dump: None,
                counts_unavailable: Some(why),
            }
        }
    };
    objects.push(put_facts(plan, storage.as_ref(), id, &facts).await?);

    let source = SourceInfo {
        kind: "postgres".into(),
        host: Some(src.url.host().to_string()),
        port: Some(src.url.port()),
        database: Some(src.url.dbname().to_string()),
        user: src.url.user().map(str::to_string),
        server_version: Some(info.version.clone()),
        pg_dump_version: Some(tools.version.clone()),
        encoding: Some(info.encoding.clone()),
        collate: Some(info.collate.clone()),
        ctype: Some(info.ctype.clone()),
        path: None,
        ..SourceInfo::default()
    };
    let baseline = Baseline {
        tables: facts
            .dump
            .as_ref()
            .map(|d| {
                d.tables
                    .iter()
                    .map(|t| (format!("{}.{}", t.schema, t.table), t.rows))
                    .collect()
            })
            .unwrap_or_default(),
        bytes: stats.plaintext_bytes,
        ..Baseline::default()
    };
    Ok((source, objects, Vec::new(), baseline))
}

/// A base backup of a whole cluster: `pg_basebackup` as one tar through the pipeline,
/// with the WAL positions it reports kept in the manifest (not content: LSNs).
async fn backup_cluster(
    plan: &JobPlan,
    src: &ClusterSource,
    storage: Arc<dyn Storage>,
    id: &str,
    opts: &Options,
) -> Result<Sourced> {
    let conn = Conn::new(src.url.clone(), src.password_file.clone());
    let info = pg::server_info(&conn)
        .await
        .ctx(format!("cannot reach the source cluster {}", conn.url))?;
    let tools = pg::tools_for("pg_basebackup", info.major())?;
    let psql = tools.bin("psql");
    let seg_size = pg::query(
        &psql,
        &conn,
        "SELECT setting::bigint * (CASE unit WHEN '8kB' THEN 8192 WHEN 'MB' THEN 1048576 ELSE 1 END) FROM pg_settings WHERE name = 'wal_segment_size'",
    )
    .await
    .ok()
    .and_then(|rows| rows.first()?.first()?.parse::<u64>().ok());
    tracing::info!(
        "job {}: base backup of {} (PostgreSQL {}) with pg_basebackup {} into {}",
        plan.name,
        conn.url,
        info.version,
        tools.version,
        storage.describe()
    );
    let (proc, stdout) = DumpProcess::start_basebackup(&tools, &conn)?;
    let (stats, said) = stream_dump(
        plan,
        storage.clone(),
        id,
        snapshot::BASE_OBJECT,
        Some(info.size_bytes),
        opts.quiet,
        move |w| encode_process(proc, stdout, |_| {}, w),
    )
    .await?;
    let (wal_start, timeline) = wal_position(&said, "write-ahead log start point: ");
    let (wal_end, _) = wal_position(&said, "write-ahead log end point: ");
    if wal_start.is_none() || wal_end.is_none() {
        return Err(Error::failed(format!(
            "pg_basebackup did not report its WAL start and end points: {}",
            crate::text::summarize(&said)
        )));
    }
    let objects = vec![entry(snapshot::BASE_OBJECT, "base", "tar", &stats)];
    let source = SourceInfo {
        kind: "postgres-cluster".into(),
        host: Some(src.url.host().to_string()),
        port: Some(src.url.port()),
        database: None,
        user: src.url.user().map(str::to_string),
        server_version: Some(info.version.clone()),
        pg_dump_version: Some(tools.version.clone()),
        encoding: None,
        collate: None,
        ctype: None,
        path: None,
        wal_start,
        wal_end,
        timeline: timeline.or(Some(1)),
        wal_segment_size: seg_size,
    };
    let baseline = Baseline {
        bytes: stats.plaintext_bytes,
        ..Baseline::default()
    };
    Ok((source, objects, Vec::new(), baseline))
}

/// "X/Y" (and the timeline, when given) after `label` in pg_basebackup's verbose output.
fn wal_position(said: &str, label: &str) -> (Option<String>, Option<u32>) {
    let Some(line) = said
        .lines()
        .find_map(|l| l.split_once(label).map(|(_, r)| r))
    else {
        return (None, None);
    };
    let mut words = line.split_whitespace();
    let lsn = words
        .next()
        .filter(|w| {
            w.split_once('/').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_hexdigit())
            })
        })
        .map(str::to_string);
    let tli = line
        .split_once("on timeline ")
        .and_then(|(_, t)| t.trim().trim_end_matches('.').parse().ok());
    (lsn, tli)
}

/// Run a `pre`/`post` command; a non-zero exit is an error with its output.
async fn run_hook(job: &str, which: &str, argv: &[String]) -> Result<()> {
    let out = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| {
            Error::failed(format!(
                "job {job}: cannot run the {which} command {:?}: {e}",
                argv[0]
            ))
        })?;
    if !out.status.success() {
        return Err(Error::failed(format!(
            "job {job}: the {which} command {argv:?} failed ({}): {}",
            out.status,
            crate::text::summarize(&String::from_utf8_lossy(&out.stderr))
        )));
    }
    Ok(())
}

async fn backup_volume(
    plan: &JobPlan,
    vol: &VolumeSource,
    storage: Arc<dyn Storage>,
    id: &str,
    opts: &Options,
) -> Result<Sourced> {
    if !vol.pre.is_empty() {
        if let Err(e) = run_hook(&plan.name, "pre", &vol.pre).await {
            // post undoes what pre may have half done (a frozen filesystem, a stopped service).
            if !vol.post.is_empty()
                && let Err(pe) = run_hook(&plan.name, "post", &vol.post).await
            {
                tracing::error!("{pe}");
            }
            return Err(e);
        }
    }
    let read = read_volume(plan, vol, storage.clone(), id, opts).await;
    // post always runs, whatever the read did.
    let post = if vol.post.is_empty() {
        Ok(())
    } else {
        run_hook(&plan.name, "post", &vol.post).await
    };
    let (stats, facts) = read?;
    post?;
    let mut warnings = Vec::new();
    if !facts.changed.is_empty() {
        let msg = format!("{} files changed during read", facts.changed.len());
        if vol.strict {
            return Err(Error::failed(format!(
                "job {}: {msg} and source.strict = true (use pre/post or snapshot_path for a consistent read)",
                plan.name
            )));
        }
        tracing::warn!(
            "job {}: {msg}; the snapshot is marked \"changed during read\"",
            plan.name
        );
        warnings.push(format!("changed during read: {msg}"));
    }
    if !facts.skipped.is_empty() {
        warnings.push(format!(
            "{} device nodes, sockets or fifos skipped",
            facts.skipped.len()
        ));
    }
    let mut objects = vec![entry(snapshot::DUMP_OBJECT, "dump", "tar", &stats)];
    objects.push(put_facts(plan, storage.as_ref(), id, &facts).await?);
    let source = SourceInfo {
        kind: "volume".into(),
        path: Some(vol.path.display().to_string()),
        ..Default::default()
    };
    let baseline = Baseline {
        files: facts.files,
        bytes: facts.bytes,
        ..Baseline::default()
    };
    Ok((source, objects, warnings, baseline))
}

/// Stream the tree through the pipeline into the dump object.
async fn read_volume(
    plan: &JobPlan,
    vol: &VolumeSource,
    storage: Arc<dyn Storage>,
    id: &str,
    opts: &Options,
) -> Result<(Stats, VolumeFacts)> {
    let root = vol
        .snapshot_path
        .clone()
        .unwrap_or_else(|| vol.path.clone());
    // A stat-only pass sizes the multipart parts (a 1 TiB tree must fit 10,000 parts).
    let hint_root = root.clone();
    let expected =
        tokio::task::spawn_blocking(move || crate::volume::source::tree_size(&hint_root))
            .await
            .ok()
            .flatten();
    tracing::info!(
        "job {}: reading {} into {}",
        plan.name,
        root.display(),
        storage.describe()
    );
    stream_dump(
        plan,
        storage,
        id,
        snapshot::DUMP_OBJECT,
        expected,
        opts.quiet,
        move |w| {
            let enc =
                pipeline::EncodeWriter::new(w.comp, &w.recipients, w.writer, Some(w.counters))?;
            let (enc, facts) = crate::volume::source::write_tree(&root, enc)?;
            let (writer, stats) = enc.finish()?;
            writer.finish()?;
            Ok((stats, facts))
        },
    )
    .await
}

/// What a dump producer gets: where to write, and how.
/// A child's stdout through the pipeline into `w`: killed when encoding fails; only its
/// clean exit ends the stream (otherwise the writer is dropped without End and the storage
/// discards the object). Returns what it said on stderr.
fn encode_process(
    proc: DumpProcess,
    stdout: std::process::ChildStdout,
    observe: impl FnMut(&[u8]),
    w: DumpSink,
) -> Result<(Stats, String)> {
    match pipeline::encode(
        stdout,
        observe,
        w.comp,
        &w.recipients,
        w.writer,
        Some(w.counters),
    ) {
        Err(e) => {
            let _ = proc.kill();
            Err(e)
        }
        Ok((writer, stats)) => {
            let said = proc.wait_stderr()?;
            writer.finish()?;
            Ok((stats, said))
        }
    }
}

struct DumpSink {
    writer: ChunkWriter,
    comp: crate::config::CompressionPlan,
    recipients: Vec<age::x25519::Recipient>,
    counters: Arc<Counters>,
}

/// Stream the dump object: `produce` runs on a worker thread writing into chunks sized
/// for about `expected` bytes, while the storage uploads them; progress is shown meanwhile.
async fn stream_dump<T: Send + 'static>(
    plan: &JobPlan,
    storage: Arc<dyn Storage>,
    id: &str,
    object: &str,
    expected: Option<u64>,
    quiet: bool,
    produce: impl FnOnce(DumpSink) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = mpsc::channel(storage.chunks_in_flight());
    let key = snapshot::object_key(&plan.name, id, object);
    let counters = Arc::new(Counters::default());
    let _reporter = progress::start(
        &format!("backup {}", plan.name),
        counters.clone(),
        expected,
        quiet,
    );
    let sink = DumpSink {
        writer: ChunkWriter::new(tx, storage.chunk_size_for(expected)),
        comp: plan.compression,
        recipients: plan.encryption.parsed.clone(),
        counters,
    };
    let producer = tokio::task::spawn_blocking(move || produce(sink));
    join_upload(storage.put_stream(&key, rx), producer).await
}

/// Run a storage upload and the worker that feeds it; report the cause of a failure
/// (a producer that only saw the upload stop is not the cause).
async fn join_upload<T>(
    put: impl std::future::Future<Output = Result<u64>>,
    producer: tokio::task::JoinHandle<Result<T>>,
) -> Result<T> {
    let (put, produced) = tokio::join!(put, producer);
    let produced = produced.map_err(|e| Error::failed(format!("the source task failed: {e}")))?;
    match (produced, put) {
        (Ok(p), Ok(_)) => Ok(p),
        (Err(pe), Err(se)) => Err(if pe.message().contains("the storage upload stopped") {
            se
        } else {
            pe
        }),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
    }
}
