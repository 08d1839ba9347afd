//! Quality of each rendition against the source: PSNR and SSIM, measured while encoding.
//!
//! **Where.** [`super::encode_video_range_with_quality`] measures inside the encode loop,
//! where both pictures already exist: the encoder's input (the source frame after
//! deinterlacing, rotation and scaling to the rung's size) and the encoder's output. Each
//! rung gets a `Meter`: a single-threaded H.264 decoder fed every packet right after the
//! encoder returns it (before it is muxed), and a short queue of the input frames (plain
//! references to the filter graph's buffers, no copies) waiting for their decoded
//! counterparts, matched by timestamp (the encoder's ticks). The queue holds the
//! encoder's delay (lookahead + B-frames + frame threads, a few dozen frames at most);
//! it is capped ([`PENDING_BASE`]) in case that assumption ever breaks.
//!
//! Why not the encoder's own statistics: libx264 computes PSNR and SSIM internally, but
//! FFmpeg 5.1's wrapper exports neither: with `AV_CODEC_FLAG_PSNR` x264 only logs its
//! totals when it closes (and warns that they are invalid with psy optimisations on),
//! while `AVCodecContext.error` and the packets' quality stats stay zero (the CLI's
//! `-flags +psnr` shows `Y:inf` for libx264). Decoding is independent of the encoder
//! anyway: it measures what a player will show.
//!
//! **Against what.** The reference is the source scaled to the rendition's size (with the
//! same scaler, in the same graph), the usual convention for ABR ladders: it measures the
//! coding loss of each rung, not the loss of resolution (which would need upscaling every
//! rung to the source size and mostly measures the scaler).
//!
//! **Metrics**, all on 8-bit planes, comparable with FFmpeg's `psnr` and `ssim` filters
//! and x264's `--psnr`/`--ssim`:
//! - PSNR from the sum of squared errors of each plane (Y, U, V), accumulated over frames:
//!   `10·log10(255² / mean squared error)`, the mean taken over every sample of every
//!   measured frame (like the `psnr` filter's summary line). Reported as luma PSNR and as
//!   the common 6:1:1 weighting of the three planes' PSNRs.
//! - SSIM on luma, the simplified form of x264 and FFmpeg's `ssim` filter: 8×8 windows
//!   without Gaussian weights, on a 4-pixel grid (overlapping), constants
//!   `C1 = (0.01·255)²`, `C2 = (0.03·255)²` scaled to integer window sums exactly as they
//!   do (which, written with means and unbiased variances, makes C1 64 times smaller:
//!   their quirk, kept so that the figures compare), averaged over the windows of a
//!   frame, then over frames.
//!
//! **Cost.** Every frame is measured ([`SAMPLE_EVERY`] = 1). Measured on one 720p rung
//! (4.5 Mbit/s, x264 `veryfast`, 1 thread, 300 frames, release build, CPU seconds):
//! the encode alone takes 2.85 s (as much as the ffmpeg CLI doing the same), measuring
//! adds ~0.65 s (+23%): ~0.5 s decoding the rung, ~0.1 s comparing ([`ssim`]: SSIM and
//! the luma squared error in one pass, ~0.3 ms a 720p frame; [`sse`] of the chroma
//! planes, ~0.1 ms), ~0.05 s in page faults and allocations. The comparisons were
//! 3 times slower before they were written for the vectoriser; what is left is mostly
//! the decoding, which FFmpeg 5.1 cannot spare: its libx264 wrapper does not hand out
//! x264's reconstructed pictures (FFmpeg 6's `AV_CODEC_FLAG_RECON_FRAME` does; those are
//! exactly the decoded pictures, so taking them would drop the decoder and change no
//! figure). Where the time matters more than the figures, a request
//! ([`super::VideoRangeSpec::quality`]) or a profile
//! ([`crate::profile::Profile::measure_quality`]) turns measuring off.
//!
//! **Aggregation.** A [`RenditionQuality`] holds sums, not averages (squared errors per
//! plane, SSIM sum, frame count), so the ranges of one job, encoded by different
//! processes, merge exactly into frame-weighted figures ([`RenditionQuality::merge`]).

use std::collections::{BTreeMap, VecDeque};

use ff::{codec, frame, Packet};
use ffmpeg_next as ff;
use serde::{Deserialize, Serialize};

use super::input::internal;
use super::MediaError;

mod psnr;
mod ssim;

pub use psnr::sse;
pub(crate) use ssim::ssim_and_sse;

