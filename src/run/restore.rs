//! Restore of a postgres snapshot. Order is the safety argument:
//! 1. pick the snapshot (newest complete, or `--snapshot`), load the identity; the newest
//!    is picked from the listing of current objects while the stored versions are listed,
//!    and nothing is swapped in (nor any stored role applied, unless a trusted signature
//!    vouches for the snapshot) before the full catalog agrees; otherwise the new
//!    database is dropped and the full catalog's pick restored;
//! 2. look at the target read-only and apply the confirmation gate (exit 4);
//! 3. download every object, checking its SHA-256 and age authentication, into a private
//!    staging directory; any fault stops here, before the target is touched;
//! 4. restore roles (if stored), then `pg_restore -j` into a NEW database beside the target;
//! 5. swap names in one transaction; the previous database is kept as
//!    `NAME_pre_restore_TIME` (dropped only if it held nothing).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::{Gate, GateRequest};
use crate::config::{JobPlan, SourcePlan};
use crate::error::{Error, Result, ResultExt};
use crate::pipeline::{self, Expect};
use crate::postgres::restore::{
    Mode, ScratchDb, create_database, db_name, drop_database, inspect, load_sessions,
    maintenance_db, may_stream, pg_restore, pg_restore_post_data, pg_restore_progressive,
    pg_restore_streaming, plan_restore, read_dump_facts, session_options,
};
use crate::postgres::{self as pg, Conn, PgUrl, quote_ident, quote_literal};
use crate::snapshot::read::{fetch, open_object};
use crate::snapshot::{self, Entry};
use crate::storage::Storage;

#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    pub snapshot: Option<String>,
    pub to: Option<String>,
    pub yes: bool,
    pub identity: Option<PathBuf>,
    pub no_owner: bool,
    pub staging: Option<PathBuf>,
    /// Restore a named snapshot even though it is foreign (unsigned, wrongly signed, dated
    /// in the future); the caller has confirmed.
    pub allow_foreign: bool,
    /// Never touch roles, even when the snapshot stored them (drills on a shared server).
    pub skip_roles: bool,
    /// `--storage NAME`: the newest snapshot on this storage, read from it first.
    pub storage: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub job: String,
    pub snapshot: String,
    /// "postgres" | "volume"
    pub kind: String,
    /// The database URL (without password) or the directory restored into.
    pub target: String,
    pub created: bool,
    pub previous_kept_as: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    pub roles_restored: bool,
    /// Stored roles: which were created, which already existed and were left alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<crate::postgres::roles::RolesReport>,
    pub restored_bytes: u64,
    pub download_ms: u64,
    pub restore_ms: u64,
    pub duration_ms: u64,
    /// How the dump was applied: "staged" (checked in full, then `pg_restore --jobs`),
    /// "streamed" (pre-data and data by one `pg_restore` fed while downloading, into the new
    /// database, the big tables by several sessions; post-data with `--jobs` once every
    /// byte is proven; checked before the swap) or "progressive" (staged as it downloads,
    /// each table loaded by one of several sessions once its data is on disk; the rest and
    /// post-data once every byte is proven).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// A streamed restore's big tables, each loaded by several sessions at once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parallel_load: Vec<crate::postgres::load::Report>,
    /// A progressive restore's data blocks (tables, large objects) loaded by the sessions
    /// while the snapshot streamed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks_loaded_while_streaming: Option<usize>,
    /// Copies found missing or damaged on one storage and read from another instead.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<String>,
}

