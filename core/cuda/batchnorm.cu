/* batchnorm.cu — BATCH_NORM (training with saved mean/invstd and running-stat update, or
 * inference from the running stats) and BATCH_NORM_BACKWARD through cuDNN 9's fused batch
 * normalisation (CUDNN_BATCHNORM_SPATIAL: one mean and variance per channel over N and the
 * spatial dims). Call layouts: ops_norm.c; x is viewed as the 4-D (N, C, S, 1) NCHW tensor cuDNN
 * wants. cuDNN's formulas are those of cpu/batchnorm.c: biased variance for normalising, the
 * unbiased one for the running variance, running = (1 - momentum) running + momentum batch, and
 * the saved "inverse variance" is 1 / sqrt(var + eps). save_stats (2, C) holds the mean then the
 * invstd, so cuDNN writes and reads them at offsets 0 and C.
 *
 * Dtypes: x, y, dy, dx float32, float64, float16 or bfloat16; the per-channel tensors (weight,
 * bias, running stats, save_stats, dweight, dbias) float64 for float64 data and float32 for every
 * other, which is what cuDNN takes: the descriptor cudnnDeriveBNTensorDescriptor derives for them
 * is CUDNN_DATA_FLOAT for half data (cuDNN 9 API reference, cudnn_ops library,
 * cudnnDeriveBNTensorDescriptor and cudnnBatchNormalizationForwardTraining's
 * bnScaleBiasMeanVarDesc; PyTorch's "mixed" cuDNN batch norm). ops_norm.c converts float16/bfloat16
 * parameters to float32 around the call.
 */
#ifdef MF_HAVE_CUDNN

#include "cuda/dnn.cuh"
#include "cuda/kernels.h"

mf_status mf_cuda_batch_norm(mf_device *dev, const mf_call *c) {
  const char *op = mf_op_name(c->op);
  bool backward = c->op == MF_OP_BATCH_NORM_BACKWARD;
  bool training = backward || c->ip[0] != 0;
  if (!c->out || c->nin < (backward ? 4 : 3) || (backward && (!c->out2 || !c->state[0])) ||
      (!backward && training && !c->out2) || (!training && (!c->state[0] || !c->state[1])))
    return mf_fail(MF_ERR_ARG, "%s: malformed kernel call", op);
  mf_dtype dt = c->out->dtype;
  if (dt != MF_F32 && dt != MF_F64 && dt != MF_F16 && dt != MF_BF16)
    return mf_fail(MF_ERR_DTYPE,
                   "%s: the GPU kernel takes float32, float64, float16 or bfloat16, got %s", op,
                   mf_dtype_name(dt));
  /* the per-channel tensors' dtype (see the top) */
  mf_dtype pdt = dt == MF_F64 ? MF_F64 : MF_F32;
  const mf_tensor *vecs[6] = {c->in[2], backward ? c->in[3] : c->in[1], c->state[0], c->state[1],
                              c->out2,  backward ? nullptr : c->in[2]};
  for (int k = 0; k < 6; k++)
    if (vecs[k] && vecs[k]->dtype != pdt)
      return mf_fail(MF_ERR_DTYPE, "%s: %s data takes %s weight, bias and statistics, got %s", op,
                     mf_dtype_name(dt), mf_dtype_name(pdt), mf_dtype_name(vecs[k]->dtype));
  int64_t N = c->ip[1], C = c->ip[2], S = c->ip[3];
  const mf_tensor *x = backward ? c->in[1] : c->in[0];
  if (x->dtype != dt || (backward && c->in[0]->dtype != dt))
    return mf_fail(MF_ERR_DTYPE, "%s: the input, its gradient and the output must all be %s", op,
                   mf_dtype_name(dt));
  char what[200];
  mf_dnn_describe(what, sizeof what, "input", x, NULL, NULL, NULL);

  MF_TRY(mf_cuda_enter(dev));
  cudnnHandle_t h;
  MF_TRY(mf_dnn_handle(dev, op, &h));
  int64_t shape[4] = {N, C, S, 1}, stride[4] = {C * S, S, 1, 1};
  mf_dnn_tensor_desc xd, bnd;
  MF_TRY(mf_dnn_tensor4d(dev, op, dt, shape, stride, &xd));
  MF_TRY(mf_dnn_check(dev, cudnnCreateTensorDescriptor(&bnd.d), op, "cudnnCreateTensorDescriptor",
                      what));
  const cudnnBatchNormMode_t mode = CUDNN_BATCHNORM_SPATIAL;
  MF_TRY(mf_dnn_check(dev, cudnnDeriveBNTensorDescriptor(bnd.d, xd.d, mode), op,
                      "cudnnDeriveBNTensorDescriptor", what));
  mf_dnn_scalars k(dt);
  size_t es = mf_dtype_size(pdt);
  if (backward) {
    const mf_tensor *dy = c->in[0], *w = c->in[2], *stats = c->in[3];
    char *sp = mf_cuda_ptr(stats);
    /* eps: cuDNN uses the saved invstd given here; any valid value */
    MF_TRY(mf_dnn_check(dev,
                        cudnnBatchNormalizationBackward(
                            h, mode, k.one(), k.zero(), k.one(), k.zero(), xd.d, mf_cuda_ptr(x),
                            xd.d, mf_cuda_ptr(dy), xd.d, mf_cuda_ptr(c->out), bnd.d, mf_cuda_ptr(w),
                            mf_cuda_ptr(c->out2), mf_cuda_ptr(c->state[0]), 1e-5, sp,
                            sp + (size_t)C * es),
                        op, "cudnnBatchNormalizationBackward", what));
  } else if (training) {
    char *sp = mf_cuda_ptr(c->out2);
    MF_TRY(mf_dnn_check(
        dev,
        cudnnBatchNormalizationForwardTraining(
            h, mode, k.one(), k.zero(), xd.d, mf_cuda_ptr(x), xd.d, mf_cuda_ptr(c->out), bnd.d,
            mf_cuda_ptr(c->in[1]), mf_cuda_ptr(c->in[2]), c->p[0],
            c->state[0] ? mf_cuda_ptr(c->state[0]) : nullptr,
            c->state[1] ? mf_cuda_ptr(c->state[1]) : nullptr, c->p[1], sp, sp + (size_t)C * es),
        op, "cudnnBatchNormalizationForwardTraining", what));
  } else {
    MF_TRY(
        mf_dnn_check(dev,
                     cudnnBatchNormalizationForwardInference(
                         h, mode, k.one(), k.zero(), xd.d, mf_cuda_ptr(x), xd.d,
                         mf_cuda_ptr(c->out), bnd.d, mf_cuda_ptr(c->in[1]), mf_cuda_ptr(c->in[2]),
                         mf_cuda_ptr(c->state[0]), mf_cuda_ptr(c->state[1]), c->p[1]),
                     op, "cudnnBatchNormalizationForwardInference", what));
  }
  return mf_cuda_launched(dev, op);
}

#endif
