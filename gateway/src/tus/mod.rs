//! Resumable uploads, tus 1.0.0 (core, creation, creation-with-upload, termination,
//! expiration) at `/v1/uploads`, over the upload state of `crate::multipart`.
//!
//! | call | does |
//! | --- | --- |
//! | `OPTIONS /v1/uploads` | 204 with `Tus-Version`, `Tus-Extension`, `Tus-Max-Size` (see [`discovery`]) |
//! | `POST /v1/uploads` (`Upload-Length`, `Upload-Metadata: bucket …,key …`) | 201 `Location: /v1/uploads/{id}`; with a body (`application/offset+octet-stream`) it is the first piece |
//! | `HEAD /v1/uploads/{id}` | 200 `Upload-Offset`, `Upload-Length` |
//! | `PATCH /v1/uploads/{id}` (`Upload-Offset`) | appends; 204 with the new offset; the last byte completes the object (and starts its job) |
//! | `DELETE /v1/uploads/{id}` | 204; the upload and its pieces are gone |
//!
//! Callers present an API key (`Authorization: Bearer`) or a signed upload token
//! (`Upload-Token`, or as the bearer), which limits them to its bucket and key or prefix;
//! an upload another caller may not touch answers 404, as if it did not exist.
//!
//! Each PATCH body is one piece, stored as chunks (W of N) as it arrives and recorded
//! at the offset it started from (`pt/{id}/{offset}`). **The offset a client is told is
//! always made of durable bytes**: it is the end of the chain of recorded pieces from
//! offset 0. A PATCH that breaks off still records what arrived before the break, so a
//! client resumes after it; a gateway killed mid-PATCH loses only the piece in flight,
//! and any other gateway answers `HEAD` from the same records.
//!
//! [`checksum`]: the checksum extension (`Upload-Checksum`, 460 on a mismatch).

pub mod checksum;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kura_cluster::names::{check_bucket, check_key};
use kura_cluster::record::max_chunks;

use crate::error::{GatewayError, Result};
use crate::multipart::{self, Part, Upload};
use crate::upload::{self, NewObject};
use crate::upload_token::{self, UploadGrant};
use crate::{buckets, jobs, Gateway};

/// The protocol version spoken.
pub const TUS_VERSION: &str = "1.0.0";
/// The extensions supported.
pub const TUS_EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration,checksum";
/// The name of tus uploads in `crate::multipart`.
const PROTOCOL: &str = "tus";
/// Content type of a PATCH body.
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// The upload field holding the declared length.
const LENGTH_FIELD: &str = "length";
/// The upload field holding the transcode profile.
const TRANSCODE_FIELD: &str = "transcode";
/// Largest `Upload-Metadata` header (a few names and values).
const MAX_METADATA_BYTES: usize = 4096;

static TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
static UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
static UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
static UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
static UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
static UPLOAD_TOKEN: HeaderName = HeaderName::from_static("upload-token");

/// Who is uploading.
#[derive(Clone, Debug)]
pub enum Uploader {
    /// A holder of an API key: any bucket and key, any transcode profile.
    ApiKey,
    /// A holder of a signed upload token: its grant only.
    Token(UploadGrant),
}

impl Uploader {
    fn may_touch(&self, bucket: &str, key: &str) -> bool {
        match self {
            Uploader::ApiKey => true,
            Uploader::Token(g) => g.covers(bucket, key),
        }
    }
}

/// Authenticates a tus request: an API key, or a valid token (`Upload-Token`, or the
/// bearer). Refused with 401 (nothing given, or a bearer that is neither an API key nor
/// an upload token) or 403 (an upload token that is forged, expired or out of scope).
impl FromRequestParts<Arc<Gateway>> for Uploader {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        gw: &Arc<Gateway>,
    ) -> std::result::Result<Self, Response> {
        if crate::http::has_api_key(gw, &parts.headers) {
            return Ok(Uploader::ApiKey);
        }
        let token = parts
            .headers
            .get(&UPLOAD_TOKEN)
            .or_else(|| parts.headers.get(header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string())
            .filter(|t| upload_token::looks_like_token(t));
        let now = kura_cluster::hlc::wall_ms() / 1000;
        match token.map(|t| upload_token::verify(gw, &t, now)) {
            Some(Ok(grant)) => Ok(Uploader::Token(grant)),
            Some(Err(e)) => Err(e.into_response()),
            None => Err(GatewayError::Unauthorized.into_response()),
        }
    }
}

