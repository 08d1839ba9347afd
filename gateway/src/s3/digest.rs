//! ETags and checksums as S3 clients check them. Every S3 upload computes the MD5 of
//! its body (the ETag S3 clients compare with what they sent) and whatever checksums
//! the request names (`x-amz-checksum-*` headers, `x-amz-sdk-checksum-algorithm`, or an
//! `aws-chunked` trailer, which current SDKs send by default), while it streams in.
//! They are checked before the object becomes visible: a mismatch is `BadDigest` and
//! nothing is stored. kura's own integrity (blake3, verified on every read) is separate.

use base64::Engine as _;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Md5};
use std::sync::Arc;

use s3s::dto::{Checksum, ChecksumAlgorithm, StreamingBlob};
use s3s::{s3_error, S3ErrorCode, S3Result, TrailingHeaders};

use super::error::to_s3;
use crate::upload::{self, BodyDigest, StoredBody};
use crate::Gateway;

/// The digests of one S3 upload.
pub struct S3Digest {
    md5: Md5,
    checksums: ChecksumHasher,
}

impl BodyDigest for S3Digest {
    fn update(&mut self, data: &[u8]) {
        self.md5.update(data);
        self.checksums.update(data);
    }
}

/// The [`Claimed`] digests of a request input with S3's usual body fields
/// (`PutObjectInput`, `UploadPartInput`: the same field names on different types).
macro_rules! claimed {
    ($input:expr) => {
        $crate::s3::digest::Claimed {
            content_md5: $input.content_md5.clone(),
            checksums: s3s::dto::Checksum {
                checksum_crc32: $input.checksum_crc32.clone(),
                checksum_crc32c: $input.checksum_crc32c.clone(),
                checksum_crc64nvme: $input.checksum_crc64nvme.clone(),
                checksum_sha1: $input.checksum_sha1.clone(),
                checksum_sha256: $input.checksum_sha256.clone(),
                checksum_type: None,
            },
            algorithm: $input.checksum_algorithm.clone(),
        }
    };
}
pub(crate) use claimed;

/// What a body stored by [`store_checked`] becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreAs {
    /// A whole object (PutObject): a small one is kept inline in its record.
    Object,
    /// A part of a multipart upload: always chunks.
    Part,
}

/// Stores `body` (nothing visible yet) while computing its digests, then checks them
/// against `claimed` and any trailers. `missing` is the "not found" code of the
/// operation (see `to_s3`).
pub async fn store_checked(
    gw: &Arc<Gateway>,
    body: Option<StreamingBlob>,
    (claimed, store_as): (Claimed, StoreAs),
    trailers: Option<&TrailingHeaders>,
    missing: S3ErrorCode,
) -> S3Result<(StoredBody, Checked)> {
    let digest = S3Digest::new(&claimed)?;
    let body = body.ok_or_else(|| s3_error!(IncompleteBody, "no request body"))?;
    let stored = match store_as {
        StoreAs::Object => upload::store_object(gw, body, digest).await,
        StoreAs::Part => upload::store_body(gw, body, digest).await,
    };
    let (stored, digest) = stored.map_err(|e| to_s3(e, missing))?;
    let checked = digest.check(claimed, trailers)?;
    Ok((stored, checked))
}

/// What the client said the body's digests are.
#[derive(Debug, Default)]
pub struct Claimed {
    /// `Content-MD5`, base64.
    pub content_md5: Option<String>,
    /// `x-amz-checksum-*` headers (base64).
    pub checksums: Checksum,
    /// `x-amz-checksum-algorithm` / `x-amz-sdk-checksum-algorithm` / the trailer's name.
    pub algorithm: Option<ChecksumAlgorithm>,
}

/// What an upload's digests came to, once checked.
#[derive(Debug)]
pub struct Checked {
    /// MD5 hex.
    pub md5_hex: String,
    /// The raw MD5 (multipart ETags hash these).
    pub md5_raw: [u8; 16],
    /// The checksums computed (those the request named).
    pub checksums: Checksum,
}

