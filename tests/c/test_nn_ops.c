/* test_nn_ops.c — the neural-network ops of ops_nn.c and their CPU kernels:
 * - conv2d forward, backward-input and backward-weight against plain double-precision loops, in
 *   float32 and float64, over strides 1 and 2, "same", valid and asymmetric padding, 1x1 and
 *   single-channel kernels, odd sizes, batch > 1, several thread counts; the backwards also
 *   against central finite differences of the forward in float64;
 * - max pooling (values, indices, backward; the 2x2 fast path; NaN) and average pooling (with and
 *   without count_include_pad) against loops, and finite differences;
 * - softmax / log_softmax and their backwards along the last, first and middle dims, long rows,
 *   wide inner blocks, extreme values; finite differences;
 * - gather and scatter_add (dims, smaller index, duplicates, integer dtypes, range errors);
 * - the dropout mask (values, rate, reproducibility, agreement with mf_rand's numbers);
 * - channels-last activations (an (N, C, H, W) view of an NHWC tensor, what data_format = "NHWC"
 *   passes): every conv and pool case again with x and dy stored so, their results stored so
 *   too, a mixed-layout weight gradient and the gradients through autograd (the bias included);
 * - non-contiguous inputs, empty batches, mf_same_padding, error messages;
 * - PyTorch's values for a few cases (nn_reference.h, made by tests/tools/gen_nn_reference.py). */
#include <stdint.h>
#include <stdlib.h>

#include "nn_reference.h"
#include "test.h"

/* ---- helpers --------------------------------------------------------------------------------- */

#define DROP(t) (mf_release(t), (t) = NULL)

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) { /* xorshift64*, [0, 1) */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static double *randv(int64_t n) { /* uniform in [-1, 1) */
  double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
  for (int64_t i = 0; i < n; i++) v[i] = 2 * urand() - 1;
  return v;
}

static int64_t numel(int nd, const int64_t *s) {
  int64_t n = 1;
  for (int d = 0; d < nd; d++) n *= s[d];
  return n;
}

/* A tensor of dtype dt (float32/float64/int64/int32) holding v (rounded to dt). */
static mf_tensor *make(int nd, const int64_t *shape, mf_dtype dt, const double *v) {
  int64_t n = numel(nd, shape);
  void *buf = malloc((size_t)(n ? n : 1) * 8);
  for (int64_t i = 0; i < n; i++) {
    switch (dt) {
    case MF_F32: ((float *)buf)[i] = (float)v[i]; break;
    case MF_I64: ((int64_t *)buf)[i] = (int64_t)v[i]; break;
    case MF_I32: ((int32_t *)buf)[i] = (int32_t)v[i]; break;
    default: ((double *)buf)[i] = v[i]; break;
    }
  }
  mf_tensor *t = NULL;
  CHECK_OK(mf_from_host(nd, shape, dt, buf, NULL, &t));
  free(buf);
  return t;
}

static mf_tensor *make4(const int64_t *shape, mf_dtype dt, const double *v) {
  return make(4, shape, dt, v);
}

/* make4, or with cl an (N, C, H, W) view of an (N, H, W, C) tensor holding the same values (the
 * permutation data_format = "NHWC" makes) */
static mf_tensor *make4_as(const int64_t *shape, mf_dtype dt, const double *v, bool cl) {
  if (!cl) return make4(shape, dt, v);
  int64_t N = shape[0], C = shape[1], H = shape[2], W = shape[3], nhwc[4] = {N, H, W, C};
  double *u = malloc(sizeof(double) * (size_t)(numel(4, shape) ? numel(4, shape) : 1));
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t h = 0; h < H; h++)
        for (int64_t w = 0; w < W; w++)
          u[((n * H + h) * W + w) * C + c] = v[((n * C + c) * H + h) * W + w];
  mf_tensor *t = make4(nhwc, dt, u), *r = NULL;
  const int perm[4] = {0, 3, 1, 2};
  CHECK_OK(mf_permute(t, perm, &r));
  mf_release(t);
  free(u);
  return r;
}

/* whether t (N, C, H, W) is stored exactly as an (N, H, W, C) tensor */
static bool stored_cl(const mf_tensor *t) {
  if (!t || t->ndim != 4) return false;
  int64_t C = t->shape[1], H = t->shape[2], W = t->shape[3];
  return t->stride[1] == 1 && t->stride[3] == C && t->stride[2] == W * C &&
         t->stride[0] == H * W * C;
}

/* The values of t as doubles (malloc'd). */
static double *values(const mf_tensor *t) {
  int64_t n = mf_numel(t);
  double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
  CHECK_OK(mf_to_host(t, MF_F64, v));
  return v;
}

/* Compares n values; one CHECK for the whole array, the first mismatch printed. */
static void check_values(const char *what, const double *got, const double *want, int64_t n,
                         double atol, double rtol) {
  int64_t bad = -1, nbad = 0;
  for (int64_t i = 0; i < n; i++) {
    double a = got[i], b = want[i];
    bool ok =
        fabs(a - b) <= atol + rtol * fabs(b) || (isnan(a) && isnan(b)) || (isinf(a) && a == b);
    if (!ok && nbad++ == 0) bad = i;
  }
  if (nbad) {
    t_failed++;
    fprintf(stderr, "%s: %lld of %lld values differ; first at %lld: %.10g, expected %.10g\n", what,
            (long long)nbad, (long long)n, (long long)bad, got[bad], want[bad]);
  } else {
    t_passed++;
  }
}

/* Compares tensor t with want (n = numel(t)), and its shape with shape (nd dims). */
static void check_tensor(const char *what, const mf_tensor *t, int nd, const int64_t *shape,
                         const double *want, double atol, double rtol) {
  if (!t) {
    t_failed++;
    fprintf(stderr, "%s: no tensor\n", what);
    return;
  }
  bool same = t->ndim == nd;
  for (int d = 0; same && d < nd; d++) same = t->shape[d] == shape[d];
  if (!same) {
    char a[96], b[96] = "";
    for (int d = 0; d < nd; d++)
      snprintf(b + strlen(b), sizeof b - strlen(b), d ? "x%lld" : "%lld", (long long)shape[d]);
    t_failed++;
    fprintf(stderr, "%s: shape %s, expected %s\n", what, mf_shape_str(t, a, sizeof a), b);
    return;
  }
  double *v = values(t);
  check_values(what, v, want, mf_numel(t), atol, rtol);
  free(v);
}

static double tol(mf_dtype dt) { return dt == MF_F32 ? 2e-5 : 1e-11; }

static double max_abs(const double *v, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(v[i]));
  return m;
}

static mf_pool2d_params geometry(int kh, int kw, int sh, int sw, int pt, int pl, int pb, int pr) {
  mf_pool2d_params p = {.kernel = {kh, kw}, .stride = {sh, sw}, .pad = {pt, pl, pb, pr}};
  return p;
}

/* ---- convolution: reference loops ------------------------------------------------------------ */

typedef struct conv_case {
  int64_t N, C, H, W, O, KH, KW;
  int sh, sw, pt, pl, pb, pr;
  bool bias;
} conv_case;

static int64_t out_dim(int64_t in, int64_t k, int s, int a, int b) {
  return (in + a + b - k) / s + 1;
}

static void ref_conv(const conv_case *k, const double *x, const double *w, const double *b,
                     double *y) {
  int64_t OH = out_dim(k->H, k->KH, k->sh, k->pt, k->pb),
          OW = out_dim(k->W, k->KW, k->sw, k->pl, k->pr);
  for (int64_t n = 0; n < k->N; n++)
    for (int64_t o = 0; o < k->O; o++)
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
          double s = b ? b[o] : 0;
          for (int64_t c = 0; c < k->C; c++)
            for (int64_t i = 0; i < k->KH; i++)
              for (int64_t j = 0; j < k->KW; j++) {
                int64_t ih = oh * k->sh - k->pt + i, iw = ow * k->sw - k->pl + j;
                if (ih < 0 || ih >= k->H || iw < 0 || iw >= k->W) continue;
                s += x[((n * k->C + c) * k->H + ih) * k->W + iw] *
                     w[((o * k->C + c) * k->KH + i) * k->KW + j];
              }
          y[((n * k->O + o) * OH + oh) * OW + ow] = s;
        }
}

/* dx and dw of sum(y * dy) */
static void ref_conv_backward(const conv_case *k, const double *x, const double *w,
                              const double *dy, double *dx, double *dw) {
  int64_t OH = out_dim(k->H, k->KH, k->sh, k->pt, k->pb),
          OW = out_dim(k->W, k->KW, k->sw, k->pl, k->pr);
  memset(dx, 0, sizeof(double) * (size_t)(k->N * k->C * k->H * k->W));
  memset(dw, 0, sizeof(double) * (size_t)(k->O * k->C * k->KH * k->KW));
  for (int64_t n = 0; n < k->N; n++)
    for (int64_t o = 0; o < k->O; o++)
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
          double g = dy[((n * k->O + o) * OH + oh) * OW + ow];
          for (int64_t c = 0; c < k->C; c++)
            for (int64_t i = 0; i < k->KH; i++)
              for (int64_t j = 0; j < k->KW; j++) {
                int64_t ih = oh * k->sh - k->pt + i, iw = ow * k->sw - k->pl + j;
                if (ih < 0 || ih >= k->H || iw < 0 || iw >= k->W) continue;
                int64_t xi = ((n * k->C + c) * k->H + ih) * k->W + iw;
                int64_t wi = ((o * k->C + c) * k->KH + i) * k->KW + j;
                dx[xi] += g * w[wi];
                dw[wi] += g * x[xi];
              }
        }
}

