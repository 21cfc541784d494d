/* test_cuda_parity.c — CPU vs GPU parity of the neural-network ops' CUDA kernels, in the style of
 * ggml's test-backend-ops: each case builds its inputs on the CPU, runs the op forward on both
 * devices, then backward through autograd (the gradient of sum(out * r) for a random r, so every
 * output element matters), and compares outputs and input gradients with a per-op tolerance. One
 * line per case; failures print the first differing element.
 *
 * Covered: the differentiable elementwise ops (binary with broadcasting, unary, clamp, where),
 * dropout (the same Philox mask), views and casts, reductions, matmul and softmax, forward and
 * backward in float32 and float64; conv2d (cuDNN; float32 without and with TF32, float64; stride,
 * symmetric and asymmetric padding, bias or none; the backward ops called directly too; NCHW and,
 * through the kernel table with channels-last views, NHWC), max/avg pooling (with and without
 * indices, i.e. our kernels and cuDNN's forward; overlapping windows, asymmetric padding,
 * count_include_pad; NaN and ties), gather/scatter_add (every dtype they take, every dim),
 * index_select (routed to gather), the cross-entropy loss as the nn code composes it, the fused
 * batch normalisation (cuDNN: training with running stats, inference, backward), finite-difference
 * gradient checks of conv2d + pooling on the GPU in float64, and the GPU's error messages
 * (out-of-range indices). Channels-last through the front ends: conv2d and the pools given an
 * (N, C, H, W) input stored NHWC on the device side (the CPU reference stays NCHW), forward with
 * autograd, and the backward ops called directly with channels-last gradients; the device's
 * results must be channels-last too (ops_nn.c routes such tensors to the kernels without a copy).
 *
 * Without a GPU (or the CUDA backend) it prints "# skipped: <why>", runs the same cases the CPU
 * against itself (checking the cases' own code: shapes, front-end checks, finite differences,
 * releases), then the usual `# passed N failed M` and `# skipped 10` (the GPU case groups), as
 * test_cuda does.
 */
#include "moonflow_io.h" /* mf_index_select */
#include "test_cuda.h"

static int cases_run;
/* cuDNN's ops (conv2d, batch_norm) have GPU kernels: false in a build without cuDNN, such as the
 * emulated one (MOONFLOW_CUDA=EMU), where their groups are skipped */
static bool have_cudnn = true;

/* parity(): the inputs whose bit is set go to the device side as channels-last views, and a 4-D
 * output there must come back channels-last */
static unsigned gpu_cl;
/* ---- the generic forward + backward comparison ----------------------------------------------- */

/* An op under test: out = f(in[0..nin-1]) with arguments `arg`. */
typedef mf_status (*op_fn)(mf_tensor *const *in, const void *arg, mf_tensor **out);

typedef struct tol {
  double atol, rtol;   /* forward */
  double gatol, grtol; /* gradients */
} tol;

/* Runs f on the CPU inputs and on their GPU copies; compares the outputs; when `diff` has inputs
 * marked (float inputs only), runs backward of sum(out * r) on both and compares their grads. */
static void parity(const char *what, op_fn f, const void *arg, int nin, mf_tensor *const *cin,
                   const bool *diff, tol t) {
  cases_run++;
  mf_tensor *gin[4] = {NULL, NULL, NULL, NULL}, *cl[4] = {NULL}, *gl[4] = {NULL};
  bool any = false;
  for (int i = 0; i < nin; i++) {
    if (!cin[i]) continue;
    gin[i] = on_gpu(cin[i]);
    if (gpu_cl >> i & 1u) {
      mf_tensor *v = channels_last(gin[i]);
      CHECK(v && is_cl(v));
      mf_release(gin[i]);
      gin[i] = v;
    }
    /* fresh leaves on both sides so the caller's tensors keep no grad */
    CHECK_OK(mf_detach(cin[i], &cl[i]));
    CHECK_OK(mf_detach(gin[i], &gl[i]));
    if (diff && diff[i]) {
      CHECK_OK(mf_set_requires_grad(cl[i], true));
      CHECK_OK(mf_set_requires_grad(gl[i], true));
      any = true;
    }
  }
  mf_tensor *oc = NULL, *og = NULL;
  mf_status sc = f(cl, arg, &oc), sg = f(gl, arg, &og);
  if (sc || sg) {
    fprintf(stderr, "%s: forward failed on the %s: %s\n", what, sc ? "CPU" : "GPU", mf_error());
    t_failed++;
  } else {
    bool ok = same(what, oc, og, t.atol, t.rtol);
    CHECK(ok);
    if (gpu_cl && og->ndim == 4 && !is_cl(og)) {
      fprintf(stderr, "%s: the output is not channels-last\n", what);
      ok = false;
      t_failed++;
    }
    if (any) {
      mf_tensor *r = make(oc->ndim, oc->shape, oc->dtype, V_REAL), *gr = on_gpu(r);
      backward_weighted(oc, r, og, gr);
      for (int i = 0; i < nin; i++) {
        if (!diff[i] || !cin[i]) continue;
        char gw[256];
        snprintf(gw, sizeof gw, "%s: grad of input %d", what, i + 1);
        bool gok = same(gw, cl[i]->grad, gl[i]->grad, t.gatol, t.grtol);
        CHECK(gok);
        ok = ok && gok;
      }
      mf_release(r);
      mf_release(gr);
    }
    printf("  %-72s %s\n", what, ok ? "ok" : "FAILED");
  }
  mf_release(oc);
  mf_release(og);
  for (int i = 0; i < nin; i++) {
    mf_release(gin[i]);
    mf_release(cl[i]);
    mf_release(gl[i]);
  }
}

static tol ftols(mf_dtype dt, double scale) {
  if (dt == MF_F64) return (tol){1e-11 * scale, 1e-11, 1e-11 * scale, 1e-11};
  return (tol){2e-5 * scale, 2e-5, 2e-5 * scale, 2e-5};
}

/* ---- the other differentiable ops: forward and backward through autograd --------------------- */

static mf_status binary_fn(mf_tensor *const *in, const void *arg, mf_tensor **out) {
  return mf_binary(*(const mf_op *)arg, in[0], in[1], out);
}
/* x op number or number op x, the number a wrapped 0-d CPU tensor on either side (a host number:
 * on a GPU the kernel takes its value) */
typedef struct num_arg {
  mf_op op;
  double v;
  mf_dtype ndt; /* int64 or float64, as a Lua integer or float beside a tensor */
  bool left;
} num_arg;
static mf_status num_fn(mf_tensor *const *in, const void *arg, mf_tensor **out) {
  const num_arg *a = arg;
  mf_tensor *n = NULL;
  mf_status s = mf_scalar(a->v, a->ndt, true, NULL, &n);
  if (!s) s = a->left ? mf_binary(a->op, n, in[0], out) : mf_binary(a->op, in[0], n, out);
  mf_release(n);
  return s;
}
static mf_status unary_fn(mf_tensor *const *in, const void *arg, mf_tensor **out) {
  return mf_unary(*(const mf_op *)arg, in[0], out);
}
static mf_status clamp_fn(mf_tensor *const *in, const void *arg, mf_tensor **out) {
  (void)arg;
  return mf_clamp(in[0], -1.0, 1.5, out);
}
static mf_status where_fn(mf_tensor *const *in, const void *arg, mf_tensor **out) {
  (void)arg; /* the condition: in[0] > in[1], on the inputs' device */
  mf_tensor *c = NULL;
  mf_status s = mf_binary(MF_OP_GT, in[0], in[1], &c);
  if (!s) s = mf_where(c, in[0], in[1], out);
  mf_release(c);
  return s;
}
typedef struct reduce_arg {
  mf_op op;
  int dim;
  bool keepdim;
} reduce_arg;
static mf_status reduce_fn(mf_tensor *const *in, const void *arg, mf_tensor **out) {
  const reduce_arg *a = arg;
  if (a->op == MF_OP_VAR) return mf_var(in[0], a->dim, 1, a->keepdim, out);
  return mf_reduce(a->op, in[0], a->dim, a->keepdim, out);
}
static mf_status matmul_fn(mf_tensor *const *in, const void *arg, mf_tensor **out) {
  (void)arg;
  return mf_matmul(in[0], in[1], out);
}
static mf_status softmax_fn(mf_tensor *const *in, const void *arg, mf_tensor **out) {
  return *(const bool *)arg ? mf_log_softmax(in[0], 1, out) : mf_softmax(in[0], 1, out);
}
/* x * dropout mask, the mask drawn from the same seed on both devices */
static mf_status dropout_fn(mf_tensor *const *in, const void *arg, mf_tensor **out) {
  (void)arg;
  mf_tensor *m = NULL;
  mf_manual_seed(2024);
  mf_status s = mf_dropout_mask(in[0], 0.4, &m);
  if (!s) s = mf_mul(in[0], m, out);
  mf_release(m);
  return s;
}
/* a strided view, then a cast: backward through permute, slice and cast */
static mf_status view_cast_fn(mf_tensor *const *in, const void *arg, mf_tensor **out) {
  (void)arg;
  int perm[3] = {2, 0, 1};
  mf_tensor *p = NULL, *sl = NULL;
  mf_status s = mf_permute(in[0], perm, &p);
  if (!s) s = mf_slice(p, 2, 1, 4, 2, &sl); /* (5, 3, 4) -> (5, 3, 2) */
  if (!s) s = mf_cast(sl, in[0]->dtype == MF_F32 ? MF_F64 : MF_F32, out);
  mf_release(p);
  mf_release(sl);
  return s;
}

