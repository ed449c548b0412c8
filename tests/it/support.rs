//! Test fixtures with real parts: a PostgreSQL cluster made by `initdb` in a temp dir (as
//! the `postgres` user when run as root) on a free port, a `moto_server` S3 process on a
//! free loopback port, and a sandbox (jobs dir, state dir, age keys) for running the real
//! `backstop` binary. A missing service is a test failure with a message saying how to
//! install it, never a skip.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "testing";
pub const SECRET_KEY: &str = "testing";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn pg_bindir() -> PathBuf {
    if let Some(d) = std::env::var_os("BACKSTOP_TEST_PG_BINDIR") {
        return PathBuf::from(d);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.retain(|d| d.join("initdb").is_file());
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().unwrap_or_else(|| {
        panic!("no PostgreSQL server found (initdb in /usr/lib/postgresql/*/bin); run scripts/install-deps.sh")
    })
}

/// Run a command as the `postgres` user when we are root.
fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A throwaway PostgreSQL cluster.
pub struct Pg {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub bindir: PathBuf,
}

impl Pg {
    pub fn start() -> Pg {
        Self::start_with_conf("")
    }

    /// A cluster with `conf` appended to its postgresql.conf before it starts.
    pub fn start_with_conf(conf: &str) -> Pg {
        let bindir = pg_bindir();
        let dir = tempfile::Builder::new()
            .prefix("backstop-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success(), "chown of the cluster dir to postgres failed");
        }
        let out = as_pg_user(&bindir.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ])
            .output()
            .expect("initdb could not be run");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !conf.is_empty() {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .unwrap();
            writeln!(f, "{conf}").unwrap();
        }
        let port = free_port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=40",
            dir.path().display()
        );
        let out = as_pg_user(&bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-o", &opts, "-l"])
            .arg(dir.path().join("server.log"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
        );
        Pg { dir, port, bindir }
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Run SQL (several statements allowed) in `db`; panics with psql's words on error.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = self.try_sql(db, sql);
        match out {
            Ok(s) => s,
            Err(e) => panic!("SQL failed in {db}: {e}\n{sql}"),
        }
    }

    pub fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bindir.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(db),
                "-f",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(sql.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    pub fn databases(&self) -> Vec<String> {
        self.sql(
            "postgres",
            "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1",
        )
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// Every user table (leaf partitions included) -> (row count, md5 of its sorted rows).
    pub fn fingerprint(&self, db: &str) -> BTreeMap<String, (i64, String)> {
        let tables = self.sql(
            db,
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
        );
        let mut out = BTreeMap::new();
        for t in tables.lines() {
            let r = self.sql(
                db,
                &format!(
                    "SET row_security = off; SELECT count(*), coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text)), '') FROM {t} x"
                ),
            );
            let (n, h) = r.split_once('|').unwrap();
            out.insert(t.to_string(), (n.parse().unwrap(), h.to_string()));
        }
        out
    }

    /// The whole database as plain SQL (schema, data, sequences, large objects),
    /// without the lines that differ between any two dumps.
    pub fn plain_dump(&self, db: &str) -> String {
        let out = Command::new(self.bindir.join("pg_dump"))
            .args(["-d", &self.url(db)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                !l.starts_with("\\restrict")
                    && !l.starts_with("\\unrestrict")
                    && !l.starts_with("-- Dumped")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = as_pg_user(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

pub fn moto_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BACKSTOP_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-s3/bin/moto_server");
    assert!(
        p.is_file(),
        "moto_server not found at {} (set BACKSTOP_MOTO_SERVER, or run scripts/install-deps.sh)",
        p.display()
    );
    p
}

/// A real S3 server process (moto) on loopback.
pub struct S3 {
    child: Child,
    pub port: u16,
}

impl S3 {
    pub fn start() -> S3 {
        Self::start_on(free_port())
    }

    /// A new (empty) server on `port`, e.g. where a killed one listened.
    pub fn start_on(port: u16) -> S3 {
        let child = Command::new(moto_server_bin())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server could not be started");
        let s = S3 { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A storage handle on `bucket/prefix` (creates the bucket).
    pub async fn storage(
        &self,
        bucket: &str,
        prefix: &str,
        part_mib: usize,
        lock: bool,
    ) -> backstop::storage::s3::S3Storage {
        let s = backstop::storage::s3::S3Storage::new(backstop::storage::s3::S3Options {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".into()),
            path_style: true,
            profile: None,
            credentials: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
            part_size: part_mib * backstop::config::MIB,
            parts_in_flight: 3,
            object_lock: lock.then_some((backstop::config::LockMode::Governance, 1)),
        })
        .await
        .unwrap();
        let _ = s
            .client()
            .create_bucket()
            .bucket(bucket)
            .object_lock_enabled_for_bucket(lock)
            .send()
            .await;
        s
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A place to run the real binary: jobs dir, state dir, an age key pair.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub identity: PathBuf,
    pub recipient: String,
    pub env: Vec<(String, String)>,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("backstop-it-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
        let id = age::x25519::Identity::generate();
        let recipient = id.to_public().to_string();
        let identity = dir.path().join("restore.key");
        use age::secrecy::ExposeSecret;
        std::fs::write(&identity, format!("{}\n", id.to_string().expose_secret())).unwrap();
        let env = vec![
            (
                "BACKSTOP_STATE_DIR".into(),
                dir.path().join("state").display().to_string(),
            ),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ];
        Sandbox {
            dir,
            identity,
            recipient,
            env,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn jobs(&self) -> PathBuf {
        self.dir.path().join("jobs")
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn write_job(&self, name: &str, text: &str) {
        std::fs::write(self.jobs().join(format!("{name}.toml")), text).unwrap();
    }

    /// A postgres job on `url` into `file://` storage.
    pub fn file_job(&self, name: &str, url: &str, extra: &str) {
        self.write_job(
            name,
            &format!(
                "[source]\ntype = \"postgres\"\nurl = \"{url}\"\n{extra}\n[storage]\nurl = \"file://{}\"\n\n[encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n",
                self.store().display(),
                self.recipient,
                self.identity.display()
            ),
        );
    }

    /// A postgres job on `url` into S3 bucket `bucket`.
    pub fn s3_job(&self, name: &str, url: &str, s3: &S3, bucket: &str, storage_extra: &str) {
        self.write_job(
            name,
            &format!(
                "[source]\ntype = \"postgres\"\nurl = \"{url}\"\n\n[storage]\nurl = \"s3://{bucket}/backups\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\npath_style = true\n{storage_extra}\n\n[encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n",
                s3.endpoint(),
                self.recipient,
                self.identity.display()
            ),
        );
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_backstop"));
        c.arg("--jobs")
            .arg(self.jobs())
            .args(args)
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// `copy JOB --from FROM --to TO --all-missing`, which must succeed; its report.
    pub fn copy_all_missing(&self, job: &str, from: &str, to: &str) -> serde_json::Value {
        let out = self.run(&[
            "--json",
            "copy",
            job,
            "--from",
            from,
            "--to",
            to,
            "--all-missing",
        ]);
        expect_code(&out, 0);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path().join("state/audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Assert a command's exit code, showing its output when it differs.
#[track_caller]
pub fn expect_code(out: &Output, code: i32) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}\nstdout: {stdout}\nstderr: {stderr}"
    );
    format!("{stdout}{stderr}")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The awkward database: schemas, unicode quoted names, extensions, enums, domains, jsonb,
/// arrays, bytea with NULs, large objects, partitions, a materialized view, sequences at
/// odd positions, triggers, row-level security.
pub const AWKWARD_SQL: &str = r#"
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE EXTENSION IF NOT EXISTS citext;
CREATE SCHEMA "Sales & Ops";
CREATE SCHEMA ünïcödé;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE "Sales & Ops"."Bookings ✈" (
  id bigserial PRIMARY KEY,
  "Guest Name" citext NOT NULL,
  mood mood,
  nights posint,
  tags text[],
  attrs hstore,
  doc jsonb,
  blob bytea,
  at timestamptz DEFAULT now(),
  note text
);
INSERT INTO "Sales & Ops"."Bookings ✈" ("Guest Name", mood, nights, tags, attrs, doc, blob, note)
SELECT 'gäst ' || g, (ARRAY['sad','ok','happy'])[1 + g % 3]::mood, 1 + g % 9,
       ARRAY['a' || g, 'with,comma', 'with"quote', NULL],
       hstore('k' || g, 'v\t' || g),
       jsonb_build_object('g', g, 'nested', jsonb_build_array(g, 'x', NULL, true)),
       decode(lpad(to_hex(g), 8, '0') || '00ff00', 'hex'),
       CASE WHEN g % 5 = 0 THEN E'line1\nline2\ttab \\ backslash' WHEN g % 7 = 0 THEN '' ELSE NULL END
FROM generate_series(1, 5000) g;
CREATE TABLE ünïcödé."Ταβλε" (k text PRIMARY KEY, v numeric(20,6));
INSERT INTO ünïcödé."Ταβλε" SELECT 'κ' || g, g / 7.0 FROM generate_series(1, 300) g;
CREATE TABLE measurements (id int, at date NOT NULL, v double precision) PARTITION BY RANGE (at);
CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE measurements_2026 PARTITION OF measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO measurements SELECT g, DATE '2025-06-01' + (g % 400), g * 1.5 FROM generate_series(1, 2000) g;
CREATE MATERIALIZED VIEW mood_counts AS SELECT mood, count(*) AS n FROM "Sales & Ops"."Bookings ✈" GROUP BY mood;
CREATE SEQUENCE odd_seq START 1000 INCREMENT 7;
SELECT setval('odd_seq', 123457, true);
CREATE TABLE audit_trail (id serial, what text);
CREATE FUNCTION log_booking() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit_trail (what) VALUES ('booking ' || NEW.id); RETURN NEW; END $$;
CREATE TRIGGER booking_audit AFTER INSERT ON "Sales & Ops"."Bookings ✈" FOR EACH ROW EXECUTE FUNCTION log_booking();
INSERT INTO "Sales & Ops"."Bookings ✈" ("Guest Name", nights) VALUES ('after trigger', 2);
CREATE TABLE secrets (owner_name text, secret text);
ALTER TABLE secrets ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON secrets USING (owner_name = current_user);
INSERT INTO secrets VALUES ('postgres', 's1'), ('someone', 's2');
CREATE TABLE empty_table (x text);
CREATE TABLE blank_lines (x text);
INSERT INTO blank_lines VALUES (''), (''), ('\.'), (E'\\.');
SELECT lo_from_bytea(0, decode('00010203ff', 'hex'));
SELECT lo_from_bytea(0, convert_to(repeat('large object ', 1000), 'UTF8'));
"#;

/// Create database `db` with the awkward content.
pub fn load_awkward(pg: &Pg, db: &str) {
    pg.sql("postgres", &format!("CREATE DATABASE \"{db}\""));
    pg.sql(db, AWKWARD_SQL);
}

/// Bulk rows for size-dependent tests: about `mib` MiB of incompressible-ish text.
pub fn load_bulk(pg: &Pg, db: &str, mib: usize) {
    pg.sql("postgres", &format!("CREATE DATABASE \"{db}\""));
    let rows = mib * 1024 * 1024 / 100;
    pg.sql(
        db,
        &format!(
            "CREATE TABLE bulk (id int, a text, b text);\n\
             INSERT INTO bulk SELECT g, md5(g::text) || md5((g*7)::text), md5((g*13)::text) || md5((g*31)::text) FROM generate_series(1, {rows}) g;"
        ),
    );
}

impl Sandbox {
    /// Add lines (top-level keys or whole sections) to job `name`'s file.
    pub fn append_job(&self, name: &str, top: &str, tail: &str) {
        let path = self.jobs().join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{top}\n{text}\n{tail}\n")).unwrap();
    }

    /// Snapshot ids of `job` (its own, not foreign ones), newest first, with their triggers.
    pub fn snapshots(&self, job: &str) -> Vec<(String, String)> {
        let out = self.run(&["--json", "list", job]);
        expect_code(&out, 0);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|r| r.get("foreign").is_none())
            .map(|r| {
                (
                    r["snapshot"].as_str().unwrap().to_string(),
                    r["trigger"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// A volume job on `path` into `file://` storage.
    pub fn volume_job(&self, name: &str, path: &Path, extra: &str) {
        self.write_job(
            name,
            &format!(
                "[source]\ntype = \"volume\"\npath = \"{}\"\n{extra}\n[storage]\nurl = \"file://{}\"\n\n[encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n",
                path.display(),
                self.store().display(),
                self.recipient,
                self.identity.display()
            ),
        );
    }
}
