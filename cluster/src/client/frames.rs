//! Stamped records (see [`crate::record::EncodedRecord`]) framed in one body: a record
//! batch offered to a node, and a read batch's answer. Per record one byte,
//! [`RECORD_ABSENT`] or [`RECORD_HELD`], and for one held its length (u32, big-endian)
//! and its stored bytes.

use bytes::Bytes;

use crate::{Error, Result};

/// In a framed body: no record is held for the name.
pub const RECORD_ABSENT: u8 = 0;

/// In a framed body: a record follows.
pub const RECORD_HELD: u8 = 1;

/// `records` framed in one body.
pub fn frame<R: AsRef<[u8]>>(records: &[Option<R>]) -> Result<Vec<u8>> {
    frame_each(records.iter().map(Option::as_ref))
}

/// `records`, every one held, framed in one body.
pub fn frame_held<R: AsRef<[u8]>>(records: &[R]) -> Result<Vec<u8>> {
    frame_each(records.iter().map(Some))
}

fn frame_each<'a, R, I>(records: I) -> Result<Vec<u8>>
where
    R: AsRef<[u8]> + 'a,
    I: Iterator<Item = Option<&'a R>> + Clone,
{
    let len = records
        .clone()
        .map(|r| 1 + r.map_or(0, |v| 4 + v.as_ref().len()))
        .sum();
    let mut body = Vec::with_capacity(len);
    for r in records {
        match r {
            Some(v) => {
                let v = v.as_ref();
                let n = u32::try_from(v.len())
                    .map_err(|_| Error::BatchAnswer("a record over 4 GiB".into()))?;
                body.push(RECORD_HELD);
                body.extend_from_slice(&n.to_be_bytes());
                body.extend_from_slice(v);
            }
            None => body.push(RECORD_ABSENT),
        }
    }
    Ok(body)
}

/// The records framed in `body`, each a slice of it (not copied).
pub fn unframe(body: &Bytes) -> Result<Vec<Option<Bytes>>> {
    let bad = |what: &str| Error::BatchAnswer(format!("framed records: {what}"));
    let mut found = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let tag = body[at];
        at += 1;
        match tag {
            RECORD_ABSENT => found.push(None),
            RECORD_HELD => {
                let len =
                    body.get(at..at + 4)
                        .and_then(|b| b.try_into().ok())
                        .map(u32::from_be_bytes)
                        .ok_or_else(|| bad("cut short in a length"))? as usize;
                at += 4;
                if body.len() - at < len {
                    return Err(bad("cut short in a record"));
                }
                found.push(Some(body.slice(at..at + len)));
                at += len;
            }
            other => return Err(bad(&format!("unknown tag {other}"))),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_sliced_not_copied_and_checked() {
        let body = Bytes::from(frame(&[Some(&b"first"[..]), None, Some(b"")]).unwrap());
        let found = unframe(&body).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].as_deref(), Some(&b"first"[..]));
        assert!(body
            .as_ptr_range()
            .contains(&found[0].as_ref().unwrap().as_ptr()));
        assert_eq!(
            (found[1].as_deref(), found[2].as_deref()),
            (None, Some(&b""[..]))
        );
        assert!(unframe(&Bytes::new()).unwrap().is_empty());
        let held = [&b"a"[..], b"", b"bc"];
        assert_eq!(frame_held(&held).unwrap(), frame(&held.map(Some)).unwrap());
        for bad in [&body[..body.len() - 7], &body[..3], b"\x02", b"[null]"] {
            assert!(unframe(&Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }
}
