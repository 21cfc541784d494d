/* cudnn.cc — the CUDA emulator's cuDNN (see runtime.cc): the part of cuDNN 9's legacy API that
 * core/cuda calls (conv.cu, pool.cu, batchnorm.cu, dnn.cu), written plainly from cuDNN's
 * documented definitions, so that the emulated backend runs its cuDNN code paths: descriptors,
 * algorithm choice and workspaces, convolution forward / backward-data / backward-filter
 * (cross-correlation, padding, strides, dilation, any strides per tensor, KCRS or KRSC filters,
 * TF32 rounding of float32 inputs unless FMA math), cudnnAddTensor with broadcasting, pooling
 * forward (max with NaN propagation, averages with or without padding) and spatial batch norm
 * (training with running statistics and saved mean / inverse std, inference, backward).
 *
 * What cuDNN checks, this checks too, returning CUDNN_STATUS_BAD_PARAM (or NOT_SUPPORTED) with a
 * message for cudnnGetLastErrorString: data types that differ, an output descriptor whose sizes
 * are not the ones the convolution or pooling gives, channels that do not match the filter, a
 * workspace smaller than the algorithm asked for, and every data pointer lying in a live device
 * allocation for the whole span its descriptor covers. Algorithms: two per direction, the first
 * asking for a workspace (which is then scribbled on), ranked first, and refusing at the call
 * pointers off a 16-byte boundary (CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER, as tensor-core
 * kernels do), which the ranking cannot see: the caller then has to try the next.
 *
 * Data types: DOUBLE, FLOAT, HALF and BFLOAT16 tensors (halves read and written as such, computed
 * in double), with cuDNN's rules on their combinations: a convolution's x, w and y share one type
 * and its compute type must make one of the documented configurations (conv_config below: no
 * FLOAT data with a HALF compute type, BFLOAT16 only with FLOAT compute, DOUBLE only with
 * DOUBLE); batch norm's scale, bias, mean and variance are FLOAT for HALF data
 * (cudnnDeriveBNTensorDescriptor derives that type, as cuDNN does) and DOUBLE for DOUBLE, and
 * its data is DOUBLE, FLOAT or HALF: BFLOAT16 batch norm is refused (NOT_SUPPORTED), as nothing
 * shows that cuDNN takes it (PyTorch never gives it one), so moonflow must not depend on it; alpha
 * and beta are float for all but DOUBLE data.
 *
 * Layouts: a convolution's x, w and y must share one (NCHW or NHWC; size-1 dims fit either), and
 * double convolutions and pooling must be NCHW: the mixes PyTorch never hands cuDNN are refused
 * with CUDNN_STATUS_NOT_SUPPORTED_LAYOUT, a cuDNN 9 sub-code of NOT_SUPPORTED, so that moonflow
 * neither depends on them nor misses a sub-code.
 *
 * Accumulation is in double; the results are rounded to the tensors' type once.
 */
#include <cudnn.h>

#include "emu.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <initializer_list>
#include <vector>

#define EXPORT extern "C"

struct cudnnContext {
  cudaStream_t stream;
  int device; /* current when it was made: its calls need it current */
};
struct cudnnTensorStruct {
  cudnnDataType_t dt;
  int nd;
  int dims[8], strides[8];
};
struct cudnnFilterStruct {
  cudnnDataType_t dt;
  cudnnTensorFormat_t fmt;
  int k, c, h, w;
};
struct cudnnConvolutionStruct {
  int pad[2], stride[2], dilation[2];
  cudnnConvolutionMode_t mode;
  cudnnDataType_t compute;
  cudnnMathType_t math;
};
struct cudnnPoolingStruct {
  cudnnPoolingMode_t mode;
  cudnnNanPropagation_t nan;
  int window[2], pad[2], stride[2];
};

