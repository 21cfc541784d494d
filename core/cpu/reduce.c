/* reduce.c — the CPU reduction kernel: SUM PROD MAX MIN ARGMAX ARGMIN MEAN VAR of a contiguous
 * input viewed as (outer, n, inner) into a contiguous (outer, inner) output (see internal.h).
 *
 * Input dtypes float32, float64, int32, int64, uint8 and bool (bool is stored as 0/1 bytes and
 * shares uint8's code). Outputs, as the front end (ops_reduce.c) allocates them: SUM/PROD give the
 * input dtype for floats and int64 for the rest; MAX/MIN the input dtype; ARGMAX/ARGMIN int64;
 * MEAN/VAR the (float) input dtype.
 *
 * Accuracy: float sums and products accumulate in double (16 lanes, in blocks of 4096 elements);
 * integer sums and products wrap modulo 2^64 like torch's int64. VAR is a two-pass algorithm in
 * double (mean, then squared deviations); partial results over blocks of n are merged with Chan's
 * formula. MAX/MIN propagate NaN; ARGMAX/ARGMIN give the first extreme, a NaN counting as extreme.
 *
 * Layouts, each with its own loop nest:
 * - inner == 1 (reducing the last, contiguous dim): one row of n elements per output, reduced
 *   with independent lanes (vector extensions for the extremes) and vectorised. Parallel over
 *   rows.
 * - inner > 1 (a strided dim): tiles of up to TILE outputs; the n rows of a tile are streamed
 *   with the tile vectorised. Parallel over (outer, tile).
 * - few such work items (< 16) and much to reduce: n is cut into at most MAX_BLOCKS blocks whose
 *   partial states are computed in parallel, then merged in block order (parallel over outputs).
 * - n == 1 is treated as (1, 1, outer * inner).
 * The split depends on the shape only, never on the thread count, so results are reproducible.
 *
 * Each dtype's loops come from one set of macro definitions (DEF_TYPE below); the drivers work on
 * a type-erased state (rstate) through a small per-dtype function table. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/kernels.h"

#define LANES 16           /* independent accumulators of a row reduction */
#define RBLOCK 4096        /* a row sum adds block totals of this many elements */
#define TILE 1024          /* outputs per tile of a strided reduction (4 KiB of float32 a row) */
#define ROWS 256           /* rows reduced between two stores */
#define VBYTES 32          /* vector width of the extreme loops (AVX2: one register) */
#define GRAIN 32768        /* elements of work worth a parallel chunk */
#define SPLIT_MIN 131072   /* elements below which n is never split */
#define SPLIT_CHUNK 262144 /* elements per block of a split n, at least */
#define MAX_BLOCKS 32      /* blocks of a split n, at most */
#define MAX_PARTIALS (1 << 18) /* partial states of a split n, at most (8 MiB) */

/* The partial result of reducing some elements into one output. */
typedef struct rstate {
  union {
    double f;   /* float sum/product/extreme; VAR: mean */
    uint64_t u; /* integer sum/product (wraps) */
    int64_t i;  /* integer extreme */
  } v;
  int64_t idx; /* ARGMAX/ARGMIN: index along n; VAR: element count */
  double m2;   /* VAR: sum of squared deviations from the mean */
} rstate;

typedef void (*rows_fn)(mf_op op, const void *x, int64_t nrows, int64_t rstride, int64_t n,
                        int64_t k0, rstate *s);
typedef void (*col_fn)(mf_op op, const void *x, int64_t nk, int64_t stride, int64_t w, int64_t k0,
                       rstate *s);
typedef void (*store_fn)(mf_op op, const rstate *s, int64_t w, void *out, int64_t j0, int64_t n,
                         int64_t corr);

typedef struct rtype {
  bool is_float;
  rows_fn rows;   /* s[r] = reduce(x[r * rstride + k] for k < n), r < nrows; indices from k0 */
  col_fn col;     /* s[i] = reduce(x[k * stride + i] for k < nk), i < w; indices from k0 */
  store_fn store; /* out[j0 + i] = final(s[i]), i < w; n is the whole reduced extent */
} rtype;

#define NAN_F(v) ((v) != (v))
#define NAN_I(v) ((void)(v), 0)

