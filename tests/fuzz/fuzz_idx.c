/* fuzz_idx.c — libFuzzer target for the IDX reader (io/idx.c), raw and gzip-compressed. The reader
 * takes a path (it reads through zlib's gzdopen, which needs a file descriptor), so each input is
 * written to an anonymous in-memory file (memfd_create) and read as /proc/self/fd/<fd>: the same
 * code path as any file on disk, with no files left behind. Any input must give MF_OK or a clear
 * error, never a crash, a leak or undefined behaviour. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "moonflow_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  static int fd = -1;
  static char path[64];
  if (fd < 0) {
    fd = memfd_create("fuzz_idx", MFD_CLOEXEC);
    if (fd < 0) {
      perror("fuzz_idx: memfd_create");
      abort();
    }
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  }
  if (ftruncate(fd, 0) != 0 || (n && pwrite(fd, data, n, 0) != (ssize_t)n)) {
    perror("fuzz_idx: writing the input");
    abort();
  }
  mf_tensor *t = NULL;
  if (mf_read_idx(path, &t) == MF_OK) mf_release(t);
  return 0;
}
