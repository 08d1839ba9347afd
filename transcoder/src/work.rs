//! The task protocol's payloads, typed on both sides of the wire: what a task does
//! ([`Work`]) and the pieces of renditions it leaves for the job's last steps
//! ([`Part`]). The coordinator stores and schedules them without looking inside; the
//! worker runs them. Their JSON is versioned as a whole by [`TASK_PROTOCOL`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::media::RenditionQuality;
use crate::profile::Rung;

/// Version of the task protocol: the JSON of lease requests, assignments, task specs
/// and results between coordinator and workers. A coordinator leases only to workers
/// of its version (`426 Upgrade Required` otherwise, naming both versions), and a
/// worker runs only assignments of its version, so a newer coordinator and an older
/// worker (or the reverse) stop with a clear error instead of misreading each other.
///
/// 1: task outputs as free-form keys (`segments.v.000005.234`) in the job's outputs
/// (lease requests and assignments without a version are 1). 2: typed [`Work`] and
/// [`Part`]s, kept apart from the job's public outputs.
pub const TASK_PROTOCOL: u32 = 2;

/// The version of a message that does not say (sent before versions existed).
pub fn unversioned() -> u32 {
    1
}

/// What a task does. On the wire and in the store: `{"kind": "encode", "spec": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "spec", rename_all = "snake_case")]
pub enum Work {
    /// Probe the source and plan the job's other stages.
    Plan,
    /// Encode one time range of the source into some rungs.
    Encode(EncodeSpec),
    /// Encode the audio rendition.
    Audio {},
    /// The poster and the thumbnail strip.
    Images {},
    /// Write the playlists of what is encoded so far.
    Finalize(FinalizeSpec),
}

impl Work {
    /// The kind's name, as on the wire (`encode`), for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Work::Plan => "plan",
            Work::Encode(_) => "encode",
            Work::Audio {} => "audio",
            Work::Images {} => "images",
            Work::Finalize(_) => "finalize",
        }
    }
}

/// Spec of an encode task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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

/// Spec of a finalize task: it writes the playlists of `rungs` (and of the audio) and a
/// master playlist of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinalizeSpec {
    /// Rungs encoded by now: the master playlist lists these.
    pub rungs: Vec<Rung>,
    /// Source frame rate (nominal).
    pub fps: f64,
    /// Whether there is an audio rendition.
    pub has_audio: bool,
    /// This master is the job's first: the job becomes playable when it is published.
    #[serde(default)]
    pub playable: bool,
}

/// One encoded segment, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredSegment {
    /// Rendition (`v720p`, `audio`).
    pub rendition: String,
    /// Position in the rendition.
    pub index: u32,
    /// URI relative to the rendition's playlist.
    pub uri: String,
    /// Duration in seconds.
    pub duration_s: f64,
    /// Size in bytes.
    pub bytes: u64,
}

/// What a task encoded, for the job's `finalize`: internal to the job (handed to the
/// tasks after it, never shown in the public job).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// Which piece of the job's renditions it is.
    pub of: PartOf,
    /// The segments written, every rung of the piece.
    pub segments: Vec<StoredSegment>,
    /// Each rung's quality sums (video, when measured).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quality: Vec<RenditionQuality>,
}

/// Which piece of a job's renditions a [`Part`] is. A retried task's part replaces
/// the earlier attempt's: they are the same piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PartOf {
    /// A video range of one pass: its first segment, and the height of the pass's
    /// first rung (the passes over a range encode different rungs).
    Video { first_segment: u32, pass: u32 },
    /// The audio rendition.
    Audio,
}

impl PartOf {
    /// The piece's key in its job (`v.000005.234`, `audio`): unique per piece, in
    /// timeline order for video.
    pub fn key(&self) -> String {
        match self {
            PartOf::Video {
                first_segment,
                pass,
            } => format!("v.{first_segment:06}.{pass}"),
            PartOf::Audio => "audio".into(),
        }
    }
}

