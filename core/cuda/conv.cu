/* conv.cu — CONV2D, CONV2D_BACKWARD_INPUT and CONV2D_BACKWARD_WEIGHT through cuDNN 9 (its
 * convolution API: descriptors, cudnnConvolutionForward / BackwardData / BackwardFilter).
 *
 * Calls (ops_nn.c): CONV2D in[0] = x (N, C, H, W), in[1] = w (O, C, KH, KW), in[2] = bias (O) or
 * absent, out = y (N, O, OH, OW); BACKWARD_INPUT in[0] = dy, in[1] = w, out = dx; BACKWARD_WEIGHT
 * in[0] = dy, in[1] = x, out = dw; params = mf_pool2d_params (stride, pad {top, left, bottom,
 * right}); groups = 1, dilation 1. The front end hands over contiguous NCHW tensors, or, for a
 * channels-last input (ip[0] = 1, ops_nn.c), x, y/dy and dx dense channels-last with w and dw
 * contiguous (O, C, KH, KW).
 *
 * Layouts: cuDNN gets x, w and y in one layout, as PyTorch gives them (its Conv_v7.cpp describes
 * input, weight and output in one memory format; cuDNN's support tables, as far as we know them,
 * list no backward algorithm for an NHWC dy with a KCRS filter): the activations' layout, except
 * NCHW for float64 (PyTorch never hands cuDNN a float64 NHWC convolution either). An operand packed
 * otherwise goes through a scratch copy in that layout (copy_in / copy_out): for a channels-last
 * float call that is the weight (KCRS to KRSC, and dw back), a small tensor; for a channels-last
 * float64 call, the activations. Operands already packed in the layout (C = 1 or 1x1 weights count
 * as both) are used in place.
 *
 * Padding: cuDNN pads symmetrically. When the padding is asymmetric (TensorFlow's "same" with an
 * odd total) but cuDNN's output size with the top/left padding on both sides is the wanted one,
 * the extra bottom/right cells are never read and cuDNN runs as is; otherwise the input is copied
 * into a zero-padded buffer laid out as the output side is (NCHW or NHWC) and cuDNN runs with no
 * padding (the backward-input result is cropped back).
 *
 * Algorithms: cuDNN's heuristics (cudnnGet*Algorithm_v7) rank them; with
 * MOONFLOW_CUDNN_BENCHMARK=1 each is timed once instead (cudnnFind*AlgorithmEx, like PyTorch's
 * cudnn.benchmark). They are tried in that order until one runs (a ranked algorithm may still
 * refuse at the call, say a pointer off the 16-byte boundary its tensor cores want, or its
 * workspace may not fit), as PyTorch does, and the one that ran is cached per shape (device, op,
 * dtype, layout, sizes, geometry, math mode, and the operands' alignment). Workspace comes from the
 * device's cuDNN workspace (dnn.cuh), at most MAX_WORKSPACE per call. float32 uses TF32 tensor
 * cores while mf_cuda_set_tf32 is on (default), FMA only when off.
 *
 * Data and compute types (the "Supported configurations" of cudnnConvolutionForward,
 * BackwardData and BackwardFilter, cuDNN 9 API reference, cudnn_cnn library): float64 runs as
 * DOUBLE_CONFIG, float32 as FLOAT_CONFIG, float16 as PSEUDO_HALF_CONFIG (HALF x, w, y; FLOAT
 * compute type) and bfloat16 as PSEUDO_BFLOAT16_CONFIG (BFLOAT16 x, w, y; FLOAT compute), both
 * with CUDNN_TENSOR_OP_MATH: half storage, float32 accumulation, as PyTorch's cuDNN convolutions.
 * The bias is added by a kernel of ours (bias_kernel: cudnnAddTensor is deprecated in cuDNN 9,
 * slow on NHWC, and documents no bfloat16). tests/cuda_emu/cudnn.cc refuses the combinations
 * cuDNN does not list, and the layout mixes moonflow must not depend on.
 *
 * Batches: cuDNN indexes a tensor in 32 bits, so a batch whose input or output has 2^31
 * elements or more runs in pieces of whole images (mf_cuda_conv2d, at the end).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/dnn.cuh"
#include "cuda/kernels.h"

#define MAX_WORKSPACE ((size_t)1 << 30)
#define CACHE_SIZE 256
#define MAX_ALGOS 16

enum { K_FWD, K_BWD_DATA, K_BWD_FILTER };

/* ---- the algorithm cache ----------------------------------------------------------------------
 */

typedef struct conv_key {
  int device, kind, dtype, math;
  int fx, fy, fw; /* layouts */
  int64_t xs[4], ws[4], ys[4];
  int pad[2], stride[2];
  int align; /* the low 4 bits of the operands' addresses, or-ed (tensor-core kernels want 16) */
} conv_key;

typedef struct conv_entry {
  bool used;
  conv_key key;
  int algo;
  cudnnMathType_t math;
  size_t workspace;
} conv_entry;

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static conv_entry cache[CACHE_SIZE];
static int cache_next;

