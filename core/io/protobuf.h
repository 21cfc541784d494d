/* protobuf.h — a small Protocol Buffers encoder over mf_buf for the core's writers (TensorBoard
 * events now, ONNX later): varints, keys, length-delimited fields, fixed32/fixed64, and nested
 * messages. FORMATS.md "Protobuf wire format".
 *
 * The functions append to a buffer and remember the first failure in pb->status (out of memory),
 * so an encoder writes its fields one after another and checks the status once at the end:
 *
 *   pb_writer pb = {0};
 *   pb_double(&pb, 1, wall_time);
 *   size_t m = pb_begin(&pb, 5);     // a sub-message: field 5, length patched by pb_end
 *   pb_string(&pb, 1, "loss");
 *   pb_end(&pb, m);
 *   if (pb.status != MF_OK) ...       // pb.buf holds the message otherwise
 *
 * Negative int32/int64 varints are sign-extended to 64 bits (10 bytes), as protobuf does.
 */
#ifndef MF_PROTOBUF_H
#define MF_PROTOBUF_H

#include <string.h>

#include "moonflow_io.h"

enum { PB_VARINT = 0, PB_FIXED64 = 1, PB_BYTES = 2, PB_FIXED32 = 5 };

typedef struct pb_writer {
  mf_buf buf;
  mf_status status; /* MF_OK, or the first failure */
} pb_writer;

static inline void pb_raw(pb_writer *pb, const void *p, size_t n) {
  if (pb->status == MF_OK) pb->status = mf_buf_append(&pb->buf, p, n);
}

/* Writes v as a varint into out[10]; returns its length. */
static inline size_t pb_varint_bytes(uint64_t v, unsigned char *out) {
  size_t n = 0;
  while (v >= 0x80) {
    out[n++] = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  out[n++] = (unsigned char)v;
  return n;
}

static inline void pb_varint(pb_writer *pb, uint64_t v) {
  unsigned char b[10];
  pb_raw(pb, b, pb_varint_bytes(v, b));
}

static inline void pb_key(pb_writer *pb, int field, int wire) {
  pb_varint(pb, (uint64_t)field << 3 | (uint64_t)wire);
}

/* int32, int64, uint64, bool and enum fields (negative values take 10 bytes). */
static inline void pb_int(pb_writer *pb, int field, int64_t v) {
  pb_key(pb, field, PB_VARINT);
  pb_varint(pb, (uint64_t)v);
}

static inline void pb_fixed32(pb_writer *pb, uint32_t v) {
  unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                        (unsigned char)(v >> 24)};
  pb_raw(pb, b, 4);
}

static inline void pb_fixed64(pb_writer *pb, uint64_t v) {
  pb_fixed32(pb, (uint32_t)v);
  pb_fixed32(pb, (uint32_t)(v >> 32));
}

static inline void pb_float(pb_writer *pb, int field, float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  pb_key(pb, field, PB_FIXED32);
  pb_fixed32(pb, u);
}

static inline void pb_double(pb_writer *pb, int field, double v) {
  uint64_t u;
  memcpy(&u, &v, 8);
  pb_key(pb, field, PB_FIXED64);
  pb_fixed64(pb, u);
}

/* A length-delimited field: bytes, string or an already encoded message. */
static inline void pb_bytes(pb_writer *pb, int field, const void *p, size_t n) {
  pb_key(pb, field, PB_BYTES);
  pb_varint(pb, n);
  pb_raw(pb, p, n);
}

static inline void pb_string(pb_writer *pb, int field, const char *s) {
  pb_bytes(pb, field, s, strlen(s));
}

/* Packed repeated doubles (one length-delimited field of n fixed64s). */
static inline void pb_packed_doubles(pb_writer *pb, int field, const double *v, size_t n) {
  pb_key(pb, field, PB_BYTES);
  pb_varint(pb, (uint64_t)n * 8);
  for (size_t i = 0; i < n; i++) {
    uint64_t u;
    memcpy(&u, &v[i], 8);
    pb_fixed64(pb, u);
  }
}

/* Starts a sub-message: writes its key and reserves a 5-byte length (enough for 4 GiB), which
 * pb_end fills in. Returns the position to hand to pb_end. */
static inline size_t pb_begin(pb_writer *pb, int field) {
  pb_key(pb, field, PB_BYTES);
  size_t at = pb->buf.len;
  static const unsigned char five[5] = {0};
  pb_raw(pb, five, 5);
  return at;
}

/* Ends the sub-message begun at `at`: the reserved length is rewritten as the shortest varint
 * and the body moved down over the spare bytes. */
static inline void pb_end(pb_writer *pb, size_t at) {
  if (pb->status != MF_OK) return;
  size_t body = at + 5, n = pb->buf.len - body;
  if (n > 0xFFFFFFFFu) {
    pb->status = mf_fail(MF_ERR_ARG, "protobuf: a sub-message of %zu bytes is over 4 GiB", n);
    return;
  }
  unsigned char b[10];
  size_t k = pb_varint_bytes(n, b);
  memcpy(pb->buf.data + at, b, k);
  memmove(pb->buf.data + at + k, pb->buf.data + body, n);
  pb->buf.len = at + k + n;
}

#endif
