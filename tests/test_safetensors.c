/*
 * test_safetensors.c - the safetensors reader and writer (formats/safetensors.c).
 *
 *   - round trip: tensors of every qt_dtype (a 0-dim scalar, a 4-dim and an empty one,
 *     names and metadata needing JSON escapes) written, read back, compared byte for
 *     byte; the header is padded to a multiple of 8 and no temporary is left behind;
 *   - a file written by the reference writer (fixtures/st_reference.safetensors, from
 *     fixtures/gen_safetensors_fixture.py with safetensors.torch.save_file);
 *   - malformed inputs, one per validation rule, each checked for its status and for a
 *     message naming the file and the rule;
 *   - every truncation of valid files, and a few hundred random mutations (this test
 *     also runs under AddressSanitizer + UBSan: any out-of-bounds read shows up there);
 *   - writer errors: bad arguments (QT_EINVAL, nothing written), a missing directory
 *     and a failing rename (QT_EIO, no file or temporary left behind);
 *   - qt_atomic_file (formats/atomic_file.c), which both format writers use: commit
 *     writes the bytes and replaces an old file, abort leaves nothing, open in a missing
 *     directory and a failing write (RLIMIT_FSIZE) are sticky QT_EIO naming the path and
 *     the errno text, and no temporary is ever left behind.
 *
 * Prints a line per failed check and exits non-zero if any failed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qt_formats.h"

static int n_pass, n_fail;

#define CHECK(cond, ...)                                           \
    do {                                                           \
        if (cond) {                                                \
            n_pass++;                                              \
        } else {                                                   \
            n_fail++;                                              \
            printf("FAIL %s:%d: (%s) ", __FILE__, __LINE__, #cond); \
            printf(__VA_ARGS__);                                   \
            printf("\n");                                          \
        }                                                          \
    } while (0)

/* ---------------------------------------------------------------- helpers ---- */

static bool exists(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

/* A fresh file under /tmp holding bytes[0..n); the caller unlinks and frees it. */
static char *tmp_with(const void *bytes, size_t n) {
    char tmpl[] = "/tmp/qt_st_test_XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd < 0) {
        perror("mkstemp");
        exit(2);
    }
    if (n && write(fd, bytes, n) != (ssize_t)n) {
        perror("write");
        exit(2);
    }
    close(fd);
    return strdup(tmpl);
}

static void overwrite(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(bytes, 1, n, f) != n) || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)len + 1);
    if (p && fread(p, 1, (size_t)len, f) != (size_t)len) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *n = (size_t)len;
    return p;
}

/* [u64 LE strlen(json)][json][ndata bytes 0, 1, 2, ...] into a static buffer. */
static unsigned char file_buf[1 << 16];

static size_t make_file(const char *json, size_t ndata) {
    size_t h = strlen(json);
    if (8 + h + ndata > sizeof file_buf) {
        fprintf(stderr, "make_file: test case too large\n");
        exit(2);
    }
    for (int i = 0; i < 8; i++)
        file_buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(file_buf + 8, json, h);
    for (size_t i = 0; i < ndata; i++)
        file_buf[8 + h + i] = (unsigned char)i;
    return 8 + h + ndata;
}

static const char *status_name(qt_status s) {
    static const char *const names[] = {
#define QT_STATUS_NAME(name, msg) #name,
        QT_STATUS_LIST(QT_STATUS_NAME)
#undef QT_STATUS_NAME
    };
    return (unsigned)s < QT_STATUS_COUNT ? names[s] : "?";
}

/* Opening bytes[0..n) must fail with `want`, leave *out NULL, and say `needle` and the
 * path in its message. */
static void expect_fail_bytes(const char *what, const void *bytes, size_t n, qt_status want,
                              const char *needle) {
    char *path = tmp_with(bytes, n);
    qt_safetensors *st = (qt_safetensors *)&st; /* not NULL: open must reset it */
    qt_status s = qt_safetensors_open(path, &st);
    const char *msg = qt_error_message();
    CHECK(s == want, "%s: status %s, expected %s (%s)", what, status_name(s),
          status_name(want), msg);
    CHECK(st == NULL, "%s: *out not NULL after a failed open", what);
    CHECK(strstr(msg, path) != NULL, "%s: message does not name the file: %s", what, msg);
    CHECK(strstr(msg, needle) != NULL, "%s: message lacks \"%s\": %s", what, needle, msg);
    if (s == QT_OK)
        qt_safetensors_close(st);
    unlink(path);
    free(path);
}

static void expect_fail(const char *what, const char *json, size_t ndata, qt_status want,
                        const char *needle) {
    size_t n = make_file(json, ndata);
    expect_fail_bytes(what, file_buf, n, want, needle);
}

static qt_safetensors *expect_ok(const char *what, const char *json, size_t ndata) {
    size_t n = make_file(json, ndata);
    char *path = tmp_with(file_buf, n);
    qt_safetensors *st = NULL;
    qt_status s = qt_safetensors_open(path, &st);
    CHECK(s == QT_OK, "%s: status %s, expected QT_OK (%s)", what, status_name(s),
          qt_error_message());
    unlink(path);
    free(path);
    return s == QT_OK ? st : NULL;
}

