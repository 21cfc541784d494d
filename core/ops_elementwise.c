/* ops_elementwise.c — front ends of the elementwise ops: device checks, numpy broadcasting, dtype
 * promotion (PyTorch's rules, wrapped Lua numbers included), output allocation, dispatch. Also the
 * copies built on the COPY kernel: cast, copy_, fill_, device transfers, cat and stack. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"

static bool is_integral(mf_dtype t) { return !mf_dtype_is_float(t) && t != MF_BOOL; }
static int category(mf_dtype t) { return t == MF_BOOL ? 0 : is_integral(t) ? 1 : 2; }

/* torch.result_type: a wrapped number only lifts the category (bool < integer < float). */
static mf_dtype result_type(const mf_tensor *a, const mf_tensor *b) {
  bool wa = a->flags & MF_TENSOR_WRAPPED_NUMBER, wb = b->flags & MF_TENSOR_WRAPPED_NUMBER;
  if (wa == wb) return mf_promote(a->dtype, b->dtype);
  const mf_tensor *t = wa ? b : a, *w = wa ? a : b;
  if (category(w->dtype) <= category(t->dtype)) return t->dtype;
  return category(w->dtype) == 2 ? MF_F32 : MF_I64;
}

/* x in dtype dt (a cast copy when needed) broadcast to shape: x itself when it already is, else
 * a view. Not recorded: the op records itself with its own inputs. */
static mf_status prepare(const mf_tensor *x, mf_dtype dt, int ndim, const int64_t *shape,
                         mf_tensor **out) {
  if (x->dtype == dt && x->ndim == ndim) {
    int d = 0;
    while (d < ndim && x->shape[d] == shape[d]) d++;
    if (d == ndim) {
      *out = mf_retain((mf_tensor *)x);
      return MF_OK;
    }
  }
  bool was = mf_set_grad_enabled(false);
  mf_tensor *c = NULL;
  mf_status s = x->dtype != dt ? mf_cast(x, dt, &c) : MF_OK;
  if (!s) s = mf_expand(c ? c : x, ndim, shape, out);
  mf_release(c);
  mf_set_grad_enabled(was);
  return s;
}

static bool is_compare(mf_op op) { return op >= MF_OP_EQ && op <= MF_OP_LE; }
static bool is_logical(mf_op op) { return op == MF_OP_LOGICAL_AND || op == MF_OP_LOGICAL_OR; }
static bool is_wrapped(const mf_tensor *t) { return t->flags & MF_TENSOR_WRAPPED_NUMBER; }

/* A number beside a tensor on another device: a wrapped 0-d tensor on the CPU (as a number is
 * kept: its value, with no device memory or kernel to make it there). */
static bool host_number(const mf_tensor *t) {
  return is_wrapped(t) && t->ndim == 0 && t->storage->device->type == MF_DEV_CPU;
}

/* A host number's value into c (MF_CALL_HOST_*), as a double or an int64 by its dtype's kind. */
static void host_value(const mf_tensor *t, mf_call *c) {
  const char *p = (const char *)t->storage->data + t->offset * (int64_t)mf_dtype_size(t->dtype);
  double d = 0;
  int64_t i = 0;
  switch (t->dtype) {
  case MF_F32: d = *(const float *)p; break;
  case MF_F64: d = *(const double *)p; break;
  case MF_I32: i = *(const int32_t *)p; break;
  case MF_I64: i = *(const int64_t *)p; break;
  default: i = *(const uint8_t *)p; break; /* uint8, bool (a CPU tensor is never a half) */
  }
  c->ip[MF_CALL_HOST_FLOAT] = mf_dtype_is_float(t->dtype);
  if (c->ip[MF_CALL_HOST_FLOAT])
    memcpy(&c->ip[MF_CALL_HOST_VALUE], &d, sizeof d);
  else
    c->ip[MF_CALL_HOST_VALUE] = i;
}

/* Runs an elementwise kernel: inputs broadcast to a common shape in dtype `dt`, output `odt`, on
 * the inputs' device. A host number among inputs on another device is given to a binary kernel by
 * value (MF_CALL_HOST_*: internal.h) and uploaded for the others. The result of numbers alone is
 * a number too (wrapped), so that a gradient rule's arithmetic on one stays a number. */
