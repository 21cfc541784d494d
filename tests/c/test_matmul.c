/* test_matmul.c — mf_matmul against a plain double-precision reference computed here: 2-D, the
 * 1-D cases (dot, vector @ matrix, matrix @ vector, vector @ batch), batched with broadcasting
 * (including the one-GEMM and parallel small-batch paths), transposed and strided operands,
 * float64, integers (wrapping), mixed dtypes, empty sizes, a larger product, and the errors. */
#include <stdint.h>
#include <stdlib.h>

#include "test.h"

/* ---- data ------------------------------------------------------------------------------------ */

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static double urand(void) { /* xorshift64*, [0, 1) */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static int64_t numel_of(int nd, const int64_t *shape) {
  int64_t n = 1;
  for (int d = 0; d < nd; d++) n *= shape[d];
  return n;
}

/* A contiguous tensor of random values fitting dt. */
static mf_tensor *rnd(mf_dtype dt, int nd, const int64_t *shape) {
  int64_t n = numel_of(nd, shape);
  double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
  for (int64_t i = 0; i < n; i++) {
    double u = urand();
    v[i] = dt == MF_F32 || dt == MF_F64 ? 2 * u - 1
           : dt == MF_U8                ? (int)(u * 21)
                                        : (int)(u * 11) - 5;
  }
  mf_tensor *t64 = NULL, *t = NULL;
  CHECK_OK(mf_from_host(nd, shape, MF_F64, v, NULL, &t64));
  if (dt == MF_F64)
    t = t64;
  else {
    CHECK_OK(mf_cast(t64, dt, &t));
    mf_release(t64);
  }
  free(v);
  return t;
}

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define R(dt, ...) rnd(dt, sizeof((int64_t[]){__VA_ARGS__}) / 8, SHAPE(__VA_ARGS__))

/* ---- reference ------------------------------------------------------------------------------- */

/* numpy matmul of the logical values of a and b in double, with Σ|a||b| per element (for the
 * tolerance). Returns the result's ndim and fills oshape. */
static int ref_matmul(const mf_tensor *a, const mf_tensor *b, double **out, double **absout,
                      int64_t *oshape) {
  int64_t na = mf_numel(a), nb = mf_numel(b);
  double *av = malloc((size_t)(na ? na : 1) * sizeof *av),
         *bv = malloc((size_t)(nb ? nb : 1) * sizeof *bv);
  CHECK_OK(mf_to_host(a, MF_F64, av));
  CHECK_OK(mf_to_host(b, MF_F64, bv));
  /* A: (abatch..., M, K), B: (bbatch..., K, N) */
  int64_t as[MF_MAX_DIMS + 1] = {0}, bs[MF_MAX_DIMS + 1] = {0};
  int nda = a->ndim, ndb = b->ndim;
  for (int d = 0; d < nda; d++) as[d] = a->shape[d];
  for (int d = 0; d < ndb; d++) bs[d] = b->shape[d];
  if (nda == 1) as[1] = as[0], as[0] = 1, nda = 2;
  if (ndb == 1) bs[1] = 1, ndb = 2;
  int64_t M = as[nda - 2], K = as[nda - 1], N = bs[ndb - 1];
  int nbat = (nda > ndb ? nda : ndb) - 2;
  int64_t bshape[MF_MAX_DIMS];
  for (int d = 0; d < nbat; d++) {
    int da = d - (nbat - (nda - 2)), db = d - (nbat - (ndb - 2));
    int64_t x = da >= 0 ? as[da] : 1, y = db >= 0 ? bs[db] : 1;
    bshape[d] = x == 1 ? y : x;
  }
  int64_t batch = numel_of(nbat, bshape);
  double *o = calloc((size_t)(batch * M * N + 1), sizeof *o);
  double *oa = calloc((size_t)(batch * M * N + 1), sizeof *oa);
  for (int64_t bi = 0; bi < batch; bi++) {
    int64_t offa = 0, offb = 0, rest = bi, idx[MF_MAX_DIMS];
    for (int d = nbat - 1; d >= 0; d--) idx[d] = rest % bshape[d], rest /= bshape[d];
    for (int d = 0; d < nbat; d++) {
      int da = d - (nbat - (nda - 2)), db = d - (nbat - (ndb - 2));
      if (da >= 0) offa = offa * as[da] + (as[da] == 1 ? 0 : idx[d]);
      if (db >= 0) offb = offb * bs[db] + (bs[db] == 1 ? 0 : idx[d]);
    }
    const double *A = av + offa * M * K, *B = bv + offb * K * N;
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) {
        double s = 0, sa = 0;
        for (int64_t k = 0; k < K; k++)
          s += A[i * K + k] * B[k * N + j], sa += fabs(A[i * K + k] * B[k * N + j]);
        o[(bi * M + i) * N + j] = s;
        oa[(bi * M + i) * N + j] = sa;
      }
  }
  int nd = 0;
  for (int d = 0; d < nbat; d++) oshape[nd++] = bshape[d];
  if (a->ndim > 1) oshape[nd++] = M;
  if (b->ndim > 1) oshape[nd++] = N;
  free(av);
  free(bv);
  *out = o;
  *absout = oa;
  return nd;
}

