//! Which objects under a prefix a batch transcodes. A batch over a library must be
//! idempotent: running it again submits only what is new or changed. Skipped, each with
//! its reason in the batch's answer: kura's own outputs, keys with no room for their
//! outputs' names, objects whose Content-Type says they are neither video nor audio,
//! and sources already transcoded with the same profile from their current version
//! (their ETag), unless the batch is forced. (An object whose type says nothing —
//! `application/octet-stream`, or none — is submitted: its probe decides.)

use serde::Serialize;

use crate::gateway_client::Listed;
use crate::model::done_marker;

/// An object a batch did not submit, and why.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Skipped {
    /// `bucket/key`.
    pub source: String,
    /// Why.
    pub reason: String,
}

/// The sources (`bucket/key`) a batch over `listed` submits with `profile`, and what it
/// skips. `force`: also sources already transcoded with `profile`.
pub fn select(
    bucket: &str,
    listed: Vec<Listed>,
    profile: &str,
    force: bool,
) -> (Vec<String>, Vec<Skipped>) {
    let names: std::collections::HashSet<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    let mut sources = Vec::new();
    let mut skipped = Vec::new();
    for o in &listed {
        let why = unfit_source(&o.key)
            .or_else(|| not_media(o.content_type.as_deref()))
            .or_else(|| {
                let done = !force && names.contains(done_marker(&o.key, profile, &o.etag).as_str());
                done.then(|| {
                    format!(
                        "already transcoded with profile {profile} from this version (ETag {}); force to redo",
                        o.etag
                    )
                })
            });
        match why {
            None => sources.push(format!("{bucket}/{}", o.key)),
            Some(reason) => skipped.push(Skipped {
                source: format!("{bucket}/{}", o.key),
                reason,
            }),
        }
    }
    (sources, skipped)
}

/// Why an object of Content-Type `ct` is not media to transcode (video, or audio alone),
/// if its type says so.
fn not_media(ct: Option<&str>) -> Option<String> {
    let ct = ct?;
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let media = essence.starts_with("video/")
        || essence.starts_with("audio/")
        || matches!(
            essence.as_str(),
            "application/octet-stream"
                | "application/mp4"
                | "application/mxf"
                | "application/ogg"
                | "binary/octet-stream"
                | ""
        );
    (!media).then(|| format!("not video or audio (Content-Type {essence})"))
}

/// Why `key` cannot be a source, if it cannot: it is one of kura's own outputs (under a
/// `.hls/` folder: transcoding it would make HLS of HLS), or it leaves no room under the
/// key limit for its outputs' names.
pub fn unfit_source(key: &str) -> Option<String> {
    let room = kura_cluster::names::MAX_KEY_LEN.saturating_sub(crate::model::OUTPUT_KEY_ROOM);
    if key.len() > room {
        return Some(format!(
            "the source key is {} bytes; its outputs are named under it, so it may be at most {room}",
            key.len()
        ));
    }
    if key
        .split('/')
        .rev()
        .skip(1)
        .any(|part| part.ends_with(".hls"))
    {
        return Some("a transcoding output (under a .hls/ folder), not a source".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kura_outputs_and_keys_without_room_are_not_sources() {
        assert_eq!(unfit_source("in/a.mp4"), None);
        assert_eq!(
            unfit_source("in/clip.hls"),
            None,
            "a file named .hls is a file"
        );
        assert_eq!(unfit_source("in.hls.mp4"), None);
        for output in [
            "in/a.mp4.hls/master.m3u8",
            "in/a.mp4.hls/v360p/seg00000.ts",
            "in/a.mp4.hls/a7/poster.jpg",
            "x.hls/y.hls/z.ts",
        ] {
            assert!(unfit_source(output).is_some(), "{output}");
        }
        let room = 1024 - crate::model::OUTPUT_KEY_ROOM;
        assert_eq!(unfit_source(&"k".repeat(room)), None);
        assert!(unfit_source(&"k".repeat(room + 1)).is_some());
    }

    fn obj(key: &str, etag: &str, ct: Option<&str>) -> Listed {
        Listed {
            key: key.into(),
            etag: etag.into(),
            content_type: ct.map(str::to_string),
        }
    }

    #[test]
    fn a_batch_skips_what_is_not_media_and_what_is_done_unless_forced() {
        let listed = vec![
            obj("in/a.mp4", "e1", Some("video/mp4")),
            obj(
                "in/a.mp4.hls/master.m3u8",
                "x",
                Some("application/vnd.apple.mpegurl"),
            ),
            obj(&done_marker("in/a.mp4", "default", "e1"), "x", None),
            obj("in/b.mov", "e2", Some("video/quicktime")),
            // Done from an older version: changed since, so transcoded again.
            obj(&done_marker("in/b.mov", "default", "old"), "x", None),
            // Done with another profile.
            obj("in/c.mkv", "e3", Some("application/octet-stream")),
            obj(&done_marker("in/c.mkv", "preview", "e3"), "x", None),
            obj("in/d", "e4", None),
            obj("in/notes.txt", "e5", Some("text/plain; charset=utf-8")),
            obj("in/cover.jpg", "e6", Some("image/jpeg")),
            obj("in/song.mp3", "e7", Some("audio/mpeg")),
        ];
        let (sources, skipped) = select("m", listed.clone(), "default", false);
        assert_eq!(
            sources,
            ["m/in/b.mov", "m/in/c.mkv", "m/in/d", "m/in/song.mp3"]
        );
        let reason = |k: &str| {
            skipped
                .iter()
                .find(|s| s.source == format!("m/{k}"))
                .map(|s| s.reason.clone())
                .unwrap_or_default()
        };
        assert!(
            reason("in/a.mp4").contains("already transcoded"),
            "{skipped:?}"
        );
        assert!(reason("in/notes.txt").contains("text/plain"));
        assert!(reason("in/cover.jpg").contains("not video or audio"));
        assert!(reason("in/a.mp4.hls/master.m3u8").contains(".hls"));
        assert_eq!(skipped.len(), 7, "{skipped:?}");
        let (forced, _) = select("m", listed, "default", true);
        assert_eq!(
            forced,
            [
                "m/in/a.mp4",
                "m/in/b.mov",
                "m/in/c.mkv",
                "m/in/d",
                "m/in/song.mp3"
            ]
        );
    }
}
