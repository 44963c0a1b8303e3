// The GPU kernel: one thread block of ENT_THREADS threads per logits row, running the phases of
// token_stats.cuh (ent_row) with a barrier after each. build.rs compiles it to PTX under the
// cuda feature (nvcc -ptx --fmad=false); cpu_harness.cpp runs the same ent_row on the CPU.
#include "token_stats.cuh"

// Two kernels of one body: entroll_token_stats for a batch in which no row asks for
// alternatives (it compiles none of their phases, and so needs fewer registers), and
// entroll_token_stats_top for one in which a row does.
// `keys` and `weights` hold, per row and `keys_per_row` apart, scratch for the largest of
// ent_sort_length(min(K, V)), when a top-k < V truncates the draw ent_sort_length(top_k), and
// ent_sort_length(min(top_n, ENT_MAX_TOP, V)) 64-bit keys, and as many weights. `tops` holds a
// row's alternatives `tops_stride` apart: 1, or 0 when no row asks for them (then no row writes
// the one it is given). `keys_per_row` is the batch's largest, so a row may rank
// more keys here than in the harness (which gives each row its own); the first `candidates` of
// a ranking, all that is read, are the same top tokens either way.
template <bool WithTop>
__device__ void entroll_token_stats_rows(const float* logits, uint32_t vocab, const EntRowIn* in,
                                         EntRowOut* out, EntTopOut* tops, uint32_t tops_stride,
                                         uint64_t* keys, double* weights,
                                         uint32_t keys_per_row) {
  __shared__ EntShared s;
  const uint32_t row = blockIdx.x;
  const uint32_t t = threadIdx.x;
  auto each = [&](auto phase) {
    phase(t);
    __syncthreads();
  };
  ent_row<WithTop>(each, ENT_THREADS, logits + (size_t)row * vocab, vocab, in[row], s,
                   keys + (size_t)row * keys_per_row, weights + (size_t)row * keys_per_row,
                   keys_per_row, out[row], tops[(size_t)row * tops_stride]);
}

// The two entry points (extern "C" names cannot be templates). The one without alternatives,
// which serves most steps, is held to at most 48 registers a thread (65,536 / (5 x 256), to the
// allocation unit): five rows then fit an H100 SM by registers as by shared memory, and ptxas
// meets it without spilling. The other keeps what ptxas gives it.
#define ENT_TOKEN_STATS_KERNEL(name, with_top, bounds)                                         \
  extern "C" __global__ void bounds name(const float* logits, uint32_t vocab,                  \
                                         const EntRowIn* in, EntRowOut* out, EntTopOut* tops,  \
                                         uint32_t tops_stride, uint64_t* keys, double* weights, \
                                         uint32_t keys_per_row) {                              \
    entroll_token_stats_rows<with_top>(logits, vocab, in, out, tops, tops_stride, keys,        \
                                       weights, keys_per_row);                                 \
  }

ENT_TOKEN_STATS_KERNEL(entroll_token_stats, false, __launch_bounds__(ENT_THREADS, 5))
ENT_TOKEN_STATS_KERNEL(entroll_token_stats_top, true, )
