/* test_cuda_half.c — float16 and bfloat16 for the neural-network ops on the GPU: conv2d (NCHW and
 * channels-last, forward and both backwards), max/avg pooling, softmax/log_softmax, batch norm
 * (training and evaluation, with float32 "mixed" or half parameters), cross-entropy through
 * log_softmax, the fused optimizer steps on half parameters, and dropout's mask. Each case makes
 * its inputs in the half dtype on the GPU, runs the op there (half storage, float32 compute), then
 * backward of sum(out * r) for a random half r through autograd; the reference is the CPU's float32
 * op on the same half-rounded values. Outputs and gradients must keep the half dtype and be within
 * |gpu - ref| <= tol (|ref| + mean |ref|): tol 2e-3 for float16 (11-bit significand: 4.9e-4 per
 * rounding), 1.6e-2 for bfloat16 (8 bits: 3.9e-3), a few roundings each. The CPU's refusal is
 * checked too: a half tensor cannot be made there ("float16 tensors live only on GPUs"), and the
 * front ends, handed one anyway, say the op needs a GPU tensor; so are the GPU's messages for a
 * half input with partners of another dtype.
 *
 * Without a GPU it prints "# skipped: <why>", runs the CPU checks, and ends with `# skipped N`
 * (the GPU groups), as test_cuda_parity does; CI runs it on the CUDA emulator (tests/cuda_emu)
 * with two emulated GPUs.
 */
#include "test_cuda.h"

static int cases_run;

static double tol_of(mf_dtype dt) { return dt == MF_F16 ? 2e-3 : 1.6e-2; }

/* ---- data ------------------------------------------------------------------------------------ */

/* A GPU tensor of dtype dt (a half) with values of `kind`, and *ref its values as a float32 CPU
 * tensor (exact: every half value is a float32). */
static mf_tensor *half_pair(int nd, const int64_t *shape, mf_dtype dt, int kind, mf_tensor **ref) {
  mf_tensor *f = make(nd, shape, MF_F32, kind), *gf = on_gpu(f), *g = NULL, *g32 = NULL;
  *ref = NULL;
  if (gf && mf_cast(gf, dt, &g) == MF_OK && mf_cast(g, MF_F32, &g32) == MF_OK)
    mf_to_device(g32, mf_cpu(), ref);
  mf_release(f);
  mf_release(gf);
  mf_release(g32);
  return g;
}

/* g (GPU, dtype dt) against ref (CPU float32): same shape, |g - ref| <= tol (|ref| + mean |ref|)
 * everywhere. Prints the worst error; the first failing element on failure. */
static bool near(const char *what, const mf_tensor *ref, const mf_tensor *g, mf_dtype dt,
                 double tol) {
  if (!ref || !g) {
    fprintf(stderr, "%s: missing result (%s)\n", what, mf_error());
    return false;
  }
  if (mf_device_kind(mf_tensor_device(g)) != MF_DEV_CUDA || g->dtype != dt) {
    fprintf(stderr, "%s: the result is %s on %s, wanted %s on a GPU\n", what,
            mf_dtype_name(g->dtype), mf_device_name(mf_tensor_device(g)), mf_dtype_name(dt));
    return false;
  }
  if (ref->ndim != g->ndim || memcmp(ref->shape, g->shape, sizeof(int64_t) * g->ndim) != 0) {
    fprintf(stderr, "%s: shapes differ\n", what);
    return false;
  }
  int64_t n = mf_numel(ref);
  double *hr = malloc((size_t)(n ? n : 1) * sizeof *hr),
         *hg = malloc((size_t)(n ? n : 1) * sizeof *hg);
  bool ok = mf_to_host(ref, MF_F64, hr) == MF_OK && mf_to_host(g, MF_F64, hg) == MF_OK;
  if (!ok) fprintf(stderr, "%s: to_host: %s\n", what, mf_error());
  double mean = 0, worst = 0;
  for (int64_t i = 0; ok && i < n; i++) mean += fabs(hr[i]) / (double)n;
  for (int64_t i = 0; ok && i < n; i++) {
    double err = fabs(hg[i] - hr[i]) / (fabs(hr[i]) + mean);
    if (!(err <= tol)) { /* NaN fails too */
      fprintf(stderr, "%s: element %lld: gpu %.7g, float32 reference %.7g (error %.2e > %.1e)\n",
              what, (long long)i, hg[i], hr[i], err, tol);
      ok = false;
    }
    if (err > worst) worst = err;
  }
  if (ok && n > 0 && mean == 0) {
    fprintf(stderr, "%s: the reference is all zeros (a case that checks nothing)\n", what);
    ok = false;
  }
  printf("    %-70s worst %.1e\n", what, worst);
  free(hr);
  free(hg);
  return ok;
}

