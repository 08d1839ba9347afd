//! The gateway's view of the cluster: the ring over the nodes of `kura_cluster::peers`,
//! and the replica operations every request is built from (quorum writes, quorum record
//! reads, hedged verified chunk reads), each one [`Peers::replicated`] call.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use kura_cluster::hlc::Clock;
use kura_cluster::map::{ClusterMap, NodeEntry};
use kura_cluster::peers::{HedgeBudget, PeerSet, Peers, Plan};
use kura_cluster::range::ByteSpan;
use kura_cluster::record::{EncodedRecord, ObjectRecord};
use kura_cluster::ring::{record_key, Replication, Ring};
use kura_cluster::ChunkId;

use crate::cache::{ChunkCache, RecordCache};
use crate::error::{GatewayError, Result};
use crate::metrics::GatewayMetrics;

pub use kura_cluster::peers::Peer;

mod extras;
mod failure;
mod local;
mod open_files;
mod probe;
mod read_bufs;
mod records;
mod stream;
mod sub_blocks;
mod touch;

pub use local::{LocalLabels, CV_CACHE_BYTES, LOCAL_PIECE};
pub use open_files::{OPEN_FILES, OPEN_FILE_KEEP};
pub use stream::{ChunkStream, BLOCK_WAIT};

use failure::ReadFailure;

/// Timeout of one request to a node (a chunk PUT or GET of up to 16 MiB): generous for
/// a loaded disk, yet a hung node is given up on well before a client would.
pub const NODE_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a gateway compares its cluster map with the nodes'. 2 s: an operator's
/// change reaches every gateway within seconds, for one tiny GET per node.
pub const MAP_SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// Placement plus per-node state, rebuilt when the map changes.
pub struct Topology {
    /// The map it was built from.
    pub map: ClusterMap,
    ring: Ring,
    /// The previous epoch's ring: data not yet moved is still where it placed it.
    prev: Option<Ring>,
    /// The map's nodes.
    nodes: Arc<PeerSet>,
}

/// Shared state of the gateway's cluster access.
pub struct Cluster {
    topology: RwLock<Arc<Topology>>,
    /// Replication settings.
    pub replication: Replication,
    /// Issues write timestamps.
    pub clock: Clock,
    /// Hedging budget of chunk reads.
    pub hedge: HedgeBudget,
    /// Metrics.
    pub metrics: GatewayMetrics,
    /// The gateway's zone, preferred for reads.
    pub zone: Option<String>,
    /// Verified whole chunks (never stale: chunks are content-addressed).
    pub chunk_cache: ChunkCache,
    /// Recently read or written records (a short TTL).
    pub record_cache: RecordCache,
    /// The nodes, and the one path calls to them take.
    pub peers: Peers,
    /// Node outages seen ending recently, for catch-up requests (see `probe`).
    outages: std::sync::Mutex<probe::Outages>,
    /// Whether chunks are read from the files of nodes on this machine (see `local`).
    pub local_reads: bool,
    /// Block CVs of chunks, for local reads.
    cvs: local::CvCache,
}

impl Cluster {
    /// Builds the cluster view from `map`; `local_reads`: read chunks from the files of
    /// nodes on this machine (see `local`).
    pub fn new(
        map: &ClusterMap,
        secret: &str,
        replication: Replication,
        zone: Option<String>,
        metrics: GatewayMetrics,
        caches: (ChunkCache, RecordCache),
        local_reads: bool,
    ) -> Result<Self> {
        let peers = Peers::new(secret, NODE_REQUEST_TIMEOUT, metrics.peers.clone())?;
        let topology = Topology {
            map: map.clone(),
            ring: Ring::new(map),
            prev: None,
            nodes: Arc::new(PeerSet::default()),
        };
        let this = Self {
            topology: RwLock::new(Arc::new(topology)),
            replication,
            clock: Clock::new(rand::random()),
            hedge: HedgeBudget::default(),
            metrics,
            zone,
            chunk_cache: caches.0,
            record_cache: caches.1,
            peers,
            outages: std::sync::Mutex::new(probe::Outages::default()),
            local_reads,
            cvs: local::CvCache::default(),
        };
        this.adopt(map.clone());
        Ok(this)
    }

