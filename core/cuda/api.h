/* api.h — the interface between the core and the CUDA backend library, libmoonflow_cuda.so, which
 * the core loads on first use (core/cuda_loader.c says how and why). Two tables cross it:
 *
 * - mf_cuda_core: the core functions the backend calls (the error message slot, dtype and shape
 *   helpers). The backend links none of the core, so a process has one core whatever way it was
 *   linked; core/cuda/imports.c turns the table back into the plain mf_* calls the .cu files make.
 * - mf_cuda_api: what the backend offers (its devices, the mf_cuda_* knobs, versions), returned by
 *   the library's one exported function, MF_CUDA_ENTRY.
 *
 * Both sides share mf_device, mf_call and mf_tensor by layout, so the core also passes the layout
 * it was compiled with, and the backend refuses a core that differs (a library left over from
 * another build). Bump MF_CUDA_ABI_VERSION whenever either table changes.
 */
#ifndef MF_CUDA_API_H
#define MF_CUDA_API_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "internal.h"
#ifdef __cplusplus
}
#endif

#define MF_CUDA_ABI_VERSION 8
#define MF_CUDA_LIBRARY "libmoonflow_cuda.so"
#define MF_CUDA_ENTRY "mf_cuda_open"
/* what both sides compare: the ABI version, then the sizes of the structs they share */
#define MF_CUDA_LAYOUT                                                                             \
  {                                                                                                \
    MF_CUDA_ABI_VERSION, (unsigned)sizeof(mf_device), (unsigned)sizeof(mf_call),                   \
        (unsigned)sizeof(mf_tensor), (unsigned)sizeof(mf_storage), (unsigned)MF_OP_COUNT           \
  }
#define MF_CUDA_LAYOUT_N 6

#ifdef __cplusplus
extern "C" {
#endif

/* The core functions the backend uses (the loader fills it). */
typedef struct mf_cuda_core {
  unsigned layout[MF_CUDA_LAYOUT_N]; /* MF_CUDA_LAYOUT; first, so any version can read it */
  mf_status (*failv)(mf_status s, const char *fmt, va_list ap); /* mf_fail */
  size_t (*dtype_size)(mf_dtype t);
  const char *(*dtype_name)(mf_dtype t);
  bool (*dtype_is_float)(mf_dtype t);
  int64_t (*numel)(const mf_tensor *t);
  bool (*is_contiguous)(const mf_tensor *t);
  const char *(*op_name)(mf_op op);
  const char *(*shape_fmt)(int ndim, const int64_t *shape, char *buf, size_t n);
  const char *(*error)(void);    /* mf_error: the message of this thread's last failure */
  void (*memory_pressure)(void); /* mf_memory_pressure */
} mf_cuda_core;

/* What the backend offers; the knobs are those of moonflow.h. */
typedef struct mf_cuda_api {
  int (*device_count)(void);
  mf_status (*device)(int index, mf_device **out); /* "cuda:index", made on first use */
  mf_status (*set_memory_fraction)(int device, double fraction);
  /* allow_growth = false: reserve the fraction's memory up front (-1: every GPU); the bytes */
  mf_status (*reserve_memory)(int device, size_t *bytes);
  size_t (*memory_allocated)(int device);
  size_t (*max_memory_allocated)(int device);
  size_t (*memory_reserved)(int device);
  void (*empty_cache)(void);
  bool (*set_tf32)(bool on);
  /* runtime and driver as 1000 major + 10 minor (driver 0: none), cuDNN as cudnnGetVersion()
   * (0: built without cuDNN) */
  void (*versions)(int *runtime, int *driver, int *cudnn);
  mf_status (*device_info)(int device, char *name, size_t name_len, size_t *total_bytes, int *major,
                           int *minor);
  mf_status (*profile)(bool on);                                 /* mf_cuda_profile */
  mf_status (*profile_read)(int op, int64_t *calls, double *ms); /* mf_cuda_profile_read */
  void (*reset_peak)(int device);
  mf_status (*mem_get_info)(int device, size_t *free_bytes, size_t *total_bytes);
  /* mf_cuda_event_* (event.cu) */
  mf_status (*event_new)(int device, bool timing, mf_cuda_event **out);
  void (*event_free)(mf_cuda_event *ev);
  mf_status (*event_record)(mf_cuda_event *ev);
  mf_status (*event_query)(mf_cuda_event *ev, bool *done);
  mf_status (*event_synchronize)(mf_cuda_event *ev);
  mf_status (*event_elapsed)(mf_cuda_event *start, mf_cuda_event *end, double *ms);
} mf_cuda_api;

/* The library's entry point: the backend's table, or NULL with the message set (a core of another
 * layout). Called once, before anything else of the library. */
typedef const mf_cuda_api *(*mf_cuda_open_fn)(const mf_cuda_core *core);

/* cuda_loader.c: the device for "cuda:index", loading the backend on first use; device.c calls it
 * for mf_device_get. */
mf_status mf_cuda_device(int index, mf_device **out);
/* cuda_loader.c: whether CUDA_VISIBLE_DEVICES hides every GPU ("", "-1": the library is then not
 * loaded at all); device.c words why_unavailable with it. */
bool mf_cuda_env_hides_all(void);

#ifdef __cplusplus
}
#endif

#endif
