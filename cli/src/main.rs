//! `kura`: one binary for every kura role.

mod cmd;

use clap::{Parser, Subcommand};
use kura_cluster::telemetry::{self, LogFormat};

/// kura (蔵): distributed media storage and transcoding.
#[derive(Parser)]
#[command(name = "kura", version, about)]
struct Cli {
    /// Log line format: `human` or `json`.
    #[arg(long, global = true, env = "KURA_LOG_FORMAT", default_value = "human")]
    log_format: LogFormat,
    /// Log filter in `RUST_LOG` syntax (e.g. `info`, `kura_storage_node=debug`).
    #[arg(long, global = true, env = "KURA_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a storage node.
    Node(cmd::node::NodeArgs),
    /// Run the public gateway.
    Gateway(cmd::gateway::GatewayArgs),
    /// Run a local cluster in one process, for a laptop.
    Dev(cmd::dev::DevArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format, &cli.log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Node(args) => cmd::node::run(args).await,
            Command::Gateway(args) => cmd::gateway::run(args).await,
            Command::Dev(args) => cmd::dev::run(args).await,
        }
    })
}
