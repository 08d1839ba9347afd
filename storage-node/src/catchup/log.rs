//! The write log: every chunk a node stores and every record it applies, keyed by the
//! time it arrived, so that what was written while a peer was away can be found without
//! walking the whole store.
//!
//! Key: `ms (u64 big-endian) · kind · id`, value empty. Entries are added in the same
//! synced batch as the write they log (no extra fsync) and trimmed after
//! [`WRITE_LOG_RETENTION`].

use std::time::Duration;

use kura_cluster::ChunkId;
use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::db::{Db, CF_META, CF_WRITES};
use crate::error::Result;

/// How long written items stay in the log. An outage longer than this is caught up by a
/// full repair pass instead (see `super`); a day covers a night without an operator
/// while costing ~100 bytes per write.
pub const WRITE_LOG_RETENTION: Duration = Duration::from_secs(24 * 3600);

const KIND_CHUNK: u8 = b'c';
const KIND_RECORD: u8 = b'r';

/// One logged write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Logged {
    /// A chunk stored here.
    Chunk(ChunkId),
    /// A record applied here: its bucket and key.
    Record(String, String),
}

/// The first key at or after `ms`.
pub fn key_at(ms: u64) -> Vec<u8> {
    ms.to_be_bytes().to_vec()
}

fn key(ms: u64, kind: u8, id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + id.len());
    k.extend_from_slice(&ms.to_be_bytes());
    k.push(kind);
    k.extend_from_slice(id);
    k
}

/// Adds "chunk `id` stored now" to `batch`.
pub fn log_chunk(db: &Db, batch: &mut WriteBatch, id: &ChunkId) -> Result<()> {
    let now = kura_cluster::hlc::wall_ms();
    batch.put_cf(db.cf(CF_WRITES)?, key(now, KIND_CHUNK, id.as_bytes()), []);
    Ok(())
}

/// Adds "record `db_key` (`bucket \0 key`) applied now" to `batch`.
pub fn log_record(db: &Db, batch: &mut WriteBatch, db_key: &[u8]) -> Result<()> {
    let now = kura_cluster::hlc::wall_ms();
    batch.put_cf(db.cf(CF_WRITES)?, key(now, KIND_RECORD, db_key), []);
    Ok(())
}

/// Up to `limit` logged writes from `from` (a log key) on, with the key to continue after.
pub fn scan(db: &Db, from: &[u8], limit: usize) -> Result<(Vec<Logged>, Option<Vec<u8>>)> {
    let cf = db.cf(CF_WRITES)?;
    let mut out = Vec::new();
    let mut last = None;
    for item in db
        .raw()
        .iterator_cf(cf, IteratorMode::From(from, Direction::Forward))
        .take(limit)
    {
        let (k, _) = item?;
        if let Some(logged) = decode(&k) {
            out.push(logged);
        }
        last = Some(k.to_vec());
    }
    Ok((out, last))
}

/// The key right after `key` (to resume a scan past it).
pub fn after(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

/// Parses a log key; `None` for anything malformed.
pub fn decode(k: &[u8]) -> Option<Logged> {
    let (&kind, id) = k.get(8..)?.split_first()?;
    match kind {
        KIND_CHUNK => Some(Logged::Chunk(ChunkId::from_bytes(id.try_into().ok()?))),
        KIND_RECORD => {
            let nul = id.iter().position(|b| *b == 0)?;
            let bucket = std::str::from_utf8(&id[..nul]).ok()?;
            let key = std::str::from_utf8(&id[nul + 1..]).ok()?;
            Some(Logged::Record(bucket.to_string(), key.to_string()))
        }
        _ => None,
    }
}

/// Meta key of the time before which entries were trimmed (ms, u64 big-endian).
const TRIMMED_KEY: &[u8] = b"writes_trimmed_before_ms";

/// The time before which entries may be missing: 0 while the log was never trimmed.
pub fn trimmed_before(db: &Db) -> Result<u64> {
    Ok(db
        .raw()
        .get_cf(db.cf(CF_META)?, TRIMMED_KEY)?
        .and_then(|v| v.try_into().ok())
        .map_or(0, u64::from_be_bytes))
}

/// Drops entries older than `before_ms` (one range tombstone) and records that it did.
pub fn trim(db: &Db, before_ms: u64) -> Result<()> {
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(db.cf(CF_WRITES)?, key_at(0), key_at(before_ms));
    batch.put_cf(db.cf(CF_META)?, TRIMMED_KEY, before_ms.to_be_bytes());
    db.raw().write(batch)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_to_what_was_logged() {
        let id = ChunkId::of(b"x");
        assert_eq!(
            decode(&key(5, KIND_CHUNK, id.as_bytes())),
            Some(Logged::Chunk(id))
        );
        assert_eq!(
            decode(&key(5, KIND_RECORD, b"b\0dir/k\0ey")),
            Some(Logged::Record("b".into(), "dir/k\0ey".into()))
        );
        assert_eq!(decode(&key(5, KIND_CHUNK, b"short")), None);
        assert_eq!(decode(&key(5, b'?', id.as_bytes())), None);
        assert_eq!(decode(b"1234"), None);
        assert!(key(1, KIND_CHUNK, id.as_bytes()) < key_at(2));
        assert!(key_at(1) <= key(1, KIND_CHUNK, id.as_bytes()));
    }
}
