//! Multipart uploads over `crate::multipart`: Create, UploadPart, UploadPartCopy,
//! Complete, Abort, ListParts, ListMultipartUploads. Parts are stored as chunks as they
//! arrive; Complete writes one record and copies no byte.

use std::sync::Arc;

use axum::http::HeaderMap;
use kura_cluster::range::ByteSpan;
use s3s::dto::*;
use s3s::{s3_error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::buckets::require;
use super::digest::{claimed, store_checked, Claimed, S3Digest, StoreAs};
use super::encoding::Names;
use super::error::to_s3;
use super::listing::common;
use super::objects::{check_object_key, content_headers, live_record, timestamp, user_meta};
use crate::multipart::{self, Part as StoredPart, Upload};
use crate::upload::{self, NewObject};
use crate::{download, Gateway};

/// The protocol name of S3 uploads in `crate::multipart`.
const PROTOCOL: &str = "s3";

/// Highest part number (as S3).
pub const MAX_PART_NUMBER: u32 = 10_000;

/// Smallest part but the last (as S3: 5 MiB).
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;

/// Most parts ListParts returns per page (as S3).
const MAX_PARTS_LISTED: usize = 1000;

/// Most uploads ListMultipartUploads returns per page (as S3).
const MAX_UPLOADS_PAGE: usize = 1000;

/// The S3 upload `id` of `bucket/key`, or `NoSuchUpload`.
async fn upload_of(gw: &Arc<Gateway>, bucket: &str, key: &str, id: &str) -> S3Result<Upload> {
    let upload = multipart::get(gw, id)
        .await
        .map_err(|e| to_s3(e, S3ErrorCode::NoSuchUpload))?;
    if upload.protocol != PROTOCOL || upload.bucket != bucket || upload.key != key {
        return Err(s3_error!(
            NoSuchUpload,
            "The specified upload does not exist."
        ));
    }
    Ok(upload)
}

fn part_number(n: i32) -> S3Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive"
            )
        })
}

/// CreateMultipartUpload.
pub async fn create(
    gw: &Arc<Gateway>,
    input: CreateMultipartUploadInput,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    require(gw, &input.bucket).await?;
    check_object_key(&input.key)?;
    let object = NewObject {
        bucket: input.bucket.clone(),
        key: input.key.clone(),
        content_type: input.content_type,
        meta: user_meta(input.metadata)?,
        headers: content_headers(
            input.cache_control,
            input.content_disposition,
            input.content_encoding,
            input.content_language,
            input.expires,
        ),
        md5: None,
    };
    let upload = multipart::create(gw, object, PROTOCOL, Default::default())
        .await
        .map_err(|e| to_s3(e, S3ErrorCode::NoSuchBucket))?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(upload.id),
        ..Default::default()
    }))
}

/// UploadPart: the part's bytes are chunked and stored W of N as they stream in; its
/// MD5 and checksums are checked before the part is recorded.
pub async fn upload_part(
    gw: &Arc<Gateway>,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let S3Request {
        input,
        trailing_headers,
        ..
    } = req;
    let number = part_number(input.part_number)?;
    let upload = upload_of(gw, &input.bucket, &input.key, &input.upload_id).await?;
    let claimed = claimed!(input);
    let (stored, checked) = store_checked(
        gw,
        input.body,
        (claimed, StoreAs::Part),
        trailing_headers.as_ref(),
        S3ErrorCode::NoSuchUpload,
    )
    .await?;
    multipart::put_part(
        gw,
        &upload,
        number.into(),
        stored,
        Some(checked.md5_hex.clone()),
    )
    .await
    .map_err(|e| to_s3(e, S3ErrorCode::NoSuchUpload))?;
    let c = checked.checksums;
    Ok(S3Response::new(UploadPartOutput {
        e_tag: Some(ETag::Strong(checked.md5_hex)),
        checksum_crc32: c.checksum_crc32,
        checksum_crc32c: c.checksum_crc32c,
        checksum_crc64nvme: c.checksum_crc64nvme,
        checksum_sha1: c.checksum_sha1,
        checksum_sha256: c.checksum_sha256,
        ..Default::default()
    }))
}

