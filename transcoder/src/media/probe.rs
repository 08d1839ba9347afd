//! `probe`: what a source is, and whether it is whole.
//!
//! One pass over every packet (demuxing only, no decoding past the first video frame),
//! so the cost is one read of the file. Besides the stream facts it checks that the file
//! is usable: a video stream whose first frames decode, no unreadable data, data that
//! reaches the duration the container declares (truncated uploads fail here rather than
//! as missing segments later), a last audio packet that decodes, and timestamps that
//! stay plausible (at most [`MAX_DURATION_S`] long, no video gap over
//! [`MAX_VIDEO_GAP_S`]) before any task plan is built from them.

use std::collections::VecDeque;
use std::path::Path;

use ff::format::context::Input;
use ff::{ffi, frame, Packet, Rational};
use ffmpeg_next as ff;

use super::input::{
    bad_input, best_audio, best_video, display_size, frame_rate, internal_msg, open_audio_decoder,
    open_input, open_video_decoder, origin_us, rotation, sample_aspect_ratio, seconds,
    MAX_DECODE_ERRORS, MAX_UNREADABLE_PACKETS,
};
use super::{MediaError, ProbeInfo};

/// Largest accepted picture side, pixels.
pub const MAX_DIMENSION: u32 = 16384;

/// Video packets read without a decoded frame before the input counts as undecodable.
const MAX_PACKETS_BEFORE_FIRST_FRAME: u32 = 600;

/// Audio packets decoded at the end of the stream to check that it is whole.
const AUDIO_TAIL_PACKETS: usize = 4;

/// Longest input accepted, in seconds (12 h). A feature film or a day's lecture fits;
/// beyond it the timestamps are almost certainly bogus (a tiny file with a packet at
/// t = 10⁹ s), and the task plan and the encoders' output would be unbounded.
pub const MAX_DURATION_S: f64 = 12.0 * 3600.0;

/// Longest stretch without a video packet accepted, in seconds (10 min). A camera
/// paused for a while is a real gap (kept as it is); a gap of days comes from damaged
/// timestamps, and the task plan, built over the timeline, would be days of ranges of
/// nothing.
pub const MAX_VIDEO_GAP_S: f64 = 600.0;

/// How far the data may end before the declared duration: max(this, 10%).
const TRUNCATION_SLACK_S: f64 = 2.0;

/// The video stream's facts, and a decoder to check that its first frames decode.
struct VideoFacts {
    index: usize,
    width: u32,
    height: u32,
    rotation: i32,
    fps: f64,
    codec: String,
    dec: ff::decoder::Video,
}

/// The audio stream's facts, and a decoder to check its end.
struct AudioFacts {
    index: usize,
    codec: String,
    channels: u32,
    dec: ff::decoder::Audio,
}

/// What one pass over the packets found.
struct Scan {
    /// Video start and end, and the end of any stream used, seconds on the timeline.
    v_start: f64,
    v_end: f64,
    any_end: f64,
    video_packets: u32,
    got_frame: bool,
    /// The last audio packets.
    tail: VecDeque<Packet>,
}

