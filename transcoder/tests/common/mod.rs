//! What the coordinator's HTTP tests share.
#![allow(dead_code)]

use kura_transcoder::coordinator::{CoordinatorConfig, JobStore, DEFAULT_JOB_RETENTION};

/// A coordinator on a free loopback port with its store in `dir`, accepting `api_key`
/// from users and `secret` from workers; no gateway, no webhooks, default lease and
/// retention (tests change the fields they need).
pub fn config(dir: &std::path::Path, api_key: &str, secret: &str) -> CoordinatorConfig {
    CoordinatorConfig {
        store: JobStore::Embedded(dir.to_path_buf()),
        listen: "127.0.0.1:0".parse().unwrap(),
        api_keys: vec![api_key.into()],
        cluster_secret: secret.into(),
        gateway: None,
        gateway_api_key: None,
        lease_ms: kura_transcoder::coordinator::store::LEASE_MS,
        webhook_secret: None,
        webhook_allow: Vec::new(),
        job_retention: DEFAULT_JOB_RETENTION,
        server: Default::default(),
    }
}
