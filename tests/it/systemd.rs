//! `backstop systemd`: generated units pass `systemd-analyze verify`, and every timer's
//! OnCalendar lines elapse at exactly the times the daemon's cron evaluation gives
//! (`systemd-analyze calendar --iterations=20`), across both DST transitions.

use std::process::Command;

use backstop::config::schedule::Schedule;
use jiff::Timestamp;

use crate::support::*;

/// The next `n` elapse times of `lines` (their union), after `base`, per systemd.
fn systemd_times(lines: &[String], base: &str, n: usize) -> Vec<Timestamp> {
    let out = Command::new("systemd-analyze")
        .env("TZ", "UTC")
        .arg("calendar")
        .arg(format!("--iterations={n}"))
        .arg(format!("--base-time={base}"))
        .args(lines)
        .output()
        .expect("systemd-analyze is needed (scripts/install-deps.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{lines:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut times: Vec<Timestamp> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("Next elapse:").or_else(|| {
                l.split_once(": ")
                    .filter(|(k, _)| k.starts_with("Iter."))
                    .map(|(_, v)| v)
            })?;
            // "Sat 2027-03-13 07:30:00 UTC"
            let parts: Vec<&str> = rest.split_whitespace().collect();
            format!("{}T{}Z", parts[1], parts[2]).parse().ok()
        })
        .collect();
    times.sort();
    times.dedup();
    times.truncate(n);
    times
}

fn cron_times(expr: &str, tz: &str, base: &str, n: usize) -> Vec<Timestamp> {
    let s = Schedule::parse(expr, tz).unwrap();
    let mut t: Timestamp = base.replace(' ', "T").replace("TUTC", "Z").parse().unwrap();
    let mut v = Vec::new();
    for _ in 0..n {
        t = s.next_after(t).unwrap();
        v.push(t);
    }
    v
}

#[test]
fn on_calendar_elapses_exactly_when_cron_fires() {
    let cases = [
        ("0 */6 * * *", "UTC", "2026-11-25 00:00:17 UTC"),
        ("30 4 * * 0", "UTC", "2026-11-25 00:00:17 UTC"),
        ("15 2 1 JAN,jul *", "UTC", "2026-11-25 00:00:17 UTC"),
        ("0 12 1,15 * 1", "UTC", "2026-11-25 00:00:17 UTC"),
        ("*/20 * * * * *", "UTC", "2026-11-25 00:00:17 UTC"),
        (
            "5-59/15 8-17 * * 1-5",
            "Europe/Berlin",
            "2026-11-25 00:00:17 UTC",
        ),
        ("@monthly", "Asia/Kolkata", "2026-11-25 00:00:17 UTC"),
        // Across both DST transitions, at times the changes leave alone.
        ("30 4 * * *", "America/New_York", "2027-03-10 00:00:17 UTC"),
        ("30 4 * * *", "America/New_York", "2026-10-29 00:00:17 UTC"),
        ("0 4-23 * * *", "Europe/Berlin", "2027-03-27 00:00:17 UTC"),
        ("0 4-23 * * *", "Europe/Berlin", "2026-10-24 23:00:17 UTC"),
    ];
    let mut bad = Vec::new();
    for (expr, tz, base) in cases {
        let lines = backstop::ops::systemd::on_calendar(expr, tz).unwrap();
        let want = cron_times(expr, tz, base, 20);
        let got = systemd_times(&lines, base, 20);
        if got != want {
            let only_sd: Vec<_> = got.iter().filter(|t| !want.contains(t)).collect();
            let only_cron: Vec<_> = want.iter().filter(|t| !got.contains(t)).collect();
            bad.push(format!(
                "{expr} in {tz} from {base}: OnCalendar {lines:?}: only systemd {only_sd:?}, only cron {only_cron:?}"
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn times_that_dst_skips_or_repeats_are_refused() {
    // Spring forward skips 02:30 on 2027-03-14 in New York; fall back repeats 01:30 on
    // 2026-11-01. systemd and the daemon's cron disagree there, so no unit is generated.
    for expr in ["30 2 * * *", "30 1 * * *", "0 * * * *"] {
        let e = backstop::ops::systemd::on_calendar(expr, "America/New_York").unwrap_err();
        assert!(
            e.contains("daylight-saving") && e.contains("UTC"),
            "{expr}: {e}"
        );
        // The same schedule in UTC is fine.
        assert!(backstop::ops::systemd::on_calendar(expr, "UTC").is_ok());
    }
}

#[test]
fn generated_units_verify_and_name_the_job() {
    let sb = Sandbox::new();
    sb.file_job("app", "postgres://backup@127.0.0.1:5432/app", "");
    // Give the job a schedule, retention and a drill schedule.
    let text = std::fs::read_to_string(sb.jobs().join("app.toml")).unwrap();
    sb.write_job(
        "app",
        &format!(
            "schedule = \"0 */6 * * *\"\ntimezone = \"Europe/Berlin\"\n{text}\n[retention]\nkeep_last = 3\n\n[verify]\nschedule = \"30 4 * * 0\"\n"
        ),
    );
    let out_dir = sb.path().join("units");
    let out = sb.run(&["systemd", "--out", out_dir.to_str().unwrap()]);
    let text = expect_code(&out, 0);
    for f in [
        "backstop-app.service",
        "backstop-app.timer",
        "backstop-app-verify.service",
        "backstop-app-verify.timer",
    ] {
        assert!(out_dir.join(f).exists(), "{f} missing: {text}");
    }
    let service = std::fs::read_to_string(out_dir.join("backstop-app.service")).unwrap();
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_backstop")).unwrap();
    assert!(
        service.contains(&format!("ExecStart={} --jobs ", exe.display())),
        "{service}"
    );
    assert!(
        service.contains("backup app --trigger schedule"),
        "{service}"
    );
    assert!(
        service.contains("ExecStartPost=") && service.contains("prune app --yes"),
        "{service}"
    );
    assert!(service.contains("Type=oneshot") && service.contains("network-online.target"));
    let timer = std::fs::read_to_string(out_dir.join("backstop-app.timer")).unwrap();
    assert!(
        timer.contains("OnCalendar=*-*-* 00,06,12,18:00:00 Europe/Berlin"),
        "{timer}"
    );
    assert!(timer.contains("Persistent=true") && timer.contains("RandomizedDelaySec=60"));
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .args(
            std::fs::read_dir(&out_dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "timer" || e == "service")
                }),
        )
        .output()
        .expect("systemd-analyze is needed (scripts/install-deps.sh installs it)");
    let err = String::from_utf8_lossy(&verify.stderr);
    // Only problems with our units count; the host's own units may be odd in a container.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("backstop-")).collect();
    assert!(
        verify.status.success() && ours.is_empty(),
        "systemd-analyze verify: {err}"
    );
    // Running it again changes nothing; an expression systemd cannot express is exit 2.
    let again = expect_code(&sb.run(&["systemd", "--out", out_dir.to_str().unwrap()]), 0);
    assert!(again.contains("unchanged"), "{again}");
    let text = std::fs::read_to_string(sb.jobs().join("app.toml")).unwrap();
    sb.write_job("app", &text.replace("0 */6 * * *", "0 0 L * *"));
    let err = expect_code(&sb.run(&["systemd"]), 2);
    assert!(
        err.contains("app.toml") && err.contains("0 0 L * *"),
        "{err}"
    );
}
