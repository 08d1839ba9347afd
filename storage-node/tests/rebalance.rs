//! Rebalance and repair between real nodes on loopback: adding a node moves only the
//! displaced copies (about 1/(K+1) of them) and only to the newcomer, draining empties a
//! node, and declaring a node lost brings every item back to N copies.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kura_cluster::client::NodeClient;
use kura_cluster::hlc::Clock;
use kura_cluster::map::{ClusterMap, NodeEntry, NodeState};
use kura_cluster::record::ObjectRecord;
use kura_cluster::ring::{record_key, Ring};
use kura_cluster::ChunkId;
use kura_storage_node::{start, NodeConfig, RunningNode};

const SECRET: &str = "rebalance-test-secret-0123456789";
const N: usize = 3;

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
        for o in owners(&ring, &record_key("media", &r.key)) {
            c.client(&o).put_record(&r).await.unwrap();
        }
        records.push(r);
    }
    (chunks, records)
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
            let has = client
                .get_record(&r.bucket, &r.key)
                .await
                .unwrap()
                .is_some();
            assert_eq!(has, want.contains(n), "record {} on {n}", r.key);
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
