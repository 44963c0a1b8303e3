//! The native engine's KV cache: per layer, one tensor of two halves, keys then values, each
//! half blocks of `[kv_heads, size, head_dim]` stored as rows of `head_dim`: row
//! `(block · kv_heads + head) · size + offset` of a half holds one head of one position. One
//! tensor, so that a layer's new keys and values are written by one launch ([`CopyRows`] with
//! two sources); attention reads the halves as views.
//!
//! Which block holds which positions of which sequence is the batcher's business (block
//! tables, [`super::plan`]; counts, [`super::blocks`]); this module holds the memory. One
//! block's keys (and values) for one key/value head are `size · head_dim` contiguous elements,
//! so attention reads a block of a head in one sweep. With entroll's device kernels
//! ([`Access::Kernels`]) attention reads the blocks in place and writes are one parallel row
//! copy per layer; otherwise candle's scatter writes and gathered reads. The
//! tensors grow (by doubling, up to the block limit) only when a block beyond them is handed
//! out, so memory follows the blocks in use, not the longest sequence times the batch.

use candle_core::{DType, Device, Tensor};

use super::kernel_attention::CopyRows;

/// How the cache is written and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// entroll's device kernels: attention in place, writes and copies by [`CopyRows`] (on the
    /// CPU, the kernels' harness).
    Kernels,
    /// candle's operations: scatter writes, gathered reads (on the CPU, the row-wise kernel).
    Candle,
}

/// Where one forward's new keys and values go, prepared once for every layer.
pub enum Writes {
    /// candle's scatter, with its index `[rows, head_dim]`.
    Scatter(Tensor),
    /// The row copy: new row `i` to row `to[i]` of each half (keys, values).
    Copy(CopyRows),
}

/// The shape of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheShape {
    /// Layers.
    pub layers: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// Positions per block.
    pub block_size: usize,
    /// Most blocks.
    pub max_blocks: usize,
}

/// Keys and values of every layer, in blocks.
pub struct KvCache {
    /// One tensor per layer, `[2 · rows, head_dim]`: keys' rows, then values' (as many); or
    /// none while no block is held (CUDA cannot allocate 0 bytes).
    layers: Vec<Tensor>,
    shape: CacheShape,
    /// Blocks the tensors hold.
    capacity: usize,
    dtype: DType,
    device: Device,
    access: Access,
}

impl KvCache {
    /// An empty cache of `shape` on `device`.
    pub fn new(shape: CacheShape, dtype: DType, device: &Device, access: Access) -> Self {
        Self {
            layers: Vec::new(),
            shape,
            capacity: 0,
            dtype,
            device: device.clone(),
            access,
        }
    }

    /// How the cache is written and read.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Positions per block.
    pub fn block_size(&self) -> usize {
        self.shape.block_size
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.shape.kv_heads
    }

    /// Blocks the tensors hold now.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Rows (of `head_dim`) per block.
    fn block_rows(&self) -> usize {
        self.shape.kv_heads * self.shape.block_size
    }

    /// Rows of each half (keys, values) now.
    fn half_rows(&self) -> usize {
        self.capacity * self.block_rows()
    }

    /// Grows the tensors to hold blocks `0..blocks`, keeping what they hold.
    pub fn reserve(&mut self, blocks: usize) -> candle_core::Result<()> {
        if blocks <= self.capacity {
            return Ok(());
        }
        if blocks > self.shape.max_blocks {
            candle_core::bail!(
                "{blocks} cache blocks are beyond the limit of {}",
                self.shape.max_blocks
            );
        }
        let capacity = blocks
            .max(self.capacity * 2)
            .max(4)
            .min(self.shape.max_blocks);
        let (rows, old_rows) = (capacity * self.block_rows(), self.half_rows());
        let grow = |old: Option<&Tensor>| -> candle_core::Result<Tensor> {
            let grown = Tensor::zeros((2 * rows, self.shape.head_dim), self.dtype, &self.device)?;
            if let Some(old) = old {
                grown.slice_set(&old.narrow(0, 0, old_rows)?, 0, 0)?;
                grown.slice_set(&old.narrow(0, old_rows, old_rows)?, 0, rows)?;
            }
            Ok(grown)
        };
        let layers = (0..self.shape.layers)
            .map(|l| grow(self.layers.get(l)))
            .collect::<candle_core::Result<_>>()?;
        (self.layers, self.capacity) = (layers, capacity);
        Ok(())
    }

