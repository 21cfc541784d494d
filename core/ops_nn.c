/* ops_nn.c — front ends of the neural-network ops: conv2d (forward, backward-input,
 * backward-weight), max/avg pooling and their backwards, softmax/log_softmax and their backwards,
 * gather, scatter_add, the dropout mask and cross-entropy; also mf_same_padding.
 *
 * Each checks its arguments (dtypes, shapes, devices, geometry) with a message naming the op and
 * the shapes involved, makes the inputs contiguous, allocates the outputs on the input's device
 * and dispatches. What the kernels receive (the CPU ones in cpu/conv.c, pool.c, softmax.c,
 * gather.c; a CUDA backend likewise):
 * - CONV2D: in[0] = x (N, C, H, W), in[1] = w (O, C, KH, KW), in[2] = bias (O) or NULL
 *   (nin = 2 or 3); out (N, O, OH, OW); params = the mf_pool2d_params (stride, pad).
 * - CONV2D_BACKWARD_INPUT: in[0] = dout (N, O, OH, OW), in[1] = w; out = dx (N, C, H, W).
 * - CONV2D_BACKWARD_WEIGHT: in[0] = dout, in[1] = x; out = dw (O, C, KH, KW).
 * - MAX_POOL2D: in[0] = x; out (N, C, OH, OW); out2 = int64 indices of the same shape or NULL.
 * - MAX_POOL2D_BACKWARD: in[0] = dout, in[1] = indices; out = dx (N, C, H, W).
 * - AVG_POOL2D / AVG_POOL2D_BACKWARD: in[0] = x / dout; out; params.
 * - SOFTMAX, LOG_SOFTMAX: in[0] = x viewed (outer, n, inner) = ip[0..2]; out likewise.
 *   SOFTMAX_BACKWARD, LOG_SOFTMAX_BACKWARD: in[0] = y, in[1] = dy; out = dx.
 * - GATHER: in[0] = x, in[1] = index (int64, x's ndim); out has index's shape; ip[0] = dim,
 *   ip[1] = who asked (MF_GATHER_BY_*), ip[2] = base: the index's values count from it (0 or 1).
 * - SCATTER_ADD: in[0] = index, in[1] = src (index's shape); out (zeroed by the kernel);
 *   ip[0] = dim, ip[2] = base.
 * - DROPOUT_MASK: out (x's shape and dtype); p[0] = drop probability; seed, offset (Philox).
 * - CROSS_ENTROPY, CROSS_ENTROPY_BACKWARD: see mf_cross_entropy below.
 * Every tensor a kernel sees is contiguous and of one float dtype (float32 or float64; on a CUDA
 * device also float16 or bfloat16, which the GPU kernels read and write as such and compute in
 * float32, cuDNN's convolutions with a float32 compute type), except the int64 indices and
 * gather/scatter_add, which take any dtype but bool (scatter_add) of their data. The CPU refuses
 * the half dtypes for these ops with a message saying they run on a GPU only. Empty outputs skip
 * the kernel.
 *
 * Channels-last: on the CPU and CUDA devices, the conv and pool ops also take their (N, C, H, W)
 * activations stored as (N, H, W, C) — what a permutation of a contiguous NHWC tensor gives, which
 * is how data_format = "NHWC" reaches them — without copying. When the input decides so (x; dout
 * for the input gradients; x or dout for the weight gradient), the activations the kernel sees (x,
 * dout, indices, and the output y/dx/indices) are all dense channels-last (a differing one is
 * copied) and ip[0] = 1; the outputs are then channels-last tensors of the (N, C, H, W) shape,
 * so that permuting them back to NHWC gives contiguous tensors. The weight, the bias and dw are
 * always contiguous (O, C, KH, KW) / (O). The CUDA kernels (cuDNN, which describes tensors by
 * their strides, and pool.cu's own kernels) take these layouts as the CPU's do, so a channels-last
 * tensor on the GPU is not copied to NCHW either.
 */
#include <math.h>
#include <string.h>

#include "autograd.h"

/* ---- helpers --------------------------------------------------------------------------------- */

static bool is_f(mf_dtype t) { return t == MF_F32 || t == MF_F64; }
static bool is_half(mf_dtype t) { return t == MF_F16 || t == MF_BF16; }

/* float32 or float64 on any device; float16 or bfloat16 on a CUDA device only (the GPU kernels
 * keep them in memory and compute in float32, as PyTorch does; the CPU has no kernels for them). */
static mf_status need_float(const char *op, const char *what, const mf_tensor *t) {
  if (is_f(t->dtype)) return MF_OK;
  if (is_half(t->dtype)) {
    if (mf_device_kind(mf_tensor_device(t)) == MF_DEV_CUDA) return MF_OK;
    return mf_fail(MF_ERR_DTYPE,
                   "%s: %s needs a GPU tensor (%s is %s on the CPU); on the CPU use float32 or "
                   "float64",
                   op, mf_dtype_name(t->dtype), what, mf_dtype_name(t->dtype));
  }
  return mf_fail(MF_ERR_DTYPE,
                 "%s: %s must be float32 or float64, got %s (float16 and bfloat16 too on a GPU)",
                 op, what, mf_dtype_name(t->dtype));
}

