/* optim.cu — the CUDA kernels of the fused optimizer steps (float32, float64; float16 and
 * bfloat16 parameters, gradients and state computed in float, stored rounded): SGD (momentum,
 * dampening, Nesterov), Adam/AdamW, RMSProp (momentum, centered), Adadelta, Adagrad. One thread
 * per element, one launch per parameter, or per 16 parameters of a list call (mf_optim_steps), with
 * cpu/optim.c's formulas (PyTorch 1.13's single-tensor updates) operation by operation, in the
 * parameter's dtype (float for the halves); the scalars (bias corrections, step sizes) are computed
 * in double on the host. At step 1 the state tensors' contents are ignored (PyTorch's initial
 * state), so they may come from mf_empty. Call layout: see cpu/kernels.h.
 *
 * A list launch is one 1-D grid whose blocks are dealt to the parameters by size (first[t] ..
 * first[t + 1] - 1 are parameter t's): a (1024, 3136) weight gets its 12544 blocks, a bias of 10
 * one, and no block idles (a grid of (most blocks, count) would start 8 x 12544 blocks for the
 * tutorial CNN's 8 parameters, 7 of every 8 of them empty).
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
template <class A> __device__ __forceinline__ A grad_in(const hp &h, A g, A p, bool wd_on) {
  A d = h.maximize ? -g : g;
  return wd_on ? d + (A)h.weight_decay * p : d;
}

/* Up to MAX_LIST parameters' operands: a call's list (mf_optim_steps) runs in one launch of
 * first[count] blocks, parameter t's blocks being first[t] .. first[t + 1] - 1. s[k] = the k-th
 * state tensor (NULL where unused). */
#define MAX_LIST 16
template <class T> struct tlist {
  T *p[MAX_LIST];
  const T *g[MAX_LIST];
  T *s[3][MAX_LIST];
  int64_t n[MAX_LIST];
  unsigned first[MAX_LIST + 1];
  int count;
};
/* this block's parameter p, gradient g, element count n and state tensors s0..s2, and its place
 * b_ among the nb_ blocks of that parameter (found by a scan of at most 16, the same for the
 * whole block) */
#define ENTRY(L)                                                                                   \
  int t_ = 0;                                                                                      \
  while (t_ + 1 < (L).count && blockIdx.x >= (L).first[t_ + 1]) t_++;                              \
  T *p = (L).p[t_];                                                                                \
  const T *g = (L).g[t_];                                                                          \
  const int64_t n = (L).n[t_];                                                                     \
  const int64_t b_ = blockIdx.x - (L).first[t_], nb_ = (L).first[t_ + 1] - (L).first[t_];          \
  T *s0 = (L).s[0][t_], *s1 = (L).s[1][t_], *s2 = (L).s[2][t_];                                    \
  (void)s0, (void)s1, (void)s2
/* the elements of this block's parameter it updates (a grid-stride loop over its nb_ blocks) */
#define PARAM_LOOP(i) for (int64_t i = b_ * blockDim.x + threadIdx.x; i < n; i += nb_ * blockDim.x)

/* In each kernel T is the storage type of the parameter, its gradient and its state, A (mf_acc)
 * the type the update is computed in: T itself for float32 and float64, float for float16 and
 * bfloat16 (each value read once into A, written back rounded once). */

template <class T> __global__ void sgd_kernel(tlist<T> L, hp h) {
  ENTRY(L);
  T *buf = s0;
  using A = typename mf_acc<T>::type;
  const A lr = (A)h.lr, mom = (A)h.momentum, damp1 = (A)(1 - h.dampening);
  const bool wd_on = h.weight_decay != 0;
  PARAM_LOOP(i) {
    A pi = (A)p[i], d = grad_in(h, (A)g[i], pi, wd_on);
    if (buf) {
      A m = h.fresh ? d : mom * (A)buf[i] + damp1 * d;
      buf[i] = (T)m;
      d = h.nesterov ? d + mom * m : m;
    }
    p[i] = (T)(pi - lr * d);
  }
}

