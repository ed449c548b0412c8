//! The command line: clap definitions (`args`), output helpers, and one thin file per
//! command that loads the job plan, calls the library and prints the result (text, or one
//! JSON document with `--json`). Errors are printed here, once, as one paragraph.
//!
//! May import: everything; nothing imports it.

mod args;

mod backup;
mod gate;
mod guard;
mod hook;
mod keygen;
mod list;
pub mod output;
mod prune;
mod restore;
mod verify;

pub use args::*;
pub(crate) use output::{print_json, print_line};

use std::io::Write;
use std::time::Duration;

use crate::error::{Error, Result};

pub fn init_logging(g: &Global) {
    let level = if g.quiet {
        "error"
    } else {
        match g.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BACKSTOP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("backstop={level},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match g.log_format {
        crate::cli::LogFormat::Json => builder.json().flatten_event(true).try_init(),
        crate::cli::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// Run a command to completion or until SIGINT/SIGTERM; returns the exit code.
pub async fn run(cli: Cli) -> i32 {
    let g = cli.global.clone();
    crate::state::metrics::configure(g.metrics_file.clone());
    // The daemon and wal-stream handle their own signals (finish, then stop cleanly).
    let daemon = matches!(
        cli.command,
        Command::Daemon { .. } | Command::WalStream { .. }
    );
    let work = dispatch(cli);
    let outcome = if daemon {
        work.await
    } else {
        tokio::select! {
            r = work => r,
            s = shutdown_signal() => Err(Error::failed(format!("interrupted by {s}; the run was stopped and its partial objects cleaned up"))),
        }
    };
    // Give cancellation cleanups (multipart aborts) time to finish.
    crate::cleanup::wait(Duration::from_secs(15)).await;
    match outcome {
        Ok(code) => code,
        Err(e) => {
            let _ = std::io::stdout().flush();
            if g.json && !e.is_told_in_json() {
                let doc = serde_json::json!({"error": crate::text::redact_secrets(e.message()), "exit_code": e.kind().exit_code()});
                println!("{doc}");
            }
            eprintln!(
                "backstop: error: {}",
                crate::text::redact_secrets(e.message())
            );
            e.kind().exit_code()
        }
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Run the command; `Ok(code)` is the exit code of a successful run (`guard` passes its
/// command's code through).
async fn dispatch(cli: Cli) -> Result<i32> {
    let g = &cli.global;
    if let Command::Guard {
        jobs,
        reason,
        keep_for,
        command,
    } = &cli.command
    {
        return guard::guard(g, jobs, reason.clone(), keep_for, command).await;
    }
    if let Command::Doctor { job } = &cli.command {
        return doctor(g, job.as_deref()).await;
    }
    if let Command::Status { job, html } = &cli.command {
        return status(g, job.as_deref(), html.as_deref()).await;
    }
    if let Command::Hook { explain } = &cli.command {
        return hook::run(g, *explain).await;
    }
    dispatch_plain(&cli).await.map(|()| 0)
}

/// Write the status page to `path` whole (a temp file beside it, renamed over it).
fn write_page(path: &std::path::Path, html: &str) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let fail = |e: std::io::Error| Error::failed(format!("--html {}: {e}", path.display()));
    let mut tmp = tempfile::Builder::new()
        .prefix(".backstop-status-")
        .tempfile_in(dir)
        .map_err(fail)?;
    tmp.write_all(html.as_bytes()).map_err(fail)?;
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(fail)?;
    }
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// `status [JOB]`: a table (or `--json`); exit 1 unless every job is OK.
async fn status(g: &Global, job: Option<&str>, html: Option<&std::path::Path>) -> Result<i32> {
    use crate::ops::status::Health;
    let dir = crate::config::jobs_dir(g.jobs.as_deref());
    let plans = match job {
        Some(j) => vec![crate::config::load(&dir, j)?],
        None => crate::config::load_all(&dir)?,
    };
    let now = crate::config::env::now();
    let pages = crate::ops::page::gather(&plans, now, html.is_some()).await;
    if let Some(path) = html {
        write_page(path, &crate::ops::page::render(&pages, now, None))?;
    }
    let all: Vec<_> = pages.into_iter().map(|p| p.status).collect();
    crate::state::metrics::after_run();
    if g.json {
        print_json(&all);
    } else {
        let age = |s: i64| crate::text::human_age(jiff::SignedDuration::from_secs(s));
        print_line(&format!(
            "{:<12} {:<10} {:<26} {:<20} {:<22} {:<20}",
            "JOB", "HEALTH", "LAST SNAPSHOT", "LAST FAILURE", "LAST VERIFIED", "NEXT RUN (UTC)"
        ));
        for s in &all {
            let snap = s
                .last_snapshot
                .as_ref()
                .map(|l| {
                    format!(
                        "{} ago, {}, {:.0}s",
                        age(l.age_seconds),
                        crate::text::human_bytes(l.stored_bytes),
                        l.duration_ms as f64 / 1000.0
                    )
                })
                .unwrap_or_else(|| "-".into());
            let fail = s
                .last_failure
                .as_ref()
                .map(|f| format!("{} ago", age(f.age_seconds)))
                .unwrap_or_else(|| "-".into());
            let ver = s
                .last_verified
                .as_ref()
                .map(|v| {
                    format!(
                        "{} ago, restore {:.0}s",
                        age(v.age_seconds),
                        v.restore_ms as f64 / 1000.0
                    )
                })
                .unwrap_or_else(|| "-".into());
            let next: String = s
                .next_run
                .as_deref()
                .map(|t| t.chars().take(16).collect::<String>().replace('T', " "))
                .unwrap_or_else(|| "-".into());
            print_line(&format!(
                "{:<12} {:<10} {:<26} {:<20} {:<22} {:<20}",
                s.job,
                s.health.to_string(),
                snap,
                fail,
                ver,
                next
            ));
            if let Some(w) = &s.wal {
                print_line(&format!(
                    "{:<12}   WAL: {} files, newest {} archived {} ago; recoverable from {} to {}",
                    "",
                    w.files,
                    w.newest.as_deref().unwrap_or("-"),
                    w.rpo_seconds.map(age).unwrap_or_else(|| "-".into()),
                    w.recoverable_from.as_deref().unwrap_or("-"),
                    w.recoverable_until.as_deref().unwrap_or("-"),
                ));
            }
            for r in &s.reasons {
                print_line(&format!("{:<12} - {r}", ""));
            }
        }
    }
    Ok(if all.iter().all(|s| s.health == Health::Ok) {
        0
    } else {
        1
    })
}

/// `doctor [JOB]`: a table (or `--json`), exit 1 when any check failed.
async fn doctor(g: &Global, job: Option<&str>) -> Result<i32> {
    use crate::ops::doctor::Status;
    let dir = crate::config::jobs_dir(g.jobs.as_deref());
    let checks = crate::ops::doctor::run(&dir, job).await?;
    if g.json {
        print_json(&checks);
    } else {
        for c in &checks {
            let word = match c.status {
                Status::Ok => "ok",
                Status::Warn => "WARN",
                Status::Error => "ERROR",
            };
            print_line(&format!(
                "{:<12} {:<18} {:<5} {}",
                c.job, c.check, word, c.detail
            ));
        }
    }
    let errors = checks.iter().filter(|c| c.status == Status::Error).count();
    let warnings = checks.iter().filter(|c| c.status == Status::Warn).count();
    if !g.quiet && !g.json {
        eprintln!("backstop doctor: {errors} error(s), {warnings} warning(s)");
    }
    Ok(if errors > 0 { 1 } else { 0 })
}

/// How runs started from the command line wait and talk.
pub(crate) fn run_opts(g: &Global) -> crate::run::RunOpts {
    crate::run::RunOpts {
        wait: g.wait,
        quiet: g.quiet || g.json,
    }
}

async fn dispatch_plain(cli: &Cli) -> Result<()> {
    let g = &cli.global;
    match cli.command.clone() {
        Command::Guard { .. }
        | Command::Hook { .. }
        | Command::Doctor { .. }
        | Command::Status { .. } => {
            unreachable!("handled by dispatch")
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = crate::cli::Cli::command();
            clap_complete::generate(shell, &mut cmd, "backstop", &mut std::io::stdout());
            Ok(())
        }
        Command::Keygen { out } => keygen::keygen(g, &out),
        Command::Man => {
            use clap::CommandFactory;
            let man = clap_mangen::Man::new(crate::cli::Cli::command());
            match man.render(&mut std::io::stdout()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(Error::failed(format!("cannot write the man page: {e}")))
                }
                _ => Ok(()),
            }
        }
        Command::Backup {
            job,
            reason,
            trigger,
        } => {
            let trigger = match trigger {
                crate::cli::TriggerArg::Manual => crate::snapshot::Trigger::Manual,
                crate::cli::TriggerArg::Schedule => crate::snapshot::Trigger::Schedule,
            };
            backup::backup(g, &job, trigger, reason).await
        }
        Command::Snapshot {
            job,
            reason,
            keep_for,
        } => backup::snapshot(g, &job, reason, &keep_for).await,
        Command::List { job } => list::list(g, job.as_deref()).await,
        Command::Prune { job, dry_run, yes } => prune::prune(g, job.as_deref(), dry_run, yes).await,
        Command::Daemon {
            max_concurrent,
            catch_up,
            grace,
            metrics_listen,
            listen,
            listen_token_file,
        } => {
            let listen_token = match &listen_token_file {
                Some(f) => Some(crate::ops::web::read_token(f)?),
                None => None,
            };
            if let Some(a) = listen
                && !a.ip().is_loopback()
                && listen_token.is_none()
            {
                return Err(Error::config(format!(
                    "--listen {a} is not a loopback address: pass --listen-token-file FILE too (every request must then carry \
                     `Authorization: Bearer TOKEN`), or listen on 127.0.0.1"
                )));
            }
            if let Some(a) = metrics_listen
                && !a.ip().is_loopback()
            {
                return Err(Error::config(format!(
                    "--metrics-listen {a} is not a loopback address; use e.g. 127.0.0.1:9184 (put a proxy in front to expose it)"
                )));
            }
            let opts = crate::ops::daemon::Options {
                jobs_dir: crate::config::jobs_dir(g.jobs.as_deref()),
                max_concurrent,
                catch_up: duration_flag("--catch-up", &catch_up)?,
                grace: duration_flag("--grace", &grace)?,
                metrics_listen,
                listen,
                listen_token,
                child_env: {
                    let mut env = vec![(
                        "BACKSTOP_LOG_FORMAT".to_string(),
                        match g.log_format {
                            crate::cli::LogFormat::Json => "json",
                            crate::cli::LogFormat::Text => "text",
                        }
                        .to_string(),
                    )];
                    if let Some(p) = &g.metrics_file {
                        env.push(("BACKSTOP_METRICS_FILE".into(), p.display().to_string()));
                    }
                    env
                },
            };
            crate::ops::daemon::run(opts).await
        }
        Command::Systemd {
            out,
            randomized_delay,
        } => {
            let dir = crate::config::jobs_dir(g.jobs.as_deref());
            let delay = duration_flag("--randomized-delay", &randomized_delay)?;
            for line in crate::ops::systemd::generate(&dir, out.as_deref(), delay)? {
                print_line(&line);
            }
            Ok(())
        }
        Command::Restore {
            job,
            snapshot,
            to,
            yes,
            identity,
            no_owner,
            staging,
            allow_foreign,
            time,
            database,
            tables,
            storage,
        } => {
            let dir = crate::config::jobs_dir(g.jobs.as_deref());
            let plan = crate::config::load(&dir, &job)?;
            if matches!(plan.source, crate::config::SourcePlan::Cluster(_)) {
                let opts = crate::run::pitr::PitrOptions {
                    time,
                    to,
                    identity,
                    staging,
                    base: snapshot,
                    storage: storage.clone(),
                };
                if let Some(db) = &database {
                    let Some(url) = opts.to.clone() else {
                        return Err(Error::config(
                            "--database needs --to postgres://user@host:port/dbname (the server to stream it into)",
                        ));
                    };
                    let r = crate::run::pitr::restore_database(
                        &plan, &opts, db, &tables, &url, no_owner,
                    )
                    .await?;
                    if g.json {
                        print_json(&r);
                    } else {
                        print_line(&format!(
                            "job {}: base backup {} recovered to {}; {} restored into {}",
                            r.job,
                            r.base_backup,
                            r.reached.as_deref().unwrap_or("its end"),
                            if tables.is_empty() {
                                format!("database {db}")
                            } else {
                                format!("table(s) {} of {db}", tables.join(", "))
                            },
                            r.data_directory
                        ));
                    }
                    return Ok(());
                }
                if opts.to.is_none()
                    && let crate::config::SourcePlan::Cluster(c) = &plan.source
                    && let Some(d) = &c.data_directory
                {
                    let prompt = format!(
                        "Replace the data directory {} of job {job} with a recovered one (the old one is kept aside)?",
                        d.display()
                    );
                    let refusal = format!(
                        "refusing to replace {} without confirmation: pass --yes (the old directory is kept aside), or --to DIR; nothing was changed",
                        d.display()
                    );
                    let expected = if plan.is_production() {
                        job.as_str()
                    } else {
                        "yes"
                    };
                    gate::confirm(
                        &crate::run::GateRequest {
                            prompt: &prompt,
                            expected,
                            refusal: &refusal,
                        },
                        yes,
                    )?;
                }
                let r = crate::run::pitr::restore_to_time(&plan, &opts).await?;
                if g.json {
                    print_json(&r);
                } else {
                    let mut msg = format!(
                        "job {}: base backup {} recovered into {} ({} WAL files, {:.1} s); recovered to {}",
                        r.job,
                        r.base_backup,
                        r.data_directory,
                        r.wal_files,
                        r.duration_ms as f64 / 1000.0,
                        r.reached
                            .as_deref()
                            .unwrap_or("the end of the base backup (no transaction replayed)")
                    );
                    if let Some(old) = &r.previous_kept_as {
                        msg.push_str(&format!(
                            "\nthe previous data directory was kept as {old}; remove it when satisfied"
                        ));
                    }
                    if r.ended_before_target {
                        msg.push_str(&format!(
                            "\nthe WAL archive ends before {}: this is the newest point it holds",
                            r.target_time.as_deref().unwrap_or("?")
                        ));
                    }
                    msg.push_str(&format!(
                        "\nstart it with: pg_ctl -D {} start\n\
                         its postgresql.conf still archives into job {}: as the new primary that is what you want (its new timeline \
                         is archived and later recoveries follow it); for a copy to look at, set archive_mode = off first",
                        r.data_directory, r.job
                    ));
                    print_line(&msg);
                }
                return Ok(());
            }
            if time.is_some() || database.is_some() {
                return Err(Error::config(format!(
                    "--time and --database are for postgres-cluster jobs; job {job} restores whole snapshots (use --snapshot ID)"
                )));
            }
            let opts = crate::run::restore::Options {
                snapshot,
                to,
                yes,
                identity,
                no_owner,
                staging,
                allow_foreign,
                skip_roles: false,
                storage,
            };
            restore::restore(g, &job, opts).await
        }
        Command::Copy {
            job,
            from,
            to,
            snapshot,
            all_missing: _,
        } => {
            let dir = crate::config::jobs_dir(g.jobs.as_deref());
            let plan = crate::config::load(&dir, &job)?;
            let r = crate::run::copy::copy(&plan, &from, &to, snapshot.as_deref()).await?;
            if g.json {
                print_json(&r);
            } else {
                for id in &r.copied {
                    print_line(&format!(
                        "job {job}: snapshot {id} copied from {from} to {to}"
                    ));
                }
                print_line(&format!(
                    "job {job}: {} snapshot(s) copied from {from} to {to} ({}), {} already there",
                    r.copied.len(),
                    crate::text::human_bytes(r.bytes),
                    r.already.len()
                ));
            }
            r.result()
                .map_err(|e| if g.json { e.told_in_json() } else { e })
        }
        Command::WalPush { job, path } => {
            let dir = crate::config::jobs_dir(g.jobs.as_deref());
            let plan = crate::config::load(&dir, &job)?;
            let pushed = crate::run::pitr::wal_push(&plan, &path).await?;
            if !g.quiet {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default();
                match pushed {
                    crate::snapshot::wal::Pushed::Stored => {
                        tracing::info!("job {job}: archived {name}")
                    }
                    crate::snapshot::wal::Pushed::AlreadyStored => {
                        tracing::info!(
                            "job {job}: {name} was archived already with the same content"
                        )
                    }
                }
            }
            Ok(())
        }
        Command::WalStream { job } => {
            let dir = crate::config::jobs_dir(g.jobs.as_deref());
            let plan = crate::config::load(&dir, &job)?;
            let stop = async {
                use tokio::signal::unix::{SignalKind, signal};
                match (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) {
                    (Ok(mut t), Ok(mut i)) => {
                        tokio::select! {
                            _ = t.recv() => {}
                            _ = i.recv() => {}
                        }
                    }
                    _ => std::future::pending::<()>().await,
                }
            };
            let n = crate::run::walstream::run(&plan, stop).await?;
            tracing::info!("job {job}: wal-stream stopped after archiving {n} file(s)");
            Ok(())
        }
        Command::WalFetch {
            job,
            name,
            dest,
            identity,
        } => {
            let dir = crate::config::jobs_dir(g.jobs.as_deref());
            let plan = crate::config::load(&dir, &job)?;
            if crate::run::pitr::wal_fetch(&plan, &name, &dest, identity.as_deref()).await? {
                Ok(())
            } else {
                Err(Error::failed(format!(
                    "job {job}: {name} is not in the WAL archive"
                )))
            }
        }
        Command::Verify {
            job,
            snapshot,
            identity,
            allow_foreign,
        } => {
            let opts = crate::run::verify::Options {
                snapshot,
                identity,
                allow_foreign,
            };
            verify::verify(g, &job, opts).await
        }
    }
}

fn duration_flag(flag: &str, v: &str) -> Result<Duration> {
    crate::config::parse_duration(v).map_err(|e| Error::config(format!("{flag} {e}")))
}
