//! `encoding-type=url` in listings: S3 then percent-encodes every key (and prefix,
//! delimiter, marker) it returns, so names with characters XML 1.0 cannot carry survive
//! the trip. The aws CLI and boto3 ask for it by default and decode what they get, so a
//! listing that ignored it would hand them wrong names (`a%41` back as `aA`).
//!
//! The encoding is kura's key-path encoding (`kura_cluster::names::encode_key_path`):
//! RFC 3986's unreserved characters and `/` stay, everything else (`+` and space
//! included) becomes `%XX`, which plain and form-style (`+` is space) decoders both read
//! back exactly.

use kura_cluster::names::encode_key_path;
use s3s::dto::EncodingType;
use s3s::{s3_error, S3Result};

/// How names are written into one listing's answer.
#[derive(Clone, Copy, Debug)]
pub struct Names {
    url: bool,
}

impl Names {
    /// From the request's `encoding-type`: absent, or `url` (anything else is refused,
    /// as S3 does).
    pub fn of(given: Option<&EncodingType>) -> S3Result<Self> {
        match given.map(EncodingType::as_str) {
            None => Ok(Self { url: false }),
            Some(EncodingType::URL) => Ok(Self { url: true }),
            Some(_) => Err(s3_error!(
                InvalidArgument,
                "Invalid Encoding Method specified in Request"
            )),
        }
    }

    /// One name as it goes into the answer.
    pub fn name(self, s: String) -> String {
        if self.url {
            encode_key_path(&s)
        } else {
            s
        }
    }

    /// An optional name as it goes into the answer.
    pub fn opt(self, s: Option<String>) -> Option<String> {
        s.map(|s| self.name(s))
    }

    /// The `EncodingType` the answer echoes (clients decode only when it is there).
    pub fn echo(self) -> Option<EncodingType> {
        self.url
            .then(|| EncodingType::from_static(EncodingType::URL))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_keeps_slashes_and_unreserved_characters_only() {
        let n = Names::of(Some(&EncodingType::from_static("url"))).unwrap();
        assert_eq!(n.name("a/b-c_d.e~f".into()), "a/b-c_d.e~f");
        assert_eq!(
            n.name("sp ace+plus%41&<ü".into()),
            "sp%20ace%2Bplus%2541%26%3C%C3%BC"
        );
        let plain = Names::of(None).unwrap();
        assert_eq!(plain.name("a b".into()), "a b");
        assert!(plain.echo().is_none());
        assert!(Names::of(Some(&EncodingType::from_static("base64"))).is_err());
    }
}
