/*
 * gpt2.c - GPT-2 (Radford et al. 2019), as transformers' modeling_gpt2 (GPT2LMHeadModel):
 *   x = wte[ids] + wpe[0..T)
 *   per block: x += c_proj(attn(split(c_attn(ln_1(x))))),
 *              x += mlp.c_proj(gelu_tanh(mlp.c_fc(ln_2(x))))
 *   logits = ln_f(x) @ wte^T            (lm_head tied to wte)
 * Surprises: HF GPT-2's Conv1D stores weights (in, out), the transpose of nn.Linear; they
 * are kept in that layout (y = x @ W + b) so checkpoints map one to one. c_attn yields q,
 * k and v side by side along its output; the engine has no slice op, so the three are
 * separated by moving the "which of q/k/v" axis to the front (one permute) and gathering
 * rows 0, 1, 2 of it with qt_embedding (an exact copy whose backward scatter-adds).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers_internal.h"

static qt_tensor *add_param(qt_paramset *ps, const char *name, int64_t d0, int64_t d1,
                            uint32_t flags) {
    int64_t shape[2] = {d0, d1};
    return qt_paramset_add(ps, name, d1 ? 2 : 1, shape, flags);
}

qt_status qt_gpt2_build(qt_gpt2 *m, const qt_gpt2_config *cfg) {
    memset(m, 0, sizeof *m);
    const qt_gpt2_config *c = cfg;
    if (c->vocab_size <= 0 || c->n_positions <= 0 || c->dim <= 0 || c->n_layers <= 0 ||
        c->n_heads <= 0 || c->ffn_dim <= 0)
        return QT_ERROR(QT_EINVAL, "gpt2: vocab_size, n_positions, dim, n_layers, n_heads and "
                                   "ffn_dim must be positive");
    if (c->dim % c->n_heads)
        return QT_ERROR(QT_EINVAL, "gpt2: dim (%d) must be a multiple of n_heads (%d)", c->dim,
                        c->n_heads);
    if (!(c->norm_eps > 0.0f)) return QT_ERROR(QT_EINVAL, "gpt2: norm_eps must be > 0");
    m->cfg = *c;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) return QT_ERROR(QT_ENOMEM, "gpt2: out of memory");
    qt_paramset *ps = &m->params;
    qt_paramset_init(ps);
    const uint32_t ND = QT_PARAM_NO_DECAY;
    int64_t D = c->dim, F = c->ffn_dim;
    m->wte = add_param(ps, "transformer.wte.weight", c->vocab_size, D, 0);
    m->wpe = add_param(ps, "transformer.wpe.weight", c->n_positions, D, 0);
    char nm[128];
#define P(field, suffix, d0, d1, fl)                                                \
    do {                                                                            \
        snprintf(nm, sizeof nm, "transformer.h.%d.%s", l, suffix);                  \
        if (!(L->field = add_param(ps, nm, d0, d1, fl))) goto fail;                 \
    } while (0)
    for (int l = 0; l < c->n_layers; l++) {
        qt_gpt2_layer *L = &m->layers[l];
        P(ln1_w, "ln_1.weight", D, 0, ND);
        P(ln1_b, "ln_1.bias", D, 0, ND);
        P(attn_w, "attn.c_attn.weight", D, 3 * D, 0);
        P(attn_b, "attn.c_attn.bias", 3 * D, 0, ND);
        P(proj_w, "attn.c_proj.weight", D, D, 0);
        P(proj_b, "attn.c_proj.bias", D, 0, ND);
        P(ln2_w, "ln_2.weight", D, 0, ND);
        P(ln2_b, "ln_2.bias", D, 0, ND);
        P(fc_w, "mlp.c_fc.weight", D, F, 0);
        P(fc_b, "mlp.c_fc.bias", F, 0, ND);
        P(fc_proj_w, "mlp.c_proj.weight", F, D, 0);
        P(fc_proj_b, "mlp.c_proj.bias", D, 0, ND);
    }
#undef P
    m->lnf_w = add_param(ps, "transformer.ln_f.weight", D, 0, ND);
    m->lnf_b = add_param(ps, "transformer.ln_f.bias", D, 0, ND);
    m->lm_head = c->untied ? add_param(ps, "lm_head.weight", c->vocab_size, D, 0) : m->wte;
    if (!m->wte || !m->wpe || !m->lnf_w || !m->lnf_b || !m->lm_head) goto fail;
    qt_status st = qt_paramset_alloc(ps);
    if (st != QT_OK) {
        qt_gpt2_free(m);
        return st;
    }
    return QT_OK;
fail:
    qt_gpt2_free(m);
    /* copied: qt_error_set must not read the buffer it writes */
    char why[512];
    snprintf(why, sizeof why, "%s", qt_error_message());
    return QT_ERROR(QT_ENOMEM, "gpt2: cannot register parameters: %s", why);
}

