/* optim.c — front ends of the fused optimizer steps: mf_sgd_step, mf_adam_step (Adam and AdamW),
 * mf_rmsprop_step, mf_adadelta_step and mf_adagrad_step. They check the hyper-parameters (PyTorch's
 * rules: "adam_step: invalid beta1 1.5 (expected 0 <= beta1 < 1)"), the parameter (float32 or
 * float64, or float16/bfloat16 on a CUDA device, whose kernels compute them in float32 and keep
 * the state in the parameter's dtype as PyTorch does; contiguous: it is updated in place), the
 * gradient and the state tensors (the parameter's shape, dtype and device; state tensors
 * contiguous, present where the options need them), make the gradient contiguous when it is a view,
 * and dispatch one kernel per parameter. mf_optim_steps does the same for a list of parameters
 * with one set of hyper-parameters: each is checked as its single step checks it, then the calls
 * of a device go to its kernel together (the call's list), which the CUDA backend runs in one
 * launch for up to 16 parameters.
 *
 * The kernel call (see internal.h): out = param, in[0] = grad, state[] = the state tensors in
 * argument order (NULL where unused), params = the mf_optim_hparams.
 *
 * State at step 1: h->step counts updates from 1. At step 1 the kernels ignore what the state
 * tensors hold and start from PyTorch's initial state — zeros, Adagrad's sum filled with
 * initial_accumulator_value, SGD's momentum buffer set to the first update direction (torch
 * clones it) — so callers may pass uninitialised tensors (mf_empty). An SGD caller that adds a
 * momentum buffer later (momentum turned on mid-run) passes step 1 for that update.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- checks ---------------------------------------------------------------------------------- */

/* `what` of a step must be a tensor like the parameter (shape, dtype, device); state tensors must
 * also be contiguous, since the kernels write them in place. */
static mf_status check_like(const char *op, const char *what, const mf_tensor *t,
                            const mf_tensor *param, bool is_state) {
  char a[96], b[96];
  if (!t) return mf_fail(MF_ERR_ARG, "%s: %s is missing", op, what);
  if (t->ndim != param->ndim || memcmp(t->shape, param->shape, sizeof(int64_t) * t->ndim) != 0)
    return mf_fail(MF_ERR_SHAPE, "%s: %s has shape %s but the parameter %s", op, what,
                   mf_shape_str(t, a, sizeof a), mf_shape_str(param, b, sizeof b));
  if (t->dtype != param->dtype)
    return mf_fail(MF_ERR_DTYPE, "%s: %s is %s but the parameter %s", op, what,
                   mf_dtype_name(t->dtype), mf_dtype_name(param->dtype));
  if (mf_tensor_device(t) != mf_tensor_device(param))
    return mf_fail(MF_ERR_DEVICE, "%s: %s is on %s but the parameter on %s", op, what,
                   mf_device_name(mf_tensor_device(t)), mf_device_name(mf_tensor_device(param)));
  if (is_state && !mf_is_contiguous(t))
    return mf_fail(MF_ERR_ARG, "%s: %s must be contiguous (it is updated in place)", op, what);
  return MF_OK;
}

static mf_status check_param(const char *op, const mf_tensor *param, const mf_tensor *grad,
                             const mf_optim_hparams *h) {
  if (!param) return mf_fail(MF_ERR_ARG, "%s: the parameter is missing", op);
  if (!h) return mf_fail(MF_ERR_ARG, "%s: the hyper-parameters are missing", op);
  bool half = param->dtype == MF_F16 || param->dtype == MF_BF16;
  if (half && mf_device_kind(mf_tensor_device(param)) != MF_DEV_CUDA)
    return mf_fail(MF_ERR_DTYPE,
                   "%s: %s needs a GPU tensor (the parameter is %s on the CPU); on the CPU "
                   "optimizers update float32 or float64 tensors",
                   op, mf_dtype_name(param->dtype), mf_dtype_name(param->dtype));
  if (param->dtype != MF_F32 && param->dtype != MF_F64 && !half)
    return mf_fail(MF_ERR_DTYPE,
                   "%s: the parameter is %s; optimizers update float32 or float64 "
                   "tensors (and float16 or bfloat16 ones on a GPU)",
                   op, mf_dtype_name(param->dtype));
  if (!mf_is_contiguous(param)) {
    char a[96];
    return mf_fail(MF_ERR_ARG,
                   "%s: the parameter (shape %s) must be contiguous: it is updated "
                   "in place",
                   op, mf_shape_str(param, a, sizeof a));
  }
  if (h->step < 1)
    return mf_fail(MF_ERR_ARG, "%s: step %lld is invalid (steps count from 1)", op,
                   (long long)h->step);
  if (!(h->lr >= 0)) return mf_fail(MF_ERR_ARG, "%s: invalid learning rate %g", op, h->lr);
  if (!(h->weight_decay >= 0))
    return mf_fail(MF_ERR_ARG, "%s: invalid weight_decay %g", op, h->weight_decay);
  return check_like(op, "grad", grad, param, false);
}

