/* conv.c — the CPU 2-D convolution kernels (NCHW, float32 and float64): forward (with bias),
 * backward-input and backward-weight, as the front end ops_nn.c prepares them (contiguous
 * tensors, geometry in the mf_pool2d_params).
 *
 * Method: im2col + GEMM per image. With K = C*KH*KW and P = OH*OW:
 *   forward          y[n] (O, P)  = w (O, K) @ col(x[n]) (K, P)  (+ bias per row)
 *   backward-input   dcol (K, P)  = w^T (K, O) @ dy[n] (O, P);   dx[n] = col2im(dcol)
 *   backward-weight  dw (O, K)   += dy[n] (O, P) @ col(x[n])^T (P, K)
 * A 1x1 convolution with stride 1 and no padding needs no col: col(x[n]) is x[n] itself.
 * Images are spread over the thread pool, each task with its own col buffer and one-threaded
 * BLAS (per-image GEMMs are too small for OpenBLAS's threads to pay, and two levels of threads
 * would oversubscribe the cores); a single image uses OpenBLAS's threads instead. The weight
 * gradient is accumulated per task and the partial sums added in task order, so the result does
 * not depend on timing.
 *
 * The float and double versions are generated from one definition: this file includes itself
 * twice with T (the element type) and S (the suffix) defined.
 */
#ifndef CONV_T /* ---- the type-independent part -------------------------------------------- */

#include <string.h>

#include <cblas.h>

#include "cpu/iter.h"
#include "cpu/kernels.h"

void openblas_set_num_threads(int);

/* Geometry of one call. x (N, C, H, W), w (O, C, KH, KW), y (N, O, OH, OW). */
typedef struct geom {
  int64_t N, C, H, W, O, KH, KW, OH, OW;
  int64_t K, P; /* C*KH*KW, OH*OW */
  int sh, sw, pt, pl;
  bool direct; /* 1x1, stride 1, no padding: col(x) = x */
} geom;

static geom make_geom(const mf_tensor *x_or_dx, const int64_t *wshape, const int64_t *yshape,
                      const mf_pool2d_params *p) {
  geom g;
  g.N = x_or_dx->shape[0], g.C = x_or_dx->shape[1], g.H = x_or_dx->shape[2],
  g.W = x_or_dx->shape[3];
  g.O = wshape[0], g.KH = wshape[2], g.KW = wshape[3];
  g.OH = yshape[2], g.OW = yshape[3];
  g.K = g.C * g.KH * g.KW, g.P = g.OH * g.OW;
  g.sh = p->stride[0], g.sw = p->stride[1], g.pt = p->pad[0], g.pl = p->pad[1];
  g.direct = g.KH == 1 && g.KW == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 &&
             g.OH == g.H && g.OW == g.W;
  return g;
}

/* The outputs ow with 0 <= ow*sw - pl + kw < W: [lo, hi). */
static void valid_range(int64_t OW, int64_t W, int sw, int pl, int64_t kw, int64_t *lo,
                        int64_t *hi) {
  int64_t a = pl - kw; /* ow*sw >= a */
  int64_t l = a <= 0 ? 0 : (a + sw - 1) / sw;
  int64_t b = W - 1 + pl - kw; /* ow*sw <= b */
  int64_t h = b < 0 ? 0 : b / sw + 1;
  if (h > OW) h = OW;
  if (l > h) l = h;
  *lo = l, *hi = h;
}

/* A parallel job over images: `tasks` tasks, task t handles images [N*t/tasks, N*(t+1)/tasks). */
typedef struct conv_job {
  const geom *g;
  mf_dtype dt;
  const void *a, *b, *bias; /* operands, by op */
  void *out;
  void **partial; /* backward-weight: per-task (O, K) sums (partial[0] is the output) */
  int tasks;
  mf_op op;
  int failed; /* a task could not allocate its buffer */
} conv_job;

static void conv_task(conv_job *j, int t); /* defined after the typed parts */

static void conv_run(void *ctx, int64_t b, int64_t e) {
  for (int64_t t = b; t < e; t++) conv_task(ctx, (int)t);
}

#define CONV_T float
#define S f32
#define GEMM cblas_sgemm
#include "cpu/conv.c"
#undef CONV_T
#undef S
#undef GEMM
#define CONV_T double
#define S f64
#define GEMM cblas_dgemm
#include "cpu/conv.c"
#undef CONV_T
#undef S
#undef GEMM

static void conv_task(conv_job *j, int t) {
  if (j->dt == MF_F32) conv_task_f32(j, t);
  else conv_task_f64(j, t);
}

