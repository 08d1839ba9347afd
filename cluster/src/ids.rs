//! Chunk ids: a chunk is named by the blake3 hash of its bytes.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// Length of a chunk id in bytes (a blake3 hash).
pub const CHUNK_ID_LEN: usize = 32;

/// The id of an immutable chunk: `blake3(bytes)`.
///
/// Its text form is exactly 64 lowercase hex digits; nothing else parses, which is
/// what keeps ids safe to use as file names (no `/`, no `..`, no case aliasing).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkId([u8; CHUNK_ID_LEN]);

impl ChunkId {
    /// The id of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    /// Wraps raw hash bytes.
    pub fn from_bytes(bytes: [u8; CHUNK_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// Reads an id from a 32-byte slice (a database key).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The raw hash bytes.
    pub fn as_bytes(&self) -> &[u8; CHUNK_ID_LEN] {
        &self.0
    }

    /// The id as a blake3 hash, for constant-time comparison.
    pub fn as_hash(&self) -> blake3::Hash {
        blake3::Hash::from_bytes(self.0)
    }

    /// Lowercase hex text form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for ChunkId {
    type Err = Error;

    /// One pass over the text: every manifest read parses its ids, so this is hot.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::BadChunkId(s.chars().take(80).collect());
        let bytes = s.as_bytes();
        if bytes.len() != CHUNK_ID_LEN * 2 {
            return Err(bad());
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; CHUNK_ID_LEN];
        for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *o = (nibble(pair[0]).ok_or_else(bad)? << 4) | nibble(pair[1]).ok_or_else(bad)?;
        }
        Ok(Self(out))
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl serde::Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            // Packed records: the 32 bytes themselves.
            return s.serialize_bytes(&self.0);
        }
        // Hex into a buffer on the stack: records list hundreds of ids.
        let mut buf = [0u8; CHUNK_ID_LEN * 2];
        for (pair, b) in buf.chunks_exact_mut(2).zip(self.0) {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0xf)];
        }
        let hex = std::str::from_utf8(&buf).map_err(serde::ser::Error::custom)?;
        s.serialize_str(hex)
    }
}

impl<'de> serde::Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Parses the string where the input holds it (no copy into a `String`).
        struct Hex;
        impl serde::de::Visitor<'_> for Hex {
            type Value = ChunkId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a chunk id: 64 lowercase hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ChunkId, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<ChunkId, E> {
                <[u8; CHUNK_ID_LEN]>::try_from(b)
                    .map(ChunkId)
                    .map_err(|_| E::invalid_length(b.len(), &"32 bytes"))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(Hex)
        } else {
            d.deserialize_bytes(Hex)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_and_refuses_bad_ids() {
        let id = ChunkId::of(b"record");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", id.to_hex()));
        assert_eq!(serde_json::from_str::<ChunkId>(&json).unwrap(), id);
        // An escaped digit: the parser hands over a string it had to build.
        let escaped = format!(
            "\"\\u00{:x}{}\"",
            id.to_hex().as_bytes()[0],
            &id.to_hex()[1..]
        );
        assert_eq!(serde_json::from_str::<ChunkId>(&escaped).unwrap(), id);
        for bad in ["\"abc\"", "17", "null", &json.to_uppercase()] {
            assert!(serde_json::from_str::<ChunkId>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hex_round_trips() {
        let id = ChunkId::of(b"hello");
        assert_eq!(id.to_hex().parse::<ChunkId>().unwrap(), id);
    }

    #[test]
    fn rejects_anything_but_lowercase_hex() {
        let good = ChunkId::of(b"x").to_hex();
        for bad in [
            String::new(),
            good.to_uppercase(),
            good[..63].to_string(),
            format!("{good}0"),
            "../../../../etc/passwd".to_string(),
            format!("{}/..", &good[..61]),
            format!("{}%2f", &good[..61]),
        ] {
            assert!(bad.parse::<ChunkId>().is_err(), "{bad:?} parsed");
        }
    }
}
