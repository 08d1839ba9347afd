//! `kura gateway`: run the public gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use kura_cluster::auth::Secret;
use kura_cluster::config::load_toml;
use kura_cluster::map::{ClusterMap, NodeEntry, NodeState};
use kura_cluster::ring::{Replication, DEFAULT_WEIGHT};
use kura_cluster::server::ServerSettings;
use kura_cluster::signed::{SigningKey, SigningKeys};
use kura_gateway::config::{DEFAULT_CHUNK_SIZE, DEFAULT_MAX_OBJECT_BYTES};
use kura_gateway::s3::S3Key;
use kura_gateway::GatewayConfig;
use serde::Deserialize;

use super::server_args::ServerArgs;

/// Default gateway listen address.
pub const DEFAULT_GATEWAY_LISTEN: &str = "127.0.0.1:8080";

/// Flags of `kura gateway`. Each also reads `KURA_<NAME>` and the TOML key `<name>`.
#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// TOML config file (keys as the flags, in snake_case; `[[nodes]]` tables).
    #[arg(long, env = "KURA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "KURA_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Comma-separated API keys clients present as `Authorization: Bearer <key>`.
    #[arg(
        long,
        env = "KURA_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<Secret>,
    /// Shared cluster secret (the nodes' `cluster_secret`).
    #[arg(long, env = "KURA_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<Secret>,
    /// Comma-separated storage nodes: `id=host:port@zone` or `id=host:port@zone*weight`.
    #[arg(long, env = "KURA_NODES", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Copies of every chunk and record (N) [default: 3].
    #[arg(long, env = "KURA_REPLICAS")]
    pub replicas: Option<usize>,
    /// Copies durable before a write is acknowledged (W) [default: 2].
    #[arg(long, env = "KURA_WRITE_QUORUM")]
    pub write_quorum: Option<usize>,
    /// Record replicas consulted on a read (R) [default: 2].
    #[arg(long, env = "KURA_READ_QUORUM")]
    pub read_quorum: Option<usize>,
    /// Chunk size in bytes [default: 4 MiB].
    #[arg(long, env = "KURA_CHUNK_SIZE")]
    pub chunk_size: Option<u64>,
    /// Largest object in bytes [default: 5 TiB].
    #[arg(long, env = "KURA_MAX_OBJECT_BYTES")]
    pub max_object_bytes: Option<u64>,
    /// This gateway's zone; replicas there are preferred for reads.
    #[arg(long, env = "KURA_ZONE")]
    pub zone: Option<String>,
    /// Coordinator URL, or several comma-separated (coordinators sharing a PostgreSQL
    /// store; the next is used when one stops answering): enables `/v1/jobs` and
    /// `PUT ...?transcode=PROFILE`.
    #[arg(long, env = "KURA_COORDINATOR")]
    pub coordinator: Option<String>,
    /// Comma-separated signing keys of signed URLs and upload tokens, `ID:SECRET`
    /// (secrets ≥ 32 characters): the first signs, all are accepted; rotate by putting
    /// a new key first, retire (revoke) one by removing it [default: one key derived
    /// from the cluster secret].
    #[arg(
        long,
        env = "KURA_URL_SIGNING_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub url_signing_keys: Vec<String>,
    /// Comma-separated origins allowed by CORS (`*` for any) [default: none].
    #[arg(long, env = "KURA_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Token for the admin API (`/v1/admin/*`, `kura admin`); without it the admin API is off.
    #[arg(long, env = "KURA_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// Reads per second of one object that make it hot (extra replicas); 0 disables [default: 50].
    #[arg(long, env = "KURA_HOT_READS_PER_SEC")]
    pub hot_reads_per_sec: Option<f64>,
    /// Extra copies of a hot object's chunks [default: 2].
    #[arg(long, env = "KURA_HOT_EXTRA_REPLICAS")]
    pub hot_extra_replicas: Option<usize>,
    /// Largest total size of a request's headers in bytes [default: 16384].
    #[arg(long, env = "KURA_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Memory for verified chunks read through this gateway, MiB; 0 disables [default: 2048].
    #[arg(long, env = "KURA_CHUNK_CACHE_MIB")]
    pub chunk_cache_mib: Option<u64>,
    /// How long a record read may be answered from memory, ms (a write through another
    /// gateway is seen here within it); 0: every read asks the replicas [default: 1000].
    #[arg(long, env = "KURA_RECORD_CACHE_MS")]
    pub record_cache_ms: Option<u64>,
    /// Address of the S3 API listener (path-style `http://addr/bucket/key`); without it
    /// the gateway speaks no S3.
    #[arg(long, env = "KURA_S3_LISTEN")]
    pub s3_listen: Option<SocketAddr>,
    /// Comma-separated S3 key pairs `ACCESS_KEY:SECRET_KEY` (secrets ≥ 16 characters).
    #[arg(
        long,
        env = "KURA_S3_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub s3_keys: Vec<String>,
    /// Incomplete multipart uploads older than this many seconds are aborted and their
    /// space reclaimed [default: 604800, 7 days].
    #[arg(long, env = "KURA_MULTIPART_EXPIRY_SECS")]
    pub multipart_expiry_secs: Option<u64>,
    /// Base domain of virtual-hosted-style S3 buckets: `photos.DOMAIN` is bucket `photos`
    /// (point `*.DOMAIN` at the gateway in DNS) [default: path-style only].
    #[arg(long, env = "KURA_S3_DOMAIN")]
    pub s3_domain: Option<String>,
    /// Do not serve the web console at `/console`.
    #[arg(long, env = "KURA_NO_CONSOLE")]
    pub no_console: bool,
    /// Always read chunks over the network, even from nodes on this machine (by default
    /// their chunk files are read directly, every block still verified).
    #[arg(long, env = "KURA_NO_LOCAL_READS")]
    pub no_local_reads: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Shortest S3 secret key accepted (AWS issues 40 characters).
