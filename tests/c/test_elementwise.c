/* test_elementwise.c — every binary and unary elementwise op, for every CPU dtype it supports,
 * against a plain reference computed here (double precision for floats, 128-bit integers for
 * integers), through the front ends (mf_binary, mf_unary, mf_clamp, mf_where, mf_cast, mf_copy_,
 * mf_fill_, mf_arange) with contiguous, broadcast and strided operands; special values (NaN, +-inf,
 * +-0, negatives, INT_MIN, integer division by zero); the float32 exp/log/tanh/sigmoid accuracy
 * over the whole float range; big tensors on the threaded path against the same op on one thread;
 * the error paths (bool subtraction/negation, GPU-only dtypes, mismatched dtypes). */
#include <float.h>
#include <stdlib.h>

#include "cpu/kernels.h"
#include "internal.h"
#include "test.h"

/* ---- test values and tensors ---------------------------------------------------------------- */

// clang-format off
static const double FV[] = {0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 3.0, -7.0, 0.001, 1e30, -1e30, 0.5,
                            100., -100., 7.0, INFINITY, -INFINITY, NAN,
                            1e-40 /* a float32 denormal */, 88.0, -3.0};
// clang-format on
#define NF ((int)(sizeof FV / sizeof FV[0]))

static const int64_t I32V[] = {0, 1, -1, 2, -2, 3, -3, 7, -7, 100, -100, 13, INT32_MAX, INT32_MIN};
static const int64_t I64V[] = {
    0, 1, -1, 2, -2, 3, -3, 7, -7, 100, -100, (int64_t)1 << 40, INT64_MAX, INT64_MIN, INT32_MIN};
static const int64_t U8V[] = {0, 1, 2, 3, 7, 13, 100, 200, 255};
static const int64_t BV[] = {0, 1};

static bool is_int(mf_dtype dt) { return dt == MF_I32 || dt == MF_I64 || dt == MF_U8; }

/* a value set for a dtype, as doubles (floats) or int64 (integers and bool) */
typedef struct {
  int n;
  const double *f;
  const int64_t *i;
} values;

static values values_of(mf_dtype dt) {
  switch (dt) {
  case MF_I32: return (values){sizeof I32V / sizeof *I32V, NULL, I32V};
  case MF_I64: return (values){sizeof I64V / sizeof *I64V, NULL, I64V};
  case MF_U8: return (values){sizeof U8V / sizeof *U8V, NULL, U8V};
  case MF_BOOL: return (values){2, NULL, BV};
  default: return (values){NF, FV, NULL};
  }
}

/* element k of a value set stored as dtype dt into buf[j] */
static void put(void *buf, int64_t j, mf_dtype dt, values v, int k) {
  switch (dt) {
  case MF_F32: ((float *)buf)[j] = (float)v.f[k]; break;
  case MF_F64: ((double *)buf)[j] = v.f[k]; break;
  case MF_I32: ((int32_t *)buf)[j] = (int32_t)v.i[k]; break;
  case MF_I64: ((int64_t *)buf)[j] = v.i[k]; break;
  case MF_U8: ((uint8_t *)buf)[j] = (uint8_t)v.i[k]; break;
  case MF_BOOL: ((uint8_t *)buf)[j] = v.i[k] != 0; break;
  default: break;
  }
}

/* a value as the dtype holds it: in x (floats, as double) or xi (integers) */
static void get(const void *buf, int64_t j, mf_dtype dt, double *x, int64_t *xi) {
  *x = 0;
  *xi = 0;
  switch (dt) {
  case MF_F32:
    *x = ((const float *)buf)[j];
    *xi = 0;
    break;
  case MF_F64:
    *x = ((const double *)buf)[j];
    *xi = 0;
    break;
  case MF_I32: *xi = ((const int32_t *)buf)[j]; break;
  case MF_I64: *xi = ((const int64_t *)buf)[j]; break;
  case MF_U8:
  case MF_BOOL: *xi = ((const uint8_t *)buf)[j]; break;
  default: break;
  }
  if (dt != MF_F32 && dt != MF_F64) *x = (double)*xi;
}

/* A tensor of shape (rows, cols) with element (r, c) = value idx(r, c), laid out per `layout`:
 * 0 contiguous, 1 transposed (a view of a cols x rows tensor), 2 every other column of a wider
 * tensor. */
static mf_tensor *make2d(mf_dtype dt, values v, int64_t rows, int64_t cols, int layout,
                         int (*idx)(int64_t, int64_t)) {
  size_t es = mf_dtype_size(dt);
  int64_t pr = layout == 1 ? cols : rows, pc = layout == 1 ? rows : layout == 2 ? 2 * cols : cols;
  char *buf = calloc((size_t)(pr * pc), es);
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) {
      int64_t j = layout == 1 ? c * rows + r : layout == 2 ? r * pc + 2 * c : r * cols + c;
      put(buf, j, dt, v, idx(r, c));
    }
  int64_t shape[2] = {pr, pc};
  mf_tensor *base = NULL, *t = NULL;
  if (mf_from_host(2, shape, dt, buf, NULL, &base)) {
    fprintf(stderr, "make2d: %s\n", mf_error());
    free(buf);
    return NULL;
  }
  free(buf);
  if (layout == 0) return base;
  if (layout == 1)
    mf_transpose(base, 0, 1, &t);
  else
    mf_slice(base, 1, 0, pc, 2, &t);
  mf_release(base);
  return t;
}

static int NV; /* the size of the value set in use */
static int idx_row(int64_t r, int64_t c) {
  (void)c;
  return (int)r;
}
static int idx_col(int64_t r, int64_t c) {
  (void)r;
  return (int)c;
}
static int idx_a(int64_t r, int64_t c) { return (int)((r * NV + c) / NV); }
static int idx_b(int64_t r, int64_t c) { return (int)((r * NV + c) % NV); }

/* ---- references --------------------------------------------------------------------------- */

static int64_t wrap(__int128 v, mf_dtype dt) {
  switch (dt) {
  case MF_I32: return (int32_t)(uint32_t)(unsigned __int128)v;
  case MF_I64: return (int64_t)(uint64_t)(unsigned __int128)v;
  case MF_U8: return (uint8_t)(unsigned __int128)v;
  case MF_BOOL: return v != 0;
  default: return (int64_t)v;
  }
}

