//! Calls to one peer gathered into batches: record writes (group commit from the
//! caller down to the node's write-ahead log) and record reads.
//!
//! A small object's PUT is one record write to each of N nodes, and its uncached GET a
//! record read from R of them. Sent one by one, every record costs each node an HTTP
//! exchange and a hand-off to a blocking thread (and a write a RocksDB write of its
//! own), and both sides spend more in the kernel's socket and wake-up paths than on the
//! record: writes were CPU-bound at ~2k objects/s on a 2-core machine however many
//! clients wrote, reads at ~7k/s. Here what is offered to a peer while a kind's
//! [`BatchKind::IN_FLIGHT`] batches are already on their way waits, and leaves together
//! in the next batch (`POST /v1/records`, stored in one synced write; `POST
//! /v1/record-reads`, read in one pass). Nothing waits for a batch to fill: what is
//! offered to an idle peer leaves at once, so a lone call's latency is what it was,
//! and the batches grow only as fast as the node falls behind. Each caller still gets
//! its own answer (for a write: applied, kept, or its own error).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::client::{NodeClient, PutRecordReply, RecordName};
use crate::record::EncodedRecord;
use crate::{Error, Result};

/// Record write batches on their way to one peer at a time. Two: while the node syncs
/// one, the next gathers what arrives meanwhile and is already sent, so the node's disk
/// never idles between batches; more would only split the waiting records into smaller
/// batches.
pub const RECORD_BATCHES_IN_FLIGHT: usize = 2;

/// Most records in one write batch. Bounds how long one batch holds the node's record
/// locks and how much one failed request fails at once; at 4 KiB objects' records
/// (~4.4 KB packed) a full batch is ~1.1 MB.
pub const RECORD_BATCH_MAX_RECORDS: usize = 256;

/// Most bytes of records in one write batch; a larger record is sent in a batch of its
/// own.
pub const RECORD_BATCH_MAX_BYTES: usize = 2 << 20;

/// Most records waiting for one peer, per kind; past it a call is refused at once
/// ([`Error::Backlogged`]: that replica's write or read fails, the others may still
/// make the quorum, and for a write catch-up brings the copy later). A hung node would
/// otherwise collect every call for the length of a timeout: at 5k PUTs/s and 30 s,
/// 150k records. 8192 is ~30 full write batches, ~45 MB of 4 KiB objects' records.
pub const RECORD_QUEUE_MAX: usize = 8192;

/// Record read batches on their way to one peer at a time. One: a read batch costs the
/// node no sync, so what the gateway saves is exchanges, and the fewer batches are in
/// flight the more reads each carries. Measured with 4 KiB GETs, both caches off, on
/// this 2-core machine: 1 → 9.6–12.6k GETs/s at 16 conns, 14–21k at 64; 2 → 8.3–9.8k
/// and 13–17k; 4 → 7.5k and 15k; 8 → 6.0k and 13k. A read waits for at most the
/// batch ahead of it; a batch stalled on a slow node is what read hedging is for
/// (the record read asks another replica after the hedge delay).
pub const RECORD_READ_BATCHES_IN_FLIGHT: usize = 1;

/// Most records in one read batch: an answer of 4 KiB objects' records is ~350 KB.
pub const RECORD_READ_BATCH_MAX: usize = 64;

/// One kind of call to a peer that can travel in batches.
pub trait BatchKind: Send + Sync + 'static {
    /// What one caller offers.
    type Item: Send + 'static;
    /// What one caller gets back.
    type Reply: Send + 'static;
    /// Batches on their way to one peer at a time.
    const IN_FLIGHT: usize;
    /// Most items in one batch.
    const MAX_ITEMS: usize;
    /// Most bytes of items in one batch (an item larger goes alone).
    const MAX_BYTES: usize;
    /// The bytes `item` adds to a batch.
    fn bytes(item: &Self::Item) -> usize;
    /// Sends `items` to the peer `client` calls; each one's outcome, in order.
    fn send(
        client: &NodeClient,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = Result<Vec<Result<Self::Reply>>>> + Send;
}

/// Record writes, each a record as stored: header and body (`POST /v1/records`).
#[derive(Debug)]
pub struct RecordWrites;

impl BatchKind for RecordWrites {
    type Item = Bytes;
    type Reply = PutRecordReply;
    const IN_FLIGHT: usize = RECORD_BATCHES_IN_FLIGHT;
    const MAX_ITEMS: usize = RECORD_BATCH_MAX_RECORDS;
    const MAX_BYTES: usize = RECORD_BATCH_MAX_BYTES;

