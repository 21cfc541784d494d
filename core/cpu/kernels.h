/* kernels.h — the CPU backend's kernels, one entry point per op family; cpu/backend.c puts them in
 * the CPU device's kernel table. Each takes a call prepared by the front end (see internal.h). */
#ifndef MF_CPU_KERNELS_H
#define MF_CPU_KERNELS_H

#include "internal.h"

/* elementwise.c: every binary op (ADD .. LOGICAL_OR) and unary op (NEG .. CLAMP).
 * Binary: in[0], in[1] have out's shape (broadcast dims stride 0) and the same dtype; out has that
 * dtype, or bool for comparisons and logical ops. Unary: in[0] has out's shape; out has in[0]'s
 * dtype (bool for LOGICAL_NOT). CLAMP: p[0] = lo, p[1] = hi (+-inf = no bound). */
mf_status mf_cpu_binary(mf_device *dev, const mf_call *c);
mf_status mf_cpu_unary(mf_device *dev, const mf_call *c);

/* fill.c */
mf_status mf_cpu_copy(mf_device *dev,
                      const mf_call *c); /* out = cast(in[0]); any strides on both */
mf_status mf_cpu_fill(mf_device *dev, const mf_call *c); /* out = p[0]; out may be any view */
mf_status mf_cpu_arange(mf_device *dev,
                        const mf_call *c); /* out[i] = p[0] + i * p[1]; contiguous */
mf_status mf_cpu_random(mf_device *dev, const mf_call *c); /* RAND / RANDN from seed, offset */
mf_status mf_cpu_where(mf_device *dev, const mf_call *c);  /* out = in[0] ? in[1] : in[2] */

/* reduce.c: SUM PROD MAX MIN ARGMAX ARGMIN MEAN VAR over contiguous (ip[0], ip[1], ip[2]) =
 * (outer, n, inner) into out (outer, inner); VAR: ip[3] = correction. */
mf_status mf_cpu_reduce(mf_device *dev, const mf_call *c);

/* matmul.c: see ops_linalg.c for the layout it receives. */
mf_status mf_cpu_matmul(mf_device *dev, const mf_call *c);

/* optim.c: SGD_STEP .. ADAGRAD_STEP. out = the parameter (contiguous, float32 or float64), in[0] =
 * its gradient (contiguous, same dtype), state[] = the state tensors in the order of the
 * mf_*_step arguments (contiguous, NULL where unused), params = the mf_optim_hparams. */
mf_status mf_cpu_optim(mf_device *dev, const mf_call *c);

/* Neural-network ops; the call layouts are described at the top of ops_nn.c. */
/* conv.c: CONV2D, CONV2D_BACKWARD_INPUT, CONV2D_BACKWARD_WEIGHT */
mf_status mf_cpu_conv2d(mf_device *dev, const mf_call *c);
/* conv.c: dst (cols, rows) = src (rows, cols), their rows ldd / lds elements apart; es = 4 or 8
 * bytes per element (the channels-last conv and pool kernels change an image's layout with it) */
void mf_cpu_transpose(size_t es, int64_t rows, int64_t cols, const void *src, int64_t lds,
                      void *dst, int64_t ldd);
/* winograd.c: the float32 5x5 stride-1 path of mf_cpu_conv2d. Returns false when the call does
 * not suit it (the caller then uses im2col), else true with the call's status in *status. */
bool mf_cpu_conv2d_winograd(const mf_call *c, mf_status *status);
/* pool.c: MAX_POOL2D, MAX_POOL2D_BACKWARD, AVG_POOL2D, AVG_POOL2D_BACKWARD */
mf_status mf_cpu_pool2d(mf_device *dev, const mf_call *c);
/* softmax.c: SOFTMAX, LOG_SOFTMAX and their backwards over (ip[0], ip[1], ip[2]) */
mf_status mf_cpu_softmax(mf_device *dev, const mf_call *c);
/* gather.c: GATHER, SCATTER_ADD; DROPOUT_MASK */
mf_status mf_cpu_gather(mf_device *dev, const mf_call *c);
mf_status mf_cpu_dropout_mask(mf_device *dev, const mf_call *c);
/* loss.c: CROSS_ENTROPY, CROSS_ENTROPY_BACKWARD */
mf_status mf_cpu_cross_entropy(mf_device *dev, const mf_call *c);
/* batchnorm.c: BATCH_NORM, BATCH_NORM_BACKWARD (layouts: ops_norm.c) */
mf_status mf_cpu_batch_norm(mf_device *dev, const mf_call *c);

#endif
