//! Extra copies of hot content (see `crate::hot`): where they go, placing, re-pinning
//! and dropping them.

use std::sync::Arc;

use bytes::Bytes;
use kura_cluster::ChunkId;

use super::{Cluster, Peer};

impl Cluster {
    /// Up to `k` active, up nodes after `id`'s owners in its candidate order.
    pub fn extra_targets(&self, id: &ChunkId, k: usize) -> Vec<String> {
        let (_, rest) = self.placement(id.as_bytes());
        rest.iter()
            .filter(|n| n.health.is_up())
            .take(k)
            .map(|n| n.entry.id.clone())
            .collect()
    }

    fn handle(&self, node: &str) -> Option<Arc<Peer>> {
        self.topology().nodes.get(node).cloned()
    }

    /// Stores an extra copy of a chunk on `node`, pinned until `until_ms`.
    pub async fn copy_to(&self, node: &str, id: &ChunkId, bytes: Bytes, until_ms: u64) -> bool {
        let Some(h) = self.handle(node) else {
            return false;
        };
        let put = h.client.put_chunk(id, bytes);
        if self.peers.call(&h, "chunk_put", put).await.is_err() {
            return false;
        }
        let pin = h.client.pin_chunk(id, until_ms);
        self.peers.call(&h, "chunk_pin", pin).await.unwrap_or(false)
    }

    /// Re-pins an extra copy.
    pub async fn pin(&self, node: &str, id: &ChunkId, until_ms: u64) {
        if let Some(h) = self.handle(node) {
            let pin = h.client.pin_chunk(id, until_ms);
            let _ = self.peers.call(&h, "chunk_pin", pin).await;
        }
    }

    /// Deletes an extra copy, unless `node` has meanwhile become one of the chunk's owners.
    pub async fn drop_extra(&self, node: &str, id: &ChunkId) -> bool {
        let (owners, _) = self.placement(id.as_bytes());
        if owners.iter().any(|o| o.entry.id == node) {
            return false;
        }
        match self.handle(node) {
            Some(h) => {
                let delete = h.client.delete_chunk(id);
                self.peers
                    .call(&h, "chunk_delete", delete)
                    .await
                    .unwrap_or(false)
            }
            None => false,
        }
    }
}