static double round_to(double v, mf_dtype dt) { return dt == MF_F32 ? (double)(float)v : v; }

/* Reference of a binary op on floats: computed in double, rounded to dt. */
static double ref_binary_f(mf_op op, double x, double y, mf_dtype dt) {
  double r;
  switch (op) {
  case MF_OP_ADD: r = x + y; break;
  case MF_OP_SUB: r = x - y; break;
  case MF_OP_MUL: r = x * y; break;
  case MF_OP_DIV: r = x / y; break;
  case MF_OP_POW: r = pow(x, y); break;
  case MF_OP_MAXIMUM: r = isnan(x) || isnan(y) ? NAN : x > y ? x : y; break;
  case MF_OP_MINIMUM: r = isnan(x) || isnan(y) ? NAN : x < y ? x : y; break;
  case MF_OP_REMAINDER: /* Python's %: fmod (exact), moved to the divisor's sign */
    if (y == 0 || isnan(x) || isnan(y) || isinf(x))
      r = NAN;
    else {
      r = fmod(x, y);
      if (r != 0 && (r < 0) != (y < 0)) r += y;
    }
    break;
  case MF_OP_FLOOR_DIVIDE: /* Python's //, except that x // 0 is x / 0 as in torch */
    if (y == 0)
      r = x / y;
    else if (isnan(x) || isnan(y) || isinf(x))
      r = NAN;
    else if (isinf(y))
      r = (x == 0 || (x < 0) == (y < 0)) ? copysign(0.0, x / y) : -1.0;
    else { /* CPython's float_floor_div (Objects/floatobject.c) */
      double mod = fmod(x, y), div = (x - mod) / y;
      if (mod != 0 && (y < 0) != (mod < 0)) div -= 1.0;
      if (div != 0) {
        r = floor(div);
        if (div - r > 0.5) r += 1.0;
      } else {
        r = copysign(0.0, x / y);
      }
    }
    break;
  case MF_OP_EQ: return x == y;
  case MF_OP_NE: return x != y;
  case MF_OP_GT: return x > y;
  case MF_OP_GE: return x >= y;
  case MF_OP_LT: return x < y;
  case MF_OP_LE: return x <= y;
  case MF_OP_LOGICAL_AND: return x != 0 && y != 0;
  case MF_OP_LOGICAL_OR: return x != 0 || y != 0;
  default: r = NAN;
  }
  return round_to(r, dt);
}

/* Reference of a binary op on integers (and bool), in 128 bits, wrapped to dt. */
static int64_t ref_binary_i(mf_op op, int64_t x, int64_t y, mf_dtype dt) {
  __int128 a = x, b = y, r = 0;
  switch (op) {
  case MF_OP_ADD: r = dt == MF_BOOL ? (a || b) : a + b; break;
  case MF_OP_SUB: r = a - b; break;
  case MF_OP_MUL:
    r = dt == MF_BOOL ? (a && b) : (__int128)((unsigned __int128)a * (unsigned __int128)b);
    break;
  case MF_OP_DIV: r = b == 0 ? 0 : a / b; break; /* truncating; /0 defined as 0 */
  case MF_OP_POW:
    if (dt == MF_BOOL)
      r = a || !b;
    else if (b < 0)
      r = a == 1 ? 1 : a == -1 ? (b % 2 ? -1 : 1) : 0;
    else { /* a^b mod 2^64 by binary powering (then wrapped to the dtype's width) */
      uint64_t p = 1, base = (uint64_t)x;
      for (uint64_t e = (uint64_t)y; e; e >>= 1) {
        if (e & 1) p *= base;
        base *= base;
      }
      r = (__int128)p;
    }
    break;
  case MF_OP_MAXIMUM: r = a > b ? a : b; break;
  case MF_OP_MINIMUM: r = a < b ? a : b; break;
  case MF_OP_REMAINDER:
    if (b == 0)
      r = 0;
    else {
      r = a % b;
      if (r != 0 && (r < 0) != (b < 0)) r += b;
    }
    break;
  case MF_OP_FLOOR_DIVIDE:
    if (b == 0)
      r = 0;
    else {
      r = a / b;
      if (a % b != 0 && (a < 0) != (b < 0)) r -= 1;
    }
    break;
  case MF_OP_EQ: return a == b;
  case MF_OP_NE: return a != b;
  case MF_OP_GT: return a > b;
  case MF_OP_GE: return a >= b;
  case MF_OP_LT: return a < b;
  case MF_OP_LE: return a <= b;
  case MF_OP_LOGICAL_AND: return a != 0 && b != 0;
  case MF_OP_LOGICAL_OR: return a != 0 || b != 0;
  default: break;
  }
  return wrap(r, dt);
}

static bool bool_result(mf_op op) {
  return (op >= MF_OP_EQ && op <= MF_OP_LOGICAL_OR) || op == MF_OP_LOGICAL_NOT;
}

/* Tolerance in units of the result: exact for most ops; 1 ulp for the ops libm rounds. */
static double tol_of(mf_op op, mf_dtype dt, double want) {
  double eps = dt == MF_F32 ? FLT_EPSILON : DBL_EPSILON;
  double tiny = dt == MF_F32 ? 1e-45 : 5e-324;
  switch (op) {
  case MF_OP_POW: return 2 * eps * fabs(want) + tiny;
  case MF_OP_FLOOR_DIVIDE: return 2 * eps * fabs(want); /* huge quotients: the last bit */
  case MF_OP_EXP:
  case MF_OP_LOG:
  case MF_OP_TANH:
  case MF_OP_SIGMOID: return 2 * eps * fabs(want) + 2 * tiny;
  default: return 0;
  }
}

static bool same_value(double got, double want, double tol) {
  if (isnan(want)) return isnan(got);
  if (isinf(want)) return got == want;
  if (want == 0 && tol == 0) return got == 0 && signbit(got) == signbit(want);
  return fabs(got - want) <= tol;
}

/* ---- binary ops ----------------------------------------------------------------------------- */

