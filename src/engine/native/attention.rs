//! Attention of each query token over the cached keys and values of its own sequence.
//!
//! A query token reads its sequence's keys and values through the block table of its row
//! ([`Queries`]): position `j` is at offset `j mod size` of block `table[j / size]`.
//!
//! On the CPU every query token is computed on its own ([`RowwiseAttention`]): its scores over
//! positions `0..=p` of its sequence, a softmax and the weighted sum of values, each reduction in a
//! fixed order that depends on nothing but the token's own position. A token's result is
//! therefore the same bits whether it runs in a decode step beside 1 or 31 other sequences, as
//! the last row of a prompt chunk or alone, which is what makes seeded samples independent of
//! concurrent load. It reads the cache in place (no gather, no padding to the batch's longest
//! sequence).
//!
//! With entroll's device kernels on (the default on CUDA), the device attention kernel
//! ([`KernelAttention`], `kernels/attention.cuh`) does the same on the GPU: one block per query
//! token and key/value head, reading the cache in place, reductions in a fixed order (so also
//! batch-invariant), tested on the CPU through its harness.
//!
//! Otherwise, on CUDA, candle's tensor operations over gathered cache rows ([`Gathered`]):
//! correct, not batch-invariant (a decode step pads every sequence to the longest one, and the
//! reductions' blocking follows that length).

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::batch::Batch;
use super::config::Architecture;
use super::device_index::DeviceIndex;
use super::kernel_attention::{self, AttShape, KernelAttention};
use super::kv::{Access, KvCache};
use super::queries::Queries;

/// How one forward's query tokens attend: decided once, used by every layer.
pub enum Attention {
    /// The CPU kernel: each query token's position and block table.
    Rowwise(Queries),
    /// The device kernel: the same, and its flat form on the device.
    Kernel(Queries, DeviceIndex),
    /// Candle operations on other devices.
    Gathered(Gathered),
}

impl Attention {
    /// Plans `batch` on `device` (with activations in `dtype`) over a cache read as `access`
    /// says: the device kernel where it handles the model, else the CPU kernel on the CPU and
    /// candle's operations elsewhere.
    pub fn plan(
        batch: &Batch,
        device: &Device,
        dtype: DType,
        access: Access,
        block_size: usize,
        a: &Architecture,
    ) -> candle_core::Result<Self> {
        if access == Access::Kernels
            && kernel_attention::supports(a.heads, a.kv_heads, a.head_dim, dtype)
        {
            let queries = batch.queries();
            let index = DeviceIndex::upload(queries.flat().to_vec(), device)?;
            return Ok(Self::Kernel(queries, index));
        }
        if device.is_cpu() {
            return Ok(Self::Rowwise(batch.queries()));
        }
        Gathered::plan(batch, device, dtype, block_size, a.kv_heads).map(Self::Gathered)
    }

    /// Attention of queries `q` (`[n, heads, head_dim]`) over layer `layer` of the cache:
    /// `[n, heads · head_dim]`.
    pub fn attend(
        &self,
        layer: usize,
        q: &Tensor,
        cache: &KvCache,
        a: &Architecture,
    ) -> candle_core::Result<Tensor> {
        match self {
            Self::Rowwise(queries) => {
                let (k, v) = cache.layer(layer)?;
                let op = RowwiseAttention {
                    queries,
                    block_size: cache.block_size(),
                    heads: a.heads,
                    kv_heads: a.kv_heads,
                    head_dim: a.head_dim,
                };
                q.contiguous()?.apply_op3_no_bwd(&k, &v, &op)
            }
            Self::Kernel(queries, index) => {
                let (k, v) = cache.layer(layer)?;
                let op = KernelAttention {
                    queries,
                    index,
                    shape: AttShape {
                        queries: queries.len() as u32,
                        heads: a.heads as u32,
                        kv_heads: a.kv_heads as u32,
                        head_dim: a.head_dim as u32,
                        block_size: cache.block_size() as u32,
                        scale: 1.0 / (a.head_dim as f32).sqrt(),
                    },
                };
                q.contiguous()?.apply_op3_no_bwd(&k, &v, &op)
            }
            Self::Gathered(g) => g.attend(layer, q, cache, a),
        }
    }
}

