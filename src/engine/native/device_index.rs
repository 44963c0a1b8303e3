//! Index vectors a forward's kernels read (which cache rows each query token reads, where each
//! new key and value goes), uploaded to the device once per forward and read by every layer's
//! launch, instead of once per launch.

use candle_core::{Device, Tensor};

use super::step_counts;

/// `u32` indices on the host (for the operations' bounds checks and the CPU path) and on the
/// forward's device.
pub struct DeviceIndex {
    host: Vec<u32>,
    /// Read by the CUDA launches; on the CPU the host copy serves.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    on_device: Tensor,
}

impl DeviceIndex {
    /// Uploads `host` to `device` (one counted upload; a copy on the CPU).
    pub fn upload(host: Vec<u32>, device: &Device) -> candle_core::Result<Self> {
        step_counts::upload();
        let on_device = Tensor::from_slice(&host, host.len(), device)?;
        Ok(Self { host, on_device })
    }

    /// The indices, on the host.
    pub fn host(&self) -> &[u32] {
        &self.host
    }

    /// Runs `f` on the device copy's elements `range`, as a view a launch takes.
    #[cfg(feature = "cuda")]
    pub fn with_cuda<R>(
        &self,
        range: std::ops::Range<usize>,
        f: impl FnOnce(
            &candle_core::cuda_backend::cudarc::driver::CudaView<'_, u32>,
        ) -> candle_core::Result<R>,
    ) -> candle_core::Result<R> {
        let (storage, layout) = self.on_device.storage_and_layout();
        let candle_core::Storage::Cuda(cuda) = &*storage else {
            candle_core::bail!("device index: not on the GPU");
        };
        let start = layout.start_offset();
        let view = cuda
            .as_cuda_slice::<u32>()?
            .slice(start + range.start..start + range.end);
        f(&view)
    }
}

/// `values` as a tensor on `device`: one counted upload, for data a forward reads through
/// candle's operations (token ids, positions, the rows to keep).
pub fn upload(values: &[u32], device: &Device) -> candle_core::Result<Tensor> {
    step_counts::upload();
    Tensor::from_slice(values, values.len(), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_is_counted_once_and_keeps_its_values() {
        let before = step_counts::StepCounts::now();
        let index = DeviceIndex::upload(vec![3, 1, 4], &Device::Cpu).unwrap();
        assert_eq!(index.host(), [3, 1, 4]);
        assert_eq!(index.on_device.to_vec1::<u32>().unwrap(), [3, 1, 4]);
        let counted = step_counts::StepCounts::now().since(before);
        assert_eq!(
            (counted.uploads, counted.launches, counted.syncs),
            (1, 0, 0)
        );
    }
}
