/* test_autograd.c — the autograd engine and every gradient rule: each differentiable op is
 * checked against central finite differences in float64 (loss = sum(f(x) * r) with a fixed random
 * r), with broadcasting, views, reductions along each dim, matmul shapes and the nn ops; plus
 * accumulation, retain_graph, mf_grad, no-grad mode, in-place errors and a long chain. Second
 * order: every rule again, and conv2d, the pools, softmax, log_softmax, gather and inference
 * batch_norm, through mf_grad with create_graph (gradgradcheck: the derivatives of the first
 * gradients with respect to the inputs and to the output gradient against finite differences). */
#include <stdlib.h>

#include "internal.h"
#include "test.h"

typedef mf_status (*fn_t)(mf_tensor *const *in, mf_tensor **out, const void *ctx);

static mf_tensor *rnd(int ndim, const int64_t *shape, double lo, double hi) {
  mf_tensor *r, *t, *s, *o;
  mf_rand(ndim, shape, MF_F64, NULL, &r);
  mf_scalar(hi - lo, MF_F64, true, NULL, &s);
  mf_mul(r, s, &t);
  mf_release(s);
  mf_scalar(lo, MF_F64, true, NULL, &s);
  mf_add(t, s, &o);
  mf_release(s);
  mf_release(t);
  mf_release(r);
  return o;
}

/* sum(f(in) * r) as a double, with grad mode as it is */
static mf_status loss(fn_t f, mf_tensor *const *in, const void *ctx, mf_tensor *r,
                      mf_tensor **out) {
  mf_tensor *y, *p;
  MF_TRY(f(in, &y, ctx));
  mf_status s = mf_mul(y, r, &p);
  mf_release(y);
  if (s) return s;
  s = mf_reduce(MF_OP_SUM, p, MF_ALL_DIMS, false, out);
  mf_release(p);
  return s;
}

/* Compares ana (d eval / d x, element by element; NULL for zeros) with central differences of
 * eval, a scalar of the inputs as they are now (NAN when it cannot be computed); an element
 * fails unless |numeric - analytic| <= atol + rtol |numeric|. Returns how many failed, printing
 * the first three as "<name>: <what> <which> element <k>: ...". */
static int central_differences(const char *name, const char *what, int which, mf_tensor *x,
                               const double *ana, double atol, double rtol, double (*eval)(void *),
                               void *arg) {
  double *xd = mf_data(x);
  int bad = 0;
  for (int64_t k = 0; k < mf_numel(x); k++) {
    const double keep = xd[k], step = 1e-6;
    xd[k] = keep + step;
    double lp = eval(arg);
    xd[k] = keep - step;
    double lm = eval(arg);
    xd[k] = keep;
    double num = (lp - lm) / (2 * step), a = ana ? ana[k] : 0;
    if (!(fabs(num - a) <= atol + rtol * fabs(num)) && bad++ < 3)
      fprintf(stderr, "%s: %s %d element %lld: analytic %.10g, numeric %.10g\n", name, what, which,
              (long long)k, a, num);
  }
  return bad;
}

/* the scalar gradcheck differentiates: sum(f(in) * r) */
typedef struct loss_args {
  fn_t f;
  mf_tensor **in;
  const void *ctx;
  mf_tensor *r;
} loss_args;

static double loss_value(void *arg) {
  loss_args *a = arg;
  mf_tensor *t;
  double v = NAN;
  if (!loss(a->f, a->in, a->ctx, a->r, &t)) mf_item(t, &v), mf_release(t);
  return v;
}

/* Compares the analytic gradient of every input with central differences. */
static void gradcheck(const char *name, fn_t f, int nin, mf_tensor **in, const void *ctx) {
  mf_tensor *y;
  if (f(in, &y, ctx)) {
    fprintf(stderr, "%s: forward failed: %s\n", name, mf_error());
    t_failed++;
    return;
  }
  mf_tensor *r = rnd(y->ndim, y->shape, -1, 1);
  mf_release(y);
  for (int i = 0; i < nin; i++) {
    mf_set_requires_grad(in[i], true);
    mf_set_grad(in[i], NULL);
  }
  mf_tensor *l;
  CHECK_OK(loss(f, in, ctx, r, &l));
  CHECK_OK(mf_backward(l, NULL, false));
  mf_release(l);
  bool prev = mf_set_grad_enabled(false);
  int bad = 0;
  loss_args la = {f, in, ctx, r};
  for (int i = 0; i < nin; i++)
    bad +=
        central_differences(name, "input", i + 1, in[i], in[i]->grad ? mf_data(in[i]->grad) : NULL,
                            1e-6, 1e-5, loss_value, &la);
  mf_set_grad_enabled(prev);
  if (bad)
    t_failed++;
  else
    t_passed++;
  for (int i = 0; i < nin; i++) {
    mf_set_grad(in[i], NULL);
    mf_set_requires_grad(in[i], false);
  }
  mf_release(r);
}

