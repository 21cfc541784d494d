/* image.c — images in and out of tensors through stb: decoding PNG, JPEG, BMP, GIF and TGA into
 * uint8 HxWxC tensors (stb_image), encoding PNG, JPEG, BMP and TGA to files or memory
 * (stb_image_write; TensorBoard's image summaries use the in-memory PNG), and resizing
 * (stb_image_resize).
 *
 * Layouts (moonflow_io.h): HW, HWC with C = 1..4, or CHW when the first size is 1, 3 or 4 and the
 * last is none of 1, 3, 4. uint8 is taken as it is; float values in [0, 1] are scaled by 255 and
 * rounded (clamped first; NaN becomes 0). Files are written atomically (temporary file, rename).
 *
 * This is the one file that compiles the stb implementations, as static functions so that they
 * cannot clash with another copy in the process.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "moonflow_io.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wtype-limits"
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO
#define STBI_FAILURE_USERMSG
/* The formats the design asks for, and TGA (which we also write). PNM, PSD, PIC and HDR are left
 * out: less used, and Debian's stb_image 2.27 overreads on some corrupt 16-bit PNM files. */
#define STBI_NO_PNM
#define STBI_NO_PSD
#define STBI_NO_PIC
#define STBI_NO_HDR
/* Zeroed allocations: stb_image 2.27 reads memory it never wrote on some corrupt files (a JPEG
 * scan that uses a Huffman table no DHT defined), so the same bytes decoded differently from one
 * call to the next; zeroed, the result is the same every time. Found by tests/fuzz/fuzz_image.c. */
#define STBI_MALLOC(n) calloc(1, (n))
#define STBI_REALLOC(p, n) realloc((p), (n))
#define STBI_FREE(p) free(p)
#include "stb_image.h"
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#define STBIW_ASSERT(x) ((void)0) /* no <assert.h> under the macro below */
/* stb_image_write's JPEG bit writer shifts bits out of a signed int (`bitBuf <<= 8`), which
 * UBSan reports as an overflowing shift in the sanitizer build. Every function of the writer is
 * marked exempt from the shift check (the attribute is ignored on its static tables). The C
 * library headers it includes (stdarg, stdio, stdlib, string, math) are already included above,
 * so the macro reaches only stb's own code. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#pragma GCC diagnostic ignored "-Wattributes"
#define static static __attribute__((no_sanitize("shift")))
#endif
#include "stb_image_write.h"
#undef static
#define STB_IMAGE_RESIZE_STATIC
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include "stb_image_resize.h"
#pragma GCC diagnostic pop
/* GCC reports stb's declared-but-undefined static functions at the end of the file, after the pop
 */
#pragma GCC diagnostic ignored "-Wunused-function"

#define MAX_SIDE (1 << 24) /* stb_image's own limit on a side */

/* ---- layouts --------------------------------------------------------------------------------- */

typedef struct layout {
  bool chw; /* CHW (else HW or HWC) */
  int ndim; /* 2 or 3 */
  int h, w, c;
} layout;

static bool is_134(int64_t n) { return n == 1 || n == 3 || n == 4; }

static mf_status get_layout(const char *fn, const mf_tensor *t, layout *L) {
  if (!t) return mf_fail(MF_ERR_ARG, "%s: image tensor is NULL", fn);
  char sh[160];
  mf_shape_str(t, sh, sizeof sh);
  int64_t h, w, c;
  L->ndim = t->ndim;
  L->chw = false;
  if (t->ndim == 2) {
    h = t->shape[0], w = t->shape[1], c = 1;
  } else if (t->ndim == 3) {
    L->chw = is_134(t->shape[0]) && !is_134(t->shape[2]);
    if (L->chw)
      c = t->shape[0], h = t->shape[1], w = t->shape[2];
    else
      h = t->shape[0], w = t->shape[1], c = t->shape[2];
    if (c < 1 || c > 4)
      return mf_fail(MF_ERR_SHAPE,
                     "%s: a %s image has %lld channels, expected 1..4 (HWC), or "
                     "1, 3 or 4 first (CHW)",
                     fn, sh, (long long)c);
  } else {
    return mf_fail(MF_ERR_SHAPE, "%s: an image is HW, HWC or CHW, got a %d-d tensor (%s)", fn,
                   t->ndim, sh);
  }
  if (h < 1 || w < 1 || h > MAX_SIDE || w > MAX_SIDE)
    return mf_fail(MF_ERR_SHAPE, "%s: image sizes %s: height and width must be 1..%d", fn, sh,
                   MAX_SIDE);
  if (h * w * c > INT_MAX)
    return mf_fail(MF_ERR_SHAPE, "%s: image %s is too large (over 2^31 bytes)", fn, sh);
  if (t->dtype != MF_U8 && !mf_dtype_is_float(t->dtype))
    return mf_fail(MF_ERR_DTYPE,
                   "%s: image dtype %s, expected uint8 (0..255) or a float dtype "
                   "(0..1)",
                   fn, mf_dtype_name(t->dtype));
  L->h = (int)h, L->w = (int)w, L->c = (int)c;
  return MF_OK;
}