/// Probes `path` (see the module documentation for what makes it `BadInput`). A source
/// with audio and no video (a podcast, a song) probes with `has_video: false`.
pub fn probe(path: &Path) -> Result<ProbeInfo, MediaError> {
    let mut ictx = open_input(path)?;
    let container = ictx.format().name().to_string();
    // SAFETY: plain fields of the live format context.
    let (declared_us, method) = unsafe {
        (
            (*ictx.as_ptr()).duration,
            (*ictx.as_ptr()).duration_estimation_method,
        )
    };
    let mut video = match best_video(&ictx) {
        Some(vi) => Some(video_facts(&ictx, vi)?),
        None => None,
    };
    let audio_index = best_audio(&ictx);
    // An audio stream FFmpeg cannot decode counts as no audio.
    let audio = audio_index.and_then(|ai| audio_facts(&ictx, ai));
    if video.is_none() && audio.is_none() {
        return Err(match audio_index {
            Some(_) => {
                MediaError::BadInput("no video stream, and the audio cannot be decoded".into())
            }
            None => MediaError::NotMedia("no video or audio stream".into()),
        });
    }
    let scan = scan(&mut ictx, video.as_mut(), audio.as_ref())?;
    if video.is_some() && !scan.got_frame {
        return Err(MediaError::BadInput(if scan.video_packets == 0 {
            "the video stream has no data".into()
        } else {
            "no video frame can be decoded".into()
        }));
    }
    if video.is_none() && !scan.any_end.is_finite() {
        return Err(MediaError::BadInput("the audio stream has no data".into()));
    }

    let declared = (declared_us > 0
        && method != ffi::AVDurationEstimationMethod::AVFMT_DURATION_FROM_BITRATE)
        .then(|| declared_us as f64 / 1e6);
    let duration_s = if scan.any_end.is_finite() {
        scan.any_end.max(0.0)
    } else {
        declared.unwrap_or(0.0)
    };
    if duration_s > MAX_DURATION_S {
        return Err(MediaError::BadInput(format!(
            "the input lasts {duration_s:.0} s by its timestamps, above the {MAX_DURATION_S:.0} s limit"
        )));
    }
    if let Some(declared) = declared {
        if declared - duration_s > TRUNCATION_SLACK_S.max(declared * 0.1) {
            return Err(MediaError::BadInput(format!(
                "truncated: the container declares {declared:.1} s but its data ends at {duration_s:.1} s"
            )));
        }
    }
    let video_duration_s = match (&video, scan.v_end.is_finite()) {
        (None, _) => 0.0,
        (Some(_), true) => (scan.v_end - scan.v_start.max(0.0)).max(0.0),
        (Some(_), false) => duration_s,
    };
    let (has_audio, audio_codec, audio_channels) = match audio {
        Some(mut a) => {
            check_audio_tail(&mut a.dec, &scan.tail)?;
            (true, Some(a.codec), a.channels)
        }
        None => (false, None, 0),
    };
    let v = video.as_ref();
    Ok(ProbeInfo {
        duration_s,
        has_video: v.is_some(),
        has_audio,
        width: v.map_or(0, |v| v.width),
        height: v.map_or(0, |v| v.height),
        rotation: v.map_or(0, |v| v.rotation),
        fps: v.map_or(0.0, |v| v.fps),
        video_codec: v.map(|v| v.codec.clone()).unwrap_or_default(),
        audio_codec,
        audio_channels,
        container,
        video_duration_s,
    })
}

fn video_facts(ictx: &Input, index: usize) -> Result<VideoFacts, MediaError> {
    let vst = ictx
        .stream(index)
        .ok_or_else(|| internal_msg("video stream vanished"))?;
    let par = vst.parameters();
    // SAFETY: plain fields of the stream's codec parameters.
    let (cw, ch) = unsafe { ((*par.as_ptr()).width, (*par.as_ptr()).height) };
    if cw <= 0 || ch <= 0 {
        return Err(MediaError::BadInput(
            "the video stream has no picture size".into(),
        ));
    }
    let (cw, ch) = (cw as u32, ch as u32);
    if cw > MAX_DIMENSION || ch > MAX_DIMENSION {
        return Err(MediaError::BadInput(format!(
            "the video is {cw}x{ch}, above the {MAX_DIMENSION} px limit"
        )));
    }
    let fps = frame_rate(&vst);
    let rotation = rotation(&vst);
    let (width, height) = display_size(cw, ch, sample_aspect_ratio(&vst), rotation);
    Ok(VideoFacts {
        index,
        width,
        height,
        rotation,
        fps: f64::from(fps.numerator()) / f64::from(fps.denominator()),
        codec: par.id().name().to_string(),
        dec: open_video_decoder(&vst, 2)?,
    })
}

fn audio_facts(ictx: &Input, index: usize) -> Option<AudioFacts> {
    let ast = ictx.stream(index)?;
    let apar = ast.parameters();
    // SAFETY: plain fields of the stream's codec parameters.
    let channels = unsafe {
        let p = apar.as_ptr();
        if (*p).ch_layout.nb_channels > 0 {
            (*p).ch_layout.nb_channels
        } else {
            (*p).channels
        }
    };
    Some(AudioFacts {
        index,
        codec: apar.id().name().to_string(),
        channels: channels.max(0) as u32,
        dec: open_audio_decoder(&ast).ok()?,
    })
}

