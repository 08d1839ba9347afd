//! The health prober, and the catch-up it asks for when a node comes back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kura_cluster::client::CATCH_UP_MARGIN;
use kura_cluster::peers::health::{PROBE_INTERVAL, PROBE_TIMEOUT};

use super::{Cluster, Peer};

/// How long an ended outage still widens the catch-ups asked for later (see
/// [`Cluster::ask_catch_up`]): as long as nodes retry a catch-up's deferred items.
pub const RECENT_OUTAGES: Duration = Duration::from_secs(600);

/// Least time between two catch-ups a gateway asks for. A node that flaps under load
/// (a timed-out request marks it down) would otherwise have every node walk its log
/// every second; returns within this interval are merged into the next ask.
pub const CATCH_UP_MIN_INTERVAL: Duration = Duration::from_secs(15);

/// Outages seen ending, and when a catch-up was last asked for.
#[derive(Default)]
pub struct Outages {
    /// (when it began, wall ms; when it ended).
    ended: Vec<(u64, Instant)>,
    /// An outage ended that no catch-up asked for yet covers.
    pending: bool,
    last_ask: Option<Instant>,
}

impl Cluster {
    /// Probes every node's `/health` forever, marking nodes up or down.
    pub async fn probe_forever(self: Arc<Self>) {
        let http = match reqwest::Client::builder().timeout(PROBE_TIMEOUT).build() {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the health prober");
                return;
            }
        };
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        loop {
            tick.tick().await;
            let probes = self.all_nodes().into_iter().map(|node| {
                let http = http.clone();
                let this = &self;
                async move {
                    let url = format!("{}/health", node.client.base());
                    match http.get(url).send().await {
                        Ok(r) if r.status().is_success() => {
                            node.health.mark_up();
                            this.find_local(&node);
                            node.health.take_return().map(|since| (node, since))
                        }
                        _ => {
                            node.health.mark_down();
                            node.local.forget();
                            None
                        }
                    }
                }
            });
            for (node, since) in futures::future::join_all(probes)
                .await
                .into_iter()
                .flatten()
            {
                tracing::info!(node = %node.entry.id, since_ms = since, "node is back");
                let mut o = self.outages.lock().unwrap_or_else(|e| e.into_inner());
                o.ended.push((since, Instant::now()));
                o.pending = true;
            }
            self.ask_catch_up();
        }
    }

    /// Finds out in the background whether `node`'s chunk files are on this machine
    /// (see `kura_cluster::peers::local`), if local reads are on and nobody has yet.
    fn find_local(self: &Arc<Self>, node: &Arc<Peer>) {
        if !self.local_reads || !node.local.needs_check() {
            return;
        }
        let (this, node) = (self.clone(), node.clone());
        tokio::spawn(async move { this.peers.find_local(&node).await });
    }

    /// After a node answered again: asks every node that is up to catch the cluster up
    /// with what it stored since the outage began (see the storage node's `catchup`
    /// module; a restarted node also asks by itself, this covers a node that was only
    /// cut off). The time asked for goes back to the start of every outage that ended
    /// within [`RECENT_OUTAGES`], so a node that was itself away when an earlier outage
    /// ended (and so was never asked) does its share now. At most once per
    /// [`CATCH_UP_MIN_INTERVAL`]; in the background; a node that misses the call is left
    /// to the repair pass.
    fn ask_catch_up(self: &Arc<Self>) {
        let since_ms = {
            let mut o = self.outages.lock().unwrap_or_else(|e| e.into_inner());
            let due = o
                .last_ask
                .is_none_or(|t| t.elapsed() >= CATCH_UP_MIN_INTERVAL);
            if !o.pending || !due {
                return;
            }
            o.ended
                .retain(|(_, ended)| ended.elapsed() < RECENT_OUTAGES);
            let Some(since) = o.ended.iter().map(|(t, _)| *t).min() else {
                return;
            };
            o.pending = false;
            o.last_ask = Some(Instant::now());
            since
        };
        let since_ms = since_ms.saturating_sub(CATCH_UP_MARGIN.as_millis() as u64);
        tracing::info!(since_ms, "asking every node to catch up");
        for peer in self.all_nodes() {
            if !peer.health.is_up() {
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                let ask = peer.client.catch_up(since_ms);
                if let Err(e) = this.peers.call(&peer, "catch_up", ask).await {
                    tracing::warn!(peer = %peer.entry.id, error = %e, "could not ask for a catch-up");
                }
            });
        }
    }
}