static void test_autograd_ops(void) {
  int64_t sa[3] = {3, 4, 5}, sb[2] = {4, 1}, sm[2] = {6, 7}, sk[2] = {7, 5};
  for (int dd = 0; dd < 2; dd++) {
    mf_dtype dt = dd ? MF_F64 : MF_F32;
    tol t = ftols(dt, 4);
    char what[120];
    static const mf_op bops[7] = {MF_OP_ADD, MF_OP_SUB,     MF_OP_MUL,    MF_OP_DIV,
                                  MF_OP_POW, MF_OP_MAXIMUM, MF_OP_MINIMUM};
    for (int i = 0; i < 7; i++) {
      /* broadcast (3, 4, 5) with (4, 1); positive bases and divisors */
      bool pos = bops[i] == MF_OP_POW || bops[i] == MF_OP_DIV;
      mf_tensor *in[2] = {make(3, sa, dt, bops[i] == MF_OP_POW ? V_POS : V_REAL),
                          make(2, sb, dt, pos ? V_POS : V_REAL)};
      bool diff[2] = {true, true};
      snprintf(what, sizeof what, "%s %s, broadcast (backward sums over it)", mf_op_name(bops[i]),
               mf_dtype_name(dt));
      parity(what, binary_fn, &bops[i], 2, in, diff, ftols(dt, 40));
      mf_release(in[0]);
      mf_release(in[1]);
    }
    static const mf_op uops[8] = {MF_OP_NEG,  MF_OP_ABS,  MF_OP_EXP,     MF_OP_LOG,
                                  MF_OP_SQRT, MF_OP_TANH, MF_OP_SIGMOID, MF_OP_RELU};
    for (int i = 0; i < 8; i++) {
      bool pos = uops[i] == MF_OP_LOG || uops[i] == MF_OP_SQRT;
      mf_tensor *x = make(3, sa, dt, pos ? V_POS : V_REAL);
      bool diff[1] = {true};
      snprintf(what, sizeof what, "%s %s", mf_op_name(uops[i]), mf_dtype_name(dt));
      parity(what, unary_fn, &uops[i], 1, &x, diff, ftols(dt, 20));
      mf_release(x);
    }
    mf_tensor *x = make(3, sa, dt, V_REAL), *y = make(3, sa, dt, V_REAL);
    mf_tensor *xy[2] = {x, y};
    bool d1[1] = {true}, d2[2] = {true, true};
    snprintf(what, sizeof what, "clamp %s", mf_dtype_name(dt));
    parity(what, clamp_fn, NULL, 1, &x, d1, t);
    snprintf(what, sizeof what, "where %s", mf_dtype_name(dt));
    parity(what, where_fn, NULL, 2, xy, d2, t);
    snprintf(what, sizeof what, "dropout %s (same Philox mask)", mf_dtype_name(dt));
    parity(what, dropout_fn, NULL, 1, &x, d1, t);
    snprintf(what, sizeof what, "permute, slice, cast %s", mf_dtype_name(dt));
    parity(what, view_cast_fn, NULL, 1, &x, d1, t);
    static const mf_op rops[6] = {MF_OP_SUM, MF_OP_MEAN, MF_OP_PROD,
                                  MF_OP_MAX, MF_OP_MIN,  MF_OP_VAR};
    for (int i = 0; i < 6; i++)
      for (int dim = 0; dim < 2; dim++) {
        reduce_arg a = {rops[i], dim ? 1 : MF_ALL_DIMS, dim == 1};
        snprintf(what, sizeof what, "%s %s %s", mf_op_name(rops[i]), mf_dtype_name(dt),
                 dim ? "dim 2, keepdim" : "all");
        /* prod of 60 values in [-3, 3]: compare relatively */
        tol tr = rops[i] == MF_OP_PROD ? (tol){1e-30, dd ? 1e-10 : 1e-4, 1e-30, dd ? 1e-10 : 1e-4}
                                       : ftols(dt, 60);
        parity(what, reduce_fn, &a, 1, &x, d1, tr);
      }
    mf_tensor *m[2] = {make(2, sm, dt, V_REAL), make(2, sk, dt, V_REAL)};
    bool was = mf_cuda_set_tf32(false);
    snprintf(what, sizeof what, "matmul %s 6x7 @ 7x5", mf_dtype_name(dt));
    parity(what, matmul_fn, NULL, 2, m, d2, ftols(dt, 20));
    mf_cuda_set_tf32(was);
    for (int lg = 0; lg < 2; lg++) {
      bool arg = lg;
      snprintf(what, sizeof what, "%s %s dim 2", lg ? "log_softmax" : "softmax", mf_dtype_name(dt));
      parity(what, softmax_fn, &arg, 1, &x, d1, t);
    }
    mf_release(m[0]);
    mf_release(m[1]);
    mf_release(x);
    mf_release(y);
  }
}

/* ---- conv2d ---------------------------------------------------------------------------------- */

typedef struct conv_arg {
  mf_pool2d_params p;
} conv_arg;

static mf_status conv_fn(mf_tensor *const *in, const void *arg, mf_tensor **out) {
  return mf_conv2d(in[0], in[1], in[2], &((const conv_arg *)arg)->p, out);
}

typedef struct conv_case {
  int64_t x[4], w[4];
  int stride[2], pad[4];
  bool bias;
} conv_case;

static const conv_case conv_cases[] = {
    {{2, 3, 9, 8}, {4, 3, 3, 3}, {1, 1}, {1, 1, 1, 1}, true},
    {{2, 3, 9, 8}, {4, 3, 3, 3}, {2, 2}, {1, 1, 1, 1}, false},
    {{2, 3, 8, 8}, {5, 3, 2, 2}, {2, 2}, {0, 0, 1, 1}, true},   /* asymmetric, unused: direct */
    {{2, 3, 9, 8}, {4, 3, 3, 3}, {1, 1}, {2, 0, 0, 1}, true},   /* asymmetric, explicit padding */
    {{3, 1, 28, 28}, {8, 1, 5, 5}, {1, 1}, {2, 2, 2, 2}, true}, /* MNIST's first layer */
    {{2, 8, 14, 14},
     {6, 8, 5, 5},
     {1, 1},
     {2, 2, 2, 2},
     true}, /* its second (Winograd on the CPU) */
    {{1, 2, 4, 4}, {3, 2, 4, 4}, {1, 1}, {0, 0, 0, 0}, false}, /* one output pixel */
    {{2, 4, 7, 7}, {3, 4, 1, 1}, {2, 2}, {0, 0, 0, 0}, true},  /* 1x1, strided */
    {{2, 3, 9, 8}, {2, 3, 3, 2}, {2, 1}, {1, 0, 1, 0}, true},  /* unequal strides and padding */
};
#define NCONV ((int)(sizeof conv_cases / sizeof conv_cases[0]))

static void conv_desc(char *buf, size_t n, const char *pre, mf_dtype dt, const conv_case *k) {
  snprintf(buf, n, "%s %s x %lldx%lldx%lldx%lld w %lldx%lldx%lldx%lld s%dx%d p%d,%d,%d,%d%s", pre,
           mf_dtype_name(dt), (long long)k->x[0], (long long)k->x[1], (long long)k->x[2],
           (long long)k->x[3], (long long)k->w[0], (long long)k->w[1], (long long)k->w[2],
           (long long)k->w[3], k->stride[0], k->stride[1], k->pad[0], k->pad[1], k->pad[2],
           k->pad[3], k->bias ? " +b" : "");
}

/* case k's arguments, and its inputs (x, w, and the bias or NULL) in dtype dt */
static conv_arg conv_case_arg(const conv_case *k) {
  return (conv_arg){{.stride = {k->stride[0], k->stride[1]},
                     .pad = {k->pad[0], k->pad[1], k->pad[2], k->pad[3]}}};
}
static void conv_case_inputs(const conv_case *k, mf_dtype dt, mf_tensor **in) {
  in[0] = make(4, k->x, dt, V_REAL);
  in[1] = make(4, k->w, dt, V_REAL);
  in[2] = k->bias ? make(1, k->w, dt, V_REAL) : NULL;
}
/* terms summed per output */
static double conv_case_terms(const conv_case *k) { return (double)(k->w[1] * k->w[2] * k->w[3]); }
/* dt's tolerances for case k: a weight gradient sums over N x OH x OW positions more */
static tol conv_case_tols(const conv_case *k, mf_dtype dt) {
  double scale = conv_case_terms(k);
  tol t = ftols(dt, scale);
  t.gatol = ftols(dt, scale + (double)(k->x[0] * k->x[2] * k->x[3])).gatol;
  return t;
}

