/* fill.cu — the CUDA kernels that move and make data: COPY (strided on both sides, every dtype
 * to every dtype, the conversions of cpu/fill.c), FILL (any view), ARANGE, RAND/RANDN and the
 * dropout mask (Philox 4x32-10 with random.c's numbering, so a seed gives the same numbers as on
 * the CPU: rand and the dropout mask bit for bit, randn to the rounding of log/sqrt/sin/cos), and
 * WHERE.
 */
#include <math.h>

#include "cuda/kernels.h"
#include "philox_math.h"

/* ---- copy ------------------------------------------------------------------------------------ */

template <class TI, int KI, class TO, int KO>
__global__ void copy_kernel(TO *out, const TI *in, mf_offsets<2> oc, int64_t n) {
  MF_GRID_LOOP(i, n) {
    int64_t off[2];
    oc.get(i, off);
    out[off[0]] = mf_cvt<TO, KO, TI, KI>(in[off[1]]);
  }
}

/* same dtype: moves of 1, 2, 4 or 8 bytes */
template <class W> __global__ void move_kernel(W *out, const W *in, mf_offsets<2> oc, int64_t n) {
  MF_GRID_LOOP(i, n) {
    int64_t off[2];
    oc.get(i, off);
    out[off[0]] = in[off[1]];
  }
}

template <class W>
static void launch_move(cudaStream_t s, void *o, const void *in, const mf_offsets<2> &oc,
                        int64_t n) {
  move_kernel<W><<<mf_cuda_blocks(n), MF_CUDA_THREADS, 0, s>>>((W *)o, (const W *)in, oc, n);
}

mf_status mf_cuda_copy(mf_device *dev, const mf_call *c) {
  if (!c->out || c->nin < 1 || !c->in[0]) return mf_fail(MF_ERR_ARG, "copy: missing operand");
  const mf_tensor *src = c->in[0], *dst = c->out;
  if (src->storage->device != dev || dst->storage->device != dev)
    return mf_fail(MF_ERR_DEVICE, "copy: both tensors must be on %s", dev->name);
  int64_t n = mf_numel(dst);
  if (n == 0) return MF_OK;
  MF_TRY(mf_cuda_enter(dev));
  cudaStream_t s = mf_cuda_stream(dev);
  void *o = mf_cuda_ptr(dst);
  const void *in = mf_cuda_ptr(src);
  size_t es = mf_dtype_size(dst->dtype);
  if (src->dtype == dst->dtype && mf_is_contiguous(src) && mf_is_contiguous(dst) &&
      mf_numel(src) == n) {
    if (o == in) return MF_OK;
    return mf_cuda_check(dev, cudaMemcpyAsync(o, in, (size_t)n * es, cudaMemcpyDeviceToDevice, s),
                         "copy");
  }
  const mf_tensor *ops[2] = {dst, src};
  mf_offsets<2> oc;
  MF_TRY(mf_cuda_offsets<2>("copy", ops, &oc));
  if (src->dtype == dst->dtype) {
    switch (es) {
    case 1: launch_move<uint8_t>(s, o, in, oc, n); break;
    case 2: launch_move<uint16_t>(s, o, in, oc, n); break;
    case 4: launch_move<uint32_t>(s, o, in, oc, n); break;
    default: launch_move<uint64_t>(s, o, in, oc, n); break;
    }
    return mf_cuda_launched(dev, "copy");
  }
  bool ok = false;
  mf_cuda_visit(src->dtype, [&](auto ti) {
    using TI = typename decltype(ti)::type;
    constexpr int KI = decltype(ti)::kind;
    ok = mf_cuda_visit(dst->dtype, [&](auto to) {
      using TO = typename decltype(to)::type;
      constexpr int KO = decltype(to)::kind;
      copy_kernel<TI, KI, TO, KO>
          <<<mf_cuda_blocks(n), MF_CUDA_THREADS, 0, s>>>((TO *)o, (const TI *)in, oc, n);
    });
  });
  if (!ok)
    return mf_fail(MF_ERR_DTYPE, "copy: bad dtypes %d -> %d", (int)src->dtype, (int)dst->dtype);
  return mf_cuda_launched(dev, "copy");
}

