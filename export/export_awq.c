/*
 * export_awq.c - AWQ checkpoints in AutoAWQ's GEMM layout (version "gemm"), which
 * transformers and vLLM (awq.py) load. Layout read from AutoAWQ
 * awq/modules/linear/gemm.py (WQLinear_GEMM.from_linear) and awq/utils/packing_utils.py;
 * summary in ../shared/FORMATS.md "AWQ".
 *
 * For a Linear X with out x in weight (4-bit, group length G):
 *   X.qweight i32 [in, out/8]: word c of input row i holds the codes of outputs
 *             8c + order[k] in bits 4k..4k+3, order = [0, 2, 4, 6, 1, 3, 5, 7];
 *   X.qzeros  i32 [in/G, out/8]: zero points, packed the same way, stored as they are
 *             (symmetric: 8 everywhere);
 *   X.scales  f16 [in/G, out].
 * Dequantization: w[o, i] = (q - z) * s with the group g = i / G.
 */
#include <stdlib.h>
#include <string.h>

#include "export_internal.h"

static const int awq_order[8] = {0, 2, 4, 6, 1, 3, 5, 7};

static qt_status emit_awq(qt_xst *x, const qt_qlinear *l, const char *prefix, void *user) {
    (void)user;
    const qt_qtensor *q = &l->q;
    const int64_t out = q->rows, in = q->cols, G = qt_xint_glen(q), ng = in / G, w8 = out / 8;
    uint32_t *qw = calloc((size_t)(in * w8), 4), *qz = calloc((size_t)(ng * w8), 4);
    uint16_t *sc = malloc((size_t)(ng * out) * 2);
    if (!qw || !qz || !sc) {
        free(qw), free(qz), free(sc);
        return QT_ERROR(QT_ENOMEM, "export awq: out of memory for %s", l->name);
    }
    for (int64_t i = 0; i < in; i++)
        for (int64_t c = 0; c < w8; c++) {
            uint32_t w = 0;
            for (int k = 0; k < 8; k++) w |= (uint32_t)(q->codes[(8 * c + awq_order[k]) * in + i] & 15) << (4 * k);
            qw[i * w8 + c] = w;
        }
    for (int64_t g = 0; g < ng; g++) {
        for (int64_t o = 0; o < out; o++)
            sc[g * out + o] = qt_f32_to_f16(q->scales[qt_xint_group(q, o, g * G)]);
        for (int64_t c = 0; c < w8; c++) {
            uint32_t w = 0;
            for (int k = 0; k < 8; k++)
                w |= (uint32_t)qt_xint_zero(q, qt_xint_group(q, 8 * c + awq_order[k], g * G)) << (4 * k);
            qz[g * w8 + c] = w;
        }
    }
    char nm[192];
    snprintf(nm, sizeof nm, "%s.qweight", prefix);
    qt_status s = qt_xst_add(x, nm, QT_I32, NULL, 2, (int64_t[]){in, w8}, qw, (size_t)(in * w8) * 4);
    snprintf(nm, sizeof nm, "%s.qzeros", prefix);
    if (s == QT_OK) s = qt_xst_add(x, nm, QT_I32, NULL, 2, (int64_t[]){ng, w8}, qz, (size_t)(ng * w8) * 4);
    else free(qz);
    snprintf(nm, sizeof nm, "%s.scales", prefix);
    if (s == QT_OK) s = qt_xst_add(x, nm, QT_F16, NULL, 2, (int64_t[]){ng, out}, sc, (size_t)(ng * out) * 2);
    else free(sc);
    return s;
}

static cJSON *awq_config(const qt_qmodel *qm, const qt_export_opts *o) {
    (void)o;
    cJSON *qc = cJSON_CreateObject();
    if (!qc) return NULL;
    const qt_qtensor *q0 = qm->n ? &qm->layers[0].q : NULL;
    cJSON_AddStringToObject(qc, "quant_method", "awq");
    cJSON_AddBoolToObject(qc, "zero_point", q0 ? !q0->fmt.symmetric : true);
    cJSON_AddNumberToObject(qc, "group_size", q0 ? (double)qt_xint_glen(q0) : 128);
    cJSON_AddNumberToObject(qc, "bits", 4);
    cJSON_AddStringToObject(qc, "version", "gemm");
    cJSON *skip = qt_export_unquantized(qm, false);
    if (skip) cJSON_AddItemToObject(qc, "modules_to_not_convert", skip);
    else cJSON_AddNullToObject(qc, "modules_to_not_convert");
    return qc;
}

qt_status qt_export_awq(const qt_qmodel *qm, const qt_export_opts *o, const char *dir) {
    return qt_export_st_dir(qm, o, dir, QT_EXPORT_AWQ, emit_awq, awq_config, NULL);
}
