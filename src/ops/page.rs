//! The status page: one self-contained HTML document (inline CSS, charts drawn here as
//! SVG, no script, nothing fetched) built from what `status` reads: every job's health word
//! and why, snapshots over the last 90 days (stored size and backup duration, shrink
//! alarms marked), drills (restore duration, passed or failed), each storage's state, the
//! recoverable window and RPO of cluster jobs, and the newest verified snapshot with the
//! command that restores it. Content facts (the last drill's checks: row counts per
//! table) only on a host that holds the job's private key and so could read them anyway,
//! and only from a result signed by the job; never a secret: every text that came from
//! storage or an error is escaped and redacted. Served by
//! `daemon --listen` and written by `status --html FILE`.

use std::fmt::Write as _;

use jiff::{SignedDuration, Timestamp};

use super::status::{Health, History, JobStatus};
use crate::text::{human_age, human_bytes};

/// How far back the charts go.
pub(crate) const WINDOW: SignedDuration = SignedDuration::from_hours(90 * 24);

/// One job as the page shows it.
#[derive(Debug, Clone)]
pub(crate) struct JobPage {
    pub status: JobStatus,
    pub history: History,
}

/// Gather the page's facts for `plans` (as `status` does; `with_checks`: also the last
/// drill's checks where this host can decrypt them).
pub(crate) async fn gather(
    plans: &[crate::config::JobPlan],
    now: Timestamp,
    with_checks: bool,
) -> Vec<JobPage> {
    let mut out = Vec::new();
    for p in plans {
        let (status, history) = super::status::of_full(p, now, with_checks).await;
        out.push(JobPage { status, history });
    }
    out
}

/// Escape text for HTML (element content and attribute values).
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() && c != '\n' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// Text from errors and storage: secrets redacted, then escaped, bounded.
fn told(s: &str) -> String {
    let red = crate::text::redact_secrets(s);
    let (short, _) = crate::text::command_excerpt(&red, 600);
    esc(&short)
}

fn health_class(h: Health) -> &'static str {
    match h {
        Health::Ok => "ok",
        Health::Unverified => "unverified",
        Health::Stale => "stale",
        Health::Failing => "failing",
    }
}

const CSS: &str = r#"
:root{--bg:#f6f7f9;--card:#fff;--fg:#1b1f24;--muted:#5b6470;--line:#d9dde3;--grid:#eceff3;
--ok:#1a7f37;--unverified:#9a6700;--stale:#bc4c00;--failing:#cf222e;--size:#0969da;--dur:#8250df}
@media (prefers-color-scheme: dark){:root{--bg:#0d1117;--card:#161b22;--fg:#e6edf3;--muted:#9198a1;
--line:#30363d;--grid:#21262d;--ok:#3fb950;--unverified:#d29922;--stale:#db6d28;--failing:#f85149;--size:#4493f8;--dur:#ab7df8}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header,main,footer{max-width:1100px;margin:0 auto;padding:12px 16px}
header h1{font-size:20px;margin:8px 0 2px}
.muted{color:var(--muted);font-size:13px}
.summary{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0}
.job{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;margin:14px 0}
.job h2{font-size:18px;margin:0;display:flex;align-items:center;gap:10px;flex-wrap:wrap}
.badge{display:inline-block;text-decoration:none;border-radius:999px;padding:2px 10px;font-size:12px;font-weight:700;letter-spacing:.04em;color:#fff}
.badge.ok{background:var(--ok)}.badge.unverified{background:var(--unverified)}.badge.stale{background:var(--stale)}.badge.failing{background:var(--failing)}
ul.reasons{margin:8px 0;padding-left:20px}
ul.reasons li{margin:2px 0;overflow-wrap:anywhere}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:8px 16px;margin:10px 0}
.facts div{min-width:0}
.facts b{display:block;font-size:12px;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.03em}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:12px;margin-top:8px}
figure{margin:0;min-width:0}
figcaption{font-size:13px;color:var(--muted);margin-bottom:2px}
svg{width:100%;height:auto;display:block}
svg .grid{stroke:var(--grid);stroke-width:1}
svg .axis{fill:var(--muted);font-size:11px}
svg .size{fill:none;stroke:var(--size);stroke-width:1.5}
svg .dur{fill:none;stroke:var(--dur);stroke-width:1.5}
svg .alarm{fill:var(--failing)}
svg .pass{fill:var(--ok)}
svg .fail{fill:var(--failing)}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);overflow-wrap:anywhere}
.scroll{overflow-x:auto}
pre{background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:8px;overflow-x:auto;font-size:13px;margin:4px 0;user-select:all}
@media (max-width:480px){body{font-size:14px}.job{padding:12px}header h1{font-size:18px}}
"#;

