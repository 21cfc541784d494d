/* elementwise.cu — the CUDA kernels of the binary (ADD .. LOGICAL_OR) and unary (NEG .. CLAMP)
 * ops, for float32, float64, int32, int64, uint8, bool, float16 and bfloat16 (the halves compute
 * in float and round once).
 *
 * One kernel template per (dtype, result kind) with the op as a kernel argument (a switch that is
 * uniform across the grid), so nvcc compiles a few dozen kernels, not hundreds. Operands are
 * strided views of the output's shape (broadcast dims stride 0) through mf_offsets (common.cuh).
 * The semantics are those of cpu/elementwise.c, case for case: integer arithmetic wraps (computed
 * unsigned), integer DIV/REMAINDER/FLOOR_DIVIDE by zero give 0 and MIN / -1 gives MIN, REMAINDER
 * has the divisor's sign, integer POW with a negative exponent gives 0 (1 and -1 excepted),
 * MAXIMUM/MINIMUM propagate NaN, RELU/SIGN/CLAMP keep NaN, bool ADD = or, MUL = and, POW = a or
 * not b; bool SUB/DIV/REMAINDER/FLOOR_DIVIDE/NEG are MF_ERR_DTYPE; transcendental ops need floats.
 */
#include <math.h>
#include <string.h>

#include "cuda/kernels.h"

/* ---- scalar semantics ------------------------------------------------------------------------ */

template <class C> __device__ __forceinline__ C flt_floor_divide(C a, C b) {
  if (b == 0) return a / b;
  C mod = fmod(a, b);
  C div = (a - mod) / b;
  if (mod != 0 && (b < 0) != (mod < 0)) div -= 1;
  if (div == 0) return copysign((C)0, a / b);
  C fl = floor(div);
  if (div - fl > (C)0.5) fl += 1;
  return fl;
}

template <class C> __device__ __forceinline__ C flt_remainder(C a, C b) {
  C mod = fmod(a, b);
  if (mod != 0 && (b < 0) != (mod < 0)) mod += b;
  return mod;
}

template <class C> __device__ __forceinline__ C flt_sigmoid(C x) {
  C t = exp(-fabs(x));
  C y = (x >= 0 ? (C)1 : t) / ((C)1 + t);
  return x != x ? x : y;
}

template <class C> __device__ __forceinline__ C flt_binary(int op, C x, C y) {
  switch (op) {
  case MF_OP_ADD: return x + y;
  case MF_OP_SUB: return x - y;
  case MF_OP_MUL: return x * y;
  case MF_OP_DIV: return x / y;
  case MF_OP_POW: return y == 2 ? x * x : pow(x, y);
  case MF_OP_MAXIMUM: return (x > y || x != x) ? x : y;
  case MF_OP_MINIMUM: return (x < y || x != x) ? x : y;
  case MF_OP_REMAINDER: return flt_remainder(x, y);
  case MF_OP_FLOOR_DIVIDE: return flt_floor_divide(x, y);
  case MF_OP_RELU_BACKWARD: return y > (C)0 ? x : (C)0;
  default: return x;
  }
}

/* signed integers: T with its unsigned twin U */
template <class T> __device__ __forceinline__ T int_pow(T a, T b) {
  using U = typename std::make_unsigned<T>::type;
  if constexpr (std::is_signed<T>::value) {
    if (b < 0) return a == 1 ? (T)1 : a == (T)-1 ? ((b & 1) ? (T)-1 : (T)1) : (T)0;
  }
  U r = 1, x = (U)a;
  for (; b; b >>= 1) {
    if (b & 1) r = (U)(r * x);
    x = (U)(x * x);
  }
  return (T)r;
}