/* ---- fill and arange ------------------------------------------------------------------------- */

template <class T, int K>
__global__ void fill_kernel(T *out, double v, mf_offsets<1> oc, int64_t n) {
  T x = mf_cvt<T, K, double, MF_K_FLT>(v);
  MF_GRID_LOOP(i, n) {
    int64_t off[1];
    oc.get(i, off);
    out[off[0]] = x;
  }
}

mf_status mf_cuda_fill(mf_device *dev, const mf_call *c) {
  if (!c->out) return mf_fail(MF_ERR_ARG, "fill: missing output");
  int64_t n = mf_numel(c->out);
  if (n == 0) return MF_OK;
  const mf_tensor *ops[1] = {c->out};
  mf_offsets<1> oc;
  MF_TRY(mf_cuda_offsets<1>("fill", ops, &oc));
  MF_TRY(mf_cuda_enter(dev));
  cudaStream_t s = mf_cuda_stream(dev);
  double v = c->p[0];
  bool ok = mf_cuda_visit(c->out->dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int K = decltype(tag)::kind;
    fill_kernel<T, K>
        <<<mf_cuda_blocks(n), MF_CUDA_THREADS, 0, s>>>(mf_cuda_ptr<T>(c->out), v, oc, n);
  });
  if (!ok) return mf_fail(MF_ERR_DTYPE, "fill: bad dtype %d", (int)c->out->dtype);
  return mf_cuda_launched(dev, "fill");
}

template <class T, int K>
__global__ void arange_kernel(T *out, double start, double step, int64_t n) {
  MF_GRID_LOOP(i, n) out[i] = mf_cvt<T, K, double, MF_K_FLT>(start + (double)i * step);
}

mf_status mf_cuda_arange(mf_device *dev, const mf_call *c) {
  if (!c->out) return mf_fail(MF_ERR_ARG, "arange: missing output");
  if (!mf_is_contiguous(c->out))
    return mf_fail(MF_ERR_ARG, "arange: the output must be contiguous");
  int64_t n = mf_numel(c->out);
  if (n == 0) return MF_OK;
  MF_TRY(mf_cuda_enter(dev));
  cudaStream_t s = mf_cuda_stream(dev);
  bool ok = mf_cuda_visit(c->out->dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int K = decltype(tag)::kind;
    arange_kernel<T, K>
        <<<mf_cuda_blocks(n), MF_CUDA_THREADS, 0, s>>>(mf_cuda_ptr<T>(c->out), c->p[0], c->p[1], n);
  });
  if (!ok) return mf_fail(MF_ERR_DTYPE, "arange: bad dtype %d", (int)c->out->dtype);
  return mf_cuda_launched(dev, "arange");
}

/* ---- Philox and the random kernels ------------------------------------------------------------
 */

/* mf_philox(seed, counter, 0) of random.c, and its uniforms (philox_math.h, shared with the CPU) */
__device__ __forceinline__ uint4 philox(uint64_t seed, uint64_t counter) {
  uint32_t w[4];
  mf_philox_block(seed, counter, 0, w);
  return make_uint4(w[0], w[1], w[2], w[3]);
}
__device__ __forceinline__ float u24(uint32_t w) { return mf_u24(w); }
__device__ __forceinline__ double u53(uint32_t lo, uint32_t hi) { return mf_u53(lo, hi); }

/* one thread per Philox block: float32 block b holds elements 4b .. 4b+3 */
__global__ void random_f32_kernel(float *out, int64_t n, uint64_t seed, uint64_t offset,
                                  bool normal) {
  int64_t nblocks = (n + 3) / 4;
  MF_GRID_LOOP(b, nblocks) {
    uint4 w = philox(seed, offset + (uint64_t)b);
    float v[4];
    if (!normal) {
      v[0] = u24(w.x);
      v[1] = u24(w.y);
      v[2] = u24(w.z);
      v[3] = u24(w.w);
    } else {
      mf_box_muller_f32(w.x, w.y, &v[0], &v[1]); /* the CPU's arithmetic (philox_math.h) */
      mf_box_muller_f32(w.z, w.w, &v[2], &v[3]);
    }
    int64_t i0 = 4 * b;
#pragma unroll
    for (int q = 0; q < 4; q++)
      if (i0 + q < n) out[i0 + q] = v[q];
  }
}

