/* views.c — zero-copy views: reshape/view, transpose, permute, narrow, select, slice, expand,
 * squeeze, unsqueeze, flatten; contiguous copies; numpy broadcasting of shapes.
 * Messages count dimensions and indices from 1, as Lua users do. */
#include <stdio.h>
#include <string.h>

#include "autograd.h"

mf_status mf_make_view(const mf_tensor *t, int ndim, const int64_t *shape, const int64_t *stride,
                       int64_t offset, mf_tensor **out) {
  *out = mf_tensor_wrap(t->storage, t->dtype, ndim, shape, stride, offset);
  return *out ? MF_OK : MF_ERR_MEMORY;
}

/* Resolves one -1 entry and checks that the element count is unchanged. */
static mf_status infer_shape(const char *op, const mf_tensor *t, int ndim, const int64_t *shape,
                             int64_t *res) {
  if (ndim < 0 || ndim > MF_MAX_DIMS)
    return mf_fail(MF_ERR_SHAPE, "%s: %d dimensions (at most %d)", op, ndim, MF_MAX_DIMS);
  int infer = -1;
  for (int d = 0; d < ndim; d++) {
    res[d] = shape[d];
    if (shape[d] == -1) {
      if (infer >= 0) return mf_fail(MF_ERR_SHAPE, "%s: only one dimension can be -1", op);
      infer = d;
      res[d] = 1; /* for the check below; resolved at the end */
    }
  }
  MF_TRY(mf_check_shape(op, ndim, res)); /* negative sizes; products that overflow int64 */
  int64_t known = mf_shape_numel(ndim, res);
  int64_t n = mf_numel(t);
  char a[96], b[96];
  if (infer >= 0) {
    if (known == 0 || n % known)
      return mf_fail(MF_ERR_SHAPE, "%s: cannot view %s (%lld elements) as %s", op,
                     mf_shape_str(t, a, sizeof a), (long long)n,
                     mf_shape_fmt(ndim, shape, b, sizeof b));
    res[infer] = n / known;
  } else if (known != n) {
    return mf_fail(MF_ERR_SHAPE, "%s: cannot view %s (%lld elements) as %s (%lld elements)", op,
                   mf_shape_str(t, a, sizeof a), (long long)n,
                   mf_shape_fmt(ndim, shape, b, sizeof b), (long long)known);
  }
  return MF_OK;
}

/* Strides for viewing t as `shape` without copying (PyTorch's computeStride); false if impossible.
 */
