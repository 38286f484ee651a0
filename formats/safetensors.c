/*
 * safetensors.c - reader and writer of the safetensors format (huggingface/safetensors,
 * README "Format" and safetensors/src/tensor.rs; summary in ../shared/FORMATS.md).
 *
 *   [u64 LE N][N bytes of UTF-8 JSON, padded with spaces][byte buffer]
 *   JSON: {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [2, 3],
 *          "data_offsets": [begin, end]}, ...}, offsets relative to the buffer.
 *
 * Reading loads the whole file (header and buffer in separate allocations, the buffer
 * 64-byte aligned) and validates everything before handing out a pointer: the header
 * length against the file and the 100,000,000-byte cap of the reference reader; the
 * header as UTF-8 JSON (cJSON, fed a NUL-terminated copy so it cannot run past the end);
 * each entry's fields and types; nbytes == numel * dtype size in 64 bits with overflow
 * guards; and that the tensors, sorted by offset, tile the buffer exactly (first begin 0,
 * each begin == previous end, last end == buffer size). Any failure is a status with a
 * message naming the file; nothing here prints, exits or aborts.
 *
 * Surprising, and deliberate:
 *   - duplicate tensor names (and duplicate __metadata__ keys) are refused; the
 *     reference reader silently keeps one of them, which hides a broken writer;
 *   - tensors of more than QT_MAX_DIMS dims are refused (QT_EFORMAT) although the format
 *     allows them: qtrain tensors cannot hold them;
 *   - cJSON keeps numbers as doubles, so a shape entry written "2.0" reads as 2 (the
 *     reference refuses it); 1.5, -1 and anything above 2^53 are refused;
 *   - unknown keys inside an entry are ignored, as the reference does.
 */
#include "qt_formats.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ dtypes ---- */

static_assert(QT_DTYPE_COUNT == 6, "give the new dtype its safetensors name and size");

static const struct {
    const char *name;
    size_t size;
} qt_st_dtypes[QT_DTYPE_COUNT] = {
    [QT_F32] = {"F32", 4}, [QT_BF16] = {"BF16", 2}, [QT_F16] = {"F16", 2},
    [QT_I8] = {"I8", 1},   [QT_U8] = {"U8", 1},     [QT_I32] = {"I32", 4},
};

/* safetensors dtypes (safetensors 0.8 Dtype enum) that qtrain does not hold: a
 * well-formed file may carry them, so they are QT_EDTYPE rather than QT_EFORMAT. */
static const char *const qt_st_foreign_dtypes[] = {
    "BOOL", "F4", "F6_E2M3", "F6_E3M2", "F8_E4M3", "F8_E5M2", "F8_E8M0",
    "I16",  "U16", "U32",    "I64",     "U64",     "F64",     "C64",
};

const char *qt_st_dtype_name(qt_dtype t) {
    return (unsigned)t < QT_DTYPE_COUNT ? qt_st_dtypes[t].name : "?";
}

/* 2^53: above it a JSON number read as a double is no longer an exact integer. */
#define QT_ST_MAX_JSON_INT 9007199254740992.0

/* --------------------------------------------------------------- the handle ---- */

struct qt_safetensors {
    char *path;            /* copy, for messages */
    unsigned char *buf;    /* (buf_size) the byte buffer after the header, 64-byte aligned */
    size_t buf_size;
    qt_st_tensor *tensors; /* (n) in file order; names owned */
    int *by_name;          /* (n) indices into tensors, sorted by name (lookup) */
    int n;
    char **meta;           /* (2*n_meta) key, value, ...; sorted by key; owned */
    int n_meta;
    unsigned flags;        /* QT_ST_FP8_AS_U8 */
    uint8_t *fp8;          /* (n) 0, or 1 + index into qt_st_fp8_names: the tensor is an
                              fp8 one read as U8 bytes (with QT_ST_FP8_AS_U8) */
};

/* fp8 dtypes that qt_safetensors_open_ex / qt_safetensors_write_ex carry as U8 bytes. */
static const char *const qt_st_fp8_names[] = {"F8_E4M3", "F8_E5M2"};

void qt_safetensors_close(qt_safetensors *st) {
    if (!st)
        return;
    if (st->tensors)
        for (int i = 0; i < st->n; i++)
            free((char *)st->tensors[i].name);
    if (st->meta)
        for (int i = 0; i < 2 * st->n_meta; i++)
            free(st->meta[i]);
    free(st->tensors);
    free(st->by_name);
    free(st->meta);
    free(st->fp8);
    free(st->buf);
    free(st->path);
    free(st);
}

int qt_safetensors_count(const qt_safetensors *st) { return st ? st->n : 0; }

const qt_st_tensor *qt_safetensors_at(const qt_safetensors *st, int i) {
    return st && i >= 0 && i < st->n ? &st->tensors[i] : NULL;
}

