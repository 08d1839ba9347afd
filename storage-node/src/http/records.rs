//! Record routes: offer one record or a batch (last writer wins), read one as stored,
//! list a bucket's, scan all.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kura_cluster::client::{
    PutRecordReply, PutRecordsAnswer, RecordName, RecordOutcome, RECORD_ABSENT, RECORD_HELD,
};
use kura_cluster::record::{ObjectRecord, MAX_RECORD_BYTES};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{blocking, read_body, DEFAULT_LIST_LIMIT};
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::records::Offer;

/// Most records one `POST /v1/records` may offer: bounds the locks and the write one
/// request holds (a gateway batches at most `kura_cluster::peers::batch`'s
/// `RECORD_BATCH_MAX_RECORDS`, well below).
pub const MAX_RECORD_BATCH: usize = 4096;

/// Largest body of a batch: one record of the largest size, in its brackets.
const MAX_RECORD_BATCH_BYTES: u64 = MAX_RECORD_BYTES + 2;

/// Most records one `POST /v1/record-reads` may ask for: bounds the answer (4096 of a
/// 1 GB object's ~23 KB records is ~94 MB) and the time one request holds a blocking
/// thread. A gateway asks at most `kura_cluster::peers::batch`'s
/// `RECORD_READ_BATCH_MAX`, well below.
pub const MAX_RECORD_READS: usize = 4096;

/// Largest body of a read batch: as many names of the longest bucket and key, quoted.
const MAX_RECORD_READS_BYTES: u64 = MAX_RECORD_READS as u64 * 1200;

/// The record whose JSON is `json` (a slice of `body`), with those bytes (stored as
/// they came, not copied here).
fn decode(body: &Bytes, json: &[u8]) -> Result<(ObjectRecord, Bytes)> {
    let record = serde_json::from_slice(json)
        .map_err(|e| NodeError::BadRequest(format!("record JSON: {e}")))?;
    Ok((record, body.slice_ref(json)))
}

