/* idx.c — IDX files (the MNIST format), read into tensors and written from them.
 *
 * Layout (FORMATS.md): magic 00 00 TT DD, TT the element type (08 u8, 09 i8, 0B i16, 0C i32,
 * 0D f32, 0E f64), DD the number of dims; DD sizes as u32 big-endian; the elements, row-major,
 * big-endian. Files may be gzip-compressed: the reader tells by the gzip magic (1f 8b), not by the
 * name, and reads both through zlib (gzread passes plain files through). The writer compresses
 * when the name ends in ".gz", and writes atomically (temporary file, then rename).
 *
 * The reader checks everything a damaged or half-downloaded file can get wrong, and says which
 * file and what: cannot open, bad magic, unknown type code, too many dims, sizes that overflow,
 * truncated data, trailing garbage, corrupt gzip. Data is read straight into the tensor's memory
 * and converted there (byte order, widening of i8/i16 to int32), with no second buffer.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "internal.h"
#include "moonflow_io.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_BIG_ENDIAN 1
#else
#define HOST_BIG_ENDIAN 0
#endif

/* Sizes beyond this many bytes are taken as a corrupt header rather than tried (256 TiB). */
#define MAX_BYTES ((int64_t)1 << 48)
/* The most raw bytes a deflate stream can expand one compressed byte to is about 1032. */
#define MAX_DEFLATE_RATIO 1032

/* ---- element types --------------------------------------------------------------------------- */

mf_dtype mf_idx_dtype(int type_code) {
  switch (type_code) {
  case MF_IDX_U8: return MF_U8;
  case MF_IDX_I8:
  case MF_IDX_I16:
  case MF_IDX_I32: return MF_I32;
  case MF_IDX_F32: return MF_F32;
  case MF_IDX_F64: return MF_F64;
  default: return MF_DTYPE_COUNT;
  }
}

const char *mf_idx_type_name(int type_code) {
  switch (type_code) {
  case MF_IDX_U8: return "u8";
  case MF_IDX_I8: return "i8";
  case MF_IDX_I16: return "i16";
  case MF_IDX_I32: return "i32";
  case MF_IDX_F32: return "f32";
  case MF_IDX_F64: return "f64";
  default: return NULL;
  }
}

/* Bytes of one element in the file. */
static size_t idx_size(int type_code) {
  switch (type_code) {
  case MF_IDX_U8:
  case MF_IDX_I8: return 1;
  case MF_IDX_I16: return 2;
  case MF_IDX_I32:
  case MF_IDX_F32: return 4;
  case MF_IDX_F64: return 8;
  default: return 0;
  }
}

#define KNOWN_TYPES "08 u8, 09 i8, 0B i16, 0C i32, 0D f32, 0E f64"

/* Reverses the byte order of n elements of `size` bytes in place (size 1: nothing). */
static void swap_bytes(void *data, int64_t n, size_t size) {
  if (HOST_BIG_ENDIAN || size == 1) return;
  unsigned char *p = data;
  if (size == 2) {
    for (int64_t i = 0; i < n; i++) {
      unsigned char t = p[2 * i];
      p[2 * i] = p[2 * i + 1];
      p[2 * i + 1] = t;
    }
  } else if (size == 4) {
    for (int64_t i = 0; i < n; i++) {
      uint32_t v;
      memcpy(&v, p + 4 * i, 4);
      v = __builtin_bswap32(v);
      memcpy(p + 4 * i, &v, 4);
    }
  } else {
    for (int64_t i = 0; i < n; i++) {
      uint64_t v;
      memcpy(&v, p + 8 * i, 8);
      v = __builtin_bswap64(v);
      memcpy(p + 8 * i, &v, 8);
    }
  }
}

/* ---- reading -------------------------------------------------------------------------------- */

typedef struct reader {
  const char *path;
  gzFile g;
  bool gz;      /* the file starts with the gzip magic */
  int64_t size; /* of the file on disk */
} reader;

/* Reads up to n bytes; returns how many were read (fewer at the end of the data), or -1 with
 * the message set when the gzip data is corrupt. */