/* float64 block b holds elements 2b, 2b+1 */
__global__ void random_f64_kernel(double *out, int64_t n, uint64_t seed, uint64_t offset,
                                  bool normal) {
  const double two_pi = 6.283185307179586476925286766559;
  int64_t nblocks = (n + 1) / 2;
  MF_GRID_LOOP(b, nblocks) {
    uint4 w = philox(seed, offset + (uint64_t)b);
    double v0, v1;
    if (!normal) {
      v0 = u53(w.x, w.y);
      v1 = u53(w.z, w.w);
    } else {
      double u1 = 1.0 - u53(w.x, w.y), u2 = u53(w.z, w.w);
      double r = sqrt(-2.0 * log(u1)), t = two_pi * u2;
      v0 = r * cos(t);
      v1 = r * sin(t);
    }
    int64_t i0 = 2 * b;
    out[i0] = v0;
    if (i0 + 1 < n) out[i0 + 1] = v1;
  }
}

mf_status mf_cuda_random(mf_device *dev, const mf_call *c) {
  const char *name = c->op == MF_OP_RANDN ? "randn" : "rand";
  if (!c->out) return mf_fail(MF_ERR_ARG, "%s: missing output", name);
  if (c->op != MF_OP_RAND && c->op != MF_OP_RANDN)
    return mf_fail(MF_ERR_ARG, "%s: not a random op", mf_op_name(c->op));
  mf_dtype dt = c->out->dtype;
  if (dt != MF_F32 && dt != MF_F64)
    return mf_fail(MF_ERR_DTYPE, "%s: needs a float32 or float64 output, got %s", name,
                   mf_dtype_name(dt));
  if (!mf_is_contiguous(c->out))
    return mf_fail(MF_ERR_ARG, "%s: the output must be contiguous", name);
  int64_t n = mf_numel(c->out);
  if (n == 0) return MF_OK;
  MF_TRY(mf_cuda_enter(dev));
  cudaStream_t s = mf_cuda_stream(dev);
  bool normal = c->op == MF_OP_RANDN;
  if (dt == MF_F32)
    random_f32_kernel<<<mf_cuda_blocks((n + 3) / 4), MF_CUDA_THREADS, 0, s>>>(
        mf_cuda_ptr<float>(c->out), n, c->seed, c->offset, normal);
  else
    random_f64_kernel<<<mf_cuda_blocks((n + 1) / 2), MF_CUDA_THREADS, 0, s>>>(
        mf_cuda_ptr<double>(c->out), n, c->seed, c->offset, normal);
  return mf_cuda_launched(dev, name);
}

/* mask[i] = 0 when u_i < p, else 1 / (1 - p); u_i as rand draws it (cpu/gather.c): float32 and
 * the halves (drawn as float32, so a float16 mask drops what a float32 one of the seed drops) */
template <class T>
__global__ void dropout_f32_kernel(T *out, int64_t n, uint64_t seed, uint64_t offset, double p,
                                   float scale) {
  int64_t nblocks = (n + 3) / 4;
  MF_GRID_LOOP(b, nblocks) {
    uint4 w = philox(seed, offset + (uint64_t)b);
    uint32_t ws[4] = {w.x, w.y, w.z, w.w};
    int64_t i0 = 4 * b;
#pragma unroll
    for (int q = 0; q < 4; q++)
      if (i0 + q < n) out[i0 + q] = (T)((double)u24(ws[q]) < p ? 0.0f : scale);
  }
}

__global__ void dropout_f64_kernel(double *out, int64_t n, uint64_t seed, uint64_t offset, double p,
                                   double scale) {
  int64_t nblocks = (n + 1) / 2;
  MF_GRID_LOOP(b, nblocks) {
    uint4 w = philox(seed, offset + (uint64_t)b);
    int64_t i0 = 2 * b;
    out[i0] = u53(w.x, w.y) < p ? 0.0 : scale;
    if (i0 + 1 < n) out[i0 + 1] = u53(w.z, w.w) < p ? 0.0 : scale;
  }
}