/// Every tus answer says which version it speaks (and a 412, which versions exist).
pub async fn with_tus(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(TUS_RESUMABLE.clone(), HeaderValue::from_static(TUS_VERSION));
    if resp.status() == StatusCode::PRECONDITION_FAILED {
        resp.headers_mut()
            .insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    }
    resp
}

fn header_u64(h: &HeaderMap, name: &HeaderName) -> Result<Option<u64>> {
    h.get(name)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| GatewayError::BadRequest(format!("{name} must be a number")))
        })
        .transpose()
}

/// 412 unless the client speaks this version.
fn check_version(h: &HeaderMap) -> Result<()> {
    match h.get(&TUS_RESUMABLE).and_then(|v| v.to_str().ok()) {
        Some(TUS_VERSION) => Ok(()),
        _ => Err(GatewayError::PreconditionFailed),
    }
}

/// `Upload-Metadata`: comma-separated `name base64value` pairs.
fn parse_metadata(h: &HeaderMap) -> Result<BTreeMap<String, String>> {
    let Some(raw) = h.get(&UPLOAD_METADATA) else {
        return Ok(BTreeMap::new());
    };
    let bad = |why: &str| GatewayError::BadRequest(format!("Upload-Metadata: {why}"));
    if raw.len() > MAX_METADATA_BYTES {
        return Err(bad("too long"));
    }
    let raw = raw.to_str().map_err(|_| bad("not ASCII"))?;
    let mut out = BTreeMap::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once(' ').unwrap_or((pair, ""));
        let value = STANDARD
            .decode(value.trim())
            .map_err(|_| bad("a value is not base64"))?;
        let value = String::from_utf8(value).map_err(|_| bad("a value is not UTF-8"))?;
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

/// Whether the request's body is a piece of the upload (`application/offset+octet-stream`).
fn is_piece(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == OFFSET_OCTET_STREAM.as_bytes())
}

/// `Upload-Offset` (when known) and `Upload-Expires` of `upload`.
fn upload_headers(h: &mut HeaderMap, gw: &Gateway, upload: &Upload, offset: Option<u64>) {
    if let Some(o) = offset {
        h.insert(UPLOAD_OFFSET.clone(), HeaderValue::from(o));
    }
    let at = UNIX_EPOCH + Duration::from_millis(upload.initiated_ms) + gw.config.multipart_expiry;
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(at)) {
        h.insert(UPLOAD_EXPIRES.clone(), v);
    }
}

fn length_of(upload: &Upload) -> Result<u64> {
    upload
        .fields
        .get(LENGTH_FIELD)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| GatewayError::Internal(format!("upload {} has no length", upload.id)))
}

/// The pieces that make the upload's durable prefix, in order, and where it ends.
fn chain(parts: &[Part]) -> (Vec<&Part>, u64) {
    let mut sorted: Vec<&Part> = parts.iter().collect();
    sorted.sort_by_key(|p| p.index);
    let mut end = 0;
    let mut out = Vec::new();
    for p in sorted {
        if p.index == end && p.size > 0 {
            end += p.size;
            out.push(p);
        }
    }
    (out, end)
}

/// The tus upload `id`, if `who` may touch it (else 404, as if it did not exist).
async fn tus_upload(gw: &Arc<Gateway>, id: &str, who: &Uploader) -> Result<Upload> {
    let upload = multipart::get(gw, id).await?;
    if upload.protocol != PROTOCOL || !who.may_touch(&upload.bucket, &upload.key) {
        return Err(GatewayError::NotFound);
    }
    Ok(upload)
}

/// `OPTIONS /v1/uploads[/{id}]` without an `Origin` (tus discovery): 204 with
/// `Tus-Version`, `Tus-Extension` and `Tus-Max-Size`. Runs outside the CORS layer, which
/// answers every OPTIONS itself; a browser's preflight (with `Origin`) goes on to it.
pub async fn discovery(gw: &Gateway, req: Request, next: Next) -> Response {
    let is_discovery = req.method() == Method::OPTIONS
        && req.uri().path().starts_with("/v1/uploads")
        && !req.headers().contains_key(header::ORIGIN);
    if !is_discovery {
        return next.run(req).await;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(TUS_RESUMABLE.clone(), HeaderValue::from_static(TUS_VERSION));
    h.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    h.insert("tus-extension", HeaderValue::from_static(TUS_EXTENSIONS));
    h.insert("tus-max-size", HeaderValue::from(gw.config.object_limit()));
    h.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static(checksum::ALGORITHMS),
    );
    resp
}