/* k0 = step_size, k1 = sqrt(bias_correction2), k2 = 1 - lr * weight_decay */
template <class T> __global__ void adam_kernel(tlist<T> L, hp h) {
  ENTRY(L);
  T *m = s0, *v = s1;
  using A = typename mf_acc<T>::type;
  const A b1 = (A)h.beta1, b2 = (A)h.beta2, c1 = (A)(1 - h.beta1), c2 = (A)(1 - h.beta2);
  const A eps = (A)h.eps, step_size = (A)h.k0, bc2_sqrt = (A)h.k1, decay = (A)h.k2;
  const bool wd_on = !h.decoupled && h.weight_decay != 0;
  PARAM_LOOP(i) {
    A p0 = (A)p[i], d = grad_in(h, (A)g[i], p0, wd_on);
    A m0 = h.fresh ? (A)0 : (A)m[i], v0 = h.fresh ? (A)0 : (A)v[i];
    A mi = b1 * m0 + c1 * d, vi = b2 * v0 + c2 * d * d;
    m[i] = (T)mi;
    v[i] = (T)vi;
    A pi = h.decoupled ? p0 * decay : p0;
    p[i] = (T)(pi - step_size * (mi / (sqrt(vi) / bc2_sqrt + eps)));
  }
}

template <class T> __global__ void rmsprop_kernel(tlist<T> L, hp h) {
  ENTRY(L);
  T *sq = s0, *buf = s1, *ga = s2;
  using A = typename mf_acc<T>::type;
  const A a = (A)h.alpha, c = (A)(1 - h.alpha), eps = (A)h.eps, lr = (A)h.lr, mom = (A)h.momentum;
  const bool wd_on = h.weight_decay != 0;
  PARAM_LOOP(i) {
    A p0 = (A)p[i], d = grad_in(h, (A)g[i], p0, wd_on);
    A s0 = h.fresh ? (A)0 : (A)sq[i];
    A si = a * s0 + c * d * d;
    sq[i] = (T)si;
    A avg = si;
    if (h.centered) {
      A a0 = h.fresh ? (A)0 : (A)ga[i];
      A gi = a * a0 + c * d;
      ga[i] = (T)gi;
      avg = si - gi * gi;
    }
    avg = sqrt(avg);
    if (buf) {
      A b0 = h.fresh ? (A)0 : (A)buf[i];
      A bi = mom * b0 + d / (avg + eps);
      buf[i] = (T)bi;
      p[i] = (T)(p0 - lr * bi);
    } else {
      p[i] = (T)(p0 - lr * (d / (avg + eps)));
    }
  }
}

template <class T> __global__ void adadelta_kernel(tlist<T> L, hp h) {
  ENTRY(L);
  T *sq = s0, *acc = s1;
  using A = typename mf_acc<T>::type;
  const A rho = (A)h.alpha, c = (A)(1 - h.alpha), eps = (A)h.eps, lr = (A)h.lr;
  const bool wd_on = h.weight_decay != 0;
  PARAM_LOOP(i) {
    A p0 = (A)p[i], d = grad_in(h, (A)g[i], p0, wd_on);
    A s0 = h.fresh ? (A)0 : (A)sq[i], a0 = h.fresh ? (A)0 : (A)acc[i];
    A si = rho * s0 + c * d * d;
    sq[i] = (T)si;
    A delta = sqrt(a0 + eps) / sqrt(si + eps) * d;
    acc[i] = (T)(rho * a0 + c * delta * delta);
    p[i] = (T)(p0 - lr * delta);
  }
}

