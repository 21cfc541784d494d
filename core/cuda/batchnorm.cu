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
 *
 * bfloat16 data goes through float32: x (and dy) are widened into scratch, cuDNN runs in float32,
 * and y (or dx) is rounded back. cuDNN's documentation lists half data with float parameters for
 * its legacy batch norm, but PyTorch never hands it bfloat16 (its native kernel takes those), so
 * nothing shows that cuDNN 9 accepts it; the widening costs two passes over x, not a failed call.
 *
 * Batch limits: cuDNN's batch norm kernels cap N (PyTorch hands cuDNN at most 65535 in inference
 * and 880801 in training, and fewer than 2^31 elements: aten/src/ATen/native/Normalization.cpp).
 * Inference, elementwise once the statistics are known, runs in chunks of N within the caps.
 * Training on more is refused as not supported, which sends F.batch_norm to its composed form
 * (nn/functional.lua); a channels-last input is (N*H*W, C, 1) here, so such batches are real.
 */
#ifdef MF_HAVE_CUDNN

#include "cuda/dnn.cuh"
#include "cuda/kernels.h"

#define BN_INFER_MAX_N 65535
#define BN_TRAIN_MAX_N 880801
#define BN_MAX_ELEMS ((int64_t)INT32_MAX)

template <class TO, class TI> __global__ void convert_kernel(TO *out, const TI *in, int64_t n) {
  MF_GRID_LOOP(i, n) out[i] = (TO)(float)in[i];
}

/* n elements from in (dtype from) into out (dtype to): bfloat16 <-> float32 */
static mf_status convert(mf_device *dev, void *out, mf_dtype to, const void *in, int64_t n,
                         const char *op) {
  cudaStream_t s = mf_cuda_stream(dev);
  if (to == MF_F32)
    convert_kernel<float, __nv_bfloat16>
        <<<mf_cuda_blocks(n), MF_CUDA_THREADS, 0, s>>>((float *)out, (const __nv_bfloat16 *)in, n);
  else
    convert_kernel<__nv_bfloat16, float>
        <<<mf_cuda_blocks(n), MF_CUDA_THREADS, 0, s>>>((__nv_bfloat16 *)out, (const float *)in, n);
  return mf_cuda_launched(dev, op);
}

/* Float32 copies of a bfloat16 call's x and dy, and room for its y or dx; released with it. */
struct widened {
  mf_device *dev;
  void *p[3] = {nullptr, nullptr, nullptr}; /* x, dy, out */
  size_t bytes = 0;
  ~widened() {
    for (void *q : p)
      if (q) mf_cuda_scratch_free(dev, q, bytes);
  }
};

static mf_status cudnn_batch_norm(mf_device *dev, const mf_call *c, mf_dtype dt, const void *x,
                                  const void *dy, void *out);

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
  const mf_tensor *x = backward ? c->in[1] : c->in[0];
  if (x->dtype != dt || (backward && c->in[0]->dtype != dt))
    return mf_fail(MF_ERR_DTYPE, "%s: the input, its gradient and the output must all be %s", op,
                   mf_dtype_name(dt));
  MF_TRY(mf_cuda_enter(dev));
  const void *dy = backward ? mf_cuda_ptr(c->in[0]) : nullptr;
  if (dt != MF_BF16) return cudnn_batch_norm(dev, c, dt, mf_cuda_ptr(x), dy, mf_cuda_ptr(c->out));
  int64_t n = mf_numel(x);
  widened w{dev};
  w.bytes = (size_t)n * sizeof(float);
  for (int k = 0; k < 3; k++)
    if ((k != 1 || backward) && !(w.p[k] = mf_cuda_scratch(dev, w.bytes))) return MF_ERR_MEMORY;
  MF_TRY(convert(dev, w.p[0], MF_F32, mf_cuda_ptr(x), n, op));
  if (backward) MF_TRY(convert(dev, w.p[1], MF_F32, dy, n, op));
  MF_TRY(cudnn_batch_norm(dev, c, MF_F32, w.p[0], w.p[1], w.p[2]));
  return convert(dev, mf_cuda_ptr(c->out), MF_BF16, w.p[2], n, op);
}

