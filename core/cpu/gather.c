/* gather.c — the CPU kernels that index along a dim and the dropout mask:
 *   gather       out[i..] = x[i.. with i_dim replaced by index[i..]]  (torch.gather; any dtype)
 *   scatter_add  out = 0; out[i.. with i_dim replaced by index[i..]] += src[i..]
 *   dropout_mask mask[i] = 0 when u_i < p, else 1 / (1 - p)
 * Tensors are contiguous (ops_nn.c); index has the ndim of x (gather) or out (scatter_add) and
 * is at most as large in every other dim; src has index's shape. Its values count from ip[2] (0,
 * or 1 for Lua's positions). An index outside [base, base + size of dim) fails with MF_ERR_INDEX
 * naming it as given (gather leaves the output unspecified then).
 *
 * Work is split by the "rows" of index in front of dim (outer): scatter_add's rows write disjoint
 * parts of out, so the sums do not depend on the thread count.
 *
 * dropout_mask draws u_i exactly as mf_rand does for the mask's dtype (random.c): float32 element
 * i is word i % 4 of Philox block (offset + i / 4) turned into (w >> 8) * 2^-24; float64 element i
 * takes words 2(i % 2), 2(i % 2) + 1 of block (offset + i / 2) as a 53-bit uniform. A GPU kernel
 * following the same rule gives the same mask for the same seed.
 */
#include <stdatomic.h>
#include <string.h>

#include "cpu/iter.h"
#include "cpu/kernels.h"

/* ---- gather / scatter_add ------------------------------------------------------------------ */

typedef struct index_job {
  int nd, dim;
  int64_t ishape[MF_MAX_DIMS];  /* index (and src) shape */
  int64_t dstride[MF_MAX_DIMS]; /* strides (elements) of the indexed tensor: x, or out */
  int64_t dsize;                /* size of the indexed tensor along dim */
  int64_t base;                 /* the index's values count from it (0 or 1) */
  int64_t rows, n, inner;       /* index as (rows, n, inner): rows = prod of dims < dim */
  const int64_t *index;
  const char *src; /* gather: x; scatter_add: src */
  char *out;
  mf_dtype dt;
  size_t es;
  atomic_int bad, failed; /* an index was out of range; a buffer could not be allocated */
  atomic_llong bad_value; /* that index */
} index_job;

/* Offset in the indexed tensor of index element (r, k=0, e): its dims < dim from r, its dims > dim
 * from e (both decomposed with index's shape), dim left at 0. */
static int64_t base_offset(const index_job *j, int64_t r, int64_t e) {
  int64_t off = 0;
  for (int d = j->nd - 1; d > j->dim; d--) {
    off += (e % j->ishape[d]) * j->dstride[d];
    e /= j->ishape[d];
  }
  for (int d = j->dim - 1; d >= 0; d--) {
    off += (r % j->ishape[d]) * j->dstride[d];
    r /= j->ishape[d];
  }
  return off;
}

/* Offsets of the inner elements e = 0 .. inner-1 (relative to e = 0), into offs. */
static void inner_offsets(const index_job *j, int64_t *offs) {
  for (int64_t e = 0; e < j->inner; e++) offs[e] = base_offset(j, 0, e);
}

/* scatter_add's typed add: out[o] += src[s] */
#define ADD_TYPES(X)                                                                               \
  X(MF_F32, float) X(MF_F64, double) X(MF_I32, int32_t) X(MF_I64, int64_t) X(MF_U8, uint8_t)

static inline void add_at(mf_dtype dt, char *out, int64_t o, const char *src, int64_t s) {
  switch (dt) {
#define ADD_CASE(DT, TY)                                                                           \
  case DT: ((TY *)out)[o] += ((const TY *)src)[s]; break;
    ADD_TYPES(ADD_CASE)
#undef ADD_CASE
  default: break;
  }
}

