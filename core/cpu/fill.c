/* fill.c — the CPU kernels that move and make data: copy (strided, with dtype conversion), fill,
 * arange, rand/randn (Philox, see random.c for the numbering every backend follows) and where.
 *
 * Conversions (copy, fill, arange) follow C: float -> integer truncates toward zero (NaN and
 * out-of-range values are unspecified, as in numpy/torch; float -> uint8 goes through int64 so
 * negative values wrap), integer -> integer wraps, anything -> bool is (x != 0), bool -> x is 0/1.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <pthread.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "cpu/iter.h"
#include "cpu/kernels.h"
#include "cpu/vmath.h"

/* ---- conversions ----------------------------------------------------------------------------- */

/* (suffix, C type, dtype, kind) */
#define CPU_TYPES(X)                                                                               \
  X(f32, float, MF_F32, FLT)                                                                       \
  X(f64, double, MF_F64, FLT)                                                                      \
  X(i32, int32_t, MF_I32, INT)                                                                     \
  X(i64, int64_t, MF_I64, INT)                                                                     \
  X(u8, uint8_t, MF_U8, U8)                                                                        \
  X(b8, uint8_t, MF_BOOL, BOOL)

/* CVT_<to kind>_<from kind>(TO, x) */
#define CVT_PLAIN(TO, x) ((TO)(x))
#define CVT_TOBOOL(TO, x) ((TO)((x) != 0))
#define CVT_FLT_FLT CVT_PLAIN
#define CVT_FLT_INT CVT_PLAIN
#define CVT_FLT_U8 CVT_PLAIN
#define CVT_FLT_BOOL CVT_PLAIN
#define CVT_INT_FLT CVT_PLAIN
#define CVT_INT_INT CVT_PLAIN
#define CVT_INT_U8 CVT_PLAIN
#define CVT_INT_BOOL CVT_PLAIN
#define CVT_U8_FLT(TO, x) ((TO)(int64_t)(x))
#define CVT_U8_INT CVT_PLAIN
#define CVT_U8_U8 CVT_PLAIN
#define CVT_U8_BOOL CVT_PLAIN
#define CVT_BOOL_FLT CVT_TOBOOL
#define CVT_BOOL_INT CVT_TOBOOL
#define CVT_BOOL_U8 CVT_TOBOOL
#define CVT_BOOL_BOOL CVT_TOBOOL

/* cvt_<from>_<to>: one row of out = convert(in) */
#define CVT_ROW(SI, TI, KI, SO, TO, KO)                                                            \
  static void cvt_##SI##_##SO(void *ctx, char **p, const int64_t *s, int64_t n) {                  \
    (void)ctx;                                                                                     \
    if (s[0] == (int64_t)sizeof(TO) && s[1] == (int64_t)sizeof(TI)) {                              \
      TO *o = (TO *)p[0];                                                                          \
      const TI *a = (const TI *)p[1];                                                              \
      for (int64_t i = 0; i < n; i++) o[i] = CVT_##KO##_##KI(TO, a[i]);                            \
      return;                                                                                      \
    }                                                                                              \
    char *po = p[0];                                                                               \
    const char *pa = p[1];                                                                         \
    for (int64_t i = 0; i < n; i++, po += s[0], pa += s[1])                                        \
      *(TO *)po = CVT_##KO##_##KI(TO, *(const TI *)pa);                                            \
  }
#define CVT_FROM(SI, TI, DI, KI) CPU_TYPES_TO(CVT_ROW, SI, TI, KI)
// clang-format off
#define CPU_TYPES_TO(M, SI, TI, KI)                                                                \
  M(SI, TI, KI, f32, float, FLT)                                                                   \
  M(SI, TI, KI, f64, double, FLT)                                                                  \
  M(SI, TI, KI, i32, int32_t, INT)                                                                 \
  M(SI, TI, KI, i64, int64_t, INT)                                                                 \
  M(SI, TI, KI, u8, uint8_t, U8)                                                                   \
  M(SI, TI, KI, b8, uint8_t, BOOL)
// clang-format on
CPU_TYPES(CVT_FROM)

