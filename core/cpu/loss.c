/* loss.c — the CPU cross-entropy kernels (float32, float64) over the rows of logits x (N, C)
 * (layout: ops_nn.c, mf_cross_entropy):
 *   forward   m_i = max_j x_ij, s_i = sum_j exp(x_ij - m_i), lse_i = m_i + log s_i,
 *             loss_i = log s_i - (1 - eps)(x[i, t_i] - m_i) - eps (mean_j x_ij - m_i)
 *   backward  dx_ij = g_i (exp(x_ij - lse_i) - (1 - eps)[j == t_i] - eps / C)
 * (-log_softmax at t_i, in the form log_softmax computes it: exact near the max). t_i counts from
 * base; one outside base .. base + C - 1 fails the forward with MF_ERR_INDEX naming it, and gives
 * no one-hot term in the backward, which only compares with it. A NaN in a row gives NaN for the
 * row. Rows are split over the thread pool. The float and double kernels come from one definition
 * (CE_KERNELS).
 */
#include <math.h>
#include <stdatomic.h>

#include "cpu/iter.h"
#include "cpu/kernels.h"
#include "cpu/vmath.h"

typedef struct ce_job {
  const void *x, *lse, *g;
  const int64_t *t;
  void *out, *out2; /* forward: loss, lse; backward: dx */
  int64_t C, base, gstride;
  double eps;
  atomic_int bad;
  atomic_llong bad_value;
} ce_job;

/* the class of row i counted from 0, or -1 when out of range (v - base: no overflow once v >= base)
 */
static inline int64_t ce_index(const ce_job *j, int64_t i) {
  int64_t v = j->t[i];
  return v >= j->base && v - j->base < j->C ? v - j->base : -1;
}

/* the same, an out-of-range one noted in the job (the forward's error) */
static inline int64_t ce_class(ce_job *j, int64_t i) {
  int64_t c = ce_index(j, i), v = j->t[i];
  if (c >= 0) return c;
  if (!atomic_exchange_explicit(&j->bad, 1, memory_order_relaxed))
    atomic_store_explicit(&j->bad_value, (long long)v, memory_order_relaxed);
  return -1;
}

#define CE_KERNELS(T, S, EXP, LOG)                                                                 \
  static void ce_fwd_##S(void *ctx, int64_t b, int64_t e) {                                        \
    ce_job *j = ctx;                                                                               \
    int64_t C = j->C;                                                                              \
    T eps = (T)j->eps;                                                                             \
    for (int64_t i = b; i < e; i++) {                                                              \
      const T *x = (const T *)j->x + i * C;                                                        \
      T m = -INFINITY, s = 0, sum = 0;                                                             \
      for (int64_t k = 0; k < C; k++) m = x[k] > m ? x[k] : m;                                     \
      for (int64_t k = 0; k < C; k++) s += EXP(x[k] - m);                                          \
      int64_t c = ce_class(j, i);                                                                  \
      T ls = LOG(s), loss = c < 0 ? (T)NAN : ls - (1 - eps) * (x[c] - m);                          \
      if (eps != 0) {                                                                              \
        for (int64_t k = 0; k < C; k++) sum += x[k];                                               \
        loss -= eps * (sum / (T)C - m);                                                            \
      }                                                                                            \
      ((T *)j->out)[i] = loss;                                                                     \
      ((T *)j->out2)[i] = m + ls;                                                                  \
    }                                                                                              \
  }                                                                                                \
  static void ce_bwd_##S(void *ctx, int64_t b, int64_t e) {                                        \
    ce_job *j = ctx;                                                                               \
    int64_t C = j->C;                                                                              \
    T eps = (T)j->eps, off = eps / (T)C, on = 1 - eps;                                             \
    for (int64_t i = b; i < e; i++) {                                                              \
      const T *x = (const T *)j->x + i * C;                                                        \
      T *dx = (T *)j->out + i * C;                                                                 \
      T lse = ((const T *)j->lse)[i], g = ((const T *)j->g)[i * j->gstride];                       \
      int64_t c = ce_index(j, i);                                                                  \
      for (int64_t k = 0; k < C; k++) dx[k] = g * (EXP(x[k] - lse) - off);                         \
      if (c >= 0) dx[c] -= g * on;                                                                 \
    }                                                                                              \
  }

CE_KERNELS(float, f32, mf_expf, mf_logf)
CE_KERNELS(double, f64, mf_exp, mf_log)

mf_status mf_cpu_cross_entropy(mf_device *dev, const mf_call *c) {
  (void)dev;
  const char *name = mf_op_name(c->op);
  bool bwd = c->op == MF_OP_CROSS_ENTROPY_BACKWARD;
  if (!c->out || c->nin < (bwd ? 4 : 2) || (!bwd && !c->out2))
    return mf_fail(MF_ERR_ARG, "%s: malformed kernel call", name);
  mf_dtype dt = c->out->dtype;
  if (dt != MF_F32 && dt != MF_F64)
    return mf_fail(MF_ERR_DTYPE, "%s: the CPU kernel takes float32 or float64, got %s", name,
                   mf_dtype_name(dt));
  ce_job j = {.x = mf_cpu_ptr(c->in[0]),
              .t = mf_cpu_ptr(c->in[1]),
              .lse = bwd ? mf_cpu_ptr(c->in[2]) : NULL,
              .g = bwd ? mf_cpu_ptr(c->in[3]) : NULL,
              .out = mf_cpu_ptr(c->out),
              .out2 = bwd ? NULL : mf_cpu_ptr(c->out2),
              .C = c->ip[1],
              .base = c->ip[2],
              .gstride = c->ip[4],
              .eps = c->p[0]};
  atomic_init(&j.bad, 0);
  atomic_init(&j.bad_value, 0);
  int64_t N = c->ip[0];
  mf_range_fn fn =
      bwd ? (dt == MF_F32 ? ce_bwd_f32 : ce_bwd_f64) : (dt == MF_F32 ? ce_fwd_f32 : ce_fwd_f64);
  mf_parallel_for(N, 16384 / (j.C > 0 ? j.C : 1) + 1, fn, &j);
  if (atomic_load(&j.bad))
    return mf_fail(MF_ERR_INDEX, "cross_entropy: class index %lld is out of range %lld..%lld",
                   (long long)atomic_load(&j.bad_value), (long long)j.base,
                   (long long)(j.base + j.C - 1));
  return MF_OK;
}
