//! Gateway configuration.

use std::net::SocketAddr;
use std::time::Duration;

use kura_cluster::auth::Secret;
use kura_cluster::map::ClusterMap;
use kura_cluster::ring::Replication;
use kura_cluster::server::ServerLimits;
use kura_cluster::signed::{KeyError, SigningKey, SigningKeys};

/// Default chunk size. 4 MiB: large enough that per-chunk overhead (a hash, a request
/// per replica, an index entry) is small beside the transfer, small enough that a
/// 64 KiB viewer range never waits for much more than it asked, and that an upload's
/// memory (a few chunks in flight) stays in the tens of MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 * 1024 * 1024;

/// Default object size limit: 5 TiB, as S3; ~1.3M chunks, a ~130 MiB manifest at most.
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 5 * 1024 * 1024 * 1024 * 1024;

/// Everything a gateway needs to start.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// API keys accepted as `Authorization: Bearer <key>`.
    pub api_keys: Vec<Secret>,
    /// Secret for calls to storage nodes.
    pub cluster_secret: Secret,
    /// The cluster map (nodes and their zones and weights).
    pub map: ClusterMap,
    /// N, W and R.
    pub replication: Replication,
    /// Size of every chunk but an object's last.
    pub chunk_size: u64,
    /// Largest object accepted.
    pub max_object_bytes: u64,
    /// The gateway's own zone, preferred for reads.
    pub zone: Option<String>,
    /// Coordinator URL: `/v1/jobs*` and `/v1/batches*` are forwarded there, and
    /// `PUT ...?transcode=PROFILE` submits a job.
    pub coordinator: Option<String>,
    /// Keys of signed URLs and upload tokens, the first signing, all verifying (see
    /// `kura_cluster::signed`). Empty: one key derived from the cluster secret, so every
    /// gateway of a cluster accepts the others' URLs.
    pub url_signing_keys: Vec<SigningKey>,
    /// Origins allowed to read through CORS (`*` for any); empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Token for the admin API (`/v1/admin/*`); `None` disables it.
    pub admin_token: Option<Secret>,
    /// Reads per second of one object (at this gateway) that make it hot; 0 disables.
    pub hot_reads_per_sec: f64,
    /// Extra copies a hot object's chunks get.
    pub hot_extra_replicas: usize,
    /// Largest total size of a request's headers (431 above).
    pub max_header_bytes: usize,
    /// Bytes of verified chunks kept in memory (0: no chunk cache); see `crate::cache`.
    pub chunk_cache_bytes: u64,
    /// How long a record read may be answered from memory (zero: always a quorum read).
    pub record_cache_ttl: Duration,
    /// Age of a record cache entry after which a hit reads it again in the background
    /// (`None`: [`crate::cache::DEFAULT_RECORD_REFRESH_AFTER`]'s share of the TTL).
    pub record_refresh_after: Option<Duration>,
    /// Whether chunks are read straight from the files of nodes on this machine (found
    /// by asking each node; see `kura_cluster::peers::local`).
    pub local_reads: bool,
    /// How long a chunk file a local read opened stays open for the next reads of the
    /// chunk ([`crate::cluster::OPEN_FILE_KEEP`]; see `cluster::open_files`).
    pub open_file_keep: Duration,
    /// Timeouts and connection limits of its HTTP servers (native and S3).
    pub server: ServerLimits,
    /// Address of the S3 API listener; `None`: no S3 API.
    pub s3_listen: Option<SocketAddr>,
    /// S3 access key pairs.
    pub s3_keys: Vec<crate::s3::S3Key>,
    /// Base domain of virtual-hosted-style S3 buckets (`bucket.DOMAIN`); `None`: only
    /// path-style.
    pub s3_domain: Option<String>,
    /// Incomplete multipart uploads older than this are aborted (see
    /// `crate::multipart::DEFAULT_EXPIRY`).
    pub multipart_expiry: Duration,
    /// Whether `/console` serves the web console (`crate::console`).
    pub console: bool,
}

impl GatewayConfig {
    /// Largest object accepted: `max_object_bytes`, or less when one record could not
    /// list that many chunks (`kura_cluster::record::max_object_bytes`: ~2.8 TiB at
    /// 4 MiB chunks, 5 TiB from ~8 MiB chunks), so an upload too big to be recorded is
    /// refused before any chunk is stored.
    pub fn object_limit(&self) -> u64 {
        self.max_object_bytes
            .min(kura_cluster::record::max_object_bytes(self.chunk_size))
    }

    /// The keys signed URLs and upload tokens are signed and checked with.
    pub fn signing_keys(&self) -> Result<SigningKeys, KeyError> {
        if self.url_signing_keys.is_empty() {
            return SigningKeys::new(vec![SigningKey::derived(self.cluster_secret.expose())]);
        }
        SigningKeys::new(self.url_signing_keys.clone())
    }
}
