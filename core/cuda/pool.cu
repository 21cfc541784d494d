/* pool.cu — MAX_POOL2D, MAX_POOL2D_BACKWARD, AVG_POOL2D, AVG_POOL2D_BACKWARD on the GPU, with the
 * CPU's semantics (cpu/pool.c): NCHW, pad {top, left, bottom, right}; max pooling ignores padding
 * cells, NaN wins a window (the first in row-major order), ties go to the first cell, and the
 * int64 index of a window's maximum is ih * W + iw within its (n, c) plane; average pooling
 * divides by KH * KW (count_include_pad) or by the number of input cells in the window.
 *
 * Calls (ops_nn.c): MAX_POOL2D in[0] = x, out = y, out2 = indices or NULL; MAX_POOL2D_BACKWARD
 * in[0] = dy, in[1] = indices, out = dx (no params); AVG_POOL2D in[0] = x, out = y;
 * AVG_POOL2D_BACKWARD in[0] = dy, out = dx; params = mf_pool2d_params. All contiguous NCHW, or,
 * with ip[0] = 1, all dense channels-last (each image (H, W, C); ops_nn.c's channels-last
 * convention, as for the CPU kernels): the kernels then walk the tensors in that memory order
 * (channel fastest, so neighbouring threads read neighbouring channels) and an index stays
 * ih * W + iw within its (n, c) plane, so both layouts give the same values.
 *
 * Which code runs:
 * - cuDNN (cudnnPoolingForward) for the forwards it can do exactly: average pooling, and max
 *   pooling when no indices are asked for (inference), with symmetric padding (or asymmetric
 *   padding whose extra bottom/right cells no window reaches); a layout or dtype it answers
 *   CUDNN_STATUS_NOT_SUPPORTED for runs on our kernels instead.
 * - Our kernels otherwise: max pooling with indices (cuDNN does not return them), asymmetric
 *   padding, and both backwards. cuDNN's backward wants x and y, which these calls do not carry
 *   (max pooling's backward is defined by the indices alone). Average pooling's backward computes
 *   each input cell's gradient by visiting the windows that contain it, in the CPU's order
 *   (deterministic, the CPU's sums); max pooling's backward has no window geometry in its call, so
 *   it zeroes dx and adds each output's gradient at its index atomically (exact when windows do
 *   not overlap; otherwise the order of a cell's few additions may differ from the CPU's; for
 *   float16/bfloat16 the additions go to a float32 scratch, rounded to the half dtype once). An
 *   index outside its plane contributes nothing (the CPU reports it; checking here would need a
 *   host synchronisation per call).
 * One template per kernel covers float32, float64, float16 and bfloat16 (accumulating in float
 * for the halves).
 */
#include "cuda/kernels.h"

#ifdef MF_HAVE_CUDNN
#include "cuda/dnn.cuh"
#endif

typedef struct pool_geom {
  int64_t N, C, H, W, OH, OW;
  int kh, kw, sh, sw, pt, pl;
  bool include_pad;
  bool cl; /* channels-last: every tensor stored (N, H, W, C) */
} pool_geom;

/* element i, in memory order, of an (N, C, h, w) tensor laid out as g says: its image n, channel
 * c, row r and column q */
__device__ __forceinline__ void decode(const pool_geom &g, int64_t i, int64_t h, int64_t w,
                                       int64_t *n, int64_t *c, int64_t *r, int64_t *q) {
  if (g.cl) {
    *c = i % g.C;
    int64_t t = i / g.C;
    *q = t % w;
    t /= w;
    *r = t % h;
    *n = t / h;
  } else {
    *q = i % w;
    int64_t t = i / w;
    *r = t % h;
    t /= h;
    *c = t % g.C;
    *n = t / g.C;
  }
}

/* the offset of plane (n, c)'s first cell in an (N, C, h, w) tensor of hw = h * w cells per
 * plane; cells of a plane are step() apart */
__device__ __forceinline__ int64_t plane_at(const pool_geom &g, int64_t n, int64_t c, int64_t hw) {
  return g.cl ? n * hw * g.C + c : (n * g.C + c) * hw;
}
__device__ __forceinline__ int64_t step(const pool_geom &g) { return g.cl ? g.C : 1; }

/* the input rows [a, b) of window o, clipped to the input (cpu/pool.c's window) */
__device__ __forceinline__ void window(int64_t o, int s, int p, int k, int64_t n, int64_t *a,
                                       int64_t *b) {
  int64_t s0 = o * s - p, s1 = s0 + k;
  *a = s0 < 0 ? 0 : s0;
  *b = s1 > n ? n : s1;
}

