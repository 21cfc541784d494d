/* safetensors.c — named tensors in safetensors files (what Hugging Face's `safetensors` reads and
 * writes), plus the helpers that io/npy.c shares (serial.h): atomic writing, mapping files, element
 * conversion, result lists.
 *
 * Layout (FORMATS.md): u64 LE header length N, N bytes of UTF-8 JSON
 *   {"__metadata__": {"k": "v"}, "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]}}
 * then the data buffer: offsets relative to it, end exclusive, little-endian, row-major.
 *
 * The writer orders tensors largest element size first, then by name, contiguously with no gaps,
 * puts __metadata__ first, and pads the JSON with spaces to a multiple of 8, as the reference
 * implementation does. The reader parses the JSON with the small strict parser below (no library:
 * it rejects anything that is not RFC 8259 JSON, duplicate keys and nesting deeper than 32), then
 * checks every entry and that the data buffer is covered exactly (no overlaps, no gaps, nothing
 * left over). Unknown keys inside a tensor entry are ignored (forward compatibility), unknown
 * dtypes are not. Widening: U16 -> int32, U32/U64 -> int64 (U64 values above 2^63-1 are an error),
 * I8/I16 -> int32, F16/BF16 -> float32.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "serial.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_BIG_ENDIAN 1
#else
#define HOST_BIG_ENDIAN 0
#endif

#define MAX_HEADER 100000000ull
#define MAX_DEPTH 32

/* ==== shared helpers (serial.h) ============================================================== */

/* ---- atomic writing ------------------------------------------------------------------------ */

mf_status mfio_create(mfio_wfile *f, const char *op, const char *path) {
  static int counter;
  f->fd = -1;
  f->op = op;
  f->path = path;
  size_t n = strlen(path) + 64;
  f->tmp = malloc(n);
  if (!f->tmp) return mf_fail(MF_ERR_MEMORY, "%s: %s: out of memory", op, path);
  snprintf(f->tmp, n, "%s.tmp.%ld", path, (long)getpid());
  for (int tries = 0; tries < 100; tries++) {
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (f->fd >= 0 || errno != EEXIST) break;
    snprintf(f->tmp, n, "%s.tmp.%ld.%d", path, (long)getpid(),
             __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED));
  }
  if (f->fd < 0) {
    mf_status s =
        mf_fail(MF_ERR_IO, "%s: %s: cannot create %s: %s", op, path, f->tmp, strerror(errno));
    free(f->tmp);
    f->tmp = NULL;
    return s;
  }
  return MF_OK;
}

mf_status mfio_write(mfio_wfile *f, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t k = write(f->fd, c, n < (1u << 30) ? n : (1u << 30));
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0)
      return mf_fail(MF_ERR_IO, "%s: %s: write error: %s", f->op, f->path,
                     k < 0 ? strerror(errno) : "nothing written");
    c += k;
    n -= (size_t)k;
  }
  return MF_OK;
}

void mfio_abort(mfio_wfile *f) {
  if (f->fd >= 0) close(f->fd);
  f->fd = -1;
  if (f->tmp) unlink(f->tmp);
  free(f->tmp);
  f->tmp = NULL;
}

mf_status mfio_commit(mfio_wfile *f) {
  mf_status s = MF_OK;
  if (fsync(f->fd) != 0 && errno != EINVAL)
    s = mf_fail(MF_ERR_IO, "%s: %s: fsync failed: %s", f->op, f->path, strerror(errno));
  int rc = close(f->fd);
  f->fd = -1;
  if (s == MF_OK && rc != 0)
    s = mf_fail(MF_ERR_IO, "%s: %s: write error on close: %s", f->op, f->path, strerror(errno));
  if (s == MF_OK && rename(f->tmp, f->path) != 0)
    s = mf_fail(MF_ERR_IO, "%s: %s: cannot rename %s to it: %s", f->op, f->path, f->tmp,
                strerror(errno));
  if (s != MF_OK) {
    mfio_abort(f);
    return s;
  }
  /* make the rename itself durable (best effort: some file systems refuse fsync on folders) */
  char *copy = strdup(f->path);
  if (copy) {
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void)fsync(dfd);
      close(dfd);
    }
    free(copy);
  }
  free(f->tmp);
  f->tmp = NULL;
  return MF_OK;
}

/* ---- reading ------------------------------------------------------------------------------- */

mf_status mfio_map_file(const char *op, const char *path, mfio_map *m) {
  m->data = NULL;
  m->size = 0;
  if (!path) return mf_fail(MF_ERR_ARG, "%s: path is NULL", op);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return mf_fail(MF_ERR_IO, "%s: %s: cannot open: %s", op, path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    mf_status s = mf_fail(MF_ERR_IO, "%s: %s: cannot stat: %s", op, path, strerror(errno));
    close(fd);
    return s;
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return mf_fail(MF_ERR_IO, "%s: %s: not a regular file", op, path);
  }
  if (st.st_size > 0) {
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      mf_status s =
          mf_fail(MF_ERR_IO, "%s: %s: cannot map the file: %s", op, path, strerror(errno));
      close(fd);
      return s;
    }
    m->data = p;
    m->size = (size_t)st.st_size;
  }
  close(fd);
  return MF_OK;
}

void mfio_unmap(mfio_map *m) {
  if (m->data) munmap((void *)m->data, m->size);
  m->data = NULL;
  m->size = 0;
}

mf_status mfio_load_list_file(const char *op, mfio_list_reader read, const char *path, int nsel,
                              const char *const *sel, mf_tensor_list *out) {
  if (!out) return mf_fail(MF_ERR_ARG, "%s: out is NULL", op);
  memset(out, 0, sizeof *out);
  mfio_map m;
  MF_TRY(mfio_map_file(op, path, &m));
  mf_status s = read(path, &m, nsel, sel, out);
  mfio_unmap(&m);
  if (s != MF_OK) mf_tensor_list_free(out);
  return s;
}

