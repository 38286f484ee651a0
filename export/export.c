/*
 * export.c - the exporters' front door (qt_export.h): format names, the default
 * quantizer-core format of each exporter, options, the dispatcher, and qt_export_check,
 * which every exporter runs first so nothing is written for a model the format cannot
 * hold exactly.
 *
 * What each format can hold (see the exporter files for sources):
 *   - GPTQ (AutoGPTQ v1 "gptq" checkpoints): INT 2/3/4/8 bits, f16 scales, one group
 *     size and one symmetry for the whole model (quantize_config.json is global), every
 *     Linear of the decoder blocks quantized (transformers and vLLM expect qweight for
 *     each), asymmetric zero points >= 1 (v1 stores z - 1), act-order permutations;
 *   - AWQ GEMM: INT 4-bit, f16 scales, one group size and symmetry, out % 8 == 0, no
 *     permutation, no quantized lm_head;
 *   - bitsandbytes: NF4 (FP4 is not this exporter's), one double-quant setting;
 *   - FP8 compressed-tensors: E4M3, per-tensor or per-channel (one for the model);
 *   - GGUF: GGUF block types.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "export_internal.h"

static const char *const fmt_names[QT_EXPORT_COUNT] = {
    [QT_EXPORT_GGUF] = "gguf", [QT_EXPORT_GPTQ] = "gptq", [QT_EXPORT_AWQ] = "awq",
    [QT_EXPORT_BNB_NF4] = "bnb-nf4", [QT_EXPORT_FP8] = "fp8",
};

qt_status qt_export_format_parse(const char *name, qt_export_format *out) {
    for (int i = 0; name && i < QT_EXPORT_COUNT; i++)
        if (!strcmp(name, fmt_names[i])) {
            *out = (qt_export_format)i;
            return QT_OK;
        }
    return QT_ERROR(QT_EINVAL, "export format \"%s\": expected gguf, gptq, awq, bnb-nf4 or fp8",
                    name ? name : "(null)");
}

const char *qt_export_format_name(qt_export_format f) {
    return (unsigned)f < QT_EXPORT_COUNT ? fmt_names[f] : "?";
}

void qt_export_default_qformat(qt_export_format f, qt_qformat *out) {
    memset(out, 0, sizeof *out);
    out->scale_dtype = QT_F32;
    switch (f) {
    case QT_EXPORT_GPTQ:
    case QT_EXPORT_AWQ:
        out->kind = QT_QF_INT;
        out->bits = 4;
        out->symmetric = f == QT_EXPORT_GPTQ;
        out->gran = QT_QG_GROUP;
        out->group_size = 128;
        out->scale_dtype = QT_F16;
        break;
    case QT_EXPORT_BNB_NF4:
        out->kind = QT_QF_NF4;
        out->bits = 4;
        out->group_size = 64;
        out->double_quant = true;
        break;
    case QT_EXPORT_FP8:
        out->kind = QT_QF_FP8_E4M3;
        out->bits = 8;
        out->gran = QT_QG_CHANNEL;
        break;
    default: /* GGUF */
        out->kind = QT_QF_GGUF;
        out->bits = 8;
        out->ggml = QT_GGML_Q8_0;
        break;
    }
}

void qt_export_opts_defaults(qt_export_opts *o) {
    memset(o, 0, sizeof *o);
    o->version = "";
    o->gguf_float = QT_GGML_F32;
    o->st_float = QT_F16;
}

/* --------------------------------------------------------------------- check ---- */

static const qt_tensor *find_param(const qt_model *m, const char *name) {
    const qt_paramset *ps = &m->llama.params;
    for (int i = 0; i < ps->n; i++)
        if (!strcmp(ps->params[i]->name, name)) return ps->params[i];
    return NULL;
}

static bool is_decoder_linear(const char *name) {
    size_t n = strlen(name);
    return !strncmp(name, "model.layers.", 13) && n > 12 &&
           !strcmp(name + n - 12, "_proj.weight");
}

#define REFUSE(...) return QT_ERROR(QT_EINVAL, __VA_ARGS__)