/* The exact result wrapped to an integer dtype's width, as the kernel computes it. */
static double wrap(double v, mf_dtype dt) {
  int64_t i = (int64_t)v;
  if (dt == MF_U8) return (double)(uint8_t)i;
  if (dt == MF_I32) return (double)(int32_t)(uint32_t)i;
  return v;
}

/* Checks matmul(a, b): dtype `want`, numpy's shape, values within the rounding of K products. */
static void check_mm(const char *what, const mf_tensor *a, const mf_tensor *b, mf_dtype want) {
  double *ref, *refabs;
  int64_t oshape[MF_MAX_DIMS];
  int nd = ref_matmul(a, b, &ref, &refabs, oshape);
  int64_t K = a->shape[a->ndim - 1];
  mf_tensor *c = NULL;
  mf_status s = mf_matmul(a, b, &c);
  bool ok = s == MF_OK;
  if (!ok) fprintf(stderr, "%s: matmul failed: %s\n", what, mf_error());
  if (ok && (c->dtype != want || c->ndim != nd)) {
    fprintf(stderr, "%s: got %s with %d dims, wanted %s with %d\n", what, mf_dtype_name(c->dtype),
            c->ndim, mf_dtype_name(want), nd);
    ok = false;
  }
  for (int d = 0; ok && d < nd; d++)
    if (c->shape[d] != oshape[d]) {
      char buf[96];
      fprintf(stderr, "%s: got shape %s\n", what, mf_shape_str(c, buf, sizeof buf));
      ok = false;
    }
  if (ok) {
    int64_t n = mf_numel(c);
    double *got = malloc((size_t)(n ? n : 1) * sizeof *got);
    CHECK_OK(mf_to_host(c, MF_F64, got));
    double eps = want == MF_F32 ? 6e-8 : want == MF_F64 ? 1.2e-16 : 0;
    for (int64_t i = 0; i < n && ok; i++) {
      double r = eps ? ref[i] : wrap(ref[i], want), tol = 2 * (K + 2) * eps * refabs[i];
      if (!(fabs(got[i] - r) <= tol)) {
        fprintf(stderr, "%s: [%lld] = %.17g, expected %.17g (tol %g)\n", what, (long long)i, got[i],
                r, tol);
        ok = false;
      }
    }
    free(got);
  }
  if (ok)
    t_passed++;
  else
    t_failed++;
  mf_release(c);
  free(ref);
  free(refabs);
}

/* ---- cases ----------------------------------------------------------------------------------- */