/* The cuDNN call on x, dy (backward) and out of dtype dt; the per-channel tensors from c. */
static mf_status cudnn_batch_norm(mf_device *dev, const mf_call *c, mf_dtype dt, const void *x,
                                  const void *dy, void *out) {
  const char *op = mf_op_name(c->op);
  bool backward = c->op == MF_OP_BATCH_NORM_BACKWARD;
  bool training = backward || c->ip[0] != 0;
  int64_t N = c->ip[1], C = c->ip[2], S = c->ip[3];
  mf_dtype pdt = dt == MF_F64 ? MF_F64 : MF_F32;
  mf_dnn_what what; /* the operands, for messages */
  what.na = "input";
  what.a = backward ? c->in[1] : c->in[0];

  /* the most images one cuDNN call takes (see the top) */
  int64_t most = (training ? BN_TRAIN_MAX_N : BN_INFER_MAX_N), per = C * S;
  if (per > 0 && BN_MAX_ELEMS / per < most) most = BN_MAX_ELEMS / per;
  if (most < 1 || (training && N > most))
    return mf_fail(
        MF_ERR_UNSUPPORTED,
        "%s: not supported on %s for a batch of %lld x %lld x %lld%s (cuDNN's batch norm "
        "takes at most %lld rows of it; F.batch_norm then uses its composed form)",
        op, dev->name, (long long)N, (long long)C, (long long)S, training ? " in training" : "",
        (long long)most);
  int64_t nb = N < most ? N : most; /* the batch of one call (inference: chunks of it) */
  cudnnHandle_t h;
  MF_TRY(mf_dnn_handle(dev, op, &h));
  int64_t shape[4] = {nb, C, S, 1}, stride[4] = {C * S, S, 1, 1};
  mf_dnn_tensor_desc xd, bnd;
  MF_TRY(mf_dnn_tensor4d(dev, op, dt, shape, stride, &xd));
  MF_TRY(mf_dnn_check(dev, cudnnCreateTensorDescriptor(&bnd.d), op, "cudnnCreateTensorDescriptor",
                      &what));
  const cudnnBatchNormMode_t mode = CUDNN_BATCHNORM_SPATIAL;
  MF_TRY(mf_dnn_check(dev, cudnnDeriveBNTensorDescriptor(bnd.d, xd.d, mode), op,
                      "cudnnDeriveBNTensorDescriptor", &what));
  mf_dnn_scalars k(dt);
  size_t es = mf_dtype_size(pdt);
  if (backward) {
    const mf_tensor *w = c->in[2], *stats = c->in[3];
    char *sp = mf_cuda_ptr(stats);
    /* eps: cuDNN uses the saved invstd given here; any valid value */
    MF_TRY(mf_dnn_check(dev,
                        cudnnBatchNormalizationBackward(
                            h, mode, k.one(), k.zero(), k.one(), k.zero(), xd.d, x, xd.d, dy, xd.d,
                            out, bnd.d, mf_cuda_ptr(w), mf_cuda_ptr(c->out2),
                            mf_cuda_ptr(c->state[0]), 1e-5, sp, sp + (size_t)C * es),
                        op, "cudnnBatchNormalizationBackward", &what));
  } else if (training) {
    char *sp = mf_cuda_ptr(c->out2);
    MF_TRY(mf_dnn_check(
        dev,
        cudnnBatchNormalizationForwardTraining(
            h, mode, k.one(), k.zero(), xd.d, x, xd.d, out, bnd.d, mf_cuda_ptr(c->in[1]),
            mf_cuda_ptr(c->in[2]), c->p[0], c->state[0] ? mf_cuda_ptr(c->state[0]) : nullptr,
            c->state[1] ? mf_cuda_ptr(c->state[1]) : nullptr, c->p[1], sp, sp + (size_t)C * es),
        op, "cudnnBatchNormalizationForwardTraining", &what));
  } else {
    size_t xs = mf_dtype_size(dt);
    mf_dnn_tensor_desc last; /* a shorter last chunk's */
    for (int64_t n0 = 0; n0 < N; n0 += nb) {
      cudnnTensorDescriptor_t d = xd.d;
      if (N - n0 < nb) {
        shape[0] = N - n0;
        MF_TRY(mf_dnn_tensor4d(dev, op, dt, shape, stride, &last));
        d = last.d;
      }
      size_t at = (size_t)(n0 * C * S) * xs;
      MF_TRY(mf_dnn_check(dev,
                          cudnnBatchNormalizationForwardInference(
                              h, mode, k.one(), k.zero(), d, (const char *)x + at, d,
                              (char *)out + at, bnd.d, mf_cuda_ptr(c->in[1]), mf_cuda_ptr(c->in[2]),
                              mf_cuda_ptr(c->state[0]), mf_cuda_ptr(c->state[1]), c->p[1]),
                          op, "cudnnBatchNormalizationForwardInference", &what));
    }
  }
  return mf_cuda_launched(dev, op);
}

#endif
