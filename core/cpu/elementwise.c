/* elementwise.c — the CPU kernels of the binary (ADD .. LOGICAL_OR) and unary (NEG .. CLAMP) ops
 * for float32, float64, int32, int64, uint8 and bool.
 *
 * Every (op, dtype) loop is generated from one scalar expression per op and dtype kind (FLT, SINT,
 * UINT, BOOL) by the ROW macros below, and put in a table; a NULL entry is an op the dtype does
 * not support. A row function handles one inner row of the strided iteration (iter.h) with fast,
 * auto-vectorised paths for all-contiguous operands and for a broadcast (stride 0) operand.
 *
 * Semantics (PyTorch's where it defines them):
 * - integer ADD/SUB/MUL/NEG/ABS wrap around (computed in the unsigned type: no UB);
 * - integer DIV truncates; integer DIV, REMAINDER and FLOOR_DIVIDE by zero give 0, and
 *   INT_MIN / -1 gives INT_MIN (no SIGFPE);
 * - REMAINDER has the sign of the divisor (Python's %); FLOOR_DIVIDE rounds toward -inf;
 * - integer POW with a negative exponent gives 0 (1 and -1 to the right sign, as 1/x truncated);
 * - MAXIMUM/MINIMUM propagate NaN; RELU, SIGN and CLAMP keep NaN (SIGN of +-0 is +-0);
 * - bool: ADD = or, MUL = and, MAXIMUM = or, MINIMUM = and, POW(a, b) = a or not b; SUB, DIV,
 *   REMAINDER, FLOOR_DIVIDE and NEG of bool are MF_ERR_DTYPE;
 * - EXP LOG SQRT TANH SIGMOID take float dtypes only (the front end casts integers to float32).
 * The output may be the same memory as an input (in-place), but must not partly overlap one.
 */
#if defined(__GNUC__) && !defined(__clang__)
/* Lets gcc if-convert the selects in vmath.h and vectorise them (FP exception flags are not part
 * of moonflow's contract). */
#pragma GCC optimize("no-trapping-math")
#endif
#include <math.h>
#include <stdint.h>

#include <pthread.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "cpu/iter.h"
#include "cpu/kernels.h"
#include "cpu/vmath.h"

/* sqrt: libm's may set errno, which keeps gcc from vectorising it (the optimize pragma does not
 * change that); contiguous float rows use AVX directly (sqrt_rows below). */
static inline float sqrt_f(float x) { return __builtin_sqrtf(x); }
static inline double sqrt_d(double x) { return __builtin_sqrt(x); }

#define GF(x, f, d) _Generic((x), float : f, double : d)
#define M_FABS(x) GF(x, fabsf, fabs)(x)
#define M_POW(x, y) GF(x, powf, pow)(x, y)
#define M_FMOD(x, y) GF(x, fmodf, fmod)(x, y)
#define M_FLOOR(x) GF(x, floorf, floor)(x)
#define M_COPYSIGN(x, y) GF(x, copysignf, copysign)(x, y)
#define M_EXP(x) GF(x, mf_expf, mf_exp)(x)
#define M_LOG(x) GF(x, mf_logf, mf_log)(x)
#define M_TANH(x) GF(x, mf_tanhf, mf_tanh)(x)
#define M_SIGMOID(x) GF(x, mf_sigmoidf, mf_sigmoid)(x)
#define M_SQRT(x) GF(x, sqrt_f, sqrt_d)(x)

/* ---- helpers too long for an expression, one per dtype ------------------------------------- */

/* float floor division and remainder: PyTorch's div_floor_floating / remainder */
#define FLT_HELPERS(T)                                                                             \
  static inline T fdiv_##T(T a, T b) {                                                             \
    if (b == 0) return a / b;                                                                      \
    T mod = M_FMOD(a, b);                                                                          \
    T div = (a - mod) / b;                                                                         \
    if (mod != 0 && (b < 0) != (mod < 0)) div -= 1;                                                \
    if (div == 0) return M_COPYSIGN((T)0, a / b);                                                  \
    T fl = M_FLOOR(div);                                                                           \
    if (div - fl > (T)0.5) fl += 1;                                                                \
    return fl;                                                                                     \
  }                                                                                                \
  static inline T frem_##T(T a, T b) {                                                             \
    T mod = M_FMOD(a, b);                                                                          \
    if (mod != 0 && (b < 0) != (mod < 0)) mod += b;                                                \
    return mod;                                                                                    \
  }