static void test_conv2d(void) {
  bool was = mf_cuda_set_tf32(false);
  for (int dd = 0; dd < 2; dd++) {
    mf_dtype dt = dd ? MF_F64 : MF_F32;
    for (int i = 0; i < NCONV; i++) {
      const conv_case *k = &conv_cases[i];
      conv_arg a = conv_case_arg(k);
      mf_tensor *in[3];
      conv_case_inputs(k, dt, in);
      bool diff[3] = {true, true, k->bias};
      char what[200];
      conv_desc(what, sizeof what, "conv2d", dt, k);
      parity(what, conv_fn, &a, 3, in, diff, conv_case_tols(k, dt));
      for (int j = 0; j < 3; j++) mf_release(in[j]);
    }
  }
  /* TF32 (the default for float32): inputs rounded to 10 bits, so about 1e-3 relative */
  mf_cuda_set_tf32(true);
  for (int i = 0; i < NCONV; i += 3) {
    const conv_case *k = &conv_cases[i];
    conv_arg a = conv_case_arg(k);
    mf_tensor *in[3];
    conv_case_inputs(k, MF_F32, in);
    bool diff[3] = {true, true, k->bias};
    char what[200];
    conv_desc(what, sizeof what, "conv2d tf32", MF_F32, k);
    double scale = conv_case_terms(k);
    parity(what, conv_fn, &a, 3, in, diff, (tol){3e-3 * scale, 1e-2, 3e-3 * scale, 1e-2});
    for (int j = 0; j < 3; j++) mf_release(in[j]);
  }
  mf_cuda_set_tf32(false);

  /* the backward ops called directly, with shapes the forward did not make */
  for (int i = 0; i < NCONV; i++) {
    const conv_case *k = &conv_cases[i];
    mf_pool2d_params p = {.stride = {k->stride[0], k->stride[1]},
                          .pad = {k->pad[0], k->pad[1], k->pad[2], k->pad[3]}};
    mf_tensor *x = make(4, k->x, MF_F64, V_REAL), *w = make(4, k->w, MF_F64, V_REAL), *y = NULL;
    CHECK_OK(mf_conv2d(x, w, NULL, &p, &y));
    if (!y) continue;
    mf_tensor *dy = make(4, y->shape, MF_F64, V_REAL);
    mf_tensor *gx = on_gpu(x), *gw = on_gpu(w), *gdy = on_gpu(dy);
    mf_tensor *dxc = NULL, *dxg = NULL, *dwc = NULL, *dwg = NULL;
    CHECK_OK(mf_conv2d_backward_input(dy, w, k->x, &p, &dxc));
    CHECK_OK(mf_conv2d_backward_input(gdy, gw, k->x, &p, &dxg));
    CHECK_OK(mf_conv2d_backward_weight(dy, x, k->w, &p, &dwc));
    CHECK_OK(mf_conv2d_backward_weight(gdy, gx, k->w, &p, &dwg));
    char what[200];
    conv_desc(what, sizeof what, "conv2d_backward_input", MF_F64, k);
    SAME(what, dxc, dxg, 1e-10, 1e-10);
    conv_desc(what, sizeof what, "conv2d_backward_weight", MF_F64, k);
    SAME(what, dwc, dwg, 1e-10, 1e-10);
    cases_run += 2;
    mf_tensor *all[10] = {x, w, y, dy, gx, gw, gdy, dxc, dxg, dwc};
    for (int j = 0; j < 10; j++) mf_release(all[j]);
    mf_release(dwg);
  }

  /* an input starting off a 16-byte boundary (a batch slice of 25-float images): the emulator's
   * first-ranked algorithm refuses it at the call, as tensor-core kernels do, so the next one
   * must be tried */
  int64_t xs[4] = {3, 1, 5, 5}, ws[4] = {2, 1, 3, 3};
  mf_pool2d_params p = {.stride = {1, 1}, .pad = {1, 1, 1, 1}};
  mf_tensor *x = make(4, xs, MF_F32, V_REAL), *w = make(4, ws, MF_F32, V_REAL);
  mf_tensor *gx = on_gpu(x), *gw = on_gpu(w), *xv = NULL, *gxv = NULL, *yc = NULL, *yg = NULL;
  CHECK_OK(mf_narrow(x, 0, 1, 2, &xv));
  CHECK_OK(mf_narrow(gx, 0, 1, 2, &gxv));
  CHECK_OK(mf_conv2d(xv, w, NULL, &p, &yc));
  CHECK_OK(mf_conv2d(gxv, gw, NULL, &p, &yg));
  SAME("conv2d of an input off a 16-byte boundary", yc, yg, 1e-5, 1e-5);
  cases_run++;
  mf_tensor *all[8] = {x, w, gx, gw, xv, gxv, yc, yg};
  for (int j = 0; j < 8; j++) mf_release(all[j]);
  mf_cuda_set_tf32(was);
}

/* an empty (N, C, H, W) GPU tensor laid out NHWC */
static mf_tensor *empty_channels_last(const int64_t *s, mf_dtype dt) {
  int64_t nhwc[4] = {s[0], s[2], s[3], s[1]};
  int back[4] = {0, 3, 1, 2};
  mf_tensor *e = NULL, *v = NULL;
  if (mf_zeros(4, nhwc, dt, gpu, &e) == MF_OK) mf_permute(e, back, &v);
  mf_release(e);
  return v;
}

/* NHWC through the GPU's kernel table (the front end hands kernels NCHW; cuDNN takes either) */
static void test_conv2d_nhwc(void) {
  bool was = mf_cuda_set_tf32(false);
  for (int i = 0; i < NCONV; i++) {
    const conv_case *k = &conv_cases[i];
    mf_pool2d_params p = {.stride = {k->stride[0], k->stride[1]},
                          .pad = {k->pad[0], k->pad[1], k->pad[2], k->pad[3]}};
    mf_tensor *x = make(4, k->x, MF_F32, V_REAL), *w = make(4, k->w, MF_F32, V_REAL);
    mf_tensor *b = k->bias ? make(1, k->w, MF_F32, V_REAL) : NULL, *y = NULL;
    CHECK_OK(mf_conv2d(x, w, b, &p, &y));
    if (!y) continue;
    mf_tensor *dy = make(4, y->shape, MF_F32, V_REAL), *dxc = NULL, *dwc = NULL;
    CHECK_OK(mf_conv2d_backward_input(dy, w, k->x, &p, &dxc));
    CHECK_OK(mf_conv2d_backward_weight(dy, x, k->w, &p, &dwc));
    mf_tensor *gx0 = on_gpu(x), *gw0 = on_gpu(w), *gdy0 = on_gpu(dy), *gb = b ? on_gpu(b) : NULL;
    mf_tensor *gx = channels_last(gx0), *gw = channels_last(gw0), *gdy = channels_last(gdy0);
    mf_tensor *gy = empty_channels_last(y->shape, MF_F32);
    mf_tensor *gdx = empty_channels_last(k->x, MF_F32), *gdw = empty_channels_last(k->w, MF_F32);
    double scale = (double)(k->w[1] * k->w[2] * k->w[3]);
    char what[200];
    if (gx && gw && gdy && gy && gdx && gdw) {
      mf_call c = {
          .op = MF_OP_CONV2D, .out = gy, .in = {gx, gw, gb}, .nin = b ? 3 : 2, .params = &p};
      conv_desc(what, sizeof what, "conv2d NHWC", MF_F32, k);
      CHECK_OK(mf_dispatch(gpu, &c));
      SAME(what, y, gy, 2e-5 * scale, 2e-5);
      mf_call ci = {
          .op = MF_OP_CONV2D_BACKWARD_INPUT, .out = gdx, .in = {gdy, gw}, .nin = 2, .params = &p};
      conv_desc(what, sizeof what, "conv2d_backward_input NHWC", MF_F32, k);
      CHECK_OK(mf_dispatch(gpu, &ci));
      SAME(what, dxc, gdx, 2e-5 * scale, 2e-5);
      mf_call cw = {
          .op = MF_OP_CONV2D_BACKWARD_WEIGHT, .out = gdw, .in = {gdy, gx}, .nin = 2, .params = &p};
      conv_desc(what, sizeof what, "conv2d_backward_weight NHWC", MF_F32, k);
      CHECK_OK(mf_dispatch(gpu, &cw));
      double wscale = (double)(y->shape[0] * y->shape[2] * y->shape[3]);
      SAME(what, dwc, gdw, 2e-5 * wscale, 2e-5);
      cases_run += 3;
    } else {
      fprintf(stderr, "conv2d NHWC: could not make channels-last views: %s\n", mf_error());
      t_failed++;
    }
    mf_tensor *all[16] = {x, w, b, y, dy, dxc, dwc, gx0, gw0, gdy0, gb, gx, gw, gdy, gy, gdx};
    for (int j = 0; j < 16; j++) mf_release(all[j]);
    mf_release(gdw);
  }
  mf_cuda_set_tf32(was);
}

