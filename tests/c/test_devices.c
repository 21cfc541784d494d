/* test_devices.c — device specs and the mixing-devices errors, checked without a GPU: a second
 * device, "fake:1", is a copy of the CPU device (same allocator and kernels, another identity), so
 * every op that takes two tensors can be given one on each device. Each must fail with
 * MF_ERR_DEVICE naming the op and both devices, and make nothing (no silent copy); explicit moves
 * (mf_to_device, mf_copy_) keep working. Spec parsing and the "no GPU: why" answers are checked
 * here too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "moonflow_io.h" /* mf_index_select */
#include "test.h"

static mf_device fake;

static void make_fake(void) {
  fake = *mf_cpu(); /* the CPU's function pointers and kernel table */
  fake.index = 1;
  snprintf(fake.name, sizeof fake.name, "fake:1");
}

/* The op failed because of the devices, its message names op, cpu and fake:1, and out is NULL. */
#define CHECK_MIXED(expr, op, out)                                                                 \
  do {                                                                                             \
    mf_status s_ = (expr);                                                                         \
    const char *m_ = s_ ? mf_error() : "";                                                         \
    if (s_ == MF_ERR_DEVICE && strncmp(m_, op ": ", strlen(op) + 2) == 0 && strstr(m_, "cpu") &&   \
        strstr(m_, "fake:1") && (out) == NULL)                                                     \
      t_passed++;                                                                                  \
    else {                                                                                         \
      t_failed++;                                                                                  \
      fprintf(stderr, "%s:%d: %s: status %d, message \"%s\"; wanted a device error of %s\n",       \
              __FILE__, __LINE__, #expr, (int)s_, m_, op);                                         \
    }                                                                                              \
  } while (0)

static void test_specs(void) {
  static const struct {
    const char *spec;
    mf_device_type kind;
    int index;
  } good[] = {
      {"cpu", MF_DEV_CPU, 0},
      {"/cpu:0", MF_DEV_CPU, 0},
      {"CPU", MF_DEV_CPU, 0},
      {"/device:CPU:0", MF_DEV_CPU, 0},
      {"cuda", MF_DEV_CUDA, 0},
      {"cuda:2", MF_DEV_CUDA, 2},
      {"/gpu:0", MF_DEV_CUDA, 0},
      {"GPU:3", MF_DEV_CUDA, 3},
      {"/device:GPU:1", MF_DEV_CUDA, 1},
      {"/job:localhost/replica:0/task:0/device:GPU:2", MF_DEV_CUDA, 2},
      {"/job:worker/task:1/cpu:0", MF_DEV_CPU, 0},
      {"/job:localhost/replica:0/task:0", MF_DEV_CPU, 0},
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    mf_device_type kind = MF_DEV_CPU;
    int index = -1;
    CHECK_OK(mf_device_parse(good[i].spec, &kind, &index));
    CHECK(kind == good[i].kind && index == good[i].index);
  }
  mf_device_type kind;
  int index;
  CHECK_FAILS(mf_device_parse("/tpu:0", &kind, &index), MF_ERR_ARG, "unknown device '/tpu:0'");
  CHECK_FAILS(mf_device_parse("cuda:", &kind, &index), MF_ERR_ARG, "bad device index in 'cuda:'");
  CHECK_FAILS(mf_device_parse("cuda:+1", &kind, &index), MF_ERR_ARG, "bad device index");
  CHECK_FAILS(mf_device_parse("cuda:1x", &kind, &index), MF_ERR_ARG, "bad device index");
  CHECK_FAILS(mf_device_parse("gpu:99999", &kind, &index), MF_ERR_ARG, "bad device index");
  CHECK_FAILS(mf_device_parse("", &kind, &index), MF_ERR_ARG, "unknown device ''");
  CHECK_FAILS(mf_device_parse("/job:localhost/device:TPU:0", &kind, &index), MF_ERR_ARG,
              "unknown device '/job:localhost/device:TPU:0'");
  CHECK_FAILS(mf_device_parse(NULL, &kind, &index), MF_ERR_ARG, "no device spec");

  mf_device *d = NULL;
  CHECK_OK(mf_device_get("/device:CPU:0", &d));
  CHECK(d == mf_cpu());
  CHECK_FAILS(mf_device_get("cpu:1", &d), MF_ERR_DEVICE, "only one CPU device");
  CHECK(d == NULL);

  /* a GPU index past the last one: an error saying why, whatever the machine */
  char why[512];
  CHECK(mf_cuda_unavailable(63, why, sizeof why));
  CHECK(why[0] != '\0');
  CHECK_FAILS(mf_device_get("/gpu:63", &d), MF_ERR_DEVICE, "cuda:63: ");
  if (mf_cuda_device_count() == 0) {
    CHECK(mf_cuda_unavailable(0, why, sizeof why));
    CHECK(strstr(why, "no CUDA device is available") != NULL);
    CHECK_FAILS(mf_device_get("cuda", &d), MF_ERR_DEVICE, "no CUDA device is available");
  } else {
    CHECK(!mf_cuda_unavailable(0, why, sizeof why));
    CHECK(why[0] == '\0');
  }
}

static mf_tensor *full(int ndim, const int64_t *shape, mf_dtype dt, double v, mf_device *dev) {
  mf_tensor *t = NULL;
  CHECK_OK(mf_full(ndim, shape, v, dt, dev, &t));
  return t;
}

static void test_mixing(void) {
  int64_t s2[2] = {2, 2}, s1[1] = {2};
  mf_tensor *a = full(2, s2, MF_F32, 1, NULL), *b = full(2, s2, MF_F32, 2, &fake), *r = NULL;
  CHECK(strcmp(mf_device_name(mf_tensor_device(b)), "fake:1") == 0);

  /* every binary op, both ways round, and broadcasting against a scalar-shaped tensor */
  for (int op = MF_OP_ADD; op <= MF_OP_LOGICAL_OR; op++) {
    mf_status s = mf_binary((mf_op)op, a, b, &r);
    const char *m = s ? mf_error() : "";
    char want[64];
    snprintf(want, sizeof want, "%s: tensors are on different devices (cpu and fake:1)",
             mf_op_name((mf_op)op));
    CHECK(s == MF_ERR_DEVICE && strstr(m, want) && r == NULL);
    if (!(s == MF_ERR_DEVICE && strstr(m, want))) fprintf(stderr, "  got \"%s\"\n", m);
    s = mf_binary((mf_op)op, b, a, &r);
    snprintf(want, sizeof want, "%s: tensors are on different devices (fake:1 and cpu)",
             mf_op_name((mf_op)op));
    CHECK(s == MF_ERR_DEVICE && strstr(mf_error(), want) && r == NULL);
  }
  int64_t one[1] = {1};
  mf_tensor *scalar = full(1, one, MF_F32, 3, &fake);
  CHECK_MIXED(mf_add(a, scalar, &r), "add", r);

  /* where, matmul, cat, stack */
  mf_tensor *cond = full(2, s2, MF_BOOL, 1, NULL), *fcond = full(2, s2, MF_BOOL, 1, &fake);
  CHECK_MIXED(mf_where(cond, a, b, &r), "where", r);
  CHECK_MIXED(mf_where(fcond, a, a, &r), "where", r);
  CHECK_MIXED(mf_matmul(a, b, &r), "matmul", r);
  CHECK_MIXED(mf_matmul(b, a, &r), "matmul", r);
  mf_tensor *pair[2] = {a, b};
  CHECK_MIXED(mf_cat(2, pair, 0, &r), "cat", r);
  CHECK_FAILS(mf_stack(2, pair, 0, &r), MF_ERR_DEVICE, "different devices");
  CHECK(r == NULL);

  /* convolution and its gradients, pooling's backward, softmax backward */
  int64_t xs[4] = {1, 1, 4, 4}, ws[4] = {2, 1, 3, 3}, bs[1] = {2}, os[4] = {1, 2, 2, 2};
  mf_tensor *x = full(4, xs, MF_F32, 1, NULL), *w = full(4, ws, MF_F32, 1, NULL);
  mf_tensor *fw = full(4, ws, MF_F32, 1, &fake), *fbias = full(1, bs, MF_F32, 1, &fake);
  mf_tensor *bias = full(1, bs, MF_F32, 1, NULL);
  mf_tensor *dout = full(4, os, MF_F32, 1, NULL), *fdout = full(4, os, MF_F32, 1, &fake);
  mf_pool2d_params p = {{3, 3}, {1, 1}, {0, 0, 0, 0}, false};
  CHECK_OK(mf_conv2d(x, w, bias, &p, &r)); /* the same call on one device works */
  mf_release(r);
  r = NULL;
  CHECK_MIXED(mf_conv2d(x, fw, bias, &p, &r), "conv2d", r);
  CHECK_MIXED(mf_conv2d(x, w, fbias, &p, &r), "conv2d", r);
  CHECK_MIXED(mf_conv2d_backward_input(fdout, w, xs, &p, &r), "conv2d_backward_input", r);
  CHECK_MIXED(mf_conv2d_backward_weight(fdout, x, ws, &p, &r), "conv2d_backward_weight", r);
  mf_tensor *pooled = NULL, *indices = NULL;
  mf_pool2d_params pp = {{2, 2}, {2, 2}, {0, 0, 0, 0}, false};
  CHECK_OK(mf_max_pool2d(x, &pp, &pooled, &indices));
  mf_tensor *fpooled = NULL;
  CHECK_OK(mf_to_device(pooled, &fake, &fpooled));
  CHECK_MIXED(mf_max_pool2d_backward(fpooled, indices, xs, &r), "max_pool2d_backward", r);
  CHECK_MIXED(mf_softmax_backward(a, b, 1, &r), "softmax_backward", r);
  CHECK_MIXED(mf_log_softmax_backward(b, a, 1, &r), "log_softmax_backward", r);

  /* gather, scatter_add, index_select */
  mf_tensor *idx = full(2, s2, MF_I64, 0, &fake), *idx1 = full(1, s1, MF_I64, 0, &fake);
  CHECK_MIXED(mf_gather(a, 1, idx, &r), "gather", r);
  CHECK_MIXED(mf_scatter_add(2, s2, 1, idx, a, &r), "scatter_add", r);
  CHECK_MIXED(mf_index_select(a, 0, idx1, &r), "index_select", r);

  /* fused optimizer steps: the gradient or a state tensor on the other device */
  mf_optim_hparams h = {0};
  h.lr = 0.1;
  h.beta1 = 0.9;
  h.beta2 = 0.999;
  h.eps = 1e-8;
  h.alpha = 0.99;
  h.step = 1;
  mf_tensor *param = full(2, s2, MF_F32, 1, NULL), *grad = full(2, s2, MF_F32, 1, NULL);
  mf_tensor *st1 = full(2, s2, MF_F32, 0, NULL), *st2 = full(2, s2, MF_F32, 0, NULL);
  CHECK_MIXED(mf_sgd_step(param, b, NULL, &h), "sgd_step", NULL);
  CHECK_MIXED(mf_adam_step(param, grad, st1, b, &h), "adam_step", NULL);
  CHECK_MIXED(mf_adam_step(param, b, st1, st2, &h), "adam_step", NULL);
  CHECK_MIXED(mf_rmsprop_step(param, grad, b, NULL, NULL, &h), "rmsprop_step", NULL);
  CHECK_MIXED(mf_adadelta_step(param, grad, st1, b, &h), "adadelta_step", NULL);
  CHECK_MIXED(mf_adagrad_step(param, b, st1, &h), "adagrad_step", NULL);
  double v = 0;
  int64_t at[2] = {0, 0};
  CHECK_OK(mf_get(param, at, &v));
  CHECK(v == 1); /* no step was taken */

  /* a gradient on another device than its tensor */
  mf_tensor *leaf = full(2, s2, MF_F32, 1, NULL);
  CHECK_MIXED(mf_set_grad(leaf, b), "grad", leaf->grad);

  /* explicit moves work: to_device and copy_ between the devices keep the values */
  mf_tensor *moved = NULL;
  CHECK_OK(mf_to_device(b, mf_cpu(), &moved));
  CHECK(moved && mf_tensor_device(moved) == mf_cpu());
  CHECK_OK(mf_get(moved, at, &v));
  CHECK(v == 2);
  CHECK_OK(mf_copy_(a, b));
  CHECK_OK(mf_get(a, at, &v));
  CHECK(v == 2 && mf_tensor_device(a) == mf_cpu());
  CHECK_OK(mf_add(moved, a, &r)); /* on one device again: fine */
  CHECK_OK(mf_get(r, at, &v));
  CHECK(v == 4);

  mf_tensor *all[] = {a,     b,     scalar, cond,  fcond,  x,       w,       fw,
                      fbias, bias,  dout,   fdout, pooled, indices, fpooled, idx,
                      idx1,  param, grad,   st1,   st2,    leaf,    moved,   r};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) mf_release(all[i]);
}

int main(void) {
  make_fake();
  test_specs();
  test_mixing();
  return test_summary();
}
