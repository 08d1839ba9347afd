//! The node's internal HTTP API. Everything under `/v1` needs the cluster secret;
//! `/health` and `/metrics` are open.
//!
//! | call | does |
//! | --- | --- |
//! | `PUT /v1/chunks/{id}` | store a chunk (body hashed against `id`) → 201, or 200 if held |
//! | `GET /v1/chunks/{id}` | read it, whole or one `Range` (206), verified |
//! | `GET /v1/chunks/{id}?proof=true` | block CVs + block-aligned bytes, for the caller to verify |
//! | `GET /v1/chunks/{id}?unchecked=true` | whole (or with `proof=true`) but not hashed here: for a caller that verifies itself |
//! | `HEAD /v1/chunks/{id}` | its size |
//! | `DELETE /v1/chunks/{id}` | delete it → 204 |
//! | `GET /v1/chunks?after=&limit=` | list ids in order |
//! | `PUT /v1/records/{bucket}/{key}` | offer a record (last writer wins) |
//! | `POST /v1/records [record, ...]` | offer several records in one synced write → `{results}` in order |
//! | `GET /v1/records/{bucket}/{key}` | the record held, tombstones included |
//! | `POST /v1/record-reads [{bucket, key}, ...]` | the records held for several names, in one pass → each as stored (timestamp header + JSON) or absent, in order, framed in binary |
//! | `GET /v1/records/{bucket}?prefix=&after=&limit=&tombstones=` | list records |
//! | `GET /v1/status` | capacity and counts |
//! | `POST /v1/scrub` | run a full scrub pass now |
//! | `GET`/`PUT /v1/cluster-map` | the stored cluster map (higher epoch wins) |
//! | `GET /v1/rebalance` | progress of the current or last rebalance/repair pass |
//! | `PUT /v1/rebalance {paused, bytes_per_sec}` | pause, resume, throttle (kept across restarts) |
//! | `POST /v1/rebalance/run {repair}` | start a pass now (a repair pass if asked) |
//! | `GET /v1/records?after=&limit=` | every record, all buckets, in database order |
//! | `POST /v1/chunks/{id}/pin {until_ms}` | keeps an extra (hot) copy from being handed off |
//! | `POST /v1/chunks/touch {ids}` | restarts the GC grace of the copies held (a new reference is about to be written) → `{touched, missing}` |
//! | `POST /v1/chunks/{id}/verify` | re-hash this copy now (a reader found it bad); quarantines it if so → `{"corrupt"}` |
//! | `POST /v1/gc/run` | a garbage-collection pass now; returns what it freed |

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use kura_cluster::client::{
    ChunkPage, PutChunkReply, PROOF_CVS_HEADER, PROOF_SIZE_HEADER, PROOF_START_HEADER,
};
use kura_cluster::map::ClusterMap;
use kura_cluster::observe;
use kura_cluster::range::{single_span, ByteSpan};
use kura_cluster::ChunkId;
use serde::Deserialize;

use crate::chunks::{PutOutcome, SpanData, MAX_CHUNK_BYTES};
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::scrub;

mod lifetime;
mod records;
pub use records::{MAX_RECORD_BATCH, MAX_RECORD_READS};

pub use kura_cluster::record::MAX_RECORD_BYTES;

/// Default page size of listings when the caller gives none.
pub const DEFAULT_LIST_LIMIT: usize = 1000;

mod routes;
pub use routes::{router, routes};

// ---- Middleware ----

async fn require_secret(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    if !node.peer_auth.admits_headers(req.headers()) {
        return NodeError::Unauthorized.into_response();
    }
    next.run(req).await
}

// ---- Open endpoints ----

/// Query of `GET /v1/identity`.
#[derive(serde::Deserialize)]
struct IdentityQuery {
    nonce: String,
}

/// Longest nonce a caller may send (a proof is over it).
const MAX_NONCE_LEN: usize = 128;

