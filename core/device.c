/* device.c — the devices: the always-present CPU device (host allocator, memcpy transfers, the CPU
 * kernel table), parsing device specs ("cpu", "cuda:1", "/gpu:0", "/device:GPU:1"), and op dispatch
 * through a device's kernel table. CUDA devices come from cuda_loader.c, which loads the CUDA
 * backend's library on first use. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <pthread.h>

#include "cuda/api.h"
#include "internal.h"

static void *cpu_alloc(mf_device *d, size_t n) {
  (void)d;
  return mf_host_alloc(n);
}
static void cpu_free(mf_device *d, void *p, size_t n) {
  (void)d;
  mf_host_free(p, n);
}
static mf_status cpu_copy(mf_device *d, void *dst, const void *src, size_t n) {
  (void)d;
  if (n) memcpy(dst, src, n);
  return MF_OK;
}
static mf_status cpu_sync(mf_device *d) {
  (void)d;
  return MF_OK;
}

static mf_device cpu_device = {
    .type = MF_DEV_CPU,
    .index = 0,
    .name = "cpu",
    .i = {cpu_alloc, cpu_free, cpu_copy, cpu_copy, cpu_sync},
};

static void cpu_init(void) { mf_cpu_register_kernels(cpu_device.kernels); }

mf_device *mf_cpu(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, cpu_init);
  return &cpu_device;
}

const char *mf_device_name(const mf_device *d) { return d->name; }
mf_device_type mf_device_kind(const mf_device *d) { return d->type; }
int mf_device_index(const mf_device *d) { return d->index; }
mf_status mf_device_synchronize(mf_device *d) { return d->i.synchronize(d); }

/* Splits "kind[:index]" after an optional leading "/" and "device:"; kind is case-insensitive. */
mf_status mf_device_get(const char *spec, mf_device **out) {
  *out = NULL;
  const char *s = spec;
  if (*s == '/') s++;
  if (strncasecmp(s, "device:", 7) == 0) s += 7;
  size_t n = strcspn(s, ":");
  int index = 0;
  if (s[n] == ':') {
    char *end;
    long v = strtol(s + n + 1, &end, 10);
    if (end == s + n + 1 || *end || v < 0 || v > 1024)
      return mf_fail(MF_ERR_ARG, "device: bad device index in '%s'", spec);
    index = (int)v;
  }
  if (n == 3 && strncasecmp(s, "cpu", 3) == 0) {
    if (index != 0)
      return mf_fail(MF_ERR_DEVICE, "device: there is only one CPU device (cpu:0), not '%s'", spec);
    *out = mf_cpu();
    return MF_OK;
  }
  if ((n == 4 && strncasecmp(s, "cuda", 4) == 0) || (n == 3 && strncasecmp(s, "gpu", 3) == 0))
    return mf_cuda_device(index, out); /* cuda_loader.c */
  return mf_fail(MF_ERR_ARG, "device: unknown device '%s' (expected cpu, cuda:N or /gpu:N)", spec);
}

mf_status mf_dispatch(mf_device *dev, const mf_call *c) {
  mf_kernel k = dev->kernels[c->op];
  if (!k)
    return mf_fail(MF_ERR_UNSUPPORTED, "%s: not supported on %s", mf_op_name(c->op), dev->name);
  return k(dev, c);
}

const char *mf_op_name(mf_op op) {
  static const char *names[] = {
#define MF_OP_NAME_(id, name) name,
      MF_OPS(MF_OP_NAME_)
#undef MF_OP_NAME_
  };
  return (unsigned)op < MF_OP_COUNT ? names[op] : "?";
}
