//! HLS playlists, written with `m3u8-rs`: one media playlist per rendition and the
//! master playlist tying the video renditions to the one audio rendition group.

use m3u8_rs::{
    AlternativeMedia, AlternativeMediaType, MasterPlaylist, MediaPlaylist, MediaPlaylistType,
    MediaSegment, Resolution, VariantStream,
};
use serde::{Deserialize, Serialize};

pub use crate::work::StoredSegment;

/// Group id of the audio rendition.
pub const AUDIO_GROUP: &str = "audio";

/// A video rendition in the master playlist.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoRendition {
    /// Name (`v720p`); its playlist is `<name>/index.m3u8`.
    pub name: String,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Peak bitrate in bit/s (largest segment's).
    pub peak_bps: u64,
    /// Average bitrate in bit/s.
    pub average_bps: u64,
    /// Frame rate.
    pub fps: f64,
}

/// The RFC 6381 codec string of an H.264 High-profile rendition (what `crate::media`
/// encodes) of `height` lines: the level follows the picture size (3.0 up to 432p, 3.1 up
/// to 720p, 4.0 above).
pub fn avc_codec(height: u32) -> &'static str {
    match height {
        0..=432 => "avc1.64001e",
        433..=720 => "avc1.64001f",
        _ => "avc1.640028",
    }
}

/// A media playlist (VOD) of `segments`, sorted by index.
pub fn media_playlist(segments: &[StoredSegment]) -> Vec<u8> {
    let target = segments
        .iter()
        .map(|s| s.duration_s.ceil() as u64)
        .max()
        .unwrap_or(1)
        .max(1);
    let pl = MediaPlaylist {
        version: Some(3),
        target_duration: target,
        media_sequence: 0,
        segments: segments
            .iter()
            .map(|s| MediaSegment {
                uri: s.uri.clone(),
                duration: s.duration_s as f32,
                ..Default::default()
            })
            .collect(),
        end_list: true,
        playlist_type: Some(MediaPlaylistType::Vod),
        independent_segments: true,
        ..Default::default()
    };
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = pl.write_to(&mut out);
    out
}

/// The master playlist of a source without video: its audio rendition as the variant.
fn audio_only_master(peak_bps: u64) -> Vec<u8> {
    let pl = MasterPlaylist {
        version: Some(4),
        independent_segments: true,
        variants: vec![VariantStream {
            uri: "audio/index.m3u8".into(),
            bandwidth: peak_bps,
            codecs: Some("mp4a.40.2".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut out = Vec::new();
    let _ = pl.write_to(&mut out);
    out
}

/// Peak and average bit/s of a rendition's segments.
pub fn bitrates(segments: &[StoredSegment]) -> (u64, u64) {
    let total_s: f64 = segments.iter().map(|s| s.duration_s).sum();
    let total_b: u64 = segments.iter().map(|s| s.bytes).sum();
    let average = if total_s > 0.0 {
        (total_b as f64 * 8.0 / total_s) as u64
    } else {
        0
    };
    let peak = segments
        .iter()
        .filter(|s| s.duration_s > 0.5)
        .map(|s| (s.bytes as f64 * 8.0 / s.duration_s) as u64)
        .max()
        .unwrap_or(average);
    (peak.max(average), average)
}

/// The master playlist. `audio_bps` is the audio rendition's peak bitrate, if there is
/// one: each variant's BANDWIDTH then includes it, as the HLS spec requires. Without
/// video, the audio rendition is the one variant.
pub fn master_playlist(videos: &[VideoRendition], audio_bps: Option<u64>) -> Vec<u8> {
    if let (true, Some(bps)) = (videos.is_empty(), audio_bps) {
        return audio_only_master(bps);
    }
    let audio_extra = audio_bps.unwrap_or(0);
    let pl = MasterPlaylist {
        version: Some(4),
        independent_segments: true,
        alternatives: audio_bps
            .map(|_| {
                vec![AlternativeMedia {
                    media_type: AlternativeMediaType::Audio,
                    uri: Some("audio/index.m3u8".into()),
                    group_id: AUDIO_GROUP.into(),
                    name: "audio".into(),
                    default: true,
                    autoselect: true,
                    channels: Some("2".into()),
                    ..Default::default()
                }]
            })
            .unwrap_or_default(),
        variants: videos
            .iter()
            .map(|v| VariantStream {
                uri: format!("{}/index.m3u8", v.name),
                bandwidth: v.peak_bps + audio_extra,
                average_bandwidth: Some(v.average_bps + audio_extra),
                codecs: Some(match audio_bps {
                    Some(_) => format!("{},mp4a.40.2", avc_codec(v.height)),
                    None => avc_codec(v.height).to_string(),
                }),
                resolution: Some(Resolution {
                    width: v.width as u64,
                    height: v.height as u64,
                }),
                frame_rate: (v.fps > 0.0).then_some((v.fps * 1000.0).round() / 1000.0),
                audio: audio_bps.map(|_| AUDIO_GROUP.to_string()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut out = Vec::new();
    let _ = pl.write_to(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(i: u32, d: f64) -> StoredSegment {
        StoredSegment {
            rendition: "v360p".into(),
            index: i,
            uri: format!("a7/seg{i:05}.ts"),
            duration_s: d,
            bytes: 100_000,
        }
    }

    #[test]
    fn playlists_parse_back() {
        let segs = vec![seg(0, 6.0), seg(1, 6.0), seg(2, 2.3)];
        let media = media_playlist(&segs);
        let parsed = m3u8_rs::parse_media_playlist_res(&media).unwrap();
        assert_eq!(parsed.segments.len(), 3);
        assert_eq!(parsed.target_duration, 6);
        assert!(parsed.end_list);
        let (peak, avg) = bitrates(&segs);
        assert!(peak >= avg && avg > 0);
        let v = VideoRendition {
            name: "v360p".into(),
            width: 640,
            height: 360,
            peak_bps: peak,
            average_bps: avg,
            fps: 29.97,
        };
        let master = master_playlist(&[v], Some(130_000));
        let parsed = m3u8_rs::parse_master_playlist_res(&master).unwrap();
        assert_eq!(parsed.variants.len(), 1);
        assert_eq!(parsed.variants[0].audio.as_deref(), Some(AUDIO_GROUP));
        assert_eq!(parsed.alternatives.len(), 1);
    }
}
