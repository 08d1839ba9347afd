//! SSIM of one plane, FFmpeg's `ssim` filter's way (see the parent module for the
//! definition), with the plane's squared error on the side.
//!
//! **Exactness.** The figures must not move by a bit from one version of this code to
//! the next: the sums of ranges encoded by different workers (maybe different builds)
//! are merged, and the tests hold them to the ffmpeg CLI's filters. Everything up to a
//! window's four sums is integer arithmetic, exact in any order; each window's score is
//! then one fixed `f64` expression ([`ssim_window`]), evaluated lane by lane when
//! vectorised (an IEEE operation rounds the same in a vector lane as alone, and Rust
//! never fuses a multiply and an add by itself); and the scores are added to the frame's
//! total one by one, in row-major order, as the per-block loop this replaced did.
//! `the_fast_path_is_the_textbook_one_bit_for_bit` (tests) holds all of it against a
//! direct implementation, on the AVX2 and the portable path.
//!
//! **Speed.** Like the filter's `ssim_4x4x2_core`, the sums are built per 4×4 block,
//! and each 8×8 window (on a 4-pixel grid) adds four blocks. The work is split in loops
//! that LLVM vectorises, each over structure-of-arrays buffers without bounds checks in
//! the loop: column sums of the 4 lines of a block row (16-bit products), block sums of
//! 4 columns, window scores (the `f64` part, `divpd`), then the in-order total. On x86-64
//! the same code is also compiled for AVX2 and chosen at run time (twice the vector
//! width of the SSE2 baseline). A 720p luma plane (with its squared error) takes about
//! 0.3 ms in release with AVX2, 0.55 ms on SSE2 alone, against 0.85 ms for the
//! 4-samples-at-a-time loop it replaces; the dev profile (opt-level 2 for this crate,
//! overflow checks) is close to release, the hot loops' arithmetic being wrapping
//! (values that cannot overflow, so no checks).

use super::psnr::row_sse;
use super::{check_shapes, Plane, PEAK};

/// Sums of each column of one block row (4 lines) of the two planes: Σa, Σb (≤ 1 020,
/// `u16`), Σa²+Σb², Σab (≤ 520 200, `i32` like [`Blocks`]), for the columns of whole
/// blocks.
struct Columns {
    s1: Vec<u16>,
    s2: Vec<u16>,
    ss: Vec<i32>,
    s12: Vec<i32>,
}

/// The same sums per 4×4 block of one block row. `i32` (a window's sums stay under
/// 8 323 200) because SSE2 converts `i32` lanes to `f64` in one instruction, not `u32`.
struct Blocks {
    s1: Vec<i32>,
    s2: Vec<i32>,
    ss: Vec<i32>,
    s12: Vec<i32>,
}

impl Columns {
    fn new(n: usize) -> Self {
        Columns {
            s1: vec![0; n],
            s2: vec![0; n],
            ss: vec![0; n],
            s12: vec![0; n],
        }
    }

    /// Sets the sums from the 4 lines `a[i]`, `b[i]` (each at least as long as `self`).
    #[inline(always)]
    fn set(&mut self, a: [&[u8]; 4], b: [&[u8]; 4]) {
        let n = self.s1.len();
        let [a0, a1, a2, a3] = a.map(|r| &r[..n]);
        let [b0, b1, b2, b3] = b.map(|r| &r[..n]);
        let (s1, s2) = (&mut self.s1[..n], &mut self.s2[..n]);
        let (ss, s12) = (&mut self.ss[..n], &mut self.s12[..n]);
        let w = u16::from;
        // 255² fits a u16: the products are 16-bit multiplies, widened to add.
        let sq = |p: u16, q: u16| i32::from(p.wrapping_mul(q));
        for x in 0..n {
            let (p0, p1, p2, p3) = (w(a0[x]), w(a1[x]), w(a2[x]), w(a3[x]));
            let (q0, q1, q2, q3) = (w(b0[x]), w(b1[x]), w(b2[x]), w(b3[x]));
            s1[x] = p0.wrapping_add(p1).wrapping_add(p2).wrapping_add(p3);
            s2[x] = q0.wrapping_add(q1).wrapping_add(q2).wrapping_add(q3);
            ss[x] = (sq(p0, p0).wrapping_add(sq(p1, p1)))
                .wrapping_add(sq(p2, p2).wrapping_add(sq(p3, p3)))
                .wrapping_add(sq(q0, q0).wrapping_add(sq(q1, q1)))
                .wrapping_add(sq(q2, q2).wrapping_add(sq(q3, q3)));
            s12[x] = (sq(p0, q0).wrapping_add(sq(p1, q1)))
                .wrapping_add(sq(p2, q2).wrapping_add(sq(p3, q3)));
        }
    }
}

