//! The scrubber: re-hashes every stored chunk at a throttled rate, so silent corruption
//! is found before a reader needs the copy. Bad copies are quarantined by the chunk store.
//! After each pass, orphan chunk files are swept (`crate::orphans`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kura_cluster::client::ScrubReport;
use kura_cluster::ChunkId;
use rocksdb::WriteOptions;

use crate::db::CF_META;
use crate::error::{NodeError, Result};
use crate::node::Node;

/// Chunks fetched from the index per step; small enough that a pass resumes close to
/// where a restart interrupted it.
const SCRUB_BATCH: usize = 64;

/// Meta key of the scrubber's resume cursor (the last chunk id checked).
const CURSOR_KEY: &[u8] = b"scrub_cursor";

/// Runs one pass over every chunk. With `throttle` (bytes/s), sleeps so the pass never
/// reads faster than that; resumes from the persisted cursor, and persists it as it goes.
pub async fn run_pass(node: &Arc<Node>, throttle: Option<u64>) -> Result<ScrubReport> {
    let mut report = ScrubReport::default();
    let started = Instant::now();
    let mut after = if throttle.is_some() {
        load_cursor(node)?
    } else {
        None
    };
    loop {
        let n = node.clone();
        let cursor = after;
        let batch =
            tokio::task::spawn_blocking(move || n.chunks.list(cursor.as_ref(), SCRUB_BATCH))
                .await??;
        let Some(last) = batch.last().map(|c| c.id) else {
            break;
        };
        for info in batch {
            let n = node.clone();
            let outcome = tokio::task::spawn_blocking(move || n.chunks.verify(&info.id)).await?;
            match outcome {
                Ok(Some(bytes)) => {
                    report.checked += 1;
                    report.bytes += bytes;
                    node.metrics.scrub_chunks.inc();
                    node.metrics.scrub_bytes.inc_by(bytes);
                }
                Ok(None) => {}
                Err(NodeError::Corrupt(_)) => {
                    report.checked += 1;
                    report.corrupt += 1;
                    report.bytes += info.size;
                    node.metrics.scrub_corrupt.inc();
                    node.metrics.verify_failures.inc();
                }
                Err(e) => return Err(e),
            }
            if let Some(rate) = throttle.filter(|r| *r > 0) {
                let due = Duration::from_secs_f64(report.bytes as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        after = Some(last);
        if throttle.is_some() {
            save_cursor(node, Some(&last))?;
        }
    }
    if throttle.is_some() {
        save_cursor(node, None)?;
    }
    let n = node.clone();
    report.orphans =
        tokio::task::spawn_blocking(move || crate::orphans::sweep(&n.chunks)).await??;
    node.metrics.orphan_files_removed.inc_by(report.orphans);
    node.metrics.scrub_passes.inc();
    Ok(report)
}

/// The background scrubber: a throttled pass, a pause, forever. Disabled when the rate is 0.
pub async fn background(node: Arc<Node>, bytes_per_sec: u64, interval: Duration) {
    if bytes_per_sec == 0 {
        return;
    }
    loop {
        match run_pass(&node, Some(bytes_per_sec)).await {
            Ok(r) => tracing::info!(
                checked = r.checked,
                corrupt = r.corrupt,
                bytes = r.bytes,
                orphans = r.orphans,
                "scrub pass done"
            ),
            Err(e) => tracing::error!(error = %e, "scrub pass failed"),
        }
        tokio::time::sleep(interval).await;
    }
}

fn load_cursor(node: &Node) -> Result<Option<ChunkId>> {
    let cf = node.db.cf(CF_META)?;
    Ok(node
        .db
        .raw()
        .get_cf(cf, CURSOR_KEY)?
        .and_then(|v| ChunkId::from_slice(&v)))
}

fn save_cursor(node: &Node, cursor: Option<&ChunkId>) -> Result<()> {
    let cf = node.db.cf(CF_META)?;
    // The cursor is only a hint for resuming: losing its latest value to a crash just
    // re-checks a few chunks, so it need not be fsync'd.
    let wo = WriteOptions::default();
    match cursor {
        Some(id) => node
            .db
            .raw()
            .put_cf_opt(cf, CURSOR_KEY, id.as_bytes(), &wo)?,
        None => node.db.raw().delete_cf_opt(cf, CURSOR_KEY, &wo)?,
    }
    Ok(())
}
