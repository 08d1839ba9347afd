//! Requests at the edges of the gateway's data path, across real processes (three
//! `kura node`s and a `kura gateway`, see `common::Cluster`):
//!
//! - an upload whose client disappears mid-body leaves no object;
//! - bad input is refused with the precise status and stores nothing.

mod common;

use anyhow::{ensure, Context, Result};
use common::{
    check_put_reply, header_str, random_bytes, test_seed, Cluster, GatewayClient, API_KEY,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{header, Method, Response, StatusCode};
use tokio::io::AsyncWriteExt;

const BUCKET: &str = "media";

/// Sends a request head declaring `declared` body bytes, then `sent` bytes of body, then
/// closes the connection.
async fn abandon_upload(
    gw: &GatewayClient,
    key: &str,
    head_extra: &str,
    body: &[u8],
) -> Result<()> {
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await?;
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {API_KEY}\r\n{head_extra}\r\n",
        gw.object_url(BUCKET, key).trim_start_matches(&gw.base),
        gw.addr
    );
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        conn.write_all(head.as_bytes()).await?;
        conn.write_all(body).await?;
        conn.flush().await
    })
    .await
    .context("writing the partial upload timed out")??;
    drop(conn);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn abandoned_upload_leaves_no_object() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(test_seed());
    let cluster = Cluster::start().await?;
    let gw = cluster.client()?;
    let partial = random_bytes(rng.random(), 6 * 1024 * 1024 + 12_345);

    // Declared 20 MB, sent ~6 MiB (more than a chunk, so a chunk was stored).
    abandon_upload(
        &gw,
        "abandoned/declared.bin",
        "Content-Length: 20000000\r\n",
        &partial,
    )
    .await?;
    // Chunked, broken off in the middle of a 6 MiB chunk.
    let mut chunked = format!("{:x}\r\n", partial.len()).into_bytes();
    chunked.extend_from_slice(&partial[..5 * 1024 * 1024]);
    abandon_upload(
        &gw,
        "abandoned/chunked.bin",
        "Transfer-Encoding: chunked\r\n",
        &chunked,
    )
    .await?;

    for wait_ms in [500, 2500] {
        tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
        for key in ["abandoned/declared.bin", "abandoned/chunked.bin"] {
            ensure!(
                gw.get(BUCKET, key).await?.is_none(),
                "{key}: an abandoned upload is served"
            );
            let head = gw.object(Method::HEAD, BUCKET, key).send().await?;
            ensure!(
                head.status() == StatusCode::NOT_FOUND,
                "HEAD {key}: {}",
                head.status()
            );
        }
        let listed = gw.list_all(BUCKET, "", 100).await?;
        ensure!(listed.is_empty(), "abandoned uploads listed: {listed:?}");
    }
    let aborted = common::metric_value(&gw.metrics().await?, "kura_gateway_uploads_aborted_total");
    ensure!(
        aborted == Some(2.0),
        "kura_gateway_uploads_aborted_total is {aborted:?} after 2 abandoned uploads"
    );

    // The gateway is not wedged: the same key takes a complete upload.
    let reply = gw
        .put(BUCKET, "abandoned/declared.bin", partial.clone())
        .await?;
    check_put_reply(BUCKET, &reply, "abandoned/declared.bin", &partial)?;
    let got = gw
        .get(BUCKET, "abandoned/declared.bin")
        .await?
        .context("missing")?;
    ensure!(
        got[..] == partial[..],
        "wrong content after a complete upload"
    );
    cluster.stop().await
}