/// Measure one frame in this many. 1: every frame (see the module documentation for
/// the cost); the decoder sees every packet whatever the value, as it must.
pub const SAMPLE_EVERY: i64 = 1;

/// Input frames kept waiting for their decoded counterpart, at most: this many, plus
/// [`PENDING_PER_THREAD`] per encoder thread. x264's delay at the `veryfast` preset is
/// its lookahead (10) + B-frames (3) + about one frame per thread: 14 frames were seen
/// waiting with 1 thread, 19 with 2, 25 with 8, 33 with 16. The cap only bounds the
/// memory (each waiting frame is one picture of the rung) should frames stop coming out
/// of the decoder; frames dropped for it are simply not measured.
pub const PENDING_BASE: usize = 24;

/// See [`PENDING_BASE`].
pub const PENDING_PER_THREAD: usize = 2;

/// PSNR reported for a perfect match (no error at all), instead of infinity, which JSON
/// cannot carry.
pub const MAX_PSNR_DB: f64 = 100.0;

/// Peak sample value of 8-bit video.
const PEAK: f64 = 255.0;

/// Quality sums of one rendition over the frames measured (of one range, or merged over
/// several): everything needed for frame-weighted PSNR and SSIM, and nothing averaged
/// yet, so that ranges merge exactly.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RenditionQuality {
    /// Rendition name (`v720p`...).
    pub rendition: String,
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frames measured.
    pub frames: u64,
    /// Sum over the frames of the luma plane's squared errors.
    pub sse_y: f64,
    /// Same for the U (Cb) plane.
    pub sse_u: f64,
    /// Same for the V (Cr) plane.
    pub sse_v: f64,
    /// Sum over the frames of each frame's luma SSIM.
    pub ssim_sum: f64,
}

impl RenditionQuality {
    /// Empty sums for a rendition of `width`×`height`.
    pub fn new(rendition: &str, width: u32, height: u32) -> Self {
        RenditionQuality {
            rendition: rendition.to_string(),
            width,
            height,
            ..Default::default()
        }
    }

    /// Adds `other`'s frames (the same rendition, e.g. another range of the source).
    pub fn merge(&mut self, other: &RenditionQuality) {
        if self.frames == 0 {
            self.width = other.width;
            self.height = other.height;
        }
        // Saturating: the sums come from other processes, and must not panic here.
        self.frames = self.frames.saturating_add(other.frames);
        self.sse_y += other.sse_y;
        self.sse_u += other.sse_u;
        self.sse_v += other.sse_v;
        self.ssim_sum += other.ssim_sum;
    }

    /// Merges per-range sums by rendition name.
    pub fn aggregate<'a>(
        parts: impl IntoIterator<Item = &'a RenditionQuality>,
    ) -> BTreeMap<String, RenditionQuality> {
        let mut by: BTreeMap<String, RenditionQuality> = BTreeMap::new();
        for p in parts {
            by.entry(p.rendition.clone())
                .or_insert_with(|| RenditionQuality::new(&p.rendition, p.width, p.height))
                .merge(p);
        }
        by
    }

    /// Luma and chroma samples (per plane) over every measured frame.
    fn samples(&self) -> (f64, f64) {
        let (w, h, n) = (self.width, self.height, self.frames as f64);
        let luma = f64::from(w) * f64::from(h) * n;
        let chroma = f64::from(w.div_ceil(2)) * f64::from(h.div_ceil(2)) * n;
        (luma, chroma)
    }

    /// Luma PSNR in dB over every measured frame; `None` without any.
    pub fn psnr_y(&self) -> Option<f64> {
        let (luma, _) = self.samples();
        (self.frames > 0 && luma > 0.0).then(|| psnr(self.sse_y, luma))
    }

    /// PSNR of the Y, U and V planes in dB; `None` without any frame.
    pub fn psnr_planes(&self) -> Option<[f64; 3]> {
        let (luma, chroma) = self.samples();
        (self.frames > 0 && luma > 0.0 && chroma > 0.0).then(|| {
            [
                psnr(self.sse_y, luma),
                psnr(self.sse_u, chroma),
                psnr(self.sse_v, chroma),
            ]
        })
    }

    /// The planes' PSNRs weighted 6:1:1 (Y:U:V), the usual single figure for 4:2:0.
    pub fn psnr_yuv(&self) -> Option<f64> {
        self.psnr_planes().map(|[y, u, v]| (6.0 * y + u + v) / 8.0)
    }

    /// Mean luma SSIM of the measured frames, 0..1 (1: identical); `None` without any.
    pub fn ssim(&self) -> Option<f64> {
        (self.frames > 0).then(|| self.ssim_sum / self.frames as f64)
    }

    /// Adds one frame's measures.
    fn add(&mut self, m: &FrameQuality) {
        self.frames += 1;
        self.sse_y += m.sse[0] as f64;
        self.sse_u += m.sse[1] as f64;
        self.sse_v += m.sse[2] as f64;
        self.ssim_sum += m.ssim_y;
    }
}

