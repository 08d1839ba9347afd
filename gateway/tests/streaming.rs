//! Viewers and players: signed URLs covering a whole HLS tree, CORS for players on other
//! origins, and transcoding requests forwarded to the coordinator. Real nodes, a real
//! gateway and a real coordinator, in-process on loopback.

mod common;

use common::{put, stack, KEY};
use kura_cluster::signed::SigningKey;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn sign_with(base: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/v1/sign"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn sign(base: &str, object: &str, expires_in: u64) -> reqwest::Response {
    sign_with(base, json!({"object": object, "expires_in": expires_in})).await
}

async fn status(url: String) -> StatusCode {
    reqwest::get(url).await.unwrap().status()
}

#[tokio::test]
async fn a_signed_url_opens_one_object_unless_a_tree_is_asked_for() {
    let s = stack().await;
    let base = s.gateway.url();
    put(
        &base,
        "media/v.mp4.hls/master.m3u8",
        b"#EXTM3U\nv360p/index.m3u8\n",
    )
    .await;
    put(
        &base,
        "media/v.mp4.hls/v360p/index.m3u8",
        b"#EXTM3U\na5/seg00000.ts\n",
    )
    .await;
    put(&base, "media/v.mp4.hls/v360p/a5/seg00000.ts", b"TS bytes").await;
    put(&base, "media/v.mp4.hlsx", b"beside the tree").await;
    put(&base, "media/secret.mp4", b"not for viewers").await;
    put(&base, "media/photo.jpg", b"photo").await;
    put(&base, "media/photo.jpg.bak", b"backup").await;

    // By default: exactly the object.
    let r = sign(&base, "media/photo.jpg", 600).await;
    assert_eq!(r.status(), StatusCode::OK);
    let signed: Value = r.json().await.unwrap();
    assert!(signed.get("tree").is_none(), "{signed}");
    assert_eq!(signed["key_id"], "c");
    let path = signed["path"].as_str().unwrap();
    assert_eq!(status(format!("{base}{path}")).await, StatusCode::OK);
    let token = path.split('/').nth(3).unwrap();
    for other in ["media/photo.jpg.bak", "media/secret.mp4", "media/photo.jp"] {
        let url = format!("{base}/v1/s/{token}/{other}");
        assert_eq!(status(url).await, StatusCode::FORBIDDEN, "{other}");
    }
    let r: Value = sign(&base, "media/v.mp4.hls/master.m3u8", 600)
        .await
        .json()
        .await
        .unwrap();
    let dir = r["path"].as_str().unwrap().trim_end_matches("master.m3u8");
    let sibling = format!("{base}{dir}v360p/index.m3u8");
    assert_eq!(status(sibling).await, StatusCode::FORBIDDEN);

    // Asked for: the HLS tree, and nothing beside it.
    let r = sign_with(
        &base,
        json!({"object": "media/v.mp4.hls/master.m3u8", "expires_in": 600, "tree": "v.mp4.hls/"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let signed: Value = r.json().await.unwrap();
    let path = signed["path"].as_str().unwrap();
    assert_eq!(signed["tree"], "v.mp4.hls/");
    let viewer = reqwest::Client::new();
    let master = viewer.get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(master.status(), StatusCode::OK);
    assert_eq!(master.text().await.unwrap(), "#EXTM3U\nv360p/index.m3u8\n");
    // Relative URIs from the playlists resolve under the same token.
    let dir = path.trim_end_matches("master.m3u8");
    let media = viewer
        .get(format!("{base}{dir}v360p/index.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(media.status(), StatusCode::OK);
    let seg = viewer
        .get(format!("{base}{dir}v360p/a5/seg00000.ts"))
        .header("range", "bytes=3-")
        .send()
        .await
        .unwrap();
    assert_eq!(seg.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(seg.bytes().await.unwrap().as_ref(), b"bytes");
    // The same token does not open anything outside the tree, and tampering fails.
    let token = path.split('/').nth(3).unwrap();
    for (other, want) in [
        ("media/secret.mp4", StatusCode::FORBIDDEN),
        ("media/v.mp4.hlsx", StatusCode::FORBIDDEN),
        ("other/v.mp4.hls/master.m3u8", StatusCode::FORBIDDEN),
        // Names are checked before the token.
        ("media/v.mp4.hls/a%01b", StatusCode::BAD_REQUEST),
        ("Media/v.mp4.hls/master.m3u8", StatusCode::BAD_REQUEST),
    ] {
        let url = format!("{base}/v1/s/{token}/{other}");
        assert_eq!(status(url).await, want, "{other}");
    }
    let later = token.replacen(".t10.", ".t10.9", 1);
    let url = format!("{base}/v1/s/{later}/media/v.mp4.hls/master.m3u8");
    assert_eq!(status(url).await, StatusCode::FORBIDDEN);
    let url = format!("{base}/v1/s/junk/media/v.mp4.hls/master.m3u8");
    assert_eq!(status(url).await, StatusCode::BAD_REQUEST);
    // Without a token or key, nothing.
    let url = format!("{base}/v1/o/media/v.mp4.hls/master.m3u8");
    assert_eq!(status(url).await, StatusCode::UNAUTHORIZED);
    // Bad requests to sign: lifetimes, names, trees that are no folder of the key.
    for body in [
        json!({"object": "media/x", "expires_in": 0}),
        json!({"object": "media/x", "expires_in": 8 * 24 * 3600}),
        json!({"object": "nobucket", "expires_in": 60}),
        json!({"object": "media/a/b", "expires_in": 60, "tree": ""}),
        json!({"object": "media/a/b", "expires_in": 60, "tree": "a"}),
        json!({"object": "media/ab/c", "expires_in": 60, "tree": "a/"}),
    ] {
        let r = sign_with(&base, body.clone()).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    // The old `prefix` field is refused, not ignored (a caller relying on it must not
    // silently get less, or more, than it asked for).
    let body = json!({"object": "media/x", "expires_in": 60, "prefix": "x"});
    let r = sign_with(&base, body).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    s.stop().await;
}

/// A gateway like the stack's, with these signing keys.
async fn gateway_with_keys(s: &common::Stack, keys: &[&str]) -> kura_gateway::RunningGateway {
    let mut config = s.config.clone();
    config.url_signing_keys = keys
        .iter()
        .map(|id| SigningKey::new(id, &format!("{id}-signing-secret-0123456789abcdef")).unwrap())
        .collect();
    kura_gateway::start(config).await.unwrap()
}

#[tokio::test]
async fn signing_keys_rotate_and_a_retired_key_revokes_its_urls_and_tokens() {
    let s = stack().await;
    put(&s.gateway.url(), "media/a.txt", b"hello").await;
    let old = gateway_with_keys(&s, &["k1"]).await;
    let rotating = gateway_with_keys(&s, &["k2", "k1"]).await;
    let retired = gateway_with_keys(&s, &["k2"]).await;
    let mint = |g: &kura_gateway::RunningGateway| {
        let base = g.url();
        async move {
            let r: Value = sign(&base, "media/a.txt", 600).await.json().await.unwrap();
            (
                r["key_id"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
            )
        }
    };
    let (id_old, by_old) = mint(&old).await;
    let (id_new, by_new) = mint(&rotating).await;
    assert_eq!((id_old.as_str(), id_new.as_str()), ("k1", "k2"));
    for (g, path, want) in [
        (&old, &by_old, StatusCode::OK),
        (&rotating, &by_old, StatusCode::OK),
        (&retired, &by_old, StatusCode::FORBIDDEN),
        (&old, &by_new, StatusCode::FORBIDDEN),
        (&rotating, &by_new, StatusCode::OK),
        (&retired, &by_new, StatusCode::OK),
    ] {
        assert_eq!(
            status(format!("{}{path}", g.url())).await,
            want,
            "{path} on {}",
            g.url()
        );
    }
    // The derived default key is not accepted where keys are configured.
    let (_, by_default) = mint(&s.gateway).await;
    let url = format!("{}{by_default}", retired.url());
    assert_eq!(status(url).await, StatusCode::FORBIDDEN);
    // Upload tokens follow the same keys.
    let token = |g: &kura_gateway::RunningGateway| {
        let base = g.url();
        async move {
            let r: Value = reqwest::Client::new()
                .post(format!("{base}/v1/upload-tokens"))
                .bearer_auth(KEY)
                .json(&json!({"bucket": "media", "key": "up.bin"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r["token"].as_str().unwrap().to_string()
        }
    };
    let old_token = token(&old).await;
    for (g, want) in [
        (&rotating, StatusCode::CREATED),
        (&retired, StatusCode::FORBIDDEN),
    ] {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/uploads", g.url()))
            .header("tus-resumable", "1.0.0")
            .header("upload-length", "5")
            .header("upload-token", &old_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{}", g.url());
    }
    for g in [old, rotating, retired] {
        g.shutdown().await.unwrap();
    }
    s.stop().await;
}

#[tokio::test]
async fn an_expired_signed_url_is_refused() {
    let s = stack().await;
    let base = s.gateway.url();
    put(&base, "media/a.txt", b"hello").await;
    let r: Value = sign(&base, "media/a.txt", 1).await.json().await.unwrap();
    let url = format!("{base}{}", r["path"].as_str().unwrap());
    assert_eq!(reqwest::get(&url).await.unwrap().status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        reqwest::get(&url).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    s.stop().await;
}

#[tokio::test]
async fn players_on_allowed_origins_get_cors_with_range_headers() {
    let s = stack().await;
    let base = s.gateway.url();
    put(&base, "media/a.txt", b"hello world").await;
    let http = reqwest::Client::new();
    let pre = http
        .request(reqwest::Method::OPTIONS, format!("{base}/v1/o/media/a.txt"))
        .header("origin", "https://player.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "range")
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success(), "{}", pre.status());
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://player.example"
    );
    let allowed = pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("range"), "{allowed}");
    let get = http
        .get(format!("{base}/v1/o/media/a.txt"))
        .bearer_auth(KEY)
        .header("origin", "https://player.example")
        .header("range", "bytes=0-4")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        get.headers()["access-control-allow-origin"],
        "https://player.example"
    );
    let exposed = get.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for h in ["content-range", "accept-ranges", "content-length"] {
        assert!(exposed.contains(h), "{exposed}");
    }
    let other = http
        .get(format!("{base}/v1/o/media/a.txt"))
        .bearer_auth(KEY)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    s.stop().await;
}

#[tokio::test]
async fn uploads_can_submit_transcoding_and_jobs_are_reachable_through_the_gateway() {
    let s = stack().await;
    let base = s.gateway.url();
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{base}/v1/o/media/clip.mp4?transcode=default"))
        .bearer_auth(KEY)
        .body(&b"not really a video"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let up: Value = r.json().await.unwrap();
    let id = up["job"]["id"]
        .as_str()
        .expect("job id in the upload's answer")
        .to_string();
    assert_eq!(up["job"]["source"], "media/clip.mp4");
    let job: Value = http
        .get(format!("{base}/v1/jobs/{id}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["state"], "queued");
    let listed: Value = http
        .get(format!("{base}/v1/jobs?state=queued"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let cancelled = http
        .delete(format!("{base}/v1/jobs/{id}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::OK);
    // An unknown profile: the object is stored, the job refused, both reported.
    let r = http
        .put(format!("{base}/v1/o/media/clip2.mp4?transcode=nope"))
        .bearer_auth(KEY)
        .body(&b"x"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let up: Value = r.json().await.unwrap();
    assert!(
        up["job_error"]
            .as_str()
            .unwrap()
            .contains("unknown profile"),
        "{up}"
    );
    // The job API needs a key through the gateway too.
    let anon = http.get(format!("{base}/v1/jobs")).send().await.unwrap();
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    s.stop().await;
}
