/* optim.c — the CPU kernels of the fused optimizer steps: SGD (momentum, dampening, Nesterov),
 * Adam and AdamW, RMSProp (momentum, centered), Adadelta and Adagrad, for float32 and float64.
 *
 * Each kernel makes one pass over a parameter, its gradient and its state tensors (all contiguous,
 * see kernels.h) and follows PyTorch 1.13's single-tensor ("for-loop") update formulas operation
 * by operation, in the parameter's dtype, with the scalars (bias corrections, step sizes) computed
 * in double as PyTorch computes them in Python. `maximize` negates the gradient, then a coupled
 * weight decay adds weight_decay * param to it. At step 1 the kernels ignore what the state
 * tensors hold and start from PyTorch's initial state (zeros; Adagrad's sum from
 * initial_accumulator_value; SGD's momentum buffer from the first update direction), so callers
 * may allocate them uninitialised.
 *
 * Vectorisation: libm's sqrt may set errno, which keeps gcc from vectorising a loop that calls it.
 * The kernels that need square roots therefore work in blocks of BLOCK elements: a vectorised loop
 * updates the state and writes the values whose square roots are needed into a small buffer, vsqrt
 * takes the roots with SSE/AVX instructions (correctly rounded, like sqrt), and a second vectorised
 * loop updates the parameter. Each (kernel, dtype) is generated from one definition by
 * OPTIM_KERNELS(T, SFX). Large tensors are split over the thread pool.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "cpu/iter.h"
#include "cpu/kernels.h"

#define BLOCK 256   /* elements per pass over the L1-resident temporaries */
#define GRAIN 32768 /* elements worth a parallel chunk */

/* ---- square roots of a small buffer, in place ----------------------------------------------- */

static inline void vsqrt_float(float *x, int n) {
  int i = 0;
#if defined(__AVX__)
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_sqrt_ps(_mm256_loadu_ps(x + i)));
#elif defined(__SSE2__)
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(x + i, _mm_sqrt_ps(_mm_loadu_ps(x + i)));
#endif
  for (; i < n; i++) x[i] = __builtin_sqrtf(x[i]);
}

static inline void vsqrt_double(double *x, int n) {
  int i = 0;
#if defined(__AVX__)
  for (; i + 4 <= n; i += 4) _mm256_storeu_pd(x + i, _mm256_sqrt_pd(_mm256_loadu_pd(x + i)));
#elif defined(__SSE2__)
  for (; i + 2 <= n; i += 2) _mm_storeu_pd(x + i, _mm_sqrt_pd(_mm_loadu_pd(x + i)));
#endif
  for (; i < n; i++) x[i] = __builtin_sqrt(x[i]);
}

/* ---- the job a parallel chunk works on ------------------------------------------------------ */

typedef struct optim_job {
  void *p;       /* the parameter */
  const void *g; /* its gradient */
  void *s[3];    /* state tensors (NULL where unused) */
  const mf_optim_hparams *h;
  double k[4]; /* scalars computed once per call (see each kernel) */
} optim_job;

/* The gradient as the update sees it: negated for maximize, plus the coupled weight decay. */
#define GRAD_IN(gi, pi) (wd_on ? (maximize ? -(gi) : (gi)) + wd * (pi) : (maximize ? -(gi) : (gi)))