template <class T> __device__ __forceinline__ T sint_binary(int op, T x, T y) {
  using U = typename std::make_unsigned<T>::type;
  switch (op) {
  case MF_OP_ADD: return (T)((U)x + (U)y);
  case MF_OP_SUB: return (T)((U)x - (U)y);
  case MF_OP_MUL: return (T)((U)x * (U)y);
  case MF_OP_DIV: return y == 0 ? (T)0 : y == -1 ? (T)(0 - (U)x) : (T)(x / y);
  case MF_OP_POW: return int_pow(x, y);
  case MF_OP_MAXIMUM: return x > y ? x : y;
  case MF_OP_MINIMUM: return x < y ? x : y;
  case MF_OP_REMAINDER: {
    if (y == 0 || y == -1) return 0;
    T r = x % y;
    return (r != 0 && (r < 0) != (y < 0)) ? (T)(r + y) : r;
  }
  case MF_OP_FLOOR_DIVIDE: {
    if (y == 0) return 0;
    if (y == -1) return (T)(0 - (U)x);
    T q = x / y, r = x % y;
    return (r != 0 && (r < 0) != (y < 0)) ? (T)(q - 1) : q;
  }
  default: return x;
  }
}

__device__ __forceinline__ uint8_t u8_binary(int op, uint8_t x, uint8_t y) {
  switch (op) {
  case MF_OP_ADD: return (uint8_t)(x + y);
  case MF_OP_SUB: return (uint8_t)(x - y);
  case MF_OP_MUL: return (uint8_t)(x * y);
  case MF_OP_DIV:
  case MF_OP_FLOOR_DIVIDE: return y == 0 ? 0 : (uint8_t)(x / y);
  case MF_OP_POW: return int_pow<uint8_t>(x, y);
  case MF_OP_MAXIMUM: return x > y ? x : y;
  case MF_OP_MINIMUM: return x < y ? x : y;
  case MF_OP_REMAINDER: return y == 0 ? 0 : (uint8_t)(x % y);
  default: return x;
  }
}

__device__ __forceinline__ uint8_t bool_binary(int op, uint8_t x, uint8_t y) {
  bool a = x != 0, b = y != 0;
  switch (op) {
  case MF_OP_ADD:
  case MF_OP_MAXIMUM: return a | b;
  case MF_OP_MUL:
  case MF_OP_MINIMUM: return a & b;
  case MF_OP_POW: return a | !b;
  default: return a;
  }
}

template <class T, int K> __device__ __forceinline__ T any_binary(int op, T x, T y) {
  if constexpr (K == MF_K_FLT)
    return flt_binary<T>(op, x, y);
  else if constexpr (K == MF_K_HALF)
    return T(flt_binary<float>(op, (float)x, (float)y));
  else if constexpr (K == MF_K_SINT)
    return sint_binary<T>(op, x, y);
  else if constexpr (K == MF_K_UINT)
    return u8_binary(op, x, y);
  else
    return bool_binary(op, x, y);
}

/* comparisons and logic, in the compute type (bools as truth values) */
template <class T, int K> __device__ __forceinline__ uint8_t any_compare(int op, T xt, T yt) {
  using C = typename std::conditional<K == MF_K_BOOL, bool, typename mf_acc<T>::type>::type;
  C x, y;
  if constexpr (K == MF_K_BOOL) {
    x = xt != 0;
    y = yt != 0;
  } else {
    x = (C)xt;
    y = (C)yt;
  }
  switch (op) {
  case MF_OP_EQ: return x == y;
  case MF_OP_NE: return x != y;
  case MF_OP_GT: return x > y;
  case MF_OP_GE: return x >= y;
  case MF_OP_LT: return x < y;
  case MF_OP_LE: return x <= y;
  case MF_OP_LOGICAL_AND: return (x != (C)0) & (y != (C)0);
  case MF_OP_LOGICAL_OR: return (x != (C)0) | (y != (C)0);
  default: return 0;
  }
}

