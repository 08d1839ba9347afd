//! The chunk store: immutable, content-addressed chunks on one node.
//!
//! Layout and invariants:
//! - Chunks of at most [`INLINE_THRESHOLD`] bytes live inline in RocksDB (no inode each).
//! - Larger chunks live one file each at `chunks/<first two hex>/<id>`, so a byte range
//!   is one positioned read. Files are written to `tmp/`, fsync'd, renamed into place,
//!   the directory fsync'd, and only then is the index entry written (fsync'd WAL).
//!   **A chunk exists for readers iff its index entry exists**, and the entry is written
//!   last: a crash at any instant leaves at worst an unreferenced file, never a torn one
//!   that could be served.
//! - Every read is verified against the chunk id before a byte leaves the node (see
//!   `kura_cluster::verify`); a copy that fails is moved to `quarantine/` and forgotten.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use kura_cluster::client::ChunkInfo;
use kura_cluster::range::ByteSpan;
use kura_cluster::verify::{self, BlockCv, VERIFY_BLOCK_LEN};
use kura_cluster::ChunkId;
use rocksdb::{Direction, IteratorMode, WriteBatch};

mod files;

pub use files::{FileSpan, STREAM_PIECE};

/// The bytes of a proof answer: read into memory (checked reads, small chunks), or a
/// span of the chunk file streamed as it is sent (unchecked reads: a node holds a
/// piece per answer, not the span).
pub enum SpanData {
    /// Read already.
    Memory(Bytes),
    /// To be streamed.
    File(FileSpan),
}

impl SpanData {
    /// Bytes it holds or will send.
    pub fn len(&self) -> u64 {
        match self {
            Self::Memory(b) => b.len() as u64,
            Self::File(f) => f.len(),
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

use crate::db::{sync_write, Db, CF_CHUNKS, CF_INLINE, CF_PINS, CF_QUARANTINE, CF_TOUCHED};
use crate::error::{NodeError, Result};

// ---- Tunables ----

/// Chunks up to this size are stored inline in RocksDB. 64 KiB: thumbnails, playlists
/// and small images then cost no inode and one database read, while RocksDB values stay
/// small enough not to bloat compaction. Must not exceed [`VERIFY_BLOCK_LEN`], so an
/// inline chunk is always verified by hashing it whole.
pub const INLINE_THRESHOLD: u64 = 64 * 1024;
const _: () = assert!(INLINE_THRESHOLD <= VERIFY_BLOCK_LEN);

/// Largest chunk the node accepts. 16 MiB: four times the default 4 MiB chunk, so the
/// gateway's chunk size can be raised without touching nodes, while one request's
/// buffered body stays bounded.
pub const MAX_CHUNK_BYTES: u64 = 16 * 1024 * 1024;

/// Number of lock stripes serialising writers of the same chunk id (put, delete and
/// quarantine of one id must not interleave). 64 keeps collisions between unrelated
/// chunks rare at any realistic write concurrency.
const LOCK_STRIPES: usize = 64;

const ENTRY_VERSION: u8 = 1;
const KIND_INLINE: u8 = 0;
const KIND_FILE: u8 = 1;

// ---- Index entries ----

/// Where a chunk's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// In the inline column family.
    Inline,
    /// In its own file; with the block CVs that verify any range of it.
    File { cvs: Vec<BlockCv> },
}

/// The chunk index's value for one chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Length in bytes.
    pub size: u64,
    /// Where the bytes are.
    pub location: Location,
}

impl IndexEntry {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + 32 * verify::block_count(self.size));
        out.push(ENTRY_VERSION);
        match &self.location {
            Location::Inline => out.push(KIND_INLINE),
            Location::File { .. } => out.push(KIND_FILE),
        }
        out.extend_from_slice(&self.size.to_le_bytes());
        if let Location::File { cvs } = &self.location {
            for cv in cvs {
                out.extend_from_slice(cv);
            }
        }
        out
    }

    /// Parses an index value (the inverse of `encode`); refuses anything malformed.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |why: &str| NodeError::BadMetadata(format!("chunk index entry: {why}"));
        if bytes.len() < 10 || bytes[0] != ENTRY_VERSION {
            return Err(bad("wrong length or version"));
        }
        let size = u64::from_le_bytes(bytes[2..10].try_into().map_err(|_| bad("size"))?);
        let location = match bytes[1] {
            KIND_INLINE => Location::Inline,
            KIND_FILE => {
                let rest = &bytes[10..];
                if !rest.len().is_multiple_of(32) {
                    return Err(bad("ragged block CVs"));
                }
                let cvs = rest
                    .chunks_exact(32)
                    .map(|c| c.try_into().map_err(|_| bad("cv")))
                    .collect::<Result<Vec<BlockCv>>>()?;
                if cvs.len() != file_cv_count(size) {
                    return Err(bad("block CVs do not fit the size"));
                }
                Location::File { cvs }
            }
            _ => return Err(bad("unknown kind")),
        };
        Ok(Self { size, location })
    }
}

