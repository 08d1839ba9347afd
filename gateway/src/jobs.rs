//! Transcoding through the gateway: `/v1/jobs*` and `/v1/batches*` are forwarded to the
//! coordinator with the caller's own API key (the coordinator checks the same keys), and
//! `PUT ...?transcode=PROFILE` submits a job for the object just stored.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use kura_cluster::failover::{Endpoints, Repeat};

use crate::error::{GatewayError, Result};
use crate::Gateway;

/// Largest job API body forwarded (a job or batch submission is a few hundred bytes).
const MAX_JOB_BODY: usize = 64 * 1024;

fn coordinators(gw: &Gateway) -> Result<&Endpoints> {
    gw.coordinators.as_ref().ok_or_else(|| {
        GatewayError::NotConfigured("this gateway has no coordinator configured".into())
    })
}

/// Refuses a path with `.`/`..` segments (also percent-encoded) or an encoded `/`: the
/// URL the coordinator is called with would resolve them, and `/v1/jobs/../tasks/lease`
/// would reach a route the gateway does not forward.
fn check_forwarded_path(path: &str) -> Result<()> {
    for seg in path.split('/') {
        let lower = seg.to_ascii_lowercase();
        let dots = lower.replace("%2e", ".");
        if dots == "." || dots == ".." || lower.contains("%2f") || lower.contains("%5c") {
            return Err(GatewayError::BadRequest(
                "job paths cannot contain '.' or '..' segments or encoded slashes".into(),
            ));
        }
    }
    Ok(())
}

/// Forwards a job API request to the coordinator.
pub async fn forward(State(gw): State<Arc<Gateway>>, req: Request) -> Result<Response> {
    let coordinators = coordinators(&gw)?;
    check_forwarded_path(req.uri().path())?;
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let method = req.method().clone();
    let auth = req.headers().get(header::AUTHORIZATION).cloned();
    let body = axum::body::to_bytes(req.into_body(), MAX_JOB_BODY)
        .await
        .map_err(|e| GatewayError::BadRequest(format!("job request body: {e}")))?;
    // Reads and cancellations may be repeated on another coordinator; a submission
    // moves on only if it never reached the first (it would make two jobs).
    let repeat = if method.is_idempotent() {
        Repeat::Safe
    } else {
        Repeat::Once
    };
    let resp = coordinators
        .send(repeat, |base| {
            let mut out = gw
                .http
                .request(method.clone(), format!("{base}{path}"))
                .body(body.clone())
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(a) = &auth {
                out = out.header(header::AUTHORIZATION, a.clone());
            }
            out.send()
        })
        .await
        .map_err(GatewayError::Coordinator)?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = resp.bytes().await.map_err(GatewayError::Coordinator)?;
    Ok((
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(bytes),
    )
        .into_response())
}

/// Submits a transcoding job for `bucket/key`; returns the coordinator's JSON job.
pub async fn submit(
    gw: &Gateway,
    bucket: &str,
    key: &str,
    profile: &str,
    auth: &str,
) -> Result<serde_json::Value> {
    let body = serde_json::json!({ "source": format!("{bucket}/{key}"), "profile": profile });
    let resp = coordinators(gw)?
        .send(Repeat::Once, |base| {
            gw.http
                .post(format!("{base}/v1/jobs"))
                .header(header::AUTHORIZATION, auth)
                .json(&body)
                .send()
        })
        .await
        .map_err(GatewayError::Coordinator)?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.map_err(GatewayError::Coordinator)?;
    if !status.is_success() {
        let msg = body["message"]
            .as_str()
            .unwrap_or("job submission failed")
            .to_string();
        return Err(if status.is_client_error() {
            GatewayError::BadRequest(msg)
        } else {
            GatewayError::Unavailable(msg)
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::check_forwarded_path;

    #[test]
    fn paths_that_would_leave_the_job_api_are_refused() {
        assert!(check_forwarded_path("/v1/jobs/01abc").is_ok());
        assert!(check_forwarded_path("/v1/batches/x").is_ok());
        for bad in [
            "/v1/jobs/../tasks/lease",
            "/v1/jobs/%2e%2e/tasks/lease",
            "/v1/jobs/%2E./tasks",
            "/v1/jobs/./x",
            "/v1/jobs/a%2fb",
            "/v1/jobs/a%5Cb",
        ] {
            assert!(check_forwarded_path(bad).is_err(), "{bad}");
        }
    }
}