static void test_conv_case(const conv_case *k, mf_dtype dt) {
  char what[160];
  snprintf(what, sizeof what,
           "conv %lldx%lldx%lldx%lld * %lldx%lldx%lldx%lld s%dx%d pad %d,%d,%d,%d %s",
           (long long)k->N, (long long)k->C, (long long)k->H, (long long)k->W, (long long)k->O,
           (long long)k->C, (long long)k->KH, (long long)k->KW, k->sh, k->sw, k->pt, k->pl, k->pb,
           k->pr, mf_dtype_name(dt));
  int64_t xs[4] = {k->N, k->C, k->H, k->W}, ws[4] = {k->O, k->C, k->KH, k->KW}, bs[1] = {k->O};
  int64_t ys[4] = {k->N, k->O, out_dim(k->H, k->KH, k->sh, k->pt, k->pb),
                   out_dim(k->W, k->KW, k->sw, k->pl, k->pr)};
  int64_t nx = numel(4, xs), nw = numel(4, ws), ny = numel(4, ys);
  double *x = randv(nx), *w = randv(nw), *b = randv(k->O), *dy = randv(ny);
  if (dt == MF_F32) { /* the reference sees the float32-rounded inputs */
    for (int64_t i = 0; i < nx; i++) x[i] = (float)x[i];
    for (int64_t i = 0; i < nw; i++) w[i] = (float)w[i];
    for (int64_t i = 0; i < k->O; i++) b[i] = (float)b[i];
    for (int64_t i = 0; i < ny; i++) dy[i] = (float)dy[i];
  }
  double *y = malloc(sizeof(double) * (size_t)(ny ? ny : 1)),
         *dx = malloc(sizeof(double) * (size_t)(nx ? nx : 1)),
         *dw = malloc(sizeof(double) * (size_t)nw);
  ref_conv(k, x, w, k->bias ? b : NULL, y);
  ref_conv_backward(k, x, w, dy, dx, dw);
  mf_pool2d_params p = geometry(0, 0, k->sh, k->sw, k->pt, k->pl, k->pb, k->pr);
  /* float32: a bound on the error relative to the result's scale (Winograd's rounding is about
   * 1e-5 of it); float64: tight */
  double t = tol(dt), sy = dt == MF_F32 ? 2.5 * max_abs(y, ny) : 1,
         sx = dt == MF_F32 ? 2.5 * max_abs(dx, nx) : 1,
         sw = dt == MF_F32 ? 2.5 * max_abs(dw, nw) : 4;
  char msg[240];
  double *db = calloc((size_t)k->O, sizeof(double)); /* the bias gradient: dy summed over n, h, w */
  for (int64_t i = 0; i < ny; i++) db[i / (ys[2] * ys[3]) % k->O] += dy[i];
  /* cl: x and dy stored channels-last (the results must be too, but for dw) */
  for (int cl = 0; cl < 2; cl++) {
    const char *lay = cl ? " channels-last" : "";
    mf_tensor *tx = make4_as(xs, dt, x, cl), *tw = make4(ws, dt, w), *tb = make(1, bs, dt, b),
              *tdy = make4_as(ys, dt, dy, cl), *r = NULL;
    CHECK_OK(mf_conv2d(tx, tw, k->bias ? tb : NULL, &p, &r));
    snprintf(msg, sizeof msg, "%s%s: forward", what, lay);
    check_tensor(msg, r, 4, ys, y, t * sy, t);
    if (cl && ny > 0) CHECK(stored_cl(r));
    DROP(r);
    CHECK_OK(mf_conv2d_backward_input(tdy, tw, xs, &p, &r));
    snprintf(msg, sizeof msg, "%s%s: backward input", what, lay);
    check_tensor(msg, r, 4, xs, dx, t * sx, t);
    if (cl && nx > 0) CHECK(stored_cl(r));
    DROP(r);
    CHECK_OK(mf_conv2d_backward_weight(tdy, tx, ws, &p, &r));
    snprintf(msg, sizeof msg, "%s%s: backward weight", what, lay);
    check_tensor(msg, r, 4, ws, dw, t * sw, t);
    DROP(r);
    if (cl) { /* the weight gradient of a channels-last x and an NCHW dy, and the reverse */
      mf_tensor *ndy = make4(ys, dt, dy), *nx_ = make4(xs, dt, x);
      CHECK_OK(mf_conv2d_backward_weight(ndy, tx, ws, &p, &r));
      snprintf(msg, sizeof msg, "%s: backward weight, x channels-last, dy NCHW", what);
      check_tensor(msg, r, 4, ws, dw, t * sw, t);
      DROP(r);
      CHECK_OK(mf_conv2d_backward_weight(tdy, nx_, ws, &p, &r));
      snprintf(msg, sizeof msg, "%s: backward weight, x NCHW, dy channels-last", what);
      check_tensor(msg, r, 4, ws, dw, t * sw, t);
      DROP(r);
      mf_release(ndy), mf_release(nx_);
    }
    if (cl && k->bias && nx > 0) { /* through autograd: dx, dw and the bias gradient */
      mf_tensor *in[3] = {tx, tw, tb}, *g[3] = {NULL, NULL, NULL};
      for (int i = 0; i < 3; i++) CHECK_OK(mf_set_requires_grad(in[i], true));
      CHECK_OK(mf_conv2d(tx, tw, tb, &p, &r));
      if (r) CHECK_OK(mf_grad(1, &r, &tdy, 3, in, false, false, g));
      snprintf(msg, sizeof msg, "%s: autograd input", what);
      check_tensor(msg, g[0], 4, xs, dx, t * sx, t);
      if (g[0]) CHECK(stored_cl(g[0]));
      snprintf(msg, sizeof msg, "%s: autograd weight", what);
      check_tensor(msg, g[1], 4, ws, dw, t * sw, t);
      snprintf(msg, sizeof msg, "%s: autograd bias", what);
      check_tensor(msg, g[2], 1, bs, db, t * 2.5 * max_abs(db, k->O) + t, t);
      for (int i = 0; i < 3; i++) mf_release(g[i]);
      DROP(r);
    }
    mf_release(tx), mf_release(tw), mf_release(tb), mf_release(tdy);
  }
  free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db);
}

static const conv_case CONV_CASES[] = {
    /* N  C  H   W   O  KH KW sh sw pt pl pb pr bias */
    {2, 1, 28, 28, 4, 5, 5, 1, 1, 2, 2, 2, 2, true}, /* the tutorial's first layer, "same" */
    {3, 4, 14, 14, 5, 5, 5, 1, 1, 2, 2, 2, 2, true}, /* its second layer, smaller */
    {3, 3, 7, 9, 5, 3, 2, 2, 1, 1, 0, 2, 1, true},   /* stride 2x1, asymmetric padding */
    {2, 4, 5, 6, 3, 1, 1, 1, 1, 0, 0, 0, 0, false},  /* 1x1: no im2col */
    {2, 3, 5, 6, 2, 1, 1, 2, 2, 0, 0, 0, 0, true},   /* 1x1 stride 2 */
    {1, 2, 5, 5, 2, 5, 5, 1, 1, 0, 0, 0, 0, true},   /* valid, 1x1 output */
    {2, 2, 10, 10, 3, 3, 3, 2, 2, 0, 0, 1, 1, true}, /* TF "same" with stride 2 */
    {5, 8, 12, 11, 6, 3, 3, 1, 1, 1, 1, 1, 1, true}, /* several images per task */
    {2, 2, 3, 2, 3, 5, 4, 1, 2, 2, 2, 2, 2, false},  /* kernel larger than the input */
    {1, 3, 9, 8, 4, 3, 3, 3, 2, 1, 0, 0, 2, false},  /* stride 3 */
    {7, 2, 6, 5, 3, 2, 2, 2, 2, 0, 0, 0, 0, true},   /* odd batch over the threads */
    /* 5x5 stride 1 with 8+ channels: the float32 Winograd path (winograd.c) */
    {3, 8, 14, 14, 16, 5, 5, 1, 1, 2, 2, 2, 2, true},  /* like the tutorial's second layer */
    {2, 9, 11, 13, 10, 5, 5, 1, 1, 1, 3, 0, 2, true},  /* odd sizes, asymmetric padding */
    {5, 16, 9, 8, 8, 5, 5, 1, 1, 0, 0, 0, 0, false},   /* valid: 5x4 output */
    {3, 12, 20, 21, 12, 5, 5, 1, 1, 2, 2, 2, 2, true}, /* 30 tiles an image */
    {1, 8, 6, 6, 8, 5, 5, 1, 1, 2, 2, 2, 2, true},     /* one image */
    {2, 8, 36, 33, 9, 5, 5, 1, 1, 2, 2, 2, 2, false},  /* many tiles an image */
};

/* Central finite differences of L = sum(conv(x, w) * dy) in float64 against the backwards; cl:
 * x and dy stored channels-last (here C = 3 and stride 2, odd sizes, asymmetric padding). */