static int64_t numel(const qt_st_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= t->shape[d];
    return n;
}

static size_t dsize(qt_dtype t) {
    switch (t) {
    case QT_F32: case QT_I32: return 4;
    case QT_BF16: case QT_F16: return 2;
    case QT_I8: case QT_U8: return 1;
    default: return 0;
    }
}

/* --------------------------------------------------------------- round trip ---- */

static float f32s[6] = {-1.5f, 0.0f, 3.25f, 1e-30f, -7.0f, 65504.0f};
static uint16_t bf16s[4] = {0x3f80, 0xbfc0, 0x7f80, 0x0001};
static uint16_t f16s[4] = {0x3c00, 0xc000, 0x7bff, 0x8000};
static int8_t i8s[6] = {-128, -1, 0, 1, 2, 127};
static uint8_t u8s[5] = {0, 1, 127, 128, 255};
static int32_t scalar_i32 = 123456789;
static float f32_4d[4] = {1, 2, 3, 4};

#define N_RT 9
static qt_st_tensor rt[N_RT] = {
    {"model.layers.0.w", QT_F32, 2, {2, 3}, f32s, sizeof f32s},
    {"w.bf16", QT_BF16, 1, {4}, bf16s, sizeof bf16s},
    {"w.f16", QT_F16, 2, {2, 2}, f16s, sizeof f16s},
    {"q.i8", QT_I8, 3, {3, 1, 2}, i8s, sizeof i8s},
    {"bytes", QT_U8, 1, {5}, u8s, sizeof u8s},
    {"step", QT_I32, 0, {0}, &scalar_i32, sizeof scalar_i32},
    {"x4", QT_F32, 4, {1, 2, 2, 1}, f32_4d, sizeof f32_4d},
    {"empty", QT_U8, 2, {0, 7}, NULL, 0},
    {"odd \"name\" \\ \xc3\xa9\t/", QT_F32, 1, {1}, f32s, 4},
};
static const char *const rt_meta[] = {
    "format", "pt",
    "note", "line1\nline2 \"quoted\" \\ \xc3\xbc \x01",
    "", "empty key",
};

static void check_same(const qt_st_tensor *got, const qt_st_tensor *want) {
    CHECK(got != NULL, "tensor \"%s\" missing", want->name);
    if (!got)
        return;
    CHECK(strcmp(got->name, want->name) == 0, "name \"%s\" vs \"%s\"", got->name, want->name);
    CHECK(got->dtype == want->dtype, "\"%s\": dtype %d vs %d", want->name, got->dtype,
          want->dtype);
    CHECK(got->ndim == want->ndim, "\"%s\": ndim %d vs %d", want->name, got->ndim, want->ndim);
    for (int d = 0; d < want->ndim && d < got->ndim; d++)
        CHECK(got->shape[d] == want->shape[d], "\"%s\": shape[%d] %lld vs %lld", want->name, d,
              (long long)got->shape[d], (long long)want->shape[d]);
    CHECK(got->nbytes == want->nbytes, "\"%s\": nbytes %zu vs %zu", want->name, got->nbytes,
          want->nbytes);
    CHECK(got->data != NULL, "\"%s\": data NULL", want->name);
    if (got->nbytes == want->nbytes && want->nbytes)
        CHECK(memcmp(got->data, want->data, want->nbytes) == 0, "\"%s\": bytes differ",
              want->name);
}

