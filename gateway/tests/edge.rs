//! The gateway at the edge, tried the way an outsider would: hundreds of half-sent
//! request heads, downloads nobody reads, junk methods. Well-behaved clients keep being
//! served, abusive connections are closed, and nothing a client sends can grow the
//! metric series. Real nodes and gateway, in-process on loopback.

mod common;

use std::time::Duration;

use common::{metric, put, stack_with, Options, KEY};
use kura_cluster::server::ServerLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound on waits for events that must happen within the 1 s limits below; only
/// reached when the behaviour under test is broken.
const GUARD: Duration = Duration::from_secs(60);

/// Half-sent heads held open at once (the kind of flood that exhausted descriptors).
const SLOW_CLIENTS: usize = 300;

fn short_limits() -> ServerLimits {
    ServerLimits {
        header_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(1),
        ..ServerLimits::default()
    }
}

async fn wait_closed(s: &mut TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(GUARD, async {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    })
    .await
    .expect("the gateway never closed the connection");
}

#[tokio::test]
async fn slowloris_heads_are_closed_while_others_are_served() {
    let stack = stack_with(Options {
        server: short_limits(),
        ..Options::default()
    })
    .await;
    let base = stack.gateway.url();
    let mut slow = Vec::new();
    for _ in 0..SLOW_CLIENTS {
        let mut s = TcpStream::connect(stack.gateway.addr()).await.unwrap();
        s.write_all(b"GET /v1/o/b/k HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    // A real upload and download go through while they hang.
    put(&base, "edge-bucket/served", b"still served".to_vec()).await;
    let body = reqwest::Client::new()
        .get(format!("{base}/v1/o/edge-bucket/served"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&body[..], b"still served");
    for s in &mut slow {
        wait_closed(s).await;
    }
    assert!(metric(&base, "kura_http_connections_timed_out_total").await >= SLOW_CLIENTS as f64);
    stack.stop().await;
}

#[tokio::test]
async fn a_download_nobody_reads_releases_its_connection() {
    let stack = stack_with(Options {
        server: short_limits(),
        // No chunk cache: the stalled response holds chunks fetched for it alone.
        chunk_cache_bytes: 0,
        ..Options::default()
    })
    .await;
    let base = stack.gateway.url();
    put(&base, "edge-bucket/big", vec![5u8; 24 << 20]).await;
    let mut s = TcpStream::connect(stack.gateway.addr()).await.unwrap();
    s.write_all(
        format!(
            "GET /v1/o/edge-bucket/big HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // Never read. The metrics request itself is the only other open connection once
    // the stalled one is dropped.
    tokio::time::timeout(GUARD, async {
        while metric(&base, "kura_http_connections_open").await > 1.0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the stalled download kept its connection");
    assert!(metric(&base, "kura_http_connections_timed_out_total").await >= 1.0);
    drop(s);
    stack.stop().await;
}

#[tokio::test]
async fn junk_methods_add_no_metric_series() {
    let stack = stack_with(Options::default()).await;
    let base = stack.gateway.url();
    let client = reqwest::Client::new();
    for junk in ["FOO", "BAR", "BAZ", "PROPFIND"] {
        let m = reqwest::Method::from_bytes(junk.as_bytes()).unwrap();
        let r = client
            .request(m, format!("{base}/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            reqwest::StatusCode::METHOD_NOT_ALLOWED,
            "{junk}"
        );
    }
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for junk in ["FOO", "BAR", "BAZ", "PROPFIND"] {
        assert!(!text.contains(junk), "{junk} became a label");
    }
    assert!(text.contains("method=\"other\""));
    stack.stop().await;
}

#[tokio::test]
async fn stored_active_content_is_served_sandboxed_and_never_sniffed() {
    let stack = stack_with(Options::default()).await;
    let base = stack.gateway.url();
    let client = reqwest::Client::new();
    for (key, ct, sandboxed) in [
        ("page.html", "text/html; charset=utf-8", true),
        ("logo.svg", "image/svg+xml", true),
        ("feed.atom", "application/atom+xml", true),
        ("clip.mp4", "video/mp4", false),
        ("photo.jpg", "image/jpeg", false),
    ] {
        let r = client
            .put(format!("{base}/v1/o/edge-bucket/{key}"))
            .bearer_auth(KEY)
            .header("content-type", ct)
            .body("<script>alert(1)</script>")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
        let r = client
            .get(format!("{base}/v1/o/edge-bucket/{key}"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{key}");
        let csp = r
            .headers()
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            csp.as_deref() == Some("sandbox"),
            sandboxed,
            "{key}: {csp:?}"
        );
    }
    stack.stop().await;
}

#[tokio::test]
async fn short_credentials_are_refused_at_start_without_being_printed() {
    let s = stack_with(Options::default()).await;
    let weak = "tiny-secret";
    let mut cases = Vec::new();
    let mut c = s.config.clone();
    c.api_keys.push(weak.into());
    cases.push(("API key", c));
    let mut c = s.config.clone();
    c.admin_token = Some(weak.into());
    cases.push(("admin token", c));
    let mut c = s.config.clone();
    c.s3_keys[0].secret_key = weak.into();
    cases.push(("S3 key", c));
    let mut c = s.config.clone();
    c.url_signing_keys =
        vec![
            kura_cluster::signed::SigningKey::new("k", "0123456789abcdef0123456789abcdef").unwrap(),
        ];
    c.url_signing_keys.push(c.url_signing_keys[0].clone());
    cases.push(("signing key id", c));
    for (what, config) in cases {
        let printed = format!("{config:?}");
        assert!(
            !printed.contains(KEY) && !printed.contains(weak),
            "{what}: {printed}"
        );
        let err = match kura_gateway::start(config).await {
            Ok(_) => panic!("{what}: a gateway started"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(what), "{what}: {err}");
        assert!(!err.contains(weak), "{what}: {err}");
    }
    s.stop().await;
}

/// An object too big for its record to list every chunk is refused before a byte is
/// stored (the configured limit, 1 GiB here, is above what a record holds with 64-byte
/// chunks: ~50 MB), and tus advertises the limit that really holds.
#[tokio::test]
async fn uploads_too_big_for_one_record_are_refused_up_front() {
    let s = stack_with(Options::default()).await;
    let mut config = s.config.clone();
    config.chunk_size = 64;
    let limit = kura_cluster::record::max_object_bytes(64);
    assert!(limit < config.max_object_bytes, "{limit}");
    let gw = kura_gateway::start(config).await.unwrap();
    let base = gw.url();
    let http = reqwest::Client::new();
    let r = http
        .request(reqwest::Method::OPTIONS, format!("{base}/v1/uploads"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["tus-max-size"].to_str().unwrap(),
        limit.to_string()
    );
    let r = http
        .put(format!("{base}/v1/o/media/too-big.bin"))
        .bearer_auth(KEY)
        .body(vec![7u8; limit as usize + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        metric(&base, "kura_gateway_bytes_uploaded_total").await,
        0.0
    );
    let r = http
        .post(format!("{base}/v1/uploads"))
        .bearer_auth(KEY)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", (limit + 1).to_string())
        .header("upload-metadata", "bucket bWVkaWE=,key YmlnLmJpbg==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    gw.shutdown().await.unwrap();
    s.stop().await;
}
