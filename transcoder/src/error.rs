//! The one error type of the transcoder crate, and its mapping to HTTP statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Everything that can go wrong in the coordinator or the worker.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// Missing or invalid credentials.
    #[error("missing or invalid credentials")]
    Unauthorized,
    /// A malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// No such job or task.
    #[error("not found")]
    NotFound,
    /// A heartbeat or result from a lease that is no longer current: it expired, was
    /// reassigned, or its job was cancelled. The worker must drop the task.
    #[error("lease is no longer valid: {0}")]
    Fenced(String),
    /// The job is already final and cannot change.
    #[error("job is already {0}")]
    Conflict(String),
    /// Coordinator and worker speak different versions of the task protocol
    /// ([`crate::work::TASK_PROTOCOL`]): one of them must be upgraded.
    #[error("task protocol mismatch: the worker speaks version {worker}, the coordinator {coordinator}; run the same kura version on both")]
    ProtocolMismatch { worker: u32, coordinator: u32 },
    /// The worker failed too often and is not given work for a while.
    #[error("worker {0} is quarantined until {1} (ms since epoch)")]
    WorkerQuarantined(String, u64),
    /// A RocksDB failure.
    #[error("job store: {0}")]
    Db(#[from] rocksdb::Error),
    /// A PostgreSQL failure (the job store).
    #[error("job store (postgres): {0}")]
    Postgres(#[from] postgres::Error),
    /// No connection to the PostgreSQL job store could be had in time.
    #[error("job store (postgres): no connection: {0}")]
    Pool(#[from] r2d2::Error),
    /// Stored data that does not decode.
    #[error("stored data is invalid: {0}")]
    BadData(String),
    /// File-system or process failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The gateway or a coordinator answered a call with an error status: what the
    /// call was for, the status and the body it sent (its own account of the error).
    #[error("remote call failed: {what}: {status}: {body}")]
    Refused {
        what: &'static str,
        status: StatusCode,
        body: String,
    },
    /// The gateway or a coordinator answered with a body that does not decode.
    #[error("remote call failed: {what}: the answer does not decode: {source}")]
    Answer {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// Reading a task's source or writing its output through the gateway failed.
    #[error("object transfer failed: {0}")]
    Object(#[from] crate::worker::objects::ObjectError),
    /// An HTTP exchange with the gateway or a coordinator (or building its client)
    /// failed: `what` it was for, and the cause.
    #[error("remote call failed: {what}: {source}")]
    Http {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// Stored JSON (the embedded job store's values) that does not encode or decode.
    #[error("stored data is invalid: {0}")]
    StoredJson(#[source] serde_json::Error),
    /// A blocking task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A broken invariant of the service itself (e.g. a job store used after closing),
    /// with no error behind it.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// Too many requests of one kind from one key; retry after this many seconds.
    #[error("too many jobs with a webhook from this key; retry in {0} s")]
    RateLimited(u64),
    /// The media child's seccomp filter could not be built.
    #[error("sandbox: {0}")]
    Sandbox(#[from] seccompiler::Error),
    /// The media child's seccomp filter could not be compiled or loaded.
    #[error("sandbox: {0}")]
    SandboxBackend(#[from] seccompiler::BackendError),
}

impl TranscodeError {
    /// Whether a transaction that failed so should be run again from the start: it
    /// lost a race with another coordinator that waiting cannot resolve.
    pub fn is_retryable(&self) -> bool {
        use postgres::error::SqlState;
        match self {
            TranscodeError::Postgres(e) => e.code().is_some_and(|c| {
                // A deadlock between coordinators, a serialisation failure, or a fresh
                // id another coordinator inserted first.
                *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::UNIQUE_VIOLATION
            }),
            _ => false,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = TranscodeError> = std::result::Result<T, E>;

impl TranscodeError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            TranscodeError::Unauthorized => StatusCode::UNAUTHORIZED,
            TranscodeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            TranscodeError::NotFound => StatusCode::NOT_FOUND,
            TranscodeError::Fenced(_) | TranscodeError::Conflict(_) => StatusCode::CONFLICT,
            TranscodeError::WorkerQuarantined(..) => StatusCode::FORBIDDEN,
            TranscodeError::ProtocolMismatch { .. } => StatusCode::UPGRADE_REQUIRED,
            TranscodeError::Refused { .. }
            | TranscodeError::Answer { .. }
            | TranscodeError::Object(_)
            | TranscodeError::Http { .. } => StatusCode::BAD_GATEWAY,
            TranscodeError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            // The database cannot be reached (down, failing over): worth retrying.
            TranscodeError::Pool(_) => StatusCode::SERVICE_UNAVAILABLE,
            TranscodeError::Postgres(e) if e.code().is_none() => StatusCode::SERVICE_UNAVAILABLE,
            TranscodeError::Postgres(_)
            | TranscodeError::Db(_)
            | TranscodeError::BadData(_)
            | TranscodeError::StoredJson(_)
            | TranscodeError::Io(_)
            | TranscodeError::Task(_)
            | TranscodeError::Internal(_)
            | TranscodeError::Sandbox(_)
            | TranscodeError::SandboxBackend(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            TranscodeError::Unauthorized => "unauthorized",
            TranscodeError::BadRequest(_) => "bad_request",
            TranscodeError::NotFound => "not_found",
            TranscodeError::Fenced(_) => "lease_fenced",
            TranscodeError::Conflict(_) => "conflict",
            TranscodeError::WorkerQuarantined(..) => "worker_quarantined",
            TranscodeError::ProtocolMismatch { .. } => "protocol_mismatch",
            TranscodeError::Refused { .. }
            | TranscodeError::Answer { .. }
            | TranscodeError::Object(_)
            | TranscodeError::Http { .. } => "remote",
            TranscodeError::Pool(_) => "db_unavailable",
            TranscodeError::Postgres(e) if e.code().is_none() => "db_unavailable",
            TranscodeError::Db(_) | TranscodeError::Postgres(_) => "db_error",
            TranscodeError::BadData(_) | TranscodeError::StoredJson(_) => "bad_data",
            TranscodeError::Io(_) => "io_error",
            TranscodeError::Task(_)
            | TranscodeError::Internal(_)
            | TranscodeError::Sandbox(_)
            | TranscodeError::SandboxBackend(_) => "internal",
            TranscodeError::RateLimited(_) => "rate_limited",
        }
    }
}

/// [`TranscodeError::Http`] for `what`, to hand to `map_err`.
pub fn http(what: &'static str) -> impl Fn(reqwest::Error) -> TranscodeError {
    move |source| TranscodeError::Http { what, source }
}

impl IntoResponse for TranscodeError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        if let TranscodeError::ProtocolMismatch { coordinator, .. } = self {
            body["protocol"] = coordinator.into();
        }
        let mut resp = (status, axum::Json(body)).into_response();
        if let TranscodeError::RateLimited(secs) = self {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::model::FailureClass;
    use crate::worker::objects::ObjectError;

    #[test]
    fn remote_failures_are_bad_gateway_and_keep_what_happened() {
        let refused = TranscodeError::Refused {
            what: "listing",
            status: StatusCode::NOT_FOUND,
            body: r#"{"error":"no_such_bucket"}"#.into(),
        };
        assert_eq!(
            (refused.status(), refused.code()),
            (StatusCode::BAD_GATEWAY, "remote")
        );
        let text = refused.to_string();
        assert!(
            text.contains("listing") && text.contains("404") && text.contains("no_such_bucket")
        );

        let source = serde_json::from_str::<u32>("{").unwrap_err();
        let answer = TranscodeError::Answer {
            what: "lease",
            source,
        };
        assert!(answer.source().is_some());

        let object: TranscodeError = ObjectError {
            class: FailureClass::Transient,
            message: "uploading a/b: 503".into(),
        }
        .into();
        assert_eq!(object.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            object.source().map(|s| s.to_string()).as_deref(),
            Some("uploading a/b: 503")
        );
    }
}
