//! Cron schedules: 5-field expressions (a 6-field form with seconds first is accepted too)
//! and the `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly` nicknames, evaluated in a job's
//! IANA time zone.
//!
//! Daylight-saving changes (table-tested below): a time skipped by spring-forward runs at
//! the first instant after the gap (02:30 New York on 2027-03-14 runs at 03:00 EDT), never
//! not at all; a time repeated by fall-back runs once, at its first occurrence (01:30 on
//! 2026-11-01 runs at 01:30 EDT only); an hourly schedule runs every real hour, so in the
//! repeated hour it runs twice.

use croner::Cron;
use croner::parser::{CronParser, Seconds};

#[derive(Debug)]
pub struct Schedule {
    cron: Cron,
    tz: jiff::tz::TimeZone,
}

impl Schedule {
    /// Parse `expr` for time zone `tz`; the error says what is wrong.
    pub fn parse(expr: &str, tz: &str) -> Result<Schedule, String> {
        let expanded = match expr.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other if other.starts_with('@') => {
                return Err(format!(
                    "{other} is not a known nickname; valid: @hourly, @daily, @weekly, @monthly, @yearly"
                ));
            }
            other => other,
        };
        let fields = expanded.split_whitespace().count();
        if fields != 5 && fields != 6 {
            return Err(format!(
                "it has {fields} fields; write 5 (minute hour day-of-month month day-of-week), e.g. \"0 */6 * * *\""
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expanded)
            .map_err(|e| format!("{e}; write 5 fields (minute hour day-of-month month day-of-week), e.g. \"0 */6 * * *\""))?;
        let tz = jiff::tz::TimeZone::get(tz).map_err(|e| format!("time zone {tz:?}: {e}"))?;
        Ok(Schedule { cron, tz })
    }

    /// The first run strictly after `after`.
    pub fn next_after(&self, after: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let z = after.to_zoned(self.tz.clone());
        self.cron
            .find_next_occurrence(&z, false)
            .ok()
            .map(|z| z.timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next_n(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(expr, tz).unwrap();
        let mut t: jiff::Timestamp = from.parse().unwrap();
        (0..n)
            .map(|_| {
                t = s.next_after(t).unwrap();
                t.to_string()
            })
            .collect()
    }

    #[test]
    fn next_fire_times_table() {
        let cases: &[(&str, &str, &str, &[&str])] = &[
            (
                "0 */6 * * *",
                "UTC",
                "2026-11-25T05:59:59Z",
                &["2026-11-25T06:00:00Z", "2026-11-25T12:00:00Z"],
            ),
            (
                "@hourly",
                "UTC",
                "2026-11-25T05:00:00Z",
                &["2026-11-25T06:00:00Z"],
            ),
            (
                "@weekly",
                "UTC",
                "2026-11-25T00:00:00Z",
                &["2026-11-29T00:00:00Z"],
            ),
            (
                "@monthly",
                "Asia/Kolkata",
                "2026-11-25T00:00:00Z",
                &["2026-11-30T18:30:00Z"],
            ),
            (
                "30 4 * * 1-5",
                "Europe/Berlin",
                "2026-11-27T12:00:00Z",
                &["2026-11-30T03:30:00Z"],
            ),
            (
                "*/20 * * * * *",
                "UTC",
                "2026-11-25T00:00:05Z",
                &["2026-11-25T00:00:20Z", "2026-11-25T00:00:40Z"],
            ),
            // Spring forward in New York, 2027-03-14: 02:30 does not exist; it runs at 03:00 EDT.
            (
                "30 2 * * *",
                "America/New_York",
                "2027-03-13T00:00:00Z",
                &[
                    "2027-03-13T07:30:00Z",
                    "2027-03-14T07:00:00Z",
                    "2027-03-15T06:30:00Z",
                ],
            ),
            // Fall back in New York, 2026-11-01: 01:30 happens twice; it runs once.
            (
                "30 1 * * *",
                "America/New_York",
                "2026-10-31T00:00:00Z",
                &[
                    "2026-10-31T05:30:00Z",
                    "2026-11-01T05:30:00Z",
                    "2026-11-02T06:30:00Z",
                ],
            ),
            // Hourly through Berlin's fall back (2026-10-25): every real hour, 02:00 twice.
            (
                "0 * * * *",
                "Europe/Berlin",
                "2026-10-24T23:30:00Z",
                &[
                    "2026-10-25T00:00:00Z",
                    "2026-10-25T01:00:00Z",
                    "2026-10-25T02:00:00Z",
                ],
            ),
            // Hourly through Berlin's spring forward (2027-03-28): 02:00 does not exist.
            (
                "0 * * * *",
                "Europe/Berlin",
                "2027-03-27T23:30:00Z",
                &[
                    "2027-03-28T00:00:00Z",
                    "2027-03-28T01:00:00Z",
                    "2027-03-28T02:00:00Z",
                ],
            ),
        ];
        for (expr, tz, from, want) in cases {
            assert_eq!(
                next_n(expr, tz, from, want.len()),
                *want,
                "{expr} in {tz} after {from}"
            );
        }
    }

    #[test]
    fn five_fields_and_nicknames() {
        let s = Schedule::parse("0 */6 * * *", "UTC").unwrap();
        let t: jiff::Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        assert_eq!(s.next_after(t).unwrap().to_string(), "2026-01-01T06:00:00Z");
        let d = Schedule::parse("@daily", "Europe/Berlin").unwrap();
        assert_eq!(d.next_after(t).unwrap().to_string(), "2026-01-01T23:00:00Z");
        assert!(Schedule::parse("61 * * * *", "UTC").is_err());
        assert!(
            Schedule::parse("* * *", "UTC")
                .unwrap_err()
                .contains("3 fields")
        );
        assert!(Schedule::parse("@often", "UTC").is_err());
    }
}
