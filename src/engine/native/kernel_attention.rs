//! The attention and cache-copy kernels of `kernels/attention.cuh` as candle operations. On
//! CUDA the PTX runs (attention: one block per query token and key/value head, reading the
//! paged cache in place through each token's block table; copies: a thread per element); on
//! the CPU the harness runs the same source. The native engine uses them when its device
//! kernels are on (`device_kernels`).

use candle_core::{CpuStorage, CustomOp3, DType, InplaceOp2, Layout, Shape};

use super::device_index::DeviceIndex;
use super::queries::Queries;
use super::step_counts;

/// The problem every block of an attention launch shares (`AttShape` in the kernel source).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttShape {
    /// Query tokens.
    pub queries: u32,
    /// Query heads.
    pub heads: u32,
    /// Key/value heads.
    pub kv_heads: u32,
    /// Width of a head.
    pub head_dim: u32,
    /// Positions per cache block.
    pub block_size: u32,
    /// `1 / sqrt(head_dim)`.
    pub scale: f32,
}

// SAFETY: plain numbers, `repr(C)` as the kernel declares it.
#[cfg(feature = "cuda")]
unsafe impl candle_core::cuda_backend::cudarc::driver::DeviceRepr for AttShape {}

extern "C" {
    fn entroll_attention_cpu_f32(
        a: AttShape,
        queries: *const u32,
        q: *const f32,
        k: *const f32,
        v: *const f32,
        out: *mut f32,
    );
    fn entroll_attention_cpu_bf16(
        a: AttShape,
        queries: *const u32,
        q: *const u16,
        k: *const u16,
        v: *const u16,
        out: *mut u16,
    );
    fn entroll_copy_rows_cpu_32(
        rows: u64,
        width: u32,
        from: *const u32,
        to: *const u32,
        src: *const u32,
        dst: *mut u32,
    );
    fn entroll_copy_rows_cpu_16(
        rows: u64,
        width: u32,
        from: *const u32,
        to: *const u32,
        src: *const u16,
        dst: *mut u16,
    );
    #[cfg(feature = "cuda")]
    fn entroll_attention_threads() -> u32;
    fn entroll_attention_max_groups() -> u32;
    fn entroll_attention_max_outputs() -> u32;
}

/// Whether the attention kernel handles a model of this shape and dtype (float32 or bfloat16,
/// at most `ATT_MAX_GROUPS` query heads per key/value head and `ATT_MAX_OUTPUTS` outputs per
/// block); other models keep candle's operations.
pub fn supports(heads: usize, kv_heads: usize, head_dim: usize, dtype: DType) -> bool {
    // SAFETY: the three return constants.
    let (max_groups, max_outputs) = unsafe {
        (
            entroll_attention_max_groups(),
            entroll_attention_max_outputs(),
        )
    };
    kv_heads > 0
        && heads.is_multiple_of(kv_heads)
        && heads / kv_heads <= max_groups as usize
        && (heads / kv_heads) * head_dim <= max_outputs as usize
        && matches!(dtype, DType::F32 | DType::BF16)
}

/// Attention of each query token over positions `0..=position` of its sequence in one layer's
/// cache, read in place through its block table.
pub struct KernelAttention<'a> {
    /// Each query token's position and block table.
    pub queries: &'a Queries,
    /// The same as the kernel reads them (`queries.flat()`), uploaded once per forward.
    pub index: &'a DeviceIndex,
    /// The problem's shape (its `queries` is `queries.len()`).
    pub shape: AttShape,
}

impl KernelAttention<'_> {
    /// Checks the inputs: queries `[n, heads, head_dim]` and a cache holding every position
    /// read; the number of output elements.
    fn check(&self, lq: &Layout, lk: &Layout, lv: &Layout) -> candle_core::Result<usize> {
        let a = &self.shape;
        let width = (a.kv_heads * a.head_dim) as usize;
        let outputs = self.queries.len() * (a.heads * a.head_dim) as usize;
        // The kernel's per-block arrays hold ATT_MAX_GROUPS heads and ATT_MAX_OUTPUTS outputs
        // (the dtype is checked where the storage is matched).
        if !supports(
            a.heads as usize,
            a.kv_heads as usize,
            a.head_dim as usize,
            DType::F32,
        ) {
            candle_core::bail!(
                "attention: {} heads over {} of width {} exceed the kernel",
                a.heads,
                a.kv_heads,
                a.head_dim
            );
        }
        if lq.shape().elem_count() != outputs
            || a.queries as usize != self.queries.len()
            || self.index.host() != self.queries.flat()
        {
            candle_core::bail!("attention: queries of shape {:?}", lq.shape());
        }
        for l in [lq, lk, lv] {
            if !l.is_contiguous() {
                candle_core::bail!("attention: inputs must be contiguous");
            }
        }
        if lk.shape() != lv.shape() {
            candle_core::bail!("attention: keys {:?}, values {:?}", lk.shape(), lv.shape());
        }
        let blocks = lk.shape().elem_count() / (width * a.block_size as usize).max(1);
        self.queries.check(a.block_size as usize, blocks)?;
        Ok(outputs)
    }
}