/* The pixels of t as contiguous HWC host data of dtype dt (MF_U8 or MF_F32), in a new malloc'd
 * buffer; no scaling. */
static mf_status hwc_pixels(const char *fn, const mf_tensor *t, const layout *L, mf_dtype dt,
                            void **out) {
  *out = NULL;
  size_t n = (size_t)L->h * L->w * L->c;
  void *buf = malloc(n * mf_dtype_size(dt));
  if (!buf) return mf_fail(MF_ERR_MEMORY, "%s: out of memory", fn);
  mf_tensor *v = NULL;
  mf_status s;
  if (L->chw) {
    int perm[3] = {1, 2, 0};
    s = mf_permute(t, perm, &v);
  } else {
    v = mf_retain((mf_tensor *)t);
    s = MF_OK;
  }
  if (s == MF_OK) s = mf_to_host(v, dt, buf);
  mf_release(v);
  if (s != MF_OK) {
    free(buf);
    return s;
  }
  *out = buf;
  return MF_OK;
}

static unsigned char to_byte(float x) {
  if (!(x > 0)) return 0; /* and NaN */
  if (x >= 1) return 255;
  return (unsigned char)(x * 255.0f + 0.5f);
}

/* HWC uint8 pixels of any accepted image, in a malloc'd buffer. */
static mf_status u8_pixels(const char *fn, const mf_tensor *t, layout *L, unsigned char **out) {
  *out = NULL;
  MF_TRY(get_layout(fn, t, L));
  if (t->dtype == MF_U8) return hwc_pixels(fn, t, L, MF_U8, (void **)out);
  float *f;
  MF_TRY(hwc_pixels(fn, t, L, MF_F32, (void **)&f));
  size_t n = (size_t)L->h * L->w * L->c;
  unsigned char *b = malloc(n ? n : 1);
  if (!b) {
    free(f);
    return mf_fail(MF_ERR_MEMORY, "%s: out of memory", fn);
  }
  for (size_t i = 0; i < n; i++) b[i] = to_byte(f[i]);
  free(f);
  *out = b;
  return MF_OK;
}

mf_status mf_image_to_hwc_u8(const mf_tensor *image, mf_tensor **out) {
  *out = NULL;
  layout L;
  unsigned char *px;
  MF_TRY(u8_pixels("image", image, &L, &px));
  int64_t shape[3] = {L.h, L.w, L.c};
  mf_status s = mf_from_host(3, shape, MF_U8, px, mf_cpu(), out);
  free(px);
  return s;
}

/* ---- decoding -------------------------------------------------------------------------------- */

/* Where a JPEG's segments start (just past its SOI marker FF D8), or 0 when d is not a JPEG as
 * stb sees one: stb skips fill bytes FF before any marker, the SOI included. */
static size_t jpeg_start(const unsigned char *d, size_t n) {
  if (n < 2 || d[0] != 0xFF) return 0;
  size_t i = 1;
  while (i < n && d[i] == 0xFF) i++;
  return i < n && d[i] == 0xD8 ? i + 1 : 0;
}

/* stb_image 2.27 (Debian 12's) writes past a Huffman table when a JPEG's DHT segment declares
 * more than 256 codes (fixed upstream in 2.28). This walks a JPEG's marker segments, skipping the
 * entropy-coded data after each SOS, and rejects such a file before stb sees it. */
