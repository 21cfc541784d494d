/* ops_index.c — index_select: the rows (or any slices along one dim) of a tensor picked by an
 * index tensor, in the index's order, copied into a new contiguous tensor. The data loaders use it
 * to gather shuffled batches (mf.data.mnist's next_batch).
 *
 * On the CPU, with no kernel table entry: the input is made contiguous and viewed as
 * (outer, n, inner); each picked slice is one memcpy of inner elements. Other devices run it as a
 * gather with the index expanded to the output's shape (their GATHER kernel). Not recorded by
 * autograd.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "moonflow_io.h"

typedef struct sel_ctx {
  const char *src;
  char *dst;
  const int64_t *idx; /* 0-based, checked */
  int64_t nidx, n, inner_bytes;
} sel_ctx;

/* Copies for the outer slices in [begin, end). */
static void sel_range(void *vctx, int64_t begin, int64_t end) {
  const sel_ctx *c = vctx;
  for (int64_t o = begin; o < end; o++) {
    const char *s = c->src + o * c->n * c->inner_bytes;
    char *d = c->dst + o * c->nidx * c->inner_bytes;
    for (int64_t j = 0; j < c->nidx; j++)
      memcpy(d + j * c->inner_bytes, s + c->idx[j] * c->inner_bytes, (size_t)c->inner_bytes);
  }
}

/* The same over the picked positions, for a single outer slice (dim 0): split the index list. */
/* The rows are scattered (a shuffled batch of a data set): each copy waits on memory unless the
 * rows a few picks ahead are prefetched (their first 4 KiB) while this one is copied. */
enum { SEL_AHEAD = 4, SEL_PREFETCH_BYTES = 4096 };
static void sel_rows(void *vctx, int64_t begin, int64_t end) {
  const sel_ctx *c = vctx;
  int64_t ahead = c->inner_bytes < SEL_PREFETCH_BYTES ? c->inner_bytes : SEL_PREFETCH_BYTES;
  for (int64_t j = begin; j < end && j < begin + SEL_AHEAD; j++)
    for (int64_t b = 0; b < ahead; b += 64)
      __builtin_prefetch(c->src + c->idx[j] * c->inner_bytes + b);
  for (int64_t j = begin; j < end; j++) {
    if (j + SEL_AHEAD < end)
      for (int64_t b = 0; b < ahead; b += 64)
        __builtin_prefetch(c->src + c->idx[j + SEL_AHEAD] * c->inner_bytes + b);
    memcpy(c->dst + j * c->inner_bytes, c->src + c->idx[j] * c->inner_bytes,
           (size_t)c->inner_bytes);
  }
}

/* Other devices (their GATHER kernel): out = gather(x, dim, index viewed along dim and expanded
 * to the output's shape), int64, not recorded; the kernel checks the range. */
static mf_status select_by_gather(const mf_tensor *x, int dim, const mf_tensor *index,
                                  mf_tensor **out) {
  int64_t vshape[MF_MAX_DIMS], oshape[MF_MAX_DIMS];
  for (int d = 0; d < x->ndim; d++) {
    vshape[d] = d == dim ? index->shape[0] : 1;
    oshape[d] = d == dim ? index->shape[0] : x->shape[d];
  }
  mf_tensor *i64 = NULL, *v = NULL, *e = NULL;
  mf_status s = index->dtype == MF_I64 ? mf_contiguous(index, &i64) : mf_cast(index, MF_I64, &i64);
  if (!s) s = mf_reshape(i64, x->ndim, vshape, &v);
  if (!s) s = mf_expand(v, x->ndim, oshape, &e);
  if (!s) {
    bool was = mf_set_grad_enabled(false);
    s = mf_gather_as(MF_GATHER_BY_INDEX_SELECT, x, dim, e, 0, out);
    mf_set_grad_enabled(was);
    long long bad;
    /* 1-based in the message, the addition wrapping as the caller's shift of a 1-based index
     * did (math.mininteger - 1 is INT64_MAX here: bad + 1 overflowed, UB) */
    if (s == MF_ERR_INDEX && sscanf(mf_error(), "gather: index %lld", &bad) == 1)
      s = mf_fail(MF_ERR_INDEX,
                  "index_select: index %lld is out of range for dimension %d of size %lld",
                  (long long)((unsigned long long)bad + 1), dim + 1, (long long)x->shape[dim]);
  }
  mf_release(i64);
  mf_release(v);
  mf_release(e);
  return s;
}

mf_status mf_index_select(const mf_tensor *x, int dim, const mf_tensor *index, mf_tensor **out) {
  *out = NULL;
  if (x->ndim == 0) return mf_fail(MF_ERR_INDEX, "index_select: cannot index a 0-d tensor");
  MF_TRY(mf_norm_dim("index_select", dim, x->ndim, &dim));
  if (index->ndim != 1) {
    char b[96];
    return mf_fail(MF_ERR_SHAPE, "index_select: index must be 1-D, got shape %s",
                   mf_shape_str(index, b, sizeof b));
  }
  if (index->dtype != MF_I64 && index->dtype != MF_I32)
    return mf_fail(MF_ERR_DTYPE, "index_select: index must be int64 or int32, got %s",
                   mf_dtype_name(index->dtype));
  MF_TRY(mf_same_device("index_select", x, index));
  mf_device *dev = mf_tensor_device(x);
  if (mf_device_kind(dev) != MF_DEV_CPU) return select_by_gather(x, dim, index, out);

  int64_t nidx = index->shape[0], n = x->shape[dim];
  mf_tensor *ic = NULL, *xc = NULL;
  mf_status s = index->dtype == MF_I64 ? mf_contiguous(index, &ic) : mf_cast(index, MF_I64, &ic);
  if (s) return s;
  const int64_t *idx = mf_data(ic);
  for (int64_t j = 0; j < nidx; j++)
    if (idx[j] < 0 || idx[j] >= n) {
      s = mf_fail(MF_ERR_INDEX,
                  "index_select: index %lld (entry %lld of the index) is out of "
                  "range for dimension %d of size %lld",
                  (long long)((uint64_t)idx[j] + 1), (long long)j + 1, dim + 1, (long long)n);
      mf_release(ic);
      return s;
    }
  if ((s = mf_contiguous(x, &xc))) {
    mf_release(ic);
    return s;
  }
  int64_t shape[MF_MAX_DIMS], outer = 1, inner = 1;
  for (int d = 0; d < x->ndim; d++) {
    shape[d] = d == dim ? nidx : x->shape[d];
    if (d < dim) outer *= x->shape[d];
    if (d > dim) inner *= x->shape[d];
  }
  s = mf_empty(x->ndim, shape, x->dtype, dev, out);
  if (s == MF_OK && outer * nidx * inner > 0) {
    sel_ctx c = {
        mf_data(xc), mf_data(*out), idx, nidx, n, inner * (int64_t)mf_dtype_size(x->dtype)};
    /* ~64 KiB of copying per task at least */
    int64_t per = c.inner_bytes > 0 ? c.inner_bytes : 1;
    if (outer == 1)
      mf_parallel_for(nidx, 1 + 65536 / per, sel_rows, &c);
    else
      mf_parallel_for(outer, 1 + 65536 / (per * nidx), sel_range, &c);
  }
  mf_release(ic);
  mf_release(xc);
  return s;
}
