//! Job files: TOML as written (`RawJob`, every key, unknown keys refused) turned once into a
//! checked `JobPlan` (URLs parsed, recipients loaded, files checked, `${VAR}` expanded).
//! Commands only ever see a `JobPlan`; every error here is a `Config` error (exit 2) that
//! names the file, the line, the key and what would be valid.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};

// ---------------------------------------------------------------------------------------
// Raw: what the file says.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    pub environment: Option<Spanned<String>>,
    pub schedule: Option<Spanned<String>>,
    pub timezone: Option<Spanned<String>>,
    pub source: Spanned<RawSource>,
    /// One `[storage]` table, or several `[[storage]]` tables (checked in `storages`).
    pub storage: Spanned<RawStorages>,
    pub encryption: Spanned<RawEncryption>,
    #[serde(default)]
    pub compression: RawCompression,
    pub retention: Option<RawRetention>,
    pub verify: Option<RawVerify>,
    pub notify: Option<RawNotify>,
    pub hook: Option<RawHook>,
    pub alarm: Option<RawAlarm>,
    pub status: Option<RawStatus>,
    pub signing: Option<RawSigning>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    // postgres
    pub url: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub globals: Option<bool>,
    // postgres-cluster
    pub data_directory: Option<Spanned<String>>,
    pub wal_stream: Option<bool>,
    // volume
    pub path: Option<Spanned<String>>,
    pub snapshot_path: Option<Spanned<String>>,
    pub pre: Option<Vec<String>>,
    pub post: Option<Vec<String>>,
    pub strict: Option<bool>,
}

/// `[storage]` (one table) or `[[storage]]` (several), read without losing the line numbers
/// errors name.
#[derive(Debug)]
pub enum RawStorages {
    One(Box<Spanned<RawStorage>>),
    Many(Vec<Spanned<RawStorage>>),
}

impl<'de> Deserialize<'de> for RawStorages {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawStorages;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("one [storage] table or several [[storage]] tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<RawStorages, A::Error> {
                let one =
                    RawStorage::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RawStorages::One(Box::new(Spanned::new(0..0, one))))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<RawStorages, A::Error> {
                let mut v = Vec::new();
                while let Some(t) = seq.next_element::<Spanned<RawStorage>>()? {
                    v.push(t);
                }
                Ok(RawStorages::Many(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub name: Option<Spanned<String>>,
    pub url: Spanned<String>,
    pub endpoint: Option<Spanned<String>>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
    pub profile: Option<String>,
    pub object_lock_days: Option<Spanned<i64>>,
    pub object_lock_mode: Option<Spanned<String>>,
    pub part_size_mib: Option<Spanned<i64>>,
    pub parts_in_flight: Option<Spanned<i64>>,
    /// `[storage.retention]`: this storage's own retention, overriding the job's.
    pub retention: Option<RawRetention>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEncryption {
    #[serde(default)]
    pub recipients: Vec<Spanned<String>>,
    pub recipients_file: Option<Spanned<String>>,
    pub identity_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompression {
    pub level: Option<Spanned<i64>>,
    pub threads: Option<Spanned<i64>>,
}

/// Retention keys; applied by `prune` (see README). Parsed and range-checked here.
#[derive(Debug, Default, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within: Option<String>,
    pub stale_after: Option<String>,
}

/// Restore-drill keys; used by `verify`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    pub schedule: Option<String>,
    #[serde(default)]
    pub checks: Vec<String>,
    pub scratch_url: Option<String>,
    pub sample: Option<String>,
    pub command: Option<Vec<String>>,
    pub max_age: Option<String>,
}

/// How `verify` picks snapshots to drill.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sample {
    /// The newest snapshot (or the one named).
    #[default]
    Latest,
    /// The newest, and one older snapshot picked at random.
    LatestAndRandom,
}

/// The `[verify]` section, checked.
#[derive(Debug, Clone, Default)]
pub struct VerifyPlan {
    pub schedule: Option<String>,
    pub checks: Vec<String>,
    pub scratch_url: Option<String>,
    pub sample: Sample,
    pub command: Option<Vec<String>>,
    /// How old the newest passed drill may be before `status` says UNVERIFIED.
    pub max_age: Option<std::time::Duration>,
}

/// `[status]` keys.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatus {
    /// How old the newest snapshot may be before `status` says STALE.
    pub max_age: Option<String>,
}

/// Shrink-alarm keys.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlarm {
    pub shrink_percent: Option<u32>,
    pub pin_for: Option<String>,
}

/// The checked shrink alarm settings.
#[derive(Debug, Clone)]
pub struct AlarmPlan {
    /// A table (or the total) losing more than this percentage raises the alarm.
    pub shrink_percent: u32,
    /// How long the previous snapshot is pinned when it does.
    pub pin_for: std::time::Duration,
}

/// The checked `[notify]`: URLs expanded, format and timeout parsed.
#[derive(Debug, Clone)]
pub struct NotifyPlan {
    pub webhook: Option<String>,
    pub healthcheck: Option<String>,
    pub on_success: bool,
    pub on_anomaly: bool,
    /// "json", "slack" or "ntfy".
    pub format: String,
    pub timeout: std::time::Duration,
}

/// `[signing]`: the key this host signs snapshots with, and the keys the job trusts.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigning {
    pub key_file: Option<Spanned<String>>,
    #[serde(default)]
    pub trusted: Vec<Spanned<String>>,
}

/// The `[signing]` section, checked.
#[derive(Debug, Clone, Default)]
pub struct SigningPlan {
    /// The private signing key of hosts that take backups (never stored anywhere else).
    pub key_file: Option<PathBuf>,
    /// Public keys whose signatures make a snapshot this job's own.
    pub trusted: Vec<crate::minisign::PublicKey>,
}

