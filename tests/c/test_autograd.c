/* test_autograd.c — the autograd engine and every gradient rule: each differentiable op is
 * checked against central finite differences in float64 (loss = sum(f(x) * r) with a fixed random
 * r), with broadcasting, views, reductions along each dim, matmul shapes and the nn ops; plus
 * accumulation, retain_graph, mf_grad, no-grad mode, in-place errors and a long chain. */
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
  for (int i = 0; i < nin; i++) {
    mf_tensor *x = in[i];
    double *xd = mf_data(x);
    const double *gd = x->grad ? mf_data(x->grad) : NULL;
    for (int64_t k = 0; k < mf_numel(x); k++) {
      double keep = xd[k], h = 1e-6, lp, lm;
      mf_tensor *t;
      xd[k] = keep + h;
      loss(f, in, ctx, r, &t);
      mf_item(t, &lp);
      mf_release(t);
      xd[k] = keep - h;
      loss(f, in, ctx, r, &t);
      mf_item(t, &lm);
      mf_release(t);
      xd[k] = keep;
      double num = (lp - lm) / (2 * h), ana = gd ? gd[k] : 0;
      if (fabs(num - ana) > 1e-6 + 1e-5 * fabs(num)) {
        if (bad++ < 3)
          fprintf(stderr, "%s: input %d element %lld: analytic %.10g, numeric %.10g\n", name, i + 1,
                  (long long)k, ana, num);
      }
    }
  }
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

int main(void) {
  mf_manual_seed(7);
  test_engine();
  test_elementwise();
  test_views();
  test_reductions();
  test_matmul();
  return test_summary();
}
