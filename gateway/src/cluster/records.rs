//! Record reads: the record cache first (see `crate::cache`), else a read quorum of
//! replicas with hedging; stale replicas are repaired in the background.

use std::sync::Arc;

use futures::StreamExt;
use kura_cluster::client::RecordName;
use kura_cluster::hlc::Timestamp;
use kura_cluster::peers::Plan;
use kura_cluster::record::{EncodedRecord, ObjectRecord};
use kura_cluster::ring::record_key;

use super::{Cluster, Peer};
use crate::cache::{CachedRecord, Flight};
use crate::error::{GatewayError, Result};
use prometheus_client::metrics::gauge::Gauge;

impl Cluster {
    /// The record of `bucket/key` (tombstones included), or `None`: from the record
    /// cache when it holds a fresh entry, else by [`Cluster::read_record`] — one read
    /// for all the requests that miss the key while it is in flight.
    pub async fn get_record(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Arc<ObjectRecord>>> {
        if let Some(hit) = self.record_cache.get(bucket, key) {
            self.metrics.record_cache_hits.inc();
            if hit.refresh {
                self.refresh_record(bucket, key);
            }
            return Ok(hit.found);
        }
        if !self.record_cache.enabled() {
            return self.get_record_fresh(bucket, key).await;
        }
        match self.record_cache.flight(bucket, key) {
            Flight::Join(landing) => match self.wait_for(landing).await {
                Some(found) => {
                    self.metrics.record_reads_shared.inc();
                    Ok(found)
                }
                None => self.get_record_fresh(bucket, key).await,
            },
            Flight::Lead(lead) => {
                let found = self.get_record_fresh(bucket, key).await?;
                lead.publish(&found);
                Ok(found)
            }
        }
    }

    /// Reads `bucket/key` again in the background, for the requests after this one (a
    /// hit found its entry past its refresh point, `crate::cache::Hit::refresh`), as the
    /// leader of the key's flight: a request that misses meanwhile waits for this read
    /// instead of starting another. A failed refresh changes nothing (the entry
    /// expires as it would have).
    fn refresh_record(self: &Arc<Self>, bucket: &str, key: &str) {
        let (cluster, bucket, key) = (self.clone(), bucket.to_owned(), key.to_owned());
        tokio::spawn(async move {
            let Flight::Lead(lead) = cluster.record_cache.flight(&bucket, &key) else {
                return;
            };
            match cluster.read_and_offer(&bucket, &key).await {
                Ok(found) => {
                    lead.publish(&found);
                    cluster.metrics.record_refreshes.inc();
                }
                Err(e) => tracing::debug!(error = %e, %bucket, %key, "record refresh failed"),
            }
        });
    }

    /// The answer of another request's read (see [`Flight`]), counted in
    /// `record_reads_waiting` while awaited (also when the request is dropped meanwhile).
    async fn wait_for(&self, landing: crate::cache::Landing) -> Option<CachedRecord> {
        struct Waiting(Gauge);
        impl Drop for Waiting {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        let gauge = self.metrics.record_reads_waiting.clone();
        gauge.inc();
        let _waiting = Waiting(gauge);
        Flight::landed(landing).await
    }

    /// A quorum read of `bucket/key` whatever the cache holds (a client's
    /// `Cache-Control: no-cache`); the cache learns the answer.
    pub async fn get_record_fresh(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Arc<ObjectRecord>>> {
        self.metrics.record_cache_misses.inc();
        self.read_and_offer(bucket, key).await
    }

    /// A quorum read of `bucket/key`, offered to the cache.
    async fn read_and_offer(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Arc<ObjectRecord>>> {
        let found = self.read_record(bucket, key).await?.map(Arc::new);
        self.record_cache.offer(bucket, key, &found);
        Ok(found)
    }

    /// The newest record of `bucket/key` among R replicas (tombstones included), or
    /// `None`, bypassing the cache, its inline content verified. Replicas found stale
    /// are repaired in the background.
    pub async fn read_record(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectRecord>> {
        let (chosen, rest) = self.read_placement(&record_key(bucket, key));
        let need = self.replication.r.min(chosen.len().max(1));
        let owners: Vec<String> = chosen.iter().map(|n| n.entry.id.clone()).collect();
        let mut order = self.read_order(chosen);
        order.extend(self.read_order(rest));
        // Ask only as many replicas as the read quorum needs (W + R > N still holds); a
        // replica that fails is replaced by the next one, and one slower than the
        // hedging budget (hung, overloaded) gets company: one bad node never stalls a read.
        // Each replica is asked in its next record read batch (`Peer::get_record`).
        let name = RecordName::new(bucket, key);
        let plan = Plan::quorum_read(order.len(), need);
        let replies = self
            .peers
            .replicated(&order, plan, self.hedge.delay(), "record_get", |node| {
                let name = name.clone();
                async move { node.get_record(name).await }
            })
            .await;
        for (node, e) in &replies.failed {
            tracing::warn!(node = %node.entry.id, error = %e, "record read failed");
        }
        let answers: Vec<(Arc<Peer>, Option<EncodedRecord>)> =
            replies.ok.into_iter().map(|r| (r.peer, r.value)).collect();
        if answers.len() < need {
            return Err(GatewayError::Unavailable(format!(
                "record {bucket}/{key}: {} of {need} replicas answered",
                answers.len()
            )));
        }
        let Some(newest) = newest_decoded(&answers) else {
            return Ok(None);
        };
        let (newest, newest_stored) = newest.map_err(|source| GatewayError::DamagedRecord {
            name: format!("{bucket}/{key}"),
            source,
        })?;
        self.clock.observe(newest.ts);
        let stamps: Vec<_> = answers
            .into_iter()
            .map(|(node, r)| (node, r.map(|r| r.ts)))
            .collect();
        let stale = |(node, ts): &(Arc<Peer>, Option<Timestamp>)| {
            owners.contains(&node.entry.id) && ts.is_none_or(|ts| ts < newest.ts)
        };
        if replies.rest.is_empty() && !stamps.iter().any(stale) {
            // Nothing to mend and no answer to wait for: no task (the usual read).
            return Ok(Some(newest));
        }
        let late = replies
            .rest
            .map(|(node, _, result)| (node, result.map(|r| r.map(|r| r.ts))));
        self.repair_records((newest.ts, newest_stored), owners, stamps, late);
        Ok(Some(newest))
    }

    /// Writes the newest record (its timestamp, and its bytes as the replica that held
    /// it sent them: fields this gateway does not know survive) to every replica (one of
    /// `owners`) that answered with an older record or none, including those that
    /// answer after the quorum was met, each in its next record batch. Fallbacks asked
    /// because an owner failed (a previous owner that handed the record off, any other
    /// node) are left alone: a copy written there would sit outside the record's
    /// placement until the next rebalance.
    fn repair_records<S>(
        self: &Arc<Self>,
        (newest, stored): (Timestamp, bytes::Bytes),
        owners: Vec<String>,
        answered: Vec<(Arc<Peer>, Option<Timestamp>)>,
        late: S,
    ) where
        S: futures::Stream<Item = (Arc<Peer>, kura_cluster::Result<Option<Timestamp>>)>
            + Send
            + 'static,
    {
        let this = self.clone();
        tokio::spawn(async move {
            let late: Vec<_> = late
                .filter_map(|(n, r)| async move { r.ok().map(|r| (n, r)) })
                .collect()
                .await;
            for (node, rec) in answered.into_iter().chain(late) {
                if !owners.contains(&node.entry.id) {
                    continue;
                }
                if rec.is_none_or(|ts| ts < newest) {
                    this.metrics.record_repairs.inc();
                    let (n, stored) = (node.clone(), stored.clone());
                    let put = async move { n.put_record(stored).await };
                    if let Err(e) = this.peers.call(&node, "record_repair", put).await {
                        tracing::warn!(node = %node.entry.id, error = %e, "record repair failed");
                    }
                }
            }
        });
    }
}

/// The newest answer of a quorum read, decoded in full (the others only had their
/// timestamps read), with its stored bytes; `None` when no replica holds a record. Its
/// body must carry the timestamp its header gave (see [`EncodedRecord::decode`]), and
/// its inline content, if any, must hash to its etag: this is where a small object's
/// bytes are verified, once per read from the nodes rather than once per request
/// served from the record cache (see `download::object_body`).
fn newest_decoded(
    answers: &[(Arc<Peer>, Option<EncodedRecord>)],
) -> Option<kura_cluster::Result<(ObjectRecord, bytes::Bytes)>> {
    let newest = answers
        .iter()
        .filter_map(|(_, r)| r.as_ref())
        .max_by_key(|r| r.ts)?;
    let verified = |r: ObjectRecord| {
        r.verified_inline()?;
        Ok((r, newest.stored().clone()))
    };
    Some(newest.decode().and_then(verified))
}