/// `bytes=a-b` of a copy source (both ends given, as S3 requires), within `size`.
fn copy_range(raw: Option<&str>, size: u64) -> S3Result<ByteSpan> {
    let Some(raw) = raw else {
        return Ok(ByteSpan {
            start: 0,
            end: size,
        });
    };
    let bad = || {
        s3_error!(InvalidArgument, "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy")
    };
    let (a, b) = raw
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b || b >= size {
        return Err(s3_error!(
            InvalidRange,
            "The requested range is not satisfiable"
        ));
    }
    Ok(ByteSpan {
        start: a,
        end: b + 1,
    })
}

/// UploadPartCopy: the source range is read (verified) and stored as the part's own
/// chunks; its MD5 is computed on the way.
pub async fn upload_part_copy(
    gw: &Arc<Gateway>,
    input: UploadPartCopyInput,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let number = part_number(input.part_number)?;
    let upload = upload_of(gw, &input.bucket, &input.key, &input.upload_id).await?;
    let (src_bucket, src_key) = match &input.copy_source {
        CopySource::Bucket { bucket, key, .. } => (bucket.to_string(), key.to_string()),
        _ => {
            return Err(s3_error!(
                NotImplemented,
                "only bucket copy sources are supported"
            ))
        }
    };
    let source = live_record(gw, &src_bucket, &src_key, &HeaderMap::new()).await?;
    let span = copy_range(input.copy_source_range.as_deref(), source.size)?;
    let body = download::object_body(gw, &source, span)
        .await
        .map_err(|e| to_s3(e, S3ErrorCode::NoSuchKey))?
        .into_data_stream();
    let digest = S3Digest::new(&Claimed::default())?;
    let (stored, digest) = upload::store_body(gw, body, digest)
        .await
        .map_err(|e| to_s3(e, S3ErrorCode::NoSuchKey))?;
    let checked = digest.check(Claimed::default(), None)?;
    let part = multipart::put_part(gw, &upload, number.into(), stored, Some(checked.md5_hex))
        .await
        .map_err(|e| to_s3(e, S3ErrorCode::NoSuchUpload))?;
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(ETag::Strong(part.md5)),
            last_modified: Some(timestamp(part.stored_ms)),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// CompleteMultipartUpload.
pub async fn complete(
    gw: &Arc<Gateway>,
    input: CompleteMultipartUploadInput,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let upload = upload_of(gw, &input.bucket, &input.key, &input.upload_id).await?;
    let named = input
        .multipart_upload
        .and_then(|m| m.parts)
        .unwrap_or_default();
    let mut wanted = Vec::with_capacity(named.len());
    for p in named {
        let number = part_number(p.part_number.unwrap_or(0))?;
        let etag = p
            .e_tag
            .map(|e| e.value().trim_matches('"').to_string())
            .ok_or_else(|| s3_error!(InvalidPart, "part {number} has no ETag"))?;
        wanted.push((number, etag));
    }
    let stored = multipart::parts(gw, &upload)
        .await
        .map_err(|e| to_s3(e, S3ErrorCode::NoSuchUpload))?;
    let chosen = choose_parts(&wanted, &stored)?;
    let mut md5s = Vec::with_capacity(16 * chosen.len());
    for p in &chosen {
        md5s.extend(hex::decode(&p.md5).map_err(|e| s3_error!(InternalError, "part MD5: {e}"))?);
    }
    let md5 = format!("{}-{}", md5_hex(&md5s), chosen.len());
    multipart::assemble(gw, &upload, &chosen, &stored, Some(md5.clone()))
        .await
        .map_err(|e| to_s3(e, S3ErrorCode::NoSuchUpload))?;
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        bucket: Some(input.bucket.clone()),
        key: Some(input.key.clone()),
        e_tag: Some(ETag::Strong(md5)),
        location: Some(format!("/{}/{}", input.bucket, input.key)),
        ..Default::default()
    }))
}

/// The stored parts `wanted` names (number, MD5 hex), checked as S3 does: at least one,
/// strictly ascending, each stored with that ETag, all but the last ≥ 5 MiB.
fn choose_parts<'a>(
    wanted: &[(u32, String)],
    stored: &'a [StoredPart],
) -> S3Result<Vec<&'a StoredPart>> {
    if wanted.is_empty() {
        return Err(s3_error!(
            MalformedXML,
            "The XML you provided was not well-formed or did not validate against our published schema"
        ));
    }
    if wanted.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(s3_error!(
            InvalidPartOrder,
            "The list of parts was not in ascending order. The parts list must be specified in order by part number."
        ));
    }
    let mut chosen = Vec::with_capacity(wanted.len());
    for (i, (number, md5)) in wanted.iter().enumerate() {
        let Some(part) = stored
            .iter()
            .find(|p| p.index == u64::from(*number) && &p.md5 == md5)
        else {
            return Err(s3_error!(
                InvalidPart,
                "One or more of the specified parts could not be found (part {number}), or its entity tag did not match."
            ));
        };
        if i + 1 < wanted.len() && part.size < MIN_PART_BYTES {
            return Err(s3_error!(
                EntityTooSmall,
                "Part {number} is smaller than the minimum allowed object size (5 MiB)."
            ));
        }
        chosen.push(part);
    }
    Ok(chosen)
}