#define NEAR(what, ref, g, dt, tol) CHECK(near(what, ref, g, dt, tol))

/* ---- the generic forward + backward comparison ----------------------------------------------- */

typedef mf_status (*op_fn)(mf_tensor *const *in, const void *arg, mf_tensor **out);

/* f on the float32 references cin[] (CPU) and on the half inputs gin[] (GPU, channels-last views
 * where cl has the input's bit); the outputs compared, then the gradients of sum(out * r) with
 * respect to the inputs marked in diff (NULL: none), which must come in the half dtype. */
static void half_case(const char *what, mf_dtype dt, op_fn f, const void *arg, int nin,
                      mf_tensor *const *cin, mf_tensor *const *gin, const bool *diff, unsigned cl) {
  cases_run++;
  double tol = tol_of(dt);
  mf_tensor *lc[4] = {NULL}, *lg[4] = {NULL};
  for (int i = 0; i < nin; i++) {
    mf_tensor *g = gin[i] ? mf_retain(gin[i]) : NULL;
    if (g && (cl >> i & 1u)) {
      mf_tensor *v = channels_last(g);
      CHECK(v && is_cl(v));
      mf_release(g);
      g = v;
    }
    if (cin[i]) CHECK_OK(mf_detach(cin[i], &lc[i]));
    if (g) CHECK_OK(mf_detach(g, &lg[i]));
    mf_release(g);
    if (diff && diff[i] && lc[i] && lg[i]) {
      CHECK_OK(mf_set_requires_grad(lc[i], true));
      CHECK_OK(mf_set_requires_grad(lg[i], true));
    }
  }
  printf("  %s\n", what);
  mf_tensor *oc = NULL, *og = NULL;
  mf_status sc = f(lc, arg, &oc), sg = f(lg, arg, &og);
  if (sc || sg) {
    fprintf(stderr, "%s: forward failed on the %s: %s\n", what, sc ? "CPU" : "GPU", mf_error());
    t_failed++;
  } else {
    NEAR("forward", oc, og, dt, tol);
    if (cl && og->ndim == 4) CHECK(is_cl(og)); /* channels-last in, channels-last out */
    bool any = false;
    for (int i = 0; diff && i < nin; i++) any = any || diff[i];
    if (any) {
      mf_tensor *rc = NULL, *rg = half_pair(og->ndim, og->shape, dt, V_REAL, &rc);
      backward_weighted(oc, rc, og, rg);
      for (int i = 0; i < nin; i++) {
        if (!diff[i] || !lg[i]) continue;
        char gw[64];
        snprintf(gw, sizeof gw, "gradient of input %d", i + 1);
        NEAR(gw, lc[i]->grad, lg[i]->grad, dt, tol);
      }
      mf_release(rc);
      mf_release(rg);
    }
  }
  mf_release(oc);
  mf_release(og);
  for (int i = 0; i < nin; i++) {
    mf_release(lc[i]);
    mf_release(lg[i]);
  }
}

static const mf_dtype halves[2] = {MF_F16, MF_BF16};

/* ---- convolution ----------------------------------------------------------------------------- */

static mf_status conv_fn(mf_tensor *const *in, const void *arg, mf_tensor **out) {
  return mf_conv2d(in[0], in[1], in[2], (const mf_pool2d_params *)arg, out);
}

typedef struct conv_case {
  int64_t x[4], w[4];
  mf_pool2d_params p;
  bool bias;
} conv_case;

static const conv_case conv_cases[] = {
    {{2, 3, 7, 6}, {4, 3, 3, 3}, {.stride = {1, 1}, .pad = {1, 1, 1, 1}}, true},
    {{2, 5, 9, 8}, {6, 5, 3, 2}, {.stride = {2, 1}, .pad = {0, 1, 1, 0}}, false}, /* asymmetric */
    {{3, 8, 5, 5}, {16, 8, 1, 1}, {.stride = {1, 1}, .pad = {0, 0, 0, 0}}, true}, /* 1x1 */
};
#define NCONV ((int)(sizeof conv_cases / sizeof conv_cases[0]))

