//! The object-record table: `bucket/key` → the newest [`ObjectRecord`] this node has seen.
//! Each is stored as it arrived ([`EncodedRecord::stored`]): a fixed header with its
//! format and timestamp, then its body, packed or JSON (values from before the header
//! are bare JSON, still read).
//!
//! Invariant: for each key the table holds the record with the greatest timestamp ever
//! offered to it (last writer wins), tombstones included, so a late, older write can
//! never resurrect a deleted or replaced object.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use kura_cluster::client::RecordName;
use kura_cluster::hlc::Timestamp;
use kura_cluster::names::{check_key, check_record_bucket};
use kura_cluster::record::{EncodedRecord, ObjectRecord, RecordPage};
use rocksdb::{Direction, IteratorMode};

use crate::db::{sync_write, Db, CF_RECORDS};
use crate::error::{NodeError, Result};

/// Most entries one listing page may scan (tombstones included) before it returns what
/// it has with a continuation cursor; keeps a page's latency bounded even across long
/// runs of deleted keys.
pub const MAX_LIST_SCAN: usize = 10_000;

/// Largest page a listing returns.
pub const MAX_LIST_LIMIT: usize = 1_000;

/// Lock stripes serialising read-compare-write of records with the same key. Writes of
/// different keys proceed at once, so RocksDB groups their WAL fsyncs into one (its
/// write group: the leader syncs for every writer queued behind it) and small-object
/// writes grow with concurrency. One lock for the whole table (before) held each write
/// for its own fsync: ~1.1k records/s per node whatever the concurrency. 256 keeps two
/// concurrent writers of different keys on one stripe rare up to hundreds of writers.
const RECORD_LOCK_STRIPES: usize = 256;

/// What became of an offered record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// It was newer than what was held, and is now stored.
    Applied,
    /// What is held is as new or newer, and stays: here it is.
    Kept(Box<ObjectRecord>),
}

/// The record table of one node.
pub struct RecordTable {
    db: Arc<Db>,
    /// See [`RECORD_LOCK_STRIPES`].
    stripes: Vec<Mutex<()>>,
}

/// A record decoded, with the bytes it arrived as.
#[derive(Clone, Debug)]
pub struct StoredRecord {
    /// The record.
    pub record: ObjectRecord,
    /// It as offered to this node (stamped; one stored before headers gets one).
    pub encoded: EncodedRecord,
}

impl StoredRecord {
    fn of(stored: &[u8]) -> Result<Self> {
        let encoded = EncodedRecord::from_stored(Bytes::copy_from_slice(stored))
            .map_err(NodeError::StoredRecord)?;
        Ok(Self {
            record: encoded.decode().map_err(NodeError::StoredRecord)?,
            encoded,
        })
    }
}

/// The record stored as `stored`.
fn decode_stored(stored: &[u8]) -> Result<ObjectRecord> {
    EncodedRecord::decode_stored(stored).map_err(NodeError::StoredRecord)
}

/// Database key of `bucket/key`: bucket names cannot hold NUL, so `bucket \0 key` sorts
/// a bucket's keys together and in key order.
fn db_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

