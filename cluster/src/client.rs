//! The typed client for the storage-node protocol, used by gateways, peer nodes, tools
//! and tests. Every call carries the cluster secret.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{header, Method, RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::auth;
use crate::blocks::BlockReader;
use crate::names::encode_key_path;
use crate::range::ByteSpan;
use crate::record::{EncodedRecord, ObjectRecord, RecordPage};
use crate::{ChunkId, Error, Result};

mod batch;
mod frames;
mod reads;
pub use batch::{PutRecordsAnswer, RecordOutcome, RECORDS_PATH, RECORDS_TYPE};
pub use frames::{frame as frame_records, unframe as unframe_records, RECORD_ABSENT, RECORD_HELD};
pub use reads::{parse_answer as parse_record_reads, RecordName, RECORD_READS_PATH};

/// Connect timeout for node calls: loopback and LAN peers answer within milliseconds,
/// so a node that has not accepted in 2 s is treated as down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Query that asks a chunk GET for the proof format: the body is the chunk's block CVs
/// (32 bytes each, [`PROOF_CVS_HEADER`] of them) followed by the block-aligned bytes that
/// cover the requested range, starting at offset [`PROOF_START_HEADER`] of a chunk of
/// [`PROOF_SIZE_HEADER`] bytes. It lets the caller verify a range end to end.
pub const PROOF_QUERY: &str = "proof=true";
/// Header: total chunk size, in a proof answer.
pub const PROOF_SIZE_HEADER: &str = "x-kura-chunk-size";
/// Header: chunk offset of the first data byte, in a proof answer.
pub const PROOF_START_HEADER: &str = "x-kura-span-start";
/// Header: number of block CVs, in a proof answer.
pub const PROOF_CVS_HEADER: &str = "x-kura-block-cvs";

/// One stored chunk as listed by a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    /// Chunk id.
    pub id: ChunkId,
    /// Size in bytes.
    pub size: u64,
}

/// One page of a chunk listing.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChunkPage {
    /// Chunks in id order.
    pub chunks: Vec<ChunkInfo>,
    /// Pass as `after` for the next page; `None` at the end.
    pub next_after: Option<ChunkId>,
}

/// A node's answer to a chunk PUT.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PutChunkReply {
    /// The chunk id.
    pub id: ChunkId,
    /// Its size.
    pub size: u64,
    /// False when the node already held a healthy copy (dedup).
    pub created: bool,
}

/// A node's answer to a record PUT.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PutRecordReply {
    /// Whether the given record won and is now stored.
    pub applied: bool,
    /// The record the node holds after the call: always from `PUT /v1/records/…`; from a
    /// batch only when it is not the one offered (`applied` false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Box<ObjectRecord>>,
}

/// The node route that says where its store is ([`NodeClient::store_info`]).
pub const STORE_PATH: &str = "/v1/store";

/// Capacity and contents of a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node id.
    pub node_id: String,
    /// Zone.
    pub zone: String,
    /// Number of chunks held.
    pub chunks: u64,
    /// Bytes of chunk data held.
    pub bytes_used: u64,
    /// Free bytes on the data directory's filesystem.
    pub bytes_free: u64,
    /// Total bytes of that filesystem.
    pub bytes_total: u64,
    /// Chunks moved to quarantine since the node was created.
    pub quarantined: u64,
}

/// Result of a scrub pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubReport {
    /// Chunks re-hashed.
    pub checked: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Chunks found corrupt (and quarantined).
    pub corrupt: u64,
    /// Orphan chunk files removed after the pass (see the node's `orphans` module).
    #[serde(default)]
    pub orphans: u64,
}

/// Client for one storage node.
#[derive(Clone, Debug)]
pub struct NodeClient {
    base: String,
    secret: String,
    http: reqwest::Client,
}