static mf_status same_dtype(const char *op, const char *wa, const mf_tensor *a, const char *wb,
                            const mf_tensor *b) {
  if (a->dtype == b->dtype) return MF_OK;
  return mf_fail(MF_ERR_DTYPE, "%s: %s is %s but %s is %s", op, wa, mf_dtype_name(a->dtype), wb,
                 mf_dtype_name(b->dtype));
}

static mf_status need_4d(const char *op, const char *what, const mf_tensor *t) {
  if (t->ndim == 4) return MF_OK;
  char a[96];
  return mf_fail(MF_ERR_SHAPE, "%s: %s must be 4-D (N, C, H, W), got shape %s", op, what,
                 mf_shape_str(t, a, sizeof a));
}

static bool same_shape(int nd, const int64_t *a, const int64_t *b) {
  for (int d = 0; d < nd; d++)
    if (a[d] != b[d]) return false;
  return true;
}

/* Output extent of one spatial dim; fails when the window does not fit the padded input. */
static mf_status out_extent(const char *op, const char *kind, int64_t in, int64_t k, int stride,
                            int before, int after, int64_t *out) {
  int64_t padded = in + before + after;
  if (k > padded)
    return mf_fail(MF_ERR_SHAPE,
                   "%s: the %s of size %lld does not fit the input of size %lld "
                   "padded to %lld",
                   op, kind, (long long)k, (long long)in, (long long)padded);
  *out = (padded - k) / stride + 1;
  return MF_OK;
}

/* Checks strides and paddings (and the pooling window when pool is true). */
static mf_status check_params(const char *op, const mf_pool2d_params *p, bool pool) {
  if (!p) return mf_fail(MF_ERR_ARG, "%s: missing geometry parameters", op);
  if (p->stride[0] < 1 || p->stride[1] < 1)
    return mf_fail(MF_ERR_ARG, "%s: stride %dx%d must be positive", op, p->stride[0], p->stride[1]);
  for (int i = 0; i < 4; i++)
    if (p->pad[i] < 0)
      return mf_fail(MF_ERR_ARG,
                     "%s: padding (top %d, left %d, bottom %d, right %d) must not be "
                     "negative",
                     op, p->pad[0], p->pad[1], p->pad[2], p->pad[3]);
  if (pool) {
    if (p->kernel[0] < 1 || p->kernel[1] < 1)
      return mf_fail(MF_ERR_ARG, "%s: kernel size %dx%d must be positive", op, p->kernel[0],
                     p->kernel[1]);
    /* pad < kernel on every side: every window then holds at least one input cell */
    for (int i = 0; i < 4; i++)
      if (p->pad[i] >= p->kernel[i % 2])
        return mf_fail(MF_ERR_ARG,
                       "%s: padding (top %d, left %d, bottom %d, right %d) must be "
                       "smaller than the %dx%d window",
                       op, p->pad[0], p->pad[1], p->pad[2], p->pad[3], p->kernel[0], p->kernel[1]);
  }
  return MF_OK;
}

/* Output size of a convolution or pooling over an (H, W) input with a KH x KW window. */
static mf_status out_size(const char *op, const char *kind, int64_t H, int64_t W, int64_t KH,
                          int64_t KW, const mf_pool2d_params *p, int64_t *OH, int64_t *OW) {
  MF_TRY(out_extent(op, kind, H, KH, p->stride[0], p->pad[0], p->pad[2], OH));
  MF_TRY(out_extent(op, kind, W, KW, p->stride[1], p->pad[1], p->pad[3], OW));
  return MF_OK;
}

void mf_same_padding(int64_t in, int k, int stride, int *before, int *after) {
  if (stride < 1) stride = 1;
  int64_t out = (in + stride - 1) / stride;
  int64_t total = (out - 1) * stride + k - in;
  if (total < 0) total = 0;
  *before = (int)(total / 2);
  *after = (int)(total - total / 2);
}

/* Contiguous versions of up to 4 tensors (NULL entries stay NULL). */
static mf_status contig(int n, const mf_tensor *const *in, mf_tensor **out) {
  for (int i = 0; i < n; i++) out[i] = NULL;
  for (int i = 0; i < n; i++)
    if (in[i]) {
      mf_status s = mf_contiguous(in[i], &out[i]);
      if (s) {
        for (int j = 0; j < i; j++) MF_DROP(out[j]);
        return s;
      }
    }
  return MF_OK;
}

static void release_all(int n, mf_tensor **t) {
  for (int i = 0; i < n; i++) MF_DROP(t[i]);
}

/* ---- channels-last layouts ---------------------------------------------------------------------
 */

/* (N, C, H, W) dims from the outermost in memory to the innermost */
static const int NCHW_ORDER[4] = {0, 1, 2, 3}, NHWC_ORDER[4] = {0, 2, 3, 1};

/* Whether t (4-D) is dense in the memory order `order`; `exact`: every stride is the one that
 * order gives, size-1 dims included (a permuted NHWC tensor with C = 1 is exactly channels-last
 * and not exactly NCHW, though both would hold its memory). */
static bool dense_in(const mf_tensor *t, const int *order, bool exact) {
  int64_t st = 1;
  for (int k = 3; k >= 0; k--) {
    int d = order[k];
    if (t->shape[d] == 0) return !exact;
    if ((exact || t->shape[d] != 1) && t->stride[d] != st) return false;
    st *= t->shape[d];
  }
  return true;
}

/* Whether an op should run channels-last because of t: a CPU or CUDA tensor stored exactly
 * channels-last (not also exactly NCHW); both devices' conv and pool kernels take ip[0] = 1. */