/* A hyper-parameter that must lie in [lo, hi] (hi_open: [lo, hi)). NaN fails. */
static mf_status check_range(const char *op, const char *name, double v, double lo, double hi,
                             bool hi_open) {
  bool ok = v >= lo && (hi_open ? v < hi : v <= hi);
  if (ok) return MF_OK;
  if (isinf(hi)) return mf_fail(MF_ERR_ARG, "%s: invalid %s %g (expected >= %g)", op, name, v, lo);
  return mf_fail(MF_ERR_ARG, "%s: invalid %s %g (expected %g <= %s %s %g)", op, name, v, lo, name,
                 hi_open ? "<" : "<=", hi);
}

/* ---- dispatch ---------------------------------------------------------------------------------
 */

/* A list of checked calls waiting to run together (mf_optim_steps); NULL: run each at once. */
typedef struct batch {
  mf_call *calls; /* each holds a reference to its contiguous grad (in[0]) */
  int n;
} batch;
static _Thread_local batch *collecting;

/* Checks the state tensors that are not NULL, then runs the op's kernel on a contiguous grad (or
 * adds the call to the batch being collected). */
static mf_status run(mf_op op, mf_tensor *param, const mf_tensor *grad, mf_tensor *const *state,
                     const char *const *names, int nstate, const mf_optim_hparams *h) {
  const char *name = mf_op_name(op);
  for (int k = 0; k < nstate; k++)
    if (state[k]) MF_TRY(check_like(name, names[k], state[k], param, true));
  if (mf_numel(param) == 0) return MF_OK;
  mf_written(param);
  for (int k = 0; k < nstate; k++) mf_written(state[k]);
  mf_tensor *gc = NULL;
  MF_TRY(mf_contiguous(grad, &gc));
  mf_call c = {.op = op, .out = param, .in = {gc}, .nin = 1, .params = h};
  for (int k = 0; k < nstate; k++) c.state[k] = state[k];
  if (collecting) {
    collecting->calls[collecting->n++] = c;
    return MF_OK;
  }
  mf_status s = mf_dispatch(mf_tensor_device(param), &c);
  mf_release(gc);
  return s;
}

/* Runs the collected calls: each run of calls on one device and dtype as one list call. The
 * caller releases their grads. */
static mf_status run_batch(batch *b) {
  mf_status s = MF_OK;
  for (int i = 0; i < b->n && !s;) {
    int j = i + 1;
    mf_device *dev = mf_tensor_device(b->calls[i].out);
    while (j < b->n && mf_tensor_device(b->calls[j].out) == dev &&
           b->calls[j].out->dtype == b->calls[i].out->dtype)
      j++;
    mf_call c = b->calls[i];
    c.list = &b->calls[i];
    c.nlist = j - i;
    s = mf_dispatch(dev, &c);
    i = j;
  }
  return s;
}

/* ---- the steps --------------------------------------------------------------------------------
 */

mf_status mf_sgd_step(mf_tensor *param, const mf_tensor *grad, mf_tensor *momentum_buf,
                      const mf_optim_hparams *h) {
  const char *op = "sgd_step";
  MF_TRY(check_param(op, param, grad, h));
  MF_TRY(check_range(op, "momentum", h->momentum, 0, INFINITY, false));
  if (h->nesterov && (h->momentum <= 0 || h->dampening != 0))
    return mf_fail(MF_ERR_ARG,
                   "%s: Nesterov momentum needs a momentum > 0 and zero dampening "
                   "(got momentum %g, dampening %g)",
                   op, h->momentum, h->dampening);
  if (h->momentum != 0 && !momentum_buf)
    return mf_fail(MF_ERR_ARG, "%s: momentum %g needs a momentum buffer", op, h->momentum);
  mf_tensor *state[1] = {h->momentum != 0 ? momentum_buf : NULL};
  static const char *const names[1] = {"momentum_buffer"};
  return run(MF_OP_SGD_STEP, param, grad, state, names, 1, h);
}

mf_status mf_adam_step(mf_tensor *param, const mf_tensor *grad, mf_tensor *exp_avg,
                       mf_tensor *exp_avg_sq, const mf_optim_hparams *h) {
  const char *op = h && h->decoupled_weight_decay ? "adamw_step" : "adam_step";
  MF_TRY(check_param(op, param, grad, h));
  MF_TRY(check_range(op, "eps", h->eps, 0, INFINITY, false));
  MF_TRY(check_range(op, "beta1", h->beta1, 0, 1, true));
  MF_TRY(check_range(op, "beta2", h->beta2, 0, 1, true));
  mf_tensor *state[2] = {exp_avg, exp_avg_sq};
  static const char *const names[2] = {"exp_avg", "exp_avg_sq"};
  for (int k = 0; k < 2; k++)
    if (!state[k]) return mf_fail(MF_ERR_ARG, "%s: %s is missing", op, names[k]);
  return run(MF_OP_ADAM_STEP, param, grad, state, names, 2, h);
}