namespace {

thread_local char last_error[512];

cudnnStatus_t bad(cudnnStatus_t st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  fprintf(stderr, "cuda emulator: cuDNN: %s\n", last_error);
  return st;
}

size_t type_size(cudnnDataType_t t) {
  switch (t) {
  case CUDNN_DATA_DOUBLE: return 8;
  case CUDNN_DATA_FLOAT: return 4;
  case CUDNN_DATA_HALF:
  case CUDNN_DATA_BFLOAT16: return 2;
  default: return 0;
  }
}

double load(const void *p, int64_t i, cudnnDataType_t t) {
  switch (t) {
  case CUDNN_DATA_DOUBLE: return ((const double *)p)[i];
  case CUDNN_DATA_FLOAT: return ((const float *)p)[i];
  case CUDNN_DATA_HALF: return __half2float(((const __half *)p)[i]);
  default: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
  }
}

void store(void *p, int64_t i, cudnnDataType_t t, double v) {
  switch (t) {
  case CUDNN_DATA_DOUBLE: ((double *)p)[i] = v; break;
  case CUDNN_DATA_FLOAT: ((float *)p)[i] = (float)v; break;
  case CUDNN_DATA_HALF: ((__half *)p)[i] = __float2half((float)v); break;
  default: ((__nv_bfloat16 *)p)[i] = __float2bfloat16((float)v); break;
  }
}

/* alpha/beta: double for double data, float otherwise */
double scalar(const void *p, cudnnDataType_t t) {
  return t == CUDNN_DATA_DOUBLE ? *(const double *)p : *(const float *)p;
}

/* out = alpha * v + beta * out (out not read when beta is 0, as cuDNN) */
void blend(void *p, int64_t i, cudnnDataType_t t, double alpha, double beta, double v) {
  double r = alpha * v;
  if (beta != 0) r += beta * load(p, i, t);
  store(p, i, t, r);
}

/* a 4-D tensor descriptor's view */
struct view {
  cudnnDataType_t dt;
  int64_t n, c, h, w, sn, sc, sh, sw;
  int64_t at(int64_t a, int64_t b, int64_t y, int64_t x) const {
    return a * sn + b * sc + y * sh + x * sw;
  }
  int64_t elements() const { /* element slots from element 0 to the last, inclusive */
    return n && c && h && w ? at(n - 1, c - 1, h - 1, w - 1) + 1 : 0;
  }
  size_t span() const { return (size_t)elements() * type_size(dt); } /* in bytes */
};

bool view4(const cudnnTensorStruct *d, view *v, const char *call, const char *which) {
  if (!d || d->nd != 4) {
    bad(CUDNN_STATUS_BAD_PARAM, "%s: %s is not a 4-D tensor descriptor", call, which);
    return false;
  }
  *v = view{d->dt,         d->dims[0],    d->dims[1],    d->dims[2],   d->dims[3],
            d->strides[0], d->strides[1], d->strides[2], d->strides[3]};
  return true;
}

bool on_device(const char *call, const char *which, const void *p, size_t n) {
  if (mf_emu::check_device(call, which, p, n)) return true;
  bad(CUDNN_STATUS_BAD_PARAM, "%s: %s (%zu bytes) is not device memory", call, which, n);
  return false;
}

/* whether v is packed channels-last (nhwc) or NCHW; size-1 dims fit either */
bool packed(const view &v, bool nhwc) {
  const int64_t size[4] = {v.n, v.c, v.h, v.w}, stride[4] = {v.sn, v.sc, v.sh, v.sw};
  static const int order[2][4] = {{3, 2, 1, 0}, {1, 3, 2, 0}}; /* innermost first */
  int64_t expect = 1;
  for (int k = 0; k < 4; k++) {
    int d = order[nhwc][k];
    if (size[d] == 1) continue;
    if (stride[d] != expect) return false;
    expect *= size[d];
  }
  return true;
}

/* a filter's view as (K, C, R, S) with its format's strides */
view filter_view(const cudnnFilterStruct *f) {
  view v{f->dt, f->k, f->c, f->h, f->w, 0, 0, 0, 0};
  if (f->fmt == CUDNN_TENSOR_NHWC) { /* KRSC */
    v.sc = 1, v.sw = f->c, v.sh = (int64_t)f->w * f->c, v.sn = (int64_t)f->h * f->w * f->c;
  } else { /* KCRS */
    v.sw = 1, v.sh = f->w, v.sc = (int64_t)f->h * f->w, v.sn = (int64_t)f->c * f->h * f->w;
  }
  return v;
}

const char *type_name(cudnnDataType_t t) {
  switch (t) {
  case CUDNN_DATA_DOUBLE: return "DOUBLE";
  case CUDNN_DATA_FLOAT: return "FLOAT";
  case CUDNN_DATA_HALF: return "HALF";
  case CUDNN_DATA_BFLOAT16: return "BFLOAT16";
  default: return "another type";
  }
}

/* Whether x/w/y data of type `data` with the convolution descriptor's compute type `compute` is
 * one of the configurations cuDNN's convolution functions support (the "Supported
 * configurations" tables of cudnnConvolutionForward, BackwardData and BackwardFilter, cuDNN 9 API
 * reference, cudnn_cnn library): DOUBLE_CONFIG (DOUBLE, DOUBLE), FLOAT_CONFIG (FLOAT, FLOAT),
 * TRUE_HALF_CONFIG (HALF, HALF), PSEUDO_HALF_CONFIG (HALF, FLOAT) and PSEUDO_BFLOAT16_CONFIG
 * (BFLOAT16, FLOAT). FLOAT data with a HALF compute type, BFLOAT16 with a BFLOAT16 or HALF one,
 * and any mix with DOUBLE are not among them. (TRUE_HALF_CONFIG is computed here like the pseudo
 * one, in double rounded once; moonflow does not use it.) */
bool conv_config(cudnnDataType_t data, cudnnDataType_t compute) {
  switch (data) {
  case CUDNN_DATA_DOUBLE: return compute == CUDNN_DATA_DOUBLE;
  case CUDNN_DATA_FLOAT: return compute == CUDNN_DATA_FLOAT;
  case CUDNN_DATA_HALF: return compute == CUDNN_DATA_HALF || compute == CUDNN_DATA_FLOAT;
  case CUDNN_DATA_BFLOAT16: return compute == CUDNN_DATA_FLOAT;
  default: return false;
  }
}

/* the checks every convolution call shares; x, w, y: views of the three tensors */
cudnnStatus_t conv_check(const char *call, const cudnnTensorStruct *xd, const cudnnFilterStruct *wd,
                         const cudnnConvolutionStruct *cd, const cudnnTensorStruct *yd, view *x,
                         view *w, view *y) {
  if (!xd || !wd || !cd || !yd) return bad(CUDNN_STATUS_BAD_PARAM, "%s: a NULL descriptor", call);
  if (!view4(xd, x, call, "x") || !view4(yd, y, call, "y")) return CUDNN_STATUS_BAD_PARAM;
  *w = filter_view(wd);
  if (xd->dt != yd->dt || xd->dt != wd->dt)
    return bad(CUDNN_STATUS_BAD_PARAM, "%s: x, w and y have different data types", call);
  bool dbl = xd->dt == CUDNN_DATA_DOUBLE;
  if (!conv_config(xd->dt, cd->compute))
    return bad(CUDNN_STATUS_NOT_SUPPORTED,
               "%s: no supported configuration has %s data with a %s compute type", call,
               type_name(xd->dt), type_name(cd->compute));
  if (dbl && wd->fmt == CUDNN_TENSOR_NHWC)
    return bad(CUDNN_STATUS_NOT_SUPPORTED, "%s: NHWC filters are not supported for double", call);
  /* Layout mixes: PyTorch gives cuDNN x, w and y in one layout, and never a double NHWC
   * convolution, so nothing shows that cuDNN takes the others; refused (with a cuDNN 9 sub-code of
   * NOT_SUPPORTED, as real cuDNN reports such refusals) so that moonflow cannot depend on them. */
  bool nhwc_only =
      (packed(*x, true) && !packed(*x, false)) || (packed(*y, true) && !packed(*y, false));
  if (wd->fmt == CUDNN_TENSOR_NHWC && !(packed(*x, true) && packed(*y, true)))
    return bad(CUDNN_STATUS_NOT_SUPPORTED_LAYOUT, "%s: an NHWC filter with x or y not NHWC", call);
  if (wd->fmt != CUDNN_TENSOR_NHWC && nhwc_only)
    return bad(CUDNN_STATUS_NOT_SUPPORTED_LAYOUT, "%s: %s x or y with an NCHW filter", call,
               dbl ? "double NHWC" : "NHWC");
  if (cd->mode != CUDNN_CROSS_CORRELATION)
    return bad(CUDNN_STATUS_NOT_SUPPORTED, "%s: only cross-correlation is emulated", call);
  if (x->c != w->c)
    return bad(CUDNN_STATUS_BAD_PARAM, "%s: x has %lld channels, the filter %d", call,
               (long long)x->c, wd->c);
  int64_t oh = (x->h + 2 * cd->pad[0] - ((w->h - 1) * cd->dilation[0] + 1)) / cd->stride[0] + 1;
  int64_t ow = (x->w + 2 * cd->pad[1] - ((w->w - 1) * cd->dilation[1] + 1)) / cd->stride[1] + 1;
  if (y->n != x->n || y->c != w->n || y->h != oh || y->w != ow)
    return bad(CUDNN_STATUS_BAD_PARAM,
               "%s: y is %lldx%lldx%lldx%lld, the convolution of x %lldx%lldx%lldx%lld by the "
               "filter %dx%dx%dx%d (padding %d,%d, stride %d,%d) gives %lldx%dx%lldx%lld",
               call, (long long)y->n, (long long)y->c, (long long)y->h, (long long)y->w,
               (long long)x->n, (long long)x->c, (long long)x->h, (long long)x->w, wd->k, wd->c,
               wd->h, wd->w, cd->pad[0], cd->pad[1], cd->stride[0], cd->stride[1], (long long)x->n,
               wd->k, (long long)oh, (long long)ow);
  return CUDNN_STATUS_SUCCESS;
}

/* float32 inputs go through TF32 unless FMA math was asked for */
bool rounds_tf32(const cudnnConvolutionStruct *cd, cudnnDataType_t dt) {
  return dt == CUDNN_DATA_FLOAT && cd->math != CUDNN_FMA_MATH;
}
double in(const void *p, int64_t i, cudnnDataType_t t, bool tf) {
  double v = load(p, i, t);
  return tf ? mf_emu::tf32((float)v) : v;
}

/* the workspace algorithm 0 asks for: one element per input value (an im2col stand-in) */
size_t workspace_for(int algo, const view &x) {
  return algo == 0 ? (size_t)(x.n * x.c * x.h * x.w) * type_size(x.dt) : 0;
}

cudnnStatus_t check_workspace(const char *call, int algo, const view &x, void *ws, size_t bytes) {
  if (algo < 0 || algo > 1) return bad(CUDNN_STATUS_BAD_PARAM, "%s: algorithm %d", call, algo);
  size_t need = workspace_for(algo, x);
  if (bytes < need)
    return bad(CUDNN_STATUS_BAD_PARAM, "%s: algorithm %d needs %zu bytes of workspace, got %zu",
               call, algo, need, bytes);
  if (need && !on_device(call, "the workspace", ws, need)) return CUDNN_STATUS_BAD_PARAM;
  if (need && !mf_emu::no_work()) memset(ws, 0xab, need); /* as if the algorithm used it */
  return CUDNN_STATUS_SUCCESS;
}

/* the input cell a filter tap reads for output (oy, ox), or false when it is padding */
bool tap(const cudnnConvolutionStruct *cd, const view &x, int64_t oy, int64_t ox, int64_t r,
         int64_t s, int64_t *iy, int64_t *ix) {
  *iy = oy * cd->stride[0] - cd->pad[0] + r * cd->dilation[0];
  *ix = ox * cd->stride[1] - cd->pad[1] + s * cd->dilation[1];
  return *iy >= 0 && *iy < x.h && *ix >= 0 && *ix < x.w;
}

/* two algorithms, ranked: 0 (wants a workspace, so the caller's workspace handling runs), 1 */
/* f(y offset, x offset, w offset) for every tap of the convolution that reads an input cell (not
 * padding): the one loop nest the three directions share */
template <class F>
void for_each_tap(const cudnnConvolutionStruct *cd, const view &x, const view &w, const view &y,
                  F f) {
  for (int64_t n = 0; n < y.n; n++)
    for (int64_t k = 0; k < y.c; k++)
      for (int64_t oy = 0; oy < y.h; oy++)
        for (int64_t ox = 0; ox < y.w; ox++)
          for (int64_t c = 0; c < x.c; c++)
            for (int64_t r = 0; r < w.h; r++)
              for (int64_t s = 0; s < w.w; s++) {
                int64_t iy, ix;
                if (tap(cd, x, oy, ox, r, s, &iy, &ix))
                  f(y.at(n, k, oy, ox), x.at(n, c, iy, ix), w.at(k, c, r, s));
              }
}

/* every element of v: alpha * sum[its offset] + beta * itself */
void blend_all(void *p, const view &v, double alpha, double beta, const std::vector<double> &sum) {
  for (int64_t n = 0; n < v.n; n++)
    for (int64_t c = 0; c < v.c; c++)
      for (int64_t i = 0; i < v.h; i++)
        for (int64_t j = 0; j < v.w; j++) {
          int64_t o = v.at(n, c, i, j);
          blend(p, o, v.dt, alpha, beta, sum[o]);
        }
}

template <class P>
void fill_perf(const cudnnConvolutionStruct *cd, const view &x, int requested, int *returned,
               P *perf) {
  int n = requested < 2 ? requested : 2;
  for (int i = 0; i < n; i++) {
    memset(&perf[i], 0, sizeof perf[i]);
    perf[i].algo = (decltype(perf[i].algo))i;
    perf[i].status = CUDNN_STATUS_SUCCESS;
    perf[i].time = 1.0f + (float)i;
    perf[i].memory = workspace_for(i, x);
    perf[i].determinism = CUDNN_DETERMINISTIC;
    perf[i].mathType = cd->math;
  }
  *returned = n;
}

} // namespace

