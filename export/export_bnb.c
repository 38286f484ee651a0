/*
 * export_bnb.c - bitsandbytes 4-bit (NF4) checkpoints as transformers saves a model
 * loaded with load_in_4bit (Params4bit + QuantState.as_dict(packed=True)), read from
 * bitsandbytes 0.50 functional.py (QuantState.as_dict / from_dict, pack_dict_to_tensor)
 * and nn/modules.py (Params4bit); summary in ../shared/FORMATS.md "bitsandbytes".
 *
 * For a Linear X with n = out*in weights in blocks of B:
 *   X.weight                                u8 [(n+1)/2, 1], element 2j in the HIGH nibble
 *   X.weight.absmax                         f32 [nb], or u8 [nb] codes with double quant
 *   X.weight.quant_map                      f32 [16], the NF4 codebook
 *   X.weight.nested_absmax                  f32 [ceil(nb/256)]        (double quant)
 *   X.weight.nested_quant_map               f32 [256], the dynamic map (double quant)
 *   X.weight.quant_state.bitsandbytes__nf4  u8, the bytes of the JSON object
 *       {quant_type, blocksize, dtype, shape, [nested_blocksize, nested_dtype,
 *        nested_offset]} (json.dumps of as_dict's non-tensor items).
 * "dtype" is the dtype dequantize_4bit returns. It is written "float32": qtrain's
 * dequantized weights are f32 (quant_map[q] * absmax), so the file then dequantizes to
 * exactly the weights the model was evaluated with; bitsandbytes casts them to the
 * compute dtype (bnb_4bit_compute_dtype) in the matmul.
 */
#include <stdlib.h>
#include <string.h>

#include "export_internal.h"

static void *dup_bytes(const void *p, size_t n) {
    void *d = malloc(n ? n : 1);
    if (d) memcpy(d, p, n);
    return d;
}

static qt_status emit_bnb(qt_xst *x, const qt_qlinear *l, const char *prefix, void *user) {
    (void)user;
    const qt_qtensor *q = &l->q;
    const bool dq = q->fmt.double_quant;
    const int64_t n = q->rows * q->cols, np = (n + 1) / 2, nb = q->n_scales;
    uint8_t *packed = malloc((size_t)np);
    cJSON *js = cJSON_CreateObject();
    if (!packed || !js) {
        free(packed);
        cJSON_Delete(js);
        return QT_ERROR(QT_ENOMEM, "export bnb-nf4: out of memory for %s", l->name);
    }
    for (int64_t j = 0; j < np; j++)
        packed[j] = (uint8_t)((q->codes[2 * j] & 15) << 4 |
                              (2 * j + 1 < n ? q->codes[2 * j + 1] & 15 : 0));
    cJSON_AddStringToObject(js, "quant_type", "nf4");
    cJSON_AddNumberToObject(js, "blocksize", q->fmt.group_size);
    cJSON_AddStringToObject(js, "dtype", "float32");
    cJSON *shape = cJSON_AddArrayToObject(js, "shape");
    if (shape) {
        cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)q->rows));
        cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)q->cols));
    }
    if (dq) {
        cJSON_AddNumberToObject(js, "nested_blocksize", 256);
        cJSON_AddStringToObject(js, "nested_dtype", "float32");
        cJSON_AddNumberToObject(js, "nested_offset", (double)q->offset);
    }
    char *text = cJSON_PrintUnformatted(js);
    cJSON_Delete(js);
    size_t tl = text ? strlen(text) : 0;
    void *qs = text ? dup_bytes(text, tl) : NULL;
    cJSON_free(text);
    char nm[224];
    snprintf(nm, sizeof nm, "%s.weight", prefix);
    qt_status s = qt_xst_add(x, nm, QT_U8, NULL, 2, (int64_t[]){np, 1}, packed, (size_t)np);
    snprintf(nm, sizeof nm, "%s.weight.absmax", prefix);
    void *am = dq ? dup_bytes(q->absmax_q, (size_t)nb) : dup_bytes(q->scales, (size_t)nb * 4);
    if (s == QT_OK)
        s = qt_xst_add(x, nm, dq ? QT_U8 : QT_F32, NULL, 1, (int64_t[]){nb}, am,
                       (size_t)nb * (dq ? 1 : 4));
    else free(am);
    snprintf(nm, sizeof nm, "%s.weight.quant_map", prefix);
    void *qm16 = dup_bytes(qt_nf4_codebook(), 16 * 4);
    if (s == QT_OK) s = qt_xst_add(x, nm, QT_F32, NULL, 1, (int64_t[]){16}, qm16, 64);
    else free(qm16);
    if (dq) {
        snprintf(nm, sizeof nm, "%s.weight.nested_absmax", prefix);
        void *a2 = dup_bytes(q->absmax2, (size_t)q->n_absmax2 * 4);
        if (s == QT_OK)
            s = qt_xst_add(x, nm, QT_F32, NULL, 1, (int64_t[]){q->n_absmax2}, a2,
                           (size_t)q->n_absmax2 * 4);
        else free(a2);
        snprintf(nm, sizeof nm, "%s.weight.nested_quant_map", prefix);
        void *dm = dup_bytes(qt_dynamic_map(), 256 * 4);
        if (s == QT_OK) s = qt_xst_add(x, nm, QT_F32, NULL, 1, (int64_t[]){256}, dm, 1024);
        else free(dm);
    }
    snprintf(nm, sizeof nm, "%s.weight.quant_state.bitsandbytes__nf4", prefix);
    if (s == QT_OK && !qs) s = QT_ERROR(QT_ENOMEM, "export bnb-nf4: out of memory for %s", l->name);
    if (s == QT_OK) s = qt_xst_add(x, nm, QT_U8, NULL, 1, (int64_t[]){(int64_t)tl}, qs, tl);
    else free(qs);
    return s;
}

