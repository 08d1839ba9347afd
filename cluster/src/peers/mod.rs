//! The one way a kura process calls its peers (storage nodes): a handle per node of the
//! current map (its client, health and calls in flight), one [`Peers::call`] that every
//! node call goes through (timeout, health, tracing, metrics), and one driver of
//! replicated calls, [`Peers::replicated`], whose decisions (quorum, replacements,
//! hedging) are the pure [`tracker`]. Gateways (writes, record and chunk reads), and
//! nodes (rebalance, repair, catch-up, GC) use it.
//!
//! Handles live across map epochs: a node whose entry did not change keeps its handle,
//! so its health and in-flight count survive an operator's change of the map.

pub mod batch;
pub mod health;
pub mod local;
pub mod metrics;
pub mod tracker;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;

use bytes::Bytes;

use crate::client::{NodeClient, PutRecordReply, RecordName};
use crate::map::{ClusterMap, NodeEntry};
use crate::record::EncodedRecord;
use crate::{Error, Result};

pub use batch::{RecordBatcher, RecordReadBatcher};
pub use health::{Health, HedgeBudget};
pub use local::LocalStore;
pub use metrics::PeerMetrics;
pub use tracker::{Hedge, Plan, Tracker, Verdict};

/// Most idle connections kept to one peer: enough for a gateway's concurrent chunk
/// reads to reuse connections instead of opening one per request.
pub const IDLE_CONNECTIONS_PER_PEER: usize = 64;

/// One peer as this process knows it.
#[derive(Debug)]
pub struct Peer {
    /// Its map entry.
    pub entry: NodeEntry,
    /// Its client (sharing the process's connection pool).
    pub client: NodeClient,
    /// Its health.
    pub health: Health,
    /// Whether its chunk files can be read here (see [`local`]).
    pub local: LocalStore,
    /// Its record writes waiting to be sent (see [`batch`]).
    pub records: RecordBatcher,
    /// Its record reads waiting to be sent (see [`batch`]).
    pub record_reads: RecordReadBatcher,
}

impl Peer {
    /// The peer's node id.
    pub fn id(&self) -> &str {
        &self.entry.id
    }

    /// Offers a record (as stored: header and body, see [`EncodedRecord`]) in the peer's
    /// next record batch (see [`batch`]).
    pub async fn put_record(&self, record: Bytes) -> Result<PutRecordReply> {
        self.records.call(&self.client, record).await
    }

    /// The record `name` as the peer holds it (see [`EncodedRecord`]), asked in the
    /// peer's next record read batch (see [`batch`]).
    pub async fn get_record(&self, name: RecordName) -> Result<Option<EncodedRecord>> {
        self.record_reads.call(&self.client, name).await
    }
}

/// The peers of one map epoch.
#[derive(Debug, Default)]
pub struct PeerSet {
    /// The epoch they were built for (0: none yet).
    pub epoch: u64,
    nodes: HashMap<String, Arc<Peer>>,
}

impl PeerSet {
    /// A peer by node id.
    pub fn get(&self, id: &str) -> Option<&Arc<Peer>> {
        self.nodes.get(id)
    }

    /// Whether it has no peers (no map adopted yet).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every peer of the map, in no order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Peer>> {
        self.nodes.values()
    }
}

/// A peer's answer in a replicated call, and how long it took.
pub struct Reply<T> {
    /// Who answered.
    pub peer: Arc<Peer>,
    /// How long the call took.
    pub took: Duration,
    /// The answer.
    pub value: T,
}

/// A call of a replicated operation still in flight when its quorum was decided.
pub type Pending<T> = Pin<Box<dyn Future<Output = (Arc<Peer>, Duration, Result<T>)> + Send>>;

/// What a replicated call ended with.
pub struct Replies<T> {
    /// Whether the quorum was met.
    pub met: bool,
    /// The successes, in the order they came.
    pub ok: Vec<Reply<T>>,
    /// The failures, in the order they came.
    pub failed: Vec<(Arc<Peer>, Error)>,
    /// Calls made because others were slow (hedges).
    pub hedged: usize,
    /// Calls still in flight: drop them to cancel them, spawn them to let them finish
    /// (a write's remaining copies), or read them (a read's late answers).
    pub rest: FuturesUnordered<Pending<T>>,
}

impl<T> Replies<T> {
    /// The failures as one line for an error message: `node: error; node: error`.
    pub fn failure_summary(&self) -> String {
        let each: Vec<String> = self
            .failed
            .iter()
            .map(|(peer, e)| format!("{}: {e}", peer.entry.id))
            .collect();
        each.join("; ")
    }
}

/// The peers of the current map, and the one path calls to them take.
pub struct Peers {
    set: RwLock<Arc<PeerSet>>,
    secret: String,
    http: reqwest::Client,
    path: CallPath,
}

/// What every call to a peer goes through (cheap to clone: calls still in flight after
/// a replicated call returned hold their own).
#[derive(Clone)]
struct CallPath {
    timeout: Duration,
    metrics: PeerMetrics,
}

impl CallPath {
    async fn call<T, F>(&self, peer: &Peer, what: &'static str, call: F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let started = Instant::now();
        let result = {
            let _inflight = peer.health.track();
            match tokio::time::timeout(self.timeout, call).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout {
                    node: peer.entry.id.clone(),
                    after: self.timeout,
                }),
            }
        };
        match &result {
            Ok(_) => peer.health.mark_up(),
            Err(e) if e.is_unreachable() => peer.health.mark_down(),
            Err(_) => {}
        }
        if let Err(e) = &result {
            tracing::debug!(node = %peer.entry.id, what, error = %e, "peer call failed");
        }
        self.metrics
            .record(&peer.entry.id, what, &result, started.elapsed());
        result
    }
}

