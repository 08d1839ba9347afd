//! Record reads in batches: many records asked of a node in one request (see
//! `kura_cluster::peers::batch` for who gathers them).

use std::sync::Arc;

use bytes::Bytes;
use reqwest::{header, Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::{ok, NodeClient};
use crate::record::EncodedRecord;
use crate::{Error, Result};

/// The route of record read batches (`POST`, see [`NodeClient::get_records`]). The body
/// is a JSON array of [`RecordName`]s; the answer (`application/octet-stream`) frames,
/// for each name in order, the stored record or its absence (see [`super::frames`]):
/// its header and body as the node holds them, so that the reader compares replicas
/// by their headers without looking into any body.
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
    /// The records held for `names` (each as stored, its timestamp read from its header;
    /// `None` where none is held), in one request (see [`RECORD_READS_PATH`]). A node
    /// older than read batches (it answers the route with a bare 404 or 405) is asked
    /// one by one.
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
pub fn parse_answer(body: &Bytes) -> Result<Vec<Option<EncodedRecord>>> {
    super::frames::unframe(body)?
        .into_iter()
        .map(|r| r.map(EncodedRecord::from_stored).transpose())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ObjectRecord;

    #[test]
    fn an_answer_is_sliced_not_copied() {
        let ts = crate::hlc::Timestamp {
            ms: 5,
            logical: 1,
            origin: 0,
        };
        let stored = EncodedRecord::pack(&ObjectRecord::tombstone("b", "k", ts)).unwrap();
        let body = super::super::frames::frame(&[Some(stored.stored()), None]).unwrap();
        let body = Bytes::from(body);
        let found = parse_answer(&body).unwrap();
        assert_eq!(found.len(), 2);
        let first = found[0].as_ref().unwrap();
        assert_eq!((first.ts, first.body()), (ts, stored.body()));
        assert!(body.as_ptr_range().contains(&first.body().as_ptr()));
        assert!(found[1].is_none());
        assert!(parse_answer(&Bytes::from_static(b"\x01\x00\x00\x00\x02\x05\x05")).is_err());
    }
}