static void index_run(void *ctx, int64_t b, int64_t e, bool scatter) {
  index_job *j = ctx;
  int64_t stack_offs[256];
  int64_t *offs = j->inner <= 256 ? stack_offs : mf_host_alloc((size_t)j->inner * 8);
  if (!offs) {
    atomic_store(&j->failed, 1);
    return;
  }
  inner_offsets(j, offs);
  int64_t ds = j->dstride[j->dim];
  size_t es = j->es;
  for (int64_t r = b; r < e; r++) {
    int64_t rbase = base_offset(j, r, 0);
    for (int64_t k = 0; k < j->n; k++) {
      int64_t q0 = (r * j->n + k) * j->inner; /* index / src / gather-out element */
      const int64_t *ix = j->index + q0;
      for (int64_t i = 0; i < j->inner; i++) {
        int64_t v = ix[i];
        if (v < j->base || v - j->base >= j->dsize) { /* v - base: no overflow once v >= base */
          atomic_store_explicit(&j->bad_value, (long long)v, memory_order_relaxed);
          atomic_store_explicit(&j->bad, 1, memory_order_relaxed);
          continue;
        }
        v -= j->base;
        int64_t at = rbase + offs[i] + v * ds;
        if (scatter)
          add_at(j->dt, j->out, at, j->src, q0 + i);
        else
          memcpy(j->out + (size_t)(q0 + i) * es, j->src + (size_t)at * es, es);
      }
    }
  }
  if (offs != stack_offs) mf_host_free(offs, (size_t)j->inner * 8);
}

static void gather_run(void *ctx, int64_t b, int64_t e) { index_run(ctx, b, e, false); }
static void scatter_run(void *ctx, int64_t b, int64_t e) { index_run(ctx, b, e, true); }

mf_status mf_cpu_gather(mf_device *dev, const mf_call *c) {
  (void)dev;
  bool scatter = c->op == MF_OP_SCATTER_ADD;
  const char *name = scatter ? "scatter_add" : "gather";
  if (!c->out || c->nin < 2 || (c->op != MF_OP_GATHER && !scatter))
    return mf_fail(MF_ERR_ARG, "%s: malformed kernel call", name);
  const mf_tensor *index = scatter ? c->in[0] : c->in[1];
  const mf_tensor *data = scatter ? c->out : c->in[0]; /* the tensor indexed along dim */
  const mf_tensor *src = scatter ? c->in[1] : c->in[0];
  index_job job, *j = &job;
  memset(j, 0, sizeof *j);
  atomic_init(&j->bad, 0);
  atomic_init(&j->failed, 0);
  atomic_init(&j->bad_value, 0);
  j->nd = index->ndim, j->dim = (int)c->ip[0], j->base = c->ip[2];
  j->index = mf_cpu_ptr(index), j->src = mf_cpu_ptr(src), j->out = mf_cpu_ptr(c->out);
  j->dt = c->out->dtype, j->es = mf_dtype_size(c->out->dtype);
  j->rows = 1, j->inner = 1, j->n = index->shape[j->dim];
  for (int d = 0; d < j->nd; d++) {
    j->ishape[d] = index->shape[d];
    if (d < j->dim) j->rows *= index->shape[d];
    if (d > j->dim) j->inner *= index->shape[d];
  }
  mf_contiguous_strides(data->ndim, data->shape, j->dstride);
  j->dsize = data->shape[j->dim];
  mf_status s = MF_OK;
  if (scatter) {
    bool ok = false;
    switch (j->dt) {
#define OK_CASE(DT, TY)                                                                            \
  case DT: ok = true; break;
      ADD_TYPES(OK_CASE)
#undef OK_CASE
    default: break;
    }
    if (!ok)
      s = mf_fail(MF_ERR_DTYPE, "%s: cannot add %s values", name, mf_dtype_name(j->dt));
    else
      memset(j->out, 0, (size_t)mf_numel(c->out) * j->es);
  }
  if (!s && mf_numel(index) > 0) {
    int64_t per_row = j->n * j->inner;
    mf_parallel_for(j->rows, 16384 / (per_row > 0 ? per_row : 1) + 1,
                    scatter ? scatter_run : gather_run, j);
    if (atomic_load(&j->failed))
      s = mf_fail(MF_ERR_MEMORY, "%s: out of memory", name);
    else if (atomic_load(&j->bad))
      s = mf_fail(MF_ERR_INDEX, "%s: index %lld is out of range for dimension %d of size %lld",
                  name, (long long)atomic_load(&j->bad_value), j->dim + 1, (long long)j->dsize);
  }
  return s;
}

