/* test_serialize.c — safetensors, .npy and .npz (core/io/safetensors.c, core/io/npy.c): round
 * trips of every dtype and of 0-d and empty shapes, exact bytes of the FORMATS.md example, the
 * widening of file types moonflow lacks, hand-made zip64 and deflated archives, and every corrupt
 * file the readers must reject, each with its message. The real readers (numpy, safetensors) are
 * checked by tests/lua/serialize_spec.lua. Files live in a fresh temporary folder. */
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
  static char buf[8][400];
  static int k;
  char *p = buf[k++ % 8];
  snprintf(p, 400, "%s/%s", dir, name);
  return p;
}

static void put(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (n) fwrite(data, 1, n, f);
  fclose(f);
}

static int count_files(void) { return count_files_in(dir); }

/* A safetensors file from a JSON header (padded to 8 with spaces) and a data buffer. */
static void put_st(const char *path, const char *json, const void *data, size_t n) {
  size_t h = strlen(json), hp = (h + 7) / 8 * 8;
  unsigned char *b = calloc(8 + hp + n + 1, 1);
  for (int k = 0; k < 8; k++) b[k] = (unsigned char)((uint64_t)hp >> (8 * k));
  memcpy(b + 8, json, h);
  memset(b + 8 + h, ' ', hp - h);
  if (n) memcpy(b + 8 + hp, data, n);
  put(path, b, 8 + hp + n);
  free(b);
}

static mf_tensor *tensor_of(mf_dtype dt, int ndim, const int64_t *shape, const double *v) {
  mf_tensor *t = NULL, *f = NULL;
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= shape[d];
  mf_from_host(ndim, shape, MF_F64, v, NULL, &f);
  mf_cast(f, dt, &t);
  mf_release(f);
  (void)n;
  return t;
}

static bool same_tensor(const mf_tensor *a, const mf_tensor *b) {
  if (!a || !b || a->dtype != b->dtype || a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim; d++)
    if (a->shape[d] != b->shape[d]) return false;
  int64_t n = mf_numel(a);
  double *x = malloc(sizeof(double) * (size_t)(n + 1)),
         *y = malloc(sizeof(double) * (size_t)(n + 1));
  mf_to_host(a, MF_F64, x);
  mf_to_host(b, MF_F64, y);
  bool ok = memcmp(x, y, sizeof(double) * (size_t)n) == 0;
  free(x);
  free(y);
  return ok;
}

static const mf_dtype all_dtypes[] = {MF_F32, MF_F64, MF_I32, MF_I64, MF_U8, MF_BOOL};
static const double vals[6] = {1, 0, 3, 4, 255, 6};

/* ---- safetensors ---------------------------------------------------------------------------- */

static void test_st_roundtrip(void) {
  const char *names[18];
  mf_tensor *ts[18];
  char nb[18][16];
  int n = 0;
  int64_t s23[2] = {2, 3}, s03[2] = {0, 3};
  for (int i = 0; i < 6; i++) {
    snprintf(nb[n], 16, "m%d", i);
    names[n] = nb[n], ts[n++] = tensor_of(all_dtypes[i], 2, s23, vals);
    snprintf(nb[n], 16, "s%d", i);
    names[n] = nb[n], ts[n++] = tensor_of(all_dtypes[i], 0, NULL, vals + 2);
    snprintf(nb[n], 16, "e%d", i);
    names[n] = nb[n], ts[n++] = tensor_of(all_dtypes[i], 2, s03, vals);
  }
  const char *mk[2] = {"format", "note"}, *mv[2] = {"pt", "quote \" and \\ and \n"};
  CHECK_OK(mf_save_safetensors(at("all.safetensors"), n, names, ts, 2, mk, mv));
  mf_tensor_list l;
  CHECK_OK(mf_load_safetensors(at("all.safetensors"), 0, NULL, &l));
  CHECK(l.n == n);
  for (int i = 0; i < n; i++) CHECK(same_tensor(mf_tensor_list_get(&l, names[i]), ts[i]));
  CHECK(l.nmeta == 2 && strcmp(l.meta_values[1], mv[1]) == 0);
  mf_tensor_list_free(&l);

  /* selection, and a missing name */
  const char *sel[2] = {"m3", "s0"};
  CHECK_OK(mf_load_safetensors(at("all.safetensors"), 2, sel, &l));
  CHECK(l.n == 2 && same_tensor(mf_tensor_list_get(&l, "m3"), ts[9]));
  mf_tensor_list_free(&l);
  const char *bad[1] = {"nope"};
  CHECK_FAILS(mf_load_safetensors(at("all.safetensors"), 1, bad, &l), MF_ERR_IO,
              "no tensor named 'nope'");

  /* a non-contiguous view is written as its values */
  mf_tensor *tr = NULL;
  mf_transpose(ts[0], 0, 1, &tr);
  const char *tn[1] = {"t"};
  CHECK_OK(mf_save_safetensors(at("t.safetensors"), 1, tn, &tr, 0, NULL, NULL));
  CHECK_OK(mf_load_safetensors(at("t.safetensors"), 0, NULL, &l));
  CHECK(l.n == 1 && same_tensor(l.tensors[0], tr));
  mf_tensor_list_free(&l);
  DROP(tr);

  /* argument errors */
  const char *dup[2] = {"a", "a"};
  CHECK_FAILS(mf_save_safetensors(at("d.safetensors"), 2, dup, ts, 0, NULL, NULL), MF_ERR_ARG,
              "two tensors are named 'a'");
  const char *meta[1] = {"__metadata__"};
  CHECK_FAILS(mf_save_safetensors(at("d.safetensors"), 1, meta, ts, 0, NULL, NULL), MF_ERR_ARG,
              "reserved");
  CHECK_FAILS(mf_save_safetensors("/nonexistent/dir/x.safetensors", 1, tn, ts, 0, NULL, NULL),
              MF_ERR_IO, "cannot create");
  for (int i = 0; i < n; i++) mf_release(ts[i]);
}

