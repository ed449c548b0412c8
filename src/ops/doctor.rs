//! `backstop doctor [JOB]`: checks what a backup needs and what could lose it. Per job:
//! the job file, the source (database reachable, pg_dump/pg_restore for its version; or
//! the volume readable), storage reachable with a canary object that round-trips, whether
//! these credentials can delete backups (the canary is deleted, every version of it),
//! bucket versioning and Object Lock, a private age key on this host, clock skew against
//! the storage, and the newest snapshot's age. Warnings exit 0; errors exit 1.

use std::path::Path;

use bytes::Bytes;
use serde::Serialize;

use crate::config::{JobPlan, SourcePlan, StorageLocation};
use crate::error::Result;
use crate::postgres::Conn;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Ok,
    Warn,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub job: String,
    pub check: String,
    pub status: Status,
    pub detail: String,
}

struct Report<'a> {
    job: &'a str,
    checks: Vec<Check>,
}

impl Report<'_> {
    fn add(&mut self, check: &str, status: Status, detail: impl Into<String>) {
        self.checks.push(Check {
            job: self.job.to_string(),
            check: check.to_string(),
            status,
            detail: detail.into(),
        });
    }
}

/// Every check of the named job (or of every job in `dir`).
pub(crate) async fn run(dir: &Path, job: Option<&str>) -> Result<Vec<Check>> {
    let names = match job {
        Some(j) => vec![j.to_string()],
        None => crate::config::job_names(dir)?,
    };
    let mut all = Vec::new();
    for name in names {
        let mut r = Report {
            job: &name,
            checks: Vec::new(),
        };
        match crate::config::load(dir, &name) {
            Ok(plan) => {
                r.add("job file", Status::Ok, plan.file.display().to_string());
                check_job(&plan, &mut r).await;
            }
            Err(e) => r.add("job file", Status::Error, e.message()),
        }
        all.extend(r.checks);
    }
    Ok(all)
}

/// A cluster job needs its WAL: archive_command calling `backstop wal-push JOB`, or
/// `wal_stream = true` and a role that may replicate.
async fn check_archiving(plan: &JobPlan, stream: bool, conn: &Conn, r: &mut Report<'_>) {
    let Ok(psql) = crate::postgres::any_psql() else {
        return;
    };
    let sql = "SELECT current_setting('archive_mode'), current_setting('archive_command'), \
               (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)";
    let row = match crate::postgres::query(&psql, conn, sql).await {
        Ok(rows) => rows.into_iter().next().unwrap_or_default(),
        Err(e) => {
            r.add(
                "wal",
                Status::Warn,
                format!("cannot read the archive settings: {}", e.message()),
            );
            return;
        }
    };
    let (mode, command, replicates) = (
        row.first().map(String::as_str).unwrap_or(""),
        row.get(1).map(String::as_str).unwrap_or(""),
        row.get(2).is_some_and(|v| v == "t"),
    );
    let pushes = mode != "off"
        && command.contains("wal-push")
        && command.split_whitespace().any(|w| w == plan.name);
    if stream {
        if replicates {
            r.add(
                "wal",
                Status::Ok,
                "wal_stream = true and the role may replicate: the daemon streams the WAL",
            );
        } else {
            r.add("wal", Status::Error, "wal_stream = true but the role of source.url may not replicate (ALTER ROLE ... REPLICATION)");
        }
    } else if pushes {
        r.add(
            "wal",
            Status::Ok,
            format!("archive_command stores the WAL: {command}"),
        );
    } else {
        r.add(
            "wal",
            Status::Warn,
            format!(
                "no WAL reaches job {0}: set archive_mode = on and archive_command = 'backstop wal-push {0} %p' on the server, \
                 or wal_stream = true in [source] (archive_mode = {mode}, archive_command = {command:?}); without WAL only the base backups' own points restore",
                plan.name
            ),
        );
    }
}

