/*
 * gguf.c - reader of GGUF files, version 3 (and 2, the same layout), as ggml's
 * src/gguf.cpp (gguf_init_from_file_impl) and docs/gguf.md define them; summary in
 * ../shared/FORMATS.md "GGUF".
 *
 *   "GGUF" u32 version, i64 n_tensors, i64 n_kv,
 *   n_kv x {string key, i32 type, value}          string = u64 length + bytes, no NUL
 *   n_tensors x {string name, u32 n_dims, i64 ne[n_dims], i32 ggml_type, u64 offset}
 *   padding to general.alignment (default 32), then the data section; tensor i's data
 *   sits at data + offset_i, and offset_i is the end of tensor i-1 padded to the alignment.
 *
 * Reading loads the whole file into one 64-byte aligned buffer, then walks the header
 * with a bounds-checked cursor: every count is checked against the bytes left before
 * anything is allocated for it, every length before it is read, every product of dims
 * in 64 bits. Keys, string values, string arrays and numeric arrays are copied out
 * (NUL-terminated, aligned); tensors point into the buffer. Any failure is a status with
 * a message naming the file and the offending item and byte offset.
 *
 * Surprising, and deliberate (all of these are gguf.cpp's rules too, except where said):
 *   - offsets must be in file order with no holes: offset_i == pad(end_{i-1}); a file
 *     with reordered or overlapping tensors is refused rather than guessed at;
 *   - the last tensor needs its bytes, not its trailing padding, inside the file
 *     (gguf.cpp wants the padding too; gguf-py and ggml both write it);
 *   - nested arrays, duplicate keys, empty keys or keys holding a NUL byte, tensor names
 *     of QT_GGUF_MAX_NAME bytes or more, and bool values other than 0 and 1 are refused
 *     (the last three are stricter than gguf.cpp);
 *   - a tensor of a ggml type that qtrain does not know (IQ*, TQ*, MXFP4, ...) makes the
 *     open fail with QT_EDTYPE, because its byte size cannot be checked;
 *   - a big-endian GGUF is recognised by its byte-swapped version and refused.
 */
#include "qt_formats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------- value types ---- */

static const struct {
    const char *name;
    size_t size; /* bytes in the file; 0 for string and array */
} qt_gguf_types[QT_GGUF_TYPE_COUNT] = {
    [QT_GGUF_U8] = {"u8", 1},     [QT_GGUF_I8] = {"i8", 1},
    [QT_GGUF_U16] = {"u16", 2},   [QT_GGUF_I16] = {"i16", 2},
    [QT_GGUF_U32] = {"u32", 4},   [QT_GGUF_I32] = {"i32", 4},
    [QT_GGUF_F32] = {"f32", 4},   [QT_GGUF_BOOL] = {"bool", 1},
    [QT_GGUF_STRING] = {"string", 0}, [QT_GGUF_ARRAY] = {"array", 0},
    [QT_GGUF_U64] = {"u64", 8},   [QT_GGUF_I64] = {"i64", 8},
    [QT_GGUF_F64] = {"f64", 8},
};

const char *qt_gguf_type_name(qt_gguf_type t) {
    return (unsigned)t < QT_GGUF_TYPE_COUNT ? qt_gguf_types[t].name : "?";
}

/* ggml types that exist (gguf-py constants.py GGMLQuantizationType) but that qtrain does
 * not size or dequantize: a file holding one is well-formed, so QT_EDTYPE. */
static const char *qt_gguf_foreign_type(int32_t id) {
    switch (id) {
    case 9: return "Q8_1";
    case 15: return "Q8_K";
    case 16: return "IQ2_XXS";
    case 17: return "IQ2_XS";
    case 18: return "IQ3_XXS";
    case 19: return "IQ1_S";
    case 21: return "IQ3_S";
    case 22: return "IQ2_S";
    case 29: return "IQ1_M";
    case 34: return "TQ1_0";
    case 35: return "TQ2_0";
    case 39: return "MXFP4";
    case 40: return "NVFP4";
    case 41: return "Q1_0";
    default: return NULL;
    }
}

/* --------------------------------------------------------------- the handle ---- */

typedef struct {
    const char *s; /* NUL-terminated, owned by the array's block */
    size_t len;
} qt_gguf_str;

typedef struct {
    char *key;          /* owned, NUL-terminated */
    qt_gguf_type type;
    union {
        uint8_t raw[8]; /* scalars, host order */
        uint64_t u64;
    } v;
    char *str;          /* STRING: owned, NUL-terminated (str_len bytes before the NUL) */
    size_t str_len;
    qt_gguf_type elem;  /* ARRAY: element type */
    uint64_t count;     /* ARRAY: elements */
    void *arr;          /* ARRAY: numeric: (count) packed elements; string: (count)
                           qt_gguf_str followed by their bytes; owned, one block */
} qt_gguf_kv;

struct qt_gguf {
    char *path;               /* copy, for messages */
    unsigned char *buf;       /* (size) the whole file, 64-byte aligned */
    uint64_t size;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;     /* file offset of the data section */
    qt_gguf_kv *kv;           /* (n_kv) file order */
    int64_t *kv_by_key;       /* (n_kv) indices into kv, sorted by key */
    int64_t n_kv;
    qt_gguf_tensor *tensors;  /* (n_tensors) file order; names owned */
    int64_t *t_by_name;       /* (n_tensors) indices into tensors, sorted by name */
    int64_t n_tensors;
};

void qt_gguf_close(qt_gguf *g) {
    if (!g)
        return;
    if (g->kv)
        for (int64_t i = 0; i < g->n_kv; i++) {
            free(g->kv[i].key);
            free(g->kv[i].str);
            free(g->kv[i].arr);
        }
    if (g->tensors)
        for (int64_t i = 0; i < g->n_tensors; i++)
            free((char *)g->tensors[i].name);
    free(g->kv);
    free(g->kv_by_key);
    free(g->tensors);
    free(g->t_by_name);
    free(g->buf);
    free(g->path);
    free(g);
}

uint32_t qt_gguf_version(const qt_gguf *g) { return g ? g->version : 0; }
uint32_t qt_gguf_alignment(const qt_gguf *g) { return g ? g->alignment : 0; }
uint64_t qt_gguf_data_offset(const qt_gguf *g) { return g ? g->data_offset : 0; }
int64_t qt_gguf_kv_count(const qt_gguf *g) { return g ? g->n_kv : 0; }
int64_t qt_gguf_tensor_count(const qt_gguf *g) { return g ? g->n_tensors : 0; }

const char *qt_gguf_key_at(const qt_gguf *g, int64_t i) {
    return g && i >= 0 && i < g->n_kv ? g->kv[i].key : NULL;
}

qt_gguf_type qt_gguf_kv_type(const qt_gguf *g, int64_t i) {
    return g && i >= 0 && i < g->n_kv ? g->kv[i].type : QT_GGUF_TYPE_COUNT;
}

