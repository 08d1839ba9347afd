//! Reading sources from and writing outputs to the gateway, streamed through files.

use std::path::Path;

use futures::StreamExt;
use kura_cluster::names::encode_key_path;
use tokio::io::AsyncWriteExt;

use crate::error::Result;
use crate::model::FailureClass;

/// The gateway, as a worker uses it.
#[derive(Clone)]
pub struct Objects {
    base: String,
    api_key: String,
    http: reqwest::Client,
}

/// Why an object operation failed, classified for the coordinator (the message is what
/// the worker reports as the task's failure).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ObjectError {
    /// Class: a missing source is bad input; anything else is transient.
    pub class: FailureClass,
    /// What happened.
    pub message: String,
}

fn transient(message: String) -> ObjectError {
    ObjectError {
        class: FailureClass::Transient,
        message,
    }
}

/// Media type of an output file, by extension.
pub fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("ts") => "video/mp2t",
        Some("jpg") | Some("jpeg") => "image/jpeg",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

impl Objects {
    /// A client for the gateway at `base` with `api_key`.
    pub fn new(base: &str, api_key: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(kura_cluster::client::CONNECT_TIMEOUT)
            .build()
            .map_err(crate::error::http("gateway client"))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
            http,
        })
    }

    fn url(&self, object: &str) -> Result<String, ObjectError> {
        let (bucket, key) = object.split_once('/').ok_or_else(|| ObjectError {
            class: FailureClass::BadInput,
            message: format!("{object:?} is not bucket/key"),
        })?;
        Ok(format!(
            "{}/v1/o/{bucket}/{}",
            self.base,
            encode_key_path(key)
        ))
    }

    /// Streams `object` into the file `dest`; returns its size and ETag.
    pub async fn download(&self, object: &str, dest: &Path) -> Result<(u64, String), ObjectError> {
        let resp = self
            .http
            .get(self.url(object)?)
            .bearer_auth(&self.api_key)
            // The newest version, even if the gateway read the record a moment ago
            // (its record cache; see the gateway's `cache` module).
            .header(reqwest::header::CACHE_CONTROL, "no-cache")
            .send()
            .await
            .map_err(|e| transient(format!("downloading {object}: {e}")))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(ObjectError {
                class: FailureClass::BadInput,
                message: format!("source {object} does not exist"),
            });
        }
        if !resp.status().is_success() {
            return Err(transient(format!(
                "downloading {object}: {}",
                resp.status()
            )));
        }
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .trim_matches('"')
            .to_string();
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| transient(format!("creating {}: {e}", dest.display())))?;
        let mut stream = resp.bytes_stream();
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        while let Some(part) = stream.next().await {
            let part = part.map_err(|e| transient(format!("downloading {object}: {e}")))?;
            hasher.update(&part);
            size += part.len() as u64;
            file.write_all(&part)
                .await
                .map_err(|e| transient(format!("writing {}: {e}", dest.display())))?;
        }
        file.flush().await.map_err(|e| transient(e.to_string()))?;
        if !etag.is_empty()
            && kura_cluster::record::etag_is_content_hash(&etag)
            && hasher.finalize().to_hex().as_str() != etag
        {
            return Err(transient(format!(
                "download of {object} does not match its ETag"
            )));
        }
        Ok((size, etag))
    }

    /// Uploads the file `src` as `object`; returns its size.
    pub async fn upload(&self, src: &Path, object: &str) -> Result<u64, ObjectError> {
        let file = tokio::fs::File::open(src)
            .await
            .map_err(|e| transient(format!("opening {}: {e}", src.display())))?;
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        self.put(object, body, len).await?;
        Ok(len)
    }

    /// Uploads `bytes` as `object`.
    pub async fn upload_bytes(&self, bytes: Vec<u8>, object: &str) -> Result<(), ObjectError> {
        let len = bytes.len() as u64;
        self.put(object, reqwest::Body::from(bytes), len).await
    }

    async fn put(&self, object: &str, body: reqwest::Body, len: u64) -> Result<(), ObjectError> {
        let resp = self
            .http
            .put(self.url(object)?)
            .bearer_auth(&self.api_key)
            .header("content-type", content_type(object))
            .header("content-length", len)
            .body(body)
            .send()
            .await
            .map_err(|e| transient(format!("uploading {object}: {e}")))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(transient(format!("uploading {object}: {status} {text}")));
        }
        Ok(())
    }
}
