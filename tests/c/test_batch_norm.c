/* test_batch_norm.c — the fused batch normalisation ops on the CPU (mf_batch_norm,
 * mf_batch_norm_backward): the forward against double loops of the definition (training and
 * inference, 2-D and 4-D inputs, with and without weight/bias/running stats), the running-stat
 * update (PyTorch's rule, unbiased variance), the backward against finite differences of
 * sum(y * r) in float64, the autograd rule (mf_grad equals the backward op in training, the formula
 * in inference; no create_graph in training), and the error messages for bad arguments. (The GPU's cuDNN kernels are
 * compared with these in test_cuda_parity.c.)
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h" /* mf_shape_numel */
#include "test.h"

static uint64_t seed = 12345;
static double unit(void) {
  seed = seed * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(seed >> 11) * 0x1p-53;
}

static mf_tensor *rnd(int nd, const int64_t *shape, mf_dtype dt, double lo, double hi) {
  int64_t n = mf_shape_numel(nd, shape);
  double *h = malloc((size_t)(n ? n : 1) * sizeof *h);
  for (int64_t i = 0; i < n; i++) h[i] = lo + (hi - lo) * unit();
  mf_tensor *t = tensor_of_doubles(nd, shape, dt, h);
  free(h);
  return t;
}

static double *host(const mf_tensor *t) {
  int64_t n = mf_numel(t);
  double *h = malloc((size_t)(n ? n : 1) * sizeof *h);
  if (mf_to_host(t, MF_F64, h) != MF_OK) h[0] = NAN;
  return h;
}

/* the definition in double loops: y, and the batch mean and biased variance per channel */
static void reference(const mf_tensor *x, const double *w, const double *b, const double *rm,
                      const double *rv, bool training, double eps, double *y, double *mean,
                      double *var) {
  int64_t N = x->shape[0], C = x->shape[1], S = mf_numel(x) / (N * C);
  double *xh = host(x);
  for (int64_t c = 0; c < C; c++) {
    double s = 0, q = 0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t k = 0; k < S; k++) s += xh[(n * C + c) * S + k];
    double m = s / (double)(N * S);
    for (int64_t n = 0; n < N; n++)
      for (int64_t k = 0; k < S; k++) q += pow(xh[(n * C + c) * S + k] - m, 2);
    mean[c] = m;
    var[c] = q / (double)(N * S);
    double um = training ? m : rm[c], uv = training ? var[c] : rv[c];
    for (int64_t n = 0; n < N; n++)
      for (int64_t k = 0; k < S; k++) {
        int64_t i = (n * C + c) * S + k;
        y[i] = (xh[i] - um) / sqrt(uv + eps) * (w ? w[c] : 1) + (b ? b[c] : 0);
      }
  }
  free(xh);
}

static void check_forward(int nd, const int64_t *shape, mf_dtype dt, bool with_params,
                          bool with_running) {
  int64_t C = shape[1], cs[1] = {C};
  double tol = dt == MF_F64 ? 1e-12 : 2e-5;
  mf_tensor *x = rnd(nd, shape, dt, -2, 3);
  mf_tensor *w = with_params ? rnd(1, cs, dt, 0.5, 1.5) : NULL;
  mf_tensor *b = with_params ? rnd(1, cs, dt, -1, 1) : NULL;
  mf_tensor *rm = rnd(1, cs, dt, -0.5, 0.5), *rv = rnd(1, cs, dt, 0.5, 2);
  double *wh = w ? host(w) : NULL, *bh = b ? host(b) : NULL, *rmh = host(rm), *rvh = host(rv);
  int64_t n = mf_numel(x);
  double *y = malloc((size_t)n * sizeof *y), *mean = malloc((size_t)C * sizeof *mean),
         *var = malloc((size_t)C * sizeof *var);
  for (int training = 0; training < 2; training++) {
    if (!training && !with_running) continue;
    mf_tensor *out = NULL, *stats = NULL;
    double momentum = 0.25, eps = 1e-3;
    CHECK_OK(mf_batch_norm(x, w, b, with_running ? rm : NULL, with_running ? rv : NULL, training,
                           momentum, eps, &out, &stats));
    reference(x, wh, bh, rmh, rvh, training, eps, y, mean, var);
    if (!out) continue;
    double *oh = host(out);
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
      if (fabs(oh[i] - y[i]) > tol * (1 + fabs(y[i])) && bad++ < 3)
        fprintf(stderr, "batch_norm %s y[%lld] = %.9g, expected %.9g\n",
                training ? "training" : "inference", (long long)i, oh[i], y[i]);
    CHECK(bad == 0);
    free(oh);
    if (training) {
      CHECK(stats && stats->ndim == 2 && stats->shape[0] == 2 && stats->shape[1] == C);
      double *sh = stats ? host(stats) : NULL;
      for (int64_t c = 0; sh && c < C; c++) {
        CHECK_CLOSE(sh[c], mean[c], tol, tol);
        CHECK_CLOSE(sh[C + c], 1 / sqrt(var[c] + eps), tol, tol);
      }
      free(sh);
      if (with_running) { /* updated in place: (1 - m) r + m batch, unbiased variance */
        double *rm2 = host(rm), *rv2 = host(rv);
        double M = (double)(n / C);
        for (int64_t c = 0; c < C; c++) {
          CHECK_CLOSE(rm2[c], (1 - momentum) * rmh[c] + momentum * mean[c], tol, tol);
          CHECK_CLOSE(rv2[c], (1 - momentum) * rvh[c] + momentum * var[c] * M / (M - 1), tol, tol);
          rmh[c] = rm2[c];
          rvh[c] = rv2[c];
        }
        free(rm2);
        free(rv2);
      }
    } else {
      CHECK(stats == NULL);
    }
    mf_release(out);
    mf_release(stats);
  }
  free(y);
  free(mean);
  free(var);
  free(wh);
  free(bh);
  free(rmh);
  free(rvh);
  mf_release(x);
  mf_release(w);
  mf_release(b);
  mf_release(rm);
  mf_release(rv);
}