impl Peers {
    /// No peers yet; calls carry `secret` and are given up after `timeout`.
    ///
    /// The timeout is [`Peers::call`]'s, not the HTTP client's: a client timeout would
    /// also cut off an answer's body read after the call returned — a chunk streamed to
    /// a slow viewer block by block (`kura_cluster::blocks`) would break off, and its
    /// node be taken for down, after `timeout` however well the node answers. Such
    /// reads time each block instead (the gateway's `BLOCK_WAIT`).
    pub fn new(secret: &str, timeout: Duration, metrics: PeerMetrics) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(crate::client::CONNECT_TIMEOUT)
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_PEER)
            .build()?;
        Ok(Self {
            set: RwLock::new(Arc::new(PeerSet::default())),
            secret: secret.to_string(),
            http,
            path: CallPath { timeout, metrics },
        })
    }

    /// The peers now.
    pub fn current(&self) -> Arc<PeerSet> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A client for `base`, sharing this process's connections.
    fn client_for(&self, base: &str) -> NodeClient {
        NodeClient::with_http(base, &self.secret, self.http.clone())
    }

    /// The peer of `entry`: its handle in the current set when that has the same entry,
    /// else a handle of its own (a map this set has not adopted, or not yet).
    pub fn peer_for(&self, entry: &NodeEntry) -> Arc<Peer> {
        match self.current().get(&entry.id) {
            Some(p) if p.entry == *entry => p.clone(),
            _ => self.new_peer(entry),
        }
    }

    fn new_peer(&self, entry: &NodeEntry) -> Arc<Peer> {
        Arc::new(Peer {
            entry: entry.clone(),
            client: self.client_for(&format!("http://{}", entry.addr)),
            health: Health::default(),
            local: LocalStore::default(),
            records: RecordBatcher::new(&entry.id, self.path.timeout),
            record_reads: RecordReadBatcher::new(&entry.id, self.path.timeout),
        })
    }

    /// Switches to the nodes of `map` if its epoch is newer than the set's (or the set is
    /// empty); a node whose entry did not change keeps its handle. Returns whether it
    /// switched.
    pub fn adopt(&self, map: &ClusterMap) -> bool {
        let mut guard = self.set.write().unwrap_or_else(|e| e.into_inner());
        if map.epoch <= guard.epoch && !guard.nodes.is_empty() {
            return false;
        }
        let nodes = map
            .nodes
            .iter()
            .map(|n| {
                let peer = match guard.nodes.get(&n.id) {
                    Some(p) if p.entry == *n => p.clone(),
                    _ => self.new_peer(n),
                };
                (n.id.clone(), peer)
            })
            .collect();
        *guard = Arc::new(PeerSet {
            epoch: map.epoch,
            nodes,
        });
        true
    }

    /// Calls `peer` (`what` names the operation in metrics and logs): counted in
    /// flight, given up after the timeout, and its outcome noted in the peer's health (a
    /// transport failure or timeout marks it down, an answer up) and in the metrics.
    pub async fn call<T, F>(&self, peer: &Peer, what: &'static str, call: F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        self.path.call(peer, what, call).await
    }

    /// Runs `op` on the peers of `order` as `plan` decides (see [`tracker`]): asks the
    /// first ones, replaces failures with the next, asks one more when `hedge_after`
    /// passes since the last call was made without the quorum (when the plan hedges),
    /// and returns as soon as the quorum is met or out of reach, with the calls still
    /// in flight.
    pub async fn replicated<T, F, Fut>(
        &self,
        order: &[Arc<Peer>],
        plan: Plan,
        hedge_after: Duration,
        what: &'static str,
        op: F,
    ) -> Replies<T>
    where
        T: Send + 'static,
        F: Fn(Arc<Peer>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let mut tracker = Tracker::new(Plan {
            candidates: plan.candidates.min(order.len()),
            ..plan
        });
        let ask = |i: usize| -> Pending<T> {
            let peer = order[i].clone();
            let fut = op(peer.clone());
            let path = self.path.clone();
            Box::pin(async move {
                let started = Instant::now();
                let r = path.call(&peer, what, fut).await;
                (peer, started.elapsed(), r)
            })
        };
        let mut rest: FuturesUnordered<Pending<T>> = tracker.start().into_iter().map(ask).collect();
        let (mut ok, mut failed, mut hedged) = (Vec::new(), Vec::new(), 0);
        let mut verdict = tracker.verdict();
        // A hedge is due `hedge_after` since the last call was made.
        let mut last_ask = tokio::time::Instant::now();
        while verdict == Verdict::Pending {
            let hedge = tokio::time::sleep_until(last_ask + hedge_after);
            tokio::pin!(hedge);
            tokio::select! {
                done = rest.next() => {
                    let Some((peer, took, result)) = done else { break };
                    verdict = match result {
                        Ok(value) => {
                            ok.push(Reply { peer, took, value });
                            tracker.succeeded()
                        }
                        Err(e) => {
                            failed.push((peer, e));
                            let (next, v) = tracker.failed();
                            if let Some(i) = next {
                                rest.push(ask(i));
                                last_ask = tokio::time::Instant::now();
                            }
                            v
                        }
                    };
                }
                () = &mut hedge, if tracker.hedge_armed() => {
                    if let Some(i) = tracker.hedge() {
                        rest.push(ask(i));
                        last_ask = tokio::time::Instant::now();
                        hedged += 1;
                        self.path.metrics.hedges.inc();
                    }
                }
            }
        }
        Replies {
            met: verdict == Verdict::Met,
            ok,
            failed,
            hedged,
            rest,
        }
    }
}
