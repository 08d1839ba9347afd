//! The auth matrix of the storage node: every route of its table
//! (`kura_storage_node::http::routes`, which its router is built from) × no credential,
//! a wrong one, another role's → 401, and nothing changed.

use kura_cluster::routes::{refusals, Access, Presented, Route};
use kura_cluster::ChunkId;
use kura_storage_node::{start, NodeConfig};
use reqwest::StatusCode;

const SECRET: &str = "auth-matrix-secret-0123456789abcdef";

#[tokio::test]
async fn every_node_route_refuses_every_wrong_credential_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(NodeConfig {
        data: dir.path().join("n"),
        listen: "127.0.0.1:0".parse().unwrap(),
        node_id: "n0".into(),
        zone: "z0".into(),
        cluster_secret: SECRET.into(),
        scrub_bytes_per_sec: 0,
        scrub_interval_secs: 3600,
        rebalance_bytes_per_sec: 0,
        repair_interval_secs: 3600,
        gc_interval_secs: 0,
        gc_grace_secs: 3600,
        server: Default::default(),
    })
    .await
    .unwrap();
    let base = running.url();
    let client = kura_cluster::client::NodeClient::new(&base, SECRET).unwrap();
    let body = bytes::Bytes::from_static(b"a chunk the matrix must leave alone");
    let id = ChunkId::of(&body);
    client.put_chunk(&id, body.clone()).await.unwrap();
    let state = || async {
        let status = client.status().await.unwrap();
        let records = client
            .list_records("media", "", None, 1000, true, true)
            .await
            .unwrap();
        (status.chunks, status.quarantined, records.records.len())
    };
    let before = state().await;
    let map_before = client.cluster_map().await.unwrap();

    let routes = kura_storage_node::http::routes();
    assert!(routes.len() >= 15, "{} routes", routes.len());
    let fill = |r: &Route| {
        r.path
            .replace("{id}", &id.to_string())
            .replace("{bucket}", "media")
            .replace("{*key}", "k")
    };
    let cases = |r: &Route| {
        let wrong = |what, bearer: &str| Presented {
            what,
            bearer: Some(bearer.to_string()),
            want: StatusCode::UNAUTHORIZED,
        };
        match r.access {
            Access::Open => Vec::new(),
            Access::ClusterSecret
            | Access::ApiKey
            | Access::Admin
            | Access::Signed
            | Access::Uploader => vec![
                Presented {
                    what: "nothing",
                    bearer: None,
                    want: StatusCode::UNAUTHORIZED,
                },
                wrong("a wrong secret", "not-the-cluster-secret-0123456789"),
                wrong("the secret's prefix", &SECRET[..16]),
                wrong("an API key", "user-api-key-0123456789abcdef"),
            ],
        }
    };
    let failures = refusals(&base, &routes, fill, cases).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(state().await, before, "a refused call changed the node");
    assert_eq!(client.cluster_map().await.unwrap(), map_before);
    assert_eq!(client.get_chunk(&id, None).await.unwrap(), body);
    for r in routes.iter().filter(|r| r.access == Access::Open) {
        let path = fill(r).replace("/v1/identity", "/v1/identity?nonce=abc");
        let got = reqwest::get(format!("{base}{path}"))
            .await
            .unwrap()
            .status();
        assert!(got.is_success(), "{path}: {got}");
    }
    running.shutdown().await.unwrap();
}
