/* matmul.cu — the CUDA matmul kernel. Layout (ops_linalg.c): A (batch..., M, K) and B
 * (batch..., K, N), each matrix row-major or column-major with a leading dimension, batch dims
 * with any strides (0 when broadcast); C (batch..., M, N) contiguous.
 *
 * The float dtypes go to cuBLAS: cublasGemmStridedBatchedEx computes the row-major C = A B as the
 * column-major C^T = B^T A^T, so a row-major operand is passed untransposed with its leading
 * dimension and a column-major one (a transposed view) as transposed, without copies. The batch
 * dims are coalesced where A's and B's strides allow; the innermost run is one strided-batched call
 * and any outer batch dims loop on the host. float32 runs on tensor cores in TF32 unless
 * mf_cuda_set_tf32(false) (then in full float32); float16/bfloat16 accumulate in float32, with
 * cuBLAS's reduced-precision split-K reductions turned off (the handle's math mode, as PyTorch does
 * by default for float16), so their sums are float32's rounded once; float64 in float64.
 * int32/int64/uint8: a plain kernel, one thread per output, in unsigned arithmetic (wrapping like
 * the CPU's).
 */
#include <cublas_v2.h>
#include <pthread.h>

#include "cuda/kernels.h"

static pthread_mutex_t handle_lock = PTHREAD_MUTEX_INITIALIZER; /* handle creation */

static bool allow_tf32 = true;

bool mf_cuda_matmul_set_tf32(bool on) {
  bool was = __atomic_exchange_n(&allow_tf32, on, __ATOMIC_RELAXED);
  return was;
}

bool mf_cuda_tf32(void) { return __atomic_load_n(&allow_tf32, __ATOMIC_RELAXED); }

void mf_cuda_matmul_release(mf_cuda_ctx *ctx) {
  if (ctx->cublas) cublasDestroy((cublasHandle_t)ctx->cublas);
  ctx->cublas = NULL;
}

static mf_status cublas_check(mf_device *dev, cublasStatus_t st, const char *what) {
  if (st == CUBLAS_STATUS_SUCCESS) return MF_OK;
  mf_status s = st == CUBLAS_STATUS_ALLOC_FAILED ? MF_ERR_MEMORY : MF_ERR_DEVICE;
  return mf_fail(s, "cuda:%d: matmul: %s: %s", dev->index, what, cublasGetStatusString(st));
}

static mf_status handle(mf_device *dev, cublasHandle_t *out) {
  mf_cuda_ctx *ctx = mf_cuda_ctx_of(dev);
  mf_status s = MF_OK;
  pthread_mutex_lock(&handle_lock);
  if (!ctx->cublas) {
    cublasHandle_t h;
    s = cublas_check(dev, cublasCreate(&h), "cublasCreate");
    if (!s) {
      s = cublas_check(
          dev,
          cublasSetMathMode(h, (cublasMath_t)(CUBLAS_DEFAULT_MATH |
                                              CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)),
          "cublasSetMathMode");
      if (s)
        cublasDestroy(h);
      else
        ctx->cublas = h;
    }
  }
  pthread_mutex_unlock(&handle_lock);
  MF_TRY(s);
  cublasHandle_t h = (cublasHandle_t)ctx->cublas;
  MF_TRY(cublas_check(dev, cublasSetStream(h, ctx->stream), "cublasSetStream"));
  *out = h;
  return MF_OK;
}

/* One operand's matrix geometry */
typedef struct operand {
  const char *p;
  bool colmajor;
  int64_t ld;
} operand;

static operand make_operand(const mf_tensor *t) {
  int nd = t->ndim;
  int64_t r = t->shape[nd - 2], c = t->shape[nd - 1], sr = t->stride[nd - 2],
          sc = t->stride[nd - 1];
  operand o;
  o.p = mf_cuda_ptr(t);
  /* ops_linalg.c checked the layout; row-major wins when both hold */
  if ((c == 1 || sc == 1) && (r == 1 || sr >= (c > 1 ? c : 1))) {
    o.colmajor = false;
    o.ld = r == 1 ? (c > 1 ? c : 1) : sr;
  } else {
    o.colmajor = true;
    o.ld = c == 1 ? (r > 1 ? r : 1) : sc;
  }
  return o;
}

/* ---- integers ----------------------------------------------------------------------------------
 */