/* ---- pooling --------------------------------------------------------------------------------- */

typedef struct pool_arg {
  mf_pool2d_params p;
  bool max, want_indices;
} pool_arg;

static mf_status pool_fn(mf_tensor *const *in, const void *arg, mf_tensor **out) {
  const pool_arg *a = arg;
  if (!a->max) return mf_avg_pool2d(in[0], &a->p, out);
  mf_tensor *idx = NULL;
  mf_status s = mf_max_pool2d(in[0], &a->p, out, a->want_indices ? &idx : NULL);
  mf_release(idx);
  return s;
}

typedef struct pool_case {
  int64_t x[4];
  int k[2], stride[2], pad[4];
} pool_case;

static const pool_case pool_cases[] = {
    {{2, 3, 8, 8}, {2, 2}, {2, 2}, {0, 0, 0, 0}}, /* MNIST's */
    {{2, 3, 9, 7}, {3, 3}, {2, 2}, {1, 1, 1, 1}}, /* overlapping, padded */
    {{2, 2, 8, 8}, {2, 2}, {2, 2}, {0, 0, 1, 1}}, /* asymmetric, extra cells unused: cuDNN */
    {{1, 2, 6, 5}, {3, 2}, {1, 2}, {1, 0, 0, 1}}, /* asymmetric: our kernels */
    {{3, 4, 5, 5}, {5, 5}, {1, 1}, {0, 0, 0, 0}}, /* global */
};
#define NPOOL ((int)(sizeof pool_cases / sizeof pool_cases[0]))

static void test_pool(void) {
  for (int dd = 0; dd < 2; dd++) {
    mf_dtype dt = dd ? MF_F64 : MF_F32;
    for (int i = 0; i < NPOOL; i++) {
      const pool_case *k = &pool_cases[i];
      for (int mode = 0; mode < 4; mode++) { /* max with indices, max without, avg incl, avg excl */
        pool_arg a = {{.kernel = {k->k[0], k->k[1]},
                       .stride = {k->stride[0], k->stride[1]},
                       .pad = {k->pad[0], k->pad[1], k->pad[2], k->pad[3]},
                       .count_include_pad = mode == 2},
                      mode < 2,
                      mode == 0};
        mf_tensor *x = make(4, k->x, dt, V_REAL);
        bool diff[1] = {true};
        char what[200];
        static const char *names[4] = {"max_pool2d +indices", "max_pool2d", "avg_pool2d incl",
                                       "avg_pool2d excl"};
        snprintf(what, sizeof what, "%s %s x %lldx%lldx%lldx%lld k%dx%d s%dx%d p%d,%d,%d,%d",
                 names[mode], mf_dtype_name(dt), (long long)k->x[0], (long long)k->x[1],
                 (long long)k->x[2], (long long)k->x[3], k->k[0], k->k[1], k->stride[0],
                 k->stride[1], k->pad[0], k->pad[1], k->pad[2], k->pad[3]);
        /* without indices and without grad: the inference path (cuDNN); with grad the front end
         * asks for indices itself, so mode 1 runs forward-only */
        tol t = ftols(dt, (double)(k->k[0] * k->k[1]));
        if (mode < 2) t.atol = t.rtol = 0; /* a max is exact */
        parity(what, pool_fn, &a, 1, &x, mode == 1 ? NULL : diff, t);
        mf_release(x);
      }
    }
  }
  /* indices, NaN and ties: the first NaN wins, a tie goes to the first cell */
  double v[16] = {1, 1, 0, 5, 1, NAN, 5, 5, 2, 2, 2, 2, 3, 2, NAN, NAN};
  int64_t s[4] = {1, 1, 4, 4};
  mf_tensor *x = NULL, *gxx = NULL, *yc = NULL, *ic = NULL, *yg = NULL, *ig = NULL;
  CHECK_OK(mf_from_host(4, s, MF_F64, v, NULL, &x));
  gxx = on_gpu(x);
  mf_pool2d_params p = {.kernel = {2, 2}, .stride = {2, 2}};
  mf_pool2d_params p3 = {.kernel = {3, 3}, .stride = {1, 1}, .pad = {1, 1, 1, 1}};
  for (int pi = 0; pi < 2; pi++) {
    CHECK_OK(mf_max_pool2d(x, pi ? &p3 : &p, &yc, &ic));
    CHECK_OK(mf_max_pool2d(gxx, pi ? &p3 : &p, &yg, &ig));
    SAME("max_pool2d NaN/ties values", yc, yg, 0, 0);
    SAME("max_pool2d NaN/ties indices", ic, ig, 0, 0);
    MF_DROP(yc);
    MF_DROP(ic);
    MF_DROP(yg);
    MF_DROP(ig);
    mf_tensor *yi = NULL;
    CHECK_OK(mf_max_pool2d(gxx, pi ? &p3 : &p, &yi, NULL)); /* cuDNN: NaN propagates too */
    CHECK_OK(mf_max_pool2d(x, pi ? &p3 : &p, &yc, NULL));
    SAME("max_pool2d NaN (no indices)", yc, yi, 0, 0);
    MF_DROP(yc);
    mf_release(yi);
    cases_run += 3;
  }
  mf_release(x);
  mf_release(gxx);

  /* max_pool2d_backward called directly with the forward's indices (overlapping windows) */
  int64_t sx[4] = {2, 3, 9, 7};
  mf_tensor *xx = make(4, sx, MF_F32, V_REAL), *gx = on_gpu(xx);
  mf_pool2d_params po = {.kernel = {3, 3}, .stride = {2, 2}, .pad = {1, 1, 1, 1}};
  CHECK_OK(mf_max_pool2d(xx, &po, &yc, &ic));
  CHECK_OK(mf_max_pool2d(gx, &po, &yg, &ig));
  if (yc && ig) {
    mf_tensor *dy = make(4, yc->shape, MF_F32, V_REAL), *gdy = on_gpu(dy), *dc = NULL, *dg = NULL;
    CHECK_OK(mf_max_pool2d_backward(dy, ic, sx, &dc));
    CHECK_OK(mf_max_pool2d_backward(gdy, ig, sx, &dg));
    SAME("max_pool2d_backward (atomic adds)", dc, dg, 1e-5, 1e-5);
    cases_run++;
    mf_release(dy);
    mf_release(gdy);
    mf_release(dc);
    mf_release(dg);
  }
  mf_release(xx);
  mf_release(gx);
  mf_release(yc);
  mf_release(ic);
  mf_release(yg);
  mf_release(ig);
}

/* ---- channels-last through the front ends ---------------------------------------------------- */

/* conv2d and the pools on device-side inputs stored NHWC against the CPU's NCHW results: forward
 * and autograd through parity(), the backward ops called directly with channels-last gradients. */
