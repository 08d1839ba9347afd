//! The gateway's two read caches: soft state that only saves round trips to the nodes.
//!
//! - **Chunks** ([`ChunkCache`]): whole chunks, verified against their id when fetched.
//!   A chunk id is the blake3 of its bytes, so a cached chunk can never be stale: no
//!   invalidation exists or is needed. Bounded by bytes, with TinyLFU admission (moka):
//!   one sequential read of something larger than the cache does not flush what is hot.
//!   A ranged read caches nothing the first time; the second ranged read of the same
//!   chunk within [`SEEN_TTL`] fetches the whole chunk in the background, so a viewer
//!   seeking around one video warms it while one-off reads never pull 4 MiB for 64 KiB.
//! - **Records** ([`RecordCache`]): `bucket/key` → the newest record this gateway saw,
//!   for at most a short TTL. Records change, so this is a consistency trade-off, taken
//!   knowingly (ARCHITECTURE.md, "Gateway caches"): a write through *this* gateway
//!   updates its entry at once (read-your-writes holds per gateway), entries only ever
//!   move forward in timestamp, and a write through *another* gateway is seen here within
//!   the TTL. A TTL of 0 disables the cache (every read is a quorum read). Concurrent
//!   misses of one key share one quorum read ([`Flight`]), and a key read past
//!   [`DEFAULT_RECORD_REFRESH_AFTER`] of its entry's life is read again in the
//!   background ([`Hit::refresh`]): a key read all the time never expires, so its readers
//!   never all wait on one quorum read together.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kura_cluster::range::ByteSpan;
use kura_cluster::record::ObjectRecord;
use kura_cluster::ChunkId;
use moka::ops::compute::Op;
use moka::sync::Cache;
use tokio::sync::watch;

/// Default size of the chunk cache. 2 GiB: a gateway is a serving machine; this holds
/// the segments being watched of a few hundred concurrent streams (or one hot 2 GiB
/// file) and is small beside the RAM of any machine one would run a gateway on. It only
/// fills with what is read.
pub const DEFAULT_CHUNK_CACHE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Default lifetime of a cached record. 1 s: a player reading a video in ranges (or a
/// burst of segment requests) asks for the same record many times a second, so this
/// removes nearly every record read under load, while a change made through another
/// gateway is still visible within a second.
pub const DEFAULT_RECORD_CACHE_TTL: Duration = Duration::from_secs(1);

/// Share of an entry's TTL after which a hit starts reading the key again in the
/// background (the default refresh point is TTL / this). Half: the read has the other
/// half of the TTL to land before the entry would expire; with 500 connections reading
/// one object, the expiry of its entry every second made every one of them wait on one
/// quorum read (3.1 % of the requests took 12.8–102 ms in the handler, 1.2 % with
/// refreshes; BENCHMARKS.md, "Record refresh ahead of expiry"). A hot key costs two
/// quorum reads per TTL instead of one; a key read less often than this expires as
/// before.
pub const DEFAULT_RECORD_REFRESH_AFTER: u32 = 2;

/// Size of the record cache, in chunk references (a record weighs one plus its chunk
/// count; a chunk reference is ~40 bytes in memory): 4M, i.e. at most ~160 MiB. That
/// holds the records of ~8,000 files of 2 GB (~500 chunks each) or of millions of small
/// objects, while huge objects' records (a 5 TiB object lists 1.3M chunks) cannot grow
/// the cache without bound.
pub const RECORD_CACHE_WEIGHT: u64 = 4_000_000;

/// Bytes of inline content that weigh as much as one chunk reference in the record
/// cache, so a record holding a 64 KiB object weighs ~1,600 and the cache's memory bound
/// holds whatever mix of records it caches.
const CHUNK_REF_BYTES: usize = 40;

/// How long a chunk read in part is remembered: a second ranged read within this window
/// fetches the whole chunk into the cache. 60 s covers a viewer seeking inside a video.
pub const SEEN_TTL: Duration = Duration::from_secs(60);

/// Chunks read in part that are remembered (ids only: 32 bytes each).
const SEEN_ENTRIES: u64 = 100_000;

/// Verified whole chunks by id.
pub struct ChunkCache {
    chunks: Option<Cache<ChunkId, Bytes>>,
    seen: Cache<ChunkId, ()>,
}

impl ChunkCache {
    /// A cache of at most `bytes` bytes of chunks; 0 disables it.
    pub fn new(bytes: u64) -> Self {
        let chunks = (bytes > 0).then(|| {
            Cache::builder()
                .max_capacity(bytes)
                .weigher(|_, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
                .build()
        });
        Self {
            chunks,
            seen: Cache::builder()
                .max_capacity(SEEN_ENTRIES)
                .time_to_live(SEEN_TTL)
                .build(),
        }
    }

    /// `span` of chunk `id`, if the chunk is cached.
    pub fn get(&self, id: &ChunkId, span: ByteSpan) -> Option<Bytes> {
        let chunk = self.chunks.as_ref()?.get(id)?;
        let (start, end) = (
            usize::try_from(span.start).ok()?,
            usize::try_from(span.end).ok()?,
        );
        (start <= end && end <= chunk.len()).then(|| chunk.slice(start..end))
    }

    /// Whether the cache is on (a size above 0).
    pub fn enabled(&self) -> bool {
        self.chunks.is_some()
    }

    /// Whether chunk `id` is cached.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.chunks.as_ref().is_some_and(|c| c.contains_key(id))
    }

    /// Caches a whole chunk. The caller has verified `bytes` against `id`.
    pub fn insert(&self, id: ChunkId, bytes: Bytes) {
        if let Some(c) = &self.chunks {
            c.insert(id, bytes);
        }
    }

    /// Notes a ranged read of `id` that missed; true when it is the second within
    /// [`SEEN_TTL`], i.e. the whole chunk is worth fetching into the cache.
    pub fn partial_miss(&self, id: &ChunkId) -> bool {
        if self.chunks.is_none() {
            return false;
        }
        if self.seen.contains_key(id) {
            self.seen.invalidate(id);
            return true;
        }
        self.seen.insert(*id, ());
        false
    }

    /// Bytes cached now (after applying the writes moka keeps pending).
    pub fn weighted_size(&self) -> u64 {
        self.chunks.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.weighted_size()
        })
    }
}

