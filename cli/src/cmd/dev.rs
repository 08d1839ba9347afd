//! `kura dev`: a whole cluster in one process, for a laptop: three storage nodes in three
//! zones and a gateway. Data, the API key and the cluster secret live under `--data` and
//! survive restarts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use kura_cluster::auth::generate_secret;
use kura_cluster::map::{ClusterMap, NodeEntry, NodeState};
use kura_cluster::ring::{Replication, DEFAULT_WEIGHT};
use kura_gateway::config::{DEFAULT_CHUNK_SIZE, DEFAULT_MAX_OBJECT_BYTES};
use kura_gateway::GatewayConfig;
use kura_storage_node::config::{DEFAULT_SCRUB_BYTES_PER_SEC, DEFAULT_SCRUB_INTERVAL_SECS};
use kura_storage_node::NodeConfig;

/// The dev cluster's nodes: (id, zone).
const DEV_NODES: [(&str, &str); 3] = [
    ("node-a", "zone-a"),
    ("node-b", "zone-b"),
    ("node-c", "zone-c"),
];

/// Flags of `kura dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Data directory; kept across restarts.
    #[arg(long, env = "KURA_DATA", default_value = "./kura-data")]
    pub data: PathBuf,
    /// Gateway listen address.
    #[arg(long, env = "KURA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// API key; generated and saved under the data directory if not given.
    #[arg(long, env = "KURA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// Reads `data/name`, or writes `given` (or a fresh secret) there.
fn persisted_secret(data: &Path, name: &str, given: Option<String>) -> anyhow::Result<String> {
    let path = data.join(name);
    if let Some(s) = given {
        std::fs::write(&path, &s).with_context(|| format!("writing {}", path.display()))?;
        return Ok(s);
    }
    if let Ok(s) = std::fs::read_to_string(&path) {
        return Ok(s.trim().to_string());
    }
    let s = generate_secret();
    std::fs::write(&path, &s).with_context(|| format!("writing {}", path.display()))?;
    Ok(s)
}

/// Runs the dev cluster until Ctrl-C / SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating {}", args.data.display()))?;
    let api_key = persisted_secret(&args.data, "api-key", args.api_key)?;
    let secret = persisted_secret(&args.data, "cluster-secret", None)?;
    let mut nodes = Vec::new();
    let mut entries = Vec::new();
    for (id, zone) in DEV_NODES {
        let running = kura_storage_node::start(NodeConfig {
            data: args.data.join(id),
            listen: "127.0.0.1:0".parse()?,
            node_id: id.into(),
            zone: zone.into(),
            cluster_secret: secret.clone(),
            scrub_bytes_per_sec: DEFAULT_SCRUB_BYTES_PER_SEC,
            scrub_interval_secs: DEFAULT_SCRUB_INTERVAL_SECS,
        })
        .await
        .with_context(|| format!("starting {id}"))?;
        entries.push(NodeEntry {
            id: id.into(),
            addr: running.addr().to_string(),
            zone: zone.into(),
            weight: DEFAULT_WEIGHT,
            state: NodeState::Active,
        });
        nodes.push(running);
    }
    let gateway = kura_gateway::start(GatewayConfig {
        listen: args.listen,
        api_keys: vec![api_key.clone()],
        cluster_secret: secret,
        map: ClusterMap {
            epoch: 1,
            nodes: entries,
        },
        replication: Replication::default(),
        chunk_size: DEFAULT_CHUNK_SIZE,
        max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
        zone: None,
        coordinator: None,
        url_signing_key: None,
        cors_origins: vec!["*".into()],
    })
    .await
    .context("starting the gateway")?;
    let url = gateway.url();
    println!(
        "kura dev: gateway at {url}, 3 storage nodes, data in {}",
        args.data.display()
    );
    println!("  export KURA_GATEWAY={url} KURA_API_KEY={api_key}");
    println!("  kura put ./video.mp4 media/video.mp4 && kura get media/video.mp4 --range 0-99");
    println!(
        "  curl -T ./video.mp4 -H 'Authorization: Bearer {api_key}' {url}/v1/o/media/video.mp4"
    );
    super::shutdown_signal().await;
    gateway.shutdown().await?;
    for n in nodes {
        n.shutdown().await?;
    }
    Ok(())
}