/* One layer against format f. */
static qt_status check_layer(const qt_qlinear *l, qt_export_format f, const char *ename) {
    const qt_qtensor *q = &l->q;
    const qt_qformat *qf = &q->fmt;
    char fs[64];
    qt_qformat_str(qf, fs, sizeof fs);
    if (l->perm && f != QT_EXPORT_GPTQ)
        REFUSE("export %s: layer %s (%s) has an act-order permutation; only the gptq exporter "
               "stores one (g_idx)", ename, l->name, fs);
    switch (f) {
    case QT_EXPORT_GPTQ:
    case QT_EXPORT_AWQ: {
        bool gptq = f == QT_EXPORT_GPTQ;
        if (qf->kind != QT_QF_INT || (gptq && qf->bits != 2 && qf->bits != 3 && qf->bits != 4 &&
                                      qf->bits != 8) || (!gptq && qf->bits != 4))
            REFUSE("export %s: layer %s is %s; %s needs INT %s with f16 scales", ename, l->name,
                   fs, ename, gptq ? "2, 3, 4 or 8 bits" : "4-bit");
        if (qf->scale_dtype != QT_F16)
            REFUSE("export %s: layer %s is %s; %s stores f16 scales, so quantize with f16 "
                   "scales (scale_dtype f16)", ename, l->name, fs, ename);
        for (int64_t i = 0; i < q->n_scales; i++)
            if (qt_f16_to_f32(qt_f32_to_f16(q->scales[i])) != q->scales[i])
                REFUSE("export %s: layer %s (%s): scale %lld = %g is not exact in f16", ename,
                       l->name, fs, (long long)i, (double)q->scales[i]);
        /* GPTQ packs 32/bits input rows (qweight) and output columns (qzeros) per int32;
         * 3-bit: 32 values per 3 int32 */
        int need = qf->bits == 3 ? 32 : 32 / qf->bits;
        if (gptq && (q->cols % need || q->rows % need))
            REFUSE("export gptq: layer %s (%s) is %lld x %lld; %d-bit packing needs in and out "
                   "features multiples of %d", l->name, fs, (long long)q->rows,
                   (long long)q->cols, qf->bits, need);
        if (!gptq && q->rows % 8)
            REFUSE("export awq: layer %s (%s) has %lld output features; AWQ packs 8 per int32",
                   l->name, fs, (long long)q->rows);
        if (gptq && q->zeros)
            for (int64_t i = 0; i < q->n_scales; i++)
                if (q->zeros[i] == 0)
                    REFUSE("export gptq: layer %s (%s) has zero point 0 (scale %lld); GPTQ v1 "
                           "checkpoints store z - 1 and cannot hold it: quantize symmetric, or "
                           "with a range that includes a negative value per group",
                           l->name, fs, (long long)i);
        if (!gptq && !strcmp(l->name, "lm_head.weight"))
            REFUSE("export awq: layer lm_head.weight (%s) is quantized; AWQ checkpoints keep "
                   "the lm_head in float", fs);
        break;
    }
    case QT_EXPORT_BNB_NF4:
        if (qf->kind != QT_QF_NF4)
            REFUSE("export bnb-nf4: layer %s is %s; bnb-nf4 needs NF4 (bitsandbytes blocks)",
                   l->name, fs);
        if (qf->double_quant && (!q->absmax_q || !q->absmax2))
            REFUSE("export bnb-nf4: layer %s (%s) lacks its double-quantization statistics",
                   l->name, fs);
        break;
    case QT_EXPORT_FP8:
        if (qf->kind != QT_QF_FP8_E4M3 || (qf->gran != QT_QG_TENSOR && qf->gran != QT_QG_CHANNEL))
            REFUSE("export fp8: layer %s is %s; fp8 needs FP8 E4M3 per-tensor or per-channel",
                   l->name, fs);
        break;
    case QT_EXPORT_GGUF:
        if (qf->kind != QT_QF_GGUF || !qt_ggml_can_quantize(qf->ggml))
            REFUSE("export gguf: layer %s is %s; gguf needs a GGUF block type (q8_0, q4_k, ...)",
                   l->name, fs);
        break;
    default:
        REFUSE("export: unknown format %d", (int)f);
    }
    return QT_OK;
}

