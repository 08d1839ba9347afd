//! Rebalance, repair and garbage collection between real nodes on loopback: adding a
//! node moves only the displaced copies (about 1/(K+1) of them) and only to the newcomer,
//! draining empties a node, declaring a node lost brings every item back to N copies, and
//! GC reclaims unreferenced chunks without ever taking one a live or in-flight object
//! needs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kura_cluster::client::{NodeClient, RecordName};
use kura_cluster::hlc::Clock;
use kura_cluster::map::{ClusterMap, NodeEntry, NodeState};
use kura_cluster::record::{EncodedRecord, ObjectRecord, STAMP_LEN};
use kura_cluster::ring::{record_key, Ring};
use kura_cluster::ChunkId;
use kura_storage_node::{start, NodeConfig, RunningNode};

const SECRET: &str = "rebalance-test-secret-0123456789";
const N: usize = 3;
/// GC grace in these tests: uploads here finish well within it.
const GRACE_SECS: u64 = 2;

struct Cluster {
    dir: tempfile::TempDir,
    nodes: Vec<(String, RunningNode, NodeClient)>,
}

async fn node(dir: &std::path::Path, id: &str) -> (String, RunningNode, NodeClient) {
    let running = start(NodeConfig {
        data: dir.join(id),
        listen: "127.0.0.1:0".parse().unwrap(),
        node_id: id.into(),
        zone: format!("zone-{id}"),
        cluster_secret: SECRET.into(),
        scrub_bytes_per_sec: 0,
        scrub_interval_secs: 3600,
        rebalance_bytes_per_sec: 0,
        repair_interval_secs: 3600,
        gc_interval_secs: 0,
        gc_grace_secs: GRACE_SECS,
        server: Default::default(),
    })
    .await
    .unwrap();
    let client = NodeClient::new(&running.url(), SECRET).unwrap();
    (id.to_string(), running, client)
}

impl Cluster {
    async fn new(ids: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for id in ids {
            nodes.push(node(dir.path(), id).await);
        }
        Self { dir, nodes }
    }

    fn map(&self, epoch: u64, states: &HashMap<&str, NodeState>) -> ClusterMap {
        ClusterMap {
            epoch,
            nodes: self
                .nodes
                .iter()
                .map(|(id, r, _)| NodeEntry {
                    id: id.clone(),
                    addr: r.addr().to_string(),
                    zone: format!("zone-{id}"),
                    weight: 500,
                    state: *states.get(id.as_str()).unwrap_or(&NodeState::Active),
                })
                .collect(),
            replicas: N,
        }
    }

    fn client(&self, id: &str) -> &NodeClient {
        &self.nodes.iter().find(|(n, _, _)| n == id).unwrap().2
    }

