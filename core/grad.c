/* grad.c — the gradient rules: for each differentiable primitive, what its node saves and its
 * vector-Jacobian product, written with ops so that it runs on any device (and records itself
 * under create_graph). g is the gradient of the op's output; gin[i] that of input i, in the
 * input's shape (broadcast dims summed away). The record functions are called by the front ends.
 *
 * Second derivatives: grad mode is on inside a rule only when the backward records (create_graph).
 * Then a rule that reads the op's output takes it connected to the graph (mf_ag_saved_output),
 * and the backward ops that their front ends do not record (conv2d's, the pools', scatter_add, the
 * padding of a slice's gradient) are recorded here as ops of their own whose rules are their
 * adjoints, so that gradients of gradients (of any order) are right. Not recording, rules run as
 * before: the detached output, the fused kernels, nothing more. */
#include <math.h>
#include <string.h>

#include "autograd.h"

#define SAVED(i) ((const mf_tensor *)n->saved[i])
#define NEEDS(i) (n->in[i].needs)

/* A 0-d number of t's dtype on t's device (a wrapped number: it does not promote t). */
static mf_status num(double v, const mf_tensor *t, mf_tensor **out) {
  return mf_scalar(v, t->dtype, true, t->storage->device, out);
}

/* out = op(a, <number v>); v stays on the host (a GPU kernel takes it by value: no launch to make
 * it on the device) */
static mf_status binary_num(mf_op op, const mf_tensor *a, double v, mf_tensor **out) {
  mf_tensor *s;
  bool half = a->dtype == MF_F16 || a->dtype == MF_BF16; /* not on a CPU: float64 is as wrapped */
  MF_TRY(mf_scalar(v, half ? MF_F64 : a->dtype, true, NULL, &s));
  mf_status st = mf_binary(op, a, s, out);
  mf_release(s);
  return st;
}

/* out = where(mask, g, 0) */
static mf_status masked(const mf_tensor *mask, const mf_tensor *g, mf_tensor **out) {
  mf_tensor *z;
  MF_TRY(num(0, g, &z));
  mf_status s = mf_where(mask, g, z, out);
  mf_release(z);
  return s;
}

mf_status mf_sum_to_shape(const mf_tensor *g, int ndim, const int64_t *shape, mf_tensor **out) {
  *out = NULL;
  mf_tensor *t = mf_retain((mf_tensor *)g), *r;
  /* leading dims that broadcasting added */
  while (t->ndim > ndim) {
    mf_status s = mf_reduce(MF_OP_SUM, t, 0, false, &r);
    mf_release(t);
    if (s) return s;
    t = r;
  }
  for (int d = 0; d < ndim; d++) {
    if (shape[d] != 1 || t->shape[d] == 1) continue;
    mf_status s = mf_reduce(MF_OP_SUM, t, d, true, &r);
    mf_release(t);
    if (s) return s;
    t = r;
  }
  *out = t;
  return MF_OK;
}

/* gin[i] = sum_to_shape(g, input i), taking over g. */
static mf_status to_input(mf_node *n, int i, mf_tensor *g, mf_tensor **gin) {
  if (!g) return MF_OK;
  mf_status s = mf_sum_to_shape(g, n->in[i].ndim, n->in[i].shape, &gin[i]);
  mf_release(g);
  return s;
}

/* Begins a node, or returns from the calling record function when nothing is recorded. */
#define BEGIN(name, fn, nin, ...)                                                                  \
  const mf_tensor *in_[] = {__VA_ARGS__};                                                          \
  mf_status st_;                                                                                   \
  mf_node *n = mf_ag_begin(name, fn, nin, in_, &st_);                                              \
  if (!n) return st_

/* Under create_graph, records *res (the fresh result of a backward op that its front end does not
 * record) as an op of `in` with rule fn and from's parameters; *rec is the new node (for saving
 * tensors), or NULL when nothing is recorded. On failure drops *res. */
static mf_status record_as(const char *name, mf_backward_fn fn, int nin, const mf_tensor *const *in,
                           const mf_node *from, mf_tensor **res, mf_node **rec) {
  mf_status st;
  mf_node *r = mf_ag_begin(name, fn, nin, in, &st);
  if (rec) *rec = r;
  if (!r) return mf_ag_keep(st, res);
  if (from) {
    memcpy(r->ip, from->ip, sizeof r->ip);
    memcpy(r->p, from->p, sizeof r->p);
    r->pool = from->pool;
  }
  mf_ag_attach(r, *res);
  return MF_OK;
}

/* ---- binary ---------------------------------------------------------------------------- */

static mf_status bw_add(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  if (NEEDS(0)) MF_TRY(to_input(n, 0, mf_retain((mf_tensor *)g), gin));
  if (NEEDS(1)) MF_TRY(to_input(n, 1, mf_retain((mf_tensor *)g), gin));
  return MF_OK;
}

static mf_status bw_sub(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  mf_tensor *t = NULL;
  if (NEEDS(0)) MF_TRY(to_input(n, 0, mf_retain((mf_tensor *)g), gin));
  if (NEEDS(1)) {
    MF_TRY(mf_unary(MF_OP_NEG, g, &t));
    MF_TRY(to_input(n, 1, t, gin));
  }
  return MF_OK;
}

static mf_status bw_mul(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  mf_tensor *t = NULL;
  if (NEEDS(0)) {
    MF_TRY(mf_mul(g, SAVED(1), &t));
    MF_TRY(to_input(n, 0, t, gin));
  }
  if (NEEDS(1)) {
    MF_TRY(mf_mul(g, SAVED(0), &t));
    MF_TRY(to_input(n, 1, t, gin));
  }
  return MF_OK;
}

