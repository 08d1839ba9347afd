//! Decode everything the ffmpeg CLI decodes, frame for frame.
//!
//! A corpus made here by the ffmpeg CLI (damaged, truncated, variable frame rate, one
//! and two frames, timestamp gaps, rotation, odd sizes, interlaced, no audio, audio
//! only) plus the real clips of `shared/media`. Each input is encoded the way a job
//! does it — probed, then cut into ranges encoded independently — and the segments of
//! every range, played in a row, must hold exactly the frames the CLI decodes from the
//! same file (`ffprobe -show_frames`), at the same times (the source's timing is kept,
//! variable frame rates included), and the audio must last as long as the CLI's.

use std::path::{Path, PathBuf};

use kura_transcoder::media::{self, ProbeInfo, SegmentOut, VideoRangeSpec};
use kura_transcoder::profile::Rung;

mod ffcli;
use ffcli::{ffprobe, generate, num};

const VIDEO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/media/video");

/// Ranges, segments and GOPs of one second: short clips still cross several range
/// boundaries, each encoded on its own as the worker does.
const RANGE_S: f64 = 1.0;

/// How far a frame's time may be from the CLI's (MPEG-TS keeps 90 kHz ticks).
const PTS_TOLERANCE_S: f64 = 0.001;

/// How far the audio's length may be from what the CLI decodes: two AAC frames at
/// 48 kHz, as the encoder rounds both its priming and the padding of the last frame up
/// to whole 1024-sample frames (the CLI's own AAC transcode of a 2.1 s tone lasts
/// 2.155 s).
const AUDIO_TOLERANCE_S: f64 = 2.0 * 1024.0 / 48_000.0;

