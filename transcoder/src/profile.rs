//! Transcoding profiles: named presets of an H.264/AAC HLS ladder.

use serde::{Deserialize, Serialize};

/// One video rendition of a ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rung {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Video bitrate in kbit/s.
    pub video_kbps: u32,
}

/// A named preset.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Profile {
    /// Name, as given in job submissions.
    pub name: &'static str,
    /// Video rungs, smallest first. Only rungs not above the source are produced.
    pub ladder: &'static [Rung],
    /// Audio bitrate in kbit/s (AAC-LC, stereo, encoded once as its own rendition).
    pub audio_kbps: u32,
    /// Seconds between keyframes.
    pub gop_seconds: f64,
    /// Target HLS segment length in seconds (a multiple of the GOP, so every segment
    /// starts with an IDR).
    pub segment_seconds: f64,
    /// Whether the encode tasks measure each rendition's PSNR and SSIM against the
    /// source (reported in the job's outputs), at the cost of decoding every rendition
    /// once more while encoding it (see [`crate::media::quality`]).
    pub measure_quality: bool,
}

/// Apple's HLS authoring specification ladder for H.264 (16:9 rungs, 145 kbit/s to
/// 7.8 Mbit/s).
const APPLE_LADDER: &[Rung] = &[
    Rung {
        width: 416,
        height: 234,
        video_kbps: 145,
    },
    Rung {
        width: 640,
        height: 360,
        video_kbps: 365,
    },
    Rung {
        width: 768,
        height: 432,
        video_kbps: 730,
    },
    Rung {
        width: 960,
        height: 540,
        video_kbps: 2000,
    },
    Rung {
        width: 1280,
        height: 720,
        video_kbps: 4500,
    },
    Rung {
        width: 1920,
        height: 1080,
        video_kbps: 7800,
    },
];

/// A two-rung ladder for previews and tests.
const PREVIEW_LADDER: &[Rung] = &[
    Rung {
        width: 416,
        height: 234,
        video_kbps: 145,
    },
    Rung {
        width: 640,
        height: 360,
        video_kbps: 365,
    },
];

const PROFILES: &[Profile] = &[
    Profile {
        name: "default",
        ladder: APPLE_LADDER,
        audio_kbps: 128,
        gop_seconds: 2.0,
        segment_seconds: 6.0,
        measure_quality: true,
    },
    Profile {
        name: "preview",
        ladder: PREVIEW_LADDER,
        audio_kbps: 96,
        gop_seconds: 2.0,
        segment_seconds: 6.0,
        measure_quality: true,
    },
];

impl Profile {
    /// The profile called `name`.
    pub fn named(name: &str) -> Option<&'static Profile> {
        PROFILES.iter().find(|p| p.name == name)
    }

    /// Every profile name.
    pub fn names() -> Vec<&'static str> {
        PROFILES.iter().map(|p| p.name).collect()
    }

    /// The rungs to produce for a source of `width`×`height` (after rotation): every rung
    /// whose height is not above the source's, scaled to keep the source's aspect ratio
    /// (even dimensions, as H.264 4:2:0 needs); at least the smallest rung.
    pub fn rungs_for(&self, width: u32, height: u32) -> Vec<Rung> {
        let (w, h) = (width.max(2) as u64, height.max(2) as u64);
        let mut out: Vec<Rung> = self
            .ladder
            .iter()
            .filter(|r| (r.height as u64) <= h)
            .map(|r| {
                let rh = r.height as u64;
                let rw = (w * rh / h).max(2) & !1;
                Rung {
                    width: rw as u32,
                    height: r.height,
                    video_kbps: r.video_kbps,
                }
            })
            .collect();
        if out.is_empty() {
            let smallest = self.ladder[0];
            let rh = (h & !1).max(2);
            out.push(Rung {
                width: ((w * rh / h).max(2) & !1) as u32,
                height: rh as u32,
                video_kbps: smallest.video_kbps,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rungs_not_above_the_source() {
        let p = Profile::named("default").unwrap();
        let r = p.rungs_for(1280, 720);
        assert_eq!(r.last().unwrap().height, 720);
        assert_eq!(r.len(), 5);
        let r = p.rungs_for(640, 272);
        assert_eq!(r.iter().map(|r| r.height).collect::<Vec<_>>(), vec![234]);
        assert_eq!(r[0].width % 2, 0);
        let r = p.rungs_for(160, 90);
        assert_eq!((r[0].width, r[0].height), (160, 90));
        assert!(Profile::named("nope").is_none());
    }
}
