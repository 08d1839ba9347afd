//! A viewer's browser uploads straight to kura: headless Chromium (Debian's) runs
//! tus-js-client on an application's page (its own loopback origin, allowed by the
//! gateway's CORS setting) with only a signed upload token — no API key — and the object
//! appears byte-identical. Clients installed by `scripts/install-deps.sh`.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{Cluster, API_KEY};
use sha2::Digest as _;

/// Bound on the browser run (launching Chromium takes a few seconds).
const GUARD: Duration = Duration::from_secs(180);

/// Bytes the page uploads (several tus pieces of 1 MiB).
const BYTES: usize = 3_000_000;

#[tokio::test]
async fn a_browser_uploads_with_only_a_signed_token() -> Result<()> {
    let cluster = Cluster::start_with_gateway_args(&["--cors-origins", "*"]).await?;
    let base = cluster.gateway.url();
    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/v1/upload-tokens"))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({"bucket": "browser", "prefix": "viewers/7/", "expires_in": 600}))
        .send()
        .await?
        .json()
        .await?;
    let token = reply["token"].as_str().context("token")?;
    let bytes = BYTES.to_string();
    let result = common::run_browser_script(
        "tus_upload.js",
        [base.as_str(), token, "viewers/7/clip.mp4", bytes.as_str()],
        GUARD,
    )
    .await?;
    ensure!(result["ok"] == true, "the browser upload failed: {result}");
    let got = cluster
        .client()?
        .get("browser", "viewers/7/clip.mp4")
        .await?
        .context("the uploaded object is missing")?;
    ensure!(
        got.len() == BYTES,
        "{} bytes stored, {BYTES} sent",
        got.len()
    );
    let sha = hex::encode(sha2::Sha256::digest(&got));
    ensure!(
        result["sha256"] == sha.as_str(),
        "stored bytes differ from the browser's: {result}"
    );
    cluster.stop().await
}