const qt_st_tensor *qt_safetensors_get(const qt_safetensors *st, const char *name) {
    if (!st || !name)
        return NULL;
    int lo = 0, hi = st->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const qt_st_tensor *t = &st->tensors[st->by_name[mid]];
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

const char *qt_safetensors_meta(const qt_safetensors *st, const char *key) {
    if (!st || !key)
        return NULL;
    int lo = 0, hi = st->n_meta - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(key, st->meta[2 * mid]);
        if (c == 0)
            return st->meta[2 * mid + 1];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* ----------------------------------------------------------------- helpers ---- */

static char *qt_st_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* Index of the first byte of s[0..n) that is not valid UTF-8 (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or n when all of it is. */
static size_t qt_st_utf8_bad(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        } else {
            return i;
        }
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
        i += len;
    }
    return n;
}

/* What a JSON value is, for "found ..." in messages. */
static const char *qt_st_json_desc(const cJSON *v, char *buf, size_t n) {
    if (!v)
        snprintf(buf, n, "nothing");
    else if (cJSON_IsNumber(v))
        snprintf(buf, n, "%.17g", v->valuedouble);
    else if (cJSON_IsString(v))
        snprintf(buf, n, "string \"%.40s\"", v->valuestring ? v->valuestring : "");
    else if (cJSON_IsArray(v))
        snprintf(buf, n, "an array of %d", cJSON_GetArraySize(v));
    else if (cJSON_IsObject(v))
        snprintf(buf, n, "an object");
    else if (cJSON_IsBool(v))
        snprintf(buf, n, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else if (cJSON_IsNull(v))
        snprintf(buf, n, "null");
    else
        snprintf(buf, n, "an invalid value");
    return buf;
}

/* A JSON number that is an exact non-negative integer no larger than 2^53. */
static bool qt_st_json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v))
        return false;
    double d = v->valuedouble;
    if (!(d >= 0.0 && d <= QT_ST_MAX_JSON_INT)) /* also refuses NaN and inf */
        return false;
    uint64_t u = (uint64_t)d;
    if ((double)u != d)
        return false;
    *out = u;
    return true;
}

static const char *qt_st_shape_str(const int64_t *shape, int ndim, char *buf, size_t n) {
    size_t at = 0;
    buf[0] = '\0';
    at += (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && at < n; d++)
        at += (size_t)snprintf(buf + at, n - at, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (at < n)
        snprintf(buf + at, n - at, "]");
    return buf;
}

/* numel * size in 64 bits; false when it does not fit. */
static bool qt_st_nbytes(const int64_t *shape, int ndim, size_t size, uint64_t *out) {
    uint64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || __builtin_mul_overflow(numel, (uint64_t)shape[d], &numel))
            return false;
    }
    return !__builtin_mul_overflow(numel, (uint64_t)size, out);
}

static int qt_st_cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ------------------------------------------------------------------ reading ---- */

static qt_status qt_st_read_all(int fd, void *dst, size_t n, const char *path,
                                const char *what, uint64_t at) {
    unsigned char *p = dst;
    size_t done = 0;
    while (done < n) {
        size_t chunk = n - done < (1u << 30) ? n - done : (1u << 30);
        ssize_t r = read(fd, p + done, chunk);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return QT_ERROR(QT_EIO, "%s: reading the %s at byte %llu: %s", path, what,
                            (unsigned long long)(at + done), strerror(errno));
        }
        if (r == 0)
            return QT_ERROR(QT_EIO, "%s: file ended at byte %llu while reading the %s "
                            "(did it shrink while being read?)",
                            path, (unsigned long long)(at + done), what);
        done += (size_t)r;
    }
    return QT_OK;
}

/* Reads the length prefix, the header (into *header, NUL-terminated, *hlen bytes) and
 * the byte buffer (into st->buf). */
