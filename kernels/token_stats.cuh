// The full-vocabulary statistics of a logits row and its untruncated seeded draw, written once
// for two compilers: nvcc builds the `__global__` kernel of token_stats.cu from it (one thread
// block per row), and the C++ compiler builds the CPU harness of cpu_harness.cpp from the same
// functions, running each phase (the code between two barriers) for every thread id in turn.
// What CI tests on the CPU is therefore the code the GPU runs.
//
// Determinism: only IEEE-754 basic operations (+, -, *, /, fma, rint, comparisons) in f64, in a
// fixed order; exp and log are computed here, not by either platform's libm; the compilers must
// not contract a*b+c on their own (nvcc --fmad=false, the C++ compiler -ffp-contract=off). So a
// row gives the same bits on the GPU and in the harness. Definitions: docs/statistics.md.
#pragma once

#include "common.cuh"

// Threads per row: the GPU's block size, and the harness's loop over thread ids.
#define ENT_THREADS 256

// Inputs of one row.
struct EntRowIn {
  // Sampling temperature T > 0.
  double temperature;
  // The draw's Philox key: the request's seed, and the counter (token index, sample, prompt).
  uint64_t seed;
  uint32_t token_index;
  uint32_t sample;
  uint32_t prompt;
  // The SIREN nucleus: 0 strict (C_j < p), 1 inclusive (shortest prefix with C_j >= p).
  uint32_t nucleus_rule;
  // Its mass bound p, and the most candidates K considered.
  double nucleus_p;
  uint32_t max_candidates;
  // The sampling truncation: top-k (0: none), then top-p in the inclusive convention (>= 1:
  // none), renormalised.
  uint32_t top_k;
  double top_p;
  // The most probable tokens to return (OpenAI's top log-probs; 0: none, at most
  // ENT_MAX_TOP), and padding to 8 bytes.
  uint32_t top_n;
  uint32_t top_pad;
};

// The most alternatives a row returns.
#define ENT_MAX_TOP 20

// A row's most probable tokens, for a row whose top_n is above 0.
struct EntTopOut {
  // How many are listed (top_n, fewer if fewer tokens have a finite logit), and how many of
  // them, a prefix of the ranking, the truncated draw could pick.
  uint32_t count;
  uint32_t kept;
  // Whether the draw was truncated, and padding.
  uint32_t truncated;
  uint32_t pad;
  // In rank order (logit descending, id ascending): the ids, ln pi at temperature T, and, for
  // the first `kept` of a truncated draw, their weight's share of the kept weight: the host
  // takes its ln with ent_log_small, as the kernel takes the drawn token's (a log here would
  // raise the kernel's register count for every row).
  uint32_t id[ENT_MAX_TOP];
  double logprob[ENT_MAX_TOP];
  double kept_share[ENT_MAX_TOP];
};

// What leaves the device for one row.
struct EntRowOut {
  // 0: measured; 1: the row holds NaN or +inf; 2: every entry is -inf; 3: the nucleus's
  // select broke its invariant (a bug: nothing of the row is to be used).
  int32_t status;
  // The drawn token (untruncated inverse CDF over ids).
  uint32_t token;
  // ln pi(token) at temperature T.
  double logprob;
  // Full-vocabulary entropy, nats.
  double entropy;
  // ln sum_i exp((z_i - max z) / T).
  double ln_sum;
  // max z.
  float max_logit;
  // |S|, the SIREN nucleus's size.
  uint32_t nucleus_size;
  // Its probability mass, and the entropy of pi restricted to it and renormalised.
  double nucleus_mass;
  double nucleus_entropy;
  // ln of the token's probability under the truncated, renormalised distribution it was drawn
  // from (= logprob when nothing truncates).
  double sampling_logprob;
};

// Radix select digits: 4 bits per pass over a 32-bit key, 8 passes.
#define ENT_DIGIT_BITS 4
#define ENT_BINS 16

// The nucleus first ranks at most this many candidates: on a trained model's rows the nucleus
// is reached well within them, and a sort of 1,024 keys costs a sixteenth of one of 16,384. Only
// a row whose nucleus is not reached there is ranked again with all K candidates.
#define ENT_FIRST_RANKING 1024

// A ranking of at most this many keys is sorted in shared memory (in the space the radix
// passes' bins use, free by then), not in the row's scratch.
#define ENT_SHARED_SORT 4096

// Per-row scratch shared by the threads of a block.
struct EntShared {
  float part_max[ENT_THREADS];
  int32_t part_bad[ENT_THREADS];
  double part_sum[ENT_THREADS];
  // The per-thread sums of p ln p (phases 2 and 16), or the ranked candidates' weights summed
  // per thread over contiguous chunks of ranks (phase 14b), so that thread 0 finds where a
  // cumulative weight crosses a target by stepping over whole chunks, then walking one
  // (ent_crossing). One space: the rows' shared memory stays under 44.5 KB, five rows an H100
  // SM holds at once.
  union {
    double part_weighted[ENT_THREADS];
    double chunk_weight[ENT_THREADS];
  };
  float max_logit;
  int32_t status;
  double inv_t;
  double sum;
  double ln_sum;
  double target;
  int32_t crossing_chunk;
  double before_chunk;
  // Per-thread bins of the current radix pass: token counts (the ranking's select) or weights
  // (the draw's weighted select); one pass uses one of them.
  union {
    uint32_t part_bins[ENT_BINS][ENT_THREADS];
    double part_weights[ENT_BINS][ENT_THREADS];
    uint64_t sort_keys[ENT_SHARED_SORT];
  };
  // The counts of the ranking's current pass; those of its first pass, which are the same for
  // every ranking of the row (no digit is fixed yet) and so are counted once, by the pass that
  // finds the largest logit; and those of the first ranking's second pass, counted by the pass
  // that sums the weights.
  uint32_t bin_total[ENT_BINS];
  uint32_t first_bins[ENT_BINS];
  uint32_t second_bins[ENT_BINS];
  // The selected key's bits so far, which bits are fixed, and how many tokens equal to the
  // final key still belong to the candidates.
  uint32_t select_prefix;
  uint32_t select_mask;
  uint32_t select_remaining;
  // The select stops before its last digit once the tokens above the selected range and those
  // in it number at most `select_limit` (`select_done`): all of them are then ranked, and the
  // first `candidates` of that ranking are the same top tokens. How many of the range's tokens
  // are written (all of them, or after the last digit the ties still needed), and how many
  // keys are ranked in all.
  uint32_t select_limit;
  int32_t select_done;
  uint32_t range_taken;
  uint32_t ranked;
  // Whether every token of the final range is taken: then each token is placed by a shared
  // counter, in no particular order since the keys are sorted next, and `written` counts them;
  // otherwise ties are taken in id order, which needs counts over contiguous chunks of ids, one
  // more pass.
  int32_t select_whole_range;
  uint32_t written;
  // The candidates: how many (min(K, V)), and per thread the tokens above the selected key and
  // equal to it, and where each thread's go.
  uint32_t candidates;
  uint32_t part_above[ENT_THREADS];
  uint32_t part_ties[ENT_THREADS];
  uint32_t above_before[ENT_THREADS];
  uint32_t ties_before[ENT_THREADS];
  // The nucleus's size, and whether it is final (reached, or walked over all min(K, V)
  // candidates); the truncated draw's candidates (min(top_k, V)), and whether they need a
  // ranking of their own (1) or are a prefix of the nucleus's ranked candidates (0).
  uint32_t nucleus_size;
  int32_t nucleus_final;
  uint32_t draw_cap;
  int32_t rerank;
  uint32_t rerank_cap;
  // The weighted select (phases 20-26, driven by 27-30): the token where the cumulative weight
  // in rank order crosses `wsel_target` (reaches it, or passes it when `wsel_strict`), among the
  // kept tokens. Its key's bits so far and which are fixed, the weight of the kept tokens ranked
  // above the current range of keys, and whether no range crossed (rounding): then the
  // lowest-ranked kept token of positive weight is selected. The per-bin weights of the current
  // pass' range.
  double wsel_target;
  int32_t wsel_strict;
  int32_t wsel_unreached;
  uint32_t wsel_prefix;
  uint32_t wsel_mask;
  double wsel_above;
  double weight_total[ENT_BINS];
  // The selected token: which of the tokens tied at the selected key (in id order, 1-based),
  // the thread whose chunk holds it and how many tied tokens the chunks before hold, then its
  // id, its weight, and the cumulative weight through it.
  uint32_t wsel_tie;
  uint32_t wsel_chunk;
  uint32_t wsel_ties_before;
  uint32_t wsel_id;
  double wsel_weight;
  double wsel_through;
  // The kept tokens: every token (`kept_all`), or those ranked at or above (kept_key, kept_id),
  // and their weight.
  int32_t kept_all;
  uint32_t kept_key;
  uint32_t kept_id;
  double kept_weight;
  // The draw over ranked candidates (phase 19): how many it kept and their weight. The
  // alternatives' count, and whether they need a ranking of their own.
  uint32_t draw_len;
  double draw_weight;
  uint32_t top_count;
  int32_t top_rank;
};

