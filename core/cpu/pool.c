/* pool.c — the CPU 2-D pooling kernels (float32 and float64): max pooling with int64 argmax
 * indices (flat ih*W + iw within each (n, c) plane) and its backward (a scatter of the output
 * gradient to those indices), average pooling and its backward. Padding cells are ignored by max
 * pooling and count as zeros for average pooling only when count_include_pad is set (otherwise
 * the divisor is the number of input cells in the window). The front end (ops_nn.c) guarantees
 * that every window holds at least one input cell. NaN wins a max window (the first NaN in
 * row-major order), as in torch.
 *
 * Work is split over the thread pool by (n, c) planes. The common 2x2 stride-2 unpadded window
 * has its own loop. With ip[0] = 1 the tensors (x, y, indices, dx, dy) are stored channels-last
 * (each image (H, W, C)): the work is split by images and the loops visit the same windows in the
 * same order with the channel loop innermost, over contiguous memory (the *_cl functions); the
 * indices stay positions ih*W + iw within a plane, so both layouts give the same values. The float
 * and double versions come from one definition: this file includes itself with T and S (the suffix)
 * defined.
 */
#ifndef POOL_T /* ---- the type-independent part -------------------------------------------- */

#include <string.h>

#include "cpu/iter.h"
#include "cpu/kernels.h"

typedef struct pool_job {
  const void *in;     /* x, or dy for the backwards */
  const int64_t *idx; /* max pooling indices (N, C, OH, OW), or NULL */
  void *out;          /* y, or dx */
  int64_t *out_idx;   /* max pooling forward: indices to write, or NULL */
  int64_t H, W, OH, OW;
  int kh, kw, sh, sw, pt, pl;
  bool include_pad;
  int bad;   /* backward: an index out of range */
  int64_t C; /* channels-last: the channels */
} pool_job;

/* Window rows [h0, h1) of output row oh, clipped to the input; likewise columns. */
static inline void window(int64_t o, int s, int p, int k, int64_t n, int64_t *a, int64_t *b) {
  int64_t s0 = o * s - p, s1 = s0 + k;
  *a = s0 < 0 ? 0 : s0;
  *b = s1 > n ? n : s1;
}

#define POOL_T float
#define S f32
#include "cpu/pool.c"
#undef POOL_T
#undef S
#define POOL_T double
#define S f64
#include "cpu/pool.c"
#undef POOL_T
#undef S