static mf_status run(mf_op op, int nin, const mf_tensor **in, const mf_dtype *dts, mf_dtype odt,
                     const double *p, mf_tensor **out) {
  *out = NULL;
  const char *name = mf_op_name(op);
  const mf_tensor *ref = in[0]; /* whose device the op runs on: the first not a host number */
  for (int i = 0; i < nin; i++)
    if (!host_number(in[i])) {
      ref = in[i];
      break;
    }
  mf_device *dev = ref->storage->device;
  int ndim = in[0]->ndim;
  int64_t shape[MF_MAX_DIMS];
  bool numbers = true;
  for (int d = 0; d < ndim; d++) shape[d] = in[0]->shape[d];
  for (int i = 0; i < nin; i++) {
    numbers = numbers && is_wrapped(in[i]);
    if (!(in[i]->storage->device != dev && host_number(in[i])))
      MF_TRY(mf_same_device(name, ref, in[i]));
    if (i > 0)
      MF_TRY(mf_broadcast_shape(name, ndim, shape, in[i]->ndim, in[i]->shape, &ndim, shape));
  }
  mf_call c = {.op = op, .nin = nin};
  if (p)
    for (int k = 0; k < 4; k++) c.p[k] = p[k];
  bool binary = op >= MF_OP_ADD && op <= MF_OP_LOGICAL_OR;
  mf_tensor *views[3] = {NULL, NULL, NULL};
  mf_status s = MF_OK;
  for (int i = 0; i < nin && !s; i++) {
    if (in[i]->storage->device == dev) {
      s = prepare(in[i], dts[i], ndim, shape, &views[i]);
    } else if (binary && !c.ip[MF_CALL_HOST_WHICH]) { /* by value */
      host_value(in[i], &c);
      c.ip[MF_CALL_HOST_WHICH] = i + 1;
    } else { /* uploaded */
      mf_tensor *moved = NULL;
      s = mf_to_device(in[i], dev, &moved);
      if (!s) s = prepare(moved, dts[i], ndim, shape, &views[i]);
      mf_release(moved);
    }
  }
  if (!s) s = mf_empty(ndim, shape, odt, dev, out);
  if (!s && numbers && ndim == 0) (*out)->flags |= MF_TENSOR_WRAPPED_NUMBER;
  if (!s) {
    c.out = *out;
    for (int i = 0; i < nin; i++) c.in[i] = views[i];
    s = mf_dispatch(dev, &c);
  }
  for (int i = 0; i < nin; i++) mf_release(views[i]);
  if (s) MF_DROP(*out);
  return s;
}

mf_status mf_binary(mf_op op, const mf_tensor *a, const mf_tensor *b, mf_tensor **out) {
  *out = NULL;
  if (op < MF_OP_ADD || op > MF_OP_LOGICAL_OR)
    return mf_fail(MF_ERR_ARG, "binary: %s is not a binary elementwise op", mf_op_name(op));
  mf_dtype dt = result_type(a, b), odt = dt;
  if (op == MF_OP_RELU_BACKWARD && !mf_dtype_is_float(dt))
    return mf_fail(MF_ERR_DTYPE, "relu_backward: needs float tensors, got %s", mf_dtype_name(dt));
  if (is_logical(op))
    dt = odt = MF_BOOL;
  else if (is_compare(op))
    odt = MF_BOOL;
  else if (op == MF_OP_DIV && !mf_dtype_is_float(dt))
    dt = odt = MF_F32;
  const mf_tensor *in[2] = {a, b};
  mf_dtype dts[2] = {dt, dt};
  MF_TRY(run(op, 2, in, dts, odt, NULL, out));
  return mf_ag_keep(mf_ag_binary(op, a, b, *out), out);
}

static mf_dtype unary_dtype(mf_op op, mf_dtype t) {
  if (op == MF_OP_LOGICAL_NOT) return MF_BOOL;
  bool transcendental = op == MF_OP_EXP || op == MF_OP_LOG || op == MF_OP_SQRT ||
                        op == MF_OP_TANH || op == MF_OP_SIGMOID;
  return transcendental && !mf_dtype_is_float(t) ? MF_F32 : t;
}

mf_status mf_unary(mf_op op, const mf_tensor *x, mf_tensor **out) {
  *out = NULL;
  if (op < MF_OP_NEG || op >= MF_OP_CLAMP)
    return mf_fail(MF_ERR_ARG, "unary: %s is not a unary elementwise op", mf_op_name(op));
  mf_dtype dt = unary_dtype(op, x->dtype);
  MF_TRY(run(op, 1, &x, &dt, dt, NULL, out));
  return mf_ag_keep(mf_ag_unary(op, x, *out, 0, 0), out);
}