static void test_st_bytes(void) {
  /* FORMATS.md: "w" = F32 [2] {1, 2} */
  double v[2] = {1, 2};
  int64_t s = 2;
  mf_tensor *w = tensor_of(MF_F32, 1, &s, v);
  const char *nm[1] = {"w"};
  CHECK_OK(mf_save_safetensors(at("w.safetensors"), 1, nm, &w, 0, NULL, NULL));
  unsigned char b[128];
  long n = slurp(at("w.safetensors"), b, sizeof b);
  const char *json = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}  ";
  CHECK(n == 8 + 56 + 8);
  CHECK(b[0] == 56 && b[1] == 0 && b[7] == 0);
  CHECK(memcmp(b + 8, json, 56) == 0);
  CHECK(memcmp(b + 64, "\0\0\x80\x3f\0\0\0\x40", 8) == 0);
  DROP(w);

  /* ordering: largest element size first, then by name */
  double z[1] = {1};
  mf_tensor *a = tensor_of(MF_U8, 1, &(int64_t){1}, z),
            *bb = tensor_of(MF_F64, 1, &(int64_t){1}, z),
            *c = tensor_of(MF_F32, 1, &(int64_t){1}, z),
            *d = tensor_of(MF_F64, 1, &(int64_t){1}, z);
  const char *names[4] = {"a", "zz", "c", "b"};
  mf_tensor *ts[4] = {a, bb, c, d};
  CHECK_OK(mf_save_safetensors(at("o.safetensors"), 4, names, ts, 0, NULL, NULL));
  unsigned char big[512];
  n = slurp(at("o.safetensors"), big, sizeof big);
  big[n < 511 ? n : 511] = 0;
  const char *h = (const char *)big + 8;
  const char *pb = strstr(h, "\"b\""), *pz = strstr(h, "\"zz\""), *pc = strstr(h, "\"c\""),
             *pa = strstr(h, "\"a\"");
  CHECK(pb && pz && pc && pa && pb < pz && pz < pc && pc < pa);
  CHECK(strstr(h, "\"b\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}"));
  CHECK(strstr(h, "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[20,21]}"));
  CHECK((big[0] | big[1] << 8) % 8 == 0);
  for (int i = 0; i < 4; i++) mf_release(ts[i]);
}

