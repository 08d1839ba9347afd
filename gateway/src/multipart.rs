//! Uploads in parts, kept in the cluster (never in a gateway's memory), so any gateway
//! can continue or complete an upload another one started, after any restart. Shared by
//! S3 multipart uploads (`crate::s3::multipart`) and tus resumable uploads (`crate::tus`).
//!
//! State lives in the system bucket `_uploads`, as ordinary replicated records:
//! - `up/{upload id}`: the upload: target bucket and key and the protocol's own fields
//!   (headers `kura-*`), content type, user metadata and content headers of the object
//!   to be; its timestamp is when it was started. Tombstoned when completed, aborted or
//!   expired.
//! - `pt/{upload id}/{index, 20 digits}`: one part: its chunks (stored W of N as they
//!   arrived, like any upload), size, blake3 and (S3) MD5. The index is the S3 part
//!   number, or the byte offset a tus piece starts at. A part sent again replaces the
//!   earlier one (last writer wins); the earlier chunks are left to GC.
//!
//! Assembling writes the object's record from the parts' chunk lists — no byte is copied
//! — after touching every chunk on its owners (so a GC pass that read the records
//! before the object's was written cannot collect them), then tombstones the parts and
//! the upload. Part records keep their chunks alive until then; an upload left alone is
//! aborted after [`DEFAULT_EXPIRY`] by any gateway's sweeper, and GC reclaims its chunks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kura_cluster::names::UPLOADS_BUCKET;
use kura_cluster::record::{max_chunks, ChunkRef, ObjectRecord};

use crate::error::{GatewayError, Result};
use crate::upload::{NewObject, StoredBody};
use crate::{list, Gateway};

/// How long an upload may stay incomplete before it is aborted and its parts reclaimed
/// (S3 lifecycle rules usually say 7 days; so does kura by default).
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often each gateway looks for expired uploads. Aborting is idempotent, so several
/// gateways sweeping at once only repeat tombstones.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// Most uploads one listing of uploads in progress looks at.
pub const MAX_UPLOADS_LISTED: usize = 10_000;

/// Headers of an upload record that are the upload's own (never the object's).
const OWN_PREFIX: &str = "kura-";
/// The target bucket (without the prefix).
const BUCKET_FIELD: &str = "bucket";
/// The target key.
const KEY_FIELD: &str = "key";
/// Which protocol started it (`s3`, `tus`).
const PROTOCOL_FIELD: &str = "protocol";

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
    /// `s3` or `tus`.
    pub protocol: String,
    /// The protocol's own fields (e.g. tus's length).
    pub fields: BTreeMap<String, String>,
}

/// One stored part.
#[derive(Clone, Debug)]
pub struct Part {
    /// The S3 part number or the tus byte offset.
    pub index: u64,
    /// Size in bytes.
    pub size: u64,
    /// MD5 hex (an S3 part's ETag; empty for tus).
    pub md5: String,
    /// blake3 hex of the part's bytes.
    pub blake3: String,
    /// Its chunks.
    pub chunks: Vec<ChunkRef>,
    /// When it was stored, ms since the epoch.
    pub stored_ms: u64,
}

fn upload_key(id: &str) -> String {
    format!("up/{id}")
}

fn part_prefix(id: &str) -> String {
    format!("pt/{id}/")
}

fn part_key(id: &str, index: u64) -> String {
    format!("pt/{id}/{index:020}")
}

fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Whether `id` looks like an upload id (so it can be put in a record key).
pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn from_record(r: ObjectRecord) -> Option<Upload> {
    let id = r.key.strip_prefix("up/")?.to_string();
    let mut headers = r.headers;
    let mut fields = BTreeMap::new();
    headers.retain(|k, v| match k.strip_prefix(OWN_PREFIX) {
        Some(name) => {
            fields.insert(name.to_string(), v.clone());
            false
        }
        None => true,
    });
    let bucket = fields.remove(BUCKET_FIELD)?;
    let key = fields.remove(KEY_FIELD)?;
    let protocol = fields.remove(PROTOCOL_FIELD)?;
    Some(Upload {
        id,
        bucket: bucket.clone(),
        key: key.clone(),
        initiated_ms: r.ts.ms,
        object: NewObject {
            bucket,
            key,
            content_type: r.content_type,
            meta: r.meta,
            headers,
            md5: None,
        },
        protocol,
        fields,
    })
}

/// Starts an upload of `object` for `protocol`, with the protocol's own `fields`.
pub async fn create(
    gw: &Arc<Gateway>,
    object: NewObject,
    protocol: &str,
    fields: BTreeMap<String, String>,
) -> Result<Upload> {
    let id = new_id();
    let mut record =
        ObjectRecord::tombstone(UPLOADS_BUCKET, &upload_key(&id), gw.cluster.clock.now());
    record.deleted = false;
    record.content_type = object.content_type.clone();
    record.meta = object.meta.clone();
    record.headers = object.headers.clone();
    let own = [
        (BUCKET_FIELD, object.bucket.as_str()),
        (KEY_FIELD, object.key.as_str()),
        (PROTOCOL_FIELD, protocol),
    ];
    for (k, v) in own
        .into_iter()
        .chain(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        record
            .headers
            .insert(format!("{OWN_PREFIX}{k}"), v.to_string());
    }
    let initiated_ms = record.ts.ms;
    gw.cluster.put_record(record).await?;
    Ok(Upload {
        id,
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        initiated_ms,
        object,
        protocol: protocol.into(),
        fields,
    })
}

