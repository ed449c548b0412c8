//! The encrypted facts object (`facts.json.zst.age`): what a snapshot contains (row counts
//! by table, how they were taken). Content facts are secrets, so they never sit in the
//! plaintext manifest.

use serde::{Deserialize, Serialize};

/// The encrypted facts object: what the snapshot contains.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Facts {
    pub job: String,
    pub snapshot: String,
    /// How row counts were taken ("copy-stream": counted as pg_dump's COPY data passed).
    pub counted_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump: Option<DumpFacts>,
    /// Why counts are missing, when they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts_unavailable: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableCount {
    pub schema: String,
    pub table: String,
    pub rows: u64,
    /// Bytes of the table's COPY data in the dump (0: not recorded, older snapshots).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What the dump contains, learned from its stream.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct DumpFacts {
    pub archive_version: String,
    pub database: String,
    pub toc_entries: u64,
    pub tables: Vec<TableCount>,
    pub large_objects: u64,
}
