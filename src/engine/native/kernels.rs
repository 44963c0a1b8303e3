//! The device kernels' CPU harness. `kernels/token_stats.cuh` holds the per-row statistics
//! kernel written once: nvcc compiles it for the GPU (`kernels/token_stats.cu`, one thread
//! block per row), and `build.rs` compiles the same functions into `kernels/cpu_harness.cpp`,
//! which runs each phase for every thread id before the next, as the GPU's barriers order them.
//! The tests here hold the harness to `crate::stats::distribution` and to an f64 reference, so
//! the code the GPU will run is the code CI tests.
//!
//! What the kernel computes today: for each row, the largest logit, the full-vocabulary
//! log-sum-exp and entropy, the untruncated seeded draw (Philox keyed as
//! [`crate::stats::sampling::DrawKey`]) with its log-probability, the SIREN nucleus (size, mass,
//! entropy), and the draw truncated by top-k and top-p with `sampling_logprob`: every
//! statistic of a token. [`super::token_stats`] runs it inside the engine, on the GPU or here.

/// The kernel as PTX for the GPU, compiled from the same source by `build.rs` (nvcc, under the
/// `cuda` feature, for `CUDA_COMPUTE_CAP`).
#[cfg(feature = "cuda")]
pub const TOKEN_STATS_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/token_stats.ptx"));

/// The attention and cache-copy kernels (`kernels/attention.cu`) as PTX.
#[cfg(feature = "cuda")]
pub const ATTENTION_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/attention.ptx"));

/// One row's inputs (`EntRowIn` in the kernel source).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowIn {
    /// Sampling temperature `T > 0`.
    pub temperature: f64,
    /// The request's seed.
    pub seed: u64,
    /// Index of the token within its sample (the Philox counter's first word).
    pub token_index: u32,
    /// Index of the sample within its group.
    pub sample: u32,
    /// Index of the prompt within its request.
    pub prompt: u32,
    /// The SIREN nucleus's rule: 0 strict, 1 inclusive.
    pub nucleus_rule: u32,
    /// The nucleus's mass bound `p`.
    pub nucleus_p: f64,
    /// The most candidates `K` the nucleus considers.
    pub max_candidates: u32,
    /// The draw's top-k truncation (0: none).
    pub top_k: u32,
    /// The draw's top-p truncation, inclusive, after top-k (`>= 1`: none).
    pub top_p: f64,
    /// The most probable tokens to return (0: none; at most [`MAX_TOP`]).
    pub top_n: u32,
    /// Padding to 8 bytes.
    pub top_pad: u32,
}

/// The most alternatives a row returns (`ENT_MAX_TOP`).
pub const MAX_TOP: usize = 20;

// The kernel's structs, as kernels/cpu_harness.cpp asserts their sizes.
const _: () = assert!(std::mem::size_of::<RowIn>() == 64);
const _: () = assert!(std::mem::size_of::<RowOut>() == 64);
const _: () = assert!(std::mem::size_of::<TopOut>() == 416);

impl RowIn {
    /// The inputs of token `token_index` of the sample `key` names, at `temperature`, with the
    /// nucleus of `nucleus` and the draw truncated by `truncation`.
    pub fn new(
        temperature: f64,
        key: crate::stats::sampling::DrawKey,
        token_index: u32,
        nucleus: &crate::stats::distribution::NucleusParams,
        truncation: &crate::stats::distribution::Truncation,
    ) -> Self {
        Self {
            temperature,
            seed: key.seed,
            token_index,
            sample: key.sample,
            prompt: key.prompt,
            nucleus_rule: match nucleus.rule {
                crate::stats::distribution::NucleusRule::Strict => 0,
                crate::stats::distribution::NucleusRule::Inclusive => 1,
            },
            nucleus_p: nucleus.top_p,
            max_candidates: nucleus.max_candidates.min(u32::MAX as usize) as u32,
            top_k: truncation
                .top_k
                .map_or(0, |k| k.clamp(1, u32::MAX as usize) as u32),
            top_p: truncation.top_p,
            top_n: 0,
            top_pad: 0,
        }
    }
}

