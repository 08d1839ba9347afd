//! `kura dev`: a local cluster in one process. Until the gateway exists it runs one
//! storage node; it keeps its data (and its generated secret) under `--data`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use kura_cluster::auth::generate_secret;
use kura_storage_node::config::{DEFAULT_SCRUB_BYTES_PER_SEC, DEFAULT_SCRUB_INTERVAL_SECS};
use kura_storage_node::NodeConfig;

/// File under the data directory holding the generated dev secret.
const SECRET_FILE: &str = "dev-secret";

/// Flags of `kura dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Data directory; kept across restarts.
    #[arg(long, env = "KURA_DATA", default_value = "./kura-data")]
    pub data: PathBuf,
    /// Listen address.
    #[arg(long, env = "KURA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Secret to use; generated and saved under the data directory if not given.
    #[arg(long, env = "KURA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

fn load_or_create_secret(data: &Path, given: Option<String>) -> anyhow::Result<String> {
    let path = data.join(SECRET_FILE);
    if let Some(s) = given {
        return Ok(s);
    }
    if let Ok(s) = std::fs::read_to_string(&path) {
        return Ok(s.trim().to_string());
    }
    let s = generate_secret();
    std::fs::write(&path, &s).with_context(|| format!("writing {}", path.display()))?;
    Ok(s)
}

/// Runs the dev cluster until Ctrl-C / SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating {}", args.data.display()))?;
    let secret = load_or_create_secret(&args.data, args.api_key)?;
    let config = NodeConfig {
        data: args.data.join("node-1"),
        listen: args.listen,
        node_id: "node-1".into(),
        zone: "zone-a".into(),
        cluster_secret: secret.clone(),
        scrub_bytes_per_sec: DEFAULT_SCRUB_BYTES_PER_SEC,
        scrub_interval_secs: DEFAULT_SCRUB_INTERVAL_SECS,
    };
    let running = kura_storage_node::start(config).await?;
    let url = running.url();
    println!("kura dev: storage node at {url} (data in {})", args.data.display());
    println!("  secret:  {secret}");
    println!("  try:     echo hello > /tmp/c && curl -X PUT --data-binary @/tmp/c \\");
    println!("             -H 'Authorization: Bearer {secret}' \\");
    println!("             {url}/v1/chunks/$(b3sum --no-names /tmp/c 2>/dev/null || echo '<blake3 hex>')");
    println!("  health:  curl {url}/health");
    super::shutdown_signal().await;
    running.shutdown().await?;
    Ok(())
}
