//! Hot content: objects whose read rate spikes get extra replicas, and reads spread over
//! them; when the rate falls again, the extra copies are dropped. What used to be done by
//! hand when traffic moved.
//!
//! Each gateway counts GETs per object in windows of [`HOT_WINDOW`]. An object read more
//! than `threshold` times per second in a window is promoted: every chunk gets
//! `extra` more copies on the next nodes of its candidate order, pinned there (so
//! rebalance leaves them alone) for [`PIN_TTL`], re-pinned while hot. Reads of a hot
//! chunk choose among owners and extras. After [`COOL_WINDOWS`] windows below a quarter
//! of the threshold the object is demoted and its extra copies deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kura_cluster::range::ByteSpan;
use kura_cluster::record::ObjectRecord;
use kura_cluster::ChunkId;
use serde::Serialize;

use crate::cluster::Cluster;

/// Length of a counting window.
pub const HOT_WINDOW: Duration = Duration::from_secs(5);

/// Windows below a quarter of the threshold before an object is demoted: a short lull
/// does not throw away copies that will be needed again a moment later.
pub const COOL_WINDOWS: u32 = 3;

/// How long an extra copy stays pinned without a refresh; refreshed every window while
/// hot, so a gateway that dies leaves copies that rebalance cleans up within a minute.
pub const PIN_TTL: Duration = Duration::from_secs(60);

/// Default promotion threshold in reads per second of one object, per gateway.
pub const DEFAULT_HOT_READS_PER_SEC: f64 = 50.0;

/// Default extra copies of a hot object's chunks.
pub const DEFAULT_HOT_EXTRA_REPLICAS: usize = 2;

/// Objects whose reads are counted at once (those read in the last few windows): beyond
/// it a new object is not counted until old counters expire, so a flood of distinct keys
/// costs bounded memory (~100 bytes each) and cannot push out the counters that matter.
pub const MAX_COUNTED_OBJECTS: usize = 100_000;

/// Chunks of a hot object that get extra copies: its first 1 GiB at 4 MiB chunks. Viewers
/// start at the start, and a hot 1 TB object must not be copied whole.
pub const HOT_MAX_CHUNKS: usize = 256;

/// Counters not touched for this many windows are dropped.
const COUNTER_WINDOWS_KEPT: u32 = 4;

#[derive(Default)]
struct Counter {
    window_start: Option<Instant>,
    count: u64,
    rate: f64,
}

struct HotObject {
    record: ObjectRecord,
    /// Extra copies placed: chunk → node ids.
    extras: HashMap<ChunkId, Vec<String>>,
    cool_windows: u32,
}

/// One hot object, for status output.
#[derive(Clone, Debug, Serialize)]
pub struct HotView {
    /// `bucket/key`.
    pub object: String,
    /// Reads per second in the last window.
    pub reads_per_sec: f64,
    /// Extra chunk copies placed.
    pub extra_copies: usize,
}

/// Read-rate tracking and hot-object state of one gateway.
pub struct HotTracker {
    threshold: f64,
    extra: usize,
    counters: Mutex<HashMap<String, Counter>>,
    hot: Mutex<HashMap<String, HotObject>>,
    /// Chunk → extra nodes holding it, for reads.
    extras: Mutex<HashMap<ChunkId, Vec<String>>>,
}

fn name(r: &ObjectRecord) -> String {
    format!("{}/{}", r.bucket, r.key)
}

impl HotTracker {
    /// A tracker promoting above `threshold` reads/s with `extra` more copies.
    pub fn new(threshold: f64, extra: usize) -> Self {
        Self {
            threshold,
            extra,
            counters: Mutex::default(),
            hot: Mutex::default(),
            extras: Mutex::default(),
        }
    }