async fn check_job(plan: &JobPlan, r: &mut Report<'_>) {
    match &plan.source {
        SourcePlan::Postgres(src) => {
            let conn = Conn::new(src.url.clone(), src.password_file.clone());
            match crate::postgres::server_info(&conn).await {
                Ok(info) => {
                    r.add(
                        "database",
                        Status::Ok,
                        format!(
                            "{}:{}/{} reachable: {}",
                            src.url.host(),
                            src.url.port(),
                            src.url.dbname(),
                            info.version
                        ),
                    );
                    let major = info.version_num / 10_000;
                    for tool in ["pg_dump", "pg_restore"] {
                        match crate::postgres::tools_for(tool, major) {
                            Ok(t) if t.major == major => r.add(
                                tool,
                                Status::Ok,
                                format!(
                                    "{} {} matches the server's major {major}",
                                    tool, t.version
                                ),
                            ),
                            Ok(t) => r.add(
                                tool,
                                Status::Ok,
                                format!(
                                    "{} {} (newer than the server's {major}: fine for dumps of it)",
                                    tool, t.version
                                ),
                            ),
                            Err(e) => r.add(tool, Status::Error, e.message()),
                        }
                    }
                }
                Err(e) => r.add("database", Status::Error, e.message()),
            }
        }
        SourcePlan::Cluster(src) => {
            let conn = Conn::new(src.url.clone(), src.password_file.clone());
            match crate::postgres::server_info(&conn).await {
                Ok(info) => {
                    r.add(
                        "cluster",
                        Status::Ok,
                        format!("{} reachable (PostgreSQL {})", conn.url, info.version),
                    );
                    let major = info.version_num / 10_000;
                    let tool = if src.wal_stream {
                        "pg_receivewal"
                    } else {
                        "pg_basebackup"
                    };
                    for t in ["pg_basebackup", tool] {
                        match crate::postgres::tools_for(t, major) {
                            Ok(found) => r.add(t, Status::Ok, format!("{t} {}", found.version)),
                            Err(e) => r.add(t, Status::Error, e.message()),
                        }
                    }
                    check_archiving(plan, src.wal_stream, &conn, r).await;
                }
                Err(e) => r.add("cluster", Status::Error, e.message()),
            }
        }
        SourcePlan::Volume(v) => {
            let p = v.snapshot_path.as_ref().unwrap_or(&v.path);
            match std::fs::read_dir(p) {
                Ok(_) => r.add("volume", Status::Ok, format!("{} readable", p.display())),
                Err(e) if v.snapshot_path.is_some() && !v.pre.is_empty() => r.add(
                    "volume",
                    Status::Warn,
                    format!(
                        "{}: {e} (it may appear only once `pre` has run)",
                        p.display()
                    ),
                ),
                Err(e) => r.add("volume", Status::Error, format!("{}: {e}", p.display())),
            }
        }
    }

    // A private key on a host that only backs up can read every backup if taken.
    let identity = plan
        .encryption
        .identity_file
        .clone()
        .or_else(crate::config::env::identity_file);
    match identity {
        Some(f) if f.is_file() => r.add(
            "private key",
            Status::Warn,
            format!(
                "the age identity {} is on this host: whoever takes this host can decrypt every snapshot. \
                 Keep it only where restores and drills run (or pass --identity there)",
                f.display()
            ),
        ),
        _ => r.add("private key", Status::Ok, "no age identity on this host: backups are write-only here"),
    }
    signing(plan, r);

    for sp in &plan.storages {
        check_storage(plan, sp, r).await;
    }
    same_provider(plan, r);
    let Ok(storage) = crate::snapshot::replicas::open(plan, None).await else {
        return;
    };
    match crate::snapshot::catalog(storage.as_ref(), plan).await {
        Ok(entries) => match entries
            .first()
            .and_then(|e| e.manifest.finished_at().map(|t| (e.id.clone(), t)))
        {
            Some((id, t)) => {
                let age = jiff::Timestamp::now().duration_since(t);
                let policy = plan.retention.clone().unwrap_or_default();
                let limit =
                    crate::snapshot::prune::stale_after(plan, &policy, jiff::Timestamp::now());
                let stale = limit.is_some_and(|l| age > l);
                r.add(
                    "newest snapshot",
                    if stale { Status::Warn } else { Status::Ok },
                    format!(
                        "{id}, {} old{}",
                        crate::text::human_age(age),
                        if stale {
                            " — older than the schedule allows: are backups failing?"
                        } else {
                            ""
                        }
                    ),
                );
            }
            None => r.add("newest snapshot", Status::Warn, "no complete snapshot yet"),
        },
        Err(e) => r.add("newest snapshot", Status::Error, e.message()),
    }
}

