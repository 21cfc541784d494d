/* loss.cu — CROSS_ENTROPY and its backward on the GPU (float32, float64, float16, bfloat16: one
 * template; the halves computed in float), with cpu/loss.c's meaning over the rows of logits
 * x (N, C):
 *   forward   loss_i = log s_i - (1 - eps)(x[i, t_i] - m_i) - eps (mean_j x_ij - m_i),
 *             lse_i = m_i + log s_i   (m_i the row's max, s_i = sum_j exp(x_ij - m_i))
 *   backward  dx_ij = g_i (exp(x_ij - lse_i) - (1 - eps)[j == t_i] - eps / C)
 * The forward is a row kernel (rows.cuh: a group of threads per row); the backward one thread per
 * element. A class index outside base .. base + C - 1 gives a NaN loss and goes into the
 * device's index record (the next synchronisation reports it, as gather.cu's do).
 */
#include <math.h>

#include "cuda/kernels.h"
#include "cuda/rows.cuh"

template <class T>
__global__ void ce_fwd_kernel(T *loss, T *lse, const T *x, const int64_t *t, int64_t N, int64_t C,
                              int64_t base, double eps, unsigned long long *bad) {
  using A = typename mf_acc<T>::type;
  __shared__ A sh[ROW_THREADS];
  for (int64_t r0 = (int64_t)blockIdx.x * blockDim.y; r0 < N;
       r0 += (int64_t)gridDim.x * blockDim.y) {
    int64_t r = r0 + threadIdx.y, len = r < N ? C : 0;
    if (r >= N) r = r0;
    const T *xr = x + r * C;
    A m, s = row_max_sumexp(xr, len, sh, &m), sum = 0;
    if (eps != 0) {
      for (int64_t k = threadIdx.x; k < len; k += blockDim.x) sum += (A)xr[k];
      sum = row_all(sum, false, sh);
    }
    if (threadIdx.x == 0 && len > 0) {
      int64_t v = t[r];
      A ls = log(s), out;
      if (v >= base && v - base < C) {
        out = ls - (A)(1 - eps) * ((A)xr[v - base] - m);
      } else {
        mf_cuda_report_index(bad, v, C, 1, MF_GATHER_BY_CROSS_ENTROPY, base);
        out = (A)NAN;
      }
      if (eps != 0) out -= (A)eps * (sum / (A)C - m);
      loss[r] = (T)out;
      lse[r] = (T)(m + ls);
    }
  }
}

template <class T>
__global__ void ce_bwd_kernel(T *dx, const T *x, const int64_t *t, const T *lse, const T *g,
                              int64_t gstride, int64_t N, int64_t C, int64_t base, double eps) {
  using A = typename mf_acc<T>::type;
  A off = (A)(eps / (double)C), on = (A)(1 - eps);
  MF_GRID_LOOP(q, N * C) {
    int64_t i = q / C, k = q - i * C;
    A gi = (A)g[i * gstride];
    A d = exp((A)x[q] - (A)lse[i]) - off;
    if (t[i] == k + base) d -= on;
    dx[q] = (T)(gi * d);
  }
}

mf_status mf_cuda_cross_entropy(mf_device *dev, const mf_call *c) {
  const char *name = mf_op_name(c->op);
  bool bwd = c->op == MF_OP_CROSS_ENTROPY_BACKWARD;
  if (!c->out || !c->in[0] || !c->in[1] || (bwd ? !c->in[2] || !c->in[3] : !c->out2))
    return mf_fail(MF_ERR_ARG, "%s: malformed kernel call", name);
  mf_dtype dt = c->out->dtype;
  if (dt != MF_F32 && dt != MF_F64 && dt != MF_F16 && dt != MF_BF16)
    return mf_fail(MF_ERR_DTYPE, "%s: takes float32, float64, float16 or bfloat16 logits", name);
  int64_t N = c->ip[0], C = c->ip[1], base = c->ip[2];
  double eps = c->p[0];
  if (N * C == 0) return MF_OK;
  MF_TRY(mf_cuda_enter(dev));
  cudaStream_t s = mf_cuda_stream(dev);
  unsigned long long *bad = bwd ? nullptr : mf_cuda_index_record(dev);
  mf_cuda_visit_float<true>(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T *x = mf_cuda_ptr<T>(c->in[0]);
    const int64_t *t = mf_cuda_ptr<int64_t>(c->in[1]);
    if (bwd) {
      ce_bwd_kernel<T><<<mf_cuda_blocks(N * C), MF_CUDA_THREADS, 0, s>>>(
          mf_cuda_ptr<T>(c->out), x, t, mf_cuda_ptr<T>(c->in[2]), mf_cuda_ptr<T>(c->in[3]),
          c->ip[4], N, C, base, eps);
    } else {
      dim3 threads;
      unsigned blocks;
      row_shape(N, C, &threads, &blocks);
      ce_fwd_kernel<T><<<blocks, threads, 0, s>>>(mf_cuda_ptr<T>(c->out), mf_cuda_ptr<T>(c->out2),
                                                  x, t, N, C, base, eps, bad);
    }
  });
  MF_TRY(mf_cuda_launched(dev, name));
  return bwd ? MF_OK : mf_cuda_index_launched(dev);
}