static const mf_op BINARY_OPS[] = {
    MF_OP_ADD,         MF_OP_SUB,       MF_OP_MUL,       MF_OP_DIV,          MF_OP_POW,
    MF_OP_MAXIMUM,     MF_OP_MINIMUM,   MF_OP_REMAINDER, MF_OP_FLOOR_DIVIDE, MF_OP_EQ,
    MF_OP_NE,          MF_OP_GT,        MF_OP_GE,        MF_OP_LT,           MF_OP_LE,
    MF_OP_LOGICAL_AND, MF_OP_LOGICAL_OR};
static const mf_dtype CPU_DTYPES[] = {MF_F32, MF_F64, MF_I32, MF_I64, MF_U8, MF_BOOL};

static bool bool_unsupported(mf_op op) {
  return op == MF_OP_SUB || op == MF_OP_DIV || op == MF_OP_REMAINDER || op == MF_OP_FLOOR_DIVIDE;
}

/* Checks out (rows x cols) against the reference of op on value pairs (ia(r,c), ib(r,c)). */
static int check_binary_result(mf_op op, mf_dtype dt, const mf_tensor *out, values v,
                               int (*ia)(int64_t, int64_t), int (*ib)(int64_t, int64_t),
                               int64_t rows, int64_t cols, const char *what) {
  int64_t n = rows * cols;
  mf_dtype odt = out->dtype;
  char *buf = malloc((size_t)n * mf_dtype_size(odt));
  mf_to_host(out, odt, buf);
  int bad = 0;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) {
      int ka = ia(r, c), kb = ib(r, c);
      double got;
      int64_t goti;
      get(buf, r * cols + c, odt, &got, &goti);
      bool ok;
      char wantstr[64];
      if (!is_int(dt) && dt != MF_BOOL) {
        double x = round_to(v.f[ka], dt), y = round_to(v.f[kb], dt);
        double want = ref_binary_f(op, x, y, dt);
        ok = same_value(got, want, tol_of(op, dt, want));
        snprintf(wantstr, sizeof wantstr, "%.9g op %.9g = %.9g", x, y, want);
      } else {
        int64_t x = wrap(v.i[ka], dt), y = wrap(v.i[kb], dt);
        int64_t want = ref_binary_i(op, x, y, dt);
        ok = goti == want;
        snprintf(wantstr, sizeof wantstr, "%lld op %lld = %lld", (long long)x, (long long)y,
                 (long long)want);
      }
      if (!ok) {
        if (bad < 3)
          fprintf(stderr, "%s %s (%s): got %.9g (%lld), want %s\n", mf_op_name(op),
                  mf_dtype_name(dt), what, got, (long long)goti, wantstr);
        bad++;
      }
    }
  free(buf);
  return bad;
}

static void test_binary(void) {
  for (size_t d = 0; d < sizeof CPU_DTYPES / sizeof *CPU_DTYPES; d++) {
    mf_dtype dt = CPU_DTYPES[d];
    values v = values_of(dt);
    NV = v.n;
    for (size_t o = 0; o < sizeof BINARY_OPS / sizeof *BINARY_OPS; o++) {
      mf_op op = BINARY_OPS[o];
      mf_op kop = op;
      /* the front end computes integer and bool division in float32: check the kernel directly */
      bool direct = op == MF_OP_DIV && (is_int(dt) || dt == MF_BOOL);
      if (dt == MF_BOOL && bool_unsupported(op)) {
        mf_tensor *a = make2d(dt, v, 2, 1, 0, idx_row), *b = make2d(dt, v, 1, 2, 0, idx_col), *r;
        if (op == MF_OP_SUB)
          CHECK_FAILS(mf_binary(op, a, b, &r), MF_ERR_DTYPE, "sub: bool");
        else if (op != MF_OP_DIV)
          CHECK_FAILS(mf_binary(op, a, b, &r), MF_ERR_DTYPE, "bool");
        mf_release(a);
        mf_release(b);
        continue;
      }
      /* 1: all pairs by broadcasting a column against a row */
      mf_tensor *a = make2d(dt, v, v.n, 1, 0, idx_row), *b = make2d(dt, v, 1, v.n, 0, idx_col);
      mf_tensor *out = NULL;
      if (direct) {
        int64_t shape[2] = {v.n, v.n};
        mf_tensor *ea, *eb;
        CHECK_OK(mf_empty(2, shape, dt, NULL, &out));
        CHECK_OK(mf_expand(a, 2, shape, &ea));
        CHECK_OK(mf_expand(b, 2, shape, &eb));
        mf_call c = {.op = kop, .out = out, .in = {ea, eb}, .nin = 2};
        CHECK_OK(mf_cpu_binary(mf_cpu(), &c));
        mf_release(ea);
        mf_release(eb);
      } else {
        CHECK_OK(mf_binary(op, a, b, &out));
      }
      if (out) {
        CHECK(out->dtype == (bool_result(op) ? MF_BOOL : dt));
        CHECK(check_binary_result(op, dt, out, v, idx_row, idx_col, v.n, v.n, "broadcast") == 0);
      }
      mf_release(a);
      mf_release(b);
      MF_DROP(out);
      if (direct) continue;
      /* 2 and 3: the same pairs as full tensors, contiguous / transposed / strided */
      for (int la = 0; la < 3; la++) {
        int lb = (la + 1) % 3;
        a = make2d(dt, v, v.n, v.n, la, idx_a);
        b = make2d(dt, v, v.n, v.n, lb, idx_b);
        CHECK_OK(mf_binary(op, a, b, &out));
        char what[32];
        snprintf(what, sizeof what, "layouts %d,%d", la, lb);
        if (out) CHECK(check_binary_result(op, dt, out, v, idx_a, idx_b, v.n, v.n, what) == 0);
        mf_release(a);
        mf_release(b);
        MF_DROP(out);
      }
    }
  }
}

