//! The task plan of a probed source: which tasks, in which stages.
//!
//! Progressive readiness: what a person waits for is the first playback, so a source
//! with more than one rendition is encoded in two passes over its timeline.
//!
//! 1. the lowest rendition of every range, the audio, poster and thumbnails;
//! 2. `finalize` of those (urgent): the master playlist is published with the lowest
//!    rendition and the audio, and the job becomes `playable`; beside it, in the same
//!    stage, the other renditions of every range (queued the moment the first pass
//!    ends, so the slot that ran its last encode goes on with this job instead of
//!    losing its turn while the playlists are written);
//! 3. `finalize` of everything (urgent): the master playlist lists every rendition.
//!
//! The lowest rendition's media playlist is written again in step 3 from the same
//! segments (the same bytes): a segment a player has been given never changes. The price
//! is a second decode of the source (the first pass encodes one small rendition from
//! it, the second the rest), a few percent of the encoding work of a ladder.
//! A source with one rendition is encoded in one pass (steps 1 and 3); a source with
//! audio and no video (a podcast, a song) is its audio rendition alone.

use crate::media::ProbeInfo;
use crate::model::TaskSpec;
use crate::profile::{Profile, Rung};
use crate::work::{EncodeSpec, FinalizeSpec, Work};

/// Length of one first-pass encode task's time range. 30 s (five 6 s segments): one
/// small rendition of 30 s is a few seconds of work, so a 10-minute video's first pass
/// is 20 short tasks, enough to keep 16 workers busy.
pub const TASK_SECONDS: f64 = 30.0;

/// Length of one second-pass encode task's time range (every other rendition: the
/// bulk of the work). 12 s (two 6 s segments): scheduling is non-preemptive, so a
/// short upload may wait for a slot's current task to end; at 12 s of four renditions
/// that is ~7 s of work on this machine's 2 cores instead of ~17 s at 30 s, for the
/// cost of decoding from the keyframe before each range once more per task. A
/// 10-minute video's second pass is 50 tasks.
pub const SECOND_PASS_SECONDS: f64 = 12.0;

/// The stages after the plan of a source `probe` says has video or audio of a valid
/// duration.
pub fn stages(probe: &ProbeInfo, profile: &Profile) -> Vec<Vec<TaskSpec>> {
    let rungs = ladder(probe, profile);
    let finalize = |rungs: &[Rung], playable: bool| TaskSpec {
        work: Work::Finalize(FinalizeSpec {
            rungs: rungs.to_vec(),
            fps: probe.fps,
            has_audio: probe.has_audio,
            playable,
        }),
        weight: 0.5,
        urgent: true,
    };
    let (first, rest) = rungs.split_at(1.min(rungs.len()));
    let mut pass1 = encodes(probe, profile, first, TASK_SECONDS);
    if probe.has_audio {
        pass1.push(TaskSpec {
            work: Work::Audio {},
            weight: probe.duration_s * 0.1,
            urgent: false,
        });
    }
    if probe.has_video {
        pass1.push(TaskSpec {
            work: Work::Images {},
            weight: 1.0,
            urgent: false,
        });
    }
    if rest.is_empty() {
        return vec![pass1, vec![finalize(&rungs, true)]];
    }
    let mut pass2 = vec![finalize(first, true)];
    pass2.extend(encodes(probe, profile, rest, SECOND_PASS_SECONDS));
    vec![pass1, pass2, vec![finalize(&rungs, false)]]
}

/// The renditions of a source: none without video.
pub fn ladder(probe: &ProbeInfo, profile: &Profile) -> Vec<Rung> {
    if probe.has_video {
        profile.rungs_for(probe.width, probe.height)
    } else {
        Vec::new()
    }
}

