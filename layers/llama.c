/*
 * llama.c - the Llama-family decoder-only transformer, as transformers' modeling_llama:
 *   x = embed[ids]
 *   per layer: x += o_proj(attn(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))),
 *              n = input_layernorm(x)
 *              x += down_proj(silu(gate_proj(m)) * up_proj(m)), m = post_attention_layernorm(x)
 *   logits = lm_head(norm(x))
 * Qwen2 adds a bias to q_proj, k_proj and v_proj (qkv_bias); Mistral is Llama with a
 * sliding window, which only matters past the window (refused there, see the config).
 * Heads are laid out (B, T, H, head_dim) by the projections and moved to (B, H, T,
 * head_dim) for RoPE and attention, as HF does, so weights load without permutation.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers_internal.h"

static qt_tensor *add_param(qt_paramset *ps, const char *name, int64_t d0, int64_t d1,
                            uint32_t flags) {
    int64_t shape[2] = {d0, d1};
    return qt_paramset_add(ps, name, d1 ? 2 : 1, shape, flags);
}

qt_status qt_llama_build(qt_llama *m, const qt_llama_config *cfg) {
    memset(m, 0, sizeof *m);
    const qt_llama_config *c = cfg;
    if (c->vocab_size <= 0 || c->dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 ||
        c->n_kv_heads <= 0 || c->ffn_dim <= 0)
        return QT_ERROR(QT_EINVAL, "llama: vocab_size, dim, n_layers, n_heads, n_kv_heads and "
                                   "ffn_dim must be positive");
    if (c->dim % c->n_heads || c->n_heads % c->n_kv_heads || (c->dim / c->n_heads) % 2)
        return QT_ERROR(QT_EINVAL,
                        "llama: dim (%d) must divide into n_heads (%d) of even size, and "
                        "n_heads into n_kv_heads (%d)",
                        c->dim, c->n_heads, c->n_kv_heads);
    if (!(c->rope_theta > 1.0f) || !(c->norm_eps > 0.0f))
        return QT_ERROR(QT_EINVAL, "llama: rope_theta must be > 1 and norm_eps > 0");
    if (c->max_seq_len < 0 || c->sliding_window < 0)
        return QT_ERROR(QT_EINVAL, "llama: max_seq_len (%d) and sliding_window (%d) must be >= 0",
                        c->max_seq_len, c->sliding_window);
    m->cfg = *c;
    int64_t hd = c->dim / c->n_heads, qd = hd * c->n_heads, kvd = hd * c->n_kv_heads;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) return QT_ERROR(QT_ENOMEM, "llama: out of memory");
    qt_paramset *ps = &m->params;
    qt_paramset_init(ps);
    m->embed = add_param(ps, "model.embed_tokens.weight", c->vocab_size, c->dim, 0);
    char nm[128];
#define P(field, suffix, d0, d1, fl)                                                \
    do {                                                                            \
        snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix);                   \
        if (!(L->field = add_param(ps, nm, d0, d1, fl))) goto fail;                 \
    } while (0)
    for (int l = 0; l < c->n_layers; l++) {
        qt_llama_layer *L = &m->layers[l];
        P(attn_norm, "input_layernorm.weight", c->dim, 0, QT_PARAM_NO_DECAY);
        P(wq, "self_attn.q_proj.weight", qd, c->dim, 0);
        P(wk, "self_attn.k_proj.weight", kvd, c->dim, 0);
        P(wv, "self_attn.v_proj.weight", kvd, c->dim, 0);
        if (c->qkv_bias) {
            P(bq, "self_attn.q_proj.bias", qd, 0, QT_PARAM_NO_DECAY);
            P(bk, "self_attn.k_proj.bias", kvd, 0, QT_PARAM_NO_DECAY);
            P(bv, "self_attn.v_proj.bias", kvd, 0, QT_PARAM_NO_DECAY);
        }
        P(wo, "self_attn.o_proj.weight", c->dim, qd, 0);
        P(ffn_norm, "post_attention_layernorm.weight", c->dim, 0, QT_PARAM_NO_DECAY);
        P(w_gate, "mlp.gate_proj.weight", c->ffn_dim, c->dim, 0);
        P(w_up, "mlp.up_proj.weight", c->ffn_dim, c->dim, 0);
        P(w_down, "mlp.down_proj.weight", c->dim, c->ffn_dim, 0);
    }
#undef P
    m->final_norm = add_param(ps, "model.norm.weight", c->dim, 0, QT_PARAM_NO_DECAY);
    m->lm_head = c->tied_embeddings ? m->embed
                                    : add_param(ps, "lm_head.weight", c->vocab_size, c->dim, 0);
    if (!m->embed || !m->final_norm || !m->lm_head) goto fail;
    qt_status st = qt_paramset_alloc(ps);
    if (st != QT_OK) {
        qt_llama_free(m);
        return st;
    }
    return QT_OK;
fail:
    qt_llama_free(m);
    /* copied: qt_error_set must not read the buffer it writes */
    char why[512];
    snprintf(why, sizeof why, "%s", qt_error_message());
    return QT_ERROR(QT_ENOMEM, "llama: cannot register parameters: %s", why);
}

