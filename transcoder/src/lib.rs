//! `kura-transcoder`: turning uploaded video into streamable HLS.
//!
//! - [`coordinator`]: the durable job queue (RocksDB) that workers pull from with
//!   leases carrying fencing tokens; retries with backoff, bad inputs never retried,
//!   failing workers quarantined, priorities and batches.
//! - [`model`]: jobs, tasks, leases and the wire types between them.
//! - [`profile`]: named presets of the H.264/AAC HLS ladder.
//!
//! The worker (FFmpeg in a sandboxed child process, chunked parallel encoding) is being
//! built on top of this; see ARCHITECTURE.md.

pub mod coordinator;
pub mod error;
pub mod gateway_client;
pub mod model;
pub mod profile;

pub use error::{Result, TranscodeError};
