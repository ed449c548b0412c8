//! Retention policy: which snapshots a job keeps and why. A pure function of the
//! snapshots (their manifest times, pins, drill results and storage locks), the policy and
//! the current time, so every rule is table-tested; `prune` does the storage side.
//!
//! Semantics (also in the README):
//! - `keep_last = N`: the N newest snapshots.
//! - `keep_hourly/daily/weekly/monthly/yearly = N`: for each of the N most recent hours
//!   (days, ISO weeks, months, years) that have a snapshot, the newest snapshot in it.
//!   Periods are taken in the job's time zone.
//! - `keep_within = "30d"`: every snapshot taken within that long of the newest one.
//! - Always kept, whatever the rules: the newest snapshot, the newest one with a passed
//!   drill, snapshots pinned until a time still ahead, and snapshots the storage still
//!   locks (Object Lock).
//! - With no `keep_*` rule, nothing is deleted.
//! - Refused outright when the newest snapshot is older than `stale_after`: backups have
//!   been failing, and rotating away the last good ones would make it worse.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

pub(crate) use crate::config::retention::Policy;

/// One complete snapshot as retention sees it.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub id: String,
    /// The manifest's finish time (never the key name).
    pub time: Timestamp,
    pub pinned_until: Option<Timestamp>,
    /// Why it is pinned (the reason of `snapshot --reason`, or an alarm).
    pub pin_reason: Option<String>,
    /// A drill of it passed.
    pub verified: bool,
    /// The storage refuses deletes until then.
    pub locked_until: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Decision {
    pub snapshot: String,
    pub time: String,
    pub keep: bool,
    /// Every rule that keeps it, or why it goes.
    pub reasons: Vec<String>,
}

/// Why a prune must not run at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stale {
    pub newest: Option<Timestamp>,
    pub stale_after: SignedDuration,
}

/// The period a time falls in, as a comparable label.
type BucketOf = fn(&jiff::Zoned) -> String;

