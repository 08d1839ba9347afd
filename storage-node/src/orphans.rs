//! Orphan chunk files: a crash between a chunk file's rename into place and the synced
//! index write that makes it stored leaves a file no index entry names (the index is the
//! truth, so the chunk was never acknowledged and nothing refers to it). The scrubber
//! removes such files after each pass.
//!
//! Safe against concurrent writes without any grace period: a write renames the file
//! and writes the index entry while holding the chunk id's lock, and the sweep checks and
//! removes a file under the same lock, so it never sees a write half done.

use std::fs;

use kura_cluster::ChunkId;

use crate::chunks::{ChunkStore, Location};
use crate::error::Result;

/// Removes every chunk file that no index entry names as a file chunk; returns how many.
/// Files whose names are not chunk ids are left alone (not ours to judge).
pub fn sweep(store: &ChunkStore) -> Result<u64> {
    let mut removed = 0;
    for shard in fs::read_dir(store.chunk_dir())? {
        let shard = shard?;
        if !shard.file_type()?.is_dir() {
            continue;
        }
        for file in fs::read_dir(shard.path())? {
            let file = file?;
            let Some(id) = file
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<ChunkId>().ok())
            else {
                continue;
            };
            let _guard = store.lock(&id);
            let indexed = store
                .entry(&id)?
                .is_some_and(|e| matches!(e.location, Location::File { .. }));
            if indexed {
                continue;
            }
            match fs::remove_file(file.path()) {
                Ok(()) => {
                    tracing::info!(chunk = %id, "removed an orphan chunk file (a write a crash interrupted)");
                    removed += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(removed)
}
