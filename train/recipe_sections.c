/*
 * recipe_sections.c - the recipe's sections as the configs of the modules they drive:
 * qat: (qt_qat_config), lora: (qt_lora_config, attached), quantize: (qt_ptq_config) and
 * export: (the files and the exporters' options). The checks that can be made before the
 * model exists (format names, granularities, bits, observer) fail at recipe load, naming
 * the file and the key; those that need a layer's shape (a group size that does not
 * divide its inputs) come from the module, before the first step, naming the layer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train_internal.h"

static qt_dtype dtype_of(const char *s) {
    return !strcmp(s, "f32") ? QT_F32 : !strcmp(s, "bf16") ? QT_BF16 : QT_F16;
}

/* A '\n'-separated list of module-name globs (qat.layers, quantize.layers) into globs,
 * ptrs[i] = globs[i]: their count, or -1 when there are more than max or one is 128 bytes
 * or longer. */
static int split_globs(const char *list, char (*globs)[128], const char **ptrs, int max) {
    int n = 0;
    for (const char *s = list; *s;) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        if (n == max || len >= 128) return -1;
        memcpy(globs[n], s, len);
        globs[n][len] = 0;
        ptrs[n] = globs[n];
        n++;
        s += len + (nl ? 1 : 0);
    }
    return n;
}

qt_status qt_recipe_wformat(const qt_recipe_wfmt *w, const char *path, const char *k,
                            qt_qformat *f) {
    const char *p = path ? path : "recipe";
    memset(f, 0, sizeof *f);
    if (qt_qformat_parse(w->format, f) != QT_OK)
        return QT_ERROR(QT_EINVAL, "%s: %s.format: %s", p, k, qt_error_message());
    bool gran_group = !strcmp(w->granularity, "group");
    switch (f->kind) {
    case QT_QF_INT:
        f->symmetric = w->symmetric;
        f->scale_dtype = dtype_of(w->scale_dtype);
        f->gran = gran_group ? QT_QG_GROUP
                  : !strcmp(w->granularity, "channel") ? QT_QG_CHANNEL : QT_QG_TENSOR;
        if (w->group_size) f->group_size = w->group_size;
        if (!gran_group && w->group_size)
            return QT_ERROR(QT_EINVAL, "%s: %s.group_size (%d) needs granularity group, not %s",
                            p, k, w->group_size, w->granularity);
        break;
    case QT_QF_NF4:
    case QT_QF_FP4:
        if (w->group_size) f->group_size = w->group_size;
        f->double_quant = w->double_quant;
        break;
    case QT_QF_FP8_E4M3:
    case QT_QF_FP8_E5M2:
        if (gran_group)
            return QT_ERROR(QT_EINVAL, "%s: %s.granularity: %s scales are per channel or per "
                                       "tensor, not per group", p, k, w->format);
        f->gran = !strcmp(w->granularity, "tensor") ? QT_QG_TENSOR : QT_QG_CHANNEL;
        break;
    default: /* GGUF: blocks fix everything */
        if (w->group_size)
            return QT_ERROR(QT_EINVAL, "%s: %s.group_size: %s has fixed blocks; leave "
                                       "group_size at 0", p, k, w->format);
        break;
    }
    if (qt_qformat_check(f, 0, 0) != QT_OK)
        return QT_ERROR(QT_EINVAL, "%s: %s: %s", p, k, qt_error_message());
    return QT_OK;
}

