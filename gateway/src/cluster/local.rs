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
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use kura_cluster::range::ByteSpan;
use kura_cluster::verify::{self, BlockCv, VERIFY_BLOCK_LEN};
use kura_cluster::ChunkId;
use prometheus_client::encoding::EncodeLabelSet;
use quick_cache::sync::Cache;
use quick_cache::Weighter;

use super::open_files::OpenFiles;
use super::read_bufs::ReadBufs;
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

/// What a chunk's CVs weigh in [`CV_CACHE_BYTES`]: its 32-byte id and a CV per block.
#[derive(Clone, Copy)]
struct CvWeight;

impl Weighter<ChunkId, Arc<[BlockCv]>> for CvWeight {
    fn weight(&self, _: &ChunkId, cvs: &Arc<[BlockCv]>) -> u64 {
        32 + cvs.len() as u64 * 32
    }
}

/// A chunk of 4 MiB has 64 block CVs: what [`CV_CACHE_BYTES`] holds of them, to size
/// the map.
const CV_CACHE_CHUNKS: u64 = CV_CACHE_BYTES / (32 + 64 * 32);

/// Verified block CVs by chunk, and what local reads share. Looked up by every local
/// read (a `quick_cache` map, as `SubCache`).
pub struct CvCache(Cache<ChunkId, Arc<[BlockCv]>, CvWeight>, LocalShared);

impl Default for CvCache {
    fn default() -> Self {
        Self::keeping_files_for(super::OPEN_FILE_KEEP)
    }
}

/// What local reads share: the sub-block CVs known (see `sub_blocks`), the chunk
/// files kept open (see `open_files`) and the range reads' buffers (see `read_bufs`).
/// Cloning shares them.
#[derive(Clone)]
pub struct LocalShared {
    pub subs: SubCache,
    pub files: OpenFiles,
    pub bufs: ReadBufs,
}

impl CvCache {
    /// Keeping the chunk files local reads open for `keep`.
    pub fn keeping_files_for(keep: std::time::Duration) -> Self {
        let shared = LocalShared {
            subs: SubCache::default(),
            files: OpenFiles::keeping_for(keep),
            bufs: ReadBufs::default(),
        };
        Self(
            Cache::with_weighter(CV_CACHE_CHUNKS as usize, CV_CACHE_BYTES, CvWeight),
            shared,
        )
    }

    /// The CVs of chunk `id` (of `size` bytes) if known; a one-block chunk needs none (it
    /// is hashed whole).
    pub fn get(&self, id: &ChunkId, size: u64) -> Option<Arc<[BlockCv]>> {
        if size <= VERIFY_BLOCK_LEN {
            return Some(Arc::from([]));
        }
        self.0.get(id)
    }