static bool jpeg_dht_ok(const unsigned char *d, size_t n) {
  size_t i = jpeg_start(d, n); /* after FF D8 */
  while (i + 4 <= n) {
    if (d[i] != 0xFF) { /* entropy-coded data: find the next marker that is not RSTn or FF 00 */
      i++;
      continue;
    }
    unsigned m = d[i + 1];
    if (m == 0xFF) {
      i++;
      continue;
    } /* fill byte */
    if (m == 0x00 || (m >= 0xD0 && m <= 0xD7) || m == 0x01) {
      i += 2;
      continue;
    }
    if (m == 0xD9) return true; /* EOI */
    size_t len = (size_t)d[i + 2] << 8 | d[i + 3];
    if (len < 2) return true; /* stb rejects it itself */
    if (m == 0xC4) {
      /* the tables as stb reads them: another table while any byte of the segment is left, its
       * 17 header bytes and its codes even when they run past the segment's end (bytes past the
       * file's end read as 0), so that a table straddling the end is checked too */
      int64_t left = (int64_t)len - 2;
      size_t at = i + 4;
      while (left > 0) {
        size_t codes = 0;
        for (size_t k = 1; k <= 16; k++) codes += at + k < n ? d[at + k] : 0;
        if (codes > 256) return false;
        at += 17 + codes;
        left -= 17 + (int64_t)codes;
      }
      if (left != 0) return true; /* stb rejects the segment itself, and reads no further */
    }
    i += 2 + len;
  }
  return true;
}

/* The most pixels a well-formed file of n bytes can describe, by format (whatever the size, 2^20).
 * stb fills what a corrupt or truncated file lacks with zeros or the background, so a few bytes
 * claiming 20000x20000 pixels would have it allocate and fill gigabytes for seconds; such a file
 * is refused before decoding. The ratios are above what each format's densest coding gives: PNG
 * 1-bit pixels through deflate's 1032:1 (8256 pixels a byte); JPEG one bit at least for each 8x8
 * block (512); GIF a 12-bit LZW code for at most 4096 pixels (2731); BMP, uncompressed for stb,
 * 8; TGA RLE packets of 128 one-byte pixels in two bytes (64). */
