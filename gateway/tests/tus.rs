//! tus 1.0.0 resumable uploads, at the protocol level (real nodes and gateway,
//! in-process on loopback): creation with and without a first piece, offsets that only
//! ever count durable bytes (a PATCH that breaks off keeps what arrived), every refusal
//! with its status and nothing changed, termination, and signed upload tokens.

mod common;

use base64::Engine as _;
use bytes::Bytes;
use common::{pattern, stack, KEY};
use reqwest::{Client, Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bound on waiting for an answer that must come; only reached when broken.
const GUARD: std::time::Duration = std::time::Duration::from_secs(60);

fn meta(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k} {}",
                base64::engine::general_purpose::STANDARD.encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A tus request with the version header and `auth` (an API key or a token).
fn tus(c: &Client, method: Method, url: &str, auth: &str) -> reqwest::RequestBuilder {
    c.request(method, url)
        .header("tus-resumable", "1.0.0")
        .bearer_auth(auth)
}

async fn create(c: &Client, base: &str, auth: &str, len: usize, key: &str) -> String {
    let r = tus(c, Method::POST, &format!("{base}/v1/uploads"), auth)
        .header("upload-length", len.to_string())
        .header(
            "upload-metadata",
            meta(&[("bucket", "tus-bucket"), ("key", key)]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["tus-resumable"], "1.0.0");
    assert!(r.headers().contains_key("upload-expires"));
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with("/v1/uploads/"), "{loc}");
    format!("{base}{loc}")
}

async fn offset(c: &Client, url: &str, auth: &str) -> u64 {
    let r = tus(c, Method::HEAD, url, auth).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn patch(c: &Client, url: &str, auth: &str, at: u64, body: Vec<u8>) -> reqwest::Response {
    tus(c, Method::PATCH, url, auth)
        .header("upload-offset", at.to_string())
        .header("content-type", "application/offset+octet-stream")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn get(c: &Client, base: &str, key: &str) -> (StatusCode, Bytes) {
    let r = c
        .get(format!("{base}/v1/o/tus-bucket/{key}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    (r.status(), r.bytes().await.unwrap())
}

#[tokio::test]
async fn pieces_append_at_the_durable_offset_and_complete_the_object() {
    let stack = stack().await;
    let base = stack.gateway.url();
    let c = Client::new();
    let data = pattern(700_000, 1);
    let r = c
        .request(Method::OPTIONS, format!("{base}/v1/uploads"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["tus-version"], "1.0.0");
    assert!(r.headers()["tus-extension"]
        .to_str()
        .unwrap()
        .contains("creation-with-upload"));
    let url = create(&c, &base, KEY, data.len(), "a/video.bin").await;
    assert_eq!(offset(&c, &url, KEY).await, 0);
    // Refusals change nothing.
    let r = patch(&c, &url, KEY, 5, data[..10].to_vec()).await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "wrong offset");
    let r = tus(&c, Method::PATCH, &url, KEY)
        .header("upload-offset", "0")
        .header("content-type", "application/octet-stream")
        .body(data[..10].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = c
        .patch(&url)
        .bearer_auth(KEY)
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .body(data[..10].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::PRECONDITION_FAILED,
        "no Tus-Resumable"
    );
    assert_eq!(r.headers()["tus-version"], "1.0.0");
    let mut past = data.clone();
    past.push(0);
    let r = patch(&c, &url, KEY, 0, past).await;
    assert_eq!(
        r.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "past Upload-Length"
    );
    assert_eq!(offset(&c, &url, KEY).await, 0);
    // Three pieces.
    for (from, to) in [
        (0usize, 100_000usize),
        (100_000, 450_000),
        (450_000, 700_000),
    ] {
        let r = patch(&c, &url, KEY, from as u64, data[from..to].to_vec()).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(r.headers()["upload-offset"], to.to_string().as_str());
    }
    let (status, got) = get(&c, &base, "a/video.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&got[..], &data[..]);
    // Completed: the upload is gone.
    let r = tus(&c, Method::HEAD, &url, KEY).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    stack.stop().await;
}

#[tokio::test]
async fn a_piece_that_breaks_off_keeps_what_arrived() {
    let stack = stack().await;
    let base = stack.gateway.url();
    let c = Client::new();
    let data = pattern(3_000_000, 2);
    let url = create(&c, &base, KEY, data.len(), "broken.bin").await;
    // 1.2 MB of a 3 MB piece arrive, then the client stops sending (FIN): the piece
    // breaks off mid-body.
    let path = url.trim_start_matches(&base).to_string();
    let mut sock = tokio::net::TcpStream::connect(stack.gateway.addr())
        .await
        .unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ntus-resumable: 1.0.0\r\n\
         upload-offset: 0\r\ncontent-type: application/offset+octet-stream\r\n\
         content-length: {}\r\n\r\n",
        data.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&data[..1_200_000]).await.unwrap();
    sock.shutdown().await.unwrap();
    // The gateway answers (an error: the piece is incomplete) once it has stored what
    // arrived.
    let mut answer = Vec::new();
    tokio::time::timeout(GUARD, sock.read_to_end(&mut answer))
        .await
        .expect("no answer to a broken PATCH")
        .unwrap();
    assert!(
        !answer.starts_with(b"HTTP/1.1 204"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // Every byte that arrived is durable and counted; the rest is sent from there.
    let at = offset(&c, &url, KEY).await;
    assert_eq!(at, 1_200_000);
    let r = patch(&c, &url, KEY, at, data[at as usize..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (status, got) = get(&c, &base, "broken.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(got[..] == data[..], "the resumed object differs");
    stack.stop().await;
}

#[tokio::test]
async fn creation_with_upload_termination_and_empty_uploads() {
    let stack = stack().await;
    let base = stack.gateway.url();
    let c = Client::new();
    let data = pattern(200_000, 3);
    let r = tus(&c, Method::POST, &format!("{base}/v1/uploads"), KEY)
        .header("upload-length", data.len().to_string())
        .header(
            "upload-metadata",
            meta(&[
                ("bucket", "tus-bucket"),
                ("key", "one-shot.bin"),
                ("content-type", "video/mp4"),
            ]),
        )
        .header("content-type", "application/offset+octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["upload-offset"], "200000");
    let head = c
        .head(format!("{base}/v1/o/tus-bucket/one-shot.bin"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers()["content-type"], "video/mp4");
    // One piece: the ETag is the blake3 of the content.
    let etag = blake3::hash(&data).to_hex().to_string();
    assert_eq!(
        head.headers()["etag"].to_str().unwrap(),
        format!("\"{etag}\"")
    );
    // An empty upload is complete at creation.
    let url = create(&c, &base, KEY, 0, "empty.bin").await;
    assert_eq!(
        get(&c, &base, "empty.bin").await,
        (StatusCode::OK, Bytes::new())
    );
    assert_eq!(
        tus(&c, Method::HEAD, &url, KEY)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    // Termination.
    let url = create(&c, &base, KEY, 10, "gone.bin").await;
    patch(&c, &url, KEY, 0, b"12345".to_vec()).await;
    let r = tus(&c, Method::DELETE, &url, KEY).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        tus(&c, Method::HEAD, &url, KEY)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&c, &base, "gone.bin").await.0, StatusCode::NOT_FOUND);
    // Bad creations.
    for (len, md, want) in [
        (
            None,
            meta(&[("bucket", "tus-bucket"), ("key", "x")]),
            StatusCode::BAD_REQUEST,
        ),
        (
            Some("10"),
            meta(&[("bucket", "tus-bucket")]),
            StatusCode::BAD_REQUEST,
        ),
        (
            Some("10"),
            meta(&[("bucket", "Bad_Bucket"), ("key", "x")]),
            StatusCode::BAD_REQUEST,
        ),
        (
            Some("10"),
            "bucket !!!".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Some("99999999999999999"),
            meta(&[("bucket", "tus-bucket"), ("key", "x")]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let mut req =
            tus(&c, Method::POST, &format!("{base}/v1/uploads"), KEY).header("upload-metadata", md);
        if let Some(l) = len {
            req = req.header("upload-length", l);
        }
        assert_eq!(req.send().await.unwrap().status(), want);
    }
    let r = c
        .post(format!("{base}/v1/uploads"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    stack.stop().await;
}

#[tokio::test]
async fn upload_tokens_allow_exactly_their_scope() {
    let stack = stack().await;
    let base = stack.gateway.url();
    let c = Client::new();
    let token = |body: serde_json::Value| {
        let c = c.clone();
        let base = base.clone();
        async move {
            let r = c
                .post(format!("{base}/v1/upload-tokens"))
                .bearer_auth(KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (s, t) = token(serde_json::json!({"bucket": "tus-bucket", "key": "user/7/clip.mp4", "max_bytes": 1000, "expires_in": 600})).await;
    assert_eq!(s, StatusCode::CREATED);
    let t = t["token"].as_str().unwrap().to_string();
    let data = pattern(1000, 4);
    let url = create(&c, &base, &t, data.len(), "user/7/clip.mp4").await;
    let r = patch(&c, &url, &t, 0, data.clone()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get(&c, &base, "user/7/clip.mp4").await,
        (StatusCode::OK, Bytes::from(data))
    );
    // Outside the grant: another key, too large, a forged or altered token.
    let other = tus(&c, Method::POST, &format!("{base}/v1/uploads"), &t)
        .header("upload-length", "10")
        .header(
            "upload-metadata",
            meta(&[("bucket", "tus-bucket"), ("key", "user/8/x")]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    let big = tus(&c, Method::POST, &format!("{base}/v1/uploads"), &t)
        .header("upload-length", "1001")
        .header(
            "upload-metadata",
            meta(&[("bucket", "tus-bucket"), ("key", "user/7/clip.mp4")]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let mut forged = t.clone();
    forged.pop();
    forged.push(if t.ends_with('A') { 'B' } else { 'A' });
    let r = tus(&c, Method::POST, &format!("{base}/v1/uploads"), &forged)
        .header("upload-length", "10")
        .header(
            "upload-metadata",
            meta(&[("bucket", "tus-bucket"), ("key", "user/7/clip.mp4")]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A token cannot see uploads it does not cover (they look absent).
    let mine = create(&c, &base, KEY, 10, "private.bin").await;
    assert_eq!(
        tus(&c, Method::HEAD, &mine, &t)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    // A prefix token covers keys under it; prefixes must end with '/'.
    let (s, _) = token(serde_json::json!({"bucket": "tus-bucket", "prefix": "user/9"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, p) = token(serde_json::json!({"bucket": "tus-bucket", "prefix": "user/9/"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let p = p["token"].as_str().unwrap().to_string();
    create(&c, &base, &p, 5, "user/9/any/name.bin").await;
    let r = tus(&c, Method::POST, &format!("{base}/v1/uploads"), &p)
        .header("upload-length", "10")
        .header(
            "upload-metadata",
            meta(&[("bucket", "tus-bucket"), ("key", "user/90/x")]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Tokens are for uploads only: they open no other API.
    let r = c
        .get(format!("{base}/v1/o/tus-bucket/user/7/clip.mp4"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Issuing needs an API key; a token cannot mint tokens.
    let r = c
        .post(format!("{base}/v1/upload-tokens"))
        .bearer_auth(&t)
        .json(&serde_json::json!({"bucket": "tus-bucket", "key": "k"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    stack.stop().await;
}

fn b64<const N: usize>(digest: impl AsRef<[u8]>) -> String {
    let d = digest.as_ref();
    assert_eq!(d.len(), N);
    base64::engine::general_purpose::STANDARD.encode(d)
}

#[tokio::test]
async fn checksums_guard_every_piece() {
    use s3s::crypto::{Checksum, Md5, Sha1, Sha256};
    let stack = stack().await;
    let base = stack.gateway.url();
    let c = Client::new();
    let r = c
        .request(Method::OPTIONS, format!("{base}/v1/uploads"))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["tus-extension"]
        .to_str()
        .unwrap()
        .contains("checksum"));
    assert_eq!(r.headers()["tus-checksum-algorithm"], "sha1,md5,sha256");
    let data = pattern(300_000, 9);
    let url = create(&c, &base, KEY, data.len(), "sums/clip.bin").await;
    let piece = |from: usize, to: usize, sum: String| {
        tus(&c, Method::PATCH, &url, KEY)
            .header("upload-offset", from.to_string())
            .header("content-type", "application/offset+octet-stream")
            .header("upload-checksum", sum)
            .body(data[from..to].to_vec())
            .send()
    };
    // A digest of other bytes: 460, and the offset does not move.
    let wrong = format!("sha1 {}", b64::<20>(Sha1::checksum(&data[1..100_001])));
    let r = piece(0, 100_000, wrong).await.unwrap();
    assert_eq!(r.status().as_u16(), 460);
    assert_eq!(offset(&c, &url, KEY).await, 0);
    // Malformed or unknown: 400, nothing stored.
    for bad in ["crc32 AAAAAA==", "sha1", "sha1 %%%", "sha256 AAAA"] {
        let r = piece(0, 100_000, bad.to_string()).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(offset(&c, &url, KEY).await, 0);
    // Right digests, one algorithm per piece.
    let sums = [
        format!("sha1 {}", b64::<20>(Sha1::checksum(&data[..100_000]))),
        format!(
            "sha256 {}",
            b64::<32>(Sha256::checksum(&data[100_000..250_000]))
        ),
        format!("md5 {}", b64::<16>(Md5::checksum(&data[250_000..]))),
    ];
    for ((from, to), sum) in [(0, 100_000), (100_000, 250_000), (250_000, 300_000)]
        .into_iter()
        .zip(sums)
    {
        let r = piece(from, to, sum).await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(r.headers()["upload-offset"], to.to_string().as_str());
    }
    let (status, got) = get(&c, &base, "sums/clip.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&got[..], &data[..]);
    stack.stop().await;
}