qt_status qt_export_check(const qt_qmodel *qm, qt_export_format f) {
    if (!qm || !qm->model) REFUSE("export: no model");
    const char *ename = qt_export_format_name(f);
    if ((unsigned)f >= QT_EXPORT_COUNT) REFUSE("export: unknown format %d", (int)f);
    if (qm->model->arch != QT_ARCH_LLAMA)
        REFUSE("export %s: the model is GPT-2 (%s); the exporters write llama-architecture "
               "checkpoints (Llama, Mistral, Qwen2)", ename,
               qm->model->hf_arch[0] ? qm->model->hf_arch : "GPT2LMHeadModel");
    const qt_qlinear *first = NULL;
    for (int i = 0; i < qm->n; i++) {
        const qt_qlinear *l = &qm->layers[i];
        const qt_tensor *p = find_param(qm->model, l->name);
        if (!p)
            REFUSE("export %s: quantized layer %s is not a parameter of the model", ename,
                   l->name);
        if (f != QT_EXPORT_GGUF && strcmp(l->name, "lm_head.weight") && !is_decoder_linear(l->name))
            REFUSE("export %s: quantized layer %s is not a Linear weight of the decoder or the "
                   "lm_head", ename, l->name);
        if (p->ndim != 2 || p->shape[0] != l->q.rows || p->shape[1] != l->q.cols)
            REFUSE("export %s: layer %s: codes are %lld x %lld but the parameter is not", ename,
                   l->name, (long long)l->q.rows, (long long)l->q.cols);
        for (int j = 0; j < i; j++)
            if (!strcmp(qm->layers[j].name, l->name))
                REFUSE("export %s: layer %s is quantized twice", ename, l->name);
        qt_status s = check_layer(l, f, ename);
        if (s != QT_OK) return s;
        /* one config for the whole model where the format's config is global */
        if (!first) {
            first = l;
            continue;
        }
        const qt_qtensor *a = &first->q, *b = &l->q;
        char fa[64], fb[64];
        qt_qformat_str(&a->fmt, fa, sizeof fa);
        qt_qformat_str(&b->fmt, fb, sizeof fb);
        bool same = true;
        if (f == QT_EXPORT_GPTQ)
            same = a->fmt.bits == b->fmt.bits && a->fmt.symmetric == b->fmt.symmetric &&
                   (a->fmt.gran == QT_QG_GROUP) == (b->fmt.gran == QT_QG_GROUP) &&
                   (a->fmt.gran != QT_QG_GROUP || a->fmt.group_size == b->fmt.group_size);
        else if (f == QT_EXPORT_AWQ)
            same = a->fmt.symmetric == b->fmt.symmetric && qt_xint_glen(a) == qt_xint_glen(b);
        else if (f == QT_EXPORT_BNB_NF4)
            same = a->fmt.double_quant == b->fmt.double_quant;
        else if (f == QT_EXPORT_FP8)
            same = a->fmt.gran == b->fmt.gran;
        if (!same)
            REFUSE("export %s: layer %s is %s but %s is %s; a %s checkpoint has one "
                   "quantization config for all layers", ename, l->name, fb, first->name, fa,
                   ename);
    }
    if (f == QT_EXPORT_GPTQ) {
        const qt_paramset *ps = &qm->model->llama.params;
        for (int i = 0; i < ps->n; i++)
            if (is_decoder_linear(ps->params[i]->name) && !qt_qmodel_find(qm, ps->params[i]->name))
                REFUSE("export gptq: %s is not quantized; GPTQ checkpoints hold every Linear of "
                       "the decoder blocks quantized (transformers and vLLM expect its qweight)",
                       ps->params[i]->name);
    }
    return QT_OK;
}

qt_status qt_export(const qt_qmodel *qm, qt_export_format f, const qt_export_opts *o,
                    const char *path) {
    switch (f) {
    case QT_EXPORT_GGUF: return qt_export_gguf(qm, o, path);
    case QT_EXPORT_GPTQ: return qt_export_gptq(qm, o, path);
    case QT_EXPORT_AWQ: return qt_export_awq(qm, o, path);
    case QT_EXPORT_BNB_NF4: return qt_export_bnb_nf4(qm, o, path);
    case QT_EXPORT_FP8: return qt_export_fp8(qm, o, path);
    default: return QT_ERROR(QT_EINVAL, "export: unknown format %d", (int)f);
    }
}
