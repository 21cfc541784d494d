/* ops_reduce.c — front ends of the reductions: sum, prod, max, min, argmax, argmin, mean (through
 * mf_reduce), var and std. They check the dim and dtype, pick the result dtype, and hand the
 * backend a contiguous input viewed as (outer, n, inner) with a contiguous (outer, inner) output
 * (see internal.h); the result is that output viewed with the reduced dim removed, or kept as 1.
 *
 * Semantics follow torch: a negative dim counts from the end; MF_ALL_DIMS reduces everything to a
 * 0-d tensor (all-ones shape with keepdim); SUM/PROD of bool and integers give int64, of floats the
 * same dtype; MAX/MIN keep the dtype; ARGMAX/ARGMIN give int64 indices of the first extreme (NaN
 * counts as extreme); MEAN/VAR/STD need a float dtype. An empty reduced dim gives 0 (SUM), 1
 * (PROD), nan (MEAN, VAR), and an error for MAX/MIN/ARGMAX/ARGMIN. */
#include "autograd.h"

static bool is_reduction(mf_op op) { return op >= MF_OP_SUM && op <= MF_OP_VAR; }

static mf_dtype result_dtype(mf_op op, mf_dtype t) {
  switch (op) {
  case MF_OP_SUM:
  case MF_OP_PROD: return mf_dtype_is_float(t) ? t : MF_I64;
  case MF_OP_ARGMAX:
  case MF_OP_ARGMIN: return MF_I64;
  default: return t;
  }
}

/* The reduction `op` of x over dim (or all dims); `name` is the op as the user called it. */
static mf_status reduce(const char *name, mf_op op, const mf_tensor *x, int dim, bool keepdim,
                        int64_t correction, mf_tensor **out) {
  *out = NULL;
  if (!is_reduction(op))
    return mf_fail(MF_ERR_ARG, "reduce: %s is not a reduction", mf_op_name(op));
  if ((op == MF_OP_MEAN || op == MF_OP_VAR) && !mf_dtype_is_float(x->dtype))
    return mf_fail(MF_ERR_DTYPE, "%s: needs a floating dtype, got %s", name,
                   mf_dtype_name(x->dtype));

  /* x: (outer, n, inner) -> result: rshape (rnd dims) */
  int nd = x->ndim, rnd = 0;
  int64_t outer = 1, n = 1, inner = 1, rshape[MF_MAX_DIMS];
  if (dim == MF_ALL_DIMS) {
    n = mf_numel(x);
    if (keepdim)
      for (rnd = 0; rnd < nd; rnd++) rshape[rnd] = 1;
  } else {
    int d;
    MF_TRY(mf_norm_dim(name, dim, nd, &d));
    for (int k = 0; k < nd; k++) {
      if (k < d)
        outer *= x->shape[k];
      else if (k > d)
        inner *= x->shape[k];
      if (k != d)
        rshape[rnd++] = x->shape[k];
      else if (keepdim)
        rshape[rnd++] = 1;
    }
    if (nd > 0) n = x->shape[d];
  }
  bool needs_data = op == MF_OP_MAX || op == MF_OP_MIN || op == MF_OP_ARGMAX || op == MF_OP_ARGMIN;
  if (n == 0 && needs_data)
    return mf_fail(MF_ERR_SHAPE, "%s: cannot reduce an empty dimension", name);

  mf_device *dev = mf_tensor_device(x);
  mf_tensor *xc = NULL, *xv = NULL, *o = NULL;
  int64_t xshape[3] = {outer, n, inner}, oshape[2] = {outer, inner};
  mf_status s = mf_contiguous(x, &xc);
  if (!s) s = mf_view(xc, 3, xshape, &xv);
  if (!s) s = mf_empty(2, oshape, result_dtype(op, x->dtype), dev, &o);
  if (!s && outer * inner > 0) {
    mf_call c = {.op = op, .out = o, .in = {xv}, .nin = 1, .ip = {outer, n, inner, correction}};
    s = mf_dispatch(dev, &c);
  }
  if (!s) s = mf_view(o, rnd, rshape, out);
  if (!s) s = mf_ag_reduce(op, x, dim, keepdim, (int)correction, *out);
  mf_release(xc);
  mf_release(xv);
  mf_release(o);
  return mf_ag_keep(s, out);
}

mf_status mf_reduce(mf_op op, const mf_tensor *x, int dim, bool keepdim, mf_tensor **out) {
  if (op == MF_OP_VAR) {
    *out = NULL;
    return mf_fail(MF_ERR_ARG, "reduce: var takes a correction; call mf_var");
  }
  return reduce(is_reduction(op) ? mf_op_name(op) : "reduce", op, x, dim, keepdim, 0, out);
}

mf_status mf_var(const mf_tensor *x, int dim, int correction, bool keepdim, mf_tensor **out) {
  return reduce("var", MF_OP_VAR, x, dim, keepdim, correction, out);
}

mf_status mf_std(const mf_tensor *x, int dim, int correction, bool keepdim, mf_tensor **out) {
  mf_tensor *v;
  MF_TRY(reduce("std", MF_OP_VAR, x, dim, keepdim, correction, &v));
  mf_status s = mf_unary(MF_OP_SQRT, v, out);
  mf_release(v);
  return s;
}
