//! ListObjects (V1 and V2) over the merged node listing (`crate::list`): prefix,
//! delimiter with CommonPrefixes, start-after / marker, continuation tokens, max-keys.
//!
//! The walk (and its delimiter roll-up) is `crate::list::walk`, shared with the native
//! listing. A continuation token is the hex of the last key or common prefix returned:
//! opaque to clients, exact for kura.

use std::sync::Arc;

use kura_cluster::record::ObjectRecord;
use s3s::dto::*;
use s3s::{s3_error, S3ErrorCode, S3Response, S3Result};

use super::buckets::require;
use super::encoding::Names;
use super::error::to_s3;
use super::objects::{s3_etag, timestamp};
use crate::list::{self, Walk};
use crate::Gateway;

/// Default and largest `max-keys`, as S3.
pub const MAX_KEYS: usize = 1000;

fn max_keys(given: Option<i32>) -> S3Result<usize> {
    match given {
        None => Ok(MAX_KEYS),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok(usize::try_from(n).unwrap_or(MAX_KEYS).min(MAX_KEYS)),
    }
}

fn object_entry(r: ObjectRecord, names: Names) -> Object {
    Object {
        e_tag: Some(ETag::Strong(s3_etag(&r))),
        last_modified: Some(timestamp(r.ts.ms)),
        size: i64::try_from(r.size).ok(),
        storage_class: Some(ObjectStorageClass::from_static(
            ObjectStorageClass::STANDARD,
        )),
        key: Some(names.name(r.key)),
        ..Default::default()
    }
}

fn objects(found: Vec<ObjectRecord>, names: Names) -> Option<Vec<Object>> {
    Some(found.into_iter().map(|r| object_entry(r, names)).collect())
}

/// Common prefixes as S3 lists them (also for ListMultipartUploads).
pub(super) fn common(prefixes: Vec<String>, names: Names) -> Option<Vec<CommonPrefix>> {
    Some(
        prefixes
            .into_iter()
            .map(|p| CommonPrefix {
                prefix: Some(names.name(p)),
            })
            .collect(),
    )
}

fn decode_token(token: &str) -> S3Result<String> {
    hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "The continuation token provided is incorrect"
            )
        })
}

/// ListObjectsV2.
pub async fn v2(
    gw: &Arc<Gateway>,
    input: ListObjectsV2Input,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    require(gw, &input.bucket).await?;
    let names = Names::of(input.encoding_type.as_ref())?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let token = input
        .continuation_token
        .as_deref()
        .map(decode_token)
        .transpose()?;
    // The later of the token and start-after: each only ever moves the walk forward.
    let after = match (token, input.start_after.clone()) {
        (Some(t), Some(s)) => Some(t.max(s)),
        (t, s) => t.or(s),
    };
    let max = max_keys(input.max_keys)?;
    let found = list::walk(
        gw,
        Walk {
            bucket: &input.bucket,
            prefix: &prefix,
            delimiter: input.delimiter.as_deref(),
            after,
            max_keys: max,
        },
    )
    .await
    .map_err(|e| to_s3(e, S3ErrorCode::NoSuchBucket))?;
    let key_count = found.objects.len() + found.prefixes.len();
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(names.name(prefix)),
        delimiter: names.opt(input.delimiter),
        max_keys: i32::try_from(max).ok(),
        key_count: i32::try_from(key_count).ok(),
        continuation_token: input.continuation_token,
        start_after: names.opt(input.start_after),
        is_truncated: Some(found.next.is_some()),
        next_continuation_token: found.next.map(hex::encode),
        contents: objects(found.objects, names),
        common_prefixes: common(found.prefixes, names),
        encoding_type: names.echo(),
        ..Default::default()
    }))
}

/// ListObjects (V1): `marker` is a key; `NextMarker` is returned when a delimiter is
/// used (without one, clients continue from the last key, as S3 documents).
pub async fn v1(
    gw: &Arc<Gateway>,
    input: ListObjectsInput,
) -> S3Result<S3Response<ListObjectsOutput>> {
    require(gw, &input.bucket).await?;
    let names = Names::of(input.encoding_type.as_ref())?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let max = max_keys(input.max_keys)?;
    let found = list::walk(
        gw,
        Walk {
            bucket: &input.bucket,
            prefix: &prefix,
            delimiter: input.delimiter.as_deref(),
            after: input.marker.clone().filter(|m| !m.is_empty()),
            max_keys: max,
        },
    )
    .await
    .map_err(|e| to_s3(e, S3ErrorCode::NoSuchBucket))?;
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(input.bucket),
        prefix: Some(names.name(prefix)),
        marker: names.opt(input.marker),
        max_keys: i32::try_from(max).ok(),
        delimiter: names.opt(input.delimiter),
        is_truncated: Some(found.next.is_some()),
        next_marker: names.opt(found.next),
        contents: objects(found.objects, names),
        common_prefixes: common(found.prefixes, names),
        encoding_type: names.echo(),
        ..Default::default()
    }))
}