/* same-size element moves, by element size */
#define MOVE_ROW(B, T)                                                                             \
  static void move_##B(void *ctx, char **p, const int64_t *s, int64_t n) {                         \
    (void)ctx;                                                                                     \
    if (s[0] == B && s[1] == B) {                                                                  \
      memmove(p[0], p[1], (size_t)n *B);                                                           \
      return;                                                                                      \
    }                                                                                              \
    char *po = p[0];                                                                               \
    const char *pa = p[1];                                                                         \
    if (s[1] == 0) {                                                                               \
      const T v = *(const T *)pa;                                                                  \
      for (int64_t i = 0; i < n; i++, po += s[0]) *(T *)po = v;                                    \
      return;                                                                                      \
    }                                                                                              \
    for (int64_t i = 0; i < n; i++, po += s[0], pa += s[1]) *(T *)po = *(const T *)pa;             \
  }
MOVE_ROW(1, uint8_t)
MOVE_ROW(4, uint32_t)
MOVE_ROW(8, uint64_t)

static mf_row_fn cvt_table[MF_DTYPE_COUNT][MF_DTYPE_COUNT]; /* [from][to] */
#define REG_CVT(SI, TI, KI, SO, TO, KO) cvt_table[dt_##SI][dt_##SO] = cvt_##SI##_##SO;
#define REG_FROM(SI, TI, DI, KI) CPU_TYPES_TO(REG_CVT, SI, TI, KI)
enum {
  dt_f32 = MF_F32,
  dt_f64 = MF_F64,
  dt_i32 = MF_I32,
  dt_i64 = MF_I64,
  dt_u8 = MF_U8,
  dt_b8 = MF_BOOL
};

static pthread_once_t tables_once = PTHREAD_ONCE_INIT;
static void fill_tables(void) { CPU_TYPES(REG_FROM) }

static mf_status cpu_dtype(const char *op, mf_dtype dt) {
  if (dt == MF_F16 || dt == MF_BF16)
    return mf_fail(MF_ERR_DTYPE, "%s: %s tensors are only supported on CUDA devices", op,
                   mf_dtype_name(dt));
  if ((unsigned)dt >= MF_DTYPE_COUNT) return mf_fail(MF_ERR_DTYPE, "%s: bad dtype %d", op, (int)dt);
  return MF_OK;
}

#define COPY_GRAIN 65536

/* ---- copy ------------------------------------------------------------------------------------ */

typedef struct {
  char *dst;
  const char *src;
} flat_copy;

static void flat_copy_run(void *ctx, int64_t b, int64_t e) {
  flat_copy *f = ctx;
  memcpy(f->dst + b, f->src + b, (size_t)(e - b));
}

/* Contiguous uint8 -> float32 times a scale (a batch of images made floats), in one pass. */
typedef struct u8_scaled {
  float *dst;
  const uint8_t *src;
  float scale;
} u8_scaled;

static void u8_scaled_run(void *ctx, int64_t b, int64_t e) {
  const u8_scaled *f = ctx;
  float *restrict o = f->dst;
  const uint8_t *restrict in = f->src;
  const float k = f->scale;
  for (int64_t i = b; i < e; i++) o[i] = (float)in[i] * k;
}

/* A conversion row followed by out *= scale on the same row while it is in cache (COPY with
 * ip[0] = 1: mf_cast_scaled). */
typedef struct scaled_row {
  mf_row_fn row;
  double scale;
} scaled_row;

#define SCALED_ROW(SO, TO)                                                                         \
  static void scaled_##SO(void *ctx, char **p, const int64_t *s, int64_t n) {                      \
    const scaled_row *c = ctx;                                                                     \
    c->row(NULL, p, s, n);                                                                         \
    const TO k = (TO)c->scale;                                                                     \
    if (s[0] == (int64_t)sizeof(TO)) {                                                             \
      TO *o = (TO *)p[0];                                                                          \
      for (int64_t i = 0; i < n; i++) o[i] *= k;                                                   \
    } else {                                                                                       \
      char *o = p[0];                                                                              \
      for (int64_t i = 0; i < n; i++, o += s[0]) *(TO *)o *= k;                                    \
    }                                                                                              \
  }
SCALED_ROW(f32, float)
SCALED_ROW(f64, double)

