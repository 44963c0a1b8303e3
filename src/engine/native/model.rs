//! The Llama-family decoder (Llama, Qwen2, Qwen3) that entroll's native engine runs: one
//! forward for a prompt chunk of one sequence, or one forward for one new token of each of many
//! sequences, both over the paged KV cache of [`super::kv`].
//!
//! The architecture comes from [`super::config`]; the weights, from a GGUF file or a safetensors
//! directory, are loaded by [`super::load`]; the forward is the same for both, and what it
//! computes is a [`Batch`] ([`super::batch`]).

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};

use super::attention::Attention;
use super::batch::Batch;
use super::config::{Architecture, RopeStyle};
use super::device_index::upload;
use super::kv::KvCache;

/// A linear layer: quantized or dense weight `[out, in]`, optional bias.
pub(super) struct Linear {
    weight: QMatMul,
    bias: Option<Tensor>,
    /// Fewest rows run through the weight on the CPU (see [`invariant_rows`]).
    min_rows: usize,
    /// On the CPU with bf16 or f16 weights: that dtype. candle's CPU matmul has none for them,
    /// so the weight is kept in float32 (the same values, exactly) and each product runs in
    /// float32 and is rounded to this dtype, as a GPU's half-precision GEMM accumulates in
    /// float32 and rounds its output. Everything else runs in the half-precision dtype, so the
    /// GPU's code path stays under test on the CPU.
    rounds_to: Option<DType>,
}

/// The fewest rows with which candle's CPU matmul (the `gemm` crate) computes every output
/// element of a `[rows, input] × [input, output]` product by its general kernel, whose order
/// of summation depends on `input` alone. Fewer rows take other kernels (a matrix-vector
/// product for one row, a horizontal kernel while `rows · output <= 256`, other blocking
/// while both are at most 64), which round differently: a row's result would depend on how
/// many rows ran beside it. Padding to this many rows makes it the same bits at any batch
/// size; `linear_rows_do_not_depend_on_the_batch` checks it.
fn invariant_rows(input: usize, output: usize) -> usize {
    let mut rows = (256 / output.max(1) + 1).max(2);
    if output <= 64 && input > 512 {
        rows = rows.max(65);
    }
    rows
}

impl Linear {
    pub(super) fn new(weight: QMatMul, bias: Option<Tensor>) -> candle_core::Result<Self> {
        let (output, input) = match &weight {
            QMatMul::QTensor(q) => q.shape().dims2()?,
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dims2()?,
        };
        let (weight, rounds_to) = match weight {
            QMatMul::Tensor(t)
                if t.device().is_cpu() && matches!(t.dtype(), DType::BF16 | DType::F16) =>
            {
                let dtype = t.dtype();
                (QMatMul::Tensor(t.to_dtype(DType::F32)?), Some(dtype))
            }
            other => (other, None),
        };
        Ok(Self {
            weight,
            bias,
            min_rows: invariant_rows(input, output),
            rounds_to,
        })
    }