/* the outputs [a, b) whose windows contain input row i: o * s - p <= i < o * s - p + k */
__device__ __forceinline__ void covering(int64_t i, int s, int p, int k, int64_t nout, int64_t *a,
                                         int64_t *b) {
  int64_t lo = i + p - k + 1; /* o * s >= lo */
  int64_t o0 = lo <= 0 ? 0 : (lo + s - 1) / s;
  int64_t o1 = (i + p) / s + 1; /* o * s <= i + p */
  *a = o0;
  *b = o1 < nout ? o1 : nout;
}

/* output i (in memory order): its plane's offset in x (returned) and its input window
 * [h0, h1) x [w0, w1) */
__device__ __forceinline__ int64_t out_window(const pool_geom &g, int64_t i, int64_t *h0,
                                              int64_t *h1, int64_t *w0, int64_t *w1) {
  int64_t n, c, oh, ow;
  decode(g, i, g.OH, g.OW, &n, &c, &oh, &ow);
  window(oh, g.sh, g.pt, g.kh, g.H, h0, h1);
  window(ow, g.sw, g.pl, g.kw, g.W, w0, w1);
  return plane_at(g, n, c, g.H * g.W);
}

template <class T> __global__ void max_fwd_kernel(T *y, int64_t *idx, const T *x, pool_geom g) {
  using A = typename mf_acc<T>::type;
  int64_t total = g.N * g.C * g.OH * g.OW, st = step(g);
  MF_GRID_LOOP(i, total) {
    int64_t h0, h1, w0, w1;
    const T *xp = x + out_window(g, i, &h0, &h1, &w0, &w1);
    A m = (A)xp[(h0 * g.W + w0) * st];
    int64_t at = h0 * g.W + w0;
    for (int64_t ih = h0; ih < h1 && m == m; ih++)
      for (int64_t iw = w0; iw < w1; iw++) {
        A v = (A)xp[(ih * g.W + iw) * st];
        if (v > m || v != v) {
          m = v, at = ih * g.W + iw;
          if (v != v) break;
        }
      }
    y[i] = (T)m;
    if (idx) idx[i] = at;
  }
}

/* dx (zeroed first) += dy at each output's index; one thread per output. D: the type dx is
 * accumulated in (T, or float for the halves: a float scratch then rounded once by to_half_kernel,
 * so that a cell several windows pick is not rounded at each addition) */
template <class T, class D>
__global__ void max_bwd_kernel(D *dx, const T *dy, const int64_t *idx, pool_geom g) {
  int64_t total = g.N * g.C * g.OH * g.OW, plane = g.H * g.W;
  MF_GRID_LOOP(i, total) {
    int64_t at = idx[i], n, c, oh, ow;
    if (at < 0 || at >= plane) continue; /* not from this plane: nothing to add */
    decode(g, i, g.OH, g.OW, &n, &c, &oh, &ow);
    atomicAdd(dx + plane_at(g, n, c, plane) + at * step(g), (D)dy[i]);
  }
}

template <class T> __global__ void to_half_kernel(T *out, const float *in, int64_t n) {
  MF_GRID_LOOP(i, n) out[i] = (T)in[i];
}

template <class A>
__device__ __forceinline__ A avg_div(const pool_geom &g, int64_t h0, int64_t h1, int64_t w0,
                                     int64_t w1) {
  return g.include_pad ? (A)(g.kh * g.kw) : (A)((h1 - h0) * (w1 - w0));
}

template <class T> __global__ void avg_fwd_kernel(T *y, const T *x, pool_geom g) {
  using A = typename mf_acc<T>::type;
  int64_t total = g.N * g.C * g.OH * g.OW, st = step(g);
  MF_GRID_LOOP(i, total) {
    int64_t h0, h1, w0, w1;
    const T *xp = x + out_window(g, i, &h0, &h1, &w0, &w1);
    A s = 0;
    for (int64_t ih = h0; ih < h1; ih++)
      for (int64_t iw = w0; iw < w1; iw++) s += (A)xp[(ih * g.W + iw) * st];
    y[i] = (T)(s / avg_div<A>(g, h0, h1, w0, w1));
  }
}

template <class T> __global__ void avg_bwd_kernel(T *dx, const T *dy, pool_geom g) {
  using A = typename mf_acc<T>::type;
  int64_t total = g.N * g.C * g.H * g.W, st = step(g);
  MF_GRID_LOOP(i, total) {
    int64_t n, c, ih, iw;
    decode(g, i, g.H, g.W, &n, &c, &ih, &iw);
    const T *dyp = dy + plane_at(g, n, c, g.OH * g.OW);
    int64_t oh0, oh1, ow0, ow1;
    covering(ih, g.sh, g.pt, g.kh, g.OH, &oh0, &oh1);
    covering(iw, g.sw, g.pl, g.kw, g.OW, &ow0, &ow1);
    A s = 0;
    for (int64_t oh = oh0; oh < oh1; oh++) {
      int64_t h0, h1;
      window(oh, g.sh, g.pt, g.kh, g.H, &h0, &h1);
      for (int64_t ow = ow0; ow < ow1; ow++) {
        int64_t w0, w1;
        window(ow, g.sw, g.pl, g.kw, g.W, &w0, &w1);
        s += (A)dyp[(oh * g.OW + ow) * st] / avg_div<A>(g, h0, h1, w0, w1);
      }
    }
    dx[i] = (T)s;
  }
}

