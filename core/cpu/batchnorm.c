/* batchnorm.c — the CPU kernels of BATCH_NORM and BATCH_NORM_BACKWARD (call layouts: ops_norm.c),
 * float32 and float64 from one macro-made source; x is viewed as (N, C, S).
 *
 *   training   mean = sum x / M, var = sum (x - mean)^2 / M (M = N S, two passes),
 *              invstd = 1 / sqrt(var + eps), y = (x - mean) invstd w + b,
 *              running = (1 - momentum) running + momentum (mean, var M / (M - 1))
 *   inference  y = (x - running_mean) / sqrt(running_var + eps) w + b
 *   backward   xhat = (x - mean) invstd, dbias = sum dy, dweight = sum dy xhat,
 *              dx = w invstd (dy - dbias / M - xhat dweight / M)
 * (cuDNN's formulas, which cuda/batchnorm.cu uses.)
 *
 * Two walks of the data. S > 1 (NCHW and (N, C, L)): the thread pool splits the channels and
 * each channel's S-long rows are summed with LANES partial sums of the element type (which
 * vectorise), added up in double per row. S == 1 ((N, C), and channels-last NHWC as (N*H*W, C,
 * 1)): the pool splits the rows into blocks, each block sums its rows into per-channel double
 * partials (a contiguous loop over the channels), and the partials are added in block order (the
 * result does not depend on the thread count). The statistics are double; the elementwise passes
 * run in the element type.
 */
#include <math.h>
#include <stdlib.h>

#include "cpu/kernels.h"

#define LANES 8
#define ROW_BLOCKS 16 /* blocks of rows in the S == 1 walk */

typedef struct bn_job {
  const mf_call *c;
  int64_t N, C, S;
  int64_t nblk;   /* S == 1: blocks of rows */
  double *part;   /* S == 1: (nblk, 2, C) partial sums */
  double *stat;   /* S == 1: (4, C) per-channel scalars of the elementwise pass */
  int phase;      /* S == 1: 0 sums, 1 second sums, 2 elementwise */
} bn_job;

/* Per-channel {mean, invstd} of the forward; running stats updated (training). */
static void channel_stats(const bn_job *j, int64_t ch, double sum, double sq_about_mf, double mf,
                          double *mean_out, double *invstd_out);

