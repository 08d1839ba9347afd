//! Record routes: offer one record or a batch (last writer wins), read one as stored,
//! list a bucket's, scan all.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kura_cluster::client::{
    frame_records, unframe_records, PutRecordReply, PutRecordsAnswer, RecordName, RecordOutcome,
    RECORDS_TYPE,
};
use kura_cluster::record::{EncodedRecord, ObjectRecord, MAX_RECORD_BYTES, STAMP_LEN};
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

/// Largest body of a batch: one record of the largest size, framed with its header (or
/// in a JSON array's brackets). A gateway's batches of several records stay under
/// `kura_cluster::peers::batch`'s `RECORD_BATCH_MAX_BYTES`, well below.
const MAX_RECORD_BATCH_BYTES: u64 = MAX_RECORD_BYTES + STAMP_LEN as u64 + 5;

/// Most records one `POST /v1/record-reads` may ask for: bounds the answer (4096 of a
/// 1 GB object's ~23 KB records is ~94 MB) and the time one request holds a blocking
/// thread. A gateway asks at most `kura_cluster::peers::batch`'s
/// `RECORD_READ_BATCH_MAX`, well below.
pub const MAX_RECORD_READS: usize = 4096;

/// Largest body of a read batch: as many names of the longest bucket and key, quoted.
const MAX_RECORD_READS_BYTES: u64 = MAX_RECORD_READS as u64 * 1200;

/// A record offered (or what reading it met), decoded, with the bytes to store.
fn offered(encoded: kura_cluster::Result<EncodedRecord>) -> Result<(ObjectRecord, EncodedRecord)> {
    let encoded = encoded.map_err(NodeError::BadRecord)?;
    Ok((encoded.decode().map_err(NodeError::BadRecord)?, encoded))
}

/// The record whose JSON is `json`, stamped (stored so).
fn decode_json(json: &[u8]) -> Result<(ObjectRecord, EncodedRecord)> {
    offered(EncodedRecord::from_json(json))
}

/// A stamped record of a framed batch (a slice of its body, stored as it came).
fn decode_stamped(stored: Option<Bytes>) -> Result<(ObjectRecord, EncodedRecord)> {
    let stored =
        stored.ok_or_else(|| NodeError::BadRequest("a record batch frames an absence".into()))?;
    offered(EncodedRecord::from_stored(stored))
}

pub(super) async fn put_record(
    State(node): State<Arc<Node>>,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PutRecordReply>> {
    let body = read_body(&headers, body, MAX_RECORD_BYTES).await?;
    let (record, encoded) = decode_json(&body)?;
    if record.bucket != bucket || record.key != key {
        return Err(NodeError::BadRequest(
            "record bucket/key differ from the URL".into(),
        ));
    }
    let n = node.clone();
    let current = record.clone();
    let reply = match blocking(move || n.records.put(record, encoded)).await? {
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

/// `POST /v1/records`: stamped records, framed ([`RECORDS_TYPE`]), or a JSON array of
/// records (any other type), stored in one synced write (the winners of
/// last-writer-wins). Answers each record's outcome in order: `applied`, the record
/// kept instead of it, or its own error (a bad record fails alone; a failed write
/// fails the request).
pub(super) async fn put_records(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PutRecordsAnswer>> {
    let framed = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes() == RECORDS_TYPE.as_bytes());
    let body = read_body(&headers, body, MAX_RECORD_BATCH_BYTES).await?;
    let offers: Vec<_> = if framed {
        let records = unframe_records(&body).map_err(NodeError::BadRecord)?;
        check_batch_len(records.len())?;
        records.into_iter().map(decode_stamped).collect()
    } else {
        let raw: Vec<&RawValue> = serde_json::from_slice(&body)
            .map_err(|e| NodeError::BadRequest(format!("record batch JSON: {e}")))?;
        check_batch_len(raw.len())?;
        raw.iter()
            .map(|r| decode_json(r.get().as_bytes()))
            .collect()
    };
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

/// Refuses a batch of more than [`MAX_RECORD_BATCH`] records.
fn check_batch_len(n: usize) -> Result<()> {
    if n > MAX_RECORD_BATCH {
        return Err(NodeError::BadRequest(format!(
            "a batch holds at most {MAX_RECORD_BATCH} records, not {n}"
        )));
    }
    Ok(())
}

/// The record as JSON (one that arrived as JSON is sent as it arrived).
pub(super) async fn get_record(
    State(node): State<Arc<Node>>,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<Response> {
    let n = node.clone();
    let rec = blocking(move || n.records.get_json(&bucket, &key)).await?;
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
    let answer = frame_records(&found).map_err(NodeError::StoredRecord)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], answer).into_response())
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