static void test_channels_last(void) {
  bool was = mf_cuda_set_tf32(false);
  char what[200];
  for (int dd = 0; dd < 2; dd++) {
    mf_dtype dt = dd ? MF_F64 : MF_F32;
    for (int i = 0; have_cudnn && i < NCONV; i++) {
      const conv_case *k = &conv_cases[i];
      conv_arg a = conv_case_arg(k);
      mf_tensor *in[3];
      conv_case_inputs(k, dt, in);
      bool diff[3] = {true, true, k->bias};
      conv_desc(what, sizeof what, "conv2d channels-last", dt, k);
      tol t = conv_case_tols(k, dt);
      gpu_cl = 1u;
      parity(what, conv_fn, &a, 3, in, diff, t);
      gpu_cl = 0;
      /* the backward ops with a channels-last output gradient (and input, for the weight's) */
      mf_tensor *y = NULL;
      CHECK_OK(mf_conv2d(in[0], in[1], NULL, &a.p, &y));
      if (y) {
        mf_tensor *dy = make(4, y->shape, dt, V_REAL), *gdy0 = on_gpu(dy), *gx0 = on_gpu(in[0]);
        mf_tensor *gdy = channels_last(gdy0), *gx = channels_last(gx0), *gw = on_gpu(in[1]);
        mf_tensor *dxc = NULL, *dxg = NULL, *dwc = NULL, *dwg = NULL;
        CHECK_OK(mf_conv2d_backward_input(dy, in[1], k->x, &a.p, &dxc));
        CHECK_OK(mf_conv2d_backward_input(gdy, gw, k->x, &a.p, &dxg));
        CHECK_OK(mf_conv2d_backward_weight(dy, in[0], k->w, &a.p, &dwc));
        CHECK_OK(mf_conv2d_backward_weight(gdy, gx, k->w, &a.p, &dwg));
        conv_desc(what, sizeof what, "conv2d_backward_input channels-last", dt, k);
        SAME(what, dxc, dxg, t.atol, t.rtol);
        CHECK(is_cl(dxg));
        conv_desc(what, sizeof what, "conv2d_backward_weight channels-last", dt, k);
        SAME(what, dwc, dwg, t.gatol, t.grtol);
        CHECK(dwg && mf_is_contiguous(dwg)); /* dw stays (O, C, KH, KW) */
        cases_run += 2;
        mf_tensor *all[11] = {y, dy, gdy0, gx0, gdy, gx, gw, dxc, dxg, dwc, dwg};
        for (int j = 0; j < 11; j++) mf_release(all[j]);
      }
      for (int j = 0; j < 3; j++) mf_release(in[j]);
    }
    for (int i = 0; i < NPOOL; i++) {
      const pool_case *k = &pool_cases[i];
      for (int mode = 0; mode < 4; mode++) {
        pool_arg a = {{.kernel = {k->k[0], k->k[1]},
                       .stride = {k->stride[0], k->stride[1]},
                       .pad = {k->pad[0], k->pad[1], k->pad[2], k->pad[3]},
                       .count_include_pad = mode == 2},
                      mode < 2,
                      mode == 0};
        static const char *names[4] = {"max_pool2d +indices", "max_pool2d", "avg_pool2d incl",
                                       "avg_pool2d excl"};
        snprintf(what, sizeof what,
                 "%s channels-last %s x %lldx%lldx%lldx%lld k%dx%d s%dx%d p%d,%d,%d,%d",
                 names[mode], mf_dtype_name(dt), (long long)k->x[0], (long long)k->x[1],
                 (long long)k->x[2], (long long)k->x[3], k->k[0], k->k[1], k->stride[0],
                 k->stride[1], k->pad[0], k->pad[1], k->pad[2], k->pad[3]);
        mf_tensor *x = make(4, k->x, dt, V_REAL);
        bool diff[1] = {true};
        tol t = ftols(dt, (double)(k->k[0] * k->k[1]));
        if (mode < 2) t.atol = t.rtol = 0;
        gpu_cl = 1u;
        parity(what, pool_fn, &a, 1, &x, mode == 1 ? NULL : diff, t);
        gpu_cl = 0;
        if (mode == 1) { /* the backward ops directly: max with the forward's indices, avg */
          mf_release(x);
          continue;
        }
        mf_tensor *gx0 = on_gpu(x), *gx = channels_last(gx0), *yc = NULL, *ic = NULL, *yg = NULL,
                  *ig = NULL;
        if (mode == 0) {
          CHECK_OK(mf_max_pool2d(x, &a.p, &yc, &ic));
          CHECK_OK(mf_max_pool2d(gx, &a.p, &yg, &ig));
          SAME("max_pool2d channels-last indices", ic, ig, 0, 0);
          CHECK(is_cl(ig));
        } else {
          CHECK_OK(mf_avg_pool2d(x, &a.p, &yc));
        }
        if (yc) {
          mf_tensor *dy = make(4, yc->shape, dt, V_REAL), *gdy0 = on_gpu(dy);
          mf_tensor *gdy = channels_last(gdy0), *dc = NULL, *dg = NULL;
          if (mode == 0) {
            CHECK_OK(mf_max_pool2d_backward(dy, ic, k->x, &dc));
            CHECK_OK(mf_max_pool2d_backward(gdy, ig, k->x, &dg));
          } else {
            CHECK_OK(mf_avg_pool2d_backward(dy, k->x, &a.p, &dc));
            CHECK_OK(mf_avg_pool2d_backward(gdy, k->x, &a.p, &dg));
          }
          char bw[240];
          snprintf(bw, sizeof bw, "%s (backward)", what);
          SAME(bw, dc, dg, mode == 0 ? ftols(dt, 4).atol : t.gatol, t.grtol);
          CHECK(is_cl(dg));
          cases_run++;
          mf_tensor *all[5] = {dy, gdy0, gdy, dc, dg};
          for (int j = 0; j < 5; j++) mf_release(all[j]);
        }
        mf_tensor *all[7] = {x, gx0, gx, yc, ic, yg, ig};
        for (int j = 0; j < 7; j++) mf_release(all[j]);
      }
    }
  }
  mf_cuda_set_tf32(was);
}

/* ---- gather, scatter_add, index_select ------------------------------------------------------- */

/* an int64 index of `shape` with entries in [0, n) (or one out of range) */
static mf_tensor *make_index(int nd, const int64_t *shape, int64_t n, bool one_bad) {
  int64_t cnt = mf_shape_numel(nd, shape);
  int64_t *h = malloc((size_t)(cnt ? cnt : 1) * sizeof *h);
  for (int64_t i = 0; i < cnt; i++) h[i] = (int64_t)(next_unit() * (double)n);
  if (one_bad && cnt) h[cnt / 2] = n + 3;
  mf_tensor *t = NULL;
  if (mf_from_host(nd, shape, MF_I64, h, NULL, &t) != MF_OK) t = NULL;
  free(h);
  return t;
}

typedef struct gather_arg {
  int dim;
  const mf_tensor *index; /* on the device of the data: set per side by gather_fn */
  const mf_tensor *gindex;
  int64_t base; /* what the index's values count from */
} gather_arg;

static mf_status gather_fn(mf_tensor *const *in, const void *arg, mf_tensor **out) {
  const gather_arg *a = arg;
  bool on_gpu_side = mf_device_kind(mf_tensor_device(in[0])) == MF_DEV_CUDA;
  return mf_gather_from(in[0], a->dim, on_gpu_side ? a->gindex : a->index, a->base, out);
}

/* t + 1 (int64): an index counted from 1 */
static mf_tensor *plus_one(const mf_tensor *t) {
  mf_tensor *one = NULL, *r = NULL;
  if (mf_scalar(1, MF_I64, true, mf_tensor_device(t), &one) || mf_add(t, one, &r)) r = NULL;
  mf_release(one);
  return r;
}

/* Every binary op with a host number on either side, over the dtypes; gradients where they
 * exist. Then: a host number only as a wrapped 0-d CPU tensor (any other CPU tensor beside a GPU
 * one is still an error), and where() uploads one. */
static void test_host_numbers(void) {
  int64_t sa[2] = {5, 7};
  static const mf_dtype dts[5] = {MF_F32, MF_F64, MF_I64, MF_I32, MF_U8};
  static const mf_op ops[13] = {
      MF_OP_ADD,          MF_OP_SUB,     MF_OP_MUL,        MF_OP_DIV, MF_OP_POW,
      MF_OP_MAXIMUM,      MF_OP_MINIMUM, MF_OP_REMAINDER,  MF_OP_EQ,  MF_OP_GT,
      MF_OP_FLOOR_DIVIDE, MF_OP_LE,      MF_OP_LOGICAL_AND};
  for (int d = 0; d < 5; d++)
    for (int k = 0; k < 13; k++)
      for (int form = 0; form < 4; form++) { /* integer / float number, right / left */
        mf_dtype dt = dts[d];
        mf_op op = ops[k];
        bool flt = mf_dtype_is_float(dt), left = form >= 2;
        bool divides = op == MF_OP_DIV || op == MF_OP_REMAINDER || op == MF_OP_FLOOR_DIVIDE;
        if (op == MF_OP_POW && !flt) continue;
        if (left && divides && !flt) continue; /* integer division by the tensor's zeros */
        num_arg a = {op, form % 2 ? 2.5 : 3, form % 2 ? MF_F64 : MF_I64, left};
        mf_tensor *x = make(2, sa, dt, (left && divides) || op == MF_OP_POW ? V_POS : V_REAL);
        bool diff[1] = {flt && op < MF_OP_REMAINDER};
        char what[120];
        snprintf(what, sizeof what, "%s %s %s %s (host number)",
                 left ? "number" : mf_dtype_name(dt), mf_op_name(op),
                 left ? mf_dtype_name(dt) : "number", form % 2 ? "2.5" : "3");
        parity(what, num_fn, &a, 1, &x, diff, ftols(dt, 10));
        mf_release(x);
      }
  /* float16 beside a float number: the value converted on the device */
  mf_tensor *x = make(2, sa, MF_F32, V_EIGHTHS), *gx = on_gpu(x), *h = NULL, *n = NULL, *o = NULL;
  if (test_kind == MF_DEV_CUDA) {
    CHECK_OK(mf_cast(gx, MF_F16, &h));
    CHECK_OK(mf_scalar(0.5, MF_F64, true, NULL, &n));
    CHECK_OK(mf_mul(h, n, &o));
    CHECK(o && o->dtype == MF_F16 && mf_device_kind(mf_tensor_device(o)) == MF_DEV_CUDA);
    mf_tensor *want = NULL;
    num_arg a = {MF_OP_MUL, 0.5, MF_F64, false};
    CHECK_OK(num_fn(&x, &a, &want));
    CHECK(same("float16 * host number", want, o, 0, 0)); /* k/16: exact */
    mf_release(want);
    MF_DROP(o);
    MF_DROP(n);
    MF_DROP(h);
  }
  /* not a wrapped number: still an error; where() uploads a host number */
  CHECK_OK(mf_scalar(2, MF_F32, false, NULL, &n));
  if (test_kind == MF_DEV_CUDA)
    CHECK_FAILS(mf_mul(gx, n, &o), MF_ERR_DEVICE, "different devices (cuda:0 and cpu)");
  MF_DROP(n);
  mf_tensor *c = NULL, *w = NULL, *wg = NULL;
  CHECK_OK(mf_scalar(-1, MF_F64, true, NULL, &n));
  CHECK_OK(mf_binary(MF_OP_GT, gx, n, &c));
  CHECK_OK(mf_where(c, gx, n, &wg));
  mf_tensor *cc = NULL;
  CHECK_OK(mf_binary(MF_OP_GT, x, n, &cc));
  CHECK_OK(mf_where(cc, x, n, &w));
  CHECK(same("where(x > number, x, number), the number uploaded", w, wg, 0, 0));
  mf_tensor *all[7] = {x, gx, n, c, w, wg, cc};
  for (int j = 0; j < 7; j++) mf_release(all[j]);
  cases_run++;
}

