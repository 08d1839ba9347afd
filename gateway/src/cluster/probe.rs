//! The health prober, and the catch-up it asks for when a node comes back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kura_cluster::client::CATCH_UP_MARGIN;

use super::{Cluster, NodeHandle};
use crate::health::{PROBE_INTERVAL, PROBE_TIMEOUT};

/// How long an ended outage still widens the catch-ups asked for later (see
/// [`Cluster::ask_catch_up`]): as long as nodes retry a catch-up's deferred items.
pub const RECENT_OUTAGES: Duration = Duration::from_secs(600);

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
                async move {
                    let url = format!("{}/health", node.client.base());
                    match http.get(url).send().await {
                        Ok(r) if r.status().is_success() => {
                            node.health.mark_up();
                            node.health.take_return().map(|since| (node, since))
                        }
                        _ => {
                            node.health.mark_down();
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
                self.ask_catch_up(&node, since);
            }
        }
    }

    /// `node` answers again after failing since `since_ms`: asks every node that is up
    /// to catch the cluster up with what it stored since then (see the storage node's
    /// `catchup` module; a restarted node also asks by itself, this covers a node that
    /// was only cut off). The time asked for goes back to the start of every outage that
    /// ended within [`RECENT_OUTAGES`], so a node that was itself away when an earlier
    /// outage ended (and so was never asked) does its share now. In the background; a
    /// node that misses the call is left to the repair pass.
    fn ask_catch_up(&self, node: &NodeHandle, since_ms: u64) {
        let since_ms = {
            let mut outages = self.outages.lock().unwrap_or_else(|e| e.into_inner());
            outages.retain(|(_, ended)| ended.elapsed() < RECENT_OUTAGES);
            outages.push((since_ms, Instant::now()));
            outages.iter().map(|(t, _)| *t).min().unwrap_or(since_ms)
        };
        let since_ms = since_ms.saturating_sub(CATCH_UP_MARGIN.as_millis() as u64);
        tracing::info!(node = %node.entry.id, since_ms, "node is back; asking every node to catch up");
        for peer in self.all_nodes() {
            if !peer.health.is_up() {
                continue;
            }
            tokio::spawn(async move {
                if let Err(e) = peer.client.catch_up(since_ms).await {
                    tracing::warn!(peer = %peer.entry.id, error = %e, "could not ask for a catch-up");
                }
            });
        }
    }
}
