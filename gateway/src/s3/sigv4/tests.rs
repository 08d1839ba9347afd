//! Checked against AWS's published SigV4 examples for S3 (the `examplebucket` GET with a
//! range, and the presigned GET of `test.txt`), then changed one part at a time.

use super::*;
use axum::http::HeaderValue;

const ACCESS: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// 2013-05-24T00:00:00Z, the examples' signing time.
const SIGNED_AT: i64 = 1_369_353_600;

fn secret_of(k: &str) -> Option<&'static str> {
    (k == ACCESS).then_some(SECRET)
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(*n, HeaderValue::from_str(v).unwrap());
    }
    h
}

/// AWS's "GET Object" example (Authorization header).
fn header_example(range: &str) -> HeaderMap {
    headers(&[
        ("host", "examplebucket.s3.amazonaws.com"),
        ("range", range),
        ("x-amz-content-sha256", EMPTY_SHA256),
        ("x-amz-date", "20130524T000000Z"),
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        ),
    ])
}

/// AWS's presigned URL example (24 h validity).
fn presigned_query(signature: &str) -> Vec<(String, String)> {
    [
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        (
            "X-Amz-Credential",
            "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request",
        ),
        ("X-Amz-Date", "20130524T000000Z"),
        ("X-Amz-Expires", "86400"),
        ("X-Amz-SignedHeaders", "host"),
        ("X-Amz-Signature", signature),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect()
}

const PRESIGNED_SIG: &str = "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";

fn check(path: &str, query: &Query, h: &HeaderMap, now: i64) -> bool {
    let req = Signed {
        method: &Method::GET,
        decoded_path: path,
        query,
        headers: h,
        now,
    };
    SigningKeys::default().verify(&req, secret_of)
}

#[test]
fn the_aws_header_example_verifies_and_any_change_does_not() {
    let h = header_example("bytes=0-9");
    assert!(check("/test.txt", &[], &h, SIGNED_AT + 60));
    assert!(!check(
        "/test.txt",
        &[],
        &header_example("bytes=0-10"),
        SIGNED_AT
    ));
    assert!(!check("/other.txt", &[], &h, SIGNED_AT));
    let extra = [("x-id".to_string(), "GetObject".to_string())];
    assert!(!check("/test.txt", &extra, &h, SIGNED_AT));
    // Outside the 15-minute window, either way.
    assert!(!check(
        "/test.txt",
        &[],
        &h,
        SIGNED_AT + MAX_CLOCK_SKEW_SECS + 1
    ));
    assert!(!check(
        "/test.txt",
        &[],
        &h,
        SIGNED_AT - MAX_CLOCK_SKEW_SECS - 1
    ));
    // Another secret for the same key id.
    let req = Signed {
        method: &Method::GET,
        decoded_path: "/test.txt",
        query: &[],
        headers: &h,
        now: SIGNED_AT,
    };
    assert!(!SigningKeys::default().verify(&req, |_| Some("not-the-secret")));
    assert!(!SigningKeys::default().verify(&req, |_| None));
    // HEAD is not what was signed.
    let head = Signed {
        method: &Method::HEAD,
        ..req
    };
    assert!(!SigningKeys::default().verify(&head, secret_of));
}

#[test]
fn a_signed_header_sent_twice_or_missing_is_not_taken() {
    let mut h = header_example("bytes=0-9");
    h.append("range", HeaderValue::from_static("bytes=0-9"));
    assert!(!check("/test.txt", &[], &h, SIGNED_AT));
    let mut h = header_example("bytes=0-9");
    h.remove("range");
    assert!(!check("/test.txt", &[], &h, SIGNED_AT));
}

#[test]
fn the_aws_presigned_example_verifies_until_it_expires() {
    let h = headers(&[("host", "examplebucket.s3.amazonaws.com")]);
    let q = presigned_query(PRESIGNED_SIG);
    assert!(check("/test.txt", &q, &h, SIGNED_AT));
    assert!(check("/test.txt", &q, &h, SIGNED_AT + 86_400));
    assert!(!check("/test.txt", &q, &h, SIGNED_AT + 86_401));
    assert!(check("/test.txt", &q, &h, SIGNED_AT - MAX_CLOCK_SKEW_SECS));
    assert!(!check(
        "/test.txt",
        &q,
        &h,
        SIGNED_AT - MAX_CLOCK_SKEW_SECS - 1
    ));
    let wrong = presigned_query(&PRESIGNED_SIG.replace('a', "b"));
    assert!(!check("/test.txt", &wrong, &h, SIGNED_AT));
    let other_host = headers(&[("host", "evil.example.com")]);
    assert!(!check("/test.txt", &q, &other_host, SIGNED_AT));
    // An added parameter changes what was signed.
    let mut more = q.clone();
    more.push(("response-content-type".into(), "text/html".into()));
    assert!(!check("/test.txt", &more, &h, SIGNED_AT));
    // Both forms at once, or the signature given twice: left to s3s.
    let mut twice = q.clone();
    twice.push(("X-Amz-Signature".into(), PRESIGNED_SIG.into()));
    assert!(!check("/test.txt", &twice, &h, SIGNED_AT));
    let both = header_example("bytes=0-9");
    let mut both = both.clone();
    both.insert(
        "host",
        HeaderValue::from_static("examplebucket.s3.amazonaws.com"),
    );
    assert!(!check("/test.txt", &q, &both, SIGNED_AT));
}

#[test]
fn a_cached_signing_key_is_the_same_key() {
    let keys = SigningKeys::default();
    let h = headers(&[("host", "examplebucket.s3.amazonaws.com")]);
    let q = presigned_query(PRESIGNED_SIG);
    let req = Signed {
        method: &Method::GET,
        decoded_path: "/test.txt",
        query: &q,
        headers: &h,
        now: SIGNED_AT,
    };
    assert!(keys.verify(&req, secret_of));
    // The second check uses the cached key (no secret lookup) and still tells a wrong
    // signature from the right one.
    assert!(keys.verify(&req, |_| None));
    let wrong = presigned_query(&PRESIGNED_SIG.replace('a', "c"));
    let bad = Signed {
        query: &wrong,
        ..req
    };
    assert!(!keys.verify(&bad, |_| None));
}

#[test]
fn amz_dates_parse_to_epoch_seconds() {
    assert_eq!(amz_seconds("20130524T000000Z"), Some(SIGNED_AT));
    assert_eq!(amz_seconds("20261204T032300Z"), Some(1_796_354_580));
    for bad in [
        "20130524T000000",
        "2013-05-24T00:00:00Z",
        "20131324T000000Z",
        "20130524T250000Z",
        "",
    ] {
        assert_eq!(amz_seconds(bad), None, "{bad}");
    }
}
