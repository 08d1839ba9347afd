//! The gateway's view of the cluster: the ring, a client and health per node, and the
//! replica operations every request is built from (quorum writes, quorum record reads,
//! hedged verified chunk reads).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use kura_cluster::client::NodeClient;
use kura_cluster::hlc::Clock;
use kura_cluster::map::{ClusterMap, NodeEntry};
use kura_cluster::range::ByteSpan;
use kura_cluster::record::ObjectRecord;
use kura_cluster::ring::{record_key, Replication, Ring};
use kura_cluster::ChunkId;
use tokio::sync::mpsc;

use crate::cache::{ChunkCache, RecordCache};
use crate::error::{GatewayError, Result};
use crate::health::{Health, HedgeBudget};
use crate::metrics::GatewayMetrics;

mod extras;
mod failure;
mod probe;
mod records;
mod touch;

use failure::ReadFailure;

/// Timeout of one request to a node (a chunk PUT or GET of up to 16 MiB): generous for
/// a loaded disk, yet a hung node is given up on well before a client would.
pub const NODE_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a gateway compares its cluster map with the nodes'. 2 s: an operator's
/// change reaches every gateway within seconds, for one tiny GET per node.
pub const MAP_SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// One node as the gateway knows it.
pub struct NodeHandle {
    /// Its map entry.
    pub entry: NodeEntry,
    /// Its client.
    pub client: NodeClient,
    /// Its health.
    pub health: Health,
}

/// Placement plus per-node state, rebuilt when the map changes.
pub struct Topology {
    /// The map it was built from.
    pub map: ClusterMap,
    ring: Ring,
    /// The previous epoch's ring: data not yet moved is still where it placed it.
    prev: Option<Ring>,
    nodes: HashMap<String, Arc<NodeHandle>>,
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
    secret: String,
    http: reqwest::Client,
    /// Node outages seen ending recently, for catch-up requests (see `probe`).
    outages: std::sync::Mutex<probe::Outages>,
}

/// Outcome of one node call, classified for health and metrics.
fn is_transport(e: &kura_cluster::Error) -> bool {
    matches!(e, kura_cluster::Error::Transport(_))
}

impl Cluster {
    /// Builds the cluster view from `map`.
    pub fn new(
        map: &ClusterMap,
        secret: &str,
        replication: Replication,
        zone: Option<String>,
        metrics: GatewayMetrics,
        caches: (ChunkCache, RecordCache),
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(kura_cluster::client::CONNECT_TIMEOUT)
            .timeout(NODE_REQUEST_TIMEOUT)
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let topology = Topology {
            map: map.clone(),
            ring: Ring::new(map),
            prev: None,
            nodes: HashMap::new(),
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
            secret: secret.to_string(),
            http,
            outages: std::sync::Mutex::new(probe::Outages::default()),
        };
        this.adopt(map.clone());
        Ok(this)
    }

