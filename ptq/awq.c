/*
 * awq.c - AWQ, activation-aware weight quantization, on one Llama block (Lin et al. 2023;
 * mit-han-lab/llm-awq awq/quantize/auto_scale.py and auto_clip.py; AutoAWQ
 * quantizer.py, whose Llama scaling groups and clip rules are followed here).
 *
 * 1. One float pass of the block over the calibration set stores every Linear's input
 *    and the outputs of attention and MLP; the float block output becomes the next
 *    block's input (the reference's scheme: weights change only after the pass).
 * 2. Scale search, per group of Linears that share an input:
 *      q/k/v  after input_layernorm         judged by the attention output
 *      o_proj after v_proj (only when v_proj's rows match o_proj's inputs: no GQA)
 *      gate/up after post_attention_layernorm judged by the MLP output
 *      down   after up_proj
 *    s = clamp(mean|x|^alpha, 1e-4) / sqrt(max(s) min(s)), alpha = i / grid, i < grid
 *    (llm-awq; with awq_duo, AutoAWQ's duo_scaling: mean|x|^alpha / (w_mean^(1-alpha) +
 *    1e-4), w_mean the mean over rows of |w| / its group's max); the loss of alpha is the mean squared
 *    error of the group's judge with each weight replaced by Q(W diag(s)) diag(s)^-1.
 *    All groups are searched on the float block, then every scale is folded: the
 *    preceding norm's weight (or the preceding Linear's rows) divided by s, the group's
 *    columns multiplied by s (a float no-op), and the stored inputs divided by s.
 * 3. Clip search on every Linear but q/k (AutoAWQ avoids clipping them): per output row
 *    and group, the max |w| shrunk by (1 - i/20), i < 10, chosen by the error of the
 *    group's partial products on up to ~512 sampled tokens; weights clamped to it.
 * 4. RTN through the quantizer core (the format's own scale and zero point rules).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "ptq_internal.h"

static void store_feat(qt_ptq_capture *c, const float *x, int64_t rows) {
    memcpy(c->feat + c->pos * c->in, x, (size_t)(rows * c->in) * sizeof(float));
    c->pos += rows;
}

/* The float pass: inputs of each group, judges' targets, X <- block output. */
typedef struct {
    float *h1, *o_in, *attn, *h2, *d_in, *mlp; /* (N, dim | qd | ffn) */
} feats;

static void feats_free(feats *f) {
    free(f->h1), free(f->o_in), free(f->attn), free(f->h2), free(f->d_in), free(f->mlp);
}

static qt_status float_pass(qt_model *m, const qt_ptq_config *cfg, const qt_calib *cal, int l,
                            float *X, feats *F) {
    qt_llama *L = &m->llama;
    const qt_llama_layer *Y = &L->layers[l];
    const int64_t dim = L->cfg.dim, len = cal->len, N = cal->n * len;
    const int64_t qd = Y->wo->shape[1], ffn = Y->w_down->shape[1];
    F->h1 = malloc((size_t)(N * dim) * sizeof(float));
    F->o_in = malloc((size_t)(N * qd) * sizeof(float));
    F->attn = malloc((size_t)(N * dim) * sizeof(float));
    F->h2 = malloc((size_t)(N * dim) * sizeof(float));
    F->d_in = malloc((size_t)(N * ffn) * sizeof(float));
    F->mlp = malloc((size_t)(N * dim) * sizeof(float));
    if (!F->h1 || !F->o_in || !F->attn || !F->h2 || !F->d_in || !F->mlp)
        return QT_ERROR(QT_ENOMEM, "awq: out of memory for block %d's calibration inputs", l);
    qt_ptq_capture co = {.fn = store_feat, .feat = F->o_in, .in = qd, .target = Y->wo};
    qt_ptq_capture cd = {.fn = store_feat, .feat = F->d_in, .in = ffn, .target = Y->w_down};
    qt_ctx *ctx = qt_ctx_new();
    if (!ctx) return QT_ERROR(QT_ENOMEM, "awq: out of memory");
    qt_ctx_set_grad_enabled(ctx, false);
    qt_status st = QT_OK;
    const float eps = L->cfg.norm_eps;
    for (int64_t s = 0; s < cal->n && st == QT_OK; s += cfg->batch) {
        int64_t b = cal->n - s < cfg->batch ? cal->n - s : cfg->batch, off = s * len * dim;
        size_t bytes = (size_t)(b * len * dim) * sizeof(float);
        qt_ctx_reset(ctx);
        qt_tensor *x = qt_ptq_batch_tensor(ctx, X + off, b, len, dim);
        qt_tensor *h = qt_rmsnorm(ctx, x, Y->attn_norm, eps);
        qt_ptq_hook(m, &co);
        qt_tensor *a = qt_llama_attention(ctx, L, l, h);
        qt_tensor *x2 = qt_add(ctx, x, a);
        qt_tensor *h2 = qt_rmsnorm(ctx, x2, Y->ffn_norm, eps);
        qt_ptq_hook(m, &cd);
        qt_tensor *mo = qt_llama_mlp(ctx, L, l, h2);
        qt_ptq_hook(m, NULL);
        qt_tensor *y = qt_add(ctx, x2, mo);
        if (!y) {
            st = QT_ERROR(qt_ctx_status(ctx), "awq, block %d: %s", l, qt_ctx_error(ctx));
            break;
        }
        memcpy(F->h1 + off, h->data, bytes);
        memcpy(F->attn + off, a->data, bytes);
        memcpy(F->h2 + off, h2->data, bytes);
        memcpy(F->mlp + off, mo->data, bytes);
        memcpy(X + off, y->data, bytes);
    }
    qt_ctx_free(ctx);
    return st;
}

