//! The media engine on real files: probing the reference clips and broken files,
//! encoding ranges and audio into HLS segments, posters, the renditions' quality (PSNR,
//! SSIM). Outputs are checked with the `ffprobe`/`ffmpeg` CLIs (independent of the engine,
//! which uses the libraries).

use std::path::{Path, PathBuf};
use std::process::Command;

use kura_transcoder::media::{
    self, MediaError, ProbeInfo, RenditionQuality, SegmentOut, VideoRangeSpec,
};
use kura_transcoder::profile::{Profile, Rung};

mod ffcli;
use ffcli::{ffprobe, generate, num, run};

const VIDEO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/media/video");
const BROKEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/media/broken");

fn video(name: &str) -> PathBuf {
    Path::new(VIDEO).join(name)
}

fn progress_sink() -> impl FnMut(f64) {
    let mut last = 0.0;
    move |f: f64| {
        assert!((0.0..=1.0).contains(&f), "progress {f}");
        assert!(f >= last, "progress went back: {last} -> {f}");
        last = f;
    }
}

/// Checks one rendition's segments: consecutive indexes, files exist, each starts with
/// an IDR (ffprobe's first video frame is a keyframe, type I), has `size`.
fn check_segments(segs: &[&SegmentOut], first_index: u32, size: Option<(u32, u32)>) {
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(s.index, first_index + i as u32, "{segs:?}");
        assert!(s.path.is_file(), "{}", s.path.display());
        assert!(s.duration_s > 0.0, "{s:?}");
        let f = ffprobe(
            &[
                "-select_streams",
                "v",
                "-show_frames",
                "-read_intervals",
                "%+#1",
                "-show_entries",
                "frame=key_frame,pict_type,width,height",
            ],
            &s.path,
        );
        let frame = &f["frames"][0];
        assert_eq!(
            frame["key_frame"],
            1,
            "{} does not start with a keyframe",
            s.path.display()
        );
        assert_eq!(frame["pict_type"], "I", "{}", s.path.display());
        if let Some((w, h)) = size {
            assert_eq!(
                (frame["width"].as_u64(), frame["height"].as_u64()),
                (Some(w.into()), Some(h.into()))
            );
        }
    }
}

/// The segment files, in order, as one `concat:` URL (what a player plays in a row).
fn concat_url(segs: &[&SegmentOut]) -> String {
    let parts: Vec<String> = segs.iter().map(|s| s.path.display().to_string()).collect();
    format!("concat:{}", parts.join("|"))
}

/// Decodes the concatenation with the ffmpeg CLI: no error may be logged.
fn decodes_cleanly(url: &str) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i", url, "-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "decoding {url}: {err}"
    );
}

fn rendition<'a>(all: &'a [SegmentOut], name: &str) -> Vec<&'a SegmentOut> {
    let mut v: Vec<&SegmentOut> = all.iter().filter(|s| s.rendition == name).collect();
    v.sort_by_key(|s| s.index);
    v
}

fn total(segs: &[&SegmentOut]) -> f64 {
    segs.iter().map(|s| s.duration_s).sum()
}