/* parameter i's single step of op, its state tensors from state[k][i] */
static mf_status one_step(mf_op op, int i, mf_tensor *const *params, const mf_tensor *const *grads,
                          mf_tensor *const *const *state, const mf_optim_hparams *h) {
  mf_tensor *st[3];
  for (int k = 0; k < 3; k++) st[k] = state && state[k] ? state[k][i] : NULL;
  switch (op) {
  case MF_OP_SGD_STEP: return mf_sgd_step(params[i], grads[i], st[0], h);
  case MF_OP_ADAM_STEP: return mf_adam_step(params[i], grads[i], st[0], st[1], h);
  case MF_OP_RMSPROP_STEP: return mf_rmsprop_step(params[i], grads[i], st[0], st[1], st[2], h);
  case MF_OP_ADADELTA_STEP: return mf_adadelta_step(params[i], grads[i], st[0], st[1], h);
  case MF_OP_ADAGRAD_STEP: return mf_adagrad_step(params[i], grads[i], st[0], h);
  default: return mf_fail(MF_ERR_ARG, "optim_steps: %s is not an optimizer step", mf_op_name(op));
  }
}

mf_status mf_optim_steps(mf_op op, int n, mf_tensor *const *params, const mf_tensor *const *grads,
                         mf_tensor *const *const *state, const mf_optim_hparams *h) {
  const char *name = mf_op_name(op);
  if (n < 0 || (n > 0 && (!params || !grads)))
    return mf_fail(MF_ERR_ARG, "%s: %d parameters without their lists", name, n);
  mf_call few[16]; /* a model's usual parameter count: no allocation */
  batch b = {.calls = n <= 16 ? few : malloc((size_t)n * sizeof(mf_call)), .n = 0};
  if (!b.calls) return mf_fail(MF_ERR_MEMORY, "%s: out of memory", name);
  collecting = &b;
  mf_status s = MF_OK;
  for (int i = 0; i < n && !s; i++) /* all checked before any is updated */
    s = one_step(op, i, params, grads, state, h);
  collecting = NULL;
  if (!s) s = run_batch(&b); /* only when every parameter passed its checks */
  for (int i = 0; i < b.n; i++) mf_release((mf_tensor *)b.calls[i].in[0]);
  if (b.calls != few) free(b.calls);
  return s;
}

mf_status mf_rmsprop_step(mf_tensor *param, const mf_tensor *grad, mf_tensor *square_avg,
                          mf_tensor *momentum_buf, mf_tensor *grad_avg, const mf_optim_hparams *h) {
  const char *op = "rmsprop_step";
  MF_TRY(check_param(op, param, grad, h));
  MF_TRY(check_range(op, "eps", h->eps, 0, INFINITY, false));
  MF_TRY(check_range(op, "momentum", h->momentum, 0, INFINITY, false));
  MF_TRY(check_range(op, "alpha", h->alpha, 0, INFINITY, false));
  if (!square_avg) return mf_fail(MF_ERR_ARG, "%s: square_avg is missing", op);
  if (h->momentum > 0 && !momentum_buf)
    return mf_fail(MF_ERR_ARG, "%s: momentum %g needs a momentum buffer", op, h->momentum);
  if (h->centered && !grad_avg)
    return mf_fail(MF_ERR_ARG, "%s: centered RMSProp needs grad_avg", op);
  mf_tensor *state[3] = {square_avg, h->momentum > 0 ? momentum_buf : NULL,
                         h->centered ? grad_avg : NULL};
  static const char *const names[3] = {"square_avg", "momentum_buffer", "grad_avg"};
  return run(MF_OP_RMSPROP_STEP, param, grad, state, names, 3, h);
}

mf_status mf_adadelta_step(mf_tensor *param, const mf_tensor *grad, mf_tensor *square_avg,
                           mf_tensor *acc_delta, const mf_optim_hparams *h) {
  const char *op = "adadelta_step";
  MF_TRY(check_param(op, param, grad, h));
  MF_TRY(check_range(op, "eps", h->eps, 0, INFINITY, false));
  MF_TRY(check_range(op, "rho", h->alpha, 0, 1, false));
  mf_tensor *state[2] = {square_avg, acc_delta};
  static const char *const names[2] = {"square_avg", "acc_delta"};
  for (int k = 0; k < 2; k++)
    if (!state[k]) return mf_fail(MF_ERR_ARG, "%s: %s is missing", op, names[k]);
  return run(MF_OP_ADADELTA_STEP, param, grad, state, names, 2, h);
}

mf_status mf_adagrad_step(mf_tensor *param, const mf_tensor *grad, mf_tensor *sum,
                          const mf_optim_hparams *h) {
  const char *op = "adagrad_step";
  MF_TRY(check_param(op, param, grad, h));
  MF_TRY(check_range(op, "eps", h->eps, 0, INFINITY, false));
  MF_TRY(check_range(op, "lr_decay", h->lr_decay, 0, INFINITY, false));
  MF_TRY(check_range(op, "initial_accumulator_value", h->initial_accumulator_value, 0, INFINITY,
                     false));
  if (!sum) return mf_fail(MF_ERR_ARG, "%s: sum is missing", op);
  mf_tensor *state[1] = {sum};
  static const char *const names[1] = {"sum"};
  return run(MF_OP_ADAGRAD_STEP, param, grad, state, names, 1, h);
}