/* loss = sum(batch_norm(x, w, b) * r) in training mode */
static double loss_of(const mf_tensor *x, const mf_tensor *w, const mf_tensor *b, const double *r) {
  mf_tensor *y = NULL;
  double v = NAN;
  if (mf_batch_norm(x, w, b, NULL, NULL, true, 0.1, 1e-5, &y, NULL) == MF_OK) {
    double *yh = host(y);
    v = 0;
    for (int64_t i = 0; i < mf_numel(y); i++) v += yh[i] * r[i];
    free(yh);
  }
  mf_release(y);
  return v;
}

static void check_backward(int nd, const int64_t *shape) {
  int64_t C = shape[1], cs[1] = {C};
  mf_tensor *p[3] = {rnd(nd, shape, MF_F64, -2, 3), rnd(1, cs, MF_F64, 0.5, 1.5),
                     rnd(1, cs, MF_F64, -1, 1)};
  mf_tensor *rt = rnd(nd, shape, MF_F64, -1, 1), *y = NULL, *stats = NULL;
  double *r = host(rt);
  CHECK_OK(mf_batch_norm(p[0], p[1], p[2], NULL, NULL, true, 0.1, 1e-5, &y, &stats));
  mf_tensor *g[3] = {NULL, NULL, NULL};
  CHECK_OK(mf_batch_norm_backward(rt, p[0], p[1], stats, &g[0], &g[1], &g[2]));
  for (int k = 0; k < 3 && g[0]; k++) {
    double *ph = host(p[k]), *gh = host(g[k]);
    int64_t n = mf_numel(p[k]);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
      double keep = ph[i], f[2];
      for (int sgn = 0; sgn < 2; sgn++) {
        ph[i] = keep + (sgn ? -1e-6 : 1e-6);
        mf_tensor *t = NULL;
        CHECK_OK(mf_from_host(p[k]->ndim, p[k]->shape, MF_F64, ph, NULL, &t));
        mf_tensor *args[3] = {p[0], p[1], p[2]};
        args[k] = t;
        f[sgn] = loss_of(args[0], args[1], args[2], r);
        mf_release(t);
      }
      ph[i] = keep;
      double num = (f[0] - f[1]) / 2e-6;
      if (fabs(num - gh[i]) > 1e-6 * (1 + fabs(num)) && bad++ < 3)
        fprintf(stderr, "batch_norm_backward d%s[%lld] = %.9g, finite differences %.9g\n",
                k == 0   ? "x"
                : k == 1 ? "weight"
                         : "bias",
                (long long)i, gh[i], num);
    }
    CHECK(bad == 0);
    free(ph);
    free(gh);
  }
  for (int k = 0; k < 3; k++) {
    mf_release(p[k]);
    mf_release(g[k]);
  }
  mf_release(rt);
  mf_release(y);
  mf_release(stats);
  free(r);
}