/* ---- handles, versions, errors --------------------------------------------------------------- */

EXPORT cudnnStatus_t cudnnCreate(cudnnHandle_t *h) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) return CUDNN_STATUS_NOT_INITIALIZED;
  int device = 0;
  cudaGetDevice(&device);
  *h = new cudnnContext{nullptr, device};
  return CUDNN_STATUS_SUCCESS;
}
EXPORT cudnnStatus_t cudnnDestroy(cudnnHandle_t h) {
  delete h;
  return CUDNN_STATUS_SUCCESS;
}
EXPORT cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) {
  if (!h) return CUDNN_STATUS_BAD_PARAM;
  if (!mf_emu::check_stream(s)) return bad(CUDNN_STATUS_BAD_PARAM, "cudnnSetStream: bad stream");
  h->stream = s;
  return CUDNN_STATUS_SUCCESS;
}
EXPORT size_t cudnnGetVersion(void) { return CUDNN_VERSION; }
EXPORT const char *cudnnGetErrorString(cudnnStatus_t st) {
  switch (st) {
  case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
  case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
  case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
  case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
  case CUDNN_STATUS_NOT_SUPPORTED_LAYOUT: return "CUDNN_STATUS_NOT_SUPPORTED_LAYOUT";
  case CUDNN_STATUS_NOT_SUPPORTED_SHAPE: return "CUDNN_STATUS_NOT_SUPPORTED_SHAPE";
  case CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER:
    return "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER";
  case CUDNN_STATUS_ALLOC_FAILED: return "CUDNN_STATUS_ALLOC_FAILED";
  default: return "CUDNN_STATUS_INTERNAL_ERROR";
  }
}
EXPORT void cudnnGetLastErrorString(char *message, size_t max_size) {
  if (!message || !max_size) return;
  snprintf(message, max_size, "%s", last_error);
  last_error[0] = 0;
}

/* ---- descriptors ----------------------------------------------------------------------------- */