/* out = a / b: ga = g / b; gb = -ga * out */
static mf_status bw_div(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  mf_tensor *ga = NULL, *t = NULL, *u = NULL, *y = NULL;
  MF_TRY(mf_div(g, SAVED(1), &ga));
  mf_status s = MF_OK;
  if (NEEDS(1)) {
    s = mf_ag_saved_output(n, 2, &y);
    if (!s) s = mf_mul(ga, y, &t);
    mf_release(y);
    if (!s) s = mf_unary(MF_OP_NEG, t, &u);
    mf_release(t);
    if (!s) s = to_input(n, 1, u, gin);
  }
  if (!s && NEEDS(0)) return to_input(n, 0, ga, gin);
  mf_release(ga);
  return s;
}

/* out = a ^ b: ga = g * b * a^(b-1); gb = g * out * log(a), 0 where a <= 0 */
static mf_status bw_pow(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  const mf_tensor *a = SAVED(0), *b = SAVED(1);
  mf_tensor *t = NULL, *u = NULL, *v = NULL;
  mf_status s = MF_OK;
  if (NEEDS(0)) {
    s = binary_num(MF_OP_SUB, b, 1, &t);
    if (!s) s = mf_binary(MF_OP_POW, a, t, &u);
    MF_DROP(t);
    if (!s) s = mf_mul(u, b, &t);
    MF_DROP(u);
    if (!s) s = mf_mul(t, g, &u);
    MF_DROP(t);
    if (!s) s = to_input(n, 0, u, gin);
    if (s) return s;
  }
  if (NEEDS(1)) {
    mf_tensor *pos = NULL;
    s = binary_num(MF_OP_GT, a, 0, &pos);
    if (!s) s = mf_unary(MF_OP_LOG, a, &t);
    if (!s) s = masked(pos, t, &u);
    MF_DROP(t);
    MF_DROP(pos);
    mf_tensor *out = NULL;
    if (!s) s = mf_ag_saved_output(n, 2, &out);
    if (!s) s = mf_mul(u, out, &v);
    mf_release(out);
    MF_DROP(u);
    if (!s) s = mf_mul(v, g, &t);
    MF_DROP(v);
    if (!s) s = to_input(n, 1, t, gin);
  }
  return s;
}

/* maximum/minimum: the gradient goes to the chosen input, split evenly on ties. */
/* relu_backward(g, y) is linear in g with y's mask; y gets none (its gradient is 0 almost
 * everywhere): what double backward through ReLU needs */
static mf_status bw_relu_backward(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  if (!NEEDS(0)) return MF_OK;
  mf_tensor *t = NULL;
  mf_status s = mf_binary(MF_OP_RELU_BACKWARD, g, SAVED(1), &t);
  return s ? s : to_input(n, 0, t, gin);
}

static mf_status bw_minmax(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  const mf_tensor *a = SAVED(0), *b = SAVED(1);
  mf_op pick = n->ip[0] == MF_OP_MAXIMUM ? MF_OP_GT : MF_OP_LT;
  mf_tensor *m = NULL, *eq = NULL, *wa = NULL, *half = NULL, *t = NULL;
  mf_status s = mf_binary(pick, a, b, &m);
  if (!s) s = mf_binary(MF_OP_EQ, a, b, &eq);
  if (!s) s = mf_cast(m, g->dtype, &wa); /* weight of a: 1, 0.5 on ties, else 0 */
  if (!s) s = mf_cast(eq, g->dtype, &t);
  if (!s) s = binary_num(MF_OP_MUL, t, 0.5, &half);
  MF_DROP(t);
  if (!s) s = mf_add(wa, half, &t);
  MF_DROP(wa);
  wa = t, t = NULL;
  if (!s && NEEDS(0)) {
    s = mf_mul(g, wa, &t);
    if (!s) s = to_input(n, 0, t, gin);
  }
  if (!s && NEEDS(1)) { /* g * (1 - wa) = g - g * wa */
    mf_tensor *gw = NULL;
    s = mf_mul(g, wa, &gw);
    if (!s) s = mf_sub(g, gw, &t);
    mf_release(gw);
    if (!s) s = to_input(n, 1, t, gin);
  }
  mf_release(m);
  mf_release(eq);
  mf_release(wa);
  mf_release(half);
  return s;
}

mf_status mf_ag_binary(mf_op op, const mf_tensor *a, const mf_tensor *b, mf_tensor *out) {
  mf_backward_fn fn;
  switch (op) {
  case MF_OP_ADD: fn = bw_add; break;
  case MF_OP_SUB: fn = bw_sub; break;
  case MF_OP_MUL: fn = bw_mul; break;
  case MF_OP_DIV: fn = bw_div; break;
  case MF_OP_POW: fn = bw_pow; break;
  case MF_OP_MAXIMUM:
  case MF_OP_MINIMUM: fn = bw_minmax; break;
  case MF_OP_RELU_BACKWARD: fn = bw_relu_backward; break;
  default: return MF_OK; /* comparisons, logic, remainder, floor_divide: no gradient */
  }
  if (!mf_dtype_is_float(out->dtype)) return MF_OK;
  BEGIN(mf_op_name(op), fn, 2, a, b);
  n->ip[0] = op;
  if (op == MF_OP_MUL || op == MF_OP_POW || op == MF_OP_MAXIMUM || op == MF_OP_MINIMUM) {
    mf_ag_save(n, 0, a);
    mf_ag_save(n, 1, b);
  }
  if (op == MF_OP_RELU_BACKWARD) mf_ag_save(n, 1, b);
  mf_status s = MF_OK;
  if (op == MF_OP_DIV) {
    mf_ag_save(n, 1, b);
    s = mf_ag_save_output(n, 2, out);
  }
  if (op == MF_OP_POW) s = mf_ag_save_output(n, 2, out);
  if (s) {
    mf_ag_abort(n);
    return s;
  }
  mf_ag_attach(n, out);
  return MF_OK;
}

/* ---- unary ---------------------------------------------------------------------------- */