    /// Nodes holding an extra copy of `id` (empty unless its object is hot).
    pub fn extras_of(&self, id: &ChunkId) -> Vec<String> {
        self.extras
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// Counts one read of `record`; promotes it (in the background) when it turns hot.
    pub fn record_read(
        &self,
        cluster: &Arc<Cluster>,
        tracker: &Arc<HotTracker>,
        record: &ObjectRecord,
    ) {
        if self.threshold <= 0.0 || self.extra == 0 || record.chunks.is_empty() {
            return;
        }
        let key = name(record);
        if !self.count(&key, Instant::now()) {
            return;
        }
        {
            let mut hot = self.hot.lock().unwrap_or_else(|e| e.into_inner());
            if hot.contains_key(&key) {
                return;
            }
            hot.insert(
                key.clone(),
                HotObject {
                    record: record.clone(),
                    extras: HashMap::new(),
                    cool_windows: 0,
                },
            );
        }
        cluster.metrics.hot_promotions.inc();
        tracing::info!(object = %key, "hot: adding extra replicas");
        let (cluster, tracker, record) = (cluster.clone(), tracker.clone(), record.clone());
        tokio::spawn(async move { tracker.promote(&cluster, &record).await });
    }

    /// Counts one read of `key` at `now`; whether the object is hot by its rate.
    fn count(&self, key: &str, now: Instant) -> bool {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        if !counters.contains_key(key) && counters.len() >= MAX_COUNTED_OBJECTS {
            return false;
        }
        let c = counters.entry(key.to_string()).or_default();
        let start = *c.window_start.get_or_insert(now);
        c.count += 1;
        let elapsed = now.duration_since(start);
        // Promote as soon as the current window's count alone passes the threshold,
        // so a spike is acted on within the window, not after it.
        let rate_now = c.count as f64 / HOT_WINDOW.as_secs_f64();
        if elapsed >= HOT_WINDOW {
            c.rate = c.count as f64 / elapsed.as_secs_f64();
            c.count = 0;
            c.window_start = Some(now);
        }
        rate_now.max(c.rate) >= self.threshold
    }

    /// Drops the counters of objects not read for [`COUNTER_WINDOWS_KEPT`] windows (a
    /// read after a window ends starts a new one, so an old window start means no read
    /// since); hot objects' counters stay.
    fn prune(&self, now: Instant) {
        // Lock order everywhere: counters, then hot.
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let hot = self.hot.lock().unwrap_or_else(|e| e.into_inner());
        counters.retain(|k, c| {
            hot.contains_key(k)
                || c.window_start
                    .is_some_and(|s| now.duration_since(s) < HOT_WINDOW * COUNTER_WINDOWS_KEPT)
        });
    }

    async fn promote(&self, cluster: &Arc<Cluster>, record: &ObjectRecord) {
        let until = kura_cluster::hlc::wall_ms() + PIN_TTL.as_millis() as u64;
        let mut placed: HashMap<ChunkId, Vec<String>> = HashMap::new();
        for c in record.chunks.iter().take(HOT_MAX_CHUNKS) {
            let targets = cluster.extra_targets(&c.id, self.extra);
            if targets.is_empty() {
                continue;
            }
            let whole = ByteSpan {
                start: 0,
                end: c.size,
            };
            let Ok(bytes) = cluster.get_chunk(c.id, c.size, whole).await else {
                continue;
            };
            for t in targets {
                if cluster.copy_to(&t, &c.id, bytes.clone(), until).await {
                    placed.entry(c.id).or_default().push(t);
                }
            }
        }
        let key = name(record);
        let copies: usize = placed.values().map(Vec::len).sum();
        {
            let mut extras = self.extras.lock().unwrap_or_else(|e| e.into_inner());
            for (id, nodes) in &placed {
                extras.insert(*id, nodes.clone());
            }
        }
        if let Some(h) = self
            .hot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&key)
        {
            h.extras = placed;
        }
        cluster.metrics.hot_extra_copies.inc_by(copies as i64);
        tracing::info!(object = %key, copies, "hot: extra replicas placed");
    }

    /// Every window: re-pins copies of objects still hot, demotes cooled ones.
    pub async fn maintain_forever(self: Arc<Self>, cluster: Arc<Cluster>) {
        let mut tick = tokio::time::interval(HOT_WINDOW);
        loop {
            tick.tick().await;
            self.maintain(&cluster).await;
        }
    }