mf_status mf_cpu_pool2d(mf_device *dev, const mf_call *c) {
  (void)dev;
  const char *name = mf_op_name(c->op);
  bool backward = c->op == MF_OP_MAX_POOL2D_BACKWARD || c->op == MF_OP_AVG_POOL2D_BACKWARD;
  if (!c->out || c->nin < 1 || (c->op != MF_OP_MAX_POOL2D_BACKWARD && !c->params) ||
      (c->op == MF_OP_MAX_POOL2D_BACKWARD && c->nin < 2))
    return mf_fail(MF_ERR_ARG, "%s: malformed kernel call", name);
  mf_dtype dt = c->out->dtype;
  if (dt != MF_F32 && dt != MF_F64)
    return mf_fail(MF_ERR_DTYPE, "%s: the CPU kernel takes float32 or float64, got %s", name,
                   mf_dtype_name(dt));
  /* x/dx is the big side, y/dy the small one */
  const mf_tensor *big = backward ? c->out : c->in[0], *small = backward ? c->in[0] : c->out;
  pool_job j = {.in = mf_cpu_ptr(c->in[0]),
                .out = mf_cpu_ptr(c->out),
                .H = big->shape[2],
                .W = big->shape[3],
                .OH = small->shape[2],
                .OW = small->shape[3]};
  if (c->params) {
    const mf_pool2d_params *p = c->params;
    j.kh = p->kernel[0], j.kw = p->kernel[1], j.sh = p->stride[0], j.sw = p->stride[1];
    j.pt = p->pad[0], j.pl = p->pad[1], j.include_pad = p->count_include_pad;
  }
  if (c->op == MF_OP_MAX_POOL2D && c->out2) j.out_idx = mf_cpu_ptr(c->out2);
  if (c->op == MF_OP_MAX_POOL2D_BACKWARD) j.idx = mf_cpu_ptr(c->in[1]);
  int64_t planes = big->shape[0] * big->shape[1];
  int64_t per_plane =
      j.H * j.W +
      j.OH * j.OW * (c->op == MF_OP_AVG_POOL2D || c->op == MF_OP_MAX_POOL2D ? j.kh * j.kw : 1);
  int64_t grain = 32768 / (per_plane > 0 ? per_plane : 1) + 1;
  bool cl = c->ip[0] != 0, f32 = dt == MF_F32;
  mf_range_fn fn = NULL;
  switch (c->op) {
  case MF_OP_MAX_POOL2D:
    fn = cl ? (f32 ? max_fwd_cl_f32 : max_fwd_cl_f64) : (f32 ? max_fwd_f32 : max_fwd_f64);
    break;
  case MF_OP_MAX_POOL2D_BACKWARD:
    fn = cl ? (f32 ? max_bwd_cl_f32 : max_bwd_cl_f64) : (f32 ? max_bwd_f32 : max_bwd_f64);
    break;
  case MF_OP_AVG_POOL2D:
    fn = cl ? (f32 ? avg_fwd_cl_f32 : avg_fwd_cl_f64) : (f32 ? avg_fwd_f32 : avg_fwd_f64);
    break;
  case MF_OP_AVG_POOL2D_BACKWARD:
    fn = cl ? (f32 ? avg_bwd_cl_f32 : avg_bwd_cl_f64) : (f32 ? avg_bwd_f32 : avg_bwd_f64);
    break;
  default: return mf_fail(MF_ERR_ARG, "%s: not a pooling op", name);
  }
  if (cl) { /* by images: C planes each */
    j.C = big->shape[1];
    grain = (grain + j.C - 1) / (j.C > 0 ? j.C : 1);
    planes = big->shape[0];
  }
  mf_parallel_for(planes, grain, fn, &j);
  if (j.bad)
    return mf_fail(MF_ERR_INDEX, "%s: an index is outside the %lldx%lld input plane", name,
                   (long long)j.H, (long long)j.W);
  return MF_OK;
}

#else /* ---- the typed part: T = POOL_T, functions suffixed _S ------------------------ */

#define T POOL_T
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define F(name) CAT(name, S)

/* planes [b, e): y = max over each window, idx = its position */
static void F(max_fwd)(void *ctx, int64_t b, int64_t e) {
  pool_job *j = ctx;
  const int64_t H = j->H, W = j->W, OH = j->OH, OW = j->OW;
  bool two = j->kh == 2 && j->kw == 2 && j->sh == 2 && j->sw == 2 && j->pt == 0 && j->pl == 0 &&
             2 * OH <= H && 2 * OW <= W; /* no padding used */
  for (int64_t pl = b; pl < e; pl++) {
    const T *x = (const T *)j->in + pl * H * W;
    T *y = (T *)j->out + pl * OH * OW;
    int64_t *ix = j->out_idx ? j->out_idx + pl * OH * OW : NULL;
    if (two) { /* 2x2 stride 2, every window inside */
      for (int64_t oh = 0; oh < OH; oh++) {
        const T *r0 = x + 2 * oh * W, *r1 = r0 + W;
        T *yo = y + oh * OW;
        for (int64_t ow = 0; ow < OW; ow++) {
          T a = r0[2 * ow], bb = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
          int64_t p = 2 * oh * W + 2 * ow, pa = p;
          T m = a; /* a later cell wins when larger, or when it is the first NaN */
          if (bb > m || (bb != bb && m == m)) m = bb, pa = p + 1;
          if (c > m || (c != c && m == m)) m = c, pa = p + W;
          if (d > m || (d != d && m == m)) m = d, pa = p + W + 1;
          yo[ow] = m;
          if (ix) ix[oh * OW + ow] = pa;
        }
      }
      continue;
    }
    for (int64_t oh = 0; oh < OH; oh++) {
      int64_t h0, h1;
      window(oh, j->sh, j->pt, j->kh, H, &h0, &h1);
      for (int64_t ow = 0; ow < OW; ow++) {
        int64_t w0, w1;
        window(ow, j->sw, j->pl, j->kw, W, &w0, &w1);
        T m = x[h0 * W + w0];
        int64_t at = h0 * W + w0;
        for (int64_t ih = h0; ih < h1 && m == m; ih++)
          for (int64_t iw = w0; iw < w1; iw++) {
            T v = x[ih * W + iw];
            if (v > m || v != v) {
              m = v, at = ih * W + iw;
              if (v != v) break;
            }
          }
        y[oh * OW + ow] = m;
        if (ix) ix[oh * OW + ow] = at;
      }
    }
  }
}

