/* gather.cu — GATHER and SCATTER_ADD on the GPU, with cpu/gather.c's meaning:
 *   gather       out[i..] = x[i.. with i_dim replaced by index[i..]]   (any dtype: moved as bytes)
 *   scatter_add  out = 0; out[i.. with i_dim replaced by index[i..]] += src[i..]   (not bool)
 * Calls (ops_nn.c): GATHER in[0] = x, in[1] = index (int64, x's ndim), out has index's shape,
 * ip[1] = who asked (MF_GATHER_BY_*: the name a late error gives);
 * SCATTER_ADD in[0] = index, in[1] = src (index's shape), out zeroed here; ip[0] = dim, ip[2] =
 * base: the index's values count from it (0, or 1 for Lua's positions). All contiguous.
 * index_select on the GPU is a gather (ops_index.c).
 *
 * One thread per index element. scatter_add adds with atomics (float16/bfloat16/float/double/
 * int32 natively, int64 as unsigned 64-bit two's complement, uint8 by compare-and-swap on its
 * 32-bit word), so float sums may be ordered differently from the CPU's. An index outside
 * [0, size of dim) is never followed (gather writes 0 there): the kernel records the first one in
 * the device's index record and the call returns without waiting; the next synchronisation
 * reports it (transfer.cu), or the call itself under CUDA_LAUNCH_BLOCKING=1.
 */
#include "cuda/kernels.h"

typedef struct index_geom {
  int nd, dim;
  int64_t ishape[MF_MAX_DIMS];  /* index (and src, out of gather) shape */
  int64_t dstride[MF_MAX_DIMS]; /* element strides of the indexed tensor (x, or scatter's out) */
  int64_t dsize;                /* its size along dim */
  int64_t base;                 /* the index's values count from it (0 or 1) */
  int64_t who;                  /* the caller the index record names: MF_GATHER_BY_* */
} index_geom;

/* the indexed tensor's element offset for index element i holding value v */
__device__ __forceinline__ int64_t target(const index_geom &g, int64_t i, int64_t v) {
  int64_t off = 0;
  for (int d = g.nd - 1; d >= 0; d--) {
    int64_t q = i / g.ishape[d], r = i - q * g.ishape[d];
    i = q;
    off += (d == g.dim ? v : r) * g.dstride[d];
  }
  return off;
}

/* the first bad index seen into the record */
__device__ __forceinline__ void report(unsigned long long *rec, const index_geom &g, int64_t v) {
  mf_cuda_report_index(rec, v, g.dsize, g.dim, g.who, g.base);
}

template <class W>
__global__ void gather_kernel(W *out, const W *x, const int64_t *index, index_geom g, int64_t n,
                              unsigned long long *bad) {
  MF_GRID_LOOP(i, n) {
    int64_t v = index[i];
    if (v < g.base || v - g.base >= g.dsize) { /* v - base: no overflow once v >= base */
      report(bad, g, v);
      out[i] = W(0);
      continue;
    }
    out[i] = x[target(g, i, v - g.base)];
  }
}

/* atomic out += v for each type */
template <class T> __device__ __forceinline__ void atomic_add(T *p, T v) { atomicAdd(p, v); }
template <> __device__ __forceinline__ void atomic_add<int64_t>(int64_t *p, int64_t v) {
  atomicAdd((unsigned long long *)p, (unsigned long long)v);
}
template <> __device__ __forceinline__ void atomic_add<uint8_t>(uint8_t *p, uint8_t v) {
  unsigned int *word = (unsigned int *)((uintptr_t)p & ~(uintptr_t)3);
  unsigned int shift = ((unsigned int)((uintptr_t)p & 3)) * 8u;
  unsigned int old = *word, assumed;
  do {
    assumed = old;
    unsigned int byte = ((assumed >> shift) + v) & 0xffu;
    old = atomicCAS(word, assumed, (assumed & ~(0xffu << shift)) | (byte << shift));
  } while (old != assumed);
}

template <class T>
__global__ void scatter_add_kernel(T *out, const T *src, const int64_t *index, index_geom g,
                                   int64_t n, unsigned long long *bad) {
  MF_GRID_LOOP(i, n) {
    int64_t v = index[i];
    if (v < g.base || v - g.base >= g.dsize) {
      report(bad, g, v);
      continue;
    }
    atomic_add(out + target(g, i, v - g.base), src[i]);
  }
}