/* saved: 0 = x, 1 = the output (a detached alias; y is it connected under create_graph) */
static mf_status bw_unary(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  const mf_tensor *x = SAVED(0);
  mf_tensor *t = NULL, *u = NULL, *r = NULL, *y = NULL;
  if (n->saved[1]) MF_TRY(mf_ag_saved_output(n, 1, &y));
  mf_status s = MF_OK;
  switch ((mf_op)n->ip[0]) {
  case MF_OP_NEG: s = mf_unary(MF_OP_NEG, g, &r); break;
  case MF_OP_ABS:
    s = mf_unary(MF_OP_SIGN, x, &t);
    if (!s) s = mf_mul(g, t, &r);
    break;
  case MF_OP_EXP: s = mf_mul(g, y, &r); break;
  case MF_OP_LOG: s = mf_div(g, x, &r); break;
  case MF_OP_SQRT: /* g / (2 y) */
    s = binary_num(MF_OP_MUL, y, 2, &t);
    if (!s) s = mf_div(g, t, &r);
    break;
  case MF_OP_TANH: /* g (1 - y^2) */
    s = mf_mul(y, y, &t);
    if (!s) s = binary_num(MF_OP_SUB, t, 1, &u); /* y^2 - 1 */
    MF_DROP(t);
    if (!s) s = mf_mul(g, u, &t);
    if (!s) s = mf_unary(MF_OP_NEG, t, &r);
    break;
  case MF_OP_SIGMOID: /* g y (1 - y) = g (y - y^2) */
    s = mf_mul(y, y, &t);
    if (!s) s = mf_sub(y, t, &u);
    if (!s) s = mf_mul(g, u, &r);
    break;
  case MF_OP_RELU: s = mf_binary(MF_OP_RELU_BACKWARD, g, y, &r); break; /* one pass */
  case MF_OP_SIGN: s = binary_num(MF_OP_MUL, g, 0, &r); break;
  case MF_OP_CLAMP: { /* g where lo <= x <= hi */
    mf_tensor *lo = NULL, *hi = NULL;
    s = binary_num(MF_OP_GE, x, n->p[0], &lo);
    if (!s) s = binary_num(MF_OP_LE, x, n->p[1], &hi);
    if (!s) s = mf_binary(MF_OP_LOGICAL_AND, lo, hi, &t);
    if (!s) s = masked(t, g, &r);
    mf_release(lo);
    mf_release(hi);
    break;
  }
  default: s = mf_fail(MF_ERR_UNSUPPORTED, "backward: no rule for %s", n->name);
  }
  mf_release(t);
  mf_release(u);
  mf_release(y);
  gin[0] = r;
  return s;
}

mf_status mf_ag_unary(mf_op op, const mf_tensor *x, mf_tensor *out, double lo, double hi) {
  if (op == MF_OP_LOGICAL_NOT || !mf_dtype_is_float(out->dtype) || !mf_dtype_is_float(x->dtype))
    return MF_OK;
  BEGIN(mf_op_name(op), bw_unary, 1, x);
  n->ip[0] = op;
  n->p[0] = lo, n->p[1] = hi;
  bool need_x = op == MF_OP_ABS || op == MF_OP_LOG || op == MF_OP_CLAMP;
  bool need_y = op == MF_OP_EXP || op == MF_OP_SQRT || op == MF_OP_TANH || op == MF_OP_SIGMOID ||
                op == MF_OP_RELU;
  mf_status s = MF_OK;
  if (need_x) mf_ag_save(n, 0, x);
  if (need_y) s = mf_ag_save_output(n, 1, out);
  if (s) {
    mf_ag_abort(n);
    return s;
  }
  mf_ag_attach(n, out);
  return MF_OK;
}

/* ---- where, casts, views ------------------------------------------------------------------ */

static mf_status bw_where(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  const mf_tensor *c = SAVED(0);
  mf_tensor *t = NULL, *z = NULL;
  if (NEEDS(1)) {
    MF_TRY(masked(c, g, &t));
    MF_TRY(to_input(n, 1, t, gin));
  }
  if (NEEDS(2)) {
    MF_TRY(num(0, g, &z));
    mf_status s = mf_where(c, z, g, &t);
    mf_release(z);
    if (s) return s;
    MF_TRY(to_input(n, 2, t, gin));
  }
  return MF_OK;
}

mf_status mf_ag_where(const mf_tensor *cond, const mf_tensor *a, const mf_tensor *b,
                      mf_tensor *out) {
  if (!mf_dtype_is_float(out->dtype)) return MF_OK;
  BEGIN("where", bw_where, 3, cond, a, b);
  mf_ag_save(n, 0, cond);
  mf_ag_attach(n, out);
  return MF_OK;
}

/* The backward of a cast or a move is the gradient itself: the engine converts it back. */
static mf_status bw_identity(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  (void)n;
  gin[0] = mf_retain((mf_tensor *)g);
  return MF_OK;
}

mf_status mf_ag_cast(const mf_tensor *x, mf_tensor *out) {
  if (!mf_dtype_is_float(out->dtype) || !mf_dtype_is_float(x->dtype)) return MF_OK;
  BEGIN("copy", bw_identity, 1, x);
  mf_ag_attach(n, out);
  return MF_OK;
}

static mf_status bw_reshape(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  return mf_reshape(g, n->in[0].ndim, n->in[0].shape, &gin[0]);
}

mf_status mf_ag_reshape(const mf_tensor *x, mf_tensor *out) {
  BEGIN("reshape", bw_reshape, 1, x);
  mf_ag_attach(n, out);
  return MF_OK;
}

static mf_status bw_permute(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  int inv[MF_MAX_DIMS];
  for (int d = 0; d < n->in[0].ndim; d++) inv[n->ip[d]] = d;
  return mf_permute(g, inv, &gin[0]);
}

mf_status mf_ag_permute(const mf_tensor *x, const int *perm, mf_tensor *out) {
  BEGIN("permute", bw_permute, 1, x);
  for (int d = 0; d < x->ndim; d++) n->ip[d] = perm[d];
  mf_ag_attach(n, out);
  return MF_OK;
}

/* The slice's backward recorded (create_graph): z = zeros with g in the window; its rule takes the
 * same window of gz. ip as bw_slice's. */