static void test_st_widen(void) {
  unsigned char data[64] = {0};
  /* I8 {-3, 5}, I16 {-300}, U16 {65535}, U32 {4000000000}, U64 {2^40}, F16 {1.5, -2}, BF16 {0.25}
   */
  int8_t i8[2] = {-3, 5};
  int16_t i16 = -300;
  uint16_t u16 = 65535, f16[2] = {0x3E00, 0xC000}, bf = 0x3E80;
  uint32_t u32 = 4000000000u;
  uint64_t u64 = (uint64_t)1 << 40;
  memcpy(data + 0, &u64, 8);
  memcpy(data + 8, &u32, 4);
  memcpy(data + 12, &i16, 2);
  memcpy(data + 14, &u16, 2);
  memcpy(data + 16, f16, 4);
  memcpy(data + 20, &bf, 2);
  memcpy(data + 22, i8, 2);
  put_st(at("widen.safetensors"),
         "{\"u64\":{\"dtype\":\"U64\",\"shape\":[1],\"data_offsets\":[0,8]},"
         "\"u32\":{\"dtype\":\"U32\",\"shape\":[],\"data_offsets\":[8,12]},"
         "\"i16\":{\"dtype\":\"I16\",\"shape\":[1],\"data_offsets\":[12,14]},"
         "\"u16\":{\"dtype\":\"U16\",\"shape\":[1],\"data_offsets\":[14,16]},"
         "\"f16\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[16,20]},"
         "\"bf16\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[20,22]},"
         "\"i8\":{\"dtype\":\"I8\",\"shape\":[2, 1],\"data_offsets\":[22,24], \"extra\": null}}",
         data, 24);
  mf_tensor_list l;
  CHECK_OK(mf_load_safetensors(at("widen.safetensors"), 0, NULL, &l));
  double v[2];
  mf_tensor *t;
  if ((t = mf_tensor_list_get(&l, "u64")))
    CHECK(t->dtype == MF_I64 && !mf_item(t, v) && v[0] == 1099511627776.0);
  if ((t = mf_tensor_list_get(&l, "u32")))
    CHECK(t->dtype == MF_I64 && t->ndim == 0 && !mf_item(t, v) && v[0] == 4e9);
  if ((t = mf_tensor_list_get(&l, "i16")))
    CHECK(t->dtype == MF_I32 && !mf_item(t, v) && v[0] == -300);
  if ((t = mf_tensor_list_get(&l, "u16")))
    CHECK(t->dtype == MF_I32 && !mf_item(t, v) && v[0] == 65535);
  if ((t = mf_tensor_list_get(&l, "f16")))
    CHECK(t->dtype == MF_F32 && !mf_to_host(t, MF_F64, v) && v[0] == 1.5 && v[1] == -2);
  if ((t = mf_tensor_list_get(&l, "bf16")))
    CHECK(t->dtype == MF_F32 && !mf_item(t, v) && v[0] == 0.25);
  if ((t = mf_tensor_list_get(&l, "i8")))
    CHECK(t->dtype == MF_I32 && t->shape[0] == 2 && !mf_to_host(t, MF_F64, v) && v[0] == -3 &&
          v[1] == 5);
  CHECK(l.n == 7);
  mf_tensor_list_free(&l);
  uint64_t huge = UINT64_MAX;
  put_st(at("u64.safetensors"), "{\"u\":{\"dtype\":\"U64\",\"shape\":[1],\"data_offsets\":[0,8]}}",
         &huge, 8);
  CHECK_FAILS(mf_load_safetensors(at("u64.safetensors"), 0, NULL, &l), MF_ERR_IO,
              "does not fit int64");
}

static void test_st_corrupt(void) {
  mf_tensor_list l;
  const char *p = at("bad.safetensors");
  unsigned char d16[16] = {0};
#define BAD_JSON(json, n, needle)                                                                  \
  do {                                                                                             \
    put_st(p, json, d16, n);                                                                       \
    CHECK_FAILS(mf_load_safetensors(p, 0, NULL, &l), MF_ERR_IO, needle);                           \
  } while (0)
  CHECK_FAILS(mf_load_safetensors(at("missing.safetensors"), 0, NULL, &l), MF_ERR_IO,
              "cannot open");
  put(p, "\x10\0\0", 3);
  CHECK_FAILS(mf_load_safetensors(p, 0, NULL, &l), MF_ERR_IO, "truncated: 3 bytes");
  put(p, "\xff\0\0\0\0\0\0\0{}", 10);
  CHECK_FAILS(mf_load_safetensors(p, 0, NULL, &l), MF_ERR_IO,
              "header length 255 runs past the end");
  put(p, "\0\0\0\x10\0\0\0\0{}", 10);
  CHECK_FAILS(mf_load_safetensors(p, 0, NULL, &l), MF_ERR_IO, "over the 100,000,000-byte limit");
  /* the path is named */
  CHECK(strstr(mf_error(), "load_safetensors: ") && strstr(mf_error(), "bad.safetensors"));
  BAD_JSON("[1, 2]", 0, "does not start with '{'");
  BAD_JSON("{\"a\": ", 0, "bad JSON");
  BAD_JSON("{\"a\": {\"dtype\": \"F32\",}}", 0, "bad JSON");
  BAD_JSON("{\"a\": 01}", 0, "leading zero");
  BAD_JSON("{'a': 1}", 0, "expected a string key");
  BAD_JSON("{\"a\": tru}", 0, "bad JSON");
  BAD_JSON("{\"a\": \"x\\q\"}", 0, "unknown escape");
  BAD_JSON("{} x", 0, "trailing characters");
  BAD_JSON("{\"a\": \"\xff\"}", 0, "invalid UTF-8");
  BAD_JSON("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
           "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
           8, "duplicate key");
  BAD_JSON("{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}", 0,
           "nested deeper");
  BAD_JSON("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "missing \"data_offsets\"");
  BAD_JSON("{\"a\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
           "unsupported dtype \"C64\"");
  BAD_JSON("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
           "not a non-negative integer");
  BAD_JSON("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
           "two non-negative integers");
  BAD_JSON("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
           "wrong size: F32 2 needs 8 bytes but data_offsets [0, 4] hold 4");
  BAD_JSON("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
           12, "overlap");
  BAD_JSON("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
           12, "a gap of 4");
  BAD_JSON("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
           "4 bytes after the data");
  BAD_JSON("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8,
           "truncated: tensor 'a' has data_offsets [0, 16] past the end");
  BAD_JSON("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4,
           "end before they begin");
  BAD_JSON("{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,4294967296],"
           "\"data_offsets\":[0,4]}}",
           4, "overflows");
  BAD_JSON("{\"__metadata__\":{\"k\":1}}", 0, "is not a string");
  /* valid: an empty file of tensors, zero-size tensors sharing an offset, null metadata */
  put_st(p,
         "{\"__metadata__\":null, \"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"f\":{\"dtype\":\"I64\",\"shape\":[0, 2],\"data_offsets\":[4,4]}}",
         d16, 4);
  CHECK_OK(mf_load_safetensors(p, 0, NULL, &l));
  CHECK(l.n == 3);
  mf_tensor_list_free(&l);
  put_st(p, "{}", d16, 0);
  CHECK_OK(mf_load_safetensors(p, 0, NULL, &l));
  CHECK(l.n == 0);
  mf_tensor_list_free(&l);
  /* every truncation of a good file fails cleanly */
  unsigned char good[256];
  double v[6] = {1, 2, 3, 4, 5, 6};
  mf_tensor *t = tensor_of(MF_F32, 2, (int64_t[]){2, 3}, v);
  const char *nm[1] = {"x"};
  mf_save_safetensors(p, 1, nm, &t, 0, NULL, NULL);
  long n = slurp(p, good, sizeof good);
  int fails = 0;
  for (long k = 0; k < n; k++) {
    put(at("cut.safetensors"), good, (size_t)k);
    fails += mf_load_safetensors(at("cut.safetensors"), 0, NULL, &l) == MF_ERR_IO;
  }
  CHECK(fails == n);
  DROP(t);
#undef BAD_JSON
}