/* ---- loops for one element type -----------------------------------------------------------
 * sfx: name suffix; T: element type; MI: the signed integer of T's width (vector masks);
 * A: sum/product accumulator (double or uint64_t); AM: the rstate member holding A;
 * VM: the rstate member holding an extreme value; SO: the SUM/PROD output type;
 * ISNAN: NAN_F or NAN_I; FLOAT: true for float types.
 * Conditions use | rather than || so that the compiler can turn them into vector selects. */

/* Sum (or product) of x[0 .. n) in accumulator type AT: lane-parallel, block totals added in
 * order; a short row is a plain loop. */
#define DEF_ROW_SUM(name, T, AT, OPEQ, ID)                                                         \
  static AT name(const T *restrict x, int64_t n) {                                                 \
    AT total = ID;                                                                                 \
    if (n < 2 * LANES) {                                                                           \
      for (int64_t i = 0; i < n; i++) total OPEQ(AT) x[i];                                         \
      return total;                                                                                \
    }                                                                                              \
    for (int64_t b = 0; b < n; b += RBLOCK) {                                                      \
      int64_t e = b + RBLOCK < n ? b + RBLOCK : n, i = b;                                          \
      AT acc[LANES];                                                                               \
      for (int j = 0; j < LANES; j++) acc[j] = ID;                                                 \
      for (; i + LANES <= e; i += LANES)                                                           \
        for (int j = 0; j < LANES; j++) acc[j] OPEQ(AT) x[i + j];                                  \
      for (; i < e; i++) acc[0] OPEQ(AT) x[i];                                                     \
      for (int h = LANES / 2; h; h /= 2)                                                           \
        for (int j = 0; j < h; j++) acc[j] OPEQ acc[j + h];                                        \
      total OPEQ acc[0];                                                                           \
    }                                                                                              \
    return total;                                                                                  \
  }

/* The extreme of x[0 .. n), n >= 1: v replaces m when v CMP m, or when v is NaN. Written with
 * GCC/Clang vector extensions (VBYTES-byte vectors, MI the same-width signed integer for masks):
 * compilers do not reliably vectorise a conditional select spread over scalar lanes. */
#define DEF_ROW_EXT(name, T, MI, CMP, ISNAN)                                                       \
  static T name(const T *restrict x, int64_t n) {                                                  \
    typedef T vec __attribute__((vector_size(VBYTES)));                                            \
    typedef MI vmask __attribute__((vector_size(VBYTES)));                                         \
    enum { W = VBYTES / sizeof(T) };                                                               \
    T m = x[0];                                                                                    \
    int64_t i = 1;                                                                                 \
    if (n >= 4 * W) {                                                                              \
      vec a0, a1, v0, v1;                                                                          \
      memcpy(&a0, x, VBYTES);                                                                      \
      a1 = a0;                                                                                     \
      for (i = 0; i + 2 * W <= n; i += 2 * W) {                                                    \
        memcpy(&v0, x + i, VBYTES);                                                                \
        memcpy(&v1, x + i + W, VBYTES);                                                            \
        vmask k0 = (v0 CMP a0) | (v0 != v0), k1 = (v1 CMP a1) | (v1 != v1); /* NaN */              \
        a0 = (vec)(((vmask)v0 & k0) | ((vmask)a0 & ~k0));                                          \
        a1 = (vec)(((vmask)v1 & k1) | ((vmask)a1 & ~k1));                                          \
      }                                                                                            \
      T lane[2 * W];                                                                               \
      memcpy(lane, &a0, VBYTES);                                                                   \
      memcpy(lane + W, &a1, VBYTES);                                                               \
      for (int j = 0; j < 2 * W; j++) m = ((lane[j] CMP m) | ISNAN(lane[j])) ? lane[j] : m;        \
    }                                                                                              \
    for (; i < n; i++) m = ((x[i] CMP m) | ISNAN(x[i])) ? x[i] : m;                                \
    return m;                                                                                      \
  }

