//! Records as nodes store and send them: a fixed header (the body's format and the
//! record's timestamp), then the body as the writer encoded it. A quorum read compares
//! the replicas' timestamps and decodes only the newest; with the timestamp in front,
//! neither the node nor the gateway looks into a body to compare records.
//!
//! Layout: the [`RecordFormat`] (one byte), `ts.ms` (u64), `ts.logical` (u32),
//! `ts.origin` (u64), all big-endian, then the body. Gateways write
//! [`RecordFormat::Packed`] bodies; [`RecordFormat::Json`] ones (written before packing
//! existed, or by an older gateway) are read alike. JSON never starts with a byte below
//! a tab, so a value stored before the header existed (bare JSON) is told apart and read
//! by scanning it, as before.

use bytes::Bytes;
use serde::Deserialize;

use super::ObjectRecord;
use crate::hlc::Timestamp;
use crate::{Error, Result};

/// How a stamped record's body is encoded: the header's first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordFormat {
    /// JSON: what records were before [`RecordFormat::Packed`], and what a node's
    /// single-record routes speak.
    Json = 0,
    /// MessagePack with field names (`rmp_serde::to_vec_named`), chunk ids and inline
    /// bytes raw: a 1 GB object's record is ~12.5 KB instead of ~23 KB of JSON and
    /// decodes in ~7 µs instead of ~38 µs; a 4 KiB object's (bytes inline) in ~0.4 µs
    /// instead of ~2.1 µs (BENCHMARKS.md, session 20). Named fields, so that fields one
    /// version does not know are skipped by it and survive in the stored bytes, as
    /// with JSON.
    Packed = 1,
}

/// The first byte of a stamped JSON record (see [`RecordFormat::Json`]).
pub const STAMP_FORMAT: u8 = RecordFormat::Json as u8;

/// Bytes of the header before the body.
pub const STAMP_LEN: usize = 1 + 8 + 4 + 8;

/// Lowest first byte of bare JSON (a tab); header format bytes stay below it.
const BARE_JSON_MIN: u8 = b'\t';

/// A record as a node holds it: its timestamp and format read from its header, its body
/// undecoded.
#[derive(Clone, Debug)]
pub struct EncodedRecord {
    /// Its timestamp.
    pub ts: Timestamp,
    /// How its body is encoded.
    pub format: RecordFormat,
    /// Header and body, as stored (what is offered to a node).
    stored: Bytes,
}

impl EncodedRecord {
    /// `record`, packed and stamped (what a gateway writes).
    pub fn pack(record: &ObjectRecord) -> Result<Self> {
        let mut stored = header(RecordFormat::Packed, record.ts);
        rmp_serde::encode::write_named(&mut stored, record)?;
        Ok(Self {
            ts: record.ts,
            format: RecordFormat::Packed,
            stored: stored.into(),
        })
    }

    /// A record's JSON, stamped (its timestamp read by scanning it; the rest is only
    /// checked to be JSON). Copies it behind a header.
    pub fn from_json(json: &[u8]) -> Result<Self> {
        let ts = json_ts(json)?;
        let mut stored = header(RecordFormat::Json, ts);
        stored.extend_from_slice(json);
        Ok(Self {
            ts,
            format: RecordFormat::Json,
            stored: stored.into(),
        })
    }

    /// A stored record: stamped (kept as is, not copied), or bare JSON from before the
    /// header (stamped here).
    pub fn from_stored(stored: Bytes) -> Result<Self> {
        match split(&stored)? {
            Some((format, ts)) => Ok(Self { ts, format, stored }),
            None => Self::from_json(&stored),
        }
    }

    /// Whether `stored` begins with a header (of any format, known or not), as opposed
    /// to bare JSON.
    pub fn is_stamped(stored: &[u8]) -> bool {
        stored.first().is_some_and(|&b| b < BARE_JSON_MIN)
    }

    /// The timestamp of a stored record without copying it (see [`Self::from_stored`]).
    pub fn stored_ts(stored: &[u8]) -> Result<Timestamp> {
        match split(stored)? {
            Some((_, ts)) => Ok(ts),
            None => json_ts(stored),
        }
    }

    /// The record stored as `stored`, decoded where it lies (see [`Self::decode`]).
    pub fn decode_stored(stored: &[u8]) -> Result<ObjectRecord> {
        match split(stored)? {
            Some((format, ts)) => decode_body(format, ts, &stored[STAMP_LEN..]),
            None => Ok(serde_json::from_slice(stored)?),
        }
    }

    /// Header and body, as stored.
    pub fn stored(&self) -> &Bytes {
        &self.stored
    }

    /// [`Self::stored`], taken.
    pub fn into_stored(self) -> Bytes {
        self.stored
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.stored[STAMP_LEN..]
    }

    /// The whole record; `Err` if its body does not decode or carries another timestamp
    /// than its header (a header no one may trust).
    pub fn decode(&self) -> Result<ObjectRecord> {
        decode_body(self.format, self.ts, self.body())
    }

    /// The record as JSON (what a node's single-record read answers): a JSON body as it
    /// is, a packed one decoded and encoded.
    pub fn to_json(&self) -> Result<Bytes> {
        Ok(match self.format {
            RecordFormat::Json => self.stored.slice(STAMP_LEN..),
            RecordFormat::Packed => serde_json::to_vec(&self.decode()?)?.into(),
        })
    }
}

/// A header for a record of `format` at `ts`, in a buffer with room for a small body.
fn header(format: RecordFormat, ts: Timestamp) -> Vec<u8> {
    let mut v = Vec::with_capacity(STAMP_LEN + 256);
    v.push(format as u8);
    v.extend_from_slice(&ts.ms.to_be_bytes());
    v.extend_from_slice(&ts.logical.to_be_bytes());
    v.extend_from_slice(&ts.origin.to_be_bytes());
    v
}

/// A body of `format` stamped `ts`, decoded.
fn decode_body(format: RecordFormat, ts: Timestamp, body: &[u8]) -> Result<ObjectRecord> {
    let record: ObjectRecord = match format {
        RecordFormat::Json => serde_json::from_slice(body)?,
        RecordFormat::Packed => rmp_serde::from_slice(body)?,
    };
    if record.ts != ts {
        return Err(Error::RecordStamp {
            header: ts,
            body: record.ts,
        });
    }
    Ok(record)
}

/// The timestamp of a record's JSON (the rest is only checked to be JSON).
fn json_ts(json: &[u8]) -> Result<Timestamp> {
    #[derive(Deserialize)]
    struct Stamp {
        ts: Timestamp,
    }
    Ok(serde_json::from_slice::<Stamp>(json)?.ts)
}

/// The format and timestamp in `stored`'s header; `None` if it has none (bare JSON).
fn split(stored: &[u8]) -> Result<Option<(RecordFormat, Timestamp)>> {
    let format = match stored.first() {
        Some(0) => RecordFormat::Json,
        Some(1) => RecordFormat::Packed,
        Some(&b) if b < BARE_JSON_MIN => return Err(Error::RecordFormat(b)),
        _ => return Ok(None),
    };
    let Some(header) = stored.get(1..STAMP_LEN) else {
        return Err(Error::ShortStamp(stored.len()));
    };
    let (ms, rest) = header.split_at(8);
    let (logical, origin) = rest.split_at(4);
    let be8 = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or_default());
    Ok(Some((
        format,
        Timestamp {
            ms: be8(ms),
            logical: u32::from_be_bytes(logical.try_into().unwrap_or_default()),
            origin: be8(origin),
        },
    )))
}

#[cfg(test)]
mod tests;
