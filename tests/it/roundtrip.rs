//! Round trips with real parts: an awkward database backed up into S3 (moto) and file
//! storage, restored by `backstop restore` and by hand with the real age/zstd/pg_restore
//! CLIs, compared table by table and as a whole plain dump.

use crate::support::*;

fn row_counts(pg: &Pg, db: &str) -> Vec<(String, String, u64)> {
    let mut v: Vec<(String, String, u64)> = pg
        .fingerprint(db)
        .into_iter()
        .map(|(t, (n, _))| {
            let (s, name) = t.split_once('.').unwrap();
            (
                s.trim_matches('"').to_string(),
                name.trim_matches('"').to_string(),
                n as u64,
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn awkward_database_round_trips_through_s3() {
    let pg = Pg::start();
    let s3 = S3::start();
    let sb = Sandbox::new();
    load_awkward(&pg, "app");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(s3.storage("offsite", "", 5, false));
    sb.s3_job("app", &pg.url("app"), &s3, "offsite", "part_size_mib = 5");

    let out = sb.run(&["--json", "backup", "app", "--reason", "test run"]);
    expect_code(&out, 0);
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = m["snapshot"].as_str().unwrap().to_string();
    assert_eq!(m["trigger"], "manual");
    assert_eq!(m["reason"], "test run");
    assert_eq!(
        m["source"]["pg_dump_version"]
            .as_str()
            .unwrap()
            .split('.')
            .next(),
        Some("15")
    );
    // no content facts in the plaintext manifest
    let text = out.stdout.iter().map(|&b| b as char).collect::<String>();
    assert!(
        !text.contains("Bookings") && !text.contains("measurements"),
        "table names leaked into the manifest"
    );

    let list = sb.run(&["--json", "list", "app"]);
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["snapshot"], id.as_str());

    let out = sb.run(&["restore", "app", "--to", &pg.url("app_copy")]);
    expect_code(&out, 0);
    assert_eq!(pg.fingerprint("app"), pg.fingerprint("app_copy"));
    assert_eq!(pg.plain_dump("app"), pg.plain_dump("app_copy"));
    assert_eq!(
        pg.sql("app_copy", "SELECT last_value FROM odd_seq"),
        "123457"
    );
    assert_eq!(
        pg.sql("app_copy", "SELECT count(*) FROM pg_largeobject_metadata"),
        "2"
    );
    // pg_restore refreshes materialized views: the restored one counts all 5001 bookings
    assert_eq!(pg.sql("app_copy", "SELECT sum(n) FROM mood_counts"), "5001");
    assert_eq!(
        pg.sql(
            "app_copy",
            "SELECT relrowsecurity FROM pg_class WHERE relname = 'secrets'"
        ),
        "t"
    );

    // the encrypted facts hold exact per-table row counts, equal to the data
    let s = rt.block_on(s3.storage("offsite", "backups", 5, false));
    let facts = rt
        .block_on(backstop::storage::Storage::get_bytes(
            &s,
            &format!("app/{id}/facts.json.zst.age"),
        ))
        .unwrap()
        .unwrap();
    let plain = decrypt_with_cli(&sb, &facts);
    let f: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    let mut recorded: Vec<(String, String, u64)> = f["dump"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["schema"].as_str().unwrap().into(),
                t["table"].as_str().unwrap().into(),
                t["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    recorded.sort();
    assert_eq!(recorded, row_counts(&pg, "app"));
    assert_eq!(f["dump"]["large_objects"], 2);

    // the audit log has the backup and the restore
    let audit = sb.audit_lines();
    let actions: Vec<_> = audit
        .iter()
        .map(|l| (l["action"].as_str().unwrap(), l["result"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, vec![("backup", "ok"), ("restore", "ok")]);
    assert_eq!(audit[1]["snapshot"], id.as_str());
}

/// `age -d -i KEY | zstd -d` with the real CLIs.
fn decrypt_with_cli(sb: &Sandbox, data: &[u8]) -> Vec<u8> {
    let f = sb.path().join("obj.age");
    std::fs::write(&f, data).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "age -d -i '{}' '{}' | zstd -d",
            sb.identity.display(),
            f.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "age|zstd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn snapshot_restores_by_hand_with_age_zstd_and_pg_restore() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_awkward(&pg, "app");
    sb.file_job("app", &pg.url("app"), "");
    expect_code(&sb.run(&["backup", "app"]), 0);
    let dump = std::fs::read_dir(sb.store().join("app"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("dump.zst.age");
    pg.sql("postgres", "CREATE DATABASE byhand");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; age -d -i '{}' '{}' | zstd -d | '{}' -d '{}'",
            sb.identity.display(),
            dump.display(),
            pg.bindir.join("pg_restore").display(),
            pg.url("byhand")
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore by hand failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pg.fingerprint("app"), pg.fingerprint("byhand"));
    assert_eq!(pg.plain_dump("app"), pg.plain_dump("byhand"));
}

#[test]
fn wiped_database_comes_back_with_one_command() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_awkward(&pg, "app");
    sb.file_job("app", &pg.url("app"), "");
    expect_code(&sb.run(&["backup", "app"]), 0);
    let before = pg.fingerprint("app");
    let before_dump = pg.plain_dump("app");
    pg.sql("postgres", "DROP DATABASE app");
    // the disaster case needs no confirmation: nothing is there to lose
    let out = sb.run(&["restore", "app"]);
    expect_code(&out, 0);
    assert_eq!(pg.fingerprint("app"), before);
    assert_eq!(pg.plain_dump("app"), before_dump);
    assert_eq!(
        pg.databases(),
        vec!["app".to_string(), "postgres".to_string()]
    );
}

#[test]
fn restore_with_yes_replaces_a_changed_database_and_keeps_the_old_one() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_awkward(&pg, "app");
    sb.file_job("app", &pg.url("app"), "");
    expect_code(&sb.run(&["backup", "app"]), 0);
    let good = pg.fingerprint("app");
    pg.sql(
        "app",
        "DELETE FROM \"Sales & Ops\".\"Bookings ✈\" WHERE id < 1000; DROP TABLE measurements;",
    );
    let damaged = pg.fingerprint("app");
    let out = sb.run(&["restore", "app", "--yes"]);
    let text = expect_code(&out, 0);
    assert_eq!(pg.fingerprint("app"), good);
    let kept = pg
        .databases()
        .into_iter()
        .find(|d| d.starts_with("app_pre_restore_"))
        .expect("old database kept");
    assert!(text.contains(&kept), "{text}");
    assert_eq!(pg.fingerprint(&kept), damaged);
}

/// The swap stops the autovacuum workers on the database it sets aside and on the new one
/// before it renames them (the rename would stop them itself, then sleep 100 ms before it
/// looks again). Stopping one takes a superuser: a restore by the database's owner, who
/// is not one, swaps in all the same (the owner here sees the workers, through
/// `pg_read_all_stats`, and is refused when it tries to stop them). Here autovacuum visits
/// every second and crawls, so a worker is on the damaged database when the restore swaps
/// it aside.
#[test]
fn the_swap_stops_autovacuum_as_superuser_and_swaps_in_as_owner() {
    let pg = Pg::start_with_conf(
        "autovacuum_naptime = 1\nautovacuum_vacuum_cost_delay = 100\nautovacuum_vacuum_cost_limit = 1",
    );
    pg.sql(
        "postgres",
        "CREATE ROLE keeper LOGIN CREATEDB IN ROLE pg_read_all_stats; \
         CREATE DATABASE app OWNER keeper;",
    );
    pg.sql(
        "app",
        "SET ROLE keeper; \
         CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int, v text); \
         CREATE TABLE c (id int, a int REFERENCES a, v text); \
         INSERT INTO a SELECT g, md5(g::text) FROM generate_series(1, 40000) g; \
         INSERT INTO b SELECT g, md5(g::text) FROM generate_series(1, 40000) g; \
         INSERT INTO c SELECT g, 1 + g % 40000, md5(g::text) FROM generate_series(1, 40000) g;",
    );
    let good = pg.fingerprint("app");
    let worker_on = |db: &str| {
        pg.sql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
                 AND backend_type = 'autovacuum worker'"
            ),
        ) != "0"
    };
    for user in ["keeper", "postgres"] {
        let sb = Sandbox::new();
        let url = format!("postgres://{user}@127.0.0.1:{}/app", pg.port);
        sb.file_job("app", &url, "");
        expect_code(&sb.run(&["backup", "app"]), 0);
        pg.sql(
            "app",
            "DELETE FROM c WHERE id > 100; DELETE FROM b WHERE id > 100;",
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !worker_on("app") {
            assert!(
                std::time::Instant::now() < deadline,
                "no autovacuum worker came to the damaged database in a minute"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        expect_code(&sb.run(&["restore", "app", "--yes"]), 0);
        assert_eq!(pg.fingerprint("app"), good, "restored by {user}");
        assert_eq!(
            pg.sql(
                "app",
                "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app'"
            ),
            user
        );
        let aside: Vec<String> = pg
            .databases()
            .into_iter()
            .filter(|d| d.starts_with("app_pre_restore_"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        // (Whether a worker is on it now says nothing: autovacuum may visit it anew.)
        pg.sql("postgres", &format!("DROP DATABASE \"{}\"", aside[0]));
    }
}

#[test]
fn compressible_values_come_back_lz4_compressed_unless_their_column_or_the_operator_says_otherwise()
{
    let pg = Pg::start();
    let sb = Sandbox::new();
    pg.sql("postgres", "CREATE DATABASE app");
    // Values big enough to be compressed: jsonb under the server's default (pglz), text in
    // a column whose method is its own, and small values that are never compressed.
    pg.sql(
        "app",
        "CREATE TABLE d (id int PRIMARY KEY, doc jsonb, note text COMPRESSION pglz, small text); \
         INSERT INTO d SELECT g, (SELECT jsonb_object_agg('k' || k, repeat(md5((g * k)::text), 3)) \
           FROM generate_series(1, 60) k), repeat(md5(g::text), 200), 'x' || g \
         FROM generate_series(1, 400) g;",
    );
    let methods = |db: &str| {
        pg.sql(
            db,
            "SELECT string_agg(DISTINCT coalesce(pg_column_compression(doc), '-') || '/' || \
               coalesce(pg_column_compression(note), '-') || '/' || \
               coalesce(pg_column_compression(small), '-'), ',') FROM d",
        )
    };
    assert_eq!(methods("app"), "pglz/pglz/-");
    sb.file_job("app", &pg.url("app"), "");
    expect_code(&sb.run(&["backup", "app"]), 0);
    let before = pg.fingerprint("app");
    let before_dump = pg.plain_dump("app");
    pg.sql("postgres", "DROP DATABASE app");
    // Every way a restore reads the dump sets the method for all its sessions.
    let restore_with = |var: &str, value: &str| {
        sb.cmd(&["restore", "app", "--yes"])
            .env(var, value)
            .output()
            .unwrap()
    };
    for mode in ["stage", "stream", "progressive"] {
        expect_code(&restore_with("BACKSTOP_RESTORE_MODE", mode), 0);
        assert_eq!(methods("app"), "lz4/pglz/-", "{mode}");
        assert_eq!(pg.fingerprint("app"), before, "{mode}");
        assert_eq!(pg.plain_dump("app"), before_dump, "{mode}");
        pg.sql("postgres", "DROP DATABASE app");
    }
    // The operator may keep the server's own default.
    expect_code(
        &restore_with("BACKSTOP_RESTORE_TOAST_COMPRESSION", "server"),
        0,
    );
    assert_eq!(methods("app"), "pglz/pglz/-");
    assert_eq!(pg.fingerprint("app"), before);
    pg.sql("postgres", "DROP DATABASE app");
    // Anything else is refused, named, before the server is touched.
    let text = expect_code(
        &restore_with("BACKSTOP_RESTORE_TOAST_COMPRESSION", "zstd"),
        2,
    );
    assert!(
        text.contains("BACKSTOP_RESTORE_TOAST_COMPRESSION") && text.contains("\"server\""),
        "{text}"
    );
    assert_eq!(pg.databases(), vec!["postgres".to_string()]);
}

#[test]
fn roles_are_stored_and_restored_first_with_globals() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    pg.sql(
        "postgres",
        "CREATE ROLE app_owner LOGIN; CREATE DATABASE app OWNER app_owner;",
    );
    pg.sql(
        "app",
        "SET ROLE app_owner; CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2);",
    );
    sb.file_job("app", &pg.url("app"), "globals = true");
    expect_code(&sb.run(&["backup", "app"]), 0);
    pg.sql("postgres", "DROP DATABASE app; DROP ROLE app_owner;");
    expect_code(&sb.run(&["restore", "app"]), 0);
    assert_eq!(
        pg.sql(
            "app",
            "SELECT tableowner FROM pg_tables WHERE tablename = 't'"
        ),
        "app_owner"
    );
    assert_eq!(pg.sql("app", "SELECT sum(x) FROM t"), "3");
}

/// The rows each session loaded of the first table a restore dealt out (its report).
fn first_split_shares(r: &serde_json::Value) -> Vec<u64> {
    r["parallel_load"][0]["rows_by_session"]
        .as_array()
        .unwrap_or_else(|| panic!("the table was not split: {r}"))
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

#[test]
fn a_dump_dominated_by_one_table_is_restored_while_it_downloads() {
    let pg = Pg::start();
    let mut sb = Sandbox::new();
    // Three sessions load the big table whatever this machine's core count.
    sb.env
        .push(("BACKSTOP_RESTORE_SESSIONS".into(), "3".into()));
    // One table of about 130,000 rows: nothing for parallel jobs to share.
    load_bulk(&pg, "app", 12);
    pg.sql(
        "app",
        "CREATE TABLE small (x int); INSERT INTO small SELECT generate_series(1, 50); \
         ALTER TABLE bulk ADD PRIMARY KEY (id); \
         CREATE TABLE audit (n int); \
         CREATE FUNCTION count_insert() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN INSERT INTO public.audit VALUES (1); RETURN NEW; END $$; \
         CREATE TRIGGER counted AFTER INSERT ON bulk FOR EACH ROW EXECUTE FUNCTION count_insert();",
    );
    let rows: u64 = pg.sql("app", "SELECT count(*) FROM bulk").parse().unwrap();
    sb.file_job("app", &pg.url("app"), "");
    expect_code(&sb.run(&["backup", "app"]), 0);
    let out = sb.run(&["--json", "restore", "app", "--to", &pg.url("copy")]);
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mode"], "streamed", "{r}");
    assert!(r["restored_bytes"].as_u64().unwrap() > 10 << 20, "{r}");
    // The big table was loaded by three sessions, each with a share of the rows.
    assert_eq!(r["parallel_load"][0]["table"], "public.bulk", "{r}");
    assert_eq!(r["parallel_load"][0]["format"], "binary", "{r}");
    let shares = first_split_shares(&r);
    // pg_restore's own COPY, then the three sessions (every row converted to binary).
    assert_eq!(shares.len(), 4, "{r}");
    assert_eq!(shares[0], 0, "{r}");
    assert!(shares[1..].iter().all(|&n| n > 0), "{r}");
    assert_eq!(shares.iter().sum::<u64>(), rows);
    // Same rows, same schema; the trigger (created after the data) fired for none of them.
    assert_eq!(pg.fingerprint("copy"), pg.fingerprint("app"));
    assert_eq!(pg.sql("copy", "SELECT count(*) FROM audit"), "0");
    assert_eq!(
        sorted_lines(&pg.plain_dump("copy")),
        sorted_lines(&pg.plain_dump("app"))
    );
    // Forced staging gives the same database.
    let out = sb
        .cmd(&["--json", "restore", "app", "--to", &pg.url("copy2")])
        .env("BACKSTOP_RESTORE_MODE", "stage")
        .output()
        .unwrap();
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mode"], "staged", "{r}");
    assert!(r.get("parallel_load").is_none(), "{r}");
    assert_eq!(pg.fingerprint("copy2"), pg.fingerprint("app"));
    // One session (parallel loading off) keeps the dump's row order exactly.
    let out = sb
        .cmd(&["--json", "restore", "app", "--to", &pg.url("copy3")])
        .env("BACKSTOP_RESTORE_SESSIONS", "1")
        .output()
        .unwrap();
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r.get("parallel_load").is_none(), "{r}");
    assert_eq!(pg.plain_dump("copy3"), pg.plain_dump("app"));
}

/// Rows far wider than the batches rows are dealt out in (files kept in a bytea column),
/// one of them 40 MiB (80 MiB of COPY text): every row comes back byte for byte, both
/// sessions load some, and no row is held whole in memory on its way (a restore's peak
/// memory stays well under one such row).
#[test]
fn rows_wider_than_a_batch_are_dealt_out_whole_and_never_held_whole() {
    let pg = Pg::start();
    let mut sb = Sandbox::new();
    sb.env
        .push(("BACKSTOP_RESTORE_MODE".into(), "stream".into()));
    sb.env
        .push(("BACKSTOP_RESTORE_SESSIONS".into(), "2".into()));
    pg.sql("postgres", "CREATE DATABASE app");
    pg.sql(
        "app",
        "CREATE TABLE files (id int PRIMARY KEY, body bytea); \
         INSERT INTO files SELECT g, decode(repeat(lpad(to_hex(g), 2, '0'), 700000 + g * 1000), 'hex') \
           FROM generate_series(1, 20) g; \
         INSERT INTO files VALUES (21, decode(repeat('ab', 40 << 20), 'hex')); \
         INSERT INTO files VALUES (22, ''), (23, NULL);",
    );
    let sums =
        "SELECT string_agg(id || ':' || coalesce(md5(body), 'null'), ',' ORDER BY id) FROM files";
    sb.file_job("app", &pg.url("app"), "");
    expect_code(&sb.run(&["backup", "app"]), 0);
    // In binary, rows up to 4 MiB of text are held and converted, the 40 MiB one goes to
    // pg_restore as text in pieces; in text every row is passed on in pieces.
    for (format, to) in [("binary", "copy"), ("text", "copy_text")] {
        // Reaped by wait4 below, which also reports its peak memory.
        #[allow(clippy::zombie_processes)]
        let mut child = sb
            .cmd(&["--json", "restore", "app", "--to", &pg.url(to)])
            .env("BACKSTOP_RESTORE_COPY_FORMAT", format)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut stdout, &mut v).unwrap();
            v
        });
        let err = std::thread::spawn(move || {
            let mut v = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut v).unwrap();
            v
        });
        // The restore's own peak memory (its children, psql and pg_restore, have their own).
        let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
        // SAFETY: waits for our own child, filling two plain out-parameters.
        let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
        assert_eq!(pid, child.id() as libc::pid_t);
        let (out, err) = (out.join().unwrap(), err.join().unwrap());
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status}: {err}"
        );
        let r: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(r["mode"], "streamed", "{r}");
        assert_eq!(r["parallel_load"][0]["table"], "public.files", "{r}");
        assert_eq!(r["parallel_load"][0]["format"], format, "{r}");
        let shares = first_split_shares(&r);
        assert_eq!(shares.len(), 3, "{r}");
        // pg_restore's own COPY loads only the row too wide to convert.
        assert_eq!(shares[0], if format == "binary" { 1 } else { 0 }, "{r}");
        assert!(shares[1..].iter().all(|&n| n > 0), "{r}");
        assert_eq!(shares.iter().sum::<u64>(), 23, "{r}");
        assert_eq!(pg.sql(to, sums), pg.sql("app", sums));
        assert_eq!(pg.fingerprint(to), pg.fingerprint("app"));
        let peak_mib = usage.ru_maxrss / 1024;
        assert!(
            peak_mib < 64,
            "the restore peaked at {peak_mib} MiB ({format}): a row was held whole"
        );
    }
}

/// Every column type a streamed restore converts to binary, with the values at the edges
/// of each and text that COPY escapes, in a table big enough to be dealt out: it loads in
/// binary, no row falls back to text, and every value comes back exactly (floats to the
/// bit). A table with a type that is not converted (an array) loads as text.
#[test]
fn typed_rows_are_loaded_in_binary_and_come_back_exactly() {
    let pg = Pg::start();
    let mut sb = Sandbox::new();
    sb.env
        .push(("BACKSTOP_RESTORE_MODE".into(), "stream".into()));
    sb.env
        .push(("BACKSTOP_RESTORE_SESSIONS".into(), "2".into()));
    pg.sql("postgres", "CREATE DATABASE app");
    // The dump's timestamps then carry offsets of minutes and seconds (-03:30:52 before
    // 1935, -02:30 in summer).
    pg.sql(
        "postgres",
        "ALTER DATABASE app SET timezone = 'America/St_Johns'",
    );
    // And its bytea in the escape format (the hex one: the wide rows test).
    pg.sql("postgres", "ALTER DATABASE app SET bytea_output = 'escape'");
    pg.sql(
        "app",
        r#"CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
           CREATE DOMAIN posint AS int CHECK (VALUE > 0);
           CREATE TABLE edge (id int, b bool, s smallint, i int, l bigint, o oid, r real,
             d double precision, n numeric, n2 numeric(12,2), t text, vc varchar(20), c char(5),
             j json, jb jsonb, by bytea, u uuid, dt date, ts timestamp, tz timestamptz, m mood,
             p posint);
           INSERT INTO edge VALUES
           (1, true, -32768, -2147483648, -9223372036854775808, 0, 'NaN', 'NaN', 'NaN', -0.01,
            E'tab\there\nnl\\back\rcr\bbs\fff\vvt \\N é ✓', 'x', 'ab', '{"a": [1, 2.50]}',
            '{"k": "v\"q\\"}', '\x', '00000000-0000-0000-0000-000000000000',
            '4713-01-01 BC', '4713-01-01 00:00:00 BC', '0044-03-15 12:00:00.5+00 BC', 'sad', 1),
           (2, false, 32767, 2147483647, 9223372036854775807, 4294967295, 'Infinity',
            'Infinity', 'Infinity', 9999999999.99, '', '', '', 'null', '[]', '\x00ff10',
            'ffffffff-ffff-ffff-ffff-ffffffffffff', '5874897-12-31',
            '294276-12-31 23:59:59.999999', '294276-12-31 23:59:59.999999+00', 'happy',
            2147483647),
           (3, NULL, 0, 0, 0, NULL, '-Infinity', '-Infinity', '-Infinity', 0, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, 'infinity', 'infinity', 'infinity', NULL, NULL),
           (4, true, -1, -1, -1, 1, '-0', '-0', '0.000', -0.00, '\N', ' ', 'abcde', '"s"',
            '"s"', '\x5c4e', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '-infinity',
            '-infinity', '-infinity', 'ok', 5),
           (5, false, 1, 1, 1, 2, 1.4e-45, 4.9e-324, 123456789012345678901234567890.123456789,
            0.01, repeat('x', 5000), 'y', 'z', '{}', '{}', decode(repeat('00ff', 3000), 'hex'),
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', '2000-02-29', '1900-01-01 00:00:00',
            '1900-01-01 00:00:00', 'happy', 7),
           (6, true, 2, 2, 2, 3, 3.4028235e38, 1.7976931348623157e308, 1e-30, 12.5, 'a',
            'b', 'c', '1', '1e400', '\x01', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a13',
            '1582-10-10', '1582-10-10 12:34:56.000001', '2024-07-01 12:00:00+00', 'sad', 8);
           INSERT INTO edge SELECT g, g % 3 = 0, (g % 60000 - 30000)::smallint, g * 7919,
             g::bigint * 1000003 - 5000000000, g, g / 7.0, g / 7.0 + 1e-12 * g, g / 1000.0,
             (g % 100000) / 100.0, md5(g::text) || E'\t' || g, left(md5(g::text), g % 20),
             left(md5(g::text), g % 5), json_build_object('g', g)::json,
             jsonb_build_object('g', g, 'h', md5(g::text)), decode(md5(g::text), 'hex'),
             md5(g::text)::uuid, date '1850-01-01' + g * 3,
             timestamp '1850-01-01' + g * interval '37 hours 11 minutes 13.123457 seconds',
             timestamptz '1850-01-01 00:00:00+00' + g * interval '41 hours 7 minutes 3.000001 seconds',
             (ARRAY['sad', 'ok', 'happy'])[g % 3 + 1]::mood, g
           FROM generate_series(100, 40000) g;
           CREATE TABLE more (id int, tm time, iv interval, ip inet, net cidr, ai int[],
             at text[], atz timestamptz[], an numeric[], ab bool[], aiv interval[], ajb jsonb[]);
           INSERT INTO more VALUES
           (1, '00:00:00', '-1 year +2 mons -3 days 04:05:06.5', '10.1.2.3', '10.0.0.0/8',
            '{}', ARRAY['', 'NULL', 'null', NULL, 'a b', E'x"y', E'b\\c', '{', 'é', E'tab\there',
            E'nl\nx', ','], ARRAY['0044-03-15 12:00:00.5+00 BC'::timestamptz, NULL, 'infinity'],
            '{NaN,-0.001,1e20,Infinity}', '{t,f,NULL}', ARRAY['-1 day -00:00:01'::interval, '0'],
            ARRAY['{"a": [1, "x\"y"]}'::jsonb, 'null']),
           (2, '24:00:00', '-178956970 years -8 mons -2147483648 days -2562047788:00:54.775807',
            '2001:db8::1/64', '2001:db8::/32', '{-2147483648,2147483647}', '{}', '{}', '{}',
            '{}', '{}', '{}'),
           (3, '23:59:59.999999', '178956970 years 7 mons 2147483647 days 2562047788:00:54.775807',
            '::ffff:1.2.3.4', '::/0', NULL, NULL, NULL, NULL, NULL, NULL, NULL),
           (4, NULL, NULL, NULL, NULL, '{{1,2},{3,4}}', '{x}', NULL, NULL, NULL, NULL, NULL),
           (5, '12:00:00', '00:00:00', '::1.2.3.4', '192.168.0.0/16', '[0:1]={7,8}', NULL, NULL,
            NULL, NULL, NULL, NULL);
           INSERT INTO more SELECT g, time '00:00:00' + g * interval '1.000001 seconds',
             make_interval(0, g % 25 - 12, 0, g % 61 - 30, g % 49, g % 60, g / 1000.0),
             ('10.' || g % 256 || '.' || g % 7 || '.' || g % 251)::inet,
             ('10.' || g % 256 || '.0.0/16')::cidr, ARRAY[g, -g, g % 3],
             ARRAY[md5(g::text), 'x y', NULL], ARRAY[timestamptz '2020-01-01 00:00:00+00' + g * interval '1 minute'],
             ARRAY[g / 7.0, -g], ARRAY[g % 2 = 0], ARRAY[g * interval '1 hour'], ARRAY[jsonb_build_object('g', g)]
           FROM generate_series(100, 30000) g;
           CREATE TABLE arr (id int, a int4range);
           INSERT INTO arr SELECT g, int4range(g, g + 10) FROM generate_series(1, 30000) g;"#,
    );
    sb.file_job("app", &pg.url("app"), "");
    expect_code(&sb.run(&["backup", "app"]), 0);
    let out = sb.run(&["--json", "restore", "app", "--to", &pg.url("copy")]);
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mode"], "streamed", "{r}");
    let split = |table: &str| {
        r["parallel_load"]
            .as_array()
            .and_then(|a| a.iter().find(|t| t["table"] == table))
            .unwrap_or_else(|| panic!("{table} was not dealt out: {r}"))
            .clone()
    };
    // A binary table's rows by session (the first: pg_restore's, rows left as text).
    let binary_shares = |table: &str| -> Vec<u64> {
        let t = split(table);
        assert_eq!(t["format"], "binary", "{r}");
        t["rows_by_session"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    };
    let shares = binary_shares("public.edge");
    // Not one row left to pg_restore as text: every value's text converted.
    assert_eq!(shares[0], 0, "{r}");
    assert!(shares[1..].iter().all(|&n| n > 0), "{r}");
    assert_eq!(shares.iter().sum::<u64>(), 39_907, "{r}");
    assert_eq!(split("public.arr")["format"], "text", "{r}");
    // Times, intervals, addresses and one-dimensional arrays in binary too; the rows
    // whose text is not as the output functions write it (a two-dimensional array, one
    // with bounds, an IPv4-compatible IPv6 address) went to pg_restore as text.
    let shares = binary_shares("public.more");
    assert_eq!(shares[0], 2, "{r}");
    assert_eq!(shares.iter().sum::<u64>(), 29_906, "{r}");
    let values = "SET timezone = 'UTC'; SELECT count(*), md5(string_agg(m::text, E'\\n' ORDER BY m.id)) FROM more m";
    assert_eq!(pg.sql("copy", values), pg.sql("app", values));
    assert!(pg.sql("copy", values).starts_with("29906|"));
    // Every value, in one time zone, and the floats as their bits.
    let values = "SET timezone = 'UTC'; SET bytea_output = 'hex'; SELECT count(*), md5(string_agg(e::text || '|' \
                  || coalesce(encode(float4send(e.r), 'hex'), '-') \
                  || coalesce(encode(float8send(e.d), 'hex'), '-'), E'\\n' ORDER BY e.id)) FROM edge e";
    assert_eq!(pg.sql("copy", values), pg.sql("app", values));
    assert!(pg.sql("copy", values).starts_with("39907|"));
    let arrays = "SELECT md5(string_agg(a::text, ',' ORDER BY id)) FROM arr";
    assert_eq!(pg.sql("copy", arrays), pg.sql("app", arrays));
}

/// A big table whose name closes the dollar quotes and string literals the extra sessions'
/// wait is written in: it is still dealt out to every session, and nothing in its name
/// runs (the schema's name too).
#[test]
fn a_split_table_whose_name_breaks_quotes_is_loaded_and_nothing_in_it_runs() {
    let pg = Pg::start();
    let mut sb = Sandbox::new();
    sb.env
        .push(("BACKSTOP_RESTORE_MODE".into(), "stream".into()));
    sb.env
        .push(("BACKSTOP_RESTORE_SESSIONS".into(), "3".into()));
    pg.sql("postgres", "CREATE DATABASE app");
    let table = "t$backstop$; CREATE ROLE pwned SUPERUSER; --'x";
    let schema = "s$$'; DROP TABLE keep; --";
    pg.sql(
        "app",
        &format!(
            "CREATE TABLE keep (x int); INSERT INTO keep VALUES (7); \
             CREATE SCHEMA \"{schema}\"; \
             CREATE TABLE \"{schema}\".\"{table}\" (id int PRIMARY KEY, pad text); \
             INSERT INTO \"{schema}\".\"{table}\" SELECT g, md5(g::text) FROM generate_series(1, 150000) g;",
        ),
    );
    sb.file_job("app", &pg.url("app"), "");
    expect_code(&sb.run(&["backup", "app"]), 0);
    let out = sb.run(&["--json", "restore", "app", "--to", &pg.url("copy")]);
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mode"], "streamed", "{r}");
    let shares = first_split_shares(&r);
    assert_eq!(shares.len(), 4, "{r}");
    assert!(shares[1..].iter().all(|&n| n > 0), "{r}");
    assert_eq!(shares.iter().sum::<u64>(), 150_000, "{r}");
    assert_eq!(pg.fingerprint("copy"), pg.fingerprint("app"));
    assert_eq!(pg.sql("copy", "SELECT x FROM keep"), "7");
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'pwned'"
        ),
        "0"
    );
}

/// A database whose weight is in large objects (many small ones, an empty one, one of
/// several batches, bytes that read as SQL): streamed by default, the objects' contents
/// written by every session, and every object comes back byte for byte with its owner.
#[test]
fn large_objects_are_written_by_several_sessions_and_come_back_byte_for_byte() {
    let pg = Pg::start();
    let mut sb = Sandbox::new();
    sb.env
        .push(("BACKSTOP_RESTORE_SESSIONS".into(), "3".into()));
    pg.sql(
        "postgres",
        "CREATE ROLE lo_owner NOLOGIN; CREATE DATABASE app;",
    );
    pg.sql(
        "app",
        "CREATE TABLE docs (id int PRIMARY KEY, body oid); \
         INSERT INTO docs SELECT g, lo_from_bytea(0, decode(repeat(md5(g::text), 1 + g % 90), 'hex')) \
           FROM generate_series(1, 3000) g; \
         INSERT INTO docs VALUES (3001, lo_from_bytea(0, ''::bytea)); \
         INSERT INTO docs VALUES (3002, lo_from_bytea(0, convert_to(repeat('''); DROP TABLE docs; --\\', 40000), 'UTF8'))); \
         INSERT INTO docs SELECT 3003, lo_from_bytea(0, decode(string_agg(md5(g::text), ''), 'hex')) \
           FROM generate_series(1, 100000) g; \
         SELECT lo_create(12345); ALTER LARGE OBJECT 12345 OWNER TO lo_owner; SELECT lo_put(12345, 70000, 'tail');",
    );
    let los = "SELECT count(*), md5(string_agg(m.oid::text || ':' || m.lomowner::regrole::text || ':' || md5(lo_get(m.oid)), ',' ORDER BY m.oid)) \
               FROM pg_largeobject_metadata m";
    sb.file_job("app", &pg.url("app"), "");
    expect_code(&sb.run(&["backup", "app"]), 0);
    let out = sb.run(&["--json", "restore", "app", "--to", &pg.url("copy")]);
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mode"], "streamed", "{r}");
    let split = r["parallel_load"]
        .as_array()
        .unwrap_or_else(|| panic!("nothing was dealt out: {r}"))
        .iter()
        .find(|t| t["table"] == "(large objects)")
        .unwrap_or_else(|| panic!("the large objects were not dealt out: {r}"));
    let shares: Vec<u64> = split["rows_by_session"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(shares.len(), 3, "{r}");
    assert!(shares.iter().all(|&n| n > 0), "{r}");
    assert_eq!(shares.iter().sum::<u64>(), 3004, "{r}");
    assert!(pg.sql("copy", los).starts_with("3004|"));
    assert_eq!(pg.sql("copy", los), pg.sql("app", los));
    assert_eq!(pg.fingerprint("copy"), pg.fingerprint("app"));
    // One session: pg_restore writes them all, the same objects come back.
    let out = sb
        .cmd(&["--json", "restore", "app", "--to", &pg.url("copy1")])
        .env("BACKSTOP_RESTORE_SESSIONS", "1")
        .output()
        .unwrap();
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r.get("parallel_load").is_none(), "{r}");
    assert_eq!(pg.sql("copy1", los), pg.sql("app", los));
}

#[test]
fn several_comparable_tables_restore_progressively_staged_or_streamed_with_every_big_table_split() {
    let pg = Pg::start();
    let mut sb = Sandbox::new();
    sb.env
        .push(("BACKSTOP_RESTORE_SESSIONS".into(), "2".into()));
    // An application's shape: no dominant table; secondary indexes, foreign keys, a
    // generated column, an enum, a domain, jsonb, arrays, bytea, a large object, a comment
    // and a grant, and a trigger that must not fire for restored rows.
    pg.sql(
        "postgres",
        "CREATE ROLE reader NOLOGIN; CREATE DATABASE app;",
    );
    pg.sql(
        "app",
        "CREATE TYPE mood AS ENUM ('calm', 'busy');          CREATE DOMAIN cents AS bigint CHECK (VALUE >= 0);          CREATE TABLE customers (id int PRIMARY KEY, email text UNIQUE, tags text[], prefs jsonb,            mood mood, created timestamptz DEFAULT '2026-01-01');          CREATE TABLE orders (id int PRIMARY KEY, customer int REFERENCES customers, total cents,            tax cents GENERATED ALWAYS AS (total / 5) STORED, note text);          CREATE TABLE items (id int PRIMARY KEY, order_id int REFERENCES orders, sku text, blob bytea);          CREATE INDEX orders_customer ON orders (customer); CREATE INDEX items_sku ON items (sku);          INSERT INTO customers SELECT g, 'c' || g || '@example.com', ARRAY['a', g::text],            jsonb_build_object('n', g), (CASE WHEN g % 2 = 0 THEN 'calm' ELSE 'busy' END)::mood            FROM generate_series(1, 40000) g;          INSERT INTO orders (id, customer, total, note) SELECT g, 1 + g % 40000, g * 10, md5(g::text)            FROM generate_series(1, 45000) g;          INSERT INTO items SELECT g, 1 + g % 45000, 'sku-' || (g % 97), decode(md5(g::text), 'hex')            FROM generate_series(1, 50000) g;          SELECT lo_from_bytea(0, 'a large object');          CREATE SEQUENCE counter; SELECT setval('counter', 4242);          COMMENT ON TABLE orders IS 'every order'; GRANT SELECT ON orders TO reader;          CREATE TABLE audit (n int);          CREATE FUNCTION count_insert() RETURNS trigger LANGUAGE plpgsql AS            $$ BEGIN INSERT INTO public.audit VALUES (1); RETURN NEW; END $$;          CREATE TRIGGER counted AFTER INSERT ON items FOR EACH ROW EXECUTE FUNCTION count_insert();",
    );
    sb.file_job("app", &pg.url("app"), "");
    expect_code(&sb.run(&["backup", "app"]), 0);
    // No dominant table: progressive by default. From a slow download (here about 4 s)
    // the sessions load each table's data (the large objects too) while the snapshot
    // streams, until the last second of it; what is left loads with the post-data.
    let out = sb
        .cmd(&["--json", "restore", "app", "--to", &pg.url("progressive")])
        .env("BACKSTOP_TEST_STREAM_DELAY_MS", "500")
        .output()
        .unwrap();
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mode"], "progressive", "{r}");
    let loaded = r["blocks_loaded_while_streaming"].as_u64().unwrap();
    assert!(
        loaded >= 3,
        "most blocks load while the snapshot streams: {r}"
    );
    assert_eq!(pg.fingerprint("progressive"), pg.fingerprint("app"));
    // A session waiting for the next block starts nothing meanwhile: one pg_restore for
    // pre-data, one per batch claimed, the final pg_restore --jobs (its leader and
    // workers) and the sessions a split table is dealt to; not one every few milliseconds
    // while the download goes on (that made 763 here).
    let sessions: u64 = pg
        .sql(
            "postgres",
            "SELECT sessions FROM pg_stat_database WHERE datname = 'progressive'",
        )
        .parse()
        .unwrap();
    assert!(
        sessions <= 40,
        "{sessions} sessions for {loaded} blocks loaded while streaming"
    );
    // From a fast one (most or all of it left for the final pg_restore --jobs): the same.
    let out = sb.run(&[
        "--json",
        "restore",
        "app",
        "--to",
        &pg.url("progressive_fast"),
    ]);
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mode"], "progressive", "{r}");
    assert_eq!(pg.fingerprint("progressive_fast"), pg.fingerprint("app"));
    assert_eq!(
        sorted_lines(&pg.plain_dump("progressive_fast")),
        sorted_lines(&pg.plain_dump("app"))
    );
    assert_eq!(pg.sql("progressive", "SELECT count(*) FROM audit"), "0");
    assert_eq!(
        pg.sql("progressive", "SELECT last_value FROM counter"),
        "4242"
    );
    assert_eq!(
        sorted_lines(&pg.plain_dump("progressive")),
        sorted_lines(&pg.plain_dump("app"))
    );
    // Staged whole first, on request.
    let out = sb
        .cmd(&["--json", "restore", "app", "--to", &pg.url("staged")])
        .env("BACKSTOP_RESTORE_MODE", "stage")
        .output()
        .unwrap();
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mode"], "staged", "{r}");
    assert_eq!(pg.fingerprint("staged"), pg.fingerprint("app"));
    // Streamed (as on a machine where it pays): every big table dealt out.
    let out = sb
        .cmd(&["--json", "restore", "app", "--to", &pg.url("copy")])
        .env("BACKSTOP_RESTORE_MODE", "stream")
        .output()
        .unwrap();
    expect_code(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mode"], "streamed", "{r}");
    // Every big table was dealt out to both sessions, and the shares add up.
    let mut split: Vec<&str> = r["parallel_load"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    split.sort();
    assert_eq!(
        split,
        ["public.customers", "public.items", "public.orders"],
        "{r}"
    );
    for t in r["parallel_load"].as_array().unwrap() {
        let shares: Vec<u64> = t["rows_by_session"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        // pg_restore's own COPY first: it loads only rows left as text, none here.
        assert_eq!(shares[0], 0, "{r}");
        assert!(
            shares.len() > 2 && shares[1..].iter().all(|&n| n > 0),
            "{r}"
        );
        let table = t["table"].as_str().unwrap();
        let rows: u64 = pg
            .sql("app", &format!("SELECT count(*) FROM {table}"))
            .parse()
            .unwrap();
        assert_eq!(shares.iter().sum::<u64>(), rows, "{table}");
    }
    assert_eq!(pg.fingerprint("copy"), pg.fingerprint("app"));
    assert_eq!(pg.sql("copy", "SELECT count(*) FROM audit"), "0");
    assert_eq!(
        pg.sql(
            "copy",
            "SELECT convert_from(lo_get(oid), 'UTF8') FROM pg_largeobject_metadata"
        ),
        "a large object"
    );
    // Same schema, constraints, indexes, comment and grant, same rows.
    assert_eq!(
        sorted_lines(&pg.plain_dump("copy")),
        sorted_lines(&pg.plain_dump("app"))
    );
    // The foreign keys hold (they were validated after the data).
    assert_eq!(
        pg.sql(
            "copy",
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated"
        ),
        "2"
    );
}

/// A dump's lines in order, for comparing databases whose rows were loaded in another
/// physical order.
fn sorted_lines(dump: &str) -> Vec<&str> {
    let mut v: Vec<&str> = dump.lines().collect();
    v.sort_unstable();
    v
}

#[test]
fn a_partitioned_table_s_foreign_key_triggers_and_check_wait_for_every_partition() {
    let pg = Pg::start();
    let mut sb = Sandbox::new();
    sb.env
        .push(("BACKSTOP_RESTORE_SESSIONS".into(), "2".into()));
    // Orders partitioned by month. On the partitioned table (which has no data of its
    // own): a foreign key with a comment, a trigger that would change every row it saw,
    // a constraint trigger (it depends on the customers, whose data loads first) that
    // would write an audit row, and a check constraint added NOT VALID that the stored
    // rows break. Loading a partition after any of them would slow the restore down,
    // change the rows, or fail it. Tickets are hash-partitioned on an enum, which pg_dump
    // loads through the partitioned table (one `COPY public.tickets` per partition): a
    // streamed restore must not deal those rows out to sessions waiting for a COPY into
    // the partition itself (they waited 10 minutes, then failed). A plain table refers
    // to the partitioned orders.
    pg.sql("postgres", "CREATE DATABASE parts;");
    pg.sql(
        "parts",
        "CREATE TABLE customers (id int PRIMARY KEY, name text);          INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 5000) g;          CREATE TABLE audit (order_id bigint);          CREATE TABLE orders (id bigint, customer_id int NOT NULL, created date NOT NULL, note text,            PRIMARY KEY (id, created)) PARTITION BY RANGE (created);          DO $$ BEGIN FOR m IN 0..5 LOOP            EXECUTE format('CREATE TABLE orders_%s PARTITION OF orders FOR VALUES FROM (%L) TO (%L)', m,              '2024-01-01'::date + make_interval(months => m), '2024-01-01'::date + make_interval(months => m + 1));          END LOOP; END $$;          CREATE INDEX orders_customer ON orders (customer_id);          INSERT INTO orders SELECT g, 1 + g % 5000, '2024-01-01'::date + (g % 180), md5(g::text)            FROM generate_series(1, 150000) g;          CREATE TYPE color AS ENUM ('red', 'green', 'blue', 'black');          CREATE TABLE tickets (id bigint, c color, note text, PRIMARY KEY (id, c)) PARTITION BY HASH (c);          DO $$ BEGIN FOR i IN 0..3 LOOP            EXECUTE format('CREATE TABLE tickets_%s PARTITION OF tickets FOR VALUES WITH (MODULUS 4, REMAINDER %s)', i, i);          END LOOP; END $$;          INSERT INTO tickets SELECT g, (ARRAY['red', 'green', 'blue', 'black'])[1 + g % 4]::color, md5(g::text)            FROM generate_series(1, 100000) g;          CREATE TABLE refunds (id int PRIMARY KEY, order_id bigint, created date,            FOREIGN KEY (order_id, created) REFERENCES orders);          INSERT INTO refunds SELECT g, g * 3, '2024-01-01'::date + ((g * 3) % 180) FROM generate_series(1, 10000) g;          CREATE FUNCTION audit_it() RETURNS trigger LANGUAGE plpgsql AS            $$ BEGIN INSERT INTO public.audit VALUES (NEW.id); RETURN NULL; END $$;          CREATE FUNCTION mark() RETURNS trigger LANGUAGE plpgsql AS            $$ BEGIN NEW.note := 'CHANGED'; RETURN NEW; END $$;          CREATE CONSTRAINT TRIGGER orders_audit AFTER INSERT ON orders FROM customers            FOR EACH ROW EXECUTE FUNCTION audit_it();          CREATE TRIGGER orders_mark BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION mark();          COMMENT ON TRIGGER orders_mark ON orders IS 'marks new orders';          ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES customers;          COMMENT ON CONSTRAINT orders_customer_fk ON orders IS 'every order has a customer';          ALTER TABLE orders ADD CONSTRAINT recent CHECK (id > 140000) NOT VALID;",
    );
    sb.file_job("parts", &pg.url("parts"), "");
    expect_code(&sb.run(&["backup", "parts"]), 0);
    let source = sorted_lines_owned(&pg.plain_dump("parts"));
    for (db, mode, delay) in [
        ("fast", None, None),
        ("slow", None, Some("300")),
        ("staged", Some("stage"), None),
        ("streamed", Some("stream"), None),
    ] {
        let mut cmd = sb.cmd(&["--json", "restore", "parts", "--to", &pg.url(db)]);
        if let Some(m) = mode {
            cmd.env("BACKSTOP_RESTORE_MODE", m);
        }
        if let Some(d) = delay {
            cmd.env("BACKSTOP_TEST_STREAM_DELAY_MS", d);
        }
        let out = cmd.output().unwrap();
        expect_code(&out, 0);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let want = match mode {
            Some("stage") => "staged",
            Some("stream") => "streamed",
            _ => "progressive",
        };
        assert_eq!(r["mode"], want, "{db}: {r}");
        if mode == Some("stream") {
            // The orders' partitions (25,000 rows each) are dealt out; the tickets' are not.
            let split: Vec<&str> = r["parallel_load"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["table"].as_str().unwrap())
                .collect();
            assert_eq!(split.len(), 6, "{r}");
            assert!(split.iter().all(|t| t.starts_with("public.orders_")), "{r}");
        }
        // The hash of an enum value depends on the enum's OIDs, which differ in the new
        // database: a ticket can land in another partition than in the source (pg_restore
        // alone does the same). The tickets as a whole are compared instead.
        let by_table = |db: &str| {
            let mut f = pg.fingerprint(db);
            f.retain(|t, _| !t.starts_with("public.tickets_"));
            f
        };
        assert_eq!(by_table(db), by_table("parts"), "{db}");
        let tickets =
            "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t::text)) FROM tickets t";
        assert_eq!(pg.sql(db, tickets), pg.sql("parts", tickets), "{db}");
        assert_eq!(pg.sql(db, "SELECT count(*) FROM audit"), "0", "{db}");
        assert_eq!(
            pg.sql(db, "SELECT count(*) FROM orders WHERE note = 'CHANGED'"),
            "0",
            "{db}"
        );
        // Schema, comments, triggers and constraints (the foreign key validated, the
        // check still NOT VALID), and the rows: all as they were.
        assert_eq!(sorted_lines_owned(&pg.plain_dump(db)), source, "{db}");
        assert_eq!(
            pg.sql(
                db,
                "SELECT conname, convalidated FROM pg_constraint WHERE conrelid = 'orders'::regclass AND contype IN ('f', 'c') ORDER BY 1"
            ),
            "orders_customer_fk|t\nrecent|f",
            "{db}"
        );
    }
}

fn sorted_lines_owned(dump: &str) -> Vec<String> {
    sorted_lines(dump).into_iter().map(str::to_string).collect()
}

/// `pg_restore --jobs` starts a table's post-data entries in index-name order and skips
/// an `ADD CONSTRAINT` (which locks the table) while an index of that table builds: a key
/// named after an index waited for every index build, and a GIN index named after the
/// B-trees started last. The staged table of contents ranks them: key first, then the GIN
/// index, then the B-tree, whatever their names. The server logs each statement as it
/// starts: the key must start before both indexes (which the second job then starts
/// together, so their order in the log is a race; the unit test in `archive.rs` checks it
/// from the sizes pg_restore reads). The restored database must equal the source.
#[test]
fn a_table_s_key_and_slow_indexes_are_built_first() {
    let pg = Pg::start_with_conf("log_statement = 'ddl'");
    let mut sb = Sandbox::new();
    sb.env
        .push(("BACKSTOP_RESTORE_SESSIONS".into(), "2".into()));
    pg.sql("postgres", "CREATE DATABASE ranks;");
    pg.sql(
        "ranks",
        "CREATE TABLE t (id int, tags int[], n int, note text);          INSERT INTO t SELECT g, ARRAY[g % 7, g % 11], g % 1000, md5(g::text) FROM generate_series(1, 60000) g;          CREATE INDEX t_a_btree ON t (n);          CREATE INDEX t_z_gin ON t USING gin (tags);          ALTER TABLE t ADD CONSTRAINT t_zz_pkey PRIMARY KEY (id);          CREATE TABLE r (id int PRIMARY KEY, t_id int REFERENCES t);          INSERT INTO r SELECT g, g * 2 FROM generate_series(1, 20000) g;",
    );
    sb.file_job("ranks", &pg.url("ranks"), "");
    expect_code(&sb.run(&["backup", "ranks"]), 0);
    let source = sorted_lines_owned(&pg.plain_dump("ranks"));
    let log = pg.dir.path().join("server.log");
    for (db, mode) in [("progressive", None), ("streamed", Some("stream"))] {
        let before = std::fs::read(&log).unwrap().len();
        let mut cmd = sb.cmd(&["--json", "restore", "ranks", "--to", &pg.url(db)]);
        if let Some(m) = mode {
            cmd.env("BACKSTOP_RESTORE_MODE", m);
        }
        let out = cmd.output().unwrap();
        expect_code(&out, 0);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["mode"], mode.map_or("progressive", |_| "streamed"), "{r}");
        let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()[before..]).to_string();
        let at = |what: &str| {
            text.find(what)
                .unwrap_or_else(|| panic!("{db}: no {what:?} in the server log:\n{text}"))
        };
        let (key, gin, btree) = (
            at("ADD CONSTRAINT t_zz_pkey"),
            at("CREATE INDEX t_z_gin"),
            at("CREATE INDEX t_a_btree"),
        );
        assert!(
            key < gin && key < btree,
            "{db}: {key} {gin} {btree}\n{text}"
        );
        assert_eq!(sorted_lines_owned(&pg.plain_dump(db)), source, "{db}");
        assert_eq!(pg.fingerprint(db), pg.fingerprint("ranks"), "{db}");
    }
}
