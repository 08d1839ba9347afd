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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::child::MediaRequest;
use super::playlist::{self, StoredSegment, VideoRendition};
use super::Slot;
use crate::media::{ProbeInfo, SegmentOut, VideoRangeSpec};
use crate::model::{Assignment, Failure, FailureClass, TaskResult, TaskSpec};
use crate::profile::{Profile, Rung};

/// Length of one encode task's time range. 30 s (five 6 s segments): a 10-minute video
/// becomes 20 tasks, enough to keep 16 workers busy, while each task still amortises
/// its source download and encoder start-up.
pub const TASK_SECONDS: f64 = 30.0;

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

/// Spec of an encode task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EncodeSpec {
    /// Range start (a multiple of the segment length).
    pub start_s: f64,
    /// Range end; `None` for the last range.
    pub end_s: Option<f64>,
    /// Index of the range's first segment.
    pub first_segment: u32,
    /// Rungs to produce.
    pub rungs: Vec<Rung>,
}

/// Spec of the finalize task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinalizeSpec {
    /// Rungs produced.
    pub rungs: Vec<Rung>,
    /// Source frame rate.
    pub fps: f64,
    /// Whether there is an audio rendition.
    pub has_audio: bool,
}

/// Runs one assignment.
pub async fn run(slot: &Slot, a: &Assignment, workdir: &Path) -> Result<TaskResult, Failure> {
    let profile =
        Profile::named(&a.profile).ok_or_else(|| bad(format!("unknown profile {}", a.profile)))?;
    match a.task.spec.kind.as_str() {
        "plan" => plan(slot, a, profile, workdir).await,
        "encode" => encode(slot, a, profile, workdir).await,
        "audio" => audio(slot, a, profile, workdir).await,
        "images" => images(slot, a, workdir).await,
        "finalize" => finalize(slot, a).await,
        other => Err(internal(format!("unknown task kind {other}"))),
    }
}

fn probe_of(a: &Assignment) -> Result<ProbeInfo, Failure> {
    parse(
        a.outputs.get("probe").cloned().unwrap_or_default(),
        "probe output",
    )
}

async fn plan(
    slot: &Slot,
    a: &Assignment,
    profile: &Profile,
    workdir: &Path,
) -> Result<TaskResult, Failure> {
    let (input, etag) = slot.source(&a.source, None).await?;
    let probe: ProbeInfo = parse(
        slot.media(MediaRequest::Probe { input }, 60.0, &|_| {})
            .await?,
        "probe result",
    )?;
    let _ = workdir;
    if !probe.has_video || probe.duration_s <= 0.0 {
        return Err(bad("the source has no video to transcode"));
    }
    let rungs = profile.rungs_for(probe.width, probe.height);
    let ranges = (probe.duration_s / TASK_SECONDS).ceil().max(1.0) as u32;
    let per_range = (TASK_SECONDS / profile.segment_seconds).round() as u32;
    let mut encodes: Vec<TaskSpec> = (0..ranges)
        .map(|i| {
            let start = f64::from(i) * TASK_SECONDS;
            let end = (i + 1 < ranges).then(|| f64::from(i + 1) * TASK_SECONDS);
            let len = end.unwrap_or(probe.duration_s).min(probe.duration_s) - start;
            TaskSpec {
                kind: "encode".into(),
                spec: json!(EncodeSpec {
                    start_s: start,
                    end_s: end,
                    first_segment: i * per_range,
                    rungs: rungs.clone()
                }),
                weight: len.max(0.1) * rungs.len() as f64,
            }
        })
        .collect();
    if probe.has_audio {
        encodes.push(TaskSpec {
            kind: "audio".into(),
            spec: json!({}),
            weight: probe.duration_s * 0.1,
        });
    }
    encodes.push(TaskSpec {
        kind: "images".into(),
        spec: json!({}),
        weight: 1.0,
    });
    let finalize = TaskSpec {
        kind: "finalize".into(),
        spec: json!(FinalizeSpec {
            rungs,
            fps: probe.fps,
            has_audio: probe.has_audio
        }),
        weight: 0.5,
    };
    Ok(TaskResult {
        outputs: BTreeMap::from([
            ("probe".to_string(), json!(probe)),
            ("source_etag".to_string(), json!(etag)),
        ]),
        stages: vec![encodes, vec![finalize]],
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

async fn encode(
    slot: &Slot,
    a: &Assignment,
    profile: &Profile,
    workdir: &Path,
) -> Result<TaskResult, Failure> {
    let spec: EncodeSpec = parse(a.task.spec.spec.clone(), "encode spec")?;
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
    });
    let segs: Vec<SegmentOut> = parse(
        slot.media(request, media_s.max(1.0) * spec.rungs.len() as f64, &|p| {
            slot.report(p * 0.9)
        })
        .await?,
        "segments",
    )?;
    let stored = store_segments(slot, a, segs).await?;
    Ok(TaskResult {
        outputs: BTreeMap::from([(
            format!("segments.v.{:06}", spec.first_segment),
            json!(stored),
        )]),
        stages: vec![],
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
    let stored = store_segments(slot, a, segs).await?;
    Ok(TaskResult {
        outputs: BTreeMap::from([("segments.audio".to_string(), json!(stored))]),
        stages: vec![],
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
        stages: vec![],
    })
}

/// Collects every stored segment reported so far, by rendition, sorted by index.
fn segments_by_rendition(
    outputs: &BTreeMap<String, serde_json::Value>,
) -> Result<BTreeMap<String, Vec<StoredSegment>>, Failure> {
    let mut by: BTreeMap<String, Vec<StoredSegment>> = BTreeMap::new();
    for (k, v) in outputs.iter().filter(|(k, _)| k.starts_with("segments.")) {
        let segs: Vec<StoredSegment> = parse(v.clone(), k)?;
        for s in segs {
            by.entry(s.rendition.clone()).or_default().push(s);
        }
    }
    for (name, segs) in by.iter_mut() {
        segs.sort_by_key(|s| s.index);
        for (i, s) in segs.iter().enumerate() {
            if s.index as usize != i {
                return Err(internal(format!("rendition {name} is missing segment {i}")));
            }
        }
    }
    Ok(by)
}

async fn finalize(slot: &Slot, a: &Assignment) -> Result<TaskResult, Failure> {
    let spec: FinalizeSpec = parse(a.task.spec.spec.clone(), "finalize spec")?;
    let prefix = output_prefix(&a.source);
    let by = segments_by_rendition(&a.outputs)?;
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
    let renditions: Vec<serde_json::Value> = videos
        .iter()
        .map(|v| {
            json!({
                "name": v.name, "width": v.width, "height": v.height,
                "bitrate": v.average_bps, "peak_bitrate": v.peak_bps,
                "playlist": format!("{prefix}/{}/index.m3u8", v.name),
            })
        })
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
        stages: vec![],
    })
}