/* conv2d forward and, through autograd, conv2d_backward_input and _weight; NCHW and with the
 * activations channels-last on the GPU */
static void test_conv2d(void) {
  for (int d = 0; d < 2; d++)
    for (int k = 0; k < NCONV; k++)
      for (int cl = 0; cl < 2; cl++) {
        const conv_case *c = &conv_cases[k];
        mf_dtype dt = halves[d];
        int64_t bs[1] = {c->w[0]};
        mf_tensor *cin[3] = {NULL, NULL, NULL}, *gin[3] = {NULL, NULL, NULL};
        gin[0] = half_pair(4, c->x, dt, V_REAL, &cin[0]);
        gin[1] = half_pair(4, c->w, dt, V_REAL, &cin[1]);
        if (c->bias) gin[2] = half_pair(1, bs, dt, V_REAL, &cin[2]);
        char what[160];
        snprintf(what, sizeof what,
                 "conv2d %s %s x %lldx%lldx%lldx%lld, w %lldx%lldx%lldx%lld, stride %dx%d, pad "
                 "%d,%d,%d,%d%s",
                 mf_dtype_name(dt), cl ? "NHWC" : "NCHW", (long long)c->x[0], (long long)c->x[1],
                 (long long)c->x[2], (long long)c->x[3], (long long)c->w[0], (long long)c->w[1],
                 (long long)c->w[2], (long long)c->w[3], c->p.stride[0], c->p.stride[1],
                 c->p.pad[0], c->p.pad[1], c->p.pad[2], c->p.pad[3], c->bias ? ", bias" : "");
        bool diff[3] = {true, true, c->bias};
        half_case(what, dt, conv_fn, &c->p, 3, cin, gin, diff, cl ? 1u : 0u);
        for (int i = 0; i < 3; i++) {
          mf_release(cin[i]);
          mf_release(gin[i]);
        }
      }
}

/* the backward ops called directly (not through autograd), NCHW and channels-last dout */
static void test_conv2d_backward_ops(void) {
  const conv_case *c = &conv_cases[0];
  int64_t ys[4] = {c->x[0], c->w[0], c->x[2], c->x[3]}; /* stride 1, "same" padding */
  for (int d = 0; d < 2; d++)
    for (int cl = 0; cl < 2; cl++) {
      mf_dtype dt = halves[d];
      double tol = tol_of(dt);
      mf_tensor *xr, *wr, *dyr, *x = half_pair(4, c->x, dt, V_REAL, &xr),
                                *w = half_pair(4, c->w, dt, V_REAL, &wr),
                                *dy = half_pair(4, ys, dt, V_REAL, &dyr);
      if (cl) {
        mf_tensor *v = channels_last(dy), *u = channels_last(x);
        mf_release(dy);
        mf_release(x);
        dy = v, x = u;
      }
      mf_tensor *dxr = NULL, *dxg = NULL, *dwr = NULL, *dwg = NULL;
      printf("  conv2d_backward_input/_weight %s, %s dout (called directly)\n", mf_dtype_name(dt),
             cl ? "NHWC" : "NCHW");
      CHECK_OK(mf_conv2d_backward_input(dyr, wr, c->x, &c->p, &dxr));
      CHECK_OK(mf_conv2d_backward_input(dy, w, c->x, &c->p, &dxg));
      CHECK_OK(mf_conv2d_backward_weight(dyr, xr, c->w, &c->p, &dwr));
      CHECK_OK(mf_conv2d_backward_weight(dy, x, c->w, &c->p, &dwg));
      NEAR("conv2d_backward_input", dxr, dxg, dt, tol);
      NEAR("conv2d_backward_weight", dwr, dwg, dt, tol);
      if (cl) CHECK(is_cl(dxg));
      cases_run += 2;
      mf_tensor *all[10] = {xr, wr, dyr, x, w, dy, dxr, dxg, dwr, dwg};
      for (int k = 0; k < 10; k++) mf_release(all[k]);
    }
}

/* ---- pooling --------------------------------------------------------------------------------- */

typedef struct pool_arg {
  bool max;
  mf_pool2d_params p;
} pool_arg;

static mf_status pool_fn(mf_tensor *const *in, const void *arg, mf_tensor **out) {
  const pool_arg *a = arg;
  return a->max ? mf_max_pool2d(in[0], &a->p, out, NULL) : mf_avg_pool2d(in[0], &a->p, out);
}