    /// Frees the tensors (capacity 0), for when no block is held.
    pub fn clear(&mut self) {
        self.layers.clear();
        self.capacity = 0;
    }

    /// The row of `head` at `offset` of `block`.
    pub fn row(&self, block: u32, head: usize, offset: usize) -> usize {
        (block as usize * self.shape.kv_heads + head) * self.shape.block_size + offset
    }

    /// Copies positions `0..rows` of block `from` into block `to`, every head of every layer
    /// (a shared block copied for the sequence about to write into it): per layer, one gather
    /// of the block's key and value rows and one write of them.
    pub fn copy_block(&mut self, from: u32, to: u32, rows: usize) -> candle_core::Result<()> {
        if rows == 0 {
            return Ok(());
        }
        let half = self.half_rows() as u32;
        let pairs = (0..self.shape.kv_heads).flat_map(|h| (0..rows).map(move |o| (h, o)));
        let rows_of = |block: u32| -> Vec<u32> {
            let keys: Vec<u32> = pairs
                .clone()
                .map(|(h, o)| self.row(block, h, o) as u32)
                .collect();
            let values = keys.iter().map(|r| r + half);
            keys.iter().copied().chain(values).collect()
        };
        let source = Tensor::new(rows_of(from), &self.device)?;
        let writes = self.plan_writes(rows_of(to))?;
        for t in &self.layers {
            let picked = t.index_select(&source, 0)?;
            match &writes {
                Writes::Copy(copy) => t.inplace_op2(&picked, copy)?,
                Writes::Scatter(index) => t.scatter_set(index, &picked, 0)?,
            }
        }
        Ok(())
    }

    /// Keys and values of layer `layer`, `[rows, head_dim]` each: the halves of its tensor, as
    /// views (the capacity must be positive).
    pub fn layer(&self, layer: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let (t, half) = (&self.layers[layer], self.half_rows());
        Ok((t.narrow(0, 0, half)?, t.narrow(0, half, half)?))
    }

    /// Prepares writing rows `0..to.len()` of a source to rows `to`: a forward's keys and
    /// values (one row per head of each token, [`super::batch::Batch::writes`]) to rows `to` of
    /// each half ([`KvCache::write`]); a block's gathered rows to rows of a layer's tensor.
    pub fn plan_writes(&self, to: Vec<u32>) -> candle_core::Result<Writes> {
        let n = to.len();
        if n == 0 {
            candle_core::bail!("no cache rows to write");
        }
        Ok(match self.access {
            Access::Kernels => {
                Writes::Copy(CopyRows::new((0..n as u32).collect(), to, &self.device)?)
            }
            Access::Candle => {
                let index = Tensor::from_vec(to, (n, 1), &self.device)?
                    .broadcast_as((n, self.shape.head_dim))?
                    .contiguous()?;
                Writes::Scatter(index)
            }
        })
    }

    /// Writes `keys` and `values` (`[n, kv_heads · head_dim]` each) of layer `layer` where
    /// `writes` (from [`KvCache::plan_writes`], `n · kv_heads` rows) says. The row copy writes
    /// both in one launch and reads them where they lie (lines of a stacked projection's output
    /// included); candle's scatter needs them contiguous first.
    pub fn write(
        &mut self,
        layer: usize,
        writes: &Writes,
        keys: &Tensor,
        values: &Tensor,
    ) -> candle_core::Result<()> {
        let (keys, values) = (keys.to_dtype(self.dtype)?, values.to_dtype(self.dtype)?);
        match writes {
            Writes::Copy(copy) => self.layers[layer].inplace_op3(&keys, &values, copy),
            Writes::Scatter(index) => {
                let rows = |t: &Tensor| -> candle_core::Result<Tensor> {
                    let n = t.dim(0)?;
                    t.contiguous()?
                        .reshape((n * self.shape.kv_heads, self.shape.head_dim))
                };
                let (k, v) = self.layer(layer)?;
                k.scatter_set(index, &rows(&keys)?, 0)?;
                v.scatter_set(index, &rows(&values)?, 0)
            }
        }
    }