    /// `x · Wᵀ + b` for `x` of `[rows, input]`; on the CPU each row's result is the same
    /// whatever the number of rows.
    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let rows = x.dim(0)?;
        if !x.device().is_cpu() || rows >= self.min_rows {
            return self.product(x);
        }
        let padding = Tensor::zeros((self.min_rows - rows, x.dim(1)?), x.dtype(), x.device())?;
        self.product(&Tensor::cat(&[x, &padding], 0)?)?
            .narrow(0, 0, rows)
    }

    fn product(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = match self.rounds_to {
            Some(dtype) => self
                .weight
                .forward(&x.to_dtype(DType::F32)?)?
                .to_dtype(dtype)?,
            None => self.weight.forward(x)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Linear layers over the same input (a layer's query, key and value projections; its gate and
/// up projections), run as one product where their weights allow: fewer, larger products, and
/// on a GPU fewer kernel launches.
pub(super) enum Projections {
    /// Dense weights stacked by output rows (biases likewise) into one product; its output is
    /// split by these widths.
    Stacked(Linear, Vec<usize>),
    /// Quantized weights (kept as the file has them): one product each.
    Separate(Vec<Linear>),
}

impl Projections {
    /// `parts`, stacked into one product on a GPU if every weight is dense with the same dtype.
    /// On the CPU they stay separate: there stacking showed no gain (its output is split with
    /// copies; docs/benchmarks.md), and what it saves is kernel launches.
    pub(super) fn new(parts: Vec<Linear>) -> candle_core::Result<Self> {
        let on_cpu = parts
            .first()
            .is_some_and(|p| matches!(&p.weight, QMatMul::Tensor(t) if t.device().is_cpu()));
        if on_cpu {
            return Ok(Self::Separate(parts));
        }
        Self::stacked(parts)
    }

    /// `parts` stacked into one product if every weight is dense with the same dtype.
    fn stacked(parts: Vec<Linear>) -> candle_core::Result<Self> {
        let dense: Option<Vec<&Tensor>> = parts
            .iter()
            .map(|p| match &p.weight {
                QMatMul::Tensor(t) => Some(t),
                _ => None,
            })
            .collect();
        let Some(weights) = dense else {
            return Ok(Self::Separate(parts));
        };
        let same = |p: &Linear| p.rounds_to == parts[0].rounds_to;
        if parts.len() < 2
            || !parts.iter().all(same)
            || weights.iter().any(|w| w.dtype() != weights[0].dtype())
        {
            return Ok(Self::Separate(parts));
        }
        let widths: Vec<usize> = weights.iter().map(|w| w.dim(0)).collect::<Result<_, _>>()?;
        let weight = Tensor::cat(&weights, 0)?;
        let bias = if parts.iter().any(|p| p.bias.is_some()) {
            let biases: Vec<Tensor> = parts
                .iter()
                .zip(&widths)
                .map(|(p, &width)| match &p.bias {
                    Some(b) => Ok(b.clone()),
                    None => Tensor::zeros(width, weight.dtype(), weight.device()),
                })
                .collect::<candle_core::Result<_>>()?;
            Some(Tensor::cat(&biases, 0)?)
        } else {
            None
        };
        let (output, input) = weight.dims2()?;
        let stacked = Linear {
            weight: QMatMul::Tensor(weight),
            bias,
            min_rows: invariant_rows(input, output),
            rounds_to: parts[0].rounds_to,
        };
        Ok(Self::Stacked(stacked, widths))
    }

    /// Each projection of `x`, in the order they were given.
    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        match self {
            Self::Separate(parts) => parts.iter().map(|p| p.forward(x)).collect(),
            Self::Stacked(linear, widths) => {
                let y = linear.forward(x)?;
                let mut offset = 0;
                widths
                    .iter()
                    .map(|&width| {
                        let part = y.narrow(1, offset, width);
                        offset += width;
                        part
                    })
                    .collect()
            }
        }
    }
}

/// One decoder layer's weights.
pub(super) struct Layer {
    pub(super) attn_norm: Tensor,
    /// Query, key and value projections.
    pub(super) qkv: Projections,
    pub(super) o: Linear,
    /// Per-head RMSNorm of queries and keys (Qwen3).
    pub(super) q_norm: Option<Tensor>,
    pub(super) k_norm: Option<Tensor>,
    pub(super) ffn_norm: Tensor,
    /// Gate and up projections.
    pub(super) gate_up: Projections,
    pub(super) down: Linear,
}

impl Layer {
    /// The layer's query, key and value projections of `h`.
    pub(super) fn qkv(&self, h: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let mut parts = self.qkv.forward(h)?.into_iter();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(q), Some(k), Some(v)) => Ok((q, k, v)),
            _ => candle_core::bail!("a layer has three attention projections"),
        }
    }

    /// The layer's feed-forward block on `h`: `down(silu(gate(h)) · up(h))`.
    pub(super) fn feed_forward(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        let parts = self.gate_up.forward(h)?;
        let [gate, up] = parts.as_slice() else {
            candle_core::bail!("a layer has two feed-forward projections");
        };
        self.down.forward(&(candle_nn::ops::silu(gate)? * up)?)
    }
}

