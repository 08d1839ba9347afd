//! Shared harness for multi-process tests: runs `kura` subcommands as real child
//! processes on free loopback ports, waits for `GET /health`, kills them with SIGKILL,
//! restarts them with the same arguments (same data directory), and cleans up on drop.
//!
//! [`Cluster`] runs three nodes in three zones and a gateway in front of them, and
//! [`GatewayClient`] talks to that gateway's public API. [`Transcoding`] adds a
//! `kura coordinator` and `kura worker`s to such a cluster; the `ffmpeg`/`ffprobe`
//! helpers check the HLS it produces. [`OpsCluster`] is a cluster with the admin API on,
//! for membership, rebalance, repair and GC tests.
//!
//! Each process's stdout and stderr go to one log file (appended across restarts, with a
//! header per start). The log is printed when a [`KuraProcess`] is dropped without a clean
//! [`KuraProcess::stop`] — a panic or an early `?` return — so a failing test shows what
//! the server said.
//!
//! One submodule per concern, everything re-exported here so tests name it as
//! `common::X`:
//! - `process`: [`KuraProcess`], ports, timeouts, signals, `/proc` helpers;
//! - `cluster`: `kura node` arguments and clients, [`Cluster`];
//! - `client`: [`GatewayClient`] and the gateway's answers;
//! - `raw_http`: [`raw_http`], for requests a client library would not send;
//! - `data`: seeds, pseudo-random content, [`TestObject`] data sets, [`Reader`]s;
//! - `transcode`: [`Transcoding`], sample media, jobs;
//! - `media`: `ffmpeg`/`ffprobe` helpers and [`check_hls`];
//! - `ops`: [`OpsCluster`] and chunk placement;
//! - `netns`: [`Lan`], machines as network namespaces on one switch;
//! - `pg_server`: [`PgServer`], a real PostgreSQL server (shared with the transcoder's
//!   store suites).

// Each test binary uses only part of the harness.
#![allow(dead_code)]

mod browser;
mod client;
mod cluster;
mod data;
mod media;
mod netns;
mod ops;
#[path = "../../../transcoder/tests/stores/pg_server.rs"]
mod pg_server;
mod process;
mod raw_http;
mod transcode;

// A test binary that uses nothing from a submodule would see its re-export as unused.
#[allow(unused_imports)]
pub use browser::*;
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use cluster::*;
#[allow(unused_imports)]
pub use data::*;
#[allow(unused_imports)]
pub use media::*;
#[allow(unused_imports)]
pub use netns::*;
#[allow(unused_imports)]
pub use ops::*;
#[allow(unused_imports)]
pub use pg_server::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use raw_http::*;
#[allow(unused_imports)]
pub use transcode::*;

/// The cluster secret test nodes are started with (32 characters).
pub const SECRET: &str = "kura-test-secret-0123456789abcde";
const _: () = assert!(SECRET.len() == 32);

/// The API key test gateways accept.
pub const API_KEY: &str = "kura-test-api-key-0123456789abcdef";