static void test_gather(void) {
  int64_t xs[3] = {4, 7, 5};
  static const mf_dtype dts[8] = {MF_F32, MF_F64, MF_I32, MF_I64, MF_U8, MF_BOOL, MF_F32, MF_F64};
  for (int dim = 0; dim < 3; dim++) {
    int64_t is[3] = {3, 6, 4};
    is[dim] = 9; /* longer than x along dim: indices repeat */
    mf_tensor *idx = make_index(3, is, xs[dim], false), *gidx = on_gpu(idx);
    for (int k = 0; k < 6; k++) {
      mf_dtype dt = dts[k];
      mf_tensor *x = make(3, xs, dt, V_REAL);
      gather_arg a = {dim, idx, gidx, 0};
      bool diff[1] = {mf_dtype_is_float(dt)};
      char what[120];
      snprintf(what, sizeof what, "gather %s dim %d (backward: scatter_add)", mf_dtype_name(dt),
               dim + 1);
      parity(what, gather_fn, &a, 1, &x, diff, (tol){0, 0, 1e-5, 1e-6});
      if (k == 0) { /* the same positions counted from 1, as Lua's */
        mf_tensor *idx1 = plus_one(idx), *gidx1 = plus_one(gidx);
        gather_arg a1 = {dim, idx1, gidx1, 1};
        snprintf(what, sizeof what, "gather %s dim %d, index from 1 (backward: scatter_add)",
                 mf_dtype_name(dt), dim + 1);
        parity(what, gather_fn, &a1, 1, &x, diff, (tol){0, 0, 1e-5, 1e-6});
        mf_tensor *src = make(3, is, dt, V_REAL), *gsrc = on_gpu(src), *og = NULL, *og1 = NULL;
        CHECK_OK(mf_scatter_add(3, xs, dim, gidx, gsrc, &og));
        CHECK_OK(mf_scatter_add_from(3, xs, dim, gidx1, 1, gsrc, &og1));
        snprintf(what, sizeof what, "scatter_add %s dim %d, index from 1 = from 0",
                 mf_dtype_name(dt), dim + 1);
        bool ok = same(what, og, og1, 1e-6, 1e-6); /* atomics: any order */
        CHECK(ok);
        printf("  %-72s %s\n", what, ok ? "ok" : "FAILED");
        cases_run++;
        mf_tensor *all[6] = {idx1, gidx1, src, gsrc, og, og1};
        for (int j = 0; j < 6; j++) mf_release(all[j]);
      }
      mf_release(x);
      /* scatter_add directly, integer dtypes included */
      if (dt != MF_BOOL) {
        mf_tensor *src = make(3, is, dt, V_SMALLINT), *gsrc = on_gpu(src), *oc = NULL, *og = NULL;
        CHECK_OK(mf_scatter_add(3, xs, dim, idx, src, &oc));
        CHECK_OK(mf_scatter_add(3, xs, dim, gidx, gsrc, &og));
        snprintf(what, sizeof what, "scatter_add %s dim %d", mf_dtype_name(dt), dim + 1);
        bool ok = same(what, oc, og, 0, 0); /* small integers: exact in any order */
        CHECK(ok);
        printf("  %-72s %s\n", what, ok ? "ok" : "FAILED");
        cases_run++;
        mf_release(src);
        mf_release(gsrc);
        mf_release(oc);
        mf_release(og);
      }
    }
    mf_release(idx);
    mf_release(gidx);
  }
  /* out-of-range indices: the GPU finds them as it runs, the next synchronisation reports the
   * first (1-based, as Lua sees it) and clears it, and the GPU still works afterwards (the CPU
   * against itself: the calls fail at once) */
  int64_t is[2] = {3, 4}, xs2[2] = {3, 5};
  mf_tensor *bad = make_index(2, is, 5, true), *gbad = on_gpu(bad);
  mf_tensor *x = make(2, xs2, MF_F32, V_REAL), *gx = on_gpu(x), *o = NULL, *o2 = NULL;
  mf_tensor *sum = NULL, *ok = NULL;
  mf_device *gpu = mf_tensor_device(gx);
  if (test_kind == MF_DEV_CPU) {
    CHECK_FAILS(mf_gather(gx, 1, gbad, &o), MF_ERR_INDEX, "gather: index 8 is out of range");
    CHECK_FAILS(mf_scatter_add(2, xs2, 1, gbad, gx, &o2), MF_ERR_INDEX,
                "scatter_add: index 8 is out of range");
  } else {
    CHECK_OK(mf_gather(gx, 1, gbad, &o));
    CHECK_FAILS(mf_device_synchronize(gpu), MF_ERR_INDEX,
                "gather: index 9 is out of range 1..5 for dimension 2 (found by cuda:0");
    CHECK_OK(mf_device_synchronize(gpu));
    CHECK_OK(mf_scatter_add(2, xs2, 1, gbad, gx, &o2));
    double v = 0; /* a download reports it too */
    CHECK_OK(mf_reduce(MF_OP_SUM, o2, MF_ALL_DIMS, false, &sum));
    CHECK_FAILS(mf_item(sum, &v), MF_ERR_INDEX, "scatter_add: index 9 is out of range 1..5");
  }
  /* counted from 1, a 0 is out of range and named as given */
  mf_tensor *zero = NULL, *gz = NULL, *o3 = NULL;
  int64_t zs[2] = {3, 1};
  CHECK_OK(mf_zeros(2, zs, MF_I64, NULL, &zero));
  gz = on_gpu(zero);
  if (test_kind == MF_DEV_CPU) {
    CHECK_FAILS(mf_gather_from(gx, 1, gz, 1, &o3), MF_ERR_INDEX, "gather: index 0 is out of range");
  } else {
    CHECK_OK(mf_gather_from(gx, 1, gz, 1, &o3));
    CHECK_FAILS(mf_device_synchronize(gpu), MF_ERR_INDEX,
                "gather: index 0 is out of range 1..5 for dimension 2 (found by cuda:0");
  }
  mf_release(zero);
  mf_release(gz);
  mf_release(o3);
  CHECK_OK(mf_unary(MF_OP_NEG, gx, &ok));
  CHECK_OK(mf_device_synchronize(gpu));
  mf_tensor *all[4] = {o, o2, sum, ok};
  for (int j = 0; j < 4; j++) mf_release(all[j]);
  mf_release(bad);
  mf_release(gbad);
  mf_release(x);
  mf_release(gx);
  cases_run++;
}