/* ---- the functions checked ---------------------------------------------------------------- */

static mf_status f_binary(mf_tensor *const *in, mf_tensor **out, const void *ctx) {
  return mf_binary(*(const mf_op *)ctx, in[0], in[1], out);
}
static mf_status f_unary(mf_tensor *const *in, mf_tensor **out, const void *ctx) {
  return mf_unary(*(const mf_op *)ctx, in[0], out);
}
static mf_status f_clamp(mf_tensor *const *in, mf_tensor **out, const void *ctx) {
  (void)ctx;
  return mf_clamp(in[0], -0.3, 0.4, out);
}
static mf_status f_where(mf_tensor *const *in, mf_tensor **out, const void *ctx) {
  (void)ctx;
  mf_tensor *c;
  MF_TRY(mf_binary(MF_OP_GT, in[0], in[1], &c));
  mf_status s = mf_where(c, in[0], in[1], out);
  mf_release(c);
  return s;
}
static mf_status f_cast(mf_tensor *const *in, mf_tensor **out, const void *ctx) {
  (void)ctx;
  mf_tensor *c;
  MF_TRY(mf_cast(in[0], MF_F64, &c)); /* a copy: the gradient passes through */
  mf_status s = mf_mul(c, in[0], out);
  mf_release(c);
  return s;
}

typedef struct view_ctx {
  int kind, a, b;
} view_ctx;

/* A view, then a non-linear op so that each element's gradient differs. */
static mf_status f_view(mf_tensor *const *in, mf_tensor **out, const void *ctx) {
  const view_ctx *v = ctx;
  mf_tensor *t = NULL;
  int64_t s[2] = {-1, 6};
  int perm[3] = {2, 0, 1};
  int64_t e[4] = {2, 2, 3, 4};
  mf_status st;
  switch (v->kind) {
  case 0: st = mf_reshape(in[0], 2, s, &t); break;
  case 1: st = mf_transpose(in[0], v->a, v->b, &t); break;
  case 2: st = mf_permute(in[0], perm, &t); break;
  case 3: st = mf_narrow(in[0], v->a, 1, v->b, &t); break;
  case 4: st = mf_select(in[0], v->a, v->b, &t); break;
  case 5: st = mf_slice(in[0], v->a, 0, 3, 2, &t); break;
  case 6: st = mf_expand(in[0], 4, e, &t); break; /* 2x1x4 → 2x2x3x4? see caller */
  case 7: st = mf_unsqueeze(in[0], v->a, &t); break;
  case 8: st = mf_flatten(in[0], 0, 1, &t); break;
  default: {
    mf_tensor *tt;
    MF_TRY(mf_transpose(in[0], 0, 2, &tt));
    st = mf_contiguous(tt, &t);
    mf_release(tt);
  }
  }
  if (st) return st;
  mf_status s2 = mf_mul(t, t, out);
  mf_release(t);
  return s2;
}

static mf_status f_cat(mf_tensor *const *in, mf_tensor **out, const void *ctx) {
  mf_tensor *u;
  MF_TRY(mf_mul(in[0], in[0], &u));
  mf_tensor *list[3] = {u, in[1], in[0]};
  mf_status s = *(const int *)ctx ? mf_stack(3, list, 1, out) : mf_cat(3, list, 1, out);
  mf_release(u);
  return s;
}

typedef struct red_ctx {
  mf_op op;
  int dim;
  bool keepdim;
  int correction;
  bool std;
} red_ctx;

static mf_status f_reduce(mf_tensor *const *in, mf_tensor **out, const void *ctx) {
  const red_ctx *r = ctx;
  if (r->std) return mf_std(in[0], r->dim, r->correction, r->keepdim, out);
  if (r->op == MF_OP_VAR) return mf_var(in[0], r->dim, r->correction, r->keepdim, out);
  return mf_reduce(r->op, in[0], r->dim, r->keepdim, out);
}

static mf_status f_matmul(mf_tensor *const *in, mf_tensor **out, const void *ctx) {
  (void)ctx;
  return mf_matmul(in[0], in[1], out);
}

