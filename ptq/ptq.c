/*
 * ptq.c - post-training quantization of a whole model (qt_ptq.h): which Linears, RTN,
 * and the block-by-block calibration that GPTQ (gptq.c) and AWQ (awq.c) run on.
 *
 * Calibration activations are held for one decoder block at a time: X (n, len, dim), the
 * block's input, is overwritten by the block's output once the block is done. GPTQ
 * passes on the output of the block as quantized (IST-DASLab/gptq llama.py); AWQ passes
 * on the float block's output, which it computes while collecting its input features
 * (AutoAWQ quantizer.py _get_input_feat, llm-awq run_awq), before any weight changes.
 */
#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "ptq_internal.h"

void qt_ptq_config_defaults(qt_ptq_config *c, qt_ptq_method method) {
    memset(c, 0, sizeof *c);
    c->method = method;
    /* GPTQ / AWQ's usual deployment format: int4, groups of 128, f16 scales; AWQ
     * asymmetric (zero_point: true), GPTQ symmetric (sym: true, vLLM's default) */
    c->fmt.kind = QT_QF_INT;
    c->fmt.bits = 4;
    c->fmt.symmetric = method != QT_PTQ_AWQ;
    c->fmt.gran = QT_QG_GROUP;
    c->fmt.group_size = 128;
    c->fmt.scale_dtype = QT_F16;
    c->damp = 0.01f;      /* GPTQ: percdamp */
    c->block_size = 128;  /* GPTQ: lazy batch updates */
    c->awq_grid = 20;     /* AWQ: n_grid */
    c->awq_clip = true;
    c->batch = 8;
}

double qt_ptq_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* "model.layers.0.mlp.up_proj.weight" -> "model.layers.0.mlp.up_proj" in buf */
static const char *module_of(const char *param, char *buf, size_t n) {
    snprintf(buf, n, "%s", param);
    size_t len = strlen(buf);
    if (len > 7 && !strcmp(buf + len - 7, ".weight")) buf[len - 7] = 0;
    return buf;
}

/* Linear weights PTQ may touch, in parameter order: the decoder blocks' projections and
 * an untied lm_head. */
static bool is_linear(const qt_model *m, const qt_tensor *t) {
    if (m->arch != QT_ARCH_LLAMA) return false;
    const qt_llama *L = &m->llama;
    if (t == L->lm_head) return !L->cfg.tied_embeddings;
    for (int l = 0; l < L->cfg.n_layers; l++) {
        const qt_llama_layer *y = &L->layers[l];
        if (t == y->wq || t == y->wk || t == y->wv || t == y->wo || t == y->w_gate ||
            t == y->w_up || t == y->w_down)
            return true;
    }
    return false;
}

bool qt_ptq_selected(const qt_ptq_config *cfg, const qt_model *m, const qt_tensor *w) {
    if (!is_linear(m, w)) return false;
    char mod[160];
    module_of(w->name, mod, sizeof mod);
    if (!cfg->layers || cfg->n_layers == 0) return w != m->llama.lm_head;
    for (int i = 0; i < cfg->n_layers; i++)
        if (fnmatch(cfg->layers[i], mod, 0) == 0) return true;
    return false;
}

/* Every glob must name at least one Linear; a tied lm_head cannot be chosen. */
static qt_status check_selection(const qt_ptq_config *cfg, qt_model *m) {
    qt_paramset *ps = qt_model_params(m);
    char mod[160];
    for (int i = 0; i < cfg->n_layers; i++) {
        bool hit = false;
        for (int p = 0; p < ps->n && !hit; p++)
            hit = is_linear(m, ps->params[p]) &&
                  fnmatch(cfg->layers[i], module_of(ps->params[p]->name, mod, sizeof mod), 0) == 0;
        if (!hit) {
            if (m->arch == QT_ARCH_LLAMA && m->llama.cfg.tied_embeddings &&
                fnmatch(cfg->layers[i], "lm_head", 0) == 0)
                return QT_ERROR(QT_EINVAL, "quantize.layers: \"%s\" selects the lm_head, which "
                                           "is tied to the embedding; PTQ leaves it float",
                                cfg->layers[i]);
            return QT_ERROR(QT_EINVAL,
                            "quantize.layers: \"%s\" matches no Linear layer (module names "
                            "look like \"model.layers.0.self_attn.q_proj\")",
                            cfg->layers[i]);
        }
    }
    return QT_OK;
}

