/* common.cuh — what the CUDA backend's files share: the per-device context (stream, library
 * handles, allocator state), turning CUDA errors into statuses, element pointers, dtype dispatch
 * (one C++ type and kind per mf_dtype, so each kernel is written once as a template), conversions
 * between dtypes, and the strided index calculator of the elementwise kernels.
 *
 * The index calculator (mf_offsets<N>) is iter.h's idea on the GPU: operand 0 gives the iteration
 * shape, the others are viewed with it (numpy broadcasting: missing or size-1 dims get stride 0);
 * size-1 dims are dropped and neighbouring dims that are contiguous for every operand merged, so a
 * contiguous op is one dim and the kernel needs no division. Strides are in elements.
 */
#ifndef MF_CUDA_COMMON_CUH
#define MF_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdint.h>
#include <type_traits>

extern "C" {
#include "internal.h"
}

/* ---- the device context ------------------------------------------------------------------- */

struct mf_cuda_block;                     /* a cached allocation (device.cu) */
typedef struct mf_cuda_xfer mf_cuda_xfer; /* staging buffers and the index record (transfer.cu) */

typedef struct mf_cuda_ctx {
  int ordinal; /* the runtime's device number (after CUDA_VISIBLE_DEVICES) */
  cudaStream_t stream;
  void *cublas;    /* cublasHandle_t, made on first use (matmul.cu) */
  void *cudnn;     /* cudnnHandle_t, made on first use (conv.cu) */
  void *workspace; /* scratch for cuDNN, grown on demand */
  size_t workspace_bytes;
  mf_cuda_xfer *xfer; /* made with the device (mf_cuda_xfer_make) */
} mf_cuda_ctx;

static inline mf_cuda_ctx *mf_cuda_ctx_of(mf_device *dev) { return (mf_cuda_ctx *)dev->context; }
static inline cudaStream_t mf_cuda_stream(mf_device *dev) { return mf_cuda_ctx_of(dev)->stream; }

/* device.cu: MF_OK, or MF_ERR_DEVICE "cuda:N: what: <CUDA's message>" (MF_ERR_MEMORY for out of
 * memory). Clears the runtime's sticky last error where it can. */
mf_status mf_cuda_check(mf_device *dev, cudaError_t e, const char *what);
/* Makes dev current on this thread. */
mf_status mf_cuda_enter(mf_device *dev);
/* After a kernel launch: the launch error, if any, as a status. */
static inline mf_status mf_cuda_launched(mf_device *dev, const char *what) {
  return mf_cuda_check(dev, cudaGetLastError(), what);
}
/* Scratch memory on dev from the caching allocator (device.cu); free with mf_cuda_scratch_free. */
void *mf_cuda_scratch(mf_device *dev, size_t nbytes);
void mf_cuda_scratch_free(mf_device *dev, void *p, size_t nbytes);

/* transfer.cu (see its top): ctx->xfer for a new device; an upload that returns before the GPU
 * has the bytes (the host buffer may change at once); a download and a synchronisation, which
 * also report an index error a GATHER/SCATTER_ADD recorded since the last one. */
mf_status mf_cuda_xfer_make(mf_cuda_ctx *ctx);
mf_status mf_cuda_upload(mf_device *dev, void *dst, const void *src, size_t n);
mf_status mf_cuda_download(mf_device *dev, void *dst, const void *src, size_t n);
mf_status mf_cuda_sync(mf_device *dev);
/* transfer.cu: the device's index record for a kernel to write (4 words: set, index as given,
 * size, dim | caller << 8 | base << 16); after the launch, mf_cuda_index_launched notes that such
 * a kernel ran (the next synchronisation reads the record), and under CUDA_LAUNCH_BLOCKING=1
 * waits and reports a bad index at once (else MF_OK). */
unsigned long long *mf_cuda_index_record(mf_device *dev);
mf_status mf_cuda_index_launched(mf_device *dev);

/* A kernel's bad index v into the record, unless one is there already (size: the indexed dim's;
 * dim 0-based; who: MF_GATHER_BY_*; base: what the indices count from). */
