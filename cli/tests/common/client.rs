//! [`GatewayClient`]: a client of a gateway's public API (uploads, reads, listings,
//! metrics), the answers it parses, and checks on those answers.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Result};
use bytes::Bytes;
use reqwest::{header, Method, RequestBuilder, StatusCode};
use serde::Deserialize;

use super::{blake3_hex, stored_chunks, API_KEY};

/// Timeout of one request of a [`GatewayClient`]: generous for 100 MiB on a loaded
/// machine, yet a hang fails the test instead of blocking it forever.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The gateway's default chunk size.
pub const CHUNK: u64 = 4 * 1024 * 1024;

/// A header of `resp` as a string.
pub fn header_str(resp: &reqwest::Response, name: header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Checks a 201 answer against what was sent: bucket, key, size, blake3 ETag and
/// its chunk count (`stored_chunks`).
pub fn check_put_reply(bucket: &str, reply: &PutReply, key: &str, data: &[u8]) -> Result<()> {
    let want = PutReply {
        bucket: bucket.to_string(),
        key: key.to_string(),
        size: data.len() as u64,
        etag: blake3_hex(data),
        chunks: stored_chunks(data.len() as u64),
    };
    ensure!(
        *reply == want,
        "upload of {key} answered {reply:?}, expected {want:?}"
    );
    Ok(())
}

/// A successful upload's answer (201).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct PutReply {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub chunks: usize,
}

/// One object of a listing.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub content_type: Option<String>,
    pub last_modified_ms: u64,
}

/// One listing page.
#[derive(Clone, Debug, Deserialize)]
pub struct ListPage {
    pub bucket: String,
    pub prefix: String,
    pub objects: Vec<ListedObject>,
    pub next_after: Option<String>,
}

/// A client of a gateway's public API, presenting [`API_KEY`].
#[derive(Clone, Debug)]
pub struct GatewayClient {
    pub http: reqwest::Client,
    pub addr: SocketAddr,
    pub base: String,
}

impl GatewayClient {
    /// A client for the gateway at `addr` (request timeout [`CLIENT_TIMEOUT`]).
    pub fn new(addr: SocketAddr) -> Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(CLIENT_TIMEOUT).build()?,
            addr,
            base: format!("http://{addr}"),
        })
    }

    /// URL of an object; the key is percent-encoded segment by segment, keeping `/`.
    pub fn object_url(&self, bucket: &str, key: &str) -> String {
        let key: Vec<String> = key.split('/').map(encode_segment).collect();
        format!("{}/v1/o/{bucket}/{}", self.base, key.join("/"))
    }

    /// A request on an object, with the API key.
    pub fn object(&self, method: Method, bucket: &str, key: &str) -> RequestBuilder {
        self.http
            .request(method, self.object_url(bucket, key))
            .bearer_auth(API_KEY)
    }

    /// Uploads `body` and expects 201 with a well-formed answer.
    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: impl Into<reqwest::Body>,
    ) -> Result<PutReply> {
        let resp = self
            .object(Method::PUT, bucket, key)
            .body(body)
            .send()
            .await?;
        expect_created(resp).await
    }

    /// The whole object, `None` on 404; any other status is an error.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Bytes>> {
        let resp = self.object(Method::GET, bucket, key).send().await?;
        match resp.status() {
            StatusCode::OK => Ok(Some(resp.bytes().await?)),
            StatusCode::NOT_FOUND => Ok(None),
            s => bail!("GET {bucket}/{key}: {s}: {}", resp.text().await?),
        }
    }

    /// One listing page.
    pub async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage> {
        let mut q = vec![("prefix", prefix.to_string()), ("limit", limit.to_string())];
        if let Some(a) = after {
            q.push(("after", a.to_string()));
        }
        let resp = self
            .http
            .get(format!("{}/v1/o/{bucket}", self.base))
            .bearer_auth(API_KEY)
            .query(&q)
            .send()
            .await?;
        let status = resp.status();
        ensure!(
            status == StatusCode::OK,
            "listing {bucket} prefix {prefix:?} after {after:?}: {status}: {}",
            resp.text().await?
        );
        Ok(resp.json().await?)
    }

    /// Every object under `prefix`, following `next_after` with pages of `limit`; checks
    /// that pages respect the limit and keys come in strictly increasing order.
    pub async fn list_all(
        &self,
        bucket: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<ListedObject>> {
        let mut all: Vec<ListedObject> = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..100_000 {
            let page = self
                .list_page(bucket, prefix, after.as_deref(), limit)
                .await?;
            ensure!(
                page.objects.len() <= limit,
                "page of {} objects over the limit {limit}",
                page.objects.len()
            );
            ensure!(
                page.bucket == bucket && page.prefix == prefix,
                "page echoes {page:?}"
            );
            for o in page.objects {
                ensure!(
                    o.key.starts_with(prefix),
                    "{} listed under {prefix:?}",
                    o.key
                );
                if let Some(last) = all.last() {
                    ensure!(
                        last.key < o.key,
                        "listing out of order: {} then {}",
                        last.key,
                        o.key
                    );
                }
                all.push(o);
            }
            match page.next_after {
                Some(next) => {
                    ensure!(
                        after.as_ref().is_none_or(|a| *a < next),
                        "next_after did not advance: {after:?} then {next:?}"
                    );
                    after = Some(next);
                }
                None => return Ok(all),
            }
        }
        bail!("listing did not end")
    }

    /// `/metrics` (no API key needed).
    pub async fn metrics(&self) -> Result<String> {
        let resp = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?;
        ensure!(
            resp.status() == StatusCode::OK,
            "metrics: {}",
            resp.status()
        );
        Ok(resp.text().await?)
    }
}

/// Checks a 201 upload answer and parses it.
pub async fn expect_created(resp: reqwest::Response) -> Result<PutReply> {
    let status = resp.status();
    let url = resp.url().to_string();
    if status != StatusCode::CREATED {
        bail!(
            "PUT {url}: {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    ensure!(
        ct.starts_with("application/json"),
        "PUT {url}: 201 with Content-Type {ct:?}"
    );
    Ok(resp.json().await?)
}

fn encode_segment(seg: &str) -> String {
    let mut out = String::with_capacity(seg.len());
    for b in seg.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The value of a Prometheus sample `name` (summed over its label sets), or `None` if
/// the text has no such sample.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match rest.chars().next() {
            Some(' ') => rest.trim(),
            Some('{') => rest.rsplit_once('}').map_or("", |(_, v)| v.trim()),
            _ => continue,
        };
        let v: f64 = value.split_whitespace().next()?.parse().ok()?;
        *found.get_or_insert(0.0) += v;
    }
    found
}
