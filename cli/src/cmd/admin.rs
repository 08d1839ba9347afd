//! `kura admin ...`: cluster status, node lifecycle and rebalance control, through a
//! gateway's admin API (its own token).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{json, Value};

use super::client::{finish, usage, ClientError, DEFAULT_GATEWAY, EXIT_CODES_HELP};

/// File `kura dev` writes its admin token to.
const DEV_ADMIN_TOKEN_FILE: &str = "kura-data/admin-token";

/// How often `--watch` polls.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// `kura admin`.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Gateway base URL.
    #[arg(long, env = "KURA_GATEWAY", default_value = DEFAULT_GATEWAY, global = true)]
    gateway: String,
    /// Admin token (else ./kura-data/admin-token, written by `kura dev`).
    #[arg(long, env = "KURA_ADMIN_TOKEN", hide_env_values = true, global = true)]
    admin_token: Option<String>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Print the cluster: epoch, nodes, capacity, rebalance progress.
    #[command(after_help = EXIT_CODES_HELP)]
    Status {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add, reweight, drain, remove, declare lost, or reactivate a node.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Show rebalance progress; pause, resume or throttle it on every node.
    #[command(after_help = EXIT_CODES_HELP)]
    Rebalance {
        /// Follow progress (bytes moved, remaining, rate, ETA) until it is done.
        #[arg(long)]
        watch: bool,
        /// Pause moving data.
        #[arg(long, conflicts_with = "resume")]
        pause: bool,
        /// Resume moving data.
        #[arg(long)]
        resume: bool,
        /// Throttle in bytes per second per node (0: unthrottled).
        #[arg(long)]
        throttle: Option<u64>,
    },
    /// Start a repair pass on every node (bring every item back to N copies).
    #[command(after_help = EXIT_CODES_HELP)]
    Repair,
}

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Add a node: `kura admin node add n4 10.0.0.4:7001 --zone rack-d`.
    Add {
        id: String,
        addr: String,
        #[arg(long)]
        zone: String,
        #[arg(long)]
        weight: Option<u32>,
    },
    /// Change a node's weight (its share of data).
    Weight { id: String, weight: u32 },
    /// Move all data off a node (it keeps serving reads meanwhile).
    Drain { id: String },
    /// Take a node out of the cluster (its data moves away first).
    Remove { id: String },
    /// Declare a node lost for good: survivors restore N copies of its data.
    Lost { id: String },
    /// Make a drained or removed node active again.
    Activate { id: String },
}

struct Admin {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    fn new(args: &AdminArgs) -> Result<Self> {
        let token = match args.admin_token.clone().filter(|t| !t.is_empty()) {
            Some(t) => t,
            None => std::fs::read_to_string(DEV_ADMIN_TOKEN_FILE)
                .map(|s| s.trim().to_string())
                .map_err(|_| usage("no admin token: pass --admin-token or set KURA_ADMIN_TOKEN"))?,
        };
        Ok(Self {
            http: reqwest::Client::new(),
            base: args.gateway.trim_end_matches('/').to_string(),
            token,
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow::Error::from(ClientError::Unreachable {
                    url: self.base.clone(),
                    why: e.to_string(),
                })
            } else {
                anyhow::Error::from(e)
            }
        })?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(ClientError::Server {
                status,
                code: v["error"].as_str().unwrap_or("error").to_string(),
                message: v["message"].as_str().unwrap_or("").to_string(),
            }
            .into());
        }
        Ok(v)
    }
}

fn gib(v: &Value) -> String {
    v.as_u64().map_or("-".into(), |b| {
        format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
    })
}

fn print_status(c: &Value) {
    println!("epoch {}   replicas {}", c["epoch"], c["replicas"]);
    println!(
        "{:<10} {:<22} {:<10} {:>6} {:<9} {:<7} {:>12} {:>12} {:>9}",
        "NODE", "ADDR", "ZONE", "WEIGHT", "STATE", "HEALTH", "USED", "FREE", "CHUNKS"
    );
    for n in c["nodes"].as_array().into_iter().flatten() {
        println!(
            "{:<10} {:<22} {:<10} {:>6} {:<9} {:<7} {:>12} {:>12} {:>9}",
            n["id"].as_str().unwrap_or("?"),
            n["addr"].as_str().unwrap_or("?"),
            n["zone"].as_str().unwrap_or("?"),
            n["weight"],
            n["state"].as_str().unwrap_or("?"),
            n["health"].as_str().unwrap_or("?"),
            gib(&n["bytes_used"]),
            gib(&n["bytes_free"]),
            n["chunks"].as_u64().map_or("-".into(), |c| c.to_string()),
        );
    }
    let r = &c["rebalance"];
    println!(
        "rebalance: {}  moved {}  remaining {}  rate {}/s  eta {}",
        if r["running"].as_bool().unwrap_or(false) {
            "running"
        } else {
            "idle"
        },
        gib(&r["moved_bytes"]),
        gib(&r["remaining_bytes"]),
        gib(&r["rate_bytes_per_sec"]),
        r["eta_secs"]
            .as_u64()
            .map_or("-".into(), |s| format!("{s} s")),
    );
}