template <class W>
static void launch_gather(cudaStream_t s, const mf_call *c, const index_geom &g, int64_t n,
                          unsigned long long *bad) {
  gather_kernel<W><<<mf_cuda_blocks(n), MF_CUDA_THREADS, 0, s>>>(
      mf_cuda_ptr<W>(c->out), mf_cuda_ptr<W>(c->in[0]), mf_cuda_ptr<int64_t>(c->in[1]), g, n, bad);
}

/* the types scatter_add adds (all but bool), each once */
template <class F> static bool visit_addable(mf_dtype dt, F &&f) {
  switch (dt) {
  case MF_F32: f((float *)nullptr); return true;
  case MF_F64: f((double *)nullptr); return true;
  case MF_I32: f((int32_t *)nullptr); return true;
  case MF_I64: f((int64_t *)nullptr); return true;
  case MF_U8: f((uint8_t *)nullptr); return true;
  case MF_F16: f((__half *)nullptr); return true;
  case MF_BF16: f((__nv_bfloat16 *)nullptr); return true;
  default: return false;
  }
}

mf_status mf_cuda_gather(mf_device *dev, const mf_call *c) {
  bool scatter = c->op == MF_OP_SCATTER_ADD;
  const char *name = scatter ? "scatter_add" : "gather";
  if (!c->out || c->nin < 2 || !c->in[0] || !c->in[1] || (c->op != MF_OP_GATHER && !scatter))
    return mf_fail(MF_ERR_ARG, "%s: malformed kernel call", name);
  const mf_tensor *index = scatter ? c->in[0] : c->in[1];
  const mf_tensor *data = scatter ? c->out : c->in[0];
  const mf_tensor *src = scatter ? c->in[1] : c->in[0];
  mf_dtype dt = c->out->dtype;
  if (index->dtype != MF_I64 || src->dtype != dt || index->ndim != data->ndim ||
      (int)c->ip[0] < 0 || (int)c->ip[0] >= index->ndim)
    return mf_fail(MF_ERR_ARG, "%s: malformed kernel call", name);
  if (!mf_is_contiguous(c->out) || !mf_is_contiguous(c->in[0]) || !mf_is_contiguous(c->in[1]))
    return mf_fail(MF_ERR_ARG, "%s: the GPU kernel takes contiguous tensors", name);
  if (scatter && dt == MF_BOOL)
    return mf_fail(MF_ERR_DTYPE, "%s: cannot add %s values", name, mf_dtype_name(dt));
  index_geom g = {};
  g.nd = index->ndim;
  g.dim = (int)c->ip[0];
  for (int d = 0; d < g.nd; d++) g.ishape[d] = index->shape[d];
  int64_t st = 1;
  for (int d = data->ndim - 1; d >= 0; d--) {
    g.dstride[d] = st;
    st *= data->shape[d];
  }
  g.dsize = data->shape[g.dim];
  g.base = c->ip[2];
  g.who = scatter ? (int64_t)MF_GATHER_BY_SCATTER_ADD : c->ip[1];
  int64_t n = mf_numel(index);

  MF_TRY(mf_cuda_enter(dev));
  cudaStream_t s = mf_cuda_stream(dev);
  if (scatter)
    MF_TRY(mf_cuda_check(
        dev,
        cudaMemsetAsync(mf_cuda_ptr(c->out), 0, (size_t)mf_numel(c->out) * mf_dtype_size(dt), s),
        name));
  if (n == 0) return MF_OK;
  unsigned long long *bad = mf_cuda_index_record(dev);
  if (!scatter) {
    switch (mf_dtype_size(dt)) {
    case 1: launch_gather<uint8_t>(s, c, g, n, bad); break;
    case 2: launch_gather<uint16_t>(s, c, g, n, bad); break;
    case 4: launch_gather<uint32_t>(s, c, g, n, bad); break;
    default: launch_gather<uint64_t>(s, c, g, n, bad); break;
    }
  } else {
    bool ok = visit_addable(dt, [&](auto *tp) {
      using T = typename std::remove_pointer<decltype(tp)>::type;
      scatter_add_kernel<T><<<mf_cuda_blocks(n), MF_CUDA_THREADS, 0, s>>>(
          mf_cuda_ptr<T>(c->out), mf_cuda_ptr<T>(c->in[1]), mf_cuda_ptr<int64_t>(c->in[0]), g, n,
          bad);
    });
    if (!ok) return mf_fail(MF_ERR_DTYPE, "%s: cannot add %s values", name, mf_dtype_name(dt));
  }
  MF_TRY(mf_cuda_launched(dev, name));
  return mf_cuda_index_launched(dev);
}
