//! The S3 API: the `s3s` crate speaks the protocol (routing, XML, SigV4 in headers and
//! presigned URLs, `aws-chunked` payloads); this module maps each operation onto kura's
//! objects, so what S3 clients write is what the native API and transcoding see.
//!
//! - [`auth`]: access keys from the gateway config.
//! - [`buckets`]: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation.
//! - [`objects`]: PutObject, GetObject, HeadObject, DeleteObject(s), CopyObject.
//! - [`listing`]: ListObjects (V1 and V2) with delimiters and continuation tokens.
//! - [`multipart`]: multipart uploads (parts stored as chunks; Complete copies nothing).
//! - [`digest`]: ETags (MD5) and checksums as S3 clients check them.
//! - [`encoding`]: `encoding-type=url` in listings.
//! - [`fast`]: signed GetObjects that succeed, answered without `s3s` (the hot path of
//!   media serving); [`sigv4`] verifies their signatures. Everything else is `s3s`'s.
//! - [`error`]: kura errors as S3 error codes.
//!
//! Served on its own listener (`s3_listen`), so no bucket name can be shadowed by a
//! native route: path-style (`/bucket/key`), and virtual-hosted-style
//! (`bucket.s3.example.com`) when a base domain is configured ([`host`]).

pub mod auth;
pub mod buckets;
pub mod digest;
pub mod encoding;
pub mod error;
pub mod fast;
pub mod host;
pub mod listing;
pub mod multipart;
pub mod objects;
pub mod sigv4;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use s3s::dto::*;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3Request, S3Response, S3Result, S3};

use crate::Gateway;
use kura_cluster::auth::{Secret, WeakSecret};

/// One S3 access key pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Key {
    /// The access key id (public: it names the key in every request).
    pub access_key: String,
    /// The secret (signs requests; never leaves the gateway).
    pub secret_key: Secret,
}

impl S3Key {
    /// Refuses a secret shorter than `kura_cluster::auth::MIN_SECRET_LEN`.
    pub fn check(&self) -> std::result::Result<(), WeakSecret> {
        self.secret_key
            .check(&format!("S3 key {}", self.access_key))
    }
}

/// The S3 router of a gateway: every path goes to the S3 service.
pub fn router(gw: Arc<Gateway>, http_metrics: kura_cluster::observe::HttpMetrics) -> Router {
    let service = build(gw.clone());
    let fast = Arc::new(fast::FastReads::new(&gw));
    let max_header_bytes = gw.config.max_header_bytes;
    let handler = move |req: Request| {
        let (service, fast, gw) = (service.clone(), fast.clone(), gw.clone());
        async move {
            // The fast path reads the head only; a body is never taken from the request.
            let (parts, body) = req.into_parts();
            match fast.get(&gw, &parts).await {
                Some(response) => response,
                None => call(&service, Request::from_parts(parts, body)).await,
            }
        }
    };
    Router::new()
        .route("/", any(handler.clone()))
        .route("/{*path}", any(handler))
        .layer(axum::middleware::from_fn_with_state(
            (max_header_bytes, http_metrics),
            front,
        ))
}

/// What every S3 request passes first, in one layer (as the native API's
/// `routes::front`): its metrics, and the limit on its headers.
async fn front(
    State((limit, metrics)): State<(usize, kura_cluster::observe::HttpMetrics)>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    kura_cluster::observe::recorded(&metrics, req, |req| {
        crate::http::limit_headers(State(limit), req, next)
    })
    .await
}

fn build(gw: Arc<Gateway>) -> S3Service {
    let keys = gw.config.s3_keys.clone();
    let mut builder = S3ServiceBuilder::new(KuraS3 { gw: gw.clone() });
    builder.set_auth(auth::Keys::new(&keys));
    if let Some(domain) = &gw.config.s3_domain {
        builder.set_host(host::VirtualHosts::new(domain));
    }
    builder.build()
}

async fn call(service: &S3Service, req: Request) -> Response {
    match service.call(req.map(s3s::Body::http_body_unsync)).await {
        Ok(resp) => resp.map(Body::new),
        Err(e) => {
            tracing::error!(error = ?e, "S3 request failed inside the protocol layer");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The S3 operations over one gateway.
pub struct KuraS3 {
    gw: Arc<Gateway>,
}

#[async_trait::async_trait]
impl S3 for KuraS3 {
    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        buckets::list(&self.gw).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        buckets::create(&self.gw, req.input).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        buckets::head(&self.gw, &req.input.bucket).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        buckets::delete(&self.gw, &req.input.bucket).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        buckets::location(&self.gw, &req.input.bucket).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        objects::put(&self.gw, req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        objects::get(&self.gw, req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        objects::head(&self.gw, req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        objects::delete(&self.gw, req.input).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        objects::delete_many(&self.gw, req.input).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        objects::copy(&self.gw, req.input).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        multipart::create(&self.gw, req.input).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(&self.gw, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        multipart::upload_part_copy(&self.gw, req.input).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        multipart::complete(&self.gw, req.input).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort(&self.gw, req.input).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        multipart::list_parts(&self.gw, req.input).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        multipart::list_uploads(&self.gw, req.input).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        listing::v1(&self.gw, req.input).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        listing::v2(&self.gw, req.input).await
    }
}
