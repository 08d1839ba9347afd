//! Record batches: many records offered to a node in one request, stored there in one
//! synced write (see `kura_cluster::peers::batch` for who gathers them).

use bytes::Bytes;
use reqwest::{header, Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::{ok, record_path, NodeClient, PutRecordReply};
use crate::error::NodeErrorCode;
use crate::record::EncodedRecord;
use crate::{Error, Result};

/// The route of record batches (`POST`, see [`NodeClient::put_records`]).
pub const RECORDS_PATH: &str = "/v1/records";

/// The media type of a record batch of stamped records, framed (see [`super::frames`]).
/// A batch of any other type is a JSON array of records (what gateways sent before
/// records were packed; nodes still take it).
pub const RECORDS_TYPE: &str = "application/vnd.kura.records";

/// A node's answer to a record batch: each record's outcome, in the order offered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PutRecordsAnswer {
    /// One per record offered.
    pub results: Vec<RecordOutcome>,
}

/// What became of one record of a batch.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecordOutcome {
    /// Decided by last-writer-wins.
    Done(PutRecordReply),
    /// Refused: what the single record's PUT would have answered.
    Failed {
        /// Its HTTP status.
        status: u16,
        /// Its error code.
        error: NodeErrorCode,
        /// Its message.
        message: String,
    },
}

impl NodeClient {
    /// Offers several records (each stamped, as [`EncodedRecord::stored`]) in one
    /// request, which the node stores as they are, in one synced write; each record's
    /// outcome in order. A node older than batches (it answers the route with a bare
    /// 404 or 405) is offered them one by one.
    pub async fn put_records(&self, records: &[Bytes]) -> Result<Vec<Result<PutRecordReply>>> {
        let resp = self
            .req(Method::POST, RECORDS_PATH)
            .header(header::CONTENT_TYPE, RECORDS_TYPE)
            .body(super::frames::frame_held(records)?)
            .send()
            .await?;
        let answer: PutRecordsAnswer = match ok(resp).await {
            Ok(resp) => resp.json().await?,
            Err(Error::Status {
                status: StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED,
                code: None,
                ..
            }) => return Ok(self.put_records_singly(records).await),
            Err(e) => return Err(e),
        };
        if answer.results.len() != records.len() {
            return Err(Error::BatchAnswer(format!(
                "{} outcomes for {} records",
                answer.results.len(),
                records.len()
            )));
        }
        let url = format!("{}{RECORDS_PATH}", self.base);
        Ok(answer
            .results
            .into_iter()
            .map(|o| match o {
                RecordOutcome::Done(reply) => Ok(reply),
                RecordOutcome::Failed {
                    status,
                    error,
                    message,
                } => Err(Error::Status {
                    url: url.clone(),
                    status: StatusCode::from_u16(status)
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    code: Some(error),
                    body: message,
                }),
            })
            .collect())
    }

    /// [`NodeClient::put_records`] to a node without batches: each record by its own
    /// `PUT /v1/records/{bucket}/{key}`, as JSON (all such a node reads), all at once
    /// (last-writer-wins makes their order irrelevant to what the node ends up holding).
    pub async fn put_records_singly(&self, records: &[Bytes]) -> Vec<Result<PutRecordReply>> {
        let each = records.iter().map(|stored| async move {
            let encoded = EncodedRecord::from_stored(stored.clone())?;
            let record = encoded.decode()?;
            let resp = self
                .req(Method::PUT, &record_path(&record.bucket, &record.key))
                .header(header::CONTENT_TYPE, "application/json")
                .body(encoded.to_json()?)
                .send()
                .await?;
            Ok(ok(resp).await?.json().await?)
        });
        futures::future::join_all(each).await
    }
}
