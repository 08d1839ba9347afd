//! The gateway's caches: verified chunks served without the nodes, read-your-writes
//! through one gateway, a write through another gateway seen within the record TTL (at
//! once with `Cache-Control: no-cache`), a key read all the time refreshed in the
//! background, and chunks read in part cached whole on the second read. Real nodes and gateways, in-process on loopback.

mod common;

use std::time::Duration;

use common::{get, metric, pattern, put, stack_with, Options, KEY};
use reqwest::StatusCode;

async fn delete(base: &str, path: &str) {
    let r = reqwest::Client::new()
        .delete(format!("{base}/v1/o/{path}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_cached_object_is_served_without_the_nodes() {
    let mut s = stack_with(Options {
        record_cache_ttl: Duration::from_secs(60),
        ..Options::default()
    })
    .await;
    let base = s.gateway.url();
    // 5 chunks of 64 KiB (the stack's chunk size) and a bit.
    let data = pattern(5 * 64 * 1024 + 1000, 1);
    put(&base, "media/video.mp4", data.clone()).await;
    let (status, body) = get(&base, "media/video.mp4", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "first read differs");
    let misses = metric(&base, "kura_gateway_chunk_cache_misses_total").await;
    assert_eq!(misses, 6.0, "every chunk came from a replica once");
    // Each through the one peer-call path (`kura_cluster::peers`), which counts them:
    // one call per miss, plus any hedge.
    let chunk_gets = r#"kura_peer_calls_total{op="chunk_get",outcome="ok"}"#;
    let calls = metric(&base, chunk_gets).await;
    let hedges = metric(&base, "kura_peer_hedges_total").await;
    assert!(
        calls >= 6.0 && calls <= 6.0 + hedges,
        "{calls} chunk calls, {hedges} hedges"
    );
    assert!(
        metric(
            &base,
            r#"kura_peer_calls_total{op="chunk_put",outcome="ok"}"#
        )
        .await
            >= 6.0
    );

    // With every node gone, the gateway still has the record (TTL 60 s) and the chunks.
    for n in s.nodes.drain(..) {
        n.shutdown().await.unwrap();
    }
    let hits = metric(&base, "kura_gateway_chunk_cache_hits_total").await;
    let (status, body) = get(&base, "media/video.mp4", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "cached read differs");
    // A whole read: each of its 6 chunks taken from the cache, and counted, once.
    let now = metric(&base, "kura_gateway_chunk_cache_hits_total").await;
    assert_eq!(now - hits, 6.0, "hits of a whole cached read");
    let (status, body) = get(&base, "media/video.mp4", Some("bytes=65000-200000")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert!(body == data[65000..=200000], "cached range differs");
    // Ranges within one chunk and across one boundary: built at once from the cache
    // (`download::CACHED_BODY_MAX_PIECES`), each piece counted as a hit.
    for (from, to, pieces) in [(1000, 2000, 1.0), (65000, 66000, 2.0), (0, 65535, 1.0)] {
        let hits = metric(&base, "kura_gateway_chunk_cache_hits_total").await;
        let range = format!("bytes={from}-{to}");
        let (status, body) = get(&base, "media/video.mp4", Some(&range)).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert!(body == data[from..=to], "cached {range} differs");
        let now = metric(&base, "kura_gateway_chunk_cache_hits_total").await;
        assert_eq!(now - hits, pieces, "{range}");
    }
    assert_eq!(
        metric(&base, "kura_gateway_chunk_cache_misses_total").await,
        misses,
        "no read went to a node"
    );
    assert_eq!(metric(&base, chunk_gets).await, calls);
    assert!(metric(&base, "kura_gateway_chunk_cache_hits_total").await >= 6.0 + 3.0);
    // An object it has not seen is not invented: the nodes are needed for it.
    let (status, _) = get(&base, "media/other", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    s.gateway.shutdown().await.unwrap();
    s.coordinator.shutdown().await.unwrap();
}

#[tokio::test]
async fn writes_through_a_gateway_are_read_back_at_once() {
    // A long TTL: any staleness after a local write would show.
    let s = stack_with(Options {
        record_cache_ttl: Duration::from_secs(60),
        ..Options::default()
    })
    .await;
    let base = s.gateway.url();
    let (status, _) = get(&base, "media/k", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "absence is cached too");
    put(&base, "media/k", pattern(1000, 1)).await;
    assert_eq!(get(&base, "media/k", None).await.1, pattern(1000, 1));
    put(&base, "media/k", pattern(2000, 2)).await;
    assert_eq!(get(&base, "media/k", None).await.1, pattern(2000, 2));
    delete(&base, "media/k").await;
    assert_eq!(get(&base, "media/k", None).await.0, StatusCode::NOT_FOUND);
    put(&base, "media/k", pattern(3000, 3)).await;
    assert_eq!(get(&base, "media/k", None).await.1, pattern(3000, 3));
    s.stop().await;
}

#[tokio::test]
async fn another_gateways_write_is_seen_within_the_record_ttl() {
    let s = stack_with(Options::default()).await;
    let a = s.gateway.url();
    let ttl = Duration::from_millis(500);
    let b = s.another_gateway(ttl).await;
    let uncached = s.another_gateway(Duration::ZERO).await;
    put(&a, "media/k", pattern(1000, 1)).await;
    assert_eq!(get(&b.url(), "media/k", None).await.1, pattern(1000, 1));
    put(&a, "media/k", pattern(1000, 2)).await;
    // Without a record cache the new version is read at once ...
    assert_eq!(
        get(&uncached.url(), "media/k", None).await.1,
        pattern(1000, 2)
    );
    // ... and a gateway with one sees it once its entry has expired.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert_eq!(get(&b.url(), "media/k", None).await.1, pattern(1000, 2));
    // A client that asks with `Cache-Control: no-cache` gets a new version at once.
    put(&a, "media/k", pattern(1000, 3)).await;
    let fresh = reqwest::Client::new()
        .get(format!("{}/v1/o/media/k", b.url()))
        .bearer_auth(KEY)
        .header("Cache-Control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.bytes().await.unwrap().to_vec(), pattern(1000, 3));
    delete(&a, "media/k").await;
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert_eq!(
        get(&b.url(), "media/k", None).await.0,
        StatusCode::NOT_FOUND
    );
    b.shutdown().await.unwrap();
    uncached.shutdown().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn a_key_read_all_the_time_is_refreshed_in_the_background_not_missed() {
    // Every hit is past the refresh point and the TTL is long: only a refresh can bring
    // another gateway's write here, and no read of the key misses after the first.
    let s = stack_with(Options {
        record_cache_ttl: Duration::from_secs(60),
        record_refresh_after: Some(Duration::ZERO),
        ..Options::default()
    })
    .await;
    let base = s.gateway.url();
    let other = s.another_gateway(Duration::ZERO).await;
    put(&other.url(), "media/k", pattern(1000, 1)).await;
    assert_eq!(get(&base, "media/k", None).await.1, pattern(1000, 1));
    let misses = "kura_gateway_record_cache_misses_total";
    let refreshes = "kura_gateway_record_refreshes_total";
    assert_eq!(
        metric(&base, misses).await,
        1.0,
        "the first read asked the nodes"
    );
    put(&other.url(), "media/k", pattern(1000, 2)).await;
    // Each hit serves the entry it finds; the first hit of an entry starts one refresh,
    // whose answer is the next entry.
    let mut served = Vec::new();
    let bound = std::time::Instant::now() + Duration::from_secs(60);
    while served.last() != Some(&pattern(1000, 2)) {
        assert!(std::time::Instant::now() < bound, "no refresh in 60 s");
        let (status, body) = get(&base, "media/k", None).await;
        assert_eq!(status, StatusCode::OK);
        served.push(body);
    }
    assert_eq!(served[0], pattern(1000, 1), "the hit before any refresh");
    assert!(metric(&base, refreshes).await >= 1.0);
    assert_eq!(metric(&base, misses).await, 1.0, "a refresh is not a miss");
    other.shutdown().await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn a_chunk_read_in_part_twice_is_cached_whole() {
    let s = stack_with(Options::default()).await;
    let base = s.gateway.url();
    let data = pattern(3 * 64 * 1024, 9);
    put(&base, "media/seek", data.clone()).await;
    let hits = || metric(&base, "kura_gateway_chunk_cache_hits_total");
    let (_, body) = get(&base, "media/seek", Some("bytes=70000-70999")).await;
    assert!(body == data[70000..71000]);
    let (_, body) = get(&base, "media/seek", Some("bytes=80000-80999")).await;
    assert!(body == data[80000..81000]);
    assert_eq!(
        hits().await,
        0.0,
        "one-off ranges are not served from memory"
    );
    // The second ranged read fetched the whole chunk in the background.
    let mut tries = 0;
    while metric(&base, "kura_gateway_chunk_cache_bytes").await < (64 * 1024) as f64 {
        tries += 1;
        assert!(tries < 100, "the chunk was never cached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, body) = get(&base, "media/seek", Some("bytes=65536-131071")).await;
    assert!(body == data[65536..131072]);
    assert_eq!(hits().await, 1.0);
    // A chunk read in part once is still not cached.
    let (_, body) = get(&base, "media/seek", Some("bytes=140000-140099")).await;
    assert!(body == data[140000..140100]);
    assert_eq!(hits().await, 1.0);
    s.stop().await;
}