/* Largest |a - b| over the elements (NAN on a missing tensor). */
static double max_diff(const mf_tensor *a, const mf_tensor *b) {
  if (!a || !b || mf_numel(a) != mf_numel(b)) return NAN;
  double *ah = host(a), *bh = host(b), m = 0;
  for (int64_t i = 0; i < mf_numel(a); i++) m = fmax(m, fabs(ah[i] - bh[i]));
  free(ah);
  free(bh);
  return m;
}

/* The autograd rule (grad.c): mf_grad of y for x, weight, bias with output gradient r equals
 * mf_batch_norm_backward in training; in inference it is r invstd w, sum r xhat, sum r with the
 * running stats; training has no create_graph backward (an error naming it). */
static void check_autograd(int nd, const int64_t *shape) {
  int64_t C = shape[1], cs[1] = {C};
  mf_tensor *p[3] = {rnd(nd, shape, MF_F64, -2, 3), rnd(1, cs, MF_F64, 0.5, 1.5),
                     rnd(1, cs, MF_F64, -1, 1)};
  mf_tensor *rm = rnd(1, cs, MF_F64, -0.5, 0.5), *rv = rnd(1, cs, MF_F64, 0.5, 2);
  mf_tensor *r = rnd(nd, shape, MF_F64, -1, 1), *y = NULL, *stats = NULL;
  for (int k = 0; k < 3; k++) CHECK_OK(mf_set_requires_grad(p[k], true));
  /* training */
  CHECK_OK(mf_batch_norm(p[0], p[1], p[2], rm, rv, true, 0.1, 1e-5, &y, &stats));
  CHECK(y && mf_grad_fn_name(y) && strcmp(mf_grad_fn_name(y), "batch_norm") == 0);
  mf_tensor *g[3] = {NULL, NULL, NULL}, *want[3] = {NULL, NULL, NULL};
  CHECK_FAILS(mf_grad(1, &y, &r, 3, p, true, true, g), MF_ERR_UNSUPPORTED,
              "batch_norm: no double backward (create_graph)");
  CHECK_OK(mf_grad(1, &y, &r, 3, p, false, false, g));
  CHECK_OK(mf_batch_norm_backward(r, p[0], p[1], stats, &want[0], &want[1], &want[2]));
  for (int k = 0; k < 3; k++) {
    CHECK(max_diff(g[k], want[k]) == 0);
    MF_DROP(g[k]);
    MF_DROP(want[k]);
  }
  MF_DROP(y);
  /* inference: the running stats as they are now (a later change of them must not matter) */
  double *x = host(p[0]), *w = host(p[1]), *rmh = host(rm), *rvh = host(rv), *rh = host(r);
  CHECK_OK(mf_batch_norm(p[0], p[1], p[2], rm, rv, false, 0.1, 1e-5, &y, NULL));
  CHECK_OK(mf_fill_(rv, 7.0));
  CHECK_OK(mf_grad(1, &y, &r, 3, p, false, false, g));
  int64_t N = shape[0], S = mf_numel(p[0]) / (N * C);
  double *gx = g[0] ? host(g[0]) : NULL, *gw = g[1] ? host(g[1]) : NULL, *gb = g[2] ? host(g[2]) : NULL;
  for (int64_t c = 0; gx && gw && gb && c < C; c++) {
    double inv = 1 / sqrt(rvh[c] + 1e-5), sw = 0, sb = 0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t k = 0; k < S; k++) {
        int64_t i = (n * C + c) * S + k;
        CHECK_CLOSE(gx[i], rh[i] * inv * w[c], 1e-14, 1e-12);
        sw += rh[i] * (x[i] - rmh[c]) * inv;
        sb += rh[i];
      }
    CHECK_CLOSE(gw[c], sw, 1e-12, 1e-12);
    CHECK_CLOSE(gb[c], sb, 1e-12, 1e-12);
  }
  free(gx), free(gw), free(gb), free(x), free(w), free(rmh), free(rvh), free(rh);
  for (int k = 0; k < 3; k++) {
    mf_release(g[k]);
    mf_release(p[k]);
  }
  mf_release(y);
  mf_release(stats);
  mf_release(rm);
  mf_release(rv);
  mf_release(r);
}