impl RowIn {
    /// The inputs of token `token_index` drawn by `sampler`.
    pub fn for_token(sampler: &crate::stats::sampling::TokenSampler, token_index: u32) -> Self {
        Self {
            top_n: sampler.alternatives.min(MAX_TOP) as u32,
            ..Self::new(
                sampler.temperature,
                sampler.key,
                token_index,
                &sampler.nucleus,
                &sampler.truncation,
            )
        }
    }
}

/// What leaves the device for one row (`EntRowOut` in the kernel source).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RowOut {
    /// 0: measured; 1: the row holds NaN or +inf; 2: every entry is -inf; 3: the nucleus's
    /// select broke its invariant (a bug: nothing of the row is to be used).
    pub status: i32,
    /// The drawn token (inverse CDF over token ids, untruncated).
    pub token: u32,
    /// `ln π(token)` at the temperature.
    pub logprob: f64,
    /// Full-vocabulary entropy, nats.
    pub entropy: f64,
    /// `ln Σ exp((z − max z) / T)`.
    pub ln_sum: f64,
    /// The largest logit.
    pub max_logit: f32,
    /// `|S|`, the SIREN nucleus's size.
    pub nucleus_size: u32,
    /// The nucleus's probability mass.
    pub nucleus_mass: f64,
    /// The entropy of `π` restricted to the nucleus and renormalised.
    pub nucleus_entropy: f64,
    /// `ln` of the token's probability under the truncated, renormalised distribution it was
    /// drawn from (`logprob` when nothing truncates).
    pub sampling_logprob: f64,
}

/// A row's most probable tokens (`EntTopOut` in the kernel source), for a row whose `top_n` is
/// above 0.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopOut {
    /// How many are listed: `top_n`, fewer if fewer tokens have a finite logit.
    pub count: u32,
    /// How many of them (a prefix of the ranking) the truncated draw could pick.
    pub kept: u32,
    /// Whether the draw was truncated (1) or drawn from the full distribution (0).
    pub truncated: u32,
    /// Padding.
    pub pad: u32,
    /// Their ids, in rank order (logit descending, id ascending).
    pub id: [u32; MAX_TOP],
    /// `ln π(id)` at the temperature.
    pub logprob: [f64; MAX_TOP],
    /// For the first `kept` of a truncated draw: their weight's share of the kept weight (the
    /// kernel takes no log of it, which would cost every row registers; [`Self::alternatives`]
    /// does, with the kernel's own `ln`).
    pub kept_share: [f64; MAX_TOP],
}

impl Default for TopOut {
    fn default() -> Self {
        Self {
            count: 0,
            kept: 0,
            truncated: 0,
            pad: 0,
            id: [0; MAX_TOP],
            logprob: [0.0; MAX_TOP],
            kept_share: [0.0; MAX_TOP],
        }
    }
}

impl TopOut {
    /// The alternatives, as the host sampler gives them: a kept one's `sampling_logprob` is the
    /// `ln` of its share by the kernel's own `ln`, as the kernel takes the drawn token's, so the
    /// drawn token's is the same bits here as in its row's record.
    pub fn alternatives(&self) -> Box<[crate::stats::distribution::Alternative]> {
        let count = (self.count as usize).min(MAX_TOP);
        (0..count)
            .map(|j| {
                let logprob = self.logprob[j];
                let share = self.kept_share[j];
                let sampling_logprob = (j < self.kept as usize).then(|| {
                    if self.truncated == 0 || share == 0.0 {
                        // Untruncated; or kept with a weight that underflowed, below which
                        // every token's weight is 0 too: the kept tokens hold all the mass.
                        logprob
                    } else {
                        kernel_log_small(share)
                    }
                });
                crate::stats::distribution::Alternative {
                    token: self.id[j],
                    logprob,
                    sampling_logprob,
                }
            })
            .collect()
    }
}

