//! The gateway's own metrics (request metrics come from `kura_cluster::observe`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Counters a gateway exports on `/metrics`.
#[derive(Clone)]
pub struct GatewayMetrics {
    /// Bytes received in uploads.
    pub bytes_uploaded: Counter,
    /// Bytes sent in downloads.
    pub bytes_downloaded: Counter,
    /// Objects stored.
    pub objects_put: Counter,
    /// Uploads abandoned by their client (nothing became visible).
    pub uploads_aborted: Counter,
    /// Chunk reads that asked a second replica because the first was slow.
    pub hedged_reads: Counter,
    /// Replicas that served bytes failing verification, or reported their copy corrupt.
    pub corrupt_replicas: Counter,
    /// Replicas found missing a chunk they should hold.
    pub missing_replicas: Counter,
    /// Chunk reads a replica failed on its side (I/O, database): not corruption.
    pub replica_errors: Counter,
    /// Stale record replicas rewritten on read.
    pub record_repairs: Counter,
    /// Time until a chunk is durable on W replicas.
    pub chunk_put_seconds: Histogram,
    /// Objects promoted to hot.
    pub hot_promotions: Counter,
    /// Hot objects cooled down.
    pub hot_demotions: Counter,
    /// Objects hot now.
    pub hot_objects: Gauge,
    /// Extra chunk copies placed for hot objects now.
    pub hot_extra_copies: Gauge,
    /// Chunk reads served from the chunk cache.
    pub chunk_cache_hits: Counter,
    /// Chunk reads that went to a replica.
    pub chunk_cache_misses: Counter,
    /// Bytes in the chunk cache (approximate).
    pub chunk_cache_bytes: Gauge,
    /// Record reads served from the record cache.
    pub record_cache_hits: Counter,
    /// Record reads that asked the replicas.
    pub record_cache_misses: Counter,
    /// Record cache misses answered by another request's quorum read of the same key.
    pub record_reads_shared: Counter,
    /// Record cache entries read again in the background before they expired.
    pub record_refreshes: Counter,
    /// Requests waiting now for another request's quorum read of the same key.
    pub record_reads_waiting: Gauge,
    /// Object GETs and HEADs of the native API answered before its router
    /// (`crate::fast`).
    pub fast_reads: Counter,
    /// S3 GETs answered by the fast read path (`crate::s3::fast`).
    pub s3_fast_reads: Counter,
    /// S3 GETs the fast read path handed to `s3s` (an error to answer, or a form it
    /// does not take).
    pub s3_fast_declined: Counter,
    /// Chunk spans read from co-located nodes' files, by outcome (see
    /// `crate::cluster::local`).
    pub local_reads: Family<crate::cluster::LocalLabels, Counter>,
    /// Calls to nodes (`kura_peer_*`), recorded by `kura_cluster::peers`.
    pub peers: kura_cluster::peers::PeerMetrics,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self {
            bytes_uploaded: Counter::default(),
            bytes_downloaded: Counter::default(),
            objects_put: Counter::default(),
            uploads_aborted: Counter::default(),
            hedged_reads: Counter::default(),
            corrupt_replicas: Counter::default(),
            missing_replicas: Counter::default(),
            replica_errors: Counter::default(),
            record_repairs: Counter::default(),
            // 0.5 ms .. ~16 s.
            chunk_put_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            hot_promotions: Counter::default(),
            hot_demotions: Counter::default(),
            hot_objects: Gauge::default(),
            hot_extra_copies: Gauge::default(),
            chunk_cache_hits: Counter::default(),
            chunk_cache_misses: Counter::default(),
            chunk_cache_bytes: Gauge::default(),
            record_cache_hits: Counter::default(),
            record_cache_misses: Counter::default(),
            record_reads_shared: Counter::default(),
            record_refreshes: Counter::default(),
            record_reads_waiting: Gauge::default(),
            fast_reads: Counter::default(),
            s3_fast_reads: Counter::default(),
            s3_fast_declined: Counter::default(),
            local_reads: Family::default(),
            peers: Default::default(),
        }
    }
}

