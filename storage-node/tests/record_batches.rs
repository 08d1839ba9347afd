//! `POST /v1/records`: a batch of records stored in one synced write, each record with
//! its own outcome; `POST /v1/record-reads`: a batch of records read in one pass;
//! against a real node (real RocksDB, loopback HTTP).

mod common;

use bytes::Bytes;
use common::{node, SECRET};
use kura_cluster::client::{RecordName, RECORDS_TYPE, RECORD_READS_PATH};
use kura_cluster::error::NodeErrorCode;
use kura_cluster::hlc::Clock;
use kura_cluster::record::{EncodedRecord, ObjectRecord, RecordFormat, STAMP_LEN};
use kura_cluster::Error;
use reqwest::StatusCode;

/// `r` as a gateway writes it: packed, stamped.
fn packed(r: &ObjectRecord) -> Bytes {
    EncodedRecord::pack(r).unwrap().into_stored()
}

/// `json` (a record's JSON) stamped, as an older gateway's record is stored.
fn stamped_json(json: &[u8]) -> Bytes {
    EncodedRecord::from_json(json).unwrap().into_stored()
}

fn json(r: &ObjectRecord) -> Bytes {
    serde_json::to_vec(r).unwrap().into()
}

fn status_of(e: &Error) -> (StatusCode, Option<NodeErrorCode>) {
    match e {
        Error::Status { status, code, .. } => (*status, *code),
        other => panic!("not a node's answer: {other}"),
    }
}

#[tokio::test]
async fn each_record_of_a_batch_gets_its_own_outcome() {
    let (_dir, _running, c) = node().await;
    let clock = Clock::new(3);
    let old_a = ObjectRecord::tombstone("media", "a", clock.now());
    let mut new_a = ObjectRecord::tombstone("media", "a", clock.now());
    new_a.deleted = false;
    new_a.size = 7;
    let b = ObjectRecord::tombstone("media", "b/ü", clock.now());
    let bad_bucket = ObjectRecord::tombstone("Bad_Bucket", "k", clock.now());
    let c_rec = ObjectRecord::tombstone("media", "c", clock.now());
    // A header that says another time than its body.
    let mut forged = packed(&c_rec).to_vec();
    forged[1..9].copy_from_slice(&(c_rec.ts.ms + 1).to_be_bytes());
    let batch = vec![
        packed(&new_a),
        packed(&old_a),
        packed(&bad_bucket),
        packed(&b).slice(..STAMP_LEN + 3),
        // Stored as sent: spacing a re-encoding would drop stays.
        stamped_json(serde_json::to_string_pretty(&b).unwrap().as_bytes()),
        Bytes::from(forged),
    ];
    let out = c.put_records(&batch).await.unwrap();
    assert_eq!(out.len(), 6);
    let first = out[0].as_ref().unwrap();
    assert!(first.applied && first.current.is_none(), "{first:?}");
    let second = out[1].as_ref().unwrap();
    assert!(
        !second.applied,
        "an older record of the same batch must lose"
    );
    assert_eq!(second.current.as_deref(), Some(&new_a));
    let bad = (StatusCode::BAD_REQUEST, Some(NodeErrorCode::BadRequest));
    assert_eq!(status_of(out[2].as_ref().unwrap_err()), bad);
    assert_eq!(status_of(out[3].as_ref().unwrap_err()), bad);
    assert!(out[4].as_ref().unwrap().applied);
    assert_eq!(status_of(out[5].as_ref().unwrap_err()), bad);
    assert!(c.get_record("media", "c").await.unwrap().is_none());

    // The single-record read answers JSON: a packed record decoded, a JSON one as sent.
    assert_eq!(
        c.get_record("media", "a").await.unwrap(),
        Some(new_a.clone())
    );
    let stored = c.get_record_encoded("media", "b/ü").await.unwrap().unwrap();
    assert_eq!(stored.body(), &batch[4][STAMP_LEN..]);
    assert_eq!(stored.decode().unwrap(), b);

    // A batch whose newer record comes second applies both in order: the second wins.
    let newest = ObjectRecord::tombstone("media", "a", clock.now());
    let mut later = newest.clone();
    later.ts = clock.now();
    let out = c
        .put_records(&[packed(&newest), packed(&later)])
        .await
        .unwrap();
    assert!(out.iter().all(|o| o.as_ref().unwrap().applied));
    assert_eq!(c.get_record("media", "a").await.unwrap(), Some(later));
}

/// What a gateway does with a node older than batches (it answers the route with a bare
/// 404/405): the same records, one `PUT` each (as JSON), with the same outcomes.
#[tokio::test]
async fn records_offered_singly_get_the_outcomes_a_batch_gives() {
    let (_dir, _running, c) = node().await;
    let clock = Clock::new(5);
    let old = ObjectRecord::tombstone("media", "a", clock.now());
    let new = ObjectRecord::tombstone("media", "a", clock.now());
    let other = ObjectRecord::tombstone("media", "b", clock.now());
    let bad = ObjectRecord::tombstone("Bad_Bucket", "k", clock.now());
    let out = c
        .put_records_singly(&[packed(&new), stamped_json(&json(&other)), packed(&bad)])
        .await;
    assert!(out[0].as_ref().unwrap().applied);
    assert!(out[1].as_ref().unwrap().applied);
    let bad_request = (StatusCode::BAD_REQUEST, Some(NodeErrorCode::BadRequest));
    assert_eq!(status_of(out[2].as_ref().unwrap_err()), bad_request);
    let out = c.put_records_singly(&[packed(&old)]).await;
    let kept = out[0].as_ref().unwrap();
    assert!(!kept.applied);
    assert_eq!(kept.current.as_deref(), Some(&new));
    assert_eq!(c.get_record("media", "a").await.unwrap(), Some(new));
    assert_eq!(c.get_record("media", "b").await.unwrap(), Some(other));
}