impl S3Digest {
    /// Digests for an upload that claims `claimed`.
    pub fn new(claimed: &Claimed) -> S3Result<Self> {
        let c = &claimed.checksums;
        let mut checksums = ChecksumHasher::default();
        if c.checksum_crc32.is_some() {
            checksums.crc32 = Some(Default::default());
        }
        if c.checksum_crc32c.is_some() {
            checksums.crc32c = Some(Default::default());
        }
        if c.checksum_sha1.is_some() {
            checksums.sha1 = Some(Default::default());
        }
        if c.checksum_sha256.is_some() {
            checksums.sha256 = Some(Default::default());
        }
        if c.checksum_crc64nvme.is_some() {
            checksums.crc64nvme = Some(Default::default());
        }
        if let Some(alg) = &claimed.algorithm {
            match alg.as_str() {
                ChecksumAlgorithm::CRC32 => checksums.crc32 = Some(Default::default()),
                ChecksumAlgorithm::CRC32C => checksums.crc32c = Some(Default::default()),
                ChecksumAlgorithm::SHA1 => checksums.sha1 = Some(Default::default()),
                ChecksumAlgorithm::SHA256 => checksums.sha256 = Some(Default::default()),
                ChecksumAlgorithm::CRC64NVME => checksums.crc64nvme = Some(Default::default()),
                other => {
                    return Err(s3_error!(
                        InvalidArgument,
                        "unsupported checksum algorithm {other}"
                    ))
                }
            }
        }
        Ok(Self {
            md5: Md5::new(),
            checksums,
        })
    }

    /// Checks the body's digests against the claims (the headers, then any trailer that
    /// arrived after the body): `InvalidDigest` for a malformed `Content-MD5`,
    /// `BadDigest` for any mismatch.
    pub fn check(self, claimed: Claimed, trailers: Option<&TrailingHeaders>) -> S3Result<Checked> {
        let md5_raw: [u8; 16] = self.md5.finalize();
        if let Some(given) = &claimed.content_md5 {
            let given = base64::engine::general_purpose::STANDARD
                .decode(given.trim())
                .map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not valid base64"))?;
            if given.len() != 16 {
                return Err(s3_error!(InvalidDigest, "Content-MD5 is not 16 bytes"));
            }
            if given != md5_raw {
                return Err(s3_error!(
                    BadDigest,
                    "The Content-MD5 you specified did not match what we received."
                ));
            }
        }
        let mut expected = claimed.checksums;
        if let Some(t) = trailers.and_then(TrailingHeaders::take) {
            let get = |name: &str| {
                t.get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            expected.checksum_crc32 = get("x-amz-checksum-crc32").or(expected.checksum_crc32);
            expected.checksum_crc32c = get("x-amz-checksum-crc32c").or(expected.checksum_crc32c);
            expected.checksum_sha1 = get("x-amz-checksum-sha1").or(expected.checksum_sha1);
            expected.checksum_sha256 = get("x-amz-checksum-sha256").or(expected.checksum_sha256);
            expected.checksum_crc64nvme =
                get("x-amz-checksum-crc64nvme").or(expected.checksum_crc64nvme);
        }
        let computed = self.checksums.finalize();
        let pairs = [
            ("CRC32", &expected.checksum_crc32, &computed.checksum_crc32),
            (
                "CRC32C",
                &expected.checksum_crc32c,
                &computed.checksum_crc32c,
            ),
            ("SHA1", &expected.checksum_sha1, &computed.checksum_sha1),
            (
                "SHA256",
                &expected.checksum_sha256,
                &computed.checksum_sha256,
            ),
            (
                "CRC64NVME",
                &expected.checksum_crc64nvme,
                &computed.checksum_crc64nvme,
            ),
        ];
        for (name, want, got) in pairs {
            if let Some(want) = want {
                if Some(want) != got.as_ref() {
                    return Err(s3_error!(
                        BadDigest,
                        "The {name} you specified did not match the calculated checksum."
                    ));
                }
            }
        }
        Ok(Checked {
            md5_hex: hex::encode(md5_raw),
            md5_raw,
            checksums: computed,
        })
    }
}
