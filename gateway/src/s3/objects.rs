//! Object operations: PutObject, GetObject, HeadObject, DeleteObject(s), CopyObject.
//! Uploads go through the same chunked, replicated path as the native API
//! (`crate::upload`), reads through the same verified streaming (`crate::download`),
//! preconditions and ranges through the same decision (`crate::conditional`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::http::{header, HeaderMap, HeaderValue, Method};
use kura_cluster::names::check_key;
use kura_cluster::range::ByteSpan;
use kura_cluster::record::ObjectRecord;
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::buckets::require;
use super::digest::{claimed, store_checked, StoreAs};
use super::error::to_s3;
use crate::conditional::{decide, Decision, Validators};
use crate::upload::{self, NewObject};
use crate::{download, Gateway};

/// Content headers S3 keeps with an object besides its type.
const KEPT_HEADERS: [&str; 5] = [
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
];

// ---- Shared helpers ----

/// An S3 timestamp from ms since the epoch.
pub fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

/// The ETag S3 clients see: the MD5 form for objects written through S3, else kura's
/// blake3 hex (64 digits, which no client mistakes for an MD5).
pub fn s3_etag(r: &ObjectRecord) -> String {
    r.md5.clone().unwrap_or_else(|| r.etag.clone())
}

pub(super) fn check_object_key(key: &str) -> S3Result<()> {
    check_key(key).map_err(|e| S3Error::with_message(S3ErrorCode::InvalidArgument, e.to_string()))
}

/// The live record of `bucket/key`: `NoSuchKey`, or `NoSuchBucket` when the bucket is
/// missing too. `Cache-Control: no-cache` asks for a quorum read.
pub(super) async fn live_record(
    gw: &Arc<Gateway>,
    bucket: &str,
    key: &str,
    headers: &HeaderMap,
) -> S3Result<Arc<ObjectRecord>> {
    check_object_key(key)?;
    let found = if crate::http::wants_fresh(headers) {
        gw.cluster.get_record_fresh(bucket, key).await
    } else {
        gw.cluster.get_record(bucket, key).await
    }
    .map_err(|e| to_s3(e, S3ErrorCode::NoSuchKey))?;
    match found.filter(|r| !r.deleted) {
        Some(r) => Ok(r),
        None => {
            require(gw, bucket).await?;
            Err(s3_error!(NoSuchKey, "The specified key does not exist."))
        }
    }
}

/// Removes `aws-chunked` (a transfer detail of the request) from a Content-Encoding.
fn stored_encoding(v: &str) -> Option<String> {
    let kept: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

fn http_date(t: &Timestamp) -> Option<String> {
    let mut out = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut out).ok()?;
    String::from_utf8(out).ok()
}

/// The kept content headers of a request, by lowercase name.
pub(super) fn content_headers(
    cache_control: Option<String>,
    disposition: Option<String>,
    encoding: Option<String>,
    language: Option<String>,
    expires: Option<Timestamp>,
) -> BTreeMap<String, String> {
    let values = [
        cache_control,
        disposition,
        encoding.as_deref().and_then(stored_encoding),
        language,
        expires.as_ref().and_then(http_date),
    ];
    KEPT_HEADERS
        .iter()
        .zip(values)
        .filter_map(|(k, v)| Some((k.to_string(), v?)))
        .collect()
}

pub(super) fn user_meta(meta: Option<Metadata>) -> S3Result<BTreeMap<String, String>> {
    let meta: BTreeMap<String, String> = meta.unwrap_or_default().into_iter().collect();
    let total: usize = meta.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > crate::http::MAX_META_BYTES {
        return Err(s3_error!(
            MetadataTooLarge,
            "Your metadata headers exceed the maximum allowed metadata size."
        ));
    }
    Ok(meta)
}

// ---- PutObject ----

