//! `encode_video_range`: one range of the source, decoded once, into every rung.
//!
//! decode → (deinterlace, rotate, split, scale ×rungs) → libx264 ×rungs → segments.
//! Frames are numbered on the source timeline at the source's constant frame rate
//! (`n = round(t × fps)`, duplicates dropped), and that number is the encoder timestamp
//! (time base 1/fps), so every range of one source agrees on every frame's time.
//!
//! [`encode_video_range_with_quality`] also measures each rung against its input (PSNR,
//! SSIM; see [`super::quality`]): each rung's encoder input is kept until its packet has
//! been decoded back.

use ff::format::context::Input;
use ff::{codec, frame, picture, Packet, Rational, Rescale};
use ffmpeg_next as ff;

use super::graph::Graph;
use super::input::{
    bad_input, create_dir, discard_all_but, even, frame_rate, internal, internal_msg, is_limit,
    open_input, open_video_decoder, origin_us, positive, rotation, rotation_filters,
    sample_aspect_ratio, seconds, select_streams, MAX_DECODE_ERRORS, MAX_UNREADABLE_PACKETS,
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

/// Seek back this much further (seconds) each time a seek lands after the range start;
/// the last try decodes from the beginning.
const SEEK_MARGINS_S: &[f64] = &[0.0, 2.0, 10.0, f64::INFINITY];

/// Which GOP and segment a frame number falls in, on the source timeline.
#[derive(Clone, Copy)]
struct Clock {
    /// Frames per GOP and per segment (real numbers: 2 s at 23.976 fps = 47.95).
    gop_frames: f64,
    seg_frames: f64,
    fps: f64,
}

impl Clock {
    /// The first frame at or after `t` seconds.
    fn frame_at(&self, t: f64) -> i64 {
        (t * self.fps - 1e-6).ceil() as i64
    }
    /// Number of the GOP containing frame `n` (GOP k starts on the first frame at or
    /// after k × gop_seconds).
    fn gop(&self, n: i64) -> i64 {
        ((n as f64 + 1e-6) / self.gop_frames).floor() as i64
    }
    fn segment(&self, n: i64) -> i64 {
        ((n as f64 + 1e-6) / self.seg_frames).floor() as i64
    }
}

struct RungOut {
    enc: ff::encoder::Video,
    seg: Segmenter,
    /// Frame number of the last frame sent, and segment of the open segment file.
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
    let mut ictx = open_input(&spec.input)?;
    let sel = select_streams(&ictx)?;
    let vi = sel.video;
    let origin = origin_us(&ictx);
    let total_s = if ictx.duration() > 0 {
        ictx.duration() as f64 / 1e6
    } else {
        0.0
    };
    let st = ictx
        .stream(vi)
        .ok_or_else(|| internal_msg("video stream vanished"))?;
    let tb = st.time_base();
    let fps = frame_rate(&st);
    let fps_f = f64::from(fps.numerator()) / f64::from(fps.denominator());
    let rotation = rotation(&st);
    let sar = sample_aspect_ratio(&st);
    let mut dec = open_video_decoder(&st, spec.threads)?;
    discard_all_but(&mut ictx, &[vi]);

    let clock = Clock {
        gop_frames: spec.gop_seconds * fps_f,
        seg_frames: spec.segment_seconds * fps_f,
        fps: fps_f,
    };
    let n_start = clock.frame_at(spec.start_s);
    let n_end = spec.end_s.map(|e| clock.frame_at(e));
    let end_s = spec.end_s.unwrap_or(total_s).max(spec.start_s);
    let enc_tb = fps.invert();

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
        let name = rendition_name(rung);
        let dir = spec.out_dir.join(&name);
        create_dir(&dir)?;
        let enc = open_encoder(rung, fps, spec)?;
        let seg = Segmenter::new(&name, &dir, codec::Parameters::from(&enc), enc_tb);
        let meter = if measure {
            Some(Meter::new(&name, &enc, spec.threads)?)
        } else {
            None
        };
        pipe.rungs.push(RungOut {
            enc,
            seg,
            last_n: None,
            open_segment: 0,
            meter,
        });
    }

    let mut attempt = 0;
    if n_start > 0 {
        seek(&mut ictx, origin, spec.start_s, SEEK_MARGINS_S[attempt]);
    }
    let mut check_landing = n_start > 0;
    let mut pkt = Packet::empty();
    let mut decoded = frame::Video::empty();
    let (mut any_decoded, mut decode_errors, mut eof, mut done) = (false, 0u32, false, false);
    let mut last_n: Option<i64> = None;
    let (mut frames_since_progress, mut unreadable) = (0u32, 0u32);
    while !done {
        match pkt.read(&mut ictx) {
            Ok(()) => {
                if pkt.stream() != vi {
                    continue;
                }
                if let Err(e) = dec.send_packet(&pkt) {
                    if is_limit(&e) {
                        return Err(bad_input("decoding", e));
                    }
                    decode_errors += 1;
                    if !any_decoded && decode_errors > MAX_DECODE_ERRORS {
                        return Err(MediaError::BadInput("the video cannot be decoded".into()));
                    }
                }
            }
            Err(ff::Error::Eof) => {
                eof = true;
                let _ = dec.send_eof();
            }
            Err(ff::Error::InvalidData) => {
                unreadable += 1;
                if unreadable > MAX_UNREADABLE_PACKETS {
                    return Err(MediaError::BadInput("too much unreadable data".into()));
                }
                continue;
            }
            Err(e) => return Err(bad_input("reading the input", e)),
        }
        loop {
            match dec.receive_frame(&mut decoded) {
                Ok(()) => {}
                Err(ff::Error::Eof) => break,
                Err(ff::Error::Other { errno }) if errno == ff::error::EAGAIN => break,
                Err(e) if is_limit(&e) => return Err(bad_input("decoding", e)),
                Err(_) => {
                    decode_errors += 1;
                    break;
                }
            }
            any_decoded = true;
            let n = match decoded.timestamp().or(decoded.pts()) {
                Some(ts) => (seconds(ts, tb, origin) * fps_f).round() as i64,
                None => last_n.map_or(n_start, |l| l + 1),
            };
            if check_landing {
                check_landing = false;
                if n > n_start && attempt + 1 < SEEK_MARGINS_S.len() {
                    // The seek landed after the start: go back further and decode again.
                    attempt += 1;
                    seek(&mut ictx, origin, spec.start_s, SEEK_MARGINS_S[attempt]);
                    dec.flush();
                    check_landing = true;
                    eof = false;
                    break;
                }
            }
            if n < n_start || last_n.is_some_and(|l| n <= l) {
                continue;
            }
            if n_end.is_some_and(|e| n >= e) {
                done = true;
                break;
            }
            last_n = Some(n);
            decoded.set_pts(Some(n));
            decoded.set_kind(picture::Type::None);
            pipe.push(Some(&decoded))?;
            frames_since_progress += 1;
            if frames_since_progress >= 12 && end_s > spec.start_s {
                frames_since_progress = 0;
                progress(
                    ((n as f64 / fps_f - spec.start_s) / (end_s - spec.start_s)).clamp(0.0, 0.99),
                );
            }
        }
        if eof {
            break;
        }
    }
    if !any_decoded {
        return Err(MediaError::BadInput("no video frame can be decoded".into()));
    }
    let out = pipe.finish()?;
    progress(1.0);
    Ok(out)
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

/// Seeks to the keyframe at or before `start_s - margin` (the beginning when `margin`
/// is infinite). A failed seek leaves the position alone: the frames before the start
/// are then decoded and dropped.
fn seek(ictx: &mut Input, origin_us: i64, start_s: f64, margin: f64) {
    if margin.is_finite() {
        let target = origin_us + ((start_s - margin).max(0.0) * 1e6) as i64;
        if ictx.seek(target, ..target).is_ok() {
            return;
        }
    }
    let _ = ictx.seek(origin_us, ..);
}

fn open_encoder(
    rung: &Rung,
    fps: Rational,
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
    enc.set_time_base(fps.invert());
    enc.set_frame_rate(Some(fps));
    enc.set_aspect_ratio(Rational::new(1, 1));
    let bps = f64::from(rung.video_kbps) * 1000.0;
    enc.set_bit_rate(bps as usize);
    enc.set_max_bit_rate((bps * MAXRATE_FACTOR) as usize);
    let gop_frames =
        (spec.gop_seconds * f64::from(fps.numerator()) / f64::from(fps.denominator())).ceil();
    // Keyframes are forced on the source timeline; x264's own limit only as a backstop.
    enc.set_gop(gop_frames as u32 + 1);
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

    /// Feeds one frame (pts = frame number), or `None` at the end.
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
        pkt.set_duration(1);
        if let Some(meter) = rung.meter.as_mut() {
            // Before muxing, which moves the timestamps off frame numbers.
            meter.packet(pkt);
        }
        rung.seg.write(pkt, start)?;
    }
}

