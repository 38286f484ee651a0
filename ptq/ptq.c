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

bool qt_ptq_selects(const qt_ptq_config *cfg, const qt_model *m, const qt_tensor *w) {
    return qt_ptq_selected(cfg, m, w);
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

bool qt_ggml_fallback(qt_ggml_type type, int64_t cols, qt_ggml_type *out) {
    const int64_t bs = qt_ggml_blck_size(type);
    if (bs <= 0 || cols % bs == 0) return false;
    qt_ggml_type t;
    switch (type) { /* llama-quant.cpp tensor_type_fallback */
    case QT_GGML_IQ4_XS: t = QT_GGML_IQ4_NL; break;
    case QT_GGML_Q2_K:
    case QT_GGML_Q3_K: t = QT_GGML_Q4_0; break;
    case QT_GGML_Q4_K: t = QT_GGML_Q5_0; break;
    case QT_GGML_Q5_K: t = QT_GGML_Q5_1; break;
    case QT_GGML_Q6_K: t = QT_GGML_Q8_0; break;
    default: return false;
    }
    if (cols % qt_ggml_blck_size(t)) return false; /* llama.cpp: F16 */
    *out = t;
    return true;
}

/* RTN of one selected weight: the format (llama.cpp's fallback type when the GGUF block
 * does not fit the rows: reported through qt_log and recorded in the layer), the
 * importance vector from cfg->imatrix for GGUF formats, then the quantizer core. */
static qt_status rtn_param(const qt_ptq_config *cfg, qt_qmodel *qm, qt_tensor *w) {
    qt_qformat f = cfg->fmt;
    qt_ggml_type fb = QT_GGML_F32, from = QT_GGML_F32;
    if (f.kind == QT_QF_GGUF && qt_ggml_fallback(f.ggml, w->shape[1], &fb)) {
        qt_log(QT_LOG_WARN, "%s: %lld inputs are not a multiple of %lld: %s instead of %s "
                            "(llama.cpp's fallback)", w->name, (long long)w->shape[1],
               (long long)qt_ggml_blck_size(f.ggml), qt_ggml_type_name(fb),
               qt_ggml_type_name(f.ggml));
        from = f.ggml;
        f.ggml = fb;
    }
    float *imp = NULL;
    if (cfg->imatrix) {
        imp = malloc((size_t)w->shape[1] * sizeof *imp);
        if (!imp) return QT_ERROR(QT_ENOMEM, "rtn: out of memory");
        qt_status st = qt_imatrix_weights_for(cfg->imatrix, w, imp);
        if (st != QT_OK) {
            free(imp);
            return st;
        }
        f.importance = imp;
    }
    qt_status st = qt_ptq_quantize_param(qm, &f, w);
    free(imp);
    if (st == QT_OK) qm->layers[qm->n - 1].fallback_from = from;
    return st;
}

static qt_status run_rtn(qt_model *m, const qt_ptq_config *cfg, qt_qmodel *qm) {
    if (cfg->imatrix && cfg->fmt.kind != QT_QF_GGUF)
        return QT_ERROR(QT_EINVAL, "rtn: an importance matrix (imatrix) applies to the GGUF "
                                   "formats only, got %s",
                        qt_qformat_str(&cfg->fmt, (char[96]){0}, 96));
    if (cfg->imatrix) {
        qt_status st = qt_imatrix_check_model(cfg->imatrix, m);
        if (st != QT_OK) return st;
    }
    qt_paramset *ps = qt_model_params(m);
    for (int p = 0; p < ps->n; p++) {
        qt_tensor *w = ps->params[p];
        if (!qt_ptq_selected(cfg, m, w)) continue;
        qt_status st = rtn_param(cfg, qm, w);
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
    if (cfg->method == QT_PTQ_GPTQ) out->damp = cfg->damp;
    qt_status st = check_selection(cfg, m);
    if (st != QT_OK) return st;
    if (cfg->method == QT_PTQ_RTN) {
        st = run_rtn(m, cfg, out);
        if (st == QT_OK && out->n == 0)
            st = QT_ERROR(QT_ENOTSUP, "rtn: no Linear layer to quantize (PTQ quantizes the "
                                      "Llama family's projections; GPT-2 is not supported)");
        if (st != QT_OK) qt_qmodel_free(out);
        return st;
    }
    if (m->arch != QT_ARCH_LLAMA)
        return QT_ERROR(QT_ENOTSUP, "%s: only Llama-family models (GPT-2: use rtn)",
                        names[cfg->method]);
    if (cfg->imatrix)
        return QT_ERROR(QT_EINVAL, "%s: an importance matrix (imatrix) is for RTN into a GGUF "
                                   "format; %s computes its own statistics",
                        names[cfg->method], names[cfg->method]);
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

/* --------------------------------------------------------------------- GPTQ ---- */

/* H (in, in) += scale x^T x over the rows of x, upper triangle */
static void syrk_acc(float *H, int64_t in, const float *x, int64_t rows, float scale) {
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)in, (int)rows, scale, x, (int)in, 1.0f,
                H, (int)in);
}

static void store_rows(qt_ptq_capture *c, const float *x, int64_t rows) {
    memcpy(c->feat + c->pos * c->in, x, (size_t)(rows * c->in) * sizeof(float));
    c->pos += rows;
}

/* GPTQ of the selected Linears among ws[0..n) that all read the input whose Hessian is H
 * (upper triangle filled): one factorisation, then each weight. */
static qt_status gptq_stage(qt_model *m, const qt_ptq_config *cfg, qt_tensor **ws, int n, float *H,
                            int64_t in, qt_qmodel *qm) {
    bool any = false;
    for (int k = 0; k < n; k++) any |= qt_ptq_selected(cfg, m, ws[k]);
    if (!any) return QT_OK;
    for (int64_t i = 0; i < in; i++)
        for (int64_t j = 0; j < i; j++) H[i * in + j] = H[j * in + i];
    qt_gptq_hinv h;
    char why[512];
    qt_status st = qt_gptq_hinv_init(H, in, cfg->damp, cfg->act_order, &h);
    if (st != QT_OK) {
        snprintf(why, sizeof why, "%s", qt_error_message());
        return QT_ERROR(st, "%s (the input it shares with the stage's layers): %s", ws[0]->name, why);
    }
    for (int k = 0; k < n && st == QT_OK; k++) {
        qt_tensor *w = ws[k];
        if (!qt_ptq_selected(cfg, m, w)) continue;
        qt_qtensor q;
        int32_t *perm = NULL;
        st = qt_gptq_quantize_with(&cfg->fmt, w->data, w->shape[0], w->shape[1], &h,
                                   cfg->block_size, cfg->static_groups, &q, &perm);
        if (st == QT_OK) {
            st = qt_qmodel_add(qm, w->name, &q, perm);
        } else {
            snprintf(why, sizeof why, "%s", qt_error_message());
            st = QT_ERROR(st, "%s: %s", w->name, why);
        }
    }
    qt_gptq_hinv_free(&h);
    return st;
}

/* One block, true-sequential as the reference: q/k/v (one Hessian: one input), o,
 * gate/up, down, each stage's inputs computed with the stages before it quantized. The
 * attention's output (o_proj's input) and the residual after it are kept for the block,
 * so attention runs once and the MLP twice; then X = the quantized block's output. */
qt_status qt_gptq_block(qt_model *m, const qt_ptq_config *cfg, const qt_calib *cal, int l,
                        float *X, qt_qmodel *qm) {
    qt_llama *L = &m->llama;
    qt_llama_layer *Y = &L->layers[l];
    const int64_t len = cal->len, N = cal->n * len, dim = L->cfg.dim;
    const int64_t qd = Y->wo->shape[1], ffn = Y->w_down->shape[1];
    const int64_t hmax = qd > ffn ? (qd > dim ? qd : dim) : (ffn > dim ? ffn : dim);
    const float eps = L->cfg.norm_eps, sc = 2.0f / (float)N;
    float *O = malloc((size_t)(N * qd) * sizeof *O);   /* (N, qd) o_proj's input */
    float *X2 = malloc((size_t)(N * dim) * sizeof *X2); /* (N, dim) x + attention */
    float *H = malloc((size_t)(hmax * hmax) * sizeof *H);
    qt_ctx *ctx = qt_ctx_new();
    qt_status st = QT_OK;
    if (!O || !X2 || !H || !ctx) {
        st = QT_ERROR(QT_ENOMEM, "gptq: out of memory for block %d's calibration", l);
        goto done;
    }
    qt_ctx_set_grad_enabled(ctx, false);
#define BATCHES(body)                                                                      \
    for (int64_t s0 = 0; s0 < cal->n && st == QT_OK; s0 += cfg->batch) {                   \
        int64_t b = cal->n - s0 < cfg->batch ? cal->n - s0 : cfg->batch, off = s0 * len;    \
        qt_ctx_reset(ctx);                                                                 \
        body;                                                                              \
        if (qt_ctx_status(ctx) != QT_OK)                                                   \
            st = QT_ERROR(qt_ctx_status(ctx), "gptq, block %d: %s", l, qt_ctx_error(ctx)); \
    }
    /* q/k/v: attn_norm(x) */
    memset(H, 0, (size_t)(dim * dim) * sizeof *H);
    BATCHES({
        qt_tensor *h = qt_rmsnorm(ctx, qt_ptq_batch_tensor(ctx, X + off * dim, b, len, dim), Y->attn_norm, eps);
        if (h) syrk_acc(H, dim, h->data, b * len, sc);
    })
    qt_tensor *qkv[3] = {Y->wq, Y->wk, Y->wv};
    if (st == QT_OK) st = gptq_stage(m, cfg, qkv, 3, H, dim, qm);
    /* o: the attention's output with q/k/v quantized, kept in O */
    qt_ptq_capture c = {.target = Y->wo, .fn = store_rows, .feat = O, .in = qd};
    qt_ptq_hook(m, &c);
    BATCHES({
        qt_tensor *x = qt_ptq_batch_tensor(ctx, X + off * dim, b, len, dim);
        qt_llama_attention(ctx, L, l, qt_rmsnorm(ctx, x, Y->attn_norm, eps));
    })
    qt_ptq_hook(m, NULL);
    if (st == QT_OK && c.pos != N) st = QT_ERROR(QT_ESTATE, "gptq: o_proj saw %lld of %lld rows", (long long)c.pos, (long long)N);
    memset(H, 0, (size_t)(qd * qd) * sizeof *H);
    for (int64_t s0 = 0; s0 < cal->n && st == QT_OK; s0 += cfg->batch) { /* batch by batch, */
        int64_t b = cal->n - s0 < cfg->batch ? cal->n - s0 : cfg->batch;  /* as the others */
        syrk_acc(H, qd, O + s0 * len * qd, b * len, sc);
    }
    if (st == QT_OK) st = gptq_stage(m, cfg, &Y->wo, 1, H, qd, qm);
    /* gate/up: ffn_norm(x + o(O)), the residual kept in X2 */
    memset(H, 0, (size_t)(dim * dim) * sizeof *H);
    BATCHES({
        qt_tensor *x = qt_ptq_batch_tensor(ctx, X + off * dim, b, len, dim);
        qt_tensor *x2 = qt_add(ctx, x, qt_linear(ctx, qt_ptq_batch_tensor(ctx, O + off * qd, b, len, qd), Y->wo, NULL, false));
        qt_tensor *h2 = qt_rmsnorm(ctx, x2, Y->ffn_norm, eps);
        if (h2) {
            memcpy(X2 + off * dim, x2->data, (size_t)(b * len * dim) * sizeof(float));
            syrk_acc(H, dim, h2->data, b * len, sc);
        }
    })
    qt_tensor *gu[2] = {Y->w_gate, Y->w_up};
    if (st == QT_OK) st = gptq_stage(m, cfg, gu, 2, H, dim, qm);
    /* down: swiglu(gate, up) with gate/up quantized */
    if (st == QT_OK && qt_ptq_selected(cfg, m, Y->w_down)) {
        memset(H, 0, (size_t)(ffn * ffn) * sizeof *H);
        BATCHES({
            qt_tensor *h2 = qt_rmsnorm(ctx, qt_ptq_batch_tensor(ctx, X2 + off * dim, b, len, dim), Y->ffn_norm, eps);
            qt_tensor *d = qt_swiglu(ctx, qt_linear(ctx, h2, Y->w_gate, NULL, false),
                                     qt_linear(ctx, h2, Y->w_up, NULL, false));
            if (d) syrk_acc(H, ffn, d->data, b * len, sc);
        })
        if (st == QT_OK) st = gptq_stage(m, cfg, &Y->w_down, 1, H, ffn, qm);
    }
    /* the quantized block's output: X2 + mlp(ffn_norm(X2)) */
    BATCHES({
        qt_tensor *x2 = qt_ptq_batch_tensor(ctx, X2 + off * dim, b, len, dim);
        qt_tensor *y = qt_add(ctx, x2, qt_llama_mlp(ctx, L, l, qt_rmsnorm(ctx, x2, Y->ffn_norm, eps)));
        if (y) memcpy(X + off * dim, y->data, (size_t)(b * len * dim) * sizeof(float));
    })
#undef BATCHES
done:
    qt_ctx_free(ctx);
    free(O);
    free(X2);
    free(H);
    return st;
}
