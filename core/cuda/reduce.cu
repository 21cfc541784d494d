/* reduce.cu — the CUDA reduction kernel: SUM PROD MAX MIN ARGMAX ARGMIN MEAN VAR of a contiguous
 * input viewed as (outer, n, inner) = ip[0..2] into a contiguous (outer, inner) output; VAR's
 * correction is ip[3] (see internal.h and ops_reduce.c). The results are cpu/reduce.c's: float
 * sums and products accumulate in double, integer ones wrap modulo 2^64 (int64 results), MAX/MIN
 * propagate NaN, ARGMAX/ARGMIN give the first extreme with NaN counting as extreme, VAR is two-pass
 * in double divided by max(n - correction, 0). Every dtype, float16/bfloat16 included. The
 * output's dtype is the one ops_reduce.c made it with (its result_dtype), as for the CPU kernel.
 *
 * Two layouts:
 * - inner == 1 (the last dim): one thread block per output row; the threads stride over the row
 *   and their states are merged in shared memory.
 * - inner > 1: one thread per output; a warp's threads read neighbouring columns, so the loads
 *   along n are coalesced.
 * (First landing: a whole-tensor reduction runs on one block; splitting n over blocks is next.)
 */
#include <math.h>

#include "cuda/kernels.h"

#define RTHREADS 256
#define NO_INDEX INT64_MAX /* an empty extreme state */

template <class T, int K> struct is_flt {
  static constexpr bool value = K == MF_K_FLT || K == MF_K_HALF;
};

/* SUM, PROD, MEAN */
template <class T, int K> struct SumOp {
  static constexpr bool FLT = is_flt<T, K>::value;
  using S = typename std::conditional<FLT, double, uint64_t>::type;
  int op;
  __device__ S init() const { return op == MF_OP_PROD ? (S)1 : (S)0; }
  __device__ S load(T x) const {
    if constexpr (K == MF_K_HALF) return (double)(float)x;
    else if constexpr (FLT) return (double)x;
    else if constexpr (K == MF_K_SINT) return (uint64_t)(int64_t)x;
    else return (uint64_t)x;
  }
  __device__ S merge(S a, S b) const { return op == MF_OP_PROD ? (S)(a * b) : (S)(a + b); }
  __device__ S step(S s, T x, int64_t) const { return merge(s, load(x)); }
  __device__ void store(void *out, int64_t j, S s, int64_t n, int64_t) const {
    if constexpr (FLT) {
      double v = op == MF_OP_MEAN ? s / (double)n : s;
      ((T *)out)[j] = mf_cvt<T, K, double, MF_K_FLT>(v);
    } else {
      ((int64_t *)out)[j] = (int64_t)s;
    }
  }
};

/* MAX, MIN, ARGMAX, ARGMIN */
template <class T, int K> struct ExtOp {
  static constexpr bool FLT = is_flt<T, K>::value;
  using V = typename mf_acc<T>::type;
  struct S {
    V v;
    int64_t idx;
  };
  bool is_max, is_arg;
  __device__ S init() const { return S{V(), NO_INDEX}; }
  __device__ S merge(S a, S b) const {
    if (a.idx == NO_INDEX) return b;
    if (b.idx == NO_INDEX) return a;
    if constexpr (FLT) {
      bool an = a.v != a.v, bn = b.v != b.v;
      if (an || bn) {
        if (an && bn) return a.idx < b.idx ? a : b;
        return an ? a : b;
      }
    }
    if (a.v == b.v) return a.idx < b.idx ? a : b;
    return (a.v > b.v) == is_max ? a : b;
  }
  __device__ S step(S s, T x, int64_t k) const { return merge(s, S{(V)x, k}); }
  __device__ void store(void *out, int64_t j, S s, int64_t, int64_t) const {
    if (is_arg) ((int64_t *)out)[j] = s.idx;
    else ((T *)out)[j] = (T)s.v;
  }
};

/* Merges every thread's state; the result is valid in every thread. sh holds blockDim.x states. */
template <class S, class Op> __device__ S block_merge(const Op &op, S v, S *sh) {
  int t = threadIdx.x;
  sh[t] = v;
  __syncthreads();
  for (int h = blockDim.x / 2; h > 0; h /= 2) {
    if (t < h) sh[t] = op.merge(sh[t], sh[t + h]);
    __syncthreads();
  }
  S r = sh[0];
  __syncthreads();
  return r;
}

/* inner == 1: block per row */
template <class T, class Op>
__global__ void reduce_rows_kernel(Op op, const T *x, void *out, int64_t outer, int64_t n) {
  using S = decltype(op.init());
  __shared__ S sh[RTHREADS];
  for (int64_t r = blockIdx.x; r < outer; r += gridDim.x) {
    const T *row = x + r * n;
    S s = op.init();
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) s = op.step(s, row[k], k);
    s = block_merge(op, s, sh);
    if (threadIdx.x == 0) op.store(out, r, s, n, 0);
  }
}

/* inner > 1: thread per output */
template <class T, class Op>
__global__ void reduce_cols_kernel(Op op, const T *x, void *out, int64_t outer, int64_t n,
                                   int64_t inner) {
  MF_GRID_LOOP(j, outer * inner) {
    int64_t o = j / inner, i = j - o * inner;
    const T *p = x + o * n * inner + i;
    auto s = op.init();
    for (int64_t k = 0; k < n; k++) s = op.step(s, p[k * inner], k);
    op.store(out, j, s, n, 0);
  }
}

