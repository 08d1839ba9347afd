//! The gateway's data path across real processes: three `kura node`s in three zones and a
//! `kura gateway` in front of them (see `common::Cluster`), driven over HTTP.
//!
//! A 100 MiB upload and a real video read back whole, in random byte ranges (many crossing
//! 4 MiB chunk boundaries), as suffixes and open ranges, with RFC 9110 conditionals and
//! metadata; listing with pagination, delete and overwrite.
//!
//! Abandoned uploads and bad input are in `gateway_requests.rs`, failures of nodes in
//! `gateway_failures.rs`.

mod common;

use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use common::{
    blake3_hex, check_put_reply, expect_created, header_str, random_bytes, test_seed, Cluster,
    GatewayClient, CHUNK,
};
use futures::stream;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{header, Method, Response, StatusCode};

const BUCKET: &str = "media";
/// Size of the large random object.
const BIG_LEN: usize = 100 * 1024 * 1024;
/// Pieces the large body is streamed in.
const UPLOAD_PIECE: usize = 1024 * 1024;
/// A real MP4 video, a little over one chunk (4 MiB).
const VIDEO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/media/video/hello-720p-8s.mp4"
);
/// Random single ranges read per object.
const RANDOM_RANGES: usize = 50;
/// Objects uploaded for the listing checks, and the page size used to walk them.
const LISTED_OBJECTS: usize = 23;
const LIST_PAGE: usize = 7;

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
    let get = get_with(gw, key, &[]).await?;
    let get_headers = get.headers().clone();
    x.expect_full(get, "GET").await?;
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
    let without_date = |h: &header::HeaderMap| {
        let mut v: Vec<(String, Vec<u8>)> = h
            .iter()
            .filter(|(k, _)| *k != header::DATE)
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        v.sort();
        v
    };
    ensure!(
        without_date(head.headers()) == without_date(&get_headers),
        "HEAD and GET headers differ:\n  HEAD {:?}\n  GET  {:?}",
        head.headers(),
        get_headers
    );
    let get_lm = header_str(&head, header::LAST_MODIFIED);
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

#[tokio::test(flavor = "multi_thread")]
async fn uploads_read_back_whole_in_ranges_and_suffixes() -> Result<()> {
    let test_started = Instant::now();
    let mut rng = StdRng::seed_from_u64(test_seed());
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
    check_put_reply(BUCKET, &expect_created(resp).await?, big_key, &big)?;
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
    check_put_reply(BUCKET, &expect_created(resp).await?, video_key, &video)?;

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
        check_put_reply(BUCKET, &reply, key, &data)?;
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
        check_put_reply(
            BUCKET,
            &gw.put(BUCKET, key, data.clone()).await?,
            key,
            &data,
        )?;
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