/// The CPU attention kernel (see the module's documentation).
pub struct RowwiseAttention<'a> {
    /// Each query token's block table and position: it attends to positions `0..=position`.
    pub queries: &'a Queries,
    /// Positions per block (cache rows are `(block · kv_heads + head) · size + offset`).
    pub block_size: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
}

/// The element types the kernel reads, computed in `f32`.
trait Element: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    fn from_f32(x: f32) -> Self;
    /// `row` as `f32`: itself for `f32`, converted into `buffer` otherwise.
    fn as_f32<'a>(row: &'a [Self], buffer: &'a mut Vec<f32>) -> &'a [f32] {
        buffer.clear();
        buffer.extend(row.iter().map(|x| x.to_f32()));
        buffer
    }
}

impl Element for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(x: f32) -> Self {
        x
    }
    fn as_f32<'a>(row: &'a [Self], _: &'a mut Vec<f32>) -> &'a [f32] {
        row
    }
}

impl Element for half::bf16 {
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
    fn from_f32(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
}

impl Element for half::f16 {
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
    fn from_f32(x: f32) -> Self {
        half::f16::from_f32(x)
    }
}

/// `Σ a_i b_i` in a fixed order: eight lanes over the chunks of eight, summed pairwise, then
/// the tail in order. The same inputs give the same bits wherever they are computed.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((lane, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += x * y;
        }
    }
    let mut sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
        + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    for (x, y) in ta.iter().zip(tb) {
        sum += x * y;
    }
    sum
}

/// Per-thread buffers.
#[derive(Default)]
struct Scratch {
    q: Vec<f32>,
    scores: Vec<f32>,
    sums: Vec<f32>,
    acc: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl RowwiseAttention<'_> {
    fn run<T: Element>(&self, q: &[T], k: &[T], v: &[T]) -> candle_core::Result<Vec<T>> {
        let (d, heads, kv_heads) = (self.head_dim, self.heads, self.kv_heads);
        let groups = heads / kv_heads;
        let size = self.block_size;
        let blocks = k.len() / (kv_heads * size * d).max(1);
        if k.len() != v.len() {
            candle_core::bail!("attention: {} keys, {} values", k.len(), v.len());
        }
        self.queries.check(size, blocks)?;
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = vec![T::from_f32(0.0); self.queries.len() * heads * d];
        // One chunk per (query token, key/value head): the `groups` query heads that share
        // that key/value head, `groups · d` outputs.
        out.par_chunks_mut(groups * d).enumerate().for_each_init(
            Scratch::default,
            |s, (c, out)| {
                let (t, h) = (c / kv_heads, c % kv_heads);
                let (table, len) = (self.queries.table(t), self.queries.position(t) + 1);
                let at =
                    |p: usize| ((table[p / size] as usize * kv_heads + h) * size + p % size) * d;
                s.q.clear();
                let first = (t * heads + h * groups) * d;
                s.q.extend(q[first..first + groups * d].iter().map(|x| x.to_f32()));
                s.scores.clear();
                s.scores.resize(groups * len, 0.0);
                for p in 0..len {
                    let at = at(p);
                    let key = T::as_f32(&k[at..at + d], &mut s.k);
                    for g in 0..groups {
                        s.scores[g * len + p] = dot(&s.q[g * d..(g + 1) * d], key) * scale;
                    }
                }
                s.sums.clear();
                s.sums.resize(groups, 0.0);
                for (g, sum) in s.sums.iter_mut().enumerate() {
                    let row = &mut s.scores[g * len..(g + 1) * len];
                    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                    for x in row.iter_mut() {
                        *x = (*x - max).exp();
                        *sum += *x;
                    }
                }
                s.acc.clear();
                s.acc.resize(groups * d, 0.0);
                for p in 0..len {
                    let at = at(p);
                    let value = T::as_f32(&v[at..at + d], &mut s.v);
                    for g in 0..groups {
                        let w = s.scores[g * len + p];
                        for (a, x) in s.acc[g * d..(g + 1) * d].iter_mut().zip(value) {
                            *a += w * x;
                        }
                    }
                }
                for (g, sum) in s.sums.iter().enumerate() {
                    for (o, a) in out[g * d..(g + 1) * d]
                        .iter_mut()
                        .zip(&s.acc[g * d..(g + 1) * d])
                    {
                        *o = T::from_f32(a / sum);
                    }
                }
            },
        );
        Ok(out)
    }
}

