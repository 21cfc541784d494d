/* fuzz_safetensors.c — libFuzzer target for the safetensors reader (io/safetensors.c): the input is
 * a whole file, read through mf_load_safetensors_from_memory (the code path mf_load_safetensors
 * takes after mapping the file). Any input must give MF_OK or a clear error, never a crash, a leak
 * or undefined behaviour. When it loads, the first tensor is read again by name and must come
 * back the same (the selection path). */
#include <stdlib.h>
#include <string.h>

#include "moonflow_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  mf_tensor_list all;
  if (mf_load_safetensors_from_memory("fuzz.safetensors", data, n, 0, NULL, &all) != MF_OK)
    return 0;
  if (all.n > 0) {
    const char *sel[1] = {all.names[0]};
    mf_tensor_list one;
    if (mf_load_safetensors_from_memory("fuzz.safetensors", data, n, 1, sel, &one) != MF_OK ||
        one.n != 1 || strcmp(one.names[0], sel[0]) != 0 ||
        mf_numel(one.tensors[0]) != mf_numel(all.tensors[0]) ||
        memcmp(mf_data(one.tensors[0]), mf_data(all.tensors[0]),
               (size_t)mf_numel(all.tensors[0]) * mf_dtype_size(all.tensors[0]->dtype)) != 0)
      abort(); /* the same file read twice must give the same tensor */
    mf_tensor_list_free(&one);
  }
  mf_tensor_list_free(&all);
  return 0;
}
