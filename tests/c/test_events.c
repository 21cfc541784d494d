/* test_events.c — TensorBoard event files and images: CRC-32C test vectors, the protobuf encoder
 * (varints, keys, sub-messages), the two worked records of FORMATS.md reproduced byte for byte,
 * histogram buckets, the writer (file name, records read back with their CRCs, errors), and PNG /
 * JPEG round trips through stb. Files live in a fresh temporary folder. */
#define _GNU_SOURCE
#include <dirent.h>
#include <float.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../core/io/protobuf.h"
#include "moonflow_io.h"
#include "test.h"

static char dir[64];

static bool bytes_eq(const mf_buf *b, const unsigned char *want, size_t n) {
  if (b->len != n) {
    fprintf(stderr, "  length %zu, expected %zu\n", b->len, n);
    return false;
  }
  for (size_t i = 0; i < n; i++)
    if (b->data[i] != want[i]) {
      fprintf(stderr, "  byte %zu is %02x, expected %02x\n", i, b->data[i], want[i]);
      return false;
    }
  return true;
}

/* ---- CRC-32C ----------------------------------------------------------------------------------
 */

static void test_crc32c(void) {
  CHECK(mf_crc32c("123456789", 9) == 0xE3069283u);
  CHECK(mf_crc32c("", 0) == 0);
  unsigned char zeros[32] = {0}, ones[32], inc[32];
  memset(ones, 0xFF, 32);
  for (int i = 0; i < 32; i++) inc[i] = (unsigned char)i;
  /* RFC 3720 (iSCSI) B.4 vectors */
  CHECK(mf_crc32c(zeros, 32) == 0x8A9136AAu);
  CHECK(mf_crc32c(ones, 32) == 0x62A8AB43u);
  CHECK(mf_crc32c(inc, 32) == 0x46DD794Eu);
  /* incremental = one shot, at every split */
  bool same = true;
  for (size_t k = 0; k <= 32; k++)
    same &= mf_crc32c_update(mf_crc32c_update(0, inc, k), inc + k, 32 - k) == 0x46DD794Eu;
  CHECK(same);
  uint32_t c = 0xE3069283u;
  CHECK(mf_crc32c_mask(c) == (uint32_t)(((c >> 15) | (c << 17)) + 0xA282EAD8u));
}

/* ---- protobuf ---------------------------------------------------------------------------------
 */

static void test_protobuf(void) {
  pb_writer pb = {0};
  pb_varint(&pb, 1);
  pb_varint(&pb, 300);
  CHECK(bytes_eq(&pb.buf, (const unsigned char[]){0x01, 0xAC, 0x02}, 3));
  pb.buf.len = 0;
  pb_int(&pb, 2, -1);
  CHECK(bytes_eq(
      &pb.buf,
      (const unsigned char[]){0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01},
      11));
  pb.buf.len = 0;
  pb_key(&pb, 20, PB_VARINT);
  CHECK(bytes_eq(&pb.buf, (const unsigned char[]){0xA0, 0x01}, 2));
  pb.buf.len = 0;
  pb_float(&pb, 2, 0.5f);
  CHECK(bytes_eq(&pb.buf, (const unsigned char[]){0x15, 0x00, 0x00, 0x00, 0x3F}, 5));
  /* a sub-message over 127 bytes takes a 2-byte length */
  pb.buf.len = 0;
  size_t m = pb_begin(&pb, 5);
  char s[200];
  memset(s, 'x', sizeof s);
  pb_bytes(&pb, 1, s, sizeof s);
  pb_end(&pb, m);
  CHECK(pb.status == MF_OK && pb.buf.len == 1 + 2 + 1 + 2 + 200);
  CHECK(pb.buf.data[0] == 0x2A && pb.buf.data[1] == 0xCB && pb.buf.data[2] == 0x01);
  mf_buf_free(&pb.buf);
}

/* ---- FORMATS.md's two records ---------------------------------------------------------------- */

