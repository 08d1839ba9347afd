//! Garbage collection: reclaiming the space of chunks no object references any more
//! (deleted or overwritten objects).
//!
//! The protocol, and why it never deletes a chunk a live or in-flight object needs:
//! 1. The pass notes its start time `T0`.
//! 2. It collects every chunk id referenced by any non-tombstone record on **every**
//!    readable node (stale versions included, which only keeps more). If any node cannot
//!    be asked, the pass stops without deleting anything — except a `removed` node that
//!    is gone: it takes no writes, and every record it held has N-1 other replicas.
//! 3. It deletes each local chunk that is not referenced and was last *touched* (written,
//!    or re-offered by a dedup'd upload) before `T0 − grace`, checking the touch time
//!    under the same per-id lock a PUT takes.
//!
//! A chunk of an upload still in flight was touched by its PUT less than `grace` ago, so
//! step 3 spares it (uploads must finish within the grace, 24 h by default). An upload
//! that re-uses an old unreferenced chunk (dedup) re-touches it: either the re-offer
//! takes the lock first (the chunk is then young and kept) or GC deleted it first (the
//! PUT then finds nothing and stores the chunk anew). A record written after step 2
//! references only chunks touched after `T0 − grace`, by the same argument.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kura_cluster::map::NodeState;
use kura_cluster::ChunkId;
use serde::{Deserialize, Serialize};

use crate::error::{NodeError, Result};
use crate::node::Node;

/// Default grace period: a chunk younger than a day is never collected, which bounds
/// the longest upload (from its first chunk to its record) to 24 hours.
pub const DEFAULT_GC_GRACE_SECS: u64 = 24 * 3600;

/// Default period of GC passes.
pub const DEFAULT_GC_INTERVAL_SECS: u64 = 3600;

/// Records fetched per page when collecting references.
const SCAN_PAGE: usize = 1000;

/// What a GC pass did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GcReport {
    /// Distinct chunk ids referenced cluster-wide.
    pub referenced: u64,
    /// Local chunks examined.
    pub scanned: u64,
    /// Chunks deleted.
    pub deleted: u64,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Unreferenced chunks spared because they are younger than the grace period.
    pub spared_young: u64,
}

/// Collects the chunk ids referenced by live records on this node and every peer.
async fn references(node: &Arc<Node>) -> Result<HashSet<ChunkId>> {
    let mut refs = HashSet::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let n = node.clone();
        let cursor = after.clone();
        let page =
            tokio::task::spawn_blocking(move || n.records.scan(cursor.as_deref(), SCAN_PAGE))
                .await??;
        let Some((last, _)) = page.last().cloned() else {
            break;
        };
        for (_, r) in page.into_iter().filter(|(_, r)| !r.deleted) {
            refs.extend(r.chunks.iter().map(|c| c.id));
        }
        after = Some(last);
    }
    let map = node.current_map();
    for entry in map
        .nodes
        .iter()
        .filter(|n| n.id != node.config.node_id && n.state.readable())
    {
        let peer = node.peers.peer_for(entry);
        let mut after: Option<String> = None;
        loop {
            let scan = peer.client.scan_records(after.as_deref(), SCAN_PAGE);
            let page = match node.peers.call(&peer, "record_scan", scan).await {
                Ok(p) => p,
                // A removed node that is gone is not waited for: every record it held
                // also lives on its N-1 other replicas, which are asked, and it took no
                // new writes since its removal. Any other silent node stops the pass.
                Err(e) if entry.state == NodeState::Removed => {
                    tracing::warn!(node = %entry.id, error = %e, "gc: removed node unreachable; skipped");
                    break;
                }
                Err(e) => {
                    return Err(NodeError::Unavailable(format!(
                        "GC needs every node's records; {} did not answer: {e}",
                        entry.id
                    )))
                }
            };
            for r in page.records.iter().filter(|r| !r.deleted) {
                refs.extend(r.chunks.iter().map(|c| c.id));
            }
            match page.next_after {
                Some(a) => after = Some(a),
                None => break,
            }
        }
    }
    Ok(refs)
}

/// Runs one GC pass with `grace`.
pub async fn run_pass(node: &Arc<Node>, grace: Duration) -> Result<GcReport> {
    let t0 = kura_cluster::hlc::wall_ms();
    let cutoff = t0.saturating_sub(grace.as_millis() as u64);
    let refs = references(node).await?;
    let mut report = GcReport {
        referenced: refs.len() as u64,
        ..Default::default()
    };
    let mut after: Option<ChunkId> = None;
    loop {
        let n = node.clone();
        let cursor = after;
        let batch = tokio::task::spawn_blocking(move || n.chunks.list(cursor.as_ref(), SCAN_PAGE))
            .await??;
        let Some(last) = batch.last().map(|c| c.id) else {
            break;
        };
        let garbage: Vec<ChunkId> = batch
            .iter()
            .map(|c| c.id)
            .filter(|id| !refs.contains(id))
            .collect();
        report.scanned += batch.len() as u64;
        let n = node.clone();
        let (deleted, freed, young) =
            tokio::task::spawn_blocking(move || -> Result<(u64, u64, u64)> {
                let (mut d, mut f, mut y) = (0, 0, 0);
                for id in garbage {
                    match n.chunks.delete_if_untouched(&id, cutoff)? {
                        Some(bytes) => {
                            d += 1;
                            f += bytes;
                        }
                        None => y += 1,
                    }
                }
                Ok((d, f, y))
            })
            .await??;
        report.deleted += deleted;
        report.freed_bytes += freed;
        report.spared_young += young;
        after = Some(last);
    }
    node.metrics.gc_deleted.inc_by(report.deleted);
    node.metrics.gc_freed_bytes.inc_by(report.freed_bytes);
    tracing::info!(
        deleted = report.deleted,
        freed = report.freed_bytes,
        spared = report.spared_young,
        "gc pass done"
    );
    Ok(report)
}

/// Runs a GC pass every `interval` (0: never).
pub async fn run_forever(node: Arc<Node>, interval: Duration, grace: Duration) {
    if interval.is_zero() {
        return;
    }
    loop {
        tokio::time::sleep(interval).await;
        if let Err(e) = run_pass(&node, grace).await {
            tracing::warn!(error = %e, "gc pass skipped");
        }
    }
}