static int64_t rd(reader *r, void *dst, int64_t n) {
  int64_t got = 0;
  while (got < n) {
    int64_t want = n - got < (1 << 30) ? n - got : (1 << 30);
    int k = gzread(r->g, (char *)dst + got, (unsigned)want);
    if (k < 0) {
      int zerr;
      const char *msg = gzerror(r->g, &zerr);
      mf_fail(MF_ERR_IO, "read_idx: %s: corrupt gzip data (%s)", r->path, msg);
      return -1;
    }
    if (k == 0) break;
    got += k;
  }
  if (got < n && r->gz) { /* a gzip stream cut short ends "cleanly" with Z_BUF_ERROR pending */
    int zerr = Z_OK;
    const char *msg = gzerror(r->g, &zerr);
    if (zerr != Z_OK && zerr != Z_BUF_ERROR && zerr != Z_STREAM_END) {
      mf_fail(MF_ERR_IO, "read_idx: %s: corrupt gzip data (%s)", r->path, msg);
      return -1;
    }
  }
  return got;
}

/* A guess at what a file that is not IDX is, for the message. */
static const char *what_is(const unsigned char *m, int64_t n) {
  if (n >= 1 && m[0] == '<') return " (it looks like an HTML/XML page: a failed download?)";
  if (n >= 4 && memcmp(m, "PK\3\4", 4) == 0) return " (it looks like a ZIP archive)";
  if (n >= 2 && m[0] == 'B' && m[1] == 'Z') return " (it looks like bzip2 data)";
  if (n >= 4 && memcmp(m, "\xfd\x37\x7a\x58", 4) == 0) return " (it looks like xz data)";
  return "";
}

/* Widens n big-endian i8/i16 elements stored at the start of buf to host int32, in place: from the
 * last element down, each int32 lands on bytes whose source elements were already read. */
static void widen(void *buf, int64_t n, int type_code) {
  unsigned char *b = buf;
  for (int64_t i = n - 1; i >= 0; i--) {
    int32_t v = type_code == MF_IDX_I8 ? (int32_t)(int8_t)b[i]
                                       : (int32_t)(int16_t)(uint16_t)(b[2 * i] << 8 | b[2 * i + 1]);
    memcpy(b + 4 * i, &v, 4);
  }
}

