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
             (SELECT count(*) FROM pg_database WHERE datname = {})",
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

/// Whether to restore the dump while it downloads (one `pg_restore` job reading a pipe)
/// rather than staging it for `pg_restore --jobs`: when one table holds most of the rows,
/// parallel jobs have nothing to share and staging only adds the download time.
/// `$BACKSTOP_RESTORE_MODE` = "stream" or "stage" decides instead.
pub(crate) fn stream_worthwhile(facts: Option<&crate::postgres::archive::DumpFacts>) -> bool {
    match crate::config::env::restore_mode() {
        Some(crate::config::env::RestoreMode::Stream) => return true,
        Some(crate::config::env::RestoreMode::Stage) => return false,
        None => {}
    }
    let Some(d) = facts else { return false };
    let total: u64 = d.tables.iter().map(|t| t.rows).sum();
    let biggest = d.tables.iter().map(|t| t.rows).max().unwrap_or(0);
    total >= 100_000 && biggest * 10 >= total * 7
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

/// One `pg_restore` fed by the download as it is decrypted and decompressed. A fault in
/// the stored bytes (caught by age as it decrypts, or by the SHA-256 at the end) wins over
/// whatever pg_restore says about the broken stream.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn pg_restore_streaming(
    tools: &pg::Tools,
    conn: &Conn,
    reader: crate::storage::Reader,
    identities: Arc<Vec<Box<dyn age::Identity + Send + Sync>>>,
    key: &str,
    obj: &snapshot::ObjectEntry,
    no_owner: bool,
    split: Option<(PathBuf, String, String, usize)>,
) -> Result<(u64, Option<crate::postgres::load::Report>)> {
    let bin = tools.bin("pg_restore");
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(["--exit-on-error", "--no-password", "--dbname"])
        .arg(conn.url.conninfo());
    if no_owner {
        cmd.args(["--no-owner", "--no-acl"]);
    }
    let options = restore_session_options(1);
    cmd.envs(conn.env()?)
        .env("PGOPTIONS", &options)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::failed(format!("cannot start {}: {e}", bin.display())))?;
    let split = match split {
        Some((psql, schema, table, sessions)) => {
            let mut env = conn.env()?;
            env.push(("PGOPTIONS".into(), options.clone()));
            Some(crate::postgres::load::Plan {
                psql,
                conninfo: conn.url.conninfo(),
                env,
                schema,
                table,
                sessions,
                restore_pid: child.id(),
            })
        }
        None => None,
    };
    let stdin = child.stdin.take();
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
            None => pipeline::decode(bridge, &identities, &expect, w).map(|n| (n, None)),
            Some(plan) => {
                let mut sw = crate::postgres::load::SplitWriter::new(w, plan);
                let n = pipeline::decode_with(bridge, &identities, &expect, |plain| {
                    std::io::copy(plain, &mut sw)
                        .and_then(|n| std::io::Write::flush(&mut sw).map(|_| n))
                        .map_err(|e| match sw.failure() {
                            Some(why) => Error::failed(why.to_string()),
                            None => Error::failed(format!("cannot decrypt or decompress: {e}")),
                        })
                })?;
                let report = sw
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
    let restore_failed = || {
        let hint = if stderr.contains("role") && stderr.contains("does not exist") {
            " (the dump's owners are missing on the target: restore with --no-owner, or store roles with globals = true)"
        } else {
            ""
        };
        Error::failed(format!(
            "{} failed ({status}): {}{hint}",
            bin.display(),
            crate::text::summarize(&stderr)
        ))
    };
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

/// `-c maintenance_work_mem=...` sized from this host's memory (an eighth of it, shared by
/// the parallel jobs, between 64 MiB and 1 GiB each), and `synchronous_commit=off`.
pub(crate) fn restore_session_options(jobs: usize) -> String {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(4 << 20);
    let per_job_mib = (total_kib / 1024 / 8 / jobs.max(1) as u64).clamp(64, 1024);
    format!("-c maintenance_work_mem={per_job_mib}MB -c synchronous_commit=off")
}

pub(crate) async fn pg_restore(
    tools: &pg::Tools,
    conn: &Conn,
    dump: &Path,
    no_owner: bool,
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
        .arg(dump)
        .envs(conn.env()?)
        // Session settings for the restore's connections: index builds sort in memory
        // rather than on disk, and commits do not wait for the WAL flush (a crash mid-way
        // leaves only the new database, which is dropped and restored again).
        .env("PGOPTIONS", restore_session_options(jobs))
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::failed(format!("cannot start {}: {e}", bin.display())))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains("role") && stderr.contains("does not exist") {
            " (the dump's owners are missing on the target: restore with --no-owner, or store roles with globals = true)"
        } else {
            ""
        };
        return Err(Error::failed(format!(
            "{} failed ({}): {}{hint}",
            bin.display(),
            out.status,
            crate::text::summarize(&stderr)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn db_names_fit() {
        let long = "x".repeat(70);
        let n = super::db_name(&long, "_pre_restore_20260101000000");
        assert_eq!(n.len(), 63);
        assert!(n.ends_with("_pre_restore_20260101000000"));
        assert_eq!(super::db_name("app", "_r"), "app_r");
    }
}