/* ---- npy ------------------------------------------------------------------------------------ */

static void test_npy(void) {
  int64_t s23[2] = {2, 3}, s03[2] = {0, 3};
  for (int i = 0; i < 6; i++) {
    mf_tensor *ts[3] = {tensor_of(all_dtypes[i], 2, s23, vals),
                        tensor_of(all_dtypes[i], 0, NULL, vals + 2),
                        tensor_of(all_dtypes[i], 2, s03, vals)};
    for (int k = 0; k < 3; k++) {
      mf_tensor *r = NULL;
      CHECK_OK(mf_save_npy(at("x.npy"), ts[k]));
      CHECK_OK(mf_load_npy(at("x.npy"), &r));
      CHECK(same_tensor(r, ts[k]));
      mf_release(r);
      mf_release(ts[k]);
    }
  }
  /* the header: v1.0, 64-byte aligned data, numpy's text */
  double v[3] = {1, 2, 3};
  mf_tensor *t = tensor_of(MF_F32, 1, (int64_t[]){3}, v), *r = NULL;
  mf_save_npy(at("h.npy"), t);
  unsigned char b[256];
  long n = slurp(at("h.npy"), b, sizeof b);
  CHECK(n == 128 + 12); /* as np.save writes it: 'v' (118) header bytes after the 10 */
  CHECK(b[6] == 1 && b[7] == 0 && b[8] == 118 && b[9] == 0 && b[127] == '\n');
  CHECK(memcmp(b + 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 57) == 0);
  DROP(t);

  /* hand-made headers */
  const char *p = at("m.npy");
#define NPY(hdr, data, n)                                                                          \
  do {                                                                                             \
    unsigned char f_[512];                                                                         \
    size_t hl_ = strlen(hdr);                                                                      \
    memcpy(f_, "\x93NUMPY\x01\x00", 8);                                                            \
    f_[8] = (unsigned char)hl_, f_[9] = 0;                                                         \
    memcpy(f_ + 10, hdr, hl_);                                                                     \
    memcpy(f_ + 10 + hl_, data, n);                                                                \
    put(p, f_, 10 + hl_ + (n));                                                                    \
  } while (0)
  double fo[6] = {0, 3, 1, 4, 2, 5}; /* [[0,1,2],[3,4,5]] in Fortran order */
  NPY("{'shape': (2, 3), 'fortran_order': True, 'descr': '<f8'}\n", fo, 48);
  CHECK_OK(mf_load_npy(p, &r));
  double got[6];
  if (r) {
    mf_to_host(r, MF_F64, got);
    CHECK(r->shape[0] == 2 && r->shape[1] == 3 && mf_is_contiguous(r));
    CHECK(got[0] == 0 && got[1] == 1 && got[2] == 2 && got[3] == 3 && got[5] == 5);
  }
  DROP(r);
  uint16_t be[2] = {0x0100, 0xFFFF}; /* >i2 {1, -1} */
  NPY("{'descr':'>i2','fortran_order':False,'shape':(2,)}", be, 4);
  CHECK_OK(mf_load_npy(p, &r));
  if (r) {
    mf_to_host(r, MF_F64, got);
    CHECK(r->dtype == MF_I32 && got[0] == 1 && got[1] == -1);
  }
  DROP(r);
  put(p, "\x93NUMPX\x01\x00\x00\x00", 10);
  CHECK_FAILS(mf_load_npy(p, &r), MF_ERR_IO, "bad magic");
  put(p, "", 0);
  CHECK_FAILS(mf_load_npy(p, &r), MF_ERR_IO, "empty file");
  NPY("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", v, 8);
  CHECK_FAILS(mf_load_npy(p, &r), MF_ERR_IO, "unsupported descr '<c8'");
  NPY("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", v, 8);
  CHECK_FAILS(mf_load_npy(p, &r), MF_ERR_IO, "object arrays");
  NPY("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", v, 4);
  CHECK_FAILS(mf_load_npy(p, &r), MF_ERR_IO, "structured dtypes");
  NPY("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", v, 8);
  CHECK_FAILS(mf_load_npy(p, &r), MF_ERR_IO, "truncated: F32 3 needs 12 bytes of data, found 8");
  NPY("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", v, 8);
  CHECK_FAILS(mf_load_npy(p, &r), MF_ERR_IO, "trailing garbage");
  NPY("{'descr': '<f4', 'fortran_order': False}", v, 4);
  CHECK_FAILS(mf_load_npy(p, &r), MF_ERR_IO, "missing 'shape'");
  NPY("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", v, 4);
  CHECK_FAILS(mf_load_npy(p, &r), MF_ERR_IO, "unexpected or repeated key 'x'");
  NPY("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}", v, 4);
  CHECK_FAILS(mf_load_npy(p, &r), MF_ERR_IO, "fortran_order is not True or False");
  put(p, "\x93NUMPY\x01\x00\xff\x00{", 11);
  CHECK_FAILS(mf_load_npy(p, &r), MF_ERR_IO, "header length 255 runs past the end");
  CHECK(r == NULL);
#undef NPY
}

