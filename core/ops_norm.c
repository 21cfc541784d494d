/* ops_norm.c — front ends of the fused batch normalisation ops (moonflow.h: mf_batch_norm,
 * mf_batch_norm_backward): argument checks with messages naming the op and the shapes, missing
 * weight/bias made as ones/zeros, inputs made contiguous, outputs allocated on x's device, then
 * the device's kernel (cpu/batchnorm.c; cuda/batchnorm.cu through cuDNN).
 *
 * What the kernels receive (x viewed as (N, C, S), S = the product of the dims after the channels;
 * every tensor contiguous, one float dtype):
 * - BATCH_NORM: in[0] = x, in[1] = weight (C), in[2] = bias (C); out = y (x's shape);
 *   state[0] = running_mean, state[1] = running_var (C, updated in place; NULL: none);
 *   out2 = save_stats (2, C) {mean, invstd} (training only, else NULL); ip[0] = training,
 *   ip[1..3] = N, C, S; p[0] = momentum, p[1] = eps. Inference needs both running stats.
 * - BATCH_NORM_BACKWARD: in[0] = dy, in[1] = x, in[2] = weight, in[3] = save_stats; out = dx,
 *   out2 = dweight (C), state[0] = dbias (C); ip[1..3] = N, C, S.
 * mf_batch_norm records its autograd node (grad.c: mf_ag_batch_norm); the backward op is not
 * recorded (the training rule calls it and has no double backward).
 *
 * float16 and bfloat16 inputs (CUDA devices only; the CPU refuses them, saying so): cuDNN takes
 * half x / y with float32 per-channel tensors ("mixed" batch norm, as PyTorch's cuDNN path; see
 * cuda/batchnorm.cu). The weight, bias and running stats given with a half x may be float32 (used
 * as they are) or of x's dtype (what Module:to("float16") makes): those are converted to float32
 * for the kernel, and the running stats updated in float32 are written back into the caller's
 * tensors. save_stats is float32 for a half x; dweight and dbias come in the weight's dtype (x's
 * when there is no weight).
 */
#include "autograd.h"

static bool is_half(mf_dtype t) { return t == MF_F16 || t == MF_BF16; }

/* The dtype of the per-channel tensors the kernel sees for data of dtype dt. */
static mf_dtype param_dtype(mf_dtype dt) { return is_half(dt) ? MF_F32 : dt; }

static mf_status vec_check(const char *op, const char *what, const mf_tensor *v, const mf_tensor *x,
                           int64_t C) {
  char a[96], b[96];
  if (v->ndim != 1 || v->shape[0] != C)
    return mf_fail(MF_ERR_SHAPE, "%s: %s has shape %s but the input %s has %lld channels", op, what,
                   mf_shape_str(v, a, sizeof a), mf_shape_str(x, b, sizeof b), (long long)C);
  if (v->dtype != x->dtype && v->dtype != param_dtype(x->dtype))
    return mf_fail(MF_ERR_DTYPE, "%s: %s is %s but the input is %s%s", op, what,
                   mf_dtype_name(v->dtype), mf_dtype_name(x->dtype),
                   is_half(x->dtype) ? " (a half input takes float32 or its own dtype)" : "");
  return mf_same_device(op, x, v);
}

/* (N, C, S) of x: checks that x is float with a channel dim (the halves on a GPU only) */
static mf_status geometry(const char *op, const mf_tensor *x, int64_t *ip) {
  char a[96];
  if (x->ndim < 2)
    return mf_fail(MF_ERR_SHAPE,
                   "%s: the input needs a channel dimension (N, C, ...), got shape %s", op,
                   mf_shape_str(x, a, sizeof a));
  if (is_half(x->dtype) && mf_device_kind(mf_tensor_device(x)) != MF_DEV_CUDA)
    return mf_fail(MF_ERR_DTYPE,
                   "%s: %s needs a GPU tensor (the input is %s on the CPU); on the CPU use float32 "
                   "or float64",
                   op, mf_dtype_name(x->dtype), mf_dtype_name(x->dtype));
  if (x->dtype != MF_F32 && x->dtype != MF_F64 && !is_half(x->dtype))
    return mf_fail(
        MF_ERR_DTYPE,
        "%s: the input must be float32 or float64, got %s (float16 and bfloat16 too on a GPU)", op,
        mf_dtype_name(x->dtype));
  ip[1] = x->shape[0];
  ip[2] = x->shape[1];
  ip[3] = 1;
  for (int d = 2; d < x->ndim; d++) ip[3] *= x->shape[d];
  return MF_OK;
}