mf_status mf_cpu_copy(mf_device *dev, const mf_call *c) {
  (void)dev;
  if (!c->out || c->nin < 1 || !c->in[0]) return mf_fail(MF_ERR_ARG, "copy: missing operand");
  const mf_tensor *src = c->in[0], *dst = c->out;
  MF_TRY(cpu_dtype("copy", src->dtype));
  MF_TRY(cpu_dtype("copy", dst->dtype));
  int64_t n = mf_numel(dst);
  if (n == 0) return MF_OK;
  bool scaled = c->ip[0] == 1;
  if (scaled && dst->dtype != MF_F32 && dst->dtype != MF_F64)
    return mf_fail(MF_ERR_DTYPE, "cast_scaled: needs a float32 or float64 result, not %s",
                   mf_dtype_name(dst->dtype));
  if (!scaled && src->dtype == dst->dtype && mf_is_contiguous(src) && mf_is_contiguous(dst) &&
      mf_numel(src) == n) {
    char *d = mf_cpu_ptr(dst);
    const char *s = mf_cpu_ptr(src);
    if (d == s) return MF_OK;
    size_t bytes = (size_t)n * mf_dtype_size(dst->dtype);
    flat_copy f = {d, s};
    /* split only when the ranges do not overlap */
    if (d + bytes <= s || s + bytes <= d)
      mf_parallel_for((int64_t)bytes, 1 << 20, flat_copy_run, &f);
    else
      memmove(d, s, bytes);
    return MF_OK;
  }
  if (scaled && src->dtype == MF_U8 && dst->dtype == MF_F32 && mf_is_contiguous(src) &&
      mf_is_contiguous(dst) && mf_numel(src) == n) { /* bytes -> floats in [0, 1]: one pass */
    u8_scaled f = {mf_cpu_ptr(dst), mf_cpu_ptr(src), (float)c->p[0]};
    mf_parallel_for(n, COPY_GRAIN, u8_scaled_run, &f);
    return MF_OK;
  }
  pthread_once(&tables_once, fill_tables);
  mf_row_fn row;
  if (src->dtype == dst->dtype) {
    size_t es = mf_dtype_size(dst->dtype);
    row = es == 1 ? move_1 : es == 4 ? move_4 : move_8;
  } else {
    row = cvt_table[src->dtype][dst->dtype];
  }
  const mf_tensor *ops[2] = {dst, src};
  mf_iter it;
  MF_TRY(mf_iter_init(&it, "copy", 2, ops));
  if (scaled) {
    scaled_row sr = {row, c->p[0]};
    mf_iter_parallel(&it, COPY_GRAIN, dst->dtype == MF_F32 ? scaled_f32 : scaled_f64, &sr);
    return MF_OK;
  }
  mf_iter_parallel(&it, COPY_GRAIN, row, NULL);
  return MF_OK;
}

/* ---- fill ------------------------------------------------------------------------------------ */

#define FILL_ROW(B, T)                                                                             \
  static void fill_##B(void *ctx, char **p, const int64_t *s, int64_t n) {                         \
    const T v = *(const T *)ctx;                                                                   \
    if (s[0] == B) {                                                                               \
      T *o = (T *)p[0];                                                                            \
      for (int64_t i = 0; i < n; i++) o[i] = v;                                                    \
      return;                                                                                      \
    }                                                                                              \
    char *po = p[0];                                                                               \
    for (int64_t i = 0; i < n; i++, po += s[0]) *(T *)po = v;                                      \
  }
FILL_ROW(1, uint8_t)
FILL_ROW(4, uint32_t)
FILL_ROW(8, uint64_t)

/* v converted to dt, written to *out (8 bytes of room) */
static void convert_scalar(double v, mf_dtype dt, void *out) {
  switch (dt) {
#define CONV_CASE(S, T, DT, K)                                                                     \
  case DT: {                                                                                       \
    T x = CVT_##K##_FLT(T, v);                                                                     \
    memcpy(out, &x, sizeof x);                                                                     \
    break;                                                                                         \
  }
    CPU_TYPES(CONV_CASE)
#undef CONV_CASE
  default: break;
  }
}

mf_status mf_cpu_fill(mf_device *dev, const mf_call *c) {
  (void)dev;
  if (!c->out) return mf_fail(MF_ERR_ARG, "fill: missing output");
  mf_dtype dt = c->out->dtype;
  MF_TRY(cpu_dtype("fill", dt));
  uint64_t value = 0;
  convert_scalar(c->p[0], dt, &value);
  size_t es = mf_dtype_size(dt);
  mf_row_fn row = es == 1 ? fill_1 : es == 4 ? fill_4 : fill_8;
  const mf_tensor *ops[1] = {c->out};
  mf_iter it;
  MF_TRY(mf_iter_init(&it, "fill", 1, ops));
  mf_iter_parallel(&it, COPY_GRAIN * 4, row, &value);
  return MF_OK;
}