/* ---- npz ------------------------------------------------------------------------------------ */

static void le16(unsigned char *p, unsigned v) {
  p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8);
}
static void le32(unsigned char *p, uint64_t v) {
  for (int k = 0; k < 4; k++) p[k] = (unsigned char)(v >> (8 * k));
}
static void le64(unsigned char *p, uint64_t v) {
  for (int k = 0; k < 8; k++) p[k] = (unsigned char)(v >> (8 * k));
}

/* A one-member archive "<name>" of `member` bytes: method 0 or 8, zip64 fields in the central
 * directory (and a zip64 end record) when z64. Returns the file size. */
static size_t make_zip(unsigned char *out, const char *name, const unsigned char *member, size_t n,
                       int method, bool z64) {
  unsigned char comp[4096];
  size_t cn = n;
  const unsigned char *data = member;
  if (method == 8) {
    z_stream z = {0};
    deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    z.next_in = (Bytef *)member, z.avail_in = (uInt)n, z.next_out = comp, z.avail_out = sizeof comp;
    deflate(&z, Z_FINISH);
    cn = sizeof comp - z.avail_out;
    deflateEnd(&z);
    data = comp;
  }
  uint32_t crc = (uint32_t)crc32(0, member, (uInt)n);
  size_t nl = strlen(name), o = 0;
  unsigned char *lh = out;
  le32(lh, 0x04034b50), le16(lh + 4, 20), le16(lh + 6, 0), le16(lh + 8, (unsigned)method);
  le32(lh + 10, 0), le32(lh + 14, crc), le32(lh + 18, cn), le32(lh + 22, n),
      le16(lh + 26, (unsigned)nl);
  le16(lh + 28, 0);
  o = 30;
  memcpy(out + o, name, nl), o += nl;
  memcpy(out + o, data, cn), o += cn;
  size_t cd = o;
  unsigned char *c = out + o;
  memset(c, 0, 46);
  le32(c, 0x02014b50), le16(c + 4, 45), le16(c + 6, 45), le16(c + 10, (unsigned)method);
  le32(c + 16, crc);
  le32(c + 20, z64 ? 0xFFFFFFFF : cn), le32(c + 24, z64 ? 0xFFFFFFFF : n);
  le16(c + 28, (unsigned)nl), le16(c + 30, z64 ? 28 : 0);
  le32(c + 42, z64 ? 0xFFFFFFFF : 0);
  o += 46;
  memcpy(out + o, name, nl), o += nl;
  if (z64) { /* usize, csize, offset */
    le16(out + o, 1), le16(out + o + 2, 24), le64(out + o + 4, n), le64(out + o + 12, cn);
    le64(out + o + 20, 0);
    o += 28;
  }
  size_t cds = o - cd;
  if (z64) {
    unsigned char *e = out + o;
    memset(e, 0, 76);
    le32(e, 0x06064b50), le64(e + 4, 44), le64(e + 24, 1), le64(e + 32, 1), le64(e + 40, cds);
    le64(e + 48, cd);
    le32(e + 56, 0x07064b50), le64(e + 64, o), le32(e + 72, 1);
    o += 76;
  }
  unsigned char *e = out + o;
  memset(e, 0, 22);
  le32(e, 0x06054b50);
  le16(e + 8, z64 ? 0xFFFF : 1), le16(e + 10, z64 ? 0xFFFF : 1);
  le32(e + 12, z64 ? 0xFFFFFFFF : cds), le32(e + 16, z64 ? 0xFFFFFFFF : cd);
  return o + 22;
}

