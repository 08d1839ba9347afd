//! `kura-cluster`: what every kura process shares.
//!
//! Nothing in this crate does I/O on its own except [`client`], the typed HTTP client
//! for the storage-node protocol, [`peers`], the one path calls to nodes take
//! (health, timeouts, metrics, quorum and hedging, and whether a node's chunk files
//! are on this machine), and [`layout`], where a node keeps its files. Everything else is plain data and pure functions:
//! chunk ids and their verification tree ([`ids`], [`verify`]), the hybrid logical clock
//! ([`hlc`]), object records and name rules ([`record`], [`names`]), HTTP byte ranges
//! ([`range`]), the cluster map ([`map`]), the shared secret check ([`auth`]), config file
//! loading ([`config`]) and log setup ([`telemetry`]).

pub mod auth;
pub mod blocks;
pub mod client;
pub mod config;
pub mod error;
pub mod failover;
pub mod hlc;
pub mod ids;
pub mod layout;
pub mod map;
pub mod names;
pub mod observe;
pub mod peers;
pub mod range;
pub mod record;
pub mod ring;
pub mod routes;
pub mod server;
pub mod signed;
pub mod telemetry;
pub mod verify;

pub use error::{Error, Result};
pub use ids::ChunkId;