/* VAR: two passes in double */
struct AddD {
  __device__ double merge(double a, double b) const { return a + b; }
};

template <class T, int K>
__global__ void var_rows_kernel(const T *x, T *out, int64_t outer, int64_t n, int64_t corr) {
  __shared__ double sh[RTHREADS];
  AddD add;
  for (int64_t r = blockIdx.x; r < outer; r += gridDim.x) {
    const T *row = x + r * n;
    double s = 0;
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) s += (double)(typename mf_acc<T>::type)row[k];
    double mean = block_merge(add, s, sh) / (double)n;
    double m2 = 0;
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
      double d = (double)(typename mf_acc<T>::type)row[k] - mean;
      m2 += d * d;
    }
    m2 = block_merge(add, m2, sh);
    if (threadIdx.x == 0) {
      double div = (double)(n - corr > 0 ? n - corr : 0);
      out[r] = mf_cvt<T, K, double, MF_K_FLT>(m2 / div);
    }
  }
}

template <class T, int K>
__global__ void var_cols_kernel(const T *x, T *out, int64_t outer, int64_t n, int64_t inner,
                                int64_t corr) {
  MF_GRID_LOOP(j, outer * inner) {
    int64_t o = j / inner, i = j - o * inner;
    const T *p = x + o * n * inner + i;
    double s = 0;
    for (int64_t k = 0; k < n; k++) s += (double)(typename mf_acc<T>::type)p[k * inner];
    double mean = s / (double)n, m2 = 0;
    for (int64_t k = 0; k < n; k++) {
      double d = (double)(typename mf_acc<T>::type)p[k * inner] - mean;
      m2 += d * d;
    }
    double div = (double)(n - corr > 0 ? n - corr : 0);
    out[j] = mf_cvt<T, K, double, MF_K_FLT>(m2 / div);
  }
}

template <class T, class Op>
static void launch(cudaStream_t s, const Op &op, const T *x, void *out, int64_t outer, int64_t n,
                   int64_t inner) {
  if (inner == 1) {
    unsigned blocks = (unsigned)(outer < 65535 ? outer : 65535);
    reduce_rows_kernel<T, Op><<<blocks, RTHREADS, 0, s>>>(op, x, out, outer, n);
  } else {
    reduce_cols_kernel<T, Op><<<mf_cuda_blocks(outer * inner), MF_CUDA_THREADS, 0, s>>>(
        op, x, out, outer, n, inner);
  }
}

mf_status mf_cuda_reduce(mf_device *dev, const mf_call *c) {
  mf_op op = c->op;
  const char *name = mf_op_name(op);
  if (op < MF_OP_SUM || op > MF_OP_VAR || !c->out || c->nin < 1 || !c->in[0])
    return mf_fail(MF_ERR_ARG, "%s: not a reduction call", name);
  const mf_tensor *x = c->in[0];
  mf_dtype dt = x->dtype;
  if ((op == MF_OP_MEAN || op == MF_OP_VAR) && !mf_dtype_is_float(dt))
    return mf_fail(MF_ERR_DTYPE, "%s: needs a floating dtype, got %s", name, mf_dtype_name(dt));
  if (!mf_is_contiguous(x) || !mf_is_contiguous(c->out))
    return mf_fail(MF_ERR_ARG, "%s: the kernel takes contiguous tensors", name);
  int64_t outer = c->ip[0], n = c->ip[1], inner = c->ip[2], corr = c->ip[3];
  if (outer * inner == 0) return MF_OK;
  bool extreme = op == MF_OP_MAX || op == MF_OP_MIN || op == MF_OP_ARGMAX || op == MF_OP_ARGMIN;
  if (n == 0 && extreme) return mf_fail(MF_ERR_SHAPE, "%s: cannot reduce an empty dimension", name);
  MF_TRY(mf_cuda_enter(dev));
  cudaStream_t s = mf_cuda_stream(dev);
  void *out = mf_cuda_ptr(c->out);
  bool ok = mf_cuda_visit(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int K = decltype(tag)::kind;
    const T *xp = mf_cuda_ptr<T>(x);
    if (op == MF_OP_VAR) {
      if constexpr (is_flt<T, K>::value) {
        if (inner == 1) {
          unsigned blocks = (unsigned)(outer < 65535 ? outer : 65535);
          var_rows_kernel<T, K><<<blocks, RTHREADS, 0, s>>>(xp, (T *)out, outer, n, corr);
        } else {
          var_cols_kernel<T, K><<<mf_cuda_blocks(outer * inner), MF_CUDA_THREADS, 0, s>>>(
              xp, (T *)out, outer, n, inner, corr);
        }
      }
    } else if (extreme) {
      ExtOp<T, K> e{op == MF_OP_MAX || op == MF_OP_ARGMAX, op == MF_OP_ARGMAX || op == MF_OP_ARGMIN};
      launch<T>(s, e, xp, out, outer, n, inner);
    } else {
      SumOp<T, K> e{(int)op};
      launch<T>(s, e, xp, out, outer, n, inner);
    }
  });
  if (!ok) return mf_fail(MF_ERR_DTYPE, "%s: bad dtype %d", name, (int)dt);
  return mf_cuda_launched(dev, name);
}
