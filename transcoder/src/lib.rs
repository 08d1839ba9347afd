//! `kura-transcoder`: turning uploaded video into streamable HLS.
//!
//! - [`coordinator`]: the durable job queue (RocksDB) that workers pull from with
//!   leases carrying fencing tokens; retries with backoff, bad inputs never retried,
//!   failing workers quarantined, priorities and batches.
//! - [`model`]: jobs, tasks, leases and the wire types between them; [`work`]: what a
//!   task does and what it leaves, typed and versioned.
//! - [`profile`]: named presets of the H.264/AAC HLS ladder.
//!
//! - [`media`]: the FFmpeg work (ffmpeg-next): probe, segment-aligned range encoding,
//!   audio, poster and thumbnails. Only ever run inside a `kura media-exec` child.
//! - [`worker`]: pulls tasks, runs [`media`] in sandboxed children, stores the outputs
//!   and writes the HLS playlists.

pub mod coordinator;
pub mod error;
pub mod gateway_client;
pub mod media;
pub mod model;
pub mod profile;
pub mod work;
pub mod worker;

pub use error::{Result, TranscodeError};
