//! Durations as job files and flags write them: "14d", "36h", "2w", "90m", "30s".

use std::time::Duration;

/// "14d", "36h", "2w", "90m" -> Duration. Values too large to represent are an error, not
/// a wrap-around.
pub(crate) fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; write e.g. 14d, 36h, 2w, 90m"))?;
    let secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "{s:?} has unit {unit:?}; valid units: s, m, h, d, w (e.g. 14d)"
            ));
        }
    };
    // At most 100 years: anything longer is a typo, and keeps time arithmetic in range.
    const MAX_SECS: u64 = 100 * 366 * 86_400;
    match n.checked_mul(secs) {
        Some(total) if total <= MAX_SECS => Ok(Duration::from_secs(total)),
        _ => Err(format!(
            "{s:?} is too long; at most 100 years (e.g. 36500d)"
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(
            crate::config::parse_duration("14d").unwrap().as_secs(),
            14 * 86_400
        );
        assert_eq!(
            crate::config::parse_duration("36h").unwrap().as_secs(),
            36 * 3600
        );
        assert!(crate::config::parse_duration("3 fortnights").is_err());
        assert!(crate::config::parse_duration("d").is_err());
        assert!(crate::config::parse_duration("99999999999999999w").is_err());
        assert!(crate::config::parse_duration("36601d").is_err());
    }
}