mf_status mfio_load_list_memory(const char *op, mfio_list_reader read, const char *name,
                                const void *data, size_t n, int nsel, const char *const *sel,
                                mf_tensor_list *out) {
  if (!out) return mf_fail(MF_ERR_ARG, "%s: out is NULL", op);
  memset(out, 0, sizeof *out);
  if (!data && n) return mf_fail(MF_ERR_ARG, "%s: data is NULL", op);
  mfio_map m = {data, n};
  mf_status s = read(name ? name : "buffer", &m, nsel, sel, out);
  if (s != MF_OK) mf_tensor_list_free(out);
  return s;
}

/* ---- element types ------------------------------------------------------------------------- */

static const struct {
  const char *name;
  size_t size;
  mf_dtype dtype;
} el_info[EL_COUNT] = {
    [EL_BOOL] = {"BOOL", 1, MF_BOOL}, [EL_U8] = {"U8", 1, MF_U8},
    [EL_I8] = {"I8", 1, MF_I32},      [EL_I16] = {"I16", 2, MF_I32},
    [EL_U16] = {"U16", 2, MF_I32},    [EL_I32] = {"I32", 4, MF_I32},
    [EL_U32] = {"U32", 4, MF_I64},    [EL_I64] = {"I64", 8, MF_I64},
    [EL_U64] = {"U64", 8, MF_I64},    [EL_F16] = {"F16", 2, MF_F32},
    [EL_BF16] = {"BF16", 2, MF_F32},  [EL_F32] = {"F32", 4, MF_F32},
    [EL_F64] = {"F64", 8, MF_F64},
};

size_t mfio_el_size(mfio_el e) { return (unsigned)e < EL_COUNT ? el_info[e].size : 0; }
const char *mfio_el_name(mfio_el e) { return (unsigned)e < EL_COUNT ? el_info[e].name : "?"; }
mf_dtype mfio_el_dtype(mfio_el e) { return (unsigned)e < EL_COUNT ? el_info[e].dtype : MF_F32; }