static bool cache_get(const conv_key *k, conv_entry *out) {
  bool found = false;
  pthread_mutex_lock(&cache_lock);
  for (int i = 0; i < CACHE_SIZE && !found; i++)
    if (cache[i].used && memcmp(&cache[i].key, k, sizeof *k) == 0) {
      *out = cache[i];
      found = true;
    }
  pthread_mutex_unlock(&cache_lock);
  return found;
}

static void cache_put(const conv_entry *e) {
  pthread_mutex_lock(&cache_lock);
  cache[cache_next] = *e; /* round robin: a program's shapes are few */
  cache[cache_next].used = true;
  cache_next = (cache_next + 1) % CACHE_SIZE;
  pthread_mutex_unlock(&cache_lock);
}

static bool benchmark_mode(void) {
  const char *v = getenv("MOONFLOW_CUDNN_BENCHMARK");
  return v && v[0] && strcmp(v, "0") != 0;
}

/* ---- one convolution's descriptors --------------------------------------------------------------
 */

typedef struct conv_setup {
  mf_device *dev;
  const char *op;
  mf_dnn_what what; /* the operands, for messages */
  cudnnHandle_t h;
  mf_dnn_tensor_desc x, y; /* x: the (possibly padded) input side, y: the output side */
  mf_dnn_filter_desc w;
  mf_dnn_conv_desc conv;
  conv_key key;
  bool tf32;
} conv_setup;

/* The filter descriptor of w's shape, packed in layout fmt (the weight is staged in it). */
static mf_status make_filter(conv_setup *cs, const mf_tensor *w, cudnnTensorFormat_t fmt) {
  cudnnDataType_t ct;
  if (!mf_dnn_dtype(w->dtype, &ct))
    return mf_fail(MF_ERR_DTYPE, "%s: cuDNN does not take %s tensors", cs->op,
                   mf_dtype_name(w->dtype));
  for (int d = 0; d < 4; d++)
    if (w->shape[d] > INT32_MAX) {
      char what[320];
      return mf_fail(MF_ERR_SHAPE, "%s: weight too large for cuDNN (%s)", cs->op,
                     mf_dnn_what_str(&cs->what, what, sizeof what));
    }
  MF_TRY(mf_dnn_check(cs->dev, cudnnCreateFilterDescriptor(&cs->w.d), cs->op,
                      "cudnnCreateFilterDescriptor", &cs->what));
  return mf_dnn_check(cs->dev,
                      cudnnSetFilter4dDescriptor(cs->w.d, ct, fmt, (int)w->shape[0],
                                                 (int)w->shape[1], (int)w->shape[2],
                                                 (int)w->shape[3]),
                      cs->op, "cudnnSetFilter4dDescriptor", &cs->what);
}

static mf_status make_conv(conv_setup *cs, mf_dtype dt, int pad_h, int pad_w,
                           const mf_pool2d_params *p) {
  cudnnDataType_t compute = dt == MF_F64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
  MF_TRY(mf_dnn_check(cs->dev, cudnnCreateConvolutionDescriptor(&cs->conv.d), cs->op,
                      "cudnnCreateConvolutionDescriptor", &cs->what));
  MF_TRY(mf_dnn_check(cs->dev,
                      cudnnSetConvolution2dDescriptor(cs->conv.d, pad_h, pad_w, p->stride[0],
                                                      p->stride[1], 1, 1, CUDNN_CROSS_CORRELATION,
                                                      compute),
                      cs->op, "cudnnSetConvolution2dDescriptor", &cs->what));
  /* float32: TF32 tensor cores when allowed, else plain FMA; other dtypes: cuDNN's default */
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  if (dt == MF_F32)
    math = cs->tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
  else if (dt == MF_F16 || dt == MF_BF16)
    math = CUDNN_TENSOR_OP_MATH;
  cs->key.math = (int)math;
  cs->key.pad[0] = pad_h;
  cs->key.pad[1] = pad_w;
  cs->key.stride[0] = p->stride[0];
  cs->key.stride[1] = p->stride[1];
  return mf_dnn_check(cs->dev, cudnnSetConvolutionMathType(cs->conv.d, math), cs->op,
                      "cudnnSetConvolutionMathType", &cs->what);
}

/* ---- choosing an algorithm ----------------------------------------------------------------------
 */

/* From a list of perf results (ranked by cuDNN), the candidates in order (at most MAX_ALGOS in
 * out): those that ran, fit the workspace cap, and (FMA mode) do not use tensor cores. */
