//! Uploads: the body is cut into chunks as it streams in, each chunk hashed and written
//! to W of its N replicas while the next ones arrive; the object record is written last.
//! Memory per upload is bounded by [`UPLOAD_CHUNKS_IN_FLIGHT`] + 1 chunks. A body that
//! breaks off leaves no record, so no visible object.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use kura_cluster::record::{ChunkRef, ObjectRecord, INLINE_OBJECT_MAX};
use kura_cluster::ChunkId;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::error::{GatewayError, Result};
use crate::Gateway;

/// Chunks of one upload being replicated at once. 4: enough to keep every replica's
/// disk busy while the next chunk streams in, and at 4 MiB chunks an upload holds at most
/// ~20 MiB whatever its size.
pub const UPLOAD_CHUNKS_IN_FLIGHT: usize = 4;

/// Chunks up to this size are hashed on the async thread that received them: handing
/// a small object's 4 KiB to a blocking thread (a thread wake-up and a context switch
/// each way) cost more than hashing it, ~7 % of the gateway's CPU at 5k PUTs/s. 16 KiB
/// is a few µs of blake3 (plus an S3 PUT's MD5: ~30 µs), well within what a task may
/// run between two awaits.
pub const HASH_ON_TASK_MAX: usize = 16 * 1024;

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

/// What an upload stores besides its bytes.
#[derive(Clone, Debug, Default)]
pub struct NewObject {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Media type.
    pub content_type: Option<String>,
    /// User metadata.
    pub meta: BTreeMap<String, String>,
    /// Other content headers (see `ObjectRecord::headers`).
    pub headers: BTreeMap<String, String>,
    /// The S3 ETag, when the S3 API computed one.
    pub md5: Option<String>,
}

/// Digests of the body a caller needs besides blake3 (the S3 API's MD5 and checksums),
/// fed every byte in order, off the async threads.
pub trait BodyDigest: Send + 'static {
    /// Feeds the next bytes of the body.
    fn update(&mut self, data: &[u8]);
}

/// No extra digest (the native API).
impl BodyDigest for () {
    fn update(&mut self, _: &[u8]) {}
}

/// An upload's bytes, each chunk durable on W replicas, not yet visible as an object.
#[derive(Debug)]
pub struct StoredBody {
    /// Size in bytes.
    pub size: u64,
    /// blake3 hex of the whole body.
    pub etag: String,
    /// The chunks, in order.
    pub chunks: Vec<ChunkRef>,
    /// The whole body instead of chunks, for an object small enough (see
    /// [`store_object`]); nothing was written to the nodes yet.
    pub inline: Option<Bytes>,
}

/// Stores `body` as `bucket/key` (the native API: no extra digest).
pub async fn put_object(gw: &Arc<Gateway>, object: NewObject, body: Body) -> Result<PutReply> {
    let (stored, ()) = store_object(gw, body.into_data_stream(), ()).await?;
    commit(gw, object, stored).await
}

/// [`store_body`] for a whole object: one of at most `INLINE_OBJECT_MAX` bytes is kept
/// whole for its record ([`commit`] writes it there) instead of as a chunk, so it costs
/// one replicated write. Parts of an upload always become chunks: an object is assembled
/// from its parts' chunk lists.
pub async fn store_object<S, E, D>(gw: &Arc<Gateway>, body: S, digest: D) -> Result<(StoredBody, D)>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
    D: BodyDigest,
{
    let limit = gw.config.object_limit();
    unbroken(store(gw, body, digest, limit, Keep::Inline).await?)
}

/// A stored body that did not break off, or the client's error.
fn unbroken<D>(stored: (StoredBody, D, Option<GatewayError>)) -> Result<(StoredBody, D)> {
    match stored {
        (_, _, Some(e)) => Err(e),
        (stored, digest, None) => Ok((stored, digest)),
    }
}

/// What [`store`] does with a small body, or with a body that breaks off.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Chunks only; a body that breaks off is an error.
    Chunks,
    /// A whole body of at most `INLINE_OBJECT_MAX` bytes is returned inline.
    Inline,
    /// Chunks only; what arrived before a break is stored and returned with the error.
    Prefix,
}

/// Cuts `body` into chunks and stores each on W of its replicas while the next ones
/// arrive; `digest` sees every byte. Nothing is visible until [`commit`].
pub async fn store_body<S, E, D>(gw: &Arc<Gateway>, body: S, digest: D) -> Result<(StoredBody, D)>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
    D: BodyDigest,
{
    store_limited(gw, body, digest, gw.config.object_limit()).await
}

/// Like [`store_body`], for a body of at most `limit` bytes (a part of an upload).
pub async fn store_limited<S, E, D>(
    gw: &Arc<Gateway>,
    body: S,
    digest: D,
    limit: u64,
) -> Result<(StoredBody, D)>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
    D: BodyDigest,
{
    unbroken(store(gw, body, digest, limit, Keep::Chunks).await?)
}

