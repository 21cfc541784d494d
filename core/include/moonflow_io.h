/* moonflow_io.h — file formats of the core that have no place in moonflow.h yet: IDX (the MNIST
 * format) reading and writing, MD5 of files and buffers (to check downloads), and index_select
 * (copying rows by index, used by the data loaders' batches).
 *
 * Include it after (or instead of) moonflow.h; it includes moonflow.h itself. Same conventions:
 * every function returns an mf_status and leaves a message naming the function and the file
 * ("read_idx: data/x.idx: truncated: ..."); results come back through a last argument.
 */
#ifndef MOONFLOW_IO_H
#define MOONFLOW_IO_H

#include "moonflow.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- IDX (io/idx.c) --------------------------------------------------------------------------
 * Layout: magic 00 00 TT DD (TT the element type, DD the number of dims), DD sizes as u32
 * big-endian, then the elements row-major, big-endian. A file may be gzip-compressed (detected by
 * the gzip magic 1f 8b, whatever the name). */

typedef enum mf_idx_type {
  MF_IDX_AUTO = 0x00, /* writer: choose from the tensor's dtype */
  MF_IDX_U8 = 0x08,
  MF_IDX_I8 = 0x09,
  MF_IDX_I16 = 0x0B,
  MF_IDX_I32 = 0x0C,
  MF_IDX_F32 = 0x0D,
  MF_IDX_F64 = 0x0E,
} mf_idx_type;

/* The dtype an IDX element type is read as: u8 -> uint8; i8, i16, i32 -> int32 (moonflow has no
 * int8/int16, and int32 holds them exactly); f32 -> float32; f64 -> float64. MF_DTYPE_COUNT for
 * an unknown code. */
mf_dtype mf_idx_dtype(int type_code);
/* "u8", "i8", "i16", "i32", "f32", "f64", or NULL for an unknown code. */
const char *mf_idx_type_name(int type_code);

/* Reads an IDX file (raw or gzip) into a new contiguous CPU tensor. Fails with MF_ERR_IO, naming
 * the file, when it cannot be opened, does not start with 00 00, has an unknown type code, more
 * than MF_MAX_DIMS dims or sizes whose product overflows, ends before its header says (truncated),
 * has bytes after the data (trailing garbage), or is corrupt gzip; MF_ERR_MEMORY when the tensor
 * cannot be allocated. */
mf_status mf_read_idx(const char *path, mf_tensor **out);

/* Writes t (any device, any strides) as an IDX file of element type `type` (MF_IDX_AUTO: uint8 and
 * bool -> u8, int32 and int64 -> i32, float32/float16/bfloat16 -> f32, float64 -> f64). Integer
 * types need integral values in their range (MF_ERR_ARG otherwise: nothing is written). A path
 * ending in ".gz" is written gzip-compressed. Atomic: written to a temporary file in the same
 * folder, then renamed. A 0-d tensor is written with 0 dims (one element). */
mf_status mf_write_idx(const char *path, const mf_tensor *t, mf_idx_type type);

/* ---- MD5 (io/md5.c), RFC 1321 -------------------------------------------------------------- */

typedef struct mf_md5_ctx {
  uint32_t state[4];
  uint64_t nbytes;      /* bytes hashed so far */
  unsigned char buf[64]; /* a partial block */
} mf_md5_ctx;

void mf_md5_init(mf_md5_ctx *c);
void mf_md5_update(mf_md5_ctx *c, const void *data, size_t n);
void mf_md5_final(mf_md5_ctx *c, unsigned char digest[16]);
/* Lowercase hex of a digest into hex[33] (NUL-terminated); returns hex. */
char *mf_md5_hex(const unsigned char digest[16], char hex[33]);
/* MD5 of a buffer, as 32 hex digits into hex[33]. */
void mf_md5_buffer(const void *data, size_t n, char hex[33]);
/* MD5 of a file's bytes, as 32 hex digits into hex[33]. With gunzip true the MD5 is of the
 * decompressed content when the file is gzip-compressed (of the bytes as they are otherwise), so
 * a download can be checked against the MD5 of the raw file whichever form it came in. */
mf_status mf_md5_file(const char *path, bool gunzip, char hex[33]);

/* ---- index_select (ops_index.c) ------------------------------------------------------------ */

/* out = x with only the entries `index` (a 1-D int32 or int64 tensor of 0-based positions, any
 * length, repeats allowed) along dim, in that order: out.shape[dim] = numel(index). A copy, on
 * x's device (CPU only for now: MF_ERR_UNSUPPORTED elsewhere); not recorded by autograd. */
mf_status mf_index_select(const mf_tensor *x, int dim, const mf_tensor *index, mf_tensor **out);

#ifdef __cplusplus
}
#endif
#endif