mf_status mf_cuda_dropout_mask(mf_device *dev, const mf_call *c) {
  if (!c->out || c->op != MF_OP_DROPOUT_MASK)
    return mf_fail(MF_ERR_ARG, "dropout: malformed kernel call");
  mf_dtype dt = c->out->dtype;
  if (!mf_dtype_is_float(dt))
    return mf_fail(MF_ERR_DTYPE, "dropout: takes a float dtype, got %s", mf_dtype_name(dt));
  if (!mf_is_contiguous(c->out)) return mf_fail(MF_ERR_ARG, "dropout: the mask must be contiguous");
  int64_t n = mf_numel(c->out);
  if (n == 0) return MF_OK;
  MF_TRY(mf_cuda_enter(dev));
  cudaStream_t s = mf_cuda_stream(dev);
  double p = c->p[0], scale = p < 1 ? 1 / (1 - p) : 0;
  if (dt == MF_F64) {
    dropout_f64_kernel<<<mf_cuda_blocks((n + 1) / 2), MF_CUDA_THREADS, 0, s>>>(
        mf_cuda_ptr<double>(c->out), n, c->seed, c->offset, p, scale);
  } else {
    mf_cuda_visit_float<true>(dt, [&](auto tag) {
      using T = typename decltype(tag)::type;
      dropout_f32_kernel<T><<<mf_cuda_blocks((n + 3) / 4), MF_CUDA_THREADS, 0, s>>>(
          mf_cuda_ptr<T>(c->out), n, c->seed, c->offset, p, (float)scale);
    });
  }
  return mf_cuda_launched(dev, "dropout");
}

/* ---- where ------------------------------------------------------------------------------------
 */

template <class W>
__global__ void where_kernel(W *out, const uint8_t *m, const W *a, const W *b, mf_offsets<4> oc,
                             int64_t n) {
  MF_GRID_LOOP(i, n) {
    int64_t off[4];
    oc.get(i, off);
    out[off[0]] = m[off[1]] ? a[off[2]] : b[off[3]];
  }
}

template <class W>
static void launch_where(cudaStream_t s, const mf_call *c, const mf_offsets<4> &oc, int64_t n) {
  where_kernel<W><<<mf_cuda_blocks(n), MF_CUDA_THREADS, 0, s>>>(
      mf_cuda_ptr<W>(c->out), mf_cuda_ptr<uint8_t>(c->in[0]), mf_cuda_ptr<W>(c->in[1]),
      mf_cuda_ptr<W>(c->in[2]), oc, n);
}

mf_status mf_cuda_where(mf_device *dev, const mf_call *c) {
  if (!c->out || c->nin < 3 || !c->in[0] || !c->in[1] || !c->in[2])
    return mf_fail(MF_ERR_ARG, "where: needs a condition and two operands");
  mf_dtype dt = c->out->dtype;
  if (c->in[0]->dtype != MF_BOOL && c->in[0]->dtype != MF_U8)
    return mf_fail(MF_ERR_DTYPE, "where: the condition must be bool, got %s",
                   mf_dtype_name(c->in[0]->dtype));
  if (c->in[1]->dtype != dt || c->in[2]->dtype != dt)
    return mf_fail(MF_ERR_DTYPE, "where: operands must have the output's dtype %s, got %s and %s",
                   mf_dtype_name(dt), mf_dtype_name(c->in[1]->dtype),
                   mf_dtype_name(c->in[2]->dtype));
  int64_t n = mf_numel(c->out);
  if (n == 0) return MF_OK;
  const mf_tensor *ops[4] = {c->out, c->in[0], c->in[1], c->in[2]};
  mf_offsets<4> oc;
  MF_TRY(mf_cuda_offsets<4>("where", ops, &oc));
  MF_TRY(mf_cuda_enter(dev));
  cudaStream_t s = mf_cuda_stream(dev);
  switch (mf_dtype_size(dt)) {
  case 1: launch_where<uint8_t>(s, c, oc, n); break;
  case 2: launch_where<uint16_t>(s, c, oc, n); break;
  case 4: launch_where<uint32_t>(s, c, oc, n); break;
  default: launch_where<uint64_t>(s, c, oc, n); break;
  }
  return mf_cuda_launched(dev, "where");
}
