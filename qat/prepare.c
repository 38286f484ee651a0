/*
 * prepare.c - QAT prepare / convert (torchao's QATQuantizer.prepare / convert, on our
 * model's linear hook instead of module swapping).
 *
 * prepare selects the Linear weights whose module name matches one of the recipe's
 * globs (plus, on request, the token embedding and the lm_head), checks the format fits
 * each of them, and hooks the model: a selected Linear computes
 *     y = fq_act(x) fq_w(W)^T + b
 * where fq_w is the quantizer core's fake_quant and fq_act the activation config
 * (dynamic per token, or static per tensor with a min-max / moving-average observer that
 * learns its range while grad mode is on, as torch's observers do in training mode).
 * convert quantizes each selected weight for real with the same quantizer and writes its
 * dequantized values back, so evaluation after convert computes with exactly the values
 * a deployment runtime will see.
 */
#include <float.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qt_qat.h"

typedef struct {
    qt_tensor *w;       /* the weight (a parameter of the model) */
    bool as_linear;     /* used by a Linear (the lm_head of a tied model shares embed's w) */
    bool act;           /* activation fake-quant on its input */
    bool converted;     /* weights already hold their dequantized values */
    char module[128];   /* "model.layers.0.mlp.up_proj" */
    float *obs;         /* (2) static activation observer: [min, max] seen so far, a slot
                           of the buffers paramset; [+inf, -inf] = nothing seen yet */
    qt_tensor *scale;   /* learnable (LSQ): (n_groups) scales, a parameter of buffers */
    qt_tensor *zero;    /* learnable, asymmetric: (n_groups) zero points; else NULL */
} qat_layer;

struct qt_qat {
    qt_qat_config cfg;
    qt_model *m;
    bool enabled;
    qat_layer *layers;
    int n;
    qt_paramset buffers; /* QAT's own state, saved with checkpoints: observers' ranges
                            (frozen) and learnable scales / zero points (trained) */
    bool has_buffers;
    /* dynamic per-token quant is a pure function of x, and q/k/v (gate/up) share their
     * input: the last result is reused for the same x of the same step */
    const qt_ctx *memo_ctx;
    uint64_t memo_gen;
    bool memo_grad;
    const qt_tensor *memo_x;
    qt_tensor *memo_y;
    qt_qat_range_reducer reduce; /* qt_qat_set_range_reducer */
    void *reduce_user;
};

/* The elements sharing one scale: a group, a row or the whole matrix. */
static int64_t group_len(const qt_qformat *f, const qt_tensor *w) {
    return f->gran == QT_QG_GROUP ? f->group_size
           : f->gran == QT_QG_CHANNEL ? w->shape[1] : qt_numel(w);
}

/* LSQ integer range: symmetric [-2^(b-1), 2^(b-1) - 1] around 0, asymmetric [0, 2^b - 1]. */
static void lsq_range(const qt_qformat *f, int *qmin, int *qmax) {
    *qmin = f->symmetric ? -(1 << (f->bits - 1)) : 0;
    *qmax = f->symmetric ? (1 << (f->bits - 1)) - 1 : (1 << f->bits) - 1;
}

/* The weight as the model computes with it: the format's fake_quant, or LSQ with the
 * learned scales (w viewed as (n_groups, G); gradient scale 1/sqrt(G * Qp), Esser et
 * al. 2019), or w itself once converted. */
static qt_tensor *fq_weight(qt_ctx *ctx, qt_qat *q, qat_layer *L, qt_tensor *w) {
    if (!q->cfg.weight_on || L->converted) return w;
    if (!L->scale) return qt_fake_quant_weight(ctx, w, &q->cfg.weight);
    int64_t G = group_len(&q->cfg.weight, w), sh[2] = {qt_numel(w) / G, G};
    int qmin, qmax;
    lsq_range(&q->cfg.weight, &qmin, &qmax);
    float g = 1.0f / sqrtf((float)G * (float)qmax);
    qt_tensor *y = qt_fake_quant_lsq(ctx, qt_reshape(ctx, w, 2, sh), L->scale, L->zero, qmin,
                                     qmax, g);
    return qt_reshape(ctx, y, w->ndim, w->shape);
}

static bool obs_seen(const qat_layer *L) { return L->obs && L->obs[0] <= L->obs[1]; }