    /// Switches to `map` if its epoch is newer (or on first use); keeps the current ring
    /// as the previous one for reads, and each node's health across the change.
    pub fn adopt(&self, map: ClusterMap) -> bool {
        let mut guard = self.topology.write().unwrap_or_else(|e| e.into_inner());
        let old = guard.clone();
        if map.epoch <= old.map.epoch && !old.nodes.is_empty() {
            return false;
        }
        let nodes = map
            .nodes
            .iter()
            .map(|n| {
                let handle = match old.nodes.get(&n.id) {
                    Some(h) if h.entry == *n => h.clone(),
                    _ => Arc::new(NodeHandle {
                        entry: n.clone(),
                        client: NodeClient::with_http(
                            &format!("http://{}", n.addr),
                            &self.secret,
                            self.http.clone(),
                        ),
                        health: Health::default(),
                    }),
                };
                (n.id.clone(), handle)
            })
            .collect();
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
    pub fn all_nodes(&self) -> Vec<Arc<NodeHandle>> {
        self.topology()
            .nodes
            .values()
            .filter(|n| n.entry.state.readable())
            .cloned()
            .collect()
    }

    /// Converges on the highest map epoch: adopts a newer map any node holds, and offers
    /// ours to nodes that hold an older one (a node added to the map learns it so).
    pub async fn sync_map(&self) {
        let nodes = self.all_nodes();
        let maps = futures::future::join_all(nodes.iter().map(|n| n.client.cluster_map())).await;
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
            .map(|(n, _)| n.client.offer_cluster_map(&current));
        futures::future::join_all(behind).await;
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
    fn placement(&self, key: &[u8; 32]) -> (Vec<Arc<NodeHandle>>, Vec<Arc<NodeHandle>>) {
        let topo = self.topology();
        let (chosen, rest) = topo.ring.placement(key, topo.map.replicas);
        let handles = |v: Vec<&NodeEntry>| -> Vec<Arc<NodeHandle>> {
            v.iter()
                .filter_map(|e| topo.nodes.get(&e.id).cloned())
                .collect()
        };
        (handles(chosen), handles(rest))
    }

    /// Where to look for an item when reading: its owners, then (during a rebalance)
    /// its owners under the previous map, then every other node that may still hold data
    /// (active ones in ring order, then draining and removed ones); never lost nodes.
    fn read_placement(&self, key: &[u8; 32]) -> (Vec<Arc<NodeHandle>>, Vec<Arc<NodeHandle>>) {
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
        let handles = |v: Vec<&NodeEntry>| -> Vec<Arc<NodeHandle>> {
            v.iter()
                .filter_map(|e| topo.nodes.get(&e.id).cloned())
                .collect()
        };
        (handles(chosen), handles(fallbacks))
    }

    /// Orders replicas for a read: up first, then local zone, then least loaded; ring
    /// order breaks ties (the sort is stable).
    fn read_order(&self, mut nodes: Vec<Arc<NodeHandle>>) -> Vec<Arc<NodeHandle>> {
        nodes.sort_by_key(|n| {
            let remote = self.zone.as_deref().is_some_and(|z| z != n.entry.zone);
            (!n.health.is_up(), remote, n.health.inflight())
        });
        nodes
    }

    /// Writes `op` to the replica set of `key` until `w` copies are durable, moving to
    /// fallback nodes when replicas fail. Returns once the quorum is met; writes to the
    /// remaining replicas go on in the background.
    async fn quorum_write<F, Fut>(&self, key: &[u8; 32], what: &str, op: F) -> Result<()>
    where
        F: Fn(Arc<NodeHandle>) -> Fut,
        Fut: std::future::Future<Output = kura_cluster::Result<()>> + Send + 'static,
    {
        let (chosen, rest) = self.placement(key);
        let need = self.replication.w.min(chosen.len().max(1));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let spawn = |node: Arc<NodeHandle>| {
            let fut = op(node.clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                let result = {
                    let _inflight = node.health.track();
                    fut.await
                };
                match &result {
                    Ok(()) => node.health.mark_up(),
                    Err(e) if is_transport(e) => node.health.mark_down(),
                    Err(_) => {}
                }
                let _ = tx.send((node, result));
            });
        };
        let mut pending = 0usize;
        // Known-down replicas are replaced by fallbacks up front, so a dead node does not
        // cost every write a timeout.
        let mut fallbacks = rest.into_iter().filter(|n| n.health.is_up());
        for node in chosen {
            if node.health.is_up() {
                spawn(node);
            } else if let Some(f) = fallbacks.next() {
                spawn(f);
            } else {
                spawn(node);
            }
            pending += 1;
        }
        let mut ok = 0usize;
        let mut errors = Vec::new();
        while pending > 0 {
            let Some((node, result)) = rx.recv().await else {
                break;
            };
            pending -= 1;
            match result {
                Ok(()) => {
                    ok += 1;
                    if ok >= need {
                        return Ok(());
                    }
                }
                Err(e) => {
                    tracing::warn!(node = %node.entry.id, what, error = %e, "replica write failed");
                    errors.push(format!("{}: {e}", node.entry.id));
                    if let Some(f) = fallbacks.next() {
                        spawn(f);
                        pending += 1;
                    }
                }
            }
        }
        Err(GatewayError::Unavailable(format!(
            "{what}: {ok} of {need} copies written ({})",
            errors.join("; ")
        )))
    }

    /// The nodes the current map places a chunk on (its N owners), in ring order.
    pub fn owners(&self, id: &ChunkId) -> Vec<Arc<NodeHandle>> {
        self.placement(id.as_bytes()).0
    }

    /// Stores a chunk on W of its N replicas (the rest finish in the background).
    pub async fn put_chunk(&self, id: ChunkId, data: Bytes) -> Result<()> {
        let started = Instant::now();
        let result = self
            .quorum_write(id.as_bytes(), "chunk", move |node: Arc<NodeHandle>| {
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
        let record = Arc::new(record);
        let written = record.clone();
        self.quorum_write(&key, "record", move |node: Arc<NodeHandle>| {
            let record = record.clone();
            async move { node.client.put_record(&record).await.map(|_| ()) }
        })
        .await?;
        self.record_cache
            .offer(&written.bucket, &written.key, Some(&written));
        Ok(())
    }

    /// Reads `span` of chunk `id` (of `size` bytes) from the best replica, verified end to
    /// end; hedges to a second replica if the first is slower than the hedging budget,
    /// and moves on from replicas that are missing, corrupt or unreachable.
    pub async fn get_chunk(
        self: &Arc<Self>,
        id: ChunkId,
        size: u64,
        span: ByteSpan,
    ) -> Result<Bytes> {
        self.get_chunk_from(id, size, span, Vec::new()).await
    }

    /// Same as [`Cluster::get_chunk`], also reading from `hot_extras` (nodes holding
    /// extra copies of a hot object's chunk).
    /// Served from the chunk cache when it holds the chunk; a whole chunk read from a
    /// replica is cached, and a chunk read in part twice is fetched whole into the cache
    /// in the background (see `crate::cache`).
    pub async fn get_chunk_from(
        self: &Arc<Self>,
        id: ChunkId,
        size: u64,
        span: ByteSpan,
        hot_extras: Vec<String>,
    ) -> Result<Bytes> {
        if let Some(bytes) = self.chunk_cache.get(&id, span) {
            self.metrics.chunk_cache_hits.inc();
            return Ok(bytes);
        }
        self.metrics.chunk_cache_misses.inc();
        let whole = span.start == 0 && span.end == size;
        if whole {
            let bytes = self.fetch_chunk(id, size, span, hot_extras).await?;
            self.chunk_cache.insert(id, bytes.clone());
            return Ok(bytes);
        }
        if self.chunk_cache.partial_miss(&id) {
            let this = self.clone();
            let extras = hot_extras.clone();
            let all = ByteSpan {
                start: 0,
                end: size,
            };
            tokio::spawn(async move {
                match this.fetch_chunk(id, size, all, extras).await {
                    Ok(bytes) => this.chunk_cache.insert(id, bytes),
                    Err(e) => {
                        tracing::debug!(chunk = %id, error = %e, "caching a chunk read in part failed")
                    }
                }
            });
        }
        self.fetch_chunk(id, size, span, hot_extras).await
    }

    /// Reads `span` of chunk `id` from the replicas (no cache), verified, hedged.
    async fn fetch_chunk(
        &self,
        id: ChunkId,
        size: u64,
        span: ByteSpan,
        hot_extras: Vec<String>,
    ) -> Result<Bytes> {
        let (mut chosen, mut rest) = self.read_placement(id.as_bytes());
        // Extra copies of hot content join the owners; shuffling spreads reads of equally
        // good replicas (the sort below is stable).
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
        let whole = span.start == 0 && span.end == size;
        let fetch = |node: Arc<NodeHandle>| async move {
            let started = Instant::now();
            let r = {
                let _inflight = node.health.track();
                if whole {
                    node.client.get_chunk_end_to_end(&id).await
                } else {
                    node.client.get_chunk_verified(&id, span).await
                }
            };
            (node, started.elapsed(), r)
        };
        let mut attempts = FuturesUnordered::new();
        let mut next = order.into_iter();
        let Some(first) = next.next() else {
            return Err(GatewayError::ChunkUnavailable(id.to_hex()));
        };
        attempts.push(fetch(first));
        let hedge = tokio::time::sleep(self.hedge.delay());
        tokio::pin!(hedge);
        let mut hedged = false;
        let mut failures = Vec::new();
        loop {
            tokio::select! {
                done = attempts.next() => {
                    let Some((node, took, result)) = done else {
                        return Err(GatewayError::ChunkUnavailable(format!("{id} ({})", failures.join("; "))));
                    };
                    match result {
                        Ok(bytes) => {
                            node.health.mark_up();
                            self.hedge.record(took);
                            return Ok(bytes);
                        }
                        Err(e) => {
                            self.report_read_failure(&node, &id, &e);
                            failures.push(format!("{}: {e}", node.entry.id));
                            match next.next() {
                                Some(n) => attempts.push(fetch(n)),
                                None if attempts.is_empty() => {
                                    return Err(GatewayError::ChunkUnavailable(format!("{id} ({})", failures.join("; "))));
                                }
                                None => {}
                            }
                        }
                    }
                }
                () = &mut hedge, if !hedged => {
                    hedged = true;
                    if let Some(n) = next.next() {
                        self.metrics.hedged_reads.inc();
                        attempts.push(fetch(n));
                    }
                }
            }
        }
    }

    fn report_read_failure(&self, node: &NodeHandle, id: &ChunkId, e: &kura_cluster::Error) {
        let who = (&node.entry.id, id);
        match ReadFailure::of(e) {
            ReadFailure::Unreachable => node.health.mark_down(),
            ReadFailure::Corrupt => {
                self.metrics.corrupt_replicas.inc();
                tracing::warn!(node = %who.0, chunk = %who.1, "replica returned bytes that fail verification");
                // The node sent them unhashed: have it check its copy and quarantine it.
                let (client, id) = (node.client.clone(), *id);
                tokio::spawn(async move {
                    if let Err(e) = client.report_corrupt(&id).await {
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
