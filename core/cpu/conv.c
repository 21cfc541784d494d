/* conv.c — the CPU 2-D convolution kernels (float32 and float64): forward (with bias),
 * backward-input and backward-weight, as the front end ops_nn.c prepares them (dense tensors,
 * geometry in the mf_pool2d_params, ip[0] = 1 when the activations x/dx and y/dy are stored
 * channels-last, i.e. each image (H, W, C) rather than (C, H, W); the weight is (O, C, KH, KW)
 * either way). Also mf_cpu_transpose, the per-image layout change the kernels share.
 *
 * Method: im2col + GEMM per image. With K = C*KH*KW and P = OH*OW:
 *   forward          y[n] (O, P)  = w (O, K) @ col(x[n]) (K, P)  (+ bias per row)
 *   backward-input   dcol (K, P)  = w^T (K, O) @ dy[n] (O, P);   dx[n] = col2im(dcol)
 *   backward-weight  dw (O, K)   += dy[n] (O, P) @ col(x[n])^T (P, K)
 * A 1x1 convolution with stride 1 and no padding needs no col: col(x[n]) is x[n] itself.
 * One input channel with stride 1 (a network's first layer) has direct kernels for the forward
 * and the weight gradient instead: the GEMMs would have K = KH*KW only (see single_fwd).
 * float32 5x5 stride-1 convolutions with enough channels go to winograd.c first.
 * Images are spread over the thread pool, claimed one at a time; each task has its own buffers
 * and calls one-threaded BLAS (per-image GEMMs are too small for OpenBLAS's threads to pay, and
 * two levels of threads would oversubscribe the cores); a single image uses OpenBLAS's threads
 * instead. The weight gradient is accumulated per task over a fixed share of the images and the
 * partial sums added in task order, so that the result does not depend on timing.
 *
 * Channels-last differs only at the edges of the per-image work: an image with C > 1 is
 * transposed to (C, H, W) in the task's own buffer before im2col (after col2im for the input
 * gradient: the buffer is transposed back), and the GEMMs read and write y/dy as (P, O) instead
 * of (O, P) by their transpose flags; the direct one-channel kernels transpose y/dy a row at a
 * time. The float and double versions are generated from one definition: this file includes itself
 * twice with CONV_T (the element type), CONV_I (an integer type of its width) and S (the
 * suffix) defined.
 */
#ifndef CONV_T /* ---- the type-independent part -------------------------------------------- */

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "cpu/iter.h"
#include "cpu/kernels.h"

void openblas_set_num_threads(int);

/* the vector width of the direct kernels: AVX registers when the build has them */
#if defined(__AVX__)
#define VBYTES 32
#else
#define VBYTES 16
#endif

#if defined(__AVX__)
#include <immintrin.h>

