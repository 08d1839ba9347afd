//! The cluster map: which nodes exist, where, with what weight and state. Versioned by
//! an epoch; every process converges on the highest epoch it has seen.

use serde::{Deserialize, Serialize};

/// A node's lifecycle state in the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Takes new data and serves reads.
    Active,
    /// Serves reads; its data is being moved away.
    Draining,
    /// Out of the map's placement; kept for history.
    Removed,
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

/// The versioned cluster map document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Version; a map with a higher epoch replaces one with a lower.
    pub epoch: u64,
    /// The nodes.
    pub nodes: Vec<NodeEntry>,
}
