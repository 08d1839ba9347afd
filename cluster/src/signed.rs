//! Signed URLs: a viewer without an API key may read exactly one object, or, when the
//! signer asked for it, every object of one key tree (a folder ending in `/`, such as an
//! HLS rendition tree), until an expiry.
//!
//! The token travels in the path, `/v1/s/{token}/{bucket}/{key}`, not in the query, so
//! that relative URIs in an HLS playlist (`v720p/index.m3u8`, `a7/seg00001.ts`) resolve
//! to URLs carrying the same token: one tree-scoped signature covers a whole HLS tree.
//!
//! Token: `s2.{key id}.{scope}.{expiry unix seconds}.{base64url MAC}`, the scope `o` (the
//! object named by the path, exactly) or `t{n}` (the tree named by the path key's first
//! `n` bytes, which must end with `/`). The MAC is a keyed blake3 over every field,
//! each length-prefixed, so no two grants share a signed text (bucket `a` + key `b/c`
//! and bucket `a/b` + key `c` differ, an object scope never reads as a tree scope).
//!
//! Signing keys carry an id and are rotated by configuration: the first key of a
//! [`SigningKeys`] signs, every key in it verifies, and a key removed from it (retired)
//! revokes at once every URL it signed.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use subtle::ConstantTimeEq;

/// Token format version, the token's first field.
const VERSION: &str = "s2";

/// Shortest signing secret accepted: 32 characters, 128+ bits from any generator that
/// prints hex or base64 (`openssl rand -hex 16` is the least that passes).
pub const MIN_SECRET_LEN: usize = 32;

/// Longest key id; ids are short labels (`2026-12`, `k7`) that travel in every URL.
pub const MAX_KEY_ID_LEN: usize = 32;

/// Id of the key derived from the cluster secret when no signing key is configured.
pub const DERIVED_KEY_ID: &str = "c";

/// Longest token accepted (a real one is under 100 bytes).
const MAX_TOKEN_LEN: usize = 256;

/// Why a signed URL is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The token does not parse.
    #[error("malformed signature token")]
    Malformed,
    /// Signed with a key this gateway does not hold (retired, or never configured).
    #[error("signed with a key that is not accepted (retired?)")]
    UnknownKey,
    /// The signature does not match.
    #[error("invalid signature")]
    BadSignature,
    /// Past the expiry.
    #[error("signed URL expired")]
    Expired,
    /// A tree scope that is not a folder of the key (must be a non-empty prefix of the
    /// key that ends in `/`).
    #[error("a tree scope must be a prefix of the key ending in '/'")]
    BadScope,
}

/// Why a signing key is refused at configuration.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The id is empty, too long, or has characters other than `[A-Za-z0-9_-]`.
    #[error("signing key id {0:?}: 1..={MAX_KEY_ID_LEN} of A-Z a-z 0-9 _ -")]
    BadId(String),
    /// The secret is shorter than [`MIN_SECRET_LEN`].
    #[error("signing key {0:?}: the secret must be at least {MIN_SECRET_LEN} characters")]
    ShortSecret(String),
    /// Two keys share an id.
    #[error("signing key id {0:?} given twice")]
    DuplicateId(String),
    /// No key at all.
    #[error("no signing key")]
    Empty,
}

/// One signing key: an id that travels in tokens and the MAC key derived from its
/// secret. `Debug` shows the id only.
#[derive(Clone)]
pub struct SigningKey {
    id: String,
    mac_key: [u8; 32],
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, <redacted>)", self.id)
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl SigningKey {
    /// A configured key; the secret must be at least [`MIN_SECRET_LEN`] characters.
    pub fn new(id: &str, secret: &str) -> Result<Self, KeyError> {
        if !valid_id(id) {
            return Err(KeyError::BadId(id.to_string()));
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::ShortSecret(id.to_string()));
        }
        Ok(Self::from_secret(id, secret.as_bytes()))
    }

    /// The key used when none is configured: derived from the cluster secret (every
    /// gateway of a cluster accepts the others' URLs; revoking means rotating the cluster
    /// secret, so production configurations name their own keys).
    pub fn derived(cluster_secret: &str) -> Self {
        Self::from_secret(DERIVED_KEY_ID, cluster_secret.as_bytes())
    }

    fn from_secret(id: &str, secret: &[u8]) -> Self {
        Self {
            id: id.to_string(),
            mac_key: blake3::derive_key("kura 2026 signed URL key v2", secret),
        }
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A key for another kind of token, derived from this one (so rotating the signing
    /// keys rotates it too, and the two kinds can never be confused).
    pub fn derive(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.mac_key)
    }
}

