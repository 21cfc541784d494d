/* fuzz_npy.c — libFuzzer target for the .npy reader (io/npy.c): the input is a whole file, read
 * through mf_load_npy_from_memory (the code path mf_load_npy takes after mapping the file). Any
 * input must give MF_OK or a clear error, never a crash, a leak or undefined behaviour. */
#include "moonflow_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  mf_tensor *t = NULL;
  if (mf_load_npy_from_memory("fuzz.npy", data, n, &t) == MF_OK) mf_release(t);
  return 0;
}
