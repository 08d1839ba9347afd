//! An in-process stack for gateway tests: real storage nodes, a real coordinator and a
//! real gateway on loopback ports.
#![allow(dead_code)]

use kura_cluster::map::{ClusterMap, NodeEntry, NodeState};
use kura_cluster::ring::Replication;
use kura_gateway::{GatewayConfig, RunningGateway};
use kura_storage_node::{NodeConfig, RunningNode};
use kura_transcoder::coordinator::{CoordinatorConfig, RunningCoordinator};

pub const KEY: &str = "viewer-test-api-key";
pub const SECRET: &str = "streaming-test-secret-0123456789";
pub const ADMIN: &str = "admin-test-token";
pub const S3_ACCESS_KEY: &str = "KURATESTACCESSKEY";
pub const S3_SECRET_KEY: &str = "kura-test-s3-secret-key-0123456789";

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<RunningNode>,
    pub gateway: RunningGateway,
    pub coordinator: RunningCoordinator,
    /// The gateway's config (for starting more gateways on the same nodes).
    pub config: GatewayConfig,
}

/// What a test may change.
pub struct Options {
    pub nodes: usize,
    pub hot_reads_per_sec: f64,
    pub chunk_cache_bytes: u64,
    pub record_cache_ttl: std::time::Duration,
    /// When a hit refreshes a record cache entry (`None`: half its TTL).
    pub record_refresh_after: Option<std::time::Duration>,
    pub server: kura_cluster::server::ServerLimits,
    pub gc_grace_secs: u64,
    pub multipart_expiry: std::time::Duration,
    pub chunk_size: u64,
    /// The gateway's zone (nodes `n{i}` are in zone `z{i}`): that node is read first.
    pub zone: Option<String>,
    /// Whether the gateway reads the (co-located) nodes' chunk files directly.
    pub local_reads: bool,
    /// How long the gateway keeps a chunk file open after a local read.
    pub open_file_keep: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: 3,
            hot_reads_per_sec: kura_gateway::hot::DEFAULT_HOT_READS_PER_SEC,
            chunk_cache_bytes: kura_gateway::cache::DEFAULT_CHUNK_CACHE_BYTES,
            record_cache_ttl: kura_gateway::cache::DEFAULT_RECORD_CACHE_TTL,
            record_refresh_after: None,
            server: Default::default(),
            gc_grace_secs: kura_storage_node::gc::DEFAULT_GC_GRACE_SECS,
            multipart_expiry: kura_gateway::multipart::DEFAULT_EXPIRY,
            chunk_size: 64 * 1024,
            zone: None,
            local_reads: true,
            open_file_keep: kura_gateway::cluster::OPEN_FILE_KEEP,
        }
    }
}

pub async fn stack() -> Stack {
    stack_with(Options::default()).await
}