/* results torch gives, spelled out */
static void test_binary_specials(void) {
  struct {
    mf_op op;
    double x, y, want;
  } f[] = {
      {MF_OP_REMAINDER, -3, 2, 1},
      {MF_OP_REMAINDER, 3, -2, -1},
      {MF_OP_REMAINDER, 5.5, 2, 1.5},
      {MF_OP_REMAINDER, -5.5, 2, 0.5},
      {MF_OP_REMAINDER, 1, 0, NAN},
      {MF_OP_FLOOR_DIVIDE, -7, 2, -4},
      {MF_OP_FLOOR_DIVIDE, 7, -2, -4},
      {MF_OP_FLOOR_DIVIDE, 7, 2, 3},
      {MF_OP_FLOOR_DIVIDE, 1, 0, INFINITY},
      {MF_OP_FLOOR_DIVIDE, -1, 0, -INFINITY},
      {MF_OP_FLOOR_DIVIDE, 0, 0, NAN},
      {MF_OP_MAXIMUM, NAN, 1, NAN},
      {MF_OP_MAXIMUM, 1, NAN, NAN},
      {MF_OP_MINIMUM, NAN, 1, NAN},
      {MF_OP_POW, 2, 10, 1024},
      {MF_OP_POW, -8, 1.0 / 3, NAN},
      {MF_OP_POW, 0, 0, 1},
      {MF_OP_DIV, 1, 0, INFINITY},
      {MF_OP_DIV, -1, 0, -INFINITY},
      {MF_OP_POW, 3, 2, 9},
      {MF_OP_POW, 16, 0.5, 4},
      {MF_OP_POW, -3, 2, 9},
      /* ReLU's gradient g where y > 0: 0 elsewhere, even for an infinite g or a NaN y */
      {MF_OP_RELU_BACKWARD, 3, 2, 3},
      {MF_OP_RELU_BACKWARD, -2, 1e-30, -2},
      {MF_OP_RELU_BACKWARD, 3, 0, 0},
      {MF_OP_RELU_BACKWARD, 3, -1, 0},
      {MF_OP_RELU_BACKWARD, INFINITY, 0, 0},
      {MF_OP_RELU_BACKWARD, 3, NAN, 0},
      {MF_OP_RELU_BACKWARD, NAN, 1, NAN},
  };
  for (size_t k = 0; k < sizeof f / sizeof *f; k++) {
    for (int f64 = 0; f64 < 2; f64++) {
      mf_dtype dt = f64 ? MF_F64 : MF_F32;
      mf_tensor *a, *b, *r;
      double got = 0;
      CHECK_OK(mf_scalar(f[k].x, dt, false, NULL, &a));
      CHECK_OK(mf_scalar(f[k].y, dt, false, NULL, &b));
      CHECK_OK(mf_binary(f[k].op, a, b, &r));
      if (r) mf_item(r, &got);
      CHECK_CLOSE(got, f[k].want, 1e-6, 0);
      mf_release(a);
      mf_release(b);
      mf_release(r);
    }
  }
  /* integers: division by zero and INT_MIN / -1 neither trap nor crash */
  struct {
    mf_op op;
    int64_t x, y, want;
  } i[] = {
      {MF_OP_REMAINDER, -3, 2, 1},
      {MF_OP_REMAINDER, 3, -2, -1},
      {MF_OP_REMAINDER, 7, 0, 0},
      {MF_OP_FLOOR_DIVIDE, -7, 2, -4},
      {MF_OP_FLOOR_DIVIDE, 7, 0, 0},
      {MF_OP_FLOOR_DIVIDE, INT32_MIN, -1, INT32_MIN},
      {MF_OP_REMAINDER, INT32_MIN, -1, 0},
      {MF_OP_POW, 2, 30, 1 << 30},
      {MF_OP_POW, -2, 3, -8},
      {MF_OP_POW, 2, -1, 0},
      {MF_OP_POW, -1, -3, -1},
      {MF_OP_ADD, INT32_MAX, 1, INT32_MIN},
      {MF_OP_MUL, 65536, 65536, 0},
      {MF_OP_SUB, INT32_MIN, 1, INT32_MAX},
  };
  for (size_t k = 0; k < sizeof i / sizeof *i; k++) {
    mf_tensor *a, *b, *r;
    int32_t x = (int32_t)i[k].x, y = (int32_t)i[k].y, got = -12345;
    int64_t one = 1;
    CHECK_OK(mf_from_host(1, &one, MF_I32, &x, NULL, &a));
    CHECK_OK(mf_from_host(1, &one, MF_I32, &y, NULL, &b));
    CHECK_OK(mf_binary(i[k].op, a, b, &r));
    if (r) mf_to_host(r, MF_I32, &got);
    CHECK(got == (int32_t)i[k].want);
    if (got != (int32_t)i[k].want)
      fprintf(stderr, "  %s(%d, %d) = %d, want %d\n", mf_op_name(i[k].op), x, y, got,
              (int32_t)i[k].want);
    mf_release(a);
    mf_release(b);
    mf_release(r);
  }
  /* integer true division gives float32 (inf for /0), as in torch */
  int64_t one = 1;
  int32_t x = 7, y = 0;
  mf_tensor *a, *b, *r;
  CHECK_OK(mf_from_host(1, &one, MF_I32, &x, NULL, &a));
  CHECK_OK(mf_from_host(1, &one, MF_I32, &y, NULL, &b));
  CHECK_OK(mf_div(a, b, &r));
  double got = 0;
  if (r) {
    CHECK(r->dtype == MF_F32);
    mf_item(r, &got);
  }
  CHECK(isinf(got) && got > 0);
  mf_release(r);
  mf_release(a);
  mf_release(b);
}

/* ---- unary ops ---------------------------------------------------------------------------- */

static const mf_op UNARY_OPS[] = {MF_OP_NEG,  MF_OP_ABS,        MF_OP_EXP,     MF_OP_LOG,
                                  MF_OP_SQRT, MF_OP_TANH,       MF_OP_SIGMOID, MF_OP_RELU,
                                  MF_OP_SIGN, MF_OP_LOGICAL_NOT};

static bool transcendental(mf_op op) {
  return op == MF_OP_EXP || op == MF_OP_LOG || op == MF_OP_SQRT || op == MF_OP_TANH ||
         op == MF_OP_SIGMOID;
}

static double ref_unary_f(mf_op op, double x, double lo, double hi) {
  switch (op) {
  case MF_OP_NEG: return -x;
  case MF_OP_ABS: return fabs(x);
  case MF_OP_EXP: return exp(x);
  case MF_OP_LOG: return log(x);
  case MF_OP_SQRT: return sqrt(x);
  case MF_OP_TANH: return tanh(x);
  case MF_OP_SIGMOID: return 1 / (1 + exp(-x));
  case MF_OP_RELU: return x < 0 ? 0 : x;
  case MF_OP_SIGN: return isnan(x) ? x : x > 0 ? 1 : x < 0 ? -1 : x;
  case MF_OP_LOGICAL_NOT: return x == 0;
  case MF_OP_CLAMP: return isnan(x) ? x : x < lo ? lo : x > hi ? hi : x;
  default: return NAN;
  }
}