/// `GET /v1/identity?nonce=N` (no credential): this node's id and its proof that it holds
/// the cluster secret, so a gateway adding it can check it before sending the secret.
async fn identity(State(node): State<Arc<Node>>, Query(q): Query<IdentityQuery>) -> Response {
    if q.nonce.is_empty() || q.nonce.len() > MAX_NONCE_LEN {
        return NodeError::BadRequest(format!("nonce must be 1..={MAX_NONCE_LEN} bytes"))
            .into_response();
    }
    let proof = kura_cluster::auth::identity_proof(
        node.config.cluster_secret.expose(),
        &q.nonce,
        &node.config.node_id,
    );
    Json(serde_json::json!({ "node_id": node.config.node_id, "proof": proof })).into_response()
}

/// Where the node's store is: a gateway on the same machine reads its chunk files
/// directly (see `kura_cluster::peers::local`).
async fn store_info(State(node): State<Arc<Node>>) -> Response {
    Json(&node.store).into_response()
}

async fn health(State(node): State<Arc<Node>>) -> Response {
    Json(serde_json::json!({ "status": "ok", "node_id": node.config.node_id })).into_response()
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    node.refresh_gauges();
    observe::render(&node.registry)
}

// ---- Chunks ----

pub(crate) fn parse_id(raw: &str) -> Result<ChunkId> {
    raw.parse::<ChunkId>().map_err(NodeError::from)
}

/// Runs blocking store work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await?
}

/// Collects a body of at most `limit` bytes; 413 beyond it, checked against
/// `Content-Length` first so an oversize upload is refused before it is read.
pub(crate) async fn read_body(headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(NodeError::TooLarge { limit });
    }
    match Limited::new(body, limit as usize).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(NodeError::TooLarge { limit }),
        Err(e) => Err(NodeError::BadRequest(format!("reading body: {e}"))),
    }
}

async fn put_chunk(
    State(node): State<Arc<Node>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let id = parse_id(&raw)?;
    let data = read_body(&headers, body, MAX_CHUNK_BYTES).await?;
    let size = data.len() as u64;
    let n = node.clone();
    let outcome = blocking(move || n.chunks.put(&id, &data)).await?;
    let status = match outcome {
        PutOutcome::Created => {
            node.metrics.chunks_written.inc();
            node.metrics.chunk_bytes_written.inc_by(size);
            StatusCode::CREATED
        }
        PutOutcome::Existed => StatusCode::OK,
    };
    let reply = PutChunkReply {
        id,
        size,
        created: outcome == PutOutcome::Created,
    };
    Ok((status, Json(reply)).into_response())
}

#[derive(Deserialize)]
struct GetChunkQuery {
    /// Answer in the proof format (see [`kura_cluster::client::PROOF_QUERY`]).
    #[serde(default)]
    proof: bool,
    /// The caller verifies every byte itself (a whole chunk against its id, or a
    /// proof), so the node does not hash them too; see `ChunkStore::read_unchecked`.
    #[serde(default)]
    unchecked: bool,
}

