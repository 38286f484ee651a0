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
 *
 * GGUF (ggml's gguf.cpp, docs/gguf.md): reader with the same rigor, the ggml block types
 * and their dequantizers, and a writer; see the GGUF section below.
 *
 * Both writers go through qt_atomic_file (last section), which any other writer of a
 * whole file may use too.
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

/* fp8 tensors (F8_E4M3, F8_E5M2): qtrain keeps fp8 codes as bytes (QT_U8), so these
 * carry them as U8 without a new qt_dtype. qt_safetensors_open_ex with QT_ST_FP8_AS_U8
 * reads them as QT_U8 tensors (one byte per element) instead of refusing them, and
 * qt_safetensors_dtype_str says which dtype the file named; qt_safetensors_write_ex
 * writes U8 tensor i under the name dtype_names[i] ("F8_E4M3" / "F8_E5M2") when that
 * is not NULL (dtype_names may be NULL: then it is qt_safetensors_write). */
#define QT_ST_FP8_AS_U8 1u
qt_status qt_safetensors_open_ex(const char *path, unsigned flags, qt_safetensors **out);
/* The dtype as the file names it ("F8_E4M3" for an fp8 tensor read as U8); "?" when t
 * is not one of st's tensors. */
const char *qt_safetensors_dtype_str(const qt_safetensors *st, const qt_st_tensor *t);
qt_status qt_safetensors_write_ex(const char *path, const qt_st_tensor *tensors, int n,
                                  const char *const *meta, int n_meta,
                                  const char *const *dtype_names);

/* The safetensors name of a dtype ("F32", "BF16", ...). */
const char *qt_st_dtype_name(qt_dtype t);

/* --------------------------------------------------------------------- GGUF ---- */

/*
 * GGUF v3 (and v2, which has the same 64-bit layout), as ggml's gguf.cpp reads it; see
 * ../shared/FORMATS.md "GGUF". qt_gguf_open reads the whole file and validates all of
 * it before returning: magic, version, counts against the file size, every string and
 * array inside the file, value types, tensor dims (1..4, each > 0, products in 64 bits),
 * types, offsets (in order, each the padded end of the previous one, as gguf.cpp insists)
 * and each tensor's bytes inside the file, unique keys and tensor names. Errors are
 * QT_EFORMAT (QT_EIO when the file cannot be read, QT_EDTYPE for a well-formed tensor of
 * a ggml type qtrain does not hold), message in qt_error_message() naming the file.
 */

/* ggml tensor types (ggml.h enum ggml_type; ids are part of the file format). All have a
 * dequantizer in gguf_blocks.c except I8..F64, plain integers / doubles that the reader
 * accepts but qt_ggml_dequantize does not convert. Other ggml ids (other IQ types, TQ*,
 * MXFP4, ...) are not held: the reader refuses them with QT_EDTYPE. */
typedef enum {
    QT_GGML_F32 = 0,
    QT_GGML_F16 = 1,
    QT_GGML_Q4_0 = 2,
    QT_GGML_Q4_1 = 3,
    QT_GGML_Q5_0 = 6,
    QT_GGML_Q5_1 = 7,
    QT_GGML_Q8_0 = 8,
    QT_GGML_Q2_K = 10,
    QT_GGML_Q3_K = 11,
    QT_GGML_Q4_K = 12,
    QT_GGML_Q5_K = 13,
    QT_GGML_Q6_K = 14,
    QT_GGML_IQ4_NL = 20,
    QT_GGML_IQ4_XS = 23,
    QT_GGML_I8 = 24,
    QT_GGML_I16 = 25,
    QT_GGML_I32 = 26,
    QT_GGML_I64 = 27,
    QT_GGML_F64 = 28,
    QT_GGML_BF16 = 30,
    QT_GGML_TYPE_LIMIT = 31 /* one past the largest id this table knows */
} qt_ggml_type;

/* Elements per block (1 for plain types, 32 for Q4_0..Q8_0 and IQ4_NL, 256 for the K
 * types and IQ4_XS) and bytes per block; 0 for an id qtrain does not know. */
int64_t qt_ggml_blck_size(qt_ggml_type t);
size_t qt_ggml_type_size(qt_ggml_type t);
/* "Q4_K"; "?" for an unknown id. */
const char *qt_ggml_type_name(qt_ggml_type t);
/* True when qt_ggml_dequantize converts this type. */
bool qt_ggml_can_dequantize(qt_ggml_type t);
/* Bytes of n elements (n a multiple of the block size), or 0 when n is not, the type is
 * unknown or the result would overflow (and for n == 0). */
size_t qt_ggml_nbytes(qt_ggml_type t, int64_t n);

/* IQ4_NL / IQ4_XS's 16 non-linear levels (ggml-common.h kvalues_iq4nl): code q of a
 * block dequantizes to scale * qt_iq4nl_values()[q]. */
const int8_t *qt_iq4nl_values(void);

/* Converts n elements of `type` at src (ggml's little-endian block layout, any
 * alignment) to floats at dst, exactly as ggml's dequantize_row_* (ggml-quants.c) and
 * gguf-py's quants.py compute them. QT_EINVAL when n < 0, n is not a multiple of the
 * block size or a pointer is NULL with n > 0; QT_EDTYPE for a type without a
 * dequantizer. */
qt_status qt_ggml_dequantize(qt_ggml_type type, const void *src, float *dst, int64_t n);

/* Metadata value types (gguf.h enum gguf_type). */
typedef enum {
    QT_GGUF_U8 = 0,
    QT_GGUF_I8 = 1,
    QT_GGUF_U16 = 2,
    QT_GGUF_I16 = 3,
    QT_GGUF_U32 = 4,
    QT_GGUF_I32 = 5,
    QT_GGUF_F32 = 6,
    QT_GGUF_BOOL = 7,
    QT_GGUF_STRING = 8,
    QT_GGUF_ARRAY = 9,
    QT_GGUF_U64 = 10,
    QT_GGUF_I64 = 11,
    QT_GGUF_F64 = 12,
    QT_GGUF_TYPE_COUNT
} qt_gguf_type;

/* "u32", "string", "array", ...; "?" when out of range. */
const char *qt_gguf_type_name(qt_gguf_type t);

/* general.alignment when the file does not set it. */
#define QT_GGUF_DEFAULT_ALIGNMENT 32
/* ggml's GGML_MAX_NAME: tensor names are shorter than this. */
#define QT_GGUF_MAX_NAME 64

/* One tensor of an open GGUF file; owned by the qt_gguf, valid until qt_gguf_close. */
typedef struct qt_gguf_tensor {
    const char *name;   /* NUL-terminated, < QT_GGUF_MAX_NAME bytes, unique */
    int n_dims;         /* 1..4 */
    int64_t ne[4];      /* ne[0] is the INNERMOST (row length); ne[d] = 1 for d >= n_dims */
    qt_ggml_type type;
    uint64_t offset;    /* from the start of the data section */
    const void *data;   /* (nbytes) ggml block layout; aligned to min(alignment, 64) */
    size_t nbytes;      /* numel / blck_size * type_size */
} qt_gguf_tensor;

typedef struct qt_gguf qt_gguf; /* opaque */

/* Reads and validates the whole file. On failure *out is NULL. */
qt_status qt_gguf_open(const char *path, qt_gguf **out);
void qt_gguf_close(qt_gguf *g);
uint32_t qt_gguf_version(const qt_gguf *g);
uint32_t qt_gguf_alignment(const qt_gguf *g);
/* File offset of the data section (a multiple of the alignment). */
uint64_t qt_gguf_data_offset(const qt_gguf *g);

/* Metadata, in file order. Index of `key`, or -1 when absent. */
int64_t qt_gguf_kv_count(const qt_gguf *g);
int64_t qt_gguf_find_key(const qt_gguf *g, const char *key);
/* Key i (NUL-terminated) / its type; NULL / QT_GGUF_TYPE_COUNT when i is out of range. */
const char *qt_gguf_key_at(const qt_gguf *g, int64_t i);
qt_gguf_type qt_gguf_kv_type(const qt_gguf *g, int64_t i);

/* Typed getters: QT_OK and *out set, or QT_EFORMAT with a message naming the file, the
 * key, and the type expected versus found (or that the key is absent; test presence
 * with qt_gguf_find_key when a key is optional). No conversions between types. */
qt_status qt_gguf_get_u8(const qt_gguf *g, const char *key, uint8_t *out);
qt_status qt_gguf_get_i8(const qt_gguf *g, const char *key, int8_t *out);
qt_status qt_gguf_get_u16(const qt_gguf *g, const char *key, uint16_t *out);
qt_status qt_gguf_get_i16(const qt_gguf *g, const char *key, int16_t *out);
qt_status qt_gguf_get_u32(const qt_gguf *g, const char *key, uint32_t *out);
qt_status qt_gguf_get_i32(const qt_gguf *g, const char *key, int32_t *out);
qt_status qt_gguf_get_u64(const qt_gguf *g, const char *key, uint64_t *out);
qt_status qt_gguf_get_i64(const qt_gguf *g, const char *key, int64_t *out);
qt_status qt_gguf_get_f32(const qt_gguf *g, const char *key, float *out);
qt_status qt_gguf_get_f64(const qt_gguf *g, const char *key, double *out);
qt_status qt_gguf_get_bool(const qt_gguf *g, const char *key, bool *out);
/* *out is NUL-terminated; *len (may be NULL) is its byte length, which also counts any
 * NUL bytes the string holds. */
qt_status qt_gguf_get_str(const qt_gguf *g, const char *key, const char **out, size_t *len);

/* Arrays: element type and count. For numeric and bool element types *data (may be
 * NULL) points at `count` packed elements in host order, aligned for the type (bools are
 * bytes holding 0 or 1); for string arrays *data is NULL, read them with
 * qt_gguf_get_arr_str. */
qt_status qt_gguf_get_arr(const qt_gguf *g, const char *key, qt_gguf_type *elem_type,
                          uint64_t *count, const void **data);
/* Element i of a string array (NUL-terminated, *len may be NULL); QT_EFORMAT when the
 * key is absent or not a string array, QT_EINVAL when i >= count. */
qt_status qt_gguf_get_arr_str(const qt_gguf *g, const char *key, uint64_t i,
                              const char **out, size_t *len);

int64_t qt_gguf_tensor_count(const qt_gguf *g);
/* Tensor i in file order (which is data order); NULL when out of range. */
const qt_gguf_tensor *qt_gguf_tensor_at(const qt_gguf *g, int64_t i);
/* NULL when absent. */
const qt_gguf_tensor *qt_gguf_tensor_get(const qt_gguf *g, const char *name);

/* Writer: collects metadata and tensors in memory, then writes a GGUF v3 file atomically
 * (<path>.tmp.<pid>, fsync, rename over path). Keys are written in the order they were
 * set, tensors in the order they were added, each tensor's data padded to the alignment
 * (after the last one too), as gguf-py's GGUFWriter and ggml's gguf_write do. The
 * alignment is 32 unless "general.alignment" is set (with set_u32, to a power of two).
 * Errors are sticky: after the first failed call every later call returns that status
 * and qt_gguf_writer_write refuses (messages repeat the first failure's), so callers may
 * check once at the end. Bad arguments
 * (duplicate or empty key, tensor a reader would refuse) are QT_EINVAL. */
typedef struct qt_gguf_writer qt_gguf_writer; /* opaque */

qt_status qt_gguf_writer_init(qt_gguf_writer **out);
void qt_gguf_writer_free(qt_gguf_writer *w);
qt_status qt_gguf_writer_set_u8(qt_gguf_writer *w, const char *key, uint8_t v);
qt_status qt_gguf_writer_set_i8(qt_gguf_writer *w, const char *key, int8_t v);
qt_status qt_gguf_writer_set_u16(qt_gguf_writer *w, const char *key, uint16_t v);
qt_status qt_gguf_writer_set_i16(qt_gguf_writer *w, const char *key, int16_t v);
qt_status qt_gguf_writer_set_u32(qt_gguf_writer *w, const char *key, uint32_t v);
qt_status qt_gguf_writer_set_i32(qt_gguf_writer *w, const char *key, int32_t v);
qt_status qt_gguf_writer_set_u64(qt_gguf_writer *w, const char *key, uint64_t v);
qt_status qt_gguf_writer_set_i64(qt_gguf_writer *w, const char *key, int64_t v);
qt_status qt_gguf_writer_set_f32(qt_gguf_writer *w, const char *key, float v);
qt_status qt_gguf_writer_set_f64(qt_gguf_writer *w, const char *key, double v);
qt_status qt_gguf_writer_set_bool(qt_gguf_writer *w, const char *key, bool v);
/* s: len bytes (may hold NUL bytes). */
qt_status qt_gguf_writer_set_str(qt_gguf_writer *w, const char *key, const char *s, size_t len);
/* count packed host-order elements of a numeric or bool type (bools as bytes 0/1). */
qt_status qt_gguf_writer_set_arr(qt_gguf_writer *w, const char *key, qt_gguf_type elem,
                                 const void *data, uint64_t count);
/* count strings; lens[i] their byte lengths, or lens NULL for NUL-terminated strings. */
qt_status qt_gguf_writer_set_arr_str(qt_gguf_writer *w, const char *key,
                                     const char *const *strs, const size_t *lens,
                                     uint64_t count);
/* A tensor: name unique, < QT_GGUF_MAX_NAME bytes; n_dims 1..4, ne[0] innermost, each
 * > 0, ne[0] a multiple of the block size; nbytes == qt_ggml_nbytes(type, numel). The
 * name is copied; data is NOT: it must stay valid until qt_gguf_writer_write returns. */
qt_status qt_gguf_writer_add_tensor(qt_gguf_writer *w, const char *name, qt_ggml_type type,
                                    int n_dims, const int64_t *ne, const void *data,
                                    size_t nbytes);
/* On failure the temporary is removed and path is untouched. */
qt_status qt_gguf_writer_write(const qt_gguf_writer *w, const char *path);

/* ------------------------------------------------------------- atomic file ---- */

/* A file written to a temporary next to its final path and renamed into place only when
 * complete, so readers never see a half-written file: open creates <path>.tmp.<pid>;
 * write appends (all bytes, retrying EINTR and short writes); commit fsyncs, closes,
 * renames over path and fsyncs the directory (best effort); abort closes and unlinks
 * the temporary. On any failure the temporary is removed and path is untouched.
 *
 *     qt_atomic_file f;
 *     qt_atomic_file_open(&f, path);
 *     qt_atomic_file_write(&f, hdr, n_hdr);
 *     qt_atomic_file_write(&f, data, n_data);
 *     qt_status s = qt_atomic_file_commit(&f); // the first failure, if any
 *
 * Errors are QT_EIO naming the path or the temporary and the errno text (QT_ENOMEM,
 * QT_EINVAL for NULL arguments, QT_ESTATE for a write or commit after the end). They are
 * sticky, a failed open's included: after the first failure write returns that status
 * without writing and commit aborts and returns it, leaving qt_error_message() as the
 * first failure set it (unless the caller's own calls in between replaced it), so
 * callers may check once, at commit. A failed open owns nothing; after commit or abort
 * f owns nothing and abort may be called again (also on a zeroed struct). One
 * qt_atomic_file per path per process at a time: the temporary is named by pid. */
typedef struct qt_atomic_file {
    int fd;           /* of the temporary; -1 when none is open */
    char *tmp;        /* "<path>.tmp.<pid>"; NULL when no temporary is ours */
    char *path;       /* copy of the final path */
    qt_status status; /* the first failure, QT_OK until then */
} qt_atomic_file;

qt_status qt_atomic_file_open(qt_atomic_file *f, const char *path);
qt_status qt_atomic_file_write(qt_atomic_file *f, const void *buf, size_t n);
/* On success the file is at path; on failure as abort. Either way f owns nothing after. */
qt_status qt_atomic_file_commit(qt_atomic_file *f);
void qt_atomic_file_abort(qt_atomic_file *f);

/* ------------------------------------------------------------------ files ---- */

/* The one reader of whole files (files.c): a malloc'd buffer with a NUL after its
 * *len bytes (len may be NULL). max_bytes 0 reads any size; a larger file than a
 * non-zero max_bytes is QT_EFORMAT. Errors name the path (QT_EIO with the errno text). */
qt_status qt_read_file(const char *path, size_t max_bytes, char **out, size_t *len);
/* A small file (a config.json, a tokenizer): qt_read_file with a 64 MiB cap. */
qt_status qt_read_text_file(const char *path, char **out);
/* "<dir>/<name>", malloc'd; NULL when out of memory. */
char *qt_path_join(const char *dir, const char *name);
/* mkdir -p: the directory path and its missing parents (existing ones are fine). */
qt_status qt_make_dirs(const char *path);
/* mkdir -p of path's parent directory (a file is about to be written or renamed there). */
qt_status qt_make_parent_dirs(const char *path);

#ifdef __cplusplus
}
#endif
#endif /* QT_FORMATS_H */