template <class T>
__global__ void int_matmul_kernel(T *c, const T *a, const T *b, int64_t nbatch, int64_t M,
                                  int64_t N, int64_t K, int64_t ars, int64_t acs, int64_t brs,
                                  int64_t bcs, const int64_t *aoff, const int64_t *boff) {
  using U = typename std::make_unsigned<T>::type;
  MF_GRID_LOOP(idx, nbatch * M * N) {
    int64_t bi = idx / (M * N), rem = idx - bi * M * N, i = rem / N, j = rem - i * N;
    const T *pa = a + aoff[bi] + i * ars, *pb = b + boff[bi] + j * bcs;
    U acc = 0;
    for (int64_t k = 0; k < K; k++) acc += (U)pa[k * acs] * (U)pb[k * brs];
    c[idx] = (T)acc;
  }
}

/* element offsets of every batch's matrices, batch dims [0, nb) */
static void batch_offsets(const mf_tensor *t, int nb, const int64_t *bshape, int64_t nbatch,
                          int64_t *off) {
  for (int64_t b = 0; b < nbatch; b++) {
    int64_t rem = b, o = 0;
    for (int d = nb - 1; d >= 0; d--) {
      o += (rem % bshape[d]) * t->stride[d];
      rem /= bshape[d];
    }
    off[b] = o;
  }
}

static mf_status int_matmul(mf_device *dev, const mf_call *c, int64_t M, int64_t N, int64_t K) {
  const mf_tensor *A = c->in[0], *B = c->in[1];
  int nd = c->out->ndim, nb = nd - 2;
  int64_t nbatch = 1;
  for (int d = 0; d < nb; d++) nbatch *= c->out->shape[d];
  size_t bytes = 2 * (size_t)nbatch * sizeof(int64_t);
  int64_t *host = (int64_t *)malloc(bytes);
  if (!host) return mf_fail(MF_ERR_MEMORY, "matmul: out of memory");
  batch_offsets(A, nb, c->out->shape, nbatch, host);
  batch_offsets(B, nb, c->out->shape, nbatch, host + nbatch);
  int64_t *offs = (int64_t *)mf_cuda_scratch(dev, bytes);
  if (!offs) {
    free(host);
    return MF_ERR_MEMORY;
  }
  cudaStream_t s = mf_cuda_stream(dev);
  mf_status st = mf_cuda_upload(dev, offs, host, bytes); /* host may go at once */
  free(host);
  int64_t ars = A->stride[nd - 2], acs = A->stride[nd - 1];
  int64_t brs = B->stride[nd - 2], bcs = B->stride[nd - 1];
  int64_t total = nbatch * M * N;
  if (!st) {
    bool ok = true;
    switch (c->out->dtype) {
#define INT_CASE(DT, T)                                                                            \
  case DT:                                                                                         \
    int_matmul_kernel<T><<<mf_cuda_blocks(total), MF_CUDA_THREADS, 0, s>>>(                        \
        mf_cuda_ptr<T>(c->out), mf_cuda_ptr<T>(A), mf_cuda_ptr<T>(B), nbatch, M, N, K, ars, acs,   \
        brs, bcs, offs, offs + nbatch);                                                            \
    break;
      INT_CASE(MF_I32, int32_t)
      INT_CASE(MF_I64, int64_t)
      INT_CASE(MF_U8, uint8_t)
#undef INT_CASE
    default: ok = false;
    }
    st = ok ? mf_cuda_launched(dev, "matmul")
            : mf_fail(MF_ERR_DTYPE, "matmul: not supported for %s tensors",
                      mf_dtype_name(c->out->dtype));
  }
  mf_cuda_scratch_free(dev, offs, bytes);
  return st;
}

/* ---- floats through cuBLAS ------------------------------------------------------------------- */

