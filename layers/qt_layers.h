/*
 * qt_layers.h - model building blocks on top of the autograd engine.
 *
 * For now: the Llama-family decoder (RMSNorm, RoPE attention with grouped-query heads,
 * SwiGLU MLP, optional tied embeddings), with parameters registered under the names
 * transformers uses (model.layers.N.self_attn.q_proj.weight, ...), so checkpoints map
 * one to one. Loading HF/GGUF files, qkv bias and GPT-2 come with the model issue.
 */
#ifndef QT_LAYERS_H
#define QT_LAYERS_H

#include "qt_autograd.h"

typedef struct {
    int vocab_size;
    int dim;          /* hidden size */
    int n_layers;
    int n_heads;
    int n_kv_heads;   /* n_heads % n_kv_heads == 0 */
    int ffn_dim;      /* SwiGLU intermediate size */
    float rope_theta; /* 10000 for Llama 2 */
    float norm_eps;   /* RMSNorm epsilon */
    bool tied_embeddings; /* lm_head shares model.embed_tokens.weight */
} qt_llama_config;

/* Parameters, in one qt_paramset. Weights are (out_features, in_features) as in HF. */
typedef struct {
    qt_tensor *attn_norm; /* (dim) */
    qt_tensor *wq;        /* (n_heads*head_dim, dim) */
    qt_tensor *wk;        /* (n_kv_heads*head_dim, dim) */
    qt_tensor *wv;        /* (n_kv_heads*head_dim, dim) */
    qt_tensor *wo;        /* (dim, n_heads*head_dim) */
    qt_tensor *ffn_norm;  /* (dim) */
    qt_tensor *w_gate;    /* (ffn_dim, dim) */
    qt_tensor *w_up;      /* (ffn_dim, dim) */
    qt_tensor *w_down;    /* (dim, ffn_dim) */
} qt_llama_layer;

typedef struct {
    qt_llama_config cfg;
    qt_paramset params;
    qt_tensor *embed;      /* (vocab, dim) */
    qt_llama_layer *layers; /* (n_layers) */
    qt_tensor *final_norm; /* (dim) */
    qt_tensor *lm_head;    /* (vocab, dim); == embed when tied */
} qt_llama;

/* Validates the config, registers and allocates the parameters, and initialises them
 * as transformers does for a fresh model: normal(0, 0.02) weights, ones for norms. */
qt_status qt_llama_init(qt_llama *m, const qt_llama_config *cfg, uint64_t seed);
void qt_llama_free(qt_llama *m);
/* ids (B, T) i32 -> logits (B, T, vocab). */
qt_tensor *qt_llama_forward(qt_ctx *ctx, qt_llama *m, qt_tensor *ids);

#endif /* QT_LAYERS_H */
