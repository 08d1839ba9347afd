//! The driver of replicated calls, with calls that never touch the network (their
//! answers and delays are chosen per peer) and tokio's paused clock: what is asked,
//! when, and what comes back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use super::*;
use crate::map::{ClusterMap, NodeEntry, NodeState};

/// Peers `n0..n{k-1}` (addresses nobody listens on: the calls below never use them).
fn peers(k: usize, timeout: Duration) -> (Peers, Vec<Arc<Peer>>) {
    let map = ClusterMap {
        epoch: 1,
        nodes: (0..k)
            .map(|i| NodeEntry {
                id: format!("n{i}"),
                addr: format!("127.0.0.1:{}", 9 + i),
                zone: "z".into(),
                weight: 1,
                state: NodeState::Active,
            })
            .collect(),
        replicas: 3,
    };
    let p = Peers::new("secret", timeout, PeerMetrics::default()).unwrap();
    assert!(p.adopt(&map));
    let set = p.current();
    let order = (0..k)
        .map(|i| set.get(&format!("n{i}")).unwrap().clone())
        .collect();
    (p, order)
}

/// How a fake peer answers: after `delay`, with success or a node error.
#[derive(Clone, Copy)]
enum Answer {
    Ok(Duration),
    Fail(Duration),
}

/// A call answering per peer as `answers` says, noting who was asked.
fn fake(answers: Vec<Answer>, asked: Arc<Mutex<Vec<String>>>) -> impl Fn(Arc<Peer>) -> Pending2 {
    move |peer: Arc<Peer>| {
        let i: usize = peer.id()[1..].parse().unwrap();
        asked.lock().unwrap().push(peer.id().to_string());
        let answer = answers[i];
        let id = peer.id().to_string();
        Box::pin(async move {
            match answer {
                Answer::Ok(d) => {
                    tokio::time::sleep(d).await;
                    Ok(id)
                }
                Answer::Fail(d) => {
                    tokio::time::sleep(d).await;
                    Err(Error::Status {
                        url: id,
                        status: http::StatusCode::INTERNAL_SERVER_ERROR,
                        code: Some(crate::error::NodeErrorCode::IoError),
                        body: String::new(),
                    })
                }
            }
        })
    }
}

