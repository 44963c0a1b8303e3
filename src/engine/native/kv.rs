//! The native engine's KV cache: per layer, one key and one value tensor of
//! `[capacity · slots, kv_width]` rows, row `position · slots + slot`.
//!
//! Position-major rows make the first `L` positions of every slot one contiguous prefix. With
//! entroll's device kernels ([`Access::Kernels`]) attention reads the rows in place and writes
//! are one parallel row copy per layer ([`CopyRows`]); otherwise a decode step gathers its
//! slots' rows with candle's operations and writes are candle's scatter. The capacity grows (by
//! doubling, up to the model's context) only when a sequence needs it, so memory follows the
//! longest live sequence.

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
    /// candle's scatter, with its index `[rows, kv_width]`.
    Scatter(Tensor),
    /// The row copy: new row `i mod n` to cache row `to[i]`.
    Copy(CopyRows),
}

/// Keys and values of every layer for a fixed number of sequence slots.
pub struct KvCache {
    /// One tensor per layer, or none while the capacity is 0 (CUDA cannot allocate 0 bytes).
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    layers: usize,
    slots: usize,
    width: usize,
    capacity: usize,
    max_capacity: usize,
    dtype: DType,
    device: Device,
    access: Access,
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
        access: Access,
    ) -> Self {
        Self {
            keys: Vec::new(),
            values: Vec::new(),
            layers,
            slots,
            width,
            capacity: 0,
            max_capacity,
            dtype,
            device: device.clone(),
            access,
        }
    }

    /// How the cache is written and read.
    pub fn access(&self) -> Access {
        self.access
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
        let grow = |old: Option<&Tensor>| -> candle_core::Result<Tensor> {
            let grown = Tensor::zeros(
                (capacity * self.slots, self.width),
                self.dtype,
                &self.device,
            )?;
            if let Some(old) = old {
                grown.slice_set(old, 0, 0)?;
            }
            Ok(grown)
        };
        let keys = (0..self.layers)
            .map(|l| grow(self.keys.get(l)))
            .collect::<candle_core::Result<_>>()?;
        let values = (0..self.layers)
            .map(|l| grow(self.values.get(l)))
            .collect::<candle_core::Result<_>>()?;
        (self.keys, self.values, self.capacity) = (keys, values, capacity);
        Ok(())
    }

    /// Frees every row (the capacity returns to 0), for when no sequence is running.
    pub fn clear(&mut self) {
        self.keys.clear();
        self.values.clear();
        self.capacity = 0;
    }

    /// Copies positions `0..len` of slot `from` into slot `to`, in every layer.
    pub fn copy_prefix(&mut self, from: usize, to: usize, len: usize) -> candle_core::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let source: Vec<u32> = (0..len).map(|p| self.row(from, p) as u32).collect();
        let source = Tensor::new(source, &self.device)?;
        let target: Vec<usize> = (0..len).map(|p| self.row(to, p)).collect();
        let writes = self.plan_writes(&target, len)?;
        for t in self.keys.iter().chain(self.values.iter()) {
            Self::put(t, &writes, &t.index_select(&source, 0)?)?;
        }
        Ok(())
    }

    /// Keys and values of layer `layer`, `[capacity · slots, kv_width]` each (the capacity
    /// must be positive).
    pub fn layer(&self, layer: usize) -> (&Tensor, &Tensor) {
        (&self.keys[layer], &self.values[layer])
    }

    /// Sequence slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The row of `slot` at `position`.
    pub fn row(&self, slot: usize, position: usize) -> usize {
        position * self.slots + slot
    }

    /// Prepares writing `n` new rows to the cache rows `rows` (`c · n` of them: the same `n`
    /// rows go to each of the `c` row groups, a prompt chunk's rows to its copy slots).
    pub fn plan_writes(&self, rows: &[usize], n: usize) -> candle_core::Result<Writes> {
        if n == 0 || !rows.len().is_multiple_of(n) {
            candle_core::bail!("{} cache rows for {n} new rows", rows.len());
        }
        let to: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        Ok(match self.access {
            Access::Kernels => Writes::Copy(CopyRows::new(
                (0..rows.len()).map(|i| (i % n) as u32).collect(),
                to,
                &self.device,
            )?),
            Access::Candle => {
                let index = Tensor::from_vec(to, (rows.len(), 1), &self.device)?
                    .broadcast_as((rows.len(), self.width))?
                    .contiguous()?;
                Writes::Scatter(index)
            }
        })
    }

    /// Writes `keys` and `values` (`[n, kv_width]` each) of layer `layer` where `writes`
    /// (from [`KvCache::plan_writes`]) says.
    pub fn write(
        &mut self,
        layer: usize,
        writes: &Writes,
        keys: &Tensor,
        values: &Tensor,
    ) -> candle_core::Result<()> {
        Self::put(&self.keys[layer], writes, &keys.to_dtype(self.dtype)?)?;
        Self::put(&self.values[layer], writes, &values.to_dtype(self.dtype)?)
    }

    /// Writes the rows of `new` into `tensor` as `writes` says.
    fn put(tensor: &Tensor, writes: &Writes, new: &Tensor) -> candle_core::Result<()> {
        let new = new.contiguous()?;
        match writes {
            Writes::Copy(copy) => tensor.inplace_op2(&new, copy),
            Writes::Scatter(index) => {
                let (total, n) = (index.dim(0)?, new.dim(0)?);
                if total == n {
                    tensor.scatter_set(index, &new, 0)
                } else {
                    tensor.scatter_set(index, &Tensor::cat(&vec![&new; total / n], 0)?, 0)
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A row whose every entry encodes (layer, slot, position).
    fn row(layer: usize, slot: usize, position: usize, width: usize) -> Vec<f32> {
        vec![(layer * 10_000 + slot * 1_000 + position) as f32; width]
    }

    fn write(cache: &mut KvCache, layer: usize, slot: usize, positions: std::ops::Range<usize>) {
        let width = cache.width;
        let rows: Vec<usize> = positions.clone().map(|p| cache.row(slot, p)).collect();
        let writes = cache.plan_writes(&rows, rows.len()).unwrap();
        let data: Vec<f32> = positions.flat_map(|p| row(layer, slot, p, width)).collect();
        let t = Tensor::from_vec(data, (rows.len(), width), &Device::Cpu).unwrap();
        cache
            .write(layer, &writes, &t, &(&t + 0.5).unwrap())
            .unwrap();
    }

    fn first_column(t: &Tensor) -> Vec<f32> {
        t.narrow(t.rank() - 1, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Both ways of writing: the device kernels' row copy (its CPU harness) and candle's
    /// scatter.
    const ACCESS: [Access; 2] = [Access::Kernels, Access::Candle];

    #[test]
    fn rows_survive_growth_and_are_read_back_per_slot() {
        for access in ACCESS {
            rows_survive_growth(access);
        }
    }

    fn rows_survive_growth(access: Access) {
        let mut cache = KvCache::new(2, 3, 4, 1_000, DType::F32, &Device::Cpu, access);
        cache.reserve(10).unwrap();
        write(&mut cache, 1, 2, 0..10);
        write(&mut cache, 1, 0, 0..5);
        // Growing past the first capacity keeps what was written.
        cache.reserve(300).unwrap();
        assert!(cache.capacity >= 300);
        write(&mut cache, 1, 2, 10..300);
        let (k, v) = cache.slot_rows(1, 2, 300).unwrap();
        let expected: Vec<f32> = (0..300).map(|p| (10_000 + 2_000 + p) as f32).collect();
        assert_eq!(first_column(&k), expected);
        assert_eq!(
            first_column(&v),
            expected.iter().map(|x| x + 0.5).collect::<Vec<_>>()
        );
        // Layer 0 was never written.
        assert!(first_column(&cache.slot_rows(0, 2, 300).unwrap().0)
            .iter()
            .all(|&x| x == 0.0));
        assert!(cache.reserve(1_001).is_err());
    }

    #[test]
    fn a_chunk_s_rows_reach_every_copy_slot() {
        for access in ACCESS {
            let mut cache = KvCache::new(1, 3, 2, 64, DType::F32, &Device::Cpu, access);
            cache.reserve(4).unwrap();
            // Four new rows to positions 0..4 of slots 0 and 2; slot 1 untouched.
            let rows: Vec<usize> = [0, 2]
                .iter()
                .flat_map(|&slot| (0..4).map(move |p| p * 3 + slot))
                .collect();
            let values: Vec<f32> = (0..8).map(|x| x as f32).collect();
            let new = Tensor::from_vec(values, (4, 2), &Device::Cpu).unwrap();
            let writes = cache.plan_writes(&rows, 4).unwrap();
            cache.write(0, &writes, &new, &new).unwrap();
            for slot in [0, 2] {
                let (k, v) = cache.slot_rows(0, slot, 4).unwrap();
                assert_eq!(first_column(&k), [0.0, 2.0, 4.0, 6.0], "{access:?}");
                assert_eq!(first_column(&v), [0.0, 2.0, 4.0, 6.0], "{access:?}");
            }
            let (untouched, _) = cache.slot_rows(0, 1, 4).unwrap();
            assert!(first_column(&untouched).iter().all(|&x| x == 0.0));
            assert!(cache.plan_writes(&rows, 3).is_err());
        }
    }

    #[test]
    fn gather_and_copy_address_the_right_slots() {
        for access in ACCESS {
            gather_and_copy(access);
        }
    }

    fn gather_and_copy(access: Access) {
        let mut cache = KvCache::new(1, 4, 2, 64, DType::F32, &Device::Cpu, access);
        cache.reserve(8).unwrap();
        write(&mut cache, 0, 1, 0..8);
        write(&mut cache, 0, 3, 0..8);
        // Positions 0..5 of slot 3 into slot 0; position 5 and later stay empty there.
        cache.copy_prefix(3, 0, 5).unwrap();
        let (k, _) = cache.slot_rows(0, 0, 8).unwrap();
        let copied: Vec<f32> = (0..8)
            .map(|p| if p < 5 { (3_000 + p) as f32 } else { 0.0 })
            .collect();
        assert_eq!(first_column(&k), copied);
        // A decode gather of slots [3, 1] over 6 positions: [6, 2, width], position-major.
        let slots = Tensor::new(&[3u32, 1], &Device::Cpu).unwrap();
        let (k, _) = cache.gather(0, &slots, 6).unwrap();
        assert_eq!(k.dims(), &[6, 2, 2]);
        let expected: Vec<f32> = (0..6)
            .flat_map(|p| [(3_000 + p) as f32, (1_000 + p) as f32])
            .collect();
        assert_eq!(first_column(&k), expected);
        cache.clear();
        assert_eq!(cache.capacity, 0);
        // Usable again after a clear.
        cache.reserve(3).unwrap();
        write(&mut cache, 0, 2, 0..3);
        assert_eq!(
            first_column(&cache.slot_rows(0, 2, 3).unwrap().0),
            vec![2_000.0, 2_001.0, 2_002.0]
        );
    }
}