async fn watch(admin: &Admin) -> Result<()> {
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template(
            "rebalance [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    // Give nodes a moment to pick up a change made just before.
    tokio::time::sleep(WATCH_EVERY).await;
    loop {
        let c = admin.call(Method::GET, "/v1/admin/cluster", None).await?;
        let r = &c["rebalance"];
        let moved = r["moved_bytes"].as_u64().unwrap_or(0);
        let remaining = r["remaining_bytes"].as_u64().unwrap_or(0);
        bar.set_length(moved + remaining.max(1));
        bar.set_position(moved);
        let paused = c["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["rebalance"]["paused"].as_bool().unwrap_or(false));
        let pending = r["pending_nodes"].as_u64().unwrap_or(0);
        bar.set_message(if paused {
            "paused".to_string()
        } else if pending > 0 && !r["running"].as_bool().unwrap_or(false) {
            format!("{pending} node(s) waiting to retry deferred items")
        } else {
            String::new()
        });
        if r["settled"].as_bool().unwrap_or(false) {
            bar.finish_with_message(format!("done at epoch {}", c["epoch"]));
            return Ok(());
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

async fn admin(args: AdminArgs) -> Result<()> {
    let a = Admin::new(&args)?;
    match args.command {
        AdminCommand::Status { json } => {
            let c = a.call(Method::GET, "/v1/admin/cluster", None).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&c).context("printing JSON")?
                );
            } else {
                print_status(&c);
            }
        }
        AdminCommand::Node(cmd) => {
            let (method, path, body) = match cmd {
                NodeCommand::Add {
                    id,
                    addr,
                    zone,
                    weight,
                } => (
                    Method::POST,
                    "/v1/admin/nodes".to_string(),
                    json!({"id": id, "addr": addr, "zone": zone, "weight": weight}),
                ),
                NodeCommand::Weight { id, weight } => (
                    Method::PATCH,
                    format!("/v1/admin/nodes/{id}"),
                    json!({"weight": weight}),
                ),
                NodeCommand::Drain { id } => (
                    Method::PATCH,
                    format!("/v1/admin/nodes/{id}"),
                    json!({"state": "draining"}),
                ),
                NodeCommand::Remove { id } => (
                    Method::PATCH,
                    format!("/v1/admin/nodes/{id}"),
                    json!({"state": "removed"}),
                ),
                NodeCommand::Lost { id } => (
                    Method::PATCH,
                    format!("/v1/admin/nodes/{id}"),
                    json!({"state": "lost"}),
                ),
                NodeCommand::Activate { id } => (
                    Method::PATCH,
                    format!("/v1/admin/nodes/{id}"),
                    json!({"state": "active"}),
                ),
            };
            let r = a.call(method, &path, Some(body)).await?;
            println!(
                "cluster map is now at epoch {} (taken by {} of {} nodes)",
                r["epoch"], r["applied"], r["nodes"]
            );
        }
        AdminCommand::Rebalance {
            watch: w,
            pause,
            resume,
            throttle,
        } => {
            if pause || resume || throttle.is_some() {
                let mut body = json!({});
                if pause || resume {
                    body["paused"] = json!(pause);
                }
                if let Some(t) = throttle {
                    body["bytes_per_sec"] = json!(t);
                }
                a.call(Method::PUT, "/v1/admin/rebalance", Some(body))
                    .await?;
            }
            if w {
                watch(&a).await?;
            } else {
                print_status(&a.call(Method::GET, "/v1/admin/cluster", None).await?);
            }
        }
        AdminCommand::Repair => {
            let r = a.call(Method::POST, "/v1/admin/repair", None).await?;
            println!("repair started on {} of {} nodes", r["started"], r["nodes"]);
        }
    }
    Ok(())
}

/// Runs `kura admin ...`.
pub async fn run(args: AdminArgs) -> ExitCode {
    finish(admin(args).await)
}
