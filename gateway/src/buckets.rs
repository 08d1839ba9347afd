//! The bucket registry: one record per bucket in the system bucket `_buckets`
//! (key = the bucket's name, timestamp = its creation), replicated and last-writer-wins
//! like every record. A deleted bucket is a tombstone.
//!
//! How the two APIs meet: S3 clients create buckets before using them and expect
//! `NoSuchBucket` otherwise; the native API never had buckets as things, so a native
//! `PUT /v1/o/{bucket}/...` into a bucket that does not exist creates it (as a directory
//! springs into being on first write). A bucket that holds objects from before the
//! registry existed is adopted (registered) the first time either API asks for it.

use std::sync::Arc;
use std::time::Duration;

use kura_cluster::names::{check_bucket, BUCKETS_BUCKET};
use kura_cluster::record::ObjectRecord;

use crate::error::{GatewayError, Result};
use crate::{list, Gateway};

/// How long a gateway trusts that a bucket it saw exists before asking the cluster
/// again. A native PUT asks only when this has run out, so it costs no extra quorum read
/// per upload; a bucket deleted through another gateway is noticed within this time.
pub const KNOWN_BUCKET_TTL: Duration = Duration::from_secs(10);

/// Most buckets one gateway remembers as existing (a few hundred bytes each).
pub const KNOWN_BUCKETS_MAX: u64 = 100_000;

/// The most buckets `ListBuckets` returns (S3's default account quota is far smaller).
pub const MAX_BUCKETS_LISTED: usize = 10_000;

/// Buckets this gateway saw existing within [`KNOWN_BUCKET_TTL`].
pub type KnownBuckets = moka::sync::Cache<String, ()>;

/// A new, empty memory of known buckets.
pub fn known_buckets() -> KnownBuckets {
    moka::sync::Cache::builder()
        .max_capacity(KNOWN_BUCKETS_MAX)
        .time_to_live(KNOWN_BUCKET_TTL)
        .build()
}

/// One registered bucket.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BucketInfo {
    /// Its name.
    pub name: String,
    /// When it was created, ms since the epoch.
    pub created_ms: u64,
}

/// Whether `name` exists (registered, or holding objects from before the registry:
/// such a bucket is registered now).
pub async fn exists(gw: &Arc<Gateway>, name: &str) -> Result<bool> {
    check_bucket(name)?;
    if gw.known_buckets.contains_key(name) {
        return Ok(true);
    }
    if registered(gw, name).await?.is_some() {
        gw.known_buckets.insert(name.to_string(), ());
        return Ok(true);
    }
    if !is_empty(gw, name).await? {
        register(gw, name).await?;
        return Ok(true);
    }
    Ok(false)
}

/// Makes sure `name` exists (the native API's implicit creation).
pub async fn ensure(gw: &Arc<Gateway>, name: &str) -> Result<()> {
    if gw.known_buckets.contains_key(name) {
        return Ok(());
    }
    if registered(gw, name).await?.is_none() {
        register(gw, name).await?;
    } else {
        gw.known_buckets.insert(name.to_string(), ());
    }
    Ok(())
}

/// Creates `name`; `Ok(false)` if it already existed.
pub async fn create(gw: &Arc<Gateway>, name: &str) -> Result<bool> {
    check_bucket(name)?;
    if exists(gw, name).await? {
        return Ok(false);
    }
    register(gw, name).await?;
    Ok(true)
}

/// Deletes `name`: `NotFound` if it does not exist, `Conflict` if it holds objects.
pub async fn delete(gw: &Arc<Gateway>, name: &str) -> Result<()> {
    if !exists(gw, name).await? {
        return Err(GatewayError::NotFound);
    }
    if !is_empty(gw, name).await? {
        return Err(GatewayError::Conflict(format!(
            "bucket {name} is not empty"
        )));
    }
    let tomb = ObjectRecord::tombstone(BUCKETS_BUCKET, name, gw.cluster.clock.now());
    gw.cluster.put_record(tomb).await?;
    gw.known_buckets.invalidate(name);
    Ok(())
}

/// `GET /v1/buckets` (API key): every bucket, by name.
pub async fn list_handler(
    axum::extract::State(gw): axum::extract::State<Arc<Gateway>>,
) -> Result<axum::Json<serde_json::Value>> {
    let buckets = list_all(&gw).await?;
    Ok(axum::Json(serde_json::json!({ "buckets": buckets })))
}

/// Every registered bucket, by name.
pub async fn list_all(gw: &Arc<Gateway>) -> Result<Vec<BucketInfo>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, next) = list::merged(
            &gw.cluster,
            BUCKETS_BUCKET,
            ("", after.as_deref()),
            crate::http::MAX_LIST_LIMIT,
            list::Detail::Summary,
        )
        .await?;
        out.extend(page.into_iter().map(|r| BucketInfo {
            name: r.key,
            created_ms: r.ts.ms,
        }));
        match next {
            Some(n) if out.len() < MAX_BUCKETS_LISTED => after = Some(n),
            _ => return Ok(out),
        }
    }
}

async fn registered(gw: &Arc<Gateway>, name: &str) -> Result<Option<BucketInfo>> {
    let found = gw.cluster.get_record(BUCKETS_BUCKET, name).await?;
    Ok(found.filter(|r| !r.deleted).map(|r| BucketInfo {
        name: r.key.clone(),
        created_ms: r.ts.ms,
    }))
}

async fn register(gw: &Arc<Gateway>, name: &str) -> Result<()> {
    let mut record = ObjectRecord::tombstone(BUCKETS_BUCKET, name, gw.cluster.clock.now());
    record.deleted = false;
    gw.cluster.put_record(record).await?;
    gw.known_buckets.insert(name.to_string(), ());
    Ok(())
}

async fn is_empty(gw: &Arc<Gateway>, name: &str) -> Result<bool> {
    let (page, _) = list::merged(&gw.cluster, name, ("", None), 1, list::Detail::Summary).await?;
    Ok(page.is_empty())
}
