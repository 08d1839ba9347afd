//! The HTTP server settings every service takes (`kura node`, `kura gateway`,
//! `kura coordinator`): flags and `KURA_*` variables over the config file's `[server]`
//! table over the defaults in `kura_cluster::server`.

use anyhow::anyhow;
use clap::Args;
use kura_cluster::server::{ServerLimits, ServerSettings};

/// Timeouts and connection limits of a service's HTTP server.
#[derive(Args, Debug, Default)]
pub struct ServerArgs {
    /// Seconds a client may take to send a request head; also how long an idle
    /// keep-alive connection stays open [default: 20].
    #[arg(long, env = "KURA_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Seconds a socket read or write may make no progress (a stalled upload body, a
    /// download nobody reads) before the connection is dropped [default: 60].
    #[arg(long, env = "KURA_IO_TIMEOUT_SECS")]
    pub io_timeout_secs: Option<u64>,
    /// Open connections accepted at once [default: 16384].
    #[arg(long, env = "KURA_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open connections from one client address [default: 1024].
    #[arg(long, env = "KURA_MAX_CONNECTIONS_PER_CLIENT")]
    pub max_connections_per_client: Option<usize>,
    /// Seconds a shutdown waits for requests in flight [default: 10].
    #[arg(long, env = "KURA_DRAIN_TIMEOUT_SECS")]
    pub drain_timeout_secs: Option<u64>,
}

impl ServerArgs {
    /// These over the file's `[server]` table over the defaults.
    pub fn resolve(self, file: Option<ServerSettings>) -> anyhow::Result<ServerLimits> {
        let given = ServerSettings {
            header_timeout_secs: self.header_timeout_secs,
            io_timeout_secs: self.io_timeout_secs,
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            drain_timeout_secs: self.drain_timeout_secs,
        };
        given
            .or(file.unwrap_or_default())
            .limits()
            .map_err(|e| anyhow!("server settings: {e}"))
    }
}
