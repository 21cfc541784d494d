/* softmax.cu — the CUDA softmax and log_softmax kernels and their backwards (float32, float64,
 * float16, bfloat16: one template each; the halves are loaded as float, computed in float and
 * stored rounded once, as PyTorch's kernels do), along one dim of a contiguous tensor viewed as
 * (outer, n, inner) = ip[0..2] (see ops_nn.c): softmax       y = exp(x - max) / sum exp(x - max)
 *   log_softmax   y = x - max - log(sum exp(x - max))
 *   softmax backward       dx = y * (dy - sum(dy * y))
 *   log_softmax backward   dx = dy - exp(y) * sum(dy)
 * NaN anywhere in a slice gives NaN for the slice (the max propagates it), as on the CPU.
 * inner == 1: a group of threads per row, the max and sums merged in shared memory (rows.cuh);
 * inner > 1: one thread per (outer, inner) column, the loads of a warp coalesced along inner.
 */
#include <math.h>

#include "cuda/kernels.h"
#include "cuda/rows.cuh"

/* T: the storage type; A (mf_acc): the type everything is computed in, float for the halves */
template <class T>
__global__ void softmax_rows_kernel(int op, T *out, const T *a, const T *b, int64_t outer,
                                    int64_t n) {
  using A = typename mf_acc<T>::type;
  __shared__ A sh[ROW_THREADS];
  for (int64_t r0 = (int64_t)blockIdx.x * blockDim.y; r0 < outer;
       r0 += (int64_t)gridDim.x * blockDim.y) {
    /* a row past the end (the last block's) runs with n = 0: no loads, but its threads still
     * take part in row_all's barriers */
    int64_t r = r0 + threadIdx.y, len = r < outer ? n : 0;
    if (r >= outer) r = r0;
    const T *x = a + r * n, *dy = b ? b + r * n : nullptr;
    T *o = out + r * n;
    if (op == MF_OP_SOFTMAX || op == MF_OP_LOG_SOFTMAX) {
      A m, sum = row_max_sumexp(x, len, sh, &m);
      if (op == MF_OP_SOFTMAX) {
        A inv = (A)1 / sum;
        for (int64_t k = threadIdx.x; k < len; k += blockDim.x) o[k] = (T)(exp((A)x[k] - m) * inv);
      } else {
        A lse = m + log(sum);
        for (int64_t k = threadIdx.x; k < len; k += blockDim.x) o[k] = (T)((A)x[k] - lse);
      }
    } else {
      const T *y = x;
      A sum = 0;
      if (op == MF_OP_SOFTMAX_BACKWARD)
        for (int64_t k = threadIdx.x; k < len; k += blockDim.x) sum += (A)dy[k] * (A)y[k];
      else
        for (int64_t k = threadIdx.x; k < len; k += blockDim.x) sum += (A)dy[k];
      sum = row_all(sum, false, sh);
      if (op == MF_OP_SOFTMAX_BACKWARD)
        for (int64_t k = threadIdx.x; k < len; k += blockDim.x)
          o[k] = (T)((A)y[k] * ((A)dy[k] - sum));
      else
        for (int64_t k = threadIdx.x; k < len; k += blockDim.x)
          o[k] = (T)((A)dy[k] - exp((A)y[k]) * sum);
    }
  }
}

template <class T>
__global__ void softmax_cols_kernel(int op, T *out, const T *a, const T *b, int64_t outer,
                                    int64_t n, int64_t inner) {
  using A = typename mf_acc<T>::type;
  MF_GRID_LOOP(j, outer * inner) {
    int64_t o = j / inner, i = j - o * inner, base = o * n * inner + i;
    const T *x = a + base, *dy = b ? b + base : nullptr;
    T *y = out + base;
    if (op == MF_OP_SOFTMAX || op == MF_OP_LOG_SOFTMAX) {
      A m = -INFINITY, sum = 0;
      for (int64_t k = 0; k < n; k++) m = nanmax(m, (A)x[k * inner]);
      for (int64_t k = 0; k < n; k++) sum += exp((A)x[k * inner] - m);
      if (op == MF_OP_SOFTMAX) {
        A inv = (A)1 / sum;
        for (int64_t k = 0; k < n; k++) y[k * inner] = (T)(exp((A)x[k * inner] - m) * inv);
      } else {
        A lse = m + log(sum);
        for (int64_t k = 0; k < n; k++) y[k * inner] = (T)((A)x[k * inner] - lse);
      }
    } else {
      A sum = 0;
      if (op == MF_OP_SOFTMAX_BACKWARD) {
        for (int64_t k = 0; k < n; k++) sum += (A)dy[k * inner] * (A)x[k * inner];
        for (int64_t k = 0; k < n; k++)
          y[k * inner] = (T)((A)x[k * inner] * ((A)dy[k * inner] - sum));
      } else {
        for (int64_t k = 0; k < n; k++) sum += (A)dy[k * inner];
        for (int64_t k = 0; k < n; k++)
          y[k * inner] = (T)((A)dy[k * inner] - exp((A)x[k * inner]) * sum);
      }
    }
  }
}

mf_status mf_cuda_softmax(mf_device *dev, const mf_call *c) {
  mf_op op = c->op;
  const char *name = mf_op_name(op);
  bool backward = op == MF_OP_SOFTMAX_BACKWARD || op == MF_OP_LOG_SOFTMAX_BACKWARD;
  if (op < MF_OP_SOFTMAX || op > MF_OP_LOG_SOFTMAX_BACKWARD || !c->out || !c->in[0] ||
      (backward && !c->in[1]))
    return mf_fail(MF_ERR_ARG, "%s: malformed kernel call", name);
  mf_dtype dt = c->out->dtype;
  bool flt = dt == MF_F32 || dt == MF_F64 || dt == MF_F16 || dt == MF_BF16;
  if (!flt || c->in[0]->dtype != dt || (backward && c->in[1]->dtype != dt))
    return mf_fail(MF_ERR_DTYPE,
                   "%s: takes float32, float64, float16 or bfloat16 tensors of one dtype", name);
  int64_t outer = c->ip[0], n = c->ip[1], inner = c->ip[2];
  if (outer * n * inner == 0) return MF_OK;
  MF_TRY(mf_cuda_enter(dev));
  cudaStream_t s = mf_cuda_stream(dev);
  mf_cuda_visit_float<true>(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T *a = mf_cuda_ptr<T>(c->in[0]), *b = backward ? mf_cuda_ptr<T>(c->in[1]) : nullptr;
    T *o = mf_cuda_ptr<T>(c->out);
    if (inner == 1) {
      dim3 threads;
      unsigned blocks;
      row_shape(outer, n, &threads, &blocks);
      softmax_rows_kernel<T><<<blocks, threads, 0, s>>>((int)op, o, a, b, outer, n);
    } else {
      softmax_cols_kernel<T><<<mf_cuda_blocks(outer * inner), MF_CUDA_THREADS, 0, s>>>(
          (int)op, o, a, b, outer, n, inner);
    }
  });
  return mf_cuda_launched(dev, name);
}
