/* test_idx.c — IDX reading and writing (every element type, raw and gzip, exact bytes on disk,
 * every corrupt-file error with its message), MD5 against the RFC 1321 test suite (buffers, odd
 * chunkings, files, gzip content), and index_select. Files live in a fresh temporary folder. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "moonflow_io.h"
#include "test.h"

#define DROP(t) (mf_release(t), (t) = NULL)

static char dir[64];

static const char *at(const char *name) {
  static char buf[8][256];
  static int k;
  char *p = buf[k++ % 8];
  snprintf(p, 256, "%s/%s", dir, name);
  return p;
}

/* Writes bytes as they are, or gzip-compressed. */
static void put(const char *path, const void *data, size_t n, bool gz) {
  if (gz) {
    gzFile g = gzopen(path, "wb");
    if (n) gzwrite(g, data, (unsigned)n);
    gzclose(g);
  } else {
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
  }
}

static int count_files(void) { return count_files_in(dir); }

/* ---- MD5 ------------------------------------------------------------------------------------ */

static void test_md5(void) {
  static const char *rfc[][2] = {
      /* RFC 1321, appendix A.5 */
      {"", "d41d8cd98f00b204e9800998ecf8427e"},
      {"a", "0cc175b9c0f1b6a831c399e269772661"},
      {"abc", "900150983cd24fb0d6963f7d28e17f72"},
      {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
      {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
      {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
       "d174ab98d277d9f5a5611c2c9f419d9f"},
      {"1234567890123456789012345678901234567890"
       "1234567890123456789012345678901234567890",
       "57edf4a22be3c955ac49da2e2107b67a"},
  };
  char hex[33];
  for (size_t i = 0; i < sizeof rfc / sizeof rfc[0]; i++) {
    mf_md5_buffer(rfc[i][0], strlen(rfc[i][0]), hex);
    CHECK(strcmp(hex, rfc[i][1]) == 0);
    /* the same fed in every chunk size */
    for (size_t chunk = 1; chunk <= 65; chunk += 7) {
      mf_md5_ctx c;
      unsigned char d[16];
      mf_md5_init(&c);
      size_t n = strlen(rfc[i][0]);
      for (size_t k = 0; k < n; k += chunk)
        mf_md5_update(&c, rfc[i][0] + k, n - k < chunk ? n - k : chunk);
      mf_md5_final(&c, d);
      CHECK(strcmp(mf_md5_hex(d, hex), rfc[i][1]) == 0);
    }
  }
  /* lengths around the padding boundary (55, 56, 63, 64, 65 bytes) agree with one-shot */
  static unsigned char big[200000];
  for (size_t i = 0; i < sizeof big; i++) big[i] = (unsigned char)(i * 2654435761u >> 13);
  mf_md5_buffer("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 64, hex);
  CHECK(strcmp(hex, "014842d480b571495a4a0363793f7367") == 0); /* md5 of 64 x 'a' */

  /* files: raw bytes, and the decompressed content of a gzip file */
  char want[33], got[33];
  mf_md5_buffer(big, sizeof big, want);
  put(at("big.bin"), big, sizeof big, false);
  put(at("big.bin.gz"), big, sizeof big, true);
  CHECK_OK(mf_md5_file(at("big.bin"), false, got));
  CHECK(strcmp(got, want) == 0);
  CHECK_OK(mf_md5_file(at("big.bin"), true, got)); /* gunzip of a plain file: its bytes */
  CHECK(strcmp(got, want) == 0);
  CHECK_OK(mf_md5_file(at("big.bin.gz"), true, got));
  CHECK(strcmp(got, want) == 0);
  CHECK_OK(mf_md5_file(at("big.bin.gz"), false, got)); /* the compressed bytes */
  CHECK(strcmp(got, want) != 0);
  CHECK_FAILS(mf_md5_file(at("nope"), false, got), MF_ERR_IO, "md5: ");
  CHECK_FAILS(mf_md5_file(at("nope"), true, got), MF_ERR_IO, "No such file");
  /* a gzip file cut short */
  unsigned char gzbytes[300000];
  long n = slurp(at("big.bin.gz"), gzbytes, sizeof gzbytes);
  put(at("cut.gz"), gzbytes, (size_t)n / 2, false);
  CHECK_FAILS(mf_md5_file(at("cut.gz"), true, got), MF_ERR_IO, "cut.gz");
  unlink(at("big.bin"));
  unlink(at("big.bin.gz"));
  unlink(at("cut.gz"));
}

/* ---- round trips ----------------------------------------------------------------------------- */

static mf_tensor *make(mf_dtype dt, int ndim, const int64_t *shape, const double *v) {
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= shape[d];
  mf_tensor *f = NULL, *t = NULL;
  mf_from_host(ndim, shape, MF_F64, v, NULL, &f);
  mf_cast(f, dt, &t);
  mf_release(f);
  (void)n;
  return t;
}

static bool same_values(const mf_tensor *t, const double *v, int64_t n) {
  double *h = malloc((size_t)(n ? n : 1) * sizeof *h);
  bool ok = mf_to_host(t, MF_F64, h) == MF_OK;
  for (int64_t i = 0; ok && i < n; i++) ok = h[i] == v[i];
  free(h);
  return ok;
}

static void roundtrip(mf_idx_type type, mf_dtype src, mf_dtype want, const double *v, bool gz) {
  int64_t shape[3] = {2, 3, 2};
  mf_tensor *t = make(src, 3, shape, v), *r = NULL;
  const char *path = at(gz ? "rt.idx.gz" : "rt.idx");
  CHECK_OK(mf_write_idx(path, t, type));
  CHECK_OK(mf_read_idx(path, &r));
  if (r) {
    CHECK(r->dtype == want);
    CHECK(r->ndim == 3 && r->shape[0] == 2 && r->shape[1] == 3 && r->shape[2] == 2);
    CHECK(same_values(r, v, 12));
    /* the file on disk: gzip or not, by the name */
    unsigned char b[4];
    FILE *f = fopen(path, "rb");
    CHECK(fread(b, 1, 2, f) == 2);
    fclose(f);
    CHECK((b[0] == 0x1f && b[1] == 0x8b) == gz);
  }
  mf_release(t);
  mf_release(r);
  unlink(path);
}

static void test_roundtrip(void) {
  double u8[12] = {0, 1, 2, 127, 128, 200, 255, 3, 4, 5, 6, 7};
  double i8[12] = {-128, -1, 0, 1, 127, -5, 6, -7, 8, 9, -10, 11};
  double i16[12] = {-32768, -1, 0, 1, 32767, 300, -300, 1000, -1000, 256, -256, 255};
  double i32[12] = {-2147483648.0, -1, 0, 1, 2147483647.0, 70000, -70000, 1 << 24, 5, 6, 7, 8};
  double f32[12] = {0, -0.5, 1.5, 3.25, -0x1.8p100, 0x1p-100, 65504, 0.125, 7, 8, 9, -1048576.5};
  double f64[12] = {0.1, -0.2, 1e300, -1e-300, 3.141592653589793, 2, 3, 4, 5, 6, 7, 8};
  for (int gz = 0; gz < 2; gz++) {
    roundtrip(MF_IDX_U8, MF_U8, MF_U8, u8, gz);
    roundtrip(MF_IDX_AUTO, MF_U8, MF_U8, u8, gz);
    roundtrip(MF_IDX_I8, MF_I32, MF_I32, i8, gz);
    roundtrip(MF_IDX_I8, MF_F32, MF_I32, i8, gz); /* integral floats convert */
    roundtrip(MF_IDX_I16, MF_I64, MF_I32, i16, gz);
    roundtrip(MF_IDX_I32, MF_I32, MF_I32, i32, gz);
    roundtrip(MF_IDX_AUTO, MF_I64, MF_I32, i32, gz);
    roundtrip(MF_IDX_F32, MF_F32, MF_F32, f32, gz);
    roundtrip(MF_IDX_AUTO, MF_F32, MF_F32, f32, gz);
    roundtrip(MF_IDX_F64, MF_F64, MF_F64, f64, gz);
    roundtrip(MF_IDX_AUTO, MF_F64, MF_F64, f64, gz);
  }
  CHECK(mf_idx_dtype(0x09) == MF_I32 && mf_idx_dtype(0x0B) == MF_I32 &&
        mf_idx_dtype(7) == MF_DTYPE_COUNT);
  CHECK(strcmp(mf_idx_type_name(0x0D), "f32") == 0 && mf_idx_type_name(1) == NULL);

  /* bool writes as u8 0/1 */
  double bits[12] = {1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1};
  roundtrip(MF_IDX_AUTO, MF_BOOL, MF_U8, bits, false);

  /* a non-contiguous view is written in its logical order */
  double v6[6] = {1, 2, 3, 4, 5, 6};
  int64_t s23[2] = {2, 3};
  mf_tensor *m = make(MF_F32, 2, s23, v6), *mt = NULL, *r = NULL;
  mf_transpose(m, 0, 1, &mt);
  CHECK_OK(mf_write_idx(at("t.idx"), mt, MF_IDX_AUTO));
  CHECK_OK(mf_read_idx(at("t.idx"), &r));
  double tv[6] = {1, 4, 2, 5, 3, 6};
  CHECK(r && r->shape[0] == 3 && r->shape[1] == 2 && same_values(r, tv, 6));
  mf_release(m);
  mf_release(mt);
  DROP(r);

  /* 0-d (one element, 0 dims) and empty tensors */
  mf_tensor *sc = NULL;
  mf_scalar(42, MF_U8, false, NULL, &sc);
  CHECK_OK(mf_write_idx(at("s.idx"), sc, MF_IDX_AUTO));
  CHECK_OK(mf_read_idx(at("s.idx"), &r));
  double v42 = 42;
  CHECK(r && r->ndim == 0 && same_values(r, &v42, 1));
  mf_release(sc);
  DROP(r);
  int64_t s0[2] = {0, 5};
  mf_tensor *e = NULL;
  mf_empty(2, s0, MF_F32, NULL, &e);
  CHECK_OK(mf_write_idx(at("e.idx.gz"), e, MF_IDX_AUTO));
  CHECK_OK(mf_read_idx(at("e.idx.gz"), &r));
  CHECK(r && r->ndim == 2 && r->shape[0] == 0 && r->shape[1] == 5);
  mf_release(e);
  DROP(r);
  unlink(at("t.idx"));
  unlink(at("s.idx"));
  unlink(at("e.idx.gz"));
}

/* The exact bytes on disk: header, big-endian sizes and data. */
static void test_bytes(void) {
  double v[6] = {1, 2, 3, 250, 5, 6};
  int64_t s[2] = {2, 3};
  mf_tensor *t = make(MF_U8, 2, s, v);
  CHECK_OK(mf_write_idx(at("b.idx"), t, MF_IDX_AUTO));
  unsigned char b[64];
  static const unsigned char want[] = {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 250, 5, 6};
  CHECK(slurp(at("b.idx"), b, sizeof b) == sizeof want && memcmp(b, want, sizeof want) == 0);
  mf_release(t);

  double f[2] = {1.0, -2.0};
  int64_t s2[1] = {2};
  t = make(MF_F32, 1, s2, f);
  CHECK_OK(mf_write_idx(at("b.idx"), t, MF_IDX_AUTO));
  static const unsigned char wf[] = {0, 0, 0x0D, 1, 0, 0, 0, 2, 0x3f, 0x80, 0, 0, 0xc0, 0, 0, 0};
  CHECK(slurp(at("b.idx"), b, sizeof b) == sizeof wf && memcmp(b, wf, sizeof wf) == 0);
  CHECK_OK(mf_write_idx(at("b.idx"), t, MF_IDX_I16));
  static const unsigned char wi[] = {0, 0, 0x0B, 1, 0, 0, 0, 2, 0, 1, 0xff, 0xfe};
  CHECK(slurp(at("b.idx"), b, sizeof b) == sizeof wi && memcmp(b, wi, sizeof wi) == 0);
  mf_release(t);

  /* a hand-made big-endian i32 file reads back */
  static const unsigned char hi[] = {0,    0,    0x0C, 1,    0,    0,    0,    2,
                                     0x00, 0x01, 0x02, 0x03, 0xff, 0xff, 0xff, 0xfe};
  put(at("h.idx"), hi, sizeof hi, false);
  mf_tensor *r = NULL;
  CHECK_OK(mf_read_idx(at("h.idx"), &r));
  double hv[2] = {66051, -2};
  CHECK(r && r->dtype == MF_I32 && same_values(r, hv, 2));
  mf_release(r);
  unlink(at("b.idx"));
  unlink(at("h.idx"));
}

/* ---- corrupt files --------------------------------------------------------------------------- */

static void bad(const char *name, const void *bytes, size_t n, bool gz, const char *needle) {
  const char *path = at(name);
  put(path, bytes, n, gz);
  mf_tensor *r = (mf_tensor *)1;
  CHECK_FAILS(mf_read_idx(path, &r), MF_ERR_IO, needle);
  CHECK(r == NULL);
  CHECK(strstr(mf_error(), path) != NULL); /* the message names the file */
  CHECK(strncmp(mf_error(), "read_idx: ", 10) == 0);
  unlink(path);
}

static void test_errors(void) {
  mf_tensor *r = NULL;
  CHECK_FAILS(mf_read_idx(at("missing.idx"), &r), MF_ERR_IO,
              "missing.idx: cannot open: No such file");
  CHECK_FAILS(mf_read_idx(dir, &r), MF_ERR_IO, "is a directory");

  static const unsigned char good[] = {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4};
  for (int gz = 0; gz < 2; gz++) {
    bad("empty.idx", "", 0, gz, "empty file");
    bad("short.idx", good, 3, gz, "truncated: the file ends inside the 4-byte magic (3 bytes)");
    bad("html.idx", "<!DOCTYPE html><html>", 21, gz, "not an IDX file: bad magic 3c 21 44 4f");
    bad("html.idx", "<!DOCTYPE html><html>", 21, gz, "HTML");
    unsigned char t[sizeof good];
    memcpy(t, good, sizeof good);
    t[2] = 0x0A;
    bad("type.idx", t, sizeof t, gz, "unsupported IDX type code 0x0a");
    t[2] = 8;
    t[3] = 9;
    bad("dims.idx", t, sizeof t, gz, "9 dimensions, moonflow tensors have at most 8");
    bad("hdr.idx", good, 10, gz,
        "truncated: the file ends inside the header (2 dims need 8 bytes of sizes, found 6)");
    bad("data.idx", good, 14, gz, "truncated: the header says 2x2 u8 (4 bytes of data)");
    unsigned char g[sizeof good + 3];
    memcpy(g, good, sizeof good);
    memcpy(g + sizeof good, "xyz", 3);
    bad("trail.idx", g, sizeof g, gz,
        "trailing garbage: 3 bytes after the 4 bytes of data (2x2 u8)");
    static const unsigned char huge[] = {0,    0,    8,    4,    0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                         0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0,    1,    0,    0};
    bad("huge.idx", huge, sizeof huge, gz, "sizes 4294967295x4294967295x4294967295x65536 overflow");
    /* (found by tests/fuzz/fuzz_idx.c) sizes that overflow with a zero among them: once read as
     * an empty tensor, whose element count and strides then overflowed */
    static const unsigned char zhuge[] = {0,    0,    0x0D, 3,    0xff, 0xff, 0xff, 0xff,
                                          0xff, 0xff, 0xff, 0xff, 0,    0,    0,    0};
    bad("zhuge.idx", zhuge, sizeof zhuge, gz, "sizes 4294967295x4294967295x0 overflow");
    /* plausible sizes that the file cannot hold: refused before allocating 4 GB */
    static const unsigned char big[] = {0, 0, 0x0D, 2, 0, 1, 0, 0, 0, 0, 0x40, 0, 1, 2, 3, 4};
    bad("big.idx", big, sizeof big, gz,
        "truncated: the header says 65536x16384 f32 (4294967296 bytes of data)");
  }
  /* the raw file's size tells before reading; the gzip file's content tells after */
  bad("data.idx", good, 14, false, "but the file has only 2");
  bad("data.idx", good, 14, true, "but the decompressed file ends after 2");

  /* gzip damage: a stream cut short, and garbage after a gzip header */
  unsigned char buf[4096];
  static unsigned char payload[3000];
  memcpy(payload, (const unsigned char[]){0, 0, 8, 1, 0, 0, 0x0b, 0xb0}, 8); /* 1-D, 2992 */
  for (int i = 8; i < 3000; i++) payload[i] = (unsigned char)(i * 7919 % 251);
  put(at("p.idx.gz"), payload, sizeof payload, true);
  long n = slurp(at("p.idx.gz"), buf, sizeof buf);
  CHECK_OK(mf_read_idx(at("p.idx.gz"), &r));
  DROP(r);
  bad("cut.idx.gz", buf, (size_t)n - 12, false, "cut.idx.gz: truncated");
  unsigned char junk[64] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
  for (int i = 10; i < 64; i++) junk[i] = 0xff;
  bad("junk.idx.gz", junk, sizeof junk, false, "corrupt gzip data");
  unlink(at("p.idx.gz"));

  /* writer errors leave nothing behind */
  int before = count_files();
  double v[3] = {1, 300, 2};
  int64_t s[1] = {3};
  mf_tensor *t = make(MF_F32, 1, s, v);
  CHECK_FAILS(mf_write_idx(at("w.idx"), t, MF_IDX_U8), MF_ERR_ARG,
              "element 2 (300) of the float32 tensor is not an integer in u8's range 0..255");
  v[1] = 0.5;
  mf_tensor *t2 = make(MF_F32, 1, s, v);
  CHECK_FAILS(mf_write_idx(at("w.idx"), t2, MF_IDX_I32), MF_ERR_ARG,
              "(0.5) of the float32 tensor is not an integer");
  CHECK_FAILS(mf_write_idx(at("w.idx"), t2, (mf_idx_type)0x0A), MF_ERR_ARG,
              "unsupported IDX type code 0x0a");
  CHECK_FAILS(mf_write_idx(at("no/such/dir/w.idx"), t2, MF_IDX_AUTO), MF_ERR_IO, "write_idx: ");
  CHECK(count_files() == before);
  mf_release(t);
  mf_release(t2);
}

/* ---- index_select ---------------------------------------------------------------------------- */

static void test_index_select(void) {
  double v[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  int64_t s[2] = {4, 3}, s3[3] = {2, 3, 2};
  mf_tensor *x = make(MF_F32, 2, s, v), *x3 = make(MF_I64, 3, s3, v), *r = NULL;
  double iv[5] = {3, 0, 3, 1, 2};
  int64_t n5[1] = {5};
  mf_tensor *idx = make(MF_I64, 1, n5, iv), *idx32 = make(MF_I32, 1, n5, iv);
  CHECK_OK(mf_index_select(x, 0, idx, &r));
  double w0[15] = {9, 10, 11, 0, 1, 2, 9, 10, 11, 3, 4, 5, 6, 7, 8};
  CHECK(r && r->shape[0] == 5 && r->shape[1] == 3 && same_values(r, w0, 15));
  DROP(r);
  int64_t n2[1] = {2};
  double jv[2] = {2, 0};
  mf_tensor *j = make(MF_I32, 1, n2, jv);
  CHECK_OK(mf_index_select(x, -1, j, &r)); /* columns */
  double w1[8] = {2, 0, 5, 3, 8, 6, 11, 9};
  CHECK(r && r->shape[0] == 4 && r->shape[1] == 2 && same_values(r, w1, 8));
  DROP(r);
  CHECK_OK(mf_index_select(x3, 1, j, &r)); /* a middle dim */
  double w2[8] = {4, 5, 0, 1, 10, 11, 6, 7};
  CHECK(r && r->dtype == MF_I64 && r->shape[0] == 2 && r->shape[1] == 2 && r->shape[2] == 2 &&
        same_values(r, w2, 8));
  DROP(r);
  mf_tensor *xt = NULL; /* a non-contiguous input */
  mf_transpose(x, 0, 1, &xt);
  CHECK_OK(mf_index_select(xt, 0, j, &r));
  double w3[8] = {2, 5, 8, 11, 0, 3, 6, 9};
  CHECK(r && same_values(r, w3, 8));
  DROP(r);
  CHECK_OK(mf_index_select(x, 0, idx32, &r));
  CHECK(r && same_values(r, w0, 15));
  DROP(r);

  double bv[2] = {1, 4};
  mf_tensor *b = make(MF_I64, 1, n2, bv), *f = make(MF_F32, 1, n2, bv);
  CHECK_FAILS(
      mf_index_select(x, 0, b, &r), MF_ERR_INDEX,
      "index_select: index 5 (entry 2 of the index) is out of range for dimension 1 of size 4");
  CHECK_FAILS(mf_index_select(x, 0, f, &r), MF_ERR_DTYPE,
              "index must be int64 or int32, got float32");
  CHECK_FAILS(mf_index_select(x, 0, x, &r), MF_ERR_SHAPE, "index must be 1-D, got shape 4x3");
  CHECK_FAILS(mf_index_select(x, 2, j, &r), MF_ERR_INDEX, "dimension 3 is out of range");
  CHECK(r == NULL);

  /* many rows, big enough to be split over threads */
  int64_t sb[2] = {5000, 100}, nb[1] = {5000};
  mf_tensor *big = NULL, *perm = NULL;
  mf_arange(0, 500000, 1, MF_F32, NULL, &big);
  mf_tensor *bigv = NULL;
  mf_view(big, 2, sb, &bigv);
  mf_arange(4999, -1, -1, MF_I64, NULL, &perm);
  CHECK(perm && perm->shape[0] == nb[0]);
  CHECK_OK(mf_index_select(bigv, 0, perm, &r));
  double first = -1, last = -1;
  int64_t i0[2] = {0, 0}, i1[2] = {4999, 99};
  if (r) {
    mf_get(r, i0, &first);
    mf_get(r, i1, &last);
  }
  CHECK(first == 499900 && last == 99);
  DROP(r);
  mf_release(big);
  mf_release(bigv);
  mf_release(perm);
  mf_release(xt);
  mf_release(b);
  mf_release(f);
  mf_release(j);
  mf_release(idx);
  mf_release(idx32);
  mf_release(x);
  mf_release(x3);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/mf_test_idx_XXXXXX");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  test_md5();
  test_roundtrip();
  test_bytes();
  test_errors();
  test_index_select();
  CHECK(count_files() == 0);
  rmdir(dir);
  return test_summary();
}