/// Restore a snapshot of `plan`.
pub(crate) async fn run(
    plan: &JobPlan,
    storage: Arc<dyn Storage>,
    opts: &Options,
    gate: Gate<'_>,
) -> Result<Report> {
    let clock = Instant::now();
    let src = match &plan.source {
        SourcePlan::Postgres(src) => src,
        SourcePlan::Volume(vol) => return run_volume(plan, vol, storage, opts, clock, gate).await,
        SourcePlan::Cluster(_) => {
            return Err(Error::config(format!(
                "job {} is a postgres-cluster job: restore it with `backstop restore {} [--time T] --to DIR`",
                plan.name, plan.name
            )));
        }
    };
    // The target: the job's own database, or --to.
    let (conn, own_target) = match &opts.to {
        Some(to) => {
            if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
                return Err(Error::config(format!(
                    "--to {to:?}: job {} is a postgres job, so --to takes a postgres:// URL, e.g. postgres://user@host:5432/dbname",
                    plan.name
                )));
            }
            let url = PgUrl::parse(to).map_err(|why| Error::config(format!("--to {why}")))?;
            (Conn::new(url, None), false)
        }
        None => (Conn::new(src.url.clone(), src.password_file.clone()), true),
    };
    let toast_lz4 = crate::config::env::restore_toast_lz4()?;
    let db = conn.url.dbname().to_string();
    let admin = conn.with_dbname(maintenance_db(&db));
    let stamp = jiff::Timestamp::now().strftime("%Y%m%d%H%M%S").to_string();
    let fresh = db_name(&db, &format!("_restoring_{stamp}"));
    // The client programs are found (each asked its version) and the target server is
    // asked what it holds while the snapshot is picked.
    let psql_tools = tokio::task::spawn_blocking(|| pg::installed("psql"));
    let restore_tools = tokio::task::spawn_blocking(|| pg::installed("pg_restore"));
    let psql_path = {
        use futures_util::FutureExt;
        async move {
            let _ = psql_tools.await;
            pg::any_psql().map_err(|e| e.message().to_string())
        }
        .boxed()
        .shared()
    };
    let target = async {
        let psql = psql_path.clone().await.map_err(Error::failed)?;
        let state = inspect(&psql, &conn).await?;
        Ok::<_, Error>((psql, state))
    };
    // The newest snapshot is picked from the listing of current objects; the stored
    // versions (a rewritten or hidden snapshot) are listed meanwhile and checked before
    // anything is committed. A named snapshot is picked from the full catalog. The new
    // database (beside the target, which it does not touch) is created while the target
    // is inspected and on until the restore's own first round trips to the storage (the
    // facts, the dump's download) are under way; if the gate below refuses, or anything
    // fails before the restore takes it over, it is dropped again once created.
    let pick = async {
        let (entry, recheck) = if opts.snapshot.is_none() {
            snapshot::pick_latest_early(storage.clone(), plan).await?
        } else {
            (
                pick_confirmed(plan, storage.as_ref(), opts, gate).await?,
                None,
            )
        };
        let made = if entry.manifest.source.kind == "postgres" {
            let (psql, admin, fresh, m) = (
                psql_path.clone().await,
                admin.clone(),
                fresh.clone(),
                entry.manifest.clone(),
            );
            Some(tokio::spawn(async move {
                match psql {
                    Ok(psql) => create_database(&psql, &admin, &fresh, &m).await,
                    Err(e) => Err(Error::failed(e)),
                }
            }))
        } else {
            None
        };
        Ok::<_, Error>((entry, recheck, made))
    };
    let (picked, target) = tokio::join!(pick, target);
    let (mut entry, recheck, mut made) = picked?;
    // Dropped if the run is stopped before the restore into it takes it over (`IF EXISTS`:
    // it may not have been created).
    let mut early = ScratchDb {
        psql: match (&made, psql_path.clone().await) {
            (Some(_), Ok(p)) => Some(p),
            _ => None,
        },
        admin: admin.clone(),
        name: fresh.clone(),
    };
    let ready = (|| {
        let identities = Arc::new(pipeline::load_identities(
            &plan.identity_path(opts.identity.as_deref())?,
        )?);
        let (psql, state) = target?;
        // The gate.
        let needs_confirmation =
            state.objects > 0 || (state.exists && own_target && plan.is_production());
        let what = format!(
            "target database {db} on {}:{} exists and holds {} objects{}",
            conn.url.host(),
            conn.url.port(),
            state.objects,
            if plan.is_production() && own_target {
                " (environment = \"production\")"
            } else {
                ""
            }
        );
        if needs_confirmation {
            confirm(plan, &entry, what.clone(), &db, opts.yes, gate)?;
        }
        Ok::<_, Error>((identities, psql, state, needs_confirmation, what))
    })();
    let (identities, psql, state, needs_confirmation, what) = match ready {
        Ok(v) => v,
        Err(e) => {
            // Nothing ran in the new database: it goes at once, once its creation is over.
            if let Some(p) = early.psql.take() {
                if let Some(creating) = made.take() {
                    let _ = creating.await;
                }
                drop_database(&p, &admin, &fresh).await;
            }
            return Err(e);
        }
    };
    let _ = restore_tools.await;
    let ctx = Beside {
        plan,
        storage: &storage,
        opts,
        conn: &conn,
        psql: &psql,
        state: &state,
        db: &db,
        identities,
        admin,
        toast_lz4,
    };
    // The full catalog's pick, once the versions are listed; shared by the roles (they wait
    // for it, see `restore`) and the commit below.
    let verdict = recheck.map(|r| {
        use futures_util::FutureExt;
        async move { r.finish().await.and_then(|x| x).map_err(Arc::new) }
            .boxed()
            .shared()
    });
    early.psql = None;
    let mut done = ctx.restore(&entry, &fresh, verdict.clone(), made).await;
    // Nothing is swapped in before the full catalog agrees with the early pick: the same
    // snapshot, nothing in it rewritten or hidden. Otherwise (a bucket writer at work) the
    // new database is dropped and the full catalog's pick is restored, from the versions
    // it names.
    if let Some(verdict) = verdict {
        let full = match verdict.await {
            Ok(full) => full,
            Err(e) => {
                if let Ok(r) = done {
                    ctx.abandon(r).await;
                }
                return Err(Error::failed(format!(
                    "{}; restore of job {} failed; the target {db} was not changed",
                    e.message(),
                    plan.name
                )));
            }
        };
        if !snapshot::early_pick_stands(&entry, &full) {
            if let Ok(r) = done {
                ctx.abandon(r).await;
            }
            tracing::warn!(
                "job {}: the stored versions show snapshot {} (picked: {}) or its objects rewritten or hidden; \
                 restoring {} from the versions its manifest describes",
                plan.name,
                full.id,
                entry.id,
                full.id
            );
            if needs_confirmation && full.id != entry.id {
                confirm(plan, &full, what, &db, opts.yes, gate)?;
            }
            entry = full;
            done = ctx
                .restore(
                    &entry,
                    &db_name(&db, &format!("_restoring_{stamp}_2")),
                    None,
                    None,
                )
                .await;
        }
    }
    let r = done?;
    let fresh = r.fresh.name.clone();
    let admin = &ctx.admin;
    // From here on the new database is the restored data: never dropped automatically.
    let mut scratch = r.fresh;
    scratch.psql = None;
    let mut previous_kept_as = None;
    if state.exists {
        let aside = db_name(&db, &format!("_pre_restore_{stamp}"));
        let sql = format!(
            "{}BEGIN; ALTER DATABASE {} RENAME TO {}; ALTER DATABASE {} RENAME TO {}; COMMIT;",
            wait_for_sessions_to_end(&fresh, Some(&db)),
            quote_ident(&db),
            quote_ident(&aside),
            quote_ident(&fresh),
            quote_ident(&db)
        );
        pg::query(&psql, admin, &sql).await.map_err(|e| {
            Error::failed(format!(
                "the snapshot was restored completely into database {fresh}, but it could not be swapped in \
                 for {db}: {e}. Close the sessions connected to {db} and run again, or point the \
                 application at {fresh}"
            ))
        })?;
        if state.objects == 0 {
            drop_database(&psql, admin, &aside).await;
        } else {
            previous_kept_as = Some(aside);
        }
    } else {
        pg::query(
            &psql,
            admin,
            &format!(
                "{}ALTER DATABASE {} RENAME TO {}",
                wait_for_sessions_to_end(&fresh, None),
                quote_ident(&fresh),
                quote_ident(&db)
            ),
        )
        .await
        .ctx(format!("renaming the restored database {fresh} to {db}"))?;
    }
    Ok(Report {
        job: plan.name.clone(),
        snapshot: entry.id.clone(),
        kind: "postgres".into(),
        target: conn.url.to_string(),
        created: !state.exists,
        previous_kept_as,
        files: None,
        roles_restored: r.roles.is_some(),
        roles: r.roles,
        restored_bytes: r.restored_bytes,
        download_ms: r.download_ms,
        restore_ms: r.restore_ms,
        duration_ms: clock.elapsed().as_millis() as u64,
        mode: Some(r.mode.into()),
        parallel_load: r.parallel_load,
        blocks_loaded_while_streaming: r.blocks_loaded,
        repaired: Vec::new(),
    })
}

