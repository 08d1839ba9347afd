//! Cluster operations: [`OpsCluster`] (nodes and a gateway with the admin API on, driven
//! with the real `kura admin`) for membership, rebalance, repair, GC and hot-content
//! tests, and chunk placement helpers.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kura_cluster::client::NodeClient;
use kura_cluster::map::ClusterMap;
use kura_cluster::ChunkId;
use nix::sys::signal::Signal;
use reqwest::StatusCode;

use super::process::{stop_all, LOG_TAIL_LINES};
use super::{
    kura_bin, node_args_in_zone, node_client, sigkill, GatewayClient, KuraProcess, API_KEY, SECRET,
    STOP_TIMEOUT,
};

/// The admin token of gateways started by [`OpsCluster`].
pub const ADMIN_TOKEN: &str = "kura-test-admin-token-0123456789";

/// How long one `kura admin` run may take before the test fails (`--watch` follows a
/// whole rebalance).
pub const ADMIN_CLI_TIMEOUT: Duration = Duration::from_secs(300);

/// What a finished `kura admin ...` printed.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A cluster for operations tests: `kura node` processes `n1`, `n2`, … each in its own
/// zone (`z1`, `z2`, …) and all started with the same extra arguments, and a
/// `kura gateway` with the admin API on ([`ADMIN_TOKEN`]). Nodes can be started later
/// ([`start_node`](Self::start_node)) and then added with `kura admin node add`.
pub struct OpsCluster {
    /// The node processes, in the order started (`nodes[i]` has id `n{i+1}`).
    pub nodes: Vec<KuraProcess>,
    /// `zones[i]` is the zone of `nodes[i]`.
    pub zones: Vec<String>,
    /// The gateway.
    pub gateway: KuraProcess,
    node_extra: Vec<String>,
    data: tempfile::TempDir,
}

