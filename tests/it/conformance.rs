//! One storage conformance suite, run against every backend: `file://` and S3 (a real
//! moto_server). One test per point of the contract written in `src/storage/mod.rs`, for
//! each backend (`file_backend::*`, `s3_backend::*`), `put_if_absent` included.

use std::sync::Arc;

use backstop::storage::faulty::FailPutAfter;
use backstop::storage::{Chunk, ChunkWriter, Storage};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::support::S3;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 11) as u8)
        .collect()
}

/// Stream `data` through a ChunkWriter on a worker thread, like the backup does.
async fn put_via_writer(
    s: &dyn Storage,
    key: &str,
    data: Vec<u8>,
    finish: bool,
) -> backstop::Result<u64> {
    let (tx, rx) = mpsc::channel(s.chunks_in_flight());
    let size = s.chunk_size();
    let producer = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut w = ChunkWriter::new(tx, size);
        for piece in data.chunks(300_001) {
            w.write_all(piece)?;
        }
        if finish {
            w.finish()?;
        }
        Ok::<(), std::io::Error>(())
    });
    let res = s.put_stream(key, rx).await;
    producer.await.unwrap().ok();
    res
}

// One function per point of the contract in `src/storage/mod.rs`; `contract!` runs each
// against a fresh `file://` root and a fresh bucket on a real S3 server.

/// `get` and `head` answer `None` for a missing object, and `list` an empty list.
async fn not_found_is_none(s: &dyn Storage) {
    assert!(s.get("job/none/x").await.unwrap().is_none());
    assert_eq!(s.head("job/none/x").await.unwrap(), None);
    assert!(s.list("job/").await.unwrap().is_empty());
}

/// Small objects (and empty ones) round-trip, and `head` gives their size.
async fn small_objects_round_trip(s: &dyn Storage) {
    s.put_bytes("job/a/one", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(s.get_bytes("job/a/one").await.unwrap().unwrap(), b"hello");
    assert_eq!(s.head("job/a/one").await.unwrap(), Some(5));
    s.put_bytes("job/a/empty", Bytes::new()).await.unwrap();
    assert_eq!(s.head("job/a/empty").await.unwrap(), Some(0));
    assert_eq!(s.get_bytes("job/a/empty").await.unwrap().unwrap(), b"");
}

/// A stream of several chunks (a multipart upload on S3) round-trips byte for byte.
async fn streams_round_trip(s: &dyn Storage) {
    let big = pattern(s.chunk_size() * 2 + 12_345, 7);
    let n = put_via_writer(s, "job/b/big", big.clone(), true)
        .await
        .unwrap();
    assert_eq!(n, big.len() as u64);
    assert_eq!(s.get_bytes("job/b/big").await.unwrap().unwrap(), big);
}

/// A put is all-or-nothing: a stream that stops without `End` leaves nothing visible.
async fn unfinished_streams_leave_nothing(s: &dyn Storage) {
    let err = put_via_writer(
        s,
        "job/c/partial",
        pattern(s.chunk_size() * 2 + 5, 1),
        false,
    )
    .await;
    assert!(err.is_err(), "an unfinished stream must fail");
    assert_eq!(s.head("job/c/partial").await.unwrap(), None);
    let (tx, rx) = mpsc::channel(2);
    tx.send(Chunk::Data(Bytes::from_static(b"abc")))
        .await
        .unwrap();
    drop(tx);
    assert!(s.put_stream("job/c/short", rx).await.is_err());
    assert_eq!(s.head("job/c/short").await.unwrap(), None);
    assert!(s.list("job/c/").await.unwrap().is_empty());
}

/// `list` returns every object below a prefix, with sizes, in key order; a prefix is a
/// path prefix of whole keys.
async fn list_by_prefix_in_key_order(s: &dyn Storage) {
    for (k, v) in [
        ("job/b/2", &b"xx"[..]),
        ("job/a/1", b"x"),
        ("job/a/0", b""),
        ("other/a", b"y"),
    ] {
        s.put_bytes(k, Bytes::copy_from_slice(v)).await.unwrap();
    }
    let keys: Vec<(String, u64)> = s
        .list("job/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("job/a/0".to_string(), 0),
            ("job/a/1".to_string(), 1),
            ("job/b/2".to_string(), 2)
        ]
    );
    assert_eq!(s.list("job/a/").await.unwrap().len(), 2);
    assert!(s.list("jo/").await.unwrap().is_empty());
}

