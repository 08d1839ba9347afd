//! Chunk reads from a co-located node's files (see `kura_cluster::peers::local`): the
//! gateway opens the replica's chunk file itself and verifies each block against the
//! chunk's block CVs, as it verifies a node's answer, instead of asking the node over
//! HTTP. Any failure (no file: the node keeps small chunks in its database; bytes that
//! fail verification; an I/O error) falls back to the network from the offset reached,
//! and bad bytes are reported to the node, which re-checks its copy.
//!
//! The block CVs come from the node once per chunk (the first read of a chunk is a
//! remote proof read, whose CVs are proven against the chunk id) and are kept in
//! [`CvCache`]: 32 bytes per 64 KiB block, 0.05 % of the data they cover.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use kura_cluster::range::ByteSpan;
use kura_cluster::verify::{self, BlockCv, VERIFY_BLOCK_LEN};
use kura_cluster::ChunkId;
use moka::sync::Cache;
use prometheus_client::encoding::EncodeLabelSet;

use super::sub_blocks::SubCache;

/// Memory for the block CVs of chunks read from local files: 32 MiB holds the CVs of
/// ~16,000 chunks of 4 MiB (64 GiB of data); a miss costs one remote read of the chunk.
pub const CV_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// Bytes a local read reads and verifies per step (on a blocking thread): a 64 KiB
/// range is one step, a whole 4 MiB chunk 16, and a stream holds one step in memory.
pub const LOCAL_PIECE: u64 = 256 * 1024;

/// Pieces a local read has in flight: while one is sent, the next ones are read and
/// hashed on other threads (one ahead left the cores idle a fifth of the time during a
/// whole-object GET).
pub const LOCAL_AHEAD: usize = 2;

/// Verified block CVs by chunk, and the sub-block CVs of blocks read (see `sub_blocks`).
pub struct CvCache(Cache<ChunkId, Arc<[BlockCv]>>, SubCache);

impl Default for CvCache {
    fn default() -> Self {
        Self(
            Cache::builder()
                .max_capacity(CV_CACHE_BYTES)
                .weigher(|_, cvs: &Arc<[BlockCv]>| {
                    u32::try_from(32 + cvs.len() * 32).unwrap_or(u32::MAX)
                })
                .build(),
            SubCache::default(),
        )
    }
}

impl CvCache {
    /// The CVs of chunk `id` (of `size` bytes) if known; a one-block chunk needs none (it
    /// is hashed whole).
    pub fn get(&self, id: &ChunkId, size: u64) -> Option<Arc<[BlockCv]>> {
        if size <= VERIFY_BLOCK_LEN {
            return Some(Arc::from([]));
        }
        self.0.get(id)
    }

    /// The sub-block CVs known (shared, not copied).
    pub fn subs(&self) -> SubCache {
        self.1.clone()
    }

    /// Keeps `cvs` of chunk `id`: CVs a proof answer proved to merge to `id`.
    pub fn insert(&self, id: ChunkId, cvs: &[BlockCv]) {
        if !cvs.is_empty() && !self.0.contains_key(&id) {
            self.0.insert(id, Arc::from(cvs));
        }
    }
}

/// Why a local read gave up (it falls back to the network).
#[derive(Debug, thiserror::Error)]
pub enum LocalFailure {
    /// No file: not stored here as a file (a small chunk kept in the node's database),
    /// or removed since (garbage collected, quarantined).
    #[error("no chunk file")]
    Absent,
    /// The file's bytes fail verification, or its length is wrong.
    #[error("chunk file failed verification: {0}")]
    Corrupt(String),
    /// Reading the file failed.
    #[error("reading the chunk file: {0}")]
    Io(#[from] std::io::Error),
    /// No block within the gateway's wait (a hung disk).
    #[error("the chunk file did not answer in time")]
    Stalled,
}

/// Labels of `kura_gateway_local_reads`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LocalLabels {
    /// `ok` (a span read whole), `absent`, `corrupt`, `io`, `stalled`.
    pub outcome: &'static str,
}

