//! Browser tests: a Node script under `tests/browser/` drives Debian's Chromium with
//! playwright-core (both installed by `scripts/install-deps.sh`) and prints one JSON line
//! as its last output, which is the test's result.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};

/// The pinned npm packages (`$KURA_TEST_NODE`, default `/var/tmp/kura-test-node`).
fn node_modules() -> PathBuf {
    std::env::var_os("KURA_TEST_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/kura-test-node"))
        .join("node_modules")
}

/// Runs `tests/browser/<script>` with `args` (at most `guard`); returns the JSON value
/// of its last output line.
pub async fn run_browser_script<I, S>(
    script: &str,
    args: I,
    guard: Duration,
) -> Result<serde_json::Value>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(script);
    let run = tokio::process::Command::new("node")
        .arg(&path)
        .args(args)
        .env("NODE_PATH", node_modules())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(guard, run)
        .await
        .with_context(|| format!("{script} timed out"))?
        .context("starting node (scripts/install-deps.sh installs it)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .last()
        .with_context(|| format!("no output from {script}"))?;
    serde_json::from_str(line)
        .with_context(|| format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
}
