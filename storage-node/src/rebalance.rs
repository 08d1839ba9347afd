//! Rebalance and repair: after the cluster map changes, every node moves what it holds
//! to where the new map places it; and, periodically or after a node is declared lost,
//! owners bring every item back to N copies.
//!
//! A pass walks this node's chunks and records. For each item and its new replica set:
//! - **Hand-off** (this node is not an owner any more): every owner that lacks the item
//!   gets it from this node; once all owners hold it durably (their PUT answered, i.e.
//!   fsync'd), the local copy is deleted. Only the displaced copies move, so adding one
//!   node to K moves about 1/(K+1) of the copies and nothing else.
//! - **Repair** (this node is an owner; only in repair passes): the owners are asked
//!   whether they hold the item; the *first* owner in placement order that does pushes it
//!   to the owners that do not, so exactly one node sends each missing copy.
//!
//! Passes are throttled (`bytes_per_sec` of pushed data), can be paused, restart from
//! the beginning when a newer map arrives mid-pass, and start over after a restart (no
//! cursor is persisted: a restarted node re-walks its items, asking the owners again
//! about copies already handed off — correct, only repeated work). Reads keep working
//! throughout: gateways look for an item on the new
//! owners first and then on every other readable node.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kura_cluster::map::{ClusterMap, NodeState};
use kura_cluster::peers::{Peer, PeerSet};
use kura_cluster::ring::{record_key, Ring};
use kura_cluster::ChunkId;
use serde::{Deserialize, Serialize};

use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::records::StoredRecord;

/// Items examined per step of a pass.
const BATCH: usize = 128;

/// Default rebalance throttle: 64 MiB/s of pushed data per node, a fraction of an SSD's
/// bandwidth, so foreground reads keep their latency while a node's data moves in
/// minutes per 10 GiB.
pub const DEFAULT_REBALANCE_BYTES_PER_SEC: u64 = 64 * 1024 * 1024;

/// Default period of repair (anti-entropy) passes: hourly keeps under-replicated items
/// rare without spending the disks on re-checking.
pub const DEFAULT_REPAIR_INTERVAL_SECS: u64 = 3600;

/// Operator settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// No item is moved while paused.
    pub paused: bool,
    /// Throttle of pushed bytes per second (0: unthrottled).
    pub bytes_per_sec: u64,
}

/// Progress of the current or last pass, for `GET /v1/rebalance`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Node id.
    pub node_id: String,
    /// Map epoch the pass works towards.
    pub epoch: u64,
    /// A pass is running.
    pub running: bool,
    /// The pass also repairs (owners push missing copies).
    pub repair: bool,
    /// Paused by an operator.
    pub paused: bool,
    /// Throttle in bytes/s.
    pub bytes_per_sec: u64,
    /// Chunks and bytes held when the pass started.
    pub total_chunks: u64,
    /// Bytes of chunk data held when the pass started.
    pub total_bytes: u64,
    /// Chunks examined so far.
    pub scanned_chunks: u64,
    /// Bytes of examined chunks.
    pub scanned_bytes: u64,
    /// Chunk copies sent to other nodes.
    pub moved_chunks: u64,
    /// Bytes sent.
    pub moved_bytes: u64,
    /// Records sent.
    pub moved_records: u64,
    /// Local copies dropped after hand-off.
    pub dropped_chunks: u64,
    /// Items that could not be placed yet (an owner unreachable); the pass is retried a
    /// few seconds later and the epoch is not done until none is left.
    pub deferred: u64,
    /// Bytes sent per second in this pass.
    pub rate_bytes_per_sec: u64,
    /// Estimated seconds to the end of the pass.
    pub eta_secs: Option<u64>,
    /// Passes completed since start.
    pub passes: u64,
    /// Epoch of the last completed pass.
    pub done_epoch: u64,
}

/// The rebalancer's shared state.
pub struct Rebalancer {
    settings: Mutex<Settings>,
    pub(crate) progress: Mutex<Progress>,
    /// Woken on a map change, a settings change or an explicit request.
    pub wake: tokio::sync::Notify,
    repair_requested: AtomicBool,
    moved_total: AtomicU64,
}

impl Rebalancer {
    /// A rebalancer with `bytes_per_sec` throttle.
    pub fn new(bytes_per_sec: u64) -> Self {
        Self {
            settings: Mutex::new(Settings {
                paused: false,
                bytes_per_sec,
            }),
            progress: Mutex::new(Progress::default()),
            wake: tokio::sync::Notify::new(),
            repair_requested: AtomicBool::new(false),
            moved_total: AtomicU64::new(0),
        }
    }

