//! The native API's fast read path: a GET or HEAD of an object with a valid API key is
//! answered before the router, by the same handler ([`http::serve_object`]) the router
//! would call. Going through axum's router cost the gateway a routing match, three
//! middleware layers (each clones the boxed services inside it per request) and the
//! extractors' copies of the path and headers: a 4 KiB GET served from the record
//! cache took 17.3 µs of gateway CPU through the router and takes 12.4 µs here
//! (BENCHMARKS.md, "The fixed cost of a request").
//!
//! It takes only what it can answer exactly as the router would, and hands everything
//! else to the router unchanged: another method or path, a path with percent-escapes
//! or a query, headers over the limit (431), a missing or wrong key (401). What it
//! answers passes the same CORS layer (when configured) and is recorded under the
//! route's own template, as the router's answers are.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Router;
use kura_cluster::observe::{self, HttpMetrics, RouteLabel};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::routes::OBJECT_ROUTE;
use crate::{http, Gateway};

/// The path prefix of [`OBJECT_ROUTE`].
const OBJECT_PREFIX: &str = "/v1/o/";

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The gateway's service: the fast read path in front of its router.
#[derive(Clone)]
pub struct Front {
    gw: Arc<Gateway>,
    router: Router,
    /// [`answer`], behind the router's CORS layer when there is one.
    fast: BoxCloneSyncService<Request, Response, Infallible>,
    metrics: HttpMetrics,
}

impl Front {
    /// `router` (the native API's, recording into `metrics`) behind the fast path.
    pub fn new(gw: Arc<Gateway>, router: Router, metrics: HttpMetrics) -> Self {
        let answer = {
            let (gw, router) = (gw.clone(), router.clone());
            tower::service_fn(move |req| answer(gw.clone(), router.clone(), req))
        };
        let fast = match http::cors_layer(&gw.config.cors_origins) {
            Some(cors) => BoxCloneSyncService::new(cors.layer(answer)),
            None => BoxCloneSyncService::new(answer),
        };
        Self {
            gw,
            router,
            fast,
            metrics,
        }
    }
}

impl Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if !answers(&self.gw, &req) {
            return Box::pin(self.router.clone().oneshot(req));
        }
        let (fast, metrics) = (self.fast.clone(), self.metrics.clone());
        Box::pin(async move {
            let route = RouteLabel::Fixed(OBJECT_ROUTE);
            let resp = observe::recorded_as(&metrics, route, req, |req| async move {
                fast.oneshot(req).await.unwrap_or_else(|e| match e {})
            });
            Ok(resp.await)
        })
    }
}

/// Answers a request [`answers`] took, with [`http::serve_object`].
async fn answer(gw: Arc<Gateway>, router: Router, req: Request) -> Result<Response, Infallible> {
    // Always found: `answers` parsed the same path.
    let Some((bucket, key)) = object_path(req.uri().path()) else {
        return router.oneshot(req).await;
    };
    gw.cluster.metrics.fast_reads.inc();
    let served = http::serve_object(&gw, req.method(), bucket, key, req.headers());
    Ok(served.await.into_response())
}

/// Whether the fast path answers `req` (see the module's doc): a GET or HEAD of
/// `/v1/o/{bucket}/{key}` with no escapes or query, headers within the limit and a
/// valid API key.
fn answers(gw: &Gateway, req: &Request) -> bool {
    let headers = req.headers();
    matches!(*req.method(), Method::GET | Method::HEAD)
        && req.uri().query().is_none()
        && object_path(req.uri().path()).is_some()
        && http::headers_len(headers) <= gw.config.max_header_bytes
        && http::has_api_key(gw, headers)
}

/// `(bucket, key)` of an object path without escapes, both parts non-empty (what the
/// router's `{bucket}/{*key}` would give).
fn object_path(path: &str) -> Option<(&str, &str)> {
    let (bucket, key) = path.strip_prefix(OBJECT_PREFIX)?.split_once('/')?;
    (!path.contains('%') && !bucket.is_empty() && !key.is_empty()).then_some((bucket, key))
}