static int64_t ref_unary_i(mf_op op, int64_t x, mf_dtype dt, double lo, double hi) {
  switch (op) {
  case MF_OP_NEG: return wrap(-(__int128)x, dt);
  case MF_OP_ABS: return wrap(x < 0 ? -(__int128)x : x, dt);
  case MF_OP_RELU: return x < 0 ? 0 : x;
  case MF_OP_SIGN: return dt == MF_BOOL || dt == MF_U8 ? x != 0 : (x > 0) - (x < 0);
  case MF_OP_LOGICAL_NOT: return x == 0;
  case MF_OP_CLAMP: {
    double l = ceil(lo), h = floor(hi);
    __int128 r = x;
    if (r < l) r = (__int128)l;
    if (r > h) r = (__int128)h;
    return wrap(r, dt);
  }
  default: return 0;
  }
}

static int check_unary(mf_op op, mf_dtype dt, double lo, double hi, int layout) {
  values v = values_of(dt);
  NV = v.n;
  mf_tensor *x = make2d(dt, v, v.n, v.n, layout, idx_a), *out = NULL;
  mf_status s = op == MF_OP_CLAMP ? mf_clamp(x, lo, hi, &out) : mf_unary(op, x, &out);
  int bad = 0;
  if (s) {
    fprintf(stderr, "%s %s: %s\n", mf_op_name(op), mf_dtype_name(dt), mf_error());
    mf_release(x);
    return 1;
  }
  mf_dtype odt = out->dtype;
  mf_dtype want_dt = op == MF_OP_LOGICAL_NOT                               ? MF_BOOL
                     : transcendental(op) && (is_int(dt) || dt == MF_BOOL) ? MF_F32
                                                                           : dt;
  if (odt != want_dt) bad++;
  int64_t n = (int64_t)v.n * v.n;
  char *buf = malloc((size_t)n * mf_dtype_size(odt));
  mf_to_host(out, odt, buf);
  for (int64_t j = 0; j < n; j++) {
    int k = idx_a(j / v.n, j % v.n);
    double got;
    int64_t goti;
    get(buf, j, odt, &got, &goti);
    bool ok;
    double want;
    if (!is_int(odt) && odt != MF_BOOL) {
      double xv = v.f ? round_to(v.f[k], dt) : round_to((double)wrap(v.i[k], dt), odt);
      want = round_to(ref_unary_f(op, xv, round_to(lo, odt), round_to(hi, odt)), odt);
      ok = same_value(got, want, tol_of(op, odt, want));
      if (op == MF_OP_SQRT && xv == 0) ok = got == 0; /* sqrt(-0) may be -0 */
    } else if (odt == MF_BOOL && v.f) {
      want = ref_unary_f(op, round_to(v.f[k], dt), lo, hi);
      ok = goti == (int64_t)want;
    } else {
      want = (double)ref_unary_i(op, wrap(v.i[k], dt), dt, lo, hi);
      ok = goti == ref_unary_i(op, wrap(v.i[k], dt), dt, lo, hi);
    }
    if (!ok) {
      if (bad < 3)
        fprintf(stderr, "%s %s layout %d: x = %.9g: got %.9g (%lld), want %.9g\n", mf_op_name(op),
                mf_dtype_name(dt), layout, v.f ? v.f[k] : (double)v.i[k], got, (long long)goti,
                want);
      bad++;
    }
  }
  free(buf);
  mf_release(x);
  mf_release(out);
  return bad;
}

static void test_unary(void) {
  for (size_t d = 0; d < sizeof CPU_DTYPES / sizeof *CPU_DTYPES; d++) {
    mf_dtype dt = CPU_DTYPES[d];
    for (size_t o = 0; o < sizeof UNARY_OPS / sizeof *UNARY_OPS; o++) {
      mf_op op = UNARY_OPS[o];
      if (dt == MF_BOOL && op == MF_OP_NEG) {
        mf_tensor *x, *r;
        CHECK_OK(mf_scalar(1, MF_BOOL, false, NULL, &x));
        CHECK_FAILS(mf_unary(op, x, &r), MF_ERR_DTYPE, "neg: bool");
        mf_release(x);
        continue;
      }
      for (int layout = 0; layout < 3; layout++) CHECK(check_unary(op, dt, 0, 0, layout) == 0);
    }
    const double bounds[][2] = {{-1, 2},     {-INFINITY, 0},  {0.5, INFINITY},
                                {-2.5, 7.5}, {-1e300, 1e300}, {3, 3}};
    for (size_t b = 0; b < sizeof bounds / sizeof *bounds; b++)
      CHECK(check_unary(MF_OP_CLAMP, dt, bounds[b][0], bounds[b][1], (int)b % 3) == 0);
  }
}