/* unary; lo, hi: CLAMP's bounds already in range for T (integers) */
template <class C> __device__ __forceinline__ C flt_unary(int op, C x, C lo, C hi) {
  switch (op) {
  case MF_OP_NEG: return -x;
  case MF_OP_ABS: return fabs(x);
  case MF_OP_EXP: return exp(x);
  case MF_OP_LOG: return log(x);
  case MF_OP_SQRT: return sqrt(x);
  case MF_OP_TANH: return tanh(x);
  case MF_OP_SIGMOID: return flt_sigmoid(x);
  case MF_OP_RELU: return x < 0 ? (C)0 : x;
  case MF_OP_SIGN: return x > 0 ? (C)1 : x < 0 ? (C)-1 : x;
  case MF_OP_CLAMP: return x < lo ? lo : x > hi ? hi : x;
  default: return x;
  }
}

template <class T> __device__ __forceinline__ T int_unary(int op, T x, T lo, T hi) {
  using U = typename std::make_unsigned<T>::type;
  switch (op) {
  case MF_OP_NEG: return (T)(0 - (U)x);
  case MF_OP_ABS:
    if constexpr (std::is_signed<T>::value)
      return (T)(x < 0 ? (U)(0 - (U)x) : (U)x);
    else
      return x;
  case MF_OP_RELU:
    if constexpr (std::is_signed<T>::value)
      return x < 0 ? (T)0 : x;
    else
      return x;
  case MF_OP_SIGN:
    if constexpr (std::is_signed<T>::value)
      return (T)((x > 0) - (x < 0));
    else
      return (T)(x != 0);
  case MF_OP_CLAMP: return x < lo ? lo : x > hi ? hi : x;
  default: return x;
  }
}

template <class T, int K>
__device__ __forceinline__ T any_unary(int op, T x, double flo, double fhi, int64_t ilo,
                                       int64_t ihi) {
  if constexpr (K == MF_K_FLT)
    return flt_unary<T>(op, x, (T)flo, (T)fhi);
  else if constexpr (K == MF_K_HALF)
    return T(flt_unary<float>(op, (float)x, (float)flo, (float)fhi));
  else if constexpr (K == MF_K_BOOL) {
    uint8_t b = x != 0;
    if (op == MF_OP_CLAMP) return (uint8_t)(b < ilo ? ilo : b > ihi ? ihi : b);
    return b; /* ABS, RELU, SIGN of a bool: itself */
  } else
    return int_unary<T>(op, x, (T)ilo, (T)ihi);
}

/* ---- kernels ----------------------------------------------------------------------------------
 */

/* host: 1 or 2 when operand a or b is a host number (its pointer null), of value hd (hflt) or hi */
template <class T, int K, bool CMP>
__global__ void binary_kernel(int op, void *out, const T *a, const T *b, mf_offsets<3> oc,
                              int64_t n, int host, bool hflt, double hd, int64_t hi) {
  T hv = hflt ? mf_cvt<T, K, double, MF_K_FLT>(hd) : mf_cvt<T, K, int64_t, MF_K_SINT>(hi);
  MF_GRID_LOOP(i, n) {
    int64_t off[3];
    oc.get(i, off);
    T x = host == 1 ? hv : a[off[1]], y = host == 2 ? hv : b[off[2]];
    if constexpr (CMP)
      ((uint8_t *)out)[off[0]] = any_compare<T, K>(op, x, y);
    else
      ((T *)out)[off[0]] = any_binary<T, K>(op, x, y);
  }
}

template <class T, int K, bool NOT>
__global__ void unary_kernel(int op, void *out, const T *a, mf_offsets<2> oc, int64_t n, double flo,
                             double fhi, int64_t ilo, int64_t ihi) {
  MF_GRID_LOOP(i, n) {
    int64_t off[2];
    oc.get(i, off);
    T x = a[off[1]];
    if constexpr (NOT) {
      using C = typename mf_acc<T>::type;
      ((uint8_t *)out)[off[0]] = (C)x == (C)0;
    } else {
      ((T *)out)[off[0]] = any_unary<T, K>(op, x, flo, fhi, ilo, ihi);
    }
  }
}