static qt_status qt_st_load(qt_safetensors *st, char **header, size_t *hlen) {
    const char *path = st->path;
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
    if (size < 8) {
        s = QT_ERROR(QT_EFORMAT, "%s: file is %llu bytes, shorter than the 8-byte header "
                     "length that starts a safetensors file", path, (unsigned long long)size);
        goto done;
    }
    unsigned char len8[8];
    if ((s = qt_st_read_all(fd, len8, 8, path, "header length", 0)) != QT_OK)
        goto done;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | len8[i];
    if (n > QT_ST_MAX_HEADER) {
        s = QT_ERROR(QT_EFORMAT, "%s: header length is %llu bytes, expected at most %llu "
                     "(the reference reader's limit)", path, (unsigned long long)n,
                     QT_ST_MAX_HEADER);
        goto done;
    }
    if (n > size - 8) {
        s = QT_ERROR(QT_EFORMAT, "%s: header length is %llu bytes but only %llu bytes "
                     "follow the length field (truncated file?)", path,
                     (unsigned long long)n, (unsigned long long)(size - 8));
        goto done;
    }
    uint64_t buf_size = size - 8 - n;
    if (buf_size > SIZE_MAX - 64) {
        s = QT_ERROR(QT_ENOMEM, "%s: %llu-byte buffer does not fit in memory", path,
                     (unsigned long long)buf_size);
        goto done;
    }
    *hlen = (size_t)n;
    *header = malloc((size_t)n + 1);
    /* aligned_alloc wants a multiple of the alignment; at least 64 so that empty
     * tensors still point into a live allocation */
    size_t alloc = ((size_t)buf_size + 63) / 64 * 64;
    st->buf = aligned_alloc(64, alloc ? alloc : 64);
    if (!*header || !st->buf) {
        s = QT_ERROR(QT_ENOMEM, "%s: cannot allocate %llu + %llu bytes for header and buffer",
                     path, (unsigned long long)n, (unsigned long long)buf_size);
        goto done;
    }
    st->buf_size = (size_t)buf_size;
    if ((s = qt_st_read_all(fd, *header, (size_t)n, path, "header", 8)) != QT_OK)
        goto done;
    (*header)[n] = '\0';
    s = qt_st_read_all(fd, st->buf, (size_t)buf_size, path, "byte buffer", 8 + n);
done:
    close(fd);
    return s;
}

/* Fills st->meta from the "__metadata__" value: a map of strings. */
static qt_status qt_st_parse_meta(qt_safetensors *st, const cJSON *m) {
    const char *path = st->path;
    char found[96];
    if (!cJSON_IsObject(m))
        return QT_ERROR(QT_EFORMAT, "%s: \"__metadata__\" must be an object of strings, "
                        "found %s", path, qt_st_json_desc(m, found, sizeof found));
    int cnt = 0;
    for (const cJSON *kv = m->child; kv; kv = kv->next) {
        if (!cJSON_IsString(kv) || !kv->valuestring || !kv->string)
            return QT_ERROR(QT_EFORMAT, "%s: __metadata__[\"%.64s\"] must be a string, "
                            "found %s", path, kv->string ? kv->string : "",
                            qt_st_json_desc(kv, found, sizeof found));
        cnt++;
    }
    st->meta = calloc((size_t)cnt * 2 + 1, sizeof *st->meta);
    if (!st->meta)
        return QT_ERROR(QT_ENOMEM, "%s: cannot allocate %d metadata entries", path, cnt);
    /* key and value are adjacent pointers; qsort below moves each pair as one
     * two-pointer record and compares the key (lookups bsearch it) */
    for (const cJSON *kv = m->child; kv; kv = kv->next) {
        char *k = qt_st_strdup(kv->string), *v = qt_st_strdup(kv->valuestring);
        st->meta[2 * st->n_meta] = k;
        st->meta[2 * st->n_meta + 1] = v;
        st->n_meta++;
        if (!k || !v)
            return QT_ERROR(QT_ENOMEM, "%s: cannot copy metadata", path);
    }
    qsort(st->meta, (size_t)st->n_meta, 2 * sizeof *st->meta, qt_st_cmp_str);
    for (int i = 1; i < st->n_meta; i++)
        if (strcmp(st->meta[2 * i - 2], st->meta[2 * i]) == 0)
            return QT_ERROR(QT_EFORMAT, "%s: __metadata__ key \"%.64s\" appears more than "
                            "once, expected unique keys", path, st->meta[2 * i]);
    return QT_OK;
}

typedef struct {
    uint64_t begin, end;
    int index; /* in st->tensors, i.e. in JSON order */
} qt_st_span;

static int qt_st_cmp_span(const void *pa, const void *pb) {
    const qt_st_span *a = pa, *b = pb;
    if (a->begin != b->begin)
        return a->begin < b->begin ? -1 : 1;
    if (a->end != b->end)
        return a->end < b->end ? -1 : 1;
    return (a->index > b->index) - (a->index < b->index);
}

/* One tensor entry: fields, types, dtype, shape, offsets within the buffer and
 * nbytes == numel * dtype size. t->name is already set. */
