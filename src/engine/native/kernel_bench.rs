//! `entroll bench-kernels`: the two device kernels alone, seconds each, so that a first GPU run
//! can hold them against the per-step model of docs/benchmarks.md part by part: the statistics
//! kernel on `[rows, V]` logits (peaked like a trained model's and flat, with and without
//! top-k), and attention for `rows` query tokens over contexts of several lengths. On CUDA each
//! case is timed by CUDA events around `iterations` launches after one warm-up; on the CPU (the
//! harness, for CI's smoke run) by the wall clock.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::attention::Attention;
use super::batch::{Batch, DecodeRow};
use super::config::Architecture;
use super::kernel_attention;
use super::kernels::RowIn;
use super::kv::{Access, CacheShape, KvCache};
use super::scheduler::BLOCK_SIZE;
use super::{step_counts, token_stats};
use crate::stats::distribution::{NucleusParams, NucleusRule, Truncation};
use crate::stats::sampling::DrawKey;
use crate::stats::test_rng::TestRng;

/// The sizes a run measures.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Logits rows, and attention's query tokens (a decode batch).
    pub rows: usize,
    /// Logits per row.
    pub vocab: usize,
    /// Attention's context lengths.
    pub contexts: Vec<usize>,
    /// Timed launches per case.
    pub iterations: usize,
}

/// One measured case.
#[derive(Debug, Clone)]
pub struct Timing {
    /// What ran.
    pub case: String,
    /// Mean time per launch, milliseconds.
    pub ms: f64,
    /// The bytes one launch must read at least (the logits; the keys and values).
    pub bytes: f64,
}

impl Timing {
    /// Those bytes over the time: how close the launch comes to the memory's bandwidth.
    pub fn gigabytes_per_second(&self) -> f64 {
        self.bytes / (self.ms * 1e-3) / 1e9
    }
}

/// Rows of logits with σ `scale`: σ 4.5 over 151,936 tokens gives a few nats of entropy and a
/// nucleus of tens to hundreds of tokens, as a trained model's next-token logits do; σ 0.5 is
/// close to flat (the nucleus holds most of the vocabulary).
fn logits(rows: usize, vocab: usize, scale: f64, device: &Device) -> candle_core::Result<Tensor> {
    let mut rng = TestRng(11);
    let data: Vec<f32> = (0..rows).flat_map(|_| rng.row(vocab, scale)).collect();
    Tensor::from_vec(data, (rows, vocab), device)
}

/// Times `f`: on CUDA by events around `iterations` calls after a warm-up, else by the clock.
fn time(
    device: &Device,
    iterations: usize,
    mut f: impl FnMut() -> candle_core::Result<()>,
) -> candle_core::Result<f64> {
    f()?;
    step_counts::synchronize(device)?;
    let iterations = iterations.max(1);
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = device {
        use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
        use candle_core::cuda_backend::WrapErr;
        let stream = cuda.cuda_stream();
        let start = stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .w()?;
        for _ in 0..iterations {
            f()?;
        }
        let end = stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .w()?;
        return Ok(start.elapsed_ms(&end).w()? as f64 / iterations as f64);
    }
    let started = Instant::now();
    for _ in 0..iterations {
        f()?;
    }
    step_counts::synchronize(device)?;
    Ok(started.elapsed().as_secs_f64() * 1e3 / iterations as f64)
}

/// The statistics kernel's cases: peaked and flat rows, each untruncated (the statistics'
/// default nucleus, K = 10,000), with top-k 50 and top-p 0.95, and with top-p 0.95 alone.
pub fn token_stats(device: &Device, sizes: &Sizes) -> candle_core::Result<Vec<Timing>> {
    let nucleus = NucleusParams {
        top_p: 0.8,
        max_candidates: 10_000,
        rule: NucleusRule::Strict,
    };
    let draws = [
        ("untruncated", Truncation::NONE),
        (
            "top-k 50, top-p 0.95",
            Truncation {
                top_k: Some(50),
                top_p: 0.95,
            },
        ),
        (
            "top-p 0.95 alone",
            Truncation {
                top_k: None,
                top_p: 0.95,
            },
        ),
    ];
    let mut out = Vec::new();
    for (shape, scale) in [("peaked", 4.5), ("flat", 0.5)] {
        let logits = logits(sizes.rows, sizes.vocab, scale, device)?;
        for (draw, truncation) in &draws {
            let inputs: Vec<RowIn> = (0..sizes.rows)
                .map(|r| {
                    let key = DrawKey {
                        seed: 7,
                        prompt: 0,
                        sample: r as u32,
                    };
                    RowIn::new(1.0, key, 0, &nucleus, truncation)
                })
                .collect();
            let ms = time(device, sizes.iterations, || {
                token_stats::launch(&logits, inputs.clone()).map(drop)
            })?;
            out.push(Timing {
                case: format!(
                    "statistics, {shape} rows, {draw} ({} × {})",
                    sizes.rows, sizes.vocab
                ),
                ms,
                bytes: (sizes.rows * sizes.vocab * 4) as f64,
            });
        }
    }
    Ok(out)
}