qt_status qt_ptq_quantize_param(qt_qmodel *qm, const qt_qformat *f, qt_tensor *w) {
    qt_qtensor q;
    memset(&q, 0, sizeof q);
    int64_t rows = w->shape[0], cols = w->shape[1];
    qt_status st = qt_quantize(f, w->data, rows, cols, &q);
    if (st == QT_OK) st = qt_dequantize(&q, w->data);
    if (st != QT_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", qt_error_message());
        qt_qtensor_free(&q);
        return QT_ERROR(st, "%s: %s", w->name, why);
    }
    return qt_qmodel_add(qm, w->name, &q, NULL);
}

static qt_status run_rtn(qt_model *m, const qt_ptq_config *cfg, qt_qmodel *qm) {
    qt_paramset *ps = qt_model_params(m);
    for (int p = 0; p < ps->n; p++) {
        qt_tensor *w = ps->params[p];
        if (!qt_ptq_selected(cfg, m, w)) continue;
        qt_status st = qt_ptq_quantize_param(qm, &cfg->fmt, w);
        if (st != QT_OK) return st;
    }
    return QT_OK;
}

/* ----------------------------------------------------------------- capture ---- */

/* The linear hook used during calibration: for `target`, hands its input to `fn`. */
static qt_tensor *capture_linear(qt_ctx *ctx, void *user, qt_tensor *x, qt_tensor *w,
                                 qt_tensor *b, bool w_io) {
    qt_ptq_capture *c = user;
    if (w == c->target && x && qt_ctx_status(ctx) == QT_OK) c->fn(c, x->data, qt_numel(x) / x->shape[x->ndim - 1]);
    return qt_linear(ctx, x, w, b, w_io);
}

void qt_ptq_hook(qt_model *m, qt_ptq_capture *c) {
    qt_linear_hook h = {.linear = capture_linear, .user = c};
    qt_model_set_hook(m, c ? &h : NULL);
}

qt_tensor *qt_ptq_batch_tensor(qt_ctx *ctx, const float *X, int64_t b, int64_t len, int64_t dim) {
    int64_t shape[3] = {b, len, dim};
    return qt_tensor_from(ctx, QT_F32, 3, shape, X);
}

/* X (n, len, dim) = embedding of the calibration ids */
static qt_status embed_all(qt_model *m, const qt_calib *cal, int batch, float *X) {
    qt_ctx *ctx = qt_ctx_new();
    if (!ctx) return QT_ERROR(QT_ENOMEM, "calibration: out of memory");
    qt_ctx_set_grad_enabled(ctx, false);
    const int64_t dim = m->llama.cfg.dim;
    qt_status st = QT_OK;
    for (int64_t s = 0; s < cal->n && st == QT_OK; s += batch) {
        int64_t b = cal->n - s < batch ? cal->n - s : batch;
        qt_ctx_reset(ctx);
        int64_t shape[2] = {b, cal->len};
        qt_tensor *ids = qt_tensor_from(ctx, QT_I32, 2, shape, cal->ids + s * cal->len);
        qt_tensor *x = qt_llama_embed(ctx, &m->llama, ids);
        if (!x) st = QT_ERROR(qt_ctx_status(ctx), "calibration: %s", qt_ctx_error(ctx));
        else memcpy(X + s * cal->len * dim, x->data, (size_t)(b * cal->len * dim) * sizeof(float));
    }
    qt_ctx_free(ctx);
    return st;
}

