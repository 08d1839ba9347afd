//! Writing one rendition's MPEG-TS segment files.
//!
//! Each segment is its own MPEG-TS file (PAT/PMT first, then the stream), written by a
//! fresh muxer, so a segment never depends on another file. Timestamps pass through
//! unchanged (the source timeline) plus the muxer's fixed offset [`MUX_DELAY_US`] (as
//! FFmpeg's CLI and HLS muxer do), and no per-file shifting (`avoid_negative_ts` off):
//! segments of ranges encoded in different processes therefore line up exactly.

use std::path::{Path, PathBuf};

use ff::{codec, format, Packet, Rational};
use ffmpeg_next as ff;

use super::input::{internal, internal_msg};
use super::{segment_file_name, MediaError, SegmentOut};

/// The MPEG-TS muxer's `max_delay`, µs: every timestamp is written this much later
/// (×2, as the muxer doubles it: 1.4 s, like FFmpeg's CLI default), which keeps the
/// decode timestamps of the first B-frames positive.
pub const MUX_DELAY_US: i64 = 700_000;

struct Open {
    octx: format::context::Output,
    stream_tb: Rational,
    index: u32,
    path: PathBuf,
    first_pts: i64,
    end_pts: i64,
}

/// Cuts one encoder's packets into segment files `dir/seg{index:05}.ts`.
pub(crate) struct Segmenter {
    rendition: String,
    dir: PathBuf,
    params: codec::Parameters,
    enc_tb: Rational,
    current: Option<Open>,
    /// Finished segments with their first timestamp (encoder time base).
    done: Vec<(SegmentOut, i64)>,
}

impl Segmenter {
    /// `params`: the opened encoder's parameters; `enc_tb`: its time base.
    pub fn new(rendition: &str, dir: &Path, params: codec::Parameters, enc_tb: Rational) -> Self {
        Segmenter {
            rendition: rendition.to_string(),
            dir: dir.to_path_buf(),
            params,
            enc_tb,
            current: None,
            done: Vec::new(),
        }
    }

    /// Whether a segment is open.
    pub fn is_open(&self) -> bool {
        self.current.is_some()
    }

    /// Writes `pkt` (timestamps in the encoder time base, duration set); with
    /// `start_index`, first closes the open segment and starts segment `start_index`.
    pub fn write(&mut self, pkt: &mut Packet, start_index: Option<u32>) -> Result<(), MediaError> {
        if let Some(index) = start_index {
            self.close()?;
            self.open(index)?;
        }
        let cur = self
            .current
            .as_mut()
            .ok_or_else(|| internal_msg("a packet came before the first segment"))?;
        if let Some(pts) = pkt.pts() {
            cur.first_pts = cur.first_pts.min(pts);
            cur.end_pts = cur.end_pts.max(pts + pkt.duration().max(0));
        }
        pkt.set_stream(0);
        pkt.set_position(-1);
        pkt.rescale_ts(self.enc_tb, cur.stream_tb);
        pkt.write(&mut cur.octx)
            .map_err(|e| internal("writing a segment", e))?;
        Ok(())
    }

    fn open(&mut self, index: u32) -> Result<(), MediaError> {
        let path = self.dir.join(segment_file_name(index));
        let path_str = path
            .to_str()
            .ok_or_else(|| MediaError::Internal(format!("path {} is not UTF-8", path.display())))?;
        let mut octx = format::output_as(&format!("file:{path_str}"), "mpegts")
            .map_err(|e| internal(&format!("creating {}", path.display()), e))?;
        {
            let mut st = octx
                .add_stream(ff::encoder::find(codec::Id::None))
                .map_err(|e| internal("adding a stream", e))?;
            st.set_parameters(self.params.clone());
            st.set_time_base(self.enc_tb);
        }
        let mut opts = ff::Dictionary::new();
        opts.set("max_delay", &MUX_DELAY_US.to_string());
        opts.set("avoid_negative_ts", "disabled");
        octx.write_header_with(opts)
            .map_err(|e| internal("writing a segment header", e))?;
        let stream_tb = octx
            .stream(0)
            .map(|s| s.time_base())
            .ok_or_else(|| internal_msg("segment stream vanished"))?;
        self.current = Some(Open {
            octx,
            stream_tb,
            index,
            path,
            first_pts: i64::MAX,
            end_pts: i64::MIN,
        });
        Ok(())
    }

    fn close(&mut self) -> Result<(), MediaError> {
        if let Some(mut cur) = self.current.take() {
            cur.octx
                .write_trailer()
                .map_err(|e| internal("finishing a segment", e))?;
            let (first, end) = if cur.first_pts <= cur.end_pts {
                (cur.first_pts, cur.end_pts)
            } else {
                (0, 0)
            };
            let out = SegmentOut {
                rendition: self.rendition.clone(),
                index: cur.index,
                path: cur.path,
                duration_s: self.to_seconds(end - first),
            };
            self.done.push((out, first));
        }
        Ok(())
    }

    fn to_seconds(&self, ticks: i64) -> f64 {
        ticks as f64 * f64::from(self.enc_tb.numerator()) / f64::from(self.enc_tb.denominator())
    }

    /// Closes the last segment and returns them all. A segment followed directly by the
    /// next one lasts until the next one starts; the last one until its last packet ends.
    pub fn finish(mut self) -> Result<Vec<SegmentOut>, MediaError> {
        self.close()?;
        let starts: Vec<(u32, i64)> = self
            .done
            .iter()
            .map(|(s, first)| (s.index, *first))
            .collect();
        let mut out = Vec::with_capacity(self.done.len());
        for (i, (mut seg, first)) in std::mem::take(&mut self.done).into_iter().enumerate() {
            if let Some(&(next_index, next_first)) = starts.get(i + 1) {
                if next_index == seg.index + 1 && next_first > first {
                    seg.duration_s = self.to_seconds(next_first - first);
                }
            }
            out.push(seg);
        }
        Ok(out)
    }
}