static bool wants_cl(const mf_tensor *t) {
  if (!t || t->ndim != 4) return false;
  mf_device_type k = mf_device_kind(mf_tensor_device(t));
  return (k == MF_DEV_CPU || k == MF_DEV_CUDA) && dense_in(t, NHWC_ORDER, true) &&
         !dense_in(t, NCHW_ORDER, true);
}

/* An empty (N, C, H, W) tensor, stored channels-last when cl. */
static mf_status empty_as(const int64_t *shape, mf_dtype dt, mf_device *dev, bool cl,
                          mf_tensor **out) {
  if (!cl) return mf_empty(4, shape, dt, dev, out);
  int64_t nhwc[4] = {shape[0], shape[2], shape[3], shape[1]}, st[4];
  mf_tensor *t;
  MF_TRY(mf_empty(4, nhwc, dt, dev, &t));
  st[0] = t->stride[0], st[1] = t->stride[3], st[2] = t->stride[1], st[3] = t->stride[2];
  mf_status s = mf_make_view(t, 4, shape, st, t->offset, out);
  mf_release(t);
  return s;
}

/* t dense in the layout cl picks: itself when it is, else a copy (no autograd record). */
static mf_status dense_as(const mf_tensor *t, bool cl, mf_tensor **out) {
  if (!cl) return mf_contiguous(t, out);
  *out = NULL;
  if (dense_in(t, NHWC_ORDER, false)) {
    *out = mf_retain((mf_tensor *)t);
    return MF_OK;
  }
  mf_device *dev = mf_tensor_device(t);
  MF_TRY(empty_as(t->shape, t->dtype, dev, true, out));
  mf_call c = {.op = MF_OP_COPY, .out = *out, .in = {t}, .nin = 1};
  mf_status s = mf_dispatch(dev, &c);
  if (s) MF_DROP(*out);
  return s;
}

/* Like run (below) for the conv and pool ops: with cl, the inputs in the bit mask `acts` are
 * made dense channels-last and ip[0] = 1; the output (4-D) is channels-last when out_cl. */
static mf_status run_as(mf_call *c, bool cl, unsigned acts, bool out_cl, int nin,
                        const mf_tensor *const *in, const int64_t *shape, mf_dtype dt,
                        mf_device *dev, mf_tensor **out) {
  *out = NULL;
  mf_tensor *ci[4] = {NULL, NULL, NULL, NULL};
  mf_status s = MF_OK;
  for (int i = 0; i < nin && !s; i++)
    if (in[i]) s = dense_as(in[i], cl && (acts >> i & 1u), &ci[i]);
  if (!s) s = empty_as(shape, dt, dev, out_cl, out);
  if (!s && mf_numel(*out) > 0) {
    c->out = *out;
    c->nin = nin;
    c->ip[0] = cl;
    for (int i = 0; i < nin; i++) c->in[i] = ci[i];
    s = mf_dispatch(dev, c);
  }
  release_all(nin, ci);
  if (s) MF_DROP(*out);
  return s;
}

/* Allocates *out (ndim, shape, dt on dev), makes the inputs contiguous, dispatches c (whose out
 * and in[] are filled in here) unless *out is empty. */
static mf_status run(mf_call *c, int nin, const mf_tensor *const *in, int ndim,
                     const int64_t *shape, mf_dtype dt, mf_device *dev, mf_tensor **out) {
  *out = NULL;
  mf_tensor *ci[4];
  MF_TRY(contig(nin, in, ci));
  mf_status s = mf_empty(ndim, shape, dt, dev, out);
  if (!s && mf_numel(*out) > 0) {
    c->out = *out;
    c->nin = nin;
    for (int i = 0; i < nin; i++) c->in[i] = ci[i];
    s = mf_dispatch(dev, c);
  }
  release_all(nin, ci);
  if (s) MF_DROP(*out);
  return s;
}

/* ---- convolution ----------------------------------------------------------------------------- */

/* Checks x against w (channels) and returns the output size. */
static mf_status conv_geometry(const char *op, const int64_t *xs, const int64_t *ws,
                               const mf_pool2d_params *p, int64_t *OH, int64_t *OW) {
  MF_TRY(check_params(op, p, false));
  char a[96], b[96];
  if (xs[1] != ws[1])
    return mf_fail(MF_ERR_SHAPE,
                   "%s: input has %lld channels but the weight expects %lld "
                   "(input %s, weight %s)",
                   op, (long long)xs[1], (long long)ws[1], mf_shape_fmt(4, xs, a, sizeof a),
                   mf_shape_fmt(4, ws, b, sizeof b));
  for (int d = 0; d < 4; d++)
    if (ws[d] < 1)
      return mf_fail(MF_ERR_SHAPE, "%s: weight %s has an empty dimension", op,
                     mf_shape_fmt(4, ws, b, sizeof b));
  return out_size(op, "kernel", xs[2], xs[3], ws[2], ws[3], p, OH, OW);
}