/// The contiguous elements of a CPU tensor.
fn contiguous<'a, T>(data: &'a [T], layout: &Layout) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((from, to)) => Ok(&data[from..to]),
        None => candle_core::bail!("attention: inputs must be contiguous"),
    }
}

impl CustomOp3 for RowwiseAttention<'_> {
    fn name(&self) -> &'static str {
        "entroll-rowwise-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        lq: &Layout,
        k: &CpuStorage,
        lk: &Layout,
        v: &CpuStorage,
        lv: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let expected = self.queries.len() * self.heads * self.head_dim;
        if lq.shape().elem_count() != expected {
            candle_core::bail!("attention: queries of shape {:?}", lq.shape());
        }
        use CpuStorage as S;
        let out = match (q, k, v) {
            (S::F32(q), S::F32(k), S::F32(v)) => {
                S::F32(self.run(contiguous(q, lq)?, contiguous(k, lk)?, contiguous(v, lv)?)?)
            }
            (S::BF16(q), S::BF16(k), S::BF16(v)) => {
                S::BF16(self.run(contiguous(q, lq)?, contiguous(k, lk)?, contiguous(v, lv)?)?)
            }
            (S::F16(q), S::F16(k), S::F16(v)) => {
                S::F16(self.run(contiguous(q, lq)?, contiguous(k, lk)?, contiguous(v, lv)?)?)
            }
            _ => candle_core::bail!("attention: unsupported or mixed dtypes"),
        };
        Ok((
            out,
            Shape::from((self.queries.len(), self.heads * self.head_dim)),
        ))
    }
}

/// Attention through candle operations over gathered cache rows, for devices without the
/// row-wise kernel.
pub enum Gathered {
    /// A prompt chunk of `n` tokens at positions `start..start + n`: its keys' rows, position
    /// by position and head by head.
    Chunk {
        start: usize,
        n: usize,
        rows: Tensor,
        mask: Option<Tensor>,
    },
    /// One token for each of `n` sequences, attending to `max_len` rows each under `mask`:
    /// the rows `[max_len, n, kv_heads]` (beyond a sequence's length, its first row, masked).
    Decode {
        n: usize,
        max_len: usize,
        rows: Tensor,
        mask: Tensor,
    },
}

/// The cache row of `head` at position `p` through `table` (blocks of `size`), or an error
/// when the table does not reach `p`.
fn table_row(
    table: &[u32],
    p: usize,
    head: usize,
    size: usize,
    kv_heads: usize,
) -> candle_core::Result<u32> {
    match table.get(p / size) {
        Some(&b) => Ok(((b as usize * kv_heads + head) * size + p % size) as u32),
        None => candle_core::bail!("attention: position {p} is beyond its block table"),
    }
}

/// Cache rows of positions `0..len` through `table`, head by head.
fn table_rows(
    table: &[u32],
    len: usize,
    size: usize,
    kv_heads: usize,
) -> candle_core::Result<Vec<u32>> {
    (0..len)
        .flat_map(|p| (0..kv_heads).map(move |h| table_row(table, p, h, size, kv_heads)))
        .collect()
}

