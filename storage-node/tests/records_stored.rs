//! How records are stored: a header (format, timestamp) in front of the body as it
//! arrived, packed or JSON, so that comparing replicas reads no body; records stored as
//! bare JSON (before the header) still read, compare, list and batch-read the same. Real RocksDB, then a
//! real node over the same directory.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{config, SECRET};
use kura_cluster::client::{NodeClient, RecordName};
use kura_cluster::hlc::Clock;
use kura_cluster::record::{EncodedRecord, ObjectRecord, RecordFormat, STAMP_FORMAT, STAMP_LEN};
use kura_storage_node::db::{Db, CF_RECORDS};
use kura_storage_node::records::{Offer, RecordTable};

fn json(r: &ObjectRecord) -> Vec<u8> {
    serde_json::to_vec(r).unwrap()
}

fn raw(db: &Db, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let k = [bucket.as_bytes(), b"\0", key.as_bytes()].concat();
    db.raw().get_cf(db.cf(CF_RECORDS).unwrap(), k).unwrap()
}

#[tokio::test]
async fn bare_json_records_read_alongside_stamped_ones() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::new(9);
    let old = ObjectRecord::tombstone("media", "old", clock.now());
    let mut live = ObjectRecord::tombstone("media", "live", clock.now());
    live.deleted = false;
    live.size = 3;
    {
        // Where a node keeps its database (`NodeConfig::data`/db).
        let db = Arc::new(Db::open(&dir.path().join("db")).unwrap());
        // As a node before the header stored them: bare JSON.
        for r in [&old, &live] {
            let k = [r.bucket.as_bytes(), b"\0", r.key.as_bytes()].concat();
            db.raw()
                .put_cf(db.cf(CF_RECORDS).unwrap(), k, json(r))
                .unwrap();
        }
        let table = RecordTable::new(db.clone());
        assert_eq!(table.get("media", "old").unwrap(), Some(old.clone()));
        assert_eq!(
            table.get_json("media", "live").unwrap().as_deref(),
            Some(&json(&live)[..])
        );
        let listed = table.list("media", "", None, 10, true, false).unwrap();
        assert_eq!(listed.records, vec![live.clone(), old.clone()]);
        // An older offer against a bare record is kept out; a newer one is stored
        // stamped.
        let stale = ObjectRecord {
            ts: kura_cluster::hlc::Timestamp {
                ms: old.ts.ms - 1,
                ..old.ts
            },
            ..old.clone()
        };
        assert_eq!(
            table
                .put(
                    stale.clone(),
                    EncodedRecord::from_json(&json(&stale)).unwrap()
                )
                .unwrap(),
            Offer::Kept(Box::new(old.clone()))
        );
        let newer = ObjectRecord::tombstone("media", "live", clock.now());
        let pretty = serde_json::to_vec_pretty(&newer).unwrap();
        assert_eq!(
            table
                .put(newer.clone(), EncodedRecord::from_json(&pretty).unwrap())
                .unwrap(),
            Offer::Applied
        );
        let stored = raw(&db, "media", "live").unwrap();
        assert_eq!(stored[0], STAMP_FORMAT);
        assert_eq!(&stored[STAMP_LEN..], &pretty[..], "the JSON as it arrived");
        assert_eq!(EncodedRecord::stored_ts(&stored).unwrap(), newer.ts);
        assert_eq!(
            table.get_json("media", "live").unwrap().as_deref(),
            Some(&pretty[..])
        );
        // A packed record (what gateways write) is stored as it arrived, and read as
        // JSON by the single-record read.
        let mut packed = ObjectRecord::tombstone("media", "packed", clock.now());
        packed.meta.insert("k".into(), "v".into());
        let encoded = EncodedRecord::pack(&packed).unwrap();
        assert_eq!(
            table.put(packed.clone(), encoded.clone()).unwrap(),
            Offer::Applied
        );
        let stored = raw(&db, "media", "packed").unwrap();
        assert_eq!(stored[0], RecordFormat::Packed as u8);
        assert_eq!(&stored[..], &encoded.stored()[..]);
        let as_json = table.get_json("media", "packed").unwrap().unwrap();
        assert_eq!(
            serde_json::from_slice::<ObjectRecord>(&as_json).unwrap(),
            packed
        );
        assert_eq!(table.get("media", "packed").unwrap(), Some(packed.clone()));
        let stale = ObjectRecord {
            meta: Default::default(),
            ts: kura_cluster::hlc::Timestamp {
                ms: packed.ts.ms - 1,
                ..packed.ts
            },
            ..packed.clone()
        };
        assert_eq!(
            table
                .put(stale.clone(), EncodedRecord::pack(&stale).unwrap())
                .unwrap(),
            Offer::Kept(Box::new(packed.clone()))
        );
        assert!(table.remove_if(&packed).unwrap());
        // Removal compares the stored stamp (bare or not).
        assert!(
            !table.remove_if(&live).unwrap(),
            "an older version is not removed"
        );
        assert!(table.remove_if(&old).unwrap());
        assert_eq!(table.get("media", "old").unwrap(), None);
        let k = [b"media".as_slice(), b"\0", b"bare"].concat();
        let bare = ObjectRecord::tombstone("media", "bare", clock.now());
        db.raw()
            .put_cf(db.cf(CF_RECORDS).unwrap(), k, json(&bare))
            .unwrap();
    }

    // A node over the same directory answers a read batch with stamped records,
    // bare ones stamped on the way.
    let running = kura_storage_node::start(config(dir.path().to_path_buf()))
        .await
        .unwrap();
    let c = NodeClient::new(&running.url(), SECRET).unwrap();
    let names = [
        RecordName::new("media", "bare"),
        RecordName::new("media", "live"),
        RecordName::new("media", "old"),
    ];
    let got = c.get_records(&names).await.unwrap();
    let bare = got[0].as_ref().unwrap();
    assert_eq!(bare.decode().unwrap().key, "bare");
    assert_eq!(bare.ts, bare.decode().unwrap().ts);
    let live = got[1].as_ref().unwrap();
    assert!(
        live.body().starts_with(b"{\n"),
        "pretty JSON, as it arrived"
    );
    assert_eq!(live.ts, live.decode().unwrap().ts);
    assert!(got[2].is_none());
    let singly = c.get_records_singly(&names).await.unwrap();
    let jsons = |v: &[Option<EncodedRecord>]| -> Vec<Option<Bytes>> {
        v.iter()
            .map(|r| r.as_ref().map(|r| r.to_json().unwrap()))
            .collect()
    };
    assert_eq!(jsons(&singly), jsons(&got));
}
