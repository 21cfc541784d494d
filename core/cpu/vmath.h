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
 * log (and Box-Muller's sin/cos(2 pi u)) live in ../philox_math.h, shared with the CUDA backend.
 */
#ifndef MF_CPU_VMATH_H
#define MF_CPU_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "philox_math.h" /* mf_f2bits, mf_bits2f, mf_logf, mf_sincos2pif: shared with the GPU */

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
