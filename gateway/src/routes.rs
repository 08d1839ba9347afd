//! Every route of the gateway's native API, in one table, with the credential it takes.
//!
//! The router is built from this table (each route is layered with the check its
//! [`Access`] names), and the auth-matrix test (`gateway/tests/auth_matrix.rs`) walks
//! the same table: a route added here is tested against every wrong credential without
//! anyone writing a test for it, and a route cannot be added anywhere else.

use std::sync::Arc;

use axum::http::Method;
use axum::middleware;
use axum::routing::{any, get, head, patch, post, put};
use axum::Router;
use kura_cluster::observe::{self, HttpMetrics};

use crate::http::{cors_layer, limit_headers};
use crate::{admin, buckets, http, jobs, list, public, tus, upload_token, Gateway};

use kura_cluster::routes::RouteTable;
pub use kura_cluster::routes::{Access, Route};

/// The route of an object's reads and writes (also answered before the router, by
/// `crate::fast`).
pub const OBJECT_ROUTE: &str = "/v1/o/{bucket}/{*key}";

fn entries() -> RouteTable<Arc<Gateway>> {
    use Access::*;
    let all = [Method::GET, Method::POST, Method::PUT, Method::DELETE];
    RouteTable::default()
        .route("/health", &[Method::GET], Open, get(http::health))
        .route("/metrics", &[Method::GET], Open, get(http::metrics))
        .route("/v1/sign", &[Method::POST], ApiKey, post(public::sign))
        .route(
            "/v1/upload-tokens",
            &[Method::POST],
            ApiKey,
            post(upload_token::issue),
        )
        .route("/v1/jobs", &all, ApiKey, any(jobs::forward))
        .route("/v1/jobs/{*rest}", &all, ApiKey, any(jobs::forward))
        .route("/v1/batches/{*rest}", &all, ApiKey, any(jobs::forward))
        .route(
            "/v1/buckets",
            &[Method::GET],
            ApiKey,
            get(buckets::list_handler),
        )
        .route(
            "/v1/locate/{bucket}/{*key}",
            &[Method::GET],
            ApiKey,
            get(crate::locate::handler),
        )
        .route(
            "/v1/o/{bucket}",
            &[Method::GET],
            ApiKey,
            get(list::list_objects),
        )
        .route(
            OBJECT_ROUTE,
            &[Method::GET, Method::HEAD, Method::PUT, Method::DELETE],
            ApiKey,
            get(http::get_object)
                .head(http::get_object)
                .put(http::put_object)
                .delete(http::delete_object),
        )
        .route(
            "/v1/admin/cluster",
            &[Method::GET],
            Admin,
            get(admin::cluster),
        )
        .route(
            "/v1/admin/nodes",
            &[Method::POST],
            Admin,
            post(admin::add_node),
        )
        .route(
            "/v1/admin/nodes/{id}",
            &[Method::PATCH],
            Admin,
            patch(admin::change_node),
        )
        .route(
            "/v1/admin/rebalance",
            &[Method::PUT],
            Admin,
            put(admin::rebalance),
        )
        .route(
            "/v1/admin/repair",
            &[Method::POST],
            Admin,
            post(admin::repair),
        )
        .route(
            "/v1/admin/traffic",
            &[Method::GET],
            Admin,
            get(crate::traffic::handler),
        )
        .route(
            "/v1/s/{token}/{bucket}/{*key}",
            &[Method::GET, Method::HEAD],
            Signed,
            get(public::signed_get).head(public::signed_get),
        )
        .route("/v1/uploads", &[Method::POST], Uploader, post(tus::create))
        .route(
            "/v1/uploads/{id}",
            &[Method::HEAD, Method::PATCH, Method::DELETE],
            Uploader,
            head(tus::status).patch(tus::patch).delete(tus::terminate),
        )
}

/// Every route of the native API (the console's static files are [`Access::Open`] and
/// served under `/console` when it is on).
pub fn table() -> Vec<Route> {
    entries().routes()
}

/// Puts `access`'s credential check in front of `routes`.
fn guard(gw: &Arc<Gateway>, access: Access, routes: Router<Arc<Gateway>>) -> Router<Arc<Gateway>> {
    match access {
        Access::ApiKey => routes.route_layer(middleware::from_fn_with_state(
            gw.clone(),
            http::require_api_key,
        )),
        Access::Admin => routes.route_layer(middleware::from_fn_with_state(
            gw.clone(),
            admin::require_admin,
        )),
        // OPTIONS (discovery, browsers' preflight) needs no credential; the handlers
        // take an API key or an upload token (`tus::Uploader`).
        Access::Uploader => routes.layer(middleware::map_response(tus::with_tus)),
        Access::Open | Access::Signed => routes,
        // No gateway route takes the cluster secret: refuse everything, should one.
        Access::ClusterSecret => routes.route_layer(middleware::from_fn(refuse)),
    }
}

async fn refuse(_: axum::extract::Request, _: middleware::Next) -> axum::response::Response {
    axum::response::IntoResponse::into_response(crate::error::GatewayError::Unauthorized)
}

/// What every request of the native API passes first, in one layer: its metrics, and
/// tus discovery (an `OPTIONS` of the uploads without an `Origin`, answered before CORS).
async fn front(
    axum::extract::State((gw, metrics)): axum::extract::State<(Arc<Gateway>, HttpMetrics)>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    observe::recorded(&metrics, req, |req| tus::discovery(&gw, req, next)).await
}

/// The gateway's router, and the request metrics it records (shared with the S3 API).
pub fn router(gw: Arc<Gateway>) -> (Router, HttpMetrics) {
    let http_metrics = {
        let mut reg = gw.registry.lock().unwrap_or_else(|e| e.into_inner());
        HttpMetrics::register(&mut reg)
    };
    let router = entries()
        .into_router(|access, routes| guard(&gw, access, routes))
        .merge(if gw.config.console {
            crate::console::router()
        } else {
            Router::new()
        })
        .layer(middleware::from_fn_with_state(
            gw.config.max_header_bytes,
            limit_headers,
        ));
    let router = match cors_layer(&gw.config.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    let router = router
        .layer(middleware::from_fn_with_state(
            (gw.clone(), http_metrics.clone()),
            front,
        ))
        .with_state(gw);
    (router, http_metrics)
}