    /// Switches to `map` if its epoch is newer (or on first use); keeps the current ring
    /// as the previous one for reads, and each node's health across the change.
    pub fn adopt(&self, map: ClusterMap) -> bool {
        let mut guard = self.topology.write().unwrap_or_else(|e| e.into_inner());
        let old = guard.clone();
        if !self.peers.adopt(&map) {
            return false;
        }
        let nodes = self.peers.current();
        let prev = (!old.nodes.is_empty()).then(|| Ring::new(&old.map));
        tracing::info!(
            epoch = map.epoch,
            nodes = map.nodes.len(),
            "cluster map adopted"
        );
        *guard = Arc::new(Topology {
            ring: Ring::new(&map),
            prev,
            map,
            nodes,
        });
        true
    }

    /// The map in use.
    pub fn map(&self) -> ClusterMap {
        self.topology().map.clone()
    }

    fn topology(&self) -> Arc<Topology> {
        self.topology
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every node in the map that may hold data (all but lost ones).
    pub fn all_nodes(&self) -> Vec<Arc<Peer>> {
        self.topology()
            .nodes
            .all()
            .filter(|n| n.entry.state.readable())
            .cloned()
            .collect()
    }

    /// Converges on the highest map epoch: adopts a newer map any node holds, and offers
    /// ours to nodes that hold an older one (a node added to the map learns it so).
    pub async fn sync_map(&self) {
        let nodes = self.all_nodes();
        let maps = futures::future::join_all(
            nodes
                .iter()
                .map(|n| self.peers.call(n, "map_get", n.client.cluster_map())),
        )
        .await;
        let newest = maps
            .iter()
            .filter_map(|m| m.as_ref().ok())
            .max_by_key(|m| m.epoch)
            .cloned();
        if let Some(m) = newest {
            self.adopt(m);
        }
        let current = self.map();
        let behind = nodes
            .iter()
            .zip(&maps)
            .filter(|(_, m)| m.as_ref().is_ok_and(|m| m.epoch < current.epoch))
            .map(|(n, _)| {
                let offer = n.client.offer_cluster_map(&current);
                self.peers.call(n, "map_offer", offer)
            });
        futures::future::join_all(behind).await;
    }

    /// Keeps each chunk file a local read opens for `keep` (see `open_files`; the
    /// default is [`OPEN_FILE_KEEP`]).
    pub fn keeping_files_for(mut self, keep: Duration) -> Self {
        self.cvs = local::CvCache::keeping_files_for(keep);
        self
    }

    /// Closes the chunk files local reads keep open once they are stale, forever (see
    /// `open_files`).
    pub fn close_stale_files_forever(&self) -> impl std::future::Future<Output = ()> {
        self.cvs.shared().files.close_stale_forever()
    }

    /// Runs [`Cluster::sync_map`] every [`MAP_SYNC_INTERVAL`].
    pub async fn sync_map_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(MAP_SYNC_INTERVAL);
        loop {
            tick.tick().await;
            self.sync_map().await;
        }
    }

    /// Replica set and fallbacks of a placement key, as handles (for writes).
    fn placement(&self, key: &[u8; 32]) -> (Vec<Arc<Peer>>, Vec<Arc<Peer>>) {
        let topo = self.topology();
        let (chosen, rest) = topo.ring.placement(key, topo.map.replicas);
        let handles = |v: Vec<&NodeEntry>| -> Vec<Arc<Peer>> {
            v.iter()
                .filter_map(|e| topo.nodes.get(&e.id).cloned())
                .collect()
        };
        (handles(chosen), handles(rest))
    }

    /// Where to look for an item when reading: its owners, then (during a rebalance)
    /// its owners under the previous map, then every other node that may still hold data
    /// (active ones in ring order, then draining and removed ones); never lost nodes.
    fn read_placement(&self, key: &[u8; 32]) -> (Vec<Arc<Peer>>, Vec<Arc<Peer>>) {
        let topo = self.topology();
        let (chosen, rest) = topo.ring.placement(key, topo.map.replicas);
        let mut seen: Vec<&str> = chosen.iter().map(|e| e.id.as_str()).collect();
        let mut fallbacks: Vec<&NodeEntry> = Vec::new();
        let prev_owners = topo
            .prev
            .as_ref()
            .map(|p| p.placement(key, topo.map.replicas).0)
            .unwrap_or_default();
        for e in prev_owners.into_iter().chain(rest) {
            if !seen.contains(&e.id.as_str()) {
                seen.push(&e.id);
                fallbacks.push(e);
            }
        }
        for e in &topo.map.nodes {
            if e.state.readable() && !seen.contains(&e.id.as_str()) {
                seen.push(&e.id);
                fallbacks.push(e);
            }
        }
        let handles = |v: Vec<&NodeEntry>| -> Vec<Arc<Peer>> {
            v.iter()
                .filter_map(|e| topo.nodes.get(&e.id).cloned())
                .collect()
        };
        (handles(chosen), handles(fallbacks))
    }