/* The first index of m in x[0 .. n) (of the first NaN when m is NaN); m is in x. */
#define DEF_ROW_FIND(name, T, MI, ISNAN)                                                           \
  static int64_t name(const T *restrict x, int64_t n, T m) {                                       \
    typedef T vec __attribute__((vector_size(VBYTES)));                                            \
    typedef MI vmask __attribute__((vector_size(VBYTES)));                                         \
    enum { W = VBYTES / sizeof(T) };                                                               \
    int64_t i = 0;                                                                                 \
    if (ISNAN(m)) {                                                                                \
      while (i < n - 1 && !ISNAN(x[i])) i++;                                                       \
      return i;                                                                                    \
    }                                                                                              \
    vec mv = (vec){0} + m, v;                                                                      \
    for (; i + W <= n; i += W) {                                                                   \
      memcpy(&v, x + i, VBYTES);                                                                   \
      vmask k = v == mv;                                                                           \
      uint64_t bits[VBYTES / 8], any = 0;                                                          \
      memcpy(bits, &k, VBYTES);                                                                    \
      for (int j = 0; j < VBYTES / 8; j++) any |= bits[j];                                         \
      if (any) break;                                                                              \
    }                                                                                              \
    while (i < n - 1 && x[i] != m) i++;                                                            \
    return i;                                                                                      \
  }

