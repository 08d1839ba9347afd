//! A small wrapper over an FFmpeg filter graph with one video input.

use ff::{ffi, filter, frame, Rational};
use ffmpeg_next as ff;

use super::input::{internal, internal_msg};
use super::MediaError;

/// A one-input filter graph (`buffer` → `spec` → `out0`, `out1`...).
pub(crate) struct Graph {
    graph: filter::Graph,
    outputs: usize,
}

impl Graph {
    /// Builds `[in]spec` for frames shaped like `like` with timestamps in `tb`; `spec`
    /// must end in the labels `[out0]`... `[out{outputs-1}]`.
    pub fn new(
        like: &frame::Video,
        tb: Rational,
        sar: Rational,
        spec: &str,
        outputs: usize,
    ) -> Result<Self, MediaError> {
        let mut graph = filter::Graph::new();
        let pix: ffi::AVPixelFormat = like.format().into();
        let sar = if sar.numerator() > 0 && sar.denominator() > 0 {
            sar
        } else {
            Rational::new(1, 1)
        };
        let args = format!(
            "video_size={}x{}:pix_fmt={}:time_base={}/{}:pixel_aspect={}/{}",
            like.width(),
            like.height(),
            pix as i32,
            tb.numerator(),
            tb.denominator(),
            sar.numerator(),
            sar.denominator()
        );
        let buffer = filter::find("buffer").ok_or_else(|| internal_msg("no buffer filter"))?;
        let sink =
            filter::find("buffersink").ok_or_else(|| internal_msg("no buffersink filter"))?;
        graph
            .add(&buffer, "in", &args)
            .map_err(|e| internal("filter source", e))?;
        for i in 0..outputs {
            graph
                .add(&sink, &format!("out{i}"), "")
                .map_err(|e| internal("filter sink", e))?;
        }
        let mut parser = graph
            .output("in", 0)
            .map_err(|e| internal("filter graph", e))?;
        for i in 0..outputs {
            parser = parser
                .input(&format!("out{i}"), 0)
                .map_err(|e| internal("filter graph", e))?;
        }
        parser
            .parse(spec)
            .map_err(|e| internal(&format!("filter graph {spec}"), e))?;
        graph
            .validate()
            .map_err(|e| internal(&format!("filter graph {spec}"), e))?;
        Ok(Graph { graph, outputs })
    }

    /// Feeds a frame (`None`: end of stream).
    pub fn push(&mut self, frame: Option<&frame::Video>) -> Result<(), MediaError> {
        let mut src = self
            .graph
            .get("in")
            .ok_or_else(|| internal_msg("filter source missing"))?;
        let res = match frame {
            Some(f) => src.source().add(f),
            None => src.source().flush(),
        };
        res.map_err(|e| internal("filtering", e))
    }

    /// The next frame of output `i`, if one is ready.
    pub fn pull(&mut self, i: usize, out: &mut frame::Video) -> Result<bool, MediaError> {
        if i >= self.outputs {
            return Err(internal_msg("no such filter output"));
        }
        let mut sink = self
            .graph
            .get(&format!("out{i}"))
            .ok_or_else(|| internal_msg("filter sink missing"))?;
        match sink.sink().frame(out) {
            Ok(()) => Ok(true),
            Err(ff::Error::Eof) => Ok(false),
            Err(ff::Error::Other { errno }) if errno == ff::error::EAGAIN => Ok(false),
            Err(e) => Err(internal("filtering", e)),
        }
    }

    /// Time base of output `i`.
    pub fn time_base(&mut self, i: usize) -> Result<Rational, MediaError> {
        let mut sink = self
            .graph
            .get(&format!("out{i}"))
            .ok_or_else(|| internal_msg("filter sink missing"))?;
        Ok(sink.sink().time_base())
    }
}