/// Agent-hook keys; used by `backstop hook`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    /// Answer "ask" (a human approves) instead of "allow" once the snapshot is taken.
    pub confirm: Option<bool>,
}

/// Notification keys; used by the notifier.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub webhook: Option<Spanned<String>>,
    pub healthcheck: Option<Spanned<String>>,
    /// Also POST the webhook on success (default false: failures and anomalies only).
    pub on_success: Option<bool>,
    /// POST the webhook when the shrink alarm fires (default true).
    pub on_anomaly: Option<bool>,
    /// Webhook body: "json" (default), "slack" or "ntfy".
    pub format: Option<String>,
    /// Per-attempt timeout (default "10s"); three attempts with backoff.
    pub timeout: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Checked: what commands use.

#[derive(Debug, Clone)]
pub struct JobPlan {
    pub name: String,
    pub file: PathBuf,
    pub environment: Option<String>,
    pub schedule: Option<String>,
    pub timezone: String,
    pub source: SourcePlan,
    /// Every storage the job writes to, in the job file's order (at least one).
    pub storages: Vec<StoragePlan>,
    pub encryption: EncryptionPlan,
    pub compression: CompressionPlan,
    pub retention: Option<crate::config::retention::Policy>,
    pub verify: Option<VerifyPlan>,
    pub notify: Option<NotifyPlan>,
    /// `hook.confirm`: risky agent calls touching this job need a human's approval.
    pub hook_confirm: bool,
    pub alarm: AlarmPlan,
    /// `status.max_age`.
    pub status_max_age: Option<std::time::Duration>,
    /// `[signing]`; `None`: snapshots are neither signed nor checked (a warning in doctor).
    pub signing: Option<SigningPlan>,
}

impl JobPlan {
    /// The identity file for restore: `--identity`, else `encryption.identity_file`, else
    /// `$BACKSTOP_IDENTITY_FILE`.
    pub fn identity_path(&self, flag: Option<&Path>) -> Result<PathBuf> {
        flag.map(Path::to_path_buf)
            .or_else(|| self.encryption.identity_file.clone())
            .or_else(crate::config::env::identity_file)
            .ok_or_else(|| {
                Error::config(format!(
                    "job {}: restoring needs the private key matching the job's recipients; \
                     pass --identity FILE, set encryption.identity_file in {}, or set BACKSTOP_IDENTITY_FILE",
                    self.name,
                    self.file.display()
                ))
            })
    }

    pub(crate) fn is_production(&self) -> bool {
        self.environment
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case("production"))
    }
}

#[derive(Debug, Clone)]
pub enum SourcePlan {
    Postgres(PostgresSource),
    Volume(VolumeSource),
    /// A whole PostgreSQL cluster: base backups plus a WAL archive (point-in-time recovery).
    Cluster(ClusterSource),
}

#[derive(Debug, Clone)]
pub struct ClusterSource {
    /// A connection that may replicate (`pg_basebackup` adds `replication=true`).
    pub url: super::pgurl::PgUrl,
    pub password_file: Option<PathBuf>,
    /// The cluster's own data directory, for restoring in place.
    pub data_directory: Option<PathBuf>,
    /// The daemon runs `wal-stream` for this job all the time.
    pub wal_stream: bool,
}

#[derive(Debug, Clone)]
pub struct PostgresSource {
    /// libpq connection URL, `${VAR}` expanded; may hold a password (never printed).
    pub url: super::pgurl::PgUrl,
    pub password_file: Option<PathBuf>,
    pub globals: bool,
}

#[derive(Debug, Clone)]
pub struct VolumeSource {
    pub path: PathBuf,
    pub snapshot_path: Option<PathBuf>,
    pub pre: Vec<String>,
    pub post: Vec<String>,
    pub strict: bool,
}

#[derive(Debug, Clone)]
pub enum StorageLocation {
    /// `file:///dir`: objects are files below `dir`.
    File { root: PathBuf },
    /// `s3://bucket/prefix`.
    S3 { bucket: String, prefix: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Governance,
    Compliance,
}

#[derive(Debug, Clone)]
pub struct StoragePlan {
    /// `name`; a single `[storage]` table without one is `default`.
    pub name: String,
    pub url: String,
    pub location: StorageLocation,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    pub profile: Option<String>,
    pub object_lock: Option<(LockMode, u32)>,
    pub part_size: usize,
    pub parts_in_flight: usize,
    /// `[storage.retention]`, when the storage has its own.
    pub retention: Option<crate::config::retention::Policy>,
}

#[derive(Clone)]
pub struct EncryptionPlan {
    /// Public keys as written (`age1...`), recorded in the manifest.
    pub recipients: Vec<String>,
    pub parsed: Vec<age::x25519::Recipient>,
    pub identity_file: Option<PathBuf>,
}

impl std::fmt::Debug for EncryptionPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionPlan")
            .field("recipients", &self.recipients)
            .field("identity_file", &self.identity_file)
            .finish()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CompressionPlan {
    pub level: i32,
    /// zstd worker threads; 0 means all cores.
    pub threads: u32,
}

impl CompressionPlan {
    /// The number of zstd workers to ask for.
    pub(crate) fn workers(&self) -> u32 {
        if self.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        } else {
            self.threads
        }
    }
}

pub const MIB: usize = 1024 * 1024;

/// The part size used when the job does not set one. Every part of an object has this one
/// size (R2 needs equal parts) except the last. S3 allows 10,000 parts, so an 8 MiB part
/// caps an object at 78 GiB unless the backup's expected size grows it; the uploader
/// grows nothing mid-stream: when a stream reaches the limit it fails with an error that
/// says to raise `storage.part_size_mib` (110 MiB covers 1 TiB). Memory is part size x
/// (parts in flight + 2): 8 MiB keeps a backup into S3 near 105 MiB at its peak (16 MiB
/// parts took it to 126 MiB on a 176 MiB dump that compresses 2:1).
pub const DEFAULT_PART_SIZE: usize = 8 * MIB;
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 4;