/// The whole page. `refresh`: seconds after which a browser reloads it (the daemon's).
pub(crate) fn render(jobs: &[JobPage], now: Timestamp, refresh: Option<u32>) -> String {
    let mut h = String::with_capacity(16 * 1024 + jobs.len() * 64 * 1024);
    let worst = jobs.iter().map(|j| j.status.health).max();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">");
    h.push_str("<meta name=\"color-scheme\" content=\"light dark\">");
    if let Some(r) = refresh {
        let _ = write!(h, "<meta http-equiv=\"refresh\" content=\"{r}\">");
    }
    let _ = write!(
        h,
        "<title>backstop: {}</title><style>{CSS}</style></head><body>",
        worst
            .map(|w| w.to_string())
            .unwrap_or_else(|| "no jobs".into())
    );
    let _ = write!(
        h,
        "<header><h1>backstop status</h1><div class=\"muted\">{} job(s) on {} at {} UTC</div><div class=\"summary\">",
        jobs.len(),
        esc(&crate::state::hostname()),
        now.strftime("%Y-%m-%d %H:%M:%S")
    );
    for j in jobs {
        let _ = write!(
            h,
            "<a href=\"#job-{id}\" class=\"badge {c}\">{name}: {w}</a>",
            id = esc(&j.status.job),
            c = health_class(j.status.health),
            name = esc(&j.status.job),
            w = j.status.health
        );
    }
    h.push_str("</div></header><main>");
    if jobs.is_empty() {
        h.push_str("<p>No jobs.</p>");
    }
    for j in jobs {
        job(&mut h, j, now);
    }
    let _ = writeln!(
        h,
        "</main><footer class=\"muted\">backstop {}. Sizes are stored (compressed, encrypted) bytes. \
         Charts: the last 90 days. Content facts (table names, row counts) appear only where this host holds the job's private key.</footer></body></html>",
        env!("CARGO_PKG_VERSION")
    );
    h
}

