/* device.c — the devices: the always-present CPU device (host allocator, memcpy transfers, the CPU
 * kernel table), parsing device specs ("cpu", "cuda:1", "/gpu:0", "/device:GPU:1") without opening
 * the device (mf_device_parse: graphs name GPUs a machine may lack), why a GPU cannot be used
 * (mf_cuda_unavailable: the backend's reason plus what CUDA_VISIBLE_DEVICES hides), and op dispatch
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
mf_status mf_device_parse(const char *spec, mf_device_type *kind, int *index) {
  if (!spec) return mf_fail(MF_ERR_ARG, "device: no device spec given");
  const char *s = spec;
  /* TensorFlow's full names: their /job:, /replica: and /task: parts name no device */
  while (strncasecmp(s, "/job:", 5) == 0 || strncasecmp(s, "/replica:", 9) == 0 ||
         strncasecmp(s, "/task:", 6) == 0) {
    const char *next = strchr(s + 1, '/');
    if (!next) { /* nothing but those: no device asked for, so the CPU */
      *kind = MF_DEV_CPU;
      *index = 0;
      return MF_OK;
    }
    s = next;
  }
  if (*s == '/') s++;
  if (strncasecmp(s, "device:", 7) == 0) s += 7;
  size_t n = strcspn(s, ":");
  *index = 0;
  if (s[n] == ':') {
    char *end;
    long v = strtol(s + n + 1, &end, 10);
    if (end == s + n + 1 || *end || !isdigit((unsigned char)s[n + 1]) || v > 1024)
      return mf_fail(MF_ERR_ARG, "device: bad device index in '%s' (expected a number 0, 1, ...)",
                     spec);
    *index = (int)v;
  }
  if (n == 3 && strncasecmp(s, "cpu", 3) == 0) {
    *kind = MF_DEV_CPU;
    return MF_OK;
  }
  if ((n == 4 && strncasecmp(s, "cuda", 4) == 0) || (n == 3 && strncasecmp(s, "gpu", 3) == 0)) {
    *kind = MF_DEV_CUDA;
    return MF_OK;
  }
  return mf_fail(MF_ERR_ARG,
                 "device: unknown device '%s' (expected cpu, cuda:N, /cpu:0, /gpu:N or "
                 "/device:GPU:N)",
                 spec);
}

/* What CUDA_VISIBLE_DEVICES says when it is set and hides GPUs: "" or "-1" hide them all; another
 * list may name GPUs the machine lacks. Empty when unset. */
static void visible_note(char *buf, size_t n) {
  const char *v = getenv("CUDA_VISIBLE_DEVICES");
  buf[0] = '\0';
  if (!v) return;
  if (mf_cuda_env_hides_all()) /* cuda_loader.c: the runtime stops at the first bad entry */
    snprintf(buf, n, "; CUDA_VISIBLE_DEVICES='%.64s' hides every GPU", v);
  else
    snprintf(buf, n, "; CUDA_VISIBLE_DEVICES='%.64s' limits the GPUs seen", v);
}

bool mf_cuda_unavailable(int index, char *buf, size_t n) {
  mf_device *d;
  if (n) buf[0] = '\0';
  if (mf_cuda_device(index, &d) == MF_OK) return false; /* cuda_loader.c */
  char note[128];
  const char *e = mf_error();
  char what[32];
  snprintf(what, sizeof what, "cuda:%d: ", index);
  if (strncmp(e, what, strlen(what)) == 0) e += strlen(what); /* the backend's "cuda:N: " */
  if (strstr(e, "CUDA_VISIBLE_DEVICES")) /* the loader's own reason already says it */
    note[0] = '\0';
  else
    visible_note(note, sizeof note);
  const char *lead = mf_cuda_device_count() == 0 && !strstr(e, "no CUDA device is available")
                         ? "no CUDA device is available: "
                         : "";
  snprintf(buf, n, "%s%s%s", lead, e, note);
  return true;
}

mf_status mf_device_get(const char *spec, mf_device **out) {
  *out = NULL;
  mf_device_type kind;
  int index;
  MF_TRY(mf_device_parse(spec, &kind, &index));
  if (kind == MF_DEV_CPU) {
    if (index != 0)
      return mf_fail(MF_ERR_DEVICE, "device: there is only one CPU device (cpu:0), not '%s'", spec);
    *out = mf_cpu();
    return MF_OK;
  }
  if (mf_cuda_device(index, out) == MF_OK) return MF_OK; /* cuda_loader.c */
  char why[1024];
  mf_cuda_unavailable(index, why, sizeof why);
  return mf_fail(MF_ERR_DEVICE, "cuda:%d: %s", index, why);
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