/* ---- arange ---------------------------------------------------------------------------------- */

typedef struct {
  void *out;
  double start, step;
  mf_dtype dt;
} arange_job;

static void arange_run(void *ctx, int64_t b, int64_t e) {
  arange_job *j = ctx;
  switch (j->dt) {
#define AR_CASE(S, T, DT, K)                                                                       \
  case DT: {                                                                                       \
    T *o = j->out;                                                                                 \
    for (int64_t i = b; i < e; i++) o[i] = CVT_##K##_FLT(T, j->start + (double)i * j->step);       \
    break;                                                                                         \
  }
    CPU_TYPES(AR_CASE)
#undef AR_CASE
  default: break;
  }
}

mf_status mf_cpu_arange(mf_device *dev, const mf_call *c) {
  (void)dev;
  if (!c->out) return mf_fail(MF_ERR_ARG, "arange: missing output");
  MF_TRY(cpu_dtype("arange", c->out->dtype));
  if (!mf_is_contiguous(c->out))
    return mf_fail(MF_ERR_ARG, "arange: the output must be contiguous");
  arange_job j = {mf_cpu_ptr(c->out), c->p[0], c->p[1], c->out->dtype};
  mf_parallel_for(mf_numel(c->out), COPY_GRAIN, arange_run, &j);
  return MF_OK;
}

/* ---- rand / randn ---------------------------------------------------------------------------- */

/* Philox 4x32-10 on LANES consecutive counters (offset .. offset+LANES-1, counter_hi 0) at once:
 * w[4*lane + word], exactly mf_philox's words (tested). With AVX2, 4 interleaved groups of 8 lanes
 * (one round is a chain of multiplies, so independent groups keep the units busy). */
#define LANES 32
#if defined(__AVX2__)
static inline void mulhilo8(__m256i a, __m256i m, __m256i *hi, __m256i *lo) {
  __m256i even = _mm256_mul_epu32(a, m), odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

static void philox_lanes(uint64_t seed, uint64_t offset, uint32_t *w) {
  enum { G = LANES / 8 };
  __m256i c0[G], c1[G], c2[G], c3[G];
  for (int g = 0; g < G; g++) {
    uint32_t lo[8], hi[8];
    for (int l = 0; l < 8; l++) {
      uint64_t ctr = offset + (uint64_t)(8 * g + l);
      lo[l] = (uint32_t)ctr;
      hi[l] = (uint32_t)(ctr >> 32);
    }
    c0[g] = _mm256_loadu_si256((const __m256i *)lo);
    c1[g] = _mm256_loadu_si256((const __m256i *)hi);
    c2[g] = c3[g] = _mm256_setzero_si256();
  }
  __m256i k0 = _mm256_set1_epi32((int)(uint32_t)seed);
  __m256i k1 = _mm256_set1_epi32((int)(uint32_t)(seed >> 32));
  const __m256i m0 = _mm256_set1_epi32((int)0xD2511F53u), m1 = _mm256_set1_epi32((int)0xCD9E8D57u);
  const __m256i w0 = _mm256_set1_epi32((int)0x9E3779B9u), w1 = _mm256_set1_epi32((int)0xBB67AE85u);
  for (int r = 0; r < 10; r++) {
    if (r) {
      k0 = _mm256_add_epi32(k0, w0);
      k1 = _mm256_add_epi32(k1, w1);
    }
    for (int g = 0; g < G; g++) {
      __m256i hi0, lo0, hi1, lo1;
      mulhilo8(c0[g], m0, &hi0, &lo0);
      mulhilo8(c2[g], m1, &hi1, &lo1);
      c0[g] = _mm256_xor_si256(_mm256_xor_si256(hi1, c1[g]), k0);
      c1[g] = lo1;
      c2[g] = _mm256_xor_si256(_mm256_xor_si256(hi0, c3[g]), k1);
      c3[g] = lo0;
    }
  }
  /* transpose each group's 4 x 8 words into 8 blocks of 4 */
  for (int g = 0; g < G; g++) {
    __m256i t0 = _mm256_unpacklo_epi32(c0[g], c1[g]), t1 = _mm256_unpackhi_epi32(c0[g], c1[g]);
    __m256i t2 = _mm256_unpacklo_epi32(c2[g], c3[g]), t3 = _mm256_unpackhi_epi32(c2[g], c3[g]);
    __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    __m256i *o = (__m256i *)(w + 32 * g);
    _mm256_storeu_si256(o + 0, _mm256_permute2x128_si256(u0, u1, 0x20));
    _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(u2, u3, 0x20));
    _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(u0, u1, 0x31));
    _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(u2, u3, 0x31));
  }
}
#else
static void philox_lanes(uint64_t seed, uint64_t offset, uint32_t *w) {
  for (int l = 0; l < LANES; l++) { mf_philox(seed, offset + (uint64_t)l, 0, w + 4 * l); }
}
#endif

