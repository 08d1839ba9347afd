//! Placement: the consistent-hash ring built from the cluster map, and replica sets.
//!
//! Every node gets `weight` virtual nodes on a ring (SipHash of node id and vnode
//! number, via the `consistent_hash` crate), so its share of keys is proportional to its
//! weight, and adding a node moves only the keys whose candidate order it enters. A key's
//! replica set is the first N distinct nodes in its candidate order, preferring nodes in
//! zones not yet used, so N copies span min(N, zones) zones.

use consistent_hash::{DefaultHash, Node, StaticHashRing};

use crate::map::{ClusterMap, NodeEntry, NodeState};
use crate::ChunkId;

/// Default weight (= virtual nodes) of a node. 1000 keeps every node's share of keys
/// within a few percent of its fair share (the spread shrinks as 1/sqrt(vnodes)), while
/// a 100-node ring is still only 100k sorted entries.
pub const DEFAULT_WEIGHT: u32 = 1000;

/// Default number of copies of every chunk and record.
pub const DEFAULT_REPLICAS: usize = 3;
/// Default write quorum: copies that must be durable before a write is acknowledged.
pub const DEFAULT_WRITE_QUORUM: usize = 2;
/// Default read quorum for records (W + R > N, so a read sees the latest write).
pub const DEFAULT_READ_QUORUM: usize = 2;

/// Replication settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replication {
    /// Copies kept (N).
    pub n: usize,
    /// Copies durable before a write counts (W).
    pub w: usize,
    /// Record replicas consulted on a read (R).
    pub r: usize,
}

impl Default for Replication {
    fn default() -> Self {
        Self {
            n: DEFAULT_REPLICAS,
            w: DEFAULT_WRITE_QUORUM,
            r: DEFAULT_READ_QUORUM,
        }
    }
}

/// The ring of one cluster-map epoch. Only `active` nodes take placement.
pub struct Ring {
    epoch: u64,
    nodes: Vec<NodeEntry>,
    // The crate keeps `'a` references into its own node vector; the ring is immutable
    // once built and never hands out references that outlive `self`.
    ring: StaticHashRing<'static, String, usize, DefaultHash>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("epoch", &self.epoch)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

/// The placement key of an object record.
pub fn record_key(bucket: &str, key: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(bucket.as_bytes());
    h.update(&[0]);
    h.update(key.as_bytes());
    *h.finalize().as_bytes()
}

impl Ring {
    /// Builds the ring of `map`.
    pub fn new(map: &ClusterMap) -> Self {
        let nodes: Vec<NodeEntry> = map
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Active && n.weight > 0)
            .cloned()
            .collect();
        let ring = StaticHashRing::new(
            DefaultHash,
            nodes
                .iter()
                .enumerate()
                .map(|(i, n)| Node::new(n.id.clone()).value(i).quantity(n.weight as usize)),
        );
        Self {
            epoch: map.epoch,
            nodes,
            ring,
        }
    }

    /// The epoch of the map it was built from.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The nodes that take placement.
    pub fn nodes(&self) -> &[NodeEntry] {
        &self.nodes
    }

    /// Every node, in the key's preference order.
    pub fn candidates(&self, key: &[u8; 32]) -> Vec<&NodeEntry> {
        self.ring
            .calc_candidates(key)
            .map(|n| &self.nodes[n.value])
            .collect()
    }

    /// The first `n` candidates, preferring zones not yet used; then the remaining
    /// candidates in order (fallbacks for when replicas are down).
    pub fn placement(&self, key: &[u8; 32], n: usize) -> (Vec<&NodeEntry>, Vec<&NodeEntry>) {
        let all = self.candidates(key);
        let mut chosen: Vec<&NodeEntry> = Vec::with_capacity(n);
        let mut zones: Vec<&str> = Vec::with_capacity(n);
        for node in &all {
            if chosen.len() == n {
                break;
            }
            if !zones.contains(&node.zone.as_str()) {
                zones.push(&node.zone);
                chosen.push(node);
            }
        }
        for node in &all {
            if chosen.len() == n {
                break;
            }
            if !chosen.iter().any(|c| c.id == node.id) {
                chosen.push(node);
            }
        }
        let rest = all
            .into_iter()
            .filter(|c| !chosen.iter().any(|x| x.id == c.id))
            .collect();
        (chosen, rest)
    }

    /// Replica set of a chunk.
    pub fn chunk_replicas(&self, id: &ChunkId, n: usize) -> Vec<&NodeEntry> {
        self.placement(id.as_bytes(), n).0
    }