/// One storage's checks: canary write, read back and delete, clock, Object Lock, whether
/// it is off the host. Check names carry the storage's name when the job has several.
async fn check_storage(
    plan: &JobPlan,
    sp: &crate::config::StoragePlan,
    r: &mut Report<'_>,
) -> Option<()> {
    let several = plan.storages.len() > 1;
    let at = |check: &str| {
        if several {
            format!("{check} [{}]", sp.name)
        } else {
            check.to_string()
        }
    };
    let storage = match crate::storage::open(sp).await {
        Ok(s) => s,
        Err(e) => {
            r.add(&at("storage"), Status::Error, e.message());
            return None;
        }
    };
    let s3 = match sp.location {
        StorageLocation::S3 { .. } => crate::storage::s3::S3Storage::from_plan(sp, None)
            .await
            .ok(),
        StorageLocation::File { .. } => None,
    };
    // Canary: write, read back, then try to delete it for good.
    let mut rnd = [0u8; 6];
    let _ = getrandom::fill(&mut rnd);
    let key = format!("{}/doctor/canary-{}", plan.name, hex::encode(rnd));
    let body = format!("backstop doctor canary {}", jiff::Timestamp::now());
    let before = jiff::Timestamp::now();
    if let Err(e) = storage.put_bytes(&key, Bytes::from(body.clone())).await {
        r.add(
            &at("storage"),
            Status::Error,
            format!("cannot write a canary object: {}", e.message()),
        );
        return None;
    }
    let after = jiff::Timestamp::now();
    match storage.get_bytes(&key).await {
        Ok(Some(b)) if b == body.as_bytes() => r.add(
            &at("storage"),
            Status::Ok,
            format!(
                "{}: a canary object was written and read back",
                storage.describe()
            ),
        ),
        Ok(_) => r.add(
            &at("storage"),
            Status::Error,
            format!("{key}: the canary read back differs or is missing"),
        ),
        Err(e) => r.add(&at("storage"), Status::Error, e.message()),
    }
    if let Some(s3) = &s3 {
        match s3.last_modified(&key).await {
            Ok(Some(t)) => {
                let mid = before + before.duration_until(after) / 2;
                let skew = t.duration_since(mid).abs();
                let secs = skew.as_secs_f64();
                let status = if secs > 60.0 {
                    Status::Warn
                } else {
                    Status::Ok
                };
                r.add(
                    &at("clock"),
                    status,
                    format!(
                        "this host's clock is within {secs:.0} s of the storage's (by the canary's Last-Modified); \
                         leases and retention need them within a minute"
                    ),
                );
            }
            Ok(None) => {}
            Err(e) => r.add(&at("clock"), Status::Warn, e.message()),
        }
        match s3.bucket_settings().await {
            Ok((versioning, lock)) => {
                let v = versioning.unwrap_or_else(|| "never enabled".into());
                match (&lock, sp.object_lock) {
                    (Some(l), _) => r.add(&at("object lock"), Status::Ok, format!("bucket versioning {v}; Object Lock {l}")),
                    (None, _) => r.add(
                        &at("object lock"),
                        Status::Warn,
                        format!(
                            "bucket versioning {v}; Object Lock is not enabled on the bucket, so stored snapshots can be \
                             deleted or overwritten by anyone holding a key that may; create the bucket with Object Lock \
                             and set storage.object_lock_days"
                        ),
                    ),
                }
            }
            Err(e) => r.add(
                &at("object lock"),
                Status::Warn,
                format!("cannot read the bucket's settings: {}", e.message()),
            ),
        }
    }
    let deleted = match &s3 {
        Some(s3) => s3.delete_all_versions(&key).await.map(|_| ()),
        None => storage.delete(&key).await,
    };
    let gone = deleted.is_ok() && matches!(storage.head(&key).await, Ok(None));
    match (deleted, gone) {
        (Ok(()), true) => r.add(
            &at("can delete backups"),
            Status::Warn,
            "these credentials can delete backups: the canary object was deleted for good. Anyone or anything \
             holding them (an agent, a leaked token) can wipe every snapshot. Give backup hosts a key without \
             DeleteObject/DeleteObjectVersion (run prune elsewhere, with its own key), or put the bucket under \
             Object Lock (storage.object_lock_days, compliance mode)",
        ),
        (Ok(()), false) => r.add(
            &at("can delete backups"),
            Status::Ok,
            "the canary delete was accepted but the object is still there (versioned or locked storage)",
        ),
        (Err(e), _) => r.add(
            &at("can delete backups"),
            Status::Ok,
            format!(
                "the storage refused to delete the canary ({}): these credentials cannot destroy backups. \
                 The canary {key} stays until its retention ends",
                first_line(e.message())
            ),
        ),
    }
    if let StorageLocation::File { root } = &sp.location {
        r.add(
            &at("off-site"),
            Status::Warn,
            format!(
                "storage is file://{} on this host: a snapshot here goes down with the host; use S3-compatible storage at another provider",
                root.display()
            ),
        );
    }

    Some(())
}

