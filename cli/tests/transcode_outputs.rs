//! Transcoding end to end with real processes: three `kura node`s, a `kura gateway`, a
//! `kura coordinator` and two `kura worker`s (see `common::Transcoding`); the HLS they
//! produce is read back over HTTP with the `ffmpeg` and `ffprobe` CLIs, through signed
//! URLs, as a player would.
//!
//! Run these tests serially, with the other `transcode_*` tests:
//! `cargo test -p kura --test transcode_outputs --test transcode_failures -- --test-threads=1`.
//! Each test runs a whole cluster and encodes video; side by side on a small machine they
//! starve each other (and the leases they test).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::{
    check_hls, ffmpeg_decodes_cleanly, files_in, job_summary, media_duration, run_tool, tasks_of,
    Transcoding, API_KEY, VIDEO_DIR,
};

/// Lease length for these tests: the default's 30 s, so a loaded machine never loses one.
const LEASE_MS: u64 = 30_000;

/// Longest wait for every sample video's job (about 35 s of video, 2 workers).
const JOBS_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `kura <args>` against the gateway (no `KURA_*` from the test's environment) and
/// returns its exit status, stdout and stderr.
async fn kura_cli(args: &[&str]) -> Result<(std::process::ExitStatus, String, String)> {
    common::kura_cli(args, JOBS_TIMEOUT).await
}

/// Every file of `shared/media/video` goes in, is transcoded by two workers, and comes
/// out as HLS that a player can read: the right ladder, audio iff the source has it,
/// clean decoding, the source's duration in every rendition, a key frame at the start
/// of every segment, and a JPEG poster and thumbnail strip. All but one are submitted by
/// `PUT ...?transcode=default`; the last by `kura jobs submit --watch`, which must exit 0,
/// and `kura url` must print a URL of its master playlist that `ffmpeg` can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_video_transcodes_to_playable_hls() -> Result<()> {
    let started = Instant::now();
    let mut t = Transcoding::start(LEASE_MS).await?;
    t.start_worker("w1").await?;
    t.start_worker("w2").await?;
    let gw = t.client()?;
    let videos = files_in(VIDEO_DIR)?;
    let (by_cli, by_put) = videos.split_last().context("no videos")?;
    let key_of = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("file name")
    };

    let mut jobs: Vec<(PathBuf, String)> = Vec::new();
    for v in by_put {
        let reply = gw
            .put_file("media", &key_of(v)?, v, Some("default"))
            .await?;
        let id = reply["job"]["id"].as_str().context("job id")?.to_string();
        jobs.push((v.clone(), id));
    }
    let cli_key = key_of(by_cli)?;
    gw.put_file("media", &cli_key, by_cli, None).await?;
    let source = format!("media/{cli_key}");
    let gateway = gw.base.clone();
    let cli = tokio::spawn(async move {
        kura_cli(&[
            "jobs",
            "submit",
            &source,
            "--watch",
            "--gateway",
            &gateway,
            "--api-key",
            API_KEY,
        ])
        .await
    });

    let ids: Vec<String> = jobs.iter().map(|(_, id)| id.clone()).collect();
    let mut done = gw.wait_jobs(&ids, JOBS_TIMEOUT).await?;
    let (status, stdout, stderr) = cli.await??;
    ensure!(
        status.success(),
        "kura jobs submit --watch: {status}\nstdout: {stdout}\nstderr: {stderr}"
    );
    let cli_id = stdout
        .lines()
        .next()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .with_context(|| format!("kura jobs submit printed no job id: {stdout}"))?
        .to_string();
    ensure!(
        stdout.contains("succeeded"),
        "kura jobs submit --watch did not report success: {stdout}"
    );
    done.push(gw.wait_job(&cli_id, Duration::from_secs(10)).await?);
    jobs.push((by_cli.clone(), cli_id));
    eprintln!(
        "{} jobs final after {:.1} s",
        jobs.len(),
        started.elapsed().as_secs_f64()
    );

    // Check every video, then report every failure at once.
    let mut failures = Vec::new();
    for ((source, _), job) in jobs.iter().zip(&done) {
        let name = source.display();
        if job["state"] != "succeeded" {
            failures.push(format!("{name}: {}", job_summary(job)));
            continue;
        }
        // A healthy run retries nothing.
        let retried: Vec<String> = tasks_of(job)
            .iter()
            .filter(|t| t["attempts"] != 1)
            .map(|t| format!("{} attempts={}", t["id"], t["attempts"]))
            .collect();
        if !retried.is_empty() {
            failures.push(format!("{name}: tasks retried: {retried:?}"));
        }
        // It played before it was done, from its first master playlist; a ladder's
        // was published between the two encode passes (lowest rung, then the rest).
        let (playable, done_at) = (job["playable_ms"].as_u64(), job["updated_ms"].as_u64());
        let played_first = matches!((playable, done_at), (Some(p), Some(d)) if p <= d);
        if !played_first {
            failures.push(format!(
                "{name}: playable_ms {playable:?}, done {done_at:?}"
            ));
        }
        let finalizes = tasks_of(job)
            .iter()
            .filter(|t| t["spec"]["kind"] == "finalize")
            .count();
        let rungs = job["outputs"]["renditions"].as_array().map_or(0, Vec::len);
        if finalizes != if rungs > 1 { 2 } else { 1 } {
            failures.push(format!(
                "{name}: {finalizes} finalize tasks for {rungs} renditions"
            ));
        }
        // The last finalize left the marker a batch skips a done source by.
        let src = job["source"].as_str().unwrap_or_default();
        let etag = job["outputs"]["source_etag"].as_str().unwrap_or_default();
        let profile = job["profile"].as_str().unwrap_or_default();
        let marker = kura_transcoder::model::done_marker(src, profile, etag);
        let (bucket, key) = marker.split_once('/').unwrap_or_default();
        if gw.get(bucket, key).await?.is_none() {
            failures.push(format!("{name}: no {marker}"));
        }
        match check_hls(&gw, job, source).await {
            Ok(r) => eprintln!(
                "{name}: heights {:?}, durations {:?}",
                r.heights, r.durations
            ),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    eprintln!(
        "outputs checked after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // `kura url --tree` on the CLI-submitted job's master playlist: ffmpeg reads it
    // and every rendition beside it.
    let url = tree_url(&gw, &format!("media/{cli_key}.hls/master.m3u8")).await?;
    ensure!(
        url.starts_with(&format!("{}/v1/s/", gw.base)),
        "kura url printed {url:?}"
    );
    if let Err(e) = ffmpeg_decodes_cleanly(&url).await {
        failures.push(format!("kura url {url}: {e:#}"));
    }
    if let Err(e) = audio_only_source(&gw).await {
        failures.push(format!("audio-only source: {e:#}"));
    }

    ensure!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
    t.stop().await?;
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `kura url <master> --tree --expires 10m`: a signed URL a player opens the master
/// playlist and every rendition beside it with.
async fn tree_url(gw: &common::GatewayClient, master: &str) -> Result<String> {
    let (status, stdout, stderr) = kura_cli(&[
        "url",
        master,
        "--tree",
        "--expires",
        "10m",
        "--gateway",
        &gw.base,
        "--api-key",
        API_KEY,
    ])
    .await?;
    ensure!(status.success(), "kura url {master}: {status}: {stderr}");
    Ok(stdout.trim().to_string())
}

/// A source with audio and no video (a podcast) becomes its audio rendition alone: the
/// master playlist's one variant, playable for its whole length.
async fn audio_only_source(gw: &common::GatewayClient) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("podcast.m4a");
    let out = run_tool(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=300:duration=3.3",
            "-c:a",
            "aac",
            &src.display().to_string(),
        ],
    )
    .await?;
    ensure!(out.status.success(), "ffmpeg: {}", out.stderr);
    let reply = gw
        .put_file("media", "podcast.m4a", &src, Some("default"))
        .await?;
    let id = reply["job"]["id"].as_str().context("job id")?;
    let job = gw.wait_job(id, JOBS_TIMEOUT).await?;
    ensure!(job["state"] == "succeeded", "{}", job_summary(&job));
    let outputs = &job["outputs"];
    ensure!(
        outputs["renditions"].as_array().is_some_and(Vec::is_empty)
            && outputs["audio"] == "media/podcast.m4a.hls/audio/index.m3u8",
        "outputs {outputs}"
    );
    let master = gw
        .get("media", "podcast.m4a.hls/master.m3u8")
        .await?
        .context("no master playlist")?;
    let master = String::from_utf8_lossy(&master);
    ensure!(
        master.contains("CODECS=\"mp4a.40.2\"") && master.contains("\naudio/index.m3u8"),
        "master playlist:\n{master}"
    );
    let url = tree_url(gw, "media/podcast.m4a.hls/master.m3u8").await?;
    let out = run_tool(
        "ffmpeg",
        &["-v", "error", "-i", &url, "-map", "0:a", "-f", "null", "-"],
    )
    .await?;
    ensure!(
        out.status.success() && out.stderr.trim().is_empty(),
        "ffmpeg decoding {url}: {}",
        out.stderr
    );
    let played = media_duration(&url).await?;
    ensure!((played - 3.3).abs() < 0.1, "the audio plays {played} s");
    Ok(())
}
