//! What each task kind does. A job is planned (probe, split into segment-aligned time
//! ranges), encoded range by range in parallel across workers, with the audio, poster
//! and thumbnails as tasks of their own, and finally stitched: stitching only writes
//! playlists, because every range's segments already start with an IDR on the source
//! timeline.
//!
//! Output layout under the source `bucket/key`:
//! `key.hls/master.m3u8`, `key.hls/<rendition>/index.m3u8`, segments under
//! `key.hls/<rendition>/a<token>/segNNNNN.ts` and images under `key.hls/a<token>/`.
//! Every attempt writes under its own fencing token, so a stale worker's late uploads
//! can never replace the segments a playlist points to.
//!
//! What an encode or audio task encoded travels as a typed [`Part`] (its segments, and
//! per rendition the PSNR/SSIM sums of its range, a list of
//! [`RenditionQuality`](crate::media::RenditionQuality)); `finalize` merges the quality
//! (frame-weighted) into each entry of `renditions`: `psnr` (luma, dB), `psnr_yuv` (Y, U
//! and V PSNRs weighted 6:1:1), `ssim` (luma, 0..1) and `quality_frames` (frames
//! measured), each against the source scaled to the rendition's size (see
//! `crate::media::quality`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::json;

use super::child::MediaRequest;
use super::playlist::{self, VideoRendition};
use super::Slot;
use crate::media::{ProbeInfo, RenditionQuality, SegmentOut, VideoRangeResult, VideoRangeSpec};
use crate::model::{Assignment, Failure, FailureClass, TaskResult};
use crate::profile::Profile;
use crate::work::{EncodeSpec, FinalizeSpec, Part, PartOf, StoredSegment, Work};

/// Output key prefix for a source key.
pub fn output_prefix(source: &str) -> String {
    format!("{source}.hls")
}

fn bad(message: impl Into<String>) -> Failure {
    Failure {
        class: FailureClass::BadInput,
        message: message.into(),
    }
}