#[test]
fn probes_the_reference_clips() {
    struct Clip {
        name: &'static str,
        size: (u32, u32),
        duration: f64,
        /// 0: no audio.
        channels: u32,
        fps: f64,
        codec: &'static str,
    }
    let clip = |name, size, duration, channels, fps, codec| Clip {
        name,
        size,
        duration,
        channels,
        fps,
        codec,
    };
    let table = [
        clip("bbb-720p-5s-aac51.mp4", (1280, 720), 5.31, 6, 25.0, "h264"),
        clip(
            "bikes-640x272-10s-noaudio.mp4",
            (640, 272),
            10.0,
            0,
            25.0,
            "h264",
        ),
        clip("hello-720p-8s.mp4", (1280, 720), 8.3, 2, 30.0, "h264"),
        clip(
            "hello-mpeg2-ps-8s.mpeg",
            (640, 480),
            8.3,
            2,
            29.97,
            "mpeg2video",
        ),
        clip("sample-1080p-1s.mp4", (1920, 1080), 0.98, 2, 23.976, "h264"),
    ];
    for Clip {
        name,
        size: (w, h),
        duration: dur,
        channels,
        fps,
        codec,
    } in table
    {
        let p: ProbeInfo = media::probe(&video(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(p.has_video, "{name}");
        assert_eq!((p.width, p.height), (w, h), "{name}: {p:?}");
        assert!((p.duration_s - dur).abs() < 0.1, "{name}: {p:?}");
        assert_eq!(p.has_audio, channels > 0, "{name}: {p:?}");
        assert_eq!(p.audio_channels, channels, "{name}: {p:?}");
        assert_eq!(p.audio_codec.is_some(), channels > 0, "{name}: {p:?}");
        assert!((p.fps - fps).abs() < 0.01, "{name}: {p:?}");
        assert_eq!(p.video_codec, codec, "{name}");
        assert_eq!(p.rotation, 0, "{name}");
        assert!(
            p.video_duration_s > 0.0 && p.video_duration_s <= p.duration_s + 0.05,
            "{name}: {p:?}"
        );
        // The wire form round-trips (the worker ships it between processes).
        let back: ProbeInfo = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}

#[test]
fn broken_inputs_are_bad_input() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(BROKEN)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert!(names.len() >= 4);
    for path in names {
        // An MP4 without a single stream is not media at all; the others are broken.
        let not_media = path.ends_with("no-streams.mp4");
        match (media::probe(&path), not_media) {
            (Err(MediaError::BadInput(msg)), false) | (Err(MediaError::NotMedia(msg)), true) => {
                eprintln!("{}: {msg}", path.display())
            }
            (other, _) => panic!("{}: {other:?}", path.display()),
        }
    }
}

#[test]
fn inputs_that_reference_other_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = video("bikes-640x272-10s-noaudio.mp4");
    let m3u8 = dir.path().join("list.m3u8");
    std::fs::write(
        &m3u8,
        format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{}\n#EXT-X-ENDLIST\n",
            target.display()
        ),
    )
    .unwrap();
    let ffconcat = dir.path().join("list.txt");
    std::fs::write(
        &ffconcat,
        format!("ffconcat version 1.0\nfile '{}'\n", target.display()),
    )
    .unwrap();
    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, "just some text, not a video\n").unwrap();
    // Lists that reference other files are refused; plain text is not media at all.
    for (p, refused) in [(&m3u8, true), (&ffconcat, true), (&text, false)] {
        let why = |e: &MediaError| match e {
            MediaError::BadInput(_) => refused,
            MediaError::NotMedia(_) => !refused,
            _ => false,
        };
        match media::probe(p) {
            Err(e) if why(&e) => eprintln!("{}: {e}", p.display()),
            other => panic!("{}: {other:?}", p.display()),
        }
        let spec = VideoRangeSpec {
            input: p.clone(),
            out_dir: dir.path().join("out"),
            start_s: 0.0,
            end_s: None,
            first_segment: 0,
            segment_seconds: 6.0,
            gop_seconds: 2.0,
            rungs: vec![Rung {
                width: 416,
                height: 234,
                video_kbps: 145,
            }],
            threads: 1,
            quality: true,
        };
        match media::encode_video_range(&spec, &mut |_| {}) {
            Err(e) if why(&e) => {}
            other => panic!("{}: {other:?}", p.display()),
        }
    }
    // A missing file is the caller's problem, not the input's.
    assert!(matches!(
        media::probe(&dir.path().join("nope.mp4")),
        Err(MediaError::Internal(_))
    ));
}

