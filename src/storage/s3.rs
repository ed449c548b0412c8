//! The `s3://bucket/prefix` backend for any S3-compatible service (AWS, R2, B2, MinIO,
//! Garage, moto). Checksums are calculated and validated only "when required" because
//! several compatible servers reject the newer flexible-checksum headers. A stream that
//! fits in one part is a single PutObject; a longer one is a multipart upload of equal
//! parts with a bounded number in flight, aborted on any error or cancellation. With
//! Object Lock configured, every object and part carries a Content-MD5 (S3 requires one)
//! and the retention mode and date.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ObjectLockMode};
use bytes::Bytes;
use tokio::task::JoinSet;

use super::{Chunk, ChunkRx, ObjectInfo, Reader, Storage, check_key};
use crate::config::{LockMode, StorageLocation, StoragePlan};
use crate::error::{Error, Result};

/// S3's limit on parts per multipart upload.
pub const MAX_PARTS: i32 = 10_000;

pub struct S3Storage {
    client: Client,
    bucket: String,
    prefix: String,
    part_size: usize,
    parts_in_flight: usize,
    object_lock: Option<(LockMode, u32)>,
    /// The server answered 501 to `If-None-Match` on a write: write without it.
    no_conditional: std::sync::atomic::AtomicBool,
}

const _: fn() = || {
    fn assert_storage<T: Storage>() {}
    assert_storage::<S3Storage>();
};

/// Explicit settings for building a client without a job file (tests, doctor).
pub struct S3Options {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    pub profile: Option<String>,
    pub credentials: Option<(String, String)>,
    pub part_size: usize,
    pub parts_in_flight: usize,
    pub object_lock: Option<(LockMode, u32)>,
}