/* x @ w^T and x^T^T @ w: operands that are transposed views (a Linear layer's weight) */
static mf_status f_matmul_t(mf_tensor *const *in, mf_tensor **out, const void *ctx) {
  (void)ctx;
  mf_tensor *wt, *xt, *xtt;
  MF_TRY(mf_transpose(in[1], 0, 1, &wt));
  MF_TRY(mf_transpose(in[0], 0, 1, &xt));
  MF_TRY(mf_contiguous(xt, &xtt));
  mf_release(xt);
  MF_TRY(mf_transpose(xtt, 0, 1, &xt)); /* a column-major view of x's values */
  mf_status s = mf_matmul(xt, wt, out);
  mf_release(wt);
  mf_release(xt);
  mf_release(xtt);
  return s;
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_elementwise(void) {
  int64_t s23[2] = {2, 3}, s3[1] = {3}, s21[2] = {2, 1};
  mf_op ops[] = {MF_OP_ADD, MF_OP_SUB,     MF_OP_MUL,    MF_OP_DIV,
                 MF_OP_POW, MF_OP_MAXIMUM, MF_OP_MINIMUM};
  for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
    mf_tensor *in[2] = {rnd(2, s23, 0.5, 2), rnd(1, s3, 0.5, 2)}; /* broadcast b over rows */
    gradcheck(mf_op_name(ops[k]), f_binary, 2, in, &ops[k]);
    mf_release(in[1]);
    in[1] = rnd(2, s21, 0.5, 2); /* broadcast over columns */
    gradcheck(mf_op_name(ops[k]), f_binary, 2, in, &ops[k]);
    mf_release(in[0]);
    mf_release(in[1]);
  }
  mf_op un[] = {MF_OP_NEG,  MF_OP_ABS,  MF_OP_EXP,     MF_OP_LOG,
                MF_OP_SQRT, MF_OP_TANH, MF_OP_SIGMOID, MF_OP_RELU};
  for (size_t k = 0; k < sizeof un / sizeof un[0]; k++) {
    bool pos = un[k] == MF_OP_LOG || un[k] == MF_OP_SQRT;
    mf_tensor *in[1] = {rnd(2, s23, pos ? 0.5 : -1, 2)};
    gradcheck(mf_op_name(un[k]), f_unary, 1, in, &un[k]);
    mf_release(in[0]);
  }
  mf_tensor *in[2] = {rnd(2, s23, -1, 1), rnd(2, s23, -1, 1)};
  gradcheck("clamp", f_clamp, 1, in, NULL);
  gradcheck("where", f_where, 2, in, NULL);
  gradcheck("cast", f_cast, 1, in, NULL);
  mf_release(in[0]);
  mf_release(in[1]);
}

static void test_views(void) {
  int64_t s234[3] = {2, 3, 4}, s214[3] = {2, 1, 4};
  view_ctx cases[] = {{0, 0, 0}, {1, 0, 2},  {1, -1, 1}, {2, 0, 0}, {3, 1, 2}, {3, 2, 3},
                      {4, 1, 2}, {4, -1, 0}, {5, 2, 0},  {7, 1, 0}, {8, 0, 0}, {9, 0, 0}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    mf_tensor *in[1] = {rnd(3, s234, -1, 1)};
    char name[32];
    snprintf(name, sizeof name, "view kind %d", cases[k].kind);
    gradcheck(name, f_view, 1, in, &cases[k]);
    mf_release(in[0]);
  }
  view_ctx ex = {6, 0, 0};
  mf_tensor *in[1] = {rnd(3, s214, -1, 1)};
  int64_t e4[4] = {2, 2, 3, 4};
  (void)e4;
  mf_tensor *t;
  /* 2x1x4 cannot expand to 2x2x3x4; use 3x4 → 2x2x3x4 */
  mf_release(in[0]);
  int64_t s34[2] = {3, 4};
  in[0] = rnd(2, s34, -1, 1);
  CHECK_OK(mf_expand(in[0], 4, (int64_t[]){2, 2, 3, 4}, &t));
  mf_release(t);
  gradcheck("expand", f_view, 1, in, &ex);
  mf_release(in[0]);

  int64_t s23[2] = {2, 3};
  mf_tensor *c[2] = {rnd(2, s23, -1, 1), rnd(2, s23, -1, 1)};
  int cat = 0, stack = 1;
  gradcheck("cat", f_cat, 2, c, &cat);
  gradcheck("stack", f_cat, 2, c, &stack);
  mf_release(c[0]);
  mf_release(c[1]);
}

static void test_reductions(void) {
  int64_t s234[3] = {2, 3, 4};
  mf_op ops[] = {MF_OP_SUM, MF_OP_MEAN, MF_OP_PROD, MF_OP_MAX, MF_OP_MIN, MF_OP_VAR, MF_OP_VAR};
  int dims[] = {0, 1, -1, MF_ALL_DIMS};
  for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++)
    for (size_t d = 0; d < 4; d++)
      for (int keep = 0; keep < 2; keep++) {
        bool std = k == 6; /* the second VAR entry checks std */
        red_ctx r = {ops[k], dims[d], keep, (int)(d % 2), std};
        mf_tensor *in[1] = {rnd(3, s234, 0.5, 2)};
        char name[64];
        snprintf(name, sizeof name, "%s dim %d keepdim %d", std ? "std" : mf_op_name(ops[k]),
                 dims[d], keep);
        gradcheck(name, f_reduce, 1, in, &r);
        mf_release(in[0]);
      }
}