static void test_shapes(mf_dtype dt) {
  mf_tensor *a, *b;
#define CASE(what, A, B)                                                                           \
  do {                                                                                             \
    a = A, b = B;                                                                                  \
    check_mm(what, a, b, dt);                                                                      \
    mf_release(a);                                                                                 \
    mf_release(b);                                                                                 \
  } while (0)
  CASE("2-D", R(dt, 3, 4), R(dt, 4, 5));
  CASE("1x1", R(dt, 1, 1), R(dt, 1, 1));
  CASE("dot", R(dt, 7), R(dt, 7));
  CASE("vector @ matrix", R(dt, 4), R(dt, 4, 5));
  CASE("matrix @ vector", R(dt, 3, 4), R(dt, 4));
  CASE("vector @ batch", R(dt, 4), R(dt, 2, 4, 5));
  CASE("batch @ vector", R(dt, 2, 3, 4), R(dt, 4));
  CASE("batch broadcast", R(dt, 2, 1, 3, 4), R(dt, 5, 4, 6));
  CASE("batch @ matrix (one GEMM)", R(dt, 4, 3, 5), R(dt, 5, 2));
  CASE("4-D batch @ matrix", R(dt, 2, 3, 3, 5), R(dt, 5, 7));
  CASE("batch @ batch of 1", R(dt, 6, 3, 5), R(dt, 1, 5, 2));
  CASE("matrix @ batch", R(dt, 3, 5), R(dt, 4, 5, 2));
  CASE("many small batches", R(dt, 300, 8, 8), R(dt, 300, 8, 8));
  CASE("many small batches, rows 1", R(dt, 300, 1, 8), R(dt, 300, 8, 9));
  CASE("many small broadcast", R(dt, 1, 8, 8), R(dt, 300, 8, 8));
  CASE("batches above the small size", R(dt, 3, 100, 80), R(dt, 3, 80, 90));
  CASE("small batches in parallel", R(dt, 64, 48, 40), R(dt, 64, 40, 36));
  CASE("broadcast A, batches in parallel", R(dt, 1, 48, 40), R(dt, 2, 32, 40, 36));
  CASE("N = 1", R(dt, 5, 9, 6), R(dt, 5, 6, 1));
#undef CASE
}

/* Transposed and strided views: column-major operands go to BLAS as transposed ones. */
static void test_views(mf_dtype dt) {
  mf_tensor *x = R(dt, 5, 3), *y = R(dt, 4, 5), *xt, *yt, *a = R(dt, 3, 5), *b = R(dt, 5, 4);
  CHECK_OK(mf_transpose(x, 0, 1, &xt)); /* (3, 5) column-major */
  CHECK_OK(mf_transpose(y, 0, 1, &yt)); /* (5, 4) column-major */
  check_mm("A^T @ B", xt, b, dt);
  check_mm("A @ B^T", a, yt, dt);
  check_mm("A^T @ B^T", xt, yt, dt);
  mf_tensor *xtt = NULL;
  CHECK_OK(mf_transpose(xt, -1, -2, &xtt));
  check_mm("(A^T)^T @ ...", xtt, xt, dt); /* (5, 3) @ (3, 5) */
  mf_release(xtt);

  /* batched, transposed last two dims; a batch-transposed (permuted) operand */
  mf_tensor *bx = R(dt, 2, 5, 3), *bxt, *by = R(dt, 5, 2, 4), *byp;
  CHECK_OK(mf_transpose(bx, 1, 2, &bxt)); /* (2, 3, 5) */
  CHECK_OK(mf_transpose(by, 0, 1, &byp)); /* (2, 5, 4), batch stride 4, row stride 8 */
  check_mm("batched A^T @ permuted B", bxt, byp, dt);
  check_mm("batched A^T @ B^T", bxt, yt, dt); /* (2, 3, 5) @ (5, 4) */
  mf_release(bxt);
  mf_release(byp);
  mf_release(bx);
  mf_release(by);

  /* a column of a matrix: 1-D with stride 5 */
  mf_tensor *m = R(dt, 6, 5), *col, *w = R(dt, 6, 4), *v = R(dt, 4, 6);
  CHECK_OK(mf_select(m, 1, 2, &col));
  check_mm("strided vector @ matrix", col, w, dt);
  check_mm("matrix @ strided vector", v, col, dt);
  check_mm("strided dot", col, col, dt);
  mf_release(col);

  /* layouts BLAS cannot take: stride 0 in a matrix dim, stride 2 in both */
  mf_tensor *row = R(dt, 1, 4), *rowx, *wide = R(dt, 3, 8), *sl, *k4 = R(dt, 4, 2);
  CHECK_OK(mf_expand(row, 2, SHAPE(3, 4), &rowx)); /* (3, 4), strides (0, 1) */
  check_mm("expanded rows", rowx, k4, dt);
  mf_release(rowx);
  CHECK_OK(mf_slice(wide, 1, 0, 8, 2, &sl)); /* (3, 4), strides (8, 2) */
  check_mm("stepped columns", sl, k4, dt);
  mf_tensor *slt;
  CHECK_OK(mf_transpose(sl, 0, 1, &slt)); /* (4, 3), strides (2, 8) */
  check_mm("stepped, transposed", slt, a, dt);
  mf_release(slt);
  mf_release(sl);
  mf_release(k4);
  mf_release(wide);
  mf_release(row);
  mf_release(m);
  mf_release(w);
  mf_release(v);
  mf_release(x);
  mf_release(y);
  mf_release(xt);
  mf_release(yt);
  mf_release(a);
  mf_release(b);
}