static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, m = h & 1023, u;
  if (e == 31)
    u = sign | 0x7f800000u | (m << 13);
  else if (e)
    u = sign | ((e + 112) << 23) | (m << 13);
  else if (!m)
    u = sign;
  else { /* subnormal: normalise */
    e = 113;
    while (!(m & 1024)) m <<= 1, e--;
    u = sign | (e << 23) | ((m & 1023) << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* Loads element i of size `sz` at src as an unsigned integer of that width: the file's bytes are
 * big-endian when `big` is set, little-endian otherwise (whatever the host). */
static inline uint64_t load_uint(const unsigned char *src, int64_t i, size_t sz, bool big) {
  const unsigned char *p = src + i * (int64_t)sz;
  uint64_t v = 0;
  for (size_t k = 0; k < sz; k++) v |= (uint64_t)p[big ? k : sz - 1 - k] << (8 * (sz - 1 - k));
  return v;
}

mf_status mfio_decode(const char *op, const char *path, const char *what, mfio_el e, bool big,
                      const unsigned char *src, int64_t n, void *dst) {
  size_t sz = mfio_el_size(e);
  if (!big && !HOST_BIG_ENDIAN && el_info[e].size == mf_dtype_size(el_info[e].dtype) &&
      e != EL_BOOL && e != EL_U32) {
    memcpy(dst, src, (size_t)n * sz); /* same layout: U8, I32, I64, F32, F64 (and U64, checked) */
    if (e == EL_U64) {
      const int64_t *d = dst;
      for (int64_t i = 0; i < n; i++)
        if (d[i] < 0)
          return mf_fail(MF_ERR_IO,
                         "%s: %s: %s: element %lld (%llu) of a U64 tensor does not fit "
                         "int64",
                         op, path, what, (long long)i + 1, (unsigned long long)d[i]);
    }
    return MF_OK;
  }
  for (int64_t i = 0; i < n; i++) {
    uint64_t v = load_uint(src, i, sz, big);
    switch (e) {
    case EL_BOOL: ((uint8_t *)dst)[i] = v != 0; break;
    case EL_U8: ((uint8_t *)dst)[i] = (uint8_t)v; break;
    case EL_I8: ((int32_t *)dst)[i] = (int8_t)(uint8_t)v; break;
    case EL_I16: ((int32_t *)dst)[i] = (int16_t)(uint16_t)v; break;
    case EL_U16: ((int32_t *)dst)[i] = (int32_t)v; break;
    case EL_I32: ((int32_t *)dst)[i] = (int32_t)(uint32_t)v; break;
    case EL_U32: ((int64_t *)dst)[i] = (int64_t)v; break;
    case EL_I64: ((int64_t *)dst)[i] = (int64_t)v; break;
    case EL_U64:
      if (v > (uint64_t)INT64_MAX)
        return mf_fail(MF_ERR_IO,
                       "%s: %s: %s: element %lld (%llu) of a U64 tensor does not fit "
                       "int64",
                       op, path, what, (long long)i + 1, (unsigned long long)v);
      ((int64_t *)dst)[i] = (int64_t)v;
      break;
    case EL_F16: ((float *)dst)[i] = half_to_float((uint16_t)v); break;
    case EL_BF16: {
      uint32_t u = (uint32_t)v << 16;
      memcpy((float *)dst + i, &u, 4);
      break;
    }
    case EL_F32: {
      uint32_t u = (uint32_t)v;
      memcpy((float *)dst + i, &u, 4);
      break;
    }
    case EL_F64: memcpy((double *)dst + i, &v, 8); break;
    default: break;
    }
  }
  return MF_OK;
}

mf_status mfio_tensor_bytes(const char *op, const char *path, const mf_tensor *t, mf_dtype as,
                            const unsigned char **out, void **owned) {
  *out = NULL;
  *owned = NULL;
  if (as == t->dtype && !HOST_BIG_ENDIAN && mf_device_kind(mf_tensor_device(t)) == MF_DEV_CPU &&
      mf_is_contiguous(t) && t->dtype != MF_BOOL) {
    *out = mf_numel(t) ? mf_data(t) : (const unsigned char *)"";
    return MF_OK;
  }
  size_t es = mf_dtype_size(as), n = (size_t)mf_numel(t);
  unsigned char *buf = malloc(n ? n * es : 1);
  if (!buf) return mf_fail(MF_ERR_MEMORY, "%s: %s: out of memory (%zu bytes)", op, path, n * es);
  mf_status s = n ? mf_to_host(t, as, buf) : MF_OK;
  if (s != MF_OK) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", mf_error());
    free(buf);
    return mf_fail(s, "%s: %s: cannot read the tensor's data: %s", op, path, msg);
  }
  if (as == MF_BOOL)
    for (size_t i = 0; i < n; i++) buf[i] = buf[i] != 0;
  if (HOST_BIG_ENDIAN && es > 1)
    for (size_t i = 0; i < n; i++)
      for (size_t a = 0, b = es - 1; a < b; a++, b--) {
        unsigned char c = buf[i * es + a];
        buf[i * es + a] = buf[i * es + b];
        buf[i * es + b] = c;
      }
  *out = buf;
  *owned = buf;
  return MF_OK;
}

/* ---- result lists -------------------------------------------------------------------------- */

void mf_tensor_list_free(mf_tensor_list *l) {
  if (!l) return;
  for (int i = 0; i < l->n; i++) {
    mf_release(l->tensors[i]);
    free(l->names[i]);
  }
  for (int i = 0; i < l->nmeta; i++) {
    free(l->meta_keys[i]);
    free(l->meta_values[i]);
  }
  free(l->names);
  free(l->tensors);
  free(l->meta_keys);
  free(l->meta_values);
  memset(l, 0, sizeof *l);
}

mf_tensor *mf_tensor_list_get(const mf_tensor_list *l, const char *name) {
  for (int i = 0; l && name && i < l->n; i++)
    if (strcmp(l->names[i], name) == 0) return l->tensors[i];
  return NULL;
}

/* Grows two parallel arrays of pointers to hold at least n + 1 entries. */
static bool grow2(void ***a, void ***b, int n, int *cap) {
  if (n < *cap) return true;
  int nc = *cap ? 2 * *cap : 8;
  void **na = realloc(*a, (size_t)nc * sizeof *na);
  if (!na) return false;
  *a = na;
  void **nb = realloc(*b, (size_t)nc * sizeof *nb);
  if (!nb) return false;
  *b = nb;
  *cap = nc;
  return true;
}

mf_status mfio_list_push(mf_tensor_list *l, const char *name, mf_tensor *t) {
  char *copy = strdup(name);
  if (!copy || !grow2((void ***)&l->names, (void ***)&l->tensors, l->n, &l->cap)) {
    free(copy);
    mf_release(t);
    return mf_fail(MF_ERR_MEMORY, "out of memory collecting tensors");
  }
  l->names[l->n] = copy;
  l->tensors[l->n++] = t;
  return MF_OK;
}

mf_status mfio_list_meta(mf_tensor_list *l, const char *key, const char *value) {
  char *k = strdup(key), *v = strdup(value);
  if (!k || !v ||
      !grow2((void ***)&l->meta_keys, (void ***)&l->meta_values, l->nmeta, &l->capmeta)) {
    free(k);
    free(v);
    return mf_fail(MF_ERR_MEMORY, "out of memory collecting metadata");
  }
  l->meta_keys[l->nmeta] = k;
  l->meta_values[l->nmeta++] = v;
  return MF_OK;
}

bool mfio_selected(int nsel, const char *const *sel, const char *name) {
  if (nsel <= 0) return true;
  for (int i = 0; i < nsel; i++)
    if (sel[i] && strcmp(sel[i], name) == 0) return true;
  return false;
}

mf_status mfio_check_selection(const char *op, const char *path, int nsel, const char *const *sel,
                               const mf_tensor_list *l, int nall, const char *const *all) {
  for (int i = 0; i < nsel; i++) {
    if (!sel[i]) return mf_fail(MF_ERR_ARG, "%s: %s: selected name %d is NULL", op, path, i + 1);
    if (mf_tensor_list_get(l, sel[i])) continue;
    char have[600];
    size_t k = 0;
    have[0] = 0;
    for (int j = 0; j < nall && k < sizeof have - 1; j++)
      k += (size_t)snprintf(have + k, sizeof have - k, "%s'%s'", j ? ", " : "", all[j]);
    if (k >= sizeof have - 1) strcpy(have + sizeof have - 5, "...");
    return mf_fail(MF_ERR_IO, "%s: %s: no tensor named '%s' (the file has %d: %s)", op, path,
                   sel[i], nall, nall ? have : "none");
  }
  return MF_OK;
}

mf_status mfio_check_names(const char *op, const char *path, int n, const char *const *names,
                           mf_tensor *const *tensors) {
  if (n < 0) return mf_fail(MF_ERR_ARG, "%s: %s: negative tensor count %d", op, path, n);
  if (n > 0 && (!names || !tensors))
    return mf_fail(MF_ERR_ARG, "%s: %s: names or tensors is NULL", op, path);
  for (int i = 0; i < n; i++) {
    if (!names[i]) return mf_fail(MF_ERR_ARG, "%s: %s: name %d is NULL", op, path, i + 1);
    if (!tensors[i]) return mf_fail(MF_ERR_ARG, "%s: %s: tensor '%s' is NULL", op, path, names[i]);
    for (int j = 0; j < i; j++)
      if (strcmp(names[i], names[j]) == 0)
        return mf_fail(MF_ERR_ARG, "%s: %s: two tensors are named '%s'", op, path, names[i]);
  }
  return MF_OK;
}

/* ==== JSON ==================================================================================== */

typedef enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

typedef struct jnode {
  jtype type;
  char *key; /* member name inside an object (NUL-terminated), else NULL */
  size_t keylen;
  char *str; /* J_STR, NUL-terminated */
  size_t len;
  bool is_uint; /* J_NUM: a non-negative integer that fits uint64 */
  uint64_t u;
  int n; /* J_ARR, J_OBJ: items */
  struct jnode *items;
} jnode;

typedef struct jparser {
  const unsigned char *p, *begin, *end;
  char err[160];
} jparser;

static void jfree(jnode *j) {
  free(j->key);
  free(j->str);
  for (int i = 0; i < j->n; i++) jfree(&j->items[i]);
  free(j->items);
  memset(j, 0, sizeof *j);
}

static bool jerr(jparser *P, const char *what) {
  if (!P->err[0])
    snprintf(P->err, sizeof P->err, "%s at byte %lld of the header", what,
             (long long)(P->p - P->begin));
  return false;
}

static void skip_ws(jparser *P) {
  while (P->p < P->end && (*P->p == ' ' || *P->p == '\t' || *P->p == '\n' || *P->p == '\r')) P->p++;
}

static void put_utf8(char *out, size_t *k, uint32_t c) {
  if (c < 0x80)
    out[(*k)++] = (char)c;
  else if (c < 0x800) {
    out[(*k)++] = (char)(0xC0 | c >> 6);
    out[(*k)++] = (char)(0x80 | (c & 63));
  } else if (c < 0x10000) {
    out[(*k)++] = (char)(0xE0 | c >> 12);
    out[(*k)++] = (char)(0x80 | (c >> 6 & 63));
    out[(*k)++] = (char)(0x80 | (c & 63));
  } else {
    out[(*k)++] = (char)(0xF0 | c >> 18);
    out[(*k)++] = (char)(0x80 | (c >> 12 & 63));
    out[(*k)++] = (char)(0x80 | (c >> 6 & 63));
    out[(*k)++] = (char)(0x80 | (c & 63));
  }
}

static bool hex4(jparser *P, uint32_t *v) {
  *v = 0;
  if (P->end - P->p < 4) return jerr(P, "bad JSON: truncated \\u escape");
  for (int i = 0; i < 4; i++) {
    int c = *P->p++, d = c >= '0' && c <= '9'   ? c - '0'
                         : c >= 'a' && c <= 'f' ? c - 'a' + 10
                         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                : -1;
    if (d < 0) return jerr(P, "bad JSON: bad \\u escape");
    *v = *v << 4 | (uint32_t)d;
  }
  return true;
}

/* A string at P->p (at the opening quote): a malloc'd NUL-terminated copy with escapes decoded.
 * The whole header was checked to be valid UTF-8 beforehand. */
static bool jstring(jparser *P, char **out, size_t *len) {
  P->p++; /* the quote */
  const unsigned char *q = P->p;
  while (q < P->end && *q != '"') q += *q == '\\' && q + 1 < P->end ? 2 : 1;
  if (q >= P->end) return jerr(P, "bad JSON: unterminated string");
  char *s = malloc((size_t)(q - P->p) + 1); /* decoded is never longer than encoded */
  if (!s) return jerr(P, "out of memory");
  size_t k = 0;
  while (*P->p != '"') {
    unsigned c = *P->p;
    if (c < 0x20) {
      free(s);
      return jerr(P, "bad JSON: control character inside a string");
    }
    if (c != '\\') {
      s[k++] = (char)c;
      P->p++;
      continue;
    }
    P->p++;
    c = *P->p++;
    switch (c) {
    case '"': s[k++] = '"'; break;
    case '\\': s[k++] = '\\'; break;
    case '/': s[k++] = '/'; break;
    case 'b': s[k++] = '\b'; break;
    case 'f': s[k++] = '\f'; break;
    case 'n': s[k++] = '\n'; break;
    case 'r': s[k++] = '\r'; break;
    case 't': s[k++] = '\t'; break;
    case 'u': {
      uint32_t v, lo;
      if (!hex4(P, &v)) break;
      if (v >= 0xDC00 && v <= 0xDFFF) {
        jerr(P, "bad JSON: lone low surrogate in a \\u escape");
        break;
      }
      if (v >= 0xD800 && v <= 0xDBFF) {
        if (P->end - P->p < 2 || P->p[0] != '\\' || P->p[1] != 'u') {
          jerr(P, "bad JSON: high surrogate without its low half");
          break;
        }
        P->p += 2;
        if (!hex4(P, &lo)) break;
        if (lo < 0xDC00 || lo > 0xDFFF) {
          jerr(P, "bad JSON: high surrogate without its low half");
          break;
        }
        v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
      }
      put_utf8(s, &k, v);
      break;
    }
    default: jerr(P, "bad JSON: unknown escape in a string");
    }
    if (P->err[0]) {
      free(s);
      return false;
    }
  }
  P->p++;
  s[k] = 0;
  *out = s;
  *len = k;
  return true;
}

static bool jvalue(jparser *P, jnode *j, int depth);

static bool jpush(jparser *P, jnode *j, int *cap, jnode **slot) {
  if (j->n == *cap) {
    int nc = *cap ? 2 * *cap : 4;
    jnode *ni = realloc(j->items, (size_t)nc * sizeof *ni);
    if (!ni) return jerr(P, "out of memory");
    j->items = ni;
    *cap = nc;
  }
  *slot = &j->items[j->n++];
  memset(*slot, 0, sizeof **slot);
  return true;
}

static int by_key(const void *a, const void *b) {
  const jnode *x = *(const jnode *const *)a, *y = *(const jnode *const *)b;
  size_t n = x->keylen < y->keylen ? x->keylen : y->keylen;
  int c = memcmp(x->key, y->key, n);
  return c ? c : (x->keylen > y->keylen) - (x->keylen < y->keylen);
}

/* An object's keys are unique: checked once it is read, by sorting them (a check of each key
 * against those before it took hours on a 100 MB header of small entries). */
static bool unique_keys(jparser *P, const jnode *j) {
  if (j->n < 2) return true;
  const jnode **k = malloc((size_t)j->n * sizeof *k);
  if (!k) return jerr(P, "out of memory");
  for (int i = 0; i < j->n; i++) k[i] = &j->items[i];
  qsort(k, (size_t)j->n, sizeof *k, by_key);
  for (int i = 1; i < j->n; i++)
    if (by_key(&k[i - 1], &k[i]) == 0) {
      snprintf(P->err, sizeof P->err,
               "bad JSON: duplicate key \"%.60s\" in the object ending at byte %lld of the header",
               k[i]->key, (long long)(P->p - P->begin));
      free(k);
      return false;
    }
  free(k);
  return true;
}

static bool jcontainer(jparser *P, jnode *j, int depth, bool obj) {
  if (depth > MAX_DEPTH) return jerr(P, "bad JSON: nested deeper than 32 levels");
  j->type = obj ? J_OBJ : J_ARR;
  P->p++;
  skip_ws(P);
  int cap = 0;
  char close = obj ? '}' : ']';
  if (P->p < P->end && *P->p == close) {
    P->p++;
    return true;
  }
  for (;;) {
    jnode *it;
    skip_ws(P);
    if (obj) {
      if (P->p >= P->end || *P->p != '"') return jerr(P, "bad JSON: expected a string key");
      char *key;
      size_t klen;
      if (!jstring(P, &key, &klen)) return false;
      if (!jpush(P, j, &cap, &it)) {
        free(key);
        return false;
      }
      it->key = key;
      it->keylen = klen;
      skip_ws(P);
      if (P->p >= P->end || *P->p != ':') return jerr(P, "bad JSON: expected ':' after a key");
      P->p++;
    } else if (!jpush(P, j, &cap, &it))
      return false;
    if (!jvalue(P, it, depth + 1)) return false;
    skip_ws(P);
    if (P->p < P->end && *P->p == ',') {
      P->p++;
      continue;
    }
    if (P->p < P->end && *P->p == close) {
      P->p++;
      return !obj || unique_keys(P, j);
    }
    return jerr(P, obj ? "bad JSON: expected ',' or '}'" : "bad JSON: expected ',' or ']'");
  }
}

static bool jnumber(jparser *P, jnode *j) {
  const unsigned char *s = P->p;
  bool neg = false, intpart = true;
  j->type = J_NUM;
  if (P->p < P->end && *P->p == '-') neg = true, P->p++;
  if (P->p >= P->end || *P->p < '0' || *P->p > '9') return jerr(P, "bad JSON: bad number");
  if (*P->p == '0' && P->p + 1 < P->end && P->p[1] >= '0' && P->p[1] <= '9')
    return jerr(P, "bad JSON: number with a leading zero");
  uint64_t u = 0;
  bool overflow = false;
  while (P->p < P->end && *P->p >= '0' && *P->p <= '9') {
    unsigned d = *P->p++ - '0';
    if (u > (UINT64_MAX - d) / 10)
      overflow = true;
    else
      u = u * 10 + d;
  }
  if (P->p < P->end && *P->p == '.') {
    intpart = false;
    P->p++;
    if (P->p >= P->end || *P->p < '0' || *P->p > '9') return jerr(P, "bad JSON: bad fraction");
    while (P->p < P->end && *P->p >= '0' && *P->p <= '9') P->p++;
  }
  if (P->p < P->end && (*P->p == 'e' || *P->p == 'E')) {
    intpart = false;
    P->p++;
    if (P->p < P->end && (*P->p == '+' || *P->p == '-')) P->p++;
    if (P->p >= P->end || *P->p < '0' || *P->p > '9') return jerr(P, "bad JSON: bad exponent");
    while (P->p < P->end && *P->p >= '0' && *P->p <= '9') P->p++;
  }
  j->is_uint = intpart && !overflow && (!neg || u == 0);
  j->u = j->is_uint ? u : 0;
  (void)s;
  return true;
}

static bool jliteral(jparser *P, const char *word, jtype t, jnode *j) {
  size_t n = strlen(word);
  if ((size_t)(P->end - P->p) < n || memcmp(P->p, word, n) != 0)
    return jerr(P, "bad JSON: unexpected character");
  P->p += n;
  j->type = t;
  return true;
}

static bool jvalue(jparser *P, jnode *j, int depth) {
  skip_ws(P);
  if (P->p >= P->end) return jerr(P, "bad JSON: unexpected end");
  switch (*P->p) {
  case '{': return jcontainer(P, j, depth, true);
  case '[': return jcontainer(P, j, depth, false);
  case '"': j->type = J_STR; return jstring(P, &j->str, &j->len);
  case 't': return jliteral(P, "true", J_BOOL, j);
  case 'f': return jliteral(P, "false", J_BOOL, j);
  case 'n': return jliteral(P, "null", J_NULL, j);
  default: return jnumber(P, j);
  }
}

/* Length of the valid UTF-8 prefix of s[0..n) (n when all of it is valid). */
static size_t utf8_valid(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!k || i + k > n || (k == 2 && c < 0xC2)) return i;
    uint32_t v = k == 1 ? c : c & (0x7F >> k);
    for (size_t m = 1; m < k; m++) {
      if ((s[i + m] & 0xC0) != 0x80) return i;
      v = v << 6 | (s[i + m] & 63);
    }
    if ((k == 3 && (v < 0x800 || (v >= 0xD800 && v <= 0xDFFF))) ||
        (k == 4 && (v < 0x10000 || v > 0x10FFFF)))
      return i;
    i += k;
  }
  return n;
}

