//! Opening the GPU: refusing one the build cannot run on, before anything is loaded, and
//! setting the device up for one stream of work.
//!
//! A build carries PTX for `compute_{CUDA_COMPUTE_CAP}` (default 80: sm_80, sm_89 and sm_90
//! all run it, the driver compiling it for the GPU at hand) and needs a driver of CUDA 13.0 or
//! newer (the toolkit `scripts/build-cuda` uses). A GPU below the build's capability, or an
//! older driver, would fail at the first kernel launch with "no kernel image" or "unsupported
//! PTX version"; [`supported`] says so at start with the GPU's name and capability instead.

/// The compute capability the build's kernels need at least, as nvcc spells it (`80`).
pub const BUILT_FOR: u32 = parse_cap(env!("ENTROLL_CUDA_COMPUTE_CAP"));

/// The oldest driver that runs the build: CUDA 13.0, as `cuDriverGetVersion` reports it.
pub const MIN_DRIVER: i32 = 13_000;

/// What the driver says of the GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuIdentity {
    /// The GPU's name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Its compute capability, major and minor.
    pub capability: (i32, i32),
    /// The driver's CUDA version (`13000` for 13.0).
    pub driver: i32,
}

/// Whether a build for `built_for` runs on `gpu`, or why not, in words a person can act on.
pub fn supported(gpu: &GpuIdentity, built_for: u32, min_driver: i32) -> Result<(), String> {
    let (major, minor) = gpu.capability;
    let have = (major.max(0) as u32) * 10 + minor.max(0) as u32;
    if have < built_for {
        return Err(format!(
            "the GPU {} has compute capability {major}.{minor}; this build runs on {}.{} or newer \
             (rebuild with CUDA_COMPUTE_CAP={have} scripts/build-cuda)",
            gpu.name,
            built_for / 10,
            built_for % 10
        ));
    }
    if gpu.driver < min_driver {
        return Err(format!(
            "the driver for {} supports CUDA {}.{}; this build needs CUDA {}.{} (NVIDIA driver \
             580 or newer)",
            gpu.name,
            gpu.driver / 1000,
            gpu.driver % 1000 / 10,
            min_driver / 1000,
            min_driver % 1000 / 10
        ));
    }
    Ok(())
}

/// `"80"` as 80, at compile time (a malformed value fails the build).
const fn parse_cap(text: &str) -> u32 {
    let bytes = text.as_bytes();
    let mut value = 0u32;
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i].is_ascii_digit(), "CUDA_COMPUTE_CAP is a number");
        value = value * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    value
}

/// Opens GPU `ordinal`: refuses it if [`supported`] does, turns cudarc's per-tensor event
/// tracking off (entroll runs one stream, where it only costs an event record per use), and
/// keeps freed memory in the stream-ordered pool (release threshold: never), so the scratch of
/// every step is reused instead of returned to the driver at each synchronisation.
#[cfg(feature = "cuda")]
pub fn open(ordinal: usize) -> anyhow::Result<candle_core::Device> {
    use candle_core::cuda_backend::cudarc::driver::sys;

    let device = candle_core::Device::new_cuda(ordinal)?;
    let candle_core::Device::Cuda(cuda) = &device else {
        unreachable!("new_cuda gives a CUDA device")
    };
    let stream = cuda.cuda_stream();
    let context = stream.context();
    let mut driver = 0i32;
    // SAFETY: writes one integer; the driver is initialised (the context exists).
    unsafe { sys::cuDriverGetVersion(&mut driver) }.result()?;
    let gpu = GpuIdentity {
        name: context.name()?,
        capability: context.compute_capability()?,
        driver,
    };
    supported(&gpu, BUILT_FOR, MIN_DRIVER).map_err(anyhow::Error::msg)?;
    // SAFETY: every tensor lives on this device's one stream (the engine's loop thread), so
    // the order of that stream is all the synchronisation uses need.
    unsafe { cuda.disable_event_tracking() };
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold = u64::MAX;
    // SAFETY: the default pool of this context's device; the attribute takes a u64.
    unsafe {
        sys::cuDeviceGetDefaultMemPool(&mut pool, context.cu_device()).result()?;
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .result()?;
    }
    tracing::info!(
        "GPU {}: compute capability {}.{}, CUDA driver {}.{}",
        gpu.name,
        gpu.capability.0,
        gpu.capability.1,
        gpu.driver / 1000,
        gpu.driver % 1000 / 10
    );
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(name: &str, capability: (i32, i32), driver: i32) -> GpuIdentity {
        GpuIdentity {
            name: name.into(),
            capability,
            driver,
        }
    }

    #[test]
    fn gpus_at_or_above_the_build_run_and_older_ones_are_refused_by_name() {
        for (name, cc) in [("A100", (8, 0)), ("L40S", (8, 9)), ("H100", (9, 0))] {
            assert_eq!(supported(&gpu(name, cc, 13_000), 80, MIN_DRIVER), Ok(()));
        }
        let why =
            supported(&gpu("Tesla V100-SXM2-16GB", (7, 0), 13_000), 80, MIN_DRIVER).unwrap_err();
        assert!(
            why.contains("Tesla V100-SXM2-16GB") && why.contains("7.0") && why.contains("8.0"),
            "{why}"
        );
        // A build for Hopper refuses an A100.
        let why = supported(&gpu("A100", (8, 0), 13_000), 90, MIN_DRIVER).unwrap_err();
        assert!(why.contains("8.0") && why.contains("9.0"), "{why}");
    }

    #[test]
    fn an_old_driver_is_refused_with_its_version() {
        let why = supported(&gpu("H100", (9, 0), 12_040), 80, MIN_DRIVER).unwrap_err();
        assert!(why.contains("12.4") && why.contains("13.0"), "{why}");
        assert_eq!(
            supported(&gpu("H100", (9, 0), 13_010), 80, MIN_DRIVER),
            Ok(())
        );
    }

    #[test]
    fn a_capability_is_read_as_nvcc_spells_it() {
        assert_eq!(parse_cap("80"), 80);
        assert_eq!(parse_cap("120"), 120);
    }
}