EXPORT cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d) {
  *d = new cudnnTensorStruct{};
  return CUDNN_STATUS_SUCCESS;
}
EXPORT cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) {
  delete d;
  return CUDNN_STATUS_SUCCESS;
}
EXPORT cudnnStatus_t cudnnSetTensorNdDescriptor(cudnnTensorDescriptor_t d, cudnnDataType_t dt,
                                                int nd, const int *dims, const int *strides) {
  if (!d || nd < 3 || nd > 8 || !type_size(dt))
    return bad(CUDNN_STATUS_BAD_PARAM, "cudnnSetTensorNdDescriptor: %d dims, type %d", nd, (int)dt);
  for (int i = 0; i < nd; i++)
    if (dims[i] <= 0 || strides[i] <= 0)
      return bad(CUDNN_STATUS_BAD_PARAM,
                 "cudnnSetTensorNdDescriptor: dim %d is %d with stride %d (both must be > 0)", i,
                 dims[i], strides[i]);
  d->dt = dt;
  d->nd = nd;
  for (int i = 0; i < nd; i++) d->dims[i] = dims[i], d->strides[i] = strides[i];
  return CUDNN_STATUS_SUCCESS;
}

EXPORT cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d) {
  *d = new cudnnFilterStruct{};
  return CUDNN_STATUS_SUCCESS;
}
EXPORT cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) {
  delete d;
  return CUDNN_STATUS_SUCCESS;
}
EXPORT cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t dt,
                                                cudnnTensorFormat_t fmt, int k, int c, int h,
                                                int w) {
  if (!d || !type_size(dt) || k <= 0 || c <= 0 || h <= 0 || w <= 0 ||
      (fmt != CUDNN_TENSOR_NCHW && fmt != CUDNN_TENSOR_NHWC))
    return bad(CUDNN_STATUS_BAD_PARAM, "cudnnSetFilter4dDescriptor: %dx%dx%dx%d, format %d", k, c,
               h, w, (int)fmt);
  *d = cudnnFilterStruct{dt, fmt, k, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}

EXPORT cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d) {
  *d = new cudnnConvolutionStruct{};
  (*d)->math = CUDNN_DEFAULT_MATH;
  return CUDNN_STATUS_SUCCESS;
}
EXPORT cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
  delete d;
  return CUDNN_STATUS_SUCCESS;
}
EXPORT cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h,
                                                     int pad_w, int u, int v, int dil_h, int dil_w,
                                                     cudnnConvolutionMode_t mode,
                                                     cudnnDataType_t compute) {
  if (!d || pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dil_h <= 0 || dil_w <= 0)
    return bad(CUDNN_STATUS_BAD_PARAM,
               "cudnnSetConvolution2dDescriptor: padding %d,%d, stride %d,%d, dilation %d,%d",
               pad_h, pad_w, u, v, dil_h, dil_w);
  d->pad[0] = pad_h, d->pad[1] = pad_w, d->stride[0] = u, d->stride[1] = v;
  d->dilation[0] = dil_h, d->dilation[1] = dil_w;
  d->mode = mode;
  d->compute = compute;
  return CUDNN_STATUS_SUCCESS;
}
EXPORT cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d,
                                                 cudnnMathType_t math) {
  if (!d) return CUDNN_STATUS_BAD_PARAM;
  d->math = math;
  return CUDNN_STATUS_SUCCESS;
}

EXPORT cudnnStatus_t cudnnCreatePoolingDescriptor(cudnnPoolingDescriptor_t *d) {
  *d = new cudnnPoolingStruct{};
  return CUDNN_STATUS_SUCCESS;
}
EXPORT cudnnStatus_t cudnnDestroyPoolingDescriptor(cudnnPoolingDescriptor_t d) {
  delete d;
  return CUDNN_STATUS_SUCCESS;
}
EXPORT cudnnStatus_t cudnnSetPooling2dDescriptor(cudnnPoolingDescriptor_t d,
                                                 cudnnPoolingMode_t mode, cudnnNanPropagation_t nan,
                                                 int wh, int ww, int ph, int pw, int sh, int sw) {
  if (!d || wh <= 0 || ww <= 0 || ph < 0 || pw < 0 || sh <= 0 || sw <= 0)
    return bad(CUDNN_STATUS_BAD_PARAM,
               "cudnnSetPooling2dDescriptor: window %dx%d, padding %d,%d, stride %d,%d", wh, ww, ph,
               pw, sh, sw);
  *d = cudnnPoolingStruct{mode, nan, {wh, ww}, {ph, pw}, {sh, sw}};
  return CUDNN_STATUS_SUCCESS;
}

/* ---- convolution: algorithms and workspaces ------------------------------------------------- */

#define CONV_QUERY(fn, Perf, XD, WD, CD, YD)                                                       \
  view x, w, y;                                                                                    \
  cudnnStatus_t st = conv_check(fn, XD, WD, CD, YD, &x, &w, &y);                                   \
  if (st) return st;                                                                               \
  fill_perf<Perf>(CD, x, requested, returned, perf);                                               \
  return CUDNN_STATUS_SUCCESS;

EXPORT cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(
    cudnnHandle_t, const cudnnTensorDescriptor_t xd, const cudnnFilterDescriptor_t wd,
    const cudnnConvolutionDescriptor_t cd, const cudnnTensorDescriptor_t yd, const int requested,
    int *returned, cudnnConvolutionFwdAlgoPerf_t *perf){
    CONV_QUERY("cudnnGetConvolutionForwardAlgorithm_v7", cudnnConvolutionFwdAlgoPerf_t, xd, wd, cd,
               yd)} EXPORT cudnnStatus_t
    cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t, const cudnnFilterDescriptor_t wd,
                                                const cudnnTensorDescriptor_t yd,
                                                const cudnnConvolutionDescriptor_t cd,
                                                const cudnnTensorDescriptor_t xd,
                                                const int requested, int *returned,
                                                cudnnConvolutionBwdDataAlgoPerf_t *perf){
        CONV_QUERY("cudnnGetConvolutionBackwardDataAlgorithm_v7", cudnnConvolutionBwdDataAlgoPerf_t,
                   xd, wd, cd, yd)} EXPORT cudnnStatus_t
    cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t, const cudnnTensorDescriptor_t xd,
                                                  const cudnnTensorDescriptor_t yd,
                                                  const cudnnConvolutionDescriptor_t cd,
                                                  const cudnnFilterDescriptor_t wd,
                                                  const int requested, int *returned,
                                                  cudnnConvolutionBwdFilterAlgoPerf_t *perf){
        CONV_QUERY("cudnnGetConvolutionBackwardFilterAlgorithm_v7",
                   cudnnConvolutionBwdFilterAlgoPerf_t, xd, wd, cd, yd)} EXPORT cudnnStatus_t
    cudnnFindConvolutionForwardAlgorithmEx(cudnnHandle_t, const cudnnTensorDescriptor_t xd,
                                           const void *, const cudnnFilterDescriptor_t wd,
                                           const void *, const cudnnConvolutionDescriptor_t cd,
                                           const cudnnTensorDescriptor_t yd, void *,
                                           const int requested, int *returned,
                                           cudnnConvolutionFwdAlgoPerf_t *perf, void *, size_t){
        CONV_QUERY("cudnnFindConvolutionForwardAlgorithmEx", cudnnConvolutionFwdAlgoPerf_t, xd, wd,
                   cd, yd)} EXPORT cudnnStatus_t
    cudnnFindConvolutionBackwardDataAlgorithmEx(
        cudnnHandle_t, const cudnnFilterDescriptor_t wd, const void *,
        const cudnnTensorDescriptor_t yd, const void *, const cudnnConvolutionDescriptor_t cd,
        const cudnnTensorDescriptor_t xd, void *, const int requested, int *returned,
        cudnnConvolutionBwdDataAlgoPerf_t *perf, void *,
        size_t){CONV_QUERY("cudnnFindConvolutionBackwardDataAlgorithmEx",
                           cudnnConvolutionBwdDataAlgoPerf_t, xd, wd, cd, yd)} EXPORT cudnnStatus_t
    cudnnFindConvolutionBackwardFilterAlgorithmEx(
        cudnnHandle_t, const cudnnTensorDescriptor_t xd, const void *,
        const cudnnTensorDescriptor_t yd, const void *, const cudnnConvolutionDescriptor_t cd,
        const cudnnFilterDescriptor_t wd, void *, const int requested, int *returned,
        cudnnConvolutionBwdFilterAlgoPerf_t *perf, void *,
        size_t){CONV_QUERY("cudnnFindConvolutionBackwardFilterAlgorithmEx",
                           cudnnConvolutionBwdFilterAlgoPerf_t, xd, wd, cd, yd)}

