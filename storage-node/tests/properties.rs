//! Property tests of the chunk store and record table against simple in-memory models,
//! on a real RocksDB and real files.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kura_cluster::hlc::Timestamp;
use kura_cluster::range::ByteSpan;
use kura_cluster::record::{EncodedRecord, ObjectRecord};
use kura_cluster::ChunkId;
use kura_storage_node::chunks::{ChunkStore, PutOutcome};
use kura_storage_node::db::Db;
use kura_storage_node::records::RecordTable;
use proptest::prelude::*;

fn open_chunks(dir: &std::path::Path) -> ChunkStore {
    let db = Arc::new(Db::open(&dir.join("db")).unwrap());
    ChunkStore::open(dir, db).unwrap()
}

fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed))
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Put {
        seed: u8,
        len: usize,
    },
    Delete {
        seed: u8,
        len: usize,
    },
    Read {
        seed: u8,
        len: usize,
        a: f64,
        b: f64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    // Few distinct seeds, so puts, deletes and reads hit the same chunks.
    let len = prop_oneof![0usize..2000, 60_000usize..70_000, 130_000usize..400_000];
    prop_oneof![
        4 => (0u8..6, len.clone()).prop_map(|(seed, len)| Op::Put { seed, len }),
        2 => (0u8..6, len.clone()).prop_map(|(seed, len)| Op::Delete { seed, len }),
        4 => (0u8..6, len, 0.0f64..1.0, 0.0f64..1.0).prop_map(|(seed, len, a, b)| Op::Read { seed, len, a, b }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn chunk_store_matches_a_map(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open_chunks(dir.path());
        let mut model: HashMap<ChunkId, Vec<u8>> = HashMap::new();
        for op in ops {
            match op {
                Op::Put { seed, len } => {
                    let d = content(seed, len);
                    let id = ChunkId::of(&d);
                    let out = store.put(&id, &d).unwrap();
                    let expect = if model.contains_key(&id) { PutOutcome::Existed } else { PutOutcome::Created };
                    prop_assert_eq!(out, expect);
                    model.insert(id, d);
                }
                Op::Delete { seed, len } => {
                    let id = ChunkId::of(&content(seed, len));
                    prop_assert_eq!(store.delete(&id).unwrap(), model.remove(&id).is_some());
                }
                Op::Read { seed, len, a, b } => {
                    let d = content(seed, len);
                    let id = ChunkId::of(&d);
                    match (store.entry(&id).unwrap(), model.get(&id)) {
                        (None, None) => {}
                        (Some(entry), Some(want)) => {
                            prop_assert_eq!(entry.size, want.len() as u64);
                            if want.is_empty() {
                                prop_assert!(store.read(&id, &entry, None).unwrap().is_empty());
                                continue;
                            }
                            let (x, y) = ((a * len as f64) as u64, (b * len as f64) as u64);
                            let span = ByteSpan { start: x.min(y), end: (x.max(y) + 1).min(len as u64) };
                            let got = store.read(&id, &entry, Some(span)).unwrap();
                            prop_assert_eq!(&got[..], &want[span.start as usize..span.end as usize]);
                        }
                        (e, m) => prop_assert!(false, "store {:?} vs model {}", e.is_some(), m.is_some()),
                    }
                }
                Op::Reopen => {
                    drop(store);
                    store = open_chunks(dir.path());
                }
            }
            let (n, bytes, _) = store.usage();
            prop_assert_eq!(n, model.len() as u64);
            prop_assert_eq!(bytes, model.values().map(|v| v.len() as u64).sum::<u64>());
        }
        let listed: Vec<ChunkId> = store.list(None, 1000).unwrap().into_iter().map(|c| c.id).collect();
        let mut want: Vec<ChunkId> = model.keys().copied().collect();
        want.sort();
        prop_assert_eq!(listed, want);
    }

    #[test]
    fn records_converge_to_the_newest_whatever_the_order(
        writes in proptest::collection::vec((0usize..5, 0u64..50, any::<bool>()), 1..40),
        seed in any::<u64>(),
    ) {
        let keys = ["a", "b/c", "b/d", "e", "ü"];
        let recs: Vec<ObjectRecord> = writes
            .iter()
            .enumerate()
            .map(|(i, (k, ms, deleted))| {
                let ts = Timestamp { ms: *ms, logical: 0, origin: i as u64 };
                let mut r = ObjectRecord::tombstone("bkt", keys[*k], ts);
                r.deleted = *deleted;
                r.size = i as u64;
                r
            })
            .collect();
        // Two replicas receive the same writes in different orders.
        let mut shuffled = recs.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let t1 = RecordTable::new(Arc::new(Db::open(d1.path()).unwrap()));
        let t2 = RecordTable::new(Arc::new(Db::open(d2.path()).unwrap()));
        // Packed (what gateways write) on one table, JSON (older gateways') on another.
        let packed = |r: &ObjectRecord| EncodedRecord::pack(r).unwrap();
        let json = |r: &ObjectRecord| EncodedRecord::from_json(&serde_json::to_vec(r).unwrap()).unwrap();
        for r in &recs { t1.put(r.clone(), packed(r)).unwrap(); }
        for r in &shuffled { t2.put(r.clone(), json(r)).unwrap(); }
        // A third receives them in batches (one synced write each) of 1 to 8, where one
        // key may come several times: decided in order, as if offered one by one.
        let d3 = tempfile::tempdir().unwrap();
        let t3 = RecordTable::new(Arc::new(Db::open(d3.path()).unwrap()));
        let mut rest = &shuffled[..];
        while !rest.is_empty() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            let (batch, tail) = rest.split_at((1 + x % 8).min(rest.len() as u64) as usize);
            let outcomes = t3.put_many(batch.iter().map(|r| Ok((r.clone(), packed(r)))).collect()).unwrap();
            prop_assert_eq!(outcomes.len(), batch.len());
            rest = tail;
        }
        let mut newest: BTreeMap<&str, &ObjectRecord> = BTreeMap::new();
        for r in &recs {
            let e = newest.entry(r.key.as_str()).or_insert(r);
            if r.ts > e.ts { *e = r; }
        }
        for (k, want) in &newest {
            prop_assert_eq!(t1.get("bkt", k).unwrap(), Some((*want).clone()));
            prop_assert_eq!(t2.get("bkt", k).unwrap(), Some((*want).clone()));
            prop_assert_eq!(t3.get("bkt", k).unwrap(), Some((*want).clone()));
        }
        // Listing without tombstones, page by page, equals the live part of the model.
        let live: Vec<String> = newest.iter().filter(|(_, r)| !r.deleted).map(|(k, _)| k.to_string()).collect();
        let mut listed = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = t2.list("bkt", "", after.as_deref(), 2, false, false).unwrap();
            listed.extend(page.records.into_iter().map(|r| r.key));
            match page.next_after { Some(a) => after = Some(a), None => break }
        }
        prop_assert_eq!(listed, live);
    }
}

#[test]
fn a_dedup_reoffer_restarts_the_gc_grace_of_a_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_chunks(dir.path());
    let (a, b) = (content(1, 200_000), content(2, 300));
    let (ia, ib) = (ChunkId::of(&a), ChunkId::of(&b));
    store.put(&ia, &a).unwrap();
    store.put(&ib, &b).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let cutoff = kura_cluster::hlc::wall_ms();
    std::thread::sleep(std::time::Duration::from_millis(5));
    // An upload re-offers `a` (dedup): GC with a cutoff from before must spare it.
    assert_eq!(store.put(&ia, &a).unwrap(), PutOutcome::Existed);
    assert_eq!(store.delete_if_untouched(&ia, cutoff).unwrap(), None);
    assert_eq!(store.delete_if_untouched(&ib, cutoff).unwrap(), Some(300));
    assert!(store.entry(&ia).unwrap().is_some());
    assert!(store.entry(&ib).unwrap().is_none());
}
