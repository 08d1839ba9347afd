//! Metrics of the calls a process makes to its peers.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::{Error, Result};

/// Labels of a peer call sample.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The operation (`chunk_get`, `record_put`, ...): a fixed name, never an id.
    pub op: &'static str,
    /// `ok`, `unreachable`, `timeout`, `corrupt`, `truncated`, `bad_answer`, or the node's error
    /// code (`not_found`, `io_error`, ...).
    pub outcome: &'static str,
}

/// Labels of a peer call latency sample: per node, so a slow disk or link shows.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// The node's id (from the cluster map: as many as it has nodes).
    pub node: String,
    /// The operation.
    pub op: &'static str,
}

/// Peer call counts by outcome, latencies, and hedges.
#[derive(Clone)]
pub struct PeerMetrics {
    calls: Family<CallLabels, Counter>,
    seconds: Family<OpLabels, Histogram, fn() -> Histogram>,
    /// Extra calls made because the first ones were slow.
    pub hedges: Counter,
    /// Peers whose chunk files are read directly (see `super::local`).
    pub local_stores: Gauge,
}

/// 0.1 ms .. ~3.3 s in 16 doubling steps: a record read on loopback through a chunk
/// write on a loaded disk.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for PeerMetrics {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            seconds: Family::new_with_constructor(latency_histogram),
            hedges: Counter::default(),
            local_stores: Gauge::default(),
        }
    }
}

impl PeerMetrics {
    /// Registers the metrics in `r` (as `kura_peer_*`).
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "kura_peer_calls",
            "Calls to peer nodes, by operation and outcome",
            self.calls.clone(),
        );
        r.register(
            "kura_peer_call_seconds",
            "Time of calls to peer nodes, by node and operation",
            self.seconds.clone(),
        );
        r.register(
            "kura_peer_hedges",
            "Extra peer calls made because the first ones were slower than the hedge delay",
            self.hedges.clone(),
        );
        r.register(
            "kura_peer_local_stores",
            "Peers on this machine whose chunk files are read directly",
            self.local_stores.clone(),
        );
    }

    /// Counts one call of `op` that ended with `result` after `took`.
    pub(super) fn record<T>(
        &self,
        node: &str,
        op: &'static str,
        result: &Result<T>,
        took: Duration,
    ) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => outcome(e),
        };
        self.calls.get_or_create(&CallLabels { op, outcome }).inc();
        let labels = OpLabels {
            node: node.to_string(),
            op,
        };
        self.seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }
}

/// The outcome label of a failed call.
fn outcome(e: &Error) -> &'static str {
    match e {
        Error::Transport(_) => "unreachable",
        Error::Timeout { .. } => "timeout",
        Error::Corrupt(_) => "corrupt",
        Error::Truncated { .. } => "truncated",
        Error::Status { code: Some(c), .. } => c.name(),
        Error::Status { code: None, .. } => "bad_answer",
        Error::Shared(e) => outcome(e),
        Error::Backlogged { .. } => "backlogged",
        _ => "bad_answer",
    }
}
