//! The node's RocksDB: one database, a column family per table.

use std::path::Path;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteOptions, DB};

use crate::error::{NodeError, Result};

/// Chunk index: chunk id (32 bytes) → [`crate::chunks::IndexEntry`].
pub const CF_CHUNKS: &str = "chunks";
/// Bytes of chunks small enough to live inline: chunk id → data.
pub const CF_INLINE: &str = "inline";
/// Quarantined chunks: chunk id → JSON reason and time.
pub const CF_QUARANTINE: &str = "quarantine";
/// Object records: `bucket \0 key` → JSON record.
pub const CF_RECORDS: &str = "records";
/// Node metadata: the cluster map, scrub cursor.
pub const CF_META: &str = "meta";
/// When each chunk was last written or re-offered: chunk id → ms since the epoch (u64
/// big-endian). Garbage collection never takes a chunk touched within its grace period.
pub const CF_TOUCHED: &str = "touched";

/// Extra copies a gateway placed for hot content: chunk id → pinned until (ms, u64
/// big-endian). Rebalance does not hand off a pinned copy.
pub const CF_PINS: &str = "pins";

/// What was stored when: `ms · kind · id` → empty (see `crate::catchup::log`).
pub const CF_WRITES: &str = "writes";

const ALL_CFS: [&str; 8] = [
    CF_CHUNKS,
    CF_INLINE,
    CF_QUARANTINE,
    CF_RECORDS,
    CF_META,
    CF_TOUCHED,
    CF_PINS,
    CF_WRITES,
];

/// The node's metadata database.
pub struct Db {
    db: DB,
}

impl Db {
    /// Opens (creating if needed) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Every acknowledged write is fsync'd through the WAL (see `sync_write`); a torn
        // WAL tail after a crash is dropped, never half-applied.
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::PointInTime);
        let cfs = ALL_CFS
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        Ok(Self { db })
    }

    /// The raw database.
    pub fn raw(&self) -> &DB {
        &self.db
    }

    /// A column family handle by name.
    pub fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| NodeError::BadMetadata(format!("missing column family {name}")))
    }
}

/// Write options for every acknowledged write: the WAL is fsync'd before returning.
pub fn sync_write() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    wo
}
