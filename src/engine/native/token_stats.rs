//! The token-statistics kernel (`kernels/token_stats.cuh`) as a candle operation on a `[B, V]`
//! logits tensor, wherever the tensor lives. On CUDA the PTX runs one thread block per row and
//! only 64 bytes a row come back to the host (480 when a row of the batch asks for
//! alternatives), instead of the whole row; on the CPU the harness
//! runs the same source. With the device kernels on
//! ([`crate::engine::settings::DeviceKernels`]) the engine draws every token through [`run`], so
//! the code the GPU runs is the code the CPU tests run.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

use super::kernels::{RowIn, RowOut, TopOut};
use crate::stats::distribution::StatsError;
use crate::stats::sampling::TokenRecord;

/// Bytes of one row's result, and of one row's alternatives.
const OUT_BYTES: usize = std::mem::size_of::<RowOut>();
const TOP_BYTES: usize = std::mem::size_of::<TopOut>();

/// Measures and draws every row of `logits` (`[B, V]`, float32) with `inputs[b]` for row `b`,
/// on the logits' device; returns the rows' results on the host, and when any row asks for
/// alternatives, every row's ([`TopOut`], a count of 0 where a row did not ask).
pub fn run(logits: &Tensor, inputs: Vec<RowIn>) -> candle_core::Result<(Vec<RowOut>, Vec<TopOut>)> {
    let (rows, _) = logits.dims2()?;
    if rows != inputs.len() {
        candle_core::bail!("{rows} logits rows for {} inputs", inputs.len());
    }
    if rows == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    // Reading the results back waits for the device.
    super::step_counts::sync();
    let bytes = launch(logits, inputs)?.to_vec1::<u8>()?;
    let (outs, tops) = bytes.split_at(rows * OUT_BYTES);
    Ok((read_all(outs, OUT_BYTES), read_all(tops, TOP_BYTES)))
}

/// The `T`s laid end to end in `bytes`, `size` bytes each.
fn read_all<T: Copy>(bytes: &[u8], size: usize) -> Vec<T> {
    bytes
        .chunks_exact(size)
        // SAFETY: each chunk holds one `T` (`RowOut` or `TopOut`) as the kernel wrote it; every
        // bit pattern of their plain number fields is a value, and the read does not assume
        // alignment.
        .map(|chunk| unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast::<T>()) })
        .collect()
}

/// Queues the kernel over `logits` (`[B, V]`) with `inputs[b]` for row `b` (as many): the rows'
/// results stay on the logits' device, as bytes: `B` [`RowOut`]s, then, when any row asks for
/// alternatives, `B` [`TopOut`]s.
pub fn launch(logits: &Tensor, inputs: Vec<RowIn>) -> candle_core::Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?.contiguous()?;
    // The rows' inputs go up with the launch (on the CPU the harness reads them in place).
    super::step_counts::upload();
    super::step_counts::launch();
    logits.apply_op1_no_bwd(&TokenStatsOp { inputs })
}

impl RowOut {
    /// The token's record, or why its row could not be measured (as the host path says it).
    pub fn record(&self) -> Result<TokenRecord, String> {
        match self.status {
            0 => Ok(TokenRecord {
                token: self.token,
                logprob: self.logprob as f32,
                sampling_logprob: self.sampling_logprob as f32,
                entropy: self.entropy as f32,
                top_p_size: self.nucleus_size,
                top_p_mass: self.nucleus_mass as f32,
                top_p_entropy: self.nucleus_entropy as f32,
            }),
            1 => Err(StatsError::NonFinite.to_string()),
            2 => Err(StatsError::AllMasked.to_string()),
            status => Err(format!(
                "the token-statistics kernel failed on this row (status {status})"
            )),
        }
    }
}

/// The operation: the rows' inputs travel with it (64 bytes a row), the logits are its tensor.
struct TokenStatsOp {
    inputs: Vec<RowIn>,
}