static void test_round_trip(void) {
    char *path = tmp_with("old contents", 12); /* the write must replace it */
    qt_status s = qt_safetensors_write(path, rt, N_RT, rt_meta, 3);
    CHECK(s == QT_OK, "round trip write: %s (%s)", status_name(s), qt_error_message());

    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    CHECK(!exists(tmp), "temporary %s left behind", tmp);

    size_t n = 0;
    unsigned char *raw = slurp(path, &n);
    CHECK(raw && n >= 8, "cannot read back %s", path);
    if (raw && n >= 8) {
        uint64_t h = 0;
        for (int i = 7; i >= 0; i--)
            h = h << 8 | raw[i];
        size_t data = 0;
        for (int i = 0; i < N_RT; i++)
            data += rt[i].nbytes;
        CHECK(h % 8 == 0, "header length %llu not a multiple of 8", (unsigned long long)h);
        CHECK(8 + h + data == n, "file is %zu bytes, expected 8 + %llu + %zu", n,
              (unsigned long long)h, data);
        CHECK(h > 0 && h <= n - 8 && raw[8] == '{', "header does not start with '{'");
        size_t last = 8 + (size_t)h - 1;
        while (last > 8 && raw[last] == ' ')
            last--;
        CHECK(raw[last] == '}', "header padding is not spaces after the closing brace");
    }
    free(raw);

    qt_safetensors *st = NULL;
    s = qt_safetensors_open(path, &st);
    CHECK(s == QT_OK, "round trip open: %s (%s)", status_name(s), qt_error_message());
    if (st) {
        CHECK(qt_safetensors_count(st) == N_RT, "count %d, expected %d",
              qt_safetensors_count(st), N_RT);
        for (int i = 0; i < N_RT && i < qt_safetensors_count(st); i++) {
            check_same(qt_safetensors_at(st, i), &rt[i]); /* file order == given order */
            check_same(qt_safetensors_get(st, rt[i].name), &rt[i]);
        }
        CHECK(qt_safetensors_at(st, -1) == NULL && qt_safetensors_at(st, N_RT) == NULL,
              "at() out of range not NULL");
        CHECK(qt_safetensors_get(st, "nope") == NULL, "get(absent) not NULL");
        CHECK(qt_safetensors_get(st, "w.bf1") == NULL, "get(prefix) not NULL");
        for (int i = 0; i < 3; i++) {
            const char *v = qt_safetensors_meta(st, rt_meta[2 * i]);
            CHECK(v && strcmp(v, rt_meta[2 * i + 1]) == 0, "meta \"%s\" = \"%s\"",
                  rt_meta[2 * i], v ? v : "(null)");
        }
        CHECK(qt_safetensors_meta(st, "absent") == NULL, "meta(absent) not NULL");
        const qt_st_tensor *f = qt_safetensors_at(st, 0);
        CHECK(((uintptr_t)f->data & 63) == 0, "buffer not 64-byte aligned");
        qt_safetensors_close(st);
    }

    /* no tensors, with and without metadata */
    s = qt_safetensors_write(path, NULL, 0, rt_meta, 1);
    CHECK(s == QT_OK, "write of metadata only: %s (%s)", status_name(s), qt_error_message());
    st = NULL;
    s = qt_safetensors_open(path, &st);
    CHECK(s == QT_OK && qt_safetensors_count(st) == 0, "metadata-only file: %s (%s)",
          status_name(s), qt_error_message());
    const char *fmt = st ? qt_safetensors_meta(st, "format") : NULL;
    CHECK(fmt && !strcmp(fmt, "pt"), "metadata-only file lost its metadata");
    qt_safetensors_close(st);
    s = qt_safetensors_write(path, NULL, 0, NULL, 0);
    st = NULL;
    CHECK(s == QT_OK && qt_safetensors_open(path, &st) == QT_OK && qt_safetensors_count(st) == 0,
          "empty file round trip (%s)", qt_error_message());
    qt_safetensors_close(st);

    unlink(path);
    free(path);
}

/* ---------------------------------------------------------- reference file ---- */

static void check_ref(const qt_safetensors *st, const char *name, qt_dtype dtype, int ndim,
                      const int64_t *shape, const void *bytes, size_t nbytes) {
    qt_st_tensor want = {name, dtype, ndim, {0}, bytes, nbytes};
    for (int d = 0; d < ndim; d++)
        want.shape[d] = shape[d];
    check_same(qt_safetensors_get(st, name), &want);
}

static void test_reference(void) {
    const char *path = QT_FIXTURES "/st_reference.safetensors";
    qt_safetensors *st = NULL;
    qt_status s = qt_safetensors_open(path, &st);
    CHECK(s == QT_OK, "reference file: %s (%s)", status_name(s), qt_error_message());
    if (!st)
        return;
    CHECK(qt_safetensors_count(st) == 8, "reference count %d, expected 8",
          qt_safetensors_count(st));
    const char *fmt = qt_safetensors_meta(st, "format"), *note = qt_safetensors_meta(st, "note");
    CHECK(fmt && !strcmp(fmt, "pt"), "reference meta format = %s", fmt ? fmt : "(null)");
    CHECK(note && !strcmp(note, "qtrain fixture"), "reference meta note = %s",
          note ? note : "(null)");

    /* values from gen_safetensors_fixture.py */
    const float w_f32[6] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};
    const uint16_t w_f16[4] = {0x3c00, 0xc000, 0x3800, 0x7bff};
    const uint16_t w_bf16[4] = {0x3f80, 0xbfc0, 0x4049, 0x0000};
    const int32_t ids[5] = {0, -1, 2147483647, -2147483647 - 1, 42};
    const uint8_t u8[4] = {0, 1, 128, 255};
    const int8_t i8[4] = {-128, -1, 0, 127};
    const float scale = 0.25f;
    check_ref(st, "w_f32", QT_F32, 2, (int64_t[]){2, 3}, w_f32, sizeof w_f32);
    check_ref(st, "w_f16", QT_F16, 1, (int64_t[]){4}, w_f16, sizeof w_f16);
    check_ref(st, "w_bf16", QT_BF16, 2, (int64_t[]){2, 2}, w_bf16, sizeof w_bf16);
    check_ref(st, "ids_i32", QT_I32, 1, (int64_t[]){5}, ids, sizeof ids);
    check_ref(st, "bytes_u8", QT_U8, 2, (int64_t[]){2, 2}, u8, sizeof u8);
    check_ref(st, "q_i8_4d", QT_I8, 4, (int64_t[]){1, 2, 1, 2}, i8, sizeof i8);
    check_ref(st, "scale", QT_F32, 0, NULL, &scale, sizeof scale);
    check_ref(st, "empty", QT_F32, 2, (int64_t[]){0, 3}, NULL, 0);

    /* at() walks the buffer in order, each tensor starting where the last one ended */
    for (int i = 1; i < qt_safetensors_count(st); i++) {
        const qt_st_tensor *a = qt_safetensors_at(st, i - 1), *b = qt_safetensors_at(st, i);
        CHECK((const char *)a->data + a->nbytes == (const char *)b->data,
              "reference: \"%s\" does not follow \"%s\" in the buffer", b->name, a->name);
    }
    qt_safetensors_close(st);
}

