//! Verifying any byte range of a chunk without reading the whole chunk.
//!
//! A chunk id is `blake3(bytes)`, and blake3 is a Merkle tree. We keep, next to each
//! stored chunk, the chaining value ("CV") of every [`VERIFY_BLOCK_LEN`]-aligned block of
//! it. Because [`VERIFY_BLOCK_LEN`] is a power-of-two number of blake3 chunks, those
//! blocks are exactly subtrees of blake3's own tree, so the CVs merge up to the root —
//! the chunk id. A reader of a byte range then:
//!
//! 1. checks that the stored CVs merge to the chunk id (a few µs of hashing), and
//! 2. reads only the blocks that cover the range, hashes each and compares it with its
//!    CV.
//!
//! A 64 KiB range of a 4 MiB chunk thus reads and hashes at most two blocks, yet every
//! byte served is proven to belong to the chunk named by its id.

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

use crate::ChunkId;

/// Size of a verification block. 64 KiB: a range read costs at most one extra block on
/// each side (the common 64 KiB viewer range touches ≤ 2 blocks), while a 4 MiB chunk
/// needs only 64 CVs (2 KiB of metadata). Must be a power of two ≥ 1024 (blake3's chunk).
pub const VERIFY_BLOCK_LEN: u64 = 64 * 1024;

/// The chaining value of one verification block.
pub type BlockCv = ChainingValue;

/// Size of the sub-blocks a reader may verify on their own once it has proven them
/// against their block's CV ([`sub_cvs_checked`]): a random 64 KiB range then hashes the
/// 80 KiB of sub-blocks it touches instead of the 128 KiB of the two blocks it spans.
/// A power of two ≥ 1024 dividing [`VERIFY_BLOCK_LEN`]; only a reader's memory, never
/// stored or sent.
pub const SUB_BLOCK_LEN: u64 = 16 * 1024;

/// Sub-blocks per block.
pub const SUB_BLOCKS: usize = (VERIFY_BLOCK_LEN / SUB_BLOCK_LEN) as usize;

/// The CVs of the sub-blocks of one whole block.
pub type SubCvs = [ChainingValue; SUB_BLOCKS];

/// Number of verification blocks of a chunk of `len` bytes (at least one).
pub fn block_count(len: u64) -> usize {
    len.div_ceil(VERIFY_BLOCK_LEN).max(1) as usize
}

/// The CV of block `index` of a chunk, given that block's bytes. Only meaningful for
/// chunks longer than one block (a one-block chunk is its own root: hash it whole).
pub fn block_cv(index: usize, block: &[u8]) -> BlockCv {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(index as u64 * VERIFY_BLOCK_LEN);
    hasher.update(block);
    hasher.finalize_non_root()
}

/// The CV of the subtree made of `bytes` at chunk offset `offset` (its length a
/// power-of-two number of blake3 chunks, `offset` a multiple of it).
fn subtree_of(offset: u64, bytes: &[u8]) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(bytes);
    hasher.finalize_non_root()
}

/// The sub-block CVs of whole block `index` of a multi-block chunk, if they merge to the
/// block's proven CV `cv` (that is, if `block` is that block). Costs what checking the
/// block against `cv` costs.
pub fn sub_cvs_checked(index: usize, block: &[u8], cv: &BlockCv) -> Option<SubCvs> {
    if block.len() as u64 != VERIFY_BLOCK_LEN {
        return None;
    }
    let base = index as u64 * VERIFY_BLOCK_LEN;
    let sub = SUB_BLOCK_LEN as usize;
    let subs: SubCvs = std::array::from_fn(|j| {
        subtree_of(base + (j * sub) as u64, &block[j * sub..(j + 1) * sub])
    });
    (merge_even(&subs) == *cv).then_some(subs)
}

/// Merges the CVs of equal, adjacent subtrees (a power-of-two count) into their parent.
fn merge_even(cvs: &[ChainingValue]) -> ChainingValue {
    if let [one] = cvs {
        return *one;
    }
    let (l, r) = cvs.split_at(cvs.len() / 2);
    merge_subtrees_non_root(&merge_even(l), &merge_even(r), Mode::Hash)
}