#ifdef MF_HAVE_CUDNN
/* The forward through cuDNN; *done = false (and MF_OK) when cuDNN cannot give the same result. */
static mf_status dnn_forward(mf_device *dev, const mf_call *c, const pool_geom &g, bool *done) {
  *done = false;
  const char *op = mf_op_name(c->op);
  const mf_pool2d_params *p = (const mf_pool2d_params *)c->params;
  const mf_tensor *x = c->in[0], *y = c->out;
  /* cuDNN pads by pad[0], pad[1] on both sides: fine when that gives the same output size */
  if ((g.H + 2 * g.pt - g.kh) / g.sh + 1 != g.OH || (g.W + 2 * g.pl - g.kw) / g.sw + 1 != g.OW)
    return MF_OK;
  cudnnPoolingMode_t mode = c->op == MF_OP_MAX_POOL2D ? CUDNN_POOLING_MAX_DETERMINISTIC
                            : p->count_include_pad    ? CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING
                                                      : CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING;
  mf_dnn_what what; /* the operands, for messages */
  what.na = "input";
  what.a = x;
  what.nb = "output";
  what.b = y;
  what.p = p;
  cudnnHandle_t h;
  MF_TRY(mf_dnn_handle(dev, op, &h));
  mf_dnn_pool_desc pd;
  mf_dnn_tensor_desc xd, yd;
  MF_TRY(mf_dnn_check(dev, cudnnCreatePoolingDescriptor(&pd.d), op, "cudnnCreatePoolingDescriptor",
                      &what));
  MF_TRY(mf_dnn_check(dev,
                      cudnnSetPooling2dDescriptor(pd.d, mode, CUDNN_PROPAGATE_NAN, g.kh, g.kw, g.pt,
                                                  g.pl, g.sh, g.sw),
                      op, "cudnnSetPooling2dDescriptor", &what));
  cudnnTensorFormat_t fmt = g.cl ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
  MF_TRY(mf_dnn_tensor(dev, op, x, &xd, fmt));
  MF_TRY(mf_dnn_tensor(dev, op, y, &yd, fmt));
  mf_dnn_scalars k(y->dtype);
  MF_TRY(mf_dnn_check(dev,
                      cudnnPoolingForward(h, pd.d, k.one(), xd.d, mf_cuda_ptr(x), k.zero(), yd.d,
                                          mf_cuda_ptr(c->out)),
                      op, "cudnnPoolingForward", &what));
  *done = true;
  return MF_OK;
}
#endif

/* Whether a 4-D (N, C, H, W) tensor is dense: contiguous NCHW, or with cl stored (N, H, W, C)
 * (size-1 dims take any stride, as ops_nn.c's dense_as lets them). */
static bool dense(const mf_tensor *t, bool cl) {
  if (!cl) return mf_is_contiguous(t);
  static const int order[4] = {1, 3, 2, 0}; /* innermost first */
  int64_t st = 1;
  for (int k = 0; k < 4; k++) {
    int d = order[k];
    if (t->shape[d] == 0) return true;
    if (t->shape[d] != 1 && t->stride[d] != st) return false;
    st *= t->shape[d];
  }
  return true;
}