/* ---------------------------------------------------------------- malformed ---- */

#define T1 "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"

static void test_malformed(void) {
    /* length prefix and file size */
    expect_fail_bytes("5-byte file", "\x01\x00\x00\x00\x00", 5, QT_EFORMAT, "shorter than");
    expect_fail_bytes("empty file", "", 0, QT_EFORMAT, "shorter than");
    size_t n = make_file(T1, 4);
    for (int i = 0; i < 8; i++) /* N one byte past the end of the file */
        file_buf[i] = (unsigned char)((uint64_t)(n - 8 + 1) >> (8 * i));
    expect_fail_bytes("header length past the end", file_buf, n, QT_EFORMAT, "only");
    n = make_file("{}", 0);
    memcpy(file_buf, "\x01\xe1\xf5\x05\x00\x00\x00\x00", 8); /* 100,000,001 */
    expect_fail_bytes("header length above 100 MB", file_buf, n, QT_EFORMAT, "at most 100000000");
    memset(file_buf, 0xff, 8);
    expect_fail_bytes("header length 2^64-1", file_buf, n, QT_EFORMAT, "at most");

    /* the JSON itself */
    expect_fail("empty header", "", 0, QT_EFORMAT, "not valid JSON");
    expect_fail("truncated JSON", "{\"a\": ", 0, QT_EFORMAT, "not valid JSON");
    expect_fail("array header", "[1,2]", 0, QT_EFORMAT, "found an array of 2");
    expect_fail("string header", "\"x\"", 0, QT_EFORMAT, "must be a JSON object");
    expect_fail("number header", "42", 0, QT_EFORMAT, "must be a JSON object");
    expect_fail("trailing garbage", "{} x", 0, QT_EFORMAT, "trailing");
    expect_fail("two objects", "{}{}", 0, QT_EFORMAT, "trailing");
    n = make_file("{}\0\0\0\0\0\0", 0);
    file_buf[0] = 8; /* strlen stopped at the NUL: header is "{}" + 6 NULs */
    memset(file_buf + 10, 0, 6);
    expect_fail_bytes("NUL padding", file_buf, 16, QT_EFORMAT, "control character");
    expect_fail("invalid UTF-8", "{\"\xff\":{}}", 0, QT_EFORMAT, "UTF-8");
    expect_fail("overlong UTF-8", "{\"\xc0\xaf\":{}}", 0, QT_EFORMAT, "UTF-8");
    expect_fail("byte-order mark", "\xef\xbb\xbf{}", 0, QT_EFORMAT, "byte-order mark");
    {
        static char deep[4096];
        memset(deep, '[', 3000);
        deep[3000] = '\0';
        expect_fail("3000 nested arrays", deep, 0, QT_EFORMAT, "not valid JSON");
    }

    /* entries */
    expect_fail("entry not an object", "{\"a\":5}", 0, QT_EFORMAT, "expected an object");
    expect_fail("missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                QT_EFORMAT, "missing \"dtype\"");
    expect_fail("missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4,
                QT_EFORMAT, "missing \"shape\"");
    expect_fail("missing data_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4,
                QT_EFORMAT, "missing \"data_offsets\"");
    expect_fail("dtype not a string",
                "{\"a\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, QT_EFORMAT,
                "\"dtype\" must be a string, found 5");
    expect_fail("shape not an array",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4,
                QT_EFORMAT, "\"shape\" must be an array");
    expect_fail("data_offsets not an array",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}}}", 4, QT_EFORMAT,
                "\"data_offsets\" must be an array");
    expect_fail("unknown dtype",
                "{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                QT_EFORMAT, "unknown dtype \"F33\"");
    expect_fail("F64 tensor",
                "{\"xyz\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
                QT_EDTYPE, "tensor \"xyz\" has dtype F64");
    expect_fail("BOOL tensor",
                "{\"m\":{\"dtype\":\"BOOL\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
                QT_EDTYPE, "dtype BOOL");
    expect_fail("negative dim",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
                QT_EFORMAT, "shape[0] must be a non-negative integer, found -1");
    expect_fail("fractional dim",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1.5],\"data_offsets\":[0,4]}}", 4,
                QT_EFORMAT, "shape[1] must be a non-negative integer, found 1.5");
    expect_fail("string dim",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4,
                QT_EFORMAT, "found string");
    expect_fail("huge dim",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4,
                QT_EFORMAT, "non-negative integer");
    expect_fail("5 dims",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                QT_EFORMAT, "has 5 dims");
    expect_fail("data_offsets of 1",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, QT_EFORMAT,
                "found an array of 1");
    expect_fail("data_offsets of 3",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
                QT_EFORMAT, "found an array of 3");
    expect_fail("begin > end",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4,
                QT_EFORMAT, "begin > end");
    expect_fail("negative offset",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
                QT_EFORMAT, "data_offsets[0] must be a non-negative integer");
    expect_fail("string offset",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", 4,
                QT_EFORMAT, "data_offsets[1]");
    expect_fail("end beyond buffer",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
                QT_EFORMAT, "beyond the 4-byte buffer");
    expect_fail("nbytes != numel * size",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
                QT_EFORMAT, "needs 8 bytes");
    expect_fail("numel overflow",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
                "\"data_offsets\":[0,4]}}", 4, QT_EFORMAT, "overflows");
    expect_fail("dim above 2^53",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],"
                "\"data_offsets\":[0,4]}}", 4, QT_EFORMAT, "non-negative integer"); /* > 2^53 */
    expect_fail("nbytes overflow",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[9007199254740992,1024],"
                "\"data_offsets\":[0,4]}}", 4, QT_EFORMAT, "overflows");

    /* layout of the buffer */
    expect_fail("overlap",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
                QT_EFORMAT, "overlaps");
    expect_fail("same range twice",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                QT_EFORMAT, "overlaps");
    expect_fail("hole",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12,
                QT_EFORMAT, "hole");
    expect_fail("first begin not 0",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
                QT_EFORMAT, "begins at 4, expected 0");
    expect_fail("bytes after the last tensor", T1, 8, QT_EFORMAT, "cover 4 bytes");
    expect_fail("buffer without tensors", "{}", 4, QT_EFORMAT, "cover 0 bytes");

    /* metadata and names */
    expect_fail("metadata not an object", "{\"__metadata__\":5}", 0, QT_EFORMAT,
                "\"__metadata__\" must be an object of strings");
    expect_fail("metadata value not a string", "{\"__metadata__\":{\"k\":\"v\",\"n\":1}}", 0,
                QT_EFORMAT, "__metadata__[\"n\"] must be a string, found 1");
    expect_fail("metadata value null", "{\"__metadata__\":{\"k\":null}}", 0, QT_EFORMAT,
                "found null");
    expect_fail("duplicate metadata key", "{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", 0,
                QT_EFORMAT, "key \"k\" appears more than once");
    expect_fail("two __metadata__", "{\"__metadata__\":{},\"__metadata__\":{}}", 0,
                QT_EFORMAT, "\"__metadata__\" appears more than once");
    expect_fail("duplicate tensor name",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
                QT_EFORMAT, "name \"a\" appears more than once");

    /* unreadable */
    qt_safetensors *st = (qt_safetensors *)&st;
    qt_status s = qt_safetensors_open("/nonexistent/qt_st.safetensors", &st);
    CHECK(s == QT_EIO && st == NULL, "missing file: %s", status_name(s));
    CHECK(strstr(qt_error_message(), "/nonexistent/qt_st.safetensors") != NULL,
          "missing file: message lacks the path: %s", qt_error_message());
    s = qt_safetensors_open("/tmp", &st);
    CHECK(s == QT_EIO && st == NULL, "directory: %s", status_name(s));
    CHECK(qt_safetensors_open(NULL, &st) == QT_EINVAL, "NULL path");
    CHECK(qt_safetensors_open("/tmp", NULL) == QT_EINVAL, "NULL out");

    /* valid corner cases */
    st = expect_ok("empty object", "{}", 0);
    CHECK(!st || qt_safetensors_count(st) == 0, "empty object has tensors");
    qt_safetensors_close(st);
    qt_safetensors_close(expect_ok("whitespace around", " \n{}   ", 0));
    qt_safetensors_close(expect_ok("unknown key in an entry",
                                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":"
                                   "[0,4],\"extra\":[1,2]}}", 4));
    st = expect_ok("empty tensors sharing offsets",
                   "{\"z2\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,4]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"z1\":{\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\":[4,4]},"
                   "\"z0\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[0,0]}}", 4);
    if (st) {
        const char *order[] = {"z0", "b", "z2", "z1"}; /* by offset, then JSON order */
        for (int i = 0; i < 4; i++) {
            const qt_st_tensor *t = qt_safetensors_at(st, i);
            CHECK(t && !strcmp(t->name, order[i]), "position %d is %s, expected %s", i,
                  t ? t->name : "(null)", order[i]);
        }
        qt_safetensors_close(st);
    }
}

