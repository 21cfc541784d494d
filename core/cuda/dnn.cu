/* dnn.cu — the cuDNN plumbing of dnn.cuh: the per-device handle and workspace, statuses as
 * messages, descriptors from tensors. */
#ifdef MF_HAVE_CUDNN

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "cuda/dnn.cuh"

static pthread_mutex_t dnn_lock = PTHREAD_MUTEX_INITIALIZER; /* handle creation */

mf_status mf_dnn_check(mf_device *dev, cudnnStatus_t st, const char *op, const char *call,
                       const mf_dnn_what *w) {
  if (st == CUDNN_STATUS_SUCCESS) return MF_OK;
  /* cuDNN 9's statuses come in categories (code / 1000 * 1000) with sub-codes, such as
   * CUDNN_STATUS_NOT_SUPPORTED_LAYOUT (3004) in the NOT_SUPPORTED category (3000) */
  mf_status s = MF_ERR_DEVICE;
  if (st == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED ||
      st == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED)
    s = MF_ERR_MEMORY;
  else if (CUDNN_STATUS_CATEGORY(st) == CUDNN_STATUS_NOT_SUPPORTED)
    s = MF_ERR_UNSUPPORTED;
  char detail[512];
  detail[0] = 0;
  cudnnGetLastErrorString(detail, sizeof detail);
  (void)cudaGetLastError(); /* a failed launch inside cuDNN leaves the runtime's error set */
  char buf[320];
  const char *what = w ? mf_dnn_what_str(w, buf, sizeof buf) : NULL;
  return mf_fail(s, "cuda:%d: %s: %s failed: %s%s%s%s%s%s", dev ? dev->index : -1, op, call,
                 cudnnGetErrorString(st), what ? " (" : "", what ? what : "", what ? ")" : "",
                 detail[0] ? ": " : "", detail);
}

mf_status mf_dnn_handle(mf_device *dev, const char *op, cudnnHandle_t *out) {
  mf_cuda_ctx *ctx = mf_cuda_ctx_of(dev);
  mf_status s = MF_OK;
  pthread_mutex_lock(&dnn_lock);
  if (!ctx->cudnn) {
    cudnnHandle_t h;
    s = mf_dnn_check(dev, cudnnCreate(&h), op, "cudnnCreate", NULL);
    if (!s) ctx->cudnn = h;
  }
  pthread_mutex_unlock(&dnn_lock);
  MF_TRY(s);
  cudnnHandle_t h = (cudnnHandle_t)ctx->cudnn;
  MF_TRY(mf_dnn_check(dev, cudnnSetStream(h, ctx->stream), op, "cudnnSetStream", NULL));
  *out = h;
  return MF_OK;
}

mf_status mf_dnn_workspace(mf_device *dev, const char *op, size_t bytes, void **p) {
  (void)op; /* the allocator's failure message names the device and the sizes */
  mf_cuda_ctx *ctx = mf_cuda_ctx_of(dev);
  *p = NULL;
  if (bytes == 0) return MF_OK;
  if (ctx->workspace_bytes < bytes) {
    /* freed before the new one is taken: the caching allocator may hand the same block back
     * grown; kernels already queued on the stream finish before any later use */
    if (ctx->workspace) mf_cuda_scratch_free(dev, ctx->workspace, ctx->workspace_bytes);
    ctx->workspace = NULL;
    ctx->workspace_bytes = 0;
    void *w = mf_cuda_scratch(dev, bytes);
    if (!w) return MF_ERR_MEMORY; /* the allocator's message says how much and what is free */
    ctx->workspace = w;
    ctx->workspace_bytes = bytes;
  }
  *p = ctx->workspace;
  return MF_OK;
}

bool mf_dnn_dtype(mf_dtype dt, cudnnDataType_t *out) {
  switch (dt) {
  case MF_F32: *out = CUDNN_DATA_FLOAT; return true;
  case MF_F64: *out = CUDNN_DATA_DOUBLE; return true;
  case MF_F16: *out = CUDNN_DATA_HALF; return true;
  case MF_BF16: *out = CUDNN_DATA_BFLOAT16; return true;
  default: return false;
  }
}

mf_status mf_dnn_tensor4d(mf_device *dev, const char *op, mf_dtype dt, const int64_t *shape,
                          const int64_t *stride, mf_dnn_tensor_desc *out) {
  cudnnDataType_t ct;
  if (!mf_dnn_dtype(dt, &ct))
    return mf_fail(MF_ERR_DTYPE, "%s: cuDNN does not take %s tensors", op, mf_dtype_name(dt));
  int dims[4], strides[4];
  int64_t span = 1; /* the elements from the first to the last: cuDNN indexes them in 32 bits */
  for (int d = 0; d < 4; d++) {
    if (shape[d] > INT32_MAX || stride[d] > INT32_MAX || stride[d] < 0)
      span = INT64_MAX;
    else if (shape[d] > 0 && span <= INT32_MAX)
      span += (shape[d] - 1) * stride[d]; /* < 2^62 */
    dims[d] = (int)shape[d];
    strides[d] = (int)stride[d];
  }
  if (span > INT32_MAX) {
    char a[96];
    return mf_fail(MF_ERR_UNSUPPORTED,
                   "%s: a tensor of shape %s spans 2^31 elements or more, beyond cuDNN's 32-bit "
                   "indexing (split the batch)",
                   op, mf_shape_fmt(4, shape, a, sizeof a));
  }
  MF_TRY(mf_dnn_check(dev, cudnnCreateTensorDescriptor(&out->d), op, "cudnnCreateTensorDescriptor",
                      NULL));
  mf_dnn_what what;
  what.shape = shape;
  return mf_dnn_check(dev, cudnnSetTensorNdDescriptor(out->d, ct, 4, dims, strides), op,
                      "cudnnSetTensorNdDescriptor", &what);
}