static double max_pixels(const unsigned char *b, size_t n) {
  double per_byte = 128; /* TGA, whose files have no magic */
  if (n >= 4 && memcmp(b, "\x89PNG", 4) == 0)
    per_byte = 8448;
  else if (jpeg_start(b, n))
    per_byte = 1024;
  else if (n >= 4 && memcmp(b, "GIF8", 4) == 0)
    per_byte = 4096;
  else if (n >= 2 && b[0] == 'B' && b[1] == 'M')
    per_byte = 16;
  double m = per_byte * (double)n;
  return m > (double)(1 << 20) ? m : (double)(1 << 20);
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A PNG's damage that would have stb allocate far more than the file could fill, or NULL: an IDAT
 * chunk whose length runs past the end of the file (stb grows its buffer to the length before
 * reading), or an IHDR whose rows need more bytes than deflate's 1032:1 can expand the file to
 * (stb allocates the image before finding the data short). */
static const char *png_damage(const unsigned char *d, size_t n) {
  if (n >= 33 && memcmp(d + 12, "IHDR", 4) == 0) {
    static const int channels[7] = {1, 0, 3, 1, 2, 0, 4}; /* by color type */
    uint32_t w = be32(d + 16), h = be32(d + 20);
    int depth = d[24], type = d[25];
    if (type <= 6 && channels[type]) {
      double row = 1 + ceil((double)w * channels[type] * depth / 8);
      if ((double)h * row > 1032.0 * (double)n + 1024)
        return "Corrupt PNG: its rows need more data than the file can hold";
    }
  }
  for (size_t at = 8; at + 8 <= n;) {
    uint32_t len = be32(d + at);
    if (len > n - at - 8) {
      if (memcmp(d + at + 4, "IDAT", 4) == 0)
        return "Corrupt PNG: an IDAT chunk runs past the end of the file";
      break;
    }
    at += 12 + (size_t)len;
  }
  return NULL;
}

/* A PNG whose first IDAT chunk is empty (legal, if odd): stb would compute NULL + 0, undefined
 * behaviour, for its data. Returns a copy without the empty IDAT chunks (they hold no data) in
 * *copy and its size in *m, or leaves *copy NULL when the file has none first. */
static mf_status png_without_empty_idat(const unsigned char *d, size_t n, unsigned char **copy,
                                        size_t *m) {
  *copy = NULL;
  size_t at = 8;
  while (at + 8 <= n && be32(d + at) <= n - at - 8 && memcmp(d + at + 4, "IDAT", 4) != 0)
    at += 12 + (size_t)be32(d + at);
  if (!(at + 8 <= n && be32(d + at) == 0 && memcmp(d + at + 4, "IDAT", 4) == 0)) return MF_OK;
  unsigned char *c = malloc(n);
  if (!c) return mf_fail(MF_ERR_MEMORY, "image_decode: out of memory (%zu bytes)", n);
  size_t k = 8;
  memcpy(c, d, 8);
  for (at = 8; at + 8 <= n && be32(d + at) <= n - at - 8;) {
    size_t len = be32(d + at), whole = 12 + len <= n - at ? 12 + len : n - at;
    if (len != 0 || memcmp(d + at + 4, "IDAT", 4) != 0) memcpy(c + k, d + at, whole), k += whole;
    at += whole;
  }
  memcpy(c + k, d + at, n - at); /* whatever follows, as it is */
  *copy = c;
  *m = k + (n - at);
  return MF_OK;
}

static mf_status decode_bytes(const char *fn, const char *what, const void *data, size_t n,
                              int channels, mf_tensor **out) {
  *out = NULL;
  if (channels < 0 || channels > 4)
    return mf_fail(MF_ERR_ARG, "%s: channels must be 0 (as in the file) or 1..4, got %d", fn,
                   channels);
  if (n == 0) return mf_fail(MF_ERR_IO, "%s: %s: empty, not an image", fn, what);
  if (n > INT_MAX) return mf_fail(MF_ERR_IO, "%s: %s: over 2 GiB, too large to decode", fn, what);
  const unsigned char *b = data;
  if (jpeg_start(b, n) && !jpeg_dht_ok(b, n))
    return mf_fail(MF_ERR_IO,
                   "%s: %s: cannot decode the image (Corrupt JPEG: a Huffman table "
                   "with more than 256 codes)",
                   fn, what);
  const char *damage = n >= 8 && memcmp(b, "\x89PNG", 4) == 0 ? png_damage(b, n) : NULL;
  if (damage) return mf_fail(MF_ERR_IO, "%s: %s: cannot decode the image (%s)", fn, what, damage);
  int w = 0, h = 0, comp = 0;
  if (stbi_info_from_memory(data, (int)n, &w, &h, &comp) && (double)w * h > max_pixels(b, n))
    return mf_fail(MF_ERR_IO,
                   "%s: %s: cannot decode the image (%dx%d pixels cannot come from %zu bytes: "
                   "corrupt or truncated)",
                   fn, what, w, h, n);
  unsigned char *px = stbi_load_from_memory(data, (int)n, &w, &h, &comp, channels);
  if (!px) {
    const char *why = stbi_failure_reason();
    return mf_fail(MF_ERR_IO, "%s: %s: cannot decode the image (%s)", fn, what,
                   why ? why : "unknown reason");
  }
  int c = channels ? channels : comp;
  int64_t shape[3] = {h, w, c};
  mf_status s = mf_from_host(3, shape, MF_U8, px, mf_cpu(), out);
  stbi_image_free(px);
  return s;
}

/* decode_bytes, on a copy without empty IDAT chunks when a PNG's first IDAT is one. */
static mf_status decode(const char *fn, const char *what, const void *data, size_t n, int channels,
                        mf_tensor **out) {
  *out = NULL;
  unsigned char *copy = NULL;
  size_t m = 0;
  if (n >= 8 && memcmp(data, "\x89PNG", 4) == 0) MF_TRY(png_without_empty_idat(data, n, &copy, &m));
  mf_status s = decode_bytes(fn, what, copy ? copy : data, copy ? m : n, channels, out);
  free(copy);
  return s;
}

mf_status mf_image_decode(const void *data, size_t n, int channels, mf_tensor **out) {
  if (!data && n) return mf_fail(MF_ERR_ARG, "image_decode: data is NULL");
  return decode("image_decode", "buffer", data, n, channels, out);
}

mf_status mf_image_load(const char *path, int channels, mf_tensor **out) {
  *out = NULL;
  if (!path) return mf_fail(MF_ERR_ARG, "image_load: path is NULL");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return mf_fail(MF_ERR_IO, "image_load: %s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return mf_fail(MF_ERR_IO, "image_load: %s: not a regular file", path);
  }
  if (st.st_size > INT_MAX) {
    close(fd);
    return mf_fail(MF_ERR_IO, "image_load: %s: over 2 GiB, too large to decode", path);
  }
  size_t n = (size_t)st.st_size, got = 0;
  unsigned char *buf = malloc(n ? n : 1);
  if (!buf) {
    close(fd);
    return mf_fail(MF_ERR_MEMORY, "image_load: %s: out of memory", path);
  }
  while (got < n) {
    ssize_t k = read(fd, buf + got, n - got);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;
    got += (size_t)k;
  }
  int e = errno;
  close(fd);
  if (got < n) {
    free(buf);
    return mf_fail(MF_ERR_IO, "image_load: %s: read error: %s", path, strerror(e));
  }
  mf_status s = decode("image_load", path, buf, n, channels, out);
  free(buf);
  return s;
}

/* ---- encoding -------------------------------------------------------------------------------- */

typedef struct sink {
  mf_buf *b;
  mf_status s;
} sink;

static void sink_write(void *ctx, void *data, int size) {
  sink *k = ctx;
  if (k->s == MF_OK && size > 0) k->s = mf_buf_append(k->b, data, (size_t)size);
}

typedef enum fmt { FMT_NONE, FMT_PNG, FMT_JPG, FMT_BMP, FMT_TGA } fmt;

static fmt format_of(const char *path) {
  const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
  if (!dot || (slash && dot < slash)) return FMT_NONE;
  dot++;
  if (!strcasecmp(dot, "png")) return FMT_PNG;
  if (!strcasecmp(dot, "jpg") || !strcasecmp(dot, "jpeg")) return FMT_JPG;
  if (!strcasecmp(dot, "bmp")) return FMT_BMP;
  if (!strcasecmp(dot, "tga")) return FMT_TGA;
  return FMT_NONE;
}

static mf_status encode(const char *fn, const mf_tensor *t, fmt f, int quality, mf_buf *out,
                        layout *L) {
  unsigned char *px;
  MF_TRY(u8_pixels(fn, t, L, &px));
  sink k = {out, MF_OK};
  size_t len0 = out->len;
  int ok;
  switch (f) {
  case FMT_PNG:
    ok = stbi_write_png_to_func(sink_write, &k, L->w, L->h, L->c, px, L->w * L->c);
    break;
  case FMT_JPG: ok = stbi_write_jpg_to_func(sink_write, &k, L->w, L->h, L->c, px, quality); break;
  case FMT_BMP: ok = stbi_write_bmp_to_func(sink_write, &k, L->w, L->h, L->c, px); break;
  default: ok = stbi_write_tga_to_func(sink_write, &k, L->w, L->h, L->c, px); break;
  }
  free(px);
  if (k.s != MF_OK || !ok) {
    out->len = len0;
    return k.s != MF_OK ? k.s
                        : mf_fail(MF_ERR_MEMORY, "%s: the encoder failed (out of memory?)", fn);
  }
  return MF_OK;
}

mf_status mf_image_encode_png(const mf_tensor *image, mf_buf *out, int *h, int *w, int *c) {
  if (!out) return mf_fail(MF_ERR_ARG, "image_encode_png: output buffer is NULL");
  layout L;
  MF_TRY(encode("image_encode_png", image, FMT_PNG, 0, out, &L));
  if (h) *h = L.h;
  if (w) *w = L.w;
  if (c) *c = L.c;
  return MF_OK;
}

/* Writes n bytes to path through a temporary file in the same folder and a rename. */
static mf_status write_atomic(const char *fn, const char *path, const void *data, size_t n) {
  static int counter;
  size_t cap = strlen(path) + 64;
  char *tmp = malloc(cap);
  if (!tmp) return mf_fail(MF_ERR_MEMORY, "%s: %s: out of memory", fn, path);
  int fd = -1;
  for (int tries = 0; fd < 0 && tries < 100; tries++) {
    snprintf(tmp, cap, "%s.tmp.%ld.%d", path, (long)getpid(),
             __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED));
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) {
    mf_status s =
        mf_fail(MF_ERR_IO, "%s: %s: cannot create %s: %s", fn, path, tmp, strerror(errno));
    free(tmp);
    return s;
  }
  size_t done = 0;
  int e = 0;
  while (done < n) {
    ssize_t k = write(fd, (const char *)data + done, n - done);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      e = k < 0 ? errno : EIO;
      break;
    }
    done += (size_t)k;
  }
  if (close(fd) != 0 && !e) e = errno;
  mf_status s = MF_OK;
  if (e)
    s = mf_fail(MF_ERR_IO, "%s: %s: write error: %s", fn, path, strerror(e));
  else if (rename(tmp, path) != 0)
    s = mf_fail(MF_ERR_IO, "%s: %s: cannot rename %s to it: %s", fn, path, tmp, strerror(errno));
  if (s != MF_OK) unlink(tmp);
  free(tmp);
  return s;
}