#define CONV_WORKSPACE(fn, XD, WD, CD, YD)                                                         \
  view x, w, y;                                                                                    \
  cudnnStatus_t st = conv_check(fn, XD, WD, CD, YD, &x, &w, &y);                                   \
  if (st) return st;                                                                               \
  if ((int)algo < 0 || (int)algo > 1)                                                              \
    return bad(CUDNN_STATUS_NOT_SUPPORTED, "%s: algorithm %d", fn, (int)algo);                     \
  *bytes = workspace_for((int)algo, x);                                                            \
  return CUDNN_STATUS_SUCCESS;

EXPORT cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(
    cudnnHandle_t, const cudnnTensorDescriptor_t xd, const cudnnFilterDescriptor_t wd,
    const cudnnConvolutionDescriptor_t cd, const cudnnTensorDescriptor_t yd,
    cudnnConvolutionFwdAlgo_t algo, size_t *bytes){
    CONV_WORKSPACE("cudnnGetConvolutionForwardWorkspaceSize", xd, wd, cd, yd)} EXPORT cudnnStatus_t
    cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t, const cudnnFilterDescriptor_t wd,
                                                 const cudnnTensorDescriptor_t yd,
                                                 const cudnnConvolutionDescriptor_t cd,
                                                 const cudnnTensorDescriptor_t xd,
                                                 cudnnConvolutionBwdDataAlgo_t algo, size_t *bytes){
        CONV_WORKSPACE("cudnnGetConvolutionBackwardDataWorkspaceSize", xd, wd, cd,
                       yd)} EXPORT cudnnStatus_t
    cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t, const cudnnTensorDescriptor_t xd,
                                                   const cudnnTensorDescriptor_t yd,
                                                   const cudnnConvolutionDescriptor_t cd,
                                                   const cudnnFilterDescriptor_t wd,
                                                   cudnnConvolutionBwdFilterAlgo_t algo,
                                                   size_t *bytes){
        CONV_WORKSPACE("cudnnGetConvolutionBackwardFilterWorkspaceSize", xd, wd, cd, yd)}

/* ---- convolution: the three directions ------------------------------------------------------ */

/* the checks of a convolution call with its data: descriptors, workspace, pointers */
#define CONV_CALL(fn, XD, WD, CD, YD)                                                              \
  if (!h) return CUDNN_STATUS_BAD_PARAM;                                                           \
  view x, w, y;                                                                                    \
  cudnnStatus_t st = conv_check(fn, XD, WD, CD, YD, &x, &w, &y);                                   \
  if (st) return st;                                                                               \
  st = check_workspace(fn, (int)algo, x, ws, ws_bytes);                                            \
  if (st) return st;                                                                               \
  if (algo == 0 && (((uintptr_t)xp | (uintptr_t)wp | (uintptr_t)yp) & 15))                         \
    return bad(CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER,                                          \
               "%s: algorithm 0 wants 16-byte aligned x, w and y", fn);                            \
  if (!on_device(fn, "x", xp, x.span()) || !on_device(fn, "w", wp, w.span()) ||                    \
      !on_device(fn, "y", yp, y.span()))                                                           \
    return CUDNN_STATUS_BAD_PARAM;                                                                 \
  double a = scalar(alpha, x.dt), b = scalar(beta, x.dt);                                          \
  bool tf = rounds_tf32(CD, x.dt);                                                                 \
  if (!mf_emu::handle_usable(h->device, h->stream, fn)) return CUDNN_STATUS_EXECUTION_FAILED;      \
  if (!mf_emu::library_work(__func__)) return CUDNN_STATUS_SUCCESS;

EXPORT cudnnStatus_t
    cudnnConvolutionForward(cudnnHandle_t h, const void *alpha, const cudnnTensorDescriptor_t xd,
                            const void *xp, const cudnnFilterDescriptor_t wd, const void *wp,
                            const cudnnConvolutionDescriptor_t cd, cudnnConvolutionFwdAlgo_t algo,
                            void *ws, size_t ws_bytes, const void *beta,
                            const cudnnTensorDescriptor_t yd, void *yp) {
  CONV_CALL("cudnnConvolutionForward", xd, wd, cd, yd)
  std::vector<double> sum(y.elements());
  for_each_tap(cd, x, w, y, [&](int64_t yo, int64_t xo, int64_t wo) {
    sum[yo] += in(xp, xo, x.dt, tf) * in(wp, wo, w.dt, tf);
  });
  blend_all(yp, y, a, b, sum);
  return CUDNN_STATUS_SUCCESS;
}

EXPORT cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha,
                                                  const cudnnFilterDescriptor_t wd, const void *wp,
                                                  const cudnnTensorDescriptor_t yd, const void *yp,
                                                  const cudnnConvolutionDescriptor_t cd,
                                                  cudnnConvolutionBwdDataAlgo_t algo, void *ws,
                                                  size_t ws_bytes, const void *beta,
                                                  const cudnnTensorDescriptor_t xd, void *xp) {
  CONV_CALL("cudnnConvolutionBackwardData", xd, wd, cd, yd)
  std::vector<double> sum(x.elements());
  for_each_tap(cd, x, w, y, [&](int64_t yo, int64_t xo, int64_t wo) {
    sum[xo] += in(yp, yo, y.dt, tf) * in(wp, wo, w.dt, tf);
  });
  blend_all(xp, x, a, b, sum);
  return CUDNN_STATUS_SUCCESS;
}