static void test_matmul(void) {
  struct {
    int na, nb;
    int64_t a[3], b[3];
  } cases[] = {
      {2, 2, {3, 4}, {4, 5}},    {1, 2, {4}, {4, 5}},       {2, 1, {3, 4}, {4}},
      {1, 1, {4}, {4}},          {3, 2, {2, 3, 4}, {4, 5}}, {3, 3, {2, 3, 4}, {1, 4, 2}},
      {2, 3, {3, 4}, {2, 4, 5}},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    mf_tensor *in[2] = {rnd(cases[k].na, cases[k].a, -1, 1), rnd(cases[k].nb, cases[k].b, -1, 1)};
    char name[32];
    snprintf(name, sizeof name, "matmul case %zu", k + 1);
    gradcheck(name, f_matmul, 2, in, NULL);
    mf_release(in[0]);
    mf_release(in[1]);
  }
  int64_t sx[2] = {3, 4}, sw[2] = {5, 4};
  mf_tensor *in[2] = {rnd(2, sx, -1, 1), rnd(2, sw, -1, 1)};
  gradcheck("matmul of transposed views", f_matmul_t, 2, in, NULL);
  /* the weight's gradient through its transpose is contiguous */
  mf_tensor *y, *l;
  mf_set_requires_grad(in[1], true);
  CHECK_OK(f_matmul_t(in, &y, NULL));
  CHECK_OK(mf_reduce(MF_OP_SUM, y, MF_ALL_DIMS, false, &l));
  CHECK_OK(mf_backward(l, NULL, false));
  CHECK(in[1]->grad && mf_is_contiguous(in[1]->grad));
  mf_release(l);
  mf_release(y);
  mf_release(in[0]);
  mf_release(in[1]);
}

