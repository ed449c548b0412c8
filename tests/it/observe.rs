//! Observability against real parts: `status --json` through good, failed and verified
//! runs and injected times; the metrics file parsed back; webhook and healthcheck pings
//! received by a real HTTP server; a dead webhook does not fail or stall the backup;
//! progress off a terminal is plain lines and renders under a pseudo-terminal.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

fn status(sb: &Sandbox, now: Option<&str>, code: i32) -> Value {
    let mut c = sb.cmd(&["--json", "status", "app"]);
    if let Some(n) = now {
        c.env("BACKSTOP_NOW", n);
    }
    let out = c.output().unwrap();
    expect_code(&out, code);
    serde_json::from_slice::<Value>(&out.stdout).unwrap()[0].clone()
}

#[test]
fn status_follows_backups_failures_and_drills() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 1);
    sb.file_job("app", &pg.url("app"), "");
    sb.append_job(
        "app",
        "schedule = \"0 */6 * * *\"",
        "[verify]\nmax_age = \"7d\"\n",
    );
    let metrics = sb.path().join("metrics/backstop.prom");
    let m = metrics.to_str().unwrap();

    let s = status(&sb, None, 1);
    assert_eq!(s["health"], "STALE", "{s}");
    assert!(s["next_run"].is_string());

    expect_code(&sb.run(&["--metrics-file", m, "backup", "app"]), 0);
    let s = status(&sb, None, 1);
    assert_eq!(s["health"], "UNVERIFIED", "{s}");
    assert_eq!(s["snapshots"], 1);
    let snap = s["last_snapshot"]["snapshot"].as_str().unwrap().to_string();
    assert!(s["last_snapshot"]["stored_bytes"].as_u64().unwrap() > 0);

    expect_code(&sb.run(&["verify", "app"]), 0);
    let s = status(&sb, None, 0);
    assert_eq!(s["health"], "OK", "{s}");
    assert_eq!(s["last_verified"]["snapshot"], snap.as_str());
    assert!(s["last_verified"]["restore_ms"].as_u64().unwrap() > 0);
    assert!(s["reasons"].as_array().unwrap().is_empty());

    // Injected times: 14 hours on the snapshot is stale for a 6-hourly job; 8 days on,
    // the drill is too old as well (STALE is the worse word, both reasons are given).
    let later = |h: i64| (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(h)).to_string();
    let s = status(&sb, Some(&later(14)), 1);
    assert_eq!(s["health"], "STALE", "{s}");
    let s = status(&sb, Some(&later(24 * 8)), 1);
    assert_eq!(s["health"], "STALE", "{s}");
    let reasons = s["reasons"].to_string();
    assert!(
        reasons.contains("restore drill") && reasons.contains("newest snapshot"),
        "{reasons}"
    );
    // A fresh backup keeps STALE away, but an old drill is UNVERIFIED.
    let job = std::fs::read_to_string(sb.jobs().join("app.toml")).unwrap();
    sb.write_job("app", &job.replace("max_age = \"7d\"", "max_age = \"1s\""));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status(&sb, None, 1)["health"], "UNVERIFIED");
    sb.write_job("app", &job);

    // A failed backup: FAILING, with the reason, until the next good one.
    sb.write_job(
        "app",
        &job.replace(&pg.url("app"), "postgres://postgres@127.0.0.1:1/app"),
    );
    expect_code(&sb.run(&["--metrics-file", m, "backup", "app"]), 1);
    sb.write_job("app", &job);
    let s = status(&sb, None, 1);
    assert_eq!(s["health"], "FAILING", "{s}");
    assert!(
        s["last_failure"]["error"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:1"),
        "{s}"
    );
    // The table form says the same.
    let text = expect_code(&sb.run(&["status"]), 1);
    assert!(
        text.contains("FAILING") && text.contains("the last backup failed"),
        "{text}"
    );

    // The metrics file, parsed by a Prometheus text-format parser.
    let text = std::fs::read_to_string(&metrics).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid text format");
    let get = |name: &str| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get("job") == Some("app"))
            .unwrap_or_else(|| panic!("{name} missing in:\n{text}"));
        match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    let now = jiff::Timestamp::now().as_second() as f64;
    assert!((now - get("backstop_last_success_timestamp_seconds")).abs() < 120.0);
    assert!((now - get("backstop_last_failure_timestamp_seconds")).abs() < 60.0);
    assert_eq!(get("backstop_last_run_success"), 0.0);
    assert!(get("backstop_last_stored_bytes") > 0.0);
    assert!(get("backstop_last_read_bytes") > get("backstop_last_stored_bytes"));
    assert!(get("backstop_last_restore_duration_seconds") > 0.0);
    assert!(get("backstop_last_verified_timestamp_seconds") > 0.0);
    assert_eq!(get("backstop_anomaly"), 0.0);
    assert_eq!(get("backstop_snapshots"), 1.0);
}

/// A tiny HTTP server: records "METHOD PATH\nheaders\n\nbody" of each request.
struct Recorder {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

fn recorder(answer: bool) -> Recorder {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let s = s.clone();
            std::thread::spawn(move || {
                if !answer {
                    // Accept and say nothing: a dead endpoint.
                    std::thread::sleep(Duration::from_secs(120));
                    return;
                }
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut head = String::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                s.lock()
                    .unwrap()
                    .push(format!("{head}\n{}", String::from_utf8_lossy(&body)));
                let mut w = conn;
                let _ = w.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK",
                );
            });
        }
    });
    Recorder { port, seen }
}

