//! `encode_video_range`: one range of the source, decoded once, into every rung.
//!
//! decode → (deinterlace, rotate, split, scale ×rungs) → libx264 ×rungs → segments.
//! Every decoded frame keeps its own time on the source timeline, as a count of
//! [`TICKS_PER_SECOND`] (the encoder's time base), so a variable frame rate stays as it
//! was and every range of one source agrees on every frame's time: the outputs hold
//! the frames the ffmpeg CLI decodes, at the times it decodes them. Only a frame on the
//! same tick as the one before it (a duplicate timestamp) is dropped.
//!
//! [`encode_video_range_with_quality`] also measures each rung against its input (PSNR,
//! SSIM; see [`super::quality`]): each rung's encoder input is kept until its packet has
//! been decoded back.

use ff::{codec, frame, picture, Packet, Rational, Rescale};
use ffmpeg_next as ff;

use super::decode::VideoReader;
use super::graph::Graph;
use super::input::{
    create_dir, even, frame_rate, internal, internal_msg, positive, rotation, rotation_filters,
    sample_aspect_ratio,
};
use super::quality::{Meter, RenditionQuality};
use super::segment::Segmenter;
use super::{rendition_name, MediaError, SegmentOut, VideoRangeSpec};
use crate::profile::Rung;

/// x264 preset: fast enough for parallel range encoding on CPUs.
const X264_PRESET: &str = "veryfast";

/// Peak bitrate (VBV maxrate) as a multiple of the rung's bitrate.
const MAXRATE_FACTOR: f64 = 1.1;

/// VBV buffer as a multiple of the rung's bitrate (two seconds of video).
const BUFSIZE_FACTOR: f64 = 2.0;

/// The encoders' clock: MPEG-TS's 90 kHz, so timestamps pass through the muxer exactly,
/// and any source's frame times are kept to within 6 µs.
pub(crate) const TICKS_PER_SECOND: i32 = 90_000;

/// x264's own keyframe limit, in GOPs' worth of frames at the nominal rate: only a
/// backstop (keyframes are forced on the source timeline), loose enough that a burst
/// above the nominal rate in a variable-rate source does not add keyframes.
const KEYINT_BACKSTOP_GOPS: f64 = 2.0;

/// Seek back this much further (seconds) each time a seek lands after the range start;
/// the last try decodes from the beginning.
const SEEK_MARGINS_S: &[f64] = &[0.0, 2.0, 10.0, f64::INFINITY];

/// Progress is reported every this many frames (a fraction of a second of video).
const PROGRESS_EVERY_FRAMES: u32 = 12;

/// Which GOP and segment a time falls in, on the source timeline, in ticks
/// ([`TICKS_PER_SECOND`]).
#[derive(Clone, Copy)]
struct Clock {
    /// Ticks per GOP and per segment.
    gop_ticks: f64,
    seg_ticks: f64,
    /// Ticks per frame at the nominal rate (the duration of a frame without a known
    /// successor).
    frame_ticks: i64,
}

impl Clock {
    fn new(gop_seconds: f64, segment_seconds: f64, fps: f64) -> Self {
        let hz = f64::from(TICKS_PER_SECOND);
        Clock {
            gop_ticks: gop_seconds * hz,
            seg_ticks: segment_seconds * hz,
            frame_ticks: Self::nearest_tick(1.0 / fps).max(1),
        }
    }
    /// The tick of `t` seconds (the first tick at or after it).
    fn tick_at(t: f64) -> i64 {
        (t * f64::from(TICKS_PER_SECOND) - 1e-6).ceil() as i64
    }
    /// The tick nearest to `t` seconds.
    fn nearest_tick(t: f64) -> i64 {
        (t * f64::from(TICKS_PER_SECOND)).round() as i64
    }
    fn seconds(tick: i64) -> f64 {
        tick as f64 / f64::from(TICKS_PER_SECOND)
    }
    /// Number of the GOP containing the frame at tick `n` (GOP k starts on the first
    /// frame at or after k × gop_seconds).
    fn gop(&self, n: i64) -> i64 {
        ((n as f64 + 1e-6) / self.gop_ticks).floor() as i64
    }
    fn segment(&self, n: i64) -> i64 {
        ((n as f64 + 1e-6) / self.seg_ticks).floor() as i64
    }
}