    /// Replica set of an object record.
    pub fn record_replicas(&self, bucket: &str, key: &str, n: usize) -> Vec<&NodeEntry> {
        self.placement(&record_key(bucket, key), n).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(nodes: &[(&str, &str, u32)]) -> ClusterMap {
        ClusterMap {
            epoch: 1,
            nodes: nodes
                .iter()
                .map(|(id, zone, weight)| NodeEntry {
                    id: id.to_string(),
                    addr: format!("{id}:1"),
                    zone: zone.to_string(),
                    weight: *weight,
                    state: NodeState::Active,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn keys(n: usize, seed: u64) -> Vec<[u8; 32]> {
        (0..n as u64)
            .map(|i| *blake3::hash(&(seed, i).0.wrapping_add(i).to_le_bytes()).as_bytes())
            .map(|h| *blake3::hash(&[h.as_slice(), &seed.to_le_bytes()].concat()).as_bytes())
            .collect()
    }

    fn primary_share(ring: &Ring, keys: &[[u8; 32]]) -> std::collections::HashMap<String, usize> {
        let mut counts = std::collections::HashMap::new();
        for k in keys {
            *counts.entry(ring.candidates(k)[0].id.clone()).or_insert(0) += 1;
        }
        counts
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        #[test]
        fn equal_weights_give_fair_shares(k in 3usize..12, seed: u64) {
            let names: Vec<String> = (0..k).map(|i| format!("node-{seed}-{i}")).collect();
            let m = map(&names.iter().map(|n| (n.as_str(), "z", DEFAULT_WEIGHT)).collect::<Vec<_>>());
            let ring = Ring::new(&m);
            let ks = keys(40_000, seed);
            let fair = ks.len() as f64 / k as f64;
            for (node, count) in primary_share(&ring, &ks) {
                let dev = (count as f64 - fair).abs() / fair;
                prop_assert!(dev <= 0.10, "{node}: {count} vs fair {fair:.0} ({:.1}%)", dev * 100.0);
            }
        }

        #[test]
        fn weights_are_respected(seed: u64) {
            let m = map(&[("a", "z", 1000), ("b", "z", 2000), ("c", "z", 1000)]);
            let ring = Ring::new(&m);
            let ks = keys(40_000, seed);
            let share = primary_share(&ring, &ks);
            let b = share["b"] as f64 / ks.len() as f64;
            prop_assert!((b - 0.5).abs() < 0.05, "b got {b}");
        }

        #[test]
        fn adding_a_node_moves_little_and_only_to_it(k in 3usize..9, zones in 1usize..4, seed: u64) {
            let names: Vec<String> = (0..=k).map(|i| format!("n{seed}-{i}")).collect();
            let zone_names: Vec<String> = (0..=k).map(|i| format!("z{}", i % zones)).collect();
            let all: Vec<(&str, &str, u32)> = names
                .iter()
                .zip(&zone_names)
                .map(|(n, z)| (n.as_str(), z.as_str(), DEFAULT_WEIGHT))
                .collect();
            let before = Ring::new(&map(&all[..k]));
            let after = Ring::new(&map(&all));
            let newcomer = &names[k];
            let ks = keys(20_000, seed);
            let n = DEFAULT_REPLICAS;
            let mut moved = 0usize;
            for key in &ks {
                let old: Vec<&str> = before.placement(key, n).0.iter().map(|e| e.id.as_str()).collect();
                let new: Vec<&str> = after.placement(key, n).0.iter().map(|e| e.id.as_str()).collect();
                for id in new.iter().filter(|id| !old.contains(id)) {
                    prop_assert_eq!(*id, newcomer.as_str(), "a copy moved to an old node");
                    moved += 1;
                }
            }
            let fraction = moved as f64 / (ks.len() * n) as f64;
            let ideal = 1.0 / (k + 1) as f64;
            prop_assert!(fraction <= 1.1 * ideal, "moved {fraction:.4} > 1.1 x {ideal:.4}");
        }

        #[test]
        fn replica_sets_span_zones(zones in 1usize..5, per_zone in 1usize..4, seed: u64) {
            let mut nodes = Vec::new();
            for z in 0..zones {
                for i in 0..per_zone {
                    nodes.push((format!("n{z}-{i}"), format!("z{z}")));
                }
            }
            let m = map(&nodes.iter().map(|(n, z)| (n.as_str(), z.as_str(), 200)).collect::<Vec<_>>());
            let ring = Ring::new(&m);
            let n = DEFAULT_REPLICAS.min(nodes.len());
            for key in keys(2_000, seed) {
                let set = ring.placement(&key, DEFAULT_REPLICAS).0;
                prop_assert_eq!(set.len(), n);
                let mut z: Vec<&str> = set.iter().map(|e| e.zone.as_str()).collect();
                z.sort();
                z.dedup();
                prop_assert_eq!(z.len(), n.min(zones));
            }
        }
    }
}