/// PSNR of `sse` over `samples` 8-bit samples, capped at [`MAX_PSNR_DB`].
fn psnr(sse: f64, samples: f64) -> f64 {
    if sse <= 0.0 {
        return MAX_PSNR_DB;
    }
    (10.0 * (PEAK * PEAK * samples / sse).log10()).min(MAX_PSNR_DB)
}

/// One 8-bit plane: `width`×`height` samples, rows `stride` bytes apart in `data`.
#[derive(Clone, Copy, Debug)]
pub struct Plane<'a> {
    /// Samples, row after row.
    pub data: &'a [u8],
    /// Bytes from one row to the next (at least `width`).
    pub stride: usize,
    /// Samples per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

impl<'a> Plane<'a> {
    /// A tightly packed plane (`stride == width`).
    pub fn packed(data: &'a [u8], width: usize, height: usize) -> Self {
        Plane {
            data,
            stride: width,
            width,
            height,
        }
    }

    /// Row `y` (`width` samples). Panics when `data` is too short for the shape.
    fn row(&self, y: usize) -> &'a [u8] {
        let start = y * self.stride;
        &self.data[start..start + self.width]
    }

    /// Whether `data` holds the whole shape.
    fn is_whole(&self) -> bool {
        self.stride >= self.width
            && (self.height == 0 || self.data.len() >= (self.height - 1) * self.stride + self.width)
    }
}

/// The SSIM of two planes of the same shape (see the module documentation: FFmpeg's
/// `ssim` filter on one plane). Planes too small for one 8×8 window are taken as one
/// window.
///
/// # Panics
/// When the planes differ in size or their data is shorter than their shape.
pub fn ssim(a: Plane<'_>, b: Plane<'_>) -> f64 {
    ssim_and_sse(a, b).0
}

fn check_shapes(a: &Plane<'_>, b: &Plane<'_>) {
    assert!(
        a.width == b.width && a.height == b.height && a.is_whole() && b.is_whole(),
        "planes of different shapes or short data"
    );
}

/// One frame's measures.
struct FrameQuality {
    sse: [u64; 3],
    ssim_y: f64,
}

/// Plane `i` of `f`, if its data covers its shape.
fn plane_of(f: &frame::Video, i: usize) -> Option<Plane<'_>> {
    let p = Plane {
        data: f.data(i),
        stride: f.stride(i),
        width: f.plane_width(i) as usize,
        height: f.plane_height(i) as usize,
    };
    p.is_whole().then_some(p)
}

/// Compares a decoded frame with the encoder's input; `None` when they are not both
/// 8-bit 4:2:0 pictures of the same size (nothing to compare meaningfully).
fn compare(reference: &frame::Video, decoded: &frame::Video) -> Option<FrameQuality> {
    use ff::format::Pixel;
    let is_420 = |f: &frame::Video| matches!(f.format(), Pixel::YUV420P | Pixel::YUVJ420P);
    if !is_420(reference)
        || !is_420(decoded)
        || reference.width() != decoded.width()
        || reference.height() != decoded.height()
        || reference.planes() < 3
        || decoded.planes() < 3
    {
        return None;
    }
    let (ry, dy) = (plane_of(reference, 0)?, plane_of(decoded, 0)?);
    let (ssim_y, sse_y) = ssim_and_sse(ry, dy);
    let sse_u = sse(plane_of(reference, 1)?, plane_of(decoded, 1)?);
    let sse_v = sse(plane_of(reference, 2)?, plane_of(decoded, 2)?);
    Some(FrameQuality {
        sse: [sse_y, sse_u, sse_v],
        ssim_y,
    })
}