impl S3Storage {
    /// Every object below `prefix`; with `end`, the keys (below the storage's prefix) that
    /// sort before it, the pages after the first key at or past it not asked for.
    async fn list_until(&self, prefix: &str, end: Option<&str>) -> Result<Vec<ObjectInfo>> {
        let full = self.full_key(prefix);
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full)
            .into_paginator()
            .send();
        let mut past = false;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("ListObjectsV2", prefix, e))?;
            for o in page.contents() {
                if let Some(k) = o.key()
                    && k.len() > strip
                {
                    if end.is_some_and(|e| &k[strip..] >= e) {
                        past = true;
                        continue;
                    }
                    out.push(ObjectInfo {
                        key: k[strip..].to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        modified: o.last_modified().and_then(|t| {
                            jiff::Timestamp::new(t.secs(), t.subsec_nanos() as i32).ok()
                        }),
                    });
                }
            }
            if past {
                break;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Every version below `prefix`; with `end`, of the keys that sort before it (as
    /// [`S3Storage::list_until`]).
    async fn versions_until(
        &self,
        prefix: &str,
        end: Option<&str>,
    ) -> Result<Vec<super::VersionInfo>> {
        let full = self.full_key(prefix);
        let strip = self.full_key("").len();
        let ts = |t: Option<&DateTime>| {
            t.and_then(|t| jiff::Timestamp::new(t.secs(), t.subsec_nanos() as i32).ok())
        };
        let mut out = Vec::new();
        let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_key_marker(key_marker.clone())
                .set_version_id_marker(version_marker.clone())
                .send()
                .await
                .map_err(|e| self.err("ListObjectVersions", prefix, e))?;
            for v in page.versions() {
                if let Some(k) = v.key().filter(|k| k.len() > strip) {
                    out.push(super::VersionInfo {
                        key: k[strip..].to_string(),
                        version_id: v.version_id().unwrap_or("null").to_string(),
                        delete_marker: false,
                        size: v.size().unwrap_or(0).max(0) as u64,
                        modified: ts(v.last_modified()),
                    });
                }
            }
            for m in page.delete_markers() {
                if let Some(k) = m.key().filter(|k| k.len() > strip) {
                    out.push(super::VersionInfo {
                        key: k[strip..].to_string(),
                        version_id: m.version_id().unwrap_or("null").to_string(),
                        delete_marker: true,
                        size: 0,
                        modified: ts(m.last_modified()),
                    });
                }
            }
            if let Some(e) = end {
                out.retain(|v: &super::VersionInfo| v.key.as_str() < e);
                if page
                    .next_key_marker()
                    .is_some_and(|k| k.len() >= strip && &k[strip..] >= e)
                {
                    break;
                }
            }
            if page.is_truncated() == Some(true) {
                key_marker = page.next_key_marker().map(str::to_string);
                version_marker = page.next_version_id_marker().map(str::to_string);
                if key_marker.is_none() {
                    break;
                }
            } else {
                break;
            }
        }
        // Per key, S3 lists versions newest first; a stable sort by key keeps that order.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    pub async fn from_plan(
        plan: &StoragePlan,
        credentials: Option<(String, String)>,
    ) -> Result<Self> {
        let StorageLocation::S3 { bucket, prefix } = &plan.location else {
            return Err(Error::config(format!("{} is not an s3:// URL", plan.url)));
        };
        Self::new(S3Options {
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            endpoint: plan.endpoint.clone(),
            region: plan.region.clone(),
            path_style: plan.path_style,
            profile: plan.profile.clone(),
            credentials,
            part_size: plan.part_size,
            parts_in_flight: plan.parts_in_flight,
            object_lock: plan.object_lock,
        })
        .await
    }

    pub async fn new(o: S3Options) -> Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(p) = &o.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &o.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some((id, secret)) = &o.credentials {
            loader =
                loader.credentials_provider(Credentials::new(id, secret, None, None, "backstop"));
        }
        let shared = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .force_path_style(o.path_style);
        if shared.region().is_none() {
            // S3-compatible services mostly ignore the region, but signing needs one.
            b = b.region(Region::new("us-east-1"));
        }
        if let Some(e) = &o.endpoint {
            b = b.endpoint_url(e);
        }
        Ok(S3Storage {
            client: Client::from_conf(b.build()),
            bucket: o.bucket,
            prefix: o.prefix,
            part_size: o.part_size,
            parts_in_flight: o.parts_in_flight.max(1),
            object_lock: o.object_lock,
            no_conditional: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The full object key for a storage key.
    pub fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn err(&self, what: &str, key: &str, e: impl std::error::Error) -> Error {
        Error::failed(format!(
            "S3 {what} of s3://{}/{} failed: {}",
            self.bucket,
            self.full_key(key),
            DisplayErrorContext(e)
        ))
    }

    fn retain_until(&self) -> Option<(ObjectLockMode, DateTime)> {
        let (mode, days) = self.object_lock?;
        let until =
            std::time::SystemTime::now() + std::time::Duration::from_secs(days as u64 * 86_400);
        let mode = match mode {
            LockMode::Governance => ObjectLockMode::Governance,
            LockMode::Compliance => ObjectLockMode::Compliance,
        };
        Some((mode, DateTime::from(until)))
    }

    /// A failed write: HTTP 412 means the object exists and was not replaced.
    fn write_err(
        &self,
        op: &str,
        key: &str,
        status: Option<u16>,
        e: impl std::error::Error,
    ) -> Error {
        match status {
            Some(412) => Error::failed(format!(
                "refusing to overwrite existing object {key} in {} (objects are written once)",
                self.describe()
            )),
            _ => self.err(op, key, e),
        }
    }

    async fn put_single(&self, key: &str, data: Bytes) -> Result<u64> {
        let len = data.len() as u64;
        let conditional = !self
            .no_conditional
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .content_length(len as i64);
        if conditional {
            // Write-once: never a new version over an existing object.
            req = req.if_none_match("*");
        }
        if let Some((mode, until)) = self.retain_until() {
            req = req
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until)
                .content_md5(content_md5(&data));
        }
        match req.body(ByteStream::from(data.clone())).send().await {
            Ok(_) => Ok(len),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                if conditional && status == Some(501) {
                    // A server that rejects the header (rather than ignoring it): write
                    // without it, and say so once.
                    self.note_no_conditional();
                    return Box::pin(self.put_single(key, data)).await;
                }
                Err(self.write_err("PutObject", key, status, e))
            }
        }
    }

    fn note_no_conditional(&self) {
        if !self
            .no_conditional
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                "{} does not implement If-None-Match on writes (HTTP 501): objects are written without it; \
                 use Object Lock or versioning so they cannot be replaced",
                self.describe()
            );
        }
    }

    async fn put_multipart(
        &self,
        key: &str,
        first: Bytes,
        second: Bytes,
        rx: &mut ChunkRx,
    ) -> Result<u64> {
        let full = self.full_key(key);
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full);
        if let Some((mode, until)) = self.retain_until() {
            req = req
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until);
        }
        let created = req
            .send()
            .await
            .map_err(|e| self.err("CreateMultipartUpload", key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| {
                Error::failed(format!(
                    "S3 CreateMultipartUpload of {full} returned no upload id"
                ))
            })?
            .to_string();
        let mut guard = AbortGuard {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: full.clone(),
            upload_id: Some(upload_id.clone()),
        };
        match self.upload_parts(key, &upload_id, first, second, rx).await {
            Ok((parts, total)) => {
                let complete = |conditional: bool| {
                    let mut req = self
                        .client
                        .complete_multipart_upload()
                        .bucket(&self.bucket)
                        .key(&full)
                        .upload_id(&upload_id)
                        .multipart_upload(
                            CompletedMultipartUpload::builder()
                                .set_parts(Some(parts.clone()))
                                .build(),
                        );
                    if conditional {
                        req = req.if_none_match("*");
                    }
                    req.send()
                };
                let conditional = !self
                    .no_conditional
                    .load(std::sync::atomic::Ordering::Relaxed);
                let mut res = complete(conditional).await;
                if conditional
                    && let Err(e) = &res
                    && e.raw_response().map(|r| r.status().as_u16()) == Some(501)
                {
                    self.note_no_conditional();
                    res = complete(false).await;
                }
                res.map_err(|e| {
                    let status = e.raw_response().map(|r| r.status().as_u16());
                    self.write_err("CompleteMultipartUpload", key, status, e)
                })?;
                guard.upload_id = None;
                self.ensure_retention(key).await?;
                Ok(total)
            }
            Err(e) => {
                guard.upload_id = None;
                if let Err(abort) = abort(&self.client, &self.bucket, &full, &upload_id).await {
                    tracing::warn!("{abort}");
                }
                Err(e)
            }
        }
    }

    /// Some S3-compatible servers ignore the lock headers of CreateMultipartUpload: probe
    /// the finished object and set its retention explicitly when it is missing.
    async fn ensure_retention(&self, key: &str) -> Result<()> {
        let Some((mode, until)) = self.retain_until() else {
            return Ok(());
        };
        let full = self.full_key(key);
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.err("HeadObject", key, e))?;
        if head.object_lock_mode().is_some() && head.object_lock_retain_until_date().is_some() {
            return Ok(());
        }
        tracing::debug!(
            "{full}: the server did not apply the multipart lock headers; setting retention"
        );
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(&full)
            .set_version_id(head.version_id().map(str::to_string))
            .retention(
                aws_sdk_s3::types::ObjectLockRetention::builder()
                    .mode(match mode {
                        ObjectLockMode::Compliance => {
                            aws_sdk_s3::types::ObjectLockRetentionMode::Compliance
                        }
                        _ => aws_sdk_s3::types::ObjectLockRetentionMode::Governance,
                    })
                    .retain_until_date(until)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("PutObjectRetention", key, e))?;
        Ok(())
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        first: Bytes,
        second: Bytes,
        rx: &mut ChunkRx,
    ) -> Result<(Vec<CompletedPart>, u64)> {
        let mut tasks: JoinSet<Result<CompletedPart>> = JoinSet::new();
        let mut parts = Vec::new();
        let mut number: i32 = 0;
        let mut total = 0u64;
        // Every part but the last has the first part's size (R2 needs equal parts).
        let part_size = first.len();
        let mut pending: Vec<Bytes> = vec![first, second];
        let mut ended = false;
        let mut last_len: Option<usize> = None;
        loop {
            let next = if let Some(p) = (!pending.is_empty()).then(|| pending.remove(0)) {
                Some(p)
            } else if ended {
                None
            } else {
                match rx.recv().await {
                    Some(Chunk::Data(d)) => Some(d),
                    Some(Chunk::End) => {
                        ended = true;
                        None
                    }
                    None => {
                        return Err(Error::failed(format!(
                            "the stream for {key} stopped before its end; the multipart upload is aborted"
                        )));
                    }
                }
            };
            let Some(data) = next else { break };
            // Every part but the last must have the same size.
            if let Some(prev) = last_len
                && prev != part_size
            {
                return Err(Error::failed(format!(
                    "internal: part {number} of {key} has {prev} bytes, not the part size {part_size}"
                )));
            }
            last_len = Some(data.len());
            number += 1;
            if number > MAX_PARTS {
                return Err(Error::failed(format!(
                    "{key} needs more than {MAX_PARTS} parts of {} MiB; raise storage.part_size_mib",
                    part_size / crate::config::MIB
                )));
            }
            total += data.len() as u64;
            while tasks.len() >= self.parts_in_flight {
                if let Some(done) = tasks.join_next().await {
                    parts.push(flatten(done)?);
                }
            }
            let mut req = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .upload_id(upload_id)
                .part_number(number)
                .content_length(data.len() as i64);
            if self.object_lock.is_some() {
                req = req.content_md5(content_md5(&data));
            }
            let what = format!(
                "UploadPart {number} of s3://{}/{}",
                self.bucket,
                self.full_key(key)
            );
            tasks.spawn(async move {
                let out = req.body(ByteStream::from(data)).send().await.map_err(|e| {
                    Error::failed(format!("{what} failed: {}", DisplayErrorContext(e)))
                })?;
                Ok(CompletedPart::builder()
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .part_number(number)
                    .build())
            });
        }
        while let Some(done) = tasks.join_next().await {
            parts.push(flatten(done)?);
        }
        parts.sort_by_key(|p| p.part_number());
        Ok((parts, total))
    }
}