// ---------------------------------------------------------------------------------------
// Loading.

/// Where job files live: `--jobs DIR`, else `$BACKSTOP_JOBS`, else `./jobs`, else
/// `/etc/backstop/jobs`.
pub fn jobs_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(d) = flag {
        return d.to_path_buf();
    }
    if let Some(d) = super::env::jobs_dir() {
        return d;
    }
    let local = PathBuf::from("jobs");
    if local.is_dir() {
        return local;
    }
    PathBuf::from("/etc/backstop/jobs")
}

/// Names of all jobs in `dir` (file stems of `*.toml`, sorted).
pub fn job_names(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        Error::config(format!(
            "cannot read the jobs directory {}: {e}; pass --jobs DIR or set BACKSTOP_JOBS",
            dir.display()
        ))
    })?;
    let mut names = Vec::new();
    for entry in rd.flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "toml")
            && let Some(stem) = p.file_stem().and_then(|s| s.to_str())
            && stem != "hook"
        {
            names.push(stem.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Load and check job `name` from `dir`.
pub fn load(dir: &Path, name: &str) -> Result<JobPlan> {
    if name.is_empty()
        || name.starts_with('.')
        || name.contains(['/', '\\'])
        || name.chars().any(|c| c.is_control())
    {
        return Err(Error::config(format!(
            "{name:?} is not a valid job name: a job is named by its file's stem, e.g. `app` for {}/app.toml",
            dir.display()
        )));
    }
    let file = dir.join(format!("{name}.toml"));
    // The daemon hands its runs the text it last loaded successfully, so that a job file
    // broken after its last reload does not break scheduled runs.
    if let Some(pinned) = super::env::daemon_plan(name)
        && let Ok(text) = std::fs::read_to_string(&pinned)
    {
        return parse(name, &file, &text, &|k| std::env::var(k).ok());
    }
    if !file.is_file() {
        let known = job_names(dir).unwrap_or_default();
        let list = if known.is_empty() {
            "there are no job files there".to_string()
        } else {
            format!("known jobs: {}", known.join(", "))
        };
        return Err(Error::config(format!(
            "no job named {name:?}: {} does not exist ({list})",
            file.display()
        )));
    }
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Error::config(format!("cannot read job file {}: {e}", file.display())))?;
    parse(name, &file, &text, &|k| std::env::var(k).ok())
}

/// Load job `name` and return the text it was loaded from too.
pub fn load_with_text(dir: &Path, name: &str) -> Result<(JobPlan, String)> {
    let plan = load(dir, name)?;
    let text = std::fs::read_to_string(&plan.file)
        .map_err(|e| Error::config(format!("cannot read job file {}: {e}", plan.file.display())))?;
    // Parse what was read, so plan and text agree even if the file changed in between.
    let plan = parse(name, &plan.file, &text, &|k| std::env::var(k).ok())?;
    Ok((plan, text))
}

/// Load every job in `dir`.
pub fn load_all(dir: &Path) -> Result<Vec<JobPlan>> {
    job_names(dir)?.iter().map(|n| load(dir, n)).collect()
}

/// Parse job text. `env` looks up `${VAR}`s (a function so tests need not touch the
/// process environment).
pub fn parse(
    name: &str,
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<JobPlan> {
    let raw: RawJob = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        let at = match line {
            Some(l) => format!("{}:{l}", file.display()),
            None => file.display().to_string(),
        };
        let msg = e.message().trim().replace('\n', " ");
        let hint = if msg.contains("unknown field") {
            ""
        } else {
            " (see the job file example in README)"
        };
        Error::config(format!("job file {at}: {msg}{hint}"))
    })?;
    Checker {
        name,
        file,
        text,
        env,
    }
    .check(raw)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

struct Checker<'a> {
    name: &'a str,
    file: &'a Path,
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Checker<'_> {
    fn signing(&self, sg: &RawSigning) -> Result<SigningPlan> {
        let key_file = match &sg.key_file {
            Some(k) => Some(self.path_key(k, "signing.key_file")?),
            None => None,
        };
        let mut trusted = Vec::new();
        for t in &sg.trusted {
            let v = self.expand(t, "signing.trusted")?;
            let key = crate::minisign::PublicKey::parse(&v).or_else(|why| {
                self.err(
                    t.span(),
                    "signing.trusted",
                    format!("has {why}; list the public keys `backstop keygen` prints (RW...)"),
                )
            })?;
            trusted.push(key);
        }
        if trusted.is_empty() {
            return Err(Error::config(format!(
                "job file {}: [signing] needs `trusted = [\"RW...\"]`, the public keys whose snapshots this job accepts (from `backstop keygen`)",
                self.file.display()
            )));
        }
        Ok(SigningPlan { key_file, trusted })
    }

    fn verify(&self, v: RawVerify) -> Result<VerifyPlan> {
        let file = self.file.display();
        if let Some(s) = &v.schedule
            && let Err(why) = check_cron(s)
        {
            return Err(Error::config(format!(
                "job file {file}: `verify.schedule` = {s:?} is not a valid schedule: {why}"
            )));
        }
        let sample = match v.sample.as_deref() {
            None | Some("latest") => Sample::Latest,
            Some("latest+random") => Sample::LatestAndRandom,
            Some(s) => {
                return Err(Error::config(format!(
                    "job file {file}: `verify.sample` = {s:?} is not a sampling mode; valid: \"latest\", \"latest+random\""
                )));
            }
        };
        let max_age = match &v.max_age {
            Some(m) => Some(
                crate::config::parse_duration(m)
                    .map_err(|e| Error::config(format!("job file {file}: `verify.max_age` {e}")))?,
            ),
            None => None,
        };
        if let Some(c) = &v.command
            && c.is_empty()
        {
            return Err(Error::config(format!(
                "job file {file}: `verify.command` is empty; give a program and its arguments, e.g. [\"/usr/local/bin/check\", \"--quick\"]"
            )));
        }
        Ok(VerifyPlan {
            schedule: v.schedule,
            checks: v.checks,
            scratch_url: v.scratch_url,
            sample,
            command: v.command,
            max_age,
        })
    }

    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        msg: impl std::fmt::Display,
    ) -> Result<T> {
        Err(Error::config(format!(
            "job file {}:{}: `{key}` {msg}",
            self.file.display(),
            line_of(self.text, span.start)
        )))
    }

    /// Expand `${VAR}` from the environment; `$$` is a literal `$`.
    fn expand(&self, v: &Spanned<String>, key: &str) -> Result<String> {
        let s = v.get_ref();
        let mut out = String::with_capacity(s.len());
        let mut rest = s.as_str();
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(a) = after.strip_prefix('$') {
                out.push('$');
                rest = a;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    return self.err(v.span(), key, "has `${` without a closing `}`");
                };
                let var = &body[..end];
                if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return self.err(
                        v.span(),
                        key,
                        format!("has `${{{var}}}`: a variable name is letters, digits and _"),
                    );
                }
                match (self.env)(var) {
                    Some(val) => out.push_str(&val),
                    None => {
                        return self.err(
                            v.span(),
                            key,
                            format!(
                                "uses ${{{var}}}, but the environment variable {var} is not set"
                            ),
                        );
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn path_key(&self, v: &Spanned<String>, key: &str) -> Result<PathBuf> {
        let p = PathBuf::from(self.expand(v, key)?);
        if !p.is_absolute() {
            // Relative paths are taken from the job file's directory, like systemd's units.
            let base = self.file.parent().unwrap_or(Path::new("."));
            return Ok(base.join(p));
        }
        Ok(p)
    }

    fn check(&self, raw: RawJob) -> Result<JobPlan> {
        let environment = match &raw.environment {
            Some(e) => Some(self.expand(e, "environment")?),
            None => None,
        };
        let schedule = match &raw.schedule {
            Some(s) => {
                let v = self.expand(s, "schedule")?;
                check_cron(&v).or_else(|why| {
                    self.err(
                        s.span(),
                        "schedule",
                        format!("= {v:?} is not a valid schedule: {why}"),
                    )
                })?;
                Some(v)
            }
            None => None,
        };
        let timezone = match &raw.timezone {
            Some(t) => {
                let v = self.expand(t, "timezone")?;
                if jiff::tz::TimeZone::get(&v).is_err() {
                    return self.err(
                        t.span(),
                        "timezone",
                        format!("= {v:?} is not a known IANA time zone name (e.g. \"UTC\", \"Europe/Berlin\")"),
                    );
                }
                v
            }
            None => "UTC".to_string(),
        };
        let source = self.source(&raw.source)?;
        let storages = self.storages(&raw.storage)?;
        let encryption = self.encryption(&raw.encryption)?;
        let compression = self.compression(&raw.compression)?;
        let verify = match raw.verify {
            Some(v) => Some(self.verify(v)?),
            None => None,
        };
        let notify = match &raw.notify {
            Some(n) => Some(self.notify(n)?),
            None => None,
        };
        let signing = match &raw.signing {
            Some(sg) => Some(self.signing(sg)?),
            None => None,
        };
        Ok(JobPlan {
            name: self.name.to_string(),
            file: self.file.to_path_buf(),
            environment,
            schedule,
            timezone,
            source,
            storages,
            encryption,
            compression,
            retention: match &raw.retention {
                Some(r) => Some(crate::config::retention::Policy::from_raw(r).map_err(|e| {
                    Error::config(format!("job file {}: {e}", self.file.display()))
                })?),
                None => None,
            },
            verify,
            notify,
            hook_confirm: raw.hook.and_then(|h| h.confirm).unwrap_or(false),
            alarm: self.alarm(raw.alarm.unwrap_or_default())?,
            status_max_age: match raw.status.and_then(|s| s.max_age) {
                Some(v) => Some(crate::config::parse_duration(&v).map_err(|e| {
                    Error::config(format!(
                        "job file {}: `status.max_age` {e}",
                        self.file.display()
                    ))
                })?),
                None => None,
            },
            signing,
        })
    }

    fn notify(&self, n: &RawNotify) -> Result<NotifyPlan> {
        let format = n.format.clone().unwrap_or_else(|| "json".into());
        if !["json", "slack", "ntfy"].contains(&format.as_str()) {
            return Err(Error::config(format!(
                "job file {}: `notify.format` = {format:?} is not a format; valid: \"json\", \"slack\", \"ntfy\"",
                self.file.display()
            )));
        }
        let timeout = match &n.timeout {
            Some(t) => crate::config::parse_duration(t).map_err(|e| {
                Error::config(format!(
                    "job file {}: `notify.timeout` {e}",
                    self.file.display()
                ))
            })?,
            None => std::time::Duration::from_secs(10),
        };
        let mut urls = Vec::new();
        for (key, url) in [
            ("notify.webhook", &n.webhook),
            ("notify.healthcheck", &n.healthcheck),
        ] {
            urls.push(match url {
                Some(u) => {
                    let v = self.expand(u, key)?;
                    if !(v.starts_with("http://") || v.starts_with("https://")) {
                        return self.err(
                            u.span(),
                            key,
                            format!("= {v:?} is not an http:// or https:// URL"),
                        );
                    }
                    Some(v)
                }
                None => None,
            });
        }
        Ok(NotifyPlan {
            healthcheck: urls.pop().flatten(),
            webhook: urls.pop().flatten(),
            on_success: n.on_success.unwrap_or(false),
            on_anomaly: n.on_anomaly.unwrap_or(true),
            format,
            timeout,
        })
    }

    fn alarm(&self, a: RawAlarm) -> Result<AlarmPlan> {
        let shrink_percent = a.shrink_percent.unwrap_or(50);
        if !(1..=100).contains(&shrink_percent) {
            return Err(Error::config(format!(
                "job file {}: `alarm.shrink_percent` = {shrink_percent} is out of range; use 1 to 100 (default 50)",
                self.file.display()
            )));
        }
        let pin_for = match &a.pin_for {
            Some(v) => crate::config::parse_duration(v).map_err(|e| {
                Error::config(format!(
                    "job file {}: `alarm.pin_for` {e}",
                    self.file.display()
                ))
            })?,
            None => std::time::Duration::from_secs(30 * 86_400),
        };
        Ok(AlarmPlan {
            shrink_percent,
            pin_for,
        })
    }

    fn source(&self, s: &Spanned<RawSource>) -> Result<SourcePlan> {
        let span = s.span();
        let s = s.get_ref();
        let kind = s.kind.get_ref().as_str();
        let pg_only = [
            ("url", s.url.is_some()),
            ("password_file", s.password_file.is_some()),
            ("globals", s.globals.is_some()),
            ("data_directory", s.data_directory.is_some()),
            ("wal_stream", s.wal_stream.is_some()),
        ];
        let vol_only = [
            ("path", s.path.is_some()),
            ("snapshot_path", s.snapshot_path.is_some()),
            ("pre", s.pre.is_some()),
            ("post", s.post.is_some()),
            ("strict", s.strict.is_some()),
        ];
        match kind {
            "postgres" => {
                if let Some((k, _)) = vol_only.iter().find(|(_, set)| *set) {
                    return self.err(
                        span,
                        &format!("source.{k}"),
                        "belongs to a volume source; a postgres source takes url, password_file, globals",
                    );
                }
                if s.data_directory.is_some() || s.wal_stream.is_some() {
                    return self.err(
                        span,
                        if s.wal_stream.is_some() { "source.wal_stream" } else { "source.data_directory" },
                        "belongs to a postgres-cluster source; a postgres source takes url, password_file, globals",
                    );
                }
                let Some(url) = &s.url else {
                    return self.err(
                        span,
                        "source.url",
                        "is missing: a postgres source needs url = \"postgres://user@host:5432/dbname\"",
                    );
                };
                let expanded = self.expand(url, "source.url")?;
                let parsed = super::pgurl::PgUrl::parse(&expanded)
                    .or_else(|why| self.err(url.span(), "source.url", why))?;
                let password_file = match &s.password_file {
                    Some(p) => {
                        let path = self.path_key(p, "source.password_file")?;
                        if !path.is_file() {
                            return self.err(
                                p.span(),
                                "source.password_file",
                                format!("= {} does not exist or is not a file", path.display()),
                            );
                        }
                        Some(path)
                    }
                    None => None,
                };
                Ok(SourcePlan::Postgres(PostgresSource {
                    url: parsed,
                    password_file,
                    globals: s.globals.unwrap_or(false),
                }))
            }
            "postgres-cluster" => {
                if let Some((k, _)) = vol_only.iter().find(|(_, set)| *set) {
                    return self.err(
                        span,
                        &format!("source.{k}"),
                        "belongs to a volume source; a postgres-cluster source takes url, password_file, data_directory, wal_stream",
                    );
                }
                if s.globals.is_some() {
                    return self.err(
                        span,
                        "source.globals",
                        "belongs to a postgres source; a base backup of a cluster holds its roles already",
                    );
                }
                let Some(url) = &s.url else {
                    return self.err(
                        span,
                        "source.url",
                        "is missing: a postgres-cluster source needs url = \"postgres://user@host:5432/postgres\" (a role that may replicate)",
                    );
                };
                let expanded = self.expand(url, "source.url")?;
                let parsed = super::pgurl::PgUrl::parse(&expanded)
                    .or_else(|why| self.err(url.span(), "source.url", why))?;
                let password_file = match &s.password_file {
                    Some(p) => Some(self.path_key(p, "source.password_file")?),
                    None => None,
                };
                let data_directory = match &s.data_directory {
                    Some(d) => {
                        let p = PathBuf::from(self.expand(d, "source.data_directory")?);
                        if !p.is_absolute() {
                            return self.err(
                                d.span(),
                                "source.data_directory",
                                format!("= {:?} must be an absolute path", p.display()),
                            );
                        }
                        Some(p)
                    }
                    None => None,
                };
                Ok(SourcePlan::Cluster(ClusterSource {
                    url: parsed,
                    password_file,
                    data_directory,
                    wal_stream: s.wal_stream.unwrap_or(false),
                }))
            }
            "volume" => {
                if let Some((k, _)) = pg_only.iter().find(|(_, set)| *set) {
                    return self.err(
                        span,
                        &format!("source.{k}"),
                        "belongs to a postgres source; a volume source takes path, snapshot_path, pre, post, strict",
                    );
                }
                let Some(path) = &s.path else {
                    return self.err(
                        span,
                        "source.path",
                        "is missing: a volume source needs path = \"/absolute/dir\"",
                    );
                };
                let p = PathBuf::from(self.expand(path, "source.path")?);
                if !p.is_absolute() {
                    return self.err(
                        path.span(),
                        "source.path",
                        format!("= {:?} must be an absolute path", p.display()),
                    );
                }
                let snapshot_path = match &s.snapshot_path {
                    Some(sp) => Some(PathBuf::from(self.expand(sp, "source.snapshot_path")?)),
                    None => None,
                };
                for (k, cmd) in [("pre", &s.pre), ("post", &s.post)] {
                    if cmd.as_ref().is_some_and(|c| c.is_empty()) {
                        return self.err(
                            span,
                            &format!("source.{k}"),
                            "is an empty list: give a command and its arguments, e.g. [\"fsfreeze\", \"-f\", \"/data\"], or leave it out",
                        );
                    }
                }
                Ok(SourcePlan::Volume(VolumeSource {
                    path: p,
                    snapshot_path,
                    pre: s.pre.clone().unwrap_or_default(),
                    post: s.post.clone().unwrap_or_default(),
                    strict: s.strict.unwrap_or(false),
                }))
            }
            other => self.err(
                s.kind.span(),
                "source.type",
                format!("= {other:?} is not a source type; valid: \"postgres\", \"postgres-cluster\", \"volume\""),
            ),
        }
    }

    /// `[storage]` or `[[storage]]`: each table checked, names given and unique.
    fn storages(&self, v: &Spanned<RawStorages>) -> Result<Vec<StoragePlan>> {
        let at = v.span();
        let tables: Vec<(&Spanned<RawStorage>, String)> = match v.get_ref() {
            RawStorages::One(t) => vec![(t.as_ref(), "storage".to_string())],
            RawStorages::Many(a) if !a.is_empty() => a
                .iter()
                .enumerate()
                .map(|(i, t)| (t, format!("storage[{i}]")))
                .collect(),
            RawStorages::Many(_) => {
                return self.err(
                    at,
                    "storage",
                    "must be one [storage] table or several [[storage]] tables, each with a url",
                );
            }
        };
        let several = tables.len() > 1;
        let mut out: Vec<StoragePlan> = Vec::new();
        for (raw, key) in tables {
            let span = raw.get_ref().url.span();
            let mut plan = self.storage(raw, &key)?;
            match &raw.get_ref().name {
                Some(n) => {
                    let name = n.get_ref();
                    if name.is_empty()
                        || name.len() > 32
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    {
                        return self.err(
                            n.span(),
                            &format!("{key}.name"),
                            format!("= {name:?} is not a storage name; valid: 1 to 32 letters, digits, - or _, e.g. \"offsite\""),
                        );
                    }
                    plan.name = name.clone();
                }
                None if several => {
                    return self.err(
                        span,
                        &format!("{key}.name"),
                        "is missing; a job with several [[storage]] tables names each one, e.g. name = \"offsite\"",
                    );
                }
                None => {}
            }
            if let Some(n) = &raw.get_ref().name
                && out.iter().any(|o| &o.name == n.get_ref())
            {
                return self.err(
                    n.span(),
                    &format!("{key}.name"),
                    format!("= {:?} is used by two storages of the job; each storage needs its own name", plan.name),
                );
            }
            out.push(plan);
        }
        Ok(out)
    }

    fn storage(&self, s: &Spanned<RawStorage>, key: &str) -> Result<StoragePlan> {
        let s = s.get_ref();
        let url = self.expand(&s.url, &format!("{key}.url"))?;
        let location = parse_storage_url(&url)
            .or_else(|why| self.err(s.url.span(), &format!("{key}.url"), why))?;
        let endpoint = match &s.endpoint {
            Some(e) => {
                let v = self.expand(e, &format!("{key}.endpoint"))?;
                match url::Url::parse(&v) {
                    Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                    _ => {
                        return self.err(
                            e.span(),
                            &format!("{key}.endpoint"),
                            format!("= {v:?} is not an http(s) URL, e.g. \"https://s3.eu-central-003.backblazeb2.com\""),
                        );
                    }
                }
                Some(v)
            }
            None => None,
        };
        if matches!(location, StorageLocation::File { .. })
            && (endpoint.is_some() || s.object_lock_days.is_some())
        {
            return self.err(
                s.url.span(),
                &format!("{key}.url"),
                "is a file:// URL, but endpoint/object_lock_days are S3 settings; use an s3:// URL with them",
            );
        }
        let object_lock = match (&s.object_lock_days, &s.object_lock_mode) {
            (None, None) => None,
            (None, Some(m)) => {
                return self.err(
                    m.span(),
                    &format!("{key}.object_lock_mode"),
                    "is set without storage.object_lock_days; set both, e.g. object_lock_days = 30",
                );
            }
            (Some(d), mode) => {
                let days = *d.get_ref();
                if !(1..=36500).contains(&days) {
                    return self.err(
                        d.span(),
                        &format!("{key}.object_lock_days"),
                        format!("= {days} is out of range; valid: 1 to 36500 days"),
                    );
                }
                let mode = match mode.as_ref().map(|m| m.get_ref().as_str()) {
                    None | Some("governance") => LockMode::Governance,
                    Some("compliance") => LockMode::Compliance,
                    Some(other) => {
                        return self.err(
                            mode.as_ref().map(|m| m.span()).unwrap_or(d.span()),
                            &format!("{key}.object_lock_mode"),
                            format!("= {other:?} is not a lock mode; valid: \"governance\", \"compliance\""),
                        );
                    }
                };
                Some((mode, days as u32))
            }
        };
        let part_size = match &s.part_size_mib {
            Some(p) => {
                let v = *p.get_ref();
                if !(5..=5120).contains(&v) {
                    return self.err(
                        p.span(),
                        &format!("{key}.part_size_mib"),
                        format!("= {v} is out of range; S3 parts are 5 to 5120 MiB"),
                    );
                }
                v as usize * MIB
            }
            None => DEFAULT_PART_SIZE,
        };
        let parts_in_flight = match &s.parts_in_flight {
            Some(p) => {
                let v = *p.get_ref();
                if !(1..=64).contains(&v) {
                    return self.err(
                        p.span(),
                        &format!("{key}.parts_in_flight"),
                        format!("= {v} is out of range; valid: 1 to 64"),
                    );
                }
                v as usize
            }
            None => DEFAULT_PARTS_IN_FLIGHT,
        };
        let retention = match &s.retention {
            Some(r) => Some(crate::config::retention::Policy::from_raw(r).map_err(|e| {
                Error::config(format!("job file {}: {key}: {e}", self.file.display()))
            })?),
            None => None,
        };
        Ok(StoragePlan {
            name: "default".to_string(),
            retention,
            url,
            location,
            endpoint,
            region: s.region.clone(),
            path_style: s.path_style.unwrap_or(false),
            profile: s.profile.clone(),
            object_lock,
            part_size,
            parts_in_flight,
        })
    }

    fn encryption(&self, e: &Spanned<RawEncryption>) -> Result<EncryptionPlan> {
        let span = e.span();
        let e = e.get_ref();
        let mut recipients = Vec::new();
        let mut parsed = Vec::new();
        for r in &e.recipients {
            let v = self.expand(r, "encryption.recipients")?;
            let key = age::x25519::Recipient::from_str(v.trim()).or_else(|why| {
                self.err(
                    r.span(),
                    "encryption.recipients",
                    format!("has {v:?}, which is not an age X25519 public key ({why}); it looks like age1... (from `age-keygen -y KEYFILE`)"),
                )
            })?;
            recipients.push(v.trim().to_string());
            parsed.push(key);
        }
        if let Some(f) = &e.recipients_file {
            let path = self.path_key(f, "encryption.recipients_file")?;
            let text = std::fs::read_to_string(&path).or_else(|why| {
                self.err(
                    f.span(),
                    "encryption.recipients_file",
                    format!("= {}: cannot be read: {why}", path.display()),
                )
            })?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let key = age::x25519::Recipient::from_str(line).or_else(|why| {
                    self.err(
                        f.span(),
                        "encryption.recipients_file",
                        format!(
                            "= {}: line {} is not an age X25519 public key ({why})",
                            path.display(),
                            i + 1
                        ),
                    )
                })?;
                recipients.push(line.to_string());
                parsed.push(key);
            }
        }
        if parsed.is_empty() {
            return self.err(
                span,
                "encryption.recipients",
                "is empty: give at least one age public key (age1...), e.g. from `age-keygen -o restore.key`; the private key stays off the backup host",
            );
        }
        let identity_file = match &e.identity_file {
            Some(f) => Some(self.path_key(f, "encryption.identity_file")?),
            None => None,
        };
        Ok(EncryptionPlan {
            recipients,
            parsed,
            identity_file,
        })
    }

    fn compression(&self, c: &RawCompression) -> Result<CompressionPlan> {
        let level = match &c.level {
            Some(l) => {
                let v = *l.get_ref();
                if !(1..=22).contains(&v) {
                    return self.err(
                        l.span(),
                        "compression.level",
                        format!("= {v} is out of range; zstd levels are 1 (fastest) to 22 (smallest), 3 is the default"),
                    );
                }
                v as i32
            }
            None => 3,
        };
        let threads = match &c.threads {
            Some(t) => {
                let v = *t.get_ref();
                if !(0..=256).contains(&v) {
                    return self.err(
                        t.span(),
                        "compression.threads",
                        format!("= {v} is out of range; valid: 0 (all cores) to 256"),
                    );
                }
                v as u32
            }
            None => 0,
        };
        Ok(CompressionPlan { level, threads })
    }
}

