use proptest::prelude::*;

use super::*;

fn keys(ids: &[&str]) -> SigningKeys {
    let keys = ids
        .iter()
        .map(|id| SigningKey::new(id, &format!("{id}-0123456789abcdef0123456789abcdef")).unwrap())
        .collect();
    SigningKeys::new(keys).unwrap()
}

#[test]
fn an_object_token_opens_that_object_only() {
    let ks = keys(&["k1"]);
    let t = token(ks.active(), "media", "photo.jpg", Scope::Object, 1000).unwrap();
    assert!(t.starts_with("s2.k1.o.1000."), "{t}");
    assert_eq!(verify(&ks, &t, "media", "photo.jpg", 1000), Ok(()));
    for (b, k) in [
        ("media", "photo.jpg.bak"),
        ("media", "photo.jp"),
        ("media", "photo.jpg/x"),
        ("other", "photo.jpg"),
    ] {
        assert_eq!(
            verify(&ks, &t, b, k, 10),
            Err(SignError::BadSignature),
            "{b}/{k}"
        );
    }
    assert_eq!(
        verify(&ks, &t, "media", "photo.jpg", 1001),
        Err(SignError::Expired)
    );
    // A token for an object in a folder does not open its folder.
    let t = token(ks.active(), "media", "videos/cat.mp4", Scope::Object, 1000).unwrap();
    assert_eq!(verify(&ks, &t, "media", "videos/cat.mp4", 5), Ok(()));
    assert_eq!(
        verify(&ks, &t, "media", "videos/dog.mp4", 5),
        Err(SignError::BadSignature)
    );
}

#[test]
fn a_tree_token_opens_its_folder_and_nothing_beside_it() {
    let ks = keys(&["k1"]);
    let key = "v.mp4.hls/master.m3u8";
    let t = token(ks.active(), "media", key, Scope::Tree("v.mp4.hls/"), 1000).unwrap();
    assert!(t.starts_with("s2.k1.t10.1000."), "{t}");
    for k in [key, "v.mp4.hls/v720p/a3/seg00001.ts", "v.mp4.hls/x"] {
        assert_eq!(verify(&ks, &t, "media", k, 999), Ok(()), "{k}");
    }
    // Another folder of the same length, a sibling whose name extends the folder's,
    // a key shorter than the scope, another bucket.
    assert_eq!(
        verify(&ks, &t, "media", "w.mp4.hls/x", 9),
        Err(SignError::BadSignature)
    );
    assert_eq!(
        verify(&ks, &t, "media", "v.mp4.hlsx", 9),
        Err(SignError::BadScope)
    );
    assert_eq!(
        verify(&ks, &t, "media", "v.mp4", 9),
        Err(SignError::BadScope)
    );
    assert_eq!(
        verify(&ks, &t, "other", key, 9),
        Err(SignError::BadSignature)
    );
    // A tree token's text does not pass as an object token, nor the reverse.
    let as_object = t.replacen(".t10.", ".o.", 1);
    assert_eq!(
        verify(&ks, &as_object, "media", "v.mp4.hls/", 9),
        Err(SignError::BadSignature)
    );
    let o = token(ks.active(), "media", "v.mp4.hls/", Scope::Object, 1000).unwrap();
    let as_tree = o.replacen(".o.", ".t10.", 1);
    assert_eq!(
        verify(&ks, &as_tree, "media", key, 9),
        Err(SignError::BadSignature)
    );
}

#[test]
fn only_folders_of_the_key_are_tree_scopes() {
    let k = keys(&["k1"]);
    let s = k.active();
    for (key, tree) in [
        ("photo.jpg", ""),
        ("photo.jpg", "photo"),
        ("a/bc", "a/b"),
        ("a/b/c", "x/"),
        ("a/b/c", "a/b/c/"),
    ] {
        assert_eq!(
            token(s, "m", key, Scope::Tree(tree), 9),
            Err(SignError::BadScope),
            "{key} under {tree:?}"
        );
    }
    assert!(token(s, "m", "a/b/c", Scope::Tree("a/"), 9).is_ok());
    assert!(token(s, "m", "a/b/c", Scope::Tree("a/b/"), 9).is_ok());
}

