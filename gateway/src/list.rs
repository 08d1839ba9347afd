//! Listing merged across nodes. Every node lists its own records (tombstones included);
//! pages are merged by key, the newest version of each key wins, and tombstones are
//! dropped. A page is only trusted up to the smallest last key among nodes whose page
//! was cut short, so a key no node has shown yet can never be skipped.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use futures::future::join_all;
use kura_cluster::names::check_bucket;
use kura_cluster::record::ObjectRecord;
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::error::{GatewayError, Result};
use crate::http::MAX_LIST_LIMIT;
use crate::Gateway;

/// What [`merged`] returns of each record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Everything but the chunk list (empty): for listings. Never written back.
    Summary,
    /// Whole records, chunk lists included (multipart parts to assemble).
    Full,
}

/// Lists live objects of `bucket` under `prefix` after `after`, at most `limit`.
pub async fn merged(
    cluster: &Cluster,
    bucket: &str,
    (prefix, after): (&str, Option<&str>),
    limit: usize,
    detail: Detail,
) -> Result<(Vec<ObjectRecord>, Option<String>)> {
    let all = cluster.all_nodes();
    let total = all.len();
    // Each key lives on N nodes, so with fewer than N nodes down every key is seen.
    let needed = total.saturating_sub(cluster.replication.n - 1).max(1);
    // Nodes believed down are left out while enough others remain: a hung node then costs
    // one timeout (until the prober marks it down), not one per listing.
    let up: Vec<_> = all.iter().filter(|n| n.health.is_up()).cloned().collect();
    let nodes = if up.len() >= needed { up } else { all };
    let summary = detail == Detail::Summary;
    let pages = join_all(nodes.iter().map(|n| async move {
        let list = n
            .client
            .list_records(bucket, prefix, after, limit, true, summary);
        (n, cluster.peers.call(n, "record_list", list).await)
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

/// One listing request, whichever version asked.
pub struct Walk<'a> {
    /// Bucket.
    pub bucket: &'a str,
    /// Only keys starting with this.
    pub prefix: &'a str,
    /// Rolls up the keys below `prefix` + anything + this into one common prefix.
    pub delimiter: Option<&'a str>,
    /// Exclusive: only keys (and common prefixes) after this one.
    pub after: Option<String>,
    /// Most entries (keys and common prefixes) returned.
    pub max_keys: usize,
}

/// What one page of the walk found.
#[derive(Default)]
pub struct Found {
    /// Live objects, in key order.
    pub objects: Vec<ObjectRecord>,
    /// Common prefixes, in order.
    pub prefixes: Vec<String>,
    /// The last key or common prefix returned, when more remain.
    pub next: Option<String>,
}

/// The smallest string greater than every key that starts with `p` (keys are UTF-8
/// and `char::MAX` sorts after every character a key can hold).
fn past(p: &str) -> String {
    format!("{p}{}", char::MAX)
}

/// One page of a listing: up to `max_keys` keys and common prefixes after `after`. A
/// delimiter folds every key below a common prefix into one entry, and the walk then
/// jumps past that prefix (it lists from just after the prefix's last possible key), so a
/// "folder" of a million keys costs one page, not a million keys.
pub async fn walk(gw: &Arc<Gateway>, w: Walk<'_>) -> Result<Found> {
    let mut found = Found::default();
    let mut after = w.after.clone();
    let mut count = 0;
    loop {
        let want = (w.max_keys - count + 1).min(MAX_LIST_LIMIT);
        let (page, more) = merged(
            &gw.cluster,
            w.bucket,
            (w.prefix, after.as_deref()),
            want,
            Detail::Summary,
        )
        .await?;
        let mut jumped = false;
        for record in page {
            if count == w.max_keys {
                // One more entry exists: the page is truncated at the last one returned.
                return Ok(found);
            }
            let rest = &record.key[w.prefix.len()..];
            let folded = w.delimiter.filter(|d| !d.is_empty()).and_then(|d| {
                rest.find(d)
                    .map(|i| &record.key[..w.prefix.len() + i + d.len()])
            });
            match folded {
                Some(common) => {
                    let common = common.to_string();
                    after = Some(past(&common));
                    // Resuming after this very prefix (the previous page ended on it):
                    // its keys sort after the marker but were already rolled up.
                    if w.after.as_deref().is_some_and(|a| common.as_str() <= a) {
                        jumped = true;
                        break;
                    }
                    found.prefixes.push(common.clone());
                    found.next = Some(common);
                    count += 1;
                    jumped = true;
                    break;
                }
                None => {
                    after = Some(record.key.clone());
                    found.next = Some(record.key.clone());
                    found.objects.push(record);
                    count += 1;
                }
            }
        }
        if !jumped && more.is_none() {
            found.next = None;
            return Ok(found);
        }
        if !jumped {
            after = more;
        }
    }
}

// ---- The native listing (`GET /v1/o/{bucket}`) ----

/// The query of a native listing.
#[derive(Deserialize)]
pub struct ListQuery {
    /// Only keys starting with this.
    #[serde(default)]
    pub prefix: String,
    /// Only keys (and common prefixes) after this one (a page's `next_after`).
    pub after: Option<String>,
    /// Most entries returned (1..=`MAX_LIST_LIMIT`).
    pub limit: Option<usize>,
    /// Rolls keys up into common prefixes at this string (usually `/`).
    pub delimiter: Option<String>,
}

/// One object in a listing.
#[derive(Serialize)]
pub struct ListedObject {
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// blake3 hex.
    pub etag: String,
    /// Media type, if given at upload.
    pub content_type: Option<String>,
    /// Last modification, RFC 3339-ish milliseconds since the epoch.
    pub last_modified_ms: u64,
}

/// A listing page.
#[derive(Serialize)]
pub struct ListReply {
    /// Bucket.
    pub bucket: String,
    /// Prefix asked for.
    pub prefix: String,
    /// Objects in key order.
    pub objects: Vec<ListedObject>,
    /// With a delimiter: the common prefixes ("folders"), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    /// Pass as `after` for the next page; absent at the end.
    pub next_after: Option<String>,
}

/// `GET /v1/o/{bucket}?prefix=&after=&limit=&delimiter=`.
pub async fn list_objects(
    State(gw): State<Arc<Gateway>>,
    Path(bucket): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListReply>> {
    check_bucket(&bucket)?;
    let limit = q.limit.unwrap_or(MAX_LIST_LIMIT);
    if limit == 0 || limit > MAX_LIST_LIMIT {
        return Err(GatewayError::BadRequest(format!(
            "limit must be 1..={MAX_LIST_LIMIT}"
        )));
    }
    let found = walk(
        &gw,
        Walk {
            bucket: &bucket,
            prefix: &q.prefix,
            delimiter: q.delimiter.as_deref(),
            after: q.after.clone(),
            max_keys: limit,
        },
    )
    .await?;
    let objects = found
        .objects
        .into_iter()
        .map(|r| ListedObject {
            key: r.key,
            size: r.size,
            etag: r.etag,
            content_type: r.content_type,
            last_modified_ms: r.ts.ms,
        })
        .collect();
    Ok(Json(ListReply {
        bucket,
        prefix: q.prefix,
        objects,
        prefixes: found.prefixes,
        next_after: found.next,
    }))
}