/* the kernel refuses what the front end never hands it */
static void test_kernel_errors(void) {
  int64_t shape[1] = {4};
  mf_tensor *a, *b, *o, *o2 = NULL;
  CHECK_OK(mf_zeros(1, shape, MF_I32, NULL, &a));
  CHECK_OK(mf_zeros(1, shape, MF_F32, NULL, &b));
  CHECK_OK(mf_zeros(1, shape, MF_I32, NULL, &o));
  mf_call c = {.op = MF_OP_ADD, .out = o, .in = {a, b}, .nin = 2};
  CHECK_FAILS(mf_cpu_binary(mf_cpu(), &c), MF_ERR_DTYPE, "same dtype");
  c = (mf_call){.op = MF_OP_EXP, .out = o, .in = {a}, .nin = 1};
  CHECK_FAILS(mf_cpu_unary(mf_cpu(), &c), MF_ERR_DTYPE, "float");
  c = (mf_call){.op = MF_OP_EQ, .out = o, .in = {a, a}, .nin = 2};
  CHECK_FAILS(mf_cpu_binary(mf_cpu(), &c), MF_ERR_DTYPE, "bool");
  /* relu_backward is for float tensors: the front end says so, the kernel has no integer rows */
  CHECK_FAILS(mf_binary(MF_OP_RELU_BACKWARD, a, a, &o2), MF_ERR_DTYPE,
              "relu_backward: needs float tensors, got int32");
  c = (mf_call){.op = MF_OP_RELU_BACKWARD, .out = o, .in = {a, a}, .nin = 2};
  CHECK_FAILS(mf_cpu_binary(mf_cpu(), &c), MF_ERR_DTYPE, "not supported for int32");
  /* float16 exists only on GPUs: a header over CPU memory must be refused, not misread */
  mf_tensor h = *b;
  h.dtype = MF_F16;
  c = (mf_call){.op = MF_OP_ADD, .out = &h, .in = {&h, &h}, .nin = 2};
  CHECK_FAILS(mf_cpu_binary(mf_cpu(), &c), MF_ERR_DTYPE, "float16");
  c = (mf_call){.op = MF_OP_NEG, .out = &h, .in = {&h}, .nin = 1};
  CHECK_FAILS(mf_cpu_unary(mf_cpu(), &c), MF_ERR_DTYPE, "CUDA");
  c = (mf_call){.op = MF_OP_COPY, .out = b, .in = {&h}, .nin = 1};
  CHECK_FAILS(mf_cpu_copy(mf_cpu(), &c), MF_ERR_DTYPE, "float16");
  /* shapes that do not broadcast */
  int64_t s3[1] = {3};
  mf_tensor *t3;
  CHECK_OK(mf_zeros(1, s3, MF_I32, NULL, &t3));
  c = (mf_call){.op = MF_OP_ADD, .out = o, .in = {a, t3}, .nin = 2};
  CHECK_FAILS(mf_cpu_binary(mf_cpu(), &c), MF_ERR_SHAPE, "does not broadcast");
  mf_release(t3);
  mf_release(a);
  mf_release(b);
  mf_release(o);
}

/* in place: the output is one of the inputs */
static void test_in_place(void) {
  int64_t n = 1000;
  mf_tensor *a, *b;
  CHECK_OK(mf_arange(0, (double)n, 1, MF_F32, NULL, &a));
  CHECK_OK(mf_full(1, &n, 2, MF_F32, NULL, &b));
  mf_call c = {.op = MF_OP_MUL, .out = a, .in = {a, b}, .nin = 2};
  CHECK_OK(mf_cpu_binary(mf_cpu(), &c));
  c = (mf_call){.op = MF_OP_NEG, .out = a, .in = {a}, .nin = 1};
  CHECK_OK(mf_cpu_unary(mf_cpu(), &c));
  float v[1000];
  CHECK_OK(mf_to_host(a, MF_F32, v));
  int bad = 0;
  for (int i = 0; i < 1000; i++) bad += v[i] != -2.0f * (float)i;
  CHECK(bad == 0);
  mf_release(a);
  mf_release(b);
}

/* ---- float32 accuracy over the whole range ------------------------------------------------ */

static double ulp_of(double ref) {
  float f = (float)fabs(ref);
  if (f < FLT_MIN) return 0x1p-149;
  int e;
  frexpf(f, &e);
  return ldexp(1.0, e - 24);
}

static void test_vmath_accuracy(void) {
  /* every 997th float32 bit pattern: 4.3M values over both signs, denormals, inf and NaN */
  const int64_t n = (int64_t)((1ull << 32) / 997) + 1;
  float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
  for (int64_t i = 0; i < n; i++) {
    uint32_t bits = (uint32_t)(i * 997);
    memcpy(&x[i], &bits, 4);
  }
  mf_tensor *t;
  CHECK_OK(mf_from_host(1, &n, MF_F32, x, NULL, &t));
  const mf_op ops[] = {MF_OP_EXP, MF_OP_LOG, MF_OP_TANH, MF_OP_SIGMOID, MF_OP_SQRT};
  const double limit[] = {1, 1, 2, 2, 0.5};
  for (size_t k = 0; k < sizeof ops / sizeof *ops; k++) {
    mf_tensor *r;
    CHECK_OK(mf_unary(ops[k], t, &r));
    if (!r) continue;
    mf_to_host(r, MF_F32, y);
    double worst = 0, at = 0;
    int64_t special = 0;
    for (int64_t i = 0; i < n; i++) {
      double ref = ref_unary_f(ops[k], x[i], 0, 0);
      float want = (float)ref;
      if (isnan(want) || isinf(want) || want == 0 || fabs(want) < FLT_MIN) {
        /* NaN, inf, zero and denormal results: the right class, within a denormal ulp or two */
        bool ok = isnan(want)   ? isnan(y[i])
                  : isinf(want) ? y[i] == want
                                : fabs(y[i] - ref) <= 2 * 0x1p-149;
        if (!ok) {
          if (special < 3)
            fprintf(stderr, "%s(%.9g) = %.9g, want %.9g\n", mf_op_name(ops[k]), x[i], y[i], ref);
          special++;
        }
        continue;
      }
      double err = fabs((double)y[i] - ref) / ulp_of(ref);
      if (err > worst) {
        worst = err;
        at = x[i];
      }
    }
    printf("# float32 %s: max error %.2f ulp (at %.9g) over %lld values\n", mf_op_name(ops[k]),
           worst, at, (long long)n);
    CHECK(worst <= limit[k] + 0.5);
    CHECK(special == 0);
    mf_release(r);
  }
  mf_release(t);
  free(x);
  free(y);
}

/* ---- big tensors: threaded results equal single-threaded ones ------------------------------ */

static bool same_bytes(const mf_tensor *a, const mf_tensor *b) {
  size_t n = (size_t)mf_numel(a) * mf_dtype_size(a->dtype);
  return mf_numel(a) == mf_numel(b) && memcmp(mf_data(a), mf_data(b), n) == 0;
}

