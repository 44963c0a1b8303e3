//! The attention and cache-copy kernels of `kernels/attention.cuh` as candle operations. On
//! CUDA the PTX runs (attention: one block per query token and key/value head, reading the
//! paged cache in place through each token's block table; copies: a thread per element); on
//! the CPU the harness runs the same source. The native engine uses them when its device
//! kernels are on (`device_kernels`).

use candle_core::{CpuStorage, CustomOp3, DType, InplaceOp2, InplaceOp3, Layout, Shape};

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
        elements: u64,
        c: AttCopy,
        from: *const u32,
        to: *const u32,
        src: *const u32,
        src2: *const u32,
        dst: *mut u32,
    );
    fn entroll_copy_rows_cpu_16(
        elements: u64,
        c: AttCopy,
        from: *const u32,
        to: *const u32,
        src: *const u16,
        src2: *const u16,
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

/// Copies row `from[i]` of a source to row `to[i]` of the tensor it is applied to, in place,
/// for every `i` at once, in one launch. Applied with one source ([`InplaceOp2`]): a shared
/// block's rows to the copy of it. Applied with two ([`InplaceOp3`]) to a tensor of two
/// halves: a layer's new keys into its cache's first half and its new values into the second,
/// each row `to[i]` of its half. Rows are the destination's last dimension; a source is
/// contiguous rows, or lines of whole rows with any stride between lines (a layer's keys or
/// values as a stacked projection's output holds them, `[tokens, kv_heads · head_dim]` within
/// wider lines: read there, not copied to contiguous first). Any 32- or 16-bit dtype.
pub struct CopyRows {
    /// `from` then `to`, uploaded once and read by every layer's copies.
    index: DeviceIndex,
}

/// The copy as the kernel reads it (`AttCopy` in the kernel source).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
struct AttCopy {
    /// Rows copied from each source.
    rows: u64,
    /// Elements a row.
    width: u64,
    /// Rows side by side in a line of the first source.
    per: u64,
    /// Elements from one line of the first source to the next.
    stride: u64,
    /// Rows side by side in a line of the second source.
    per2: u64,
    /// Elements from one line of the second source to the next.
    stride2: u64,
    /// Rows of the destination before the second source's half.
    half: u64,
}

// SAFETY: plain numbers, `repr(C)` as the kernel declares it.
#[cfg(feature = "cuda")]
unsafe impl candle_core::cuda_backend::cudarc::driver::DeviceRepr for AttCopy {}

/// How a source's rows lie: rows side by side in a line, elements between lines, rows in all.
fn source_lines(l: &Layout, width: usize) -> candle_core::Result<(usize, usize, usize)> {
    let dims = l.dims();
    if l.is_contiguous() && l.shape().elem_count().is_multiple_of(width) {
        return Ok((1, width, l.shape().elem_count() / width));
    }
    match (dims, l.stride()) {
        ([lines, line], [stride, 1]) if line.is_multiple_of(width) => {
            Ok((line / width, *stride, lines * (line / width)))
        }
        _ => candle_core::bail!(
            "copy rows: a source of shape {:?} and strides {:?} is not lines of rows of {width}",
            l.shape(),
            l.stride()
        ),
    }
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

    /// Rows copied from each source.
    fn rows(&self) -> usize {
        self.index.host().len() / 2
    }

    /// The copy of `sources` (one, or two into the destination's halves) into `dst`, after
    /// checking that the destination is contiguous rows, that the sources are rows of its
    /// width lying as the kernel reads them (two of as many rows, each lying its own way), and
    /// that every row named exists.
    fn plan(&self, dst: &Layout, sources: &[&Layout]) -> candle_core::Result<AttCopy> {
        let width = *dst.dims().last().unwrap_or(&0);
        if width == 0 || !dst.is_contiguous() {
            candle_core::bail!("copy rows: into {:?}, not contiguous rows", dst.shape());
        }
        let lines = sources
            .iter()
            .map(|l| source_lines(l, width))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let ((per, stride, src_rows), (per2, stride2, _)) = (lines[0], lines[lines.len() - 1]);
        if lines.iter().any(|&(_, _, r)| r != src_rows) {
            candle_core::bail!("copy rows: two sources of different numbers of rows");
        }
        let dst_rows = dst.shape().elem_count() / width;
        let half = if sources.len() == 2 { dst_rows / 2 } else { 0 };
        let into = if sources.len() == 2 { half } else { dst_rows };
        if sources.len() == 2 && !dst_rows.is_multiple_of(2) {
            candle_core::bail!("copy rows: {dst_rows} rows are not two halves");
        }
        if self.from().iter().any(|&r| r as usize >= src_rows)
            || self.to().iter().any(|&r| r as usize >= into)
        {
            candle_core::bail!(
                "copy rows: a row beyond {src_rows} source or {into} destination rows"
            );
        }
        Ok(AttCopy {
            rows: self.rows() as u64,
            width: width as u64,
            per: per as u64,
            stride: stride as u64,
            per2: per2 as u64,
            stride2: stride2 as u64,
            half: half as u64,
        })
    }

    /// The copy on the CPU, through the kernel's harness.
    fn cpu(
        &self,
        dst: &mut CpuStorage,
        ld: &Layout,
        sources: &[(&CpuStorage, &Layout)],
    ) -> candle_core::Result<()> {
        use candle_core::backend::BackendStorage;

        let layouts: Vec<&Layout> = sources.iter().map(|s| s.1).collect();
        let c = self.plan(ld, &layouts)?;
        step_counts::launch();
        let elements = c.rows * c.width * sources.len() as u64;
        let (from, to) = (self.from().as_ptr(), self.to().as_ptr());
        let d0 = ld.start_offset();
        let (first, second) = (sources[0], sources[sources.len() - 1]);
        macro_rules! copy {
            ($variant:ident, $bits:ty, $harness:ident) => {{
                let (CpuStorage::$variant(d), CpuStorage::$variant(s), CpuStorage::$variant(s2)) =
                    (dst, first.0, second.0)
                else {
                    candle_core::bail!("copy rows: float32, bfloat16 or float16 of one dtype");
                };
                let (s, s2) = (&s[first.1.start_offset()..], &s2[second.1.start_offset()..]);
                // SAFETY: `plan` bounds every row read and written (a source's lines lie
                // within its storage by its layout); the elements are 32 or 16 bits wide and
                // copied as bits.
                unsafe {
                    $harness(
                        elements,
                        c,
                        from,
                        to,
                        s.as_ptr().cast::<$bits>(),
                        s2.as_ptr().cast::<$bits>(),
                        d[d0..].as_mut_ptr().cast::<$bits>(),
                    )
                }
            }};
        }
        match first.0.dtype() {
            DType::F32 => copy!(F32, u32, entroll_copy_rows_cpu_32),
            DType::BF16 => copy!(BF16, u16, entroll_copy_rows_cpu_16),
            DType::F16 => copy!(F16, u16, entroll_copy_rows_cpu_16),
            _ => candle_core::bail!("copy rows: float32, bfloat16 or float16 of one dtype"),
        }
        Ok(())
    }

    /// The copy on the GPU: one launch of `kernels/attention.cu`'s row copy.
    #[cfg(feature = "cuda")]
    fn cuda(
        &self,
        dst: &mut candle_core::CudaStorage,
        ld: &Layout,
        sources: &[(&candle_core::CudaStorage, &Layout)],
    ) -> candle_core::Result<()> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;

        let layouts: Vec<&Layout> = sources.iter().map(|s| s.1).collect();
        let c = self.plan(ld, &layouts)?;
        let elements = c.rows * c.width * sources.len() as u64;
        if elements == 0 {
            return Ok(());
        }
        step_counts::launch();
        let dev = dst.device().clone();
        let rows = self.rows();
        let config = LaunchConfig {
            grid_dim: (elements.div_ceil(256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (first, second) = (sources[0], sources[sources.len() - 1]);
        macro_rules! launch {
            ($t:ty, $name:literal) => {{
                let s = first
                    .0
                    .as_cuda_slice::<$t>()?
                    .slice(first.1.start_offset()..);
                let s2 = second
                    .0
                    .as_cuda_slice::<$t>()?
                    .slice(second.1.start_offset()..);
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
                        args.arg(&c);
                        args.arg(from);
                        args.arg(to);
                        args.arg(&s);
                        args.arg(&s2);
                        args.arg(&mut d);
                        // SAFETY: the arguments match the kernel's in kernels/attention.cu;
                        // `plan` bounds every row read and written.
                        unsafe { args.launch(config) }.w()?;
                        Ok(())
                    })
                })?;
            }};
        }
        match first.0.dtype() {
            DType::F32 => launch!(f32, "entroll_copy_rows_32"),
            DType::BF16 => launch!(half::bf16, "entroll_copy_rows_16"),
            DType::F16 => launch!(half::f16, "entroll_copy_rows_16"),
            other => candle_core::bail!("copy rows: no kernel for {other:?}"),
        }
        Ok(())
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
        self.cpu(dst, ld, &[(src, ls)])
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        dst: &mut candle_core::CudaStorage,
        ld: &Layout,
        src: &candle_core::CudaStorage,
        ls: &Layout,
    ) -> candle_core::Result<()> {
        self.cuda(dst, ld, &[(src, ls)])
    }
}

impl InplaceOp3 for CopyRows {
    fn name(&self) -> &'static str {
        "entroll-copy-rows-to-halves"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        ld: &Layout,
        keys: &CpuStorage,
        lk: &Layout,
        values: &CpuStorage,
        lv: &Layout,
    ) -> candle_core::Result<()> {
        self.cpu(dst, ld, &[(keys, lk), (values, lv)])
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        dst: &mut candle_core::CudaStorage,
        ld: &Layout,
        keys: &candle_core::CudaStorage,
        lk: &Layout,
        values: &candle_core::CudaStorage,
        lv: &Layout,
    ) -> candle_core::Result<()> {
        self.cuda(dst, ld, &[(keys, lk), (values, lv)])
    }
}