/* ==== reading ================================================================================ */

#define RD "load_safetensors"

typedef struct entry {
  const char *name;
  mfio_el el;
  int ndim;
  int64_t shape[MF_MAX_DIMS];
  uint64_t begin, end;
} entry;

static int by_offset(const void *a, const void *b) {
  const entry *x = *(entry *const *)a, *y = *(entry *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return x->end < y->end ? -1 : x->end > y->end;
}

static const jnode *jget(const jnode *obj, const char *key) {
  for (int i = 0; i < obj->n; i++)
    if (strcmp(obj->items[i].key, key) == 0 && strlen(key) == obj->items[i].keylen)
      return &obj->items[i];
  return NULL;
}

static mf_status parse_entry(const char *path, const jnode *j, entry *e, uint64_t blen) {
  const char *nm = j->key;
  if (strlen(nm) != j->keylen)
    return mf_fail(MF_ERR_IO, RD ": %s: a tensor name contains a NUL character", path);
  if (j->type != J_OBJ)
    return mf_fail(MF_ERR_IO,
                   RD ": %s: tensor '%s': expected an object with dtype, shape and "
                      "data_offsets",
                   path, nm);
  const jnode *dt = jget(j, "dtype"), *sh = jget(j, "shape"), *of = jget(j, "data_offsets");
  if (!dt || !sh || !of)
    return mf_fail(MF_ERR_IO, RD ": %s: tensor '%s': missing \"%s\"", path, nm,
                   !dt   ? "dtype"
                   : !sh ? "shape"
                         : "data_offsets");
  e->name = nm;
  e->el = EL_COUNT;
  for (int k = 0; dt->type == J_STR && k < EL_COUNT; k++)
    if (strcmp(dt->str, el_info[k].name) == 0) e->el = (mfio_el)k;
  if (e->el == EL_COUNT)
    return mf_fail(MF_ERR_IO,
                   RD ": %s: tensor '%s': unsupported dtype %s%s%s (known: BOOL U8 I8 "
                      "I16 U16 I32 U32 I64 U64 F16 BF16 F32 F64)",
                   path, nm, dt->type == J_STR ? "\"" : "",
                   dt->type == J_STR ? dt->str : "(not a string)", dt->type == J_STR ? "\"" : "");
  if (sh->type != J_ARR)
    return mf_fail(MF_ERR_IO, RD ": %s: tensor '%s': shape is not a list", path, nm);
  if (sh->n > MF_MAX_DIMS)
    return mf_fail(MF_ERR_IO,
                   RD ": %s: tensor '%s': %d dimensions, moonflow tensors have at most "
                      "%d",
                   path, nm, sh->n, MF_MAX_DIMS);
  e->ndim = sh->n;
  uint64_t bytes = mfio_el_size(e->el);
  bool overflow = false, zero = false;
  for (int d = 0; d < sh->n; d++) {
    const jnode *v = &sh->items[d];
    if (v->type != J_NUM || !v->is_uint || v->u > (uint64_t)INT64_MAX)
      return mf_fail(MF_ERR_IO,
                     RD ": %s: tensor '%s': size %d of the shape is not a non-negative "
                        "integer",
                     path, nm, d + 1);
    e->shape[d] = (int64_t)v->u;
    if (v->u == 0)
      zero = true;
    else if (!overflow && bytes > (1ull << 50) / v->u)
      overflow = true;
    else if (!overflow)
      bytes *= v->u;
  }
  if (zero) bytes = 0;
  if (overflow) /* even with a zero size: the tensor's strides would overflow */
    return mf_fail(MF_ERR_IO, RD ": %s: tensor '%s': its shape overflows (a corrupt header)", path,
                   nm);
  if (of->type != J_ARR || of->n != 2 || of->items[0].type != J_NUM || !of->items[0].is_uint ||
      of->items[1].type != J_NUM || !of->items[1].is_uint)
    return mf_fail(MF_ERR_IO,
                   RD ": %s: tensor '%s': data_offsets must be two non-negative "
                      "integers [begin, end]",
                   path, nm);
  e->begin = of->items[0].u;
  e->end = of->items[1].u;
  if (e->begin > e->end)
    return mf_fail(MF_ERR_IO,
                   RD ": %s: tensor '%s': data_offsets [%llu, %llu] end before they "
                      "begin",
                   path, nm, (unsigned long long)e->begin, (unsigned long long)e->end);
  if (e->end > blen)
    return mf_fail(MF_ERR_IO,
                   RD ": %s: truncated: tensor '%s' has data_offsets [%llu, %llu] past "
                      "the end of the %llu-byte data buffer",
                   path, nm, (unsigned long long)e->begin, (unsigned long long)e->end,
                   (unsigned long long)blen);
  if (e->end - e->begin != bytes) {
    char s[160];
    mf_shape_fmt(e->ndim, e->shape, s, sizeof s);
    return mf_fail(MF_ERR_IO,
                   RD ": %s: tensor '%s': wrong size: %s %s needs %llu bytes but "
                      "data_offsets [%llu, %llu] hold %llu",
                   path, nm, mfio_el_name(e->el), s, (unsigned long long)bytes,
                   (unsigned long long)e->begin, (unsigned long long)e->end,
                   (unsigned long long)(e->end - e->begin));
  }
  return MF_OK;
}

static mf_status read_tensors(const char *path, const mfio_map *m, const jnode *root, int nsel,
                              const char *const *sel, mf_tensor_list *out) {
  uint64_t hlen = 0;
  for (int k = 0; k < 8; k++) hlen |= (uint64_t)m->data[k] << (8 * k);
  const unsigned char *buf = m->data + 8 + hlen;
  uint64_t blen = m->size - 8 - hlen;
  int nt = 0;
  entry *es = calloc((size_t)root->n + 1, sizeof *es);
  entry **order = calloc((size_t)root->n + 1, sizeof *order);
  const char **names = calloc((size_t)root->n + 1, sizeof *names);
  mf_status s = MF_OK;
  if (!es || !order || !names) s = mf_fail(MF_ERR_MEMORY, RD ": %s: out of memory", path);
  for (int i = 0; s == MF_OK && i < root->n; i++) {
    const jnode *j = &root->items[i];
    if (strcmp(j->key, "__metadata__") == 0) {
      if (j->type == J_NULL) continue;
      if (j->type != J_OBJ) {
        s = mf_fail(MF_ERR_IO, RD ": %s: __metadata__ is not an object of strings", path);
        break;
      }
      for (int k = 0; s == MF_OK && k < j->n; k++) {
        const jnode *v = &j->items[k];
        if (v->type != J_STR)
          s = mf_fail(MF_ERR_IO, RD ": %s: __metadata__ value of '%s' is not a string", path,
                      v->key);
        else if (strlen(v->key) != v->keylen || strlen(v->str) != v->len)
          s = mf_fail(MF_ERR_IO, RD ": %s: __metadata__ entry '%s' contains a NUL character", path,
                      v->key);
        else
          s = mfio_list_meta(out, v->key, v->str);
      }
      continue;
    }
    s = parse_entry(path, j, &es[nt], blen);
    if (s == MF_OK) {
      order[nt] = &es[nt];
      names[nt] = es[nt].name;
      nt++;
    }
  }
  if (s == MF_OK) { /* the data buffer must be covered exactly */
    qsort(order, (size_t)nt, sizeof *order, by_offset);
    uint64_t at = 0;
    const entry *prev = NULL;
    for (int i = 0; s == MF_OK && i < nt; i++) {
      const entry *e = order[i];
      if (e->begin < at)
        s = mf_fail(MF_ERR_IO, RD ": %s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap",
                    path, prev->name, (unsigned long long)prev->begin,
                    (unsigned long long)prev->end, e->name, (unsigned long long)e->begin,
                    (unsigned long long)e->end);
      else if (e->begin > at)
        s = mf_fail(MF_ERR_IO,
                    RD ": %s: a gap of %llu unused bytes in the data buffer before "
                       "tensor '%s' at offset %llu",
                    path, (unsigned long long)(e->begin - at), e->name,
                    (unsigned long long)e->begin);
      if (e->end > at)
        at = e->end, prev = e;
      else if (!prev)
        prev = e;
    }
    if (s == MF_OK && at != blen)
      s = mf_fail(MF_ERR_IO,
                  RD ": %s: %llu bytes after the data of the last tensor (the "
                     "tensors cover %llu of the %llu-byte data buffer)",
                  path, (unsigned long long)(blen - at), (unsigned long long)at,
                  (unsigned long long)blen);
  }
  for (int i = 0; s == MF_OK && i < nt; i++) {
    entry *e = &es[i];
    if (!mfio_selected(nsel, sel, e->name)) continue;
    mf_tensor *t = NULL;
    s = mf_empty(e->ndim, e->shape, mfio_el_dtype(e->el), mf_cpu(), &t);
    if (s == MF_OK)
      s = mfio_decode(RD, path, e->name, e->el, false, buf + e->begin,
                      mf_shape_numel(e->ndim, e->shape), mf_data(t));
    if (s == MF_OK)
      s = mfio_list_push(out, e->name, t);
    else
      mf_release(t);
  }
  if (s == MF_OK) s = mfio_check_selection(RD, path, nsel, sel, out, nt, names);
  free(es);
  free(order);
  free(names);
  return s;
}

/* The whole file (or buffer) m, named `path` in messages. */
static mf_status load_bytes(const char *path, const mfio_map *m, int nsel, const char *const *sel,
                            mf_tensor_list *out) {
  mf_status s = MF_OK;
  uint64_t hlen = 0;
  if (m->size < 8)
    s = mf_fail(MF_ERR_IO,
                RD ": %s: truncated: %zu bytes, a safetensors file starts with an "
                   "8-byte header length",
                path, m->size);
  else {
    for (int k = 0; k < 8; k++) hlen |= (uint64_t)m->data[k] << (8 * k);
    if (hlen > MAX_HEADER)
      s = mf_fail(MF_ERR_IO,
                  RD ": %s: header length %llu is over the 100,000,000-byte limit (not "
                     "a safetensors file?)",
                  path, (unsigned long long)hlen);
    else if (hlen > m->size - 8)
      s = mf_fail(MF_ERR_IO,
                  RD ": %s: header length %llu runs past the end of the file (%zu "
                     "bytes): truncated or not a safetensors file",
                  path, (unsigned long long)hlen, m->size);
  }
  jnode root = {0};
  if (s == MF_OK) {
    const unsigned char *h = m->data + 8;
    size_t ok = utf8_valid(h, hlen);
    jparser P = {.p = h, .begin = h, .end = h + hlen};
    if (ok != hlen)
      s = mf_fail(MF_ERR_IO, RD ": %s: bad JSON header: invalid UTF-8 at byte %zu", path, ok);
    else if (skip_ws(&P), P.p >= P.end || *P.p != '{')
      s = mf_fail(MF_ERR_IO, RD ": %s: bad JSON header: it does not start with '{'", path);
    else if (!jvalue(&P, &root, 0) ||
             (skip_ws(&P), P.p != P.end && !jerr(&P, "bad JSON: "
                                                     "trailing characters")))
      s = mf_fail(MF_ERR_IO, RD ": %s: %s", path, P.err);
  }
  if (s == MF_OK) s = read_tensors(path, m, &root, nsel, sel, out);
  jfree(&root);
  return s; /* out is freed on failure by mfio_load_list_* */
}

mf_status mf_load_safetensors(const char *path, int nsel, const char *const *sel,
                              mf_tensor_list *out) {
  return mfio_load_list_file(RD, load_bytes, path, nsel, sel, out);
}

mf_status mf_load_safetensors_from_memory(const char *name, const void *data, size_t n, int nsel,
                                          const char *const *sel, mf_tensor_list *out) {
  return mfio_load_list_memory(RD, load_bytes, name, data, n, nsel, sel, out);
}

/* ==== writing ================================================================================ */

#define WR "save_safetensors"

typedef struct sbuf {
  char *p;
  size_t n, cap;
  bool oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->n + n + 1 > b->cap) {
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->n + n + 1) nc *= 2;
    char *np = realloc(b->p, nc);
    if (!np) {
      b->oom = true;
      return;
    }
    b->p = np;
    b->cap = nc;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_fmt(sbuf *b, const char *fmt, unsigned long long v) {
  char t[32];
  int k = snprintf(t, sizeof t, fmt, v);
  sb_add(b, t, (size_t)k);
}

static void sb_json(sbuf *b, const char *s) {
  sb_add(b, "\"", 1);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      sb_add(b, e, 2);
    } else if (c < 0x20) {
      char e[8];
      snprintf(e, sizeof e, "\\u%04x", c);
      sb_add(b, e, 6);
    } else
      sb_add(b, (const char *)&c, 1);
  }
  sb_add(b, "\"", 1);
}