static qat_layer *find_layer(qt_qat *q, const qt_tensor *w, bool as_linear) {
    for (int i = 0; i < q->n; i++)
        if (q->layers[i].w == w && q->layers[i].as_linear == as_linear) return &q->layers[i];
    return NULL;
}

/* The scale and zero point of a static observer's range, as torch's MinMaxObserver
 * computes them (range widened to include 0), through the INT quantizer's own rule. */
static void observer_params(const qt_qat *q, const qat_layer *L, float *s, int *z) {
    float range[2] = {L->obs[0], L->obs[1]};
    qt_qformat f = {.kind = QT_QF_INT, .bits = q->cfg.act.bits, .symmetric = q->cfg.act.symmetric,
                    .gran = QT_QG_TENSOR, .scale_dtype = QT_F32};
    uint8_t zz;
    qt_qint_params(&f, range, 2, s, &zz);
    *z = zz;
}

void qt_qat_set_range_reducer(qt_qat *q, qt_qat_range_reducer fn, void *user) {
    q->reduce = fn;
    q->reduce_user = user;
}

/* The batch's finite range updates the observer; `global`: through the reducer first
 * (every rank's batch). */
static qt_status observe(qt_qat *q, qat_layer *L, const qt_tensor *x, bool global) {
    const float *d = x->data;
    float range[2] = {INFINITY, -INFINITY};
    for (int64_t i = 0; i < qt_numel(x); i++) {
        if (!isfinite(d[i])) continue;
        range[0] = fminf(range[0], d[i]);
        range[1] = fmaxf(range[1], d[i]);
    }
    if (global && q->reduce) {
        qt_status st = q->reduce(q->reduce_user, range);
        if (st != QT_OK) return st;
    }
    float mn = range[0], mx = range[1];
    if (!(mn <= mx)) return QT_OK; /* nothing finite seen */
    float *o = L->obs;
    if (!obs_seen(L) || q->cfg.act.observer == QT_OBS_MINMAX) {
        o[0] = fminf(o[0], mn); /* from [+inf, -inf]: the first batch's range */
        o[1] = fmaxf(o[1], mx);
        return QT_OK;
    }
    float c = q->cfg.act.averaging_constant; /* torch MovingAverageMinMaxObserver */
    o[0] += c * (mn - o[0]);
    o[1] += c * (mx - o[1]);
    return QT_OK;
}

static qt_tensor *fq_activation(qt_ctx *ctx, qt_qat *q, qat_layer *L, qt_tensor *x) {
    const qt_act_config *a = &q->cfg.act;
    if (a->mode == QT_ACT_DYNAMIC_TOKEN) {
        bool grad = qt_ctx_grad_enabled(ctx);
        if (q->memo_x == x && q->memo_ctx == ctx && q->memo_gen == qt_ctx_generation(ctx) &&
            q->memo_grad == grad)
            return q->memo_y;
        qt_tensor *y = qt_fake_quant_act_dynamic(ctx, x, a->bits, a->symmetric);
        q->memo_ctx = ctx;
        q->memo_gen = qt_ctx_generation(ctx);
        q->memo_grad = grad;
        q->memo_x = x;
        q->memo_y = y;
        return y;
    }
    /* observers learn in training (grad mode); in eval they are frozen, except that one
     * which has never seen data calibrates on its first batch */
    bool train = qt_ctx_grad_enabled(ctx);
    if (train || !obs_seen(L)) {
        qt_status st = observe(q, L, x, train);
        if (st != QT_OK) return QT_CTX_FAIL(ctx, st, "%s: activation range: %s", L->module,
                                            qt_error_message());
    }
    if (!obs_seen(L)) return x; /* all non-finite: let the guard see it */
    float s;
    int z;
    observer_params(q, L, &s, &z);
    return qt_fake_quant_act_static(ctx, x, s, z, a->bits);
}

static qt_tensor *hook_linear(qt_ctx *ctx, void *user, qt_tensor *x, qt_tensor *w,
                              qt_tensor *b, bool w_io) {
    qt_qat *q = user;
    if (!x) return NULL; /* an earlier op failed (the context holds why) */
    qat_layer *L = q->enabled ? find_layer(q, w, true) : NULL;
    if (!L) return qt_linear(ctx, x, w, b, w_io);
    if (L->act) x = fq_activation(ctx, q, L, x);
    return qt_linear(ctx, x, fq_weight(ctx, q, L, w), b, w_io);
}

