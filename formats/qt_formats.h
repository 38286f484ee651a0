/*
 * qt_formats.h - the public interface of qtrain's file formats module.
 *
 * safetensors (huggingface/safetensors, README "Format"; see ../shared/FORMATS.md):
 *   u64 little-endian header length N, N bytes of UTF-8 JSON
 *   {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
 *   then the byte buffer. Offsets are relative to the buffer, the tensors cover it
 *   exactly (no holes, no overlaps), data is little-endian row-major.
 *
 * Reading loads the whole file into memory and validates all of it before returning,
 * so every qt_st_tensor handed out describes bytes that are really there. A file that
 * is malformed, truncated or hostile yields QT_EFORMAT (QT_EIO when it cannot be read,
 * QT_EDTYPE for a well-formed tensor of a dtype qtrain does not hold) with a message in
 * qt_error_message() naming the file and what was expected versus found.
 */
#ifndef QT_FORMATS_H
#define QT_FORMATS_H

#include "qt_autograd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --------------------------------------------------------------- safetensors ---- */

/* One tensor of a safetensors file. From qt_safetensors_open: every pointer is owned by
 * the qt_safetensors and lives until qt_safetensors_close. For qt_safetensors_write:
 * owned by the caller, only read. */
typedef struct qt_st_tensor {
    const char *name;
    qt_dtype dtype;           /* F32, BF16, F16, I8, U8, I32 are accepted; other
                                 safetensors dtypes -> QT_EDTYPE naming tensor and dtype */
    int ndim;                 /* 0..QT_MAX_DIMS (0 = scalar); more dims -> QT_EFORMAT */
    int64_t shape[QT_MAX_DIMS];
    const void *data;         /* (nbytes) little-endian row-major; aligned only as the
                                 file's offsets allow (the buffer itself starts 64-byte
                                 aligned), so cast only after checking, or memcpy */
    size_t nbytes;            /* numel * dtype size */
} qt_st_tensor;

typedef struct qt_safetensors qt_safetensors; /* opaque */

/* Header lengths above this are refused (the reference reader's MAX_HEADER_SIZE). */
#define QT_ST_MAX_HEADER 100000000ull

/* Reads the file into memory and validates it fully. On failure *out is NULL. */
qt_status qt_safetensors_open(const char *path, qt_safetensors **out);
void qt_safetensors_close(qt_safetensors *st);
int qt_safetensors_count(const qt_safetensors *st);
/* Tensor i in file order (sorted by data offset); NULL when i is out of range. */
const qt_st_tensor *qt_safetensors_at(const qt_safetensors *st, int i);
/* NULL if absent. */
const qt_st_tensor *qt_safetensors_get(const qt_safetensors *st, const char *name);
/* __metadata__ value of `key`, or NULL. */
const char *qt_safetensors_meta(const qt_safetensors *st, const char *key);

/* Writes atomically: to <path>.tmp.<pid>, fsync, rename over path (then a best-effort
 * fsync of the directory). On failure the temporary is removed and path is untouched.
 * Header JSON padded with spaces to a multiple of 8. Tensors laid out in the given order
 * (names unique, not "__metadata__"; nbytes must equal numel * dtype size, else
 * QT_EINVAL). meta: n_meta key/value pairs (meta[2i], meta[2i+1]) for __metadata__,
 * may be 0. */
qt_status qt_safetensors_write(const char *path, const qt_st_tensor *tensors, int n,
                               const char *const *meta, int n_meta);

/* The safetensors name of a dtype ("F32", "BF16", ...). */
const char *qt_st_dtype_name(qt_dtype t);

#ifdef __cplusplus
}
#endif
#endif /* QT_FORMATS_H */
