//! Opening inputs safely, choosing streams, and the timing, orientation and error helpers
//! shared by the probe and the encoders.

use std::ffi::CStr;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use ff::format::context::Input;
use ff::{codec, decoder, ffi, format, media, Rational, Stream};
use ffmpeg_next as ff;

use super::MediaError;

/// Demuxers never used on an upload: they open other files, devices or network
/// resources named inside the input (playlists, concat lists, manifests, image
/// sequences, filter graphs, scripts). Demuxers flagged `AVFMT_NOFILE` (which open
/// their own resources, e.g. devices) are left out as well.
const BLOCKED_DEMUXERS: &[&str] = &[
    "hls",
    "applehttp",
    "concat",
    "dash",
    "imf",
    "image2",
    "lavfi",
    "sdp",
    "rtsp",
    "rtp",
    "avisynth",
    "vapoursynth",
    "tee",
];

/// Unreadable packets skipped (the demuxer resyncs) before an input counts as corrupt.
pub(crate) const MAX_UNREADABLE_PACKETS: u32 = 1000;

/// Decode errors tolerated (corrupt packets skipped) before an input counts as broken.
pub(crate) const MAX_DECODE_ERRORS: u32 = 50;

/// The comma-separated demuxer whitelist handed to FFmpeg (`format_whitelist`).
fn allowed_demuxers() -> &'static str {
    static LIST: OnceLock<String> = OnceLock::new();
    LIST.get_or_init(|| {
        let mut names = Vec::new();
        let mut opaque = std::ptr::null_mut();
        loop {
            // SAFETY: av_demuxer_iterate walks FFmpeg's static demuxer table; the
            // returned pointers and their names live for the whole process.
            let name = unsafe {
                let f = ffi::av_demuxer_iterate(&mut opaque);
                if f.is_null() {
                    break;
                }
                if (*f).flags & ffi::AVFMT_NOFILE != 0 || (*f).name.is_null() {
                    continue;
                }
                CStr::from_ptr((*f).name).to_string_lossy().into_owned()
            };
            if !is_blocked(&name) {
                names.push(name);
            }
        }
        names.join(",")
    })
}

fn is_blocked(format_name: &str) -> bool {
    format_name
        .split(',')
        .any(|n| BLOCKED_DEMUXERS.contains(&n))
}

