/* optim.cu — the CUDA kernels of the fused optimizer steps (float32, float64): SGD (momentum,
 * dampening, Nesterov), Adam/AdamW, RMSProp (momentum, centered), Adadelta, Adagrad. One thread
 * per element, one kernel per parameter, with cpu/optim.c's formulas (PyTorch 1.13's single-tensor
 * updates) operation by operation, in the parameter's dtype; the scalars (bias corrections, step
 * sizes) are computed in double on the host. At step 1 the state tensors' contents are ignored
 * (PyTorch's initial state), so they may come from mf_empty. Call layout: see cpu/kernels.h.
 */
#include <math.h>

#include "cuda/kernels.h"

/* the hyper-parameters as a kernel argument */
typedef struct hp {
  double lr, momentum, dampening, weight_decay, beta1, beta2, eps, alpha, init;
  double k0, k1, k2; /* per-call scalars (see each kernel) */
  bool nesterov, decoupled, centered, maximize, fresh;
} hp;

/* the gradient as the update sees it: negated for maximize, plus the coupled weight decay */
template <class T> __device__ __forceinline__ T grad_in(const hp &h, T g, T p, bool wd_on) {
  T d = h.maximize ? -g : g;
  return wd_on ? d + (T)h.weight_decay * p : d;
}

template <class T>
__global__ void sgd_kernel(T *p, const T *g, T *buf, int64_t n, hp h) {
  const T lr = (T)h.lr, mom = (T)h.momentum, damp1 = (T)(1 - h.dampening);
  const bool wd_on = h.weight_decay != 0;
  MF_GRID_LOOP(i, n) {
    T d = grad_in(h, g[i], p[i], wd_on);
    if (buf) {
      T m = h.fresh ? d : mom * buf[i] + damp1 * d;
      buf[i] = m;
      d = h.nesterov ? d + mom * m : m;
    }
    p[i] = p[i] - lr * d;
  }
}

/* k0 = step_size, k1 = sqrt(bias_correction2), k2 = 1 - lr * weight_decay */
template <class T>
__global__ void adam_kernel(T *p, const T *g, T *m, T *v, int64_t n, hp h) {
  const T b1 = (T)h.beta1, b2 = (T)h.beta2, c1 = (T)(1 - h.beta1), c2 = (T)(1 - h.beta2);
  const T eps = (T)h.eps, step_size = (T)h.k0, bc2_sqrt = (T)h.k1, decay = (T)h.k2;
  const bool wd_on = !h.decoupled && h.weight_decay != 0;
  MF_GRID_LOOP(i, n) {
    T d = grad_in(h, g[i], p[i], wd_on);
    T m0 = h.fresh ? (T)0 : m[i], v0 = h.fresh ? (T)0 : v[i];
    T mi = b1 * m0 + c1 * d, vi = b2 * v0 + c2 * d * d;
    m[i] = mi;
    v[i] = vi;
    T pi = h.decoupled ? p[i] * decay : p[i];
    p[i] = pi - step_size * (mi / (sqrt(vi) / bc2_sqrt + eps));
  }
}

template <class T>
__global__ void rmsprop_kernel(T *p, const T *g, T *sq, T *buf, T *ga, int64_t n, hp h) {
  const T a = (T)h.alpha, c = (T)(1 - h.alpha), eps = (T)h.eps, lr = (T)h.lr,
          mom = (T)h.momentum;
  const bool wd_on = h.weight_decay != 0;
  MF_GRID_LOOP(i, n) {
    T d = grad_in(h, g[i], p[i], wd_on);
    T s0 = h.fresh ? (T)0 : sq[i];
    T si = a * s0 + c * d * d;
    sq[i] = si;
    T avg = si;
    if (h.centered) {
      T a0 = h.fresh ? (T)0 : ga[i];
      T gi = a * a0 + c * d;
      ga[i] = gi;
      avg = si - gi * gi;
    }
    avg = sqrt(avg);
    if (buf) {
      T b0 = h.fresh ? (T)0 : buf[i];
      T bi = mom * b0 + d / (avg + eps);
      buf[i] = bi;
      p[i] = p[i] - lr * bi;
    } else {
      p[i] = p[i] - lr * (d / (avg + eps));
    }
  }
}

