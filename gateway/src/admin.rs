//! The admin API (its own token, not an API key): cluster status, node lifecycle and
//! rebalance control. Every membership change is a new cluster-map epoch, offered to every
//! node; gateways converge on it within [`crate::cluster::MAP_SYNC_INTERVAL`].
//!
//! | call | does |
//! | --- | --- |
//! | `GET /v1/admin/cluster` | epoch, nodes (state, health, capacity, rebalance progress) |
//! | `POST /v1/admin/nodes {id, addr, zone, weight?}` | adds a node |
//! | `PATCH /v1/admin/nodes/{id} {weight?, state?}` | reweights, drains, removes, declares lost, reactivates |
//! | `PUT /v1/admin/rebalance {paused?, bytes_per_sec?}` | pauses, resumes, throttles every node |
//! | `POST /v1/admin/repair` | starts a repair pass on every node |

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kura_cluster::map::{ClusterMap, NodeEntry, NodeState};
use kura_cluster::ring::DEFAULT_WEIGHT;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{GatewayError, Result};
use crate::Gateway;

/// Checks the admin token; the admin API is off (501) when none is configured.
pub async fn require_admin(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let Some(admin) = &gw.admin else {
        return GatewayError::NotConfigured("this gateway has no admin token configured".into())
            .into_response();
    };
    if !admin.admits_headers(req.headers()) {
        return GatewayError::Unauthorized.into_response();
    }
    next.run(req).await
}

/// `GET /v1/admin/cluster`.
pub async fn cluster(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    let map = gw.cluster.map();
    let handles = gw.cluster.all_nodes();
    let peers = &gw.cluster.peers;
    let details = futures::future::join_all(handles.iter().map(|h| async move {
        let status = peers.call(h, "status", h.client.status());
        let rebalance = peers.call(h, "rebalance_get", h.client.rebalance());
        let (status, rebalance) = (status.await.ok(), rebalance.await.ok());
        (h.entry.id.clone(), h.health.is_up(), status, rebalance)
    }))
    .await;
    let mut moved = 0u64;
    let mut remaining = 0u64;
    let mut running = false;
    // Reachable nodes that have not finished the current epoch: a pass may be over while
    // items wait for a retry (an owner was unreachable), which is not done yet.
    let mut pending = 0u64;
    let mut rate = 0u64;
    let nodes: Vec<Value> = map
        .nodes
        .iter()
        .map(|n| {
            let d = details.iter().find(|d| d.0 == n.id);
            let (up, status, reb) = match d {
                Some((_, up, s, r)) => (*up, s.clone(), r.clone()),
                None => (false, None, None),
            };
            if let Some(r) = &reb {
                if r["done_epoch"].as_u64().unwrap_or(0) < map.epoch {
                    pending += 1;
                }
                if r["epoch"].as_u64() == Some(map.epoch) {
                    moved += r["moved_bytes"].as_u64().unwrap_or(0);
                    rate += r["rate_bytes_per_sec"].as_u64().unwrap_or(0);
                    running |= r["running"].as_bool().unwrap_or(false);
                    let total = r["total_bytes"].as_u64().unwrap_or(0);
                    let scanned = r["scanned_bytes"].as_u64().unwrap_or(0);
                    if r["running"].as_bool().unwrap_or(false) {
                        remaining += total.saturating_sub(scanned);
                    }
                }
            }
            json!({
                "id": n.id, "addr": n.addr, "zone": n.zone, "weight": n.weight, "state": n.state,
                "health": if n.state == NodeState::Lost { "lost" } else if up { "up" } else { "down" },
                "bytes_used": status.as_ref().map(|s| s.bytes_used),
                "bytes_free": status.as_ref().map(|s| s.bytes_free),
                "chunks": status.as_ref().map(|s| s.chunks),
                "rebalance": reb,
            })
        })
        .collect();
    Json(json!({
        "epoch": map.epoch,
        "replicas": map.replicas,
        "nodes": nodes,
        "rebalance": {
            "running": running,
            "pending_nodes": pending,
            "settled": !running && pending == 0,
            "moved_bytes": moved,
            "remaining_bytes": remaining,
            "rate_bytes_per_sec": rate,
            "eta_secs": (rate > 0).then(|| remaining / rate.max(1)),
        },
        "hot": gw.hot.snapshot(),
    }))
}

/// Offers `map` to every node (including ones new in it) and adopts it. Fails with 409
/// if no node took it (another change with the same epoch won).
async fn publish(gw: &Gateway, map: ClusterMap) -> Result<Json<Value>> {
    gw.cluster.adopt(map.clone());
    let targets = gw.cluster.all_nodes();
    let offers = futures::future::join_all(targets.iter().map(|n| {
        let offer = n.client.offer_cluster_map(&map);
        gw.cluster.peers.call(n, "map_offer", offer)
    }))
    .await;
    let applied = offers.iter().filter(|r| matches!(r, Ok(true))).count();
    if applied == 0 {
        // Re-read what the nodes hold, so this gateway does not keep a map nobody has.
        gw.cluster.sync_map().await;
        return Err(GatewayError::Conflict(format!(
            "no node accepted epoch {}; another change won — retry",
            map.epoch
        )));
    }
    tracing::info!(
        epoch = map.epoch,
        applied,
        of = targets.len(),
        "cluster map published"
    );
    Ok(Json(
        json!({ "epoch": map.epoch, "applied": applied, "nodes": targets.len() }),
    ))
}

/// Body of `POST /v1/admin/nodes`.
#[derive(Deserialize)]
pub struct AddNode {
    id: String,
    addr: String,
    zone: String,
    weight: Option<u32>,
}

fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok {
        return Err(GatewayError::BadRequest(
            "node id must be 1-64 of A-Z a-z 0-9 . _ -".into(),
        ));
    }
    Ok(())
}

/// Asks the node at `addr` to prove it holds this cluster's secret under the id `id`
/// (`GET /v1/identity` with a fresh nonce, no credential sent) before the map, and with
/// it the secret on every later call, goes there.
async fn confirm_identity(gw: &Gateway, id: &str, addr: &str) -> Result<()> {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let refuse = |why: String| {
        GatewayError::Conflict(format!(
            "the node at {addr} did not prove it is {id} of this cluster: {why}"
        ))
    };
    let reply: Value = gw
        .http
        .get(format!("http://{addr}/v1/identity"))
        .query(&[("nonce", &nonce)])
        .timeout(IDENTITY_TIMEOUT)
        .send()
        .await
        .map_err(|e| refuse(format!("no answer ({e})")))?
        .error_for_status()
        .map_err(|e| refuse(e.to_string()))?
        .json()
        .await
        .map_err(|e| refuse(format!("not a kura node ({e})")))?;
    let claimed = reply["node_id"].as_str().unwrap_or_default();
    let proof = reply["proof"].as_str().unwrap_or_default();
    if claimed != id {
        return Err(refuse(format!("it says it is {claimed:?}")));
    }
    if !kura_cluster::auth::check_identity(gw.config.cluster_secret.expose(), &nonce, id, proof) {
        return Err(refuse("it does not hold the cluster secret".into()));
    }
    Ok(())
}

/// How long a node being added has to prove its identity.
const IDENTITY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `POST /v1/admin/nodes`.
pub async fn add_node(
    State(gw): State<Arc<Gateway>>,
    Json(req): Json<AddNode>,
) -> Result<Response> {
    check_id(&req.id)?;
    if req.addr.parse::<std::net::SocketAddr>().is_err() && !req.addr.contains(':') {
        return Err(GatewayError::BadRequest("addr must be host:port".into()));
    }
    let mut map = gw.cluster.map();
    if map.node(&req.id).is_some() {
        return Err(GatewayError::Conflict(format!(
            "node {} is already in the map",
            req.id
        )));
    }
    confirm_identity(&gw, &req.id, &req.addr).await?;
    map.epoch += 1;
    map.nodes.push(NodeEntry {
        id: req.id,
        addr: req.addr,
        zone: req.zone,
        weight: req.weight.unwrap_or(DEFAULT_WEIGHT),
        state: NodeState::Active,
    });
    let out = publish(&gw, map).await?;
    Ok((StatusCode::CREATED, out).into_response())
}

/// Body of `PATCH /v1/admin/nodes/{id}`.
#[derive(Deserialize)]
pub struct ChangeNode {
    weight: Option<u32>,
    state: Option<NodeState>,
}

/// `PATCH /v1/admin/nodes/{id}`.
pub async fn change_node(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    Json(req): Json<ChangeNode>,
) -> Result<Json<Value>> {
    let mut map = gw.cluster.map();
    let entry = map
        .nodes
        .iter_mut()
        .find(|n| n.id == id)
        .ok_or(GatewayError::NotFound)?;
    if entry.state == NodeState::Lost && req.state.is_some_and(|s| s != NodeState::Lost) {
        return Err(GatewayError::Conflict(format!(
            "node {id} was declared lost; add it again under a new id"
        )));
    }
    if let Some(w) = req.weight {
        if w == 0 {
            return Err(GatewayError::BadRequest(
                "weight must be at least 1 (drain to empty a node)".into(),
            ));
        }
        entry.weight = w;
    }
    if let Some(s) = req.state {
        entry.state = s;
    }
    let active = map
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Active)
        .count();
    if active == 0 {
        return Err(GatewayError::BadRequest(
            "the change would leave no active node".into(),
        ));
    }
    map.epoch += 1;
    publish(&gw, map).await
}

/// Body of `PUT /v1/admin/rebalance`.
#[derive(Deserialize)]
pub struct RebalanceSettings {
    paused: Option<bool>,
    bytes_per_sec: Option<u64>,
}

/// `PUT /v1/admin/rebalance`: applies settings on every node (each keeps the fields
/// not given).
pub async fn rebalance(
    State(gw): State<Arc<Gateway>>,
    Json(req): Json<RebalanceSettings>,
) -> Result<Json<Value>> {
    let nodes = gw.cluster.all_nodes();
    let mut results = Vec::new();
    for n in &nodes {
        let current = gw
            .cluster
            .peers
            .call(n, "rebalance_get", n.client.rebalance());
        let current = current.await.ok();
        let paused = req.paused.unwrap_or_else(|| {
            current
                .as_ref()
                .and_then(|c| c["paused"].as_bool())
                .unwrap_or(false)
        });
        let bps = req.bytes_per_sec.unwrap_or_else(|| {
            current
                .as_ref()
                .and_then(|c| c["bytes_per_sec"].as_u64())
                .unwrap_or(0)
        });
        let settings = json!({ "paused": paused, "bytes_per_sec": bps });
        let set = n.client.set_rebalance(&settings);
        let r = gw.cluster.peers.call(n, "rebalance_set", set).await;
        results.push(json!({ "node": n.entry.id, "ok": r.is_ok() }));
    }
    Ok(Json(json!({ "nodes": results })))
}

/// `POST /v1/admin/repair`.
pub async fn repair(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    let nodes = gw.cluster.all_nodes();
    let started = futures::future::join_all(nodes.iter().map(|n| {
        let run = n.client.run_rebalance(true);
        gw.cluster.peers.call(n, "repair_run", run)
    }))
    .await;
    Json(json!({ "started": started.iter().filter(|r| r.is_ok()).count(), "nodes": nodes.len() }))
}
