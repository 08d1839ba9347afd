//! The one error type of `kura-cluster`.

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
    Telemetry(String),
    /// The node answered with an error status.
    #[error("node {url} answered {status}: {body}")]
    Status {
        url: String,
        status: http::StatusCode,
        body: String,
    },
    /// The node could not be reached, or the exchange broke off.
    #[error("request to node failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// Bytes from a node did not hash to the id they were asked for.
    #[error("chunk {0} failed verification")]
    Corrupt(String),
    /// A body that does not decode as the expected JSON.
    #[error("bad JSON from node: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