pub(super) async fn put_record(
    State(node): State<Arc<Node>>,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PutRecordReply>> {
    let body = read_body(&headers, body, MAX_RECORD_BYTES).await?;
    let (record, json) = decode(&body, &body)?;
    if record.bucket != bucket || record.key != key {
        return Err(NodeError::BadRequest(
            "record bucket/key differ from the URL".into(),
        ));
    }
    let n = node.clone();
    let current = record.clone();
    let reply = match blocking(move || n.records.put(record, json)).await? {
        Offer::Applied => PutRecordReply {
            applied: true,
            current: Some(Box::new(current)),
        },
        Offer::Kept(held) => PutRecordReply {
            applied: false,
            current: Some(held),
        },
    };
    Ok(Json(reply))
}

/// `POST /v1/records`: a JSON array of records, stored in one synced write (the winners
/// of last-writer-wins). Answers each record's outcome in order: `applied`, the record
/// kept instead of it, or its own error (a bad record fails alone; a failed write
/// fails the request).
pub(super) async fn put_records(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PutRecordsAnswer>> {
    let body = read_body(&headers, body, MAX_RECORD_BATCH_BYTES).await?;
    let raw: Vec<&RawValue> = serde_json::from_slice(&body)
        .map_err(|e| NodeError::BadRequest(format!("record batch JSON: {e}")))?;
    if raw.len() > MAX_RECORD_BATCH {
        return Err(NodeError::BadRequest(format!(
            "a batch holds at most {MAX_RECORD_BATCH} records, not {}",
            raw.len()
        )));
    }
    let offers: Vec<_> = raw
        .iter()
        .map(|r| decode(&body, r.get().as_bytes()))
        .collect();
    let n = node.clone();
    let outcomes = blocking(move || n.records.put_many(offers)).await?;
    node.metrics
        .record_batch_records
        .observe(outcomes.len() as f64);
    let results = outcomes
        .into_iter()
        .map(|o| match o {
            Ok(Offer::Applied) => RecordOutcome::Done(PutRecordReply {
                applied: true,
                current: None,
            }),
            Ok(Offer::Kept(held)) => RecordOutcome::Done(PutRecordReply {
                applied: false,
                current: Some(held),
            }),
            Err(e) => RecordOutcome::Failed {
                status: e.status().as_u16(),
                error: e.code(),
                message: e.to_string(),
            },
        })
        .collect();
    Ok(Json(PutRecordsAnswer { results }))
}

/// The record as stored (its JSON), not decoded and encoded again.
pub(super) async fn get_record(
    State(node): State<Arc<Node>>,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<Response> {
    let n = node.clone();
    let rec = blocking(move || n.records.get_encoded(&bucket, &key)).await?;
    let json = rec.ok_or(NodeError::NotFound)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// `POST /v1/record-reads`: a JSON array of record names; answers the records held for
/// them, in order, each as stored with its timestamp header (see
/// `kura_cluster::client::RECORD_READS_PATH` for the framing). One request and one pass
/// over the table for a batch of reads (a gateway's uncached small GETs), not a
/// request, a blocking hand-off and a response each.
pub(super) async fn get_records(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let body = read_body(&headers, body, MAX_RECORD_READS_BYTES).await?;
    let names: Vec<RecordName> = serde_json::from_slice(&body)
        .map_err(|e| NodeError::BadRequest(format!("record names JSON: {e}")))?;
    if names.len() > MAX_RECORD_READS {
        return Err(NodeError::BadRequest(format!(
            "a read batch asks for at most {MAX_RECORD_READS} records, not {}",
            names.len()
        )));
    }
    let n = node.clone();
    let found = blocking(move || n.records.get_many_stamped(&names)).await?;
    node.metrics
        .record_read_batch_records
        .observe(found.len() as f64);
    let answer = frame_records(&found)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], answer).into_response())
}

/// A read batch's answer: per record, one byte (held or not), then for one held its
/// length (u32, big-endian) and its stored bytes.
fn frame_records(found: &[Option<Vec<u8>>]) -> Result<Vec<u8>> {
    let len = found
        .iter()
        .map(|r| 1 + r.as_ref().map_or(0, |v| 4 + v.len()))
        .sum();
    let mut answer = Vec::with_capacity(len);
    for r in found {
        match r {
            Some(v) => {
                let n = u32::try_from(v.len())
                    .map_err(|_| NodeError::BadMetadata("a record over 4 GiB".into()))?;
                answer.push(RECORD_HELD);
                answer.extend_from_slice(&n.to_be_bytes());
                answer.extend_from_slice(v);
            }
            None => answer.push(RECORD_ABSENT),
        }
    }
    Ok(answer)
}

#[derive(Deserialize)]
pub(super) struct ListRecordsQuery {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    tombstones: bool,
    /// Records without their chunk lists: what a listing needs, ~100 bytes a record
    /// instead of ~90 bytes per chunk (23 KB for a 1 GB object).
    #[serde(default)]
    summary: bool,
}

pub(super) async fn list_records(
    State(node): State<Arc<Node>>,
    Path(bucket): Path<String>,
    Query(q): Query<ListRecordsQuery>,
) -> Result<Response> {
    let n = node.clone();
    let page = blocking(move || {
        n.records.list(
            &bucket,
            &q.prefix,
            q.after.as_deref(),
            q.limit.unwrap_or(DEFAULT_LIST_LIMIT),
            q.tombstones,
            q.summary,
        )
    })
    .await?;
    Ok(Json(page).into_response())
}

#[derive(Deserialize)]
pub(super) struct ScanQuery {
    /// Hex of the last database key of the previous page.
    after: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn scan_records(
    State(node): State<Arc<Node>>,
    Query(q): Query<ScanQuery>,
) -> Result<Response> {
    let after = q
        .after
        .map(|a| hex::decode(a).map_err(|_| NodeError::BadRequest("after must be hex".into())))
        .transpose()?;
    let limit = q
        .limit
        .unwrap_or(DEFAULT_LIST_LIMIT)
        .clamp(1, DEFAULT_LIST_LIMIT);
    let n = node.clone();
    let page = blocking(move || n.records.scan(after.as_deref(), limit)).await?;
    let next_after = (page.len() >= limit)
        .then(|| page.last().map(|(k, _)| hex::encode(k)))
        .flatten();
    let records: Vec<ObjectRecord> = page.into_iter().map(|(_, r)| r).collect();
    Ok(Json(kura_cluster::record::RecordPage {
        records,
        next_after,
    })
    .into_response())
}