static qt_tensor *hook_embedding(qt_ctx *ctx, void *user, qt_tensor *w) {
    qt_qat *q = user;
    qat_layer *L = q->enabled ? find_layer(q, w, false) : NULL;
    return L ? fq_weight(ctx, q, L, w) : w;
}

/* QAT's own parameters: a frozen [min, max] per layer with a static observer, and, for
 * learnable scales, each weight's scales (and zero points when asymmetric), initialised
 * with the quantizer's own choice so that step 0 computes what plain fake-quant does. A
 * tied lm_head shares the embedding's. */
static qt_status make_buffers(qt_qat *q) {
    qt_paramset *ps = &q->buffers;
    qt_paramset_init(ps);
    q->has_buffers = true;
    const qt_qformat *f = &q->cfg.weight;
    qt_status st = QT_OK;
    int64_t two = 2;
    char name[160];
    for (int i = 0; i < q->n && st == QT_OK; i++) {
        qat_layer *L = &q->layers[i];
        if (L->act) {
            snprintf(name, sizeof name, "%s.act_range", L->module);
            if (!qt_paramset_add(ps, name, 1, &two, QT_PARAM_FROZEN))
                st = QT_ERROR(QT_ENOMEM, "qat: cannot register %s", name);
        }
        bool dup = false;
        for (int j = 0; j < i; j++) dup |= q->layers[j].w == L->w;
        if (!q->cfg.learnable || dup || st != QT_OK) continue;
        int64_t ng = qt_numel(L->w) / group_len(f, L->w);
        snprintf(name, sizeof name, "%s.weight_scale", L->module);
        if (!(L->scale = qt_paramset_add(ps, name, 1, &ng, QT_PARAM_NO_DECAY)))
            st = QT_ERROR(QT_ENOMEM, "qat: cannot register %s", name);
        snprintf(name, sizeof name, "%s.weight_zero_point", L->module);
        if (st == QT_OK && !f->symmetric &&
            !(L->zero = qt_paramset_add(ps, name, 1, &ng, QT_PARAM_NO_DECAY)))
            st = QT_ERROR(QT_ENOMEM, "qat: cannot register %s", name);
    }
    if (st == QT_OK) st = qt_paramset_alloc(ps);
    for (int i = 0; i < q->n && st == QT_OK; i++) {
        qat_layer *L = &q->layers[i];
        if (L->act) {
            snprintf(name, sizeof name, "%s.act_range", L->module);
            L->obs = qt_paramset_find(ps, name)->data;
            L->obs[0] = INFINITY;
            L->obs[1] = -INFINITY;
        }
        for (int j = 0; j < i && q->cfg.learnable; j++) /* a tied lm_head shares */
            if (q->layers[j].w == L->w) {
                L->scale = q->layers[j].scale;
                L->zero = q->layers[j].zero;
            }
    }
    if (st == QT_OK) qt_qat_init_scales(q);
    return st;
}

void qt_qat_init_scales(qt_qat *q) {
    const qt_qformat *f = &q->cfg.weight;
    for (int i = 0; i < q->n; i++) {
        qat_layer *L = &q->layers[i];
        if (!L->scale) continue;
        int64_t G = group_len(f, L->w), ng = qt_numel(L->w) / G;
        const float *w = L->w->data;
        float *s = L->scale->data, *z = L->zero ? L->zero->data : NULL;
        for (int64_t g = 0; g < ng; g++) {
            uint8_t zz;
            qt_qint_params(f, w + g * G, G, &s[g], &zz);
            if (z) z[g] = (float)zz;
        }
    }
}

void qt_qat_after_step(qt_qat *q) {
    for (int i = 0; i < q->n; i++) { /* torch LearnableFakeQuantize: scale.clamp_(min=eps) */
        qat_layer *L = &q->layers[i];
        if (!L->scale) continue;
        float *s = L->scale->data;
        for (int64_t g = 0; g < qt_numel(L->scale); g++)
            if (!(s[g] > 0.0f)) s[g] = FLT_EPSILON;
    }
}

static bool matches(const qt_qat_config *c, const char *module) {
    if (!c->layers || c->n_layers == 0) return true;
    for (int i = 0; i < c->n_layers; i++)
        if (fnmatch(c->layers[i], module, 0) == 0) return true;
    return false;
}

