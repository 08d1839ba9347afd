//! `VideoReader`: the one video decode loop of the engine (range encodes and posters).
//!
//! It decodes what the ffmpeg CLI decodes from the same file: a picture that fails to
//! decode is skipped and decoding goes on (as the CLI does without `-xerror`), the
//! decoder is drained at every end of input so its last frames (held back for
//! reordering or by frame threads) come out, and unreadable stretches of the container
//! are stepped over. Only an input that yields no frame at all after
//! [`MAX_DECODE_ERRORS`] errors, or that is mostly unreadable, is refused.

use std::path::Path;

use ff::format::context::Input;
use ff::format::stream::Stream;
use ff::{frame, Packet, Rational};
use ffmpeg_next as ff;

use super::input::{
    bad_input, discard_all_but, internal_msg, is_limit, open_input, open_video_decoder, origin_us,
    seconds, video_stream, MAX_DECODE_ERRORS, MAX_UNREADABLE_PACKETS,
};
use super::MediaError;

/// The best video stream of one input, decoded frame by frame.
pub(crate) struct VideoReader {
    ictx: Input,
    dec: ff::decoder::Video,
    vi: usize,
    tb: Rational,
    origin: i64,
    pkt: Packet,
    /// The end of the input was reached and the decoder told (it is being drained).
    eof: bool,
    decode_errors: u32,
    unreadable: u32,
    any_decoded: bool,
}

impl VideoReader {
    /// Opens `path`'s best video stream with a decoder of `threads` frame threads; the
    /// other streams are not even demuxed.
    pub fn open(path: &Path, threads: usize) -> Result<Self, MediaError> {
        let mut ictx = open_input(path)?;
        let vi = video_stream(&ictx)?;
        let st = ictx
            .stream(vi)
            .ok_or_else(|| internal_msg("video stream vanished"))?;
        let (tb, dec) = (st.time_base(), open_video_decoder(&st, threads)?);
        let origin = origin_us(&ictx);
        discard_all_but(&mut ictx, &[vi]);
        Ok(VideoReader {
            ictx,
            dec,
            vi,
            tb,
            origin,
            pkt: Packet::empty(),
            eof: false,
            decode_errors: 0,
            unreadable: 0,
            any_decoded: false,
        })
    }

    /// The video stream (for its frame rate, rotation, aspect ratio).
    pub fn stream(&self) -> Result<Stream<'_>, MediaError> {
        self.ictx
            .stream(self.vi)
            .ok_or_else(|| internal_msg("video stream vanished"))
    }

    /// The container's duration in seconds, 0 when it does not say.
    pub fn container_duration_s(&self) -> f64 {
        if self.ictx.duration() > 0 {
            self.ictx.duration() as f64 / 1e6
        } else {
            0.0
        }
    }

    /// Whether any frame was decoded since the input was opened.
    pub fn any_decoded(&self) -> bool {
        self.any_decoded
    }

    /// A decoded frame's time in seconds on the source timeline (from the container's
    /// start), if it has a timestamp.
    pub fn time(&self, frame: &frame::Video) -> Option<f64> {
        frame
            .timestamp()
            .or(frame.pts())
            .map(|ts| seconds(ts, self.tb, self.origin))
    }

    /// Seeks to the keyframe at or before `t` seconds on the source timeline (to the
    /// beginning when `t` is not finite, or when the seek fails) and resets the decoder.
    pub fn seek(&mut self, t: f64) {
        let target = self.origin + (t.max(0.0) * 1e6) as i64;
        if !t.is_finite() || self.ictx.seek(target, ..target).is_err() {
            let _ = self.ictx.seek(self.origin, ..);
        }
        self.dec.flush();
        self.eof = false;
    }

    /// Decodes the next frame into `out`; false at the end of the input, once the
    /// decoder is drained.
    pub fn next(&mut self, out: &mut frame::Video) -> Result<bool, MediaError> {
        let mut errors_draining = 0u32;
        loop {
            match self.dec.receive_frame(out) {
                Ok(()) => {
                    self.any_decoded = true;
                    return Ok(true);
                }
                Err(ff::Error::Eof) => return Ok(false),
                Err(ff::Error::Other { errno }) if errno == ff::error::EAGAIN => {
                    if self.eof {
                        return Ok(false);
                    }
                }
                Err(e) if is_limit(&e) => return Err(bad_input("decoding", e)),
                Err(_) => {
                    // A picture that cannot be decoded is skipped, as the CLI does.
                    self.decode_error()?;
                    if self.eof {
                        errors_draining += 1;
                        if errors_draining > MAX_DECODE_ERRORS {
                            return Ok(false);
                        }
                        continue;
                    }
                }
            }
            self.feed()?;
        }
    }

    /// Sends the next video packet to the decoder, or the end of input.
    fn feed(&mut self) -> Result<(), MediaError> {
        loop {
            match self.pkt.read(&mut self.ictx) {
                Ok(()) if self.pkt.stream() != self.vi => continue,
                Ok(()) => {
                    if let Err(e) = self.dec.send_packet(&self.pkt) {
                        if is_limit(&e) {
                            return Err(bad_input("decoding", e));
                        }
                        self.decode_error()?;
                    }
                    return Ok(());
                }
                Err(ff::Error::Eof) => {
                    self.eof = true;
                    let _ = self.dec.send_eof();
                    return Ok(());
                }
                Err(ff::Error::InvalidData) => {
                    self.unreadable += 1;
                    if self.unreadable > MAX_UNREADABLE_PACKETS {
                        return Err(MediaError::BadInput("too much unreadable data".into()));
                    }
                }
                Err(e) => return Err(bad_input("reading the input", e)),
            }
        }
    }

    fn decode_error(&mut self) -> Result<(), MediaError> {
        self.decode_errors += 1;
        if !self.any_decoded && self.decode_errors > MAX_DECODE_ERRORS {
            return Err(MediaError::BadInput("the video cannot be decoded".into()));
        }
        Ok(())
    }
}