static void test_npz(void) {
  const char *names[12];
  mf_tensor *ts[12];
  char nb[12][32];
  int n = 0;
  int64_t s23[2] = {2, 3};
  for (int i = 0; i < 6; i++) {
    snprintf(nb[n], 32, "layer.m%d", i);
    names[n] = nb[n], ts[n++] = tensor_of(all_dtypes[i], 2, s23, vals);
    snprintf(nb[n], 32, "s%d", i);
    names[n] = nb[n], ts[n++] = tensor_of(all_dtypes[i], 0, NULL, vals + 1);
  }
  CHECK_OK(mf_save_npz(at("a.npz"), n, names, ts));
  mf_tensor_list l;
  CHECK_OK(mf_load_npz(at("a.npz"), 0, NULL, &l));
  CHECK(l.n == n);
  for (int i = 0; i < n; i++) CHECK(same_tensor(mf_tensor_list_get(&l, names[i]), ts[i]));
  mf_tensor_list_free(&l);
  const char *sel[1] = {"s3"}, *bad[1] = {"zz"};
  CHECK_OK(mf_load_npz(at("a.npz"), 1, sel, &l));
  CHECK(l.n == 1 && same_tensor(l.tensors[0], ts[7]));
  mf_tensor_list_free(&l);
  CHECK_FAILS(mf_load_npz(at("a.npz"), 1, bad, &l), MF_ERR_IO, "no tensor named 'zz'");

  /* CRC mismatch: flip the last data byte of the last member */
  static unsigned char buf[1 << 16];
  const char *one[1] = {"w"};
  CHECK_OK(mf_save_npz(at("w.npz"), 1, one, ts));
  long sz = slurp(at("w.npz"), buf, sizeof buf);
  long cd = (long)(buf[sz - 6] | buf[sz - 5] << 8 | buf[sz - 4] << 16);
  buf[cd - 1] ^= 0x55;
  put(at("crc.npz"), buf, (size_t)sz);
  CHECK_FAILS(mf_load_npz(at("crc.npz"), 0, NULL, &l), MF_ERR_IO, "CRC-32 mismatch");
  /* truncations and garbage */
  int fails = 0;
  for (long k = 0; k < sz; k++) {
    put(at("cut.npz"), buf, (size_t)k);
    fails += mf_load_npz(at("cut.npz"), 0, NULL, &l) == MF_ERR_IO;
  }
  CHECK(fails == sz);
  put(at("junk.npz"), "this is not a zip archive at all, just some text.", 50);
  CHECK_FAILS(mf_load_npz(at("junk.npz"), 0, NULL, &l), MF_ERR_IO, "not a ZIP archive");
  buf[sz - 22 + 16] ^= 0x40; /* central directory offset */
  put(at("cdoff.npz"), buf, (size_t)sz);
  CHECK_FAILS(mf_load_npz(at("cdoff.npz"), 0, NULL, &l), MF_ERR_IO, "bad ZIP");

  /* hand-made archives: deflated, zip64, both; an unsupported method; a member that is not npy */
  double v[3] = {1, 2, 3};
  mf_tensor *t = tensor_of(MF_F64, 1, (int64_t[]){3}, v);
  mf_save_npy(at("m.npy"), t);
  unsigned char member[256];
  long mn = slurp(at("m.npy"), member, sizeof member);
  for (int method = 0; method <= 8; method += 8)
    for (int z64 = 0; z64 <= 1; z64++) {
      size_t zn = make_zip(buf, "v.npy", member, (size_t)mn, method, z64);
      put(at("h.npz"), buf, zn);
      CHECK_OK(mf_load_npz(at("h.npz"), 0, NULL, &l));
      CHECK(l.n == 1 && strcmp(l.names[0], "v") == 0 && same_tensor(l.tensors[0], t));
      mf_tensor_list_free(&l);
      if (method == 8) { /* corrupt the deflate stream */
        buf[31 + 5] ^= 0xFF;
        put(at("h.npz"), buf, zn);
        CHECK(mf_load_npz(at("h.npz"), 0, NULL, &l) == MF_ERR_IO);
      }
    }
  size_t zn = make_zip(buf, "v.npy", member, (size_t)mn, 0, false);
  buf[8] = 12, buf[zn - 22 - 46 - 5 + 10] = 12; /* bzip2, in both headers */
  put(at("m12.npz"), buf, zn);
  CHECK_FAILS(mf_load_npz(at("m12.npz"), 0, NULL, &l), MF_ERR_IO,
              "unsupported compression method 12");
  zn = make_zip(buf, "v.npy", (const unsigned char *)"hello", 5, 0, false);
  put(at("txt.npz"), buf, zn);
  CHECK_FAILS(mf_load_npz(at("txt.npz"), 0, NULL, &l), MF_ERR_IO, "v.npy: not a .npy file");
  DROP(t);
  for (int i = 0; i < n; i++) mf_release(ts[i]);
}