static void test_pool(void) {
  static const pool_arg cases[] = {
      {true, {.kernel = {2, 2}, .stride = {2, 2}}},
      {true, {.kernel = {3, 3}, .stride = {1, 2}, .pad = {1, 1, 1, 0}}}, /* overlapping */
      {false, {.kernel = {2, 2}, .stride = {2, 2}}},
      {false, {.kernel = {3, 2}, .stride = {2, 1}, .pad = {1, 0, 1, 1}}},
      {false, {.kernel = {3, 3}, .stride = {2, 2}, .pad = {1, 1, 1, 1}, .count_include_pad = 1}},
  };
  int64_t xs[4] = {2, 5, 8, 7};
  for (int d = 0; d < 2; d++)
    for (int k = 0; k < (int)(sizeof cases / sizeof cases[0]); k++)
      for (int cl = 0; cl < 2; cl++) {
        mf_dtype dt = halves[d];
        const pool_arg *a = &cases[k];
        mf_tensor *cin[1], *gin[1] = {half_pair(4, xs, dt, V_REAL, &cin[0])};
        char what[160];
        snprintf(what, sizeof what,
                 "%s_pool2d %s %s, window %dx%d, stride %dx%d, pad %d,%d,%d,%d%s",
                 a->max ? "max" : "avg", mf_dtype_name(dt), cl ? "NHWC" : "NCHW", a->p.kernel[0],
                 a->p.kernel[1], a->p.stride[0], a->p.stride[1], a->p.pad[0], a->p.pad[1],
                 a->p.pad[2], a->p.pad[3], a->p.count_include_pad ? ", count_include_pad" : "");
        bool diff[1] = {true};
        half_case(what, dt, pool_fn, a, 1, cin, gin, diff, cl ? 1u : 0u);
        if (a->max) { /* the argmax positions: the same cells as float32's (ties: the first) */
          mf_tensor *yc = NULL, *ic = NULL, *yg = NULL, *ig = NULL;
          CHECK_OK(mf_max_pool2d(cin[0], &a->p, &yc, &ic));
          CHECK_OK(mf_max_pool2d(gin[0], &a->p, &yg, &ig));
          SAME("max_pool2d indices", ic, ig, 0, 0);
          mf_tensor *all[4] = {yc, ic, yg, ig};
          for (int q = 0; q < 4; q++) mf_release(all[q]);
        }
        mf_release(cin[0]);
        mf_release(gin[0]);
      }
}

/* ---- softmax and cross-entropy --------------------------------------------------------------- */

typedef struct softmax_arg {
  bool log;
  int dim;
} softmax_arg;

static mf_status softmax_fn(mf_tensor *const *in, const void *arg, mf_tensor **out) {
  const softmax_arg *a = arg;
  return a->log ? mf_log_softmax(in[0], a->dim, out) : mf_softmax(in[0], a->dim, out);
}

static void test_softmax(void) {
  /* dim 1 of (6, 300): one block per row; dim 1 of (3, 7, 5): one thread per column */
  int64_t rows[2] = {6, 300}, cols[3] = {3, 7, 5};
  for (int d = 0; d < 2; d++)
    for (int lg = 0; lg < 2; lg++)
      for (int sh = 0; sh < 2; sh++) {
        mf_dtype dt = halves[d];
        softmax_arg a = {lg != 0, 1};
        mf_tensor *cin[1], *gin[1] = {half_pair(sh ? 3 : 2, sh ? cols : rows, dt, V_REAL, &cin[0])};
        char what[120];
        snprintf(what, sizeof what, "%s %s over dim 1 of %s", lg ? "log_softmax" : "softmax",
                 mf_dtype_name(dt), sh ? "3x7x5 (columns)" : "6x300 (rows)");
        bool diff[1] = {true};
        half_case(what, dt, softmax_fn, &a, 1, cin, gin, diff, 0);
        mf_release(cin[0]);
        mf_release(gin[0]);
      }
}

