//! The cluster map: which nodes exist, where, with what weight and state. Versioned by
//! an epoch; every process converges on the highest epoch it has seen.

use serde::{Deserialize, Serialize};

use crate::ring::DEFAULT_REPLICAS;

/// A node's lifecycle state in the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Takes new data and serves reads.
    Active,
    /// Serves reads; its data is being moved away (it holds no placement).
    Draining,
    /// Out of placement; still serves what it has until an operator stops it.
    Removed,
    /// Gone for good (disk dead, machine lost): never asked for anything; the survivors
    /// bring its data back to N copies.
    Lost,
}

impl NodeState {
    /// Whether readers may still find data on a node in this state.
    pub fn readable(self) -> bool {
        !matches!(self, NodeState::Lost)
    }
}

/// One node of the cluster map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Stable node id.
    pub id: String,
    /// `host:port` of its HTTP service.
    pub addr: String,
    /// Failure domain (rack, room, data centre).
    pub zone: String,
    /// Relative capacity; placement share is proportional to it.
    pub weight: u32,
    /// Lifecycle state.
    pub state: NodeState,
}

fn default_replicas() -> usize {
    DEFAULT_REPLICAS
}

/// The versioned cluster map document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Version; a map with a higher epoch replaces one with a lower.
    pub epoch: u64,
    /// The nodes.
    pub nodes: Vec<NodeEntry>,
    /// Copies of every chunk and record (N); part of the map so that every node and
    /// gateway places data alike.
    #[serde(default = "default_replicas")]
    pub replicas: usize,
}

impl Default for ClusterMap {
    fn default() -> Self {
        Self {
            epoch: 0,
            nodes: Vec::new(),
            replicas: DEFAULT_REPLICAS,
        }
    }
}

impl ClusterMap {
    /// The entry of node `id`.
    pub fn node(&self, id: &str) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.id == id)
    }
}
