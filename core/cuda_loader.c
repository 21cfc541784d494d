/* cuda_loader.c — the CUDA backend, loaded on first use: mf_cuda_device_count, mf_device_get
 * ("cuda:N"), the mf_cuda_* knobs and mf_cuda_versions/mf_cuda_device_info (`moonflow -v`) load
 * libmoonflow_cuda.so the first time one of them is called; nothing else does. A process that never
 * asks for CUDA never maps cudart, cuBLAS or cuDNN (about 150 MB of resident memory and their
 * start-up time, GPU or not).
 *
 * The design, and why:
 * - The backend (the .cu files of core/cuda) is its own library, libmoonflow_cuda.so, the only
 *   file that links cudart/cuBLAS/cuDNN; libmoonflow, core.so, the host and the tests do not.
 * - It links no part of the core. The loader hands its entry point, mf_cuda_open, a table of the
 *   few core functions it calls (mf_fail and some dtype/shape helpers, api.h); the backend's copies
 *   of those names (core/cuda/imports.c) are hidden forwarders. So there is one core in the
 *   process — one error message slot, one allocator, one RNG — whether the core is libmoonflow.so,
 *   libmoonflow.a inside an executable, or linked into core.so and loaded RTLD_LOCAL by a stock
 *   lua5.4 (where the core's symbols are not visible to a library loaded later, so resolving
 *   them from the process would not work). mf_cuda_open returns the backend's own table.
 * - Both sides pass mf_device/mf_call/mf_tensor by layout; a library from another build whose
 *   layout differs is refused (MF_CUDA_LAYOUT) rather than trusted.
 * - Where: next to the file that holds the core (dladdr on a core function: libmoonflow.so, core.so
 *   or, for a static link, the executable via /proc/self/exe), then the install libdir compiled in
 *   (MF_CUDA_LIBDIR), then the plain name through the loader's search path (the RUNPATH of
 *   the object holding this code — core.so's points at the build folder —, LD_LIBRARY_PATH,
 *   ld.so.cache).
 * - Missing or failing: CUDA is unavailable, not an error at start-up: the device count is 0, the
 *   knobs do nothing and report 0, and "cuda:N" fails with "the CUDA backend library could not be
 *   loaded: <why>".
 * - CUDA_VISIBLE_DEVICES="" or "-1" (any list whose first entry is empty or negative: the runtime
 *   stops there and sees no GPU) hides every GPU: the library is then not even opened (no cudart,
 *   cuBLAS or cuDNN start-up for nothing), and CUDA is unavailable with "CUDA_VISIBLE_DEVICES='-1'
 *   hides every GPU (the CUDA backend library was not loaded)" as the reason, which `moonflow -v`
 *   prints. The variable is read once, at the first CUDA call, as the runtime does.
 * In a build without the CUDA backend (MOONFLOW_CUDA=OFF, or no nvcc) nothing is loaded and the
 * answers are those of a missing library, with "moonflow was built without the CUDA backend".
 *
 * The library stays loaded until the process ends (never dlclose'd: its devices may hold memory).
 */
#define _GNU_SOURCE /* dladdr1, RTLD_DL_LINKMAP */
#include <dlfcn.h>
#include <limits.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cuda/api.h"

static char why[768]; /* why the library could not be loaded */

/* Whether CUDA_VISIBLE_DEVICES hides every GPU: set, and its first entry (before a ',') empty or
 * negative ("", "-1", " -1,0"). The CUDA runtime stops at the first entry it cannot use, so such a
 * list shows it no GPU at all. */
bool mf_cuda_env_hides_all(void) {
  const char *v = getenv("CUDA_VISIBLE_DEVICES");
  if (!v) return false;
  while (*v == ' ' || *v == '\t') v++;
  return *v == '\0' || *v == ',' || *v == '-';
}

#ifdef MF_HAVE_CUDA

static const mf_cuda_api *backend; /* NULL: not available, see why */

#ifndef MF_CUDA_LIBDIR
#define MF_CUDA_LIBDIR ""
#endif

static mf_status core_failv(mf_status s, const char *fmt, va_list ap) {
  char msg[1024];
  vsnprintf(msg, sizeof msg, fmt, ap);
  return mf_fail(s, "%s", msg);
}