/// The configured part size, grown (in whole MiB) so that `expected` bytes fit in 9,000
/// parts, leaving 10% of S3's 10,000-part limit as headroom for a stream larger than
/// its hint. A 1 TiB database gets 117 MiB parts.
pub fn part_size_for(configured: usize, expected: Option<u64>) -> usize {
    let mib = crate::config::MIB as u64;
    let needed = expected
        .map(|e| e.div_ceil(9_000).div_ceil(mib) * mib)
        .unwrap_or(0);
    (configured as u64).max(needed).min(5 * 1024 * mib) as usize
}

fn flatten(
    r: std::result::Result<Result<CompletedPart>, tokio::task::JoinError>,
) -> Result<CompletedPart> {
    r.map_err(|e| Error::failed(format!("upload task failed: {e}")))?
}

fn content_md5(data: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(data))
}

async fn abort(client: &Client, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
    client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            Error::failed(format!(
                "could not abort the multipart upload of s3://{bucket}/{key} ({upload_id}): {}; \
                 a bucket lifecycle rule for incomplete multipart uploads will remove it",
                DisplayErrorContext(e)
            ))
        })
}

/// Aborts a multipart upload when the put future is dropped mid-way (cancellation).
struct AbortGuard {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(id) = self.upload_id.take() {
            let (client, bucket, key) =
                (self.client.clone(), self.bucket.clone(), self.key.clone());
            crate::cleanup::spawn(async move {
                if let Err(e) = abort(&client, &bucket, &key, &id).await {
                    tracing::warn!("{e}");
                }
            });
        }
    }
}