/// Expects `status` with a JSON error body whose `error` is `code`.
async fn expect_error(resp: Response, status: StatusCode, code: &str, what: &str) -> Result<()> {
    ensure!(
        resp.status() == status,
        "{what}: {} instead of {status}",
        resp.status()
    );
    let body: serde_json::Value = resp.json().await.with_context(|| format!("{what}: body"))?;
    ensure!(body["error"] == code, "{what}: error body {body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_precise_errors() -> Result<()> {
    let cluster = Cluster::start().await?;
    let gw = cluster.client()?;
    let data = random_bytes(7, 300_000);
    gw.put(BUCKET, "ok/object", data.clone()).await?;

    // Missing and wrong API keys: 401 with WWW-Authenticate, nothing stored.
    let url = gw.object_url(BUCKET, "sneaky/object");
    let no_key = gw.http.put(&url).body(data.clone());
    let wrong_key = gw
        .http
        .put(&url)
        .bearer_auth("not-the-key")
        .body(data.clone());
    let basic = gw
        .http
        .put(&url)
        .basic_auth("user", Some(API_KEY))
        .body(data.clone());
    let get_no_key = gw.http.get(gw.object_url(BUCKET, "ok/object"));
    let list_no_key = gw.http.get(format!("{}/v1/o/{BUCKET}", gw.base));
    for (what, req) in [
        ("PUT without a key", no_key),
        ("PUT with a wrong key", wrong_key),
        ("PUT with Basic auth", basic),
        ("GET without a key", get_no_key),
        ("listing without a key", list_no_key),
    ] {
        let resp = req.send().await?;
        let challenge = header_str(&resp, header::WWW_AUTHENTICATE);
        ensure!(
            challenge
                .as_deref()
                .is_some_and(|c| c.starts_with("Bearer")),
            "{what}: WWW-Authenticate {challenge:?}"
        );
        expect_error(resp, StatusCode::UNAUTHORIZED, "unauthorized", what).await?;
    }
    ensure!(
        gw.get(BUCKET, "sneaky/object").await?.is_none(),
        "an unauthenticated PUT stored an object"
    );
    ensure!(
        gw.list_all(BUCKET, "sneaky/", 10).await?.is_empty(),
        "an unauthenticated PUT is listed"
    );

    // Open endpoints.
    let health = gw.http.get(format!("{}/health", gw.base)).send().await?;
    ensure!(
        health.status() == StatusCode::OK,
        "/health: {}",
        health.status()
    );
    let metrics = gw.metrics().await?;
    ensure!(
        common::metric_value(&metrics, "kura_gateway_objects_put_total") == Some(1.0),
        "/metrics does not count the one upload"
    );

    // Bad bucket names, on every operation.
    for bucket in ["AB", "a", "bad_bucket", &"b".repeat(64)] {
        let list_url = format!("{}/v1/o/{bucket}", gw.base);
        for (what, req) in [
            ("PUT", gw.object(Method::PUT, bucket, "k").body("x")),
            ("GET", gw.object(Method::GET, bucket, "k")),
            ("DELETE", gw.object(Method::DELETE, bucket, "k")),
            ("listing", gw.http.get(&list_url).bearer_auth(API_KEY)),
        ] {
            let what = format!("{what} in bucket {bucket:?}");
            expect_error(
                req.send().await?,
                StatusCode::BAD_REQUEST,
                "bad_request",
                &what,
            )
            .await?;
        }
    }

    // `.` and `..` segments, sent verbatim (a URL library would resolve them).
    for path in [
        "/v1/o/media/a/%2E%2E/b",
        "/v1/o/media/a/%2e%2e/b",
        "/v1/o/media/%2E%2E",
        "/v1/o/media/a/../b",
        "/v1/o/media/a/./b",
        "/v1/o/media/a/%2E",
    ] {
        for method in ["PUT", "GET"] {
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {API_KEY}\r\n\
                 Content-Length: 5\r\nConnection: close\r\n\r\nhello",
                gw.addr
            );
            let resp = common::raw_http(gw.addr, req.as_bytes()).await?;
            ensure!(
                resp.status == 400,
                "{method} {path}: {} instead of 400: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            );
        }
    }
    let listed = gw.list_all(BUCKET, "", 100).await?;
    ensure!(
        listed.len() == 1,
        "bad keys stored something: {:?}",
        listed.iter().map(|o| &o.key).collect::<Vec<_>>()
    );

    // Key length: 1024 bytes is the limit.
    let longest = format!("long/{}", "k".repeat(1024 - 5));
    gw.put(BUCKET, &longest, b"fits".to_vec()).await?;
    ensure!(
        gw.get(BUCKET, &longest).await?.as_deref() == Some(&b"fits"[..]),
        "a 1024-byte key does not read back"
    );
    let too_long = format!("{longest}k");
    for (what, req) in [
        ("PUT", gw.object(Method::PUT, BUCKET, &too_long).body("x")),
        ("GET", gw.object(Method::GET, BUCKET, &too_long)),
    ] {
        expect_error(
            req.send().await?,
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("{what} of a 1025-byte key"),
        )
        .await?;
    }

    // Headers over 16 KiB in all.
    let resp = gw
        .object(Method::GET, BUCKET, "ok/object")
        .header("x-padding", "p".repeat(17 * 1024))
        .send()
        .await?;
    expect_error(
        resp,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        "17 KiB header",
    )
    .await?;
    let mut req = gw.object(Method::GET, BUCKET, "ok/object");
    for i in 0..20 {
        req = req.header(format!("x-pad-{i}"), "q".repeat(1000));
    }
    expect_error(
        req.send().await?,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        "20 headers of 1 KB",
    )
    .await?;

    // User metadata over 2 KiB.
    let resp = gw
        .object(Method::PUT, BUCKET, "meta/big")
        .header("x-kura-meta-blob", "m".repeat(3000))
        .body("x")
        .send()
        .await?;
    expect_error(
        resp,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "3 KB of metadata",
    )
    .await?;

    // Malformed ranges.
    for range in ["bytes=x-y", "bytes=5-1", "bytes=", "bytes=--3"] {
        let resp = gw
            .object(Method::GET, BUCKET, "ok/object")
            .header(header::RANGE, range)
            .send()
            .await?;
        ensure!(
            header_str(&resp, header::CONTENT_RANGE).as_deref() == Some("bytes */300000"),
            "{range}: Content-Range {:?}",
            header_str(&resp, header::CONTENT_RANGE)
        );
        expect_error(
            resp,
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable",
            range,
        )
        .await?;
    }

    // Unknown objects.
    expect_error(
        gw.object(Method::GET, BUCKET, "no/such/object")
            .send()
            .await?,
        StatusCode::NOT_FOUND,
        "not_found",
        "GET of an unknown object",
    )
    .await?;
    let head = gw
        .object(Method::HEAD, BUCKET, "no/such/object")
        .send()
        .await?;
    ensure!(
        head.status() == StatusCode::NOT_FOUND,
        "HEAD unknown: {}",
        head.status()
    );

    // Listing limits.
    for limit in ["0", "5000", "1001", "-1", "many"] {
        let resp = gw
            .http
            .get(format!("{}/v1/o/{BUCKET}?limit={limit}", gw.base))
            .bearer_auth(API_KEY)
            .send()
            .await?;
        ensure!(
            resp.status() == StatusCode::BAD_REQUEST,
            "listing with limit={limit}: {}",
            resp.status()
        );
    }
    gw.list_page(BUCKET, "", None, 1000).await?;

    // None of it disturbed the stored object.
    ensure!(
        gw.get(BUCKET, "ok/object").await?.as_deref() == Some(&data[..]),
        "the stored object changed"
    );
    cluster.stop().await
}
