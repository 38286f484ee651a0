/*
 * qt_layers.h - model building blocks on top of the autograd engine.
 *
 * - the Llama-family decoder (Llama, Mistral, Qwen2: RMSNorm, RoPE attention with
 *   grouped-query heads, optional q/k/v bias, SwiGLU MLP, optional tied embeddings);
 * - GPT-2 (LayerNorm, learned positions, fused c_attn, GELU-tanh MLP, tied lm_head);
 * - loading and saving Hugging Face checkpoints (config.json + model.safetensors, or a
 *   sharded model.safetensors.index.json), f32/f16/bf16 tensors read as f32.
 * Parameters are registered under the names transformers uses
 * (model.layers.N.self_attn.q_proj.weight, transformer.h.N.attn.c_attn.weight, ...) and
 * in its layouts, so a checkpoint maps one to one onto a qt_paramset, with no renaming
 * and no transposes. GGUF files (llama.cpp's layout) load into the same model, see
 * qt_model_load_gguf.
 */
#ifndef QT_LAYERS_H
#define QT_LAYERS_H

#include "qt_autograd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ linear hook ---- */

/* What QAT and LoRA change in a model: when `linear` is set, every Linear layer (and the
 * lm_head) calls it instead of its matmul, and every embedding lookup takes its table
 * from `embedding` when that is set. w is the parameter (w->name is its checkpoint name,
 * "model.layers.3.mlp.up_proj.weight"), b its bias or NULL. w_io: w is (in, out) and
 * y = x w + b (GPT-2's Conv1D); otherwise w is (out, in) and y = x w^T + b (nn.Linear).
 * A hook returns NULL with the context failed on error. Zeroed = no hook. */
typedef struct qt_linear_hook {
    qt_tensor *(*linear)(qt_ctx *ctx, void *user, qt_tensor *x, qt_tensor *w, qt_tensor *b,
                         bool w_io);
    qt_tensor *(*embedding)(qt_ctx *ctx, void *user, qt_tensor *w);
    void *user;
} qt_linear_hook;

/* The plain Linear every hook falls back to: x w^T + b, or x w + b when w_io. */
qt_tensor *qt_linear(qt_ctx *ctx, qt_tensor *x, qt_tensor *w, qt_tensor *b, bool w_io);

/* ------------------------------------------------------------------ llama ---- */

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
    int max_seq_len;  /* max_position_embeddings; forward refuses longer T. 0 = no limit */
    bool qkv_bias;    /* q/k/v projections with bias (Qwen2); o_proj never has one */
    int sliding_window; /* Mistral's window; 0 = none. Attention here is full causal,
                           so forward refuses T > sliding_window rather than differ */
} qt_llama_config;

/* Parameters, in one qt_paramset. Weights are (out_features, in_features) as in HF. */
typedef struct {
    qt_tensor *attn_norm; /* (dim) */
    qt_tensor *wq;        /* (n_heads*head_dim, dim) */
    qt_tensor *wk;        /* (n_kv_heads*head_dim, dim) */
    qt_tensor *wv;        /* (n_kv_heads*head_dim, dim) */
    qt_tensor *bq;        /* (n_heads*head_dim), NULL unless qkv_bias */
    qt_tensor *bk;        /* (n_kv_heads*head_dim), NULL unless qkv_bias */
    qt_tensor *bv;        /* (n_kv_heads*head_dim), NULL unless qkv_bias */
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
    qt_linear_hook hook;   /* QAT / LoRA; zeroed = plain layers */
} qt_llama;

/* Validates the config, registers and allocates the parameters, and initialises them
 * as transformers does for a fresh model: normal(0, 0.02) weights, ones for norms. */
qt_status qt_llama_init(qt_llama *m, const qt_llama_config *cfg, uint64_t seed);
void qt_llama_free(qt_llama *m);
/* ids (B, T) i32 -> logits (B, T, vocab). */
qt_tensor *qt_llama_forward(qt_ctx *ctx, qt_llama *m, qt_tensor *ids);
/* The pieces of the forward, for layer-by-layer work (PTQ calibration); forward is
 * head(block(... block(embed(ids), 0) ..., n_layers - 1)), and
 * block(x, l) = x + attention(attn_norm(x)) then x + mlp(ffn_norm(x)):
 * embed: ids (B, T) -> (B, T, dim); attention: the normed input -> o_proj's output;
 * mlp: the normed input -> down_proj's output; head: final norm + lm_head -> logits. */