__device__ __forceinline__ void mf_cuda_report_index(unsigned long long *rec, int64_t v,
                                                     int64_t size, int64_t dim, int64_t who,
                                                     int64_t base) {
  if (atomicCAS(rec, 0ull, 1ull) == 0ull) {
    rec[1] = (unsigned long long)v;
    rec[2] = (unsigned long long)size;
    rec[3] = (unsigned long long)(dim | who << 8 | base << 16);
  }
}

/* A tensor's shape as text ("2x3"); mf_shape_str is not among the core functions the backend
 * imports (api.h), mf_shape_fmt is. */
static inline const char *mf_cuda_shape(const mf_tensor *t, char *buf, size_t n) {
  return mf_shape_fmt(t->ndim, t->shape, buf, n);
}

/* Element 0 of a tensor's view, in device memory. */
template <class T = char> static inline T *mf_cuda_ptr(const mf_tensor *t) {
  if (!t || !t->storage || !t->storage->data) return nullptr;
  return (T *)((char *)t->storage->data + t->offset * (int64_t)mf_dtype_size(t->dtype));
}

/* ---- launch geometry ------------------------------------------------------------------------ */

#define MF_CUDA_THREADS 256
static inline unsigned mf_cuda_blocks(int64_t n, int threads = MF_CUDA_THREADS) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > (1 << 20)) b = 1 << 20; /* kernels loop with a grid stride */
  return (unsigned)b;
}
#define MF_GRID_LOOP(i, n)                                                                         \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                        \
       i += (int64_t)blockDim.x * gridDim.x)

/* ---- dtypes --------------------------------------------------------------------------------- */

/* kinds: how a dtype computes */
enum { MF_K_FLT, MF_K_SINT, MF_K_UINT, MF_K_BOOL, MF_K_HALF };

template <class T, int K> struct mf_tag {
  using type = T;
  static constexpr int kind = K;
};

/* The type arithmetic runs in: float for float16/bfloat16, the type itself otherwise. */
template <class T> struct mf_acc { using type = T; };
template <> struct mf_acc<__half> { using type = float; };
template <> struct mf_acc<__nv_bfloat16> { using type = float; };

/* Calls f(mf_tag<T, K>()) for dt; false when dt is not a dtype. */
template <class F> static inline bool mf_cuda_visit(mf_dtype dt, F &&f) {
  switch (dt) {
  case MF_F32: f(mf_tag<float, MF_K_FLT>()); return true;
  case MF_F64: f(mf_tag<double, MF_K_FLT>()); return true;
  case MF_I32: f(mf_tag<int32_t, MF_K_SINT>()); return true;
  case MF_I64: f(mf_tag<int64_t, MF_K_SINT>()); return true;
  case MF_U8: f(mf_tag<uint8_t, MF_K_UINT>()); return true;
  case MF_BOOL: f(mf_tag<uint8_t, MF_K_BOOL>()); return true;
  case MF_F16: f(mf_tag<__half, MF_K_HALF>()); return true;
  case MF_BF16: f(mf_tag<__nv_bfloat16, MF_K_HALF>()); return true;
  default: return false;
  }
}

/* Float dtypes only: float32, float64, and float16/bfloat16 when HALVES (a compile-time switch, so
 * that kernels without half versions are not instantiated for them). */
template <bool HALVES, class F> static inline bool mf_cuda_visit_float(mf_dtype dt, F &&f) {
  switch (dt) {
  case MF_F32: f(mf_tag<float, MF_K_FLT>()); return true;
  case MF_F64: f(mf_tag<double, MF_K_FLT>()); return true;
  default: break;
  }
  if constexpr (HALVES) {
    if (dt == MF_F16) {
      f(mf_tag<__half, MF_K_HALF>());
      return true;
    }
    if (dt == MF_BF16) {
      f(mf_tag<__nv_bfloat16, MF_K_HALF>());
      return true;
    }
  }
  return false;
}

/* Conversions, as the CPU's (cpu/fill.c): float -> integer truncates, float -> uint8 goes through
 * int64, anything -> bool is x != 0; halves convert through float (double directly). */
