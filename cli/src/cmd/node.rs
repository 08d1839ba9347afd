//! `kura node`: run a storage node.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::server_args::ServerArgs;
use kura_cluster::auth::Secret;
use kura_cluster::config::load_toml;
use kura_storage_node::config::{
    NodeFileConfig, DEFAULT_SCRUB_BYTES_PER_SEC, DEFAULT_SCRUB_INTERVAL_SECS,
};
use kura_storage_node::rebalance::{DEFAULT_REBALANCE_BYTES_PER_SEC, DEFAULT_REPAIR_INTERVAL_SECS};
use kura_storage_node::NodeConfig;

/// Default node listen address.
pub const DEFAULT_NODE_LISTEN: &str = "127.0.0.1:7001";

/// Flags of `kura node`. Each also reads `KURA_<NAME>` and the TOML key `<name>`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// TOML config file (keys as the flags, in snake_case).
    #[arg(long, env = "KURA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory.
    #[arg(long, env = "KURA_DATA")]
    pub data: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:7001].
    #[arg(long, env = "KURA_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Stable node id.
    #[arg(long, env = "KURA_NODE_ID")]
    pub node_id: Option<String>,
    /// Failure domain (rack / room / data centre) [default: default].
    #[arg(long, env = "KURA_ZONE")]
    pub zone: Option<String>,
    /// Shared cluster secret (at least 16 characters).
    #[arg(long, env = "KURA_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<Secret>,
    /// Background scrub rate in bytes/s; 0 disables it [default: 32 MiB/s].
    #[arg(long, env = "KURA_SCRUB_BYTES_PER_SEC")]
    pub scrub_bytes_per_sec: Option<u64>,
    /// Pause between scrub passes in seconds [default: 3600].
    #[arg(long, env = "KURA_SCRUB_INTERVAL_SECS")]
    pub scrub_interval_secs: Option<u64>,
    /// Rebalance throttle in bytes/s sent; 0 = unthrottled [default: 64 MiB/s].
    #[arg(long, env = "KURA_REBALANCE_BYTES_PER_SEC")]
    pub rebalance_bytes_per_sec: Option<u64>,
    /// Period of repair passes in seconds [default: 3600].
    #[arg(long, env = "KURA_REPAIR_INTERVAL_SECS")]
    pub repair_interval_secs: Option<u64>,
    /// Period of garbage-collection passes in seconds; 0 = only on request [default: 3600].
    #[arg(long, env = "KURA_GC_INTERVAL_SECS")]
    pub gc_interval_secs: Option<u64>,
    /// Chunks touched more recently are never collected, in seconds [default: 86400].
    #[arg(long, env = "KURA_GC_GRACE_SECS")]
    pub gc_grace_secs: Option<u64>,
    #[command(flatten)]
    pub server: ServerArgs,
}

impl NodeArgs {
    /// Flags and environment over the config file over defaults.
    pub fn resolve(self) -> anyhow::Result<NodeConfig> {
        let file: NodeFileConfig = load_toml(self.config.as_deref())?;
        Ok(NodeConfig {
            data: self
                .data
                .or(file.data)
                .context("--data (KURA_DATA, `data`) is required")?,
            listen: match self.listen.or(file.listen) {
                Some(a) => a,
                None => DEFAULT_NODE_LISTEN.parse()?,
            },
            node_id: self
                .node_id
                .or(file.node_id)
                .context("--node-id (KURA_NODE_ID, `node_id`) is required")?,
            zone: self
                .zone
                .or(file.zone)
                .unwrap_or_else(|| "default".to_string()),
            cluster_secret: self
                .cluster_secret
                .or(file.cluster_secret)
                .context("--cluster-secret (KURA_CLUSTER_SECRET, `cluster_secret`) is required")?,
            scrub_bytes_per_sec: self
                .scrub_bytes_per_sec
                .or(file.scrub_bytes_per_sec)
                .unwrap_or(DEFAULT_SCRUB_BYTES_PER_SEC),
            scrub_interval_secs: self
                .scrub_interval_secs
                .or(file.scrub_interval_secs)
                .unwrap_or(DEFAULT_SCRUB_INTERVAL_SECS),
            rebalance_bytes_per_sec: self
                .rebalance_bytes_per_sec
                .or(file.rebalance_bytes_per_sec)
                .unwrap_or(DEFAULT_REBALANCE_BYTES_PER_SEC),
            repair_interval_secs: self
                .repair_interval_secs
                .or(file.repair_interval_secs)
                .unwrap_or(DEFAULT_REPAIR_INTERVAL_SECS),
            gc_interval_secs: self
                .gc_interval_secs
                .or(file.gc_interval_secs)
                .unwrap_or(kura_storage_node::gc::DEFAULT_GC_INTERVAL_SECS),
            gc_grace_secs: self
                .gc_grace_secs
                .or(file.gc_grace_secs)
                .unwrap_or(kura_storage_node::gc::DEFAULT_GC_GRACE_SECS),
            server: self.server.resolve(file.server)?,
        })
    }
}

/// Runs the node until Ctrl-C / SIGTERM.
pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    kura_storage_node::serve(config, super::shutdown_signal()).await?;
    Ok(())
}