/// PutObject: streamed into chunks like a native upload; the MD5 and any checksums are
/// checked before the record is written, so a bad upload leaves nothing visible.
pub async fn put(
    gw: &Arc<Gateway>,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let S3Request {
        input,
        headers,
        trailing_headers,
        ..
    } = req;
    require(gw, &input.bucket).await?;
    check_object_key(&input.key)?;
    if let Some(class) = &input.storage_class {
        if !["STANDARD", "REDUCED_REDUNDANCY"].contains(&class.as_str()) {
            return Err(s3_error!(InvalidStorageClass));
        }
    }
    let limit = gw.config.object_limit();
    if input
        .content_length
        .is_some_and(|n| u64::try_from(n).unwrap_or(0) > limit)
    {
        return Err(s3_error!(EntityTooLarge, "larger than {limit} bytes"));
    }
    put_preconditions(gw, &input, &headers).await?;
    let claimed = claimed!(input);
    let (stored, checked) = store_checked(
        gw,
        input.body,
        (claimed, StoreAs::Object),
        trailing_headers.as_ref(),
        S3ErrorCode::NoSuchBucket,
    )
    .await?;
    let object = NewObject {
        bucket: input.bucket,
        key: input.key,
        content_type: input.content_type,
        meta: user_meta(input.metadata)?,
        headers: content_headers(
            input.cache_control,
            input.content_disposition,
            input.content_encoding,
            input.content_language,
            input.expires,
        ),
        md5: Some(checked.md5_hex.clone()),
    };
    upload::commit(gw, object, stored)
        .await
        .map_err(|e| to_s3(e, S3ErrorCode::NoSuchBucket))?;
    let c = checked.checksums;
    Ok(S3Response::new(PutObjectOutput {
        e_tag: Some(ETag::Strong(checked.md5_hex)),
        checksum_crc32: c.checksum_crc32,
        checksum_crc32c: c.checksum_crc32c,
        checksum_crc64nvme: c.checksum_crc64nvme,
        checksum_sha1: c.checksum_sha1,
        checksum_sha256: c.checksum_sha256,
        ..Default::default()
    }))
}

/// Conditional writes: `If-None-Match: *` (create only) and `If-Match: <etag>`.
async fn put_preconditions(
    gw: &Arc<Gateway>,
    input: &PutObjectInput,
    headers: &HeaderMap,
) -> S3Result<()> {
    if input.if_match.is_none() && input.if_none_match.is_none() {
        return Ok(());
    }
    let current = match live_record(gw, &input.bucket, &input.key, headers).await {
        Ok(r) => Some(r),
        Err(e) if *e.code() == S3ErrorCode::NoSuchKey => None,
        Err(e) => return Err(e),
    };
    if input.if_none_match.is_some() && current.is_some() {
        return Err(s3_error!(PreconditionFailed, "the object already exists"));
    }
    if let Some(cond) = &input.if_match {
        let ok = match (&current, cond) {
            (None, _) => false,
            (Some(_), ETagCondition::Any) => true,
            (Some(r), ETagCondition::ETag(e)) => e.value() == s3_etag(r),
        };
        if !ok {
            return Err(s3_error!(
                PreconditionFailed,
                "the object's ETag does not match"
            ));
        }
    }
    Ok(())
}

// ---- GetObject and HeadObject ----

/// What a read answers with, before the body.
pub(super) struct ReadPlan {
    pub record: Arc<ObjectRecord>,
    /// The S3 ETag, unquoted.
    pub etag: String,
    pub span: ByteSpan,
    pub partial: bool,
}

/// Resolves a GET or HEAD: record, preconditions, range.
pub(super) async fn plan_read(
    gw: &Arc<Gateway>,
    method: &Method,
    bucket: &str,
    key: &str,
    headers: &HeaderMap,
) -> S3Result<ReadPlan> {
    let record = live_record(gw, bucket, key, headers).await?;
    let etag = s3_etag(&record);
    let quoted = format!("\"{etag}\"");
    let modified = UNIX_EPOCH + Duration::from_millis(record.ts.ms);
    let validators = Validators {
        etag: &quoted,
        last_modified: modified,
        size: record.size,
    };
    let whole = ByteSpan {
        start: 0,
        end: record.size,
    };
    let (span, partial) = match decide(method, headers, &validators) {
        Decision::Full => (whole, false),
        Decision::Partial(s) => (s, true),
        Decision::PreconditionFailed => {
            return Err(s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            ))
        }
        Decision::Unsatisfiable => {
            return Err(s3_error!(
                InvalidRange,
                "The requested range is not satisfiable"
            ))
        }
        Decision::NotModified => {
            let mut e = s3_error!(NotModified);
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&quoted) {
                h.insert(header::ETAG, v);
            }
            if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
                h.insert(header::LAST_MODIFIED, v);
            }
            e.set_headers(h);
            return Err(e);
        }
    };
    Ok(ReadPlan {
        record,
        etag,
        span,
        partial,
    })
}