static void test_conv_gradcheck(bool cl) {
  conv_case k = {2, 3, 5, 7, 3, 3, 2, 2, 2, 1, 0, 0, 1, true};
  int64_t xs[4] = {k.N, k.C, k.H, k.W}, ws[4] = {k.O, k.C, k.KH, k.KW}, bs[1] = {k.O};
  int64_t ys[4] = {k.N, k.O, out_dim(k.H, k.KH, k.sh, k.pt, k.pb),
                   out_dim(k.W, k.KW, k.sw, k.pl, k.pr)};
  int64_t nx = numel(4, xs), nw = numel(4, ws), ny = numel(4, ys);
  double *x = randv(nx), *w = randv(nw), *b = randv(k.O), *dy = randv(ny);
  mf_pool2d_params p = geometry(0, 0, k.sh, k.sw, k.pt, k.pl, k.pb, k.pr);
  mf_tensor *tb = make(1, bs, MF_F64, b), *tdy = make4_as(ys, MF_F64, dy, cl);
  const double h = 1e-6;
  /* L at (x, w) */
#define LOSS(xv, wv, out)                                                                          \
  do {                                                                                             \
    mf_tensor *tx_ = make4_as(xs, MF_F64, xv, cl), *tw_ = make4(ws, MF_F64, wv), *y_ = NULL;       \
    CHECK_OK(mf_conv2d(tx_, tw_, tb, &p, &y_));                                                    \
    double *yv_ = values(y_), s_ = 0;                                                              \
    for (int64_t q = 0; q < ny; q++) s_ += yv_[q] * dy[q];                                         \
    free(yv_), mf_release(y_), mf_release(tx_), mf_release(tw_);                                   \
    (out) = s_;                                                                                    \
  } while (0)
  double *num = malloc(sizeof(double) * (size_t)(nx > nw ? nx : nw));
  for (int64_t i = 0; i < nx; i++) {
    double keep = x[i], lp, lm;
    x[i] = keep + h;
    LOSS(x, w, lp);
    x[i] = keep - h;
    LOSS(x, w, lm);
    x[i] = keep;
    num[i] = (lp - lm) / (2 * h);
  }
  mf_tensor *tx = make4_as(xs, MF_F64, x, cl), *tw = make4(ws, MF_F64, w), *r = NULL;
  CHECK_OK(mf_conv2d_backward_input(tdy, tw, xs, &p, &r));
  check_tensor(cl ? "conv gradcheck channels-last: input" : "conv gradcheck: input", r, 4, xs, num,
               1e-6, 1e-6);
  DROP(r);
  for (int64_t i = 0; i < nw; i++) {
    double keep = w[i], lp, lm;
    w[i] = keep + h;
    LOSS(x, w, lp);
    w[i] = keep - h;
    LOSS(x, w, lm);
    w[i] = keep;
    num[i] = (lp - lm) / (2 * h);
  }
#undef LOSS
  CHECK_OK(mf_conv2d_backward_weight(tdy, tx, ws, &p, &r));
  check_tensor(cl ? "conv gradcheck channels-last: weight" : "conv gradcheck: weight", r, 4, ws,
               num, 1e-6, 1e-6);
  DROP(r);
  mf_release(tx), mf_release(tw), mf_release(tb), mf_release(tdy);
  free(x), free(w), free(b), free(dy), free(num);
}

static void test_conv(void) {
  int ncases = (int)(sizeof CONV_CASES / sizeof CONV_CASES[0]);
  int saved = mf_get_num_threads();
  const int threads[] = {1, 2, 3};
  for (int ti = 0; ti < 3; ti++) {
    mf_set_num_threads(threads[ti]);
    for (int i = 0; i < ncases; i++) {
      test_conv_case(&CONV_CASES[i], MF_F32);
      if (ti == 1) test_conv_case(&CONV_CASES[i], MF_F64);
    }
  }
  mf_set_num_threads(saved);
  test_conv_gradcheck(false);
  test_conv_gradcheck(true);
  /* many output channels: Winograd does an image's tiles in chunks (16 of its 36 at a time) */
  conv_case many = {2, 8, 22, 22, 520, 5, 5, 1, 1, 2, 2, 2, 2, true};
  test_conv_case(&many, MF_F32);
}

/* The float32 Winograd path against the im2col one (MOONFLOW_WINOGRAD=0) on the same data. */
static void test_conv_winograd_vs_im2col(void) {
  int64_t xs[4] = {4, 16, 13, 15}, ws[4] = {24, 16, 5, 5}, bs[1] = {24};
  mf_pool2d_params p = geometry(0, 0, 1, 1, 2, 1, 2, 3);
  double *x = randv(numel(4, xs)), *w = randv(numel(4, ws)), *b = randv(24);
  mf_tensor *tx = make4(xs, MF_F32, x), *tw = make4(ws, MF_F32, w), *tb = make(1, bs, MF_F32, b);
  mf_tensor *r[2][3] = {{NULL}};
  for (int path = 0; path < 2; path++) {
    if (path) setenv("MOONFLOW_WINOGRAD", "0", 1);
    CHECK_OK(mf_conv2d(tx, tw, tb, &p, &r[path][0]));
    if (r[path][0]) {
      CHECK_OK(mf_conv2d_backward_input(r[path][0], tw, xs, &p, &r[path][1]));
      CHECK_OK(mf_conv2d_backward_weight(r[path][0], tx, ws, &p, &r[path][2]));
    }
    unsetenv("MOONFLOW_WINOGRAD");
  }
  const char *names[3] = {"winograd vs im2col: forward", "winograd vs im2col: backward input",
                          "winograd vs im2col: backward weight"};
  for (int k = 0; k < 3; k++) {
    if (!r[0][k] || !r[1][k]) {
      CHECK(r[0][k] && r[1][k]);
      continue;
    }
    double *a = values(r[0][k]), *e = values(r[1][k]);
    int64_t n = mf_numel(r[1][k]);
    check_values(names[k], a, e, n, 3e-5 * max_abs(e, n), 0);
    free(a), free(e);
  }
  for (int k = 0; k < 6; k++) mf_release(r[k / 3][k % 3]);
  mf_release(tx), mf_release(tw), mf_release(tb);
  free(x), free(w), free(b);
}

/* A transposed (non-contiguous) input and weight give the same result as contiguous ones. */
static void test_conv_noncontiguous(void) {
  int64_t xs[4] = {2, 3, 6, 5}, xts[4] = {2, 3, 5, 6}, ws[4] = {4, 3, 3, 3};
  double *x = randv(numel(4, xs)), *w = randv(numel(4, ws));
  mf_tensor *tx = make4(xs, MF_F32, x), *txt = make4(xts, MF_F32, x), *tw = make4(ws, MF_F32, w);
  mf_tensor *xv = NULL, *xc = NULL, *ya = NULL, *yb = NULL, *wv = NULL, *wc = NULL;
  CHECK_OK(mf_transpose(txt, 2, 3, &xv)); /* (2, 3, 6, 5), strided */
  CHECK(!mf_is_contiguous(xv));
  CHECK_OK(mf_contiguous(xv, &xc));
  CHECK_OK(mf_transpose(tw, 2, 3, &wv));
  CHECK_OK(mf_contiguous(wv, &wc));
  mf_pool2d_params p = geometry(0, 0, 1, 2, 1, 1, 1, 0);
  CHECK_OK(mf_conv2d(xv, wv, NULL, &p, &ya));
  CHECK_OK(mf_conv2d(xc, wc, NULL, &p, &yb));
  if (ya && yb) {
    double *a = values(ya), *b = values(yb);
    check_values("conv: strided input and weight", a, b, mf_numel(yb), 0, 0);
    free(a), free(b);
  }
  mf_release(tx), mf_release(txt), mf_release(tw), mf_release(xv), mf_release(xc);
  mf_release(ya), mf_release(yb), mf_release(wv), mf_release(wc);
  free(x), free(w);
}

