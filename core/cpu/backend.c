/* backend.c — the CPU backend's kernel table: which kernel runs each op. */
#include "cpu/kernels.h"

void mf_cpu_register_kernels(mf_kernel *k) {
  for (int op = MF_OP_ADD; op <= MF_OP_LOGICAL_OR; op++) k[op] = mf_cpu_binary;
  for (int op = MF_OP_NEG; op <= MF_OP_CLAMP; op++) k[op] = mf_cpu_unary;
  k[MF_OP_COPY] = mf_cpu_copy;
  k[MF_OP_FILL] = mf_cpu_fill;
  k[MF_OP_ARANGE] = mf_cpu_arange;
  k[MF_OP_RAND] = mf_cpu_random;
  k[MF_OP_RANDN] = mf_cpu_random;
  k[MF_OP_WHERE] = mf_cpu_where;
  for (int op = MF_OP_SUM; op <= MF_OP_VAR; op++) k[op] = mf_cpu_reduce;
  k[MF_OP_MATMUL] = mf_cpu_matmul;
  for (int op = MF_OP_CONV2D; op <= MF_OP_CONV2D_BACKWARD_WEIGHT; op++) k[op] = mf_cpu_conv2d;
  for (int op = MF_OP_MAX_POOL2D; op <= MF_OP_AVG_POOL2D_BACKWARD; op++) k[op] = mf_cpu_pool2d;
  for (int op = MF_OP_SOFTMAX; op <= MF_OP_LOG_SOFTMAX_BACKWARD; op++) k[op] = mf_cpu_softmax;
  k[MF_OP_GATHER] = mf_cpu_gather;
  k[MF_OP_SCATTER_ADD] = mf_cpu_gather;
  k[MF_OP_DROPOUT_MASK] = mf_cpu_dropout_mask;
  k[MF_OP_CROSS_ENTROPY] = mf_cpu_cross_entropy;
  k[MF_OP_CROSS_ENTROPY_BACKWARD] = mf_cpu_cross_entropy;
  for (int op = MF_OP_SGD_STEP; op <= MF_OP_ADAGRAD_STEP; op++) k[op] = mf_cpu_optim;
  k[MF_OP_BATCH_NORM] = mf_cpu_batch_norm;
  k[MF_OP_BATCH_NORM_BACKWARD] = mf_cpu_batch_norm;
}