static void test_engine(void) {
  int64_t s2[1] = {2};
  mf_tensor *x, *y, *z, *l, *g;
  double v;
  CHECK_OK(mf_full(1, s2, 3, MF_F32, NULL, &x));
  CHECK_OK(mf_set_requires_grad(x, true));
  CHECK(mf_requires_grad(x) && mf_is_leaf(x));
  /* l = sum(x * x), twice: gradients accumulate */
  for (int k = 0; k < 2; k++) {
    CHECK_OK(mf_mul(x, x, &y));
    CHECK(strcmp(mf_grad_fn_name(y), "mul") == 0);
    CHECK_OK(mf_reduce(MF_OP_SUM, y, MF_ALL_DIMS, false, &l));
    CHECK_OK(mf_backward(l, NULL, false));
    CHECK_FAILS(mf_backward(l, NULL, false), MF_ERR_ARG, "already freed");
    mf_release(l);
    mf_release(y);
  }
  int64_t i0 = 0;
  CHECK_OK(mf_get(x->grad, &i0, &v));
  CHECK_CLOSE(v, 12, 0, 0); /* 2 * (2x) with x = 3 */

  /* retain_graph allows a second backward; an implied gradient needs one element */
  mf_set_grad(x, NULL);
  CHECK_OK(mf_mul(x, x, &y));
  CHECK_FAILS(mf_backward(y, NULL, false), MF_ERR_SHAPE, "one-element");
  CHECK_OK(mf_ones(1, s2, MF_F32, NULL, &g));
  CHECK_OK(mf_backward(y, g, true));
  CHECK_OK(mf_backward(y, g, false));
  CHECK_OK(mf_get(x->grad, &i0, &v));
  CHECK_CLOSE(v, 12, 0, 0);
  mf_release(g);

  /* mf_grad: no accumulation into .grad, a non-leaf input, create_graph for a second order */
  mf_set_grad(x, NULL);
  mf_release(y);
  CHECK_OK(mf_mul(x, x, &y));
  CHECK_OK(mf_reduce(MF_OP_SUM, y, MF_ALL_DIMS, false, &l));
  mf_tensor *ins[2] = {x, y}, *gs[2];
  CHECK_OK(mf_grad(1, &l, NULL, 2, ins, false, false, gs));
  CHECK(x->grad == NULL);
  CHECK_OK(mf_get(gs[0], &i0, &v));
  CHECK_CLOSE(v, 6, 0, 0);
  CHECK_OK(mf_get(gs[1], &i0, &v));
  CHECK_CLOSE(v, 1, 0, 0);
  mf_release(gs[0]);
  mf_release(gs[1]);
  mf_release(l);
  mf_release(y);
  /* d/dx sum(x^3) = 3x^2; d2 = 6x */
  CHECK_OK(mf_mul(x, x, &y));
  CHECK_OK(mf_mul(y, x, &z));
  CHECK_OK(mf_reduce(MF_OP_SUM, z, MF_ALL_DIMS, false, &l));
  mf_tensor *g1, *g1s, *g2;
  CHECK_OK(mf_grad(1, &l, NULL, 1, &x, false, true, &g1));
  CHECK_OK(mf_get(g1, &i0, &v));
  CHECK_CLOSE(v, 27, 1e-4, 0);
  CHECK(mf_requires_grad(g1));
  CHECK_OK(mf_reduce(MF_OP_SUM, g1, MF_ALL_DIMS, false, &g1s));
  CHECK_OK(mf_grad(1, &g1s, NULL, 1, &x, false, false, &g2));
  CHECK_OK(mf_get(g2, &i0, &v));
  CHECK_CLOSE(v, 18, 1e-4, 0);
  mf_release(g1);
  mf_release(g1s);
  mf_release(g2);
  mf_release(l);
  mf_release(z);
  mf_release(y);

  /* a gradient comes back in the input's dtype */
  mf_tensor *x64;
  mf_set_grad(x, NULL);
  CHECK_OK(mf_cast(x, MF_F64, &x64));
  CHECK_OK(mf_reduce(MF_OP_SUM, x64, MF_ALL_DIMS, false, &l));
  CHECK_OK(mf_backward(l, NULL, false));
  CHECK(x->grad && x->grad->dtype == MF_F32);
  CHECK_OK(mf_get(x->grad, &i0, &v));
  CHECK_CLOSE(v, 1, 0, 0);
  mf_release(l);
  mf_release(x64);

  /* no-grad mode records nothing; in-place writes to tensors that require grad fail */
  bool prev = mf_set_grad_enabled(false);
  CHECK_OK(mf_mul(x, x, &y));
  CHECK(!mf_requires_grad(y));
  mf_release(y);
  CHECK_OK(mf_fill_(x, 1)); /* allowed without grad mode */
  mf_set_grad_enabled(prev);
  CHECK_FAILS(mf_fill_(x, 2), MF_ERR_ARG, "requires grad");
  mf_tensor *row;
  CHECK_OK(mf_select(x, 0, 1, &row));
  CHECK_FAILS(mf_fill_(row, 2), MF_ERR_ARG, "in place");
  mf_release(row);
  /* a saved tensor written in place since (even with the values it had): the backward stops,
   * naming the node */
  mf_tensor *w, *prod, *sum;
  CHECK_OK(mf_full(1, s2, 2, MF_F32, NULL, &w));
  CHECK_OK(mf_mul(x, w, &prod));
  CHECK_OK(mf_reduce(MF_OP_SUM, prod, MF_ALL_DIMS, false, &sum));
  unsigned v0 = w->storage->version;
  CHECK_OK(mf_fill_(w, 2)); /* the same values, but written */
  CHECK(w->storage->version == v0 + 1);
  CHECK_FAILS(mf_backward(sum, NULL, true), MF_ERR_ARG, "mul saved for its gradient");
  mf_release(sum);
  mf_release(prod);
  mf_release(w);
  mf_tensor *iv;
  CHECK_OK(mf_ones(1, s2, MF_I64, NULL, &iv));
  CHECK_FAILS(mf_set_requires_grad(iv, true), MF_ERR_DTYPE, "floating");
  mf_release(iv);

  /* a long chain frees without deep recursion and backpropagates through every link */
  mf_set_grad(x, NULL);
  mf_tensor *cur = mf_retain(x), *half;
  CHECK_OK(mf_scalar(1.0001, MF_F32, true, NULL, &half));
  for (int k = 0; k < 100000; k++) {
    mf_tensor *nx;
    if (mf_mul(cur, half, &nx)) break;
    mf_release(cur);
    cur = nx;
  }
  CHECK_OK(mf_reduce(MF_OP_SUM, cur, MF_ALL_DIMS, false, &l));
  CHECK_OK(mf_backward(l, NULL, false));
  CHECK_OK(mf_get(x->grad, &i0, &v));
  CHECK_CLOSE(v, pow(1.0001, 100000), 0, 1e-2);
  mf_release(l);
  mf_release(cur);
  mf_release(half);
  mf_release(x);
}

/* ---- second order ---------------------------------------------------------------------------- */

/* sum_i sum(G_i * v_i) where G = the gradients of sum(f(in) * r) with respect to in, computed with
 * create_graph when `create` (so that the result can be differentiated again). */
static mf_status grad_dot(fn_t f, int nin, mf_tensor **in, const void *ctx, mf_tensor *r,
                          mf_tensor *const *v, bool create, mf_tensor **out) {
  mf_tensor *l, *g[4] = {NULL}, *acc = NULL;
  *out = NULL;
  MF_TRY(loss(f, in, ctx, r, &l));
  mf_status s = mf_grad(1, &l, NULL, nin, in, false, create, g);
  mf_release(l);
  for (int i = 0; i < nin && !s; i++) {
    if (!g[i]) continue;
    mf_tensor *p, *q, *a;
    s = mf_mul(g[i], v[i], &p);
    if (s) break;
    s = mf_reduce(MF_OP_SUM, p, MF_ALL_DIMS, false, &q);
    mf_release(p);
    if (s) break;
    if (!acc) {
      acc = q;
      continue;
    }
    s = mf_add(acc, q, &a);
    mf_release(acc);
    mf_release(q);
    acc = s ? NULL : a;
  }
  for (int i = 0; i < nin; i++) mf_release(g[i]);
  if (!s && !acc) s = mf_scalar(0, MF_F64, false, NULL, &acc);
  if (s) {
    mf_release(acc);
    return s;
  }
  *out = acc;
  return MF_OK;
}