impl CustomOp3 for KernelAttention<'_> {
    fn name(&self) -> &'static str {
        "entroll-kernel-attention"
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
        let outputs = self.check(lq, lk, lv)?;
        step_counts::launch();
        let queries = self.index.host();
        let at = |l: &Layout| l.start_offset();
        let out = match (q, k, v) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => {
                let mut out = vec![0f32; outputs];
                // SAFETY: `check` bounds every read: the queries' heads, and the cache rows of
                // every position they read; `out` holds every output.
                unsafe {
                    entroll_attention_cpu_f32(
                        self.shape,
                        queries.as_ptr(),
                        q[at(lq)..].as_ptr(),
                        k[at(lk)..].as_ptr(),
                        v[at(lv)..].as_ptr(),
                        out.as_mut_ptr(),
                    )
                };
                CpuStorage::F32(out)
            }
            (CpuStorage::BF16(q), CpuStorage::BF16(k), CpuStorage::BF16(v)) => {
                let mut out = vec![half::bf16::ZERO; outputs];
                // SAFETY: as above; `bf16` is a transparent `u16`.
                unsafe {
                    entroll_attention_cpu_bf16(
                        self.shape,
                        queries.as_ptr(),
                        q[at(lq)..].as_ptr().cast(),
                        k[at(lk)..].as_ptr().cast(),
                        v[at(lv)..].as_ptr().cast(),
                        out.as_mut_ptr().cast(),
                    )
                };
                CpuStorage::BF16(out)
            }
            _ => candle_core::bail!("attention: float32 or bfloat16 inputs of one dtype"),
        };
        Ok((out, self.out_shape()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        q: &candle_core::CudaStorage,
        lq: &Layout,
        k: &candle_core::CudaStorage,
        lk: &Layout,
        v: &candle_core::CudaStorage,
        lv: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;

        let outputs = self.check(lq, lk, lv)?;
        step_counts::launch();
        let dev = q.device().clone();
        let config = LaunchConfig {
            grid_dim: (self.shape.queries * self.shape.kv_heads, 1, 1),
            // SAFETY: returns a constant.
            block_dim: (unsafe { entroll_attention_threads() }, 1, 1),
            shared_mem_bytes: 0,
        };
        macro_rules! launch {
            ($t:ty, $name:literal) => {{
                let (q, k, v) = (
                    q.as_cuda_slice::<$t>()?.slice(lq.start_offset()..),
                    k.as_cuda_slice::<$t>()?.slice(lk.start_offset()..),
                    v.as_cuda_slice::<$t>()?.slice(lv.start_offset()..),
                );
                let out = dev.alloc_zeros::<$t>(outputs)?;
                let func = dev.get_or_load_custom_func(
                    $name,
                    "entroll_attention",
                    super::kernels::ATTENTION_PTX,
                )?;
                self.index
                    .with_cuda(0..self.index.host().len(), |queries| {
                        let mut args = func.builder();
                        args.arg(&self.shape);
                        args.arg(queries);
                        args.arg(&q);
                        args.arg(&k);
                        args.arg(&v);
                        args.arg(&out);
                        // SAFETY: the arguments match the kernel's in kernels/attention.cu; `check`
                        // bounds every read and `out` holds every output.
                        unsafe { args.launch(config) }.w()?;
                        Ok(())
                    })?;
                candle_core::CudaStorage::wrap_cuda_slice(out, dev.clone())
            }};
        }
        let out = match q.dtype() {
            DType::F32 => launch!(f32, "entroll_attention_f32"),
            DType::BF16 => launch!(half::bf16, "entroll_attention_bf16"),
            other => candle_core::bail!("attention: no kernel for {other:?}"),
        };
        Ok((out, self.out_shape()))
    }
}

impl KernelAttention<'_> {
    fn out_shape(&self) -> Shape {
        Shape::from((
            self.queries.len(),
            (self.shape.heads * self.shape.head_dim) as usize,
        ))
    }
}

/// Copies row `from[i]` of the source to row `to[i]` of the tensor it is applied to, in place,
/// for every `i` at once (a layer's cache write: the new rows to their cache rows; a shared
/// block's rows to the copy of it). Rows are the last dimension; any 32- or 16-bit dtype.
pub struct CopyRows {
    /// `from` then `to`, uploaded once and read by every layer's copies.
    index: DeviceIndex,
}

impl CopyRows {
    /// Uploads the copy of source rows `from` to destination rows `to` (as many) to `device`.
    pub fn new(
        from: Vec<u32>,
        to: Vec<u32>,
        device: &candle_core::Device,
    ) -> candle_core::Result<Self> {
        if from.len() != to.len() {
            candle_core::bail!(
                "copy rows: {} sources for {} destinations",
                from.len(),
                to.len()
            );
        }
        Ok(Self {
            index: DeviceIndex::upload([from, to].concat(), device)?,
        })
    }