typedef struct {
  void *out;
  int64_t n;
  uint64_t seed, offset;
  bool normal, f64;
} random_job;

static inline float u24(uint32_t w) { return (float)(w >> 8) * 0x1p-24f; }
static inline double u53(uint32_t lo, uint32_t hi) {
  return (double)((((uint64_t)hi << 32) | lo) >> 11) * 0x1p-53;
}

/* Box-Muller in float32 on the 2 * LANES pairs of words w[2k], w[2k+1] (random.c):
 * u1 = ((w[2k] >> 8) + 1) 2^-24 in (0, 1], u2 = (w[2k+1] >> 8) 2^-24, r = sqrt(-2 log u1),
 * o[2k] = r cos(2 pi u2), o[2k+1] = r sin(2 pi u2); in three loops that gcc vectorises. */
static void normal_pairs_f32(float *o, const uint32_t *w) {
  enum { P = 2 * LANES };
  float rad[P], sn[P], cs[P];
  for (int k = 0; k < P; k++) rad[k] = -2.0f * mf_logf((float)((w[2 * k] >> 8) + 1) * 0x1p-24f);
#if defined(__AVX__)
  for (int k = 0; k < P; k += 8)
    _mm256_storeu_ps(rad + k, _mm256_sqrt_ps(_mm256_loadu_ps(rad + k)));
#else
  for (int k = 0; k < P; k++) rad[k] = sqrtf(rad[k]);
#endif
  for (int k = 0; k < P; k++) mf_sincos2pif((float)(w[2 * k + 1] >> 8) * 0x1p-24f, &sn[k], &cs[k]);
  for (int k = 0; k < P; k++) {
    o[2 * k] = rad[k] * cs[k];
    o[2 * k + 1] = rad[k] * sn[k];
  }
}

/* blocks [b, e) of the call; block k holds elements [k*per, (k+1)*per). With the words of
 * consecutive blocks laid out flat (w[4*block + word]), float32 element i is w[i], float64 element
 * i is (w[2i], w[2i+1]), and normal pairs take consecutive words (see random.c). */
static void random_run(void *ctx, int64_t b, int64_t e) {
  const random_job *j = ctx;
  const double two_pi = 6.283185307179586476925286766559;
  int per = j->f64 ? 2 : 4;
  uint32_t w[4 * LANES];
  for (int64_t k0 = b; k0 < e; k0 += LANES) {
    philox_lanes(j->seed, j->offset + (uint64_t)k0, w);
    int64_t lanes = e - k0 < LANES ? e - k0 : LANES;
    int64_t i0 = k0 * per, cnt = lanes * per;
    if (cnt > j->n - i0) cnt = j->n - i0;
    if (!j->f64) {
      float *o = (float *)j->out + i0;
      if (!j->normal) {
        for (int64_t q = 0; q < cnt; q++) o[q] = u24(w[q]);
      } else if (cnt == 4 * LANES) {
        normal_pairs_f32(o, w);
      } else {
        float tmp[4 * LANES];
        normal_pairs_f32(tmp, w);
        memcpy(o, tmp, (size_t)cnt * sizeof *o);
      }
    } else {
      double *o = (double *)j->out + i0;
      if (!j->normal) {
        for (int64_t q = 0; q < cnt; q++) o[q] = u53(w[2 * q], w[2 * q + 1]);
      } else {
        for (int64_t q = 0; q < cnt; q += 2) {
          double u1 = 1.0 - u53(w[2 * q], w[2 * q + 1]), u2 = u53(w[2 * q + 2], w[2 * q + 3]);
          double r = sqrt(-2.0 * log(u1)), t = two_pi * u2;
          o[q] = r * cos(t);
          if (q + 1 < cnt) o[q + 1] = r * sin(t);
        }
      }
    }
  }
}