qt_status qt_ptq_run(qt_model *m, const qt_ptq_config *cfg, const qt_calib *calib, FILE *log,
                     qt_qmodel *out) {
    static const char *names[] = {"rtn", "gptq", "awq"};
    qt_qmodel_init(out, m, names[cfg->method]);
    qt_status st = check_selection(cfg, m);
    if (st != QT_OK) return st;
    if (cfg->method == QT_PTQ_RTN) {
        st = run_rtn(m, cfg, out);
        if (st != QT_OK) qt_qmodel_free(out);
        return st;
    }
    if (m->arch != QT_ARCH_LLAMA)
        return QT_ERROR(QT_ENOTSUP, "%s: only Llama-family models (GPT-2: use rtn)",
                        names[cfg->method]);
    if (m->llama.hook.linear || m->llama.hook.embedding)
        return QT_ERROR(QT_ESTATE, "%s: the model already has a hook (QAT or LoRA); PTQ "
                                   "needs a plain model",
                        names[cfg->method]);
    if (cfg->fmt.kind != QT_QF_INT || cfg->fmt.gran == QT_QG_TENSOR)
        return QT_ERROR(QT_EINVAL, "%s: needs an int format per channel or per group, got %s",
                        names[cfg->method], qt_qformat_str(&cfg->fmt, (char[96]){0}, 96));
    if (!calib || calib->n < 1 || calib->len < 1)
        return QT_ERROR(QT_EINVAL, "%s: needs calibration data", names[cfg->method]);
    if (cfg->batch < 1) return QT_ERROR(QT_EINVAL, "%s: batch must be >= 1", names[cfg->method]);
    qt_llama *L = &m->llama;
    /* every selected weight must be quantizable in the format (shapes, groups) */
    for (int l = 0; l < L->cfg.n_layers; l++) {
        qt_tensor *ws[7] = {L->layers[l].wq, L->layers[l].wk, L->layers[l].wv, L->layers[l].wo,
                            L->layers[l].w_gate, L->layers[l].w_up, L->layers[l].w_down};
        for (int k = 0; k < 7; k++) {
            if (!qt_ptq_selected(cfg, m, ws[k])) continue;
            st = qt_qformat_check(&cfg->fmt, ws[k]->shape[0], ws[k]->shape[1]);
            if (st != QT_OK) {
                char why[512];
                snprintf(why, sizeof why, "%s", qt_error_message());
                return QT_ERROR(st, "%s: %s", ws[k]->name, why);
            }
        }
    }
    const int64_t ntok = calib->n * calib->len, dim = L->cfg.dim;
    float *X = malloc((size_t)(ntok * dim) * sizeof *X);
    if (!X) return QT_ERROR(QT_ENOMEM, "%s: out of memory for %lld calibration tokens",
                            names[cfg->method], (long long)ntok);
    st = embed_all(m, calib, cfg->batch, X);
    double t0 = qt_ptq_now();
    for (int l = 0; l < L->cfg.n_layers && st == QT_OK; l++) {
        st = cfg->method == QT_PTQ_GPTQ ? qt_gptq_block(m, cfg, calib, l, X, out)
                                        : qt_awq_block(m, cfg, calib, l, X, out);
        if (log && st == QT_OK) {
            fprintf(log, "qtrain quantize: %s block %d/%d done, %.1f s\n", names[cfg->method],
                    l + 1, L->cfg.n_layers, qt_ptq_now() - t0);
            fflush(log);
        }
    }
    qt_ptq_hook(m, NULL);
    free(X);
    if (st == QT_OK && L->lm_head != L->embed && qt_ptq_selected(cfg, m, L->lm_head))
        st = qt_ptq_quantize_param(out, &cfg->fmt, L->lm_head); /* no calibration: RTN */
    if (st != QT_OK) qt_qmodel_free(out);
    return st;
}

/* ----------------------------------------------------------- block passes ---- */

qt_status qt_ptq_stage_inputs(qt_model *m, const qt_ptq_config *cfg, const qt_calib *cal, int l,
                              const float *X, int stage, qt_ptq_capture *c) {
    qt_llama *L = &m->llama;
    const qt_llama_layer *Y = &L->layers[l];
    const int64_t dim = L->cfg.dim, len = cal->len;
    const float eps = L->cfg.norm_eps;
    c->target = stage == 1 ? Y->wo : stage == 3 ? Y->w_down : NULL;
    qt_ptq_hook(m, c->target ? c : NULL);
    qt_ctx *ctx = qt_ctx_new();
    if (!ctx) return QT_ERROR(QT_ENOMEM, "calibration: out of memory");
    qt_ctx_set_grad_enabled(ctx, false);
    qt_status st = QT_OK;
    for (int64_t s = 0; s < cal->n && st == QT_OK; s += cfg->batch) {
        int64_t b = cal->n - s < cfg->batch ? cal->n - s : cfg->batch;
        qt_ctx_reset(ctx);
        qt_tensor *x = qt_ptq_batch_tensor(ctx, X + s * len * dim, b, len, dim);
        qt_tensor *h = qt_rmsnorm(ctx, x, Y->attn_norm, eps);
        if (stage == 0 && h) c->fn(c, h->data, b * len);
        if (stage >= 1) {
            qt_tensor *a = qt_llama_attention(ctx, L, l, h);
            if (stage >= 2) {
                qt_tensor *h2 = qt_rmsnorm(ctx, qt_add(ctx, x, a), Y->ffn_norm, eps);
                if (stage == 2 && h2) c->fn(c, h2->data, b * len);
                if (stage == 3) qt_llama_mlp(ctx, L, l, h2);
            }
        }
        if (qt_ctx_status(ctx) != QT_OK)
            st = QT_ERROR(qt_ctx_status(ctx), "calibration, block %d: %s", l, qt_ctx_error(ctx));
    }
    qt_ptq_hook(m, NULL);
    qt_ctx_free(ctx);
    return st;
}

