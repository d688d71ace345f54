//! Host kernels of serving and evaluation, over rows of logits as long as a domain's
//! catalogue (tens of thousands of items): the scaled dot products of a few queries with every
//! row of an output table, split over threads (one read of the table, which is what bounds the
//! time), the softmax accumulation `out += w * softmax(logits)`, a row's `log_sum_exp` and
//! `out += w * exp(x - shift)`. With `f32::exp` (a libm call per element) the exponentials
//! cost more than the matrix product that made the logits.
//!
//! `exp` here is `2^n * p(r)` with `n` the nearest integer to `x log2(e)`, `r = x - n ln 2` and
//! `p` a degree-7 polynomial of `e^r` (relative error below 5e-7, tested against `f32::exp`),
//! written without branches or calls so that the compiler vectorises the loops; on x86-64 CPUs
//! with AVX2 and FMA (checked at run time) the loops are compiled for them.

/// `1.5 * 2^23`: adding it rounds an `f32` of magnitude below `2^22` to the nearest integer,
/// which then sits in the low bits of the sum's representation.
const ROUND: f32 = 12_582_912.0;

/// `exp(x)` for `x <= 0`; values below -87 are taken as -87 (`e^-87` is about `1.6e-38`).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    // x = n ln 2 + r with n an integer and |r| <= ln(2) / 2; ln 2 split in two (Cody and
    // Waite) so that `n * LN2_HI` is exact and r keeps its precision.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.max(-87.0);
    let rounded = x * std::f32::consts::LOG2_E + ROUND;
    let n = rounded.to_bits() as i32 - ROUND.to_bits() as i32;
    let nf = rounded - ROUND;
    let r = (x - nf * LN2_HI) - nf * LN2_LO;
    // e^r by its Taylor series to degree 7 (|r| <= 0.35: truncation below 1e-8).
    let mut p = 1.0 / 5040.0f32;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    f32::from_bits(((n + 127) as u32) << 23) * p
}

/// A reduction kept in 16 independent lanes (so that it vectorises without reordering one
/// sequential sum), then folded.
#[inline(always)]
fn lanes(x: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = op(*a, v);
        }
    }
    rest.iter().chain(acc.iter()).fold(init, |a, &v| op(a, v))
}

/// Defines `$name` as `$imp` compiled twice: for AVX2 + FMA, used when the CPU has them
/// (checked at run time), and for the build's baseline target otherwise.
macro_rules! with_avx2 {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $imp:ident;) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $imp($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports the features `avx2` is compiled for (checked
                    // above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $imp($($arg),*)
        }
    };
}

#[inline(always)]
fn add_softmax_impl(logits: &[f32], weight: f32, buf: &mut [f32], out: &mut [f32]) {
    let max = lanes(logits, f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return;
    }
    for (b, &x) in buf.iter_mut().zip(logits) {
        *b = exp_nonpositive(x - max);
    }
    let z = lanes(buf, 0.0, |a, b| a + b);
    let c = weight / z;
    for (o, &b) in out.iter_mut().zip(buf.iter()) {
        *o += c * b;
    }
}

with_avx2! {
    fn add_softmax_any(logits: &[f32], weight: f32, buf: &mut [f32], out: &mut [f32]) = add_softmax_impl;
}

/// `out[i] += weight * softmax(logits)[i]`, with `buf` as scratch (all three of one length).
/// Rows whose logits are all `-inf` (or NaN) add nothing.
///
/// # Panics
/// If the lengths differ.
pub(crate) fn add_softmax(logits: &[f32], weight: f32, buf: &mut [f32], out: &mut [f32]) {
    assert!(
        logits.len() == buf.len() && buf.len() == out.len(),
        "add_softmax: lengths {} / {} / {} differ",
        logits.len(),
        buf.len(),
        out.len()
    );
    add_softmax_any(logits, weight, buf, out)
}

#[inline(always)]
fn log_sum_exp_impl(x: &[f32]) -> f32 {
    let max = lanes(x, f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    let mut acc = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest: f32 = chunks
        .remainder()
        .iter()
        .map(|&v| exp_nonpositive(v - max))
        .sum();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += exp_nonpositive(v - max);
        }
    }
    max + (rest + acc.iter().sum::<f32>()).ln()
}

with_avx2! {
    /// `log(sum_i exp(x_i))`, stable (shifted by the maximum), in two passes over `x`; the
    /// maximum itself (`-inf` or NaN) when no element is finite above `-inf`.
    pub(crate) fn log_sum_exp(x: &[f32]) -> f32 = log_sum_exp_impl;
}

#[inline(always)]
fn add_exp_impl(values: &[f32], shift: f32, weight: f32, out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(values) {
        *o += weight * exp_nonpositive(v - shift);
    }
}

with_avx2! {
    /// `out[i] += weight * exp(values[i] - shift)` for `values[i] <= shift` (a log-softmax
    /// shifted by its row's [`log_sum_exp`]); zips to the shorter of `values` and `out`.
    pub(crate) fn add_exp(values: &[f32], shift: f32, weight: f32, out: &mut [f32]) = add_exp_impl;
}