/// Two storages of a job at the same provider (same endpoint host, same bucket, or the
/// same directory tree) are one failure away from losing both: warn.
fn same_provider(plan: &JobPlan, r: &mut Report<'_>) {
    let place = |sp: &crate::config::StoragePlan| -> (Option<String>, String) {
        match &sp.location {
            StorageLocation::S3 { bucket, .. } => {
                let host = sp
                    .endpoint
                    .as_deref()
                    .and_then(|e| url::Url::parse(e).ok())
                    .and_then(|u| u.host_str().map(str::to_string))
                    .unwrap_or_else(|| "amazonaws.com".into());
                (Some(host), format!("bucket {bucket}"))
            }
            StorageLocation::File { root } => (
                Some("this host".into()),
                format!("directory {}", root.display()),
            ),
        }
    };
    for (i, a) in plan.storages.iter().enumerate() {
        for b in &plan.storages[i + 1..] {
            let ((ha, pa), (hb, pb)) = (place(a), place(b));
            let shared = if pa == pb {
                Some(pa.clone())
            } else if ha == hb {
                ha.map(|h| format!("provider {h}"))
            } else {
                None
            };
            if let Some(what) = shared {
                r.add(
                    "separate providers",
                    Status::Warn,
                    format!(
                        "storages {} and {} share {what}: one outage, closed account or stolen key there takes both; \
                         put the second copy at another provider",
                        a.name, b.name
                    ),
                );
            }
        }
    }
    if plan.storages.len() > 1 && !r.checks.iter().any(|c| c.check == "separate providers") {
        r.add(
            "separate providers",
            Status::Ok,
            format!(
                "the job's {} storages are at different places",
                plan.storages.len()
            ),
        );
    }
}

fn first_line(s: &str) -> String {
    s.chars().take(200).collect()
}

/// Whether snapshots are signed, and whether this host can sign them.
fn signing(plan: &JobPlan, r: &mut Report<'_>) {
    match &plan.signing {
        None => r.add(
            "signing",
            Status::Warn,
            "snapshots are not signed: anyone who can write to the storage could forge one that restores. \
             Run `backstop keygen` and add [signing] (key_file, trusted) to the job",
        ),
        Some(sg) => match crate::snapshot::sign::signer(plan) {
            Ok(Some(k)) => r.add(
                "signing",
                Status::Ok,
                format!(
                    "snapshots are signed with key {} and {} key(s) are trusted",
                    k.public().id_hex(),
                    sg.trusted.len()
                ),
            ),
            Ok(None) => {}
            Err(_) if sg.key_file.is_none() => r.add(
                "signing",
                Status::Ok,
                format!(
                    "no signing key on this host (restores and drills only); {} key(s) trusted",
                    sg.trusted.len()
                ),
            ),
            Err(e) => r.add("signing", Status::Error, e.message()),
        },
    }
}
