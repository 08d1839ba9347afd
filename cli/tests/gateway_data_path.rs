//! The gateway's data path across real processes: three `kura node`s in three zones and a
//! `kura gateway` in front of them (see `common::Cluster`), driven over HTTP.
//!
//! - a 100 MiB upload and a real video read back whole, in random byte ranges (many
//!   crossing 4 MiB chunk boundaries), as suffixes and open ranges, with RFC 9110
//!   conditionals, metadata, listing with pagination, delete and overwrite;
//! - an upload whose client disappears leaves no object;
//! - bad input is refused with the precise status.
//!
//! Failures of nodes are in `gateway_failures.rs`.

mod common;

use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use common::{blake3_hex, expect_created, random_bytes, Cluster, GatewayClient, API_KEY};
use futures::stream;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{header, Method, Response, StatusCode};
use tokio::io::AsyncWriteExt;

const BUCKET: &str = "media";
/// The gateway's default chunk size.
const CHUNK: u64 = 4 * 1024 * 1024;
/// Size of the large random object.
const BIG_LEN: usize = 100 * 1024 * 1024;
/// Pieces the large body is streamed in.
const UPLOAD_PIECE: usize = 1024 * 1024;
/// A real H.264 video, a little over one chunk.
const VIDEO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/media/video/hello-720p-8s.mp4"
);
/// Random single ranges read per object.
const RANDOM_RANGES: usize = 50;
/// Objects uploaded for the listing checks, and the page size used to walk them.
const LISTED_OBJECTS: usize = 23;
const LIST_PAGE: usize = 7;

