/* npy.c — NumPy's .npy (one array) and .npz (a ZIP archive of .npy members) files, read and
 * written so that numpy.load and np.savez/np.savez_compressed interoperate with moonflow.
 *
 * .npy (FORMATS.md): magic 93 'NUMPY', u8 major, u8 minor; v1.0 a u16 LE header length at 8, v2.0
 * and v3.0 a u32 LE at 8; the header, a Python dict literal
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * padded with spaces and a final '\n' so that the data starts at a multiple of 64; then the data.
 * The writer uses v1.0 (v2.0 only when the header would not fit), C order, little-endian. The
 * reader takes any key order and whitespace, both byte orders, the descr list of FORMATS.md
 * (f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1; widened as moonflow_io.h says), and fortran_order True
 * (read as the reversed shape, transposed back, made contiguous). It rejects object ('|O') and
 * structured (list) dtypes, other descrs, unknown keys, and data that is short or too long.
 *
 * .npz: the writer stores members uncompressed (method 0, as np.savez does) with their CRC-32 from
 * zlib, switching to zip64 records when a size or offset does not fit 32 bits, and writes
 * atomically (serial.h). The reader finds the end-of-central-directory record from the back
 * (zip64 end record through its locator when present), trusts the central directory, takes zip64
 * extra fields (id 0x0001) for sizes and offsets stored as 0xFFFFFFFF, inflates method 8 with
 * zlib's raw inflate (inflateInit2(-15)) and checks every member's CRC-32.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "internal.h"
#include "serial.h"

/* ==== .npy =================================================================================== */