static void test_dtypes(void) {
  mf_tensor *a = R(MF_I32, 3, 4), *b = R(MF_F32, 4, 2), *c = R(MF_F64, 4, 2), *d = R(MF_I64, 4, 2);
  check_mm("int32 @ float32", a, b, MF_F32);
  check_mm("int32 @ float64", a, c, MF_F64);
  check_mm("int32 @ int64", a, d, MF_I64);
  mf_tensor *u = R(MF_U8, 3, 4);
  check_mm("uint8 @ int64", u, d, MF_I64);
  check_mm("uint8 @ float32", u, b, MF_F32);
  mf_tensor *e = R(MF_F32, 2, 3);
  mf_release(b);
  b = R(MF_F64, 3, 4);
  check_mm("float32 @ float64", e, b, MF_F64);
  mf_release(a);
  mf_release(b);
  mf_release(c);
  mf_release(d);
  mf_release(e);
  mf_release(u);

  /* uint8 wraps modulo 256 (values up to 20, K = 30) */
  mf_tensor *p = R(MF_U8, 5, 30), *q = R(MF_U8, 30, 6);
  check_mm("uint8 wrap", p, q, MF_U8);
  mf_release(p);
  mf_release(q);
  int32_t big[2] = {1 << 30, 1 << 30}, two[2] = {2, 2};
  mf_tensor *x = NULL, *y = NULL, *z = NULL;
  CHECK_OK(mf_from_host(1, SHAPE(2), MF_I32, big, NULL, &x));
  CHECK_OK(mf_from_host(1, SHAPE(2), MF_I32, two, NULL, &y));
  CHECK_OK(mf_matmul(x, y, &z)); /* 2^32 wraps to 0 in int32 */
  double v = -1;
  CHECK_OK(mf_item(z, &v));
  CHECK(z->ndim == 0 && z->dtype == MF_I32 && v == 0);
  mf_release(x);
  mf_release(y);
  mf_release(z);
}

static void test_empty(void) {
  const mf_dtype dts[] = {MF_F32, MF_I64};
  for (int t = 0; t < 2; t++) {
    mf_dtype dt = dts[t];
    mf_tensor *a = R(dt, 3, 0), *b = R(dt, 0, 4), *c = NULL;
    CHECK_OK(mf_matmul(a, b, &c)); /* K = 0: zeros */
    CHECK(c && c->ndim == 2 && c->shape[0] == 3 && c->shape[1] == 4);
    double v[12];
    if (c) CHECK_OK(mf_to_host(c, MF_F64, v));
    bool zero = true;
    for (int i = 0; i < 12; i++) zero = zero && v[i] == 0;
    CHECK(zero);
    mf_release(c);
    mf_release(a);
    mf_release(b);
    a = R(dt, 0, 4), b = R(dt, 4, 5);
    CHECK_OK(mf_matmul(a, b, &c));
    CHECK(c && c->ndim == 2 && c->shape[0] == 0 && c->shape[1] == 5);
    mf_release(c);
    mf_release(a);
    mf_release(b);
    a = R(dt, 0, 2, 3), b = R(dt, 3, 4);
    CHECK_OK(mf_matmul(a, b, &c));
    CHECK(c && c->ndim == 3 && c->shape[0] == 0 && c->shape[1] == 2 && c->shape[2] == 4);
    mf_release(c);
    mf_release(a);
    mf_release(b);
    a = R(dt, 0), b = R(dt, 0);
    CHECK_OK(mf_matmul(a, b, &c)); /* an empty dot product is 0 */
    double s = -1;
    if (c) CHECK_OK(mf_item(c, &s));
    CHECK(c && c->ndim == 0 && s == 0);
    mf_release(c);
    mf_release(a);
    mf_release(b);
  }
}

