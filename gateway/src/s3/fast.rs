//! The fast read path: a signed GetObject that succeeds is answered here, without the
//! `s3s` protocol layer, because serving media is mostly range GETs and `s3s`'s
//! per-request work (ordered copies of the query and headers, the full SigV4 key
//! derivation, the DTO round trip) cost a quarter more gateway CPU per 64 KiB range
//! than the native API (BENCHMARKS.md, "S3 and resumable uploads").
//!
//! It only answers successes of the forms it knows: a GET over HTTP/1.x without a body,
//! signed with SigV4 ([`super::sigv4`]), whose query has nothing but the presigning
//! parameters and `x-id`, whose record and preconditions give 200 or 206, and whose
//! metadata needs no encoding. Everything else, every error included, goes to `s3s`
//! unchanged, which decides it in full: one place decides what S3 answers when things
//! go wrong. The record, preconditions, range and body come from the same functions as
//! `s3s`'s GetObject ([`super::objects`]); the headers are the same fields, and the
//! boto3 suite checks a fast GET's headers against HeadObject's, which `s3s` serves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use axum::response::Response;
use s3s::host::S3Host;
use s3s::path::S3Path;

use super::host::VirtualHosts;
use super::objects::{extra_headers, kept, plan_read, read_body, ReadPlan};
use super::sigv4::{Signed, SigningKeys};
use crate::Gateway;

/// Query parameters a fast GET may carry: the presigning ones, and `x-id` (current AWS
/// SDKs name the operation in it). Any other (`response-*`, `partNumber`, `versionId`,
/// sub-resources) goes to `s3s`.
const FAST_QUERY: [&str; 7] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "x-id",
];

/// The content headers a GET answers with from the object's record.
const CONTENT_HEADERS: [HeaderName; 4] = [
    header::CACHE_CONTROL,
    header::CONTENT_DISPOSITION,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
];

/// The fast read path of one gateway.
pub struct FastReads {
    secrets: HashMap<String, String>,
    signing: SigningKeys,
    hosts: Option<VirtualHosts>,
}

impl FastReads {
    /// Over the gateway's S3 keys and addressing.
    pub fn new(gw: &Gateway) -> Self {
        Self {
            secrets: gw
                .config
                .s3_keys
                .iter()
                .map(|k| (k.access_key.clone(), k.secret_key.expose().to_string()))
                .collect(),
            signing: SigningKeys::default(),
            hosts: gw.config.s3_domain.as_deref().map(VirtualHosts::new),
        }
    }

    /// The answer to `req` if it is a GetObject this path takes and it succeeds;
    /// `None`: `s3s` answers it.
    pub async fn get(&self, gw: &Arc<Gateway>, req: &Parts) -> Option<Response> {
        let answer = self.try_get(gw, req).await;
        let m = &gw.cluster.metrics;
        if answer.is_some() {
            m.s3_fast_reads.inc();
        } else if req.method == Method::GET {
            m.s3_fast_declined.inc();
        }
        answer
    }

    async fn try_get(&self, gw: &Arc<Gateway>, req: &Parts) -> Option<Response> {
        let simple = req.method == Method::GET
            && matches!(req.version, Version::HTTP_10 | Version::HTTP_11)
            && !has_body(&req.headers);
        simple.then_some(())?;
        let query = query(req)?;
        let decoded = percent_encoding::percent_decode_str(req.uri.path())
            .decode_utf8()
            .ok()?;
        let (bucket, key) = self.object_of(&req.headers, &decoded)?;
        let signed = Signed {
            method: &req.method,
            decoded_path: &decoded,
            query: &query,
            headers: &req.headers,
            now: unix_now()?,
        };
        let secret_of = |k: &str| self.secrets.get(k).map(String::as_str);
        self.signing.verify(&signed, secret_of).then_some(())?;
        let plan = plan_read(gw, &req.method, &bucket, &key, &req.headers)
            .await
            .ok()?;
        let mut response = Response::new(read_body(gw, &plan.record, plan.span).await.ok()?);
        *response.headers_mut() = headers(&plan)?;
        if plan.partial {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        Some(response)
    }

    /// Bucket and key as `s3s` parses them (path-style, or virtual-hosted with a base
    /// domain); `None` unless the path names an object.
    fn object_of(&self, headers: &HeaderMap, decoded: &str) -> Option<(String, String)> {
        let host = headers.get(header::HOST)?.to_str().ok()?;
        let vh = match &self.hosts {
            Some(h) => h.parse_host_header(host).ok()?.bucket().map(str::to_owned),
            None => None,
        };
        let path = match vh {
            Some(b) => s3s::path::parse_virtual_hosted_style(Some(&b), decoded),
            None => s3s::path::parse_path_style(decoded),
        };
        match path.ok()? {
            S3Path::Object { bucket, key } => Some((bucket.into(), key.into())),
            _ => None,
        }
    }
}

/// The query, decoded as `s3s` decodes it, if it has only [`FAST_QUERY`] parameters.
fn query(req: &Parts) -> Option<Vec<(String, String)>> {
    let Some(q) = req.uri.query() else {
        return Some(Vec::new());
    };
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes())
        .into_owned()
        .collect();
    let known = pairs
        .iter()
        .all(|(n, v)| FAST_QUERY.contains(&n.as_str()) && (n != "x-id" || v == "GetObject"));
    known.then_some(pairs)
}

fn has_body(h: &HeaderMap) -> bool {
    h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

fn unix_now() -> Option<i64> {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// GetObject's response headers, the fields `s3s` writes from `objects::get`'s output;
/// `None` when a value is not a plain header value (`s3s` encodes metadata as RFC 2047
/// and fails on others: left to it).
fn headers(plan: &ReadPlan) -> Option<HeaderMap> {
    let r = &plan.record;
    let mut h = extra_headers(r);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    for name in CONTENT_HEADERS {
        if let Some(v) = kept(r, name.as_str()) {
            h.insert(name, HeaderValue::from_str(&v).ok()?);
        }
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(plan.span.len()));
    if plan.partial {
        let range = plan.span.content_range(r.size);
        h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&range).ok()?);
    }
    if let Some(ct) = &r.content_type {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).ok()?);
    }
    let etag = format!("\"{}\"", plan.etag);
    h.insert(header::ETAG, HeaderValue::from_str(&etag).ok()?);
    let modified = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(r.ts.ms));
    h.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_str(&modified).ok()?,
    );
    for (k, v) in &r.meta {
        let plain = v.bytes().all(|b| (b' '..=b'~').contains(&b)) && !v.contains("=?");
        plain.then_some(())?;
        let name = HeaderName::from_bytes(format!("x-amz-meta-{k}").as_bytes()).ok()?;
        h.insert(name, HeaderValue::from_str(v).ok()?);
    }
    Some(h)
}