/* ---- dropout mask ---------------------------------------------------------------------------- */

#define LANES 8

/* Philox 4x32-10 (random.c) of blocks offset .. offset + LANES - 1, written as w[4 * lane + word];
 * plain lanes that gcc vectorises. */
static void philox8(uint64_t seed, uint64_t offset, uint32_t *w) {
  uint32_t c0[LANES], c1[LANES], c2[LANES], c3[LANES];
  for (int l = 0; l < LANES; l++) {
    uint64_t ctr = offset + (uint64_t)l;
    c0[l] = (uint32_t)ctr, c1[l] = (uint32_t)(ctr >> 32), c2[l] = c3[l] = 0;
  }
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int r = 0; r < 10; r++) {
    if (r > 0) k0 += 0x9E3779B9u, k1 += 0xBB67AE85u;
    for (int l = 0; l < LANES; l++) {
      uint64_t p0 = (uint64_t)0xD2511F53u * c0[l], p1 = (uint64_t)0xCD9E8D57u * c2[l];
      uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[l] ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3[l] ^ k1;
      c1[l] = (uint32_t)p1, c3[l] = (uint32_t)p0, c0[l] = n0, c2[l] = n2;
    }
  }
  for (int l = 0; l < LANES; l++)
    w[4 * l] = c0[l], w[4 * l + 1] = c1[l], w[4 * l + 2] = c2[l], w[4 * l + 3] = c3[l];
}

typedef struct mask_job {
  void *out;
  int64_t n;
  uint64_t seed, offset;
  double p;
  bool f64;
} mask_job;

/* blocks [b, e) of the mask: float32 block k holds elements 4k .. 4k+3, float64 2k, 2k+1 */
static void mask_run(void *ctx, int64_t b, int64_t e) {
  const mask_job *j = ctx;
  uint32_t w[4 * LANES];
  int per = j->f64 ? 2 : 4;
  double scale = j->p < 1 ? 1 / (1 - j->p) : 0;
  float sf = (float)scale;
  for (int64_t k0 = b; k0 < e; k0 += LANES) {
    philox8(j->seed, j->offset + (uint64_t)k0, w);
    int64_t lanes = e - k0 < LANES ? e - k0 : LANES;
    int64_t i0 = k0 * per, cnt = lanes * per;
    if (cnt > j->n - i0) cnt = j->n - i0;
    if (!j->f64) {
      float *o = (float *)j->out + i0;
      for (int64_t q = 0; q < cnt; q++) {
        float u = (float)(w[q] >> 8) * 0x1p-24f;
        o[q] = (double)u < j->p ? 0.0f : sf;
      }
    } else {
      double *o = (double *)j->out + i0;
      for (int64_t q = 0; q < cnt; q++) {
        double u = (double)((((uint64_t)w[2 * q + 1] << 32) | w[2 * q]) >> 11) * 0x1p-53;
        o[q] = u < j->p ? 0.0 : scale;
      }
    }
  }
}

mf_status mf_cpu_dropout_mask(mf_device *dev, const mf_call *c) {
  (void)dev;
  if (!c->out || c->op != MF_OP_DROPOUT_MASK)
    return mf_fail(MF_ERR_ARG, "dropout: malformed kernel call");
  mf_dtype dt = c->out->dtype;
  if (dt != MF_F32 && dt != MF_F64)
    return mf_fail(MF_ERR_DTYPE, "dropout: the CPU kernel takes float32 or float64, got %s",
                   mf_dtype_name(dt));
  if (!mf_is_contiguous(c->out)) return mf_fail(MF_ERR_ARG, "dropout: the mask must be contiguous");
  mask_job j = {mf_cpu_ptr(c->out), mf_numel(c->out), c->seed, c->offset, c->p[0], dt == MF_F64};
  int per = j.f64 ? 2 : 4;
  int64_t blocks = (j.n + per - 1) / per;
  mf_parallel_for(blocks, 4096, mask_run, &j);
  return MF_OK;
}
