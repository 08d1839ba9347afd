//! `kura jobs ...` (transcoding jobs through the gateway) and `kura url` (signed URLs).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{json, Value};

use super::client::{finish, object_name, usage, Conn, GatewayOpts, EXIT_CODES_HELP};

/// How often `--watch` polls a job.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// `kura jobs`.
#[derive(Args, Debug)]
pub struct JobsArgs {
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Subcommand, Debug)]
enum JobsCommand {
    /// Submit a job for one object, or (with --prefix) one per object under a prefix.
    #[command(after_help = EXIT_CODES_HELP)]
    Submit {
        /// `bucket/key` of the source (omit with --prefix).
        source: Option<String>,
        /// `bucket/prefix`: submit a batch, one job per object under it.
        #[arg(long)]
        prefix: Option<String>,
        /// Profile.
        #[arg(long, default_value = "default")]
        profile: String,
        /// Priority 0..=9 (default 5 for one job, 2 for a batch).
        #[arg(long)]
        priority: Option<u8>,
        /// Follow progress until the job (or batch) ends.
        #[arg(long)]
        watch: bool,
        /// With --prefix: also objects already transcoded with this profile from their
        /// current version (a batch skips them otherwise).
        #[arg(long, requires = "prefix")]
        force: bool,
        #[command(flatten)]
        conn: GatewayOpts,
    },
    /// Show a job (or, with --batch, a batch).
    #[command(after_help = EXIT_CODES_HELP)]
    Status {
        /// Job or batch id.
        id: String,
        /// The id is a batch's.
        #[arg(long)]
        batch: bool,
        /// Follow progress until it ends.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        conn: GatewayOpts,
    },
    /// Show a batch: its counts, and with --watch every job's progress until all end.
    #[command(after_help = EXIT_CODES_HELP)]
    Batch {
        /// Batch id (printed by `kura jobs submit --prefix`).
        id: String,
        /// Follow progress until every job of the batch ends.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        conn: GatewayOpts,
    },
    /// List jobs, newest first.
    #[command(after_help = EXIT_CODES_HELP)]
    List {
        /// Only jobs in this state (queued|running|playable|succeeded|failed|cancelled).
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        conn: GatewayOpts,
    },
    /// Cancel a job.
    #[command(after_help = EXIT_CODES_HELP)]
    Cancel {
        /// Job id.
        id: String,
        #[command(flatten)]
        conn: GatewayOpts,
    },
}

/// `kura url bucket/key`: a signed URL anyone can read until it expires.
#[derive(Args, Debug)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct UrlArgs {
    /// `bucket/key`. The URL opens exactly this object, unless `--tree` is given.
    target: String,
    /// Validity: e.g. `90s`, `30m`, `1h`, `7d` (at most 7 days).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    expires: u64,
    /// Open a whole folder of keys instead (what an HLS player needs for the renditions
    /// beside a master playlist): `--tree` alone is the key's folder, `--tree PREFIX` a
    /// folder above it (ending in `/`).
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    tree: Option<String>,
    #[command(flatten)]
    conn: GatewayOpts,
}

/// Parses `90s`, `30m`, `1h`, `7d` or plain seconds into seconds.
fn parse_duration(s: &str) -> Result<u64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected e.g. 90s, 30m, 1h, 7d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unit must be s, m, h or d")),
    };
    Ok(n * mult)
}

async fn json_call(conn: &Conn, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
    let mut req = conn.request(method, &format!("{}{path}", conn.base()));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = conn.send(req).await?;
    resp.json().await.context("reading the gateway's answer")
}

