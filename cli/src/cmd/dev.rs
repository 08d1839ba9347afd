//! `kura dev`: a whole cluster in one process, for a laptop: three storage nodes in three
//! zones, a gateway, the transcoding coordinator and a worker. Data, the API key and the cluster secret live under `--data` and
//! survive restarts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use kura_cluster::auth::generate_secret;
use kura_cluster::map::{ClusterMap, NodeEntry, NodeState};
use kura_cluster::ring::{Replication, DEFAULT_WEIGHT};
use kura_gateway::config::{DEFAULT_CHUNK_SIZE, DEFAULT_MAX_OBJECT_BYTES};
use kura_gateway::s3::S3Key;
use kura_gateway::GatewayConfig;
use kura_storage_node::config::{DEFAULT_SCRUB_BYTES_PER_SEC, DEFAULT_SCRUB_INTERVAL_SECS};
use kura_storage_node::NodeConfig;
use kura_transcoder::coordinator::CoordinatorConfig;
use kura_transcoder::worker::child::{DEFAULT_FILE_BYTES, DEFAULT_MEMORY_BYTES};
use kura_transcoder::worker::WorkerConfig;

/// The dev cluster's nodes: (id, zone).
const DEV_NODES: [(&str, &str); 3] = [
    ("node-a", "zone-a"),
    ("node-b", "zone-b"),
    ("node-c", "zone-c"),
];

/// Task slots of the dev worker: one task at a time, using every core, is what a
/// laptop does best.
const DEV_WORKER_SLOTS: usize = 1;

/// Flags of `kura dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Data directory; kept across restarts.
    #[arg(long, env = "KURA_DATA", default_value = "./kura-data")]
    pub data: PathBuf,
    /// Gateway listen address.
    #[arg(long, env = "KURA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// API key; generated and saved under the data directory if not given.
    #[arg(long, env = "KURA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// S3 API listen address.
    #[arg(long, env = "KURA_S3_LISTEN", default_value = "127.0.0.1:9000")]
    pub s3_listen: SocketAddr,
}

/// The S3 key pair of the dev cluster (generated once, kept under the data directory).
fn s3_key(data: &Path) -> anyhow::Result<S3Key> {
    let access_key = match std::fs::read_to_string(data.join("s3-access-key")) {
        Ok(k) if !k.trim().is_empty() => k.trim().to_string(),
        _ => {
            let fresh = format!("KURA{}", generate_secret()[..16].to_uppercase());
            persisted_secret(data, "s3-access-key", Some(fresh))?
        }
    };
    let secret_key = persisted_secret(data, "s3-secret-key", None)?;
    Ok(S3Key {
        access_key,
        secret_key: secret_key.into(),
    })
}