/// Rows of the table per parallel task: large enough that a task outweighs its scheduling,
/// small enough that both cores get work on a 10k-row domain.
const DOT_CHUNK: usize = 2048;

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent partial sums: a vector register's worth, so the loop vectorises
    // without reordering one sequential sum.
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn dots_chunk_impl(rows: &[f32], width: usize, queries: &[f32], scale: f32, out: &mut [f32]) {
    let n = rows.len() / width;
    for (i, row) in rows.chunks_exact(width).enumerate() {
        for (q, query) in queries.chunks_exact(width).enumerate() {
            out[q * n + i] = scale * dot(row, query);
        }
    }
}

with_avx2! {
    fn dots_chunk(rows: &[f32], width: usize, queries: &[f32], scale: f32, out: &mut [f32]) = dots_chunk_impl;
}

/// `scale * table · queries^T`, transposed: `[queries, rows]` row-major, from a row-major
/// `[rows, width]` table and `[queries, width]` queries. Chunks of rows run on the rayon pool.
///
/// # Panics
/// If `width` is 0 or does not divide both lengths.
pub(crate) fn scaled_dots(table: &[f32], width: usize, queries: &[f32], scale: f32) -> Vec<f32> {
    use rayon::prelude::*;
    assert!(
        width > 0 && table.len().is_multiple_of(width) && queries.len().is_multiple_of(width),
        "scaled_dots: width {width} does not divide the table ({}) and queries ({})",
        table.len(),
        queries.len()
    );
    let (n, nq) = (table.len() / width, queries.len() / width);
    let parts: Vec<Vec<f32>> = table
        .par_chunks(DOT_CHUNK * width)
        .map(|rows| {
            let mut out = vec![0.0f32; nq * (rows.len() / width)];
            dots_chunk(rows, width, queries, scale, &mut out);
            out
        })
        .collect();
    let mut out = vec![0.0f32; nq * n];
    let mut start = 0;
    for part in parts {
        let len = part.len() / nq.max(1);
        for q in 0..nq {
            out[q * n + start..q * n + start + len].copy_from_slice(&part[q * len..(q + 1) * len]);
        }
        start += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_over_the_range_that_matters() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let want = (x as f64).exp();
            let got = exp_nonpositive(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.000_731;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-200.0) <= 1.7e-38);
        assert!(exp_nonpositive(f32::NEG_INFINITY) <= 1.7e-38);
    }

    #[test]
    fn add_softmax_equals_the_plain_formula() {
        let logits: Vec<f32> = (0..1001)
            .map(|i| ((i * 37 % 101) as f32) * 0.17 - 5.0)
            .collect();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
        let mut out = vec![0.5f32; logits.len()];
        let mut buf = vec![0.0f32; logits.len()];
        add_softmax(&logits, 0.3, &mut buf, &mut out);
        for (o, &x) in out.iter().zip(&logits) {
            let want = 0.5 + 0.3 * ((x - max) as f64).exp() / z;
            assert!((*o as f64 - want).abs() < 1e-6 * want, "{o} vs {want}");
        }
    }

    #[test]
    fn log_sum_exp_and_add_exp_equal_the_plain_formulas() {
        // 1001 values: 62 chunks of 16 and a tail of 9.
        let x: Vec<f32> = (0..1001)
            .map(|i| ((i * 53 % 97) as f32) * 0.21 - 9.0)
            .collect();
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let want = max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
        let got = log_sum_exp(&x) as f64;
        assert!(
            (got - want).abs() < 1e-5 * want.abs().max(1.0),
            "{got} vs {want}"
        );
        // Stable where exp overflows.
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f32.ln())).abs() < 1e-3);
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 3]), f32::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[]), f32::NEG_INFINITY);

        let mut out = vec![0.25f32; x.len()];
        add_exp(&x, want as f32, 2.0, &mut out);
        let total: f64 = out.iter().map(|&o| o as f64 - 0.25).sum();
        assert!(
            (total - 2.0).abs() < 1e-5,
            "weights of a softmax sum to the weight: {total}"
        );
        for (o, &v) in out.iter().zip(&x) {
            let want = 0.25 + 2.0 * (v as f64 - want).exp();
            assert!((*o as f64 - want).abs() < 1e-6 * want, "{o} vs {want}");
        }
    }

    #[test]
    fn scaled_dots_equal_the_plain_products_across_chunks_and_tails() {
        // 5000 rows (three chunks, the last partial) of width 13 (a tail after 8 lanes).
        let (n, w, nq) = (5000, 13, 3);
        let table: Vec<f32> = (0..n * w)
            .map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0)
            .collect();
        let queries: Vec<f32> = (0..nq * w)
            .map(|i| ((i * 31 % 17) as f32) / 8.0 - 1.0)
            .collect();
        let got = scaled_dots(&table, w, &queries, 2.5);
        assert_eq!(got.len(), nq * n);
        for q in 0..nq {
            for i in 0..n {
                let want: f64 = (0..w)
                    .map(|k| table[i * w + k] as f64 * queries[q * w + k] as f64)
                    .sum::<f64>()
                    * 2.5;
                let g = got[q * n + i] as f64;
                assert!((g - want).abs() < 1e-4, "query {q} row {i}: {g} vs {want}");
            }
        }
    }

    #[test]
    fn rows_without_a_finite_logit_add_nothing() {
        let logits = vec![f32::NEG_INFINITY; 4];
        let mut out = vec![1.0f32; 4];
        add_softmax(&logits, 1.0, &mut [0.0; 4], &mut out);
        assert_eq!(out, vec![1.0; 4]);
    }
}
