//! The little of the gateway's public API the transcoder needs.

use kura_cluster::auth::Secret;
use serde::Deserialize;

use crate::coordinator::CoordinatorConfig;
use crate::error::{Result, TranscodeError};

/// Longest one listing page from the gateway may take: a page is at most 1000 names,
/// which a healthy gateway answers in well under a second; a hung one must not hold a
/// batch submission (and its HTTP request) forever.
const GATEWAY_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One object of a listing: what a batch needs to choose its sources.
#[derive(Clone, Debug, Deserialize)]
pub struct Listed {
    /// Key.
    pub key: String,
    /// Current ETag.
    #[serde(default)]
    pub etag: String,
    /// Stored Content-Type.
    #[serde(default)]
    pub content_type: Option<String>,
}

#[derive(Deserialize)]
struct ListPage {
    objects: Vec<Listed>,
    next_after: Option<String>,
}

/// The objects of `bucket` under `prefix`, following pages, at most `max`.
pub async fn list_keys(
    cfg: &CoordinatorConfig,
    bucket: &str,
    prefix: &str,
    max: usize,
) -> Result<Vec<Listed>> {
    let (Some(gateway), Some(key)) = (
        cfg.gateway.as_deref(),
        cfg.gateway_api_key.as_ref().map(Secret::expose),
    ) else {
        return Err(TranscodeError::BadRequest(
            "batches need the coordinator's --gateway and --gateway-api-key".into(),
        ));
    };
    let http = reqwest::Client::builder()
        .connect_timeout(kura_cluster::client::CONNECT_TIMEOUT)
        .timeout(GATEWAY_CALL_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(crate::error::http("gateway client"))?;
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut q = vec![
            ("prefix", prefix.to_string()),
            ("limit", "1000".to_string()),
        ];
        if let Some(a) = &after {
            q.push(("after", a.clone()));
        }
        let resp = http
            .get(format!("{}/v1/o/{bucket}", gateway.trim_end_matches('/')))
            .bearer_auth(key)
            .query(&q)
            .send()
            .await
            .map_err(crate::error::http("listing"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(TranscodeError::Refused {
                what: "listing",
                status,
                body,
            });
        }
        let page: ListPage = resp
            .json()
            .await
            .map_err(crate::error::http("listing answer"))?;
        keys.extend(page.objects);
        if keys.len() > max {
            return Err(TranscodeError::BadRequest(format!(
                "more than {max} objects under the prefix; split the batch"
            )));
        }
        match page.next_after {
            Some(a) => after = Some(a),
            None => return Ok(keys),
        }
    }
}
