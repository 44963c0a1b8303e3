// What entroll's device kernels share: the qualifier that compiles a function for both the GPU
// and the CPU harness, and arithmetic that gives the same bits on both (no platform libm).
#pragma once

#include <stdint.h>

#ifdef __CUDACC__
#define ENT_HD __host__ __device__ inline
#else
#define ENT_HD inline
#include <cmath>
using std::fma;
using std::rint;
#endif

// Returns *counter and adds 1 to it: an atomic add on the GPU, where a block's threads run
// together; a plain one in the harness, which runs one thread at a time. What it hands out is
// in no fixed order on the GPU, so it only places items that are sorted afterwards.
ENT_HD uint32_t ent_fetch_add(uint32_t* counter) {
#ifdef __CUDA_ARCH__
  return atomicAdd(counter, 1u);
#else
  return (*counter)++;
#endif
}

// --- Arithmetic that is the same on both platforms ---------------------------------------

// The value whose bits are `from`'s, as another type of the same size (C++20's bit_cast).
template <class To, class From>
ENT_HD To ent_bit_cast(From from) {
  static_assert(sizeof(To) == sizeof(From), "a bit cast keeps the size");
  union {
    From from;
    To to;
  } v;
  v.from = from;
  return v.to;
}

// 2^n for -1022 <= n <= 1023, exactly.
ENT_HD double ent_pow2(int n) { return ent_bit_cast<double>((uint64_t)(n + 1023) << 52); }

// e^x for x <= 0 (the tempered gaps below the largest logit), within ~1 ulp: x = k ln 2 + r
// with |r| <= ln 2 / 2, e^r by its Taylor series to r^13 (the next term is below 2^-57), then
// scaled by 2^k in two exact steps so that subnormal results round once.
ENT_HD double ent_exp(double x) {
  if (x < -745.2) return 0.0;
  if (x > 0.0) x = 0.0;
  const double log2e = 1.4426950408889634;
  const double ln2_hi = 6.93147180369123816490e-01;
  const double ln2_lo = 1.90821492927058770002e-10;
  double k = rint(x * log2e);
  double r = fma(-k, ln2_hi, x);
  r = fma(-k, ln2_lo, r);
  // 1/n! for n = 13 down to 1.
  const double c[13] = {1.6059043836821613e-10, 2.08767569878681e-09, 2.505210838544172e-08,
                        2.755731922398589e-07,  2.7557319223985893e-06, 2.48015873015873e-05,
                        1.984126984126984e-04,  1.388888888888889e-03,  8.333333333333333e-03,
                        4.1666666666666664e-02, 1.6666666666666666e-01, 0.5,
                        1.0};
  double p = c[0];
  for (int i = 1; i < 13; ++i) p = fma(p, r, c[i]);
  p = fma(p, r, 1.0);
  int n = (int)k;
  int half = n / 2;
  return (p * ent_pow2(half)) * ent_pow2(n - half);
}

// ln x for finite x > 0 (normal), within ~1 ulp: x = m 2^e with m in [sqrt(1/2), sqrt(2)),
// ln m = 2 atanh(s), s = (m - 1) / (m + 1), by its series to s^27.
ENT_HD double ent_log(double x) {
  uint64_t bits = ent_bit_cast<uint64_t>(x);
  int e = (int)((bits >> 52) & 0x7ff) - 1023;
  double m = ent_bit_cast<double>((bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL);
  if (m > 1.4142135623730951) {
    m = m * 0.5;
    e += 1;
  }
  double s = (m - 1.0) / (m + 1.0);
  double s2 = s * s;
  double p = 1.0 / 27.0;
  for (int n = 25; n >= 1; n -= 2) p = fma(p, s2, 1.0 / (double)n);
  double ln_m = 2.0 * s * p;
  const double ln2_hi = 6.93147180369123816490e-01;
  const double ln2_lo = 1.90821492927058770002e-10;
  return fma((double)e, ln2_hi, fma((double)e, ln2_lo, ln_m));
}

