//! Catch-up: a node back from an outage gets what it missed within seconds, without
//! waiting for the next hourly repair pass.
//!
//! While a node is away (killed, rebooting, cut off), gateways write its copies to the
//! other owners and, where there are more nodes than replicas, to fallback nodes. Every
//! node logs what it stores by arrival time ([`log`]). When the node is back, its peers
//! are asked to *catch up since T*: each walks its log from T and places every item as
//! a repair pass would (`rebalance::Pass`): the first owner holding a chunk pushes it
//! to owners that lack it, records are offered to every owner (last writer wins), and a
//! fallback node hands its copies to the owners and drops them. Only the outage's writes
//! are looked at, so catch-up costs what was missed, not the size of the store.
//!
//! Two signals ask for it, so both kinds of outage are covered:
//! - **the node restarts**: it kept an "alive at" time in its database every
//!   [`ALIVE_INTERVAL`]; at start it asks every peer to catch up since that time
//!   ([`announce_return`]), retrying peers that do not answer;
//! - **the node was cut off but kept running**: a gateway whose prober saw it go away and
//!   come back asks the other nodes to catch up since it went away.
//!
//! T is taken `CATCH_UP_MARGIN` early to cover clock skew between machines. Requests
//! coalesce (the earliest T wins) and re-run while items are deferred (an owner still
//! unreachable), for up to [`RETRY_FOR`]; past that, and for outages older than the log,
//! the periodic repair pass remains the backstop.

pub mod log;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kura_cluster::client::CATCH_UP_MARGIN;
use serde::{Deserialize, Serialize};

use crate::db::{Db, CF_META};
use crate::error::Result;
use crate::node::Node;
use crate::rebalance::{Pass, Progress};
use log::Logged;

/// How often a node records that it is alive: the restart signal's T is at most this
/// stale (plus the margin), so a restarted node asks for a few seconds more than it
/// missed, never less.
pub const ALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// How long a catch-up keeps retrying deferred items, and how long a restarted node keeps
/// asking peers that do not answer. Beyond this, repair passes take over.
pub const RETRY_FOR: Duration = Duration::from_secs(600);

/// Wait between the first-holder walk of a catch-up and its any-holder follow-up: the
/// other holders' walks of the same request run meanwhile, so the follow-up mostly
/// finds everything in place and only HEADs.
const FOLLOW_UP_AFTER: Duration = Duration::from_secs(5);

/// Pause between retries (of deferred items, of unanswered announcements).
const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// Log entries examined per database read.
const SCAN_BATCH: usize = 256;

/// How often the log is trimmed.
const TRIM_INTERVAL: Duration = Duration::from_secs(3600);

/// Meta key of the last "alive at" time (ms since the epoch, u64 big-endian).
const ALIVE_KEY: &[u8] = b"alive_ms";

/// Body of `POST /v1/catchup`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct CatchUpRequest {
    /// Catch up with what was written from this time on (ms since the epoch).
    pub since_ms: u64,
}

/// The catch-up state of a node.
pub struct CatchUp {
    /// Earliest T asked for and not yet walked, with when it was first asked.
    pending: Mutex<Option<(u64, Instant)>>,
    wake: tokio::sync::Notify,
    progress: Mutex<Progress>,
    /// The "alive at" time found at start: when this node was last known to run.
    last_alive_ms: Option<u64>,
}

impl CatchUp {
    /// Reads the previous run's "alive at" time from `db`.
    pub fn open(db: &Db) -> Result<Self> {
        let last_alive_ms = db
            .raw()
            .get_cf(db.cf(CF_META)?, ALIVE_KEY)?
            .and_then(|v| v.try_into().ok())
            .map(u64::from_be_bytes);
        Ok(Self {
            pending: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            progress: Mutex::new(Progress::default()),
            last_alive_ms,
        })
    }

