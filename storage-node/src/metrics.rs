//! The node's own metrics (request metrics come from `kura_cluster::observe`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Buckets of [`NodeMetrics::record_batch_records`] and its read twin: 1, 2, 4 … 4096
/// records (the most a batch may hold).
fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self {
            chunks_written: Counter::default(),
            chunk_bytes_written: Counter::default(),
            chunk_bytes_read: Counter::default(),
            verify_failures: Counter::default(),
            scrub_chunks: Counter::default(),
            scrub_bytes: Counter::default(),
            scrub_corrupt: Counter::default(),
            scrub_passes: Counter::default(),
            orphan_files_removed: Counter::default(),
            gc_deleted: Counter::default(),
            gc_freed_bytes: Counter::default(),
            catchup_walks: Counter::default(),
            catchup_sent: Counter::default(),
            record_batch_records: batch_histogram(),
            record_read_batch_records: batch_histogram(),
            chunks: Gauge::default(),
            bytes_used: Gauge::default(),
            bytes_free: Gauge::default(),
            bytes_total: Gauge::default(),
            quarantined: Gauge::default(),
            peers: Default::default(),
        }
    }
}

/// Counters and gauges a node exports on `/metrics`.
#[derive(Clone)]
pub struct NodeMetrics {
    /// Chunks written (not counting dedup hits).
    pub chunks_written: Counter,
    /// Bytes of chunks written.
    pub chunk_bytes_written: Counter,
    /// Bytes of chunks served.
    pub chunk_bytes_read: Counter,
    /// Chunk copies that failed verification on read or scrub.
    pub verify_failures: Counter,
    /// Chunks re-hashed by the scrubber.
    pub scrub_chunks: Counter,
    /// Bytes re-hashed by the scrubber.
    pub scrub_bytes: Counter,
    /// Corrupt copies the scrubber found.
    pub scrub_corrupt: Counter,
    /// Completed scrub passes.
    pub scrub_passes: Counter,
    /// Orphan chunk files (left by a crash mid-write) removed after scrub passes.
    pub orphan_files_removed: Counter,
    /// Chunks deleted by garbage collection.
    pub gc_deleted: Counter,
    /// Bytes freed by garbage collection.
    pub gc_freed_bytes: Counter,
    /// Catch-up walks of the write log completed (see `crate::catchup`).
    pub catchup_walks: Counter,
    /// Chunk copies and records a catch-up sent to peers that lacked them.
    pub catchup_sent: Counter,
    /// Records per batch stored (`POST /v1/records`, each batch one synced write).
    pub record_batch_records: Histogram,
    /// Records per read batch answered (`POST /v1/record-reads`, each one pass).
    pub record_read_batch_records: Histogram,
    /// Chunks held (set at scrape).
    pub chunks: Gauge,
    /// Bytes of chunk data held (set at scrape).
    pub bytes_used: Gauge,
    /// Free bytes on the data filesystem (set at scrape).
    pub bytes_free: Gauge,
    /// Size of the data filesystem (set at scrape).
    pub bytes_total: Gauge,
    /// Copies in quarantine (set at scrape).
    pub quarantined: Gauge,
    /// Calls to peers (`kura_peer_*`), recorded by `kura_cluster::peers`.
    pub peers: kura_cluster::peers::PeerMetrics,
}

impl NodeMetrics {
    /// Registers every metric in `r`.
    pub fn register(&self, r: &mut Registry) {
        self.peers.register(r);
        r.register(
            "kura_record_batch_records",
            "Records per record batch stored (each batch one synced write)",
            self.record_batch_records.clone(),
        );
        r.register(
            "kura_record_read_batch_records",
            "Records per record read batch answered (each batch one pass over the table)",
            self.record_read_batch_records.clone(),
        );
        r.register(
            "kura_catchup_walks",
            "Catch-up walks of the write log completed",
            self.catchup_walks.clone(),
        );
        r.register(
            "kura_catchup_sent",
            "Chunk copies and records catch-up sent to peers that lacked them",
            self.catchup_sent.clone(),
        );
        r.register(
            "kura_chunks_written",
            "Chunks written",
            self.chunks_written.clone(),
        );
        r.register(
            "kura_chunk_bytes_written",
            "Bytes of chunks written",
            self.chunk_bytes_written.clone(),
        );
        r.register(
            "kura_chunk_bytes_read",
            "Bytes of chunks served",
            self.chunk_bytes_read.clone(),
        );
        r.register(
            "kura_chunk_verify_failures",
            "Chunk copies that failed verification",
            self.verify_failures.clone(),
        );
        r.register(
            "kura_scrub_chunks",
            "Chunks re-hashed by scrub",
            self.scrub_chunks.clone(),
        );
        r.register(
            "kura_scrub_bytes",
            "Bytes re-hashed by scrub",
            self.scrub_bytes.clone(),
        );
        r.register(
            "kura_scrub_corrupt",
            "Corrupt chunk copies found by scrub",
            self.scrub_corrupt.clone(),
        );
        r.register(
            "kura_scrub_passes",
            "Completed scrub passes",
            self.scrub_passes.clone(),
        );
        r.register(
            "kura_orphan_files_removed",
            "Orphan chunk files (a crash mid-write) removed",
            self.orphan_files_removed.clone(),
        );
        r.register(
            "kura_gc_deleted_chunks",
            "Chunks deleted by garbage collection",
            self.gc_deleted.clone(),
        );
        r.register(
            "kura_gc_freed_bytes",
            "Bytes freed by garbage collection",
            self.gc_freed_bytes.clone(),
        );
        r.register("kura_node_chunks", "Chunks held", self.chunks.clone());
        r.register(
            "kura_node_bytes_used",
            "Bytes of chunk data held",
            self.bytes_used.clone(),
        );
        r.register(
            "kura_node_bytes_free",
            "Free bytes on the data filesystem",
            self.bytes_free.clone(),
        );
        r.register(
            "kura_node_bytes_total",
            "Size of the data filesystem",
            self.bytes_total.clone(),
        );
        r.register(
            "kura_node_quarantined_chunks",
            "Chunk copies in quarantine",
            self.quarantined.clone(),
        );
    }
}