static const unsigned char MAGIC[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

/* The descr of a tensor dtype written to .npy (bfloat16: none, written as float32). */
static const char *descr_of(mf_dtype dt, mf_dtype *as) {
  *as = dt;
  switch (dt) {
  case MF_F32: return "<f4";
  case MF_F64: return "<f8";
  case MF_I32: return "<i4";
  case MF_I64: return "<i8";
  case MF_U8: return "|u1";
  case MF_BOOL: return "|b1";
  case MF_F16: return "<f2";
  case MF_BF16: *as = MF_F32; return "<f4";
  default: return NULL;
  }
}

/* The full header (magic, version, length, dict, padding) for t's shape and descr into *out. */
static mf_status npy_header(const char *op, const char *path, const char *descr, int ndim,
                            const int64_t *shape, char **out, size_t *len) {
  char dict[64 + 24 * MF_MAX_DIMS];
  int k = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
  for (int d = 0; d < ndim; d++)
    k += snprintf(dict + k, sizeof dict - (size_t)k, "%s%lld", d ? ", " : "", (long long)shape[d]);
  k += snprintf(dict + k, sizeof dict - (size_t)k, "%s), }", ndim == 1 ? "," : "");
  size_t pre = 10, total = (pre + (size_t)k + 1 + 63) / 64 * 64;
  bool v2 = total - pre > 65535;
  if (v2) pre = 12, total = (pre + (size_t)k + 1 + 63) / 64 * 64;
  char *h = malloc(total);
  if (!h) return mf_fail(MF_ERR_MEMORY, "%s: %s: out of memory", op, path);
  memcpy(h, MAGIC, 6);
  h[6] = v2 ? 2 : 1;
  h[7] = 0;
  size_t hl = total - pre;
  h[8] = (char)(hl & 255);
  h[9] = (char)(hl >> 8 & 255);
  if (v2) h[10] = (char)(hl >> 16 & 255), h[11] = (char)(hl >> 24 & 255);
  memcpy(h + pre, dict, (size_t)k);
  memset(h + pre + k, ' ', total - pre - (size_t)k - 1);
  h[total - 1] = '\n';
  *out = h;
  *len = total;
  return MF_OK;
}

/* ---- the header's dict literal -------------------------------------------------------------- */

typedef struct pyparse {
  const char *p, *end;
} pyparse;

static void py_ws(pyparse *P) {
  while (P->p < P->end && (*P->p == ' ' || *P->p == '\t' || *P->p == '\n' || *P->p == '\r')) P->p++;
}

static bool py_char(pyparse *P, char c) {
  py_ws(P);
  if (P->p < P->end && *P->p == c) {
    P->p++;
    return true;
  }
  return false;
}

/* A quoted string ('...' or "...", no escapes) into buf. */
static bool py_str(pyparse *P, char *buf, size_t cap) {
  py_ws(P);
  if (P->p >= P->end || (*P->p != '\'' && *P->p != '"')) return false;
  char q = *P->p++;
  size_t k = 0;
  while (P->p < P->end && *P->p != q) {
    if (*P->p == '\\' || k + 1 >= cap) return false;
    buf[k++] = *P->p++;
  }
  if (P->p >= P->end) return false;
  P->p++;
  buf[k] = 0;
  return true;
}

typedef struct npy_info {
  mfio_el el;
  bool big;
  bool fortran;
  int ndim;
  int64_t shape[MF_MAX_DIMS];
  uint64_t nbytes; /* of data */
} npy_info;

/* descr -> element type; fills why on failure. */
static bool parse_descr(const char *d, npy_info *info, char *why, size_t nwhy) {
  size_t n = strlen(d);
  if (n >= 2 && (d[1] == 'O' || d[0] == 'O')) {
    snprintf(why, nwhy, "object arrays ('%s') are not supported", d);
    return false;
  }
  char order = n ? d[0] : 0;
  if (n < 3 || !strchr("<>|=", order)) {
    snprintf(why, nwhy,
             "unsupported descr '%s' (supported: <f2 <f4 <f8 |i1 <i2 <i4 <i8 |u1 <u2 "
             "<u4 <u8 |b1)",
             d);
    return false;
  }
  static const struct {
    const char *code;
    mfio_el el;
  } codes[] = {{"f2", EL_F16}, {"f4", EL_F32}, {"f8", EL_F64}, {"i1", EL_I8},
               {"i2", EL_I16}, {"i4", EL_I32}, {"i8", EL_I64}, {"u1", EL_U8},
               {"u2", EL_U16}, {"u4", EL_U32}, {"u8", EL_U64}, {"b1", EL_BOOL}};
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
    if (strcmp(d + 1, codes[i].code) == 0) {
      info->el = codes[i].el;
      info->big = order == '>';
      return true;
    }
  snprintf(why, nwhy,
           "unsupported descr '%s' (supported: <f2 <f4 <f8 |i1 <i2 <i4 <i8 |u1 <u2 "
           "<u4 <u8 |b1)",
           d);
  return false;
}

/* Parses the dict literal h[0..n); on failure writes why. */
static bool parse_dict(const char *h, size_t n, npy_info *info, char *why, size_t nwhy) {
  pyparse P = {h, h + n};
  bool has_descr = false, has_fortran = false, has_shape = false;
  if (!py_char(&P, '{')) {
    snprintf(why, nwhy, "bad header: it is not a dict literal");
    return false;
  }
  for (;;) {
    if (py_char(&P, '}')) break;
    char key[32];
    if (!py_str(&P, key, sizeof key) || !py_char(&P, ':')) {
      snprintf(why, nwhy, "bad header: expected 'key': value");
      return false;
    }
    if (strcmp(key, "descr") == 0 && !has_descr) {
      py_ws(&P);
      if (P.p < P.end && *P.p == '[') {
        snprintf(why, nwhy, "structured dtypes (a descr list) are not supported");
        return false;
      }
      char d[32];
      if (!py_str(&P, d, sizeof d)) {
        snprintf(why, nwhy, "bad header: descr is not a string");
        return false;
      }
      if (!parse_descr(d, info, why, nwhy)) return false;
      has_descr = true;
    } else if (strcmp(key, "fortran_order") == 0 && !has_fortran) {
      py_ws(&P);
      if ((size_t)(P.end - P.p) >= 4 && memcmp(P.p, "True", 4) == 0)
        info->fortran = true, P.p += 4;
      else if ((size_t)(P.end - P.p) >= 5 && memcmp(P.p, "False", 5) == 0)
        info->fortran = false, P.p += 5;
      else {
        snprintf(why, nwhy, "bad header: fortran_order is not True or False");
        return false;
      }
      has_fortran = true;
    } else if (strcmp(key, "shape") == 0 && !has_shape) {
      if (!py_char(&P, '(')) {
        snprintf(why, nwhy, "bad header: shape is not a tuple");
        return false;
      }
      info->ndim = 0;
      for (;;) {
        if (py_char(&P, ')')) break;
        py_ws(&P);
        if (P.p >= P.end || *P.p < '0' || *P.p > '9') {
          snprintf(why, nwhy, "bad header: shape holds something other than sizes");
          return false;
        }
        uint64_t v = 0;
        while (P.p < P.end && *P.p >= '0' && *P.p <= '9') {
          v = v * 10 + (uint64_t)(*P.p++ - '0');
          if (v > ((uint64_t)1 << 53)) {
            snprintf(why, nwhy, "bad header: a size in the shape is too large");
            return false;
          }
        }
        if (P.p < P.end && *P.p == 'L') P.p++; /* Python 2 longs */
        if (info->ndim == MF_MAX_DIMS) {
          snprintf(why, nwhy, "more than %d dimensions", MF_MAX_DIMS);
          return false;
        }
        info->shape[info->ndim++] = (int64_t)v;
        if (py_char(&P, ',')) continue;
        if (py_char(&P, ')')) break;
        snprintf(why, nwhy, "bad header: expected ',' or ')' in the shape");
        return false;
      }
      has_shape = true;
    } else {
      snprintf(why, nwhy, "bad header: unexpected or repeated key '%s'", key);
      return false;
    }
    if (py_char(&P, ',')) continue;
    if (py_char(&P, '}')) break;
    snprintf(why, nwhy, "bad header: expected ',' or '}'");
    return false;
  }
  py_ws(&P);
  if (P.p != P.end) {
    snprintf(why, nwhy, "bad header: characters after the dict");
    return false;
  }
  if (!has_descr || !has_fortran || !has_shape) {
    snprintf(why, nwhy, "bad header: missing '%s'",
             !has_descr     ? "descr"
             : !has_fortran ? "fortran_order"
                            : "shape");
    return false;
  }
  uint64_t bytes = mfio_el_size(info->el);
  bool overflow = false, zero = false;
  for (int d = 0; d < info->ndim; d++) {
    uint64_t v = (uint64_t)info->shape[d];
    if (v == 0)
      zero = true;
    else if (!overflow && bytes > ((uint64_t)1 << 50) / v)
      overflow = true;
    else if (!overflow)
      bytes *= v;
  }
  if (zero) bytes = 0;
  if (overflow) { /* even with a zero size: the tensor's strides would overflow */
    snprintf(why, nwhy, "the shape overflows (a corrupt header)");
    return false;
  }
  info->nbytes = bytes;
  return true;
}

/* Decodes an .npy image buf[0..n) into a new CPU tensor. `what` names it in messages: the file
 * ("x.npy") or the member ("w.npy in m.npz"). */
static mf_status npy_decode(const char *op, const char *what, const unsigned char *buf, size_t n,
                            mf_tensor **out) {
  *out = NULL;
  if (n < 10 || memcmp(buf, MAGIC, 6) != 0) {
    if (n < 6 && memcmp(buf, MAGIC, n) == 0)
      return mf_fail(MF_ERR_IO, "%s: %s: truncated: %zu bytes, shorter than the .npy magic", op,
                     what, n);
    return mf_fail(MF_ERR_IO, "%s: %s: not a .npy file: bad magic (expected \\x93NUMPY)", op, what);
  }
  int major = buf[6];
  size_t pre = major == 1 ? 10 : 12;
  if (major < 1 || major > 3)
    return mf_fail(MF_ERR_IO, "%s: %s: unsupported .npy format version %d.%d", op, what, major,
                   buf[7]);
  if (n < pre) return mf_fail(MF_ERR_IO, "%s: %s: truncated inside the .npy preamble", op, what);
  size_t hl = major == 1 ? (size_t)buf[8] | (size_t)buf[9] << 8
                         : (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 |
                               (size_t)buf[11] << 24;
  if (hl > n - pre)
    return mf_fail(MF_ERR_IO,
                   "%s: %s: truncated: the header length %zu runs past the end (%zu "
                   "bytes)",
                   op, what, hl, n);
  npy_info info = {0};
  char why[200];
  if (!parse_dict((const char *)buf + pre, hl, &info, why, sizeof why))
    return mf_fail(MF_ERR_IO, "%s: %s: %s", op, what, why);
  const unsigned char *data = buf + pre + hl;
  uint64_t have = n - pre - hl;
  char sh[160];
  mf_shape_fmt(info.ndim, info.shape, sh, sizeof sh);
  if (have < info.nbytes)
    return mf_fail(MF_ERR_IO, "%s: %s: truncated: %s %s needs %llu bytes of data, found %llu", op,
                   what, mfio_el_name(info.el), sh, (unsigned long long)info.nbytes,
                   (unsigned long long)have);
  if (have > info.nbytes)
    return mf_fail(MF_ERR_IO,
                   "%s: %s: trailing garbage: %llu bytes after the %llu bytes of data "
                   "(%s %s)",
                   op, what, (unsigned long long)(have - info.nbytes),
                   (unsigned long long)info.nbytes, mfio_el_name(info.el), sh);
  int64_t shape[MF_MAX_DIMS];
  for (int d = 0; d < info.ndim; d++)
    shape[d] = info.fortran ? info.shape[info.ndim - 1 - d] : info.shape[d];
  mf_tensor *t = NULL;
  MF_TRY(mf_empty(info.ndim, shape, mfio_el_dtype(info.el), mf_cpu(), &t));
  mf_status s = mfio_decode(op, what, "data", info.el, info.big, data,
                            mf_shape_numel(info.ndim, shape), mf_data(t));
  if (s == MF_OK && info.fortran && info.ndim > 1) {
    int perm[MF_MAX_DIMS];
    for (int d = 0; d < info.ndim; d++) perm[d] = info.ndim - 1 - d;
    mf_tensor *v = NULL, *c = NULL;
    s = mf_permute(t, perm, &v);
    if (s == MF_OK) s = mf_contiguous(v, &c);
    mf_release(v);
    mf_release(t);
    t = c;
  }
  if (s != MF_OK) {
    mf_release(t);
    return s;
  }
  *out = t;
  return MF_OK;
}

mf_status mf_load_npy(const char *path, mf_tensor **out) {
  if (!out) return mf_fail(MF_ERR_ARG, "load_npy: out is NULL");
  *out = NULL;
  mfio_map m;
  MF_TRY(mfio_map_file("load_npy", path, &m));
  mf_status s = m.size ? npy_decode("load_npy", path, m.data, m.size, out)
                       : mf_fail(MF_ERR_IO, "load_npy: %s: empty file, expected .npy data", path);
  mfio_unmap(&m);
  return s;
}

mf_status mf_load_npy_from_memory(const char *name, const void *data, size_t n, mf_tensor **out) {
  if (!out) return mf_fail(MF_ERR_ARG, "load_npy: out is NULL");
  *out = NULL;
  if (!data && n) return mf_fail(MF_ERR_ARG, "load_npy: data is NULL");
  if (!name) name = "buffer";
  return n ? npy_decode("load_npy", name, data, n, out)
           : mf_fail(MF_ERR_IO, "load_npy: %s: empty, expected .npy data", name);
}

/* The header and data bytes of t as .npy. */
typedef struct npy_parts {
  char *header;
  size_t hlen;
  const unsigned char *data;
  void *owned;
  size_t dlen;
} npy_parts;

static mf_status npy_encode(const char *op, const char *path, const mf_tensor *t, npy_parts *p) {
  memset(p, 0, sizeof *p);
  mf_dtype as;
  const char *descr = descr_of(t->dtype, &as);
  if (!descr)
    return mf_fail(MF_ERR_DTYPE, "%s: %s: dtype %s has no .npy equivalent", op, path,
                   mf_dtype_name(t->dtype));
  MF_TRY(npy_header(op, path, descr, t->ndim, t->shape, &p->header, &p->hlen));
  mf_status s = mfio_tensor_bytes(op, path, t, as, &p->data, &p->owned);
  if (s != MF_OK) {
    free(p->header);
    p->header = NULL;
    return s;
  }
  p->dlen = (size_t)mf_numel(t) * mf_dtype_size(as);
  return MF_OK;
}

static void npy_parts_free(npy_parts *p) {
  free(p->header);
  free(p->owned);
  memset(p, 0, sizeof *p);
}

mf_status mf_save_npy(const char *path, const mf_tensor *t) {
  if (!path || !t) return mf_fail(MF_ERR_ARG, "save_npy: path or tensor is NULL");
  npy_parts p;
  MF_TRY(npy_encode("save_npy", path, t, &p));
  mfio_wfile f;
  mf_status s = mfio_create(&f, "save_npy", path);
  if (s == MF_OK) {
    s = mfio_write(&f, p.header, p.hlen);
    if (s == MF_OK) s = mfio_write(&f, p.data, p.dlen);
    if (s == MF_OK)
      s = mfio_commit(&f);
    else
      mfio_abort(&f);
  }
  npy_parts_free(&p);
  return s;
}

/* ==== .npz: ZIP ============================================================================== */

#define U32MAX 0xFFFFFFFFull

static void put16(unsigned char *p, unsigned v) {
  p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8);
}
static void put32(unsigned char *p, uint64_t v) {
  for (int k = 0; k < 4; k++) p[k] = (unsigned char)(v >> (8 * k));
}
static void put64(unsigned char *p, uint64_t v) {
  for (int k = 0; k < 8; k++) p[k] = (unsigned char)(v >> (8 * k));
}
static unsigned get16(const unsigned char *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }
static uint64_t get32(const unsigned char *p) {
  return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24;
}
static uint64_t get64(const unsigned char *p) { return get32(p) | get32(p + 4) << 32; }

static uint32_t crc_of(uint32_t crc, const void *p, size_t n) {
  const unsigned char *c = p;
  while (n > 0) {
    uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
    crc = (uint32_t)crc32(crc, c, k);
    c += k;
    n -= k;
  }
  return crc;
}

/* ---- writing -------------------------------------------------------------------------------- */

#define WZ "save_npz"
#define DOS_DATE 0x0021 /* 1980-01-01: a fixed date keeps the files reproducible */

typedef struct zentry {
  char *name; /* "<name>.npy" */
  uint32_t crc;
  uint64_t size, offset;
} zentry;

mf_status mf_save_npz(const char *path, int n, const char *const *names,
                      mf_tensor *const *tensors) {
  if (!path) return mf_fail(MF_ERR_ARG, WZ ": path is NULL");
  MF_TRY(mfio_check_names(WZ, path, n, names, tensors));
  for (int i = 0; i < n; i++) {
    mf_dtype as;
    if (!descr_of(tensors[i]->dtype, &as))
      return mf_fail(MF_ERR_DTYPE, WZ ": %s: tensor '%s' has dtype %s, which .npy cannot hold",
                     path, names[i], mf_dtype_name(tensors[i]->dtype));
    if (strlen(names[i]) + 4 > 65535)
      return mf_fail(MF_ERR_ARG, WZ ": %s: tensor name '%.40s...' is too long", path, names[i]);
  }
  zentry *ze = calloc((size_t)n + 1, sizeof *ze);
  if (!ze) return mf_fail(MF_ERR_MEMORY, WZ ": %s: out of memory", path);
  mfio_wfile f;
  mf_status s = mfio_create(&f, WZ, path);
  uint64_t at = 0;
  for (int i = 0; s == MF_OK && i < n; i++) {
    size_t nl = strlen(names[i]) + 4;
    ze[i].name = malloc(nl + 1);
    if (!ze[i].name) {
      s = mf_fail(MF_ERR_MEMORY, WZ ": %s: out of memory", path);
      break;
    }
    snprintf(ze[i].name, nl + 1, "%s.npy", names[i]);
    npy_parts p;
    s = npy_encode(WZ, path, tensors[i], &p);
    if (s != MF_OK) break;
    ze[i].crc = crc_of(crc_of((uint32_t)crc32(0, Z_NULL, 0), p.header, p.hlen), p.data, p.dlen);
    ze[i].size = p.hlen + p.dlen;
    ze[i].offset = at;
    bool z64 = ze[i].size >= U32MAX;
    unsigned char lh[30], ext[20];
    put32(lh, 0x04034b50);
    put16(lh + 4, z64 ? 45 : 20);
    put16(lh + 6, 0);
    put16(lh + 8, 0);
    put16(lh + 10, 0);
    put16(lh + 12, DOS_DATE);
    put32(lh + 14, ze[i].crc);
    put32(lh + 18, z64 ? U32MAX : ze[i].size);
    put32(lh + 22, z64 ? U32MAX : ze[i].size);
    put16(lh + 26, (unsigned)nl);
    put16(lh + 28, z64 ? 20 : 0);
    if (z64) {
      put16(ext, 1);
      put16(ext + 2, 16);
      put64(ext + 4, ze[i].size);
      put64(ext + 12, ze[i].size);
    }
    s = mfio_write(&f, lh, 30);
    if (s == MF_OK) s = mfio_write(&f, ze[i].name, nl);
    if (s == MF_OK && z64) s = mfio_write(&f, ext, 20);
    if (s == MF_OK) s = mfio_write(&f, p.header, p.hlen);
    if (s == MF_OK) s = mfio_write(&f, p.data, p.dlen);
    at += 30 + nl + (z64 ? 20 : 0) + ze[i].size;
    npy_parts_free(&p);
  }
  uint64_t cd_start = at;
  for (int i = 0; s == MF_OK && i < n; i++) { /* the central directory */
    size_t nl = strlen(ze[i].name);
    bool bs = ze[i].size >= U32MAX, bo = ze[i].offset >= U32MAX;
    unsigned char ch[46], ext[28];
    size_t el = 0;
    if (bs || bo) {
      put16(ext, 1);
      el = 4;
      if (bs) put64(ext + el, ze[i].size), put64(ext + el + 8, ze[i].size), el += 16;
      if (bo) put64(ext + el, ze[i].offset), el += 8;
      put16(ext + 2, (unsigned)(el - 4));
    }
    put32(ch, 0x02014b50);
    put16(ch + 4, (3 << 8) | (el ? 45 : 20)); /* made by: Unix */
    put16(ch + 6, el ? 45 : 20);
    put16(ch + 8, 0);
    put16(ch + 10, 0);
    put16(ch + 12, 0);
    put16(ch + 14, DOS_DATE);
    put32(ch + 16, ze[i].crc);
    put32(ch + 20, bs ? U32MAX : ze[i].size);
    put32(ch + 24, bs ? U32MAX : ze[i].size);
    put16(ch + 28, (unsigned)nl);
    put16(ch + 30, (unsigned)el);
    put16(ch + 32, 0);
    put16(ch + 34, 0);
    put16(ch + 36, 0);
    put32(ch + 38, (uint64_t)0100644 << 16); /* -rw-r--r-- */
    put32(ch + 42, bo ? U32MAX : ze[i].offset);
    s = mfio_write(&f, ch, 46);
    if (s == MF_OK) s = mfio_write(&f, ze[i].name, nl);
    if (s == MF_OK && el) s = mfio_write(&f, ext, el);
    at += 46 + nl + el;
  }
  uint64_t cd_size = at - cd_start;
  bool z64 = n >= 0xFFFF || cd_size >= U32MAX || cd_start >= U32MAX;
  if (s == MF_OK && z64) { /* zip64 end record and its locator */
    unsigned char e[56 + 20];
    put32(e, 0x06064b50);
    put64(e + 4, 44);
    put16(e + 12, (3 << 8) | 45);
    put16(e + 14, 45);
    put32(e + 16, 0);
    put32(e + 20, 0);
    put64(e + 24, (uint64_t)n);
    put64(e + 32, (uint64_t)n);
    put64(e + 40, cd_size);
    put64(e + 48, cd_start);
    put32(e + 56, 0x07064b50);
    put32(e + 60, 0);
    put64(e + 64, at);
    put32(e + 72, 1);
    s = mfio_write(&f, e, sizeof e);
  }
  if (s == MF_OK) {
    unsigned char e[22];
    put32(e, 0x06054b50);
    put16(e + 4, 0);
    put16(e + 6, 0);
    put16(e + 8, z64 ? 0xFFFF : (unsigned)n);
    put16(e + 10, z64 ? 0xFFFF : (unsigned)n);
    put32(e + 12, z64 ? U32MAX : cd_size);
    put32(e + 16, z64 ? U32MAX : cd_start);
    put16(e + 20, 0);
    s = mfio_write(&f, e, 22);
  }
  if (f.tmp) { /* mfio_create succeeded */
    if (s == MF_OK)
      s = mfio_commit(&f);
    else
      mfio_abort(&f);
  }
  for (int i = 0; i < n; i++) free(ze[i].name);
  free(ze);
  return s;
}

/* ---- reading -------------------------------------------------------------------------------- */

#define RZ "load_npz"
#define MAX_DEFLATE_RATIO 1032

/* Finds the central directory: its offset, size and entry count. */
static mf_status find_directory(const char *path, const mfio_map *m, uint64_t *cd_off,
                                uint64_t *cd_size, uint64_t *count) {
  const unsigned char *d = m->data;
  size_t n = m->size;
  if (n < 22) {
    if (n >= 4 && memcmp(d, "PK", 2) == 0)
      return mf_fail(MF_ERR_IO, RZ ": %s: truncated: %zu bytes, too short for a ZIP archive", path,
                     n);
    return mf_fail(MF_ERR_IO,
                   RZ ": %s: not a ZIP archive (.npz): no end-of-central-directory "
                      "record",
                   path);
  }
  size_t lo = n > 22 + 65535 ? n - 22 - 65535 : 0, eocd = (size_t)-1;
  for (size_t i = n - 22 + 1; i-- > lo;)
    if (get32(d + i) == 0x06054b50 && i + 22 + get16(d + i + 20) <= n) {
      eocd = i;
      break;
    }
  if (eocd == (size_t)-1)
    return mf_fail(MF_ERR_IO,
                   RZ ": %s: not a ZIP archive (.npz) or truncated: no "
                      "end-of-central-directory record%s",
                   path, memcmp(d, "PK\3\4", 4) == 0 ? " (it starts like a ZIP: truncated?)" : "");
  const unsigned char *e = d + eocd;
  if (get16(e + 4) != 0 || get16(e + 6) != 0)
    return mf_fail(MF_ERR_IO, RZ ": %s: multi-disk ZIP archives are not supported", path);
  *count = get16(e + 10);
  *cd_size = get32(e + 12);
  *cd_off = get32(e + 16);
  if (*count == 0xFFFF || *cd_size == U32MAX || *cd_off == U32MAX) {
    if (eocd >= 20 && get32(d + eocd - 20) == 0x07064b50) {
      uint64_t z = get64(d + eocd - 20 + 8); /* its 56 bytes lie before the locator */
      if (eocd < 20 + 56 || z > eocd - 20 - 56 || get32(d + z) != 0x06064b50)
        return mf_fail(MF_ERR_IO, RZ ": %s: bad ZIP: the zip64 end record is missing", path);
      *count = get64(d + z + 32);
      *cd_size = get64(d + z + 40);
      *cd_off = get64(d + z + 48);
    }
  }
  if (*cd_off > n || *cd_size > n - *cd_off || *cd_off + *cd_size > eocd)
    return mf_fail(MF_ERR_IO,
                   RZ ": %s: bad ZIP: the central directory (offset %llu, %llu bytes) "
                      "lies outside the file",
                   path, (unsigned long long)*cd_off, (unsigned long long)*cd_size);
  if (*count > *cd_size / 46)
    return mf_fail(MF_ERR_IO,
                   RZ ": %s: bad ZIP: %llu entries cannot fit a %llu-byte central "
                      "directory",
                   path, (unsigned long long)*count, (unsigned long long)*cd_size);
  return MF_OK;
}

/* Inflates raw deflate src[0..csize) into exactly usize bytes at dst. */
static mf_status inflate_member(const char *path, const char *name, const unsigned char *src,
                                uint64_t csize, unsigned char *dst, uint64_t usize) {
  z_stream z;
  memset(&z, 0, sizeof z);
  if (inflateInit2(&z, -15) != Z_OK)
    return mf_fail(MF_ERR_MEMORY, RZ ": %s: %s: cannot start zlib", path, name);
  uint64_t in_left = csize, out_left = usize;
  z.next_in = (Bytef *)src;
  z.next_out = dst;
  int rc = Z_OK;
  while (rc == Z_OK) {
    uInt ki = in_left > (1u << 30) ? (1u << 30) : (uInt)in_left;
    uInt ko = out_left > (1u << 30) ? (1u << 30) : (uInt)out_left;
    z.avail_in = ki;
    z.avail_out = ko;
    rc = inflate(&z, Z_NO_FLUSH);
    in_left -= ki - z.avail_in;
    out_left -= ko - z.avail_out;
    if (rc == Z_BUF_ERROR && (in_left == 0 || out_left == 0)) break;
    if (rc == Z_OK && ki == z.avail_in && ko == z.avail_out) break; /* no progress */
  }
  const char *msg = z.msg;
  inflateEnd(&z);
  if (rc == Z_STREAM_END && out_left == 0) return MF_OK;
  if (rc == Z_STREAM_END || (rc != Z_DATA_ERROR && out_left > 0 && in_left == 0))
    return mf_fail(MF_ERR_IO,
                   RZ ": %s: %s: the compressed data holds %llu bytes, the directory "
                      "says %llu",
                   path, name, (unsigned long long)(usize - out_left), (unsigned long long)usize);
  if (out_left == 0)
    return mf_fail(MF_ERR_IO,
                   RZ ": %s: %s: the compressed data is longer than the directory's "
                      "size %llu",
                   path, name, (unsigned long long)usize);
  return mf_fail(MF_ERR_IO, RZ ": %s: %s: corrupt deflate data (%s)", path, name,
                 msg ? msg : "zlib error");
}

static bool ends_npy(const char *s, size_t n) {
  return n >= 4 && memcmp(s + n - 4, ".npy", 4) == 0;
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* No two members read have one name: checked once all are read, by sorting the names (a check of
 * each against those before it took hours on an archive of millions of members). */
static mf_status unique_names(const char *path, const mf_tensor_list *l) {
  if (l->n < 2) return MF_OK;
  char **k = malloc((size_t)l->n * sizeof *k);
  if (!k) return mf_fail(MF_ERR_MEMORY, RZ ": %s: out of memory", path);
  memcpy(k, l->names, (size_t)l->n * sizeof *k);
  qsort(k, (size_t)l->n, sizeof *k, by_name);
  mf_status s = MF_OK;
  for (int i = 1; i < l->n && s == MF_OK; i++)
    if (strcmp(k[i - 1], k[i]) == 0)
      s = mf_fail(MF_ERR_IO, RZ ": %s: two members are named '%s'", path, k[i]);
  free(k);
  return s;
}

static mf_status read_members(const char *path, const mfio_map *m, int nsel, const char *const *sel,
                              mf_tensor_list *out) {
  uint64_t cd_off = 0, cd_size = 0, count = 0;
  MF_TRY(find_directory(path, m, &cd_off, &cd_size, &count));
  const unsigned char *d = m->data;
  size_t n = m->size;
  char **all = calloc((size_t)count + 1, sizeof *all);
  if (!all) return mf_fail(MF_ERR_MEMORY, RZ ": %s: out of memory", path);
  mf_status s = MF_OK;
  uint64_t p = cd_off, end = cd_off + cd_size;
  int nall = 0;
  for (uint64_t i = 0; s == MF_OK && i < count; i++) {
    if (end - p < 46 || get32(d + p) != 0x02014b50) {
      s = mf_fail(MF_ERR_IO, RZ ": %s: bad ZIP: central directory entry %llu is damaged", path,
                  (unsigned long long)i + 1);
      break;
    }
    const unsigned char *c = d + p;
    unsigned flags = get16(c + 8), method = get16(c + 10);
    uint32_t crc = (uint32_t)get32(c + 16);
    uint64_t csize = get32(c + 20), usize = get32(c + 24), lho = get32(c + 42);
    size_t nl = get16(c + 28), xl = get16(c + 30), cl = get16(c + 32);
    if (46 + nl + xl + cl > end - p) {
      s = mf_fail(MF_ERR_IO,
                  RZ ": %s: bad ZIP: central directory entry %llu runs past the "
                     "directory",
                  path, (unsigned long long)i + 1);
      break;
    }
    char *name = malloc(nl + 1);
    if (!name) {
      s = mf_fail(MF_ERR_MEMORY, RZ ": %s: out of memory", path);
      break;
    }
    memcpy(name, c + 46, nl);
    name[nl] = 0;
    all[nall++] = name;
    if (strlen(name) != nl) {
      s = mf_fail(MF_ERR_IO, RZ ": %s: bad ZIP: a member name contains a NUL character", path);
      break;
    }
    /* zip64 extra field: the 64-bit values of the fields stored as 0xFFFFFFFF, in this order */
    const unsigned char *x = c + 46 + nl, *xe = x + xl;
    while (xe - x >= 4) {
      unsigned id = get16(x), len = get16(x + 2);
      if ((size_t)(xe - x - 4) < len) break;
      if (id == 1) {
        const unsigned char *v = x + 4, *ve = v + len;
        uint64_t *fields[3] = {&usize, &csize, &lho};
        for (int k = 0; k < 3 && s == MF_OK; k++) {
          if (*fields[k] != U32MAX) continue;
          if (ve - v < 8)
            s = mf_fail(MF_ERR_IO, RZ ": %s: %s: bad ZIP: its zip64 extra field is too short", path,
                        name);
          else
            *fields[k] = get64(v), v += 8;
        }
      }
      x += 4 + len;
    }
    p += 46 + nl + xl + cl;
    if (s != MF_OK) break;
    if (nl && name[nl - 1] == '/') { /* a folder entry */
      nall--;
      free(name);
      all[nall] = NULL;
      continue;
    }
    if (ends_npy(name, nl)) name[nl - 4] = 0; /* the tensor's name */
    if (!mfio_selected(nsel, sel, name)) continue;
    char what[300];
    snprintf(what, sizeof what, "%s%s", name, ends_npy((const char *)c + 46, nl) ? ".npy" : "");
    if (flags & 1) {
      s = mf_fail(MF_ERR_IO, RZ ": %s: %s: encrypted members are not supported", path, what);
      break;
    }
    if (method != 0 && method != 8) {
      s = mf_fail(MF_ERR_IO,
                  RZ ": %s: %s: unsupported compression method %u (stored 0 and "
                     "deflate 8 are)",
                  path, what, method);
      break;
    }
    if (lho > n || n - lho < 30 || get32(d + lho) != 0x04034b50) {
      s = mf_fail(MF_ERR_IO, RZ ": %s: %s: bad ZIP: no local header at offset %llu", path, what,
                  (unsigned long long)lho);
      break;
    }
    uint64_t data = lho + 30 + get16(d + lho + 26) + get16(d + lho + 28);
    if (data > n || csize > n - data) {
      s = mf_fail(MF_ERR_IO,
                  RZ ": %s: %s: truncated: its %llu bytes of data run past the end of "
                     "the file",
                  path, what, (unsigned long long)csize);
      break;
    }
    if (method == 0 && csize != usize) {
      s = mf_fail(MF_ERR_IO, RZ ": %s: %s: bad ZIP: a stored member with sizes %llu and %llu", path,
                  what, (unsigned long long)csize, (unsigned long long)usize);
      break;
    }
    if (method == 8 && usize / MAX_DEFLATE_RATIO > csize + 1) {
      s = mf_fail(MF_ERR_IO, RZ ": %s: %s: bad ZIP: %llu compressed bytes cannot expand to %llu",
                  path, what, (unsigned long long)csize, (unsigned long long)usize);
      break;
    }
    const unsigned char *bytes = d + data;
    unsigned char *inflated = NULL;
    if (method == 8) {
      inflated = malloc(usize ? usize : 1);
      if (!inflated) {
        s = mf_fail(MF_ERR_MEMORY, RZ ": %s: %s: out of memory (%llu bytes)", path, what,
                    (unsigned long long)usize);
        break;
      }
      s = inflate_member(path, what, bytes, csize, inflated, usize);
      bytes = inflated;
    }
    uint32_t got = s == MF_OK ? crc_of((uint32_t)crc32(0, Z_NULL, 0), bytes, usize) : 0;
    if (s == MF_OK && got != crc)
      s = mf_fail(MF_ERR_IO,
                  RZ ": %s: %s: CRC-32 mismatch (the directory says %08x, the data has "
                     "%08x): the file is corrupt",
                  path, what, crc, got);
    char where[640];
    snprintf(where, sizeof where, "%s: %s", path, what);
    mf_tensor *t = NULL;
    if (s == MF_OK) s = npy_decode(RZ, where, bytes, usize, &t);
    free(inflated);
    if (s == MF_OK) s = mfio_list_push(out, name, t);
  }
  if (s == MF_OK) s = unique_names(path, out);
  if (s == MF_OK)
    s = mfio_check_selection(RZ, path, nsel, sel, out, nall, (const char *const *)all);
  for (int i = 0; i < nall; i++) free(all[i]);
  free(all);
  return s;
}

mf_status mf_load_npz(const char *path, int nsel, const char *const *sel, mf_tensor_list *out) {
  return mfio_load_list_file(RZ, read_members, path, nsel, sel, out);
}

mf_status mf_load_npz_from_memory(const char *name, const void *data, size_t n, int nsel,
                                  const char *const *sel, mf_tensor_list *out) {
  return mfio_load_list_memory(RZ, read_members, name, data, n, nsel, sel, out);
}
