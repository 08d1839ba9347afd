//! kura's errors as S3 error codes. The mapping is by kind, never by message, except
//! for the body-stream errors of `s3s` (its error types are private; their display text
//! is the only thing that tells a SHA-256 mismatch from a client that went away).

use s3s::{S3Error, S3ErrorCode};

use crate::error::GatewayError;

/// A kura error as the S3 error a client expects. `missing` is the code for "not
/// found" in this context (`NoSuchKey`, `NoSuchBucket`, `NoSuchUpload`).
pub fn to_s3(e: GatewayError, missing: S3ErrorCode) -> S3Error {
    let code = match &e {
        GatewayError::NotFound => missing,
        GatewayError::BadRequest(_) | GatewayError::UnsupportedMediaType(_) => {
            S3ErrorCode::InvalidArgument
        }
        GatewayError::TooLarge { .. } => S3ErrorCode::EntityTooLarge,
        GatewayError::ChecksumMismatch => S3ErrorCode::BadDigest,
        GatewayError::PreconditionFailed => S3ErrorCode::PreconditionFailed,
        GatewayError::RangeNotSatisfiable { .. } => S3ErrorCode::InvalidRange,
        GatewayError::Conflict(_) => S3ErrorCode::BucketNotEmpty,
        GatewayError::Unauthorized | GatewayError::Forbidden(_) => S3ErrorCode::AccessDenied,
        GatewayError::HeadersTooLarge { .. } => S3ErrorCode::RequestHeaderSectionTooLarge,
        GatewayError::ClientAborted(msg) => return body_error(msg),
        GatewayError::NotConfigured(_) => S3ErrorCode::NotImplemented,
        // The service's own failures: which S3 code follows from the status the native
        // API answers them with (`GatewayError::status`), so the two cannot disagree.
        _ if e.status() == http::StatusCode::SERVICE_UNAVAILABLE => S3ErrorCode::ServiceUnavailable,
        _ => S3ErrorCode::InternalError,
    };
    let mut err = S3Error::with_message(code, e.public_message());
    if e.status().is_server_error() {
        tracing::error!(error = %e, "S3 request failed");
    }
    err.set_source(Box::new(e));
    err
}

/// The S3 error for a request body that failed while streaming in.
fn body_error(msg: &str) -> S3Error {
    if msg.contains("Sha256Mismatch") {
        let mut e = S3Error::with_message(
            S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        );
        e.set_status_code(http::StatusCode::BAD_REQUEST);
        return e;
    }
    if msg.contains("SignatureMismatch") {
        return S3Error::with_message(
            S3ErrorCode::SignatureDoesNotMatch,
            "A chunk signature of the payload does not match.",
        );
    }
    S3Error::with_message(
        S3ErrorCode::IncompleteBody,
        "The request body ended before its declared length; nothing was stored.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_failures_follow_the_native_status() {
        let code = |e| to_s3(e, S3ErrorCode::NoSuchKey).code().clone();
        assert_eq!(code(GatewayError::NotFound), S3ErrorCode::NoSuchKey);
        assert_eq!(
            code(GatewayError::Unavailable("2 of 3 down".into())),
            S3ErrorCode::ServiceUnavailable
        );
        assert_eq!(
            code(GatewayError::ChunkUnavailable("c".into())),
            S3ErrorCode::ServiceUnavailable
        );
        assert_eq!(
            code(GatewayError::Internal("broken".into())),
            S3ErrorCode::InternalError
        );
        assert_eq!(
            code(GatewayError::Io {
                what: "reading".into(),
                source: std::io::Error::other("disk"),
            }),
            S3ErrorCode::InternalError
        );
        assert_eq!(
            code(GatewayError::NotConfigured("no coordinator".into())),
            S3ErrorCode::NotImplemented
        );
    }
}