qt_status qt_recipe_qat_config(const qt_recipe *r, const char *path, qt_recipe_qat *out) {
    const char *p = path ? path : "recipe";
    memset(out, 0, sizeof *out);
    qt_qat_config *c = &out->cfg;
    const qt_recipe_wfmt *w = &r->qat.weight;
    if (strcmp(w->format, "none")) {
        qt_status st = qt_recipe_wformat(w, p, "qat.weight", &c->weight);
        if (st != QT_OK) return st;
        c->weight_on = true;
        if (c->weight.kind == QT_QF_INT) {
            if (w->learnable && c->weight.scale_dtype != QT_F32)
                return QT_ERROR(QT_EINVAL, "%s: qat.weight.learnable needs scale_dtype f32 (the "
                                           "learned scales are f32 and ship as they are), got %s",
                                p, w->scale_dtype);
            c->learnable = w->learnable;
        }
    }
    if (w->learnable && !c->learnable)
        return QT_ERROR(QT_EINVAL, "%s: qat.weight.learnable needs an int weight format, got %s", p,
                        w->format);
    const typeof(r->qat.activation) *a = &r->qat.activation;
    if (strcmp(a->format, "none")) {
        c->act.bits = a->format[3] - '0'; /* int2..int8, checked by the key's choices */
        c->act.symmetric = a->symmetric;
        c->act.averaging_constant = a->averaging_constant;
        c->act.observer = !strcmp(a->observer, "minmax") ? QT_OBS_MINMAX : QT_OBS_MOVING_AVERAGE;
        bool per_token = !strcmp(a->granularity, "per_token");
        if (per_token && !a->dynamic)
            return QT_ERROR(QT_EINVAL, "%s: qat.activation: per_token scales are dynamic (computed "
                                       "from each token); set dynamic: true or granularity: "
                                       "per_tensor", p);
        if (!per_token && a->dynamic)
            return QT_ERROR(QT_EINVAL, "%s: qat.activation: per_tensor scales come from an "
                                       "observer; set dynamic: false (or granularity: per_token)", p);
        c->act.mode = per_token ? QT_ACT_DYNAMIC_TOKEN : QT_ACT_STATIC_TENSOR;
        if (r->qat.embeddings)
            return QT_ERROR(QT_EINVAL, "%s: qat.activation.format %s cannot apply to the token "
                                       "embedding (qat.embeddings: true): a lookup has no float "
                                       "input to quantize", p, a->format);
    }
    if (!c->weight_on && c->act.mode == QT_ACT_NONE)
        return QT_ERROR(QT_EINVAL, "%s: qat: set qat.weight.format or qat.activation.format", p);
    /* on the GPU: fake-quant of weights (any format the GPU kernels run) and dynamic
     * per-token activations; the observers of static activation ranges and LSQ's
     * learnable scales read their tensors on the host and run on the CPU only */
    if (!strcmp(r->train.device, "cuda") && c->act.mode == QT_ACT_STATIC_TENSOR)
        return QT_ERROR(QT_ENOTSUP, "%s: qat.activation with static ranges (an observer) runs "
                                    "on the CPU only; with train.device cuda use per-token "
                                    "dynamic activations (qat.activation.dynamic: true)", p);
    if (!strcmp(r->train.device, "cuda") && c->learnable)
        return QT_ERROR(QT_ENOTSUP, "%s: qat.weight.learnable (LSQ) runs on the CPU only; "
                                    "with train.device cuda leave it false", p);
    if (r->qat.start_step >= r->train.steps && r->train.steps > 0)
        return QT_ERROR(QT_EINVAL, "%s: qat.start_step (%ld) must be below train.steps (%ld)", p,
                        r->qat.start_step, r->train.steps);
    int n = split_globs(r->qat.layers, out->globs, out->ptrs, QT_QAT_MAX_GLOBS);
    if (n < 0)
        return QT_ERROR(QT_EINVAL, "%s: qat.layers: at most %d patterns of < %zu bytes", p,
                        QT_QAT_MAX_GLOBS, sizeof out->globs[0]);
    c->layers = n ? out->ptrs : NULL;
    c->n_layers = n;
    c->embeddings = r->qat.embeddings;
    c->lm_head = r->qat.lm_head;
    return QT_OK;
}

qt_status qt_recipe_qat_prepare(const qt_recipe *r, const char *path, qt_model *m,
                                qt_recipe_qat *out, qt_qat **q) {
    *q = NULL;
    if (!qt_recipe_has_qat(r)) return QT_OK;
    qt_status st = qt_recipe_qat_config(r, path, out);
    if (st != QT_OK) return st;
    st = qt_qat_prepare(q, m, &out->cfg);
    if (st != QT_OK) {
        char why[600];
        snprintf(why, sizeof why, "%s", qt_error_message());
        return QT_ERROR(st, "%s: %s", path ? path : "recipe", why);
    }
    return QT_OK;
}