/// `list_before` and `versions_before` give what `list` and `versions` give for the keys
/// that sort before `end`, whatever follows them (a job's WAL archive and leases after its
/// snapshots).
async fn listing_before_an_end_leaves_the_rest(s: &dyn Storage) {
    let before = [
        "job/20260101T000000Z-aaaaaa/manifest.json",
        "job/20260102T000000Z-bbbbbb/dump.zst.age",
    ];
    let mut keys: Vec<String> = before.iter().map(|k| k.to_string()).collect();
    keys.extend((0..40).map(|i| format!("job/wal/00000001/{i:024X}")));
    keys.push("job/lease/000000000001".into());
    keys.push("jobs/other".into());
    for k in &keys {
        s.put_bytes(k, Bytes::from_static(b"x")).await.unwrap();
    }
    let got: Vec<String> = s
        .list_before("job/", "job/:")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(got, before);
    assert_eq!(s.list("job/").await.unwrap().len(), 43);
    let versions: Vec<String> = s
        .versions_before("job/", "job/:")
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.key)
        .collect();
    let expected: Vec<String> = s
        .versions("job/")
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.key)
        .filter(|k| k.as_str() < "job/:")
        .collect();
    assert_eq!(versions, expected);
    assert!(
        versions.iter().all(|k| before.contains(&k.as_str())),
        "{versions:?}"
    );
}

/// Deleting removes the object; deleting a missing one is not an error.
async fn delete_is_idempotent(s: &dyn Storage) {
    s.put_bytes("job/d/one", Bytes::from_static(b"1"))
        .await
        .unwrap();
    s.delete("job/d/one").await.unwrap();
    assert_eq!(s.head("job/d/one").await.unwrap(), None);
    s.delete("job/d/one").await.unwrap();
}

/// Keys that could escape the root or are not plain paths are refused.
async fn bad_keys_are_refused(s: &dyn Storage) {
    assert!(s.put_bytes("../escape", Bytes::new()).await.is_err());
    assert!(s.put_bytes("job/../../escape", Bytes::new()).await.is_err());
    assert!(s.get("a//b").await.is_err());
    assert!(s.put_bytes("/abs", Bytes::new()).await.is_err());
}

/// `put_if_absent` stores only when the name is free, and never replaces what is there.
async fn put_if_absent_never_replaces(s: &dyn Storage) {
    assert!(
        s.put_if_absent("job/lease/000000000001", Bytes::from_static(b"first"))
            .await
            .unwrap()
    );
    assert!(
        !s.put_if_absent("job/lease/000000000001", Bytes::from_static(b"second"))
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_bytes("job/lease/000000000001")
            .await
            .unwrap()
            .unwrap(),
        b"first"
    );
}

/// Objects are written once: a plain put over an existing object fails and the first
/// bytes stay (S3: `If-None-Match: *`, so no new version either).
async fn puts_never_overwrite(s: &dyn Storage) {
    s.put_bytes("job/x/obj", Bytes::from_static(b"1"))
        .await
        .unwrap();
    let err = s
        .put_bytes("job/x/obj", Bytes::from_static(b"2"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("overwrite"), "{err}");
    assert_eq!(s.get_bytes("job/x/obj").await.unwrap().unwrap(), b"1");
}

/// Of several `put_if_absent` racing for one name, exactly one wins, and its bytes stay.
async fn put_if_absent_has_one_winner(s: &dyn Storage) {
    let tries = (0..8u8).map(|i| async move {
        let won = s
            .put_if_absent("job/lease/000000000002", Bytes::from(vec![i; 16]))
            .await
            .unwrap();
        (i, won)
    });
    let results = futures_join_all(tries).await;
    let winners: Vec<u8> = results.iter().filter(|r| r.1).map(|r| r.0).collect();
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(
        s.get_bytes("job/lease/000000000002")
            .await
            .unwrap()
            .unwrap(),
        vec![winners[0]; 16]
    );
}

/// Poll the futures together on this task, so their requests are in flight at once.
async fn futures_join_all<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = fs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("polled to completion"))
        .collect()
}