/// The parts that a job started under task protocol 1 keeps in its outputs
/// (`segments.v.000005.234`, `quality.v.000005.234`, `segments.audio`), so that a job
/// running when the coordinator is upgraded finishes. Entries that do not parse are
/// left out (its `finalize` then says which rendition misses segments).
pub fn legacy_parts(outputs: &BTreeMap<String, serde_json::Value>) -> Vec<Part> {
    let mut parts: BTreeMap<String, Part> = BTreeMap::new();
    for (key, value) in outputs {
        let (field, of) = match key.split('.').collect::<Vec<_>>()[..] {
            [field, "audio"] => (field, PartOf::Audio),
            [field, "v", first, pass] => match (first.parse(), pass.parse()) {
                (Ok(first_segment), Ok(pass)) => (
                    field,
                    PartOf::Video {
                        first_segment,
                        pass,
                    },
                ),
                _ => continue,
            },
            _ => continue,
        };
        let part = parts.entry(of.key()).or_insert_with(|| Part {
            of,
            segments: Vec::new(),
            quality: Vec::new(),
        });
        match field {
            "segments" => part.segments = serde_json::from_value(value.clone()).unwrap_or_default(),
            "quality" => part.quality = serde_json::from_value(value.clone()).unwrap_or_default(),
            _ => {}
        }
    }
    parts.into_values().collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn work_reads_what_protocol_1_stored() {
        // Task specs stored before the typed protocol: the same JSON.
        let plan: Work = serde_json::from_value(json!({"kind": "plan", "spec": null})).unwrap();
        assert_eq!(plan, Work::Plan);
        let audio: Work = serde_json::from_value(json!({"kind": "audio", "spec": {}})).unwrap();
        assert_eq!(audio, Work::Audio {});
        let encode = json!({"kind": "encode", "spec": {
            "start_s": 30.0, "end_s": 60.0, "first_segment": 5,
            "rungs": [{"width": 416, "height": 234, "video_kbps": 145}]}});
        let w: Work = serde_json::from_value(encode.clone()).unwrap();
        assert!(matches!(&w, Work::Encode(e) if e.first_segment == 5 && e.rungs.len() == 1));
        assert_eq!(serde_json::to_value(&w).unwrap(), encode);
        assert_eq!(
            serde_json::to_value(Work::Images {}).unwrap(),
            json!({"kind": "images", "spec": {}})
        );
        // Whole task specs, as the store holds them, read and write the same bytes (a
        // plan is now written without its `"spec": null`, read either way above).
        for stored in [
            json!({"kind": "plan", "weight": 1.0}),
            json!({"kind": "audio", "spec": {}, "weight": 0.5}),
            json!({"kind": "finalize", "weight": 0.5, "urgent": true,
                "spec": {"rungs": [], "fps": 25.0, "has_audio": true, "playable": true}}),
        ] {
            let t: crate::model::TaskSpec = serde_json::from_value(stored.clone()).unwrap();
            assert_eq!(serde_json::to_value(&t).unwrap(), stored);
        }
        // An unknown kind is an error, not a silently skipped task.
        let e = serde_json::from_value::<Work>(json!({"kind": "upscale", "spec": {}}));
        assert!(e.unwrap_err().to_string().contains("upscale"));
    }

    #[test]
    fn part_keys_are_unique_per_piece() {
        let v = |first_segment, pass| PartOf::Video {
            first_segment,
            pass,
        };
        assert_eq!(v(5, 234).key(), "v.000005.234");
        assert_ne!(v(5, 234).key(), v(5, 360).key());
        assert_eq!(PartOf::Audio.key(), "audio");
        let p = Part {
            of: v(0, 234),
            segments: vec![],
            quality: vec![],
        };
        let j = serde_json::to_value(&p).unwrap();
        assert_eq!(
            j,
            json!({"of": {"kind": "video", "first_segment": 0, "pass": 234}, "segments": []})
        );
        assert_eq!(serde_json::from_value::<Part>(j).unwrap(), p);
    }

    #[test]
    fn jobs_of_protocol_1_keep_their_parts() {
        let seg = json!([{"rendition": "v234p", "index": 5, "uri": "a3/seg00005.ts",
            "duration_s": 6.0, "bytes": 100}]);
        let outputs = BTreeMap::from([
            ("segments.v.000005.234".to_string(), seg.clone()),
            ("quality.v.000005.234".to_string(), json!([])),
            ("segments.audio".to_string(), json!([])),
            ("probe".to_string(), json!({})),
            ("master".to_string(), json!("m/k.hls/master.m3u8")),
        ]);
        let parts = legacy_parts(&outputs);
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert_eq!(parts[0].of, PartOf::Audio);
        assert_eq!(
            parts[1].of,
            PartOf::Video {
                first_segment: 5,
                pass: 234
            }
        );
        assert_eq!(parts[1].segments[0].uri, "a3/seg00005.ts");
    }
}