// Philox4x32-10, as src/stats/sampling.rs: 128 random bits from a counter and a 64-bit key.
ENT_HD void ent_philox(uint32_t c[4], uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    uint64_t p0 = (uint64_t)0xD2511F53u * c[0];
    uint64_t p1 = (uint64_t)0xCD9E8D57u * c[2];
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k0;
    uint32_t n1 = (uint32_t)p1;
    uint32_t n2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k1;
    uint32_t n3 = (uint32_t)p0;
    c[0] = n0;
    c[1] = n1;
    c[2] = n2;
    c[3] = n3;
  }
}

// The draw's uniform in [0, 1) (53 bits), keyed as DrawKey::uniform.
ENT_HD double ent_uniform(const EntRowIn& in) {
  uint32_t c[4] = {in.token_index, in.sample, in.prompt, 0};
  ent_philox(c, (uint32_t)in.seed, (uint32_t)(in.seed >> 32));
  uint64_t bits = (((uint64_t)c[0] << 32) | c[1]) >> 11;
  return (double)bits * (1.0 / 9007199254740992.0);
}

// (z - max) / T: exactly 0 for the largest logit itself (also when 1/T overflows).
ENT_HD double ent_gap(float z, float max_z, double inv_t) {
  return z == max_z ? 0.0 : ((double)z - (double)max_z) * inv_t;
}

// exp(gap) of token `id`: its weight, pi(id) times sum_i exp(gap_i).
ENT_HD double ent_weight(const float* z, uint32_t id, const EntShared& s) {
  return ent_exp(ent_gap(z[id], s.max_logit, s.inv_t));
}

// Thread `t` of `n` owns ids [chunk_begin(t), chunk_begin(t + 1)): contiguous chunks, so that
// the cumulative weight over ids is the prefix over chunks, then within one chunk.
ENT_HD uint32_t ent_chunk_begin(uint32_t t, uint32_t n, uint32_t vocab) {
  uint32_t per = (vocab + n - 1) / n;
  uint64_t b = (uint64_t)t * per;
  return b < vocab ? (uint32_t)b : vocab;
}

