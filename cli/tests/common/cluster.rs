//! Storage nodes (`kura node` arguments, a started node and its cluster-secret client)
//! and [`Cluster`]: three nodes in three zones with a `kura gateway` in front of them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use kura_cluster::client::NodeClient;
use kura_cluster::map::{ClusterMap, NodeEntry, NodeState};
use kura_cluster::ring::DEFAULT_WEIGHT;
use nix::sys::signal::Signal;
use reqwest::StatusCode;

use super::{stop_all, GatewayClient, KuraProcess, API_KEY, SECRET};

/// Arguments of `kura node` (without `--listen`, which [`KuraProcess`] adds): the given
/// data directory and node id, zone `z1`, [`SECRET`], background scrub off.
pub fn node_args(data: &Path, node_id: &str) -> Vec<OsString> {
    node_args_in_zone(data, node_id, "z1")
}

/// [`node_args`] with the given zone.
pub fn node_args_in_zone(data: &Path, node_id: &str, zone: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["node", "--data"].map(OsString::from).into();
    args.push(data.as_os_str().to_owned());
    for a in [
        "--node-id",
        node_id,
        "--zone",
        zone,
        "--cluster-secret",
        SECRET,
        "--scrub-bytes-per-sec",
        "0",
    ] {
        args.push(a.into());
    }
    args
}

/// Starts `kura node` on `data` (see [`node_args`]).
pub async fn start_node(data: &Path, node_id: &str) -> Result<KuraProcess> {
    KuraProcess::start(node_id, node_args(data, node_id)).await
}

/// A client for a node started by this harness (valid until its next restart).
pub fn node_client(node: &KuraProcess) -> Result<NodeClient> {
    Ok(NodeClient::new(&node.url(), SECRET)?)
}

/// The zones of a [`Cluster`]'s nodes, one node each.
pub const ZONES: [&str; 3] = ["z1", "z2", "z3"];

/// Three `kura node` processes (`n1`..`n3` in zones `z1`..`z3`, data directories in one
/// temporary directory, scrub off) and a `kura gateway` whose map lists them by address.
/// A node restarted with [`Cluster::restart_node`] keeps its port, as the gateway's map
/// is fixed.
pub struct Cluster {
    /// The nodes, `nodes[i]` is `n{i+1}` in `ZONES[i]`.
    pub nodes: Vec<KuraProcess>,
    /// The gateway.
    pub gateway: KuraProcess,
    data: tempfile::TempDir,
}

impl Cluster {
    /// Starts the nodes, then the gateway with `--nodes n1=ADDR@z1,...`, [`API_KEY`] and
    /// [`SECRET`].
    pub async fn start() -> Result<Self> {
        Self::start_with_gateway_args(&[]).await
    }

    /// [`start`](Self::start), with `extra` appended to the gateway's arguments (e.g.
    /// `["--coordinator", URL]`).
    pub async fn start_with_gateway_args(extra: &[&str]) -> Result<Self> {
        let data = tempfile::Builder::new().prefix("kura-cluster-").tempdir()?;
        let nodes = futures::future::try_join_all(ZONES.iter().enumerate().map(|(i, zone)| {
            let id = Self::node_id(i);
            let dir = data.path().join(&id);
            async move { KuraProcess::start(&id, node_args_in_zone(&dir, &id, zone)).await }
        }))
        .await?;
        let spec = nodes
            .iter()
            .zip(ZONES)
            .map(|(n, zone)| format!("{}={}@{zone}", n.name(), n.addr()))
            .collect::<Vec<_>>()
            .join(",");
        let mut gateway_args = vec![
            "gateway",
            "--nodes",
            &spec,
            "--api-keys",
            API_KEY,
            "--cluster-secret",
            SECRET,
        ];
        gateway_args.extend_from_slice(extra);
        let gateway = KuraProcess::start("gateway", gateway_args).await?;
        Ok(Self {
            nodes,
            gateway,
            data,
        })
    }

    /// Id of node `i` (`n1`, `n2`, `n3`).
    pub fn node_id(i: usize) -> String {
        format!("n{}", i + 1)
    }

    /// Data directory of node `i`.
    pub fn node_data(&self, i: usize) -> PathBuf {
        self.data.path().join(Self::node_id(i))
    }

    /// Path of chunk `id_hex` in node `i`'s data directory, if it is stored as a file
    /// (chunks over 64 KiB): `DATA/chunks/<first 2 hex>/<id hex>`.
    pub fn chunk_file(&self, i: usize, id_hex: &str) -> PathBuf {
        self.node_data(i)
            .join("chunks")
            .join(&id_hex[..2])
            .join(id_hex)
    }