impl OpsCluster {
    /// Starts `nodes` nodes (ids `n1..`, zones `z1..`, data directories in one temporary
    /// directory, scrub off, `node_extra` appended to each node's arguments), then the
    /// gateway listing them with [`API_KEY`], [`SECRET`], `--admin-token` [`ADMIN_TOKEN`]
    /// and `gateway_extra`.
    pub async fn start(nodes: usize, node_extra: &[&str], gateway_extra: &[&str]) -> Result<Self> {
        let data = tempfile::Builder::new().prefix("kura-ops-").tempdir()?;
        let node_extra: Vec<String> = node_extra.iter().map(|s| s.to_string()).collect();
        let zones: Vec<String> = (1..=nodes).map(|i| format!("z{i}")).collect();
        let procs = futures::future::try_join_all(zones.iter().enumerate().map(|(i, zone)| {
            let id = format!("n{}", i + 1);
            let args = Self::args_of(data.path(), &id, zone, &node_extra);
            async move { KuraProcess::start(&id, args).await }
        }))
        .await?;
        let spec = procs
            .iter()
            .zip(&zones)
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
            "--admin-token",
            ADMIN_TOKEN,
        ];
        gateway_args.extend_from_slice(gateway_extra);
        let gateway = KuraProcess::start("gateway", gateway_args).await?;
        Ok(Self {
            nodes: procs,
            zones,
            gateway,
            node_extra,
            data,
        })
    }

    fn args_of(dir: &Path, id: &str, zone: &str, extra: &[String]) -> Vec<OsString> {
        let mut args = node_args_in_zone(&dir.join(id), id, zone);
        args.extend(extra.iter().map(OsString::from));
        args
    }

    /// Starts one more node process (`n{len+1}` in `zone`, same extra arguments), not yet
    /// in the cluster map; returns its index.
    pub async fn start_node(&mut self, zone: &str) -> Result<usize> {
        let id = format!("n{}", self.nodes.len() + 1);
        let args = Self::args_of(self.data.path(), &id, zone, &self.node_extra);
        self.nodes.push(KuraProcess::start(&id, args).await?);
        self.zones.push(zone.to_string());
        Ok(self.nodes.len() - 1)
    }

    /// Id of node `i`.
    pub fn id(&self, i: usize) -> &str {
        self.nodes[i].name()
    }

    /// Data directory of node `i`.
    pub fn node_data(&self, i: usize) -> PathBuf {
        self.data.path().join(self.id(i))
    }

    /// Indices of the nodes whose process is running.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].pid().is_some())
            .collect()
    }

    /// A client of the gateway's public API.
    pub fn client(&self) -> Result<GatewayClient> {
        GatewayClient::new(self.gateway.addr())
    }

    /// A cluster-secret client of node `i`.
    pub fn node_client(&self, i: usize) -> Result<NodeClient> {
        node_client(&self.nodes[i])
    }

    /// Runs `kura admin --gateway URL --admin-token T <args>` (within
    /// [`ADMIN_CLI_TIMEOUT`]) and returns what it printed, whatever its exit status.
    pub async fn admin(&self, args: &[&str]) -> Result<CliOutput> {
        let mut cmd = tokio::process::Command::new(kura_bin());
        cmd.arg("admin")
            .arg("--gateway")
            .arg(self.gateway.url())
            .arg("--admin-token")
            .arg(ADMIN_TOKEN)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("KURA_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd.spawn().context("spawning kura admin")?;
        let out = tokio::time::timeout(ADMIN_CLI_TIMEOUT, child.wait_with_output())
            .await
            .with_context(|| format!("kura admin {args:?} ran over {ADMIN_CLI_TIMEOUT:?}"))??;
        Ok(CliOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// [`admin`](Self::admin), which must exit 0; returns its stdout.
    pub async fn admin_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.admin(args).await?;
        ensure!(
            out.status.success(),
            "kura admin {args:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            out.stdout,
            out.stderr
        );
        Ok(out.stdout)
    }

    /// `GET /v1/admin/cluster` of the gateway.
    pub async fn admin_cluster(&self) -> Result<serde_json::Value> {
        let resp = reqwest::Client::new()
            .get(format!("{}/v1/admin/cluster", self.gateway.url()))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        ensure!(status == StatusCode::OK, "admin cluster: {status}: {text}");
        Ok(serde_json::from_str(&text)?)
    }

    /// The cluster map node `i` holds.
    pub async fn node_map(&self, i: usize) -> Result<ClusterMap> {
        Ok(self.node_client(i)?.cluster_map().await?)
    }

    /// `GET /v1/rebalance` of node `i`.
    pub async fn rebalance(&self, i: usize) -> Result<serde_json::Value> {
        Ok(self.node_client(i)?.rebalance().await?)
    }

    /// Waits until every running node holds a map of epoch ≥ `epoch` and reports a
    /// finished, idle pass for it (`done_epoch ≥ epoch`, not `running`); returns each
    /// running node's progress, by index.
    pub async fn wait_rebalanced(
        &self,
        epoch: u64,
        timeout: Duration,
    ) -> Result<Vec<(usize, serde_json::Value)>> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = Vec::new();
            let mut pending = Vec::new();
            for i in self.running() {
                let (map, p) = match (self.node_map(i).await, self.rebalance(i).await) {
                    (Ok(m), Ok(p)) => (m, p),
                    (m, p) => {
                        pending.push(format!("{}: {:?} {:?}", self.id(i), m.err(), p.err()));
                        continue;
                    }
                };
                let done = p["done_epoch"].as_u64().unwrap_or(0);
                let running = p["running"].as_bool().unwrap_or(true);
                if map.epoch < epoch || done < epoch || running {
                    pending.push(format!(
                        "{}: map epoch {} progress {p}",
                        self.id(i),
                        map.epoch
                    ));
                }
                all.push((i, p));
            }
            if pending.is_empty() {
                return Ok(all);
            }
            if Instant::now() > deadline {
                bail!(
                    "rebalance to epoch {epoch} not done after {timeout:?}:\n  {}",
                    pending.join("\n  ")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every chunk node `i` holds, with its size (walks the paginated listing).
    pub async fn chunks_of(&self, i: usize) -> Result<BTreeMap<ChunkId, u64>> {
        let client = self.node_client(i)?;
        let mut out = BTreeMap::new();
        let mut after: Option<ChunkId> = None;
        loop {
            let page = client.list_chunks(after.as_ref(), 1000).await?;
            out.extend(page.chunks.iter().map(|c| (c.id, c.size)));
            match page.next_after {
                Some(a) => after = Some(a),
                None => return Ok(out),
            }
        }
    }

    /// `GET /v1/status` of node `i`.
    pub async fn status(&self, i: usize) -> Result<kura_cluster::client::NodeStatus> {
        Ok(self.node_client(i)?.status().await?)
    }

    /// SIGKILLs node `i` and checks that our signal ended it.
    pub async fn kill_node(&mut self, i: usize) -> Result<()> {
        sigkill(&mut self.nodes[i]).await
    }

    /// Restarts node `i` on its old port (same arguments and data directory).
    pub async fn restart_node(&mut self, i: usize) -> Result<()> {
        self.nodes[i].restart_on_same_port().await
    }

    /// Stops node `i` cleanly (SIGTERM) and checks that it exited with success.
    pub async fn stop_node(&mut self, i: usize) -> Result<()> {
        let p = &mut self.nodes[i];
        p.signal(Signal::SIGTERM)?;
        let status = match p.reap(Some(STOP_TIMEOUT)).await {
            Ok(s) => s,
            Err(_) => p.kill().await?,
        };
        if !status.success() {
            p.print_log_tail(LOG_TAIL_LINES);
        }
        p.mark_clean();
        ensure!(status.success(), "{}: {status} after SIGTERM", p.name());
        Ok(())
    }

    /// Stops the gateway and every running node cleanly; checks that each exited with
    /// success.
    pub async fn stop(self) -> Result<()> {
        let Self {
            nodes,
            gateway,
            data,
            ..
        } = self;
        let stopped = stop_all(std::iter::once(gateway).chain(nodes)).await;
        drop(data);
        stopped
    }
}

/// Ids of the owners (replica set, in placement order) of a chunk under `map`.
pub fn chunk_owners(map: &ClusterMap, id: &ChunkId) -> Vec<String> {
    owners_on(&kura_cluster::ring::Ring::new(map), map, id.as_bytes())
}

/// Ids of the owners of placement key `key` (a chunk id's bytes, or
/// `kura_cluster::ring::record_key`) on `ring`, built from `map` (building a ring once
/// for many keys is much cheaper than [`chunk_owners`] per key).
pub fn owners_on(ring: &kura_cluster::ring::Ring, map: &ClusterMap, key: &[u8; 32]) -> Vec<String> {
    ring.placement(key, map.replicas)
        .0
        .into_iter()
        .map(|e| e.id.clone())
        .collect()
}
