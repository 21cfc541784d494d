/* test_optim.c — the fused optimizer steps (mf_sgd_step, mf_adam_step for Adam and AdamW,
 * mf_rmsprop_step, mf_adadelta_step, mf_adagrad_step) against PyTorch: every optimizer and option
 * combination of optim_reference.h (made by tests/tools/gen_optim_reference.py) runs a few steps in
 * float64 (within 1e-12) and float32 (within ~1e-6), checking the parameter after each step and
 * the state after the last. State tensors start out full of garbage: at step 1 the kernels must
 * ignore it. The same cases run on a large tiled parameter (the thread pool and the block loops),
 * with a transposed and a broadcast (stride 0) gradient, on an empty parameter; and every misuse
 * fails with a clear message and leaves the parameter untouched. */
#include <stdint.h>
#include <stdlib.h>

#include "optim_reference.h"
#include "test.h"

#define TOL64 1e-12
#define TOL32 1e-6

/* A tensor of the given shape whose element i is v[i % nv], in dtype dt. */
static mf_tensor *tiled(const double *v, int64_t nv, int ndim, const int64_t *shape, mf_dtype dt) {
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= shape[d];
  double *buf = malloc(sizeof(double) * (size_t)(n ? n : 1));
  for (int64_t i = 0; i < n; i++) buf[i] = v[i % nv];
  mf_tensor *t = NULL, *d64 = NULL;
  CHECK_OK(mf_from_host(ndim, shape, MF_F64, buf, NULL, &d64));
  if (d64) CHECK_OK(mf_cast(d64, dt, &t));
  mf_release(d64);
  free(buf);
  return t;
}

/* Runs one step of case c's optimizer; state[i] NULL where the case does not use it. */
static mf_status step(const opt_case *c, mf_tensor *p, const mf_tensor *g, mf_tensor **s,
                      int64_t k) {
  mf_optim_hparams h = c->h;
  h.step = k;
  switch (c->kind) {
  case OPT_SGD: return mf_sgd_step(p, g, s[0], &h);
  case OPT_ADAM: return mf_adam_step(p, g, s[0], s[1], &h);
  case OPT_RMSPROP: return mf_rmsprop_step(p, g, s[0], s[1], s[2], &h);
  case OPT_ADADELTA: return mf_adadelta_step(p, g, s[0], s[1], &h);
  default: return mf_adagrad_step(p, g, s[0], &h);
  }
}

/* Largest error of t (all elements, tiled) against the reference ref[i % OPT_N], measured as
 * |a - b| / (1 + |b|). */
static double max_err(const mf_tensor *t, const double *ref) {
  int64_t n = mf_numel(t);
  double *buf = malloc(sizeof(double) * (size_t)(n ? n : 1)), worst = 0;
  CHECK_OK(mf_to_host(t, MF_F64, buf));
  for (int64_t i = 0; i < n; i++) {
    double b = ref[i % OPT_N], e = fabs(buf[i] - b) / (1 + fabs(b));
    if (!(e <= worst)) worst = e; /* NaN counts as worst */
  }
  free(buf);
  return worst;
}

/* Runs case c in dtype dt (d = 0 float64, 1 float32) on a parameter of `shape` (numel a multiple
 * of OPT_N) and compares with the reference. `transposed_grad`: the gradient is a transposed view
 * (the parameter must then be 2-D). Returns the largest error seen. */