/* k0 = lr / (1 + (step - 1) * lr_decay) */
template <class T> __global__ void adagrad_kernel(tlist<T> L, hp h) {
  ENTRY(L);
  T *sum = s0;
  using A = typename mf_acc<T>::type;
  const A clr = (A)h.k0, eps = (A)h.eps, init = (A)h.init;
  const bool wd_on = h.weight_decay != 0;
  PARAM_LOOP(i) {
    A p0 = (A)p[i], d = grad_in(h, (A)g[i], p0, wd_on);
    A si = (h.fresh ? init : (A)sum[i]) + d * d;
    sum[i] = (T)si;
    p[i] = (T)(p0 - clr * (d / (sqrt(si) + eps)));
  }
}

mf_status mf_cuda_optim(mf_device *dev, const mf_call *c) {
  const char *name = mf_op_name(c->op);
  const mf_optim_hparams *h = (const mf_optim_hparams *)c->params;
  if (!c->out || c->nin < 1 || !c->in[0] || !h)
    return mf_fail(MF_ERR_ARG, "%s: missing operand", name);
  mf_dtype dt = c->out->dtype;
  if (dt != MF_F32 && dt != MF_F64 && dt != MF_F16 && dt != MF_BF16)
    return mf_fail(MF_ERR_DTYPE, "%s: takes float32, float64, float16 or bfloat16, not %s", name,
                   mf_dtype_name(dt));
  int64_t n = mf_numel(c->out);
  if (n == 0) return MF_OK;
  hp k = {h->lr,
          h->momentum,
          h->dampening,
          h->weight_decay,
          h->beta1,
          h->beta2,
          h->eps,
          h->alpha,
          h->initial_accumulator_value,
          0,
          0,
          0,
          h->nesterov,
          h->decoupled_weight_decay,
          h->centered,
          h->maximize,
          h->step <= 1};
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
  const mf_call *calls = c->nlist > 0 ? c->list : c;
  int ncalls = c->nlist > 0 ? c->nlist : 1;
  mf_status st = MF_OK;
  for (int first = 0; first < ncalls && !st; first += MAX_LIST) {
    int cnt = ncalls - first < MAX_LIST ? ncalls - first : MAX_LIST;
    mf_cuda_visit_float<true>(dt, [&](auto tag) {
      using T = typename decltype(tag)::type;
      tlist<T> L = {};
      L.count = cnt;
      for (int t = 0; t < cnt; t++) {
        const mf_call *e = &calls[first + t];
        L.p[t] = mf_cuda_ptr<T>(e->out);
        L.g[t] = mf_cuda_ptr<T>(e->in[0]);
        for (int k = 0; k < 3; k++) L.s[k][t] = mf_cuda_ptr<T>(e->state[k]);
        if (c->op == MF_OP_RMSPROP_STEP) { /* the optional buffers, as the options say */
          if (!(h->momentum > 0)) L.s[1][t] = nullptr;
          if (!h->centered) L.s[2][t] = nullptr;
        }
        L.n[t] = mf_numel(e->out);
        L.first[t + 1] = L.first[t] + mf_cuda_blocks(L.n[t]); /* at most 16 x 2^20 */
      }
      unsigned grid = L.first[cnt];
      switch (c->op) {
      case MF_OP_SGD_STEP: sgd_kernel<T><<<grid, MF_CUDA_THREADS, 0, s>>>(L, k); break;
      case MF_OP_ADAM_STEP: adam_kernel<T><<<grid, MF_CUDA_THREADS, 0, s>>>(L, k); break;
      case MF_OP_RMSPROP_STEP: rmsprop_kernel<T><<<grid, MF_CUDA_THREADS, 0, s>>>(L, k); break;
      case MF_OP_ADADELTA_STEP: adadelta_kernel<T><<<grid, MF_CUDA_THREADS, 0, s>>>(L, k); break;
      default: adagrad_kernel<T><<<grid, MF_CUDA_THREADS, 0, s>>>(L, k); break;
      }
    });
    st = mf_cuda_launched(dev, name);
  }
  return st;
}