static void test_conv_empty_and_errors(void) {
  int64_t xs[4] = {0, 2, 5, 5}, ws[4] = {3, 2, 3, 3}, ys[4] = {0, 3, 5, 5};
  mf_tensor *x = NULL, *w = NULL, *dy = NULL, *r = NULL;
  CHECK_OK(mf_zeros(4, xs, MF_F32, NULL, &x));
  CHECK_OK(mf_ones(4, ws, MF_F32, NULL, &w));
  CHECK_OK(mf_zeros(4, ys, MF_F32, NULL, &dy));
  mf_pool2d_params same = geometry(0, 0, 1, 1, 1, 1, 1, 1);
  CHECK_OK(mf_conv2d(x, w, NULL, &same, &r));
  CHECK(r && r->shape[0] == 0 && r->shape[1] == 3 && r->shape[2] == 5);
  DROP(r);
  CHECK_OK(mf_conv2d_backward_weight(dy, x, ws, &same, &r)); /* no images: zero gradient */
  if (r) {
    double v;
    int64_t at[4] = {1, 1, 2, 2};
    CHECK_OK(mf_get(r, at, &v));
    CHECK(v == 0);
  }
  DROP(r);
  CHECK_OK(mf_conv2d_backward_input(dy, w, xs, &same, &r));
  CHECK(r && mf_numel(r) == 0);
  DROP(r);
  mf_release(x), mf_release(w), mf_release(dy);

  /* error paths */
  int64_t x3[4] = {1, 3, 8, 8}, w1[4] = {32, 1, 5, 5}, b5[1] = {5}, x3d[3] = {3, 8, 8};
  mf_tensor *tx = NULL, *tw = NULL, *tb = NULL, *t3 = NULL, *tw64 = NULL, *ti = NULL;
  CHECK_OK(mf_zeros(4, x3, MF_F32, NULL, &tx));
  CHECK_OK(mf_zeros(4, w1, MF_F32, NULL, &tw));
  CHECK_OK(mf_zeros(4, w1, MF_F64, NULL, &tw64));
  CHECK_OK(mf_zeros(1, b5, MF_F32, NULL, &tb));
  CHECK_OK(mf_zeros(3, x3d, MF_F32, NULL, &t3));
  CHECK_OK(mf_zeros(4, x3, MF_I32, NULL, &ti));
  mf_pool2d_params p = geometry(0, 0, 1, 1, 2, 2, 2, 2);
  CHECK_FAILS(
      mf_conv2d(tx, tw, NULL, &p, &r), MF_ERR_SHAPE,
      "conv2d: input has 3 channels but the weight expects 1 (input 1x3x8x8, weight 32x1x5x5)");
  CHECK(r == NULL);
  CHECK_FAILS(mf_conv2d(t3, tw, NULL, &p, &r), MF_ERR_SHAPE,
              "conv2d: input must be 4-D (N, C, H, W), got shape 3x8x8");
  CHECK_FAILS(mf_conv2d(tx, tw64, NULL, &p, &r), MF_ERR_DTYPE,
              "conv2d: input is float32 but weight is float64");
  CHECK_FAILS(mf_conv2d(ti, tw, NULL, &p, &r), MF_ERR_DTYPE,
              "conv2d: input must be float32 or float64, got int32");
  int64_t x1[4] = {1, 1, 8, 8};
  mf_tensor *tx1 = NULL;
  CHECK_OK(mf_zeros(4, x1, MF_F32, NULL, &tx1));
  CHECK_FAILS(mf_conv2d(tx1, tw, tb, &p, &r), MF_ERR_SHAPE,
              "conv2d: bias has shape 5 but the weight 32x1x5x5 has 32 output channels");
  mf_pool2d_params bad = geometry(0, 0, 0, 1, 0, 0, 0, 0);
  CHECK_FAILS(mf_conv2d(tx1, tw, NULL, &bad, &r), MF_ERR_ARG,
              "conv2d: stride 0x1 must be positive");
  bad = geometry(0, 0, 1, 1, -1, 0, 0, 0);
  CHECK_FAILS(mf_conv2d(tx1, tw, NULL, &bad, &r), MF_ERR_ARG, "must not be negative");
  int64_t small[4] = {1, 1, 3, 3};
  mf_tensor *ts = NULL;
  CHECK_OK(mf_zeros(4, small, MF_F32, NULL, &ts));
  bad = geometry(0, 0, 1, 1, 0, 0, 0, 0);
  CHECK_FAILS(mf_conv2d(ts, tw, NULL, &bad, &r), MF_ERR_SHAPE,
              "conv2d: the kernel of size 5 does not fit the input of size 3 padded to 3");
  CHECK_FAILS(mf_conv2d(tx1, tw, NULL, NULL, &r), MF_ERR_ARG, "conv2d: missing geometry");
  int64_t dys[4] = {1, 32, 7, 8};
  mf_tensor *tdy = NULL;
  CHECK_OK(mf_zeros(4, dys, MF_F32, NULL, &tdy));
  CHECK_FAILS(mf_conv2d_backward_input(tdy, tw, x1, &p, &r), MF_ERR_SHAPE,
              "conv2d_backward_input: the output gradient has shape 1x32x7x8 but input 1x1x8x8 "
              "and weight 32x1x5x5 give 1x32x8x8");
  CHECK_FAILS(mf_conv2d_backward_weight(tdy, tx1, w1, &p, &r), MF_ERR_SHAPE,
              "conv2d_backward_weight: the output gradient has shape 1x32x7x8");
  CHECK_FAILS(mf_conv2d_backward_weight(tdy, tx, w1, &p, &r), MF_ERR_SHAPE,
              "conv2d_backward_weight: input has 3 channels but the weight expects 1");
  mf_release(tx), mf_release(tw), mf_release(tb), mf_release(t3), mf_release(tw64);
  mf_release(ti), mf_release(tx1), mf_release(ts), mf_release(tdy);
}

static void test_same_padding(void) {
  int a, b;
  mf_same_padding(28, 5, 1, &a, &b);
  CHECK(a == 2 && b == 2);
  mf_same_padding(28, 2, 2, &a, &b);
  CHECK(a == 0 && b == 0);
  mf_same_padding(7, 2, 2, &a, &b); /* out 4: one extra cell, after */
  CHECK(a == 0 && b == 1);
  mf_same_padding(10, 3, 2, &a, &b); /* out 5: total 1 */
  CHECK(a == 0 && b == 1);
  mf_same_padding(6, 4, 1, &a, &b); /* total 3 */
  CHECK(a == 1 && b == 2);
  mf_same_padding(5, 1, 3, &a, &b); /* out 2: (2-1)*3+1-5 < 0 */
  CHECK(a == 0 && b == 0);
}

/* ---- pooling -------------------------------------------------------------------------------- */

typedef struct pool_case {
  int64_t N, C, H, W;
  int kh, kw, sh, sw, pt, pl, pb, pr;
} pool_case;

static void ref_pool(const pool_case *k, bool is_max, bool include_pad, const double *x,
                     const double *dy, double *y, int64_t *idx, double *dx) {
  int64_t OH = out_dim(k->H, k->kh, k->sh, k->pt, k->pb),
          OW = out_dim(k->W, k->kw, k->sw, k->pl, k->pr);
  memset(dx, 0, sizeof(double) * (size_t)(k->N * k->C * k->H * k->W));
  for (int64_t pl = 0; pl < k->N * k->C; pl++)
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++) {
        double m = -INFINITY, s = 0;
        int64_t at = -1, cnt = 0;
        for (int i = 0; i < k->kh; i++)
          for (int j = 0; j < k->kw; j++) {
            int64_t ih = oh * k->sh - k->pt + i, iw = ow * k->sw - k->pl + j;
            if (ih < 0 || ih >= k->H || iw < 0 || iw >= k->W) continue;
            double v = x[pl * k->H * k->W + ih * k->W + iw];
            if (at < 0 || v > m) m = v, at = ih * k->W + iw;
            s += v, cnt++;
          }
        int64_t q = (pl * OH + oh) * OW + ow;
        double div = include_pad ? k->kh * k->kw : (double)cnt;
        y[q] = is_max ? m : s / div;
        if (is_max) {
          idx[q] = at;
          dx[pl * k->H * k->W + at] += dy[q];
        } else {
          for (int i = 0; i < k->kh; i++)
            for (int j = 0; j < k->kw; j++) {
              int64_t ih = oh * k->sh - k->pt + i, iw = ow * k->sw - k->pl + j;
              if (ih < 0 || ih >= k->H || iw < 0 || iw >= k->W) continue;
              dx[pl * k->H * k->W + ih * k->W + iw] += dy[q] / div;
            }
        }
      }
}

static void test_pool_case(const pool_case *k, bool is_max, bool include_pad, mf_dtype dt) {
  char what[160];
  snprintf(what, sizeof what, "%s pool %lldx%lldx%lldx%lld k%dx%d s%dx%d pad %d,%d,%d,%d%s %s",
           is_max ? "max" : "avg", (long long)k->N, (long long)k->C, (long long)k->H,
           (long long)k->W, k->kh, k->kw, k->sh, k->sw, k->pt, k->pl, k->pb, k->pr,
           !is_max && include_pad ? " include_pad" : "", mf_dtype_name(dt));
  int64_t xs[4] = {k->N, k->C, k->H, k->W};
  int64_t ys[4] = {k->N, k->C, out_dim(k->H, k->kh, k->sh, k->pt, k->pb),
                   out_dim(k->W, k->kw, k->sw, k->pl, k->pr)};
  int64_t nx = numel(4, xs), ny = numel(4, ys);
  double *x = randv(nx), *dy = randv(ny), *y = malloc(sizeof(double) * (size_t)ny),
         *dx = malloc(sizeof(double) * (size_t)nx), *fi = malloc(sizeof(double) * (size_t)ny);
  int64_t *idx = malloc(sizeof(int64_t) * (size_t)ny);
  for (int64_t i = 0; i < nx; i++) x[i] = (float)x[i];
  for (int64_t i = 0; i < ny; i++) dy[i] = (float)dy[i];
  ref_pool(k, is_max, include_pad, x, dy, y, idx, dx);
  for (int64_t i = 0; i < ny; i++) fi[i] = (double)idx[i];
  mf_pool2d_params p = geometry(k->kh, k->kw, k->sh, k->sw, k->pt, k->pl, k->pb, k->pr);
  p.count_include_pad = include_pad;
  double t = tol(dt);
  char msg[240];
  /* cl: x and dy stored channels-last, and so the results */
  for (int cl = 0; cl < 2; cl++) {
    mf_tensor *tx = make4_as(xs, dt, x, cl), *tdy = make4_as(ys, dt, dy, cl), *r = NULL, *ri = NULL,
              *rx = NULL;
    char whatl[200];
    snprintf(whatl, sizeof whatl, "%s%s", what, cl ? " channels-last" : "");
    if (is_max) {
      CHECK_OK(mf_max_pool2d(tx, &p, &r, &ri));
      snprintf(msg, sizeof msg, "%s: forward", whatl);
      check_tensor(msg, r, 4, ys, y, 0, 0);
      snprintf(msg, sizeof msg, "%s: indices", whatl);
      CHECK(ri && ri->dtype == MF_I64);
      check_tensor(msg, ri, 4, ys, fi, 0, 0);
      if (cl) CHECK(stored_cl(r) && stored_cl(ri));
      if (ri) CHECK_OK(mf_max_pool2d_backward(tdy, ri, xs, &rx));
      snprintf(msg, sizeof msg, "%s: backward", whatl);
      check_tensor(msg, rx, 4, xs, dx, t, t);
      if (cl) CHECK(stored_cl(rx));
      DROP(rx);
      if (cl && ri) { /* NCHW dy with channels-last indices */
        mf_tensor *ndy = make4(ys, dt, dy);
        CHECK_OK(mf_max_pool2d_backward(ndy, ri, xs, &rx));
        snprintf(msg, sizeof msg, "%s: backward, dy NCHW", whatl);
        check_tensor(msg, rx, 4, xs, dx, t, t);
        DROP(rx);
        mf_release(ndy);
      }
      DROP(r);
      CHECK_OK(mf_max_pool2d(tx, &p, &r, NULL)); /* without indices */
      snprintf(msg, sizeof msg, "%s: forward without indices", whatl);
      check_tensor(msg, r, 4, ys, y, 0, 0);
    } else {
      CHECK_OK(mf_avg_pool2d(tx, &p, &r));
      snprintf(msg, sizeof msg, "%s: forward", whatl);
      check_tensor(msg, r, 4, ys, y, t, t);
      if (cl) CHECK(stored_cl(r));
      CHECK_OK(mf_avg_pool2d_backward(tdy, xs, &p, &rx));
      snprintf(msg, sizeof msg, "%s: backward", whatl);
      check_tensor(msg, rx, 4, xs, dx, t, t);
      if (cl) CHECK(stored_cl(rx));
    }
    if (cl) { /* through autograd */
      mf_tensor *y2 = NULL, *g = NULL;
      CHECK_OK(mf_set_requires_grad(tx, true));
      if (is_max)
        CHECK_OK(mf_max_pool2d(tx, &p, &y2, NULL));
      else
        CHECK_OK(mf_avg_pool2d(tx, &p, &y2));
      if (y2) CHECK_OK(mf_grad(1, &y2, &tdy, 1, &tx, false, false, &g));
      snprintf(msg, sizeof msg, "%s: autograd", whatl);
      check_tensor(msg, g, 4, xs, dx, t, t);
      if (g) CHECK(stored_cl(g));
      mf_release(y2), mf_release(g);
    }
    mf_release(tx), mf_release(tdy), mf_release(r), mf_release(ri), mf_release(rx);
  }
  free(x), free(dy), free(y), free(dx), free(fi), free(idx);
}