/* ---------------------------------------------- truncation and mutation ---- */

/* A successful open of a corrupted file must still hand out consistent tensors; touch
 * every byte so that ASan sees any pointer past the buffer. */
static void walk(const qt_safetensors *st, const char *what) {
    unsigned sum = 0;
    for (int i = 0; i < qt_safetensors_count(st); i++) {
        const qt_st_tensor *t = qt_safetensors_at(st, i);
        CHECK(t && t->name && t->ndim >= 0 && t->ndim <= QT_MAX_DIMS && t->data,
              "%s: tensor %d inconsistent", what, i);
        if (!t || !t->name || !t->data)
            continue;
        CHECK((size_t)numel(t) * dsize(t->dtype) == t->nbytes, "%s: \"%s\" nbytes %zu", what,
              t->name, t->nbytes);
        CHECK(qt_safetensors_get(st, t->name) == t, "%s: get(\"%s\") != at(%d)", what,
              t->name, i);
        for (size_t k = 0; k < t->nbytes; k++)
            sum += ((const unsigned char *)t->data)[k];
    }
    (void)qt_safetensors_meta(st, "format");
    (void)sum;
}

static void test_truncations(const char *what, const unsigned char *bytes, size_t n) {
    char *path = tmp_with(bytes, 0);
    int bad = 0;
    for (size_t len = 0; len <= n; len++) {
        overwrite(path, bytes, len);
        qt_safetensors *st = NULL;
        qt_status s = qt_safetensors_open(path, &st);
        if (len == n) {
            CHECK(s == QT_OK, "%s: full file: %s (%s)", what, status_name(s), qt_error_message());
        } else if (!(s == QT_EFORMAT || s == QT_EIO) || st != NULL) {
            bad++;
            CHECK(false, "%s truncated to %zu of %zu bytes: %s", what, len, n, status_name(s));
        }
        if (st)
            walk(st, what);
        qt_safetensors_close(st);
    }
    if (!bad)
        n_pass++;
    unlink(path);
    free(path);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void) /* xorshift64* */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static void test_mutations(const char *what, const unsigned char *bytes, size_t n, int count) {
    static const char json_chars[] = "{}[]\",:0123456789-.eE \\u\xff\x00";
    unsigned char *m = malloc(n);
    char *path = tmp_with(bytes, 0);
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--)
        h = h << 8 | bytes[i];
    int opened = 0, bad = 0;
    for (int it = 0; it < count; it++) {
        memcpy(m, bytes, n);
        int edits = 1 + (int)(rng() % 4);
        for (int e = 0; e < edits; e++) {
            uint64_t r = rng();
            switch (r % 4) {
            case 0: /* a bit anywhere */
                m[(r >> 8) % n] ^= (unsigned char)(1u << ((r >> 40) % 8));
                break;
            case 1: /* a JSON-significant character in the header */
                m[8 + (r >> 8) % h] =
                    (unsigned char)json_chars[(r >> 40) % (sizeof json_chars - 1)];
                break;
            case 2: /* a digit in the header: shapes and offsets */
                m[8 + (r >> 8) % h] = (unsigned char)('0' + (r >> 40) % 10);
                break;
            default: /* the length prefix */
                m[(r >> 8) % 8] ^= (unsigned char)(r >> 40);
                break;
            }
        }
        overwrite(path, m, n);
        qt_safetensors *st = NULL;
        qt_status s = qt_safetensors_open(path, &st);
        if (s == QT_OK) {
            opened++;
            walk(st, what);
        } else if (!(s == QT_EFORMAT || s == QT_EDTYPE) || st != NULL) {
            bad++;
            CHECK(false, "%s mutation %d: %s (%s)", what, it, status_name(s), qt_error_message());
        }
        qt_safetensors_close(st);
    }
    if (!bad)
        n_pass++;
    printf("%s: %d mutations, %d still opened\n", what, count, opened);
    unlink(path);
    free(path);
    free(m);
}