/* b (8 rows, ldb apart) = the 8x8 block of a (rows lda apart) transposed, 4-byte elements */
static inline void tr8x8_4(const float *a, int64_t lda, float *b, int64_t ldb) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(a + i * lda);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; i++) {
    _mm256_storeu_ps(b + i * ldb, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(b + (i + 4) * ldb, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

/* the same for a 4x4 block of 8-byte elements */
static inline void tr4x4_8(const double *a, int64_t lda, double *b, int64_t ldb) {
  __m256d r0 = _mm256_loadu_pd(a), r1 = _mm256_loadu_pd(a + lda);
  __m256d r2 = _mm256_loadu_pd(a + 2 * lda), r3 = _mm256_loadu_pd(a + 3 * lda);
  __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
  __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
  _mm256_storeu_pd(b, _mm256_permute2f128_pd(t0, t2, 0x20));
  _mm256_storeu_pd(b + ldb, _mm256_permute2f128_pd(t1, t3, 0x20));
  _mm256_storeu_pd(b + 2 * ldb, _mm256_permute2f128_pd(t0, t2, 0x31));
  _mm256_storeu_pd(b + 3 * ldb, _mm256_permute2f128_pd(t1, t3, 0x31));
}
#endif

/* dst[c][r] = src[r][c] for r in [r0, r1), c in [c0, c1) (rows lds / ldd elements apart) */
static void tr_scalar(size_t es, const void *src, int64_t lds, void *dst, int64_t ldd, int64_t r0,
                      int64_t r1, int64_t c0, int64_t c1) {
  for (int64_t r = r0; r < r1; r++)
    for (int64_t c = c0; c < c1; c++)
      if (es == 4)
        ((uint32_t *)dst)[c * ldd + r] = ((const uint32_t *)src)[r * lds + c];
      else
        ((uint64_t *)dst)[c * ldd + r] = ((const uint64_t *)src)[r * lds + c];
}

void mf_cpu_transpose(size_t es, int64_t rows, int64_t cols, const void *src, int64_t lds,
                      void *dst, int64_t ldd) {
  enum { B = 32 }; /* blocks of B x B elements, in 8x8 (4x4) vector blocks where whole */
  for (int64_t r0 = 0; r0 < rows; r0 += B)
    for (int64_t c0 = 0; c0 < cols; c0 += B) {
      int64_t r1 = r0 + B < rows ? r0 + B : rows, c1 = c0 + B < cols ? c0 + B : cols;
#if defined(__AVX__)
      int64_t v = es == 4 ? 8 : 4;
      int64_t rv = r0 + (r1 - r0) / v * v, cv = c0 + (c1 - c0) / v * v;
      for (int64_t r = r0; r < rv; r += v)
        for (int64_t c = c0; c < cv; c += v) {
          if (es == 4)
            tr8x8_4((const float *)src + r * lds + c, lds, (float *)dst + c * ldd + r, ldd);
          else
            tr4x4_8((const double *)src + r * lds + c, lds, (double *)dst + c * ldd + r, ldd);
        }
      tr_scalar(es, src, lds, dst, ldd, r0, r1, cv, c1); /* the ragged right columns */
      tr_scalar(es, src, lds, dst, ldd, rv, r1, c0, cv); /* the ragged bottom rows */
#else
      tr_scalar(es, src, lds, dst, ldd, r0, r1, c0, c1);
#endif
    }
}

/* Geometry of one call. x (N, C, H, W), w (O, C, KH, KW), y (N, O, OH, OW) as logical shapes;
 * cl: x and y stored channels-last (image n of x at n*C*H*W as (H, W, C), of y as (P, O)). */
typedef struct geom {
  int64_t N, C, H, W, O, KH, KW, OH, OW;
  int64_t K, P;   /* C*KH*KW, OH*OW */
  int64_t so, sp; /* strides of y/dy within an image: channel o, position p (cl: 1, O; else P, 1) */
  bool cl;        /* channels-last activations */
  bool xt;        /* cl with C > 1: images of x/dx go through a (C, H, W) buffer */
  int sh, sw, pt, pl;
  bool nocol;  /* 1x1, stride 1, no padding: col(x) = x */
  bool single; /* one input channel, stride 1: the direct kernels (forward, weight gradient) */
  int64_t Wq;  /* single: row stride of the padded planes, a multiple of the vector length */
} geom;

static geom make_geom(const mf_tensor *x_or_dx, const int64_t *wshape, const int64_t *yshape,
                      const mf_pool2d_params *p, bool cl) {
  geom g;
  g.N = x_or_dx->shape[0], g.C = x_or_dx->shape[1], g.H = x_or_dx->shape[2],
  g.W = x_or_dx->shape[3];
  g.O = wshape[0], g.KH = wshape[2], g.KW = wshape[3];
  g.OH = yshape[2], g.OW = yshape[3];
  g.K = g.C * g.KH * g.KW, g.P = g.OH * g.OW;
  g.cl = cl, g.xt = cl && g.C > 1;
  g.so = cl ? 1 : g.P, g.sp = cl ? g.O : 1;
  g.sh = p->stride[0], g.sw = p->stride[1], g.pt = p->pad[0], g.pl = p->pad[1];
  g.nocol = g.KH == 1 && g.KW == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 &&
            g.OH == g.H && g.OW == g.W;
  g.single = g.C == 1 && g.sh == 1 && g.sw == 1 && !g.nocol;
  int64_t wq = g.W + g.pl + p->pad[3], need = g.OW + g.KW - 1;
  g.Wq = ((wq > need ? wq : need) + 7) / 8 * 8;
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
  int failed;        /* a task could not allocate its buffer */
  atomic_llong next; /* forward, backward-input: the next unclaimed image */
} conv_job;

/* Steps *n through the images of task t: its fixed share for the weight gradient (whose partial
 * sums must not depend on timing), else the next unclaimed image, so that a thread slowed down by
 * another process does not hold the others up. *n starts at -1. */
static bool next_image(conv_job *j, int t, int64_t *n) {
  int64_t N = j->g->N;
  if (j->op == MF_OP_CONV2D_BACKWARD_WEIGHT) {
    *n = *n < 0 ? N * t / j->tasks : *n + 1;
    return *n < N * (t + 1) / j->tasks;
  }
  *n = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
  return *n < N;
}

static void conv_task(conv_job *j, int t); /* defined after the typed parts */

static void conv_run(void *ctx, int64_t b, int64_t e) {
  for (int64_t t = b; t < e; t++) conv_task(ctx, (int)t);
}

#define CONV_T float
#define CONV_I int32_t
#define S f32
#define GEMM cblas_sgemm
#include "cpu/conv.c"
#undef CONV_T
#undef CONV_I
#undef S
#undef GEMM
#define CONV_T double
#define CONV_I int64_t
#define S f64
#define GEMM cblas_dgemm
#include "cpu/conv.c"
#undef CONV_T
#undef CONV_I
#undef S
#undef GEMM

static void conv_task(conv_job *j, int t) {
  if (j->dt == MF_F32)
    conv_task_f32(j, t);
  else
    conv_task_f64(j, t);
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
  bool cl = c->ip[0] != 0;
  geom g;
  conv_job j = {.dt = dt, .op = c->op, .out = mf_cpu_ptr(c->out)};
  atomic_init(&j.next, 0);
  switch (c->op) {
  case MF_OP_CONV2D: /* in: x, w, bias */
    g = make_geom(c->in[0], c->in[1]->shape, c->out->shape, p, cl);
    j.a = mf_cpu_ptr(c->in[0]), j.b = mf_cpu_ptr(c->in[1]);
    j.bias = c->nin > 2 && c->in[2] ? mf_cpu_ptr(c->in[2]) : NULL;
    break;
  case MF_OP_CONV2D_BACKWARD_INPUT: /* in: dy, w; out: dx */
    g = make_geom(c->out, c->in[1]->shape, c->in[0]->shape, p, cl);
    j.a = mf_cpu_ptr(c->in[0]), j.b = mf_cpu_ptr(c->in[1]);
    break;
  case MF_OP_CONV2D_BACKWARD_WEIGHT: /* in: dy, x; out: dw */
    g = make_geom(c->in[1], c->out->shape, c->in[0]->shape, p, cl);
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

#else /* ---- the typed part: T = CONV_T, functions suffixed _S ------------------------ */

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
          if (g->sw == 1)
            memcpy(d + lo, src + lo, (size_t)(hi - lo) * sizeof(T));
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

/* ---- one input channel, stride 1: direct kernels ---------------------------------------------
 * The image is copied into a zero-padded plane P with row stride Wq, so that output (oh, ow) is
 * sum over taps of w[tap] * P[q + kh*Wq + kw] with q = oh*Wq + ow. Outputs are computed for every
 * q in [0, OH*Wq) (the columns ow >= OW are junk and dropped), in vectors of VL along q. */

typedef T F(vec) __attribute__((vector_size(VBYTES)));
typedef T F(vecu) __attribute__((vector_size(VBYTES), aligned(sizeof(T)))); /* unaligned */
#define VL ((int)(VBYTES / sizeof(T)))
#define LOADV(p) (*(const F(vecu) *)(p))
#define STOREV(p, v) (*(F(vecu) *)(p) = (v))
/* keeps a loaded vector in a register: gcc would otherwise fold the load into every FMA using it,
 * which doubles or triples the loads of these load-bound loops */
#if defined(__AVX__)
#define IN_REG(v) __asm__("" : "+x"(v))
#else
#define IN_REG(v) (void)(v)
#endif

typedef CONV_I F(ivec) __attribute__((vector_size(VBYTES))); /* integers of T's width */

static inline F(vec) F(splat)(T s) { /* a broadcast (a loop or {} + s compile to worse) */
#if defined(__clang__)
  return (F(vec)){0} + s; /* clang has no __builtin_shuffle; a scalar operand broadcasts */
#else
  return __builtin_shuffle((F(vec)){s}, (F(ivec)){0});
#endif
}

/* P ((OH + KH) rows of Wq) = x (H, W) placed at (pt, pl), zeros elsewhere */
static void F(pad_plane)(T *P, const T *x, const geom *g) {
  memset(P, 0, (size_t)((g->OH + g->KH) * g->Wq) * sizeof(T));
  for (int64_t h = 0; h < g->H; h++) {
    int64_t r = h + g->pt;
    if (r >= g->OH + g->KH) break;
    memcpy(P + r * g->Wq + g->pl, x + h * g->W, (size_t)g->W * sizeof(T));
  }
}

/* Y rows o0 .. o0+R-1 (stride OH*Wq) = w rows (taps) * P, for q blocks of NB vectors */
static inline __attribute__((always_inline)) void F(single_fwd_block)(int R, int NB, T *Y,
                                                                      int64_t ys, const T *w,
                                                                      int64_t taps, const T *P,
                                                                      int64_t q, const geom *g) {
  F(vec) acc[6][2];
  for (int r = 0; r < R; r++)
    for (int b = 0; b < NB; b++) acc[r][b] = (F(vec)){0};
  for (int64_t kh = 0; kh < g->KH; kh++)
    for (int64_t kw = 0; kw < g->KW; kw++) {
      const T *src = P + q + kh * g->Wq + kw;
      F(vec) xv[2];
      for (int b = 0; b < NB; b++) {
        xv[b] = LOADV(src + b * VL);
        IN_REG(xv[b]);
      }
      for (int r = 0; r < R; r++) {
        F(vec) wv = F(splat)(w[r * taps + kh * g->KW + kw]);
        for (int b = 0; b < NB; b++) acc[r][b] += wv * xv[b];
      }
    }
  for (int r = 0; r < R; r++)
    for (int b = 0; b < NB; b++) STOREV(Y + r * ys + q + b * VL, acc[r][b]);
}

/* y (O, OH, OW), or (OH, OW, O) when cl, = w (O, KH*KW) conv P, + bias; Y: scratch (O, OH*Wq) */
static void F(single_fwd)(T *y, const T *w, const T *bias, const T *P, T *Y, const geom *g) {
  int64_t taps = g->KH * g->KW, ys = g->OH * g->Wq, nv = ys / VL;
  for (int64_t o0 = 0; o0 < g->O; o0 += 6) { /* 6 rows x 2 vectors: 12 sums in registers */
    int R = (int)(g->O - o0 < 6 ? g->O - o0 : 6);
    const T *wo = w + o0 * taps;
    T *Yo = Y + o0 * ys;
    for (int64_t v = 0; v < nv; v += 2) {
      int NB = nv - v >= 2 ? 2 : 1;
#define FB(r)                                                                                      \
  NB == 2 ? F(single_fwd_block)(r, 2, Yo, ys, wo, taps, P, v * VL, g)                              \
          : F(single_fwd_block)(r, 1, Yo, ys, wo, taps, P, v * VL, g)
      switch (R) {
      case 6: FB(6); break;
      case 5: FB(5); break;
      case 4: FB(4); break;
      case 3: FB(3); break;
      case 2: FB(2); break;
      default: FB(1); break;
      }
#undef FB
    }
  }
  if (g->cl) { /* y (OH, OW, O): the bias added in Y, then each output row transposed */
    if (bias)
      for (int64_t o = 0; o < g->O; o++)
        for (int64_t q = 0; q < ys; q++) Y[o * ys + q] += bias[o];
    for (int64_t oh = 0; oh < g->OH; oh++)
      mf_cpu_transpose(sizeof(T), g->O, g->OW, Y + oh * g->Wq, ys, y + oh * g->OW * g->O, g->O);
    return;
  }
  for (int64_t o = 0; o < g->O; o++) {
    T b = bias ? bias[o] : 0;
    for (int64_t oh = 0; oh < g->OH; oh++) {
      const T *s = Y + o * ys + oh * g->Wq;
      T *d = y + (o * g->OH + oh) * g->OW;
      for (int64_t ow = 0; ow < g->OW; ow++) d[ow] = s[ow] + b;
    }
  }
}

static inline T F(hsum)(F(vec) v) {
  T s = 0;
  for (int i = 0; i < VL; i++) s += v[i];
  return s;
}

/* dw rows o0.. (O, taps) += sum over q of D[o][q] * P[q + off(tap)] for 3 rows x 3 taps */
static inline __attribute__((always_inline)) void F(single_bwdw_block)(int R, int NT, T *dw,
                                                                       int64_t taps, int64_t t0,
                                                                       const T *D, int64_t ds,
                                                                       const T *P, const geom *g) {
  F(vec) acc[3][3];
  int64_t off[3];
  for (int t = 0; t < NT; t++) off[t] = (t0 + t) / g->KW * g->Wq + (t0 + t) % g->KW;
  for (int r = 0; r < R; r++)
    for (int t = 0; t < NT; t++) acc[r][t] = (F(vec)){0};
  for (int64_t q = 0; q < ds; q += VL) {
    F(vec) d[3], x[3];
    for (int r = 0; r < R; r++) {
      d[r] = LOADV(D + r * ds + q);
      IN_REG(d[r]);
    }
    for (int t = 0; t < NT; t++) {
      x[t] = LOADV(P + q + off[t]);
      IN_REG(x[t]);
    }
    for (int r = 0; r < R; r++)
      for (int t = 0; t < NT; t++) acc[r][t] += d[r] * x[t];
  }
  for (int r = 0; r < R; r++)
    for (int t = 0; t < NT; t++) dw[r * taps + t0 + t] += F(hsum)(acc[r][t]);
}

/* dw (O, KH*KW) += dy (O, OH, OW) (cl: (OH, OW, O)) correlated with P; D: scratch (O, OH*Wq) */
static void F(single_bwdw)(T *dw, const T *dy, const T *P, T *D, const geom *g) {
  int64_t taps = g->KH * g->KW, ds = g->OH * g->Wq;
  for (int64_t oh = 0; oh < g->OH; oh++) { /* dy with zero junk columns */
    if (g->cl)                             /* dy (OH, OW, O): an output row transposed */
      mf_cpu_transpose(sizeof(T), g->OW, g->O, dy + oh * g->OW * g->O, g->O, D + oh * g->Wq, ds);
    for (int64_t o = 0; o < g->O; o++) {
      T *d = D + o * ds + oh * g->Wq;
      if (!g->cl) memcpy(d, dy + (o * g->OH + oh) * g->OW, (size_t)g->OW * sizeof(T));
      memset(d + g->OW, 0, (size_t)(g->Wq - g->OW) * sizeof(T));
    }
  }
  for (int64_t o0 = 0; o0 < g->O; o0 += 3) {
    int R = (int)(g->O - o0 < 3 ? g->O - o0 : 3);
    for (int64_t t0 = 0; t0 < taps; t0 += 3) {
      int NT = (int)(taps - t0 < 3 ? taps - t0 : 3);
#define BW(r, n) F(single_bwdw_block)(r, n, dw + o0 * taps, taps, t0, D + o0 * ds, ds, P, g)
      if (R == 3 && NT == 3)
        BW(3, 3);
      else if (R == 3)
        NT == 2 ? BW(3, 2) : BW(3, 1);
      else if (R == 2)
        NT == 3 ? BW(2, 3) : NT == 2 ? BW(2, 2) : BW(2, 1);
      else
        NT == 3 ? BW(1, 3) : NT == 2 ? BW(1, 2) : BW(1, 1);
#undef BW
    }
  }
}

#undef VL
#undef LOADV
#undef STOREV
#undef IN_REG

static void F(conv_task)(conv_job *j, int t) {
  const geom *g = j->g;
  int64_t K = g->K, P = g->P, O = g->O;
  int64_t xsz = g->C * g->H * g->W, ysz = O * P;
  if (g->single && j->op != MF_OP_CONV2D_BACKWARD_INPUT) {
    size_t pbytes = (size_t)((g->OH + g->KH) * g->Wq) * sizeof(T);
    size_t sbytes = (size_t)(O * g->OH * g->Wq) * sizeof(T);
    T *Pl = mf_host_alloc(pbytes), *scratch = mf_host_alloc(sbytes);
    if (!Pl || !scratch) {
      j->failed = 1;
    } else if (j->op == MF_OP_CONV2D) {
      for (int64_t n = -1; next_image(j, t, &n);) {
        F(pad_plane)(Pl, (const T *)j->a + n * xsz, g);
        F(single_fwd)((T *)j->out + n * ysz, j->b, j->bias, Pl, scratch, g);
      }
    } else {
      T *dw = j->partial[t];
      memset(dw, 0, (size_t)(O * K) * sizeof(T));
      for (int64_t n = -1; next_image(j, t, &n);) {
        F(pad_plane)(Pl, (const T *)j->b + n * xsz, g);
        F(single_bwdw)(dw, (const T *)j->a + n * ysz, Pl, scratch, g);
      }
    }
    if (Pl) mf_host_free(Pl, pbytes);
    if (scratch) mf_host_free(scratch, sbytes);
    return;
  }
  size_t colbytes = g->nocol ? 0 : (size_t)(K * P) * sizeof(T);
  size_t xtbytes = g->xt ? (size_t)xsz * sizeof(T) : 0; /* an image of x/dx as (C, H, W) */
  T *col = colbytes ? mf_host_alloc(colbytes) : NULL, *xt = xtbytes ? mf_host_alloc(xtbytes) : NULL;
  if ((colbytes && !col) || (xtbytes && !xt)) {
    j->failed = 1;
    goto done;
  }
  /* y/dy of an image: (O, P) row-major, or (P, O) = its transpose when channels-last */
  const CBLAS_TRANSPOSE ytr = g->cl ? CblasTrans : CblasNoTrans;
  const int ldy = (int)(g->cl ? O : P);
  switch (j->op) {
  case MF_OP_CONV2D: {
    const T *x = j->a, *w = j->b, *bias = j->bias;
    T *y = j->out;
    for (int64_t n = -1; next_image(j, t, &n);) {
      const T *xn = x + n * xsz;
      T *yn = y + n * ysz;
      if (g->xt) {
        mf_cpu_transpose(sizeof(T), g->H * g->W, g->C, xn, g->C, xt, g->H * g->W);
        xn = xt;
      }
      const T *B = xn;
      if (!g->nocol) {
        F(im2col)(col, P, xn, g);
        B = col;
      }
      if (bias)
        for (int64_t o = 0; o < O; o++)
          for (int64_t q = 0; q < P; q++) yn[o * g->so + q * g->sp] = bias[o];
      if (g->cl) /* y (P, O) = col^T (P, K) @ w^T (K, O) */
        GEMM(CblasRowMajor, CblasTrans, CblasTrans, (int)P, (int)O, (int)K, 1, B, (int)P, w, (int)K,
             bias ? 1 : 0, yn, (int)O);
      else
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)P, (int)K, 1, w, (int)K, B,
             (int)P, bias ? 1 : 0, yn, (int)P);
    }
    break;
  }
  case MF_OP_CONV2D_BACKWARD_INPUT: {
    const T *dy = j->a, *w = j->b;
    T *dx = j->out;
    for (int64_t n = -1; next_image(j, t, &n);) {
      T *dxn = dx + n * xsz, *dxc = g->xt ? xt : dxn; /* dx of the image as (C, H, W) */
      T *C = g->nocol ? dxc : col;
      /* dcol (K, P) = w^T (K, O) @ dy (O, P) */
      GEMM(CblasRowMajor, CblasTrans, ytr, (int)K, (int)P, (int)O, 1, w, (int)K, dy + n * ysz, ldy,
           0, C, (int)P);
      if (!g->nocol) {
        memset(dxc, 0, (size_t)xsz * sizeof(T));
        F(col2im)(dxc, col, P, g);
      }
      if (g->xt) mf_cpu_transpose(sizeof(T), g->C, g->H * g->W, xt, g->H * g->W, dxn, g->C);
    }
    break;
  }
  case MF_OP_CONV2D_BACKWARD_WEIGHT: {
    const T *dy = j->a, *x = j->b;
    T *dw = j->partial[t];
    memset(dw, 0, (size_t)(O * K) * sizeof(T));
    for (int64_t n = -1; next_image(j, t, &n);) {
      const T *xn = x + n * xsz;
      if (g->xt) {
        mf_cpu_transpose(sizeof(T), g->H * g->W, g->C, xn, g->C, xt, g->H * g->W);
        xn = xt;
      }
      const T *B = xn;
      if (!g->nocol) {
        F(im2col)(col, P, xn, g);
        B = col;
      }
      /* dw (O, K) += dy (O, P) @ col^T (P, K) */
      GEMM(CblasRowMajor, ytr, CblasTrans, (int)O, (int)K, (int)P, 1, dy + n * ysz, ldy, B, (int)P,
           1, dw, (int)K);
    }
    break;
  }
  default: break;
  }
done:
  if (col) mf_host_free(col, colbytes);
  if (xt) mf_host_free(xt, xtbytes);
}

#undef T
#undef F
#undef CAT
#undef CAT_

#endif
