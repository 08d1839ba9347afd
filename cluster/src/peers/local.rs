//! Peers whose chunk files this process can read directly: a storage node on the same
//! machine (a gateway co-located with nodes, as in `kura dev` or one gateway per storage
//! host). Reading the file skips the node's HTTP server, the loopback hop and the
//! client's copy; the bytes are verified against their chunk id all the same (see
//! [`crate::layout`]), so a read that fails here falls back to the network.
//!
//! Found out per peer handle: the node says where its store is (`GET /v1/store`) and
//! the store's mark file, read here, must say the same (see
//! [`crate::layout::StoreInfo::visible_here`]).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::{Peer, Peers};

/// Whether a peer's chunk files can be read here.
#[derive(Debug, Default)]
pub struct LocalStore {
    state: RwLock<State>,
}

#[derive(Clone, Debug, Default)]
enum State {
    /// Not found out yet (or to find out again: the node was away).
    #[default]
    Unknown,
    /// Being found out.
    Checking,
    /// On another machine, or not readable by this process.
    Remote,
    /// Its chunk directory, readable here.
    Local(Arc<PathBuf>),
}

impl LocalStore {
    /// The peer's chunk directory when its files can be read here.
    pub fn chunk_dir(&self) -> Option<Arc<PathBuf>> {
        match &*self.state.read().unwrap_or_else(|e| e.into_inner()) {
            State::Local(dir) => Some(dir.clone()),
            _ => None,
        }
    }

    /// Whether it is still to be found out.
    pub fn needs_check(&self) -> bool {
        matches!(
            *self.state.read().unwrap_or_else(|e| e.into_inner()),
            State::Unknown
        )
    }

    /// Forgets what was found out (the node went away: it may come back elsewhere).
    pub fn forget(&self) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if !matches!(*state, State::Checking) {
            *state = State::Unknown;
        }
    }

    /// Claims the check if nobody has made it yet.
    fn begin(&self) -> bool {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let due = matches!(*state, State::Unknown);
        if due {
            *state = State::Checking;
        }
        due
    }

    fn settle(&self, state: State) {
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = state;
    }
}

impl Peers {
    /// Finds out, once per peer handle until [`LocalStore::forget`], whether `peer`'s
    /// chunk files are on this machine and readable here. A node that does not answer
    /// is asked again next time.
    pub async fn find_local(&self, peer: &Arc<Peer>) {
        if !peer.local.begin() {
            return;
        }
        let state = match self
            .call(peer, "store_info", peer.client.store_info())
            .await
        {
            Ok(info) if info.visible_here().await => {
                tracing::info!(node = %peer.entry.id, dir = %info.data_dir.display(), "reading this node's chunk files directly");
                State::Local(Arc::new(info.chunk_dir()))
            }
            Ok(_) => State::Remote,
            Err(e) => {
                tracing::debug!(node = %peer.entry.id, error = %e, "cannot tell where the node's store is");
                State::Unknown
            }
        };
        peer.local.settle(state);
        let local = self
            .current()
            .all()
            .filter(|p| p.local.chunk_dir().is_some())
            .count();
        self.path.metrics.local_stores.set(local as i64);
    }
}