/// What a postgres restore beside the target needs: the job, where the snapshot is read
/// from, the target server and what it holds.
struct Beside<'a> {
    plan: &'a JobPlan,
    storage: &'a Arc<dyn Storage>,
    opts: &'a Options,
    conn: &'a Conn,
    psql: &'a Path,
    state: &'a pg::restore::TargetState,
    db: &'a str,
    identities: Arc<Vec<Box<dyn age::Identity + Send + Sync>>>,
    admin: Conn,
    /// TOASTed values compressed with lz4 where the server would use pglz.
    toast_lz4: bool,
}

/// The full catalog's pick behind an early pick, awaited by more than one.
type Verdict = futures_util::future::Shared<
    futures_util::future::BoxFuture<'static, std::result::Result<Entry, Arc<Error>>>,
>;

/// A snapshot restored completely into a new database beside the target, not swapped in.
struct Restored {
    /// The new database; armed (dropped if this is dropped) until it is swapped in.
    fresh: ScratchDb,
    roles: Option<crate::postgres::roles::RolesReport>,
    restored_bytes: u64,
    download_ms: u64,
    restore_ms: u64,
    mode: &'static str,
    parallel_load: Vec<crate::postgres::load::Report>,
    blocks_loaded: Option<usize>,
}

impl Beside<'_> {
    /// Drop a restored database that is not to be swapped in.
    async fn abandon(&self, mut r: Restored) {
        r.fresh.psql = None;
        drop_database(self.psql, &self.admin, &r.fresh.name).await;
    }

    /// Restore `entry` into the new database `fresh` beside the target (staged, streamed
    /// or progressive): every object checked, the new database dropped on any fault. An
    /// early pick comes with the full catalog's `verdict`: stored roles of a snapshot no
    /// signature vouches for are applied (they reach beyond the new database) only once it
    /// agrees.
    async fn restore(
        &self,
        entry: &Entry,
        fresh: &str,
        verdict: Option<Verdict>,
        made: Option<tokio::task::JoinHandle<Result<()>>>,
    ) -> Result<Restored> {
        let Beside {
            plan,
            storage,
            opts,
            conn,
            psql,
            state,
            db,
            ..
        } = *self;
        let admin = &self.admin;
        let identities = self.identities.clone();
        let m = &entry.manifest;
        if m.source.kind != "postgres" {
            return Err(Error::failed(format!(
                "snapshot {} of job {} is a {} snapshot, not postgres",
                entry.id, plan.name, m.source.kind
            )));
        }
        // Stage and check every object before touching the target. The small ones first: the
        // facts say whether the dump is worth restoring in parallel.
        let staging = make_staging(opts.staging.as_deref())?;
        let dl_clock = Instant::now();
        let mut restored_bytes = 0;
        let dump_path = staging.path().join("dump.pgdump");
        let dump = m.object("dump").ok_or_else(|| {
            Error::failed(format!(
                "snapshot {} has no dump object in its manifest",
                entry.id
            ))
        })?;
        // The names and tools of the restore beside the target.
        let dump_major = m
            .source
            .pg_dump_version
            .as_deref()
            .and_then(|v| v.split('.').next()?.parse().ok())
            .unwrap_or(state.server_major);
        let tools = pg::tools_for("pg_restore", dump_major.max(state.server_major))?;
        // Armed before the database is created, dropped on a fault only when this run created
        // it.
        let mut scratch = ScratchDb {
            psql: Some(psql.to_path_buf()),
            admin: admin.clone(),
            name: fresh.to_string(),
        };
        let created = std::sync::atomic::AtomicBool::new(false);

        // Side by side, each a round trip or more to the storage or the server: the two small
        // objects (the facts say how the dump is best restored), the new database (beside the
        // target, which nothing here touches), and the dump's download opened when it may be
        // restored as it streams.
        let globals = async {
            match m.object("globals").filter(|_| !opts.skip_roles) {
                Some(g) => {
                    let p = staging.path().join("globals.sql");
                    fetch(storage.as_ref(), entry, g, identities.clone(), &p).await?;
                    Ok::<_, Error>(Some(p))
                }
                None => Ok(None),
            }
        };
        let facts = async {
            match m.object("facts") {
                Some(f) => {
                    let p = staging.path().join("facts.json");
                    fetch(storage.as_ref(), entry, f, identities.clone(), &p).await?;
                    Ok::<_, Error>(read_dump_facts(&p))
                }
                None => Ok(None),
            }
        };
        let create = async {
            match made {
                // Being created since the snapshot was picked.
                Some(creating) => creating.await.map_err(|e| {
                    Error::failed(format!("creating database {fresh} stopped: {e}"))
                })??,
                None => create_database(psql, admin, fresh, m).await?,
            }
            created.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, Error>(())
        };
        let open_early = async {
            if may_stream(dump) {
                open_object(storage.as_ref(), entry, dump).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let (globals_path, facts, opened, made) = tokio::join!(globals, facts, open_early, create);
        // A damaged snapshot is named before a server that would not create the database.
        let early = globals_path
            .and_then(|g| Ok((g, facts?, opened?)))
            .and_then(|v| {
                made.map(|_| v).map_err(|e| {
                    e.context(format!(
                        "restore of job {} failed; the target {db} was not changed",
                        plan.name
                    ))
                })
            });
        let (globals_path, facts, mut opened) = match early {
            Ok(v) => v,
            Err(e) => {
                scratch.psql = None;
                if created.load(std::sync::atomic::Ordering::SeqCst) {
                    drop_database(psql, admin, fresh).await;
                }
                return Err(e);
            }
        };
        // Sessions for the big tables of a streamed restore.
        let sessions = load_sessions();
        let how = plan_restore(facts.as_ref(), dump, sessions, state.server_major);
        let mut download_ms = dl_clock.elapsed().as_millis() as u64;

        // Restore beside the target, then swap.
        let mut rs_clock = Instant::now();
        // The stored roles, before anything is restored into the new database.
        let prepare = async {
            match &globals_path {
                Some(g) => {
                    if let Some(v) = verdict.filter(|_| entry.signed_by.is_none()) {
                        let stands = v
                            .await
                            .map_err(|e| Error::failed(e.message()))
                            .map(|full| snapshot::early_pick_stands(entry, &full))?;
                        if !stands {
                            return Err(Error::failed(format!(
                                "snapshot {} was not what the full catalog picks; its roles were not applied",
                                entry.id
                            )));
                        }
                    }
                    Ok(Some(crate::postgres::roles::apply(psql, admin, g).await?))
                }
                None => Ok::<_, Error>(None),
            }
        };
        let fresh_conn = conn.with_dbname(fresh).with_options(session_options(
            self.toast_lz4 && state.toast_pglz_lz4_built,
            state.server_major,
        ));
        let streamed_bytes = std::sync::atomic::AtomicU64::new(0);
        let mut parallel_load = Vec::new();
        let mut blocks_loaded = None;
        let split = (!how.split.is_empty() || how.split_blobs).then(|| {
            (
                psql.to_path_buf(),
                how.split.clone(),
                sessions,
                how.split_blobs,
            )
        });
        // The dump's download: the one opened early, or opened now.
        let dump_reader = |early: Option<(String, crate::storage::Reader)>| async move {
            match early {
                Some(o) => Ok(o),
                None => open_object(storage.as_ref(), entry, dump).await,
            }
        };
        let outcome = async {
            if how.mode == Mode::Progressive {
                // Tables load side by side as they arrive, into the new database only; the
                // rest and the post-data section once the hash is proven; any fault drops the
                // new database. The roles are applied while the download starts.
                let (key, reader) = dump_reader(opened.take()).await?;
                let (n, loaded, roles) = pg_restore_progressive(
                    prepare,
                    &tools,
                    &fresh_conn,
                    reader,
                    identities.clone(),
                    &key,
                    dump,
                    opts.no_owner,
                    sessions,
                    dump_path.clone(),
                    staging.path().to_path_buf(),
                )
                .await?;
                streamed_bytes.store(n, std::sync::atomic::Ordering::Relaxed);
                blocks_loaded = Some(loaded);
                return Ok(roles);
            }
            let roles = prepare.await?;
            if how.mode == Mode::Stream {
                // Restored while it downloads, into the new database only; the hash is proven
                // before the swap below, and any fault drops the new database.
                let (key, reader) = dump_reader(opened.take()).await?;
                let (n, report) = pg_restore_streaming(
                    &tools,
                    &fresh_conn,
                    reader,
                    identities.clone(),
                    &key,
                    dump,
                    opts.no_owner,
                    split,
                    Some(dump_path.clone()),
                )
                .await?;
                streamed_bytes.store(n, std::sync::atomic::Ordering::Relaxed);
                parallel_load = report;
                // Every byte is proven (the hash matched): indexes, constraints and triggers
                // from the staged copy, several at a time.
                pg_restore_post_data(&tools, &fresh_conn, &dump_path, opts.no_owner).await?;
            } else {
                // Staged: downloaded and proven whole, then restored.
                drop(opened.take());
                restored_bytes += fetch(
                    storage.as_ref(),
                    entry,
                    dump,
                    identities.clone(),
                    &dump_path,
                )
                .await?;
                download_ms = dl_clock.elapsed().as_millis() as u64;
                rs_clock = Instant::now();
                pg_restore(&tools, &fresh_conn, &dump_path, opts.no_owner).await?;
            }
            Ok::<_, Error>(roles)
        }
        .await;
        let roles = match outcome {
            Ok(r) => r,
            Err(e) => {
                scratch.psql = None;
                if created.load(std::sync::atomic::Ordering::SeqCst) {
                    drop_database(psql, admin, fresh).await;
                }
                return Err(e.context(format!(
                    "restore of job {} failed; the target {db} was not changed",
                    plan.name
                )));
            }
        };
        restored_bytes += streamed_bytes.load(std::sync::atomic::Ordering::Relaxed);
        Ok(Restored {
            fresh: scratch,
            roles,
            restored_bytes,
            download_ms,
            restore_ms: rs_clock.elapsed().as_millis() as u64,
            mode: how.mode.name(),
            parallel_load,
            blocks_loaded,
        })
    }
}

/// The snapshot to restore; a foreign one (only when named with `--allow-foreign`) needs
/// the operator to confirm, `--yes` included: it may have been forged by a bucket writer.
/// SQL that waits (at most a second) until no session is connected to database `fresh`:
/// the restore's own sessions end with their programs, but the server retires them a
/// moment later, and a rename that finds one still there sleeps 100 ms before it looks
/// again. Autovacuum workers are not waited for (a worker often starts on the freshly
/// loaded tables, and waiting for it cost a whole second in about one restore in five):
/// those on `fresh` and on `old` (the database swapped aside, if any) are stopped, and the
/// block waits (at most half a second) until they are gone. The rename would stop them
/// itself, but then it sleeps 100 ms before it looks again, and a worker was on the new
/// database at the end of nearly every restore of a few hundred MiB. Stopping a worker
/// takes a superuser; for anyone else the rename does it, as before. Empty when a name
/// cannot be quoted inside the block.
fn wait_for_sessions_to_end(fresh: &str, old: Option<&str>) -> String {
    const TAG: &str = "$backstop_wait$";
    let lit = quote_literal(fresh);
    let names = std::iter::once(fresh)
        .chain(old)
        .map(quote_literal)
        .collect::<Vec<_>>()
        .join(", ");
    if names.contains("$backstop_wait") {
        return String::new();
    }
    let workers = format!(
        "FROM pg_stat_activity WHERE datname IN ({names}) AND backend_type = 'autovacuum worker'"
    );
    format!(
        "DO {TAG}BEGIN FOR i IN 1..500 LOOP PERFORM pg_stat_clear_snapshot(); \
         EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = {lit} \
         AND backend_type IS DISTINCT FROM 'autovacuum worker'); \
         PERFORM pg_sleep(0.002); END LOOP; \
         BEGIN PERFORM pg_terminate_backend(pid) {workers}; \
         FOR i IN 1..250 LOOP PERFORM pg_stat_clear_snapshot(); \
         EXIT WHEN NOT EXISTS (SELECT 1 {workers}); PERFORM pg_sleep(0.002); END LOOP; \
         EXCEPTION WHEN OTHERS THEN NULL; END; END{TAG}; "
    )
}

async fn pick_confirmed(
    plan: &JobPlan,
    storage: &dyn Storage,
    opts: &Options,
    gate: Gate<'_>,
) -> Result<Entry> {
    let entry = snapshot::pick(storage, plan, opts.snapshot.as_deref(), opts.allow_foreign).await?;
    if let Some(why) = &entry.foreign {
        let prompt = format!(
            "Snapshot {} of job {} is FOREIGN ({why}): anyone who can write to {} could have made it. Restore it anyway?",
            entry.id,
            plan.name,
            storage.describe()
        );
        let refusal = format!(
            "snapshot {} is foreign ({why}); restoring it needs --allow-foreign and --yes (or a confirmation on a terminal); nothing was changed",
            entry.id
        );
        gate(&GateRequest {
            prompt: &prompt,
            expected: "foreign",
            refusal: &refusal,
        })?;
        tracing::warn!(
            "job {}: restoring FOREIGN snapshot {} as confirmed ({why})",
            plan.name,
            entry.id
        );
    }
    Ok(entry)
}

/// Ask the confirmation gate before replacing a non-empty target: a production job needs
/// the job's name typed, any other the target's name; `--yes` answers for the operator.
fn confirm(
    plan: &JobPlan,
    entry: &Entry,
    what: String,
    target_name: &str,
    yes: bool,
    gate: Gate<'_>,
) -> Result<bool> {
    if yes {
        return Ok(true);
    }
    let prompt = format!(
        "Restore snapshot {} of job {} over it? {what}; the current content will be kept aside until the new one is in place.",
        entry.id, plan.name
    );
    let expected = if plan.is_production() {
        plan.name.as_str()
    } else {
        target_name
    };
    let refusal = format!(
        "refusing to restore job {} over a non-empty target: {what}. Pass --yes to replace it, \
         or --to another target; nothing was changed",
        plan.name
    );
    gate(&GateRequest {
        prompt: &prompt,
        expected,
        refusal: &refusal,
    })?;
    Ok(true)
}

/// The previous content of a volume target, moved aside by the swap: removed when the
/// operator confirmed replacing it (or it was empty), else kept and named in the report.
fn dispose_previous(old: &Path, remove: bool) -> Option<String> {
    if remove {
        let _ = crate::volume::target::make_writable(old);
        match std::fs::remove_dir_all(old) {
            Ok(()) => return None,
            Err(e) => tracing::warn!(
                "could not remove the previous content {}: {e}",
                old.display()
            ),
        }
    }
    Some(old.display().to_string())
}

/// Restore a volume snapshot: extract beside the target, check, swap.
async fn run_volume(
    plan: &JobPlan,
    vol: &crate::config::VolumeSource,
    storage: Arc<dyn Storage>,
    opts: &Options,
    clock: Instant,
    gate: Gate<'_>,
) -> Result<Report> {
    use crate::volume::target::{self as tv, TargetState};
    let target = match &opts.to {
        Some(to) if to.contains("://") => {
            return Err(Error::config(format!(
                "--to {to:?}: job {} is a volume job, so --to takes a directory path",
                plan.name
            )));
        }
        Some(to) => PathBuf::from(to),
        None => vol.path.clone(),
    };
    if !target.is_absolute() || target.parent().is_none() || target.file_name().is_none() {
        return Err(Error::config(format!(
            "the restore target {} must be an absolute path below /",
            target.display()
        )));
    }
    let entry = pick_confirmed(plan, storage.as_ref(), opts, gate).await?;
    let m = &entry.manifest;
    if m.source.kind != "volume" {
        return Err(Error::failed(format!(
            "snapshot {} of job {} is a {} snapshot, not a volume",
            entry.id, plan.name, m.source.kind
        )));
    }
    let identities = Arc::new(pipeline::load_identities(
        &plan.identity_path(opts.identity.as_deref())?,
    )?);

    let state = tv::inspect(&target)?;
    let own_target = opts.to.is_none();
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let needs = matches!(state, TargetState::NonEmpty(_))
        || (state != TargetState::Missing && own_target && plan.is_production());
    let confirmed = if needs {
        let what = format!(
            "target directory {} exists{}",
            target.display(),
            match state {
                TargetState::NonEmpty(n) => format!(" and holds {n} entries"),
                _ => String::new(),
            }
        );
        confirm(plan, &entry, what, &name, opts.yes, gate)?
    } else {
        opts.yes
    };

    // The facts (file list and hashes) first: small, and needed to check the tree.
    let dl_clock = Instant::now();
    let staging_files = make_staging(opts.staging.as_deref())?;
    let facts_obj = m.object("facts").ok_or_else(|| {
        Error::failed(format!(
            "snapshot {} has no file list (facts object)",
            entry.id
        ))
    })?;
    let facts_path = staging_files.path().join("facts.json");
    fetch(
        storage.as_ref(),
        &entry,
        facts_obj,
        identities.clone(),
        &facts_path,
    )
    .await?;
    let facts: crate::volume::source::VolumeFacts = serde_json::from_slice(
        &std::fs::read(&facts_path)
            .map_err(|e| Error::failed(format!("reading the file list: {e}")))?,
    )
    .map_err(|e| Error::failed(format!("snapshot {}: unreadable file list: {e}", entry.id)))?;

    // Extract beside the target, on the same filesystem; into a mount point, inside it.
    let parent = target.parent().expect("checked above").to_path_buf();
    std::fs::create_dir_all(&parent)
        .map_err(|e| Error::failed(format!("cannot create {}: {e}", parent.display())))?;
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let mount_point = tv::is_mount_point(&target);
    let staging = if mount_point {
        target.join(format!(".backstop-new-{stamp}"))
    } else {
        parent.join(format!(".{name}.backstop-new-{stamp}"))
    };
    // Private while it fills: the tree gets its recorded mode only once it is complete.
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(&staging)
    }
    .map_err(|e| {
        Error::failed(format!(
            "cannot create the staging directory {}: {e}",
            staging.display()
        ))
    })?;
    let mut guard = tv::DirGuard(Some(staging.clone()));
    let dump = m.object("dump").ok_or_else(|| {
        Error::failed(format!(
            "snapshot {} has no data object in its manifest",
            entry.id
        ))
    })?;
    let key = snapshot::object_key(&plan.name, &entry.id, &dump.name);
    let reader = storage.get(&key).await?.ok_or_else(|| {
        Error::failed(format!(
            "stored object {key} is missing from {}: snapshot {} is damaged; nothing was restored",
            storage.describe(),
            entry.id
        ))
    })?;
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let (stored, sha) = (dump.stored_bytes, dump.sha256.clone());
    let (dst, facts2, ids) = (staging.clone(), facts.clone(), identities.clone());
    tokio::task::spawn_blocking(move || -> Result<u64> {
        let expect = Expect {
            name: &key,
            stored_bytes: stored,
            sha256: &sha,
        };
        let n = pipeline::decode_with(bridge, &ids, &expect, |r| tv::extract(r, &dst, &facts2))?;
        tv::verify(&dst, &facts2)?;
        Ok(n)
    })
    .await
    .map_err(|e| Error::failed(format!("extraction task failed: {e}")))?
    .map_err(|e| {
        e.context(format!(
            "restore of job {} failed; {} was not changed",
            plan.name,
            target.display()
        ))
    })?;
    let download_ms = dl_clock.elapsed().as_millis() as u64;

    // Swap.
    let sw_clock = Instant::now();
    let mut previous_kept_as = None;
    match state {
        TargetState::Missing => {
            std::fs::rename(&staging, &target).map_err(|e| {
                Error::failed(format!(
                    "moving the restored tree into {}: {e}",
                    target.display()
                ))
            })?;
            guard.0 = None;
        }
        _ if mount_point => {
            let old_name = format!(".backstop-old-{stamp}");
            let old = tv::swap_into_mount_point(&staging, &target, &old_name, &facts)
                .map_err(|e| {
                    e.context(format!(
                        "swapping the restored tree into the mount point {} (the previous entries are in {old_name} inside it)",
                        target.display()
                    ))
                })?;
            guard.0 = None;
            previous_kept_as = dispose_previous(&old, confirmed || state == TargetState::Empty);
        }
        _ => {
            tv::exchange(&staging, &target).map_err(|e| {
                Error::failed(format!(
                    "swapping the restored tree into {}: {e}; the target was not changed",
                    target.display()
                ))
            })?;
            // `staging` now holds the previous content.
            let old = PathBuf::from(format!("{}.backstop-old-{stamp}", target.display()));
            guard.0 = None;
            std::fs::rename(&staging, &old).map_err(|e| {
                Error::failed(format!(
                    "keeping the previous content as {}: {e}",
                    old.display()
                ))
            })?;
            previous_kept_as = dispose_previous(&old, confirmed || state == TargetState::Empty);
        }
    }
    Ok(Report {
        job: plan.name.clone(),
        snapshot: entry.id.clone(),
        kind: "volume".into(),
        target: target.display().to_string(),
        created: state == TargetState::Missing,
        previous_kept_as,
        files: Some(facts.files),
        roles_restored: false,
        roles: None,
        restored_bytes: facts.bytes,
        download_ms,
        restore_ms: sw_clock.elapsed().as_millis() as u64,
        duration_ms: clock.elapsed().as_millis() as u64,
        mode: None,
        parallel_load: Vec::new(),
        blocks_loaded_while_streaming: None,
        repaired: Vec::new(),
    })
}