static void test_corruption(void) {
    char *path = tmp_with("", 0);
    CHECK(qt_safetensors_write(path, rt, N_RT, rt_meta, 3) == QT_OK, "write: %s",
          qt_error_message());
    size_t n = 0;
    unsigned char *own = slurp(path, &n);
    unlink(path);
    free(path);
    if (own) {
        test_truncations("round-trip file", own, n);
        test_mutations("round-trip file", own, n, 400);
    }
    free(own);

    unsigned char *ref = slurp(QT_FIXTURES "/st_reference.safetensors", &n);
    CHECK(ref != NULL, "cannot read the reference fixture");
    if (ref) {
        test_truncations("reference file", ref, n);
        test_mutations("reference file", ref, n, 400);
    }
    free(ref);
}

/* ------------------------------------------------------------ write errors ---- */

static void expect_write_einval(const char *what, const qt_st_tensor *t, int n,
                                const char *const *meta, int n_meta, const char *needle) {
    char dir[] = "/tmp/qt_st_dir_XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(2);
    }
    char path[256], tmp[300];
    snprintf(path, sizeof path, "%s/out.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    qt_status s = qt_safetensors_write(path, t, n, meta, n_meta);
    CHECK(s == QT_EINVAL, "%s: status %s, expected QT_EINVAL (%s)", what, status_name(s),
          qt_error_message());
    CHECK(strstr(qt_error_message(), needle) != NULL, "%s: message lacks \"%s\": %s", what,
          needle, qt_error_message());
    CHECK(!exists(path) && !exists(tmp), "%s: a file was written", what);
    unlink(path);
    unlink(tmp);
    rmdir(dir);
}

