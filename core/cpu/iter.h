/* iter.h — strided N-d iteration shared by the CPU elementwise kernels.
 *
 * Operand 0 is the output and gives the iteration shape (ndim <= MF_MAX_DIMS); operands 1..3 are
 * inputs viewed with that shape (numpy broadcasting, right-aligned: a missing or size-1 dimension
 * gets stride 0). Strides are turned into bytes, size-1 dimensions are dropped, and neighbouring
 * dimensions that are contiguous for every operand are merged, so that a contiguous op becomes one
 * row of numel elements and (N, 1) + (1, M) becomes N rows of M.
 *
 * mf_iter_rows(it, begin, end, row, ctx) visits the elements [begin, end) in row-major order of
 * the output shape, calling row(ctx, ptr, stride, n) for each piece of an inner row: ptr[k] is
 * operand k's first element, stride[k] its inner stride in bytes, n the element count.
 * mf_iter_parallel splits [0, numel) over the thread pool.
 */
#ifndef MF_CPU_ITER_H
#define MF_CPU_ITER_H

#include "internal.h"

#define MF_ITER_MAXOPS 4

typedef struct mf_iter {
  int ndim; /* >= 1 after coalescing; shape[ndim-1] is the inner loop */
  int nops;
  int64_t numel;
  int64_t shape[MF_MAX_DIMS];
  int64_t stride[MF_ITER_MAXOPS][MF_MAX_DIMS]; /* bytes */
  char *data[MF_ITER_MAXOPS];
} mf_iter;

typedef void (*mf_row_fn)(void *ctx, char **ptr, const int64_t *stride, int64_t n);

/* Host pointer to element 0 of a CPU tensor's view. */
static inline void *mf_cpu_ptr(const mf_tensor *t) {
  if (!t->storage || !t->storage->data) return NULL;
  return (char *)t->storage->data + t->offset * (int64_t)mf_dtype_size(t->dtype);
}

/* ops[0] = output, ops[1..nops-1] inputs. Fails (MF_ERR_SHAPE) when an input does not broadcast to
 * the output's shape. */
static inline mf_status mf_iter_init(mf_iter *it, const char *opname, int nops,
                                     const mf_tensor *const *ops) {
  const mf_tensor *o = ops[0];
  int nd = o->ndim;
  it->nops = nops;
  it->numel = 1;
  for (int d = 0; d < nd; d++) it->numel *= o->shape[d];
  int64_t shape[MF_MAX_DIMS], stride[MF_ITER_MAXOPS][MF_MAX_DIMS];
  const mf_tensor *bad_op = NULL;
  for (int k = 0; k < nops; k++) {
    const mf_tensor *t = bad_op = ops[k];
    int64_t es = (int64_t)mf_dtype_size(t->dtype);
    if (t->ndim > nd) goto bad;
    for (int d = 0; d < nd; d++) {
      int td = d - (nd - t->ndim);
      if (td < 0)
        stride[k][d] = 0;
      else if (t->shape[td] == o->shape[d])
        stride[k][d] = o->shape[d] == 1 ? 0 : t->stride[td] * es;
      else if (t->shape[td] == 1)
        stride[k][d] = 0;
      else
        goto bad;
    }
    it->data[k] = it->numel ? mf_cpu_ptr(t) : NULL;
  }
  for (int d = 0; d < nd; d++) shape[d] = o->shape[d];
  /* drop size-1 dims, then merge dim d into the (already kept) inner neighbour when contiguous */
  int n = 0;
  for (int d = nd - 1; d >= 0; d--) {
    if (shape[d] == 1) continue;
    if (n > 0) {
      int j = MF_MAX_DIMS - n; /* the outermost dimension kept so far: d's inner neighbour */
      int ok = 1;
      for (int k = 0; k < nops; k++)
        if (stride[k][d] != it->shape[j] * it->stride[k][j]) ok = 0;
      if (ok) {
        it->shape[j] *= shape[d];
        continue;
      }
    }
    n++;
    int j = MF_MAX_DIMS - n;
    it->shape[j] = shape[d];
    for (int k = 0; k < nops; k++) it->stride[k][j] = stride[k][d];
  }
  if (n == 0) { /* a scalar, or all dims 1 */
    n = 1;
    it->shape[MF_MAX_DIMS - 1] = it->numel;
    for (int k = 0; k < nops; k++) it->stride[k][MF_MAX_DIMS - 1] = 0;
  }
  /* built right-aligned in the arrays: move to the front */
  int off = MF_MAX_DIMS - n;
  for (int d = 0; d < n; d++) {
    it->shape[d] = it->shape[off + d];
    for (int k = 0; k < nops; k++) it->stride[k][d] = it->stride[k][off + d];
  }
  it->ndim = n;
  return MF_OK;
bad : {
  char a[96], b[96];
  return mf_fail(MF_ERR_SHAPE, "%s: an operand of shape %s does not broadcast to %s", opname,
                 mf_shape_fmt(bad_op->ndim, bad_op->shape, a, sizeof a),
                 mf_shape_fmt(nd, o->shape, b, sizeof b));
}
}