EXPORT cudnnStatus_t cudnnConvolutionBackwardFilter(
    cudnnHandle_t h, const void *alpha, const cudnnTensorDescriptor_t xd, const void *xp,
    const cudnnTensorDescriptor_t yd, const void *yp, const cudnnConvolutionDescriptor_t cd,
    cudnnConvolutionBwdFilterAlgo_t algo, void *ws, size_t ws_bytes, const void *beta,
    const cudnnFilterDescriptor_t wd, void *wp) {
  CONV_CALL("cudnnConvolutionBackwardFilter", xd, wd, cd, yd)
  std::vector<double> sum(w.elements());
  for_each_tap(cd, x, w, y, [&](int64_t yo, int64_t xo, int64_t wo) {
    sum[wo] += in(yp, yo, y.dt, tf) * in(xp, xo, x.dt, tf);
  });
  blend_all(wp, w, a, b, sum);
  return CUDNN_STATUS_SUCCESS;
}

/* C = alpha A + beta C, A broadcast along its size-1 dims */
EXPORT cudnnStatus_t cudnnAddTensor(cudnnHandle_t h, const void *alpha,
                                    const cudnnTensorDescriptor_t ad, const void *ap,
                                    const void *beta, const cudnnTensorDescriptor_t cd, void *cp) {
  const char *fn = "cudnnAddTensor";
  view A, C;
  if (!h || !view4(ad, &A, fn, "A") || !view4(cd, &C, fn, "C")) return CUDNN_STATUS_BAD_PARAM;
  if (A.dt != C.dt) return bad(CUDNN_STATUS_BAD_PARAM, "%s: A and C have different types", fn);
  int64_t ad4[4] = {A.n, A.c, A.h, A.w}, cd4[4] = {C.n, C.c, C.h, C.w};
  for (int d = 0; d < 4; d++)
    if (ad4[d] != 1 && ad4[d] != cd4[d])
      return bad(CUDNN_STATUS_BAD_PARAM, "%s: A's dim %d is %lld, C's %lld", fn, d,
                 (long long)ad4[d], (long long)cd4[d]);
  if (!on_device(fn, "A", ap, A.span()) || !on_device(fn, "C", cp, C.span()))
    return CUDNN_STATUS_BAD_PARAM;
  if (!mf_emu::handle_usable(h->device, h->stream, __func__)) return CUDNN_STATUS_EXECUTION_FAILED;
  if (!mf_emu::library_work(__func__)) return CUDNN_STATUS_SUCCESS;
  double a = scalar(alpha, A.dt), b = scalar(beta, A.dt);
  for (int64_t n = 0; n < C.n; n++)
    for (int64_t c = 0; c < C.c; c++)
      for (int64_t y = 0; y < C.h; y++)
        for (int64_t x = 0; x < C.w; x++) {
          double v = load(
              ap, A.at(A.n > 1 ? n : 0, A.c > 1 ? c : 0, A.h > 1 ? y : 0, A.w > 1 ? x : 0), A.dt);
          blend(cp, C.at(n, c, y, x), C.dt, a, b, v);
        }
  return CUDNN_STATUS_SUCCESS;
}

/* ---- pooling --------------------------------------------------------------------------------- */

EXPORT cudnnStatus_t cudnnPoolingForward(cudnnHandle_t h, const cudnnPoolingDescriptor_t pd,
                                         const void *alpha, const cudnnTensorDescriptor_t xd,
                                         const void *xp, const void *beta,
                                         const cudnnTensorDescriptor_t yd, void *yp) {
  const char *fn = "cudnnPoolingForward";
  view x, y;
  if (!h || !pd || !view4(xd, &x, fn, "x") || !view4(yd, &y, fn, "y"))
    return CUDNN_STATUS_BAD_PARAM;
  if (x.dt != y.dt) return bad(CUDNN_STATUS_BAD_PARAM, "%s: x and y have different types", fn);
  /* nothing shows that cuDNN pools double NHWC tensors (PyTorch never asks it to pool at all):
   * refused with a sub-code, so that pool.cu's fallback to its own kernels is what runs here */
  if (x.dt == CUDNN_DATA_DOUBLE && packed(x, true) && !packed(x, false))
    return bad(CUDNN_STATUS_NOT_SUPPORTED_LAYOUT, "%s: double NHWC pooling is not relied on", fn);
  int64_t oh = (x.h + 2 * pd->pad[0] - pd->window[0]) / pd->stride[0] + 1;
  int64_t ow = (x.w + 2 * pd->pad[1] - pd->window[1]) / pd->stride[1] + 1;
  if (y.n != x.n || y.c != x.c || y.h != oh || y.w != ow)
    return bad(CUDNN_STATUS_BAD_PARAM,
               "%s: y is %lldx%lldx%lldx%lld, the pooling gives %lldx%lldx%lldx%lld", fn,
               (long long)y.n, (long long)y.c, (long long)y.h, (long long)y.w, (long long)x.n,
               (long long)x.c, (long long)oh, (long long)ow);
  if (!on_device(fn, "x", xp, x.span()) || !on_device(fn, "y", yp, y.span()))
    return CUDNN_STATUS_BAD_PARAM;
  if (!mf_emu::handle_usable(h->device, h->stream, __func__)) return CUDNN_STATUS_EXECUTION_FAILED;
  if (!mf_emu::library_work(__func__)) return CUDNN_STATUS_SUCCESS;
  double a = scalar(alpha, x.dt), b = scalar(beta, x.dt);
  bool is_max = pd->mode == CUDNN_POOLING_MAX || pd->mode == CUDNN_POOLING_MAX_DETERMINISTIC;
  for (int64_t n = 0; n < y.n; n++)
    for (int64_t c = 0; c < y.c; c++)
      for (int64_t oy = 0; oy < y.h; oy++)
        for (int64_t ox = 0; ox < y.w; ox++) {
          double m = -INFINITY, sum = 0;
          int64_t count = 0;
          bool nan = false;
          for (int r = 0; r < pd->window[0]; r++)
            for (int s = 0; s < pd->window[1]; s++) {
              int64_t iy = oy * pd->stride[0] - pd->pad[0] + r;
              int64_t ix = ox * pd->stride[1] - pd->pad[1] + s;
              if (iy < 0 || iy >= x.h || ix < 0 || ix >= x.w) continue; /* padding */
              double v = load(xp, x.at(n, c, iy, ix), x.dt);
              if (v != v) nan = true;
              if (v > m) m = v;
              sum += v;
              count++;
            }
          double v;
          if (is_max)
            v = nan && pd->nan == CUDNN_PROPAGATE_NAN ? NAN : m;
          else if (pd->mode == CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING)
            v = sum / (pd->window[0] * pd->window[1]);
          else
            v = count ? sum / (double)count : 0;
          blend(yp, y.at(n, c, oy, ox), y.dt, a, b, v);
        }
  return CUDNN_STATUS_SUCCESS;
}

