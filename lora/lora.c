/*
 * lora.c - LoRA adapters on a Llama-family model through its linear hook (Hu et al.
 * 2021; PEFT's LoraLayer for the init and the scaling), and QLoRA's NF4 base
 * (nf4_base.c). A selected Linear computes
 *     y = base(x) + scaling * ((dropout(x) A^T) B^T)
 * where base is x W^T with W frozen, or the NF4 matmul for QLoRA. Dropout is active
 * while grad mode is on (training) and off in evaluation, as nn.Dropout in train/eval.
 */
#include <cblas.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lora_internal.h"

static const char *const LINEARS[7][2] = {
    {"self_attn.q_proj", "q_proj"}, {"self_attn.k_proj", "k_proj"}, {"self_attn.v_proj", "v_proj"},
    {"self_attn.o_proj", "o_proj"}, {"mlp.gate_proj", "gate_proj"}, {"mlp.up_proj", "up_proj"},
    {"mlp.down_proj", "down_proj"}};

static qt_tensor *layer_weight(qt_llama_layer *L, int k) {
    qt_tensor *w[7] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
    return w[k];
}

/* PEFT's matching: "all-linear"; a plain name matches the module's last component
 * ("q_proj"); anything else is an fnmatch pattern on the full module name. */
static bool target_matches(const char *t, const char *module, const char *short_name) {
    if (!strcmp(t, "all-linear")) return true;
    if (!strpbrk(t, ".*?[")) return !strcmp(t, short_name);
    return fnmatch(t, module, 0) == 0;
}

static qt_lora_layer *find_layer(qt_lora *l, const qt_tensor *w) {
    for (int i = 0; i < l->n; i++)
        if (l->layers[i].w == w) return &l->layers[i];
    return NULL;
}

static qt_tensor *hook_linear(qt_ctx *ctx, void *user, qt_tensor *x, qt_tensor *w, qt_tensor *b,
                              bool w_io) {
    qt_lora *l = user;
    qt_lora_layer *L = find_layer(l, w);
    if (!L) return qt_linear(ctx, x, w, b, w_io); /* not adapted: the frozen Linear */
    qt_tensor *base = L->nf4 ? qt_nf4_linear(ctx, x, L->nf4) : qt_linear(ctx, x, w, NULL, false);
    if (b) base = qt_add(ctx, base, b);
    qt_tensor *h = x;
    if (l->cfg.dropout > 0 && qt_ctx_grad_enabled(ctx)) {
        uint64_t seed = qt_rand_u64(l->cfg.seed ^ 0x10a4d40u, ((uint64_t)(L - l->layers) << 40) ^ l->step);
        h = qt_dropout(ctx, x, l->cfg.dropout, seed);
    }
    /* scaling on the r-wide u, not the out-wide product: one tensor of r columns instead
     * of out columns (and its grad) per layer and step */
    qt_tensor *u = qt_scale(ctx, qt_linear(ctx, h, L->a, NULL, false), l->scaling); /* (.., r) */
    return qt_add(ctx, base, qt_linear(ctx, u, L->b, NULL, false));
}

void qt_lora_set_step(qt_lora *l, uint64_t step) { l->step = step; }
qt_paramset *qt_lora_params(qt_lora *l) { return &l->params; }

void qt_lora_free(qt_lora *l) {
    if (!l) return;
    if (l->m && l->m->arch == QT_ARCH_LLAMA && l->m->llama.hook.user == l)
        qt_model_set_hook(l->m, NULL);
    for (int i = 0; l->layers && i < l->n; i++) qt_nf4_base_free(l->layers[i].nf4);
    free(l->layers);
    qt_paramset_free(&l->params);
    free(l);
}