static void test_write_errors(void) {
    float x[2] = {1, 2};
    qt_st_tensor two[2] = {
        {"a", QT_F32, 1, {2}, x, 8},
        {"a", QT_F32, 1, {2}, x, 8},
    };
    expect_write_einval("duplicate names", two, 2, NULL, 0, "appears more than once");
    two[1].name = "__metadata__";
    expect_write_einval("reserved name", two, 2, NULL, 0, "reserves");
    qt_st_tensor t = {"a", QT_F32, 1, {3}, x, 8};
    expect_write_einval("nbytes mismatch", &t, 1, NULL, 0, "is 12 bytes, but nbytes is 8");
    t = (qt_st_tensor){"a", QT_F32, 5, {1, 1, 1, 1}, x, 4};
    expect_write_einval("5 dims", &t, 1, NULL, 0, "ndim 5");
    t = (qt_st_tensor){"a", QT_F32, 1, {-2}, x, 8};
    expect_write_einval("negative dim", &t, 1, NULL, 0, "non-negative");
    t = (qt_st_tensor){"a", (qt_dtype)99, 1, {2}, x, 8};
    expect_write_einval("bad dtype", &t, 1, NULL, 0, "dtype 99");
    t = (qt_st_tensor){"a", QT_F32, 1, {2}, NULL, 8};
    expect_write_einval("no data", &t, 1, NULL, 0, "no data");
    t = (qt_st_tensor){"\xff", QT_F32, 1, {2}, x, 8};
    expect_write_einval("invalid UTF-8 name", &t, 1, NULL, 0, "UTF-8");
    t = (qt_st_tensor){NULL, QT_F32, 1, {2}, x, 8};
    expect_write_einval("NULL name", &t, 1, NULL, 0, "no name");
    const char *dup_meta[] = {"k", "v", "k", "w"};
    t = (qt_st_tensor){"a", QT_F32, 1, {2}, x, 8};
    expect_write_einval("duplicate meta key", &t, 1, dup_meta, 2, "metadata key \"k\"");
    const char *null_meta[] = {"k", NULL};
    expect_write_einval("NULL meta value", &t, 1, null_meta, 1, "is NULL");
    CHECK(qt_safetensors_write(NULL, &t, 1, NULL, 0) == QT_EINVAL, "NULL path");

    /* a directory that does not exist: QT_EIO, nothing created */
    char path[256], tmp[300];
    snprintf(path, sizeof path, "/tmp/qt_st_no_such_dir_%ld/out.safetensors", (long)getpid());
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    qt_status s = qt_safetensors_write(path, &t, 1, NULL, 0);
    CHECK(s == QT_EIO, "missing directory: status %s, expected QT_EIO", status_name(s));
    CHECK(strstr(qt_error_message(), path) != NULL, "missing directory: message lacks the "
          "path: %s", qt_error_message());
    CHECK(!exists(path) && !exists(tmp), "missing directory: a file was left behind");

    /* rename over a directory fails after the temporary was written: it must go */
    char dir[] = "/tmp/qt_st_target_XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(2);
    }
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dir, (long)getpid());
    s = qt_safetensors_write(dir, &t, 1, NULL, 0);
    CHECK(s == QT_EIO, "rename over a directory: status %s, expected QT_EIO", status_name(s));
    CHECK(!exists(tmp), "rename over a directory: temporary %s left behind", tmp);
    unlink(tmp);
    rmdir(dir);
}

/* ------------------------------------------------------------ atomic file ---- */

/* Entries of dir whose name holds ".tmp." (a temporary left behind). */
static int count_temporaries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

static bool file_is(const char *path, const void *want, size_t n) {
    size_t got_n = 0;
    unsigned char *got = slurp(path, &got_n);
    bool same = got && got_n == n && memcmp(got, want, n) == 0;
    free(got);
    return same;
}

