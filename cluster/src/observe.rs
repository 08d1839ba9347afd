//! Observability every kura HTTP service shares: request metrics recorded where requests
//! are handled, and the Prometheus text endpoint.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a request counter sample.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method ([`method_label`]).
    pub method: &'static str,
    /// Route template (e.g. `/v1/chunks/{id}`), never the raw path, to bound cardinality.
    pub route: RouteLabel,
    /// Response status code.
    pub status: u16,
}

/// Labels of a latency histogram sample.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// HTTP method ([`method_label`]).
    pub method: &'static str,
    /// Route template.
    pub route: RouteLabel,
}

/// A route template as a label value: the router's own string (`MatchedPath`, whose
/// clone shares it), a template given by a service that answers before the router
/// (the same text the router would give), or `unmatched`. Recorded on every request,
/// so it costs no allocation (a `String` label cost two per request).
#[derive(Clone, Debug)]
pub enum RouteLabel {
    /// The route the router matched.
    Matched(MatchedPath),
    /// A route template, or `unmatched`.
    Fixed(&'static str),
}

impl RouteLabel {
    /// The route `req` matched, or `unmatched`.
    pub fn of(req: &Request) -> Self {
        match req.extensions().get::<MatchedPath>() {
            Some(path) => Self::Matched(path.clone()),
            None => Self::Fixed("unmatched"),
        }
    }

    /// The label's text.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Matched(path) => path.as_str(),
            Self::Fixed(route) => route,
        }
    }
}

impl PartialEq for RouteLabel {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RouteLabel {}

impl std::hash::Hash for RouteLabel {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Per-route request counts and latencies.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    totals: Arc<HttpTotals>,
}

/// Upper bounds (seconds) of the latency buckets: 0.1 ms .. ~3.3 s in 16 doubling steps,
/// which covers inline reads through slow fsyncs.
fn latency_bounds() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, LATENCY_BUCKETS)
}

/// Number of latency buckets (plus one for everything slower).
pub const LATENCY_BUCKETS: u16 = 16;

/// Every request of a service, summed over routes: what a service reads back about itself
/// (e.g. the gateway's traffic history for the console), without walking label sets.
#[derive(Debug, Default)]
pub struct HttpTotals {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Answers with a 4xx status.
    pub client_errors: AtomicU64,
    /// Answers with a 5xx status.
    pub server_errors: AtomicU64,
    /// Latency histogram: requests per bucket of `latency_bounds()`, then the overflow.
    pub latency: [AtomicU64; LATENCY_BUCKETS as usize + 1],
}

/// A copy of [`HttpTotals`] at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TotalsSnapshot {
    /// Requests answered.
    pub requests: u64,
    /// 4xx answers.
    pub client_errors: u64,
    /// 5xx answers.
    pub server_errors: u64,
    /// Requests per latency bucket (the last one: slower than every bound).
    pub latency: Vec<u64>,
}

impl HttpTotals {
    fn record(&self, status: u16, seconds: f64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if (400..500).contains(&status) {
            self.client_errors.fetch_add(1, Ordering::Relaxed);
        } else if status >= 500 {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        let i = latency_bounds()
            .position(|b| seconds <= b)
            .unwrap_or(LATENCY_BUCKETS as usize);
        self.latency[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> TotalsSnapshot {
        TotalsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            client_errors: self.client_errors.load(Ordering::Relaxed),
            server_errors: self.server_errors.load(Ordering::Relaxed),
            latency: self
                .latency
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// The latency (seconds, a bucket's upper bound) below which `q` (0..1) of the requests
/// counted in `buckets` fell; `None` without requests. Requests slower than every bound
/// report the last bound.
pub fn latency_quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let want = (q * total as f64).ceil().max(1.0) as u64;
    let bounds: Vec<f64> = latency_bounds().collect();
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= want {
            return bounds.get(i).or(bounds.last()).copied();
        }
    }
    bounds.last().copied()
}

/// A service's metric registry, shared by its handlers.
pub type SharedRegistry = Arc<Mutex<Registry>>;

impl HttpMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_bounds())
        });
        registry.register(
            "kura_http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "kura_http_request_duration_seconds",
            "HTTP request latency until the response head, by route",
            latency.clone(),
        );
        Self {
            requests,
            latency,
            totals: Arc::default(),
        }
    }

    /// The service's totals over every route.
    pub fn totals(&self) -> Arc<HttpTotals> {
        self.totals.clone()
    }
}