FLT_HELPERS(float)
FLT_HELPERS(double)

/* integer pow by squaring; negative exponents as 1/a truncated toward zero */
#define INT_POW(T, U)                                                                              \
  static inline T ipow_##T(T a, T b) {                                                             \
    if (b < 0) return a == 1 ? 1 : a == (T)-1 ? ((b & 1) ? (T)-1 : 1) : 0;                         \
    U r = 1, x = (U)a;                                                                             \
    for (; b; b >>= 1) {                                                                           \
      if (b & 1) r *= x;                                                                           \
      x *= x;                                                                                      \
    }                                                                                              \
    return (T)r;                                                                                   \
  }
INT_POW(int32_t, uint32_t)
INT_POW(int64_t, uint64_t)
static inline uint8_t ipow_uint8_t(uint8_t a, uint8_t b) {
  unsigned r = 1, x = a;
  for (; b; b >>= 1) {
    if (b & 1) r = (r * x) & 0xff;
    x = (x * x) & 0xff;
  }
  return (uint8_t)r;
}

/* signed integer division family, defined for b == 0 and (MIN, -1) */
#define SINT_HELPERS(T, U)                                                                         \
  static inline T idiv_##T(T a, T b) { return b == 0 ? 0 : b == -1 ? (T)(0 - (U)a) : (T)(a / b); } \
  static inline T irem_##T(T a, T b) {                                                             \
    if (b == 0 || b == -1) return 0;                                                               \
    T r = a % b;                                                                                   \
    return (r != 0 && (r < 0) != (b < 0)) ? (T)(r + b) : r;                                        \
  }                                                                                                \
  static inline T ifdiv_##T(T a, T b) {                                                            \
    if (b == 0) return 0;                                                                          \
    if (b == -1) return (T)(0 - (U)a);                                                             \
    T q = a / b, r = a % b;                                                                        \
    return (r != 0 && (r < 0) != (b < 0)) ? (T)(q - 1) : q;                                        \
  }
SINT_HELPERS(int32_t, uint32_t)
SINT_HELPERS(int64_t, uint64_t)

/* ---- scalar expressions: E_<OP>_<KIND>(T, U, x, y) ------------------------------------------- */