static double run_case(const opt_case *c, int d, int ndim, const int64_t *shape,
                       bool transposed_grad) {
  mf_dtype dt = d ? MF_F32 : MF_F64;
  double tol = d ? TOL32 : TOL64, worst = 0;
  mf_tensor *p = tiled(OPT_P0, OPT_N, ndim, shape, dt), *s[3] = {NULL, NULL, NULL};
  double garbage = 12345.678;
  for (int i = 0; i < 3; i++)
    if (c->state_names[i]) CHECK_OK(mf_full(ndim, shape, garbage, dt, NULL, &s[i]));
  for (int k = 0; k < OPT_STEPS; k++) {
    mf_tensor *g = NULL;
    if (transposed_grad) {
      /* the gradient's values laid out transposed, then viewed back with transpose */
      int64_t r = shape[0], cols = shape[1], tshape[2] = {cols, r};
      double *gt = malloc(sizeof(double) * (size_t)(r * cols));
      for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < cols; j++) gt[j * r + i] = OPT_GRADS[k][(i * cols + j) % OPT_N];
      mf_tensor *t = tiled(gt, r * cols, 2, tshape, dt);
      CHECK_OK(mf_transpose(t, 0, 1, &g));
      CHECK(g && !mf_is_contiguous(g));
      mf_release(t);
      free(gt);
    } else {
      g = tiled(OPT_GRADS[k], OPT_N, ndim, shape, dt);
    }
    CHECK_OK(step(c, p, g, s, k + 1));
    double e = max_err(p, c->param[d][k]);
    if (e > worst) worst = e;
    if (!(e <= tol))
      fprintf(stderr, "%s (%s) step %d: parameter error %.3g\n", c->name, mf_dtype_name(dt), k + 1,
              e);
    CHECK(e <= tol);
    mf_release(g);
  }
  for (int i = 0; i < 3; i++) {
    if (!c->state_names[i]) continue;
    double e = max_err(s[i], c->state[d][i]);
    if (e > worst) worst = e;
    if (!(e <= tol))
      fprintf(stderr, "%s (%s): %s error %.3g\n", c->name, mf_dtype_name(dt), c->state_names[i], e);
    CHECK(e <= tol);
  }
  for (int i = 0; i < 3; i++) mf_release(s[i]);
  mf_release(p);
  return worst;
}

static void test_reference(void) {
  double worst[2] = {0, 0};
  for (int ci = 0; ci < OPT_NCASES; ci++)
    for (int d = 0; d < 2; d++) {
      double e = run_case(&OPT_CASES[ci], d, 2, OPT_SHAPE, false);
      if (e > worst[d]) worst[d] = e;
    }
  printf("# reference cases: largest error float64 %.3g, float32 %.3g\n", worst[0], worst[1]);
}

/* A parameter big enough for the thread pool and many blocks (numel not a multiple of the vector
 * width or the block), 1-D and 2-D; then a transposed gradient. */
static void test_large_and_views(void) {
  mf_set_num_threads(2);
  int64_t big1[1] = {OPT_N * 7001}, big2[2] = {3 * 2001, 5};
  int64_t tshape[2] = {3 * 7, 5};
  for (int ci = 0; ci < OPT_NCASES; ci++)
    for (int d = 0; d < 2; d++) {
      run_case(&OPT_CASES[ci], d, 1, big1, false);
      run_case(&OPT_CASES[ci], d, 2, big2, false);
      run_case(&OPT_CASES[ci], d, 2, tshape, true);
    }
  mf_set_num_threads(0);
}

/* A broadcast gradient (a row expanded with stride 0) gives what its contiguous copy gives. */
static void test_broadcast_grad(void) {
  const opt_case *c = NULL;
  for (int ci = 0; ci < OPT_NCASES; ci++)
    if (!strcmp(OPT_CASES[ci].name, "rmsprop_all")) c = &OPT_CASES[ci];
  CHECK(c != NULL);
  if (!c) return;
  int64_t shape[2] = {4, 5}, row[2] = {1, 5};
  mf_tensor *p1 = tiled(OPT_P0, OPT_N, 2, shape, MF_F64),
            *p2 = tiled(OPT_P0, OPT_N, 2, shape, MF_F64);
  mf_tensor *r = tiled(OPT_GRADS[0], OPT_N, 2, row, MF_F64), *gx = NULL, *gc = NULL;
  CHECK_OK(mf_expand(r, 2, shape, &gx));
  CHECK_OK(mf_cast(gx, MF_F64, &gc)); /* a contiguous copy */
  mf_tensor *s1[3] = {NULL}, *s2[3] = {NULL};
  for (int i = 0; i < 3; i++) {
    CHECK_OK(mf_zeros(2, shape, MF_F64, NULL, &s1[i]));
    CHECK_OK(mf_zeros(2, shape, MF_F64, NULL, &s2[i]));
  }
  for (int k = 1; k <= 3; k++) {
    CHECK_OK(step(c, p1, gx, s1, k));
    CHECK_OK(step(c, p2, gc, s2, k));
  }
  double a[20], b[20];
  CHECK_OK(mf_to_host(p1, MF_F64, a));
  CHECK_OK(mf_to_host(p2, MF_F64, b));
  CHECK(memcmp(a, b, sizeof a) == 0);
  for (int i = 0; i < 3; i++) {
    mf_release(s1[i]);
    mf_release(s2[i]);
  }
  mf_release(p1);
  mf_release(p2);
  mf_release(r);
  mf_release(gx);
  mf_release(gc);
}