    /// What local reads share (not copied).
    pub fn shared(&self) -> LocalShared {
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
/// pieces read and verified (on blocking threads) while the caller sends this one.
pub struct LocalRead {
    file: ChunkFile,
    cvs: Arc<[BlockCv]>,
    subs: SubCache,
    bufs: ReadBufs,
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
    /// Reads `span` of chunk `id` (`size` bytes, block CVs `cvs`) from `dir`, starting
    /// on its first piece at once (a download opens the next chunk while it sends this
    /// one; one piece, not [`LOCAL_AHEAD`], so 64 streams stay within ~100 MiB).
    pub fn new(
        dir: Arc<PathBuf>,
        id: ChunkId,
        (cvs, shared): (Arc<[BlockCv]>, LocalShared),
        size: u64,
        span: ByteSpan,
    ) -> Self {
        let mut read = Self {
            file: ChunkFile {
                dir,
                id,
                size,
                files: shared.files,
            },
            cvs,
            subs: shared.subs,
            bufs: shared.bufs,
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
    /// or `None` at the span's end. A failed read closes the file if it was kept open.
    pub async fn next_piece(&mut self) -> Result<Option<Bytes>, LocalFailure> {
        self.ask(LOCAL_AHEAD);
        let piece = match self.ahead.pop_front() {
            None => return Ok(None),
            Some(Piece::Ready(piece)) => piece,
            Some(Piece::Reading(reading)) => reading
                .await
                .map_err(|e| LocalFailure::Io(std::io::Error::other(e)))
                .and_then(|piece| piece),
        };
        let piece = piece.inspect_err(|_| self.file.files.forget(&self.file.dir, &self.file.id))?;
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
            if from == self.left.start && to == self.left.end {
                let known = (&self.cvs[..], &self.subs);
                if let Some(piece) = read_now(&self.file, known, &self.bufs, (from, to)) {
                    self.ahead.push_back(Piece::Ready(piece));
                    continue;
                }
            }
            let (file, cvs) = (self.file.clone(), self.cvs.clone());
            self.ahead
                .push_back(Piece::Reading(tokio::task::spawn_blocking(move || {
                    read_verified(&file, &cvs, from, to)
                })));
        }
    }
}

/// A chunk's file in a co-located replica's chunk directory, opened through
/// [`OpenFiles`].
#[derive(Clone)]
struct ChunkFile {
    dir: Arc<PathBuf>,
    id: ChunkId,
    /// The chunk's length: the file's is checked when it is opened.
    size: u64,
    files: OpenFiles,
}

impl ChunkFile {
    /// The file, kept open by an earlier read or opened now (this may block).
    fn open(&self) -> Result<Arc<File>, LocalFailure> {
        if let Some(file) = self.files.get(&self.dir, &self.id) {
            return Ok(file);
        }
        let path = kura_cluster::layout::chunk_file(&self.dir, &self.id);
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LocalFailure::Absent,
            _ => LocalFailure::Io(e),
        })?;
        self.checked(file)
    }

    /// The file without blocking: kept open, or its path in the kernel's lookup cache
    /// (`openat2` with `RESOLVE_CACHED`). `None` when opening it would wait.
    fn open_now(&self) -> Option<Result<Arc<File>, LocalFailure>> {
        use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
        use rustix::io::Errno;
        if let Some(file) = self.files.get(&self.dir, &self.id) {
            return Some(Ok(file));
        }
        let path = kura_cluster::layout::chunk_file(&self.dir, &self.id);
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        match rustix::fs::openat2(CWD, path, flags, Mode::empty(), ResolveFlags::CACHED) {
            Ok(fd) => match self.checked(File::from(fd)) {
                Err(LocalFailure::Io(_)) => None,
                r => Some(r),
            },
            // A cached lookup that finds nothing is an answer.
            Err(Errno::NOENT) => Some(Err(LocalFailure::Absent)),
            Err(_) => None,
        }
    }

    /// `file` just opened, its length checked, kept for the next reads.
    fn checked(&self, file: File) -> Result<Arc<File>, LocalFailure> {
        check_len(&file, self.size)?;
        let file = Arc::new(file);
        self.files.keep(&self.dir, self.id, file.clone());
        Ok(file)
    }
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

/// Bytes `from..to` of the chunk in `file`, read with the blocks covering them and
/// verified (this may block).
fn read_verified(
    file: &ChunkFile,
    cvs: &[BlockCv],
    from: u64,
    to: u64,
) -> Result<Bytes, LocalFailure> {
    let (start, end, _) = verify::covering_blocks(from, to, file.size);
    let len = (end - start) as usize;
    let open = file.open()?;
    // Not zeroed first (see the node's `read_at`): the reads fill it, at their own
    // offsets (a kept file is read by several at once).
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let at = start + buf.len() as u64;
        let spare = rustix::buffer::spare_capacity(&mut buf);
        match rustix::io::pread(&*open, spare, at) {
            Ok(0) => return Err(LocalFailure::Corrupt(format!("ends before byte {end}"))),
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(LocalFailure::Io(e.into())),
        }
    }
    verified(buf, &file.id, cvs, file.size, (from, to))
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

/// Bytes `from..to` of the chunk in `file`, verified, read on the calling thread if
/// that cannot block: the file is open or its path in the kernel's lookup cache
/// ([`ChunkFile::open_now`]) and the bytes are in the page cache (`preadv2` with
/// `RWF_NOWAIT`). `None` when either would wait (or the kernel lacks them): the caller
/// reads on a blocking thread instead. Blocks whose sub-block CVs are known are read
/// and hashed only where the span touches them (`sub_blocks`), into a buffer of `bufs`.
fn read_now(
    file: &ChunkFile,
    (cvs, subs): (&[BlockCv], &SubCache),
    bufs: &ReadBufs,
    (from, to): (u64, u64),
) -> Option<Result<Bytes, LocalFailure>> {
    use rustix::io::ReadWriteFlags;
    let open = match file.open_now()? {
        Ok(open) => open,
        Err(e) => return Some(Err(e)),
    };
    let (id, size) = (&file.id, file.size);
    let plan = subs.plan(id, cvs, size, (from, to));
    let mut buf = bufs.take((plan.end - plan.start) as usize);
    let read = rustix::io::preadv2(
        &*open,
        &mut [std::io::IoSliceMut::new(buf.as_mut())],
        plan.start,
        ReadWriteFlags::NOWAIT,
    );
    match read {
        Ok(n) if n == buf.as_ref().len() => {
            Some(if subs.verify(&plan, id, cvs, size, buf.as_ref()) {
                let at = |x: u64| (x - plan.start) as usize;
                Ok(buf.freeze().slice(at(from)..at(to)))
            } else {
                Err(LocalFailure::Corrupt(format!(
                    "bytes {}..{}",
                    plan.start, plan.end
                )))
            })
        }
        // Not all in the page cache (or short: the blocking read tells which).
        _ => None,
    }
}