static qt_status qt_st_parse_entry(qt_safetensors *st, const cJSON *e,
                                   qt_st_tensor *t, qt_st_span *span) {
    const char *path = st->path, *name = t->name;
    char found[96], sbuf[160];
    if (!cJSON_IsObject(e))
        return QT_ERROR(QT_EFORMAT, "%s: tensor \"%.64s\": expected an object with dtype, "
                        "shape and data_offsets, found %s", path, name,
                        qt_st_json_desc(e, found, sizeof found));
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!dt || !sh || !off)
        return QT_ERROR(QT_EFORMAT, "%s: tensor \"%.64s\": missing \"%s\", expected dtype, "
                        "shape and data_offsets", path, name,
                        !dt ? "dtype" : !sh ? "shape" : "data_offsets");
    if (!cJSON_IsString(dt) || !dt->valuestring)
        return QT_ERROR(QT_EFORMAT, "%s: tensor \"%.64s\": \"dtype\" must be a string, "
                        "found %s", path, name, qt_st_json_desc(dt, found, sizeof found));
    if (!cJSON_IsArray(sh))
        return QT_ERROR(QT_EFORMAT, "%s: tensor \"%.64s\": \"shape\" must be an array, "
                        "found %s", path, name, qt_st_json_desc(sh, found, sizeof found));
    if (!cJSON_IsArray(off))
        return QT_ERROR(QT_EFORMAT, "%s: tensor \"%.64s\": \"data_offsets\" must be an "
                        "array [begin, end], found %s", path, name,
                        qt_st_json_desc(off, found, sizeof found));

    int dtype = -1;
    for (int i = 0; i < QT_DTYPE_COUNT; i++)
        if (strcmp(dt->valuestring, qt_st_dtypes[i].name) == 0)
            dtype = i;
    if (dtype < 0 && (st->flags & QT_ST_FP8_AS_U8))
        for (int i = 0; i < 2; i++)
            if (strcmp(dt->valuestring, qt_st_fp8_names[i]) == 0) {
                dtype = QT_U8; /* one byte per element, as U8 */
                st->fp8[t - st->tensors] = (uint8_t)(1 + i);
            }
    if (dtype < 0) {
        for (size_t i = 0; i < sizeof qt_st_foreign_dtypes / sizeof *qt_st_foreign_dtypes; i++)
            if (strcmp(dt->valuestring, qt_st_foreign_dtypes[i]) == 0)
                return QT_ERROR(QT_EDTYPE, "%s: tensor \"%.64s\" has dtype %s, which qtrain "
                                "does not read (expected F32, BF16, F16, I8, U8 or I32)",
                                path, name, qt_st_foreign_dtypes[i]);
        return QT_ERROR(QT_EFORMAT, "%s: tensor \"%.64s\": unknown dtype \"%.32s\", expected "
                        "a safetensors dtype such as F32, BF16, F16, I8, U8 or I32", path,
                        name, dt->valuestring);
    }
    t->dtype = (qt_dtype)dtype;

    int ndim = cJSON_GetArraySize(sh);
    if (ndim > QT_MAX_DIMS)
        return QT_ERROR(QT_EFORMAT, "%s: tensor \"%.64s\" has %d dims, qtrain tensors hold "
                        "at most %d", path, name, ndim, QT_MAX_DIMS);
    t->ndim = ndim;
    int d = 0;
    for (const cJSON *x = sh->child; x; x = x->next, d++) {
        uint64_t v;
        if (!qt_st_json_uint(x, &v))
            return QT_ERROR(QT_EFORMAT, "%s: tensor \"%.64s\": shape[%d] must be a "
                            "non-negative integer, found %s", path, name, d,
                            qt_st_json_desc(x, found, sizeof found));
        t->shape[d] = (int64_t)v;
    }

    uint64_t be[2];
    int noff = cJSON_GetArraySize(off);
    if (noff != 2)
        return QT_ERROR(QT_EFORMAT, "%s: tensor \"%.64s\": data_offsets must be [begin, end], "
                        "found an array of %d", path, name, noff);
    d = 0;
    for (const cJSON *x = off->child; x && d < 2; x = x->next, d++)
        if (!qt_st_json_uint(x, &be[d]))
            return QT_ERROR(QT_EFORMAT, "%s: tensor \"%.64s\": data_offsets[%d] must be a "
                            "non-negative integer, found %s", path, name, d,
                            qt_st_json_desc(x, found, sizeof found));
    if (be[0] > be[1])
        return QT_ERROR(QT_EFORMAT, "%s: tensor \"%.64s\": data_offsets [%llu, %llu] has "
                        "begin > end", path, name, (unsigned long long)be[0],
                        (unsigned long long)be[1]);
    if (be[1] > st->buf_size)
        return QT_ERROR(QT_EFORMAT, "%s: tensor \"%.64s\": data_offsets end %llu is beyond "
                        "the %zu-byte buffer", path, name, (unsigned long long)be[1],
                        st->buf_size);

    uint64_t nbytes;
    qt_st_shape_str(t->shape, t->ndim, sbuf, sizeof sbuf);
    if (!qt_st_nbytes(t->shape, t->ndim, qt_st_dtypes[dtype].size, &nbytes))
        return QT_ERROR(QT_EFORMAT, "%s: tensor \"%.64s\": %s %s overflows a 64-bit byte "
                        "count", path, name, qt_st_dtypes[dtype].name, sbuf);
    if (nbytes != be[1] - be[0])
        return QT_ERROR(QT_EFORMAT, "%s: tensor \"%.64s\": %s %s needs %llu bytes, but "
                        "data_offsets [%llu, %llu] hold %llu", path, name,
                        qt_st_dtypes[dtype].name, sbuf, (unsigned long long)nbytes,
                        (unsigned long long)be[0], (unsigned long long)be[1],
                        (unsigned long long)(be[1] - be[0]));
    t->nbytes = (size_t)nbytes;
    span->begin = be[0];
    span->end = be[1];
    return QT_OK;
}