static bool view_strides(const mf_tensor *t, int ndim, const int64_t *shape, int64_t *stride) {
  if (mf_is_contiguous(t)) {
    mf_contiguous_strides(ndim, shape, stride);
    return true;
  }
  int view_d = ndim - 1;
  int64_t base = t->stride[t->ndim - 1], tensor_numel = 1, view_numel = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    tensor_numel *= t->shape[d];
    if (d == 0 || (t->shape[d - 1] != 1 && t->stride[d - 1] != tensor_numel * base)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        stride[view_d] = view_numel * base;
        view_numel *= shape[view_d];
        view_d--;
      }
      if (view_numel != tensor_numel) return false;
      if (d > 0) {
        base = t->stride[d - 1];
        tensor_numel = view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

mf_status mf_view(const mf_tensor *t, int ndim, const int64_t *shape, mf_tensor **out) {
  *out = NULL;
  int64_t res[MF_MAX_DIMS], stride[MF_MAX_DIMS];
  MF_TRY(infer_shape("view", t, ndim, shape, res));
  if (!view_strides(t, ndim, res, stride)) {
    char a[96], b[96];
    return mf_fail(MF_ERR_SHAPE,
                   "view: the strides of this %s view do not allow shape %s; use reshape "
                   "(which copies) or contiguous() first",
                   mf_shape_str(t, a, sizeof a), mf_shape_fmt(ndim, res, b, sizeof b));
  }
  MF_TRY(mf_make_view(t, ndim, res, stride, t->offset, out));
  return mf_ag_keep(mf_ag_reshape(t, *out), out);
}

mf_status mf_reshape(const mf_tensor *t, int ndim, const int64_t *shape, mf_tensor **out) {
  *out = NULL;
  int64_t res[MF_MAX_DIMS], stride[MF_MAX_DIMS];
  MF_TRY(infer_shape("reshape", t, ndim, shape, res));
  if (view_strides(t, ndim, res, stride)) {
    MF_TRY(mf_make_view(t, ndim, res, stride, t->offset, out));
    return mf_ag_keep(mf_ag_reshape(t, *out), out);
  }
  mf_tensor *c;
  MF_TRY(mf_contiguous(t, &c));
  mf_status s = mf_view(c, ndim, res, out);
  mf_release(c);
  return s;
}

mf_status mf_transpose(const mf_tensor *t, int d0, int d1, mf_tensor **out) {
  *out = NULL;
  MF_TRY(mf_norm_dim("transpose", d0, t->ndim, &d0));
  MF_TRY(mf_norm_dim("transpose", d1, t->ndim, &d1));
  int64_t shape[MF_MAX_DIMS], stride[MF_MAX_DIMS];
  memcpy(shape, t->shape, sizeof shape);
  memcpy(stride, t->stride, sizeof stride);
  if (t->ndim) {
    shape[d0] = t->shape[d1], shape[d1] = t->shape[d0];
    stride[d0] = t->stride[d1], stride[d1] = t->stride[d0];
  }
  int perm[MF_MAX_DIMS];
  for (int d = 0; d < t->ndim; d++) perm[d] = d == d0 ? d1 : d == d1 ? d0 : d;
  MF_TRY(mf_make_view(t, t->ndim, shape, stride, t->offset, out));
  return mf_ag_keep(mf_ag_permute(t, perm, *out), out);
}

mf_status mf_permute(const mf_tensor *t, const int *perm, mf_tensor **out) {
  *out = NULL;
  int64_t shape[MF_MAX_DIMS], stride[MF_MAX_DIMS];
  bool seen[MF_MAX_DIMS] = {false};
  int norm[MF_MAX_DIMS];
  for (int d = 0; d < t->ndim; d++) {
    int p;
    MF_TRY(mf_norm_dim("permute", perm[d], t->ndim, &p));
    if (seen[p]) return mf_fail(MF_ERR_ARG, "permute: dimension %d appears twice", p + 1);
    seen[p] = true;
    shape[d] = t->shape[p];
    stride[d] = t->stride[p];
    norm[d] = p;
  }
  MF_TRY(mf_make_view(t, t->ndim, shape, stride, t->offset, out));
  return mf_ag_keep(mf_ag_permute(t, norm, *out), out);
}

mf_status mf_slice(const mf_tensor *t, int dim, int64_t start, int64_t stop, int64_t step,
                   mf_tensor **out) {
  *out = NULL;
  if (t->ndim == 0) return mf_fail(MF_ERR_INDEX, "slice: cannot slice a 0-d tensor");
  MF_TRY(mf_norm_dim("slice", dim, t->ndim, &dim));
  int64_t size = t->shape[dim];
  if (step <= 0)
    return mf_fail(MF_ERR_ARG, "slice: step must be positive, got %lld", (long long)step);
  if (start < 0 || start > size || stop < start || stop > size)
    return mf_fail(MF_ERR_INDEX,
                   "slice: range %lld..%lld is out of range for dimension %d of size %lld",
                   (long long)start + 1, (long long)stop, dim + 1, (long long)size);
  int64_t shape[MF_MAX_DIMS], stride[MF_MAX_DIMS];
  memcpy(shape, t->shape, sizeof shape);
  memcpy(stride, t->stride, sizeof stride);
  shape[dim] = (stop - start + step - 1) / step;
  stride[dim] = t->stride[dim] * step;
  MF_TRY(mf_make_view(t, t->ndim, shape, stride, t->offset + start * t->stride[dim], out));
  return mf_ag_keep(mf_ag_slice(t, dim, start, stop, step, false, *out), out);
}

mf_status mf_narrow(const mf_tensor *t, int dim, int64_t start, int64_t len, mf_tensor **out) {
  *out = NULL;
  if (t->ndim == 0) return mf_fail(MF_ERR_INDEX, "narrow: cannot narrow a 0-d tensor");
  MF_TRY(mf_norm_dim("narrow", dim, t->ndim, &dim));
  if (start < 0 || len < 0 || start + len > t->shape[dim])
    return mf_fail(
        MF_ERR_INDEX,
        "narrow: start %lld and length %lld are out of range for dimension %d of size %lld",
        (long long)start + 1, (long long)len, dim + 1, (long long)t->shape[dim]);
  return mf_slice(t, dim, start, start + len, 1, out);
}

mf_status mf_select(const mf_tensor *t, int dim, int64_t index, mf_tensor **out) {
  *out = NULL;
  if (t->ndim == 0) return mf_fail(MF_ERR_INDEX, "select: cannot index a 0-d tensor");
  MF_TRY(mf_norm_dim("select", dim, t->ndim, &dim));
  if (index < 0 || index >= t->shape[dim])
    return mf_fail(MF_ERR_INDEX, "index %lld is out of range for dimension %d of size %lld",
                   (long long)((uint64_t)index + 1), dim + 1, (long long)t->shape[dim]);
  int64_t shape[MF_MAX_DIMS], stride[MF_MAX_DIMS];
  int n = 0;
  for (int d = 0; d < t->ndim; d++)
    if (d != dim) shape[n] = t->shape[d], stride[n++] = t->stride[d];
  MF_TRY(mf_make_view(t, n, shape, stride, t->offset + index * t->stride[dim], out));
  return mf_ag_keep(mf_ag_slice(t, dim, index, index + 1, 1, true, *out), out);
}

mf_status mf_expand(const mf_tensor *t, int ndim, const int64_t *shape, mf_tensor **out) {
  *out = NULL;
  char a[96], b[96];
  if (ndim < t->ndim || ndim > MF_MAX_DIMS)
    return mf_fail(MF_ERR_SHAPE, "expand: cannot expand %s to %d dimensions",
                   mf_shape_str(t, a, sizeof a), ndim);
  int64_t rshape[MF_MAX_DIMS], stride[MF_MAX_DIMS];
  int lead = ndim - t->ndim;
  for (int d = 0; d < ndim; d++) {
    int64_t have = d < lead ? 1 : t->shape[d - lead], want = shape[d];
    if (want == -1) {
      if (d < lead)
        return mf_fail(MF_ERR_SHAPE, "expand: -1 is not allowed for a new leading dimension");
      want = have;
    }
    if (have == want) {
      rshape[d] = want;
      stride[d] = d < lead ? 0 : t->stride[d - lead];
    } else if (have == 1 && want >= 0) {
      rshape[d] = want;
      stride[d] = 0;
    } else {
      return mf_fail(MF_ERR_SHAPE,
                     "expand: cannot expand %s to %s (size %lld of dimension %d is not 1)",
                     mf_shape_str(t, a, sizeof a), mf_shape_fmt(ndim, shape, b, sizeof b),
                     (long long)have, d - lead + 1);
    }
  }
  MF_TRY(mf_check_shape("expand", ndim, rshape)); /* 1 x 1 expanded to 2^62 x 2^62 */
  MF_TRY(mf_make_view(t, ndim, rshape, stride, t->offset, out));
  return mf_ag_keep(mf_ag_expand(t, *out), out);
}

mf_status mf_squeeze(const mf_tensor *t, int dim, mf_tensor **out) {
  *out = NULL;
  int64_t shape[MF_MAX_DIMS], stride[MF_MAX_DIMS];
  int n = 0;
  if (dim != MF_ALL_DIMS) MF_TRY(mf_norm_dim("squeeze", dim, t->ndim, &dim));
  for (int d = 0; d < t->ndim; d++) {
    bool drop = t->shape[d] == 1 && (dim == MF_ALL_DIMS || d == dim);
    if (!drop) shape[n] = t->shape[d], stride[n++] = t->stride[d];
  }
  MF_TRY(mf_make_view(t, n, shape, stride, t->offset, out));
  return mf_ag_keep(mf_ag_reshape(t, *out), out);
}

mf_status mf_unsqueeze(const mf_tensor *t, int dim, mf_tensor **out) {
  *out = NULL;
  if (t->ndim >= MF_MAX_DIMS)
    return mf_fail(MF_ERR_SHAPE, "unsqueeze: a tensor has at most %d dimensions", MF_MAX_DIMS);
  MF_TRY(mf_norm_dim("unsqueeze", dim, t->ndim + 1, &dim));
  int64_t shape[MF_MAX_DIMS], stride[MF_MAX_DIMS];
  for (int d = 0, s = 0; d <= t->ndim; d++) {
    if (d == dim) {
      shape[d] = 1;
      stride[d] = s < t->ndim ? t->stride[s] * t->shape[s] : 1;
    } else {
      shape[d] = t->shape[s], stride[d] = t->stride[s], s++;
    }
  }
  MF_TRY(mf_make_view(t, t->ndim + 1, shape, stride, t->offset, out));
  return mf_ag_keep(mf_ag_reshape(t, *out), out);
}

mf_status mf_flatten(const mf_tensor *t, int start, int end, mf_tensor **out) {
  *out = NULL;
  if (t->ndim == 0) {
    int64_t one = 1;
    return mf_reshape(t, 1, &one, out);
  }
  MF_TRY(mf_norm_dim("flatten", start, t->ndim, &start));
  MF_TRY(mf_norm_dim("flatten", end, t->ndim, &end));
  if (start > end)
    return mf_fail(MF_ERR_ARG, "flatten: start dimension %d is after end dimension %d", start + 1,
                   end + 1);
  int64_t shape[MF_MAX_DIMS];
  int n = 0;
  for (int d = 0; d < t->ndim; d++) {
    if (d <= start || d > end)
      shape[n++] = t->shape[d];
    else
      shape[n - 1] *= t->shape[d];
  }
  return mf_reshape(t, n, shape, out);
}

mf_status mf_contiguous(const mf_tensor *t, mf_tensor **out) {
  *out = NULL;
  if (mf_is_contiguous(t)) {
    *out = mf_retain((mf_tensor *)t);
    return MF_OK;
  }
  MF_TRY(mf_empty_like(t, out));
  mf_call c = {.op = MF_OP_COPY, .out = *out, .in = {t}, .nin = 1};
  mf_status s = mf_dispatch(t->storage->device, &c);
  if (!s) s = mf_ag_cast(t, *out);
  return mf_ag_keep(s, out);
}

mf_status mf_broadcast_shape(const char *op, int na, const int64_t *a, int nb, const int64_t *b,
                             int *nout, int64_t *out) {
  int n = na > nb ? na : nb;
  for (int i = 0; i < n; i++) {
    int64_t x = i < n - na ? 1 : a[i - (n - na)], y = i < n - nb ? 1 : b[i - (n - nb)];
    if (x != y && x != 1 && y != 1) {
      char sa[96], sb[96];
      return mf_fail(MF_ERR_SHAPE, "%s: shapes %s and %s cannot be broadcast together", op,
                     mf_shape_fmt(na, a, sa, sizeof sa), mf_shape_fmt(nb, b, sb, sizeof sb));
    }
    out[i] = x == 1 ? y : x;
  }
  *nout = n;
  return MF_OK;
}