/* A scaling group: the Linears sharing an input, what precedes them, how to judge. */
enum { JUDGE_ATTN, JUDGE_MLP, JUDGE_LINEAR };
typedef struct {
    qt_tensor *w[3];
    int n;
    qt_tensor *prev_norm;  /* a norm weight (dim), or NULL */
    qt_tensor *prev_rows;  /* a Linear whose output rows feed the group, or NULL */
    qt_tensor *prev_bias;  /* its bias, or NULL */
    float *inp;            /* (N, in) the group's input */
    const float *target;   /* (N, dim) the judge's float output */
    int judge;
} group;

/* Mean squared error of the judge over the calibration set, with the weights as they
 * are now. */
static qt_status judge_loss(qt_model *m, const qt_ptq_config *cfg, const qt_calib *cal, int l,
                            const group *g, double *loss) {
    qt_llama *L = &m->llama;
    const int64_t len = cal->len, in = g->w[0]->shape[1], dim = L->cfg.dim;
    qt_ctx *ctx = qt_ctx_new();
    if (!ctx) return QT_ERROR(QT_ENOMEM, "awq: out of memory");
    qt_ctx_set_grad_enabled(ctx, false);
    double sum = 0.0;
    qt_status st = QT_OK;
    for (int64_t s = 0; s < cal->n && st == QT_OK; s += cfg->batch) {
        int64_t b = cal->n - s < cfg->batch ? cal->n - s : cfg->batch;
        qt_ctx_reset(ctx);
        qt_tensor *x = qt_ptq_batch_tensor(ctx, g->inp + s * len * in, b, len, in), *y;
        if (g->judge == JUDGE_ATTN) y = qt_llama_attention(ctx, L, l, x);
        else if (g->judge == JUDGE_MLP) y = qt_llama_mlp(ctx, L, l, x);
        else y = qt_linear(ctx, x, g->w[0], NULL, false);
        if (!y) {
            st = QT_ERROR(qt_ctx_status(ctx), "awq, block %d: %s", l, qt_ctx_error(ctx));
            break;
        }
        const float *yt = g->target + s * len * dim, *yy = y->data;
        double part = 0.0;
        for (int64_t i = 0; i < b * len * dim; i++) {
            double d = (double)yy[i] - (double)yt[i];
            part += d * d;
        }
        sum += part;
    }
    qt_ctx_free(ctx);
    *loss = sum / (double)(cal->n * len * dim);
    return st;
}

/* w (rows, cols) <- Q(w0 diag(s)) diag(s)^-1, through the core's fake_quant */
static qt_status scaled_fake_quant(const qt_qformat *f, const float *w0, const float *s,
                                   int64_t rows, int64_t cols, float *tmp, float *w) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) tmp[r * cols + c] = w0[r * cols + c] * s[c];
    qt_status st = qt_fake_quant(f, tmp, rows, cols, w, NULL);
    if (st != QT_OK) return st;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) w[r * cols + c] /= s[c];
    return QT_OK;
}

