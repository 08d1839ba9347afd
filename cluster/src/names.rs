//! Rules for bucket names and object keys, shared by every process that accepts them.

use crate::Error;

/// Shortest bucket name (as S3).
pub const MIN_BUCKET_LEN: usize = 3;
/// Longest bucket name (as S3): keeps names DNS-label sized.
pub const MAX_BUCKET_LEN: usize = 63;
/// Longest object key in bytes (as S3), so a key always fits a URL and a database key.
pub const MAX_KEY_LEN: usize = 1024;

/// Checks a bucket name: 3–63 of `a-z 0-9 . -`, starting and ending with a letter or
/// digit. The rule keeps bucket names free of `/` and NUL, which the record table uses as
/// separators.
pub fn check_bucket(name: &str) -> Result<(), Error> {
    let bad = |why| {
        Err(Error::BadBucket {
            name: name.chars().take(80).collect(),
            why,
        })
    };
    if name.len() < MIN_BUCKET_LEN || name.len() > MAX_BUCKET_LEN {
        return bad("length must be 3 to 63");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return bad("only a-z, 0-9, '.' and '-' are allowed");
    }
    let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge_ok(name.as_bytes()[0]) || !edge_ok(name.as_bytes()[name.len() - 1]) {
        return bad("must start and end with a letter or digit");
    }
    Ok(())
}

/// Where the gateway keeps one record per bucket (the bucket registry). System buckets
/// start with `_`, which no user bucket can (see [`check_bucket`]), so they never collide.
pub const BUCKETS_BUCKET: &str = "_buckets";
/// Where the gateway keeps the state of S3 multipart uploads and their parts.
pub const UPLOADS_BUCKET: &str = "_uploads";
/// Every system bucket.
pub const SYSTEM_BUCKETS: [&str; 2] = [BUCKETS_BUCKET, UPLOADS_BUCKET];

/// Checks the bucket of a stored record: a user bucket or one of [`SYSTEM_BUCKETS`].
/// (Storage nodes accept both; the public APIs only user buckets.)
pub fn check_record_bucket(name: &str) -> Result<(), Error> {
    if SYSTEM_BUCKETS.contains(&name) {
        return Ok(());
    }
    check_bucket(name)
}

/// Checks an object key: 1–1024 bytes of UTF-8 without control characters, and no
/// `.`/`..` path segments (keys map to URL paths and later to HLS trees).
pub fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::BadKey("key is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::BadKey("key is longer than 1024 bytes"));
    }
    if key.chars().any(char::is_control) {
        return Err(Error::BadKey("key contains control characters"));
    }
    if key.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(Error::BadKey("key contains a '.' or '..' path segment"));
    }
    Ok(())
}

/// Percent-encodes a key for a URL path: every `/`-separated segment is encoded (all but
/// RFC 3986's unreserved `A-Z a-z 0-9 - . _ ~`, byte by byte, so UTF-8 stays UTF-8) and
/// the `/` between segments are kept. Spaces, `?`, `#` and `%` can never end the path early
/// or be read as an escape.
pub fn encode_key_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        for ok in ["abc", "media-1", "a.b.c", &"a".repeat(63)] {
            assert!(check_bucket(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "ABC",
            "-abc",
            "abc-",
            "a/b",
            "a\0b",
            "ümlaut",
            &"a".repeat(64),
        ] {
            assert!(check_bucket(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys() {
        for ok in ["a", "videos/2024/cat.mp4", "日本語/ファイル", "a..b"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../etc/passwd",
            "a/./b",
            "a\nb",
            "x\0",
            &"k".repeat(1025),
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_paths() {
        assert_eq!(
            encode_key_path("videos/2024/cat.mp4"),
            "videos/2024/cat.mp4"
        );
        assert_eq!(encode_key_path("a b?c#d%e+f"), "a%20b%3Fc%23d%25e%2Bf");
        assert_eq!(encode_key_path("日/x~"), "%E6%97%A5/x~");
        assert_eq!(encode_key_path("a//b/"), "a//b/");
    }
}