#define OPTIM_KERNELS(T, SFX)                                                                      \
  /* SGD. state: s[0] = momentum buffer, or NULL when momentum is 0. */                            \
  static void sgd_##SFX(void *ctx, int64_t b, int64_t e) {                                         \
    const optim_job *j = ctx;                                                                      \
    const mf_optim_hparams *h = j->h;                                                              \
    T *restrict p = (T *)j->p + b, *restrict buf = j->s[0] ? (T *)j->s[0] + b : NULL;              \
    const T *restrict g = (const T *)j->g + b;                                                     \
    const T lr = (T)h->lr, wd = (T)h->weight_decay, mom = (T)h->momentum;                          \
    const T damp1 = (T)(1 - h->dampening);                                                         \
    const bool wd_on = h->weight_decay != 0, maximize = h->maximize, nesterov = h->nesterov;       \
    const bool fresh = h->step <= 1;                                                               \
    int64_t n = e - b;                                                                             \
    if (!buf) {                                                                                    \
      for (int64_t i = 0; i < n; i++) p[i] = p[i] - lr * GRAD_IN(g[i], p[i]);                      \
      return;                                                                                      \
    }                                                                                              \
    for (int64_t i = 0; i < n; i++) {                                                              \
      T d = GRAD_IN(g[i], p[i]);                                                                   \
      T m = fresh ? d : mom * buf[i] + damp1 * d;                                                  \
      buf[i] = m;                                                                                  \
      d = nesterov ? d + mom * m : m;                                                              \
      p[i] = p[i] - lr * d;                                                                        \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  /* Adam / AdamW. state: s[0] = exp_avg, s[1] = exp_avg_sq. k: step_size, sqrt(bias_correction2), \
   * the decoupled decay factor 1 - lr * weight_decay. */                                          \
  static void adam_##SFX(void *ctx, int64_t b, int64_t e) {                                        \
    const optim_job *j = ctx;                                                                      \
    const mf_optim_hparams *h = j->h;                                                              \
    const T b1 = (T)h->beta1, b2 = (T)h->beta2, c1 = (T)(1 - h->beta1), c2 = (T)(1 - h->beta2);    \
    const T eps = (T)h->eps, wd = (T)h->weight_decay;                                              \
    const T step_size = (T)j->k[0], bc2_sqrt = (T)j->k[1], decay = (T)j->k[2];                     \
    const bool decoupled = h->decoupled_weight_decay, maximize = h->maximize;                      \
    const bool wd_on = !decoupled && h->weight_decay != 0, fresh = h->step <= 1;                   \
    T tmp[BLOCK];                                                                                  \
    for (int64_t i0 = b; i0 < e; i0 += BLOCK) {                                                    \
      int n = (int)(e - i0 < BLOCK ? e - i0 : BLOCK);                                              \
      T *restrict p = (T *)j->p + i0, *restrict m = (T *)j->s[0] + i0;                             \
      T *restrict v = (T *)j->s[1] + i0;                                                           \
      const T *restrict g = (const T *)j->g + i0;                                                  \
      for (int i = 0; i < n; i++) {                                                                \
        T d = GRAD_IN(g[i], p[i]);                                                                 \
        T m0 = fresh ? 0 : m[i], v0 = fresh ? 0 : v[i];                                            \
        m[i] = b1 * m0 + c1 * d;                                                                   \
        T vi = b2 * v0 + c2 * d * d;                                                               \
        v[i] = vi;                                                                                 \
        tmp[i] = vi;                                                                               \
      }                                                                                            \
      vsqrt_##T(tmp, n);                                                                           \
      for (int i = 0; i < n; i++) {                                                                \
        T pi = decoupled ? p[i] * decay : p[i];                                                    \
        p[i] = pi - step_size * (m[i] / (tmp[i] / bc2_sqrt + eps));                                \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  /* RMSProp. state: s[0] = square_avg, s[1] = momentum buffer (momentum > 0), s[2] = grad_avg     \
   * (centered). */                                                                                \
  static void rmsprop_##SFX(void *ctx, int64_t b, int64_t e) {                                     \
    const optim_job *j = ctx;                                                                      \
    const mf_optim_hparams *h = j->h;                                                              \
    const T a = (T)h->alpha, c = (T)(1 - h->alpha), eps = (T)h->eps, lr = (T)h->lr;                \
    const T wd = (T)h->weight_decay, mom = (T)h->momentum;                                         \
    const bool wd_on = h->weight_decay != 0, maximize = h->maximize, fresh = h->step <= 1;         \
    const bool centered = h->centered, use_mom = h->momentum > 0;                                  \
    T tmp[BLOCK], dg[BLOCK];                                                                       \
    for (int64_t i0 = b; i0 < e; i0 += BLOCK) {                                                    \
      int n = (int)(e - i0 < BLOCK ? e - i0 : BLOCK);                                              \
      T *restrict p = (T *)j->p + i0, *restrict sq = (T *)j->s[0] + i0;                            \
      T *restrict buf = use_mom ? (T *)j->s[1] + i0 : NULL;                                        \
      T *restrict ga = centered ? (T *)j->s[2] + i0 : NULL;                                        \
      const T *restrict g = (const T *)j->g + i0;                                                  \
      if (centered) {                                                                              \
        for (int i = 0; i < n; i++) {                                                              \
          T d = GRAD_IN(g[i], p[i]);                                                               \
          T s0 = fresh ? 0 : sq[i], a0 = fresh ? 0 : ga[i];                                        \
          T si = a * s0 + c * d * d, gi = a * a0 + c * d;                                          \
          sq[i] = si;                                                                              \
          ga[i] = gi;                                                                              \
          tmp[i] = si - gi * gi;                                                                   \
          dg[i] = d;                                                                               \
        }                                                                                          \
      } else {                                                                                     \
        for (int i = 0; i < n; i++) {                                                              \
          T d = GRAD_IN(g[i], p[i]);                                                               \
          T s0 = fresh ? 0 : sq[i];                                                                \
          T si = a * s0 + c * d * d;                                                               \
          sq[i] = si;                                                                              \
          tmp[i] = si;                                                                             \
          dg[i] = d;                                                                               \
        }                                                                                          \
      }                                                                                            \
      vsqrt_##T(tmp, n);                                                                           \
      if (use_mom) {                                                                               \
        for (int i = 0; i < n; i++) {                                                              \
          T b0 = fresh ? 0 : buf[i];                                                               \
          T bi = mom * b0 + dg[i] / (tmp[i] + eps);                                                \
          buf[i] = bi;                                                                             \
          p[i] = p[i] - lr * bi;                                                                   \
        }                                                                                          \
      } else {                                                                                     \
        for (int i = 0; i < n; i++) p[i] = p[i] - lr * (dg[i] / (tmp[i] + eps));                   \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  /* Adadelta (rho is h->alpha). state: s[0] = square_avg, s[1] = acc_delta. */                    \
  static void adadelta_##SFX(void *ctx, int64_t b, int64_t e) {                                    \
    const optim_job *j = ctx;                                                                      \
    const mf_optim_hparams *h = j->h;                                                              \
    const T rho = (T)h->alpha, c = (T)(1 - h->alpha), eps = (T)h->eps, lr = (T)h->lr;              \
    const T wd = (T)h->weight_decay;                                                               \
    const bool wd_on = h->weight_decay != 0, maximize = h->maximize, fresh = h->step <= 1;         \
    T num[BLOCK], den[BLOCK], dg[BLOCK];                                                           \
    for (int64_t i0 = b; i0 < e; i0 += BLOCK) {                                                    \
      int n = (int)(e - i0 < BLOCK ? e - i0 : BLOCK);                                              \
      T *restrict p = (T *)j->p + i0, *restrict sq = (T *)j->s[0] + i0;                            \
      T *restrict acc = (T *)j->s[1] + i0;                                                         \
      const T *restrict g = (const T *)j->g + i0;                                                  \
      for (int i = 0; i < n; i++) {                                                                \
        T d = GRAD_IN(g[i], p[i]);                                                                 \
        T s0 = fresh ? 0 : sq[i], a0 = fresh ? 0 : acc[i];                                         \
        T si = rho * s0 + c * d * d;                                                               \
        sq[i] = si;                                                                                \
        den[i] = si + eps;                                                                         \
        num[i] = a0 + eps;                                                                         \
        dg[i] = d;                                                                                 \
      }                                                                                            \
      vsqrt_##T(den, n);                                                                           \
      vsqrt_##T(num, n);                                                                           \
      for (int i = 0; i < n; i++) {                                                                \
        T a0 = fresh ? 0 : acc[i];                                                                 \
        T delta = num[i] / den[i] * dg[i];                                                         \
        acc[i] = rho * a0 + c * delta * delta;                                                     \
        p[i] = p[i] - lr * delta;                                                                  \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  /* Adagrad. state: s[0] = sum. k: the decayed learning rate lr / (1 + (step - 1) * lr_decay). */ \
  static void adagrad_##SFX(void *ctx, int64_t b, int64_t e) {                                     \
    const optim_job *j = ctx;                                                                      \
    const mf_optim_hparams *h = j->h;                                                              \
    const T clr = (T)j->k[0], eps = (T)h->eps, wd = (T)h->weight_decay;                            \
    const T init = (T)h->initial_accumulator_value;                                                \
    const bool wd_on = h->weight_decay != 0, maximize = h->maximize, fresh = h->step <= 1;         \
    T tmp[BLOCK], dg[BLOCK];                                                                       \
    for (int64_t i0 = b; i0 < e; i0 += BLOCK) {                                                    \
      int n = (int)(e - i0 < BLOCK ? e - i0 : BLOCK);                                              \
      T *restrict p = (T *)j->p + i0, *restrict sum = (T *)j->s[0] + i0;                           \
      const T *restrict g = (const T *)j->g + i0;                                                  \
      for (int i = 0; i < n; i++) {                                                                \
        T d = GRAD_IN(g[i], p[i]);                                                                 \
        T si = (fresh ? init : sum[i]) + d * d;                                                    \
        sum[i] = si;                                                                               \
        tmp[i] = si;                                                                               \
        dg[i] = d;                                                                                 \
      }                                                                                            \
      vsqrt_##T(tmp, n);                                                                           \
      for (int i = 0; i < n; i++) p[i] = p[i] - clr * (dg[i] / (tmp[i] + eps));                    \
    }                                                                                              \
  }

OPTIM_KERNELS(float, f32)
OPTIM_KERNELS(double, f64)

/* ---- entry point ------------------------------------------------------------------------------
 */

mf_status mf_cpu_optim(mf_device *dev, const mf_call *c) {
  if (c->nlist > 0) { /* a list of calls (mf_optim_steps): one after another */
    for (int i = 0; i < c->nlist; i++) {
      mf_call one = c->list[i];
      one.list = NULL;
      one.nlist = 0;
      MF_TRY(mf_cpu_optim(dev, &one));
    }
    return MF_OK;
  }
  (void)dev;
  const char *name = mf_op_name(c->op);
  const mf_optim_hparams *h = c->params;
  if (!c->out || c->nin < 1 || !c->in[0] || !h)
    return mf_fail(MF_ERR_ARG, "%s: missing operand", name);
  mf_dtype dt = c->out->dtype;
  if (dt != MF_F32 && dt != MF_F64)
    return mf_fail(MF_ERR_DTYPE, "%s: the CPU kernel takes float32 or float64, not %s", name,
                   mf_dtype_name(dt));
  bool f32 = dt == MF_F32;
  optim_job j = {.p = mf_cpu_ptr(c->out), .g = mf_cpu_ptr(c->in[0]), .h = h};
  for (int k = 0; k < 3; k++) j.s[k] = c->state[k] ? mf_cpu_ptr(c->state[k]) : NULL;
  mf_range_fn fn;
  switch (c->op) {
  case MF_OP_SGD_STEP: fn = f32 ? sgd_f32 : sgd_f64; break;
  case MF_OP_ADAM_STEP: {
    double step = (double)h->step;
    j.k[0] = h->lr / (1 - pow(h->beta1, step));
    j.k[1] = sqrt(1 - pow(h->beta2, step));
    j.k[2] = 1 - h->lr * h->weight_decay;
    fn = f32 ? adam_f32 : adam_f64;
    break;
  }
  case MF_OP_RMSPROP_STEP: fn = f32 ? rmsprop_f32 : rmsprop_f64; break;
  case MF_OP_ADADELTA_STEP: fn = f32 ? adadelta_f32 : adadelta_f64; break;
  case MF_OP_ADAGRAD_STEP:
    j.k[0] = h->lr / (1 + (double)(h->step - 1) * h->lr_decay);
    fn = f32 ? adagrad_f32 : adagrad_f64;
    break;
  default: return mf_fail(MF_ERR_ARG, "%s: not an optimizer step", name);
  }
  mf_parallel_for(mf_numel(c->out), GRAIN, fn, &j);
  return MF_OK;
}