/* Chooses the group's per-channel scales (best_s, (in)). */
static qt_status search_scale(qt_model *m, const qt_ptq_config *cfg, const qt_calib *cal, int l,
                              const group *g, float *best_s) {
    const int64_t in = g->w[0]->shape[1], N = cal->n * cal->len;
    double *xm = calloc((size_t)in, sizeof *xm);
    float *s = malloc((size_t)in * sizeof *s), *orig[3] = {0}, *tmp = NULL;
    int64_t maxel = 0;
    for (int k = 0; k < g->n; k++) maxel = qt_numel(g->w[k]) > maxel ? qt_numel(g->w[k]) : maxel;
    tmp = malloc((size_t)maxel * sizeof *tmp);
    qt_status st = xm && s && tmp ? QT_OK : QT_ERROR(QT_ENOMEM, "awq: out of memory");
    for (int k = 0; k < g->n && st == QT_OK; k++) {
        orig[k] = malloc((size_t)qt_numel(g->w[k]) * sizeof(float));
        if (!orig[k]) st = QT_ERROR(QT_ENOMEM, "awq: out of memory");
        else memcpy(orig[k], g->w[k]->data, (size_t)qt_numel(g->w[k]) * sizeof(float));
    }
    double *wm = cfg->awq_duo ? calloc((size_t)in, sizeof *wm) : NULL;
    if (cfg->awq_duo && !wm) st = QT_ERROR(QT_ENOMEM, "awq: out of memory");
    if (st == QT_OK) {
        for (int64_t t = 0; t < N; t++)
            for (int64_t c = 0; c < in; c++) xm[c] += fabsf(g->inp[t * in + c]);
        for (int64_t c = 0; c < in; c++) xm[c] /= (double)N;
    }
    if (st == QT_OK && wm) { /* AutoAWQ's w_mean: |w| / its group's max, averaged per input */
        const int64_t G = cfg->fmt.gran == QT_QG_GROUP ? cfg->fmt.group_size : in;
        int64_t rows = 0;
        for (int k = 0; k < g->n; k++) {
            const float *w = orig[k];
            for (int64_t r = 0; r < g->w[k]->shape[0]; r++, rows++)
                for (int64_t c0 = 0; c0 < in; c0 += G) {
                    float mx = 0.0f;
                    for (int64_t c = c0; c < c0 + G; c++) mx = fmaxf(mx, fabsf(w[r * in + c]));
                    for (int64_t c = c0; c < c0 + G; c++)
                        wm[c] += fabsf(w[r * in + c]) / ((double)mx + 1e-6);
                }
        }
        for (int64_t c = 0; c < in; c++) wm[c] /= (double)rows;
    }
    double best = INFINITY;
    for (int i = 0; i < cfg->awq_grid && st == QT_OK; i++) {
        double ratio = (double)i / (double)cfg->awq_grid, mx = 0.0, mn = INFINITY;
        for (int64_t c = 0; c < in; c++) {
            double v = pow(xm[c], ratio);
            if (wm) v /= pow(wm[c], 1.0 - ratio) + 1e-4; /* AutoAWQ duo_scaling */
            v = v < 1e-4 ? 1e-4 : v;
            s[c] = (float)v;
            mx = s[c] > mx ? s[c] : mx;
            mn = s[c] < mn ? s[c] : mn;
        }
        float norm = (float)sqrt(mx * mn);
        for (int64_t c = 0; c < in; c++) {
            s[c] /= norm;
            if (!isfinite(s[c])) s[c] = 1.0f;
        }
        for (int k = 0; k < g->n && st == QT_OK; k++)
            st = scaled_fake_quant(&cfg->fmt, orig[k], s, g->w[k]->shape[0], in, tmp,
                                   g->w[k]->data);
        double loss = 0.0;
        if (st == QT_OK) st = judge_loss(m, cfg, cal, l, g, &loss);
        if (st == QT_OK && loss < best) {
            best = loss;
            memcpy(best_s, s, (size_t)in * sizeof *s);
        }
    }
    for (int k = 0; k < g->n; k++) {
        if (orig[k]) memcpy(g->w[k]->data, orig[k], (size_t)qt_numel(g->w[k]) * sizeof(float));
        free(orig[k]);
    }
    if (st == QT_OK && !isfinite(best))
        st = QT_ERROR(QT_ENUMERIC, "awq: block %d: %s: every scale gave a non-finite loss", l,
                      g->w[0]->name);
    free(xm);
    free(wm);
    free(s);
    free(tmp);
    return st;
}