mf_status mf_cpu_random(mf_device *dev, const mf_call *c) {
  (void)dev;
  const char *name = c->op == MF_OP_RANDN ? "randn" : "rand";
  if (!c->out) return mf_fail(MF_ERR_ARG, "%s: missing output", name);
  if (c->op != MF_OP_RAND && c->op != MF_OP_RANDN)
    return mf_fail(MF_ERR_ARG, "%s: not a random op", mf_op_name(c->op));
  mf_dtype dt = c->out->dtype;
  if (dt != MF_F32 && dt != MF_F64)
    return mf_fail(MF_ERR_DTYPE, "%s: needs a float32 or float64 output on the CPU, got %s", name,
                   mf_dtype_name(dt));
  if (!mf_is_contiguous(c->out))
    return mf_fail(MF_ERR_ARG, "%s: the output must be contiguous", name);
  random_job j = {mf_cpu_ptr(c->out), mf_numel(c->out),     c->seed,
                  c->offset,          c->op == MF_OP_RANDN, dt == MF_F64};
  int per = j.f64 ? 2 : 4;
  int64_t nblocks = (j.n + per - 1) / per;
  mf_parallel_for(nblocks, j.normal ? 2048 : 8192, random_run, &j);
  return MF_OK;
}

/* ---- where ----------------------------------------------------------------------------------- */

#define WHERE_ROW(B, T)                                                                            \
  static void where_##B(void *ctx, char **p, const int64_t *s, int64_t n) {                        \
    (void)ctx;                                                                                     \
    if (s[0] == B && s[1] == 1 && s[2] == B && s[3] == B) {                                        \
      T *o = (T *)p[0];                                                                            \
      const uint8_t *m = (const uint8_t *)p[1];                                                    \
      const T *a = (const T *)p[2], *b = (const T *)p[3];                                          \
      for (int64_t i = 0; i < n; i++) o[i] = m[i] ? a[i] : b[i];                                   \
      return;                                                                                      \
    }                                                                                              \
    char *po = p[0];                                                                               \
    const char *pm = p[1], *pa = p[2], *pb = p[3];                                                 \
    for (int64_t i = 0; i < n; i++, po += s[0], pm += s[1], pa += s[2], pb += s[3])                \
      *(T *)po = *(const uint8_t *)pm ? *(const T *)pa : *(const T *)pb;                           \
  }
WHERE_ROW(1, uint8_t)
WHERE_ROW(4, uint32_t)
WHERE_ROW(8, uint64_t)

mf_status mf_cpu_where(mf_device *dev, const mf_call *c) {
  (void)dev;
  if (!c->out || c->nin < 3 || !c->in[0] || !c->in[1] || !c->in[2])
    return mf_fail(MF_ERR_ARG, "where: needs a condition and two operands");
  mf_dtype dt = c->out->dtype;
  MF_TRY(cpu_dtype("where", dt));
  if (c->in[0]->dtype != MF_BOOL && c->in[0]->dtype != MF_U8)
    return mf_fail(MF_ERR_DTYPE, "where: the condition must be bool, got %s",
                   mf_dtype_name(c->in[0]->dtype));
  if (c->in[1]->dtype != dt || c->in[2]->dtype != dt)
    return mf_fail(MF_ERR_DTYPE, "where: operands must have the output's dtype %s, got %s and %s",
                   mf_dtype_name(dt), mf_dtype_name(c->in[1]->dtype),
                   mf_dtype_name(c->in[2]->dtype));
  size_t es = mf_dtype_size(dt);
  mf_row_fn row = es == 1 ? where_1 : es == 4 ? where_4 : where_8;
  const mf_tensor *ops[4] = {c->out, c->in[0], c->in[1], c->in[2]};
  mf_iter it;
  MF_TRY(mf_iter_init(&it, "where", 4, ops));
  mf_iter_parallel(&it, COPY_GRAIN, row, NULL);
  return MF_OK;
}
