/*
 * qat_recipe.c - from the recipe's qat: keys to a qt_qat_config, with the checks that
 * can be made before the model exists (format names, granularities, bits, observer):
 * these fail at recipe load, naming the file and the key. The checks that need a
 * layer's shape (a group size that does not divide its inputs) come from qt_qat_prepare,
 * before the first step, naming the layer.
 */
#include <stdio.h>
#include <string.h>

#include "qat_recipe.h"

static qt_dtype dtype_of(const char *s) {
    return !strcmp(s, "f32") ? QT_F32 : !strcmp(s, "bf16") ? QT_BF16 : QT_F16;
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
    int n = 0;
    for (const char *s = r->qat.layers; *s;) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        if (n == QT_QAT_MAX_GLOBS || len >= sizeof out->globs[0])
            return QT_ERROR(QT_EINVAL, "%s: qat.layers: at most %d patterns of < %zu bytes", p,
                            QT_QAT_MAX_GLOBS, sizeof out->globs[0]);
        memcpy(out->globs[n], s, len);
        out->globs[n][len] = 0;
        out->ptrs[n] = out->globs[n];
        n++;
        s += len + (nl ? 1 : 0);
    }
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
