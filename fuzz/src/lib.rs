//! The bodies of kura's fuzz targets: every parser that reads bytes an outsider or a
//! peer controls, each with the properties its answer must have (a panic is a finding).
//!
//! `fuzz_targets/*.rs` hand libFuzzer's input to these; `tests/corpus.rs` replays the
//! checked-in corpus and every past finding through them on stable Rust, so the
//! regressions run in the ordinary test suite too.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use kura_cluster::range::{parse_range_header, single_span, RangeSpec};
use kura_cluster::record::ObjectRecord;
use kura_cluster::signed::{self, Scope, SigningKey, SigningKeys};
use kura_cluster::{names, verify, ChunkId};
use kura_gateway::conditional::{decide, Decision, Validators};

/// The targets by name, for the corpus replay.
pub const TARGETS: [(&str, fn(&[u8])); 6] = [
    ("range", range),
    ("conditional", conditional),
    ("names", names),
    ("tokens", tokens),
    ("records", records),
    ("node_wire", node_wire),
];

/// First 8 bytes as a number (0 if shorter), and the rest.
fn split_u64(data: &[u8]) -> (u64, &[u8]) {
    match data.split_first_chunk::<8>() {
        Some((n, rest)) => (u64::from_le_bytes(*n), rest),
        None => (0, data),
    }
}

/// `Range` headers: parsing, resolving against a size, and the spans they give.
pub fn range(data: &[u8]) {
    let (size, rest) = split_u64(data);
    let Ok(value) = std::str::from_utf8(rest) else {
        return;
    };
    if let Ok(specs) = parse_range_header(value) {
        assert!(!specs.is_empty());
        for spec in specs {
            if let RangeSpec::From {
                first,
                last: Some(last),
            } = spec
            {
                assert!(first <= last);
            }
            if let Some(span) = spec.resolve(size) {
                assert!(
                    span.start < span.end && span.end <= size,
                    "{span:?} of {size}"
                );
                let _ = span.content_range(size);
                let (start, end, _) = verify::covering_blocks(span.start, span.end, size);
                assert!(start <= span.start && span.end <= end && end <= size);
            }
        }
    }
    if let Ok(span) = single_span(value, size) {
        assert!(span.start < span.end && span.end <= size);
    }
}

/// Conditional request headers (If-Match, If-None-Match, If-(Un)Modified-Since, Range,
/// If-Range): lines `name: value`, against fixed validators.
pub fn conditional(data: &[u8]) {
    let (size, rest) = split_u64(data);
    let mut headers = HeaderMap::new();
    for line in rest.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let v = Validators {
        etag: "\"0123abcd\"",
        last_modified: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        size,
    };
    for method in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE] {
        if let Decision::Partial(span) = decide(&method, &headers, &v) {
            assert!(
                span.start < span.end && span.end <= size,
                "{span:?} of {size}"
            );
        }
    }
}

/// Bucket and key names, and the URL path of an accepted key.
pub fn names(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if names::check_bucket(s).is_ok() {
        assert!(names::check_record_bucket(s).is_ok(), "{s:?}");
        assert!(!s.contains('/') && !s.contains('\0'));
    }
    if names::check_key(s).is_ok() {
        let path = names::encode_key_path(s);
        assert!(
            path.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~/%".contains(&b)),
            "{path:?}"
        );
    }
}

/// Signed URL tokens: whatever the input, verification refuses or grants exactly what
/// was signed; and a token signed here is granted for its name only.
pub fn tokens(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(signer) = SigningKey::new("k1", "fuzz-signing-key-0123456789abcdef") else {
        panic!("a valid key was refused");
    };
    let Ok(keys) = SigningKeys::new(vec![signer.clone()]) else {
        panic!("a valid key set was refused");
    };
    let mut parts = s.splitn(3, '\n');
    let (token, bucket, key) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("b"),
        parts.next().unwrap_or("k"),
    );
    let _ = signed::token_fields::<4>(token);
    let _ = signed::token_fields::<5>(token);
    // A forged token is refused (only a collision of the keyed MAC could pass).
    assert!(signed::verify(&keys, token, bucket, key, 0).is_err() || token.contains(".k1."));
    if names::check_bucket(bucket).is_err() || names::check_key(key).is_err() {
        return;
    }
    let Ok(t) = signed::token(&signer, bucket, key, Scope::Object, 100) else {
        panic!("signing {bucket}/{key} failed");
    };
    assert!(signed::verify(&keys, &t, bucket, key, 50).is_ok());
    assert!(
        signed::verify(&keys, &t, bucket, key, 101).is_err(),
        "expired"
    );
    let other = format!("{key}x");
    assert!(
        signed::verify(&keys, &t, bucket, &other, 50).is_err(),
        "{other}"
    );
    if let Some(slash) = key.rfind('/') {
        let tree = &key[..=slash];
        if let Ok(t) = signed::token(&signer, bucket, key, Scope::Tree(tree), 100) {
            assert!(signed::verify(&keys, &t, bucket, key, 50).is_ok());
            let outside = format!("{}x", &tree[..tree.len() - 1]);
            assert!(signed::verify(&keys, &t, bucket, &outside, 50).is_err());
        }
    }
}

