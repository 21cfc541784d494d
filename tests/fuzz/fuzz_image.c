/* fuzz_image.c — libFuzzer target for image decoding (io/image.c: PNG, JPEG, BMP, GIF, TGA through
 * stb_image, behind moonflow's own checks): the input is a whole file, decoded by mf_image_decode
 * (mf_image_load reads the file and takes the same path). A decoded image is decoded again with a
 * channel count taken from the input's last byte, and must have the same height and width. Any
 * input must give MF_OK or a clear error, never a crash, a leak or undefined behaviour. */
#include <stdlib.h>

#include "moonflow_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  mf_tensor *t = NULL;
  if (mf_image_decode(data, n, 0, &t) != MF_OK) return 0;
  int64_t h = t->shape[0], w = t->shape[1];
  mf_release(t); /* before the second decode: one image in memory at a time */
  mf_tensor *u = NULL;
  int channels = 1 + data[n - 1] % 4;
  if (mf_image_decode(data, n, channels, &u) != MF_OK || u->ndim != 3 || u->shape[0] != h ||
      u->shape[1] != w || u->shape[2] != channels)
    abort(); /* the same bytes must decode again, to the requested channels */
  mf_release(u);
  return 0;
}
