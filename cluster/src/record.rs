//! Object records: what `bucket/key` names.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::hlc::Timestamp;
use crate::ChunkId;

mod stamped;
pub use stamped::{EncodedRecord, RecordFormat, STAMP_FORMAT, STAMP_LEN};

/// Largest record body a node accepts. 64 MiB holds the chunk list of a ~2.8 TiB object
/// at the default 4 MiB chunk size (≈90 bytes of JSON per chunk); a bigger bound would
/// make every cold read of such an object move more than that before its first byte.
pub const MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

/// Part of [`MAX_RECORD_BYTES`] kept for all but the chunk list: bucket and key (≤ 1 KiB),
/// user metadata and content headers (a few KiB at most), timestamps and ETags.
pub const RECORD_RESERVE_BYTES: u64 = 1024 * 1024;

/// Most JSON bytes one chunk of at most `chunk_size` bytes adds to a record:
/// `{"id":"<64 hex>","size":<digits>},`.
fn chunk_ref_json_bytes(chunk_size: u64) -> u64 {
    let digits = chunk_size.max(1).ilog10() as u64 + 1;
    r#"{"id":"","size":},"#.len() as u64 + 64 + digits
}

/// Most chunks (each at most `chunk_size` bytes) one record can list.
pub fn max_chunks(chunk_size: u64) -> u64 {
    (MAX_RECORD_BYTES - RECORD_RESERVE_BYTES) / chunk_ref_json_bytes(chunk_size)
}

/// Largest object a record can describe when it is cut into `chunk_size` chunks (an
/// upload in one stream; multipart uploads cut chunks at part boundaries too, so they
/// are also held to [`max_chunks`]).
pub fn max_object_bytes(chunk_size: u64) -> u64 {
    max_chunks(chunk_size).saturating_mul(chunk_size)
}

/// Largest object whose bytes a gateway keeps in the record itself instead of in a chunk
/// (see [`ObjectRecord::inline`]): 64 KiB, the nodes' inline-chunk threshold, so such an
/// object costs one replicated record write (one synced RocksDB write per replica) and a
/// read is one record read, and a record stays well under [`MAX_RECORD_BYTES`] (base64
/// makes it ~87 KiB).
pub const INLINE_OBJECT_MAX: u64 = 64 * 1024;

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
    /// The whole content of a small object (at most [`INLINE_OBJECT_MAX`] bytes), kept in
    /// the record instead of in chunks (`chunks` is then empty); base64 in JSON. `etag`
    /// is its blake3, checked before a byte is served.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "inline_base64"
    )]
    pub inline: Option<Bytes>,
}