mf_status mf_cpu_conv2d(mf_device *dev, const mf_call *c) {
  (void)dev;
  const char *name = mf_op_name(c->op);
  if (!c->out || c->nin < 2 || !c->params)
    return mf_fail(MF_ERR_ARG, "%s: malformed kernel call", name);
  mf_dtype dt = c->out->dtype;
  if (dt != MF_F32 && dt != MF_F64)
    return mf_fail(MF_ERR_DTYPE, "%s: the CPU kernel takes float32 or float64, got %s", name,
                   mf_dtype_name(dt));
  mf_status ws;
  if (mf_cpu_conv2d_winograd(c, &ws)) return ws;
  const mf_pool2d_params *p = c->params;
  geom g;
  conv_job j = {.dt = dt, .op = c->op, .out = mf_cpu_ptr(c->out)};
  switch (c->op) {
  case MF_OP_CONV2D: /* in: x, w, bias */
    g = make_geom(c->in[0], c->in[1]->shape, c->out->shape, p);
    j.a = mf_cpu_ptr(c->in[0]), j.b = mf_cpu_ptr(c->in[1]);
    j.bias = c->nin > 2 && c->in[2] ? mf_cpu_ptr(c->in[2]) : NULL;
    break;
  case MF_OP_CONV2D_BACKWARD_INPUT: /* in: dy, w; out: dx */
    g = make_geom(c->out, c->in[1]->shape, c->in[0]->shape, p);
    j.a = mf_cpu_ptr(c->in[0]), j.b = mf_cpu_ptr(c->in[1]);
    break;
  case MF_OP_CONV2D_BACKWARD_WEIGHT: /* in: dy, x; out: dw */
    g = make_geom(c->in[1], c->out->shape, c->in[0]->shape, p);
    j.a = mf_cpu_ptr(c->in[0]), j.b = mf_cpu_ptr(c->in[1]);
    break;
  default: return mf_fail(MF_ERR_ARG, "%s: not a convolution op", name);
  }
  j.g = &g;
  int nt = mf_get_num_threads();
  j.tasks = (int)(g.N < nt ? g.N : nt);
  if (j.tasks < 1) j.tasks = 1;
  size_t es = mf_dtype_size(dt);
  void *partial[64] = {0};
  if (j.tasks > 64) j.tasks = 64;
  if (c->op == MF_OP_CONV2D_BACKWARD_WEIGHT) {
    partial[0] = j.out;
    for (int t = 1; t < j.tasks; t++)
      if (!(partial[t] = mf_host_alloc((size_t)(g.O * g.K) * es))) j.failed = 1;
    j.partial = partial;
  }
  if (!j.failed) {
    if (j.tasks > 1) {
      openblas_set_num_threads(1);
      mf_parallel_for(j.tasks, 1, conv_run, &j);
      openblas_set_num_threads(nt);
    } else {
      conv_run(&j, 0, 1);
    }
  }
  if (c->op == MF_OP_CONV2D_BACKWARD_WEIGHT) {
    if (!j.failed) {
      int64_t n = g.O * g.K;
      for (int t = 1; t < j.tasks; t++) {
        if (dt == MF_F32) {
          float *o = j.out, *q = partial[t];
          for (int64_t i = 0; i < n; i++) o[i] += q[i];
        } else {
          double *o = j.out, *q = partial[t];
          for (int64_t i = 0; i < n; i++) o[i] += q[i];
        }
      }
    }
    for (int t = 1; t < j.tasks; t++) mf_host_free(partial[t], (size_t)(g.O * g.K) * es);
  }
  if (j.failed) return mf_fail(MF_ERR_MEMORY, "%s: out of memory for the im2col buffer", name);
  return MF_OK;
}

#else /* ---- the typed part: T = CONV_T, functions suffixed _S ---------------------------------- */

#define T CONV_T
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define F(name) CAT(name, S)

