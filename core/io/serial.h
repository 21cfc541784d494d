/* serial.h — private helpers shared by the tensor file formats of io/safetensors.c and io/npy.c
 * (implemented in safetensors.c): atomic file writing (temporary file, fsync, rename), reading a
 * whole file into memory (mmap) and loading a tensor list from a file or a buffer, the element types of the files and their conversion to moonflow
 * dtypes, and growing an mf_tensor_list. Not installed; nothing outside core/io includes it.
 */
#ifndef MF_IO_SERIAL_H
#define MF_IO_SERIAL_H

#include "moonflow_io.h"

/* ---- atomic writing ---------------------------------------------------------------------------
 * mfio_create makes `<path>.tmp.<pid>` (with a counter appended when that name is taken) beside the
 * target; mfio_commit fsyncs it, closes it, renames it over the target and fsyncs the folder.
 * After a failure anywhere, mfio_abort closes and removes the temporary file: the old file at
 * `path` is never touched until the rename. `op` prefixes the messages ("save_npz"). */
typedef struct mfio_wfile {
  int fd;
  char *tmp;
  const char *path;
  const char *op;
} mfio_wfile;

mf_status mfio_create(mfio_wfile *f, const char *op, const char *path);
mf_status mfio_write(mfio_wfile *f, const void *p, size_t n);
mf_status mfio_commit(mfio_wfile *f); /* also frees f's resources on failure */
void mfio_abort(mfio_wfile *f);

/* ---- reading ----------------------------------------------------------------------------------
 * A whole file, mapped read-only (an empty file gives data NULL, size 0). */
typedef struct mfio_map {
  const unsigned char *data;
  size_t size;
} mfio_map;

mf_status mfio_map_file(const char *op, const char *path, mfio_map *m);
void mfio_unmap(mfio_map *m);

/* A reader of a whole tensor-list file (or buffer) m, named `path` in its messages, into out. */
typedef mf_status (*mfio_list_reader)(const char *path, const mfio_map *m, int nsel,
                                      const char *const *sel, mf_tensor_list *out);
/* The loads of a tensor-list format: check out (MF_ERR_ARG "<op>: out is NULL") and zero it, run
 * read on the file at path mapped (mfio_load_list_file) or on data[0..n) named `name`, "buffer"
 * when NULL (mfio_load_list_memory: data NULL with n > 0 is MF_ERR_ARG), and free out when read
 * fails. */
mf_status mfio_load_list_file(const char *op, mfio_list_reader read, const char *path, int nsel,
                              const char *const *sel, mf_tensor_list *out);
mf_status mfio_load_list_memory(const char *op, mfio_list_reader read, const char *name,
                                const void *data, size_t n, int nsel, const char *const *sel,
                                mf_tensor_list *out);

/* ---- element types of the files ---------------------------------------------------------------
 * What safetensors and npy can hold. Reading converts to a moonflow dtype: i8/i16/u16 -> int32,
 * u32 -> int64, u64 -> int64 (values above 2^63-1 are an error), f16/bf16 -> float32 (CPU tensors
 * cannot hold them), the rest to themselves. */
typedef enum mfio_el {
  EL_BOOL,
  EL_U8,
  EL_I8,
  EL_I16,
  EL_U16,
  EL_I32,
  EL_U32,
  EL_I64,
  EL_U64,
  EL_F16,
  EL_BF16,
  EL_F32,
  EL_F64,
  EL_COUNT
} mfio_el;

size_t mfio_el_size(mfio_el e);
const char *mfio_el_name(mfio_el e); /* safetensors' names: "F32", "BOOL", ... */
mf_dtype mfio_el_dtype(mfio_el e);   /* the dtype it is read as */
/* Converts n elements of type e at src (little-endian, or big-endian when `big` is set) into dst,
 * which holds n elements of mfio_el_dtype(e). Fails (MF_ERR_IO, message
 * "<op>: <path>: <what>: ...") only for u64 values above 2^63-1. */
mf_status mfio_decode(const char *op, const char *path, const char *what, mfio_el e, bool big,
                      const unsigned char *src, int64_t n, void *dst);
/* The bytes of t as a contiguous little-endian buffer of its own dtype (downloaded from its device
 * when needed). *owned is set when *out must be free()d; a contiguous CPU tensor is borrowed. */
mf_status mfio_tensor_bytes(const char *op, const char *path, const mf_tensor *t, mf_dtype as,
                            const unsigned char **out, void **owned);

/* ---- results ----------------------------------------------------------------------------------
 * Appends (a copy of name, t with its reference taken over); on failure t is released. */
mf_status mfio_list_push(mf_tensor_list *l, const char *name, mf_tensor *t);
mf_status mfio_list_meta(mf_tensor_list *l, const char *key, const char *value);
/* Whether name is among sel[0..nsel) (nsel 0: everything is selected). */
bool mfio_selected(int nsel, const char *const *sel, const char *name);
/* Fails naming the first selected name that `l` lacks, and lists what the file holds. */
mf_status mfio_check_selection(const char *op, const char *path, int nsel, const char *const *sel,
                               const mf_tensor_list *l, int nall, const char *const *all);
/* Names must be unique and non-NULL; returns MF_ERR_ARG naming the duplicate. */
mf_status mfio_check_names(const char *op, const char *path, int n, const char *const *names,
                           mf_tensor *const *tensors);

#endif
