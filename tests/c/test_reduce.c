/* test_reduce.c — the reductions (sum prod max min argmax argmin mean, var and std) for every CPU
 * dtype against a plain reference computed here in double (long double for var), along every dim
 * (first, middle, last, negative, all) with keepdim on and off; non-contiguous inputs (transposed
 * and narrowed views); shapes large enough to take the parallel and split paths; NaN and infinity;
 * empty dimensions; 0-d tensors; integer wrap-around; result dtypes and error messages. */
#include <stdint.h>
#include <stdlib.h>

#include "test.h"

static const mf_dtype DTYPES[] = {MF_F32, MF_F64, MF_I32, MF_I64, MF_U8, MF_BOOL};
static const mf_op OPS[] = {MF_OP_SUM,    MF_OP_PROD,   MF_OP_MAX,  MF_OP_MIN,
                            MF_OP_ARGMAX, MF_OP_ARGMIN, MF_OP_MEAN, MF_OP_VAR};
#define NOPS (int)(sizeof OPS / sizeof OPS[0])

/* ---- data ------------------------------------------------------------------------------------ */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) { /* xorshift64*, [0, 1) */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/* Values fitting dtype; near 1 for products so that they stay finite. */
static void random_values(double *v, int64_t n, mf_dtype dt, bool for_prod) {
  for (int64_t i = 0; i < n; i++) {
    double u = urand();
    switch (dt) {
    case MF_F32: v[i] = (float)(for_prod ? exp((u - 0.5) * 0.4) : (u - 0.3) * 20); break;
    case MF_F64: v[i] = for_prod ? exp((u - 0.5) * 0.4) : (u - 0.3) * 20; break;
    case MF_I32:
    case MF_I64: v[i] = for_prod ? (double)((int)(u * 5) - 2) : (double)((int)(u * 41) - 20); break;
    case MF_U8: v[i] = for_prod ? (double)(int)(u * 4) : (double)(int)(u * 256); break;
    default: v[i] = for_prod ? u < 0.9 : u < 0.5; break;
    }
  }
}

static void to_dtype(const double *v, int64_t n, mf_dtype dt, void *buf) {
  for (int64_t i = 0; i < n; i++) {
    switch (dt) {
    case MF_F32: ((float *)buf)[i] = (float)v[i]; break;
    case MF_F64: ((double *)buf)[i] = v[i]; break;
    case MF_I32: ((int32_t *)buf)[i] = (int32_t)v[i]; break;
    case MF_I64: ((int64_t *)buf)[i] = (int64_t)v[i]; break;
    default: ((uint8_t *)buf)[i] = (uint8_t)v[i]; break;
    }
  }
}

static mf_tensor *make(int nd, const int64_t *shape, mf_dtype dt, const double *v) {
  int64_t n = 1;
  for (int d = 0; d < nd; d++) n *= shape[d];
  void *buf = malloc((size_t)(n ? n : 1) * 8);
  to_dtype(v, n, dt, buf);
  mf_tensor *t = NULL;
  CHECK_OK(mf_from_host(nd, shape, dt, buf, NULL, &t));
  free(buf);
  return t;
}

/* A view with logical values v (shape, row-major) whose storage is laid out with dims d0 and d1
 * swapped: the result of mf_transpose, not contiguous. */
static mf_tensor *make_transposed(int nd, const int64_t *shape, mf_dtype dt, const double *v,
                                  int d0, int d1) {
  int64_t pshape[MF_MAX_DIMS], n = 1, idx[MF_MAX_DIMS] = {0};
  for (int d = 0; d < nd; d++) pshape[d] = shape[d], n *= shape[d];
  pshape[d0] = shape[d1], pshape[d1] = shape[d0];
  double *p = malloc((size_t)(n ? n : 1) * sizeof *p);
  for (int64_t i = 0; i < n; i++) { /* logical index idx -> physical offset with d0, d1 swapped */
    int64_t pidx[MF_MAX_DIMS], off = 0;
    for (int d = 0; d < nd; d++) pidx[d] = idx[d];
    pidx[d0] = idx[d1], pidx[d1] = idx[d0];
    for (int d = 0; d < nd; d++) off = off * pshape[d] + pidx[d];
    p[off] = v[i];
    for (int d = nd - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  mf_tensor *phys = make(nd, pshape, dt, p), *t = NULL;
  CHECK_OK(mf_transpose(phys, d0, d1, &t));
  CHECK(!mf_is_contiguous(t) || shape[d0] <= 1 || shape[d1] <= 1);
  mf_release(phys);
  free(p);
  return t;
}

/* A 2-D (r, c) view narrowed out of an (r, c + 5) tensor whose extra columns hold junk. */
static mf_tensor *make_narrowed(int64_t r, int64_t c, mf_dtype dt, const double *v) {
  int64_t shape[2] = {r, c + 5};
  double *p = malloc((size_t)(r * (c + 5)) * sizeof *p);
  for (int64_t i = 0; i < r; i++)
    for (int64_t j = 0; j < c + 5; j++)
      p[i * (c + 5) + j] = j >= 2 && j < c + 2 ? v[i * c + j - 2] : dt == MF_BOOL ? 1 : 77;
  mf_tensor *big = make(2, shape, dt, p), *t = NULL;
  CHECK_OK(mf_narrow(big, 1, 2, c, &t));
  mf_release(big);
  free(p);
  return t;
}

/* ---- reference ------------------------------------------------------------------------------- */

static bool is_float(mf_dtype dt) { return dt == MF_F32 || dt == MF_F64; }

static mf_dtype expect_dtype(mf_op op, mf_dtype dt) {
  if (op == MF_OP_ARGMAX || op == MF_OP_ARGMIN) return MF_I64;
  if ((op == MF_OP_SUM || op == MF_OP_PROD) && !is_float(dt)) return MF_I64;
  return dt;
}

/* Reduces x[o, 0..n, i] (stride `inner`): the value, as double, and exactly for integer results. */
static void ref_one(mf_op op, const double *x, int64_t n, int64_t inner, int corr, double *out,
                    int64_t *iout) {
  *out = 0, *iout = 0;
  switch (op) {
  case MF_OP_SUM:
  case MF_OP_MEAN:
  case MF_OP_VAR: {
    long double s = 0;
    uint64_t us = 0;
    for (int64_t k = 0; k < n; k++) s += x[k * inner], us += (uint64_t)(int64_t)x[k * inner];
    *out = (double)(op == MF_OP_SUM ? s : s / n);
    *iout = (int64_t)us;
    if (op == MF_OP_VAR) {
      long double mean = s / n, m2 = 0;
      for (int64_t k = 0; k < n; k++) m2 += (x[k * inner] - mean) * (x[k * inner] - mean);
      *out = (double)(m2 / (n - corr > 0 ? n - corr : 0));
    }
    break;
  }
  case MF_OP_PROD: {
    long double p = 1;
    uint64_t up = 1;
    for (int64_t k = 0; k < n; k++) p *= x[k * inner], up *= (uint64_t)(int64_t)x[k * inner];
    *out = (double)p, *iout = (int64_t)up;
    break;
  }
  default: { /* extremes: NaN wins, then the first strictly better value */
    bool max = op == MF_OP_MAX || op == MF_OP_ARGMAX;
    double best = n ? x[0] : 0;
    int64_t bi = 0;
    for (int64_t k = 1; k < n && !isnan(best); k++) {
      double v = x[k * inner];
      if (isnan(v) || (max ? v > best : v < best)) best = v, bi = k;
    }
    bool arg = op == MF_OP_ARGMAX || op == MF_OP_ARGMIN;
    *out = arg ? (double)bi : best;
    *iout = arg ? bi : (int64_t)best;
    break;
  }
  }
}

/* Tolerance for one reference value: float results are compared relative to the sum of |x|. */
static double tolerance(mf_op op, mf_dtype dt, const double *x, int64_t n, int64_t inner,
                        double ref) {
  if (!is_float(dt) || op == MF_OP_MAX || op == MF_OP_MIN || op == MF_OP_ARGMAX ||
      op == MF_OP_ARGMIN)
    return 0;
  double abs_sum = 0;
  for (int64_t k = 0; k < n; k++) abs_sum += fabs(x[k * inner]);
  double round = dt == MF_F32 ? 1.2e-7 : 4e-16; /* one rounding to the output dtype */
  switch (op) {
  case MF_OP_SUM: return round * fabs(ref) + 1e-13 * abs_sum;
  case MF_OP_MEAN: return round * fabs(ref) + 1e-13 * abs_sum / (n ? n : 1);
  case MF_OP_PROD: return (round + n * 4e-16) * fabs(ref);
  default: return (round + 1e-12) * fabs(ref) + 1e-300; /* VAR */
  }
}

/* ---- one case -------------------------------------------------------------------------------- */

static int ncases;

/* Checks op(x, dim, keepdim) — or var/std with `corr` — against the reference on v, the logical
 * values of x. std: the square root of the var reference. */
static void check_case(const char *what, mf_op op, bool is_std, int corr, const mf_tensor *x,
                       const double *v, int dim, bool keepdim) {
  ncases++;
  mf_dtype dt = x->dtype;
  int nd = x->ndim, d = dim;
  int64_t outer = 1, n = 1, inner = 1, numel = mf_numel(x);
  int64_t eshape[MF_MAX_DIMS];
  int end = 0;
  if (dim == MF_ALL_DIMS) {
    n = numel;
    if (keepdim)
      for (end = 0; end < nd; end++) eshape[end] = 1;
  } else {
    if (d < 0) d += nd;
    for (int k = 0; k < nd; k++) {
      if (k < d) outer *= x->shape[k];
      if (k > d) inner *= x->shape[k];
      if (k != d)
        eshape[end++] = x->shape[k];
      else if (keepdim)
        eshape[end++] = 1;
    }
    if (nd) n = x->shape[d];
  }

  mf_tensor *r = NULL;
  mf_status s;
  if (op == MF_OP_VAR)
    s = is_std ? mf_std(x, dim, corr, keepdim, &r) : mf_var(x, dim, corr, keepdim, &r);
  else
    s = mf_reduce(op, x, dim, keepdim, &r);
  const char *name = is_std ? "std" : mf_op_name(op);
  if (s) {
    t_failed++;
    fprintf(stderr, "%s: %s %s dim %d keepdim %d failed: %s\n", what, name, mf_dtype_name(dt), dim,
            keepdim, mf_error());
    return;
  }
  bool ok = r->dtype == expect_dtype(op, dt) && r->ndim == end;
  for (int k = 0; ok && k < end; k++) ok = r->shape[k] == eshape[k];
  if (!ok) {
    char b[96];
    t_failed++;
    fprintf(stderr, "%s: %s %s dim %d keepdim %d: got %s %s\n", what, name, mf_dtype_name(dt), dim,
            keepdim, mf_dtype_name(r->dtype), mf_shape_str(r, b, sizeof b));
    mf_release(r);
    return;
  }
  int64_t nout = outer * inner;
  double *got = malloc((size_t)(nout ? nout : 1) * sizeof *got);
  int64_t *igot = malloc((size_t)(nout ? nout : 1) * sizeof *igot);
  bool exact_int = r->dtype == MF_I64;
  CHECK_OK(exact_int ? mf_to_host(r, MF_I64, igot) : mf_to_host(r, MF_F64, got));
  for (int64_t j = 0; j < nout && ok; j++) {
    int64_t o = j / inner, i = j % inner;
    const double *xs = v + o * n * inner + i;
    double ref = 0;
    int64_t iref = 0;
    ref_one(op, xs, n, inner, corr, &ref, &iref);
    if (is_std) ref = sqrt(ref);
    if (r->dtype == MF_F32) ref = (float)ref; /* the exact result rounded to the output dtype */
    if (exact_int) {
      ok = igot[j] == iref;
      if (!ok)
        fprintf(stderr, "%s: %s %s dim %d keepdim %d: [%lld] = %lld, expected %lld\n", what, name,
                mf_dtype_name(dt), dim, keepdim, (long long)j, (long long)igot[j], (long long)iref);
    } else {
      double tol = tolerance(op, dt, xs, n, inner, ref);
      if (is_std) tol = (dt == MF_F32 ? 2.4e-7 : 1e-12) * fabs(ref); /* var's rounding and sqrt's */
      ok = fabs(got[j] - ref) <= tol || (isnan(got[j]) && isnan(ref)) ||
           (isinf(ref) && got[j] == ref);
      if (!ok)
        fprintf(stderr, "%s: %s %s dim %d keepdim %d: [%lld] = %.17g, expected %.17g (tol %g)\n",
                what, name, mf_dtype_name(dt), dim, keepdim, (long long)j, got[j], ref, tol);
    }
  }
  if (ok)
    t_passed++;
  else
    t_failed++;
  free(got);
  free(igot);
  mf_release(r);
}

static bool op_takes(mf_op op, mf_dtype dt) {
  return is_float(dt) || (op != MF_OP_MEAN && op != MF_OP_VAR);
}

static int keep_modes = 2; /* keepdim off, then on (1: off only) */

/* Every op on x along every dim of `dims`, keepdim on and off (var/std with both corrections). */
static void check_all_ops(const char *what, const mf_tensor *x, const double *v, const double *pv,
                          const mf_tensor *px, const int *dims, int ndims) {
  for (int k = 0; k < NOPS; k++) {
    mf_op op = OPS[k];
    if (!op_takes(op, x->dtype)) continue;
    for (int di = 0; di < ndims; di++)
      for (int keep = 0; keep < keep_modes; keep++) {
        if (op == MF_OP_PROD)
          check_case(what, op, false, 0, px, pv, dims[di], keep);
        else if (op == MF_OP_VAR) {
          for (int corr = 0; corr < 2; corr++) {
            check_case(what, op, false, corr, x, v, dims[di], keep);
            check_case(what, op, true, corr, x, v, dims[di], keep);
          }
        } else
          check_case(what, op, false, 0, x, v, dims[di], keep);
      }
  }
}

/* ---- test groups ----------------------------------------------------------------------------- */

/* (4, 5, 6) for every dtype, contiguous and transposed, every dim. */
static void test_small_all_dtypes(void) {
  int64_t shape[3] = {4, 5, 6};
  int dims[] = {0, 1, 2, -1, -2, -3, MF_ALL_DIMS};
  double v[120], pv[120];
  for (size_t t = 0; t < sizeof DTYPES / sizeof DTYPES[0]; t++) {
    mf_dtype dt = DTYPES[t];
    random_values(v, 120, dt, false);
    random_values(pv, 120, dt, true);
    mf_tensor *x = make(3, shape, dt, v), *px = make(3, shape, dt, pv);
    check_all_ops("contiguous 4x5x6", x, v, pv, px, dims, 7);
    mf_release(x);
    mf_release(px);
    x = make_transposed(3, shape, dt, v, 0, 2);
    px = make_transposed(3, shape, dt, pv, 0, 2);
    check_all_ops("transposed 4x5x6", x, v, pv, px, dims, 7);
    mf_release(x);
    mf_release(px);
  }
}

/* Narrowed 2-D views and 1-D / 0-d tensors. */
static void test_views_and_small_ranks(void) {
  double v[7 * 9], pv[7 * 9];
  int dims2[] = {0, 1, -1, MF_ALL_DIMS};
  for (size_t t = 0; t < sizeof DTYPES / sizeof DTYPES[0]; t++) {
    mf_dtype dt = DTYPES[t];
    random_values(v, 63, dt, false);
    random_values(pv, 63, dt, true);
    mf_tensor *x = make_narrowed(7, 9, dt, v), *px = make_narrowed(7, 9, dt, pv);
    CHECK(!mf_is_contiguous(x));
    check_all_ops("narrowed 7x9", x, v, pv, px, dims2, 4);
    mf_release(x);
    mf_release(px);

    int64_t n1 = 11;
    int dims1[] = {0, -1, MF_ALL_DIMS};
    x = make(1, &n1, dt, v), px = make(1, &n1, dt, pv);
    check_all_ops("1-d", x, v, pv, px, dims1, 3);
    mf_release(x);
    mf_release(px);

    int dims0[] = {0, -1, MF_ALL_DIMS}; /* a 0-d tensor reduces over its one element */
    x = make(0, NULL, dt, v), px = make(0, NULL, dt, pv);
    check_all_ops("0-d", x, v, pv, px, dims0, 3);
    mf_release(x);
    mf_release(px);
  }
}

/* Shapes that take the parallel paths: many rows, strided tiles, and split n (few outputs). */
static void run_large(const mf_dtype *dts, int ndt) {
  keep_modes = 1; /* keepdim is a view of the same result: tested on the small shapes */
  static const int64_t shapes[][3] = {
      {3, 100003, 1}, /* last dim long, few rows: split n with row loops */
      {100003, 3, 1}, /* dim 0 long, 3 columns: split n with column loops */
      {1000, 301, 1}, /* many rows; many strided outputs */
      {16, 333, 70},  /* middle dim: tiles */
      {1, 2001, 300}, /* tiles, long n, one outer */
  };
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
    int nd = shapes[si][2] == 1 ? 2 : 3;
    int64_t n = shapes[si][0] * shapes[si][1] * shapes[si][2];
    double *v = malloc((size_t)n * sizeof *v), *pv = malloc((size_t)n * sizeof *pv);
    for (int t = 0; t < ndt; t++) {
      random_values(v, n, dts[t], false);
      random_values(pv, n, dts[t], true);
      mf_tensor *x = make(nd, shapes[si], dts[t], v), *px = make(nd, shapes[si], dts[t], pv);
      int dims[] = {0, 1, 2};
      check_all_ops("large", x, v, pv, px, dims, nd);
      if (si == 0) {
        int all[] = {MF_ALL_DIMS};
        check_all_ops("large all", x, v, pv, px, all, 1);
      }
      mf_release(x);
      mf_release(px);
    }
    free(v);
    free(pv);
  }
  keep_modes = 2;
}

static void test_large(void) {
  const mf_dtype dts[] = {MF_F32, MF_F64, MF_I32, MF_U8};
  run_large(dts, 4);
}

static void test_large_one_thread(void) {
  const mf_dtype dts[] = {MF_F32, MF_I64};
  run_large(dts, 2);
}

/* Float32 sums must not lose what float accumulation would: 1e7 ones plus small values. */
static void test_accuracy(void) {
  int64_t n = 1 << 24;
  float *buf = malloc((size_t)n * sizeof *buf);
  for (int64_t i = 0; i < n; i++) buf[i] = i % 2 ? 1.0f : 0.1f;
  mf_tensor *x = NULL, *r = NULL;
  CHECK_OK(mf_from_host(1, &n, MF_F32, buf, NULL, &x));
  double got = 0, want = (n / 2) * (1.0 + (double)0.1f);
  CHECK_OK(mf_reduce(MF_OP_SUM, x, 0, false, &r));
  CHECK_OK(mf_item(r, &got));
  CHECK_CLOSE(got, want, 0, 1e-7);
  mf_release(r);
  CHECK_OK(mf_reduce(MF_OP_MEAN, x, MF_ALL_DIMS, false, &r));
  CHECK_OK(mf_item(r, &got));
  CHECK_CLOSE(got, want / n, 0, 1e-7);
  mf_release(r);
  /* var of large values with a tiny spread: a one-pass sum-of-squares formula fails here */
  for (int64_t i = 0; i < n; i++) buf[i] = 10000.0f + (i % 2 ? 0.5f : -0.5f);
  mf_release(x);
  CHECK_OK(mf_from_host(1, &n, MF_F32, buf, NULL, &x));
  CHECK_OK(mf_var(x, 0, 0, false, &r));
  CHECK_OK(mf_item(r, &got));
  CHECK_CLOSE(got, 0.25, 0, 1e-6);
  mf_release(r);
  CHECK_OK(mf_std(x, -1, 1, true, &r));
  CHECK(r->ndim == 1 && r->shape[0] == 1 && r->dtype == MF_F32);
  CHECK_OK(mf_item(r, &got));
  CHECK_CLOSE(got, sqrt(0.25 * n / (n - 1)), 0, 1e-6);
  mf_release(r);
  mf_release(x);
  free(buf);
}

/* NaN and infinities: max/min propagate NaN, argmax/argmin point at the first NaN. */
static void test_nan(void) {
  const mf_dtype fdt[] = {MF_F32, MF_F64};
  int dims[] = {0, 1, MF_ALL_DIMS};
  for (int t = 0; t < 2; t++) {
    /* (5, 40): a NaN in some rows and columns, infinities elsewhere */
    double v[200];
    random_values(v, 200, fdt[t], false);
    v[3] = NAN, v[7] = NAN, v[45] = -INFINITY, v[46] = INFINITY, v[130] = NAN, v[199] = INFINITY;
    int64_t shape[2] = {5, 40};
    mf_tensor *x = make(2, shape, fdt[t], v);
    check_all_ops("nan", x, v, v, x, dims, 3);
    mf_release(x);
    /* long rows (split path) and a strided NaN */
    int64_t n = 200000, shape2[2] = {2, 100000};
    double *w = malloc((size_t)n * sizeof *w);
    random_values(w, n, fdt[t], false);
    w[77777] = NAN, w[150001] = NAN, w[150009] = NAN;
    x = make(2, shape2, fdt[t], w);
    check_all_ops("nan long", x, w, w, x, dims, 3);
    mf_release(x);
    free(w);
  }
  /* specific values */
  double v[6] = {1, NAN, 3, NAN, -INFINITY, 2};
  int64_t n = 6;
  mf_tensor *x = make(1, &n, MF_F32, v), *r = NULL;
  double got;
  CHECK_OK(mf_reduce(MF_OP_ARGMAX, x, 0, false, &r));
  CHECK_OK(mf_item(r, &got));
  CHECK(got == 1);
  mf_release(r);
  CHECK_OK(mf_reduce(MF_OP_ARGMIN, x, 0, false, &r));
  CHECK_OK(mf_item(r, &got));
  CHECK(got == 1);
  mf_release(r);
  CHECK_OK(mf_reduce(MF_OP_MIN, x, 0, false, &r));
  CHECK_OK(mf_item(r, &got));
  CHECK(isnan(got));
  mf_release(r);
  mf_release(x);
}

/* Ties give the first index; integer sums wrap like int64. */
static void test_ties_and_wrap(void) {
  double v[8] = {3, 7, 7, 1, 1, 7, 0, 1};
  int64_t shape[2] = {2, 4};
  mf_tensor *x = make(2, shape, MF_I32, v), *r = NULL;
  int64_t idx[4];
  CHECK_OK(mf_reduce(MF_OP_ARGMAX, x, 1, false, &r));
  CHECK_OK(mf_to_host(r, MF_I64, idx));
  CHECK(idx[0] == 1 && idx[1] == 1);
  mf_release(r);
  CHECK_OK(mf_reduce(MF_OP_ARGMIN, x, MF_ALL_DIMS, false, &r));
  CHECK(r->ndim == 0);
  CHECK_OK(mf_to_host(r, MF_I64, idx));
  CHECK(idx[0] == 6);
  mf_release(r);
  CHECK_OK(mf_reduce(MF_OP_ARGMAX, x, 0, true, &r));
  CHECK(r->ndim == 2 && r->shape[0] == 1 && r->shape[1] == 4);
  CHECK_OK(mf_to_host(r, MF_I64, idx));
  CHECK(idx[0] == 0 && idx[1] == 0 && idx[2] == 0 && idx[3] == 0);
  mf_release(r);
  mf_release(x);

  int64_t big[3] = {INT64_MAX, 1, 5}, m = 3, out;
  CHECK_OK(mf_from_host(1, &m, MF_I64, big, NULL, &x));
  CHECK_OK(mf_reduce(MF_OP_SUM, x, 0, false, &r));
  CHECK_OK(mf_to_host(r, MF_I64, &out));
  CHECK(out == INT64_MIN + 5);
  mf_release(r);
  CHECK_OK(mf_reduce(MF_OP_MAX, x, 0, false, &r));
  CHECK(r->dtype == MF_I64);
  CHECK_OK(mf_to_host(r, MF_I64, &out));
  CHECK(out == INT64_MAX);
  mf_release(r);
  mf_release(x);

  uint8_t bytes[4] = {200, 100, 255, 1}; /* uint8 sums widen to int64 */
  int64_t four = 4;
  CHECK_OK(mf_from_host(1, &four, MF_U8, bytes, NULL, &x));
  CHECK_OK(mf_reduce(MF_OP_SUM, x, 0, false, &r));
  CHECK(r->dtype == MF_I64);
  CHECK_OK(mf_to_host(r, MF_I64, &out));
  CHECK(out == 556);
  mf_release(r);
  CHECK_OK(mf_reduce(MF_OP_MAX, x, 0, false, &r));
  CHECK(r->dtype == MF_U8);
  CHECK_OK(mf_to_host(r, MF_I64, &out));
  CHECK(out == 255);
  mf_release(r);
  mf_release(x);

  uint8_t flags[5] = {1, 0, 1, 1, 0}; /* bool: sum counts, max is any */
  int64_t five = 5;
  CHECK_OK(mf_from_host(1, &five, MF_BOOL, flags, NULL, &x));
  CHECK_OK(mf_reduce(MF_OP_SUM, x, 0, false, &r));
  CHECK(r->dtype == MF_I64);
  CHECK_OK(mf_to_host(r, MF_I64, &out));
  CHECK(out == 3);
  mf_release(r);
  CHECK_OK(mf_reduce(MF_OP_MAX, x, 0, false, &r));
  CHECK(r->dtype == MF_BOOL);
  CHECK_OK(mf_to_host(r, MF_I64, &out));
  CHECK(out == 1);
  mf_release(r);
  mf_release(x);
}

/* Empty tensors: sum 0, prod 1, mean and var nan, extremes fail. */
static void test_empty(void) {
  int64_t shape[2] = {0, 3};
  mf_tensor *x = NULL, *r = NULL;
  double vals[3];
  CHECK_OK(mf_zeros(2, shape, MF_F32, NULL, &x));
  CHECK_OK(mf_reduce(MF_OP_SUM, x, 0, false, &r));
  CHECK(r->ndim == 1 && r->shape[0] == 3);
  CHECK_OK(mf_to_host(r, MF_F64, vals));
  CHECK(vals[0] == 0 && vals[1] == 0 && vals[2] == 0);
  mf_release(r);
  CHECK_OK(mf_reduce(MF_OP_PROD, x, 0, true, &r));
  CHECK(r->ndim == 2 && r->shape[0] == 1 && r->shape[1] == 3);
  CHECK_OK(mf_to_host(r, MF_F64, vals));
  CHECK(vals[0] == 1 && vals[2] == 1);
  mf_release(r);
  CHECK_OK(mf_reduce(MF_OP_MEAN, x, 0, false, &r));
  CHECK_OK(mf_to_host(r, MF_F64, vals));
  CHECK(isnan(vals[0]) && isnan(vals[2]));
  mf_release(r);
  CHECK_OK(mf_var(x, 0, 1, false, &r));
  CHECK_OK(mf_to_host(r, MF_F64, vals));
  CHECK(isnan(vals[1]));
  mf_release(r);
  CHECK_OK(mf_reduce(MF_OP_SUM, x, MF_ALL_DIMS, false, &r));
  CHECK(r->ndim == 0);
  CHECK_OK(mf_item(r, vals));
  CHECK(vals[0] == 0);
  mf_release(r);
  CHECK_OK(mf_reduce(MF_OP_MAX, x, 1, false, &r)); /* reducing the non-empty dim: empty result */
  CHECK(r->ndim == 1 && r->shape[0] == 0);
  mf_release(r);
  CHECK_FAILS(mf_reduce(MF_OP_MAX, x, 0, false, &r), MF_ERR_SHAPE,
              "max: cannot reduce an empty dimension");
  CHECK(r == NULL);
  CHECK_FAILS(mf_reduce(MF_OP_ARGMIN, x, MF_ALL_DIMS, false, &r), MF_ERR_SHAPE,
              "argmin: cannot reduce an empty dimension");
  CHECK_FAILS(mf_reduce(MF_OP_MIN, x, -2, true, &r), MF_ERR_SHAPE, "min: cannot reduce");
  mf_release(x);
  CHECK_OK(mf_zeros(2, shape, MF_I32, NULL, &x));
  CHECK_OK(mf_reduce(MF_OP_PROD, x, 0, false, &r));
  CHECK(r->dtype == MF_I64);
  int64_t iv[3];
  CHECK_OK(mf_to_host(r, MF_I64, iv));
  CHECK(iv[0] == 1 && iv[1] == 1 && iv[2] == 1);
  mf_release(r);
  mf_release(x);
  /* a single element with correction 1 is nan, like torch */
  int64_t one = 1;
  CHECK_OK(mf_ones(1, &one, MF_F64, NULL, &x));
  CHECK_OK(mf_var(x, 0, 1, false, &r));
  CHECK_OK(mf_item(r, vals));
  CHECK(isnan(vals[0]));
  mf_release(r);
  mf_release(x);
}

static void test_errors(void) {
  int64_t shape[2] = {2, 3};
  mf_tensor *x = NULL, *r = NULL;
  CHECK_OK(mf_zeros(2, shape, MF_I64, NULL, &x));
  CHECK_FAILS(mf_reduce(MF_OP_MEAN, x, 0, false, &r), MF_ERR_DTYPE,
              "mean: needs a floating dtype, got int64");
  CHECK_FAILS(mf_var(x, 0, 1, false, &r), MF_ERR_DTYPE, "var: needs a floating dtype, got int64");
  CHECK_FAILS(mf_std(x, MF_ALL_DIMS, 1, false, &r), MF_ERR_DTYPE,
              "std: needs a floating dtype, got int64");
  CHECK_FAILS(mf_reduce(MF_OP_SUM, x, 2, false, &r), MF_ERR_INDEX, "sum: dimension");
  CHECK_FAILS(mf_reduce(MF_OP_SUM, x, -3, false, &r), MF_ERR_INDEX, "sum: dimension");
  CHECK_FAILS(mf_reduce(MF_OP_ADD, x, 0, false, &r), MF_ERR_ARG, "not a reduction");
  CHECK(r == NULL);
  mf_release(x);
  CHECK_OK(mf_zeros(2, shape, MF_BOOL, NULL, &x));
  CHECK_FAILS(mf_reduce(MF_OP_MEAN, x, 1, false, &r), MF_ERR_DTYPE,
              "mean: needs a floating dtype, got bool");
  mf_release(x);
}

/* Results are bit-identical whatever the thread count (the split depends on the shape only). */
static void test_thread_count_independence(void) {
  static const int64_t shapes[][3] = {
      {3, 100003, 1}, {100003, 3, 1}, {1, 2001, 300}, {1000, 301, 1}};
  const mf_op ops[] = {MF_OP_SUM, MF_OP_MEAN, MF_OP_VAR, MF_OP_ARGMAX};
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
    int nd = shapes[si][2] == 1 ? 2 : 3;
    int64_t n = shapes[si][0] * shapes[si][1] * shapes[si][2];
    double *v = malloc((size_t)n * sizeof *v);
    random_values(v, n, MF_F32, false);
    mf_tensor *x = make(nd, shapes[si], MF_F32, v);
    for (int k = 0; k < 4; k++)
      for (int dim = -1; dim < nd; dim++) {
        int d = dim < 0 ? MF_ALL_DIMS : dim;
        mf_tensor *r[2] = {NULL, NULL};
        for (int threads = 2; threads >= 1; threads--) {
          mf_set_num_threads(threads);
          if (ops[k] == MF_OP_VAR)
            CHECK_OK(mf_var(x, d, 1, false, &r[threads - 1]));
          else
            CHECK_OK(mf_reduce(ops[k], x, d, false, &r[threads - 1]));
        }
        if (r[0] && r[1]) {
          size_t bytes = (size_t)mf_numel(r[0]) * mf_dtype_size(r[0]->dtype);
          CHECK(memcmp(mf_data(r[0]), mf_data(r[1]), bytes) == 0);
        }
        mf_release(r[0]);
        mf_release(r[1]);
      }
    mf_release(x);
    free(v);
  }
  mf_set_num_threads(0);
}

int main(void) {
  test_small_all_dtypes();
  test_views_and_small_ranks();
  test_large();
  test_accuracy();
  test_nan();
  test_ties_and_wrap();
  test_empty();
  test_errors();
  test_thread_count_independence();
  /* the same results on one thread */
  mf_set_num_threads(1);
  test_large_one_thread();
  mf_set_num_threads(0);
  printf("# %d reduction cases\n", ncases);
  return test_summary();
}