/// Parse a storage URL: `s3://bucket[/prefix]` or `file:///absolute/dir`.
pub fn parse_storage_url(url: &str) -> std::result::Result<StorageLocation, String> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !valid_bucket {
            return Err(format!(
                "= {url:?} has bucket name {bucket:?}; a bucket name is 3-63 lowercase letters, digits, '-' and '.'"
            ));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if prefix.split('/').any(|p| p == ".." || p == ".") {
            return Err(format!(
                "= {url:?}: the prefix may not contain . or .. segments"
            ));
        }
        return Ok(StorageLocation::S3 {
            bucket: bucket.to_string(),
            prefix,
        });
    }
    if let Some(rest) = url.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(format!(
                "= {url:?} is not an absolute file URL; write file:///absolute/dir (three slashes)"
            ));
        }
        return Ok(StorageLocation::File {
            root: PathBuf::from(rest),
        });
    }
    Err(format!(
        "= {url:?} is not a storage URL; valid: \"s3://bucket/prefix\" or \"file:///absolute/dir\""
    ))
}

/// Check a cron expression: 5 fields (or 6 with seconds first) or @hourly/@daily/...
pub fn check_cron(expr: &str) -> std::result::Result<(), String> {
    crate::config::schedule::Schedule::parse(expr, "UTC").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    fn job(text: &str) -> Result<JobPlan> {
        let env = |k: &str| match k {
            "DB_HOST" => Some("db.internal".to_string()),
            "BUCKET" => Some("offsite-backups".to_string()),
            _ => None,
        };
        parse("app", Path::new("/etc/backstop/jobs/app.toml"), text, &env)
    }

    fn minimal(extra: &str) -> String {
        format!(
            r#"
[source]
type = "postgres"
url = "postgres://backup@${{DB_HOST}}:5432/app"
[storage]
url = "s3://${{BUCKET}}/prod"
[encryption]
recipients = ["{KEY}"]
{extra}"#
        )
    }

    fn two_storages(a: &str, b: &str) -> String {
        format!(
            r#"
[source]
type = "postgres"
url = "postgres://backup@db:5432/app"
[encryption]
recipients = ["{KEY}"]
[retention]
keep_last = 7
[[storage]]
{a}
[[storage]]
{b}
"#
        )
    }

    #[test]
    fn several_storages_each_named_with_their_own_retention() {
        let plan = job(&two_storages(
            "name = \"fast\"\nurl = \"file:///var/backups\"\nretention = { keep_last = 2 }",
            "name = \"offsite\"\nurl = \"s3://bucket-b/p\"\nobject_lock_days = 30",
        ))
        .unwrap();
        let names: Vec<&str> = plan.storages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["fast", "offsite"]);
        assert_eq!(plan.storages[0].retention.as_ref().unwrap().keep_last, 2);
        assert!(plan.storages[1].retention.is_none());
        assert_eq!(plan.retention.as_ref().unwrap().keep_last, 7);
        assert_eq!(
            plan.storages[1].object_lock,
            Some((LockMode::Governance, 30))
        );
        // One [storage] table is named "default".
        assert_eq!(job(&minimal("")).unwrap().storages[0].name, "default");
    }

    #[test]
    fn several_storages_need_distinct_valid_names() {
        let e = job(&two_storages(
            "url = \"file:///a\"",
            "name = \"b\"\nurl = \"file:///b\"",
        ))
        .unwrap_err();
        assert!(
            e.message().contains("storage[0].name") && e.message().contains("is missing"),
            "{}",
            e.message()
        );
        assert!(
            e.message().contains(":10:"),
            "names the line: {}",
            e.message()
        );
        let e = job(&two_storages(
            "name = \"x\"\nurl = \"file:///a\"",
            "name = \"x\"\nurl = \"file:///b\"",
        ))
        .unwrap_err();
        assert!(
            e.message().contains("used by two storages"),
            "{}",
            e.message()
        );
        let e = job(&two_storages(
            "name = \"a b\"\nurl = \"file:///a\"",
            "name = \"x\"\nurl = \"file:///b\"",
        ))
        .unwrap_err();
        assert!(
            e.message().contains("is not a storage name"),
            "{}",
            e.message()
        );
        let e = job(&two_storages(
            "name = \"a\"\nurl = \"file:///a\"",
            "name = \"b\"\nurl = \"ftp://b\"",
        ))
        .unwrap_err();
        assert!(e.message().contains("storage[1].url"), "{}", e.message());
        let e = job(&two_storages(
            "name = \"a\"\nurl = \"file:///a\"\nbogus = 1",
            "name = \"b\"\nurl = \"file:///b\"",
        ))
        .unwrap_err();
        assert!(e.message().contains("bogus"), "{}", e.message());
    }

    #[test]
    fn minimal_job_checks_and_expands_variables() {
        let plan = job(&minimal("")).unwrap();
        let SourcePlan::Postgres(pg) = &plan.source else {
            panic!("expected postgres")
        };
        assert_eq!(pg.url.host(), "db.internal");
        assert_eq!(pg.url.dbname(), "app");
        match &plan.storages[0].location {
            StorageLocation::S3 { bucket, prefix } => {
                assert_eq!(bucket, "offsite-backups");
                assert_eq!(prefix, "prod");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(plan.compression.level, 3);
        assert_eq!(plan.timezone, "UTC");
        assert_eq!(plan.encryption.recipients, vec![KEY.to_string()]);
    }

    #[test]
    fn unknown_key_names_file_line_and_valid_keys() {
        let e = job(&minimal("[compression]\nlevel = 3\nthreds = 2\n")).unwrap_err();
        assert_eq!(e.kind(), crate::error::Kind::Config);
        let m = e.to_string();
        assert!(m.contains("/etc/backstop/jobs/app.toml:11"), "{m}");
        assert!(m.contains("threds"), "{m}");
        assert!(m.contains("threads"), "{m}");
    }

    #[test]
    fn missing_variable_is_named() {
        let text = minimal("").replace("${DB_HOST}", "${NOPE_HOST}");
        let m = job(&text).unwrap_err().to_string();
        assert!(
            m.contains("NOPE_HOST") && m.contains("source.url") && m.contains("app.toml:4"),
            "{m}"
        );
    }

    #[test]
    fn bad_values_say_what_is_valid() {
        let cases = [
            (minimal("[compression]\nlevel = 40\n"), "1 (fastest) to 22"),
            (
                minimal("").replace("s3://${BUCKET}/prod", "ftp://x"),
                "s3://bucket/prefix",
            ),
            (minimal("").replace(KEY, "age1nope"), "age1..."),
            (
                minimal("").replace("\"postgres\"", "\"mysql\""),
                "\"postgres\", \"postgres-cluster\", \"volume\"",
            ),
            (
                format!("schedule = \"61 * * * *\"\n{}", minimal("")),
                "schedule",
            ),
            (
                format!("timezone = \"Mars/Olympus\"\n{}", minimal("")),
                "IANA",
            ),
        ];
        for (text, want) in cases {
            let e = job(&text).unwrap_err();
            assert_eq!(e.kind(), crate::error::Kind::Config);
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn volume_keys_in_postgres_source_are_refused() {
        let text = minimal("").replace(
            "type = \"postgres\"",
            "type = \"postgres\"\npath = \"/data\"",
        );
        let m = job(&text).unwrap_err().to_string();
        assert!(m.contains("source.path") && m.contains("volume"), "{m}");
    }

    #[test]
    fn dollar_escapes() {
        let text = minimal("").replace("/prod", "/p$$x");
        let plan = job(&text).unwrap();
        match plan.storages[0].location.clone() {
            StorageLocation::S3 { prefix, .. } => assert_eq!(prefix, "p$x"),
            _ => unreachable!(),
        }
    }
}