/* ---- entry points -----------------------------------------------------------------------------
 */

static bool is_bool_result(mf_op op) {
  return (op >= MF_OP_EQ && op <= MF_OP_LOGICAL_OR) || op == MF_OP_LOGICAL_NOT;
}

mf_status mf_cuda_binary(mf_device *dev, const mf_call *c) {
  const char *name = mf_op_name(c->op);
  /* a host number's place (MF_CALL_HOST_*) is taken by the other operand for dtype and offsets */
  int host = (int)c->ip[MF_CALL_HOST_WHICH];
  const mf_tensor *ta = host == 1 ? c->in[1] : c->in[0], *tb = host == 2 ? c->in[0] : c->in[1];
  if (c->op < MF_OP_ADD || c->op > MF_OP_LOGICAL_OR || c->nin < 2 || !c->out || !ta || !tb ||
      host < 0 || host > 2)
    return mf_fail(MF_ERR_ARG, "%s: not a binary elementwise call", name);
  mf_dtype dt = ta->dtype;
  if (tb->dtype != dt)
    return mf_fail(MF_ERR_DTYPE, "%s: operands must have the same dtype here, got %s and %s", name,
                   mf_dtype_name(dt), mf_dtype_name(tb->dtype));
  bool cmp = is_bool_result(c->op);
  mf_dtype want = cmp ? MF_BOOL : dt;
  if (c->out->dtype != want)
    return mf_fail(MF_ERR_DTYPE, "%s: output dtype is %s, expected %s", name,
                   mf_dtype_name(c->out->dtype), mf_dtype_name(want));
  if (dt == MF_BOOL && (c->op == MF_OP_SUB || c->op == MF_OP_DIV || c->op == MF_OP_REMAINDER ||
                        c->op == MF_OP_FLOOR_DIVIDE)) {
    if (c->op == MF_OP_SUB)
      return mf_fail(MF_ERR_DTYPE, "sub: bool tensors do not support subtraction; use "
                                   "logical_xor (ne) or logical_not instead");
    return mf_fail(MF_ERR_DTYPE, "%s: not supported for bool tensors", name);
  }
  int64_t n = mf_numel(c->out);
  if (n == 0) return MF_OK;
  const mf_tensor *ops[3] = {c->out, ta, tb};
  mf_offsets<3> oc;
  MF_TRY(mf_cuda_offsets<3>(name, ops, &oc));
  MF_TRY(mf_cuda_enter(dev));
  cudaStream_t s = mf_cuda_stream(dev);
  void *o = mf_cuda_ptr(c->out);
  bool hflt = c->ip[MF_CALL_HOST_FLOAT];
  double hd;
  memcpy(&hd, &c->ip[MF_CALL_HOST_VALUE], sizeof hd);
  bool ok = mf_cuda_visit(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int K = decltype(tag)::kind;
    const T *a = host == 1 ? nullptr : mf_cuda_ptr<T>(c->in[0]),
            *b = host == 2 ? nullptr : mf_cuda_ptr<T>(c->in[1]);
    int64_t hi = c->ip[MF_CALL_HOST_VALUE];
    if (cmp)
      binary_kernel<T, K, true>
          <<<mf_cuda_blocks(n), MF_CUDA_THREADS, 0, s>>>(c->op, o, a, b, oc, n, host, hflt, hd, hi);
    else
      binary_kernel<T, K, false>
          <<<mf_cuda_blocks(n), MF_CUDA_THREADS, 0, s>>>(c->op, o, a, b, oc, n, host, hflt, hd, hi);
  });
  if (!ok) return mf_fail(MF_ERR_DTYPE, "%s: bad dtype %d", name, (int)dt);
  return mf_cuda_launched(dev, name);
}