    /// Current settings.
    pub fn settings(&self) -> Settings {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes settings (pause, resume, throttle).
    pub fn set(&self, s: Settings) {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = s;
        self.wake.notify_one();
    }

    /// Asks for a pass now; `repair` makes it a repair pass.
    pub fn request(&self, repair: bool) {
        if repair {
            self.repair_requested.store(true, Ordering::SeqCst);
        }
        self.wake.notify_one();
    }

    /// A snapshot of the progress.
    pub fn progress(&self) -> Progress {
        let s = self.settings();
        let mut p = self
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        p.paused = s.paused;
        p.bytes_per_sec = s.bytes_per_sec;
        p
    }

    /// Bytes this node has pushed since it started (all passes).
    pub fn moved_total(&self) -> u64 {
        self.moved_total.load(Ordering::Relaxed)
    }

    fn update(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.progress.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Runs passes forever: at start if the last pass was for an older epoch, on every map
/// change, on request, and a repair pass every `repair_interval`.
pub async fn run_forever(node: Arc<Node>, repair_interval: Duration) {
    let mut last_repair = Instant::now();
    loop {
        let map = node.current_map();
        let done = node.rebalancer.progress().done_epoch;
        let lost_appeared = map.nodes.iter().any(|n| n.state == NodeState::Lost);
        let due_repair = last_repair.elapsed() >= repair_interval;
        let asked_repair = node
            .rebalancer
            .repair_requested
            .swap(false, Ordering::SeqCst);
        let repair = asked_repair || due_repair || (lost_appeared && map.epoch > done);
        if map.epoch > 0 && (map.epoch > done || repair) {
            match run_pass(&node, &map, repair).await {
                Ok(true) => {
                    if repair {
                        last_repair = Instant::now();
                    }
                    // Items deferred (an owner unreachable) keep the epoch undone: the
                    // pass is tried again after the pause below, not in a tight loop.
                    if node.rebalancer.progress().deferred == 0 {
                        continue;
                    }
                }
                Ok(false) => continue, // a newer map arrived: start over with it
                Err(e) => tracing::error!(error = %e, "rebalance pass failed"),
            }
        }
        tokio::select! {
            () = node.rebalancer.wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// One walk over items towards a map: the placement of each item it is given (see the
/// module doc). Rebalance passes feed it every item; catch-up (`crate::catchup`) the
/// items written since a peer went away.
pub(crate) struct Pass<'a> {
    node: &'a Arc<Node>,
    ring: Ring,
    n: usize,
    me: String,
    /// The peers (the node's, of the newest map it knows).
    peers: Arc<PeerSet>,
    repair: bool,
    started: Instant,
    /// Where this walk counts what it did.
    progress: &'a Mutex<Progress>,
    /// Peers that failed at the transport level during this walk: not called again in
    /// it (their items are deferred at once), so an unreachable peer costs one timeout
    /// per walk, not one per item.
    unreachable: Mutex<HashSet<String>>,
    /// Every owner holding an item pushes it to owners lacking it, not only the first
    /// (for a follow-up walk, when the first holder may never have been asked).
    any_holder: bool,
}

impl<'a> Pass<'a> {
    /// A walk towards `map`, counting into `progress`; `repair` makes owners push
    /// missing copies too.
    pub(crate) fn new(
        node: &'a Arc<Node>,
        map: &ClusterMap,
        repair: bool,
        progress: &'a Mutex<Progress>,
    ) -> Self {
        let me = node.config.node_id.clone();
        node.peers.adopt(map);
        let peers = node.peers.current();
        Pass {
            node,
            ring: Ring::new(map),
            n: map.replicas,
            me,
            peers,
            repair,
            started: Instant::now(),
            progress,
            unreachable: Mutex::new(HashSet::new()),
            any_holder: false,
        }
    }

    /// Makes every owner holding an item push it (see the field).
    pub(crate) fn any_holder(mut self) -> Self {
        self.any_holder = true;
        self
    }

    /// Peer `id`, unless it is this node, unknown, lost, or was unreachable in this walk.
    fn peer(&self, id: &str) -> Option<&Arc<Peer>> {
        let down = self.unreachable.lock().unwrap_or_else(|e| e.into_inner());
        if down.contains(id) || id == self.me {
            return None;
        }
        self.peers.get(id).filter(|p| p.entry.state.readable())
    }

    /// Calls peer `id` through the node's peer path (see `kura_cluster::peers`); a
    /// transport failure or timeout takes the peer out of this walk.
    async fn call<T, F>(
        &self,
        id: &str,
        what: &'static str,
        call: impl FnOnce(Arc<Peer>) -> F,
    ) -> Option<kura_cluster::Result<T>>
    where
        F: std::future::Future<Output = kura_cluster::Result<T>>,
    {
        let peer = self.peer(id)?.clone();
        let result = self.node.peers.call(&peer, what, call(peer.clone())).await;
        if let Err(e) = &result {
            self.failed(id, e);
        }
        Some(result)
    }

    /// Notes a failed call to `id`; a transport failure takes it out of this walk.
    fn failed(&self, id: &str, e: &kura_cluster::Error) {
        if e.is_unreachable() {
            self.unreachable
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.to_string());
        }
    }

    fn note(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.progress.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// One pass towards `map`. Returns `Ok(false)` if a newer map arrived meanwhile.
pub async fn run_pass(node: &Arc<Node>, map: &ClusterMap, repair: bool) -> Result<bool> {
    let pass = Pass::new(node, map, repair, &node.rebalancer.progress);
    let (chunks, bytes, _) = node.chunks.usage();
    node.rebalancer.update(|p| {
        *p = Progress {
            node_id: pass.me.clone(),
            epoch: map.epoch,
            running: true,
            repair,
            total_chunks: chunks,
            total_bytes: bytes,
            passes: p.passes,
            done_epoch: p.done_epoch,
            ..Default::default()
        }
    });
    tracing::info!(
        epoch = map.epoch,
        repair,
        chunks,
        bytes,
        "rebalance pass started"
    );
    let finished = pass.chunks(map.epoch).await? && pass.records(map.epoch).await?;
    node.rebalancer.update(|p| {
        p.running = false;
        p.eta_secs = None;
        if finished {
            p.passes += 1;
            // Only a pass that placed everything completes the epoch; one that deferred
            // items (an owner was unreachable) is retried by `run_forever`.
            if p.deferred == 0 {
                p.done_epoch = p.done_epoch.max(map.epoch);
            }
        }
    });
    let p = node.rebalancer.progress();
    tracing::info!(
        epoch = map.epoch,
        finished,
        moved_bytes = p.moved_bytes,
        moved_chunks = p.moved_chunks,
        dropped = p.dropped_chunks,
        deferred = p.deferred,
        "rebalance pass ended"
    );
    Ok(finished)
}

impl Pass<'_> {
    /// Waits while paused, and so that pushed bytes stay under the throttle. Returns
    /// false if the map moved on.
    pub(crate) async fn pace(&self, epoch: u64) -> bool {
        loop {
            if self.node.current_map().epoch != epoch {
                return false;
            }
            let s = self.node.rebalancer.settings();
            if !s.paused {
                if s.bytes_per_sec > 0 {
                    let moved = self
                        .progress
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .moved_bytes;
                    let due = Duration::from_secs_f64(moved as f64 / s.bytes_per_sec as f64);
                    if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                        tokio::time::sleep(wait.min(Duration::from_millis(500))).await;
                        continue;
                    }
                }
                return true;
            }
            tokio::select! {
                () = self.node.rebalancer.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    fn owners(&self, key: &[u8; 32]) -> Vec<String> {
        self.ring
            .placement(key, self.n)
            .0
            .iter()
            .map(|e| e.id.clone())
            .collect()
    }

    async fn chunks(&self, epoch: u64) -> Result<bool> {
        let mut after: Option<ChunkId> = None;
        loop {
            let node = self.node.clone();
            let cursor = after;
            let batch =
                tokio::task::spawn_blocking(move || node.chunks.list(cursor.as_ref(), BATCH))
                    .await??;
            let Some(last) = batch.last().map(|c| c.id) else {
                return Ok(true);
            };
            for info in batch {
                if !self.pace(epoch).await {
                    return Ok(false);
                }
                self.chunk(info.id, info.size).await;
                self.note(|p| {
                    p.scanned_chunks += 1;
                    p.scanned_bytes += info.size;
                    let secs = self.started.elapsed().as_secs_f64().max(0.001);
                    p.rate_bytes_per_sec = (p.moved_bytes as f64 / secs) as u64;
                    let scan_rate = p.scanned_bytes as f64 / secs;
                    p.eta_secs = (scan_rate > 0.0).then(|| {
                        (p.total_bytes.saturating_sub(p.scanned_bytes) as f64 / scan_rate) as u64
                    });
                });
            }
            after = Some(last);
        }
    }

    /// Places one chunk (see the module doc).
    pub(crate) async fn chunk(&self, id: ChunkId, size: u64) {
        let owners = self.owners(id.as_bytes());
        let owner_here = owners.contains(&self.me);
        if owner_here && !self.repair {
            return;
        }
        if !owner_here {
            // An extra copy a gateway placed here for hot content stays while pinned.
            let node = self.node.clone();
            let pinned = tokio::task::spawn_blocking(move || node.chunks.pinned_until(&id)).await;
            if matches!(pinned, Ok(Ok(until)) if until > kura_cluster::hlc::wall_ms()) {
                return;
            }
        }
        // Who holds it already?
        let mut holds: Vec<(String, Option<bool>)> = Vec::new();
        for o in owners.iter().filter(|o| **o != self.me) {
            let state = match self
                .call(o, "chunk_head", |p| async move {
                    p.client.head_chunk(&id).await
                })
                .await
            {
                Some(Ok(s)) => Some(s.is_some()),
                _ => None,
            };
            holds.push((o.clone(), state));
        }
        if owner_here && !self.any_holder {
            // Repair: only the first owner (in placement order) holding it pushes.
            let first_holder = owners
                .iter()
                .find(|o| **o == self.me || holds.iter().any(|(h, s)| h == *o && *s == Some(true)));
            if first_holder != Some(&self.me) {
                return;
            }
        }
        let mut all_hold = true;
        let mut data = None;
        for (o, state) in &holds {
            match state {
                Some(true) => {}
                Some(false) => {
                    if data.is_none() {
                        data = self.read_local(id).await;
                    }
                    let Some(bytes) = data.clone() else {
                        all_hold = false;
                        continue;
                    };
                    let put = |p: Arc<Peer>| async move { p.client.put_chunk(&id, bytes).await };
                    match self.call(o, "chunk_put", put).await {
                        None => all_hold = false,
                        Some(Ok(_)) => {
                            self.node
                                .rebalancer
                                .moved_total
                                .fetch_add(size, Ordering::Relaxed);
                            self.note(|p| {
                                p.moved_chunks += 1;
                                p.moved_bytes += size;
                            });
                        }
                        Some(Err(e)) => {
                            tracing::warn!(chunk = %id, peer = %o, error = %e, "could not place chunk");
                            all_hold = false;
                        }
                    }
                }
                None => all_hold = false,
            }
        }
        if !all_hold {
            self.note(|p| p.deferred += 1);
            return;
        }
        if !owner_here {
            let node = self.node.clone();
            match tokio::task::spawn_blocking(move || node.chunks.delete(&id)).await {
                Ok(Ok(_)) => self.note(|p| p.dropped_chunks += 1),
                Ok(Err(e)) => {
                    tracing::warn!(chunk = %id, error = %e, "could not drop handed-off chunk")
                }
                Err(e) => {
                    tracing::warn!(chunk = %id, error = %e, "could not drop handed-off chunk")
                }
            }
        }
    }

    async fn read_local(&self, id: ChunkId) -> Option<bytes::Bytes> {
        let node = self.node.clone();
        let read = tokio::task::spawn_blocking(move || {
            let entry = node.chunks.entry(&id)?.ok_or(NodeError::NotFound)?;
            node.chunks.read(&id, &entry, None)
        })
        .await;
        match read {
            Ok(Ok(b)) => Some(b),
            Ok(Err(e)) => {
                tracing::warn!(chunk = %id, error = %e, "cannot read chunk to place it");
                None
            }
            Err(_) => None,
        }
    }

    async fn records(&self, epoch: u64) -> Result<bool> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let node = self.node.clone();
            let cursor = after.clone();
            let batch = tokio::task::spawn_blocking(move || {
                node.records.scan_stored(cursor.as_deref(), BATCH)
            })
            .await??;
            let Some((last, _)) = batch.last().cloned() else {
                return Ok(true);
            };
            for (_, record) in batch {
                if !self.pace(epoch).await {
                    return Ok(false);
                }
                self.record(record).await;
            }
            after = Some(last);
        }
    }

    /// Places one record (see the module doc), sending it as it arrived here, in each
    /// owner's next record batch.
    pub(crate) async fn record(&self, stored: StoredRecord) {
        let StoredRecord { record, encoded } = stored;
        let stored = encoded.into_stored();
        let owners = self.owners(&record_key(&record.bucket, &record.key));
        let owner_here = owners.contains(&self.me);
        if owner_here && !self.repair {
            return;
        }
        let mut all_hold = true;
        for o in owners.iter().filter(|o| **o != self.me) {
            // LWW makes offering our copy always safe: it only lands if newer.
            let stored = &stored;
            let put = |p: Arc<Peer>| async move { p.put_record(stored.clone()).await };
            match self.call(o, "record_put", put).await {
                Some(Ok(r)) => {
                    if r.applied {
                        self.note(|p| p.moved_records += 1);
                    }
                }
                _ => all_hold = false,
            }
        }
        if !all_hold {
            self.note(|p| p.deferred += 1);
        } else if !owner_here {
            let node = self.node.clone();
            let _ = tokio::task::spawn_blocking(move || node.records.remove_if(&record)).await;
        }
    }
}