#[test]
fn whole_source_into_two_rungs() {
    let dir = tempfile::tempdir().unwrap();
    let src = video("bbb-720p-5s-aac51.mp4");
    let info = media::probe(&src).unwrap();
    let spec = VideoRangeSpec {
        input: src.clone(),
        out_dir: dir.path().to_path_buf(),
        start_s: 0.0,
        end_s: None,
        first_segment: 0,
        segment_seconds: 2.0,
        gop_seconds: 1.0,
        rungs: vec![
            Rung {
                width: 416,
                height: 234,
                video_kbps: 145,
            },
            Rung {
                width: 640,
                height: 360,
                video_kbps: 365,
            },
        ],
        threads: 2,
        quality: true,
    };
    let mut progress = progress_sink();
    let segs = media::encode_video_range(&spec, &mut progress).unwrap();
    for (name, size) in [("v234p", (416, 234)), ("v360p", (640, 360))] {
        let r = rendition(&segs, name);
        assert_eq!(r.len(), 3, "{segs:?}");
        check_segments(&r, 0, Some(size));
        assert!(r[0].path.starts_with(dir.path().join(name)));
        assert_eq!(r[0].path.file_name().unwrap(), "seg00000.ts");
        assert!(
            (r[0].duration_s - 2.0).abs() < 0.01 && (r[1].duration_s - 2.0).abs() < 0.01,
            "{r:?}"
        );
        assert!(
            (total(&r) - info.video_duration_s).abs() < 0.2,
            "{r:?} vs {info:?}"
        );
        decodes_cleanly(&concat_url(&r));
        let s = ffprobe(
            &[
                "-show_entries",
                "stream=codec_name,profile,pix_fmt,sample_aspect_ratio",
            ],
            &r[1].path,
        );
        assert_eq!(s["streams"][0]["codec_name"], "h264");
        assert_eq!(s["streams"][0]["pix_fmt"], "yuv420p");
        // Segment 1 starts at 2 s on the source timeline (+ the MPEG-TS muxing offset).
        let f = ffprobe(&["-show_entries", "format=start_time"], &r[1].path);
        let start = num(&f["format"]["start_time"]);
        assert!((start - 3.4).abs() < 0.05, "segment 1 starts at {start}");
    }
}

