//! Downloads: an object's byte span is mapped to chunk spans, opened in order with a
//! small read-ahead and streamed out one verified block at a time (see
//! `Cluster::open_chunk`). Memory per download is a block per chunk open, plus what the
//! connections to the nodes buffer. A small object's bytes are
//! in its record ([`object_body`]).

use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use futures::future::{self, Either};
use futures::{FutureExt, StreamExt};
use kura_cluster::range::ByteSpan;
use kura_cluster::record::ObjectRecord;
use kura_cluster::ChunkId;

use crate::cluster::ChunkStream;
use crate::error::{GatewayError, Result};
use crate::Gateway;

/// Chunk opens in flight per download. Each open connection to a node holds what it
/// buffered of its answer (up to a few hundred KiB), so this is what a download's
/// memory is made of. Measured with 64 clients streaming uncached 1 GiB objects
/// (BENCHMARKS.md, "The long tail"): 2 → 106 MiB above idle, 1 → 69 MiB, one client's
/// GET 1,358 vs 1,247 MB/s (runs vary by ±10 %).
pub const READ_AHEAD_CHUNKS: usize = 1;

/// Most chunk pieces a body is built from at once when the chunk cache holds them all.
/// A range within a chunk is one piece and one across a chunk boundary two; a longer
/// span is streamed as read, so a response never pins more than this many cached
/// chunks against eviction.
pub const CACHED_BODY_MAX_PIECES: usize = 2;

/// The body of `span` of an object, for every API that reads one: the inline content of
/// a small object, else its chunks streamed and verified. Reads that reach the nodes
/// count towards making an object hot (extra replicas spread node load, which cached
/// reads do not add to).
///
/// Inline content is served as the record holds it: a record read from the nodes had
/// it checked against its etag on arrival (`Cluster::read_record`), and one this
/// gateway wrote was built from the bytes it hashed. Hashing it here again cost 5 % of
/// the gateway's CPU per small GET served from the record cache (BENCHMARKS.md).
pub async fn object_body(gw: &Arc<Gateway>, record: &ObjectRecord, span: ByteSpan) -> Result<Body> {
    if span.is_empty() {
        return Ok(Body::empty());
    }
    if let Some(bytes) = &record.inline {
        let part = usize::try_from(span.start)
            .ok()
            .zip(usize::try_from(span.end).ok())
            .filter(|&(_, end)| end <= bytes.len())
            .map(|(start, end)| bytes.slice(start..end))
            .ok_or_else(|| {
                GatewayError::ChunkUnavailable(format!(
                    "inline content of {}/{} is shorter than its size",
                    record.bucket, record.key
                ))
            })?;
        gw.cluster
            .metrics
            .bytes_downloaded
            .inc_by(part.len() as u64);
        return Ok(Body::from(part));
    }
    let pieces = chunk_spans(record, span);
    if let Some(body) = cached_body(gw, &pieces) {
        return Ok(body);
    }
    if !cached(gw, &pieces) {
        gw.hot.record_read(&gw.cluster, &gw.hot, record);
    }
    stream_pieces(gw.clone(), pieces).await
}

/// The chunk spans covering `span` of an object: (chunk id, chunk size, span in chunk).
pub fn chunk_spans(record: &ObjectRecord, span: ByteSpan) -> Vec<(ChunkId, u64, ByteSpan)> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    for c in &record.chunks {
        let (start, end) = (offset, offset + c.size);
        if end > span.start && start < span.end {
            let inner = ByteSpan {
                start: span.start.max(start) - start,
                end: span.end.min(end) - start,
            };
            out.push((c.id, c.size, inner));
        }
        if start >= span.end {
            break;
        }
        offset = end;
    }
    out
}

/// The body of `pieces` (from [`chunk_spans`]) when they are few and all in the chunk
/// cache: built at once, so the response leaves with its headers, with no task or stream
/// per request (the path of every cached range). `None`: stream them.
fn cached_body(gw: &Gateway, pieces: &[(ChunkId, u64, ByteSpan)]) -> Option<Body> {
    let cache = &gw.cluster.chunk_cache;
    if pieces.len() > CACHED_BODY_MAX_PIECES || !cache.enabled() {
        return None;
    }
    let mut parts = Vec::with_capacity(pieces.len());
    for (id, _, inner) in pieces {
        parts.push(cache.get(id, *inner)?);
    }
    let metrics = &gw.cluster.metrics;
    metrics.chunk_cache_hits.inc_by(parts.len() as u64);
    let len: usize = parts.iter().map(Bytes::len).sum();
    metrics.bytes_downloaded.inc_by(len as u64);
    Some(match <[Bytes; 1]>::try_from(parts) {
        Ok([one]) => Body::from(one),
        Err(parts) => Body::from_stream(futures::stream::iter(
            parts.into_iter().map(Ok::<_, std::convert::Infallible>),
        )),
    })
}

