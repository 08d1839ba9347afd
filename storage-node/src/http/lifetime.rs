//! Chunk lifetime calls: pins (hot extra copies) and touches (a reference about to be
//! written: CopyObject, a completed multipart upload).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kura_cluster::client::{TouchReply, TouchRequest, MAX_TOUCH_IDS};
use serde::Deserialize;

use super::{blocking, parse_id, read_body};
use crate::error::{NodeError, Result};
use crate::node::Node;

#[derive(Deserialize)]
struct PinRequest {
    until_ms: u64,
}

pub(super) async fn pin_chunk(
    State(node): State<Arc<Node>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let id = parse_id(&raw)?;
    let body = read_body(&headers, body, 4096).await?;
    let req: PinRequest =
        serde_json::from_slice(&body).map_err(|e| NodeError::BadRequest(format!("JSON: {e}")))?;
    let n = node.clone();
    if blocking(move || n.chunks.pin(&id, req.until_ms)).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(NodeError::NotFound)
    }
}

/// Restarts the GC grace period of every listed copy this node holds, so that a record
/// written next that names them can never lose them to a GC pass that scanned the
/// records before it was written (the same protection a dedup hit gets).
pub(super) async fn touch_chunks(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<TouchReply>> {
    let body = read_body(&headers, body, TOUCH_BODY_LIMIT).await?;
    let req: TouchRequest =
        serde_json::from_slice(&body).map_err(|e| NodeError::BadRequest(format!("JSON: {e}")))?;
    if req.ids.len() > MAX_TOUCH_IDS {
        return Err(NodeError::BadRequest(format!(
            "at most {MAX_TOUCH_IDS} ids per touch"
        )));
    }
    let ids = req
        .ids
        .iter()
        .map(|raw| parse_id(raw))
        .collect::<Result<Vec<_>>>()?;
    let n = node.clone();
    let missing = blocking(move || {
        let mut missing = Vec::new();
        for id in ids {
            if !n.chunks.touch(&id)? {
                missing.push(id.to_hex());
            }
        }
        Ok(missing)
    })
    .await?;
    Ok(Json(TouchReply {
        touched: req.ids.len() - missing.len(),
        missing,
    }))
}

/// Largest touch body: [`MAX_TOUCH_IDS`] hex ids with JSON quoting.
const TOUCH_BODY_LIMIT: u64 = (MAX_TOUCH_IDS as u64) * 70 + 64;
