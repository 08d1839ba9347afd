//! Uploads: the body is cut into chunks as it streams in, each chunk hashed and written
//! to W of its N replicas while the next ones arrive; the object record is written last.
//! Memory per upload is bounded by [`UPLOAD_CHUNKS_IN_FLIGHT`] + 1 chunks. A body that
//! breaks off leaves no record, so no visible object.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use kura_cluster::record::{ChunkRef, ObjectRecord};
use kura_cluster::ChunkId;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::error::{GatewayError, Result};
use crate::Gateway;

/// Chunks of one upload being replicated at once. 4: enough to keep every replica's
/// disk busy while the next chunk streams in, and at 4 MiB chunks an upload holds at most
/// ~20 MiB whatever its size.
pub const UPLOAD_CHUNKS_IN_FLIGHT: usize = 4;

/// What a successful upload answers (201).
#[derive(Debug, Serialize)]
pub struct PutReply {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// blake3 hex of the content.
    pub etag: String,
    /// Number of chunks.
    pub chunks: usize,
}

/// Stores `body` as `bucket/key`.
pub async fn put_object(
    gw: &Arc<Gateway>,
    bucket: &str,
    key: &str,
    content_type: Option<String>,
    meta: BTreeMap<String, String>,
    body: Body,
) -> Result<PutReply> {
    let chunk_size = gw.config.chunk_size as usize;
    let limit = gw.config.max_object_bytes;
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::with_capacity(chunk_size);
    let mut hasher = Some(blake3::Hasher::new());
    let mut refs: Vec<ChunkRef> = Vec::new();
    let mut in_flight: VecDeque<JoinHandle<Result<()>>> = VecDeque::new();
    let mut size: u64 = 0;
    let mut ended = false;
    while !ended {
        match stream.next().await {
            Some(Ok(data)) => {
                size += data.len() as u64;
                if size > limit {
                    return Err(GatewayError::TooLarge { limit });
                }
                buf.extend_from_slice(&data);
            }
            Some(Err(e)) => {
                gw.cluster.metrics.uploads_aborted.inc();
                return Err(GatewayError::ClientAborted(e.to_string()));
            }
            None => ended = true,
        }
        while buf.len() >= chunk_size || (ended && !buf.is_empty()) {
            let take = buf.len().min(chunk_size);
            let chunk = buf.split_to(take).freeze();
            let (h, id) = hash_chunk(hasher.take(), chunk.clone()).await?;
            hasher = Some(h);
            refs.push(ChunkRef {
                id,
                size: chunk.len() as u64,
            });
            if in_flight.len() >= UPLOAD_CHUNKS_IN_FLIGHT {
                wait(in_flight.pop_front()).await?;
            }
            let gw2 = gw.clone();
            in_flight.push_back(tokio::spawn(async move {
                gw2.cluster.put_chunk(id, chunk).await
            }));
        }
    }
    while let Some(h) = in_flight.pop_front() {
        wait(Some(h)).await?;
    }
    let etag = hasher
        .map(|h| h.finalize().to_hex().to_string())
        .unwrap_or_default();
    let record = ObjectRecord {
        bucket: bucket.to_string(),
        key: key.to_string(),
        ts: gw.cluster.clock.now(),
        deleted: false,
        size,
        content_type,
        etag: etag.clone(),
        chunk_size: gw.config.chunk_size,
        chunks: refs,
        meta,
    };
    let chunks = record.chunks.len();
    gw.cluster.put_record(record).await?;
    gw.cluster.metrics.objects_put.inc();
    gw.cluster.metrics.bytes_uploaded.inc_by(size);
    Ok(PutReply {
        bucket: bucket.to_string(),
        key: key.to_string(),
        size,
        etag,
        chunks,
    })
}

/// Hashes one chunk off the async threads: its id, and the running whole-object hash.
async fn hash_chunk(
    hasher: Option<blake3::Hasher>,
    chunk: Bytes,
) -> Result<(blake3::Hasher, ChunkId)> {
    let mut h = hasher.unwrap_or_default();
    tokio::task::spawn_blocking(move || {
        h.update(&chunk);
        (h, ChunkId::of(&chunk))
    })
    .await
    .map_err(|e| GatewayError::Internal(e.to_string()))
}

async fn wait(handle: Option<JoinHandle<Result<()>>>) -> Result<()> {
    match handle {
        Some(h) => h.await.map_err(|e| GatewayError::Internal(e.to_string()))?,
        None => Ok(()),
    }
}