fn md5_hex(data: &[u8]) -> String {
    use s3s::crypto::{Checksum as _, Md5};
    let mut h = Md5::new();
    h.update(data);
    hex::encode(h.finalize())
}

/// AbortMultipartUpload.
pub async fn abort(
    gw: &Arc<Gateway>,
    input: AbortMultipartUploadInput,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let upload = upload_of(gw, &input.bucket, &input.key, &input.upload_id).await?;
    multipart::abort(gw, &upload)
        .await
        .map_err(|e| to_s3(e, S3ErrorCode::NoSuchUpload))?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

/// ListParts.
pub async fn list_parts(
    gw: &Arc<Gateway>,
    input: ListPartsInput,
) -> S3Result<S3Response<ListPartsOutput>> {
    let upload = upload_of(gw, &input.bucket, &input.key, &input.upload_id).await?;
    let mut parts = multipart::parts(gw, &upload)
        .await
        .map_err(|e| to_s3(e, S3ErrorCode::NoSuchUpload))?;
    let marker = u64::try_from(input.part_number_marker.unwrap_or(0)).unwrap_or(0);
    parts.retain(|p| p.index > marker);
    let max = input.max_parts.map_or(MAX_PARTS_LISTED, |m| {
        usize::try_from(m).unwrap_or(0).min(MAX_PARTS_LISTED)
    });
    let truncated = parts.len() > max;
    parts.truncate(max);
    let next = truncated
        .then(|| parts.last().and_then(|p| i32::try_from(p.index).ok()))
        .flatten();
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(input.upload_id),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: next,
        max_parts: i32::try_from(max).ok(),
        is_truncated: Some(truncated),
        parts: Some(
            parts
                .into_iter()
                .map(|p| Part {
                    part_number: i32::try_from(p.index).ok(),
                    e_tag: Some(ETag::Strong(p.md5)),
                    size: i64::try_from(p.size).ok(),
                    last_modified: Some(timestamp(p.stored_ms)),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }))
}

/// ListMultipartUploads: uploads sorted by key, then by initiation; a delimiter rolls
/// the keys below a common prefix up into one `CommonPrefixes` entry (as ListObjects).
pub async fn list_uploads(
    gw: &Arc<Gateway>,
    input: ListMultipartUploadsInput,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    require(gw, &input.bucket).await?;
    let names = Names::of(input.encoding_type.as_ref())?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let uploads = multipart::list_uploads(gw, PROTOCOL, &input.bucket, &prefix)
        .await
        .map_err(|e| to_s3(e, S3ErrorCode::NoSuchBucket))?;
    let key_marker = input.key_marker.clone().unwrap_or_default();
    let uploads = after_marker(uploads, &key_marker, input.upload_id_marker.as_deref());
    let max = input.max_uploads.map_or(MAX_UPLOADS_PAGE, |m| {
        usize::try_from(m).unwrap_or(0).min(MAX_UPLOADS_PAGE)
    });
    let page = roll_up(
        uploads,
        &prefix,
        input.delimiter.as_deref(),
        &key_marker,
        max,
    );
    let (next_key, next_id) = match page.last.filter(|_| page.truncated) {
        Some((key, id)) => (Some(key), id),
        None => (None, None),
    };
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: Some(names.name(prefix)),
        delimiter: names.opt(input.delimiter),
        key_marker: names.opt(input.key_marker),
        upload_id_marker: input.upload_id_marker,
        next_key_marker: names.opt(next_key),
        next_upload_id_marker: next_id,
        max_uploads: i32::try_from(max).ok(),
        is_truncated: Some(page.truncated),
        uploads: Some(
            page.uploads
                .into_iter()
                .map(|u| MultipartUpload {
                    key: Some(names.name(u.key)),
                    upload_id: Some(u.id),
                    initiated: Some(timestamp(u.initiated_ms)),
                    ..Default::default()
                })
                .collect(),
        ),
        common_prefixes: common(page.prefixes, names),
        encoding_type: names.echo(),
        ..Default::default()
    }))
}