impl Gathered {
    fn plan(
        batch: &Batch,
        device: &Device,
        dtype: DType,
        size: usize,
        kv_heads: usize,
    ) -> candle_core::Result<Self> {
        Ok(match batch {
            Batch::Prompt {
                blocks,
                start,
                tokens,
            } => {
                let (start, n) = (*start, tokens.len());
                // Causal mask over `start + n` keys for the `n` queries.
                let mask = (n > 1).then(|| {
                    let keys = start + n;
                    let m: Vec<f32> = (0..n)
                        .flat_map(|i| {
                            (0..keys).map(move |j| {
                                if j <= start + i {
                                    0.0
                                } else {
                                    f32::NEG_INFINITY
                                }
                            })
                        })
                        .collect();
                    Tensor::from_vec(m, (n, keys), device).and_then(|t| t.to_dtype(dtype))
                });
                let rows = table_rows(blocks, start + n, size, kv_heads)?;
                Self::Chunk {
                    start,
                    n,
                    rows: Tensor::new(rows, device)?,
                    mask: mask.transpose()?,
                }
            }
            Batch::Decode { rows } => {
                let n = rows.len();
                let max_len = rows.iter().map(|r| r.position + 1).max().unwrap_or(0);
                let m: Vec<f32> = rows
                    .iter()
                    .flat_map(|r| {
                        (0..max_len).map(move |j| {
                            if j <= r.position {
                                0.0
                            } else {
                                f32::NEG_INFINITY
                            }
                        })
                    })
                    .collect();
                let mut index = Vec::with_capacity(max_len * n * kv_heads);
                for p in 0..max_len {
                    for r in rows {
                        let p = if p <= r.position { p } else { 0 };
                        for h in 0..kv_heads {
                            index.push(table_row(&r.blocks, p, h, size, kv_heads)?);
                        }
                    }
                }
                Self::Decode {
                    n,
                    max_len,
                    rows: Tensor::new(index, device)?,
                    mask: Tensor::from_vec(m, (n, 1, 1, max_len), device)?.to_dtype(dtype)?,
                }
            }
        })
    }

    fn attend(
        &self,
        layer: usize,
        q: &Tensor,
        cache: &KvCache,
        a: &Architecture,
    ) -> candle_core::Result<Tensor> {
        let groups = a.heads / a.kv_heads;
        let scale = 1.0 / (a.head_dim as f64).sqrt();
        match self {
            Self::Chunk {
                start,
                n,
                rows,
                mask,
            } => {
                let keys = start + n;
                // [keys · kv_heads, d] → [kv_heads, keys, d]
                let (k, v) = cache.gather(layer, rows)?;
                let heads_first = |t: Tensor| {
                    t.reshape((keys, a.kv_heads, a.head_dim))?
                        .transpose(0, 1)?
                        .contiguous()
                };
                let (k, v) = (heads_first(k)?, heads_first(v)?);
                // [n, heads, d] → [kv_heads, groups · n, d] (query head = kv head · groups + g)
                let q = q
                    .reshape((*n, a.kv_heads, groups, a.head_dim))?
                    .permute((1, 2, 0, 3))?
                    .contiguous()?
                    .reshape((a.kv_heads, groups * n, a.head_dim))?;
                let scores = (q.matmul(&k.t()?)? * scale)?;
                let scores = match mask {
                    Some(m) => scores
                        .reshape((a.kv_heads, groups, *n, keys))?
                        .broadcast_add(m)?
                        .reshape((a.kv_heads, groups * n, keys))?,
                    None => scores,
                };
                let probs = softmax_f32(&scores)?;
                probs
                    .matmul(&v)? // [kv_heads, groups · n, d]
                    .reshape((a.kv_heads, groups, *n, a.head_dim))?
                    .permute((2, 0, 1, 3))?
                    .contiguous()?
                    .reshape((*n, a.heads * a.head_dim))
            }
            Self::Decode {
                n,
                max_len,
                rows,
                mask,
            } => {
                let n = *n;
                // [max_len · n · kv_heads, d] → [n, kv_heads, max_len, d]
                let (k, v) = cache.gather(layer, rows)?;
                let to_heads = |t: Tensor| {
                    t.reshape((*max_len, n, a.kv_heads, a.head_dim))?
                        .permute((1, 2, 0, 3))?
                        .contiguous()
                };
                let (k, v) = (to_heads(k)?, to_heads(v)?);
                let q = q.reshape((n, a.kv_heads, groups, a.head_dim))?;
                let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask)?;
                let probs = softmax_f32(&scores)?;
                probs
                    .matmul(&v)? // [n, kv_heads, groups, d]
                    .reshape((n, a.heads * a.head_dim))
            }
        }
    }
}