/* the scalar gradgradcheck differentiates: grad_dot without a graph */
typedef struct grad_dot_args {
  fn_t f;
  int nin;
  mf_tensor **in;
  const void *ctx;
  mf_tensor *r, **v;
} grad_dot_args;

static double grad_dot_value(void *arg) {
  grad_dot_args *a = arg;
  mf_tensor *t;
  double x = NAN;
  if (!grad_dot(a->f, a->nin, a->in, a->ctx, a->r, a->v, false, &t)) mf_item(t, &x), mf_release(t);
  return x;
}

/* Like torch.autograd.gradgradcheck: the derivatives of sum(G * v) (G the first derivatives of
 * sum(f(in) * r), from mf_grad with create_graph) with respect to every input and to r (the output
 * gradient) against central differences. */
static void gradgradcheck(const char *name, fn_t f, int nin, mf_tensor **in, const void *ctx) {
  mf_tensor *y;
  if (f(in, &y, ctx)) {
    fprintf(stderr, "%s (second order): forward failed: %s\n", name, mf_error());
    t_failed++;
    return;
  }
  mf_tensor *all[5], *v[4], *h[5] = {NULL}, *l2 = NULL;
  for (int i = 0; i < nin; i++) {
    v[i] = rnd(in[i]->ndim, in[i]->shape, -1, 1);
    all[i] = in[i];
  }
  all[nin] = rnd(y->ndim, y->shape, -1, 1); /* r */
  mf_release(y);
  for (int i = 0; i <= nin; i++) mf_set_requires_grad(all[i], true);
  int bad = 0;
  if (grad_dot(f, nin, in, ctx, all[nin], v, true, &l2)) {
    fprintf(stderr, "%s (second order): create_graph failed: %s\n", name, mf_error());
    bad++;
  } else if (mf_requires_grad(l2) && mf_grad(1, &l2, NULL, nin + 1, all, false, false, h)) {
    fprintf(stderr, "%s (second order): the second backward failed: %s\n", name, mf_error());
    bad++;
  }
  for (int i = 0; i <= nin; i++) /* a gradient may be a strided view (a transpose's) */
    if (h[i] && !mf_is_contiguous(h[i])) {
      mf_tensor *c = NULL;
      mf_contiguous(h[i], &c);
      mf_release(h[i]);
      h[i] = c;
    }
  mf_release(l2);
  char second[160];
  snprintf(second, sizeof second, "%s (second order)", name);
  grad_dot_args ga = {f, nin, in, ctx, all[nin], v};
  for (int i = 0; i <= nin && !bad; i++)
    bad +=
        central_differences(second, i < nin ? "input" : "output gradient", i < nin ? i + 1 : 1,
                            all[i], h[i] ? mf_data(h[i]) : NULL, 1e-5, 1e-4, grad_dot_value, &ga);
  if (bad)
    t_failed++;
  else
    t_passed++;
  for (int i = 0; i <= nin; i++) {
    mf_release(h[i]);
    mf_set_requires_grad(all[i], false);
  }
  for (int i = 0; i < nin; i++) mf_release(v[i]);
  mf_release(all[nin]);
}

/* x / (x * x + 1): the output of div reaches the divisor's gradient */
static mf_status f_ratio(mf_tensor *const *in, mf_tensor **out, const void *ctx) {
  (void)ctx;
  mf_tensor *sq, *den, *one;
  MF_TRY(mf_mul(in[0], in[0], &sq));
  MF_TRY(mf_scalar(1, MF_F64, true, NULL, &one));
  mf_status s = mf_add(sq, one, &den);
  mf_release(sq);
  mf_release(one);
  if (s) return s;
  s = mf_div(in[0], den, out);
  mf_release(den);
  return s;
}

typedef struct nn_ctx {
  int kind; /* 0 conv2d, 1 conv2d without bias, 2 max_pool2d, 3 avg_pool2d, 4 softmax,
               5 log_softmax, 6 gather, 7 batch_norm (inference) */
  mf_pool2d_params p;
  int dim;
  bool pad_counts;
} nn_ctx;