static void test_worked_examples(void) {
  static const unsigned char first[] = {0x18, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa3, 0x7f,
                                        0x4b, 0x22, 0x09, 0x00, 0x00, 0x00, 0x40, 0xfc, 0x54, 0xd9,
                                        0x41, 0x1a, 0x0d, 0x62, 0x72, 0x61, 0x69, 0x6e, 0x2e, 0x45,
                                        0x76, 0x65, 0x6e, 0x74, 0x3a, 0x32, 0xec, 0xed, 0x8f, 0x9d};
  static const unsigned char second[] = {
      0x1a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x12, 0x9b, 0xd8, 0x2d, 0x09, 0x00,
      0x00, 0x40, 0x40, 0xfc, 0x54, 0xd9, 0x41, 0x10, 0x01, 0x2a, 0x0d, 0x0a, 0x0b, 0x0a,
      0x04, 0x6c, 0x6f, 0x73, 0x73, 0x15, 0x00, 0x00, 0x00, 0x3f, 0x97, 0xd6, 0x74, 0x04};
  mf_buf ev = {0}, rec = {0}, sum = {0};
  CHECK_OK(mf_event_encode(&ev, 1700000000.0, 0, MF_EVENT_FILE_VERSION, "brain.Event:2", 13));
  CHECK_OK(mf_tfrecord_append(&rec, ev.data, ev.len));
  CHECK(bytes_eq(&rec, first, sizeof first));
  ev.len = rec.len = 0;
  CHECK_OK(mf_summary_add_scalar(&sum, "loss", 0.5f));
  CHECK_OK(mf_event_encode(&ev, 1700000001.0, 1, MF_EVENT_SUMMARY, sum.data, sum.len));
  CHECK_OK(mf_tfrecord_append(&rec, ev.data, ev.len));
  CHECK(bytes_eq(&rec, second, sizeof second));
  /* and they parse back */
  size_t pos = 0, n;
  const unsigned char *p;
  CHECK_OK(mf_tfrecord_next(rec.data, rec.len, &pos, &p, &n));
  CHECK(pos == rec.len && n == ev.len && memcmp(p, ev.data, n) == 0);
  pos = 0;
  CHECK_FAILS(mf_tfrecord_next(rec.data, rec.len - 1, &pos, &p, &n), MF_ERR_IO, "truncated");
  rec.data[20] ^= 1;
  pos = 0;
  CHECK_FAILS(mf_tfrecord_next(rec.data, rec.len, &pos, &p, &n), MF_ERR_IO, "data CRC");
  rec.data[2] ^= 1;
  pos = 0;
  CHECK_FAILS(mf_tfrecord_next(rec.data, rec.len, &pos, &p, &n), MF_ERR_IO, "length CRC");
  /* a 0 scalar is still written (a set oneof member) */
  sum.len = 0;
  CHECK_OK(mf_summary_add_scalar(&sum, "z", 0.0f));
  CHECK(sum.len == 10 && sum.data[5] == 0x15);
  mf_buf_free(&ev), mf_buf_free(&rec), mf_buf_free(&sum);
}

/* ---- histograms --------------------------------------------------------------------------- */

/* Reads a double at p (LE). */
static double rd_double(const unsigned char *p) {
  double d;
  memcpy(&d, p, 8);
  return d;
}

