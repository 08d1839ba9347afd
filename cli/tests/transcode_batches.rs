//! A batch over a folder that already holds kura's outputs submits jobs for the sources
//! only: everything under a `.hls/` folder (segments, playlists, images of a first
//! batch), keys with no room for their outputs' names, objects whose Content-Type is
//! neither video nor audio, and sources already transcoded with the profile from their
//! current version (unless forced) are skipped, and the answer says which and why; an
//! object of no type that a worker's probe finds is not media is reported skipped too,
//! not failed. Real gateway, coordinator, nodes and worker (that a job writes the
//! "transcoded" marker is checked in `transcode_outputs`).

mod common;

use anyhow::{ensure, Context, Result};
use common::{Cluster, KuraProcess, API_KEY, SECRET};
use reqwest::{Method, StatusCode};

/// Submits a batch over `media/in/` with the `preview` profile; the answer.
async fn batch(gw: &common::GatewayClient, co: &str, force: bool) -> Result<serde_json::Value> {
    let resp = gw
        .http
        .post(format!("{co}/v1/jobs/batch"))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({ "prefix": "media/in/", "profile": "preview", "force": force }))
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::ACCEPTED,
        "batch: {}",
        resp.status()
    );
    Ok(resp.json().await?)
}

/// `(source, reason)` of each skipped object.
fn skipped_of(batch: &serde_json::Value) -> Vec<(String, String)> {
    batch["skipped"]
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
        .unwrap_or_default()
}

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
    for (key, ct) in [
        ("in/notes.txt", "text/plain"),
        ("in/cover.jpg", "image/jpeg"),
    ] {
        let resp = gw
            .object(Method::PUT, "media", key)
            .header("content-type", ct)
            .body("not a video")
            .send()
            .await?;
        ensure!(
            resp.status() == StatusCode::CREATED,
            "{key}: {}",
            resp.status()
        );
    }
    // b.mov was transcoded with the profile from its current version: a job left this.
    let etag = gw
        .object(Method::HEAD, "media", "in/b.mov")
        .send()
        .await?
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .context("no etag")?
        .trim_matches('"')
        .to_string();
    let marker = kura_transcoder::model::done_marker("in/b.mov", "preview", &etag);
    gw.put("media", &marker, b"{}".to_vec()).await?;
    let co = coordinator.url();
    let batch1 = batch(&gw, &co, false).await?;
    ensure!(batch1["total"] == 1, "{batch1:#}");
    let skipped = skipped_of(&batch1);
    ensure!(
        skipped
            .iter()
            .any(|(s, r)| s == "media/in/b.mov" && r.contains("already transcoded")),
        "{skipped:?}"
    );
    for key in ["in/notes.txt", "in/cover.jpg"] {
        ensure!(
            skipped
                .iter()
                .any(|(s, r)| *s == format!("media/{key}") && r.contains("not video or audio")),
            "{key}: {skipped:?}"
        );
    }
    ensure!(
        skipped
            .iter()
            .any(|(s, r)| *s == format!("media/{marker}") && r.contains(".hls")),
        "{skipped:?}"
    );
    // Forced, it transcodes b.mov again; everything else is skipped as before, and
    // a.mp4 too: the first batch's job for it has not ended (no worker yet).
    let forced = batch(&gw, &co, true).await?;
    ensure!(forced["total"] == 1, "{forced:#}");
    let forced_skipped = skipped_of(&forced);
    ensure!(forced_skipped.len() == skipped.len(), "{forced:#}");
    ensure!(
        forced_skipped
            .iter()
            .any(|(s, r)| s == "media/in/a.mp4" && r.contains("is transcoding it")),
        "{forced:#}"
    );
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
    // The outputs, the marker, the long key, two non-videos and b.mov.
    ensure!(skipped.len() == outputs.len() + 5, "{skipped:?}");

    // A worker probes what the type did not tell: a.mp4 holds 5 bytes of text, so its
    // job finds it is not media, and the batch reports it skipped, not failed.
    let worker = common::start_worker("w1", &co, &gateway, &data.path().join("worker")).await?;
    let id = batch1["id"].as_str().context("batch id")?;
    let view = batch_done(&gw, &co, id).await?;
    let skipped = skipped_of(&view);
    ensure!(
        view["failed"] == 0
            && skipped.len() == 1
            && skipped[0].0 == "media/in/a.mp4"
            && skipped[0].1.contains("not a recognised media file"),
        "{view:#}"
    );
    // The CLI follows the batch to its end and counts the object as not media.
    let (status, stdout, stderr) = common::kura_cli(
        &[
            "jobs",
            "batch",
            id,
            "--watch",
            "--gateway",
            &co,
            "--api-key",
            API_KEY,
        ],
        BATCH_TIMEOUT,
    )
    .await?;
    ensure!(
        status.success() && stdout.contains("0 failed") && stdout.contains("1 not media"),
        "kura jobs batch {id} --watch: {status}\nstdout: {stdout}\nstderr: {stderr}"
    );
    worker.stop().await?;
    coordinator.stop().await?;
    cluster.stop().await
}

/// Polls batch `id` until none of its jobs is queued or running; its view.
async fn batch_done(gw: &common::GatewayClient, co: &str, id: &str) -> Result<serde_json::Value> {
    let deadline = std::time::Instant::now() + BATCH_TIMEOUT;
    loop {
        let view: serde_json::Value = gw
            .http
            .get(format!("{co}/v1/batches/{id}"))
            .bearer_auth(API_KEY)
            .send()
            .await?
            .json()
            .await?;
        if view["queued"] == 0 && view["running"] == 0 {
            return Ok(view);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "batch {id} not done after {BATCH_TIMEOUT:?}: {view:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Longest wait for a batch of jobs that only probe 5-byte objects.
const BATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