qt_status qt_gpt2_init(qt_gpt2 *m, const qt_gpt2_config *cfg, uint64_t seed) {
    qt_status st = qt_gpt2_build(m, cfg);
    if (st != QT_OK) return st;
    const qt_gpt2_config *c = &m->cfg;
    qt_paramset *ps = &m->params;
    /* transformers' GPT2PreTrainedModel._init_weights: normal(0, 0.02); c_proj weights
     * normal(0, 0.02 / sqrt(2 * n_layer)) (GPT-2 paper, section 2.3); biases 0; LN w 1 */
    float std_proj = 0.02f / sqrtf(2.0f * (float)c->n_layers);
    for (int i = 0; i < ps->n; i++) {
        qt_tensor *t = ps->params[i];
        float *w = t->data;
        int64_t n = qt_numel(t);
        const char *name = t->name;
        size_t len = strlen(name);
        bool bias = len > 5 && !strcmp(name + len - 5, ".bias");
        bool ln = !bias && (ps->flags[i] & QT_PARAM_NO_DECAY);
        float sd = strstr(name, "c_proj.weight") ? std_proj : 0.02f;
        for (int64_t j = 0; j < n; j++)
            w[j] = bias ? 0.0f
                   : ln ? 1.0f
                        : sd * qt_rand_normal(seed, ps->offset[i] + (uint64_t)j);
    }
    return QT_OK;
}

void qt_gpt2_free(qt_gpt2 *m) {
    qt_paramset_free(&m->params);
    free(m->layers);
    m->layers = NULL;
}

/* Conv1D: x @ w + b, w (in, out) */
static qt_tensor *conv1d(qt_ctx *ctx, const qt_gpt2 *m, qt_tensor *x, qt_tensor *w,
                         qt_tensor *b) {
    if (m->hook.linear) return m->hook.linear(ctx, m->hook.user, x, w, b, true);
    return qt_linear(ctx, x, w, b, true);
}

qt_tensor *qt_gpt2_forward(qt_ctx *ctx, qt_gpt2 *m, qt_tensor *ids) {
    const qt_gpt2_config *c = &m->cfg;
    if (qt_ctx_status(ctx) != QT_OK) return NULL;
    if (!ids || ids->ndim != 2 || ids->dtype != QT_I32)
        return QT_CTX_FAIL(ctx, QT_ESHAPE, "gpt2: ids must be (B, T) i32");
    int64_t B = ids->shape[0], T = ids->shape[1], D = c->dim, H = c->n_heads, hd = D / H;
    if (T > c->n_positions)
        return QT_CTX_FAIL(ctx, QT_ESHAPE,
                           "gpt2: sequence length %lld exceeds n_positions %d (learned "
                           "positions)",
                           (long long)T, c->n_positions);
    float eps = c->norm_eps;
    /* positions 0..T-1 */
    int64_t tshape[1] = {T};
    int32_t *host = qt_ctx_alloc(ctx, (size_t)(T + 3) * sizeof(int32_t));
    if (!host) return NULL;
    for (int64_t t = 0; t < T; t++) host[t] = (int32_t)t;
    for (int i = 0; i < 3; i++) host[T + i] = i;
    /* on the context's device, with the ids */
    qt_tensor *pos = qt_tensor_from(ctx, QT_I32, 1, tshape, host);
    /* which-of-q/k/v selectors for the split */
    int64_t one[1] = {1};
    qt_tensor *sel[3];
    for (int i = 0; i < 3; i++) sel[i] = qt_tensor_from(ctx, QT_I32, 1, one, host + T + i);
    if (!pos || !sel[2]) return NULL;
    qt_tensor *wte = m->hook.embedding ? m->hook.embedding(ctx, m->hook.user, m->wte) : m->wte;
    qt_tensor *x = qt_add(ctx, qt_embedding(ctx, wte, ids), qt_embedding(ctx, m->wpe, pos));
    x = qt_cast(ctx, x, qt_ctx_compute_dtype(ctx)); /* bf16 activations in the GPU mode */
    for (int l = 0; l < c->n_layers; l++) {
        qt_gpt2_layer *L = &m->layers[l];
        qt_tensor *h = qt_layernorm(ctx, x, L->ln1_w, L->ln1_b, eps);
        qt_tensor *qkv = conv1d(ctx, m, h, L->attn_w, L->attn_b); /* (B, T, 3*D) */
        int64_t s4[4] = {B * T, 3, H, hd};
        int perm[4] = {1, 0, 2, 3};                            /* (3, B*T, H, hd) */
        qkv = qt_permute(ctx, qt_reshape(ctx, qkv, 4, s4), perm);
        int64_t s2[2] = {3, B * T * D};
        qkv = qt_reshape(ctx, qkv, 2, s2);
        qt_tensor *part[3];
        for (int i = 0; i < 3; i++) {
            int64_t sh[4] = {B, T, H, hd};
            part[i] = qt_transpose(ctx, qt_reshape(ctx, qt_embedding(ctx, qkv, sel[i]), 4, sh),
                                   1, 2); /* (B, H, T, hd) */
        }
        /* scale_attn_weights: 1/sqrt(head_dim) */
        qt_tensor *a = qt_transpose(ctx, qt_attention(ctx, part[0], part[1], part[2], 0.0f), 1, 2);
        int64_t s3[3] = {B, T, D};
        a = qt_reshape(ctx, a, 3, s3);
        x = qt_add(ctx, x, conv1d(ctx, m, a, L->proj_w, L->proj_b));
        h = qt_layernorm(ctx, x, L->ln2_w, L->ln2_b, eps);
        h = qt_gelu(ctx, conv1d(ctx, m, h, L->fc_w, L->fc_b));
        x = qt_add(ctx, x, conv1d(ctx, m, h, L->fc_proj_w, L->fc_proj_b));
    }
    x = qt_layernorm(ctx, x, m->lnf_w, m->lnf_b, eps);
    if (m->hook.linear) return m->hook.linear(ctx, m->hook.user, x, m->lm_head, NULL, false);
    return qt_linear(ctx, x, m->lm_head, NULL, false);
}
