//! The node: its stores, metrics and config, shared by every handler.

use std::sync::{Arc, Mutex};

use kura_cluster::client::NodeStatus;
use kura_cluster::layout::StoreInfo;
use kura_cluster::map::ClusterMap;
use kura_cluster::observe::SharedRegistry;
use kura_cluster::peers::Peers;
use prometheus_client::registry::Registry;

use crate::chunks::ChunkStore;
use crate::config::NodeConfig;
use crate::db::{sync_write, Db, CF_META};
use crate::error::{NodeError, Result};
use crate::metrics::NodeMetrics;
use crate::records::RecordTable;

/// Time limit of one call to a peer (a chunk PUT of up to 4 MiB to a node whose disk is
/// busy with a rebalance): generous, since what waits is background work.
pub const PEER_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Meta key of the stored cluster map.
const CLUSTER_MAP_KEY: &[u8] = b"cluster_map";

/// One storage node's state.
pub struct Node {
    /// The config it was started with.
    pub config: NodeConfig,
    /// The metadata database.
    pub db: Arc<Db>,
    /// Chunks.
    pub chunks: ChunkStore,
    /// Object records.
    pub records: RecordTable,
    /// Node metrics.
    pub metrics: NodeMetrics,
    /// The registry `/metrics` renders.
    pub registry: SharedRegistry,
    /// Serialises cluster-map epoch checks.
    map_lock: Mutex<()>,
    /// The stored cluster map, cached.
    map: std::sync::RwLock<Arc<ClusterMap>>,
    /// Rebalance and repair state.
    pub rebalancer: crate::rebalance::Rebalancer,
    /// Catch-up of peers back from an outage.
    pub catchup: crate::catchup::CatchUp,
    /// The credential internal callers present: the cluster secret.
    pub peer_auth: kura_cluster::auth::Bearer,
    /// The other nodes of the map, and the one path calls to them take (rebalance,
    /// repair, catch-up, GC).
    pub peers: Peers,
    /// Where its store is, for a co-located gateway (see `kura_cluster::layout`).
    pub store: StoreInfo,
}