impl LocalFailure {
    /// Its metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Absent => "absent",
            Self::Corrupt(_) => "corrupt",
            Self::Io(_) => "io",
            Self::Stalled => "stalled",
        }
    }
}

/// A span of one chunk, read from a co-located replica's file piece by piece, the next
/// pieces read and verified (on blocking threads, each opening the file) while the
/// caller sends this one.
pub struct LocalRead {
    path: Arc<PathBuf>,
    id: ChunkId,
    cvs: Arc<[BlockCv]>,
    subs: SubCache,
    size: u64,
    /// What is left to hand out.
    left: ByteSpan,
    /// Where the pieces asked for so far end.
    asked: u64,
    /// The pieces being read, in order.
    ahead: VecDeque<Piece>,
}

/// A piece read at once, or being read on a blocking thread.
enum Piece {
    Ready(Result<Bytes, LocalFailure>),
    Reading(tokio::task::JoinHandle<Result<Bytes, LocalFailure>>),
}

impl LocalRead {
    /// Reads `span` of chunk `id` (`size` bytes, block CVs `cvs`, the sub-block CVs
    /// known `subs`) from `chunk_dir`, starting on its first piece at once (a download
    /// opens the next chunk while it sends this one; one piece, not [`LOCAL_AHEAD`], so
    /// 64 streams stay within ~100 MiB).
    pub fn new(
        chunk_dir: &std::path::Path,
        id: ChunkId,
        (cvs, subs): (Arc<[BlockCv]>, SubCache),
        size: u64,
        span: ByteSpan,
    ) -> Self {
        let mut read = Self {
            path: Arc::new(kura_cluster::layout::chunk_file(chunk_dir, &id)),
            id,
            cvs,
            subs,
            size,
            left: span,
            asked: span.start,
            ahead: VecDeque::new(),
        };
        read.ask(1);
        read
    }

    /// Chunk offset of the next byte it will hand out.
    pub fn position(&self) -> u64 {
        self.left.start
    }

    /// The next verified piece (at most [`LOCAL_PIECE`], ending on a block boundary),
    /// or `None` at the span's end.
    pub async fn next_piece(&mut self) -> Result<Option<Bytes>, LocalFailure> {
        self.ask(LOCAL_AHEAD);
        let piece = match self.ahead.pop_front() {
            None => return Ok(None),
            Some(Piece::Ready(piece)) => piece?,
            Some(Piece::Reading(reading)) => reading
                .await
                .map_err(|e| LocalFailure::Io(std::io::Error::other(e)))??,
        };
        self.left.start += piece.len() as u64;
        self.ask(LOCAL_AHEAD);
        Ok(Some(piece))
    }

    /// Starts reading pieces after those asked for, up to `most` in flight. A
    /// span of one piece (a range request) is read at once when that cannot block
    /// ([`read_now`]): no hop to a blocking thread and back.
    fn ask(&mut self, most: usize) {
        while self.ahead.len() < most && self.asked < self.left.end {
            let from = self.asked;
            let to = self
                .left
                .end
                .min(from - from % VERIFY_BLOCK_LEN + LOCAL_PIECE);
            self.asked = to;
            let (path, id, cvs, size) = (self.path.clone(), self.id, self.cvs.clone(), self.size);
            if from == self.left.start && to == self.left.end {
                if let Some(piece) = read_now(&path, &id, (&cvs, &self.subs), size, (from, to)) {
                    self.ahead.push_back(Piece::Ready(piece));
                    continue;
                }
            }
            self.ahead
                .push_back(Piece::Reading(tokio::task::spawn_blocking(move || {
                    let file = open_checked(&path, size)?;
                    read_verified(&file, &id, &cvs, size, from, to)
                })));
        }
    }
}

/// Opens a chunk file and checks its length.
fn open_checked(path: &std::path::Path, size: u64) -> Result<File, LocalFailure> {
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LocalFailure::Absent,
        _ => LocalFailure::Io(e),
    })?;
    check_len(&file, size)?;
    Ok(file)
}