/// Opens `path` for demuxing: local file protocol only, safe demuxers only.
pub(crate) fn open_input(path: &Path) -> Result<Input, MediaError> {
    super::init();
    let meta = std::fs::metadata(path)
        .map_err(|e| MediaError::Internal(format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(MediaError::BadInput(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.len() == 0 {
        return Err(MediaError::NotMedia("the input is empty".into()));
    }
    let abs = std::fs::canonicalize(path)
        .map_err(|e| MediaError::Internal(format!("cannot resolve {}: {e}", path.display())))?;
    let abs_str = abs
        .to_str()
        .ok_or_else(|| MediaError::Internal(format!("path {} is not UTF-8", abs.display())))?;
    // An explicit `file:` URL: nothing in the name can select another protocol.
    let url = format!("file:{abs_str}");
    let mut opts = ff::Dictionary::new();
    opts.set("protocol_whitelist", "file");
    opts.set("format_whitelist", allowed_demuxers());
    match format::input_with_dictionary(&url, opts) {
        Ok(ictx) => {
            let name = ictx.format().name().to_string();
            if is_blocked(&name) {
                return Err(MediaError::BadInput(format!(
                    "input format {name} is not accepted (it can reference other files)"
                )));
            }
            Ok(ictx)
        }
        Err(e) if is_limit(&e) => Err(MediaError::Limit(format!("opening the input: {e}"))),
        Err(e) => Err(MediaError::BadInput(match sniff_format(&abs) {
            Some(name) if is_blocked(&name) => format!(
                "input format {name} is not accepted (playlists and lists can reference other files)"
            ),
            Some(name) => format!("cannot open the input as {name}: {e}"),
            None => return Err(MediaError::NotMedia(format!("not a recognised media file: {e}"))),
        })),
    }
}

/// The demuxer FFmpeg would pick for the first 64 KiB of `path`, for error messages.
fn sniff_format(path: &Path) -> Option<String> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut file = std::fs::File::open(path).ok()?;
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return None,
        }
    }
    buf.truncate(len);
    buf.resize(len + ffi::AVPROBE_PADDING_SIZE as usize, 0);
    let name = std::ffi::CString::new(path.to_string_lossy().as_bytes()).ok()?;
    let pd = ffi::AVProbeData {
        filename: name.as_ptr(),
        buf: buf.as_mut_ptr(),
        buf_size: len as i32,
        mime_type: std::ptr::null(),
    };
    let mut score = 0;
    // SAFETY: `pd` points at live buffers (with the zero padding FFmpeg requires) for
    // the duration of the call; the result is a static demuxer description.
    unsafe {
        let f = ffi::av_probe_input_format3(&pd, 1, &mut score);
        // A guess from the file name extension alone names nothing.
        if f.is_null() || (*f).name.is_null() || score <= ffi::AVPROBE_SCORE_EXTENSION {
            None
        } else {
            Some(CStr::from_ptr((*f).name).to_string_lossy().into_owned())
        }
    }
}

fn usable(st: &Stream, kind: media::Type) -> bool {
    let par = st.parameters();
    par.medium() == kind
        && par.id() != codec::Id::None
        && !st
            .disposition()
            .contains(format::stream::Disposition::ATTACHED_PIC)
}

/// FFmpeg's best video stream (not cover art); `BadInput` without one.
pub(crate) fn video_stream(ictx: &Input) -> Result<usize, MediaError> {
    best_video(ictx).ok_or_else(|| MediaError::BadInput("no video stream".into()))
}

/// FFmpeg's best video stream that is not cover art, if any.
pub(crate) fn best_video(ictx: &Input) -> Option<usize> {
    ictx.streams()
        .best(media::Type::Video)
        .filter(|s| usable(s, media::Type::Video))
        .or_else(|| ictx.streams().find(|s| usable(s, media::Type::Video)))
        .map(|s| s.index())
}

/// FFmpeg's best audio stream, if any.
pub(crate) fn best_audio(ictx: &Input) -> Option<usize> {
    ictx.streams()
        .best(media::Type::Audio)
        .filter(|s| usable(s, media::Type::Audio))
        .or_else(|| ictx.streams().find(|s| usable(s, media::Type::Audio)))
        .map(|s| s.index())
}

/// Tells the demuxer to drop every stream but `keep` (less work, fewer allocations).
pub(crate) fn discard_all_but(ictx: &mut Input, keep: &[usize]) {
    // SAFETY: indexes below nb_streams address valid AVStream pointers owned by ictx.
    unsafe {
        let ctx = ictx.as_mut_ptr();
        for i in 0..(*ctx).nb_streams as usize {
            let st = *(*ctx).streams.add(i);
            (*st).discard = if keep.contains(&i) {
                ffi::AVDiscard::AVDISCARD_DEFAULT
            } else {
                ffi::AVDiscard::AVDISCARD_ALL
            };
        }
    }
}

/// The container's start time in AV_TIME_BASE units: the origin of the timeline.
pub(crate) fn origin_us(ictx: &Input) -> i64 {
    // SAFETY: reading a plain field of a live AVFormatContext.
    let start = unsafe { (*ictx.as_ptr()).start_time };
    if start == ffi::AV_NOPTS_VALUE {
        0
    } else {
        start
    }
}

/// Seconds from the origin of a timestamp in `tb`.
pub(crate) fn seconds(ts: i64, tb: Rational, origin_us: i64) -> f64 {
    let t = ts as f64 * f64::from(tb.numerator()) / f64::from(tb.denominator().max(1));
    t - origin_us as f64 / 1e6
}

fn valid_rate(q: Rational) -> Option<f64> {
    if q.numerator() <= 0 || q.denominator() <= 0 {
        return None;
    }
    let f = f64::from(q.numerator()) / f64::from(q.denominator());
    (0.5..=240.0).contains(&f).then_some(f)
}

/// The nominal frame rate of a stream: its real frame rate when it agrees with the
/// average rate, else the average rate (rounded to 1/1000), else 25.
pub(crate) fn frame_rate(st: &Stream) -> Rational {
    let (r, a) = (st.rate(), st.avg_frame_rate());
    match (valid_rate(r), valid_rate(a)) {
        (Some(rf), Some(af)) if ((rf - af) / af).abs() < 0.05 => r.reduce(),
        (_, Some(af)) => Rational::new((af * 1000.0).round() as i32, 1000).reduce(),
        (Some(_), None) => r.reduce(),
        (None, None) => Rational::new(25, 1),
    }
}

fn normalise_degrees(deg: f64) -> i32 {
    let quarter = ((deg / 90.0).round() as i64).rem_euclid(4);
    (quarter * 90) as i32
}

/// Degrees clockwise to turn decoded pictures for display: the display matrix (as the
/// FFmpeg CLI reads it), else the legacy `rotate` tag.
pub(crate) fn rotation(st: &Stream) -> i32 {
    for sd in st.side_data() {
        if sd.kind() != codec::packet::side_data::Type::DisplayMatrix {
            continue;
        }
        let data = sd.data();
        if data.len() < 36 {
            continue;
        }
        let mut m = [0i32; 9];
        for (i, v) in m.iter_mut().enumerate() {
            *v = i32::from_ne_bytes([
                data[4 * i],
                data[4 * i + 1],
                data[4 * i + 2],
                data[4 * i + 3],
            ]);
        }
        // SAFETY: `m` is the 3x3 matrix av_display_rotation_get reads.
        let ccw = unsafe { ffi::av_display_rotation_get(m.as_ptr()) };
        if ccw.is_finite() {
            return normalise_degrees(-ccw.round());
        }
    }
    st.metadata()
        .get("rotate")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .map(normalise_degrees)
        .unwrap_or(0)
}

/// Display size of `w`×`h` coded pixels with sample aspect ratio `sar`, turned by
/// `rotation`.
pub(crate) fn display_size(w: u32, h: u32, sar: Rational, rotation: i32) -> (u32, u32) {
    let mut dw = w;
    if sar.numerator() > 0 && sar.denominator() > 0 && sar.numerator() != sar.denominator() {
        let scaled =
            (f64::from(w) * f64::from(sar.numerator()) / f64::from(sar.denominator())).round();
        dw = (scaled as u32).max(1);
    }
    if rotation == 90 || rotation == 270 {
        (h, dw)
    } else {
        (dw, h)
    }
}

/// Whether `x` is a finite number above zero.
pub(crate) fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// `n` rounded down to an even number, at least 2.
pub(crate) fn even(n: u32) -> u32 {
    (n & !1).max(2)
}

/// The stream's sample aspect ratio (stream-level first, then codec-level).
pub(crate) fn sample_aspect_ratio(st: &Stream) -> Rational {
    // SAFETY: reading plain fields of a live AVStream and its codec parameters.
    let (s, c) = unsafe {
        let p = st.as_ptr();
        (
            (*p).sample_aspect_ratio,
            (*(*p).codecpar).sample_aspect_ratio,
        )
    };
    let s = Rational::from(s);
    if s.numerator() > 0 && s.denominator() > 0 {
        s
    } else {
        Rational::from(c)
    }
}

/// Filters turning pictures by `rotation` degrees clockwise (a trailing comma included).
pub(crate) fn rotation_filters(rotation: i32) -> &'static str {
    match rotation {
        90 => "transpose=clock,",
        180 => "hflip,vflip,",
        270 => "transpose=cclock,",
        _ => "",
    }
}