qt_tensor *qt_llama_embed(qt_ctx *ctx, qt_llama *m, qt_tensor *ids);
qt_tensor *qt_llama_attention(qt_ctx *ctx, qt_llama *m, int l, qt_tensor *h);
qt_tensor *qt_llama_mlp(qt_ctx *ctx, qt_llama *m, int l, qt_tensor *h);
qt_tensor *qt_llama_block(qt_ctx *ctx, qt_llama *m, int l, qt_tensor *x);
qt_tensor *qt_llama_head(qt_ctx *ctx, qt_llama *m, qt_tensor *x);

/* ------------------------------------------------------------------- gpt2 ---- */

typedef struct {
    int vocab_size;
    int n_positions; /* learned positions: wpe has this many rows; forward refuses longer T */
    int dim;         /* n_embd */
    int n_layers;
    int n_heads;
    int ffn_dim;     /* n_inner, 4 * dim when the config leaves it null */
    float norm_eps;  /* layer_norm_epsilon, 1e-5 */
    bool untied;     /* lm_head.weight of its own; GPT-2 ties it to wte (false) */
} qt_gpt2_config;

/* HF GPT-2 uses Conv1D: its weights are stored (in_features, out_features), the
 * transpose of nn.Linear. They are kept that way here (x @ W, not x @ W^T), so files
 * load and save without transposing. */
typedef struct {
    qt_tensor *ln1_w, *ln1_b;   /* (dim) ln_1 */
    qt_tensor *attn_w;          /* (dim, 3*dim) attn.c_attn: q | k | v along out */
    qt_tensor *attn_b;          /* (3*dim) */
    qt_tensor *proj_w;          /* (dim, dim) attn.c_proj */
    qt_tensor *proj_b;          /* (dim) */
    qt_tensor *ln2_w, *ln2_b;   /* (dim) ln_2 */
    qt_tensor *fc_w;            /* (dim, ffn_dim) mlp.c_fc */
    qt_tensor *fc_b;            /* (ffn_dim) */
    qt_tensor *fc_proj_w;       /* (ffn_dim, dim) mlp.c_proj */
    qt_tensor *fc_proj_b;       /* (dim) */
} qt_gpt2_layer;

typedef struct {
    qt_gpt2_config cfg;
    qt_paramset params;
    qt_tensor *wte;            /* (vocab, dim) transformer.wte */
    qt_tensor *wpe;            /* (n_positions, dim) transformer.wpe */
    qt_gpt2_layer *layers;     /* (n_layers) transformer.h.N */
    qt_tensor *lnf_w, *lnf_b;  /* (dim) transformer.ln_f */
    qt_tensor *lm_head;        /* (vocab, dim); == wte unless cfg.untied */
    qt_linear_hook hook;       /* QAT / LoRA; zeroed = plain layers */
} qt_gpt2;

/* As qt_llama_init, with GPT-2's init: normal(0, 0.02), c_proj weights normal(0,
 * 0.02/sqrt(2*n_layers)), biases 0, LayerNorm weights 1. */
qt_status qt_gpt2_init(qt_gpt2 *m, const qt_gpt2_config *cfg, uint64_t seed);
void qt_gpt2_free(qt_gpt2 *m);
/* ids (B, T) i32, T <= n_positions -> logits (B, T, vocab). */
qt_tensor *qt_gpt2_forward(qt_ctx *ctx, qt_gpt2 *m, qt_tensor *ids);

/* ------------------------------------------------------- any model, HF files ---- */

typedef enum { QT_ARCH_LLAMA, QT_ARCH_GPT2 } qt_arch;

/* A model of any supported architecture. */
typedef struct {
    qt_arch arch;
    char hf_arch[64]; /* config.json's architectures[0] ("Qwen2ForCausalLM"), or "" */
    union {
        qt_llama llama; /* QT_ARCH_LLAMA: Llama, Mistral, Qwen2 */
        qt_gpt2 gpt2;   /* QT_ARCH_GPT2 */
    };
} qt_model;