/* ---- batch normalisation (spatial: per channel over N, H, W) --------------------------------- */

namespace {

/* the parameter tensors' type for data of type t */
cudnnDataType_t bn_type(cudnnDataType_t t) {
  return t == CUDNN_DATA_DOUBLE ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
}

/* The batch sizes cuDNN's batch norm kernels take (PyTorch hands cuDNN no more: 65535 in
 * inference, 880801 in training; aten/src/ATen/native/Normalization.cpp), and fewer than 2^31
 * elements; more is refused with a sub-code of NOT_SUPPORTED. */
const int64_t BN_INFER_MAX_N = 65535, BN_TRAIN_MAX_N = 880801;

cudnnStatus_t bn_check(const char *fn, cudnnBatchNormMode_t mode, const cudnnTensorStruct *xd,
                       const cudnnTensorStruct *yd, const cudnnTensorStruct *pd, view *x, view *y,
                       int64_t max_n) {
  if (mode != CUDNN_BATCHNORM_SPATIAL)
    return bad(CUDNN_STATUS_NOT_SUPPORTED, "%s: only the spatial mode is emulated", fn);
  view p;
  if (!view4(xd, x, fn, "x") || !view4(yd, y, fn, "y") || !view4(pd, &p, fn, "the parameters"))
    return CUDNN_STATUS_BAD_PARAM;
  if (x->n != y->n || x->c != y->c || x->h != y->h || x->w != y->w || x->dt != y->dt)
    return bad(CUDNN_STATUS_BAD_PARAM, "%s: x and y differ in shape or type", fn);
  if (x->dt == CUDNN_DATA_BFLOAT16)
    return bad(CUDNN_STATUS_NOT_SUPPORTED, "%s: BFLOAT16 data is not relied on (see the top)", fn);
  if (x->n > max_n || x->n * x->c * x->h * x->w > INT32_MAX)
    return bad(CUDNN_STATUS_NOT_SUPPORTED_SHAPE, "%s: a batch of %lld (at most %lld here)", fn,
               (long long)x->n, (long long)max_n);
  if (p.n != 1 || p.c != x->c || p.h != 1 || p.w != 1 || p.dt != bn_type(x->dt))
    return bad(CUDNN_STATUS_BAD_PARAM,
               "%s: the parameter descriptor is %lldx%lldx%lldx%lld of type %d, not 1x%lldx1x1 "
               "of type %d",
               fn, (long long)p.n, (long long)p.c, (long long)p.h, (long long)p.w, (int)p.dt,
               (long long)x->c, (int)bn_type(x->dt));
  return CUDNN_STATUS_SUCCESS;
}

/* the parameter vectors: C packed values of the parameter type */
bool bn_params(const char *fn, const view &x, std::initializer_list<const void *> ps) {
  size_t bytes = (size_t)x.c * type_size(bn_type(x.dt));
  for (const void *p : ps)
    if (p && !on_device(fn, "a parameter vector", p, bytes)) return false;
  return true;
}

/* per channel: mean and biased variance over (n, h, w) */
void moments(const void *xp, const view &x, int64_t c, double *mean, double *var) {
  double s = 0, ss = 0;
  int64_t m = x.n * x.h * x.w;
  for (int64_t n = 0; n < x.n; n++)
    for (int64_t i = 0; i < x.h; i++)
      for (int64_t j = 0; j < x.w; j++) s += load(xp, x.at(n, c, i, j), x.dt);
  *mean = s / (double)m;
  for (int64_t n = 0; n < x.n; n++)
    for (int64_t i = 0; i < x.h; i++)
      for (int64_t j = 0; j < x.w; j++) {
        double d = load(xp, x.at(n, c, i, j), x.dt) - *mean;
        ss += d * d;
      }
  *var = ss / (double)m;
}

} // namespace

EXPORT cudnnStatus_t cudnnDeriveBNTensorDescriptor(cudnnTensorDescriptor_t out,
                                                   const cudnnTensorDescriptor_t xd,
                                                   cudnnBatchNormMode_t mode) {
  view x;
  if (!out || !view4(xd, &x, "cudnnDeriveBNTensorDescriptor", "x")) return CUDNN_STATUS_BAD_PARAM;
  if (mode != CUDNN_BATCHNORM_SPATIAL)
    return bad(CUDNN_STATUS_NOT_SUPPORTED, "cudnnDeriveBNTensorDescriptor: mode %d", (int)mode);
  int dims[4] = {1, (int)x.c, 1, 1}, strides[4] = {(int)x.c, 1, 1, 1};
  return cudnnSetTensorNdDescriptor(out, bn_type(x.dt), 4, dims, strides);
}

EXPORT cudnnStatus_t cudnnBatchNormalizationForwardTraining(
    cudnnHandle_t h, cudnnBatchNormMode_t mode, const void *alpha, const void *beta,
    const cudnnTensorDescriptor_t xd, const void *xp, const cudnnTensorDescriptor_t yd, void *yp,
    const cudnnTensorDescriptor_t pd, const void *scale, const void *bias, double factor,
    void *running_mean, void *running_var, double eps, void *save_mean, void *save_invstd) {
  const char *fn = "cudnnBatchNormalizationForwardTraining";
  view x, y;
  if (!h) return CUDNN_STATUS_BAD_PARAM;
  cudnnStatus_t st = bn_check(fn, mode, xd, yd, pd, &x, &y, BN_TRAIN_MAX_N);
  if (st) return st;
  if (eps < CUDNN_BN_MIN_EPSILON || (!running_mean) != (!running_var) || !scale || !bias ||
      (!save_mean) != (!save_invstd))
    return bad(CUDNN_STATUS_BAD_PARAM, "%s: epsilon %g, or a missing pointer", fn, eps);
  if (!on_device(fn, "x", xp, x.span()) || !on_device(fn, "y", yp, y.span()) ||
      !bn_params(fn, x, {scale, bias, running_mean, running_var, save_mean, save_invstd}))
    return CUDNN_STATUS_BAD_PARAM;
  if (!mf_emu::handle_usable(h->device, h->stream, __func__)) return CUDNN_STATUS_EXECUTION_FAILED;
  if (!mf_emu::library_work(__func__)) return CUDNN_STATUS_SUCCESS;
  cudnnDataType_t pt = bn_type(x.dt);
  double a = scalar(alpha, x.dt), b = scalar(beta, x.dt);
  int64_t m = x.n * x.h * x.w;
  for (int64_t c = 0; c < x.c; c++) {
    double mean, var;
    moments(xp, x, c, &mean, &var);
    double invstd = 1 / sqrt(var + eps), g = load(scale, c, pt), be = load(bias, c, pt);
    for (int64_t n = 0; n < x.n; n++)
      for (int64_t i = 0; i < x.h; i++)
        for (int64_t j = 0; j < x.w; j++)
          blend(yp, y.at(n, c, i, j), y.dt, a, b,
                g * (load(xp, x.at(n, c, i, j), x.dt) - mean) * invstd + be);
    if (running_mean) {
      double unbiased = m > 1 ? var * (double)m / (double)(m - 1) : var;
      store(running_mean, c, pt, (1 - factor) * load(running_mean, c, pt) + factor * mean);
      store(running_var, c, pt, (1 - factor) * load(running_var, c, pt) + factor * unbiased);
    }
    if (save_mean) {
      store(save_mean, c, pt, mean);
      store(save_invstd, c, pt, invstd);
    }
  }
  return CUDNN_STATUS_SUCCESS;
}

