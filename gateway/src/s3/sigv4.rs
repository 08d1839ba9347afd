//! SigV4 verification for the fast read path ([`super::fast`]): decides whether a GET
//! carries a valid AWS Signature Version 4 (in headers or a presigned URL).
//!
//! It only ever *accepts*: any request it cannot prove valid (a wrong signature, an
//! expired URL, an unusual form such as HTTP/2 or a streaming payload) goes to `s3s`,
//! which checks it again in full and answers with the exact S3 error. So this module
//! never decides an error, and where it is stricter than `s3s` a request is only slower.
//! The rules are those of `s3s` 0.14 (`ops/signature.rs`, `sig_v4/methods.rs`): the
//! same canonical request, the same 15-minute clock skew, the same expiry check.
//!
//! What makes it cheaper than `s3s`: the signing key (four HMACs over the secret) is
//! derived once per key, day and region and kept ([`SigningKeys`]), and nothing of the
//! request is copied into ordered structures first.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{HeaderMap, Method};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// How far a request's signing time may be from the gateway's clock (either way), as
/// in `s3s` (`presigned_url_max_skew_time_secs`) and AWS: 15 minutes.
pub const MAX_CLOCK_SKEW_SECS: i64 = 900;

/// The longest validity a presigned URL may claim (AWS's limit: 7 days). `s3s` takes
/// any `u32`; longer ones go to it.
pub const MAX_PRESIGNED_EXPIRY_SECS: i64 = 7 * 24 * 3600;

/// Signing keys kept at most. A key enters only after it verified a signature, so only
/// holders of a secret add entries; at the bound the cache starts over.
pub const MAX_SIGNING_KEYS: usize = 1024;

/// The payload hash of an empty body (what SDKs sign for a GET).
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What the request's query says, decoded (`form_urlencoded`, as `s3s` decodes it).
pub type Query = [(String, String)];

/// The parts of a request the signature covers.
pub struct Signed<'a> {
    pub method: &'a Method,
    /// The percent-decoded path (the canonical URI is its encoding).
    pub decoded_path: &'a str,
    pub query: &'a Query,
    pub headers: &'a HeaderMap,
    /// Seconds since the epoch, now.
    pub now: i64,
}

/// `AKID/20261204/us-east-1/s3/aws4_request`.
struct Credential<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
}

fn credential(s: &str) -> Option<Credential<'_>> {
    let mut it = s.split('/');
    let (access_key, date, region) = (it.next()?, it.next()?, it.next()?);
    (it.next()? == "s3" && it.next()? == "aws4_request" && it.next().is_none()).then_some(
        Credential {
            access_key,
            date,
            region,
        },
    )
}

/// One signature to check: who, when, over what.
struct Claim<'a> {
    credential: Credential<'a>,
    /// `YYYYMMDDTHHMMSSZ`.
    amz_date: &'a str,
    /// Lower-case, sorted, `;`-separated.
    signed_headers: &'a str,
    signature: &'a str,
    payload: &'a str,
    presigned: bool,
}

/// Signing keys by (access key, day, region).
#[derive(Default)]
pub struct SigningKeys(Mutex<HashMap<(String, String, String), [u8; 32]>>);

impl SigningKeys {
    /// True when `req` is signed with the secret of its access key (`secret_of`).
    pub fn verify<'s>(
        &self,
        req: &Signed<'_>,
        secret_of: impl Fn(&str) -> Option<&'s str>,
    ) -> bool {
        let Some(claim) = claim(req) else {
            return false;
        };
        let Some(canonical) = canonical_request(req, &claim) else {
            return false;
        };
        let Ok(wanted) = hex::decode(claim.signature) else {
            return false;
        };
        let sts = string_to_sign(&claim, &canonical);
        let c = &claim.credential;
        let id = (
            c.access_key.to_owned(),
            c.date.to_owned(),
            c.region.to_owned(),
        );
        let cached = self.0.lock().ok().and_then(|m| m.get(&id).copied());
        let key = match cached {
            Some(k) => k,
            None => match secret_of(c.access_key).and_then(|s| signing_key(s, c.date, c.region)) {
                Some(k) => k,
                None => return false,
            },
        };
        if !matches_signature(&key, &sts, &wanted) {
            return false;
        }
        if cached.is_none() {
            if let Ok(mut m) = self.0.lock() {
                if m.len() >= MAX_SIGNING_KEYS {
                    m.clear();
                }
                m.insert(id, key);
            }
        }
        true
    }
}

/// The claim of a presigned URL or of an `Authorization` header, if its form is one
/// this path takes and its time is valid now.
fn claim<'a>(req: &Signed<'a>) -> Option<Claim<'a>> {
    let auth = req.headers.get("authorization");
    let claim = if query_value(req.query, "X-Amz-Signature").is_some() {
        if auth.is_some() {
            return None;
        }
        presigned_claim(req)?
    } else {
        header_claim(req, auth?.to_str().ok()?)?
    };
    let ok = claim.amz_date.get(..8) == Some(claim.credential.date)
        && claim.signed_headers.split(';').any(|h| h == "host")
        && sorted_unique(claim.signed_headers)
        && claim.signature.len() == 64;
    ok.then_some(claim)
}