/// Block CVs a file chunk of `size` bytes keeps: one per block, none for a chunk of one
/// block (verified whole; see `kura_cluster::verify::block_cvs_checked`).
pub fn file_cv_count(size: u64) -> usize {
    if size > verify::VERIFY_BLOCK_LEN {
        verify::block_count(size)
    } else {
        0
    }
}

// ---- Public interface ----

/// Outcome of a put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The chunk was written.
    Created,
    /// A healthy copy was already there (dedup); nothing was written.
    Existed,
}

/// The chunk store of one node.
pub struct ChunkStore {
    db: std::sync::Arc<Db>,
    chunk_dir: PathBuf,
    tmp_dir: PathBuf,
    quarantine_dir: PathBuf,
    stripes: Vec<Mutex<()>>,
    chunks: AtomicU64,
    bytes: AtomicU64,
    quarantined: AtomicU64,
}

impl ChunkStore {
    /// Opens the store under `data_dir`, sharing `db`. Clears leftovers of writes a crash
    /// interrupted (files in `tmp/`) and counts what is stored.
    pub fn open(data_dir: &Path, db: std::sync::Arc<Db>) -> Result<Self> {
        let chunk_dir = data_dir.join(kura_cluster::layout::CHUNK_DIR);
        let tmp_dir = data_dir.join("tmp");
        let quarantine_dir = data_dir.join("quarantine");
        for dir in [&chunk_dir, &tmp_dir, &quarantine_dir] {
            fs::create_dir_all(dir)?;
        }
        for shard in 0..=255u8 {
            fs::create_dir_all(chunk_dir.join(format!("{shard:02x}")))?;
        }
        for leftover in fs::read_dir(&tmp_dir)? {
            let path = leftover?.path();
            tracing::info!(path = %path.display(), "removing interrupted chunk write");
            fs::remove_file(&path)?;
        }
        fsync_dir(data_dir)?;
        let store = Self {
            db,
            chunk_dir,
            tmp_dir,
            quarantine_dir,
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            chunks: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            quarantined: AtomicU64::new(0),
        };
        let (mut n, mut b) = (0, 0);
        for item in store
            .db
            .raw()
            .iterator_cf(store.db.cf(CF_CHUNKS)?, IteratorMode::Start)
        {
            let (_, v) = item?;
            n += 1;
            b += IndexEntry::decode(&v)?.size;
        }
        store.chunks.store(n, Ordering::Relaxed);
        store.bytes.store(b, Ordering::Relaxed);
        let q = store
            .db
            .raw()
            .iterator_cf(store.db.cf(CF_QUARANTINE)?, IteratorMode::Start)
            .count() as u64;
        store.quarantined.store(q, Ordering::Relaxed);
        Ok(store)
    }

