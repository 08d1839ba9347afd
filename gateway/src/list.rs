//! Listing merged across nodes. Every node lists its own records (tombstones included);
//! pages are merged by key, the newest version of each key wins, and tombstones are
//! dropped. A page is only trusted up to the smallest last key among nodes whose page
//! was cut short, so a key no node has shown yet can never be skipped.

use std::collections::BTreeMap;

use futures::future::join_all;
use kura_cluster::record::ObjectRecord;

use crate::cluster::Cluster;
use crate::error::{GatewayError, Result};

/// Lists live objects of `bucket` under `prefix` after `after`, at most `limit`.
pub async fn merged(
    cluster: &Cluster,
    bucket: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<ObjectRecord>, Option<String>)> {
    let all = cluster.all_nodes();
    let total = all.len();
    // Each key lives on N nodes, so with fewer than N nodes down every key is seen.
    let needed = total.saturating_sub(cluster.replication.n - 1).max(1);
    // Nodes believed down are left out while enough others remain: a hung node then costs
    // one timeout (until the prober marks it down), not one per listing.
    let up: Vec<_> = all.iter().filter(|n| n.health.is_up()).cloned().collect();
    let nodes = if up.len() >= needed { up } else { all };
    let pages = join_all(nodes.iter().map(|n| async move {
        (
            n,
            n.client
                .list_records(bucket, prefix, after, limit, true)
                .await,
        )
    }))
    .await;
    let mut newest: BTreeMap<String, ObjectRecord> = BTreeMap::new();
    let mut cutoff: Option<String> = None;
    let mut answered = 0;
    for (node, page) in pages {
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(node = %node.entry.id, error = %e, "listing: node unavailable");
                continue;
            }
        };
        answered += 1;
        if let Some(last) = page.next_after {
            if cutoff.as_ref().is_none_or(|c| last < *c) {
                cutoff = Some(last);
            }
        }
        for r in page.records {
            match newest.get(&r.key) {
                Some(cur) if cur.ts >= r.ts => {}
                _ => {
                    newest.insert(r.key.clone(), r);
                }
            }
        }
    }
    if answered < needed {
        return Err(GatewayError::Unavailable(format!(
            "listing: {answered} of {total} nodes answered"
        )));
    }
    let mut out = Vec::new();
    let mut last_seen: Option<String> = None;
    for (key, rec) in newest {
        if cutoff.as_ref().is_some_and(|c| key > *c) {
            break;
        }
        last_seen = Some(key);
        if !rec.deleted {
            out.push(rec);
            if out.len() == limit {
                break;
            }
        }
    }
    let next = if out.len() == limit || cutoff.is_some() {
        last_seen
    } else {
        None
    };
    Ok((out, next))
}
