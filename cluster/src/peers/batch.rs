//! Record writes to one peer, gathered into batches: group commit from the caller down
//! to the node's write-ahead log.
//!
//! A small object's PUT is one record write to each of N nodes. Sent one by one, every
//! record costs each node an HTTP exchange, a hand-off to a blocking thread and a
//! RocksDB write of its own (the WAL sync is already shared), and the writes were
//! CPU-bound at ~2k objects/s on a 2-core machine however many clients wrote. Here the
//! records offered to a peer while [`RECORD_BATCHES_IN_FLIGHT`] batches are already on
//! their way wait, and leave together in the next batch (`POST /v1/records`), which the
//! node stores in one synced write. Nothing waits for a batch to fill: a record offered
//! to an idle peer leaves at once, so a lone write's latency is what it was, and the
//! batches grow only as fast as the node falls behind. Each record's caller still gets
//! its own answer (applied, kept, or its own error).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::client::{NodeClient, PutRecordReply};
use crate::{Error, Result};

/// Batches on their way to one peer at a time. Two: while the node syncs one, the
/// next gathers what arrives meanwhile and is already sent, so the node's disk never
/// idles between batches; more would only split the waiting records into smaller
/// batches.
pub const RECORD_BATCHES_IN_FLIGHT: usize = 2;

/// Most records in one batch. Bounds how long one batch holds the node's record locks
/// and how much one failed request fails at once; at 4 KiB objects' records (~5.5 KB
/// of JSON) a full batch is ~1.4 MB.
pub const RECORD_BATCH_MAX_RECORDS: usize = 256;

/// Most bytes of records in one batch; a larger record is sent in a batch of its own.
pub const RECORD_BATCH_MAX_BYTES: usize = 2 << 20;

/// Most records waiting for one peer; past it a record is refused at once
/// ([`Error::Backlogged`]: that replica's write fails, the others may still make the
/// quorum, and catch-up brings the copy later). A hung node would otherwise collect
/// every write for the length of a timeout: at 5k PUTs/s and 30 s, 150k records.
/// 8192 is ~30 full batches, ~45 MB of 4 KiB objects' records.
pub const RECORD_QUEUE_MAX: usize = 8192;

type Answer = oneshot::Sender<Result<PutRecordReply>>;

/// The records waiting for one peer, and how many batches are on their way.
#[derive(Debug)]
pub struct RecordBatcher {
    state: Arc<Mutex<Queue>>,
    /// The peer's id, for errors.
    node: String,
    /// When a batch is given up.
    timeout: Duration,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<(Bytes, Answer)>,
    in_flight: usize,
}

impl Queue {
    /// The next batch: the oldest records whose callers still wait, within the limits
    /// (at least one, if any is waiting).
    fn take(&mut self) -> Vec<(Bytes, Answer)> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some((json, answer)) = self.waiting.front() {
            if answer.is_closed() {
                self.waiting.pop_front();
                continue;
            }
            let full = batch.len() >= RECORD_BATCH_MAX_RECORDS
                || (!batch.is_empty() && bytes + json.len() > RECORD_BATCH_MAX_BYTES);
            if full {
                break;
            }
            bytes += json.len();
            batch.extend(self.waiting.pop_front());
        }
        batch
    }
}

impl RecordBatcher {
    /// No records waiting for peer `node`, whose batches are given up after `timeout`.
    pub fn new(node: &str, timeout: Duration) -> Self {
        Self {
            state: Arc::default(),
            node: node.to_string(),
            timeout,
        }
    }

    /// Offers `record` (its JSON) to the peer `client` calls, in the next batch; its
    /// outcome. A caller that stops waiting before its batch leaves takes its record
    /// out; once sent, the record stays in its batch.
    pub async fn put(&self, client: &NodeClient, record: Bytes) -> Result<PutRecordReply> {
        let (tx, rx) = oneshot::channel();
        let batch = {
            let mut q = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if q.waiting.len() >= RECORD_QUEUE_MAX {
                return Err(Error::Backlogged {
                    node: self.node.clone(),
                    waiting: q.waiting.len(),
                });
            }
            q.waiting.push_back((record, tx));
            (q.in_flight < RECORD_BATCHES_IN_FLIGHT).then(|| {
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
/// caller that stops waiting never cancels the others' records).
struct Sender {
    state: Arc<Mutex<Queue>>,
    client: NodeClient,
    node: String,
    timeout: Duration,
}

impl Sender {
    async fn run(self, mut batch: Vec<(Bytes, Answer)>) {
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

    async fn send(&self, batch: Vec<(Bytes, Answer)>) {
        let (records, answers): (Vec<Bytes>, Vec<Answer>) = batch.into_iter().unzip();
        let outcome = tokio::time::timeout(self.timeout, self.client.put_records(&records))
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

    fn offer(q: &mut Queue, json: &'static [u8]) -> oneshot::Receiver<Result<PutRecordReply>> {
        let (tx, rx) = oneshot::channel();
        q.waiting.push_back((Bytes::from_static(json), tx));
        rx
    }

    #[test]
    fn a_batch_skips_records_whose_callers_left_and_keeps_its_limits() {
        let mut q = Queue::default();
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
        let mut q = Queue::default();
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
                tokio::spawn(async move { b.put(&client, Bytes::from_static(b"{}")).await })
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
        let refused = b.put(&client, Bytes::from_static(b"{}")).await;
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