template <class P>
static int pick(const P *perf, int n, bool fma_only, const conv_key *key, conv_entry *out) {
  int k = 0;
  for (int i = 0; i < n; i++) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
    if (perf[i].memory > MAX_WORKSPACE) continue;
    if (fma_only && (perf[i].mathType == CUDNN_TENSOR_OP_MATH ||
                     perf[i].mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION))
      continue;
    conv_entry *e = &out[k++];
    memset(e, 0, sizeof *e);
    e->key = *key;
    e->algo = (int)perf[i].algo;
    /* FMA asked for: keep it (cuDNN's DEFAULT_MATH may use TF32 on sm_80+) */
    e->math = fma_only ? CUDNN_FMA_MATH : perf[i].mathType;
    e->workspace = perf[i].memory;
  }
  return k;
}

/* The algorithms to try for cs, best first, into list (MAX_ALGOS): the cached one (*cached: it
 * ran before, its workspace exact), else those cuDNN ranks (pick). xp, yp, wp: the buffers
 * (benchmark mode runs on them, writing the output side, which the real call then overwrites). */
static mf_status candidates(conv_setup *cs, int kind, const void *xp, void *xw, const void *yp,
                            void *yw, const void *wp, void *ww, conv_entry *list, int *count,
                            bool *cached) {
  cs->key.kind = kind;
  *count = 0;
  *cached = cache_get(&cs->key, &list[0]);
  if (*cached) {
    *count = 1;
    return MF_OK;
  }
  bool fma_only = cs->key.math == (int)CUDNN_FMA_MATH;
  int n = 0;
  mf_status s = MF_OK;
  if (benchmark_mode()) {
    void *ws = NULL;
    size_t wbytes = (size_t)256 << 20;
    if (mf_dnn_workspace(cs->dev, cs->op, wbytes, &ws) != MF_OK) { /* too big: time those that */
      wbytes = 0;                                                  /* need no workspace */
      ws = NULL;
    }
    if (kind == K_FWD) {
      cudnnConvolutionFwdAlgoPerf_t perf[MAX_ALGOS];
      s = mf_dnn_check(cs->dev,
                       cudnnFindConvolutionForwardAlgorithmEx(cs->h, cs->x.d, xp, cs->w.d, wp,
                                                              cs->conv.d, cs->y.d, yw, MAX_ALGOS,
                                                              &n, perf, ws, wbytes),
                       cs->op, "cudnnFindConvolutionForwardAlgorithmEx", &cs->what);
      if (!s) *count = pick(perf, n, fma_only, &cs->key, list);
    } else if (kind == K_BWD_DATA) {
      cudnnConvolutionBwdDataAlgoPerf_t perf[MAX_ALGOS];
      s = mf_dnn_check(cs->dev,
                       cudnnFindConvolutionBackwardDataAlgorithmEx(cs->h, cs->w.d, wp, cs->y.d, yp,
                                                                   cs->conv.d, cs->x.d, xw,
                                                                   MAX_ALGOS, &n, perf, ws, wbytes),
                       cs->op, "cudnnFindConvolutionBackwardDataAlgorithmEx", &cs->what);
      if (!s) *count = pick(perf, n, fma_only, &cs->key, list);
    } else {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[MAX_ALGOS];
      s = mf_dnn_check(cs->dev,
                       cudnnFindConvolutionBackwardFilterAlgorithmEx(
                           cs->h, cs->x.d, xp, cs->y.d, yp, cs->conv.d, cs->w.d, ww, MAX_ALGOS, &n,
                           perf, ws, wbytes),
                       cs->op, "cudnnFindConvolutionBackwardFilterAlgorithmEx", &cs->what);
      if (!s) *count = pick(perf, n, fma_only, &cs->key, list);
    }
  }
  if (*count == 0) { /* heuristics */
    if (kind == K_FWD) {
      cudnnConvolutionFwdAlgoPerf_t perf[MAX_ALGOS];
      s = mf_dnn_check(cs->dev,
                       cudnnGetConvolutionForwardAlgorithm_v7(cs->h, cs->x.d, cs->w.d, cs->conv.d,
                                                              cs->y.d, MAX_ALGOS, &n, perf),
                       cs->op, "cudnnGetConvolutionForwardAlgorithm_v7", &cs->what);
      if (!s) *count = pick(perf, n, fma_only, &cs->key, list);
    } else if (kind == K_BWD_DATA) {
      cudnnConvolutionBwdDataAlgoPerf_t perf[MAX_ALGOS];
      s = mf_dnn_check(cs->dev,
                       cudnnGetConvolutionBackwardDataAlgorithm_v7(
                           cs->h, cs->w.d, cs->y.d, cs->conv.d, cs->x.d, MAX_ALGOS, &n, perf),
                       cs->op, "cudnnGetConvolutionBackwardDataAlgorithm_v7", &cs->what);
      if (!s) *count = pick(perf, n, fma_only, &cs->key, list);
    } else {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[MAX_ALGOS];
      s = mf_dnn_check(cs->dev,
                       cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                           cs->h, cs->x.d, cs->y.d, cs->conv.d, cs->w.d, MAX_ALGOS, &n, perf),
                       cs->op, "cudnnGetConvolutionBackwardFilterAlgorithm_v7", &cs->what);
      if (!s) *count = pick(perf, n, fma_only, &cs->key, list);
    }
    MF_TRY(s);
  }
  char what[320];
  if (*count == 0)
    return mf_fail(MF_ERR_UNSUPPORTED, "cuda:%d: %s: cuDNN offers no algorithm for %s",
                   cs->dev->index, cs->op, mf_dnn_what_str(&cs->what, what, sizeof what));
  return MF_OK;
}