/* planes [b, e): dx = 0, then dx[idx] += dy */
static void F(max_bwd)(void *ctx, int64_t b, int64_t e) {
  pool_job *j = ctx;
  const int64_t HW = j->H * j->W, OHW = j->OH * j->OW;
  for (int64_t pl = b; pl < e; pl++) {
    const T *dy = (const T *)j->in + pl * OHW;
    const int64_t *ix = j->idx + pl * OHW;
    T *dx = (T *)j->out + pl * HW;
    memset(dx, 0, (size_t)HW * sizeof(T));
    for (int64_t q = 0; q < OHW; q++) {
      int64_t i = ix[q];
      if (i < 0 || i >= HW) {
        j->bad = 1;
        continue;
      }
      dx[i] += dy[q];
    }
  }
}

/* the divisor of window (oh, ow) */
static inline T F(avg_div)(const pool_job *j, int64_t h0, int64_t h1, int64_t w0, int64_t w1) {
  if (j->include_pad) return (T)(j->kh * j->kw);
  return (T)((h1 - h0) * (w1 - w0));
}

static void F(avg_fwd)(void *ctx, int64_t b, int64_t e) {
  pool_job *j = ctx;
  const int64_t H = j->H, W = j->W, OH = j->OH, OW = j->OW;
  for (int64_t pl = b; pl < e; pl++) {
    const T *x = (const T *)j->in + pl * H * W;
    T *y = (T *)j->out + pl * OH * OW;
    for (int64_t oh = 0; oh < OH; oh++) {
      int64_t h0, h1;
      window(oh, j->sh, j->pt, j->kh, H, &h0, &h1);
      for (int64_t ow = 0; ow < OW; ow++) {
        int64_t w0, w1;
        window(ow, j->sw, j->pl, j->kw, W, &w0, &w1);
        T s = 0;
        for (int64_t ih = h0; ih < h1; ih++)
          for (int64_t iw = w0; iw < w1; iw++) s += x[ih * W + iw];
        y[oh * OW + ow] = s / F(avg_div)(j, h0, h1, w0, w1);
      }
    }
  }
}

static void F(avg_bwd)(void *ctx, int64_t b, int64_t e) {
  pool_job *j = ctx;
  const int64_t H = j->H, W = j->W, OH = j->OH, OW = j->OW;
  for (int64_t pl = b; pl < e; pl++) {
    const T *dy = (const T *)j->in + pl * OH * OW;
    T *dx = (T *)j->out + pl * H * W;
    memset(dx, 0, (size_t)(H * W) * sizeof(T));
    for (int64_t oh = 0; oh < OH; oh++) {
      int64_t h0, h1;
      window(oh, j->sh, j->pt, j->kh, H, &h0, &h1);
      for (int64_t ow = 0; ow < OW; ow++) {
        int64_t w0, w1;
        window(ow, j->sw, j->pl, j->kw, W, &w0, &w1);
        T g = dy[oh * OW + ow] / F(avg_div)(j, h0, h1, w0, w1);
        for (int64_t ih = h0; ih < h1; ih++)
          for (int64_t iw = w0; iw < w1; iw++) dx[ih * W + iw] += g;
      }
    }
  }
}

/* ---- channels-last: images [b, e), each (H, W, C); the same windows, the c loop innermost ---- */

/* the window of output (oh, ow): rows [h0, h1), columns [w0, w1) */
#define CL_WINDOW                                                                                  \
  int64_t h0, h1, w0, w1;                                                                          \
  window(oh, j->sh, j->pt, j->kh, H, &h0, &h1);                                                    \
  window(ow, j->sw, j->pl, j->kw, W, &w0, &w1);