/// `ObjectRecord::inline` as a base64 string, with `base64-simd` (vector code):
/// decoding a 4 KiB object's inline bytes with the `base64` crate was 6 % of a gateway's
/// CPU per uncached small GET (BENCHMARKS.md, session 18). Standard alphabet, padded,
/// strict, as `base64`'s `STANDARD` wrote.
mod inline_base64 {
    use base64_simd::STANDARD;
    use bytes::Bytes;
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) if !s.is_human_readable() => s.serialize_bytes(b),
            Some(b) => s.serialize_str(&STANDARD.encode_to_string(b)),
            None => s.serialize_none(),
        }
    }

    /// Decodes the text where the deserializer holds it (no `String` of it first: a
    /// 4 KiB object's inline bytes are read on every uncached small GET).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
        struct Base64;
        impl<'de> Visitor<'de> for Base64 {
            type Value = Option<Bytes>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("base64 text or null")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                if d.is_human_readable() {
                    d.deserialize_str(self)
                } else {
                    d.deserialize_bytes(self)
                }
            }
            fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<Self::Value, E> {
                Ok(Some(Bytes::copy_from_slice(b)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                STANDARD
                    .decode_to_vec(text)
                    .map(|b| Some(Bytes::from(b)))
                    .map_err(E::custom)
            }
        }
        d.deserialize_option(Base64)
    }
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
            inline: None,
        }
    }

    /// The inline content, if this record has one and it hashes to the record's etag;
    /// `Err` when it has one that does not (a damaged record).
    pub fn verified_inline(&self) -> Result<Option<&Bytes>, crate::Error> {
        match &self.inline {
            Some(b) if blake3::hash(b).to_hex().as_str() == self.etag => Ok(Some(b)),
            Some(_) => Err(crate::Error::Corrupt(format!(
                "inline content of {}/{}",
                self.bucket, self.key
            ))),
            None => Ok(None),
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

#[cfg(test)]
mod tests {
    use super::*;

    const TS: Timestamp = Timestamp {
        ms: 1,
        logical: 0,
        origin: 1,
    };

    #[test]
    fn an_encoded_record_reads_its_timestamp_alone_and_decodes_whole() {
        let mut rec = ObjectRecord {
            deleted: false,
            size: 1,
            chunks: vec![ChunkRef {
                id: ChunkId::of(b"x"),
                size: 1,
            }],
            ..ObjectRecord::tombstone("media", "a", TS)
        };
        rec.meta.insert("k".into(), "v".into());
        let enc = EncodedRecord::from_json(&serde_json::to_vec(&rec).unwrap()).unwrap();
        assert_eq!(enc.ts, TS);
        assert_eq!(enc.decode().unwrap(), rec);
        for bad in [&b"not json"[..], b"{}", br#"{"ts": 5}"#, b"[1, 2]"] {
            let parsed = EncodedRecord::from_json(bad);
            assert!(parsed.is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn inline_content_round_trips_as_base64_and_is_verified() {
        let body = Bytes::from_static(b"a small object");
        let record = ObjectRecord {
            deleted: false,
            size: body.len() as u64,
            etag: blake3::hash(&body).to_hex().to_string(),
            inline: Some(body.clone()),
            ..ObjectRecord::tombstone("b", "k", TS)
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(
            json.contains(r#""inline":"YSBzbWFsbCBvYmplY3Q=""#),
            "{json}"
        );
        let back: ObjectRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.verified_inline().unwrap(), Some(&body));
        let damaged = ObjectRecord {
            inline: Some(Bytes::from_static(b"a smell object")),
            ..record.clone()
        };
        assert!(damaged.verified_inline().is_err());
        let plain = ObjectRecord::tombstone("b", "k", TS);
        assert!(!serde_json::to_string(&plain).unwrap().contains("inline"));
        assert_eq!(plain.verified_inline().unwrap(), None);
        // `null` is none; text that is not base64, or not text, is refused.
        let with = |inline: &str| json.replace(r#""YSBzbWFsbCBvYmplY3Q=""#, inline);
        let null: ObjectRecord = serde_json::from_str(&with("null")).unwrap();
        assert_eq!(null.inline, None);
        for bad in [r#""not base64!""#, "42", "[1]"] {
            assert!(
                serde_json::from_str::<ObjectRecord>(&with(bad)).is_err(),
                "{bad}"
            );
        }
        // From a reader (no borrowed text): the same bytes.
        let read: ObjectRecord = serde_json::from_reader(json.as_bytes()).unwrap();
        assert_eq!(read, record);
    }

    #[test]
    fn inline_base64_is_what_the_base64_crate_wrote_and_reads() {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine;
        let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let lens = (0..=300).chain([4096, 4097, 65_535, 65_536, 70_000]);
        for len in lens {
            let body = Bytes::copy_from_slice(&data[..len]);
            let record = ObjectRecord {
                inline: Some(body.clone()),
                ..ObjectRecord::tombstone("b", "k", TS)
            };
            let json = serde_json::to_string(&record).unwrap();
            let theirs = STANDARD.encode(&body);
            assert!(json.contains(&format!(r#""inline":"{theirs}""#)), "{len}");
            let back: ObjectRecord = serde_json::from_str(&json).unwrap();
            assert_eq!(back.inline, Some(body), "{len}");
        }
        // Text the `base64` crate refused is refused: bits set past the end, missing or
        // extra padding, characters of other alphabets.
        let good = serde_json::to_string(&ObjectRecord {
            inline: Some(Bytes::from_static(b"a")),
            ..ObjectRecord::tombstone("b", "k", TS)
        })
        .unwrap();
        assert!(good.contains(r#""YQ==""#));
        for bad in ["YR==", "YQ", "YQ===", "YQ=a", "-_8=", "Y Q=="] {
            assert!(STANDARD.decode(bad).is_err(), "{bad}: base64 accepts it");
            let json = good.replace("YQ==", bad);
            assert!(
                serde_json::from_str::<ObjectRecord>(&json).is_err(),
                "{bad}"
            );
        }
    }

    /// The fullest record the gateway lets be written (most chunks, each of the largest
    /// size, longest key, a lot of metadata) still fits what a node accepts.
    #[test]
    fn the_largest_allowed_record_fits_a_node() {
        for chunk_size in [4 * 1024 * 1024, 16 * 1024 * 1024] {
            let n = max_chunks(chunk_size);
            let record = ObjectRecord {
                bucket: "b".repeat(63),
                key: "k".repeat(1024),
                size: n * chunk_size,
                deleted: false,
                etag: "e".repeat(80),
                chunk_size,
                chunks: vec![
                    ChunkRef {
                        id: ChunkId::of(b"x"),
                        size: chunk_size,
                    };
                    n as usize
                ],
                meta: (0..64)
                    .map(|i| (format!("m{i}"), "v".repeat(100)))
                    .collect(),
                md5: Some("d".repeat(40)),
                ..ObjectRecord::tombstone(
                    "b",
                    "k",
                    Timestamp {
                        ms: u64::MAX,
                        logical: u32::MAX,
                        origin: u64::MAX,
                    },
                )
            };
            let bytes = serde_json::to_vec(&record).unwrap().len() as u64;
            assert!(bytes <= MAX_RECORD_BYTES, "{chunk_size}: {bytes}");
            let packed = EncodedRecord::pack(&record).unwrap().stored().len() as u64;
            assert!(
                packed < bytes,
                "{chunk_size}: packed {packed}, JSON {bytes}"
            );
            assert!(
                bytes > MAX_RECORD_BYTES - 2 * RECORD_RESERVE_BYTES,
                "{bytes}"
            );
        }
        assert!(max_object_bytes(4 * 1024 * 1024) > 2 * (1 << 40));
    }
}
