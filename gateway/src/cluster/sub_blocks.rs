//! Range reads from local files that hash only the 16 KiB sub-blocks they touch
//! (`kura_cluster::verify::SUB_BLOCK_LEN`). The first read of a block reads and hashes
//! it whole, as always, and keeps the CVs of its four sub-blocks, proven against the
//! block's CV; a later range that ends inside that block reads and hashes only the
//! sub-blocks it needs. A random 64 KiB range spans two blocks: 128 KiB read and hashed
//! the first time, 80 KiB after (BENCHMARKS.md, "Sub-block verification").

use std::sync::Arc;

use kura_cluster::verify::{self, BlockCv, SubCvs, SUB_BLOCK_LEN, VERIFY_BLOCK_LEN};
use kura_cluster::ChunkId;
use quick_cache::sync::Cache;

/// Memory for the sub-block CVs of blocks read in part: 32 MiB holds those of ~130,000
/// blocks (8 GiB of data read by ranges); a miss costs reading and hashing one whole
/// block, which is what every range cost before.
pub const SUB_CV_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// What one entry weighs: four CVs, the key, and the cache's own bookkeeping.
const SUB_ENTRY_BYTES: u64 = 256;

/// Proven sub-block CVs by (chunk, block index). Cloning shares it. A `quick_cache`
/// map: every local range looks up one or two entries, and `moka`'s bookkeeping per
/// lookup cost 4 % of the gateway's CPU per range (BENCHMARKS.md, session 18).
#[derive(Clone)]
pub struct SubCache(Arc<Cache<(ChunkId, u32), SubCvs>>);

impl Default for SubCache {
    fn default() -> Self {
        Self(Arc::new(Cache::new(
            (SUB_CV_CACHE_BYTES / SUB_ENTRY_BYTES) as usize,
        )))
    }
}

/// What a range read reads: bytes `[start, end)` of the chunk, and the sub-block CVs
/// that check its first and last blocks where it reads only part of them.
pub struct SpanPlan {
    pub start: u64,
    pub end: u64,
    first: Option<SubCvs>,
    last: Option<SubCvs>,
}

impl SubCache {
    /// The proven sub-block CVs of block `index` of chunk `id` (`size` bytes), if known
    /// (the short last block of a chunk has none).
    fn known(&self, id: &ChunkId, index: usize, size: u64) -> Option<SubCvs> {
        let whole = (index as u64 + 1) * VERIFY_BLOCK_LEN <= size;
        let index = u32::try_from(index).ok()?;
        whole.then(|| self.0.get(&(*id, index))).flatten()
    }

    /// What to read for bytes `[from, to)` of chunk `id` (block CVs `cvs`; none for a
    /// one-block chunk, which is hashed whole): the blocks covering them, narrowed to
    /// sub-blocks at either end where those are known.
    pub fn plan(
        &self,
        id: &ChunkId,
        cvs: &[BlockCv],
        size: u64,
        (from, to): (u64, u64),
    ) -> SpanPlan {
        let (start, end, first) = verify::covering_blocks(from, to, size);
        let mut plan = SpanPlan {
            start,
            end,
            first: None,
            last: None,
        };
        if cvs.is_empty() || end <= start {
            return plan;
        }
        let last = ((end - 1) / VERIFY_BLOCK_LEN) as usize;
        plan.first = self.known(id, first, size);
        plan.last = if last == first {
            plan.first
        } else {
            self.known(id, last, size)
        };
        if plan.first.is_some() {
            plan.start = from - from % SUB_BLOCK_LEN;
        }
        if plan.last.is_some() {
            plan.end = to.div_ceil(SUB_BLOCK_LEN).saturating_mul(SUB_BLOCK_LEN);
        }
        plan
    }

    /// Whether `buf`, bytes `[plan.start, plan.end)` of chunk `id`, is what the chunk
    /// holds there; learns the sub-block CVs of the whole blocks it checks.
    pub fn verify(
        &self,
        plan: &SpanPlan,
        id: &ChunkId,
        cvs: &[BlockCv],
        size: u64,
        buf: &[u8],
    ) -> bool {
        if cvs.is_empty() {
            return ChunkId::of(buf) == *id;
        }
        let mut at = plan.start;
        while at < plan.end {
            let index = (at / VERIFY_BLOCK_LEN) as usize;
            let block_start = index as u64 * VERIFY_BLOCK_LEN;
            let block_end = (block_start + VERIFY_BLOCK_LEN).min(size);
            let upto = block_end.min(plan.end);
            let Some(bytes) = buf.get((at - plan.start) as usize..(upto - plan.start) as usize)
            else {
                return false;
            };
            let Some(cv) = cvs.get(index) else {
                return false;
            };
            let good = if at == block_start && upto == block_end {
                self.check_whole(id, index, bytes, cv)
            } else {
                // Only the first and the last block are ever read in part.
                let subs = if at == plan.start {
                    plan.first
                } else {
                    plan.last
                };
                let first_sub = ((at - block_start) / SUB_BLOCK_LEN) as usize;
                subs.is_some_and(|s| verify::verify_sub_blocks(index, &s, first_sub, bytes))
            };
            if !good {
                return false;
            }
            at = upto;
        }
        true
    }