static inline void mf_iter_rows(const mf_iter *it, int64_t begin, int64_t end, mf_row_fn row,
                                void *ctx) {
  int nops = it->nops, nd = it->ndim, last = nd - 1;
  char *p[MF_ITER_MAXOPS];
  int64_t inner[MF_ITER_MAXOPS];
  for (int k = 0; k < nops; k++) inner[k] = it->stride[k][last];
  if (end <= begin) return;
  if (nd == 1) {
    for (int k = 0; k < nops; k++) p[k] = it->data[k] + begin * inner[k];
    row(ctx, p, inner, end - begin);
    return;
  }
  int64_t idx[MF_MAX_DIMS], rem = begin;
  for (int d = last; d >= 0; d--) {
    idx[d] = rem % it->shape[d];
    rem /= it->shape[d];
  }
  for (int k = 0; k < nops; k++) {
    p[k] = it->data[k];
    for (int d = 0; d < nd; d++) p[k] += idx[d] * it->stride[k][d];
  }
  int64_t left = end - begin;
  while (left > 0) {
    int64_t cnt = it->shape[last] - idx[last];
    if (cnt > left) cnt = left;
    row(ctx, p, inner, cnt);
    left -= cnt;
    if (left == 0) break;
    /* next row: reset the inner dim and carry into the outer ones */
    for (int k = 0; k < nops; k++) p[k] -= idx[last] * inner[k];
    idx[last] = 0;
    for (int d = last - 1; d >= 0; d--) {
      idx[d]++;
      for (int k = 0; k < nops; k++) p[k] += it->stride[k][d];
      if (idx[d] < it->shape[d]) break;
      for (int k = 0; k < nops; k++) p[k] -= it->shape[d] * it->stride[k][d];
      idx[d] = 0;
    }
  }
}

typedef struct mf_iter_job {
  const mf_iter *it;
  mf_row_fn row;
  void *ctx;
} mf_iter_job;

static inline void mf_iter_job_run(void *job, int64_t begin, int64_t end) {
  mf_iter_job *j = job;
  mf_iter_rows(j->it, begin, end, j->row, j->ctx);
}

/* Runs the whole iteration, split over the pool in pieces of at least `grain` elements. */
static inline void mf_iter_parallel(const mf_iter *it, int64_t grain, mf_row_fn row, void *ctx) {
  if (it->numel <= 0) return;
  if (it->numel < 2 * grain) {
    mf_iter_rows(it, 0, it->numel, row, ctx);
    return;
  }
  mf_iter_job j = {it, row, ctx};
  mf_parallel_for(it->numel, grain, mf_iter_job_run, &j);
}

#endif