static qt_status attach(qt_lora *l, qt_model *m, const qt_lora_config *cfg) {
    if (m->arch != QT_ARCH_LLAMA)
        return QT_ERROR(QT_ENOTSUP, "lora: only Llama-family models for now (GPT-2's Conv1D "
                                    "weights are stored transposed)");
    qt_llama *lm = &m->llama;
    if (lm->hook.linear || lm->hook.embedding)
        return QT_ERROR(QT_ENOTSUP, "lora: the model already has a linear hook (QAT or another "
                                    "adapter); LoRA together with QAT is not supported yet");
    if (cfg->rank < 1) return QT_ERROR(QT_EINVAL, "lora.rank must be >= 1, got %d", cfg->rank);
    if (!(cfg->alpha > 0)) return QT_ERROR(QT_EINVAL, "lora.alpha must be > 0, got %g", cfg->alpha);
    if (!(cfg->dropout >= 0 && cfg->dropout < 1))
        return QT_ERROR(QT_EINVAL, "lora.dropout must be in [0, 1), got %g", cfg->dropout);
    if (cfg->n_targets < 0 || cfg->n_targets > QT_LORA_MAX_TARGETS)
        return QT_ERROR(QT_EINVAL, "lora.targets: at most %d", QT_LORA_MAX_TARGETS);
    l->cfg = *cfg;
    l->cfg.n_targets = cfg->n_targets && cfg->targets ? cfg->n_targets : 1;
    for (int i = 0; i < l->cfg.n_targets; i++) {
        const char *t = cfg->n_targets && cfg->targets ? cfg->targets[i] : "all-linear";
        if (strlen(t) >= sizeof l->target_buf[i])
            return QT_ERROR(QT_EINVAL, "lora.targets: \"%.40s...\" is too long", t);
        snprintf(l->target_buf[i], sizeof l->target_buf[i], "%s", t);
        l->target_ptr[i] = l->target_buf[i];
    }
    l->cfg.targets = l->target_ptr;
    if (!l->cfg.nf4_blocksize) l->cfg.nf4_blocksize = 64;
    l->scaling = cfg->rslora ? cfg->alpha / sqrtf((float)cfg->rank) : cfg->alpha / (float)cfg->rank;
    l->m = m;

    /* select */
    l->layers = calloc((size_t)lm->cfg.n_layers * 7, sizeof *l->layers);
    if (!l->layers) return QT_ERROR(QT_ENOMEM, "lora: out of memory");
    bool hit[QT_LORA_MAX_TARGETS] = {0};
    for (int li = 0; li < lm->cfg.n_layers; li++)
        for (int k = 0; k < 7; k++) {
            char module[128];
            snprintf(module, sizeof module, "model.layers.%d.%s", li, LINEARS[k][0]);
            bool sel = false;
            for (int t = 0; t < l->cfg.n_targets; t++)
                if (target_matches(l->cfg.targets[t], module, LINEARS[k][1])) sel = hit[t] = true;
            if (!sel) continue;
            qt_lora_layer *L = &l->layers[l->n++];
            snprintf(L->module, sizeof L->module, "%s", module);
            snprintf(L->short_name, sizeof L->short_name, "%s", LINEARS[k][1]);
            L->w = layer_weight(&lm->layers[li], k);
            int64_t out = L->w->shape[0], in = L->w->shape[1];
            if (cfg->rank > out || cfg->rank > in)
                return QT_ERROR(QT_EINVAL, "lora.rank %d is larger than %s (%lld x %lld)",
                                cfg->rank, module, (long long)out, (long long)in);
        }
    for (int t = 0; t < l->cfg.n_targets; t++)
        if (!hit[t])
            return QT_ERROR(QT_EINVAL, "lora.targets: \"%s\" matches no Linear layer (names: "
                                       "q_proj k_proj v_proj o_proj gate_proj up_proj "
                                       "down_proj, all-linear, or patterns on "
                                       "model.layers.N.self_attn.q_proj)", l->cfg.targets[t]);

    /* adapters: A (r, in), B (out, r), one paramset */
    qt_paramset_init(&l->params);
    for (int i = 0; i < l->n; i++) {
        qt_lora_layer *L = &l->layers[i];
        char name[160];
        int64_t sa[2] = {cfg->rank, L->w->shape[1]}, sb[2] = {L->w->shape[0], cfg->rank};
        snprintf(name, sizeof name, "%s.lora_A.weight", L->module);
        L->a = qt_paramset_add(&l->params, name, 2, sa, 0);
        snprintf(name, sizeof name, "%s.lora_B.weight", L->module);
        L->b = qt_paramset_add(&l->params, name, 2, sb, 0);
        if (!L->a || !L->b) return QT_ERROR(QT_ENOMEM, "lora: %s", qt_error_message());
    }
    qt_status st = qt_paramset_alloc(&l->params);
    if (st != QT_OK) return st;
    /* PEFT: nn.init.kaiming_uniform_(A, a=sqrt(5)): bound = sqrt(6 / ((1 + 5) fan_in)) =
     * 1/sqrt(in); B = 0, so the adapted model starts equal to its base */
    for (int i = 0; i < l->n; i++) {
        qt_lora_layer *L = &l->layers[i];
        float bound = 1.0f / sqrtf((float)L->w->shape[1]);
        float *a = L->a->data;
        size_t off = l->params.offset[2 * i];
        for (int64_t j = 0; j < qt_numel(L->a); j++)
            a[j] = bound * (2.0f * qt_rand_uniform(cfg->seed, off + (uint64_t)j) - 1.0f);
    }

    /* the base: frozen (no grad, so no optimizer state and no dW work); QLoRA: NF4 */
    qt_paramset *ps = qt_model_params(m);
    for (int i = 0; i < ps->n; i++) {
        ps->params[i]->requires_grad = false;
        ps->params[i]->grad = NULL;
    }
    if (cfg->nf4 && cfg->base_fq)
        return QT_ERROR(QT_EINVAL, "lora: an NF4 base (QLoRA) and a fake-quantized base (QAT + "
                                   "LoRA) are two ways to quantize it: choose one");
    for (int i = 0; cfg->base_fq && i < l->n; i++) {
        qt_lora_layer *L = &l->layers[i];
        if (L->w->device.kind != QT_DEV_CPU)
            return QT_ERROR(QT_ENOTSUP, "lora: attach before moving the model to the GPU");
        if (qt_qformat_check(&cfg->base_fmt, L->w->shape[0], L->w->shape[1]) == QT_OK)
            st = qt_fake_quant(&cfg->base_fmt, L->w->data, L->w->shape[0], L->w->shape[1],
                               L->w->data, NULL);
        else
            st = QT_EINVAL;
        if (st != QT_OK) {
            char why[512], fs[64];
            snprintf(why, sizeof why, "%s", qt_error_message());
            return QT_ERROR(st, "lora: %s: base format %s: %s", L->module,
                            qt_qformat_str(&cfg->base_fmt, fs, sizeof fs), why);
        }
    }
    for (int i = 0; cfg->nf4 && i < l->n; i++) {
        qt_lora_layer *L = &l->layers[i];
        if (L->w->device.kind != QT_DEV_CPU)
            return QT_ERROR(QT_ENOTSUP, "lora: QLoRA's NF4 base is made on the CPU (attach "
                                        "before moving the model)");
        st = qt_nf4_base_new(L->w->data, L->w->shape[0], L->w->shape[1], l->cfg.nf4_blocksize,
                             &L->nf4);
        if (st != QT_OK) {
            char why[512];
            snprintf(why, sizeof why, "%s", qt_error_message());
            return QT_ERROR(st, "lora: %s: %s", L->module, why);
        }
    }
    if (cfg->nf4 && (st = qt_lora_release_base(l)) != QT_OK) return st;
    qt_linear_hook h = {.linear = hook_linear, .embedding = NULL, .user = l};
    qt_model_set_hook(m, &h);
    return QT_OK;
}

