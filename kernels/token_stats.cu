// The GPU kernel: one thread block of ENT_THREADS threads per logits row, running the phases of
// token_stats.cuh with a barrier between each. scripts/build-cuda compiles it to PTX
// (nvcc -ptx --fmad=false); cpu_harness.cpp runs the same phases on the CPU in CI.
#include "token_stats.cuh"

extern "C" __global__ void entroll_token_stats(const float* logits, uint32_t vocab,
                                               const EntRowIn* in, EntRowOut* out) {
  __shared__ EntShared s;
  const uint32_t row = blockIdx.x;
  const uint32_t t = threadIdx.x;
  const uint32_t n = ENT_THREADS;
  const float* z = logits + (size_t)row * vocab;
  ent_phase_max(t, n, z, vocab, s);
  __syncthreads();
  ent_phase_max_combine(t, n, in[row], s);
  __syncthreads();
  ent_phase_sums(t, n, z, vocab, s);
  __syncthreads();
  ent_phase_totals(t, n, in[row], s, out[row]);
  __syncthreads();
  ent_phase_draw(t, n, z, vocab, s, out[row]);
}