_Static_assert(QT_RECIPE_LORA_MAX_TARGETS == QT_LORA_MAX_TARGETS, "lora.targets capacity");

/* Errors (a target that matches nothing, a rank larger than a layer, an adapter of
 * another model) name the recipe, the section and the layer. */
qt_status qt_recipe_lora_attach(const qt_recipe *r, const char *rpath, qt_model *m,
                                bool base_as_stored, qt_lora **out) {
    *out = NULL;
    if (!qt_recipe_has_lora(r)) return QT_OK;
    char tbuf[QT_LORA_MAX_TARGETS][96];
    const char *tptr[QT_LORA_MAX_TARGETS];
    int n = 0;
    for (const char *t = r->lora.targets; *t && n < QT_LORA_MAX_TARGETS; n++) {
        const char *nl = strchr(t, '\n');
        size_t len = nl ? (size_t)(nl - t) : strlen(t);
        snprintf(tbuf[n], sizeof tbuf[n], "%.*s", (int)len, t); /* validated: < 96 bytes */
        tptr[n] = tbuf[n];
        t += len + (nl ? 1 : 0);
    }
    bool nf4 = !strcmp(r->lora.base, "nf4");
    qt_lora_config c = {.rank = r->lora.rank, .alpha = r->lora.alpha, .rslora = r->lora.rslora,
                        .dropout = r->lora.dropout, .targets = n ? tptr : NULL, .n_targets = n,
                        .nf4 = nf4, .seed = (uint64_t)r->train.seed};
    /* QAT + LoRA: the base through qat.weight (validated); not again for a checkpoint's
     * base, stored as trained against (fake-quant is not idempotent: amax shrinks) */
    if (qt_recipe_has_qat(r) && !base_as_stored) {
        qt_recipe_qat q;
        qt_status st = qt_recipe_qat_config(r, rpath, &q);
        if (st != QT_OK) return st;
        c.base_fq = true;
        c.base_fmt = q.cfg.weight;
    }
    qt_status st = r->lora.adapter[0] ? qt_lora_load_peft(out, m, r->lora.adapter, nf4)
                                      : qt_lora_attach(out, m, &c);
    if (st != QT_OK) {
        char why[768];
        snprintf(why, sizeof why, "%s", qt_error_message());
        *out = NULL;
        if (r->lora.adapter[0])
            return QT_ERROR(st, "%s: lora.adapter %s: %s", rpath, r->lora.adapter, why);
        return QT_ERROR(st, "%s: %s", rpath, why); /* "lora.rank 99 is larger than ..." */
    }
    return QT_OK;
}

qt_status qt_recipe_ptq_config(const qt_recipe *r, const char *p, qt_recipe_ptq *out) {
    memset(out, 0, sizeof *out);
    const char *m = r->quantize.method;
    qt_ptq_method method = !strcmp(m, "gptq") ? QT_PTQ_GPTQ : !strcmp(m, "awq") ? QT_PTQ_AWQ
                                                                               : QT_PTQ_RTN;
    if (!strcmp(m, "none"))
        return QT_ERROR(QT_EINVAL, "%s: quantize.method is not set (rtn, gptq or awq)", p);
    qt_ptq_config *c = &out->pc;
    qt_ptq_config_defaults(c, method);
    qt_recipe_wfmt w = r->quantize.fmt;
    w.symmetric = !strcmp(r->quantize.symmetric, "auto") ? method != QT_PTQ_AWQ
                                                          : !strcmp(r->quantize.symmetric, "true");
    qt_status st = qt_recipe_wformat(&w, p, "quantize", &c->fmt);
    if (st != QT_OK) return st;
    /* int groups: 128 unless the recipe says (GPTQ's and AWQ's shipping default) */
    if (c->fmt.kind == QT_QF_INT && c->fmt.gran == QT_QG_GROUP && !w.group_size)
        c->fmt.group_size = 128;
    if (method != QT_PTQ_RTN && (c->fmt.kind != QT_QF_INT || c->fmt.gran == QT_QG_TENSOR))
        return QT_ERROR(QT_EINVAL,
                        "%s: quantize.format: %s needs an int format per group or per channel "
                        "(int2..int8, granularity group or channel), got %s %s",
                        p, m, w.format, w.granularity);
    if (r->quantize.static_groups && !r->quantize.act_order)
        return QT_ERROR(QT_EINVAL, "%s: quantize.static_groups needs quantize.act_order", p);
    int n = split_globs(r->quantize.layers, out->globs, out->ptrs, QT_PTQ_MAX_GLOBS);
    if (n < 0)
        return QT_ERROR(QT_EINVAL, "%s: quantize.layers: at most %d globs of < 128 bytes", p,
                        QT_PTQ_MAX_GLOBS);
    c->layers = n ? out->ptrs : NULL;
    c->n_layers = n;
    c->damp = r->quantize.damp;
    c->block_size = r->quantize.block_size;
    c->act_order = r->quantize.act_order;
    c->static_groups = r->quantize.static_groups;
    c->awq_grid = r->quantize.awq_grid;
    c->awq_clip = r->quantize.clip;
    c->awq_duo = r->quantize.awq_duo;
    c->batch = r->quantize.batch;
    return QT_OK;
}

