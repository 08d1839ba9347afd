//! RFC 9110 conditional requests and ranges for object reads, as one pure decision.
//!
//! Evaluation order (RFC 9110 §13.2.2): `If-Match` → `If-Unmodified-Since` (only without
//! `If-Match`) → `If-None-Match` → `If-Modified-Since` (only without `If-None-Match`) →
//! `Range`, which `If-Range` can neutralise. Multiple ranges are answered with the whole
//! object (200), which RFC 9110 allows; a single range with 206.

use std::time::{Duration, SystemTime};

use axum::http::{header, HeaderMap, Method};
use kura_cluster::range::{parse_range_header, ByteSpan};

/// What to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// 200 with the whole object.
    Full,
    /// 206 with one span.
    Partial(ByteSpan),
    /// 304.
    NotModified,
    /// 412.
    PreconditionFailed,
    /// 416 (malformed or unsatisfiable byte range).
    Unsatisfiable,
}

/// The validators of the object being read.
pub struct Validators<'a> {
    /// Quoted strong ETag, e.g. `"ab12..."`.
    pub etag: &'a str,
    /// Last modification time (second precision on the wire).
    pub last_modified: SystemTime,
    /// Size in bytes.
    pub size: u64,
}

/// Whether an `If-Match` / `If-None-Match` list matches `etag`. `weak` allows `W/` tags
/// to match (weak comparison, for `If-None-Match`).
fn list_matches(value: &str, etag: &str, weak: bool) -> bool {
    value.split(',').map(str::trim).any(|tag| {
        if tag == "*" {
            return true;
        }
        match tag.strip_prefix("W/") {
            Some(t) => weak && t == etag,
            None => tag == etag,
        }
    })
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Decides the answer to a GET or HEAD of an object with validators `v`.
pub fn decide(method: &Method, h: &HeaderMap, v: &Validators<'_>) -> Decision {
    let get_or_head = method == Method::GET || method == Method::HEAD;
    let modified = secs(v.last_modified);
    if let Some(im) = header_str(h, header::IF_MATCH) {
        if !list_matches(im, v.etag, false) {
            return Decision::PreconditionFailed;
        }
    } else if let Some(ius) = header_str(h, header::IF_UNMODIFIED_SINCE) {
        if let Ok(t) = httpdate::parse_http_date(ius) {
            if modified > secs(t) {
                return Decision::PreconditionFailed;
            }
        }
    }
    if let Some(inm) = header_str(h, header::IF_NONE_MATCH) {
        if list_matches(inm, v.etag, true) {
            return if get_or_head {
                Decision::NotModified
            } else {
                Decision::PreconditionFailed
            };
        }
    } else if let Some(ims) = header_str(h, header::IF_MODIFIED_SINCE) {
        if let Ok(t) = httpdate::parse_http_date(ims) {
            if get_or_head && modified <= secs(t) {
                return Decision::NotModified;
            }
        }
    }
    if method != Method::GET {
        return Decision::Full;
    }
    let Some(range) = h.get(header::RANGE) else {
        return Decision::Full;
    };
    if let Some(ir) = header_str(h, header::IF_RANGE) {
        let current = if ir.starts_with('"') {
            ir == v.etag
        } else {
            httpdate::parse_http_date(ir).is_ok_and(|t| secs(t) == modified)
        };
        if !current {
            return Decision::Full;
        }
    }
    let Ok(range) = range.to_str() else {
        return Decision::Unsatisfiable;
    };
    if !range.trim_start().starts_with("bytes=") {
        // An unknown range unit is ignored (RFC 9110 §14.2).
        return Decision::Full;
    }
    let Ok(specs) = parse_range_header(range) else {
        return Decision::Unsatisfiable;
    };
    let spans: Vec<ByteSpan> = specs.iter().filter_map(|s| s.resolve(v.size)).collect();
    match spans.as_slice() {
        [] => Decision::Unsatisfiable,
        [one] if specs.len() == 1 => Decision::Partial(*one),
        _ => Decision::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    fn v() -> Validators<'static> {
        Validators {
            etag: "\"abc\"",
            last_modified: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            size: 1000,
        }
    }

    fn get(pairs: &[(&'static str, &str)]) -> Decision {
        decide(&Method::GET, &h(pairs), &v())
    }

    #[test]
    fn ranges() {
        assert_eq!(get(&[]), Decision::Full);
        assert_eq!(
            get(&[("range", "bytes=0-9")]),
            Decision::Partial(ByteSpan { start: 0, end: 10 })
        );
        assert_eq!(
            get(&[("range", "bytes=-10")]),
            Decision::Partial(ByteSpan {
                start: 990,
                end: 1000
            })
        );
        assert_eq!(
            get(&[("range", "bytes=990-")]),
            Decision::Partial(ByteSpan {
                start: 990,
                end: 1000
            })
        );
        assert_eq!(get(&[("range", "bytes=1000-")]), Decision::Unsatisfiable);
        assert_eq!(get(&[("range", "bytes=x-y")]), Decision::Unsatisfiable);
        assert_eq!(get(&[("range", "bytes=0-1,5-6")]), Decision::Full);
        assert_eq!(get(&[("range", "bytes=0-1,5000-")]), Decision::Full);
        assert_eq!(get(&[("range", "items=0-1")]), Decision::Full);
        assert_eq!(
            decide(&Method::HEAD, &h(&[("range", "bytes=0-1")]), &v()),
            Decision::Full
        );
    }

    #[test]
    fn preconditions() {
        assert_eq!(get(&[("if-none-match", "\"abc\"")]), Decision::NotModified);
        assert_eq!(
            get(&[("if-none-match", "W/\"abc\"")]),
            Decision::NotModified
        );
        assert_eq!(
            get(&[("if-none-match", "\"x\", \"abc\"")]),
            Decision::NotModified
        );
        assert_eq!(get(&[("if-none-match", "*")]), Decision::NotModified);
        assert_eq!(get(&[("if-none-match", "\"zzz\"")]), Decision::Full);
        assert_eq!(
            get(&[("if-match", "\"zzz\"")]),
            Decision::PreconditionFailed
        );
        assert_eq!(
            get(&[("if-match", "W/\"abc\"")]),
            Decision::PreconditionFailed
        );
        assert_eq!(
            get(&[("if-match", "\"abc\""), ("range", "bytes=0-0")]),
            Decision::Partial(ByteSpan { start: 0, end: 1 })
        );
        let later = "Wed, 15 Nov 2023 00:00:00 GMT";
        let earlier = "Mon, 01 Jan 2001 00:00:00 GMT";
        assert_eq!(get(&[("if-modified-since", later)]), Decision::NotModified);
        assert_eq!(get(&[("if-modified-since", earlier)]), Decision::Full);
        assert_eq!(
            get(&[("if-unmodified-since", earlier)]),
            Decision::PreconditionFailed
        );
        // If-None-Match takes precedence over If-Modified-Since.
        assert_eq!(
            get(&[("if-none-match", "\"zzz\""), ("if-modified-since", later)]),
            Decision::Full
        );
    }

    #[test]
    fn if_range() {
        let r = ("range", "bytes=0-9");
        assert_eq!(
            get(&[r, ("if-range", "\"abc\"")]),
            Decision::Partial(ByteSpan { start: 0, end: 10 })
        );
        assert_eq!(get(&[r, ("if-range", "\"old\"")]), Decision::Full);
        assert_eq!(
            get(&[r, ("if-range", "Tue, 14 Nov 2023 22:13:20 GMT")]),
            Decision::Partial(ByteSpan { start: 0, end: 10 })
        );
        assert_eq!(
            get(&[r, ("if-range", "Mon, 01 Jan 2001 00:00:00 GMT")]),
            Decision::Full
        );
    }
}
