//! The tus checksum extension: a PATCH (or a creation-with-upload POST) may carry
//! `Upload-Checksum: <algorithm> <base64 digest>` of its body. The piece is stored only
//! when the digest matches; otherwise it answers 460 and the offset does not move
//! (the piece's chunks, referenced by nothing, are reclaimed by GC). A piece with a
//! checksum that breaks off is not kept in part either: a prefix cannot be checked.

use axum::http::{HeaderMap, HeaderName};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use s3s::crypto::{Checksum as _, Md5, Sha1, Sha256};

use crate::error::{GatewayError, Result};
use crate::upload::BodyDigest;

/// The algorithms accepted, as `Tus-Checksum-Algorithm` lists them (the spec requires
/// sha1; md5 and sha256 are what other clients send).
pub const ALGORITHMS: &str = "sha1,md5,sha256";

static UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");

/// The running digest of one piece.
pub enum PieceDigest {
    /// SHA-1.
    Sha1(Sha1),
    /// MD5.
    Md5(Md5),
    /// SHA-256.
    Sha256(Sha256),
}

impl BodyDigest for PieceDigest {
    fn update(&mut self, data: &[u8]) {
        match self {
            PieceDigest::Sha1(h) => h.update(data),
            PieceDigest::Md5(h) => h.update(data),
            PieceDigest::Sha256(h) => h.update(data),
        }
    }
}

impl PieceDigest {
    fn finalize(self) -> Vec<u8> {
        match self {
            PieceDigest::Sha1(h) => h.finalize().as_ref().to_vec(),
            PieceDigest::Md5(h) => h.finalize().as_ref().to_vec(),
            PieceDigest::Sha256(h) => h.finalize().as_ref().to_vec(),
        }
    }
}

/// What the client says its piece hashes to.
pub struct Claimed {
    digest: PieceDigest,
    expected: Vec<u8>,
}

impl Claimed {
    /// The `Upload-Checksum` of a request, if it has one: an unknown algorithm or a
    /// digest that is not base64 of the algorithm's length is a bad request.
    pub fn of(headers: &HeaderMap) -> Result<Option<Self>> {
        let Some(v) = headers.get(&UPLOAD_CHECKSUM) else {
            return Ok(None);
        };
        let bad = |why: &str| GatewayError::BadRequest(format!("Upload-Checksum: {why}"));
        let v = v.to_str().map_err(|_| bad("not ASCII"))?;
        let (alg, b64) = v
            .trim()
            .split_once(' ')
            .ok_or_else(|| bad("expected '<algorithm> <base64 digest>'"))?;
        let (digest, len) = match alg.to_ascii_lowercase().as_str() {
            "sha1" => (PieceDigest::Sha1(Sha1::new()), 20),
            "md5" => (PieceDigest::Md5(Md5::new()), 16),
            "sha256" => (PieceDigest::Sha256(Sha256::new()), 32),
            _ => {
                return Err(bad(&format!(
                    "unsupported algorithm {alg:?} (supported: {ALGORITHMS})"
                )))
            }
        };
        let expected = STANDARD
            .decode(b64.trim())
            .map_err(|_| bad("the digest is not base64"))?;
        if expected.len() != len {
            return Err(bad(&format!("a {alg} digest is {len} bytes")));
        }
        Ok(Some(Self { digest, expected }))
    }

    /// Splits off the digest to feed while the piece streams in.
    pub fn into_parts(self) -> (PieceDigest, Vec<u8>) {
        (self.digest, self.expected)
    }
}

/// Whether the piece that fed `digest` is the one the client hashed.
pub fn check(digest: PieceDigest, expected: &[u8]) -> Result<()> {
    if digest.finalize() == expected {
        Ok(())
    } else {
        Err(GatewayError::ChecksumMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn claimed(v: &str) -> Result<Option<Claimed>> {
        let mut h = HeaderMap::new();
        h.insert(&UPLOAD_CHECKSUM, HeaderValue::from_str(v).unwrap());
        Claimed::of(&h)
    }

    #[test]
    fn a_matching_digest_passes_and_any_other_is_a_mismatch() {
        // sha1("abc") and sha256("abc"), base64.
        for v in [
            "sha1 qZk+NkcGgWq6PiVxeFDCbJzQ2J0=",
            "sha256 ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
        ] {
            let (mut d, want) = claimed(v).unwrap().unwrap().into_parts();
            d.update(b"ab");
            d.update(b"c");
            check(d, &want).unwrap();
            let (mut d, want) = claimed(v).unwrap().unwrap().into_parts();
            d.update(b"abd");
            assert!(matches!(
                check(d, &want),
                Err(GatewayError::ChecksumMismatch)
            ));
        }
        assert!(Claimed::of(&HeaderMap::new()).unwrap().is_none());
    }

    #[test]
    fn malformed_checksums_are_bad_requests() {
        for v in [
            "sha1",
            "crc32 AAAAAA==",
            "sha1 !!!",
            "sha1 AAAA",
            "md5 qZk+NkcGgWq6PiVxeFDCbJzQ2J0=",
        ] {
            assert!(
                matches!(claimed(v), Err(GatewayError::BadRequest(_))),
                "{v} was accepted"
            );
        }
    }
}
