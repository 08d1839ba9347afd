//! Where a storage node keeps its chunk files: shared by the node, which writes them,
//! and by a process on the same machine that reads them directly (a co-located gateway,
//! see [`crate::peers::local`]).
//!
//! Reading another process's files needs no trust in them: every byte read is verified
//! against its chunk id, so a wrong directory, a stale file or one being replaced only
//! ever costs a fallback to the network.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ChunkId;

/// The directory under a node's data directory that holds its chunk files.
pub const CHUNK_DIR: &str = "chunks";

/// The file in a node's data directory that names the running node's store: a fresh
/// random mark written at every start, which the node also tells its peers, so a
/// process that finds the same mark under the path the node reported knows that path is
/// the node's own directory, seen through its own file system.
pub const STORE_MARK: &str = "store-mark";

/// The file of chunk `id` under `chunk_dir` (one of 256 shards by its first byte).
pub fn chunk_file(chunk_dir: &Path, id: &ChunkId) -> PathBuf {
    let hex = id.to_hex();
    chunk_dir.join(&hex[..2]).join(hex)
}

/// Where a node's store is, as the node tells a peer (`GET /v1/store`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInfo {
    /// The node's data directory, absolute.
    pub data_dir: PathBuf,
    /// What its [`STORE_MARK`] file holds.
    pub mark: String,
}

impl StoreInfo {
    /// Writes a fresh mark into `data_dir` (at a node's start) and describes the store.
    pub fn publish(data_dir: &Path) -> std::io::Result<Self> {
        let data_dir = data_dir.canonicalize()?;
        let mark = format!("{:032x}", rand::random::<u128>());
        let tmp = data_dir.join(format!("{STORE_MARK}.tmp"));
        std::fs::write(&tmp, &mark)?;
        std::fs::rename(&tmp, data_dir.join(STORE_MARK))?;
        Ok(Self { data_dir, mark })
    }

    /// The store's chunk directory.
    pub fn chunk_dir(&self) -> PathBuf {
        self.data_dir.join(CHUNK_DIR)
    }

    /// Whether this process sees the store: the mark file under the reported path says
    /// what the node said (another machine's path, or one this process may not read,
    /// does not).
    pub async fn visible_here(&self) -> bool {
        match tokio::fs::read_to_string(self.data_dir.join(STORE_MARK)).await {
            Ok(found) => found == self.mark,
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_published_store_is_visible_and_a_stale_mark_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let info = StoreInfo::publish(dir.path()).unwrap();
        assert!(info.visible_here().await);
        assert_eq!(
            info.chunk_dir(),
            dir.path().canonicalize().unwrap().join(CHUNK_DIR)
        );
        // The node restarted (a new mark): what it said before no longer holds.
        let again = StoreInfo::publish(dir.path()).unwrap();
        assert_ne!(again.mark, info.mark);
        assert!(!info.visible_here().await);
        let elsewhere = StoreInfo {
            data_dir: dir.path().join("not-there"),
            mark: again.mark.clone(),
        };
        assert!(!elsewhere.visible_here().await);
    }
}