/* Adds a selected weight after checking the format fits it. */
static qt_status add_layer(qt_qat *q, qt_tensor *w, const char *module, bool as_linear,
                           bool act) {
    if (q->cfg.weight_on) {
        if (qt_qformat_check(&q->cfg.weight, w->shape[0], w->shape[1]) != QT_OK) {
            char why[512];
            snprintf(why, sizeof why, "%s", qt_error_message());
            return QT_ERROR(QT_EINVAL, "qat: %s (%lld x %lld): %s", module,
                            (long long)w->shape[0], (long long)w->shape[1], why);
        }
    }
    qat_layer *L = &q->layers[q->n++];
    memset(L, 0, sizeof *L);
    L->w = w;
    L->as_linear = as_linear;
    L->act = act;
    snprintf(L->module, sizeof L->module, "%s", module);
    return QT_OK;
}

qt_status qt_qat_prepare(qt_qat **out, qt_model *m, const qt_qat_config *cfg) {
    *out = NULL;
    if (m->arch != QT_ARCH_LLAMA)
        return QT_ERROR(QT_ENOTSUP, "qat: only Llama-family models for now (GPT-2's Conv1D "
                                    "weights are stored transposed)");
    if (!cfg->weight_on && cfg->act.mode == QT_ACT_NONE)
        return QT_ERROR(QT_EINVAL, "qat: neither a weight format nor an activation config");
    if (cfg->act.mode != QT_ACT_NONE && (cfg->act.bits < 2 || cfg->act.bits > 8))
        return QT_ERROR(QT_EINVAL, "qat.activation.bits must be 2..8, got %d", cfg->act.bits);
    if (cfg->act.mode != QT_ACT_NONE && cfg->embeddings)
        return QT_ERROR(QT_EINVAL, "qat: an activation format cannot apply to the token embedding "
                                   "(a lookup has no float input); set qat.embeddings: false or "
                                   "drop qat.activation");
    if (cfg->weight_on && qt_qformat_check(&cfg->weight, 0, 0) != QT_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", qt_error_message());
        return QT_ERROR(QT_EINVAL, "qat.weight: %s", why);
    }
    qt_llama *lm = &m->llama;
    if (lm->hook.linear || lm->hook.embedding)
        return QT_ERROR(QT_ESTATE, "qat: the model already has a linear hook (LoRA or another "
                                   "QAT); one at a time");
    if (lm->lm_head == lm->embed && cfg->lm_head != cfg->embeddings)
        return QT_ERROR(QT_EINVAL, "qat: this model's lm_head shares the token embedding's weight "
                                   "(tied embeddings): set qat.embeddings and qat.lm_head both "
                                   "true or both false (converting writes the one tensor both use)");
    qt_qat *q = calloc(1, sizeof *q);
    int cap = lm->cfg.n_layers * 7 + 2;
    if (q) q->layers = calloc((size_t)cap, sizeof *q->layers);
    if (!q || !q->layers) {
        free(q);
        return QT_ERROR(QT_ENOMEM, "qat: out of memory");
    }
    q->cfg = *cfg;
    q->m = m;
    q->enabled = true;
    bool act = cfg->act.mode != QT_ACT_NONE;
    qt_status st = QT_OK;
    if (cfg->embeddings) st = add_layer(q, lm->embed, "model.embed_tokens", false, false);
    for (int l = 0; l < lm->cfg.n_layers && st == QT_OK; l++) {
        qt_llama_layer *L = &lm->layers[l];
        struct { qt_tensor *w; const char *name; } lin[7] = {
            {L->wq, "self_attn.q_proj"}, {L->wk, "self_attn.k_proj"}, {L->wv, "self_attn.v_proj"},
            {L->wo, "self_attn.o_proj"}, {L->w_gate, "mlp.gate_proj"}, {L->w_up, "mlp.up_proj"},
            {L->w_down, "mlp.down_proj"}};
        for (int k = 0; k < 7 && st == QT_OK; k++) {
            char module[128];
            snprintf(module, sizeof module, "model.layers.%d.%s", l, lin[k].name);
            if (matches(cfg, module)) st = add_layer(q, lin[k].w, module, true, act);
        }
    }
    if (st == QT_OK && cfg->lm_head) st = add_layer(q, lm->lm_head, "lm_head", true, act);
    /* every pattern must select something: a typo must not silently train in float */
    for (int i = 0; st == QT_OK && cfg->layers && i < cfg->n_layers; i++) {
        bool hit = false;
        for (int k = 0; k < q->n && !hit; k++)
            hit = fnmatch(cfg->layers[i], q->layers[k].module, 0) == 0;
        if (!hit)
            st = QT_ERROR(QT_EINVAL, "qat.layers: \"%s\" matches no Linear layer (names look "
                                     "like model.layers.0.self_attn.q_proj, model.layers.0.mlp."
                                     "down_proj)", cfg->layers[i]);
    }
    if (st == QT_OK && q->n == 0) st = QT_ERROR(QT_EINVAL, "qat: no layer selected");
    if (st == QT_OK && cfg->learnable &&
        (!cfg->weight_on || cfg->weight.kind != QT_QF_INT || cfg->weight.scale_dtype != QT_F32))
        st = QT_ERROR(QT_EINVAL, "qat: learnable scales (LSQ) need an int weight format with f32 "
                                 "scales (the learned scales are f32 and ship as they are)");
    if (st == QT_OK && (cfg->act.mode == QT_ACT_STATIC_TENSOR || cfg->learnable))
        st = make_buffers(q);
    if (st != QT_OK) {
        if (q->has_buffers) qt_paramset_free(&q->buffers);
        free(q->layers);
        free(q);
        return st;
    }
    q->cfg.layers = NULL; /* the caller's strings are not ours to keep */
    q->cfg.n_layers = 0;
    qt_linear_hook h = {.linear = hook_linear, .embedding = hook_embedding, .user = q};
    qt_model_set_hook(m, &h);
    *out = q;
    return QT_OK;
}