#[test]
fn webhooks_and_healthchecks_are_delivered_and_a_dead_endpoint_costs_only_its_timeout() {
    let pg = Pg::start();
    let mut sb = Sandbox::new();
    // The webhook's secret comes from the environment, never the job file.
    sb.env.push(("HOOK_TOKEN".into(), "s3cret".into()));
    load_bulk(&pg, "app", 1);
    let rec = recorder(true);
    sb.file_job("app", &pg.url("app"), "");
    sb.append_job(
        "app",
        "",
        &format!(
            "[notify]\nwebhook = \"http://127.0.0.1:{0}/hook/${{HOOK_TOKEN}}\"\nhealthcheck = \"http://127.0.0.1:{0}/hc/uuid\"\non_success = true\n",
            rec.port
        ),
    );
    let ok = sb.cmd(&["backup", "app"]).output().unwrap();
    expect_code(&ok, 0);
    let seen = rec.seen.lock().unwrap().clone();
    let first = |prefix: &str| seen.iter().find(|r| r.starts_with(prefix)).cloned();
    assert!(first("GET /hc/uuid/start ").is_some(), "{seen:#?}");
    assert!(first("GET /hc/uuid ").is_some(), "{seen:#?}");
    let hook = first("POST /hook/s3cret ").expect("webhook");
    let body: Value = serde_json::from_str(hook.split("\r\n\n").last().unwrap()).unwrap();
    assert_eq!(body["event"], "success");
    assert_eq!(body["job"], "app");
    assert_eq!(body["snapshot"], sb.snapshots("app")[0].0.as_str());
    assert!(
        body["host"].is_string() && body["finished"].is_string() && body["duration_ms"].is_u64()
    );

    // A failure: /fail with the error as the body, and a failure event.
    rec.seen.lock().unwrap().clear();
    let job = std::fs::read_to_string(sb.jobs().join("app.toml")).unwrap();
    sb.write_job(
        "app",
        &job.replace(&pg.url("app"), "postgres://postgres@127.0.0.1:1/app")
            .replace("on_success = true", "format = \"slack\""),
    );
    let bad = sb.cmd(&["backup", "app"]).output().unwrap();
    expect_code(&bad, 1);
    let seen = rec.seen.lock().unwrap().clone();
    let fail = seen
        .iter()
        .find(|r| r.starts_with("POST /hc/uuid/fail "))
        .expect("fail ping");
    assert!(fail.contains("127.0.0.1:1"), "{fail}");
    let slack = seen
        .iter()
        .find(|r| r.starts_with("POST /hook/s3cret "))
        .expect("webhook");
    let body: Value = serde_json::from_str(slack.split("\r\n\n").last().unwrap()).unwrap();
    assert!(body["text"].as_str().unwrap().contains("FAILED"), "{body}");

    // A dead endpoint (accepts, never answers): the backup still succeeds, delayed only by
    // the notification timeout and its retries.
    let dead = recorder(false);
    sb.write_job(
        "app",
        &job.replace(&rec.port.to_string(), &dead.port.to_string())
            .replace("on_success = true", "on_success = true\ntimeout = \"1s\""),
    );
    let t = Instant::now();
    let out = sb.cmd(&["backup", "app"]).output().unwrap();
    expect_code(&out, 0);
    // start + success ping + webhook: 3 deliveries x 3 attempts x 1 s, plus backoff.
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("notification to http://127.0.0.1"), "{text}");
}

#[test]
fn progress_is_plain_off_a_terminal_and_a_bar_on_one() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 60);
    sb.file_job("app", &pg.url("app"), "");
    let out = sb
        .cmd(&["--log-format", "json", "backup", "app"])
        // Well under the backup's duration, however fast the machine.
        .env("BACKSTOP_PROGRESS_INTERVAL", "20ms")
        .output()
        .unwrap();
    expect_code(&out, 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains('\u{1b}') && !err.contains('\r'),
        "escape codes off a terminal: {err:?}"
    );
    let lines: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["read_bytes"].is_u64() && l["task"] == "backup app"),
        "no progress line: {err}"
    );
    // Under a pseudo-terminal the bar renders (carriage returns and escape codes).
    let exe = env!("CARGO_BIN_EXE_backstop");
    let cmd = format!("{exe} --jobs {} backup app", sb.jobs().display());
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .envs(sb.env.iter().cloned())
        .output()
        .expect("script(1) from util-linux is needed");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(
        tty.contains("backup app") && (tty.contains('\r') || tty.contains('\u{1b}')),
        "{tty:?}"
    );
    assert!(tty.contains("complete"), "{tty}");
}

#[test]
fn completions_and_man_page() {
    let sb = Sandbox::new();
    let out = sb.run(&["completions", "bash"]);
    let text = expect_code(&out, 0);
    assert!(
        text.contains("_backstop") && text.contains("prune"),
        "{text}"
    );
    let text = expect_code(&sb.run(&["man"]), 0);
    assert!(
        text.contains(".TH backstop") && text.contains("restore"),
        "{text}"
    );
    expect_code(&sb.run(&["completions", "tcsh"]), 2);
}
