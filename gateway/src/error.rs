//! The one error type of the gateway, and its mapping to HTTP statuses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Everything that can go wrong serving a public request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Missing or unknown API key.
    #[error("missing or invalid API key")]
    Unauthorized,
    /// A signed URL that is expired, forged, or used outside its prefix.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The change conflicts with the current state (duplicate node, concurrent change).
    #[error("{0}")]
    Conflict(String),
    /// A feature this gateway was not configured for (e.g. no coordinator).
    #[error("{0}")]
    NotConfigured(String),
    /// Malformed request: bad bucket or key name, bad metadata, bad query.
    #[error("{0}")]
    BadRequest(String),
    /// No such object (or it was deleted).
    #[error("no such object")]
    NotFound,
    /// A body of a media type the call does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A piece whose bytes do not match the checksum its client sent (tus: 460).
    #[error("the checksum of the body does not match the one given")]
    ChecksumMismatch,
    /// Body larger than the object size limit.
    #[error("object larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// Request headers larger than the limit.
    #[error("request headers larger than {limit} bytes")]
    HeadersTooLarge { limit: usize },
    /// A `Range` that is malformed or selects nothing.
    #[error("range not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    /// `If-Match` / `If-Unmodified-Since` failed.
    #[error("precondition failed")]
    PreconditionFailed,
    /// The client went away mid-upload; nothing was stored.
    #[error("upload aborted by client: {0}")]
    ClientAborted(String),
    /// Fewer than the quorum of replicas could be written or read.
    #[error("not enough replicas available: {0}")]
    Unavailable(String),
    /// The newest replica's record of `name` does not decode (damaged, or from a newer
    /// version) or its inline content does not hash to its etag: reads of it wait for a
    /// repair or an upgrade.
    #[error("record {name}: newest answer: {source}")]
    DamagedRecord {
        name: String,
        #[source]
        source: kura_cluster::Error,
    },
    /// Every replica of a chunk failed (missing, corrupt or unreachable).
    #[error("no healthy replica of chunk {0}")]
    ChunkUnavailable(String),
    /// A coordinator could not be asked or its answer not read (unreachable, timed
    /// out, cut short).
    #[error("coordinator: {0}")]
    Coordinator(#[source] reqwest::Error),
    /// A failure of the cluster layer with nothing in it for the client (a malformed
    /// record, a node's store): its cause kept, told as an internal error.
    #[error(transparent)]
    Cluster(kura_cluster::Error),
    /// A socket of the gateway's own (listening, serving).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A task the request waited on panicked or was cancelled.
    #[error("a task of the request failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A reply or grant that could not be encoded as JSON.
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The gateway's HTTP client could not be built (its TLS backend).
    #[error("cannot build an HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// A broken invariant of the gateway itself.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The status tus gives a checksum mismatch ("460 Checksum Mismatch", tus 1.0.0's
/// checksum extension).
pub const CHECKSUM_MISMATCH: u16 = 460;

/// Result alias for this crate.
pub type Result<T, E = GatewayError> = std::result::Result<T, E>;

impl From<kura_cluster::Error> for GatewayError {
    fn from(e: kura_cluster::Error) -> Self {
        use kura_cluster::Error as E;
        match e {
            E::BadBucket { .. } | E::BadKey(_) | E::BadChunkId(_) => {
                GatewayError::BadRequest(e.to_string())
            }
            E::MalformedRange(_) => GatewayError::BadRequest(e.to_string()),
            E::RangeNotSatisfiable { size } => GatewayError::RangeNotSatisfiable { size },
            other => GatewayError::Cluster(other),
        }
    }
}

impl GatewayError {
    /// `what` failed on a socket with `source`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| GatewayError::Io { what, source }
    }

    /// Whether this is a failure of the gateway itself, whose detail stays in its log
    /// (the client is told a fixed sentence).
    fn is_internal(&self) -> bool {
        self.code() == "internal"
    }
}