#[test]
fn ranges_concatenate_on_the_source_timeline() {
    let dir = tempfile::tempdir().unwrap();
    // 20 s at 29.97 fps with sparse source keyframes (every 300 frames), so the second
    // range seeks to a keyframe well before its start and drops the frames in between.
    let src = generate(
        dir.path(),
        "src.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30000/1001",
            "-t",
            "20",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "300",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let info = media::probe(&src).unwrap();
    assert!((info.fps - 29.97).abs() < 0.01);
    let out = dir.path().join("out");
    let spec = |start: f64, end: Option<f64>, first: u32| VideoRangeSpec {
        input: src.clone(),
        out_dir: out.clone(),
        start_s: start,
        end_s: end,
        first_segment: first,
        segment_seconds: 6.0,
        gop_seconds: 2.0,
        rungs: vec![Rung {
            width: 320,
            height: 240,
            video_kbps: 200,
        }],
        threads: 1,
        quality: true,
    };
    let (a, qa) =
        media::encode_video_range_with_quality(&spec(0.0, Some(12.0), 0), &mut progress_sink())
            .unwrap();
    let (b, qb) =
        media::encode_video_range_with_quality(&spec(12.0, None, 2), &mut progress_sink()).unwrap();
    let (a, b) = (rendition(&a, "v240p"), rendition(&b, "v240p"));
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(b.len(), 2, "{b:?}");
    let all: Vec<&SegmentOut> = a.iter().chain(b.iter()).copied().collect();
    check_segments(&all, 0, Some((320, 240)));
    assert!(
        (total(&all) - info.video_duration_s).abs() < 0.2,
        "{all:?} vs {info:?}"
    );
    // The second range's first segment starts at 12 s (+ the muxing offset), like the
    // first range's segments would have continued.
    let f = ffprobe(&["-show_entries", "format=start_time"], &b[0].path);
    let start = num(&f["format"]["start_time"]);
    assert!(
        (start - (12.012 + 1.4)).abs() < 0.05,
        "range 2 starts at {start}"
    );
    let url = concat_url(&all);
    decodes_cleanly(&url);
    // Every source frame is there exactly once, with regular timestamps across the joins.
    let p = ffprobe(
        &["-select_streams", "v", "-show_entries", "packet=pts_time"],
        Path::new(&url),
    );
    let mut pts: Vec<f64> = p["packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| num(&p["pts_time"]))
        .collect();
    pts.sort_by(f64::total_cmp);
    let c = ffprobe(
        &[
            "-count_frames",
            "-select_streams",
            "v",
            "-show_entries",
            "stream=nb_read_frames",
        ],
        &src,
    );
    assert_eq!(
        pts.len() as f64,
        num(&c["streams"][0]["nb_read_frames"]),
        "frame count"
    );
    for w in pts.windows(2) {
        assert!(
            (w[1] - w[0] - 1001.0 / 30000.0).abs() < 0.002,
            "gap between {} and {}",
            w[0],
            w[1]
        );
    }
    // The two ranges' quality sums merge into the figures of the whole rendition: every
    // frame measured once, and what the CLI measures on the concatenation.
    let merged = RenditionQuality::aggregate(qa.iter().chain(&qb));
    let q = &merged["v240p"];
    assert_eq!(q.frames as usize, pts.len(), "{qa:?} {qb:?}");
    let (psnr, ssim) = cli_quality(&all, &src, 320, 240);
    eprintln!(
        "two ranges: psnr {:.3} (CLI {psnr:.3}), ssim {:.5} (CLI {ssim:.5})",
        q.psnr_y().unwrap(),
        q.ssim().unwrap()
    );
    assert!((q.psnr_y().unwrap() - psnr).abs() < 0.05, "{q:?} vs {psnr}");
    assert!((q.ssim().unwrap() - ssim).abs() < 0.001, "{q:?} vs {ssim}");
}

#[test]
fn audio_is_stereo_aac_48k_in_segments() {
    let dir = tempfile::tempdir().unwrap();
    let src = video("bbb-720p-5s-aac51.mp4");
    let segs = media::encode_audio(&src, dir.path(), 2.0, 96, &mut progress_sink()).unwrap();
    let r = rendition(&segs, "audio");
    assert_eq!(r.len(), segs.len());
    assert_eq!(r.len(), 3, "{segs:?}");
    for (i, s) in r.iter().enumerate() {
        assert_eq!(s.index, i as u32);
        assert_eq!(
            s.path,
            dir.path().join("audio").join(format!("seg{i:05}.ts"))
        );
        let p = ffprobe(
            &[
                "-show_entries",
                "stream=codec_name,profile,channels,sample_rate",
            ],
            &s.path,
        );
        let st = &p["streams"][0];
        assert_eq!(st["codec_name"], "aac");
        assert_eq!(st["profile"], "LC");
        assert_eq!(st["channels"], 2);
        assert_eq!(st["sample_rate"], "48000");
    }
    assert!((total(&r) - 5.31).abs() < 0.2, "{r:?}");
    decodes_cleanly(&concat_url(&r));
    // A source without audio has no audio rendition.
    let none = media::encode_audio(
        &video("bikes-640x272-10s-noaudio.mp4"),
        dir.path(),
        2.0,
        96,
        &mut |_| {},
    )
    .unwrap();
    assert!(none.is_empty());
}

fn jpeg_size(path: &Path) -> (u64, u64) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..2],
        &[0xFF, 0xD8],
        "{} is not a JPEG",
        path.display()
    );
    assert_eq!(
        &bytes[bytes.len() - 2..],
        &[0xFF, 0xD9],
        "{} is not a whole JPEG",
        path.display()
    );
    let p = ffprobe(&["-show_entries", "stream=codec_name,width,height"], path);
    let st = &p["streams"][0];
    assert_eq!(st["codec_name"], "mjpeg");
    (
        st["width"].as_u64().unwrap(),
        st["height"].as_u64().unwrap(),
    )
}

#[test]
fn poster_and_thumbnail_strip() {
    let dir = tempfile::tempdir().unwrap();
    let src = video("sample-1080p-1s.mp4");
    let info = media::probe(&src).unwrap();
    let files =
        media::poster_and_thumbnails(&src, dir.path(), info.duration_s, info.rotation).unwrap();
    assert_eq!(
        files,
        vec![dir.path().join("poster.jpg"), dir.path().join("thumbs.jpg")]
    );
    assert_eq!(jpeg_size(&files[0]), (1920, 1080));
    assert_eq!(jpeg_size(&files[1]), (1600, 90));
}

/// The brightest corner of a grey picture: 0 top-left, 1 top-right, 2 bottom-left,
/// 3 bottom-right.
fn bright_corner(path: &Path, w: usize, h: usize) -> usize {
    let raw = run(Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-frames:v",
            "1",
            "-vf",
            &format!("scale={w}:{h}"),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "-",
        ]));
    let px = raw.as_bytes();
    let at = |x: usize, y: usize| px[y * w + x];
    let m = 4;
    let corners = [at(m, m), at(w - m, m), at(m, h - m), at(w - m, h - m)];
    (0..4).max_by_key(|&i| corners[i]).unwrap()
}

