//! Uploads in parts, kept in the cluster (never in a gateway's memory), so any gateway
//! can continue or complete an upload another one started, after any restart.
//!
//! State lives in the system bucket `_uploads`, as ordinary replicated records:
//! - `up/{bucket}/{upload id}`: the upload: target key (header `kura-upload-key`),
//!   content type, user metadata and content headers of the object to be; its timestamp
//!   is when it was started. Deleted (tombstoned) when completed, aborted or expired.
//! - `pt/{upload id}/{part number, 5 digits}`: one part: its chunks (stored W of N as
//!   they arrived, like any upload), size, blake3 and MD5. A part sent again replaces
//!   the earlier one (last writer wins); the earlier chunks are left to GC.
//!
//! Completing writes the object's record from the parts' chunk lists — no byte is copied
//! — after touching every chunk on its owners (so a GC pass that read the records
//! before the object's was written cannot collect them), then tombstones the parts and
//! the upload. Part records keep their chunks alive until then; an upload left alone is
//! aborted after [`DEFAULT_EXPIRY`] by any gateway's sweeper, and GC reclaims its chunks.

use std::sync::Arc;
use std::time::Duration;

use kura_cluster::names::UPLOADS_BUCKET;
use kura_cluster::record::{ChunkRef, ObjectRecord};

use crate::error::{GatewayError, Result};
use crate::upload::{NewObject, StoredBody};
use crate::{list, Gateway};

/// How long an upload may stay incomplete before it is aborted and its parts reclaimed
/// (S3 lifecycle rules usually say 7 days; so does kura by default).
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often each gateway looks for expired uploads. Aborting is idempotent, so several
/// gateways sweeping at once only repeat tombstones.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// Highest part number (as S3).
pub const MAX_PART_NUMBER: u32 = 10_000;

/// Smallest part but the last (as S3: 5 MiB).
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;

/// Most uploads one listing of a bucket's in-progress uploads looks at.
pub const MAX_UPLOADS_LISTED: usize = 10_000;

/// The header of an upload record that holds the target key.
const KEY_HEADER: &str = "kura-upload-key";

/// An upload in progress.
#[derive(Clone, Debug)]
pub struct Upload {
    /// Its id (32 hex digits).
    pub id: String,
    /// Target bucket.
    pub bucket: String,
    /// Target key.
    pub key: String,
    /// When it was started, ms since the epoch.
    pub initiated_ms: u64,
    /// Content type, metadata and headers of the object to be.
    pub object: NewObject,
}

/// One stored part.
#[derive(Clone, Debug)]
pub struct Part {
    /// 1..=[`MAX_PART_NUMBER`].
    pub number: u32,
    /// Size in bytes.
    pub size: u64,
    /// MD5 hex (the part's S3 ETag).
    pub md5: String,
    /// blake3 hex of the part's bytes.
    pub blake3: String,
    /// Its chunks.
    pub chunks: Vec<ChunkRef>,
    /// When it was stored, ms since the epoch.
    pub stored_ms: u64,
}

/// Why a completion was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No part was named.
    NoParts,
    /// Part numbers are not strictly ascending.
    Order,
    /// A named part does not exist or its ETag differs.
    Part(u32),
    /// A part but the last is smaller than [`MIN_PART_BYTES`].
    TooSmall(u32),
}

fn upload_key(bucket: &str, id: &str) -> String {
    format!("up/{bucket}/{id}")
}

fn part_prefix(id: &str) -> String {
    format!("pt/{id}/")
}

fn part_key(id: &str, number: u32) -> String {
    format!("pt/{id}/{number:05}")
}

fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Whether `id` looks like an upload id (so it can be put in a record key).
fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn from_record(bucket: &str, r: ObjectRecord) -> Option<Upload> {
    let id = r.key.rsplit('/').next()?.to_string();
    let mut headers = r.headers;
    let key = headers.remove(KEY_HEADER)?;
    Some(Upload {
        id,
        bucket: bucket.to_string(),
        key: key.clone(),
        initiated_ms: r.ts.ms,
        object: NewObject {
            bucket: bucket.to_string(),
            key,
            content_type: r.content_type,
            meta: r.meta,
            headers,
            md5: None,
        },
    })
}