/* The folder of the file that holds this code, with a trailing '/'; "" when unknown. */
static void core_dir(char *dir, size_t n) {
  Dl_info info;
  struct link_map *map = NULL;
  char path[PATH_MAX] = "";
  dir[0] = '\0';
  if (!dladdr1((void *)&mf_cuda_device_count, &info, (void **)&map, RTLD_DL_LINKMAP)) return;
  if (map && map->l_prev == NULL) { /* the main program (a static link): its real path */
    ssize_t k = readlink("/proc/self/exe", path, sizeof path - 1);
    if (k <= 0) return;
    path[k] = '\0';
  } else if (!info.dli_fname || !realpath(info.dli_fname, path)) {
    return;
  }
  char *slash = strrchr(path, '/');
  if (!slash) return;
  slash[1] = '\0';
  snprintf(dir, n, "%s", path);
}

/* dlopen of the candidates in order; the handle, or NULL with the reasons in why. */
static void *open_library(void) {
  char dir[PATH_MAX], cand[3][PATH_MAX + 64];
  int n = 0;
  core_dir(dir, sizeof dir);
  if (dir[0]) snprintf(cand[n++], sizeof cand[0], "%s%s", dir, MF_CUDA_LIBRARY);
  if (MF_CUDA_LIBDIR[0])
    snprintf(cand[n++], sizeof cand[0], "%s/%s", MF_CUDA_LIBDIR, MF_CUDA_LIBRARY);
  snprintf(cand[n++], sizeof cand[0], "%s", MF_CUDA_LIBRARY);
  why[0] = '\0';
  for (int i = 0; i < n; i++) {
    if (strchr(cand[i], '/') && access(cand[i], F_OK) != 0) continue; /* not there: next */
    void *h = dlopen(cand[i], RTLD_NOW | RTLD_LOCAL);
    if (h) return h;
    const char *e = dlerror();
    snprintf(why, sizeof why, "%.700s", e ? e : cand[i]); /* the last failure is the telling one */
    if (strchr(cand[i], '/')) return NULL; /* found but broken: do not load another copy */
  }
  size_t k = strlen(why); /* not found anywhere: say where it was looked for */
  snprintf(why + k, sizeof why - k, " (looked in %.200s, %.200s and the library path)",
           dir[0] ? dir : "?", MF_CUDA_LIBDIR[0] ? MF_CUDA_LIBDIR : "?");
  return NULL;
}

static void load(void) {
  static const mf_cuda_core core = {
      MF_CUDA_LAYOUT,   core_failv, mf_dtype_size, mf_dtype_name, mf_dtype_is_float,  mf_numel,
      mf_is_contiguous, mf_op_name, mf_shape_fmt,  mf_error,      mf_memory_pressure,
  };
  if (mf_cuda_env_hides_all()) {
    snprintf(why, sizeof why,
             "CUDA_VISIBLE_DEVICES='%.64s' hides every GPU (the CUDA backend library was not "
             "loaded)",
             getenv("CUDA_VISIBLE_DEVICES"));
    return;
  }
  void *h = open_library();
  if (!h) return;
  mf_cuda_open_fn entry = (mf_cuda_open_fn)(uintptr_t)dlsym(h, MF_CUDA_ENTRY);
  if (!entry) {
    snprintf(why, sizeof why, "%.700s", dlerror());
    return;
  }
  backend = entry(&core);
  if (!backend)
    snprintf(why, sizeof why,
             "%s was built for another version of moonflow (its structures differ)",
             MF_CUDA_LIBRARY);
}

/* The backend, loading it the first time; NULL when it is not available (the reason in why). */
static const mf_cuda_api *cuda(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, load);
  return backend;
}

#else /* no CUDA backend in this build */

static const mf_cuda_api *cuda(void) { return NULL; }

#endif

static mf_status unavailable(const char *what) {
#ifndef MF_HAVE_CUDA
  return mf_fail(MF_ERR_DEVICE, "%s: moonflow was built without the CUDA backend", what);
#endif
  if (strncmp(why, "CUDA_VISIBLE_DEVICES", 20) == 0) /* not loaded on purpose: why says so */
    return mf_fail(MF_ERR_DEVICE, "%s: %s", what, why);
  return mf_fail(MF_ERR_DEVICE, "%s: the CUDA backend library could not be loaded: %s", what, why);
}

/* "cuda:device" unavailable: the backend is not there */
static mf_status no_gpu(int device) {
  char what[32];
  snprintf(what, sizeof what, "cuda:%d", device);
  return unavailable(what);
}

/* ---- what the core and moonflow.h offer ---------------------------------------------------------
 */

mf_status mf_cuda_device(int index, mf_device **out) {
  *out = NULL;
  const mf_cuda_api *c = cuda();
  return c ? c->device(index, out) : no_gpu(index);
}

