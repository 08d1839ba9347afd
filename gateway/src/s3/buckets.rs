//! Bucket operations over the registry (`crate::buckets`).

use std::sync::Arc;

use s3s::dto::*;
use s3s::{s3_error, S3ErrorCode, S3Response, S3Result};

use super::error::to_s3;
use super::objects::timestamp;
use crate::{buckets, Gateway};

/// The one owner every bucket has (kura's S3 keys share one namespace).
const OWNER_ID: &str = "kura";

/// ListBuckets.
pub async fn list(gw: &Arc<Gateway>) -> S3Result<S3Response<ListBucketsOutput>> {
    let all = buckets::list_all(gw)
        .await
        .map_err(|e| to_s3(e, S3ErrorCode::InternalError))?;
    let list = all
        .into_iter()
        .map(|b| Bucket {
            name: Some(b.name),
            creation_date: Some(timestamp(b.created_ms)),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(list),
        owner: Some(Owner {
            display_name: Some(OWNER_ID.into()),
            id: Some(OWNER_ID.into()),
        }),
        ..Default::default()
    }))
}

/// CreateBucket: `BucketAlreadyOwnedByYou` if it exists (all keys share one owner).
pub async fn create(
    gw: &Arc<Gateway>,
    input: CreateBucketInput,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let created = buckets::create(gw, &input.bucket)
        .await
        .map_err(|e| to_s3(e, S3ErrorCode::NoSuchBucket))?;
    if !created {
        return Err(s3_error!(
            BucketAlreadyOwnedByYou,
            "Your previous request to create the named bucket succeeded and you already own it."
        ));
    }
    Ok(S3Response::new(CreateBucketOutput {
        location: Some(format!("/{}", input.bucket)),
    }))
}

/// HeadBucket.
pub async fn head(gw: &Arc<Gateway>, bucket: &str) -> S3Result<S3Response<HeadBucketOutput>> {
    require(gw, bucket).await?;
    Ok(S3Response::new(HeadBucketOutput::default()))
}

/// DeleteBucket: `BucketNotEmpty` while it holds objects.
pub async fn delete(gw: &Arc<Gateway>, bucket: &str) -> S3Result<S3Response<DeleteBucketOutput>> {
    buckets::delete(gw, bucket)
        .await
        .map_err(|e| to_s3(e, S3ErrorCode::NoSuchBucket))?;
    Ok(S3Response::new(DeleteBucketOutput::default()))
}

/// GetBucketLocation: kura has one location (an empty constraint means `us-east-1`).
pub async fn location(
    gw: &Arc<Gateway>,
    bucket: &str,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    require(gw, bucket).await?;
    Ok(S3Response::new(GetBucketLocationOutput::default()))
}

/// `NoSuchBucket` unless `bucket` exists.
pub async fn require(gw: &Arc<Gateway>, bucket: &str) -> S3Result<()> {
    match buckets::exists(gw, bucket).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(s3_error!(
            NoSuchBucket,
            "The specified bucket does not exist"
        )),
        Err(e) => Err(to_s3(e, S3ErrorCode::NoSuchBucket)),
    }
}