static mf_status bw_slice_backward(mf_node *n, const mf_tensor *gz, mf_tensor **gin) {
  int dim = (int)n->ip[0];
  return n->ip[4] ? mf_select(gz, dim, n->ip[1], &gin[0])
                  : mf_slice(gz, dim, n->ip[1], n->ip[2], n->ip[3], &gin[0]);
}

/* ip: dim, start, stop, step, select */
static mf_status bw_slice(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  const mf_edge *e = &n->in[0];
  mf_tensor *z, *v = NULL;
  MF_TRY(mf_zeros(e->ndim, e->shape, g->dtype, g->storage->device, &z));
  int dim = (int)n->ip[0];
  mf_status s = n->ip[4] ? mf_select(z, dim, n->ip[1], &v)
                         : mf_slice(z, dim, n->ip[1], n->ip[2], n->ip[3], &v);
  bool prev = mf_set_grad_enabled(false);
  if (!s) s = mf_copy_(v, g);
  mf_set_grad_enabled(prev);
  mf_release(v);
  if (!s) s = record_as("slice_backward", bw_slice_backward, 1, &g, n, &z, NULL);
  if (s)
    mf_release(z);
  else
    gin[0] = z;
  return s;
}

mf_status mf_ag_slice(const mf_tensor *x, int dim, int64_t start, int64_t stop, int64_t step,
                      bool select, mf_tensor *out) {
  BEGIN(select ? "select" : "slice", bw_slice, 1, x);
  n->ip[0] = dim, n->ip[1] = start, n->ip[2] = stop, n->ip[3] = step, n->ip[4] = select;
  mf_ag_attach(n, out);
  return MF_OK;
}

static mf_status bw_expand(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  return to_input(n, 0, mf_retain((mf_tensor *)g), gin);
}

mf_status mf_ag_expand(const mf_tensor *x, mf_tensor *out) {
  BEGIN("expand", bw_expand, 1, x);
  mf_ag_attach(n, out);
  return MF_OK;
}

static mf_status bw_cat(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  int dim = (int)n->ip[0];
  int64_t at = 0;
  for (int i = 0; i < n->nin; i++) {
    int64_t len = n->in[i].shape[dim];
    if (NEEDS(i)) MF_TRY(mf_narrow(g, dim, at, len, &gin[i]));
    at += len;
  }
  return MF_OK;
}

mf_status mf_ag_cat(int count, mf_tensor *const *ts, int dim, mf_tensor *out) {
  mf_status st;
  mf_node *n = mf_ag_begin("cat", bw_cat, count, (const mf_tensor *const *)ts, &st);
  if (!n) return st;
  n->ip[0] = dim;
  mf_ag_attach(n, out);
  return MF_OK;
}

/* ---- reductions ------------------------------------------------------------------------- */

/* g of a reduction, viewed with the reduced dims kept as size 1 (so that it broadcasts to x). */
static mf_status keep_dims(mf_node *n, const mf_tensor *g, mf_tensor **out) {
  const mf_edge *e = &n->in[0];
  int dim = (int)n->ip[1];
  if (n->ip[2] || e->ndim == 0) { /* keepdim */
    *out = mf_retain((mf_tensor *)g);
    return MF_OK;
  }
  int64_t shape[MF_MAX_DIMS];
  for (int d = 0; d < e->ndim; d++) shape[d] = dim == MF_ALL_DIMS || d == dim ? 1 : e->shape[d];
  return mf_reshape(g, e->ndim, shape, out);
}

/* ip: op, dim (normalised, or MF_ALL_DIMS), keepdim, correction; saved 0 = x, 1 = output */
static mf_status bw_reduce(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  const mf_edge *e = &n->in[0];
  mf_op op = (mf_op)n->ip[0];
  int dim = (int)n->ip[1];
  int64_t count = dim == MF_ALL_DIMS ? mf_shape_numel(e->ndim, e->shape) : e->shape[dim];
  mf_tensor *gk = NULL, *t = NULL, *u = NULL, *r = NULL;
  MF_TRY(keep_dims(n, g, &gk));
  mf_status s = MF_OK;
  switch (op) {
  case MF_OP_SUM: s = mf_expand(gk, e->ndim, e->shape, &r); break;
  case MF_OP_MEAN:
    s = binary_num(MF_OP_DIV, gk, (double)count, &t);
    if (!s) s = mf_expand(t, e->ndim, e->shape, &r);
    break;
  case MF_OP_PROD: { /* g * out / x */
    mf_tensor *y = NULL, *yk = NULL;
    s = mf_ag_saved_output(n, 1, &y);
    if (!s) s = keep_dims(n, y, &yk);
    mf_release(y);
    if (!s) s = mf_mul(gk, yk, &t);
    if (!s) s = mf_div(t, SAVED(0), &r);
    mf_release(yk);
    break;
  }
  case MF_OP_MAX:
  case MF_OP_MIN: { /* g spread evenly over the positions of the extreme */
    mf_tensor *yk = NULL, *hits = NULL;
    s = keep_dims(n, SAVED(1), &yk);
    if (!s) s = mf_binary(MF_OP_EQ, SAVED(0), yk, &t);
    if (!s) s = mf_cast(t, g->dtype, &hits);
    MF_DROP(t);
    if (!s) s = mf_reduce(MF_OP_SUM, hits, dim, true, &u);
    if (!s) s = mf_div(gk, u, &t);
    if (!s) s = mf_mul(hits, t, &r);
    mf_release(yk);
    mf_release(hits);
    break;
  }
  case MF_OP_VAR: { /* g * 2 (x - mean) / (count - correction) */
    mf_tensor *mean = NULL;
    s = mf_reduce(MF_OP_MEAN, SAVED(0), dim, true, &mean);
    if (!s) s = mf_sub(SAVED(0), mean, &t);
    mf_release(mean);
    if (!s) s = binary_num(MF_OP_MUL, gk, 2.0 / (double)(count - n->ip[3]), &u);
    if (!s) s = mf_mul(t, u, &r);
    break;
  }
  default: s = mf_fail(MF_ERR_UNSUPPORTED, "backward: no rule for %s", n->name);
  }
  mf_release(gk);
  mf_release(t);
  mf_release(u);
  gin[0] = r;
  return s;
}