static void test_histogram(void) {
  int nl;
  const double *lim = mf_histogram_default_limits(&nl);
  CHECK(lim != NULL && nl == 1551); /* 774 each side, 0, +-DBL_MAX */
  if (!lim) return;
  CHECK(lim[0] == -DBL_MAX && lim[nl - 1] == DBL_MAX && lim[nl / 2] == 0.0);
  CHECK(lim[nl / 2 + 1] == 1e-12 && lim[nl / 2 - 1] == -1e-12);
  CHECK_CLOSE(lim[nl / 2 + 2], 1.1e-12, 0, 1e-15);
  CHECK(lim[nl - 2] < 1e20 && lim[nl - 2] * 1.1 >= 1e20);
  bool ascending = true;
  for (int i = 1; i < nl; i++) ascending &= lim[i - 1] < lim[i];
  CHECK(ascending);

  /* values 0, 1, 1, 2, -3: buckets (limit[i-1], limit[i]] with empty runs merged */
  double v[] = {0, 1, 1, 2, -3, NAN};
  mf_buf s = {0};
  CHECK_OK(mf_summary_add_histogram(&s, "h", v, 6));
  /* Value: 0a len | 0a 01 'h' | 2a len histo */
  const unsigned char *p = s.data;
  size_t i = 0;
  CHECK(p[i++] == 0x0A);
  while (p[i++] & 0x80) {}
  CHECK(p[i] == 0x0A && p[i + 1] == 1 && p[i + 2] == 'h');
  i += 3;
  CHECK(p[i++] == 0x2A);
  while (p[i++] & 0x80) {}
  CHECK(p[i] == 0x09 && rd_double(p + i + 1) == -3);       /* min */
  CHECK(p[i + 9] == 0x11 && rd_double(p + i + 10) == 2);   /* max */
  CHECK(p[i + 18] == 0x19 && rd_double(p + i + 19) == 5);  /* num (NaN left out) */
  CHECK(p[i + 27] == 0x21 && rd_double(p + i + 28) == 1);  /* sum */
  CHECK(p[i + 36] == 0x29 && rd_double(p + i + 37) == 15); /* sum of squares */
  CHECK(p[i + 45] == 0x32);                                /* bucket_limit follows */
  mf_buf_free(&s);

  /* check the bucket assignment through the encoder's pieces: counts sum to num, and each value's
   * bucket limit is the first >= it */
  double vals[] = {0.0, 1.0, 1e-12, -1e-12, 5e30, -INFINITY};
  mf_buf h = {0};
  CHECK_OK(mf_summary_add_histogram(&h, "t", vals, 6));
  /* find field 6 and 7 */
  const unsigned char *q = h.data;
  size_t at = 0, nb6 = 0, nb7 = 0;
  const unsigned char *l6 = NULL, *c7 = NULL;
  for (size_t k = 0; k + 1 < h.len; k++) {
    if (q[k] == 0x32 && !l6 && k > 10) {
      size_t L = 0, j = k + 1;
      for (int sh = 0;; sh += 7) {
        L |= (size_t)(q[j] & 0x7F) << sh;
        if (!(q[j++] & 0x80)) break;
      }
      if (L % 8 == 0 && j + L < h.len && q[j + L] == 0x3A) {
        l6 = q + j, nb6 = L / 8;
        size_t L7 = 0, j7 = j + L + 1;
        for (int sh = 0;; sh += 7) {
          L7 |= (size_t)(q[j7] & 0x7F) << sh;
          if (!(q[j7++] & 0x80)) break;
        }
        c7 = q + j7, nb7 = L7 / 8, at = j7 + L7;
      }
    }
  }
  CHECK(l6 && c7 && nb6 == nb7 && at == h.len);
  if (l6 && c7) {
    double total = 0;
    bool has[6] = {0};
    for (size_t k = 0; k < nb6; k++) {
      double lim_k = rd_double(l6 + 8 * k), c = rd_double(c7 + 8 * k);
      total += c;
      if (c > 0) {
        if (lim_k == 0.0) has[0] = true;
        if (lim_k == 1e-12) has[2] = true;
        if (lim_k == -1e-12) has[3] = true;
        if (lim_k == DBL_MAX) has[4] = true;
        if (lim_k == -DBL_MAX) has[5] = true;
        if (lim_k >= 1.0 && lim_k < 1.1) has[1] = true;
      }
    }
    CHECK(total == 6);
    CHECK(has[0] && has[1] && has[2] && has[3] && has[4] && has[5]);
    /* empty runs are merged: far fewer entries than limits */
    CHECK(nb6 <= 13);
  }
  mf_buf_free(&h);
  CHECK_FAILS(mf_summary_add_histogram(&h, NULL, vals, 1), MF_ERR_ARG, "tag");
}

/* ---- the writer --------------------------------------------------------------------------------
 */

static long slurp_all(const char *path, unsigned char **out) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  *out = malloc(n ? (size_t)n : 1);
  if (fread(*out, 1, (size_t)n, f) != (size_t)n) n = -1;
  fclose(f);
  return n;
}