static const pool_case POOL_CASES[] = {
    /* N  C  H   W   kh kw sh sw pt pl pb pr */
    {2, 3, 28, 28, 2, 2, 2, 2, 0, 0, 0, 0},  /* the tutorial's pool: the 2x2 fast path */
    {3, 2, 7, 9, 2, 2, 2, 2, 0, 0, 0, 0},    /* fast path, odd sizes (last row/column dropped) */
    {2, 2, 7, 8, 3, 3, 2, 2, 1, 1, 1, 1},    /* 3x3 stride 2 padding 1 */
    {1, 3, 6, 7, 2, 3, 1, 2, 0, 1, 1, 2},    /* asymmetric */
    {2, 1, 7, 7, 2, 2, 2, 2, 0, 0, 1, 1},    /* TF "same" for 7 with 2x2 stride 2 */
    {1, 2, 5, 5, 5, 5, 1, 1, 0, 0, 0, 0},    /* global */
    {4, 16, 12, 12, 2, 2, 2, 2, 0, 0, 0, 0}, /* enough planes for the threads */
};

/* Finite differences of sum(pool(x) * dy) in float64 (x without ties); cl: x and dy stored
 * channels-last. */
static void test_pool_gradcheck(bool is_max, bool include_pad, bool cl) {
  pool_case k = {2, 2, 5, 6, 3, 2, 2, 2, 1, 0, 1, 1};
  int64_t xs[4] = {k.N, k.C, k.H, k.W};
  int64_t ys[4] = {k.N, k.C, out_dim(k.H, k.kh, k.sh, k.pt, k.pb),
                   out_dim(k.W, k.kw, k.sw, k.pl, k.pr)};
  int64_t nx = numel(4, xs), ny = numel(4, ys);
  double *x = randv(nx), *dy = randv(ny), *num = malloc(sizeof(double) * (size_t)nx);
  mf_pool2d_params p = geometry(k.kh, k.kw, k.sh, k.sw, k.pt, k.pl, k.pb, k.pr);
  p.count_include_pad = include_pad;
  const double h = 1e-6;
  for (int64_t i = 0; i < nx; i++) {
    double keep = x[i], l[2];
    for (int sgn = 0; sgn < 2; sgn++) {
      x[i] = keep + (sgn ? -h : h);
      mf_tensor *tx = make4_as(xs, MF_F64, x, cl), *y = NULL;
      if (is_max)
        CHECK_OK(mf_max_pool2d(tx, &p, &y, NULL));
      else
        CHECK_OK(mf_avg_pool2d(tx, &p, &y));
      double *yv = values(y), s = 0;
      for (int64_t q = 0; q < ny; q++) s += yv[q] * dy[q];
      l[sgn] = s;
      free(yv), mf_release(y), mf_release(tx);
    }
    x[i] = keep;
    num[i] = (l[0] - l[1]) / (2 * h);
  }
  mf_tensor *tx = make4_as(xs, MF_F64, x, cl), *tdy = make4_as(ys, MF_F64, dy, cl), *y = NULL,
            *ix = NULL, *dx = NULL;
  if (is_max) {
    CHECK_OK(mf_max_pool2d(tx, &p, &y, &ix));
    if (ix) CHECK_OK(mf_max_pool2d_backward(tdy, ix, xs, &dx));
  } else {
    CHECK_OK(mf_avg_pool2d_backward(tdy, xs, &p, &dx));
  }
  char what[64];
  snprintf(what, sizeof what, "%s pool gradcheck%s", is_max ? "max" : "avg",
           cl ? " channels-last" : "");
  check_tensor(what, dx, 4, xs, num, 1e-6, 1e-6);
  mf_release(tx), mf_release(tdy), mf_release(y), mf_release(ix), mf_release(dx);
  free(x), free(dy), free(num);
}

static void test_pool_nan_and_errors(void) {
  /* NaN wins its window, in the fast path and the general one */
  int64_t xs[4] = {1, 1, 2, 4};
  double x[8] = {1, NAN, 5, 6, 2, 3, 7, NAN};
  mf_tensor *tx = make4(xs, MF_F32, x), *y = NULL, *ix = NULL;
  mf_pool2d_params p2 = geometry(2, 2, 2, 2, 0, 0, 0, 0), p3 = geometry(2, 3, 2, 1, 0, 0, 0, 0);
  CHECK_OK(mf_max_pool2d(tx, &p2, &y, &ix));
  if (y && ix) {
    double *v = values(y), *iv = values(ix);
    CHECK(isnan(v[0]) && isnan(v[1]));
    CHECK(iv[0] == 1 && iv[1] == 7);
    free(v), free(iv);
  }
  DROP(y), DROP(ix);
  CHECK_OK(mf_max_pool2d(tx, &p3, &y, &ix)); /* windows cols 0-2, 1-3 */
  if (y && ix) {
    double *v = values(y), *iv = values(ix);
    CHECK(isnan(v[0]) && isnan(v[1]));
    CHECK(iv[0] == 1 && iv[1] == 1);
    free(v), free(iv);
  }
  DROP(y), DROP(ix);
  { /* channels-last, two channels: the first NaN of each channel's window wins there too */
    int64_t xs2[4] = {1, 2, 2, 4};
    double x2[16];
    for (int i = 0; i < 8; i++) x2[i] = x[i], x2[8 + i] = -x[(i + 4) % 8];
    mf_tensor *tc = make4_as(xs2, MF_F32, x2, true);
    const mf_pool2d_params *ps[2] = {&p2, &p3};
    const double want[2][4] = {{1, 7, 5, 3}, {1, 1, 5, 3}}; /* indices: channel 0, channel 1 */
    for (int k = 0; k < 2; k++) {
      CHECK_OK(mf_max_pool2d(tc, ps[k], &y, &ix));
      if (y && ix) {
        double *v = values(y), *iv = values(ix);
        CHECK(isnan(v[0]) && isnan(v[1]) && isnan(v[2]) && isnan(v[3]));
        check_values("max pool NaN, channels-last: indices", iv, want[k], 4, 0, 0);
        free(v), free(iv);
      }
      DROP(y), DROP(ix);
    }
    mf_release(tc);
  }

  /* errors */
  mf_pool2d_params bad = geometry(2, 2, 2, 2, 2, 0, 0, 0);
  CHECK_FAILS(
      mf_max_pool2d(tx, &bad, &y, &ix), MF_ERR_ARG,
      "max_pool2d: padding (top 2, left 0, bottom 0, right 0) must be smaller than the 2x2 window");
  CHECK(y == NULL && ix == NULL);
  bad = geometry(0, 2, 2, 2, 0, 0, 0, 0);
  CHECK_FAILS(mf_avg_pool2d(tx, &bad, &y), MF_ERR_ARG,
              "avg_pool2d: kernel size 0x2 must be positive");
  bad = geometry(3, 3, 1, 1, 0, 0, 0, 0);
  CHECK_FAILS(mf_max_pool2d(tx, &bad, &y, NULL), MF_ERR_SHAPE,
              "max_pool2d: the window of size 3 does not fit the input of size 2 padded to 2");
  int64_t ys[4] = {1, 1, 1, 2}, ys_bad[4] = {1, 1, 2, 2};
  double ones[4] = {1, 1, 1, 1}, oob[2] = {0, 8};
  mf_tensor *dy = make4(ys, MF_F32, ones), *dyb = make4(ys_bad, MF_F32, ones),
            *iob = make(4, ys, MF_I64, oob), *if32 = make4(ys, MF_F32, oob), *dx = NULL;
  CHECK_FAILS(mf_max_pool2d_backward(dy, iob, xs, &dx), MF_ERR_INDEX,
              "max_pool2d_backward: an index is outside the 2x4 input plane");
  CHECK(dx == NULL);
  CHECK_FAILS(mf_max_pool2d_backward(dy, if32, xs, &dx), MF_ERR_DTYPE,
              "max_pool2d_backward: indices must be int64, got float32");
  CHECK_FAILS(mf_max_pool2d_backward(dyb, iob, xs, &dx), MF_ERR_SHAPE,
              "max_pool2d_backward: indices have shape 1x1x1x2 but the output gradient 1x1x2x2");
  CHECK_FAILS(mf_avg_pool2d_backward(dyb, xs, &p2, &dx), MF_ERR_SHAPE,
              "avg_pool2d_backward: the output gradient has shape 1x1x2x2 but an input of shape "
              "1x1x2x4 gives 1x1x1x2");
  mf_release(tx), mf_release(dy), mf_release(dyb), mf_release(iob), mf_release(if32);
}