template <class TO, int KO, class TI, int KI> __device__ __forceinline__ TO mf_cvt(TI x) {
  if constexpr (KI == MF_K_HALF) {
    return mf_cvt<TO, KO, float, MF_K_FLT>((float)x);
  } else if constexpr (KO == MF_K_BOOL) {
    return (TO)(x != 0);
  } else if constexpr (KO == MF_K_HALF) {
    if constexpr (std::is_same<TI, double>::value) {
      if constexpr (std::is_same<TO, __half>::value)
        return __double2half(x);
      else
        return __double2bfloat16(x);
    } else {
      return TO((float)x);
    }
  } else if constexpr (KO == MF_K_UINT && KI == MF_K_FLT) {
    return (TO)(int64_t)x;
  } else {
    return (TO)x;
  }
}

/* ---- the strided index calculator ------------------------------------------------------------ */

template <int N> struct mf_offsets {
  int ndim; /* >= 1; shape[ndim-1] is the innermost */
  int64_t shape[MF_MAX_DIMS];
  int64_t stride[N][MF_MAX_DIMS];

  /* off[k] = element offset of operand k for the row-major linear index i */
  __device__ __forceinline__ void get(int64_t i, int64_t *off) const {
    if (ndim == 1) {
#pragma unroll
      for (int k = 0; k < N; k++) off[k] = i * stride[k][0];
      return;
    }
#pragma unroll
    for (int k = 0; k < N; k++) off[k] = 0;
    for (int d = ndim - 1; d >= 0; d--) {
      int64_t q = i / shape[d], r = i - q * shape[d];
      i = q;
#pragma unroll
      for (int k = 0; k < N; k++) off[k] += r * stride[k][d];
    }
  }
};

/* Fills *oc from ops[0] (the iteration shape) and ops[1..N-1]; MF_ERR_SHAPE when an operand does
 * not broadcast to ops[0]'s shape. */
template <int N>
static inline mf_status mf_cuda_offsets(const char *op, const mf_tensor *const *ops,
                                        mf_offsets<N> *oc) {
  const mf_tensor *o = ops[0];
  int nd = o->ndim;
  int64_t st[N][MF_MAX_DIMS];
  for (int k = 0; k < N; k++) {
    const mf_tensor *t = ops[k];
    bool ok = t->ndim <= nd;
    for (int d = 0; ok && d < nd; d++) {
      int td = d - (nd - t->ndim);
      if (td < 0 || o->shape[d] == 1)
        st[k][d] = 0;
      else if (t->shape[td] == o->shape[d])
        st[k][d] = t->stride[td];
      else if (t->shape[td] == 1)
        st[k][d] = 0;
      else
        ok = false;
    }
    if (!ok) {
      char a[96], b[96];
      return mf_fail(MF_ERR_SHAPE, "%s: an operand of shape %s does not broadcast to %s", op,
                     mf_shape_fmt(t->ndim, t->shape, a, sizeof a),
                     mf_shape_fmt(nd, o->shape, b, sizeof b));
    }
  }
  /* from the innermost dim out: drop size-1 dims, merge a dim into its kept inner neighbour when
   * that is contiguous for every operand */
  int n = 0;
  int64_t shape[MF_MAX_DIMS], stride[N][MF_MAX_DIMS]; /* innermost first */
  for (int d = nd - 1; d >= 0; d--) {
    if (o->shape[d] == 1) continue;
    if (n > 0) {
      bool merge = true;
      for (int k = 0; k < N; k++)
        if (st[k][d] != shape[n - 1] * stride[k][n - 1]) merge = false;
      if (merge) {
        shape[n - 1] *= o->shape[d];
        continue;
      }
    }
    shape[n] = o->shape[d];
    for (int k = 0; k < N; k++) stride[k][n] = st[k][d];
    n++;
  }
  if (n == 0) { /* a scalar, or all dims 1 */
    shape[0] = 1;
    for (int k = 0; k < N; k++) stride[k][0] = 0;
    n = 1;
  }
  oc->ndim = n;
  for (int d = 0; d < n; d++) {
    oc->shape[d] = shape[n - 1 - d];
    for (int k = 0; k < N; k++) oc->stride[k][d] = stride[k][n - 1 - d];
  }
  return MF_OK;
}

#endif
