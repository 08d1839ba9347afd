//! Viewers and players: signed URLs covering a whole HLS tree, CORS for players on other
//! origins, and transcoding requests forwarded to the coordinator. Real nodes, a real
//! gateway and a real coordinator, in-process on loopback.

mod common;

use common::{put, stack, KEY};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn sign(base: &str, object: &str, expires_in: u64) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/v1/sign"))
        .bearer_auth(KEY)
        .json(&json!({"object": object, "expires_in": expires_in}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_signed_url_opens_the_whole_hls_tree_and_nothing_else() {
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
    put(&base, "media/secret.mp4", b"not for viewers").await;
    let r = sign(&base, "media/v.mp4.hls/master.m3u8", 600).await;
    assert_eq!(r.status(), StatusCode::OK);
    let signed: Value = r.json().await.unwrap();
    let path = signed["path"].as_str().unwrap();
    assert_eq!(signed["prefix"], "v.mp4.hls/");
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
    let outside = viewer
        .get(format!("{base}/v1/s/{token}/media/secret.mp4"))
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), StatusCode::FORBIDDEN);
    let longer = token.replacen(|c: char| c.is_ascii_digit(), "9", 1);
    let forged = viewer
        .get(format!("{base}/v1/s/{longer}/media/v.mp4.hls/master.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let junk = viewer
        .get(format!("{base}/v1/s/junk/media/v.mp4.hls/master.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(junk.status(), StatusCode::BAD_REQUEST);
    // Without a token or key, nothing.
    let plain = viewer
        .get(format!("{base}/v1/o/media/v.mp4.hls/master.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::UNAUTHORIZED);
    // Bad requests to sign.
    assert_eq!(
        sign(&base, "media/x", 0).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        sign(&base, "media/x", 8 * 24 * 3600).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        sign(&base, "nobucket", 60).await.status(),
        StatusCode::BAD_REQUEST
    );
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