impl Node {
    /// Opens the node's stores under `config.data`.
    pub fn open(config: NodeConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.data).map_err(|e| {
            NodeError::Startup(format!("cannot create {}: {e}", config.data.display()))
        })?;
        let db = Arc::new(Db::open(&config.data.join("db"))?);
        let chunks = ChunkStore::open(&config.data, db.clone())?;
        let records = RecordTable::new(db.clone());
        let metrics = NodeMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let map = load_map(&db)?;
        let peers = Peers::new(
            config.cluster_secret.expose(),
            PEER_CALL_TIMEOUT,
            metrics.peers.clone(),
        )?;
        peers.adopt(&map);
        let map = std::sync::RwLock::new(Arc::new(map));
        let rebalancer = crate::rebalance::Rebalancer::new(config.rebalance_bytes_per_sec);
        // An operator's pause or throttle (`kura admin rebalance ...`) outlives restarts;
        // it wins over the configured throttle until the operator changes it again.
        if let Some(saved) = load_rebalance_settings(&db)? {
            tracing::info!(
                paused = saved.paused,
                bytes_per_sec = saved.bytes_per_sec,
                configured_bytes_per_sec = config.rebalance_bytes_per_sec,
                "using the rebalance settings an operator set"
            );
            rebalancer.set(saved);
        }
        let catchup = crate::catchup::CatchUp::open(&db)?;
        let store = StoreInfo::publish(&config.data).map_err(|e| {
            NodeError::Startup(format!("cannot mark {}: {e}", config.data.display()))
        })?;
        Ok(Self {
            store,
            map,
            rebalancer,
            catchup,
            peer_auth: kura_cluster::auth::Bearer::of_secrets([&config.cluster_secret]),
            peers,
            config,
            db,
            chunks,
            records,
            metrics,
            registry: Arc::new(Mutex::new(registry)),
            map_lock: Mutex::new(()),
        })
    }

    /// Capacity and counts, for `/v1/status` and `/metrics`.
    pub fn status(&self) -> NodeStatus {
        let (chunks, bytes_used, quarantined) = self.chunks.usage();
        let (bytes_free, bytes_total) = disk_space(&self.config.data);
        NodeStatus {
            node_id: self.config.node_id.clone(),
            zone: self.config.zone.clone(),
            chunks,
            bytes_used,
            bytes_free,
            bytes_total,
            quarantined,
        }
    }

    /// Copies the current status into the scrape-time gauges.
    pub fn refresh_gauges(&self) {
        let s = self.status();
        let m = &self.metrics;
        m.chunks.set(s.chunks as i64);
        m.bytes_used.set(s.bytes_used as i64);
        m.bytes_free.set(s.bytes_free as i64);
        m.bytes_total.set(s.bytes_total as i64);
        m.quarantined.set(s.quarantined as i64);
    }

    /// The stored cluster map (epoch 0, empty, if none was ever stored).
    pub fn cluster_map(&self) -> Result<ClusterMap> {
        Ok((*self.current_map()).clone())
    }

    /// The stored cluster map, shared.
    pub fn current_map(&self) -> Arc<ClusterMap> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stores `map` if its epoch is higher than the stored one; returns whether it was.
    pub fn offer_cluster_map(&self, map: &ClusterMap) -> Result<bool> {
        let _guard = self.map_lock.lock().unwrap_or_else(|e| e.into_inner());
        if map.epoch <= self.current_map().epoch {
            return Ok(false);
        }
        let v = serde_json::to_vec(map).map_err(json_error("cluster map"))?;
        self.db
            .raw()
            .put_cf_opt(self.db.cf(CF_META)?, CLUSTER_MAP_KEY, v, &sync_write())?;
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map.clone());
        self.peers.adopt(map);
        tracing::info!(epoch = map.epoch, "new cluster map");
        self.rebalancer.request(false);
        Ok(true)
    }
}

/// Meta key of the rebalance settings an operator set (JSON `Settings`).
const REBALANCE_SETTINGS_KEY: &[u8] = b"rebalance_settings";

fn load_rebalance_settings(db: &Db) -> Result<Option<crate::rebalance::Settings>> {
    match db.raw().get_cf(db.cf(CF_META)?, REBALANCE_SETTINGS_KEY)? {
        Some(v) => serde_json::from_slice(&v)
            .map(Some)
            .map_err(json_error("stored rebalance settings")),
        None => Ok(None),
    }
}

impl Node {
    /// Applies an operator's rebalance settings and stores them (synced), so a restart
    /// keeps them.
    pub fn set_rebalance_settings(&self, s: crate::rebalance::Settings) -> Result<()> {
        let json = serde_json::to_vec(&s).map_err(json_error("rebalance settings"))?;
        self.db.raw().put_cf_opt(
            self.db.cf(CF_META)?,
            REBALANCE_SETTINGS_KEY,
            json,
            &crate::db::sync_write(),
        )?;
        self.rebalancer.set(s);
        Ok(())
    }
}

fn load_map(db: &Db) -> Result<ClusterMap> {
    match db.raw().get_cf(db.cf(CF_META)?, CLUSTER_MAP_KEY)? {
        Some(v) => serde_json::from_slice(&v).map_err(json_error("stored cluster map")),
        None => Ok(ClusterMap::default()),
    }
}

/// A JSON failure of `what` (stored metadata), with its cause.
fn json_error(what: &'static str) -> impl Fn(serde_json::Error) -> NodeError {
    move |source| NodeError::MetadataJson { what, source }
}

/// (free, total) bytes of the filesystem holding `path`; zeros if it cannot be read.
fn disk_space(path: &std::path::Path) -> (u64, u64) {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let frag = s.fragment_size();
            (s.blocks_available() * frag, s.blocks() * frag)
        }
        Err(_) => (0, 0),
    }
}