/// Opens a decoder for `st` with `threads` frame threads.
pub(crate) fn open_video_decoder(
    st: &Stream,
    threads: usize,
) -> Result<decoder::Video, MediaError> {
    let mut ctx = codec::context::Context::from_parameters(st.parameters())
        .map_err(|e| internal("decoder parameters", e))?;
    ctx.set_threading(ff::threading::Config {
        kind: ff::threading::Type::Frame,
        count: threads.max(1),
        ..Default::default()
    });
    let mut dec = ctx.decoder();
    dec.set_packet_time_base(st.time_base());
    let id = st.parameters().id();
    dec.video().map_err(|e| match e {
        ff::Error::DecoderNotFound => {
            MediaError::BadInput(format!("unsupported video codec {}", id.name()))
        }
        e => bad_input(&format!("opening the {} decoder", id.name()), e),
    })
}

/// Opens a decoder for the audio stream `st`.
pub(crate) fn open_audio_decoder(st: &Stream) -> Result<decoder::Audio, MediaError> {
    let ctx = codec::context::Context::from_parameters(st.parameters())
        .map_err(|e| internal("decoder parameters", e))?;
    let mut dec = ctx.decoder();
    dec.set_packet_time_base(st.time_base());
    let id = st.parameters().id();
    dec.audio().map_err(|e| match e {
        ff::Error::DecoderNotFound => {
            MediaError::BadInput(format!("unsupported audio codec {}", id.name()))
        }
        e => bad_input(&format!("opening the {} decoder", id.name()), e),
    })
}

