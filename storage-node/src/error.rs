//! The one error type of the storage node, and its mapping to HTTP statuses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kura_cluster::error::NodeErrorCode;

/// Everything that can go wrong in the storage node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Missing or wrong cluster secret.
    #[error("missing or invalid cluster secret")]
    Unauthorized,
    /// A request that is malformed (bad id, bad name, bad JSON...).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The body does not hash to the chunk id it was sent under.
    #[error("chunk body does not hash to {0}")]
    HashMismatch(String),
    /// A chunk body over the node's limit.
    #[error("chunk is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// No such chunk or record.
    #[error("not found")]
    NotFound,
    /// The `Range` header does not parse; `size` is the chunk's, when known.
    #[error("malformed range: {why}")]
    MalformedRange { why: String, size: Option<u64> },
    /// The range selects no byte of the chunk.
    #[error("range not satisfiable (size {size})")]
    RangeNotSatisfiable { size: u64 },
    /// The stored copy failed verification; it was quarantined and is never served.
    #[error("stored copy of chunk {0} is corrupt and was quarantined")]
    Corrupt(String),
    /// A RocksDB failure.
    #[error("metadata store: {0}")]
    Db(#[from] rocksdb::Error),
    /// A file-system failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Stored metadata that does not decode (should never happen; reported, not served).
    #[error("stored metadata is invalid: {0}")]
    BadMetadata(String),
    /// Metadata (the cluster map, rebalance settings) that does not encode or decode
    /// as JSON.
    #[error("{what}: {source}")]
    MetadataJson {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A stored record that does not decode (reported, never served).
    #[error("stored record is invalid: {0}")]
    StoredRecord(#[source] kura_cluster::Error),
    /// A record offered that does not decode, or whose name is not valid.
    #[error("bad record: {0}")]
    BadRecord(#[source] kura_cluster::Error),
    /// Startup problems: a bad config or an unusable data directory.
    #[error("startup: {0}")]
    Startup(String),
    /// A peer needed for the operation could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A blocking task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A broken invariant of the node itself, with no error behind it.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Result alias for this crate.
pub type Result<T, E = NodeError> = std::result::Result<T, E>;

impl From<kura_cluster::Error> for NodeError {
    fn from(e: kura_cluster::Error) -> Self {
        use kura_cluster::Error as E;
        match e {
            E::MalformedRange(why) => NodeError::MalformedRange { why, size: None },
            E::RangeNotSatisfiable { size } => NodeError::RangeNotSatisfiable { size },
            E::Config { .. } | E::Telemetry(_) => NodeError::Startup(e.to_string()),
            other => NodeError::BadRequest(other.to_string()),
        }
    }
}

impl NodeError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            NodeError::Unauthorized => StatusCode::UNAUTHORIZED,
            NodeError::BadRequest(_) | NodeError::HashMismatch(_) | NodeError::BadRecord(_) => {
                StatusCode::BAD_REQUEST
            }
            NodeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            NodeError::NotFound => StatusCode::NOT_FOUND,
            NodeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            NodeError::MalformedRange { .. } | NodeError::RangeNotSatisfiable { .. } => {
                StatusCode::RANGE_NOT_SATISFIABLE
            }
            NodeError::Corrupt(_)
            | NodeError::Db(_)
            | NodeError::Io(_)
            | NodeError::BadMetadata(_)
            | NodeError::MetadataJson { .. }
            | NodeError::StoredRecord(_)
            | NodeError::Startup(_)
            | NodeError::Task(_)
            | NodeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The typed code of the JSON error body (what callers act on).
    pub fn code(&self) -> NodeErrorCode {
        match self {
            NodeError::Unauthorized => NodeErrorCode::Unauthorized,
            NodeError::BadRequest(_) | NodeError::BadRecord(_) => NodeErrorCode::BadRequest,
            NodeError::HashMismatch(_) => NodeErrorCode::HashMismatch,
            NodeError::TooLarge { .. } => NodeErrorCode::TooLarge,
            NodeError::NotFound => NodeErrorCode::NotFound,
            NodeError::Unavailable(_) => NodeErrorCode::Unavailable,
            NodeError::MalformedRange { .. } => NodeErrorCode::MalformedRange,
            NodeError::RangeNotSatisfiable { .. } => NodeErrorCode::RangeNotSatisfiable,
            NodeError::Corrupt(_) => NodeErrorCode::ChunkCorrupt,
            NodeError::Db(_) => NodeErrorCode::DbError,
            NodeError::Io(_) => NodeErrorCode::IoError,
            NodeError::BadMetadata(_)
            | NodeError::MetadataJson { .. }
            | NodeError::StoredRecord(_) => NodeErrorCode::BadMetadata,
            NodeError::Startup(_) => NodeErrorCode::Startup,
            NodeError::Task(_) | NodeError::Internal(_) => NodeErrorCode::Internal,
        }
    }
}

impl IntoResponse for NodeError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        let mut resp = (status, axum::Json(body)).into_response();
        let size = match self {
            NodeError::RangeNotSatisfiable { size } => Some(size),
            NodeError::MalformedRange { size, .. } => size,
            _ => None,
        };
        if let Some(size) = size {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        resp
    }
}