fn job(h: &mut String, j: &JobPage, now: Timestamp) {
    let s = &j.status;
    let _ = write!(
        h,
        "<section class=\"job\" id=\"job-{id}\" data-job=\"{id}\" data-health=\"{w}\"><h2>{name} <span class=\"badge {c}\">{w}</span></h2>",
        id = esc(&s.job),
        name = esc(&s.job),
        c = health_class(s.health),
        w = s.health
    );
    if !s.reasons.is_empty() {
        h.push_str("<ul class=\"reasons\">");
        for r in &s.reasons {
            let _ = write!(h, "<li>{}</li>", told(r));
        }
        h.push_str("</ul>");
    }
    h.push_str("<div class=\"facts\">");
    let age = |secs: i64| human_age(SignedDuration::from_secs(secs));
    fact(
        h,
        "Last snapshot",
        &match &s.last_snapshot {
            Some(l) => format!(
                "{} ago · {} · {:.1} s · {}",
                age(l.age_seconds),
                human_bytes(l.stored_bytes),
                l.duration_ms as f64 / 1000.0,
                l.trigger
            ),
            None => "none".into(),
        },
    );
    fact(
        h,
        "Last verified restore",
        &match &s.last_verified {
            Some(v) => format!(
                "{} ago · restore took {:.1} s",
                age(v.age_seconds),
                v.restore_ms as f64 / 1000.0
            ),
            None => "never".into(),
        },
    );
    fact(
        h,
        "Last failure",
        &match &s.last_failure {
            Some(f) => format!("{} ago: {}", age(f.age_seconds), f.error),
            None => "none".into(),
        },
    );
    fact(h, "Snapshots", &s.snapshots.to_string());
    fact(
        h,
        "Next run",
        s.next_run
            .as_deref()
            .map(short_time)
            .as_deref()
            .unwrap_or("not scheduled"),
    );
    if let Some(w) = &s.wal {
        fact(
            h,
            "Recoverable window",
            &format!(
                "{} → {}",
                w.recoverable_from
                    .as_deref()
                    .map(short_time)
                    .unwrap_or_else(|| "-".into()),
                w.recoverable_until
                    .as_deref()
                    .map(short_time)
                    .unwrap_or_else(|| "-".into())
            ),
        );
        fact(
            h,
            "RPO (newest WAL archived)",
            &match w.rpo_seconds {
                Some(r) => format!("{} ago", age(r)),
                None => "no WAL archived".into(),
            },
        );
    }
    h.push_str("</div>");
    if let Some(v) = &s.last_verified {
        let _ = write!(
            h,
            "<div><b class=\"muted\">Restore the newest verified snapshot ({}):</b><pre>backstop restore {} --snapshot {}</pre></div>",
            esc(&v.snapshot),
            esc(&s.job),
            esc(&v.snapshot)
        );
    }
    if !s.storages.is_empty() {
        h.push_str("<div class=\"scroll\"><table><thead><tr><th>Storage</th><th>State</th><th>Newest snapshot</th><th>Missing</th></tr></thead><tbody>");
        for st in &s.storages {
            let _ = write!(
                h,
                "<tr><td>{} <span class=\"muted\">{}</span></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&st.name),
                told(&st.url),
                esc(&st.state),
                esc(st.newest.as_deref().unwrap_or("-")),
                st.missing
            );
        }
        h.push_str("</tbody></table></div>");
    }
    h.push_str("<div class=\"charts\">");
    charts(h, &j.history, now);
    h.push_str("</div>");
    if let Some((snap, checks)) = &j.history.last_checks {
        let _ = write!(
            h,
            "<details class=\"checks\"><summary>Checks of the last passed drill ({}), decrypted on this host</summary>\
             <div class=\"scroll\"><table><thead><tr><th>Check</th><th>Expected</th><th>Restored</th><th></th></tr></thead><tbody>",
            esc(snap)
        );
        for c in checks.iter().take(200) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                told(&c.name),
                told(&c.expected),
                told(&c.actual),
                if c.ok {
                    "ok"
                } else {
                    "<b style=\"color:var(--failing)\">WRONG</b>"
                }
            );
        }
        h.push_str("</tbody></table></div></details>");
    }
    if !s.anomalies.is_empty() {
        let _ = write!(
            h,
            "<p class=\"muted\">Shrink alarm on: {}</p>",
            s.anomalies
                .iter()
                .take(10)
                .map(|a| esc(a))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    h.push_str("</section>");
}

fn fact(h: &mut String, label: &str, value: &str) {
    let _ = write!(h, "<div><b>{}</b>{}</div>", esc(label), told(value));
}

fn short_time(t: &str) -> String {
    t.chars().take(16).collect::<String>().replace('T', " ")
}

const W: f64 = 340.0;
const H: f64 = 130.0;
const LEFT: f64 = 50.0;
const BOTTOM: f64 = 16.0;

/// A chart frame: grid lines, the y labels (`fmt` of 0, half and the top), the time
/// axis' ends.
fn frame(h: &mut String, top: f64, fmt: &dyn Fn(f64) -> String, from: Timestamp, to: Timestamp) {
    let _ = write!(h, "<svg viewBox=\"0 0 {W} {H}\" role=\"img\">");
    for k in 0..=2 {
        let y = 6.0 + (H - BOTTOM - 6.0) * (1.0 - k as f64 / 2.0);
        let _ = write!(
            h,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{W}\" y2=\"{y:.1}\"/><text class=\"axis\" x=\"2\" y=\"{:.1}\">{}</text>",
            y + 3.0,
            esc(&fmt(top * k as f64 / 2.0))
        );
    }
    let _ = write!(
        h,
        "<text class=\"axis\" x=\"{LEFT}\" y=\"{}\">{}</text><text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
        H - 3.0,
        stamp(from, to),
        W,
        H - 3.0,
        stamp(to, from)
    );
}

/// A time axis label: the date, or the time of day when the axis spans under two days.
fn stamp(t: Timestamp, other: Timestamp) -> String {
    if t.duration_since(other).abs() < SignedDuration::from_hours(48) {
        t.strftime("%H:%M").to_string()
    } else {
        t.strftime("%b %d").to_string()
    }
}

/// Seconds for an axis: whole above 10, else one decimal.
fn secs(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0} s")
    } else {
        format!("{v:.1} s")
    }
}

fn xy(t: Timestamp, v: f64, from: Timestamp, to: Timestamp, top: f64) -> (f64, f64) {
    let span = to.duration_since(from).as_secs_f64().max(1.0);
    let x = LEFT + (W - LEFT - 4.0) * (t.duration_since(from).as_secs_f64() / span).clamp(0.0, 1.0);
    let y = 6.0 + (H - BOTTOM - 6.0) * (1.0 - (v / top).clamp(0.0, 1.0));
    (x, y)
}