/// Checks `span`, the bytes of whole sub-blocks of block `index` starting at its
/// sub-block `first`, against that block's proven sub-block CVs.
pub fn verify_sub_blocks(index: usize, subs: &SubCvs, first: usize, span: &[u8]) -> bool {
    let base = index as u64 * VERIFY_BLOCK_LEN;
    span.chunks(SUB_BLOCK_LEN as usize)
        .enumerate()
        .all(|(i, bytes)| {
            let j = first + i;
            bytes.len() as u64 == SUB_BLOCK_LEN
                && subs.get(j) == Some(&subtree_of(base + j as u64 * SUB_BLOCK_LEN, bytes))
        })
}

/// The CVs of every block of `data` and whether they merge to `id`.
///
/// For data of one block or less there are no CVs to keep: such chunks are always
/// verified whole. Returns `None` when `data` does not hash to `id`.
pub fn block_cvs_checked(id: &ChunkId, data: &[u8]) -> Option<Vec<BlockCv>> {
    let len = data.len() as u64;
    if len <= VERIFY_BLOCK_LEN {
        return (blake3::hash(data) == id.as_hash()).then(Vec::new);
    }
    let cvs: Vec<BlockCv> = data
        .chunks(VERIFY_BLOCK_LEN as usize)
        .enumerate()
        .map(|(i, block)| block_cv(i, block))
        .collect();
    (root_of(&cvs, len)? == id.as_hash()).then_some(cvs)
}

/// Merges the block CVs of a chunk of `len` bytes into its root hash, following
/// blake3's tree shape. `None` if the number of CVs does not fit `len`.
pub fn root_of(cvs: &[BlockCv], len: u64) -> Option<blake3::Hash> {
    if len <= VERIFY_BLOCK_LEN || cvs.len() != block_count(len) {
        return None;
    }
    let left = left_subtree_len(len);
    let l = subtree_cv(cvs, 0, left);
    let r = subtree_cv(cvs, left, len - left);
    Some(merge_subtrees_root(&l, &r, Mode::Hash))
}

/// CV of the subtree covering `[offset, offset + len)`; offset is block aligned.
fn subtree_cv(cvs: &[BlockCv], offset: u64, len: u64) -> ChainingValue {
    if len <= VERIFY_BLOCK_LEN {
        return cvs[(offset / VERIFY_BLOCK_LEN) as usize];
    }
    // For len > one block, blake3's left subtree is a power of two ≥ one block, so
    // every split point stays block aligned.
    let left = left_subtree_len(len);
    let l = subtree_cv(cvs, offset, left);
    let r = subtree_cv(cvs, offset + left, len - left);
    merge_subtrees_non_root(&l, &r, Mode::Hash)
}

/// The block-aligned span `[start, end)` that must be read to verify bytes
/// `[from, to)` of a chunk of `len` bytes, and the index of its first block.
pub fn covering_blocks(from: u64, to: u64, len: u64) -> (u64, u64, usize) {
    let first = from / VERIFY_BLOCK_LEN;
    let start = first * VERIFY_BLOCK_LEN;
    // Saturating: a span ending within the last block of u64 must not wrap (fuzzing).
    let end = to
        .div_ceil(VERIFY_BLOCK_LEN)
        .saturating_mul(VERIFY_BLOCK_LEN);
    (start, end.min(len), first as usize)
}