async fn get_chunk(
    State(node): State<Arc<Node>>,
    Path(raw): Path<String>,
    Query(q): Query<GetChunkQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let id = parse_id(&raw)?;
    let range = match headers.get(header::RANGE) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| NodeError::MalformedRange {
                    why: "not ASCII".into(),
                    size: None,
                })?
                .to_string(),
        ),
        None => None,
    };
    let n = node.clone();
    let read = blocking(move || {
        let entry = n.chunks.entry(&id)?.ok_or(NodeError::NotFound)?;
        let span = range
            .map(|r| single_span(&r, entry.size))
            .transpose()
            .map_err(|e| match e {
                kura_cluster::Error::MalformedRange(why) => NodeError::MalformedRange {
                    why,
                    size: Some(entry.size),
                },
                other => other.into(),
            })?;
        let whole = ByteSpan {
            start: 0,
            end: entry.size,
        };
        let body = if q.proof {
            let (cvs, start, data) =
                n.chunks
                    .read_with_proof(&id, &entry, span.unwrap_or(whole), !q.unchecked)?;
            ChunkBody::Proof { cvs, start, data }
        } else if q.unchecked {
            // Without a proof, only a whole chunk can be verified by the caller.
            if span.is_some() {
                return Err(NodeError::BadRequest(
                    "unchecked reads are of whole chunks or with proof=true".into(),
                ));
            }
            ChunkBody::Plain(n.chunks.read_unchecked(&id, &entry, whole)?)
        } else {
            ChunkBody::Plain(n.chunks.read(&id, &entry, span)?)
        };
        Ok((entry.size, span, body))
    })
    .await;
    let (size, span, body) = match read {
        Ok(r) => r,
        Err(e @ NodeError::Corrupt(_)) => {
            node.metrics.verify_failures.inc();
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let mut resp = match body {
        ChunkBody::Plain(bytes) => {
            node.metrics.chunk_bytes_read.inc_by(bytes.len() as u64);
            let mut resp = Response::new(Body::from(bytes));
            if let Some(s) = span {
                *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
                set_header(
                    resp.headers_mut(),
                    header::CONTENT_RANGE,
                    &s.content_range(size),
                );
            }
            resp
        }
        ChunkBody::Proof { cvs, start, data } => {
            node.metrics.chunk_bytes_read.inc_by(data.len());
            let mut proof = Vec::with_capacity(cvs.len() * 32);
            for cv in &cvs {
                proof.extend_from_slice(cv);
            }
            // The CVs, then the data (not copied behind them; a file span is read as
            // it is sent).
            let len = proof.len() as u64 + data.len();
            let cvs_piece = futures::stream::once(async { Ok(Bytes::from(proof)) });
            let body = match data {
                SpanData::Memory(bytes) => {
                    let rest = futures::stream::once(async { Ok(bytes) });
                    Body::from_stream(cvs_piece.chain(rest))
                }
                SpanData::File(span) => Body::from_stream(cvs_piece.chain(span.into_stream())),
            };
            let mut resp = Response::new(body);
            let h = resp.headers_mut();
            set_header(h, header::CONTENT_LENGTH, &len.to_string());
            set_header(
                h,
                header::HeaderName::from_static(PROOF_SIZE_HEADER),
                &size.to_string(),
            );
            set_header(
                h,
                header::HeaderName::from_static(PROOF_START_HEADER),
                &start.to_string(),
            );
            set_header(
                h,
                header::HeaderName::from_static(PROOF_CVS_HEADER),
                &cvs.len().to_string(),
            );
            resp
        }
    };
    chunk_headers(resp.headers_mut(), &id);
    Ok(resp)
}

/// What a chunk GET sends.
enum ChunkBody {
    /// The requested bytes.
    Plain(Bytes),
    /// Block CVs followed by the block-aligned bytes starting at `start`.
    Proof {
        cvs: Vec<kura_cluster::verify::BlockCv>,
        start: u64,
        data: SpanData,
    },
}

async fn head_chunk(State(node): State<Arc<Node>>, Path(raw): Path<String>) -> Result<Response> {
    let id = parse_id(&raw)?;
    let n = node.clone();
    let entry = blocking(move || n.chunks.entry(&id)?.ok_or(NodeError::NotFound)).await?;
    let mut resp = Response::new(Body::empty());
    chunk_headers(resp.headers_mut(), &id);
    set_header(
        resp.headers_mut(),
        header::CONTENT_LENGTH,
        &entry.size.to_string(),
    );
    Ok(resp)
}

async fn delete_chunk(State(node): State<Arc<Node>>, Path(raw): Path<String>) -> Result<Response> {
    let id = parse_id(&raw)?;
    let n = node.clone();
    if blocking(move || n.chunks.delete(&id)).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(NodeError::NotFound)
    }
}

#[derive(Deserialize)]
struct ListChunksQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn list_chunks(
    State(node): State<Arc<Node>>,
    Query(q): Query<ListChunksQuery>,
) -> Result<Json<ChunkPage>> {
    let after = q.after.as_deref().map(parse_id).transpose()?;
    let limit = q
        .limit
        .unwrap_or(DEFAULT_LIST_LIMIT)
        .clamp(1, DEFAULT_LIST_LIMIT);
    let n = node.clone();
    let chunks = blocking(move || n.chunks.list(after.as_ref(), limit)).await?;
    let next_after = (chunks.len() >= limit)
        .then(|| chunks.last().map(|c| c.id))
        .flatten();
    Ok(Json(ChunkPage { chunks, next_after }))
}

