//! The native engine's KV cache: per layer, one key and one value tensor of
//! `[capacity · slots, kv_width]` rows, row `position · slots + slot`.
//!
//! Position-major rows make the first `L` positions of every slot one contiguous prefix, so a
//! decode step reads `[L, slots, kv_width]` without copying and gathers its slots from there;
//! writes are one in-place scatter per layer. The capacity grows (by doubling, up to the model's
//! context) only when a sequence needs it, so memory follows the longest live sequence.

use candle_core::{DType, Device, Tensor};

/// Keys and values of every layer for a fixed number of sequence slots.
pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    slots: usize,
    width: usize,
    capacity: usize,
    max_capacity: usize,
    dtype: DType,
    device: Device,
}

impl KvCache {
    /// An empty cache for `slots` sequences of up to `max_capacity` positions.
    pub fn new(
        layers: usize,
        slots: usize,
        width: usize,
        max_capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let mut cache = Self {
            keys: Vec::with_capacity(layers),
            values: Vec::with_capacity(layers),
            slots,
            width,
            capacity: 0,
            max_capacity,
            dtype,
            device: device.clone(),
        };
        for _ in 0..layers {
            cache.keys.push(cache.zeros(0)?);
            cache.values.push(cache.zeros(0)?);
        }
        Ok(cache)
    }

    fn zeros(&self, capacity: usize) -> candle_core::Result<Tensor> {
        Tensor::zeros(
            (capacity * self.slots, self.width),
            self.dtype,
            &self.device,
        )
    }

    /// Grows the cache so that every slot holds `positions` positions.
    pub fn reserve(&mut self, positions: usize) -> candle_core::Result<()> {
        if positions <= self.capacity {
            return Ok(());
        }
        if positions > self.max_capacity {
            candle_core::bail!(
                "position {positions} is beyond the model's context of {}",
                self.max_capacity
            );
        }
        let capacity = positions
            .max(self.capacity * 2)
            .max(64)
            .min(self.max_capacity);
        for t in self.keys.iter_mut().chain(self.values.iter_mut()) {
            let grown = Tensor::zeros(
                (capacity * self.slots, self.width),
                self.dtype,
                &self.device,
            )?;
            if t.dim(0)? > 0 {
                grown.slice_set(t, 0, 0)?;
            }
            *t = grown;
        }
        self.capacity = capacity;
        Ok(())
    }

    /// Frees every row (the capacity returns to 0), for when no sequence is running.
    pub fn clear(&mut self) -> candle_core::Result<()> {
        for t in self.keys.iter_mut().chain(self.values.iter_mut()) {
            *t = Tensor::zeros((0, self.width), self.dtype, &self.device)?;
        }
        self.capacity = 0;
        Ok(())
    }

    /// Copies positions `0..len` of slot `from` into slot `to`, in every layer.
    pub fn copy_prefix(&mut self, from: usize, to: usize, len: usize) -> candle_core::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let source: Vec<u32> = (0..len).map(|p| self.row(from, p) as u32).collect();
        let source = Tensor::new(source, &self.device)?;
        let target: Vec<usize> = (0..len).map(|p| self.row(to, p)).collect();
        let target = self.row_index(&target, &self.device)?;
        for t in self.keys.iter().chain(self.values.iter()) {
            t.scatter_set(&target, &t.index_select(&source, 0)?, 0)?;
        }
        Ok(())
    }

    /// The row of `slot` at `position`.
    pub fn row(&self, slot: usize, position: usize) -> usize {
        position * self.slots + slot
    }

    /// The scatter index for writing `rows`: `[rows.len(), kv_width]`.
    pub fn row_index(&self, rows: &[usize], device: &Device) -> candle_core::Result<Tensor> {
        let n = rows.len();
        let index: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        Tensor::from_vec(index, (n, 1), device)?
            .broadcast_as((n, self.width))?
            .contiguous()
    }

    /// Writes `keys` and `values` (`[n, kv_width]` each) of layer `layer` into the rows of
    /// `index` (from [`KvCache::row_index`]); when the index lists `c · n` rows, the same
    /// `n` rows go to each of the `c` row groups.
    pub fn write(
        &mut self,
        layer: usize,
        index: &Tensor,
        keys: &Tensor,
        values: &Tensor,
    ) -> candle_core::Result<()> {
        let total = index.dim(0)?;
        let n = keys.dim(0)?;
        let repeat = |t: &Tensor| -> candle_core::Result<Tensor> {
            let t = t.to_dtype(self.dtype)?;
            if total == n {
                t.contiguous()
            } else {
                Tensor::cat(&vec![&t; total / n], 0)
            }
        };
        self.keys[layer].scatter_set(index, &repeat(keys)?, 0)?;
        self.values[layer].scatter_set(index, &repeat(values)?, 0)?;
        Ok(())
    }

    /// Keys and values of positions `0..len` of one slot: `[len, kv_width]` each.
    pub fn slot_rows(
        &self,
        layer: usize,
        slot: usize,
        len: usize,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let pick = |t: &Tensor| {
            t.narrow(0, 0, len * self.slots)?
                .reshape((len, self.slots, self.width))?
                .narrow(1, slot, 1)?
                .contiguous()?
                .reshape((len, self.width))
        };
        Ok((pick(&self.keys[layer])?, pick(&self.values[layer])?))
    }

    /// Keys and values of positions `0..len` of the slots in `slots` (`u32`, `[n]`):
    /// `[len, n, kv_width]` each.
    pub fn gather(
        &self,
        layer: usize,
        slots: &Tensor,
        len: usize,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let pick = |t: &Tensor| {
            t.narrow(0, 0, len * self.slots)?
                .reshape((len, self.slots, self.width))?
                .index_select(slots, 1)
        };
        Ok((pick(&self.keys[layer])?, pick(&self.values[layer])?))
    }
}