/// What the record cache holds for a key: the newest record seen, or `None` for "no
/// such object". Shared, not copied, with every request that reads it (a 1 GiB
/// object's record lists 256 chunks).
pub type CachedRecord = Option<Arc<ObjectRecord>>;

/// A record cache entry: what was found, when, and whether a hit has asked to read it
/// again (once per entry).
struct Entry {
    found: CachedRecord,
    at: Instant,
    refreshing: AtomicBool,
}

/// The record cache's key of `bucket/key`: unambiguous, as a bucket name has no `/`
/// ([`kura_cluster::names::check_bucket`]).
fn name(bucket: &str, key: &str) -> String {
    let mut name = String::with_capacity(bucket.len() + 1 + key.len());
    with_parts(&mut name, bucket, key);
    name
}

fn with_parts(name: &mut String, bucket: &str, key: &str) {
    name.clear();
    name.push_str(bucket);
    name.push('/');
    name.push_str(key);
}

/// `f` of [`name`]`(bucket, key)`, built in a buffer of this thread's that is reused.
fn with_name<R>(bucket: &str, key: &str, f: impl FnOnce(&str) -> R) -> R {
    thread_local!(static NAME: std::cell::RefCell<String> = const {
        std::cell::RefCell::new(String::new())
    });
    NAME.with_borrow_mut(|buf| {
        with_parts(buf, bucket, key);
        f(buf)
    })
}

/// What a hit of the record cache gives.
pub struct Hit {
    /// The cached answer.
    pub found: CachedRecord,
    /// This hit is the first past the entry's refresh point: its caller reads the key
    /// again in the background (the answer renews the entry).
    pub refresh: bool,
}

/// `bucket/key` → the newest record (or its absence) seen recently.
pub struct RecordCache {
    /// By [`name`]: one string, so a hit looks up a borrowed `str` built in a reused
    /// buffer ([`with_name`]) instead of allocating a key per request.
    records: Option<Cache<String, Arc<Entry>>>,
    /// Age of an entry after which a hit asks for a refresh.
    refresh_after: Duration,
    /// Quorum reads in flight, by key (see [`Flight`]).
    flights: Mutex<HashMap<String, Landing>>,
}

/// Where the answer of a record read in flight arrives: `None` until it does.
pub type Landing = watch::Receiver<Option<CachedRecord>>;

/// A cache miss's part in the quorum read of its key. When an entry expires, every
/// request in flight for that key misses at once: without sharing, 500 connections
/// reading one video made 500 quorum reads each second, and those requests waited
/// behind them (p99 12× nginx's; BENCHMARKS.md, "Cached ranges").
pub enum Flight<'a> {
    /// Another request is reading the key: wait for its answer ([`Flight::landed`]).
    Join(Landing),
    /// This request reads the key, and [`Lead::publish`]es what it found.
    Lead(Lead<'a>),
}

/// The request that reads a key for everyone who misses it meanwhile. Dropped (done,
/// failed or cancelled), it ends the flight: later misses read again.
pub struct Lead<'a> {
    cache: &'a RecordCache,
    key: String,
    answer: watch::Sender<Option<CachedRecord>>,
}

