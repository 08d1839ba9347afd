//! Record batches: many records offered to a node in one request, stored there in one
//! synced write (see `kura_cluster::peers::batch` for who gathers them).

use bytes::Bytes;
use reqwest::{header, Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::{ok, record_path, NodeClient, PutRecordReply};
use crate::error::NodeErrorCode;
use crate::{Error, Result};

/// The route of record batches (`POST`, see [`NodeClient::put_records`]).
pub const RECORDS_PATH: &str = "/v1/records";

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

/// The name of a record's JSON, to offer it alone.
#[derive(Deserialize)]
struct RecordName {
    bucket: String,
    key: String,
}

impl NodeClient {
    /// Offers several records (each one's JSON) in one request, which the node stores
    /// in one synced write; each record's outcome in order. A node older than batches
    /// (it answers the route with a bare 404 or 405) is offered them one by one.
    pub async fn put_records(&self, records: &[Bytes]) -> Result<Vec<Result<PutRecordReply>>> {
        let mut body = Vec::with_capacity(2 + records.iter().map(|r| r.len() + 1).sum::<usize>());
        body.push(b'[');
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(r);
        }
        body.push(b']');
        let resp = self
            .req(Method::POST, RECORDS_PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
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
    /// `PUT /v1/records/{bucket}/{key}`, all at once (last-writer-wins makes their
    /// order irrelevant to what the node ends up holding).
    pub async fn put_records_singly(&self, records: &[Bytes]) -> Vec<Result<PutRecordReply>> {
        let each = records.iter().map(|json| async move {
            let name: RecordName = serde_json::from_slice(json)?;
            let resp = self
                .req(Method::PUT, &record_path(&name.bucket, &name.key))
                .header(header::CONTENT_TYPE, "application/json")
                .body(json.clone())
                .send()
                .await?;
            Ok(ok(resp).await?.json().await?)
        });
        futures::future::join_all(each).await
    }
}