    /// Source rows.
    pub fn from(&self) -> &[u32] {
        &self.index.host()[..self.rows()]
    }

    /// Destination rows, one per source row.
    pub fn to(&self) -> &[u32] {
        &self.index.host()[self.rows()..]
    }

    /// Rows copied.
    fn rows(&self) -> usize {
        self.index.host().len() / 2
    }

    /// The row width, after checking that both tensors are contiguous rows of one width and
    /// dtype, and that every row named exists.
    fn check(&self, dst: &Layout, src: &Layout) -> candle_core::Result<usize> {
        let width = *dst.dims().last().unwrap_or(&0);
        if width == 0 || src.dims().last() != Some(&width) {
            candle_core::bail!("copy rows: {:?} into {:?}", src.shape(), dst.shape());
        }
        if !dst.is_contiguous() || !src.is_contiguous() {
            candle_core::bail!("copy rows: contiguous rows");
        }
        let (dst_rows, src_rows) = (
            dst.shape().elem_count() / width,
            src.shape().elem_count() / width,
        );
        if self.from().iter().any(|&r| r as usize >= src_rows)
            || self.to().iter().any(|&r| r as usize >= dst_rows)
        {
            candle_core::bail!(
                "copy rows: a row beyond {src_rows} source or {dst_rows} destination rows"
            );
        }
        Ok(width)
    }
}

impl InplaceOp2 for CopyRows {
    fn name(&self) -> &'static str {
        "entroll-copy-rows"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        ld: &Layout,
        src: &CpuStorage,
        ls: &Layout,
    ) -> candle_core::Result<()> {
        let width = self.check(ld, ls)?;
        step_counts::launch();
        let (d0, s0) = (ld.start_offset(), ls.start_offset());
        let (rows, width) = (self.rows() as u64, width as u32);
        let (from, to) = (self.from().as_ptr(), self.to().as_ptr());
        // SAFETY (both): `check` bounds every row read and written; the elements are 32 or 16
        // bits wide and copied as bits.
        let copy32 = |s: *const u32, d: *mut u32| unsafe {
            entroll_copy_rows_cpu_32(rows, width, from, to, s, d)
        };
        let copy16 = |s: *const u16, d: *mut u16| unsafe {
            entroll_copy_rows_cpu_16(rows, width, from, to, s, d)
        };
        match (dst, src) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => {
                copy32(s[s0..].as_ptr().cast(), d[d0..].as_mut_ptr().cast())
            }
            (CpuStorage::BF16(d), CpuStorage::BF16(s)) => {
                copy16(s[s0..].as_ptr().cast(), d[d0..].as_mut_ptr().cast())
            }
            (CpuStorage::F16(d), CpuStorage::F16(s)) => {
                copy16(s[s0..].as_ptr().cast(), d[d0..].as_mut_ptr().cast())
            }
            _ => candle_core::bail!("copy rows: float32, bfloat16 or float16 of one dtype"),
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        dst: &mut candle_core::CudaStorage,
        ld: &Layout,
        src: &candle_core::CudaStorage,
        ls: &Layout,
    ) -> candle_core::Result<()> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;

        let width = self.check(ld, ls)?;
        let dev = dst.device().clone();
        let rows = self.rows();
        let elements = (rows * width) as u64;
        if elements == 0 {
            return Ok(());
        }
        step_counts::launch();
        let config = LaunchConfig {
            grid_dim: (elements.div_ceil(256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let width = width as u32;
        macro_rules! launch {
            ($t:ty, $name:literal) => {{
                let s = src.as_cuda_slice::<$t>()?.slice(ls.start_offset()..);
                let mut d = dst
                    .as_cuda_slice_mut::<$t>()?
                    .slice_mut(ld.start_offset()..);
                let func = dev.get_or_load_custom_func(
                    $name,
                    "entroll_attention",
                    super::kernels::ATTENTION_PTX,
                )?;
                self.index.with_cuda(0..rows, |from| {
                    self.index.with_cuda(rows..2 * rows, |to| {
                        let mut args = func.builder();
                        args.arg(&elements);
                        args.arg(&width);
                        args.arg(from);
                        args.arg(to);
                        args.arg(&s);
                        args.arg(&mut d);
                        // SAFETY: the arguments match the kernel's in kernels/attention.cu;
                        // `check` bounds every row read and written.
                        unsafe { args.launch(config) }.w()?;
                        Ok(())
                    })
                })?;
            }};
        }
        match src.dtype() {
            DType::F32 => launch!(f32, "entroll_copy_rows_32"),
            DType::BF16 => launch!(half::bf16, "entroll_copy_rows_16"),
            DType::F16 => launch!(half::f16, "entroll_copy_rows_16"),
            other => candle_core::bail!("copy rows: no kernel for {other:?}"),
        }
        Ok(())
    }
}