qt_status qt_recipe_export_jobs(const qt_recipe *r, const char *p, const qt_recipe_ptq *pr,
                                qt_recipe_export_job *jobs, int *n) {
    const char *paths[QT_EXPORT_COUNT] = {0};
    paths[QT_EXPORT_GGUF] = r->export.gguf;
    paths[QT_EXPORT_GPTQ] = r->export.gptq;
    paths[QT_EXPORT_AWQ] = r->export.awq;
    paths[QT_EXPORT_BNB_NF4] = r->export.bnb_nf4;
    paths[QT_EXPORT_FP8] = r->export.fp8;
    *n = 0;
    if (!r->export.write) return QT_OK; /* quantize and compare only */
    for (int f = 0; f < QT_EXPORT_COUNT; f++)
        if (paths[f][0]) {
            jobs[*n].f = (qt_export_format)f;
            snprintf(jobs[*n].path, sizeof jobs[*n].path, "%s", paths[f]);
            (*n)++;
        }
    if (*n) return QT_OK;
    const qt_qformat *q = &pr->pc.fmt;
    int f = q->kind == QT_QF_GGUF                     ? QT_EXPORT_GGUF
            : q->kind == QT_QF_NF4                    ? QT_EXPORT_BNB_NF4
            : q->kind == QT_QF_FP8_E4M3               ? QT_EXPORT_FP8
            : q->kind == QT_QF_INT && pr->pc.method == QT_PTQ_AWQ ? QT_EXPORT_AWQ
            : q->kind == QT_QF_INT                    ? QT_EXPORT_GPTQ
                                                      : -1;
    if (f < 0)
        return QT_ERROR(QT_EINVAL, "%s: no exporter writes %s; set one of export.gguf, "
                                   "export.gptq, export.awq, export.bnb_nf4, export.fp8",
                        p, r->quantize.fmt.format);
    jobs[0].f = (qt_export_format)f;
    snprintf(jobs[0].path, sizeof jobs[0].path, "%s/model%s%s", r->output.dir,
             f == QT_EXPORT_GGUF ? "" : "-", f == QT_EXPORT_GGUF ? ".gguf" : qt_export_format_name(jobs[0].f));
    *n = 1;
    return QT_OK;
}

void qt_recipe_export_opts(const qt_recipe *r, const qt_tokenizer *tok, qt_export_opts *o) {
    qt_export_opts_defaults(o);
    o->tok = tok;
    o->gguf_float = !strcmp(r->export.gguf_float, "f16") ? QT_GGML_F16 : QT_GGML_F32;
    o->st_float = !strcmp(r->export.st_float, "f32")    ? QT_F32
                  : !strcmp(r->export.st_float, "bf16") ? QT_BF16
                                                        : QT_F16;
    const char *tk = r->data.tokenizer;
    size_t n = strlen(tk);
    if (n > 5 && !strcmp(tk + n - 5, ".json")) o->tokenizer_json = tk;
}