impl GatewayMetrics {
    /// Registers every metric in `r`.
    pub fn register(&self, r: &mut Registry) {
        self.peers.register(r);
        r.register(
            "kura_gateway_fast_reads",
            "Object GETs and HEADs of the native API answered before its router",
            self.fast_reads.clone(),
        );
        r.register(
            "kura_gateway_s3_fast_reads",
            "S3 GETs answered by the fast read path",
            self.s3_fast_reads.clone(),
        );
        r.register(
            "kura_gateway_s3_fast_declined",
            "S3 GETs the fast read path left to the full S3 protocol layer",
            self.s3_fast_declined.clone(),
        );
        r.register(
            "kura_gateway_bytes_uploaded",
            "Bytes received in uploads and stored (W of N), by any API; parts and pieces included",
            self.bytes_uploaded.clone(),
        );
        r.register(
            "kura_gateway_bytes_downloaded",
            "Bytes sent in downloads",
            self.bytes_downloaded.clone(),
        );
        r.register(
            "kura_gateway_objects_put",
            "Objects stored",
            self.objects_put.clone(),
        );
        r.register(
            "kura_gateway_uploads_aborted",
            "Uploads abandoned by the client",
            self.uploads_aborted.clone(),
        );
        r.register(
            "kura_gateway_hedged_reads",
            "Chunk reads hedged to a second replica",
            self.hedged_reads.clone(),
        );
        r.register(
            "kura_gateway_corrupt_replicas",
            "Replicas whose chunk failed verification",
            self.corrupt_replicas.clone(),
        );
        r.register(
            "kura_gateway_missing_replicas",
            "Replicas missing a chunk",
            self.missing_replicas.clone(),
        );
        r.register(
            "kura_gateway_replica_errors",
            "Chunk reads a replica failed on its side (I/O, database errors), not corruption",
            self.replica_errors.clone(),
        );
        r.register(
            "kura_gateway_record_repairs",
            "Stale record replicas repaired on read",
            self.record_repairs.clone(),
        );
        r.register(
            "kura_gateway_hot_promotions",
            "Objects promoted to hot",
            self.hot_promotions.clone(),
        );
        r.register(
            "kura_gateway_hot_demotions",
            "Hot objects cooled down",
            self.hot_demotions.clone(),
        );
        r.register(
            "kura_gateway_hot_objects",
            "Objects hot now",
            self.hot_objects.clone(),
        );
        r.register(
            "kura_gateway_hot_extra_copies",
            "Extra chunk copies placed for hot objects",
            self.hot_extra_copies.clone(),
        );
        r.register(
            "kura_gateway_chunk_cache_hits",
            "Chunk reads served from the chunk cache",
            self.chunk_cache_hits.clone(),
        );
        r.register(
            "kura_gateway_chunk_cache_misses",
            "Chunk reads that went to a replica",
            self.chunk_cache_misses.clone(),
        );
        r.register(
            "kura_gateway_chunk_cache_bytes",
            "Bytes in the chunk cache",
            self.chunk_cache_bytes.clone(),
        );
        r.register(
            "kura_gateway_record_cache_hits",
            "Record reads served from the record cache",
            self.record_cache_hits.clone(),
        );
        r.register(
            "kura_gateway_record_cache_misses",
            "Record reads that asked the replicas",
            self.record_cache_misses.clone(),
        );
        r.register(
            "kura_gateway_record_reads_shared",
            "Record cache misses answered by another request's quorum read of the same key",
            self.record_reads_shared.clone(),
        );
        r.register(
            "kura_gateway_record_refreshes",
            "Record cache entries read again in the background before they expired",
            self.record_refreshes.clone(),
        );
        r.register(
            "kura_gateway_record_reads_waiting",
            "Requests waiting now for another request's quorum read of the same key",
            self.record_reads_waiting.clone(),
        );
        r.register(
            "kura_gateway_local_reads",
            "Chunk spans read from the files of nodes on this machine, by outcome",
            self.local_reads.clone(),
        );
        r.register(
            "kura_gateway_chunk_put_seconds",
            "Time until a chunk is on W replicas",
            self.chunk_put_seconds.clone(),
        );
    }
}
