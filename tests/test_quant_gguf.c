/*
 * test_quant_gguf.c - the ggml block quantizers (ptq/quant_gguf.c) against llama.cpp and
 * gguf-py, byte for byte.
 *
 * Fixture gguf_quant_ref.safetensors (gen_gguf_quant_fixtures.py): a 40 x 512 matrix x
 * (adversarial rows first: zeros, constants, an outlier, 1e-30, 1e-40, 1e4, 6e4, ties, zero
 * sub-blocks, sparse, ...), and for each of Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K Q4_K Q5_K
 * Q6_K IQ4_NL IQ4_XS the reference bytes of every row (gguf-py's quantizers for the
 * 32-blocks, which the generator checks equal llama.cpp's; llama.cpp's
 * llama_model_quantize, no imatrix, for the K-quants and IQ4) and gguf-py's
 * dequantization of the first 8 rows. Checked here:
 *   - qt_ggml_quantize_row bytes == the reference (a mismatch reports its count of
 *     differing blocks), and qt_ggml_dequantize of our bytes == gguf-py, bit for bit;
 *   - qt_gguf_quantize / qt_gguf_dequantize / qt_gguf_fake_quant (mask, aliasing) agree
 *     with the row quantizer, also on a matrix large enough for the OpenMP path;
 *   - the NaN / Inf policy (QT_ENUMERIC naming row and col) and argument errors.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qt_quant.h"
#include "quant_internal.h"
#include "testutil.h"

static const struct {
    const char *name;
    qt_ggml_type type;
} TYPES[] = {
    {"Q8_0", QT_GGML_Q8_0}, {"Q4_0", QT_GGML_Q4_0}, {"Q4_1", QT_GGML_Q4_1},
    {"Q5_0", QT_GGML_Q5_0}, {"Q5_1", QT_GGML_Q5_1}, {"Q2_K", QT_GGML_Q2_K},
    {"Q3_K", QT_GGML_Q3_K}, {"Q4_K", QT_GGML_Q4_K}, {"Q5_K", QT_GGML_Q5_K},
    {"Q6_K", QT_GGML_Q6_K}, {"IQ4_NL", QT_GGML_IQ4_NL}, {"IQ4_XS", QT_GGML_IQ4_XS},
};
#define N_TYPES ((int)(sizeof TYPES / sizeof TYPES[0]))

/* A GGUF qtensor owns only its blocks (qt_quant.h); freed here directly so this test
 * does not depend on qformat.c's qt_qtensor_free. */
static void free_blocks(qt_qtensor *q) {
    free(q->blocks);
    q->blocks = NULL;
}

static qt_qformat gguf_fmt(qt_ggml_type t) {
    qt_qformat f;
    memset(&f, 0, sizeof f);
    f.kind = QT_QF_GGUF;
    f.ggml = t;
    return f;
}

/* A tensor of the fixture with the expected dtype and 2-D shape, or NULL (and a FAIL). */
static const qt_st_tensor *fixture_tensor(const qt_safetensors *st, const char *name,
                                          qt_dtype dt) {
    const qt_st_tensor *t = qt_safetensors_get(st, name);
    qt_check_case(t && t->dtype == dt && t->ndim == 2, name, "missing or not a 2-D %s tensor",
                  dt == QT_F32 ? "F32" : "U8");
    return t && t->dtype == dt && t->ndim == 2 ? t : NULL;
}