qt_status qt_llama_init(qt_llama *m, const qt_llama_config *cfg, uint64_t seed) {
    qt_status st = qt_llama_build(m, cfg);
    if (st != QT_OK) return st;
    qt_paramset *ps = &m->params;
    /* transformers' _init_weights: normal(0, initializer_range = 0.02), norms = 1,
     * biases = 0 */
    for (int i = 0; i < ps->n; i++) {
        qt_tensor *t = ps->params[i];
        float *w = t->data;
        int64_t n = qt_numel(t);
        size_t len = strlen(t->name);
        bool bias = len > 5 && !strcmp(t->name + len - 5, ".bias");
        bool norm = (ps->flags[i] & QT_PARAM_NO_DECAY) && !bias;
        for (int64_t j = 0; j < n; j++)
            w[j] = bias ? 0.0f
                   : norm ? 1.0f
                          : 0.02f * qt_rand_normal(seed, ps->offset[i] + (uint64_t)j);
    }
    return QT_OK;
}

void qt_llama_free(qt_llama *m) {
    qt_paramset_free(&m->params);
    free(m->layers);
    m->layers = NULL;
}

/* (B, T, n*hd) -> (B, n, T, hd) */
static qt_tensor *split_heads(qt_ctx *ctx, qt_tensor *x, int64_t B, int64_t T, int64_t n,
                              int64_t hd) {
    int64_t s[4] = {B, T, n, hd};
    return qt_transpose(ctx, qt_reshape(ctx, x, 4, s), 1, 2);
}

/* x @ w^T (+ b): nn.Linear, w (out, in), b (out) or NULL; through the model's hook */
static qt_tensor *linear(qt_ctx *ctx, const qt_llama *m, qt_tensor *x, qt_tensor *w,
                         qt_tensor *b) {
    if (m->hook.linear) return m->hook.linear(ctx, m->hook.user, x, w, b, false);
    return qt_linear(ctx, x, w, b, false);
}

/* Checks ids against the config: (B, T) i32, T within max_seq_len / sliding_window. */
static bool check_ids(qt_ctx *ctx, const qt_llama *m, const qt_tensor *ids) {
    const qt_llama_config *c = &m->cfg;
    if (!ids || ids->ndim != 2 || ids->dtype != QT_I32) {
        QT_CTX_FAIL(ctx, QT_ESHAPE, "llama: ids must be (B, T) i32");
        return false;
    }
    int64_t T = ids->shape[1];
    if (c->max_seq_len > 0 && T > c->max_seq_len) {
        QT_CTX_FAIL(ctx, QT_ESHAPE, "llama: sequence length %lld exceeds max_seq_len %d",
                    (long long)T, c->max_seq_len);
        return false;
    }
    if (c->sliding_window > 0 && T > c->sliding_window) {
        QT_CTX_FAIL(ctx, QT_ENOTSUP,
                    "llama: sequence length %lld exceeds sliding_window %d; windowed "
                    "attention is not implemented",
                    (long long)T, c->sliding_window);
        return false;
    }
    return true;
}

