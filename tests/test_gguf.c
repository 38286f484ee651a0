/*
 * test_gguf.c - the GGUF reader (formats/gguf.c) and the ggml block dequantizers
 * (formats/gguf_blocks.c).
 *
 *   - a file written by the reference writer (fixtures/gguf_reference.gguf, from
 *     fixtures/gen_gguf_fixture.py with gguf-py's GGUFWriter): every metadata value of
 *     every type, typed-getter errors, every tensor's name, dims, type, offset and size;
 *   - dequantization of every tensor against gguf-py's dequantize() output
 *     (fixtures/gguf_expected.safetensors), compared BIT FOR BIT for every type (F32,
 *     F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K): each value
 *     is one or two correctly rounded f32 products (and one subtraction) done in the same
 *     order as numpy, so no tolerance is needed and none is allowed;
 *   - dequantizer argument errors;
 *   - malformed inputs built here, one per validation rule, each checked for its status
 *     and for a message naming the file and the rule;
 *   - the writer: re-encoding the reference file through qt_gguf_writer reproduces
 *     gguf-py's bytes exactly (so gguf-py and llama.cpp read what it writes); a round
 *     trip of every setter; argument errors (sticky, nothing written); I/O errors
 *     (nothing left behind);
 *   - every truncation of a small valid file, and a few hundred random mutations of it
 *     and of the reference file, which must open or fail with a status, never crash
 *     (this test also runs under AddressSanitizer + UBSan).
 *
 * Prints a line per failed check and exits non-zero if any failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qt_formats.h"
#include "testutil.h"

/* ---------------------------------------------------------------- helpers ---- */

static const char *status_name(qt_status s) {
    static const char *const names[] = {
#define QT_STATUS_NAME(name, msg) #name,
        QT_STATUS_LIST(QT_STATUS_NAME)
#undef QT_STATUS_NAME
    };
    return (unsigned)s < QT_STATUS_COUNT ? names[s] : "?";
}