void qt_qat_free(qt_qat *q) {
    if (!q) return;
    qt_model_set_hook(q->m, NULL);
    if (q->has_buffers) qt_paramset_free(&q->buffers);
    free(q->layers);
    free(q);
}

qt_paramset *qt_qat_buffers(qt_qat *q) { return q->has_buffers ? &q->buffers : NULL; }

void qt_qat_set_enabled(qt_qat *q, bool on) { q->enabled = on; }

int qt_qat_count(const qt_qat *q, int *with_act) {
    int a = 0;
    for (int i = 0; i < q->n; i++) a += q->layers[i].act;
    if (with_act) *with_act = a;
    return q->n;
}

/* A weight with learned scales as the quantizer core's INT tensor: the codes are
 * qt_qint_code of the learned scale and rounded zero point, so qt_dequantize gives
 * exactly what the LSQ op computed (both are (q - z) * s on the same integers). */
static qt_status lsq_quantize(const qt_qat *q, const qat_layer *L, qt_qtensor *out) {
    const qt_qformat *f = &q->cfg.weight;
    memset(out, 0, sizeof *out);
    int64_t n = qt_numel(L->w), G = group_len(f, L->w), ng = n / G;
    const float *wd = L->w->data;
    for (int64_t i = 0; i < n; i++) /* the quantizer's NaN/Inf policy */
        if (!isfinite(wd[i]))
            return QT_ERROR(QT_ENUMERIC, "qat convert: %s: non-finite weight %g at (row %lld, col "
                                         "%lld)", L->module, (double)wd[i],
                            (long long)(i / L->w->shape[1]), (long long)(i % L->w->shape[1]));
    int qmin, qmax;
    lsq_range(f, &qmin, &qmax);
    out->fmt = *f;
    out->rows = L->w->shape[0];
    out->cols = L->w->shape[1];
    out->n_scales = ng;
    out->codes = malloc((size_t)n);
    out->scales = malloc((size_t)ng * sizeof(float));
    out->zeros = f->symmetric ? NULL : malloc((size_t)ng);
    if (!out->codes || !out->scales || (!f->symmetric && !out->zeros)) {
        qt_qtensor_free(out);
        return QT_ERROR(QT_ENOMEM, "qat convert: out of memory");
    }
    const float *w = L->w->data, *sl = L->scale->data;
    for (int64_t g = 0; g < ng; g++) {
        float zraw = L->zero ? ((const float *)L->zero->data)[g] : 0.0f;
        if (!isfinite(sl[g]) || !isfinite(zraw)) {
            qt_qtensor_free(out);
            return QT_ERROR(QT_ENUMERIC, "qat convert: %s: learned scale / zero point %lld is %g / "
                                         "%g", L->module, (long long)g, (double)sl[g], (double)zraw);
        }
        /* as the LSQ op computes (fake_quant.c lsq_scale) */
        float sg = sl[g] > 0.0f && isfinite(1.0f / sl[g]) ? sl[g] : FLT_EPSILON;
        /* the LSQ op's zero point: rint, clamped to the range; symmetric: 2^(b-1) */
        float zf = rintf(zraw);
        zf = zf < (float)qmin ? (float)qmin : (zf > (float)qmax ? (float)qmax : zf);
        int z = L->zero ? (int)zf : 1 << (f->bits - 1);
        out->scales[g] = sg;
        if (out->zeros) out->zeros[g] = (uint8_t)z;
        float inv = 1.0f / sg;
        for (int64_t k = 0; k < G; k++) out->codes[g * G + k] = qt_qint_code(w[g * G + k], inv, z, f->bits);
    }
    return QT_OK;
}

