//! HTTP byte ranges (RFC 9110 §14): parsing a single `Range: bytes=...` header into an
//! absolute span.

use crate::Error;

/// An absolute, inclusive-exclusive byte span `[start, end)` with `start < end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSpan {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl ByteSpan {
    /// Number of bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Always false: a span holds at least one byte.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// `Content-Range` header value for a representation of `size` bytes.
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end - 1, size)
    }
}

/// One range spec as written, before it meets a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// `a-b` (inclusive) or `a-`.
    From { first: u64, last: Option<u64> },
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl RangeSpec {
    /// Resolves against a size; `None` when unsatisfiable.
    pub fn resolve(self, size: u64) -> Option<ByteSpan> {
        match self {
            RangeSpec::From { first, last } => {
                if first >= size {
                    return None;
                }
                let end = last.map_or(size, |l| l.saturating_add(1).min(size));
                Some(ByteSpan { start: first, end })
            }
            RangeSpec::Suffix(n) => {
                if n == 0 || size == 0 {
                    return None;
                }
                Some(ByteSpan {
                    start: size.saturating_sub(n),
                    end: size,
                })
            }
        }
    }
}

/// Parses a `Range` header value into its specs (one or more, comma separated).
pub fn parse_range_header(value: &str) -> Result<Vec<RangeSpec>, Error> {
    let bad = || Error::MalformedRange(value.chars().take(100).collect());
    let rest = value.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    let mut specs = Vec::new();
    for part in rest.split(',') {
        let part = part.trim();
        let (a, b) = part.split_once('-').ok_or_else(bad)?;
        let num = |s: &str| -> Result<u64, Error> {
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse().map_err(|_| bad())
        };
        let spec = if a.is_empty() {
            RangeSpec::Suffix(num(b)?)
        } else {
            let first = num(a)?;
            let last = if b.is_empty() { None } else { Some(num(b)?) };
            if last.is_some_and(|l| l < first) {
                return Err(bad());
            }
            RangeSpec::From { first, last }
        };
        specs.push(spec);
    }
    if specs.is_empty() {
        return Err(bad());
    }
    Ok(specs)
}

/// Parses a header that must hold exactly one range and resolves it against `size`.
pub fn single_span(value: &str, size: u64) -> Result<ByteSpan, Error> {
    let specs = parse_range_header(value)?;
    let [spec] = specs.as_slice() else {
        return Err(Error::MalformedRange(
            "only a single range is supported here".into(),
        ));
    };
    spec.resolve(size)
        .ok_or(Error::RangeNotSatisfiable { size })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(s: &str, size: u64) -> Option<(u64, u64)> {
        single_span(s, size).ok().map(|r| (r.start, r.end))
    }

    #[test]
    fn rfc9110_forms() {
        assert_eq!(span("bytes=0-499", 1000), Some((0, 500)));
        assert_eq!(span("bytes=500-", 1000), Some((500, 1000)));
        assert_eq!(span("bytes=-200", 1000), Some((800, 1000)));
        assert_eq!(span("bytes=-2000", 1000), Some((0, 1000)));
        assert_eq!(span("bytes=900-5000", 1000), Some((900, 1000)));
        assert_eq!(span("bytes=1000-", 1000), None);
        assert_eq!(span("bytes=-0", 1000), None);
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "bytes=",
            "bytes=a-b",
            "items=0-1",
            "bytes=5-1",
            "bytes=--1",
            "bytes=1",
            "bytes=+1-2",
        ] {
            assert!(
                matches!(single_span(bad, 10), Err(Error::MalformedRange(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            single_span("bytes=20-30", 10),
            Err(Error::RangeNotSatisfiable { size: 10 })
        ));
    }
}