/* A fresh file under /tmp holding bytes[0..n); the caller unlinks and frees it. */
static char *tmp_with(const void *bytes, size_t n) {
    char tmpl[] = "/tmp/qt_gguf_test_XXXXXX";
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

static uint32_t f2u(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

/* ------------------------------------------------------- reference file ---- */

#define REF_GGUF QT_FIXTURES "/gguf_reference.gguf"
#define REF_EXPECTED QT_FIXTURES "/gguf_expected.safetensors"

static void check_metadata(const qt_gguf *g) {
    CHECK(qt_gguf_version(g) == 3, "version %u", qt_gguf_version(g));
    CHECK(qt_gguf_alignment(g) == 64, "alignment %u", qt_gguf_alignment(g));
    CHECK(qt_gguf_data_offset(g) % 64 == 0, "data offset %llu",
          (unsigned long long)qt_gguf_data_offset(g));
    /* general.architecture, general.alignment and 22 test.* keys */
    CHECK(qt_gguf_kv_count(g) == 24, "kv count %lld", (long long)qt_gguf_kv_count(g));
    CHECK(qt_gguf_key_at(g, 0) && strcmp(qt_gguf_key_at(g, 0), "general.architecture") == 0,
          "first key %s", qt_gguf_key_at(g, 0) ? qt_gguf_key_at(g, 0) : "NULL");
    CHECK(qt_gguf_key_at(g, 24) == NULL && qt_gguf_key_at(g, -1) == NULL, "key_at range");
    CHECK(qt_gguf_kv_type(g, 24) == QT_GGUF_TYPE_COUNT, "kv_type range");
    int64_t i = qt_gguf_find_key(g, "test.u16");
    CHECK(i >= 0 && strcmp(qt_gguf_key_at(g, i), "test.u16") == 0 &&
          qt_gguf_kv_type(g, i) == QT_GGUF_U16, "find_key test.u16 -> %lld", (long long)i);
    CHECK(qt_gguf_find_key(g, "test.nope") == -1, "find_key of an absent key");

    const char *s = NULL;
    size_t len = 0;
    CHECK(qt_gguf_get_str(g, "general.architecture", &s, &len) == QT_OK && len == 5 &&
          strcmp(s, "llama") == 0, "general.architecture");
    uint32_t u32 = 0;
    CHECK(qt_gguf_get_u32(g, "general.alignment", &u32) == QT_OK && u32 == 64, "alignment kv");

    uint8_t u8 = 0;
    int8_t i8 = 0;
    uint16_t u16 = 0;
    int16_t i16 = 0;
    int32_t i32 = 0;
    uint64_t u64 = 0;
    int64_t i64 = 0;
    float f32 = 0;
    double f64 = 0;
    bool b = false;
    CHECK(qt_gguf_get_u8(g, "test.u8", &u8) == QT_OK && u8 == 255, "u8 %u", u8);
    CHECK(qt_gguf_get_i8(g, "test.i8", &i8) == QT_OK && i8 == -128, "i8 %d", i8);
    CHECK(qt_gguf_get_u16(g, "test.u16", &u16) == QT_OK && u16 == 65535, "u16 %u", u16);
    CHECK(qt_gguf_get_i16(g, "test.i16", &i16) == QT_OK && i16 == -32768, "i16 %d", i16);
    CHECK(qt_gguf_get_u32(g, "test.u32", &u32) == QT_OK && u32 == 4294967295u, "u32 %u", u32);
    CHECK(qt_gguf_get_i32(g, "test.i32", &i32) == QT_OK && i32 == INT32_MIN, "i32 %d", i32);
    CHECK(qt_gguf_get_u64(g, "test.u64", &u64) == QT_OK && u64 == UINT64_MAX, "u64");
    CHECK(qt_gguf_get_i64(g, "test.i64", &i64) == QT_OK && i64 == INT64_MIN, "i64");
    CHECK(qt_gguf_get_f32(g, "test.f32", &f32) == QT_OK && f32 == 0.1f, "f32 %.9g", f32);
    CHECK(qt_gguf_get_f64(g, "test.f64", &f64) == QT_OK && f64 == -1.0e300, "f64 %g", f64);
    CHECK(qt_gguf_get_bool(g, "test.bool_true", &b) == QT_OK && b, "bool_true");
    CHECK(qt_gguf_get_bool(g, "test.bool_false", &b) == QT_OK && !b, "bool_false");
    CHECK(qt_gguf_get_str(g, "test.string", &s, &len) == QT_OK && len == 10 &&
          strcmp(s, "h\xc3\xa9llo \xe2\x9c\x93") == 0, "string \"%s\" (%zu)", s, len);
    CHECK(qt_gguf_get_str(g, "test.empty_string", &s, &len) == QT_OK && len == 0 &&
          s && s[0] == '\0', "empty string");

    /* typed getters refuse other types and absent keys, naming file, key and types */
    qt_status st = qt_gguf_get_u32(g, "test.i32", &u32);
    const char *msg = qt_error_message();
    CHECK(st == QT_EFORMAT && strstr(msg, REF_GGUF) && strstr(msg, "test.i32") &&
          strstr(msg, "is a i32, expected a u32"), "wrong type: %s %s", status_name(st), msg);
    st = qt_gguf_get_str(g, "test.arr_str", &s, NULL);
    msg = qt_error_message();
    CHECK(st == QT_EFORMAT && strstr(msg, "array of 4 string"), "array as string: %s", msg);
    st = qt_gguf_get_f32(g, "test.missing", &f32);
    msg = qt_error_message();
    CHECK(st == QT_EFORMAT && strstr(msg, "test.missing") && strstr(msg, "not found"),
          "missing key: %s %s", status_name(st), msg);
    CHECK(qt_gguf_get_u8(g, NULL, &u8) == QT_EINVAL, "NULL key");
    CHECK(qt_gguf_get_u8(NULL, "test.u8", &u8) == QT_EINVAL, "NULL file");

    /* arrays */
    qt_gguf_type et = QT_GGUF_TYPE_COUNT;
    uint64_t count = 0;
    const void *data = NULL;
    CHECK(qt_gguf_get_arr(g, "test.arr_str", &et, &count, &data) == QT_OK &&
          et == QT_GGUF_STRING && count == 4 && data == NULL, "arr_str");
    static const char *const strs[] = {"a", "", "\xc3\xbc", "two words"};
    for (uint64_t k = 0; k < 4; k++) {
        CHECK(qt_gguf_get_arr_str(g, "test.arr_str", k, &s, &len) == QT_OK &&
              strcmp(s, strs[k]) == 0 && len == strlen(strs[k]), "arr_str[%llu]",
              (unsigned long long)k);
    }
    CHECK(qt_gguf_get_arr_str(g, "test.arr_str", 4, &s, &len) == QT_EINVAL, "arr_str[4]");
    CHECK(qt_gguf_get_arr_str(g, "test.arr_i32", 0, &s, &len) == QT_EFORMAT,
          "arr_str on an i32 array");
    CHECK(qt_gguf_get_arr(g, "test.u8", &et, &count, &data) == QT_EFORMAT, "arr of a scalar");

    CHECK(qt_gguf_get_arr(g, "test.arr_i32", &et, &count, &data) == QT_OK &&
          et == QT_GGUF_I32 && count == 3, "arr_i32");
    const int32_t *ai = data;
    CHECK(ai[0] == 1 && ai[1] == -2 && ai[2] == INT32_MAX, "arr_i32 values");
    CHECK(qt_gguf_get_arr(g, "test.arr_f32", &et, &count, &data) == QT_OK &&
          et == QT_GGUF_F32 && count == 3, "arr_f32");
    const float *af = data;
    CHECK(af[0] == 0.5f && af[1] == -1.25f && af[2] == 3.0e38f, "arr_f32 values");
    CHECK(qt_gguf_get_arr(g, "test.arr_u8", &et, &count, &data) == QT_OK &&
          et == QT_GGUF_U8 && count == 3, "arr_u8");
    const uint8_t *au8 = data;
    CHECK(au8[0] == 0 && au8[1] == 7 && au8[2] == 255, "arr_u8 values");
    CHECK(qt_gguf_get_arr(g, "test.arr_bool", &et, &count, &data) == QT_OK &&
          et == QT_GGUF_BOOL && count == 3, "arr_bool");
    const uint8_t *ab = data;
    CHECK(ab[0] == 1 && ab[1] == 0 && ab[2] == 1, "arr_bool values");
    CHECK(qt_gguf_get_arr(g, "test.arr_u64", &et, &count, &data) == QT_OK &&
          et == QT_GGUF_U64 && count == 2, "arr_u64");
    const uint64_t *au64 = data;
    CHECK(au64[0] == 0 && au64[1] == UINT64_MAX, "arr_u64 values");
    CHECK(qt_gguf_get_arr(g, "test.arr_i16", &et, &count, &data) == QT_OK &&
          et == QT_GGUF_I16 && count == 2, "arr_i16");
    const int16_t *ai16 = data;
    CHECK(ai16[0] == -1 && ai16[1] == 300, "arr_i16 values");
    CHECK(qt_gguf_get_arr(g, "test.arr_f64", &et, &count, &data) == QT_OK &&
          et == QT_GGUF_F64 && count == 2, "arr_f64");
    const double *ad = data;
    CHECK(ad[0] == 2.5 && ad[1] == 0.0 && (f2u((float)ad[1]) >> 31) == 1, "arr_f64 values");
}

static const struct {
    const char *name;
    qt_ggml_type type;
    int n_dims;
    int64_t ne[4];
} ref_tensors[] = {
    {"f32_2d", QT_GGML_F32, 2, {8, 3, 1, 1}},    {"f32_4d", QT_GGML_F32, 4, {4, 3, 1, 2}},
    {"f16", QT_GGML_F16, 2, {16, 4, 1, 1}},      {"bf16", QT_GGML_BF16, 2, {32, 2, 1, 1}},
    {"q4_0", QT_GGML_Q4_0, 2, {64, 4, 1, 1}},    {"q4_1", QT_GGML_Q4_1, 2, {64, 4, 1, 1}},
    {"q5_0", QT_GGML_Q5_0, 2, {64, 4, 1, 1}},    {"q5_1", QT_GGML_Q5_1, 2, {64, 4, 1, 1}},
    {"q8_0", QT_GGML_Q8_0, 2, {64, 4, 1, 1}},    {"q8_0_3d", QT_GGML_Q8_0, 3, {32, 3, 2, 1}},
    {"q2_k", QT_GGML_Q2_K, 2, {512, 2, 1, 1}},   {"q3_k", QT_GGML_Q3_K, 2, {512, 2, 1, 1}},
    {"q4_k", QT_GGML_Q4_K, 2, {512, 2, 1, 1}},   {"q5_k", QT_GGML_Q5_K, 2, {512, 2, 1, 1}},
    {"q6_k", QT_GGML_Q6_K, 2, {512, 2, 1, 1}},   {"iq4_nl", QT_GGML_IQ4_NL, 2, {512, 2, 1, 1}},
    {"iq4_xs", QT_GGML_IQ4_XS, 2, {512, 2, 1, 1}},
};
#define N_REF ((int)(sizeof ref_tensors / sizeof *ref_tensors))

static void check_tensors(const qt_gguf *g, const qt_safetensors *exp) {
    CHECK(qt_gguf_tensor_count(g) == N_REF, "tensor count %lld",
          (long long)qt_gguf_tensor_count(g));
    CHECK(qt_gguf_tensor_at(g, N_REF) == NULL && qt_gguf_tensor_at(g, -1) == NULL,
          "tensor_at range");
    CHECK(qt_gguf_tensor_get(g, "nope") == NULL && qt_gguf_tensor_get(g, NULL) == NULL,
          "tensor_get of an absent name");
    uint64_t expect_offset = 0;
    bool seen[QT_GGML_TYPE_LIMIT] = {false};
    for (int i = 0; i < N_REF && i < qt_gguf_tensor_count(g); i++) {
        const qt_gguf_tensor *t = qt_gguf_tensor_at(g, i);
        const char *name = ref_tensors[i].name;
        CHECK(strcmp(t->name, name) == 0, "tensor %d is \"%s\", expected \"%s\"", i, t->name,
              name);
        CHECK(qt_gguf_tensor_get(g, name) == t, "tensor_get(\"%s\")", name);
        CHECK(t->type == ref_tensors[i].type, "%s: type %s", name, qt_ggml_type_name(t->type));
        CHECK(t->n_dims == ref_tensors[i].n_dims, "%s: n_dims %d", name, t->n_dims);
        int64_t numel = 1;
        for (int d = 0; d < 4; d++) {
            CHECK(t->ne[d] == ref_tensors[i].ne[d], "%s: ne[%d] = %lld, expected %lld", name,
                  d, (long long)t->ne[d], (long long)ref_tensors[i].ne[d]);
            numel *= t->ne[d];
        }
        CHECK(t->nbytes == qt_ggml_nbytes(t->type, numel), "%s: nbytes %zu", name, t->nbytes);
        CHECK(t->offset == expect_offset, "%s: offset %llu, expected %llu", name,
              (unsigned long long)t->offset, (unsigned long long)expect_offset);
        expect_offset = (t->offset + t->nbytes + 63) / 64 * 64;
        CHECK((uintptr_t)t->data % 64 == 0, "%s: data not 64-byte aligned", name);

        /* dequantized values: bit for bit what gguf-py computes */
        const qt_st_tensor *e = qt_safetensors_get(exp, name);
        CHECK(e && e->dtype == QT_F32 && e->nbytes == (size_t)numel * 4,
              "%s: expected values missing or of another size", name);
        if (!e || e->nbytes != (size_t)numel * 4)
            continue;
        /* shape: safetensors (outer..inner) is ne reversed */
        bool shape_ok = e->ndim == t->n_dims;
        for (int d = 0; shape_ok && d < t->n_dims; d++)
            shape_ok = e->shape[d] == t->ne[t->n_dims - 1 - d];
        CHECK(shape_ok, "%s: expected shape differs from ne", name);
        float *y = malloc((size_t)numel * sizeof *y);
        qt_status s = qt_ggml_dequantize(t->type, t->data, y, numel);
        CHECK(s == QT_OK, "%s: dequantize: %s", name, qt_error_message());
        int64_t bad = 0, first = -1;
        for (int64_t k = 0; k < numel; k++) {
            float want;
            memcpy(&want, (const unsigned char *)e->data + 4 * k, 4);
            if (f2u(y[k]) != f2u(want) && bad++ == 0)
                first = k;
        }
        if (first >= 0) {
            float want;
            memcpy(&want, (const unsigned char *)e->data + 4 * first, 4);
            CHECK(bad == 0, "%s: %lld of %lld values differ from gguf-py, first at %lld: "
                  "%.9g (%08x) vs %.9g (%08x)", name, (long long)bad, (long long)numel,
                  (long long)first, y[first], f2u(y[first]), want, f2u(want));
        } else {
            CHECK(true, "ok");
        }
        seen[t->type] = true;
        /* blocks are read byte by byte: a source at an odd address gives the same bits */
        unsigned char *odd = malloc(t->nbytes + 1);
        float *y2 = malloc((size_t)numel * sizeof *y2);
        memcpy(odd + 1, t->data, t->nbytes);
        CHECK(qt_ggml_dequantize(t->type, odd + 1, y2, numel) == QT_OK &&
              memcmp(y, y2, (size_t)numel * sizeof *y) == 0, "%s: unaligned source differs",
              name);
        free(odd);
        free(y2);
        free(y);
    }
    for (int ty = 0; ty < QT_GGML_TYPE_LIMIT; ty++)
        if (qt_ggml_can_dequantize((qt_ggml_type)ty))
            CHECK(seen[ty], "type %s has no reference tensor", qt_ggml_type_name(ty));
}

static void test_reference(void) {
    qt_gguf *g = NULL;
    qt_status s = qt_gguf_open(REF_GGUF, &g);
    CHECK(s == QT_OK && g, "open %s: %s", REF_GGUF, qt_error_message());
    qt_safetensors *exp = NULL;
    qt_status s2 = qt_safetensors_open(REF_EXPECTED, &exp);
    CHECK(s2 == QT_OK && exp, "open %s: %s", REF_EXPECTED, qt_error_message());
    if (g)
        check_metadata(g);
    if (g && exp)
        check_tensors(g, exp);
    qt_safetensors_close(exp);
    qt_gguf_close(g);
}

/* ------------------------------------------------------- dequantizer API ---- */

static void test_dequantize_api(void) {
    unsigned char blk[256] = {0};
    float y[256];
    CHECK(qt_ggml_dequantize(QT_GGML_Q4_0, blk, y, 16) == QT_EINVAL, "Q4_0 n=16");
    CHECK(strstr(qt_error_message(), "block size 32") != NULL, "message: %s",
          qt_error_message());
    CHECK(qt_ggml_dequantize(QT_GGML_Q6_K, blk, y, 32) == QT_EINVAL, "Q6_K n=32");
    CHECK(qt_ggml_dequantize(QT_GGML_F32, blk, y, -1) == QT_EINVAL, "n=-1");
    CHECK(qt_ggml_dequantize(QT_GGML_Q8_0, NULL, y, 32) == QT_EINVAL, "NULL src");
    CHECK(qt_ggml_dequantize(QT_GGML_Q8_0, blk, NULL, 32) == QT_EINVAL, "NULL dst");
    CHECK(qt_ggml_dequantize(QT_GGML_Q8_0, NULL, NULL, 0) == QT_OK, "n=0");
    CHECK(qt_ggml_dequantize(QT_GGML_I32, blk, y, 4) == QT_EDTYPE, "I32 has no dequantizer");
    CHECK(qt_ggml_dequantize((qt_ggml_type)16, blk, y, 256) == QT_EDTYPE, "IQ2_XXS");
    CHECK(qt_ggml_dequantize((qt_ggml_type)-3, blk, y, 256) == QT_EDTYPE, "id -3");
    CHECK(qt_ggml_dequantize((qt_ggml_type)4, blk, y, 32) == QT_EDTYPE, "removed id 4");

    /* sizes (ggml-common.h static_asserts) and names */
    static const struct {
        qt_ggml_type t;
        int64_t blck;
        size_t size;
        const char *name;
    } sz[] = {
        {QT_GGML_F32, 1, 4, "F32"},       {QT_GGML_F16, 1, 2, "F16"},
        {QT_GGML_BF16, 1, 2, "BF16"},     {QT_GGML_Q4_0, 32, 18, "Q4_0"},
        {QT_GGML_Q4_1, 32, 20, "Q4_1"},   {QT_GGML_Q5_0, 32, 22, "Q5_0"},
        {QT_GGML_Q5_1, 32, 24, "Q5_1"},   {QT_GGML_Q8_0, 32, 34, "Q8_0"},
        {QT_GGML_Q2_K, 256, 84, "Q2_K"},  {QT_GGML_Q3_K, 256, 110, "Q3_K"},
        {QT_GGML_Q4_K, 256, 144, "Q4_K"}, {QT_GGML_Q5_K, 256, 176, "Q5_K"},
        {QT_GGML_Q6_K, 256, 210, "Q6_K"}, {QT_GGML_IQ4_NL, 32, 18, "IQ4_NL"},
        {QT_GGML_IQ4_XS, 256, 136, "IQ4_XS"}, {QT_GGML_I8, 1, 1, "I8"},
        {QT_GGML_I16, 1, 2, "I16"},       {QT_GGML_I32, 1, 4, "I32"},
        {QT_GGML_I64, 1, 8, "I64"},       {QT_GGML_F64, 1, 8, "F64"},
    };
    for (size_t i = 0; i < sizeof sz / sizeof *sz; i++)
        CHECK(qt_ggml_blck_size(sz[i].t) == sz[i].blck && qt_ggml_type_size(sz[i].t) ==
              sz[i].size && strcmp(qt_ggml_type_name(sz[i].t), sz[i].name) == 0,
              "type %d: %lld/%zu %s", sz[i].t, (long long)qt_ggml_blck_size(sz[i].t),
              qt_ggml_type_size(sz[i].t), qt_ggml_type_name(sz[i].t));
    CHECK(qt_ggml_blck_size((qt_ggml_type)5) == 0 && strcmp(qt_ggml_type_name(
          (qt_ggml_type)5), "?") == 0, "removed id 5");
    CHECK(qt_ggml_nbytes(QT_GGML_Q4_K, 512) == 288, "nbytes Q4_K 512");
    CHECK(qt_ggml_nbytes(QT_GGML_Q4_K, 500) == 0, "nbytes Q4_K 500");
    CHECK(qt_ggml_nbytes(QT_GGML_F64, INT64_MAX) == 0, "nbytes overflow");
    CHECK(strcmp(qt_gguf_type_name(QT_GGUF_STRING), "string") == 0 &&
          strcmp(qt_gguf_type_name(QT_GGUF_TYPE_COUNT), "?") == 0, "gguf type names");

    /* a hand-made Q8_0 block and a Q4_0 block: d = 0.5 (f16 0x3800) */
    unsigned char q8[34] = {0x00, 0x38};
    for (int j = 0; j < 32; j++)
        q8[2 + j] = (unsigned char)(int8_t)(j - 16);
    CHECK(qt_ggml_dequantize(QT_GGML_Q8_0, q8, y, 32) == QT_OK, "q8_0 block");
    bool ok = true;
    for (int j = 0; j < 32; j++)
        ok = ok && y[j] == 0.5f * (float)(j - 16);
    CHECK(ok, "q8_0 block values");
    unsigned char q4[18] = {0x00, 0x38};
    for (int j = 0; j < 16; j++)
        q4[2 + j] = (unsigned char)(j | (15 - j) << 4);
    CHECK(qt_ggml_dequantize(QT_GGML_Q4_0, q4, y, 32) == QT_OK, "q4_0 block");
    ok = true;
    for (int j = 0; j < 16; j++)
        ok = ok && y[j] == 0.5f * (float)(j - 8) && y[j + 16] == 0.5f * (float)(7 - j);
    CHECK(ok, "q4_0 block values: low nibbles first half, high nibbles second");
}

/* ------------------------------------------------------------------ writer ---- */

/* Copies every kv and tensor of g, in order, into a new writer. */
static qt_status copy_into_writer(const qt_gguf *g, qt_gguf_writer *w) {
    qt_status s = QT_OK;
    for (int64_t i = 0; i < qt_gguf_kv_count(g) && s == QT_OK; i++) {
        const char *k = qt_gguf_key_at(g, i);
        union {
            uint8_t u8;
            int8_t i8;
            uint16_t u16;
            int16_t i16;
            uint32_t u32;
            int32_t i32;
            uint64_t u64;
            int64_t i64;
            float f32;
            double f64;
            bool b;
        } v;
        switch (qt_gguf_kv_type(g, i)) {
        case QT_GGUF_U8: qt_gguf_get_u8(g, k, &v.u8); s = qt_gguf_writer_set_u8(w, k, v.u8); break;
        case QT_GGUF_I8: qt_gguf_get_i8(g, k, &v.i8); s = qt_gguf_writer_set_i8(w, k, v.i8); break;
        case QT_GGUF_U16:
            qt_gguf_get_u16(g, k, &v.u16);
            s = qt_gguf_writer_set_u16(w, k, v.u16);
            break;
        case QT_GGUF_I16:
            qt_gguf_get_i16(g, k, &v.i16);
            s = qt_gguf_writer_set_i16(w, k, v.i16);
            break;
        case QT_GGUF_U32:
            qt_gguf_get_u32(g, k, &v.u32);
            s = qt_gguf_writer_set_u32(w, k, v.u32);
            break;
        case QT_GGUF_I32:
            qt_gguf_get_i32(g, k, &v.i32);
            s = qt_gguf_writer_set_i32(w, k, v.i32);
            break;
        case QT_GGUF_U64:
            qt_gguf_get_u64(g, k, &v.u64);
            s = qt_gguf_writer_set_u64(w, k, v.u64);
            break;
        case QT_GGUF_I64:
            qt_gguf_get_i64(g, k, &v.i64);
            s = qt_gguf_writer_set_i64(w, k, v.i64);
            break;
        case QT_GGUF_F32:
            qt_gguf_get_f32(g, k, &v.f32);
            s = qt_gguf_writer_set_f32(w, k, v.f32);
            break;
        case QT_GGUF_F64:
            qt_gguf_get_f64(g, k, &v.f64);
            s = qt_gguf_writer_set_f64(w, k, v.f64);
            break;
        case QT_GGUF_BOOL:
            qt_gguf_get_bool(g, k, &v.b);
            s = qt_gguf_writer_set_bool(w, k, v.b);
            break;
        case QT_GGUF_STRING: {
            const char *str;
            size_t len;
            qt_gguf_get_str(g, k, &str, &len);
            s = qt_gguf_writer_set_str(w, k, str, len);
            break;
        }
        case QT_GGUF_ARRAY: {
            qt_gguf_type et;
            uint64_t count;
            const void *data;
            qt_gguf_get_arr(g, k, &et, &count, &data);
            if (et != QT_GGUF_STRING) {
                s = qt_gguf_writer_set_arr(w, k, et, data, count);
                break;
            }
            const char **strs = calloc(count + 1, sizeof *strs);
            size_t *lens = calloc(count + 1, sizeof *lens);
            for (uint64_t j = 0; j < count; j++)
                qt_gguf_get_arr_str(g, k, j, &strs[j], &lens[j]);
            s = qt_gguf_writer_set_arr_str(w, k, strs, lens, count);
            free(strs);
            free(lens);
            break;
        }
        default:
            s = QT_EFORMAT;
        }
    }
    for (int64_t i = 0; i < qt_gguf_tensor_count(g) && s == QT_OK; i++) {
        const qt_gguf_tensor *t = qt_gguf_tensor_at(g, i);
        s = qt_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data,
                                      t->nbytes);
    }
    return s;
}

static void test_writer(void) {
    char dir[] = "/tmp/qt_gguf_wtest_XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(2);
    }
    char path[256];
    snprintf(path, sizeof path, "%s/out.gguf", dir);

    /* re-encoding the reference file reproduces gguf-py's bytes exactly */
    qt_gguf *g = NULL;
    qt_gguf_writer *w = NULL;
    CHECK(qt_gguf_open(REF_GGUF, &g) == QT_OK, "open reference: %s", qt_error_message());
    CHECK(qt_gguf_writer_init(&w) == QT_OK, "writer_init");
    if (g && w) {
        qt_status s = copy_into_writer(g, w);
        CHECK(s == QT_OK, "copy into writer: %s", qt_error_message());
        s = qt_gguf_writer_write(w, path);
        CHECK(s == QT_OK, "write: %s", qt_error_message());
        size_t n1 = 0, n2 = 0;
        unsigned char *a = slurp(REF_GGUF, &n1), *b = slurp(path, &n2);
        size_t first = 0;
        while (a && b && first < n1 && first < n2 && a[first] == b[first])
            first++;
        CHECK(a && b && n1 == n2 && first == n1, "re-encoded reference differs from gguf-py's "
              "file: %zu vs %zu bytes, first difference at byte %zu", n1, n2, first);
        free(a);
        free(b);
    }
    qt_gguf_writer_free(w);
    qt_gguf_close(g);

    /* a hand-made file: every setter, a string with a NUL byte, alignment 16 */
    w = NULL;
    qt_gguf_writer_init(&w);
    qt_status s = qt_gguf_writer_set_u32(w, "general.alignment", 16);
    s = s ? s : qt_gguf_writer_set_str(w, "general.architecture", "llama", 5);
    s = s ? s : qt_gguf_writer_set_str(w, "w.nul", "a\0b", 3);
    s = s ? s : qt_gguf_writer_set_str(w, "w.empty", NULL, 0);
    s = s ? s : qt_gguf_writer_set_i8(w, "w.i8", -7);
    s = s ? s : qt_gguf_writer_set_u64(w, "w.u64", 1ull << 40);
    s = s ? s : qt_gguf_writer_set_f64(w, "w.f64", 0.125);
    s = s ? s : qt_gguf_writer_set_bool(w, "w.b", true);
    static const float fa[3] = {1.5f, -2.0f, 0.0f};
    s = s ? s : qt_gguf_writer_set_arr(w, "w.fa", QT_GGUF_F32, fa, 3);
    s = s ? s : qt_gguf_writer_set_arr(w, "w.empty_arr", QT_GGUF_I64, NULL, 0);
    static const char *const toks[3] = {"<s>", "", "\xc4\xa0the"};
    s = s ? s : qt_gguf_writer_set_arr_str(w, "w.toks", toks, NULL, 3);
    unsigned char q8[2 * 34] = {0x00, 0x3c};
    for (int j = 0; j < 32; j++)
        q8[2 + j] = (unsigned char)j;
    const int64_t ne_q8[2] = {32, 2}, ne_f32[1] = {5};
    static const float f5[5] = {1, 2, 3, 4, 5};
    s = s ? s : qt_gguf_writer_add_tensor(w, "blk.0.w", QT_GGML_Q8_0, 2, ne_q8, q8, 68);
    s = s ? s : qt_gguf_writer_add_tensor(w, "norm", QT_GGML_F32, 1, ne_f32, f5, 20);
    CHECK(s == QT_OK, "building: %s", qt_error_message());
    CHECK(qt_gguf_writer_write(w, path) == QT_OK, "write: %s", qt_error_message());
    qt_gguf_writer_free(w);
    g = NULL;
    s = qt_gguf_open(path, &g);
    CHECK(s == QT_OK, "read back: %s", qt_error_message());
    if (s == QT_OK) {
        const char *str;
        size_t len;
        int8_t i8;
        uint64_t u64;
        double f64;
        bool b;
        CHECK(qt_gguf_alignment(g) == 16 && qt_gguf_kv_count(g) == 11, "alignment, count");
        CHECK(qt_gguf_get_str(g, "w.nul", &str, &len) == QT_OK && len == 3 &&
              memcmp(str, "a\0b", 4) == 0, "string with NUL");
        CHECK(qt_gguf_get_str(g, "w.empty", &str, &len) == QT_OK && len == 0, "empty string");
        CHECK(qt_gguf_get_i8(g, "w.i8", &i8) == QT_OK && i8 == -7, "i8");
        CHECK(qt_gguf_get_u64(g, "w.u64", &u64) == QT_OK && u64 == 1ull << 40, "u64");
        CHECK(qt_gguf_get_f64(g, "w.f64", &f64) == QT_OK && f64 == 0.125, "f64");
        CHECK(qt_gguf_get_bool(g, "w.b", &b) == QT_OK && b, "bool");
        qt_gguf_type et;
        uint64_t count;
        const void *data;
        CHECK(qt_gguf_get_arr(g, "w.fa", &et, &count, &data) == QT_OK && et == QT_GGUF_F32 &&
              count == 3 && memcmp(data, fa, 12) == 0, "f32 array");
        CHECK(qt_gguf_get_arr(g, "w.empty_arr", &et, &count, &data) == QT_OK &&
              et == QT_GGUF_I64 && count == 0, "empty array");
        for (uint64_t j = 0; j < 3; j++)
            CHECK(qt_gguf_get_arr_str(g, "w.toks", j, &str, &len) == QT_OK &&
                  strcmp(str, toks[j]) == 0, "toks[%llu]", (unsigned long long)j);
        const qt_gguf_tensor *t = qt_gguf_tensor_get(g, "blk.0.w");
        CHECK(t && t->type == QT_GGML_Q8_0 && t->ne[0] == 32 && t->ne[1] == 2 &&
              t->nbytes == 68 && memcmp(t->data, q8, 68) == 0, "q8 tensor");
        t = qt_gguf_tensor_get(g, "norm");
        CHECK(t && t->offset == 80 && t->n_dims == 1 && memcmp(t->data, f5, 20) == 0,
              "f32 tensor at offset 80 (68 padded to 16)");
        qt_gguf_close(g);
    }

    /* argument errors: QT_EINVAL, sticky, and nothing written */
    struct {
        const char *what;
        int which;
    } bad[] = {{"duplicate key", 0},   {"empty key", 1},     {"alignment 3", 2},
               {"alignment as i32", 3}, {"n_dims 0", 4},     {"n_dims 5", 5},
               {"ne[0] not a multiple of 32", 6}, {"nbytes mismatch", 7},
               {"long name", 8},       {"duplicate tensor", 9}, {"unknown type", 10},
               {"bool array value 2", 11}, {"string array element", 12},
               {"negative ne", 13}};
    char long_name[80];
    memset(long_name, 'n', 64);
    long_name[64] = '\0';
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        qt_gguf_writer_init(&w);
        qt_gguf_writer_set_u8(w, "k", 1);
        qt_gguf_writer_add_tensor(w, "t", QT_GGML_F32, 1, ne_f32, f5, 20);
        const int64_t ne5[5] = {5, 1, 1, 1, 1}, neg[2] = {5, -1};
        static const uint8_t bools[2] = {1, 2};
        static const char *const nulls[2] = {"x", NULL};
        switch (bad[i].which) {
        case 0: s = qt_gguf_writer_set_u8(w, "k", 2); break;
        case 1: s = qt_gguf_writer_set_u8(w, "", 2); break;
        case 2: s = qt_gguf_writer_set_u32(w, "general.alignment", 3); break;
        case 3: s = qt_gguf_writer_set_i32(w, "general.alignment", 32); break;
        case 4: s = qt_gguf_writer_add_tensor(w, "u", QT_GGML_F32, 0, ne5, f5, 20); break;
        case 5: s = qt_gguf_writer_add_tensor(w, "u", QT_GGML_F32, 5, ne5, f5, 20); break;
        case 6: s = qt_gguf_writer_add_tensor(w, "u", QT_GGML_Q8_0, 1, ne_f32, q8, 34); break;
        case 7: s = qt_gguf_writer_add_tensor(w, "u", QT_GGML_F32, 1, ne_f32, f5, 16); break;
        case 8: s = qt_gguf_writer_add_tensor(w, long_name, QT_GGML_F32, 1, ne_f32, f5, 20);
            break;
        case 9: s = qt_gguf_writer_add_tensor(w, "t", QT_GGML_F32, 1, ne_f32, f5, 20); break;
        case 10: s = qt_gguf_writer_add_tensor(w, "u", (qt_ggml_type)16, 1, ne_f32, f5, 20);
            break;
        case 11: s = qt_gguf_writer_set_arr(w, "ba", QT_GGUF_BOOL, bools, 2); break;
        case 12: s = qt_gguf_writer_set_arr_str(w, "sa", nulls, NULL, 2); break;
        default: s = qt_gguf_writer_add_tensor(w, "u", QT_GGML_F32, 2, neg, f5, 20); break;
        }
        CHECK(s == QT_EINVAL, "writer %s: %s", bad[i].what, status_name(s));
        char first[512];
        snprintf(first, sizeof first, "%s", qt_error_message());
        CHECK(qt_gguf_writer_set_u8(w, "later", 1) == QT_EINVAL, "writer %s: not sticky",
              bad[i].what);
        CHECK(strstr(qt_error_message(), first) != NULL, "writer %s: later message \"%s\" "
              "does not repeat the first \"%s\"", bad[i].what, qt_error_message(), first);
        unlink(path);
        CHECK(qt_gguf_writer_write(w, path) == QT_EINVAL && access(path, F_OK) != 0,
              "writer %s: write after a failure", bad[i].what);
        qt_gguf_writer_free(w);
    }

    /* I/O errors: a missing directory; nothing left behind */
    qt_gguf_writer_init(&w);
    char missing[300];
    snprintf(missing, sizeof missing, "%s/no/such/dir.gguf", dir);
    CHECK(qt_gguf_writer_write(w, missing) == QT_EIO, "missing directory");
    /* a directory in the way of the rename: the temporary is removed */
    char blocked[300], leftover[340];
    snprintf(blocked, sizeof blocked, "%s/blocked", dir);
    mkdir(blocked, 0755);
    char inner[320];
    snprintf(inner, sizeof inner, "%s/x", blocked);
    FILE *f = fopen(inner, "w");
    if (f)
        fclose(f);
    CHECK(qt_gguf_writer_write(w, blocked) == QT_EIO, "rename over a non-empty directory");
    snprintf(leftover, sizeof leftover, "%s.tmp.%ld", blocked, (long)getpid());
    CHECK(access(leftover, F_OK) != 0, "temporary left behind");
    qt_gguf_writer_free(w);
    unlink(inner);
    rmdir(blocked);
    unlink(path);
    rmdir(dir);
}

