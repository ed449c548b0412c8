//! The status page in a real browser (headless Chromium from Debian's `chromium`): the
//! static file from `status --html` and the page served by `daemon --listen`, each loaded
//! with real snapshots and drills behind it: job names, health words and charts present,
//! no console error, nothing fetched from anywhere but the daemon (and nothing referenced
//! at all), a screenshot kept under `target/test-artifacts/`. Also `/api/status` against
//! `status --json`, and the bearer token on a non-loopback bind (401 without it).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn chromium_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BACKSTOP_CHROMIUM") {
        return PathBuf::from(p);
    }
    for c in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(c).is_file() {
            return PathBuf::from(c);
        }
    }
    panic!(
        "chromium not found (apt-get install chromium, or run scripts/install-deps.sh; or set BACKSTOP_CHROMIUM)"
    );
}

fn artifacts() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Loaded {
    dom: String,
    console: Vec<String>,
    /// (URL, network isolation key) of every request the browser made.
    requests: Vec<(String, String)>,
}

/// Load `url` in headless Chromium: its DOM, console messages and requests; a screenshot
/// into `shot`.
fn browse(url: &str, shot: &Path, work: &Path) -> Loaded {
    let common = |dir: &str| -> Command {
        let mut c = Command::new(chromium_bin());
        c.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            // Nothing but loopback resolves: a page that reached out would fail loudly.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", work.join(dir).display()))
        .stdin(Stdio::null());
        c
    };
    let net = work.join("net.json");
    let out = common("dom")
        .arg(format!("--log-net-log={}", net.display()))
        .args(["--dump-dom", url])
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shot_out = common("shot")
        .args(["--window-size=1100,1000"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(shot_out.status.success() && shot.is_file(), "no screenshot");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let console = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    let log: serde_json::Value = serde_json::from_slice(&std::fs::read(&net).unwrap()).unwrap();
    let start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        .as_u64()
        .unwrap();
    let requests = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"].as_u64() == Some(start))
        .map(|e| {
            (
                e["params"]["url"].as_str().unwrap_or("").to_string(),
                e["params"]["network_isolation_key"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    Loaded {
        dom: String::from_utf8_lossy(&out.stdout).to_string(),
        console,
        requests,
    }
}

/// The page references nothing outside itself: in-page anchors only, no sources, no
/// stylesheets or imports to fetch.
fn self_contained(html: &str) {
    for attr in ["src=", "srcset=", "@import", "url(", "<link", "<script"] {
        assert!(
            !html.contains(attr),
            "the page references something: {attr}"
        );
    }
    for (i, _) in html.match_indices("href=\"") {
        let rest = &html[i + 6..];
        assert!(
            rest.starts_with('#'),
            "a link leaves the page: {}",
            &rest[..rest.len().min(60)]
        );
    }
}

fn check_page(l: &Loaded) {
    assert!(l.console.is_empty(), "console messages: {:?}", l.console);
    for job in ["data-job=\"app\"", "data-job=\"broken\""] {
        assert!(l.dom.contains(job), "{job} missing");
    }
    assert!(l.dom.contains("data-health=\"UNVERIFIED\"") || l.dom.contains("data-health=\"OK\""));
    assert!(
        l.dom.contains("data-health=\"FAILING\""),
        "the broken job is FAILING"
    );
    assert!(l.dom.contains("cannot read storage"), "and says why");
    for chart in ["size", "duration", "drills"] {
        assert!(
            l.dom.contains(&format!("data-chart=\"{chart}\"")),
            "chart {chart}"
        );
    }
    assert!(
        l.dom.contains("<path class=\"size\""),
        "the size line is drawn"
    );
    assert!(
        l.dom.contains("<circle class=\"pass\""),
        "the passed drill is drawn"
    );
    assert!(
        l.dom.contains("backstop restore app --snapshot "),
        "the restore command"
    );
}

fn get(addr: &str, path: &str, token: Option<&str>) -> (String, String) {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    let (head, body) = s.split_once("\r\n\r\n").unwrap_or((&s, ""));
    (head.to_string(), body.to_string())
}

fn start_daemon(sb: &Sandbox, args: &[&str], log: &Path) -> Child {
    let mut all = vec!["daemon"];
    all.extend_from_slice(args);
    sb.cmd(&all)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn wait_listening(addr: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not listen on {addr}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop(mut d: Child) {
    // SAFETY: plain kill(2) of our child.
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    let _ = d.wait();
}

#[test]
fn the_status_page_in_a_real_browser_static_and_served() {
    let pg = Pg::start();
    let sb = Sandbox::new();
    load_bulk(&pg, "app", 1);
    sb.file_job("app", &pg.url("app"), "");
    sb.append_job(
        "app",
        "",
        "[verify]\nchecks = [\"SELECT count(*) > 0 FROM bulk\"]\n",
    );
    // A job whose storage cannot be read: FAILING, with the reason on the page.
    let blocked = sb.path().join("blocked");
    std::fs::write(&blocked, b"a file where a directory should be").unwrap();
    sb.write_job(
        "broken",
        &format!(
            "[source]\ntype = \"postgres\"\nurl = \"{}\"\n[storage]\nurl = \"file://{}/store\"\n[encryption]\nrecipients = [\"{}\"]\n",
            pg.url("app"),
            blocked.display(),
            sb.recipient
        ),
    );
    for _ in 0..2 {
        expect_code(&sb.run(&["backup", "app"]), 0);
    }
    expect_code(&sb.run(&["verify", "app"]), 0);
    let art = artifacts();

    // The static file.
    let file = sb.path().join("status.html");
    let out = sb.run(&["status", "--html", file.to_str().unwrap()]);
    expect_code(&out, 1); // a job is FAILING
    let html = std::fs::read_to_string(&file).unwrap();
    self_contained(&html);
    let l = browse(
        &format!("file://{}", file.display()),
        &art.join("status-page-static.png"),
        sb.path(),
    );
    check_page(&l);
    // This host holds the job's private key: the last drill's checks (content facts) show.
    assert!(
        l.dom.contains("Checks of the last passed drill"),
        "checks shown"
    );
    assert!(html.contains("bulk"), "a check names the table");
    // Without the key on the host, no content fact reaches the page.
    let aside = sb.path().join("key-aside");
    std::fs::rename(&sb.identity, &aside).unwrap();
    let bare = sb.path().join("bare.html");
    sb.run(&["status", "--html", bare.to_str().unwrap()]);
    let text = std::fs::read_to_string(&bare).unwrap();
    assert!(text.contains("data-job=\"app\""));
    assert!(
        !text.contains("Checks of the last passed drill") && !text.contains("bulk"),
        "no content facts"
    );
    std::fs::rename(&aside, &sb.identity).unwrap();

    // Served by the daemon, on loopback without a token.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = sb.path().join("daemon.log");
    let d = start_daemon(&sb, &["--listen", &addr], &log);
    wait_listening(&addr, &log);
    let (head, body) = get(&addr, "/", None);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Security-Policy: default-src 'none'"),
        "{head}"
    );
    self_contained(&body);
    let l = browse(
        &format!("http://{addr}/"),
        &art.join("status-page-daemon.png"),
        sb.path(),
    );
    check_page(&l);
    let page_requests: Vec<_> = l
        .requests
        .iter()
        .filter(|(_, nik)| nik.starts_with("http://127.0.0.1"))
        .collect();
    assert!(
        !page_requests.is_empty(),
        "the page load is seen: {:?}",
        l.requests
    );
    for (url, _) in &page_requests {
        assert!(
            url.starts_with(&format!("http://{addr}/")),
            "a request left the machine: {url}"
        );
    }
    // /api/status is the `status --json` document.
    let (_, api) = get(&addr, "/api/status", None);
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    let cli: serde_json::Value =
        serde_json::from_slice(&sb.run(&["--json", "status"]).stdout).unwrap();
    let key = |v: &serde_json::Value| -> Vec<(String, String, String)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|j| {
                (
                    j["job"].to_string(),
                    j["health"].to_string(),
                    j["last_snapshot"]["snapshot"].to_string(),
                )
            })
            .collect()
    };
    assert_eq!(key(&api), key(&cli));
    let (head, body) = get(&addr, "/metrics", None);
    assert!(
        head.starts_with("HTTP/1.1 200") && body.contains("backstop_"),
        "{body}"
    );
    let (head, _) = get(&addr, "/nope", None);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    stop(d);

    // Any other address needs the token: refused at start without one, 401 without it.
    let port = free_port();
    let wild = format!("0.0.0.0:{port}");
    let out = sb.run(&["daemon", "--listen", &wild]);
    let err = expect_code(&out, 2);
    assert!(err.contains("--listen-token-file"), "{err}");
    let token_file = sb.path().join("token");
    std::fs::write(&token_file, "0123456789abcdef0123456789abcdef\n").unwrap();
    let d = start_daemon(
        &sb,
        &[
            "--listen",
            &wild,
            "--listen-token-file",
            token_file.to_str().unwrap(),
        ],
        &log,
    );
    let local = format!("127.0.0.1:{port}");
    wait_listening(&local, &log);
    for path in ["/", "/api/status", "/metrics"] {
        let (head, body) = get(&local, path, None);
        assert!(head.starts_with("HTTP/1.1 401"), "{path}: {head}");
        assert!(
            !body.contains("app"),
            "nothing about the jobs without the token"
        );
        let (head, _) = get(&local, path, Some("0123456789abcdef0123456789abcdeX"));
        assert!(head.starts_with("HTTP/1.1 401"), "{path}: {head}");
    }
    let (head, body) = get(&local, "/", Some("0123456789abcdef0123456789abcdef"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("data-job=\"app\""));
    stop(d);
}
