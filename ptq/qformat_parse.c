/*
 * qformat_parse.c - format names as recipes and the CLI write them, to qt_qformat:
 *   int2 .. int8     INT, with the granularity, group size, symmetry and scale dtype the
 *                    caller sets afterwards (defaults here: group 32, symmetric, f16)
 *   nf4, fp4         bitsandbytes 4-bit, blocksize 64, double quantization on (as
 *                    Params4bit's compress_statistics default)
 *   fp8_e4m3, fp8_e5m2   per-channel, f32 scales
 *   q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k iq4_nl iq4_xs
 *                    GGUF blocks (case-insensitive)
 */
#include <stdio.h>
#include <string.h>
#include <ctype.h>
#include <strings.h>

#include "qt_quant.h"

static const struct {
    const char *name;
    qt_ggml_type type;
    int bits;
} gguf_names[] = {
    {"q8_0", QT_GGML_Q8_0, 8}, {"q4_0", QT_GGML_Q4_0, 4}, {"q4_1", QT_GGML_Q4_1, 4},
    {"q5_0", QT_GGML_Q5_0, 5}, {"q5_1", QT_GGML_Q5_1, 5}, {"q2_k", QT_GGML_Q2_K, 2},
    {"q3_k", QT_GGML_Q3_K, 3}, {"q4_k", QT_GGML_Q4_K, 4}, {"q5_k", QT_GGML_Q5_K, 5},
    {"q6_k", QT_GGML_Q6_K, 6}, {"iq4_nl", QT_GGML_IQ4_NL, 4}, {"iq4_xs", QT_GGML_IQ4_XS, 4},
};

const char *qt_qformat_names(void) {
    return "int2..int8|nf4|fp4|fp8_e4m3 (fp8)|fp8_e5m2|q8_0|q4_0|q4_1|q5_0|q5_1|q2_k|q3_k|q4_k|q5_k|"
           "q6_k|iq4_nl|iq4_xs";
}

qt_status qt_qformat_parse(const char *name, qt_qformat *f) {
    memset(f, 0, sizeof *f);
    f->scale_dtype = QT_F32;
    if (!strncasecmp(name, "int", 3) && name[3] >= '2' && name[3] <= '8' && !name[4]) {
        f->kind = QT_QF_INT;
        f->bits = name[3] - '0';
        f->symmetric = true;
        f->gran = QT_QG_GROUP;
        f->group_size = 32;
        f->scale_dtype = QT_F16;
        return QT_OK;
    }
    if (!strcasecmp(name, "nf4") || !strcasecmp(name, "fp4")) {
        f->kind = tolower((unsigned char)name[0]) == 'n' ? QT_QF_NF4 : QT_QF_FP4;
        f->bits = 4;
        f->group_size = 64;
        f->double_quant = true;
        return QT_OK;
    }
    if (!strcasecmp(name, "fp8_e4m3") || !strcasecmp(name, "fp8_e5m2") || !strcasecmp(name, "fp8")) {
        f->kind = !strcasecmp(name, "fp8_e5m2") ? QT_QF_FP8_E5M2 : QT_QF_FP8_E4M3;
        f->bits = 8;
        f->gran = QT_QG_CHANNEL;
        return QT_OK;
    }
    for (size_t i = 0; i < sizeof gguf_names / sizeof gguf_names[0]; i++)
        if (!strcasecmp(name, gguf_names[i].name)) {
            f->kind = QT_QF_GGUF;
            f->ggml = gguf_names[i].type;
            f->bits = gguf_names[i].bits;
            return QT_OK;
        }
    return QT_ERROR(QT_EINVAL, "unknown quantization format \"%s\" (one of %s)", name,
                    qt_qformat_names());
}