static void test_writer(void) {
  char logdir[128];
  snprintf(logdir, sizeof logdir, "%s/runs/a/b", dir);
  mf_event_writer *w = NULL;
  CHECK_OK(mf_event_writer_open(logdir, &w));
  if (!w) return;
  char path[256];
  snprintf(path, sizeof path, "%s", mf_event_writer_path(w)); /* freed with the writer */
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  const char *base = strrchr(path, '/') + 1;
  CHECK(strncmp(base, "events.out.tfevents.", 20) == 0);
  CHECK(strlen(base) > 31 && base[30] == '.' && strstr(base + 31, host) == base + 31);
  /* the version record is on disk at once */
  unsigned char *data = NULL;
  long n = slurp_all(path, &data);
  CHECK(n == 40);
  free(data);
  mf_buf sum = {0};
  for (int step = 1; step <= 3; step++) {
    sum.len = 0;
    CHECK_OK(mf_summary_add_scalar(&sum, "loss", 1.0f / (float)step));
    CHECK_OK(mf_event_writer_add_summary(w, -1, step, sum.data, sum.len));
  }
  mf_buf_free(&sum);
  CHECK_OK(mf_event_writer_add_graph(w, -1, "\x0a\x03\x0a\x01x", 5));
  CHECK_OK(mf_event_writer_close(w));
  n = slurp_all(path, &data);
  size_t pos = 0, len;
  const unsigned char *rec;
  int records = 0;
  while (n > 0 && pos < (size_t)n && mf_tfrecord_next(data, (size_t)n, &pos, &rec, &len) == MF_OK)
    records++;
  CHECK(records == 5 && pos == (size_t)n);
  free(data);
  /* a second writer in the same second gets a different name */
  mf_event_writer *w2 = NULL, *w3 = NULL;
  CHECK_OK(mf_event_writer_open(logdir, &w2));
  CHECK_OK(mf_event_writer_open(logdir, &w3));
  if (w2 && w3) CHECK(strcmp(mf_event_writer_path(w2), mf_event_writer_path(w3)) != 0);
  mf_event_writer_close(w2);
  mf_event_writer_close(w3);
  /* errors name the path */
  char bad[160];
  snprintf(bad, sizeof bad, "%s/file", dir);
  FILE *f = fopen(bad, "w");
  if (f) fclose(f);
  snprintf(bad, sizeof bad, "%s/file/sub", dir);
  CHECK_FAILS(mf_event_writer_open(bad, &w), MF_ERR_IO, "/file");
  CHECK(w == NULL);
  CHECK_OK(mf_event_writer_close(NULL));
}

/* ---- images -------------------------------------------------------------------------------- */

