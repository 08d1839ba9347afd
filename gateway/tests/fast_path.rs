//! The native API's fast read path (`kura_gateway::fast`) answers an object GET or
//! HEAD exactly as the router does: every answer here is compared, status, headers and
//! body, with the router's answer to the same request (a path with a percent-escape
//! goes to the router), with and without CORS. Real nodes and gateways, in-process.

mod common;

use std::time::Duration;

use common::{metric, pattern, put, stack, Stack, KEY};
use reqwest::header::{HeaderMap, DATE};
use reqwest::{Method, StatusCode};

const FAST_READS: &str = "kura_gateway_fast_reads_total";

/// Status, headers (but the date) and body of `method path` with `headers`.
async fn answer(
    base: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = reqwest::Client::new().request(method, format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let mut h = resp.headers().clone();
    h.remove(DATE);
    (status, h, resp.bytes().await.unwrap().to_vec())
}

/// A request compared: method, its path for the fast path, the same through the
/// router, headers, whether the fast path takes it.
struct Case(Method, String, String, Vec<(String, String)>, bool);

fn cases(etag: &str) -> Vec<Case> {
    let bearer = ("authorization".to_string(), format!("Bearer {KEY}"));
    let origin = ("origin".to_string(), "https://player.example".to_string());
    let with = |more: &[(&str, &str)]| {
        let mut h = vec![bearer.clone()];
        h.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        h
    };
    let mut out = Vec::new();
    for (object, escaped) in [
        ("/v1/o/media/clip.bin", "/v1/o/media/clip%2Ebin"),
        ("/v1/o/media/note.txt", "/v1/o/media/note%2Etxt"),
        ("/v1/o/media/none.bin", "/v1/o/media/none%2Ebin"),
    ] {
        let (o, e) = (object.to_string(), escaped.to_string());
        for (method, headers) in [
            (Method::GET, with(&[])),
            (Method::HEAD, with(&[])),
            (Method::GET, with(&[("range", "bytes=100-2099")])),
            (Method::GET, with(&[("range", "bytes=-700")])),
            (Method::GET, with(&[("range", "bytes=99999999-")])),
            (Method::GET, with(&[("if-none-match", etag)])),
            (Method::GET, with(&[("if-match", "\"other\"")])),
            (Method::GET, with(&[("cache-control", "no-cache")])),
            (Method::GET, {
                let mut h = with(&[("range", "bytes=0-9")]);
                h.push(origin.clone());
                h
            }),
        ] {
            out.push(Case(method, o.clone(), e.clone(), headers, true));
        }
        // Never taken: no key, a wrong key, a query.
        out.push(Case(Method::GET, o.clone(), e.clone(), vec![], false));
        let wrong = vec![("authorization".to_string(), "Bearer nope".to_string())];
        out.push(Case(Method::GET, o.clone(), e.clone(), wrong, false));
        let (oq, eq) = (format!("{o}?x=1"), format!("{e}?x=1"));
        out.push(Case(Method::GET, oq, eq, with(&[]), false));
    }
    out
}

async fn compare(base: &str, etag: &str) {
    for Case(method, fast, routed, headers, taken) in cases(etag) {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let before = metric(base, FAST_READS).await;
        let a = answer(base, method.clone(), &fast, &h).await;
        let after = metric(base, FAST_READS).await;
        let b = answer(base, method.clone(), &routed, &h).await;
        assert_eq!(
            metric(base, FAST_READS).await,
            after,
            "{routed} took the fast path"
        );
        let what = format!("{method} {fast} {headers:?}");
        assert_eq!(after - before, if taken { 1.0 } else { 0.0 }, "{what}");
        assert_eq!(a.0, b.0, "{what}: status");
        assert_eq!(a.1, b.1, "{what}: headers");
        assert!(a.2 == b.2, "{what}: body");
    }
}

async fn objects(s: &Stack) -> String {
    let base = s.gateway.url();
    put(&base, "media/clip.bin", pattern(200 * 1024 + 7, 9)).await;
    put(&base, "media/note.txt", pattern(3000, 4)).await;
    let (_, h, _) = answer(
        &base,
        Method::HEAD,
        "/v1/o/media/clip.bin",
        &[("authorization", &format!("Bearer {KEY}"))],
    )
    .await;
    h["etag"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn the_fast_path_answers_as_the_router_does() {
    let s = stack().await;
    let etag = objects(&s).await;
    // The stack's gateway has CORS on.
    compare(&s.gateway.url(), &etag).await;
    let cors = answer(
        &s.gateway.url(),
        Method::GET,
        "/v1/o/media/clip.bin",
        &[
            ("authorization", &format!("Bearer {KEY}")),
            ("origin", "https://player.example"),
        ],
    )
    .await;
    assert_eq!(
        cors.1["access-control-allow-origin"],
        "https://player.example"
    );

    // And a gateway without.
    let mut config = s.config.clone();
    config.cors_origins.clear();
    config.record_cache_ttl = Duration::from_secs(60);
    let plain = kura_gateway::start(config).await.unwrap();
    compare(&plain.url(), &etag).await;
    let route =
        r#"kura_http_requests_total{method="GET",route="/v1/o/{bucket}/{*key}",status="206"}"#;
    assert!(metric(&plain.url(), route).await >= 2.0);
    plain.shutdown().await.unwrap();
    s.stop().await;
}
