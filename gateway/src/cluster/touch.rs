//! Touching chunks before a record that names already-stored chunks is written
//! (CopyObject, a completed multipart upload): every owner of each chunk restarts its
//! GC grace, so a GC pass that read the records before the new one was written cannot
//! take the chunks away (the protocol of ARCHITECTURE.md, "GC").

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::join_all;
use kura_cluster::client::MAX_TOUCH_IDS;
use kura_cluster::ChunkId;

use super::{Cluster, Peer};
use crate::error::{GatewayError, Result};

impl Cluster {
    /// Touches `ids` on their owners (current map, and the previous one during a
    /// rebalance). Fails unless every chunk was touched on at least one node: a chunk
    /// no owner holds cannot be referenced safely.
    pub async fn touch_chunks(&self, ids: &[ChunkId]) -> Result<()> {
        let mut by_node: HashMap<String, (Arc<Peer>, Vec<ChunkId>)> = HashMap::new();
        for id in ids {
            for node in self.owners_now_and_before(id) {
                by_node
                    .entry(node.entry.id.clone())
                    .or_insert_with(|| (node.clone(), Vec::new()))
                    .1
                    .push(*id);
            }
        }
        let calls = by_node.into_values().flat_map(|(node, ids)| {
            ids.chunks(MAX_TOUCH_IDS)
                .map(|batch| (node.clone(), batch.to_vec()))
                .collect::<Vec<_>>()
        });
        let answers = join_all(calls.map(|(node, batch)| async move {
            let touch = node.client.touch_chunks(&batch);
            let r = self.peers.call(&node, "chunk_touch", touch).await;
            (node, batch, r)
        }))
        .await;
        let mut touched: HashMap<ChunkId, bool> = ids.iter().map(|id| (*id, false)).collect();
        for (node, batch, answer) in answers {
            match answer {
                Ok(reply) => {
                    for id in batch {
                        if !reply.missing.contains(&id.to_hex()) {
                            touched.insert(id, true);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(node = %node.entry.id, error = %e, "touching chunks failed");
                }
            }
        }
        match touched.into_iter().find(|(_, ok)| !ok) {
            None => Ok(()),
            Some((id, _)) => Err(GatewayError::ChunkUnavailable(id.to_hex())),
        }
    }

    fn owners_now_and_before(&self, id: &ChunkId) -> Vec<Arc<Peer>> {
        let topo = self.topology();
        let mut owners: Vec<Arc<Peer>> = Vec::new();
        let now = topo.ring.placement(id.as_bytes(), topo.map.replicas).0;
        let before = topo
            .prev
            .as_ref()
            .map(|p| p.placement(id.as_bytes(), topo.map.replicas).0)
            .unwrap_or_default();
        for e in now.into_iter().chain(before) {
            if let Some(h) = topo.nodes.get(&e.id) {
                if !owners.iter().any(|o| o.entry.id == e.id) {
                    owners.push(h.clone());
                }
            }
        }
        owners
    }
}
