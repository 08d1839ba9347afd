//! The node's route table (see `kura_cluster::routes`) and the router built from it.

use std::sync::Arc;

use axum::http::Method;
use axum::middleware;
use axum::routing::{get, post, put};
use axum::Router;
use kura_cluster::observe::{self, HttpMetrics};
use kura_cluster::routes::{Access, RouteTable};

use super::*;
use super::{lifetime, records};
use crate::node::Node;

/// Every route of the node's API, with the credential it takes (see
/// `kura_cluster::routes`; `tests/auth_matrix.rs` walks it).
fn table() -> RouteTable<Arc<Node>> {
    use kura_cluster::routes::Access::{ClusterSecret, Open};
    use Method as M;
    RouteTable::default()
        .route("/health", &[M::GET], Open, get(health))
        .route("/v1/identity", &[M::GET], Open, get(identity))
        .route("/metrics", &[M::GET], Open, get(metrics))
        .route("/v1/chunks", &[M::GET], ClusterSecret, get(list_chunks))
        .route(
            "/v1/chunks/{id}",
            &[M::PUT, M::GET, M::HEAD, M::DELETE],
            ClusterSecret,
            put(put_chunk)
                .get(get_chunk)
                .head(head_chunk)
                .delete(delete_chunk),
        )
        .route(
            "/v1/records/{bucket}",
            &[M::GET],
            ClusterSecret,
            get(records::list_records),
        )
        .route(
            "/v1/records/{bucket}/{*key}",
            &[M::PUT, M::GET],
            ClusterSecret,
            put(records::put_record).get(records::get_record),
        )
        .route("/v1/status", &[M::GET], ClusterSecret, get(status))
        .route(
            kura_cluster::client::STORE_PATH,
            &[M::GET],
            ClusterSecret,
            get(store_info),
        )
        .route("/v1/scrub", &[M::POST], ClusterSecret, post(scrub_now))
        .route(
            "/v1/cluster-map",
            &[M::GET, M::PUT],
            ClusterSecret,
            get(get_map).put(put_map),
        )
        .route(
            "/v1/rebalance",
            &[M::GET, M::PUT],
            ClusterSecret,
            get(rebalance_status).put(rebalance_settings),
        )
        .route(
            "/v1/rebalance/run",
            &[M::POST],
            ClusterSecret,
            post(rebalance_run),
        )
        .route("/v1/catchup", &[M::POST], ClusterSecret, post(catch_up))
        .route(
            "/v1/records",
            &[M::GET, M::POST],
            ClusterSecret,
            get(records::scan_records).post(records::put_records),
        )
        .route(
            "/v1/record-reads",
            &[M::POST],
            ClusterSecret,
            post(records::get_records),
        )
        .route(
            "/v1/chunks/{id}/pin",
            &[M::POST],
            ClusterSecret,
            post(lifetime::pin_chunk),
        )
        .route(
            "/v1/chunks/touch",
            &[M::POST],
            ClusterSecret,
            post(lifetime::touch_chunks),
        )
        .route(
            "/v1/chunks/{id}/verify",
            &[M::POST],
            ClusterSecret,
            post(verify_chunk),
        )
        .route("/v1/gc/run", &[M::POST], ClusterSecret, post(gc_run))
}

/// The node's routes and the credential each takes.
pub fn routes() -> Vec<kura_cluster::routes::Route> {
    table().routes()
}

/// The node's router.
pub fn router(node: Arc<Node>) -> Router {
    let http_metrics = {
        let mut reg = node.registry.lock().unwrap_or_else(|e| e.into_inner());
        HttpMetrics::register(&mut reg)
    };
    let guarded = node.clone();
    table()
        .into_router(move |access, routes| match access {
            Access::Open => routes,
            // Every other class is the cluster secret here: a route declared with
            // another access still gets the strictest check.
            _ => routes.route_layer(middleware::from_fn_with_state(
                guarded.clone(),
                require_secret,
            )),
        })
        .layer(middleware::from_fn_with_state(
            http_metrics,
            observe::record_http,
        ))
        .with_state(node)
}
