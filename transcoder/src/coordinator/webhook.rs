//! Job webhooks: when a job with a `webhook` URL becomes playable (its first master
//! playlist is published while higher renditions are still encoding), the coordinator
//! POSTs `{"event": "job.playable", "job": ...}` to it, and when it ends (succeeded,
//! failed or cancelled) `{"event": "job.finished", "job": ...}` (a job done in one step
//! sends only that one: `succeeded` implies playable). Each is signed with HMAC-SHA256 over the exact body (header [`SIGNATURE_HEADER`]:
//! `sha256=<hex>`), and retries with exponential backoff until the receiver answers 2xx.
//!
//! Deliveries are durable: the transition that makes a job playable or ends it writes an
//! [`Outgoing`] into the store's outbox in the same transaction, and every coordinator
//! runs a sender ([`send_due`]) that claims due deliveries (a claim is a lease on them
//! for [`CLAIM_MS`], so two coordinators never send one at once), sends them and deletes
//! them on a 2xx. A coordinator that dies between sending and deleting leaves the
//! delivery to be sent again by another after the claim lapses: delivery is at least
//! once (receivers tell repeats by job id and event).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use serde::{Deserialize, Serialize};

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

/// How long a claimed delivery is left to the coordinator that claimed it before another
/// may send it: longer than one attempt ([`WEBHOOK_TIMEOUT`]) with room to spare.
pub const CLAIM_MS: u64 = 30_000;

/// Deliveries claimed per pass of the sender.
pub const CLAIM_BATCH: usize = 64;

/// What a webhook tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The job plays (state `playable`).
    #[serde(rename = "job.playable")]
    Playable,
    /// The job ended.
    #[serde(rename = "job.finished")]
    Finished,
}

/// A delivery in the outbox: the event and the job as it was when it happened.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outgoing {
    /// Unique, time-ordered.
    pub id: String,
    /// Where it goes.
    pub url: String,
    /// What happened.
    pub event: Event,
    /// The job's public view at that moment.
    pub job: Job,
    /// Attempts made.
    pub attempts: u32,
    /// Not to be sent before (ms since the epoch); claims push it on.
    pub next_ms: u64,
}

impl Outgoing {
    /// The delivery of `event` for `job`, if it asked for webhooks.
    pub fn of(job: &Job, event: Event, now: u64) -> Option<Self> {
        Some(Self {
            id: crate::coordinator::store::new_id(now),
            url: job.webhook.clone()?,
            event,
            job: job.clone().public(),
            attempts: 0,
            next_ms: now,
        })
    }

    /// The body: `{"event": ..., "job": ...}`.
    pub fn body(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&serde_json::json!({ "event": self.event.name(), "job": self.job }))
    }
}

/// When a delivery that failed `attempts` times is tried next: 1 s, 2 s, 4 s, ...
pub fn retry_at(attempts: u32, now: u64) -> u64 {
    now + 1000 * (1u64 << attempts.saturating_sub(1).min(16))
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

/// How one delivery attempt went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered 2xx.
    Delivered,
    /// No answer or not 2xx: try again later.
    Failed,
    /// Never to be sent: its address is not one webhooks may reach, or no secret signs it.
    Dropped,
}

/// Makes one attempt at delivering `o`, signed with `secret`. Only addresses `egress`
/// permits are called (names: by the client's resolver; IP literals: here), with no
/// redirects (see `Coordinator::http`).
pub async fn attempt(
    http: &reqwest::Client,
    egress: &Egress,
    secret: Option<&[u8]>,
    o: &Outgoing,
) -> Attempt {
    let job_id = &o.job.id;
    let url = &o.url;
    let Some(secret) = secret else {
        tracing::warn!(job = %job_id, url, "webhook not sent: no webhook secret configured");
        return Attempt::Dropped;
    };
    if !egress.permits_literal(url) {
        tracing::warn!(job = %job_id, url, "webhook not sent: its address is not one webhooks may reach");
        return Attempt::Dropped;
    }
    let body = match o.body() {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode webhook body");
            return Attempt::Dropped;
        }
    };
    let sent = http
        .post(url)
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, signature(secret, &body))
        .timeout(WEBHOOK_TIMEOUT)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => {
            tracing::info!(job = %job_id, url, event = o.event.name(), "webhook delivered");
            Attempt::Delivered
        }
        Ok(r) => {
            tracing::warn!(job = %job_id, url, status = %r.status(), attempt = o.attempts, "webhook refused");
            Attempt::Failed
        }
        Err(e) => {
            tracing::warn!(job = %job_id, url, error = %e, attempt = o.attempts, "webhook failed");
            Attempt::Failed
        }
    }
}