#[cfg(test)]
mod tests {
    use super::Clock;

    fn clock(fps: f64) -> Clock {
        Clock {
            gop_frames: 2.0 * fps,
            seg_frames: 6.0 * fps,
            fps,
        }
    }

    #[test]
    fn keyframes_sit_on_the_first_frame_at_or_after_each_gop_boundary() {
        // 23.976 fps: boundaries at 2 s × k fall between frames; GOPs of 47 or 48.
        let c = clock(24000.0 / 1001.0);
        let starts: Vec<i64> = (1..300)
            .filter(|&n| c.gop(n) != c.gop(n - 1))
            .take(5)
            .collect();
        assert_eq!(starts, vec![48, 96, 144, 192, 240]);
        for n in starts {
            assert!(n as f64 / c.fps >= 2.0 * c.gop(n) as f64);
            assert!(((n - 1) as f64 / c.fps) < 2.0 * c.gop(n) as f64);
        }
        // Segment starts are GOP starts; a range starting at 12 s starts on frame 288.
        assert_eq!(c.frame_at(12.0), 288);
        assert_eq!(c.segment(288), 2);
        assert_eq!(c.segment(287), 1);
        // 25 fps: exact.
        let c = clock(25.0);
        assert_eq!(
            (c.frame_at(6.0), c.segment(150), c.segment(149), c.gop(50)),
            (150, 1, 0, 1)
        );
    }
}
