//! Reading without an API key: signed URLs (`/v1/s/{token}/{bucket}/{key}`) and the
//! call that mints them (`POST /v1/sign`), see `kura_cluster::signed`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::Json;
use kura_cluster::names::{check_bucket, check_key, encode_key_path};
use kura_cluster::signed;
use serde::{Deserialize, Serialize};

use crate::error::{GatewayError, Result};
use crate::http::serve_object;
use crate::Gateway;

/// Longest validity of a signed URL: 7 days, as S3's presigned URLs; longer-lived access
/// should be an API key that can be revoked.
pub const MAX_SIGNED_SECONDS: u64 = 7 * 24 * 3600;

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `GET`/`HEAD /v1/s/{token}/{bucket}/{key}`. The names are checked before the token,
/// so a malformed name is a 400 whatever the token.
pub async fn signed_get(
    State(gw): State<Arc<Gateway>>,
    method: Method,
    Path((token, bucket, key)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    check_bucket(&bucket)?;
    check_key(&key)?;
    signed::verify(&gw.signing_keys, &token, &bucket, &key, now_s()).map_err(|e| match e {
        signed::SignError::Malformed => GatewayError::BadRequest(e.to_string()),
        _ => GatewayError::Forbidden(e.to_string()),
    })?;
    serve_object(&gw, &method, &bucket, &key, &headers).await
}

/// Body of `POST /v1/sign`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// `bucket/key` the URL is for.
    pub object: String,
    /// Validity in seconds (1..=7 days).
    pub expires_in: u64,
    /// Open the whole folder `tree` (a prefix of the key ending in `/`, e.g. an HLS
    /// tree `video.mp4.hls/`) instead of exactly the object.
    #[serde(default)]
    pub tree: Option<String>,
}

/// Answer of `POST /v1/sign`.
#[derive(Serialize)]
pub struct SignReply {
    /// Path to append to the gateway's base URL.
    pub path: String,
    /// Expiry, unix seconds.
    pub expires: u64,
    /// The folder opened, when tree-scoped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tree: Option<String>,
    /// Id of the signing key (retiring it revokes the URL).
    pub key_id: String,
}

/// `POST /v1/sign` (API key): mints a signed path for one object or, when asked, one
/// folder.
pub async fn sign(
    State(gw): State<Arc<Gateway>>,
    Json(req): Json<SignRequest>,
) -> Result<Json<SignReply>> {
    let (bucket, key) = req
        .object
        .split_once('/')
        .ok_or_else(|| GatewayError::BadRequest("object must be bucket/key".into()))?;
    check_bucket(bucket)?;
    check_key(key)?;
    if req.expires_in == 0 || req.expires_in > MAX_SIGNED_SECONDS {
        return Err(GatewayError::BadRequest(format!(
            "expires_in must be 1..={MAX_SIGNED_SECONDS} seconds"
        )));
    }
    let scope = match req.tree.as_deref() {
        None => signed::Scope::Object,
        Some(tree) => signed::Scope::Tree(tree),
    };
    let expires = now_s() + req.expires_in;
    let signer = gw.signing_keys.active();
    let token = signed::token(signer, bucket, key, scope, expires).map_err(|_| {
        GatewayError::BadRequest(
            "tree must be a folder of the key: a prefix of it ending in '/'".into(),
        )
    })?;
    Ok(Json(SignReply {
        path: format!("/v1/s/{token}/{bucket}/{}", encode_key_path(key)),
        expires,
        tree: req.tree,
        key_id: signer.id().to_string(),
    }))
}