/// The keys a gateway accepts; the first signs.
#[derive(Clone, Debug)]
pub struct SigningKeys(Vec<SigningKey>);

impl SigningKeys {
    /// A key set; the first key signs new URLs, all verify.
    pub fn new(keys: Vec<SigningKey>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.id == k.id) {
                return Err(KeyError::DuplicateId(k.id.clone()));
            }
        }
        Ok(Self(keys))
    }

    /// The key new tokens are signed with.
    pub fn active(&self) -> &SigningKey {
        &self.0[0]
    }

    /// The accepted key with this id.
    pub fn get(&self, id: &str) -> Option<&SigningKey> {
        self.0.iter().find(|k| k.id == id)
    }
}

/// What a signed URL opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Exactly the object named.
    Object,
    /// Every key starting with this prefix (non-empty, ends with `/`).
    Tree(&'a str),
}

/// Keyed blake3 over `fields`, each prefixed with its length, so that no two field
/// lists share a signed text. The MAC of signed URLs and of upload tokens.
pub fn fields_mac(key: &[u8; 32], fields: &[&[u8]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    for field in fields {
        h.update(&(field.len() as u64).to_le_bytes());
        h.update(field);
    }
    *h.finalize().as_bytes()
}

/// The `N` dot-separated fields of a token, if it has exactly `N`.
pub fn token_fields<const N: usize>(token: &str) -> Option<[&str; N]> {
    token.split('.').collect::<Vec<_>>().try_into().ok()
}

fn mac(key: &SigningKey, bucket: &str, name: &str, tree: bool, expires: u64) -> [u8; 32] {
    let scope: &[u8] = if tree { b"t" } else { b"o" };
    fields_mac(
        &key.mac_key,
        &[
            VERSION.as_bytes(),
            key.id.as_bytes(),
            scope,
            bucket.as_bytes(),
            name.as_bytes(),
            &expires.to_le_bytes(),
        ],
    )
}

/// A token granting reading `bucket/key` (scope [`Scope::Object`]) or every key of
/// `bucket` under a tree prefix of `key` until `expires` (unix seconds). Names are the
/// caller's to validate; the tree must be a prefix of `key` ending in `/`.
pub fn token(
    signer: &SigningKey,
    bucket: &str,
    key: &str,
    scope: Scope<'_>,
    expires: u64,
) -> Result<String, SignError> {
    let (scope_field, name, tree) = match scope {
        Scope::Object => ("o".to_string(), key, false),
        Scope::Tree(prefix) => {
            if prefix.is_empty() || !prefix.ends_with('/') || !key.starts_with(prefix) {
                return Err(SignError::BadScope);
            }
            (format!("t{}", prefix.len()), prefix, true)
        }
    };
    let tag = mac(signer, bucket, name, tree, expires);
    Ok(format!(
        "{VERSION}.{}.{scope_field}.{expires}.{}",
        signer.id,
        URL_SAFE_NO_PAD.encode(tag)
    ))
}

/// Parses a decimal without sign or leading zeros (one spelling per number, so a token
/// has exactly one text).
fn canonical_u64(s: &str) -> Option<u64> {
    let ok = !s.is_empty()
        && s.len() <= 20
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok()).flatten()
}

/// Checks that `token` grants reading `bucket/key` at `now` (unix seconds), with one of
/// `keys`. The caller validates the names first.
pub fn verify(
    keys: &SigningKeys,
    token: &str,
    bucket: &str,
    key: &str,
    now: u64,
) -> Result<(), SignError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(SignError::Malformed);
    }
    let Some([VERSION, id, scope, exp, tag]) = token_fields(token) else {
        return Err(SignError::Malformed);
    };
    let expires = canonical_u64(exp).ok_or(SignError::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| SignError::Malformed)?;
    let (name, tree) = match scope {
        "o" => (key, false),
        _ => {
            let len = scope
                .strip_prefix('t')
                .and_then(canonical_u64)
                .ok_or(SignError::Malformed)?;
            let prefix = usize::try_from(len)
                .ok()
                .and_then(|n| key.get(..n))
                .filter(|p| p.ends_with('/'))
                .ok_or(SignError::BadScope)?;
            (prefix, true)
        }
    };
    let signer = keys.get(id).ok_or(SignError::UnknownKey)?;
    let want = mac(signer, bucket, name, tree, expires);
    if !bool::from(want.as_slice().ct_eq(tag.as_slice())) {
        return Err(SignError::BadSignature);
    }
    if now > expires {
        return Err(SignError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
