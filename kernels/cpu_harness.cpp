// The CPU harness: runs ent_row of token_stats.cuh exactly as the GPU kernel of token_stats.cu
// does (the same phases in the same order, the same thread count), each phase for every thread
// id before the next phase begins, which is what the GPU's barrier guarantees. Rows are
// independent, like the GPU's thread blocks. Built by build.rs with -ffp-contract=off.
#include <cstddef>
#include <memory>
#include <vector>

#include "token_stats.cuh"

// The scratch keys a row needs: the nucleus's candidates, and the truncated draw's.
static uint32_t scratch_for(const EntRowIn& in, uint32_t vocab) {
  uint32_t k = in.max_candidates < vocab ? in.max_candidates : vocab;
  uint32_t length = ent_sort_length(k < 1 ? 1 : k);
  if (ent_truncated(in)) {
    uint32_t draw = ent_sort_length(ent_draw_cap(in, vocab));
    if (draw > length) length = draw;
  }
  return length;
}

extern "C" void entroll_token_stats_cpu(const float* logits, size_t rows, uint32_t vocab,
                                        const EntRowIn* in, EntRowOut* out) {
  const uint32_t n = ENT_THREADS;
  std::unique_ptr<EntShared> shared(new EntShared());
  std::vector<uint64_t> keys;
  for (size_t row = 0; row < rows; ++row) {
    keys.assign(scratch_for(in[row], vocab), 0);
    out[row] = EntRowOut{};
    auto each = [&](auto phase) {
      for (uint32_t t = 0; t < n; ++t) phase(t);
    };
    ent_row(each, n, logits + row * (size_t)vocab, vocab, in[row], *shared, keys.data(),
            out[row]);
  }
}

// The platform-independent exp and log, for their accuracy tests.
extern "C" double entroll_exp(double x) { return ent_exp(x); }
extern "C" double entroll_log(double x) { return ent_log(x); }

static_assert(sizeof(EntRowIn) == 56, "EntRowIn layout is shared with Rust");
static_assert(sizeof(EntRowOut) == 64, "EntRowOut layout is shared with Rust");