mf_status mf_image_save(const char *path, const mf_tensor *image, int quality) {
  if (!path) return mf_fail(MF_ERR_ARG, "image_save: path is NULL");
  fmt f = format_of(path);
  if (f == FMT_NONE)
    return mf_fail(MF_ERR_ARG,
                   "image_save: %s: unknown image format, expected a name ending in "
                   ".png, .jpg, .jpeg, .bmp or .tga",
                   path);
  if (quality < 0 || quality > 100)
    return mf_fail(MF_ERR_ARG, "image_save: %s: quality must be 1..100 (0 = 90), got %d", path,
                   quality);
  if (quality == 0) quality = 90;
  mf_buf b = {0};
  layout L;
  mf_status s = encode("image_save", image, f, quality, &b, &L);
  if (s == MF_OK) s = write_atomic("image_save", path, b.data, b.len);
  mf_buf_free(&b);
  return s;
}

/* ---- resizing -------------------------------------------------------------------------------- */

mf_status mf_image_resize(const mf_tensor *image, int64_t height, int64_t width, mf_tensor **out) {
  *out = NULL;
  const char *fn = "image_resize";
  layout L;
  MF_TRY(get_layout(fn, image, &L));
  if (height < 1 || width < 1 || height > MAX_SIDE || width > MAX_SIDE ||
      height * width * L.c > INT_MAX)
    return mf_fail(MF_ERR_ARG, "%s: bad target size %lldx%lld (1..%d a side, under 2^31 values)",
                   fn, (long long)height, (long long)width, MAX_SIDE);
  bool u8 = image->dtype == MF_U8;
  mf_dtype dt = u8 ? MF_U8 : MF_F32;
  void *in;
  MF_TRY(hwc_pixels(fn, image, &L, dt, &in));
  size_t esz = mf_dtype_size(dt);
  void *res = malloc((size_t)height * (size_t)width * (size_t)L.c * esz);
  if (!res) {
    free(in);
    return mf_fail(MF_ERR_MEMORY, "%s: out of memory", fn);
  }
  int ok = u8 ? stbir_resize_uint8(in, L.w, L.h, 0, res, (int)width, (int)height, 0, L.c)
              : stbir_resize_float(in, L.w, L.h, 0, res, (int)width, (int)height, 0, L.c);
  free(in);
  if (!ok) {
    free(res);
    return mf_fail(MF_ERR_MEMORY, "%s: out of memory", fn);
  }
  int64_t hwc[3] = {height, width, L.c};
  mf_tensor *r = NULL, *t = NULL;
  mf_status s = mf_from_host(L.ndim == 2 ? 2 : 3, hwc, dt, res, mf_cpu(), &r);
  free(res);
  if (s == MF_OK && L.chw) { /* back to CHW, contiguous */
    int perm[3] = {2, 0, 1};
    s = mf_permute(r, perm, &t);
    if (s == MF_OK) {
      mf_release(r);
      r = NULL;
      s = mf_contiguous(t, &r);
      MF_DROP(t);
    }
  }
  if (s == MF_OK && image->dtype != dt) { /* float64 and half types come back as they were */
    s = mf_cast(r, image->dtype, &t);
    mf_release(r);
    r = t, t = NULL;
  }
  if (s == MF_OK && mf_device_kind(mf_tensor_device(image)) != MF_DEV_CPU) {
    s = mf_to_device(r, mf_tensor_device(image), &t);
    mf_release(r);
    r = t, t = NULL;
  }
  if (s != MF_OK) {
    mf_release(r);
    return s;
  }
  *out = r;
  return MF_OK;
}