typedef struct {
    const char *name;
    int index; /* in st->tensors as parsed, i.e. in JSON order */
} qt_st_named;

static int qt_st_cmp_named(const void *pa, const void *pb) {
    const qt_st_named *a = pa, *b = pb;
    int c = strcmp(a->name, b->name);
    return c ? c : (a->index > b->index) - (a->index < b->index);
}

/* Duplicate names, then the tiling of the buffer; puts st->tensors in file order and
 * builds the by-name index. */
static qt_status qt_st_check_layout(qt_safetensors *st, qt_st_span *spans) {
    const char *path = st->path;
    int n = st->n;
    size_t alloc_n = (size_t)(n ? n : 1);
    qt_status s = QT_OK;

    qt_st_named *named = malloc(alloc_n * sizeof *named);
    int *filepos = malloc(alloc_n * sizeof *filepos);
    qt_st_tensor *sorted = malloc(alloc_n * sizeof *sorted);
    st->by_name = malloc(alloc_n * sizeof *st->by_name);
    if (!named || !filepos || !sorted || !st->by_name) {
        s = QT_ERROR(QT_ENOMEM, "%s: cannot allocate the index of %d tensors", path, n);
        goto done;
    }

    for (int i = 0; i < n; i++)
        named[i] = (qt_st_named){st->tensors[i].name, i};
    qsort(named, (size_t)n, sizeof *named, qt_st_cmp_named);
    for (int i = 1; i < n; i++)
        if (strcmp(named[i - 1].name, named[i].name) == 0) {
            s = QT_ERROR(QT_EFORMAT, "%s: tensor name \"%.64s\" appears more than once, "
                         "expected unique names", path, named[i].name);
            goto done;
        }

    qsort(spans, (size_t)n, sizeof *spans, qt_st_cmp_span);
    uint64_t at = 0; /* end of the bytes covered so far */
    for (int i = 0; i < n; i++) {
        const char *name = st->tensors[spans[i].index].name;
        if (spans[i].begin < at) {
            s = QT_ERROR(QT_EFORMAT, "%s: tensor \"%.64s\" at [%llu, %llu] overlaps "
                         "tensor \"%.64s\" that ends at %llu", path, name,
                         (unsigned long long)spans[i].begin, (unsigned long long)spans[i].end,
                         st->tensors[spans[i - 1].index].name, (unsigned long long)at);
            goto done;
        }
        if (spans[i].begin > at) {
            s = QT_ERROR(QT_EFORMAT, "%s: hole in the byte buffer: tensor \"%.64s\" begins "
                         "at %llu, expected %llu (%s)", path, name,
                         (unsigned long long)spans[i].begin, (unsigned long long)at,
                         i ? "the end of the previous tensor" : "the first tensor begins at 0");
            goto done;
        }
        at = spans[i].end;
    }
    if (at != st->buf_size) {
        s = QT_ERROR(QT_EFORMAT, "%s: tensors cover %llu bytes, but the byte buffer after the "
                     "header is %zu bytes, expected them equal", path, (unsigned long long)at,
                     st->buf_size);
        goto done;
    }

    for (int k = 0; k < n; k++) {
        sorted[k] = st->tensors[spans[k].index];
        sorted[k].data = st->buf + spans[k].begin;
        filepos[spans[k].index] = k;
    }
    for (int i = 0; i < n; i++)
        st->by_name[i] = filepos[named[i].index];
    free(st->tensors);
    st->tensors = sorted;
    sorted = NULL;
done:
    free(named);
    free(filepos);
    free(sorted);
    return s;
}