struct RungOut {
    enc: ff::encoder::Video,
    seg: Segmenter,
    /// Tick of the last frame sent, and segment of the open segment file.
    last_n: Option<i64>,
    open_segment: i64,
    /// Quality measurement, when asked for.
    meter: Option<Meter>,
}

/// Decoded frames → filter graph → encoders → segments.
struct Pipeline<'a> {
    spec: &'a VideoRangeSpec,
    clock: Clock,
    enc_tb: Rational,
    rotation: i32,
    sar: Rational,
    graph: Option<Graph>,
    rungs: Vec<RungOut>,
    filtered: frame::Video,
    packet: Packet,
}

/// Encodes `spec.start_s..spec.end_s` of the source into every rung (see the module
/// and [`VideoRangeSpec`] documentation). Ranges beyond the end of the video produce no
/// segments.
pub fn encode_video_range(
    spec: &VideoRangeSpec,
    progress: &mut dyn FnMut(f64),
) -> Result<Vec<SegmentOut>, MediaError> {
    encode(spec, progress, false).map(|(segments, _)| segments)
}

/// [`encode_video_range`], also measuring every rung against the source scaled to the
/// rung's size: one [`RenditionQuality`] per rung, in the order of `spec.rungs` (see
/// [`super::quality`] for what is measured and how).
pub fn encode_video_range_with_quality(
    spec: &VideoRangeSpec,
    progress: &mut dyn FnMut(f64),
) -> Result<(Vec<SegmentOut>, Vec<RenditionQuality>), MediaError> {
    encode(spec, progress, true)
}

fn encode(
    spec: &VideoRangeSpec,
    progress: &mut dyn FnMut(f64),
    measure: bool,
) -> Result<(Vec<SegmentOut>, Vec<RenditionQuality>), MediaError> {
    validate(spec)?;
    let mut reader = VideoReader::open(&spec.input, spec.threads)?;
    let (fps, rotation, sar) = {
        let st = reader.stream()?;
        (frame_rate(&st), rotation(&st), sample_aspect_ratio(&st))
    };
    let fps_f = f64::from(fps.numerator()) / f64::from(fps.denominator());
    let clock = Clock::new(spec.gop_seconds, spec.segment_seconds, fps_f);
    let enc_tb = Rational::new(1, TICKS_PER_SECOND);

    let mut pipe = Pipeline {
        spec,
        clock,
        enc_tb,
        rotation,
        sar,
        graph: None,
        rungs: Vec::with_capacity(spec.rungs.len()),
        filtered: frame::Video::empty(),
        packet: Packet::empty(),
    };
    for rung in &spec.rungs {
        pipe.rungs
            .push(open_rung(rung, fps, enc_tb, spec, measure)?);
    }

    decode_range(&mut reader, &mut pipe, progress)?;
    if !reader.any_decoded() {
        return Err(MediaError::BadInput("no video frame can be decoded".into()));
    }
    let out = pipe.finish()?;
    progress(1.0);
    Ok(out)
}