fn nice_top(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(max.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= max {
            return m * mag;
        }
    }
    10.0 * mag
}

fn charts(h: &mut String, hist: &History, now: Timestamp) {
    let from = now - WINDOW;
    if !hist.snapshots.iter().any(|p| p.time >= from) && !hist.drills.iter().any(|d| d.time >= from)
    {
        h.push_str("<p class=\"muted\" data-chart=\"none\">No snapshots or drills in the last 90 days.</p>");
        return;
    }
    let snaps: Vec<_> = hist
        .snapshots
        .iter()
        .filter(|p| p.time >= from)
        .rev()
        .collect();
    let first = snaps.first().map(|p| p.time).unwrap_or(from).max(from);
    let start = if snaps.len() > 1 { first } else { from };
    // Stored size.
    let top = nice_top(
        snaps
            .iter()
            .map(|p| p.stored_bytes as f64)
            .fold(0.0, f64::max),
    );
    h.push_str("<figure class=\"chart\" data-chart=\"size\"><figcaption>Stored size per snapshot");
    if snaps.iter().any(|p| p.anomalous) {
        h.push_str(" · <span style=\"color:var(--failing)\">●</span> shrink alarm");
    }
    h.push_str("</figcaption>");
    frame(h, top, &|v| human_bytes(v as u64), start, now);
    line(
        h,
        "size",
        snaps
            .iter()
            .map(|p| xy(p.time, p.stored_bytes as f64, start, now, top)),
    );
    for p in snaps.iter().filter(|p| p.anomalous) {
        let (x, y) = xy(p.time, p.stored_bytes as f64, start, now, top);
        let _ = write!(
            h,
            "<circle class=\"alarm\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\"><title>{}: shrink alarm</title></circle>",
            esc(&p.id)
        );
    }
    h.push_str("</svg></figure>");
    // Backup duration.
    let top = nice_top(
        snaps
            .iter()
            .map(|p| p.duration_ms as f64 / 1000.0)
            .fold(0.0, f64::max),
    );
    h.push_str(
        "<figure class=\"chart\" data-chart=\"duration\"><figcaption>Backup duration</figcaption>",
    );
    frame(h, top, &secs, start, now);
    line(
        h,
        "dur",
        snaps
            .iter()
            .map(|p| xy(p.time, p.duration_ms as f64 / 1000.0, start, now, top)),
    );
    h.push_str("</svg></figure>");
    // Drills.
    let mut drills: Vec<_> = hist.drills.iter().filter(|d| d.time >= from).collect();
    drills.sort_by_key(|d| d.time);
    let top = nice_top(
        drills
            .iter()
            .map(|d| d.restore_ms as f64 / 1000.0)
            .fold(0.0, f64::max),
    );
    let passed = drills.iter().filter(|d| d.passed).count();
    let _ = write!(
        h,
        "<figure class=\"chart\" data-chart=\"drills\"><figcaption>Restore drills: time to restore · {passed} passed, {} failed</figcaption>",
        drills.len() - passed
    );
    frame(
        h,
        top,
        &secs,
        start.min(drills.first().map(|d| d.time).unwrap_or(start)),
        now,
    );
    let dstart = start.min(drills.first().map(|d| d.time).unwrap_or(start));
    for d in &drills {
        let (x, y) = xy(d.time, d.restore_ms as f64 / 1000.0, dstart, now, top);
        let _ = write!(
            h,
            "<circle class=\"{}\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\"><title>{} of {}: {} ({} checks passed, {} failed), restore {:.1} s</title></circle>",
            if d.passed { "pass" } else { "fail" },
            d.time.strftime("%Y-%m-%d %H:%M"),
            esc(&d.snapshot),
            if d.passed { "passed" } else { "FAILED" },
            d.checks_passed,
            d.checks_failed,
            d.restore_ms as f64 / 1000.0
        );
    }
    h.push_str("</svg></figure>");
}