mf_status mf_ag_reduce(mf_op op, const mf_tensor *x, int dim, bool keepdim, int correction,
                       mf_tensor *out) {
  if (op == MF_OP_ARGMAX || op == MF_OP_ARGMIN || !mf_dtype_is_float(out->dtype)) return MF_OK;
  BEGIN(mf_op_name(op), bw_reduce, 1, x);
  if (dim != MF_ALL_DIMS && mf_norm_dim(mf_op_name(op), dim, x->ndim, &dim)) dim = MF_ALL_DIMS;
  n->ip[0] = op, n->ip[1] = dim, n->ip[2] = keepdim, n->ip[3] = correction;
  mf_status s = MF_OK;
  if (op != MF_OP_SUM && op != MF_OP_MEAN) mf_ag_save(n, 0, x);
  if (op == MF_OP_PROD || op == MF_OP_MAX || op == MF_OP_MIN) s = mf_ag_save_output(n, 1, out);
  if (s) {
    mf_ag_abort(n);
    return s;
  }
  mf_ag_attach(n, out);
  return MF_OK;
}

/* ---- matmul ------------------------------------------------------------------------------ */

/* t viewed with an added dim of size 1 at `dim` when it was 1-D in the product (numpy rules). */
static mf_status as_matrix(const mf_tensor *t, bool vec, int dim, mf_tensor **out) {
  if (!vec) {
    *out = mf_retain((mf_tensor *)t);
    return MF_OK;
  }
  return mf_unsqueeze(t, dim, out);
}

/* g of the product viewed as (batch..., M, N) when a or b was 1-D (numpy's added dims). */
static mf_status as_product(const mf_tensor *g, bool avec, bool bvec, mf_tensor **out) {
  if (avec && bvec) {
    int64_t one[2] = {1, 1};
    return mf_reshape(g, 2, one, out);
  }
  if (avec) return mf_unsqueeze(g, -2, out);
  if (bvec) return mf_unsqueeze(g, -1, out);
  *out = mf_retain((mf_tensor *)g);
  return MF_OK;
}

/* Whether t's last two dims are column-major (a transposed view, like a Linear layer's w:t()). */
static bool col_major(const mf_tensor *t) {
  return t->ndim >= 2 && t->stride[t->ndim - 2] == 1 && t->stride[t->ndim - 1] != 1;
}

/* x @ y, computed as (y^T @ x^T)^T when `transposed`: the result is then a transposed view of a
 * contiguous product, so the gradient of a transposed operand comes back contiguous through its
 * transpose node (no strided copy of a Linear layer's weight gradient). */
static mf_status matmul_as(const mf_tensor *x, const mf_tensor *y, bool transposed,
                           mf_tensor **out) {
  if (!transposed) return mf_matmul(x, y, out);
  mf_tensor *xt = NULL, *yt = NULL, *p = NULL;
  mf_status s = mf_transpose(x, -1, -2, &xt);
  if (!s) s = mf_transpose(y, -1, -2, &yt);
  if (!s) s = mf_matmul(yt, xt, &p);
  if (!s) s = mf_transpose(p, -1, -2, out);
  mf_release(xt);
  mf_release(yt);
  mf_release(p);
  return s;
}

/* out = a @ b: ga = g @ b^T, gb = a^T @ g (1-D operands as a row / a column; batch dims summed) */
static mf_status bw_matmul(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  bool avec = n->in[0].ndim == 1, bvec = n->in[1].ndim == 1;
  mf_tensor *a = NULL, *b = NULL, *g2 = NULL, *t = NULL, *u = NULL;
  mf_status s = as_matrix(SAVED(0), avec, 0, &a);
  if (!s) s = as_matrix(SAVED(1), bvec, 1, &b);
  if (!s) s = as_product(g, avec, bvec, &g2);
  if (!s && NEEDS(0)) {
    s = mf_transpose(b, -1, -2, &t);
    if (!s) s = matmul_as(g2, t, col_major(SAVED(0)), &u);
    MF_DROP(t);
    if (!s) s = mf_sum_to_shape(u, a->ndim, a->shape, &t);
    MF_DROP(u);
    if (!s) s = mf_reshape(t, n->in[0].ndim, n->in[0].shape, &gin[0]);
    MF_DROP(t);
  }
  if (!s && NEEDS(1)) {
    s = mf_transpose(a, -1, -2, &t);
    if (!s) s = matmul_as(t, g2, col_major(SAVED(1)), &u);
    MF_DROP(t);
    if (!s) s = mf_sum_to_shape(u, b->ndim, b->shape, &t);
    MF_DROP(u);
    if (!s) s = mf_reshape(t, n->in[1].ndim, n->in[1].shape, &gin[1]);
    MF_DROP(t);
  }
  mf_release(a);
  mf_release(b);
  mf_release(g2);
  return s;
}

mf_status mf_ag_matmul(const mf_tensor *a, const mf_tensor *b, mf_tensor *out) {
  if (!mf_dtype_is_float(out->dtype)) return MF_OK;
  BEGIN("matmul", bw_matmul, 2, a, b);
  mf_ag_save(n, 0, a);
  mf_ag_save(n, 1, b);
  mf_ag_attach(n, out);
  return MF_OK;
}

/* ---- neural-network ops ------------------------------------------------------------------ */

static mf_status conv_dx(const mf_tensor *g, const mf_tensor *w, const int64_t *x_shape,
                         const mf_pool2d_params *p, mf_tensor **dx);
static mf_status conv_dw(const mf_tensor *g, const mf_tensor *x, const int64_t *w_shape,
                         const mf_pool2d_params *p, mf_tensor **dw);

/* dx = conv2d_backward_input(g, w), recorded (create_graph): inputs g, w; saved 0 = g, 1 = w.
 * It is linear in each: the gradient of g is conv2d(gx, w), that of w conv_dw(g, gx). */