    /// Stores `data` as chunk `id`, durably, after checking that it hashes to `id`.
    pub fn put(&self, id: &ChunkId, data: &[u8]) -> Result<PutOutcome> {
        let size = data.len() as u64;
        if size > MAX_CHUNK_BYTES {
            return Err(NodeError::TooLarge {
                limit: MAX_CHUNK_BYTES,
            });
        }
        let cvs = verify::block_cvs_checked(id, data)
            .ok_or_else(|| NodeError::HashMismatch(id.to_hex()))?;
        let _guard = self.lock(id);
        let now = kura_cluster::hlc::wall_ms().to_be_bytes();
        if let Some(entry) = self.entry(id)? {
            if self.copy_present(id, &entry)? {
                // A dedup hit is a new reference in the making: restart its GC grace
                // period (under the same lock GC deletes under). Not synced: losing it
                // in a crash also loses the upload it belonged to.
                self.db
                    .raw()
                    .put_cf(self.db.cf(CF_TOUCHED)?, id.as_bytes(), now)?;
                return Ok(PutOutcome::Existed);
            }
        }
        let cf_chunks = self.db.cf(CF_CHUNKS)?;
        let mut batch = WriteBatch::default();
        let location = if size <= INLINE_THRESHOLD {
            batch.put_cf(self.db.cf(CF_INLINE)?, id.as_bytes(), data);
            Location::Inline
        } else {
            self.write_file(id, data)?;
            Location::File { cvs }
        };
        batch.put_cf(
            cf_chunks,
            id.as_bytes(),
            IndexEntry { size, location }.encode(),
        );
        batch.put_cf(self.db.cf(CF_TOUCHED)?, id.as_bytes(), now);
        crate::catchup::log::log_chunk(&self.db, &mut batch, id)?;
        self.db.raw().write_opt(batch, &sync_write())?;
        self.chunks.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        Ok(PutOutcome::Created)
    }