mf_status mf_conv2d(const mf_tensor *x, const mf_tensor *w, const mf_tensor *b,
                    const mf_pool2d_params *p, mf_tensor **out) {
  const char *op = "conv2d";
  *out = NULL;
  MF_TRY(need_4d(op, "input", x));
  MF_TRY(need_4d(op, "weight", w));
  MF_TRY(need_float(op, "input", x));
  MF_TRY(same_dtype(op, "input", x, "weight", w));
  MF_TRY(mf_same_device(op, x, w));
  int64_t OH, OW;
  MF_TRY(conv_geometry(op, x->shape, w->shape, p, &OH, &OW));
  if (b) {
    char a[96], c[96];
    if (b->ndim != 1 || b->shape[0] != w->shape[0])
      return mf_fail(MF_ERR_SHAPE,
                     "%s: bias has shape %s but the weight %s has %lld output "
                     "channels",
                     op, mf_shape_str(b, a, sizeof a), mf_shape_str(w, c, sizeof c),
                     (long long)w->shape[0]);
    MF_TRY(same_dtype(op, "input", x, "bias", b));
    MF_TRY(mf_same_device(op, x, b));
  }
  int64_t shape[4] = {x->shape[0], w->shape[0], OH, OW};
  mf_call c = {.op = MF_OP_CONV2D, .params = p};
  const mf_tensor *in[3] = {x, w, b};
  bool cl = wants_cl(x);
  MF_TRY(run_as(&c, cl, 1u, cl, b ? 3 : 2, in, shape, x->dtype, mf_tensor_device(x), out));
  return mf_ag_keep(mf_ag_conv2d(x, w, b, p, *out), out);
}

mf_status mf_conv2d_backward_input(const mf_tensor *dout, const mf_tensor *w,
                                   const int64_t *x_shape, const mf_pool2d_params *p,
                                   mf_tensor **dx) {
  const char *op = "conv2d_backward_input";
  *dx = NULL;
  MF_TRY(need_4d(op, "the output gradient", dout));
  MF_TRY(need_4d(op, "weight", w));
  MF_TRY(need_float(op, "the output gradient", dout));
  MF_TRY(same_dtype(op, "the output gradient", dout, "the weight", w));
  MF_TRY(mf_same_device(op, dout, w));
  if (!x_shape) return mf_fail(MF_ERR_ARG, "%s: missing input shape", op);
  for (int d = 0; d < 4; d++)
    if (x_shape[d] < 0) return mf_fail(MF_ERR_SHAPE, "%s: negative input size", op);
  int64_t OH, OW;
  MF_TRY(conv_geometry(op, x_shape, w->shape, p, &OH, &OW));
  int64_t want[4] = {x_shape[0], w->shape[0], OH, OW};
  if (!same_shape(4, dout->shape, want)) {
    char a[96], b[96], c[96], e[96];
    return mf_fail(MF_ERR_SHAPE,
                   "%s: the output gradient has shape %s but input %s and weight "
                   "%s give %s",
                   op, mf_shape_str(dout, a, sizeof a), mf_shape_fmt(4, x_shape, b, sizeof b),
                   mf_shape_str(w, c, sizeof c), mf_shape_fmt(4, want, e, sizeof e));
  }
  mf_call c = {.op = MF_OP_CONV2D_BACKWARD_INPUT, .params = p};
  const mf_tensor *in[2] = {dout, w};
  bool cl = wants_cl(dout);
  return run_as(&c, cl, 1u, cl, 2, in, x_shape, dout->dtype, mf_tensor_device(dout), dx);
}

mf_status mf_conv2d_backward_weight(const mf_tensor *dout, const mf_tensor *x,
                                    const int64_t *w_shape, const mf_pool2d_params *p,
                                    mf_tensor **dw) {
  const char *op = "conv2d_backward_weight";
  *dw = NULL;
  MF_TRY(need_4d(op, "the output gradient", dout));
  MF_TRY(need_4d(op, "input", x));
  MF_TRY(need_float(op, "the output gradient", dout));
  MF_TRY(same_dtype(op, "the output gradient", dout, "the input", x));
  MF_TRY(mf_same_device(op, dout, x));
  if (!w_shape) return mf_fail(MF_ERR_ARG, "%s: missing weight shape", op);
  int64_t OH, OW;
  MF_TRY(conv_geometry(op, x->shape, w_shape, p, &OH, &OW));
  int64_t want[4] = {x->shape[0], w_shape[0], OH, OW};
  if (!same_shape(4, dout->shape, want)) {
    char a[96], b[96], c[96], e[96];
    return mf_fail(MF_ERR_SHAPE,
                   "%s: the output gradient has shape %s but input %s and weight "
                   "%s give %s",
                   op, mf_shape_str(dout, a, sizeof a), mf_shape_str(x, b, sizeof b),
                   mf_shape_fmt(4, w_shape, c, sizeof c), mf_shape_fmt(4, want, e, sizeof e));
  }
  mf_device *dev = mf_tensor_device(x);
  if (x->shape[0] == 0) return mf_zeros(4, w_shape, x->dtype, dev, dw); /* no images: no gradient */
  mf_call c = {.op = MF_OP_CONV2D_BACKWARD_WEIGHT, .params = p};
  const mf_tensor *in[2] = {dout, x};
  bool cl = wants_cl(x) || wants_cl(dout);
  return run_as(&c, cl, 3u, false, 2, in, w_shape, x->dtype, dev, dw);
}

/* ---- pooling --------------------------------------------------------------------------------- */

