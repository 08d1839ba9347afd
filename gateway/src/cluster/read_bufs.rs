//! Buffers for the range reads of local files (`local::read_now`), reused: a read of a
//! 64 KiB range fills 80–128 KiB of blocks, and a fresh zeroed buffer per range, freed
//! when its response was sent, cost its `memset` and glibc's consolidation of freed
//! large chunks (together ~2.5 % of the gateway's CPU per uncached range, BENCHMARKS.md
//! "Reused read buffers").
//!
//! A buffer goes back to its pool when the last `Bytes` cut from it is dropped
//! (`Bytes::from_owner`), so a piece kept longer (by the chunk cache, or by a slow
//! client's connection) only keeps its own buffer out of the pool; the pool then makes
//! a new one. A buffer is never handed out while a piece of it is alive.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kura_cluster::verify::VERIFY_BLOCK_LEN;

/// Length of every pooled buffer: the two blocks a range within a block boundary's
/// reach needs (a 64 KiB range at any offset reads at most two 64 KiB blocks). Longer
/// reads get a buffer of their own.
pub const READ_BUF_LEN: usize = 2 * VERIFY_BLOCK_LEN as usize;

/// Buffers kept for reuse at most: 32 × 128 KiB = 4 MiB idle at worst. Buffers are
/// in use only while a response is written (microseconds on a local socket), so a
/// few dozen serve hundreds of connections.
pub const READ_BUFS_KEPT: usize = 32;

/// The pool of read buffers. Cloning shares it.
#[derive(Clone, Default)]
pub struct ReadBufs(Arc<Mutex<Vec<Vec<u8>>>>);

impl ReadBufs {
    /// A buffer of `len` bytes to read into (its contents are what an earlier read
    /// left; the caller overwrites all of them), from the pool when `len` fits
    /// [`READ_BUF_LEN`].
    pub fn take(&self, len: usize) -> ReadBuf {
        let pooled = (len <= READ_BUF_LEN).then(|| {
            let kept = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
            kept.unwrap_or_else(|| vec![0; READ_BUF_LEN])
        });
        match pooled {
            Some(buf) => ReadBuf {
                buf,
                len,
                home: Some(self.clone()),
            },
            None => ReadBuf {
                buf: vec![0; len],
                len,
                home: None,
            },
        }
    }

    /// Buffers waiting in the pool.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn give_back(&self, buf: Vec<u8>) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < READ_BUFS_KEPT {
            kept.push(buf);
        }
    }
}

/// A buffer taken from [`ReadBufs`]: `len` bytes long, returned to its pool when the
/// last piece of it is dropped.
pub struct ReadBuf {
    buf: Vec<u8>,
    len: usize,
    home: Option<ReadBufs>,
}

impl ReadBuf {
    /// The bytes to read into.
    pub fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }

    /// The buffer as bytes to cut pieces from; it goes back to its pool when the last
    /// piece is dropped.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for ReadBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            home.give_back(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_returns_when_its_last_piece_is_dropped() {
        let bufs = ReadBufs::default();
        let mut buf = bufs.take(100);
        buf.as_mut().fill(7);
        let whole = buf.freeze();
        let piece = whole.slice(10..20);
        drop(whole);
        assert_eq!(bufs.idle(), 0, "a piece still holds it");
        assert_eq!(&piece[..], &[7; 10]);
        drop(piece);
        assert_eq!(bufs.idle(), 1);
        // Reused, and cut to the length asked for.
        let again = bufs.take(READ_BUF_LEN);
        assert_eq!(bufs.idle(), 0);
        assert_eq!(again.as_ref().len(), READ_BUF_LEN);
        assert_eq!(
            again.as_ref()[..3],
            [7, 7, 7],
            "the same memory, not zeroed"
        );
    }

    #[test]
    fn long_reads_get_their_own_buffer_and_the_pool_keeps_a_bounded_few() {
        let bufs = ReadBufs::default();
        let long = bufs.take(READ_BUF_LEN + 1);
        assert_eq!(long.as_ref().len(), READ_BUF_LEN + 1);
        drop(long);
        assert_eq!(bufs.idle(), 0, "not pooled");
        let many: Vec<_> = (0..READ_BUFS_KEPT + 5).map(|_| bufs.take(10)).collect();
        drop(many);
        assert_eq!(bufs.idle(), READ_BUFS_KEPT);
    }
}