/* ---- errors -------------------------------------------------------------------------------------
 */

static void test_errors(void) {
  int64_t s34[2] = {3, 4}, s43[2] = {4, 3}, s0[1] = {0};
  mf_tensor *p = NULL, *g = NULL, *g43 = NULL, *g32 = NULL, *m = NULL, *v = NULL, *m43 = NULL,
            *pi = NULL, *pt = NULL, *vt = NULL, *e = NULL, *eg = NULL, *es = NULL;
  CHECK_OK(mf_full(2, s34, 0.5, MF_F64, NULL, &p));
  CHECK_OK(mf_full(2, s34, 0.25, MF_F64, NULL, &g));
  CHECK_OK(mf_full(2, s43, 0.25, MF_F64, NULL, &g43));
  CHECK_OK(mf_full(2, s34, 0.25, MF_F32, NULL, &g32));
  CHECK_OK(mf_zeros(2, s34, MF_F64, NULL, &m));
  CHECK_OK(mf_zeros(2, s34, MF_F64, NULL, &v));
  CHECK_OK(mf_zeros(2, s43, MF_F64, NULL, &m43));
  CHECK_OK(mf_zeros(2, s34, MF_I64, NULL, &pi));
  CHECK_OK(mf_transpose(m43, 0, 1, &pt)); /* a non-contiguous 3x4 */
  CHECK_OK(mf_transpose(m43, 0, 1, &vt));
  mf_optim_hparams h = {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .step = 1};

  CHECK_FAILS(mf_adam_step(p, g43, m, v, &h), MF_ERR_SHAPE,
              "adam_step: grad has shape 4x3 but the parameter 3x4");
  CHECK_FAILS(mf_adam_step(p, g32, m, v, &h), MF_ERR_DTYPE,
              "adam_step: grad is float32 but the parameter float64");
  CHECK_FAILS(mf_adam_step(p, g, m43, v, &h), MF_ERR_SHAPE,
              "adam_step: exp_avg has shape 4x3 but the parameter 3x4");
  CHECK_FAILS(mf_adam_step(p, g, m, vt, &h), MF_ERR_ARG,
              "adam_step: exp_avg_sq must be contiguous");
  CHECK_FAILS(mf_adam_step(p, g, NULL, v, &h), MF_ERR_ARG, "adam_step: exp_avg is missing");
  CHECK_FAILS(mf_adam_step(pi, g, m, v, &h), MF_ERR_DTYPE,
              "adam_step: the parameter is int64; optimizers update float32 or float64 tensors");
  CHECK_FAILS(mf_adam_step(pt, g, m, v, &h), MF_ERR_ARG, "must be contiguous");
  CHECK_FAILS(mf_adam_step(p, NULL, m, v, &h), MF_ERR_ARG, "adam_step: grad is missing");
  CHECK_FAILS(mf_adam_step(p, g, m, v, NULL), MF_ERR_ARG, "hyper-parameters are missing");
  CHECK_FAILS(mf_adam_step(NULL, g, m, v, &h), MF_ERR_ARG, "the parameter is missing");

  mf_optim_hparams b = h;
  b.step = 0;
  CHECK_FAILS(mf_adam_step(p, g, m, v, &b), MF_ERR_ARG, "adam_step: step 0 is invalid");
  b = h;
  b.lr = -1;
  CHECK_FAILS(mf_adam_step(p, g, m, v, &b), MF_ERR_ARG, "adam_step: invalid learning rate -1");
  b.lr = NAN;
  CHECK_FAILS(mf_adam_step(p, g, m, v, &b), MF_ERR_ARG, "invalid learning rate nan");
  b = h;
  b.beta1 = 1;
  CHECK_FAILS(mf_adam_step(p, g, m, v, &b), MF_ERR_ARG,
              "adam_step: invalid beta1 1 (expected 0 <= beta1 < 1)");
  b = h;
  b.beta2 = -0.5;
  CHECK_FAILS(mf_adam_step(p, g, m, v, &b), MF_ERR_ARG, "invalid beta2 -0.5");
  b = h;
  b.eps = -1;
  CHECK_FAILS(mf_adam_step(p, g, m, v, &b), MF_ERR_ARG, "invalid eps -1 (expected >= 0)");
  b = h;
  b.weight_decay = -0.1;
  b.decoupled_weight_decay = true;
  CHECK_FAILS(mf_adam_step(p, g, m, v, &b), MF_ERR_ARG, "adamw_step: invalid weight_decay -0.1");

  b = (mf_optim_hparams){.lr = 0.1, .momentum = 0.9, .step = 1};
  CHECK_FAILS(mf_sgd_step(p, g, NULL, &b), MF_ERR_ARG,
              "sgd_step: momentum 0.9 needs a momentum buffer");
  b.nesterov = true;
  b.dampening = 0.1;
  CHECK_FAILS(mf_sgd_step(p, g, m, &b), MF_ERR_ARG,
              "sgd_step: Nesterov momentum needs a momentum > 0 and zero dampening");
  b = (mf_optim_hparams){.lr = 0.1, .nesterov = true, .step = 1};
  CHECK_FAILS(mf_sgd_step(p, g, m, &b), MF_ERR_ARG, "Nesterov momentum");
  b = (mf_optim_hparams){.lr = 0.1, .momentum = -1, .step = 1};
  CHECK_FAILS(mf_sgd_step(p, g, m, &b), MF_ERR_ARG, "sgd_step: invalid momentum -1");

  b = (mf_optim_hparams){.lr = 0.01, .alpha = 0.99, .eps = 1e-8, .centered = true, .step = 1};
  CHECK_FAILS(mf_rmsprop_step(p, g, m, NULL, NULL, &b), MF_ERR_ARG,
              "rmsprop_step: centered RMSProp needs grad_avg");
  b.centered = false;
  b.momentum = 0.5;
  CHECK_FAILS(mf_rmsprop_step(p, g, m, NULL, NULL, &b), MF_ERR_ARG, "needs a momentum buffer");
  CHECK_FAILS(mf_rmsprop_step(p, g, NULL, v, NULL, &b), MF_ERR_ARG, "square_avg is missing");
  b = (mf_optim_hparams){.lr = 1, .alpha = 1.5, .eps = 1e-6, .step = 1};
  CHECK_FAILS(mf_adadelta_step(p, g, m, v, &b), MF_ERR_ARG,
              "adadelta_step: invalid rho 1.5 (expected 0 <= rho <= 1)");
  b.alpha = 0.9;
  CHECK_FAILS(mf_adadelta_step(p, g, m, NULL, &b), MF_ERR_ARG, "acc_delta is missing");
  b = (mf_optim_hparams){.lr = 0.01, .lr_decay = -1, .step = 1};
  CHECK_FAILS(mf_adagrad_step(p, g, m, &b), MF_ERR_ARG, "adagrad_step: invalid lr_decay -1");
  b = (mf_optim_hparams){.lr = 0.01, .initial_accumulator_value = -1, .step = 1};
  CHECK_FAILS(mf_adagrad_step(p, g, m, &b), MF_ERR_ARG, "invalid initial_accumulator_value -1");
  CHECK_FAILS(mf_adagrad_step(p, g, NULL, &h), MF_ERR_ARG, "adagrad_step: sum is missing");

  /* nothing was touched by the failures */
  double buf[12];
  CHECK_OK(mf_to_host(p, MF_F64, buf));
  bool same = true;
  for (int i = 0; i < 12; i++) same = same && buf[i] == 0.5;
  CHECK(same);
  CHECK_OK(mf_to_host(m, MF_F64, buf));
  same = true;
  for (int i = 0; i < 12; i++) same = same && buf[i] == 0;
  CHECK(same);

  /* an empty parameter is fine */
  CHECK_OK(mf_zeros(1, s0, MF_F32, NULL, &e));
  CHECK_OK(mf_zeros(1, s0, MF_F32, NULL, &eg));
  CHECK_OK(mf_zeros(1, s0, MF_F32, NULL, &es));
  CHECK_OK(mf_adam_step(e, eg, es, es, &h));

  mf_release(p);
  mf_release(g);
  mf_release(g43);
  mf_release(g32);
  mf_release(m);
  mf_release(v);
  mf_release(m43);
  mf_release(pi);
  mf_release(pt);
  mf_release(vt);
  mf_release(e);
  mf_release(eg);
  mf_release(es);
}

int main(void) {
  test_reference();
  test_large_and_views();
  test_broadcast_grad();
  test_errors();
  return test_summary();
}