pub async fn stack_with(o: Options) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    let mut entries = Vec::new();
    for i in 0..o.nodes {
        let n = kura_storage_node::start(NodeConfig {
            data: dir.path().join(format!("n{i}")),
            listen: "127.0.0.1:0".parse().unwrap(),
            node_id: format!("n{i}"),
            zone: format!("z{i}"),
            cluster_secret: SECRET.into(),
            scrub_bytes_per_sec: 0,
            scrub_interval_secs: 3600,
            rebalance_bytes_per_sec: 0,
            repair_interval_secs: 3600,
            gc_interval_secs: 0,
            gc_grace_secs: o.gc_grace_secs,
            server: Default::default(),
        })
        .await
        .unwrap();
        entries.push(NodeEntry {
            id: format!("n{i}"),
            addr: n.addr().to_string(),
            zone: format!("z{i}"),
            weight: 100,
            state: NodeState::Active,
        });
        nodes.push(n);
    }
    let coordinator = kura_transcoder::coordinator::start(CoordinatorConfig {
        store: kura_transcoder::coordinator::JobStore::Embedded(dir.path().join("coord")),
        listen: "127.0.0.1:0".parse().unwrap(),
        api_keys: vec![KEY.into()],
        cluster_secret: SECRET.into(),
        gateway: None,
        gateway_api_key: None,
        lease_ms: kura_transcoder::coordinator::store::LEASE_MS,
        webhook_secret: None,
        webhook_allow: Vec::new(),
        job_retention: kura_transcoder::coordinator::DEFAULT_JOB_RETENTION,
        server: Default::default(),
    })
    .await
    .unwrap();
    let config = GatewayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        api_keys: vec![KEY.into()],
        cluster_secret: SECRET.into(),
        map: ClusterMap {
            epoch: 1,
            nodes: entries,
            ..Default::default()
        },
        replication: Replication::default(),
        chunk_size: o.chunk_size,
        max_object_bytes: 1 << 30,
        zone: o.zone,
        coordinator: Some(coordinator.url()),
        url_signing_keys: Vec::new(),
        cors_origins: vec!["https://player.example".into()],
        admin_token: Some(ADMIN.into()),
        hot_reads_per_sec: o.hot_reads_per_sec,
        hot_extra_replicas: kura_gateway::hot::DEFAULT_HOT_EXTRA_REPLICAS,
        max_header_bytes: kura_gateway::http::MAX_HEADER_BYTES,
        chunk_cache_bytes: o.chunk_cache_bytes,
        record_cache_ttl: o.record_cache_ttl,
        record_refresh_after: o.record_refresh_after,
        server: o.server,
        s3_listen: Some("127.0.0.1:0".parse().unwrap()),
        s3_keys: vec![kura_gateway::s3::S3Key {
            access_key: S3_ACCESS_KEY.into(),
            secret_key: S3_SECRET_KEY.into(),
        }],
        multipart_expiry: o.multipart_expiry,
        s3_domain: None,
        console: true,
        local_reads: o.local_reads,
        open_file_keep: o.open_file_keep,
    };
    let gateway = kura_gateway::start(config.clone()).await.unwrap();
    Stack {
        dir,
        nodes,
        gateway,
        coordinator,
        config,
    }
}

impl Stack {
    /// Another gateway on the same nodes, with its own caches.
    pub async fn another_gateway(&self, record_cache_ttl: std::time::Duration) -> RunningGateway {
        let mut config = self.config.clone();
        config.record_cache_ttl = record_cache_ttl;
        kura_gateway::start(config).await.unwrap()
    }

    pub async fn stop(self) {
        self.gateway.shutdown().await.unwrap();
        self.coordinator.shutdown().await.unwrap();
        for n in self.nodes {
            n.shutdown().await.unwrap();
        }
    }
}

/// `PUT /v1/o/{path}` with the test key; asserts 201.
pub async fn put(base: &str, path: &str, body: impl Into<Vec<u8>>) {
    let r = reqwest::Client::new()
        .put(format!("{base}/v1/o/{path}"))
        .bearer_auth(KEY)
        .body(body.into())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED, "{path}");
}

/// A GET of `path` (`bucket/key`) with an optional `Range`: status and body.
pub async fn get(base: &str, path: &str, range: Option<&str>) -> (reqwest::StatusCode, Vec<u8>) {
    let mut req = reqwest::Client::new()
        .get(format!("{base}/v1/o/{path}"))
        .bearer_auth(KEY);
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.bytes().await.unwrap().to_vec())
}

/// The value of a counter or gauge on `base`'s `/metrics` (panics if it is not there,
/// so a misspelt name cannot pass as zero).
pub async fn metric(base: &str, name: &str) -> f64 {
    metric_sample(base, name)
        .await
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// The value of a counter or gauge on `base`'s `/metrics`, if it has a sample (a
/// labelled counter has none until first counted).
pub async fn metric_sample(base: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Pseudo-random bytes (xorshift), so no two chunks are equal (equal chunks would be
/// stored and cached once) and a wrong slice never matches by accident.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// XORs 0xff into the byte at `offset` of `path`.
pub fn flip_byte(path: &std::path::Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], offset).unwrap();
    f.sync_all().unwrap();
}