    /// Asks for a catch-up with what was written since `since_ms`.
    pub fn request(&self, since_ms: u64) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        *p = Some(match *p {
            Some((t, asked)) => (t.min(since_ms), asked),
            None => (since_ms, Instant::now()),
        });
        drop(p);
        self.wake.notify_one();
    }

    /// What the current or last catch-up walk did (also logged at its end, and counted
    /// in the `kura_catchup_*` metrics).
    pub fn progress(&self) -> Progress {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn take(&self) -> Option<(u64, Instant)> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// Serves catch-up requests, and keeps the "alive at" time and the log's trim, forever.
pub async fn run_forever(node: Arc<Node>) {
    // One task for all three, so that stopping it (node shutdown) stops them all and
    // no clone of the node outlives the database.
    tokio::join!(
        announce_return(node.clone()),
        keep_alive_and_trim(node.clone()),
        serve_requests(node),
    );
}

async fn serve_requests(node: Arc<Node>) {
    loop {
        node.catchup.wake.notified().await;
        while let Some((since, asked)) = node.catchup.take() {
            // First, each item is pushed by its first holder only (one copy sent per
            // missing copy). Then, after the others had time to do their share, any
            // holder pushes what is still missing: a peer that was itself unreachable
            // when the catch-up was asked for never walks, and its share would wait for
            // the repair pass.
            let mut done = walk(&node, since, false).await;
            if done {
                tokio::time::sleep(FOLLOW_UP_AFTER).await;
                done = walk(&node, since, true).await;
            }
            if !done && asked.elapsed() < RETRY_FOR {
                tokio::time::sleep(RETRY_PAUSE).await;
                let mut p = node
                    .catchup
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                *p = Some(p.map_or((since, asked), |(t, _)| (t.min(since), asked)));
            }
        }
    }
}

async fn keep_alive_and_trim(node: Arc<Node>) {
    let mut alive = tokio::time::interval(ALIVE_INTERVAL);
    let mut trim = tokio::time::interval(TRIM_INTERVAL);
    loop {
        tokio::select! {
            _ = alive.tick() => {
                let n = node.clone();
                let _ = tokio::task::spawn_blocking(move || store_alive(&n)).await;
            }
            _ = trim.tick() => {
                let before = kura_cluster::hlc::wall_ms()
                    .saturating_sub(log::WRITE_LOG_RETENTION.as_millis() as u64);
                if let Err(e) = blocking(&node, move |n| log::trim(&n.db, before)).await {
                    tracing::warn!(error = %e, "could not trim the write log");
                }
            }
        }
    }
}

fn store_alive(node: &Node) -> Result<()> {
    let now = kura_cluster::hlc::wall_ms().to_be_bytes();
    // Not synced: a lost update only makes the next start ask for more than it missed.
    node.db.raw().put_cf(node.db.cf(CF_META)?, ALIVE_KEY, now)?;
    Ok(())
}

/// Walks the log from `since_ms` and places every item; true if everything was placed
/// (nothing deferred, the map unchanged meanwhile).
async fn walk(node: &Arc<Node>, since_ms: u64, any_holder: bool) -> bool {
    let map = node.current_map();
    if map.epoch == 0 {
        return true;
    }
    let progress = &node.catchup.progress;
    *progress.lock().unwrap_or_else(|e| e.into_inner()) = Progress {
        node_id: node.config.node_id.clone(),
        epoch: map.epoch,
        running: true,
        repair: true,
        ..Default::default()
    };
    let started = Instant::now();
    let finished = match walk_log(node, &map, since_ms, any_holder, progress).await {
        Ok(finished) => finished,
        Err(e) => {
            tracing::warn!(error = %e, "catch-up failed");
            false
        }
    };
    let p = {
        let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
        p.running = false;
        if finished {
            p.passes += 1;
        }
        p.clone()
    };
    if finished {
        node.metrics.catchup_walks.inc();
    }
    node.metrics
        .catchup_sent
        .inc_by(p.moved_chunks + p.moved_records);
    tracing::info!(
        since_ms,
        finished,
        any_holder,
        items = p.scanned_chunks,
        moved_chunks = p.moved_chunks,
        moved_records = p.moved_records,
        deferred = p.deferred,
        secs = started.elapsed().as_secs_f64(),
        "catch-up walked the write log"
    );
    finished && p.deferred == 0
}

async fn walk_log(
    node: &Arc<Node>,
    map: &kura_cluster::map::ClusterMap,
    since_ms: u64,
    any_holder: bool,
    progress: &Mutex<Progress>,
) -> Result<bool> {
    let trimmed = blocking(node, |n| log::trimmed_before(&n.db)).await?;
    if since_ms < trimmed && !any_holder {
        // The log no longer reaches back to T: what it lost is left to a full repair.
        tracing::info!(
            since_ms,
            "outage older than the write log; asking for a repair pass"
        );
        node.rebalancer.request(true);
    }
    let pass = Pass::new(node, map, true, progress);
    let pass = if any_holder { pass.any_holder() } else { pass };
    let mut from = log::key_at(since_ms);
    loop {
        let cursor = from.clone();
        let (items, last) = blocking(node, move |n| log::scan(&n.db, &cursor, SCAN_BATCH)).await?;
        let Some(last) = last else {
            return Ok(true);
        };
        for item in items {
            if !pass.pace(map.epoch).await {
                return Ok(false);
            }
            place(node, &pass, item).await?;
            progress
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .scanned_chunks += 1;
        }
        from = log::after(&last);
    }
}

/// Places one logged item if it is still held here.
async fn place(node: &Arc<Node>, pass: &Pass<'_>, item: Logged) -> Result<()> {
    match item {
        Logged::Chunk(id) => {
            if let Some(entry) = blocking(node, move |n| n.chunks.entry(&id)).await? {
                pass.chunk(id, entry.size).await;
            }
        }
        Logged::Record(bucket, key) => {
            if let Some(record) =
                blocking(node, move |n| n.records.get_stored(&bucket, &key)).await?
            {
                pass.record(record).await;
            }
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    node: &Arc<Node>,
    f: impl FnOnce(&Node) -> Result<T> + Send + 'static,
) -> Result<T> {
    let node = node.clone();
    tokio::task::spawn_blocking(move || f(&node)).await?
}

/// At start, if this node ran before: asks every peer to catch up since it was last
/// alive, retrying those that do not answer for up to [`RETRY_FOR`].
pub async fn announce_return(node: Arc<Node>) {
    let Some(alive) = node.catchup.last_alive_ms else {
        return; // first start: nothing was missed
    };
    let since_ms = alive.saturating_sub(CATCH_UP_MARGIN.as_millis() as u64);
    let started = Instant::now();
    let mut told: Vec<String> = Vec::new();
    loop {
        let map = node.current_map();
        let peers: Vec<_> = map
            .nodes
            .iter()
            .filter(|n| n.id != node.config.node_id && n.state.readable())
            .filter(|n| !told.contains(&n.id))
            .collect();
        if peers.is_empty() && map.epoch > 0 {
            tracing::info!(since_ms, "every peer asked to catch this node up");
            return;
        }
        for peer in peers {
            let handle = node.peers.peer_for(peer);
            let ask = handle.client.catch_up(since_ms);
            let told_now = node.peers.call(&handle, "catch_up", ask).await;
            match told_now {
                Ok(()) => told.push(peer.id.clone()),
                Err(e) => tracing::debug!(peer = %peer.id, error = %e, "peer not told yet"),
            }
        }
        if started.elapsed() >= RETRY_FOR {
            tracing::warn!("some peers never answered; the repair pass will catch up");
            return;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}