/* One try of algorithm e on x, y and w as cuDNN sees them (kind's output side written): its math
 * type, its exact workspace (the heuristics' figure is an estimate; a cached entry's is exact),
 * the workspace, and the call. */
static mf_status run_algo(conv_setup *cs, int kind, conv_entry *e, bool cached, void *x, void *y,
                          void *w) {
  mf_device *dev = cs->dev;
  const char *op = cs->op;
  MF_TRY(mf_dnn_check(dev, cudnnSetConvolutionMathType(cs->conv.d, e->math), op,
                      "cudnnSetConvolutionMathType", &cs->what));
  if (!cached) {
    size_t need = 0;
    cudnnStatus_t st =
        kind == K_FWD
            ? cudnnGetConvolutionForwardWorkspaceSize(cs->h, cs->x.d, cs->w.d, cs->conv.d, cs->y.d,
                                                      (cudnnConvolutionFwdAlgo_t)e->algo, &need)
        : kind == K_BWD_DATA ? cudnnGetConvolutionBackwardDataWorkspaceSize(
                                   cs->h, cs->w.d, cs->y.d, cs->conv.d, cs->x.d,
                                   (cudnnConvolutionBwdDataAlgo_t)e->algo, &need)
                             : cudnnGetConvolutionBackwardFilterWorkspaceSize(
                                   cs->h, cs->x.d, cs->y.d, cs->conv.d, cs->w.d,
                                   (cudnnConvolutionBwdFilterAlgo_t)e->algo, &need);
    MF_TRY(mf_dnn_check(dev, st, op, "cudnnGetConvolution*WorkspaceSize", &cs->what));
    if (need > e->workspace) e->workspace = need;
  }
  void *ws = NULL;
  MF_TRY(mf_dnn_workspace(dev, op, e->workspace, &ws));
  mf_dnn_scalars k(cs->key.dtype == MF_F64 ? MF_F64 : MF_F32);
  if (kind == K_FWD)
    return mf_dnn_check(dev,
                        cudnnConvolutionForward(cs->h, k.one(), cs->x.d, x, cs->w.d, w, cs->conv.d,
                                                (cudnnConvolutionFwdAlgo_t)e->algo, ws,
                                                e->workspace, k.zero(), cs->y.d, y),
                        op, "cudnnConvolutionForward", &cs->what);
  if (kind == K_BWD_DATA)
    return mf_dnn_check(dev,
                        cudnnConvolutionBackwardData(cs->h, k.one(), cs->w.d, w, cs->y.d, y,
                                                     cs->conv.d,
                                                     (cudnnConvolutionBwdDataAlgo_t)e->algo, ws,
                                                     e->workspace, k.zero(), cs->x.d, x),
                        op, "cudnnConvolutionBackwardData", &cs->what);
  return mf_dnn_check(dev,
                      cudnnConvolutionBackwardFilter(cs->h, k.one(), cs->x.d, x, cs->y.d, y,
                                                     cs->conv.d,
                                                     (cudnnConvolutionBwdFilterAlgo_t)e->algo, ws,
                                                     e->workspace, k.zero(), cs->w.d, w),
                      op, "cudnnConvolutionBackwardFilter", &cs->what);
}

/* ---- explicit padding
 * ----------------------------------------------------------------------------- */

/* The offset of (n, c, h, w) in the padded buffer (N, C, Hp, Wp), dense NCHW or NHWC. */
__device__ __forceinline__ int64_t padded_at(bool nhwc, int64_t n, int64_t c, int64_t h, int64_t w,
                                             int64_t C, int64_t Hp, int64_t Wp) {
  return nhwc ? ((n * Hp + h) * Wp + w) * C + c : ((n * C + c) * Hp + h) * Wp + w;
}

/* dst (N, C, Hp, Wp), dense NCHW or (nhwc) NHWC, = src (N, C, H, W) (any strides s0..s3) shifted
 * by (pt, pl), zeros around; or, crop, the reverse: dst (any strides) = src's padded window. The
 * threads walk the written tensor in the buffer's memory order. */