#[test]
fn odd_sized_rotated_source() {
    let dir = tempfile::tempdir().unwrap();
    // 321x241 with a white block in the top-left corner, then a rotation tag.
    let plain = generate(
        dir.path(),
        "plain.mp4",
        &["-f", "lavfi", "-i", "color=black:size=320x240:rate=25,drawbox=x=0:y=0:w=60:h=60:color=white:t=fill,scale=321:241", "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p"],
    );
    let rotated = generate(
        dir.path(),
        "rotated.mp4",
        &[
            "-i",
            plain.to_str().unwrap(),
            "-c",
            "copy",
            "-metadata:s:v:0",
            "rotate=90",
        ],
    );
    let p = media::probe(&rotated).unwrap();
    assert_eq!((p.width, p.height), (241, 321), "{p:?}");
    assert!(p.rotation == 90 || p.rotation == 270, "{p:?}");

    let rungs = Profile::named("preview")
        .unwrap()
        .rungs_for(p.width, p.height);
    let spec = VideoRangeSpec {
        input: rotated.clone(),
        out_dir: dir.path().join("out"),
        start_s: 0.0,
        end_s: None,
        first_segment: 0,
        segment_seconds: 6.0,
        gop_seconds: 2.0,
        rungs: rungs.clone(),
        threads: 1,
        quality: true,
    };
    let segs = media::encode_video_range(&spec, &mut |_| {}).unwrap();
    assert_eq!(segs.len(), rungs.len());
    let s = ffprobe(&["-show_entries", "stream=width,height"], &segs[0].path);
    let (w, h) = (
        s["streams"][0]["width"].as_u64().unwrap(),
        s["streams"][0]["height"].as_u64().unwrap(),
    );
    assert!(w % 2 == 0 && h % 2 == 0 && h > w, "{w}x{h}");
    assert_eq!((w as u32, h as u32), (rungs[0].width, rungs[0].height));

    // The poster is upright the way FFmpeg's own player logic turns it.
    let files =
        media::poster_and_thumbnails(&rotated, dir.path(), p.duration_s, p.rotation).unwrap();
    assert_eq!(jpeg_size(&files[0]), (240, 320));
    let expected = bright_corner(&rotated, 240, 320); // the CLI applies the display matrix
    assert_eq!(bright_corner(&files[0], 240, 320), expected);
    assert_eq!(bright_corner(&segs[0].path, 240, 320), expected);
}

/// The number after `key` in `text` (`y:33.21 ...` → 33.21).
fn number_after(text: &str, key: &str) -> f64 {
    let at = text
        .rfind(key)
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        + key.len();
    let rest = &text[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("bad number after {key} in {text}"))
}

/// Luma PSNR (dB) and luma SSIM of the rendition `segs` against `src` scaled to `w`×`h`,
/// by the ffmpeg CLI's `psnr` and `ssim` filters; both sides are re-timed from zero so
/// that frame k of one meets frame k of the other.
fn cli_quality(segs: &[&SegmentOut], src: &Path, w: u32, h: u32) -> (f64, f64) {
    let graph = format!(
        "[0:v]setpts=PTS-STARTPTS,split[d1][d2];\
         [1:v]scale={w}:{h},setpts=PTS-STARTPTS,split[r1][r2];\
         [d1][r1]psnr[o1];[d2][r2]ssim[o2]"
    );
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i", &concat_url(segs), "-i"])
        .arg(src)
        .args([
            "-lavfi", &graph, "-map", "[o1]", "-map", "[o2]", "-f", "null", "-",
        ])
        .output()
        .expect("run ffmpeg");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg psnr/ssim: {err}");
    let psnr = err
        .lines()
        .find(|l| l.contains("PSNR y:"))
        .unwrap_or_else(|| panic!("{err}"));
    let ssim = err
        .lines()
        .find(|l| l.contains("SSIM Y:"))
        .unwrap_or_else(|| panic!("{err}"));
    (number_after(psnr, "PSNR y:"), number_after(ssim, "SSIM Y:"))
}