    /// The index entry of `id`, if the chunk is stored.
    pub fn entry(&self, id: &ChunkId) -> Result<Option<IndexEntry>> {
        let cf = self.db.cf(CF_CHUNKS)?;
        match self.db.raw().get_pinned_cf(cf, id.as_bytes())? {
            Some(v) => Ok(Some(IndexEntry::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Reads `span` (or all) of chunk `id`, verified. A copy that fails verification is
    /// quarantined and [`NodeError::Corrupt`] returned; no byte of it is served.
    pub fn read(&self, id: &ChunkId, entry: &IndexEntry, span: Option<ByteSpan>) -> Result<Bytes> {
        let span = span.unwrap_or(ByteSpan {
            start: 0,
            end: entry.size,
        });
        let verified = match &entry.location {
            Location::Inline => {
                let cf = self.db.cf(CF_INLINE)?;
                let data = self.db.raw().get_cf(cf, id.as_bytes())?;
                data.filter(|d| ChunkId::of(d) == *id).map(Bytes::from)
            }
            Location::File { cvs } => self.read_file_span(id, entry, cvs, span)?,
        };
        match verified {
            Some(bytes) if matches!(entry.location, Location::Inline) => {
                Ok(bytes.slice(span.start as usize..span.end as usize))
            }
            Some(bytes) => Ok(bytes),
            None => {
                self.quarantine(id, "verification failed on read")?;
                Err(NodeError::Corrupt(id.to_hex()))
            }
        }
    }

    /// Reads the block-aligned span covering `span` together with the chunk's block CVs,
    /// so that the receiver can verify the bytes itself (see `kura_cluster::verify`).
    /// Returns (CVs, offset of the first byte returned, bytes). Chunks of one block or
    /// less come whole, with no CVs. With `check`, the bytes are read and verified here
    /// first, like every read; without, the receiver's verification is the only one (it
    /// reports a bad copy back, see [`ChunkStore::verify`]) and the bytes of a file are
    /// streamed as they are sent ([`SpanData::File`]).
    pub fn read_with_proof(
        &self,
        id: &ChunkId,
        entry: &IndexEntry,
        span: ByteSpan,
        check: bool,
    ) -> Result<(Vec<BlockCv>, u64, SpanData)> {
        let whole = ByteSpan {
            start: 0,
            end: entry.size,
        };
        match &entry.location {
            Location::File { cvs } if entry.size > VERIFY_BLOCK_LEN => {
                let (start, end, _) = verify::covering_blocks(span.start, span.end, entry.size);
                let aligned = ByteSpan { start, end };
                let data = if check {
                    SpanData::Memory(self.read(id, entry, Some(aligned))?)
                } else {
                    SpanData::File(self.open_unchecked(id, aligned)?)
                };
                Ok((cvs.clone(), start, data))
            }
            _ if check => Ok((Vec::new(), 0, SpanData::Memory(self.read(id, entry, None)?))),
            _ => {
                let data = self.read_unchecked(id, entry, whole)?;
                Ok((Vec::new(), 0, SpanData::Memory(data)))
            }
        }
    }

    /// Deletes chunk `id`; `false` if it was not stored.
    pub fn delete(&self, id: &ChunkId) -> Result<bool> {
        let _guard = self.lock(id);
        let Some(entry) = self.entry(id)? else {
            return Ok(false);
        };
        self.remove_locked(id, &entry)?;
        Ok(true)
    }

    /// Deletes chunk `id` if it was not touched since `before_ms` (garbage collection:
    /// the check and the delete happen under the id's lock, so a concurrent re-offer of
    /// the chunk either lands first and keeps it, or after and stores it anew).
    /// Returns the bytes freed, if it was deleted.
    pub fn delete_if_untouched(&self, id: &ChunkId, before_ms: u64) -> Result<Option<u64>> {
        let _guard = self.lock(id);
        let Some(entry) = self.entry(id)? else {
            return Ok(None);
        };
        if self.touched_ms(id)? >= before_ms {
            return Ok(None);
        }
        self.remove_locked(id, &entry)?;
        Ok(Some(entry.size))
    }

    /// Pins this node's copy of `id` until `until_ms` (an extra copy of hot content, which
    /// rebalance must not hand off). `false` if the chunk is not stored here.
    pub fn pin(&self, id: &ChunkId, until_ms: u64) -> Result<bool> {
        let _guard = self.lock(id);
        if self.entry(id)?.is_none() {
            return Ok(false);
        }
        self.db
            .raw()
            .put_cf(self.db.cf(CF_PINS)?, id.as_bytes(), until_ms.to_be_bytes())?;
        Ok(true)
    }

    /// Restarts `id`'s GC grace period if this node holds it (under the id's lock, as
    /// GC deletes); `false` if it does not. Not synced, like a dedup hit's touch: it only
    /// has to outlive the record write that follows it.
    pub fn touch(&self, id: &ChunkId) -> Result<bool> {
        let _guard = self.lock(id);
        match self.entry(id)? {
            Some(entry) if self.copy_present(id, &entry)? => {
                let now = kura_cluster::hlc::wall_ms().to_be_bytes();
                self.db
                    .raw()
                    .put_cf(self.db.cf(CF_TOUCHED)?, id.as_bytes(), now)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Until when `id` is pinned (0 if not).
    pub fn pinned_until(&self, id: &ChunkId) -> Result<u64> {
        Ok(self
            .db
            .raw()
            .get_cf(self.db.cf(CF_PINS)?, id.as_bytes())?
            .and_then(|v| v.as_slice().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    /// When `id` was last written or re-offered (0 if never recorded).
    pub fn touched_ms(&self, id: &ChunkId) -> Result<u64> {
        Ok(self
            .db
            .raw()
            .get_cf(self.db.cf(CF_TOUCHED)?, id.as_bytes())?
            .and_then(|v| v.as_slice().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    /// Removes a chunk whose lock the caller holds.
    fn remove_locked(&self, id: &ChunkId, entry: &IndexEntry) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.db.cf(CF_CHUNKS)?, id.as_bytes());
        batch.delete_cf(self.db.cf(CF_INLINE)?, id.as_bytes());
        batch.delete_cf(self.db.cf(CF_TOUCHED)?, id.as_bytes());
        batch.delete_cf(self.db.cf(CF_PINS)?, id.as_bytes());
        self.db.raw().write_opt(batch, &sync_write())?;
        if matches!(entry.location, Location::File { .. }) {
            remove_if_exists(&self.chunk_path(id))?;
        }
        self.forget(entry.size);
        Ok(())
    }

    /// Chunks in id order, after `after` (exclusive), at most `limit`.
    pub fn list(&self, after: Option<&ChunkId>, limit: usize) -> Result<Vec<ChunkInfo>> {
        let cf = self.db.cf(CF_CHUNKS)?;
        let mode = match after {
            Some(a) => IteratorMode::From(a.as_bytes(), Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut out = Vec::new();
        for item in self.db.raw().iterator_cf(cf, mode) {
            let (k, v) = item?;
            let id = ChunkId::from_slice(&k)
                .ok_or_else(|| NodeError::BadMetadata("chunk index key".into()))?;
            if Some(&id) == after {
                continue;
            }
            out.push(ChunkInfo {
                id,
                size: IndexEntry::decode(&v)?.size,
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Re-reads and re-hashes a whole chunk; quarantines it if bad. Returns the bytes
    /// checked, or `None` if the chunk is no longer stored.
    pub fn verify(&self, id: &ChunkId) -> Result<Option<u64>> {
        let Some(entry) = self.entry(id)? else {
            return Ok(None);
        };
        match self.read(id, &entry, None) {
            Ok(_) => Ok(Some(entry.size)),
            Err(NodeError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// (chunk count, bytes of chunk data, quarantined count).
    pub fn usage(&self) -> (u64, u64, u64) {
        (
            self.chunks.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.quarantined.load(Ordering::Relaxed),
        )
    }

    /// The directory of chunk files (256 shard directories below it).
    pub(crate) fn chunk_dir(&self) -> &Path {
        &self.chunk_dir
    }

    /// Path of a file chunk (exposed for tests that corrupt bytes on disk).
    pub fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        kura_cluster::layout::chunk_file(&self.chunk_dir, id)
    }

    fn forget(&self, size: u64) {
        self.chunks.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(size, Ordering::Relaxed);
    }

    /// The lock every change of `id` happens under (writes, deletes, quarantine).
    pub(crate) fn lock(&self, id: &ChunkId) -> MutexGuard<'_, ()> {
        let stripe = id.as_bytes()[0] as usize % LOCK_STRIPES;
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entries_round_trip() {
        for entry in [
            IndexEntry {
                size: 10,
                location: Location::Inline,
            },
            IndexEntry {
                size: 3 * VERIFY_BLOCK_LEN + 1,
                location: Location::File {
                    cvs: vec![[7; 32]; 4],
                },
            },
        ] {
            assert_eq!(IndexEntry::decode(&entry.encode()).ok(), Some(entry));
        }
    }

    /// Found by fuzzing (fuzz/regressions/node_wire): a file entry whose CVs do not fit
    /// its size was accepted.
    #[test]
    fn file_entries_with_the_wrong_number_of_cvs_are_refused() {
        let mut bytes = vec![ENTRY_VERSION, KIND_FILE];
        bytes.extend_from_slice(&(3 * VERIFY_BLOCK_LEN).to_le_bytes());
        bytes.extend_from_slice(&[0; 32]);
        assert!(IndexEntry::decode(&bytes).is_err());
        bytes.extend_from_slice(&[0; 64]);
        assert!(IndexEntry::decode(&bytes).is_ok());
    }
}