fn make_staging(dir: Option<&Path>) -> Result<tempfile::TempDir> {
    let mut b = tempfile::Builder::new();
    b.prefix("backstop-restore-");
    let t = match dir {
        Some(d) => b.tempdir_in(d),
        None => b.tempdir(),
    };
    let t = t.map_err(|e| {
        Error::failed(format!(
            "cannot create a staging directory: {e} (choose one with --staging DIR)"
        ))
    })?;
    // pg_restore may run as another user than us only through the server; the files stay private.
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::wait_for_sessions_to_end;

    #[test]
    fn the_wait_before_a_rename_quotes_the_name_and_never_breaks_its_block() {
        let sql = wait_for_sessions_to_end("app_restoring_1", None);
        assert!(sql.contains("datname = 'app_restoring_1'"), "{sql}");
        assert!(
            sql.starts_with("DO $backstop_wait$") && sql.trim_end().ends_with("$backstop_wait$;")
        );
        let sql = wait_for_sessions_to_end("it's", Some("app"));
        assert!(sql.contains("datname = 'it''s'"), "{sql}");
        // Only autovacuum workers, only on the two databases, are stopped; a refusal
        // (not a superuser) ends the stopping, not the block.
        assert!(
            sql.contains(
                "pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname IN ('it''s', 'app') \
                 AND backend_type = 'autovacuum worker'"
            ),
            "{sql}"
        );
        assert!(sql.contains("EXCEPTION WHEN OTHERS THEN NULL; END; END$backstop_wait$"));
        assert_eq!(sql.matches("pg_terminate_backend").count(), 1, "{sql}");
        // A name that could close the block gets no wait (the server's own wait remains).
        assert_eq!(
            wait_for_sessions_to_end("x$backstop_wait$; DROP DATABASE y; --", None),
            ""
        );
        assert_eq!(
            wait_for_sessions_to_end("app_restoring_1", Some("x$backstop_wait$")),
            ""
        );
    }
}