static void F(max_fwd_cl)(void *ctx, int64_t b, int64_t e) {
  pool_job *j = ctx;
  const int64_t H = j->H, W = j->W, OH = j->OH, OW = j->OW, C = j->C;
  for (int64_t n = b; n < e; n++) {
    const T *x = (const T *)j->in + n * H * W * C;
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++) {
        CL_WINDOW
        int64_t q = (n * OH + oh) * OW + ow;
        T *y = (T *)j->out + q * C;
        int64_t *ix = j->out_idx ? j->out_idx + q * C : NULL, first = h0 * W + w0;
        memcpy(y, x + first * C, (size_t)C * sizeof(T));
        if (ix)
          for (int64_t c = 0; c < C; c++) ix[c] = first;
        for (int64_t ih = h0; ih < h1; ih++)
          for (int64_t iw = ih == h0 ? w0 + 1 : w0; iw < w1; iw++) {
            const T *v = x + (ih * W + iw) * C;
            /* a later cell wins when larger, or when it is the first NaN (as in max_fwd) */
            if (ix) { /* branch-free, so that it vectorises */
              int64_t at = ih * W + iw;
              for (int64_t c = 0; c < C; c++) {
                bool take = v[c] > y[c] || (v[c] != v[c] && y[c] == y[c]);
                y[c] = take ? v[c] : y[c];
                ix[c] = take ? at : ix[c];
              }
            } else {
              for (int64_t c = 0; c < C; c++) {
                bool take = v[c] > y[c] || (v[c] != v[c] && y[c] == y[c]);
                y[c] = take ? v[c] : y[c];
              }
            }
          }
      }
  }
}

static void F(max_bwd_cl)(void *ctx, int64_t b, int64_t e) {
  pool_job *j = ctx;
  const int64_t HW = j->H * j->W, OHW = j->OH * j->OW, C = j->C;
  for (int64_t n = b; n < e; n++) {
    const T *dy = (const T *)j->in + n * OHW * C;
    const int64_t *ix = j->idx + n * OHW * C;
    T *dx = (T *)j->out + n * HW * C;
    memset(dx, 0, (size_t)(HW * C) * sizeof(T));
    for (int64_t q = 0; q < OHW * C; q += C)
      for (int64_t c = 0; c < C; c++) {
        int64_t i = ix[q + c];
        if (i < 0 || i >= HW) {
          j->bad = 1;
          continue;
        }
        dx[i * C + c] += dy[q + c];
      }
  }
}

static void F(avg_fwd_cl)(void *ctx, int64_t b, int64_t e) {
  pool_job *j = ctx;
  const int64_t H = j->H, W = j->W, OH = j->OH, OW = j->OW, C = j->C;
  for (int64_t n = b; n < e; n++) {
    const T *x = (const T *)j->in + n * H * W * C;
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++) {
        CL_WINDOW
        T *y = (T *)j->out + ((n * OH + oh) * OW + ow) * C;
        memset(y, 0, (size_t)C * sizeof(T));
        for (int64_t ih = h0; ih < h1; ih++)
          for (int64_t iw = w0; iw < w1; iw++) {
            const T *v = x + (ih * W + iw) * C;
            for (int64_t c = 0; c < C; c++) y[c] += v[c];
          }
        T div = F(avg_div)(j, h0, h1, w0, w1);
        for (int64_t c = 0; c < C; c++) y[c] /= div;
      }
  }
}

static void F(avg_bwd_cl)(void *ctx, int64_t b, int64_t e) {
  pool_job *j = ctx;
  const int64_t H = j->H, W = j->W, OH = j->OH, OW = j->OW, C = j->C;
  for (int64_t n = b; n < e; n++) {
    T *dx = (T *)j->out + n * H * W * C;
    memset(dx, 0, (size_t)(H * W * C) * sizeof(T));
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++) {
        CL_WINDOW
        const T *dy = (const T *)j->in + ((n * OH + oh) * OW + ow) * C;
        T div = F(avg_div)(j, h0, h1, w0, w1);
        for (int64_t ih = h0; ih < h1; ih++)
          for (int64_t iw = w0; iw < w1; iw++) {
            T *d = dx + (ih * W + iw) * C;
            for (int64_t c = 0; c < C; c++) d[c] += dy[c] / div;
          }
      }
  }
}

#undef CL_WINDOW

#undef T
#undef F
#undef CAT
#undef CAT_

#endif
