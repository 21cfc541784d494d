/* kernels.h — the CUDA backend's kernels, one entry point per op family (one .cu file each);
 * device.cu puts them in each GPU's kernel table. Each takes a call prepared by the front end
 * (see internal.h and the op files' header comments), the same calls the CPU kernels take. */
#ifndef MF_CUDA_KERNELS_H
#define MF_CUDA_KERNELS_H

#include "cuda/common.cuh"

/* elementwise.cu: ADD .. LOGICAL_OR and NEG .. CLAMP, every dtype (float16/bfloat16 included) */
mf_status mf_cuda_binary(mf_device *dev, const mf_call *c);
mf_status mf_cuda_unary(mf_device *dev, const mf_call *c);

/* fill.cu: COPY (strided, casts), FILL, ARANGE, RAND/RANDN (Philox as random.c), WHERE,
 * DROPOUT_MASK */
mf_status mf_cuda_copy(mf_device *dev, const mf_call *c);
mf_status mf_cuda_fill(mf_device *dev, const mf_call *c);
mf_status mf_cuda_arange(mf_device *dev, const mf_call *c);
mf_status mf_cuda_random(mf_device *dev, const mf_call *c);
mf_status mf_cuda_where(mf_device *dev, const mf_call *c);
mf_status mf_cuda_dropout_mask(mf_device *dev, const mf_call *c);

/* reduce.cu: SUM .. VAR over (outer, n, inner) */
mf_status mf_cuda_reduce(mf_device *dev, const mf_call *c);

/* matmul.cu: cuBLAS for the float dtypes, a plain kernel for the integers */
mf_status mf_cuda_matmul(mf_device *dev, const mf_call *c);
/* matmul.cu: the cuBLAS handle's teardown (device.cu calls it when a context goes) */
void mf_cuda_matmul_release(mf_cuda_ctx *ctx);
/* matmul.cu: float32 matmul in TF32 or not (mf_cuda_set_tf32); returns the previous setting */
bool mf_cuda_matmul_set_tf32(bool on);
/* matmul.cu: whether float32 may use TF32 now (conv.cu follows the same switch) */
bool mf_cuda_tf32(void);

/* conv.cu (cuDNN builds only): CONV2D, CONV2D_BACKWARD_INPUT, CONV2D_BACKWARD_WEIGHT */
mf_status mf_cuda_conv2d(mf_device *dev, const mf_call *c);
/* batchnorm.cu (cuDNN builds only): BATCH_NORM, BATCH_NORM_BACKWARD */
mf_status mf_cuda_batch_norm(mf_device *dev, const mf_call *c);
/* pool.cu: MAX_POOL2D, MAX_POOL2D_BACKWARD, AVG_POOL2D, AVG_POOL2D_BACKWARD (average pooling
 * through cuDNN where it can, our kernels otherwise) */
mf_status mf_cuda_pool2d(mf_device *dev, const mf_call *c);
/* gather.cu: GATHER, SCATTER_ADD */
mf_status mf_cuda_gather(mf_device *dev, const mf_call *c);

/* loss.cu: CROSS_ENTROPY, CROSS_ENTROPY_BACKWARD */
mf_status mf_cuda_cross_entropy(mf_device *dev, const mf_call *c);
/* softmax.cu: SOFTMAX, LOG_SOFTMAX and their backwards */
mf_status mf_cuda_softmax(mf_device *dev, const mf_call *c);

/* optim.cu: SGD_STEP .. ADAGRAD_STEP, the formulas of cpu/optim.c */
mf_status mf_cuda_optim(mf_device *dev, const mf_call *c);

/* device.cu: the device "cuda:index", made on first use */
mf_status mf_cuda_device_get(int index, mf_device **out);

/* event.cu: mf_cuda_event_* of moonflow.h (mf_cuda_event_make is mf_cuda_event_new) */
mf_status mf_cuda_event_make(int index, bool timing, mf_cuda_event **out);
void mf_cuda_event_free(mf_cuda_event *ev);
mf_status mf_cuda_event_record(mf_cuda_event *ev);
mf_status mf_cuda_event_query(mf_cuda_event *ev, bool *done);
mf_status mf_cuda_event_synchronize(mf_cuda_event *ev);
mf_status mf_cuda_event_elapsed(mf_cuda_event *start, mf_cuda_event *end, double *ms);

/* profile.cu (mf.cuda.profile): on or off for the devices made so far (devs) and any made later
 * (make_device calls mf_cuda_prof_device); an op's calls and GPU milliseconds since it went on */
mf_status mf_cuda_prof_set(bool on, mf_device *const *devs, int ndevs);
void mf_cuda_prof_device(mf_device *dev);
mf_status mf_cuda_prof_read(int op, int64_t *calls, double *ms);

#endif