mf_status mf_cuda_matmul(mf_device *dev, const mf_call *c) {
  if (!c->out || c->nin < 2 || !c->in[0] || !c->in[1])
    return mf_fail(MF_ERR_ARG, "matmul: malformed kernel call");
  const mf_tensor *A = c->in[0], *B = c->in[1], *C = c->out;
  int nd = C->ndim;
  if (nd < 2 || A->ndim != nd || B->ndim != nd || !mf_is_contiguous(C))
    return mf_fail(MF_ERR_ARG, "matmul: malformed kernel call");
  mf_dtype dt = C->dtype;
  if (A->dtype != dt || B->dtype != dt)
    return mf_fail(MF_ERR_DTYPE, "matmul: operands must have the output's dtype");
  int64_t M = C->shape[nd - 2], N = C->shape[nd - 1], K = A->shape[nd - 1];
  int64_t total = mf_numel(C);
  if (total == 0) return MF_OK;
  MF_TRY(mf_cuda_enter(dev));
  cudaStream_t s = mf_cuda_stream(dev);
  size_t es = mf_dtype_size(dt);
  if (K == 0)
    return mf_cuda_check(dev, cudaMemsetAsync(mf_cuda_ptr(C), 0, (size_t)total * es, s), "matmul");
  if (dt == MF_I32 || dt == MF_I64 || dt == MF_U8) return int_matmul(dev, c, M, N, K);

  cudaDataType_t type;
  cublasComputeType_t compute;
  float f_one = 1, f_zero = 0;
  double d_one = 1, d_zero = 0;
  const void *alpha = &f_one, *beta = &f_zero;
  switch (dt) {
  case MF_F32:
    type = CUDA_R_32F;
    compute = __atomic_load_n(&allow_tf32, __ATOMIC_RELAXED) ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                             : CUBLAS_COMPUTE_32F;
    break;
  case MF_F64:
    type = CUDA_R_64F;
    compute = CUBLAS_COMPUTE_64F;
    alpha = &d_one;
    beta = &d_zero;
    break;
  case MF_F16:
    type = CUDA_R_16F;
    compute = CUBLAS_COMPUTE_32F;
    break;
  case MF_BF16:
    type = CUDA_R_16BF;
    compute = CUBLAS_COMPUTE_32F;
    break;
  default: return mf_fail(MF_ERR_DTYPE, "matmul: not supported for %s tensors", mf_dtype_name(dt));
  }
  if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX)
    return mf_fail(MF_ERR_SHAPE, "matmul: a dimension above 2^31 is not supported on CUDA");
  cublasHandle_t h;
  MF_TRY(handle(dev, &h));
  operand a = make_operand(A), b = make_operand(B);

  /* batch dims: coalesce from the inside out while A's, B's and C's strides chain */
  int nb = nd - 2;
  int64_t bshape[MF_MAX_DIMS], sa[MF_MAX_DIMS], sb[MF_MAX_DIMS], sc[MF_MAX_DIMS];
  int m = 0; /* kept dims, innermost first */
  int64_t cstride = M * N;
  for (int d = nb - 1; d >= 0; d--) {
    int64_t size = C->shape[d];
    if (size == 1) {
      cstride *= size;
      continue;
    }
    int64_t as = A->stride[d], bs = B->stride[d];
    if (m > 0 && as == sa[m - 1] * bshape[m - 1] && bs == sb[m - 1] * bshape[m - 1]) {
      bshape[m - 1] *= size;
    } else {
      bshape[m] = size;
      sa[m] = as;
      sb[m] = bs;
      sc[m] = cstride;
      m++;
    }
    cstride *= size;
  }
  int64_t inner = m ? bshape[0] : 1, outer = 1;
  for (int k = 1; k < m; k++) outer *= bshape[k];
  if (inner > INT32_MAX) return mf_fail(MF_ERR_SHAPE, "matmul: too many batches");

  /* column-major: C^T (N x M, ld N) = op(B^T) (N x K) * op(A^T) (K x M) */
  cublasOperation_t tb = b.colmajor ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t ta = a.colmajor ? CUBLAS_OP_T : CUBLAS_OP_N;
  for (int64_t o = 0; o < outer; o++) {
    int64_t rem = o, oa = 0, ob = 0, oc = 0;
    for (int k = 1; k < m; k++) {
      int64_t i = rem % bshape[k];
      rem /= bshape[k];
      oa += i * sa[k];
      ob += i * sb[k];
      oc += i * sc[k];
    }
    cublasStatus_t st = cublasGemmStridedBatchedEx(
        h, tb, ta, (int)N, (int)M, (int)K, alpha, b.p + ob * (int64_t)es, type, (int)b.ld,
        m ? sb[0] : 0, a.p + oa * (int64_t)es, type, (int)a.ld, m ? sa[0] : 0, beta,
        mf_cuda_ptr(C) + oc * (int64_t)es, type, (int)N, m ? sc[0] : M * N, (int)inner, compute,
        CUBLAS_GEMM_DEFAULT);
    MF_TRY(cublas_check(dev, st, "cublasGemmStridedBatchedEx"));
  }
  return MF_OK;
}