static void test_images(void) {
  int64_t shape[3] = {5, 7, 3};
  unsigned char px[105];
  for (int i = 0; i < 105; i++) px[i] = (unsigned char)(i * 37 % 251);
  mf_tensor *t = NULL, *back = NULL, *chw = NULL;
  CHECK_OK(mf_from_host(3, shape, MF_U8, px, NULL, &t));
  char p[160];
  snprintf(p, sizeof p, "%s/x.png", dir);
  CHECK_OK(mf_image_save(p, t, 0));
  CHECK_OK(mf_image_load(p, 0, &back));
  if (back) {
    unsigned char got[105];
    CHECK(back->ndim == 3 && back->shape[0] == 5 && back->shape[1] == 7 && back->shape[2] == 3);
    CHECK_OK(mf_to_host(back, MF_U8, got));
    CHECK(memcmp(got, px, 105) == 0);
  }
  mf_release(back);
  back = NULL;
  /* CHW view of the same pixels encodes to the same PNG */
  int perm[3] = {2, 0, 1};
  CHECK_OK(mf_permute(t, perm, &chw));
  mf_buf a = {0}, b = {0};
  int h, w, c;
  CHECK_OK(mf_image_encode_png(t, &a, &h, &w, &c));
  CHECK(h == 5 && w == 7 && c == 3);
  CHECK_OK(mf_image_encode_png(chw, &b, &h, &w, &c));
  CHECK(a.len == b.len && a.len > 8 && memcmp(a.data, b.data, a.len) == 0);
  CHECK(memcmp(a.data, "\x89PNG", 4) == 0);
  /* decode from memory, forced to gray */
  CHECK_OK(mf_image_decode(a.data, a.len, 1, &back));
  CHECK(back && back->shape[2] == 1);
  mf_release(back);
  back = NULL;
  /* JPEG: close, not exact */
  snprintf(p, sizeof p, "%s/x.JPG", dir);
  CHECK_OK(mf_image_save(p, t, 95));
  CHECK_OK(mf_image_load(p, 3, &back));
  CHECK(back && back->shape[0] == 5 && back->shape[1] == 7);
  mf_release(back);
  back = NULL;
  /* resize */
  CHECK_OK(mf_image_resize(t, 10, 14, &back));
  CHECK(back && back->dtype == MF_U8 && back->shape[0] == 10 && back->shape[1] == 14);
  mf_release(back);
  back = NULL;
  CHECK_OK(mf_image_resize(chw, 2, 3, &back));
  CHECK(back && back->shape[0] == 3 && back->shape[1] == 2 && back->shape[2] == 3);
  mf_release(back);
  back = NULL;
  /* errors */
  snprintf(p, sizeof p, "%s/bad.png", dir);
  FILE *f = fopen(p, "wb");
  if (f) {
    fwrite("\x89PNG\r\n\x1a\ngarbage", 1, 15, f);
    fclose(f);
  }
  CHECK_FAILS(mf_image_load(p, 0, &back), MF_ERR_IO, "bad.png");
  CHECK(back == NULL);
  snprintf(p, sizeof p, "%s/missing.png", dir);
  CHECK_FAILS(mf_image_load(p, 0, &back), MF_ERR_IO, "cannot open");
  CHECK_FAILS(mf_image_save("x.gifx", t, 0), MF_ERR_ARG, "unknown image format");
  CHECK_FAILS(mf_image_decode("", 0, 0, &back), MF_ERR_IO, "empty");
  /* every truncation of a valid PNG fails cleanly or decodes; none crashes */
  bool clean = true;
  for (size_t k = 1; k < a.len; k++) {
    mf_status s = mf_image_decode(a.data, k, 0, &back);
    clean &= (s == MF_OK) == (back != NULL);
    mf_release(back);
    back = NULL;
  }
  CHECK(clean);
  /* a JPEG whose Huffman table declares more than 256 codes: stb_image 2.27 overflowed on it */
  snprintf(p, sizeof p, "%s/x.JPG", dir);
  unsigned char jpg[65536];
  FILE *jf = fopen(p, "rb");
  size_t jn = jf ? fread(jpg, 1, sizeof jpg, jf) : 0;
  if (jf) fclose(jf);
  size_t dht = 0;
  for (size_t k = 2; k + 21 < jn && !dht; k++)
    if (jpg[k] == 0xFF && jpg[k + 1] == 0xC4) dht = k;
  CHECK(dht > 0);
  if (dht) {
    /* (found by tests/fuzz/fuzz_image.c) the same, in a table that starts inside its DHT segment
     * and runs past the segment's declared end: stb reads it whole all the same. The segment is
     * the first table of the file's first DHT, then one byte of a second table's header; its
     * sixteen counts of 200 follow the segment, and then the rest of the file. */
    static unsigned char j2[65536 + 64];
    size_t len = (size_t)jpg[dht + 2] << 8 | jpg[dht + 3], c1 = 0, o = dht + 4;
    for (int k = 0; k < 16; k++) c1 += jpg[dht + 5 + k];
    size_t seg = 2 + 17 + c1 + 1;
    memcpy(j2, jpg, dht + 2);
    j2[dht + 2] = (unsigned char)(seg >> 8), j2[dht + 3] = (unsigned char)(seg & 255);
    memcpy(j2 + o, jpg + dht + 4, 17 + c1), o += 17 + c1;
    j2[o++] = 0x01; /* a DC table, number 1 */
    for (int k = 0; k < 16; k++) j2[o++] = 200;
    memcpy(j2 + o, jpg + dht + 2 + len, jn - (dht + 2 + len)), o += jn - (dht + 2 + len);
    CHECK_FAILS(mf_image_decode(j2, o, 0, &back), MF_ERR_IO, "more than 256 codes");
    CHECK(back == NULL);
    for (int k = 0; k < 16; k++) jpg[dht + 5 + k] = 200;
    CHECK_FAILS(mf_image_decode(jpg, jn, 0, &back), MF_ERR_IO, "more than 256 codes");
    CHECK(back == NULL);
    /* (found by fuzz_image) the same after fill bytes FF before the SOI, which stb skips */
    memset(j2, 0xFF, 3);
    memcpy(j2 + 3, jpg, jn);
    CHECK_FAILS(mf_image_decode(j2, jn + 3, 0, &back), MF_ERR_IO, "more than 256 codes");
    CHECK(back == NULL);
  }
  mf_buf_free(&a), mf_buf_free(&b);
  mf_release(chw);
  mf_release(t);
  /* a summary image: float HW */
  int64_t s2[2] = {4, 4};
  float fpx[16];
  for (int i = 0; i < 16; i++) fpx[i] = (float)i / 15.0f;
  CHECK_OK(mf_from_host(2, s2, MF_F32, fpx, NULL, &t));
  mf_buf sum = {0};
  CHECK_OK(mf_summary_add_image(&sum, "img", t));
  CHECK(sum.len > 30 && sum.data[0] == 0x0A);
  mf_buf_free(&sum);
  mf_tensor *u = NULL;
  CHECK_OK(mf_image_to_hwc_u8(t, &u));
  if (u) {
    unsigned char got[16];
    mf_to_host(u, MF_U8, got);
    CHECK(got[0] == 0 && got[15] == 255 && got[5] == 85);
  }
  mf_release(u);
  mf_release(t);
}