static void test_pool(void) {
  int n = (int)(sizeof POOL_CASES / sizeof POOL_CASES[0]);
  for (int i = 0; i < n; i++)
    for (int d = 0; d < 2; d++) {
      mf_dtype dt = d ? MF_F64 : MF_F32;
      test_pool_case(&POOL_CASES[i], true, false, dt);
      test_pool_case(&POOL_CASES[i], false, true, dt);
      test_pool_case(&POOL_CASES[i], false, false, dt);
    }
  for (int cl = 0; cl < 2; cl++) {
    test_pool_gradcheck(true, false, cl);
    test_pool_gradcheck(false, true, cl);
    test_pool_gradcheck(false, false, cl);
  }
  test_pool_nan_and_errors();
}

/* ---- softmax --------------------------------------------------------------------------------- */

/* y along dim of a (outer, n, inner) array */
static void ref_softmax(bool log_, int64_t outer, int64_t n, int64_t inner, const double *x,
                        double *y) {
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      const double *xs = x + o * n * inner + i;
      double *ys = y + o * n * inner + i;
      double m = -INFINITY, s = 0;
      for (int64_t k = 0; k < n; k++) m = fmax(m, xs[k * inner]);
      for (int64_t k = 0; k < n; k++) s += exp(xs[k * inner] - m);
      for (int64_t k = 0; k < n; k++)
        ys[k * inner] = log_ ? xs[k * inner] - m - log(s) : exp(xs[k * inner] - m) / s;
    }
}

static void ref_softmax_backward(bool log_, int64_t outer, int64_t n, int64_t inner,
                                 const double *y, const double *dy, double *dx) {
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      int64_t b = o * n * inner + i;
      double s = 0;
      for (int64_t k = 0; k < n; k++)
        s += log_ ? dy[b + k * inner] : dy[b + k * inner] * y[b + k * inner];
      for (int64_t k = 0; k < n; k++) {
        int64_t q = b + k * inner;
        dx[q] = log_ ? dy[q] - exp(y[q]) * s : y[q] * (dy[q] - s);
      }
    }
}

static void test_softmax_case(int nd, const int64_t *shape, int dim, mf_dtype dt, double scale) {
  int d = dim < 0 ? dim + nd : dim;
  int64_t outer = 1, inner = 1, n = shape[d], total = numel(nd, shape);
  for (int k = 0; k < d; k++) outer *= shape[k];
  for (int k = d + 1; k < nd; k++) inner *= shape[k];
  double *x = randv(total), *dy = randv(total), *y = malloc(sizeof(double) * (size_t)total),
         *dx = malloc(sizeof(double) * (size_t)total);
  for (int64_t i = 0; i < total; i++) x[i] = dt == MF_F32 ? (float)(x[i] * scale) : x[i] * scale;
  for (int64_t i = 0; i < total; i++) dy[i] = (float)dy[i];
  mf_tensor *tx = make(nd, shape, dt, x), *tdy = make(nd, shape, dt, dy);
  for (int log_ = 0; log_ < 2; log_++) {
    char what[160];
    snprintf(what, sizeof what, "%s of %lld x %lld x %lld along dim %d (%s, scale %g)",
             log_ ? "log_softmax" : "softmax", (long long)outer, (long long)n, (long long)inner,
             dim, mf_dtype_name(dt), scale);
    ref_softmax(log_, outer, n, inner, x, y);
    mf_tensor *ty = NULL, *tdx = NULL;
    double t = dt == MF_F32 ? 1e-5 : 1e-12;
    CHECK_OK(log_ ? mf_log_softmax(tx, dim, &ty) : mf_softmax(tx, dim, &ty));
    check_tensor(what, ty, nd, shape, y, t, t);
    /* the backward from the kernel's own y, against the formula on the same y */
    if (ty) {
      double *yv = values(ty);
      ref_softmax_backward(log_, outer, n, inner, yv, dy, dx);
      CHECK_OK(log_ ? mf_log_softmax_backward(ty, tdy, dim, &tdx)
                    : mf_softmax_backward(ty, tdy, dim, &tdx));
      char msg[200];
      snprintf(msg, sizeof msg, "%s: backward", what);
      check_tensor(msg, tdx, nd, shape, dx, t * 10, t * 10);
      free(yv);
    }
    mf_release(ty), mf_release(tdx);
  }
  mf_release(tx), mf_release(tdy);
  free(x), free(dy), free(y), free(dx);
}

static void test_softmax_gradcheck(void) {
  int64_t shape[3] = {2, 4, 3};
  int64_t total = 24;
  double *x = randv(total), *dy = randv(total), *num = malloc(sizeof(double) * 24);
  for (int log_ = 0; log_ < 2; log_++) {
    const double h = 1e-6;
    for (int64_t i = 0; i < total; i++) {
      double keep = x[i], l[2];
      for (int sgn = 0; sgn < 2; sgn++) {
        x[i] = keep + (sgn ? -h : h);
        mf_tensor *tx = make(3, shape, MF_F64, x), *y = NULL;
        CHECK_OK(log_ ? mf_log_softmax(tx, 1, &y) : mf_softmax(tx, 1, &y));
        double *yv = values(y), s = 0;
        for (int64_t q = 0; q < total; q++) s += yv[q] * dy[q];
        l[sgn] = s;
        free(yv), mf_release(y), mf_release(tx);
      }
      x[i] = keep;
      num[i] = (l[0] - l[1]) / (2 * h);
    }
    mf_tensor *tx = make(3, shape, MF_F64, x), *tdy = make(3, shape, MF_F64, dy), *y = NULL,
              *dx = NULL;
    CHECK_OK(log_ ? mf_log_softmax(tx, 1, &y) : mf_softmax(tx, 1, &y));
    if (y)
      CHECK_OK(log_ ? mf_log_softmax_backward(y, tdy, 1, &dx)
                    : mf_softmax_backward(y, tdy, 1, &dx));
    check_tensor(log_ ? "log_softmax gradcheck" : "softmax gradcheck", dx, 3, shape, num, 1e-6,
                 1e-6);
    mf_release(tx), mf_release(tdy), mf_release(y), mf_release(dx);
  }
  free(x), free(dy), free(num);
}

static void test_softmax(void) {
  const mf_dtype dts[2] = {MF_F32, MF_F64};
  for (int di = 0; di < 2; di++) {
    mf_dtype dt = dts[di];
    int64_t s2[2] = {50, 10}, s1[1] = {1000}, s3[3] = {3, 37, 5}, sw[3] = {2, 6, 700},
            s4[4] = {2, 3, 4, 5};
    test_softmax_case(2, s2, 1, dt, 3); /* logits of a batch */
    test_softmax_case(2, s2, -1, dt, 3);
    test_softmax_case(2, s2, 0, dt, 3); /* inner 10 */
    test_softmax_case(1, s1, 0, dt, 5); /* a long row: lanes and tail */
    test_softmax_case(3, s3, 1, dt, 2); /* middle dim */
    test_softmax_case(3, s3, 2, dt, 2);
    test_softmax_case(3, sw, 1, dt, 2); /* inner 700: several column blocks */
    test_softmax_case(4, s4, 2, dt, 1);
    test_softmax_case(2, s2, 1, dt, 500); /* large values: max subtracted */
  }
  test_softmax_gradcheck();

  /* special values: -inf entries get 0 (log: -inf); a NaN poisons its row only */
  int64_t s[2] = {2, 3};
  double v[6] = {-INFINITY, 0, 0, NAN, 1, 2};
  mf_tensor *x = make(2, s, MF_F32, v), *y = NULL;
  CHECK_OK(mf_softmax(x, 1, &y));
  if (y) {
    double *r = values(y);
    CHECK(r[0] == 0 && fabs(r[1] - 0.5) < 1e-7 && fabs(r[2] - 0.5) < 1e-7);
    CHECK(isnan(r[3]) && isnan(r[4]) && isnan(r[5]));
    free(r);
  }
  DROP(y);
  CHECK_OK(mf_log_softmax(x, 1, &y));
  if (y) {
    double *r = values(y);
    CHECK(isinf(r[0]) && r[0] < 0 && fabs(r[1] - log(0.5)) < 1e-6);
    free(r);
  }
  DROP(y);
  /* a 0-d tensor: softmax 1, log_softmax 0 */
  mf_tensor *sc = NULL;
  CHECK_OK(mf_scalar(3.5, MF_F64, false, NULL, &sc));
  CHECK_OK(mf_softmax(sc, -1, &y));
  double item = 0;
  if (y) CHECK_OK(mf_item(y, &item));
  CHECK(item == 1 && y && y->ndim == 0);
  DROP(y);
  CHECK_OK(mf_log_softmax(sc, 0, &y));
  if (y) CHECK_OK(mf_item(y, &item));
  CHECK(item == 0);
  DROP(y);
  /* a transposed view */
  mf_tensor *xt = NULL, *yc = NULL, *xc = NULL;
  CHECK_OK(mf_transpose(x, 0, 1, &xt));
  CHECK_OK(mf_contiguous(xt, &xc));
  CHECK_OK(mf_softmax(xt, 1, &y));
  CHECK_OK(mf_softmax(xc, 1, &yc));
  if (y && yc) {
    double *a = values(y), *b = values(yc);
    check_values("softmax of a transposed view", a, b, 6, 0, 0);
    free(a), free(b);
  }
  DROP(y);
  /* errors */
  mf_tensor *xi = NULL, *x64 = NULL, *other = NULL;
  CHECK_OK(mf_zeros(2, s, MF_I64, NULL, &xi));
  CHECK_OK(mf_zeros(2, s, MF_F64, NULL, &x64));
  int64_t s3x2[2] = {3, 2};
  CHECK_OK(mf_zeros(2, s3x2, MF_F32, NULL, &other));
  CHECK_FAILS(mf_softmax(xi, 1, &y), MF_ERR_DTYPE,
              "softmax: input must be float32 or float64, got int64");
  CHECK_FAILS(mf_log_softmax(x, 2, &y), MF_ERR_INDEX, "log_softmax");
  CHECK_FAILS(mf_softmax(sc, 1, &y), MF_ERR_INDEX,
              "softmax: dimension 1 is out of range for a 0-d tensor");
  CHECK_FAILS(mf_softmax_backward(x, x64, 1, &y), MF_ERR_DTYPE,
              "softmax_backward: the output is float32 but its gradient is float64");
  CHECK_FAILS(mf_log_softmax_backward(x, other, 1, &y), MF_ERR_SHAPE,
              "log_softmax_backward: the output has shape 2x3 but its gradient 3x2");
  CHECK(y == NULL);
  mf_release(x), mf_release(sc), mf_release(xt), mf_release(yc), mf_release(xc);
  mf_release(xi), mf_release(x64), mf_release(other);
}