impl TokenStatsOp {
    /// Rows and vocabulary of a contiguous `[B, V]` layout with one row per input.
    fn shape(&self, layout: &Layout) -> candle_core::Result<(usize, usize)> {
        let (rows, vocab) = layout.shape().dims2()?;
        if rows != self.inputs.len() || vocab == 0 || vocab > u32::MAX as usize {
            candle_core::bail!(
                "token statistics: logits {rows}×{vocab} for {} rows",
                self.inputs.len()
            );
        }
        if !layout.is_contiguous() {
            candle_core::bail!("token statistics: the logits must be contiguous");
        }
        Ok((rows, vocab))
    }
}

impl CustomOp1 for TokenStatsOp {
    fn name(&self) -> &'static str {
        "entroll-token-stats"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, vocab) = self.shape(layout)?;
        let CpuStorage::F32(all) = storage else {
            candle_core::bail!("token statistics: the logits must be float32");
        };
        let start = layout.start_offset();
        let (out, tops) = super::kernels::token_stats_cpu_with_tops(
            &all[start..start + rows * vocab],
            vocab,
            &self.inputs,
        );
        let mut bytes = as_bytes(&out).to_vec();
        bytes.extend_from_slice(as_bytes(&tops));
        let len = bytes.len();
        Ok((CpuStorage::U8(bytes), Shape::from(len)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;

        let (rows, vocab) = self.shape(layout)?;
        let dev = storage.device();
        let logits = storage.as_cuda_slice::<f32>()?;
        let logits = logits.slice(layout.start_offset()..);
        let inputs = dev.clone_htod(as_bytes(&self.inputs))?;
        // The rows' results, then their alternatives when a row asks for them; else the
        // kernel is given one place of its own that it never writes, at stride 0.
        let asked = self.inputs.iter().any(|input| input.top_n > 0);
        let len = rows * OUT_BYTES + if asked { rows * TOP_BYTES } else { 0 };
        let out = dev.alloc_zeros::<u8>(len)?;
        let spare = match asked {
            true => None,
            false => Some(dev.alloc_zeros::<u8>(TOP_BYTES)?),
        };
        let (tops, tops_stride) = match &spare {
            None => (out.slice(rows * OUT_BYTES..), 1u32),
            Some(spare) => (spare.slice(..), 0u32),
        };
        let keys_per_row = self
            .inputs
            .iter()
            .map(|input| super::kernels::scratch_keys(input, vocab))
            .max()
            .unwrap_or(1);
        // SAFETY: scratch the kernel writes before it reads.
        let keys = unsafe { dev.alloc::<u64>(rows * keys_per_row as usize)? };
        // SAFETY: as `keys`.
        let weights = unsafe { dev.alloc::<f64>(rows * keys_per_row as usize)? };
        // The kernel with the alternatives' phases only when a row asks for them: the other
        // needs fewer registers (kernels/token_stats.cu).
        let func = dev.get_or_load_custom_func(
            if asked {
                "entroll_token_stats_top"
            } else {
                "entroll_token_stats"
            },
            "entroll_token_stats",
            super::kernels::TOKEN_STATS_PTX,
        )?;
        let config = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (super::kernels::threads_per_row(), 1, 1),
            shared_mem_bytes: 0,
        };
        let vocab = vocab as u32;
        let mut launch = func.builder();
        launch.arg(&logits);
        launch.arg(&vocab);
        launch.arg(&inputs);
        launch.arg(&out);
        launch.arg(&tops);
        launch.arg(&tops_stride);
        launch.arg(&keys);
        launch.arg(&weights);
        launch.arg(&keys_per_row);
        // SAFETY: the arguments match both kernels of kernels/token_stats.cu: `rows`
        // rows of `vocab` logits, as many inputs and outputs, `rows` alternatives at stride 1
        // or one at stride 0 (8-byte aligned: `rows * 64` bytes in), `keys_per_row` keys and
        // weights a row.
        unsafe { launch.launch(config) }.w()?;
        drop(launch);
        Ok((
            candle_core::CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from(len),
        ))
    }
}