    fn bytes(item: &Bytes) -> usize {
        item.len()
    }

    async fn send(client: &NodeClient, items: Vec<Bytes>) -> Result<Vec<Result<PutRecordReply>>> {
        client.put_records(&items).await
    }
}

/// Record reads (`POST /v1/record-reads`).
#[derive(Debug)]
pub struct RecordReads;

impl BatchKind for RecordReads {
    type Item = RecordName;
    type Reply = Option<EncodedRecord>;
    const IN_FLIGHT: usize = RECORD_READ_BATCHES_IN_FLIGHT;
    const MAX_ITEMS: usize = RECORD_READ_BATCH_MAX;
    const MAX_BYTES: usize = usize::MAX;

    fn bytes(item: &RecordName) -> usize {
        item.bucket.len() + item.key.len()
    }

    async fn send(
        client: &NodeClient,
        items: Vec<RecordName>,
    ) -> Result<Vec<Result<Option<EncodedRecord>>>> {
        Ok(client
            .get_records(&items)
            .await?
            .into_iter()
            .map(Ok)
            .collect())
    }
}

/// Record writes to one peer, in batches.
pub type RecordBatcher = Batcher<RecordWrites>;

/// Record reads from one peer, in batches.
pub type RecordReadBatcher = Batcher<RecordReads>;

type Answer<K> = oneshot::Sender<Result<<K as BatchKind>::Reply>>;
type Waiting<K> = (<K as BatchKind>::Item, Answer<K>);

/// The calls of one kind waiting for one peer, and how many batches are on their way.
pub struct Batcher<K: BatchKind> {
    state: Arc<Mutex<Queue<K>>>,
    /// The peer's id, for errors.
    node: String,
    /// When a batch is given up.
    timeout: Duration,
}

impl<K: BatchKind> std::fmt::Debug for Batcher<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Batcher")
            .field("node", &self.node)
            .field("waiting", &q.waiting.len())
            .field("in_flight", &q.in_flight)
            .finish()
    }
}

struct Queue<K: BatchKind> {
    waiting: VecDeque<Waiting<K>>,
    in_flight: usize,
}

impl<K: BatchKind> Default for Queue<K> {
    fn default() -> Self {
        Self {
            waiting: VecDeque::new(),
            in_flight: 0,
        }
    }
}

impl<K: BatchKind> Queue<K> {
    /// The next batch: the oldest items whose callers still wait, within the limits
    /// (at least one, if any is waiting).
    fn take(&mut self) -> Vec<Waiting<K>> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some((item, answer)) = self.waiting.front() {
            if answer.is_closed() {
                self.waiting.pop_front();
                continue;
            }
            let size = K::bytes(item);
            let full =
                batch.len() >= K::MAX_ITEMS || (!batch.is_empty() && bytes + size > K::MAX_BYTES);
            if full {
                break;
            }
            bytes += size;
            batch.extend(self.waiting.pop_front());
        }
        batch
    }
}

impl<K: BatchKind> Batcher<K> {
    /// Nothing waiting for peer `node`, whose batches are given up after `timeout`.
    pub fn new(node: &str, timeout: Duration) -> Self {
        Self {
            state: Arc::default(),
            node: node.to_string(),
            timeout,
        }
    }

    /// How many calls wait for a batch (not counting those on their way).
    pub fn waiting(&self) -> usize {
        let q = self.state.lock().unwrap_or_else(|e| e.into_inner());
        q.waiting.len()
    }

    /// Offers `item` to the peer `client` calls, in the next batch; its outcome. A
    /// caller that stops waiting before its batch leaves takes its item out; once sent,
    /// the item stays in its batch.
    pub async fn call(&self, client: &NodeClient, item: K::Item) -> Result<K::Reply> {
        let (tx, rx) = oneshot::channel();
        let batch = {
            let mut q = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if q.waiting.len() >= RECORD_QUEUE_MAX {
                return Err(Error::Backlogged {
                    node: self.node.clone(),
                    waiting: q.waiting.len(),
                });
            }
            q.waiting.push_back((item, tx));
            (q.in_flight < K::IN_FLIGHT).then(|| {
                q.in_flight += 1;
                q.take()
            })
        };
        if let Some(batch) = batch {
            let sender = Sender {
                state: self.state.clone(),
                client: client.clone(),
                node: self.node.clone(),
                timeout: self.timeout,
            };
            tokio::spawn(sender.run(batch));
        }
        rx.await
            .map_err(|_| Error::BatchAnswer("the batch ended without an answer".into()))?
    }
}

