//! Chunk reads as streams of verified blocks: the first block goes to the client as
//! soon as it is proven (see `kura_cluster::blocks`), and a read holds one block at a
//! time, not the chunk. A replica that fails or stalls mid-answer is replaced by the
//! next one from the offset reached, so a client sees either the right bytes or a
//! truncated transfer, never wrong bytes.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use kura_cluster::blocks::BlockReader;
use kura_cluster::peers::Plan;
use kura_cluster::range::ByteSpan;
use kura_cluster::ChunkId;

use super::local::{LocalFailure, LocalRead};
use super::{Cluster, Peer};
use crate::error::{GatewayError, Result};

/// How long a chunk read waits for the next block of an open answer before it moves
/// on to another replica: a 64 KiB block takes well under a millisecond from a healthy
/// node, so 10 s only ever fires on a node that hung mid-answer.
pub const BLOCK_WAIT: Duration = Duration::from_secs(10);

/// The verified pieces of a chunk span, in order.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Where a chunk read's blocks come from.
enum Source {
    /// A replica's answer.
    Remote(BlockReader),
    /// A replica's file on this machine.
    Local(LocalRead),
}

/// One chunk span being read.
struct ChunkRead {
    cluster: Arc<Cluster>,
    id: ChunkId,
    size: u64,
    span: ByteSpan,
    hot_extras: Vec<String>,
    /// Chunk offset of the next byte to hand out.
    at: u64,
    /// The replica being read, and its answer (or its file).
    reader: Option<(Arc<Peer>, Source)>,
    /// Replicas that failed this read.
    tried: Vec<String>,
    /// A local read failed: the rest goes over the network.
    local_failed: bool,
    /// Pieces kept for the chunk cache (a whole chunk read while the cache is on).
    keep: Option<Vec<Bytes>>,
    /// An error to hand out next (the first open failed), then the end.
    failed: Option<GatewayError>,
    done: bool,
}

impl Cluster {
    /// `span` of chunk `id` (of `size` bytes) as verified pieces: from the chunk cache
    /// when it holds the chunk, else from the best replica, opened here (hedged to a
    /// second replica if the first is slow to answer) and read block by block as the
    /// stream is polled. `hot_extras`: nodes holding extra copies of a hot object's
    /// chunk. A whole chunk read is cached; a chunk read in part twice is fetched whole
    /// into the cache in the background (see `crate::cache`).
    pub async fn open_chunk(
        self: &Arc<Self>,
        id: ChunkId,
        size: u64,
        span: ByteSpan,
        hot_extras: Vec<String>,
    ) -> ChunkStream {
        if let Some(cached) = self.cached_chunk(&id, span) {
            return cached;
        }
        self.metrics.chunk_cache_misses.inc();
        let whole = span.start == 0 && span.end == size;
        if !whole && self.chunk_cache.partial_miss(&id) {
            self.cache_in_background(id, size, hot_extras.clone());
        }
        self.read_chunk(id, size, span, hot_extras, whole).await
    }

    /// `span` of chunk `id` as one piece, when the chunk cache holds the chunk (counted
    /// as a hit); `None` otherwise (nothing counted).
    pub fn cached_chunk(&self, id: &ChunkId, span: ByteSpan) -> Option<ChunkStream> {
        let bytes = self.chunk_cache.get(id, span)?;
        self.metrics.chunk_cache_hits.inc();
        Some(Box::pin(futures::stream::once(async { Ok(bytes) })))
    }

    /// Reads `span` of chunk `id` from the replicas (not the cache); `keep`: a whole
    /// chunk, put in the cache (if on) once read.
    pub(super) async fn read_chunk(
        self: &Arc<Self>,
        id: ChunkId,
        size: u64,
        span: ByteSpan,
        hot_extras: Vec<String>,
        keep: bool,
    ) -> ChunkStream {
        let mut read = ChunkRead {
            cluster: self.clone(),
            id,
            size,
            span,
            hot_extras,
            at: span.start,
            reader: None,
            tried: Vec::new(),
            local_failed: false,
            keep: (keep && self.chunk_cache.enabled()).then(Vec::new),
            failed: None,
            done: span.is_empty(),
        };
        if !read.done {
            read.failed = read.open().await.err();
        }
        Box::pin(futures::stream::unfold(read, ChunkRead::step))
    }

    /// Fetches chunk `id` whole into the chunk cache, in the background.
    fn cache_in_background(self: &Arc<Self>, id: ChunkId, size: u64, hot_extras: Vec<String>) {
        let this = self.clone();
        tokio::spawn(async move {
            let all = ByteSpan {
                start: 0,
                end: size,
            };
            // Read whole: the stream caches it at its end.
            let mut s = this.read_chunk(id, size, all, hot_extras, true).await;
            while let Some(piece) = futures::StreamExt::next(&mut s).await {
                if let Err(e) = piece {
                    tracing::debug!(chunk = %id, error = %e, "caching a chunk read in part failed");
                    return;
                }
            }
        });
    }
}

