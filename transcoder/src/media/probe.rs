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

use ff::{ffi, frame, Packet, Rational};
use ffmpeg_next as ff;

use super::input::{
    bad_input, display_size, frame_rate, internal_msg, open_audio_decoder, open_input,
    open_video_decoder, origin_us, rotation, sample_aspect_ratio, seconds, select_streams,
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

/// Longest stretch without a video packet accepted, in seconds (10 min). Frame-rate
/// conversion fills a gap with repeated frames, so a gap of days from damaged
/// timestamps would be encoded as days of still picture.
pub const MAX_VIDEO_GAP_S: f64 = 600.0;

/// How far the data may end before the declared duration: max(this, 10%).
const TRUNCATION_SLACK_S: f64 = 2.0;

/// Probes `path` (see the module documentation for what makes it `BadInput`).
pub fn probe(path: &Path) -> Result<ProbeInfo, MediaError> {
    let mut ictx = open_input(path)?;
    let sel = select_streams(&ictx)?;
    let origin = origin_us(&ictx);
    let container = ictx.format().name().to_string();
    // SAFETY: plain fields of the live format context.
    let (declared_us, method) = unsafe {
        (
            (*ictx.as_ptr()).duration,
            (*ictx.as_ptr()).duration_estimation_method,
        )
    };
    let time_bases: Vec<Rational> = ictx.streams().map(|s| s.time_base()).collect();

    let vst = ictx
        .stream(sel.video)
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
    let fps_f = f64::from(fps.numerator()) / f64::from(fps.denominator());
    let rot = rotation(&vst);
    let (width, height) = display_size(cw, ch, sample_aspect_ratio(&vst), rot);
    let video_codec = par.id().name().to_string();
    let mut vdec = open_video_decoder(&vst, 2)?;

    let mut audio = None;
    if let Some(ai) = sel.audio {
        let ast = ictx
            .stream(ai)
            .ok_or_else(|| internal_msg("audio stream vanished"))?;
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
        // An audio stream FFmpeg cannot decode counts as no audio.
        if let Ok(adec) = open_audio_decoder(&ast) {
            audio = Some((
                ai,
                apar.id().name().to_string(),
                channels.max(0) as u32,
                adec,
            ));
        }
    }

    let mut pkt = Packet::empty();
    let mut decoded = frame::Video::empty();
    let mut got_frame = false;
    let (mut decode_errors, mut video_packets, mut corrupt) = (0u32, 0u32, 0u32);
    let (mut v_start, mut v_end, mut any_end) =
        (f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
    let mut tail: VecDeque<Packet> = VecDeque::with_capacity(AUDIO_TAIL_PACKETS + 1);
    loop {
        match pkt.read(&mut ictx) {
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
        let idx = pkt.stream();
        let tb = time_bases
            .get(idx)
            .copied()
            .unwrap_or_else(|| Rational::new(1, 90000));
        if let Some(ts) = pkt.pts().or(pkt.dts()) {
            let start = seconds(ts, tb, origin);
            let dur = pkt.duration().max(0) as f64 * f64::from(tb.numerator())
                / f64::from(tb.denominator().max(1));
            if idx == sel.video {
                let dur = if dur > 0.0 { dur } else { 1.0 / fps_f };
                if v_end.is_finite() && start - v_end > MAX_VIDEO_GAP_S {
                    return Err(MediaError::BadInput(format!(
                        "the video jumps from {v_end:.1} s to {start:.1} s: a gap over the \
                         {MAX_VIDEO_GAP_S:.0} s limit (damaged timestamps?)"
                    )));
                }
                v_start = v_start.min(start);
                v_end = v_end.max(start + dur);
                any_end = any_end.max(start + dur);
            } else if audio.as_ref().is_some_and(|a| a.0 == idx) {
                any_end = any_end.max(start + dur);
            }
        }
        if idx == sel.video {
            video_packets += 1;
            if !got_frame {
                if let Err(e) = vdec.send_packet(&pkt) {
                    if super::input::is_limit(&e) {
                        return Err(bad_input("decoding", e));
                    }
                    decode_errors += 1;
                }
                got_frame = vdec.receive_frame(&mut decoded).is_ok();
                if !got_frame
                    && (decode_errors > MAX_DECODE_ERRORS
                        || video_packets > MAX_PACKETS_BEFORE_FIRST_FRAME)
                {
                    return Err(MediaError::BadInput(
                        "the first video frames cannot be decoded".into(),
                    ));
                }
            }
        } else if audio.as_ref().is_some_and(|a| a.0 == idx) {
            tail.push_back(pkt.clone());
            if tail.len() > AUDIO_TAIL_PACKETS {
                tail.pop_front();
            }
        }
    }
    if !got_frame {
        let _ = vdec.send_eof();
        got_frame = vdec.receive_frame(&mut decoded).is_ok();
    }
    if !got_frame {
        return Err(MediaError::BadInput(if video_packets == 0 {
            "the video stream has no data".into()
        } else {
            "no video frame can be decoded".into()
        }));
    }

    let declared = (declared_us > 0
        && method != ffi::AVDurationEstimationMethod::AVFMT_DURATION_FROM_BITRATE)
        .then(|| declared_us as f64 / 1e6);
    let duration_s = if any_end.is_finite() {
        any_end.max(0.0)
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
    let video_duration_s = if v_end.is_finite() {
        (v_end - v_start.max(0.0)).max(0.0)
    } else {
        duration_s
    };

    let (has_audio, audio_codec, audio_channels) = match audio {
        Some((_, name, channels, mut adec)) => {
            check_audio_tail(&mut adec, &tail)?;
            (true, Some(name), channels)
        }
        None => (false, None, 0),
    };

    Ok(ProbeInfo {
        duration_s,
        has_video: true,
        has_audio,
        width,
        height,
        rotation: rot,
        fps: fps_f,
        video_codec,
        audio_codec,
        audio_channels,
        container,
        video_duration_s,
    })
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
