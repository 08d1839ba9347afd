//! Signed URLs: a viewer without an API key may read every object under one key prefix
//! until an expiry, because the gateway can check an HMAC-SHA256 over
//! `bucket/prefix` and the expiry.
//!
//! The token travels in the path, `/v1/s/{token}/{bucket}/{key}`, not in the query, so
//! that relative URIs in an HLS playlist (`v720p/index.m3u8`, `a7/seg00001.ts`) resolve
//! to URLs carrying the same token: one signature covers a whole HLS tree.
//! Token format: `{expiry unix seconds}.{prefix length in bytes}.{hex HMAC}`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a signed URL is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The token does not parse.
    #[error("malformed signature token")]
    Malformed,
    /// The signature does not match.
    #[error("invalid signature")]
    BadSignature,
    /// Past the expiry.
    #[error("signed URL expired")]
    Expired,
    /// The key is outside the signed prefix.
    #[error("object is outside the signed prefix")]
    OutsidePrefix,
}

fn mac(secret: &[u8], bucket: &str, prefix: &str, expires: u64) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for HMAC.
    let mut m = match <HmacSha256 as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        // Unreachable (HMAC accepts any key length); an all-zero key still yields a MAC
        // that nobody holding only the real secret could have produced.
        Err(_) => <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()),
    };
    m.update(bucket.as_bytes());
    m.update(b"/");
    m.update(prefix.as_bytes());
    m.update(b"\n");
    m.update(expires.to_string().as_bytes());
    m
}

/// A token granting read access to every key of `bucket` starting with `prefix` until
/// `expires` (unix seconds).
pub fn token(secret: &[u8], bucket: &str, prefix: &str, expires: u64) -> String {
    let sig = mac(secret, bucket, prefix, expires).finalize().into_bytes();
    format!("{expires}.{}.{}", prefix.len(), hex::encode(sig))
}

/// Checks that `token` grants reading `bucket/key` at `now` (unix seconds).
pub fn verify(
    secret: &[u8],
    token: &str,
    bucket: &str,
    key: &str,
    now: u64,
) -> Result<(), SignError> {
    let mut parts = token.splitn(3, '.');
    let (Some(exp), Some(len), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SignError::Malformed);
    };
    let expires: u64 = exp.parse().map_err(|_| SignError::Malformed)?;
    let len: usize = len.parse().map_err(|_| SignError::Malformed)?;
    let sig = hex::decode(sig).map_err(|_| SignError::Malformed)?;
    let prefix = key.get(..len).ok_or(SignError::OutsidePrefix)?;
    // Constant-time comparison inside `verify_slice`.
    mac(secret, bucket, prefix, expires)
        .verify_slice(&sig)
        .map_err(|_| SignError::BadSignature)?;
    if now > expires {
        return Err(SignError::Expired);
    }
    Ok(())
}

/// The prefix a signed URL for `key` covers by default: its "directory" (up to and
/// including the last `/`), so signing `video.mp4.hls/master.m3u8` covers the whole
/// HLS tree; a key without `/` covers only itself.
pub fn default_prefix(key: &str) -> &str {
    match key.rfind('/') {
        Some(i) => &key[..=i],
        None => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_cover_their_prefix_until_expiry() {
        let k = b"0123456789abcdef0123456789abcdef";
        let t = token(k, "media", "v.mp4.hls/", 1000);
        assert_eq!(verify(k, &t, "media", "v.mp4.hls/master.m3u8", 999), Ok(()));
        assert_eq!(
            verify(k, &t, "media", "v.mp4.hls/v720p/a3/seg00001.ts", 1000),
            Ok(())
        );
        assert_eq!(
            verify(k, &t, "media", "v.mp4.hls/x", 1001),
            Err(SignError::Expired)
        );
        assert_eq!(
            verify(k, &t, "media", "other.mp4.hls/x", 10),
            Err(SignError::BadSignature)
        );
        assert_eq!(
            verify(k, &t, "other", "v.mp4.hls/x", 10),
            Err(SignError::BadSignature)
        );
        assert_eq!(
            verify(b"another key", &t, "media", "v.mp4.hls/x", 10),
            Err(SignError::BadSignature)
        );
        let forged = t.replace("1000.", "9999.");
        assert_eq!(
            verify(k, &forged, "media", "v.mp4.hls/x", 10),
            Err(SignError::BadSignature)
        );
        assert_eq!(
            verify(k, "garbage", "media", "x", 10),
            Err(SignError::Malformed)
        );
        assert_eq!(
            verify(k, &t, "media", "v.mp", 10),
            Err(SignError::OutsidePrefix)
        );
        assert_eq!(default_prefix("v.mp4.hls/master.m3u8"), "v.mp4.hls/");
        assert_eq!(default_prefix("photo.jpg"), "photo.jpg");
    }
}