/* ---- gather / scatter_add ------------------------------------------------------------------- */

static void test_gather_scatter(void) {
  /* cross-entropy style: x (4, 5), index (4, 1) along dim 1 */
  int64_t xs[2] = {4, 5}, is[2] = {4, 1};
  double xv[20], iv[4] = {4, 0, 2, 2};
  for (int i = 0; i < 20; i++) xv[i] = i * 1.5;
  mf_tensor *x = make(2, xs, MF_F32, xv), *ix = make(2, is, MF_I64, iv), *r = NULL;
  CHECK_OK(mf_gather(x, 1, ix, &r));
  double want[4] = {xv[4], xv[5], xv[12], xv[17]};
  check_tensor("gather dim 2", r, 2, is, want, 0, 0);
  DROP(r);
  CHECK_OK(mf_gather(x, -1, ix, &r));
  check_tensor("gather dim -1", r, 2, is, want, 0, 0);
  DROP(r);
  /* its backward: scatter_add of ones */
  double ones[4] = {1, 2, 3, 4};
  mf_tensor *src = make(2, is, MF_F32, ones);
  CHECK_OK(mf_scatter_add(2, xs, 1, ix, src, &r));
  double want_s[20] = {0};
  want_s[4] = 1, want_s[5] = 2, want_s[12] = 3, want_s[17] = 4;
  check_tensor("scatter_add dim 2", r, 2, xs, want_s, 0, 0);
  DROP(r);

  /* 3-D, every dim, an index smaller than x in the other dims, duplicates; int64 and int32 data */
  int64_t x3[3] = {3, 4, 5};
  double x3v[60];
  for (int i = 0; i < 60; i++) x3v[i] = i;
  const mf_dtype dts[3] = {MF_F64, MF_I64, MF_I32};
  for (int di = 0; di < 3; di++) {
    mf_tensor *t3 = make(3, x3, dts[di], x3v);
    for (int dim = 0; dim < 3; dim++) {
      int64_t i3[3] = {2, 3, 4};
      i3[dim] = 6; /* longer than x along dim: fine for gather */
      int64_t n = numel(3, i3);
      double *idx = malloc(sizeof(double) * (size_t)n), *g = malloc(sizeof(double) * (size_t)n);
      double sums[60] = {0};
      for (int64_t q = 0; q < n; q++) {
        int64_t a = q / (i3[1] * i3[2]), b = q / i3[2] % i3[1], c = q % i3[2];
        int64_t v = (int64_t)(urand() * (double)x3[dim]);
        idx[q] = (double)v;
        int64_t at[3] = {a, b, c};
        at[dim] = v;
        int64_t off = (at[0] * 4 + at[1]) * 5 + at[2];
        g[q] = x3v[off];
        sums[off] += x3v[q % 60]; /* src values below */
      }
      mf_tensor *ti = make(3, i3, MF_I64, idx), *srcv = NULL;
      char what[96];
      snprintf(what, sizeof what, "gather 3-D dim %d %s", dim + 1, mf_dtype_name(dts[di]));
      CHECK_OK(mf_gather(t3, dim, ti, &r));
      check_tensor(what, r, 3, i3, g, 0, 0);
      if (r) CHECK(r->dtype == dts[di]);
      DROP(r);
      double *sv = malloc(sizeof(double) * (size_t)n);
      for (int64_t q = 0; q < n; q++) sv[q] = x3v[q % 60];
      srcv = make(3, i3, dts[di], sv);
      snprintf(what, sizeof what, "scatter_add 3-D dim %d %s", dim + 1, mf_dtype_name(dts[di]));
      CHECK_OK(mf_scatter_add(3, x3, dim, ti, srcv, &r));
      check_tensor(what, r, 3, x3, sums, 1e-12, 1e-12);
      DROP(r);
      mf_release(ti), mf_release(srcv);
      free(idx), free(g), free(sv);
    }
    mf_release(t3);
  }

  /* src larger than index: only the index-shaped corner is used */
  int64_t sbig[2] = {5, 3};
  double sb[15];
  for (int i = 0; i < 15; i++) sb[i] = 100 + i;
  mf_tensor *srcb = make(2, sbig, MF_F64, sb);
  CHECK_OK(mf_scatter_add(2, xs, 1, ix, srcb, &r));
  double want_b[20] = {0};
  want_b[4] = 100, want_b[5] = 103, want_b[12] = 106, want_b[17] = 109;
  check_tensor("scatter_add with a larger src", r, 2, xs, want_b, 0, 0);
  DROP(r);

  /* a big one, parallel over rows */
  int64_t bs[2] = {3000, 10}, bi[2] = {3000, 1};
  double *bx = randv(30000), *bidx = malloc(sizeof(double) * 3000),
         *bw = malloc(sizeof(double) * 3000);
  for (int i = 0; i < 3000; i++) {
    bidx[i] = (double)(i % 10);
    bw[i] = (float)bx[i * 10 + i % 10];
  }
  mf_tensor *tbx = make(2, bs, MF_F32, bx), *tbi = make(2, bi, MF_I64, bidx);
  CHECK_OK(mf_gather(tbx, 1, tbi, &r));
  check_tensor("gather 3000x10", r, 2, bi, bw, 0, 0);
  DROP(r);
  mf_release(tbx), mf_release(tbi);
  free(bx), free(bidx), free(bw);

  /* errors */
  double bad[4] = {0, 5, 1, 1}, neg[4] = {0, -1, 1, 1};
  mf_tensor *ib = make(2, is, MF_I64, bad), *ineg = make(2, is, MF_I64, neg),
            *i32 = make(2, is, MF_I32, iv), *i1 = NULL;
  int64_t one[1] = {4};
  i1 = make(1, one, MF_I64, iv);
  CHECK_FAILS(mf_gather(x, 1, ib, &r), MF_ERR_INDEX,
              "gather: index 5 is out of range for dimension 2 of size 5");
  CHECK(r == NULL);
  CHECK_FAILS(mf_scatter_add(2, xs, 1, ineg, src, &r), MF_ERR_INDEX,
              "scatter_add: index -1 is out of range for dimension 2 of size 5");
  CHECK_FAILS(mf_gather(x, 1, i32, &r), MF_ERR_DTYPE, "gather: index must be int64, got int32");
  CHECK_FAILS(mf_gather(x, 1, i1, &r), MF_ERR_SHAPE,
              "gather: index has 1 dimensions but input has 2");
  CHECK_FAILS(mf_gather(x, 2, ix, &r), MF_ERR_INDEX, "gather");
  int64_t big_i[2] = {5, 1};
  double z5[5] = {0};
  mf_tensor *ibig = make(2, big_i, MF_I64, z5);
  CHECK_FAILS(mf_gather(x, 1, ibig, &r), MF_ERR_SHAPE,
              "gather: index 5x1 is larger than input 4x5 in dimension 1");
  CHECK_FAILS(mf_scatter_add(2, xs, 1, ibig, src, &r), MF_ERR_SHAPE,
              "scatter_add: index 5x1 is larger");
  /* indices counted from 1 (Lua's): the same results, errors naming the index as given */
  double iv1[4] = {5, 1, 3, 3}, bad1[4] = {1, 0, 1, 1};
  mf_tensor *ix1 = make(2, is, MF_I64, iv1), *ib1 = make(2, is, MF_I64, bad1), *il1 = NULL;
  int64_t lowv[4] = {1, INT64_MIN, 1, 1}; /* its distance from the base overflows int64 */
  CHECK_OK(mf_from_host(2, is, MF_I64, lowv, NULL, &il1));
  CHECK_OK(mf_gather_from(x, 1, ix1, 1, &r));
  check_tensor("gather, index from 1", r, 2, is, want, 0, 0);
  DROP(r);
  CHECK_OK(mf_scatter_add_from(2, xs, 1, ix1, 1, src, &r));
  check_tensor("scatter_add, index from 1", r, 2, xs, want_s, 0, 0);
  DROP(r);
  CHECK_FAILS(mf_gather_from(x, 1, ib1, 1, &r), MF_ERR_INDEX,
              "gather: index 0 is out of range for dimension 2 of size 5");
  CHECK_FAILS(mf_scatter_add_from(2, xs, 1, il1, 1, src, &r), MF_ERR_INDEX,
              "scatter_add: index -9223372036854775808 is out of range");
  CHECK_FAILS(mf_gather_from(x, 1, ix1, 2, &r), MF_ERR_ARG,
              "gather: indices count from 0 or 1, not 2");
  CHECK_FAILS(mf_scatter_add_from(2, xs, 1, ix1, -1, src, &r), MF_ERR_ARG,
              "scatter_add: indices count from 0 or 1, not -1");
  CHECK(r == NULL);
  mf_release(ix1), mf_release(ib1), mf_release(il1);
  mf_release(x), mf_release(ix), mf_release(src), mf_release(srcb), mf_release(ib);
  mf_release(ineg), mf_release(i32), mf_release(i1), mf_release(ibig);
}