static void check_errors(void) {
  int64_t s4[4] = {2, 3, 4, 4}, s1[1] = {3}, s1b[1] = {4}, s0[1] = {5}, one[4] = {1, 3, 1, 1};
  mf_tensor *x = rnd(4, s4, MF_F32, 0, 1), *w = rnd(1, s1, MF_F32, 0, 1),
            *w4 = rnd(1, s1b, MF_F32, 0, 1), *wd = rnd(1, s1, MF_F64, 0, 1),
            *v = rnd(1, s0, MF_F32, 0, 1), *x1 = rnd(4, one, MF_F32, 0, 1), *o = NULL, *st = NULL;
  mf_tensor *xi = NULL;
  CHECK_OK(mf_cast(x, MF_I32, &xi));
  CHECK_FAILS(mf_batch_norm(v, NULL, NULL, NULL, NULL, true, 0.1, 1e-5, &o, NULL), MF_ERR_SHAPE,
              "batch_norm: the input needs a channel dimension (N, C, ...), got shape 5");
  CHECK_FAILS(mf_batch_norm(xi, NULL, NULL, NULL, NULL, true, 0.1, 1e-5, &o, NULL), MF_ERR_DTYPE,
              "must be float32 or float64, got int32");
  CHECK_FAILS(mf_batch_norm(x, w4, NULL, NULL, NULL, true, 0.1, 1e-5, &o, NULL), MF_ERR_SHAPE,
              "weight has shape 4 but the input 2x3x4x4 has 3 channels");
  CHECK_FAILS(mf_batch_norm(x, wd, NULL, NULL, NULL, true, 0.1, 1e-5, &o, NULL), MF_ERR_DTYPE,
              "weight is float64 but the input is float32");
  CHECK_FAILS(mf_batch_norm(x, NULL, NULL, w, NULL, true, 0.1, 1e-5, &o, NULL), MF_ERR_ARG,
              "both running_mean and running_var");
  CHECK_FAILS(mf_batch_norm(x, NULL, NULL, NULL, NULL, false, 0.1, 1e-5, &o, NULL), MF_ERR_ARG,
              "evaluation needs the running mean and variance");
  CHECK_FAILS(mf_batch_norm(x1, NULL, NULL, NULL, NULL, true, 0.1, 1e-5, &o, NULL), MF_ERR_SHAPE,
              "more than 1 value per channel");
  CHECK_FAILS(mf_batch_norm(x, NULL, NULL, NULL, NULL, true, 0.1, 0, &o, NULL), MF_ERR_ARG,
              "eps must be positive");
  CHECK_FAILS(mf_batch_norm(x, NULL, NULL, NULL, NULL, true, 1.5, 1e-5, &o, NULL), MF_ERR_ARG,
              "momentum must be in [0, 1]");
  CHECK(o == NULL);
  mf_tensor *dx = NULL, *dw = NULL, *db = NULL;
  CHECK_FAILS(mf_batch_norm_backward(x, x, NULL, w, &dx, &dw, &db), MF_ERR_SHAPE,
              "save_stats must be the forward's (2, 3) float32 tensor");
  CHECK_OK(mf_batch_norm(x, NULL, NULL, NULL, NULL, true, 0.1, 1e-5, &o, &st));
  CHECK_FAILS(mf_batch_norm_backward(v, x, NULL, st, &dx, &dw, &db), MF_ERR_SHAPE,
              "the output gradient");
  CHECK(dx == NULL && dw == NULL && db == NULL);
  mf_tensor *all[10] = {x, w, w4, wd, v, x1, o, st, xi, NULL};
  for (int k = 0; k < 10; k++) mf_release(all[k]);
}

int main(void) {
  int64_t s2[2] = {7, 5}, s3[3] = {4, 3, 6}, s4[4] = {3, 4, 5, 6};
  for (int dd = 0; dd < 2; dd++) {
    mf_dtype dt = dd ? MF_F64 : MF_F32;
    check_forward(2, s2, dt, true, true);
    check_forward(3, s3, dt, false, false);
    check_forward(4, s4, dt, true, true);
    check_forward(4, s4, dt, false, true);
  }
  int64_t b2[2] = {5, 3}, b4[4] = {2, 3, 3, 2};
  check_backward(2, b2);
  check_backward(4, b4);
  /* the kernel's blocked walks: rows in blocks (S == 1, N C >= 32768), long channel rows */
  int64_t l2[2] = {20000, 3}, l3[3] = {8, 5, 3001};
  for (int dd = 0; dd < 2; dd++) {
    check_forward(2, l2, dd ? MF_F64 : MF_F32, true, true);
    check_forward(3, l3, dd ? MF_F64 : MF_F32, true, true);
  }
  int64_t a2[2] = {6, 3}, a4[4] = {3, 4, 2, 5}, a2big[2] = {16384, 4};
  check_autograd(2, a2);
  check_autograd(4, a4);
  check_autograd(2, a2big);
  check_errors();
  return test_summary();
}