/// Measures one rung while it is encoded: decodes its packets and compares each decoded
/// frame with the encoder's input of the same timestamp.
pub(crate) struct Meter {
    dec: ff::decoder::Video,
    /// Encoder inputs (timestamp, picture) not yet matched, in frame order.
    pending: VecDeque<(i64, frame::Video)>,
    max_pending: usize,
    decoded: frame::Video,
    acc: RenditionQuality,
}

impl Meter {
    /// A meter for the opened encoder `enc` of rendition `name`, running `threads`.
    pub fn new(name: &str, enc: &ff::encoder::Video, threads: usize) -> Result<Self, MediaError> {
        let mut ctx = codec::context::Context::from_parameters(codec::Parameters::from(enc))
            .map_err(|e| internal("quality decoder parameters", e))?;
        // One thread: frame threads would only add delay (and memory) to the queue.
        ctx.set_threading(ff::threading::Config {
            kind: ff::threading::Type::Frame,
            count: 1,
            ..Default::default()
        });
        let dec = ctx
            .decoder()
            .video()
            .map_err(|e| internal("opening the quality decoder", e))?;
        Ok(Meter {
            dec,
            pending: VecDeque::new(),
            max_pending: PENDING_BASE + PENDING_PER_THREAD * threads.max(1),
            decoded: frame::Video::empty(),
            acc: RenditionQuality::new(name, enc.width(), enc.height()),
        })
    }

    /// Keeps the encoder's input for frame `n` (when sampled) until it is decoded.
    pub fn input(&mut self, n: i64, picture: frame::Video) {
        if n.rem_euclid(SAMPLE_EVERY) != 0 {
            return;
        }
        if self.pending.len() >= self.max_pending {
            self.pending.pop_front();
        }
        self.pending.push_back((n, picture));
    }

    /// Decodes an encoded packet (timestamps still the encoder's) and measures every
    /// frame that comes out. A packet our own decoder rejects is not worth failing the
    /// encode for: its frames are just not measured.
    pub fn packet(&mut self, pkt: &Packet) {
        if self.dec.send_packet(pkt).is_ok() {
            self.receive();
        }
    }

    fn receive(&mut self) {
        while self.dec.receive_frame(&mut self.decoded).is_ok() {
            let Some(n) = self.decoded.pts().or(self.decoded.timestamp()) else {
                continue;
            };
            // Inputs before `n` never came out (or were not sampled): forget them.
            while self.pending.front().is_some_and(|(p, _)| *p < n) {
                self.pending.pop_front();
            }
            if self.pending.front().is_some_and(|(p, _)| *p == n) {
                if let Some((_, reference)) = self.pending.pop_front() {
                    if let Some(q) = compare(&reference, &self.decoded) {
                        self.acc.add(&q);
                    }
                }
            }
        }
    }

    /// Drains the decoder (after the encoder's last packet) and returns the sums.
    pub fn finish(mut self) -> RenditionQuality {
        if self.dec.send_eof().is_ok() {
            self.receive();
        }
        self.acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_into_frame_weighted_figures() {
        let q = |frames: u64, sse: f64, ssim: f64| RenditionQuality {
            rendition: "v360p".into(),
            width: 640,
            height: 360,
            frames,
            sse_y: sse,
            sse_u: sse / 4.0,
            sse_v: sse / 4.0,
            ssim_sum: ssim * frames as f64,
        };
        let (a, b) = (q(30, 30.0 * 640.0 * 360.0 * 4.0, 0.9), q(10, 0.0, 1.0));
        let all = RenditionQuality::aggregate([&a, &b]);
        let m = &all["v360p"];
        assert_eq!(m.frames, 40);
        // MSE 4 over 30 frames and 0 over 10: MSE 3 over 40.
        let expect = 10.0 * (255.0f64 * 255.0 / 3.0).log10();
        assert!((m.psnr_y().unwrap() - expect).abs() < 1e-9);
        assert!((m.ssim().unwrap() - 0.925).abs() < 1e-12);
        let [y, u, v] = m.psnr_planes().unwrap();
        assert!((y - expect).abs() < 1e-9 && (u - expect).abs() < 1e-9 && (v - u).abs() < 1e-12);
        assert!((m.psnr_yuv().unwrap() - expect).abs() < 1e-9);
        // No frames: no figures; no error: the cap.
        assert_eq!(RenditionQuality::new("v1p", 2, 2).psnr_y(), None);
        assert_eq!(RenditionQuality::new("v1p", 2, 2).ssim(), None);
        assert_eq!(b.psnr_y(), Some(MAX_PSNR_DB));
    }
}
