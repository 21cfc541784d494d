/* dnn.cuh — what the cuDNN users (conv.cu, pool.cu, batchnorm.cu) share: the device's cuDNN
 * handle and workspace (made and grown on first use, in mf_cuda_ctx), cuDNN statuses turned into
 * mf statuses whose message names the op, the cuDNN call and the shapes, tensor descriptors made
 * from a tensor's own strides (so a contiguous NCHW tensor and a channels-last (NHWC) view of the
 * same (N, C, H, W) shape both describe themselves), and the alpha/beta scalars whose C type
 * depends on the data type (double for float64, float otherwise).
 *
 * Compiled only with cuDNN (MF_HAVE_CUDNN); the handle lives as long as its device.
 */
#ifndef MF_CUDA_DNN_CUH
#define MF_CUDA_DNN_CUH

#ifdef MF_HAVE_CUDNN

#include <cudnn.h>

#include "cuda/common.cuh"

/* What an op's messages say about its operands: "input 8x1x28x28 (NCHW), weight 32x1x5x5 (NCHW),
 * stride 1x1, padding 2,2,2,2" (tensors a and b, pooling/convolution parameters p, each optional),
 * or a bare 4-D shape. Kept as pointers and written out only when a message needs it: formatting
 * it for every call cost more host time than the call's cuDNN work. */
struct mf_dnn_what {
  const char *na = nullptr, *nb = nullptr;
  const mf_tensor *a = nullptr, *b = nullptr;
  const mf_pool2d_params *p = nullptr;
  const int64_t *shape = nullptr; /* 4 sizes, when a is NULL */
};
/* w written into buf (n bytes); returns buf */
const char *mf_dnn_what_str(const mf_dnn_what *w, char *buf, size_t n);

/* MF_OK, or a failure "cuda:N: <op>: <call>: <CUDNN_STATUS_...> (<what>)[: <cuDNN's detail>]";
 * MF_ERR_MEMORY for allocation failures, MF_ERR_UNSUPPORTED for NOT_SUPPORTED, MF_ERR_DEVICE else.
 * `what` describes the operands (may be NULL). */
mf_status mf_dnn_check(mf_device *dev, cudnnStatus_t st, const char *op, const char *call,
                       const mf_dnn_what *what);
/* The device's handle, bound to its stream (made on first use). dev must be entered. */
mf_status mf_dnn_handle(mf_device *dev, const char *op, cudnnHandle_t *out);
/* At least `bytes` of scratch kept by the device for cuDNN (grown on demand, never shrunk; all
 * work of a device is on one stream, so a grown buffer can replace the old one at once). NULL
 * with *p = NULL when bytes is 0. */
mf_status mf_dnn_workspace(mf_device *dev, const char *op, size_t bytes, void **p);

/* The cuDNN data type of an mf dtype; false for dtypes cuDNN does not take here. */
bool mf_dnn_dtype(mf_dtype dt, cudnnDataType_t *out);

/* alpha = 1, beta = 0 (or 1) of the C type cuDNN wants for dt. */
struct mf_dnn_scalars {
  float f[3] = {1.0f, 0.0f, 1.0f};
  double d[3] = {1.0, 0.0, 1.0};
  bool dbl;
  explicit mf_dnn_scalars(mf_dtype dt) : dbl(dt == MF_F64) {}
  const void *one() const { return dbl ? (const void *)&d[0] : (const void *)&f[0]; }
  const void *zero() const { return dbl ? (const void *)&d[1] : (const void *)&f[1]; }
};

/* Owning holders for descriptors, so every early return frees them: D the descriptor type, destroy
 * its cudnnDestroy* function. */
template <class D, cudnnStatus_t (*destroy)(D)> struct mf_dnn_desc {
  D d = nullptr;
  ~mf_dnn_desc() {
    if (d) destroy(d);
  }
};
typedef mf_dnn_desc<cudnnTensorDescriptor_t, cudnnDestroyTensorDescriptor> mf_dnn_tensor_desc;
typedef mf_dnn_desc<cudnnFilterDescriptor_t, cudnnDestroyFilterDescriptor> mf_dnn_filter_desc;
typedef mf_dnn_desc<cudnnConvolutionDescriptor_t, cudnnDestroyConvolutionDescriptor>
    mf_dnn_conv_desc;
typedef mf_dnn_desc<cudnnPoolingDescriptor_t, cudnnDestroyPoolingDescriptor> mf_dnn_pool_desc;

/* A 4-D (N, C, H, W) descriptor with the given sizes and element strides. */
mf_status mf_dnn_tensor4d(mf_device *dev, const char *op, mf_dtype dt, const int64_t *shape,
                          const int64_t *stride, mf_dnn_tensor_desc *out);
/* A tensor's own descriptor (4-D, or a 1-D (C) vector seen as (1, C, 1, 1)); `prefer` settles
 * the layout of a tensor that is packed both ways (see mf_dnn_layout). */
mf_status mf_dnn_tensor(mf_device *dev, const char *op, const mf_tensor *t, mf_dnn_tensor_desc *out,
                        cudnnTensorFormat_t prefer = CUDNN_TENSOR_NCHW);

/* The memory layout of a 4-D (N, C, H, W) tensor: NCHW when its strides are contiguous in that
 * order, NHWC when they are contiguous in (N, H, W, C) order (a channels-last view), else neither
 * (false). Size-1 dims match either, so a tensor with C = 1 (or H = W = 1) is packed both ways:
 * then `prefer` (the layout of the op's other tensors) is the answer. */
bool mf_dnn_layout(const mf_tensor *t, cudnnTensorFormat_t *fmt,
                   cudnnTensorFormat_t prefer = CUDNN_TENSOR_NCHW);

#endif
#endif