    async fn publish(&self, map: &ClusterMap) {
        let http = reqwest::Client::new();
        for (_, r, _) in &self.nodes {
            let resp = http
                .put(format!("{}/v1/cluster-map", r.url()))
                .bearer_auth(SECRET)
                .json(map)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success());
        }
    }

    /// Waits until every node finished a pass for `epoch`; returns bytes moved.
    async fn settle(&self, epoch: u64) -> u64 {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut done = true;
            let mut moved = 0;
            for (_, r, _) in &self.nodes {
                let p: serde_json::Value = http
                    .get(format!("{}/v1/rebalance", r.url()))
                    .bearer_auth(SECRET)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                done &=
                    p["done_epoch"].as_u64().unwrap() >= epoch && !p["running"].as_bool().unwrap();
                moved += p["moved_bytes"].as_u64().unwrap();
            }
            if done {
                return moved;
            }
            assert!(Instant::now() < deadline, "rebalance did not finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Which nodes hold `id`.
    async fn holders(&self, id: &ChunkId) -> Vec<String> {
        let mut out = Vec::new();
        for (n, _, c) in &self.nodes {
            if c.head_chunk(id).await.unwrap_or(None).is_some() {
                out.push(n.clone());
            }
        }
        out.sort();
        out
    }

    async fn stop(self) {
        for (_, r, _) in self.nodes {
            r.shutdown().await.unwrap();
        }
        drop(self.dir);
    }
}

fn owners(ring: &Ring, key: &[u8; 32]) -> Vec<String> {
    let mut v: Vec<String> = ring
        .placement(key, N)
        .0
        .iter()
        .map(|e| e.id.clone())
        .collect();
    v.sort();
    v
}

/// Writes `count` chunks and records where `map` places them.
async fn load(
    c: &Cluster,
    map: &ClusterMap,
    count: usize,
) -> (Vec<(ChunkId, u64)>, Vec<ObjectRecord>) {
    let ring = Ring::new(map);
    let clock = Clock::new(9);
    let mut chunks = Vec::new();
    let mut records = Vec::new();
    for i in 0..count {
        let data = Bytes::from(
            (0..70_000u32 + i as u32)
                .map(|j| (j as u64 * 31 + i as u64 * 7) as u8)
                .collect::<Vec<u8>>(),
        );
        let id = ChunkId::of(&data);
        for o in owners(&ring, id.as_bytes()) {
            c.client(&o).put_chunk(&id, data.clone()).await.unwrap();
        }
        chunks.push((id, data.len() as u64));
        let mut r = ObjectRecord::tombstone("media", &format!("k{i:04}"), clock.now());
        r.deleted = false;
        r.size = data.len() as u64;
        r.chunks = vec![kura_cluster::record::ChunkRef {
            id,
            size: data.len() as u64,
        }];
        // With a field no part of kura knows: a hand-off passes the record on as is.
        let stored = future(&r);
        for o in owners(&ring, &record_key("media", &r.key)) {
            let out = c
                .client(&o)
                .put_records(std::slice::from_ref(&stored))
                .await
                .unwrap();
            assert!(out[0].as_ref().unwrap().applied);
        }
        records.push(r);
    }
    (chunks, records)
}

/// `r` stamped, with a field this version does not know: packed (as gateways write)
/// for odd keys, JSON (as older gateways wrote) for even ones.
fn future(r: &ObjectRecord) -> Bytes {
    if r.key.ends_with(['1', '3', '5', '7', '9']) {
        let mut stored = EncodedRecord::pack(r).unwrap().stored().to_vec();
        assert_eq!(stored[STAMP_LEN] & 0xf0, 0x80, "a short map");
        stored[STAMP_LEN] += 1;
        rmp_serde::encode::write(&mut stored, "from_the_future").unwrap();
        rmp_serde::encode::write(&mut stored, "kept").unwrap();
        return stored.into();
    }
    let mut v = serde_json::to_value(r).unwrap();
    v["from_the_future"] = "kept".into();
    EncodedRecord::from_json(&serde_json::to_vec(&v).unwrap())
        .unwrap()
        .into_stored()
}

async fn assert_placed(
    c: &Cluster,
    map: &ClusterMap,
    chunks: &[(ChunkId, u64)],
    records: &[ObjectRecord],
) {
    let ring = Ring::new(map);
    for (id, _) in chunks {
        assert_eq!(
            c.holders(id).await,
            owners(&ring, id.as_bytes()),
            "chunk {id}"
        );
    }
    for r in records {
        let want = owners(&ring, &record_key(&r.bucket, &r.key));
        for (n, _, client) in &c.nodes {
            let name = RecordName::new(&r.bucket, &r.key);
            let held = client.get_records(&[name]).await.unwrap().remove(0);
            assert_eq!(held.is_some(), want.contains(n), "record {} on {n}", r.key);
            if let Some(held) = held.filter(|h| h.ts == r.ts) {
                assert_eq!(
                    held.stored(),
                    &future(r),
                    "record {} on {n}: other bytes",
                    r.key
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_node_moves_only_the_displaced_copies_to_it() {
    let mut c = Cluster::new(&["a", "b", "c"]).await;
    let m1 = c.map(1, &HashMap::new());
    c.publish(&m1).await;
    let (chunks, records) = load(&c, &m1, 120).await;
    c.settle(1).await;
    c.nodes.push(node(c.dir.path(), "d").await);
    let m2 = c.map(2, &HashMap::new());
    c.publish(&m2).await;
    let moved = c.settle(2).await;
    assert_placed(&c, &m2, &chunks, &records).await;
    let total: u64 = chunks.iter().map(|(_, s)| s).sum::<u64>() * N as u64;
    let ideal = total as f64 / 4.0;
    assert!(
        (moved as f64) <= 1.1 * ideal && (moved as f64) >= 0.5 * ideal,
        "moved {moved} bytes, ideal {ideal:.0}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_hands_everything_off() {
    let c = Cluster::new(&["a", "b", "c", "d"]).await;
    let m1 = c.map(1, &HashMap::new());
    c.publish(&m1).await;
    let (chunks, records) = load(&c, &m1, 80).await;
    let m2 = c.map(2, &HashMap::from([("d", NodeState::Draining)]));
    c.publish(&m2).await;
    c.settle(2).await;
    assert_placed(&c, &m2, &chunks, &records).await;
    assert_eq!(c.client("d").status().await.unwrap().chunks, 0, "drained");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_is_replaced_by_repair() {
    let mut c = Cluster::new(&["a", "b", "c", "d"]).await;
    let m1 = c.map(1, &HashMap::new());
    c.publish(&m1).await;
    let (chunks, records) = load(&c, &m1, 80).await;
    // "d" dies with its disk.
    let (_, dead, _) = c.nodes.pop().unwrap();
    dead.shutdown().await.unwrap();
    std::fs::remove_dir_all(c.dir.path().join("d")).unwrap();
    let mut m2 = c.map(2, &HashMap::new());
    m2.nodes.push(NodeEntry {
        id: "d".into(),
        addr: "127.0.0.1:1".into(),
        zone: "zone-d".into(),
        weight: 500,
        state: NodeState::Lost,
    });
    c.publish(&m2).await;
    c.settle(2).await;
    assert_placed(&c, &m2, &chunks, &records).await;
    c.stop().await;
}

async fn gc_all(c: &Cluster) -> u64 {
    let mut freed = 0;
    for (_, _, client) in &c.nodes {
        freed += client.run_gc().await.unwrap()["freed_bytes"]
            .as_u64()
            .unwrap();
    }
    freed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_reclaims_deleted_and_overwritten_objects_and_spares_live_and_in_flight_ones() {
    let c = Cluster::new(&["a", "b", "c"]).await;
    let m1 = c.map(1, &HashMap::new());
    c.publish(&m1).await;
    let ring = Ring::new(&m1);
    let (chunks, records) = load(&c, &m1, 30).await;
    // Objects 0..10 get deleted, 10..20 overwritten by a record without chunks, 20..30 live.
    let clock = Clock::new(77);
    for (i, r) in records.iter().enumerate().take(20) {
        let mut newer = if i < 10 {
            ObjectRecord::tombstone(&r.bucket, &r.key, clock.now())
        } else {
            let mut n = r.clone();
            n.ts = clock.now();
            n
        };
        newer.chunks.clear();
        for o in owners(&ring, &record_key(&r.bucket, &r.key)) {
            c.client(&o).put_record(&newer).await.unwrap();
        }
    }
    // Young garbage is spared...
    assert_eq!(gc_all(&c).await, 0);
    tokio::time::sleep(Duration::from_secs(GRACE_SECS + 1)).await;
    // ...old garbage is not; live chunks stay on all their owners.
    let freed = gc_all(&c).await;
    let garbage: u64 = chunks[..20].iter().map(|(_, s)| s).sum::<u64>() * N as u64;
    assert_eq!(freed, garbage);
    for (id, _) in &chunks[..20] {
        assert!(c.holders(id).await.is_empty(), "{id} not collected");
    }
    for (id, _) in &chunks[20..] {
        assert_eq!(
            c.holders(id).await,
            owners(&ring, id.as_bytes()),
            "{id} lost"
        );
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_that_reuse_old_unreferenced_chunks_during_gc_lose_nothing() {
    let c = Cluster::new(&["a", "b", "c"]).await;
    let m1 = c.map(1, &HashMap::new());
    c.publish(&m1).await;
    let ring = Ring::new(&m1);
    // Unreferenced chunks, older than the grace period: prime garbage.
    let (chunks, _) = load(&c, &m1, 24).await;
    for (_, _, client) in &c.nodes {
        for r in client.scan_records(None, 1000).await.unwrap().records {
            let tomb = ObjectRecord::tombstone(&r.bucket, &r.key, Clock::new(5).now());
            client.put_record(&tomb).await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_secs(GRACE_SECS + 1)).await;
    // Uploads re-offer those chunks (dedup) and reference them, while GC runs.
    let gc = {
        let clients: Vec<NodeClient> = c.nodes.iter().map(|n| n.2.clone()).collect();
        tokio::spawn(async move {
            for _ in 0..6 {
                for cl in &clients {
                    cl.run_gc().await.unwrap();
                }
            }
        })
    };
    let clock = Clock::new(11);
    let mut kept = Vec::new();
    for (i, (id, size)) in chunks.iter().enumerate().step_by(2) {
        let data = Bytes::from(
            (0..70_000u32 + i as u32)
                .map(|j| (j as u64 * 31 + i as u64 * 7) as u8)
                .collect::<Vec<u8>>(),
        );
        assert_eq!(ChunkId::of(&data), *id);
        for o in owners(&ring, id.as_bytes()) {
            c.client(&o).put_chunk(id, data.clone()).await.unwrap();
        }
        let mut r = ObjectRecord::tombstone("media", &format!("again{i}"), clock.now());
        r.deleted = false;
        r.size = *size;
        r.chunks = vec![kura_cluster::record::ChunkRef {
            id: *id,
            size: *size,
        }];
        for o in owners(&ring, &record_key("media", &r.key)) {
            c.client(&o).put_record(&r).await.unwrap();
        }
        kept.push(*id);
    }
    gc.await.unwrap();
    gc_all(&c).await;
    for id in &kept {
        assert_eq!(
            c.holders(id).await,
            owners(&ring, id.as_bytes()),
            "re-used chunk {id} lost"
        );
    }
    c.stop().await;
}
