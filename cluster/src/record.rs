//! Object records: what `bucket/key` names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hlc::Timestamp;
use crate::ChunkId;

/// One chunk of an object's content, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The chunk's id (blake3 of its bytes).
    pub id: ChunkId,
    /// The chunk's length in bytes.
    pub size: u64,
}

/// The record of one object version, or a tombstone.
///
/// Replicas keep, per `bucket/key`, only the record with the greatest [`Timestamp`]
/// (last writer wins); a delete is a record with `deleted = true` so that it can win
/// against older writes that arrive late.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Bucket name (see [`crate::names::check_bucket`]).
    pub bucket: String,
    /// Object key (see [`crate::names::check_key`]).
    pub key: String,
    /// When this version was written; decides last-writer-wins.
    pub ts: Timestamp,
    /// A tombstone: the object was deleted at `ts`.
    #[serde(default)]
    pub deleted: bool,
    /// Total size in bytes.
    #[serde(default)]
    pub size: u64,
    /// Media type given at upload.
    #[serde(default)]
    pub content_type: Option<String>,
    /// blake3 hex of the whole content (the HTTP ETag).
    #[serde(default)]
    pub etag: String,
    /// Size every chunk but the last has, so an offset maps to a chunk arithmetically.
    #[serde(default)]
    pub chunk_size: u64,
    /// The content, as ordered chunks.
    #[serde(default)]
    pub chunks: Vec<ChunkRef>,
    /// User metadata given at upload.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Content headers given at upload besides the type, by lowercase name
    /// (`content-encoding`, `content-disposition`, `content-language`, `cache-control`,
    /// `expires`); served back on every read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The S3 ETag, for objects written through the S3 API: the MD5 hex of a single
    /// upload, `hex(md5 of the parts' MD5s)-N` of a multipart one. S3 clients compare it
    /// with what they sent; kura's own integrity is `etag` (blake3), checked on every read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
}

impl ObjectRecord {
    /// A tombstone for `bucket/key` at `ts`.
    pub fn tombstone(bucket: &str, key: &str, ts: Timestamp) -> Self {
        Self {
            bucket: bucket.to_string(),
            key: key.to_string(),
            ts,
            deleted: true,
            size: 0,
            content_type: None,
            etag: String::new(),
            chunk_size: 0,
            chunks: Vec::new(),
            meta: BTreeMap::new(),
            headers: BTreeMap::new(),
            md5: None,
        }
    }

    /// Whether this record should replace `current` under last-writer-wins.
    pub fn supersedes(&self, current: &ObjectRecord) -> bool {
        self.ts > current.ts
    }
}

/// Whether an object's ETag is the blake3 of its whole content, which a reader can
/// check: true for every object but one assembled from multipart parts, whose ETag is
/// `<blake3 of the parts' blake3s>-<parts>` (every chunk is still verified on read).
pub fn etag_is_content_hash(etag: &str) -> bool {
    !etag.contains('-')
}

/// One page of a record listing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordPage {
    /// Records in key order.
    pub records: Vec<ObjectRecord>,
    /// Pass as `after` to get the next page; `None` when the listing is complete.
    pub next_after: Option<String>,
}