EXPORT cudnnStatus_t cudnnBatchNormalizationForwardInference(
    cudnnHandle_t h, cudnnBatchNormMode_t mode, const void *alpha, const void *beta,
    const cudnnTensorDescriptor_t xd, const void *xp, const cudnnTensorDescriptor_t yd, void *yp,
    const cudnnTensorDescriptor_t pd, const void *scale, const void *bias, const void *mean,
    const void *var, double eps) {
  const char *fn = "cudnnBatchNormalizationForwardInference";
  view x, y;
  if (!h) return CUDNN_STATUS_BAD_PARAM;
  cudnnStatus_t st = bn_check(fn, mode, xd, yd, pd, &x, &y, BN_INFER_MAX_N);
  if (st) return st;
  if (eps < CUDNN_BN_MIN_EPSILON || !scale || !bias || !mean || !var)
    return bad(CUDNN_STATUS_BAD_PARAM, "%s: epsilon %g, or a missing pointer", fn, eps);
  if (!on_device(fn, "x", xp, x.span()) || !on_device(fn, "y", yp, y.span()) ||
      !bn_params(fn, x, {scale, bias, mean, var}))
    return CUDNN_STATUS_BAD_PARAM;
  if (!mf_emu::handle_usable(h->device, h->stream, __func__)) return CUDNN_STATUS_EXECUTION_FAILED;
  if (!mf_emu::library_work(__func__)) return CUDNN_STATUS_SUCCESS;
  cudnnDataType_t pt = bn_type(x.dt);
  double a = scalar(alpha, x.dt), b = scalar(beta, x.dt);
  for (int64_t c = 0; c < x.c; c++) {
    double mu = load(mean, c, pt), invstd = 1 / sqrt(load(var, c, pt) + eps);
    double g = load(scale, c, pt), be = load(bias, c, pt);
    for (int64_t n = 0; n < x.n; n++)
      for (int64_t i = 0; i < x.h; i++)
        for (int64_t j = 0; j < x.w; j++)
          blend(yp, y.at(n, c, i, j), y.dt, a, b,
                g * (load(xp, x.at(n, c, i, j), x.dt) - mu) * invstd + be);
  }
  return CUDNN_STATUS_SUCCESS;
}

EXPORT cudnnStatus_t cudnnBatchNormalizationBackward(
    cudnnHandle_t h, cudnnBatchNormMode_t mode, const void *alpha_data, const void *beta_data,
    const void *alpha_param, const void *beta_param, const cudnnTensorDescriptor_t xd,
    const void *xp, const cudnnTensorDescriptor_t dyd, const void *dyp,
    const cudnnTensorDescriptor_t dxd, void *dxp, const cudnnTensorDescriptor_t pd,
    const void *scale, void *dscale, void *dbias, double eps, const void *saved_mean,
    const void *saved_invstd) {
  const char *fn = "cudnnBatchNormalizationBackward";
  view x{}, dy{}, dx{};
  if (!h) return CUDNN_STATUS_BAD_PARAM;
  cudnnStatus_t st = bn_check(fn, mode, xd, dyd, pd, &x, &dy, BN_TRAIN_MAX_N);
  if (!st) st = bn_check(fn, mode, xd, dxd, pd, &x, &dx, BN_TRAIN_MAX_N);
  if (st) return st;
  if (eps < CUDNN_BN_MIN_EPSILON || !scale || !dscale || !dbias || (!saved_mean) != (!saved_invstd))
    return bad(CUDNN_STATUS_BAD_PARAM, "%s: epsilon %g, or a missing pointer", fn, eps);
  if (!on_device(fn, "x", xp, x.span()) || !on_device(fn, "dy", dyp, dy.span()) ||
      !on_device(fn, "dx", dxp, dx.span()) ||
      !bn_params(fn, x, {scale, dscale, dbias, saved_mean, saved_invstd}))
    return CUDNN_STATUS_BAD_PARAM;
  if (!mf_emu::handle_usable(h->device, h->stream, __func__)) return CUDNN_STATUS_EXECUTION_FAILED;
  if (!mf_emu::library_work(__func__)) return CUDNN_STATUS_SUCCESS;
  cudnnDataType_t pt = bn_type(x.dt);
  double ad = scalar(alpha_data, x.dt), bd = scalar(beta_data, x.dt);
  double ap = scalar(alpha_param, x.dt), bp = scalar(beta_param, x.dt);
  double m = (double)(x.n * x.h * x.w);
  for (int64_t c = 0; c < x.c; c++) {
    double mean, invstd;
    if (saved_mean) {
      mean = load(saved_mean, c, pt);
      invstd = load(saved_invstd, c, pt);
    } else {
      double var;
      moments(xp, x, c, &mean, &var);
      invstd = 1 / sqrt(var + eps);
    }
    double sdy = 0, sdyx = 0;
    for (int64_t n = 0; n < x.n; n++)
      for (int64_t i = 0; i < x.h; i++)
        for (int64_t j = 0; j < x.w; j++) {
          double g = load(dyp, dy.at(n, c, i, j), dy.dt);
          sdy += g;
          sdyx += g * (load(xp, x.at(n, c, i, j), x.dt) - mean) * invstd;
        }
    double gamma = load(scale, c, pt);
    for (int64_t n = 0; n < x.n; n++)
      for (int64_t i = 0; i < x.h; i++)
        for (int64_t j = 0; j < x.w; j++) {
          double xhat = (load(xp, x.at(n, c, i, j), x.dt) - mean) * invstd;
          double g = load(dyp, dy.at(n, c, i, j), dy.dt);
          blend(dxp, dx.at(n, c, i, j), dx.dt, ad, bd,
                gamma * invstd / m * (m * g - sdy - xhat * sdyx));
        }
    blend(dscale, c, pt, ap, bp, sdyx);
    blend(dbias, c, pt, ap, bp, sdy);
  }
  return CUDNN_STATUS_SUCCESS;
}