static mf_status bw_conv_dx(mf_node *n, const mf_tensor *gx, mf_tensor **gin) {
  if (NEEDS(0)) MF_TRY(mf_conv2d(gx, SAVED(1), NULL, &n->pool, &gin[0]));
  if (NEEDS(1)) MF_TRY(conv_dw(SAVED(0), gx, n->in[1].shape, &n->pool, &gin[1]));
  return MF_OK;
}

/* dw = conv2d_backward_weight(g, x), recorded: inputs g, x; saved 0 = g, 1 = x. The gradient of g
 * is conv2d(x, gw), that of x conv_dx(g, gw). */
static mf_status bw_conv_dw(mf_node *n, const mf_tensor *gw, mf_tensor **gin) {
  if (NEEDS(0)) MF_TRY(mf_conv2d(SAVED(1), gw, NULL, &n->pool, &gin[0]));
  if (NEEDS(1)) MF_TRY(conv_dx(SAVED(0), gw, n->in[1].shape, &n->pool, &gin[1]));
  return MF_OK;
}

/* Records *out, a convolution backward op of g and a (with p), for higher derivatives: inputs
 * g, a; saved 0 = g, 1 = a. */
static mf_status record_conv_backward(const char *name, mf_backward_fn bw, const mf_tensor *g,
                                      const mf_tensor *a, const mf_pool2d_params *p,
                                      mf_tensor **out) {
  const mf_tensor *in[2] = {g, a};
  mf_node *r;
  MF_TRY(record_as(name, bw, 2, in, NULL, out, &r));
  if (r) {
    r->pool = *p;
    mf_ag_save(r, 0, g);
    mf_ag_save(r, 1, a);
  }
  return MF_OK;
}

static mf_status conv_dx(const mf_tensor *g, const mf_tensor *w, const int64_t *x_shape,
                         const mf_pool2d_params *p, mf_tensor **dx) {
  MF_TRY(mf_conv2d_backward_input(g, w, x_shape, p, dx));
  return record_conv_backward("conv2d_backward_input", bw_conv_dx, g, w, p, dx);
}

static mf_status conv_dw(const mf_tensor *g, const mf_tensor *x, const int64_t *w_shape,
                         const mf_pool2d_params *p, mf_tensor **dw) {
  MF_TRY(mf_conv2d_backward_weight(g, x, w_shape, p, dw));
  return record_conv_backward("conv2d_backward_weight", bw_conv_dw, g, x, p, dw);
}

/* saved: 0 = x, 1 = w */
static mf_status bw_conv2d(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  if (NEEDS(0)) MF_TRY(conv_dx(g, SAVED(1), n->in[0].shape, &n->pool, &gin[0]));
  if (NEEDS(1)) MF_TRY(conv_dw(g, SAVED(0), n->in[1].shape, &n->pool, &gin[1]));
  if (n->nin > 2 && NEEDS(2)) { /* sum over N, H, W of g (N, O, H, W) */
    mf_tensor *t = NULL, *u = NULL;
    static const int nhwc[4] = {0, 2, 3, 1};
    mf_status s = mf_permute(g, nhwc, &u);
    if (!s && mf_is_contiguous(u)) { /* g stored channels-last: a (N*H*W, O) view, no copy */
      int64_t rows[2] = {-1, g->shape[1]};
      s = mf_reshape(u, 2, rows, &t);
      mf_release(u);
      if (!s) s = mf_reduce(MF_OP_SUM, t, 0, false, &gin[2]);
      mf_release(t);
      return s;
    }
    MF_DROP(u);
    if (s) return s;
    int64_t shape[3] = {g->shape[0], g->shape[1], -1};
    s = mf_reshape(g, 3, shape, &t);
    if (!s) s = mf_reduce(MF_OP_SUM, t, 2, false, &u);
    mf_release(t);
    if (!s) s = mf_reduce(MF_OP_SUM, u, 0, false, &gin[2]);
    mf_release(u);
    return s;
  }
  return MF_OK;
}

mf_status mf_ag_conv2d(const mf_tensor *x, const mf_tensor *w, const mf_tensor *b,
                       const mf_pool2d_params *p, mf_tensor *out) {
  BEGIN("conv2d", bw_conv2d, b ? 3 : 2, x, w, b);
  n->pool = *p;
  mf_ag_save(n, 0, x);
  mf_ag_save(n, 1, w);
  mf_ag_attach(n, out);
  return MF_OK;
}

/* dx = max_pool2d_backward(g, indices), recorded: input g; saved 0 = indices (N, C, OH, OW), flat
 * positions in each (H, W) plane. Its gradient picks gx at those positions: a gather over the
 * planes viewed as (N, C, H*W). */
static mf_status bw_max_pool2d_backward(mf_node *n, const mf_tensor *gx, mf_tensor **gin) {
  const mf_tensor *idx = SAVED(0);
  int64_t planes[3] = {gx->shape[0], gx->shape[1], -1};
  int64_t iflat[3] = {idx->shape[0], idx->shape[1], -1};
  mf_tensor *xf = NULL, *ix = NULL, *t = NULL;
  mf_status s = mf_reshape(gx, 3, planes, &xf);
  if (!s) s = mf_reshape(idx, 3, iflat, &ix);
  if (!s) s = mf_gather(xf, 2, ix, &t);
  if (!s) s = mf_reshape(t, 4, idx->shape, &gin[0]);
  mf_release(xf);
  mf_release(ix);
  mf_release(t);
  (void)n;
  return s;
}

static mf_status bw_max_pool2d(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  MF_TRY(mf_max_pool2d_backward(g, SAVED(0), n->in[0].shape, &gin[0]));
  mf_node *r;
  MF_TRY(record_as("max_pool2d_backward", bw_max_pool2d_backward, 1, &g, NULL, &gin[0], &r));
  if (r) mf_ag_save(r, 0, SAVED(0));
  return MF_OK;
}