/// Sends batches to one peer until none is waiting (a task of its own, so that a
/// caller that stops waiting never cancels the others' items).
struct Sender<K: BatchKind> {
    state: Arc<Mutex<Queue<K>>>,
    client: NodeClient,
    node: String,
    timeout: Duration,
}

impl<K: BatchKind> Sender<K> {
    async fn run(self, mut batch: Vec<Waiting<K>>) {
        loop {
            if !batch.is_empty() {
                self.send(batch).await;
            }
            let mut q = self.state.lock().unwrap_or_else(|e| e.into_inner());
            batch = q.take();
            if batch.is_empty() {
                q.in_flight -= 1;
                return;
            }
        }
    }

    async fn send(&self, batch: Vec<Waiting<K>>) {
        let (items, answers): (Vec<K::Item>, Vec<Answer<K>>) = batch.into_iter().unzip();
        let outcome = tokio::time::timeout(self.timeout, K::send(&self.client, items))
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    node: self.node.clone(),
                    after: self.timeout,
                })
            });
        match outcome {
            Ok(each) => {
                for (answer, result) in answers.into_iter().zip(each) {
                    let _ = answer.send(result);
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for answer in answers {
                    let _ = answer.send(Err(Error::Shared(e.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(
        q: &mut Queue<RecordWrites>,
        json: &'static [u8],
    ) -> oneshot::Receiver<Result<PutRecordReply>> {
        let (tx, rx) = oneshot::channel();
        q.waiting.push_back((Bytes::from_static(json), tx));
        rx
    }

    #[test]
    fn a_batch_skips_records_whose_callers_left_and_keeps_its_limits() {
        let mut q = Queue::<RecordWrites>::default();
        let gone = offer(&mut q, b"gone");
        let kept: Vec<_> = (0..RECORD_BATCH_MAX_RECORDS + 1)
            .map(|_| offer(&mut q, b"{}"))
            .collect();
        drop(gone);
        let batch = q.take();
        assert_eq!(batch.len(), RECORD_BATCH_MAX_RECORDS);
        assert!(batch.iter().all(|(json, _)| &json[..] == b"{}"));
        assert_eq!(q.take().len(), 1, "the one over the limit is next");
        assert!(q.take().is_empty());
        drop(kept);
    }

    #[test]
    fn a_record_larger_than_a_batch_goes_alone() {
        static BIG: [u8; RECORD_BATCH_MAX_BYTES] = [b' '; RECORD_BATCH_MAX_BYTES];
        let mut q = Queue::<RecordWrites>::default();
        let _a = offer(&mut q, b"{}");
        let _b = offer(&mut q, &BIG);
        let _c = offer(&mut q, &BIG);
        assert_eq!(q.take().len(), 1, "small then big: over the limit together");
        assert_eq!(q.take().len(), 1);
        assert_eq!(q.take().len(), 1);
    }

    /// A peer that accepts connections and never answers: every batch to it hangs.
    async fn hung_peer() -> (tokio::net::TcpListener, NodeClient) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        (l, NodeClient::new(&url, "secret").unwrap())
    }

    #[tokio::test]
    async fn a_hung_peer_collects_at_most_the_queue_bound() {
        let (_listener, client) = hung_peer().await;
        let b = Arc::new(RecordBatcher::new("hung", Duration::from_secs(3600)));
        let waiting = RECORD_BATCHES_IN_FLIGHT + RECORD_QUEUE_MAX;
        let callers: Vec<_> = (0..waiting)
            .map(|_| {
                let (b, client) = (b.clone(), client.clone());
                tokio::spawn(async move { b.call(&client, Bytes::from_static(b"{}")).await })
            })
            .collect();
        // Until every caller has offered: two batches hang, the rest wait.
        loop {
            let queued = b.state.lock().unwrap().waiting.len();
            if queued == RECORD_QUEUE_MAX {
                break;
            }
            tokio::task::yield_now().await;
        }
        let refused = b.call(&client, Bytes::from_static(b"{}")).await;
        assert!(
            matches!(refused, Err(Error::Backlogged { waiting, .. }) if waiting == RECORD_QUEUE_MAX),
            "{refused:?}"
        );
        for c in &callers {
            assert!(!c.is_finished());
        }
        for c in callers {
            c.abort();
        }
    }
}