/// Starts an upload of `object`.
pub async fn create(gw: &Arc<Gateway>, object: NewObject) -> Result<Upload> {
    let id = new_id();
    let mut record = ObjectRecord::tombstone(
        UPLOADS_BUCKET,
        &upload_key(&object.bucket, &id),
        gw.cluster.clock.now(),
    );
    record.deleted = false;
    record.content_type = object.content_type.clone();
    record.meta = object.meta.clone();
    record.headers = object.headers.clone();
    record.headers.insert(KEY_HEADER.into(), object.key.clone());
    let initiated_ms = record.ts.ms;
    gw.cluster.put_record(record).await?;
    Ok(Upload {
        id,
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        initiated_ms,
        object,
    })
}

/// The upload `id` of `bucket/key`: `NotFound` if it does not exist (never did,
/// completed, aborted, expired) or belongs to another key.
pub async fn get(gw: &Arc<Gateway>, bucket: &str, key: &str, id: &str) -> Result<Upload> {
    if !valid_id(id) {
        return Err(GatewayError::NotFound);
    }
    let found = gw
        .cluster
        .get_record_fresh(UPLOADS_BUCKET, &upload_key(bucket, id))
        .await?;
    found
        .filter(|r| !r.deleted)
        .and_then(|r| from_record(bucket, r))
        .filter(|u| u.key == key)
        .ok_or(GatewayError::NotFound)
}

/// Records part `number` of `upload` (its bytes already stored by `store_body`).
pub async fn put_part(
    gw: &Arc<Gateway>,
    upload: &Upload,
    number: u32,
    stored: StoredBody,
    md5: String,
) -> Result<Part> {
    if number == 0 || number > MAX_PART_NUMBER {
        return Err(GatewayError::BadRequest(format!(
            "part numbers are 1 to {MAX_PART_NUMBER}"
        )));
    }
    let mut record = ObjectRecord::tombstone(
        UPLOADS_BUCKET,
        &part_key(&upload.id, number),
        gw.cluster.clock.now(),
    );
    record.deleted = false;
    record.size = stored.size;
    record.etag = stored.etag.clone();
    record.chunks = stored.chunks.clone();
    record.chunk_size = gw.config.chunk_size;
    record.md5 = Some(md5.clone());
    let stored_ms = record.ts.ms;
    gw.cluster.put_record(record).await?;
    Ok(Part {
        number,
        size: stored.size,
        md5,
        blake3: stored.etag,
        chunks: stored.chunks,
        stored_ms,
    })
}

/// Every stored part of `upload`, by number.
pub async fn parts(gw: &Arc<Gateway>, upload: &Upload) -> Result<Vec<Part>> {
    let prefix = part_prefix(&upload.id);
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, next) = list::merged(
            &gw.cluster,
            UPLOADS_BUCKET,
            &prefix,
            after.as_deref(),
            crate::http::MAX_LIST_LIMIT,
        )
        .await?;
        for r in page {
            let Some(number) = r.key[prefix.len()..].parse::<u32>().ok() else {
                continue;
            };
            out.push(Part {
                number,
                size: r.size,
                md5: r.md5.unwrap_or_default(),
                blake3: r.etag,
                chunks: r.chunks,
                stored_ms: r.ts.ms,
            });
        }
        match next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

/// What a completed upload became.
#[derive(Debug)]
pub struct Completed {
    /// The S3 ETag: `hex(MD5 of the parts' MD5s)-N`.
    pub md5: String,
    /// Size in bytes.
    pub size: u64,
}

/// Completes `upload` from the parts named in `wanted` (number, MD5 hex), in order.
/// `Ok(Err(_))` is a refusal the client must fix; nothing changes then.
pub async fn complete(
    gw: &Arc<Gateway>,
    upload: &Upload,
    wanted: &[(u32, String)],
) -> Result<std::result::Result<Completed, Refusal>> {
    if wanted.is_empty() {
        return Ok(Err(Refusal::NoParts));
    }
    if wanted.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Ok(Err(Refusal::Order));
    }
    let stored = parts(gw, upload).await?;
    let mut chosen: Vec<&Part> = Vec::with_capacity(wanted.len());
    for (i, (number, md5)) in wanted.iter().enumerate() {
        let Some(part) = stored.iter().find(|p| p.number == *number && &p.md5 == md5) else {
            return Ok(Err(Refusal::Part(*number)));
        };
        if i + 1 < wanted.len() && part.size < MIN_PART_BYTES {
            return Ok(Err(Refusal::TooSmall(*number)));
        }
        chosen.push(part);
    }
    let mut md5s = Vec::with_capacity(16 * chosen.len());
    let mut blakes = blake3::Hasher::new();
    let mut chunks = Vec::new();
    let mut size = 0u64;
    for p in &chosen {
        md5s.extend(hex::decode(&p.md5).map_err(|e| GatewayError::Internal(e.to_string()))?);
        blakes.update(p.blake3.as_bytes());
        chunks.extend(p.chunks.iter().cloned());
        size += p.size;
    }
    let md5 = format!("{}-{}", md5_hex(&md5s), chosen.len());
    let ids: Vec<_> = chunks.iter().map(|c| c.id).collect();
    gw.cluster.touch_chunks(&ids).await?;
    let o = &upload.object;
    let record = ObjectRecord {
        bucket: upload.bucket.clone(),
        key: upload.key.clone(),
        ts: gw.cluster.clock.now(),
        deleted: false,
        size,
        content_type: o.content_type.clone(),
        // Not the blake3 of the content (that would mean reading every byte again):
        // the blake3 of the parts' blake3s with the part count, as S3 does for MD5s.
        // Every chunk is still verified against its id on every read.
        etag: format!("{}-{}", blakes.finalize().to_hex(), chosen.len()),
        chunk_size: gw.config.chunk_size,
        chunks,
        meta: o.meta.clone(),
        headers: o.headers.clone(),
        md5: Some(md5.clone()),
    };
    gw.cluster.put_record(record).await?;
    forget(gw, upload, &stored).await?;
    Ok(Ok(Completed { md5, size }))
}

