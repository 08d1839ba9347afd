//! The worker's side of the coordinator protocol.

use std::time::Duration;

use kura_cluster::failover::{Endpoints, Repeat};
use reqwest::StatusCode;

use crate::error::{Result, TranscodeError};
use crate::model::{
    Assignment, Completion, Failure, FailureReport, Heartbeat, LeaseRequest, TaskResult,
    TASK_PROTOCOL,
};

/// How long one lease request long-polls when there is no work.
pub const LEASE_POLL: Duration = Duration::from_secs(20);

/// The coordinator, as a worker uses it: one or several interchangeable ones (a
/// PostgreSQL-backed cluster's), moved between as they stop answering.
#[derive(Clone)]
pub struct CoordinatorClient {
    endpoints: std::sync::Arc<Endpoints>,
    secret: String,
    http: reqwest::Client,
}

/// What a heartbeat learned.
#[derive(Debug, PartialEq, Eq)]
pub enum Beat {
    /// The lease was extended.
    Kept,
    /// The lease is gone (expired, reassigned, cancelled): stop the task.
    Lost,
}

impl CoordinatorClient {
    /// A client for the coordinator at `base` (several: comma-separated).
    pub fn new(base: &str, secret: &str) -> Result<Self> {
        let endpoints = Endpoints::parse(base)
            .map_err(|e| TranscodeError::BadRequest(format!("--coordinator: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(kura_cluster::client::CONNECT_TIMEOUT)
            .timeout(LEASE_POLL + Duration::from_secs(15))
            .build()
            .map_err(crate::error::http("coordinator client"))?;
        Ok(Self {
            endpoints: std::sync::Arc::new(endpoints),
            secret: secret.to_string(),
            http,
        })
    }

    /// Posts `body` to `path` (the call `what`), on whichever coordinator answers.
    ///
    /// Every worker call may be repeated on another coordinator: a lease whose answer
    /// was lost expires and is retried, a repeated heartbeat changes nothing, and a
    /// repeated result is refused by its fencing token.
    async fn post<T: serde::Serialize>(
        &self,
        what: &'static str,
        path: &str,
        body: &T,
    ) -> Result<reqwest::Response> {
        self.endpoints
            .send(Repeat::Safe, |base| {
                self.http
                    .post(format!("{base}{path}"))
                    .bearer_auth(&self.secret)
                    .json(body)
                    .send()
            })
            .await
            .map_err(crate::error::http(what))
    }

    /// The error a coordinator's answer to the call `what` stands for.
    async fn error(what: &'static str, resp: reqwest::Response) -> TranscodeError {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        match status {
            StatusCode::CONFLICT => TranscodeError::Fenced(text),
            StatusCode::UNAUTHORIZED => TranscodeError::Unauthorized,
            StatusCode::FORBIDDEN => TranscodeError::WorkerQuarantined(text, 0),
            StatusCode::UPGRADE_REQUIRED => {
                let coordinator = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["protocol"].as_u64())
                    .unwrap_or(0) as u32;
                TranscodeError::ProtocolMismatch {
                    worker: TASK_PROTOCOL,
                    coordinator,
                }
            }
            status => TranscodeError::Refused {
                what,
                status,
                body: text,
            },
        }
    }

    /// Asks for a task (of at most `max_cost`, when given), waiting up to
    /// [`LEASE_POLL`]; `None` when there was none. A coordinator of another task
    /// protocol version is [`TranscodeError::ProtocolMismatch`], whichever is newer.
    pub async fn lease(&self, worker: &str, max_cost: Option<f64>) -> Result<Option<Assignment>> {
        let body = LeaseRequest {
            worker: worker.to_string(),
            wait_ms: LEASE_POLL.as_millis() as u64,
            max_cost,
            protocol: TASK_PROTOCOL,
        };
        let resp = self.post("lease", "/v1/tasks/lease", &body).await?;
        match resp.status() {
            StatusCode::NO_CONTENT => Ok(None),
            s if s.is_success() => {
                let v: serde_json::Value = resp
                    .json()
                    .await
                    .map_err(crate::error::http("lease answer"))?;
                // The version first: an older coordinator's assignment may not parse.
                let coordinator = v["protocol"].as_u64().map_or(1, |p| p as u32);
                if coordinator != TASK_PROTOCOL {
                    return Err(TranscodeError::ProtocolMismatch {
                        worker: TASK_PROTOCOL,
                        coordinator,
                    });
                }
                serde_json::from_value(v)
                    .map(Some)
                    .map_err(|source| TranscodeError::Answer {
                        what: "lease",
                        source,
                    })
            }
            _ => Err(Self::error("lease", resp).await),
        }
    }

    /// Extends the lease and reports progress.
    pub async fn heartbeat(&self, task: &str, token: u64, progress: f64) -> Result<Beat> {
        let resp = self
            .post(
                "heartbeat",
                &format!("/v1/tasks/{task}/heartbeat"),
                &Heartbeat { token, progress },
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(Beat::Kept),
            StatusCode::CONFLICT | StatusCode::NOT_FOUND => Ok(Beat::Lost),
            _ => Err(Self::error("heartbeat", resp).await),
        }
    }

    /// Reports success.
    pub async fn complete(&self, task: &str, token: u64, result: TaskResult) -> Result<()> {
        let resp = self
            .post(
                "complete",
                &format!("/v1/tasks/{task}/complete"),
                &Completion { token, result },
            )
            .await?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(Self::error("complete", resp).await)
    }

    /// Reports failure.
    pub async fn fail(&self, task: &str, token: u64, failure: Failure) -> Result<()> {
        let resp = self
            .post(
                "fail",
                &format!("/v1/tasks/{task}/fail"),
                &FailureReport { token, failure },
            )
            .await?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(Self::error("fail", resp).await)
    }
}