/// `out[k]` = the sum of `cols[4k..4k + 4]`, for every `k` of `out`.
#[inline(always)]
fn four_by_four<T: Copy + Into<i32>>(cols: &[T], out: &mut [i32]) {
    for (o, c) in out.iter_mut().zip(cols.chunks_exact(4)) {
        let v = |i: usize| -> i32 { c[i].into() };
        *o = v(0)
            .wrapping_add(v(1))
            .wrapping_add(v(2).wrapping_add(v(3)));
    }
}

impl Blocks {
    fn new(n: usize) -> Self {
        Blocks {
            s1: vec![0; n],
            s2: vec![0; n],
            ss: vec![0; n],
            s12: vec![0; n],
        }
    }

    /// Sets every block's sums from the column sums of its block row.
    #[inline(always)]
    fn set(&mut self, c: &Columns) {
        four_by_four(&c.s1, &mut self.s1);
        four_by_four(&c.s2, &mut self.s2);
        four_by_four(&c.ss, &mut self.ss);
        four_by_four(&c.s12, &mut self.s12);
    }

    /// Σ(a-b)² over the blocks: Σa² + Σb² - 2Σab.
    #[inline(always)]
    fn sse(&self) -> u64 {
        let sum = |v: &[i32]| v.iter().map(|&x| x as u64).fold(0u64, u64::wrapping_add);
        sum(&self.ss) - 2 * sum(&self.s12)
    }
}

/// SSIM of one window from its sums over `n` sample pairs, with the constants scaled to
/// sums as x264 and FFmpeg do (`C1·n`, `C2·n·(n-1)`; for 8×8 windows, n = 64).
#[inline(always)]
fn ssim_window(s1: f64, s2: f64, ss: f64, s12: f64, n: f64) -> f64 {
    let c1 = 0.01 * 0.01 * PEAK * PEAK * n;
    let c2 = 0.03 * 0.03 * PEAK * PEAK * n * (n - 1.0);
    let vars = ss * n - s1 * s1 - s2 * s2;
    let covar = s12 * n - s1 * s2;
    (2.0 * s1 * s2 + c1) * (2.0 * covar + c2) / ((s1 * s1 + s2 * s2 + c1) * (vars + c2))
}

/// `out[k]` = the score of the 8×8 window made of blocks `k`, `k + 1` of the block rows
/// `top` and `bottom` (which have `out.len() + 1` blocks).
#[inline(always)]
fn window_scores(top: &Blocks, bottom: &Blocks, out: &mut [f64]) {
    let m = out.len();
    let (t1, t2, tss, t12) = (&top.s1[..=m], &top.s2[..=m], &top.ss[..=m], &top.s12[..=m]);
    let (b1, b2, bss, b12) = (
        &bottom.s1[..=m],
        &bottom.s2[..=m],
        &bottom.ss[..=m],
        &bottom.s12[..=m],
    );
    let win = |t: &[i32], b: &[i32], k: usize| -> f64 {
        f64::from(
            t[k].wrapping_add(t[k + 1])
                .wrapping_add(b[k].wrapping_add(b[k + 1])),
        )
    };
    for (k, o) in out.iter_mut().enumerate() {
        *o = ssim_window(
            win(t1, b1, k),
            win(t2, b2, k),
            win(tss, bss, k),
            win(t12, b12, k),
            64.0,
        );
    }
}

/// SSIM and the sum of squared differences of two planes of the same shape, in one
/// pass. Planes too small for one 8×8 window are taken as one window.
///
/// # Panics
/// When the planes differ in size or their data is shorter than their shape.
pub(crate) fn ssim_and_sse(a: Plane<'_>, b: Plane<'_>) -> (f64, u64) {
    check_shapes(&a, &b);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { avx2(a, b) };
    }
    portable(a, b)
}

/// [`portable`] compiled for AVX2 (twice the vector width of x86-64's baseline SSE2):
/// the same operations, so the same results.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2(a: Plane<'_>, b: Plane<'_>) -> (f64, u64) {
    portable(a, b)
}