/// The times of the frames the CLI decodes from stream `stream` (`v:0`, `a:0`) of
/// `file`, each with its duration, in decoding order.
fn cli_frames(file: &Path, stream: &str) -> Vec<(f64, f64)> {
    let f = ffprobe(
        &[
            "-select_streams",
            stream,
            "-show_entries",
            "frame=best_effort_timestamp_time,pkt_duration_time",
        ],
        file,
    );
    f["frames"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    (
                        num(&f["best_effort_timestamp_time"]),
                        num(&f["pkt_duration_time"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Encodes `src` as a job does: ranges of [`RANGE_S`], each on its own.
fn encode_in_ranges(src: &Path, info: &ProbeInfo, out: &Path) -> Vec<SegmentOut> {
    let height = 120;
    let width = (f64::from(info.width) * 120.0 / f64::from(info.height)).round() as u32 & !1;
    let ranges = (info.duration_s / RANGE_S).ceil().max(1.0) as u32;
    let mut all = Vec::new();
    for i in 0..ranges {
        let spec = VideoRangeSpec {
            input: src.to_path_buf(),
            out_dir: out.to_path_buf(),
            start_s: f64::from(i) * RANGE_S,
            end_s: (i + 1 < ranges).then(|| f64::from(i + 1) * RANGE_S),
            first_segment: i,
            segment_seconds: RANGE_S,
            gop_seconds: RANGE_S,
            rungs: vec![Rung {
                width: width.max(2),
                height,
                video_kbps: 150,
            }],
            threads: 1,
            quality: false,
        };
        let segs = media::encode_video_range(&spec, &mut |_| {})
            .unwrap_or_else(|e| panic!("{}: range {i}: {e}", src.display()));
        all.extend(segs);
    }
    all.sort_by_key(|s| s.index);
    all
}

/// The video frames of `segs` played in a row: their times, sorted.
fn output_frames(segs: &[SegmentOut]) -> Vec<f64> {
    let parts: Vec<String> = segs.iter().map(|s| s.path.display().to_string()).collect();
    let url = format!("concat:{}", parts.join("|"));
    let p = ffprobe(
        &["-select_streams", "v", "-show_entries", "packet=pts_time"],
        Path::new(&url),
    );
    let mut pts: Vec<f64> = p["packets"]
        .as_array()
        .map(|a| a.iter().map(|p| num(&p["pts_time"])).collect())
        .unwrap_or_default();
    pts.sort_by(f64::total_cmp);
    pts
}

/// Checks one input of the corpus (see the module documentation).
fn same_as_the_cli(src: &Path) {
    let name = src.file_name().unwrap().to_string_lossy().into_owned();
    let dir = tempfile::tempdir().unwrap();
    let info = media::probe(src).unwrap_or_else(|e| panic!("{name}: probe: {e}"));
    let want = cli_frames(src, "v:0");
    if !info.has_video {
        assert!(want.is_empty(), "{name}: the CLI decodes video: {want:?}");
        assert!(info.has_audio, "{name}: {info:?}");
        return audio_same_as_the_cli(src, &name, dir.path());
    }
    let mut want_t: Vec<f64> = want.iter().map(|f| f.0).collect();
    want_t.sort_by(f64::total_cmp);
    let got = output_frames(&encode_in_ranges(src, &info, dir.path()));
    eprintln!(
        "{name}: the CLI decodes {} frames over {:.3} s, kura wrote {} (probe: {:.3} s at {:.3} fps)",
        want_t.len(),
        want_t.last().unwrap_or(&0.0) - want_t.first().unwrap_or(&0.0),
        got.len(),
        info.duration_s,
        info.fps
    );
    if std::env::var_os("KURA_CORPUS_DEBUG").is_some() {
        eprintln!("{name}: kura {got:?}\n{name}: cli {want_t:?}");
    }
    assert_eq!(got.len(), want_t.len(), "{name}: frame count");
    for (i, (g, w)) in got.iter().zip(&want_t).enumerate() {
        let (g, w) = (g - got[0], w - want_t[0]);
        assert!(
            (g - w).abs() <= PTS_TOLERANCE_S,
            "{name}: frame {i} at {g:.4} s, the CLI's at {w:.4} s"
        );
    }
    if info.has_audio {
        audio_same_as_the_cli(src, &name, dir.path());
    }
}

/// The audio rendition lasts what the CLI decodes.
fn audio_same_as_the_cli(src: &Path, name: &str, dir: &Path) {
    let want = cli_frames(src, "a:0");
    let (Some(first), Some(last)) = (want.first(), want.last()) else {
        panic!("{name}: the CLI decodes no audio");
    };
    let want_s = last.0 + last.1 - first.0;
    let segs = media::encode_audio(src, &dir.join("a"), RANGE_S, 64, &mut |_| {})
        .unwrap_or_else(|e| panic!("{name}: audio: {e}"));
    let got_s: f64 = segs.iter().map(|s| s.duration_s).sum();
    eprintln!("{name}: audio {got_s:.3} s, the CLI's {want_s:.3} s");
    assert!(
        (got_s - want_s).abs() <= AUDIO_TOLERANCE_S,
        "{name}: audio lasts {got_s:.3} s, the CLI's {want_s:.3} s"
    );
}

/// A test pattern of `secs` seconds at `rate` fps and `size`.
fn pattern(size: &str, rate: &str, secs: &str) -> String {
    format!("testsrc2=size={size}:rate={rate}:duration={secs}")
}

/// Overwrites `len` bytes of `path` at `at` with a fixed pseudo-random pattern.
fn damage(path: &Path, at: usize, len: usize) {
    let mut data = std::fs::read(path).unwrap();
    let mut x: u32 = 0x2545_f491;
    for b in &mut data[at..at + len] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    std::fs::write(path, data).unwrap();
}

fn h264_ts_with_audio(dir: &Path, name: &str) -> PathBuf {
    generate(
        dir,
        name,
        &[
            "-f",
            "lavfi",
            "-i",
            &pattern("320x240", "25", "4"),
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "12",
            "-c:a",
            "aac",
            "-f",
            "mpegts",
        ],
    )
}

#[test]
fn variable_frame_rate_phone_clip_keeps_every_frame_and_its_time() {
    let dir = tempfile::tempdir().unwrap();
    // 41 frames: 20 at 30 fps, then 21 at 15 fps (a phone in low light), timestamps
    // jittered by up to 4 ms, in 90 kHz ticks as phones write them; with audio.
    let times = "setpts='(if(lt(N,20),N/30,20/30+(N-20)/15)+0.004*sin(N*1.7))/TB'";
    let src = generate(
        dir.path(),
        "vfr.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            &pattern("320x240", "30", "2"),
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=2.1",
            "-vf",
            &format!("select='lt(n,41)',{times}"),
            "-fps_mode",
            "passthrough",
            "-enc_time_base",
            "1/90000",
            "-video_track_timescale",
            "90000",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
        ],
    );
    assert_eq!(cli_frames(&src, "v:0").len(), 41);
    same_as_the_cli(&src);
}

#[test]
fn one_and_two_frame_clips() {
    let dir = tempfile::tempdir().unwrap();
    let one = generate(
        dir.path(),
        "one.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            &pattern("320x240", "25", "1"),
            "-frames:v",
            "1",
            "-c:v",
            "libx264",
        ],
    );
    same_as_the_cli(&one);
    let two = generate(
        dir.path(),
        "two.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            &pattern("320x240", "25", "1"),
            "-frames:v",
            "2",
            "-c:v",
            "libx264",
        ],
    );
    same_as_the_cli(&two);
}

#[test]
fn two_frame_mpeg2_clip_with_a_damaged_first_picture() {
    let dir = tempfile::tempdir().unwrap();
    let src = generate(
        dir.path(),
        "damaged.mpg",
        &[
            "-f",
            "lavfi",
            "-i",
            &pattern("320x240", "25", "1"),
            "-frames:v",
            "2",
            "-c:v",
            "mpeg2video",
            "-f",
            "mpeg",
        ],
    );
    // Garbage in the first slice of the first picture: the CLI reports it corrupt and
    // decodes it anyway.
    let data = std::fs::read(&src).unwrap();
    let picture = find(&data, &[0, 0, 1, 0], 0).expect("a picture start code");
    let slice = find(&data, &[0, 0, 1, 1], picture).expect("a slice start code");
    damage(&src, slice + 8, 400);
    assert_eq!(cli_frames(&src, "v:0").len(), 2);
    same_as_the_cli(&src);
}

fn find(data: &[u8], what: &[u8], from: usize) -> Option<usize> {
    data[from..]
        .windows(what.len())
        .position(|w| w == what)
        .map(|i| i + from)
}

#[test]
fn damaged_and_truncated_transport_streams() {
    let dir = tempfile::tempdir().unwrap();
    let damaged = h264_ts_with_audio(dir.path(), "damaged.ts");
    let len = std::fs::metadata(&damaged).unwrap().len() as usize;
    damage(&damaged, len / 2, 3000);
    same_as_the_cli(&damaged);
    let cut = h264_ts_with_audio(dir.path(), "cut.ts");
    let data = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &data[..data.len() * 6 / 10]).unwrap();
    same_as_the_cli(&cut);
}

#[test]
fn timestamp_gap_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    // 2 s at 10 fps, the second half 3 s later (a camera paused): 5 s, 20 frames.
    let src = generate(
        dir.path(),
        "gap.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            &pattern("320x240", "10", "2"),
            "-vf",
            "setpts='PTS+if(gte(N,10),3/TB,0)'",
            "-fps_mode",
            "passthrough",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    same_as_the_cli(&src);
}

#[test]
fn rotated_odd_sized_and_interlaced() {
    let dir = tempfile::tempdir().unwrap();
    let rotated = generate(
        dir.path(),
        "rotated.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            &pattern("320x240", "30", "2"),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-metadata:s:v",
            "rotate=90",
        ],
    );
    same_as_the_cli(&rotated);
    let odd = generate(
        dir.path(),
        "odd.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            &pattern("321x241", "24", "2"),
            "-c:v",
            "ffv1",
        ],
    );
    same_as_the_cli(&odd);
    let interlaced = generate(
        dir.path(),
        "interlaced.mpg",
        &[
            "-f",
            "lavfi",
            "-i",
            &pattern("720x576", "25", "2"),
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=2",
            "-vf",
            "interlace",
            "-c:v",
            "mpeg2video",
            "-flags",
            "+ildct+ilme",
            "-top",
            "1",
            "-c:a",
            "mp2",
            "-f",
            "mpeg",
        ],
    );
    same_as_the_cli(&interlaced);
}

#[test]
fn audio_only_sources_are_their_audio() {
    let dir = tempfile::tempdir().unwrap();
    for (name, codec) in [
        ("podcast.m4a", "aac"),
        ("song.mp3", "libmp3lame"),
        ("voice.ogg", "libopus"),
    ] {
        let src = generate(
            dir.path(),
            name,
            &[
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=300:duration=3.3",
                "-c:a",
                codec,
            ],
        );
        let info = media::probe(&src).unwrap();
        assert!(!info.has_video && info.has_audio, "{name}: {info:?}");
        assert_eq!(
            (info.width, info.height, info.video_duration_s),
            (0, 0, 0.0)
        );
        assert!((info.duration_s - 3.3).abs() < 0.1, "{name}: {info:?}");
        same_as_the_cli(&src);
    }
}

#[test]
fn reference_clips() {
    for name in [
        "bbb-720p-5s-aac51.mp4",
        "bikes-640x272-10s-noaudio.mp4",
        "hello-mpeg2-ps-8s.mpeg",
        "sample-1080p-1s.mp4",
    ] {
        same_as_the_cli(&Path::new(VIDEO).join(name));
    }
}
