/* softmax.c — the CPU softmax and log_softmax kernels and their backwards (float32, float64), along
 * one dim of a contiguous tensor viewed as (outer, n, inner) = ip[0..2] (see ops_nn.c):
 *   softmax       y = exp(x - max) / sum exp(x - max)
 *   log_softmax   y = x - max - log(sum exp(x - max))
 *   softmax backward       dx = y * (dy - sum(dy * y))
 *   log_softmax backward   dx = dy - exp(y) * sum(dy)
 * with the sums over the n entries of the dim. NaN anywhere in a slice gives NaN for the slice.
 *
 * inner == 1 (the last dim, the usual case): each row is contiguous and the loops run over it in
 * lanes of L independent accumulators, so that gcc vectorises exp (cpu/vmath.h) and the sums.
 * inner > 1: the loops run along inner, in column blocks of up to BLOCK, one vector of running
 * maxima and sums per block. Rows (or row blocks) are split over the thread pool.
 * The float and double versions come from one definition: this file includes itself with T, S,
 * EXP, LOG and L defined.
 */
#ifndef SOFTMAX_T /* ---- the type-independent part ----------------------------------------- */

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <math.h>

#include "cpu/iter.h"
#include "cpu/kernels.h"
#include "cpu/vmath.h"

#define BLOCK 256 /* columns per block when inner > 1 */

typedef struct sm_job {
  mf_op op;
  const void *a, *b; /* x; or y, dy */
  void *out;
  int64_t outer, n, inner, blocks; /* blocks: column blocks per outer index */
} sm_job;

#define SOFTMAX_T float
#define S f32
#define EXP mf_expf
#define LOG mf_logf
#define L 16
#include "cpu/softmax.c"
#undef SOFTMAX_T
#undef S
#undef EXP
#undef LOG
#undef L
#define SOFTMAX_T double
#define S f64
#define EXP mf_exp
#define LOG mf_log
#define L 8
#include "cpu/softmax.c"
#undef SOFTMAX_T
#undef S
#undef EXP
#undef LOG
#undef L

mf_status mf_cpu_softmax(mf_device *dev, const mf_call *c) {
  (void)dev;
  const char *name = mf_op_name(c->op);
  bool bwd = c->op == MF_OP_SOFTMAX_BACKWARD || c->op == MF_OP_LOG_SOFTMAX_BACKWARD;
  if (!c->out || c->nin < (bwd ? 2 : 1))
    return mf_fail(MF_ERR_ARG, "%s: malformed kernel call", name);
  if (c->op != MF_OP_SOFTMAX && c->op != MF_OP_LOG_SOFTMAX && !bwd)
    return mf_fail(MF_ERR_ARG, "%s: not a softmax op", name);
  mf_dtype dt = c->out->dtype;
  if (dt != MF_F32 && dt != MF_F64)
    return mf_fail(MF_ERR_DTYPE, "%s: the CPU kernel takes float32 or float64, got %s", name,
                   mf_dtype_name(dt));
  sm_job j = {.op = c->op,
              .a = mf_cpu_ptr(c->in[0]),
              .b = bwd ? mf_cpu_ptr(c->in[1]) : NULL,
              .out = mf_cpu_ptr(c->out),
              .outer = c->ip[0],
              .n = c->ip[1],
              .inner = c->ip[2]};
  if (j.outer * j.n * j.inner == 0) return MF_OK;
  j.blocks = j.inner == 1 ? 1 : (j.inner + BLOCK - 1) / BLOCK;
  int64_t units = j.outer * j.blocks;
  int64_t per_unit = j.n * (j.inner < BLOCK ? j.inner : BLOCK);
  mf_parallel_for(units, 16384 / per_unit + 1, dt == MF_F32 ? sm_run_f32 : sm_run_f64, &j);
  return MF_OK;
}

#else /* ---- the typed part: T = SOFTMAX_T, functions suffixed _S --------------------- */

#define T SOFTMAX_T
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define F(name) CAT(name, S)