/// One pass over every packet: stream extents, gaps, the first video frame, the audio's
/// last packets.
fn scan(
    ictx: &mut Input,
    mut video: Option<&mut VideoFacts>,
    audio: Option<&AudioFacts>,
) -> Result<Scan, MediaError> {
    let origin = origin_us(ictx);
    let time_bases: Vec<Rational> = ictx.streams().map(|s| s.time_base()).collect();
    let vi = video.as_ref().map(|v| v.index);
    let ai = audio.map(|a| a.index);
    let nominal_frame_s = video.as_ref().map_or(0.0, |v| 1.0 / v.fps);
    let mut s = Scan {
        v_start: f64::INFINITY,
        v_end: f64::NEG_INFINITY,
        any_end: f64::NEG_INFINITY,
        video_packets: 0,
        got_frame: false,
        tail: VecDeque::with_capacity(AUDIO_TAIL_PACKETS + 1),
    };
    let mut pkt = Packet::empty();
    let mut decoded = frame::Video::empty();
    let (mut decode_errors, mut corrupt) = (0u32, 0u32);
    loop {
        match pkt.read(ictx) {
            Ok(()) => {}
            Err(ff::Error::Eof) => break,
            Err(ff::Error::InvalidData) => {
                corrupt += 1;
                if corrupt > MAX_UNREADABLE_PACKETS {
                    return Err(MediaError::BadInput("too much unreadable data".into()));
                }
                continue;
            }
            Err(e) => return Err(bad_input("reading the input", e)),
        }
        let idx = Some(pkt.stream());
        if idx != vi && idx != ai {
            continue;
        }
        let tb = time_bases
            .get(pkt.stream())
            .copied()
            .unwrap_or_else(|| Rational::new(1, 90000));
        if let Some(ts) = pkt.pts().or(pkt.dts()) {
            let start = seconds(ts, tb, origin);
            let dur = pkt.duration().max(0) as f64 * f64::from(tb.numerator())
                / f64::from(tb.denominator().max(1));
            if idx == vi {
                let dur = if dur > 0.0 { dur } else { nominal_frame_s };
                if s.v_end.is_finite() && start - s.v_end > MAX_VIDEO_GAP_S {
                    return Err(MediaError::BadInput(format!(
                        "the video jumps from {:.1} s to {start:.1} s: a gap over the \
                         {MAX_VIDEO_GAP_S:.0} s limit (damaged timestamps?)",
                        s.v_end
                    )));
                }
                s.v_start = s.v_start.min(start);
                s.v_end = s.v_end.max(start + dur);
            }
            s.any_end = s.any_end.max(start + dur);
        }
        match video.as_deref_mut() {
            Some(v) if idx == vi => {
                s.video_packets += 1;
                if !s.got_frame {
                    if let Err(e) = v.dec.send_packet(&pkt) {
                        if super::input::is_limit(&e) {
                            return Err(bad_input("decoding", e));
                        }
                        decode_errors += 1;
                    }
                    s.got_frame = v.dec.receive_frame(&mut decoded).is_ok();
                    if !s.got_frame
                        && (decode_errors > MAX_DECODE_ERRORS
                            || s.video_packets > MAX_PACKETS_BEFORE_FIRST_FRAME)
                    {
                        return Err(MediaError::BadInput(
                            "the first video frames cannot be decoded".into(),
                        ));
                    }
                }
            }
            _ => {
                s.tail.push_back(pkt.clone());
                if s.tail.len() > AUDIO_TAIL_PACKETS {
                    s.tail.pop_front();
                }
            }
        }
    }
    if let Some(v) = video {
        if !s.got_frame {
            let _ = v.dec.send_eof();
            s.got_frame = v.dec.receive_frame(&mut decoded).is_ok();
        }
    }
    Ok(s)
}

/// Decodes the last audio packets with a fresh decoder: the very last one must decode
/// (a cut-off upload usually ends in a partial packet). Earlier ones may fail, as some
/// codecs need state from packets before them.
fn check_audio_tail(
    dec: &mut ff::decoder::Audio,
    tail: &VecDeque<Packet>,
) -> Result<(), MediaError> {
    let mut frame = frame::Audio::empty();
    let mut last_failed = false;
    for (i, pkt) in tail.iter().enumerate() {
        let is_last = i + 1 == tail.len();
        let mut failed = dec.send_packet(pkt).is_err();
        if is_last {
            failed |= dec.send_eof().is_err();
        }
        loop {
            match dec.receive_frame(&mut frame) {
                Ok(()) => {}
                Err(ff::Error::Eof) => break,
                Err(ff::Error::Other { errno }) if errno == ff::error::EAGAIN => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if is_last {
            last_failed = failed;
        }
    }
    if last_failed {
        return Err(MediaError::BadInput(
            "the audio ends in a packet that cannot be decoded (truncated?)".into(),
        ));
    }
    Ok(())
}