static void test_errors(void) {
  mf_tensor *a = R(MF_F32, 2, 3), *b = R(MF_F32, 2, 3), *c = NULL;
  CHECK_FAILS(mf_matmul(a, b, &c), MF_ERR_SHAPE, "matmul: sizes 2x3 and 2x3 do not match");
  CHECK(c == NULL);
  mf_tensor *v3 = R(MF_F32, 3), *v4 = R(MF_F32, 4);
  CHECK_FAILS(mf_matmul(v3, v4, &c), MF_ERR_SHAPE, "matmul: sizes 3 and 4 do not match");
  CHECK_FAILS(mf_matmul(a, v4, &c), MF_ERR_SHAPE, "matmul: sizes 2x3 and 4 do not match");
  mf_tensor *p = R(MF_F32, 2, 3, 4), *q = R(MF_F32, 3, 4, 5);
  CHECK_FAILS(mf_matmul(p, q, &c), MF_ERR_SHAPE, "matmul: shapes 2 and 3 cannot be broadcast");
  mf_tensor *s = NULL;
  CHECK_OK(mf_scalar(2, MF_F32, false, NULL, &s));
  CHECK_FAILS(mf_matmul(s, a, &c), MF_ERR_SHAPE, "matmul: both operands need at least 1 dimension");
  mf_tensor *bl = NULL, *bt = R(MF_F32, 3, 2);
  CHECK_OK(mf_zeros(2, SHAPE(3, 2), MF_BOOL, NULL, &bl));
  CHECK_FAILS(mf_matmul(a, bl, &c), MF_ERR_DTYPE, "matmul: bool is not supported");
  CHECK(c == NULL);
  mf_release(a);
  mf_release(b);
  mf_release(v3);
  mf_release(v4);
  mf_release(p);
  mf_release(q);
  mf_release(s);
  mf_release(bl);
  mf_release(bt);
}

static void test_large(void) {
  mf_tensor *a = R(MF_F32, 300, 200), *b = R(MF_F32, 200, 100), *bt = R(MF_F32, 100, 200), *btt;
  check_mm("300x200 @ 200x100", a, b, MF_F32);
  CHECK_OK(mf_transpose(bt, 0, 1, &btt));
  check_mm("300x200 @ (100x200)^T", a, btt, MF_F32);
  mf_release(a);
  mf_release(b);
  mf_release(bt);
  mf_release(btt);
  a = R(MF_F64, 257, 129), b = R(MF_F64, 129, 65);
  check_mm("float64 257x129 @ 129x65", a, b, MF_F64);
  mf_release(a);
  mf_release(b);
  a = R(MF_I32, 70, 60), b = R(MF_I32, 60, 50);
  check_mm("int32 70x60 @ 60x50", a, b, MF_I32);
  mf_release(a);
  mf_release(b);
}

int main(void) {
  const mf_dtype dts[] = {MF_F32, MF_F64, MF_I32, MF_I64, MF_U8};
  for (int t = 0; t < 5; t++) {
    test_shapes(dts[t]);
    test_views(dts[t]);
  }
  test_dtypes();
  test_empty();
  test_errors();
  test_large();
  mf_set_num_threads(1);
  test_shapes(MF_F32);
  mf_set_num_threads(0);
  return test_summary();
}