/// The stored content headers as response headers (`Expires` is not a DTO string).
pub(super) fn kept(record: &ObjectRecord, name: &str) -> Option<String> {
    record.headers.get(name).cloned()
}

/// Response headers that are not DTO fields: `Expires` (not a string there) and the
/// content-safety headers every object read sets (`crate::http::content_safety_headers`).
pub(super) fn extra_headers(record: &ObjectRecord) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(v) = record
        .headers
        .get("expires")
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        h.insert(header::EXPIRES, v);
    }
    let ct = record
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    crate::http::content_safety_headers(&mut h, ct);
    h
}

/// GetObject: ranges and preconditions as RFC 9110 (and S3) say; every byte verified.
pub async fn get(
    gw: &Arc<Gateway>,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let plan = plan_read(
        gw,
        &req.method,
        &req.input.bucket,
        &req.input.key,
        &req.headers,
    )
    .await?;
    let ReadPlan {
        record,
        etag,
        span,
        partial,
    } = plan;
    let body = read_body(gw, &record, span).await?;
    let output = GetObjectOutput {
        body: Some(StreamingBlob::from(s3s::Body::http_body_unsync(body))),
        content_length: i64::try_from(span.len()).ok(),
        content_range: partial.then(|| span.content_range(record.size)),
        accept_ranges: Some("bytes".into()),
        e_tag: Some(ETag::Strong(etag)),
        last_modified: Some(timestamp(record.ts.ms)),
        content_type: record.content_type.clone(),
        cache_control: kept(&record, "cache-control"),
        content_disposition: kept(&record, "content-disposition"),
        content_encoding: kept(&record, "content-encoding"),
        content_language: kept(&record, "content-language"),
        metadata: Some(record.meta.clone().into_iter().collect()),
        ..Default::default()
    };
    Ok(S3Response::with_headers(output, extra_headers(&record)))
}

/// The bytes of `span` of an object, streamed and verified as the native API streams them.
pub(super) async fn read_body(
    gw: &Arc<Gateway>,
    record: &ObjectRecord,
    span: ByteSpan,
) -> S3Result<axum::body::Body> {
    download::object_body(gw, record, span)
        .await
        .map_err(|e| to_s3(e, S3ErrorCode::NoSuchKey))
}

/// HeadObject: GetObject's headers without the body.
pub async fn head(
    gw: &Arc<Gateway>,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let plan = plan_read(
        gw,
        &req.method,
        &req.input.bucket,
        &req.input.key,
        &req.headers,
    )
    .await?;
    let record = &plan.record;
    let output = HeadObjectOutput {
        content_length: i64::try_from(plan.span.len()).ok(),
        content_range: plan.partial.then(|| plan.span.content_range(record.size)),
        accept_ranges: Some("bytes".into()),
        e_tag: Some(ETag::Strong(plan.etag.clone())),
        last_modified: Some(timestamp(record.ts.ms)),
        content_type: record.content_type.clone(),
        cache_control: kept(record, "cache-control"),
        content_disposition: kept(record, "content-disposition"),
        content_encoding: kept(record, "content-encoding"),
        content_language: kept(record, "content-language"),
        metadata: Some(record.meta.clone().into_iter().collect()),
        ..Default::default()
    };
    Ok(S3Response::with_headers(output, extra_headers(record)))
}

// ---- Deletes ----

/// Writes a tombstone for `bucket/key` (a missing key is not an error, as in S3).
async fn tombstone(gw: &Arc<Gateway>, bucket: &str, key: &str) -> S3Result<()> {
    check_object_key(key)?;
    let tomb = ObjectRecord::tombstone(bucket, key, gw.cluster.clock.now());
    gw.cluster
        .put_record(tomb)
        .await
        .map_err(|e| to_s3(e, S3ErrorCode::NoSuchKey))
}

