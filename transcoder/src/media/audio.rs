//! `encode_audio`: the whole audio track as one AAC-LC stereo 48 kHz rendition.
//!
//! decode → libswresample (any layout/rate/format → stereo 48 kHz float planar; 5.1 is
//! downmixed with FFmpeg's default matrix) → 1024-sample frames → AAC → segments. The
//! first sample sits where the source's first audio frame does on the source timeline;
//! after that the audio is continuous (gaps in the source are closed up).

use std::path::Path;

use ff::format::Sample;
use ff::software::resampling;
use ff::{codec, ffi, frame, ChannelLayout, Packet, Rational};
use ffmpeg_next as ff;

use super::input::{
    bad_input, best_audio, create_dir, discard_all_but, internal, internal_msg, is_limit,
    open_audio_decoder, open_input, origin_us, positive, seconds, MAX_DECODE_ERRORS,
    MAX_UNREADABLE_PACKETS,
};
use super::segment::Segmenter;
use super::{MediaError, SegmentOut};

/// Output sample rate.
pub const AUDIO_RATE: i32 = 48_000;

const PLANAR_F32: Sample = Sample::F32(ff::format::sample::Type::Planar);

/// Encodes the source's audio into `out_dir/audio/seg{index:05}.ts` segments of
/// `segment_seconds` on the source timeline (index 0 holds 0..segment_seconds). No audio
/// stream: `Ok(vec![])`.
pub fn encode_audio(
    input: &Path,
    out_dir: &Path,
    segment_seconds: f64,
    kbps: u32,
    progress: &mut dyn FnMut(f64),
) -> Result<Vec<SegmentOut>, MediaError> {
    if !positive(segment_seconds) || kbps == 0 {
        return Err(internal_msg("segment length and bitrate must be positive"));
    }
    let mut ictx = open_input(input)?;
    let Some(ai) = best_audio(&ictx) else {
        return Ok(Vec::new());
    };
    let origin = origin_us(&ictx);
    let total_s = if ictx.duration() > 0 {
        ictx.duration() as f64 / 1e6
    } else {
        0.0
    };
    let st = ictx
        .stream(ai)
        .ok_or_else(|| internal_msg("audio stream vanished"))?;
    let tb = st.time_base();
    let mut dec = open_audio_decoder(&st)?;
    discard_all_but(&mut ictx, &[ai]);

    let enc = open_encoder(kbps)?;
    let dir = out_dir.join("audio");
    create_dir(&dir)?;
    let enc_tb = Rational::new(1, AUDIO_RATE);
    let seg = Segmenter::new("audio", &dir, codec::Parameters::from(&enc), enc_tb);
    let frame_size = (enc.frame_size() as usize).max(1);
    let mut a = AudioOut {
        enc,
        seg,
        segment_seconds,
        frame_size,
        fifo: [Vec::new(), Vec::new()],
        next_pts: None,
        resampler: None,
        open_segment: -1,
        packet: Packet::empty(),
    };

    let mut pkt = Packet::empty();
    let mut decoded = frame::Audio::empty();
    let (mut eof, mut decode_errors, mut any) = (false, 0u32, false);
    let (mut since_progress, mut unreadable) = (0u32, 0u32);
    while !eof {
        match pkt.read(&mut ictx) {
            Ok(()) => {
                if pkt.stream() != ai {
                    continue;
                }
                if let Err(e) = dec.send_packet(&pkt) {
                    if is_limit(&e) {
                        return Err(bad_input("decoding audio", e));
                    }
                    decode_errors += 1;
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
                Err(e) if is_limit(&e) => return Err(bad_input("decoding audio", e)),
                Err(_) => {
                    decode_errors += 1;
                    break;
                }
            }
            any = true;
            if a.next_pts.is_none() {
                let t = decoded
                    .timestamp()
                    .or(decoded.pts())
                    .map_or(0.0, |ts| seconds(ts, tb, origin));
                a.next_pts = Some((t * f64::from(AUDIO_RATE)).round() as i64);
            }
            a.resample(&decoded)?;
            since_progress += 1;
            if since_progress >= 50 && total_s > 0.0 {
                since_progress = 0;
                let done = a.next_pts.unwrap_or(0) as f64 / f64::from(AUDIO_RATE);
                progress((done / total_s).clamp(0.0, 0.99));
            }
        }
        if !any && decode_errors > MAX_DECODE_ERRORS {
            return Err(MediaError::BadInput("the audio cannot be decoded".into()));
        }
    }
    if !any {
        return Ok(Vec::new());
    }
    a.flush()?;
    let out = a.seg.finish()?;
    progress(1.0);
    Ok(out)
}

fn open_encoder(kbps: u32) -> Result<ff::encoder::Audio, MediaError> {
    let codec = ff::encoder::find(codec::Id::AAC)
        .ok_or_else(|| internal_msg("the aac encoder is not available"))?;
    let mut enc = codec::context::Context::new_with_codec(codec)
        .encoder()
        .audio()
        .map_err(|e| internal("aac context", e))?;
    enc.set_rate(AUDIO_RATE);
    enc.set_channel_layout(ChannelLayout::STEREO);
    enc.set_channels(2);
    enc.set_format(PLANAR_F32);
    enc.set_bit_rate(kbps as usize * 1000);
    enc.set_time_base(Rational::new(1, AUDIO_RATE));
    // SAFETY: setting the new-API channel layout of the not yet opened context.
    unsafe {
        let ctx = enc.as_mut_ptr();
        ffi::av_channel_layout_default(&mut (*ctx).ch_layout, 2);
    }
    enc.open_as(codec)
        .map_err(|e| internal("opening the aac encoder", e))
}

struct AudioOut {
    enc: ff::encoder::Audio,
    seg: Segmenter,
    segment_seconds: f64,
    frame_size: usize,
    /// Resampled samples not yet encoded, left and right.
    fifo: [Vec<f32>; 2],
    /// Timestamp (1/48000) of the first sample in the fifo.
    next_pts: Option<i64>,
    /// The resampler, and the input (format, layout, rate) it was made for.
    resampler: Option<(resampling::Context, (Sample, u64, u32))>,
    open_segment: i64,
    packet: Packet,
}

impl AudioOut {
    fn resample(&mut self, input: &frame::Audio) -> Result<(), MediaError> {
        let layout = if input.channel_layout().is_empty()
            || input.channel_layout().channels() != i32::from(input.channels())
        {
            ChannelLayout::default(i32::from(input.channels()))
        } else {
            input.channel_layout()
        };
        let key = (input.format(), layout.bits(), input.rate());
        if self.resampler.as_ref().is_none_or(|(_, k)| *k != key) {
            self.flush_resampler()?;
            let ctx = resampling::Context::get(
                input.format(),
                layout,
                input.rate(),
                PLANAR_F32,
                ChannelLayout::STEREO,
                AUDIO_RATE as u32,
            )
            .map_err(|e| bad_input("audio format", e))?;
            self.resampler = Some((ctx, key));
        }
        // SAFETY: extended_data holds one pointer per plane of `samples()` samples.
        let data = unsafe { (*input.as_ptr()).extended_data as *const *const u8 };
        self.convert(data, input.samples())?;
        self.encode_ready(false)
    }

    /// Runs the resampler on `n` input samples (null data: drain it) into the fifo.
    fn convert(&mut self, data: *const *const u8, n: usize) -> Result<usize, MediaError> {
        let Some((ctx, _)) = self.resampler.as_mut() else {
            return Ok(0);
        };
        // SAFETY: the resampler is initialised; the output buffers hold `cap` samples
        // each, which swr_get_out_samples guarantees to be enough.
        unsafe {
            let swr = ctx.as_mut_ptr();
            let cap = ffi::swr_get_out_samples(swr, n as i32).max(0) as usize + 32;
            let mut left = vec![0f32; cap];
            let mut right = vec![0f32; cap];
            let mut out = [left.as_mut_ptr() as *mut u8, right.as_mut_ptr() as *mut u8];
            let got = ffi::swr_convert(
                swr,
                out.as_mut_ptr(),
                cap as i32,
                data as *mut *const u8,
                n as i32,
            );
            if got < 0 {
                return Err(bad_input("resampling", ff::Error::from(got)));
            }
            let got = got as usize;
            self.fifo[0].extend_from_slice(&left[..got]);
            self.fifo[1].extend_from_slice(&right[..got]);
            Ok(got)
        }
    }

    fn flush_resampler(&mut self) -> Result<(), MediaError> {
        while self.convert(std::ptr::null(), 0)? > 0 {}
        Ok(())
    }

    /// Encodes every full frame in the fifo (and the rest too when `last`).
    fn encode_ready(&mut self, last: bool) -> Result<(), MediaError> {
        while self.fifo[0].len() >= self.frame_size || (last && !self.fifo[0].is_empty()) {
            let n = self.fifo[0].len().min(self.frame_size);
            let mut f = frame::Audio::new(PLANAR_F32, n, ChannelLayout::STEREO);
            f.set_rate(AUDIO_RATE as u32);
            for ch in 0..2 {
                let bytes = f.data_mut(ch);
                for (i, s) in self.fifo[ch].drain(..n).enumerate() {
                    bytes[4 * i..4 * i + 4].copy_from_slice(&s.to_ne_bytes());
                }
            }
            let pts = self.next_pts.unwrap_or(0);
            f.set_pts(Some(pts));
            self.next_pts = Some(pts + n as i64);
            self.enc
                .send_frame(&f)
                .map_err(|e| internal("encoding audio", e))?;
            self.drain()?;
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<(), MediaError> {
        loop {
            match self.enc.receive_packet(&mut self.packet) {
                Ok(()) => {}
                Err(ff::Error::Eof) => return Ok(()),
                Err(ff::Error::Other { errno }) if errno == ff::error::EAGAIN => return Ok(()),
                Err(e) => return Err(internal("encoding audio", e)),
            }
            let pts = self.packet.pts().or(self.packet.dts()).unwrap_or(0);
            let s = ((pts as f64 / f64::from(AUDIO_RATE) + 1e-6) / self.segment_seconds)
                .floor()
                .max(0.0) as i64;
            let start = (!self.seg.is_open() || s > self.open_segment).then(|| {
                self.open_segment = s;
                s as u32
            });
            if self.packet.duration() <= 0 {
                self.packet.set_duration(self.frame_size as i64);
            }
            self.seg.write(&mut self.packet, start)?;
        }
    }

    fn flush(&mut self) -> Result<(), MediaError> {
        self.flush_resampler()?;
        self.encode_ready(true)?;
        self.enc
            .send_eof()
            .map_err(|e| internal("flushing the aac encoder", e))?;
        self.drain()
    }
}