/* Loads a Hugging Face checkpoint directory: config.json, then model.safetensors or,
 * failing that, model.safetensors.index.json and its shards. architectures[0] picks the
 * model: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (q/k/v bias) or
 * GPT2LMHeadModel. Tensors may be F32, F16 or BF16 (converted to f32). The lm_head is
 * tied to the embedding when tie_word_embeddings is true or lm_head.weight is absent.
 * Every tensor a parameter needs must be there with the shape the config implies, and
 * no other tensor may be (old checkpoints' rotary inv_freq and GPT-2 attn.bias /
 * attn.masked_bias buffers are skipped). On failure *m is left zeroed (nothing to free)
 * and the status comes with a message naming the file and the key or tensor, expected
 * vs found. */
qt_status qt_model_load_hf(qt_model *m, const char *dir);
void qt_model_free(qt_model *m);
/* ids (B, T) i32 -> logits (B, T, vocab), whatever the architecture. */
qt_tensor *qt_model_forward(qt_ctx *ctx, qt_model *m, qt_tensor *ids);
qt_paramset *qt_model_params(qt_model *m);
/* Installs (or, with NULL, removes) the hook every Linear and embedding goes through. */
void qt_model_set_hook(qt_model *m, const qt_linear_hook *hook);

/* Writes a checkpoint transformers loads (from_pretrained): config.json and
 * model.safetensors with every parameter in `dtype` (QT_F32, or QT_BF16 / QT_F16, rounded
 * to nearest even). A tied lm_head is not written (tie_word_embeddings: true).
 * Atomic: when `dir` does not exist everything is written into a sibling temporary
 * directory renamed into place at the end; when it exists, each file is written to a
 * temporary and renamed over the old one (model.safetensors first, then config.json).
 * A Llama with qkv_bias is saved as Qwen2ForCausalLM, any other as LlamaForCausalLM. */
qt_status qt_llama_save_hf(const qt_llama *m, const char *dir, qt_dtype dtype);
qt_status qt_gpt2_save_hf(const qt_gpt2 *m, const char *dir, qt_dtype dtype);
qt_status qt_model_save_hf(const qt_model *m, const char *dir, qt_dtype dtype);

/* For writers of other HF layouts (export/): the config.json text qt_llama_save_hf
 * writes for a model saved in `dtype` (malloc'd, free() it; NULL when out of memory),
 * and a model built from a config.json with every parameter zeroed, for loaders that
 * fill the parameters themselves (tied when the config says so or force_tied). On
 * failure *m is zeroed; messages name config_path and the key. */
char *qt_llama_hf_config_text(const qt_llama_config *c, qt_dtype dtype);
qt_status qt_model_build_hf(qt_model *m, const char *config_path, bool force_tied);

/* ------------------------------------------------------------- GGUF files ---- */

/* Loads a GGUF file (gguf_load.c) of general.architecture "llama" or "qwen2" (q/k/v
 * bias) into a QT_ARCH_LLAMA model: config from <arch>.* metadata, tensors token_embd,
 * output_norm, output (absent = tied) and blk.N.* dequantized to f32 from any type
 * qt_ggml_dequantize reads (F32, F16, BF16, Q4_0..Q8_0, Q2_K..Q6_K). For "llama" the
 * q/k row permutation of llama.cpp's converter is undone, so the weights are in HF's
 * layout and logits match the HF checkpoint the file was made from. hf_arch is "".
 * Strict as qt_model_load_hf: on failure *m is zeroed and the message names the file
 * and the key or tensor; unsupported features (other architectures, MoE, scaled RoPE,
 * a head size other than dim / n_heads) are QT_ENOTSUP. Free with qt_model_free. */
qt_status qt_model_load_gguf(qt_model *m, const char *path);
/* The llama.cpp tensor name of an HF Llama parameter ("model.layers.3.mlp.up_proj.weight"
 * -> "blk.3.ffn_up.weight", token_embd, output_norm, output); false when there is none.
 * The one table the GGUF loader and the exporter both use. */
bool qt_gguf_name_of(const char *hf, char *out, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* QT_LAYERS_H */