/* col (K rows, ldc apart; P columns) = im2col(x) for one image x (C, H, W). */
static void F(im2col)(T *col, int64_t ldc, const T *x, const geom *g) {
  int64_t r = 0;
  for (int64_t c = 0; c < g->C; c++)
    for (int64_t kh = 0; kh < g->KH; kh++)
      for (int64_t kw = 0; kw < g->KW; kw++, r++) {
        T *row = col + r * ldc;
        int64_t lo, hi;
        valid_range(g->OW, g->W, g->sw, g->pl, kw, &lo, &hi);
        for (int64_t oh = 0; oh < g->OH; oh++) {
          T *d = row + oh * g->OW;
          int64_t ih = oh * g->sh - g->pt + kh;
          if (ih < 0 || ih >= g->H) {
            memset(d, 0, (size_t)g->OW * sizeof(T));
            continue;
          }
          const T *src = x + (c * g->H + ih) * g->W + kw - g->pl; /* src[ow*sw] */
          for (int64_t ow = 0; ow < lo; ow++) d[ow] = 0;
          if (g->sw == 1) memcpy(d + lo, src + lo, (size_t)(hi - lo) * sizeof(T));
          else
            for (int64_t ow = lo; ow < hi; ow++) d[ow] = src[ow * g->sw];
          for (int64_t ow = hi; ow < g->OW; ow++) d[ow] = 0;
        }
      }
}

/* dx (C, H, W) += col2im(col), col as in im2col. */
static void F(col2im)(T *dx, const T *col, int64_t ldc, const geom *g) {
  int64_t r = 0;
  for (int64_t c = 0; c < g->C; c++)
    for (int64_t kh = 0; kh < g->KH; kh++)
      for (int64_t kw = 0; kw < g->KW; kw++, r++) {
        const T *row = col + r * ldc;
        int64_t lo, hi;
        valid_range(g->OW, g->W, g->sw, g->pl, kw, &lo, &hi);
        for (int64_t oh = 0; oh < g->OH; oh++) {
          int64_t ih = oh * g->sh - g->pt + kh;
          if (ih < 0 || ih >= g->H) continue;
          const T *s = row + oh * g->OW;
          T *d = dx + (c * g->H + ih) * g->W + kw - g->pl; /* d[ow*sw] */
          if (g->sw == 1)
            for (int64_t ow = lo; ow < hi; ow++) d[ow] += s[ow];
          else
            for (int64_t ow = lo; ow < hi; ow++) d[ow * g->sw] += s[ow];
        }
      }
}

static void F(conv_task)(conv_job *j, int t) {
  const geom *g = j->g;
  int64_t n0 = g->N * t / j->tasks, n1 = g->N * (t + 1) / j->tasks;
  int64_t K = g->K, P = g->P, O = g->O;
  size_t colbytes = g->direct ? 0 : (size_t)(K * P) * sizeof(T);
  T *col = colbytes ? mf_host_alloc(colbytes) : NULL;
  if (colbytes && !col) {
    j->failed = 1;
    return;
  }
  int64_t xsz = g->C * g->H * g->W, ysz = O * P;
  switch (j->op) {
  case MF_OP_CONV2D: {
    const T *x = j->a, *w = j->b, *bias = j->bias;
    T *y = j->out;
    for (int64_t n = n0; n < n1; n++) {
      const T *xn = x + n * xsz;
      T *yn = y + n * ysz;
      const T *B = xn;
      if (!g->direct) {
        F(im2col)(col, P, xn, g);
        B = col;
      }
      if (bias)
        for (int64_t o = 0; o < O; o++)
          for (int64_t q = 0; q < P; q++) yn[o * P + q] = bias[o];
      GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)P, (int)K, 1, w, (int)K, B,
           (int)P, bias ? 1 : 0, yn, (int)P);
    }
    break;
  }
  case MF_OP_CONV2D_BACKWARD_INPUT: {
    const T *dy = j->a, *w = j->b;
    T *dx = j->out;
    for (int64_t n = n0; n < n1; n++) {
      T *dxn = dx + n * xsz;
      T *C = g->direct ? dxn : col;
      GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)P, (int)O, 1, w, (int)K,
           dy + n * ysz, (int)P, 0, C, (int)P);
      if (!g->direct) {
        memset(dxn, 0, (size_t)xsz * sizeof(T));
        F(col2im)(dxn, col, P, g);
      }
    }
    break;
  }
  case MF_OP_CONV2D_BACKWARD_WEIGHT: {
    const T *dy = j->a, *x = j->b;
    T *dw = j->partial[t];
    if (n0 == n1) memset(dw, 0, (size_t)(O * K) * sizeof(T));
    for (int64_t n = n0; n < n1; n++) {
      const T *xn = x + n * xsz, *B = xn;
      if (!g->direct) {
        F(im2col)(col, P, xn, g);
        B = col;
      }
      GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)O, (int)K, (int)P, 1, dy + n * ysz,
           (int)P, B, (int)P, n == n0 ? 0 : 1, dw, (int)K);
    }
    break;
  }
  default: break;
  }
  if (col) mf_host_free(col, colbytes);
}

#undef T
#undef F
#undef CAT
#undef CAT_

#endif