/// Writes `s3.env`, `rclone.conf` and `s3cmd.cfg` for the S3 API at `s3_listen` (the
/// address actually bound, so `--s3-listen 127.0.0.1:0` works too):
/// `set -a; . kura-data/s3.env` points the aws CLI and boto3 at the dev cluster.
fn write_s3_client_files(data: &Path, key: &S3Key, s3_listen: SocketAddr) -> anyhow::Result<()> {
    let access_key = &key.access_key;
    let secret_key = key.secret_key.expose();
    let env = format!(
        "AWS_ENDPOINT_URL=http://{s3_listen}\nAWS_ACCESS_KEY_ID={access_key}\n\
         AWS_SECRET_ACCESS_KEY={secret_key}\nAWS_REGION={S3_REGION}\n\
         AWS_DEFAULT_REGION={S3_REGION}\n"
    );
    // The same for rclone (`rclone --config kura-data/rclone.conf ls kura:BUCKET`) and
    // s3cmd (`s3cmd -c kura-data/s3cmd.cfg ls`), which do not read AWS_ENDPOINT_URL.
    let rclone = format!(
        "[kura]\ntype = s3\nprovider = Other\naccess_key_id = {access_key}\n\
         secret_access_key = {secret_key}\nendpoint = http://{s3_listen}\nregion = {S3_REGION}\n"
    );
    let s3cmd = format!(
        "[default]\naccess_key = {access_key}\nsecret_key = {secret_key}\n\
         host_base = {s3_listen}\nhost_bucket = {s3_listen}\nuse_https = False\n\
         bucket_location = {S3_REGION}\n"
    );
    for (name, text) in [
        ("s3.env", env),
        ("rclone.conf", rclone),
        ("s3cmd.cfg", s3cmd),
    ] {
        let path = data.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The region S3 clients are told to use (kura has one location; the name only enters
/// request signatures).
const S3_REGION: &str = "us-east-1";

/// Reads `data/name`, or writes `given` (or a fresh secret) there.
fn persisted_secret(data: &Path, name: &str, given: Option<String>) -> anyhow::Result<String> {
    let path = data.join(name);
    if let Some(s) = given {
        std::fs::write(&path, &s).with_context(|| format!("writing {}", path.display()))?;
        return Ok(s);
    }
    if let Ok(s) = std::fs::read_to_string(&path) {
        return Ok(s.trim().to_string());
    }
    let s = generate_secret();
    std::fs::write(&path, &s).with_context(|| format!("writing {}", path.display()))?;
    Ok(s)
}

/// Binds `addrs` (those with a fixed port) until the result is dropped, so no server
/// started meanwhile with a system-picked port can take one; fails at once with a clear
/// error when one is in use.
fn reserve(addrs: &[SocketAddr]) -> anyhow::Result<Vec<std::net::TcpListener>> {
    addrs
        .iter()
        .filter(|a| a.port() != 0)
        .map(|a| std::net::TcpListener::bind(a).with_context(|| format!("cannot listen on {a}")))
        .collect()
}

/// Runs the dev cluster until Ctrl-C / SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating {}", args.data.display()))?;
    let api_key = persisted_secret(&args.data, "api-key", args.api_key)?;
    let secret = persisted_secret(&args.data, "cluster-secret", None)?;
    let webhook_secret = persisted_secret(&args.data, "webhook-secret", None)?;
    let admin_token = persisted_secret(&args.data, "admin-token", None)?;
    let s3 = s3_key(&args.data)?;
    // The nodes and the coordinator listen on ports the system picks; held first, the
    // gateway's and S3's addresses cannot be among them.
    let reserved = reserve(&[args.listen, args.s3_listen])?;
    let mut nodes = Vec::new();
    let mut entries = Vec::new();
    for (id, zone) in DEV_NODES {
        let running = kura_storage_node::start(NodeConfig {
            data: args.data.join(id),
            listen: "127.0.0.1:0".parse()?,
            node_id: id.into(),
            zone: zone.into(),
            cluster_secret: secret.clone().into(),
            scrub_bytes_per_sec: DEFAULT_SCRUB_BYTES_PER_SEC,
            scrub_interval_secs: DEFAULT_SCRUB_INTERVAL_SECS,
            rebalance_bytes_per_sec: kura_storage_node::rebalance::DEFAULT_REBALANCE_BYTES_PER_SEC,
            repair_interval_secs: kura_storage_node::rebalance::DEFAULT_REPAIR_INTERVAL_SECS,
            gc_interval_secs: kura_storage_node::gc::DEFAULT_GC_INTERVAL_SECS,
            gc_grace_secs: kura_storage_node::gc::DEFAULT_GC_GRACE_SECS,
            server: Default::default(),
        })
        .await
        .with_context(|| format!("starting {id}"))?;
        entries.push(NodeEntry {
            id: id.into(),
            addr: running.addr().to_string(),
            zone: zone.into(),
            weight: DEFAULT_WEIGHT,
            state: NodeState::Active,
        });
        nodes.push(running);
    }
    use kura_transcoder::coordinator::JobStore;
    let coordinator = kura_transcoder::coordinator::start(CoordinatorConfig {
        store: JobStore::Embedded(args.data.join("coordinator")),
        listen: "127.0.0.1:0".parse()?,
        api_keys: vec![api_key.clone().into()],
        cluster_secret: secret.clone().into(),
        gateway: Some(format!("http://{}", args.listen)),
        gateway_api_key: Some(api_key.clone().into()),
        lease_ms: kura_transcoder::coordinator::store::LEASE_MS,
        webhook_secret: Some(webhook_secret.into()),
        // A developer's webhook receiver runs on the same machine.
        webhook_allow: vec!["127.0.0.0/8".parse()?, "::1/128".parse()?],
        job_retention: kura_transcoder::coordinator::DEFAULT_JOB_RETENTION,
        server: Default::default(),
    })
    .await
    .context("starting the coordinator")?;
    drop(reserved);
    let gateway = kura_gateway::start(GatewayConfig {
        listen: args.listen,
        api_keys: vec![api_key.clone().into()],
        cluster_secret: secret.clone().into(),
        map: ClusterMap {
            epoch: 1,
            nodes: entries,
            ..Default::default()
        },
        replication: Replication::default(),
        chunk_size: DEFAULT_CHUNK_SIZE,
        max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
        zone: None,
        coordinator: Some(coordinator.url()),
        url_signing_keys: Vec::new(),
        cors_origins: vec!["*".into()],
        admin_token: Some(admin_token.clone().into()),
        hot_reads_per_sec: kura_gateway::hot::DEFAULT_HOT_READS_PER_SEC,
        hot_extra_replicas: kura_gateway::hot::DEFAULT_HOT_EXTRA_REPLICAS,
        max_header_bytes: kura_gateway::http::MAX_HEADER_BYTES,
        chunk_cache_bytes: kura_gateway::cache::DEFAULT_CHUNK_CACHE_BYTES,
        record_cache_ttl: kura_gateway::cache::DEFAULT_RECORD_CACHE_TTL,
        record_refresh_after: None,
        server: Default::default(),
        s3_listen: Some(args.s3_listen),
        s3_keys: vec![s3.clone()],
        multipart_expiry: kura_gateway::multipart::DEFAULT_EXPIRY,
        s3_domain: None,
        console: true,
        local_reads: true,
        open_file_keep: kura_gateway::cluster::OPEN_FILE_KEEP,
    })
    .await
    .context("starting the gateway")?;
    let url = gateway.url();
    let s3_addr = gateway.s3_addr().unwrap_or(args.s3_listen);
    write_s3_client_files(&args.data, &s3, s3_addr)?;
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(kura_transcoder::worker::run(
        WorkerConfig {
            coordinator: coordinator.url(),
            gateway: url.clone(),
            api_key: api_key.clone().into(),
            cluster_secret: secret.into(),
            slots: DEV_WORKER_SLOTS,
            express_slots: super::worker::DEFAULT_EXPRESS_SLOTS,
            worker_id: "dev-worker".into(),
            workdir: args.data.join("worker"),
            exec_program: std::env::current_exe().context("locating the kura binary")?,
            threads_per_task: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_bytes: DEFAULT_MEMORY_BYTES,
            file_bytes: DEFAULT_FILE_BYTES,
        },
        async {
            let _ = worker_stopped.await;
        },
    ));
    println!(
        "kura dev: gateway at {url}, 3 storage nodes, data in {}",
        args.data.display()
    );
    println!("  console: {url}/console/ (sign in with the API key and the admin token below)");
    println!("  export KURA_GATEWAY={url} KURA_API_KEY={api_key} KURA_ADMIN_TOKEN={admin_token}");
    println!("  kura put ./video.mp4 media/video.mp4 && kura get media/video.mp4 --range 0-99");
    println!(
        "  kura jobs submit media/video.mp4 --watch && kura url media/video.mp4.hls/master.m3u8"
    );
    println!(
        "  curl -T ./video.mp4 -H 'Authorization: Bearer {api_key}' {url}/v1/o/media/video.mp4"
    );
    println!(
        "  S3 at http://{} (key {}): set -a; . {}/s3.env; set +a; aws s3 ls",
        s3_addr,
        s3.access_key,
        args.data.display()
    );
    super::shutdown_signal().await;
    let _ = stop_worker.send(());
    worker.await??;
    gateway.shutdown().await?;
    coordinator.shutdown().await?;
    for n in nodes {
        n.shutdown().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_addresses_are_held_and_taken_ones_refused() {
        let held = reserve(&["127.0.0.1:0".parse().unwrap()]).unwrap();
        assert!(held.is_empty(), "a system-picked port needs no reservation");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = reserve(&[addr]).unwrap_err();
        assert!(format!("{e:#}").contains("cannot listen on"), "{e:#}");
        drop(taken);
        let held = reserve(&[addr]).unwrap();
        assert!(
            std::net::TcpListener::bind(addr).is_err(),
            "a reserved address stays taken while held"
        );
        drop(held);
        std::net::TcpListener::bind(addr).unwrap();
    }
}