/// The target and settings of a new upload, from its metadata and the uploader's grant.
fn new_object(
    who: &Uploader,
    meta: &BTreeMap<String, String>,
    length: u64,
) -> Result<(NewObject, Option<String>)> {
    let grant = match who {
        Uploader::Token(g) => Some(g),
        Uploader::ApiKey => None,
    };
    let bucket = meta
        .get("bucket")
        .cloned()
        .or_else(|| grant.map(|g| g.bucket.clone()))
        .ok_or_else(|| GatewayError::BadRequest("Upload-Metadata needs a bucket".into()))?;
    let key = meta
        .get("key")
        .cloned()
        .or_else(|| grant.and_then(|g| g.key.clone()))
        .ok_or_else(|| GatewayError::BadRequest("Upload-Metadata needs a key".into()))?;
    check_bucket(&bucket)?;
    check_key(&key)?;
    let content_type = meta
        .get("content-type")
        .or_else(|| meta.get("filetype"))
        .cloned();
    let transcode = match grant {
        Some(g) => {
            if !g.covers(&bucket, &key) {
                return Err(GatewayError::Forbidden(format!(
                    "the upload token does not cover {bucket}/{key}"
                )));
            }
            if g.max_bytes.is_some_and(|m| length > m) {
                return Err(GatewayError::TooLarge {
                    limit: g.max_bytes.unwrap_or(0),
                });
            }
            let ct = content_type.as_deref().unwrap_or_default();
            if !g.content_types.is_empty() && !g.content_types.iter().any(|t| t == ct) {
                return Err(GatewayError::Forbidden(format!(
                    "the upload token does not allow content type {ct:?}"
                )));
            }
            g.transcode.clone()
        }
        None => meta.get("transcode").cloned(),
    };
    let mut user = BTreeMap::new();
    if let Some(name) = meta.get("filename") {
        user.insert("filename".to_string(), name.clone());
    }
    // `meta-NAME` entries are user metadata, as `x-kura-meta-NAME` headers are.
    for (k, v) in meta {
        if let Some(name) = k.strip_prefix("meta-") {
            let ok = !name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !ok {
                return Err(GatewayError::BadRequest(format!(
                    "metadata name {name:?}: use a-z, 0-9, '-' and '_'"
                )));
            }
            user.insert(name.to_string(), v.clone());
        }
    }
    let total: usize = user.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > crate::http::MAX_META_BYTES {
        return Err(GatewayError::BadRequest(format!(
            "user metadata exceeds {} bytes",
            crate::http::MAX_META_BYTES
        )));
    }
    let object = NewObject {
        bucket,
        key,
        content_type,
        meta: user,
        ..Default::default()
    };
    Ok((object, transcode))
}

/// `POST /v1/uploads`: creation (and creation-with-upload).
pub async fn create(
    State(gw): State<Arc<Gateway>>,
    who: Uploader,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    check_version(&headers)?;
    if headers.contains_key("upload-defer-length") {
        return Err(GatewayError::BadRequest(
            "Upload-Defer-Length is not supported; send Upload-Length".into(),
        ));
    }
    let length = header_u64(&headers, &UPLOAD_LENGTH)?
        .ok_or_else(|| GatewayError::BadRequest("Upload-Length is required".into()))?;
    let limit = gw.config.object_limit();
    if length > limit {
        return Err(GatewayError::TooLarge { limit });
    }
    let meta = parse_metadata(&headers)?;
    let (object, transcode) = new_object(&who, &meta, length)?;
    if transcode.is_some() && gw.config.coordinator.is_none() {
        return Err(GatewayError::NotConfigured(
            "this gateway has no coordinator configured; cannot transcode".into(),
        ));
    }
    buckets::ensure(&gw, &object.bucket).await?;
    let mut fields = BTreeMap::new();
    fields.insert(LENGTH_FIELD.to_string(), length.to_string());
    if let Some(t) = transcode {
        fields.insert(TRANSCODE_FIELD.to_string(), t);
    }
    let upload = multipart::create(&gw, object, PROTOCOL, fields).await?;
    let mut resp = StatusCode::CREATED.into_response();
    let with_body = is_piece(&headers);
    let offset = if length == 0 {
        finish(&gw, &upload, &headers).await?;
        Some(0)
    } else if with_body {
        Some(append(&gw, &upload, 0, &headers, body).await?)
    } else {
        None
    };
    let h = resp.headers_mut();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/uploads/{}", upload.id)) {
        h.insert(header::LOCATION, loc);
    }
    upload_headers(h, &gw, &upload, offset);
    Ok(resp)
}

