/* moonflow_io.h — file formats of the core that have no place in moonflow.h yet: IDX (the MNIST
 * format) reading and writing, MD5 of files and buffers (to check downloads), index_select
 * (copying rows by index, used by the data loaders' batches), named tensors in safetensors and
 * NumPy .npy/.npz files, TensorBoard event files, and images (PNG, JPEG, ... through stb).
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
  uint64_t nbytes;       /* bytes hashed so far */
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

/* ---- byte buffers (io/events.c) -------------------------------------------------------------
 * A growable byte buffer for encoders (protobuf messages, TFRecords, PNG in memory). Start from
 * {0} and free with mf_buf_free. Appending functions fail with MF_ERR_MEMORY only. */

typedef struct mf_buf {
  unsigned char *data;
  size_t len, cap;
} mf_buf;

mf_status mf_buf_append(mf_buf *b, const void *p, size_t n);
void mf_buf_free(mf_buf *b); /* frees the bytes, leaves {0} */

/* ---- TensorBoard event files (io/events.c) ---------------------------------------------------
 * FORMATS.md "TensorBoard event files". A file is a run of TFRecords
 *   u64 len (LE) | u32 masked_crc32c(len bytes) | data[len] | u32 masked_crc32c(data)
 * whose data are serialized Event messages; the first holds file_version "brain.Event:2".
 *
 * Summaries are built as bytes: a serialized Summary is a run of Value fields, so each
 * mf_summary_add_* appends one Value to `summary`, and concatenating two summaries merges them. */

/* CRC-32C (Castagnoli): crc32c("123456789") = 0xE3069283. mf_crc32c_update continues a CRC
 * (start from 0). */
uint32_t mf_crc32c(const void *data, size_t n);
uint32_t mf_crc32c_update(uint32_t crc, const void *data, size_t n);
/* TFRecord's mask: ((crc >> 15) | (crc << 17)) + 0xA282EAD8. */
uint32_t mf_crc32c_mask(uint32_t crc);

/* Appends one TFRecord framing data[n] to out. */
mf_status mf_tfrecord_append(mf_buf *out, const void *data, size_t n);
/* Checks and strips the record at data[*pos ...]: on success *rec points at its payload and
 * *pos moves past it. MF_ERR_IO when the record is truncated or a CRC does not match. */
mf_status mf_tfrecord_next(const unsigned char *data, size_t n, size_t *pos,
                           const unsigned char **rec, size_t *rec_len);

/* What an Event carries beside wall_time and step (its oneof, by field number). */
typedef enum mf_event_kind {
  MF_EVENT_NONE = 0,         /* neither: only wall_time and step */
  MF_EVENT_FILE_VERSION = 3, /* payload: the version string, "brain.Event:2" */
  MF_EVENT_GRAPH_DEF = 4,    /* payload: a serialized GraphDef */
  MF_EVENT_SUMMARY = 5,      /* payload: a serialized Summary (may be empty) */
} mf_event_kind;

/* Appends a serialized Event {wall_time, step, <kind> = payload} to out (proto3: a zero
 * wall_time or step is left out, the oneof member is always written). */
mf_status mf_event_encode(mf_buf *out, double wall_time, int64_t step, mf_event_kind kind,
                          const void *payload, size_t n);

/* Summary values. tag is any UTF-8 string. */
mf_status mf_summary_add_scalar(mf_buf *summary, const char *tag, float value);
/* A HistogramProto of n values with TensorFlow's default buckets: limits +-1e-12 * 1.1^k up to
 * 1e20, 0, and +-DBL_MAX; a value v counts in the first bucket whose limit is >= v (bucket i
 * holds (limit[i-1], limit[i]]). Runs of empty buckets are merged into the next limit as
 * TensorFlow does. NaNs are left out; +-inf land in the end buckets. */
mf_status mf_summary_add_histogram(mf_buf *summary, const char *tag, const double *values,
                                   int64_t n);
/* The same from a tensor of any real dtype (any device, any strides). */
mf_status mf_summary_add_histogram_tensor(mf_buf *summary, const char *tag, const mf_tensor *t);
/* An Image of already encoded bytes (PNG or JPEG) of height x width x channels (1..4). */
mf_status mf_summary_add_image_encoded(mf_buf *summary, const char *tag, int height, int width,
                                       int channels, const void *encoded, size_t n);
