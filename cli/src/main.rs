//! `kura`: one binary for every kura role.

mod cmd;

use std::process::ExitCode;

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
    Gateway(Box<cmd::gateway::GatewayArgs>),
    /// Run the transcoding job coordinator.
    Coordinator(cmd::coordinator::CoordinatorArgs),
    /// Run a transcoding worker.
    Worker(cmd::worker::WorkerArgs),
    /// (internal) The sandboxed media child a worker starts; reads a request on stdin.
    #[command(hide = true)]
    MediaExec,
    /// Submit, follow, list and cancel transcoding jobs.
    Jobs(cmd::jobs::JobsArgs),
    /// Print a signed URL that anyone can read until it expires.
    Url(cmd::jobs::UrlArgs),
    /// Operate the cluster: status, nodes, rebalance, repair.
    Admin(cmd::admin::AdminArgs),
    /// Run a local cluster in one process, for a laptop.
    Dev(cmd::dev::DevArgs),
    #[command(flatten)]
    Client(cmd::client::ClientCommand),
}

/// Raises the soft open-file limit to the hard one: a server holds a descriptor per
/// connection and per open chunk file, and the usual soft limit (1024) would refuse
/// connections long before `kura_cluster::server::DEFAULT_MAX_CONNECTIONS`.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if let Command::MediaExec = cli.command {
        // No runtime and no log subscriber: the child speaks JSON lines on stdout only.
        let code = kura_transcoder::worker::exec::main();
        return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
    }
    telemetry::init_logging(cli.log_format, &cli.log)?;
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Node(args) => cmd::node::run(args).await?,
            Command::Gateway(args) => cmd::gateway::run(*args).await?,
            Command::Coordinator(args) => cmd::coordinator::run(args).await?,
            Command::Worker(args) => cmd::worker::run(args).await?,
            Command::MediaExec => unreachable!("handled before the runtime starts"),
            Command::Dev(args) => cmd::dev::run(args).await?,
            Command::Client(c) => return Ok(cmd::client::run(c).await),
            Command::Jobs(a) => return Ok(cmd::jobs::run_jobs(a).await),
            Command::Url(a) => return Ok(cmd::jobs::run_url(a).await),
            Command::Admin(a) => return Ok(cmd::admin::run(a).await),
        }
        anyhow::Ok(ExitCode::SUCCESS)
    })?;
    // A client command that failed mid-upload from stdin may leave a blocking read of
    // stdin behind; do not wait for it.
    runtime.shutdown_background();
    Ok(code)
}
