/* md5.c — MD5 (RFC 1321) of buffers and files, to check downloaded data sets against their
 * published checksums. Written from the RFC's description; not for security. A file's MD5 can be
 * taken of its gzip-decompressed content (zlib's gzread reads plain files as they are). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "moonflow_io.h"

/* ---- the transform ---------------------------------------------------------------------- */

#define ROTL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))
#define F(x, y, z) (((x) & (y)) | (~(x) & (z)))
#define G(x, y, z) (((x) & (z)) | ((y) & ~(z)))
#define H(x, y, z) ((x) ^ (y) ^ (z))
#define I(x, y, z) ((y) ^ ((x) | ~(z)))
#define STEP(f, a, b, c, d, x, t, s) (a) = (b) + ROTL((a) + f((b), (c), (d)) + (x) + (t), (s))

/* Processes one 64-byte block. */
static void transform(uint32_t st[4], const unsigned char *p) {
  uint32_t x[16];
  for (int i = 0; i < 16; i++)
    x[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
           (uint32_t)p[4 * i + 3] << 24;
  uint32_t a = st[0], b = st[1], c = st[2], d = st[3];

  STEP(F, a, b, c, d, x[0], 0xd76aa478, 7);
  STEP(F, d, a, b, c, x[1], 0xe8c7b756, 12);
  STEP(F, c, d, a, b, x[2], 0x242070db, 17);
  STEP(F, b, c, d, a, x[3], 0xc1bdceee, 22);
  STEP(F, a, b, c, d, x[4], 0xf57c0faf, 7);
  STEP(F, d, a, b, c, x[5], 0x4787c62a, 12);
  STEP(F, c, d, a, b, x[6], 0xa8304613, 17);
  STEP(F, b, c, d, a, x[7], 0xfd469501, 22);
  STEP(F, a, b, c, d, x[8], 0x698098d8, 7);
  STEP(F, d, a, b, c, x[9], 0x8b44f7af, 12);
  STEP(F, c, d, a, b, x[10], 0xffff5bb1, 17);
  STEP(F, b, c, d, a, x[11], 0x895cd7be, 22);
  STEP(F, a, b, c, d, x[12], 0x6b901122, 7);
  STEP(F, d, a, b, c, x[13], 0xfd987193, 12);
  STEP(F, c, d, a, b, x[14], 0xa679438e, 17);
  STEP(F, b, c, d, a, x[15], 0x49b40821, 22);

  STEP(G, a, b, c, d, x[1], 0xf61e2562, 5);
  STEP(G, d, a, b, c, x[6], 0xc040b340, 9);
  STEP(G, c, d, a, b, x[11], 0x265e5a51, 14);
  STEP(G, b, c, d, a, x[0], 0xe9b6c7aa, 20);
  STEP(G, a, b, c, d, x[5], 0xd62f105d, 5);
  STEP(G, d, a, b, c, x[10], 0x02441453, 9);
  STEP(G, c, d, a, b, x[15], 0xd8a1e681, 14);
  STEP(G, b, c, d, a, x[4], 0xe7d3fbc8, 20);
  STEP(G, a, b, c, d, x[9], 0x21e1cde6, 5);
  STEP(G, d, a, b, c, x[14], 0xc33707d6, 9);
  STEP(G, c, d, a, b, x[3], 0xf4d50d87, 14);
  STEP(G, b, c, d, a, x[8], 0x455a14ed, 20);
  STEP(G, a, b, c, d, x[13], 0xa9e3e905, 5);
  STEP(G, d, a, b, c, x[2], 0xfcefa3f8, 9);
  STEP(G, c, d, a, b, x[7], 0x676f02d9, 14);
  STEP(G, b, c, d, a, x[12], 0x8d2a4c8a, 20);

  STEP(H, a, b, c, d, x[5], 0xfffa3942, 4);
  STEP(H, d, a, b, c, x[8], 0x8771f681, 11);
  STEP(H, c, d, a, b, x[11], 0x6d9d6122, 16);
  STEP(H, b, c, d, a, x[14], 0xfde5380c, 23);
  STEP(H, a, b, c, d, x[1], 0xa4beea44, 4);
  STEP(H, d, a, b, c, x[4], 0x4bdecfa9, 11);
  STEP(H, c, d, a, b, x[7], 0xf6bb4b60, 16);
  STEP(H, b, c, d, a, x[10], 0xbebfbc70, 23);
  STEP(H, a, b, c, d, x[13], 0x289b7ec6, 4);
  STEP(H, d, a, b, c, x[0], 0xeaa127fa, 11);
  STEP(H, c, d, a, b, x[3], 0xd4ef3085, 16);
  STEP(H, b, c, d, a, x[6], 0x04881d05, 23);
  STEP(H, a, b, c, d, x[9], 0xd9d4d039, 4);
  STEP(H, d, a, b, c, x[12], 0xe6db99e5, 11);
  STEP(H, c, d, a, b, x[15], 0x1fa27cf8, 16);
  STEP(H, b, c, d, a, x[2], 0xc4ac5665, 23);

  STEP(I, a, b, c, d, x[0], 0xf4292244, 6);
  STEP(I, d, a, b, c, x[7], 0x432aff97, 10);
  STEP(I, c, d, a, b, x[14], 0xab9423a7, 15);
  STEP(I, b, c, d, a, x[5], 0xfc93a039, 21);
  STEP(I, a, b, c, d, x[12], 0x655b59c3, 6);
  STEP(I, d, a, b, c, x[3], 0x8f0ccc92, 10);
  STEP(I, c, d, a, b, x[10], 0xffeff47d, 15);
  STEP(I, b, c, d, a, x[1], 0x85845dd1, 21);
  STEP(I, a, b, c, d, x[8], 0x6fa87e4f, 6);
  STEP(I, d, a, b, c, x[15], 0xfe2ce6e0, 10);
  STEP(I, c, d, a, b, x[6], 0xa3014314, 15);
  STEP(I, b, c, d, a, x[13], 0x4e0811a1, 21);
  STEP(I, a, b, c, d, x[4], 0xf7537e82, 6);
  STEP(I, d, a, b, c, x[11], 0xbd3af235, 10);
  STEP(I, c, d, a, b, x[2], 0x2ad7d2bb, 15);
  STEP(I, b, c, d, a, x[9], 0xeb86d391, 21);

  st[0] += a;
  st[1] += b;
  st[2] += c;
  st[3] += d;
}

/* ---- streaming interface ------------------------------------------------------------------ */

void mf_md5_init(mf_md5_ctx *c) {
  c->state[0] = 0x67452301;
  c->state[1] = 0xefcdab89;
  c->state[2] = 0x98badcfe;
  c->state[3] = 0x10325476;
  c->nbytes = 0;
}

void mf_md5_update(mf_md5_ctx *c, const void *data, size_t n) {
  const unsigned char *p = data;
  size_t have = (size_t)(c->nbytes % 64);
  c->nbytes += n;
  if (have) { /* fill the partial block first */
    size_t take = 64 - have < n ? 64 - have : n;
    memcpy(c->buf + have, p, take);
    p += take;
    n -= take;
    if (have + take < 64) return;
    transform(c->state, c->buf);
  }
  for (; n >= 64; p += 64, n -= 64) transform(c->state, p);
  memcpy(c->buf, p, n);
}

void mf_md5_final(mf_md5_ctx *c, unsigned char digest[16]) {
  uint64_t bits = c->nbytes * 8;
  unsigned char pad[72] = {0x80};
  size_t have = (size_t)(c->nbytes % 64);
  size_t npad = have < 56 ? 56 - have : 120 - have; /* up to 56 mod 64, then the length */
  for (int i = 0; i < 8; i++) pad[npad + i] = (unsigned char)(bits >> (8 * i));
  mf_md5_update(c, pad, npad + 8);
  for (int i = 0; i < 4; i++)
    for (int k = 0; k < 4; k++) digest[4 * i + k] = (unsigned char)(c->state[i] >> (8 * k));
}

char *mf_md5_hex(const unsigned char digest[16], char hex[33]) {
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < 16; i++) {
    hex[2 * i] = digits[digest[i] >> 4];
    hex[2 * i + 1] = digits[digest[i] & 15];
  }
  hex[32] = 0;
  return hex;
}

