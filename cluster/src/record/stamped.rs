//! Records as nodes store and send them: the record's timestamp in a fixed header,
//! then its JSON as it arrived. A quorum read compares the replicas' timestamps and
//! decodes only the newest; with the timestamp in front, neither the node nor the
//! gateway scans a record's JSON to compare it (a 4 KiB object's record is ~5.5 KB of
//! JSON, a 1 GB object's ~23 KB).
//!
//! Layout: [`STAMP_FORMAT`] (one byte), `ts.ms` (u64), `ts.logical` (u32),
//! `ts.origin` (u64), all big-endian, then the JSON. JSON never starts with a zero
//! byte, so a value stored before the header existed (bare JSON) is told apart and
//! read by scanning it, as before.

use bytes::Bytes;
use serde::Deserialize;

use crate::hlc::Timestamp;

/// The first byte of a stamped record.
pub const STAMP_FORMAT: u8 = 0;

/// Bytes of the header before the JSON.
pub const STAMP_LEN: usize = 1 + 8 + 4 + 8;

/// A record as a node holds it: its timestamp, and its JSON undecoded.
#[derive(Clone, Debug)]
pub struct EncodedRecord {
    /// Its timestamp.
    pub ts: Timestamp,
    /// Its JSON.
    pub json: Bytes,
}

impl EncodedRecord {
    /// Reads the timestamp of a record's JSON (the rest is only checked to be JSON).
    pub fn parse(json: Bytes) -> serde_json::Result<Self> {
        Ok(Self {
            ts: json_ts(&json)?,
            json,
        })
    }

    /// A stored record ([`Self::stamped`]'s bytes, or bare JSON from before the
    /// header), its JSON a slice of `stored` (not copied).
    pub fn from_stored(stored: Bytes) -> serde_json::Result<Self> {
        match split_stamp(&stored) {
            Some(ts) => Ok(Self {
                ts,
                json: stored.slice(STAMP_LEN..),
            }),
            None => Self::parse(stored),
        }
    }

    /// The timestamp of a stored record without copying it (see [`Self::from_stored`]).
    pub fn stored_ts(stored: &[u8]) -> serde_json::Result<Timestamp> {
        match split_stamp(stored) {
            Some(ts) => Ok(ts),
            None => json_ts(stored),
        }
    }

    /// The JSON of a stored record (see [`Self::from_stored`]).
    pub fn stored_json(stored: &[u8]) -> &[u8] {
        match split_stamp(stored) {
            Some(_) => &stored[STAMP_LEN..],
            None => stored,
        }
    }

    /// The record as stored: header and JSON.
    pub fn stamped(ts: Timestamp, json: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(STAMP_LEN + json.len());
        v.push(STAMP_FORMAT);
        v.extend_from_slice(&ts.ms.to_be_bytes());
        v.extend_from_slice(&ts.logical.to_be_bytes());
        v.extend_from_slice(&ts.origin.to_be_bytes());
        v.extend_from_slice(json);
        v
    }

    /// The whole record.
    pub fn decode(&self) -> serde_json::Result<super::ObjectRecord> {
        serde_json::from_slice(&self.json)
    }
}

/// The timestamp of a record's JSON (the rest is only checked to be JSON).
fn json_ts(json: &[u8]) -> serde_json::Result<Timestamp> {
    #[derive(Deserialize)]
    struct Stamp {
        ts: Timestamp,
    }
    Ok(serde_json::from_slice::<Stamp>(json)?.ts)
}

/// The timestamp in `stored`'s header, `None` if it has none (bare JSON).
fn split_stamp(stored: &[u8]) -> Option<Timestamp> {
    let header = stored.get(..STAMP_LEN)?;
    if header[0] != STAMP_FORMAT {
        return None;
    }
    let (ms, rest) = header[1..].split_at(8);
    let (logical, origin) = rest.split_at(4);
    Some(Timestamp {
        ms: u64::from_be_bytes(ms.try_into().ok()?),
        logical: u32::from_be_bytes(logical.try_into().ok()?),
        origin: u64::from_be_bytes(origin.try_into().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ObjectRecord;

    #[test]
    fn a_stamped_record_reads_back_without_its_json_scanned_and_bare_json_still_reads() {
        let ts = Timestamp {
            ms: 1_764_000_000_123,
            logical: 7,
            origin: u64::MAX - 3,
        };
        let record = ObjectRecord::tombstone("b", "k", ts);
        let json = serde_json::to_vec(&record).unwrap();
        let stored = Bytes::from(EncodedRecord::stamped(ts, &json));
        assert_eq!(stored.len(), STAMP_LEN + json.len());
        let read = EncodedRecord::from_stored(stored.clone()).unwrap();
        assert_eq!((read.ts, &read.json[..]), (ts, &json[..]));
        assert_eq!(read.decode().unwrap(), record);
        assert!(
            stored.as_ptr_range().contains(&read.json.as_ptr()),
            "a slice"
        );
        assert_eq!(EncodedRecord::stored_ts(&stored).unwrap(), ts);
        assert_eq!(EncodedRecord::stored_json(&stored), &json[..]);
        // The header is what is compared, not the JSON (which the node never rewrites).
        let later = Timestamp {
            ms: ts.ms + 1,
            ..ts
        };
        let restamped = EncodedRecord::stamped(later, &json);
        assert_eq!(EncodedRecord::stored_ts(&restamped).unwrap(), later);

        // Bare JSON (stored before the header): read by scanning it.
        let bare = Bytes::from(json.clone());
        let read = EncodedRecord::from_stored(bare.clone()).unwrap();
        assert_eq!((read.ts, &read.json[..]), (ts, &json[..]));
        assert_eq!(EncodedRecord::stored_ts(&bare).unwrap(), ts);
        assert_eq!(EncodedRecord::stored_json(&bare), &json[..]);
        // Neither: refused.
        assert!(EncodedRecord::from_stored(Bytes::from_static(b"\x01garbage")).is_err());
        assert!(EncodedRecord::from_stored(Bytes::from_static(b"\x00short")).is_err());
    }
}