qt_status qt_lora_release_base(qt_lora *l) {
    qt_paramset *ps = qt_model_params(l->m);
    for (int i = 0; i < l->n; i++) {
        if (!l->layers[i].nf4) continue;
        qt_status st = qt_paramset_release(ps, l->layers[i].w);
        if (st != QT_OK) return st;
    }
    return QT_OK;
}

qt_status qt_lora_restore_base(qt_lora *l) {
    for (int i = 0; i < l->n; i++) {
        qt_lora_layer *L = &l->layers[i];
        if (!L->nf4) continue;
        if (L->w->device.kind != QT_DEV_CPU)
            return QT_ERROR(QT_ESTATE, "lora: restoring %s: the model is not on the CPU", L->module);
        qt_nf4_base_rows(L->nf4, 0, L->nf4->rows, L->w->data);
    }
    return QT_OK;
}

qt_status qt_lora_attach(qt_lora **out, qt_model *m, const qt_lora_config *cfg) {
    *out = NULL;
    qt_lora *l = calloc(1, sizeof *l);
    if (!l) return QT_ERROR(QT_ENOMEM, "lora: out of memory");
    qt_status st = attach(l, m, cfg);
    if (st != QT_OK) {
        char why[600];
        snprintf(why, sizeof why, "%s", qt_error_message());
        qt_lora_free(l);
        return QT_ERROR(st, "%s", why);
    }
    *out = l;
    return QT_OK;
}

qt_status qt_lora_base_weight(const qt_lora *l, int layer, float *out) {
    if (layer < 0 || layer >= l->n) return QT_ERROR(QT_EINVAL, "lora: no layer %d", layer);
    const qt_lora_layer *L = &l->layers[layer];
    if (L->nf4) {
        qt_nf4_base_rows(L->nf4, 0, L->nf4->rows, out);
        return QT_OK;
    }
    return qt_device_copy((qt_device){QT_DEV_CPU, 0}, out, L->w->device, L->w->data,
                          (size_t)qt_numel(L->w) * sizeof(float));
}

qt_status qt_lora_merge(qt_lora *l) {
    if (l->params.ddata || qt_model_params(l->m)->ddata)
        return QT_ERROR(QT_ESTATE, "lora merge: move the model and adapters to the CPU first");
    for (int i = 0; i < l->n; i++) {
        qt_lora_layer *L = &l->layers[i];
        int64_t out = L->w->shape[0], in = L->w->shape[1];
        float *w = L->w->data;
        qt_status st = qt_lora_base_weight(l, i, w); /* the base it was trained against */
        if (st != QT_OK) return st;
        /* W += scaling * B (out, r) A (r, in) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)out, (blasint)in,
                    (blasint)l->cfg.rank, l->scaling, L->b->data, (blasint)l->cfg.rank,
                    L->a->data, (blasint)in, 1.0f, w, (blasint)in);
    }
    if (l->m->llama.hook.user == l) qt_model_set_hook(l->m, NULL);
    return QT_OK;
}

double qt_lora_nf4_bits(const qt_lora *l) {
    double bytes = 0, params = 0;
    for (int i = 0; i < l->n; i++) {
        if (!l->layers[i].nf4) continue;
        bytes += (double)qt_nf4_base_bytes(l->layers[i].nf4);
        params += (double)l->layers[i].nf4->n;
    }
    return params > 0 ? 8.0 * bytes / params : 0.0;
}