/// Decodes the frames of the range (`start_s..end_s` of the spec) into `pipe`, each at
/// its own time. A seek that lands after the start (or past the end, where nothing
/// decodes) may have skipped frames of the range: it goes back further
/// ([`SEEK_MARGINS_S`]) and decodes again.
fn decode_range(
    reader: &mut VideoReader,
    pipe: &mut Pipeline<'_>,
    progress: &mut dyn FnMut(f64),
) -> Result<(), MediaError> {
    let (spec, clock) = (pipe.spec, pipe.clock);
    let n_start = Clock::tick_at(spec.start_s);
    let n_end = spec.end_s.map(Clock::tick_at);
    let end_s = spec
        .end_s
        .unwrap_or(reader.container_duration_s())
        .max(spec.start_s);
    let mut attempt = 0;
    if n_start > 0 {
        reader.seek(spec.start_s - SEEK_MARGINS_S[attempt]);
    }
    // The first frame after a seek says whether it landed early enough.
    let mut landing = n_start > 0;
    let mut decoded = frame::Video::empty();
    // The tick of the frame before (a frame without a timestamp follows it at the
    // nominal rate); decoding from the beginning, the first frame is at 0.
    let before_start = |attempt: usize| {
        let from_beginning = spec.start_s - SEEK_MARGINS_S[attempt] <= 0.0;
        from_beginning.then_some(-clock.frame_ticks)
    };
    let mut last = before_start(attempt);
    let mut sent: Option<i64> = None;
    let mut frames_since_progress = 0u32;
    loop {
        let n = if reader.next(&mut decoded)? {
            let timed = reader.time(&decoded).map(Clock::nearest_tick);
            match timed.or(last.map(|l| l + clock.frame_ticks)) {
                Some(n) => Some(n),
                // No timestamp and no frame before it since the seek: its time is
                // unknown (decoding from earlier, it would have one); skip it.
                None => continue,
            }
        } else {
            None
        };
        if landing && attempt + 1 < SEEK_MARGINS_S.len() {
            landing = false;
            if n.is_none_or(|n| n > n_start) {
                attempt += 1;
                reader.seek(spec.start_s - SEEK_MARGINS_S[attempt]);
                landing = true;
                last = before_start(attempt);
                continue;
            }
        }
        let Some(n) = n else { break };
        last = Some(n);
        if n < n_start || sent.is_some_and(|l| n <= l) {
            continue;
        }
        if n_end.is_some_and(|e| n >= e) {
            break;
        }
        sent = Some(n);
        decoded.set_pts(Some(n));
        decoded.set_kind(picture::Type::None);
        pipe.push(Some(&decoded))?;
        frames_since_progress += 1;
        if frames_since_progress >= PROGRESS_EVERY_FRAMES && end_s > spec.start_s {
            frames_since_progress = 0;
            let done = (Clock::seconds(n) - spec.start_s) / (end_s - spec.start_s);
            progress(done.clamp(0.0, 0.99));
        }
    }
    Ok(())
}

/// One rung's encoder, segmenter and (when asked) quality meter.
fn open_rung(
    rung: &Rung,
    fps: Rational,
    enc_tb: Rational,
    spec: &VideoRangeSpec,
    measure: bool,
) -> Result<RungOut, MediaError> {
    let name = rendition_name(rung);
    let dir = spec.out_dir.join(&name);
    create_dir(&dir)?;
    let enc = open_encoder(rung, fps, enc_tb, spec)?;
    let seg = Segmenter::new(&name, &dir, codec::Parameters::from(&enc), enc_tb);
    let meter = if measure {
        Some(Meter::new(&name, &enc, spec.threads)?)
    } else {
        None
    };
    Ok(RungOut {
        enc,
        seg,
        last_n: None,
        open_segment: 0,
        meter,
    })
}

fn validate(spec: &VideoRangeSpec) -> Result<(), MediaError> {
    let bad = |m: &str| Err(MediaError::Internal(format!("invalid range spec: {m}")));
    if spec.rungs.is_empty() {
        return bad("no rungs");
    }
    if !positive(spec.segment_seconds) || !positive(spec.gop_seconds) {
        return bad("segment and GOP lengths must be positive");
    }
    if !spec.start_s.is_finite() || spec.start_s < 0.0 {
        return bad("start must be a non-negative number");
    }
    if spec.end_s.is_some_and(|e| e.is_nan() || e <= spec.start_s) {
        return bad("end must be after start");
    }
    if spec.rungs.iter().any(|r| {
        r.width < 2 || r.height < 2 || r.width > 8192 || r.height > 8192 || r.video_kbps == 0
    }) {
        return bad("rung sizes must be 2..=8192 and bitrates positive");
    }
    Ok(())
}

