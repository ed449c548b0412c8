//! `backstop systemd [--out DIR]`: a oneshot `.service` and a `.timer` per job schedule
//! and per verify schedule, with the cron expression translated exactly into systemd
//! `OnCalendar=` lines. What OnCalendar cannot express (cron's `L`, `W`, `#`) is an error,
//! never an approximation; so is a schedule that fires at a local time a daylight-saving
//! change skips or repeats (systemd skips such a time, the daemon's cron runs it right
//! after the change). Cron's rule that a restricted day-of-month and a restricted
//! day-of-week match either one becomes two OnCalendar lines (a timer fires at their union).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{JobPlan, SourcePlan, StorageLocation};
use crate::error::{Error, Result};

const DOW: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// One cron field: every value, or the chosen ones.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Any,
    Some(BTreeSet<u32>),
}

/// Parse one field of range `lo..=hi`; `names` maps names to values.
fn field(src: &str, lo: u32, hi: u32, names: &[(&str, u32)]) -> std::result::Result<Field, String> {
    let value = |s: &str| -> std::result::Result<u32, String> {
        let up = s.to_ascii_uppercase();
        if let Some((_, v)) = names.iter().find(|(n, _)| *n == up) {
            return Ok(*v);
        }
        let v: u32 = s.parse().map_err(|_| {
            if s.contains(['L', 'W', '#', 'l', 'w']) {
                format!("{src:?} uses a cron extension (L, W or #) that systemd's OnCalendar cannot express")
            } else {
                format!("{s:?} is not a number")
            }
        })?;
        Ok(v)
    };
    let mut set = BTreeSet::new();
    for part in src.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("step {s:?} in {src:?} is not a positive number"))?,
            ),
            None => (part, 1),
        };
        let (a, b) = if range == "*" || range == "?" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let a = value(range)?;
            (a, if part.contains('/') { hi } else { a })
        };
        if a < lo || b > hi || a > b {
            return Err(format!("{part:?} is outside {lo}-{hi}"));
        }
        set.extend((a..=b).step_by(step as usize));
    }
    if set.len() as u32 == hi - lo + 1 {
        Ok(Field::Any)
    } else {
        Ok(Field::Some(set))
    }
}