qt_status qt_ptq_block_forward(qt_model *m, const qt_ptq_config *cfg, const qt_calib *cal, int l,
                               float *X) {
    qt_llama *L = &m->llama;
    const int64_t dim = L->cfg.dim, len = cal->len;
    qt_ctx *ctx = qt_ctx_new();
    if (!ctx) return QT_ERROR(QT_ENOMEM, "calibration: out of memory");
    qt_ctx_set_grad_enabled(ctx, false);
    qt_status st = QT_OK;
    for (int64_t s = 0; s < cal->n && st == QT_OK; s += cfg->batch) {
        int64_t b = cal->n - s < cfg->batch ? cal->n - s : cfg->batch;
        qt_ctx_reset(ctx);
        float *xb = X + s * len * dim;
        qt_tensor *y = qt_llama_block(ctx, L, l, qt_ptq_batch_tensor(ctx, xb, b, len, dim));
        if (!y) st = QT_ERROR(qt_ctx_status(ctx), "calibration, block %d: %s", l, qt_ctx_error(ctx));
        else memcpy(xb, y->data, (size_t)(b * len * dim) * sizeof(float));
    }
    qt_ctx_free(ctx);
    return st;
}

/* --------------------------------------------------------------------- GPTQ ---- */

/* H += 2/N x^T x over the rows of x (N = all calibration tokens), upper triangle */
static void acc_hessian(qt_ptq_capture *c, const float *x, int64_t rows) {
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)c->in, (int)rows, c->scale, x,
                (int)c->in, 1.0f, c->H, (int)c->in);
}

/* One block, true-sequential: q/k/v (one Hessian: same input), o, gate/up, down; each
 * stage's inputs computed with the stages before it already quantized. Then X = the
 * quantized block's output. */
qt_status qt_gptq_block(qt_model *m, const qt_ptq_config *cfg, const qt_calib *cal, int l,
                        float *X, qt_qmodel *qm) {
    qt_llama_layer *Y = &m->llama.layers[l];
    qt_tensor *stages[4][3] = {{Y->wq, Y->wk, Y->wv}, {Y->wo}, {Y->w_gate, Y->w_up}, {Y->w_down}};
    qt_status st = QT_OK;
    for (int s = 0; s < 4 && st == QT_OK; s++) {
        bool any = false;
        for (int k = 0; k < 3 && stages[s][k]; k++) any |= qt_ptq_selected(cfg, m, stages[s][k]);
        if (!any) continue;
        const int64_t in = stages[s][0]->shape[1];
        float *H = calloc((size_t)(in * in), sizeof *H), *Hc = malloc((size_t)(in * in) * sizeof *Hc);
        if (!H || !Hc) {
            free(H);
            free(Hc);
            return QT_ERROR(QT_ENOMEM, "gptq: out of memory for a %lld x %lld Hessian",
                            (long long)in, (long long)in);
        }
        qt_ptq_capture c = {.fn = acc_hessian, .H = H, .in = in,
                            .scale = 2.0f / (float)(cal->n * cal->len)};
        st = qt_ptq_stage_inputs(m, cfg, cal, l, X, s, &c);
        for (int64_t i = 0; i < in; i++) /* syrk filled the upper triangle */
            for (int64_t j = 0; j < i; j++) H[i * in + j] = H[j * in + i];
        for (int k = 0; k < 3 && stages[s][k] && st == QT_OK; k++) {
            qt_tensor *w = stages[s][k];
            if (!qt_ptq_selected(cfg, m, w)) continue;
            memcpy(Hc, H, (size_t)(in * in) * sizeof *Hc);
            qt_qtensor q;
            int32_t *perm = NULL;
            st = qt_gptq_quantize_layer(&cfg->fmt, w->data, w->shape[0], w->shape[1], Hc,
                                        cfg->damp, cfg->block_size, cfg->act_order,
                                        cfg->static_groups, &q, &perm);
            if (st != QT_OK) {
                char why[512];
                snprintf(why, sizeof why, "%s", qt_error_message());
                st = QT_ERROR(st, "%s: %s", w->name, why);
            } else {
                st = qt_qmodel_add(qm, w->name, &q, perm);
            }
        }
        free(H);
        free(Hc);
    }
    if (st == QT_OK) st = qt_ptq_block_forward(m, cfg, cal, l, X);
    return st;
}