static void test_cross_entropy(void) {
  int64_t zs[2] = {40, 10}, ls[2] = {40, 1};
  int64_t *lab = malloc(40 * sizeof *lab);
  for (int i = 0; i < 40; i++) lab[i] = (i * 7) % 10;
  mf_tensor *labels = NULL, *glabels = NULL;
  CHECK_OK(mf_from_host(2, ls, MF_I64, lab, mf_cpu(), &labels));
  glabels = on_gpu(labels);
  for (int d = 0; d < 4; d++) {
    mf_dtype dt = halves[d % 2];
    xent_arg a = {labels, glabels, d >= 2, d == 3 ? 0.1 : 0};
    mf_tensor *cin[1], *gin[1] = {half_pair(2, zs, dt, V_REAL, &cin[0])};
    char what[96];
    snprintf(what, sizeof what, "cross-entropy %s (%s) of 40x10 logits", mf_dtype_name(dt),
             a.fused ? (a.eps ? "fused, label smoothing 0.1" : "fused") : "log_softmax, gather");
    bool diff[1] = {true};
    half_case(what, dt, xent_fn, &a, 1, cin, gin, diff, 0);
    mf_release(cin[0]);
    mf_release(gin[0]);
  }
  mf_release(labels);
  mf_release(glabels);
  free(lab);
}

/* ---- batch normalisation --------------------------------------------------------------------- */

/* A per-channel GPU vector of dtype pdt (float32, or the half dtype) and its float32 reference. */
static mf_tensor *vec_pair(int64_t C, mf_dtype pdt, int kind, mf_tensor **ref) {
  if (pdt != MF_F32) return half_pair(1, &C, pdt, kind, ref);
  *ref = make(1, &C, MF_F32, kind);
  return on_gpu(*ref);
}

/* a copy of t as a new leaf that needs a gradient */
static mf_tensor *leaf(const mf_tensor *t) {
  mf_tensor *l = NULL;
  if (mf_detach(t, &l) == MF_OK) mf_set_requires_grad(l, true);
  return l;
}

/* y = batch_norm(x, w, b) * r summed, backward; compares y and the gradients of x, w, b */
static void bn_round(const char *mode, bool training, mf_dtype dt, mf_dtype pdt, mf_tensor *x,
                     mf_tensor *xr, mf_tensor *const *p, mf_tensor *const *pr) {
  double tol = tol_of(dt);
  mf_tensor *lx = leaf(x), *lxr = leaf(xr), *lw = leaf(p[0]), *lwr = leaf(pr[0]), *lb = leaf(p[1]),
            *lbr = leaf(pr[1]);
  mf_tensor *yg = NULL, *yr = NULL, *sg = NULL, *sr = NULL;
  printf("  batch_norm %s %s, %s parameters (%s)\n", mf_dtype_name(dt),
         x->ndim == 4 ? "4x6x5x3" : "16x5", mf_dtype_name(pdt), mode);
  CHECK_OK(mf_batch_norm(lx, lw, lb, p[2], p[3], training, 0.1, 1e-5, &yg, &sg));
  CHECK_OK(mf_batch_norm(lxr, lwr, lbr, pr[2], pr[3], training, 0.1, 1e-5, &yr, &sr));
  NEAR("y", yr, yg, dt, tol);
  if (training) {
    CHECK(sg && sg->dtype == MF_F32); /* cuDNN's saved mean and invstd: float32 */
    if (sg && sr) {
      mf_tensor *sg2 = NULL;
      CHECK_OK(mf_cast(sg, dt, &sg2)); /* compared at the half dtype's precision */
      NEAR("save_stats (mean, invstd)", sr, sg2, dt, tol);
      mf_release(sg2);
    }
    NEAR("running_mean", pr[2], p[2], pdt, tol);
    NEAR("running_var", pr[3], p[3], pdt, tol);
  }
  if (yg && yr) {
    mf_tensor *rr = NULL, *rg = half_pair(yg->ndim, yg->shape, dt, V_REAL, &rr);
    backward_weighted(yr, rr, yg, rg);
    NEAR("gradient of x", lxr->grad, lx->grad, dt, tol);
    /* dweight, dbias: sums over N * S values; in the parameters' dtype */
    NEAR("gradient of the weight", lwr->grad, lw->grad, pdt, tol);
    NEAR("gradient of the bias", lbr->grad, lb->grad, pdt, tol);
    mf_release(rr);
    mf_release(rg);
  }
  cases_run++;
  mf_tensor *all[10] = {lx, lxr, lw, lwr, lb, lbr, yg, yr, sg, sr};
  for (int k = 0; k < 10; k++) mf_release(all[k]);
}