type Pending2 = Pin<Box<dyn Future<Output = Result<String>> + Send>>;

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn a_write_replaces_a_failed_copy_and_returns_at_the_quorum() {
    let (p, order) = peers(4, Duration::from_secs(30));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let answers = vec![
        Answer::Fail(MS),
        Answer::Ok(5 * MS),
        Answer::Ok(100 * MS),
        Answer::Ok(10 * MS),
    ];
    let r = p
        .replicated(
            &order,
            Plan::write(4, 3, 2),
            Duration::ZERO,
            "t",
            fake(answers, asked.clone()),
        )
        .await;
    assert!(r.met);
    let ok: Vec<String> = r.ok.iter().map(|r| r.value.clone()).collect();
    assert_eq!(
        ok,
        vec!["n1", "n3"],
        "the fallback replaced n0 and answered before n2"
    );
    assert_eq!(r.failed.len(), 1);
    assert_eq!(*asked.lock().unwrap(), vec!["n0", "n1", "n2", "n3"]);
    assert_eq!(r.rest.len(), 1, "n2's copy is still being written");
    let late: Vec<_> = r.rest.collect().await;
    assert!(late[0].2.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_slow_read_is_hedged_once_and_the_faster_answer_wins() {
    let (p, order) = peers(3, Duration::from_secs(30));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let answers = vec![
        Answer::Ok(Duration::from_secs(5)),
        Answer::Ok(Duration::from_secs(5)),
        Answer::Ok(MS),
    ];
    let start = tokio::time::Instant::now();
    let r = p
        .replicated(
            &order,
            Plan::hedged_read(3),
            20 * MS,
            "t",
            fake(answers, asked.clone()),
        )
        .await;
    // n1 (the hedge, at 20 ms) is as slow as n0: a chunk read hedges once, so n2 is
    // never asked and the read waits for the first of the two.
    assert!(r.met);
    assert_eq!(r.hedged, 1);
    assert_eq!(*asked.lock().unwrap(), vec!["n0", "n1"]);
    assert_eq!(r.ok[0].value, "n0");
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_quorum_read_hedges_past_a_hung_replica() {
    let (p, order) = peers(3, Duration::from_secs(30));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let answers = vec![
        Answer::Ok(Duration::from_secs(3600)),
        Answer::Ok(MS),
        Answer::Ok(2 * MS),
    ];
    let start = tokio::time::Instant::now();
    let r = p
        .replicated(
            &order,
            Plan::quorum_read(3, 2),
            20 * MS,
            "t",
            fake(answers, asked.clone()),
        )
        .await;
    assert!(r.met);
    let ok: Vec<String> = r.ok.iter().map(|r| r.value.clone()).collect();
    assert_eq!(ok, vec!["n1", "n2"]);
    assert_eq!(start.elapsed(), 22 * MS, "asked n2 at the hedge delay");
    assert_eq!(
        r.rest.len(),
        1,
        "the hung replica's answer can still be read (repair)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_past_its_timeout_fails_and_marks_the_peer_down() {
    let (p, order) = peers(2, Duration::from_secs(2));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let answers = vec![Answer::Ok(Duration::from_secs(10)), Answer::Fail(MS)];
    let r = p
        .replicated(
            &order,
            Plan::write(2, 2, 2),
            Duration::ZERO,
            "t",
            fake(answers, asked),
        )
        .await;
    assert!(!r.met);
    assert_eq!(
        r.failed.len(),
        1,
        "decided at n1's failure, n0 still in flight"
    );
    assert!(order[0].health.is_up());
    let late: Vec<_> = r.rest.collect().await;
    assert!(matches!(late[0].2, Err(Error::Timeout { .. })));
    assert!(!order[0].health.is_up(), "a timeout marks the peer down");
    assert!(order[1].health.is_up(), "a node's error answer does not");
    assert_eq!(order[0].health.inflight(), 0);
}

#[test]
fn a_newer_map_keeps_the_handles_of_unchanged_nodes() {
    let (p, order) = peers(2, Duration::from_secs(1));
    order[0].health.mark_down();
    let mut map = ClusterMap {
        epoch: 1,
        nodes: order.iter().map(|o| o.entry.clone()).collect(),
        replicas: 3,
    };
    assert!(!p.adopt(&map), "same epoch: kept");
    map.epoch = 2;
    map.nodes[1].addr = "127.0.0.1:1".into();
    assert!(p.adopt(&map));
    let set = p.current();
    assert!(Arc::ptr_eq(set.get("n0").unwrap(), &order[0]));
    assert!(!set.get("n0").unwrap().health.is_up(), "health kept");
    assert!(
        !Arc::ptr_eq(set.get("n1").unwrap(), &order[1]),
        "moved node: new handle"
    );
    assert_eq!(set.epoch, 2);
}

/// A node answering a proof read of a 3-block chunk whose last block comes `pause`
/// after the rest (a viewer reading slowly holds the answer back the same way).
async fn slow_node(data: Vec<u8>, pause: Duration) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut req = [0u8; 4096];
        let _ = s.read(&mut req).await.unwrap();
        let id = crate::ChunkId::of(&data);
        let cvs = crate::verify::block_cvs_checked(&id, &data).unwrap();
        let mut body: Vec<u8> = cvs.iter().flatten().copied().collect();
        let cut = body.len() + 2 * crate::verify::VERIFY_BLOCK_LEN as usize;
        body.extend_from_slice(&data);
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{}: {}\r\n{}: 0\r\n{}: {}\r\n\r\n",
            body.len(),
            crate::client::PROOF_SIZE_HEADER,
            data.len(),
            crate::client::PROOF_START_HEADER,
            crate::client::PROOF_CVS_HEADER,
            cvs.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body[..cut]).await.unwrap();
        tokio::time::sleep(pause).await;
        s.write_all(&body[cut..]).await.unwrap();
        let _ = s.flush().await;
    });
    (addr, server)
}

#[tokio::test]
async fn a_streamed_answer_outlives_the_call_timeout() {
    // The call (request, headers, CVs) must finish within 200 ms; reading the answer's
    // blocks afterwards is not bounded by it (the reader times each block instead).
    let data: Vec<u8> = (0..3 * 65_536 - 100).map(|i| (i % 251) as u8).collect();
    let (addr, server) = slow_node(data.clone(), Duration::from_millis(600)).await;
    let (p, _) = peers(1, Duration::from_millis(200));
    let entry = NodeEntry {
        id: "slow".into(),
        addr,
        zone: "z".into(),
        weight: 1,
        state: NodeState::Active,
    };
    let peer = p.peer_for(&entry);
    let id = crate::ChunkId::of(&data);
    let span = crate::range::ByteSpan {
        start: 0,
        end: data.len() as u64,
    };
    let open = peer.client.open_blocks(&id, span);
    let mut reader = p.call(&peer, "t", open).await.unwrap();
    let mut got = Vec::new();
    while let Some(block) = reader.next_block().await.unwrap() {
        got.extend_from_slice(&block);
    }
    assert!(got == data);
    assert!(peer.health.is_up());
    server.await.unwrap();
}