    /// Checks whole block `index` against its CV, keeping its sub-block CVs.
    fn check_whole(&self, id: &ChunkId, index: usize, bytes: &[u8], cv: &BlockCv) -> bool {
        let Ok(key) = u32::try_from(index).map(|i| (*id, i)) else {
            return false;
        };
        if bytes.len() as u64 != VERIFY_BLOCK_LEN {
            // The chunk's short last block.
            return verify::block_cv(index, bytes) == *cv;
        }
        match verify::sub_cvs_checked(index, bytes, cv) {
            Some(subs) => {
                if !self.0.contains_key(&key) {
                    self.0.insert(key, subs);
                }
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: u64 = VERIFY_BLOCK_LEN;
    const S: u64 = SUB_BLOCK_LEN;

    fn chunk() -> (Vec<u8>, ChunkId, Vec<BlockCv>) {
        let mut d = vec![0; (4 * B + 5000) as usize];
        blake3::Hasher::new().finalize_xof().fill(&mut d);
        let id = ChunkId::of(&d);
        let cvs = verify::block_cvs_checked(&id, &d).unwrap();
        (d, id, cvs)
    }

    /// Reads `[from, to)` as a local range read does: plan, read, verify.
    fn read(
        c: &SubCache,
        d: &[u8],
        id: &ChunkId,
        cvs: &[BlockCv],
        span: (u64, u64),
    ) -> (u64, bool) {
        let size = d.len() as u64;
        let plan = c.plan(id, cvs, size, span);
        let buf = &d[plan.start as usize..plan.end as usize];
        (plan.end - plan.start, c.verify(&plan, id, cvs, size, buf))
    }

    #[test]
    fn a_second_range_reads_only_the_sub_blocks_it_touches() {
        let (d, id, cvs) = chunk();
        let c = SubCache::default();
        let range = (B - 1000, 2 * B - 1000);
        assert_eq!(
            read(&c, &d, &id, &cvs, range),
            (2 * B, true),
            "first: whole blocks"
        );
        // [B-1000, B) is in sub-block 3 of block 0; [B, 2B-1000) in sub-blocks 0..3 of 1.
        assert_eq!(
            read(&c, &d, &id, &cvs, range),
            (5 * S, true),
            "then: sub-blocks"
        );
        // Into the chunk's short last block: read whole.
        let tail = (4 * B - 10, 4 * B + 10);
        assert!(read(&c, &d, &id, &cvs, tail).1);
        let (len, good) = read(&c, &d, &id, &cvs, tail);
        assert!(good && len == S + 5000, "{len}");
    }

    #[test]
    fn bytes_changed_in_a_sub_block_are_caught() {
        let (d, id, cvs) = chunk();
        let c = SubCache::default();
        let range = (2 * B + 100, 2 * B + 200);
        assert!(read(&c, &d, &id, &cvs, range).1);
        let size = d.len() as u64;
        let plan = c.plan(&id, &cvs, size, range);
        assert_eq!(plan.end - plan.start, S, "one sub-block");
        let mut buf = d[plan.start as usize..plan.end as usize].to_vec();
        buf[(S - 1) as usize] ^= 0x80;
        assert!(!c.verify(&plan, &id, &cvs, size, &buf));
        // A whole block with a changed byte is refused and teaches nothing.
        let fresh = SubCache::default();
        let plan = fresh.plan(&id, &cvs, size, range);
        let mut buf = d[plan.start as usize..plan.end as usize].to_vec();
        buf[7] ^= 1;
        assert!(!fresh.verify(&plan, &id, &cvs, size, &buf));
        assert_eq!(fresh.0.len(), 0);
    }

    #[test]
    fn one_block_chunks_are_hashed_whole() {
        let d = vec![7u8; 3000];
        let id = ChunkId::of(&d);
        let c = SubCache::default();
        assert_eq!(read(&c, &d, &id, &[], (10, 20)), (3000, true));
    }
}
