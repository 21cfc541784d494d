/* vmath.h — branch-free float32 exp, log, tanh and sigmoid that gcc -O3 vectorises when called in
 * a loop (Cephes-style: range reduction, a short polynomial, exponent bit manipulation, and
 * selects instead of branches for the special cases), plus float64 versions over libm.
 *
 * float32 accuracy, measured against double-precision libm on 4.3M values spread over the whole
 * float range (tests/c/test_elementwise.c): exp 1.01 ulp, log 0.76, tanh 1.25, sigmoid 2.2.
 * Special values follow C99 Annex F: exp(-inf) = 0, exp(+inf) = +inf, exp overflows to +inf
 * above 88.72 and underflows gradually (denormals) to 0 below -103.97; log(0) = -inf, log(x < 0) =
 * NaN, log(+inf) = +inf, log of denormals is exact to the same ulp; tanh(+-inf) = +-1;
 * sigmoid(-inf) = 0, sigmoid(+inf) = 1; NaN in, NaN out.
 */
#ifndef MF_CPU_VMATH_H
#define MF_CPU_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline int32_t mf_f2bits(float x) {
  int32_t i;
  memcpy(&i, &x, sizeof i);
  return i;
}
static inline float mf_bits2f(int32_t i) {
  float x;
  memcpy(&x, &i, sizeof x);
  return x;
}

/* exp(x) for float32. x = n ln2 + r, |r| <= ln2/2; exp(r) by Cephes' degree-6 polynomial; 2^n is
 * applied as two factors 2^(n/2) * 2^(n - n/2) so that results down to the denormals are right. */
static inline float mf_expf(float x) {
  const float hi = 88.7228317f, lo = -103.972084f;
  float xc = x < hi ? x : hi; /* NaN -> hi: keeps the integer conversions below defined */
  xc = xc > lo ? xc : lo;
  float n = __builtin_rintf(xc * 1.44269504088896341f);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t ni = (int32_t)n;
  int32_t n1 = ni >> 1, n2 = ni - n1; /* n1 + n2 = n, each in [-75, 64] */
  float s1 = mf_bits2f((int32_t)((uint32_t)(n1 + 127) << 23));
  float s2 = mf_bits2f((int32_t)((uint32_t)(n2 + 127) << 23));
  float y = p * s1 * s2;
  y = x > hi ? INFINITY : y;
  y = x < lo ? 0.0f : y;
  return x != x ? x : y;
}

/* log(x) for float32: x = m 2^e with m in [sqrt(1/2), sqrt(2)); log(m) by Cephes' polynomial in
 * m - 1. Denormals are scaled by 2^23 first. */
static inline float mf_logf(float x) {
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

/* tanh(x) for float32: an odd polynomial for |x| < 0.625 (Cephes), else
 * sign(x) (1 - 2 / (exp(2|x|) + 1)), which tends to +-1 (exp overflowing to inf gives exactly 1).
 */
static inline float mf_tanhf(float x) {
  float ax = fabsf(x);
  float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  float small = p * z * x + x;
  float e = mf_expf(ax + ax);
  float big = 1.0f - 2.0f / (e + 1.0f);
  big = copysignf(big, x);
  float y = ax < 0.625f ? small : big;
  return x != x ? x : y;
}

/* sigmoid(x) = 1 / (1 + exp(-x)) for float32, from t = exp(-|x|) as 1 / (1 + t) for x >= 0 and
 * t / (1 + t) for x < 0 (one division), so that neither side loses precision or overflows. */
static inline float mf_sigmoidf(float x) {
  float t = mf_expf(-fabsf(x));
  float y = (x >= 0.0f ? 1.0f : t) / (1.0f + t);
  return x != x ? x : y;
}

/* sin(2 pi u) and cos(2 pi u) for float32 u (rand's uniforms, for Box-Muller): u is reduced
 * exactly to r in [-1/8, 1/8] plus a whole number j of quarter turns, sin and cos of 2 pi r come
 * from Cephes' sinf/cosf polynomials on [-pi/4, pi/4], and the quarter turns swap and negate them.
 * About 1 ulp. */
static inline void mf_sincos2pif(float u, float *sn, float *cs) {
  float t = u - __builtin_rintf(u);                     /* [-1/2, 1/2] */
  float jf = __builtin_rintf(4.0f * t);                 /* -2 .. 2 */
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

/* float64: libm (glibc's exp/log/tanh are correctly rounded or within 1 ulp). */
static inline double mf_exp(double x) { return exp(x); }
static inline double mf_log(double x) { return log(x); }
static inline double mf_tanh(double x) { return tanh(x); }
static inline double mf_sigmoid(double x) {
  double t = exp(-fabs(x));
  double s = 1.0 / (1.0 + t);
  return x >= 0.0 ? s : t * s;
}

#endif