    /// The cluster map the gateway was started with (for computing placement).
    pub fn map(&self) -> ClusterMap {
        ClusterMap {
            epoch: 1,
            nodes: self
                .nodes
                .iter()
                .zip(ZONES)
                .map(|(n, zone)| NodeEntry {
                    id: n.name().to_string(),
                    addr: n.addr().to_string(),
                    zone: zone.to_string(),
                    weight: DEFAULT_WEIGHT,
                    state: NodeState::Active,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Index of the node with id `id`.
    pub fn node_index(&self, id: &str) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name() == id)
            .with_context(|| format!("no node {id}"))
    }

    /// A client for the gateway.
    pub fn client(&self) -> Result<GatewayClient> {
        GatewayClient::new(self.gateway.addr())
    }

    /// A cluster-secret client for node `i`.
    pub fn node_client(&self, i: usize) -> Result<NodeClient> {
        node_client(&self.nodes[i])
    }

    /// SIGKILLs node `i` and checks that our signal is what ended it.
    pub async fn kill_node(&mut self, i: usize) -> Result<()> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.nodes[i].kill().await?;
        ensure!(
            status.signal() == Some(Signal::SIGKILL as i32),
            "{} was ended by {status}, not by our SIGKILL",
            Self::node_id(i)
        );
        Ok(())
    }

    /// Restarts node `i` on its old port (same data directory).
    pub async fn restart_node(&mut self, i: usize) -> Result<()> {
        self.nodes[i].restart_on_same_port().await
    }

    /// `/metrics` of node `i`.
    pub async fn node_metrics(&self, i: usize) -> Result<String> {
        let resp = reqwest::get(format!("{}/metrics", self.nodes[i].url())).await?;
        ensure!(
            resp.status() == StatusCode::OK,
            "node metrics: {}",
            resp.status()
        );
        Ok(resp.text().await?)
    }

    /// Stops every process cleanly (SIGTERM) and checks that each exited with success.
    pub async fn stop(self) -> Result<()> {
        let Self {
            nodes,
            gateway,
            data,
        } = self;
        let stopped = stop_all(std::iter::once(gateway).chain(nodes)).await;
        drop(data);
        stopped
    }
}

/// Copies missing on `nodes`: per key of `bucket`, nodes whose record differs from the newest one, and per
/// chunk of every live record, nodes that do not hold it.
pub async fn copies_missing(nodes: &[NodeClient], bucket: &str, keys: &[String]) -> Result<usize> {
    let mut missing = 0;
    for key in keys {
        let mut records = Vec::new();
        for n in nodes {
            records.push(n.get_record(bucket, key).await?);
        }
        let newest = records
            .iter()
            .flatten()
            .max_by_key(|r| r.ts)
            .with_context(|| format!("no node holds {key}"))?
            .clone();
        missing += records
            .iter()
            .filter(|r| r.as_ref() != Some(&newest))
            .count();
        if newest.deleted {
            continue;
        }
        for chunk in &newest.chunks {
            for n in nodes {
                if n.head_chunk(&chunk.id).await?.is_none() {
                    missing += 1;
                }
            }
        }
    }
    Ok(missing)
}

/// Waits until every node holds a cluster map (a gateway offers it within seconds):
/// until then a node knows no peers.
pub async fn wait_for_map(nodes: &[NodeClient]) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for n in nodes {
        while n.cluster_map().await?.epoch == 0 {
            ensure!(
                std::time::Instant::now() < deadline,
                "a node never got the map"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Uploads in the background: each `(key, seed, len)` of `objects` as
/// `random_bytes(seed, len)` into `bucket`, `concurrency` at a time. The counter counts
/// uploads that ended (acknowledged or not), for a test to act part way through
/// ([`wait_until_count`]).
pub fn spawn_uploads(
    gw: &GatewayClient,
    bucket: &'static str,
    objects: Vec<(String, u64, usize)>,
    concurrency: usize,
) -> (
    tokio::task::JoinHandle<Vec<Result<super::PutReply>>>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use futures::stream::{self, StreamExt};
    let ended = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (gw, count) = (gw.clone(), ended.clone());
    let task = tokio::spawn(async move {
        stream::iter(objects)
            .map(|(key, seed, len)| {
                let (gw, count) = (gw.clone(), count.clone());
                async move {
                    let r = gw.put(bucket, &key, super::random_bytes(seed, len)).await;
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    r.with_context(|| format!("upload {key}"))
                }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await
    });
    (task, ended)
}

/// Waits until `count` reaches `n` (at most two minutes).
pub async fn wait_until_count(count: &std::sync::atomic::AtomicUsize, n: usize) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while count.load(std::sync::atomic::Ordering::SeqCst) < n {
        ensure!(
            std::time::Instant::now() < deadline,
            "uploads did not progress"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Ok(())
}