int mf_cuda_device_count(void) {
  const mf_cuda_api *c = cuda();
  return c ? c->device_count() : 0;
}

mf_status mf_cuda_set_memory_fraction(int device, double fraction) {
  if (!(fraction > 0 && fraction <= 1))
    return mf_fail(MF_ERR_ARG, "cuda: memory fraction %g is not in (0, 1]", fraction);
  const mf_cuda_api *c = cuda();
  return c ? c->set_memory_fraction(device, fraction) : MF_OK;
}

mf_status mf_cuda_reserve_memory(int device, size_t *bytes) {
  *bytes = 0;
  if (device < -1)
    return mf_fail(MF_ERR_ARG,
                   "cuda: reserve_memory: bad GPU index %d (expected 0, 1, ... or -1 "
                   "for every GPU)",
                   device);
  const mf_cuda_api *c = cuda();
  if (c) return c->reserve_memory(device, bytes);
  if (device == -1) return MF_OK; /* no GPU: nothing to reserve */
  return no_gpu(device);
}

size_t mf_cuda_memory_allocated(int device) {
  const mf_cuda_api *c = cuda();
  return c ? c->memory_allocated(device) : 0;
}

size_t mf_cuda_max_memory_allocated(int device) {
  const mf_cuda_api *c = cuda();
  return c ? c->max_memory_allocated(device) : 0;
}

size_t mf_cuda_memory_reserved(int device) {
  const mf_cuda_api *c = cuda();
  return c ? c->memory_reserved(device) : 0;
}

void mf_cuda_empty_cache(void) {
  const mf_cuda_api *c = cuda();
  if (c) c->empty_cache();
}

void mf_cuda_reset_peak_memory_stats(int device) {
  const mf_cuda_api *c = cuda();
  if (c) c->reset_peak(device);
}

mf_status mf_cuda_mem_get_info(int device, size_t *free_bytes, size_t *total_bytes) {
  *free_bytes = *total_bytes = 0;
  const mf_cuda_api *c = cuda();
  return c ? c->mem_get_info(device, free_bytes, total_bytes) : no_gpu(device);
}

/* Events: only the backend makes them, so the others find it loaded. */
mf_status mf_cuda_event_new(int device, bool timing, mf_cuda_event **out) {
  *out = NULL;
  const mf_cuda_api *c = cuda();
  return c ? c->event_new(device, timing, out) : no_gpu(device);
}

void mf_cuda_event_free(mf_cuda_event *ev) {
  if (ev) cuda()->event_free(ev);
}

mf_status mf_cuda_event_record(mf_cuda_event *ev) { return cuda()->event_record(ev); }

mf_status mf_cuda_event_query(mf_cuda_event *ev, bool *done) {
  return cuda()->event_query(ev, done);
}

mf_status mf_cuda_event_synchronize(mf_cuda_event *ev) { return cuda()->event_synchronize(ev); }

mf_status mf_cuda_event_elapsed_time(mf_cuda_event *start, mf_cuda_event *end, double *ms) {
  return cuda()->event_elapsed(start, end, ms);
}

bool mf_cuda_set_tf32(bool on) {
  const mf_cuda_api *c = cuda();
  return c ? c->set_tf32(on) : true;
}

mf_status mf_cuda_profile(bool on) {
  const mf_cuda_api *c = cuda();
  if (on && mf_cuda_device_count() == 0) { /* nothing to profile: say why there is no GPU */
    char why[1024];
    mf_cuda_unavailable(0, why, sizeof why);
    return mf_fail(MF_ERR_DEVICE, "cuda: profile: %s", why);
  }
  return c ? c->profile(on) : MF_OK;
}

mf_status mf_cuda_profile_read(mf_op op, int64_t *calls, double *ms) {
  *calls = 0;
  *ms = 0;
  const mf_cuda_api *c = cuda();
  return c ? c->profile_read((int)op, calls, ms) : MF_OK;
}

mf_status mf_cuda_versions(int *runtime, int *driver, int *cudnn) {
  *runtime = *driver = *cudnn = 0;
  const mf_cuda_api *c = cuda();
  if (!c) return unavailable("cuda");
  c->versions(runtime, driver, cudnn);
  return MF_OK;
}

mf_status mf_cuda_device_info(int device, char *name, size_t name_len, size_t *total_bytes,
                              int *major, int *minor) {
  if (name_len) name[0] = '\0';
  *total_bytes = 0;
  *major = *minor = 0;
  const mf_cuda_api *c = cuda();
  if (!c) return no_gpu(device);
  return c->device_info(device, name, name_len, total_bytes, major, minor);
}