/// `HEAD /v1/uploads/{id}`: the durable offset.
pub async fn status(
    State(gw): State<Arc<Gateway>>,
    who: Uploader,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    check_version(&headers)?;
    let upload = tus_upload(&gw, &id, &who).await?;
    let parts = multipart::parts(&gw, &upload).await?;
    let (_, offset) = chain(&parts);
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    upload_headers(h, &gw, &upload, Some(offset));
    h.insert(
        UPLOAD_LENGTH.clone(),
        HeaderValue::from(length_of(&upload)?),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `PATCH /v1/uploads/{id}`: appends at `Upload-Offset`.
pub async fn patch(
    State(gw): State<Arc<Gateway>>,
    who: Uploader,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    check_version(&headers)?;
    if !is_piece(&headers) {
        return Err(GatewayError::UnsupportedMediaType(format!(
            "a PATCH body must be {OFFSET_OCTET_STREAM}"
        )));
    }
    let offset = header_u64(&headers, &UPLOAD_OFFSET)?
        .ok_or_else(|| GatewayError::BadRequest("Upload-Offset is required".into()))?;
    let upload = tus_upload(&gw, &id, &who).await?;
    let new_offset = append(&gw, &upload, offset, &headers, body).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    upload_headers(h, &gw, &upload, Some(new_offset));
    Ok(resp)
}

/// Stores `body` as the piece at `offset` (which must be the durable offset), and
/// completes the upload when it reaches its length. Returns the new offset.
async fn append(
    gw: &Arc<Gateway>,
    upload: &Upload,
    offset: u64,
    headers: &HeaderMap,
    body: Body,
) -> Result<u64> {
    let length = length_of(upload)?;
    let parts = multipart::parts(gw, upload).await?;
    let (pieces, current) = chain(&parts);
    if offset != current {
        return Err(GatewayError::Conflict(format!(
            "Upload-Offset {offset} does not match the upload's offset {current}"
        )));
    }
    let room = length.saturating_sub(current);
    // Every piece ends a chunk early; pieces so small that the object's chunk list
    // could no longer fit one record are refused before they are stored.
    let chunk_size = gw.config.chunk_size;
    let listed: u64 = pieces.iter().map(|p| p.chunks.len() as u64).sum();
    if listed + room.div_ceil(chunk_size) > max_chunks(chunk_size) {
        return Err(GatewayError::BadRequest(format!(
            "this upload's pieces are too small for its size: send PATCH bodies of \
             {chunk_size} bytes or more"
        )));
    }
    if header_u64(headers, &header::CONTENT_LENGTH)?.is_some_and(|n| n > room) {
        return Err(GatewayError::TooLarge { limit: room });
    }
    let stream = body.into_data_stream();
    let (stored, broken) = match checksum::Claimed::of(headers)? {
        None => upload::store_prefix(gw, stream, room).await?,
        Some(claimed) => {
            // All or nothing: a prefix of a piece cannot be checked against its digest.
            let (digest, expected) = claimed.into_parts();
            let (stored, digest) = upload::store_limited(gw, stream, digest, room).await?;
            checksum::check(digest, &expected)?;
            (stored, None)
        }
    };
    let end = current + stored.size;
    if stored.size > 0 {
        multipart::put_part(gw, upload, current, stored, None).await?;
    }
    if let Some(e) = broken {
        // What arrived before the break is durable and recorded: a HEAD shows it.
        return Err(e);
    }
    if end == length {
        finish(gw, upload, headers).await?;
    }
    Ok(end)
}

/// Makes the complete upload an object and starts its transcode job, if it asked for one.
async fn finish(gw: &Arc<Gateway>, upload: &Upload, headers: &HeaderMap) -> Result<()> {
    let parts = multipart::parts(gw, upload).await?;
    let (chain, _) = chain(&parts);
    multipart::assemble(gw, upload, &chain, &parts, None).await?;
    if let Some(profile) = upload.fields.get(TRANSCODE_FIELD) {
        // The gateway submits for whoever uploaded (a token holder has no API key);
        // a failed submission does not undo the upload.
        let auth = match gw.config.api_keys.first() {
            Some(k) if !crate::http::has_api_key(gw, headers) => format!("Bearer {}", k.expose()),
            _ => headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        };
        if let Err(e) = jobs::submit(gw, &upload.bucket, &upload.key, profile, &auth).await {
            tracing::warn!(bucket = %upload.bucket, key = %upload.key, error = %e, "transcode after a resumable upload not submitted");
        }
    }
    Ok(())
}

/// `DELETE /v1/uploads/{id}` (termination).
pub async fn terminate(
    State(gw): State<Arc<Gateway>>,
    who: Uploader,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    check_version(&headers)?;
    let upload = tus_upload(&gw, &id, &who).await?;
    multipart::abort(&gw, &upload).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