fn seed() -> u64 {
    let seed = std::env::var("GATEWAY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("seed {seed} (GATEWAY_TEST_SEED repeats the data and ranges)");
    seed
}

fn header_str(resp: &Response, name: header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Reads the body piece by piece and compares it with `expected` as it arrives (no
/// second copy of a large object).
async fn expect_body(mut resp: Response, expected: &[u8], what: &str) -> Result<()> {
    let mut offset = 0usize;
    while let Some(piece) = resp
        .chunk()
        .await
        .with_context(|| format!("{what}: body broke off after {offset} bytes"))?
    {
        let end = offset + piece.len();
        ensure!(
            end <= expected.len(),
            "{what}: body longer than the expected {} bytes",
            expected.len()
        );
        if piece[..] != expected[offset..end] {
            let at = piece
                .iter()
                .zip(&expected[offset..end])
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            bail!("{what}: body differs at byte {}", offset + at);
        }
        offset = end;
    }
    ensure!(
        offset == expected.len(),
        "{what}: body of {offset} bytes, expected {}",
        expected.len()
    );
    Ok(())
}

/// What every answer about an object must say.
struct Expect<'a> {
    key: &'a str,
    data: &'a [u8],
    etag: String,
    content_type: &'a str,
    meta: &'a [(&'a str, &'a str)],
}

impl Expect<'_> {
    fn quoted_etag(&self) -> String {
        format!("\"{}\"", self.etag)
    }

    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// Headers of a 200/206/304: validators, type, ranges, metadata.
    fn check_headers(&self, resp: &Response, what: &str) -> Result<()> {
        let get = |n| header_str(resp, n);
        ensure!(
            get(header::ETAG) == Some(self.quoted_etag()),
            "{what}: ETag {:?}, expected {}",
            get(header::ETAG),
            self.quoted_etag()
        );
        ensure!(
            get(header::ACCEPT_RANGES).as_deref() == Some("bytes"),
            "{what}: Accept-Ranges {:?}",
            get(header::ACCEPT_RANGES)
        );
        let lm = get(header::LAST_MODIFIED).unwrap_or_default();
        ensure!(
            lm.ends_with(" GMT") && lm.len() == 29,
            "{what}: Last-Modified {lm:?} is not an HTTP date"
        );
        ensure!(
            get(header::CONTENT_TYPE).as_deref() == Some(self.content_type),
            "{what}: Content-Type {:?}, expected {}",
            get(header::CONTENT_TYPE),
            self.content_type
        );
        for (k, v) in self.meta {
            let name = format!("x-kura-meta-{k}");
            let got = resp.headers().get(&name).and_then(|v| v.to_str().ok());
            ensure!(got == Some(*v), "{what}: {name} is {got:?}, expected {v}");
        }
        Ok(())
    }

    fn content_length(resp: &Response) -> Option<u64> {
        header_str(resp, header::CONTENT_LENGTH).and_then(|v| v.parse().ok())
    }

    /// A 200 with the whole object.
    async fn expect_full(&self, resp: Response, what: &str) -> Result<()> {
        ensure!(
            resp.status() == StatusCode::OK,
            "{what}: {} instead of 200",
            resp.status()
        );
        self.check_headers(&resp, what)?;
        ensure!(
            Self::content_length(&resp) == Some(self.size()),
            "{what}: Content-Length {:?}, expected {}",
            Self::content_length(&resp),
            self.size()
        );
        ensure!(
            resp.headers().get(header::CONTENT_RANGE).is_none(),
            "{what}: Content-Range on a 200"
        );
        expect_body(resp, self.data, what).await
    }

    /// A 206 with bytes `first..=last`.
    async fn expect_partial(
        &self,
        resp: Response,
        first: u64,
        last: u64,
        what: &str,
    ) -> Result<()> {
        ensure!(
            resp.status() == StatusCode::PARTIAL_CONTENT,
            "{what}: {} instead of 206",
            resp.status()
        );
        self.check_headers(&resp, what)?;
        let want_range = format!("bytes {first}-{last}/{}", self.size());
        ensure!(
            header_str(&resp, header::CONTENT_RANGE).as_deref() == Some(want_range.as_str()),
            "{what}: Content-Range {:?}, expected {want_range}",
            header_str(&resp, header::CONTENT_RANGE)
        );
        ensure!(
            Self::content_length(&resp) == Some(last - first + 1),
            "{what}: Content-Length {:?}, expected {}",
            Self::content_length(&resp),
            last - first + 1
        );
        expect_body(resp, &self.data[first as usize..=last as usize], what).await
    }
}

/// GET with a `Range` header (and more headers).
async fn get_with(gw: &GatewayClient, key: &str, headers: &[(&str, &str)]) -> Result<Response> {
    let mut req = gw.object(Method::GET, BUCKET, key);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Ok(req.send().await?)
}

/// Every read check of one stored object: whole, HEAD, random and boundary-crossing
/// ranges, open and suffix ranges, conditionals, unsatisfiable ranges.
async fn check_reads(gw: &GatewayClient, x: &Expect<'_>, rng: &mut StdRng) -> Result<()> {
    let size = x.size();
    let key = x.key;
    ensure!(size > CHUNK, "the checks below assume a multi-chunk object");

    // Whole.
    let started = Instant::now();
    x.expect_full(get_with(gw, key, &[]).await?, "GET").await?;
    eprintln!(
        "{key}: whole read of {size} bytes in {} ms",
        started.elapsed().as_millis()
    );

    // HEAD: the headers of a GET, no body.
    let head = gw.object(Method::HEAD, BUCKET, key).send().await?;
    ensure!(head.status() == StatusCode::OK, "HEAD: {}", head.status());
    x.check_headers(&head, "HEAD")?;
    ensure!(
        Expect::content_length(&head) == Some(size),
        "HEAD: Content-Length {:?}",
        Expect::content_length(&head)
    );
    let get_lm = header_str(
        &get_with(gw, key, &[("range", "bytes=0-0")]).await?,
        header::LAST_MODIFIED,
    );
    ensure!(
        header_str(&head, header::LAST_MODIFIED) == get_lm,
        "HEAD and GET disagree on Last-Modified"
    );
    ensure!(head.bytes().await?.is_empty(), "HEAD with a body");

    // Random single ranges: a third anywhere and short, a third crossing a chunk
    // boundary, a third long (up to 2 chunks + a bit), some running past the end.
    let chunks = size.div_ceil(CHUNK);
    let mut crossing = 0;
    let started = Instant::now();
    for i in 0..RANDOM_RANGES {
        let (first, last) = match i % 3 {
            0 => {
                let first = rng.random_range(0..size);
                (
                    first,
                    (first + rng.random_range(0..256 * 1024)).min(size - 1),
                )
            }
            1 => {
                let boundary = rng.random_range(1..chunks) * CHUNK;
                let first = boundary - rng.random_range(1..=(256 * 1024).min(boundary));
                (
                    first,
                    (boundary + rng.random_range(0..256 * 1024)).min(size - 1),
                )
            }
            _ => {
                let first = rng.random_range(0..size);
                (first, first + rng.random_range(0..2 * CHUNK + 1000))
            }
        };
        let shown_last = last.min(size - 1);
        if first / CHUNK != shown_last / CHUNK {
            crossing += 1;
        }
        let range = format!("bytes={first}-{last}");
        let resp = get_with(gw, key, &[("range", &range)]).await?;
        x.expect_partial(resp, first, shown_last, &format!("GET {range}"))
            .await?;
    }
    ensure!(
        crossing >= RANDOM_RANGES / 3,
        "only {crossing} ranges crossed a chunk boundary"
    );
    eprintln!(
        "{key}: {RANDOM_RANGES} random ranges ({crossing} crossing chunks) in {} ms",
        started.elapsed().as_millis()
    );

    // Edges: first byte, last byte, exactly one chunk, a chunk boundary pair.
    for (first, last) in [
        (0, 0),
        (size - 1, size - 1),
        (0, CHUNK - 1),
        (CHUNK - 1, CHUNK),
        (CHUNK, CHUNK),
    ] {
        let range = format!("bytes={first}-{last}");
        let resp = get_with(gw, key, &[("range", &range)]).await?;
        x.expect_partial(resp, first, last, &format!("GET {range}"))
            .await?;
    }

    // Open ranges `a-` and suffixes `-n`, including one larger than the object.
    let open_from = [
        size - 1,
        size - rng.random_range(1..CHUNK + 10),
        size - CHUNK - 7,
    ];
    for first in open_from {
        let range = format!("bytes={first}-");
        let resp = get_with(gw, key, &[("range", &range)]).await?;
        x.expect_partial(resp, first, size - 1, &format!("GET {range}"))
            .await?;
    }
    for n in [
        1,
        rng.random_range(2..CHUNK),
        CHUNK + 3,
        size,
        size + 1,
        size * 3,
    ] {
        let range = format!("bytes=-{n}");
        let resp = get_with(gw, key, &[("range", &range)]).await?;
        x.expect_partial(
            resp,
            size.saturating_sub(n),
            size - 1,
            &format!("GET {range}"),
        )
        .await?;
    }

    // Conditionals.
    let etag = x.quoted_etag();
    let stale = format!("\"{}\"", blake3_hex(b"an older version"));
    let resp = get_with(gw, key, &[("if-none-match", &etag)]).await?;
    ensure!(
        resp.status() == StatusCode::NOT_MODIFIED,
        "If-None-Match with the current ETag: {}",
        resp.status()
    );
    ensure!(
        header_str(&resp, header::ETAG) == Some(etag.clone()),
        "304 without the ETag"
    );
    ensure!(resp.bytes().await?.is_empty(), "304 with a body");
    let resp = get_with(gw, key, &[("if-none-match", &format!("{stale}, W/{etag}"))]).await?;
    ensure!(
        resp.status() == StatusCode::NOT_MODIFIED,
        "If-None-Match with a weak match in a list: {}",
        resp.status()
    );
    x.expect_full(
        get_with(gw, key, &[("if-none-match", &stale)]).await?,
        "GET If-None-Match stale",
    )
    .await?;
    let resp = get_with(gw, key, &[("if-match", &stale)]).await?;
    ensure!(
        resp.status() == StatusCode::PRECONDITION_FAILED,
        "If-Match with another ETag: {}",
        resp.status()
    );
    let resp = get_with(gw, key, &[("if-match", &etag), ("range", "bytes=10-19")]).await?;
    x.expect_partial(resp, 10, 19, "GET If-Match current + range")
        .await?;
    let range = format!("bytes=100-{}", CHUNK + 50);
    let resp = get_with(gw, key, &[("if-range", &etag), ("range", &range)]).await?;
    x.expect_partial(resp, 100, CHUNK + 50, "GET If-Range current")
        .await?;
    x.expect_full(
        get_with(gw, key, &[("if-range", &stale), ("range", &range)]).await?,
        "GET If-Range stale",
    )
    .await?;
    let lm = get_lm.context("no Last-Modified")?;
    let resp = get_with(gw, key, &[("if-modified-since", &lm)]).await?;
    ensure!(
        resp.status() == StatusCode::NOT_MODIFIED,
        "If-Modified-Since its own Last-Modified: {}",
        resp.status()
    );
    let resp = get_with(
        gw,
        key,
        &[("if-unmodified-since", "Mon, 01 Jan 2001 00:00:00 GMT")],
    )
    .await?;
    ensure!(
        resp.status() == StatusCode::PRECONDITION_FAILED,
        "If-Unmodified-Since 2001: {}",
        resp.status()
    );

    // Several ranges: answered with the whole object (documented).
    x.expect_full(
        get_with(
            gw,
            key,
            &[("range", &format!("bytes=0-9,{CHUNK}-{}", CHUNK + 9))],
        )
        .await?,
        "GET two ranges",
    )
    .await?;

    // Unsatisfiable.
    for range in [
        format!("bytes={size}-"),
        format!("bytes={}-{}", size + 5, size + 10),
    ] {
        let resp = get_with(gw, key, &[("range", &range)]).await?;
        ensure!(
            resp.status() == StatusCode::RANGE_NOT_SATISFIABLE,
            "GET {range}: {} instead of 416",
            resp.status()
        );
        let cr = header_str(&resp, header::CONTENT_RANGE);
        ensure!(
            cr.as_deref() == Some(format!("bytes */{size}").as_str()),
            "GET {range}: 416 with Content-Range {cr:?}"
        );
    }
    Ok(())
}

fn check_reply(reply: &common::PutReply, key: &str, data: &[u8]) -> Result<()> {
    let want = common::PutReply {
        bucket: BUCKET.to_string(),
        key: key.to_string(),
        size: data.len() as u64,
        etag: blake3_hex(data),
        chunks: (data.len() as u64).div_ceil(CHUNK) as usize,
    };
    ensure!(
        *reply == want,
        "upload of {key} answered {reply:?}, expected {want:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_read_back_whole_in_ranges_and_suffixes() -> Result<()> {
    let test_started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed());
    let cluster = Cluster::start().await?;
    let gw = cluster.client()?;

    // 100 MiB, streamed in 1 MiB pieces of the one copy held here.
    let big = Bytes::from(random_bytes(rng.random(), BIG_LEN));
    let big_key = "big/random.bin";
    let pieces: Vec<std::io::Result<Bytes>> = (0..BIG_LEN)
        .step_by(UPLOAD_PIECE)
        .map(|at| Ok(big.slice(at..(at + UPLOAD_PIECE).min(BIG_LEN))))
        .collect();
    let started = Instant::now();
    let resp = gw
        .object(Method::PUT, BUCKET, big_key)
        .header(header::CONTENT_LENGTH, BIG_LEN)
        .body(reqwest::Body::wrap_stream(stream::iter(pieces)))
        .send()
        .await?;
    check_reply(&expect_created(resp).await?, big_key, &big)?;
    eprintln!(
        "uploaded {BIG_LEN} bytes in {} ms",
        started.elapsed().as_millis()
    );

    // A real video, with a media type and user metadata.
    let video = Bytes::from(std::fs::read(VIDEO).with_context(|| format!("reading {VIDEO}"))?);
    let video_key = "videos/hello 720p (8 s).mp4";
    let resp = gw
        .object(Method::PUT, BUCKET, video_key)
        .header(header::CONTENT_TYPE, "video/mp4")
        .header("x-kura-meta-foo", "bar")
        .body(video.clone())
        .send()
        .await?;
    check_reply(&expect_created(resp).await?, video_key, &video)?;

    check_reads(
        &gw,
        &Expect {
            key: video_key,
            data: &video,
            etag: blake3_hex(&video),
            content_type: "video/mp4",
            meta: &[("foo", "bar")],
        },
        &mut rng,
    )
    .await
    .context(video_key)?;
    check_reads(
        &gw,
        &Expect {
            key: big_key,
            data: &big,
            etag: blake3_hex(&big),
            content_type: "application/octet-stream",
            meta: &[],
        },
        &mut rng,
    )
    .await
    .context(big_key)?;
    drop(big);

    check_listing_delete_overwrite(&gw, &mut rng).await?;
    cluster.stop().await?;
    eprintln!("done in {:.1} s", test_started.elapsed().as_secs_f64());
    Ok(())
}

/// Small objects under one prefix (and neighbours outside it): the listing walks them
/// in order, completely, in pages; DELETE hides an object; PUT over a key serves the
/// newest content.
async fn check_listing_delete_overwrite(gw: &GatewayClient, rng: &mut StdRng) -> Result<()> {
    let prefix = "list/";
    let mut keys: Vec<String> = (0..LISTED_OBJECTS - 4)
        .map(|i| format!("list/{:03}", i * 7 % 100))
        .collect();
    keys.extend(
        [
            "list/sub/deeper/x",
            "list/with space",
            "list/日本語.mp4",
            "list/empty",
        ]
        .map(String::from),
    );
    let mut expected = std::collections::BTreeMap::new();
    for key in &keys {
        let len = if key.ends_with("empty") {
            0
        } else {
            rng.random_range(1..200_000)
        };
        let data = random_bytes(rng.random(), len);
        let reply = gw.put(BUCKET, key, data.clone()).await?;
        check_reply(&reply, key, &data)?;
        expected.insert(key.clone(), data);
    }
    // Neighbours that share a prefix with the keys but not `list/`.
    for key in ["lis", "list", "lisu/0", "lista/1"] {
        gw.put(BUCKET, key, b"neighbour".to_vec()).await?;
    }

    let check_listing = |listed: Vec<common::ListedObject>,
                         expected: &std::collections::BTreeMap<String, Vec<u8>>,
                         what: &str|
     -> Result<()> {
        let got: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
        let want: Vec<&str> = expected.keys().map(String::as_str).collect();
        ensure!(got == want, "{what}: listed {got:?}, expected {want:?}");
        for o in &listed {
            let data = &expected[&o.key];
            ensure!(
                o.size == data.len() as u64 && o.etag == blake3_hex(data),
                "{what}: {} listed with size {} etag {}",
                o.key,
                o.size,
                o.etag
            );
            ensure!(
                o.content_type.is_none() && o.last_modified_ms > 1_600_000_000_000,
                "{what}: {o:?}"
            );
        }
        Ok(())
    };
    for limit in [1, LIST_PAGE, 1000] {
        let listed = gw.list_all(BUCKET, prefix, limit).await?;
        check_listing(listed, &expected, &format!("listing with limit {limit}"))?;
    }
    let one_page = gw.list_page(BUCKET, prefix, None, 1000).await?;
    ensure!(
        one_page.next_after.is_none(),
        "a listing that fits one page has next_after {:?}",
        one_page.next_after
    );
    let page = gw.list_page(BUCKET, prefix, None, LIST_PAGE).await?;
    ensure!(
        page.objects.len() == LIST_PAGE
            && page.next_after.as_deref() == Some(page.objects[LIST_PAGE - 1].key.as_str()),
        "a full first page: {} objects, next_after {:?}",
        page.objects.len(),
        page.next_after
    );
    // `after` a key in the middle: exactly the keys after it.
    let middle = expected.keys().nth(10).cloned().context("too few keys")?;
    let rest = gw.list_page(BUCKET, prefix, Some(&middle), 1000).await?;
    let got: Vec<&str> = rest.objects.iter().map(|o| o.key.as_str()).collect();
    let want: Vec<&str> = expected
        .keys()
        .filter(|k| **k > middle)
        .map(String::as_str)
        .collect();
    ensure!(got == want, "after {middle}: {got:?}, expected {want:?}");
    let whole_bucket = gw.list_all(BUCKET, "", 5).await?;
    ensure!(
        whole_bucket.len() == expected.len() + 4 + 2,
        "the bucket lists {} objects, expected {}",
        whole_bucket.len(),
        expected.len() + 6
    );
    let other = gw.list_all("other-bucket", "", 10).await?;
    ensure!(other.is_empty(), "an unused bucket lists {other:?}");

    // The empty object.
    let resp = gw.object(Method::GET, BUCKET, "list/empty").send().await?;
    ensure!(
        resp.status() == StatusCode::OK,
        "GET empty: {}",
        resp.status()
    );
    ensure!(
        header_str(&resp, header::ETAG) == Some(format!("\"{}\"", blake3_hex(b""))),
        "empty object's ETag"
    );
    ensure!(resp.bytes().await?.is_empty(), "empty object with a body");

    // DELETE → 204, then 404 and gone from the listing.
    let victim = "list/with space";
    let resp = gw.object(Method::DELETE, BUCKET, victim).send().await?;
    ensure!(
        resp.status() == StatusCode::NO_CONTENT,
        "DELETE: {}",
        resp.status()
    );
    ensure!(
        gw.get(BUCKET, victim).await?.is_none(),
        "deleted object still served"
    );
    let head = gw.object(Method::HEAD, BUCKET, victim).send().await?;
    ensure!(
        head.status() == StatusCode::NOT_FOUND,
        "HEAD of deleted: {}",
        head.status()
    );
    expected.remove(victim);
    check_listing(
        gw.list_all(BUCKET, prefix, LIST_PAGE).await?,
        &expected,
        "after DELETE",
    )?;

    // Overwrites: the newest content wins, also over a delete.
    for key in ["list/007", victim, "list/007"] {
        let data = random_bytes(rng.random(), rng.random_range(1..300_000));
        check_reply(&gw.put(BUCKET, key, data.clone()).await?, key, &data)?;
        let got = gw
            .get(BUCKET, key)
            .await?
            .context("overwritten object missing")?;
        ensure!(
            got[..] == data[..],
            "{key}: GET after overwrite serves older content"
        );
        expected.insert(key.to_string(), data);
    }
    check_listing(
        gw.list_all(BUCKET, prefix, LIST_PAGE).await?,
        &expected,
        "after overwrites",
    )?;
    for (key, data) in &expected {
        let got = gw
            .get(BUCKET, key)
            .await?
            .with_context(|| format!("{key} missing"))?;
        ensure!(got[..] == data[..], "{key}: wrong content");
    }
    Ok(())
}

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
    let mut rng = StdRng::seed_from_u64(seed());
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
    let metrics = gw.metrics().await?;
    eprintln!(
        "kura_gateway_uploads_aborted_total = {:?}",
        common::metric_value(&metrics, "kura_gateway_uploads_aborted_total")
    );

    // The gateway is not wedged: the same key takes a complete upload.
    let reply = gw
        .put(BUCKET, "abandoned/declared.bin", partial.clone())
        .await?;
    check_reply(&reply, "abandoned/declared.bin", &partial)?;
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
