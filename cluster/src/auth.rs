//! The cluster secret: what every internal (node-to-node, gateway-to-node) call carries.

use subtle::ConstantTimeEq;

/// Header that carries the cluster secret on internal calls, as `Bearer <secret>`.
pub const AUTHORIZATION: &str = "authorization";

/// Shortest cluster secret accepted: 16 bytes keeps brute force out of reach and catches
/// a truncated or placeholder value in config.
pub const MIN_SECRET_LEN: usize = 16;

/// The `Authorization` header value for `secret`.
pub fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

/// Whether an `Authorization` header value presents `secret`. Compares in constant time
/// so the secret cannot be learned byte by byte from response timings.
pub fn check_bearer(header: Option<&[u8]>, secret: &str) -> bool {
    let Some(value) = header else { return false };
    let Some(given) = value.strip_prefix(b"Bearer ") else {
        return false;
    };
    // Compare hashes so that even the length of the secret leaks nothing.
    let a = blake3::hash(given);
    let b = blake3::hash(secret.as_bytes());
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// A fresh random secret (hex of 32 bytes from the OS RNG), for `kura dev` and first runs.
pub fn generate_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_check() {
        let s = "0123456789abcdef0123";
        assert!(check_bearer(Some(bearer(s).as_bytes()), s));
        assert!(!check_bearer(Some(b"Bearer wrong"), s));
        assert!(!check_bearer(Some(s.as_bytes()), s));
        assert!(!check_bearer(None, s));
        assert_ne!(generate_secret(), generate_secret());
    }
}
