//! The shrink alarm: each backup's per-table row counts (or a volume's file count and
//! size) compared with the job's previous snapshot. The previous figures live in the local
//! state directory (`STATE/baselines/JOB.json`), because the backup host cannot decrypt old
//! facts. A table that lost more than `alarm.shrink_percent` of its rows or vanished, or a
//! total drop beyond it, makes the new snapshot "anomalous" and pins the previous one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Tables smaller than this are not compared one by one (4 -> 1 rows is not news).
pub(crate) const MIN_ROWS: u64 = 100;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Baseline {
    pub job: String,
    pub snapshot: String,
    pub time: String,
    /// "schema.table" -> rows (postgres).
    #[serde(default)]
    pub tables: BTreeMap<String, u64>,
    /// Files (volumes).
    #[serde(default)]
    pub files: u64,
    /// Plaintext bytes of the dump or tree.
    pub bytes: u64,
}

impl Baseline {
    fn total_rows(&self) -> u64 {
        self.tables.values().sum()
    }
}

fn path(job: &str) -> PathBuf {
    crate::state::state_dir()
        .join("baselines")
        .join(format!("{job}.json"))
}

/// The previous snapshot's figures, if this host has them.
pub(crate) fn load(job: &str) -> Option<Baseline> {
    let text = std::fs::read_to_string(path(job)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Keep `b` as the figures the next backup is compared with (written atomically).
pub(crate) fn save(b: &Baseline) {
    let p = path(&b.job);
    let res = super::write_private(&p, &serde_json::to_vec_pretty(b).unwrap_or_default());
    if let Err(e) = res {
        tracing::warn!(
            "cannot keep the shrink-alarm baseline {}: {e}; the next backup will not be compared",
            p.display()
        );
    }
}

fn drop_pct(before: u64, after: u64) -> f64 {
    if before == 0 {
        0.0
    } else {
        100.0 * (before.saturating_sub(after)) as f64 / before as f64
    }
}

/// What shrank beyond `percent`: one line per finding (names included: local only).
pub(crate) fn compare(prev: &Baseline, cur: &Baseline, percent: u32) -> Vec<String> {
    let limit = percent as f64;
    let mut out = Vec::new();
    for (table, &before) in &prev.tables {
        match cur.tables.get(table) {
            None if before > 0 => {
                out.push(format!("table {table} vanished (it had {before} rows)"))
            }
            Some(&after) if before >= MIN_ROWS && drop_pct(before, after) > limit => {
                out.push(format!(
                    "table {table} shrank from {before} to {after} rows (-{:.0}%)",
                    drop_pct(before, after)
                ))
            }
            _ => {}
        }
    }
    let (rb, ra) = (prev.total_rows(), cur.total_rows());
    if rb >= MIN_ROWS && drop_pct(rb, ra) > limit {
        out.push(format!(
            "all tables together shrank from {rb} to {ra} rows (-{:.0}%)",
            drop_pct(rb, ra)
        ));
    }
    if prev.files >= MIN_ROWS && drop_pct(prev.files, cur.files) > limit {
        out.push(format!(
            "the volume shrank from {} to {} files (-{:.0}%)",
            prev.files,
            cur.files,
            drop_pct(prev.files, cur.files)
        ));
    }
    if prev.bytes >= 1 << 20 && drop_pct(prev.bytes, cur.bytes) > limit {
        out.push(format!(
            "the snapshot shrank from {} to {} bytes (-{:.0}%)",
            prev.bytes,
            cur.bytes,
            drop_pct(prev.bytes, cur.bytes)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(tables: &[(&str, u64)], bytes: u64) -> Baseline {
        Baseline {
            job: "app".into(),
            snapshot: "s".into(),
            time: String::new(),
            tables: tables.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            files: 0,
            bytes,
        }
    }

    #[test]
    fn shrinks_beyond_the_threshold_are_found() {
        let prev = b(
            &[
                ("public.orders", 10_000),
                ("public.users", 500),
                ("public.tiny", 4),
            ],
            50 << 20,
        );
        // Truncated orders: the table, the total and the size all drop.
        let cur = b(
            &[
                ("public.orders", 0),
                ("public.users", 500),
                ("public.tiny", 1),
            ],
            2 << 20,
        );
        let f = compare(&prev, &cur, 50);
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(f[0].contains("public.orders shrank from 10000 to 0"));
        // A vanished table, even a small one.
        let cur = b(
            &[("public.orders", 10_000), ("public.users", 500)],
            50 << 20,
        );
        assert_eq!(
            compare(&prev, &cur, 50),
            vec!["table public.tiny vanished (it had 4 rows)"]
        );
        // Within the threshold, or growth: nothing.
        let cur = b(
            &[
                ("public.orders", 6_000),
                ("public.users", 900),
                ("public.tiny", 0),
            ],
            40 << 20,
        );
        assert!(compare(&prev, &cur, 50).is_empty());
        assert!(!compare(&prev, &cur, 30).is_empty());
    }
}
