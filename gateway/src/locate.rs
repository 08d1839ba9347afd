//! Where an object's bytes are: `GET /v1/locate/{bucket}/{key}` (API key) lists its
//! chunks and, for each, the nodes the map places it on and whether each of them holds
//! it now (asked with a HEAD, so a missing or lost copy shows). For the console's object
//! page and for an operator looking at one object; at most [`MAX_LOCATED_CHUNKS`] chunks
//! are looked up (the rest are counted), so a huge object costs a bounded number of calls.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use futures::StreamExt;
use kura_cluster::names::{check_bucket, check_key};
use serde::Serialize;

use crate::error::{GatewayError, Result};
use crate::Gateway;

/// Chunks looked up per request: 256 × N HEADs at most (a 1 GiB object at 4 MiB chunks).
pub const MAX_LOCATED_CHUNKS: usize = 256;

/// HEADs in flight at once for one request.
const LOOKUPS_IN_FLIGHT: usize = 16;

/// One copy of a chunk.
#[derive(Debug, Serialize)]
pub struct Copy {
    /// The node the map places it on.
    pub node: String,
    /// Its zone.
    pub zone: String,
    /// Whether the node holds it (`None`: the node did not answer).
    pub held: Option<bool>,
}

/// One chunk and its copies.
#[derive(Debug, Serialize)]
pub struct Located {
    /// Chunk id (blake3 hex).
    pub id: String,
    /// Size in bytes.
    pub size: u64,
    /// Its owners by the current map.
    pub copies: Vec<Copy>,
}

/// The answer.
#[derive(Debug, Serialize)]
pub struct Location {
    /// Object size.
    pub size: u64,
    /// Number of chunks.
    pub chunk_count: usize,
    /// The first [`MAX_LOCATED_CHUNKS`] chunks.
    pub chunks: Vec<Located>,
    /// Copies each chunk should have.
    pub replicas: usize,
}

/// `GET /v1/locate/{bucket}/{*key}`.
pub async fn handler(
    State(gw): State<Arc<Gateway>>,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<Json<Location>> {
    check_bucket(&bucket)?;
    check_key(&key)?;
    let record = gw
        .cluster
        .get_record(&bucket, &key)
        .await?
        .filter(|r| !r.deleted)
        .ok_or(GatewayError::NotFound)?;
    let chunks = futures::stream::iter(record.chunks.iter().take(MAX_LOCATED_CHUNKS).cloned())
        .map(|c| {
            let gw = gw.clone();
            async move {
                let owners = gw.cluster.owners(&c.id);
                let held = futures::future::join_all(owners.iter().map(|n| {
                    let head = n.client.head_chunk(&c.id);
                    gw.cluster.peers.call(n, "chunk_head", head)
                }))
                .await;
                Located {
                    id: c.id.to_hex(),
                    size: c.size,
                    copies: owners
                        .iter()
                        .zip(held)
                        .map(|(n, h)| Copy {
                            node: n.entry.id.clone(),
                            zone: n.entry.zone.clone(),
                            held: h.ok().map(|s| s.is_some()),
                        })
                        .collect(),
                }
            }
        })
        .buffered(LOOKUPS_IN_FLIGHT)
        .collect()
        .await;
    Ok(Json(Location {
        size: record.size,
        chunk_count: record.chunks.len(),
        chunks,
        replicas: gw.cluster.map().replicas,
    }))
}
