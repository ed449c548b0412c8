//! One storage conformance suite, run against every backend: `file://` and S3 (a real
//! moto_server). Checks the contract written in `src/storage/mod.rs`.

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

async fn suite(s: &dyn Storage) {
    // not found is not an error
    assert!(s.get("job/none/x").await.unwrap().is_none());
    assert_eq!(s.head("job/none/x").await.unwrap(), None);
    assert!(s.list("job/").await.unwrap().is_empty());

    // small put/get/head
    s.put_bytes("job/a/one", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(s.get_bytes("job/a/one").await.unwrap().unwrap(), b"hello");
    assert_eq!(s.head("job/a/one").await.unwrap(), Some(5));
    s.put_bytes("job/a/empty", Bytes::new()).await.unwrap();
    assert_eq!(s.head("job/a/empty").await.unwrap(), Some(0));

    // a stream of several chunks (a multipart upload on S3) round-trips byte for byte
    let big = pattern(s.chunk_size() * 2 + 12_345, 7);
    let n = put_via_writer(s, "job/b/big", big.clone(), true)
        .await
        .unwrap();
    assert_eq!(n, big.len() as u64);
    assert_eq!(s.get_bytes("job/b/big").await.unwrap().unwrap(), big);

    // a stream that stops without End leaves nothing
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

    // list by prefix, in key order, with sizes
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
            ("job/a/empty".to_string(), 0),
            ("job/a/one".to_string(), 5),
            ("job/b/big".to_string(), big.len() as u64)
        ]
    );
    assert_eq!(s.list("job/a/").await.unwrap().len(), 2);
    assert!(s.list("jo/").await.unwrap().is_empty());

    // delete, and deleting a missing object is fine
    s.delete("job/a/one").await.unwrap();
    s.delete("job/a/one").await.unwrap();
    assert_eq!(s.head("job/a/one").await.unwrap(), None);

    // bad keys are refused
    assert!(s.put_bytes("../escape", Bytes::new()).await.is_err());
    assert!(s.get("a//b").await.is_err());
}

#[tokio::test]
async fn file_backend_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let s = backstop::storage::fs::FileStorage::new(dir.path().to_path_buf());
    suite(&s).await;
    // no silent overwrite
    s.put_bytes("job/x/obj", Bytes::from_static(b"1"))
        .await
        .unwrap();
    assert!(
        s.put_bytes("job/x/obj", Bytes::from_static(b"2"))
            .await
            .is_err()
    );
    assert_eq!(s.get_bytes("job/x/obj").await.unwrap().unwrap(), b"1");
    // no temp files left behind by the failed puts
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

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
async fn s3_backend_keeps_the_contract() {
    let s3 = S3::start();
    let s = s3.storage("conformance", "pre/fix", 5, false).await;
    suite(&s).await;
    // keys live under the prefix
    let raw = s
        .client()
        .list_objects_v2()
        .bucket("conformance")
        .send()
        .await
        .unwrap();
    assert!(
        raw.contents()
            .iter()
            .all(|o| o.key().unwrap().starts_with("pre/fix/job/"))
    );
    // the unfinished multipart upload was aborted, not left pending
    assert!(
        backstop::storage::s3::pending_uploads(&s)
            .await
            .unwrap()
            .is_empty()
    );
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