static mfio_el el_of(mf_dtype dt) {
  switch (dt) {
  case MF_F32: return EL_F32;
  case MF_F64: return EL_F64;
  case MF_I32: return EL_I32;
  case MF_I64: return EL_I64;
  case MF_U8: return EL_U8;
  case MF_BOOL: return EL_BOOL;
  case MF_F16: return EL_F16;
  case MF_BF16: return EL_BF16;
  default: return EL_COUNT;
  }
}

typedef struct witem {
  const char *name;
  const mf_tensor *t;
} witem;

static int by_size_name(const void *a, const void *b) {
  const witem *x = a, *y = b;
  size_t sx = mf_dtype_size(x->t->dtype), sy = mf_dtype_size(y->t->dtype);
  if (sx != sy) return sx > sy ? -1 : 1;
  return strcmp(x->name, y->name);
}

mf_status mf_save_safetensors(const char *path, int n, const char *const *names,
                              mf_tensor *const *tensors, int nmeta, const char *const *meta_keys,
                              const char *const *meta_values) {
  if (!path) return mf_fail(MF_ERR_ARG, WR ": path is NULL");
  MF_TRY(mfio_check_names(WR, path, n, names, tensors));
  if (nmeta < 0 || (nmeta > 0 && (!meta_keys || !meta_values)))
    return mf_fail(MF_ERR_ARG, WR ": %s: bad metadata arguments", path);
  for (int i = 0; i < nmeta; i++) {
    if (!meta_keys[i] || !meta_values[i])
      return mf_fail(MF_ERR_ARG, WR ": %s: metadata entry %d is NULL", path, i + 1);
    size_t kl = strlen(meta_keys[i]), vl = strlen(meta_values[i]);
    if (utf8_valid((const unsigned char *)meta_keys[i], kl) != kl ||
        utf8_valid((const unsigned char *)meta_values[i], vl) != vl)
      return mf_fail(MF_ERR_ARG, WR ": %s: metadata entry '%s' is not valid UTF-8", path,
                     meta_keys[i]);
    for (int j = 0; j < i; j++)
      if (strcmp(meta_keys[i], meta_keys[j]) == 0)
        return mf_fail(MF_ERR_ARG, WR ": %s: two metadata entries are named '%s'", path,
                       meta_keys[i]);
  }
  for (int i = 0; i < n; i++) {
    size_t l = strlen(names[i]);
    if (strcmp(names[i], "__metadata__") == 0)
      return mf_fail(MF_ERR_ARG, WR ": %s: the name __metadata__ is reserved", path);
    if (utf8_valid((const unsigned char *)names[i], l) != l)
      return mf_fail(MF_ERR_ARG, WR ": %s: tensor name '%s' is not valid UTF-8", path, names[i]);
    if (el_of(tensors[i]->dtype) == EL_COUNT)
      return mf_fail(MF_ERR_DTYPE,
                     WR ": %s: tensor '%s' has dtype %s, which safetensors cannot "
                        "hold",
                     path, names[i], mf_dtype_name(tensors[i]->dtype));
  }
  witem *items = calloc((size_t)n + 1, sizeof *items);
  if (!items) return mf_fail(MF_ERR_MEMORY, WR ": %s: out of memory", path);
  for (int i = 0; i < n; i++) items[i] = (witem){names[i], tensors[i]};
  qsort(items, (size_t)n, sizeof *items, by_size_name);

  sbuf h = {0};
  sb_str(&h, "{");
  if (nmeta > 0) {
    sb_str(&h, "\"__metadata__\":{");
    for (int i = 0; i < nmeta; i++) {
      if (i) sb_str(&h, ",");
      sb_json(&h, meta_keys[i]);
      sb_str(&h, ":");
      sb_json(&h, meta_values[i]);
    }
    sb_str(&h, "}");
  }
  uint64_t off = 0;
  for (int i = 0; i < n; i++) {
    const mf_tensor *t = items[i].t;
    if (i || nmeta > 0) sb_str(&h, ",");
    sb_json(&h, items[i].name);
    sb_str(&h, ":{\"dtype\":\"");
    sb_str(&h, mfio_el_name(el_of(t->dtype)));
    sb_str(&h, "\",\"shape\":[");
    for (int d = 0; d < t->ndim; d++)
      sb_fmt(&h, d ? ",%llu" : "%llu", (unsigned long long)t->shape[d]);
    uint64_t bytes = (uint64_t)mf_numel(t) * mf_dtype_size(t->dtype);
    sb_fmt(&h, "],\"data_offsets\":[%llu", off);
    sb_fmt(&h, ",%llu]}", off + bytes);
    off += bytes;
  }
  sb_str(&h, "}");
  while (!h.oom && h.n % 8) sb_str(&h, " ");
  mf_status s = MF_OK;
  if (h.oom)
    s = mf_fail(MF_ERR_MEMORY, WR ": %s: out of memory", path);
  else if (h.n > MAX_HEADER)
    s = mf_fail(MF_ERR_ARG,
                WR ": %s: the header would be %zu bytes, over safetensors' limit of "
                   "100,000,000",
                path, h.n);
  mfio_wfile f;
  if (s == MF_OK) s = mfio_create(&f, WR, path);
  if (s == MF_OK) {
    unsigned char len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (unsigned char)((uint64_t)h.n >> (8 * k));
    s = mfio_write(&f, len8, 8);
    if (s == MF_OK) s = mfio_write(&f, h.p, h.n);
    for (int i = 0; s == MF_OK && i < n; i++) {
      const unsigned char *bytes;
      void *owned;
      s = mfio_tensor_bytes(WR, path, items[i].t, items[i].t->dtype, &bytes, &owned);
      if (s == MF_OK)
        s = mfio_write(&f, bytes, (size_t)mf_numel(items[i].t) * mf_dtype_size(items[i].t->dtype));
      free(owned);
    }
    if (s == MF_OK)
      s = mfio_commit(&f);
    else
      mfio_abort(&f);
  }
  free(h.p);
  free(items);
  return s;
}