/* CLAMP's bounds in an integer dtype, as the CPU's BOUND_INT: rounded inward, saturated */
static int64_t int_bound(double v, bool up, int64_t mn, int64_t mx) {
  if (v != v) return 0;
  if (v <= (double)mn) return mn;
  if (v >= (double)mx) return mx;
  return (int64_t)(up ? ceil(v) : floor(v));
}

mf_status mf_cuda_unary(mf_device *dev, const mf_call *c) {
  const char *name = mf_op_name(c->op);
  if (c->op < MF_OP_NEG || c->op > MF_OP_CLAMP || c->nin < 1 || !c->out || !c->in[0])
    return mf_fail(MF_ERR_ARG, "%s: not a unary elementwise call", name);
  mf_dtype dt = c->in[0]->dtype;
  bool isnot = c->op == MF_OP_LOGICAL_NOT;
  mf_dtype want = isnot ? MF_BOOL : dt;
  if (c->out->dtype != want)
    return mf_fail(MF_ERR_DTYPE, "%s: output dtype is %s, expected %s", name,
                   mf_dtype_name(c->out->dtype), mf_dtype_name(want));
  bool transcendental = c->op == MF_OP_EXP || c->op == MF_OP_LOG || c->op == MF_OP_SQRT ||
                        c->op == MF_OP_TANH || c->op == MF_OP_SIGMOID;
  if (transcendental && !mf_dtype_is_float(dt))
    return mf_fail(MF_ERR_DTYPE, "%s: needs a float tensor, got %s (cast it to float32 first)",
                   name, mf_dtype_name(dt));
  if (dt == MF_BOOL && c->op == MF_OP_NEG)
    return mf_fail(MF_ERR_DTYPE, "neg: bool tensors do not support negation; use "
                                 "logical_not instead");
  double flo = -INFINITY, fhi = INFINITY;
  int64_t ilo = INT64_MIN, ihi = INT64_MAX;
  if (c->op == MF_OP_CLAMP) {
    flo = c->p[0];
    fhi = c->p[1];
    switch (dt) {
    case MF_I32:
      ilo = int_bound(flo, true, INT32_MIN, INT32_MAX);
      ihi = int_bound(fhi, false, INT32_MIN, INT32_MAX);
      break;
    case MF_I64:
      ilo = int_bound(flo, true, INT64_MIN, INT64_MAX);
      ihi = int_bound(fhi, false, INT64_MIN, INT64_MAX);
      break;
    case MF_U8:
      ilo = int_bound(flo, true, 0, 255);
      ihi = int_bound(fhi, false, 0, 255);
      break;
    case MF_BOOL:
      ilo = int_bound(flo, true, 0, 1);
      ihi = int_bound(fhi, false, 0, 1);
      break;
    default: break;
    }
  }
  int64_t n = mf_numel(c->out);
  if (n == 0) return MF_OK;
  const mf_tensor *ops[2] = {c->out, c->in[0]};
  mf_offsets<2> oc;
  MF_TRY(mf_cuda_offsets<2>(name, ops, &oc));
  MF_TRY(mf_cuda_enter(dev));
  cudaStream_t s = mf_cuda_stream(dev);
  void *o = mf_cuda_ptr(c->out);
  bool ok = mf_cuda_visit(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int K = decltype(tag)::kind;
    const T *a = mf_cuda_ptr<T>(c->in[0]);
    if (isnot)
      unary_kernel<T, K, true>
          <<<mf_cuda_blocks(n), MF_CUDA_THREADS, 0, s>>>(c->op, o, a, oc, n, flo, fhi, ilo, ihi);
    else
      unary_kernel<T, K, false>
          <<<mf_cuda_blocks(n), MF_CUDA_THREADS, 0, s>>>(c->op, o, a, oc, n, flo, fhi, ilo, ihi);
  });
  if (!ok) return mf_fail(MF_ERR_DTYPE, "%s: bad dtype %d", name, (int)dt);
  return mf_cuda_launched(dev, name);
}