#[async_trait]
impl Storage for S3Storage {
    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn chunk_size(&self) -> usize {
        self.part_size
    }

    fn chunk_size_for(&self, expected: Option<u64>) -> usize {
        part_size_for(self.part_size, expected)
    }

    fn chunks_in_flight(&self) -> usize {
        1
    }

    async fn put_stream(&self, key: &str, mut rx: ChunkRx) -> Result<u64> {
        check_key(key)?;
        let stopped = || {
            Error::failed(format!(
                "the stream for {key} stopped before its end; nothing was stored"
            ))
        };
        let first = match rx.recv().await {
            Some(Chunk::Data(d)) => d,
            Some(Chunk::End) => return self.put_single(key, Bytes::new()).await,
            None => return Err(stopped()),
        };
        match rx.recv().await {
            Some(Chunk::End) => self.put_single(key, first).await,
            Some(Chunk::Data(second)) => self.put_multipart(key, first, second, &mut rx).await,
            None => Err(stopped()),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Reader>> {
        check_key(key)?;
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(Box::new(out.body.into_async_read()))),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(self.err("GetObject", key, e)),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        Ok(self
            .head_object(key)
            .await?
            .map(|out| out.content_length().unwrap_or(0).max(0) as u64))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.list_until(prefix, None).await
    }

    async fn list_before(&self, prefix: &str, end: &str) -> Result<Vec<ObjectInfo>> {
        self.list_until(prefix, Some(end)).await
    }

    async fn versions_before(&self, prefix: &str, end: &str) -> Result<Vec<super::VersionInfo>> {
        self.versions_until(prefix, Some(end)).await
    }

    async fn abort_incomplete(&self, prefix: &str) -> Result<()> {
        for (k, id, _) in self.uploads(prefix).await? {
            abort(&self.client, &self.bucket, &k, &id).await?;
        }
        Ok(())
    }

    async fn clean_incomplete(&self, prefix: &str, before: jiff::Timestamp) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for (k, id, started) in self.uploads(prefix).await? {
            let started = started.unwrap_or(i64::MAX);
            if started < before.as_second() {
                abort(&self.client, &self.bucket, &k, &id).await?;
                removed.push(format!(
                    "multipart upload of {k} started {}",
                    fmt_secs(started)
                ));
            }
        }
        Ok(removed)
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        check_key(key)?;
        let res = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .if_none_match("*")
            .content_length(data.len() as i64)
            .content_md5(content_md5(&data))
            .body(ByteStream::from(data))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            // 412: the key exists; 409: a concurrent conditional put is in progress.
            Err(e)
                if matches!(
                    e.raw_response().map(|r| r.status().as_u16()),
                    Some(412 | 409)
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.err("PutObject (If-None-Match)", key, e)),
        }
    }

    async fn versions(&self, prefix: &str) -> Result<Vec<super::VersionInfo>> {
        self.versions_until(prefix, None).await
    }

    async fn get_version(&self, key: &str, version_id: &str) -> Result<Option<Reader>> {
        check_key(key)?;
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .version_id(version_id)
            .send()
            .await
        {
            Ok(out) => Ok(Some(Box::new(out.body.into_async_read()))),
            Err(e) if matches!(e.raw_response().map(|r| r.status().as_u16()), Some(404)) => {
                Ok(None)
            }
            Err(e) => Err(self.err("GetObject (version)", key, e)),
        }
    }

    async fn locked_until(&self, key: &str) -> Result<Option<jiff::Timestamp>> {
        Ok(self.head_object(key).await?.and_then(|out| {
            out.object_lock_retain_until_date()
                .and_then(|d| jiff::Timestamp::from_second(d.secs()).ok())
        }))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.err("DeleteObject", key, e))?;
        Ok(())
    }
}