// A 32-bit key whose ascending order is the logits' ascending order.
ENT_HD uint32_t ent_order_bits(float z) {
  uint32_t u = ent_bit_cast<uint32_t>(z);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// The logit whose key is `key` (ent_order_bits's inverse).
ENT_HD float ent_order_float(uint32_t key) {
  return ent_bit_cast<float>((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

// --- The phases; a barrier separates each from the next ------------------------------------

// 1. Each thread, over ids t, t + n, ... (neighbouring threads read neighbouring ids: one
// coalesced load per warp): the largest logit it sees, whether it sees NaN or +inf, and its
// counts of the radix select's first digit (phase 7's first pass, which reads every token).
ENT_HD void ent_phase_max(uint32_t t, uint32_t n, const float* z, uint32_t vocab, EntShared& s) {
  float m = -INFINITY;
  int bad = 0;
  uint32_t bins[ENT_BINS];
  for (int b = 0; b < ENT_BINS; ++b) bins[b] = 0;
  for (uint32_t i = t; i < vocab; i += n) {
    float x = z[i];
    if (x != x || x == INFINITY) bad = 1;
    if (x > m) m = x;
    bins[ent_order_bits(x) >> (32 - ENT_DIGIT_BITS)] += 1;
  }
  s.part_max[t] = m;
  s.part_bad[t] = bad;
  for (int b = 0; b < ENT_BINS; ++b) s.part_bins[b][t] = bins[b];
}

// 2. Thread 0: the row's largest logit and status, in thread order.
ENT_HD void ent_phase_max_combine(uint32_t t, uint32_t n, const EntRowIn& in, EntShared& s) {
  if (t != 0) return;
  float m = -INFINITY;
  int bad = 0;
  for (uint32_t i = 0; i < n; ++i) {
    if (s.part_max[i] > m) m = s.part_max[i];
    bad |= s.part_bad[i];
  }
  s.max_logit = m;
  s.status = bad ? 1 : (m == -INFINITY ? 2 : 0);
  s.inv_t = 1.0 / in.temperature;
}

// 3. Each thread: sum of exp(gap) over its chunk, and of exp(gap) * gap; and its counts of the
// first ranking's second digit among the tokens whose first digit is the one selected (the
// select's pass 1, phase 7, taken here to save a pass over the row).
ENT_HD void ent_phase_sums(uint32_t t, uint32_t n, const float* z, uint32_t vocab, EntShared& s) {
  double sum = 0.0, weighted = 0.0;
  uint32_t bins[ENT_BINS];
  for (int b = 0; b < ENT_BINS; ++b) bins[b] = 0;
  if (s.status == 0) {
    const uint32_t shift = 32 - 2 * ENT_DIGIT_BITS;
    for (uint32_t i = ent_chunk_begin(t, n, vocab); i < ent_chunk_begin(t + 1, n, vocab); ++i) {
      float x = z[i];
      double d = ent_gap(x, s.max_logit, s.inv_t);
      double e = ent_exp(d);
      sum += e;
      if (e > 0.0) weighted += e * d;
      uint32_t key = ent_order_bits(x);
      if ((key & s.select_mask) == s.select_prefix) bins[(key >> shift) & (ENT_BINS - 1)] += 1;
    }
  }
  s.part_sum[t] = sum;
  s.part_weighted[t] = weighted;
  for (int b = 0; b < ENT_BINS; ++b) s.part_bins[b][t] = bins[b];
}

// 4. Thread 0: the totals in thread order, the entropy, and the chunk where the draw's
// cumulative weight first exceeds u * sum.
ENT_HD void ent_phase_totals(uint32_t t, uint32_t n, const EntRowIn& in, EntShared& s,
                             EntRowOut& out) {
  if (t != 0) return;
  out.status = s.status;
  out.max_logit = s.max_logit;
  if (s.status != 0) return;
  double sum = 0.0, weighted = 0.0;
  for (uint32_t i = 0; i < n; ++i) {
    sum += s.part_sum[i];
    weighted += s.part_weighted[i];
  }
  s.sum = sum;
  s.ln_sum = ent_log(sum);
  out.ln_sum = s.ln_sum;
  double h = s.ln_sum - weighted / sum;
  out.entropy = h > 0.0 ? h : 0.0;
  s.target = ent_uniform(in) * sum;
  double acc = 0.0;
  int32_t chunk = -1;
  for (uint32_t i = 0; i < n; ++i) {
    if (s.part_sum[i] > 0.0 && acc + s.part_sum[i] > s.target) {
      chunk = (int32_t)i;
      break;
    }
    acc += s.part_sum[i];
  }
  s.crossing_chunk = chunk;
  s.before_chunk = acc;
}

// 5. The thread whose chunk holds the crossing: the first id whose cumulative weight exceeds
// the target; if rounding leaves it unreached, the last id of positive weight.
ENT_HD void ent_phase_draw(uint32_t t, uint32_t n, const float* z, uint32_t vocab, EntShared& s,
                           EntRowOut& out) {
  if (s.status != 0) return;
  int32_t chunk = s.crossing_chunk;
  if (chunk < 0) {
    // Unreached: thread 0 finds the last positive id.
    if (t != 0) return;
    for (uint32_t i = vocab; i-- > 0;) {
      if (ent_weight(z, i, s) > 0.0) {
        out.token = i;
        break;
      }
    }
  } else {
    if (t != (uint32_t)chunk) return;
    double acc = s.before_chunk;
    uint32_t last = ent_chunk_begin(t, n, vocab);
    for (uint32_t i = last; i < ent_chunk_begin(t + 1, n, vocab); ++i) {
      double w = ent_weight(z, i, s);
      if (w > 0.0) {
        last = i;
        acc += w;
        if (acc > s.target) break;
      }
    }
    out.token = last;
  }
  out.logprob = ent_gap(z[out.token], s.max_logit, s.inv_t) - s.ln_sum;
  out.sampling_logprob = out.logprob;
}

// --- The SIREN nucleus ------------------------------------------------------------------------
//
// The top min(K, V) tokens by (logit descending, id ascending) are found by an exact radix select
// on the logits' bit patterns, compacted in id order into the row's scratch (`P` = the smallest
// power of two >= min(K, V) 64-bit rank keys), sorted there by a bitonic sort, and walked in rank
// order by thread 0 with the same sums as the host.


// A 64-bit key whose ascending order is the ranking: higher logit first, then lower id.
ENT_HD uint64_t ent_rank_key(float z, uint32_t id) {
  return ((uint64_t)(~ent_order_bits(z)) << 32) | id;
}

// The scratch length for `candidates` keys.
ENT_HD uint32_t ent_sort_length(uint32_t candidates) {
  uint32_t p = 1;
  while (p < candidates) p <<= 1;
  return p;
}

// 6. Thread 0: start a select of the top `cap` tokens (at least 1, at most V). To skip the rest of its passes over the row the select may rank more
// keys than it needs, within the `scratch` keys the row has: up to what shared memory sorts,
// or twice the keys needed (a bitonic sort of twice the length costs about twice as much).
ENT_HD void ent_phase_select_begin(uint32_t t, uint32_t cap, uint32_t vocab, uint32_t scratch,
                                   EntShared& s) {
  if (t != 0) return;
  uint32_t k = cap < vocab ? cap : vocab;
  s.candidates = k < 1 ? 1 : k;
  s.select_prefix = 0;
  s.select_mask = 0;
  s.select_remaining = s.candidates;
  uint32_t limit = 2 * ent_sort_length(s.candidates);
  if (limit < ENT_SHARED_SORT) limit = ENT_SHARED_SORT;
  s.select_limit = limit < scratch ? limit : scratch;
  s.select_done = 0;
}

// One thread's part of a radix pass, over ids t, t + n, ... (coalesced; sums do not depend on
// the order): per digit of pass `pass` (0 = the highest), the sum of `amount(key, id)` over the
// tokens whose key matches `prefix` in the bits of `mask`, into `parts[digit][t]`.
#ifdef __CUDACC__
#pragma nv_exec_check_disable
#endif
template <class T, class Amount>
ENT_HD void ent_digit_sums(uint32_t t, uint32_t n, uint32_t pass, const float* z, uint32_t vocab,
                           int32_t status, uint32_t prefix, uint32_t mask, Amount amount,
                           T (*parts)[ENT_THREADS]) {
  T bins[ENT_BINS];
  for (int b = 0; b < ENT_BINS; ++b) bins[b] = 0;
  if (status == 0) {
    uint32_t shift = 32 - ENT_DIGIT_BITS * (pass + 1);
    for (uint32_t i = t; i < vocab; i += n) {
      uint32_t key = ent_order_bits(z[i]);
      if ((key & mask) == prefix) bins[(key >> shift) & (ENT_BINS - 1)] += amount(key, i);
    }
  }
  for (int b = 0; b < ENT_BINS; ++b) parts[b][t] = bins[b];
}

// 7. Each thread, pass `pass` >= 1 (pass 0's counts are phase 1's, and the first ranking's
// pass 1's phase 3's): its counts per digit among the tokens whose key matches the digits fixed
// so far.
ENT_HD void ent_phase_select_count(uint32_t t, uint32_t n, uint32_t pass, const float* z,
                                   uint32_t vocab, EntShared& s) {
  ent_digit_sums(t, n, pass, z, vocab, s.status, s.select_prefix, s.select_mask,
                 [](uint32_t, uint32_t) { return 1u; }, s.part_bins);
}

// 8. Thread b < ENT_BINS: bin b's count over all threads, into `totals`.
ENT_HD void ent_phase_select_totals(uint32_t t, uint32_t n, EntShared& s, uint32_t* totals) {
  if (t >= ENT_BINS || s.status != 0) return;
  uint32_t count = 0;
  for (uint32_t i = 0; i < n; ++i) count += s.part_bins[t][i];
  totals[t] = count;
}

// 9. Thread 0: the digit of the selected key in this pass, from the highest bin down, by the
// pass's counts `totals`; then whether the select is done: after the last digit, or once the
// tokens above the selected range and in it fit `select_limit`.
ENT_HD void ent_phase_select_digit(uint32_t t, uint32_t pass, EntShared& s,
                                   const uint32_t* totals) {
  if (t != 0) return;
  if (s.status != 0) {
    s.select_done = 1;
    s.select_whole_range = 1;
    s.ranked = 0;
    return;
  }
  uint32_t shift = 32 - ENT_DIGIT_BITS * (pass + 1);
  uint32_t in_range = 0;
  for (int b = ENT_BINS - 1; b >= 0; --b) {
    uint32_t count = totals[b];
    if (s.select_remaining <= count || b == 0) {
      s.select_prefix |= (uint32_t)b << shift;
      s.select_mask |= (uint32_t)(ENT_BINS - 1) << shift;
      in_range = count;
      break;
    }
    s.select_remaining -= count;
  }
  uint32_t above = s.candidates - s.select_remaining;
  if (pass + 1 == 32 / ENT_DIGIT_BITS) {
    s.select_done = 1;
    s.range_taken = s.select_remaining;
  } else if (above + in_range <= s.select_limit) {
    s.select_done = 1;
    s.range_taken = in_range;
  }
  s.select_whole_range = s.range_taken == in_range;
  s.ranked = above + s.range_taken;
  s.written = 0;
}

// 10. When ties at the selected key are taken in id order: each thread, its chunk's tokens above
// the selected key, and equal to it.
ENT_HD void ent_phase_candidates_count(uint32_t t, uint32_t n, const float* z, uint32_t vocab,
                                       EntShared& s) {
  uint32_t above = 0, ties = 0;
  if (s.status == 0) {
    for (uint32_t i = ent_chunk_begin(t, n, vocab); i < ent_chunk_begin(t + 1, n, vocab); ++i) {
      uint32_t key = ent_order_bits(z[i]);
      above += key > s.select_prefix;
      ties += key == s.select_prefix;
    }
  }
  s.part_above[t] = above;
  s.part_ties[t] = ties;
}

// 11. Thread 0: where each thread's candidates go (exclusive prefix sums in thread order).
ENT_HD void ent_phase_candidates_offsets(uint32_t t, uint32_t n, EntShared& s) {
  if (t != 0) return;
  uint32_t above = 0, ties = 0;
  for (uint32_t i = 0; i < n; ++i) {
    s.above_before[i] = above;
    s.ties_before[i] = ties;
    above += s.part_above[i];
    ties += s.part_ties[i];
  }
  // The select's invariant: exactly the candidates above the range, and at least the tokens
  // taken in it. A row that breaks it is flagged (status 3) rather than written past its
  // scratch.
  if (s.status == 0 && (above != s.candidates - s.select_remaining || ties < s.range_taken ||
                        s.range_taken < s.select_remaining))
    s.status = 3;
}

// Where the ranking's keys are sorted: in shared memory when they fit, else the row's scratch.
ENT_HD uint64_t* ent_sort_space(EntShared& s, uint64_t* keys) {
  return ent_sort_length(s.ranked) <= ENT_SHARED_SORT ? s.sort_keys : keys;
}

// The rest of the sorted space, from `ranked` keys on, holds keys that sort last.
ENT_HD void ent_pad_ranking(uint32_t t, uint32_t n, const EntShared& s, uint64_t* keys) {
  uint32_t length = ent_sort_length(s.ranked);
  for (uint32_t i = s.ranked + t; i < length; i += n) keys[i] = ~(uint64_t)0;
}

// 12. When the whole final range is taken: each thread, over ids t, t + n, ... (coalesced),
// places the rank key of every token above the selected range or in it at the next free place
// (at most `ranked` of them).
ENT_HD void ent_phase_candidates_place(uint32_t t, uint32_t n, const float* z, uint32_t vocab,
                                       EntShared& s, uint64_t* scratch) {
  if (s.status != 0) return;
  uint64_t* keys = ent_sort_space(s, scratch);
  for (uint32_t i = t; i < vocab; i += n) {
    if ((ent_order_bits(z[i]) & s.select_mask) >= s.select_prefix) {
      uint32_t at = ent_fetch_add(&s.written);
      if (at < s.ranked) keys[at] = ent_rank_key(z[i], i);
    }
  }
  ent_pad_ranking(t, n, s, keys);
}

// 12b. Thread 0: the select's invariant, that exactly `ranked` tokens were placed and that they
// hold the candidates; a row that breaks it is flagged (status 3) rather than read past its
// ranking.
ENT_HD void ent_phase_candidates_placed(uint32_t t, EntShared& s) {
  if (t == 0 && s.status == 0 && (s.written != s.ranked || s.ranked < s.candidates)) s.status = 3;
}

// 12c. Otherwise: each thread writes its chunk's rank keys, every token above the selected key,
// then the tied tokens in id order until those taken are written.
ENT_HD void ent_phase_candidates_write(uint32_t t, uint32_t n, const float* z, uint32_t vocab,
                                       EntShared& s, uint64_t* scratch) {
  if (s.status != 0) return;
  uint64_t* keys = ent_sort_space(s, scratch);
  uint32_t above_total = s.candidates - s.select_remaining;
  uint32_t a = s.above_before[t];
  uint32_t tie = s.ties_before[t];
  for (uint32_t i = ent_chunk_begin(t, n, vocab); i < ent_chunk_begin(t + 1, n, vocab); ++i) {
    uint32_t key = ent_order_bits(z[i]);
    if (key > s.select_prefix) {
      keys[a++] = ent_rank_key(z[i], i);
    } else if (key == s.select_prefix) {
      if (tie < s.range_taken) keys[above_total + tie] = ent_rank_key(z[i], i);
      ++tie;
    }
  }
  ent_pad_ranking(t, n, s, keys);
}

// 13. One step (k, j) of the bitonic sort of the scratch, ascending; pairs split over threads.
ENT_HD void ent_phase_sort_step(uint32_t t, uint32_t n, uint32_t k, uint32_t j, EntShared& s,
                                uint64_t* scratch) {
  if (s.status != 0) return;
  uint64_t* keys = ent_sort_space(s, scratch);
  uint32_t length = ent_sort_length(s.ranked);
  for (uint32_t i = t; i < length; i += n) {
    uint32_t l = i ^ j;
    if (l > i) {
      bool ascending = (i & k) == 0;
      uint64_t x = keys[i], y = keys[l];
      if ((x > y) == ascending) {
        keys[i] = y;
        keys[l] = x;
      }
    }
  }
}

// 13b. Each thread, after a sort in shared memory: the ranked candidates into the row's scratch,
// where the phases below read them.
ENT_HD void ent_phase_sorted_out(uint32_t t, uint32_t n, const EntShared& s, uint64_t* keys) {
  if (s.status != 0) return;
  for (uint32_t j = t; j < s.candidates; j += n) keys[j] = s.sort_keys[j];
}

// 14. Each thread: the weights exp(gap) of the ranked candidates j = t, t + n, ..., in rank
// order into `weights`, so that the walks below add them and compute no exp of their own.
ENT_HD void ent_phase_weights(uint32_t t, uint32_t n, const float* z, EntShared& s,
                              const uint64_t* keys, double* weights) {
  if (s.status != 0) return;
  for (uint32_t j = t; j < s.candidates; j += n) weights[j] = ent_weight(z, (uint32_t)keys[j], s);
}

// 14b. Each thread: the sum of the weights of its contiguous chunk of the ranked candidates
// (ent_chunk_begin over ranks), in rank order.
ENT_HD void ent_phase_weight_chunks(uint32_t t, uint32_t n, EntShared& s, const double* weights) {
  if (s.status != 0) return;
  double sum = 0.0;
  const uint32_t end = ent_chunk_begin(t + 1, n, s.candidates);
  for (uint32_t j = ent_chunk_begin(t, n, s.candidates); j < end; ++j) sum += weights[j];
  s.chunk_weight[t] = sum;
}

// --- Where a cumulative weight in rank order crosses a target ---------------------------------
//
// The host walks the ranked weights one by one, adding each to the sum of those before it, and
// stops at the first rank where the sum reaches the target (or passes it, `strict`). Thread 0
// gives the same answer in far fewer steps: it adds the chunk sums of phase 14b while a whole
// chunk does not cross, then walks the one chunk that does. Its sums add the same weights in
// another order, so each differs from the host's by at most (terms - 1) roundings of the
// largest (weights are >= 0): under `ent_crossing_margin`. An answer is `certain` when the sums
// on both sides of the crossing are that far from the target, so the host's, which are as near
// the exact sums, fall on the same sides; otherwise the caller walks as the host does. Only
// rows built to put a boundary on a rounding (exactly representable weights and targets, as in
// the adversarial tests) come near it.

// A crossing: the ranks through it (`limit` when none), the cumulative weight through them, and
// whether the target was crossed and the answer is the host's walk's.
struct EntCrossing {
  uint32_t len;
  double through;
  bool reached;
  bool certain;
};

// Whether `acc` crosses `target`.
ENT_HD bool ent_crosses(double acc, double target, bool strict) {
  return strict ? acc > target : acc >= target;
}

// How far from a target a cumulative weight of the first `terms` ranks must be for the host's
// walk to fall on the same side. Two sums of the same terms >= 0 in two orders are each within
// (terms - 1) x 2^-53 of the exact sum, relative, and every prefix is at most `total` (all the
// candidates' weight): B = 8 x 2^-53 x terms x total bounds their difference twice over. Three
// B: the sum's difference, the target's when it is itself such a sum times p or u, and room.
// Since the sums grow with the rank, the two sides of the crossing checked cover every rank.
ENT_HD double ent_crossing_margin(uint32_t terms, double total) {
  return 3.0 * (8.0 * 1.1102230246251565e-16) * (double)terms * total;
}

// The crossing of `target` among the first `limit` ranked candidates, by chunks (thread 0).
ENT_HD EntCrossing ent_crossing(const EntShared& s, uint32_t n, const double* weights,
                                uint32_t limit, double target, bool strict) {
  double total = 0.0;
  for (uint32_t i = 0; i < n; ++i) total += s.chunk_weight[i];
  const double margin = ent_crossing_margin(limit, total);
  double acc = 0.0;
  uint32_t whole = 0;
  for (uint32_t t = 0; t < n; ++t) {
    const uint32_t begin = whole;
    whole = ent_chunk_begin(t + 1, n, s.candidates);
    if (begin >= limit) break;
    const uint32_t end = whole < limit ? whole : limit;
    if (end == whole && !ent_crosses(acc + s.chunk_weight[t], target, strict)) {
      acc += s.chunk_weight[t];
      continue;
    }
    for (uint32_t j = begin; j < end; ++j) {
      const double before = acc;
      acc += weights[j];
      if (ent_crosses(acc, target, strict)) {
        const bool above = strict ? acc - margin > target : acc - margin >= target;
        const bool below = strict ? before + margin <= target : before + margin < target;
        return {j + 1, acc, true, above && below};
      }
    }
  }
  const bool below = strict ? acc + margin <= target : acc + margin < target;
  return {limit, acc, false, below};
}

// The crossing as the host walks it, rank by rank (thread 0), for when ent_crossing is not
// certain.
ENT_HD EntCrossing ent_walk(const double* weights, uint32_t limit, double target, bool strict) {
  double acc = 0.0;
  for (uint32_t j = 0; j < limit; ++j) {
    acc += weights[j];
    if (ent_crosses(acc, target, strict)) return {j + 1, acc, true, true};
  }
  return {limit, acc, false, true};
}

// The crossing among the first `limit` ranks, the host's: by chunks when that is certain.
ENT_HD EntCrossing ent_host_crossing(const EntShared& s, uint32_t n, const double* weights,
                                     uint32_t limit, double target, bool strict) {
  EntCrossing c = ent_crossing(s, n, weights, limit, target, strict);
  return c.certain ? c : ent_walk(weights, limit, target, strict);
}

// 15. Thread 0: the nucleus's size, where the ranked candidates' cumulative weight reaches p
// (as the host walks it). The ranked candidates are the first of the row's ranking, so when it
// is reached within them, or they are all min(K, V) candidates, the size is the one the full
// walk would give.
ENT_HD void ent_phase_nucleus_size(uint32_t t, uint32_t n, const EntRowIn& in, uint32_t vocab,
                                   EntShared& s, const double* weights, EntRowOut& out) {
  if (t != 0) return;
  out.status = s.status;
  s.nucleus_final = 1;
  if (s.status != 0) return;
  const EntCrossing c =
      ent_host_crossing(s, n, weights, s.candidates, in.nucleus_p * s.sum, false);
  s.nucleus_size = (in.nucleus_rule == 0 && c.reached) ? c.len - 1 : c.len;
  out.nucleus_size = s.nucleus_size;
  uint32_t all = in.max_candidates < vocab ? in.max_candidates : vocab;
  s.nucleus_final = c.reached || s.candidates >= (all < 1 ? 1 : all);
}

// 16. Each thread, over the nucleus's ranks j = t, t + n, ...: its part of the nucleus's mass
// and of sum p ln p.
ENT_HD void ent_phase_nucleus_parts(uint32_t t, uint32_t n, const float* z, EntShared& s,
                                    const uint64_t* keys) {
  double mass = 0.0, plogp = 0.0;
  if (s.status == 0) {
    for (uint32_t j = t; j < s.nucleus_size; j += n) {
      uint32_t id = (uint32_t)keys[j];
      double lp = ent_gap(z[id], s.max_logit, s.inv_t) - s.ln_sum;
      double p = ent_exp(lp);
      mass += p;
      if (p > 0.0) plogp += p * lp;
    }
  }
  s.part_sum[t] = mass;
  s.part_weighted[t] = plogp;
}

// 17. Thread 0: the nucleus's mass and entropy, its parts added in thread order.
ENT_HD void ent_phase_nucleus(uint32_t t, uint32_t n, EntShared& s, EntRowOut& out) {
  if (t != 0 || s.status != 0) return;
  double mass = 0.0, plogp = 0.0;
  for (uint32_t i = 0; i < n; ++i) {
    mass += s.part_sum[i];
    plogp += s.part_weighted[i];
  }
  out.nucleus_mass = mass;
  if (s.nucleus_size <= 1 || mass <= 0.0) {
    out.nucleus_entropy = 0.0;
  } else {
    double h = ent_log(mass) - plogp / mass;
    out.nucleus_entropy = h > 0.0 ? h : 0.0;
  }
}

// Whether the draw is truncated (top-k and/or top-p), and over how many top candidates.
ENT_HD bool ent_truncated(const EntRowIn& in) { return in.top_k != 0 || in.top_p < 1.0; }
ENT_HD uint32_t ent_draw_cap(const EntRowIn& in, uint32_t vocab) {
  return in.top_k != 0 && in.top_k < vocab ? in.top_k : vocab;
}

// ln x for x in (0, 1], subnormal x included.
ENT_HD double ent_log_small(double x) {
  const double two54 = 18014398509481984.0;
  if (x < 2.2250738585072014e-308) return ent_log(x * two54) - 54.0 * 0.6931471805599453;
  return ent_log(x);
}

// 18. Thread 0: whether the truncated draw's candidates, the top min(top_k, V), are a prefix of
// the ranked candidates at hand (the ranking is one total order, so its first k entries are the
// top k): when they fit in it, or, for top-p without top-k, when the candidates at hand already
// hold the top-p prefix (the walk of phase 19 stops there). Otherwise a top-k's candidates are
// ranked anew (rerank 1), with more candidates each time: the nucleus's K if that is more, else
// all the draw needs; without top-k the draw is made by weighted selects (rerank 2, phases
// 20-30), which rank nothing.
ENT_HD void ent_phase_draw_plan(uint32_t t, uint32_t n, const EntRowIn& in, uint32_t vocab,
                                EntShared& s, const double* weights) {
  if (t != 0) return;
  s.draw_cap = ent_draw_cap(in, vocab);
  s.rerank = 0;
  if (s.status != 0 || s.draw_cap <= s.candidates) return;
  if (s.draw_cap == vocab && in.top_p < 1.0 &&
      ent_host_crossing(s, n, weights, s.candidates, in.top_p * s.sum, false).reached)
    return;
  if (s.draw_cap == vocab) {
    s.rerank = 2;
    return;
  }
  s.rerank = 1;
  uint32_t nucleus = in.max_candidates < vocab ? in.max_candidates : vocab;
  s.rerank_cap = nucleus > s.candidates && nucleus < s.draw_cap ? nucleus : s.draw_cap;
}

// The truncated draw over the ranked candidates, as the host makes it: how many ranks it keeps
// (`len`), their weight, and the rank drawn. The kept ranks are the top k = min(top_k, V), or
// the inclusive top-p prefix of their weight; the drawn rank is where the inverse CDF in rank
// order passes u times the kept weight, and of positive weight (the last such before it when
// rounding leaves the sum short).
struct EntDraw {
  uint32_t len;
  double weight;
  uint32_t rank;
};

// The draw by chunks (thread 0); false when a crossing is not certain. The weights it divides
// by are its own sums, within rounding of the host's.
ENT_HD bool ent_draw_by_chunks(uint32_t n, const EntRowIn& in, uint32_t vocab, const EntShared& s,
                               const double* weights, EntDraw& d) {
  const uint32_t k = s.draw_cap;
  d.len = k;
  // The top-k weight (all of it without top-p); a top-p over all V takes the row's sum instead.
  if (in.top_p >= 1.0 || k < vocab)
    d.weight = ent_crossing(s, n, weights, k, INFINITY, false).through;
  if (in.top_p < 1.0) {
    const double top_k_weight = k < vocab ? d.weight : s.sum;
    const EntCrossing kept = ent_crossing(s, n, weights, k, in.top_p * top_k_weight, false);
    if (!kept.certain) return false;
    d.len = kept.len;
    d.weight = kept.through;
  }
  // Where the sum passes the target the weight added is positive: the host draws that rank.
  const EntCrossing drawn = ent_crossing(s, n, weights, d.len, ent_uniform(in) * d.weight, true);
  d.rank = drawn.len - 1;
  return drawn.reached && drawn.certain;
}

// The draw walked rank by rank, as the host walks it (thread 0).
ENT_HD EntDraw ent_draw_walked(const EntRowIn& in, uint32_t vocab, const EntShared& s,
                               const double* weights) {
  const uint32_t k = s.draw_cap;
  EntDraw d{k, 0.0, 0};
  if (in.top_p >= 1.0) {
    for (uint32_t j = 0; j < k; ++j) d.weight += weights[j];
  } else {
    double top_k_weight = s.sum;
    if (k < vocab) {
      top_k_weight = 0.0;
      for (uint32_t j = 0; j < k; ++j) top_k_weight += weights[j];
    }
    const EntCrossing kept = ent_walk(weights, k, in.top_p * top_k_weight, false);
    d.len = kept.len;
    d.weight = kept.through;
  }
  const double target = ent_uniform(in) * d.weight;
  double acc = 0.0;
  for (uint32_t j = 0; j < d.len; ++j) {
    if (weights[j] > 0.0) d.rank = j;
    acc += weights[j];
    if (acc > target) break;
  }
  return d;
}

// 19. Thread 0: the truncated draw over the ranked candidates (the top k = min(top_k, V)), the
// host's: by chunks, or walked when a crossing is within rounding. A ranking that broke its
// invariant fails the row.
ENT_HD void ent_phase_truncated_draw(uint32_t t, uint32_t n, const EntRowIn& in, const float* z,
                                     uint32_t vocab, EntShared& s, const uint64_t* keys,
                                     const double* weights, EntRowOut& out, bool keep_kept) {
  if (t != 0) return;
  if (s.status != 0) {
    out.status = s.status;
    return;
  }
  EntDraw d;
  if (!ent_draw_by_chunks(n, in, vocab, s, weights, d)) d = ent_draw_walked(in, vocab, s, weights);
  const uint32_t token = (uint32_t)keys[d.rank];
  out.token = token;
  out.logprob = ent_gap(z[token], s.max_logit, s.inv_t) - s.ln_sum;
  out.sampling_logprob = ent_log_small(weights[d.rank] / d.weight);
  // For the alternatives (a constant per kernel: the kernel without them stores nothing).
  if (keep_kept) {
    s.draw_len = d.len;
    s.draw_weight = d.weight;
  }
}

// --- The truncated draw without top-k, by weighted selects --------------------------------
//
// Top-p without top-k (or a top-k >= V) keeps a prefix of the whole ranking, which on a flat row
// holds most of V: ranking it would sort the vocabulary. Instead the draw finds its two
// boundaries by radix selects that sum weights instead of counting tokens: the top-p prefix's
// last token (the first whose cumulative weight in rank order reaches top_p times the total),
// then the drawn token (the first whose cumulative weight passes u times the kept weight). Each
// select reads the row once per digit, as the ranking's does, and sorts nothing. The sums are
// per thread, then per bin in thread order: a fixed order (the same bits on the GPU and in the
// harness), though not the host's rank order, so a boundary within rounding of a cumulative
// weight may fall one token apart from the host's, as the nucleus's may at p = 1.

// Whether token `id` with key `key` is among the kept tokens.
ENT_HD bool ent_kept(uint32_t key, uint32_t id, const EntShared& s) {
  return s.kept_all || key > s.kept_key || (key == s.kept_key && id <= s.kept_id);
}

// Whether a cumulative weight `acc` crosses the select's target.
ENT_HD bool ent_wsel_crosses(double acc, const EntShared& s) {
  return s.wsel_strict ? acc > s.wsel_target : acc >= s.wsel_target;
}

// 20. Thread 0: start a weighted select for `target`.
ENT_HD void ent_phase_wsel_begin(uint32_t t, double target, int32_t strict, EntShared& s) {
  if (t != 0) return;
  s.wsel_target = target;
  s.wsel_strict = strict;
  s.wsel_unreached = 0;
  s.wsel_prefix = 0;
  s.wsel_mask = 0;
  s.wsel_above = 0.0;
}

// 21. Each thread: its weights per digit of the kept tokens whose key matches the digits fixed
// so far (adding 0.0 for the others leaves a sum's bits as they are).
ENT_HD void ent_phase_wsel_sum(uint32_t t, uint32_t n, uint32_t pass, const float* z,
                               uint32_t vocab, EntShared& s) {
  ent_digit_sums(
      t, n, pass, z, vocab, s.status, s.wsel_prefix, s.wsel_mask,
      [&](uint32_t key, uint32_t i) { return ent_kept(key, i, s) ? ent_weight(z, i, s) : 0.0; },
      s.part_weights);
}

// 22. Thread b < ENT_BINS: bin b's weight, its threads' parts added in thread order.
ENT_HD void ent_phase_wsel_totals(uint32_t t, uint32_t n, EntShared& s) {
  if (t >= ENT_BINS || s.status != 0) return;
  double weight = 0.0;
  for (uint32_t i = 0; i < n; ++i) weight += s.part_weights[t][i];
  s.weight_total[t] = weight;
}

// 23. Thread 0: this pass' digit, walking the bins from the highest down: the first of positive
// weight whose weight crosses the target, the weight of the bins above it added. If none does,
// the select is unreached from here on and takes the lowest bin of positive weight.
ENT_HD void ent_phase_wsel_digit(uint32_t t, uint32_t pass, EntShared& s) {
  if (t != 0 || s.status != 0) return;
  uint32_t shift = 32 - ENT_DIGIT_BITS * (pass + 1);
  int chosen = -1;
  double above = s.wsel_above;
  if (!s.wsel_unreached) {
    for (int b = ENT_BINS - 1; b >= 0; --b) {
      double w = s.weight_total[b];
      if (w > 0.0 && ent_wsel_crosses(above + w, s)) {
        chosen = b;
        break;
      }
      above += w;
    }
  }
  if (chosen < 0) {
    s.wsel_unreached = 1;
    above = s.wsel_above;
    int lowest = -1;
    for (int b = 0; b < ENT_BINS; ++b) {
      if (s.weight_total[b] > 0.0) {
        lowest = b;
        break;
      }
    }
    // No kept token of positive weight in range: the select broke its invariant.
    if (lowest < 0) {
      s.status = 3;
      return;
    }
    for (int b = ENT_BINS - 1; b > lowest; --b) above += s.weight_total[b];
    chosen = lowest;
  }
  s.wsel_above = above;
  s.wsel_prefix |= (uint32_t)chosen << shift;
  s.wsel_mask |= (uint32_t)(ENT_BINS - 1) << shift;
}

// 24. Each thread: its chunk's kept tokens tied at the selected key.
ENT_HD void ent_phase_wsel_ties(uint32_t t, uint32_t n, const float* z, uint32_t vocab,
                                EntShared& s) {
  uint32_t ties = 0;
  if (s.status == 0) {
    for (uint32_t i = ent_chunk_begin(t, n, vocab); i < ent_chunk_begin(t + 1, n, vocab); ++i) {
      uint32_t key = ent_order_bits(z[i]);
      ties += key == s.wsel_prefix && ent_kept(key, i, s);
    }
  }
  s.part_ties[t] = ties;
}

// 25. Thread 0: the tied tokens in id order, each adding the key's weight, until the target is
// crossed (all of them if it is not, or if the select is unreached); then the chunk that holds
// the last one taken.
ENT_HD void ent_phase_wsel_walk(uint32_t t, uint32_t n, EntShared& s) {
  if (t != 0 || s.status != 0) return;
  uint32_t ties = 0;
  for (uint32_t i = 0; i < n; ++i) ties += s.part_ties[i];
  if (ties == 0) {
    s.status = 3;
    return;
  }
  double w = ent_exp(ent_gap(ent_order_float(s.wsel_prefix), s.max_logit, s.inv_t));
  double acc = s.wsel_above;
  uint32_t m = 0;
  while (m < ties) {
    acc += w;
    m += 1;
    if (!s.wsel_unreached && ent_wsel_crosses(acc, s)) break;
  }
  s.wsel_tie = m;
  s.wsel_weight = w;
  s.wsel_through = acc;
  uint32_t before = 0;
  for (uint32_t i = 0; i < n; ++i) {
    if (before + s.part_ties[i] >= m) {
      s.wsel_chunk = i;
      break;
    }
    before += s.part_ties[i];
  }
  s.wsel_ties_before = before;
}

// 26. The thread whose chunk holds it: the id of the selected tied token.
ENT_HD void ent_phase_wsel_find(uint32_t t, uint32_t n, const float* z, uint32_t vocab,
                                EntShared& s) {
  if (s.status != 0 || t != s.wsel_chunk) return;
  uint32_t seen = s.wsel_ties_before;
  for (uint32_t i = ent_chunk_begin(t, n, vocab); i < ent_chunk_begin(t + 1, n, vocab); ++i) {
    uint32_t key = ent_order_bits(z[i]);
    if (key == s.wsel_prefix && ent_kept(key, i, s) && ++seen == s.wsel_tie) {
      s.wsel_id = i;
      return;
    }
  }
}

// 27. Thread 0: keep every token, then, for top-p, start the select of the prefix's last token.
ENT_HD void ent_phase_keep_begin(uint32_t t, const EntRowIn& in, EntShared& s) {
  if (t != 0) return;
  s.kept_all = 1;
  s.kept_weight = s.sum;
  if (in.top_p < 1.0) ent_phase_wsel_begin(t, in.top_p * s.sum, 0, s);
}

// 28. Thread 0: keep the tokens ranked at or above the prefix's last token.
ENT_HD void ent_phase_keep_prefix(uint32_t t, EntShared& s) {
  if (t != 0 || s.status != 0) return;
  s.kept_all = 0;
  s.kept_key = s.wsel_prefix;
  s.kept_id = s.wsel_id;
  s.kept_weight = s.wsel_through;
}

// 29. Thread 0: start the select of the drawn token.
ENT_HD void ent_phase_draw_begin(uint32_t t, const EntRowIn& in, EntShared& s) {
  if (t != 0) return;
  ent_phase_wsel_begin(t, ent_uniform(in) * s.kept_weight, 1, s);
}

// 30. Thread 0: the drawn token's results.
ENT_HD void ent_phase_selected_draw(uint32_t t, const float* z, EntShared& s, EntRowOut& out) {
  if (t != 0) return;
  out.status = s.status;
  if (s.status != 0) return;
  out.token = s.wsel_id;
  out.logprob = ent_gap(z[s.wsel_id], s.max_logit, s.inv_t) - s.ln_sum;
  out.sampling_logprob = ent_log_small(s.wsel_weight / s.kept_weight);
}

// --- The alternatives ------------------------------------------------------------------------
//
// The top min(top_n, V) tokens are the first of any ranking of at least that many candidates:
// those at hand after the nucleus and the draw, or a ranking of their own when fewer are.

// 31. Thread 0: how many alternatives, and whether the candidates at hand hold them.
ENT_HD void ent_phase_top_plan(uint32_t t, const EntRowIn& in, uint32_t vocab, EntShared& s) {
  if (t != 0) return;
  uint32_t count = in.top_n < ENT_MAX_TOP ? in.top_n : ENT_MAX_TOP;
  s.top_count = count < vocab ? count : vocab;
  s.top_rank = s.status == 0 && s.candidates < s.top_count;
}

// 32. Thread 0: the alternatives in rank order, up to the first masked (-inf) token: their
// log-probs, how many are kept (a prefix of the ranking, as the truncation keeps), and a kept
// one's share of the weight the draw divided by (the ranked candidates' prefix, or the weighted
// selects' kept tokens, or all of them); and whether the draw was truncated.
ENT_HD void ent_phase_top(uint32_t t, const EntRowIn& in, const float* z, EntShared& s,
                          const uint64_t* keys, EntTopOut& top) {
  if (t != 0) return;
  top.count = 0;
  top.kept = 0;
  if (s.status != 0) return;
  const bool truncated = ent_truncated(in);
  const bool selected = truncated && s.rerank == 2;
  const double weight = !truncated ? s.sum : (selected ? s.kept_weight : s.draw_weight);
  top.truncated = truncated;
  for (uint32_t j = 0; j < s.top_count; ++j) {
    uint32_t id = (uint32_t)keys[j];
    float x = z[id];
    if (x == -INFINITY) break;
    bool kept = !truncated || (selected ? ent_kept(ent_order_bits(x), id, s) : j < s.draw_len);
    top.id[j] = id;
    top.logprob[j] = ent_gap(x, s.max_logit, s.inv_t) - s.ln_sum;
    top.kept_share[j] = kept ? ent_weight(z, id, s) / weight : 0.0;
    top.kept += kept;
    top.count = j + 1;
  }
}

// --- The row: every phase in order ---------------------------------------------------------

// Runs every phase of one row through `each`, which runs a phase for every thread id and
// returns when all have finished it: the GPU kernel's `each` calls it for its own thread then
// waits at a barrier; the harness's calls it for each thread id in turn. The sequence of phases
// is this one function on both.
#ifdef __CUDACC__
#pragma nv_exec_check_disable
#endif
template <class Each>
ENT_HD void ent_ranked(Each each, uint32_t n, uint32_t cap, const float* z, uint32_t vocab,
                       EntShared& s, uint64_t* keys, uint32_t scratch, bool first) {
  // Leaves the top min(cap, V) rank keys sorted at the start of `keys`. Every ranking takes its
  // first digit from phase 1's counts; the row's first ranking was begun before phase 3, which
  // counted its second digit.
  if (!first) {
    each([&](uint32_t t) { ent_phase_select_begin(t, cap, vocab, scratch, s); });
    each([&](uint32_t t) { ent_phase_select_digit(t, 0, s, s.first_bins); });
  }
  // s.select_done is read after the barrier: the same branch in every thread.
  for (uint32_t pass = 1; !s.select_done; ++pass) {
    if (first && pass == 1) {
      each([&](uint32_t t) { ent_phase_select_digit(t, pass, s, s.second_bins); });
      continue;
    }
    each([&](uint32_t t) { ent_phase_select_count(t, n, pass, z, vocab, s); });
    each([&](uint32_t t) { ent_phase_select_totals(t, n, s, s.bin_total); });
    each([&](uint32_t t) { ent_phase_select_digit(t, pass, s, s.bin_total); });
  }
  // s.select_whole_range is read after the barrier: the same branch in every thread.
  if (s.select_whole_range) {
    each([&](uint32_t t) { ent_phase_candidates_place(t, n, z, vocab, s, keys); });
    each([&](uint32_t t) { ent_phase_candidates_placed(t, s); });
  } else {
    each([&](uint32_t t) { ent_phase_candidates_count(t, n, z, vocab, s); });
    each([&](uint32_t t) { ent_phase_candidates_offsets(t, n, s); });
    each([&](uint32_t t) { ent_phase_candidates_write(t, n, z, vocab, s, keys); });
  }
  const uint32_t length = ent_sort_length(s.ranked);
  for (uint32_t k = 2; k <= length; k <<= 1) {
    for (uint32_t j = k >> 1; j > 0; j >>= 1) {
      each([&](uint32_t t) { ent_phase_sort_step(t, n, k, j, s, keys); });
    }
  }
  if (length <= ENT_SHARED_SORT) each([&](uint32_t t) { ent_phase_sorted_out(t, n, s, keys); });
}

#ifdef __CUDACC__
#pragma nv_exec_check_disable
#endif
template <class Each>
ENT_HD void ent_weighted_select(Each each, uint32_t n, const float* z, uint32_t vocab,
                                EntShared& s) {
  // From a started select (phase 20), leaves the selected token in s.wsel_id.
  for (uint32_t pass = 0; pass < 32 / ENT_DIGIT_BITS; ++pass) {
    each([&](uint32_t t) { ent_phase_wsel_sum(t, n, pass, z, vocab, s); });
    each([&](uint32_t t) { ent_phase_wsel_totals(t, n, s); });
    each([&](uint32_t t) { ent_phase_wsel_digit(t, pass, s); });
  }
  each([&](uint32_t t) { ent_phase_wsel_ties(t, n, z, vocab, s); });
  each([&](uint32_t t) { ent_phase_wsel_walk(t, n, s); });
  each([&](uint32_t t) { ent_phase_wsel_find(t, n, z, vocab, s); });
}

#ifdef __CUDACC__
#pragma nv_exec_check_disable
#endif
template <bool WithTop, class Each>
ENT_HD void ent_row(Each each, uint32_t n, const float* z, uint32_t vocab, const EntRowIn& in,
                    EntShared& s, uint64_t* keys, double* weights, uint32_t scratch,
                    EntRowOut& out, EntTopOut& top) {
  each([&](uint32_t t) { ent_phase_max(t, n, z, vocab, s); });
  each([&](uint32_t t) { ent_phase_max_combine(t, n, in, s); });
  each([&](uint32_t t) { ent_phase_select_totals(t, n, s, s.first_bins); });
  uint32_t first = in.max_candidates < ENT_FIRST_RANKING ? in.max_candidates : ENT_FIRST_RANKING;
  each([&](uint32_t t) { ent_phase_select_begin(t, first, vocab, scratch, s); });
  each([&](uint32_t t) { ent_phase_select_digit(t, 0, s, s.first_bins); });
  each([&](uint32_t t) { ent_phase_sums(t, n, z, vocab, s); });
  each([&](uint32_t t) { ent_phase_totals(t, n, in, s, out); });
  each([&](uint32_t t) { ent_phase_select_totals(t, n, s, s.second_bins); });
  each([&](uint32_t t) { ent_phase_draw(t, n, z, vocab, s, out); });
  // The ranked candidates' weights, and their sums by chunks.
  auto weigh = [&]() {
    each([&](uint32_t t) { ent_phase_weights(t, n, z, s, keys, weights); });
    each([&](uint32_t t) { ent_phase_weight_chunks(t, n, s, weights); });
  };
  ent_ranked(each, n, first, z, vocab, s, keys, scratch, true);
  weigh();
  each([&](uint32_t t) { ent_phase_nucleus_size(t, n, in, vocab, s, weights, out); });
  // s.nucleus_final is read after the barrier: the same branch in every thread.
  if (!s.nucleus_final) {
    ent_ranked(each, n, in.max_candidates, z, vocab, s, keys, scratch, false);
    weigh();
    each([&](uint32_t t) { ent_phase_nucleus_size(t, n, in, vocab, s, weights, out); });
  }
  each([&](uint32_t t) { ent_phase_nucleus_parts(t, n, z, s, keys); });
  each([&](uint32_t t) { ent_phase_nucleus(t, n, s, out); });
  if (ent_truncated(in)) {
    // The nucleus's parts took the chunk sums' place: summed again.
    each([&](uint32_t t) { ent_phase_weight_chunks(t, n, s, weights); });
    each([&](uint32_t t) { ent_phase_draw_plan(t, n, in, vocab, s, weights); });
    // s.rerank is read after the barrier: the same branch in every thread. Each ranking holds
    // more candidates than the one before, so this runs at most twice.
    while (s.rerank == 1) {
      ent_ranked(each, n, s.rerank_cap, z, vocab, s, keys, scratch, false);
      weigh();
      each([&](uint32_t t) { ent_phase_draw_plan(t, n, in, vocab, s, weights); });
    }
    if (s.rerank == 2) {
      each([&](uint32_t t) { ent_phase_keep_begin(t, in, s); });
      if (in.top_p < 1.0) {
        ent_weighted_select(each, n, z, vocab, s);
        each([&](uint32_t t) { ent_phase_keep_prefix(t, s); });
      }
      each([&](uint32_t t) { ent_phase_draw_begin(t, in, s); });
      ent_weighted_select(each, n, z, vocab, s);
      each([&](uint32_t t) { ent_phase_selected_draw(t, z, s, out); });
    } else {
      each([&](uint32_t t) {
        ent_phase_truncated_draw(t, n, in, z, vocab, s, keys, weights, out, WithTop);
      });
    }
  }
  // The alternatives' phases are compiled only into the kernel that returns them (WithTop): the
  // other, which serves every batch without them, keeps its registers. in.top_n and then
  // s.top_rank are read after a barrier: the same branch in every thread.
  if (WithTop && in.top_n > 0) {
    each([&](uint32_t t) { ent_phase_top_plan(t, in, vocab, s); });
    if (s.top_rank) ent_ranked(each, n, s.top_count, z, vocab, s, keys, scratch, false);
    each([&](uint32_t t) { ent_phase_top(t, in, z, s, keys, top); });
  }
}
