//! The chunk store's file side: reading and writing chunk files, unchecked reads for
//! receivers that verify themselves, and quarantine of bad copies.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

use bytes::Bytes;
use kura_cluster::range::ByteSpan;
use kura_cluster::verify::{self, BlockCv};
use kura_cluster::ChunkId;

use super::*;

/// `len` bytes of `file` from `start`, read into fresh memory without zeroing it first
/// (a `vec![0; len]` + `read_exact_at` spent ~3.5 % of a node's CPU on uncached range
/// reads in `memset`); `UnexpectedEof` if the file is shorter.
fn read_at(file: &File, start: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut f = file;
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(len);
    f.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() < len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

/// Bytes a streamed chunk read reads from its file per step: 256 KiB is a handful of
/// steps per chunk (each a hop to a blocking thread), while an answer waiting on a slow
/// reader holds only this much of the file in memory.
pub const STREAM_PIECE: usize = 256 * 1024;

/// A span of a chunk file that was there in full when opened, sent piece by piece
/// ([`FileSpan::into_stream`]) for a receiver that verifies every byte itself.
pub struct FileSpan {
    file: File,
    at: u64,
    end: u64,
}

impl FileSpan {
    /// Bytes it will send.
    pub fn len(&self) -> u64 {
        self.end - self.at
    }

    /// Whether it sends nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The span's bytes, [`STREAM_PIECE`] at a time, each read on a blocking thread. A
    /// file that shrinks while it is sent ends the stream with an error (the receiver
    /// sees the answer break off, never short bytes passed for whole).
    pub fn into_stream(self) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
        futures::stream::unfold(Some(self), |state| async move {
            let mut span = state?;
            if span.is_empty() {
                return None;
            }
            let piece = tokio::task::spawn_blocking(move || {
                let len = (span.len() as usize).min(STREAM_PIECE);
                let read = read_at(&span.file, span.at, len);
                span.at += len as u64;
                (span, read)
            })
            .await;
            match piece {
                Ok((span, Ok(buf))) => Some((Ok(Bytes::from(buf)), Some(span))),
                Ok((_, Err(e))) => Some((Err(e), None)),
                Err(e) => Some((Err(std::io::Error::other(e)), None)),
            }
        })
    }
}