/* arithmetic that wraps: computed in U (the unsigned type for integers, T itself for floats) */
#define E_ADD_ANY(T, U, x, y) (T)((U)(x) + (U)(y))
#define E_SUB_ANY(T, U, x, y) (T)((U)(x) - (U)(y))
#define E_MUL_ANY(T, U, x, y) (T)((U)(x) * (U)(y))
#define E_ADD_FLT E_ADD_ANY
#define E_ADD_SINT E_ADD_ANY
#define E_ADD_UINT E_ADD_ANY
#define E_SUB_FLT E_SUB_ANY
#define E_SUB_SINT E_SUB_ANY
#define E_SUB_UINT E_SUB_ANY
#define E_MUL_FLT E_MUL_ANY
#define E_MUL_SINT E_MUL_ANY
#define E_MUL_UINT E_MUL_ANY
#define E_DIV_FLT(T, U, x, y) ((x) / (y))
#define E_DIV_SINT(T, U, x, y) idiv_##T(x, y)
#define E_DIV_UINT(T, U, x, y) (T)((y) == 0 ? 0 : (x) / (y))
#define E_POW_FLT(T, U, x, y) M_POW(x, y)
#define E_POW_SINT(T, U, x, y) ipow_##T(x, y)
#define E_POW_UINT(T, U, x, y) ipow_##T(x, y)
#define E_MAXIMUM_FLT(T, U, x, y) (((x) > (y) || (x) != (x)) ? (x) : (y))
#define E_MINIMUM_FLT(T, U, x, y) (((x) < (y) || (x) != (x)) ? (x) : (y))
#define E_MAXIMUM_SINT(T, U, x, y) ((x) > (y) ? (x) : (y))
#define E_MINIMUM_SINT(T, U, x, y) ((x) < (y) ? (x) : (y))
#define E_MAXIMUM_UINT E_MAXIMUM_SINT
#define E_MINIMUM_UINT E_MINIMUM_SINT
#define E_REMAINDER_FLT(T, U, x, y) frem_##T(x, y)
#define E_REMAINDER_SINT(T, U, x, y) irem_##T(x, y)
#define E_REMAINDER_UINT(T, U, x, y) (T)((y) == 0 ? 0 : (x) % (y))
#define E_FLOOR_DIVIDE_FLT(T, U, x, y) fdiv_##T(x, y)
#define E_FLOOR_DIVIDE_SINT(T, U, x, y) ifdiv_##T(x, y)
#define E_FLOOR_DIVIDE_UINT(T, U, x, y) (T)((y) == 0 ? 0 : (x) / (y))
/* ReLU's gradient: g where the output y > 0 (NaN y: 0, as torch's threshold_backward) */
#define E_RELU_BACKWARD_FLT(T, U, x, y) ((y) > 0 ? (x) : (T)0)
/* bool (values 0/1) */
#define E_ADD_BOOL(T, U, x, y) (T)((x) | (y))
#define E_MUL_BOOL(T, U, x, y) (T)((x) & (y))
#define E_MAXIMUM_BOOL E_ADD_BOOL
#define E_MINIMUM_BOOL E_MUL_BOOL
#define E_POW_BOOL(T, U, x, y) (T)((x) | !(y))
/* comparisons and logic: the same for every kind (bools compared as truth values) */
#define E_EQ(T, U, x, y) ((x) == (y))
#define E_NE(T, U, x, y) ((x) != (y))
#define E_GT(T, U, x, y) ((x) > (y))
#define E_GE(T, U, x, y) ((x) >= (y))
#define E_LT(T, U, x, y) ((x) < (y))
#define E_LE(T, U, x, y) ((x) <= (y))
#define E_LOGICAL_AND(T, U, x, y) (((x) != 0) & ((y) != 0))
#define E_LOGICAL_OR(T, U, x, y) (((x) != 0) | ((y) != 0))
#define E_EQ_FLT E_EQ
#define E_EQ_SINT E_EQ
#define E_EQ_UINT E_EQ
#define E_NE_FLT E_NE
#define E_NE_SINT E_NE
#define E_NE_UINT E_NE
#define E_GT_FLT E_GT
#define E_GT_SINT E_GT
#define E_GT_UINT E_GT
#define E_GE_FLT E_GE
#define E_GE_SINT E_GE
#define E_GE_UINT E_GE
#define E_LT_FLT E_LT
#define E_LT_SINT E_LT
#define E_LT_UINT E_LT
#define E_LE_FLT E_LE
#define E_LE_SINT E_LE
#define E_LE_UINT E_LE
#define E_LOGICAL_AND_FLT E_LOGICAL_AND
#define E_LOGICAL_AND_SINT E_LOGICAL_AND
#define E_LOGICAL_AND_UINT E_LOGICAL_AND
#define E_LOGICAL_AND_BOOL E_LOGICAL_AND
#define E_LOGICAL_OR_FLT E_LOGICAL_OR
#define E_LOGICAL_OR_SINT E_LOGICAL_OR
#define E_LOGICAL_OR_UINT E_LOGICAL_OR
#define E_LOGICAL_OR_BOOL E_LOGICAL_OR
#define BV(x) ((x) != 0)
#define E_EQ_BOOL(T, U, x, y) (BV(x) == BV(y))
#define E_NE_BOOL(T, U, x, y) (BV(x) != BV(y))
#define E_GT_BOOL(T, U, x, y) (BV(x) > BV(y))
#define E_GE_BOOL(T, U, x, y) (BV(x) >= BV(y))
#define E_LT_BOOL(T, U, x, y) (BV(x) < BV(y))
#define E_LE_BOOL(T, U, x, y) (BV(x) <= BV(y))