mf_status mf_cuda_pool2d(mf_device *dev, const mf_call *c) {
  const char *name = mf_op_name(c->op);
  bool backward = c->op == MF_OP_MAX_POOL2D_BACKWARD || c->op == MF_OP_AVG_POOL2D_BACKWARD;
  if (!c->out || c->nin < 1 || !c->in[0] || (c->op != MF_OP_MAX_POOL2D_BACKWARD && !c->params) ||
      (c->op == MF_OP_MAX_POOL2D_BACKWARD && (c->nin < 2 || !c->in[1])))
    return mf_fail(MF_ERR_ARG, "%s: malformed kernel call", name);
  mf_dtype dt = c->out->dtype;
  const mf_tensor *big = backward ? c->out : c->in[0], *small = backward ? c->in[0] : c->out;
  if (big->ndim != 4 || small->ndim != 4 || c->in[0]->dtype != dt)
    return mf_fail(MF_ERR_ARG, "%s: malformed kernel call", name);
  bool cl = c->ip[0] != 0;
  if (!dense(c->out, cl) || !dense(c->in[0], cl) ||
      (c->op == MF_OP_MAX_POOL2D_BACKWARD && !dense(c->in[1], cl)) ||
      (c->out2 && !dense(c->out2, cl)))
    return mf_fail(MF_ERR_ARG, "%s: the GPU kernel takes dense %s tensors", name,
                   cl ? "channels-last (ip[0] = 1)" : "NCHW");
  pool_geom g = {};
  g.cl = cl;
  g.N = big->shape[0];
  g.C = big->shape[1];
  g.H = big->shape[2];
  g.W = big->shape[3];
  g.OH = small->shape[2];
  g.OW = small->shape[3];
  if (c->params) {
    const mf_pool2d_params *p = (const mf_pool2d_params *)c->params;
    g.kh = p->kernel[0], g.kw = p->kernel[1], g.sh = p->stride[0], g.sw = p->stride[1];
    g.pt = p->pad[0], g.pl = p->pad[1], g.include_pad = p->count_include_pad;
  }
  /* threads: one per output cell, or per input cell for average pooling's backward */
  int64_t total = g.N * g.C * (c->op == MF_OP_AVG_POOL2D_BACKWARD ? g.H * g.W : g.OH * g.OW);
  MF_TRY(mf_cuda_enter(dev));
  cudaStream_t s = mf_cuda_stream(dev);
  if (c->op == MF_OP_MAX_POOL2D_BACKWARD)
    MF_TRY(mf_cuda_check(
        dev,
        cudaMemsetAsync(mf_cuda_ptr(c->out), 0, (size_t)mf_numel(c->out) * mf_dtype_size(dt), s),
        name));
  if (total == 0) return MF_OK;
#ifdef MF_HAVE_CUDNN
  if ((c->op == MF_OP_AVG_POOL2D || (c->op == MF_OP_MAX_POOL2D && !c->out2)) && dt != MF_F16 &&
      dt != MF_BF16) {
    bool done = false;
    mf_status ds = dnn_forward(dev, c, g, &done);
    if (ds == MF_ERR_MEMORY) return ds; /* any other refusal: our kernels, which are exact */
    if (ds == MF_OK && done) return mf_cuda_launched(dev, name);
  }
#endif
  unsigned blocks = mf_cuda_blocks(total);
  /* max pooling's backward in a half dtype accumulates in a zeroed float32 scratch */
  float *scratch = nullptr;
  size_t scratch_bytes = 0;
  if (c->op == MF_OP_MAX_POOL2D_BACKWARD && (dt == MF_F16 || dt == MF_BF16)) {
    scratch_bytes = (size_t)mf_numel(c->out) * sizeof(float);
    scratch = (float *)mf_cuda_scratch(dev, scratch_bytes);
    if (!scratch) return MF_ERR_MEMORY; /* the allocator's message says how much */
    mf_status ms = mf_cuda_check(dev, cudaMemsetAsync(scratch, 0, scratch_bytes, s), name);
    if (ms) {
      mf_cuda_scratch_free(dev, scratch, scratch_bytes);
      return ms;
    }
  }
  bool ok = mf_cuda_visit_float<true>(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T *out = mf_cuda_ptr<T>(c->out);
    const T *in = mf_cuda_ptr<T>(c->in[0]);
    switch (c->op) {
    case MF_OP_MAX_POOL2D:
      max_fwd_kernel<T><<<blocks, MF_CUDA_THREADS, 0, s>>>(
          out, c->out2 ? mf_cuda_ptr<int64_t>(c->out2) : nullptr, in, g);
      break;
    case MF_OP_MAX_POOL2D_BACKWARD:
      if constexpr (decltype(tag)::kind == MF_K_HALF) {
        max_bwd_kernel<T, float>
            <<<blocks, MF_CUDA_THREADS, 0, s>>>(scratch, in, mf_cuda_ptr<int64_t>(c->in[1]), g);
        to_half_kernel<T><<<mf_cuda_blocks(mf_numel(c->out)), MF_CUDA_THREADS, 0, s>>>(
            out, scratch, mf_numel(c->out));
      } else {
        max_bwd_kernel<T, T>
            <<<blocks, MF_CUDA_THREADS, 0, s>>>(out, in, mf_cuda_ptr<int64_t>(c->in[1]), g);
      }
      break;
    case MF_OP_AVG_POOL2D: avg_fwd_kernel<T><<<blocks, MF_CUDA_THREADS, 0, s>>>(out, in, g); break;
    default: avg_bwd_kernel<T><<<blocks, MF_CUDA_THREADS, 0, s>>>(out, in, g); break;
    }
  });
  /* the stream orders the scratch's later reuse after these kernels */
  if (scratch) mf_cuda_scratch_free(dev, scratch, scratch_bytes);
  if (!ok)
    return mf_fail(MF_ERR_DTYPE, "%s: the GPU kernel takes float dtypes, got %s", name,
                   mf_dtype_name(dt));
  return mf_cuda_launched(dev, name);
}