/* ---- readers from memory, and what the fuzzers found (tests/fuzz) ---------------------------- */

static void test_from_memory(void) {
  /* the _from_memory readers give what the path readers give, naming `name` in messages */
  static unsigned char buf[1 << 12];
  double v[6] = {1, 2, 3, 4, 5, 6};
  mf_tensor *t = tensor_of(MF_F32, 2, (int64_t[]){2, 3}, v), *u = NULL;
  const char *nm[1] = {"x"};
  mf_tensor_list l;
  CHECK_OK(mf_save_safetensors(at("mem.safetensors"), 1, nm, &t, 0, NULL, NULL));
  long n = slurp(at("mem.safetensors"), buf, sizeof buf);
  CHECK_OK(mf_load_safetensors_from_memory("m.st", buf, (size_t)n, 1, nm, &l));
  CHECK(l.n == 1 && same_tensor(l.tensors[0], t));
  mf_tensor_list_free(&l);
  CHECK_FAILS(mf_load_safetensors_from_memory("m.st", buf, (size_t)n - 1, 0, NULL, &l), MF_ERR_IO,
              "load_safetensors: m.st: truncated");
  CHECK_FAILS(mf_load_safetensors_from_memory(NULL, buf, 3, 0, NULL, &l), MF_ERR_IO,
              "load_safetensors: buffer: truncated: 3 bytes");
  CHECK_FAILS(mf_load_safetensors_from_memory(NULL, NULL, 5, 0, NULL, &l), MF_ERR_ARG,
              "data is NULL");
  CHECK_OK(mf_save_npy(at("mem.npy"), t));
  n = slurp(at("mem.npy"), buf, sizeof buf);
  CHECK_OK(mf_load_npy_from_memory("m.npy", buf, (size_t)n, &u));
  CHECK(same_tensor(u, t));
  DROP(u);
  CHECK_FAILS(mf_load_npy_from_memory("m.npy", buf, (size_t)n + 1, &u), MF_ERR_IO,
              "load_npy: m.npy: trailing garbage");
  CHECK_FAILS(mf_load_npy_from_memory(NULL, NULL, 0, &u), MF_ERR_IO, "buffer: empty");
  CHECK_OK(mf_save_npz(at("mem.npz"), 1, nm, &t));
  n = slurp(at("mem.npz"), buf, sizeof buf);
  CHECK_OK(mf_load_npz_from_memory("m.npz", buf, (size_t)n, 0, NULL, &l));
  CHECK(l.n == 1 && strcmp(l.names[0], "x") == 0 && same_tensor(l.tensors[0], t));
  mf_tensor_list_free(&l);
  CHECK_FAILS(mf_load_npz_from_memory("m.npz", buf, (size_t)n - 1, 0, NULL, &l), MF_ERR_IO,
              "load_npz: m.npz: not a ZIP archive (.npz) or truncated");
  DROP(t);
}