/* unary: E_<OP>_<KIND>(T, U, x); CLAMP also sees the row's bounds `lo`, `hi` (type T) */
#define E_NEG_FLT(T, U, x) (-(x))
#define E_NEG_SINT(T, U, x) (T)(0 - (U)(x))
#define E_NEG_UINT E_NEG_SINT
#define E_ABS_FLT(T, U, x) M_FABS(x)
#define E_ABS_SINT(T, U, x) (T)((x) < 0 ? 0 - (U)(x) : (U)(x))
#define E_ABS_UINT(T, U, x) (x)
#define E_ABS_BOOL(T, U, x) (T) BV(x)
#define E_EXP_FLT(T, U, x) M_EXP(x)
#define E_LOG_FLT(T, U, x) M_LOG(x)
#define E_SQRT_FLT(T, U, x) M_SQRT(x)
#define E_TANH_FLT(T, U, x) M_TANH(x)
#define E_SIGMOID_FLT(T, U, x) M_SIGMOID(x)
#define E_RELU_FLT(T, U, x) ((x) < 0 ? (T)0 : (x))
#define E_RELU_SINT E_RELU_FLT
#define E_RELU_UINT(T, U, x) (x)
#define E_RELU_BOOL E_ABS_BOOL
#define E_SIGN_FLT(T, U, x) ((x) > 0 ? (T)1 : (x) < 0 ? (T)-1 : (x))
#define E_SIGN_SINT(T, U, x) (T)(((x) > 0) - ((x) < 0))
#define E_SIGN_UINT(T, U, x) (T)((x) != 0)
#define E_SIGN_BOOL E_SIGN_UINT
#define E_LOGICAL_NOT_FLT(T, U, x) ((x) == 0)
#define E_LOGICAL_NOT_SINT E_LOGICAL_NOT_FLT
#define E_LOGICAL_NOT_UINT E_LOGICAL_NOT_FLT
#define E_LOGICAL_NOT_BOOL E_LOGICAL_NOT_FLT
#define CLAMP_(x) ((x) < lo ? lo : (x) > hi ? hi : (x))
#define E_CLAMP_FLT(T, U, x) CLAMP_(x)
#define E_CLAMP_SINT(T, U, x) CLAMP_(x)
#define E_CLAMP_UINT(T, U, x) CLAMP_(x)
#define E_CLAMP_BOOL(T, U, x) (T) BV(CLAMP_(BV(x)))

/* Clamp bounds in the dtype: floats convert (+-inf stay infinite); integers round inward and
 * saturate at the type's range; bool bounds are 0 or 1. */
#define BOUND_FLT(T, v, up, MN, MX) ((T)(v))
#define BOUND_INT(T, v, up, MN, MX)                                                                \
  ((v) != (v)            ? (T)0                                                                    \
   : (v) <= (double)(MN) ? (T)(MN)                                                                 \
   : (v) >= (double)(MX) ? (T)(MX)                                                                 \
                         : (T)((up) ? ceil(v) : floor(v)))
#define BOUND_SINT BOUND_INT
#define BOUND_UINT BOUND_INT
#define BOUND_BOOL BOUND_INT

/* ---- row generators -------------------------------------------------------------------------- */

typedef uint8_t mf_bool_t;
#define OUT_SAME(T) T
#define OUT_BOOL(T) mf_bool_t

