/* nocuda.c — the CUDA knobs of moonflow.h for a build without the CUDA backend (CMake compiles
 * this file instead of the .cu files of core/cuda): nothing to set, nothing allocated. */
#include "internal.h"

mf_status mf_cuda_set_memory_fraction(int device, double fraction) {
  if (!(fraction > 0 && fraction <= 1))
    return mf_fail(MF_ERR_ARG, "cuda: memory fraction %g is not in (0, 1]", fraction);
  (void)device;
  return MF_OK;
}
size_t mf_cuda_memory_allocated(int device) {
  (void)device;
  return 0;
}
size_t mf_cuda_max_memory_allocated(int device) {
  (void)device;
  return 0;
}
size_t mf_cuda_memory_reserved(int device) {
  (void)device;
  return 0;
}
void mf_cuda_empty_cache(void) {}
bool mf_cuda_set_tf32(bool on) {
  (void)on;
  return true;
}