/// The upload `id`: `NotFound` if it does not exist (never did, completed, aborted,
/// expired).
pub async fn get(gw: &Arc<Gateway>, id: &str) -> Result<Upload> {
    if !valid_id(id) {
        return Err(GatewayError::NotFound);
    }
    let found = gw
        .cluster
        .get_record_fresh(UPLOADS_BUCKET, &upload_key(id))
        .await?;
    found
        .filter(|r| !r.deleted)
        .and_then(|r| from_record(Arc::unwrap_or_clone(r)))
        .ok_or(GatewayError::NotFound)
}

/// Records part `index` of `upload` (its bytes already stored by `store_body`).
pub async fn put_part(
    gw: &Arc<Gateway>,
    upload: &Upload,
    index: u64,
    stored: StoredBody,
    md5: Option<String>,
) -> Result<Part> {
    let mut record = ObjectRecord::tombstone(
        UPLOADS_BUCKET,
        &part_key(&upload.id, index),
        gw.cluster.clock.now(),
    );
    record.deleted = false;
    record.size = stored.size;
    record.etag = stored.etag.clone();
    record.chunks = stored.chunks.clone();
    record.chunk_size = gw.config.chunk_size;
    record.md5 = md5.clone();
    let stored_ms = record.ts.ms;
    gw.cluster.put_record(record).await?;
    Ok(Part {
        index,
        size: stored.size,
        md5: md5.unwrap_or_default(),
        blake3: stored.etag,
        chunks: stored.chunks,
        stored_ms,
    })
}

/// Every stored part of `upload`, by index.
pub async fn parts(gw: &Arc<Gateway>, upload: &Upload) -> Result<Vec<Part>> {
    let prefix = part_prefix(&upload.id);
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, next) = list::merged(
            &gw.cluster,
            UPLOADS_BUCKET,
            (&prefix, after.as_deref()),
            crate::http::MAX_LIST_LIMIT,
            list::Detail::Full,
        )
        .await?;
        for r in page {
            let Ok(index) = r.key[prefix.len()..].parse::<u64>() else {
                continue;
            };
            out.push(Part {
                index,
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

/// Makes `upload` an object from `chosen` parts, in order: touches every chunk on its
/// owners, writes the object's record (no byte copied), then forgets the upload and all
/// its `stored` parts. `md5` is the S3 ETag, when the protocol has one.
pub async fn assemble(
    gw: &Arc<Gateway>,
    upload: &Upload,
    chosen: &[&Part],
    stored: &[Part],
    md5: Option<String>,
) -> Result<ObjectRecord> {
    let mut blakes = blake3::Hasher::new();
    let mut chunks = Vec::new();
    let mut size = 0u64;
    for p in chosen {
        blakes.update(p.blake3.as_bytes());
        chunks.extend(p.chunks.iter().cloned());
        size += p.size;
    }
    // One part: its blake3 is the content's. Several: not the blake3 of the content
    // (that would mean reading every byte again) but of the parts' blake3s, with the
    // count, as S3 does for MD5s. Every chunk is still verified against its id on read.
    let etag = match chosen {
        [one] => one.blake3.clone(),
        _ => format!("{}-{}", blakes.finalize().to_hex(), chosen.len()),
    };
    let limit = gw.config.object_limit();
    if size > limit || chunks.len() as u64 > max_chunks(gw.config.chunk_size) {
        return Err(GatewayError::TooLarge { limit });
    }
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
        etag,
        chunk_size: gw.config.chunk_size,
        chunks,
        meta: o.meta.clone(),
        headers: o.headers.clone(),
        md5,
        inline: None,
    };
    gw.cluster.put_record(record.clone()).await?;
    gw.cluster.metrics.objects_put.inc();
    forget(gw, upload, stored).await?;
    Ok(record)
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
            &part_key(&upload.id, p.index),
            gw.cluster.clock.now(),
        );
        gw.cluster.put_record(tomb).await?;
    }
    let tomb = ObjectRecord::tombstone(
        UPLOADS_BUCKET,
        &upload_key(&upload.id),
        gw.cluster.clock.now(),
    );
    gw.cluster.put_record(tomb).await
}

/// The `protocol` uploads in progress in `bucket` whose key starts with `prefix`, by key
/// then start time (at most [`MAX_UPLOADS_LISTED`] uploads are looked at).
pub async fn list_uploads(
    gw: &Arc<Gateway>,
    protocol: &str,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<Upload>> {
    let mut out = all_uploads(gw).await?;
    out.retain(|u| u.protocol == protocol && u.bucket == bucket && u.key.starts_with(prefix));
    out.sort_by(|a, b| (&a.key, a.initiated_ms).cmp(&(&b.key, b.initiated_ms)));
    Ok(out)
}

async fn all_uploads(gw: &Arc<Gateway>) -> Result<Vec<Upload>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, next) = list::merged(
            &gw.cluster,
            UPLOADS_BUCKET,
            ("up/", after.as_deref()),
            crate::http::MAX_LIST_LIMIT,
            list::Detail::Summary,
        )
        .await?;
        out.extend(page.into_iter().filter_map(from_record));
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
    for u in all_uploads(gw).await? {
        if u.initiated_ms < cutoff {
            abort(gw, &u).await?;
            aborted += 1;
        }
    }
    Ok(aborted)
}

/// Sweeps every [`SWEEP_INTERVAL`], or every `expiry` when that is shorter (at least
/// once a second); the first time one interval after start.
pub async fn sweep_forever(gw: Arc<Gateway>, expiry: Duration) {
    let every = expiry.clamp(Duration::from_secs(1), SWEEP_INTERVAL);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        match sweep(&gw, expiry).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(aborted = n, "expired uploads aborted"),
            Err(e) => tracing::warn!(error = %e, "upload expiry sweep failed"),
        }
    }
}
