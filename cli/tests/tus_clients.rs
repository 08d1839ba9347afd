//! Resumable uploads with a real tus client (tuspy, installed by
//! `scripts/install-deps.sh`) against real processes: the client is SIGKILLed mid-upload
//! and a new one resumes from the durable offset; the gateway it used is SIGKILLed and
//! the upload continues through another gateway; a browser-style upload with only a
//! signed upload token; a gateway SIGKILLed in the middle of a PATCH body. Every final
//! object is byte-identical to the file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use bytes::Bytes;
use common::{
    metric_value, random_bytes, test_seed, Cluster, KuraProcess, API_KEY, CHUNK, SECRET, ZONES,
};
use futures::SinkExt as _;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Bound on waiting for a client to reach a point it must reach.
const GUARD: Duration = Duration::from_secs(120);

/// Pieces of 1 MiB: an upload of a few MiB is many PATCHes.
const PIECE: usize = 1 << 20;

/// Multi-process tests share two cores: one cluster at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn python() -> PathBuf {
    std::env::var_os("KURA_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/kura-test-venv"))
        .join("bin/python")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tus/tuspy_client.py")
}

fn tuspy(endpoint: &str, file: &Path, key: &str, extra: &[&str]) -> Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg(script())
        .arg(endpoint)
        .arg(file)
        .arg("tus-bucket")
        .arg(key)
        .arg(PIECE.to_string())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn()
        .context("starting tuspy (scripts/install-deps.sh installs it)")
}

/// Reads the client's lines until `until`; returns the upload URL it printed.
async fn follow(child: &mut tokio::process::Child, until: &str) -> Result<String> {
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut url = None;
    tokio::time::timeout(GUARD, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(u) = line.strip_prefix("url ") {
                url = Some(u.to_string());
            }
            if line == until {
                return Ok(());
            }
        }
        anyhow::bail!("the client ended before printing {until:?}")
    })
    .await
    .with_context(|| format!("the client never printed {until:?}"))??;
    url.context("the client printed no URL")
}

async fn finish(mut child: tokio::process::Child) -> Result<()> {
    follow(&mut child, "done").await?;
    let out = child.wait_with_output().await?;
    ensure!(
        out.status.success(),
        "tuspy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `HEAD` of an upload: its durable offset.
async fn offset(url: &str) -> Result<u64> {
    let r = reqwest::Client::new()
        .head(url)
        .header("tus-resumable", "1.0.0")
        .bearer_auth(API_KEY)
        .send()
        .await?;
    ensure!(
        r.status() == reqwest::StatusCode::OK,
        "HEAD {url}: {}",
        r.status()
    );
    Ok(r.headers()["upload-offset"].to_str()?.parse()?)
}

/// A second gateway over the cluster's nodes.
async fn another_gateway(cluster: &Cluster) -> Result<KuraProcess> {
    let spec = cluster
        .nodes
        .iter()
        .zip(ZONES)
        .map(|(n, zone)| format!("{}={}@{zone}", n.name(), n.addr()))
        .collect::<Vec<_>>()
        .join(",");
    KuraProcess::start(
        "gateway-2",
        [
            "gateway",
            "--nodes",
            &spec,
            "--api-keys",
            API_KEY,
            "--cluster-secret",
            SECRET,
        ],
    )
    .await
}

#[tokio::test]
async fn a_killed_client_resumes_from_the_durable_offset() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start().await?;
    let data = random_bytes(test_seed(), 12 * PIECE + 12_345);
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("video.bin");
    std::fs::write(&file, &data)?;
    let endpoint = cluster.gateway.url();
    let pause = (5 * PIECE).to_string();
    let mut first = tuspy(
        &endpoint,
        &file,
        "killed/video.bin",
        &["--api-key", API_KEY, "--pause-at", &pause],
    )?;
    let url = follow(&mut first, "paused").await?;
    first.kill().await?;
    ensure!(
        offset(&url).await? == 5 * PIECE as u64,
        "the durable offset is not where the client stopped"
    );
    let second = tuspy(
        &endpoint,
        &file,
        "killed/video.bin",
        &["--api-key", API_KEY, "--url", &url],
    )?;
    finish(second).await?;
    let got = cluster
        .client()?
        .get("tus-bucket", "killed/video.bin")
        .await?
        .context("missing")?;
    ensure!(got[..] == data[..], "the resumed object differs");
    cluster.stop().await
}

#[tokio::test]
async fn an_upload_continues_through_another_gateway_after_its_gateway_is_killed() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start().await?;
    let other = another_gateway(&cluster).await?;
    let data = random_bytes(test_seed() ^ 1, 9 * PIECE + 777);
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("clip.bin");
    std::fs::write(&file, &data)?;
    let pause = (4 * PIECE).to_string();
    let mut first = tuspy(
        &cluster.gateway.url(),
        &file,
        "moved/clip.bin",
        &["--api-key", API_KEY, "--pause-at", &pause],
    )?;
    let url = follow(&mut first, "paused").await?;
    first.kill().await?;
    cluster.gateway.kill().await?;
    // Same upload, another gateway: the state is in the cluster.
    let path = url.split_once("/v1/uploads/").context("upload URL")?.1;
    let moved = format!("{}/v1/uploads/{path}", other.url());
    ensure!(
        offset(&moved).await? == 4 * PIECE as u64,
        "the other gateway sees another offset"
    );
    let resumed = tuspy(
        &other.url(),
        &file,
        "moved/clip.bin",
        &["--api-key", API_KEY, "--url", &moved],
    )?;
    finish(resumed).await?;
    let got = common::GatewayClient::new(other.addr())?
        .get("tus-bucket", "moved/clip.bin")
        .await?
        .context("missing")?;
    ensure!(got[..] == data[..], "the object differs");
    cluster.gateway.restart().await?;
    let status = other.stop().await?;
    ensure!(status.success(), "gateway-2 exited with {status}");
    cluster.stop().await
}