fn list(f: &Field, width: usize) -> String {
    match f {
        Field::Any => "*".into(),
        Field::Some(s) => s
            .iter()
            .map(|v| format!("{v:0width$}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// The OnCalendar lines equal to cron expression `expr` in time zone `tz`.
pub fn on_calendar(expr: &str, tz: &str) -> std::result::Result<Vec<String>, String> {
    let expanded = match expr.trim() {
        "@hourly" => "0 * * * *",
        "@daily" | "@midnight" => "0 0 * * *",
        "@weekly" => "0 0 * * 0",
        "@monthly" => "0 0 1 * *",
        "@yearly" | "@annually" => "0 0 1 1 *",
        other => other,
    };
    crate::config::schedule::Schedule::parse(expanded, tz)?;
    let mut f: Vec<&str> = expanded.split_whitespace().collect();
    if f.len() == 5 {
        f.insert(0, "0");
    }
    let months: Vec<(&str, u32)> = MONTHS.iter().zip(1..).map(|(n, i)| (*n, i)).collect();
    let days: Vec<(&str, u32)> = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
        .iter()
        .zip(0..)
        .map(|(n, i)| (*n, i))
        .collect();
    let sec = field(f[0], 0, 59, &[])?;
    let min = field(f[1], 0, 59, &[])?;
    let hour = field(f[2], 0, 23, &[])?;
    let dom = field(f[3], 1, 31, &[])?;
    let mon = field(f[4], 1, 12, &months)?;
    // Day of week: 0-7, both 0 and 7 are Sunday.
    let dow = match field(f[5], 0, 7, &days)? {
        Field::Any => Field::Any,
        Field::Some(s) => {
            let s: BTreeSet<u32> = s.into_iter().map(|d| d % 7).collect();
            if s.len() == 7 {
                Field::Any
            } else {
                Field::Some(s)
            }
        }
    };
    let fields = [&sec, &min, &hour, &dom, &mon, &dow];
    if let Some(clash) = dst_clash(&fields, tz)? {
        return Err(format!(
            "it fires at {clash}, a local time that a daylight-saving change skips or repeats in {tz}; \
             systemd and the daemon's cron treat those differently (systemd skips a missing time, cron runs it \
             right after the change), so no OnCalendar is exact. Move the time out of the hour the clocks \
             change, or use timezone = \"UTC\""
        ));
    }
    let time = format!("{}:{}:{}", list(&hour, 2), list(&min, 2), list(&sec, 2));
    let date = |dom: &Field| format!("*-{}-{}", list(&mon, 2), list(dom, 2));
    let days_of_week = |d: &Field| match d {
        Field::Any => String::new(),
        Field::Some(s) => {
            let names: Vec<&str> = s.iter().map(|d| DOW[*d as usize]).collect();
            format!("{} ", names.join(","))
        }
    };
    Ok(match (&dom, &dow) {
        // Cron: with both restricted, a day matching either runs.
        (Field::Some(_), Field::Some(_)) => vec![
            format!("{}{time} {tz}", date(&dom) + " "),
            format!(
                "{}{}{time} {tz}",
                days_of_week(&dow),
                date(&Field::Any) + " "
            ),
        ],
        _ => vec![format!("{}{} {time} {tz}", days_of_week(&dow), date(&dom))],
    })
}

fn matches(f: &Field, v: u32) -> bool {
    match f {
        Field::Any => true,
        Field::Some(s) => s.contains(&v),
    }
}

/// Whether the cron fields match local time `t` (cron's day rule: with day-of-month and
/// day-of-week both restricted, either one matching is enough).
fn fires_at(f: &[&Field; 6], t: jiff::civil::DateTime) -> bool {
    let [sec, min, hour, dom, mon, dow] = *f;
    let day_ok = match (dom, dow) {
        (Field::Some(_), Field::Some(_)) => {
            matches(dom, t.day() as u32) || matches(dow, t.weekday().to_sunday_zero_offset() as u32)
        }
        _ => {
            matches(dom, t.day() as u32) && matches(dow, t.weekday().to_sunday_zero_offset() as u32)
        }
    };
    day_ok
        && matches(sec, t.second() as u32)
        && matches(min, t.minute() as u32)
        && matches(hour, t.hour() as u32)
        && matches(mon, t.month() as u32)
}

/// The first local time within the next ten years' DST changes of `tz` (the wall-clock
/// times a change skips or repeats) at which the schedule fires, if any.
fn dst_clash(f: &[&Field; 6], tz: &str) -> std::result::Result<Option<String>, String> {
    let zone = jiff::tz::TimeZone::get(tz).map_err(|e| format!("time zone {tz:?}: {e}"))?;
    let now = jiff::Timestamp::now();
    let horizon = now + jiff::SignedDuration::from_hours(24 * 366 * 10);
    for tr in zone.following(now) {
        let at = tr.timestamp();
        if at > horizon {
            break;
        }
        let before = zone.to_offset(at - jiff::SignedDuration::from_secs(1));
        let after = tr.offset();
        if before == after {
            continue;
        }
        // Wall-clock times between the two readings of the change instant.
        let a = at.to_zoned(jiff::tz::TimeZone::fixed(before)).datetime();
        let b = at.to_zoned(jiff::tz::TimeZone::fixed(after)).datetime();
        let (mut t, end) = if a < b { (a, b) } else { (b, a) };
        while t < end {
            if fires_at(f, t) {
                return Ok(Some(t.strftime("%Y-%m-%d %H:%M:%S").to_string()));
            }
            t = t
                .checked_add(jiff::SignedDuration::from_secs(1))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(None)
}

/// A unit, named and rendered.
pub(crate) struct Unit {
    pub name: String,
    pub text: String,
}

/// Every unit for the jobs in `dir`.
pub(crate) fn units(dir: &Path, exe: &Path, randomized_delay: Duration) -> Result<Vec<Unit>> {
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| Error::config(format!("jobs directory {}: {e}", dir.display())))?;
    let plans = crate::config::load_all(&dir)?;
    let mut out = Vec::new();
    for plan in &plans {
        if !plan
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(Error::config(format!(
                "job file {}: the job name {:?} cannot be a systemd unit name; rename the file to use only letters, digits, '-', '_' and '.'",
                plan.file.display(),
                plan.name
            )));
        }
        if let Some(expr) = &plan.schedule {
            let cal = on_calendar(expr, &plan.timezone).map_err(|why| {
                Error::config(format!(
                    "job file {}: `schedule` = {expr:?} cannot be a systemd timer: {why}",
                    plan.file.display()
                ))
            })?;
            let base = format!("backstop-{}", plan.name);
            let mut exec = vec![format!(
                "ExecStart={} --jobs {} backup {} --trigger schedule",
                exe.display(),
                dir.display(),
                plan.name
            )];
            if plan.retention.as_ref().is_some_and(|r| r.has_rules())
                || plan
                    .storages
                    .iter()
                    .any(|s| s.retention.as_ref().is_some_and(|r| r.has_rules()))
            {
                exec.push(format!(
                    "ExecStartPost={} --jobs {} prune {} --yes --wait",
                    exe.display(),
                    dir.display(),
                    plan.name
                ));
            }
            // Several storages: bring each up to date from the others (a `-`: a storage
            // still down does not fail the unit; status says it is behind).
            if plan.storages.len() > 1 {
                for to in &plan.storages {
                    for from in plan.storages.iter().filter(|f| f.name != to.name) {
                        exec.push(format!(
                            "ExecStartPost=-{} --jobs {} copy {} --from {} --to {} --all-missing",
                            exe.display(),
                            dir.display(),
                            plan.name,
                            from.name,
                            to.name
                        ));
                    }
                }
            }
            out.push(service(
                &base,
                &format!("backup of job {}", plan.name),
                plan,
                &exec,
            ));
            out.push(timer(&base, plan, expr, &cal, randomized_delay));
        }
        if let Some(expr) = plan.verify.as_ref().and_then(|v| v.schedule.as_ref()) {
            let cal = on_calendar(expr, &plan.timezone).map_err(|why| {
                Error::config(format!(
                    "job file {}: `verify.schedule` = {expr:?} cannot be a systemd timer: {why}",
                    plan.file.display()
                ))
            })?;
            let base = format!("backstop-{}-verify", plan.name);
            let exec = vec![format!(
                "ExecStart={} --jobs {} verify {} --wait",
                exe.display(),
                dir.display(),
                plan.name
            )];
            out.push(service(
                &base,
                &format!("restore drill of job {}", plan.name),
                plan,
                &exec,
            ));
            out.push(timer(&base, plan, expr, &cal, randomized_delay));
        }
    }
    Ok(out)
}

fn service(base: &str, what: &str, plan: &JobPlan, exec: &[String]) -> Unit {
    let mut writable: Vec<PathBuf> = Vec::new();
    for sp in &plan.storages {
        if let StorageLocation::File { root } = &sp.location {
            writable.push(root.clone());
        }
    }
    if let SourcePlan::Volume(v) = &plan.source
        && (!v.pre.is_empty() || !v.post.is_empty())
    {
        // pre/post commands (fsfreeze, snapshot tools) may need to write near the volume.
        writable.push(v.path.clone());
    }
    let rw = writable
        .iter()
        .map(|p| format!("ReadWritePaths=-{}\n", p.display()))
        .collect::<String>();
    let text = format!(
        "# Generated by `backstop systemd` from {file}.\n\
         [Unit]\n\
         Description=backstop: {what}\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         {exec}\n\
         # Secrets (PGPASSWORD, AWS_*) go here, never in the job file.\n\
         EnvironmentFile=-/etc/backstop/backstop.env\n\
         StateDirectory=backstop\n\
         Environment=BACKSTOP_STATE_DIR=%S/backstop\n\
         # Background work: lowest CPU and IO priority.\n\
         Nice=10\n\
         CPUSchedulingPolicy=batch\n\
         IOSchedulingClass=idle\n\
         # Sandbox: read-only system, private /tmp, no new privileges.\n\
         ProtectSystem=strict\n\
         ProtectHome=read-only\n\
         {rw}\
         PrivateTmp=yes\n\
         PrivateDevices=yes\n\
         NoNewPrivileges=yes\n\
         ProtectKernelTunables=yes\n\
         ProtectKernelModules=yes\n\
         ProtectKernelLogs=yes\n\
         ProtectControlGroups=yes\n\
         ProtectClock=yes\n\
         RestrictRealtime=yes\n\
         LockPersonality=yes\n\
         RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n",
        file = plan.file.display(),
        exec = exec.join("\n"),
    );
    Unit {
        name: format!("{base}.service"),
        text,
    }
}

fn timer(base: &str, plan: &JobPlan, expr: &str, cal: &[String], delay: Duration) -> Unit {
    let lines = cal
        .iter()
        .map(|c| format!("OnCalendar={c}\n"))
        .collect::<String>();
    let text = format!(
        "# Generated by `backstop systemd` from {file}.\n\
         [Unit]\n\
         Description=backstop: schedule of {base} (cron \"{expr}\" in {tz})\n\
         \n\
         [Timer]\n\
         {lines}\
         Persistent=true\n\
         RandomizedDelaySec={delay}\n\
         AccuracySec=1s\n\
         Unit={base}.service\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n",
        file = plan.file.display(),
        tz = plan.timezone,
        delay = delay.as_secs(),
    );
    Unit {
        name: format!("{base}.timer"),
        text,
    }
}

/// `backstop systemd`: the units as text, or write them to `out`; returns the lines to
/// show the operator.
pub(crate) fn generate(dir: &Path, out: Option<&Path>, delay: Duration) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let exe = std::env::current_exe()
        .map_err(|e| Error::failed(format!("cannot find the backstop binary's path: {e}")))?;
    let units = units(dir, &exe, delay)?;
    if units.is_empty() {
        return Err(Error::config(format!(
            "no job in {} has a `schedule` or `verify.schedule`; nothing to generate",
            dir.display()
        )));
    }
    let Some(out) = out else {
        for u in &units {
            lines.push(format!("### {}\n{}", u.name, u.text));
        }
        return Ok(lines);
    };
    std::fs::create_dir_all(out)
        .map_err(|e| Error::failed(format!("cannot create {}: {e}", out.display())))?;
    let mut timers = Vec::new();
    for u in &units {
        let path = out.join(&u.name);
        let old = std::fs::read_to_string(&path).ok();
        if old.as_deref() == Some(u.text.as_str()) {
            lines.push(format!("unchanged {}", path.display()));
        } else {
            let tmp = out.join(format!(".{}.tmp", u.name));
            std::fs::write(&tmp, &u.text)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))?;
            let verb = if old.is_some() { "updated" } else { "wrote" };
            lines.push(format!("{verb} {}", path.display()));
        }
        if u.name.ends_with(".timer") {
            timers.push(u.name.clone());
        }
    }
    lines.push(format!(
        "enable with: systemctl daemon-reload && systemctl enable --now {}",
        timers.join(" ")
    ));
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::on_calendar;

    #[test]
    fn translations() {
        let cases = [
            ("0 */6 * * *", "UTC", vec!["*-*-* 00,06,12,18:00:00 UTC"]),
            (
                "@daily",
                "Europe/Berlin",
                vec!["*-*-* 00:00:00 Europe/Berlin"],
            ),
            ("30 4 * * 0", "UTC", vec!["Sun *-*-* 04:30:00 UTC"]),
            ("15 2 1 JAN,jul *", "UTC", vec!["*-01,07-01 02:15:00 UTC"]),
            (
                "0 9 * * 1-5",
                "UTC",
                vec!["Mon,Tue,Wed,Thu,Fri *-*-* 09:00:00 UTC"],
            ),
            ("0 0 * * 7", "UTC", vec!["Sun *-*-* 00:00:00 UTC"]),
            (
                "0 12 1,15 * 1",
                "UTC",
                vec!["*-*-01,15 12:00:00 UTC", "Mon *-*-* 12:00:00 UTC"],
            ),
            ("*/20 * * * * *", "UTC", vec!["*-*-* *:*:00,20,40 UTC"]),
            ("5-59/15 * * * *", "UTC", vec!["*-*-* *:05,20,35,50:00 UTC"]),
        ];
        for (expr, tz, want) in cases {
            assert_eq!(on_calendar(expr, tz).unwrap(), want, "{expr}");
        }
        // Times that DST changes skip or repeat cannot be exact; other times in those zones can.
        assert!(
            on_calendar("30 2 * * *", "America/New_York")
                .unwrap_err()
                .contains("daylight-saving")
        );
        assert!(
            on_calendar("0 * * * *", "Europe/Berlin")
                .unwrap_err()
                .contains("daylight-saving")
        );
        assert!(on_calendar("30 4 * * *", "America/New_York").is_ok());
        for bad in ["0 0 L * *", "0 0 * * 5#2", "0 0 15W * *"] {
            let e = on_calendar(bad, "UTC").unwrap_err();
            assert!(
                e.contains("cannot express") || e.contains("not"),
                "{bad}: {e}"
            );
        }
    }
}