fn chunk_headers(h: &mut HeaderMap, id: &ChunkId) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    set_header(h, header::ETAG, &format!("\"{id}\""));
}

fn set_header(h: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

// ---- Node ----

async fn status(State(node): State<Arc<Node>>) -> Response {
    Json(node.status()).into_response()
}

async fn scrub_now(State(node): State<Arc<Node>>) -> Result<Response> {
    let report = scrub::run_pass(&node, None).await?;
    Ok(Json(report).into_response())
}

async fn get_map(State(node): State<Arc<Node>>) -> Result<Json<ClusterMap>> {
    let n = node.clone();
    Ok(Json(blocking(move || n.cluster_map()).await?))
}

async fn put_map(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let body = read_body(&headers, body, MAX_RECORD_BYTES).await?;
    let map: ClusterMap = serde_json::from_slice(&body)
        .map_err(|e| NodeError::BadRequest(format!("cluster map JSON: {e}")))?;
    let n = node.clone();
    let applied = blocking(move || n.offer_cluster_map(&map)).await?;
    Ok(Json(serde_json::json!({ "applied": applied })).into_response())
}

// ---- Rebalance ----

async fn rebalance_status(State(node): State<Arc<Node>>) -> Json<crate::rebalance::Progress> {
    Json(node.rebalancer.progress())
}

async fn rebalance_settings(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<crate::rebalance::Progress>> {
    let body = read_body(&headers, body, 64 * 1024).await?;
    let s: crate::rebalance::Settings = serde_json::from_slice(&body)
        .map_err(|e| NodeError::BadRequest(format!("rebalance settings JSON: {e}")))?;
    let n = node.clone();
    blocking(move || n.set_rebalance_settings(s)).await?;
    Ok(Json(node.rebalancer.progress()))
}

#[derive(Deserialize, Default)]
struct RunRequest {
    #[serde(default)]
    repair: bool,
}

async fn rebalance_run(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let body = read_body(&headers, body, 64 * 1024).await?;
    let req: RunRequest = if body.is_empty() {
        RunRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| NodeError::BadRequest(format!("JSON: {e}")))?
    };
    node.rebalancer.request(req.repair);
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `POST /v1/catchup {since_ms}`: a peer is back; walk what was stored since then.
async fn catch_up(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let body = read_body(&headers, body, 64 * 1024).await?;
    let req: crate::catchup::CatchUpRequest =
        serde_json::from_slice(&body).map_err(|e| NodeError::BadRequest(format!("JSON: {e}")))?;
    node.catchup.request(req.since_ms);
    Ok(StatusCode::ACCEPTED.into_response())
}

// ---- Records scan and GC ----

async fn gc_run(State(node): State<Arc<Node>>) -> Result<Response> {
    let grace = std::time::Duration::from_secs(node.config.gc_grace_secs);
    let report = crate::gc::run_pass(&node, grace).await?;
    Ok(Json(report).into_response())
}

/// A reader that verified bytes of an unchecked read and found them bad reports it here:
/// the copy is re-hashed and quarantined if it is bad (404 if not held).
async fn verify_chunk(State(node): State<Arc<Node>>, Path(raw): Path<String>) -> Result<Response> {
    let id = parse_id(&raw)?;
    let n = node.clone();
    let corrupt = match blocking(move || n.chunks.verify(&id)).await {
        Ok(Some(_)) => false,
        Ok(None) => return Err(NodeError::NotFound),
        Err(NodeError::Corrupt(_)) => {
            node.metrics.verify_failures.inc();
            true
        }
        Err(e) => return Err(e),
    };
    Ok(Json(serde_json::json!({ "corrupt": corrupt })).into_response())
}
