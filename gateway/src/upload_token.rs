//! Signed upload tokens: an application server (holding an API key) asks for a token
//! scoped to one bucket and key (or key prefix), with an expiry and optional limits, and
//! hands it to a viewer's browser or phone, which uploads with tus using only the token —
//! the way Cloudflare Stream and Bunny Stream take direct uploads.
//!
//! A token is `kut2.<key id>.<base64url(JSON grant)>.<base64url(MAC)>`, the MAC a keyed
//! blake3 of the version, key id and grant bytes (each length-prefixed) under a key
//! derived from that URL signing key (so every gateway of a cluster accepts every
//! other's tokens, retiring the key revokes them, and a token is no signed URL). The MAC
//! is checked, in constant time, before the grant is parsed.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use kura_cluster::names::{check_bucket, check_key};
use kura_cluster::signed::{fields_mac, token_fields, SigningKey};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::{GatewayError, Result};
use crate::Gateway;

/// Token format version, the token's first field.
const VERSION: &str = "kut2";

/// Longest a token may live (a direct upload of a large file over a phone link can take
/// hours; a week bounds what a leaked token can do).
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 7 * 24 * 3600;

/// Lifetime when the request names none.
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 3600;

/// Largest token accepted (a grant is a few hundred bytes).
const MAX_TOKEN_LEN: usize = 4096;

/// What a token allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadGrant {
    /// The bucket uploads go to.
    pub bucket: String,
    /// Exactly this key...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// ...or any key under this prefix (ends with `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Largest upload allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Media types allowed (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content_types: Vec<String>,
    /// Transcode the upload with this profile once complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcode: Option<String>,
}

impl UploadGrant {
    /// Checks names and scope: a bucket, and exactly one of a key or a prefix ending
    /// in `/`.
    fn validate(&self) -> Result<()> {
        check_bucket(&self.bucket)?;
        match (&self.key, &self.prefix) {
            (Some(k), None) => check_key(k)?,
            (None, Some(p)) => {
                if !p.ends_with('/') {
                    return Err(GatewayError::BadRequest(
                        "a prefix scope must end with '/' (e.g. uploads/user-7/)".into(),
                    ));
                }
                check_key(p)?;
            }
            _ => {
                return Err(GatewayError::BadRequest(
                    "give exactly one of key or prefix".into(),
                ))
            }
        }
        Ok(())
    }

    /// Whether the grant covers `bucket/key`.
    pub fn covers(&self, bucket: &str, key: &str) -> bool {
        bucket == self.bucket
            && match (&self.key, &self.prefix) {
                (Some(k), _) => key == k,
                (None, Some(p)) => key.starts_with(p.as_str()),
                (None, None) => false,
            }
    }
}

fn mac(signer: &SigningKey, grant_bytes: &[u8]) -> [u8; 32] {
    fields_mac(
        &signer.derive("kura 2026 upload token"),
        &[VERSION.as_bytes(), signer.id().as_bytes(), grant_bytes],
    )
}

/// Signs `grant` with the gateway's active signing key.
pub fn sign(gw: &Gateway, grant: &UploadGrant) -> Result<String> {
    sign_with(gw.signing_keys.active(), grant)
}

/// Signs `grant` with `signer` (any grant: the caller validates it).
pub fn sign_with(signer: &SigningKey, grant: &UploadGrant) -> Result<String> {
    let bytes = serde_json::to_vec(grant)?;
    let tag = mac(signer, &bytes);
    Ok(format!(
        "{VERSION}.{}.{}.{}",
        signer.id(),
        URL_SAFE_NO_PAD.encode(&bytes),
        URL_SAFE_NO_PAD.encode(tag)
    ))
}

/// Whether `s` has the form of an upload token (its version prefix): anything else
/// presented as one is no credential at all (401), not a bad token (403).
pub fn looks_like_token(s: &str) -> bool {
    s.split('.').next() == Some(VERSION)
}

/// The grant of a valid, unexpired token; `Forbidden` otherwise (forged, altered,
/// expired or malformed: the reason is not told).
pub fn verify(gw: &Gateway, token: &str, now_secs: u64) -> Result<UploadGrant> {
    let refuse = || GatewayError::Forbidden("invalid or expired upload token".into());
    if token.len() > MAX_TOKEN_LEN {
        return Err(refuse());
    }
    let Some([VERSION, key_id, body, tag]) = token_fields(token) else {
        return Err(refuse());
    };
    let signer = gw.signing_keys.get(key_id).ok_or_else(refuse)?;
    let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| refuse())?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| refuse())?;
    let want = mac(signer, &bytes);
    if !bool::from(want.ct_eq(tag.as_slice())) {
        return Err(refuse());
    }
    let grant: UploadGrant = serde_json::from_slice(&bytes).map_err(|_| refuse())?;
    if grant.exp <= now_secs || grant.validate().is_err() {
        return Err(refuse());
    }
    Ok(grant)
}

/// `POST /v1/upload-tokens` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    bucket: String,
    key: Option<String>,
    prefix: Option<String>,
    expires_in: Option<u64>,
    max_bytes: Option<u64>,
    #[serde(default)]
    content_types: Vec<String>,
    transcode: Option<String>,
}

/// `POST /v1/upload-tokens` answer.
#[derive(Debug, Serialize)]
pub struct TokenReply {
    /// The token (send as `Upload-Token`, or `Authorization: Bearer`, to `/v1/uploads`).
    pub token: String,
    /// Expiry, seconds since the epoch.
    pub expires_at: u64,
    /// Where to upload with tus.
    pub upload_url: &'static str,
}

/// `POST /v1/upload-tokens` (API key): a token for a direct upload.
pub async fn issue(
    State(gw): State<Arc<Gateway>>,
    Json(req): Json<TokenRequest>,
) -> Result<Response> {
    let lifetime = req.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME_SECS);
    if lifetime == 0 || lifetime > MAX_TOKEN_LIFETIME_SECS {
        return Err(GatewayError::BadRequest(format!(
            "expires_in must be 1..={MAX_TOKEN_LIFETIME_SECS} seconds"
        )));
    }
    if req.transcode.is_some() && gw.config.coordinator.is_none() {
        return Err(GatewayError::NotConfigured(
            "this gateway has no coordinator configured; cannot transcode".into(),
        ));
    }
    let grant = UploadGrant {
        bucket: req.bucket,
        key: req.key,
        prefix: req.prefix,
        exp: kura_cluster::hlc::wall_ms() / 1000 + lifetime,
        max_bytes: req.max_bytes,
        content_types: req.content_types,
        transcode: req.transcode,
    };
    grant.validate()?;
    let token = sign(&gw, &grant)?;
    let reply = TokenReply {
        token,
        expires_at: grant.exp,
        upload_url: "/v1/uploads",
    };
    Ok((StatusCode::CREATED, Json(reply)).into_response())
}