fn presigned_claim<'a>(req: &Signed<'a>) -> Option<Claim<'a>> {
    let q = |name| query_value(req.query, name);
    if q("X-Amz-Algorithm")? != "AWS4-HMAC-SHA256"
        || req.headers.contains_key("x-amz-content-sha256")
    {
        return None;
    }
    let amz_date = q("X-Amz-Date")?;
    let age = req.now - amz_seconds(amz_date)?;
    let expires: i64 = q("X-Amz-Expires")?.parse().ok()?;
    let fresh = (0..=MAX_PRESIGNED_EXPIRY_SECS).contains(&expires)
        && age >= -MAX_CLOCK_SKEW_SECS
        && age <= expires;
    fresh.then_some(())?;
    Some(Claim {
        credential: credential(q("X-Amz-Credential")?)?,
        amz_date,
        signed_headers: q("X-Amz-SignedHeaders")?,
        signature: q("X-Amz-Signature")?,
        payload: "UNSIGNED-PAYLOAD",
        presigned: true,
    })
}

fn header_claim<'a>(req: &Signed<'a>, auth: &'a str) -> Option<Claim<'a>> {
    let fields = auth.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for field in fields.split(',') {
        let (name, value) = field.trim().split_once('=')?;
        let slot = match name {
            "Credential" => &mut cred,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut sig,
            _ => return None,
        };
        slot.replace(value).is_none().then_some(())?;
    }
    let header = |name| req.headers.get(name).and_then(|v| v.to_str().ok());
    let amz_date = header("x-amz-date")?;
    let skew = req.now - amz_seconds(amz_date)?;
    let payload = header("x-amz-content-sha256")?;
    let plain = payload == EMPTY_SHA256 || payload == "UNSIGNED-PAYLOAD";
    (plain && skew.abs() <= MAX_CLOCK_SKEW_SECS).then_some(())?;
    Some(Claim {
        credential: credential(cred?)?,
        amz_date,
        signed_headers: signed?,
        signature: sig?,
        payload,
        presigned: false,
    })
}

fn query_value<'q>(query: &'q Query, name: &str) -> Option<&'q str> {
    let mut found = query.iter().filter(|(n, _)| n == name);
    let (_, v) = found.next()?;
    found.next().is_none().then_some(v.as_str())
}

fn sorted_unique(list: &str) -> bool {
    let names: Vec<&str> = list.split(';').collect();
    names.windows(2).all(|w| w[0] < w[1])
        && names
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| !b.is_ascii_uppercase()))
}

/// Seconds since the epoch of `YYYYMMDDTHHMMSSZ`.
fn amz_seconds(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u16>().ok();
    let month = time::Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::from(num(0..4)?),
        month,
        u8::try_from(num(6..8)?).ok()?,
    )
    .ok()?;
    let t = time::Time::from_hms(
        u8::try_from(num(9..11)?).ok()?,
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(13..15)?).ok()?,
    )
    .ok()?;
    Some(
        time::PrimitiveDateTime::new(date, t)
            .assume_utc()
            .unix_timestamp(),
    )
}

/// The canonical request (SigV4 step 1), or `None` when a signed header is missing,
/// repeated or not text.
fn canonical_request(req: &Signed<'_>, claim: &Claim<'_>) -> Option<String> {
    let mut out = String::with_capacity(512);
    out.push_str(req.method.as_str());
    out.push('\n');
    uri_encode(&mut out, req.decoded_path, false);
    out.push('\n');
    canonical_query(&mut out, req.query, claim.presigned);
    out.push('\n');
    for name in claim.signed_headers.split(';') {
        let mut values = req.headers.get_all(name).iter();
        let value = values.next()?.to_str().ok()?;
        values.next().is_none().then_some(())?;
        out.push_str(name);
        out.push(':');
        push_header_value(&mut out, value);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(claim.signed_headers);
    out.push('\n');
    out.push_str(claim.payload);
    Some(out)
}

/// Names and values encoded, sorted by name (stable), without the signature itself.
fn canonical_query(out: &mut String, query: &Query, presigned: bool) {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .filter(|(n, _)| !(presigned && n == "X-Amz-Signature"))
        .map(|(n, v)| {
            let (mut en, mut ev) = (String::new(), String::new());
            uri_encode(&mut en, n, true);
            uri_encode(&mut ev, v, true);
            (en, ev)
        })
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (n, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(n);
        out.push('=');
        out.push_str(v);
    }
}

/// Trimmed, inner runs of whitespace as one space.
fn push_header_value(out: &mut String, value: &str) {
    for (i, word) in value.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
}

/// RFC 3986 encoding of everything but unreserved characters (and `/` unless asked).
fn uri_encode(out: &mut String, input: &str, encode_slash: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in input.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'~' | b'.' => {
                out.push(char::from(b))
            }
            b'/' if !encode_slash => out.push('/'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
}

fn string_to_sign(claim: &Claim<'_>, canonical: &str) -> String {
    let c = &claim.credential;
    format!(
        "AWS4-HMAC-SHA256\n{}\n{}/{}/s3/aws4_request\n{}",
        claim.amz_date,
        c.date,
        c.region,
        hex::encode(Sha256::digest(canonical.as_bytes()))
    )
}

/// HMAC-SHA256 (`None` never happens: HMAC takes keys of any length).
fn hmac(key: &[u8], data: &[u8]) -> Option<[u8; 32]> {
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    mac.update(data);
    Some(mac.finalize().into_bytes().into())
}

/// The SigV4 signing key of a secret for one day and region.
fn signing_key(secret: &str, date: &str, region: &str) -> Option<[u8; 32]> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes())?;
    let k = hmac(&k, region.as_bytes())?;
    let k = hmac(&k, b"s3")?;
    hmac(&k, b"aws4_request")
}

/// Constant-time comparison of the expected signature with `wanted`.
fn matches_signature(key: &[u8; 32], string_to_sign: &str, wanted: &[u8]) -> bool {
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return false;
    };
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(wanted).is_ok()
}

#[cfg(test)]
mod tests;
