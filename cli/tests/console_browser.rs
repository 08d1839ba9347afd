//! The web console, end to end: headless Chromium (Debian's, driven by playwright-core,
//! both installed by `scripts/install-deps.sh`) against a real `kura dev`, as an operator
//! and a content team use it (`tests/browser/console.js` lists the steps; screenshots of
//! every page land in `$KURA_CONSOLE_SCREENSHOTS` or the test's temporary directory).
//! And the credential check behind every page: each API the console calls refuses a
//! request without its credential, or with the other one.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::KuraProcess;
use reqwest::{Method, StatusCode};

/// Bound on the whole browser run (a transcode of a few seconds of video included).
const GUARD: Duration = Duration::from_secs(900);

/// The API key the dev cluster is started with.
const KEY: &str = "console-test-api-key-0123456789abc";

/// A real video: 8 s of 720p with audio.
const VIDEO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/media/video/hello-720p-8s.mp4"
);

/// `kura dev` in `dir`; its admin token and cluster secret (which it writes there).
async fn dev(dir: &Path) -> Result<(KuraProcess, String, String)> {
    let data = dir.join("kura-data");
    let args: Vec<OsString> = vec![
        "dev".into(),
        "--data".into(),
        data.clone().into(),
        "--api-key".into(),
        KEY.into(),
        "--s3-listen".into(),
        "127.0.0.1:0".into(),
    ];
    let process = KuraProcess::start("dev", args).await?;
    let read = |name: &str| -> Result<String> {
        Ok(std::fs::read_to_string(data.join(name))
            .with_context(|| format!("kura dev wrote no {name}"))?
            .trim()
            .to_string())
    };
    Ok((process, read("admin-token")?, read("cluster-secret")?))
}

/// Every API call the console makes, as (method, path, needs the admin token).
const CONSOLE_CALLS: &[(&str, &str, bool)] = &[
    ("GET", "/v1/buckets", false),
    ("GET", "/v1/o/console?prefix=&delimiter=/", false),
    ("HEAD", "/v1/o/console/clips/a.mp4", false),
    ("GET", "/v1/locate/console/clips/a.mp4", false),
    ("DELETE", "/v1/o/console/clips/a.mp4", false),
    ("POST", "/v1/sign", false),
    ("GET", "/v1/jobs", false),
    ("GET", "/v1/jobs/0", false),
    ("POST", "/v1/jobs", false),
    ("DELETE", "/v1/jobs/0", false),
    ("POST", "/v1/jobs/batch", false),
    ("POST", "/v1/uploads", false),
    ("GET", "/v1/admin/cluster", true),
    ("POST", "/v1/admin/nodes", true),
    ("PATCH", "/v1/admin/nodes/dev-1", true),
    ("PUT", "/v1/admin/rebalance", true),
    ("POST", "/v1/admin/repair", true),
    ("GET", "/v1/admin/traffic", true),
];

async fn refusals(base: &str, admin: &str) -> Result<()> {
    let http = reqwest::Client::new();
    for (method, path, needs_admin) in CONSOLE_CALLS {
        let wrong = if *needs_admin { KEY } else { admin };
        for credential in [None, Some("not-a-credential"), Some(wrong)] {
            let mut req = http
                .request(
                    Method::from_bytes(method.as_bytes())?,
                    format!("{base}{path}"),
                )
                .header("tus-resumable", "1.0.0")
                .json(&serde_json::json!({}));
            if let Some(c) = credential {
                req = req.bearer_auth(c);
            }
            let status = req.send().await?.status();
            ensure!(
                status == StatusCode::UNAUTHORIZED,
                "{method} {path} with {credential:?}: {status}, not 401"
            );
        }
    }
    // The console's page itself is public (it holds nothing) and locked down.
    let page = http.get(format!("{base}/console/")).send().await?;
    ensure!(
        page.status() == StatusCode::OK,
        "console: {}",
        page.status()
    );
    let csp = page.headers()["content-security-policy"].to_str()?;
    ensure!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "console CSP: {csp}"
    );
    Ok(())
}

#[tokio::test]
async fn an_operator_and_a_content_team_use_the_console() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("kura-console-").tempdir()?;
    let (dev, admin, secret) = dev(dir.path()).await?;
    let base = dev.url();
    refusals(&base, &admin).await?;
    // A node that is not in the map yet: the console adds it, then drains it.
    let extra = KuraProcess::start(
        "node-4",
        [
            OsString::from("node"),
            "--data".into(),
            dir.path().join("node-4").into(),
            "--node-id".into(),
            "dev-4".into(),
            "--zone".into(),
            "zone-4".into(),
            "--cluster-secret".into(),
            secret.into(),
        ],
    )
    .await?;
    let shots = std::env::var_os("KURA_CONSOLE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("screenshots"));
    let args: Vec<OsString> = vec![
        base.clone().into(),
        KEY.into(),
        admin.clone().into(),
        VIDEO.into(),
        shots.clone().into(),
        extra.addr().to_string().into(),
    ];
    let result = common::run_browser_script("console.js", args, GUARD).await?;
    ensure!(
        result["ok"] == true,
        "the console run failed (screenshots in {}): {}",
        shots.display(),
        serde_json::to_string_pretty(&result)?
    );
    println!("console steps: {}", result["steps"]);
    extra.stop().await?;
    dev.stop().await?;
    Ok(())
}