/// The decoder with its weights on one device.
pub struct Transformer {
    pub(super) arch: Architecture,
    pub(super) embed: Tensor,
    pub(super) layers: Vec<Layer>,
    pub(super) norm: Tensor,
    pub(super) lm_head: Linear,
    pub(super) cos: Tensor,
    pub(super) sin: Tensor,
    pub(super) dtype: DType,
    pub(super) device: Device,
}

impl Transformer {
    /// The architecture.
    pub fn arch(&self) -> &Architecture {
        &self.arch
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The activation dtype (also the KV cache's).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Runs `batch`: each row's token at its position, attending to its sequence's cached
    /// positions up to its own through its block table; writes the rows' keys and values into
    /// the cache, and returns the `f32` logits `[rows.len(), V]` of
    /// the rows listed in `rows`.
    pub fn forward(
        &self,
        batch: &Batch,
        cache: &mut KvCache,
        rows: &[usize],
    ) -> candle_core::Result<Tensor> {
        let a = &self.arch;
        let tokens = batch.tokens();
        let n = tokens.len();
        let ids = upload(tokens.as_slice(), &self.device)?;
        let pos = upload(
            &batch
                .positions()
                .iter()
                .map(|&p| p as u32)
                .collect::<Vec<_>>(),
            &self.device,
        )?;
        let half = a.head_dim / 2;
        let cos = self.cos.index_select(&pos, 0)?.reshape((n, 1, half))?;
        let sin = self.sin.index_select(&pos, 0)?.reshape((n, 1, half))?;
        cache.reserve(batch.blocks_spanned())?;
        let writes = cache.plan_writes(batch.writes(cache))?;
        let attention = Attention::plan(
            batch,
            &self.device,
            self.dtype,
            cache.access(),
            cache.block_size(),
            a,
        )?;
        let mut x = self.embed.index_select(&ids, 0)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, a.rms_eps as f32)?;
            let (q, k, v) = layer.qkv(&h)?;
            let q = self.heads(&q, &layer.q_norm, a.heads, &cos, &sin)?;
            let k = self.heads(&k, &layer.k_norm, a.kv_heads, &cos, &sin)?;
            cache.write(li, &writes, &k.reshape((n, a.kv_width()))?, &v)?;
            let mixed = attention.attend(li, &q, cache, a)?;
            x = (x + layer.o.forward(&mixed)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, a.rms_eps as f32)?;
            x = (x + layer.feed_forward(&h)?)?;
        }
        let picked = upload(
            &rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            &self.device,
        )?;
        let x = x.index_select(&picked, 0)?;
        let x = candle_nn::ops::rms_norm(&x, &self.norm, a.rms_eps as f32)?;
        self.lm_head.forward(&x)?.to_dtype(DType::F32)
    }

    /// Splits a projection `[n, heads · head_dim]` into `heads` heads, applies the optional
    /// per-head norm and RoPE: `[n, heads, head_dim]`.
    fn heads(
        &self,
        projected: &Tensor,
        norm: &Option<Tensor>,
        heads: usize,
        cos: &Tensor,
        sin: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let a = &self.arch;
        let n = projected.dim(0)?;
        let mut x = projected.reshape((n, heads, a.head_dim))?;
        if let Some(norm) = norm {
            x = candle_nn::ops::rms_norm(&x, norm, a.rms_eps as f32)?;
        }
        // Each token is its own batch entry with one time step, so the per-token cos/sin rows
        // give every token its own position.
        let x = x.reshape((n, heads, 1, a.head_dim))?.contiguous()?;
        let x = match a.rope_style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, cos, sin)?,
            RopeStyle::Halves => candle_nn::rotary_emb::rope(&x, cos, sin)?,
        };
        x.reshape((n, heads, a.head_dim))
    }
}

