//! Chunk files kept open between local reads (see `local`): a range of a chunk read a
//! moment ago skips the `openat2` + `fstat` + `close` that each read cost (~7 % of the
//! gateway's CPU per uncached 64 KiB range, BENCHMARKS.md "Where an uncached range's CPU
//! goes now").
//!
//! Content addressing makes a kept descriptor safe to read: a chunk's file only ever
//! holds that chunk's bytes, and every read is verified. A file the node replaced since
//! (repaired) or removed (collected, quarantined) is still the old inode behind a kept
//! descriptor: its bytes fail verification (the descriptor is dropped at once and the
//! read goes on elsewhere, as for any bad file) or are the right bytes. What a kept
//! descriptor delays is freeing a removed file's space, so none is kept longer than
//! [`OPEN_FILE_KEEP`] ([`OpenFiles::close_stale`] runs that often).

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kura_cluster::ChunkId;
use quick_cache::sync::Cache;

/// Chunk files kept open at most: 1024 descriptors cover 4 GiB of 4 MiB chunks read in
/// the last [`OPEN_FILE_KEEP`], well under the open-file limit `kura` raises to the
/// hard limit at start (a busy gateway's connections need far more).
pub const OPEN_FILES: usize = 1024;

/// How long a chunk file is read through the descriptor opened first: a file the node
/// removed keeps its space at most this long after (plus one sweep); reads of the
/// same chunk within it save their open.
pub const OPEN_FILE_KEEP: Duration = Duration::from_secs(5);

/// A chunk file opened by a local read, its length checked.
#[derive(Clone)]
struct Kept {
    /// Holds the directory's allocation, whose address is in the key.
    _dir: Arc<PathBuf>,
    file: Arc<File>,
    opened: Instant,
}

/// A kept file's key: the chunk, and the address of its directory's `Arc` (a chunk may
/// have a replica in each of several nodes' directories on this machine; each node's
/// directory is one `Arc`, kept alive by the entry, so an address names one directory).
type Key = (ChunkId, usize);

fn key(dir: &Arc<PathBuf>, id: &ChunkId) -> Key {
    (*id, Arc::as_ptr(dir) as usize)
}

/// Open chunk files by chunk and directory. Cloning shares it.
#[derive(Clone)]
pub struct OpenFiles {
    kept: Arc<Cache<Key, Kept>>,
    /// How long a file is kept ([`OPEN_FILE_KEEP`]).
    keep: Duration,
}

impl Default for OpenFiles {
    fn default() -> Self {
        Self::keeping_for(OPEN_FILE_KEEP)
    }
}

impl OpenFiles {
    /// Keeping each file for `keep`.
    pub fn keeping_for(keep: Duration) -> Self {
        Self {
            kept: Arc::new(Cache::new(OPEN_FILES)),
            keep,
        }
    }

    fn fresh(&self, kept: &Kept) -> bool {
        kept.opened.elapsed() < self.keep
    }

    /// The file of chunk `id` in `dir` if it was opened less than [`OPEN_FILE_KEEP`]
    /// ago.
    pub fn get(&self, dir: &Arc<PathBuf>, id: &ChunkId) -> Option<Arc<File>> {
        let kept = self.kept.get(&key(dir, id))?;
        self.fresh(&kept).then_some(kept.file)
    }

    /// Keeps `file`, the chunk `id`'s file in `dir`, just opened and checked.
    pub fn keep(&self, dir: &Arc<PathBuf>, id: ChunkId, file: Arc<File>) {
        let kept = Kept {
            _dir: dir.clone(),
            file,
            opened: Instant::now(),
        };
        self.kept.insert(key(dir, &id), kept);
    }

    /// Drops the kept file of chunk `id` in `dir` (a read of it failed).
    pub fn forget(&self, dir: &Arc<PathBuf>, id: &ChunkId) {
        self.kept.remove(&key(dir, id));
    }

    /// Closes the files kept longer than [`OPEN_FILE_KEEP`].
    pub fn close_stale(&self) {
        self.kept.retain(|_, kept| self.fresh(kept));
    }

    /// Files kept now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether none is kept.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Runs [`OpenFiles::close_stale`] as often as files are kept.
    pub async fn close_stale_forever(self) {
        let mut tick = tokio::time::interval(self.keep);
        loop {
            tick.tick().await;
            self.close_stale();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_file_is_found_for_its_directory_only_and_until_forgotten() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("c");
        std::fs::write(&path, b"x").unwrap();
        let (dir, other) = (
            Arc::new(tmp.path().to_path_buf()),
            Arc::new(PathBuf::from("/elsewhere")),
        );
        let id = ChunkId::of(b"x");
        let files = OpenFiles::default();
        assert!(files.get(&dir, &id).is_none());
        files.keep(&dir, id, Arc::new(File::open(&path).unwrap()));
        assert!(files.get(&dir, &id).is_some());
        assert!(files.get(&other, &id).is_none(), "another node's copy");
        files.close_stale();
        assert_eq!(files.len(), 1, "fresh: kept");
        files.forget(&dir, &id);
        assert!(files.get(&dir, &id).is_none() && files.is_empty());
    }

    #[test]
    fn files_kept_past_their_time_are_not_read_and_are_closed() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("c");
        std::fs::write(&path, b"x").unwrap();
        let dir = Arc::new(tmp.path().to_path_buf());
        let id = ChunkId::of(b"x");
        let file = Arc::new(File::open(&path).unwrap());
        let files = OpenFiles::keeping_for(Duration::ZERO);
        files.keep(&dir, id, file.clone());
        assert!(files.get(&dir, &id).is_none(), "stale: opened again");
        assert_eq!(Arc::strong_count(&file), 2, "still held until the sweep");
        files.close_stale();
        assert!(files.is_empty());
        assert_eq!(Arc::strong_count(&file), 1, "closed by the sweep");
    }
}
