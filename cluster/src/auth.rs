//! The cluster secret: what every internal (node-to-node, gateway-to-node) call carries.

use subtle::ConstantTimeEq;

/// Header that carries the cluster secret on internal calls, as `Bearer <secret>`.
pub const AUTHORIZATION: &str = "authorization";

/// Shortest cluster secret accepted: 16 bytes keeps brute force out of reach and catches
/// a truncated or placeholder value in config.
pub const MIN_SECRET_LEN: usize = 16;

/// A credential (API key, admin token, cluster or signing secret): compared and sent,
/// never printed. `Debug` shows `<redacted>` and there is no `Display`, so a config
/// struct holding one can derive `Debug` and be logged without leaking it.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret's text, for sending or hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Refuses a secret shorter than [`MIN_SECRET_LEN`]; `what` names it in the error
    /// (`"--api-keys"`), the value is never shown.
    pub fn check(&self, what: &str) -> Result<(), WeakSecret> {
        if self.0.len() < MIN_SECRET_LEN {
            return Err(WeakSecret(what.to_string()));
        }
        Ok(())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

/// A credential below [`MIN_SECRET_LEN`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}: a credential must be at least {MIN_SECRET_LEN} characters")]
pub struct WeakSecret(pub String);

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
    Bearer::of([secret]).admits(header)
}

/// The credentials a service accepts as `Authorization: Bearer <credential>` (its API
/// keys, its admin token, the cluster secret): the one check every service uses. Keeps
/// blake3 hashes only and compares against every one, in constant time and without an
/// early exit, so neither a credential nor its length leaks through timing.
#[derive(Clone, Debug, Default)]
pub struct Bearer(Vec<blake3::Hash>);

impl Bearer {
    /// Accepts any of `credentials`.
    pub fn of<S: AsRef<str>>(credentials: impl IntoIterator<Item = S>) -> Self {
        Self(
            credentials
                .into_iter()
                .map(|c| blake3::hash(c.as_ref().as_bytes()))
                .collect(),
        )
    }

    /// Accepts any of `secrets`.
    pub fn of_secrets<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        Self::of(secrets.into_iter().map(Secret::expose))
    }

    /// Whether an `Authorization` header value presents one of the credentials.
    pub fn admits(&self, header: Option<&[u8]>) -> bool {
        let Some(given) = header.and_then(|v| v.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let given = blake3::hash(given);
        self.0.iter().fold(false, |acc, k| {
            acc | bool::from(k.as_bytes().ct_eq(given.as_bytes()))
        })
    }

    /// Whether `headers` carry one of the credentials.
    pub fn admits_headers(&self, headers: &http::HeaderMap) -> bool {
        self.admits(
            headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        )
    }
}

/// A fresh random secret (hex of 32 bytes from the OS RNG), for `kura dev` and first runs.
pub fn generate_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_set_admits_each_of_its_credentials_and_nothing_else() {
        let b = Bearer::of(["first-credential-0123", "second-credential-0123"]);
        for ok in [
            &b"Bearer first-credential-0123"[..],
            b"Bearer second-credential-0123",
        ] {
            assert!(b.admits(Some(ok)));
        }
        for bad in [
            &b"Bearer first-credential-012"[..],
            b"Bearer first-credential-01234",
            b"bearer first-credential-0123",
            b"first-credential-0123",
            b"Bearer ",
            b"",
        ] {
            assert!(!b.admits(Some(bad)), "{}", String::from_utf8_lossy(bad));
        }
        assert!(!b.admits(None));
        assert!(!Bearer::default().admits(Some(b"Bearer ")));
    }

    #[test]
    fn secrets_are_never_printed_and_short_ones_are_refused() {
        let s = Secret::from("a-long-enough-secret-value");
        let shown = format!("{s:?} {:?}", Some(vec![s.clone()]));
        assert_eq!(shown, "<redacted> Some([<redacted>])");
        assert_eq!(s.check("x"), Ok(()));
        let short = Secret::from("short");
        assert_eq!(
            short.check("--api-keys"),
            Err(WeakSecret("--api-keys".into()))
        );
        let msg = short.check("--api-keys").unwrap_err().to_string();
        assert!(!msg.contains("short"), "{msg}");
    }

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