template <class T>
__global__ void adadelta_kernel(T *p, const T *g, T *sq, T *acc, int64_t n, hp h) {
  const T rho = (T)h.alpha, c = (T)(1 - h.alpha), eps = (T)h.eps, lr = (T)h.lr;
  const bool wd_on = h.weight_decay != 0;
  MF_GRID_LOOP(i, n) {
    T d = grad_in(h, g[i], p[i], wd_on);
    T s0 = h.fresh ? (T)0 : sq[i], a0 = h.fresh ? (T)0 : acc[i];
    T si = rho * s0 + c * d * d;
    sq[i] = si;
    T delta = sqrt(a0 + eps) / sqrt(si + eps) * d;
    acc[i] = rho * a0 + c * delta * delta;
    p[i] = p[i] - lr * delta;
  }
}

/* k0 = lr / (1 + (step - 1) * lr_decay) */
template <class T> __global__ void adagrad_kernel(T *p, const T *g, T *sum, int64_t n, hp h) {
  const T clr = (T)h.k0, eps = (T)h.eps, init = (T)h.init;
  const bool wd_on = h.weight_decay != 0;
  MF_GRID_LOOP(i, n) {
    T d = grad_in(h, g[i], p[i], wd_on);
    T si = (h.fresh ? init : sum[i]) + d * d;
    sum[i] = si;
    p[i] = p[i] - clr * (d / (sqrt(si) + eps));
  }
}

mf_status mf_cuda_optim(mf_device *dev, const mf_call *c) {
  const char *name = mf_op_name(c->op);
  const mf_optim_hparams *h = (const mf_optim_hparams *)c->params;
  if (!c->out || c->nin < 1 || !c->in[0] || !h)
    return mf_fail(MF_ERR_ARG, "%s: missing operand", name);
  mf_dtype dt = c->out->dtype;
  if (dt != MF_F32 && dt != MF_F64)
    return mf_fail(MF_ERR_DTYPE, "%s: takes float32 or float64, not %s", name, mf_dtype_name(dt));
  int64_t n = mf_numel(c->out);
  if (n == 0) return MF_OK;
  hp k = {h->lr,    h->momentum, h->dampening, h->weight_decay, h->beta1,
          h->beta2, h->eps,      h->alpha,     h->initial_accumulator_value,
          0,        0,           0,            h->nesterov,     h->decoupled_weight_decay,
          h->centered, h->maximize, h->step <= 1};
  switch (c->op) {
  case MF_OP_ADAM_STEP: {
    double step = (double)h->step;
    k.k0 = h->lr / (1 - pow(h->beta1, step));
    k.k1 = sqrt(1 - pow(h->beta2, step));
    k.k2 = 1 - h->lr * h->weight_decay;
    break;
  }
  case MF_OP_ADAGRAD_STEP: k.k0 = h->lr / (1 + (double)(h->step - 1) * h->lr_decay); break;
  case MF_OP_SGD_STEP:
  case MF_OP_RMSPROP_STEP:
  case MF_OP_ADADELTA_STEP: break;
  default: return mf_fail(MF_ERR_ARG, "%s: not an optimizer step", name);
  }
  MF_TRY(mf_cuda_enter(dev));
  cudaStream_t s = mf_cuda_stream(dev);
  unsigned blocks = mf_cuda_blocks(n);
  mf_cuda_visit_float<false>(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T *p = mf_cuda_ptr<T>(c->out);
    const T *g = mf_cuda_ptr<T>(c->in[0]);
    T *s0 = mf_cuda_ptr<T>(c->state[0]), *s1 = mf_cuda_ptr<T>(c->state[1]),
      *s2 = mf_cuda_ptr<T>(c->state[2]);
    switch (c->op) {
    case MF_OP_SGD_STEP: sgd_kernel<T><<<blocks, MF_CUDA_THREADS, 0, s>>>(p, g, s0, n, k); break;
    case MF_OP_ADAM_STEP: adam_kernel<T><<<blocks, MF_CUDA_THREADS, 0, s>>>(p, g, s0, s1, n, k); break;
    case MF_OP_RMSPROP_STEP:
      rmsprop_kernel<T><<<blocks, MF_CUDA_THREADS, 0, s>>>(p, g, s0, h->momentum > 0 ? s1 : nullptr,
                                                          h->centered ? s2 : nullptr, n, k);
      break;
    case MF_OP_ADADELTA_STEP:
      adadelta_kernel<T><<<blocks, MF_CUDA_THREADS, 0, s>>>(p, g, s0, s1, n, k);
      break;
    default: adagrad_kernel<T><<<blocks, MF_CUDA_THREADS, 0, s>>>(p, g, s0, n, k); break;
    }
  });
  return mf_cuda_launched(dev, name);
}