mf_status mf_ag_max_pool2d(const mf_tensor *x, const mf_tensor *indices, mf_tensor *out) {
  BEGIN("max_pool2d", bw_max_pool2d, 1, x);
  mf_ag_save(n, 0, indices);
  mf_ag_attach(n, out);
  return MF_OK;
}

/* dx = avg_pool2d_backward(g), recorded: input g. Its adjoint is the pooling itself. */
static mf_status bw_avg_pool2d_backward(mf_node *n, const mf_tensor *gx, mf_tensor **gin) {
  return mf_avg_pool2d(gx, &n->pool, &gin[0]);
}

static mf_status bw_avg_pool2d(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  MF_TRY(mf_avg_pool2d_backward(g, n->in[0].shape, &n->pool, &gin[0]));
  return record_as("avg_pool2d_backward", bw_avg_pool2d_backward, 1, &g, n, &gin[0], NULL);
}

mf_status mf_ag_avg_pool2d(const mf_tensor *x, const mf_pool2d_params *p, mf_tensor *out) {
  BEGIN("avg_pool2d", bw_avg_pool2d, 1, x);
  n->pool = *p;
  mf_ag_attach(n, out);
  return MF_OK;
}

/* saved 0 = the output; ip: dim, log. Not recording: the fused backward. Recording (create_graph):
 * the same formula with ops on the connected output, softmax gx = y g - y sum(y g), log_softmax
 * gx = g - exp(y) sum(g) (sums along dim, kept). */
static mf_status bw_softmax(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  int dim = (int)n->ip[0];
  if (!mf_grad_enabled())
    return n->ip[1] ? mf_log_softmax_backward(SAVED(0), g, dim, &gin[0])
                    : mf_softmax_backward(SAVED(0), g, dim, &gin[0]);
  if (SAVED(0)->ndim == 0) dim = MF_ALL_DIMS;
  mf_tensor *y = NULL, *t = NULL, *u = NULL, *v = NULL;
  mf_status s = mf_ag_saved_output(n, 0, &y);
  if (!s && n->ip[1]) {
    s = mf_reduce(MF_OP_SUM, g, dim, true, &t);
    if (!s) s = mf_unary(MF_OP_EXP, y, &u);
    if (!s) s = mf_mul(u, t, &v);
    if (!s) s = mf_sub(g, v, &gin[0]);
  } else if (!s) {
    s = mf_mul(y, g, &t);
    if (!s) s = mf_reduce(MF_OP_SUM, t, dim, true, &u);
    if (!s) s = mf_mul(y, u, &v);
    if (!s) s = mf_sub(t, v, &gin[0]);
  }
  mf_release(y);
  mf_release(t);
  mf_release(u);
  mf_release(v);
  return s;
}

mf_status mf_ag_softmax(bool log, const mf_tensor *x, int dim, mf_tensor *out) {
  BEGIN(log ? "log_softmax" : "softmax", bw_softmax, 1, x);
  n->ip[0] = dim, n->ip[1] = log;
  mf_status s = mf_ag_save_output(n, 0, out);
  if (s) {
    mf_ag_abort(n);
    return s;
  }
  mf_ag_attach(n, out);
  return MF_OK;
}

/* gx = scatter_add(g) into x's shape, recorded: input g; saved 0 = index; ip: dim, the index's
 * base. Its adjoint gathers gx at the same index. */
static mf_status bw_scatter_add(mf_node *n, const mf_tensor *gx, mf_tensor **gin) {
  return mf_gather_from(gx, (int)n->ip[0], SAVED(0), n->ip[1], &gin[0]);
}

/* saved 0 = index; ip: dim, the index's base */
static mf_status bw_gather(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  MF_TRY(mf_scatter_add_from(n->in[0].ndim, n->in[0].shape, (int)n->ip[0], SAVED(0), n->ip[1], g,
                             &gin[0]));
  mf_node *r;
  MF_TRY(record_as("scatter_add", bw_scatter_add, 1, &g, n, &gin[0], &r));
  if (r) mf_ag_save(r, 0, SAVED(0));
  return MF_OK;
}

mf_status mf_ag_gather(const mf_tensor *x, int dim, const mf_tensor *index, int64_t base,
                       mf_tensor *out) {
  BEGIN("gather", bw_gather, 1, x);
  n->ip[0] = dim, n->ip[1] = base;
  mf_ag_save(n, 0, index);
  mf_ag_attach(n, out);
  return MF_OK;
}

/* ---- cross-entropy ------------------------------------------------------------------------ */

/* Under create_graph, dx = (softmax(x) - (1 - eps) onehot - eps / C) * g[:, None] with ops that
 * record themselves (the one-hot a constant made by scatter_add). */
static mf_status ce_composed(mf_node *n, const mf_tensor *g, mf_tensor **dx) {
  const mf_tensor *x = SAVED(0), *t = SAVED(1);
  int64_t N = n->in[0].shape[0], C = n->in[0].shape[1], col[2] = {N, 1};
  double eps = n->p[0];
  mf_tensor *tc = NULL, *ones = NULL, *hot = NULL, *want = NULL, *p = NULL, *d = NULL, *gc = NULL;
  mf_status s = mf_reshape(t, 2, col, &tc);
  if (!s) s = mf_full(2, col, 1 - eps, x->dtype, mf_tensor_device(x), &ones);
  if (!s) s = mf_scatter_add_from(2, n->in[0].shape, 1, tc, n->ip[0], ones, &hot);
  if (!s) s = binary_num(MF_OP_ADD, hot, eps / (double)C, &want);
  if (!s) s = mf_softmax(x, 1, &p);
  if (!s) s = mf_sub(p, want, &d);
  if (!s) s = mf_reshape(g, 2, col, &gc);
  if (!s) s = mf_mul(d, gc, dx);
  mf_release(tc), mf_release(ones), mf_release(hot), mf_release(want);
  mf_release(p), mf_release(d), mf_release(gc);
  return s;
}

