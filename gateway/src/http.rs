//! The public HTTP API.
//!
//! | call | answer |
//! | --- | --- |
//! | `PUT /v1/o/{bucket}/{key}` | streamed upload → 201 `{bucket, key, size, etag, chunks}` |
//! | `GET`/`HEAD /v1/o/{bucket}/{key}` | the object; RFC 9110 ranges and conditionals |
//! | `DELETE /v1/o/{bucket}/{key}` | tombstone → 204 |
//! | `GET /v1/o/{bucket}?prefix=&after=&limit=` | ordered listing, merged across nodes |
//!
//! Every `/v1` call needs `Authorization: Bearer <api key>`; `/health` and `/metrics` are open.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kura_cluster::names::{check_bucket, check_key};
use kura_cluster::observe;
use kura_cluster::range::ByteSpan;
use kura_cluster::record::ObjectRecord;
use serde::Deserialize;

use crate::conditional::{decide, Decision, Validators};
use crate::error::{GatewayError, Result};
use crate::{buckets, download, jobs, upload, Gateway};

/// Default largest total size of request headers (names + values), configurable as
/// `max_header_bytes`. 16 KiB fits any sane client (nginx's default large buffer is 8 KiB
/// per line) while bounding per-request memory.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Prefix of headers carrying user metadata, stored with the object and returned on GET.
pub const META_PREFIX: &str = "x-kura-meta-";

/// Largest total size of user metadata (names + values), as S3's 2 KiB.
pub const MAX_META_BYTES: usize = 2 * 1024;

/// Largest listing page.
pub const MAX_LIST_LIMIT: usize = 1000;

/// CORS for browser players on other origins: GET/HEAD/OPTIONS from the configured
/// origins, with `Range` allowed and the range headers exposed.
pub(crate) fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            // Reads by players; resumable uploads (tus) straight from browsers.
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::OPTIONS,
                Method::POST,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::RANGE,
                header::AUTHORIZATION,
                header::IF_NONE_MATCH,
                header::IF_MATCH,
                header::IF_RANGE,
                header::IF_MODIFIED_SINCE,
                header::CONTENT_TYPE,
                HeaderName::from_static("tus-resumable"),
                HeaderName::from_static("upload-length"),
                HeaderName::from_static("upload-offset"),
                HeaderName::from_static("upload-metadata"),
                HeaderName::from_static("upload-token"),
                HeaderName::from_static("upload-checksum"),
                HeaderName::from_static("x-http-method-override"),
            ])
            .expose_headers([
                header::CONTENT_RANGE,
                header::ACCEPT_RANGES,
                header::CONTENT_LENGTH,
                header::ETAG,
                header::LAST_MODIFIED,
                header::LOCATION,
                HeaderName::from_static("tus-resumable"),
                HeaderName::from_static("tus-version"),
                HeaderName::from_static("tus-extension"),
                HeaderName::from_static("tus-max-size"),
                HeaderName::from_static("tus-checksum-algorithm"),
                HeaderName::from_static("upload-offset"),
                HeaderName::from_static("upload-length"),
                HeaderName::from_static("upload-expires"),
            ])
            .max_age(Duration::from_secs(3600)),
    )
}

// ---- Middleware ----

/// 431 when the request's headers exceed `limit` bytes in total.
pub async fn limit_headers(State(limit): State<usize>, req: Request, next: Next) -> Response {
    if headers_len(req.headers()) > limit {
        return GatewayError::HeadersTooLarge { limit }.into_response();
    }
    next.run(req).await
}

/// The size of `headers` as `limit_headers` counts it: names and values.
pub fn headers_len(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum()
}

/// Whether `headers` carry one of the gateway's API keys as `Authorization: Bearer`.
pub fn has_api_key(gw: &Gateway, headers: &HeaderMap) -> bool {
    gw.api_keys.admits_headers(headers)
}

pub(crate) async fn require_api_key(
    State(gw): State<Arc<Gateway>>,
    req: Request,
    next: Next,
) -> Response {
    if !has_api_key(&gw, req.headers()) {
        return GatewayError::Unauthorized.into_response();
    }
    next.run(req).await
}

// ---- Open endpoints ----

pub(crate) async fn health() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

pub(crate) async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    // Read when scraped: keeping it current on every insert would force moka's
    // maintenance onto the read path.
    let cached = gw.cluster.chunk_cache.weighted_size();
    gw.cluster
        .metrics
        .chunk_cache_bytes
        .set(i64::try_from(cached).unwrap_or(i64::MAX));
    observe::render(&gw.registry)
}