/* ---- dropout --------------------------------------------------------------------------------- */

static void test_dropout(void) {
  int64_t shape[2] = {50, 1024};
  const mf_dtype dts[2] = {MF_F32, MF_F64};
  for (int di = 0; di < 2; di++) {
    mf_dtype dt = dts[di];
    mf_tensor *x = NULL, *m1 = NULL, *m2 = NULL, *u = NULL;
    CHECK_OK(mf_zeros(2, shape, dt, NULL, &x));
    double p = 0.3, scale = 1 / (1 - p);
    mf_manual_seed(1234);
    CHECK_OK(mf_dropout_mask(x, p, &m1));
    uint64_t seed, off1;
    mf_rng_get_state(&seed, &off1);
    CHECK(off1 == (dt == MF_F32 ? 50 * 1024 / 4 : 50 * 1024 / 2)); /* blocks reserved like rand */
    mf_manual_seed(1234);
    CHECK_OK(mf_dropout_mask(x, p, &m2));
    mf_manual_seed(1234);
    CHECK_OK(mf_rand(2, shape, dt, NULL, &u)); /* the same uniforms */
    if (m1 && m2 && u) {
      double *a = values(m1), *b = values(m2), *uv = values(u);
      int64_t n = 50 * 1024, zeros = 0, odd = 0, mism = 0;
      for (int64_t i = 0; i < n; i++) {
        if (a[i] == 0)
          zeros++;
        else if (fabs(a[i] - (dt == MF_F32 ? (float)scale : scale)) > 0)
          odd++;
        if ((a[i] == 0) != (uv[i] < p)) mism++;
      }
      check_values("dropout: same seed, same mask", a, b, n, 0, 0);
      CHECK(odd == 0);
      CHECK(mism == 0);
      CHECK(fabs((double)zeros / (double)n - p) < 0.01);
      free(a), free(b), free(uv);
    }
    DROP(m1);
    CHECK_OK(mf_dropout_mask(x, 0, &m1)); /* keeps everything */
    if (m1) {
      double *a = values(m1);
      bool all = true;
      for (int64_t i = 0; i < 50 * 1024; i++) all = all && a[i] == 1;
      CHECK(all);
      free(a);
    }
    DROP(m1);
    CHECK_OK(mf_dropout_mask(x, 1, &m1)); /* drops everything, no inf or NaN */
    if (m1) {
      double *a = values(m1);
      bool all = true;
      for (int64_t i = 0; i < 50 * 1024; i++) all = all && a[i] == 0;
      CHECK(all);
      free(a);
    }
    DROP(m1);
    /* an odd size: the tail of the last block */
    int64_t odd_shape[1] = {7};
    mf_tensor *xo = NULL;
    CHECK_OK(mf_zeros(1, odd_shape, dt, NULL, &xo));
    CHECK_OK(mf_dropout_mask(xo, 0.5, &m1));
    CHECK(m1 && m1->shape[0] == 7 && m1->dtype == dt);
    mf_release(xo), mf_release(x), mf_release(m1), mf_release(m2), mf_release(u);
  }
  mf_tensor *xi = NULL, *m = NULL;
  CHECK_OK(mf_zeros(2, shape, MF_I32, NULL, &xi));
  CHECK_FAILS(mf_dropout_mask(xi, 0.5, &m), MF_ERR_DTYPE,
              "dropout: input must be float32 or float64");
  mf_release(xi);
  CHECK_OK(mf_zeros(2, shape, MF_F32, NULL, &xi));
  CHECK_FAILS(mf_dropout_mask(xi, 1.5, &m), MF_ERR_ARG,
              "dropout: drop probability 1.5 must be in [0, 1]");
  CHECK_FAILS(mf_dropout_mask(xi, NAN, &m), MF_ERR_ARG, "dropout: drop probability");
  CHECK(m == NULL);
  mf_release(xi);
}

/* ---- PyTorch's values ------------------------------------------------------------------------ */

static void test_torch_reference(void) {
  const mf_dtype dts[2] = {MF_F64, MF_F32};
  for (int di = 0; di < 2; di++) {
    mf_dtype dt = dts[di];
    double t = dt == MF_F64 ? 1e-12 : 5e-5;
    char what[200];
    for (size_t i = 0; i < sizeof NN_CONV_REFS / sizeof NN_CONV_REFS[0]; i++) {
      const nn_conv_ref *c = &NN_CONV_REFS[i];
      mf_pool2d_params p =
          geometry(0, 0, c->stride[0], c->stride[1], c->pad[0], c->pad[1], c->pad[2], c->pad[3]);
      int64_t bs[1] = {c->w_shape[0]};
      mf_tensor *x = make4(c->x_shape, dt, c->x), *w = make4(c->w_shape, dt, c->w),
                *b = c->b ? make(1, bs, dt, c->b) : NULL, *dy = make4(c->y_shape, dt, c->dy),
                *r = NULL;
      snprintf(what, sizeof what, "torch conv2d %s (%s): forward", c->name, mf_dtype_name(dt));
      CHECK_OK(mf_conv2d(x, w, b, &p, &r));
      check_tensor(what, r, 4, c->y_shape, c->y, t, t);
      DROP(r);
      snprintf(what, sizeof what, "torch conv2d %s (%s): input gradient", c->name,
               mf_dtype_name(dt));
      CHECK_OK(mf_conv2d_backward_input(dy, w, c->x_shape, &p, &r));
      check_tensor(what, r, 4, c->x_shape, c->dx, t, t);
      DROP(r);
      snprintf(what, sizeof what, "torch conv2d %s (%s): weight gradient", c->name,
               mf_dtype_name(dt));
      CHECK_OK(mf_conv2d_backward_weight(dy, x, c->w_shape, &p, &r));
      check_tensor(what, r, 4, c->w_shape, c->dw, t, t);
      DROP(r);
      mf_release(x), mf_release(w), mf_release(b), mf_release(dy);
    }
    for (size_t i = 0; i < sizeof NN_POOL_REFS / sizeof NN_POOL_REFS[0]; i++) {
      const nn_pool_ref *c = &NN_POOL_REFS[i];
      mf_pool2d_params p = geometry(c->kernel[0], c->kernel[1], c->stride[0], c->stride[1],
                                    c->pad[0], c->pad[1], c->pad[2], c->pad[3]);
      p.count_include_pad = c->count_include_pad;
      mf_tensor *x = make4(c->x_shape, dt, c->x), *dy = make4(c->y_shape, dt, c->dy), *y = NULL,
                *ix = NULL, *dx = NULL;
      snprintf(what, sizeof what, "torch %s (%s): forward", c->name, mf_dtype_name(dt));
      if (c->is_max)
        CHECK_OK(mf_max_pool2d(x, &p, &y, &ix));
      else
        CHECK_OK(mf_avg_pool2d(x, &p, &y));
      check_tensor(what, y, 4, c->y_shape, c->y, t, t);
      if (c->is_max) {
        int64_t n = numel(4, c->y_shape);
        double *fi = malloc(sizeof(double) * (size_t)n);
        for (int64_t q = 0; q < n; q++) fi[q] = (double)c->idx[q];
        snprintf(what, sizeof what, "torch %s (%s): indices", c->name, mf_dtype_name(dt));
        check_tensor(what, ix, 4, c->y_shape, fi, 0, 0);
        free(fi);
        if (ix) CHECK_OK(mf_max_pool2d_backward(dy, ix, c->x_shape, &dx));
      } else {
        CHECK_OK(mf_avg_pool2d_backward(dy, c->x_shape, &p, &dx));
      }
      snprintf(what, sizeof what, "torch %s (%s): backward", c->name, mf_dtype_name(dt));
      check_tensor(what, dx, 4, c->x_shape, c->dx, t, t);
      mf_release(x), mf_release(dy), mf_release(y), mf_release(ix), mf_release(dx);
    }
    for (size_t i = 0; i < sizeof NN_SOFTMAX_REFS / sizeof NN_SOFTMAX_REFS[0]; i++) {
      const nn_softmax_ref *c = &NN_SOFTMAX_REFS[i];
      mf_tensor *x = make(c->ndim, c->shape, dt, c->x), *dy = make(c->ndim, c->shape, dt, c->dy),
                *yref = make(c->ndim, c->shape, dt, c->y), *y = NULL, *dx = NULL;
      snprintf(what, sizeof what, "torch %s (%s): forward", c->name, mf_dtype_name(dt));
      CHECK_OK(c->is_log ? mf_log_softmax(x, c->dim, &y) : mf_softmax(x, c->dim, &y));
      check_tensor(what, y, c->ndim, c->shape, c->y, t, t);
      snprintf(what, sizeof what, "torch %s (%s): backward", c->name, mf_dtype_name(dt));
      CHECK_OK(c->is_log ? mf_log_softmax_backward(yref, dy, c->dim, &dx)
                         : mf_softmax_backward(yref, dy, c->dim, &dx));
      check_tensor(what, dx, c->ndim, c->shape, c->dx, t, t);
      mf_release(x), mf_release(dy), mf_release(yref), mf_release(y), mf_release(dx);
    }
  }
}

int main(void) {
  test_same_padding();
  test_conv();
  test_conv_winograd_vs_im2col();
  test_conv_noncontiguous();
  test_conv_empty_and_errors();
  test_pool();
  test_softmax();
  test_gather_scatter();
  test_dropout();
  test_torch_reference();
  return test_summary();
}