/// Aborts `upload`: its parts and itself are tombstoned; GC reclaims the chunks.
pub async fn abort(gw: &Arc<Gateway>, upload: &Upload) -> Result<()> {
    let stored = parts(gw, upload).await?;
    forget(gw, upload, &stored).await
}

async fn forget(gw: &Arc<Gateway>, upload: &Upload, parts: &[Part]) -> Result<()> {
    for p in parts {
        let tomb = ObjectRecord::tombstone(
            UPLOADS_BUCKET,
            &part_key(&upload.id, p.number),
            gw.cluster.clock.now(),
        );
        gw.cluster.put_record(tomb).await?;
    }
    let tomb = ObjectRecord::tombstone(
        UPLOADS_BUCKET,
        &upload_key(&upload.bucket, &upload.id),
        gw.cluster.clock.now(),
    );
    gw.cluster.put_record(tomb).await
}

/// The uploads in progress in `bucket` whose key starts with `prefix`, by key then
/// start time (at most [`MAX_UPLOADS_LISTED`] are looked at).
pub async fn list_uploads(gw: &Arc<Gateway>, bucket: &str, prefix: &str) -> Result<Vec<Upload>> {
    let mut out = all_uploads(gw, &format!("up/{bucket}/")).await?;
    out.retain(|u| u.key.starts_with(prefix));
    out.sort_by(|a, b| (&a.key, a.initiated_ms).cmp(&(&b.key, b.initiated_ms)));
    Ok(out)
}

async fn all_uploads(gw: &Arc<Gateway>, prefix: &str) -> Result<Vec<Upload>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, next) = list::merged(
            &gw.cluster,
            UPLOADS_BUCKET,
            prefix,
            after.as_deref(),
            crate::http::MAX_LIST_LIMIT,
        )
        .await?;
        for r in page {
            let bucket = r.key.split('/').nth(1).unwrap_or_default().to_string();
            if let Some(u) = from_record(&bucket, r) {
                out.push(u);
            }
        }
        match next {
            Some(n) if out.len() < MAX_UPLOADS_LISTED => after = Some(n),
            _ => return Ok(out),
        }
    }
}

/// Aborts every upload started more than `expiry` ago; returns how many.
pub async fn sweep(gw: &Arc<Gateway>, expiry: Duration) -> Result<usize> {
    let now = kura_cluster::hlc::wall_ms();
    let cutoff = now.saturating_sub(u64::try_from(expiry.as_millis()).unwrap_or(u64::MAX));
    let mut aborted = 0;
    for u in all_uploads(gw, "up/").await? {
        if u.initiated_ms < cutoff {
            abort(gw, &u).await?;
            aborted += 1;
        }
    }
    Ok(aborted)
}

/// Sweeps every [`SWEEP_INTERVAL`] (the first time one interval after start).
pub async fn sweep_forever(gw: Arc<Gateway>, expiry: Duration) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        match sweep(&gw, expiry).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(aborted = n, "expired multipart uploads aborted"),
            Err(e) => tracing::warn!(error = %e, "multipart expiry sweep failed"),
        }
    }
}

fn md5_hex(data: &[u8]) -> String {
    use s3s::crypto::{Checksum as _, Md5};
    let mut h = Md5::new();
    h.update(data);
    hex::encode(h.finalize())
}