qt_tensor *qt_llama_embed(qt_ctx *ctx, qt_llama *m, qt_tensor *ids) {
    if (qt_ctx_status(ctx) != QT_OK || !check_ids(ctx, m, ids)) return NULL;
    qt_tensor *table = m->hook.embedding ? m->hook.embedding(ctx, m->hook.user, m->embed) : m->embed;
    /* activations in the context's compute dtype (bf16 in the GPU mode) */
    return qt_cast(ctx, qt_embedding(ctx, table, ids), qt_ctx_compute_dtype(ctx));
}

qt_tensor *qt_llama_attention(qt_ctx *ctx, qt_llama *m, int l, qt_tensor *h) {
    const qt_llama_config *c = &m->cfg;
    if (qt_ctx_status(ctx) != QT_OK) return NULL;
    const qt_llama_layer *L = &m->layers[l];
    int64_t B = h->shape[0], T = h->shape[1], hd = c->dim / c->n_heads;
    qt_tensor *q = linear(ctx, m, h, L->wq, L->bq), *k = linear(ctx, m, h, L->wk, L->bk),
              *v = linear(ctx, m, h, L->wv, L->bv);
    q = split_heads(ctx, q, B, T, c->n_heads, hd);
    k = split_heads(ctx, k, B, T, c->n_kv_heads, hd);
    v = split_heads(ctx, v, B, T, c->n_kv_heads, hd);
    q = qt_rope(ctx, q, c->rope_theta, 0);
    k = qt_rope(ctx, k, c->rope_theta, 0);
    qt_tensor *a = qt_transpose(ctx, qt_attention(ctx, q, k, v, 0.0f), 1, 2);
    int64_t s3[3] = {B, T, c->n_heads * hd};
    a = qt_reshape(ctx, a, 3, s3);
    return linear(ctx, m, a, L->wo, NULL);
}

qt_tensor *qt_llama_mlp(qt_ctx *ctx, qt_llama *m, int l, qt_tensor *h) {
    const qt_llama_layer *L = &m->layers[l];
    qt_tensor *g = linear(ctx, m, h, L->w_gate, NULL);
    qt_tensor *u = linear(ctx, m, h, L->w_up, NULL);
    return linear(ctx, m, qt_swiglu(ctx, g, u), L->w_down, NULL);
}

qt_tensor *qt_llama_block(qt_ctx *ctx, qt_llama *m, int l, qt_tensor *x) {
    const qt_llama_layer *L = &m->layers[l];
    float eps = m->cfg.norm_eps;
    x = qt_add(ctx, x, qt_llama_attention(ctx, m, l, qt_rmsnorm(ctx, x, L->attn_norm, eps)));
    return qt_add(ctx, x, qt_llama_mlp(ctx, m, l, qt_rmsnorm(ctx, x, L->ffn_norm, eps)));
}

qt_tensor *qt_llama_head(qt_ctx *ctx, qt_llama *m, qt_tensor *x) {
    x = qt_rmsnorm(ctx, x, m->final_norm, m->cfg.norm_eps);
    return linear(ctx, m, x, m->lm_head, NULL);
}

qt_tensor *qt_llama_forward(qt_ctx *ctx, qt_llama *m, qt_tensor *ids) {
    qt_tensor *x = qt_llama_embed(ctx, m, ids);
    for (int l = 0; l < m->cfg.n_layers; l++) x = qt_llama_block(ctx, m, l, x);
    return qt_llama_head(ctx, m, x);
}