static void test_index_select(void) {
  int64_t xs[3] = {6, 4, 3}, n[1] = {8};
  for (int dim = 0; dim < 3; dim++) {
    for (int it = 0; it < 2; it++) {
      mf_tensor *i64 = make_index(1, n, xs[dim], false), *idx = NULL;
      if (it)
        CHECK_OK(mf_cast(i64, MF_I32, &idx));
      else
        idx = mf_retain(i64);
      mf_tensor *x = make(3, xs, MF_F32, V_REAL), *gx = on_gpu(x), *gi = on_gpu(idx);
      mf_tensor *oc = NULL, *og = NULL;
      CHECK_OK(mf_index_select(x, dim, idx, &oc));
      CHECK_OK(mf_index_select(gx, dim, gi, &og));
      char what[96];
      snprintf(what, sizeof what, "index_select dim %d, %s index", dim + 1,
               mf_dtype_name(idx->dtype));
      bool ok = same(what, oc, og, 0, 0);
      CHECK(ok);
      printf("  %-72s %s\n", what, ok ? "ok" : "FAILED");
      cases_run++;
      mf_tensor *all[7] = {i64, idx, x, gx, gi, oc, og};
      for (int j = 0; j < 7; j++) mf_release(all[j]);
    }
  }
  mf_tensor *bad = make_index(1, n, 6, true), *gbad = on_gpu(bad);
  mf_tensor *x = make(3, xs, MF_F32, V_REAL), *gx = on_gpu(x), *o = NULL;
  if (test_kind == MF_DEV_CPU) {
    CHECK_FAILS(mf_index_select(gx, 0, gbad, &o), MF_ERR_INDEX, "index_select: index 10 ");
  } else {
    CHECK_OK(mf_index_select(gx, 0, gbad, &o));
    CHECK_FAILS(mf_device_synchronize(mf_tensor_device(gx)), MF_ERR_INDEX,
                "index_select: index 10 is out of range 1..6 for dimension 1");
  }
  mf_release(o);
  mf_release(bad);
  mf_release(gbad);
  mf_release(x);
  mf_release(gx);
}

/* ---- losses (xent_fn: test_cuda.h) ------------------------------------------------------------
 */

static void test_losses(void) {
  /* (50, 10): the tutorial's; (7, 300): rows of many threads; composed, fused, fused smoothed */
  int64_t shapes[2][2] = {{50, 10}, {7, 300}};
  for (int sh = 0; sh < 2; sh++)
    for (int dd = 0; dd < 2; dd++)
      for (int how = 0; how < 3; how++) {
        mf_dtype dt = dd ? MF_F64 : MF_F32;
        int64_t *zs = shapes[sh], ls[2] = {zs[0], 1};
        mf_tensor *z = make(2, zs, dt, V_REAL), *lab = make_index(2, ls, zs[1], false),
                  *glab = on_gpu(lab);
        xent_arg a = {lab, glab, how > 0, how == 2 ? 0.1 : 0};
        bool diff[1] = {true};
        char what[96];
        snprintf(what, sizeof what, "cross-entropy %s %lldx%lld (%s)", mf_dtype_name(dt),
                 (long long)zs[0], (long long)zs[1],
                 how == 0   ? "log_softmax, gather, mean"
                 : how == 1 ? "fused"
                            : "fused, label smoothing 0.1");
        parity(what, xent_fn, &a, 1, &z, diff, ftols(dt, 10));
        if (how == 1) { /* fused = composed, on the GPU */
          mf_tensor *gz = on_gpu(z), *o1 = NULL, *o2 = NULL;
          xent_arg c = {lab, glab, false, 0};
          CHECK_OK(xent_fn(&gz, &a, &o1));
          CHECK_OK(xent_fn(&gz, &c, &o2));
          snprintf(what, sizeof what, "cross-entropy %s %lldx%lld fused = composed",
                   mf_dtype_name(dt), (long long)zs[0], (long long)zs[1]);
          bool ok = same(what, o1, o2, dd ? 1e-13 : 1e-6, dd ? 1e-13 : 1e-6);
          CHECK(ok);
          printf("  %-72s %s\n", what, ok ? "ok" : "FAILED");
          cases_run++;
          mf_release(gz);
          mf_release(o1);
          mf_release(o2);
        }
        mf_release(z);
        mf_release(lab);
        mf_release(glab);
      }
  /* a class index out of range: a NaN loss and, on a GPU, the next synchronisation's report */
  int64_t zs[2] = {3, 4}, n[1] = {3};
  int64_t bad[3] = {1, 4, 0};
  mf_tensor *z = make(2, zs, MF_F32, V_REAL), *gz = on_gpu(z), *t = NULL, *gt = NULL, *o = NULL;
  CHECK_OK(mf_from_host(1, n, MF_I64, bad, mf_cpu(), &t));
  gt = on_gpu(t);
  if (test_kind == MF_DEV_CPU) {
    CHECK_FAILS(mf_cross_entropy(gz, gt, 0, 0, &o), MF_ERR_INDEX,
                "cross_entropy: class index 4 is out of range 0..3");
  } else {
    CHECK_OK(mf_cross_entropy(gz, gt, 0, 0, &o));
    CHECK_FAILS(mf_device_synchronize(mf_tensor_device(gz)), MF_ERR_INDEX,
                "cross_entropy: class index 4 is out of range 0..3 (found by cuda:0");
    double v[3];
    CHECK_OK(mf_to_host(o, MF_F64, v));
    CHECK(!isnan(v[0]) && isnan(v[1]) && !isnan(v[2]));
    MF_DROP(o);
  }
  CHECK_FAILS(mf_cross_entropy(gz, gt, 2, 0, &o), MF_ERR_ARG, "count from 0 or 1");
  CHECK_FAILS(mf_cross_entropy(gz, gz, 0, 0, &o), MF_ERR_DTYPE, "int64 class indices");
  CHECK_FAILS(mf_cross_entropy(gz, gt, 0, 1.5, &o), MF_ERR_ARG, "label_smoothing");
  mf_tensor *all[4] = {z, gz, t, gt};
  for (int j = 0; j < 4; j++) mf_release(all[j]);
  cases_run++;
}

/* ---- batch normalisation (cuDNN) ------------------------------------------------------------ */

static void test_batch_norm(void) {
  /* (70001, 3): more rows than one cuDNN inference call takes (65535): two chunks */
  int64_t shapes[4][4] = {{8, 5, 1, 1}, {4, 6, 7, 5}, {50, 32, 14, 14}, {70001, 3, 1, 1}};
  int nds[4] = {2, 4, 4, 2};
  for (int dd = 0; dd < 2; dd++) {
    mf_dtype dt = dd ? MF_F64 : MF_F32;
    for (int si = 0; si < 4; si++) {
      int nd = nds[si];
      int64_t *xs = shapes[si], cs[1] = {xs[1]};
      double tol = dd ? 1e-10 : 1e-4;
      mf_tensor *x = make(nd, xs, dt, V_REAL), *w = make(1, cs, dt, V_POS),
                *b = make(1, cs, dt, V_REAL), *rm = make(1, cs, dt, V_REAL),
                *rv = make(1, cs, dt, V_POS);
      mf_tensor *gx = on_gpu(x), *gw = on_gpu(w), *gb = on_gpu(b), *grm = on_gpu(rm),
                *grv = on_gpu(rv);
      char what[160], shape[96];
      snprintf(what, sizeof what, "batch_norm %s x %s (training)", mf_dtype_name(dt),
               mf_shape_fmt(nd, xs, shape, sizeof shape));
      /* training: y, save_stats, and the running stats updated in place */
      mf_tensor *yc = NULL, *yg = NULL, *sc = NULL, *sg = NULL;
      CHECK_OK(mf_batch_norm(x, w, b, rm, rv, true, 0.1, 1e-5, &yc, &sc));
      CHECK_OK(mf_batch_norm(gx, gw, gb, grm, grv, true, 0.1, 1e-5, &yg, &sg));
      bool ok = same(what, yc, yg, tol, tol) && same("batch_norm save_stats", sc, sg, tol, tol) &&
                same("batch_norm running_mean", rm, grm, tol, tol) &&
                same("batch_norm running_var", rv, grv, tol, tol);
      CHECK(ok);
      printf("  %-72s %s\n", what, ok ? "ok" : "FAILED");
      /* inference from the updated running stats */
      mf_tensor *ic = NULL, *ig = NULL;
      CHECK_OK(mf_batch_norm(x, w, b, rm, rv, false, 0.1, 1e-5, &ic, NULL));
      CHECK_OK(mf_batch_norm(gx, gw, gb, grm, grv, false, 0.1, 1e-5, &ig, NULL));
      snprintf(what, sizeof what, "batch_norm %s x %s (inference)", mf_dtype_name(dt), shape);
      ok = same(what, ic, ig, tol, tol);
      CHECK(ok);
      printf("  %-72s %s\n", what, ok ? "ok" : "FAILED");
      /* backward */
      mf_tensor *dy = make(nd, xs, dt, V_REAL), *gdy = on_gpu(dy);
      mf_tensor *d[2][3] = {{NULL, NULL, NULL}, {NULL, NULL, NULL}};
      if (sc && sg) {
        CHECK_OK(mf_batch_norm_backward(dy, x, w, sc, &d[0][0], &d[0][1], &d[0][2]));
        CHECK_OK(mf_batch_norm_backward(gdy, gx, gw, sg, &d[1][0], &d[1][1], &d[1][2]));
      }
      /* dweight and dbias are sums over n values per channel: rounding grows like sqrt(n) */
      double n = sqrt((double)mf_numel(x) / (double)xs[1]);
      snprintf(what, sizeof what, "batch_norm_backward %s x %s", mf_dtype_name(dt), shape);
      ok = same("batch_norm_backward dx", d[0][0], d[1][0], tol, tol) &&
           same("batch_norm_backward dweight", d[0][1], d[1][1], tol * n, tol) &&
           same("batch_norm_backward dbias", d[0][2], d[1][2], tol * n, tol);
      CHECK(ok);
      printf("  %-72s %s\n", what, ok ? "ok" : "FAILED");
      cases_run += 3;
      mf_tensor *all[18] = {x, w, b, rm, rv, gx, gw, gb, grm, grv, yc, yg, sc, sg, ic, ig, dy, gdy};
      for (int k = 0; k < 18; k++) mf_release(all[k]);
      for (int k = 0; k < 6; k++) mf_release(d[k / 3][k % 3]);
    }
  }
  /* training on more rows than cuDNN's batch norm takes (880801): refused as not supported, which
   * sends F.batch_norm to its composed form (gpu_training_spec checks that); the CPU takes it */
  if (test_kind != MF_DEV_CUDA) return;
  int64_t big[2] = {880802, 1};
  mf_tensor *x = NULL, *gx = NULL, *y = NULL, *st = NULL;
  CHECK_OK(mf_zeros(2, big, MF_F32, NULL, &x));
  gx = on_gpu(x);
  mf_status s = mf_batch_norm(gx, NULL, NULL, NULL, NULL, true, 0.1, 1e-5, &y, &st);
  CHECK(s == MF_ERR_UNSUPPORTED && y == NULL && strstr(mf_error(), "batch_norm: not supported on"));
  mf_tensor *all[4] = {x, gx, y, st};
  for (int k = 0; k < 4; k++) mf_release(all[k]);
}