static void test_batch_norm(void) {
  int64_t shapes[2][4] = {{4, 6, 5, 3}, {16, 5}};
  int nds[2] = {4, 2};
  for (int d = 0; d < 2; d++)
    for (int mixed = 0; mixed < 2; mixed++)
      for (int si = 0; si < 2; si++) {
        mf_dtype dt = halves[d], pdt = mixed ? MF_F32 : dt;
        int64_t C = shapes[si][1];
        mf_tensor *xr, *x = half_pair(nds[si], shapes[si], dt, V_REAL, &xr);
        mf_tensor *p[4], *pr[4];
        int kinds[4] = {V_POS, V_REAL, V_REAL, V_POS}; /* weight, bias, running mean, var */
        for (int k = 0; k < 4; k++) p[k] = vec_pair(C, pdt, kinds[k], &pr[k]);
        bn_round("training", true, dt, pdt, x, xr, p, pr);
        bn_round("evaluation", false, dt, pdt, x, xr, p, pr); /* the updated running stats */
        CHECK(p[2]->dtype == pdt && p[3]->dtype == pdt);      /* kept their dtype */
        mf_release(x);
        mf_release(xr);
        for (int k = 0; k < 4; k++) {
          mf_release(p[k]);
          mf_release(pr[k]);
        }
      }
}

/* ---- fused optimizer steps on half parameters ------------------------------------------------ */

static void test_optim(void) {
  int64_t ps[2] = {33, 7};
  for (int d = 0; d < 2; d++)
    for (int adam = 0; adam < 2; adam++) {
      mf_dtype dt = halves[d];
      double tol = tol_of(dt);
      /* gradients of k/8: none so small that Adam's (1 - beta2) g^2 underflows float16 state to
       * 0 (then the step is lr g / eps, not lr g / (|g| + eps): a test of luck, not of the step) */
      mf_tensor *pr, *p = half_pair(2, ps, dt, V_REAL, &pr), *gr,
                     *g = half_pair(2, ps, dt, V_EIGHTHS, &gr);
      mf_tensor *s[2] = {NULL, NULL}, *sr[2] = {NULL, NULL};
      for (int k = 0; k < 2; k++) {
        CHECK_OK(mf_empty(2, ps, dt, gpu, &s[k]));
        CHECK_OK(mf_empty(2, ps, MF_F32, mf_cpu(), &sr[k]));
      }
      mf_optim_hparams h = {.lr = adam ? 0.05 : 0.1,
                            .momentum = 0.9,
                            .beta1 = 0.9,
                            .beta2 = 0.999,
                            .eps = 1e-3,
                            .weight_decay = 0.01};
      for (int step = 1; step <= 3; step++) {
        h.step = step;
        if (adam) {
          CHECK_OK(mf_adam_step(p, g, s[0], s[1], &h));
          CHECK_OK(mf_adam_step(pr, gr, sr[0], sr[1], &h));
        } else {
          CHECK_OK(mf_sgd_step(p, g, s[0], &h));
          CHECK_OK(mf_sgd_step(pr, gr, sr[0], &h));
        }
      }
      char what[96];
      snprintf(what, sizeof what, "%s_step on a %s parameter, 3 steps (state %s)",
               adam ? "adam" : "sgd", mf_dtype_name(dt), mf_dtype_name(dt));
      printf("  %s\n", what);
      NEAR("parameter", pr, p, dt, tol);
      NEAR(adam ? "exp_avg" : "momentum_buffer", sr[0], s[0], dt, tol);
      cases_run++;
      mf_tensor *all[8] = {p, pr, g, gr, s[0], s[1], sr[0], sr[1]};
      for (int k = 0; k < 8; k++) mf_release(all[k]);
    }
}

/* ---- dropout ------------------------------------------------------------------------------- */

/* A half mask drops exactly what the float32 mask of the same seed drops (both draw float32
 * uniforms), and keeps 1 / (1 - p) rounded to the half dtype. */