/* max of x[0..n) (NaN is skipped here and shows up in the sum) */
static inline T F(row_max)(const T *x, int64_t n) {
  T acc[L];
  for (int k = 0; k < L; k++) acc[k] = -INFINITY;
  int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int k = 0; k < L; k++) acc[k] = x[i + k] > acc[k] ? x[i + k] : acc[k];
  T m = -INFINITY;
  for (int k = 0; k < L; k++) m = acc[k] > m ? acc[k] : m;
  for (; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

/* sum of a[i] * b[i] (b NULL: of a[i]) */
static inline T F(row_dot)(const T *a, const T *b, int64_t n) {
  T acc[L] = {0};
  int64_t i = 0;
  if (b)
    for (; i + L <= n; i += L)
      for (int k = 0; k < L; k++) acc[k] += a[i + k] * b[i + k];
  else
    for (; i + L <= n; i += L)
      for (int k = 0; k < L; k++) acc[k] += a[i + k];
  T s = 0;
  for (int k = 0; k < L; k++) s += acc[k];
  for (; i < n; i++) s += b ? a[i] * b[i] : a[i];
  return s;
}

/* one contiguous row (inner == 1) */
static void F(sm_row)(const sm_job *j, int64_t r) {
  int64_t n = j->n;
  T *o = (T *)j->out + r * n;
  if (j->op == MF_OP_SOFTMAX || j->op == MF_OP_LOG_SOFTMAX) {
    const T *x = (const T *)j->a + r * n;
    T m = F(row_max)(x, n);
    T acc[L] = {0};
    int64_t i = 0;
    if (j->op == MF_OP_SOFTMAX) {
      for (; i + L <= n; i += L)
        for (int k = 0; k < L; k++) {
          T e = EXP(x[i + k] - m);
          o[i + k] = e;
          acc[k] += e;
        }
    } else {
      for (; i + L <= n; i += L)
        for (int k = 0; k < L; k++) acc[k] += EXP(x[i + k] - m);
    }
    T s = 0;
    for (int k = 0; k < L; k++) s += acc[k];
    for (; i < n; i++) {
      T e = EXP(x[i] - m);
      if (j->op == MF_OP_SOFTMAX) o[i] = e;
      s += e;
    }
    if (j->op == MF_OP_SOFTMAX) {
      T inv = 1 / s;
      for (i = 0; i < n; i++) o[i] *= inv;
    } else {
      T ls = LOG(s); /* (x - max) first: exact near the max, so small results keep their digits */
      for (i = 0; i < n; i++) o[i] = (x[i] - m) - ls;
    }
    return;
  }
  const T *y = (const T *)j->a + r * n, *dy = (const T *)j->b + r * n;
  if (j->op == MF_OP_SOFTMAX_BACKWARD) {
    T dot = F(row_dot)(y, dy, n);
    for (int64_t i = 0; i < n; i++) o[i] = y[i] * (dy[i] - dot);
  } else {
    T s = F(row_dot)(dy, NULL, n);
    for (int64_t i = 0; i < n; i++) o[i] = dy[i] - EXP(y[i]) * s;
  }
}

/* columns [c0, c0 + w) of slab `q` (inner > 1): entry (k, c) at (q * n + k) * inner + c */
static void F(sm_cols)(const sm_job *j, int64_t q, int64_t c0, int64_t w) {
  int64_t n = j->n, inner = j->inner, base = q * n * inner + c0;
  T *o = (T *)j->out + base;
  T m[BLOCK], s[BLOCK];
  for (int64_t c = 0; c < w; c++) s[c] = 0;
  if (j->op == MF_OP_SOFTMAX || j->op == MF_OP_LOG_SOFTMAX) {
    const T *x = (const T *)j->a + base;
    for (int64_t c = 0; c < w; c++) m[c] = -INFINITY;
    for (int64_t k = 0; k < n; k++)
      for (int64_t c = 0; c < w; c++) m[c] = x[k * inner + c] > m[c] ? x[k * inner + c] : m[c];
    for (int64_t k = 0; k < n; k++)
      for (int64_t c = 0; c < w; c++) {
        T e = EXP(x[k * inner + c] - m[c]);
        o[k * inner + c] = e;
        s[c] += e;
      }
    if (j->op == MF_OP_SOFTMAX) {
      for (int64_t c = 0; c < w; c++) s[c] = 1 / s[c];
      for (int64_t k = 0; k < n; k++)
        for (int64_t c = 0; c < w; c++) o[k * inner + c] *= s[c];
    } else {
      for (int64_t c = 0; c < w; c++) s[c] = LOG(s[c]);
      for (int64_t k = 0; k < n; k++)
        for (int64_t c = 0; c < w; c++) o[k * inner + c] = (x[k * inner + c] - m[c]) - s[c];
    }
    return;
  }
  const T *y = (const T *)j->a + base, *dy = (const T *)j->b + base;
  if (j->op == MF_OP_SOFTMAX_BACKWARD) {
    for (int64_t k = 0; k < n; k++)
      for (int64_t c = 0; c < w; c++) s[c] += y[k * inner + c] * dy[k * inner + c];
    for (int64_t k = 0; k < n; k++)
      for (int64_t c = 0; c < w; c++)
        o[k * inner + c] = y[k * inner + c] * (dy[k * inner + c] - s[c]);
  } else {
    for (int64_t k = 0; k < n; k++)
      for (int64_t c = 0; c < w; c++) s[c] += dy[k * inner + c];
    for (int64_t k = 0; k < n; k++)
      for (int64_t c = 0; c < w; c++)
        o[k * inner + c] = dy[k * inner + c] - EXP(y[k * inner + c]) * s[c];
  }
}

static void F(sm_run)(void *ctx, int64_t b, int64_t e) {
  const sm_job *j = ctx;
  for (int64_t u = b; u < e; u++) {
    if (j->inner == 1) {
      F(sm_row)(j, u);
      continue;
    }
    int64_t q = u / j->blocks, c0 = (u % j->blocks) * BLOCK;
    int64_t w = j->inner - c0 < BLOCK ? j->inner - c0 : BLOCK;
    F(sm_cols)(j, q, c0, w);
  }
}

#undef T
#undef F
#undef CAT
#undef CAT_

#endif