/// Records and cluster maps as nodes send them (JSON): decoding never panics, what
/// decodes encodes back to the same value, and a record's timestamp read alone (as a
/// quorum read does) is the whole record's. Records as nodes store them (a header and
/// a packed or JSON body, or bare JSON) and framed batches never panic either; a stored
/// record that decodes packs and reads back to the same record.
pub fn records(data: &[u8]) {
    let stamp = kura_cluster::record::EncodedRecord::from_json(data);
    if let Ok(r) = serde_json::from_slice::<ObjectRecord>(data) {
        assert_eq!(stamp.expect("a record's timestamp reads alone").ts, r.ts);
        let again: ObjectRecord =
            serde_json::from_slice(&serde_json::to_vec(&r).expect("encodes")).expect("decodes");
        assert_eq!(r, again);
        let _ = kura_cluster::record::max_object_bytes(r.chunk_size);
        let _ = kura_cluster::record::etag_is_content_hash(&r.etag);
    }
    // A stored record (header, or bare JSON) and a framed batch.
    use kura_cluster::record::EncodedRecord;
    let bytes = bytes::Bytes::copy_from_slice(data);
    if let Ok(e) = EncodedRecord::from_stored(bytes.clone()) {
        if EncodedRecord::is_stamped(data) {
            assert_eq!(&e.stored()[..], data, "kept as stored");
        }
        assert_eq!(EncodedRecord::stored_ts(data).expect("reads again"), e.ts);
        if let Ok(r) = e.decode() {
            let packed = EncodedRecord::pack(&r).expect("packs");
            assert_eq!(packed.decode().expect("unpacks"), r);
            assert_eq!(EncodedRecord::decode_stored(data).expect("decodes alike"), r);
        }
    }
    if let Ok(found) = kura_cluster::client::parse_record_reads(&bytes) {
        assert!(found.len() <= data.len());
    }
    if let Ok(m) = serde_json::from_slice::<kura_cluster::map::ClusterMap>(data) {
        let ring = kura_cluster::ring::Ring::new(&m);
        let (owners, _) = ring.placement(&[7; 32], m.replicas);
        assert!(owners.len() <= m.replicas);
    }
}

/// The storage node's own binary formats: chunk index values, write-log keys, chunk
/// ids in URLs, and the block proofs of verified range reads.
pub fn node_wire(data: &[u8]) {
    use kura_storage_node::catchup::log;
    use kura_storage_node::chunks::{file_cv_count, IndexEntry, Location};
    if let Ok(entry) = IndexEntry::decode(data) {
        if let Location::File { cvs } = &entry.location {
            assert_eq!(cvs.len(), file_cv_count(entry.size));
        }
    }
    let _ = log::decode(data);
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(id) = s.parse::<ChunkId>() {
            assert_eq!(id.to_hex(), s.to_ascii_lowercase());
        }
    }
    // Block proofs: CVs taken from the input verify exactly the blocks they came from.
    let (len, rest) = split_u64(data);
    let cvs: Vec<verify::BlockCv> = rest
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect();
    let _ = verify::root_of(&cvs, len % (1 << 24));
    let block = &rest[..rest.len().min(verify::VERIFY_BLOCK_LEN as usize)];
    if block.is_empty() {
        return; // blocks are never empty (`chunks` of a span yields none)
    }
    let cv = verify::block_cv(0, block);
    assert!(verify::verify_blocks(&[cv], 0, block));
    if let Some((first, tail)) = block.split_first() {
        let mut changed = vec![first ^ 1];
        changed.extend_from_slice(tail);
        assert!(!verify::verify_blocks(&[cv], 0, &changed));
    }
}
