//! The auth matrix of the gateway's native API: every route of `kura_gateway::routes`
//! (the table the router is built from) × every credential it must refuse — none, a
//! wrong one, another role's, an expired one — is refused with the right status, and
//! nothing changed afterwards. A route added to the table is covered without a line
//! here; a new kind of access does not compile until it is handled below.

mod common;

use common::{put, stack, ADMIN, KEY, SECRET};
use kura_cluster::signed::{self, Scope, SigningKey};
use kura_gateway::routes::{self, Access, Route};
use kura_gateway::upload_token::{sign_with, UploadGrant};
use reqwest::StatusCode;
use serde_json::{json, Value};

const BUCKET: &str = "authz";
const OBJECT: &str = "obj.txt";
const WRONG: &str = "not-a-credential-of-this-gateway";

/// What a refused request presents.
#[derive(Clone, Debug)]
enum Cred {
    Nothing,
    Bearer(String, &'static str),
    UploadToken(String, &'static str),
}

struct Case {
    path: String,
    cred: Cred,
    want: StatusCode,
}

/// The path to call for `route`, placeholders filled with things that exist.
fn fill(route: &Route, upload_id: &str, signed_token: &str) -> String {
    route
        .path
        .replace("{bucket}", BUCKET)
        .replace("{*key}", OBJECT)
        .replace("{*rest}", "0000000000000000")
        .replace("{token}", signed_token)
        .replace(
            "{id}",
            if route.path.starts_with("/v1/uploads") {
                upload_id
            } else {
                "n0"
            },
        )
}

/// Everything a refused call could have changed, as the API key and admin see it.
async fn snapshot(base: &str, upload_id: &str) -> Value {
    let http = reqwest::Client::new();
    let get = |path: &str, token: &str| {
        let req = http.get(format!("{base}{path}")).bearer_auth(token);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let mut cluster = get("/v1/admin/cluster", ADMIN).await;
    // Live figures (health probes, rates) move by themselves; membership does not.
    let nodes: Vec<Value> = cluster["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| json!([n["id"], n["state"], n["weight"], n["addr"]]))
        .collect();
    cluster = json!({"epoch": cluster["epoch"], "nodes": nodes});
    let offset = http
        .head(format!("{base}/v1/uploads/{upload_id}"))
        .bearer_auth(KEY)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap()
        .headers()
        .get("upload-offset")
        .map(|v| v.to_str().unwrap().to_string());
    json!({
        "buckets": get("/v1/buckets", KEY).await,
        "objects": get(&format!("/v1/o/{BUCKET}"), KEY).await,
        "jobs": get("/v1/jobs", KEY).await,
        "cluster": cluster,
        "upload_offset": offset,
    })
}

/// The credentials `route` must refuse, and with what.
fn refusals(route: &Route, tokens: &Tokens) -> Vec<(Cred, StatusCode)> {
    let bearer = |v: &str, what| Cred::Bearer(v.to_string(), what);
    let unauthorized = StatusCode::UNAUTHORIZED;
    match route.access {
        Access::Open => Vec::new(),
        Access::ApiKey => vec![
            (Cred::Nothing, unauthorized),
            (bearer(WRONG, "wrong"), unauthorized),
            (bearer(ADMIN, "admin token"), unauthorized),
            (bearer(SECRET, "cluster secret"), unauthorized),
            (bearer(&tokens.upload, "upload token"), unauthorized),
        ],
        Access::Admin => vec![
            (Cred::Nothing, unauthorized),
            (bearer(WRONG, "wrong"), unauthorized),
            (bearer(KEY, "API key"), unauthorized),
            (bearer(SECRET, "cluster secret"), unauthorized),
            (bearer(&tokens.upload, "upload token"), unauthorized),
        ],
        Access::Uploader => vec![
            (Cred::Nothing, unauthorized),
            (bearer(WRONG, "wrong"), unauthorized),
            (bearer(ADMIN, "admin token"), unauthorized),
            (bearer(SECRET, "cluster secret"), unauthorized),
            (
                Cred::UploadToken(tokens.expired_upload.clone(), "expired upload token"),
                StatusCode::FORBIDDEN,
            ),
            (
                Cred::UploadToken(tokens.forged_upload.clone(), "forged upload token"),
                StatusCode::FORBIDDEN,
            ),
        ],
        // No gateway route takes it (the gateway refuses all such routes, should one
        // appear), and it opens nothing else here.
        Access::ClusterSecret => vec![
            (Cred::Nothing, unauthorized),
            (bearer(WRONG, "wrong"), unauthorized),
            (bearer(KEY, "API key"), unauthorized),
            (bearer(ADMIN, "admin token"), unauthorized),
        ],
        // The credential is the path's token: see `signed_cases`.
        Access::Signed => vec![
            (Cred::Nothing, StatusCode::FORBIDDEN),
            (
                bearer(KEY, "API key beside an expired token"),
                StatusCode::FORBIDDEN,
            ),
        ],
    }
}

struct Tokens {
    upload: String,
    expired_upload: String,
    forged_upload: String,
}

fn upload_grant(exp: u64) -> UploadGrant {
    UploadGrant {
        bucket: BUCKET.into(),
        key: Some("up.bin".into()),
        prefix: None,
        exp,
        max_bytes: None,
        content_types: Vec::new(),
        transcode: None,
    }
}

#[tokio::test]
async fn every_route_refuses_every_wrong_credential_and_changes_nothing() {
    let s = stack().await;
    let base = s.gateway.url();
    let http = reqwest::Client::new();
    put(&base, &format!("{BUCKET}/{OBJECT}"), b"kept as it is").await;
    // A resumable upload in progress, so refusals on it are not just "no such upload".
    let created = http
        .post(format!("{base}/v1/uploads"))
        .bearer_auth(KEY)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "10")
        .header("upload-metadata", "bucket YXV0aHo=,key dXAuYmlu")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_string();
    let upload_id = location.rsplit('/').next().unwrap().to_string();
    // The stack signs with the key derived from its cluster secret.
    let signer = SigningKey::derived(SECRET);
    let valid: Value = http
        .post(format!("{base}/v1/upload-tokens"))
        .bearer_auth(KEY)
        .json(&json!({"bucket": BUCKET, "key": "up.bin"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let other = SigningKey::new("x", "another-signing-secret-0123456789ab").unwrap();
    let tokens = Tokens {
        upload: valid["token"].as_str().unwrap().to_string(),
        expired_upload: sign_with(&signer, &upload_grant(1)).unwrap(),
        forged_upload: sign_with(&other, &upload_grant(u64::MAX / 2)).unwrap(),
    };
    let expired_url = signed::token(&signer, BUCKET, OBJECT, Scope::Object, 1).unwrap();

    let before = snapshot(&base, &upload_id).await;
    let table = routes::table();
    assert!(table.len() >= 20, "{} routes", table.len());
    let mut cases = Vec::new();
    for route in &table {
        let path = fill(route, &upload_id, &expired_url);
        for (cred, want) in refusals(route, &tokens) {
            cases.push((
                route.clone(),
                Case {
                    path: path.clone(),
                    cred,
                    want,
                },
            ));
        }
        if route.access == Access::Signed {
            let forged =
                signed::token(&other, BUCKET, OBJECT, Scope::Object, u64::MAX / 2).unwrap();
            let for_other =
                signed::token(&signer, BUCKET, "other.txt", Scope::Object, u64::MAX / 2).unwrap();
            for (token, want) in [
                ("junk", StatusCode::BAD_REQUEST),
                (forged.as_str(), StatusCode::FORBIDDEN),
                (for_other.as_str(), StatusCode::FORBIDDEN),
            ] {
                let path = fill(route, &upload_id, token);
                cases.push((
                    route.clone(),
                    Case {
                        path,
                        cred: Cred::Nothing,
                        want,
                    },
                ));
            }
        }
    }
    let mut failures = Vec::new();
    for (route, case) in &cases {
        for method in &route.methods {
            let mut req = http
                .request(method.clone(), format!("{base}{}", case.path))
                .header("tus-resumable", "1.0.0")
                .header("upload-offset", "0")
                .header("upload-length", "10")
                .header("content-type", "application/offset+octet-stream")
                .body(&b"0123456789"[..]);
            let what = match &case.cred {
                Cred::Nothing => "nothing",
                Cred::Bearer(v, what) => {
                    req = req.bearer_auth(v);
                    what
                }
                Cred::UploadToken(v, what) => {
                    req = req.header("upload-token", v);
                    what
                }
            };
            let got = req.send().await.unwrap().status();
            if got != case.want {
                failures.push(format!(
                    "{method} {} with {what}: {got}, want {}",
                    case.path, case.want
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let refused: usize = cases.iter().map(|(r, _)| r.methods.len()).sum();
    assert!(refused > 100, "only {refused} refusals tried");
    assert_eq!(
        snapshot(&base, &upload_id).await,
        before,
        "a refused call changed something"
    );
    // Open routes answer without a credential.
    for route in table.iter().filter(|r| r.access == Access::Open) {
        let r = http
            .get(format!("{base}{}", route.path))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}: {}", route.path, r.status());
    }
    s.stop().await;
}