/// Whether every chunk of `pieces` (from [`chunk_spans`]) is in the chunk cache.
pub fn cached(gw: &Gateway, pieces: &[(ChunkId, u64, ByteSpan)]) -> bool {
    pieces
        .iter()
        .all(|(id, _, _)| gw.cluster.chunk_cache.contains(id))
}

/// The response body streaming `pieces` (a span of an object, from [`chunk_spans`]) in
/// order. Its first verified piece is read before the body is returned, so a response
/// leaves with its first bytes (one write, not the headers and then the body), a span
/// read in one piece (a range within a chunk) is a body of known bytes with no stream
/// behind it, and a first chunk that no replica can serve is an error status. A later
/// chunk that no replica can serve ends the body with an error (the client sees a
/// truncated transfer, never wrong bytes).
pub async fn stream_pieces(
    gw: Arc<Gateway>,
    pieces: Vec<(ChunkId, u64, ByteSpan)>,
) -> Result<Body> {
    let downloaded = gw.cluster.metrics.bytes_downloaded.clone();
    let mut pieces = pieces.into_iter();
    let Some((id, size, inner)) = pieces.next() else {
        return Ok(Body::empty());
    };
    // The first chunk is opened here, with no task: a task would cost the response a
    // turn of the runtime's queue before its first byte (~20 ms with 500 busy
    // connections, for every range that crosses into a second chunk).
    let extras = gw.hot.extras_of(&id);
    let opened = gw.cluster.open_chunk(id, size, inner, extras).await;
    let mut stream: ChunkStream = match pieces.len() {
        0 => opened,
        _ => Box::pin(opened.chain(chunk_streams(gw, pieces.collect()))),
    };
    let Some(first) = stream.next().await.transpose()? else {
        return Ok(Body::empty());
    };
    downloaded.inc_by(first.len() as u64);
    // A stream whose end is known now has no more to send (a read finishes with its
    // last piece): the body is that piece.
    let next = match stream.next().now_or_never() {
        Some(None) => return Ok(Body::from(first)),
        Some(Some(next)) => Some(next),
        None => None,
    };
    let rest = futures::stream::iter(next).chain(stream).map(move |r| {
        if let Ok(b) = &r {
            downloaded.inc_by(b.len() as u64);
        }
        r.map_err(|e| {
            tracing::error!(error = %e, "download aborted");
            std::io::Error::other(e)
        })
    });
    Ok(Body::from_stream(
        futures::stream::once(async { Ok(first) }).chain(rest),
    ))
}

/// The verified pieces of `pieces` (several chunks), each chunk opened on a task unless
/// the chunk cache holds it.
fn chunk_streams(gw: Arc<Gateway>, pieces: Vec<(ChunkId, u64, ByteSpan)>) -> ChunkStream {
    let stream = futures::stream::iter(pieces)
        .map(move |(id, size, inner)| {
            // A cached chunk is there at once: a task per chunk made a whole GET of a
            // cached object 7 % slower than with none (BENCHMARKS.md, session 23).
            if let Some(cached) = gw.cluster.cached_chunk(&id, inner) {
                return Either::Left(future::ready(Ok(cached)));
            }
            let gw = gw.clone();
            // Spawned, so that with a read-ahead above 1 the opens ahead (asked, hedged,
            // their proofs checked) progress while the current chunk streams; with
            // `READ_AHEAD_CHUNKS` = 1, `buffered` asks for the next open only once the
            // current chunk has streamed.
            Either::Right(tokio::spawn(async move {
                let extras = gw.hot.extras_of(&id);
                gw.cluster.open_chunk(id, size, inner, extras).await
            }))
        })
        .buffered(READ_AHEAD_CHUNKS)
        .map(|opened| match opened {
            Ok(stream) => stream,
            Err(e) => {
                let e = GatewayError::Task(e);
                Box::pin(futures::stream::once(async { Err(e) })) as ChunkStream
            }
        })
        .flatten();
    Box::pin(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_cluster::record::ChunkRef;

    #[test]
    fn spans_map_to_chunks() {
        let mut r = ObjectRecord::tombstone("b", "k", kura_cluster::hlc::Clock::new(1).now());
        r.chunks = (0..3u8)
            .map(|i| ChunkRef {
                id: ChunkId::of(&[i]),
                size: if i == 2 { 5 } else { 10 },
            })
            .collect();
        let s = |a, b| ByteSpan { start: a, end: b };
        let got: Vec<ByteSpan> = chunk_spans(&r, s(5, 22)).into_iter().map(|x| x.2).collect();
        assert_eq!(got, vec![s(5, 10), s(0, 10), s(0, 2)]);
        let got: Vec<ByteSpan> = chunk_spans(&r, s(10, 11))
            .into_iter()
            .map(|x| x.2)
            .collect();
        assert_eq!(got, vec![s(0, 1)]);
        assert_eq!(chunk_spans(&r, s(24, 25)).len(), 1);
    }
}