/* One binary row: o = E(a, b). Paths: all contiguous; b broadcast; a broadcast; strided. */
#define BIN_ROW(OP, OK, S, T, U, DT, K, MN, MX)                                                    \
  static void bin_##OP##_##S(void *ctx, char **p, const int64_t *s, int64_t n) {                   \
    (void)ctx;                                                                                     \
    typedef OUT_##OK(T) O;                                                                         \
    O *o = (O *)p[0];                                                                              \
    const T *a = (const T *)p[1], *b = (const T *)p[2];                                            \
    if (s[0] == (int64_t)sizeof(O) && s[1] == (int64_t)sizeof(T)) {                                \
      if (s[2] == (int64_t)sizeof(T)) {                                                            \
        for (int64_t i = 0; i < n; i++) {                                                          \
          T x = a[i], y = b[i];                                                                    \
          o[i] = (O)(E_##OP##_##K(T, U, x, y));                                                    \
        }                                                                                          \
        return;                                                                                    \
      }                                                                                            \
      if (s[2] == 0) {                                                                             \
        const T y = b[0];                                                                          \
        for (int64_t i = 0; i < n; i++) {                                                          \
          T x = a[i];                                                                              \
          o[i] = (O)(E_##OP##_##K(T, U, x, y));                                                    \
        }                                                                                          \
        return;                                                                                    \
      }                                                                                            \
    }                                                                                              \
    if (s[0] == (int64_t)sizeof(O) && s[1] == 0 && s[2] == (int64_t)sizeof(T)) {                   \
      const T x = a[0];                                                                            \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T y = b[i];                                                                                \
        o[i] = (O)(E_##OP##_##K(T, U, x, y));                                                      \
      }                                                                                            \
      return;                                                                                      \
    }                                                                                              \
    char *po = p[0];                                                                               \
    const char *pa = p[1], *pb = p[2];                                                             \
    for (int64_t i = 0; i < n; i++, po += s[0], pa += s[1], pb += s[2]) {                          \
      T x = *(const T *)pa, y = *(const T *)pb;                                                    \
      *(O *)po = (O)(E_##OP##_##K(T, U, x, y));                                                    \
    }                                                                                              \
  }

/* One unary row: o = E(x); ctx points at the clamp bounds (double lo, hi). */
#define UN_ROW(OP, OK, S, T, U, DT, K, MN, MX)                                                     \
  static void un_##OP##_##S(void *ctx, char **p, const int64_t *s, int64_t n) {                    \
    typedef OUT_##OK(T) O;                                                                         \
    const double *bd = ctx;                                                                        \
    const T lo = BOUND_##K(T, bd[0], 1, MN, MX), hi = BOUND_##K(T, bd[1], 0, MN, MX);              \
    (void)lo;                                                                                      \
    (void)hi;                                                                                      \
    O *o = (O *)p[0];                                                                              \
    const T *a = (const T *)p[1];                                                                  \
    if (s[0] == (int64_t)sizeof(O) && s[1] == (int64_t)sizeof(T)) {                                \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T x = a[i];                                                                                \
        o[i] = (O)(E_##OP##_##K(T, U, x));                                                         \
      }                                                                                            \
      return;                                                                                      \
    }                                                                                              \
    char *po = p[0];                                                                               \
    const char *pa = p[1];                                                                         \
    for (int64_t i = 0; i < n; i++, po += s[0], pa += s[1]) {                                      \
      T x = *(const T *)pa;                                                                        \
      *(O *)po = (O)(E_##OP##_##K(T, U, x));                                                       \
    }                                                                                              \
  }

/* ---- which ops each dtype kind has --------------------------------------------------------- */

/* (S suffix, C type, unsigned type for wrapping arithmetic, dtype, kind, min, max) */
#define CPU_TYPES(X)                                                                               \
  X(f32, float, float, MF_F32, FLT, -INFINITY, INFINITY)                                           \
  X(f64, double, double, MF_F64, FLT, -INFINITY, INFINITY)                                         \
  X(i32, int32_t, uint32_t, MF_I32, SINT, INT32_MIN, INT32_MAX)                                    \
  X(i64, int64_t, uint64_t, MF_I64, SINT, INT64_MIN, INT64_MAX)                                    \
  X(u8, uint8_t, uint8_t, MF_U8, UINT, 0, UINT8_MAX)                                               \
  X(b8, uint8_t, uint8_t, MF_BOOL, BOOL, 0, 1)

// clang-format off
#define CMP_OPS(M, ...)                                                                            \
  M(EQ, BOOL, __VA_ARGS__) M(NE, BOOL, __VA_ARGS__)                                                \
  M(GT, BOOL, __VA_ARGS__) M(GE, BOOL, __VA_ARGS__)                                                \
  M(LT, BOOL, __VA_ARGS__) M(LE, BOOL, __VA_ARGS__)                                                \
  M(LOGICAL_AND, BOOL, __VA_ARGS__) M(LOGICAL_OR, BOOL, __VA_ARGS__)
#define NUM_BINOPS(M, ...)                                                                         \
  M(ADD, SAME, __VA_ARGS__) M(SUB, SAME, __VA_ARGS__) M(MUL, SAME, __VA_ARGS__)                    \
  M(DIV, SAME, __VA_ARGS__) M(POW, SAME, __VA_ARGS__)                                              \
  M(MAXIMUM, SAME, __VA_ARGS__) M(MINIMUM, SAME, __VA_ARGS__)                                      \
  M(REMAINDER, SAME, __VA_ARGS__) M(FLOOR_DIVIDE, SAME, __VA_ARGS__)                               \
  CMP_OPS(M, __VA_ARGS__)
#define BINOPS_FLT(M, ...) NUM_BINOPS(M, __VA_ARGS__) M(RELU_BACKWARD, SAME, __VA_ARGS__)
#define BINOPS_SINT NUM_BINOPS
#define BINOPS_UINT NUM_BINOPS
#define BINOPS_BOOL(M, ...)                                                                        \
  M(ADD, SAME, __VA_ARGS__) M(MUL, SAME, __VA_ARGS__) M(POW, SAME, __VA_ARGS__)                    \
  M(MAXIMUM, SAME, __VA_ARGS__) M(MINIMUM, SAME, __VA_ARGS__)                                      \
  CMP_OPS(M, __VA_ARGS__)

#define INT_UNOPS(M, ...)                                                                          \
  M(NEG, SAME, __VA_ARGS__) M(ABS, SAME, __VA_ARGS__) M(RELU, SAME, __VA_ARGS__)                   \
  M(SIGN, SAME, __VA_ARGS__) M(LOGICAL_NOT, BOOL, __VA_ARGS__) M(CLAMP, SAME, __VA_ARGS__)
#define UNOPS_FLT(M, ...)                                                                          \
  INT_UNOPS(M, __VA_ARGS__)                                                                        \
  M(EXP, SAME, __VA_ARGS__) M(LOG, SAME, __VA_ARGS__) M(SQRT, SAME, __VA_ARGS__)                   \
  M(TANH, SAME, __VA_ARGS__) M(SIGMOID, SAME, __VA_ARGS__)
#define UNOPS_SINT INT_UNOPS
#define UNOPS_UINT INT_UNOPS
#define UNOPS_BOOL(M, ...)                                                                         \
  M(ABS, SAME, __VA_ARGS__) M(RELU, SAME, __VA_ARGS__) M(SIGN, SAME, __VA_ARGS__)                  \
  M(LOGICAL_NOT, BOOL, __VA_ARGS__) M(CLAMP, SAME, __VA_ARGS__)
// clang-format on

/* generate the row functions */
#define GEN_BIN(S, T, U, DT, K, MN, MX) BINOPS_##K(BIN_ROW, S, T, U, DT, K, MN, MX)
#define GEN_UN(S, T, U, DT, K, MN, MX) UNOPS_##K(UN_ROW, S, T, U, DT, K, MN, MX)
CPU_TYPES(GEN_BIN)
CPU_TYPES(GEN_UN)

/* and the tables [op][dtype] */
static mf_row_fn bin_table[MF_OP_COUNT][MF_DTYPE_COUNT];
static mf_row_fn un_table[MF_OP_COUNT][MF_DTYPE_COUNT];
#define REG_BIN(OP, OK, S, T, U, DT, K, MN, MX) bin_table[MF_OP_##OP][DT] = bin_##OP##_##S;
#define REG_UN(OP, OK, S, T, U, DT, K, MN, MX) un_table[MF_OP_##OP][DT] = un_##OP##_##S;
#define FILL_BIN(S, T, U, DT, K, MN, MX) BINOPS_##K(REG_BIN, S, T, U, DT, K, MN, MX)
#define FILL_UN(S, T, U, DT, K, MN, MX) UNOPS_##K(REG_UN, S, T, U, DT, K, MN, MX)

#if defined(__AVX__)
#define SQRT_ROW(S, T, V, LOAD, SQRT, STORE)                                                       \
  static void sqrt_row_##S(void *ctx, char **p, const int64_t *s, int64_t n) {                     \
    if (s[0] != (int64_t)sizeof(T) || s[1] != (int64_t)sizeof(T)) {                                \
      un_SQRT_##S(ctx, p, s, n);                                                                   \
      return;                                                                                      \
    }                                                                                              \
    T *o = (T *)p[0];                                                                              \
    const T *a = (const T *)p[1];                                                                  \
    int64_t i = 0;                                                                                 \
    for (; i + V <= n; i += V) STORE(o + i, SQRT(LOAD(a + i)));                                    \
    for (; i < n; i++) o[i] = sqrt_##S(a[i]);                                                      \
  }
#define sqrt_f32 sqrt_f
#define sqrt_f64 sqrt_d
SQRT_ROW(f32, float, 8, _mm256_loadu_ps, _mm256_sqrt_ps, _mm256_storeu_ps)
SQRT_ROW(f64, double, 4, _mm256_loadu_pd, _mm256_sqrt_pd, _mm256_storeu_pd)
#endif

static pthread_once_t tables_once = PTHREAD_ONCE_INIT;
static void fill_tables(void) {
  CPU_TYPES(FILL_BIN)
  CPU_TYPES(FILL_UN)
#if defined(__AVX__)
  un_table[MF_OP_SQRT][MF_F32] = sqrt_row_f32;
  un_table[MF_OP_SQRT][MF_F64] = sqrt_row_f64;
#endif
}

/* ---- entry points --------------------------------------------------------------------------- */

/* Elements per task below which splitting does not pay (measured on a 2-core Zen 3, where waking
 * the other thread costs ~1 us when it spins and ~15 us when it sleeps): add/mul gain from 64K
 * elements (1M: 174 -> 94 us), float32 exp from 8K (16K: 11.6 -> 6.8 us). */
static int64_t grain_for(mf_op op, mf_dtype dt) {
  switch (op) {
  case MF_OP_EXP:
  case MF_OP_LOG:
  case MF_OP_TANH:
  case MF_OP_SIGMOID: return dt == MF_F64 ? 1024 : 4096;
  case MF_OP_POW:
  case MF_OP_REMAINDER:
  case MF_OP_FLOOR_DIVIDE: return 4096;
  case MF_OP_DIV: return dt == MF_F32 || dt == MF_F64 ? 32768 : 4096;
  default: return 32768;
  }
}

static mf_status check_cpu_dtype(const char *name, mf_dtype dt) {
  if (dt == MF_F16 || dt == MF_BF16)
    return mf_fail(MF_ERR_DTYPE, "%s: %s tensors are only supported on CUDA devices", name,
                   mf_dtype_name(dt));
  if ((unsigned)dt >= MF_DTYPE_COUNT)
    return mf_fail(MF_ERR_DTYPE, "%s: bad dtype %d", name, (int)dt);
  return MF_OK;
}

/* every element of t is the same one (a broadcast scalar) */
static bool is_scalar_view(const mf_tensor *t) {
  for (int d = 0; d < t->ndim; d++)
    if (t->shape[d] != 1 && t->stride[d] != 0) return false;
  return mf_numel(t) > 0;
}

static bool is_bool_result(mf_op op) {
  return (op >= MF_OP_EQ && op <= MF_OP_LOGICAL_OR) || op == MF_OP_LOGICAL_NOT;
}

mf_status mf_cpu_binary(mf_device *dev, const mf_call *c) {
  (void)dev;
  pthread_once(&tables_once, fill_tables);
  const char *name = mf_op_name(c->op);
  if (c->op < MF_OP_ADD || c->op > MF_OP_LOGICAL_OR || c->nin < 2 || !c->out || !c->in[0] ||
      !c->in[1])
    return mf_fail(MF_ERR_ARG, "%s: not a binary elementwise call", name);
  mf_dtype dt = c->in[0]->dtype;
  MF_TRY(check_cpu_dtype(name, dt));
  if (c->in[1]->dtype != dt)
    return mf_fail(MF_ERR_DTYPE, "%s: operands must have the same dtype here, got %s and %s", name,
                   mf_dtype_name(dt), mf_dtype_name(c->in[1]->dtype));
  mf_dtype want = is_bool_result(c->op) ? MF_BOOL : dt;
  if (c->out->dtype != want)
    return mf_fail(MF_ERR_DTYPE, "%s: output dtype is %s, expected %s", name,
                   mf_dtype_name(c->out->dtype), mf_dtype_name(want));
  mf_row_fn row = bin_table[c->op][dt];
  if (!row) {
    if (dt == MF_BOOL && c->op == MF_OP_SUB)
      return mf_fail(MF_ERR_DTYPE, "sub: bool tensors do not support subtraction; use "
                                   "logical_xor (ne) or logical_not instead");
    return mf_fail(MF_ERR_DTYPE, "%s: not supported for %s tensors", name, mf_dtype_name(dt));
  }
  const mf_tensor *ops[3] = {c->out, c->in[0], c->in[1]};
  mf_iter it;
  if (c->op == MF_OP_POW && (dt == MF_F32 || dt == MF_F64) && is_scalar_view(c->in[1])) {
    /* x^2 and x^0.5 (losses, norms) without pow, as torch does: exact for 2, correctly rounded for
     * 0.5 (where sqrt gives -0 for -0 and NaN for -inf, pow +0 and +inf) */
    const char *p = mf_cpu_ptr(c->in[1]);
    double e = dt == MF_F32 ? *(const float *)p : *(const double *)p;
    if (e == 2) {
      ops[2] = c->in[0];
      MF_TRY(mf_iter_init(&it, name, 3, ops));
      mf_iter_parallel(&it, grain_for(MF_OP_MUL, dt), bin_table[MF_OP_MUL][dt], NULL);
      return MF_OK;
    }
    if (e == 0.5) {
      double bounds[2] = {0, 0};
      MF_TRY(mf_iter_init(&it, name, 2, ops));
      mf_iter_parallel(&it, grain_for(MF_OP_SQRT, dt), un_table[MF_OP_SQRT][dt], bounds);
      return MF_OK;
    }
  }
  MF_TRY(mf_iter_init(&it, name, 3, ops));
  mf_iter_parallel(&it, grain_for(c->op, dt), row, NULL);
  return MF_OK;
}

mf_status mf_cpu_unary(mf_device *dev, const mf_call *c) {
  (void)dev;
  pthread_once(&tables_once, fill_tables);
  const char *name = mf_op_name(c->op);
  if (c->op < MF_OP_NEG || c->op > MF_OP_CLAMP || c->nin < 1 || !c->out || !c->in[0])
    return mf_fail(MF_ERR_ARG, "%s: not a unary elementwise call", name);
  mf_dtype dt = c->in[0]->dtype;
  MF_TRY(check_cpu_dtype(name, dt));
  mf_dtype want = is_bool_result(c->op) ? MF_BOOL : dt;
  if (c->out->dtype != want)
    return mf_fail(MF_ERR_DTYPE, "%s: output dtype is %s, expected %s", name,
                   mf_dtype_name(c->out->dtype), mf_dtype_name(want));
  mf_row_fn row = un_table[c->op][dt];
  if (!row) {
    if (dt == MF_BOOL && c->op == MF_OP_NEG)
      return mf_fail(MF_ERR_DTYPE, "neg: bool tensors do not support negation; use "
                                   "logical_not instead");
    if (!mf_dtype_is_float(dt))
      return mf_fail(MF_ERR_DTYPE, "%s: needs a float tensor, got %s (cast it to float32 first)",
                     name, mf_dtype_name(dt));
    return mf_fail(MF_ERR_DTYPE, "%s: not supported for %s tensors", name, mf_dtype_name(dt));
  }
  double bounds[2] = {-INFINITY, INFINITY};
  if (c->op == MF_OP_CLAMP) {
    bounds[0] = c->p[0];
    bounds[1] = c->p[1];
  }
  const mf_tensor *ops[2] = {c->out, c->in[0]};
  mf_iter it;
  MF_TRY(mf_iter_init(&it, name, 2, ops));
  mf_iter_parallel(&it, grain_for(c->op, dt), row, bounds);
  return MF_OK;
}