impl Lead<'_> {
    /// Hands `found` to the requests that joined.
    pub fn publish(&self, found: &CachedRecord) {
        self.answer.send_replace(Some(found.clone()));
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut flights = self.cache.flights.lock().unwrap_or_else(|e| e.into_inner());
        flights.remove(&self.key);
    }
}

impl Flight<'_> {
    /// What the leader of a joined flight found; `None` when it failed or was
    /// cancelled (the caller reads for itself).
    pub async fn landed(mut landing: Landing) -> Option<CachedRecord> {
        let answer = landing.wait_for(Option::is_some).await.ok()?;
        answer.clone()
    }
}

impl RecordCache {
    /// A cache whose entries live `ttl` (zero disables it), refreshed by hits after
    /// `refresh_after` (`None`: the default share of `ttl`).
    pub fn new(ttl: Duration, refresh_after: Option<Duration>) -> Self {
        let records = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(RECORD_CACHE_WEIGHT)
                .weigher(|_, e: &Arc<Entry>| {
                    let units = e.found.as_ref().map_or(0, |r| {
                        let inline = r.inline.as_ref().map_or(0, |b| b.len() / CHUNK_REF_BYTES);
                        r.chunks.len() + inline
                    });
                    u32::try_from(units.saturating_add(1)).unwrap_or(u32::MAX)
                })
                .time_to_live(ttl)
                .build()
        });
        Self {
            records,
            refresh_after: refresh_after.unwrap_or(ttl / DEFAULT_RECORD_REFRESH_AFTER),
            flights: Mutex::default(),
        }
    }

    /// Whether the cache is on (a TTL above zero).
    pub fn enabled(&self) -> bool {
        self.records.is_some()
    }

    /// Joins the quorum read of `bucket/key` in flight, or leads one.
    pub fn flight(&self, bucket: &str, key: &str) -> Flight<'_> {
        let key = name(bucket, key);
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(landing) = flights.get(&key) {
            return Flight::Join(landing.clone());
        }
        let (answer, landing) = watch::channel(None);
        flights.insert(key.clone(), landing);
        Flight::Lead(Lead {
            cache: self,
            key,
            answer,
        })
    }

    /// The cached answer for `bucket/key` (`found: None` is a cached "no such
    /// object"), and whether this hit is the one to refresh it.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Hit> {
        let records = self.records.as_ref()?;
        let entry = with_name(bucket, key, |name| records.get(name))?;
        let refresh = entry.at.elapsed() >= self.refresh_after
            && !entry.refreshing.swap(true, Ordering::Relaxed);
        Some(Hit {
            found: entry.found.clone(),
            refresh,
        })
    }

    /// Remembers what a read or write found for `bucket/key`. Never moves an entry back
    /// in time: a quorum read that started before a write through this gateway and
    /// finishes after it cannot replace the newer record with the older one. The same
    /// version found again renews the entry (a refresh).
    pub fn offer(&self, bucket: &str, key: &str, offered: &CachedRecord) {
        let Some(c) = &self.records else { return };
        c.entry(name(bucket, key)).and_compute_with(|old| {
            let keep = old.is_some_and(|e| {
                let (old, new) = (e.value().found.as_deref(), offered.as_deref());
                match (old, new) {
                    (Some(o), Some(n)) => o.ts > n.ts,
                    (Some(_), None) => true,
                    (None, _) => false,
                }
            });
            if keep {
                Op::Nop
            } else {
                Op::Put(Arc::new(Entry {
                    found: offered.clone(),
                    at: Instant::now(),
                    refreshing: AtomicBool::new(false),
                }))
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_cluster::hlc::Clock;

    fn rec(clock: &Clock, etag: &str) -> ObjectRecord {
        let mut r = ObjectRecord::tombstone("b", "k", clock.now());
        r.deleted = false;
        r.etag = etag.to_string();
        r
    }

    #[test]
    fn records_only_move_forward() {
        let clock = Clock::new(1);
        let c = RecordCache::new(Duration::from_secs(60), None);
        assert!(c.get("b", "k").is_none());
        let older = Some(Arc::new(rec(&clock, "old")));
        let newer = Some(Arc::new(rec(&clock, "new")));
        c.offer("b", "k", &newer);
        // A slow read that saw the older record (or none) changes nothing.
        c.offer("b", "k", &older);
        c.offer("b", "k", &None);
        let got = c.get("b", "k").and_then(|h| h.found);
        assert_eq!(got.map(|r| r.etag.clone()), Some("new".to_string()));
        // A cached absence is replaced by any record.
        c.offer("b", "x", &None);
        assert!(c.get("b", "x").is_some_and(|h| h.found.is_none()));
        c.offer("b", "x", &older);
        assert!(c.get("b", "x").is_some_and(|h| h.found.is_some()));
    }

    #[test]
    fn keys_that_join_alike_stay_apart() {
        let clock = Clock::new(1);
        let c = RecordCache::new(Duration::from_secs(60), None);
        let (a, b) = (
            Some(Arc::new(rec(&clock, "a"))),
            Some(Arc::new(rec(&clock, "b"))),
        );
        c.offer("media", "x/y", &a);
        c.offer("media", "x", &b);
        // Each lookup rebuilds the name in the same buffer: a longer one before a
        // shorter one leaves nothing behind.
        for _ in 0..2 {
            for (key, etag) in [("x/y", "a"), ("x", "b")] {
                let got = c.get("media", key).and_then(|h| h.found);
                assert_eq!(got.map(|r| r.etag.clone()).as_deref(), Some(etag), "{key}");
            }
            assert!(c.get("media", "x/").is_none());
            assert!(c.get("medi", "a/x").is_none());
        }
    }

    #[test]
    fn one_hit_past_the_refresh_point_refreshes_and_the_answer_renews_the_entry() {
        let clock = Clock::new(1);
        let v1 = Some(Arc::new(rec(&clock, "v1")));
        // Not yet due: no hit refreshes.
        let later = RecordCache::new(Duration::from_secs(60), None);
        later.offer("b", "k", &v1);
        assert!(!later.get("b", "k").expect("cached").refresh);
        // Due at once: the first hit refreshes, the next ones do not ask again.
        let c = RecordCache::new(Duration::from_secs(60), Some(Duration::ZERO));
        c.offer("b", "k", &v1);
        let first = c.get("b", "k").expect("cached");
        assert!(first.refresh);
        assert_eq!(first.found.expect("a record").etag, "v1");
        assert!(!c.get("b", "k").expect("cached").refresh);
        // The same version read again renews the entry: due again, once.
        c.offer("b", "k", &v1);
        assert!(c.get("b", "k").expect("cached").refresh);
        assert!(!c.get("b", "k").expect("cached").refresh);
        // A newer version replaces it; an older one changes nothing.
        let v2 = Some(Arc::new(rec(&clock, "v2")));
        c.offer("b", "k", &v2);
        c.offer("b", "k", &v1);
        let hit = c.get("b", "k").expect("cached");
        assert!(hit.refresh);
        assert_eq!(hit.found.expect("a record").etag, "v2");
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_read() {
        let c = RecordCache::new(Duration::from_secs(60), None);
        let Flight::Lead(lead) = c.flight("b", "k") else {
            panic!("the first miss leads")
        };
        let Flight::Join(landing) = c.flight("b", "k") else {
            panic!("a second miss joins")
        };
        assert!(
            matches!(c.flight("b", "other"), Flight::Lead(_)),
            "keys fly apart"
        );
        let waiting = tokio::spawn(Flight::landed(landing));
        let found = Some(Arc::new(rec(&Clock::new(1), "e")));
        lead.publish(&found);
        let got = waiting.await.unwrap().expect("an answer").unwrap();
        assert_eq!(got.etag, "e");
        drop(lead);
        assert!(
            matches!(c.flight("b", "k"), Flight::Lead(_)),
            "a flight ends with its leader"
        );
    }

    #[tokio::test]
    async fn a_leader_that_gives_up_lets_joiners_read_for_themselves() {
        let c = RecordCache::new(Duration::from_secs(60), None);
        let lead = c.flight("b", "k");
        let Flight::Join(landing) = c.flight("b", "k") else {
            panic!("a second miss joins")
        };
        let waiting = tokio::spawn(Flight::landed(landing));
        drop(lead);
        assert!(waiting.await.unwrap().is_none());
    }

    #[test]
    fn zero_ttl_disables_records() {
        let c = RecordCache::new(Duration::ZERO, None);
        c.offer("b", "k", &Some(Arc::new(rec(&Clock::new(1), "e"))));
        assert!(c.get("b", "k").is_none());
    }

    #[test]
    fn chunks_serve_slices_and_need_two_partial_misses() {
        let c = ChunkCache::new(1 << 20);
        let data = Bytes::from(vec![7u8; 1000]);
        let id = ChunkId::of(&data);
        let span = |a, b| ByteSpan { start: a, end: b };
        assert!(c.get(&id, span(0, 10)).is_none());
        assert!(!c.partial_miss(&id));
        assert!(c.partial_miss(&id));
        c.insert(id, data.clone());
        assert_eq!(c.get(&id, span(10, 20)).map(|b| b.len()), Some(10));
        assert!(c.get(&id, span(10, 2000)).is_none());
        let off = ChunkCache::new(0);
        off.insert(id, data);
        assert!(off.get(&id, span(0, 1)).is_none());
        assert!(!off.partial_miss(&id));
    }
}