void mf_md5_buffer(const void *data, size_t n, char hex[33]) {
  mf_md5_ctx c;
  unsigned char d[16];
  mf_md5_init(&c);
  mf_md5_update(&c, data, n);
  mf_md5_final(&c, d);
  mf_md5_hex(d, hex);
}

/* ---- files ----------------------------------------------------------------------------------- */

/* With gunzip, the file is read through zlib: gzread decompresses gzip files and passes other
 * files through as they are, so one loop serves both. Without, plain stdio. */
mf_status mf_md5_file(const char *path, bool gunzip, char hex[33]) {
  unsigned char buf[1 << 15];
  size_t bufsize = sizeof buf;
  mf_md5_ctx c;
  unsigned char d[16];
  mf_md5_init(&c);
  hex[0] = 0;
  if (!gunzip) {
    FILE *f = fopen(path, "rb");
    if (!f) return mf_fail(MF_ERR_IO, "md5: %s: cannot open: %s", path, strerror(errno));
    size_t n;
    while ((n = fread(buf, 1, bufsize, f)) > 0) mf_md5_update(&c, buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) return mf_fail(MF_ERR_IO, "md5: %s: read error", path);
  } else {
    errno = 0;
    gzFile g = gzopen(path, "rb");
    if (!g)
      return mf_fail(MF_ERR_IO, "md5: %s: cannot open: %s", path,
                     errno ? strerror(errno) : "out of memory");
    gzbuffer(g, 1 << 17);
    int n;
    while ((n = gzread(g, buf, (unsigned)bufsize)) > 0) mf_md5_update(&c, buf, (size_t)n);
    if (n < 0) {
      int zerr;
      const char *msg = gzerror(g, &zerr);
      mf_status s = mf_fail(MF_ERR_IO, "md5: %s: corrupt gzip data (%s)", path, msg);
      gzclose(g);
      return s;
    }
    /* a gzip stream cut short reads as a clean end with Z_BUF_ERROR pending */
    int zerr = Z_OK;
    const char *msg = gzerror(g, &zerr);
    if (zerr != Z_OK && zerr != Z_STREAM_END) {
      mf_status s = mf_fail(MF_ERR_IO, "md5: %s: truncated or corrupt gzip data (%s)", path, msg);
      gzclose(g);
      return s;
    }
    gzclose(g);
  }
  mf_md5_final(&c, d);
  mf_md5_hex(d, hex);
  return MF_OK;
}