static void put32be(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

/* (found by tests/fuzz/fuzz_image.c) small files claiming huge images: stb allocated (and for
 * JPEG and GIF filled and decoded) gigabytes before finding the data short. */
static void test_image_limits(void) {
  mf_tensor *t = NULL, *back = NULL;
  int64_t shape[2] = {2048, 2048};
  CHECK_OK(mf_zeros(2, shape, MF_U8, NULL, &t));
  /* a PNG whose IHDR says 20000x20000: more rows than deflate could fill from the file */
  mf_buf png = {0};
  CHECK_OK(mf_image_encode_png(t, &png, NULL, NULL, NULL));
  CHECK(png.len > 33 && png.len < 65536 && memcmp(png.data + 12, "IHDR", 4) == 0);
  if (png.len > 33) {
    /* the real thing, 4M pixels in a few KB, is fine */
    CHECK_OK(mf_image_decode(png.data, png.len, 0, &back));
    CHECK(back && back->shape[0] == 2048 && back->shape[1] == 2048);
    mf_release(back), back = NULL;
    unsigned char save[8];
    memcpy(save, png.data + 16, 8);
    put32be(png.data + 16, 20000), put32be(png.data + 20, 20000);
    CHECK_FAILS(mf_image_decode(png.data, png.len, 0, &back), MF_ERR_IO,
                "rows need more data than the file can hold");
    memcpy(png.data + 16, save, 8);
    /* an IDAT chunk 2 GB long in a file of a few KB */
    size_t at = 8;
    while (at + 8 <= png.len && memcmp(png.data + at + 4, "IDAT", 4) != 0)
      at += 12 + ((size_t)png.data[at] << 24 | (size_t)png.data[at + 1] << 16 |
                  (size_t)png.data[at + 2] << 8 | png.data[at + 3]);
    CHECK(at + 8 <= png.len);
    if (at + 8 <= png.len) {
      put32be(png.data + at, 0x7FFFFFF0u);
      CHECK_FAILS(mf_image_decode(png.data, png.len, 0, &back), MF_ERR_IO,
                  "an IDAT chunk runs past the end of the file");
    }
  }
  mf_buf_free(&png);
  /* (found by fuzz_image) an empty IDAT chunk first: legal, but stb computed NULL + 0 for it
   * (UBSan); it is dropped from a copy, and the image decodes as without it */
  CHECK_OK(mf_image_encode_png(t, &png, NULL, NULL, NULL));
  size_t idat = 8;
  while (idat + 8 <= png.len && memcmp(png.data + idat + 4, "IDAT", 4) != 0)
    idat += 12 + ((size_t)png.data[idat] << 24 | (size_t)png.data[idat + 1] << 16 |
                  (size_t)png.data[idat + 2] << 8 | png.data[idat + 3]);
  CHECK(idat + 8 <= png.len);
  if (idat + 8 <= png.len) {
    unsigned char *e = malloc(png.len + 12);
    memcpy(e, png.data, idat);
    memcpy(e + idat, "\0\0\0\0IDAT\x35\xaf\x06\x1e", 12); /* with its CRC */
    memcpy(e + idat + 12, png.data + idat, png.len - idat);
    CHECK_OK(mf_image_decode(e, png.len + 12, 0, &back));
    CHECK(back && back->shape[0] == 2048 && back->shape[1] == 2048 && back->shape[2] == 1);
    if (back) {
      const unsigned char *px = mf_data(back);
      bool zeros = true;
      for (int64_t i = 0; i < mf_numel(back); i++) zeros &= px[i] == 0;
      CHECK(zeros);
    }
    mf_release(back), back = NULL;
    free(e);
  }
  mf_buf_free(&png);
  /* a JPEG whose frame header says 20000x20000 */
  char p[160];
  snprintf(p, sizeof p, "%s/big.jpg", dir);
  CHECK_OK(mf_image_save(p, t, 90));
  static unsigned char jpg[1 << 17];
  long n = slurp(p, jpg, sizeof jpg);
  CHECK(n > 0 && n < (long)sizeof jpg);
  CHECK_OK(mf_image_decode(jpg, (size_t)n, 0, &back)); /* 4M pixels in ~50 KB are fine */
  mf_release(back), back = NULL;
  long sof = 0;
  for (long k = 2; k + 9 < n && !sof; k++)
    if (jpg[k] == 0xFF && jpg[k + 1] == 0xC0) sof = k;
  CHECK(sof > 0);
  if (sof) {
    jpg[sof + 5] = 20000 >> 8, jpg[sof + 6] = 20000 & 255; /* height */
    jpg[sof + 7] = 20000 >> 8, jpg[sof + 8] = 20000 & 255; /* width */
    CHECK_FAILS(mf_image_decode(jpg, (size_t)n, 0, &back), MF_ERR_IO,
                "20000x20000 pixels cannot come from");
  }
  /* a GIF of 20000x20000 in 40 bytes */
  static const unsigned char gif[] = {
      'G', 'I',  'F', '8', '9', 'a', 0x20, 0x4E, 0x20, 0x4E, 0x80, 0, 0, 0,    0,    0, 255, 255,
      255, 0x2C, 0,   0,   0,   0,   0x20, 0x4E, 0x20, 0x4E, 0,    2, 2, 0x44, 0x01, 0, 0x3B};
  CHECK_FAILS(mf_image_decode(gif, sizeof gif, 0, &back), MF_ERR_IO,
              "20000x20000 pixels cannot come from 35 bytes");
  CHECK(back == NULL);
  mf_release(t);
}

/* (found by tests/fuzz/fuzz_image.c) a JPEG whose scan uses Huffman tables no DHT defined: stb
 * read them from memory it never wrote, so the same bytes decoded differently depending on what
 * the heap held before. Decoded after leaving the heap full of zeros, then of 0xFF bytes, it must
 * give the same result. The file is in the fuzzer's corpus, found from this file's path. */
static void test_image_deterministic(void) {
  char path[600];
  snprintf(path, sizeof path, "%s", __FILE__);
  char *slash = strrchr(path, '/');
  snprintf(slash ? slash + 1 : path, sizeof path - (size_t)(slash ? slash + 1 - path : 0), "%s",
           "../fuzz/corpus/image/found_undefined_huffman_table.jpg");
  static unsigned char jpg[4096];
  long n = slurp(path, jpg, sizeof jpg);
  CHECK(n > 100);
  if (n <= 100) {
    fprintf(stderr, "  cannot read %s\n", path);
    return;
  }
  mf_status st[2];
  mf_tensor *img[2] = {NULL, NULL};
  for (int k = 0; k < 2; k++) {
    void *junk[48];
    for (int i = 0; i < 48; i++) {
      size_t sz = (size_t)1024 * (size_t)(i + 1);
      junk[i] = malloc(sz);
      if (junk[i]) memset(junk[i], k ? 0xFF : 0x00, sz);
    }
    for (int i = 0; i < 48; i++) free(junk[i]);
    st[k] = mf_image_decode(jpg, (size_t)n, 0, &img[k]);
  }
  CHECK(st[0] == st[1]);
  if (st[0] == MF_OK && st[1] == MF_OK) {
    int64_t m = mf_numel(img[0]);
    CHECK(mf_numel(img[1]) == m && memcmp(mf_data(img[0]), mf_data(img[1]), (size_t)m) == 0);
  }
  mf_release(img[0]);
  mf_release(img[1]);
}

static void rm_rf(const char *path) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", path);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/mf_test_events.XXXXXX");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  test_crc32c();
  test_protobuf();
  test_worked_examples();
  test_histogram();
  test_writer();
  test_images();
  test_image_limits();
  test_image_deterministic();
  rm_rf(dir);
  return test_summary();
}