mf_status mf_clamp(const mf_tensor *x, double lo, double hi, mf_tensor **out) {
  *out = NULL;
  if (lo > hi) return mf_fail(MF_ERR_ARG, "clamp: lower bound %g is above upper bound %g", lo, hi);
  double p[4] = {lo, hi, 0, 0};
  MF_TRY(run(MF_OP_CLAMP, 1, &x, &x->dtype, x->dtype, p, out));
  return mf_ag_keep(mf_ag_unary(MF_OP_CLAMP, x, *out, lo, hi), out);
}

mf_status mf_where(const mf_tensor *cond, const mf_tensor *a, const mf_tensor *b, mf_tensor **out) {
  mf_dtype dt = result_type(a, b);
  const mf_tensor *in[3] = {cond, a, b};
  mf_dtype dts[3] = {MF_BOOL, dt, dt};
  MF_TRY(run(MF_OP_WHERE, 3, in, dts, dt, NULL, out));
  return mf_ag_keep(mf_ag_where(cond, a, b, *out), out);
}

/* ---- copies ----------------------------------------------------------------------------- */

mf_status mf_cast(const mf_tensor *x, mf_dtype dt, mf_tensor **out) {
  *out = NULL;
  MF_TRY(mf_empty(x->ndim, x->shape, dt, x->storage->device, out));
  mf_call c = {.op = MF_OP_COPY, .out = *out, .in = {x}, .nin = 1};
  mf_status s = mf_dispatch(x->storage->device, &c);
  if (!s) s = mf_ag_cast(x, *out);
  return mf_ag_keep(s, out);
}

mf_status mf_cast_scaled(const mf_tensor *x, mf_dtype dt, double scale, mf_tensor **out) {
  *out = NULL;
  if (!mf_dtype_is_float(dt))
    return mf_fail(MF_ERR_DTYPE, "cast_scaled: needs a floating result dtype, not %s",
                   mf_dtype_name(dt));
  mf_device *dev = x->storage->device;
  if (dev->type != MF_DEV_CPU) { /* backends without the fused kernel: cast, then multiply */
    mf_tensor *c, *k;
    MF_TRY(mf_cast(x, dt, &c));
    mf_status s = mf_scalar(scale, MF_F64, true, NULL, &k); /* a host number: no launch */
    if (!s) s = mf_mul(c, k, out);
    mf_release(k);
    mf_release(c);
    return s;
  }
  MF_TRY(mf_empty(x->ndim, x->shape, dt, dev, out));
  mf_call c = {.op = MF_OP_COPY, .out = *out, .in = {x}, .nin = 1, .p = {scale}, .ip = {1}};
  return mf_ag_keep(mf_dispatch(dev, &c), out);
}

mf_status mf_to_device(const mf_tensor *x, mf_device *dev, mf_tensor **out) {
  *out = NULL;
  mf_device *from = x->storage->device;
  if (from == dev) {
    *out = mf_retain((mf_tensor *)x);
    return MF_OK;
  }
  mf_tensor *c;
  MF_TRY(mf_contiguous(x, &c));
  size_t nbytes = (size_t)mf_numel(c) * mf_dtype_size(c->dtype);
  mf_status s = mf_empty(c->ndim, c->shape, c->dtype, dev, out);
  void *src = mf_data(c), *dst = *out ? mf_data(*out) : NULL;
  if (s) {
  } else if (from->type == MF_DEV_CPU) {
    s = dev->i.upload(dev, dst, src, nbytes);
  } else if (dev->type == MF_DEV_CPU) {
    s = from->i.download(from, dst, src, nbytes);
  } else { /* device to device through the host */
    void *tmp = mf_host_alloc(nbytes);
    s = tmp ? from->i.download(from, tmp, src, nbytes) : MF_ERR_MEMORY;
    if (!s) s = dev->i.upload(dev, dst, tmp, nbytes);
    mf_host_free(tmp, nbytes);
  }
  mf_release(c);
  if (!s) s = mf_ag_cast(x, *out);
  return mf_ag_keep(s, out);
}