/* Bytes and dequantized values of one type against the fixture. */
static void check_type(const qt_safetensors *st, int ti, const float *x, int64_t rows,
                       int64_t cols) {
    const char *name = TYPES[ti].name;
    const qt_ggml_type type = TYPES[ti].type;
    char key[64];
    snprintf(key, sizeof key, "%s_bytes", name);
    const qt_st_tensor *tb = fixture_tensor(st, key, QT_U8);
    snprintf(key, sizeof key, "%s_deq", name);
    const qt_st_tensor *td = fixture_tensor(st, key, QT_F32);
    if (!tb || !td) return;
    const size_t row_bytes = qt_ggml_nbytes(type, cols);
    const size_t bsz = qt_ggml_type_size(type);
    qt_check_case(tb->shape[0] == rows && (size_t)tb->shape[1] == row_bytes, name,
                  "bytes shape (%lld, %lld), expected (%lld, %zu)", (long long)tb->shape[0],
                  (long long)tb->shape[1], (long long)rows, row_bytes);
    if (tb->shape[0] != rows || (size_t)tb->shape[1] != row_bytes) return;
    const uint8_t *ref = tb->data;

    uint8_t *ours = malloc(row_bytes * (size_t)rows);
    float *deq = malloc(sizeof(float) * (size_t)cols);
    int64_t diff_blocks = 0, first_row = -1, first_block = -1;
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *y = ours + (size_t)r * row_bytes;
        qt_status s = qt_ggml_quantize_row(type, x + r * cols, y, cols);
        qt_check_case(s == QT_OK, name, "quantize_row row %lld: %s", (long long)r,
                      qt_status_str(s));
        for (size_t b = 0; b < row_bytes / bsz; b++) {
            if (memcmp(y + b * bsz, ref + (size_t)r * row_bytes + b * bsz, bsz) != 0) {
                if (!diff_blocks) {
                    first_row = r;
                    first_block = (int64_t)b;
                }
                diff_blocks++;
            }
        }
    }
    const int64_t n_blocks = rows * (int64_t)(row_bytes / bsz);
    qt_check_case(diff_blocks == 0, name,
                  "%lld of %lld blocks differ from the reference (first: row %lld block %lld)",
                  (long long)diff_blocks, (long long)n_blocks, (long long)first_row,
                  (long long)first_block);
    printf("%s: %lld/%lld blocks byte-identical to the reference\n", name,
           (long long)(n_blocks - diff_blocks), (long long)n_blocks);

    /* our bytes dequantized == gguf-py's dequantization of the reference bytes */
    const int64_t deq_rows = td->shape[0];
    qt_check_case(td->shape[1] == cols && deq_rows <= rows, name, "deq shape (%lld, %lld)",
                  (long long)deq_rows, (long long)td->shape[1]);
    int64_t deq_bad = 0;
    for (int64_t r = 0; r < deq_rows && td->shape[1] == cols && deq_rows <= rows; r++) {
        qt_ggml_dequantize(type, ours + (size_t)r * row_bytes, deq, cols);
        const uint8_t *want = (const uint8_t *)td->data + (size_t)(r * cols) * sizeof(float);
        for (int64_t c = 0; c < cols; c++) {
            float w;
            memcpy(&w, want + c * sizeof(float), sizeof w);
            if (memcmp(&w, &deq[c], sizeof w) != 0) deq_bad++;
        }
    }
    qt_check_case(deq_bad == 0, name, "%lld dequantized values differ from gguf-py",
                  (long long)deq_bad);

    /* the matrix API: same blocks, dequantize and fake_quant agree */
    qt_qformat f = gguf_fmt(type);
    qt_qtensor q;
    qt_status s = qt_gguf_quantize(&f, x, rows, cols, &q);
    qt_check_case(s == QT_OK, name, "qt_gguf_quantize: %s %s", qt_status_str(s),
                  qt_error_message());
    if (s == QT_OK) {
        qt_check_case(q.rows == rows && q.cols == cols && q.fmt.kind == QT_QF_GGUF &&
                          q.fmt.ggml == type && q.nbytes == row_bytes * (size_t)rows &&
                          q.codes == NULL,
                      name, "qtensor fields (rows %lld cols %lld nbytes %zu)",
                      (long long)q.rows, (long long)q.cols, q.nbytes);
        qt_check_case(memcmp(q.blocks, ours, row_bytes * (size_t)rows) == 0, name,
                      "qt_gguf_quantize blocks differ from qt_ggml_quantize_row");
        float *dq = malloc(sizeof(float) * (size_t)(rows * cols));
        float *fq = malloc(sizeof(float) * (size_t)(rows * cols));
        uint8_t *mask = malloc((size_t)(rows * cols));
        memset(mask, 7, (size_t)(rows * cols));
        qt_status s1 = qt_gguf_dequantize(&q, dq);
        qt_status s2 = qt_gguf_fake_quant(&f, x, rows, cols, fq, mask);
        qt_check_case(s1 == QT_OK && s2 == QT_OK, name, "dequantize %s, fake_quant %s",
                      qt_status_str(s1), qt_status_str(s2));
        qt_check_case(memcmp(dq, fq, sizeof(float) * (size_t)(rows * cols)) == 0, name,
                      "fake_quant != dequantize(quantize)");
        int64_t ones = 0;
        for (int64_t i = 0; i < rows * cols; i++) ones += mask[i] == 1;
        qt_check_case(ones == rows * cols, name, "mask: %lld of %lld ones", (long long)ones,
                      (long long)(rows * cols));
        /* out aliasing w */
        memcpy(fq, x, sizeof(float) * (size_t)(rows * cols));
        s = qt_gguf_fake_quant(&f, fq, rows, cols, fq, NULL);
        qt_check_case(s == QT_OK && memcmp(dq, fq, sizeof(float) * (size_t)(rows * cols)) == 0,
                      name, "fake_quant in place differs");
        free(dq);
        free(fq);
        free(mask);
        free_blocks(&q);
    }
    free(ours);
    free(deq);
}