impl ChunkRead {
    /// Opens the rest of the span on the best replica not tried yet, hedged.
    async fn open(&mut self) -> Result<()> {
        let c = self.cluster.clone();
        let order: Vec<Arc<Peer>> = c
            .read_candidates(&self.id, self.hot_extras.clone())
            .into_iter()
            .filter(|n| !self.tried.contains(&n.entry.id))
            .collect();
        let rest = ByteSpan {
            start: self.at,
            end: self.span.end,
        };
        if let Some(local) = self.local_source(&order, rest) {
            self.reader = Some(local);
            return Ok(());
        }
        let whole = rest.start == 0 && rest.end == self.size;
        let what = if whole {
            "chunk_get"
        } else {
            "chunk_get_range"
        };
        let id = self.id;
        let plan = Plan::hedged_read(order.len());
        let mut replies = c
            .peers
            .replicated(&order, plan, c.hedge.delay(), what, |node| async move {
                node.client.open_blocks(&id, rest).await
            })
            .await;
        if replies.hedged > 0 {
            c.metrics.hedged_reads.inc();
        }
        for (node, e) in &replies.failed {
            c.report_read_failure(node, &id, e);
            self.tried.push(node.entry.id.clone());
        }
        let Some(reply) = replies.ok.pop() else {
            return Err(GatewayError::ChunkUnavailable(format!(
                "{id} ({})",
                replies.failure_summary()
            )));
        };
        c.hedge.record(reply.took);
        if c.local_reads && order.iter().any(|p| p.local.chunk_dir().is_some()) {
            c.cvs.insert(id, reply.value.cvs());
        }
        self.reader = Some((reply.peer, Source::Remote(reply.value)));
        Ok(())
    }

    /// A read of the rest from the file of a replica on this machine, when there is one
    /// and the chunk's block CVs are known.
    fn local_source(&self, order: &[Arc<Peer>], rest: ByteSpan) -> Option<(Arc<Peer>, Source)> {
        let c = &self.cluster;
        if self.local_failed || !c.local_reads {
            return None;
        }
        let (peer, dir) = order
            .iter()
            .find_map(|p| p.local.chunk_dir().map(|d| (p.clone(), d)))?;
        let cvs = c.cvs.get(&self.id, self.size)?;
        let read = LocalRead::new(dir, self.id, (cvs, c.cvs.shared()), self.size, rest);
        Some((peer, Source::Local(read)))
    }

    /// The span is read: the chunk goes into the cache if it was kept.
    fn finish(&mut self) {
        self.done = true;
        self.reader = None;
        if let Some(keep) = self.keep.take() {
            let whole: Bytes = keep.concat().into();
            self.cluster.chunk_cache.insert(self.id, whole);
        }
    }

    /// Hands out a verified piece (kept for the cache if the chunk is); the read is
    /// finished with its last piece, not at the next poll: a response with a known
    /// length is not polled past its last byte.
    fn hand_out(mut self, piece: Bytes) -> (Result<Bytes>, Self) {
        if let Some(keep) = &mut self.keep {
            keep.push(piece.clone());
        }
        if self.at >= self.span.end {
            if matches!(self.reader, Some((_, Source::Local(_)))) {
                self.cluster.count_local(Ok(()));
            }
            self.finish();
        }
        (Ok(piece), self)
    }

    /// A local read of `peer`'s file failed: the rest is read over the network (from
    /// `peer` too, unless its file held bad bytes, which it is asked to check).
    fn local_failed(&mut self, peer: &Arc<Peer>, e: LocalFailure) {
        self.cluster.count_local(Err(&e));
        self.local_failed = true;
        self.reader = None;
        match e {
            LocalFailure::Corrupt(why) => {
                let e = kura_cluster::Error::Corrupt(format!("{} (local file: {why})", self.id));
                self.cluster.report_read_failure(peer, &self.id, &e);
                self.tried.push(peer.entry.id.clone());
            }
            LocalFailure::Absent => {
                tracing::debug!(node = %peer.entry.id, chunk = %self.id, "no local chunk file")
            }
            e => {
                tracing::warn!(node = %peer.entry.id, chunk = %self.id, error = %e, "local chunk read failed")
            }
        }
    }

    /// The next piece, moving to another replica when the one being read fails.
    async fn step(mut self) -> Option<(Result<Bytes>, Self)> {
        if self.done {
            return None;
        }
        if let Some(e) = self.failed.take() {
            self.done = true;
            return Some((Err(e), self));
        }
        loop {
            let Some((peer, reader)) = self.reader.as_mut() else {
                if let Err(e) = self.open().await {
                    self.done = true;
                    return Some((Err(e), self));
                }
                continue;
            };
            let reader = match reader {
                Source::Remote(r) => r,
                Source::Local(local) => {
                    let piece = match tokio::time::timeout(BLOCK_WAIT, local.next_piece()).await {
                        Ok(r) => r,
                        Err(_) => Err(LocalFailure::Stalled),
                    };
                    match piece {
                        Ok(Some(piece)) => {
                            self.at = local.position();
                            return Some(self.hand_out(piece));
                        }
                        Ok(None) => {
                            self.finish();
                            return None;
                        }
                        Err(e) => {
                            let peer = peer.clone();
                            self.local_failed(&peer, e);
                            continue;
                        }
                    }
                }
            };
            match tokio::time::timeout(BLOCK_WAIT, reader.next_block()).await {
                Ok(Ok(Some(piece))) => {
                    self.at = reader.position();
                    return Some(self.hand_out(piece));
                }
                Ok(Ok(None)) => {
                    self.finish();
                    return None;
                }
                Ok(Err(e)) => {
                    self.cluster.report_read_failure(peer, &self.id, &e);
                    if e.is_unreachable() {
                        peer.health.mark_down();
                    }
                }
                Err(_) => {
                    tracing::warn!(node = %peer.entry.id, chunk = %self.id, "replica stalled mid-answer");
                    peer.health.mark_down();
                }
            }
            self.tried.push(peer.entry.id.clone());
            self.reader = None;
        }
    }
}