/// The bytes of `values`, a slice of `RowIn`, `RowOut` or `TopOut` (`repr(C)`, no padding:
/// 64, 64 and 416 bytes of plain numbers).
pub(super) fn as_bytes<T: Copy>(values: &[T]) -> &[u8] {
    // SAFETY: `T` is one of the three kernel structs, whose fields fill them without padding, so
    // every byte is initialised.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::distribution::{NucleusParams, NucleusRule, Truncation, Workspace};
    use crate::stats::sampling::{DrawKey, TokenSampler};
    use crate::stats::test_rng::TestRng as Rng;

    /// The op on a tensor gives the host sampler's tokens, and its statistics within float32
    /// rounding, row by row (rows of a batch at several truncations), and fails the rows the
    /// host fails with the host's words.
    #[test]
    fn the_op_draws_and_measures_as_the_host_sampler_does() {
        let (rows, vocab) = (24, 3_000);
        let mut rng = Rng(7);
        let mut logits: Vec<f32> = (0..rows * vocab)
            .map(|_| (rng.uniform() * 12.0 - 6.0) as f32)
            .collect();
        logits[5 * vocab + 17] = f32::NAN;
        logits[9 * vocab..10 * vocab].fill(f32::NEG_INFINITY);
        let samplers: Vec<TokenSampler> = (0..rows)
            .map(|r| TokenSampler {
                temperature: [1.0, 0.7, 1.3][r % 3],
                truncation: Truncation {
                    top_k: [None, Some(40), Some(1)][r % 3],
                    top_p: [1.0, 0.9, 0.5, 0.95][r % 4],
                },
                nucleus: NucleusParams {
                    top_p: 0.95,
                    max_candidates: [64, 1024][r % 2],
                    rule: [NucleusRule::Strict, NucleusRule::Inclusive][r % 2],
                },
                key: DrawKey {
                    seed: 11,
                    prompt: (r / 4) as u32,
                    sample: (r % 4) as u32,
                },
                mask: false,
                alternatives: 0,
            })
            .collect();
        let inputs = samplers
            .iter()
            .enumerate()
            .map(|(r, s)| RowIn::for_token(s, r as u32))
            .collect();
        let tensor =
            Tensor::from_vec(logits.clone(), (rows, vocab), &candle_core::Device::Cpu).unwrap();
        let (outs, tops) = run(&tensor, inputs).unwrap();
        assert!(tops.is_empty(), "no row asked for alternatives");
        let mut ws = Workspace::default();
        for (r, (sampler, out)) in samplers.iter().zip(&outs).enumerate() {
            let row = &logits[r * vocab..(r + 1) * vocab];
            let host = sampler
                .step(row, r as u32, &mut ws)
                .map_err(|e| e.to_string());
            let kernel = out.record();
            match (host, kernel) {
                (Ok(h), Ok(k)) => {
                    assert_eq!(h.token, k.token, "row {r}");
                    assert_eq!(h.top_p_size, k.top_p_size, "row {r}");
                    for (a, b) in [
                        (h.logprob, k.logprob),
                        (h.sampling_logprob, k.sampling_logprob),
                        (h.entropy, k.entropy),
                        (h.top_p_mass, k.top_p_mass),
                        (h.top_p_entropy, k.top_p_entropy),
                    ] {
                        assert!(
                            (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                            "row {r}: {a} vs {b}"
                        );
                    }
                }
                (Err(h), Err(k)) => assert_eq!(h, k, "row {r}"),
                (h, k) => panic!("row {r}: host {h:?}, kernel {k:?}"),
            }
        }
        assert!(outs[5].record().is_err() && outs[9].record().is_err());
    }

    #[test]
    fn a_batch_of_no_rows_and_mismatched_inputs() {
        let none = Tensor::zeros((0, 10), DType::F32, &candle_core::Device::Cpu).unwrap();
        assert!(run(&none, Vec::new()).unwrap().0.is_empty());
        let two = Tensor::zeros((2, 10), DType::F32, &candle_core::Device::Cpu).unwrap();
        assert!(run(&two, Vec::new()).is_err());
    }
}
