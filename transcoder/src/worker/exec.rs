//! The child side of [`super::child`]: `kura media-exec` reads one request on stdin,
//! does it with `crate::media`, and answers in JSON lines on stdout.

use std::io::{Read, Write};

use super::child::{ChildLine, MediaRequest};
use crate::media::{self, MediaError};
use crate::model::{Failure, FailureClass};

/// Smallest progress step reported, so a long encode prints ~100 lines, not millions.
const PROGRESS_STEP: f64 = 0.01;

fn emit(line: &ChildLine) {
    if let Ok(s) = serde_json::to_string(line) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    }
}

fn classify(e: MediaError) -> Failure {
    let (class, message) = match e {
        MediaError::BadInput(m) => (FailureClass::BadInput, m),
        MediaError::NotMedia(m) => (FailureClass::NotMedia, m),
        MediaError::Limit(m) => (FailureClass::Limit, m),
        MediaError::Internal(m) => (FailureClass::Internal, m),
    };
    Failure { class, message }
}

/// Runs the request read from stdin; returns the process exit code.
pub fn main() -> i32 {
    // Before the request (and the file it names) is looked at.
    if let Err(e) = super::sandbox::lock_down() {
        emit(&ChildLine::Error(Failure {
            class: FailureClass::Internal,
            message: format!("cannot sandbox the media child: {e}"),
        }));
        return 2;
    }
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        emit(&ChildLine::Error(Failure {
            class: FailureClass::Internal,
            message: format!("reading request: {e}"),
        }));
        return 2;
    }
    let request: MediaRequest = match serde_json::from_slice(&input) {
        Ok(r) => r,
        Err(e) => {
            emit(&ChildLine::Error(Failure {
                class: FailureClass::Internal,
                message: format!("bad request: {e}"),
            }));
            return 2;
        }
    };
    media::init();
    let mut last = -1.0f64;
    let mut progress = |p: f64| {
        if p - last >= PROGRESS_STEP || p >= 1.0 {
            last = p;
            emit(&ChildLine::Progress(p.clamp(0.0, 1.0)));
        }
    };
    let result = match request {
        MediaRequest::Probe { input } => {
            media::probe(&input).map(|p| serde_json::to_value(p).unwrap_or_default())
        }
        MediaRequest::Video(spec) => {
            let encoded = if spec.quality {
                media::encode_video_range_with_quality(&spec, &mut progress)
            } else {
                // Not measured: no quality sums, so the job reports no figures.
                media::encode_video_range(&spec, &mut progress).map(|s| (s, Vec::new()))
            };
            encoded.map(|(segments, quality)| {
                serde_json::to_value(media::VideoRangeResult { segments, quality })
                    .unwrap_or_default()
            })
        }
        MediaRequest::Audio {
            input,
            out_dir,
            segment_seconds,
            kbps,
        } => media::encode_audio(&input, &out_dir, segment_seconds, kbps, &mut progress)
            .map(|s| serde_json::to_value(s).unwrap_or_default()),
        MediaRequest::SandboxCheck { connect, parent } => {
            Ok(serde_json::to_value(super::sandbox::check(connect, parent)).unwrap_or_default())
        }
        MediaRequest::Images {
            input,
            out_dir,
            duration_s,
            rotation,
        } => media::poster_and_thumbnails(&input, &out_dir, duration_s, rotation)
            .map(|s| serde_json::to_value(s).unwrap_or_default()),
    };
    match result {
        Ok(v) => {
            emit(&ChildLine::Ok(v));
            0
        }
        Err(e) => {
            emit(&ChildLine::Error(classify(e)));
            1
        }
    }
}
