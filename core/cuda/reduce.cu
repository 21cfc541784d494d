/* reduce.cu — the CUDA reduction kernel: SUM PROD MAX MIN ARGMAX ARGMIN MEAN VAR of a contiguous
 * input viewed as (outer, n, inner) = ip[0..2] into a contiguous (outer, inner) output; VAR's
 * correction is ip[3] (see internal.h and ops_reduce.c). The results are cpu/reduce.c's: float
 * sums and products accumulate in double, integer ones wrap modulo 2^64 (int64 results), MAX/MIN
 * propagate NaN, ARGMAX/ARGMIN give the first extreme with NaN counting as extreme, VAR is two-pass
 * in double divided by max(n - correction, 0). Every dtype, float16/bfloat16 included. The
 * output's dtype is the one ops_reduce.c made it with (its result_dtype), as for the CPU kernel.
 *
 * Two layouts, each a 256-thread block whose threads fold elements into states (a sum, or a value
 * and its index) that are then merged in shared memory:
 * - inner == 1 (the last dim): blocks of (tx, ry) threads, ry rows per block, tx threads striding
 *   along each row (tx = 32 .. 256, about n / 2, so a short row does not idle a whole block);
 *   a warp reads consecutive elements of one row.
 * - inner > 1: blocks of (32, ny) threads over 32 neighbouring outputs (columns): the 32 threads
 *   of a warp read 32 neighbouring columns of one row k (coalesced), the ny warps split n
 *   (k = y, y + ny, ...), so a (50, 1024) batch sum is 32 blocks of 7 loads a thread, not 1024
 *   threads of 50 serial loads.
 * When the outputs alone give too few blocks to fill the GPU (about 1024 blocks of 256 threads on
 * an H100) and n is long, n is also split over gridDim.y = parts blocks (interleaved, so loads stay
 * coalesced): each block writes its state to a scratch (m outputs x parts states) and a second
 * launch merges each output's parts (reduce_parts_kernel) and stores it. So a whole-tensor sum of
 * 10^8 floats runs on 1024 blocks instead of one. The training step's reductions (bias gradients
 * over (50*32, 784), (50*64, 196), (50, 32|64|1024|10), the loss's mean over 50) take one launch.
 * Merging in a different order than the CPU's changes float sums by rounding only (accumulated in
 * double); MAX/MIN/ARG* merge states by (NaN, value, index), so the result is the CPU's exactly.
 * VAR keeps the simpler kernels: one block per row, or one thread per output (not in a training
 * step's path; a whole-tensor var is still one block).
 */
#include <math.h>

#include "cuda/kernels.h"

#define RTHREADS 256
#define NO_INDEX INT64_MAX /* an empty extreme state */
#define FILL_BLOCKS 1024   /* blocks of RTHREADS that fill an H100 (132 SMs x 8) */
#define PART_WORK 16       /* at least this many elements per thread in each part of a split n */
#define MAX_PARTS 1024

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
    if constexpr (K == MF_K_HALF)
      return (double)(float)x;
    else if constexpr (FLT)
      return (double)x;
    else if constexpr (K == MF_K_SINT)
      return (uint64_t)(int64_t)x;
    else
      return (uint64_t)x;
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
    if (is_arg)
      ((int64_t *)out)[j] = s.idx;
    else
      ((T *)out)[j] = (T)s.v;
  }
};

/* Merges the states of groups of len threads (len a power of two): thread q of a group holds v,
 * its slot is sh[base + q * step]. Every thread of the block calls it (it synchronises); the
 * group's result is returned to each of its threads. */
template <class S, class Op>
__device__ S group_merge(const Op &op, S v, S *sh, int q, int len, int base, int step) {
  sh[base + q * step] = v;
  __syncthreads();
  for (int h = len / 2; h > 0; h /= 2) {
    if (q < h) sh[base + q * step] = op.merge(sh[base + q * step], sh[base + (q + h) * step]);
    __syncthreads();
  }
  S r = sh[base];
  __syncthreads();
  return r;
}

/* inner == 1: block (tx, ry) = ry rows of tx threads; grid (row blocks, parts). With part, the
 * state of row r's part blockIdx.y goes to part[r * parts + blockIdx.y], else the result to out. */
template <class T, class Op, class S>
__global__ void reduce_rows_kernel(Op op, const T *x, void *out, S *part, int64_t outer,
                                   int64_t n) {
  __shared__ S sh[RTHREADS];
  const int tx = threadIdx.x, ty = threadIdx.y, parts = gridDim.y;
  const int64_t stride = (int64_t)parts * blockDim.x;
  for (int64_t r0 = (int64_t)blockIdx.x * blockDim.y; r0 < outer;
       r0 += (int64_t)gridDim.x * blockDim.y) {
    int64_t r = r0 + ty;
    S s = op.init();
    if (r < outer) {
      const T *row = x + r * n;
      for (int64_t k = (int64_t)blockIdx.y * blockDim.x + tx; k < n; k += stride)
        s = op.step(s, row[k], k);
    }
    s = group_merge(op, s, sh, tx, blockDim.x, ty * blockDim.x, 1);
    if (tx == 0 && r < outer) {
      if (part)
        part[r * parts + blockIdx.y] = s;
      else
        op.store(out, r, s, n, 0);
    }
  }
}

/* inner > 1: block (32, ny) over 32 neighbouring outputs j = o * inner + i, the ny warps taking
 * k = y, y + ny, ... (with parts, offset by blockIdx.y * ny and striding parts * ny) */
