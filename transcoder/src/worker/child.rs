//! Running media work in a child process (`kura media-exec`), fenced in by limits.
//!
//! The parent writes one [`MediaRequest`] as JSON to the child's stdin; the child answers
//! with JSON lines on stdout: `{"progress": f}` while it works, then exactly one
//! `{"ok": ...}` or `{"error": {"class", "message"}}`. A hostile or broken input can at
//! worst kill the child: the worker sees a failed task and carries on.
//!
//! Limits: a wall-clock deadline (the parent kills the child), `RLIMIT_DATA` (heap and
//! other private writable memory), `RLIMIT_FSIZE` (largest file it may write: the kernel
//! stops the child with SIGXFSZ), `RLIMIT_NOFILE`, `RLIMIT_CPU` as a backstop, death with
//! its parent (`PR_SET_PDEATHSIG`: a SIGKILLed worker leaves no orphan encoding), and
//! FFmpeg's protocol whitelist set to `file` inside the child, so a crafted playlist
//! cannot open URLs or other files.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::model::{Failure, FailureClass};

/// What the child is asked to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MediaRequest {
    /// Probe a file.
    Probe {
        /// Local file.
        input: PathBuf,
    },
    /// Encode a time range of the video into HLS segments for several rungs.
    Video(crate::media::VideoRangeSpec),
    /// Encode the whole audio track into HLS segments.
    Audio {
        /// Local file.
        input: PathBuf,
        /// Output folder.
        out_dir: PathBuf,
        /// Segment length.
        segment_seconds: f64,
        /// AAC bitrate.
        kbps: u32,
    },
    /// Report what the sandbox stops (see `super::sandbox::check`).
    SandboxCheck {
        /// An address to try to reach over TCP.
        connect: Option<std::net::SocketAddr>,
        /// The worker's pid, whose environment must be unreadable.
        parent: u32,
    },
    /// Poster and thumbnail strip.
    Images {
        /// Local file.
        input: PathBuf,
        /// Output folder.
        out_dir: PathBuf,
        /// Source duration.
        duration_s: f64,
        /// Rotation to apply.
        rotation: i32,
    },
}

/// One line the child writes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildLine {
    /// Work done so far, 0..1.
    Progress(f64),
    /// The result.
    Ok(serde_json::Value),
    /// A classified failure.
    Error(Failure),
}

/// Limits on one child.
#[derive(Clone, Copy, Debug)]
pub struct ChildLimits {
    /// Wall-clock limit.
    pub wall: Duration,
    /// `RLIMIT_DATA` in bytes.
    pub memory_bytes: u64,
    /// `RLIMIT_FSIZE` in bytes.
    pub file_bytes: u64,
    /// Niceness the child runs at (0, or [`REGULAR_SLOT_NICE`]).
    pub nice: i32,
}

/// Niceness of the media children of a worker's regular slots (an express slot's run at
/// 0). When both want the cores, the express slot's light task — what makes a short
/// upload playable — gets about nine tenths of them (CFS weights 1024 against 110)
/// instead of half, and on a one-machine install the storage nodes and the gateway are
/// served before the encodes. With nothing else to run, niceness changes nothing.
pub const REGULAR_SLOT_NICE: i32 = 10;

/// Default memory limit of a media child: 3 GiB covers decoding 4K H.264/HEVC with
/// frame threads and six x264 encoders, and stops a decompression bomb long before the
/// machine swaps.
pub const DEFAULT_MEMORY_BYTES: u64 = 3 * 1024 * 1024 * 1024;

/// Default largest output file: 2 GiB, far above any 6 s segment at ladder bitrates.
pub const DEFAULT_FILE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Open files a child may hold: inputs, one output per rung, FFmpeg's own.
const CHILD_MAX_FILES: u64 = 256;

/// Bytes of the child's stderr kept for error messages.
const STDERR_KEEP: usize = 8 * 1024;

fn fail(class: FailureClass, message: String) -> Failure {
    Failure { class, message }
}