template <class T>
__global__ void pad_kernel(T *dst, const T *src, int64_t N, int64_t C, int64_t H, int64_t W,
                           int64_t Hp, int64_t Wp, int pt, int pl, int64_t s0, int64_t s1,
                           int64_t s2, int64_t s3, bool crop, bool nhwc) {
  int64_t hn = crop ? H : Hp, wn = crop ? W : Wp, total = N * C * hn * wn;
  MF_GRID_LOOP(i, total) {
    int64_t n, c, h, w, q;
    if (nhwc) {
      c = i % C, q = i / C, w = q % wn, q /= wn, h = q % hn, n = q / hn;
    } else {
      w = i % wn, q = i / wn, h = q % hn, q /= hn, c = q % C, n = q / C;
    }
    if (!crop) {
      int64_t ih = h - pt, iw = w - pl;
      dst[padded_at(nhwc, n, c, h, w, C, Hp, Wp)] = ih >= 0 && ih < H && iw >= 0 && iw < W
                                                        ? src[n * s0 + c * s1 + ih * s2 + iw * s3]
                                                        : T(0.0f);
    } else {
      dst[n * s0 + c * s1 + h * s2 + w * s3] =
          src[padded_at(nhwc, n, c, h + pt, w + pl, C, Hp, Wp)];
    }
  }
}

static mf_status launch_pad(mf_device *dev, const char *op, mf_dtype dt, void *dst, const void *src,
                            const int64_t *shape, const int64_t *stride, int64_t Hp, int64_t Wp,
                            int pt, int pl, bool crop, bool nhwc) {
  int64_t total = shape[0] * shape[1] * (crop ? shape[2] * shape[3] : Hp * Wp);
  cudaStream_t s = mf_cuda_stream(dev);
  bool ok = mf_cuda_visit_float<true>(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    pad_kernel<T><<<mf_cuda_blocks(total), MF_CUDA_THREADS, 0, s>>>(
        (T *)dst, (const T *)src, shape[0], shape[1], shape[2], shape[3], Hp, Wp, pt, pl, stride[0],
        stride[1], stride[2], stride[3], crop, nhwc);
  });
  if (!ok) return mf_fail(MF_ERR_DTYPE, "%s: bad dtype %s", op, mf_dtype_name(dt));
  return mf_cuda_launched(dev, op);
}

/* ---- operands in the layout cuDNN computes in -------------------------------------------------
 */

/* frees a scratch buffer on every return */
struct scratch_buf {
  mf_device *dev = nullptr;
  void *p = nullptr;
  size_t n = 0;
  ~scratch_buf() {
    if (p) mf_cuda_scratch_free(dev, p, n);
  }
};

/* Packed (N, C, H, W) strides of layout nhwc (NHWC) or NCHW. */
static void packed_strides(const int64_t *s, bool nhwc, int64_t *st) {
  if (nhwc)
    st[1] = 1, st[3] = s[1], st[2] = s[3] * s[1], st[0] = s[2] * s[3] * s[1];
  else
    st[3] = 1, st[2] = s[3], st[1] = s[2] * s[3], st[0] = s[1] * s[2] * s[3];
}

/* An operand as cuDNN sees it: packed in the computing layout. The tensor itself when it is laid
 * out so; else a scratch copy, made before the call for an input (copy_in) and copied back into
 * the tensor after it for an output (copy_out). */
struct staged {
  const mf_tensor *t = nullptr;
  void *ptr = nullptr;
  scratch_buf buf;
};

static mf_status copy_in(mf_device *dev, const char *op, const mf_tensor *t, bool nhwc, bool input,
                         staged *s) {
  s->t = t;
  s->ptr = mf_cuda_ptr(t);
  cudnnTensorFormat_t want = nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW, f;
  if (mf_dnn_layout(t, &f, want) && f == want) return MF_OK;
  if (mf_numel(t) == 0) return MF_OK; /* nothing to stage */
  s->buf.dev = dev;
  s->buf.n = (size_t)mf_numel(t) * mf_dtype_size(t->dtype);
  s->buf.p = s->ptr = mf_cuda_scratch(dev, s->buf.n);
  if (!s->ptr) return MF_ERR_MEMORY; /* the allocator's message says how much */
  if (!input) return MF_OK;
  return launch_pad(dev, op, t->dtype, s->ptr, mf_cuda_ptr(t), t->shape, t->stride, t->shape[2],
                    t->shape[3], 0, 0, false, nhwc);
}

static mf_status copy_out(mf_device *dev, const char *op, const staged *s, bool nhwc) {
  if (!s->buf.p) return MF_OK;
  const mf_tensor *t = s->t;
  return launch_pad(dev, op, t->dtype, mf_cuda_ptr(t), s->ptr, t->shape, t->stride, t->shape[2],
                    t->shape[3], 0, 0, true, nhwc);
}

/* y (N, O, OH, OW), packed NCHW (inner = OH * OW) or NHWC (inner = 1), += bias[o] (stride bs),
 * added in the accumulation type and rounded once */
template <class T>
__global__ void bias_kernel(T *y, const T *b, int64_t bs, int64_t total, int64_t O, int64_t inner) {
  using A = typename mf_acc<T>::type;
  MF_GRID_LOOP(i, total) y[i] = (T)((A)y[i] + (A)b[(i / inner) % O * bs]);
}