fn open_encoder(
    rung: &Rung,
    fps: Rational,
    enc_tb: Rational,
    spec: &VideoRangeSpec,
) -> Result<ff::encoder::Video, MediaError> {
    let codec = ff::encoder::find_by_name("libx264")
        .ok_or_else(|| internal_msg("the libx264 encoder is not available"))?;
    let mut enc = codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| internal("libx264 context", e))?;
    enc.set_width(even(rung.width));
    enc.set_height(even(rung.height));
    enc.set_format(ff::format::Pixel::YUV420P);
    enc.set_time_base(enc_tb);
    enc.set_frame_rate(Some(fps));
    enc.set_aspect_ratio(Rational::new(1, 1));
    let bps = f64::from(rung.video_kbps) * 1000.0;
    enc.set_bit_rate(bps as usize);
    enc.set_max_bit_rate((bps * MAXRATE_FACTOR) as usize);
    let fps_f = f64::from(fps.numerator()) / f64::from(fps.denominator());
    // Keyframes are forced on the source timeline; x264's own limit only as a backstop.
    enc.set_gop((spec.gop_seconds * fps_f * KEYINT_BACKSTOP_GOPS).ceil() as u32 + 1);
    enc.set_threading(ff::threading::Config {
        kind: ff::threading::Type::Frame,
        count: spec.threads.max(1),
        ..Default::default()
    });
    let mut opts = ff::Dictionary::new();
    opts.set("preset", X264_PRESET);
    opts.set("profile", "high");
    opts.set("bufsize", &((bps * BUFSIZE_FACTOR) as i64).to_string());
    opts.set("forced-idr", "1");
    opts.set("x264-params", "scenecut=0:open-gop=0");
    enc.open_with(opts).map_err(|e| {
        internal(
            &format!("opening libx264 for {}x{}", rung.width, rung.height),
            e,
        )
    })
}

