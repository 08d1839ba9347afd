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

/// blake3 key-derivation context of node identity proofs (domain separation: a proof
/// can never be mistaken for anything else signed with the cluster secret).
const IDENTITY_CONTEXT: &str = "kura 2026-12 node identity proof v1";

/// A node's proof that it holds the cluster `secret`: keyed blake3 over the caller's
/// `nonce` and the node's id, hex. Lets a gateway confirm a node belongs to its cluster
/// before it sends the secret there (`GET /v1/identity` on a node needs no credential).
pub fn identity_proof(secret: &str, nonce: &str, node_id: &str) -> String {
    let key = blake3::derive_key(IDENTITY_CONTEXT, secret.as_bytes());
    let mut h = blake3::Hasher::new_keyed(&key);
    h.update(&(nonce.len() as u64).to_le_bytes());
    h.update(nonce.as_bytes());
    h.update(node_id.as_bytes());
    h.finalize().to_hex().to_string()
}

/// Whether `proof` is [`identity_proof`] for these values (constant time).
pub fn check_identity(secret: &str, nonce: &str, node_id: &str, proof: &str) -> bool {
    let want = identity_proof(secret, nonce, node_id);
    want.as_bytes().ct_eq(proof.as_bytes()).into()
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

    #[test]
    fn identity_proofs_bind_the_secret_the_nonce_and_the_id() {
        let s = "cluster-secret-0123456789abcdef";
        let p = identity_proof(s, "nonce-1", "n4");
        assert!(check_identity(s, "nonce-1", "n4", &p));
        assert!(!check_identity(
            "another-secret-0123456789abcd",
            "nonce-1",
            "n4",
            &p
        ));
        assert!(!check_identity(s, "nonce-2", "n4", &p));
        assert!(!check_identity(s, "nonce-1", "n5", &p));
        // The nonce's length is bound: moving bytes between nonce and id changes it.
        assert_ne!(identity_proof(s, "ab", "c"), identity_proof(s, "a", "bc"));
    }
}
