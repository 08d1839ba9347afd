//! Route tables: every service declares its routes once, each with the credential it
//! takes, and builds its router from that table. The same table drives the auth-matrix
//! tests (every route × every wrong credential), so a route cannot be added without
//! being tested against them, nor added outside the table.

use axum::http::Method;
use axum::routing::MethodRouter;
use axum::Router;

/// The credential a route takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// None: health, metrics, identity proofs, static files.
    Open,
    /// A user's API key (`Authorization: Bearer`).
    ApiKey,
    /// The gateway's admin token.
    Admin,
    /// A signed URL's token in the path, checked by the handler.
    Signed,
    /// An API key or a direct-upload token, checked by the handler.
    Uploader,
    /// The cluster secret: nodes, gateways and workers calling each other.
    ClusterSecret,
}

/// One route: its path template, methods and credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// axum path template (`/v1/o/{bucket}/{*key}`).
    pub path: &'static str,
    /// Methods it answers.
    pub methods: Vec<Method>,
    /// The credential it takes.
    pub access: Access,
}

/// A service's routes with their handlers.
pub struct RouteTable<S> {
    entries: Vec<(Route, MethodRouter<S>)>,
}

impl<S: Clone + Send + Sync + 'static> Default for RouteTable<S> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> RouteTable<S> {
    /// Adds a route.
    pub fn route(
        mut self,
        path: &'static str,
        methods: &[Method],
        access: Access,
        handler: MethodRouter<S>,
    ) -> Self {
        let route = Route {
            path,
            methods: methods.to_vec(),
            access,
        };
        self.entries.push((route, handler));
        self
    }

    /// The routes, without handlers.
    pub fn routes(&self) -> Vec<Route> {
        self.entries.iter().map(|(r, _)| r.clone()).collect()
    }

    /// The router: the routes of each access class together, passed through `guard`
    /// (which puts that class's credential check in front), then merged.
    pub fn into_router(self, guard: impl Fn(Access, Router<S>) -> Router<S>) -> Router<S> {
        let mut classes: Vec<Access> = Vec::new();
        for (r, _) in &self.entries {
            if !classes.contains(&r.access) {
                classes.push(r.access);
            }
        }
        let mut groups: Vec<(Access, Router<S>)> =
            classes.into_iter().map(|a| (a, Router::new())).collect();
        for (r, handler) in self.entries {
            if let Some((_, g)) = groups.iter_mut().find(|(a, _)| *a == r.access) {
                *g = std::mem::take(g).route(r.path, handler);
            }
        }
        groups.into_iter().fold(Router::new(), |all, (access, g)| {
            all.merge(guard(access, g))
        })
    }
}

/// A credential an auth-matrix test presents.
#[derive(Clone, Debug)]
pub struct Presented {
    /// What it is, for the failure message.
    pub what: &'static str,
    /// The `Authorization: Bearer` value, if any.
    pub bearer: Option<String>,
    /// The status the route must answer.
    pub want: http::StatusCode,
}

/// Calls every method of every route at `base` with each credential `cases` gives for
/// it (paths filled in by `fill`); returns one line per answer that was not the one
/// wanted. The auth-matrix tests of every service run on this.
pub async fn refusals(
    base: &str,
    routes: &[Route],
    fill: impl Fn(&Route) -> String,
    cases: impl Fn(&Route) -> Vec<Presented>,
) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut failures = Vec::new();
    for route in routes {
        let path = fill(route);
        for case in cases(route) {
            for method in &route.methods {
                let mut req = http
                    .request(method.clone(), format!("{base}{path}"))
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body("{}");
                if let Some(b) = &case.bearer {
                    req = req.bearer_auth(b);
                }
                let got = match req.send().await {
                    Ok(r) => r.status(),
                    Err(e) => {
                        failures.push(format!("{method} {path} with {}: {e}", case.what));
                        continue;
                    }
                };
                if got != case.want {
                    failures.push(format!(
                        "{method} {path} with {}: {got}, want {}",
                        case.what, case.want
                    ));
                }
            }
        }
    }
    failures
}