    /// Rows `rows` (`u32`) of layer `layer`'s keys and values: `[rows, head_dim]` each.
    pub fn gather(&self, layer: usize, rows: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (k, v) = self.layer(layer)?;
        Ok((k.index_select(rows, 0)?, v.index_select(rows, 0)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: CacheShape = CacheShape {
        layers: 2,
        kv_heads: 2,
        head_dim: 3,
        block_size: 4,
        max_blocks: 64,
    };

    /// The value every element of (layer, block, head, offset) gets.
    fn mark(layer: usize, block: u32, head: usize, offset: usize) -> f32 {
        (layer * 10_000 + block as usize * 100 + head * 10 + offset) as f32
    }

    /// Writes positions `offsets` of `block` in `layer`, as a forward's rows would.
    fn write(cache: &mut KvCache, layer: usize, block: u32, offsets: std::ops::Range<usize>) {
        let d = SHAPE.head_dim;
        let to: Vec<u32> = offsets
            .clone()
            .flat_map(|o| (0..SHAPE.kv_heads).map(move |h| (o, h)))
            .map(|(o, h)| cache.row(block, h, o) as u32)
            .collect();
        let data: Vec<f32> = offsets
            .clone()
            .flat_map(|o| (0..SHAPE.kv_heads).flat_map(move |h| vec![mark(layer, block, h, o); d]))
            .collect();
        let n = offsets.len();
        let t = Tensor::from_vec(data, (n, SHAPE.kv_heads * d), &Device::Cpu).unwrap();
        let writes = cache.plan_writes(to).unwrap();
        cache
            .write(layer, &writes, &t, &(&t + 0.5).unwrap())
            .unwrap();
    }

    /// The first element of each row of (layer, block, head), offsets 0..size.
    fn read(cache: &KvCache, layer: usize, block: u32, head: usize) -> (Vec<f32>, Vec<f32>) {
        let rows: Vec<u32> = (0..SHAPE.block_size)
            .map(|o| cache.row(block, head, o) as u32)
            .collect();
        let (k, v) = cache
            .gather(layer, &Tensor::new(rows, &Device::Cpu).unwrap())
            .unwrap();
        let first = |t: Tensor| {
            t.narrow(1, 0, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        (first(k), first(v))
    }

    /// Both ways of writing: the device kernels' row copy (its CPU harness) and candle's
    /// scatter.
    const ACCESS: [Access; 2] = [Access::Kernels, Access::Candle];

    #[test]
    fn rows_go_to_their_block_head_and_offset_and_survive_growth() {
        for access in ACCESS {
            let mut cache = KvCache::new(SHAPE, DType::F32, &Device::Cpu, access);
            cache.reserve(2).unwrap();
            assert_eq!(cache.capacity(), 4);
            write(&mut cache, 1, 3, 0..4);
            write(&mut cache, 1, 0, 1..3);
            // Growing past the first capacity keeps what was written.
            cache.reserve(9).unwrap();
            assert_eq!(cache.capacity(), 9);
            write(&mut cache, 1, 8, 2..3);
            for head in 0..2 {
                let (k, v) = read(&cache, 1, 3, head);
                let expected: Vec<f32> = (0..4).map(|o| mark(1, 3, head, o)).collect();
                assert_eq!(k, expected, "{access:?}");
                assert_eq!(v, expected.iter().map(|x| x + 0.5).collect::<Vec<_>>());
                let (k, _) = read(&cache, 1, 0, head);
                assert_eq!(k, vec![0.0, mark(1, 0, head, 1), mark(1, 0, head, 2), 0.0]);
                assert_eq!(read(&cache, 1, 8, head).0[2], mark(1, 8, head, 2));
            }
            // Layer 0 was never written.
            assert!(read(&cache, 0, 3, 1).0.iter().all(|&x| x == 0.0));
            assert!(cache.reserve(65).is_err());
        }
    }

    /// Every element of layer `layer`'s keys and values.
    fn everything(cache: &KvCache, layer: usize) -> (Vec<f32>, Vec<f32>) {
        let (k, v) = cache.layer(layer).unwrap();
        let all = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (all(k), all(v))
    }

    #[test]
    fn keys_and_values_within_a_stacked_projections_lines_are_written_as_contiguous_ones_are() {
        // A stacked projection's output: each token's line holds its query, key and value
        // parts; the keys and values are views with the line's stride. On a GPU the forward
        // writes contiguous keys (RoPE's output) beside such values.
        let (n, q_width, kv_width) = (5, 7, SHAPE.kv_heads * SHAPE.head_dim);
        let line = q_width + 2 * kv_width;
        let data: Vec<f32> = (0..n * line).map(|i| i as f32 * 0.25 - 3.0).collect();
        let y = Tensor::from_vec(data, (n, line), &Device::Cpu).unwrap();
        let (k, v) = (
            y.narrow(1, q_width, kv_width).unwrap(),
            y.narrow(1, q_width + kv_width, kv_width).unwrap(),
        );
        assert!(!k.is_contiguous() && !v.is_contiguous());
        // Rows scattered over blocks 0..4, in an order unlike the tokens'.
        let to: Vec<u32> = (0..(n * SHAPE.kv_heads) as u32)
            .map(|r| (r * 7 + 3) % 32)
            .collect();
        let written = |access: Access, k: &Tensor, v: &Tensor| {
            let mut cache = KvCache::new(SHAPE, DType::F32, &Device::Cpu, access);
            cache.reserve(4).unwrap();
            let writes = cache.plan_writes(to.clone()).unwrap();
            cache.write(1, &writes, k, v).unwrap();
            everything(&cache, 1)
        };
        // The oracle: candle's scatter of contiguous copies.
        let expected = written(
            Access::Candle,
            &k.contiguous().unwrap(),
            &v.contiguous().unwrap(),
        );
        assert!(expected.0.iter().any(|&x| x != 0.0) && expected.0 != expected.1);
        let (ck, cv) = (k.contiguous().unwrap(), v.contiguous().unwrap());
        for (keys, values) in [(&k, &v), (&ck, &v), (&k, &cv)] {
            assert_eq!(written(Access::Kernels, keys, values), expected);
            assert_eq!(written(Access::Candle, keys, values), expected);
        }
    }

    #[test]
    fn writes_the_row_copy_cannot_place_are_refused() {
        let mut cache = KvCache::new(SHAPE, DType::F32, &Device::Cpu, Access::Kernels);
        cache.reserve(1).unwrap();
        let half = cache.half_rows() as u32;
        let t = Tensor::ones(
            (2, SHAPE.kv_heads * SHAPE.head_dim),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        // A row of the values' half named as a row of a half.
        let writes = cache.plan_writes(vec![0, 1, 2, half]).unwrap();
        let error = cache.write(0, &writes, &t, &t).unwrap_err().to_string();
        assert!(error.contains("beyond"), "{error}");
        // Keys read down a column: not lines of whole rows.
        let writes = cache.plan_writes(vec![0, 1, 2, 3]).unwrap();
        let columns = Tensor::ones(
            (SHAPE.kv_heads * SHAPE.head_dim, 2),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
        .t()
        .unwrap();
        let error = cache
            .write(0, &writes, &columns, &t)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not lines of rows"), "{error}");
        // Nothing was written by the refused writes.
        let (k, v) = everything(&cache, 0);
        assert!(k.iter().chain(&v).all(|&x| x == 0.0));
    }

    #[test]
    fn a_block_copy_copies_its_filled_rows_of_every_head_and_layer() {
        for access in ACCESS {
            let mut cache = KvCache::new(SHAPE, DType::F32, &Device::Cpu, access);
            cache.reserve(4).unwrap();
            for layer in 0..2 {
                write(&mut cache, layer, 1, 0..4);
            }
            cache.copy_block(1, 2, 3).unwrap();
            for layer in 0..2 {
                for head in 0..2 {
                    let (k, v) = read(&cache, layer, 2, head);
                    let mut expected: Vec<f32> = (0..3).map(|o| mark(layer, 1, head, o)).collect();
                    expected.push(0.0);
                    assert_eq!(k, expected, "{access:?}");
                    assert_eq!(
                        v[..3],
                        expected[..3].iter().map(|x| x + 0.5).collect::<Vec<_>>()
                    );
                }
            }
            cache.clear();
            assert_eq!(cache.capacity(), 0);
            // Usable again after a clear.
            cache.reserve(1).unwrap();
            write(&mut cache, 0, 0, 0..1);
            assert_eq!(read(&cache, 0, 0, 1).0[0], mark(0, 0, 1, 0));
        }
    }
}
