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
/// is a JSON array of [`RecordName`]s; the answer (`application/octet-stream`) holds,
/// for each name in order, [`RECORD_ABSENT`], or [`RECORD_HELD`], the length of the
/// stored record (u32, big-endian) and the stored record: its timestamp header and its
/// JSON (see [`EncodedRecord::stamped`]), so that the reader compares replicas without
/// scanning any JSON.
pub const RECORD_READS_PATH: &str = "/v1/record-reads";

/// In a read batch's answer: no record is held for the name.
pub const RECORD_ABSENT: u8 = 0;

/// In a read batch's answer: a record follows.
pub const RECORD_HELD: u8 = 1;

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
    let bad = |what: &str| Error::BatchAnswer(format!("read batch answer: {what}"));
    let mut found = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let tag = body[at];
        at += 1;
        match tag {
            RECORD_ABSENT => found.push(None),
            RECORD_HELD => {
                let len =
                    body.get(at..at + 4)
                        .and_then(|b| b.try_into().ok())
                        .map(u32::from_be_bytes)
                        .ok_or_else(|| bad("cut short in a length"))? as usize;
                at += 4;
                if body.len() - at < len {
                    return Err(bad("cut short in a record"));
                }
                let stored = body.slice(at..at + len);
                at += len;
                found.push(Some(EncodedRecord::from_stored(stored)?));
            }
            other => return Err(bad(&format!("unknown tag {other}"))),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Timestamp;

    #[test]
    fn an_answer_is_sliced_not_copied_and_its_framing_is_checked() {
        let ts = Timestamp {
            ms: 5,
            logical: 1,
            origin: 0,
        };
        let json = br#"{"bucket":"b","key":"k","ts":{"ms":5,"logical":1,"origin":0}}"#;
        let stored = EncodedRecord::stamped(ts, json);
        let mut body = vec![RECORD_HELD];
        body.extend_from_slice(&(stored.len() as u32).to_be_bytes());
        body.extend_from_slice(&stored);
        body.push(RECORD_ABSENT);
        let body = Bytes::from(body);
        let found = parse_answer(&body).unwrap();
        assert_eq!(found.len(), 2);
        let first = found[0].as_ref().unwrap();
        assert_eq!((first.ts, &first.json[..]), (ts, &json[..]));
        assert!(body.as_ptr_range().contains(&first.json.as_ptr()));
        assert!(found[1].is_none());
        assert!(parse_answer(&Bytes::new()).unwrap().is_empty());
        for bad in [&body[..body.len() - 2], &body[..3], b"\x02", b"[null]"] {
            assert!(
                parse_answer(&Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }
}