impl NodeClient {
    /// A client for the node at `base` (e.g. `http://127.0.0.1:7001`).
    pub fn new(base: &str, secret: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Self::with_http(base, secret, http))
    }

    /// Same, sharing an existing connection pool.
    pub fn with_http(base: &str, secret: &str, http: reqwest::Client) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            secret: secret.to_string(),
            http,
        }
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base, path))
            .header(auth::AUTHORIZATION, auth::bearer(&self.secret))
    }

    /// Stores a chunk; the node verifies `data` hashes to `id`.
    pub async fn put_chunk(&self, id: &ChunkId, data: Bytes) -> Result<PutChunkReply> {
        let resp = self
            .req(Method::PUT, &format!("/v1/chunks/{id}"))
            .body(data)
            .send()
            .await?;
        Ok(ok(resp).await?.json().await?)
    }

    /// Reads a chunk, or a span of it. The node has verified the bytes; this checks a
    /// whole-chunk read again against `id` (a span cannot be checked without the
    /// chunk's block tree, which stays on the node).
    pub async fn get_chunk(&self, id: &ChunkId, span: Option<ByteSpan>) -> Result<Bytes> {
        let mut req = self.req(Method::GET, &format!("/v1/chunks/{id}"));
        if let Some(s) = span {
            req = req.header(header::RANGE, format!("bytes={}-{}", s.start, s.end - 1));
        }
        let body = ok(req.send().await?).await?.bytes().await?;
        if span.is_none() && ChunkId::of(&body) != *id {
            return Err(Error::Corrupt(id.to_hex()));
        }
        Ok(body)
    }

    /// Reads a whole chunk and verifies it here against `id`, the node sending it without
    /// hashing it first (`unchecked=true`): each byte is hashed once, here. On
    /// [`Error::Corrupt`], tell the node with [`NodeClient::report_corrupt`].
    pub async fn get_chunk_end_to_end(&self, id: &ChunkId) -> Result<Bytes> {
        let req = self.req(Method::GET, &format!("/v1/chunks/{id}?unchecked=true"));
        let body = ok(req.send().await?).await?.bytes().await?;
        if ChunkId::of(&body) != *id {
            return Err(Error::Corrupt(id.to_hex()));
        }
        Ok(body)
    }

    /// Tells the node that bytes it served for `id` failed verification: it re-hashes its
    /// copy and quarantines it if bad. Returns whether it found the copy corrupt.
    pub async fn report_corrupt(&self, id: &ChunkId) -> Result<bool> {
        #[derive(Deserialize)]
        struct Verdict {
            corrupt: bool,
        }
        let resp = self
            .req(Method::POST, &format!("/v1/chunks/{id}/verify"))
            .send()
            .await?;
        Ok(ok(resp).await?.json::<Verdict>().await?.corrupt)
    }

    /// Reads `span` of a chunk and verifies it here against `id`, end to end, reading
    /// only the blocks that cover it (the proof format, see [`PROOF_QUERY`]). The node
    /// does not hash them first (the check here is the one that counts); on
    /// [`Error::Corrupt`], tell it with [`NodeClient::report_corrupt`].
    pub async fn get_chunk_verified(&self, id: &ChunkId, span: ByteSpan) -> Result<Bytes> {
        self.open_blocks(id, span).await?.collect().await
    }

    /// Opens `span` of a chunk in the proof format (the node does not hash it) and
    /// returns once the chunk's block CVs are proven: the bytes are then read one
    /// verified block at a time ([`BlockReader::next_block`]). On [`Error::Corrupt`],
    /// tell the node with [`NodeClient::report_corrupt`].
    pub async fn open_blocks(&self, id: &ChunkId, span: ByteSpan) -> Result<BlockReader> {
        let resp = self
            .req(
                Method::GET,
                &format!("/v1/chunks/{id}?{PROOF_QUERY}&unchecked=true"),
            )
            .header(
                header::RANGE,
                format!("bytes={}-{}", span.start, span.end.saturating_sub(1)),
            )
            .send()
            .await?;
        BlockReader::open(*id, span, ok(resp).await?).await
    }

    /// Size of a chunk, or `None` if the node does not hold it.
    pub async fn head_chunk(&self, id: &ChunkId) -> Result<Option<u64>> {
        let resp = self
            .req(Method::HEAD, &format!("/v1/chunks/{id}"))
            .send()
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        // Not `Response::content_length`: a HEAD body is empty, the header is the size.
        let size = ok(resp)
            .await?
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(size)
    }

    /// Deletes a chunk; `false` if it was not there.
    pub async fn delete_chunk(&self, id: &ChunkId) -> Result<bool> {
        let resp = self
            .req(Method::DELETE, &format!("/v1/chunks/{id}"))
            .send()
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        ok(resp).await?;
        Ok(true)
    }

    /// Lists chunks in id order after `after`.
    pub async fn list_chunks(&self, after: Option<&ChunkId>, limit: usize) -> Result<ChunkPage> {
        let mut q = vec![("limit", limit.to_string())];
        if let Some(a) = after {
            q.push(("after", a.to_hex()));
        }
        let resp = self.req(Method::GET, "/v1/chunks").query(&q).send().await?;
        Ok(ok(resp).await?.json().await?)
    }

    /// Offers a record; the node keeps it if it wins last-writer-wins.
    pub async fn put_record(&self, record: &ObjectRecord) -> Result<PutRecordReply> {
        let path = record_path(&record.bucket, &record.key);
        let resp = self.req(Method::PUT, &path).json(record).send().await?;
        Ok(ok(resp).await?.json().await?)
    }

    /// The node's record for `bucket/key` (tombstones included), or `None`.
    pub async fn get_record(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>> {
        match self.get_record_encoded(bucket, key).await? {
            Some(r) => Ok(Some(r.decode()?)),
            None => Ok(None),
        }
    }

    /// The same, with only its timestamp decoded (see [`EncodedRecord`]).
    pub async fn get_record_encoded(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<EncodedRecord>> {
        let resp = self
            .req(Method::GET, &record_path(bucket, key))
            .send()
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let json = ok(resp).await?.bytes().await?;
        Ok(Some(EncodedRecord::from_json(&json)?))
    }

    /// Lists records of `bucket` whose key starts with `prefix`, after key `after`;
    /// with `summary`, without their chunk lists (never write a summary back).
    pub async fn list_records(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        tombstones: bool,
        summary: bool,
    ) -> Result<RecordPage> {
        let mut q = vec![
            ("prefix", prefix.to_string()),
            ("limit", limit.to_string()),
            ("tombstones", tombstones.to_string()),
            ("summary", summary.to_string()),
        ];
        if let Some(a) = after {
            q.push(("after", a.to_string()));
        }
        let resp = self
            .req(Method::GET, &format!("/v1/records/{bucket}"))
            .query(&q)
            .send()
            .await?;
        Ok(ok(resp).await?.json().await?)
    }

    /// Capacity and counts.
    pub async fn status(&self) -> Result<NodeStatus> {
        let resp = self.req(Method::GET, "/v1/status").send().await?;
        Ok(ok(resp).await?.json().await?)
    }

    /// Where the node's store is (see [`crate::layout`]): for a process on the same
    /// machine to read its chunk files directly.
    pub async fn store_info(&self) -> Result<crate::layout::StoreInfo> {
        let resp = self.req(Method::GET, STORE_PATH).send().await?;
        Ok(ok(resp).await?.json().await?)
    }

    /// Every record the node holds (all buckets, tombstones included), a page at a time;
    /// pass the page's `next_after` to continue.
    pub async fn scan_records(&self, after: Option<&str>, limit: usize) -> Result<RecordPage> {
        let mut q = vec![("limit", limit.to_string())];
        if let Some(a) = after {
            q.push(("after", a.to_string()));
        }
        let resp = self
            .req(Method::GET, "/v1/records")
            .query(&q)
            .send()
            .await?;
        Ok(ok(resp).await?.json().await?)
    }

    /// Runs a garbage-collection pass on the node now; returns its report as JSON.
    pub async fn run_gc(&self) -> Result<serde_json::Value> {
        let resp = self.req(Method::POST, "/v1/gc/run").send().await?;
        Ok(ok(resp).await?.json().await?)
    }

    /// Pins the node's copy of `id` until `until_ms` (hot content); `false` if the node
    /// does not hold it.
    pub async fn pin_chunk(&self, id: &ChunkId, until_ms: u64) -> Result<bool> {
        let resp = self
            .req(Method::POST, &format!("/v1/chunks/{id}/pin"))
            .json(&serde_json::json!({ "until_ms": until_ms }))
            .send()
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        ok(resp).await?;
        Ok(true)
    }

    /// Restarts the GC grace of the listed copies the node holds (before writing a
    /// record that names chunks already stored: a copy, a completed multipart upload).
    pub async fn touch_chunks(&self, ids: &[ChunkId]) -> Result<TouchReply> {
        let req = TouchRequest {
            ids: ids.iter().map(ChunkId::to_hex).collect(),
        };
        let resp = self
            .req(Method::POST, "/v1/chunks/touch")
            .json(&req)
            .send()
            .await?;
        Ok(ok(resp).await?.json().await?)
    }

    /// The node's stored cluster map.
    pub async fn cluster_map(&self) -> Result<crate::map::ClusterMap> {
        let resp = self.req(Method::GET, "/v1/cluster-map").send().await?;
        Ok(ok(resp).await?.json().await?)
    }

    /// Offers a cluster map; returns whether the node took it (its epoch was higher).
    pub async fn offer_cluster_map(&self, map: &crate::map::ClusterMap) -> Result<bool> {
        let resp = self
            .req(Method::PUT, "/v1/cluster-map")
            .json(map)
            .send()
            .await?;
        let v: serde_json::Value = ok(resp).await?.json().await?;
        Ok(v["applied"].as_bool().unwrap_or(false))
    }

    /// The node's rebalance progress (JSON as the node reports it).
    pub async fn rebalance(&self) -> Result<serde_json::Value> {
        let resp = self.req(Method::GET, "/v1/rebalance").send().await?;
        Ok(ok(resp).await?.json().await?)
    }

    /// Sets the node's rebalance settings (`{paused, bytes_per_sec}`).
    pub async fn set_rebalance(&self, settings: &serde_json::Value) -> Result<serde_json::Value> {
        let resp = self
            .req(Method::PUT, "/v1/rebalance")
            .json(settings)
            .send()
            .await?;
        Ok(ok(resp).await?.json().await?)
    }

    /// Starts a rebalance pass now; a repair pass if `repair`.
    pub async fn run_rebalance(&self, repair: bool) -> Result<()> {
        let resp = self
            .req(Method::POST, "/v1/rebalance/run")
            .json(&serde_json::json!({ "repair": repair }))
            .send()
            .await?;
        ok(resp).await?;
        Ok(())
    }

    /// Asks the node to catch a returning peer up with what it stored since `since_ms`
    /// (see the storage node's `catchup` module). Answered at once; the work runs in the
    /// background.
    pub async fn catch_up(&self, since_ms: u64) -> Result<()> {
        let resp = self
            .req(Method::POST, "/v1/catchup")
            .json(&serde_json::json!({ "since_ms": since_ms }))
            .send()
            .await?;
        ok(resp).await?;
        Ok(())
    }

    /// Runs a full, unthrottled scrub pass now and returns what it found.
    pub async fn scrub_now(&self) -> Result<ScrubReport> {
        let resp = self.req(Method::POST, "/v1/scrub").send().await?;
        Ok(ok(resp).await?.json().await?)
    }
}

/// Taken off the time a catch-up starts from (see [`NodeClient::catch_up`]): nodes key
/// their write logs by their own clocks, so a time measured on another machine is moved
/// back to cover clock skew (NTP keeps it to milliseconds; a minute also covers a badly
/// synced host) at the cost of re-checking a minute of writes.
pub const CATCH_UP_MARGIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Most chunk ids one touch call names (a 4 GiB stretch of 4 MiB chunks).
pub const MAX_TOUCH_IDS: usize = 1024;

/// `POST /v1/chunks/touch` body.
#[derive(Debug, Serialize, Deserialize)]
pub struct TouchRequest {
    /// Chunk ids, hex.
    pub ids: Vec<String>,
}

/// `POST /v1/chunks/touch` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct TouchReply {
    /// Copies held and touched.
    pub touched: usize,
    /// Ids this node holds no copy of.
    pub missing: Vec<String>,
}

/// Path of a record: the key is percent-encoded segment by segment, keeping `/`.
fn record_path(bucket: &str, key: &str) -> String {
    format!("/v1/records/{bucket}/{}", encode_key_path(key))
}

async fn ok(resp: Response) -> Result<Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let url = resp.url().to_string();
    let body = resp.text().await.unwrap_or_default();
    let code = crate::error::NodeErrorCode::of_body(&body);
    Err(Error::Status {
        url,
        status,
        code,
        body,
    })
}