/* weight/bias as the kernel takes it (contiguous, of the parameter dtype) or made: ones for the
 * weight, zeros for the bias. Not recorded by autograd. */
static mf_status param_or(const mf_tensor *v, double fill, const mf_tensor *x, int64_t C,
                          mf_tensor **out) {
  mf_dtype pdt = param_dtype(x->dtype);
  if (!v) return mf_full(1, &C, fill, pdt, mf_tensor_device(x), out);
  bool was = mf_set_grad_enabled(false);
  mf_status s = v->dtype == pdt ? mf_contiguous(v, out) : mf_cast(v, pdt, out);
  mf_set_grad_enabled(was);
  return s;
}

mf_status mf_batch_norm(const mf_tensor *x, const mf_tensor *weight, const mf_tensor *bias,
                        mf_tensor *running_mean, mf_tensor *running_var, bool training,
                        double momentum, double eps, mf_tensor **out, mf_tensor **save_stats) {
  const char *op = "batch_norm";
  *out = NULL;
  if (save_stats) *save_stats = NULL;
  mf_call c = {.op = MF_OP_BATCH_NORM};
  MF_TRY(geometry(op, x, c.ip));
  int64_t C = c.ip[2], count = c.ip[1] * c.ip[3];
  if (weight) MF_TRY(vec_check(op, "weight", weight, x, C));
  if (bias) MF_TRY(vec_check(op, "bias", bias, x, C));
  mf_tensor *running[2] = {running_mean, running_var};
  const char *rname[2] = {"running_mean", "running_var"};
  for (int k = 0; k < 2; k++) {
    if (!running[k]) continue;
    MF_TRY(vec_check(op, rname[k], running[k], x, C));
    if (!mf_is_contiguous(running[k]))
      return mf_fail(MF_ERR_ARG, "%s: %s must be contiguous (it is updated in place)", op,
                     rname[k]);
  }
  if ((running_mean == NULL) != (running_var == NULL))
    return mf_fail(MF_ERR_ARG, "%s: give both running_mean and running_var, or neither", op);
  if (!(eps > 0)) return mf_fail(MF_ERR_ARG, "%s: eps must be positive, got %g", op, eps);
  if (!(momentum >= 0 && momentum <= 1))
    return mf_fail(MF_ERR_ARG, "%s: momentum must be in [0, 1], got %g", op, momentum);
  char a[96];
  if (training && count <= 1)
    return mf_fail(MF_ERR_SHAPE,
                   "%s: expected more than 1 value per channel when training, got input shape %s",
                   op, mf_shape_str(x, a, sizeof a));
  if (!training && !running_mean)
    return mf_fail(MF_ERR_ARG, "%s: evaluation needs the running mean and variance", op);
  mf_device *dev = mf_tensor_device(x);
  mf_dtype pdt = param_dtype(x->dtype);
  mf_tensor *xc = NULL, *w = NULL, *b = NULL, *stats = NULL, *run32[2] = {NULL, NULL};
  mf_status s = mf_contiguous(x, &xc);
  if (!s) s = param_or(weight, 1, x, C, &w);
  if (!s) s = param_or(bias, 0, x, C, &b);
  /* running stats of a half dtype: updated in float32 copies, written back below */
  for (int k = 0; k < 2 && !s; k++)
    if (running[k] && running[k]->dtype != pdt) s = mf_cast(running[k], pdt, &run32[k]);
  int64_t ss[2] = {2, C};
  if (!s && training) s = mf_empty(2, ss, pdt, dev, &stats);
  if (!s) s = mf_empty(x->ndim, x->shape, x->dtype, dev, out);
  if (!s && mf_numel(*out) > 0) {
    c.out = *out;
    c.out2 = stats;
    c.in[0] = xc, c.in[1] = w, c.in[2] = b, c.nin = 3;
    for (int k = 0; k < 2; k++) c.state[k] = run32[k] ? run32[k] : running[k];
    c.ip[0] = training;
    c.p[0] = momentum, c.p[1] = eps;
    if (training) mf_written(running_mean), mf_written(running_var);
    s = mf_dispatch(dev, &c);
    for (int k = 0; k < 2 && !s; k++)
      if (run32[k] && training) s = mf_copy_(running[k], run32[k]);
  }
  if (!s)
    s = mf_ag_keep(mf_ag_batch_norm(x, weight, bias, training, training ? stats : running_mean,
                                    training ? NULL : running_var, eps, *out),
                   out);
  if (s) MF_DROP(*out);
  if (!s && save_stats) *save_stats = mf_retain(stats);
  mf_release(xc);
  mf_release(w);
  mf_release(b);
  mf_release(stats);
  mf_release(run32[0]);
  mf_release(run32[1]);
  return s;
}

