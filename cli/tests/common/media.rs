//! `ffmpeg` / `ffprobe` helpers: running them with a timeout, probing sources, and
//! [`check_hls`], which checks the HLS a transcoding job produced as a player would.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::StatusCode;

use super::{job_summary, GatewayClient};

/// Longest an `ffmpeg`/`ffprobe` run may take before the test fails.
pub const MEDIA_TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// How far an HLS rendition's duration may be from its source's, seconds.
pub const DURATION_TOLERANCE_S: f64 = 0.2;

/// Heights of the `default` profile's ladder (Apple's HLS authoring ladder).
pub const DEFAULT_LADDER_HEIGHTS: [u64; 6] = [234, 360, 432, 540, 720, 1080];

/// Output of a finished `ffmpeg`/`ffprobe`.
pub struct ToolOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program args` (e.g. `ffprobe`) within [`MEDIA_TOOL_TIMEOUT`].
pub async fn run_tool(program: &str, args: &[&str]) -> Result<ToolOutput> {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let out = tokio::time::timeout(MEDIA_TOOL_TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| format!("{program} {args:?} ran over {MEDIA_TOOL_TIMEOUT:?}"))??;
    Ok(ToolOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `ffprobe -v error <args> -of json <input>`, parsed; fails on a non-zero exit.
pub async fn ffprobe_json(input: &str, args: &[&str]) -> Result<serde_json::Value> {
    let mut all = vec!["-v", "error"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-of", "json", input]);
    let out = run_tool("ffprobe", &all).await?;
    ensure!(
        out.status.success(),
        "ffprobe {all:?}: {}: {}",
        out.status,
        out.stderr
    );
    serde_json::from_str(&out.stdout).with_context(|| format!("ffprobe output {}", out.stdout))
}

/// `format.duration` of `input` (a file or URL), seconds.
pub async fn media_duration(input: &str) -> Result<f64> {
    let v = ffprobe_json(input, &["-show_entries", "format=duration"]).await?;
    v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .with_context(|| format!("no duration for {input}: {v}"))
}

/// What the tests need to know about a source file.
#[derive(Clone, Debug)]
pub struct SourceFacts {
    /// Container duration, seconds.
    pub duration_s: f64,
    /// Display height (the width for a source rotated by 90° or 270°).
    pub height: u64,
    /// Whether it has an audio stream.
    pub has_audio: bool,
}

/// Probes a local source file with `ffprobe`.
pub async fn source_facts(path: &Path) -> Result<SourceFacts> {
    let input = path.to_string_lossy();
    let v = ffprobe_json(
        &input,
        &[
            "-show_entries",
            "format=duration:stream=codec_type,width,height:stream_side_data=rotation",
        ],
    )
    .await?;
    let streams = v["streams"].as_array().cloned().unwrap_or_default();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .with_context(|| format!("{input} has no video stream: {v}"))?;
    let (w, h) = (
        video["width"].as_u64().unwrap_or(0),
        video["height"].as_u64().unwrap_or(0),
    );
    let rotation = video["side_data_list"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|d| d["rotation"].as_i64())
        .unwrap_or(0);
    Ok(SourceFacts {
        duration_s: v["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .with_context(|| format!("{input} has no duration: {v}"))?,
        height: if rotation.rem_euclid(180) == 90 { w } else { h },
        has_audio: streams.iter().any(|s| s["codec_type"] == "audio"),
    })
}

/// Decodes `input` with `ffmpeg -v error -nostats -i input -map 0:v -map 0:a? -f null -`
/// (every video stream: for a master playlist, every rendition) and fails unless it
/// exits 0 with nothing on stderr.
pub async fn ffmpeg_decodes_cleanly(input: &str) -> Result<()> {
    let out = run_tool(
        "ffmpeg",
        &[
            "-nostdin", "-v", "error", "-nostats", "-i", input, "-map", "0:v", "-map", "0:a?",
            "-f", "null", "-",
        ],
    )
    .await?;
    ensure!(
        out.status.success() && out.stderr.trim().is_empty(),
        "ffmpeg decoding {input}: {}; stderr: {}",
        out.status,
        out.stderr
    );
    Ok(())
}

/// The first video frame of `input`: `(key_frame, pict_type)`.
pub async fn first_video_frame(input: &str) -> Result<(i64, String)> {
    let v = ffprobe_json(
        input,
        &[
            "-select_streams",
            "v:0",
            "-read_intervals",
            "%+#1",
            "-show_frames",
            "-show_entries",
            "frame=key_frame,pict_type",
        ],
    )
    .await?;
    let f = v["frames"]
        .get(0)
        .with_context(|| format!("no video frame in {input}: {v}"))?;
    Ok((
        f["key_frame"].as_i64().unwrap_or(-1),
        f["pict_type"].as_str().unwrap_or("?").to_string(),
    ))
}

/// What [`check_hls`] found.
#[derive(Clone, Debug)]
pub struct HlsReport {
    /// Signed URL of the master playlist.
    pub master_url: String,
    /// Heights of the video renditions, as the master lists them.
    pub heights: Vec<u64>,
    /// Media playlist URIs per rendition (video renditions by name, then `audio`),
    /// with their segment URIs.
    pub segments: Vec<(String, Vec<String>)>,
    /// Duration of each rendition (as ffprobe reads its media playlist).
    pub durations: Vec<(String, f64)>,
}

/// Checks the HLS outputs of the succeeded `job` (made from the local file `source`)
/// through the gateway, reading it via a signed URL as a player would:
/// - the master playlist parses; it lists exactly the ladder's rungs not above the
///   source's height (the smallest rung for a smaller source), matching the job's
///   `outputs.renditions`; it has the audio group iff the source has audio;
/// - `ffmpeg` decodes every rendition with nothing on stderr;
/// - every rendition's duration (ffprobe on its media playlist) is the source's
///   ±[`DURATION_TOLERANCE_S`];
/// - every segment of every video rendition starts with a key frame (an I frame);
/// - the poster and thumbnail strip exist and are JPEG.
pub async fn check_hls(
    gw: &GatewayClient,
    job: &serde_json::Value,
    source: &Path,
) -> Result<HlsReport> {
    let name = source.display();
    let facts = source_facts(source).await?;
    ensure!(job["state"] == "succeeded", "{name}: {}", job_summary(job));
    let outputs = &job["outputs"];
    let master = outputs["master"]
        .as_str()
        .with_context(|| format!("{name}: no master in {outputs}"))?;
    let master_url = gw.signed_url(master).await?;
    let body = reqwest::get(&master_url).await?;
    ensure!(
        body.status() == StatusCode::OK,
        "{name}: GET {master_url}: {}",
        body.status()
    );
    let body = body.bytes().await?;
    let pl = m3u8_rs::parse_master_playlist_res(&body).map_err(|e| {
        anyhow::anyhow!(
            "{name}: master playlist does not parse: {e:?}\n{}",
            String::from_utf8_lossy(&body)
        )
    })?;
    let heights: Vec<u64> = pl
        .variants
        .iter()
        .map(|v| v.resolution.as_ref().map_or(0, |r| r.height))
        .collect();
    let mut expected: Vec<u64> = DEFAULT_LADDER_HEIGHTS
        .iter()
        .copied()
        .filter(|h| *h <= facts.height)
        .collect();
    if expected.is_empty() {
        expected.push(facts.height & !1);
    }
    ensure!(
        heights == expected,
        "{name} ({} lines): master lists heights {heights:?}, expected {expected:?}",
        facts.height
    );
    let listed: Vec<u64> = outputs["renditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["height"].as_u64().unwrap_or(0))
        .collect();
    ensure!(
        listed == heights,
        "{name}: outputs.renditions heights {listed:?}, master {heights:?}"
    );
    let audio_groups: Vec<&m3u8_rs::AlternativeMedia> = pl
        .alternatives
        .iter()
        .filter(|a| a.media_type == m3u8_rs::AlternativeMediaType::Audio)
        .collect();
    if facts.has_audio {
        ensure!(
            audio_groups.len() == 1,
            "{name} has audio, master has {} audio renditions",
            audio_groups.len()
        );
        let group = &audio_groups[0].group_id;
        ensure!(
            pl.variants.iter().all(|v| v.audio.as_ref() == Some(group)),
            "{name}: a variant does not use audio group {group}"
        );
        ensure!(
            outputs["audio"].is_string(),
            "{name}: no audio in outputs {outputs}"
        );
    } else {
        ensure!(
            audio_groups.is_empty() && pl.variants.iter().all(|v| v.audio.is_none()),
            "{name} has no audio, master has an audio group"
        );
    }

    ffmpeg_decodes_cleanly(&master_url)
        .await
        .with_context(|| format!("{name}"))?;

    let base = reqwest::Url::parse(&master_url)?;
    let mut playlists: Vec<(String, bool, String)> = pl
        .variants
        .iter()
        .map(|v| (v.uri.clone(), true, v.uri.clone()))
        .collect();
    for a in &audio_groups {
        let uri = a
            .uri
            .clone()
            .with_context(|| format!("{name}: audio rendition without URI"))?;
        playlists.push((uri.clone(), false, uri));
    }
    let mut segments = Vec::new();
    let mut durations = Vec::new();
    for (uri, is_video, label) in playlists {
        let url = base.join(&uri)?;
        let body = reqwest::get(url.clone()).await?;
        ensure!(
            body.status() == StatusCode::OK,
            "{name}: GET {url}: {}",
            body.status()
        );
        let body = body.bytes().await?;
        let media = m3u8_rs::parse_media_playlist_res(&body)
            .map_err(|e| anyhow::anyhow!("{name}: {label} does not parse: {e:?}"))?;
        ensure!(media.end_list, "{name}: {label} has no EXT-X-ENDLIST");
        ensure!(
            !media.segments.is_empty(),
            "{name}: {label} has no segments"
        );
        let duration = media_duration(url.as_str()).await?;
        ensure!(
            (duration - facts.duration_s).abs() <= DURATION_TOLERANCE_S,
            "{name}: {label} lasts {duration:.3} s, the source {:.3} s",
            facts.duration_s
        );
        durations.push((label.clone(), duration));
        let mut seg_uris = Vec::new();
        for s in &media.segments {
            let seg_url = url.join(&s.uri)?;
            if is_video {
                let (key, pict) = first_video_frame(seg_url.as_str()).await?;
                ensure!(
                    key == 1 && pict == "I",
                    "{name}: {label} segment {} starts with key_frame={key} pict_type={pict}",
                    s.uri
                );
            }
            seg_uris.push(s.uri.clone());
        }
        segments.push((label, seg_uris));
    }

    for (what, file) in [("poster", "poster.jpg"), ("thumbnails", "thumbs.jpg")] {
        let key = outputs[what]
            .as_str()
            .with_context(|| format!("{name}: no {what} in {outputs}"))?;
        ensure!(key.ends_with(file), "{name}: {what} is {key}, not a {file}");
        let bytes = gw.get_object(key).await?;
        ensure!(
            bytes.starts_with(&[0xFF, 0xD8, 0xFF]) && bytes.ends_with(&[0xFF, 0xD9]),
            "{name}: {key} ({} bytes) is not a JPEG",
            bytes.len()
        );
    }
    Ok(HlsReport {
        master_url,
        heights,
        segments,
        durations,
    })
}