static mf_status read_body(reader *r, mf_tensor **out) {
  const char *path = r->path;
  unsigned char hdr[4];
  int64_t got = rd(r, hdr, 4);
  if (got < 0) return MF_ERR_IO;
  if (got == 0) return mf_fail(MF_ERR_IO, "read_idx: %s: empty file, expected an IDX header", path);
  if (got < 4)
    return mf_fail(MF_ERR_IO,
                   "read_idx: %s: truncated: the file ends inside the 4-byte magic "
                   "(%lld byte%s)",
                   path, (long long)got, got == 1 ? "" : "s");
  if (hdr[0] != 0 || hdr[1] != 0)
    return mf_fail(MF_ERR_IO,
                   "read_idx: %s: not an IDX file: bad magic %02x %02x %02x %02x, "
                   "expected 00 00 <type> <dims>%s",
                   path, hdr[0], hdr[1], hdr[2], hdr[3], what_is(hdr, 4));
  int type = hdr[2], ndim = hdr[3];
  size_t isz = idx_size(type);
  if (isz == 0)
    return mf_fail(MF_ERR_IO,
                   "read_idx: %s: unsupported IDX type code 0x%02x (known: " KNOWN_TYPES ")", path,
                   type);
  if (ndim > MF_MAX_DIMS)
    return mf_fail(MF_ERR_IO, "read_idx: %s: %d dimensions, moonflow tensors have at most %d", path,
                   ndim, MF_MAX_DIMS);
  unsigned char dims[4 * MF_MAX_DIMS];
  got = rd(r, dims, 4 * ndim);
  if (got < 0) return MF_ERR_IO;
  if (got < 4 * ndim)
    return mf_fail(MF_ERR_IO,
                   "read_idx: %s: truncated: the file ends inside the header "
                   "(%d dims need %d bytes of sizes, found %lld)",
                   path, ndim, 4 * ndim, (long long)got);
  int64_t shape[MF_MAX_DIMS];
  int64_t numel = 1; /* of the nonzero sizes: a zero among sizes that overflow is no less corrupt,
                      * and the tensor's strides would overflow all the same */
  bool overflow = false, zero = false;
  for (int d = 0; d < ndim; d++) {
    const unsigned char *p = dims + 4 * d;
    shape[d] = (int64_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
    if (shape[d] == 0)
      zero = true;
    else if (!overflow && shape[d] > MAX_BYTES / 8 / numel) /* 8: the widest element */
      overflow = true;
    else if (!overflow)
      numel *= shape[d];
  }
  char sh[160];
  mf_shape_fmt(ndim, shape, sh, sizeof sh);
  if (overflow)
    return mf_fail(MF_ERR_IO,
                   "read_idx: %s: sizes %s overflow: more than 2^48 bytes, a corrupt header", path,
                   sh);
  if (zero) numel = 0;
  mf_dtype dt = mf_idx_dtype(type);
  int64_t nbytes = numel * (int64_t)isz; /* of data in the file */
  int64_t hbytes = 4 + 4 * (int64_t)ndim;
  /* Checks before allocating, so that a bad header never asks for absurd memory. */
  if (!r->gz && r->size >= 0) {
    if (r->size < hbytes + nbytes)
      return mf_fail(MF_ERR_IO,
                     "read_idx: %s: truncated: the header says %s %s (%lld bytes of "
                     "data) but the file has only %lld",
                     path, sh, mf_idx_type_name(type), (long long)nbytes,
                     (long long)(r->size - hbytes));
    if (r->size > hbytes + nbytes)
      return mf_fail(MF_ERR_IO,
                     "read_idx: %s: trailing garbage: %lld bytes after the %lld bytes "
                     "of data (%s %s) the header describes",
                     path, (long long)(r->size - hbytes - nbytes), (long long)nbytes, sh,
                     mf_idx_type_name(type));
  }
  if (r->gz && r->size >= 0 && nbytes / MAX_DEFLATE_RATIO > r->size + 1024)
    return mf_fail(MF_ERR_IO,
                   "read_idx: %s: truncated: the header says %s %s (%lld bytes of "
                   "data), more than a %lld-byte gzip file can hold",
                   path, sh, mf_idx_type_name(type), (long long)nbytes, (long long)r->size);
  MF_TRY(mf_empty(ndim, shape, dt, mf_cpu(), out));
  void *data = mf_data(*out);
  got = rd(r, data, nbytes);
  if (got < 0) return MF_ERR_IO;
  if (got < nbytes)
    return mf_fail(MF_ERR_IO,
                   "read_idx: %s: truncated: the header says %s %s (%lld bytes of data) "
                   "but the %sfile ends after %lld",
                   path, sh, mf_idx_type_name(type), (long long)nbytes,
                   r->gz ? "decompressed " : "", (long long)got);
  /* anything after the data? */
  unsigned char extra[4096];
  int64_t more = 0, k;
  while ((k = rd(r, extra, sizeof extra)) > 0) more += k;
  if (k < 0) return MF_ERR_IO;
  int zerr = Z_OK;
  const char *zmsg = r->gz ? gzerror(r->g, &zerr) : "";
  if (zerr == Z_BUF_ERROR) /* all the data came out, but the stream (or its CRC) is cut short */
    return mf_fail(MF_ERR_IO, "read_idx: %s: truncated: the gzip stream ends early (%s)", path,
                   zmsg);
  if (more)
    return mf_fail(MF_ERR_IO,
                   "read_idx: %s: trailing garbage: %lld bytes after the %lld bytes of "
                   "data (%s %s) the header describes",
                   path, (long long)more, (long long)nbytes, sh, mf_idx_type_name(type));
  if (type == MF_IDX_I8 || type == MF_IDX_I16)
    widen(data, numel, type);
  else
    swap_bytes(data, numel, isz);
  return MF_OK;
}

mf_status mf_read_idx(const char *path, mf_tensor **out) {
  *out = NULL;
  if (!path) return mf_fail(MF_ERR_ARG, "read_idx: path is NULL");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return mf_fail(MF_ERR_IO, "read_idx: %s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    close(fd);
    return mf_fail(MF_ERR_IO, "read_idx: %s: is a directory, expected an IDX file", path);
  }
  reader r = {.path = path, .size = S_ISREG(st.st_mode) ? (int64_t)st.st_size : -1};
  unsigned char m[2];
  r.gz = pread(fd, m, 2, 0) == 2 && m[0] == 0x1f && m[1] == 0x8b;
  r.g = gzdopen(fd, "rb");
  if (!r.g) {
    close(fd);
    return mf_fail(MF_ERR_MEMORY, "read_idx: %s: out of memory opening the file", path);
  }
  gzbuffer(r.g, 1 << 17);
  mf_status s = read_body(&r, out);
  gzclose(r.g); /* closes fd */
  if (s != MF_OK) MF_DROP(*out);
  return s;
}

/* ---- writing -------------------------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

static mf_idx_type auto_type(mf_dtype dt) {
  switch (dt) {
  case MF_U8:
  case MF_BOOL: return MF_IDX_U8;
  case MF_I32:
  case MF_I64: return MF_IDX_I32;
  case MF_F64: return MF_IDX_F64;
  default: return MF_IDX_F32;
  }
}

/* The elements of t as big-endian IDX data of `type` in a new malloc'd buffer (*out). */
static mf_status encode(const char *path, const mf_tensor *t, int type, int64_t numel,
                        unsigned char **out) {
  size_t isz = idx_size(type);
  unsigned char *buf = malloc(numel ? (size_t)numel * isz : 1);
  if (!buf) return mf_fail(MF_ERR_MEMORY, "write_idx: %s: out of memory", path);
  mf_status s = MF_OK;
  if (type == MF_IDX_F32 || type == MF_IDX_F64) {
    s = mf_to_host(t, type == MF_IDX_F32 ? MF_F32 : MF_F64, buf);
  } else if (type == MF_IDX_U8 && (t->dtype == MF_U8 || t->dtype == MF_BOOL)) {
    s = mf_to_host(t, MF_U8, buf);
  } else if (type == MF_IDX_I32 && t->dtype == MF_I32) {
    s = mf_to_host(t, MF_I32, buf);
  } else { /* through doubles, checked: every value of these types is exact in a double */
    double *v = malloc(numel ? (size_t)numel * sizeof *v : 1);
    if (!v) {
      free(buf);
      return mf_fail(MF_ERR_MEMORY, "write_idx: %s: out of memory", path);
    }
    s = mf_to_host(t, MF_F64, v);
    double lo = type == MF_IDX_U8    ? 0
                : type == MF_IDX_I8  ? -128
                : type == MF_IDX_I16 ? -32768
                                     : -2147483648.0;
    double hi = type == MF_IDX_U8    ? 255
                : type == MF_IDX_I8  ? 127
                : type == MF_IDX_I16 ? 32767
                                     : 2147483647.0;
    for (int64_t i = 0; s == MF_OK && i < numel; i++) {
      if (!(v[i] >= lo && v[i] <= hi) || v[i] != (double)(int64_t)v[i]) {
        s = mf_fail(MF_ERR_ARG,
                    "write_idx: %s: element %lld (%g) of the %s tensor is not an "
                    "integer in %s's range %.0f..%.0f",
                    path, (long long)i + 1, v[i], mf_dtype_name(t->dtype), mf_idx_type_name(type),
                    lo, hi);
        break;
      }
      int32_t x = (int32_t)v[i];
      if (isz == 1)
        buf[i] = (unsigned char)x;
      else if (isz == 2) {
        int16_t y = (int16_t)x;
        memcpy(buf + 2 * i, &y, 2);
      } else
        memcpy(buf + 4 * i, &x, 4);
    }
    free(v);
  }
  if (s != MF_OK) {
    free(buf);
    return s;
  }
  swap_bytes(buf, numel, isz);
  *out = buf;
  return MF_OK;
}

/* Writes n bytes through zlib in chunks; false on failure. */
static bool wr(gzFile g, const void *p, int64_t n) {
  while (n > 0) {
    unsigned k = n < (1 << 30) ? (unsigned)n : (1u << 30);
    if (gzwrite(g, p, k) != (int)k) return false;
    p = (const char *)p + k;
    n -= k;
  }
  return true;
}

mf_status mf_write_idx(const char *path, const mf_tensor *t, mf_idx_type type) {
  if (!path || !t) return mf_fail(MF_ERR_ARG, "write_idx: path or tensor is NULL");
  int code = type == MF_IDX_AUTO ? (int)auto_type(t->dtype) : (int)type;
  if (!idx_size(code))
    return mf_fail(MF_ERR_ARG,
                   "write_idx: %s: unsupported IDX type code 0x%02x (known: " KNOWN_TYPES ")", path,
                   code);
  unsigned char hdr[4 + 4 * MF_MAX_DIMS] = {0, 0, (unsigned char)code, (unsigned char)t->ndim};
  for (int d = 0; d < t->ndim; d++) {
    if (t->shape[d] > (int64_t)UINT32_MAX)
      return mf_fail(MF_ERR_SHAPE,
                     "write_idx: %s: size %lld of dimension %d does not fit IDX's "
                     "32-bit sizes",
                     path, (long long)t->shape[d], d + 1);
    uint32_t v = (uint32_t)t->shape[d];
    unsigned char *p = hdr + 4 + 4 * d;
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
  }
  int64_t numel = mf_numel(t);
  unsigned char *data = NULL;
  MF_TRY(encode(path, t, code, numel, &data));

  /* a temporary name beside the target, then rename: a crash never leaves a half file */
  static int counter;
  size_t n = strlen(path) + 64;
  char *tmp = malloc(n);
  if (!tmp) {
    free(data);
    return mf_fail(MF_ERR_MEMORY, "write_idx: %s: out of memory", path);
  }
  int fd = -1;
  for (int tries = 0; fd < 0 && tries < 100; tries++) {
    snprintf(tmp, n, "%s.tmp.%ld.%d", path, (long)getpid(),
             __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED));
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) {
    mf_status s =
        mf_fail(MF_ERR_IO, "write_idx: %s: cannot create %s: %s", path, tmp, strerror(errno));
    free(tmp);
    free(data);
    return s;
  }
  gzFile g = gzdopen(fd, ends_with(path, ".gz") ? "wb6" : "wbT");
  mf_status s = MF_OK;
  if (!g) {
    close(fd);
    s = mf_fail(MF_ERR_MEMORY, "write_idx: %s: out of memory opening the file", path);
  } else {
    gzbuffer(g, 1 << 17);
    bool ok = wr(g, hdr, 4 + 4 * (int64_t)t->ndim) && wr(g, data, numel * (int64_t)idx_size(code));
    int zerr = Z_OK;
    const char *msg = ok ? "" : gzerror(g, &zerr);
    int e = errno;
    char why[128];
    snprintf(why, sizeof why, "%s", zerr == Z_ERRNO ? strerror(e) : msg);
    int rc = gzclose(g); /* flushes, closes fd */
    if (!ok || rc != Z_OK)
      s = mf_fail(MF_ERR_IO, "write_idx: %s: write error: %s", path,
                  ok ? (rc == Z_ERRNO ? strerror(errno) : "could not finish the file") : why);
  }
  if (s == MF_OK && rename(tmp, path) != 0)
    s = mf_fail(MF_ERR_IO, "write_idx: %s: cannot rename %s to it: %s", path, tmp, strerror(errno));
  if (s != MF_OK) unlink(tmp);
  free(tmp);
  free(data);
  return s;
}