extern "C" {
    fn entroll_token_stats_cpu(
        logits: *const f32,
        rows: usize,
        vocab: u32,
        inputs: *const RowIn,
        outputs: *mut RowOut,
        tops: *mut TopOut,
    );
    fn entroll_threads() -> u32;
    fn entroll_scratch_keys(input: *const RowIn, vocab: u32) -> u32;
    fn entroll_exp(x: f64) -> f64;
    fn entroll_log(x: f64) -> f64;
    fn entroll_log_small(x: f64) -> f64;
}

/// Runs the kernel's CPU harness over `inputs.len()` rows of `vocab` logits each, blocks of
/// rows on the CPU's threads at once (rows are independent, like the GPU's thread blocks, so
/// the results do not depend on how they are split).
pub fn token_stats_cpu(logits: &[f32], vocab: usize, inputs: &[RowIn]) -> Vec<RowOut> {
    token_stats_cpu_with_tops(logits, vocab, inputs).0
}

/// [`token_stats_cpu`], and the rows' alternatives: one [`TopOut`] per row when any row asks
/// for them (a row that does not has a count of 0), none otherwise.
pub fn token_stats_cpu_with_tops(
    logits: &[f32],
    vocab: usize,
    inputs: &[RowIn],
) -> (Vec<RowOut>, Vec<TopOut>) {
    assert_eq!(
        logits.len(),
        vocab * inputs.len(),
        "one row of logits per input"
    );
    assert!(
        vocab > 0 && vocab <= u32::MAX as usize,
        "vocabulary of {vocab}"
    );
    use rayon::prelude::*;
    let mut outputs = vec![RowOut::default(); inputs.len()];
    let asked = inputs.iter().any(|input| input.top_n > 0);
    let mut tops = vec![TopOut::default(); if asked { inputs.len() } else { 0 }];
    // Blocks of rows small enough to spread over the threads, large enough to amortise a
    // call's scratch.
    let block = inputs
        .len()
        .div_ceil(4 * rayon::current_num_threads())
        .max(1);
    let run = |outputs: &mut [RowOut], tops: *mut TopOut, inputs: &[RowIn], logits: &[f32]| {
        // SAFETY: the pointers cover `inputs.len()` rows of `vocab` logits, `inputs.len()`
        // inputs and as many outputs, and as many tops or none (null); the blocks split them
        // alike (checked above), and the harness reads and writes nothing else.
        unsafe {
            entroll_token_stats_cpu(
                logits.as_ptr(),
                inputs.len(),
                vocab as u32,
                inputs.as_ptr(),
                outputs.as_mut_ptr(),
                tops,
            );
        }
    };
    let blocks = outputs
        .par_chunks_mut(block)
        .zip(inputs.par_chunks(block))
        .zip(logits.par_chunks(block * vocab));
    if asked {
        blocks
            .zip(tops.par_chunks_mut(block))
            .for_each(|(((outputs, inputs), logits), tops)| {
                run(outputs, tops.as_mut_ptr(), inputs, logits)
            });
    } else {
        blocks.for_each(|((outputs, inputs), logits)| {
            run(outputs, std::ptr::null_mut(), inputs, logits)
        });
    }
    (outputs, tops)
}

/// The threads of one row's block (`ENT_THREADS`): the GPU launch's block size.
pub fn threads_per_row() -> u32 {
    // SAFETY: returns a constant.
    unsafe { entroll_threads() }
}

/// The 64-bit scratch keys the kernel needs for `input` over `vocab` logits (the nucleus's
/// candidates, and the truncated draw's): the GPU launch gives each row the largest of these.
pub fn scratch_keys(input: &RowIn, vocab: usize) -> u32 {
    // SAFETY: reads the one input it is given.
    unsafe { entroll_scratch_keys(input, vocab.min(u32::MAX as usize) as u32) }
}

