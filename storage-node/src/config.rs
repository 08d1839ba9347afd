//! Node configuration, resolved from flags, `KURA_*` environment and a TOML file.

use std::net::SocketAddr;
use std::path::PathBuf;

use kura_cluster::auth::Secret;
use kura_cluster::server::{ServerLimits, ServerSettings};
use serde::Deserialize;

/// Default scrub rate. 32 MiB/s re-reads a full 4 TB disk about every 1.5 days while
/// taking ~2% of a SATA SSD's bandwidth from foreground traffic.
pub const DEFAULT_SCRUB_BYTES_PER_SEC: u64 = 32 * 1024 * 1024;

/// Default pause between scrub passes: one hour, so an idle small node does not spin.
pub const DEFAULT_SCRUB_INTERVAL_SECS: u64 = 3600;

/// Everything a storage node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Data directory (RocksDB, chunk files, quarantine).
    pub data: PathBuf,
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Stable node id.
    pub node_id: String,
    /// Failure domain.
    pub zone: String,
    /// Shared secret every internal call must present.
    pub cluster_secret: Secret,
    /// Scrub throttle in bytes per second; 0 disables the background scrubber.
    pub scrub_bytes_per_sec: u64,
    /// Pause between background scrub passes, in seconds.
    pub scrub_interval_secs: u64,
    /// Rebalance throttle in bytes per second of data sent (0: unthrottled).
    pub rebalance_bytes_per_sec: u64,
    /// Period of repair (anti-entropy) passes, in seconds.
    pub repair_interval_secs: u64,
    /// Period of garbage-collection passes, in seconds (0: never by itself).
    pub gc_interval_secs: u64,
    /// Chunks touched more recently than this are never collected, in seconds.
    pub gc_grace_secs: u64,
    /// Timeouts and connection limits of its HTTP server.
    pub server: ServerLimits,
}

/// The node section of a TOML config file: every key optional, unknown keys rejected.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFileConfig {
    /// See [`NodeConfig::data`].
    pub data: Option<PathBuf>,
    /// See [`NodeConfig::listen`].
    pub listen: Option<SocketAddr>,
    /// See [`NodeConfig::node_id`].
    pub node_id: Option<String>,
    /// See [`NodeConfig::zone`].
    pub zone: Option<String>,
    /// See [`NodeConfig::cluster_secret`].
    pub cluster_secret: Option<Secret>,
    /// See [`NodeConfig::scrub_bytes_per_sec`].
    pub scrub_bytes_per_sec: Option<u64>,
    /// See [`NodeConfig::scrub_interval_secs`].
    pub scrub_interval_secs: Option<u64>,
    /// See [`NodeConfig::rebalance_bytes_per_sec`].
    pub rebalance_bytes_per_sec: Option<u64>,
    /// See [`NodeConfig::repair_interval_secs`].
    pub repair_interval_secs: Option<u64>,
    /// See [`NodeConfig::gc_interval_secs`].
    pub gc_interval_secs: Option<u64>,
    /// See [`NodeConfig::gc_grace_secs`].
    pub gc_grace_secs: Option<u64>,
    /// The `[server]` table: timeouts and connection limits.
    pub server: Option<ServerSettings>,
}