impl S3Storage {
    /// Delete every version of `key` (and its delete markers): what an attacker holding
    /// these credentials could do. Fails where Object Lock protects a version.
    pub(crate) async fn delete_all_versions(&self, key: &str) -> Result<usize> {
        let full = self.full_key(key);
        // A server without version listing (Garage answers NotImplemented) keeps no old
        // versions either: a plain delete is then the whole test. Never read a failed
        // listing as "the delete was refused".
        let mut ids: Vec<Option<String>> = match self
            .client
            .list_object_versions()
            .bucket(&self.bucket)
            .prefix(&full)
            .send()
            .await
        {
            Ok(out) => {
                let mut ids: Vec<Option<String>> = out
                    .versions()
                    .iter()
                    .filter(|v| v.key() == Some(full.as_str()))
                    .map(|v| v.version_id().map(str::to_string))
                    .collect();
                ids.extend(
                    out.delete_markers()
                        .iter()
                        .filter(|m| m.key() == Some(full.as_str()))
                        .map(|m| m.version_id().map(str::to_string)),
                );
                ids
            }
            Err(e) => {
                tracing::debug!("{}", self.err("ListObjectVersions", key, e).message());
                Vec::new()
            }
        };
        if ids.is_empty() {
            ids.push(None); // an unversioned bucket lists nothing here
        }
        let n = ids.len();
        for id in ids {
            let mut req = self.client.delete_object().bucket(&self.bucket).key(&full);
            if let Some(v) = id.filter(|v| v != "null") {
                req = req.version_id(v);
            }
            req.send()
                .await
                .map_err(|e| self.err("DeleteObject (version)", key, e))?;
        }
        Ok(n)
    }