static qt_status qt_st_parse(qt_safetensors *st, const char *h, size_t hlen) {
    const char *path = st->path;
    char found[96];

    /* JSON text is UTF-8 and has no raw control characters besides whitespace; cJSON
     * checks neither, and a BOM it would skip is not JSON either. */
    size_t bad = qt_st_utf8_bad((const unsigned char *)h, hlen);
    if (bad < hlen)
        return QT_ERROR(QT_EFORMAT, "%s: header byte %zu is 0x%02x, expected UTF-8 JSON text",
                        path, bad, (unsigned char)h[bad]);
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
            return QT_ERROR(QT_EFORMAT, "%s: header byte %zu is control character 0x%02x, "
                            "expected JSON text", path, i, c);
    }
    if (hlen >= 3 && memcmp(h, "\xEF\xBB\xBF", 3) == 0)
        return QT_ERROR(QT_EFORMAT, "%s: header starts with a UTF-8 byte-order mark, "
                        "expected '{'", path);

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(h, hlen, &end, 0);
    if (!root) {
        size_t at = end && end >= h && end <= h + hlen ? (size_t)(end - h) : 0;
        return QT_ERROR(QT_EFORMAT, "%s: header is not valid JSON (error near byte %zu of "
                        "%zu)", path, at, hlen);
    }
    qt_status s = QT_OK;
    for (const char *p = end; p && p < h + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            s = QT_ERROR(QT_EFORMAT, "%s: header has trailing characters after the JSON "
                         "object at byte %zu, expected only space padding", path,
                         (size_t)(p - h));
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        s = QT_ERROR(QT_EFORMAT, "%s: header must be a JSON object, found %s", path,
                     qt_st_json_desc(root, found, sizeof found));
        goto done;
    }

    int cap = 0;
    const cJSON *meta = NULL;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!e->string) {
            s = QT_ERROR(QT_EFORMAT, "%s: header object has an entry without a key", path);
            goto done;
        }
        if (strcmp(e->string, "__metadata__") == 0) {
            if (meta) {
                s = QT_ERROR(QT_EFORMAT, "%s: \"__metadata__\" appears more than once", path);
                goto done;
            }
            meta = e;
        } else {
            cap++;
        }
    }
    if (meta && (s = qt_st_parse_meta(st, meta)) != QT_OK)
        goto done;

    st->tensors = calloc((size_t)(cap ? cap : 1), sizeof *st->tensors);
    st->fp8 = calloc((size_t)(cap ? cap : 1), 1);
    qt_st_span *spans = calloc((size_t)(cap ? cap : 1), sizeof *spans);
    if (!st->tensors || !st->fp8 || !spans) {
        free(spans);
        s = QT_ERROR(QT_ENOMEM, "%s: cannot allocate %d tensor entries", path, cap);
        goto done;
    }
    for (const cJSON *e = root->child; e; e = e->next) {
        if (e == meta)
            continue;
        qt_st_tensor *t = &st->tensors[st->n];
        t->name = qt_st_strdup(e->string);
        if (!t->name) {
            s = QT_ERROR(QT_ENOMEM, "%s: cannot copy a tensor name", path);
            break;
        }
        spans[st->n].index = st->n;
        st->n++;
        if ((s = qt_st_parse_entry(st, e, t, &spans[st->n - 1])) != QT_OK)
            break;
    }
    if (s == QT_OK)
        s = qt_st_check_layout(st, spans);
    free(spans);
done:
    cJSON_Delete(root);
    return s;
}

qt_status qt_safetensors_open(const char *path, qt_safetensors **out) {
    return qt_safetensors_open_ex(path, 0, out);
}

const char *qt_safetensors_dtype_str(const qt_safetensors *st, const qt_st_tensor *t) {
    if (!st || !t || t < st->tensors || t >= st->tensors + st->n)
        return "?";
    int k = st->fp8[t - st->tensors];
    return k ? qt_st_fp8_names[k - 1] : qt_st_dtypes[t->dtype].name;
}

qt_status qt_safetensors_open_ex(const char *path, unsigned flags, qt_safetensors **out) {
    if (!out)
        return QT_ERROR(QT_EINVAL, "safetensors_open: out must not be NULL");
    *out = NULL;
    if (!path)
        return QT_ERROR(QT_EINVAL, "safetensors_open: path must not be NULL");
    qt_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = qt_st_strdup(path))) {
        free(st);
        return QT_ERROR(QT_ENOMEM, "%s: cannot allocate the safetensors handle", path);
    }
    st->flags = flags;
    char *header = NULL;
    size_t hlen = 0;
    qt_status s = qt_st_load(st, &header, &hlen);
    if (s == QT_OK)
        s = qt_st_parse(st, header, hlen);
    free(header);
    if (s != QT_OK) {
        qt_safetensors_close(st);
        return s;
    }
    *out = st;
    return QT_OK;
}

/* ------------------------------------------------------------------ writing ---- */

/* A growing string for the header; `oom` sticks once an allocation fails. */
typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} qt_st_buf;