static mf_status pool_out_shape(const char *op, const mf_tensor *x, const mf_pool2d_params *p,
                                int64_t *shape) {
  MF_TRY(need_4d(op, "input", x));
  MF_TRY(need_float(op, "input", x));
  MF_TRY(check_params(op, p, true));
  shape[0] = x->shape[0];
  shape[1] = x->shape[1];
  return out_size(op, "window", x->shape[2], x->shape[3], p->kernel[0], p->kernel[1], p, &shape[2],
                  &shape[3]);
}

mf_status mf_max_pool2d(const mf_tensor *x, const mf_pool2d_params *p, mf_tensor **out,
                        mf_tensor **indices) {
  const char *op = "max_pool2d";
  *out = NULL;
  if (indices) *indices = NULL;
  int64_t shape[4];
  MF_TRY(pool_out_shape(op, x, p, shape));
  mf_device *dev = mf_tensor_device(x);
  mf_call c = {.op = MF_OP_MAX_POOL2D, .params = p};
  /* the backward needs the argmax positions even when the caller does not */
  bool record = mf_grad_enabled() && mf_requires_grad(x);
  bool cl = wants_cl(x);
  mf_tensor *idx = NULL;
  if (indices || record) {
    MF_TRY(empty_as(shape, MF_I64, dev, cl, &idx));
    c.out2 = idx;
  }
  mf_status s = run_as(&c, cl, 1u, cl, 1, &x, shape, x->dtype, dev, out);
  if (!s && record) s = mf_ag_keep(mf_ag_max_pool2d(x, idx, *out), out);
  if (!s && indices) *indices = mf_retain(idx);
  mf_release(idx);
  return s;
}

mf_status mf_max_pool2d_backward(const mf_tensor *dout, const mf_tensor *indices,
                                 const int64_t *x_shape, mf_tensor **dx) {
  const char *op = "max_pool2d_backward";
  *dx = NULL;
  MF_TRY(need_4d(op, "the output gradient", dout));
  MF_TRY(need_float(op, "the output gradient", dout));
  MF_TRY(mf_same_device(op, dout, indices));
  if (indices->dtype != MF_I64)
    return mf_fail(MF_ERR_DTYPE, "%s: indices must be int64, got %s", op,
                   mf_dtype_name(indices->dtype));
  char a[96], b[96];
  if (indices->ndim != 4 || !same_shape(4, indices->shape, dout->shape))
    return mf_fail(MF_ERR_SHAPE, "%s: indices have shape %s but the output gradient %s", op,
                   mf_shape_str(indices, a, sizeof a), mf_shape_str(dout, b, sizeof b));
  if (!x_shape) return mf_fail(MF_ERR_ARG, "%s: missing input shape", op);
  if (x_shape[0] != dout->shape[0] || x_shape[1] != dout->shape[1] || x_shape[2] < 0 ||
      x_shape[3] < 0)
    return mf_fail(MF_ERR_SHAPE,
                   "%s: the output gradient %s does not come from an input of "
                   "shape %s",
                   op, mf_shape_str(dout, a, sizeof a), mf_shape_fmt(4, x_shape, b, sizeof b));
  if (mf_numel(dout) > 0 && x_shape[2] * x_shape[3] == 0)
    return mf_fail(MF_ERR_SHAPE, "%s: the input shape %s is empty", op,
                   mf_shape_fmt(4, x_shape, b, sizeof b));
  mf_call c = {.op = MF_OP_MAX_POOL2D_BACKWARD};
  const mf_tensor *in[2] = {dout, indices};
  bool cl = wants_cl(dout) || wants_cl(indices);
  return run_as(&c, cl, 3u, cl, 2, in, x_shape, dout->dtype, mf_tensor_device(dout), dx);
}

mf_status mf_avg_pool2d(const mf_tensor *x, const mf_pool2d_params *p, mf_tensor **out) {
  *out = NULL;
  int64_t shape[4];
  MF_TRY(pool_out_shape("avg_pool2d", x, p, shape));
  mf_call c = {.op = MF_OP_AVG_POOL2D, .params = p};
  bool cl = wants_cl(x);
  MF_TRY(run_as(&c, cl, 1u, cl, 1, &x, shape, x->dtype, mf_tensor_device(x), out));
  return mf_ag_keep(mf_ag_avg_pool2d(x, p, *out), out);
}

mf_status mf_avg_pool2d_backward(const mf_tensor *dout, const int64_t *x_shape,
                                 const mf_pool2d_params *p, mf_tensor **dx) {
  const char *op = "avg_pool2d_backward";
  *dx = NULL;
  MF_TRY(need_4d(op, "the output gradient", dout));
  MF_TRY(need_float(op, "the output gradient", dout));
  MF_TRY(check_params(op, p, true));
  if (!x_shape) return mf_fail(MF_ERR_ARG, "%s: missing input shape", op);
  int64_t want[4] = {x_shape[0], x_shape[1], 0, 0};
  mf_status s = x_shape[0] < 0 || x_shape[1] < 0
                    ? mf_fail(MF_ERR_SHAPE, "%s: negative input size", op)
                    : out_size(op, "window", x_shape[2], x_shape[3], p->kernel[0], p->kernel[1], p,
                               &want[2], &want[3]);
  if (s) return s;
  if (!same_shape(4, dout->shape, want)) {
    char a[96], b[96], e[96];
    return mf_fail(MF_ERR_SHAPE,
                   "%s: the output gradient has shape %s but an input of shape %s "
                   "gives %s",
                   op, mf_shape_str(dout, a, sizeof a), mf_shape_fmt(4, x_shape, b, sizeof b),
                   mf_shape_fmt(4, want, e, sizeof e));
  }
  mf_call c = {.op = MF_OP_AVG_POOL2D_BACKWARD, .params = p};
  bool cl = wants_cl(dout);
  return run_as(&c, cl, 1u, cl, 1, &dout, x_shape, dout->dtype, mf_tensor_device(dout), dx);
}