fn print_job(job: &Value) {
    println!("job       {}", job["id"].as_str().unwrap_or("?"));
    println!("source    {}", job["source"].as_str().unwrap_or("?"));
    println!("profile   {}", job["profile"].as_str().unwrap_or("?"));
    println!("state     {}", job["state"].as_str().unwrap_or("?"));
    println!(
        "progress  {:.1}%",
        job["progress"].as_f64().unwrap_or(0.0) * 100.0
    );
    println!("attempts  {}", job["attempts"]);
    if let Some(e) = job.get("error").filter(|e| !e.is_null()) {
        println!(
            "error     {}: {}",
            e["class"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or("")
        );
    }
    if let Some(m) = job["outputs"]["master"].as_str() {
        println!("master    {m}");
    }
    if let Some(rs) = job["outputs"]["renditions"].as_array() {
        for r in rs {
            println!(
                "rendition {}x{} {} kbit/s PSNR {} SSIM {} {}",
                r["width"],
                r["height"],
                r["bitrate"].as_u64().unwrap_or(0) / 1000,
                r["psnr"]
                    .as_f64()
                    .map_or("-".into(), |p| format!("{p:.2} dB")),
                r["ssim"].as_f64().map_or("-".into(), |s| format!("{s:.4}")),
                r["playlist"].as_str().unwrap_or("")
            );
        }
    }
    for k in ["poster", "thumbnails"] {
        if let Some(v) = job["outputs"][k].as_str() {
            println!("{k:<9} {v}");
        }
    }
}

fn is_final(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "cancelled")
}