static void qt_st_put(qt_st_buf *b, const char *s, size_t n) {
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void qt_st_puts(qt_st_buf *b, const char *s) { qt_st_put(b, s, strlen(s)); }

static void qt_st_put_u64(qt_st_buf *b, uint64_t v) {
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    qt_st_put(b, tmp, (size_t)n);
}

/* A JSON string literal (RFC 8259 section 7): quote, backslash and control characters
 * escaped, UTF-8 passed through (checked valid by the caller). */
static void qt_st_put_json_str(qt_st_buf *b, const char *s) {
    qt_st_put(b, "\"", 1);
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            qt_st_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            qt_st_put(b, esc, 6);
        } else {
            qt_st_put(b, p, 1);
        }
    }
    qt_st_put(b, "\"", 1);
}

/* Arguments a reader of the result would refuse are QT_EINVAL here, before any file
 * is touched. */
static qt_status qt_st_check_args(const char *path, const qt_st_tensor *tensors, int n,
                                  const char *const *meta, int n_meta) {
    if (n < 0 || n_meta < 0 || (n > 0 && !tensors) || (n_meta > 0 && !meta))
        return QT_ERROR(QT_EINVAL, "safetensors_write %s: %d tensors at %p, %d metadata "
                        "pairs at %p", path, n, (const void *)tensors, n_meta,
                        (const void *)meta);
    for (int i = 0; i < 2 * n_meta; i++) {
        if (!meta[i])
            return QT_ERROR(QT_EINVAL, "safetensors_write %s: metadata %s %d is NULL", path,
                            i % 2 ? "value" : "key", i / 2);
        size_t len = strlen(meta[i]);
        if (qt_st_utf8_bad((const unsigned char *)meta[i], len) != len)
            return QT_ERROR(QT_EINVAL, "safetensors_write %s: metadata %s %d is not valid "
                            "UTF-8", path, i % 2 ? "value" : "key", i / 2);
    }
    for (int i = 0; i < n; i++) {
        const qt_st_tensor *t = &tensors[i];
        if (!t->name)
            return QT_ERROR(QT_EINVAL, "safetensors_write %s: tensor %d has no name", path, i);
        size_t len = strlen(t->name);
        if (qt_st_utf8_bad((const unsigned char *)t->name, len) != len)
            return QT_ERROR(QT_EINVAL, "safetensors_write %s: tensor %d's name is not valid "
                            "UTF-8", path, i);
        if (strcmp(t->name, "__metadata__") == 0)
            return QT_ERROR(QT_EINVAL, "safetensors_write %s: tensor %d is named "
                            "\"__metadata__\", which the format reserves", path, i);
        if ((unsigned)t->dtype >= QT_DTYPE_COUNT)
            return QT_ERROR(QT_EINVAL, "safetensors_write %s: tensor \"%.64s\" has dtype %d, "
                            "expected a qt_dtype", path, t->name, (int)t->dtype);
        if (t->ndim < 0 || t->ndim > QT_MAX_DIMS)
            return QT_ERROR(QT_EINVAL, "safetensors_write %s: tensor \"%.64s\" has ndim %d, "
                            "expected 0..%d", path, t->name, t->ndim, QT_MAX_DIMS);
        char sbuf[160];
        uint64_t nbytes;
        qt_st_shape_str(t->shape, t->ndim, sbuf, sizeof sbuf);
        if (!qt_st_nbytes(t->shape, t->ndim, qt_st_dtypes[t->dtype].size, &nbytes))
            return QT_ERROR(QT_EINVAL, "safetensors_write %s: tensor \"%.64s\" has shape %s, "
                            "expected non-negative dims with a byte count that fits in 64 "
                            "bits", path, t->name, sbuf);
        if (nbytes != t->nbytes)
            return QT_ERROR(QT_EINVAL, "safetensors_write %s: tensor \"%.64s\": %s %s is "
                            "%llu bytes, but nbytes is %zu", path, t->name,
                            qt_st_dtypes[t->dtype].name, sbuf, (unsigned long long)nbytes,
                            t->nbytes);
        if (nbytes > 0 && !t->data)
            return QT_ERROR(QT_EINVAL, "safetensors_write %s: tensor \"%.64s\" has %zu bytes "
                            "but no data", path, t->name, t->nbytes);
    }

    /* unique tensor names and metadata keys, as the reader insists */
    int m = n > n_meta ? n : n_meta;
    const char **names = malloc((size_t)(m ? m : 1) * sizeof *names);
    if (!names)
        return QT_ERROR(QT_ENOMEM, "safetensors_write %s: cannot allocate %d names", path, m);
    qt_status s = QT_OK;
    for (int pass = 0; pass < 2 && s == QT_OK; pass++) {
        int k = pass ? n_meta : n;
        for (int i = 0; i < k; i++)
            names[i] = pass ? meta[2 * i] : tensors[i].name;
        qsort(names, (size_t)k, sizeof *names, qt_st_cmp_str);
        for (int i = 1; i < k; i++)
            if (strcmp(names[i - 1], names[i]) == 0) {
                s = QT_ERROR(QT_EINVAL, "safetensors_write %s: %s \"%.64s\" appears more "
                             "than once", path, pass ? "metadata key" : "tensor name",
                             names[i]);
                break;
            }
    }
    free(names);
    return s;
}