#define DEF_TYPE(sfx, T, MI, A, AM, VM, SO, ISNAN, FLOAT)                                          \
  DEF_ROW_SUM(rsum_##sfx, T, A, +=, 0)                                                             \
  DEF_ROW_SUM(rprod_##sfx, T, A, *=, 1)                                                            \
  DEF_ROW_SUM(rdsum_##sfx, T, double, +=, 0)                                                       \
  DEF_ROW_EXT(rmax_##sfx, T, MI, >, ISNAN)                                                         \
  DEF_ROW_EXT(rmin_##sfx, T, MI, <, ISNAN)                                                         \
  DEF_ROW_FIND(rfind_##sfx, T, MI, ISNAN)                                                          \
                                                                                                   \
  /* VAR state of x[0 .. n): two passes, the squared deviations lane-parallel */                   \
  static void rvar_##sfx(const T *restrict x, int64_t n, rstate *s) {                              \
    double mean = rdsum_##sfx(x, n) / (double)n, acc[LANES] = {0};                                 \
    int64_t i = 0;                                                                                 \
    for (; i + LANES <= n; i += LANES)                                                             \
      for (int j = 0; j < LANES; j++) {                                                            \
        double d = (double)x[i + j] - mean;                                                        \
        acc[j] += d * d;                                                                           \
      }                                                                                            \
    for (; i < n; i++) {                                                                           \
      double d = (double)x[i] - mean;                                                              \
      acc[0] += d * d;                                                                             \
    }                                                                                              \
    for (int h = LANES / 2; h; h /= 2)                                                             \
      for (int j = 0; j < h; j++) acc[j] += acc[j + h];                                            \
    s->v.f = mean;                                                                                 \
    s->idx = n;                                                                                    \
    s->m2 = acc[0];                                                                                \
  }                                                                                                \
                                                                                                   \
  static void rows_##sfx(mf_op op, const void *xv, int64_t nrows, int64_t rs, int64_t n,           \
                         int64_t k0, rstate *s) {                                                  \
    const T *x = xv;                                                                               \
    switch (op) {                                                                                  \
    case MF_OP_SUM:                                                                                \
    case MF_OP_MEAN:                                                                               \
      for (int64_t r = 0; r < nrows; r++) s[r].v.AM = rsum_##sfx(x + r * rs, n);                   \
      break;                                                                                       \
    case MF_OP_PROD:                                                                               \
      for (int64_t r = 0; r < nrows; r++) s[r].v.AM = rprod_##sfx(x + r * rs, n);                  \
      break;                                                                                       \
    case MF_OP_MAX:                                                                                \
      for (int64_t r = 0; r < nrows; r++) s[r].v.VM = rmax_##sfx(x + r * rs, n);                   \
      break;                                                                                       \
    case MF_OP_MIN:                                                                                \
      for (int64_t r = 0; r < nrows; r++) s[r].v.VM = rmin_##sfx(x + r * rs, n);                   \
      break;                                                                                       \
    case MF_OP_ARGMAX:                                                                             \
    case MF_OP_ARGMIN:                                                                             \
      for (int64_t r = 0; r < nrows; r++) {                                                        \
        const T *row = x + r * rs;                                                                 \
        T m = op == MF_OP_ARGMAX ? rmax_##sfx(row, n) : rmin_##sfx(row, n);                        \
        s[r].v.VM = m;                                                                             \
        s[r].idx = k0 + rfind_##sfx(row, n, m);                                                    \
      }                                                                                            \
      break;                                                                                       \
    case MF_OP_VAR:                                                                                \
      for (int64_t r = 0; r < nrows; r++) rvar_##sfx(x + r * rs, n, &s[r]);                        \
      break;                                                                                       \
    default: break;                                                                                \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  /* Column loops: row k of the tile starts at x + k * stride; w <= TILE lanes. */                 \
  static void cacc_##sfx(const T *restrict x, int64_t nk, int64_t stride, int64_t w, bool prod,    \
                         A *restrict acc) {                                                        \
    for (int64_t i = 0; i < w; i++) acc[i] = prod ? 1 : 0;                                         \
    for (int64_t k = 0; k < nk; k++) {                                                             \
      const T *restrict r = x + k * stride;                                                        \
      if (prod)                                                                                    \
        for (int64_t i = 0; i < w; i++) acc[i] *= (A)r[i];                                         \
      else                                                                                         \
        for (int64_t i = 0; i < w; i++) acc[i] += (A)r[i];                                         \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  static void cext_##sfx(const T *restrict x, int64_t nk, int64_t stride, int64_t w, bool max,     \
                         T *restrict m) {                                                          \
    for (int64_t i = 0; i < w; i++) m[i] = x[i];                                                   \
    for (int64_t k = 1; k < nk; k++) {                                                             \
      const T *restrict r = x + k * stride;                                                        \
      if (max)                                                                                     \
        for (int64_t i = 0; i < w; i++) m[i] = ((r[i] > m[i]) | ISNAN(r[i])) ? r[i] : m[i];        \
      else                                                                                         \
        for (int64_t i = 0; i < w; i++) m[i] = ((r[i] < m[i]) | ISNAN(r[i])) ? r[i] : m[i];        \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  /* extreme and first index of each lane in one pass: a later element wins only when strictly     \
   * better, or when it is the first NaN */                                                        \
  static void carg_##sfx(const T *restrict x, int64_t nk, int64_t stride, int64_t w, bool max,     \
                         T *restrict m, int64_t *restrict idx) {                                   \
    for (int64_t i = 0; i < w; i++) m[i] = x[i], idx[i] = 0;                                       \
    for (int64_t k = 1; k < nk; k++) {                                                             \
      const T *restrict r = x + k * stride;                                                        \
      if (max)                                                                                     \
        for (int64_t i = 0; i < w; i++) {                                                          \
          bool c = (r[i] > m[i]) | (ISNAN(r[i]) & !ISNAN(m[i]));                                   \
          m[i] = c ? r[i] : m[i];                                                                  \
          idx[i] = c ? k : idx[i];                                                                 \
        }                                                                                          \
      else                                                                                         \
        for (int64_t i = 0; i < w; i++) {                                                          \
          bool c = (r[i] < m[i]) | (ISNAN(r[i]) & !ISNAN(m[i]));                                   \
          m[i] = c ? r[i] : m[i];                                                                  \
          idx[i] = c ? k : idx[i];                                                                 \
        }                                                                                          \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  static void col_##sfx(mf_op op, const void *xv, int64_t nk, int64_t stride, int64_t w,           \
                        int64_t k0, rstate *s) {                                                   \
    const T *x = xv;                                                                               \
    switch (op) {                                                                                  \
    case MF_OP_SUM:                                                                                \
    case MF_OP_MEAN:                                                                               \
    case MF_OP_PROD: {                                                                             \
      A acc[TILE];                                                                                 \
      cacc_##sfx(x, nk, stride, w, op == MF_OP_PROD, acc);                                         \
      for (int64_t i = 0; i < w; i++) s[i].v.AM = acc[i];                                          \
      break;                                                                                       \
    }                                                                                              \
    case MF_OP_MAX:                                                                                \
    case MF_OP_MIN:                                                                                \
    case MF_OP_ARGMAX:                                                                             \
    case MF_OP_ARGMIN: {                                                                           \
      T m[TILE];                                                                                   \
      bool max = op == MF_OP_MAX || op == MF_OP_ARGMAX;                                            \
      if (op == MF_OP_MAX || op == MF_OP_MIN) {                                                    \
        cext_##sfx(x, nk, stride, w, max, m);                                                      \
      } else {                                                                                     \
        int64_t idx[TILE];                                                                         \
        carg_##sfx(x, nk, stride, w, max, m, idx);                                                 \
        for (int64_t i = 0; i < w; i++) s[i].idx = k0 + idx[i];                                    \
      }                                                                                            \
      for (int64_t i = 0; i < w; i++) s[i].v.VM = m[i];                                            \
      break;                                                                                       \
    }                                                                                              \
    case MF_OP_VAR: {                                                                              \
      double mean[TILE], acc[TILE];                                                                \
      for (int64_t i = 0; i < w; i++) mean[i] = acc[i] = 0;                                        \
      for (int64_t k = 0; k < nk; k++) {                                                           \
        const T *restrict r = x + k * stride;                                                      \
        for (int64_t i = 0; i < w; i++) mean[i] += (double)r[i];                                   \
      }                                                                                            \
      for (int64_t i = 0; i < w; i++) mean[i] /= (double)nk;                                       \
      for (int64_t k = 0; k < nk; k++) {                                                           \
        const T *restrict r = x + k * stride;                                                      \
        for (int64_t i = 0; i < w; i++) {                                                          \
          double d = (double)r[i] - mean[i];                                                       \
          acc[i] += d * d;                                                                         \
        }                                                                                          \
      }                                                                                            \
      for (int64_t i = 0; i < w; i++) {                                                            \
        s[i].v.f = mean[i];                                                                        \
        s[i].idx = nk;                                                                             \
        s[i].m2 = acc[i];                                                                          \
      }                                                                                            \
      break;                                                                                       \
    }                                                                                              \
    default: break;                                                                                \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  static void store_##sfx(mf_op op, const rstate *s, int64_t w, void *out, int64_t j0, int64_t n,  \
                          int64_t corr) {                                                          \
    switch (op) {                                                                                  \
    case MF_OP_SUM:                                                                                \
    case MF_OP_PROD:                                                                               \
      for (int64_t i = 0; i < w; i++) ((SO *)out)[j0 + i] = (SO)s[i].v.AM;                         \
      break;                                                                                       \
    case MF_OP_MEAN:                                                                               \
      for (int64_t i = 0; i < w; i++) ((T *)out)[j0 + i] = (T)((double)s[i].v.AM / (double)n);     \
      break;                                                                                       \
    case MF_OP_MAX:                                                                                \
    case MF_OP_MIN:                                                                                \
      for (int64_t i = 0; i < w; i++) ((T *)out)[j0 + i] = (T)s[i].v.VM;                           \
      break;                                                                                       \
    case MF_OP_ARGMAX:                                                                             \
    case MF_OP_ARGMIN:                                                                             \
      for (int64_t i = 0; i < w; i++) ((int64_t *)out)[j0 + i] = s[i].idx;                         \
      break;                                                                                       \
    case MF_OP_VAR: {                                                                              \
      double div = (double)(n - corr > 0 ? n - corr : 0);                                          \
      for (int64_t i = 0; i < w; i++) ((T *)out)[j0 + i] = (T)(s[i].m2 / div);                     \
      break;                                                                                       \
    }                                                                                              \
    default: break;                                                                                \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  static const rtype type_##sfx = {FLOAT, rows_##sfx, col_##sfx, store_##sfx};

/* sfx  T        MI       A         AM VM SO       ISNAN  FLOAT */
DEF_TYPE(f32, float, int32_t, double, f, f, float, NAN_F, true)
DEF_TYPE(f64, double, int64_t, double, f, f, double, NAN_F, true)
DEF_TYPE(i32, int32_t, int32_t, uint64_t, u, i, int64_t, NAN_I, false)
DEF_TYPE(i64, int64_t, int64_t, uint64_t, u, i, int64_t, NAN_I, false)
DEF_TYPE(u8, uint8_t, int8_t, uint64_t, u, i, int64_t, NAN_I, false)

/* ---- merging partial states (block order: b holds later elements than a) --------------------- */

/* a[i] = merge(a[i], b[i]) for i < w */
static void merge(mf_op op, bool is_float, rstate *restrict a, const rstate *restrict b,
                  int64_t w) {
  switch (op) {
  case MF_OP_SUM:
  case MF_OP_MEAN:
    if (is_float)
      for (int64_t i = 0; i < w; i++) a[i].v.f += b[i].v.f;
    else
      for (int64_t i = 0; i < w; i++) a[i].v.u += b[i].v.u;
    break;
  case MF_OP_PROD:
    if (is_float)
      for (int64_t i = 0; i < w; i++) a[i].v.f *= b[i].v.f;
    else
      for (int64_t i = 0; i < w; i++) a[i].v.u *= b[i].v.u;
    break;
  case MF_OP_MAX:
  case MF_OP_MIN:
  case MF_OP_ARGMAX:
  case MF_OP_ARGMIN: {
    bool max = op == MF_OP_MAX || op == MF_OP_ARGMAX;
    for (int64_t i = 0; i < w; i++) {
      bool better;
      if (is_float)
        better = (max ? b[i].v.f > a[i].v.f : b[i].v.f < a[i].v.f) ||
                 (isnan(b[i].v.f) && !isnan(a[i].v.f));
      else
        better = max ? b[i].v.i > a[i].v.i : b[i].v.i < a[i].v.i;
      if (better) a[i] = b[i];
    }
    break;
  }
  case MF_OP_VAR: /* Chan, Golub and LeVeque */
    for (int64_t i = 0; i < w; i++) {
      if (b[i].idx == 0) continue;
      if (a[i].idx == 0) {
        a[i] = b[i];
        continue;
      }
      double na = (double)a[i].idx, nb = (double)b[i].idx, n = na + nb, d = b[i].v.f - a[i].v.f;
      a[i].v.f += d * nb / n;
      a[i].m2 += b[i].m2 + d * d * na * nb / n;
      a[i].idx += b[i].idx;
    }
    break;
  default: break;
  }
}

/* ---- drivers --------------------------------------------------------------------------------- */

typedef struct rctx {
  const rtype *t;
  mf_op op;
  const char *x; /* input data */
  size_t es;     /* input element size */
  void *out;
  int64_t outer, n, inner, corr;
  int64_t ntiles; /* strided layout: tiles of TILE outputs per outer index */
  int64_t nblk;   /* split n: block count */
  rstate *part;   /* split n: (nblk, outer * inner) partial states */
} rctx;

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* inner == 1: rows [b, e). */
static void run_rows(void *p, int64_t b, int64_t e) {
  const rctx *c = p;
  rstate s[ROWS];
  for (int64_t o = b; o < e; o += ROWS) {
    int64_t w = min64(e - o, ROWS);
    c->t->rows(c->op, c->x + o * c->n * c->es, w, c->n, c->n, 0, s);
    c->t->store(c->op, s, w, c->out, o, c->n, c->corr);
  }
}

/* inner > 1: items [b, e) of (outer, ntiles). */
static void run_tiles(void *p, int64_t b, int64_t e) {
  const rctx *c = p;
  rstate s[TILE];
  for (int64_t it = b; it < e; it++) {
    int64_t o = it / c->ntiles, i0 = (it % c->ntiles) * TILE, w = min64(c->inner - i0, TILE);
    c->t->col(c->op, c->x + (o * c->n * c->inner + i0) * c->es, c->n, c->inner, w, 0, s);
    c->t->store(c->op, s, w, c->out, o * c->inner + i0, c->n, c->corr);
  }
}

/* split n: blocks [b, e) of rows [k0, k1) along n, each into its own row of partial states. */
static void run_blocks(void *p, int64_t b, int64_t e) {
  const rctx *c = p;
  int64_t nout = c->outer * c->inner;
  for (int64_t blk = b; blk < e; blk++) {
    int64_t k0 = c->n * blk / c->nblk, nk = c->n * (blk + 1) / c->nblk - k0;
    rstate *s = c->part + blk * nout;
    if (c->inner == 1) {
      c->t->rows(c->op, c->x + k0 * c->es, c->outer, c->n, nk, k0, s);
      continue;
    }
    for (int64_t o = 0; o < c->outer; o++)
      for (int64_t i0 = 0; i0 < c->inner; i0 += TILE)
        c->t->col(c->op, c->x + ((o * c->n + k0) * c->inner + i0) * c->es, nk, c->inner,
                  min64(c->inner - i0, TILE), k0, &s[o * c->inner + i0]);
  }
}

/* split n: merges the blocks' partial states of outputs [b, e) in block order, and stores them. */
static void run_merge(void *p, int64_t b, int64_t e) {
  const rctx *c = p;
  int64_t nout = c->outer * c->inner;
  for (int64_t blk = 1; blk < c->nblk; blk++)
    merge(c->op, c->t->is_float, c->part + b, c->part + blk * nout + b, e - b);
  c->t->store(c->op, c->part + b, e - b, c->out, b, c->n, c->corr);
}

mf_status mf_cpu_reduce(mf_device *dev, const mf_call *c) {
  (void)dev;
  const mf_tensor *x = c->in[0];
  mf_op op = c->op;
  const char *name = mf_op_name(op);
  const rtype *t;
  switch (x->dtype) {
  case MF_F32: t = &type_f32; break;
  case MF_F64: t = &type_f64; break;
  case MF_I32: t = &type_i32; break;
  case MF_I64: t = &type_i64; break;
  case MF_U8:
  case MF_BOOL: t = &type_u8; break;
  default: return mf_fail(MF_ERR_DTYPE, "%s: no CPU kernel for %s", name, mf_dtype_name(x->dtype));
  }
  if (op < MF_OP_SUM || op > MF_OP_VAR)
    return mf_fail(MF_ERR_ARG, "reduce: %s is not a reduction", name);
  if ((op == MF_OP_MEAN || op == MF_OP_VAR) && !t->is_float)
    return mf_fail(MF_ERR_DTYPE, "%s: needs a floating dtype, got %s", name,
                   mf_dtype_name(x->dtype));
  rctx r = {.t = t,
            .op = op,
            .x = mf_data(x),
            .es = mf_dtype_size(x->dtype),
            .out = mf_data(c->out),
            .outer = c->ip[0],
            .n = c->ip[1],
            .inner = c->ip[2],
            .corr = c->ip[3]};
  int64_t nout = r.outer * r.inner;
  if (nout == 0) return MF_OK;
  if (r.n == 0 && op != MF_OP_SUM && op != MF_OP_PROD && op != MF_OP_MEAN && op != MF_OP_VAR)
    return mf_fail(MF_ERR_SHAPE, "%s: cannot reduce an empty dimension", name);
  if (r.n == 1) { /* (outer, 1, inner) is (1, 1, outer * inner): one wide strided pass */
    r.inner = nout;
    r.outer = 1;
  }
  r.ntiles = (r.inner + TILE - 1) / TILE;
  int64_t items = r.outer * r.ntiles, total = nout * r.n;

  /* Few independent outputs to share out and much to reduce: split n into blocks. The choice
   * depends on the shape only, so results do not change with the thread count. */
  if (items < 16 && total >= SPLIT_MIN && r.n >= 64) {
    r.nblk = min64(min64(MAX_BLOCKS, total / SPLIT_CHUNK), r.n / 32);
    r.nblk = max64(2, min64(r.nblk, MAX_PARTIALS / nout));
    r.part = malloc((size_t)(r.nblk * nout) * sizeof *r.part);
    if (!r.part) return mf_fail(MF_ERR_MEMORY, "%s: out of memory for partial results", name);
    mf_parallel_for(r.nblk, 1, run_blocks, &r);
    mf_parallel_for(nout, max64(1, GRAIN / r.nblk), run_merge, &r);
    free(r.part);
  } else if (r.inner == 1) {
    mf_parallel_for(r.outer, max64(1, GRAIN / max64(r.n, 1)), run_rows, &r);
  } else {
    int64_t work = max64(r.n, 1) * min64(r.inner, TILE);
    mf_parallel_for(items, max64(1, GRAIN / work), run_tiles, &r);
  }
  return MF_OK;
}