static void test_dropout(void) {
  int64_t shape[2] = {37, 29}; /* odd: the last Philox block is partly used */
  const double probs[3] = {0.0, 0.3, 0.5};
  for (int d = 0; d < 2; d++)
    for (int k = 0; k < 3; k++) {
      mf_dtype dt = halves[d];
      double p = probs[k];
      mf_tensor *x32 = NULL, *xh = NULL, *m32 = NULL, *mh = NULL, *c32 = NULL, *ch = NULL,
                *hf = NULL;
      CHECK_OK(mf_zeros(2, shape, MF_F32, gpu, &x32));
      CHECK_OK(mf_zeros(2, shape, dt, gpu, &xh));
      mf_manual_seed(1234 + (uint64_t)k);
      CHECK_OK(mf_dropout_mask(x32, p, &m32));
      mf_manual_seed(1234 + (uint64_t)k);
      CHECK_OK(mf_dropout_mask(xh, p, &mh));
      CHECK(mh && mh->dtype == dt);
      bool ok = false;
      int64_t dropped = 0;
      if (m32 && mh && mf_to_device(m32, mf_cpu(), &c32) == MF_OK &&
          mf_cast(mh, MF_F32, &hf) == MF_OK && mf_to_device(hf, mf_cpu(), &ch) == MF_OK) {
        const float *a = mf_data(c32), *b = mf_data(ch);
        float keep = p < 1 ? (float)(1 / (1 - p)) : 0.0f;
        ok = true;
        for (int64_t i = 0; i < mf_numel(c32); i++) {
          dropped += a[i] == 0;
          if ((a[i] == 0) != (b[i] == 0) ||
              fabsf(b[i] - (a[i] == 0 ? 0 : keep)) > tol_of(dt) * keep)
            ok = false;
        }
        if (p > 0 && (dropped < mf_numel(c32) * p / 2 || dropped > mf_numel(c32) * p * 1.5))
          ok = false; /* the float32 mask itself drops about p of the entries */
      }
      char what[96];
      snprintf(what, sizeof what, "dropout mask %s p = %g (%lld of %lld dropped)",
               mf_dtype_name(dt), p, (long long)dropped, (long long)(shape[0] * shape[1]));
      CHECK(ok);
      printf("  %-72s %s\n", what, ok ? "ok" : "FAILED");
      cases_run++;
      mf_tensor *all[7] = {x32, xh, m32, mh, c32, ch, hf};
      for (int j = 0; j < 7; j++) mf_release(all[j]);
    }
}

/* ---- the CPU refuses the halves for these ops, saying why ------------------------------------ */

/* A CPU tensor header of a half dtype over float32 storage: what the front ends would see if a
 * half tensor reached the CPU (mf_empty refuses to make one, checked below), for their checks. */
static mf_tensor *cpu_half(int nd, const int64_t *shape, mf_dtype dt) {
  int64_t n = mf_shape_numel(nd, shape), st[MF_MAX_DIMS];
  mf_tensor *f = NULL, *t = NULL;
  if (mf_empty(1, &n, MF_F32, mf_cpu(), &f) == MF_OK) {
    mf_contiguous_strides(nd, shape, st);
    t = mf_tensor_wrap(f->storage, dt, nd, shape, st, 0);
  }
  mf_release(f);
  return t;
}

static void test_cpu_refuses(void) {
  int64_t xs[4] = {2, 3, 6, 6}, ws[4] = {4, 3, 3, 3}, cs[1] = {3}, ps[1] = {3};
  mf_pool2d_params cp = {.stride = {1, 1}}, pp = {.kernel = {2, 2}, .stride = {2, 2}};
  for (int d = 0; d < 2; d++) {
    mf_dtype dt = halves[d];
    const char *n = mf_dtype_name(dt);
    mf_tensor *x = NULL, *w = NULL, *v = NULL, *gv = NULL, *y = NULL, *i = NULL;
    char want[96];
    snprintf(want, sizeof want, "%s tensors live only on GPUs", n);
    CHECK_FAILS(mf_empty(4, xs, dt, mf_cpu(), &x), MF_ERR_DTYPE, want);
    x = cpu_half(4, xs, dt);
    w = cpu_half(4, ws, dt);
    v = cpu_half(1, cs, dt);
    gv = cpu_half(1, ps, dt);
    CHECK(x && w && v && gv);
    if (!x || !w || !v || !gv) return;
    snprintf(want, sizeof want, "conv2d: %s needs a GPU tensor", n);
    CHECK_FAILS(mf_conv2d(x, w, NULL, &cp, &y), MF_ERR_DTYPE, want);
    CHECK_FAILS(mf_conv2d(x, w, NULL, &cp, &y), MF_ERR_DTYPE, "on the CPU use float32 or float64");
    snprintf(want, sizeof want, "conv2d_backward_input: %s needs a GPU tensor", n);
    CHECK_FAILS(mf_conv2d_backward_input(x, w, xs, &cp, &y), MF_ERR_DTYPE, want);
    snprintf(want, sizeof want, "max_pool2d: %s needs a GPU tensor", n);
    CHECK_FAILS(mf_max_pool2d(x, &pp, &y, &i), MF_ERR_DTYPE, want);
    snprintf(want, sizeof want, "avg_pool2d: %s needs a GPU tensor", n);
    CHECK_FAILS(mf_avg_pool2d(x, &pp, &y), MF_ERR_DTYPE, want);
    snprintf(want, sizeof want, "log_softmax: %s needs a GPU tensor", n);
    CHECK_FAILS(mf_log_softmax(x, 1, &y), MF_ERR_DTYPE, want);
    snprintf(want, sizeof want, "softmax: %s needs a GPU tensor", n);
    CHECK_FAILS(mf_softmax(x, 1, &y), MF_ERR_DTYPE, want);
    snprintf(want, sizeof want, "batch_norm: %s needs a GPU tensor", n);
    CHECK_FAILS(mf_batch_norm(x, v, v, NULL, NULL, true, 0.1, 1e-5, &y, NULL), MF_ERR_DTYPE, want);
    mf_optim_hparams h = {.lr = 0.1, .step = 1};
    snprintf(want, sizeof want, "sgd_step: %s needs a GPU tensor", n);
    CHECK_FAILS(mf_sgd_step(gv, gv, NULL, &h), MF_ERR_DTYPE, want);
    CHECK(y == NULL && i == NULL);
    snprintf(want, sizeof want, "dropout: %s needs a GPU tensor", n);
    CHECK_FAILS(mf_dropout_mask(x, 0.5, &y), MF_ERR_DTYPE, want);
    mf_release(x);
    mf_release(w);
    mf_release(v);
    mf_release(gv);
  }
}