// ---- Objects ----

fn check_names(bucket: &str, key: &str) -> Result<()> {
    check_bucket(bucket)?;
    check_key(key)?;
    Ok(())
}

fn user_meta(headers: &HeaderMap) -> Result<BTreeMap<String, String>> {
    let mut meta = BTreeMap::new();
    let mut total = 0;
    for (name, value) in headers {
        if let Some(k) = name.as_str().strip_prefix(META_PREFIX) {
            let v = value.to_str().map_err(|_| {
                GatewayError::BadRequest(format!("metadata {k} is not visible ASCII"))
            })?;
            total += k.len() + v.len();
            meta.insert(k.to_string(), v.to_string());
        }
    }
    if total > MAX_META_BYTES {
        return Err(GatewayError::BadRequest(format!(
            "user metadata exceeds {MAX_META_BYTES} bytes"
        )));
    }
    Ok(meta)
}

#[derive(Deserialize)]
pub(crate) struct PutQuery {
    /// Submit a transcoding job with this profile once the object is stored.
    transcode: Option<String>,
}

pub(crate) async fn put_object(
    State(gw): State<Arc<Gateway>>,
    Path((bucket, key)): Path<(String, String)>,
    Query(q): Query<PutQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    if q.transcode.is_some() && gw.config.coordinator.is_none() {
        return Err(GatewayError::NotConfigured(
            "this gateway has no coordinator configured; cannot transcode".into(),
        ));
    }
    check_names(&bucket, &key)?;
    let limit = gw.config.object_limit();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::TooLarge { limit });
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let meta = user_meta(&headers)?;
    buckets::ensure(&gw, &bucket).await?;
    let object = upload::NewObject {
        bucket: bucket.clone(),
        key: key.clone(),
        content_type,
        meta,
        ..Default::default()
    };
    let reply = upload::put_object(&gw, object, body).await?;
    let mut json = serde_json::to_value(&reply)?;
    if let Some(profile) = q.transcode {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // The object is stored whatever happens here: a failed submission is reported
        // next to the upload's result, not as the upload's failure.
        match jobs::submit(&gw, &bucket, &key, &profile, auth).await {
            Ok(job) => json["job"] = job,
            Err(e) => json["job_error"] = serde_json::Value::String(e.to_string()),
        }
    }
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

pub(crate) async fn delete_object(
    State(gw): State<Arc<Gateway>>,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<Response> {
    check_names(&bucket, &key)?;
    let tomb = ObjectRecord::tombstone(&bucket, &key, gw.cluster.clock.now());
    gw.cluster.put_record(tomb).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn get_object(
    State(gw): State<Arc<Gateway>>,
    method: Method,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    serve_object(&gw, &method, &bucket, &key, &headers).await
}

/// Whether the client asked for the newest version whatever the gateway has cached
/// (RFC 9111 request directives `no-cache` or `max-age=0`).
pub fn wants_fresh(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .any(|d| d == "no-cache" || d == "max-age=0")
}

/// Answers a GET or HEAD of `bucket/key` (whoever authorised it).
pub async fn serve_object(
    gw: &Arc<Gateway>,
    method: &Method,
    bucket: &str,
    key: &str,
    headers: &HeaderMap,
) -> Result<Response> {
    check_names(bucket, key)?;
    let record = if wants_fresh(headers) {
        gw.cluster.get_record_fresh(bucket, key).await?
    } else {
        gw.cluster.get_record(bucket, key).await?
    };
    let record = record
        .filter(|r| !r.deleted)
        .ok_or(GatewayError::NotFound)?;
    let etag = format!("\"{}\"", record.etag);
    let last_modified = UNIX_EPOCH + Duration::from_millis(record.ts.ms);
    let validators = Validators {
        etag: &etag,
        last_modified,
        size: record.size,
    };
    let whole = ByteSpan {
        start: 0,
        end: record.size,
    };
    let (status, span) = match decide(method, headers, &validators) {
        Decision::PreconditionFailed => return Err(GatewayError::PreconditionFailed),
        Decision::Unsatisfiable => {
            return Err(GatewayError::RangeNotSatisfiable { size: record.size })
        }
        Decision::NotModified => {
            let mut resp = StatusCode::NOT_MODIFIED.into_response();
            object_headers(resp.headers_mut(), &record, etag, last_modified);
            return Ok(resp);
        }
        Decision::Full => (StatusCode::OK, whole),
        Decision::Partial(s) => (StatusCode::PARTIAL_CONTENT, s),
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        download::object_body(gw, &record, span).await?
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    // Sized once: grown insert by insert, the map was rehashed twice per response.
    h.reserve(OBJECT_HEADERS + record.meta.len() + record.headers.len());
    object_headers(h, &record, etag, last_modified);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(span.len()));
    if status == StatusCode::PARTIAL_CONTENT {
        set_owned(h, header::CONTENT_RANGE, span.content_range(record.size));
    }
    Ok(resp)
}

/// The headers [`serve_object`] sets on every object response besides the record's
/// own (`x-kura-meta-*` and stored headers): type, `nosniff`, a sandbox for active
/// types, etag, modified date, `Accept-Ranges`, length and range.
const OBJECT_HEADERS: usize = 8;

fn object_headers(
    h: &mut HeaderMap,
    r: &ObjectRecord,
    etag: String,
    modified: std::time::SystemTime,
) {
    let ct = r
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    set(h, header::CONTENT_TYPE, ct);
    content_safety_headers(h, ct);
    set_owned(h, header::ETAG, etag);
    set_owned(h, header::LAST_MODIFIED, httpdate::fmt_http_date(modified));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    for (k, v) in &r.meta {
        if let Ok(name) = HeaderName::try_from(format!("{META_PREFIX}{k}")) {
            set(h, name, v);
        }
    }
    // Content-Encoding, Content-Disposition, Cache-Control, ... given at upload (S3).
    for (k, v) in &r.headers {
        if let Ok(name) = HeaderName::try_from(k.as_str()) {
            set(h, name, v);
        }
    }
}

/// Stored content is the uploader's, served on the gateway's origin: browsers must not
/// guess a more active type than `content_type`, and active types (HTML, SVG, XML,
/// scripts) run in a sandbox with no access to the origin (its cookies, storage, the
/// console). Every object read (native and S3) sets these.
pub fn content_safety_headers(h: &mut HeaderMap, content_type: &str) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if is_active_content(content_type) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
    }
}