fn internal(message: impl Into<String>) -> Failure {
    Failure {
        class: FailureClass::Internal,
        message: message.into(),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(v: serde_json::Value, what: &str) -> Result<T, Failure> {
    serde_json::from_value(v).map_err(|e| internal(format!("bad {what}: {e}")))
}

/// Runs one assignment.
pub async fn run(slot: &Slot, a: &Assignment, workdir: &Path) -> Result<TaskResult, Failure> {
    let profile =
        Profile::named(&a.profile).ok_or_else(|| bad(format!("unknown profile {}", a.profile)))?;
    match &a.task.spec.work {
        Work::Plan => plan(slot, a, profile).await,
        Work::Encode(spec) => encode(slot, a, spec, profile, workdir).await,
        Work::Audio {} => audio(slot, a, profile, workdir).await,
        Work::Images {} => images(slot, a, workdir).await,
        Work::Finalize(spec) => finalize(slot, a, spec, profile).await,
    }
}

fn probe_of(a: &Assignment) -> Result<ProbeInfo, Failure> {
    parse(
        a.outputs.get("probe").cloned().unwrap_or_default(),
        "probe output",
    )
}

async fn plan(slot: &Slot, a: &Assignment, profile: &Profile) -> Result<TaskResult, Failure> {
    let (input, etag) = slot.source(&a.source, None).await?;
    let probe: ProbeInfo = parse(
        slot.media(MediaRequest::Probe { input }, 60.0, &|_| {})
            .await?,
        "probe result",
    )?;
    if !(probe.has_video || probe.has_audio) {
        return Err(Failure {
            class: FailureClass::NotMedia,
            message: "the source has no video or audio to transcode".into(),
        });
    }
    if probe.duration_s <= 0.0 {
        return Err(bad("the source lasts no time"));
    }
    // The probe ran in the sandboxed child, on the uploader's bytes: its answer bounds
    // the plan only once checked here too (a non-finite duration would make 2^32 tasks).
    if !probe.duration_s.is_finite() || probe.duration_s > crate::media::MAX_DURATION_S {
        return Err(bad(format!(
            "the source lasts {} s, above the {} s limit",
            probe.duration_s,
            crate::media::MAX_DURATION_S
        )));
    }
    Ok(TaskResult {
        outputs: BTreeMap::from([
            ("probe".to_string(), json!(probe)),
            ("source_etag".to_string(), json!(etag)),
        ]),
        stages: super::plan::stages(&probe, profile),
        ..Default::default()
    })
}

fn expected_etag(a: &Assignment) -> Option<String> {
    a.outputs
        .get("source_etag")
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// Uploads segments and describes them for the playlists.
async fn store_segments(
    slot: &Slot,
    a: &Assignment,
    segs: Vec<SegmentOut>,
) -> Result<Vec<StoredSegment>, Failure> {
    let prefix = output_prefix(&a.source);
    let mut out = Vec::with_capacity(segs.len());
    for s in segs {
        let uri = format!("a{}/seg{:05}.ts", a.token, s.index);
        let key = format!("{prefix}/{}/{uri}", s.rendition);
        let bytes = slot
            .objects
            .upload(&s.path, &key)
            .await
            .map_err(|e| Failure {
                class: e.class,
                message: e.message,
            })?;
        out.push(StoredSegment {
            rendition: s.rendition,
            index: s.index,
            uri,
            duration_s: s.duration_s,
            bytes,
        });
    }
    Ok(out)
}

/// The media child's answer to a video request: a [`VideoRangeResult`], or the bare
/// segment list that children answered before quality was measured.
fn parse_video_reply(v: serde_json::Value) -> Result<VideoRangeResult, Failure> {
    if v.is_array() {
        return Ok(VideoRangeResult {
            segments: parse(v, "segments")?,
            quality: Vec::new(),
        });
    }
    parse(v, "video result")
}

/// Merges the quality sums that the encode tasks reported, by rendition.
fn quality_by_rendition(parts: &[Part]) -> BTreeMap<String, RenditionQuality> {
    RenditionQuality::aggregate(parts.iter().flat_map(|p| &p.quality))
}

/// A rendition's entry in the `renditions` output; the quality fields only when some
/// frames of it were measured.
fn rendition_entry(
    v: &VideoRendition,
    prefix: &str,
    quality: Option<&RenditionQuality>,
) -> serde_json::Value {
    let mut entry = json!({
        "name": v.name, "width": v.width, "height": v.height,
        "bitrate": v.average_bps, "peak_bitrate": v.peak_bps,
        "playlist": format!("{prefix}/{}/index.m3u8", v.name),
    });
    if let (Some(q), Some(obj)) = (quality.filter(|q| q.frames > 0), entry.as_object_mut()) {
        obj.insert("psnr".into(), json!(q.psnr_y()));
        obj.insert("psnr_yuv".into(), json!(q.psnr_yuv()));
        obj.insert("ssim".into(), json!(q.ssim()));
        obj.insert("quality_frames".into(), json!(q.frames));
    }
    entry
}

async fn encode(
    slot: &Slot,
    a: &Assignment,
    spec: &EncodeSpec,
    profile: &Profile,
    workdir: &Path,
) -> Result<TaskResult, Failure> {
    let probe = probe_of(a)?;
    let (input, _) = slot.source(&a.source, expected_etag(a).as_deref()).await?;
    let out_dir = workdir.join("out");
    let media_s = spec.end_s.unwrap_or(probe.duration_s).min(probe.duration_s) - spec.start_s;
    let request = MediaRequest::Video(VideoRangeSpec {
        input,
        out_dir: out_dir.clone(),
        start_s: spec.start_s,
        end_s: spec.end_s,
        first_segment: spec.first_segment,
        segment_seconds: profile.segment_seconds,
        gop_seconds: profile.gop_seconds,
        rungs: spec.rungs.clone(),
        threads: slot.config.threads_per_task,
        quality: profile.measure_quality,
    });
    let reply = slot
        .media(request, media_s.max(1.0) * spec.rungs.len() as f64, &|p| {
            slot.report(p * 0.9)
        })
        .await?;
    let VideoRangeResult { segments, quality } = parse_video_reply(reply)?;
    let segments = store_segments(slot, a, segments).await?;
    // One part per range and pass (the passes of a range encode different rungs).
    let of = PartOf::Video {
        first_segment: spec.first_segment,
        pass: spec.rungs.first().map_or(0, |r| r.height),
    };
    Ok(TaskResult {
        parts: vec![Part {
            of,
            segments,
            quality,
        }],
        ..Default::default()
    })
}

async fn audio(
    slot: &Slot,
    a: &Assignment,
    profile: &Profile,
    workdir: &Path,
) -> Result<TaskResult, Failure> {
    let probe = probe_of(a)?;
    let (input, _) = slot.source(&a.source, expected_etag(a).as_deref()).await?;
    let request = MediaRequest::Audio {
        input,
        out_dir: workdir.join("out"),
        segment_seconds: profile.segment_seconds,
        kbps: profile.audio_kbps,
    };
    let segs: Vec<SegmentOut> = parse(
        slot.media(request, probe.duration_s * 0.2, &|p| slot.report(p * 0.9))
            .await?,
        "segments",
    )?;
    let segments = store_segments(slot, a, segs).await?;
    Ok(TaskResult {
        parts: vec![Part {
            of: PartOf::Audio,
            segments,
            quality: Vec::new(),
        }],
        ..Default::default()
    })
}

async fn images(slot: &Slot, a: &Assignment, workdir: &Path) -> Result<TaskResult, Failure> {
    let probe = probe_of(a)?;
    let (input, _) = slot.source(&a.source, expected_etag(a).as_deref()).await?;
    let request = MediaRequest::Images {
        input,
        out_dir: workdir.join("out"),
        duration_s: probe.duration_s,
        rotation: probe.rotation,
    };
    let files: Vec<PathBuf> = parse(slot.media(request, 30.0, &|_| {}).await?, "images")?;
    let prefix = output_prefix(&a.source);
    let mut outputs = BTreeMap::new();
    for f in files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("image.jpg")
            .to_string();
        let key = format!("{prefix}/a{}/{name}", a.token);
        slot.objects.upload(&f, &key).await.map_err(|e| Failure {
            class: e.class,
            message: e.message,
        })?;
        let label = if name.starts_with("poster") {
            "poster"
        } else {
            "thumbnails"
        };
        outputs.insert(label.to_string(), json!(key));
    }
    Ok(TaskResult {
        outputs,
        ..Default::default()
    })
}

/// Collects every stored segment reported so far, by rendition, sorted by index.
///
/// Indexes may skip: a segment period in which the source has no frame (a timestamp
/// gap longer than a segment, kept as it is) has no segment. The segment before such a
/// hole lasts at least until the next one's period starts, so the playlist's timeline
/// stays the source's (to within the segment's own start, which it does not record).
/// A repeated index is a bug, never a gap.
fn segments_by_rendition(
    parts: &[Part],
    segment_seconds: f64,
) -> Result<BTreeMap<String, Vec<StoredSegment>>, Failure> {
    let mut by: BTreeMap<String, Vec<StoredSegment>> = BTreeMap::new();
    for s in parts.iter().flat_map(|p| &p.segments) {
        by.entry(s.rendition.clone()).or_default().push(s.clone());
    }
    for (name, segs) in by.iter_mut() {
        segs.sort_by_key(|s| s.index);
        for i in 1..segs.len() {
            let skipped = segs[i].index.checked_sub(segs[i - 1].index + 1);
            let Some(skipped) = skipped else {
                let index = segs[i].index;
                return Err(internal(format!(
                    "rendition {name} has segment {index} twice"
                )));
            };
            if skipped > 0 {
                let span = f64::from(skipped + 1) * segment_seconds;
                segs[i - 1].duration_s = segs[i - 1].duration_s.max(span);
            }
        }
    }
    Ok(by)
}

async fn finalize(
    slot: &Slot,
    a: &Assignment,
    spec: &FinalizeSpec,
    profile: &Profile,
) -> Result<TaskResult, Failure> {
    let prefix = output_prefix(&a.source);
    let by = segments_by_rendition(&a.parts, profile.segment_seconds)?;
    let quality = quality_by_rendition(&a.parts);
    let upload = |bytes: Vec<u8>, key: String| async move {
        slot.objects
            .upload_bytes(bytes, &key)
            .await
            .map_err(|e| Failure {
                class: e.class,
                message: e.message,
            })
    };
    let mut videos = Vec::new();
    for rung in &spec.rungs {
        let name = format!("v{}p", rung.height);
        let segs = by
            .get(&name)
            .ok_or_else(|| internal(format!("no segments for {name}")))?;
        upload(
            playlist::media_playlist(segs),
            format!("{prefix}/{name}/index.m3u8"),
        )
        .await?;
        let (peak, avg) = playlist::bitrates(segs);
        videos.push(VideoRendition {
            name,
            width: rung.width,
            height: rung.height,
            peak_bps: peak,
            average_bps: avg,
            fps: spec.fps,
        });
    }
    let audio_bps = match by.get("audio") {
        Some(segs) if spec.has_audio => {
            upload(
                playlist::media_playlist(segs),
                format!("{prefix}/audio/index.m3u8"),
            )
            .await?;
            Some(playlist::bitrates(segs).0)
        }
        _ => None,
    };
    let master = format!("{prefix}/master.m3u8");
    upload(
        playlist::master_playlist(&videos, audio_bps),
        master.clone(),
    )
    .await?;
    // Every rendition published: say so where batches look (`model::done_marker`).
    let probe = probe_of(a)?;
    let ladder = super::plan::ladder(&probe, profile).len();
    if let (true, Some(etag)) = (spec.rungs.len() >= ladder, expected_etag(a)) {
        let done = json!({ "job": a.task.job_id, "profile": a.profile, "source_etag": etag });
        let marker = crate::model::done_marker(&a.source, &a.profile, &etag);
        upload(done.to_string().into_bytes(), marker).await?;
    }
    let renditions: Vec<serde_json::Value> = videos
        .iter()
        .map(|v| rendition_entry(v, &prefix, quality.get(&v.name)))
        .collect();
    let mut outputs = BTreeMap::from([
        ("master".to_string(), json!(master)),
        ("renditions".to_string(), json!(renditions)),
    ]);
    if audio_bps.is_some() {
        outputs.insert("audio".into(), json!(format!("{prefix}/audio/index.m3u8")));
    }
    Ok(TaskResult {
        outputs,
        playable: spec.playable,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(rendition: &str, frames: u64, mse: f64, ssim: f64) -> RenditionQuality {
        let (w, h) = (640u32, 360u32);
        let luma = f64::from(w * h) * frames as f64;
        RenditionQuality {
            rendition: rendition.into(),
            width: w,
            height: h,
            frames,
            sse_y: mse * luma,
            sse_u: mse * luma / 4.0,
            sse_v: mse * luma / 4.0,
            ssim_sum: ssim * frames as f64,
        }
    }

    #[test]
    fn video_replies_old_and_new() {
        let seg = SegmentOut {
            rendition: "v360p".into(),
            index: 0,
            path: "/tmp/x/seg00000.ts".into(),
            duration_s: 6.0,
        };
        let old = parse_video_reply(json!([seg])).unwrap();
        assert_eq!(old.segments, vec![seg.clone()]);
        assert!(old.quality.is_empty());
        let new = VideoRangeResult {
            segments: vec![seg],
            quality: vec![part("v360p", 10, 2.0, 0.95)],
        };
        assert_eq!(parse_video_reply(json!(new)).unwrap(), new);
        assert!(parse_video_reply(json!({"segments": 3})).is_err());
    }

    #[test]
    fn finalize_merges_the_ranges_frame_weighted() {
        let range = |first_segment, quality| Part {
            of: PartOf::Video {
                first_segment,
                pass: 234,
            },
            segments: vec![],
            quality,
        };
        let parts = [
            range(
                0,
                vec![part("v360p", 150, 4.0, 0.9), part("v234p", 150, 9.0, 0.8)],
            ),
            range(
                5,
                vec![part("v360p", 50, 0.0, 1.0), part("v234p", 50, 9.0, 0.8)],
            ),
            Part {
                of: PartOf::Audio,
                segments: vec![],
                quality: vec![],
            },
        ];
        let q = quality_by_rendition(&parts);
        assert_eq!(q.len(), 2);
        let v = VideoRendition {
            name: "v360p".into(),
            width: 640,
            height: 360,
            peak_bps: 2,
            average_bps: 1,
            fps: 25.0,
        };
        let e = rendition_entry(&v, "k.hls", q.get("v360p"));
        // MSE 4 over 150 frames and 0 over 50: 3 over 200; SSIM (0.9·150 + 50) / 200.
        let psnr = 10.0 * (255.0f64 * 255.0 / 3.0).log10();
        assert!((e["psnr"].as_f64().unwrap() - psnr).abs() < 1e-9, "{e}");
        assert!((e["psnr_yuv"].as_f64().unwrap() - psnr).abs() < 1e-9, "{e}");
        assert!((e["ssim"].as_f64().unwrap() - 0.925).abs() < 1e-12, "{e}");
        assert_eq!(e["quality_frames"], 200);
        assert_eq!(e["playlist"], "k.hls/v360p/index.m3u8");
        // Nothing measured: no quality fields.
        let none = rendition_entry(&v, "k.hls", None);
        assert!(
            none.get("psnr").is_none() && none.get("ssim").is_none(),
            "{none}"
        );
    }

    #[test]
    fn a_gap_in_the_source_lengthens_the_segment_before_it() {
        let seg = |index: u32, duration_s: f64| StoredSegment {
            rendition: "v360p".into(),
            index,
            uri: format!("a1/seg{index:05}.ts"),
            duration_s,
            bytes: 1,
        };
        let range = |first_segment, segments| Part {
            of: PartOf::Video {
                first_segment,
                pass: 360,
            },
            segments,
            quality: vec![],
        };
        // Segments 2 and 3 fell in a 15 s gap of the source.
        let parts = [
            range(0, vec![seg(0, 6.0), seg(1, 2.5)]),
            range(4, vec![seg(4, 6.0)]),
        ];
        let by = segments_by_rendition(&parts, 6.0).unwrap();
        let d: Vec<(u32, f64)> = by["v360p"]
            .iter()
            .map(|s| (s.index, s.duration_s))
            .collect();
        assert_eq!(d, [(0, 6.0), (1, 18.0), (4, 6.0)]);
        let twice = [range(0, vec![seg(0, 6.0)]), range(1, vec![seg(0, 6.0)])];
        assert!(segments_by_rendition(&twice, 6.0).is_err());
    }
}