qt_status qt_qat_convert(qt_qat *q, qt_qat_converted **out, int *n) {
    if (out) *out = NULL;
    if (n) *n = 0;
    if (!q->cfg.weight_on) return QT_OK; /* activation-only QAT: nothing to convert */
    qt_qat_converted *c = calloc((size_t)q->n, sizeof *c);
    qat_layer **owner = calloc((size_t)q->n, sizeof *owner);
    if (!c || !owner) {
        free(c);
        free(owner);
        return QT_ERROR(QT_ENOMEM, "qat convert: out of memory");
    }
    /* first quantize everything; the model is changed only when all succeeded */
    int k = 0;
    qt_status st = QT_OK;
    for (int i = 0; i < q->n && st == QT_OK; i++) {
        qat_layer *L = &q->layers[i];
        bool dup = L->converted; /* a tied lm_head shares the embedding's weight: once */
        for (int j = 0; j < i; j++) dup |= q->layers[j].w == L->w;
        if (dup) continue;
        st = L->scale ? lsq_quantize(q, L, &c[k].q)
                      : qt_quantize(&q->cfg.weight, L->w->data, L->w->shape[0], L->w->shape[1],
                                    &c[k].q);
        if (st != QT_OK) {
            char why[512];
            snprintf(why, sizeof why, "%s", qt_error_message());
            st = QT_ERROR(st, "qat convert: %s: %s (no weight was changed)", L->module, why);
            break;
        }
        snprintf(c[k].name, sizeof c[k].name, "%s", L->w->name ? L->w->name : L->module);
        owner[k++] = L;
    }
    for (int i = 0; i < k && st == QT_OK; i++) st = qt_dequantize(&c[i].q, owner[i]->w->data);
    free(owner);
    if (st != QT_OK) { /* dequantize of a fresh quantize cannot fail but for memory */
        qt_qat_converted_free(c, k);
        return st;
    }
    for (int i = 0; i < q->n; i++) q->layers[i].converted = true;
    if (out) {
        *out = c;
        if (n) *n = k;
    } else {
        qt_qat_converted_free(c, k);
    }
    return QT_OK;
}

void qt_qat_converted_free(qt_qat_converted *c, int n) {
    if (!c) return;
    for (int i = 0; i < n; i++) qt_qtensor_free(&c[i].q);
    free(c);
}

const char *qt_qat_describe(const qt_qat *q, char *buf, size_t n) {
    char f[120] = "float";
    if (q->cfg.weight_on) qt_qformat_str(&q->cfg.weight, f, sizeof f - 24);
    if (q->cfg.learnable) strcat(f, " (LSQ-learned scales)");
    int act;
    int total = qt_qat_count(q, &act);
    const qt_act_config *a = &q->cfg.act;
    if (a->mode == QT_ACT_NONE)
        snprintf(buf, n, "%s weights on %d layers", f, total);
    else
        snprintf(buf, n, "%s weights on %d layers, int%d %s %s activations%s", f, total, a->bits,
                 a->mode == QT_ACT_DYNAMIC_TOKEN ? "per-token dynamic" : "per-tensor static",
                 a->symmetric ? "sym" : "asym",
                 a->mode == QT_ACT_STATIC_TENSOR
                     ? (a->observer == QT_OBS_MINMAX ? " (min-max observer)" : " (moving-average observer)")
                     : "");
    return buf;
}