/// The plan for `snapshots` (any order): one decision per snapshot, newest first.
pub(crate) fn plan(
    snapshots: &[Candidate],
    policy: &Policy,
    tz: &TimeZone,
    now: Timestamp,
) -> Result<Vec<Decision>, Stale> {
    let mut snaps: Vec<&Candidate> = snapshots.iter().collect();
    snaps.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
    if let Some(limit) = policy.stale_after {
        let newest = snaps.first().map(|c| c.time);
        if newest.is_none_or(|t| now.duration_since(t) > limit) {
            return Err(Stale {
                newest,
                stale_after: limit,
            });
        }
    }
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); snaps.len()];
    if !policy.has_rules() {
        for r in &mut reasons {
            r.push("no keep_* rule in [retention]".into());
        }
    }
    for (i, r) in reasons
        .iter_mut()
        .enumerate()
        .take(policy.keep_last as usize)
    {
        r.push(format!("keep_last {} (#{})", policy.keep_last, i + 1));
    }
    let periods: [(&str, u32, BucketOf); 5] = [
        ("keep_hourly", policy.keep_hourly, |z| {
            z.strftime("%Y-%m-%d %H:00").to_string()
        }),
        ("keep_daily", policy.keep_daily, |z| {
            z.strftime("%Y-%m-%d").to_string()
        }),
        ("keep_weekly", policy.keep_weekly, |z| {
            let w = z.date().iso_week_date();
            format!("{}-W{:02}", w.year(), w.week())
        }),
        ("keep_monthly", policy.keep_monthly, |z| {
            z.strftime("%Y-%m").to_string()
        }),
        ("keep_yearly", policy.keep_yearly, |z| {
            z.strftime("%Y").to_string()
        }),
    ];
    for (rule, n, bucket_of) in periods {
        let mut left = n;
        let mut last: Option<String> = None;
        for (i, c) in snaps.iter().enumerate() {
            if left == 0 {
                break;
            }
            let b = bucket_of(&c.time.to_zoned(tz.clone()));
            if last.as_ref() != Some(&b) {
                reasons[i].push(format!("{rule} {n} ({b})"));
                last = Some(b);
                left -= 1;
            }
        }
    }
    if let (Some(within), Some(newest)) = (policy.keep_within, snaps.first()) {
        for (i, c) in snaps.iter().enumerate() {
            // Measured from the newest snapshot, but never from a time ahead of now.
            if newest.time.min(now).duration_since(c.time) <= within {
                reasons[i].push(format!("keep_within {within:#}"));
            }
        }
    }
    if !snaps.is_empty() {
        reasons[0].push("newest snapshot".into());
    }
    if let Some(i) = snaps.iter().position(|c| c.verified) {
        reasons[i].push("newest verified snapshot".into());
    }
    let fmt = |t: Timestamp| t.strftime("%Y-%m-%d %H:%M UTC").to_string();
    for (i, c) in snaps.iter().enumerate() {
        if let Some(until) = c.pinned_until.filter(|u| *u > now) {
            let why = c
                .pin_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            reasons[i].push(format!("pinned until {}{why}", fmt(until)));
        }
        if let Some(until) = c.locked_until.filter(|u| *u > now) {
            reasons[i].push(format!("locked by the storage until {}", fmt(until)));
        }
    }
    Ok(snaps
        .iter()
        .zip(reasons)
        .map(|(c, r)| Decision {
            snapshot: c.id.clone(),
            time: c.time.to_string(),
            keep: !r.is_empty(),
            reasons: if r.is_empty() {
                vec!["no rule keeps it".into()]
            } else {
                r
            },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn snap(id: &str, time: &str) -> Candidate {
        Candidate {
            id: id.into(),
            time: ts(time),
            pinned_until: None,
            pin_reason: None,
            verified: false,
            locked_until: None,
        }
    }

    fn kept(plan: &[Decision]) -> Vec<&str> {
        plan.iter()
            .filter(|d| d.keep)
            .map(|d| d.snapshot.as_str())
            .collect()
    }

    /// Six-hourly snapshots from 2026-01-01 to 2026-03-31: 360 of them.
    fn quarter() -> Vec<Candidate> {
        let mut t = ts("2026-01-01T00:00:00Z");
        let mut v = Vec::new();
        let end = ts("2026-04-01T00:00:00Z");
        while t < end {
            v.push(snap(&t.strftime("%m-%d %H").to_string(), &t.to_string()));
            t = t.checked_add(SignedDuration::from_hours(6)).unwrap();
        }
        v
    }

    #[test]
    fn gfs_buckets() {
        let utc = TimeZone::UTC;
        let now = ts("2026-04-01T00:00:00Z");
        let cases: Vec<(Policy, Vec<&str>)> = vec![
            (
                Policy {
                    keep_last: 3,
                    ..Policy::default()
                },
                vec!["03-31 18", "03-31 12", "03-31 06"],
            ),
            (
                Policy {
                    keep_daily: 3,
                    ..Policy::default()
                },
                vec!["03-31 18", "03-30 18", "03-29 18"],
            ),
            (
                // 2026-03-29 is a Sunday: ISO weeks end there.
                Policy {
                    keep_weekly: 3,
                    ..Policy::default()
                },
                vec!["03-31 18", "03-29 18", "03-22 18"],
            ),
            (
                Policy {
                    keep_monthly: 6,
                    ..Policy::default()
                },
                vec!["03-31 18", "02-28 18", "01-31 18"],
            ),
            (
                Policy {
                    keep_yearly: 2,
                    keep_last: 1,
                    ..Policy::default()
                },
                vec!["03-31 18"],
            ),
            (
                Policy {
                    keep_last: 2,
                    keep_daily: 2,
                    keep_monthly: 2,
                    ..Policy::default()
                },
                vec!["03-31 18", "03-31 12", "03-30 18", "02-28 18"],
            ),
            (
                Policy {
                    keep_within: Some(SignedDuration::from_hours(24)),
                    ..Policy::default()
                },
                vec!["03-31 18", "03-31 12", "03-31 06", "03-31 00", "03-30 18"],
            ),
            (
                Policy {
                    keep_hourly: 2,
                    ..Policy::default()
                },
                vec!["03-31 18", "03-31 12"],
            ),
        ];
        for (policy, want) in cases {
            let p = plan(&quarter(), &policy, &utc, now).unwrap();
            assert_eq!(p.len(), 360);
            assert_eq!(kept(&p), want, "{policy:?}");
        }
    }

    #[test]
    fn periods_follow_the_job_time_zone() {
        // 23:30 UTC on the 1st is already the 2nd in Berlin: two days there, one in UTC.
        let snaps = vec![
            snap("a", "2026-06-01T21:30:00Z"),
            snap("b", "2026-06-01T23:30:00Z"),
        ];
        let policy = Policy {
            keep_daily: 5,
            ..Policy::default()
        };
        let now = ts("2026-06-02T00:00:00Z");
        let utc = plan(&snaps, &policy, &TimeZone::UTC, now).unwrap();
        assert_eq!(kept(&utc), vec!["b"]);
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(
            kept(&plan(&snaps, &policy, &berlin, now).unwrap()),
            vec!["b", "a"]
        );
    }

    #[test]
    fn protections_override_the_rules() {
        let now = ts("2026-04-01T00:00:00Z");
        let mut snaps = quarter();
        // The oldest is pinned, one is verified, one is locked, one pin has run out.
        snaps[0].pinned_until = Some(ts("2026-04-10T00:00:00Z"));
        snaps[0].pin_reason = Some("migration 42".into());
        snaps[10].verified = true;
        snaps[20].locked_until = Some(ts("2026-05-01T00:00:00Z"));
        snaps[30].pinned_until = Some(ts("2026-03-01T00:00:00Z"));
        snaps[40].locked_until = Some(ts("2026-03-01T00:00:00Z"));
        let policy = Policy {
            keep_last: 1,
            ..Policy::default()
        };
        let p = plan(&snaps, &policy, &TimeZone::UTC, now).unwrap();
        let k = kept(&p);
        assert_eq!(k, vec!["03-31 18", "01-06 00", "01-03 12", "01-01 00"]);
        let why = |id: &str| {
            p.iter()
                .find(|d| d.snapshot == id)
                .unwrap()
                .reasons
                .join("; ")
        };
        assert!(why("01-01 00").contains("pinned until 2026-04-10 00:00 UTC: migration 42"));
        assert!(why("01-03 12").contains("newest verified"));
        assert!(why("01-06 00").contains("locked by the storage"));
        assert!(why("03-31 18").contains("newest snapshot"));
        assert_eq!(why("01-08 12"), "no rule keeps it");
    }

    #[test]
    fn the_newest_verified_is_kept_not_every_verified() {
        let now = ts("2026-04-01T00:00:00Z");
        let mut snaps = quarter();
        snaps[5].verified = true;
        snaps[6].verified = true;
        let policy = Policy {
            keep_last: 1,
            ..Policy::default()
        };
        let p = plan(&snaps, &policy, &TimeZone::UTC, now).unwrap();
        assert_eq!(kept(&p), vec!["03-31 18", "01-02 12"]);
    }

    #[test]
    fn no_rules_keep_everything() {
        let now = ts("2026-04-01T00:00:00Z");
        let p = plan(&quarter(), &Policy::default(), &TimeZone::UTC, now).unwrap();
        assert!(p.iter().all(|d| d.keep));
    }

    #[test]
    fn stale_guard_refuses() {
        let policy = Policy {
            keep_last: 1,
            stale_after: Some(SignedDuration::from_hours(48)),
            ..Policy::default()
        };
        let snaps = quarter();
        // Newest is 2026-03-31 18:00: fine a day later, refused three days later.
        assert!(plan(&snaps, &policy, &TimeZone::UTC, ts("2026-04-01T18:00:00Z")).is_ok());
        let err = plan(&snaps, &policy, &TimeZone::UTC, ts("2026-04-03T18:00:01Z")).unwrap_err();
        assert_eq!(err.newest, Some(ts("2026-03-31T18:00:00Z")));
        // No snapshot at all is stale too.
        assert!(plan(&[], &policy, &TimeZone::UTC, ts("2026-04-01T00:00:00Z")).is_err());
    }

    #[test]
    fn order_is_by_time_not_by_id() {
        // Ids that sort the other way round from their times.
        let snaps = vec![
            snap("zzz-old", "2026-01-01T00:00:00Z"),
            snap("aaa-new", "2026-02-01T00:00:00Z"),
        ];
        let policy = Policy {
            keep_last: 1,
            ..Policy::default()
        };
        let p = plan(&snaps, &policy, &TimeZone::UTC, ts("2026-02-02T00:00:00Z")).unwrap();
        assert_eq!(kept(&p), vec!["aaa-new"]);
    }
}
