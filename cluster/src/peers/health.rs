//! A peer's health and the hedging budget.
//!
//! Passive detection: a transport failure (refused, reset, timed out) marks the node down
//! for [`DOWN_FOR`]; while down it is tried last, so a dead node costs one timeout, not
//! one per request. Active detection: a prober asks every node's `/health` each
//! [`PROBE_INTERVAL`] and brings nodes back as soon as they answer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a node that failed at the transport level is tried last.
pub const DOWN_FOR: Duration = Duration::from_secs(10);

/// How often the prober checks every node.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Timeout of one health probe: a healthy node answers `/health` in microseconds.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// Chunk-fetch latencies remembered for the hedging budget.
const LATENCY_WINDOW: usize = 256;

/// Hedging budget bounds: never hedge sooner than 20 ms (a 4 MiB chunk over a LAN takes
/// a few ms; earlier hedges would double load for nothing) nor later than 1 s.
pub const HEDGE_MIN: Duration = Duration::from_millis(20);
/// Upper bound of the hedging budget.
pub const HEDGE_MAX: Duration = Duration::from_secs(1);

/// Health of one node as this gateway sees it.
#[derive(Debug, Default)]
pub struct Health {
    down_until: Mutex<Option<Instant>>,
    /// When (wall ms) the node was first seen failing since it was last seen back; taken
    /// by the prober when the node answers again ([`Health::take_return`]).
    down_since_ms: Mutex<Option<u64>>,
    inflight: AtomicUsize,
}

impl Health {
    /// Whether the node is believed up.
    pub fn is_up(&self) -> bool {
        let guard = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        guard.is_none_or(|t| Instant::now() >= t)
    }

    /// A transport failure: try this node last for a while.
    pub fn mark_down(&self) {
        let mut guard = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        *guard = Some(Instant::now() + DOWN_FOR);
        drop(guard);
        self.down_since_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(crate::hlc::wall_ms);
    }

    /// After the node answered a probe: if it had been failing, when it started to (so
    /// its peers can catch it up with what was written meanwhile); once per outage.
    pub fn take_return(&self) -> Option<u64> {
        self.down_since_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The node answered: it is up.
    pub fn mark_up(&self) {
        let mut guard = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        *guard = None;
    }

    /// Requests to it in flight from this gateway.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard drops.
    pub fn track(&self) -> InflightGuard<'_> {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(self)
    }
}

/// Decrements a node's in-flight count on drop.
pub struct InflightGuard<'a>(&'a Health);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Recent chunk-fetch latencies; the hedge delay is their 95th percentile.
#[derive(Debug, Default)]
pub struct HedgeBudget {
    window: Mutex<VecDeque<Duration>>,
}

impl HedgeBudget {
    /// Records one successful fetch.
    pub fn record(&self, d: Duration) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() == LATENCY_WINDOW {
            w.pop_front();
        }
        w.push_back(d);
    }

    /// How long to wait for the first replica before asking a second.
    pub fn delay(&self) -> Duration {
        let w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() < 16 {
            return HEDGE_MAX / 4;
        }
        let mut v: Vec<Duration> = w.iter().copied().collect();
        v.sort();
        let p95 = v[(v.len() * 95 / 100).min(v.len() - 1)];
        p95.clamp(HEDGE_MIN, HEDGE_MAX)
    }
}