#define BN_KERNELS(T, SUF)                                                                         \
  /* sum of r[0, n) in double */                                                                   \
  static double rowsum_##SUF(const T *r, int64_t n) {                                             \
    T acc[LANES] = {0};                                                                            \
    int64_t k = 0;                                                                                 \
    for (; k + LANES <= n; k += LANES)                                                             \
      for (int l = 0; l < LANES; l++) acc[l] += r[k + l];                                          \
    double s = 0;                                                                                  \
    for (int l = 0; l < LANES; l++) s += acc[l];                                                   \
    for (; k < n; k++) s += r[k];                                                                  \
    return s;                                                                                      \
  }                                                                                                \
  /* sum of (r - m)^2 */                                                                           \
  static double rowsq_##SUF(const T *r, int64_t n, T m) {                                          \
    T acc[LANES] = {0};                                                                            \
    int64_t k = 0;                                                                                 \
    for (; k + LANES <= n; k += LANES)                                                             \
      for (int l = 0; l < LANES; l++) {                                                            \
        T d = r[k + l] - m;                                                                        \
        acc[l] += d * d;                                                                           \
      }                                                                                            \
    double s = 0;                                                                                  \
    for (int l = 0; l < LANES; l++) s += acc[l];                                                   \
    for (; k < n; k++) s += (double)(r[k] - m) * (double)(r[k] - m);                              \
    return s;                                                                                      \
  }                                                                                                \
  /* sum of dy and of dy (x - m) */                                                                \
  static void rowdot_##SUF(const T *dy, const T *x, int64_t n, T m, double *sdy, double *sdyx) {   \
    T a[LANES] = {0}, b[LANES] = {0};                                                              \
    int64_t k = 0;                                                                                 \
    for (; k + LANES <= n; k += LANES)                                                             \
      for (int l = 0; l < LANES; l++) {                                                            \
        a[l] += dy[k + l];                                                                         \
        b[l] += dy[k + l] * (x[k + l] - m);                                                        \
      }                                                                                            \
    double s = 0, q = 0;                                                                           \
    for (int l = 0; l < LANES; l++) s += a[l], q += b[l];                                          \
    for (; k < n; k++) s += dy[k], q += (double)dy[k] * (double)(x[k] - m);                       \
    *sdy += s;                                                                                     \
    *sdyx += q;                                                                                    \
  }                                                                                                \
                                                                                                   \
  /* S > 1: channels [b, e) */                                                                     \
  static void fwd_ch_##SUF(void *ctx, int64_t b, int64_t e) {                                      \
    const bn_job *j = ctx;                                                                         \
    const mf_call *c = j->c;                                                                       \
    const T *x = mf_data(c->in[0]), *w = mf_data(c->in[1]), *bias = mf_data(c->in[2]);             \
    T *y = mf_data(c->out);                                                                        \
    const T *rm = c->state[0] ? mf_data(c->state[0]) : NULL;                                       \
    const T *rv = c->state[1] ? mf_data(c->state[1]) : NULL;                                       \
    int64_t S = j->S;                                                                              \
    for (int64_t ch = b; ch < e; ch++) {                                                           \
      double mean, invstd;                                                                         \
      if (c->ip[0]) {                                                                              \
        double s = 0, q = 0;                                                                       \
        for (int64_t n = 0; n < j->N; n++) s += rowsum_##SUF(x + (n * j->C + ch) * S, S);          \
        T mt = (T)(s / (double)(j->N * S));                                                        \
        for (int64_t n = 0; n < j->N; n++) q += rowsq_##SUF(x + (n * j->C + ch) * S, S, mt);       \
        channel_stats(j, ch, s, q, (double)mt, &mean, &invstd);                                    \
      } else {                                                                                     \
        mean = rm[ch];                                                                             \
        invstd = 1 / sqrt((double)rv[ch] + c->p[1]);                                               \
      }                                                                                            \
      T m = (T)mean, a = (T)(w[ch] * invstd), sh = bias[ch];                                       \
      for (int64_t n = 0; n < j->N; n++) {                                                         \
        const T *r = x + (n * j->C + ch) * S;                                                      \
        T *o = y + (n * j->C + ch) * S;                                                            \
        for (int64_t k = 0; k < S; k++) o[k] = (r[k] - m) * a + sh;                                \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  static void bwd_ch_##SUF(void *ctx, int64_t b, int64_t e) {                                      \
    const bn_job *j = ctx;                                                                         \
    const mf_call *c = j->c;                                                                       \
    const T *dy = mf_data(c->in[0]), *x = mf_data(c->in[1]), *w = mf_data(c->in[2]);               \
    const T *stats = mf_data(c->in[3]);                                                            \
    T *dx = mf_data(c->out), *dw = mf_data(c->out2), *db = mf_data(c->state[0]);                   \
    int64_t S = j->S;                                                                              \
    double M = (double)(j->N * S);                                                                 \
    for (int64_t ch = b; ch < e; ch++) {                                                           \
      T m = stats[ch];                                                                             \
      double invstd = stats[j->C + ch], sdy = 0, sdyx = 0;                                         \
      for (int64_t n = 0; n < j->N; n++) {                                                         \
        int64_t o = (n * j->C + ch) * S;                                                           \
        rowdot_##SUF(dy + o, x + o, S, m, &sdy, &sdyx);                                            \
      }                                                                                            \
      db[ch] = (T)sdy;                                                                             \
      dw[ch] = (T)(sdyx * invstd);                                                                 \
      /* dx = a dy + k (x - m) + z */                                                              \
      double a = w[ch] * invstd;                                                                   \
      T ta = (T)a, tk = (T)(-a * invstd * invstd * sdyx / M), tz = (T)(-a * sdy / M);              \
      for (int64_t n = 0; n < j->N; n++) {                                                         \
        int64_t o = (n * j->C + ch) * S;                                                           \
        for (int64_t k = 0; k < S; k++) dx[o + k] = ta * dy[o + k] + tk * (x[o + k] - m) + tz;     \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  /* S == 1: blocks of rows [b, e); phase 0: sums of x (forward) or of dy and dy (x - mean)       \
   * (backward); phase 1: sums of (x - mean)^2; phase 2: the elementwise pass with stat. */        \
  static void rows_##SUF(void *ctx, int64_t b, int64_t e) {                                        \
    const bn_job *j = ctx;                                                                         \
    const mf_call *c = j->c;                                                                       \
    bool backward = c->op == MF_OP_BATCH_NORM_BACKWARD;                                            \
    int64_t C = j->C;                                                                              \
    const T *x = mf_data(c->in[backward ? 1 : 0]);                                                 \
    const T *dy = backward ? mf_data(c->in[0]) : NULL;                                             \
    T *out = mf_data(c->out);                                                                      \
    for (int64_t blk = b; blk < e; blk++) {                                                        \
      int64_t r0 = j->N * blk / j->nblk, r1 = j->N * (blk + 1) / j->nblk;                          \
      double *p0 = j->part + blk * 2 * C, *p1 = p0 + C;                                            \
      const double *st = j->stat;                                                                  \
      if (j->phase == 0 && !backward) {                                                            \
        for (int64_t ch = 0; ch < C; ch++) p0[ch] = 0;                                             \
        for (int64_t n = r0; n < r1; n++)                                                          \
          for (int64_t ch = 0; ch < C; ch++) p0[ch] += x[n * C + ch];                              \
      } else if (j->phase == 0) { /* st[0..C) = mean */                                            \
        for (int64_t ch = 0; ch < C; ch++) p0[ch] = p1[ch] = 0;                                    \
        for (int64_t n = r0; n < r1; n++)                                                          \
          for (int64_t ch = 0; ch < C; ch++) {                                                     \
            double g = dy[n * C + ch];                                                             \
            p0[ch] += g;                                                                           \
            p1[ch] += g * (x[n * C + ch] - st[ch]);                                                \
          }                                                                                        \
      } else if (j->phase == 1) { /* st[0..C) = mean */                                            \
        for (int64_t ch = 0; ch < C; ch++) p1[ch] = 0;                                             \
        for (int64_t n = r0; n < r1; n++)                                                          \
          for (int64_t ch = 0; ch < C; ch++) {                                                     \
            double d = x[n * C + ch] - st[ch];                                                     \
            p1[ch] += d * d;                                                                       \
          }                                                                                        \
      } else if (!backward) { /* y = (x - st0) st1 + st2 */                                        \
        for (int64_t n = r0; n < r1; n++)                                                          \
          for (int64_t ch = 0; ch < C; ch++)                                                       \
            out[n * C + ch] = (T)((x[n * C + ch] - st[ch]) * st[C + ch] + st[2 * C + ch]);         \
      } else { /* dx = st1 dy + st2 (x - st0) + st3 */                                             \
        for (int64_t n = r0; n < r1; n++)                                                          \
          for (int64_t ch = 0; ch < C; ch++)                                                       \
            out[n * C + ch] = (T)(st[C + ch] * dy[n * C + ch] +                                    \
                                  st[2 * C + ch] * (x[n * C + ch] - st[ch]) + st[3 * C + ch]);     \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  static double get_##SUF(const mf_tensor *t, int64_t i) { return ((const T *)mf_data(t))[i]; }    \
  static void put_##SUF(mf_tensor *t, int64_t i, double v) { ((T *)mf_data(t))[i] = (T)v; }

BN_KERNELS(float, f32)
BN_KERNELS(double, f64)

static double get(const mf_tensor *t, int64_t i) {
  return t->dtype == MF_F64 ? get_f64(t, i) : get_f32(t, i);
}
static void put(mf_tensor *t, int64_t i, double v) {
  if (t->dtype == MF_F64)
    put_f64(t, i, v);
  else
    put_f32(t, i, v);
}

/* sq_about_mf = sum (x - mf)^2 with mf the mean rounded to the element type:
 * sum (x - mean)^2 = sq_about_mf - M (mean - mf)^2. */
static void channel_stats(const bn_job *j, int64_t ch, double sum, double sq_about_mf, double mf,
                          double *mean_out, double *invstd_out) {
  const mf_call *c = j->c;
  double M = (double)(j->N * j->S), mean = sum / M;
  double var = sq_about_mf / M - (mean - mf) * (mean - mf);
  if (var < 0) var = 0;
  double invstd = 1 / sqrt(var + c->p[1]);
  put(c->out2, ch, mean);
  put(c->out2, j->C + ch, invstd);
  mf_tensor *rm = c->state[0], *rv = c->state[1];
  if (rm) {
    double momentum = c->p[0];
    put(rm, ch, (1 - momentum) * get(rm, ch) + momentum * mean);
    put(rv, ch, (1 - momentum) * get(rv, ch) + momentum * var * M / (M - 1));
  }
  *mean_out = mean;
  *invstd_out = invstd;
}

/* The S == 1 walk: the phases over blocks of rows, the per-channel arithmetic between them. */
static mf_status by_rows(bn_job *j, bool f64) {
  const mf_call *c = j->c;
  bool backward = c->op == MF_OP_BATCH_NORM_BACKWARD, training = backward || c->ip[0];
  int64_t C = j->C;
  j->nblk = j->N * C >= 32768 ? (j->N < ROW_BLOCKS ? j->N : ROW_BLOCKS) : 1;
  j->part = malloc(sizeof(double) * (size_t)(j->nblk * 2 * C + 4 * C));
  if (!j->part) return mf_fail(MF_ERR_MEMORY, "%s: out of memory", mf_op_name(c->op));
  j->stat = j->part + j->nblk * 2 * C;
  double *st = j->stat, M = (double)j->N;
  mf_range_fn fn = f64 ? rows_f64 : rows_f32;
  const mf_tensor *w = c->in[backward ? 2 : 1];
  if (backward) {
    const mf_tensor *stats = c->in[3];
    for (int64_t ch = 0; ch < C; ch++) st[ch] = get(stats, ch);
    j->phase = 0;
    mf_parallel_for(j->nblk, 1, fn, j);
    for (int64_t ch = 0; ch < C; ch++) {
      double sdy = 0, sdyx = 0, invstd = get(stats, C + ch);
      for (int64_t b = 0; b < j->nblk; b++) {
        sdy += j->part[b * 2 * C + ch];
        sdyx += j->part[b * 2 * C + C + ch];
      }
      put(c->state[0], ch, sdy);
      put(c->out2, ch, sdyx * invstd);
      double a = get(w, ch) * invstd;
      st[C + ch] = a;
      st[2 * C + ch] = -a * invstd * invstd * sdyx / M;
      st[3 * C + ch] = -a * sdy / M;
    }
  } else {
    if (training) {
      j->phase = 0;
      mf_parallel_for(j->nblk, 1, fn, j);
      for (int64_t ch = 0; ch < C; ch++) {
        double s = 0;
        for (int64_t b = 0; b < j->nblk; b++) s += j->part[b * 2 * C + ch];
        st[ch] = s / M;
      }
      j->phase = 1;
      mf_parallel_for(j->nblk, 1, fn, j);
      for (int64_t ch = 0; ch < C; ch++) {
        double q = 0, mean, invstd;
        for (int64_t b = 0; b < j->nblk; b++) q += j->part[b * 2 * C + C + ch];
        channel_stats(j, ch, st[ch] * M, q, st[ch], &mean, &invstd);
        st[C + ch] = invstd;
      }
    } else {
      for (int64_t ch = 0; ch < C; ch++) {
        st[ch] = get(c->state[0], ch);
        st[C + ch] = 1 / sqrt(get(c->state[1], ch) + c->p[1]);
      }
    }
    for (int64_t ch = 0; ch < C; ch++) {
      st[C + ch] *= get(w, ch);
      st[2 * C + ch] = get(c->in[2], ch);
    }
  }
  j->phase = 2;
  mf_parallel_for(j->nblk, 1, fn, j);
  free(j->part);
  return MF_OK;
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
  bool f64 = dt == MF_F64;
  bn_job j = {.c = c, .N = c->ip[1], .C = c->ip[2], .S = c->ip[3]};
  if (j.S == 1) return by_rows(&j, f64);
  int64_t per = j.N * j.S;
  mf_range_fn fn = backward ? (f64 ? bwd_ch_f64 : bwd_ch_f32) : (f64 ? fwd_ch_f64 : fwd_ch_f32);
  mf_parallel_for(j.C, 65536 / (per > 0 ? per : 1) + 1, fn, &j);
  return MF_OK;
}
