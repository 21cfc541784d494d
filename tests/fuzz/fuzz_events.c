/* fuzz_events.c — libFuzzer target for the TensorBoard event file reader of the core: the
 * TFRecord framing (mf_tfrecord_next, io/events.c: u64 length, masked CRC-32C of the length, data,
 * masked CRC-32C of the data), walked over the whole input as mf.summary.records does. Each record
 * must lie inside the input and the position must move forward; a bad record must be a clear
 * error, never a crash or undefined behaviour. The fuzzer cannot forge the CRCs by chance, so the
 * corpus holds real event files and the target, from the fuzzer's first input byte, may also
 * re-frame the rest of the input with correct CRCs, which lets mutations reach past the checks. */
#include <stdlib.h>

#include "moonflow_io.h"

static void walk(const unsigned char *data, size_t n) {
  size_t pos = 0;
  while (pos < n) {
    const unsigned char *rec = NULL;
    size_t len = 0, before = pos;
    if (mf_tfrecord_next(data, n, &pos, &rec, &len) != MF_OK) return;
    if (pos <= before || pos > n || rec < data || len > n || rec + len > data + n)
      abort(); /* a record outside the input, or no progress */
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  walk(data, n);
  if (n >= 1 && (data[0] & 1)) {
    /* the rest as one well-framed record, with its last byte (if any) cut off when data[0] & 2:
     * both must be read (the first as one record) or rejected cleanly */
    mf_buf b = {0};
    if (mf_tfrecord_append(&b, data + 1, n - 1) != MF_OK) abort();
    size_t len = b.len - ((data[0] & 2) && b.len ? 1 : 0);
    walk(b.data, len);
    size_t pos = 0;
    const unsigned char *rec;
    size_t rl;
    mf_status s = mf_tfrecord_next(b.data, len, &pos, &rec, &rl);
    if ((s == MF_OK) != (len == b.len) || (s == MF_OK && (rl != n - 1 || pos != b.len))) abort();
    mf_buf_free(&b);
  }
  return 0;
}