static void test_threaded(void) {
  int64_t shape[2] = {1000, 1003}, row[2] = {1, 1003};
  mf_tensor *a, *b, *brow, *bt;
  mf_manual_seed(3);
  CHECK_OK(mf_randn(2, shape, MF_F32, NULL, &a));
  CHECK_OK(mf_randn(2, shape, MF_F32, NULL, &b));
  CHECK_OK(mf_randn(2, row, MF_F32, NULL, &brow));
  int64_t sq[2] = {1003, 1000};
  mf_tensor *b2;
  CHECK_OK(mf_randn(2, sq, MF_F32, NULL, &b2));
  CHECK_OK(mf_transpose(b2, 0, 1, &bt)); /* 1000 x 1003, strided */
  mf_release(b2);
  const mf_op bops[] = {MF_OP_ADD, MF_OP_MUL, MF_OP_DIV, MF_OP_MAXIMUM, MF_OP_GT, MF_OP_POW};
  const mf_op uops[] = {MF_OP_EXP, MF_OP_LOG, MF_OP_TANH, MF_OP_SIGMOID, MF_OP_SQRT, MF_OP_RELU};
  int nt = mf_get_num_threads();
  for (size_t k = 0; k < sizeof bops / sizeof *bops; k++) {
    const mf_tensor *second[3] = {b, brow, bt};
    for (int s = 0; s < 3; s++) {
      mf_tensor *r1 = NULL, *r2 = NULL;
      mf_set_num_threads(1);
      CHECK_OK(mf_binary(bops[k], a, second[s], &r1));
      mf_set_num_threads(nt > 1 ? nt : 2);
      CHECK_OK(mf_binary(bops[k], a, second[s], &r2));
      if (r1 && r2) CHECK(same_bytes(r1, r2));
      /* and a sample against the reference */
      if (r2 && s == 1 && bops[k] != MF_OP_GT) {
        float av[8], bv[8];
        int64_t idx[2];
        int bad = 0;
        for (int q = 0; q < 8; q++) {
          idx[0] = 123 * q + 7;
          idx[1] = 111 * q + 5;
          double x, y, got;
          mf_get(a, idx, &x);
          int64_t i2[2] = {0, idx[1]};
          mf_get(brow, i2, &y);
          mf_get(r2, idx, &got);
          av[q] = (float)x;
          bv[q] = (float)y;
          double want = ref_binary_f(bops[k], av[q], bv[q], MF_F32);
          if (!same_value(got, want, tol_of(bops[k], MF_F32, want))) bad++;
        }
        CHECK(bad == 0);
      }
      mf_release(r1);
      mf_release(r2);
    }
  }
  for (size_t k = 0; k < sizeof uops / sizeof *uops; k++) {
    mf_tensor *r1 = NULL, *r2 = NULL;
    mf_set_num_threads(1);
    CHECK_OK(mf_unary(uops[k], bt, &r1));
    mf_set_num_threads(nt > 1 ? nt : 2);
    CHECK_OK(mf_unary(uops[k], bt, &r2));
    if (r1 && r2) CHECK(same_bytes(r1, r2));
    mf_release(r1);
    mf_release(r2);
  }
  mf_set_num_threads(nt);
  mf_release(a);
  mf_release(b);
  mf_release(brow);
  mf_release(bt);
}

/* ---- copy / cast / fill / arange / where -------------------------------------------------- */

static double ref_convert(double x, mf_dtype to) {
  switch (to) {
  case MF_F32: return (float)x;
  case MF_F64: return x;
  case MF_I32: return (int32_t)x;
  case MF_I64: return (double)(int64_t)x;
  case MF_U8: return (uint8_t)(int64_t)x;
  case MF_BOOL: return x != 0;
  default: return NAN;
  }
}

static void test_cast(void) {
  /* values every dtype holds exactly and that convert without overflow */
  static const double cv[] = {0, 1, 2, 3, 7, 100, 127, 1.5, 2.75, -1, -2.5, -100, 255, 0.25};
  const int n = sizeof cv / sizeof *cv;
  for (size_t f = 0; f < sizeof CPU_DTYPES / sizeof *CPU_DTYPES; f++) {
    mf_dtype from = CPU_DTYPES[f];
    double src[2 * sizeof cv / sizeof *cv];
    for (int k = 0; k < n; k++) src[k] = ref_convert(cv[k], from);
    for (int k = 0; k < n; k++) src[n + k] = src[k];
    /* a 2 x n tensor holding src, transposed twice over a n x 2 buffer: strided input */
    mf_tensor *base, *x;
    int64_t shape[2] = {n, 2};
    char buf[2 * 14 * 8];
    for (int k = 0; k < n; k++) {
      double v2[2] = {src[k], src[k]};
      for (int q = 0; q < 2; q++) {
        switch (from) {
        case MF_F32: ((float *)buf)[2 * k + q] = (float)v2[q]; break;
        case MF_F64: ((double *)buf)[2 * k + q] = v2[q]; break;
        case MF_I32: ((int32_t *)buf)[2 * k + q] = (int32_t)v2[q]; break;
        case MF_I64: ((int64_t *)buf)[2 * k + q] = (int64_t)v2[q]; break;
        default: ((uint8_t *)buf)[2 * k + q] = (uint8_t)v2[q]; break;
        }
      }
    }
    CHECK_OK(mf_from_host(2, shape, from, buf, NULL, &base));
    CHECK_OK(mf_transpose(base, 0, 1, &x)); /* 2 x n, strides (1, 2) */
    for (size_t t = 0; t < sizeof CPU_DTYPES / sizeof *CPU_DTYPES; t++) {
      mf_dtype to = CPU_DTYPES[t];
      mf_tensor *y = NULL;
      CHECK_OK(mf_cast(x, to, &y));
      if (!y) continue;
      double got[2 * 14];
      CHECK_OK(mf_to_host(y, MF_F64, got));
      int bad = 0;
      for (int k = 0; k < 2 * n; k++) {
        double want = ref_convert(src[k % n], to);
        if (got[k] != want) {
          if (!bad)
            fprintf(stderr, "cast %s -> %s of %g: got %g want %g\n", mf_dtype_name(from),
                    mf_dtype_name(to), src[k % n], got[k], want);
          bad++;
        }
      }
      CHECK(bad == 0);
      mf_release(y);
    }
    mf_release(x);
    mf_release(base);
  }
  /* negative floats to uint8 wrap (through int64), big ones to int64 are exact */
  mf_tensor *s, *u;
  CHECK_OK(mf_scalar(-1.5, MF_F32, false, NULL, &s));
  CHECK_OK(mf_cast(s, MF_U8, &u));
  double got = 0;
  mf_item(u, &got);
  CHECK(got == 255);
  mf_release(u);
  mf_release(s);
  int64_t big = ((int64_t)1 << 53) + 1, back = 0, one = 1;
  CHECK_OK(mf_from_host(1, &one, MF_I64, &big, NULL, &s));
  CHECK_OK(mf_cast(s, MF_I64, &u));
  mf_to_host(u, MF_I64, &back);
  CHECK(back == big);
  mf_release(u);
  mf_release(s);
}

