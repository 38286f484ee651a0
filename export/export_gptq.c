/*
 * export_gptq.c - GPTQ checkpoints as AutoGPTQ writes them (v1, checkpoint_format
 * "gptq") and transformers / vLLM load them. Layout read from AutoGPTQ
 * auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py (QuantLinear.pack) and vLLM
 * model_executor/layers/quantization/gptq.py; summary in ../shared/FORMATS.md "GPTQ".
 *
 * For a Linear X with out x in weight, `bits` b and group length G (-1 = one group):
 *   X.qweight  i32 [in*b/32, out]: each output column is a little-endian bit stream of
 *              the codes of its inputs in ORIGINAL input order, b bits each, LSB first
 *              (b = 2, 4, 8: 32/b rows per word; b = 3: 32 rows per 3 words, values
 *              straddling word boundaries, which is what AutoGPTQ's 3-bit pack() builds);
 *   X.qzeros   i32 [n_groups, out*b/32]: z - 1 per (group, output), the same bit stream
 *              along the output columns (v1 stores z - 1; dequant adds 1 back);
 *   X.scales   f16 [n_groups, out];
 *   X.g_idx    i32 [in]: group of each input. With act-order (desc_act) column i of the
 *              codes is input perm[i] and groups are runs of G in that order, so
 *              g_idx[perm[i]] = i / G.
 * Dequantization: w[o, i] = scales[g, o] * (q[i, o] - (qzeros[g, o] + 1)), g = g_idx[i].
 * Symmetric: z = 2^(b-1), stored 2^(b-1) - 1 as AutoGPTQ does.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "export_internal.h"

static qt_status emit_gptq(qt_xst *x, const qt_qlinear *l, const char *prefix, void *user) {
    (void)user;
    const qt_qtensor *q = &l->q;
    const int64_t out = q->rows, in = q->cols, b = q->fmt.bits;
    const int64_t G = qt_xint_glen(q), ng = in / G, wpc = in * b / 32, wpz = out * b / 32;
    uint32_t *qw = calloc((size_t)(wpc * out), 4), *qz = calloc((size_t)(ng * wpz), 4);
    uint16_t *sc = malloc((size_t)(ng * out) * 2);
    int32_t *gi = malloc((size_t)in * 4);
    if (!qw || !qz || !sc || !gi) {
        free(qw), free(qz), free(sc), free(gi);
        return QT_ERROR(QT_ENOMEM, "export gptq: out of memory for %s", l->name);
    }
    /* code column j holds input perm[j] */
    for (int64_t j = 0; j < in; j++) {
        const int64_t i = l->perm ? l->perm[j] : j;
        gi[i] = (int32_t)(j / G);
        for (int64_t o = 0; o < out; o++) {
            uint32_t v = q->codes[o * in + j];
            for (int64_t k = 0; k < b; k++) {
                int64_t pos = i * b + k;
                if ((v >> k) & 1u) qw[(pos >> 5) * out + o] |= 1u << (pos & 31);
            }
        }
    }
    for (int64_t g = 0; g < ng; g++)
        for (int64_t o = 0; o < out; o++) {
            int64_t si = qt_xint_group(q, o, g * G);
            sc[g * out + o] = qt_f32_to_f16(q->scales[si]);
            qt_xbits_put(qz + g * wpz, o * b, (int)b, (uint32_t)(qt_xint_zero(q, si) - 1));
        }
    char nm[192];
    qt_status s;
    snprintf(nm, sizeof nm, "%s.qweight", prefix);
    s = qt_xst_add(x, nm, QT_I32, NULL, 2, (int64_t[]){wpc, out}, qw, (size_t)(wpc * out) * 4);
    snprintf(nm, sizeof nm, "%s.qzeros", prefix);
    if (s == QT_OK) s = qt_xst_add(x, nm, QT_I32, NULL, 2, (int64_t[]){ng, wpz}, qz, (size_t)(ng * wpz) * 4);
    else free(qz);
    snprintf(nm, sizeof nm, "%s.scales", prefix);
    if (s == QT_OK) s = qt_xst_add(x, nm, QT_F16, NULL, 2, (int64_t[]){ng, out}, sc, (size_t)(ng * out) * 2);
    else free(sc);
    snprintf(nm, sizeof nm, "%s.g_idx", prefix);
    if (s == QT_OK) s = qt_xst_add(x, nm, QT_I32, NULL, 1, (int64_t[]){in}, gi, (size_t)in * 4);
    else free(gi);
    return s;
}

/* quantize_config.json, also config.json's quantization_config */
static cJSON *gptq_config(const qt_qmodel *qm, const qt_export_opts *o) {
    (void)o;
    const qt_qformat *f = qm->n ? &qm->layers[0].q.fmt : NULL;
    bool desc = false, head = false;
    for (int i = 0; i < qm->n; i++) {
        desc = desc || qm->layers[i].perm;
        head = head || !strcmp(qm->layers[i].name, "lm_head.weight");
    }
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON_AddNumberToObject(j, "bits", f ? f->bits : 4);
    cJSON_AddNumberToObject(j, "group_size", f && f->gran == QT_QG_GROUP ? f->group_size : -1);
    /* the f32 damping as the decimal it was written as (0.01, not 0.0099999998) */
    cJSON_AddNumberToObject(j, "damp_percent", qm->damp > 0 ? round(qm->damp * 1e6) / 1e6 : 0.01);
    cJSON_AddBoolToObject(j, "desc_act", desc);
    cJSON_AddBoolToObject(j, "static_groups", false);
    cJSON_AddBoolToObject(j, "sym", f ? f->symmetric : true);
    cJSON_AddBoolToObject(j, "true_sequential", true);
    cJSON_AddBoolToObject(j, "lm_head", head);
    cJSON_AddNullToObject(j, "model_name_or_path");
    cJSON_AddStringToObject(j, "model_file_base_name", "model");
    cJSON_AddStringToObject(j, "quant_method", "gptq");
    cJSON_AddStringToObject(j, "checkpoint_format", "gptq");
    return j;
}

qt_status qt_export_gptq(const qt_qmodel *qm, const qt_export_opts *o, const char *dir) {
    return qt_export_st_dir(qm, o, dir, QT_EXPORT_GPTQ, emit_gptq, gptq_config,
                            "quantize_config.json");
}
