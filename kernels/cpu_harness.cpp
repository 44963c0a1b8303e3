// The CPU harness: runs ent_row of token_stats.cuh exactly as the GPU kernel of token_stats.cu
// does (the same phases in the same order, the same thread count), each phase for every thread
// id before the next phase begins, which is what the GPU's barrier guarantees. Rows are
// independent, like the GPU's thread blocks. Built by build.rs with -ffp-contract=off.
#include <cstddef>
#include <memory>
#include <vector>

#include "attention.cuh"
#include "token_stats.cuh"

// The scratch keys a row needs (and as many weights): the nucleus's candidates, a top-k's (a
// draw without top-k ranks nothing beyond the nucleus's candidates), and the alternatives'.
static uint32_t scratch_for(const EntRowIn& in, uint32_t vocab) {
  uint32_t k = in.max_candidates < vocab ? in.max_candidates : vocab;
  uint32_t length = ent_sort_length(k < 1 ? 1 : k);
  if (ent_truncated(in) && ent_draw_cap(in, vocab) < vocab) {
    uint32_t draw = ent_sort_length(ent_draw_cap(in, vocab));
    if (draw > length) length = draw;
  }
  uint32_t top = in.top_n < ENT_MAX_TOP ? in.top_n : ENT_MAX_TOP;
  top = ent_sort_length(top < vocab ? top : vocab);
  return top > length ? top : length;
}

// `tops`: one per row, or null when no row asks for alternatives (then none is written).
extern "C" void entroll_token_stats_cpu(const float* logits, size_t rows, uint32_t vocab,
                                        const EntRowIn* in, EntRowOut* out, EntTopOut* tops) {
  const uint32_t n = ENT_THREADS;
  std::unique_ptr<EntShared> shared(new EntShared());
  std::vector<uint64_t> keys;
  std::vector<double> weights;
  EntTopOut unused{};
  for (size_t row = 0; row < rows; ++row) {
    keys.assign(scratch_for(in[row], vocab), 0);
    weights.assign(keys.size(), 0.0);
    out[row] = EntRowOut{};
    EntTopOut& top = tops ? tops[row] : unused;
    top = EntTopOut{};
    auto each = [&](auto phase) {
      for (uint32_t t = 0; t < n; ++t) phase(t);
    };
    // As the GPU launch picks its kernel: the one with the alternatives' phases when any row
    // asks for them (`tops` given).
    if (tops)
      ent_row<true>(each, n, logits + row * (size_t)vocab, vocab, in[row], *shared, keys.data(),
                    weights.data(), (uint32_t)keys.size(), out[row], top);
    else
      ent_row<false>(each, n, logits + row * (size_t)vocab, vocab, in[row], *shared, keys.data(),
                     weights.data(), (uint32_t)keys.size(), out[row], top);
  }
}

// The threads of a row's block, and the scratch keys (and weights) a row needs: what the GPU
// launch sizes.
// Where the cumulative weight of `m` ranked weights crosses `target` (the ranks through it, 0
// when it is not crossed): as the chunk sums of phase 14b and ent_crossing place it, whether
// that answer is certain, and as phase 15 takes it (walked when not). For tests of the crossing
// on weights built for it.
extern "C" void entroll_crossing_cpu(const double* weights, uint32_t m, double target,
                                     int32_t strict, uint32_t* by_chunks, int32_t* certain,
                                     uint32_t* taken) {
  std::unique_ptr<EntShared> s(new EntShared());
  s->status = 0;
  s->candidates = m;
  for (uint32_t t = 0; t < ENT_THREADS; ++t) ent_phase_weight_chunks(t, ENT_THREADS, *s, weights);
  EntCrossing chunked = ent_crossing(*s, ENT_THREADS, weights, m, target, strict != 0);
  EntCrossing host = ent_host_crossing(*s, ENT_THREADS, weights, m, target, strict != 0);
  *by_chunks = chunked.reached ? chunked.len : 0;
  *certain = chunked.certain;
  *taken = host.reached ? host.len : 0;
}

extern "C" uint32_t entroll_threads() { return ENT_THREADS; }
extern "C" uint32_t entroll_scratch_keys(const EntRowIn* in, uint32_t vocab) {
  return scratch_for(*in, vocab);
}

// The attention kernel of attention.cu, block after block; each phase for every thread id.
template <class T>
static void attention_cpu(AttShape a, const uint32_t* queries, const T* q, const T* k, const T* v,
                          T* out) {
  std::unique_ptr<AttShared> shared(new AttShared());
  auto each = [&](auto phase) {
    for (uint32_t t = 0; t < ATT_THREADS; ++t) phase(t);
  };
  for (uint32_t block = 0; block < a.queries * a.kv_heads; ++block)
    att_run(each, ATT_THREADS, block, a, queries, q, k, v, *shared, out);
}

extern "C" void entroll_attention_cpu_f32(AttShape a, const uint32_t* queries, const float* q,
                                          const float* k, const float* v, float* out) {
  attention_cpu(a, queries, q, k, v, out);
}

extern "C" void entroll_attention_cpu_bf16(AttShape a, const uint32_t* queries,
                                           const uint16_t* q, const uint16_t* k,
                                           const uint16_t* v, uint16_t* out) {
  attention_cpu(a, queries, q, k, v, out);
}

// The row copy of attention.cu, element after element.
template <class T>
static void copy_rows_cpu(uint64_t elements, AttCopy c, const uint32_t* from, const uint32_t* to,
                          const T* src, const T* src2, T* dst) {
  for (uint64_t e = 0; e < elements; ++e) att_copy_rows(e, c, from, to, src, src2, dst);
}

extern "C" void entroll_copy_rows_cpu_32(uint64_t elements, AttCopy c, const uint32_t* from,
                                         const uint32_t* to, const uint32_t* src,
                                         const uint32_t* src2, uint32_t* dst) {
  copy_rows_cpu(elements, c, from, to, src, src2, dst);
}

extern "C" void entroll_copy_rows_cpu_16(uint64_t elements, AttCopy c, const uint32_t* from,
                                         const uint32_t* to, const uint16_t* src,
                                         const uint16_t* src2, uint16_t* dst) {
  copy_rows_cpu(elements, c, from, to, src, src2, dst);
}

extern "C" uint32_t entroll_attention_threads() { return ATT_THREADS; }
extern "C" uint32_t entroll_attention_max_groups() { return ATT_MAX_GROUPS; }
extern "C" uint32_t entroll_attention_max_outputs() { return ATT_MAX_OUTPUTS; }

// The platform-independent exp and log, for their accuracy tests.
extern "C" double entroll_exp(double x) { return ent_exp(x); }
extern "C" double entroll_log(double x) { return ent_log(x); }
// ent_log_small, with which the host turns an alternative's kept share into its log-prob.
extern "C" double entroll_log_small(double x) { return ent_log_small(x); }

static_assert(sizeof(EntRowIn) == 64, "EntRowIn layout is shared with Rust");
static_assert(sizeof(EntTopOut) == 416, "EntTopOut layout is shared with Rust");
static_assert(sizeof(EntRowOut) == 64, "EntRowOut layout is shared with Rust");
static_assert(sizeof(AttShape) == 24, "AttShape layout is shared with Rust");
