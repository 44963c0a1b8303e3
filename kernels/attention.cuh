// Attention of each query token over its own sequence's cached keys and values, read in place
// from the native engine's paged cache through the token's block table: position j of key/value
// head h is row `(table[j / size] * kv_heads + h) * size + j % size` of `[rows, d]`, so one
// block's keys of one head are `size * d` contiguous elements. No gathered copies, no mask
// tensor (a query at position p reads positions 0..=p of its sequence),
// the same code for prompt chunks and decode steps. Written once for nvcc (attention.cu: one
// thread block per (query token, key/value head)) and for the CPU harness (cpu_harness.cpp),
// which runs each phase for every thread id in turn, as in token_stats.cuh.
//
// The block walks the positions in tiles of ATT_TILE with an online softmax: per tile, the
// scores of the tile (a thread per position), the new running maximum and the rescaling of
// what was accumulated (a thread per query head), the weights (a thread per score), their sum
// in position order (a thread per query head), then the weighted values (a thread per output
// element, positions in order). Every reduction has a fixed order and exp is common.cuh's, so
// a query's result does not depend on the batch it runs in, and the GPU and the harness give
// the same bits. Elements are float32 or bfloat16 (converted here, round to nearest even);
// arithmetic is float32, exp's argument and result rounded from float64.
#pragma once

#include "common.cuh"

// Threads per block.
#define ATT_THREADS 128
// Positions per tile.
#define ATT_TILE 128
// Most query heads per key/value head, and most outputs (query heads x head width) per block.
#define ATT_MAX_GROUPS 16
#define ATT_MAX_OUTPUTS 4096

// The problem, the same for every block.
struct AttShape {
  uint32_t queries;   // query tokens
  uint32_t heads;     // query heads
  uint32_t kv_heads;  // key/value heads
  uint32_t head_dim;  // width of a head
  uint32_t block_size;  // positions per cache block
  float scale;        // 1 / sqrt(head_dim)
};

// One block's working memory.
struct AttShared {
  float q[ATT_MAX_OUTPUTS];
  float acc[ATT_MAX_OUTPUTS];
  float w[ATT_MAX_GROUPS][ATT_TILE];
  float max[ATT_MAX_GROUPS];
  float sum[ATT_MAX_GROUPS];
  float alpha[ATT_MAX_GROUPS];
};

// bfloat16 as raw bits, converted by hand (the same on both compilers).
ENT_HD float att_bf16_to_float(uint16_t b) { return ent_bit_cast<float>((uint32_t)b << 16); }

