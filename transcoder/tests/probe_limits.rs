//! Inputs whose timestamps claim absurd durations or gaps are refused as `BadInput` at
//! probe, before any task plan is built from them. The inputs are made by the ffmpeg
//! CLI from a test pattern: small files, fast to encode, with real packets at the
//! timestamps given.

use std::path::{Path, PathBuf};

use kura_transcoder::media::{self, MediaError};

mod ffcli;
use ffcli::generate;

fn refused(path: &Path, why: &str) {
    match media::probe(path) {
        Err(MediaError::BadInput(msg)) => {
            eprintln!("{}: {msg}", path.display());
            assert!(msg.contains(why), "{msg:?} does not say {why:?}");
        }
        other => panic!("{}: {other:?}", path.display()),
    }
}

/// 20 frames of 160x120; the last 10 moved `offset_s` later.
fn with_jump(dir: &Path, name: &str, offset_s: &str) -> PathBuf {
    let pts = format!("setpts='PTS+if(gte(N,10),{offset_s}/TB,0)'");
    generate(
        dir,
        name,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=10:d=2",
            "-vf",
            &pts,
            "-fps_mode",
            "passthrough",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    )
}

#[test]
fn a_packet_a_billion_seconds_in_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    refused(&with_jump(dir.path(), "billion.mkv", "1e9"), "gap");
}

#[test]
fn a_gap_over_ten_minutes_is_refused_and_one_under_is_not() {
    let dir = tempfile::tempdir().unwrap();
    refused(&with_jump(dir.path(), "gap.mkv", "601"), "gap");
    let ok = with_jump(dir.path(), "pause.mkv", "540");
    let info = media::probe(&ok).unwrap_or_else(|e| panic!("a 9-minute pause: {e}"));
    assert!(info.duration_s > 540.0, "{}", info.duration_s);
}

#[test]
fn more_than_twelve_hours_is_refused() {
    // 90 frames 9 minutes apart: no gap over the limit, 13.4 hours in all.
    let dir = tempfile::tempdir().unwrap();
    let path = generate(
        dir.path(),
        "long.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=1:d=90",
            "-vf",
            "setpts='N*540/TB'",
            "-fps_mode",
            "passthrough",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    refused(&path, "lasts");
}
