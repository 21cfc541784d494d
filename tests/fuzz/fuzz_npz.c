/* fuzz_npz.c — libFuzzer target for the .npz reader (io/npy.c: ZIP central directory, zip64
 * records, stored and deflated members, CRC-32, then each member's .npy): the input is a whole
 * file, read through mf_load_npz_from_memory (the code path mf_load_npz takes after mapping the
 * file). Any input must give MF_OK or a clear error, never a crash, a leak or undefined behaviour.
 * When it loads, the last member is read again by name and must come back the same. */
#include <stdlib.h>
#include <string.h>

#include "moonflow_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  mf_tensor_list all;
  if (mf_load_npz_from_memory("fuzz.npz", data, n, 0, NULL, &all) != MF_OK) return 0;
  if (all.n > 0) {
    int last = all.n - 1;
    const char *sel[1] = {all.names[last]};
    mf_tensor_list one;
    if (mf_load_npz_from_memory("fuzz.npz", data, n, 1, sel, &one) != MF_OK || one.n != 1 ||
        strcmp(one.names[0], sel[0]) != 0 ||
        mf_numel(one.tensors[0]) != mf_numel(all.tensors[last]) ||
        memcmp(mf_data(one.tensors[0]), mf_data(all.tensors[last]),
               (size_t)mf_numel(all.tensors[last]) * mf_dtype_size(all.tensors[last]->dtype)) != 0)
      abort(); /* the same archive read twice must give the same tensor */
    mf_tensor_list_free(&one);
  }
  mf_tensor_list_free(&all);
  return 0;
}
