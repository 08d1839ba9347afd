//! The one error type of `kura-cluster`, and the typed error codes storage nodes answer
//! with.

use serde::{Deserialize, Serialize};

/// Errors from parsing shared types, loading config and talking to storage nodes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A chunk id that is not 64 lowercase hex digits.
    #[error("invalid chunk id {0:?}: expected 64 lowercase hex digits")]
    BadChunkId(String),
    /// A bucket name outside the allowed charset or length.
    #[error("invalid bucket name {name:?}: {why}")]
    BadBucket { name: String, why: &'static str },
    /// An object key outside the allowed charset or length.
    #[error("invalid object key: {0}")]
    BadKey(&'static str),
    /// A `Range` header that does not parse.
    #[error("malformed range {0:?}")]
    MalformedRange(String),
    /// A range that parses but selects no byte of the representation.
    #[error("range not satisfiable for size {size}")]
    RangeNotSatisfiable { size: u64 },
    /// A config file that cannot be read or parsed.
    #[error("config file {path}: {why}")]
    Config { path: String, why: String },
    /// Log setup failed (a subscriber was already installed, or a bad filter).
    #[error("logging setup: {0}")]
    Telemetry(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The node answered with an error status; `code` is what its JSON body names
    /// (`None`: no such body, e.g. from a proxy in between).
    #[error("node {url} answered {status}: {body}")]
    Status {
        url: String,
        status: http::StatusCode,
        code: Option<NodeErrorCode>,
        body: String,
    },
    /// The node could not be reached, or the exchange broke off.
    #[error("request to node failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// A call to a node took longer than its caller allows (see `peers`).
    #[error("node {node} did not answer within {after:?}")]
    Timeout {
        node: String,
        after: std::time::Duration,
    },
    /// A node's answer ended before the bytes it announced.
    #[error("answer for chunk {chunk} ended early, at offset {at}")]
    Truncated { chunk: String, at: u64 },
    /// Bytes from a node did not hash to the id they were asked for.
    #[error("chunk {0} failed verification")]
    Corrupt(String),
    /// A body that does not decode as the expected JSON.
    #[error("bad JSON from node: {0}")]
    Json(#[from] serde_json::Error),
    /// A packed record (see `record::RecordFormat::Packed`) that does not decode.
    #[error("packed record: {0}")]
    Unpack(#[from] rmp_serde::decode::Error),
    /// A record that could not be packed (a map key that is not a string, say).
    #[error("packing a record: {0}")]
    Pack(#[from] rmp_serde::encode::Error),
    /// A stored record whose header names a format this version does not know.
    #[error("record format {0} is unknown to this version")]
    RecordFormat(u8),
    /// A stamped record shorter than its header.
    #[error("a stamped record of {0} bytes is shorter than its header")]
    ShortStamp(usize),
    /// A stamped record whose header's timestamp is not its body's.
    #[error("record stamped {header:?} holds a record of {body:?}")]
    RecordStamp {
        header: crate::hlc::Timestamp,
        body: crate::hlc::Timestamp,
    },
    /// Too many record writes already wait for this node (see `peers::batch`).
    #[error("node {node} has {waiting} record writes waiting")]
    Backlogged { node: String, waiting: usize },
    /// A record batch's answer did not fit what was offered, or never came (see
    /// `peers::batch`).
    #[error("record batch: {0}")]
    BatchAnswer(String),
    /// The failure of a call made for several callers (a record batch), as each of them
    /// sees it.
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),
}

/// What went wrong on a storage node, as its error answer names it
/// (`{"error": "<code>", "message": "..."}`), so callers tell a corrupt copy from a full
/// disk without reading status codes or messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeErrorCode {
    Unauthorized,
    BadRequest,
    /// An uploaded chunk did not hash to its id.
    HashMismatch,
    TooLarge,
    NotFound,
    Unavailable,
    MalformedRange,
    RangeNotSatisfiable,
    /// The node's stored copy failed verification (it quarantined it).
    ChunkCorrupt,
    /// RocksDB failed.
    DbError,
    /// The file system failed (e.g. a full or failing disk).
    IoError,
    BadMetadata,
    Startup,
    Internal,
    /// A code this version does not know (a newer node).
    #[serde(other)]
    Unknown,
}

impl Error {
    /// Whether the node could not be reached or did not answer in time: the node, not
    /// the request, is the problem (its health goes down).
    pub fn is_unreachable(&self) -> bool {
        match self {
            Error::Transport(_) | Error::Timeout { .. } => true,
            Error::Shared(e) => e.is_unreachable(),
            _ => false,
        }
    }
}

impl NodeErrorCode {
    /// The code's name on the wire (`"io_error"`), for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::BadRequest => "bad_request",
            Self::HashMismatch => "hash_mismatch",
            Self::TooLarge => "too_large",
            Self::NotFound => "not_found",
            Self::Unavailable => "unavailable",
            Self::MalformedRange => "malformed_range",
            Self::RangeNotSatisfiable => "range_not_satisfiable",
            Self::ChunkCorrupt => "chunk_corrupt",
            Self::DbError => "db_error",
            Self::IoError => "io_error",
            Self::BadMetadata => "bad_metadata",
            Self::Startup => "startup",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }

    /// The code named by a node's JSON error body, if it is one.
    pub fn of_body(body: &str) -> Option<Self> {
        #[derive(Deserialize)]
        struct Answer {
            error: NodeErrorCode,
        }
        serde_json::from_str::<Answer>(body).ok().map(|a| a.error)
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_error_bodies_parse_to_their_codes() {
        let code = |b: &str| NodeErrorCode::of_body(b);
        assert_eq!(
            code(r#"{"error":"io_error","message":"i/o: No space left on device"}"#),
            Some(NodeErrorCode::IoError)
        );
        assert_eq!(
            code(r#"{"error":"chunk_corrupt","message":"x"}"#),
            Some(NodeErrorCode::ChunkCorrupt)
        );
        assert_eq!(
            code(r#"{"error":"something_new","message":"x"}"#),
            Some(NodeErrorCode::Unknown)
        );
        assert_eq!(code("<html>502 Bad Gateway</html>"), None);
        assert_eq!(code(""), None);
        let json = serde_json::to_string(&NodeErrorCode::RangeNotSatisfiable).unwrap();
        assert_eq!(json, r#""range_not_satisfiable""#);
        for c in [
            NodeErrorCode::Unauthorized,
            NodeErrorCode::BadRequest,
            NodeErrorCode::HashMismatch,
            NodeErrorCode::TooLarge,
            NodeErrorCode::NotFound,
            NodeErrorCode::Unavailable,
            NodeErrorCode::MalformedRange,
            NodeErrorCode::RangeNotSatisfiable,
            NodeErrorCode::ChunkCorrupt,
            NodeErrorCode::DbError,
            NodeErrorCode::IoError,
            NodeErrorCode::BadMetadata,
            NodeErrorCode::Startup,
            NodeErrorCode::Internal,
        ] {
            let wire = serde_json::to_string(&c).unwrap();
            assert_eq!(wire, format!("\"{}\"", c.name()), "name() matches the wire");
        }
    }
}