/// Softmax over the last dimension, computed in `f32` whatever the activation dtype.
pub fn softmax_f32(scores: &Tensor) -> candle_core::Result<Tensor> {
    let dtype = scores.dtype();
    candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::native::batch::DecodeRow;
    use crate::engine::native::config::RopeStyle;
    use crate::engine::native::kv::CacheShape;

    fn arch(heads: usize, kv_heads: usize, head_dim: usize) -> Architecture {
        Architecture {
            family: "llama".into(),
            hidden: heads * head_dim,
            layers: 1,
            heads,
            kv_heads,
            head_dim,
            vocab: 16,
            rms_eps: 1e-6,
            rope_theta: 10_000.0,
            rope_style: RopeStyle::Halves,
            max_context: 256,
        }
    }

    /// Deterministic values in [-2, 2).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    }

    /// Positions per block in these tests.
    const SIZE: usize = 16;

    /// Sequence `seq`'s block table over `positions` positions: its blocks interleaved with
    /// the other three sequences' and out of order, so a wrong table entry reads another
    /// sequence's rows.
    fn table(seq: usize, positions: usize) -> Vec<u32> {
        (0..positions.div_ceil(SIZE))
            .map(|k| (k * 4 + (seq + k) % 4) as u32)
            .collect()
    }

    /// A cache for 4 sequences × 40 positions filled with random keys and values.
    fn filled_cache(a: &Architecture) -> KvCache {
        cache_of(a, 40, DType::F32, Access::Candle)
    }

    /// A cache for 4 sequences × `positions` in `dtype`, read as `access` says, every block
    /// filled with random keys and values.
    fn cache_of(a: &Architecture, positions: usize, dtype: DType, access: Access) -> KvCache {
        let blocks = 4 * positions.div_ceil(SIZE);
        let mut cache = empty(a, blocks, dtype, access);
        let n = blocks * SIZE;
        let random = |seed| {
            Tensor::from_vec(
                values(n * a.kv_width(), seed),
                (n, a.kv_width()),
                &Device::Cpu,
            )
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
        };
        fill(&mut cache, a, &random(1), &random(2));
        cache
    }

    fn empty(a: &Architecture, blocks: usize, dtype: DType, access: Access) -> KvCache {
        let shape = CacheShape {
            layers: 1,
            kv_heads: a.kv_heads,
            head_dim: a.head_dim,
            block_size: SIZE,
            max_blocks: blocks,
        };
        let mut cache = KvCache::new(shape, dtype, &Device::Cpu, access);
        cache.reserve(blocks).unwrap();
        cache
    }

    /// Writes every row of the cache: `k` and `v` are `[blocks · size, kv_width]`.
    fn fill(cache: &mut KvCache, a: &Architecture, k: &Tensor, v: &Tensor) {
        let rows = k.dim(0).unwrap() * a.kv_heads;
        let writes = cache.plan_writes((0..rows as u32).collect()).unwrap();
        cache.write(0, &writes, k, v).unwrap();
    }

    fn queries_tensor(a: &Architecture, n: usize, seed: u64) -> Tensor {
        Tensor::from_vec(
            values(n * a.heads * a.head_dim, seed),
            (n, a.heads, a.head_dim),
            &Device::Cpu,
        )
        .unwrap()
    }

    /// A cache's values again, read as `access` says (the same keys and values).
    fn reread(cache: &KvCache, a: &Architecture, access: Access) -> KvCache {
        let (k, v) = cache.layer(0).unwrap();
        let mut copy = empty(a, cache.capacity(), k.dtype(), access);
        let as_tokens = |t: &Tensor| {
            t.reshape((t.dim(0).unwrap() / a.kv_heads, a.kv_width()))
                .unwrap()
        };
        fill(&mut copy, a, &as_tokens(&k), &as_tokens(&v));
        copy
    }

    /// A decode step of `(sequence, position)` rows over tables reaching 300 positions.
    fn decode(rows: &[(usize, usize)]) -> Batch {
        Batch::Decode {
            rows: rows
                .iter()
                .map(|&(seq, position)| DecodeRow {
                    blocks: table(seq, 300),
                    position,
                    token: 0,
                })
                .collect(),
        }
    }

    /// A prompt chunk of `n` tokens of sequence `seq` from `start`.
    fn chunk(seq: usize, start: usize, n: usize) -> Batch {
        Batch::Prompt {
            blocks: table(seq, start + n),
            start,
            tokens: vec![0; n],
        }
    }

    fn attend_on(batch: &Batch, q: &Tensor, cache: &KvCache, a: &Architecture) -> Vec<Vec<f32>> {
        let plan =
            Attention::plan(batch, &Device::Cpu, q.dtype(), cache.access(), SIZE, a).unwrap();
        let out = plan.attend(0, q, cache, a).unwrap();
        out.to_dtype(DType::F32).unwrap().to_vec2().unwrap()
    }

    /// A decode step over sequences of lengths on both sides of the kernel's tiles of 128, and
    /// a prompt chunk that crosses one.
    fn tiled_batches() -> [Batch; 2] {
        [
            decode(&[(2, 299), (0, 127), (1, 128), (3, 0), (0, 255)]),
            chunk(1, 250, 5),
        ]
    }

    #[test]
    fn the_device_kernel_agrees_with_the_rowwise_kernel() {
        for (heads, kv_heads, d) in [(4, 2, 32), (9, 3, 64), (12, 2, 128), (16, 1, 16)] {
            let a = arch(heads, kv_heads, d);
            for dtype in [DType::F32, DType::BF16] {
                let rowwise = cache_of(&a, 300, dtype, Access::Candle);
                let kernel = reread(&rowwise, &a, Access::Kernels);
                let q = queries_tensor(&a, 5, 13).to_dtype(dtype).unwrap();
                // bf16 outputs agree to their rounding (values are within [-2, 2]).
                let tolerance = if dtype == DType::F32 { 2e-5 } else { 2e-2 };
                for batch in tiled_batches() {
                    let (x, y) = (
                        attend_on(&batch, &q, &rowwise, &a),
                        attend_on(&batch, &q, &kernel, &a),
                    );
                    for (x, y) in x.iter().flatten().zip(y.iter().flatten()) {
                        assert!(
                            (x - y).abs() <= tolerance,
                            "{heads}/{kv_heads}/{d} {dtype:?} {batch:?}: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_device_kernel_gives_a_token_the_same_bits_in_any_batch() {
        let a = arch(12, 2, 128);
        let cache = cache_of(&a, 300, DType::F32, Access::Kernels);
        let q = queries_tensor(&a, 4, 7);
        let mine = q.narrow(0, 0, 1).unwrap();
        let alone = attend_on(&decode(&[(2, 260)]), &mine, &cache, &a);
        let crowd = attend_on(
            &decode(&[(2, 260), (0, 3), (1, 299), (3, 0)]),
            &q,
            &cache,
            &a,
        );
        assert_eq!(alone[0], crowd[0]);
        let chunk_q = Tensor::cat(&[&q.narrow(0, 1, 3).unwrap(), &mine], 0).unwrap();
        assert_eq!(
            alone[0],
            attend_on(&chunk(2, 257, 4), &chunk_q, &cache, &a)[3]
        );
        // A position beyond the table is refused, not read.
        let plan = Attention::plan(
            &decode(&[(1, 304)]),
            &Device::Cpu,
            DType::F32,
            Access::Kernels,
            SIZE,
            &a,
        )
        .unwrap();
        assert!(matches!(plan, Attention::Kernel(..)));
        assert!(plan.attend(0, &mine, &cache, &a).is_err());
    }

    #[test]
    fn a_token_gets_the_same_bits_alone_in_a_batch_or_in_a_prompt_chunk() {
        for (heads, kv_heads, d) in [(4, 2, 32), (9, 3, 64), (2, 2, 12)] {
            let a = arch(heads, kv_heads, d);
            let cache = filled_cache(&a);
            // Sequence 2 at position 30, with different neighbours and as a chunk's last row.
            let q = queries_tensor(&a, 4, 7);
            let mine = q.narrow(0, 0, 1).unwrap();
            let alone = attend_on(&decode(&[(2, 30)]), &mine, &cache, &a);
            let crowd = attend_on(&decode(&[(2, 30), (0, 3), (1, 39), (3, 0)]), &q, &cache, &a);
            assert_eq!(
                alone[0], crowd[0],
                "{heads}/{kv_heads}/{d}: decode neighbours"
            );
            let chunk_q = Tensor::cat(&[&q.narrow(0, 1, 3).unwrap(), &mine], 0).unwrap();
            let chunk = attend_on(&chunk(2, 27, 4), &chunk_q, &cache, &a);
            assert_eq!(alone[0], chunk[3], "{heads}/{kv_heads}/{d}: prompt chunk");
        }
    }

    #[test]
    fn the_kernel_agrees_with_candle_operations_on_gathered_rows() {
        let a = arch(4, 2, 32);
        let cache = filled_cache(&a);
        let q = queries_tensor(&a, 4, 11);
        // A decode step over sequences of other lengths, and a prompt chunk (causal within it).
        for batch in [decode(&[(2, 30), (0, 3), (1, 39), (3, 0)]), chunk(1, 5, 4)] {
            let kernel = attend_on(&batch, &q, &cache, &a);
            let gathered =
                Gathered::plan(&batch, &Device::Cpu, DType::F32, SIZE, a.kv_heads).unwrap();
            let reference: Vec<Vec<f32>> = gathered
                .attend(0, &q, &cache, &a)
                .unwrap()
                .to_vec2()
                .unwrap();
            for (x, y) in kernel.iter().flatten().zip(reference.iter().flatten()) {
                assert!((x - y).abs() < 1e-5, "{batch:?}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn a_position_beyond_the_cache_is_an_error_not_a_read_out_of_bounds() {
        let a = arch(4, 2, 32);
        let cache = filled_cache(&a);
        let q = queries_tensor(&a, 1, 3);
        // The cache holds 12 blocks: a table naming block 12 is refused, as is a position
        // beyond the table.
        let beyond = Batch::Decode {
            rows: vec![DecodeRow {
                blocks: vec![3, 12],
                position: 17,
                token: 0,
            }],
        };
        let short = Batch::Decode {
            rows: vec![DecodeRow {
                blocks: vec![3],
                position: 16,
                token: 0,
            }],
        };
        for batch in [beyond, short] {
            for access in [Access::Candle, Access::Kernels] {
                let cache = reread(&cache, &a, access);
                let plan = Attention::plan(&batch, &Device::Cpu, DType::F32, access, SIZE, &a);
                assert!(
                    plan.and_then(|p| p.attend(0, &q, &cache, &a)).is_err(),
                    "{access:?}"
                );
            }
        }
    }

    #[test]
    fn dot_products_are_exact_on_small_integers() {
        let a: Vec<f32> = (0..19).map(|x| x as f32).collect();
        let b: Vec<f32> = (0..19).map(|x| (x % 3) as f32).collect();
        let expected: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert_eq!(dot(&a, &b), expected);
    }
}