impl ChunkStore {
    /// Opens `span` of chunk `id`'s file to be streamed unchecked (see
    /// [`ChunkStore::read_unchecked`]): a missing or short file is caught here, before
    /// anything is sent, and quarantined.
    pub fn open_unchecked(&self, id: &ChunkId, span: ByteSpan) -> Result<FileSpan> {
        let opened = File::open(self.chunk_path(id)).and_then(|f| {
            let len = f.metadata()?.len();
            Ok((f, len))
        });
        match opened {
            Ok((file, len)) if len >= span.end => Ok(FileSpan {
                file,
                at: span.start,
                end: span.end,
            }),
            Ok(_) => {
                self.quarantine(id, "chunk file short on read")?;
                Err(NodeError::Corrupt(id.to_hex()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.quarantine(id, "chunk file missing on read")?;
                Err(NodeError::Corrupt(id.to_hex()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads `span` of chunk `id` without hashing it, for a receiver that verifies every
    /// byte itself (the gateway: whole chunks against their id, ranges with a proof), so
    /// each byte is hashed once on its way to a client instead of twice. A missing or
    /// short file is still caught here (and quarantined, as on a checked read).
    pub fn read_unchecked(
        &self,
        id: &ChunkId,
        entry: &IndexEntry,
        span: ByteSpan,
    ) -> Result<Bytes> {
        let bytes = match &entry.location {
            Location::Inline => self
                .db
                .raw()
                .get_cf(self.db.cf(CF_INLINE)?, id.as_bytes())?
                .filter(|d| d.len() as u64 == entry.size)
                .map(|d| Bytes::from(d).slice(span.start as usize..span.end as usize)),
            Location::File { .. } => {
                let len = (span.end - span.start) as usize;
                match File::open(self.chunk_path(id)).and_then(|f| read_at(&f, span.start, len)) {
                    Ok(buf) => Some(Bytes::from(buf)),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof
                        ) =>
                    {
                        None
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        match bytes {
            Some(b) => Ok(b),
            None => {
                self.quarantine(id, "chunk file missing or short on read")?;
                Err(NodeError::Corrupt(id.to_hex()))
            }
        }
    }

    // ---- Reading and writing files ----

    pub(super) fn read_file_span(
        &self,
        id: &ChunkId,
        entry: &IndexEntry,
        cvs: &[BlockCv],
        span: ByteSpan,
    ) -> Result<Option<Bytes>> {
        if verify::root_of(cvs, entry.size) != Some(id.as_hash()) {
            return Ok(None);
        }
        let file = match File::open(self.chunk_path(id)) {
            Ok(f) => f,
            // Indexed but missing: as bad as corrupt, and handled the same way.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let (start, end, first) = verify::covering_blocks(span.start, span.end, entry.size);
        let buf = match read_at(&file, start, (end - start) as usize) {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if !verify::verify_blocks(cvs, first, &buf) {
            return Ok(None);
        }
        let bytes = Bytes::from(buf);
        Ok(Some(bytes.slice(
            (span.start - start) as usize..(span.end - start) as usize,
        )))
    }

    pub(super) fn write_file(&self, id: &ChunkId, data: &[u8]) -> Result<()> {
        let tmp = self
            .tmp_dir
            .join(format!("{}.{:016x}", id.to_hex(), rand::random::<u64>()));
        let result = (|| -> Result<()> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            let dest = self.chunk_path(id);
            fs::rename(&tmp, &dest)?;
            fsync_dir(dest.parent().unwrap_or(&self.chunk_dir))?;
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Whether the stored copy is physically there with the right length (a cheap
    /// dedup check; content is verified on every read and by scrub).
    pub(super) fn copy_present(&self, id: &ChunkId, entry: &IndexEntry) -> Result<bool> {
        match entry.location {
            Location::Inline => Ok(true),
            Location::File { .. } => match fs::metadata(self.chunk_path(id)) {
                Ok(m) => Ok(m.len() == entry.size),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e.into()),
            },
        }
    }

    // ---- Quarantine ----

    /// Moves a bad copy out of the store: its index entry goes, its bytes go to
    /// `quarantine/` for inspection, and a record stays in the quarantine table. Re-checks
    /// under the lock so a copy that a concurrent put just replaced is left alone.
    pub(super) fn quarantine(&self, id: &ChunkId, reason: &str) -> Result<()> {
        let _guard = self.lock(id);
        let Some(entry) = self.entry(id)? else {
            return Ok(());
        };
        let still_bad = match &entry.location {
            Location::Inline => {
                let data = self
                    .db
                    .raw()
                    .get_cf(self.db.cf(CF_INLINE)?, id.as_bytes())?;
                data.is_none_or(|d| ChunkId::of(&d) != *id)
            }
            Location::File { cvs } => {
                let whole = ByteSpan {
                    start: 0,
                    end: entry.size,
                };
                self.read_file_span(id, &entry, cvs, whole)?.is_none()
            }
        };
        if !still_bad {
            return Ok(());
        }
        tracing::warn!(chunk = %id, reason, "quarantining corrupt chunk copy");
        let note = serde_json::json!({
            "reason": reason,
            "size": entry.size,
            "at_ms": kura_cluster::hlc::wall_ms(),
        });
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.db.cf(CF_CHUNKS)?, id.as_bytes());
        batch.delete_cf(self.db.cf(CF_INLINE)?, id.as_bytes());
        batch.put_cf(self.db.cf(CF_QUARANTINE)?, id.as_bytes(), note.to_string());
        self.db.raw().write_opt(batch, &sync_write())?;
        if matches!(entry.location, Location::File { .. }) {
            let dest = self.quarantine_dir.join(format!(
                "{}.{}",
                id.to_hex(),
                kura_cluster::hlc::wall_ms()
            ));
            match fs::rename(self.chunk_path(id), dest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.forget(entry.size);
        self.quarantined.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