/* An image tensor (layout and dtype as mf_image_to_hwc_u8 takes them), encoded as PNG. */
mf_status mf_summary_add_image(mf_buf *summary, const char *tag, const mf_tensor *image);
/* Text for TensorBoard's text plugin: a string tensor with plugin_data {plugin_name "text"}. */
mf_status mf_summary_add_text(mf_buf *summary, const char *tag, const char *text, size_t n);

/* The default bucket limits (the 1551 of them, ascending); the pointer stays valid. */
const double *mf_histogram_default_limits(int *count);

/* An event file writer: `<logdir>/events.out.tfevents.<10-digit unix seconds>.<hostname>` (with
 * `.<pid>.<n>` added when that name is taken), logdir made as by mkdir -p. Opening writes the
 * file_version record and flushes it. Records are kept in memory and written whole at flush
 * (and when a record is added while more than 1 MiB is pending or 10 s have passed since the
 * last write), so a reader never sees half a record. Failures are
 * MF_ERR_IO naming the path. */
typedef struct mf_event_writer mf_event_writer;

mf_status mf_event_writer_open(const char *logdir, mf_event_writer **out);
const char *mf_event_writer_path(const mf_event_writer *w);
/* Appends a serialized Event as one record. */
mf_status mf_event_writer_write(mf_event_writer *w, const void *event, size_t n);
/* Appends Event {wall_time (< 0: now), step, summary}. */
mf_status mf_event_writer_add_summary(mf_event_writer *w, double wall_time, int64_t step,
                                      const void *summary, size_t n);
/* Appends Event {wall_time (< 0: now), graph_def}. */
mf_status mf_event_writer_add_graph(mf_event_writer *w, double wall_time, const void *graph_def,
                                    size_t n);
mf_status mf_event_writer_flush(mf_event_writer *w);
/* Flushes, closes and frees w (NULL is fine). The status is the flush's and close's. */
mf_status mf_event_writer_close(mf_event_writer *w);
/* Seconds since the epoch, with microseconds. */
double mf_wall_time(void);

/* ---- images (io/image.c, stb_image) ---------------------------------------------------------
 * Image tensors are uint8 (0..255) or float (0..1), laid out as
 *   HW        one channel;
 *   HWC       C = 1..4 (gray, gray+alpha, RGB, RGBA);
 *   CHW       taken when the first size is 1, 3 or 4 and the last is none of 1, 3, 4
 *             (so a 3x32x32 tensor is CHW and a 32x32x3 one HWC).
 * Float values are clamped to [0, 1] and rounded to v * 255; other dtypes are MF_ERR_DTYPE. */

/* Decodes a PNG, JPEG, BMP, GIF (first frame) or TGA file into a new uint8 HxWxC
 * tensor, C as in the file, or `channels` (1..4) when nonzero. MF_ERR_IO naming the file when it
 * cannot be read or decoded. */
mf_status mf_image_load(const char *path, int channels, mf_tensor **out);
mf_status mf_image_decode(const void *data, size_t n, int channels, mf_tensor **out);
/* Encodes by the path's extension (.png, .jpg/.jpeg, .bmp, .tga; any case) and writes the file
 * atomically. quality: JPEG 1..100 (0 = 90), ignored otherwise. */
mf_status mf_image_save(const char *path, const mf_tensor *image, int quality);
/* Appends image as PNG to out; *h, *w, *c (any may be NULL) receive its geometry. */
mf_status mf_image_encode_png(const mf_tensor *image, mf_buf *out, int *h, int *w, int *c);
/* A new contiguous uint8 HxWxC CPU tensor from any accepted layout and dtype. */
mf_status mf_image_to_hwc_u8(const mf_tensor *image, mf_tensor **out);
/* Resized to height x width (stb_image_resize's default filters), same layout and dtype
 * (uint8 or float32/float64). */
mf_status mf_image_resize(const mf_tensor *image, int64_t height, int64_t width, mf_tensor **out);

/* ---- index_select (ops_index.c) ------------------------------------------------------------ */

/* out = x with only the entries `index` (a 1-D int32 or int64 tensor of 0-based positions, any
 * length, repeats allowed) along dim, in that order: out.shape[dim] = numel(index). A copy, on
 * x's device (CPU only for now: MF_ERR_UNSUPPORTED elsewhere); not recorded by autograd. */
mf_status mf_index_select(const mf_tensor *x, int dim, const mf_tensor *index, mf_tensor **out);