/// [`ssim_and_sse`] on checked planes, for any CPU.
#[inline(always)]
fn portable(a: Plane<'_>, b: Plane<'_>) -> (f64, u64) {
    let (w, h) = (a.width, a.height);
    let (bw, bh) = (w / 4, h / 4);
    if bw < 2 || bh < 2 {
        return small_ssim_and_sse(a, b);
    }
    let cols = bw * 4;
    let mut columns = Columns::new(cols);
    // Block sums of the previous and the current block row: two vertically adjacent
    // pairs of blocks make an 8×8 window.
    let (mut prev, mut cur) = (Blocks::new(bw), Blocks::new(bw));
    let mut scores = vec![0.0f64; bw - 1];
    let (mut total, mut sse) = (0.0f64, 0u64);
    for by in 0..bh {
        let y = by * 4;
        let ra = [a.row(y), a.row(y + 1), a.row(y + 2), a.row(y + 3)];
        let rb = [b.row(y), b.row(y + 1), b.row(y + 2), b.row(y + 3)];
        columns.set(ra, rb);
        cur.set(&columns);
        sse += cur.sse();
        // The columns right of the last whole block count for the error only.
        for (ra, rb) in ra.iter().zip(&rb) {
            sse += row_sse(&ra[cols..], &rb[cols..]);
        }
        if by > 0 {
            window_scores(&prev, &cur, &mut scores);
            // One by one, in order: the same rounding as ever (see the module docs).
            for s in &scores {
                total += s;
            }
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    // The rows below the last whole block row count for the error only.
    for y in bh * 4..h {
        sse += row_sse(a.row(y), b.row(y));
    }
    (total / ((bw - 1) * (bh - 1)) as f64, sse)
}

/// Planes under 8×8: one window over everything.
fn small_ssim_and_sse(a: Plane<'_>, b: Plane<'_>) -> (f64, u64) {
    let (mut s1, mut s2, mut ss, mut s12, mut sse) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for y in 0..a.height {
        for (&p, &q) in a.row(y).iter().zip(b.row(y)) {
            let (p, q) = (u64::from(p), u64::from(q));
            s1 += p;
            s2 += q;
            ss += p * p + q * q;
            s12 += p * q;
            sse += p.abs_diff(q).pow(2);
        }
    }
    let n = (a.width * a.height) as f64;
    if n < 2.0 {
        return (if sse == 0 { 1.0 } else { 0.0 }, sse);
    }
    let f = |v: u64| v as f64;
    (ssim_window(f(s1), f(s2), f(ss), f(s12), n), sse)
}

#[cfg(test)]
mod tests {
    use super::super::{sse, ssim};
    use super::*;

    /// A deterministic textured plane (gradients and a pseudo-random pattern).
    fn texture(w: usize, h: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..w * h)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let (c, r) = (i % w, i / w);
                ((c * 3 + r * 2) % 200) as u8 + (x % 40) as u8
            })
            .collect()
    }

    /// `src` plus deterministic noise of amplitude up to `amp`.
    fn noisy(src: &[u8], amp: i32, seed: u32) -> Vec<u8> {
        let mut x = seed.max(1);
        src.iter()
            .map(|&p| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let d = (x % (2 * amp as u32 + 1)) as i32 - amp;
                (i32::from(p) + d).clamp(0, 255) as u8
            })
            .collect()
    }

    fn brute_sse(a: &[u8], b: &[u8]) -> u64 {
        a.iter()
            .zip(b)
            .map(|(&p, &q)| u64::from(p.abs_diff(q)).pow(2))
            .sum()
    }

    #[test]
    fn ssim_of_identical_planes_is_one() {
        for (w, h) in [(64, 48), (37, 23), (8, 8), (5, 3), (1, 1)] {
            let a = texture(w, h, 7);
            let (s, e) = ssim_and_sse(Plane::packed(&a, w, h), Plane::packed(&a, w, h));
            assert!((s - 1.0).abs() < 1e-12, "{w}x{h}: {s}");
            assert_eq!(e, 0);
        }
        // Flat planes too (no variance at all).
        let flat = vec![128u8; 32 * 32];
        assert!(
            (ssim(Plane::packed(&flat, 32, 32), Plane::packed(&flat, 32, 32)) - 1.0).abs() < 1e-12
        );
    }

    #[test]
    fn ssim_drops_with_noise_and_sse_is_exact() {
        let (w, h) = (70, 45); // not multiples of 4: edges count for the error only
        let a = texture(w, h, 3);
        let mut last = 1.0;
        for amp in [2, 8, 30] {
            let b = noisy(&a, amp, 99);
            let (s, e) = ssim_and_sse(Plane::packed(&a, w, h), Plane::packed(&b, w, h));
            assert!(s < last && s > 0.0, "amp {amp}: ssim {s} after {last}");
            last = s;
            assert_eq!(e, brute_sse(&a, &b), "amp {amp}");
            assert_eq!(sse(Plane::packed(&a, w, h), Plane::packed(&b, w, h)), e);
            // Symmetric.
            let back = ssim(Plane::packed(&b, w, h), Plane::packed(&a, w, h));
            assert!((back - s).abs() < 1e-12);
        }
        assert!(last < 0.8, "heavy noise still scores {last}");
    }

    #[test]
    fn ssim_honours_strides() {
        let (w, h, stride) = (33, 20, 48);
        let a = texture(w, h, 5);
        let b = noisy(&a, 5, 1);
        let pad = |p: &[u8]| {
            let mut out = vec![0xEEu8; stride * h];
            for y in 0..h {
                out[y * stride..y * stride + w].copy_from_slice(&p[y * w..(y + 1) * w]);
            }
            out
        };
        let (pa, pb) = (pad(&a), pad(&b));
        fn strided(d: &[u8], w: usize, h: usize, stride: usize) -> Plane<'_> {
            Plane {
                data: &d[..(h - 1) * stride + w],
                stride,
                width: w,
                height: h,
            }
        }
        assert_eq!(
            ssim_and_sse(strided(&pa, w, h, stride), strided(&pb, w, h, stride)),
            ssim_and_sse(Plane::packed(&a, w, h), Plane::packed(&b, w, h))
        );
    }

    #[test]
    fn one_window_matches_the_textbook_formula() {
        // An 8×8 plane is exactly one window: compare with SSIM written out with means,
        // variances (n-1) and covariance, and x264's constant scaling (C1/n).
        let (a, b) = (texture(8, 8, 11), noisy(&texture(8, 8, 11), 10, 4));
        let n = 64.0;
        let mean = |v: &[u8]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let (ma, mb) = (mean(&a), mean(&b));
        let cov = |p: &[u8], q: &[u8], mp: f64, mq: f64| {
            p.iter()
                .zip(q)
                .map(|(&x, &y)| (f64::from(x) - mp) * (f64::from(y) - mq))
                .sum::<f64>()
                / (n - 1.0)
        };
        let (va, vb, cab) = (
            cov(&a, &a, ma, ma),
            cov(&b, &b, mb, mb),
            cov(&a, &b, ma, mb),
        );
        let (c1, c2) = ((0.01f64 * 255.0).powi(2) / n, (0.03f64 * 255.0).powi(2));
        let expect =
            (2.0 * ma * mb + c1) * (2.0 * cab + c2) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
        let got = ssim(Plane::packed(&a, 8, 8), Plane::packed(&b, 8, 8));
        assert!((got - expect).abs() < 1e-9, "{got} vs {expect}");
    }

    /// SSIM written out directly: every 8×8 window on the 4-pixel grid summed sample by
    /// sample, scored and added in row-major order; squared error sample by sample.
    fn textbook(a: &[u8], b: &[u8], w: usize, h: usize) -> (f64, u64) {
        let (bw, bh) = (w / 4, h / 4);
        let mut total = 0.0f64;
        for wy in 0..bh - 1 {
            for wx in 0..bw - 1 {
                let (mut s1, mut s2, mut ss, mut s12) = (0u64, 0u64, 0u64, 0u64);
                for y in wy * 4..wy * 4 + 8 {
                    for x in wx * 4..wx * 4 + 8 {
                        let (p, q) = (u64::from(a[y * w + x]), u64::from(b[y * w + x]));
                        s1 += p;
                        s2 += q;
                        ss += p * p + q * q;
                        s12 += p * q;
                    }
                }
                let f = |v: u64| v as f64;
                total += ssim_window(f(s1), f(s2), f(ss), f(s12), 64.0);
            }
        }
        (total / ((bw - 1) * (bh - 1)) as f64, brute_sse(a, b))
    }

    #[test]
    fn the_fast_path_is_the_textbook_one_bit_for_bit() {
        // Sizes around the vector widths, odd edges, a 720p-wide plane; extremes too.
        for (w, h) in [
            (8, 8),
            (9, 11),
            (33, 17),
            (64, 48),
            (70, 45),
            (131, 37),
            (1280, 12),
        ] {
            let a = texture(w, h, 21);
            for amp in [0, 1, 6, 40, 255] {
                let b = noisy(&a, amp, 5 + amp as u32);
                let (pa, pb) = (Plane::packed(&a, w, h), Plane::packed(&b, w, h));
                let expect = textbook(&a, &b, w, h);
                // Dispatched (AVX2 where the CPU has it) and portable.
                for got in [ssim_and_sse(pa, pb), portable(pa, pb)] {
                    assert_eq!(got.0.to_bits(), expect.0.to_bits(), "{w}x{h} amp {amp}");
                    assert_eq!(got.1, expect.1, "{w}x{h} amp {amp}");
                }
            }
        }
        let (w, h) = (72, 40);
        let (white, black) = (vec![255u8; w * h], vec![0u8; w * h]);
        let got = ssim_and_sse(Plane::packed(&white, w, h), Plane::packed(&black, w, h));
        let expect = textbook(&white, &black, w, h);
        assert_eq!((got.0.to_bits(), got.1), (expect.0.to_bits(), expect.1));
    }
}
