//! What the node's API tests share: one node on a loopback port, in a temp dir.

use std::path::PathBuf;

use kura_cluster::client::NodeClient;
use kura_storage_node::{start, NodeConfig, RunningNode};

pub const SECRET: &str = "test-secret-0123456789abcdef";

pub fn config(dir: PathBuf) -> NodeConfig {
    NodeConfig {
        data: dir,
        listen: "127.0.0.1:0".parse().unwrap(),
        node_id: "n1".into(),
        zone: "z1".into(),
        cluster_secret: SECRET.into(),
        scrub_bytes_per_sec: 0,
        scrub_interval_secs: 3600,
        rebalance_bytes_per_sec: kura_storage_node::rebalance::DEFAULT_REBALANCE_BYTES_PER_SEC,
        repair_interval_secs: kura_storage_node::rebalance::DEFAULT_REPAIR_INTERVAL_SECS,
        gc_interval_secs: 0,
        gc_grace_secs: kura_storage_node::gc::DEFAULT_GC_GRACE_SECS,
        server: Default::default(),
    }
}

#[allow(dead_code)] // not every test file starts its node this way
pub async fn node() -> (tempfile::TempDir, RunningNode, NodeClient) {
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path().to_path_buf())).await.unwrap();
    let client = NodeClient::new(&running.url(), SECRET).unwrap();
    (dir, running, client)
}