static mf_status add_bias(mf_device *dev, const char *op, void *y, const int64_t *shape, bool nhwc,
                          const mf_tensor *bias) {
  int64_t total = shape[0] * shape[1] * shape[2] * shape[3];
  int64_t inner = nhwc ? 1 : shape[2] * shape[3];
  cudaStream_t s = mf_cuda_stream(dev);
  bool ok = mf_cuda_visit_float<true>(bias->dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    bias_kernel<T><<<mf_cuda_blocks(total), MF_CUDA_THREADS, 0, s>>>(
        (T *)y, mf_cuda_ptr<T>(bias), bias->stride[0], total, shape[1], inner);
  });
  if (!ok) return mf_fail(MF_ERR_DTYPE, "%s: bad dtype %s", op, mf_dtype_name(bias->dtype));
  return mf_cuda_launched(dev, op);
}

/* ---- the kernel ------------------------------------------------------------------------------ */

/* Whether cuDNN's symmetric padding (top and left on both sides) gives y's size, so that cuDNN
 * takes x as it is; else x goes through an explicitly padded copy. */
static bool pads_direct(const mf_tensor *x, const mf_tensor *w, const mf_tensor *y,
                        const mf_pool2d_params *p) {
  int64_t dh = x->shape[2] + 2 * p->pad[0] - w->shape[2];
  int64_t dw = x->shape[3] + 2 * p->pad[1] - w->shape[3];
  return dh >= 0 && dw >= 0 && dh / p->stride[0] + 1 == y->shape[2] &&
         dw / p->stride[1] + 1 == y->shape[3];
}

/* A convolution call's kind (K_*, or -1 for another op) and its three tensors by role: x side
 * (N, C, H, W), y side (N, O, OH, OW), weight. c->out, in[0] and in[1] are set. */
typedef struct conv_roles {
  int kind;
  const mf_tensor *x, *y, *w;
} conv_roles;

static conv_roles roles_of(const mf_call *c) {
  conv_roles r;
  r.kind = c->op == MF_OP_CONV2D                   ? K_FWD
           : c->op == MF_OP_CONV2D_BACKWARD_INPUT  ? K_BWD_DATA
           : c->op == MF_OP_CONV2D_BACKWARD_WEIGHT ? K_BWD_FILTER
                                                   : -1;
  r.x = r.kind == K_FWD ? c->in[0] : r.kind == K_BWD_FILTER ? c->in[1] : c->out;
  r.y = r.kind == K_FWD ? c->out : c->in[0];
  r.w = r.kind == K_BWD_FILTER ? c->out : c->in[1];
  return r;
}