/// Runs `request` in `program media-exec`, reporting progress, within `limits`.
pub async fn run(
    program: &std::path::Path,
    request: &MediaRequest,
    limits: ChildLimits,
    progress: &(dyn Fn(f64) + Sync),
) -> Result<serde_json::Value, Failure> {
    let internal = |m: String| fail(FailureClass::Internal, m);
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg("media-exec")
        .env_clear()
        .env("KURA_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let (mem, fsize, nice) = (limits.memory_bytes, limits.file_bytes, limits.nice);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let cpu_secs = limits.wall.as_secs().max(1).saturating_mul(cores);
    // SAFETY: the closure runs between fork and exec and only calls unshare(2),
    // setrlimit(2), setpriority(2) and prctl(2), which are async-signal-safe; it
    // allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            use nix::sys::resource::{setrlimit, Resource};
            super::sandbox::enter_namespaces();
            setrlimit(Resource::RLIMIT_DATA, mem, mem).map_err(std::io::Error::from)?;
            setrlimit(Resource::RLIMIT_FSIZE, fsize, fsize).map_err(std::io::Error::from)?;
            setrlimit(Resource::RLIMIT_NOFILE, CHILD_MAX_FILES, CHILD_MAX_FILES)
                .map_err(std::io::Error::from)?;
            // A CPU-time backstop for a child whose parent died (the wall clock is kept
            // by the parent): generous enough for every core for the whole wall limit.
            setrlimit(Resource::RLIMIT_CPU, cpu_secs, cpu_secs).map_err(std::io::Error::from)?;
            // SAFETY: setpriority on this process only; no pointers.
            if nice != 0 && libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // If the worker dies (even by SIGKILL), its child dies with it.
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| internal(format!("cannot start {}: {e}", program.display())))?;
    let body = serde_json::to_vec(request).map_err(|e| internal(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&body)
            .await
            .map_err(|e| internal(format!("writing to media child: {e}")))?;
    }
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| internal("no stdout".into()))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| internal("no stderr".into()))?;
    let stderr_task = tokio::spawn(async move {
        // Only the tail is kept: a child writing gigabytes to stderr costs the worker
        // at most twice STDERR_KEEP.
        let mut kept = Vec::with_capacity(2 * STDERR_KEEP);
        let mut piece = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut piece).await {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&piece[..n]);
            if kept.len() > 2 * STDERR_KEEP {
                kept.drain(..kept.len() - STDERR_KEEP);
            }
        }
        let start = kept.len().saturating_sub(STDERR_KEEP);
        String::from_utf8_lossy(&kept[start..]).into_owned()
    });
    let read = async {
        let mut lines = BufReader::new(stdout).lines();
        let mut outcome = None;
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<ChildLine>(&line) {
                Ok(ChildLine::Progress(p)) => progress(p),
                Ok(ChildLine::Ok(v)) => outcome = Some(Ok(v)),
                Ok(ChildLine::Error(f)) => outcome = Some(Err(f)),
                Err(_) => tracing::debug!(line, "unexpected line from media child"),
            }
        }
        outcome
    };
    let outcome = match tokio::time::timeout(limits.wall, read).await {
        Ok(o) => o,
        Err(_) => {
            let _ = child.kill().await;
            return Err(fail(
                FailureClass::Limit,
                format!(
                    "media work exceeded its time limit of {} s",
                    limits.wall.as_secs()
                ),
            ));
        }
    };
    let status = child.wait().await.map_err(|e| internal(e.to_string()))?;
    let stderr = stderr_task.await.unwrap_or_default();
    if let Some(o) = outcome {
        return o;
    }
    use std::os::unix::process::ExitStatusExt;
    Err(match status.signal() {
        Some(s) if s == nix::sys::signal::Signal::SIGXFSZ as i32 => fail(
            FailureClass::Limit,
            format!("media work exceeded the output file size limit of {fsize} bytes"),
        ),
        Some(s) => internal(format!("media child died of signal {s}: {}", stderr.trim())),
        None => internal(format!(
            "media child exited with {status} and no result: {}",
            stderr.trim()
        )),
    })
}