static mf_status f_nn(mf_tensor *const *in, mf_tensor **out, const void *ctx) {
  const nn_ctx *c = ctx;
  switch (c->kind) {
  case 0: return mf_conv2d(in[0], in[1], in[2], &c->p, out);
  case 1: return mf_conv2d(in[0], in[1], NULL, &c->p, out);
  case 2: return mf_max_pool2d(in[0], &c->p, out, NULL);
  case 3: return mf_avg_pool2d(in[0], &c->p, out);
  case 4: return mf_softmax(in[0], c->dim, out);
  case 5: return mf_log_softmax(in[0], c->dim, out);
  case 6: {
    int64_t s[2] = {3, 4}, iv[12] = {0, 2, 1, 1, 2, 0, 0, 0, 1, 2, 2, 1};
    mf_tensor *idx, *t;
    MF_TRY(mf_zeros(2, s, MF_I64, NULL, &idx));
    for (int k = 0; k < 12; k++) ((int64_t *)mf_data(idx))[k] = iv[k];
    if (c->dim == 1) { /* index (3, 4) into x (3, 3) along dim 1 */
      mf_status st = mf_gather(in[0], 1, idx, &t);
      mf_release(idx);
      if (st) return st;
    } else { /* index (3, 3) into x (3, 3) along dim 0 */
      mf_tensor *n3;
      MF_TRY(mf_narrow(idx, 1, 0, 3, &n3));
      mf_status st = mf_gather(in[0], 0, n3, &t);
      mf_release(n3);
      mf_release(idx);
      if (st) return st;
    }
    mf_status st = mf_mul(t, t, out); /* non-linear: each gathered element's gradient differs */
    mf_release(t);
    return st;
  }
  default: {
    int64_t C = in[0]->shape[1];
    mf_tensor *m, *var;
    MF_TRY(mf_full(1, &C, 0.1, MF_F64, NULL, &m));
    MF_TRY(mf_full(1, &C, 0.7, MF_F64, NULL, &var));
    mf_status s = mf_batch_norm(in[0], in[1], in[2], m, var, false, 0.1, 1e-5, out, NULL);
    mf_release(m);
    mf_release(var);
    return s;
  }
  }
}