    /// Orders replicas for a read: up first, then local zone, then least loaded; ring
    /// order breaks ties (the sort is stable).
    fn read_order(&self, mut nodes: Vec<Arc<Peer>>) -> Vec<Arc<Peer>> {
        nodes.sort_by_key(|n| {
            let remote = self.zone.as_deref().is_some_and(|z| z != n.entry.zone);
            (!n.health.is_up(), remote, n.health.inflight())
        });
        nodes
    }

    /// Writes `op` to the replica set of `key` until `w` copies are durable, moving to
    /// fallback nodes when replicas fail. Returns once the quorum is met; writes to the
    /// remaining replicas go on in the background.
    async fn quorum_write<F, Fut>(&self, key: &[u8; 32], what: &'static str, op: F) -> Result<()>
    where
        F: Fn(Arc<Peer>) -> Fut,
        Fut: std::future::Future<Output = kura_cluster::Result<()>> + Send + 'static,
    {
        let (chosen, rest) = self.placement(key);
        let copies = chosen.len();
        let need = self.replication.w.min(copies.max(1));
        let order = write_order(chosen, rest);
        let plan = Plan::write(order.len(), copies, need);
        let mut replies = self
            .peers
            .replicated(&order, plan, Duration::ZERO, what, op)
            .await;
        for (node, e) in &replies.failed {
            tracing::warn!(node = %node.entry.id, what, error = %e, "replica write failed");
        }
        // The copies still in flight finish on their own; a failure is only logged
        // (catch-up and repair put the copy back).
        let mut late = std::mem::take(&mut replies.rest);
        tokio::spawn(async move {
            while let Some((node, _, result)) = late.next().await {
                if let Err(e) = result {
                    tracing::warn!(node = %node.entry.id, what, error = %e, "replica write failed after the quorum");
                }
            }
        });
        if replies.met {
            return Ok(());
        }
        Err(GatewayError::Unavailable(format!(
            "{what}: {} of {need} copies written ({})",
            replies.ok.len(),
            replies.failure_summary()
        )))
    }

    /// The nodes the current map places a chunk on (its N owners), in ring order.
    pub fn owners(&self, id: &ChunkId) -> Vec<Arc<Peer>> {
        self.placement(id.as_bytes()).0
    }

    /// Stores a chunk on W of its N replicas (the rest finish in the background).
    pub async fn put_chunk(&self, id: ChunkId, data: Bytes) -> Result<()> {
        let started = Instant::now();
        let result = self
            .quorum_write(id.as_bytes(), "chunk_put", move |node: Arc<Peer>| {
                let data = data.clone();
                async move { node.client.put_chunk(&id, data).await.map(|_| ()) }
            })
            .await;
        self.metrics
            .chunk_put_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Stores a record on W of its N replicas; once it is, this gateway's reads see it
    /// (the record cache takes it).
    pub async fn put_record(&self, record: ObjectRecord) -> Result<()> {
        let key = record_key(&record.bucket, &record.key);
        // Packed once for every replica; each node's copy goes in its next record
        // batch (`kura_cluster::peers::batch`).
        let stored = EncodedRecord::pack(&record)?.into_stored();
        self.quorum_write(&key, "record_put", move |node: Arc<Peer>| {
            let stored = stored.clone();
            async move { node.put_record(stored).await.map(|_| ()) }
        })
        .await?;
        let written = Arc::new(record);
        self.record_cache
            .offer(&written.bucket, &written.key, &Some(written.clone()));
        Ok(())
    }

    /// `span` of chunk `id` (of `size` bytes) in one buffer, verified end to end: from
    /// the cache, else read as [`Cluster::open_chunk`] reads it (hedged, moving on from
    /// replicas that are missing, corrupt or unreachable). For callers that need the
    /// bytes at once (hot copies); downloads stream [`Cluster::open_chunk`].
    pub async fn get_chunk(
        self: &Arc<Self>,
        id: ChunkId,
        size: u64,
        span: ByteSpan,
    ) -> Result<Bytes> {
        let mut pieces = Vec::new();
        let mut s = self.open_chunk(id, size, span, Vec::new()).await;
        while let Some(piece) = s.next().await {
            pieces.push(piece?);
        }
        Ok(match pieces.len() {
            1 => pieces.swap_remove(0),
            _ => pieces.concat().into(),
        })
    }

    /// The replicas to read chunk `id` from, best first: its owners (and `hot_extras`,
    /// nodes holding extra copies of a hot object's chunk) shuffled, so reads of equally
    /// good replicas spread, then sorted by [`Cluster::read_order`]; then every other
    /// node that may hold it.
    fn read_candidates(&self, id: &ChunkId, hot_extras: Vec<String>) -> Vec<Arc<Peer>> {
        let (mut chosen, mut rest) = self.read_placement(id.as_bytes());
        for extra in hot_extras {
            if let Some(pos) = rest.iter().position(|n| n.entry.id == extra) {
                chosen.push(rest.remove(pos));
            }
        }
        {
            use rand::seq::SliceRandom;
            chosen.shuffle(&mut rand::rng());
        }
        let mut order = self.read_order(chosen);
        order.extend(self.read_order(rest));
        order
    }

    /// Counts a local read that ended (`Ok`: its span read whole).
    fn count_local(&self, outcome: std::result::Result<(), &local::LocalFailure>) {
        let outcome = outcome.map_or_else(|e| e.label(), |()| "ok");
        self.metrics
            .local_reads
            .get_or_create(&LocalLabels { outcome })
            .inc();
    }

    /// Counts and logs a failed chunk read; a copy that served bad bytes is reported to
    /// its node, which re-hashes it and quarantines it if bad.
    fn report_read_failure(
        self: &Arc<Self>,
        node: &Arc<Peer>,
        id: &ChunkId,
        e: &kura_cluster::Error,
    ) {
        let who = (&node.entry.id, id);
        match ReadFailure::of(e) {
            // Marked down already (by the call path, or the stream that saw it).
            ReadFailure::Unreachable => {}
            ReadFailure::Corrupt => {
                self.metrics.corrupt_replicas.inc();
                tracing::warn!(node = %who.0, chunk = %who.1, "replica returned bytes that fail verification");
                // The node sent them unhashed: have it check its copy and quarantine it.
                let (this, node, id) = (self.clone(), node.clone(), *id);
                tokio::spawn(async move {
                    let report = node.client.report_corrupt(&id);
                    if let Err(e) = this.peers.call(&node, "chunk_report", report).await {
                        tracing::warn!(chunk = %id, error = %e, "reporting a corrupt replica failed");
                    }
                });
            }
            ReadFailure::CopyCorrupt => {
                self.metrics.corrupt_replicas.inc();
                tracing::warn!(node = %who.0, chunk = %who.1, "replica found its copy corrupt (quarantined)");
            }
            ReadFailure::Missing => {
                self.metrics.missing_replicas.inc();
                tracing::warn!(node = %who.0, chunk = %who.1, "replica is missing a chunk");
            }
            ReadFailure::NodeFault => {
                self.metrics.replica_errors.inc();
                tracing::warn!(node = %who.0, chunk = %who.1, error = %e, "replica failed to serve a chunk");
            }
            ReadFailure::Other => {
                tracing::warn!(node = %who.0, chunk = %who.1, error = %e, "chunk read failed")
            }
        }
    }
}

/// The order of a write's candidates: the owners, each known-down owner replaced by the
/// first up fallback not yet used (a dead node does not cost every write a timeout),
/// then the remaining up fallbacks, which replace copies that fail.
fn write_order(chosen: Vec<Arc<Peer>>, rest: Vec<Arc<Peer>>) -> Vec<Arc<Peer>> {
    let mut fallbacks = rest.into_iter().filter(|n| n.health.is_up());
    let mut order: Vec<Arc<Peer>> = chosen
        .into_iter()
        .map(|node| {
            if node.health.is_up() {
                node
            } else {
                fallbacks.next().unwrap_or(node)
            }
        })
        .collect();
    order.extend(fallbacks);
    order
}