mf_status mf_copy_(mf_tensor *dst, const mf_tensor *src) {
  MF_TRY(mf_ag_check_inplace("copy_", dst));
  mf_tensor *moved = NULL, *expanded = NULL;
  mf_status s = MF_OK;
  if (src->storage->device != dst->storage->device) {
    s = mf_to_device(src, dst->storage->device, &moved);
    src = moved;
  } else if (src->storage == dst->storage) { /* may overlap: copy the source out first */
    s = mf_cast(src, src->dtype, &moved);
    src = moved;
  }
  if (!s) s = mf_expand(src, dst->ndim, dst->shape, &expanded);
  if (!s) {
    mf_call c = {.op = MF_OP_COPY, .out = dst, .in = {expanded}, .nin = 1};
    s = mf_dispatch(dst->storage->device, &c);
    if (!s) mf_written(dst);
  }
  if (s == MF_ERR_SHAPE) {
    char a[96], b[96];
    mf_fail(s, "copy: cannot assign a %s tensor to a %s one", mf_shape_str(src, a, sizeof a),
            mf_shape_str(dst, b, sizeof b));
  }
  mf_release(expanded);
  mf_release(moved);
  return s;
}

mf_status mf_fill_(mf_tensor *dst, double v) {
  MF_TRY(mf_ag_check_inplace("fill_", dst));
  mf_call c = {.op = MF_OP_FILL, .out = dst, .p = {v}};
  MF_TRY(mf_dispatch(dst->storage->device, &c));
  mf_written(dst);
  return MF_OK;
}

mf_status mf_cat(int n, mf_tensor *const *ts, int dim, mf_tensor **out) {
  *out = NULL;
  if (n < 1) return mf_fail(MF_ERR_ARG, "cat: needs at least one tensor");
  const mf_tensor *t0 = ts[0];
  if (t0->ndim == 0) return mf_fail(MF_ERR_SHAPE, "cat: cannot concatenate 0-d tensors; use stack");
  MF_TRY(mf_norm_dim("cat", dim, t0->ndim, &dim));
  int64_t shape[MF_MAX_DIMS];
  for (int d = 0; d < t0->ndim; d++) shape[d] = t0->shape[d];
  shape[dim] = 0;
  mf_dtype dt = t0->dtype;
  for (int i = 0; i < n; i++) {
    const mf_tensor *t = ts[i];
    MF_TRY(mf_same_device("cat", t0, t));
    bool ok = t->ndim == t0->ndim;
    for (int d = 0; ok && d < t->ndim; d++) ok = d == dim || t->shape[d] == t0->shape[d];
    if (!ok) {
      char a[96], b[96];
      return mf_fail(MF_ERR_SHAPE,
                     "cat: tensor %d has shape %s, expected %s except in dimension %d", i + 1,
                     mf_shape_str(t, a, sizeof a), mf_shape_str(t0, b, sizeof b), dim + 1);
    }
    shape[dim] += t->shape[dim];
    dt = mf_promote(dt, t->dtype);
  }
  MF_TRY(mf_empty(t0->ndim, shape, dt, t0->storage->device, out));
  mf_status s = MF_OK;
  for (int i = 0, at = 0; i < n && !s; i++) {
    mf_tensor *part;
    s = mf_narrow(*out, dim, at, ts[i]->shape[dim], &part);
    if (!s) s = mf_copy_(part, ts[i]);
    mf_release(part);
    at += (int)ts[i]->shape[dim];
  }
  if (!s) s = mf_ag_cat(n, ts, dim, *out);
  return mf_ag_keep(s, out);
}

mf_status mf_stack(int n, mf_tensor *const *ts, int dim, mf_tensor **out) {
  *out = NULL;
  if (n < 1) return mf_fail(MF_ERR_ARG, "stack: needs at least one tensor");
  MF_TRY(mf_norm_dim("stack", dim, ts[0]->ndim + 1, &dim));
  mf_tensor **u = calloc((size_t)n, sizeof *u);
  if (!u) return mf_fail(MF_ERR_MEMORY, "stack: out of memory");
  mf_status s = MF_OK;
  for (int i = 0; i < n && !s; i++) {
    bool same = ts[i]->ndim == ts[0]->ndim;
    for (int d = 0; same && d < ts[0]->ndim; d++) same = ts[i]->shape[d] == ts[0]->shape[d];
    if (!same) {
      char a[96], b[96];
      s = mf_fail(MF_ERR_SHAPE, "stack: tensor %d has shape %s, expected %s", i + 1,
                  mf_shape_str(ts[i], a, sizeof a), mf_shape_str(ts[0], b, sizeof b));
    } else {
      s = mf_unsqueeze(ts[i], dim, &u[i]);
    }
  }
  if (!s) s = mf_cat(n, u, dim, out);
  for (int i = 0; i < n; i++) mf_release(u[i]);
  free(u);
  return s;
}
