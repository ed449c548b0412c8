//! Command-line definitions (clap derive) and nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "backstop",
    version,
    about = "Backup snapshots of PostgreSQL databases into off-site, encrypted, write-once storage, and one-command restores",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Directory of job files (default: $BACKSTOP_JOBS, ./jobs, /etc/backstop/jobs)
    #[arg(long, global = true, value_name = "DIR")]
    pub jobs: Option<PathBuf>,
    /// Machine-readable JSON on stdout, nothing else there
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (-vv for debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr; no progress
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// When another run holds the job's lock, wait for it instead of exiting 5
    #[arg(long, global = true)]
    pub wait: bool,
    /// After each run, write Prometheus text metrics of every job here (atomically)
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "BACKSTOP_METRICS_FILE"
    )]
    pub metrics_file: Option<PathBuf>,
    /// Log format on stderr: human-readable text, or one JSON object per line
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "BACKSTOP_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TriggerArg {
    Manual,
    Schedule,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Take one snapshot now
    Backup {
        job: String,
        /// Why this snapshot is taken (recorded in the manifest)
        #[arg(long)]
        reason: Option<String>,
        /// What started it, as recorded in the manifest (timers and the daemon say "schedule")
        #[arg(long, value_enum, default_value = "manual", hide = true)]
        trigger: TriggerArg,
    },
    /// Take a snapshot before a risky action; prints the snapshot id last and exits 0 only
    /// once it is durable
    Snapshot {
        job: String,
        /// Why (required), e.g. "migration 42"
        #[arg(long)]
        reason: String,
        /// Pin the snapshot against retention for this long (e.g. 14d, 36h, 2w)
        #[arg(long, value_name = "DURATION", default_value = "14d")]
        keep_for: String,
    },
    /// List complete snapshots, newest first
    List { job: Option<String> },
    /// Restore the latest (or a given) snapshot, by default over the job's own source
    Restore {
        job: String,
        /// Snapshot id (default: the newest complete one)
        #[arg(long, value_name = "ID")]
        snapshot: Option<String>,
        /// Restore elsewhere: a postgres:// URL, or a directory for volume jobs
        #[arg(long, value_name = "URL-or-PATH")]
        to: Option<String>,
        /// Replace a non-empty target without asking (an old database is kept aside; an old
        /// volume directory is removed once the new one is in place)
        #[arg(long)]
        yes: bool,
        /// age identity file (default: encryption.identity_file, $BACKSTOP_IDENTITY_FILE)
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Do not restore object ownership and grants (target lacks the source's roles)
        #[arg(long)]
        no_owner: bool,
        /// Directory for the verified, decrypted copy before pg_restore (default: $TMPDIR)
        #[arg(long, value_name = "DIR")]
        staging: Option<PathBuf>,
        /// Restore the snapshot named by --snapshot even though it is foreign (unsigned,
        /// wrongly signed, dated in the future); asks for confirmation
        #[arg(long, requires = "snapshot")]
        allow_foreign: bool,
        /// Cluster jobs: recover to this time, e.g. "2026-11-27 10:15:00+00" (default: the
        /// newest point the WAL archive holds); --to names the new data directory
        #[arg(long, value_name = "TIME")]
        time: Option<String>,
        /// Cluster jobs: recover in a scratch directory and stream this one database into
        /// the server --to names (a postgres:// URL)
        #[arg(long, value_name = "NAME")]
        database: Option<String>,
        /// With --database: only this table (repeatable), into an existing database
        #[arg(long = "table", value_name = "TABLE", requires = "database")]
        tables: Vec<String>,
        /// Jobs with several storages: the newest snapshot on this storage, read from it
        /// first (a missing or damaged object still comes from another storage)
        #[arg(long, value_name = "NAME")]
        storage: Option<String>,
    },
    /// Copy complete snapshots between two storages of a job, still encrypted: every byte
    /// checked against the manifest, the manifest last
    Copy {
        job: String,
        /// The storage to copy from (its name in the job file)
        #[arg(long, value_name = "NAME")]
        from: String,
        /// The storage to copy to
        #[arg(long, value_name = "NAME")]
        to: String,
        /// This snapshot only
        #[arg(
            long,
            value_name = "ID",
            conflicts_with = "all_missing",
            required_unless_present = "all_missing"
        )]
        snapshot: Option<String>,
        /// Every complete snapshot of the job that --from holds and --to lacks
        #[arg(long)]
        all_missing: bool,
    },
    /// PostgreSQL archive_command of a cluster job: store one WAL file
    /// (archive_command = 'backstop wal-push JOB %p')
    WalPush {
        job: String,
        /// The file to archive (%p)
        path: PathBuf,
    },
    /// Receive a cluster job's WAL over a replication connection (through a replication
    /// slot) and store each finished segment, until SIGTERM/SIGINT
    WalStream { job: String },
    /// PostgreSQL restore_command of a cluster job: fetch one WAL file, checked
    /// (restore_command = 'backstop wal-fetch JOB %f %p'); exit 1 when it was never archived
    WalFetch {
        job: String,
        /// The file's name (%f)
        name: String,
        /// Where to write it (%p)
        dest: PathBuf,
        /// age identity file (default: encryption.identity_file, $BACKSTOP_IDENTITY_FILE)
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
    },
    /// Snapshot each job, then run COMMAND only if every snapshot is durable; exits with
    /// the command's exit code
    Guard {
        /// The jobs to snapshot first
        #[arg(id = "guard_jobs", required = true, value_name = "JOB")]
        jobs: Vec<String>,
        /// Why (default: "guard: COMMAND")
        #[arg(long)]
        reason: Option<String>,
        /// Pin the snapshots against retention for this long
        #[arg(long, value_name = "DURATION", default_value = "14d")]
        keep_for: String,
        /// The command and its arguments, after `--`
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Apply each job's [retention]: print the plan with a reason per snapshot, then delete
    /// what no rule keeps (never the newest, the newest verified, pinned or locked ones)
    Prune {
        /// One job (default: every job)
        job: Option<String>,
        /// Show the plan; delete nothing
        #[arg(long)]
        dry_run: bool,
        /// Delete without asking (needed off a terminal)
        #[arg(long)]
        yes: bool,
    },
    /// Run every job's schedule and verify.schedule until SIGTERM
    Daemon {
        /// How many runs may go at once, over all jobs
        #[arg(long, value_name = "N", default_value_t = 1)]
        max_concurrent: usize,
        /// A run missed while the daemon was down is made up at start if it was due within this long
        #[arg(long, value_name = "DURATION", default_value = "24h")]
        catch_up: String,
        /// On SIGTERM, how long running work may take to finish before it is cancelled
        #[arg(long, value_name = "DURATION", default_value = "5m")]
        grace: String,
        /// Serve Prometheus metrics at http://ADDR/metrics (a loopback address)
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Serve the read-only status page at http://ADDR/ (and /api/status, /metrics);
        /// a non-loopback ADDR needs --listen-token-file
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// A file holding the bearer token every request to --listen must carry
        /// (`Authorization: Bearer TOKEN`)
        #[arg(long, value_name = "FILE", requires = "listen")]
        listen_token_file: Option<PathBuf>,
    },
    /// Write a systemd .service and .timer per job (and per verify schedule)
    Systemd {
        /// Directory to write the units to (default: print them)
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// RandomizedDelaySec of each timer
        #[arg(long, value_name = "DURATION", default_value = "60s")]
        randomized_delay: String,
    },
    /// Pre-tool hook for AI coding agents (Claude Code PreToolUse, Cursor
    /// beforeShellExecution/beforeMCPExecution): reads one tool call as JSON on stdin,
    /// snapshots the affected jobs before a risky call, answers allow/ask/deny on stdout
    Hook {
        /// Only say what the call would trigger (rules, jobs) as JSON; no snapshot, no
        /// audit record. For testing hook.toml rules and a corpus of calls
        #[arg(long)]
        explain: bool,
    },
    /// Per job: last snapshot, last failure, last verified restore, next run, anomalies and
    /// health (OK, STALE, UNVERIFIED, FAILING); exit 1 unless every job is OK
    Status {
        job: Option<String>,
        /// Also write the status page as one self-contained HTML file (no server, no
        /// network: works from cron or when the daemon is down)
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// Shell completions for SHELL (bash, zsh, fish, elvish, powershell) on stdout
    Completions { shell: clap_complete::Shell },
    /// The man page (roff) on stdout
    Man,
    /// Create the key pairs a host needs: age (encryption) and signing; private files 0600,
    /// never overwritten; the public keys are printed for the job file
    Keygen {
        /// Directory for age.key, age.pub, signing.key and signing.pub (default: .)
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
    /// Check connectivity, tool versions, keys, bucket lock, clock, the newest snapshot,
    /// and whether these credentials can delete backups
    Doctor { job: Option<String> },
    /// Restore drill: restore a snapshot into a scratch place, check the data, record the result
    Verify {
        job: String,
        /// Snapshot id (default: the newest complete one)
        #[arg(long, value_name = "ID")]
        snapshot: Option<String>,
        /// age identity file (default: encryption.identity_file, $BACKSTOP_IDENTITY_FILE)
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Drill the snapshot named by --snapshot even though it is foreign
        #[arg(long, requires = "snapshot")]
        allow_foreign: bool,
    },
}
