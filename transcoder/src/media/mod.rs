//! The media engine: probing, HLS video/audio encoding and poster images, on the system
//! FFmpeg libraries through `ffmpeg-next` (never the `ffmpeg` CLI).
//!
//! Everything here is blocking and CPU-bound; the worker runs it in a child process with
//! resource limits. Inputs are local files only: they are opened with
//! `protocol_whitelist=file` and a demuxer whitelist that leaves out every demuxer able
//! to open other files or devices (HLS, concat, DASH, IMF, image sequences, lavfi...), so
//! a crafted upload cannot make the engine read anything but the file it was given.
//!
//! **One timeline.** Every output timestamp is on the source's timeline, measured from
//! the container's start time (the earliest stream start), so the video segments of
//! ranges encoded by different processes, and the audio segments, line up in one
//! playlist without discontinuities. Every frame the ffmpeg CLI decodes is kept at the
//! time it has in the source (to 1/90000 s), so variable frame rates and gaps stay as
//! they were and the video has exactly the CLI's frame count; keyframes sit on the first
//! frame at or after each multiple of the GOP length, and segments start on the first
//! frame at or after each multiple of the segment length (always a keyframe). A segment
//! period without any frame (a gap in the source) has no segment. Decoding skips a
//! damaged picture and goes on, as the CLI does (see `decode`).
//!
//! Errors: [`MediaError::BadInput`] when the input itself is at fault (cannot be opened,
//! demuxed or decoded, no video, truncated): never worth a retry. [`MediaError::Limit`]
//! when a resource ran out (memory, disk space, file size limit). [`MediaError::Internal`]
//! for everything else (a missing encoder, an unwritable output directory, a bug).

mod audio;
mod decode;
mod graph;
mod images;
mod input;
mod probe;
pub mod quality;
mod segment;
mod video;

use std::path::PathBuf;
use std::sync::Once;

use serde::{Deserialize, Serialize};

use crate::profile::Rung;

pub use audio::encode_audio;
pub use images::poster_and_thumbnails;
pub use probe::{probe, MAX_DURATION_S, MAX_VIDEO_GAP_S};
pub use quality::RenditionQuality;
pub use video::{encode_video_range, encode_video_range_with_quality};

/// Why a media operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The input cannot be processed (corrupt, truncated, unsupported, unsafe).
    #[error("bad input: {0}")]
    BadInput(String),
    /// The input is not audio or video at all: no format FFmpeg recognises, or no
    /// audio or video stream in it.
    #[error("not media: {0}")]
    NotMedia(String),
    /// A resource limit was hit (memory, disk space, file size).
    #[error("limit: {0}")]
    Limit(String),
    /// Anything else (missing codec, output directory, a bug).
    #[error("internal: {0}")]
    Internal(String),
}

/// What [`probe`] found out about a source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeInfo {
    /// Duration in seconds: from the container start to the end of its last packet.
    pub duration_s: f64,
    /// Whether there is a video stream (false: an audio-only source; a source with
    /// neither is `BadInput`). Without video the picture fields are 0 and empty.
    pub has_video: bool,
    /// Whether there is a decodable audio stream.
    pub has_audio: bool,
    /// Display width: after the sample aspect ratio and the rotation.
    pub width: u32,
    /// Display height: after the sample aspect ratio and the rotation.
    pub height: u32,
    /// Degrees clockwise that the decoded picture must be turned for display (from the
    /// display matrix side data, else the `rotate` tag): 0, 90, 180 or 270.
    pub rotation: i32,
    /// Nominal frame rate of the video stream (the encoders' rate control assumes it;
    /// frames keep their own times, so a variable rate stays variable).
    pub fps: f64,
    /// Video codec name (`h264`, `mpeg2video`...).
    pub video_codec: String,
    /// Audio codec name, if any.
    pub audio_codec: Option<String>,
    /// Channels of the audio stream (0 without audio).
    pub audio_channels: u32,
    /// Container format name, as FFmpeg names its demuxer (`mov,mp4,m4a,3gp,3g2,mj2`).
    #[serde(default)]
    pub container: String,
    /// Duration of the video stream alone, in seconds (what the video segments add up
    /// to when the whole source is encoded).
    #[serde(default)]
    pub video_duration_s: f64,
}