macro_rules! contract {
    ($($point:ident),* $(,)?) => {
        mod file_backend {
            $(
                #[tokio::test]
                async fn $point() {
                    let dir = tempfile::tempdir().unwrap();
                    let s = backstop::storage::fs::FileStorage::new(dir.path().to_path_buf());
                    super::$point(&s).await;
                    // no temp files left behind, whatever the point did
                    let leftovers: Vec<_> = super::walk(dir.path())
                        .into_iter()
                        .filter(|p| p.contains(".tmp-"))
                        .collect();
                    assert!(leftovers.is_empty(), "{leftovers:?}");
                }
            )*
        }
        mod s3_backend {
            $(
                #[tokio::test]
                async fn $point() {
                    let s3 = crate::support::S3::start();
                    let s = s3.storage("conformance", "pre/fix", 5, false).await;
                    super::$point(&s).await;
                    // keys live under the prefix, and no multipart upload is left pending
                    let raw = s
                        .client()
                        .list_objects_v2()
                        .bucket("conformance")
                        .send()
                        .await
                        .unwrap();
                    assert!(raw.contents().iter().all(|o| o.key().unwrap().starts_with("pre/fix/")));
                    assert!(backstop::storage::s3::pending_uploads(&s).await.unwrap().is_empty());
                }
            )*
        }
    };
}

contract!(
    not_found_is_none,
    small_objects_round_trip,
    streams_round_trip,
    unfinished_streams_leave_nothing,
    list_by_prefix_in_key_order,
    listing_before_an_end_leaves_the_rest,
    delete_is_idempotent,
    bad_keys_are_refused,
    put_if_absent_never_replaces,
    put_if_absent_has_one_winner,
    puts_never_overwrite,
);

fn walk(p: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

#[tokio::test]
async fn s3_failure_mid_upload_aborts_the_multipart_upload() {
    let s3 = S3::start();
    let inner = s3.storage("faults", "", 5, false).await;
    let check = s3.storage("faults", "", 5, false).await;
    let faulty = FailPutAfter::new(inner, 11 * 1024 * 1024);
    let err = put_via_writer(&faulty, "job/x/dump", pattern(30 * 1024 * 1024, 3), true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");
    assert_eq!(check.head("job/x/dump").await.unwrap(), None);
    assert!(
        backstop::storage::s3::pending_uploads(&check)
            .await
            .unwrap()
            .is_empty(),
        "multipart upload left pending"
    );
    let _ = Arc::new(check);
}

#[tokio::test]
async fn s3_object_lock_sets_retention_on_every_object() {
    let s3 = S3::start();
    let s = s3.storage("locked", "p", 5, true).await;
    s.put_bytes("job/a/small", Bytes::from_static(b"manifest"))
        .await
        .unwrap();
    let big = pattern(11 * 1024 * 1024, 9);
    put_via_writer(&s, "job/a/big", big.clone(), true)
        .await
        .unwrap();
    assert_eq!(s.get_bytes("job/a/big").await.unwrap().unwrap(), big);
    for key in ["p/job/a/small", "p/job/a/big"] {
        let h = s
            .client()
            .head_object()
            .bucket("locked")
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            h.object_lock_mode().map(|m| m.as_str()),
            Some("GOVERNANCE"),
            "{key}"
        );
        let until = h
            .object_lock_retain_until_date()
            .expect("retain-until date set");
        assert!(
            until.secs() > jiff::Timestamp::now().as_second() + 3600,
            "{key}"
        );
    }
    // the lock holds: a plain delete of the version does not remove the data
    let v = s
        .client()
        .head_object()
        .bucket("locked")
        .key("p/job/a/small")
        .send()
        .await
        .unwrap();
    let del = s
        .client()
        .delete_object()
        .bucket("locked")
        .key("p/job/a/small")
        .set_version_id(v.version_id().map(str::to_string))
        .send()
        .await;
    assert!(
        del.is_err(),
        "a locked object version must not be deletable"
    );
}