pub const MIN_S3_SECRET_LEN: usize = 16;

/// Parses `ACCESS_KEY:SECRET_KEY` pairs.
fn parse_s3_keys(pairs: Vec<String>) -> anyhow::Result<Vec<S3Key>> {
    pairs
        .into_iter()
        .map(|p| {
            let Some((access, secret)) = p.split_once(':') else {
                bail!("--s3-keys takes ACCESS_KEY:SECRET_KEY pairs (got one without ':')");
            };
            if access.is_empty() || secret.len() < MIN_S3_SECRET_LEN {
                bail!(
                    "--s3-keys: access key {access:?} needs a name and a secret of at least \
                     {MIN_S3_SECRET_LEN} characters"
                );
            }
            Ok(S3Key {
                access_key: access.to_string(),
                secret_key: secret.into(),
            })
        })
        .collect()
}

/// Parses `ID:SECRET` signing keys.
fn parse_signing_keys(pairs: Vec<String>) -> anyhow::Result<Vec<SigningKey>> {
    let keys = pairs
        .iter()
        .map(|p| {
            let (id, secret) = p
                .split_once(':')
                .context("--url-signing-keys takes ID:SECRET pairs (got one without ':')")?;
            SigningKey::new(id, secret).context("--url-signing-keys")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !keys.is_empty() {
        SigningKeys::new(keys.clone()).context("--url-signing-keys")?;
    }
    Ok(keys)
}

/// A node as written in a TOML file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileNode {
    id: String,
    addr: String,
    #[serde(default = "default_zone")]
    zone: String,
    #[serde(default = "default_weight")]
    weight: u32,
}

fn default_zone() -> String {
    "default".into()
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

/// The gateway's TOML file: every key optional, unknown keys rejected.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFileConfig {
    listen: Option<SocketAddr>,
    api_keys: Option<Vec<Secret>>,
    cluster_secret: Option<Secret>,
    nodes: Option<Vec<FileNode>>,
    replicas: Option<usize>,
    write_quorum: Option<usize>,
    read_quorum: Option<usize>,
    chunk_size: Option<u64>,
    max_object_bytes: Option<u64>,
    zone: Option<String>,
    coordinator: Option<String>,
    url_signing_keys: Option<Vec<String>>,
    cors_origins: Option<Vec<String>>,
    admin_token: Option<Secret>,
    hot_reads_per_sec: Option<f64>,
    hot_extra_replicas: Option<usize>,
    max_header_bytes: Option<usize>,
    chunk_cache_mib: Option<u64>,
    record_cache_ms: Option<u64>,
    s3_listen: Option<SocketAddr>,
    s3_keys: Option<Vec<String>>,
    multipart_expiry_secs: Option<u64>,
    s3_domain: Option<String>,
    console: Option<bool>,
    local_reads: Option<bool>,
    server: Option<ServerSettings>,
}

/// Parses `id=host:port@zone[*weight]`.
pub fn parse_node(spec: &str) -> anyhow::Result<NodeEntry> {
    let bad = || format!("bad node {spec:?}: expected id=host:port@zone[*weight]");
    let (id, rest) = spec.split_once('=').with_context(bad)?;
    let (addr, zone_weight) = rest.split_once('@').with_context(bad)?;
    let (zone, weight) = match zone_weight.split_once('*') {
        Some((z, w)) => (z, w.parse::<u32>().with_context(bad)?),
        None => (zone_weight, DEFAULT_WEIGHT),
    };
    if id.is_empty() || addr.is_empty() || zone.is_empty() {
        bail!(bad());
    }
    Ok(NodeEntry {
        id: id.to_string(),
        addr: addr.to_string(),
        zone: zone.to_string(),
        weight,
        state: NodeState::Active,
    })
}

impl GatewayArgs {
    /// Flags and environment over the config file over defaults.
    pub fn resolve(self) -> anyhow::Result<GatewayConfig> {
        let file: GatewayFileConfig = load_toml(self.config.as_deref())?;
        let nodes: Vec<NodeEntry> = if !self.nodes.is_empty() {
            self.nodes
                .iter()
                .map(|s| parse_node(s))
                .collect::<anyhow::Result<_>>()?
        } else {
            file.nodes
                .unwrap_or_default()
                .into_iter()
                .map(|n| NodeEntry {
                    id: n.id,
                    addr: n.addr,
                    zone: n.zone,
                    weight: n.weight,
                    state: NodeState::Active,
                })
                .collect()
        };
        if nodes.is_empty() {
            bail!("--nodes (KURA_NODES, `[[nodes]]`) is required");
        }
        let api_keys = if self.api_keys.is_empty() {
            file.api_keys.unwrap_or_default()
        } else {
            self.api_keys
        };
        let defaults = Replication::default();
        Ok(GatewayConfig {
            listen: match self.listen.or(file.listen) {
                Some(a) => a,
                None => DEFAULT_GATEWAY_LISTEN.parse()?,
            },
            api_keys,
            cluster_secret: self
                .cluster_secret
                .or(file.cluster_secret)
                .context("--cluster-secret (KURA_CLUSTER_SECRET, `cluster_secret`) is required")?,
            map: ClusterMap {
                epoch: 1,
                nodes,
                replicas: self.replicas.or(file.replicas).unwrap_or(defaults.n),
            },
            replication: Replication {
                n: self.replicas.or(file.replicas).unwrap_or(defaults.n),
                w: self
                    .write_quorum
                    .or(file.write_quorum)
                    .unwrap_or(defaults.w),
                r: self.read_quorum.or(file.read_quorum).unwrap_or(defaults.r),
            },
            chunk_size: self
                .chunk_size
                .or(file.chunk_size)
                .unwrap_or(DEFAULT_CHUNK_SIZE),
            max_object_bytes: self
                .max_object_bytes
                .or(file.max_object_bytes)
                .unwrap_or(DEFAULT_MAX_OBJECT_BYTES),
            zone: self.zone.or(file.zone),
            coordinator: self.coordinator.or(file.coordinator),
            url_signing_keys: parse_signing_keys(if self.url_signing_keys.is_empty() {
                file.url_signing_keys.unwrap_or_default()
            } else {
                self.url_signing_keys
            })?,
            cors_origins: if self.cors_origins.is_empty() {
                file.cors_origins.unwrap_or_default()
            } else {
                self.cors_origins
            },
            admin_token: self.admin_token.or(file.admin_token),
            hot_reads_per_sec: self
                .hot_reads_per_sec
                .or(file.hot_reads_per_sec)
                .unwrap_or(kura_gateway::hot::DEFAULT_HOT_READS_PER_SEC),
            hot_extra_replicas: self
                .hot_extra_replicas
                .or(file.hot_extra_replicas)
                .unwrap_or(kura_gateway::hot::DEFAULT_HOT_EXTRA_REPLICAS),
            max_header_bytes: self
                .max_header_bytes
                .or(file.max_header_bytes)
                .unwrap_or(kura_gateway::http::MAX_HEADER_BYTES),
            chunk_cache_bytes: match self.chunk_cache_mib.or(file.chunk_cache_mib) {
                Some(mib) => mib
                    .checked_mul(1024 * 1024)
                    .context("--chunk-cache-mib is too large")?,
                None => kura_gateway::cache::DEFAULT_CHUNK_CACHE_BYTES,
            },
            record_cache_ttl: self.record_cache_ms.or(file.record_cache_ms).map_or(
                kura_gateway::cache::DEFAULT_RECORD_CACHE_TTL,
                Duration::from_millis,
            ),
            record_refresh_after: None,
            server: self.server.resolve(file.server)?,
            s3_listen: self.s3_listen.or(file.s3_listen),
            s3_domain: self.s3_domain.or(file.s3_domain),
            console: !self.no_console && file.console.unwrap_or(true),
            local_reads: !self.no_local_reads && file.local_reads.unwrap_or(true),
            open_file_keep: kura_gateway::cluster::OPEN_FILE_KEEP,
            multipart_expiry: self
                .multipart_expiry_secs
                .or(file.multipart_expiry_secs)
                .map_or(kura_gateway::multipart::DEFAULT_EXPIRY, Duration::from_secs),
            s3_keys: parse_s3_keys(if self.s3_keys.is_empty() {
                file.s3_keys.unwrap_or_default()
            } else {
                self.s3_keys
            })?,
        })
    }
}

/// Runs the gateway until Ctrl-C / SIGTERM.
pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    kura_gateway::serve(config, super::shutdown_signal()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_specs() {
        let n = parse_node("n1=127.0.0.1:7001@zone-a*500").unwrap();
        assert_eq!(
            (n.id.as_str(), n.addr.as_str(), n.zone.as_str(), n.weight),
            ("n1", "127.0.0.1:7001", "zone-a", 500)
        );
        assert_eq!(parse_node("n2=h:1@z").unwrap().weight, DEFAULT_WEIGHT);
        for bad in ["", "n1", "n1=h:1", "=h:1@z", "n1=h:1@", "n1=h:1@z*x"] {
            assert!(parse_node(bad).is_err(), "{bad}");
        }
    }
}
