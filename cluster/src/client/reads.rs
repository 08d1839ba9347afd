//! Record reads in batches: many records asked of a node in one request (see
//! `kura_cluster::peers::batch` for who gathers them).

use std::sync::Arc;

use bytes::Bytes;
use reqwest::{header, Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{ok, NodeClient};
use crate::record::EncodedRecord;
use crate::{Error, Result};

/// The route of record read batches (`POST`, see [`NodeClient::get_records`]).
pub const RECORD_READS_PATH: &str = "/v1/record-reads";

/// The name of one record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordName {
    /// Its bucket.
    pub bucket: Arc<str>,
    /// Its key.
    pub key: Arc<str>,
}

impl RecordName {
    /// The name of `bucket/key`.
    pub fn new(bucket: &str, key: &str) -> Self {
        Self {
            bucket: bucket.into(),
            key: key.into(),
        }
    }
}

impl NodeClient {
    /// The records held for `names` (each as stored, its timestamp read; `None` where
    /// none is held), in one request: the node answers a JSON array of the stored
    /// records' JSON, `null` for each it lacks. A node older than read batches (it
    /// answers the route with a bare 404 or 405) is asked one by one.
    pub async fn get_records(&self, names: &[RecordName]) -> Result<Vec<Option<EncodedRecord>>> {
        let resp = self
            .req(Method::POST, RECORD_READS_PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(names)?)
            .send()
            .await?;
        let body = match ok(resp).await {
            Ok(resp) => resp.bytes().await?,
            Err(Error::Status {
                status: StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED,
                code: None,
                ..
            }) => return self.get_records_singly(names).await,
            Err(e) => return Err(e),
        };
        let found = parse_answer(&body)?;
        if found.len() != names.len() {
            return Err(Error::BatchAnswer(format!(
                "{} records answered for {} asked",
                found.len(),
                names.len()
            )));
        }
        Ok(found)
    }

    /// [`NodeClient::get_records`] from a node without read batches: each record by
    /// its own `GET /v1/records/{bucket}/{key}`, all at once.
    pub async fn get_records_singly(
        &self,
        names: &[RecordName],
    ) -> Result<Vec<Option<EncodedRecord>>> {
        let each = names
            .iter()
            .map(|n| self.get_record_encoded(&n.bucket, &n.key));
        futures::future::try_join_all(each).await
    }
}

/// The records of a read batch's answer, each a slice of `body` (not copied).
fn parse_answer(body: &Bytes) -> Result<Vec<Option<EncodedRecord>>> {
    let raw: Vec<Option<&RawValue>> = serde_json::from_slice(body)?;
    raw.into_iter()
        .map(|r| match r {
            Some(r) => Ok(Some(EncodedRecord::parse(
                body.slice_ref(r.get().as_bytes()),
            )?)),
            None => Ok(None),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_sliced_not_copied_and_nulls_are_absent_records() {
        let body = Bytes::from_static(
            br#"[{"bucket":"b","key":"k","ts":{"ms":5,"logical":1,"origin":0}},null]"#,
        );
        let found = parse_answer(&body).unwrap();
        assert_eq!(found.len(), 2);
        let first = found[0].as_ref().unwrap();
        assert!(first.json.starts_with(br#"{"bucket":"b""#) && first.json.ends_with(b"}"));
        assert!(body.as_ptr_range().contains(&first.json.as_ptr()));
        assert!(found[1].is_none());
        assert!(parse_answer(&Bytes::from_static(b"[1]")).is_err());
        assert!(parse_answer(&Bytes::from_static(b"{}")).is_err());
    }
}