/// Middleware recording every request into [`HttpMetrics`].
pub async fn record_http(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    recorded(&m, req, |req| next.run(req)).await
}

/// The response `handle` gives to `req`, recorded into `m`: for a service whose outer
/// middleware does more than record (one layer instead of two; each `from_fn` layer
/// clones the services inside it per request).
pub async fn recorded<F>(
    m: &HttpMetrics,
    req: Request,
    handle: impl FnOnce(Request) -> F,
) -> Response
where
    F: std::future::Future<Output = Response>,
{
    let route = RouteLabel::of(&req);
    recorded_as(m, route, req, handle).await
}

/// [`recorded`] under `route`: for a service that answers before the router does.
pub async fn recorded_as<F>(
    m: &HttpMetrics,
    route: RouteLabel,
    req: Request,
    handle: impl FnOnce(Request) -> F,
) -> Response
where
    F: std::future::Future<Output = Response>,
{
    let start = Instant::now();
    let method = method_label(req.method());
    let resp = handle(req).await;
    let seconds = start.elapsed().as_secs_f64();
    m.latency
        .get_or_create(&RouteLabels {
            method,
            route: route.clone(),
        })
        .observe(seconds);
    m.totals.record(resp.status().as_u16(), seconds);
    m.requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// The method as a metric label: one of the methods kura serves, or `other`. The
/// method comes from the client before any check, so using it verbatim would let anyone
/// add series without bound (`FOO /health`, `BAR /health`, ...).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Renders a registry in the Prometheus text exposition format.
pub fn render(registry: &SharedRegistry) -> Response {
    let mut out = String::new();
    let encoded = {
        let reg = registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &reg)
    };
    match encoded {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for junk in ["FOO", "BAR", "PROPFIND", "TRACE", "CONNECT"] {
            let m = Method::from_bytes(junk.as_bytes()).unwrap();
            assert_eq!(method_label(&m), "other", "{junk}");
        }
    }

    #[tokio::test]
    async fn requests_are_labelled_by_the_route_they_matched() {
        use tower::ServiceExt;
        let mut registry = Registry::default();
        let m = HttpMetrics::register(&mut registry);
        let app = axum::Router::new()
            .route("/v1/things/{id}", axum::routing::get(|| async { "thing" }))
            .layer(axum::middleware::from_fn_with_state(m.clone(), record_http));
        for path in ["/v1/things/a", "/v1/things/b", "/elsewhere"] {
            let req = Request::builder()
                .uri(path)
                .body(axum::body::Body::empty())
                .unwrap();
            app.clone().oneshot(req).await.unwrap();
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let line =
            r#"kura_http_requests_total{method="GET",route="/v1/things/{id}",status="200"} 2"#;
        assert!(text.contains(line), "{text}");
        // A layer on the router runs for matched routes only: no path reaches a label.
        assert!(!text.contains("/v1/things/a"), "{text}");
        assert!(!text.contains("elsewhere"), "{text}");
        let unmatched = RouteLabel::Fixed("unmatched");
        assert_eq!(unmatched.as_str(), "unmatched");
    }

    #[test]
    fn totals_count_classes_and_quantiles_read_the_buckets() {
        let t = HttpTotals::default();
        for _ in 0..98 {
            t.record(200, 0.00005); // first bucket (<= 0.1 ms)
        }
        t.record(404, 0.0015); // <= 1.6 ms
        t.record(503, 10.0); // slower than every bound
        let s = t.snapshot();
        assert_eq!((s.requests, s.client_errors, s.server_errors), (100, 1, 1));
        assert_eq!(latency_quantile(&s.latency, 0.5), Some(0.0001));
        assert_eq!(latency_quantile(&s.latency, 0.99), Some(0.0016));
        let last = latency_bounds().last().unwrap();
        assert_eq!(latency_quantile(&s.latency, 1.0), Some(last));
        assert_eq!(latency_quantile(&[0; 17], 0.5), None);
    }
}