impl RecordTable {
    /// The table in `db`.
    pub fn new(db: Arc<Db>) -> Self {
        Self {
            db,
            stripes: (0..RECORD_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// The stripe of `bucket/key`.
    fn stripe(&self, bucket: &str, key: &str) -> usize {
        let mut h = std::hash::DefaultHasher::new();
        (bucket, key).hash(&mut h);
        (h.finish() % RECORD_LOCK_STRIPES as u64) as usize
    }

    fn lock_stripe(&self, stripe: usize) -> MutexGuard<'_, ()> {
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The write lock of `bucket/key`'s stripe.
    fn lock(&self, bucket: &str, key: &str) -> MutexGuard<'_, ()> {
        self.lock_stripe(self.stripe(bucket, key))
    }

    /// Offers `record` (`encoded`: it as it arrived, stored as is); stores it if it is
    /// newer than what is held. See [`RecordTable::put_many`].
    pub fn put(&self, record: ObjectRecord, encoded: EncodedRecord) -> Result<Offer> {
        self.put_many(vec![Ok((record, encoded))])?
            .pop()
            .unwrap_or_else(|| Err(NodeError::Internal("a one-record write lost its outcome")))
    }

    /// Offers several records (each decoded, with the stamped bytes it arrived as, or
    /// the error decoding it met) and stores the ones newer than what is held in **one**
    /// synced write: a batch of small objects' records costs one WAL sync. Returns each
    /// offer's outcome in order; an invalid record fails alone, a failed write fails all.
    /// Two offers of one key in a batch are decided in order, as if offered one by one.
    /// The bytes (a slice of the request body, say) are copied once, into the batch.
    pub fn put_many(
        &self,
        offers: Vec<Result<(ObjectRecord, EncodedRecord)>>,
    ) -> Result<Vec<Result<Offer>>> {
        let offers: Vec<Result<(ObjectRecord, EncodedRecord)>> = offers
            .into_iter()
            .map(|o| {
                o.and_then(|(r, encoded)| {
                    check_record_bucket(&r.bucket)?;
                    check_key(&r.key)?;
                    Ok((r, encoded))
                })
            })
            .collect();
        let mut stripes: Vec<usize> = offers
            .iter()
            .flatten()
            .map(|(r, _)| self.stripe(&r.bucket, &r.key))
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        // Ascending order: two batches never wait on each other's stripes in a cycle.
        let _guards: Vec<MutexGuard<'_, ()>> =
            stripes.iter().map(|&i| self.lock_stripe(i)).collect();
        let cf = self.db.cf(CF_RECORDS)?;
        let mut batch = rocksdb::WriteBatch::default();
        let mut staged: HashMap<Vec<u8>, ObjectRecord> = HashMap::new();
        let mut outcomes = Vec::with_capacity(offers.len());
        for offer in offers {
            let (record, encoded) = match offer {
                Ok(o) => o,
                Err(e) => {
                    outcomes.push(Err(e));
                    continue;
                }
            };
            let db_key = db_key(&record.bucket, &record.key);
            let kept = match staged.get(&db_key) {
                Some(r) => (!record.supersedes(r)).then(|| r.clone()),
                // Compared by the stored header; decoded only when it is kept.
                None => match self.stored_ts(&db_key)? {
                    Some(ts) if ts >= record.ts => self.get(&record.bucket, &record.key)?,
                    _ => None,
                },
            };
            if let Some(current) = kept {
                outcomes.push(Ok(Offer::Kept(Box::new(current))));
                continue;
            }
            batch.put_cf(cf, &db_key, encoded.stored());
            crate::catchup::log::log_record(&self.db, &mut batch, &db_key)?;
            staged.insert(db_key, record);
            outcomes.push(Ok(Offer::Applied));
        }
        if !staged.is_empty() {
            self.db.raw().write_opt(batch, &sync_write())?;
        }
        Ok(outcomes)
    }

    /// The timestamp of the record stored under `db_key`, read from its header.
    fn stored_ts(&self, db_key: &[u8]) -> Result<Option<Timestamp>> {
        let cf = self.db.cf(CF_RECORDS)?;
        match self.db.raw().get_pinned_cf(cf, db_key)? {
            Some(v) => Ok(Some(
                EncodedRecord::stored_ts(&v).map_err(NodeError::StoredRecord)?,
            )),
            None => Ok(None),
        }
    }

    /// The record held for `bucket/key` as JSON (see [`EncodedRecord::to_json`]: one
    /// that arrived as JSON is sent as it arrived).
    pub fn get_json(&self, bucket: &str, key: &str) -> Result<Option<Bytes>> {
        self.get_with(bucket, key, |v| {
            EncodedRecord::from_stored(Bytes::copy_from_slice(v))
                .and_then(|e| e.to_json())
                .map_err(NodeError::StoredRecord)
        })
    }

    /// The records held for several names as stored, each with its header (one stored
    /// before headers existed gets one here), from one RocksDB `multi_get`, in order.
    pub fn get_many_stamped(&self, names: &[RecordName]) -> Result<Vec<Option<Vec<u8>>>> {
        let cf = self.db.cf(CF_RECORDS)?;
        let keys = names.iter().map(|n| (cf, db_key(&n.bucket, &n.key)));
        self.db
            .raw()
            .multi_get_cf(keys)
            .into_iter()
            .map(|r| match r? {
                Some(v) if EncodedRecord::is_stamped(&v) => Ok(Some(v)),
                Some(bare) => EncodedRecord::from_json(&bare)
                    .map(|e| Some(e.into_stored().to_vec()))
                    .map_err(NodeError::StoredRecord),
                None => Ok(None),
            })
            .collect()
    }

    /// The record held for `bucket/key`, tombstone or not.
    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>> {
        self.get_with(bucket, key, decode_stored)
    }

    /// [`Self::get`], with the record as it arrived (see [`Self::scan_stored`]).
    pub fn get_stored(&self, bucket: &str, key: &str) -> Result<Option<StoredRecord>> {
        self.get_with(bucket, key, StoredRecord::of)
    }

    fn get_with<T>(
        &self,
        bucket: &str,
        key: &str,
        read: impl Fn(&[u8]) -> Result<T>,
    ) -> Result<Option<T>> {
        let cf = self.db.cf(CF_RECORDS)?;
        match self.db.raw().get_pinned_cf(cf, db_key(bucket, key))? {
            Some(v) => read(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Records of `bucket` whose key starts with `prefix` and sorts after `after`, in key
    /// order, at most `limit`; tombstones only if asked.
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        tombstones: bool,
        summary: bool,
    ) -> Result<RecordPage> {
        check_record_bucket(bucket)?;
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        let cf = self.db.cf(CF_RECORDS)?;
        let prefix_key = db_key(bucket, prefix);
        let start = match after {
            Some(a) if a >= prefix => db_key(bucket, a),
            _ => prefix_key.clone(),
        };
        let mut page = RecordPage::default();
        let mut scanned = 0;
        for item in self
            .db
            .raw()
            .iterator_cf(cf, IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(&prefix_key) {
                return Ok(page);
            }
            let key = std::str::from_utf8(&k[bucket.len() + 1..])
                .map_err(|_| NodeError::BadMetadata("record key is not UTF-8".into()))?;
            if Some(key) == after {
                continue;
            }
            scanned += 1;
            let mut record = decode_stored(&v)?;
            if summary {
                record.chunks = Vec::new();
                record.inline = None;
            }
            if tombstones || !record.deleted {
                page.records.push(record);
            }
            if page.records.len() >= limit || scanned >= MAX_LIST_SCAN {
                page.next_after = Some(key.to_string());
                return Ok(page);
            }
        }
        Ok(page)
    }

    /// Every record in database-key order after `after` (a key returned earlier), at
    /// most `limit`, tombstones included: for rebalance and repair.
    pub fn scan(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<(Vec<u8>, ObjectRecord)>> {
        self.scan_with(after, limit, decode_stored)
    }

    /// [`Self::scan`], each record with the bytes it arrived as (to be passed on as is:
    /// fields this version does not know survive a hand-off).
    pub fn scan_stored(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, StoredRecord)>> {
        self.scan_with(after, limit, StoredRecord::of)
    }

    fn scan_with<T>(
        &self,
        after: Option<&[u8]>,
        limit: usize,
        read: impl Fn(&[u8]) -> Result<T>,
    ) -> Result<Vec<(Vec<u8>, T)>> {
        let cf = self.db.cf(CF_RECORDS)?;
        let mode = match after {
            Some(a) => IteratorMode::From(a, Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut out = Vec::new();
        for item in self.db.raw().iterator_cf(cf, mode) {
            let (k, v) = item?;
            if Some(k.as_ref()) == after {
                continue;
            }
            out.push((k.to_vec(), read(&v)?));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Drops this node's copy of a record that now lives elsewhere, unless a newer one
    /// arrived meanwhile. Returns whether it was removed.
    pub fn remove_if(&self, record: &ObjectRecord) -> Result<bool> {
        let _guard = self.lock(&record.bucket, &record.key);
        match self.stored_ts(&db_key(&record.bucket, &record.key))? {
            Some(ts) if ts == record.ts => {
                let cf = self.db.cf(CF_RECORDS)?;
                self.db.raw().delete_cf_opt(
                    cf,
                    db_key(&record.bucket, &record.key),
                    &sync_write(),
                )?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
