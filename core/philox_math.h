/* philox_math.h — the arithmetic of random numbers that the CPU (cpu/fill.c, cpu/gather.c via
 * cpu/vmath.h) and the GPU (cuda/fill.cu) must do alike so that one seed gives the same numbers on
 * both: one Philox 4x32-10 block, the 24- and 53-bit uniforms made from its words, and the float32
 * Box–Muller transform with its log and sin/cos(2 pi u) (random.c gives the numbering contract).
 *
 * One definition for both compilers: plain C `static inline` for the CPU (gcc vectorises the float
 * functions in loops), `__host__ __device__` when compiled by nvcc (__CUDACC__).
 */
#ifndef MF_PHILOX_MATH_H
#define MF_PHILOX_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define MF_HD __host__ __device__
#else
#define MF_HD
#endif

#if defined(__CUDA_ARCH__)
#define MF_RINTF(x) rintf(x)
#else
#define MF_RINTF(x) __builtin_rintf(x)
#endif

static inline MF_HD int32_t mf_f2bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_int(x);
#else
  int32_t i;
  memcpy(&i, &x, sizeof i);
  return i;
#endif
}
static inline MF_HD float mf_bits2f(int32_t i) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(i);
#else
  float x;
  memcpy(&x, &i, sizeof x);
  return x;
#endif
}

/* ---- Philox 4x32-10 ----------------------------------------------------------------------------
 * The block for counter (lo, hi) and key seed, words low first (random.c: mf_philox is this). */
static inline MF_HD void mf_philox_block(uint64_t seed, uint64_t counter_lo, uint64_t counter_hi,
                                         uint32_t out[4]) {
  uint32_t c0 = (uint32_t)counter_lo, c1 = (uint32_t)(counter_lo >> 32);
  uint32_t c2 = (uint32_t)counter_hi, c3 = (uint32_t)(counter_hi >> 32);
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int r = 0; r < 10; r++) {
    if (r > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/* uniforms: a float32 in [0, 1) from one word (24 bits), a float64 from two (53 bits) */
static inline MF_HD float mf_u24(uint32_t w) { return (float)(w >> 8) * 0x1p-24f; }
static inline MF_HD double mf_u53(uint32_t lo, uint32_t hi) {
  return (double)((((uint64_t)hi << 32) | lo) >> 11) * 0x1p-53;
}

/* ---- float32 log and sin/cos(2 pi u) -------------------------------------------------------- */

/* log(x) for float32: x = m 2^e with m in [sqrt(1/2), sqrt(2)); log(m) by Cephes' polynomial in
 * m - 1. Denormals are scaled by 2^23 first. Special values as C99 Annex F (log(0) = -inf, log of a
 * negative = NaN, log(+inf) = +inf, NaN in NaN out). 0.76 ulp against libm (test_elementwise.c). */
static inline MF_HD float mf_logf(float x) {
  int denorm = x < 1.17549435e-38f;
  float xs = denorm ? x * 8388608.0f : x;
  uint32_t bits = (uint32_t)mf_f2bits(xs);
  int32_t e = (int32_t)((bits >> 23) & 0xff) - 126; /* xs = m 2^e with m in [0.5, 1) */
  float m = mf_bits2f((int32_t)((bits & 0x007fffff) | 0x3f000000));
  int small = m < 0.707106781186547524f;
  e = small ? e - 1 : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  float ef = (float)e - (denorm ? 23.0f : 0.0f);
  float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y = y + ef * -2.12194440e-4f;
  y = y - 0.5f * z;
  float r = m + y;
  r = r + ef * 0.693359375f;
  r = x == INFINITY ? x : r;
  r = x == 0.0f ? -INFINITY : r;
  r = x < 0.0f ? NAN : r;
  return x != x ? x : r;
}

/* sin(2 pi u) and cos(2 pi u) for float32 u (rand's uniforms, for Box-Muller): u is reduced
 * exactly to r in [-1/8, 1/8] plus a whole number j of quarter turns, sin and cos of 2 pi r come
 * from Cephes' sinf/cosf polynomials on [-pi/4, pi/4], and the quarter turns swap and negate them.
 * About 1 ulp. */
static inline MF_HD void mf_sincos2pif(float u, float *sn, float *cs) {
  float t = u - MF_RINTF(u);                            /* [-1/2, 1/2] */
  float jf = MF_RINTF(4.0f * t);                        /* -2 .. 2 */
  float x = (t - 0.25f * jf) * 6.28318530717958647692f; /* [-pi/4, pi/4] */
  float z = x * x;
  float s = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * x + x;
  float c =
      ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z -
      0.5f * z + 1.0f;
  int32_t j = (int32_t)jf & 3; /* quarter turns: (s, c) -> (c, -s) -> (-s, -c) -> (-c, s) */
  float s2 = (j & 1) ? c : s, c2 = (j & 1) ? s : c;
  *sn = (j & 2) ? -s2 : s2;
  *cs = (j == 1 || j == 2) ? -c2 : c2;
}

/* The float32 Box-Muller pair of random.c from two Philox words: u1 = ((w0 >> 8) + 1) 2^-24 in
 * (0, 1], u2 = (w1 >> 8) 2^-24, r = sqrt(-2 log u1), z0 = r cos(2 pi u2), z1 = r sin(2 pi u2).
 * (cpu/fill.c runs the same steps as three vectorised loops.) */
static inline MF_HD void mf_box_muller_f32(uint32_t w0, uint32_t w1, float *z0, float *z1) {
  float rad = sqrtf(-2.0f * mf_logf((float)((w0 >> 8) + 1) * 0x1p-24f));
  float sn, cs;
  mf_sincos2pif(mf_u24(w1), &sn, &cs);
  *z0 = rad * cs;
  *z1 = rad * sn;
}

#endif
