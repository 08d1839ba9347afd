use super::*;
use crate::record::ChunkRef;
use crate::ChunkId;

const TS: Timestamp = Timestamp {
    ms: 1_764_000_000_123,
    logical: 7,
    origin: u64::MAX - 3,
};

/// A record of `chunks` chunks and `inline` bytes inline, with metadata.
fn record(chunks: usize, inline: usize) -> ObjectRecord {
    let mut r = ObjectRecord {
        deleted: false,
        size: 4096,
        content_type: Some("video/mp4".into()),
        etag: blake3::hash(b"x").to_hex().to_string(),
        chunk_size: 4 << 20,
        chunks: (0..chunks)
            .map(|i| ChunkRef {
                id: ChunkId::of(&i.to_le_bytes()),
                size: 4 << 20,
            })
            .collect(),
        inline: (inline > 0).then(|| Bytes::from(vec![7u8; inline])),
        md5: Some("d41d8cd98f00b204e9800998ecf8427e".into()),
        ..ObjectRecord::tombstone("media", "videos/ü/a.mp4", TS)
    };
    r.meta.insert("title".into(), "a \"quoted\" title".into());
    r.headers
        .insert("cache-control".into(), "max-age=60".into());
    r
}

#[test]
fn a_packed_record_round_trips_with_raw_ids_and_bytes() {
    for (chunks, inline) in [(0, 0), (0, 4096), (256, 0), (3, 0)] {
        let r = record(chunks, inline);
        let enc = EncodedRecord::pack(&r).unwrap();
        assert_eq!((enc.ts, enc.format), (TS, RecordFormat::Packed));
        assert_eq!(enc.decode().unwrap(), r);
        let stored = enc.stored().clone();
        assert_eq!(stored[0], RecordFormat::Packed as u8);
        assert_eq!(EncodedRecord::stored_ts(&stored).unwrap(), TS);
        assert_eq!(EncodedRecord::decode_stored(&stored).unwrap(), r);
        let again = EncodedRecord::from_stored(stored.clone()).unwrap();
        assert_eq!((again.ts, again.format), (TS, RecordFormat::Packed));
        assert_eq!(again.stored().as_ptr(), stored.as_ptr(), "kept, not copied");
        // Ids and inline bytes are raw, not hex or base64.
        for c in &r.chunks {
            let raw = c.id.as_bytes();
            assert!(stored.windows(raw.len()).any(|w| w == raw));
        }
        let json = serde_json::to_vec(&r).unwrap();
        if chunks + inline > 0 {
            let ratio = stored.len() as f64 / json.len() as f64;
            assert!(
                ratio < 0.8,
                "{chunks}/{inline}: {} vs {}",
                stored.len(),
                json.len()
            );
        }
        // What a node's single-record read answers: the same record, as JSON.
        let as_json = enc.to_json().unwrap();
        assert_eq!(serde_json::from_slice::<ObjectRecord>(&as_json).unwrap(), r);
    }
}

#[test]
fn json_records_stamped_or_bare_still_read() {
    let r = record(2, 0);
    let json = serde_json::to_vec(&r).unwrap();
    let enc = EncodedRecord::from_json(&json).unwrap();
    assert_eq!((enc.ts, enc.format), (TS, RecordFormat::Json));
    assert_eq!(enc.body(), &json[..]);
    assert_eq!(enc.stored()[0], STAMP_FORMAT);
    assert_eq!(enc.stored().len(), STAMP_LEN + json.len());
    assert_eq!(enc.decode().unwrap(), r);
    let stored = enc.stored().clone();
    assert_eq!(EncodedRecord::decode_stored(&stored).unwrap(), r);
    let to_json = enc.to_json().unwrap();
    assert_eq!(&to_json[..], &json[..]);
    assert!(stored.as_ptr_range().contains(&to_json.as_ptr()), "a slice");
    // Bare JSON (stored before the header): stamped when read.
    let bare = Bytes::from(json.clone());
    let read = EncodedRecord::from_stored(bare.clone()).unwrap();
    assert_eq!(
        (read.ts, read.format, read.body()),
        (TS, RecordFormat::Json, &json[..])
    );
    assert_eq!(EncodedRecord::stored_ts(&bare).unwrap(), TS);
    assert_eq!(EncodedRecord::decode_stored(&bare).unwrap(), r);
    // A JSON document that is not a record is refused.
    for bad in [&b"not json"[..], b"{}", br#"{"ts": 5}"#, b"[1, 2]"] {
        assert!(EncodedRecord::from_json(bad).is_err());
    }
}

#[test]
fn headers_that_lie_or_are_unknown_are_refused() {
    let r = record(1, 0);
    // A header whose timestamp is not the body's: the body is never believed over it.
    let later = Timestamp {
        ms: TS.ms + 1,
        ..TS
    };
    let mut forged = header(RecordFormat::Packed, later);
    forged.extend_from_slice(EncodedRecord::pack(&r).unwrap().body());
    let forged = EncodedRecord::from_stored(forged.into()).unwrap();
    assert_eq!(forged.ts, later);
    assert!(matches!(forged.decode(), Err(Error::RecordStamp { .. })));
    assert!(EncodedRecord::decode_stored(forged.stored()).is_err());
    assert!(forged.to_json().is_err());
    // A format from a later version, a header cut short, a body that is not its format.
    let mut future = EncodedRecord::pack(&r).unwrap().stored().to_vec();
    future[0] = 2;
    assert!(matches!(
        EncodedRecord::from_stored(future.into()),
        Err(Error::RecordFormat(2))
    ));
    assert!(matches!(
        EncodedRecord::stored_ts(b"\x01short"),
        Err(Error::ShortStamp(6))
    ));
    let mut json_as_packed = header(RecordFormat::Packed, TS);
    json_as_packed.extend_from_slice(&serde_json::to_vec(&r).unwrap());
    assert!(EncodedRecord::decode_stored(&json_as_packed).is_err());
    assert!(EncodedRecord::from_stored(Bytes::from_static(b"\x7fgarbage")).is_err());
}

#[test]
fn fields_a_version_does_not_know_are_skipped_and_kept() {
    // The record as a later version might write it: one more field in its map.
    let r = record(2, 0);
    let mut stored = EncodedRecord::pack(&r).unwrap().stored().to_vec();
    let fields = stored[STAMP_LEN];
    assert_eq!(fields & 0xf0, 0x80, "a short map");
    stored[STAMP_LEN] = fields + 1;
    rmp_serde::encode::write(&mut stored, "replicas_wanted").unwrap();
    rmp_serde::encode::write(&mut stored, &5u32).unwrap();
    let enc = EncodedRecord::from_stored(stored.clone().into()).unwrap();
    assert_eq!(enc.decode().unwrap(), r);
    assert_eq!(&enc.stored()[..], &stored[..], "passed on with the field");
    // Fields a writer leaves out read as their defaults.
    let mut short = header(RecordFormat::Packed, TS);
    let minimal = serde_json::json!({"bucket": "b", "key": "k", "ts": TS});
    rmp_serde::encode::write_named(&mut short, &minimal).unwrap();
    let read = EncodedRecord::decode_stored(&short).unwrap();
    let expected = ObjectRecord {
        deleted: false,
        ..ObjectRecord::tombstone("b", "k", TS)
    };
    assert_eq!(read, expected);
}
