//! Uploads abandoned part-way expire and their space comes back: the gateway's sweeper
//! aborts an upload older than `multipart_expiry` (here 1 s), and the next GC pass on the
//! nodes deletes the chunks only its pieces named. Real nodes and gateway, in-process.

mod common;

use std::time::Duration;

use common::{pattern, stack_with, Options, KEY};
use reqwest::{Client, Method, StatusCode};

/// Bound on waiting for the sweeper; only reached when it never runs.
const GUARD: Duration = Duration::from_secs(60);

async fn chunks_held(stack: &common::Stack) -> u64 {
    let mut total = 0;
    for n in &stack.nodes {
        let c = kura_cluster::client::NodeClient::new(&n.url(), common::SECRET).unwrap();
        total += c.status().await.unwrap().chunks;
    }
    total
}

#[tokio::test]
async fn an_abandoned_upload_expires_and_its_chunks_are_reclaimed() {
    let stack = stack_with(Options {
        gc_grace_secs: 0,
        multipart_expiry: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    let base = stack.gateway.url();
    let c = Client::new();
    let before = chunks_held(&stack).await;
    // A resumable upload that receives one piece (several chunks), then is abandoned.
    let meta = format!(
        "bucket {},key {}",
        base64_of("expiring"),
        base64_of("left/behind.bin")
    );
    let r = c
        .post(format!("{base}/v1/uploads"))
        .bearer_auth(KEY)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "10000000")
        .header("upload-metadata", meta)
        .header("content-type", "application/offset+octet-stream")
        .body(pattern(500_000, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let url = format!("{base}{}", r.headers()["location"].to_str().unwrap());
    assert!(
        chunks_held(&stack).await > before,
        "the piece stored no chunks"
    );
    // The sweeper aborts it once it is older than the expiry.
    tokio::time::timeout(GUARD, async {
        loop {
            let r = c
                .request(Method::HEAD, &url)
                .bearer_auth(KEY)
                .header("tus-resumable", "1.0.0")
                .send()
                .await
                .unwrap();
            if r.status() == StatusCode::NOT_FOUND {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the abandoned upload never expired");
    // Nothing became visible, and GC (grace 0) takes back every chunk of the piece.
    let r = c
        .get(format!("{base}/v1/o/expiring/left/behind.bin"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    for n in &stack.nodes {
        let client = kura_cluster::client::NodeClient::new(&n.url(), common::SECRET).unwrap();
        client.run_gc().await.unwrap();
    }
    assert_eq!(
        chunks_held(&stack).await,
        before,
        "chunks of the aborted upload remain"
    );
    stack.stop().await;
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
