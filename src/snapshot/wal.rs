//! The WAL archive of a cluster job in storage: `JOB/wal/TIMELINE/NAME.RANDOM.zst.age` holds
//! one file PostgreSQL archived (a segment, a timeline history, a backup label), compressed
//! and encrypted like a snapshot object; `JOB/wal/TIMELINE/NAME.json` (signed when the job
//! signs) is its commit marker with sizes and SHA-256s, written last. Pushing a name again
//! with the same content succeeds; other content under a stored name is refused. Fetching
//! checks the marker's signature, both hashes and both sizes before a byte reaches
//! PostgreSQL.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::JobPlan;
use crate::error::{Error, Result};
use crate::minisign::SecretKey;
use crate::storage::Storage;

/// The largest file PostgreSQL archives: a WAL segment of the largest size (1 GiB).
pub(crate) const WAL_FILE_MAX: u64 = 1 << 30;
/// A marker is a few hundred bytes.
const MARKER_MAX: u64 = 64 << 10;

/// The commit marker of one archived file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct WalMarker {
    pub format_version: u32,
    pub job: String,
    pub name: String,
    /// The data object's key below the job's prefix (`wal/TIMELINE/NAME.RANDOM.zst.age`).
    pub object: String,
    pub plaintext_bytes: u64,
    pub plaintext_sha256: String,
    pub stored_bytes: u64,
    pub sha256: String,
    pub pushed: String,
    pub host: String,
}

/// What kind of file a name is, when PostgreSQL archives it; `None` for anything else
/// (never used as a key).
pub(crate) fn timeline_of(name: &str) -> Option<&str> {
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
    };
    let ok = match name.len() {
        // 000000010000000000000003
        24 => hex(name),
        // 00000002.history
        16 => name.ends_with(".history") && hex(&name[..8]),
        // 000000010000000000000003.partial
        32 => name.ends_with(".partial") && hex(&name[..24]),
        // 000000010000000000000003.00000028.backup
        40 => {
            name.ends_with(".backup")
                && name.as_bytes()[24] == b'.'
                && hex(&name[..24])
                && hex(&name[25..33])
        }
        _ => false,
    };
    ok.then(|| &name[..8])
}