/// A polyline through the points (one path; thousands of points stay one element). More
/// points than pixels are thinned to the lowest and highest value per pixel column, so a
/// spike or a drop still shows and the page stays small.
fn line(h: &mut String, class: &str, pts: impl Iterator<Item = (f64, f64)>) {
    let mut cols: Vec<(i64, f64, f64)> = Vec::new();
    for (x, y) in pts {
        let c = x.round() as i64;
        match cols.last_mut() {
            Some((lc, lo, hi)) if *lc == c => {
                *lo = lo.min(y);
                *hi = hi.max(y);
            }
            _ => cols.push((c, y, y)),
        }
    }
    let mut d = String::new();
    for (c, lo, hi) in cols {
        let _ = write!(d, "{}{c},{hi:.1}", if d.is_empty() { "M" } else { " L" });
        if (hi - lo).abs() >= 0.5 {
            let _ = write!(d, " L{c},{lo:.1}");
        }
    }
    if !d.is_empty() {
        let _ = write!(h, "<path class=\"{class}\" d=\"{d}\"/>");
    }
}

/// Render the page for `jobs` synthetic jobs of `snapshots` snapshots each (one every
/// hour back from now, a drill every day) and say how long rendering took and how big the
/// page is: `scripts/bench-page.sh` runs it through `examples/page_bench.rs`.
#[doc(hidden)]
pub fn bench_render(jobs: usize, snapshots: usize) -> (std::time::Duration, usize) {
    use super::status::{DrillPoint, SnapPoint};
    let now = Timestamp::now();
    let pages: Vec<JobPage> = (0..jobs)
        .map(|j| {
            let snaps = (0..snapshots)
                .map(|i| SnapPoint {
                    id: format!("20261127T000000Z-{j:03}{i:03}"),
                    time: now - SignedDuration::from_mins(60 * i as i64),
                    stored_bytes: 1_000_000_000 + (i as u64 * 7919) % 50_000_000,
                    duration_ms: 60_000 + (i as u64 * 104_729) % 30_000,
                    anomalous: i % 500 == 7,
                })
                .collect();
            let drills = (0..snapshots / 24)
                .map(|i| DrillPoint {
                    snapshot: format!("20261127T000000Z-{j:03}{i:03}"),
                    time: now - SignedDuration::from_hours(24 * i as i64),
                    restore_ms: 120_000 + (i as u64 * 7_001) % 60_000,
                    passed: i % 40 != 3,
                    checks_passed: 3,
                    checks_failed: u64::from(i % 40 == 3),
                })
                .collect();
            let mut status = super::status::JobStatus::empty(&format!("job-{j}"));
            status.snapshots = snapshots as u64;
            JobPage {
                status,
                history: History {
                    snapshots: snaps,
                    drills,
                    last_checks: None,
                },
            }
        })
        .collect();
    let t = std::time::Instant::now();
    let html = render(&pages, now, Some(60));
    (t.elapsed(), html.len())
}

#[cfg(test)]
mod tests {
    use super::super::status::{DrillPoint, SnapPoint};
    use super::*;

    fn page(name: &str, health: Health, reasons: Vec<String>, n: usize) -> JobPage {
        let now: Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
        let snapshots = (0..n)
            .map(|i| SnapPoint {
                id: format!("snap-{i}"),
                time: now - SignedDuration::from_mins(60 * i as i64),
                stored_bytes: 1_000_000 + i as u64,
                duration_ms: 1000,
                anomalous: i == 3,
            })
            .collect();
        let drills = vec![DrillPoint {
            snapshot: "snap-0".into(),
            time: now,
            restore_ms: 2500,
            passed: false,
            checks_passed: 1,
            checks_failed: 1,
        }];
        let mut status = crate::ops::status::JobStatus::empty(name);
        status.health = health;
        status.reasons = reasons;
        JobPage {
            status,
            history: History {
                snapshots,
                drills,
                last_checks: None,
            },
        }
    }

    #[test]
    fn the_page_escapes_what_it_is_given_and_shows_every_job() {
        let now: Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
        let jobs = vec![
            page("app", Health::Ok, vec![], 10),
            page(
                "<script>x",
                Health::Failing,
                vec![
                    "storage b cannot be read: <img src=x onerror=alert(1)> password=hunter2"
                        .into(),
                ],
                0,
            ),
        ];
        let html = render(&jobs, now, None);
        assert!(html.contains("data-job=\"app\"") && html.contains(">OK<"));
        assert!(html.contains("FAILING"));
        assert!(
            !html.contains("<script") && !html.contains("<img"),
            "escaped"
        );
        assert!(html.contains("&lt;img src=x"));
        assert!(!html.contains("hunter2"), "secrets are redacted");
        assert!(
            html.contains("<circle class=\"alarm\""),
            "the shrink alarm is marked"
        );
        assert!(
            html.contains("<circle class=\"fail\""),
            "a failed drill is marked"
        );
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "nothing to fetch"
        );
    }
}
