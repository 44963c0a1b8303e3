// The CPU harness: runs the phases of token_stats.cuh exactly as the GPU kernel of
// token_stats.cu does (the same functions, the same thread count), each phase for every thread
// id before the next phase begins, which is what a barrier guarantees on the GPU. Rows are
// independent, like the GPU's thread blocks. Built by build.rs with -ffp-contract=off.
#include <cstddef>
#include <vector>

#include "token_stats.cuh"

extern "C" void entroll_token_stats_cpu(const float* logits, size_t rows, uint32_t vocab,
                                        const EntRowIn* in, EntRowOut* out) {
  const uint32_t n = ENT_THREADS;
  std::vector<EntShared> shared(1);
  for (size_t row = 0; row < rows; ++row) {
    EntShared& s = shared[0];
    const float* z = logits + row * (size_t)vocab;
    out[row] = EntRowOut{};
    for (uint32_t t = 0; t < n; ++t) ent_phase_max(t, n, z, vocab, s);
    for (uint32_t t = 0; t < n; ++t) ent_phase_max_combine(t, n, in[row], s);
    for (uint32_t t = 0; t < n; ++t) ent_phase_sums(t, n, z, vocab, s);
    for (uint32_t t = 0; t < n; ++t) ent_phase_totals(t, n, in[row], s, out[row]);
    for (uint32_t t = 0; t < n; ++t) ent_phase_draw(t, n, z, vocab, s, out[row]);
  }
}

// The platform-independent exp and log, for their accuracy tests.
extern "C" double entroll_exp(double x) { return ent_exp(x); }
extern "C" double entroll_log(double x) { return ent_log(x); }

static_assert(sizeof(EntRowIn) == 32, "EntRowIn layout is shared with Rust");
static_assert(sizeof(EntRowOut) == 40, "EntRowOut layout is shared with Rust");