impl GatewayError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Unauthorized => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden(_) => StatusCode::FORBIDDEN,
            GatewayError::Conflict(_) => StatusCode::CONFLICT,
            GatewayError::NotConfigured(_) => StatusCode::NOT_IMPLEMENTED,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::NotFound => StatusCode::NOT_FOUND,
            GatewayError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::ChecksumMismatch => {
                StatusCode::from_u16(CHECKSUM_MISMATCH).unwrap_or(StatusCode::BAD_REQUEST)
            }
            GatewayError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            GatewayError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            // The client is gone; the status is for logs and metrics only.
            GatewayError::ClientAborted(_) => StatusCode::BAD_REQUEST,
            GatewayError::Unavailable(_)
            | GatewayError::DamagedRecord { .. }
            | GatewayError::ChunkUnavailable(_)
            | GatewayError::Coordinator(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Cluster(_)
            | GatewayError::Io { .. }
            | GatewayError::Task(_)
            | GatewayError::Json(_)
            | GatewayError::Client(_)
            | GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message a client is told. Server-side failures carry internal detail (node
    /// addresses, a node's or the coordinator's answer) that belongs in the gateway's
    /// log, not in a response to whoever asked: they get a fixed sentence instead.
    pub fn public_message(&self) -> String {
        match self {
            GatewayError::Unavailable(_)
            | GatewayError::DamagedRecord { .. }
            | GatewayError::Coordinator(_) => {
                "not enough replicas or services available; retry later".into()
            }
            e if e.is_internal() => "internal error (the gateway's log has the cause)".into(),
            other => other.to_string(),
        }
    }

    /// A stable machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::Unauthorized => "unauthorized",
            GatewayError::Forbidden(_) => "forbidden",
            GatewayError::Conflict(_) => "conflict",
            GatewayError::NotConfigured(_) => "not_configured",
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::NotFound => "not_found",
            GatewayError::TooLarge { .. } => "too_large",
            GatewayError::ChecksumMismatch => "checksum_mismatch",
            GatewayError::UnsupportedMediaType(_) => "unsupported_media_type",
            GatewayError::HeadersTooLarge { .. } => "headers_too_large",
            GatewayError::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            GatewayError::PreconditionFailed => "precondition_failed",
            GatewayError::ClientAborted(_) => "client_aborted",
            GatewayError::Unavailable(_)
            | GatewayError::DamagedRecord { .. }
            | GatewayError::Coordinator(_) => "unavailable",
            GatewayError::ChunkUnavailable(_) => "chunk_unavailable",
            GatewayError::Cluster(_)
            | GatewayError::Io { .. }
            | GatewayError::Task(_)
            | GatewayError::Json(_)
            | GatewayError::Client(_)
            | GatewayError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = serde_json::json!({ "error": self.code(), "message": self.public_message() });
        let mut resp = (status, axum::Json(body)).into_response();
        match self {
            GatewayError::RangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            GatewayError::Unauthorized => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[tokio::test]
    async fn failures_keep_their_cause_and_clients_get_a_fixed_sentence() {
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        let cancelled = task.await.expect_err("aborted");
        let in_use = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let bad_json = serde_json::from_str::<u8>("{").expect_err("not a number");
        let cluster = kura_cluster::Error::Corrupt("record of b/k at /srv/n1".into());
        for e in [
            GatewayError::Task(cancelled),
            GatewayError::io("cannot listen on 10.0.0.5:80")(in_use),
            GatewayError::from(bad_json),
            GatewayError::from(cluster),
        ] {
            assert!(
                e.source().is_some() || matches!(e, GatewayError::Cluster(_)),
                "{e:?}"
            );
            assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR, "{e}");
            assert_eq!(e.code(), "internal");
            let told = e.public_message();
            assert!(
                !told.contains("10.0.0.5") && !told.contains("/srv"),
                "{told}"
            );
        }
        let e = GatewayError::io("cannot serve")(std::io::Error::other("gone"));
        assert_eq!(e.to_string(), "cannot serve: gone", "the log has the cause");
    }

    #[tokio::test]
    async fn server_errors_do_not_tell_clients_internal_addresses() {
        for e in [
            GatewayError::Unavailable("node n1 at http://10.0.0.5:9000: connection refused".into()),
            GatewayError::Internal("rocksdb at /srv/kura/n1: IO error".into()),
        ] {
            assert!(e.to_string().contains("/"), "the log keeps the detail");
            let resp = e.into_response();
            let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
            let text = String::from_utf8_lossy(&body);
            assert!(
                !text.contains("10.0.0.5") && !text.contains("/srv"),
                "{text}"
            );
        }
        // Client errors keep their precise reason.
        let e = GatewayError::BadRequest("key contains control characters".into());
        assert_eq!(e.public_message(), "key contains control characters");
    }
}