/* The header JSON, padded with spaces to a multiple of 8 (so the buffer starts 8-byte
 * aligned in the file, as the reference writer does). */
static qt_status qt_st_build_header(const char *path, qt_st_buf *b,
                                    const qt_st_tensor *tensors, int n,
                                    const char *const *meta, int n_meta,
                                    const char *const *dtype_names) {
    qt_st_puts(b, "{");
    if (n_meta > 0) {
        qt_st_puts(b, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i)
                qt_st_puts(b, ",");
            qt_st_put_json_str(b, meta[2 * i]);
            qt_st_puts(b, ":");
            qt_st_put_json_str(b, meta[2 * i + 1]);
        }
        qt_st_puts(b, "}");
    }
    uint64_t at = 0;
    for (int i = 0; i < n; i++) {
        const qt_st_tensor *t = &tensors[i];
        if (i || n_meta > 0)
            qt_st_puts(b, ",");
        qt_st_put_json_str(b, t->name);
        qt_st_puts(b, ":{\"dtype\":\"");
        qt_st_puts(b, dtype_names && dtype_names[i] ? dtype_names[i]
                                                    : qt_st_dtypes[t->dtype].name);
        qt_st_puts(b, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d)
                qt_st_puts(b, ",");
            qt_st_put_u64(b, (uint64_t)t->shape[d]);
        }
        qt_st_puts(b, "],\"data_offsets\":[");
        qt_st_put_u64(b, at);
        qt_st_puts(b, ",");
        if (__builtin_add_overflow(at, (uint64_t)t->nbytes, &at))
            return QT_ERROR(QT_EINVAL, "safetensors_write %s: total size overflows 64 bits",
                            path);
        qt_st_put_u64(b, at);
        qt_st_puts(b, "]}");
    }
    qt_st_puts(b, "}");
    while (!b->oom && b->len % 8)
        qt_st_puts(b, " ");
    if (b->oom)
        return QT_ERROR(QT_ENOMEM, "safetensors_write %s: cannot allocate the header", path);
    if (b->len > QT_ST_MAX_HEADER)
        return QT_ERROR(QT_EINVAL, "safetensors_write %s: header would be %zu bytes, readers "
                        "refuse more than %llu", path, b->len, QT_ST_MAX_HEADER);
    return QT_OK;
}

qt_status qt_safetensors_write(const char *path, const qt_st_tensor *tensors, int n,
                               const char *const *meta, int n_meta) {
    return qt_safetensors_write_ex(path, tensors, n, meta, n_meta, NULL);
}

qt_status qt_safetensors_write_ex(const char *path, const qt_st_tensor *tensors, int n,
                                  const char *const *meta, int n_meta,
                                  const char *const *dtype_names) {
    if (!path)
        return QT_ERROR(QT_EINVAL, "safetensors_write: path must not be NULL");
    qt_status s = qt_st_check_args(path, tensors, n, meta, n_meta);
    if (s != QT_OK)
        return s;
    for (int i = 0; dtype_names && i < n; i++) {
        const char *d = dtype_names[i];
        if (d && !(tensors[i].dtype == QT_U8 &&
                   (!strcmp(d, qt_st_fp8_names[0]) || !strcmp(d, qt_st_fp8_names[1]))))
            return QT_ERROR(QT_EINVAL, "safetensors_write %s: tensor \"%.64s\": dtype name "
                            "\"%.32s\" given for a %s tensor; expected F8_E4M3 or F8_E5M2 on "
                            "a U8 tensor", path, tensors[i].name, d,
                            qt_st_dtypes[tensors[i].dtype].name);
    }

    qt_st_buf hdr = {0};
    if ((s = qt_st_build_header(path, &hdr, tensors, n, meta, n_meta, dtype_names)) != QT_OK) {
        free(hdr.p);
        return s;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hdr.len >> (8 * i));

    /* writes are sticky: after a failure the rest are no-ops and commit reports it */
    qt_atomic_file f;
    qt_atomic_file_open(&f, path);
    qt_atomic_file_write(&f, len8, 8);
    qt_atomic_file_write(&f, hdr.p, hdr.len);
    for (int i = 0; i < n && f.status == QT_OK; i++)
        qt_atomic_file_write(&f, tensors[i].data, tensors[i].nbytes);
    s = qt_atomic_file_commit(&f);
    free(hdr.p);
    return s;
}