#[tokio::test]
async fn a_malformed_or_oversized_batch_is_refused_whole() {
    let (_dir, running, c) = node().await;
    let http = reqwest::Client::new();
    let post = |body: String| {
        http.post(format!("{}/v1/records", running.url()))
            .bearer_auth(SECRET)
            .body(body)
            .send()
    };
    for body in ["{}", "[1,", "not json"] {
        let r = post(body.into()).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        let text = r.text().await.unwrap();
        assert_eq!(
            NodeErrorCode::of_body(&text),
            Some(NodeErrorCode::BadRequest),
            "{text}"
        );
    }
    let clock = Clock::new(4);
    let one = String::from_utf8(json(&ObjectRecord::tombstone("media", "k", clock.now())).to_vec())
        .unwrap();
    let many = vec![one; kura_storage_node::http::MAX_RECORD_BATCH + 1];
    let r = post(format!("[{}]", many.join(","))).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        c.get_record("media", "k").await.unwrap().is_none(),
        "nothing of it is stored"
    );
    // Framed (what gateways send): a frame cut short, an unknown tag, too many records.
    let post_framed = |body: Vec<u8>| {
        http.post(format!("{}/v1/records", running.url()))
            .bearer_auth(SECRET)
            .header("content-type", RECORDS_TYPE)
            .body(body)
            .send()
    };
    let rec = packed(&ObjectRecord::tombstone("media", "k", clock.now()));
    let one = kura_cluster::client::frame_records(&[Some(&rec)]).unwrap();
    let many: Vec<u8> = one.repeat(kura_storage_node::http::MAX_RECORD_BATCH + 1);
    for body in [one[..one.len() - 1].to_vec(), vec![2], many] {
        let r = post_framed(body).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    assert!(
        c.get_record("media", "k").await.unwrap().is_none(),
        "nothing of it is stored"
    );
    // An absence in a batch of writes fails alone.
    let body = kura_cluster::client::frame_records(&[None, Some(&rec)]).unwrap();
    let r = post_framed(body).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let answer: kura_cluster::client::PutRecordsAnswer = r.json().await.unwrap();
    assert!(matches!(
        answer.results[0],
        kura_cluster::client::RecordOutcome::Failed { status: 400, .. }
    ));
    assert!(matches!(
        &answer.results[1],
        kura_cluster::client::RecordOutcome::Done(r) if r.applied
    ));
    assert!(c.get_record("media", "k").await.unwrap().is_some());
    // Without the cluster secret: refused before anything is read.
    let r = http
        .post(format!("{}/v1/records", running.url()))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// `POST /v1/record-reads`: each record as stored (not re-encoded), `null` for each not
/// held, in the order asked (a name asked twice answered twice).
#[tokio::test]
async fn a_read_batch_answers_each_record_as_stored_in_order() {
    let (_dir, _running, c) = node().await;
    let clock = Clock::new(6);
    let a = ObjectRecord::tombstone("media", "a", clock.now());
    let b = ObjectRecord::tombstone("media", "b/ü", clock.now());
    let pretty_b = stamped_json(serde_json::to_string_pretty(&b).unwrap().as_bytes());
    let out = c
        .put_records(&[packed(&a), pretty_b.clone()])
        .await
        .unwrap();
    assert!(out.iter().all(|o| o.as_ref().unwrap().applied));

    let names = [
        RecordName::new("media", "b/ü"),
        RecordName::new("media", "missing"),
        RecordName::new("media", "a"),
        RecordName::new("other", "a"),
        RecordName::new("media", "b/ü"),
    ];
    let got = c.get_records(&names).await.unwrap();
    assert_eq!(got.len(), names.len());
    for i in [0, 4] {
        let r = got[i].as_ref().unwrap();
        assert_eq!(r.stored(), &pretty_b, "stored bytes, as sent");
        assert_eq!((r.ts, r.format), (b.ts, RecordFormat::Json));
    }
    assert!(got[1].is_none() && got[3].is_none());
    let got_a = got[2].as_ref().unwrap();
    assert_eq!(got_a.format, RecordFormat::Packed);
    assert_eq!(got_a.stored(), &packed(&a), "stored bytes, as sent");
    assert_eq!(got_a.decode().unwrap(), a);
    // One by one (what a gateway does with a node older than read batches): the same
    // records, as JSON.
    let singly = c.get_records_singly(&names).await.unwrap();
    let jsons = |v: &[Option<EncodedRecord>]| -> Vec<Option<Bytes>> {
        v.iter()
            .map(|r| r.as_ref().map(|r| r.to_json().unwrap()))
            .collect()
    };
    assert_eq!(jsons(&singly), jsons(&got));
    assert!(c.get_records(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_malformed_or_oversized_read_batch_is_refused() {
    let (_dir, running, _c) = node().await;
    let http = reqwest::Client::new();
    let url = format!("{}{}", running.url(), RECORD_READS_PATH);
    let post = |body: String| http.post(&url).bearer_auth(SECRET).body(body).send();
    let many = vec![r#"{"bucket":"m","key":"k"}"#; kura_storage_node::http::MAX_RECORD_READS + 1];
    for body in [
        "{}".to_string(),
        "[1]".to_string(),
        r#"[{"bucket":"m"}]"#.to_string(),
        "not json".to_string(),
        format!("[{}]", many.join(",")),
    ] {
        let r = post(body.clone()).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{:.40}", body);
        let text = r.text().await.unwrap();
        assert_eq!(
            NodeErrorCode::of_body(&text),
            Some(NodeErrorCode::BadRequest),
            "{text}"
        );
    }
    // Without the cluster secret: refused.
    let r = http.post(&url).body("[]").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