/* ---- softmax --------------------------------------------------------------------------------- */

/* (outer, n, inner) of x around dim; a 0-d tensor is (1, 1, 1) and takes dim 0 or -1. */
static mf_status split_dim(const char *op, const mf_tensor *x, int dim, int64_t *ip) {
  ip[0] = ip[1] = ip[2] = 1;
  if (x->ndim == 0) {
    if (dim == 0 || dim == -1) return MF_OK;
    return mf_fail(MF_ERR_INDEX, "%s: dimension %d is out of range for a 0-d tensor", op, dim);
  }
  int d;
  MF_TRY(mf_norm_dim(op, dim, x->ndim, &d));
  for (int k = 0; k < x->ndim; k++) ip[k < d ? 0 : k == d ? 1 : 2] *= x->shape[k];
  return MF_OK;
}

static mf_status softmax_fwd(mf_op opc, const mf_tensor *x, int dim, mf_tensor **out) {
  const char *op = mf_op_name(opc);
  *out = NULL;
  MF_TRY(need_float(op, "input", x));
  mf_call c = {.op = opc};
  MF_TRY(split_dim(op, x, dim, c.ip));
  MF_TRY(run(&c, 1, &x, x->ndim, x->shape, x->dtype, mf_tensor_device(x), out));
  return mf_ag_keep(mf_ag_softmax(opc == MF_OP_LOG_SOFTMAX, x, dim, *out), out);
}

mf_status mf_softmax(const mf_tensor *x, int dim, mf_tensor **out) {
  return softmax_fwd(MF_OP_SOFTMAX, x, dim, out);
}

mf_status mf_log_softmax(const mf_tensor *x, int dim, mf_tensor **out) {
  return softmax_fwd(MF_OP_LOG_SOFTMAX, x, dim, out);
}

static mf_status softmax_bwd(mf_op opc, const mf_tensor *y, const mf_tensor *dy, int dim,
                             mf_tensor **dx) {
  const char *op = mf_op_name(opc);
  *dx = NULL;
  MF_TRY(need_float(op, "the output", y));
  MF_TRY(same_dtype(op, "the output", y, "its gradient", dy));
  MF_TRY(mf_same_device(op, y, dy));
  if (y->ndim != dy->ndim || !same_shape(y->ndim, y->shape, dy->shape)) {
    char a[96], b[96];
    return mf_fail(MF_ERR_SHAPE, "%s: the output has shape %s but its gradient %s", op,
                   mf_shape_str(y, a, sizeof a), mf_shape_str(dy, b, sizeof b));
  }
  mf_call c = {.op = opc};
  MF_TRY(split_dim(op, y, dim, c.ip));
  const mf_tensor *in[2] = {y, dy};
  return run(&c, 2, in, y->ndim, y->shape, y->dtype, mf_tensor_device(y), dx);
}

mf_status mf_softmax_backward(const mf_tensor *y, const mf_tensor *dy, int dim, mf_tensor **dx) {
  return softmax_bwd(MF_OP_SOFTMAX_BACKWARD, y, dy, dim, dx);
}

mf_status mf_log_softmax_backward(const mf_tensor *y, const mf_tensor *dy, int dim,
                                  mf_tensor **dx) {
  return softmax_bwd(MF_OP_LOG_SOFTMAX_BACKWARD, y, dy, dim, dx);
}

/* ---- gather, scatter_add, dropout ------------------------------------------------------------ */

/* index: int64 with x's ndim (xs) and index->shape[d] <= xs[d] for d != dim. */
static mf_status check_index(const char *op, int ndim, const int64_t *xs, const char *xname,
                             const mf_tensor *index, int dim) {
  char a[96], b[96];
  if (index->dtype != MF_I64)
    return mf_fail(MF_ERR_DTYPE, "%s: index must be int64, got %s", op,
                   mf_dtype_name(index->dtype));
  if (index->ndim != ndim)
    return mf_fail(MF_ERR_SHAPE, "%s: index has %d dimensions but %s has %d (index %s, %s %s)", op,
                   index->ndim, xname, ndim, mf_shape_str(index, a, sizeof a), xname,
                   mf_shape_fmt(ndim, xs, b, sizeof b));
  for (int d = 0; d < ndim; d++)
    if (d != dim && index->shape[d] > xs[d])
      return mf_fail(MF_ERR_SHAPE, "%s: index %s is larger than %s %s in dimension %d", op,
                     mf_shape_str(index, a, sizeof a), xname, mf_shape_fmt(ndim, xs, b, sizeof b),
                     d + 1);
  return MF_OK;
}

mf_status mf_gather(const mf_tensor *x, int dim, const mf_tensor *index, mf_tensor **out) {
  return mf_gather_as(MF_GATHER_BY_GATHER, x, dim, index, 0, out);
}

mf_status mf_gather_from(const mf_tensor *x, int dim, const mf_tensor *index, int64_t base,
                         mf_tensor **out) {
  return mf_gather_as(MF_GATHER_BY_GATHER, x, dim, index, base, out);
}

