//! Hot content: an object whose read rate spikes gets extra replicas on nodes beyond its
//! owners, reads spread over them, and the copies go away when it cools down.

mod common;

use std::time::{Duration, Instant};

use common::{metric, stack_with, Options, ADMIN, KEY, SECRET};
use kura_cluster::client::NodeClient;
use kura_cluster::ChunkId;
use reqwest::StatusCode;

async fn copies(nodes: &[NodeClient], id: &ChunkId) -> usize {
    let mut n = 0;
    for c in nodes {
        if c.head_chunk(id).await.unwrap().is_some() {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_object_gets_extra_replicas_and_loses_them_when_cold() {
    let s = stack_with(Options {
        nodes: 6,
        hot_reads_per_sec: 4.0,
        // Reads served from the chunk cache never make an object hot (they add no node
        // load); without it, every read here reaches the nodes.
        chunk_cache_bytes: 0,
        ..Options::default()
    })
    .await;
    let base = s.gateway.url();
    let http = reqwest::Client::new();
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
    let put = http
        .put(format!("{base}/v1/o/media/viral.mp4"))
        .bearer_auth(KEY)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let nodes: Vec<NodeClient> = s
        .nodes
        .iter()
        .map(|n| NodeClient::new(&n.url(), SECRET).unwrap())
        .collect();
    // The first chunk's id (64 KiB chunks in this stack).
    let first = ChunkId::of(&body[..64 * 1024]);
    assert_eq!(copies(&nodes, &first).await, 3);

    // A spike: 40 reads in well under a window.
    for _ in 0..40 {
        let r = http
            .get(format!("{base}/v1/o/media/viral.mp4"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap(), body);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while copies(&nodes, &first).await < 5 {
        assert!(Instant::now() < deadline, "no extra replicas appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&base, "kura_gateway_hot_promotions_total").await,
        1.0
    );
    let status: serde_json::Value = http
        .get(format!("{base}/v1/admin/cluster"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["hot"][0]["object"], "media/viral.mp4", "{status}");
    // Reads keep working (and may be served by the extra copies).
    for _ in 0..10 {
        let r = http
            .get(format!("{base}/v1/o/media/viral.mp4"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap(), body);
    }
    // Silence: after a few quiet windows the extra copies are dropped.
    let deadline = Instant::now() + Duration::from_secs(40);
    while copies(&nodes, &first).await > 3 {
        assert!(
            Instant::now() < deadline,
            "extra replicas were never dropped"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(copies(&nodes, &first).await, 3, "owners keep theirs");
    assert_eq!(metric(&base, "kura_gateway_hot_demotions_total").await, 1.0);
    let r = http
        .get(format!("{base}/v1/o/media/viral.mp4"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), body);
    s.stop().await;
}