/// The kernels' own `exp` (for `x <= 0`), the same bits on the GPU and the CPU.
pub fn kernel_exp(x: f64) -> f64 {
    // SAFETY: a pure function of its argument.
    unsafe { entroll_exp(x) }
}

/// The kernels' own `ln` (for normal `x > 0`), the same bits on the GPU and the CPU.
pub fn kernel_log(x: f64) -> f64 {
    // SAFETY: a pure function of its argument.
    unsafe { entroll_log(x) }
}

/// The kernels' own `ln` for `x` in (0, 1], subnormal `x` included.
pub fn kernel_log_small(x: f64) -> f64 {
    // SAFETY: a pure function of its argument.
    unsafe { entroll_log_small(x) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::distribution::{
        Distribution, NucleusParams, NucleusRule, Truncation, Workspace,
    };
    use crate::stats::sampling::DrawKey;

    use super::super::kernel_check::{adversarial_rows, bf16_round};
    use crate::stats::test_rng::TestRng as Rng;

    fn units_apart(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    #[test]
    fn exp_and_log_are_within_two_ulps_of_the_platform_s() {
        let mut rng = Rng(1);
        for i in 0..200_000 {
            let x = match i % 4 {
                0 => -rng.uniform() * 1.0,
                1 => -rng.uniform() * 40.0,
                2 => -rng.uniform() * 700.0,
                _ => -((rng.next_u64() % 745) as f64),
            };
            let (ours, std) = (kernel_exp(x), x.exp());
            assert!(units_apart(ours, std) <= 2, "exp({x}) = {ours} vs {std}");
            let y = 1.0 + rng.uniform() * 200_000.0;
            let (ours, std) = (kernel_log(y), y.ln());
            assert!(units_apart(ours, std) <= 2, "ln({y}) = {ours} vs {std}");
        }
        // Subnormal results and the end of the range.
        for x in [-708.5, -720.0, -740.0, -745.0, -745.1, -746.0, -1e6] {
            let (ours, std) = (kernel_exp(x), x.exp());
            assert!(
                units_apart(ours, std) <= 1,
                "exp({x}) = {ours:e} vs {std:e}"
            );
        }
        assert_eq!(kernel_exp(0.0), 1.0);
        assert_eq!(kernel_exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(kernel_log(1.0), 0.0);
    }

    /// The f64 reference: the definitions of docs/statistics.md computed plainly.
    fn reference(z: &[f32], t: f64) -> (f64, f64) {
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let x: Vec<f64> = z.iter().map(|&v| (v as f64 - max) / t).collect();
        let sum: f64 = x.iter().map(|v| v.exp()).sum();
        let entropy = sum.ln()
            - x.iter()
                .filter(|v| v.is_finite())
                .map(|v| v.exp() * v)
                .sum::<f64>()
                / sum;
        (sum.ln(), entropy.max(0.0))
    }

    /// The nucleus every check uses unless it says otherwise (the statistics' defaults).
    const SIREN: NucleusParams = NucleusParams {
        top_p: 0.8,
        max_candidates: 10_000,
        rule: NucleusRule::Strict,
    };

    /// Checks every row of `rows` (each `vocab` long) against the host's statistics and draw
    /// and the f64 reference; returns the largest difference.
    fn check(rows: &[Vec<f32>], vocab: usize, temperature: f64) -> f64 {
        check_with(rows, vocab, temperature, &SIREN, &Truncation::NONE)
    }

    fn check_with(
        rows: &[Vec<f32>],
        vocab: usize,
        temperature: f64,
        nucleus: &NucleusParams,
        truncation: &Truncation,
    ) -> f64 {
        let key = DrawKey {
            seed: 0x5EED_0000_0000_0007,
            prompt: 3,
            sample: 1,
        };
        // Every third row asks for no alternatives, the others for a few or the most.
        let top_n = |i: usize| [0, 5, MAX_TOP][i % 3];
        let inputs: Vec<RowIn> = (0..rows.len())
            .map(|i| RowIn {
                top_n: top_n(i) as u32,
                ..RowIn::new(temperature, key, i as u32, nucleus, truncation)
            })
            .collect();
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let (outputs, tops) = token_stats_cpu_with_tops(&flat, vocab, &inputs);
        assert_eq!(tops.len(), if rows.len() > 1 { rows.len() } else { 0 });
        let mut worst = 0.0f64;
        let mut ws = Workspace::default();
        for (i, (row, out)) in rows.iter().zip(&outputs).enumerate() {
            assert_eq!(out.status, 0, "row {i}");
            let mut host = Distribution::new(row, temperature, &mut ws).unwrap();
            let drawn = host.draw(truncation, key.uniform(i as u32));
            assert_eq!(out.token, drawn.token, "row {i}: the draw");
            if let Some(top) = tops.get(i) {
                // The same tokens, kept or cut alike, and their log-probs within rounding; the
                // drawn token's the same bits as the row's own.
                let kernel = top.alternatives();
                let host = host.alternatives(top_n(i), &drawn);
                assert_eq!(kernel.len(), host.len(), "row {i}: the alternatives");
                for (k, h) in kernel.iter().zip(&host) {
                    assert_eq!(k.token, h.token, "row {i}: an alternative");
                    assert_eq!(
                        k.sampling_logprob.is_some(),
                        h.sampling_logprob.is_some(),
                        "row {i}: token {} kept",
                        k.token
                    );
                    let pairs = [
                        (k.logprob, h.logprob),
                        (
                            k.sampling_logprob.unwrap_or(0.0),
                            h.sampling_logprob.unwrap_or(0.0),
                        ),
                    ];
                    for (got, want) in pairs {
                        worst = worst.max((got - want).abs());
                        assert!((got - want).abs() <= 1e-9, "row {i}: {got} vs {want}");
                    }
                    if k.token == out.token {
                        assert_eq!(k.logprob, out.logprob, "row {i}");
                        assert_eq!(k.sampling_logprob, Some(out.sampling_logprob), "row {i}");
                    }
                }
            }
            let s = host.nucleus(nucleus);
            assert_eq!(
                out.nucleus_size as usize, s.size,
                "row {i}: the nucleus's size"
            );
            let (ln_sum, entropy) = reference(row, temperature);
            for (what, got, want) in [
                ("entropy vs host", out.entropy, host.entropy()),
                ("logprob vs host", out.logprob, drawn.logprob),
                (
                    "sampling logprob vs host",
                    out.sampling_logprob,
                    drawn.sampling_logprob,
                ),
                ("entropy vs reference", out.entropy, entropy),
                ("ln sum vs reference", out.ln_sum, ln_sum),
                ("nucleus mass vs host", out.nucleus_mass, s.mass),
                ("nucleus entropy vs host", out.nucleus_entropy, s.entropy),
            ] {
                let diff = (got - want).abs();
                worst = worst.max(diff);
                assert!(diff <= 1e-9, "row {i}: {what}: {got} vs {want}");
            }
        }
        worst
    }

    extern "C" {
        fn entroll_crossing_cpu(
            weights: *const f64,
            m: u32,
            target: f64,
            strict: i32,
            by_chunks: *mut u32,
            certain: *mut i32,
            taken: *mut u32,
        );
    }

    /// Where `weights` in order cross `target` in the kernel (phases 14b and 15), as ranks
    /// through the crossing (0: not crossed): the chunk sums' answer, whether it is certain,
    /// and the answer the kernel takes.
    fn crossing(weights: &[f64], target: f64, strict: bool) -> (usize, bool, usize) {
        let (mut by_chunks, mut certain, mut taken) = (0u32, 0i32, 0u32);
        // SAFETY: the harness reads `weights.len()` weights and writes the three outputs.
        unsafe {
            entroll_crossing_cpu(
                weights.as_ptr(),
                weights.len() as u32,
                target,
                strict as i32,
                &mut by_chunks,
                &mut certain,
                &mut taken,
            )
        };
        (by_chunks as usize, certain != 0, taken as usize)
    }

    /// The host's walk, written here: one weight added at a time, up to the first sum that
    /// reaches `target` (passes it, when `strict`); the ranks through it, 0 when none does.
    fn walk(weights: &[f64], target: f64, strict: bool) -> usize {
        let mut acc = 0.0;
        for (j, w) in weights.iter().enumerate() {
            acc += w;
            if if strict { acc > target } else { acc >= target } {
                return j + 1;
            }
        }
        0
    }

    #[test]
    fn crossings_found_by_chunks_are_the_host_walk_s() {
        let mut rng = Rng(9);
        let (mut cases, mut certain) = (0, 0);
        // Ranked weights as the kernel holds them (descending, the first 1), at sizes on both
        // sides of the 256 chunks.
        for m in [1, 2, 255, 256, 257, 1_000, 4_096, 16_384] {
            for scale in [0.3, 3.0] {
                let mut w: Vec<f64> = (0..m)
                    .map(|_| kernel_exp(-(rng.normal() * scale).abs()))
                    .collect();
                w.sort_by(|a, b| b.total_cmp(a));
                w[0] = 1.0;
                let total: f64 = w.iter().sum();
                for strict in [false, true] {
                    for p in [0.01, 0.3, 0.9, 0.999, rng.uniform()] {
                        let (_, sure, taken) = crossing(&w, p * total, strict);
                        assert_eq!(taken, walk(&w, p * total, strict), "m {m}, p {p}");
                        cases += 1;
                        certain += sure as usize;
                    }
                    // Targets on the host's own sums: boundaries within rounding, which the
                    // chunk sums cannot place and leave to the walk.
                    let mut acc = 0.0;
                    for (j, x) in w.iter().enumerate() {
                        acc += x;
                        if j % 97 == 0 || j + 1 == m {
                            let (_, _, taken) = crossing(&w, acc, strict);
                            assert_eq!(taken, walk(&w, acc, strict), "m {m}, rank {j}");
                        }
                    }
                }
            }
        }
        // Away from a boundary the chunks' answer stands.
        assert!(certain * 10 >= cases * 9, "{certain} of {cases} certain");
    }

    #[test]
    fn a_crossing_the_chunk_sums_misplace_is_walked_as_the_host_walks_it() {
        // 1, then weights of 0.75 units in the last place of 1: each of the host's adds rounds
        // up by a whole unit, so its sum runs a third ahead of the exact one, which the chunk
        // sums follow. The host reaches 1 + 1,000 units at rank 1,001; the chunks, later.
        let unit = 2f64.powi(-52);
        let mut w = vec![0.75 * unit; 2_001];
        w[0] = 1.0;
        let target = 1.0 + 1_000.0 * unit;
        assert_eq!(walk(&w, target, false), 1_001);
        let (by_chunks, certain, taken) = crossing(&w, target, false);
        assert!(by_chunks > 1_200, "{by_chunks}");
        assert!(!certain);
        assert_eq!(taken, 1_001);
    }

    fn gaussian_rows(rng: &mut Rng, rows: usize, vocab: usize, scale: f64) -> Vec<Vec<f32>> {
        (0..rows).map(|_| rng.row(vocab, scale)).collect()
    }

    #[test]
    fn a_batch_of_256_rows_matches_the_host_and_the_reference() {
        let mut rng = Rng(2);
        let rows = gaussian_rows(&mut rng, 256, 4_096, 3.0);
        let worst = check(&rows, 4_096, 1.0);
        assert!(worst < 1e-12, "{worst:e}");
    }

    #[test]
    fn adversarial_rows_match_the_host_and_the_reference() {
        // Flat, ties at the top with -inf entries, near one-hot, bf16-rounded, wide, a single
        // finite entry (the rows `entroll check-kernels` runs on a GPU), at the Qwen vocabulary.
        let v = 151_936;
        let rows: Vec<Vec<f32>> = adversarial_rows(v, 1, 3)
            .into_iter()
            .filter(|(case, _)| !case.contains("flagged"))
            .map(|(_, row)| row)
            .collect();
        assert_eq!(rows.len(), 7);
        for t in [1.0, 0.7, 1.6] {
            let worst = check(&rows, v, t);
            eprintln!("adversarial rows at T = {t}: within {worst:.1e} nats");
        }
    }

    #[test]
    fn rows_without_a_distribution_are_flagged_not_measured() {
        let v = 1_000;
        let mut nan = vec![0.0f32; v];
        nan[17] = f32::NAN;
        let mut inf = vec![0.0f32; v];
        inf[999] = f32::INFINITY;
        let masked = vec![f32::NEG_INFINITY; v];
        let flat: Vec<f32> = [nan, inf, masked].concat();
        let key = DrawKey {
            seed: 1,
            prompt: 0,
            sample: 0,
        };
        let inputs = vec![RowIn::new(1.0, key, 0, &SIREN, &Truncation::NONE); 3];
        let statuses: Vec<i32> = token_stats_cpu(&flat, v, &inputs)
            .iter()
            .map(|o| o.status)
            .collect();
        assert_eq!(statuses, [1, 1, 2]);
    }

    #[test]
    fn every_draw_of_many_rows_is_the_host_s() {
        // Small vocabularies make each draw land near chunk edges and on tied tokens often.
        let mut rng = Rng(4);
        for vocab in [1, 2, 255, 256, 257, 1_000] {
            let rows = gaussian_rows(&mut rng, 64, vocab, 1.5);
            check(&rows, vocab, 1.0);
        }
    }

    #[test]
    fn the_nucleus_matches_the_host_for_every_rule_bound_and_cap() {
        let mut rng = Rng(5);
        let v = 49_152;
        let mut rows = Vec::new();
        for scale in [0.5, 2.0, 6.0] {
            rows.extend(gaussian_rows(&mut rng, 2, v, scale));
        }
        // bf16-rounded logits: ties at the nucleus's and the candidates' boundaries.
        rows.push(
            (0..v)
                .map(|_| bf16_round((rng.normal() * 3.0) as f32))
                .collect(),
        );
        for rule in [NucleusRule::Strict, NucleusRule::Inclusive] {
            // Not p = 1: there whether the last token reaches p is a rounding decision (the
            // rank-order sum against the total summed in id order), which host and kernel may
            // take apart.
            for top_p in [0.3, 0.8, 0.95, 0.999] {
                for max_candidates in [1, 7, 300, 10_000, v + 5] {
                    let nucleus = NucleusParams {
                        top_p,
                        max_candidates,
                        rule,
                    };
                    check_with(&rows, v, 1.0, &nucleus, &Truncation::NONE);
                }
            }
        }
    }

    #[test]
    fn truncated_draws_are_the_host_s() {
        let mut rng = Rng(6);
        let v = 49_152;
        let mut rows = gaussian_rows(&mut rng, 6, v, 2.0);
        rows.push(
            (0..v)
                .map(|_| bf16_round((rng.normal() * 3.0) as f32))
                .collect(),
        );
        // Gaps of 800 nats and more below the top: kept tokens whose weights underflow to 0;
        // and two tied at the top over gaps of about 744 nats: weights that do not underflow,
        // shares of the kept weight that do.
        rows.push(
            (0..v)
                .map(|i| if i == 3 { 0.0 } else { -800.0 - i as f32 })
                .collect(),
        );
        rows.push(
            (0..v)
                .map(|i| match i {
                    3 | 9 => 0.0,
                    _ => -744.3 - (i % 7) as f32 * 0.1,
                })
                .collect(),
        );
        for top_k in [None, Some(1), Some(2), Some(50), Some(v + 1)] {
            for top_p in [1.0, 0.95, 0.5, 0.01] {
                let truncation = Truncation { top_k, top_p };
                for t in [1.0, 0.6] {
                    check_with(&rows, v, t, &SIREN, &truncation);
                }
            }
        }
    }

    #[test]
    fn ties_beyond_what_a_ranking_sorts_are_taken_in_id_order() {
        // 100 distinct top logits, then 20,000 tokens tied at one logit, at random ids: a
        // top-k of 500 or 3,000 (and the nucleus's 1,000 candidates) ends inside the tie, which
        // is too large to rank whole, so the kernel must take the tied tokens of lowest id, as
        // the host does, for the draw to land on the host's token.
        let mut rng = Rng(8);
        let v = 49_152;
        let rows: Vec<Vec<f32>> = (0..12)
            .map(|_| {
                let mut row: Vec<f32> = (0..v).map(|_| (rng.normal() - 4.0) as f32).collect();
                for _ in 0..20_000 {
                    row[(rng.next_u64() % v as u64) as usize] = 1.0;
                }
                for _ in 0..100 {
                    row[(rng.next_u64() % v as u64) as usize] = (3.0 + rng.uniform()) as f32;
                }
                row
            })
            .collect();
        let nucleus = NucleusParams {
            max_candidates: 1_000,
            ..SIREN
        };
        for top_k in [500, 3_000] {
            let truncation = Truncation {
                top_k: Some(top_k),
                top_p: 1.0,
            };
            check_with(&rows, v, 1.0, &nucleus, &truncation);
        }
    }

    #[test]
    fn draws_without_top_k_by_weighted_selects_are_the_host_s() {
        // Rows whose top-p prefix outgrows the nucleus's candidates, so that the kernel draws by
        // weighted selects rather than from a ranking: flat rows, bf16-rounded rows (ties at
        // both boundaries), and small vocabularies (boundaries at chunk edges).
        let mut rng = Rng(7);
        let v = 49_152;
        let mut rows = gaussian_rows(&mut rng, 24, v, 0.5);
        rows.extend((0..8).map(|_| {
            (0..v)
                .map(|_| bf16_round((rng.normal() * 0.7) as f32))
                .collect::<Vec<f32>>()
        }));
        let nucleus = NucleusParams {
            max_candidates: 1_000,
            ..SIREN
        };
        let mut ws = Workspace::default();
        let kept = Distribution::new(&rows[0], 1.0, &mut ws)
            .unwrap()
            .draw(
                &Truncation {
                    top_k: None,
                    top_p: 0.95,
                },
                0.5,
            )
            .kept
            .unwrap()
            .0;
        assert!(kept > 10 * nucleus.max_candidates, "kept {kept}");
        for (top_k, top_p) in [(None, 0.95), (None, 0.5), (None, 0.999), (Some(v + 1), 1.0)] {
            let truncation = Truncation { top_k, top_p };
            for t in [1.0, 0.6] {
                check_with(&rows, v, t, &nucleus, &truncation);
            }
        }
        for vocab in [1, 2, 255, 256, 257, 1_000] {
            let rows = gaussian_rows(&mut rng, 48, vocab, 0.3);
            let nucleus = NucleusParams {
                max_candidates: 1,
                ..SIREN
            };
            for top_p in [0.9, 1.0] {
                let top_k = (top_p == 1.0).then_some(vocab);
                check_with(&rows, vocab, 1.0, &nucleus, &Truncation { top_k, top_p });
            }
        }
    }
}
