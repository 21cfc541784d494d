/* imports.c — the core functions the CUDA backend calls, as the plain mf_* functions its .cu files
 * use, each forwarding through the table the core passed to mf_cuda_open (api.h). The library is
 * compiled with hidden visibility, so these names stay inside it: the process keeps one core (one
 * error message slot), whichever way that core was linked. A .cu file that starts using another
 * core function fails the library's link (-Wl,--no-undefined) until it is added to the table. */
#include <stdarg.h>

#include "cuda/api.h"

const mf_cuda_core *mf_cuda_imports; /* set by mf_cuda_open (device.cu) */

mf_status mf_fail(mf_status s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  s = mf_cuda_imports->failv(s, fmt, ap);
  va_end(ap);
  return s;
}
size_t mf_dtype_size(mf_dtype t) { return mf_cuda_imports->dtype_size(t); }
const char *mf_dtype_name(mf_dtype t) { return mf_cuda_imports->dtype_name(t); }
bool mf_dtype_is_float(mf_dtype t) { return mf_cuda_imports->dtype_is_float(t); }
int64_t mf_numel(const mf_tensor *t) { return mf_cuda_imports->numel(t); }
bool mf_is_contiguous(const mf_tensor *t) { return mf_cuda_imports->is_contiguous(t); }
const char *mf_op_name(mf_op op) { return mf_cuda_imports->op_name(op); }
const char *mf_shape_fmt(int ndim, const int64_t *shape, char *buf, size_t n) {
  return mf_cuda_imports->shape_fmt(ndim, shape, buf, n);
}
const char *mf_error(void) { return mf_cuda_imports->error(); }
void mf_memory_pressure(void) { mf_cuda_imports->memory_pressure(); }