fn bar(multi: &MultiProgress, label: &str) -> ProgressBar {
    let b = multi.add(ProgressBar::new(1000));
    b.set_style(
        ProgressStyle::with_template("{prefix:24} [{bar:30}] {percent:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_prefix(label.chars().take(24).collect::<String>());
    b
}

/// Follows jobs until all are final, one progress bar each. Fails if any failed; in a
/// batch (`batch`), a job that found its object is not audio or video is skipped, not
/// failed.
async fn watch(conn: &Conn, ids: &[String], batch: bool) -> Result<()> {
    let multi = MultiProgress::new();
    let bars: Vec<ProgressBar> = ids.iter().map(|id| bar(&multi, id)).collect();
    let mut failed = 0;
    loop {
        let mut open = 0;
        for (id, b) in ids.iter().zip(&bars) {
            if b.is_finished() {
                continue;
            }
            let job = json_call(conn, Method::GET, &format!("/v1/jobs/{id}"), None).await?;
            let state = job["state"].as_str().unwrap_or("?").to_string();
            b.set_position((job["progress"].as_f64().unwrap_or(0.0) * 1000.0) as u64);
            b.set_message(state.clone());
            if is_final(&state) {
                let why = job["error"]["message"].as_str().unwrap_or("");
                if batch && job["error"]["class"] == "not_media" {
                    b.abandon_with_message(format!("skipped: {why}"));
                } else if state != "succeeded" {
                    failed += 1;
                    b.abandon_with_message(format!("{state}: {why}"));
                } else {
                    b.finish_with_message(state);
                }
            } else {
                open += 1;
            }
        }
        if open == 0 {
            break;
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} jobs did not succeed", ids.len());
    }
    Ok(())
}

/// What a batch submitted, and what it skipped and why.
fn print_submitted(batch: &Value) {
    let skipped = batch["skipped"].as_array().map_or(&[][..], Vec::as_slice);
    println!(
        "batch {} with {} jobs, {} objects skipped",
        batch["id"].as_str().unwrap_or("?"),
        batch["total"],
        skipped.len()
    );
    for s in skipped.iter().take(SKIPPED_SHOWN) {
        println!(
            "  skipped {}: {}",
            s["source"].as_str().unwrap_or("?"),
            s["reason"].as_str().unwrap_or("?")
        );
    }
    if skipped.len() > SKIPPED_SHOWN {
        println!("  ... and {} more", skipped.len() - SKIPPED_SHOWN);
    }
}

/// The ids of a batch's jobs.
fn job_ids(batch: &Value) -> Vec<String> {
    batch["jobs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Prints batch `id`'s counts; with `follow`, first follows its jobs until all end
/// (an object a job found is not media counts as skipped, not failed).
async fn batch_status(conn: &Conn, id: &str, follow: bool) -> Result<()> {
    if follow {
        let b = json_call(conn, Method::GET, &format!("/v1/batches/{id}"), None).await?;
        watch(conn, &job_ids(&b), true).await?;
    }
    let b = json_call(conn, Method::GET, &format!("/v1/batches/{id}"), None).await?;
    let skipped = b["skipped"].as_array().map_or(0, Vec::len);
    println!(
        "batch {id}: {} jobs, {} succeeded, {} failed, {} running, {} queued, {} cancelled, {skipped} not media, {:.1}%",
        b["total"], b["succeeded"], b["failed"], b["running"], b["queued"], b["cancelled"],
        b["progress"].as_f64().unwrap_or(0.0) * 100.0
    );
    Ok(())
}

/// Skipped objects a batch submission prints one by one (the rest are counted): enough
/// to see why, without a screenful per folder of outputs.
const SKIPPED_SHOWN: usize = 20;

async fn jobs(args: JobsArgs) -> Result<()> {
    match args.command {
        JobsCommand::Submit {
            source,
            prefix,
            profile,
            priority,
            watch: w,
            force,
            conn,
        } => {
            let conn = Conn::new(&conn)?;
            match (source, prefix) {
                (Some(source), None) => {
                    object_name(&source)?;
                    let body =
                        json!({ "source": source, "profile": profile, "priority": priority });
                    let job = json_call(&conn, Method::POST, "/v1/jobs", Some(body)).await?;
                    let id = job["id"].as_str().unwrap_or_default().to_string();
                    println!("{id}");
                    if w {
                        watch(&conn, std::slice::from_ref(&id), false).await?;
                        print_job(
                            &json_call(&conn, Method::GET, &format!("/v1/jobs/{id}"), None).await?,
                        );
                    }
                    Ok(())
                }
                (None, Some(prefix)) => {
                    let body = json!({
                        "prefix": prefix, "profile": profile, "priority": priority, "force": force,
                    });
                    let batch =
                        json_call(&conn, Method::POST, "/v1/jobs/batch", Some(body)).await?;
                    print_submitted(&batch);
                    if w {
                        watch(&conn, &job_ids(&batch), true).await?;
                    }
                    Ok(())
                }
                _ => Err(usage("give either bucket/key or --prefix bucket/prefix")),
            }
        }
        JobsCommand::Status {
            id,
            batch,
            watch: w,
            conn,
        } => {
            let conn = Conn::new(&conn)?;
            if batch {
                return batch_status(&conn, &id, w).await;
            }
            if w {
                watch(&conn, std::slice::from_ref(&id), false).await?;
            }
            print_job(&json_call(&conn, Method::GET, &format!("/v1/jobs/{id}"), None).await?);
            Ok(())
        }
        JobsCommand::Batch { id, watch: w, conn } => batch_status(&Conn::new(&conn)?, &id, w).await,
        JobsCommand::List { state, limit, conn } => {
            let conn = Conn::new(&conn)?;
            let mut path = format!("/v1/jobs?limit={limit}");
            if let Some(s) = state {
                path.push_str(&format!("&state={s}"));
            }
            let list = json_call(&conn, Method::GET, &path, None).await?;
            for j in list.as_array().into_iter().flatten() {
                println!(
                    "{}  {:<10} {:>5.1}%  {}",
                    j["id"].as_str().unwrap_or("?"),
                    j["state"].as_str().unwrap_or("?"),
                    j["progress"].as_f64().unwrap_or(0.0) * 100.0,
                    j["source"].as_str().unwrap_or("?")
                );
            }
            Ok(())
        }
        JobsCommand::Cancel { id, conn } => {
            let conn = Conn::new(&conn)?;
            let job = json_call(&conn, Method::DELETE, &format!("/v1/jobs/{id}"), None).await?;
            println!(
                "{} {}",
                job["id"].as_str().unwrap_or("?"),
                job["state"].as_str().unwrap_or("?")
            );
            Ok(())
        }
    }
}

async fn url(args: UrlArgs) -> Result<()> {
    let (_, key) = object_name(&args.target)?;
    let tree = match args.tree.as_deref() {
        None => None,
        Some("") => match key.rfind('/') {
            Some(i) => Some(key[..=i].to_string()),
            None => {
                return Err(usage(format!(
                    "--tree: {key:?} is in no folder (no '/'); give the folder"
                )))
            }
        },
        Some(prefix) => Some(prefix.to_string()),
    };
    let conn = Conn::new(&args.conn)?;
    let body = json!({ "object": args.target, "expires_in": args.expires, "tree": tree });
    let signed = json_call(&conn, Method::POST, "/v1/sign", Some(body)).await?;
    println!(
        "{}{}",
        conn.base(),
        signed["path"].as_str().unwrap_or_default()
    );
    Ok(())
}

/// Runs `kura jobs ...`.
pub async fn run_jobs(args: JobsArgs) -> ExitCode {
    finish(jobs(args).await)
}

/// Runs `kura url ...`.
pub async fn run_url(args: UrlArgs) -> ExitCode {
    finish(url(args).await)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("120"), Ok(120));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
