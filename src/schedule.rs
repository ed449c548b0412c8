//! Cron schedules: 5-field expressions (a 6-field form with seconds first is accepted too)
//! and the `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly` nicknames, evaluated in a job's
//! IANA time zone.

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
