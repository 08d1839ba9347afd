//! `kura-load`: load and abusive clients against a kura gateway, every answer checked.
//!
//! - `mixed`: N connections (one HTTP/1.1 connection per client task) of PUT / GET /
//!   range GET / HEAD / list for a fixed time; every body is compared with the bytes
//!   written; counts 5xx, other errors and wrong bytes, latency percentiles per
//!   operation, and the peak RSS of the given processes.
//! - `idle`: a well-behaved client's latency alone, then while N idle connections (spread
//!   over several loopback source addresses, as many outside clients would be) and
//!   slowloris clients (half a header, one byte now and then) are held open.
//!
//! Prints one JSON object; `benches/e2e/edge.sh` runs it and writes BENCHMARKS.md rows.

mod idle;
mod mixed;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Load and abusive clients against a kura gateway")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

/// What every mode needs to reach the gateway.
#[derive(clap::Args, Clone)]
struct Target {
    /// Gateway base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API key.
    #[arg(long, env = "KURA_API_KEY", hide_env_values = true)]
    api_key: String,
    /// Bucket to use (created by the first PUT).
    #[arg(long, default_value = "load")]
    bucket: String,
    /// Processes whose peak RSS to report, as NAME=PID (repeatable).
    #[arg(long = "pid")]
    pids: Vec<String>,
    /// Seed of sizes, content and choices.
    #[arg(long, default_value_t = 20261203)]
    seed: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mixed PUT/GET/range/HEAD/list load, every byte checked.
    Mixed(mixed::MixedArgs),
    /// A well-behaved client's latency alone and beside idle and slowloris connections.
    Idle(idle::IdleArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let report = match args.cmd {
        Cmd::Mixed(a) => mixed::run(a).await?,
        Cmd::Idle(a) => idle::run(a).await?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