fn rung(width: u32, height: u32, video_kbps: u32) -> Rung {
    Rung {
        width,
        height,
        video_kbps,
    }
}

#[test]
fn quality_of_two_rungs_matches_the_ffmpeg_cli() {
    let dir = tempfile::tempdir().unwrap();
    let src = video("bbb-720p-5s-aac51.mp4");
    let info = media::probe(&src).unwrap();
    let rungs = vec![rung(416, 234, 145), rung(640, 360, 365)];
    let spec = VideoRangeSpec {
        input: src.clone(),
        out_dir: dir.path().to_path_buf(),
        start_s: 0.0,
        end_s: None,
        first_segment: 0,
        segment_seconds: 2.0,
        gop_seconds: 1.0,
        rungs: rungs.clone(),
        threads: 2,
        quality: true,
    };
    let started = std::time::Instant::now();
    let (segs, quality) =
        media::encode_video_range_with_quality(&spec, &mut progress_sink()).unwrap();
    eprintln!("encoded and measured in {:?}", started.elapsed());
    assert_eq!(quality.len(), rungs.len(), "{quality:?}");
    let frames = (info.video_duration_s * info.fps).round() as u64;
    for (q, r) in quality.iter().zip(&rungs) {
        assert_eq!(q.rendition, format!("v{}p", r.height));
        assert_eq!((q.width, q.height), (r.width, r.height));
        assert!(q.frames.abs_diff(frames) <= 1, "{q:?}: {frames} frames");
        let (psnr, ssim) = (q.psnr_y().unwrap(), q.ssim().unwrap());
        let [_, u, v] = q.psnr_planes().unwrap();
        let yuv = q.psnr_yuv().unwrap();
        assert!((30.0..60.0).contains(&psnr), "{q:?}: psnr {psnr}");
        assert!(ssim > 0.85 && ssim <= 1.0, "{q:?}: ssim {ssim}");
        assert!(u > 30.0 && v > 30.0 && (yuv - (6.0 * psnr + u + v) / 8.0).abs() < 1e-9);
        // The wire form round-trips (the media child ships it to the worker).
        let back: RenditionQuality =
            serde_json::from_str(&serde_json::to_string(q).unwrap()).unwrap();
        assert_eq!(&back, q);

        let r_segs = rendition(&segs, &q.rendition);
        let (cli_psnr, cli_ssim) = cli_quality(&r_segs, &src, r.width, r.height);
        eprintln!(
            "{}: psnr {psnr:.3} dB (CLI {cli_psnr:.3}), yuv {yuv:.3}, ssim {ssim:.5} (CLI {cli_ssim:.5})",
            q.rendition
        );
        // Same frames, same scaler, same formulas: the same figures (the CLI rounds).
        assert!((psnr - cli_psnr).abs() < 0.05, "{q:?}: CLI psnr {cli_psnr}");
        assert!(
            (ssim - cli_ssim).abs() < 0.001,
            "{q:?}: CLI ssim {cli_ssim}"
        );
    }
}

#[test]
fn more_bits_measure_better() {
    let dir = tempfile::tempdir().unwrap();
    let src = video("bbb-720p-5s-aac51.mp4");
    let measure = |kbps: u32| {
        let spec = VideoRangeSpec {
            input: src.clone(),
            out_dir: dir.path().join(format!("k{kbps}")),
            start_s: 0.0,
            end_s: Some(2.0),
            first_segment: 0,
            segment_seconds: 2.0,
            gop_seconds: 1.0,
            rungs: vec![rung(640, 360, kbps)],
            threads: 2,
            quality: true,
        };
        let (segs, q) = media::encode_video_range_with_quality(&spec, &mut |_| {}).unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].frames, 50, "{q:?}");
        (q[0].psnr_y().unwrap(), q[0].ssim().unwrap())
    };
    let (low, high) = (measure(100), measure(2000));
    eprintln!("100 kbit/s: {low:?}; 2000 kbit/s: {high:?}");
    assert!(high.0 > low.0 + 3.0, "psnr {low:?} vs {high:?}");
    assert!(high.1 > low.1, "ssim {low:?} vs {high:?}");
    assert!(high.1 <= 1.0 && low.1 > 0.5);
}