static mf_status check_base(const char *op, int64_t base) {
  if (base != 0 && base != 1)
    return mf_fail(MF_ERR_ARG, "%s: indices count from 0 or 1, not %lld", op, (long long)base);
  return MF_OK;
}

mf_status mf_gather_as(int who, const mf_tensor *x, int dim, const mf_tensor *index, int64_t base,
                       mf_tensor **out) {
  const char *op = "gather";
  *out = NULL;
  MF_TRY(check_base(op, base));
  MF_TRY(mf_same_device(op, x, index));
  if (x->ndim == 0) return mf_fail(MF_ERR_SHAPE, "%s: the input needs at least one dimension", op);
  int d;
  MF_TRY(mf_norm_dim(op, dim, x->ndim, &d));
  MF_TRY(check_index(op, x->ndim, x->shape, "input", index, d));
  if (mf_numel(index) > 0 && x->shape[d] == 0)
    return mf_fail(MF_ERR_INDEX, "%s: cannot index the empty dimension %d", op, d + 1);
  mf_call c = {.op = MF_OP_GATHER, .ip = {d, who, base}};
  const mf_tensor *in[2] = {x, index};
  MF_TRY(run(&c, 2, in, index->ndim, index->shape, x->dtype, mf_tensor_device(x), out));
  return mf_ag_keep(mf_ag_gather(x, d, index, base, *out), out);
}

mf_status mf_scatter_add(int ndim, const int64_t *shape, int dim, const mf_tensor *index,
                         const mf_tensor *src, mf_tensor **out) {
  return mf_scatter_add_from(ndim, shape, dim, index, 0, src, out);
}

mf_status mf_scatter_add_from(int ndim, const int64_t *shape, int dim, const mf_tensor *index,
                              int64_t base, const mf_tensor *src, mf_tensor **out) {
  const char *op = "scatter_add";
  *out = NULL;
  MF_TRY(check_base(op, base));
  MF_TRY(mf_same_device(op, index, src));
  if (src->dtype == MF_BOOL) return mf_fail(MF_ERR_DTYPE, "%s: cannot add bool values", op);
  if (ndim < 1 || ndim > MF_MAX_DIMS || !shape)
    return mf_fail(MF_ERR_SHAPE, "%s: the output needs 1 to %d dimensions, got %d", op, MF_MAX_DIMS,
                   ndim);
  for (int k = 0; k < ndim; k++)
    if (shape[k] < 0) return mf_fail(MF_ERR_SHAPE, "%s: negative output size", op);
  int d;
  MF_TRY(mf_norm_dim(op, dim, ndim, &d));
  MF_TRY(check_index(op, ndim, shape, "the output", index, d));
  char a[96], b[96];
  if (src->ndim != index->ndim)
    return mf_fail(MF_ERR_SHAPE, "%s: src %s and index %s differ in dimensions", op,
                   mf_shape_str(src, a, sizeof a), mf_shape_str(index, b, sizeof b));
  for (int k = 0; k < src->ndim; k++)
    if (src->shape[k] < index->shape[k])
      return mf_fail(MF_ERR_SHAPE, "%s: src %s is smaller than index %s in dimension %d", op,
                     mf_shape_str(src, a, sizeof a), mf_shape_str(index, b, sizeof b), k + 1);
  int64_t numel_out = mf_shape_numel(ndim, shape);
  if (mf_numel(index) > 0 && numel_out == 0)
    return mf_fail(MF_ERR_INDEX, "%s: cannot add into an empty output", op);
  /* src narrowed to index's shape (torch uses only that part of src) */
  mf_tensor *sv = mf_retain((mf_tensor *)src), *t;
  mf_status s = MF_OK;
  for (int k = 0; k < src->ndim && !s; k++)
    if (src->shape[k] != index->shape[k]) {
      s = mf_narrow(sv, k, 0, index->shape[k], &t);
      mf_release(sv);
      sv = s ? NULL : t;
    }
  mf_device *dev = mf_tensor_device(index);
  if (!s && mf_numel(index) == 0) {
    s = mf_zeros(ndim, shape, src->dtype, dev, out);
  } else if (!s) {
    mf_call c = {.op = MF_OP_SCATTER_ADD, .ip = {d, 0, base}};
    const mf_tensor *in[2] = {index, sv};
    s = run(&c, 2, in, ndim, shape, src->dtype, dev, out);
  }
  mf_release(sv);
  return s;
}

mf_status mf_dropout_mask(const mf_tensor *x, double p, mf_tensor **mask) {
  const char *op = "dropout";
  *mask = NULL;
  MF_TRY(need_float(op, "input", x));
  if (!(p >= 0.0 && p <= 1.0))
    return mf_fail(MF_ERR_ARG, "%s: drop probability %g must be in [0, 1]", op, p);
  mf_device *dev = mf_tensor_device(x);
  MF_TRY(mf_empty(x->ndim, x->shape, x->dtype, dev, mask));
  int64_t n = mf_numel(*mask);
  if (n == 0) return MF_OK;
  mf_call c = {.op = MF_OP_DROPOUT_MASK, .out = *mask, .p = {p}};
  c.offset = mf_rng_draw(mf_rng_blocks(x->dtype, n), &c.seed);
  mf_status s = mf_dispatch(dev, &c);
  if (s) MF_DROP(*mask);
  return s;
}