/// Whether `name` is a WAL segment (24 hex digits).
pub(crate) fn is_segment(name: &str) -> bool {
    name.len() == 24 && timeline_of(name).is_some()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

fn marker_key(job: &str, name: &str, tli: &str) -> String {
    format!("{job}/wal/{tli}/{name}.json")
}

/// The prefix every WAL object of `job` lives under.
pub(crate) fn prefix(job: &str) -> String {
    format!("{job}/wal/")
}

fn bad_name(name: &str) -> Error {
    Error::config(format!(
        "{name:?} is not a file PostgreSQL archives (a 24-hex-digit segment, TIMELINE.history, SEGMENT.partial or SEGMENT.OFFSET.backup)"
    ))
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Stored,
    /// The same content was stored already (PostgreSQL retries an archive_command that
    /// failed after the upload): nothing written.
    AlreadyStored,
}

/// Store one archived file.
pub(crate) async fn push(
    storage: &dyn Storage,
    plan: &JobPlan,
    signer: Option<&SecretKey>,
    name: &str,
    data: Vec<u8>,
) -> Result<Pushed> {
    let tli = timeline_of(name).ok_or_else(|| bad_name(name))?;
    let plain_sha = sha256_hex(&data);
    let marker = marker_key(&plan.name, name, tli);
    if let Some(existing) = read_marker(storage, plan, &marker, name).await? {
        return same_or_refuse(&existing, &plain_sha, name);
    }
    let (stored, stats) =
        crate::pipeline::encode_bytes(&data, plan.compression, &plan.encryption.parsed)?;
    let mut rnd = [0u8; 4];
    let _ = getrandom::fill(&mut rnd);
    let object = format!("wal/{tli}/{name}.{}.zst.age", hex::encode(rnd));
    storage
        .put_bytes(&format!("{}/{object}", plan.name), Bytes::from(stored))
        .await?;
    let m = WalMarker {
        format_version: 1,
        job: plan.name.clone(),
        name: name.to_string(),
        object,
        plaintext_bytes: data.len() as u64,
        plaintext_sha256: plain_sha.clone(),
        stored_bytes: stats.stored_bytes,
        sha256: stats.sha256,
        pushed: jiff::Timestamp::now().to_string(),
        host: crate::state::hostname(),
    };
    let body = serde_json::to_vec_pretty(&m).map_err(|e| Error::failed(e.to_string()))?;
    match super::sign::put_signed(storage, &marker, Bytes::from(body), signer, name).await {
        Ok(()) => Ok(Pushed::Stored),
        Err(e) => {
            // Another push of the same name won the race: fine if it is the same content.
            match read_marker(storage, plan, &marker, name).await {
                Ok(Some(existing)) => same_or_refuse(&existing, &plain_sha, name),
                _ => Err(e),
            }
        }
    }
}

fn same_or_refuse(existing: &WalMarker, plain_sha: &str, name: &str) -> Result<Pushed> {
    if existing.plaintext_sha256 == plain_sha {
        Ok(Pushed::AlreadyStored)
    } else {
        Err(Error::failed(format!(
            "ALARM: WAL file {name} is already archived with different content (stored SHA-256 {}, this one {plain_sha}); \
             refusing to replace it. Two clusters may be archiving into the same job, or the stored copy was written by someone else",
            existing.plaintext_sha256
        )))
    }
}

/// Read and check a marker: `None` when it does not exist. A marker that is not trusted
/// (unsigned or wrongly signed when the job signs), unreadable, or for another name is an
/// error: an archive is only as good as its weakest file.
async fn read_marker(
    storage: &dyn Storage,
    plan: &JobPlan,
    key: &str,
    name: &str,
) -> Result<Option<WalMarker>> {
    let Some(data) = storage.get_bytes_limited(key, MARKER_MAX).await? else {
        return Ok(None);
    };
    if let super::sign::Verdict::Foreign(why) =
        super::sign::check(storage, plan, key, &data, None).await?
    {
        return Err(Error::failed(format!(
            "WAL file {name}: its marker {key} is not trusted ({why})"
        )));
    }
    let m: WalMarker = serde_json::from_slice(&data)
        .map_err(|e| Error::failed(format!("WAL file {name}: marker {key} is unreadable: {e}")))?;
    let tli = timeline_of(name).unwrap_or_default();
    let object_ok = m.object.starts_with(&format!("wal/{tli}/{name}."))
        && m.object.ends_with(".zst.age")
        && !m.object.contains("..")
        && !m.object.contains('\\');
    if m.name != name || m.job != plan.name || !object_ok || m.plaintext_bytes > WAL_FILE_MAX {
        return Err(Error::failed(format!(
            "WAL file {name}: marker {key} describes another file ({} of job {}, object {:?})",
            m.name, m.job, m.object
        )));
    }
    Ok(Some(m))
}

/// Fetch one archived file, checked: `None` when it was never archived.
pub(crate) async fn fetch(
    storage: &dyn Storage,
    plan: &JobPlan,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    name: &str,
) -> Result<Option<Vec<u8>>> {
    let tli = timeline_of(name).ok_or_else(|| bad_name(name))?;
    let Some(m) = read_marker(storage, plan, &marker_key(&plan.name, name, tli), name).await?
    else {
        return Ok(None);
    };
    let key = format!("{}/{}", plan.name, m.object);
    // Compressed and encrypted, a file is at most a little larger than its plaintext.
    let bound = m.plaintext_bytes + m.plaintext_bytes / 8 + (1 << 20);
    let stored = storage
        .get_bytes_limited(&key, bound.min(m.stored_bytes))
        .await?
        .ok_or_else(|| {
            Error::failed(format!(
                "WAL file {name}: its marker is stored but its data object {key} is missing"
            ))
        })?;
    let expect = crate::pipeline::Expect {
        name: &key,
        stored_bytes: m.stored_bytes,
        sha256: &m.sha256,
    };
    let mut plain = Vec::with_capacity(m.plaintext_bytes as usize);
    crate::pipeline::decode(&stored[..], identities, &expect, &mut plain)?;
    if plain.len() as u64 != m.plaintext_bytes || sha256_hex(&plain) != m.plaintext_sha256 {
        return Err(Error::failed(format!(
            "WAL file {name}: decrypted content does not match its marker (size or SHA-256)"
        )));
    }
    Ok(Some(plain))
}

/// Every archived file of `plan`'s job, by name (committed: its marker exists).
pub(crate) async fn list(storage: &dyn Storage, job: &str) -> Result<Vec<String>> {
    let mut names: Vec<String> = storage
        .list(&prefix(job))
        .await?
        .into_iter()
        .filter_map(|o| {
            let file = o.key.rsplit('/').next()?;
            let name = file.strip_suffix(".json")?;
            timeline_of(name).map(|_| name.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// The state of a cluster job's WAL archive, as `list`, `status` and metrics show it.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Summary {
    /// Archived files (segments, history files, backup labels).
    pub files: u64,
    /// The newest segment and when it was archived.
    pub newest: Option<String>,
    pub newest_archived: Option<String>,
    /// The first segment missing between stored ones on the oldest base backup's timeline,
    /// from its start on.
    pub gap: Option<String>,
}

/// A base backup's first WAL segment and the cluster's segment size, from its manifest.
pub(crate) fn start_segment(src: &super::SourceInfo) -> Option<(String, u64)> {
    let size = src
        .wal_segment_size
        .filter(|s| s.is_power_of_two() && *s >= 1 << 20)?;
    let seg = segment_of(src.wal_start.as_deref()?, src.timeline.unwrap_or(1), size)?;
    Some((seg, size))
}

/// The segment holding a base backup's end point: recovery needs the archive from here on
/// (the base backup's tar holds the WAL from its start to its end).
pub(crate) fn end_segment(src: &super::SourceInfo) -> Option<String> {
    let size = src
        .wal_segment_size
        .filter(|s| s.is_power_of_two() && *s >= 1 << 20)?;
    segment_of(src.wal_end.as_deref()?, src.timeline.unwrap_or(1), size)
}

/// Summarize the archive of `plan`'s job; `base_start` is the first segment the oldest kept
/// base backup needs from the archive (gaps before it do not matter).
pub(crate) async fn summary(
    storage: &dyn Storage,
    plan: &JobPlan,
    base_start: Option<&str>,
    seg_size: u64,
) -> Result<Summary> {
    let names = list(storage, &plan.name).await?;
    let newest = names.iter().filter(|n| is_segment(n)).max_by(|a, b| {
        // The newest timeline first, then the position.
        (&a[..8], &a[8..]).cmp(&(&b[..8], &b[8..]))
    });
    let mut s = Summary {
        files: names.len() as u64,
        newest: newest.cloned(),
        ..Summary::default()
    };
    if let Some(n) = newest {
        let tli = timeline_of(n).unwrap_or_default();
        if let Some(m) = read_marker(storage, plan, &marker_key(&plan.name, n, tli), n).await? {
            s.newest_archived = Some(m.pushed);
        }
    }
    if let Some(start) = base_start {
        s.gap = first_gap(&names, start, seg_size);
    }
    Ok(s)
}

/// The first segment of `start`'s timeline, from `start` on, that is missing while a later
/// one is stored.
pub(crate) fn first_gap(names: &[String], start: &str, seg_size: u64) -> Option<String> {
    let per_log = 0x1_0000_0000 / seg_size.max(1);
    let tli = start.get(..8)?;
    let mut segs: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| is_segment(n) && n.starts_with(tli) && n[8..] >= start[8..])
        .collect();
    segs.sort();
    let mut expect = start.to_string();
    for s in segs {
        if s != expect {
            return Some(expect);
        }
        expect = next_segment(s, per_log)?;
    }
    None
}

/// The segment after `seg` (same timeline), for 16 MiB segments or any other size given in
/// segments per "log id" (`0x100000000 / size`).
pub(crate) fn next_segment(seg: &str, per_log: u64) -> Option<String> {
    if !is_segment(seg) {
        return None;
    }
    let tli = &seg[..8];
    let log = u64::from_str_radix(&seg[8..16], 16).ok()?;
    let n = u64::from_str_radix(&seg[16..24], 16).ok()?;
    let (log, n) = if n + 1 >= per_log {
        (log + 1, 0)
    } else {
        (log, n + 1)
    };
    Some(format!("{tli}{log:08X}{n:08X}"))
}

/// The segment holding `lsn` ("X/Y") on `timeline`, for segments of `seg_size` bytes.
pub(crate) fn segment_of(lsn: &str, timeline: u32, seg_size: u64) -> Option<String> {
    let (hi, lo) = lsn.split_once('/')?;
    let pos = (u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?;
    let seg = pos / seg_size;
    let per_log = 0x1_0000_0000 / seg_size;
    Some(format!(
        "{timeline:08X}{:08X}{:08X}",
        seg / per_log,
        seg % per_log
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_postgres_archives_are_keys() {
        assert_eq!(timeline_of("000000010000000000000003"), Some("00000001"));
        assert_eq!(timeline_of("00000002.history"), Some("00000002"));
        assert_eq!(
            timeline_of("000000010000000000000003.partial"),
            Some("00000001")
        );
        assert_eq!(
            timeline_of("000000010000000000000003.00000028.backup"),
            Some("00000001")
        );
        for bad in [
            "",
            "../../../etc/passwd",
            "00000001000000000000000g",
            "000000010000000000000003/",
            "0000000100000000000000031",
            "00000001.history/../x",
            "000000010000000000000003.partial.x",
            "000000010000000000000003x00000028.backup",
            "00000000000000000000000a",
        ] {
            assert_eq!(timeline_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn segments_follow_each_other_and_hold_their_lsn() {
        let per_log = 0x1_0000_0000 / (16 << 20);
        assert_eq!(
            next_segment("0000000100000000000000FE", per_log).unwrap(),
            "0000000100000000000000FF"
        );
        assert_eq!(
            next_segment("0000000100000000000000FF", per_log).unwrap(),
            "000000010000000100000000"
        );
        assert_eq!(
            segment_of("0/2000028", 1, 16 << 20).unwrap(),
            "000000010000000000000002"
        );
        assert_eq!(
            segment_of("1/3000000", 2, 16 << 20).unwrap(),
            "000000020000000100000003"
        );
    }
}