/// A PATCH of `body` at `at`; its new offset.
async fn patch(url: &str, at: usize, body: &[u8]) -> Result<u64> {
    let r = reqwest::Client::new()
        .patch(url)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", at.to_string())
        .header("content-type", "application/offset+octet-stream")
        .bearer_auth(API_KEY)
        .body(body.to_vec())
        .send()
        .await?;
    ensure!(
        r.status() == reqwest::StatusCode::NO_CONTENT,
        "PATCH {url}: {}",
        r.status()
    );
    Ok(r.headers()["upload-offset"].to_str()?.parse()?)
}

/// Chunks the gateway has stored (W of N) so far.
async fn chunks_stored(gateway: &KuraProcess) -> Result<f64> {
    let text = common::GatewayClient::new(gateway.addr())?
        .metrics()
        .await?;
    Ok(metric_value(&text, "kura_gateway_chunk_put_seconds_count").unwrap_or(0.0))
}

#[tokio::test]
async fn a_gateway_killed_mid_patch_loses_only_the_piece_in_flight() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start().await?;
    let other = another_gateway(&cluster).await?;
    let chunk = usize::try_from(CHUNK)?;
    let data = random_bytes(test_seed() ^ 2, 3 * chunk + 4321);
    let meta = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/uploads", cluster.gateway.url()))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", data.len().to_string())
        .header(
            "upload-metadata",
            format!("bucket {},key {}", meta("tus-bucket"), meta("cut/clip.bin")),
        )
        .bearer_auth(API_KEY)
        .send()
        .await?;
    ensure!(
        r.status() == reqwest::StatusCode::CREATED,
        "create: {}",
        r.status()
    );
    let path = r.headers()["location"].to_str()?.to_string();
    let first = format!("{}{path}", cluster.gateway.url());
    ensure!(patch(&first, 0, &data[..chunk]).await? == CHUNK);
    // The next PATCH sends a chunk and a half and then holds its body open: the
    // gateway is killed once that chunk is durable, in the middle of the body.
    let before = chunks_stored(&cluster.gateway).await?;
    let (mut tx, rx) = futures::channel::mpsc::channel::<std::io::Result<Bytes>>(4);
    let request = reqwest::Client::new()
        .patch(&first)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", CHUNK.to_string())
        .header("content-type", "application/offset+octet-stream")
        .bearer_auth(API_KEY)
        .body(reqwest::Body::wrap_stream(rx))
        .send();
    let in_flight = tokio::spawn(request);
    for piece in data[chunk..chunk + chunk * 3 / 2].chunks(64 * 1024) {
        tx.send(Ok(Bytes::copy_from_slice(piece))).await?;
    }
    tokio::time::timeout(GUARD, async {
        while chunks_stored(&cluster.gateway).await? < before + 1.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::Ok(())
    })
    .await
    .context("the in-flight piece never stored a chunk")??;
    cluster.gateway.kill().await?;
    let answer = in_flight.await?;
    ensure!(
        answer.as_ref().map_or(true, |r| !r.status().is_success()),
        "the cut PATCH was acknowledged: {answer:?}"
    );
    drop(tx);
    // The other gateway sees only the acknowledged piece; the upload continues there.
    let moved = format!("{}{path}", other.url());
    ensure!(
        offset(&moved).await? == CHUNK,
        "the offset counts bytes of the piece cut off"
    );
    ensure!(patch(&moved, chunk, &data[chunk..]).await? == data.len() as u64);
    let got = common::GatewayClient::new(other.addr())?
        .get("tus-bucket", "cut/clip.bin")
        .await?
        .context("missing")?;
    ensure!(got[..] == data[..], "the object differs");
    cluster.gateway.restart().await?;
    let status = other.stop().await?;
    ensure!(status.success(), "gateway-2 exited with {status}");
    cluster.stop().await
}

#[tokio::test]
async fn a_signed_upload_token_is_all_a_client_needs() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start().await?;
    let endpoint = cluster.gateway.url();
    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("{endpoint}/v1/upload-tokens"))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({"bucket": "tus-bucket", "prefix": "viewers/42/", "expires_in": 600}))
        .send()
        .await?
        .json()
        .await?;
    let token = reply["token"].as_str().context("token")?.to_string();
    let data = random_bytes(test_seed() ^ 2, 3 * PIECE + 5);
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("phone.mp4");
    std::fs::write(&file, &data)?;
    let up = tuspy(
        &endpoint,
        &file,
        "viewers/42/phone.mp4",
        &["--token", &token],
    )?;
    finish(up).await?;
    let got = cluster
        .client()?
        .get("tus-bucket", "viewers/42/phone.mp4")
        .await?
        .context("missing")?;
    ensure!(got[..] == data[..], "the object differs");
    // The same token cannot upload outside its prefix.
    let mut outside = tuspy(
        &endpoint,
        &file,
        "viewers/43/phone.mp4",
        &["--token", &token],
    )?;
    let out = tokio::time::timeout(GUARD, async {
        let status = outside.wait().await?;
        anyhow::Ok(status)
    })
    .await??;
    ensure!(
        !out.success(),
        "an upload outside the token's prefix succeeded"
    );
    ensure!(
        cluster
            .client()?
            .get("tus-bucket", "viewers/43/phone.mp4")
            .await?
            .is_none(),
        "an object outside the token's prefix exists"
    );
    cluster.stop().await
}