/* Strides with those of size-1 dims replaced by what a packed tensor of the same layout has, so
 * cuDNN sees a packed NCHW or NHWC tensor (strides of size-1 dims are meaningless to us but cuDNN
 * checks them). */
static void canonical_strides(const mf_tensor *t, cudnnTensorFormat_t prefer, int64_t *st) {
  cudnnTensorFormat_t fmt = CUDNN_TENSOR_NCHW;
  bool known = mf_dnn_layout(t, &fmt, prefer);
  const int64_t *s = t->shape;
  if (known && fmt == CUDNN_TENSOR_NHWC) {
    st[1] = 1;
    st[3] = s[1];
    st[2] = s[3] * s[1];
    st[0] = s[2] * s[3] * s[1];
  } else if (known) {
    st[3] = 1;
    st[2] = s[3];
    st[1] = s[2] * s[3];
    st[0] = s[1] * s[2] * s[3];
  } else {
    for (int d = 0; d < 4; d++) st[d] = t->stride[d];
  }
}

mf_status mf_dnn_tensor(mf_device *dev, const char *op, const mf_tensor *t, mf_dnn_tensor_desc *out,
                        cudnnTensorFormat_t prefer) {
  if (t->ndim == 1) { /* a per-channel vector: (1, C, 1, 1) */
    int64_t shape[4] = {1, t->shape[0], 1, 1}, stride[4] = {t->shape[0], t->stride[0], 1, 1};
    if (t->stride[0] != 1) stride[0] = t->shape[0] * t->stride[0];
    return mf_dnn_tensor4d(dev, op, t->dtype, shape, stride, out);
  }
  if (t->ndim != 4) {
    char a[96];
    return mf_fail(MF_ERR_SHAPE, "%s: cuDNN needs a 4-D (N, C, H, W) tensor, got shape %s", op,
                   mf_cuda_shape(t, a, sizeof a));
  }
  int64_t st[4];
  canonical_strides(t, prefer, st);
  return mf_dnn_tensor4d(dev, op, t->dtype, t->shape, st, out);
}

bool mf_dnn_layout(const mf_tensor *t, cudnnTensorFormat_t *fmt, cudnnTensorFormat_t prefer) {
  if (t->ndim != 4) return false;
  const int64_t *s = t->shape, *st = t->stride;
  /* packed in the order given by perm (outermost first), size-1 dims skipped; the preferred
   * order is tried first */
  static const int orders[2][4] = {{0, 1, 2, 3}, {0, 2, 3, 1}};
  int first = prefer == CUDNN_TENSOR_NHWC ? 1 : 0;
  for (int k = 0; k < 2; k++) {
    int o = k ? 1 - first : first;
    int64_t expect = 1;
    bool ok = true;
    for (int k = 3; k >= 0 && ok; k--) {
      int d = orders[o][k];
      if (s[d] == 1) continue;
      if (st[d] != expect) ok = false;
      expect *= s[d];
    }
    if (ok) {
      *fmt = o == 0 ? CUDNN_TENSOR_NCHW : CUDNN_TENSOR_NHWC;
      return true;
    }
  }
  return false;
}

/* "8x1x28x28 (NCHW)" */
static int operand(char *buf, size_t n, const char *sep, const char *name, const mf_tensor *t) {
  char sh[96];
  cudnnTensorFormat_t f = CUDNN_TENSOR_NCHW;
  bool packed = mf_dnn_layout(t, &f);
  return snprintf(buf, n, "%s%s %s%s", sep, name, mf_cuda_shape(t, sh, sizeof sh),
                  !packed                  ? " (strided)"
                  : f == CUDNN_TENSOR_NHWC ? " (NHWC)"
                                           : " (NCHW)");
}

const char *mf_dnn_what_str(const mf_dnn_what *w, char *buf, size_t n) {
  int k = 0;
  buf[0] = 0;
  if (w->a)
    k = operand(buf, n, "", w->na, w->a);
  else if (w->shape)
    k = (int)strlen(mf_shape_fmt(4, w->shape, buf, n));
  if (w->b && k >= 0 && (size_t)k < n) k += operand(buf + k, n - (size_t)k, ", ", w->nb, w->b);
  if (w->p && k >= 0 && (size_t)k < n)
    snprintf(buf + k, n - (size_t)k, ", stride %dx%d, padding %d,%d,%d,%d", w->p->stride[0],
             w->p->stride[1], w->p->pad[0], w->p->pad[1], w->p->pad[2], w->p->pad[3]);
  return buf;
}

#endif
