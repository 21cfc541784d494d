/* batchnorm.c — the CPU kernels of BATCH_NORM and BATCH_NORM_BACKWARD (call layouts: ops_norm.c),
 * float32 and float64 from one source (elements read and written through ld/st, arithmetic in
 * double). Work is split over the thread pool by channel; x is viewed as (N, C, S).
 *
 *   training   mean = sum x / M, var = sum (x - mean)^2 / M (M = N S, two passes),
 *              invstd = 1 / sqrt(var + eps), y = (x - mean) invstd w + b,
 *              running = (1 - momentum) running + momentum (mean, var M / (M - 1))
 *   inference  y = (x - running_mean) / sqrt(running_var + eps) w + b
 *   backward   xhat = (x - mean) invstd, dbias = sum dy, dweight = sum dy xhat,
 *              dx = w invstd (dy - dbias / M - xhat dweight / M)
 * (cuDNN's formulas, which cuda/batchnorm.cu uses.)
 */
#include <math.h>

#include "cpu/kernels.h"

typedef struct bn_job {
  const mf_call *c;
  bool f64;
  int64_t N, C, S;
} bn_job;

static inline double ld(const mf_tensor *t, bool f64, int64_t i) {
  return f64 ? ((const double *)mf_data(t))[i] : (double)((const float *)mf_data(t))[i];
}
static inline void st(mf_tensor *t, bool f64, int64_t i, double v) {
  if (f64)
    ((double *)mf_data(t))[i] = v;
  else
    ((float *)mf_data(t))[i] = (float)v;
}

/* channels [b, e) */
static void bn_forward(void *ctx, int64_t b, int64_t e) {
  const bn_job *j = ctx;
  const mf_call *c = j->c;
  const mf_tensor *x = c->in[0], *w = c->in[1], *bias = c->in[2];
  mf_tensor *y = c->out, *stats = c->out2, *rm = c->state[0], *rv = c->state[1];
  bool f = j->f64, training = c->ip[0] != 0;
  double momentum = c->p[0], eps = c->p[1];
  int64_t M = j->N * j->S;
  for (int64_t ch = b; ch < e; ch++) {
    double mean, invstd;
    if (training) {
      double s = 0, q = 0;
      for (int64_t n = 0; n < j->N; n++)
        for (int64_t k = 0, o = (n * j->C + ch) * j->S; k < j->S; k++) s += ld(x, f, o + k);
      mean = s / (double)M;
      for (int64_t n = 0; n < j->N; n++)
        for (int64_t k = 0, o = (n * j->C + ch) * j->S; k < j->S; k++) {
          double d = ld(x, f, o + k) - mean;
          q += d * d;
        }
      double var = q / (double)M;
      invstd = 1 / sqrt(var + eps);
      st(stats, f, ch, mean);
      st(stats, f, j->C + ch, invstd);
      if (rm) {
        st(rm, f, ch, (1 - momentum) * ld(rm, f, ch) + momentum * mean);
        st(rv, f, ch,
           (1 - momentum) * ld(rv, f, ch) + momentum * var * (double)M / (double)(M - 1));
      }
    } else {
      mean = ld(rm, f, ch);
      invstd = 1 / sqrt(ld(rv, f, ch) + eps);
    }
    double scale = ld(w, f, ch) * invstd, shift = ld(bias, f, ch);
    for (int64_t n = 0; n < j->N; n++)
      for (int64_t k = 0, o = (n * j->C + ch) * j->S; k < j->S; k++)
        st(y, f, o + k, (ld(x, f, o + k) - mean) * scale + shift);
  }
}

static void bn_backward(void *ctx, int64_t b, int64_t e) {
  const bn_job *j = ctx;
  const mf_call *c = j->c;
  const mf_tensor *dy = c->in[0], *x = c->in[1], *w = c->in[2], *stats = c->in[3];
  mf_tensor *dx = c->out, *dw = c->out2, *db = c->state[0];
  bool f = j->f64;
  double M = (double)(j->N * j->S);
  for (int64_t ch = b; ch < e; ch++) {
    double mean = ld(stats, f, ch), invstd = ld(stats, f, j->C + ch);
    double sdy = 0, sdyx = 0;
    for (int64_t n = 0; n < j->N; n++)
      for (int64_t k = 0, o = (n * j->C + ch) * j->S; k < j->S; k++) {
        double g = ld(dy, f, o + k);
        sdy += g;
        sdyx += g * (ld(x, f, o + k) - mean) * invstd;
      }
    st(db, f, ch, sdy);
    st(dw, f, ch, sdyx);
    double scale = ld(w, f, ch) * invstd;
    for (int64_t n = 0; n < j->N; n++)
      for (int64_t k = 0, o = (n * j->C + ch) * j->S; k < j->S; k++) {
        double xhat = (ld(x, f, o + k) - mean) * invstd;
        st(dx, f, o + k, scale * (ld(dy, f, o + k) - sdy / M - xhat * sdyx / M));
      }
  }
}

mf_status mf_cpu_batch_norm(mf_device *dev, const mf_call *c) {
  (void)dev;
  const char *name = mf_op_name(c->op);
  bool backward = c->op == MF_OP_BATCH_NORM_BACKWARD;
  if (!c->out || c->nin < (backward ? 4 : 3) || (backward && (!c->out2 || !c->state[0])) ||
      (!backward && c->ip[0] && !c->out2) || (!backward && !c->ip[0] && !c->state[0]))
    return mf_fail(MF_ERR_ARG, "%s: malformed kernel call", name);
  mf_dtype dt = c->out->dtype;
  if (dt != MF_F32 && dt != MF_F64)
    return mf_fail(MF_ERR_DTYPE, "%s: the CPU kernel takes float32 or float64, got %s", name,
                   mf_dtype_name(dt));
  bn_job j = {c, dt == MF_F64, c->ip[1], c->ip[2], c->ip[3]};
  int64_t per = j.N * j.S;
  mf_parallel_for(j.C, 65536 / (per > 0 ? per : 1) + 1, backward ? bn_backward : bn_forward, &j);
  return MF_OK;
}