/// Like [`store_body`] (at most `limit` bytes), but when the body breaks off, what
/// arrived before is still stored durably and returned, with the client's error (a
/// resumable upload acknowledges those bytes and continues after them).
pub async fn store_prefix<S, E>(
    gw: &Arc<Gateway>,
    body: S,
    limit: u64,
) -> Result<(StoredBody, Option<GatewayError>)>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (stored, (), broken) = store(gw, body, (), limit, Keep::Prefix).await?;
    Ok((stored, broken))
}

async fn store<S, E, D>(
    gw: &Arc<Gateway>,
    mut body: S,
    digest: D,
    limit: u64,
    keep: Keep,
) -> Result<(StoredBody, D, Option<GatewayError>)>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
    D: BodyDigest,
{
    let chunk_size = gw.config.chunk_size as usize;
    let mut broken = None;
    // Grown as bytes come: a small object's body never holds a whole chunk's buffer
    // (allocating and freeing 4 MiB per 4 KiB PUT churned the allocator); past
    // `INLINE_OBJECT_MAX` a chunk's worth is reserved at once, so no chunk is copied
    // on growing.
    let mut buf = BytesMut::new();
    let mut hashers = Some((blake3::Hasher::new(), digest));
    let mut refs: Vec<ChunkRef> = Vec::new();
    let mut in_flight: VecDeque<JoinHandle<Result<()>>> = VecDeque::new();
    let mut size: u64 = 0;
    let mut ended = false;
    let mut inline = None;
    while !ended {
        match body.next().await {
            Some(Ok(data)) => {
                size += data.len() as u64;
                if size > limit {
                    return Err(GatewayError::TooLarge { limit });
                }
                let past_inline = (buf.len() + data.len()) as u64 > INLINE_OBJECT_MAX;
                if past_inline && buf.capacity() < chunk_size {
                    buf.reserve(chunk_size - buf.len());
                }
                buf.extend_from_slice(&data);
            }
            Some(Err(e)) => {
                gw.cluster.metrics.uploads_aborted.inc();
                let e = GatewayError::ClientAborted(e.to_string());
                if keep != Keep::Prefix {
                    return Err(e);
                }
                broken = Some(e);
                ended = true;
            }
            None => ended = true,
        }
        while buf.len() >= chunk_size || (ended && !buf.is_empty()) {
            let take = buf.len().min(chunk_size);
            let chunk = buf.split_to(take).freeze();
            let (h, id) = hash_chunk(hashers.take(), chunk.clone()).await?;
            hashers = Some(h);
            let whole_and_small = ended && refs.is_empty() && buf.is_empty();
            if keep == Keep::Inline && whole_and_small && size <= INLINE_OBJECT_MAX {
                inline = Some(chunk);
                break;
            }
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
    let (whole, digest) = hashers.ok_or_else(|| GatewayError::Internal("hasher lost".into()))?;
    // Counted once durable, whichever API sent them (a PUT, an S3 part, a tus piece).
    gw.cluster.metrics.bytes_uploaded.inc_by(size);
    let stored = StoredBody {
        size,
        etag: whole.finalize().to_hex().to_string(),
        chunks: refs,
        inline,
    };
    Ok((stored, digest, broken))
}

/// Makes stored bytes visible as `object`: writes its record (W of N).
pub async fn commit(gw: &Arc<Gateway>, object: NewObject, stored: StoredBody) -> Result<PutReply> {
    let record = ObjectRecord {
        bucket: object.bucket,
        key: object.key,
        ts: gw.cluster.clock.now(),
        deleted: false,
        size: stored.size,
        content_type: object.content_type,
        etag: stored.etag,
        chunk_size: gw.config.chunk_size,
        chunks: stored.chunks,
        meta: object.meta,
        headers: object.headers,
        md5: object.md5,
        inline: stored.inline,
    };
    let reply = PutReply {
        bucket: record.bucket.clone(),
        key: record.key.clone(),
        size: record.size,
        etag: record.etag.clone(),
        chunks: record.chunks.len(),
    };
    gw.cluster.put_record(record).await?;
    gw.cluster.metrics.objects_put.inc();
    Ok(reply)
}

/// Hashes one chunk off the async threads: its id, and the running whole-object
/// hashes.
async fn hash_chunk<D: BodyDigest>(
    hashers: Option<(blake3::Hasher, D)>,
    chunk: Bytes,
) -> Result<((blake3::Hasher, D), ChunkId)> {
    let (mut whole, mut digest) =
        hashers.ok_or_else(|| GatewayError::Internal("hasher lost".into()))?;
    let small = chunk.len() <= HASH_ON_TASK_MAX;
    let hash = move || {
        whole.update(&chunk);
        digest.update(&chunk);
        ((whole, digest), ChunkId::of(&chunk))
    };
    if small {
        return Ok(hash());
    }
    Ok(tokio::task::spawn_blocking(hash).await?)
}

async fn wait(handle: Option<JoinHandle<Result<()>>>) -> Result<()> {
    match handle {
        Some(h) => h.await?,
        None => Ok(()),
    }
}