/* ------------------------------------------------------ synthetic files ---- */

/* A small GGUF built field by field, with the byte position of each field that a
 * malformed case patches. */
typedef struct {
    unsigned char p[16384];
    size_t n;
} bbuf;

static void put(bbuf *b, const void *src, size_t n) {
    if (b->n + n > sizeof b->p) {
        fprintf(stderr, "bbuf overflow\n");
        exit(2);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static size_t put_u32(bbuf *b, uint32_t v) {
    size_t at = b->n;
    unsigned char x[4];
    for (int i = 0; i < 4; i++)
        x[i] = (unsigned char)(v >> 8 * i);
    put(b, x, 4);
    return at;
}
static size_t put_u64(bbuf *b, uint64_t v) {
    size_t at = b->n;
    unsigned char x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (unsigned char)(v >> 8 * i);
    put(b, x, 8);
    return at;
}
/* returns the position of the length field */
static size_t put_str(bbuf *b, const char *s) {
    size_t at = put_u64(b, strlen(s));
    put(b, s, strlen(s));
    return at;
}
static void patch_u32(bbuf *b, size_t at, uint32_t v) {
    for (int i = 0; i < 4; i++)
        b->p[at + i] = (unsigned char)(v >> 8 * i);
}
static void patch_u64(bbuf *b, size_t at, uint64_t v) {
    for (int i = 0; i < 8; i++)
        b->p[at + i] = (unsigned char)(v >> 8 * i);
}

typedef struct {
    /* knobs: the defaults build a valid file */
    uint32_t alignment_type;     /* of general.alignment */
    uint32_t alignment;          /* 0: no general.alignment key (default 32) */
    bool dup_key, dup_tensor, nested_array, long_name, nul_name, empty_key;
    uint32_t t0_n_dims;          /* default 2 */
    /* positions, filled by build() */
    size_t version, n_tensors, n_kv, key0_len, kv_str_type, str_len, bool_val, arr_type,
        arr_count, sarr_count, sarr_elem0_len, t0_name_len, t0_ndims, t0_ne0, t0_ne1,
        t0_type, t1_type, t1_ne0, t1_offset, t2_ne0, t2_offset, infos_end;
} spec;

/* kv: general.alignment u32 (optional), a.str string "xy", a.flag bool 1,
 *     a.arr i32 [1, 2, 3], a.sarr string ["p", "qq"];
 * tensors: t0 F32 ne [4, 2] (32 bytes), t1 Q8_0 ne [32] (34 bytes), t2 F16 ne [3]
 * (6 bytes); data padded between tensors, none after the last. */
static size_t build(bbuf *b, spec *s) {
    /* lay the data out with the key's alignment when it is a valid one */
    uint32_t align = s->alignment && !(s->alignment & (s->alignment - 1)) ? s->alignment : 32;
    if (s->alignment_type == 0)
        s->alignment_type = QT_GGUF_U32;
    if (s->t0_n_dims == 0)
        s->t0_n_dims = 2;
    b->n = 0;
    put(b, "GGUF", 4);
    s->version = put_u32(b, 3);
    s->n_tensors = put_u64(b, s->dup_tensor ? 4 : 3);
    int nkv = 4 + (s->alignment ? 1 : 0) + (s->dup_key ? 1 : 0) + (s->nested_array ? 1 : 0);
    s->n_kv = put_u64(b, (uint64_t)nkv);

    s->key0_len = put_str(b, s->empty_key ? "" : "a.str");
    s->kv_str_type = put_u32(b, QT_GGUF_STRING);
    s->str_len = put_str(b, "xy");
    put_str(b, "a.flag");
    put_u32(b, QT_GGUF_BOOL);
    s->bool_val = b->n;
    put(b, "\x01", 1);
    if (s->alignment) {
        put_str(b, "general.alignment");
        put_u32(b, s->alignment_type);
        if (s->alignment_type == QT_GGUF_U64)
            put_u64(b, s->alignment);
        else
            put_u32(b, s->alignment);
    }
    put_str(b, "a.arr");
    put_u32(b, QT_GGUF_ARRAY);
    s->arr_type = put_u32(b, QT_GGUF_I32);
    s->arr_count = put_u64(b, 3);
    for (uint32_t v = 1; v <= 3; v++)
        put_u32(b, v);
    put_str(b, "a.sarr");
    put_u32(b, QT_GGUF_ARRAY);
    put_u32(b, QT_GGUF_STRING);
    s->sarr_count = put_u64(b, 2);
    s->sarr_elem0_len = put_str(b, "p");
    put_str(b, "qq");
    if (s->dup_key) {
        put_str(b, "a.flag");
        put_u32(b, QT_GGUF_U8);
        put(b, "\x07", 1);
    }
    if (s->nested_array) {
        put_str(b, "a.nest");
        put_u32(b, QT_GGUF_ARRAY);
        put_u32(b, QT_GGUF_ARRAY);
        put_u64(b, 1);
        put_u32(b, QT_GGUF_U8);
        put_u64(b, 1);
        put(b, "\x01", 1);
    }

    /* tensor infos */
    char long_name[80];
    memset(long_name, 'x', 64);
    long_name[64] = '\0';
    s->t0_name_len = put_str(b, s->long_name ? long_name : "t0");
    if (s->nul_name)
        b->p[s->t0_name_len + 8 + 1] = '\0'; /* "t\0" */
    s->t0_ndims = put_u32(b, s->t0_n_dims);
    s->t0_ne0 = put_u64(b, 4);
    s->t0_ne1 = put_u64(b, 2);
    for (uint32_t d = 2; d < s->t0_n_dims && d < 8; d++)
        put_u64(b, 1);
    s->t0_type = put_u32(b, QT_GGML_F32);
    put_u64(b, 0);
    put_str(b, "t1");
    put_u32(b, 1);
    s->t1_ne0 = put_u64(b, 32);
    s->t1_type = put_u32(b, QT_GGML_Q8_0);
    uint64_t off1 = (32 + align - 1) / align * align;
    s->t1_offset = put_u64(b, off1);
    put_str(b, s->dup_tensor ? "t1" : "t2");
    put_u32(b, 1);
    s->t2_ne0 = put_u64(b, 3);
    put_u32(b, QT_GGML_F16);
    uint64_t off2 = (off1 + 34 + align - 1) / align * align;
    s->t2_offset = put_u64(b, off2);
    uint64_t end = off2 + 6;
    if (s->dup_tensor) {
        put_str(b, "t3");
        put_u32(b, 1);
        put_u64(b, 3);
        put_u32(b, QT_GGML_F16);
        uint64_t off3 = (end + align - 1) / align * align;
        put_u64(b, off3);
        end = off3 + 6;
    }
    s->infos_end = b->n;
    /* padding, then the data: t0 = 0.5 * i, t1 = d 1.0 and q = i - 16, t2 = f16 1, 2, 3 */
    while (b->n % align)
        put(b, "\0", 1);
    size_t data = b->n;
    memset(b->p + data, 0, (size_t)end);
    for (int i = 0; i < 8; i++) {
        float v = 0.5f * (float)i;
        memcpy(b->p + data + 4 * i, &v, 4);
    }
    b->p[data + off1] = 0x00;
    b->p[data + off1 + 1] = 0x3c;
    for (int i = 0; i < 32; i++)
        b->p[data + off1 + 2 + i] = (unsigned char)(int8_t)(i - 16);
    static const unsigned char f16s[6] = {0x00, 0x3c, 0x00, 0x40, 0x00, 0x42};
    memcpy(b->p + data + off2, f16s, 6);
    b->n = data + (size_t)end;
    return b->n;
}

/* Opening bytes[0..n) must fail with `want`, leave *out NULL, and say `needle` and the
 * path in its message. */
static void expect_fail(const char *what, const bbuf *b, qt_status want, const char *needle) {
    char *path = tmp_with(b->p, b->n);
    qt_gguf *g = (qt_gguf *)&g; /* not NULL: open must reset it */
    qt_status s = qt_gguf_open(path, &g);
    const char *msg = qt_error_message();
    if (getenv("QT_TEST_VERBOSE"))
        printf("%-40.40s -> %s\n", what, msg);
    CHECK(s == want, "%s: status %s, expected %s (%s)", what, status_name(s),
          status_name(want), msg);
    CHECK(g == NULL, "%s: *out not NULL after a failed open", what);
    if (s != QT_OK) {
        CHECK(strstr(msg, path) != NULL, "%s: message does not name the file: %s", what, msg);
        CHECK(strstr(msg, needle) != NULL, "%s: message lacks \"%s\": %s", what, needle, msg);
    }
    if (s == QT_OK)
        qt_gguf_close(g);
    unlink(path);
    free(path);
}

static void test_synthetic_valid(void) {
    bbuf b;
    spec s = {0};
    build(&b, &s);
    char *path = tmp_with(b.p, b.n);
    qt_gguf *g = NULL;
    qt_status st = qt_gguf_open(path, &g);
    CHECK(st == QT_OK, "synthetic file: %s", qt_error_message());
    if (st == QT_OK) {
        CHECK(qt_gguf_alignment(g) == 32, "default alignment %u", qt_gguf_alignment(g));
        CHECK(qt_gguf_version(g) == 3 && qt_gguf_kv_count(g) == 4 &&
              qt_gguf_tensor_count(g) == 3, "counts");
        const qt_gguf_tensor *t1 = qt_gguf_tensor_get(g, "t1");
        CHECK(t1 && t1->offset == 32 && t1->nbytes == 34 && t1->type == QT_GGML_Q8_0,
              "t1 info");
        float y[32];
        if (t1 && qt_ggml_dequantize(t1->type, t1->data, y, 32) == QT_OK)
            CHECK(y[0] == -16.0f && y[31] == 15.0f, "t1 values %g %g", y[0], y[31]);
        const qt_gguf_tensor *t2 = qt_gguf_tensor_get(g, "t2");
        CHECK(t2 && t2->offset == 96 && qt_ggml_dequantize(t2->type, t2->data, y, 3) ==
              QT_OK && y[0] == 1.0f && y[1] == 2.0f && y[2] == 3.0f, "t2 values");
        const qt_gguf_tensor *t0 = qt_gguf_tensor_at(g, 0);
        CHECK(t0 && t0->n_dims == 2 && t0->ne[0] == 4 && t0->ne[1] == 2 && t0->ne[2] == 1 &&
              t0->ne[3] == 1, "t0 ne");
        bool flag = false;
        CHECK(qt_gguf_get_bool(g, "a.flag", &flag) == QT_OK && flag, "a.flag");
        qt_gguf_close(g);
    }
    /* version 2 has the same layout */
    patch_u32(&b, s.version, 2);
    overwrite(path, b.p, b.n);
    st = qt_gguf_open(path, &g);
    CHECK(st == QT_OK && qt_gguf_version(g) == 2, "version 2: %s", qt_error_message());
    qt_gguf_close(g);
    /* 4 dims, alignment 16 and as large as 4096 */
    spec s4 = {.t0_n_dims = 4};
    build(&b, &s4);
    overwrite(path, b.p, b.n);
    st = qt_gguf_open(path, &g);
    CHECK(st == QT_OK, "4 dims: %s", qt_error_message());
    qt_gguf_close(g);
    uint32_t aligns[] = {1, 16, 256};
    for (int i = 0; i < 3; i++) {
        spec sa = {.alignment = aligns[i]};
        build(&b, &sa);
        overwrite(path, b.p, b.n);
        st = qt_gguf_open(path, &g);
        CHECK(st == QT_OK && qt_gguf_alignment(g) == aligns[i] &&
              qt_gguf_data_offset(g) % aligns[i] == 0, "alignment %u: %s", aligns[i],
              qt_error_message());
        qt_gguf_close(g);
    }
    /* missing files, directories */
    st = qt_gguf_open("/nonexistent/x.gguf", &g);
    CHECK(st == QT_EIO && g == NULL, "missing file: %s", status_name(st));
    st = qt_gguf_open("/tmp", &g);
    CHECK(st == QT_EIO && g == NULL, "directory: %s", status_name(st));
    CHECK(qt_gguf_open(NULL, &g) == QT_EINVAL && qt_gguf_open(path, NULL) == QT_EINVAL,
          "NULL arguments");
    unlink(path);
    free(path);
}

static void test_malformed(void) {
    bbuf b;
    spec s;
    /* CASE(patch, status, part of the message, spec knobs...): build, patch, open */
#define CASE(setup, want, needle, ...)                          \
    do {                                                        \
        s = (spec){__VA_ARGS__};                                \
        build(&b, &s);                                          \
        setup;                                                  \
        expect_fail(#setup " " #__VA_ARGS__, &b, want, needle); \
    } while (0)
    /* header */
    CASE(memcpy(b.p, "GGUG", 4), QT_EFORMAT, "magic");
    CASE(b.n = 3, QT_EFORMAT, "shorter than 4 bytes");
    CASE(patch_u32(&b, s.version, 1), QT_EFORMAT, "version 1 used 32-bit");
    CASE(patch_u32(&b, s.version, 4), QT_EFORMAT, "version is 4, expected 2 or 3");
    CASE(patch_u32(&b, s.version, 0x03000000u), QT_EFORMAT, "big-endian");
    CASE(patch_u64(&b, s.n_kv, 1ull << 40), QT_EFORMAT, "kv count");
    CASE(patch_u64(&b, s.n_kv, UINT64_MAX), QT_EFORMAT, "kv count is -1");
    CASE(patch_u64(&b, s.n_tensors, 1ull << 40), QT_EFORMAT, "tensor count");
    CASE(patch_u64(&b, s.n_tensors, 1ull << 63), QT_EFORMAT, "tensor count");
    /* strings */
    CASE(patch_u64(&b, s.key0_len, 1ull << 40), QT_EFORMAT, "has length");
    CASE(patch_u64(&b, s.key0_len, UINT64_MAX), QT_EFORMAT, "has length");
    CASE(patch_u64(&b, s.str_len, b.n), QT_EFORMAT, "string value");
    CASE(patch_u64(&b, s.sarr_elem0_len, 1ull << 62), QT_EFORMAT, "string element");
    CASE((void)0, QT_EFORMAT, "empty", .empty_key = true);
    /* value types */
    CASE(patch_u32(&b, s.kv_str_type, 13), QT_EFORMAT, "value type");
    CASE(patch_u32(&b, s.kv_str_type, 0xFFFFFFFFu), QT_EFORMAT, "is -1");
    CASE(patch_u32(&b, s.arr_type, 13), QT_EFORMAT, "array element type");
    CASE((void)0, QT_EFORMAT, "nested arrays", .nested_array = true);
    CASE(b.p[s.bool_val] = 2, QT_EFORMAT, "expected 0 or 1");
    /* array counts */
    CASE(patch_u64(&b, s.arr_count, 1ull << 62), QT_EFORMAT, "array of");
    CASE(patch_u64(&b, s.arr_count, UINT64_MAX), QT_EFORMAT, "array of");
    CASE(patch_u64(&b, s.sarr_count, 1ull << 61), QT_EFORMAT, "strings");
    CASE(patch_u64(&b, s.sarr_count, 1000), QT_EFORMAT, "");
    /* keys */
    CASE((void)0, QT_EFORMAT, "\"a.flag\" appears more than once", .dup_key = true);
    CASE((void)0, QT_EFORMAT, "power of two", .alignment = 3);
    CASE((void)0, QT_EFORMAT, "power of two", .alignment = 0x80000001u);
    /* one kv more than the file holds: the first tensor info is read as a kv */
    CASE(patch_u64(&b, s.n_kv, 6), QT_EFORMAT, "tensor 0", .alignment = 1);
    CASE((void)0, QT_EFORMAT, "is a i32, expected a u32", .alignment = 32,
         .alignment_type = QT_GGUF_I32);
    CASE((void)0, QT_EFORMAT, "is a u64, expected a u32", .alignment = 32,
         .alignment_type = QT_GGUF_U64);
    /* tensor infos */
    CASE((void)0, QT_EFORMAT, "GGML_MAX_NAME", .long_name = true);
    CASE((void)0, QT_EFORMAT, "NUL", .nul_name = true);
    CASE(patch_u64(&b, s.t0_name_len, 0), QT_EFORMAT, "empty");
    CASE((void)0, QT_EFORMAT, "\"t1\" appears more than once", .dup_tensor = true);
    CASE(patch_u32(&b, s.t0_ndims, 0), QT_EFORMAT, "n_dims");
    CASE((void)0, QT_EFORMAT, "n_dims at byte", .t0_n_dims = 5);
    CASE(patch_u32(&b, s.t0_ndims, 0xFFFFFFFFu), QT_EFORMAT, "n_dims");
    CASE(patch_u64(&b, s.t0_ne0, 0), QT_EFORMAT, "ne[0]");
    CASE(patch_u64(&b, s.t0_ne1, (uint64_t)-5), QT_EFORMAT, "ne[1]");
    CASE((patch_u64(&b, s.t0_ne0, 1ull << 32), patch_u64(&b, s.t0_ne1, 1ull << 32)),
         QT_EFORMAT, "multiply past");
    CASE(patch_u64(&b, s.t0_ne0, 1ull << 61), QT_EFORMAT, "overflow a 64-bit byte count");
    CASE(patch_u64(&b, s.t0_ne0, 1ull << 40), QT_EFORMAT, "offset"); /* t1 mislaid */
    CASE(patch_u64(&b, s.t2_ne0, 1ull << 40), QT_EFORMAT, "truncated, or offsets");
    CASE(patch_u32(&b, s.t0_type, 4), QT_EFORMAT, "ggml type id");
    CASE(patch_u32(&b, s.t0_type, 0xFFFFFFFFu), QT_EFORMAT, "ggml type id");
    CASE(patch_u32(&b, s.t0_type, 31), QT_EFORMAT, "ggml type id");
    CASE(patch_u32(&b, s.t0_type, 16), QT_EDTYPE, "IQ2_XXS");
    CASE(patch_u32(&b, s.t0_type, 39), QT_EDTYPE, "MXFP4");
    CASE(patch_u64(&b, s.t1_ne0, 16), QT_EFORMAT, "block size");
    CASE(patch_u32(&b, s.t1_type, QT_GGML_Q4_K), QT_EFORMAT, "block size 256");
    /* offsets */
    CASE(patch_u64(&b, s.t1_offset, 33), QT_EFORMAT, "not a multiple of the align");
    CASE(patch_u64(&b, s.t1_offset, 64), QT_EFORMAT, "hole");
    CASE(patch_u64(&b, s.t1_offset, 0), QT_EFORMAT, "overlaps");
    CASE(patch_u64(&b, s.t2_offset, 32), QT_EFORMAT, "overlaps");
    CASE(patch_u64(&b, s.t2_offset, 1ull << 40), QT_EFORMAT, "hole");
    CASE(patch_u64(&b, s.t2_offset, UINT64_MAX - 31), QT_EFORMAT, "");
    CASE(b.n -= 1, QT_EFORMAT, "truncated");
    /* the file ends with the tensor infos: the data section would start beyond it */
    CASE(b.n = s.infos_end, QT_EFORMAT, "data section starts at file byte 4096",
         .alignment = 4096);
#undef CASE
}

/* ------------------------------------------------ truncation and mutation ---- */

/* A successful open of a corrupted file must still be consistent; touch every byte of
 * every tensor (dequantizing where possible) so that ASan sees any pointer past the
 * buffer, and every metadata value. */
static void walk(const qt_gguf *g, const char *what) {
    for (int64_t i = 0; i < qt_gguf_kv_count(g); i++) {
        const char *key = qt_gguf_key_at(g, i);
        CHECK(key && qt_gguf_find_key(g, key) == i, "%s: kv %lld lookup", what, (long long)i);
        if (qt_gguf_kv_type(g, i) == QT_GGUF_ARRAY) {
            qt_gguf_type et;
            uint64_t count;
            const void *data;
            if (qt_gguf_get_arr(g, key, &et, &count, &data) != QT_OK)
                continue;
            unsigned sum = 0;
            for (uint64_t k = 0; k < count; k++) {
                if (et == QT_GGUF_STRING) {
                    const char *str;
                    size_t len;
                    if (qt_gguf_get_arr_str(g, key, k, &str, &len) == QT_OK && len)
                        sum += (unsigned char)str[len - 1];
                } else {
                    sum += ((const unsigned char *)data)[k];
                }
            }
            (void)sum;
        } else if (qt_gguf_kv_type(g, i) == QT_GGUF_STRING) {
            const char *str;
            size_t len;
            CHECK(qt_gguf_get_str(g, key, &str, &len) == QT_OK && str[len] == '\0',
                  "%s: string %s", what, key);
        }
    }
    for (int64_t i = 0; i < qt_gguf_tensor_count(g); i++) {
        const qt_gguf_tensor *t = qt_gguf_tensor_at(g, i);
        CHECK(t && t->name && t->data && t->n_dims >= 1 && t->n_dims <= 4,
              "%s: tensor %lld inconsistent", what, (long long)i);
        if (!t || !t->data)
            continue;
        CHECK(qt_gguf_tensor_get(g, t->name) == t, "%s: get(\"%s\")", what, t->name);
        int64_t numel = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        CHECK(qt_ggml_nbytes(t->type, numel) == t->nbytes, "%s: nbytes", what);
        if (qt_ggml_can_dequantize(t->type) && numel <= (1 << 20)) {
            float *y = malloc((size_t)numel * sizeof *y);
            CHECK(y && qt_ggml_dequantize(t->type, t->data, y, numel) == QT_OK,
                  "%s: dequantize %s", what, t->name);
            free(y);
        } else {
            unsigned sum = 0;
            for (size_t k = 0; k < t->nbytes; k++)
                sum += ((const unsigned char *)t->data)[k];
            (void)sum;
        }
    }
}

/* Opens every prefix of bytes[0..n) shorter than `dense`, then every `step`-th. */
static void test_truncations(const char *what, const unsigned char *bytes, size_t n,
                             size_t full_ok_from, size_t dense, size_t step) {
    char *path = tmp_with(bytes, 0);
    int bad = 0;
    for (size_t len = 0; len < n; len += len < dense ? 1 : step) {
        overwrite(path, bytes, len);
        qt_gguf *g = NULL;
        qt_status s = qt_gguf_open(path, &g);
        if (len >= full_ok_from) {
            if (s != QT_OK && bad++ < 5)
                CHECK(false, "%s truncated to %zu of %zu (still holding every tensor's "
                      "bytes): %s", what, len, n, qt_error_message());
        } else if ((s != QT_EFORMAT || g != NULL) && bad++ < 5) {
            CHECK(false, "%s truncated to %zu of %zu: status %s, expected QT_EFORMAT", what,
                  len, n, status_name(s));
        }
        if (g) {
            walk(g, what);
            qt_gguf_close(g);
        }
    }
    CHECK(bad == 0, "%s: %d truncations misbehaved", what, bad);
    unlink(path);
    free(path);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

/* Random byte mutations in the first `span` bytes (the header, where they matter), some
 * of them writing values that are interesting to length and count fields. */
static void test_mutations(const char *what, const unsigned char *bytes, size_t n, size_t span,
                           int rounds) {
    unsigned char *m = malloc(n);
    char *path = tmp_with(bytes, 0);
    int opened = 0, failed = 0;
    for (int r = 0; r < rounds; r++) {
        memcpy(m, bytes, n);
        int k = 1 + (int)(rnd() % 4);
        for (int j = 0; j < k; j++) {
            size_t at = (size_t)(rnd() % span);
            switch (rnd() % 4) {
            case 0: m[at] = (unsigned char)rnd(); break;
            case 1: m[at] ^= (unsigned char)(1u << (rnd() % 8)); break;
            case 2: m[at] = 0xFF; break;
            default: m[at] = (unsigned char)(m[at] + (rnd() % 2 ? 1 : -1)); break;
            }
        }
        overwrite(path, m, n);
        qt_gguf *g = NULL;
        qt_status s = qt_gguf_open(path, &g);
        CHECK(s == QT_OK || s == QT_EFORMAT || s == QT_EDTYPE, "%s mutation %d: status %s",
              what, r, status_name(s));
        CHECK((s == QT_OK) == (g != NULL), "%s mutation %d: handle vs status", what, r);
        if (g) {
            opened++;
            walk(g, what);
            qt_gguf_close(g);
        } else {
            failed++;
        }
    }
    printf("%s: %d mutations opened, %d refused\n", what, opened, failed);
    unlink(path);
    free(path);
    free(m);
}

int main(void) {
    test_reference();
    test_dequantize_api();
    test_synthetic_valid();
    test_malformed();
    test_writer();

    bbuf b;
    spec s = {0};
    build(&b, &s);
    /* every strict prefix cuts into the last tensor (no padding after it) */
    test_truncations("synthetic", b.p, b.n, b.n, b.n, 1);
    test_mutations("synthetic", b.p, b.n, b.n, 400);

    size_t n = 0;
    unsigned char *ref = slurp(REF_GGUF, &n);
    CHECK(ref != NULL, "cannot read %s", REF_GGUF);
    if (ref) {
        qt_gguf *g = NULL;
        if (qt_gguf_open(REF_GGUF, &g) == QT_OK) {
            /* the last tensor's bytes end before the file's trailing padding */
            const qt_gguf_tensor *last = qt_gguf_tensor_at(g, qt_gguf_tensor_count(g) - 1);
            size_t need = (size_t)(qt_gguf_data_offset(g) + last->offset + last->nbytes);
            size_t header = (size_t)qt_gguf_data_offset(g);
            qt_gguf_close(g);
            /* every length through the header, then a sample of the data */
            test_truncations("reference", ref, n, need, header + 1, 37);
            test_mutations("reference", ref, n, header, 300);
        }
        free(ref);
    }
    return qt_test_finish("test_gguf");
}