mf_status mf_batch_norm_backward(const mf_tensor *dy, const mf_tensor *x, const mf_tensor *weight,
                                 const mf_tensor *save_stats, mf_tensor **dx, mf_tensor **dweight,
                                 mf_tensor **dbias) {
  const char *op = "batch_norm_backward";
  *dx = *dweight = *dbias = NULL;
  mf_call c = {.op = MF_OP_BATCH_NORM_BACKWARD};
  MF_TRY(geometry(op, x, c.ip));
  int64_t C = c.ip[2];
  char a[96], b[96];
  if (dy->ndim != x->ndim || dy->dtype != x->dtype)
    return mf_fail(MF_ERR_SHAPE, "%s: the output gradient %s %s does not match the input %s %s", op,
                   mf_dtype_name(dy->dtype), mf_shape_str(dy, a, sizeof a), mf_dtype_name(x->dtype),
                   mf_shape_str(x, b, sizeof b));
  for (int d = 0; d < x->ndim; d++)
    if (dy->shape[d] != x->shape[d])
      return mf_fail(MF_ERR_SHAPE, "%s: the output gradient %s does not match the input %s", op,
                     mf_shape_str(dy, a, sizeof a), mf_shape_str(x, b, sizeof b));
  MF_TRY(mf_same_device(op, dy, x));
  if (weight) MF_TRY(vec_check(op, "weight", weight, x, C));
  mf_dtype pdt = param_dtype(x->dtype);
  if (!save_stats || save_stats->ndim != 2 || save_stats->shape[0] != 2 ||
      save_stats->shape[1] != C || save_stats->dtype != pdt)
    return mf_fail(MF_ERR_SHAPE, "%s: save_stats must be the forward's (2, %lld) %s tensor", op,
                   (long long)C, mf_dtype_name(pdt));
  MF_TRY(mf_same_device(op, x, save_stats));
  mf_device *dev = mf_tensor_device(x);
  mf_tensor *dyc = NULL, *xc = NULL, *w = NULL, *st = NULL;
  mf_status s = mf_contiguous(dy, &dyc);
  if (!s) s = mf_contiguous(x, &xc);
  if (!s) s = param_or(weight, 1, x, C, &w);
  if (!s) s = mf_contiguous(save_stats, &st);
  if (!s) s = mf_empty(x->ndim, x->shape, x->dtype, dev, dx);
  if (!s) s = mf_zeros(1, &C, pdt, dev, dweight);
  if (!s) s = mf_zeros(1, &C, pdt, dev, dbias);
  if (!s && mf_numel(*dx) > 0) {
    c.out = *dx;
    c.out2 = *dweight;
    c.state[0] = *dbias;
    c.in[0] = dyc, c.in[1] = xc, c.in[2] = w, c.in[3] = st, c.nin = 4;
    s = mf_dispatch(dev, &c);
  }
  /* dweight and dbias in the weight's dtype (x's without one) */
  mf_dtype gdt = weight ? weight->dtype : x->dtype;
  for (int k = 0; k < 2 && !s && gdt != pdt; k++) {
    mf_tensor **g = k ? dbias : dweight, *t = NULL;
    s = mf_cast(*g, gdt, &t);
    mf_release(*g);
    *g = t;
  }
  if (s) {
    MF_DROP(*dx);
    MF_DROP(*dweight);
    MF_DROP(*dbias);
  }
  mf_release(dyc);
  mf_release(xc);
  mf_release(w);
  mf_release(st);
  return s;
}
