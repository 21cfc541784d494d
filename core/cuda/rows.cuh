/* rows.cuh — the row reductions of the per-row kernels (softmax.cu, loss.cu): blocks of (tx, ry)
 * threads, ry rows per block and tx threads (a power of two, 32 .. ROW_THREADS) along each row,
 * the values of a row merged in shared memory. row_shape picks (tx, ry) and the block count for
 * rows of n entries: about n / 2 threads per row, so that a classifier's (50, 10) logits take 7
 * blocks of 8 rows, not 50 blocks of 256 threads with 246 idle. A kernel's rows past the end (the
 * last block's) run with no entries, their threads still taking part in row_all's barriers.
 */
#ifndef MF_CUDA_ROWS_CUH
#define MF_CUDA_ROWS_CUH

#include "cuda/common.cuh"

#define ROW_THREADS 256

/* max that propagates NaN (a NaN anywhere in a row gives NaN for the row, as on the CPU) */
template <class A> __device__ __forceinline__ A nanmax(A a, A b) {
  return (b > a || b != b) ? b : a;
}

/* reduce v over each row's blockDim.x threads: max (is_max) or sum; every thread of the block
 * calls it (sh: ROW_THREADS entries of shared memory) */
template <class A> __device__ A row_all(A v, bool is_max, A *sh) {
  int t = threadIdx.x, b = threadIdx.y * blockDim.x;
  sh[b + t] = v;
  __syncthreads();
  for (int h = blockDim.x / 2; h > 0; h /= 2) {
    if (t < h) sh[b + t] = is_max ? nanmax(sh[b + t], sh[b + t + h]) : sh[b + t] + sh[b + t + h];
    __syncthreads();
  }
  A r = sh[b];
  __syncthreads();
  return r;
}

/* Over a row's len entries x: *m = their max (NaN propagating); returns sum exp(x - *m), in A. */
template <class A, class T> __device__ A row_max_sumexp(const T *x, int64_t len, A *sh, A *m) {
  A mx = -INFINITY, s = 0;
  for (int64_t k = threadIdx.x; k < len; k += blockDim.x) mx = nanmax(mx, (A)x[k]);
  mx = row_all(mx, true, sh);
  for (int64_t k = threadIdx.x; k < len; k += blockDim.x) s += exp((A)x[k] - mx);
  *m = mx;
  return row_all(s, false, sh);
}

/* the launch shape for `rows` rows of n entries */
static inline void row_shape(int64_t rows, int64_t n, dim3 *threads, unsigned *blocks) {
  int tx = 32;
  while (tx < ROW_THREADS && tx < (n + 1) / 2) tx *= 2;
  int ry = ROW_THREADS / tx;
  int64_t rb = (rows + ry - 1) / ry;
  *threads = dim3(tx, ry);
  *blocks = (unsigned)(rb < 65535 ? rb : 65535);
}

#endif