/// One encode task of `rungs` per `range_s` of the source (a multiple of the profile's
/// segment length, so ranges start on segment boundaries); none without rungs.
fn encodes(probe: &ProbeInfo, profile: &Profile, rungs: &[Rung], range_s: f64) -> Vec<TaskSpec> {
    if rungs.is_empty() {
        return Vec::new();
    }
    let per_range = (range_s / profile.segment_seconds).round().max(1.0) as u32;
    let range_s = f64::from(per_range) * profile.segment_seconds;
    let ranges = (probe.duration_s / range_s).ceil().max(1.0) as u32;
    (0..ranges)
        .map(|i| {
            let start = f64::from(i) * range_s;
            let end = (i + 1 < ranges).then(|| f64::from(i + 1) * range_s);
            let len = end.unwrap_or(probe.duration_s).min(probe.duration_s) - start;
            TaskSpec {
                work: Work::Encode(EncodeSpec {
                    start_s: start,
                    end_s: end,
                    first_segment: i * per_range,
                    rungs: rungs.to_vec(),
                }),
                weight: len.max(0.1) * rungs.len() as f64,
                urgent: false,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A task's spec as JSON (what the wire carries).
    fn spec(t: &TaskSpec) -> serde_json::Value {
        serde_json::to_value(t).unwrap()["spec"].clone()
    }

    fn probe(w: u32, h: u32, secs: f64, audio: bool) -> ProbeInfo {
        serde_json::from_value(json!({
            "duration_s": secs, "width": w, "height": h, "fps": 25.0, "rotation": 0,
            "has_video": true, "has_audio": audio, "video_codec": "h264",
            "audio_codec": null, "audio_channels": 0,
        }))
        .unwrap()
    }

    fn kinds(stage: &[TaskSpec]) -> Vec<&str> {
        stage.iter().map(|t| t.work.kind()).collect()
    }

    fn heights(t: &TaskSpec, key: &str) -> Vec<u64> {
        spec(t)[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["height"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn a_ladder_plays_after_its_lowest_rendition_and_audio() {
        let p = Profile::named("default").unwrap();
        let s = stages(&probe(1280, 720, 65.0, true), p);
        assert_eq!(s.len(), 3);
        assert_eq!(
            kinds(&s[0]),
            ["encode", "encode", "encode", "audio", "images"]
        );
        assert!(s[0][..3].iter().all(|t| heights(t, "rungs") == [234]));
        assert_eq!(spec(&s[0][2])["first_segment"], 10);
        assert_eq!(
            s[0][2].weight, 5.0,
            "the last range is 5 s of one rendition"
        );
        let mut second = vec!["finalize"];
        second.extend(["encode"; 6]);
        assert_eq!(kinds(&s[1]), second, "65 s in ranges of 12 s");
        assert_eq!(spec(&s[1][6])["first_segment"], 10);
        assert_eq!(spec(&s[1][6])["start_s"], 60.0);
        assert_eq!(s[1][6].weight, 20.0, "5 s of four renditions");
        assert_eq!(heights(&s[1][0], "rungs"), [234]);
        assert_eq!(spec(&s[1][0])["playable"], true);
        assert!(s[1][0].urgent);
        assert!(s[1][1..]
            .iter()
            .all(|t| heights(t, "rungs") == [360, 432, 540, 720]));
        assert_eq!(heights(&s[2][0], "rungs"), [234, 360, 432, 540, 720]);
        assert_eq!(spec(&s[2][0])["playable"], false);
        assert!(s[2][0].urgent);
        assert!(s
            .iter()
            .flatten()
            .filter(|t| t.work.kind() != "finalize")
            .all(|t| !t.urgent));
    }

    #[test]
    fn one_rendition_is_one_pass_and_silent_sources_have_no_audio_task() {
        let p = Profile::named("default").unwrap();
        let s = stages(&probe(320, 180, 8.0, false), p);
        assert_eq!(s.len(), 2);
        assert_eq!(kinds(&s[0]), ["encode", "images"]);
        assert_eq!(spec(&s[1][0])["playable"], true);
        assert_eq!(heights(&s[1][0], "rungs"), [180]);
    }

    #[test]
    fn an_audio_only_source_is_its_audio_rendition() {
        let p = Profile::named("default").unwrap();
        let mut audio_only = probe(0, 0, 95.0, true);
        audio_only.has_video = false;
        let s = stages(&audio_only, p);
        assert_eq!(s.len(), 2);
        assert_eq!(kinds(&s[0]), ["audio"]);
        assert_eq!(kinds(&s[1]), ["finalize"]);
        assert_eq!(heights(&s[1][0], "rungs"), Vec::<u64>::new());
        assert_eq!(spec(&s[1][0])["playable"], true);
        assert!(ladder(&audio_only, p).is_empty());
    }
}