/// Media types a browser would execute or render with scripts (besides every
/// `…+xml`).
const ACTIVE_TYPES: [&str; 12] = [
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
    "text/javascript",
    "application/javascript",
    "application/ecmascript",
    "text/ecmascript",
    "application/x-javascript",
    "text/xsl",
    "application/pdf",
];

/// Whether `content_type` is one of [`ACTIVE_TYPES`] or `…+xml`, in any case (compared
/// in place: this runs on every object response).
fn is_active_content(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .as_bytes();
    let xml = b"+xml";
    ACTIVE_TYPES
        .iter()
        .any(|t| essence.eq_ignore_ascii_case(t.as_bytes()))
        || (essence.len() >= xml.len()
            && essence[essence.len() - xml.len()..].eq_ignore_ascii_case(xml))
}

fn set(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// [`set`] of a value built for it: the header takes the string's bytes, not a copy
/// (every object response builds its date and range).
fn set_owned(h: &mut HeaderMap, name: HeaderName, value: String) {
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        h.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_types_are_found_in_any_case_and_with_parameters() {
        for active in [
            "text/html",
            "Text/HTML; charset=utf-8",
            " image/SVG+xml ",
            "application/atom+XML",
            "application/pdf;x=1",
        ] {
            assert!(is_active_content(active), "{active}");
        }
        for passive in [
            "video/mp4",
            "text/plain",
            "",
            "+xm",
            "xml",
            "vidéo/mp4",
            "text/html-ish",
        ] {
            assert!(!is_active_content(passive), "{passive}");
        }
    }

    #[test]
    fn object_headers_carry_the_record_as_values_built_in_place() {
        let ts = kura_cluster::hlc::Clock::new(1).now();
        let mut r = ObjectRecord::tombstone("b", "k", ts);
        r.content_type = Some("text/html".into());
        r.meta.insert("who".into(), "me".into());
        let mut h = HeaderMap::new();
        let modified = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        object_headers(&mut h, &r, "\"abc\"".into(), modified);
        assert_eq!(h[header::ETAG], "\"abc\"");
        assert_eq!(h[header::LAST_MODIFIED], "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], "sandbox");
        assert_eq!(h["x-kura-meta-who"], "me");
        // A value no header may carry is left out, not sent broken.
        let mut h = HeaderMap::new();
        object_headers(&mut h, &r, "\"a\nb\"".into(), modified);
        assert!(h.get(header::ETAG).is_none());
    }
}