/// Checks that a chunk file has the chunk's length.
fn check_len(file: &File, size: u64) -> Result<(), LocalFailure> {
    let len = file.metadata()?.len();
    if len != size {
        let why = format!("{len} bytes where the chunk has {size}");
        return Err(LocalFailure::Corrupt(why));
    }
    Ok(())
}

/// Bytes `from..to` of chunk `id`, read with the blocks covering them and verified.
fn read_verified(
    mut file: &File,
    id: &ChunkId,
    cvs: &[BlockCv],
    size: u64,
    from: u64,
    to: u64,
) -> Result<Bytes, LocalFailure> {
    let (start, end, _) = verify::covering_blocks(from, to, size);
    let len = (end - start) as usize;
    file.seek(SeekFrom::Start(start))?;
    // Not zeroed first (see the node's `read_at`): the read fills it.
    let mut buf = Vec::with_capacity(len);
    file.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() < len {
        return Err(LocalFailure::Corrupt(format!("ends before byte {end}")));
    }
    verified(buf, id, cvs, size, (from, to))
}

/// The bytes `from..to` of `covering` (the blocks covering them), after checking those
/// blocks against the chunk's CVs (or, for a one-block chunk, its id).
fn verified(
    covering: Vec<u8>,
    id: &ChunkId,
    cvs: &[BlockCv],
    size: u64,
    (from, to): (u64, u64),
) -> Result<Bytes, LocalFailure> {
    let (start, _, first) = verify::covering_blocks(from, to, size);
    let good = if cvs.is_empty() {
        ChunkId::of(&covering) == *id
    } else {
        verify::verify_blocks(cvs, first, &covering)
    };
    if !good {
        return Err(LocalFailure::Corrupt(format!("block {first}..")));
    }
    Ok(Bytes::from(covering).slice((from - start) as usize..(to - start) as usize))
}

/// Bytes `from..to` of chunk `id`, verified, read on the calling thread if that cannot
/// block: the file's path is in the kernel's lookup cache (`openat2` with
/// `RESOLVE_CACHED`) and the bytes are in the page cache (`preadv2` with `RWF_NOWAIT`).
/// `None` when either would wait (or the kernel lacks them): the caller reads on a
/// blocking thread instead. Blocks whose sub-block CVs are known are read and hashed
/// only where the span touches them (`sub_blocks`).
fn read_now(
    path: &std::path::Path,
    id: &ChunkId,
    (cvs, subs): (&[BlockCv], &SubCache),
    size: u64,
    (from, to): (u64, u64),
) -> Option<Result<Bytes, LocalFailure>> {
    use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
    use rustix::io::{Errno, ReadWriteFlags};
    let flags = OFlags::RDONLY | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat2(CWD, path, flags, Mode::empty(), ResolveFlags::CACHED) {
        Ok(fd) => fd,
        // A cached lookup that finds nothing is an answer.
        Err(Errno::NOENT) => return Some(Err(LocalFailure::Absent)),
        Err(_) => return None,
    };
    let file = File::from(fd);
    match check_len(&file, size) {
        Ok(()) => {}
        Err(LocalFailure::Io(_)) => return None,
        Err(e) => return Some(Err(e)),
    }
    let plan = subs.plan(id, cvs, size, (from, to));
    let mut buf = vec![0u8; (plan.end - plan.start) as usize];
    let read = rustix::io::preadv2(
        &file,
        &mut [std::io::IoSliceMut::new(&mut buf)],
        plan.start,
        ReadWriteFlags::NOWAIT,
    );
    match read {
        Ok(n) if n == buf.len() => Some(if subs.verify(&plan, id, cvs, size, &buf) {
            let at = |x: u64| (x - plan.start) as usize;
            Ok(Bytes::from(buf).slice(at(from)..at(to)))
        } else {
            Err(LocalFailure::Corrupt(format!(
                "bytes {}..{}",
                plan.start, plan.end
            )))
        }),
        // Not all in the page cache (or short: the blocking read tells which).
        _ => None,
    }
}
