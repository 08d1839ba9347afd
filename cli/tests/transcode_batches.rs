//! A batch over a folder that already holds kura's outputs submits jobs for the sources
//! only: everything under a `.hls/` folder (segments, playlists, images of a first
//! batch) and keys with no room for their outputs' names are skipped, and the answer
//! says which and why. Real gateway, coordinator and nodes; no worker (the jobs only
//! need to exist).

mod common;

use anyhow::{ensure, Result};
use common::{Cluster, KuraProcess, API_KEY, SECRET};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_batch_skips_kura_outputs_and_says_why() -> Result<()> {
    let cluster = Cluster::start().await?;
    let gw = cluster.client()?;
    // A coordinator that lists objects through the gateway (batches need that).
    let data = tempfile::tempdir()?;
    let gateway = cluster.gateway.url();
    let data_dir = data.path().to_string_lossy().into_owned();
    let coordinator = KuraProcess::start(
        "coordinator",
        [
            "coordinator",
            "--data",
            &data_dir,
            "--api-keys",
            API_KEY,
            "--cluster-secret",
            SECRET,
            "--gateway",
            &gateway,
            "--gateway-api-key",
            API_KEY,
        ],
    )
    .await?;
    let long = format!("in/{}", "k".repeat(1024 - 128 - 2));
    let sources = ["in/a.mp4", "in/b.mov"];
    let outputs = [
        "in/a.mp4.hls/master.m3u8",
        "in/a.mp4.hls/v360p/index.m3u8",
        "in/a.mp4.hls/a7/v360p/seg00000.ts",
        "in/a.mp4.hls/a9/poster.jpg",
    ];
    for key in sources
        .iter()
        .chain(&outputs)
        .map(|k| k.to_string())
        .chain([long.clone()])
    {
        gw.put("media", &key, b"bytes".to_vec()).await?;
    }
    let resp = gw
        .http
        .post(format!("{}/v1/jobs/batch", coordinator.url()))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({ "prefix": "media/in/", "profile": "preview" }))
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::ACCEPTED,
        "batch: {}",
        resp.status()
    );
    let batch: serde_json::Value = resp.json().await?;
    ensure!(batch["total"] == 2, "{batch:#}");
    let skipped: Vec<(String, String)> = batch["skipped"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["source"].as_str().unwrap_or("").to_string(),
                        s["reason"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    for o in outputs {
        let src = format!("media/{o}");
        ensure!(
            skipped.iter().any(|(s, r)| *s == src && r.contains(".hls")),
            "{src} not skipped as an output: {skipped:?}"
        );
    }
    ensure!(
        skipped
            .iter()
            .any(|(s, r)| *s == format!("media/{long}") && r.contains("bytes")),
        "the long key was not skipped: {skipped:?}"
    );
    ensure!(skipped.len() == outputs.len() + 1, "{skipped:?}");
    coordinator.stop().await?;
    cluster.stop().await
}