/* One cuDNN convolution (see the top); mf_cuda_conv2d below splits a batch too large for it. */
static mf_status conv_once(mf_device *dev, const mf_call *c) {
  const char *op = mf_op_name(c->op);
  if (!c->out || c->nin < 2 || !c->in[0] || !c->in[1] || !c->params)
    return mf_fail(MF_ERR_ARG, "%s: malformed kernel call", op);
  const mf_pool2d_params *p = (const mf_pool2d_params *)c->params;
  conv_roles r = roles_of(c);
  int kind = r.kind;
  if (kind < 0) return mf_fail(MF_ERR_ARG, "%s: not a convolution op", op);
  const mf_tensor *x = r.x, *y = r.y, *w = r.w;
  const mf_tensor *bias = kind == K_FWD && c->nin > 2 ? c->in[2] : NULL;
  mf_dtype dt = c->out->dtype;
  if (x->dtype != dt || y->dtype != dt || w->dtype != dt || (bias && bias->dtype != dt))
    return mf_fail(MF_ERR_DTYPE, "%s: every operand must be %s", op, mf_dtype_name(dt));
  if (x->ndim != 4 || y->ndim != 4 || w->ndim != 4)
    return mf_fail(MF_ERR_SHAPE, "%s: needs 4-D operands", op);

  conv_setup cs;
  memset(&cs.key, 0, sizeof cs.key);
  cs.dev = dev;
  cs.op = op;
  cs.tf32 = mf_cuda_tf32();
  cs.what.na = kind == K_BWD_DATA ? "output gradient" : "input";
  cs.what.a = kind == K_BWD_DATA ? y : x;
  cs.what.nb = "weight";
  cs.what.b = w;
  cs.what.p = p;
  cs.key.device = dev->index;
  cs.key.dtype = (int)dt;
  for (int d = 0; d < 4; d++) {
    cs.key.xs[d] = x->shape[d];
    cs.key.ws[d] = w->shape[d];
    cs.key.ys[d] = y->shape[d];
  }
  /* y has the most channels (usually): its layout settles that of x where ambiguous */
  cudnnTensorFormat_t fx, fy;
  if (!mf_dnn_layout(y, &fy, mf_dnn_layout(x, &fx) ? fx : CUDNN_TENSOR_NCHW) ||
      !mf_dnn_layout(x, &fx, fy)) {
    char what[320];
    return mf_fail(MF_ERR_ARG, "%s: operands must be packed NCHW or NHWC on the GPU (%s)", op,
                   mf_dnn_what_str(&cs.what, what, sizeof what));
  }
  /* the layout cuDNN computes in (x, w and y alike, see the top) */
  bool nhwc = fy == CUDNN_TENSOR_NHWC && dt != MF_F64;
  cudnnTensorFormat_t L = nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
  cs.key.fx = cs.key.fy = cs.key.fw = (int)L;
  MF_TRY(mf_cuda_enter(dev));
  MF_TRY(mf_dnn_handle(dev, op, &cs.h));
  int64_t st[4];
  packed_strides(y->shape, nhwc, st);
  MF_TRY(mf_dnn_tensor4d(dev, op, dt, y->shape, st, &cs.y));
  MF_TRY(make_filter(&cs, w, L));

  int64_t H = x->shape[2], W = x->shape[3];
  int pt = p->pad[0], pl = p->pad[1];
  bool direct = pads_direct(x, w, y, p);
  staged xs, ys, ws_; /* x, y and w as cuDNN sees them */
  MF_TRY(copy_in(dev, op, y, nhwc, kind != K_FWD, &ys));
  MF_TRY(copy_in(dev, op, w, nhwc, kind != K_BWD_FILTER, &ws_));
  int64_t Hp = H + p->pad[0] + p->pad[2], Wp = W + p->pad[1] + p->pad[3];
  if (direct) {
    MF_TRY(copy_in(dev, op, x, nhwc, kind != K_BWD_DATA, &xs));
    packed_strides(x->shape, nhwc, st);
    MF_TRY(mf_dnn_tensor4d(dev, op, dt, x->shape, st, &cs.x));
    MF_TRY(make_conv(&cs, dt, pt, pl, p));
  } else { /* the padded input in the computing layout (read from x's own strides) */
    int64_t ps[4] = {x->shape[0], x->shape[1], Hp, Wp};
    xs.t = x;
    xs.buf.dev = dev;
    xs.buf.n = (size_t)(ps[0] * ps[1] * Hp * Wp) * mf_dtype_size(dt);
    xs.buf.p = xs.ptr = mf_cuda_scratch(dev, xs.buf.n);
    if (!xs.ptr) return MF_ERR_MEMORY;
    if (kind != K_BWD_DATA) /* the input, padded; backward-input writes it instead */
      MF_TRY(launch_pad(dev, op, dt, xs.ptr, mf_cuda_ptr(x), x->shape, x->stride, Hp, Wp, pt, pl,
                        false, nhwc));
    cs.key.xs[2] = Hp;
    cs.key.xs[3] = Wp;
    packed_strides(ps, nhwc, st);
    MF_TRY(mf_dnn_tensor4d(dev, op, dt, ps, st, &cs.x));
    mf_pool2d_params p0 = *p;
    MF_TRY(make_conv(&cs, dt, 0, 0, &p0));
  }

  /* the algorithms in turn until one runs (as PyTorch's cuDNN convolutions do: cuDNN's ranking
   * can offer one that then refuses, or whose workspace does not fit); the first failure is the
   * one reported when none runs */
  cs.key.align = (int)(((uintptr_t)xs.ptr | (uintptr_t)ys.ptr | (uintptr_t)ws_.ptr) & 15);
  conv_entry cand[MAX_ALGOS];
  int ncand = 0;
  bool cached = false;
  MF_TRY(candidates(&cs, kind, xs.ptr, kind == K_BWD_DATA ? xs.ptr : NULL, ys.ptr,
                    kind == K_FWD ? ys.ptr : NULL, ws_.ptr, kind == K_BWD_FILTER ? ws_.ptr : NULL,
                    cand, &ncand, &cached));
  mf_status s = MF_OK, first = MF_OK;
  char why[512] = "";
  for (int i = 0; i < ncand; i++) {
    s = run_algo(&cs, kind, &cand[i], cached, xs.ptr, ys.ptr, ws_.ptr);
    if (!s) {
      if (!cached) cache_put(&cand[i]);
      break;
    }
    if (!first) {
      first = s;
      snprintf(why, sizeof why, "%s", mf_error());
    }
  }
  if (s) return mf_fail(first, "%s", why);
  if (kind == K_FWD) {
    if (bias) MF_TRY(add_bias(dev, op, ys.ptr, y->shape, nhwc, bias));
    MF_TRY(copy_out(dev, op, &ys, nhwc));
  } else if (kind == K_BWD_DATA) {
    if (direct)
      MF_TRY(copy_out(dev, op, &xs, nhwc));
    else /* the padded gradient cropped into dx */
      MF_TRY(launch_pad(dev, op, dt, mf_cuda_ptr(c->out), xs.ptr, x->shape, x->stride, Hp, Wp, pt,
                        pl, true, nhwc));
  } else {
    MF_TRY(copy_out(dev, op, &ws_, nhwc));
  }
  return mf_cuda_launched(dev, op);
}