/* ---- finite-difference gradient checks on the GPU (float64) ---------------------------------- */

typedef struct net_arg {
  mf_pool2d_params conv, pool;
  const mf_tensor *r; /* GPU weights of the outputs */
} net_arg;

/* loss = sum(r * avg_pool(max_pool(conv2d(x, w, b)))) on the GPU */
static mf_status net_loss(const mf_tensor *x, const mf_tensor *w, const mf_tensor *b,
                          const net_arg *a, mf_tensor **loss) {
  mf_tensor *y = NULL, *m = NULL, *v = NULL, *p = NULL;
  mf_pool2d_params avg = {.kernel = {2, 2}, .stride = {1, 1}, .pad = {0, 0, 1, 1}};
  mf_status s = mf_conv2d(x, w, b, &a->conv, &y);
  if (!s) s = mf_max_pool2d(y, &a->pool, &m, NULL);
  if (!s) s = mf_avg_pool2d(m, &avg, &v);
  if (!s) s = mf_mul(v, a->r, &p);
  if (!s) s = mf_reduce(MF_OP_SUM, p, MF_ALL_DIMS, false, loss);
  mf_release(y);
  mf_release(m);
  mf_release(v);
  mf_release(p);
  return s;
}

static double loss_value(const mf_tensor *x, const mf_tensor *w, const mf_tensor *b,
                         const net_arg *a) {
  mf_tensor *l = NULL;
  double v = NAN;
  if (net_loss(x, w, b, a, &l) == MF_OK) mf_item(l, &v);
  mf_release(l);
  return v;
}

static void test_gradcheck(void) {
  int64_t xs[4] = {2, 2, 6, 5}, ws[4] = {3, 2, 3, 3}, bs[1] = {3};
  net_arg a = {.conv = {.stride = {1, 1}, .pad = {1, 1, 1, 1}},
               .pool = {.kernel = {2, 2}, .stride = {2, 2}, .pad = {0, 0, 0, 1}}};
  mf_tensor *cpu[3] = {make(4, xs, MF_F64, V_REAL), make(4, ws, MF_F64, V_REAL),
                       make(1, bs, MF_F64, V_REAL)};
  mf_tensor *leaf[3], *loss = NULL;
  for (int i = 0; i < 3; i++) {
    leaf[i] = on_gpu(cpu[i]);
    CHECK_OK(mf_set_requires_grad(leaf[i], true));
  }
  /* r: the forward's output shape (2, 3, 3, 3) */
  int64_t rs[4] = {2, 3, 3, 3};
  mf_tensor *r = make(4, rs, MF_F64, V_REAL);
  a.r = on_gpu(r);
  CHECK_OK(net_loss(leaf[0], leaf[1], leaf[2], &a, &loss));
  CHECK_OK(mf_backward(loss, NULL, false));
  const char *names[3] = {"x", "w", "b"};
  bool was = mf_set_grad_enabled(false);
  for (int i = 0; i < 3; i++) {
    int64_t n = mf_numel(cpu[i]);
    double *h = malloc((size_t)n * sizeof *h), *g = malloc((size_t)n * sizeof *g);
    CHECK_OK(mf_to_host(cpu[i], MF_F64, h));
    CHECK_OK(mf_to_host(leaf[i]->grad, MF_F64, g));
    int bad = 0;
    double worst = 0;
    for (int64_t k = 0; k < n; k++) {
      const double eps = 1e-6;
      double keep = h[k], f[2];
      for (int sgn = 0; sgn < 2; sgn++) {
        h[k] = keep + (sgn ? -eps : eps);
        mf_tensor *t = NULL;
        CHECK_OK(mf_from_host(cpu[i]->ndim, cpu[i]->shape, MF_F64, h, gpu, &t));
        const mf_tensor *in[3] = {leaf[0], leaf[1], leaf[2]};
        in[i] = t;
        f[sgn] = loss_value(in[0], in[1], in[2], &a);
        mf_release(t);
      }
      h[k] = keep;
      double num = (f[0] - f[1]) / (2 * eps), err = fabs(num - g[k]) / (1 + fabs(num));
      if (err > worst) worst = err;
      if (err > 1e-6 && bad++ < 3)
        fprintf(stderr, "gradcheck %s[%lld]: autograd %.9g, finite differences %.9g\n", names[i],
                (long long)k, g[k], num);
    }
    CHECK(bad == 0);
    char what[120];
    snprintf(what, sizeof what, "gradcheck on %s: d loss / d %s%s", mf_device_name(gpu), names[i],
             i == 0 ? " (conv2d, max_pool2d, avg_pool2d)" : "");
    printf("  %-72s %s (worst %.1e)\n", what, bad ? "FAILED" : "ok", worst);
    cases_run++;
    free(h);
    free(g);
  }
  mf_set_grad_enabled(was);
  for (int i = 0; i < 3; i++) {
    mf_release(cpu[i]);
    mf_release(leaf[i]);
  }
  mf_release(loss);
  mf_release(r);
  mf_release((mf_tensor *)a.r);
}

int main(void) {
  int n = mf_cuda_device_count();
  if (n == 0 || mf_device_get("cuda:0", &gpu) != MF_OK) {
    mf_device *d = NULL;
    mf_status s = mf_device_get("cuda:0", &d);
    CHECK(s == MF_ERR_DEVICE && d == NULL); /* no GPU is a clear error, not a crash */
    printf("# skipped: no CUDA device (%s)\n", mf_error());
    /* the cases still run, the CPU against itself: their own code (shapes, front-end checks,
     * finite-difference gradients, releases) is checked where CI has no GPU */
    gpu = mf_cpu();
    test_kind = MF_DEV_CPU;
    printf("# the cases on the CPU against itself (NHWC kernel calls left out)\n");
  } else {
    int rt = 0, drv = 0, dnn = 0;
    have_cudnn = mf_cuda_versions(&rt, &drv, &dnn) == MF_OK && dnn > 0;
    printf("# parity on %s (%d CUDA device%s%s)\n", mf_device_name(gpu), n, n == 1 ? "" : "s",
           have_cudnn ? "" : ", no cuDNN: conv2d, batch_norm and the gradient check skipped");
  }
  int skipped = 0;
  test_autograd_ops();
  if (have_cudnn) test_conv2d();
  if (have_cudnn && test_kind == MF_DEV_CUDA) test_conv2d_nhwc(); /* CPU kernels: NCHW only */
  test_pool();
  test_channels_last(); /* without a GPU: the CPU's channels-last kernels against its NCHW ones */
  test_host_numbers();
  test_gather();
  test_index_select();
  test_losses();
  if (have_cudnn) test_batch_norm();
  if (have_cudnn) test_gradcheck(); /* through conv2d */
  if (!have_cudnn) skipped += 5;    /* those four groups and channels-last conv2d */
  CHECK(mf_device_synchronize(gpu) == MF_OK);
  printf("# %d parity cases\n", cases_run);
  CHECK(mf_storage_bytes() == 0); /* every tensor released */
  int r = test_summary();
  if (test_kind != MF_DEV_CUDA) skipped = 10; /* the GPU groups above */
  if (skipped) printf("# skipped %d\n", skipped);
  return r;
}
