//! `poster_and_thumbnails`: a poster frame and a thumbnail strip, as JPEG (mjpeg).

use std::path::{Path, PathBuf};

use ff::format::Pixel;
use ff::{codec, ffi, frame, Packet, Rational};
use ffmpeg_next as ff;

use super::decode::VideoReader;
use super::graph::Graph;
use super::input::{
    create_dir, display_size, even, internal, internal_msg, io_error, rotation_filters,
    sample_aspect_ratio,
};
use super::MediaError;

/// Poster: at this fraction of the duration.
const POSTER_AT: f64 = 0.1;
/// Poster: at most this wide.
const POSTER_MAX_WIDTH: u32 = 1920;
/// Thumbnail strip: this many frames at even intervals...
pub const THUMB_COUNT: u32 = 10;
/// ...each this wide, tiled left to right.
pub const THUMB_WIDTH: u32 = 160;
/// How much earlier to seek on each try (see `Source::grab`).
const GRAB_SEEK_MARGINS_S: &[f64] = &[0.0, 2.0, 10.0, f64::INFINITY];
/// mjpeg quantiser (2 best .. 31 worst).
const JPEG_QSCALE: i32 = 3;

/// Writes `out_dir/poster.jpg` (the frame at 10% of `duration_s`, display size, at most
/// 1920 wide) and `out_dir/thumbs.jpg` (10 frames at even intervals, 160 px wide each,
/// side by side), turning frames by `rotation` degrees clockwise. Returns both paths.
pub fn poster_and_thumbnails(
    input: &Path,
    out_dir: &Path,
    duration_s: f64,
    rotation: i32,
) -> Result<Vec<PathBuf>, MediaError> {
    let reader = VideoReader::open(input, 2)?;
    let st = reader.stream()?;
    let (tb, sar) = (st.time_base(), sample_aspect_ratio(&st));
    let mut src = Source {
        tb,
        sar,
        rotation: if matches!(rotation, 0 | 90 | 180 | 270) {
            rotation
        } else {
            0
        },
        reader,
    };
    let duration = if duration_s.is_finite() && duration_s > 0.0 {
        duration_s
    } else {
        src.reader.container_duration_s()
    };
    create_dir(out_dir)?;

    let poster_frame = src.grab(duration * POSTER_AT)?;
    let (dw, dh) = display_size(
        poster_frame.width(),
        poster_frame.height(),
        src.sar,
        src.rotation,
    );
    let (pw, ph) = if dw > POSTER_MAX_WIDTH {
        (
            POSTER_MAX_WIDTH,
            even((f64::from(dh) * f64::from(POSTER_MAX_WIDTH) / f64::from(dw)).round() as u32),
        )
    } else {
        (even(dw), even(dh))
    };
    let mut poster = src.convert(&poster_frame, pw, ph)?;
    let poster_path = out_dir.join("poster.jpg");
    write_jpeg(&mut poster, &poster_path)?;

    let th = even((f64::from(dh) * f64::from(THUMB_WIDTH) / f64::from(dw.max(1))).round() as u32);
    let mut strip = frame::Video::new(Pixel::YUVJ420P, THUMB_WIDTH * THUMB_COUNT, th);
    fill_black(&mut strip);
    for i in 0..THUMB_COUNT {
        let t = (f64::from(i) + 0.5) * duration / f64::from(THUMB_COUNT);
        let f = src.grab(t)?;
        let tile = src.convert(&f, THUMB_WIDTH, th)?;
        blit(&tile, &mut strip, (i * THUMB_WIDTH) as usize);
    }
    let thumbs_path = out_dir.join("thumbs.jpg");
    write_jpeg(&mut strip, &thumbs_path)?;
    Ok(vec![poster_path, thumbs_path])
}

struct Source {
    reader: VideoReader,
    tb: Rational,
    sar: Rational,
    rotation: i32,
}

impl Source {
    /// The first frame at or after `t` seconds (the last frame when `t` is past the
    /// end). Seeks land on a keyframe at or before `t` in most containers; where they
    /// land after it (or past the last keyframe, where nothing decodes), seek further
    /// back, and finally decode from the beginning.
    fn grab(&mut self, t: f64) -> Result<frame::Video, MediaError> {
        let mut fallback = None;
        for (i, &margin) in GRAB_SEEK_MARGINS_S.iter().enumerate() {
            let last_try = i + 1 == GRAB_SEEK_MARGINS_S.len();
            match self.grab_from(t, margin)? {
                Some((f, first_at)) if last_try || first_at.is_none_or(|a| a <= t + 0.5) => {
                    return Ok(f)
                }
                Some((f, _)) => {
                    fallback.get_or_insert(f);
                }
                None => {}
            }
        }
        fallback.ok_or_else(|| MediaError::BadInput("no video frame can be decoded".into()))
    }