/// Whether an FFmpeg error means a resource ran out.
pub(crate) fn is_limit(e: &ff::Error) -> bool {
    matches!(e, ff::Error::Other { errno } if *errno == ff::error::ENOMEM
        || *errno == ff::error::ENOSPC
        || *errno == ff::error::EFBIG)
}

/// An error caused by the input (or a resource limit).
pub(crate) fn bad_input(what: &str, e: ff::Error) -> MediaError {
    if is_limit(&e) {
        MediaError::Limit(format!("{what}: {e}"))
    } else {
        MediaError::BadInput(format!("{what}: {e}"))
    }
}

/// An error of the engine or its environment (or a resource limit).
pub(crate) fn internal(what: &str, e: ff::Error) -> MediaError {
    if is_limit(&e) {
        MediaError::Limit(format!("{what}: {e}"))
    } else {
        MediaError::Internal(format!("{what}: {e}"))
    }
}

pub(crate) fn internal_msg(what: &str) -> MediaError {
    MediaError::Internal(what.to_string())
}

/// A file-system error: out of space or over a file size limit is a `Limit`.
pub(crate) fn io_error(what: &str, e: std::io::Error) -> MediaError {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::StorageFull
        | ErrorKind::QuotaExceeded
        | ErrorKind::FileTooLarge
        | ErrorKind::OutOfMemory => MediaError::Limit(format!("{what}: {e}")),
        _ => MediaError::Internal(format!("{what}: {e}")),
    }
}

/// Creates a directory (and its parents).
pub(crate) fn create_dir(dir: &Path) -> Result<(), MediaError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(&format!("creating {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_and_display_size() {
        assert_eq!(normalise_degrees(-90.0), 270);
        assert_eq!(normalise_degrees(90.0), 90);
        assert_eq!(normalise_degrees(-180.0), 180);
        assert_eq!(normalise_degrees(359.0), 0);
        assert_eq!(
            display_size(1280, 720, Rational::new(1, 1), 90),
            (720, 1280)
        );
        // Anamorphic PAL 16:9.
        assert_eq!(
            display_size(720, 576, Rational::new(64, 45), 0),
            (1024, 576)
        );
        assert_eq!(display_size(321, 241, Rational::new(0, 1), 270), (241, 321));
        assert_eq!((even(321), even(1), even(4)), (320, 2, 4));
    }

    #[test]
    fn demuxers_that_open_other_files_are_not_allowed() {
        crate::media::init();
        let list: Vec<&str> = allowed_demuxers().split(',').collect();
        for bad in ["hls", "concat", "dash", "image2", "lavfi"] {
            assert!(!list.contains(&bad), "{bad} is allowed");
        }
        for good in [
            "mov", "mp4", "matroska", "mpegts", "mpeg", "flv", "avi", "asf",
        ] {
            assert!(list.contains(&good), "{good} is not allowed");
        }
    }
}