/// RoPE cos and sin tables `[max_context, head_dim / 2]`.
pub(super) fn rope_tables(
    a: &Architecture,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let half = a.head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / a.rope_theta.powf(2.0 * i as f64 / a.head_dim as f64) as f32)
        .collect();
    let inv = Tensor::from_vec(inv, (1, half), device)?;
    let t = Tensor::arange(0u32, a.max_context as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((a.max_context, 1))?;
    let freqs = t.broadcast_mul(&inv)?;
    Ok((freqs.cos()?.to_dtype(dtype)?, freqs.sin()?.to_dtype(dtype)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// A random two-layer Llama (4 query heads over 2 key/value heads of 8) with its
    /// projections stacked, as on a GPU, or separate, as on the CPU; the same weights either
    /// way.
    fn random_model(stacked: bool) -> Transformer {
        let a = Architecture {
            family: "llama".into(),
            hidden: 32,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
            vocab: 40,
            rms_eps: 1e-6,
            rope_theta: 10_000.0,
            rope_style: RopeStyle::Halves,
            max_context: 64,
        };
        let device = Device::Cpu;
        let weight = |rows: usize, cols: usize, seed: u64| {
            Tensor::from_vec(values(rows * cols, seed), (rows, cols), &device).unwrap()
        };
        let linear = |rows, cols, seed| {
            Linear::new(QMatMul::Tensor(weight(rows, cols, seed)), None).unwrap()
        };
        let projections = |parts: Vec<Linear>| match stacked {
            true => Projections::stacked(parts).unwrap(),
            false => Projections::Separate(parts),
        };
        let (h, kv, ffn) = (a.hidden, a.kv_heads * a.head_dim, 48);
        let ones = || Tensor::ones(h, DType::F32, &device).unwrap();
        let layers = (0..a.layers as u64)
            .map(|l| Layer {
                attn_norm: ones(),
                qkv: projections(vec![
                    linear(a.heads * a.head_dim, h, 10 * l + 1),
                    linear(kv, h, 10 * l + 2),
                    linear(kv, h, 10 * l + 3),
                ]),
                o: linear(h, a.heads * a.head_dim, 10 * l + 4),
                q_norm: None,
                k_norm: None,
                ffn_norm: ones(),
                gate_up: projections(vec![linear(ffn, h, 10 * l + 5), linear(ffn, h, 10 * l + 6)]),
                down: linear(h, ffn, 10 * l + 7),
            })
            .collect();
        let (cos, sin) = rope_tables(&a, DType::F32, &device).unwrap();
        Transformer {
            embed: weight(a.vocab, h, 100),
            layers,
            norm: ones(),
            lm_head: linear(a.vocab, h, 101),
            cos,
            sin,
            dtype: DType::F32,
            device,
            arch: a,
        }
    }

    #[test]
    fn a_forward_over_stacked_projections_with_the_device_kernels_gives_the_separate_logits() {
        // On a GPU the projections are stacked and the device kernels write each layer's keys
        // (contiguous) and values (a view into the stacked output) in one copy; the CPU runs
        // separate projections, so the fast tier alone never writes that way.
        use super::super::batch::DecodeRow;
        use super::super::kv::{Access, CacheShape};
        let shape = CacheShape {
            layers: 2,
            kv_heads: 2,
            head_dim: 8,
            block_size: 16,
            max_blocks: 8,
        };
        let tables = [vec![3, 1], vec![0, 2]];
        let run = |stacked: bool, access: Access| -> Vec<f32> {
            let model = random_model(stacked);
            let mut cache = KvCache::new(shape, DType::F32, &Device::Cpu, access);
            let mut logits = Vec::new();
            // Two prompts of 20 tokens (two blocks each), then a decode step of both.
            for (s, table) in tables.iter().enumerate() {
                let prompt = Batch::Prompt {
                    blocks: table.clone(),
                    start: 0,
                    tokens: (0..20).map(|i| ((i * 7 + s * 3) % 40) as u32).collect(),
                };
                let out = model.forward(&prompt, &mut cache, &[0, 19]).unwrap();
                logits.extend(out.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            }
            let rows = tables
                .iter()
                .map(|table| DecodeRow {
                    blocks: table.clone(),
                    position: 20,
                    token: 5,
                })
                .collect();
            let out = model
                .forward(&Batch::Decode { rows }, &mut cache, &[0, 1])
                .unwrap();
            logits.extend(out.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            logits
        };
        // The reference: separate projections, candle's scatter, the CPU attention.
        let expected = run(false, Access::Candle);
        assert_eq!(expected.len(), 6 * 40);
        for (stacked, access) in [
            (true, Access::Kernels),
            (false, Access::Kernels),
            (true, Access::Candle),
        ] {
            let got = run(stacked, access);
            let worst = got
                .iter()
                .zip(&expected)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                worst <= 1e-4,
                "stacked {stacked}, {access:?}: logits off by {worst}"
            );
        }
    }

    #[test]
    fn stacked_projections_give_each_part_s_product() {
        // Three parts of different widths, one without a bias (a zero bias is stacked in).
        let input = 96;
        let make = || -> Vec<Linear> {
            [(64, true), (32, false), (48, true)]
                .iter()
                .enumerate()
                .map(|(i, &(width, bias))| {
                    let w = Tensor::from_vec(
                        values(width * input, 10 + i as u64),
                        (width, input),
                        &Device::Cpu,
                    )
                    .unwrap();
                    let b = bias.then(|| {
                        Tensor::from_vec(values(width, 20 + i as u64), width, &Device::Cpu).unwrap()
                    });
                    Linear::new(QMatMul::Tensor(w), b).unwrap()
                })
                .collect()
        };
        // Stacked as on a GPU (on the CPU `new` keeps them separate).
        assert!(matches!(
            Projections::new(make()).unwrap(),
            Projections::Separate(_)
        ));
        let stacked = Projections::stacked(make()).unwrap();
        assert!(matches!(&stacked, Projections::Stacked(_, widths) if widths == &[64, 32, 48]));
        let separate = Projections::Separate(make());
        let x = Tensor::from_vec(values(5 * input, 3), (5, input), &Device::Cpu).unwrap();
        let (a, b) = (separate.forward(&x).unwrap(), stacked.forward(&x).unwrap());
        assert_eq!(a.len(), 3);
        for (a, b) in a.iter().zip(&b) {
            assert_eq!(a.dims(), b.dims());
            let (a, b): (Vec<Vec<f32>>, Vec<Vec<f32>>) =
                (a.to_vec2().unwrap(), b.to_vec2().unwrap());
            for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
                assert!((x - y).abs() <= 1e-5, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn linear_rows_do_not_depend_on_the_batch() {
        // (input, output): the default model's and the tiny test models' shapes (stacked
        // query-key-value and gate-up products included), and edges of the matmul's kernel
        // choices.
        let shapes = [
            (576, 960),
            (576, 3072),
            (128, 256),
            (128, 512),
            (576, 576),
            (576, 192),
            (576, 1536),
            (1536, 576),
            (576, 4099),
            (128, 64),
            (128, 128),
            (64, 32),
            (600, 40),
            (1000, 64),
            (32, 300),
        ];
        for (i, &(input, output)) in shapes.iter().enumerate() {
            let w = Tensor::from_vec(
                values(input * output, i as u64),
                (output, input),
                &Device::Cpu,
            )
            .unwrap();
            let b = Tensor::from_vec(values(output, 99), output, &Device::Cpu).unwrap();
            let linear = Linear::new(QMatMul::Tensor(w), Some(b)).unwrap();
            let x = Tensor::from_vec(values(70 * input, 7 + i as u64), (70, input), &Device::Cpu)
                .unwrap();
            let all: Vec<Vec<f32>> = linear.forward(&x).unwrap().to_vec2().unwrap();
            for rows in [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33, 64, 65] {
                let some: Vec<Vec<f32>> = linear
                    .forward(&x.narrow(0, 0, rows).unwrap())
                    .unwrap()
                    .to_vec2()
                    .unwrap();
                assert_eq!(some, all[..rows], "{input}→{output} with {rows} rows");
            }
        }
    }
}
