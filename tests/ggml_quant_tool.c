/*
 * ggml_quant_tool.c - test helper for tests/test_quant_gguf_interop.py: quantizes a
 * matrix with the quantizer core's GGUF formats and writes what it got, so the script can
 * compare it with llama.cpp's own ggml_quantize_chunk and dequantize_row_* (through
 * ctypes) and with gguf-py.
 *
 *   ggml_quant_tool TYPE ROWS COLS X IMATRIX OUT_BYTES OUT_DEQ
 *
 * TYPE: a format name (q4_0, q4_k, iq4_xs, ...). X: ROWS * COLS little-endian f32,
 * row-major. IMATRIX: COLS f32 (the importance of each column, used for every row, as
 * llama-quantize passes an imatrix entry) or "-" for none. Writes the blocks of
 * qt_quantize (OUT_BYTES) and qt_dequantize of them (OUT_DEQ, f32). Before writing it
 * checks, and exits 1 naming the first difference otherwise, that the row API
 * (qt_ggml_quantize_row_weighted, row by row) gives the same blocks and that
 * qt_fake_quant gives exactly the dequantized values, in a separate buffer and in place.
 * Exit 2 for bad arguments or files.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qt_quant.h"

static void *slurp(const char *path, size_t want) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    void *buf = malloc(want ? want : 1);
    size_t got = buf ? fread(buf, 1, want, f) : 0;
    int extra = fgetc(f);
    fclose(f);
    if (!buf || got != want || extra != EOF) {
        free(buf);
        return NULL;
    }
    return buf;
}

static int spill(const char *path, const void *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    size_t put = fwrite(buf, 1, n, f);
    return (fclose(f) != 0 || put != n) ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: ggml_quant_tool TYPE ROWS COLS X IMATRIX|- OUT_BYTES OUT_DEQ\n");
        return 2;
    }
    qt_qformat f;
    if (qt_qformat_parse(argv[1], &f) != QT_OK || f.kind != QT_QF_GGUF) {
        fprintf(stderr, "ggml_quant_tool: %s is not a GGUF format: %s\n", argv[1],
                qt_error_message());
        return 2;
    }
    const int64_t rows = atoll(argv[2]), cols = atoll(argv[3]);
    if (rows <= 0 || cols <= 0 || rows * cols > (1 << 26)) {
        fprintf(stderr, "ggml_quant_tool: bad shape %s x %s\n", argv[2], argv[3]);
        return 2;
    }
    const size_t n = (size_t)(rows * cols);
    float *x = slurp(argv[4], n * sizeof(float));
    float *imat = strcmp(argv[5], "-") ? slurp(argv[5], (size_t)cols * sizeof(float)) : NULL;
    if (!x || (strcmp(argv[5], "-") && !imat)) {
        fprintf(stderr, "ggml_quant_tool: cannot read %s floats from %s / %s\n", argv[2],
                argv[4], argv[5]);
        return 2;
    }
    f.importance = imat;
    int rc = 0;
    qt_qtensor q;
    qt_status s = qt_quantize(&f, x, rows, cols, &q);
    if (s != QT_OK) {
        fprintf(stderr, "ggml_quant_tool: quantize %s: %s\n", argv[1], qt_error_message());
        return 1;
    }
    const size_t row_bytes = q.nbytes / (size_t)rows;
    uint8_t *row = malloc(row_bytes);
    float *deq = malloc(n * sizeof(float)), *fq = malloc(n * sizeof(float));
    for (int64_t r = 0; r < rows && rc == 0; r++) {
        s = qt_ggml_quantize_row_weighted(f.ggml, x + r * cols, row, cols, imat);
        if (s != QT_OK || memcmp(row, q.blocks + (size_t)r * row_bytes, row_bytes)) {
            fprintf(stderr, "ggml_quant_tool: %s row %lld: the row API differs from qt_quantize "
                    "(%s)\n", argv[1], (long long)r, qt_status_str(s));
            rc = 1;
        }
    }
    if (rc == 0 && (s = qt_dequantize(&q, deq)) != QT_OK) {
        fprintf(stderr, "ggml_quant_tool: dequantize: %s\n", qt_error_message());
        rc = 1;
    }
    if (rc == 0 && ((s = qt_fake_quant(&f, x, rows, cols, fq, NULL)) != QT_OK ||
                    memcmp(fq, deq, n * sizeof(float)))) {
        fprintf(stderr, "ggml_quant_tool: %s: fake_quant != dequantize(quantize) (%s)\n", argv[1],
                qt_status_str(s));
        rc = 1;
    }
    if (rc == 0 && ((s = qt_fake_quant(&f, x, rows, cols, x, NULL)) != QT_OK ||
                    memcmp(x, deq, n * sizeof(float)))) {
        fprintf(stderr, "ggml_quant_tool: %s: fake_quant in place differs (%s)\n", argv[1],
                qt_status_str(s));
        rc = 1;
    }
    if (rc == 0 && (spill(argv[6], q.blocks, q.nbytes) || spill(argv[7], deq, n * sizeof(float)))) {
        fprintf(stderr, "ggml_quant_tool: cannot write %s / %s\n", argv[6], argv[7]);
        rc = 2;
    }
    qt_qtensor_free(&q);
    free(row);
    free(deq);
    free(fq);
    free(x);
    free(imat);
    return rc;
}
