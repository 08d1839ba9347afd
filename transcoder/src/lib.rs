//! `kura-transcoder`: the job coordinator (a durable queue with leases and fencing
//! tokens) and the worker (pulls jobs, runs FFmpeg in a sandboxed child process).
//!
//! Not built yet: it arrives with the "Transcoding at scale" issue. The crate exists now
//! so that the workspace has its final shape and dependency direction.
