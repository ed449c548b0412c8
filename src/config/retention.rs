//! The `[retention]` section as a checked policy: how many snapshots of each period to
//! keep, for how long, and when backups count as stale. What it means for a given set of
//! snapshots is worked out in `snapshot::retention`.

use jiff::SignedDuration;

use super::RawRetention;

/// The checked policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub keep_last: u32,
    pub keep_hourly: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
    pub keep_within: Option<SignedDuration>,
    pub stale_after: Option<SignedDuration>,
}

impl Policy {
    /// Build from the job file's `[retention]` (values already range-checked there).
    pub(crate) fn from_raw(r: &RawRetention) -> Result<Policy, String> {
        let dur = |key: &str, v: &Option<String>| -> Result<Option<SignedDuration>, String> {
            v.as_deref()
                .map(|s| {
                    crate::config::parse_duration(s)
                        .map(|d| SignedDuration::from_secs(d.as_secs() as i64))
                        .map_err(|e| format!("retention.{key} {e}"))
                })
                .transpose()
        };
        Ok(Policy {
            keep_last: r.keep_last.unwrap_or(0),
            keep_hourly: r.keep_hourly.unwrap_or(0),
            keep_daily: r.keep_daily.unwrap_or(0),
            keep_weekly: r.keep_weekly.unwrap_or(0),
            keep_monthly: r.keep_monthly.unwrap_or(0),
            keep_yearly: r.keep_yearly.unwrap_or(0),
            keep_within: dur("keep_within", &r.keep_within)?,
            stale_after: dur("stale_after", &r.stale_after)?,
        })
    }

    /// Whether any rule would let a snapshot go.
    pub(crate) fn has_rules(&self) -> bool {
        self.keep_last
            + self.keep_hourly
            + self.keep_daily
            + self.keep_weekly
            + self.keep_monthly
            + self.keep_yearly
            > 0
            || self.keep_within.is_some()
    }
}