/* ---- named tensors: safetensors (io/safetensors.c), .npy/.npz (io/npy.c) --------------------
 * Writers take n tensors with n unique names (any device, dtype and strides: they are copied to
 * the host as needed) and write atomically: a temporary file `<path>.tmp.<pid>` beside the target,
 * fsync, rename over path, so a crash mid-save leaves the old file intact. Readers check everything
 * a damaged file can get wrong and fail with MF_ERR_IO naming the function, the file and what was
 * wrong ("load_safetensors: m.safetensors: header length 999 runs past the end of the file").
 *
 * Element types are read as moonflow dtypes: i8, i16, u16 -> int32; u32, u64 -> int64 (a u64
 * value above 2^63-1 is an error); f16, bf16 -> float32 (CPU tensors cannot hold them); bool, u8,
 * i32, i64, f32, f64 as themselves. Writers keep the dtype (float16/bfloat16 GPU tensors are
 * written as F16/BF16; .npy has no bfloat16, so those are written as float32 there). */

/* What a reader returns: n tensors (one reference each) with their names, in file order, and
 * safetensors' string metadata (nmeta key/value pairs). Free with mf_tensor_list_free. */
typedef struct mf_tensor_list {
  int n, cap;
  char **names;
  mf_tensor **tensors;
  int nmeta, capmeta;
  char **meta_keys;
  char **meta_values;
} mf_tensor_list;

/* Releases the tensors, frees the strings and zeroes *l (a zeroed list is valid and empty). */
void mf_tensor_list_free(mf_tensor_list *l);
/* The tensor named `name` in l (borrowed), or NULL. */
mf_tensor *mf_tensor_list_get(const mf_tensor_list *l, const char *name);

/* safetensors: u64 LE header length N, N bytes of JSON, the data. The writer orders tensors by
 * element size (largest first), then by name, contiguously, and pads the JSON with spaces to a
 * multiple of 8. meta: nmeta string pairs stored under "__metadata__" (may be 0/NULL). The name
 * "__metadata__" is reserved. */
mf_status mf_save_safetensors(const char *path, int n, const char *const *names,
                              mf_tensor *const *tensors, int nmeta, const char *const *meta_keys,
                              const char *const *meta_values);
/* Reads the tensors named in sel[0..nsel) (nsel 0: all; a missing name is an error) and the
 * metadata into *out (zeroed first). Checks: header length <= 100,000,000 and within the file,
 * valid UTF-8 JSON of the right form, known dtypes (BOOL U8 I8 I16 U16 I32 U32 I64 U64 F16 BF16
 * F32 F64), shapes of at most MF_MAX_DIMS dims, offsets within the data, sizes that match shape x
 * dtype, and data that is covered exactly: no overlaps, no gaps, no bytes left over. */
mf_status mf_load_safetensors(const char *path, int nsel, const char *const *sel,
                              mf_tensor_list *out);
/* The same from the file's bytes data[0..n) (borrowed; the tensors are copies); `name` stands for
 * the file in messages (NULL: "buffer"). The _from_memory readers below do the same. */
mf_status mf_load_safetensors_from_memory(const char *name, const void *data, size_t n, int nsel,
                                          const char *const *sel, mf_tensor_list *out);

/* .npy: one tensor (format 1.0, or 2.0 when the header needs it; data 64-byte aligned, C order). */
mf_status mf_save_npy(const char *path, const mf_tensor *t);
/* Reads .npy 1.0/2.0/3.0 with descr <f2 <f4 <f8 |i1 <i2 <i4 <i8 |u1 <u2 <u4 <u8 |b1 (either byte
 * order); fortran_order True is read transposed and made contiguous. Rejects object and structured
 * dtypes and everything else. */
mf_status mf_load_npy(const char *path, mf_tensor **out);
mf_status mf_load_npy_from_memory(const char *name, const void *data, size_t n, mf_tensor **out);
/* .npz: a ZIP archive of `<name>.npy` members, stored (method 0) with CRC-32, zip64 records when
 * sizes or offsets need them. */
mf_status mf_save_npz(const char *path, int n, const char *const *names, mf_tensor *const *tensors);
/* Reads an .npz (np.savez, np.savez_compressed, zip64): the central directory found from the end
 * record, members stored or deflated, CRC-32 checked. Names are the members' without ".npy". sel
 * as for mf_load_safetensors. */
mf_status mf_load_npz(const char *path, int nsel, const char *const *sel, mf_tensor_list *out);
mf_status mf_load_npz_from_memory(const char *name, const void *data, size_t n, int nsel,
                                  const char *const *sel, mf_tensor_list *out);

#ifdef __cplusplus
}
#endif
#endif