/* A GPU half input with mismatched or unsupported partners: clear errors, no crash. */
static void test_gpu_errors(void) {
  int64_t xs[4] = {2, 3, 6, 6}, ws[4] = {4, 3, 3, 3}, cs[1] = {3};
  mf_pool2d_params cp = {.stride = {1, 1}};
  mf_tensor *x = NULL, *w32 = NULL, *v64 = NULL, *y = NULL;
  CHECK_OK(mf_zeros(4, xs, MF_F16, gpu, &x));
  CHECK_OK(mf_zeros(4, ws, MF_F32, gpu, &w32));
  CHECK_OK(mf_zeros(1, cs, MF_F64, gpu, &v64));
  CHECK_FAILS(mf_conv2d(x, w32, NULL, &cp, &y), MF_ERR_DTYPE,
              "input is float16 but weight is float32");
  CHECK_FAILS(mf_batch_norm(x, v64, NULL, NULL, NULL, true, 0.1, 1e-5, &y, NULL), MF_ERR_DTYPE,
              "weight is float64 but the input is float16 (a half input takes float32 or its own");
  CHECK(y == NULL);
  mf_release(x);
  mf_release(w32);
  mf_release(v64);
}

int main(void) {
  int n = mf_cuda_device_count();
  if (n == 0 || mf_device_get("cuda:0", &gpu) != MF_OK) {
    mf_device *d = NULL;
    mf_status s = mf_device_get("cuda:0", &d);
    CHECK(s == MF_ERR_DEVICE && d == NULL); /* no GPU is a clear error, not a crash */
    printf("# skipped: no CUDA device (%s)\n", mf_error());
    test_cpu_refuses(); /* needs no GPU */
    int r = test_summary();
    printf("# skipped 9\n"); /* the GPU groups */
    return r;
  }
  int rt = 0, drv = 0, dnn = 0;
  bool have_cudnn = mf_cuda_versions(&rt, &drv, &dnn) == MF_OK && dnn > 0;
  printf("# float16 and bfloat16 on %s%s\n", mf_device_name(gpu),
         have_cudnn ? "" : " (no cuDNN: conv2d and batch_norm skipped)");
  int skipped = 0;
  test_cpu_refuses();
  if (have_cudnn) {
    test_conv2d();
    test_conv2d_backward_ops();
    test_batch_norm();
  } else {
    skipped += 3;
  }
  test_pool();
  test_softmax();
  test_cross_entropy();
  test_optim();
  test_dropout();
  test_gpu_errors();
  CHECK(mf_device_synchronize(gpu) == MF_OK);
  printf("# %d half cases\n", cases_run);
  CHECK(mf_storage_bytes() == 0); /* every tensor released */
  int r = test_summary();
  if (skipped) printf("# skipped %d\n", skipped);
  return r;
}
