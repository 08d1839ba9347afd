//! Verified block streams: a span of a chunk read from a node in the proof format
//! (see [`crate::client::PROOF_QUERY`]) and handed out one verified block at a time. The
//! reader forwards a block as soon as it is proven to belong to the chunk, and holds one
//! block (plus what the connection buffers), never the whole chunk.

use bytes::{Bytes, BytesMut};

use crate::client::{PROOF_CVS_HEADER, PROOF_SIZE_HEADER, PROOF_START_HEADER};
use crate::range::ByteSpan;
use crate::verify::{self, BlockCv, VERIFY_BLOCK_LEN};
use crate::{ChunkId, Error, Result};

/// Most block CVs a proof answer may announce: a chunk of 4 GiB. Chunks are at most
/// 16 MiB; this only bounds what a confused or hostile answer makes a reader allocate.
const MAX_PROOF_CVS: u64 = 65_536;

/// One span of one chunk, being read block by block from one node's answer.
pub struct BlockReader {
    id: ChunkId,
    resp: reqwest::Response,
    /// The chunk's block CVs, proven to merge to `id` (empty for a one-block chunk,
    /// which is hashed whole).
    cvs: Vec<BlockCv>,
    size: u64,
    /// What the caller asked for.
    span: ByteSpan,
    /// Chunk offset of the next block to hand out.
    at: u64,
    /// Where the blocks covering `span` end.
    end: u64,
    /// Body bytes received and not handed out yet (a slice of what the connection
    /// delivered: a block inside one delivery is handed out without a copy).
    left: Bytes,
}

impl BlockReader {
    /// Reads the proof header of `resp` (a successful proof answer for `span` of `id`)
    /// and the block CVs that start its body, and checks that they merge to `id`.
    pub(crate) async fn open(id: ChunkId, span: ByteSpan, resp: reqwest::Response) -> Result<Self> {
        let corrupt = |what: &str| Error::Corrupt(format!("{id}: {what}"));
        let num = |name: &str| -> Result<u64> {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| corrupt(&format!("proof answer without {name}")))
        };
        let (size, start, ncvs) = (
            num(PROOF_SIZE_HEADER)?,
            num(PROOF_START_HEADER)?,
            num(PROOF_CVS_HEADER)?,
        );
        if ncvs > MAX_PROOF_CVS
            || span.start >= span.end
            || span.end > size
            || start != verify::covering_blocks(span.start, span.end, size).0
        {
            return Err(corrupt("proof answer does not fit the span asked for"));
        }
        let mut reader = Self {
            id,
            resp,
            cvs: Vec::new(),
            size,
            span,
            at: start,
            end: verify::covering_blocks(span.start, span.end, size).1,
            left: Bytes::new(),
        };
        let cv_bytes = reader.take(ncvs as usize * 32).await?;
        reader.cvs = cv_bytes
            .chunks_exact(32)
            .map(|c| <[u8; 32]>::try_from(c).map_err(|_| corrupt("block CV")))
            .collect::<Result<_>>()?;
        let proven = if reader.cvs.is_empty() {
            // A one-block chunk has no CVs: it is hashed whole, so it must be read whole.
            size <= VERIFY_BLOCK_LEN && start == 0
        } else {
            verify::root_of(&reader.cvs, size) == Some(id.as_hash())
        };
        if !proven {
            return Err(corrupt("block CVs do not merge to the chunk id"));
        }
        Ok(reader)
    }

    /// The next `n` bytes of the body: a slice of one delivery when it holds them all,
    /// else copied into a buffer of exactly `n` bytes (never a growing one: a reader's
    /// memory is one block).
    async fn take(&mut self, n: usize) -> Result<Bytes> {
        if self.left.len() >= n {
            return Ok(self.left.split_to(n));
        }
        let mut out = BytesMut::with_capacity(n);
        out.extend_from_slice(&self.left);
        self.left = Bytes::new();
        while out.len() < n {
            let Some(mut piece) = self.resp.chunk().await? else {
                return Err(Error::Truncated {
                    chunk: self.id.to_hex(),
                    at: self.at,
                });
            };
            let want = (n - out.len()).min(piece.len());
            out.extend_from_slice(&piece.split_to(want));
            self.left = piece;
        }
        Ok(out.freeze())
    }

    /// The chunk's block CVs, proven to merge to its id (empty for a one-block chunk).
    pub fn cvs(&self) -> &[BlockCv] {
        &self.cvs
    }

    /// Chunk offset of the next byte of the span this reader will hand out: where
    /// another replica takes over if this one fails.
    pub fn position(&self) -> u64 {
        self.at.max(self.span.start).min(self.span.end)
    }

    /// The next verified piece of the span (one block's worth, cut to the span), or
    /// `None` at its end. A block that does not match its CV is [`Error::Corrupt`].
    pub async fn next_block(&mut self) -> Result<Option<Bytes>> {
        if self.at >= self.end {
            return Ok(None);
        }
        let len = VERIFY_BLOCK_LEN.min(self.size - self.at);
        let block = self.take(len as usize).await?;
        let index = (self.at / VERIFY_BLOCK_LEN) as usize;
        let good = if self.cvs.is_empty() {
            ChunkId::of(&block) == self.id
        } else {
            verify::verify_blocks(&self.cvs, index, &block)
        };
        if !good {
            return Err(Error::Corrupt(format!("{}: block {index}", self.id)));
        }
        let from = self.span.start.max(self.at) - self.at;
        let to = self.span.end.min(self.at + len) - self.at;
        self.at += len;
        Ok(Some(block.slice(from as usize..to as usize)))
    }

    /// The rest of the span, verified, in one buffer (no copy when it is one block).
    pub async fn collect(mut self) -> Result<Bytes> {
        let mut pieces = Vec::new();
        while let Some(b) = self.next_block().await? {
            pieces.push(b);
        }
        Ok(match pieces.len() {
            1 => pieces.swap_remove(0),
            _ => pieces.concat().into(),
        })
    }
}