/* ---- cross-entropy ------------------------------------------------------------------------- */

/* logits (N, C) float, target (N) int64 on one device, base 0 or 1, eps in [0, 1] */
static mf_status ce_check(const char *op, const mf_tensor *x, const mf_tensor *target, int64_t base,
                          double eps) {
  char a[96], b[96];
  MF_TRY(check_base(op, base));
  MF_TRY(mf_same_device(op, x, target));
  MF_TRY(need_float(op, "logits", x));
  if (x->ndim != 2)
    return mf_fail(MF_ERR_SHAPE, "%s: logits must be (N, C), got %s", op,
                   mf_shape_str(x, a, sizeof a));
  if (target->dtype != MF_I64)
    return mf_fail(MF_ERR_DTYPE, "%s: target must be int64 class indices, got %s", op,
                   mf_dtype_name(target->dtype));
  if (target->ndim != 1 || target->shape[0] != x->shape[0])
    return mf_fail(MF_ERR_SHAPE, "%s: target must have shape %lld for logits %s, got %s", op,
                   (long long)x->shape[0], mf_shape_str(x, a, sizeof a),
                   mf_shape_str(target, b, sizeof b));
  if (x->shape[1] == 0 && x->shape[0] > 0)
    return mf_fail(MF_ERR_INDEX, "%s: no classes to index (logits %s)", op,
                   mf_shape_str(x, a, sizeof a));
  if (!(eps >= 0 && eps <= 1))
    return mf_fail(MF_ERR_ARG, "%s: label_smoothing must be in [0, 1], got %g", op, eps);
  return MF_OK;
}

/* CROSS_ENTROPY: in[0] = x (N, C), in[1] = target (N); out = loss (N), out2 = lse (N);
 * CROSS_ENTROPY_BACKWARD: in[2] = lse, in[3] = g (N, element stride ip[4]: 0 or 1); out = dx.
 * Both: ip = {N, C, base, MF_GATHER_BY_CROSS_ENTROPY, g's stride}, p[0] = eps. */
mf_status mf_cross_entropy(const mf_tensor *x, const mf_tensor *target, int64_t base, double eps,
                           mf_tensor **loss) {
  const char *op = "cross_entropy";
  *loss = NULL;
  MF_TRY(ce_check(op, x, target, base, eps));
  mf_device *dev = mf_tensor_device(x);
  int64_t N = x->shape[0];
  mf_tensor *lse = NULL;
  MF_TRY(mf_empty(1, &N, x->dtype, dev, &lse));
  mf_call c = {.op = MF_OP_CROSS_ENTROPY,
               .out2 = lse,
               .ip = {N, x->shape[1], base, MF_GATHER_BY_CROSS_ENTROPY},
               .p = {eps}};
  const mf_tensor *in[2] = {x, target};
  mf_status s = run(&c, 2, in, 1, &N, x->dtype, dev, loss);
  if (!s) s = mf_ag_keep(mf_ag_cross_entropy(x, target, lse, base, eps, *loss), loss);
  mf_release(lse);
  return s;
}

mf_status mf_cross_entropy_backward(const mf_tensor *x, const mf_tensor *target,
                                    const mf_tensor *lse, const mf_tensor *g, int64_t base,
                                    double eps, mf_tensor **dx) {
  const char *op = "cross_entropy_backward";
  *dx = NULL;
  MF_TRY(ce_check(op, x, target, base, eps));
  const mf_tensor *v[2] = {lse, g};
  const char *vname[2] = {"lse", "the gradient"};
  for (int k = 0; k < 2; k++) {
    MF_TRY(mf_same_device(op, x, v[k]));
    MF_TRY(same_dtype(op, "logits", x, vname[k], v[k]));
    if (v[k]->ndim != 1 || v[k]->shape[0] != x->shape[0]) {
      char a[96];
      return mf_fail(MF_ERR_SHAPE, "%s: %s must have shape %lld, got %s", op, vname[k],
                     (long long)x->shape[0], mf_shape_str(v[k], a, sizeof a));
    }
  }
  /* g as the mean's backward leaves it (one value broadcast) is read as it is, not copied */
  mf_tensor *gv = NULL;
  bool flat = g->stride[0] == 0 || g->stride[0] == 1;
  MF_TRY(flat ? (gv = mf_retain((mf_tensor *)g), MF_OK) : mf_contiguous(g, &gv));
  mf_call c = {.op = MF_OP_CROSS_ENTROPY_BACKWARD,
               .ip = {x->shape[0], x->shape[1], base, MF_GATHER_BY_CROSS_ENTROPY, gv->stride[0]},
               .p = {eps}};
  mf_tensor *ci[3];
  const mf_tensor *in3[3] = {x, target, lse};
  mf_status s = contig(3, in3, ci);
  if (s) {
    mf_release(gv);
    return s;
  }
  s = mf_empty(2, x->shape, x->dtype, mf_tensor_device(x), dx);
  if (!s && mf_numel(*dx) > 0) {
    c.out = *dx;
    c.nin = 4;
    c.in[0] = ci[0], c.in[1] = ci[1], c.in[2] = ci[2], c.in[3] = gv;
    s = mf_dispatch(mf_tensor_device(x), &c);
    if (s) MF_DROP(*dx);
  }
  release_all(3, ci);
  mf_release(gv);
  return s;
}
