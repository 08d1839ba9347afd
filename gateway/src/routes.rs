//! Every route of the gateway's native API, in one table, with the credential it takes.
//!
//! The router is built from this table (each route is layered with the check its
//! [`Access`] names), and the auth-matrix test (`gateway/tests/auth_matrix.rs`) walks
//! the same table: a route added here is tested against every wrong credential without
//! anyone writing a test for it, and a route cannot be added anywhere else.

use std::sync::Arc;

use axum::http::Method;
use axum::middleware;
use axum::routing::{any, get, head, patch, post, put, MethodRouter};
use axum::Router;
use kura_cluster::observe::{self, HttpMetrics};

use crate::http::{cors_layer, limit_headers};
use crate::{admin, buckets, http, jobs, list, public, tus, upload_token, Gateway};

/// The credential a route takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// None: health, metrics, the console's static files.
    Open,
    /// An API key (`Authorization: Bearer`), checked before the handler runs.
    ApiKey,
    /// The admin token, checked before the handler runs (501 when none is configured).
    Admin,
    /// A signed URL's token in the path (`/v1/s/{token}/...`), checked by the handler.
    Signed,
    /// An API key or an upload token (tus), checked by the handler's extractor.
    Uploader,
}

/// One route: its path template, methods and credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// axum path template (`/v1/o/{bucket}/{*key}`).
    pub path: &'static str,
    /// Methods it answers (besides OPTIONS preflights, answered by CORS).
    pub methods: Vec<Method>,
    /// The credential it takes.
    pub access: Access,
}

type Handler = MethodRouter<Arc<Gateway>>;

fn entries() -> Vec<(Route, Handler)> {
    use Access::*;
    let r = |path, methods: &[Method], access, handler| {
        let route = Route {
            path,
            methods: methods.to_vec(),
            access,
        };
        (route, handler)
    };
    let all = [Method::GET, Method::POST, Method::PUT, Method::DELETE];
    vec![
        r("/health", &[Method::GET], Open, get(http::health)),
        r("/metrics", &[Method::GET], Open, get(http::metrics)),
        r("/v1/sign", &[Method::POST], ApiKey, post(public::sign)),
        r(
            "/v1/upload-tokens",
            &[Method::POST],
            ApiKey,
            post(upload_token::issue),
        ),
        r("/v1/jobs", &all, ApiKey, any(jobs::forward)),
        r("/v1/jobs/{*rest}", &all, ApiKey, any(jobs::forward)),
        r("/v1/batches/{*rest}", &all, ApiKey, any(jobs::forward)),
        r(
            "/v1/buckets",
            &[Method::GET],
            ApiKey,
            get(buckets::list_handler),
        ),
        r(
            "/v1/locate/{bucket}/{*key}",
            &[Method::GET],
            ApiKey,
            get(crate::locate::handler),
        ),
        r(
            "/v1/o/{bucket}",
            &[Method::GET],
            ApiKey,
            get(list::list_objects),
        ),
        r(
            "/v1/o/{bucket}/{*key}",
            &[Method::GET, Method::HEAD, Method::PUT, Method::DELETE],
            ApiKey,
            get(http::get_object)
                .head(http::get_object)
                .put(http::put_object)
                .delete(http::delete_object),
        ),
        r(
            "/v1/admin/cluster",
            &[Method::GET],
            Admin,
            get(admin::cluster),
        ),
        r(
            "/v1/admin/nodes",
            &[Method::POST],
            Admin,
            post(admin::add_node),
        ),
        r(
            "/v1/admin/nodes/{id}",
            &[Method::PATCH],
            Admin,
            patch(admin::change_node),
        ),
        r(
            "/v1/admin/rebalance",
            &[Method::PUT],
            Admin,
            put(admin::rebalance),
        ),
        r(
            "/v1/admin/repair",
            &[Method::POST],
            Admin,
            post(admin::repair),
        ),
        r(
            "/v1/admin/traffic",
            &[Method::GET],
            Admin,
            get(crate::traffic::handler),
        ),
        r(
            "/v1/s/{token}/{bucket}/{*key}",
            &[Method::GET, Method::HEAD],
            Signed,
            get(public::signed_get).head(public::signed_get),
        ),
        r("/v1/uploads", &[Method::POST], Uploader, post(tus::create)),
        r(
            "/v1/uploads/{id}",
            &[Method::HEAD, Method::PATCH, Method::DELETE],
            Uploader,
            head(tus::status).patch(tus::patch).delete(tus::terminate),
        ),
    ]
}

/// Every route of the native API (the console's static files are [`Access::Open`] and
/// served under `/console` when it is on).
pub fn table() -> Vec<Route> {
    entries().into_iter().map(|(route, _)| route).collect()
}

/// The routes of one access class, each with that class's check in front.
fn group(gw: &Arc<Gateway>, access: Access) -> Router<Arc<Gateway>> {
    let routes = entries()
        .into_iter()
        .filter(|(r, _)| r.access == access)
        .fold(Router::new(), |router, (r, handler)| {
            router.route(r.path, handler)
        });
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
    }
}

/// The gateway's router, and the request metrics it records (shared with the S3 API).
pub fn router(gw: Arc<Gateway>) -> (Router, HttpMetrics) {
    let http_metrics = {
        let mut reg = gw.registry.lock().unwrap_or_else(|e| e.into_inner());
        HttpMetrics::register(&mut reg)
    };
    let mut classes: Vec<Access> = Vec::new();
    for route in table() {
        if !classes.contains(&route.access) {
            classes.push(route.access);
        }
    }
    let router = classes
        .into_iter()
        .fold(Router::new(), |router, access| {
            router.merge(group(&gw, access))
        })
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
        .layer(middleware::from_fn_with_state(gw.clone(), tus::discovery))
        .layer(middleware::from_fn_with_state(
            http_metrics.clone(),
            observe::record_http,
        ))
        .with_state(gw);
    (router, http_metrics)
}