static void test_copy_fill(void) {
  /* fill_ through a strided view leaves the rest alone */
  int64_t shape[2] = {4, 6};
  mf_tensor *t, *v, *col;
  for (size_t d = 0; d < sizeof CPU_DTYPES / sizeof *CPU_DTYPES; d++) {
    mf_dtype dt = CPU_DTYPES[d];
    CHECK_OK(mf_zeros(2, shape, dt, NULL, &t));
    CHECK_OK(mf_slice(t, 1, 1, 6, 2, &v)); /* columns 1, 3, 5 */
    CHECK_OK(mf_fill_(v, 3.75));
    double got[24];
    CHECK_OK(mf_to_host(t, MF_F64, got));
    double want_fill = ref_convert(3.75, dt);
    int bad = 0;
    for (int i = 0; i < 24; i++) bad += got[i] != ((i % 6) % 2 ? want_fill : 0);
    CHECK(bad == 0);
    /* copy_ of a broadcast column into the other columns, with a dtype change */
    int64_t cshape[2] = {4, 1};
    double cv[4] = {1, -2, 3.5, 4};
    CHECK_OK(mf_from_host(2, cshape, MF_F64, cv, NULL, &col));
    mf_tensor *even;
    CHECK_OK(mf_slice(t, 1, 0, 6, 2, &even));
    CHECK_OK(mf_copy_(even, col));
    CHECK_OK(mf_to_host(t, MF_F64, got));
    bad = 0;
    for (int i = 0; i < 24; i++)
      bad += got[i] != ((i % 6) % 2 ? want_fill : ref_convert(cv[i / 6], dt));
    CHECK(bad == 0);
    mf_release(even);
    mf_release(col);
    mf_release(v);
    mf_release(t);
  }
  /* a big contiguous copy (threaded memcpy) and a big transposing copy */
  int64_t big[2] = {700, 900};
  mf_tensor *a, *b, *at, *c;
  CHECK_OK(mf_rand(2, big, MF_F64, NULL, &a));
  CHECK_OK(mf_empty(2, big, MF_F64, NULL, &b));
  CHECK_OK(mf_copy_(b, a));
  CHECK(same_bytes(a, b));
  CHECK_OK(mf_transpose(a, 0, 1, &at));
  CHECK_OK(mf_contiguous(at, &c));
  int64_t i1[2] = {123, 456}, i2[2] = {456, 123};
  double x = 0, y = 1;
  mf_get(a, i1, &x);
  mf_get(c, i2, &y);
  CHECK(x == y);
  mf_release(a);
  mf_release(b);
  mf_release(at);
  mf_release(c);
}

static void test_arange(void) {
  for (size_t d = 0; d < sizeof CPU_DTYPES / sizeof *CPU_DTYPES - 1; d++) {
    mf_dtype dt = CPU_DTYPES[d];
    mf_tensor *t;
    CHECK_OK(mf_arange(-3, 17, 2, dt, NULL, &t));
    if (!t) continue;
    CHECK(mf_numel(t) == 10);
    double got[10];
    mf_to_host(t, MF_F64, got);
    int bad = 0;
    for (int i = 0; i < 10; i++) bad += got[i] != ref_convert(-3 + 2 * i, dt);
    CHECK(bad == 0);
    mf_release(t);
  }
  mf_tensor *t;
  CHECK_OK(mf_arange(0, 1, 0.1, MF_F64, NULL, &t));
  double got[10];
  mf_to_host(t, MF_F64, got);
  CHECK(mf_numel(t) == 10 && got[3] == 0 + 3 * 0.1); /* start + i*step, not a running sum */
  mf_release(t);
}

static void test_where(void) {
  /* cond (3, 1) broadcast against a (1, 4) and b (3, 4) strided */
  for (size_t d = 0; d < sizeof CPU_DTYPES / sizeof *CPU_DTYPES; d++) {
    mf_dtype dt = CPU_DTYPES[d];
    int64_t cs[2] = {3, 1}, as[2] = {1, 4}, bs[2] = {4, 3};
    uint8_t cond[3] = {1, 0, 1};
    double av[4] = {1, 2, 3, 4}, bv[12];
    for (int i = 0; i < 12; i++) bv[i] = 10 + i;
    mf_tensor *c, *a64, *b64, *a, *b, *bt, *r = NULL;
    CHECK_OK(mf_from_host(2, cs, MF_BOOL, cond, NULL, &c));
    CHECK_OK(mf_from_host(2, as, MF_F64, av, NULL, &a64));
    CHECK_OK(mf_from_host(2, bs, MF_F64, bv, NULL, &b64));
    CHECK_OK(mf_cast(a64, dt, &a));
    CHECK_OK(mf_cast(b64, dt, &b));
    CHECK_OK(mf_transpose(b, 0, 1, &bt)); /* (3, 4): bt[i][j] = b[j][i] = 10 + 3j + i */
    CHECK_OK(mf_where(c, a, bt, &r));
    if (r) {
      double got[12];
      mf_to_host(r, MF_F64, got);
      int bad = 0;
      for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
          bad += got[i * 4 + j] != ref_convert(cond[i] ? av[j] : 10 + 3 * j + i, dt);
      CHECK(bad == 0);
      CHECK(r->dtype == dt);
    }
    mf_release(r);
    mf_release(c);
    mf_release(a64);
    mf_release(b64);
    mf_release(a);
    mf_release(b);
    mf_release(bt);
  }
}

int main(void) {
  test_binary();
  test_binary_specials();
  test_unary();
  test_kernel_errors();
  test_in_place();
  test_vmath_accuracy();
  test_threaded();
  test_cast();
  test_copy_fill();
  test_arange();
  test_where();
  return test_summary();
}
