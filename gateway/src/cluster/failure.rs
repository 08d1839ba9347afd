//! How a failed replica read is read: the node's typed error code decides whether the
//! copy is corrupt, missing, or the node itself failed.

/// What a failed chunk read from a replica says about that replica, from the node's
/// typed error code (its status only when a body has none, e.g. from a proxy). Only bytes
/// that failed verification, here or on the node, count as corruption: an I/O or
/// database error (a full or failing disk) is the node's fault, not the copy's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadFailure {
    /// No answer: the node is down or the connection broke.
    Unreachable,
    /// Bytes that did not hash to the chunk id (checked by this gateway).
    Corrupt,
    /// The node found its own copy corrupt and quarantined it.
    CopyCorrupt,
    /// The node holds no copy.
    Missing,
    /// The node failed (I/O, database, internal): nothing known about the copy.
    NodeFault,
    /// Anything else (a bad request, a range the node refused).
    Other,
}

impl ReadFailure {
    pub(super) fn of(e: &kura_cluster::Error) -> Self {
        use kura_cluster::error::NodeErrorCode as C;
        use kura_cluster::Error as E;
        match e {
            E::Transport(_) => Self::Unreachable,
            E::Corrupt(_) => Self::Corrupt,
            E::Status {
                code: Some(code), ..
            } => match code {
                C::NotFound => Self::Missing,
                C::ChunkCorrupt => Self::CopyCorrupt,
                C::IoError | C::DbError | C::BadMetadata | C::Internal | C::Startup => {
                    Self::NodeFault
                }
                C::Unavailable => Self::NodeFault,
                _ => Self::Other,
            },
            E::Status { status, .. } if *status == http::StatusCode::NOT_FOUND => Self::Missing,
            E::Status { status, .. } if status.is_server_error() => Self::NodeFault,
            _ => Self::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_cluster::error::NodeErrorCode;

    fn status(code: u16, body: &str) -> kura_cluster::Error {
        kura_cluster::Error::Status {
            url: "http://n1/v1/chunks/x".into(),
            status: http::StatusCode::from_u16(code).unwrap(),
            code: NodeErrorCode::of_body(body),
            body: body.into(),
        }
    }

    #[test]
    fn only_failed_verification_counts_as_corruption() {
        let io = status(
            500,
            r#"{"error":"io_error","message":"No space left on device"}"#,
        );
        assert_eq!(ReadFailure::of(&io), ReadFailure::NodeFault);
        let db = status(500, r#"{"error":"db_error","message":"rocksdb"}"#);
        assert_eq!(ReadFailure::of(&db), ReadFailure::NodeFault);
        let bad = status(500, r#"{"error":"chunk_corrupt","message":"quarantined"}"#);
        assert_eq!(ReadFailure::of(&bad), ReadFailure::CopyCorrupt);
        let ours = kura_cluster::Error::Corrupt("x".into());
        assert_eq!(ReadFailure::of(&ours), ReadFailure::Corrupt);
        let missing = status(404, r#"{"error":"not_found","message":"not found"}"#);
        assert_eq!(ReadFailure::of(&missing), ReadFailure::Missing);
        let range = status(416, r#"{"error":"range_not_satisfiable","message":"x"}"#);
        assert_eq!(ReadFailure::of(&range), ReadFailure::Other);
    }

    #[test]
    fn answers_without_a_code_fall_back_to_the_status() {
        assert_eq!(
            ReadFailure::of(&status(502, "<html>bad gateway</html>")),
            ReadFailure::NodeFault
        );
        assert_eq!(ReadFailure::of(&status(404, "")), ReadFailure::Missing);
        assert_eq!(ReadFailure::of(&status(400, "")), ReadFailure::Other);
    }
}