impl Pipeline<'_> {
    fn build_graph(&mut self, like: &frame::Video) -> Result<Graph, MediaError> {
        let n = self.rungs.len();
        let mut spec = format!(
            "[in]yadif=deint=interlaced,{}split={n}",
            rotation_filters(self.rotation)
        );
        for i in 0..n {
            spec.push_str(&format!("[s{i}]"));
        }
        for (i, rung) in self.spec.rungs.iter().enumerate() {
            spec.push_str(&format!(
                ";[s{i}]scale={}:{},setsar=1,format=yuv420p[out{i}]",
                even(rung.width),
                even(rung.height)
            ));
        }
        Graph::new(like, self.enc_tb, self.sar, &spec, n)
    }

    /// Feeds one frame (pts = its tick), or `None` at the end.
    fn push(&mut self, frame: Option<&frame::Video>) -> Result<(), MediaError> {
        if self.graph.is_none() {
            match frame {
                Some(f) => self.graph = Some(self.build_graph(f)?),
                None => return Ok(()),
            }
        }
        let graph = self
            .graph
            .as_mut()
            .ok_or_else(|| internal_msg("no filter graph"))?;
        graph.push(frame)?;
        for i in 0..self.rungs.len() {
            let sink_tb = graph.time_base(i)?;
            while graph.pull(i, &mut self.filtered)? {
                let n = self.filtered.pts().map(|p| p.rescale(sink_tb, self.enc_tb));
                let Some(n) = n else { continue };
                let rung = &mut self.rungs[i];
                if rung.last_n.is_some_and(|l| n <= l) {
                    continue;
                }
                let key = rung.last_n.is_none_or(|l| {
                    self.clock.gop(n) != self.clock.gop(l)
                        || self.clock.segment(n) != self.clock.segment(l)
                });
                rung.last_n = Some(n);
                self.filtered.set_pts(Some(n));
                self.filtered.set_kind(if key {
                    picture::Type::I
                } else {
                    picture::Type::None
                });
                rung.enc
                    .send_frame(&self.filtered)
                    .map_err(|e| internal("encoding", e))?;
                if let Some(meter) = rung.meter.as_mut() {
                    // Keep the picture (a reference, no copy) until it is decoded back.
                    meter.input(
                        n,
                        std::mem::replace(&mut self.filtered, frame::Video::empty()),
                    );
                }
                drain(rung, &self.clock, self.spec, &mut self.packet)?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(Vec<SegmentOut>, Vec<RenditionQuality>), MediaError> {
        self.push(None)?;
        let (mut out, mut quality) = (Vec::new(), Vec::new());
        for mut rung in self.rungs {
            rung.enc
                .send_eof()
                .map_err(|e| internal("flushing the encoder", e))?;
            drain(&mut rung, &self.clock, self.spec, &mut self.packet)?;
            out.extend(rung.seg.finish()?);
            quality.extend(rung.meter.map(Meter::finish));
        }
        Ok((out, quality))
    }
}

/// Moves every ready packet of a rung's encoder to its segments, starting a segment at
/// each keyframe that begins a new segment period.
fn drain(
    rung: &mut RungOut,
    clock: &Clock,
    spec: &VideoRangeSpec,
    pkt: &mut Packet,
) -> Result<(), MediaError> {
    loop {
        match rung.enc.receive_packet(pkt) {
            Ok(()) => {}
            Err(ff::Error::Eof) => return Ok(()),
            Err(ff::Error::Other { errno }) if errno == ff::error::EAGAIN => return Ok(()),
            Err(e) => return Err(internal("encoding", e)),
        }
        let pts = pkt.pts().or(pkt.dts()).unwrap_or(0);
        let s = clock.segment(pts);
        let start = if !rung.seg.is_open() || (pkt.is_key() && s != rung.open_segment) {
            rung.open_segment = s;
            let first = (spec.start_s / spec.segment_seconds).round() as i64;
            Some((i64::from(spec.first_segment) + s - first).max(0) as u32)
        } else {
            None
        };
        pkt.set_duration(clock.frame_ticks);
        if let Some(meter) = rung.meter.as_mut() {
            // Before muxing, which moves the timestamps off the encoder's ticks.
            meter.packet(pkt);
        }
        rung.seg.write(pkt, start)?;
    }
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[test]
    fn keyframes_sit_on_the_first_frame_at_or_after_each_gop_boundary() {
        // 23.976 fps: boundaries at 2 s × k fall between frames; GOPs of 47 or 48.
        let fps = 24000.0 / 1001.0;
        let c = Clock::new(2.0, 6.0, fps);
        let tick = |n: i64| Clock::nearest_tick(n as f64 / fps);
        let starts: Vec<i64> = (1..300)
            .filter(|&n| c.gop(tick(n)) != c.gop(tick(n - 1)))
            .take(5)
            .collect();
        assert_eq!(starts, vec![48, 96, 144, 192, 240]);
        for n in starts {
            assert!(Clock::seconds(tick(n)) >= 2.0 * c.gop(tick(n)) as f64);
            assert!(Clock::seconds(tick(n - 1)) < 2.0 * c.gop(tick(n)) as f64);
        }
        // Segment starts are GOP starts; a range starting at 12 s starts on frame 288.
        let start = Clock::tick_at(12.0);
        assert_eq!(start, 12 * 90_000);
        assert!(tick(287) < start && tick(288) >= start);
        assert_eq!((c.segment(tick(288)), c.segment(tick(287))), (2, 1));
        assert_eq!(c.frame_ticks, 3754);
        // 25 fps: exact.
        let c = Clock::new(2.0, 6.0, 25.0);
        let tick = |n: i64| Clock::nearest_tick(n as f64 / 25.0);
        assert_eq!(
            (c.segment(tick(150)), c.segment(tick(149)), c.gop(tick(50))),
            (1, 0, 1)
        );
        assert_eq!(c.frame_ticks, 3600);
    }
}