static const char *torch_dtype(qt_dtype t) {
    return t == QT_BF16 ? "bfloat16" : t == QT_F16 ? "float16" : "float32";
}

static cJSON *bnb_config(const qt_qmodel *qm, const qt_export_opts *o) {
    cJSON *qc = cJSON_CreateObject();
    if (!qc) return NULL;
    bool dq = qm->n ? qm->layers[0].q.fmt.double_quant : true;
    cJSON_AddStringToObject(qc, "quant_method", "bitsandbytes");
    cJSON_AddBoolToObject(qc, "load_in_4bit", true);
    cJSON_AddBoolToObject(qc, "load_in_8bit", false);
    cJSON_AddStringToObject(qc, "bnb_4bit_quant_type", "nf4");
    cJSON_AddBoolToObject(qc, "bnb_4bit_use_double_quant", dq);
    cJSON_AddStringToObject(qc, "bnb_4bit_compute_dtype", torch_dtype(o->st_float));
    cJSON_AddStringToObject(qc, "bnb_4bit_quant_storage", "uint8");
    /* llm_int8_threshold left out: cJSON writes 6.0 as 6, and transformers
     * insists on a float there; its default is 6.0 */
    cJSON_AddBoolToObject(qc, "llm_int8_has_fp16_weight", false);
    cJSON_AddBoolToObject(qc, "llm_int8_enable_fp32_cpu_offload", false);
    /* a list, never null: null makes transformers skip its default set (the
     * lm_head), which would expect a float lm_head even when it is quantized here */
    cJSON *skip = qt_export_unquantized(qm, true);
    cJSON_AddItemToObject(qc, "llm_int8_skip_modules", skip ? skip : cJSON_CreateArray());
    return qc;
}

qt_status qt_export_bnb_nf4(const qt_qmodel *qm, const qt_export_opts *o, const char *dir) {
    return qt_export_st_dir(qm, o, dir, QT_EXPORT_BNB_NF4, emit_bnb, bnb_config, NULL);
}