/* saved 0 = x, 1 = target, 2 = lse; ip[0] = base; p[0] = eps */
static mf_status bw_cross_entropy(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  if (mf_grad_enabled()) return ce_composed(n, g, &gin[0]);
  return mf_cross_entropy_backward(SAVED(0), SAVED(1), SAVED(2), g, n->ip[0], n->p[0], &gin[0]);
}

mf_status mf_ag_cross_entropy(const mf_tensor *x, const mf_tensor *target, const mf_tensor *lse,
                              int64_t base, double eps, mf_tensor *out) {
  BEGIN("cross_entropy", bw_cross_entropy, 1, x);
  n->ip[0] = base;
  n->p[0] = eps;
  mf_ag_save(n, 0, x);
  mf_ag_save(n, 1, target);
  mf_ag_save(n, 2, lse);
  mf_ag_attach(n, out);
  return MF_OK;
}

/* ---- batch normalisation ----------------------------------------------------------------- */

/* Training: saved 0 = x (contiguous), 1 = weight (or NULL), 2 = save_stats (2, C); the gradients
 * of x, weight and bias in one call of the fused backward. That op is not recorded, so under
 * create_graph this rule fails rather than return gradients that cannot be differentiated. */
static mf_status bw_batch_norm_train(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  if (mf_grad_enabled())
    return mf_fail(MF_ERR_UNSUPPORTED,
                   "batch_norm: no double backward (create_graph) through the fused op in "
                   "training mode (its backward is one unrecorded kernel)");
  mf_tensor *dx = NULL, *dw = NULL, *db = NULL;
  MF_TRY(mf_batch_norm_backward(g, SAVED(0), SAVED(1), SAVED(2), &dx, &dw, &db));
  if (NEEDS(0)) gin[0] = dx, dx = NULL;
  if (NEEDS(1)) gin[1] = dw, dw = NULL;
  if (NEEDS(2)) gin[2] = db, db = NULL;
  mf_release(dx);
  mf_release(dw);
  mf_release(db);
  return MF_OK;
}

/* Inference, y = (x - mean) invstd w + b with the running stats' mean and invstd fixed: saved
 * 0 = x, 1 = weight (or NULL), 2 = mean (C), 3 = invstd (C). Written with ops (differentiable
 * again): gx = g invstd w, gw = sum g (x - mean) invstd, gb = sum g, sums over all but dim 1. */
static mf_status bw_batch_norm_eval(mf_node *n, const mf_tensor *g, mf_tensor **gin) {
  const mf_edge *e = &n->in[0];
  int64_t C = e->shape[1], vshape[MF_MAX_DIMS];
  for (int d = 0; d < e->ndim; d++) vshape[d] = d == 1 ? C : 1;
  mf_tensor *inv = NULL, *t = NULL, *u = NULL, *v = NULL;
  mf_status s = mf_reshape(SAVED(3), e->ndim, vshape, &inv);
  if (!s && NEEDS(0)) {
    s = mf_mul(g, inv, &t);
    if (!s && SAVED(1)) {
      s = mf_reshape(SAVED(1), e->ndim, vshape, &u);
      if (!s) s = mf_mul(t, u, &v);
      MF_DROP(u);
      MF_DROP(t);
      t = v, v = NULL;
    }
    if (!s) gin[0] = t, t = NULL;
  }
  if (!s && NEEDS(1)) { /* sum g (x - mean) invstd */
    s = mf_reshape(SAVED(2), e->ndim, vshape, &u);
    if (!s) s = mf_sub(SAVED(0), u, &t);
    MF_DROP(u);
    if (!s) s = mf_mul(t, inv, &u);
    MF_DROP(t);
    if (!s) s = mf_mul(g, u, &t);
    MF_DROP(u);
    if (!s) s = mf_sum_to_shape(t, e->ndim, vshape, &u);
    MF_DROP(t);
    if (!s) s = mf_reshape(u, 1, &C, &gin[1]);
    MF_DROP(u);
  }
  if (!s && NEEDS(2)) {
    s = mf_sum_to_shape(g, e->ndim, vshape, &u);
    if (!s) s = mf_reshape(u, 1, &C, &gin[2]);
    MF_DROP(u);
  }
  mf_release(inv);
  mf_release(t);
  return s;
}

mf_status mf_ag_batch_norm(const mf_tensor *x, const mf_tensor *weight, const mf_tensor *bias,
                           bool training, const mf_tensor *stats, const mf_tensor *running_var,
                           double eps, mf_tensor *out) {
  BEGIN("batch_norm", training ? bw_batch_norm_train : bw_batch_norm_eval, 3, x, weight, bias);
  mf_status s = MF_OK;
  if (training) {
    mf_tensor *xc = NULL;
    bool prev = mf_set_grad_enabled(false);
    s = mf_contiguous(x, &xc);
    mf_set_grad_enabled(prev);
    if (!s) s = mf_ag_save(n, 0, xc);
    mf_release(xc);
    if (!s) s = mf_ag_save(n, 2, stats);
  } else { /* copies of the running mean and 1 / sqrt(running_var + eps), recorded by nothing */
    mf_tensor *m = NULL, *t = NULL, *inv = NULL;
    bool prev = mf_set_grad_enabled(false);
    s = binary_num(MF_OP_MUL, stats, 1, &m);
    if (!s) s = binary_num(MF_OP_ADD, running_var, eps, &t);
    if (!s) s = binary_num(MF_OP_POW, t, -0.5, &inv);
    mf_set_grad_enabled(prev);
    if (!s && n->in[1].needs) s = mf_ag_save(n, 0, x); /* only the weight's gradient reads x */
    if (!s) s = mf_ag_save(n, 2, m);
    if (!s) s = mf_ag_save(n, 3, inv);
    mf_release(m);
    mf_release(t);
    mf_release(inv);
  }
  if (!s && weight) s = mf_ag_save(n, 1, weight);
  if (s) {
    mf_ag_abort(n);
    return s;
  }
  mf_ag_attach(n, out);
  return MF_OK;
}