    /// The bucket's versioning status and Object Lock default ("COMPLIANCE 30 days").
    pub(crate) async fn bucket_settings(&self) -> Result<(Option<String>, Option<String>)> {
        // Some servers answer GetBucketVersioning in a shape the SDK cannot read (moto
        // uses the wrong root element); the lock configuration below is what matters.
        let versioning = match self
            .client
            .get_bucket_versioning()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(v) => v.status().map(|s| s.as_str().to_string()),
            Err(e) => {
                tracing::debug!("GetBucketVersioning: {}", DisplayErrorContext(e));
                Some("unknown (the server's answer could not be read)".into())
            }
        };
        let lock = match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(o) => o.object_lock_configuration().map(|c| {
                let enabled = c
                    .object_lock_enabled()
                    .map(|e| e.as_str().to_string())
                    .unwrap_or_default();
                match c.rule().and_then(|r| r.default_retention()) {
                    Some(d) => format!(
                        "{enabled}, default {} {}",
                        d.mode().map(|m| m.as_str()).unwrap_or("?"),
                        d.days()
                            .map(|n| format!("{n} days"))
                            .or(d.years().map(|n| format!("{n} years")))
                            .unwrap_or_default()
                    ),
                    None => format!("{enabled}, no default retention"),
                }
            }),
            Err(_) => None,
        };
        Ok((versioning, lock))
    }

    /// When the storage says `key` was last written (its clock, to the second).
    pub(crate) async fn last_modified(&self, key: &str) -> Result<Option<jiff::Timestamp>> {
        Ok(self.head_object(key).await?.and_then(|out| {
            out.last_modified()
                .and_then(|d| jiff::Timestamp::from_second(d.secs()).ok())
        }))
    }

    /// Unfinished multipart uploads below `prefix`: full key, upload id, start (Unix s).
    async fn uploads(&self, prefix: &str) -> Result<Vec<(String, String, Option<i64>)>> {
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(self.full_key(prefix))
            .send()
            .await
            .map_err(|e| self.err("ListMultipartUploads", prefix, e))?;
        Ok(out
            .uploads()
            .iter()
            .filter_map(|u| {
                Some((
                    u.key()?.to_string(),
                    u.upload_id()?.to_string(),
                    u.initiated().map(|t| t.secs()),
                ))
            })
            .collect())
    }

    /// HeadObject; `None` when the object does not exist.
    async fn head_object(
        &self,
        key: &str,
    ) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>> {
        check_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(out)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(self.err("HeadObject", key, e)),
        }
    }
}

fn fmt_secs(s: i64) -> String {
    jiff::Timestamp::from_second(s)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| "at an unknown time".into())
}

/// Multipart uploads in progress below the prefix (for tests and `doctor`).
pub async fn pending_uploads(s: &S3Storage) -> Result<Vec<String>> {
    let out = s
        .client
        .list_multipart_uploads()
        .bucket(&s.bucket)
        .prefix(s.full_key(""))
        .send()
        .await
        .map_err(|e| s.err("ListMultipartUploads", "", e))?;
    Ok(out
        .uploads()
        .iter()
        .filter_map(|u| u.key().map(str::to_string))
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn part_size_grows_with_the_expected_size() {
        let mib = crate::config::MIB;
        assert_eq!(super::part_size_for(16 * mib, None), 16 * mib);
        assert_eq!(super::part_size_for(16 * mib, Some(1 << 30)), 16 * mib);
        let tib = super::part_size_for(16 * mib, Some(1 << 40));
        assert_eq!(tib, 117 * mib);
        assert!((1u64 << 40).div_ceil(tib as u64) <= 9_000);
    }
}