/* Enough elements for the parallel path: the whole-matrix calls equal row by row. */
static void check_parallel(void) {
    const int64_t rows = 160, cols = 1024;
    float *x = malloc(sizeof(float) * (size_t)(rows * cols));
    uint32_t s = 12345u;
    for (int64_t i = 0; i < rows * cols; i++) {
        s = s * 1664525u + 1013904223u; /* Numerical Recipes LCG */
        x[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * (float)(1 + (i / cols) % 7);
    }
    float *fq = malloc(sizeof(float) * (size_t)(rows * cols));
    float *row = malloc(sizeof(float) * (size_t)cols);
    for (int ti = 0; ti < N_TYPES; ti++) {
        const qt_ggml_type type = TYPES[ti].type;
        const size_t rb = qt_ggml_nbytes(type, cols);
        uint8_t *y = malloc(rb);
        qt_qformat f = gguf_fmt(type);
        qt_qtensor q;
        qt_status st = qt_gguf_quantize(&f, x, rows, cols, &q);
        qt_status st2 = qt_gguf_fake_quant(&f, x, rows, cols, fq, NULL);
        int64_t bad = 0;
        for (int64_t r = 0; r < rows && st == QT_OK && st2 == QT_OK; r++) {
            qt_ggml_quantize_row(type, x + r * cols, y, cols);
            bad += memcmp(y, q.blocks + (size_t)r * rb, rb) != 0;
            qt_ggml_dequantize(type, y, row, cols);
            bad += memcmp(row, fq + r * cols, sizeof(float) * (size_t)cols) != 0;
        }
        qt_check_case(st == QT_OK && st2 == QT_OK && bad == 0, TYPES[ti].name,
                      "parallel %lld x %lld: status %s/%s, %lld rows differ", (long long)rows,
                      (long long)cols, qt_status_str(st), qt_status_str(st2), (long long)bad);
        if (st == QT_OK) free_blocks(&q);
        free(y);
    }
    free(x);
    free(fq);
    free(row);
}

static void check_errors(void) {
    const int64_t rows = 4, cols = 256;
    float *x = calloc((size_t)(rows * cols), sizeof(float));
    float *out = malloc(sizeof(float) * (size_t)(rows * cols));
    qt_qformat f = gguf_fmt(QT_GGML_Q4_K);
    qt_qtensor q;
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 3; i++) {
        x[2 * cols + 37] = bad[i];
        qt_status s = qt_gguf_quantize(&f, x, rows, cols, &q);
        const char *msg = qt_error_message();
        CHECK(s == QT_ENUMERIC && q.blocks == NULL, "non-finite %g: quantize gave %s",
              (double)bad[i], qt_status_str(s));
        CHECK(strstr(msg, "row 2") && strstr(msg, "col 37"), "message names (2, 37): %s", msg);
        s = qt_gguf_fake_quant(&f, x, rows, cols, out, NULL);
        CHECK(s == QT_ENUMERIC, "non-finite %g: fake_quant gave %s", (double)bad[i],
              qt_status_str(s));
    }
    x[2 * cols + 37] = 0.0f;

    f.ggml = QT_GGML_Q4_0;
    CHECK(qt_gguf_quantize(&f, x, rows, 48, &q) == QT_EINVAL, "cols 48 is not a multiple of 32");
    f.ggml = QT_GGML_Q6_K;
    CHECK(qt_gguf_quantize(&f, x, 8, 128, &q) == QT_EINVAL, "cols 128 is not a multiple of 256");
    f.ggml = QT_GGML_F16;
    CHECK(qt_gguf_quantize(&f, x, rows, cols, &q) == QT_EDTYPE, "F16 has no block quantizer");
    uint8_t buf[256];
    CHECK(qt_ggml_quantize_row(QT_GGML_Q8_0, x, buf, 33) == QT_EINVAL, "row of 33 for Q8_0");
    CHECK(qt_ggml_quantize_row(QT_GGML_BF16, x, buf, 32) == QT_EDTYPE, "BF16 row");
    CHECK(qt_ggml_quantize_row(QT_GGML_Q2_K, x, buf, 0) == QT_OK, "empty row");
    int n_can = 0;
    for (int t = 0; t < QT_GGML_TYPE_LIMIT; t++) n_can += qt_ggml_can_quantize((qt_ggml_type)t);
    CHECK(n_can == N_TYPES, "qt_ggml_can_quantize is true for %d types, expected %d", n_can,
          N_TYPES);
    for (int ti = 0; ti < N_TYPES; ti++)
        CHECK(qt_ggml_can_quantize(TYPES[ti].type), "can_quantize(%s)", TYPES[ti].name);
    free(x);
    free(out);
}

int main(void) {
    const char *path = QT_FIXTURES "/gguf_quant_ref.safetensors";
    qt_safetensors *st = NULL;
    qt_status s = qt_safetensors_open(path, &st);
    CHECK(s == QT_OK, "open %s: %s %s", path, qt_status_str(s), qt_error_message());
    if (s == QT_OK) {
        const qt_st_tensor *tx = fixture_tensor(st, "x", QT_F32);
        if (tx) {
            const int64_t rows = tx->shape[0], cols = tx->shape[1];
            float *x = malloc(tx->nbytes);
            memcpy(x, tx->data, tx->nbytes); /* the file's data may be unaligned */
            for (int ti = 0; ti < N_TYPES; ti++) check_type(st, ti, x, rows, cols);
            free(x);
        }
        qt_safetensors_close(st);
    }
    check_parallel();
    check_errors();
    return qt_test_finish("test_quant_gguf");
}
