//! Job webhooks: when a job with a `webhook` URL becomes playable (its first master
//! playlist is published while higher renditions are still encoding), the coordinator
//! POSTs `{"event": "job.playable", "job": ...}` to it, and when it ends (succeeded,
//! failed or cancelled) `{"event": "job.finished", "job": ...}` (a job done in one step
//! sends only that one: `succeeded` implies playable). Each is signed with HMAC-SHA256 over the exact body (header [`SIGNATURE_HEADER`]:
//! `sha256=<hex>`), and retries with exponential backoff until the receiver answers 2xx.
//!
//! Deliveries are held in memory: a coordinator restart during the retries drops them
//! (the job's state stays queryable; receivers that must not miss one should also poll).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::egress::Egress;
use crate::model::Job;

/// Header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "x-kura-signature";

/// Delivery attempts: 1 s, 2 s, 4 s, ... between them, ~1 minute in all, enough to ride
/// out a receiver's restart.
pub const WEBHOOK_ATTEMPTS: u32 = 6;

/// Timeout of one delivery attempt.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        // Unreachable: HMAC takes keys of any length.
        Err(_) => <Hmac<Sha256> as hmac::digest::KeyInit>::new(&Default::default()),
    };
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// What a webhook tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The job plays (state `playable`).
    Playable,
    /// The job ended.
    Finished,
}

impl Event {
    /// The `event` field of the body.
    pub fn name(self) -> &'static str {
        match self {
            Event::Playable => "job.playable",
            Event::Finished => "job.finished",
        }
    }
}

/// Delivers `event` of `job` in the background, if the job has a webhook.
/// Only addresses `egress` permits are called (names: by the client's resolver; IP
/// literals: here), with no redirects (see `Coordinator::http`).
pub fn deliver(
    http: &reqwest::Client,
    egress: &Egress,
    secret: Option<&[u8]>,
    job: &Job,
    event: Event,
) {
    let (Some(url), Some(secret)) = (job.webhook.clone(), secret) else {
        return;
    };
    if !egress.permits_literal(&url) {
        tracing::warn!(job = %job.id, url, "webhook not sent: its address is not one webhooks may reach");
        return;
    }
    let body = match serde_json::to_vec(
        &serde_json::json!({ "event": event.name(), "job": job.clone().public() }),
    ) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode webhook body");
            return;
        }
    };
    let sig = signature(secret, &body);
    let http = http.clone();
    let job_id = job.id.clone();
    tokio::spawn(async move {
        for attempt in 0..WEBHOOK_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
            }
            let sent = http
                .post(&url)
                .header("content-type", "application/json")
                .header(SIGNATURE_HEADER, &sig)
                .timeout(WEBHOOK_TIMEOUT)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(job = %job_id, url, "webhook delivered");
                    return;
                }
                Ok(r) => {
                    tracing::warn!(job = %job_id, url, status = %r.status(), attempt, "webhook refused")
                }
                Err(e) => tracing::warn!(job = %job_id, url, error = %e, attempt, "webhook failed"),
            }
        }
        tracing::error!(job = %job_id, url, "webhook given up after {WEBHOOK_ATTEMPTS} attempts");
    });
}
