/*
 * export_fp8.c - FP8 E4M3 weights in compressed-tensors' "float-quantized" layout, as
 * llm-compressor writes W8A16 FP8 checkpoints and vLLM loads them
 * (CompressedTensorsW8A16Fp8: weight fp8 [out, in], weight_scale f32 [out, 1] for
 * strategy "channel", [1] for "tensor"). Config keys read from
 * vllm-project/compressed-tensors src/compressed_tensors/quantization/quant_config.py
 * (QuantizationConfig: config_groups, quant_method, format, quantization_status, ignore,
 * kv_cache_scheme, global_compression_ratio), quant_scheme.py (targets, weights,
 * input_activations, output_activations) and quant_args.py (num_bits, type, symmetric,
 * group_size, strategy, dynamic, ...).
 *
 * Dequantization: w = e4m3(q) * scale (the scale of the row, or the tensor's).
 */
#include <stdlib.h>
#include <string.h>

#include "export_internal.h"

static qt_status emit_fp8(qt_xst *x, const qt_qlinear *l, const char *prefix, void *user) {
    (void)user;
    const qt_qtensor *q = &l->q;
    const int64_t n = q->rows * q->cols, ns = q->n_scales;
    uint8_t *w = malloc((size_t)n);
    float *sc = malloc((size_t)ns * 4);
    if (!w || !sc) {
        free(w), free(sc);
        return QT_ERROR(QT_ENOMEM, "export fp8: out of memory for %s", l->name);
    }
    memcpy(w, q->codes, (size_t)n);
    memcpy(sc, q->scales, (size_t)ns * 4);
    char nm[192];
    snprintf(nm, sizeof nm, "%s.weight", prefix);
    qt_status s = qt_xst_add(x, nm, QT_U8, "F8_E4M3", 2, (int64_t[]){q->rows, q->cols}, w, (size_t)n);
    snprintf(nm, sizeof nm, "%s.weight_scale", prefix);
    bool per_row = q->fmt.gran == QT_QG_CHANNEL;
    if (s == QT_OK)
        s = qt_xst_add(x, nm, QT_F32, NULL, per_row ? 2 : 1, (int64_t[]){ns, 1}, sc, (size_t)ns * 4);
    else free(sc);
    return s;
}

static cJSON *fp8_config(const qt_qmodel *qm, const qt_export_opts *o) {
    (void)o;
    cJSON *qc = cJSON_CreateObject();
    if (!qc) return NULL;
    bool chan = qm->n ? qm->layers[0].q.fmt.gran == QT_QG_CHANNEL : true;
    cJSON_AddStringToObject(qc, "quant_method", "compressed-tensors");
    cJSON_AddStringToObject(qc, "format", "float-quantized");
    cJSON_AddStringToObject(qc, "quantization_status", "compressed");
    cJSON *groups = cJSON_AddObjectToObject(qc, "config_groups");
    cJSON *g0 = groups ? cJSON_AddObjectToObject(groups, "group_0") : NULL;
    cJSON *targets = g0 ? cJSON_AddArrayToObject(g0, "targets") : NULL;
    if (targets) cJSON_AddItemToArray(targets, cJSON_CreateString("Linear"));
    cJSON *w = g0 ? cJSON_AddObjectToObject(g0, "weights") : NULL;
    if (w) {
        cJSON_AddNumberToObject(w, "num_bits", 8);
        cJSON_AddStringToObject(w, "type", "float");
        cJSON_AddStringToObject(w, "strategy", chan ? "channel" : "tensor");
        cJSON_AddBoolToObject(w, "symmetric", true);
        cJSON_AddBoolToObject(w, "dynamic", false);
        cJSON_AddNullToObject(w, "group_size");
        cJSON_AddNullToObject(w, "block_structure");
        cJSON_AddNullToObject(w, "actorder");
        cJSON_AddStringToObject(w, "observer", "minmax");
    }
    if (g0) {
        cJSON_AddNullToObject(g0, "input_activations");
        cJSON_AddNullToObject(g0, "output_activations");
    }
    cJSON *ign = qt_export_unquantized(qm, true);
    cJSON_AddItemToObject(qc, "ignore", ign ? ign : cJSON_CreateArray());
    cJSON_AddNullToObject(qc, "kv_cache_scheme");
    cJSON_AddNullToObject(qc, "global_compression_ratio");
    if (!w) {
        cJSON_Delete(qc);
        return NULL;
    }
    return qc;
}

qt_status qt_export_fp8(const qt_qmodel *qm, const qt_export_opts *o, const char *dir) {
    return qt_export_st_dir(qm, o, dir, QT_EXPORT_FP8, emit_fp8, fp8_config, NULL);
}