static void test_second_order(void) {
  int64_t s23[2] = {2, 3}, s3[1] = {3}, s21[2] = {2, 1};
  mf_op ops[] = {MF_OP_ADD, MF_OP_SUB,     MF_OP_MUL,    MF_OP_DIV,
                 MF_OP_POW, MF_OP_MAXIMUM, MF_OP_MINIMUM};
  for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
    mf_tensor *in[2] = {rnd(2, s23, 0.5, 2), rnd(1, s3, 0.5, 2)};
    gradgradcheck(mf_op_name(ops[k]), f_binary, 2, in, &ops[k]);
    mf_release(in[1]);
    in[1] = rnd(2, s21, 0.5, 2);
    gradgradcheck(mf_op_name(ops[k]), f_binary, 2, in, &ops[k]);
    mf_release(in[0]);
    mf_release(in[1]);
  }
  mf_op un[] = {MF_OP_NEG,  MF_OP_ABS,  MF_OP_EXP,     MF_OP_LOG,
                MF_OP_SQRT, MF_OP_TANH, MF_OP_SIGMOID, MF_OP_RELU};
  for (size_t k = 0; k < sizeof un / sizeof un[0]; k++) {
    bool pos = un[k] == MF_OP_LOG || un[k] == MF_OP_SQRT;
    mf_tensor *in[1] = {rnd(2, s23, pos ? 0.5 : -1, 2)};
    gradgradcheck(mf_op_name(un[k]), f_unary, 1, in, &un[k]);
    mf_release(in[0]);
  }
  mf_tensor *in[3] = {rnd(2, s23, -1, 1), rnd(2, s23, -1, 1), NULL};
  gradgradcheck("clamp", f_clamp, 1, in, NULL);
  gradgradcheck("where", f_where, 2, in, NULL);
  gradgradcheck("cast", f_cast, 1, in, NULL);
  gradgradcheck("x / (x * x + 1)", f_ratio, 1, in, NULL);
  gradgradcheck("cat", f_cat, 2, in, &(int){0});
  gradgradcheck("stack", f_cat, 2, in, &(int){1});
  mf_release(in[0]);
  mf_release(in[1]);

  int64_t s234[3] = {2, 3, 4};
  view_ctx cases[] = {{0, 0, 0}, {1, 0, 2},  {1, -1, 1}, {2, 0, 0}, {3, 1, 2}, {3, 2, 3},
                      {4, 1, 2}, {4, -1, 0}, {5, 2, 0},  {7, 1, 0}, {8, 0, 0}, {9, 0, 0}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    char name[32];
    snprintf(name, sizeof name, "view kind %d", cases[k].kind);
    in[0] = rnd(3, s234, -1, 1);
    gradgradcheck(name, f_view, 1, in, &cases[k]);
    mf_release(in[0]);
  }
  int64_t s34[2] = {3, 4};
  in[0] = rnd(2, s34, -1, 1);
  gradgradcheck("expand", f_view, 1, in, &(view_ctx){6, 0, 0});
  mf_release(in[0]);

  mf_op rops[] = {MF_OP_SUM, MF_OP_MEAN, MF_OP_PROD, MF_OP_MAX, MF_OP_MIN, MF_OP_VAR, MF_OP_VAR};
  int dims[] = {0, 1, -1, MF_ALL_DIMS};
  for (size_t k = 0; k < sizeof rops / sizeof rops[0]; k++)
    for (size_t d = 0; d < 4; d++) {
      bool std = k == 6;
      red_ctx r = {rops[k], dims[d], d % 2 == 0, (int)(d % 2), std};
      char name[64];
      if (dims[d] == MF_ALL_DIMS)
        snprintf(name, sizeof name, "%s of all", std ? "std" : mf_op_name(rops[k]));
      else
        snprintf(name, sizeof name, "%s dim %d", std ? "std" : mf_op_name(rops[k]), dims[d]);
      in[0] = rnd(3, s234, 0.5, 2);
      gradgradcheck(name, f_reduce, 1, in, &r);
      mf_release(in[0]);
    }

  struct {
    int na, nb;
    int64_t a[3], b[3];
  } mm[] = {{2, 2, {3, 4}, {4, 5}},
            {1, 2, {4}, {4, 5}},
            {2, 1, {3, 4}, {4}},
            {1, 1, {4}, {4}},
            {3, 3, {2, 3, 4}, {1, 4, 2}}};
  for (size_t k = 0; k < sizeof mm / sizeof mm[0]; k++) {
    char name[32];
    snprintf(name, sizeof name, "matmul case %zu", k + 1);
    in[0] = rnd(mm[k].na, mm[k].a, -1, 1);
    in[1] = rnd(mm[k].nb, mm[k].b, -1, 1);
    gradgradcheck(name, f_matmul, 2, in, NULL);
    mf_release(in[0]);
    mf_release(in[1]);
  }
  int64_t sx[2] = {3, 4}, sw[2] = {5, 4};
  in[0] = rnd(2, sx, -1, 1);
  in[1] = rnd(2, sw, -1, 1);
  gradgradcheck("matmul of transposed views", f_matmul_t, 2, in, NULL);
  mf_release(in[0]);
  mf_release(in[1]);

  /* nn ops */
  int64_t xs[4] = {2, 2, 5, 5}, ws[4] = {3, 2, 3, 3}, bs[1] = {3};
  nn_ctx conv = {.kind = 0, .p = {.stride = {2, 1}, .pad = {1, 0, 1, 2}}};
  in[0] = rnd(4, xs, -1, 1), in[1] = rnd(4, ws, -1, 1), in[2] = rnd(1, bs, -1, 1);
  gradgradcheck("conv2d", f_nn, 3, in, &conv);
  conv.kind = 1, conv.p = (mf_pool2d_params){.stride = {1, 1}};
  gradgradcheck("conv2d without bias", f_nn, 2, in, &conv);
  mf_release(in[1]);
  mf_release(in[2]);
  nn_ctx pool = {.kind = 2, .p = {.kernel = {2, 2}, .stride = {2, 2}}};
  gradgradcheck("max_pool2d", f_nn, 1, in, &pool);
  pool.p = (mf_pool2d_params){.kernel = {3, 2}, .stride = {2, 1}, .pad = {1, 1, 1, 0}};
  gradgradcheck("max_pool2d padded", f_nn, 1, in, &pool);
  pool.kind = 3;
  gradgradcheck("avg_pool2d", f_nn, 1, in, &pool);
  pool.p.count_include_pad = true;
  gradgradcheck("avg_pool2d counting padding", f_nn, 1, in, &pool);
  int64_t c2[1] = {2};
  in[1] = rnd(1, c2, 0.5, 1.5), in[2] = rnd(1, c2, -1, 1);
  gradgradcheck("batch_norm inference", f_nn, 3, in, &(nn_ctx){.kind = 7});
  mf_release(in[0]);
  mf_release(in[1]);
  mf_release(in[2]);
  for (int kind = 4; kind <= 5; kind++)
    for (int dim = -1; dim <= 1; dim++) {
      char name[48];
      snprintf(name, sizeof name, "%s dim %d", kind == 4 ? "softmax" : "log_softmax", dim);
      in[0] = rnd(3, s234, -2, 2);
      gradgradcheck(name, f_nn, 1, in, &(nn_ctx){.kind = kind, .dim = dim});
      mf_release(in[0]);
    }
  int64_t s33[2] = {3, 3};
  for (int dim = 0; dim <= 1; dim++) {
    in[0] = rnd(2, s33, -1, 1);
    gradgradcheck(dim ? "gather dim 1" : "gather dim 0", f_nn, 1, in,
                  &(nn_ctx){.kind = 6, .dim = dim});
    mf_release(in[0]);
  }
}

int main(void) {
  mf_manual_seed(7);
  test_engine();
  test_elementwise();
  test_views();
  test_reductions();
  test_matmul();
  test_second_order();
  return test_summary();
}