/// Checks that `span`, the bytes of whole blocks starting at block `first`, matches the
/// stored CVs of a multi-block chunk.
pub fn verify_blocks(cvs: &[BlockCv], first: usize, span: &[u8]) -> bool {
    span.chunks(VERIFY_BLOCK_LEN as usize)
        .enumerate()
        .all(|(i, block)| cvs.get(first + i) == Some(&block_cv(first + i, block)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Found by fuzzing (fuzz/regressions/range): a span ending in the last block below
    /// 2^64 wrapped the rounded-up end to a small number.
    #[test]
    fn covering_blocks_of_a_span_near_u64_max_does_not_wrap() {
        let len = u64::MAX - 0x1f3;
        let (start, end, _) = covering_blocks(500, len, len);
        assert!(start <= 500 && end == len);
    }

    #[test]
    fn block_cvs_merge_to_blake3_at_edge_lengths() {
        let b = VERIFY_BLOCK_LEN as usize;
        for len in [
            0,
            1,
            1024,
            b - 1,
            b,
            b + 1,
            b + 1024,
            2 * b,
            3 * b + 7,
            64 * b,
        ] {
            let d = data(len, 7);
            let id = ChunkId::of(&d);
            assert!(block_cvs_checked(&id, &d).is_some(), "len {len}");
            let other = ChunkId::of(b"other");
            assert!(block_cvs_checked(&other, &d).is_none(), "len {len}");
        }
    }

    #[test]
    fn sub_blocks_prove_their_block_and_only_their_bytes() {
        let b = VERIFY_BLOCK_LEN as usize;
        let s = SUB_BLOCK_LEN as usize;
        // Bytes that do not repeat from block to block (`data` repeats every 256).
        let mut d = vec![0; 5 * b + 100];
        blake3::Hasher::new().finalize_xof().fill(&mut d);
        let cvs = block_cvs_checked(&ChunkId::of(&d), &d).unwrap();
        for index in 0..5 {
            let block = &d[index * b..(index + 1) * b];
            let subs = sub_cvs_checked(index, block, &cvs[index]).expect("its own block");
            assert!(verify_sub_blocks(index, &subs, 0, block));
            assert!(verify_sub_blocks(index, &subs, 1, &block[s..3 * s]));
            assert!(verify_sub_blocks(index, &subs, 3, &block[3 * s..]));
            // Another block's bytes, or this block's at another position, fail.
            let other = (index + 1) % 5;
            assert!(sub_cvs_checked(other, block, &cvs[other]).is_none());
            assert!(sub_cvs_checked(index, block, &cvs[other]).is_none());
            assert!(!verify_sub_blocks(index, &subs, 2, &block[s..2 * s]));
            // Past the block's last sub-block, or not whole sub-blocks.
            assert!(!verify_sub_blocks(index, &subs, 3, &block[2 * s..]));
            assert!(!verify_sub_blocks(index, &subs, 0, &block[..s + 1]));
            let mut bad = block[s..2 * s].to_vec();
            bad[s / 2] ^= 1;
            assert!(!verify_sub_blocks(index, &subs, 1, &bad));
        }
        // The short last block has no sub-blocks.
        assert!(sub_cvs_checked(5, &d[5 * b..], &cvs[5]).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn any_length_merges_to_its_id(len in 0usize..600_000, seed: u8) {
            let d = data(len, seed);
            prop_assert!(block_cvs_checked(&ChunkId::of(&d), &d).is_some());
        }

        #[test]
        fn ranges_verify_and_flipped_bytes_do_not(
            len in (VERIFY_BLOCK_LEN as usize + 1)..400_000,
            a in 0.0f64..1.0, b in 0.0f64..1.0, flip in 0.0f64..1.0,
        ) {
            let d = data(len, 3);
            let cvs = block_cvs_checked(&ChunkId::of(&d), &d).unwrap();
            let (x, y) = ((a * len as f64) as u64, (b * len as f64) as u64);
            let (from, to) = (x.min(y), x.max(y) + 1);
            let (start, end, first) = covering_blocks(from, to.min(len as u64), len as u64);
            let mut span = d[start as usize..end as usize].to_vec();
            prop_assert!(verify_blocks(&cvs, first, &span));
            let at = (flip * span.len() as f64) as usize % span.len();
            span[at] ^= 0x40;
            prop_assert!(!verify_blocks(&cvs, first, &span));
        }
    }
}