/* ---- batches beyond cuDNN's 32-bit indexing ------------------------------------------------- */

/* dst[i] += src[i], in the accumulation type */
template <class T> __global__ void add_into_kernel(T *dst, const T *src, int64_t n) {
  using A = typename mf_acc<T>::type;
  MF_GRID_LOOP(i, n) dst[i] = (T)((A)dst[i] + (A)src[i]);
}

/* The most elements a piece may have: 2^31 - 1, or MOONFLOW_CUDNN_SPLIT_ELEMS (for tests). */
static int64_t piece_limit(void) {
  static int64_t lim = [] {
    const char *v = getenv("MOONFLOW_CUDNN_SPLIT_ELEMS");
    long long n = v ? atoll(v) : 0;
    return n > 0 && n < INT32_MAX ? (int64_t)n : (int64_t)INT32_MAX;
  }();
  return lim;
}

/* cuDNN indexes each tensor in 32 bits. A batch whose input (as cuDNN sees it: padded when the
 * padding is explicit) or output has more elements than that runs in pieces of whole images, each
 * within the limit, as PyTorch does (split_batch_dim_to_32bit_out): a piece is a view of the batch
 * (NCHW and dense NHWC alike keep the images apart), and the weight gradient is the sum of the
 * pieces' (the first written in place, each later one into scratch and added). A single image over
 * the limit is left to conv_once, which says so. */
mf_status mf_cuda_conv2d(mf_device *dev, const mf_call *c) {
  if (!c->out || c->nin < 2 || !c->in[0] || !c->in[1] || !c->params) return conv_once(dev, c);
  conv_roles r = roles_of(c);
  int kind = r.kind;
  if (kind < 0) return conv_once(dev, c);
  const mf_tensor *x = r.x, *y = r.y, *w = r.w;
  if (x->ndim != 4 || y->ndim != 4 || w->ndim != 4 || x->shape[0] != y->shape[0])
    return conv_once(dev, c);
  const mf_pool2d_params *p = (const mf_pool2d_params *)c->params;
  /* an image as cuDNN will see it: x itself, or its explicitly padded copy */
  bool direct = pads_direct(x, w, y, p);
  int64_t px = x->shape[1] * (x->shape[2] + (direct ? 0 : p->pad[0] + p->pad[2])) *
               (x->shape[3] + (direct ? 0 : p->pad[1] + p->pad[3]));
  int64_t per = y->shape[1] * y->shape[2] * y->shape[3], lim = piece_limit(), N = x->shape[0];
  if (px > per) per = px;
  if (per <= 0 || per > lim || N <= lim / per) return conv_once(dev, c);
  int64_t chunk = lim / per;
  mf_storage tmp_storage = {};
  mf_tensor tmp = {};
  size_t wbytes = 0;
  if (kind == K_BWD_FILTER) { /* scratch for the later pieces' weight gradients */
    wbytes = (size_t)mf_numel(w) * mf_dtype_size(w->dtype);
    tmp_storage = *w->storage;
    tmp_storage.data = mf_cuda_scratch(dev, wbytes);
    if (!tmp_storage.data) return MF_ERR_MEMORY;
    tmp_storage.nbytes = wbytes;
    tmp = *w;
    tmp.offset = 0;
    tmp.storage = &tmp_storage;
  }
  mf_status st = MF_OK;
  for (int64_t n0 = 0; n0 < N && !st; n0 += chunk) {
    mf_tensor xv = *x, yv = *y;
    xv.shape[0] = yv.shape[0] = n0 + chunk < N ? chunk : N - n0;
    xv.offset += n0 * x->stride[0];
    yv.offset += n0 * y->stride[0];
    mf_call pc = *c;
    if (kind == K_FWD) {
      pc.in[0] = &xv;
      pc.out = &yv;
    } else if (kind == K_BWD_DATA) {
      pc.in[0] = &yv;
      pc.out = &xv;
    } else {
      pc.in[0] = &yv;
      pc.in[1] = &xv;
      pc.out = n0 == 0 ? c->out : &tmp;
    }
    st = conv_once(dev, &pc);
    if (!st && kind == K_BWD_FILTER && n0 > 0) {
      int64_t n = mf_numel(w);
      cudaStream_t s = mf_cuda_stream(dev);
      bool ok = mf_cuda_visit_float<true>(w->dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        add_into_kernel<T><<<mf_cuda_blocks(n), MF_CUDA_THREADS, 0, s>>>(mf_cuda_ptr<T>(w),
                                                                         mf_cuda_ptr<T>(&tmp), n);
      });
      const char *op = mf_op_name(c->op);
      st = ok ? mf_cuda_launched(dev, op)
              : mf_fail(MF_ERR_DTYPE, "%s: bad dtype %s", op, mf_dtype_name(w->dtype));
    }
  }
  if (wbytes) mf_cuda_scratch_free(dev, tmp_storage.data, wbytes);
  return st;
}