/* Folds s into the group: prev / s, columns * s, inputs / s. */
static void apply_scale(const group *g, const float *s, int64_t N) {
    const int64_t in = g->w[0]->shape[1];
    if (g->prev_norm) {
        float *p = g->prev_norm->data;
        for (int64_t c = 0; c < in; c++) p[c] /= s[c];
    }
    if (g->prev_rows) { /* its output row c feeds input c */
        const int64_t pc = g->prev_rows->shape[1];
        float *p = g->prev_rows->data;
        for (int64_t r = 0; r < in; r++)
            for (int64_t c = 0; c < pc; c++) p[r * pc + c] /= s[r];
        if (g->prev_bias) {
            float *b = g->prev_bias->data;
            for (int64_t r = 0; r < in; r++) b[r] /= s[r];
        }
    }
    for (int k = 0; k < g->n; k++) {
        float *w = g->w[k]->data;
        for (int64_t r = 0; r < g->w[k]->shape[0]; r++)
            for (int64_t c = 0; c < in; c++) w[r * in + c] *= s[c];
    }
    for (int64_t t = 0; t < N; t++)
        for (int64_t c = 0; c < in; c++) g->inp[t * in + c] /= s[c];
}

/* Clip search for one Linear w with its (scaled) inputs feat (N, in). */
static qt_status search_clip(const qt_qformat *f, qt_tensor *w, const float *feat, int64_t N) {
    const int64_t rows = w->shape[0], cols = w->shape[1];
    const int64_t G = f->gran == QT_QG_GROUP ? f->group_size : cols, ng = cols / G;
    const int64_t step = N / 512 > 1 ? N / 512 : 1, nt = (N + step - 1) / step;
    float *xs = malloc((size_t)(nt * cols) * sizeof *xs);
    float *w0 = malloc((size_t)(rows * cols) * sizeof *w0), *cur = malloc((size_t)(rows * cols) * sizeof *cur);
    float *qw = malloc((size_t)(rows * cols) * sizeof *qw), *P = malloc((size_t)(nt * rows) * sizeof *P);
    float *maxv = malloc((size_t)(rows * ng) * sizeof *maxv), *bestv = malloc((size_t)(rows * ng) * sizeof *bestv);
    double *minerr = malloc((size_t)(rows * ng) * sizeof *minerr);
    qt_status st = QT_OK;
    if (!xs || !w0 || !cur || !qw || !P || !maxv || !bestv || !minerr) {
        st = QT_ERROR(QT_ENOMEM, "awq: out of memory for the clip search of %s", w->name);
        goto done;
    }
    for (int64_t t = 0; t < nt; t++) memcpy(xs + t * cols, feat + t * step * cols, (size_t)cols * sizeof *xs);
    memcpy(w0, w->data, (size_t)(rows * cols) * sizeof *w0);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t g = 0; g < ng; g++) {
            float mx = 0.0f;
            for (int64_t c = g * G; c < (g + 1) * G; c++) mx = fmaxf(mx, fabsf(w0[r * cols + c]));
            maxv[r * ng + g] = bestv[r * ng + g] = mx;
            minerr[r * ng + g] = INFINITY;
        }
    for (int i = 0; i < 10 && st == QT_OK; i++) { /* max_shrink 0.5 of n_grid 20 */
        const float shrink = 1.0f - (float)i / 20.0f;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) {
                float mv = maxv[r * ng + c / G] * shrink, v = w0[r * cols + c];
                cur[r * cols + c] = v > mv ? mv : (v < -mv ? -mv : v);
            }
        st = qt_fake_quant(f, cur, rows, cols, qw, NULL);
        if (st != QT_OK) break;
        for (int64_t k = 0; k < rows * cols; k++) qw[k] -= w0[k]; /* D = Q(clamped) - W */
        for (int64_t g = 0; g < ng; g++) {
            /* P (nt, rows) = X_g (nt, G) D_g^T (G, rows) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nt, (int)rows, (int)G, 1.0f,
                        xs + g * G, (int)cols, qw + g * G, (int)cols, 0.0f, P, (int)rows);
            for (int64_t r = 0; r < rows; r++) {
                double e = 0.0;
                for (int64_t t = 0; t < nt; t++) e += (double)P[t * rows + r] * P[t * rows + r];
                e /= (double)nt;
                if (e < minerr[r * ng + g]) {
                    minerr[r * ng + g] = e;
                    bestv[r * ng + g] = maxv[r * ng + g] * shrink;
                }
            }
        }
    }
    if (st == QT_OK) {
        float *wd = w->data;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) {
                float mv = bestv[r * ng + c / G], v = w0[r * cols + c];
                wd[r * cols + c] = v > mv ? mv : (v < -mv ? -mv : v);
            }
    }
done:
    free(xs), free(w0), free(cur), free(qw), free(P), free(maxv), free(bestv), free(minerr);
    return st;
}

qt_status qt_awq_block(qt_model *m, const qt_ptq_config *cfg, const qt_calib *cal, int l,
                       float *X, qt_qmodel *qm) {
    qt_llama *L = &m->llama;
    qt_llama_layer *Y = &L->layers[l];
    const int64_t N = cal->n * cal->len;
    feats F = {0};
    qt_status st = float_pass(m, cfg, cal, l, X, &F);
    group gs[4];
    int ngs = 0;
    gs[ngs++] = (group){{Y->wq, Y->wk, Y->wv}, 3, Y->attn_norm, NULL, NULL, F.h1, F.attn, JUDGE_ATTN};
    /* o_proj's input is v_proj's output only when every head has its own v (no GQA) */
    if (Y->wv->shape[0] == Y->wo->shape[1])
        gs[ngs++] = (group){{Y->wo}, 1, NULL, Y->wv, Y->bv, F.o_in, F.attn, JUDGE_LINEAR};
    gs[ngs++] = (group){{Y->w_gate, Y->w_up}, 2, Y->ffn_norm, NULL, NULL, F.h2, F.mlp, JUDGE_MLP};
    gs[ngs++] = (group){{Y->w_down}, 1, NULL, Y->w_up, NULL, F.d_in, F.mlp, JUDGE_LINEAR};
    float *scales[4] = {0};
    bool on[4] = {0};
    for (int i = 0; i < ngs && st == QT_OK; i++) {
        int sel = 0;
        for (int k = 0; k < gs[i].n; k++) sel += qt_ptq_selected(cfg, m, gs[i].w[k]);
        if (sel && sel != gs[i].n)
            st = QT_ERROR(QT_EINVAL,
                          "awq: %s shares its input (and its scales) with the other layers of "
                          "its group; quantize.layers must select all of them or none",
                          gs[i].w[0]->name);
        on[i] = sel > 0;
        if (!on[i] || st != QT_OK) continue;
        scales[i] = malloc((size_t)gs[i].w[0]->shape[1] * sizeof(float));
        st = scales[i] ? search_scale(m, cfg, cal, l, &gs[i], scales[i])
                       : QT_ERROR(QT_ENOMEM, "awq: out of memory");
        if (st != QT_OK) {
            char why[512];
            snprintf(why, sizeof why, "%s", qt_error_message());
            st = QT_ERROR(st, "awq, block %d: the scale search of %s: %s", l, gs[i].w[0]->name, why);
        }
    }
    for (int i = 0; i < ngs && st == QT_OK; i++)
        if (on[i]) apply_scale(&gs[i], scales[i], N);
    /* clip: every selected Linear but q/k, with its (scaled) input */
    qt_tensor *cw[5] = {Y->wv, Y->wo, Y->w_gate, Y->w_up, Y->w_down};
    const float *cx[5] = {F.h1, F.o_in, F.h2, F.h2, F.d_in};
    for (int k = 0; k < 5 && st == QT_OK && cfg->awq_clip; k++)
        if (qt_ptq_selected(cfg, m, cw[k])) {
            st = search_clip(&cfg->fmt, cw[k], cx[k], N);
            if (st != QT_OK) {
                char why[512];
                snprintf(why, sizeof why, "%s", qt_error_message());
                st = QT_ERROR(st, "awq, block %d: the clip search of %s: %s", l, cw[k]->name, why);
            }
        }
    qt_tensor *order[7] = {Y->wq, Y->wk, Y->wv, Y->wo, Y->w_gate, Y->w_up, Y->w_down};
    for (int k = 0; k < 7 && st == QT_OK; k++)
        if (qt_ptq_selected(cfg, m, order[k])) st = qt_ptq_quantize_param(qm, &cfg->fmt, order[k]);
    for (int i = 0; i < 4; i++) free(scales[i]);
    feats_free(&F);
    return st;
}
