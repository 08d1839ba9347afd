//! Several equivalent servers behind one client: the coordinators of a cluster whose job
//! store is PostgreSQL are stateless and interchangeable, so workers and gateways take a
//! comma-separated list (`--coordinator http://c1:8090,http://c2:8090`) and move to the
//! next one when the one they use stops answering.
//!
//! A request goes to the server that answered last. It moves on to the next when the
//! connection could not be made (nothing was sent: always safe), or — for requests the
//! caller marks as safe to repeat — when the call failed after sending or the server
//! answered `503 Service Unavailable`. Each server is tried at most once per request.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::StatusCode;

/// Interchangeable servers, by base URL.
#[derive(Debug)]
pub struct Endpoints {
    bases: Vec<String>,
    /// The one that answered last: where the next request goes first.
    current: AtomicUsize,
}

/// Whether a request may be sent again to another server after it may have arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// Repeating it is harmless (reads, heartbeats, fenced results: a second arrival is
    /// refused or changes nothing).
    Safe,
    /// It must not run twice (a submission would make two jobs): moved on only when
    /// the connection was never made.
    Once,
}

/// A list that names no server.
#[derive(Debug, thiserror::Error)]
#[error("no server URL in {0:?}")]
pub struct NoEndpoints(pub String);

impl Endpoints {
    /// Parses a comma-separated list of base URLs (trailing slashes dropped).
    pub fn parse(list: &str) -> Result<Self, NoEndpoints> {
        let bases: Vec<String> = list
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_string())
            .filter(|b| !b.is_empty())
            .collect();
        if bases.is_empty() {
            return Err(NoEndpoints(list.to_string()));
        }
        Ok(Self {
            bases,
            current: AtomicUsize::new(0),
        })
    }

    /// The base URLs, in the order given.
    pub fn bases(&self) -> &[String] {
        &self.bases
    }

    /// The base URL requests go to first.
    pub fn current(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// Sends the request `send` builds for a base URL, moving on through the servers as
    /// the module documentation says. Returns the last answer or error.
    pub async fn send<F, Fut>(&self, repeat: Repeat, send: F) -> reqwest::Result<reqwest::Response>
    where
        F: Fn(&str) -> Fut,
        Fut: Future<Output = reqwest::Result<reqwest::Response>>,
    {
        let n = self.bases.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        for i in 0..n {
            let at = (first + i) % n;
            let last = i + 1 == n;
            match send(&self.bases[at]).await {
                Ok(resp)
                    if !last
                        && repeat == Repeat::Safe
                        && resp.status() == StatusCode::SERVICE_UNAVAILABLE =>
                {
                    tracing::warn!(server = %self.bases[at], "unavailable; trying the next");
                }
                Ok(resp) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(resp);
                }
                Err(e) if !last && (e.is_connect() || repeat == Repeat::Safe) => {
                    tracing::warn!(server = %self.bases[at], error = %e, "unreachable; trying the next");
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last server's answer or error is returned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_empty_ones_are_refused() {
        let e = Endpoints::parse(" http://a:1/, http://b:2 ,").unwrap();
        assert_eq!(e.bases(), ["http://a:1", "http://b:2"]);
        assert_eq!(e.current(), "http://a:1");
        assert!(Endpoints::parse(" , ").is_err());
    }

    /// A server that answers `status` to everything, on a loopback port.
    async fn answering(status: u16) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(move || async move { axum::http::StatusCode::from_u16(status).unwrap() });
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    /// A loopback address nothing listens on.
    async fn refusing() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}")
    }

    async fn get(e: &Endpoints, repeat: Repeat) -> reqwest::Result<reqwest::Response> {
        let http = reqwest::Client::new();
        e.send(repeat, |base| http.get(format!("{base}/x")).send())
            .await
    }

    #[tokio::test]
    async fn requests_move_on_from_servers_that_are_down_and_stay_there() {
        let (down, up) = (refusing().await, answering(200).await);
        let e = Endpoints::parse(&format!("{down},{up}")).unwrap();
        // A refused connection sent nothing: even a request that must not repeat moves on.
        assert_eq!(get(&e, Repeat::Once).await.unwrap().status(), 200);
        assert_eq!(
            e.current(),
            up.as_str(),
            "the next request starts where this one ended"
        );
        let all_down = Endpoints::parse(&format!("{down},{}", refusing().await)).unwrap();
        assert!(get(&all_down, Repeat::Safe).await.unwrap_err().is_connect());
    }

    #[tokio::test]
    async fn only_repeatable_requests_move_on_from_an_unavailable_server() {
        let (busy, up) = (answering(503).await, answering(200).await);
        let e = Endpoints::parse(&format!("{busy},{up}")).unwrap();
        assert_eq!(get(&e, Repeat::Once).await.unwrap().status(), 503);
        assert_eq!(get(&e, Repeat::Safe).await.unwrap().status(), 200);
        // Every server unavailable: the last answer is the caller's.
        let e = Endpoints::parse(&format!("{busy},{busy}")).unwrap();
        assert_eq!(get(&e, Repeat::Safe).await.unwrap().status(), 503);
    }
}
