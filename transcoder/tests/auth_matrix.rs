//! The auth matrix of the coordinator: every route of its table
//! (`kura_transcoder::coordinator::http::routes`, which its router is built from) × no
//! credential, a wrong one, another role's → 401, and nothing changed.

use kura_cluster::routes::{refusals, Access, Presented, Route};
mod common;

use kura_transcoder::coordinator::start;
use reqwest::StatusCode;
use serde_json::{json, Value};

const KEY: &str = "matrix-user-api-key-0123456789";
const SECRET: &str = "matrix-cluster-secret-0123456789";

#[tokio::test]
async fn every_coordinator_route_refuses_every_wrong_credential_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(common::config(dir.path(), KEY, SECRET))
        .await
        .unwrap();
    let base = running.url();
    let http = reqwest::Client::new();
    let job: Value = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(KEY)
        .json(&json!({"source": "media/a.mp4", "profile": "default"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let jobs = || async {
        http.get(format!("{base}/v1/jobs"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let before = jobs().await;

    let routes = kura_transcoder::coordinator::http::routes();
    assert!(routes.len() >= 10, "{} routes", routes.len());
    let fill = |r: &Route| r.path.replace("{id}", &format!("{id}.0"));
    let cases = |r: &Route| {
        let wrong = |what, bearer: &str| Presented {
            what,
            bearer: Some(bearer.to_string()),
            want: StatusCode::UNAUTHORIZED,
        };
        let nothing = Presented {
            what: "nothing",
            bearer: None,
            want: StatusCode::UNAUTHORIZED,
        };
        match r.access {
            Access::Open => Vec::new(),
            Access::ClusterSecret => vec![
                nothing,
                wrong("a wrong secret", "not-the-cluster-secret-0123456789"),
                wrong("an API key", KEY),
            ],
            Access::ApiKey | Access::Admin | Access::Signed | Access::Uploader => vec![
                nothing,
                wrong("a wrong key", "not-an-api-key-0123456789abcdef"),
                wrong("the cluster secret", SECRET),
            ],
        }
    };
    let failures = refusals(&base, &routes, fill, cases).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(jobs().await, before, "a refused call changed the jobs");
    for r in routes.iter().filter(|r| r.access == Access::Open) {
        let got = reqwest::get(format!("{base}{}", r.path))
            .await
            .unwrap()
            .status();
        assert!(got.is_success(), "{}: {got}", r.path);
    }
    running.shutdown().await.unwrap();
}