    async fn maintain(&self, cluster: &Arc<Cluster>) {
        let now = Instant::now();
        let mut cooled = Vec::new();
        let mut keep = Vec::new();
        {
            let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
            let mut hot = self.hot.lock().unwrap_or_else(|e| e.into_inner());
            for (key, h) in hot.iter_mut() {
                let c = counters.entry(key.clone()).or_default();
                let elapsed = c.window_start.map_or(HOT_WINDOW, |s| now.duration_since(s));
                if elapsed >= HOT_WINDOW {
                    c.rate = c.count as f64 / elapsed.as_secs_f64();
                    c.count = 0;
                    c.window_start = Some(now);
                }
                if c.rate < self.threshold / 4.0 {
                    h.cool_windows += 1;
                } else {
                    h.cool_windows = 0;
                }
                if h.cool_windows >= COOL_WINDOWS {
                    cooled.push(key.clone());
                } else {
                    keep.push(h.extras.clone());
                }
            }
            for key in &cooled {
                if let Some(h) = hot.remove(key) {
                    let mut extras = self.extras.lock().unwrap_or_else(|e| e.into_inner());
                    for id in h.extras.keys() {
                        extras.remove(id);
                    }
                    drop(extras);
                    let cluster = cluster.clone();
                    let record_key = name(&h.record);
                    tokio::spawn(async move {
                        let mut dropped = 0i64;
                        for (id, nodes) in h.extras {
                            for n in nodes {
                                if cluster.drop_extra(&n, &id).await {
                                    dropped += 1;
                                }
                            }
                        }
                        cluster.metrics.hot_extra_copies.dec_by(dropped);
                        cluster.metrics.hot_demotions.inc();
                        tracing::info!(object = %record_key, dropped, "hot: cooled down, extra replicas dropped");
                    });
                }
            }
        }
        self.prune(now);
        let until = kura_cluster::hlc::wall_ms() + PIN_TTL.as_millis() as u64;
        for extras in keep {
            for (id, nodes) in extras {
                for n in nodes {
                    cluster.pin(&n, &id, until).await;
                }
            }
        }
        cluster
            .metrics
            .hot_objects
            .set(self.hot.lock().unwrap_or_else(|e| e.into_inner()).len() as i64);
    }

    /// Hot objects now.
    pub fn snapshot(&self) -> Vec<HotView> {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let hot = self.hot.lock().unwrap_or_else(|e| e.into_inner());
        hot.iter()
            .map(|(k, h)| HotView {
                object: k.clone(),
                reads_per_sec: counters.get(k).map_or(0.0, |c| c.rate),
                extra_copies: h.extras.values().map(Vec::len).sum(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_bounded_and_forgotten_when_reads_stop() {
        let t = HotTracker::new(1000.0, 1);
        let t0 = Instant::now();
        for i in 0..MAX_COUNTED_OBJECTS + 10 {
            assert!(!t.count(&format!("b/{i}"), t0));
        }
        let len = || t.counters.lock().unwrap().len();
        assert_eq!(len(), MAX_COUNTED_OBJECTS, "a flood of keys grew the map");
        // Objects read once, then never again, are forgotten...
        t.prune(t0 + HOT_WINDOW * COUNTER_WINDOWS_KEPT);
        assert_eq!(len(), 0);
        // ...while one read in every window is kept.
        let later = t0 + HOT_WINDOW * 10;
        t.count("b/busy", later);
        t.count("b/busy", later + HOT_WINDOW * 2);
        t.prune(later + HOT_WINDOW * 3);
        assert_eq!(len(), 1);
    }

    #[test]
    fn a_burst_above_the_threshold_is_hot_within_its_window() {
        let t = HotTracker::new(2.0, 1);
        let t0 = Instant::now();
        let reads = (2.0 * HOT_WINDOW.as_secs_f64()) as usize;
        let hot: Vec<bool> = (0..reads).map(|_| t.count("b/k", t0)).collect();
        assert!(!hot[reads - 2] && hot[reads - 1], "{hot:?}");
    }
}