static void test_atomic_file(void) {
    char dir[] = "/tmp/qt_af_dir_XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(2);
    }
    char path[256], tmp[300];
    snprintf(path, sizeof path, "%s/out.bin", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());

    /* commit: the bytes of every write, in order, appear at path only at commit */
    qt_atomic_file f;
    qt_status s = qt_atomic_file_open(&f, path);
    CHECK(s == QT_OK, "open: %s", qt_error_message());
    CHECK(exists(tmp) && !exists(path), "open: expected only the temporary %s", tmp);
    CHECK(qt_atomic_file_write(&f, "hello, ", 7) == QT_OK, "write 1: %s", qt_error_message());
    CHECK(qt_atomic_file_write(&f, NULL, 0) == QT_OK, "write of 0 bytes from NULL");
    CHECK(qt_atomic_file_write(&f, "world", 5) == QT_OK, "write 2: %s", qt_error_message());
    CHECK(!exists(path), "path exists before commit");
    s = qt_atomic_file_commit(&f);
    CHECK(s == QT_OK, "commit: %s", qt_error_message());
    CHECK(file_is(path, "hello, world", 12), "commit: %s does not hold the bytes written",
          path);
    CHECK(!exists(tmp), "commit: temporary %s left behind", tmp);
    CHECK(f.tmp == NULL && f.path == NULL && f.fd == -1, "commit: f still owns something");
    CHECK(qt_atomic_file_commit(&f) == QT_ESTATE, "a second commit is not QT_ESTATE");
    qt_atomic_file_abort(&f); /* harmless after commit */
    CHECK(file_is(path, "hello, world", 12), "abort after commit touched %s", path);

    /* commit over an existing, longer file replaces it whole */
    qt_atomic_file_open(&f, path);
    qt_atomic_file_write(&f, "bye", 3);
    s = qt_atomic_file_commit(&f);
    CHECK(s == QT_OK && file_is(path, "bye", 3), "commit over an old file: %s (%s)",
          status_name(s), qt_error_message());

    /* abort: the temporary goes, the old file stays as it was */
    s = qt_atomic_file_open(&f, path);
    CHECK(s == QT_OK, "open for abort: %s", qt_error_message());
    qt_atomic_file_write(&f, "not this", 8);
    qt_atomic_file_abort(&f);
    CHECK(!exists(tmp), "abort: temporary %s left behind", tmp);
    CHECK(file_is(path, "bye", 3), "abort changed %s", path);
    qt_atomic_file_abort(&f); /* twice is harmless */
    s = qt_atomic_file_write(&f, "x", 1);
    CHECK(s == QT_ESTATE, "write after abort: status %s, expected QT_ESTATE", status_name(s));
    unlink(path);

    /* abort before anything was written: nothing at all is left */
    char fresh[256];
    snprintf(fresh, sizeof fresh, "%s/never.bin", dir);
    qt_atomic_file_open(&f, fresh);
    qt_atomic_file_abort(&f);
    CHECK(!exists(fresh), "abort: %s exists", fresh);

    /* a zeroed struct owns nothing: abort must not close fd 0 */
    qt_atomic_file z = {0};
    qt_atomic_file_abort(&z);
    CHECK(fcntl(0, F_GETFD) != -1 || errno != EBADF, "abort of a zeroed struct closed fd 0");
    CHECK(qt_atomic_file_commit(&z) == QT_ESTATE, "commit of a zeroed struct");

    /* open in a missing directory: QT_EIO naming the path and the errno text; sticky */
    char missing[256];
    snprintf(missing, sizeof missing, "%s/no_such_dir/out.bin", dir);
    s = qt_atomic_file_open(&f, missing);
    CHECK(s == QT_EIO, "missing directory: status %s, expected QT_EIO", status_name(s));
    CHECK(strstr(qt_error_message(), missing) != NULL, "missing directory: message lacks "
          "the path: %s", qt_error_message());
    CHECK(strstr(qt_error_message(), strerror(ENOENT)) != NULL, "missing directory: message "
          "lacks \"%s\": %s", strerror(ENOENT), qt_error_message());
    CHECK(f.status == QT_EIO && f.tmp == NULL && f.fd == -1, "failed open: f not reset");
    CHECK(qt_atomic_file_write(&f, "x", 1) == QT_EIO, "write after a failed open");
    CHECK(qt_atomic_file_commit(&f) == QT_EIO, "commit after a failed open");
    CHECK(strstr(qt_error_message(), missing) != NULL, "commit replaced the open's message: "
          "%s", qt_error_message());

    /* a failing write (the file size limit: first a short write, then EFBIG) is sticky,
     * and commit reports it and removes the temporary */
    struct rlimit old_lim;
    if (getrlimit(RLIMIT_FSIZE, &old_lim) == 0) {
        void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
        struct rlimit lim = old_lim;
        lim.rlim_cur = 4;
        s = qt_atomic_file_open(&f, path);
        CHECK(s == QT_OK, "open for the size limit: %s", qt_error_message());
        if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
            s = qt_atomic_file_write(&f, "0123456789abcdef", 16);
            setrlimit(RLIMIT_FSIZE, &old_lim);
            CHECK(s == QT_EIO, "write past the size limit: status %s, expected QT_EIO",
                  status_name(s));
            CHECK(strstr(qt_error_message(), tmp) != NULL &&
                  strstr(qt_error_message(), strerror(EFBIG)) != NULL,
                  "write past the size limit: message lacks the temporary or \"%s\": %s",
                  strerror(EFBIG), qt_error_message());
            CHECK(qt_atomic_file_write(&f, "x", 1) == QT_EIO, "write error is not sticky");
            CHECK(qt_atomic_file_commit(&f) == QT_EIO, "commit after a failed write");
            CHECK(!exists(path) && !exists(tmp), "failed write: a file was left behind");
        } else {
            qt_atomic_file_abort(&f);
        }
        signal(SIGXFSZ, old_sig);
    }

    CHECK(qt_atomic_file_open(NULL, path) == QT_EINVAL, "open of a NULL file");
    CHECK(qt_atomic_file_open(&f, NULL) == QT_EINVAL && f.tmp == NULL, "open of a NULL path");
    CHECK(count_temporaries(dir) == 0, "temporaries left in %s", dir);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    test_round_trip();
    test_reference();
    test_malformed();
    test_corruption();
    test_write_errors();
    test_atomic_file();
    printf("test_safetensors: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