static void test_fuzz_found(void) {
  mf_tensor_list l;
  /* fuzz_npz: a zip64 end locator in a file shorter than the 56-byte zip64 end record it points
   * at: the bound (n - 56) wrapped around and the record was read far outside the file */
  unsigned char z[42] = {0};
  le32(z, 0x07064b50), le64(z + 8, 0x1000000), le32(z + 16, 1);
  le32(z + 20, 0x06054b50), le16(z + 28, 0xFFFF), le16(z + 30, 0xFFFF);
  le32(z + 32, 0xFFFFFFFF), le32(z + 36, 0xFFFFFFFF);
  CHECK_FAILS(mf_load_npz_from_memory("z.npz", z, sizeof z, 0, NULL, &l), MF_ERR_IO,
              "the zip64 end record is missing");
  /* fuzz_idx (the same logic here): sizes that overflow with a zero among them are an error, not
   * an empty tensor whose strides overflow */
  const char *zst = "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,0],"
                    "\"data_offsets\":[0,0]}}";
  unsigned char zb[256];
  size_t zn = strlen(zst);
  for (int k = 0; k < 8; k++) zb[k] = (unsigned char)((uint64_t)zn >> (8 * k));
  memcpy(zb + 8, zst, zn);
  CHECK_FAILS(mf_load_safetensors_from_memory("z.st", zb, 8 + zn, 0, NULL, &l), MF_ERR_IO,
              "tensor 'a': its shape overflows");
  static const char npy[] = "\x93NUMPY\x01\x00\x51\x00{'descr': '|u1', 'fortran_order': False, "
                            "'shape': (4294967296, 4294967296, 0), }\n";
  mf_tensor *t = NULL;
  CHECK_FAILS(mf_load_npy_from_memory("z.npy", npy, sizeof npy - 1, &t), MF_ERR_IO,
              "z.npy: the shape overflows");
  /* duplicates are found by sorting, not by checking each name against those before it (hours for
   * a 100 MB header of small entries): the last of 50,000 keys repeats one, and the message says
   * which; an archive whose central directory lists one member twice */
  size_t cap = 50000 * 16 + 64, hn = 8;
  unsigned char *big = malloc(cap);
  hn += (size_t)snprintf((char *)big + hn, cap - hn, "{");
  for (int i = 0; i < 50000; i++)
    hn += (size_t)snprintf((char *)big + hn, cap - hn, "\"k%d\":0,", i);
  hn += (size_t)snprintf((char *)big + hn, cap - hn, "\"k4321\":1}");
  for (int k = 0; k < 8; k++) big[k] = (unsigned char)((uint64_t)(hn - 8) >> (8 * k));
  CHECK_FAILS(mf_load_safetensors_from_memory("k.st", big, hn, 0, NULL, &l), MF_ERR_IO,
              "duplicate key \"k4321\"");
  free(big);
  double one = 7;
  mf_tensor *t1 = tensor_of(MF_F64, 0, NULL, &one);
  mf_save_npy(at("one.npy"), t1);
  unsigned char member[256];
  long mn = slurp(at("one.npy"), member, sizeof member);
  static unsigned char zz[1024], two[1024];
  size_t n1 = make_zip(zz, "v.npy", member, (size_t)mn, 0, false);
  size_t cde = 46 + 5, cd = n1 - 22 - cde; /* the one central directory entry */
  memcpy(two, zz, cd + cde);
  memcpy(two + cd + cde, zz + cd, cde);
  memcpy(two + cd + 2 * cde, zz + cd + cde, 22);
  le16(two + cd + 2 * cde + 8, 2), le16(two + cd + 2 * cde + 10, 2);
  le32(two + cd + 2 * cde + 12, 2 * cde);
  CHECK_OK(mf_load_npz_from_memory("one.npz", zz, n1, 0, NULL, &l));
  CHECK(l.n == 1 && same_tensor(l.tensors[0], t1));
  mf_tensor_list_free(&l);
  CHECK_FAILS(mf_load_npz_from_memory("two.npz", two, n1 + cde, 0, NULL, &l), MF_ERR_IO,
              "two.npz: two members are named 'v'");
  mf_release(t1);
  /* ... and one whose locator points at bytes overlapping the locator itself */
  unsigned char z2[98] = {0};
  le32(z2 + 40, 0x06064b50);
  le32(z2 + 56, 0x07064b50), le64(z2 + 64, 40), le32(z2 + 72, 1);
  le32(z2 + 76, 0x06054b50), le16(z2 + 84, 0xFFFF), le16(z2 + 86, 0xFFFF);
  le32(z2 + 88, 0xFFFFFFFF), le32(z2 + 92, 0xFFFFFFFF);
  CHECK_FAILS(mf_load_npz_from_memory("z.npz", z2, sizeof z2, 0, NULL, &l), MF_ERR_IO,
              "the zip64 end record is missing");
}

/* ---- atomic writes -------------------------------------------------------------------------- */

static void test_atomic(void) {
  double v[2] = {1, 2};
  mf_tensor *t = tensor_of(MF_F32, 1, (int64_t[]){2}, v);
  const char *nm[1] = {"x"};
  int before = count_files();
  CHECK_OK(mf_save_safetensors(at("keep.safetensors"), 1, nm, &t, 0, NULL, NULL));
  CHECK_OK(mf_save_npz(at("keep.npz"), 1, nm, &t));
  CHECK(count_files() == before + 2); /* no temporary files left behind */
  /* a save that fails (a folder is in the way of the rename) leaves the old state and no temp */
  mkdir(at("adir.npz"), 0755);
  CHECK_FAILS(mf_save_npz(at("adir.npz"), 1, nm, &t), MF_ERR_IO, "cannot rename");
  CHECK(count_files() == before + 3);
  rmdir(at("adir.npz"));
  DROP(t);
}

static void cleanup(void) {
  DIR *d = opendir(dir);
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') unlink(at(e->d_name));
  closedir(d);
  rmdir(dir);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/mf_test_serialize_XXXXXX");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  test_st_roundtrip();
  test_st_bytes();
  test_st_widen();
  test_st_corrupt();
  test_npy();
  test_npz();
  test_from_memory();
  test_fuzz_found();
  test_atomic();
  cleanup();
  return test_summary();
}