ENT_HD uint16_t att_float_to_bf16(float f) {
  uint32_t u = ent_bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // NaN stays NaN
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

ENT_HD float att_load(const float* p, uint64_t i) { return p[i]; }
ENT_HD float att_load(const uint16_t* p, uint64_t i) { return att_bf16_to_float(p[i]); }
ENT_HD void att_store(float* p, uint64_t i, float x) { p[i] = x; }
ENT_HD void att_store(uint16_t* p, uint64_t i, float x) { p[i] = att_float_to_bf16(x); }

// e^x in float32 for x <= 0, through common.cuh's float64 exp (one rounding).
ENT_HD float att_exp(float x) { return (float)ent_exp((double)x); }

// The thread block's query token, key/value head, that token's position and its block table.
// `queries` is `[table offset, position]` per token, then the tables.
struct AttBlock {
  uint32_t token, kv_head, position;
  const uint32_t* table;
};

ENT_HD AttBlock att_block(uint32_t block, const AttShape& a, const uint32_t* queries) {
  AttBlock b;
  b.token = block / a.kv_heads;
  b.kv_head = block % a.kv_heads;
  b.table = queries + 2 * (uint64_t)a.queries + queries[2 * b.token];
  b.position = queries[2 * b.token + 1];
  return b;
}

// The first element of position j's row for the block's key/value head.
ENT_HD uint64_t att_row(const AttShape& a, const AttBlock& b, uint32_t j) {
  uint64_t block = b.table[j / a.block_size];
  return ((block * a.kv_heads + b.kv_head) * a.block_size + j % a.block_size) * a.head_dim;
}

// Loads the block's query heads (as float) and clears the accumulators.
template <class T>
ENT_HD void att_phase_begin(uint32_t t, uint32_t n, const AttShape& a, const AttBlock& b,
                            const T* q, AttShared& s) {
  uint32_t groups = a.heads / a.kv_heads, outputs = groups * a.head_dim;
  uint64_t first = ((uint64_t)b.token * a.heads + (uint64_t)b.kv_head * groups) * a.head_dim;
  for (uint32_t o = t; o < outputs; o += n) {
    s.q[o] = att_load(q, first + o);
    s.acc[o] = 0.0f;
  }
  if (t < groups) {
    s.max[t] = -INFINITY;
    s.sum[t] = 0.0f;
  }
}

// The scores of the tile's positions, a thread per position: each key element is loaded once
// for every query head of the key/value head, each dot product summed in index order.
template <class T>
ENT_HD void att_phase_scores(uint32_t t, uint32_t n, const AttShape& a, const AttBlock& b,
                             uint32_t start, uint32_t len, const T* k, AttShared& s) {
  uint32_t groups = a.heads / a.kv_heads, d = a.head_dim;
  for (uint32_t j = t; j < len; j += n) {
    uint64_t row = att_row(a, b, start + j);
    float dot[ATT_MAX_GROUPS];
    for (uint32_t g = 0; g < groups; ++g) dot[g] = 0.0f;
    for (uint32_t i = 0; i < d; ++i) {
      float key = att_load(k, row + i);
      for (uint32_t g = 0; g < groups; ++g) dot[g] = dot[g] + s.q[g * d + i] * key;
    }
    for (uint32_t g = 0; g < groups; ++g) s.w[g][j] = dot[g] * a.scale;
  }
}

// A thread per query head: the running maximum over this tile, and the factor that rescales
// what was accumulated under the previous maximum.
ENT_HD void att_phase_max(uint32_t t, const AttShape& a, uint32_t len, AttShared& s) {
  if (t >= a.heads / a.kv_heads) return;
  float m = s.max[t];
  for (uint32_t j = 0; j < len; ++j) m = s.w[t][j] > m ? s.w[t][j] : m;
  s.alpha[t] = s.max[t] == -INFINITY ? 0.0f : att_exp(s.max[t] - m);
  s.max[t] = m;
}

// A thread per score: its weight under the running maximum.
ENT_HD void att_phase_weights(uint32_t t, uint32_t n, const AttShape& a, uint32_t len,
                              AttShared& s) {
  uint32_t groups = a.heads / a.kv_heads;
  for (uint32_t e = t; e < groups * len; e += n) {
    uint32_t g = e / len, j = e % len;
    s.w[g][j] = att_exp(s.w[g][j] - s.max[g]);
  }
}

// A thread per query head: the running sum of weights, rescaled, then this tile's in order.
ENT_HD void att_phase_sum(uint32_t t, const AttShape& a, uint32_t len, AttShared& s) {
  if (t >= a.heads / a.kv_heads) return;
  float sum = s.sum[t] * s.alpha[t];
  for (uint32_t j = 0; j < len; ++j) sum = sum + s.w[t][j];
  s.sum[t] = sum;
}

// A thread per output element: the accumulated weighted values, rescaled, then this tile's
// positions in order.
template <class T>
ENT_HD void att_phase_values(uint32_t t, uint32_t n, const AttShape& a, const AttBlock& b,
                             uint32_t start, uint32_t len, const T* v, AttShared& s) {
  uint32_t groups = a.heads / a.kv_heads, d = a.head_dim;
  for (uint32_t o = t; o < groups * d; o += n) {
    uint32_t g = o / d, i = o % d;
    float acc = s.acc[o] * s.alpha[g];
    for (uint32_t j = 0; j < len; ++j)
      acc = acc + s.w[g][j] * att_load(v, att_row(a, b, start + j) + i);
    s.acc[o] = acc;
  }
}

// The normalised outputs, into `out` `[queries, heads * head_dim]`.
template <class T>
ENT_HD void att_phase_end(uint32_t t, uint32_t n, const AttShape& a, const AttBlock& b,
                          const AttShared& s, T* out) {
  uint32_t groups = a.heads / a.kv_heads, d = a.head_dim;
  uint64_t first = ((uint64_t)b.token * a.heads + (uint64_t)b.kv_head * groups) * d;
  for (uint32_t o = t; o < groups * d; o += n) att_store(out, first + o, s.acc[o] / s.sum[o / d]);
}

// The phases of one block in order; `each` runs a phase for its thread (GPU) or for every
// thread (harness). The tile loop's bounds are the same for every thread of the block.
#ifdef __CUDACC__
#pragma nv_exec_check_disable
#endif
template <class Each, class T>
ENT_HD void att_run(Each each, uint32_t n, uint32_t block, const AttShape& a,
                    const uint32_t* queries, const T* q, const T* k, const T* v, AttShared& s,
                    T* out) {
  const AttBlock b = att_block(block, a, queries);
  each([&](uint32_t t) { att_phase_begin(t, n, a, b, q, s); });
  uint32_t positions = b.position + 1;
  for (uint32_t start = 0; start < positions; start += ATT_TILE) {
    uint32_t len = positions - start < ATT_TILE ? positions - start : ATT_TILE;
    each([&](uint32_t t) { att_phase_scores(t, n, a, b, start, len, k, s); });
    each([&](uint32_t t) { att_phase_max(t, a, len, s); });
    each([&](uint32_t t) { att_phase_weights(t, n, a, len, s); });
    each([&](uint32_t t) { att_phase_sum(t, a, len, s); });
    each([&](uint32_t t) { att_phase_values(t, n, a, b, start, len, v, s); });
  }
  each([&](uint32_t t) { att_phase_end(t, n, a, b, s, out); });
}

// The row copy: `rows` rows of `width` elements (element type T as raw bits), row `from[i]` of a
// source to row `to[i]` of `dst`, each element by its own thread. A source's row r is element
// `(r / per) * stride + (r % per) * width`: `per` rows of width side by side in each of its
// lines, lines `stride` elements apart (a contiguous source is per 1, stride width; a layer's
// keys or values as the projection wrote them, [tokens, kv_heads * width] lines of a wider
// output, are per kv_heads). Elements `rows * width` and beyond copy the second source the
// same way (its own per2 and stride2: the keys may be contiguous and the values not) into the
// second half of `dst`, `half` rows on: a layer's keys and values written into its one cache
// tensor, keys' half then values', in one launch.
struct AttCopy {
  uint64_t rows;     // rows copied from each source
  uint64_t width;    // elements a row
  uint64_t per;      // rows of a line of the first source
  uint64_t stride;   // elements from one line of the first source to the next
  uint64_t per2;     // the same two for the second source
  uint64_t stride2;
  uint64_t half;     // rows of dst before the second source's half
};

template <class T>
ENT_HD void att_copy_rows(uint64_t e, const AttCopy& c, const uint32_t* from, const uint32_t* to,
                          const T* src, const T* src2, T* dst) {
  uint64_t i = e / c.width, x = e % c.width, shift = 0, per = c.per, stride = c.stride;
  if (i >= c.rows) {
    i -= c.rows;
    src = src2;
    shift = c.half;
    per = c.per2;
    stride = c.stride2;
  }
  uint64_t r = from[i];
  dst[(shift + to[i]) * c.width + x] = src[(r / per) * stride + (r % per) * c.width + x];
}