    /// Seeks to `t - margin` (the beginning when infinite) and decodes up to `t`: the
    /// frame, and the time of the first frame decoded after the seek.
    fn grab_from(
        &mut self,
        t: f64,
        margin: f64,
    ) -> Result<Option<(frame::Video, Option<f64>)>, MediaError> {
        self.reader.seek(t - margin);
        let mut decoded = frame::Video::empty();
        let mut last: Option<frame::Video> = None;
        let mut first_at: Option<Option<f64>> = None;
        while self.reader.next(&mut decoded)? {
            let at = self.reader.time(&decoded);
            let first = *first_at.get_or_insert(at);
            if at.is_none_or(|at| at + 0.001 >= t) {
                return Ok(Some((decoded, first)));
            }
            last = Some(decoded.clone());
        }
        Ok(last.map(|f| (f, first_at.flatten())))
    }

    /// `frame` deinterlaced (if flagged interlaced), turned for display and scaled to
    /// `w`×`h`, full-range 4:2:0 for JPEG.
    fn convert(&self, frame: &frame::Video, w: u32, h: u32) -> Result<frame::Video, MediaError> {
        let deinterlace = if frame.is_interlaced() { "yadif," } else { "" };
        let spec = format!(
            "[in]{deinterlace}{}scale={w}:{h},setsar=1,format=yuvj420p[out0]",
            rotation_filters(self.rotation)
        );
        let mut graph = Graph::new(frame, self.tb, self.sar, &spec, 1)?;
        graph.push(Some(frame))?;
        graph.push(None)?;
        let mut out = frame::Video::empty();
        if graph.pull(0, &mut out)? {
            Ok(out)
        } else {
            Err(internal_msg("the scaler produced no frame"))
        }
    }
}

fn fill_black(f: &mut frame::Video) {
    for p in 0..3 {
        let v = if p == 0 { 0 } else { 128 };
        f.data_mut(p).fill(v);
    }
}

/// Copies `tile` into `dst` with its left edge at column `x`.
fn blit(tile: &frame::Video, dst: &mut frame::Video, x: usize) {
    for p in 0..3 {
        let shift = usize::from(p > 0);
        let (w, h) = (tile.plane_width(p) as usize, tile.plane_height(p) as usize);
        let (sstride, dstride) = (tile.stride(p), dst.stride(p));
        let dh = dst.plane_height(p) as usize;
        let x = x >> shift;
        let src = tile.data(p);
        let out = dst.data_mut(p);
        for row in 0..h.min(dh) {
            let (s, d) = (row * sstride, row * dstride + x);
            if s + w <= src.len() && d + w <= out.len() {
                out[d..d + w].copy_from_slice(&src[s..s + w]);
            }
        }
    }
}

/// Encodes one frame with mjpeg into `path`.
fn write_jpeg(frame: &mut frame::Video, path: &Path) -> Result<(), MediaError> {
    let codec = ff::encoder::find(codec::Id::MJPEG)
        .ok_or_else(|| internal_msg("the mjpeg encoder is not available"))?;
    let mut enc = codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| internal("mjpeg context", e))?;
    enc.set_width(frame.width());
    enc.set_height(frame.height());
    enc.set_format(Pixel::YUVJ420P);
    enc.set_time_base(Rational::new(1, 25));
    enc.set_flags(codec::Flags::QSCALE);
    enc.set_quality((JPEG_QSCALE * ffi::FF_QP2LAMBDA) as usize);
    let mut enc = enc
        .open_as(codec)
        .map_err(|e| internal("opening mjpeg", e))?;
    frame.set_pts(Some(0));
    // SAFETY: a plain field of a frame we own; with QSCALE mjpeg reads its quantiser here.
    unsafe {
        (*frame.as_mut_ptr()).quality = JPEG_QSCALE * ffi::FF_QP2LAMBDA;
    }
    enc.send_frame(frame)
        .map_err(|e| internal("encoding a jpeg", e))?;
    enc.send_eof().map_err(|e| internal("encoding a jpeg", e))?;
    let mut pkt = Packet::empty();
    enc.receive_packet(&mut pkt)
        .map_err(|e| internal("encoding a jpeg", e))?;
    let data = pkt
        .data()
        .ok_or_else(|| internal_msg("mjpeg produced an empty packet"))?;
    std::fs::write(path, data).map_err(|e| io_error(&format!("writing {}", path.display()), e))
}