#[test]
fn the_signed_fields_cannot_be_shifted_between_bucket_and_key() {
    let ks = keys(&["k1"]);
    let t = token(ks.active(), "ab", "c", Scope::Object, 9).unwrap();
    assert_eq!(verify(&ks, &t, "a", "bc", 1), Err(SignError::BadSignature));
    assert_eq!(verify(&ks, &t, "abc", "", 1), Err(SignError::BadSignature));
}

#[test]
fn retired_keys_stop_verifying_and_the_first_key_signs() {
    let old = keys(&["2026-11"]);
    let t_old = token(old.active(), "m", "k", Scope::Object, 100).unwrap();
    // Rotation: the new key signs, the old still verifies.
    let both = keys(&["2026-12", "2026-11"]);
    assert_eq!(both.active().id(), "2026-12");
    assert_eq!(verify(&both, &t_old, "m", "k", 1), Ok(()));
    let t_new = token(both.active(), "m", "k", Scope::Object, 100).unwrap();
    assert!(t_new.starts_with("s2.2026-12."));
    // Retired: the old key's URLs are refused at once.
    let new_only = keys(&["2026-12"]);
    assert_eq!(
        verify(&new_only, &t_old, "m", "k", 1),
        Err(SignError::UnknownKey)
    );
    assert_eq!(verify(&new_only, &t_new, "m", "k", 1), Ok(()));
    // A key with the same id but another secret is another key.
    let impostor = SigningKeys::new(vec![SigningKey::new(
        "2026-12",
        "a completely different secret of 40 chars",
    )
    .unwrap()])
    .unwrap();
    assert_eq!(
        verify(&impostor, &t_new, "m", "k", 1),
        Err(SignError::BadSignature)
    );
}

#[test]
fn malformed_tokens_are_refused_before_any_key_is_used() {
    let ks = keys(&["k1"]);
    let t = token(ks.active(), "m", "k", Scope::Object, 100).unwrap();
    let mac = t.rsplit('.').next().unwrap();
    for bad in [
        "garbage".to_string(),
        String::new(),
        format!("s1.k1.o.100.{mac}"),
        format!("s2.k1.o.0100.{mac}"),
        format!("s2.k1.o.+100.{mac}"),
        format!("s2.k1.x.100.{mac}"),
        format!("s2.k1.t.100.{mac}"),
        format!("s2.k1.t01.100.{mac}"),
        format!("s2.k1.o.100.{mac}.x"),
        format!("s2.k1.o.100.{mac}!"),
        format!("s2.k1.o.100.{}", "A".repeat(300)),
    ] {
        assert_eq!(
            verify(&ks, &bad, "m", "k", 1),
            Err(SignError::Malformed),
            "{bad}"
        );
    }
    let forged = t.replacen(".100.", ".999.", 1);
    assert_eq!(
        verify(&ks, &forged, "m", "k", 1),
        Err(SignError::BadSignature)
    );
}

#[test]
fn keys_are_checked_and_never_printed() {
    assert!(matches!(
        SigningKey::new("", &"x".repeat(32)),
        Err(KeyError::BadId(_))
    ));
    assert!(matches!(
        SigningKey::new("a.b", &"x".repeat(32)),
        Err(KeyError::BadId(_))
    ));
    assert!(matches!(
        SigningKey::new(&"a".repeat(33), &"x".repeat(32)),
        Err(KeyError::BadId(_))
    ));
    assert!(matches!(
        SigningKey::new("k", &"x".repeat(31)),
        Err(KeyError::ShortSecret(_))
    ));
    let k = SigningKey::new("k", "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t").unwrap();
    assert_eq!(format!("{k:?}"), "SigningKey(k, <redacted>)");
    assert_eq!(SigningKeys::new(vec![]).err(), Some(KeyError::Empty));
    assert_eq!(
        SigningKeys::new(vec![k.clone(), k]).err(),
        Some(KeyError::DuplicateId("k".into()))
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A token verifies for the object it names, and for no other name.
    #[test]
    fn an_object_token_verifies_for_its_name_only(
        bucket in "[a-z0-9]{3,8}",
        key in "[a-z/.]{1,12}",
        other in "[a-z/.]{1,12}",
    ) {
        let ks = keys(&["p"]);
        let t = token(ks.active(), &bucket, &key, Scope::Object, 50).unwrap();
        prop_assert_eq!(verify(&ks, &t, &bucket, &key, 50), Ok(()));
        if other != key {
            prop_assert!(verify(&ks, &t, &bucket, &other, 50).is_err());
        }
    }
}