/// The uploads after the page markers: after upload `id_marker` of `key_marker`, or,
/// without an upload id (or when that upload is gone), after every upload of the key.
fn after_marker(
    mut uploads: Vec<Upload>,
    key_marker: &str,
    id_marker: Option<&str>,
) -> Vec<Upload> {
    if key_marker.is_empty() {
        return uploads;
    }
    let at = id_marker.filter(|id| !id.is_empty()).and_then(|id| {
        uploads
            .iter()
            .position(|u| u.key == key_marker && u.id == id)
    });
    match at {
        Some(i) => uploads.split_off(i + 1),
        None => {
            uploads.retain(|u| u.key.as_str() > key_marker);
            uploads
        }
    }
}

/// One page of ListMultipartUploads.
struct UploadsPage {
    uploads: Vec<Upload>,
    prefixes: Vec<String>,
    /// The last entry returned: an upload's key and id, or a common prefix.
    last: Option<(String, Option<String>)>,
    truncated: bool,
}

/// Up to `max` entries of `uploads` (sorted by key), the keys below a common prefix
/// rolled into one entry; a prefix not after `key_marker` was on an earlier page.
fn roll_up(
    uploads: Vec<Upload>,
    prefix: &str,
    delimiter: Option<&str>,
    key_marker: &str,
    max: usize,
) -> UploadsPage {
    let mut page = UploadsPage {
        uploads: Vec::new(),
        prefixes: Vec::new(),
        last: None,
        truncated: false,
    };
    let mut count = 0;
    for u in uploads {
        let common = delimiter.filter(|d| !d.is_empty()).and_then(|d| {
            let rest = u.key.get(prefix.len()..)?;
            rest.find(d)
                .map(|i| u.key[..prefix.len() + i + d.len()].to_string())
        });
        if let Some(c) = &common {
            let seen = page.prefixes.last() == Some(c) || c.as_str() <= key_marker;
            if seen {
                continue;
            }
        }
        if count == max {
            page.truncated = true;
            break;
        }
        count += 1;
        match common {
            Some(c) => {
                page.last = Some((c.clone(), None));
                page.prefixes.push(c);
            }
            None => {
                page.last = Some((u.key.clone(), Some(u.id.clone())));
                page.uploads.push(u);
            }
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(key: &str, id: &str) -> Upload {
        Upload {
            id: id.into(),
            bucket: "b".into(),
            key: key.into(),
            initiated_ms: 0,
            object: NewObject::default(),
            protocol: PROTOCOL.into(),
            fields: Default::default(),
        }
    }

    fn listed(p: &UploadsPage) -> Vec<String> {
        let mut v: Vec<String> = p
            .uploads
            .iter()
            .map(|u| format!("{}#{}", u.key, u.id))
            .collect();
        v.extend(p.prefixes.iter().cloned());
        v
    }

    #[test]
    fn a_delimiter_rolls_keys_up_and_pages_resume_after_the_prefix() {
        let all = || {
            vec![
                up("a/1", "x"),
                up("a/2", "y"),
                up("b", "p"),
                up("b", "q"),
                up("c/d/e", "z"),
            ]
        };
        let page = roll_up(all(), "", Some("/"), "", 2);
        assert_eq!(listed(&page), ["b#p", "a/"]);
        assert!(page.truncated);
        assert_eq!(page.last, Some(("b".into(), Some("p".into()))));
        let rest = after_marker(all(), "b", Some("p"));
        let page = roll_up(rest, "", Some("/"), "b", 2);
        assert_eq!(listed(&page), ["b#q", "c/"]);
        assert!(!page.truncated);
        // A page that ended on a common prefix resumes after every key below it.
        let page = roll_up(after_marker(all(), "a/", None), "", Some("/"), "a/", 10);
        assert_eq!(listed(&page), ["b#p", "b#q", "c/"]);
        // Within a prefix, the delimiter applies to the rest of the key only.
        let below_c = vec![up("c/d/e", "z"), up("c/f", "w")];
        let page = roll_up(below_c, "c/", Some("/"), "", 10);
        assert_eq!(listed(&page), ["c/f#w", "c/d/"]);
    }
}