template <class T, class Op, class S>
__global__ void reduce_cols_kernel(Op op, const T *x, void *out, S *part, int64_t outer, int64_t n,
                                   int64_t inner) {
  __shared__ S sh[RTHREADS];
  const int tx = threadIdx.x, ty = threadIdx.y, parts = gridDim.y;
  const int64_t m = outer * inner, stride = (int64_t)parts * blockDim.y;
  for (int64_t j0 = (int64_t)blockIdx.x * blockDim.x; j0 < m;
       j0 += (int64_t)gridDim.x * blockDim.x) {
    int64_t j = j0 + tx;
    S s = op.init();
    if (j < m) {
      int64_t o = j / inner, i = j - o * inner;
      const T *p = x + o * n * inner + i;
      for (int64_t k = (int64_t)blockIdx.y * blockDim.y + ty; k < n; k += stride)
        s = op.step(s, p[k * inner], k);
    }
    s = group_merge(op, s, sh, ty, blockDim.y, tx, blockDim.x);
    if (ty == 0 && j < m) {
      if (part)
        part[j * parts + blockIdx.y] = s;
      else
        op.store(out, j, s, n, 0);
    }
  }
}

/* the second launch of a split n: output j merges part[j * parts .. + parts), one block each */
template <class Op, class S>
__global__ void reduce_parts_kernel(Op op, const S *part, void *out, int64_t m, int parts,
                                    int64_t n) {
  __shared__ S sh[RTHREADS];
  for (int64_t j = blockIdx.x; j < m; j += gridDim.x) {
    S s = op.init();
    for (int q = threadIdx.x; q < parts; q += blockDim.x) s = op.merge(s, part[j * parts + q]);
    s = group_merge(op, s, sh, threadIdx.x, blockDim.x, 0, 1);
    if (threadIdx.x == 0) op.store(out, j, s, n, 0);
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
  const int t = threadIdx.x, nt = blockDim.x;
  for (int64_t r = blockIdx.x; r < outer; r += gridDim.x) {
    const T *row = x + r * n;
    double s = 0;
    for (int64_t k = t; k < n; k += nt) s += (double)(typename mf_acc<T>::type)row[k];
    double mean = group_merge(add, s, sh, t, nt, 0, 1) / (double)n;
    double m2 = 0;
    for (int64_t k = t; k < n; k += nt) {
      double d = (double)(typename mf_acc<T>::type)row[k] - mean;
      m2 += d * d;
    }
    m2 = group_merge(add, m2, sh, t, nt, 0, 1);
    if (t == 0) {
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

/* the power of two in [lo, hi] nearest above v */
static int pow2_in(int64_t v, int lo, int hi) {
  int p = lo;
  while (p < hi && p < v) p *= 2;
  return p;
}

/* how many parts to split n into when `blocks` blocks (each reducing `per` elements of n per
 * step) leave the GPU idle; 1 when not worth a second launch */
static int parts_for(int64_t blocks, int64_t n, int64_t per) {
  if (blocks >= FILL_BLOCKS) return 1;
  int64_t by_work = n / (per * PART_WORK), by_fill = (FILL_BLOCKS + blocks - 1) / blocks;
  int64_t p = by_work < by_fill ? by_work : by_fill;
  if (p > MAX_PARTS) p = MAX_PARTS;
  return p < 2 ? 1 : (int)p;
}

template <class T, class Op>
static mf_status launch(mf_device *dev, cudaStream_t s, const char *name, const Op &op, const T *x,
                        void *out, int64_t outer, int64_t n, int64_t inner) {
  using S = decltype(op.init());
  int64_t m = outer * inner;
  dim3 block, grid;
  if (inner == 1) {
    int tx = pow2_in((n + 1) / 2, 32, RTHREADS), ry = RTHREADS / tx;
    int64_t blocks = (outer + ry - 1) / ry;
    block = dim3(tx, ry);
    grid = dim3((unsigned)(blocks < 65535 ? blocks : 65535), parts_for(blocks, n, tx));
  } else {
    int ny = 1;
    while (ny < RTHREADS / 32 && 2 * ny <= n) ny *= 2;
    int64_t blocks = (m + 31) / 32;
    block = dim3(32, ny);
    grid = dim3((unsigned)(blocks < (1 << 20) ? blocks : (1 << 20)), parts_for(blocks, n, ny));
  }
  int parts = (int)grid.y;
  S *part = nullptr;
  size_t part_bytes = 0;
  if (parts > 1) {
    part_bytes = (size_t)m * parts * sizeof(S);
    part = (S *)mf_cuda_scratch(dev, part_bytes);
    if (!part) return MF_ERR_MEMORY; /* the allocator's message says how much */
  }
  if (inner == 1)
    reduce_rows_kernel<T, Op, S><<<grid, block, 0, s>>>(op, x, out, part, outer, n);
  else
    reduce_cols_kernel<T, Op, S><<<grid, block, 0, s>>>(op, x, out, part, outer, n, inner);
  if (part) {
    reduce_parts_kernel<Op, S>
        <<<(unsigned)(m < 65535 ? m : 65535), pow2_in(parts, 32, RTHREADS), 0, s>>>(op, part, out,
                                                                                    m, parts, n);
    mf_cuda_scratch_free(dev, part, part_bytes); /* the stream orders its reuse after these */
  }
  return mf_cuda_launched(dev, name);
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
  mf_status st = MF_OK;
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
      st = mf_cuda_launched(dev, name);
    } else if (extreme) {
      ExtOp<T, K> e{op == MF_OP_MAX || op == MF_OP_ARGMAX,
                    op == MF_OP_ARGMAX || op == MF_OP_ARGMIN};
      st = launch<T>(dev, s, name, e, xp, out, outer, n, inner);
    } else {
      SumOp<T, K> e{(int)op};
      st = launch<T>(dev, s, name, e, xp, out, outer, n, inner);
    }
  });
  if (!ok) return mf_fail(MF_ERR_DTYPE, "%s: bad dtype %d", name, (int)dt);
  return st;
}