/// One range of the source to encode into every rung of a ladder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoRangeSpec {
    /// Source file.
    pub input: PathBuf,
    /// Output root: segments go to `out_dir/v{height}p/seg{index:05}.ts`.
    pub out_dir: PathBuf,
    /// Start on the source timeline, seconds; a multiple of `segment_seconds`.
    pub start_s: f64,
    /// End on the source timeline (exclusive), seconds; `None` = to the end.
    pub end_s: Option<f64>,
    /// Index of the first segment this range writes (`start_s / segment_seconds`).
    pub first_segment: u32,
    /// Segment length, seconds (a multiple of `gop_seconds`).
    pub segment_seconds: f64,
    /// Keyframe interval, seconds, on the source timeline.
    pub gop_seconds: f64,
    /// Rungs to produce (even sizes; display orientation).
    pub rungs: Vec<Rung>,
    /// Threads for decoding and for each encoder.
    pub threads: usize,
    /// Whether `kura media-exec` measures each rung's quality while encoding
    /// ([`encode_video_range_with_quality`]); absent from a request: yes. Measuring
    /// decodes every rung once more, a cost the encode alone does not have (a 720p
    /// rung at x264's `veryfast` takes about a fifth more CPU time, most of it that
    /// decoding; see [`quality`]).
    #[serde(default = "measure_by_default")]
    pub quality: bool,
}

fn measure_by_default() -> bool {
    true
}

/// One segment file written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentOut {
    /// Rendition name: `v720p`, ... or `audio`.
    pub rendition: String,
    /// Segment number in its rendition's playlist.
    pub index: u32,
    /// File written.
    pub path: PathBuf,
    /// Real duration, seconds (from the packets' timestamps).
    pub duration_s: f64,
}

/// What `kura media-exec` answers to a video request: the segments written and each
/// rung's quality sums ([`encode_video_range_with_quality`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoRangeResult {
    /// Segment files written, every rung.
    pub segments: Vec<SegmentOut>,
    /// One entry per rung (absent from the answers of older children: empty).
    #[serde(default)]
    pub quality: Vec<RenditionQuality>,
}

/// Environment variable naming FFmpeg's log level (`quiet`, `error`, `warning`, `info`,
/// `debug`); `quiet` by default, as the engine reports failures through [`MediaError`].
pub const LOG_LEVEL_ENV: &str = "KURA_FFMPEG_LOG";

/// Initialises FFmpeg once per process (later calls do nothing) and sets its log level
/// (see [`LOG_LEVEL_ENV`]). Every function of this module calls it itself.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // ffmpeg::init only registers devices on FFmpeg 5; it cannot fail there.
        let _ = ffmpeg_next::init();
        use ffmpeg_next::util::log::Level;
        let level = match std::env::var(LOG_LEVEL_ENV).as_deref() {
            Ok("error") => Level::Error,
            Ok("warning") => Level::Warning,
            Ok("info") => Level::Info,
            Ok("verbose") => Level::Verbose,
            Ok("debug") => Level::Debug,
            _ => Level::Quiet,
        };
        ffmpeg_next::util::log::set_level(level);
    });
}

/// The rendition name of a rung: `v{height}p`.
pub fn rendition_name(rung: &Rung) -> String {
    format!("v{}p", rung.height)
}

/// The segment file name for `index`: `seg{index:05}.ts`.
pub fn segment_file_name(index: u32) -> String {
    format!("seg{index:05}.ts")
}

#[cfg(test)]
mod tests {
    use super::VideoRangeSpec;

    #[test]
    fn video_requests_measure_quality_unless_told_not_to() {
        let spec = |extra: &str| -> VideoRangeSpec {
            serde_json::from_str(&format!(
                r#"{{"input": "in.mp4", "out_dir": "out", "start_s": 0, "end_s": null,
                "first_segment": 0, "segment_seconds": 6, "gop_seconds": 2, "rungs": [],
                "threads": 1{extra}}}"#
            ))
            .unwrap()
        };
        assert!(spec("").quality);
        assert!(!spec(r#", "quality": false"#).quality);
    }
}