/// DeleteObject: 204 whether or not the key existed.
pub async fn delete(
    gw: &Arc<Gateway>,
    input: DeleteObjectInput,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    require(gw, &input.bucket).await?;
    tombstone(gw, &input.bucket, &input.key).await?;
    Ok(S3Response::new(DeleteObjectOutput::default()))
}

/// DeleteObjects: each key on its own; failures are listed, not fatal.
pub async fn delete_many(
    gw: &Arc<Gateway>,
    input: DeleteObjectsInput,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    require(gw, &input.bucket).await?;
    let quiet = input.delete.quiet.unwrap_or(false);
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for obj in input.delete.objects {
        match tombstone(gw, &input.bucket, &obj.key).await {
            Ok(()) if quiet => {}
            Ok(()) => deleted.push(DeletedObject {
                key: Some(obj.key),
                ..Default::default()
            }),
            Err(e) => errors.push(s3s::dto::Error {
                code: Some(e.code().as_str().to_string()),
                key: Some(obj.key),
                message: e.message().map(str::to_string),
                version_id: None,
            }),
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: Some(errors),
        ..Default::default()
    }))
}

// ---- CopyObject ----

/// CopyObject: a new record naming the source's chunks — no byte is copied (chunks are
/// content-addressed). The ETag and MD5 stay the source's.
pub async fn copy(
    gw: &Arc<Gateway>,
    input: CopyObjectInput,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let (src_bucket, src_key) = match &input.copy_source {
        CopySource::Bucket { bucket, key, .. } => (bucket.to_string(), key.to_string()),
        _ => {
            return Err(s3_error!(
                NotImplemented,
                "only bucket copy sources are supported"
            ))
        }
    };
    require(gw, &input.bucket).await?;
    check_object_key(&input.key)?;
    let source = live_record(gw, &src_bucket, &src_key, &HeaderMap::new()).await?;
    copy_preconditions(&input, &source)?;
    let replace = input
        .metadata_directive
        .as_ref()
        .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    if !replace && src_bucket == input.bucket && src_key == input.key {
        return Err(s3_error!(
            InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
        ));
    }
    let mut record = ObjectRecord::clone(&source);
    record.bucket = input.bucket.clone();
    record.key = input.key.clone();
    record.ts = gw.cluster.clock.now();
    if replace {
        record.content_type = input.content_type;
        record.meta = user_meta(input.metadata)?;
        record.headers = content_headers(
            input.cache_control,
            input.content_disposition,
            input.content_encoding,
            input.content_language,
            input.expires,
        );
    }
    let ms = record.ts.ms;
    let ids: Vec<_> = record.chunks.iter().map(|c| c.id).collect();
    gw.cluster
        .touch_chunks(&ids)
        .await
        .map_err(|e| to_s3(e, S3ErrorCode::NoSuchKey))?;
    gw.cluster
        .put_record(record)
        .await
        .map_err(|e| to_s3(e, S3ErrorCode::NoSuchBucket))?;
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(ETag::Strong(s3_etag(&source))),
            last_modified: Some(timestamp(ms)),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

fn secs_of(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

/// `x-amz-copy-source-if-*`, evaluated as S3 does (If-Match over If-Unmodified-Since,
/// If-None-Match over If-Modified-Since); any failure is `PreconditionFailed`.
fn copy_preconditions(input: &CopyObjectInput, source: &ObjectRecord) -> S3Result<()> {
    let etag = s3_etag(source);
    let modified = i64::try_from(source.ts.ms / 1000).unwrap_or(i64::MAX);
    let matches = |c: &ETagCondition| match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == etag,
    };
    let failed = if let Some(c) = &input.copy_source_if_match {
        !matches(c)
    } else {
        input
            .copy_source_if_unmodified_since
            .as_ref()
            .is_some_and(|t| modified > secs_of(t))
    } || if let Some(c) = &input.copy_source_if_none_match {
        matches(c)
    } else {
        input
            .copy_source_if_modified_since
            .as_ref()
            .is_some_and(|t| modified <= secs_of(t))
    };
    if failed {
        return Err(s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold"
        ));
    }
    Ok(())
}