/// The attention kernel for `rows` query tokens, one per sequence at the last position of each
/// context (each sequence's blocks its own, interleaved with the others'), on the Qwen2-1.5B
/// shape (12 query heads, 2 key/value heads of 128) in bf16 on a GPU (float32 on the CPU).
pub fn attention(device: &Device, sizes: &Sizes) -> candle_core::Result<Vec<Timing>> {
    let dtype = if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    };
    // Qwen2-1.5B's attention (the rest of the architecture is not read here).
    let arch = Architecture {
        family: "qwen2".into(),
        hidden: 1_536,
        layers: 1,
        heads: 12,
        kv_heads: 2,
        head_dim: 128,
        vocab: sizes.vocab,
        rms_eps: 1e-6,
        rope_theta: 1e6,
        rope_style: super::config::RopeStyle::Halves,
        max_context: 32_768,
    };
    let mut out = Vec::new();
    for &context in &sizes.contexts {
        let per_sequence = context.div_ceil(BLOCK_SIZE);
        let blocks = sizes.rows * per_sequence;
        let shape = CacheShape {
            layers: 1,
            kv_heads: arch.kv_heads,
            head_dim: arch.head_dim,
            block_size: BLOCK_SIZE,
            max_blocks: blocks,
        };
        let mut cache = KvCache::new(shape, dtype, device, Access::Kernels);
        cache.reserve(blocks)?;
        let batch = Batch::Decode {
            rows: (0..sizes.rows)
                .map(|seq| DecodeRow {
                    blocks: (0..per_sequence)
                        .map(|k| (k * sizes.rows + seq) as u32)
                        .collect(),
                    position: context - 1,
                    token: 0,
                })
                .collect(),
        };
        let plan = Attention::plan(&batch, device, dtype, Access::Kernels, BLOCK_SIZE, &arch)?;
        let q = Tensor::randn(0f32, 1.0, (sizes.rows, arch.heads, arch.head_dim), device)?
            .to_dtype(dtype)?;
        let ms = time(device, sizes.iterations, || {
            plan.attend(0, &q, &cache, &arch).map(drop)
        })?;
        let element = dtype.size_in_bytes();
        out.push(Timing {
            case: format!(
                "attention, {} queries × context {context} ({})",
                sizes.rows,
                if kernel_attention::supports(arch.heads, arch.kv_heads, arch.head_dim, dtype) {
                    "kernel"
                } else {
                    "candle"
                }
            ),
            ms,
            bytes: (2 * sizes.rows * context * arch.kv_width() * element) as f64,
        });
    }
    Ok(out)
}

/// The timings as a markdown table.
pub fn table(timings: &[Timing]) -> String {
    let rows: String = timings
        .iter()
        .map(|t| {
            format!(
                "| {} | {:.3} | {:.2} |\n",
                t.case,
                t.ms,
                t.gigabytes_per_second()
            )
        })
        .collect();
    format!("| case | ms per launch | GB/s of the bytes it must read |\n|---|---:|---:|\n{rows}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At toy sizes on the CPU every case runs and is timed, and the table has a line each.
    #[test]
    fn every_case_runs_and_is_tabled() {
        let sizes = Sizes {
            rows: 4,
            vocab: 3_000,
            contexts: vec![8, 32],
            iterations: 1,
        };
        let mut timings = token_stats(&Device::Cpu, &sizes).unwrap();
        assert_eq!(timings.len(), 6);
        timings.extend(attention(&Device::Cpu, &sizes).unwrap());
        assert_eq!(timings.len(), 8);
        assert!(
            timings.iter().all(|t| t.ms > 0.0 && t.bytes > 0.0),
            "{timings:?}"
        );
        assert_eq!(table(&timings).lines().count(), 2 + timings.len());
    }
}