int64_t qt_gguf_find_key(const qt_gguf *g, const char *key) {
    if (!g || !key)
        return -1;
    int64_t lo = 0, hi = g->n_kv - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(key, g->kv[g->kv_by_key[mid]].key);
        if (c == 0)
            return g->kv_by_key[mid];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return -1;
}

const qt_gguf_tensor *qt_gguf_tensor_at(const qt_gguf *g, int64_t i) {
    return g && i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const qt_gguf_tensor *qt_gguf_tensor_get(const qt_gguf *g, const char *name) {
    if (!g || !name)
        return NULL;
    int64_t lo = 0, hi = g->n_tensors - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        const qt_gguf_tensor *t = &g->tensors[g->t_by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0)
            return t;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* ----------------------------------------------------------------- getters ---- */

/* The kv of `key` if it has type `want` (and, for arrays with want_elem < COUNT, that
 * element type); else a QT_EFORMAT naming file, key and types. */
static qt_status qt_gguf_lookup(const qt_gguf *g, const char *key, qt_gguf_type want,
                                const qt_gguf_kv **out) {
    if (!g || !key)
        return QT_ERROR(QT_EINVAL, "gguf_get: %s is NULL", g ? "key" : "file");
    int64_t i = qt_gguf_find_key(g, key);
    if (i < 0)
        return QT_ERROR(QT_EFORMAT, "%s: key \"%.128s\" not found, expected a %s", g->path,
                        key, qt_gguf_type_name(want));
    const qt_gguf_kv *kv = &g->kv[i];
    if (kv->type != want) {
        if (kv->type == QT_GGUF_ARRAY)
            return QT_ERROR(QT_EFORMAT, "%s: key \"%.128s\" is an array of %llu %s, expected "
                            "a %s", g->path, key, (unsigned long long)kv->count,
                            qt_gguf_type_name(kv->elem), qt_gguf_type_name(want));
        return QT_ERROR(QT_EFORMAT, "%s: key \"%.128s\" is a %s, expected a %s", g->path, key,
                        qt_gguf_type_name(kv->type), qt_gguf_type_name(want));
    }
    *out = kv;
    return QT_OK;
}

#define QT_GGUF_GETTER(fn, ctype, gtype)                                      \
    qt_status fn(const qt_gguf *g, const char *key, ctype *out) {             \
        const qt_gguf_kv *kv;                                                 \
        qt_status s = qt_gguf_lookup(g, key, gtype, &kv);                     \
        if (s == QT_OK && out)                                                \
            memcpy(out, kv->v.raw, sizeof *out);                              \
        return s;                                                             \
    }
QT_GGUF_GETTER(qt_gguf_get_u8, uint8_t, QT_GGUF_U8)
QT_GGUF_GETTER(qt_gguf_get_i8, int8_t, QT_GGUF_I8)
QT_GGUF_GETTER(qt_gguf_get_u16, uint16_t, QT_GGUF_U16)
QT_GGUF_GETTER(qt_gguf_get_i16, int16_t, QT_GGUF_I16)
QT_GGUF_GETTER(qt_gguf_get_u32, uint32_t, QT_GGUF_U32)
QT_GGUF_GETTER(qt_gguf_get_i32, int32_t, QT_GGUF_I32)
QT_GGUF_GETTER(qt_gguf_get_u64, uint64_t, QT_GGUF_U64)
QT_GGUF_GETTER(qt_gguf_get_i64, int64_t, QT_GGUF_I64)
QT_GGUF_GETTER(qt_gguf_get_f32, float, QT_GGUF_F32)
QT_GGUF_GETTER(qt_gguf_get_f64, double, QT_GGUF_F64)
#undef QT_GGUF_GETTER

qt_status qt_gguf_get_bool(const qt_gguf *g, const char *key, bool *out) {
    const qt_gguf_kv *kv;
    qt_status s = qt_gguf_lookup(g, key, QT_GGUF_BOOL, &kv);
    if (s == QT_OK && out)
        *out = kv->v.raw[0] != 0;
    return s;
}

qt_status qt_gguf_get_str(const qt_gguf *g, const char *key, const char **out, size_t *len) {
    const qt_gguf_kv *kv;
    qt_status s = qt_gguf_lookup(g, key, QT_GGUF_STRING, &kv);
    if (s == QT_OK) {
        if (out)
            *out = kv->str;
        if (len)
            *len = kv->str_len;
    }
    return s;
}

qt_status qt_gguf_get_arr(const qt_gguf *g, const char *key, qt_gguf_type *elem_type,
                          uint64_t *count, const void **data) {
    const qt_gguf_kv *kv;
    qt_status s = qt_gguf_lookup(g, key, QT_GGUF_ARRAY, &kv);
    if (s == QT_OK) {
        if (elem_type)
            *elem_type = kv->elem;
        if (count)
            *count = kv->count;
        if (data)
            *data = kv->elem == QT_GGUF_STRING ? NULL : kv->arr;
    }
    return s;
}

qt_status qt_gguf_get_arr_str(const qt_gguf *g, const char *key, uint64_t i,
                              const char **out, size_t *len) {
    const qt_gguf_kv *kv;
    qt_status s = qt_gguf_lookup(g, key, QT_GGUF_ARRAY, &kv);
    if (s != QT_OK)
        return s;
    if (kv->elem != QT_GGUF_STRING)
        return QT_ERROR(QT_EFORMAT, "%s: key \"%.128s\" is an array of %s, expected an "
                        "array of string", g->path, key, qt_gguf_type_name(kv->elem));
    if (i >= kv->count)
        return QT_ERROR(QT_EINVAL, "%s: key \"%.128s\": index %llu is beyond its %llu "
                        "strings", g->path, key, (unsigned long long)i,
                        (unsigned long long)kv->count);
    const qt_gguf_str *e = (const qt_gguf_str *)kv->arr + i;
    if (out)
        *out = e->s;
    if (len)
        *len = e->len;
    return QT_OK;
}

/* ------------------------------------------------------------------ reading ---- */

/* Bounds-checked cursor over the file buffer. `what` names the item being read. */
typedef struct {
    const unsigned char *p;
    uint64_t pos, size;
    const char *path;
    char what[200];
} qt_gguf_rd;

static qt_status qt_gguf_need(qt_gguf_rd *r, uint64_t n, const char *field) {
    if (n > r->size - r->pos)
        return QT_ERROR(QT_EFORMAT, "%s: %s%s%s at byte %llu needs %llu bytes, but the file "
                        "has %llu left (truncated, or a length field is wrong)", r->path,
                        r->what, *r->what ? ": " : "", field, (unsigned long long)r->pos,
                        (unsigned long long)n, (unsigned long long)(r->size - r->pos));
    return QT_OK;
}

static uint64_t qt_gguf_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static qt_status qt_gguf_u32(qt_gguf_rd *r, const char *field, uint32_t *out) {
    qt_status s = qt_gguf_need(r, 4, field);
    if (s == QT_OK) {
        *out = (uint32_t)qt_gguf_le(r->p + r->pos, 4);
        r->pos += 4;
    }
    return s;
}

static qt_status qt_gguf_u64(qt_gguf_rd *r, const char *field, uint64_t *out) {
    qt_status s = qt_gguf_need(r, 8, field);
    if (s == QT_OK) {
        *out = qt_gguf_le(r->p + r->pos, 8);
        r->pos += 8;
    }
    return s;
}

/* A string's length and bytes: *at is its first byte in the buffer. */
static qt_status qt_gguf_str_span(qt_gguf_rd *r, const char *field, uint64_t *at,
                                  uint64_t *len) {
    qt_status s = qt_gguf_u64(r, field, len);
    if (s != QT_OK)
        return s;
    if (*len > r->size - r->pos)
        return QT_ERROR(QT_EFORMAT, "%s: %s%s%s at byte %llu has length %llu, but the file has "
                        "%llu bytes left", r->path, r->what, *r->what ? ": " : "", field,
                        (unsigned long long)(r->pos - 8), (unsigned long long)*len,
                        (unsigned long long)(r->size - r->pos));
    *at = r->pos;
    r->pos += *len;
    return QT_OK;
}

static char *qt_gguf_strndup(const unsigned char *p, size_t n) {
    char *s = malloc(n + 1);
    if (s) {
        if (n)
            memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

/* A name (key or tensor name): non-empty, no NUL byte, shorter than max if max > 0. */
static qt_status qt_gguf_name(qt_gguf_rd *r, const char *field, size_t max, char **out) {
    uint64_t at = 0, len = 0;
    qt_status s = qt_gguf_str_span(r, field, &at, &len);
    if (s != QT_OK)
        return s;
    if (len == 0)
        return QT_ERROR(QT_EFORMAT, "%s: %s: %s at byte %llu is empty, expected a name",
                        r->path, r->what, field, (unsigned long long)at);
    if (max && len >= max)
        return QT_ERROR(QT_EFORMAT, "%s: %s: %s at byte %llu is %llu bytes, expected fewer "
                        "than %zu (ggml's GGML_MAX_NAME)", r->path, r->what, field,
                        (unsigned long long)at, (unsigned long long)len, max);
    if (memchr(r->p + at, 0, (size_t)len))
        return QT_ERROR(QT_EFORMAT, "%s: %s: %s at byte %llu holds a NUL byte", r->path,
                        r->what, field, (unsigned long long)at);
    *out = qt_gguf_strndup(r->p + at, (size_t)len);
    if (!*out)
        return QT_ERROR(QT_ENOMEM, "%s: cannot allocate a %llu-byte %s", r->path,
                        (unsigned long long)len, field);
    return QT_OK;
}

/* A value type id: 0..12, and not ARRAY when reading array elements. */
static qt_status qt_gguf_type_id(qt_gguf_rd *r, const char *field, bool elem,
                                 qt_gguf_type *out) {
    uint64_t at = r->pos;
    uint32_t t;
    qt_status s = qt_gguf_u32(r, field, &t);
    if (s != QT_OK)
        return s;
    if (t >= QT_GGUF_TYPE_COUNT)
        return QT_ERROR(QT_EFORMAT, "%s: %s: %s at byte %llu is %lld, expected a GGUF value "
                        "type 0..%d", r->path, r->what, field, (unsigned long long)at,
                        (long long)(int32_t)t, QT_GGUF_TYPE_COUNT - 1);
    if (elem && t == QT_GGUF_ARRAY)
        return QT_ERROR(QT_EFORMAT, "%s: %s: %s at byte %llu is array: nested arrays are not "
                        "supported", r->path, r->what, field, (unsigned long long)at);
    *out = (qt_gguf_type)t;
    return QT_OK;
}

/* Scalar of type t into raw (host order); bools must be 0 or 1. */
static qt_status qt_gguf_scalar(qt_gguf_rd *r, qt_gguf_type t, uint8_t raw[8]) {
    size_t n = qt_gguf_types[t].size;
    qt_status s = qt_gguf_need(r, n, "value");
    if (s != QT_OK)
        return s;
    uint64_t v = qt_gguf_le(r->p + r->pos, (int)n);
    if (t == QT_GGUF_BOOL && v > 1)
        return QT_ERROR(QT_EFORMAT, "%s: %s: bool at byte %llu is %llu, expected 0 or 1",
                        r->path, r->what, (unsigned long long)r->pos, (unsigned long long)v);
    /* the low n bytes of v, in host order, are the value */
    memset(raw, 0, 8);
    switch (n) {
    case 1: raw[0] = (uint8_t)v; break;
    case 2: { uint16_t x = (uint16_t)v; memcpy(raw, &x, 2); break; }
    case 4: { uint32_t x = (uint32_t)v; memcpy(raw, &x, 4); break; }
    default: memcpy(raw, &v, 8); break;
    }
    r->pos += n;
    return QT_OK;
}

static qt_status qt_gguf_array(qt_gguf_rd *r, qt_gguf_kv *kv) {
    qt_status s = qt_gguf_type_id(r, "array element type", true, &kv->elem);
    if (s != QT_OK || (s = qt_gguf_u64(r, "array count", &kv->count)) != QT_OK)
        return s;
    uint64_t left = r->size - r->pos, n = kv->count;
    if (kv->elem != QT_GGUF_STRING) {
        size_t es = qt_gguf_types[kv->elem].size;
        if (n > left / es)
            return QT_ERROR(QT_EFORMAT, "%s: %s: array of %llu %s (%zu bytes each) at byte "
                            "%llu does not fit in the %llu bytes left in the file", r->path,
                            r->what, (unsigned long long)n, qt_gguf_types[kv->elem].name, es,
                            (unsigned long long)r->pos, (unsigned long long)left);
        kv->arr = malloc(n ? (size_t)(n * es) : 1);
        if (!kv->arr)
            return QT_ERROR(QT_ENOMEM, "%s: %s: cannot allocate %llu bytes", r->path, r->what,
                            (unsigned long long)(n * es));
        for (uint64_t i = 0; i < n; i++) {
            uint8_t raw[8];
            if ((s = qt_gguf_scalar(r, kv->elem, raw)) != QT_OK)
                return s;
            memcpy((uint8_t *)kv->arr + i * es, raw, es);
        }
        return QT_OK;
    }
    /* strings: each takes at least its 8-byte length; a first pass sizes the block */
    if (n > left / 8)
        return QT_ERROR(QT_EFORMAT, "%s: %s: array of %llu strings (8 or more bytes each) at "
                        "byte %llu does not fit in the %llu bytes left in the file", r->path,
                        r->what, (unsigned long long)n, (unsigned long long)r->pos,
                        (unsigned long long)left);
    uint64_t start = r->pos, bytes = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t at = 0, len = 0;
        if ((s = qt_gguf_str_span(r, "string element", &at, &len)) != QT_OK)
            return s;
        bytes += len + 1; /* cannot overflow: len <= file size */
    }
    uint64_t total = n * sizeof(qt_gguf_str) + bytes;
    if (total > SIZE_MAX)
        return QT_ERROR(QT_ENOMEM, "%s: %s: %llu bytes of strings do not fit in memory",
                        r->path, r->what, (unsigned long long)total);
    kv->arr = malloc(total ? (size_t)total : 1);
    if (!kv->arr)
        return QT_ERROR(QT_ENOMEM, "%s: %s: cannot allocate %llu bytes", r->path, r->what,
                        (unsigned long long)total);
    qt_gguf_str *e = kv->arr;
    char *text = (char *)(e + n);
    r->pos = start;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t at = 0, len = 0;
        (void)qt_gguf_str_span(r, "string element", &at, &len); /* checked above */
        if (len)
            memcpy(text, r->p + at, (size_t)len);
        text[len] = '\0';
        e[i].s = text;
        e[i].len = (size_t)len;
        text += len + 1;
    }
    return QT_OK;
}

static qt_status qt_gguf_read_kv(qt_gguf_rd *r, int64_t i, qt_gguf_kv *kv) {
    snprintf(r->what, sizeof r->what, "kv %lld", (long long)i);
    qt_status s = qt_gguf_name(r, "key", 0, &kv->key);
    if (s != QT_OK)
        return s;
    snprintf(r->what, sizeof r->what, "kv %lld \"%.96s\"", (long long)i, kv->key);
    if ((s = qt_gguf_type_id(r, "value type", false, &kv->type)) != QT_OK)
        return s;
    if (kv->type == QT_GGUF_ARRAY)
        return qt_gguf_array(r, kv);
    if (kv->type == QT_GGUF_STRING) {
        uint64_t at = 0, len = 0;
        if ((s = qt_gguf_str_span(r, "string value", &at, &len)) != QT_OK)
            return s;
        kv->str = qt_gguf_strndup(r->p + at, (size_t)len);
        kv->str_len = (size_t)len;
        if (!kv->str)
            return QT_ERROR(QT_ENOMEM, "%s: %s: cannot allocate %llu bytes", r->path, r->what,
                            (unsigned long long)len);
        return QT_OK;
    }
    return qt_gguf_scalar(r, kv->type, kv->v.raw);
}

/* x rounded up to a multiple of a; false on overflow. */
static bool qt_gguf_pad(uint64_t x, uint32_t a, uint64_t *out) {
    uint64_t y;
    if (__builtin_add_overflow(x, (uint64_t)a - 1, &y))
        return false;
    *out = y / a * a;
    return true;
}

static qt_status qt_gguf_read_tensor(qt_gguf_rd *r, qt_gguf *g, int64_t i,
                                     uint64_t *expect_offset) {
    qt_gguf_tensor *t = &g->tensors[i];
    snprintf(r->what, sizeof r->what, "tensor %lld", (long long)i);
    char *name = NULL;
    qt_status s = qt_gguf_name(r, "name", QT_GGUF_MAX_NAME, &name);
    if (s != QT_OK)
        return s;
    t->name = name;
    snprintf(r->what, sizeof r->what, "tensor %lld \"%s\"", (long long)i, name);

    uint64_t at = r->pos;
    uint32_t n_dims;
    if ((s = qt_gguf_u32(r, "n_dims", &n_dims)) != QT_OK)
        return s;
    if (n_dims < 1 || n_dims > 4)
        return QT_ERROR(QT_EFORMAT, "%s: %s: n_dims at byte %llu is %u, expected 1..4",
                        r->path, r->what, (unsigned long long)at, n_dims);
    t->n_dims = (int)n_dims;
    int64_t numel = 1;
    for (int d = 0; d < 4; d++)
        t->ne[d] = 1;
    for (int d = 0; d < (int)n_dims; d++) {
        uint64_t u;
        at = r->pos;
        if ((s = qt_gguf_u64(r, "ne", &u)) != QT_OK)
            return s;
        int64_t ne = (int64_t)u;
        if (ne <= 0)
            return QT_ERROR(QT_EFORMAT, "%s: %s: ne[%d] at byte %llu is %lld, expected a "
                            "positive size", r->path, r->what, d, (unsigned long long)at,
                            (long long)ne);
        if (__builtin_mul_overflow(numel, ne, &numel))
            return QT_ERROR(QT_EFORMAT, "%s: %s: ne[0..%d] multiply past 2^63 elements",
                            r->path, r->what, d);
        t->ne[d] = ne;
    }

    at = r->pos;
    uint32_t type;
    if ((s = qt_gguf_u32(r, "type", &type)) != QT_OK)
        return s;
    int32_t id = (int32_t)type;
    int64_t blck = qt_ggml_blck_size((qt_ggml_type)id);
    if (id < 0 || blck == 0) {
        const char *foreign = qt_gguf_foreign_type(id);
        if (foreign)
            return QT_ERROR(QT_EDTYPE, "%s: %s has ggml type %s (%d), which qtrain does not "
                            "read", r->path, r->what, foreign, id);
        return QT_ERROR(QT_EFORMAT, "%s: %s: type at byte %llu is %d, expected a ggml type "
                        "id", r->path, r->what, (unsigned long long)at, id);
    }
    t->type = (qt_ggml_type)id;
    if (t->ne[0] % blck != 0)
        return QT_ERROR(QT_EFORMAT, "%s: %s: ne[0] = %lld is not a multiple of the %s block "
                        "size %lld", r->path, r->what, (long long)t->ne[0],
                        qt_ggml_type_name(t->type), (long long)blck);
    size_t nbytes = qt_ggml_nbytes(t->type, numel);
    if (nbytes == 0 || nbytes > INT64_MAX)
        return QT_ERROR(QT_EFORMAT, "%s: %s: %lld %s elements overflow a 64-bit byte count",
                        r->path, r->what, (long long)numel, qt_ggml_type_name(t->type));
    t->nbytes = nbytes;

    at = r->pos;
    if ((s = qt_gguf_u64(r, "offset", &t->offset)) != QT_OK)
        return s;
    if (t->offset % g->alignment != 0)
        return QT_ERROR(QT_EFORMAT, "%s: %s: offset %llu (at byte %llu) is not a multiple of "
                        "the alignment %u", r->path, r->what, (unsigned long long)t->offset,
                        (unsigned long long)at, g->alignment);
    if (t->offset != *expect_offset)
        return QT_ERROR(QT_EFORMAT, "%s: %s: offset %llu (at byte %llu), expected %llu: "
                        "tensors must follow each other in file order, each at the padded "
                        "end of the previous one (%s)", r->path, r->what,
                        (unsigned long long)t->offset, (unsigned long long)at,
                        (unsigned long long)*expect_offset,
                        t->offset < *expect_offset ? "it overlaps the previous tensor"
                                                   : "it leaves a hole");
    uint64_t end;
    if (__builtin_add_overflow(t->offset, (uint64_t)nbytes, &end) ||
        !qt_gguf_pad(end, g->alignment, expect_offset))
        return QT_ERROR(QT_EFORMAT, "%s: %s: offset %llu + %zu bytes overflows 64 bits",
                        r->path, r->what, (unsigned long long)t->offset, nbytes);
    return QT_OK;
}

/* Reads the whole file into g->buf. */
static qt_status qt_gguf_load(qt_gguf *g) {
    const char *path = g->path;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return QT_ERROR(QT_EIO, "%s: cannot open: %s", path, strerror(errno));
    qt_status s = QT_OK;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        s = QT_ERROR(QT_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(sb.st_mode)) {
        s = QT_ERROR(QT_EIO, "%s: expected a regular file, found %s", path,
                     S_ISDIR(sb.st_mode) ? "a directory" : "a special file");
        goto done;
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size > SIZE_MAX - 64) {
        s = QT_ERROR(QT_ENOMEM, "%s: %llu bytes do not fit in memory", path,
                     (unsigned long long)size);
        goto done;
    }
    size_t alloc = ((size_t)size + 63) / 64 * 64;
    g->buf = aligned_alloc(64, alloc ? alloc : 64);
    if (!g->buf) {
        s = QT_ERROR(QT_ENOMEM, "%s: cannot allocate %llu bytes", path, (unsigned long long)size);
        goto done;
    }
    g->size = size;
    size_t got = 0;
    while (got < size) {
        size_t chunk = size - got < (1u << 30) ? size - got : (1u << 30);
        ssize_t n = read(fd, g->buf + got, chunk);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            s = QT_ERROR(QT_EIO, "%s: reading at byte %zu: %s", path, got, strerror(errno));
            goto done;
        }
        if (n == 0) {
            s = QT_ERROR(QT_EIO, "%s: file ended at byte %zu of %llu (did it shrink while "
                         "being read?)", path, got, (unsigned long long)size);
            goto done;
        }
        got += (size_t)n;
    }
done:
    close(fd);
    return s;
}

typedef struct {
    const char *name;
    int64_t index;
} qt_gguf_named;

static int qt_gguf_cmp_named(const void *a, const void *b) {
    return strcmp(((const qt_gguf_named *)a)->name, ((const qt_gguf_named *)b)->name);
}

/* Indices of names[0..n) sorted by name (for lookup), in *out; the first duplicate name
 * (or NULL) in *dup. */
static qt_status qt_gguf_index(const qt_gguf *g, int64_t n, bool keys, int64_t **out,
                               const char **dup) {
    qt_gguf_named *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    *out = malloc((size_t)(n ? n : 1) * sizeof **out);
    *dup = NULL;
    if (!v || !*out) {
        free(v);
        return QT_ERROR(QT_ENOMEM, "%s: cannot allocate an index of %lld", g->path,
                        (long long)n);
    }
    for (int64_t i = 0; i < n; i++) {
        v[i].name = keys ? g->kv[i].key : g->tensors[i].name;
        v[i].index = i;
    }
    qsort(v, (size_t)n, sizeof *v, qt_gguf_cmp_named);
    for (int64_t i = 0; i < n; i++) {
        (*out)[i] = v[i].index;
        if (i > 0 && !*dup && strcmp(v[i - 1].name, v[i].name) == 0)
            *dup = v[i].name;
    }
    free(v);
    return QT_OK;
}

static qt_status qt_gguf_parse(qt_gguf *g) {
    qt_gguf_rd r = {.p = g->buf, .pos = 0, .size = g->size, .path = g->path};
    r.what[0] = '\0';
    qt_status s;
    if (g->size < 4 || memcmp(g->buf, "GGUF", 4) != 0) {
        unsigned char m[4] = {0};
        memcpy(m, g->buf, g->size < 4 ? (size_t)g->size : 4);
        return QT_ERROR(QT_EFORMAT, "%s: expected the magic \"GGUF\" (47 47 55 46) at byte 0, "
                        "found %s%02x %02x %02x %02x", g->path,
                        g->size < 4 ? "a file shorter than 4 bytes: " : "", m[0], m[1], m[2],
                        m[3]);
    }
    r.pos = 4;
    if ((s = qt_gguf_u32(&r, "version", &g->version)) != QT_OK)
        return s;
    if (g->version != 2 && g->version != 3) {
        uint32_t v = g->version;
        uint32_t swapped = v >> 24 | (v >> 8 & 0xff00u) | (v << 8 & 0xff0000u) | v << 24;
        return QT_ERROR(QT_EFORMAT, "%s: version is %u, expected 2 or 3%s", g->path, v,
                        v == 1 ? " (version 1 used 32-bit counts and is not read)"
                        : (swapped == 2 || swapped == 3) ? " (this looks like a big-endian "
                                                           "GGUF, which is not read)"
                                                         : "");
    }
    uint64_t nt, nkv;
    if ((s = qt_gguf_u64(&r, "tensor count", &nt)) != QT_OK ||
        (s = qt_gguf_u64(&r, "kv count", &nkv)) != QT_OK)
        return s;
    /* the smallest kv is 8 (key length) + 1 (key) + 4 (type) + 1 (u8) bytes; the
     * smallest tensor info 8 + 1 + 4 + 8 + 4 + 8 */
    uint64_t left = g->size - r.pos;
    if ((int64_t)nkv < 0 || nkv > left / 14)
        return QT_ERROR(QT_EFORMAT, "%s: kv count is %lld, but the %llu bytes after the "
                        "header hold at most %llu", g->path, (long long)nkv,
                        (unsigned long long)left, (unsigned long long)(left / 14));
    if ((int64_t)nt < 0 || nt > (left - nkv * 14) / 33)
        return QT_ERROR(QT_EFORMAT, "%s: tensor count is %lld, but the %llu bytes after the "
                        "header (less %llu kv) hold at most %llu", g->path, (long long)nt,
                        (unsigned long long)left, (unsigned long long)nkv,
                        (unsigned long long)((left - nkv * 14) / 33));

    g->kv = calloc(nkv ? (size_t)nkv : 1, sizeof *g->kv);
    g->tensors = calloc(nt ? (size_t)nt : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors)
        return QT_ERROR(QT_ENOMEM, "%s: cannot allocate %llu kv and %llu tensors", g->path,
                        (unsigned long long)nkv, (unsigned long long)nt);
    for (uint64_t i = 0; i < nkv; i++) {
        g->n_kv = (int64_t)i + 1; /* so close frees what this kv allocated */
        if ((s = qt_gguf_read_kv(&r, (int64_t)i, &g->kv[i])) != QT_OK)
            return s;
    }
    g->n_kv = (int64_t)nkv;
    const char *dup;
    if ((s = qt_gguf_index(g, g->n_kv, true, &g->kv_by_key, &dup)) != QT_OK)
        return s;
    if (dup)
        return QT_ERROR(QT_EFORMAT, "%s: key \"%.128s\" appears more than once, expected "
                        "unique keys", g->path, dup);

    g->alignment = QT_GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = qt_gguf_find_key(g, "general.alignment");
    if (ai >= 0) {
        uint32_t a;
        if ((s = qt_gguf_get_u32(g, "general.alignment", &a)) != QT_OK)
            return s;
        if (a == 0 || (a & (a - 1)) != 0)
            return QT_ERROR(QT_EFORMAT, "%s: general.alignment is %u, expected a power of two",
                            g->path, a);
        g->alignment = a;
    }

    uint64_t expect = 0;
    for (uint64_t i = 0; i < nt; i++) {
        g->n_tensors = (int64_t)i + 1;
        if ((s = qt_gguf_read_tensor(&r, g, (int64_t)i, &expect)) != QT_OK)
            return s;
    }
    g->n_tensors = (int64_t)nt;
    if ((s = qt_gguf_index(g, g->n_tensors, false, &g->t_by_name, &dup)) != QT_OK)
        return s;
    if (dup)
        return QT_ERROR(QT_EFORMAT, "%s: tensor name \"%s\" appears more than once, "
                        "expected unique names", g->path, dup);

    /* the data section starts at the padded end of the tensor infos */
    r.what[0] = '\0';
    if (!qt_gguf_pad(r.pos, g->alignment, &g->data_offset))
        return QT_ERROR(QT_EFORMAT, "%s: data offset overflows", g->path);
    if (nt > 0) {
        /* the tensors tile the data section in order, so the last one ends furthest */
        const qt_gguf_tensor *last = &g->tensors[nt - 1];
        uint64_t data_size = g->data_offset <= g->size ? g->size - g->data_offset : 0;
        if (g->data_offset > g->size || last->offset > data_size ||
            last->nbytes > data_size - last->offset)
            return QT_ERROR(QT_EFORMAT, "%s: tensor %lld \"%s\" needs data bytes %llu..%llu "
                            "(the data section starts at file byte %llu), but the file is "
                            "%llu bytes (truncated, or offsets beyond the file)", g->path,
                            (long long)(nt - 1), last->name, (unsigned long long)last->offset,
                            (unsigned long long)(last->offset + last->nbytes),
                            (unsigned long long)g->data_offset, (unsigned long long)g->size);
        for (int64_t i = 0; i < g->n_tensors; i++)
            g->tensors[i].data = g->buf + g->data_offset + g->tensors[i].offset;
    }
    return QT_OK;
}

qt_status qt_gguf_open(const char *path, qt_gguf **out) {
    if (!out)
        return QT_ERROR(QT_EINVAL, "gguf_open: out must not be NULL");
    *out = NULL;
    if (!path)
        return QT_ERROR(QT_EINVAL, "gguf_open: path must not be NULL");
    qt_gguf *g = calloc(1, sizeof *g);
    if (!g)
        return QT_ERROR(QT_ENOMEM, "%s: cannot allocate the reader", path);
    g->path = qt_gguf_strndup((const unsigned char *)path, strlen(path));
    if (!g->path) {
        free(g);
        return QT_ERROR(QT_ENOMEM, "%s: cannot allocate the reader", path);
    }
    qt_status s = qt_gguf_load(g);
    if (s == QT_OK)
        s = qt_gguf_parse(g);
    if (s != QT_OK) {
        qt_gguf_close(g);
        return s;
    }
    *out = g;
    return QT_OK;
}

/* ------------------------------------------------------------------ writing ---- */

typedef struct {
    unsigned char *p;
    size_t len, cap;
    bool oom;
} qt_gguf_buf;

static void qt_gguf_put(qt_gguf_buf *b, const void *src, size_t n) {
    if (b->oom || n == 0)
        return;
    if (n > SIZE_MAX / 2 - b->len) {
        b->oom = true;
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

/* v as n little-endian bytes */
static void qt_gguf_put_le(qt_gguf_buf *b, uint64_t v, int n) {
    unsigned char x[8];
    for (int i = 0; i < n; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    qt_gguf_put(b, x, (size_t)n);
}

static void qt_gguf_put_str(qt_gguf_buf *b, const char *s, size_t len) {
    qt_gguf_put_le(b, len, 8);
    qt_gguf_put(b, s, len);
}

/* One host-order element of a numeric type, little-endian. */
static void qt_gguf_put_elem(qt_gguf_buf *b, qt_gguf_type t, const void *src) {
    size_t n = qt_gguf_types[t].size;
    uint64_t v = 0;
    switch (n) {
    case 1: v = *(const uint8_t *)src; break;
    case 2: { uint16_t x; memcpy(&x, src, 2); v = x; break; }
    case 4: { uint32_t x; memcpy(&x, src, 4); v = x; break; }
    default: memcpy(&v, src, 8); break;
    }
    qt_gguf_put_le(b, v, (int)n);
}

typedef struct {
    char *name;
    qt_ggml_type type;
    int n_dims;
    int64_t ne[4];
    const void *data; /* (nbytes) not owned */
    size_t nbytes;
} qt_gguf_wtensor;

struct qt_gguf_writer {
    qt_status status;         /* first failure, sticky */
    char first_error[512];    /* its message, repeated by every later call */
    char **keys;              /* (n_kv) owned, for the uniqueness check */
    qt_gguf_buf *kv;          /* (n_kv) each kv serialized: key, type, value */
    int64_t n_kv, cap_kv;
    qt_gguf_wtensor *t;       /* (n_t) */
    int64_t n_t, cap_t;
    uint32_t alignment;
};

qt_status qt_gguf_writer_init(qt_gguf_writer **out) {
    if (!out)
        return QT_ERROR(QT_EINVAL, "gguf_writer_init: out must not be NULL");
    *out = calloc(1, sizeof **out);
    if (!*out)
        return QT_ERROR(QT_ENOMEM, "gguf_writer_init: cannot allocate the writer");
    (*out)->alignment = QT_GGUF_DEFAULT_ALIGNMENT;
    return QT_OK;
}

void qt_gguf_writer_free(qt_gguf_writer *w) {
    if (!w)
        return;
    for (int64_t i = 0; i < w->n_kv; i++) {
        free(w->keys[i]);
        free(w->kv[i].p);
    }
    for (int64_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->keys);
    free(w->kv);
    free(w->t);
    free(w);
}

/* Records the first failure (s, with the message just set) and returns s. */
static qt_status qt_gguf_wfail(qt_gguf_writer *w, qt_status s) {
    if (w && w->status == QT_OK) {
        w->status = s;
        snprintf(w->first_error, sizeof w->first_error, "%s", qt_error_message());
    }
    return s;
}

/* Starts kv `key` of type `type`: checks the key, appends a buffer holding key and type;
 * the caller appends the value to *out. */
static qt_status qt_gguf_wkv(qt_gguf_writer *w, const char *key, qt_gguf_type type,
                             qt_gguf_buf **out) {
    if (!w)
        return QT_ERROR(QT_EINVAL, "gguf_writer: writer is NULL");
    if (w->status != QT_OK)
        return QT_ERROR(w->status, "gguf_writer: an earlier call failed: %s",
                        w->first_error);
    if (!key || !*key)
        return qt_gguf_wfail(w, QT_ERROR(QT_EINVAL, "gguf_writer: key must be a non-empty "
                                         "string"));
    for (int64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0)
            return qt_gguf_wfail(w, QT_ERROR(QT_EINVAL, "gguf_writer: key \"%.128s\" is set "
                                             "twice, expected unique keys", key));
    if (strcmp(key, "general.alignment") == 0 && type != QT_GGUF_U32)
        return qt_gguf_wfail(w, QT_ERROR(QT_EINVAL, "gguf_writer: general.alignment must be "
                                         "a u32, got a %s", qt_gguf_type_name(type)));
    if (w->n_kv == w->cap_kv) {
        int64_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        char **k = realloc(w->keys, (size_t)cap * sizeof *k);
        if (k)
            w->keys = k;
        qt_gguf_buf *v = realloc(w->kv, (size_t)cap * sizeof *v);
        if (v)
            w->kv = v;
        if (!k || !v)
            return qt_gguf_wfail(w, QT_ERROR(QT_ENOMEM, "gguf_writer: cannot grow to %lld "
                                             "keys", (long long)cap));
        w->cap_kv = cap;
    }
    char *copy = qt_gguf_strndup((const unsigned char *)key, strlen(key));
    if (!copy)
        return qt_gguf_wfail(w, QT_ERROR(QT_ENOMEM, "gguf_writer: cannot copy a key"));
    qt_gguf_buf *b = &w->kv[w->n_kv];
    memset(b, 0, sizeof *b);
    w->keys[w->n_kv++] = copy;
    qt_gguf_put_str(b, key, strlen(key));
    qt_gguf_put_le(b, (uint64_t)type, 4);
    *out = b;
    return QT_OK;
}

static qt_status qt_gguf_wdone(qt_gguf_writer *w, const qt_gguf_buf *b) {
    if (b->oom)
        return qt_gguf_wfail(w, QT_ERROR(QT_ENOMEM, "gguf_writer: cannot allocate a value"));
    return QT_OK;
}

static qt_status qt_gguf_wscalar(qt_gguf_writer *w, const char *key, qt_gguf_type t,
                                 const void *v) {
    qt_gguf_buf *b;
    qt_status s = qt_gguf_wkv(w, key, t, &b);
    if (s != QT_OK)
        return s;
    qt_gguf_put_elem(b, t, v);
    return qt_gguf_wdone(w, b);
}

#define QT_GGUF_SETTER(fn, ctype, gtype)                                 \
    qt_status fn(qt_gguf_writer *w, const char *key, ctype v) {          \
        return qt_gguf_wscalar(w, key, gtype, &v);                       \
    }
QT_GGUF_SETTER(qt_gguf_writer_set_u8, uint8_t, QT_GGUF_U8)
QT_GGUF_SETTER(qt_gguf_writer_set_i8, int8_t, QT_GGUF_I8)
QT_GGUF_SETTER(qt_gguf_writer_set_u16, uint16_t, QT_GGUF_U16)
QT_GGUF_SETTER(qt_gguf_writer_set_i16, int16_t, QT_GGUF_I16)
QT_GGUF_SETTER(qt_gguf_writer_set_i32, int32_t, QT_GGUF_I32)
QT_GGUF_SETTER(qt_gguf_writer_set_u64, uint64_t, QT_GGUF_U64)
QT_GGUF_SETTER(qt_gguf_writer_set_i64, int64_t, QT_GGUF_I64)
QT_GGUF_SETTER(qt_gguf_writer_set_f32, float, QT_GGUF_F32)
QT_GGUF_SETTER(qt_gguf_writer_set_f64, double, QT_GGUF_F64)
#undef QT_GGUF_SETTER

qt_status qt_gguf_writer_set_u32(qt_gguf_writer *w, const char *key, uint32_t v) {
    if (w && w->status == QT_OK && key && strcmp(key, "general.alignment") == 0) {
        if (v == 0 || (v & (v - 1)) != 0)
            return qt_gguf_wfail(w, QT_ERROR(QT_EINVAL, "gguf_writer: general.alignment is "
                                             "%u, expected a power of two", v));
        qt_status s = qt_gguf_wscalar(w, key, QT_GGUF_U32, &v);
        if (s == QT_OK)
            w->alignment = v;
        return s;
    }
    return qt_gguf_wscalar(w, key, QT_GGUF_U32, &v);
}

qt_status qt_gguf_writer_set_bool(qt_gguf_writer *w, const char *key, bool v) {
    uint8_t b = v ? 1 : 0;
    return qt_gguf_wscalar(w, key, QT_GGUF_BOOL, &b);
}

qt_status qt_gguf_writer_set_str(qt_gguf_writer *w, const char *key, const char *s,
                                 size_t len) {
    if (!s && len > 0)
        return qt_gguf_wfail(w, QT_ERROR(QT_EINVAL, "gguf_writer: \"%.128s\": NULL string of "
                                         "%zu bytes", key ? key : "", len));
    qt_gguf_buf *b;
    qt_status st = qt_gguf_wkv(w, key, QT_GGUF_STRING, &b);
    if (st != QT_OK)
        return st;
    qt_gguf_put_str(b, s, len);
    return qt_gguf_wdone(w, b);
}

qt_status qt_gguf_writer_set_arr(qt_gguf_writer *w, const char *key, qt_gguf_type elem,
                                 const void *data, uint64_t count) {
    if ((unsigned)elem >= QT_GGUF_TYPE_COUNT || elem == QT_GGUF_STRING ||
        elem == QT_GGUF_ARRAY || (count > 0 && !data))
        return qt_gguf_wfail(w, QT_ERROR(QT_EINVAL, "gguf_writer: \"%.128s\": array of %llu "
                                         "%s at %p, expected a numeric or bool element type "
                                         "and data", key ? key : "", (unsigned long long)count,
                                         qt_gguf_type_name(elem), data));
    size_t es = qt_gguf_types[elem].size;
    if (elem == QT_GGUF_BOOL)
        for (uint64_t i = 0; i < count; i++)
            if (((const uint8_t *)data)[i] > 1)
                return qt_gguf_wfail(w, QT_ERROR(QT_EINVAL, "gguf_writer: \"%.128s\": bool "
                                                 "element %llu is %u, expected 0 or 1", key ? key
                                                 : "", (unsigned long long)i,
                                                 ((const uint8_t *)data)[i]));
    qt_gguf_buf *b;
    qt_status s = qt_gguf_wkv(w, key, QT_GGUF_ARRAY, &b);
    if (s != QT_OK)
        return s;
    qt_gguf_put_le(b, (uint64_t)elem, 4);
    qt_gguf_put_le(b, count, 8);
    for (uint64_t i = 0; i < count && !b->oom; i++)
        qt_gguf_put_elem(b, elem, (const uint8_t *)data + i * es);
    return qt_gguf_wdone(w, b);
}

qt_status qt_gguf_writer_set_arr_str(qt_gguf_writer *w, const char *key,
                                     const char *const *strs, const size_t *lens,
                                     uint64_t count) {
    if (count > 0 && !strs)
        return qt_gguf_wfail(w, QT_ERROR(QT_EINVAL, "gguf_writer: \"%.128s\": %llu strings "
                                         "at NULL", key ? key : "", (unsigned long long)count));
    for (uint64_t i = 0; i < count; i++)
        if (!strs[i] && (!lens || lens[i] > 0))
            return qt_gguf_wfail(w, QT_ERROR(QT_EINVAL, "gguf_writer: \"%.128s\": string %llu "
                                             "is NULL", key ? key : "", (unsigned long long)i));
    qt_gguf_buf *b;
    qt_status s = qt_gguf_wkv(w, key, QT_GGUF_ARRAY, &b);
    if (s != QT_OK)
        return s;
    qt_gguf_put_le(b, QT_GGUF_STRING, 4);
    qt_gguf_put_le(b, count, 8);
    for (uint64_t i = 0; i < count && !b->oom; i++)
        qt_gguf_put_str(b, strs[i], lens ? lens[i] : strlen(strs[i]));
    return qt_gguf_wdone(w, b);
}

qt_status qt_gguf_writer_add_tensor(qt_gguf_writer *w, const char *name, qt_ggml_type type,
                                    int n_dims, const int64_t *ne, const void *data,
                                    size_t nbytes) {
    if (!w)
        return QT_ERROR(QT_EINVAL, "gguf_writer: writer is NULL");
    if (w->status != QT_OK)
        return QT_ERROR(w->status, "gguf_writer: an earlier call failed: %s",
                        w->first_error);
    if (!name || !*name || strlen(name) >= QT_GGUF_MAX_NAME)
        return qt_gguf_wfail(w, QT_ERROR(QT_EINVAL, "gguf_writer: tensor name \"%.80s\" must "
                                         "be 1..%d bytes", name ? name : "(null)",
                                         QT_GGUF_MAX_NAME - 1));
    for (int64_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return qt_gguf_wfail(w, QT_ERROR(QT_EINVAL, "gguf_writer: tensor \"%s\" added "
                                             "twice, expected unique names", name));
    if (n_dims < 1 || n_dims > 4 || !ne)
        return qt_gguf_wfail(w, QT_ERROR(QT_EINVAL, "gguf_writer: tensor \"%s\": n_dims %d, "
                                         "expected 1..4", name, n_dims));
    int64_t numel = 1;
    for (int d = 0; d < n_dims; d++)
        if (ne[d] <= 0 || __builtin_mul_overflow(numel, ne[d], &numel))
            return qt_gguf_wfail(w, QT_ERROR(QT_EINVAL, "gguf_writer: tensor \"%s\": ne[%d] = "
                                             "%lld, expected positive sizes whose product "
                                             "fits in 63 bits", name, d, (long long)ne[d]));
    int64_t blck = qt_ggml_blck_size(type);
    if (blck == 0 || ne[0] % blck != 0)
        return qt_gguf_wfail(w, QT_ERROR(QT_EINVAL, "gguf_writer: tensor \"%s\": type %d (%s) "
                                         "with ne[0] = %lld, expected a known ggml type "
                                         "whose block size divides ne[0]", name, (int)type,
                                         qt_ggml_type_name(type), (long long)ne[0]));
    size_t want = qt_ggml_nbytes(type, numel);
    if (want == 0 || want != nbytes || !data)
        return qt_gguf_wfail(w, QT_ERROR(QT_EINVAL, "gguf_writer: tensor \"%s\": %lld %s "
                                         "elements are %zu bytes, got %zu bytes at %p", name,
                                         (long long)numel, qt_ggml_type_name(type), want,
                                         nbytes, data));
    if (w->n_t == w->cap_t) {
        int64_t cap = w->cap_t ? 2 * w->cap_t : 16;
        qt_gguf_wtensor *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t)
            return qt_gguf_wfail(w, QT_ERROR(QT_ENOMEM, "gguf_writer: cannot grow to %lld "
                                             "tensors", (long long)cap));
        w->t = t;
        w->cap_t = cap;
    }
    qt_gguf_wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = qt_gguf_strndup((const unsigned char *)name, strlen(name));
    if (!t->name)
        return qt_gguf_wfail(w, QT_ERROR(QT_ENOMEM, "gguf_writer: cannot copy a name"));
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < 4; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
    t->data = data;
    t->nbytes = nbytes;
    w->n_t++;
    return QT_OK;
}

qt_status qt_gguf_writer_write(const qt_gguf_writer *w, const char *path) {
    if (!w || !path)
        return QT_ERROR(QT_EINVAL, "gguf_writer_write: %s is NULL", w ? "path" : "writer");
    if (w->status != QT_OK)
        return QT_ERROR(w->status, "gguf_writer_write %s: an earlier call failed: %s", path,
                        w->first_error);
    uint32_t a = w->alignment;

    /* the header: magic, version, counts, kv, tensor infos, padding */
    qt_gguf_buf h = {0};
    qt_gguf_put(&h, "GGUF", 4);
    qt_gguf_put_le(&h, 3, 4);
    qt_gguf_put_le(&h, (uint64_t)w->n_t, 8);
    qt_gguf_put_le(&h, (uint64_t)w->n_kv, 8);
    for (int64_t i = 0; i < w->n_kv; i++)
        qt_gguf_put(&h, w->kv[i].p, w->kv[i].len);
    uint64_t off = 0;
    qt_status s = QT_OK;
    for (int64_t i = 0; i < w->n_t; i++) {
        const qt_gguf_wtensor *t = &w->t[i];
        qt_gguf_put_str(&h, t->name, strlen(t->name));
        qt_gguf_put_le(&h, (uint64_t)t->n_dims, 4);
        for (int d = 0; d < t->n_dims; d++)
            qt_gguf_put_le(&h, (uint64_t)t->ne[d], 8);
        qt_gguf_put_le(&h, (uint64_t)t->type, 4);
        qt_gguf_put_le(&h, off, 8);
        if (__builtin_add_overflow(off, (uint64_t)t->nbytes, &off) ||
            !qt_gguf_pad(off, a, &off)) {
            s = QT_ERROR(QT_EINVAL, "gguf_writer_write %s: total size overflows 64 bits", path);
            break;
        }
    }
    static const unsigned char zeros[64] = {0};
    while (!h.oom && h.len % a)
        qt_gguf_put(&h, zeros, a - h.len % a < 64 ? a - h.len % a : 64);
    if (s == QT_OK && h.oom)
        s = QT_ERROR(QT_ENOMEM, "gguf_writer_write %s: cannot allocate the header", path);
    if (s != QT_OK) {
        free(h.p);
        return s;
    }

    /* writes are sticky: after a failure the rest are no-ops and commit reports it */
    qt_atomic_file f;
    qt_atomic_file_open(&f, path);
    qt_atomic_file_write(&f, h.p, h.len);
    for (int64_t i = 0; i < w->n_t && f.status == QT_OK; i++) {
        const qt_gguf_wtensor *t = &w->t[i];
        qt_atomic_file_write(&f, t->data, t->nbytes);
        for (uint64_t pad = (a - t->nbytes % a) % a; pad > 0;) {
            size_t k = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
            qt_atomic_file_write(&f, zeros, k);
            pad -= k;
        }
    }
    s = qt_atomic_file_commit(&f);
    free(h.p);
    return s;
}
