// The GPU attention kernels: one thread block of ATT_THREADS threads per (query token,
// key/value head), running the phases of attention.cuh (att_run) with a barrier after each;
// and the row copy (a layer's keys and values written in one launch, copies of shared
// blocks), a thread per element. build.rs
// compiles this to PTX under the cuda feature (nvcc -ptx --fmad=false); cpu_harness.cpp runs
// the same functions on the CPU.
#include "attention.cuh"

template <class T>
__device__ void attention(AttShape a, const uint32_t* queries, const T* q, const T* k,
                          const T* v, T* out) {
  __shared__ AttShared s;
  const uint32_t t = threadIdx.x;
  auto each = [&](auto phase) {
    phase(t);
    __syncthreads();
  };
  att_run(each, ATT_THREADS, blockIdx.x, a, queries, q, k, v, s, out);
}

extern "C" __global__ void entroll_attention_f32(AttShape a, const uint32_t* queries,
                                                 const float* q, const float* k,
                                                 const float* v, float* out) {
  attention(a, queries, q, k, v, out);
}

extern "C" __global__ void entroll_attention_bf16(AttShape a, const uint32_t* queries,
                                                  const uint16_t* q, const uint16_t* k,
                                                  const uint16_t* v, uint16_t* out) {
  attention(a, queries, q, k, v, out);
}

template <class T>
__device__ void copy_rows(uint64_t elements, AttCopy c, const uint32_t* from, const uint32_t* to,
                          const T* src, const T* src2, T* dst) {
  uint64_t e = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (e < elements) att_copy_rows(e, c, from, to, src, src2, dst);
}

extern "C" __global__ void entroll_copy_rows_32(uint64_t elements, AttCopy c,
                                                const uint32_t* from, const uint32_t* to,
                                                const uint32_t* src, const uint32_t* src2,
                                                uint32_t* dst) {
  copy_rows(elements, c, from, to, src, src2, dst);
}

extern "C" __global__ void entroll_copy_rows_16(uint64_t elements, AttCopy c,
                                                const uint32_t* from, const uint32_t* to,
                                                const uint16_t* src, const uint16_t* src2,
                                                uint16_t* dst) {
  copy_rows(elements, c, from, to, src, src2, dst);
}
