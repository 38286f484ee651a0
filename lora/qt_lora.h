/*
 * qt_lora.h - LoRA and QLoRA adapters (issue 6).
 *
 * LoRA (Hu et al. 2021): a selected Linear y = x W^T becomes
 *     y = x W^T + scaling * (dropout(x) A^T) B^T,   scaling = alpha / r (rsLoRA: alpha / sqrt(r))
 * with W frozen, A (r, in) Kaiming-uniform (a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))) and
 * B (out, r) zeros, as PEFT's LoraLayer initialises them, so an attached model starts
 * equal to its base. Adapters are applied through the model's linear hook (no module
 * swapping); every parameter of the base model is frozen (no grad, no optimizer state).
 *
 * QLoRA (Dettmers et al. 2023): with nf4 set, each selected base weight is stored as NF4
 * (blocksize 64) with double-quantized absmax, packed two codes per byte as bitsandbytes
 * does: 4 + 8/64 + 32/(64*256) = 4.127 bits per parameter. Its forward and its input
 * gradient dequantize a tile of rows at a time into scratch (never the whole matrix),
 * values bit-identical to the quantizer core's qt_dequantize.
 *
 * Names: adapters are parameters "<module>.lora_A.weight" / "<module>.lora_B.weight",
 * module as in HF ("model.layers.0.self_attn.q_proj"); PEFT files prefix
 * "base_model.model." (../shared/FORMATS.md).
 */
#ifndef QT_LORA_H
#define QT_LORA_H

#include <stdbool.h>
#include <stdint.h>

#include "qt_autograd.h"
#include "qt_layers.h"
#include "qt_quant.h"

#define QT_LORA_MAX_TARGETS 16

typedef struct {
    int rank;             /* r >= 1, at most min(in, out) of every selected layer */
    float alpha;          /* > 0 */
    bool rslora;          /* scaling alpha / sqrt(r) instead of alpha / r */
    float dropout;        /* on the adapter's input while training (grad mode on), [0, 1) */
    /* Which Linear layers: short names ("q_proj", "down_proj": PEFT's target_modules),
     * fnmatch patterns on the full module name ("model.layers.1*.self_attn.*"), or
     * "all-linear" (every decoder Linear, not lm_head, as PEFT's all-linear). NULL or 0
     * targets = all-linear. Each must select at least one layer. */
    const char *const *targets;
    int n_targets;
    bool nf4;             /* QLoRA: the selected base weights stored as NF4 + double quant */
    /* QAT + LoRA (torchao's QAT-LoRA): the selected base weights pass through this
     * quantizer-core format (fake_quant: dequantize(quantize(W))), so the adapters learn
     * on the base the export will hold. The base is frozen, so its fake-quantized value is
     * computed once, at attach, in place. Not with nf4 (which is this, stored packed). */
    bool base_fq;
    qt_qformat base_fmt;
    int nf4_blocksize;    /* 0 = 64 */
    uint64_t seed;        /* A's init; dropout masks also mix in the step */
} qt_lora_config;

typedef struct qt_nf4_base qt_nf4_base; /* a packed NF4 base weight (nf4_base.c) */

typedef struct {
    char module[128];     /* "model.layers.0.self_attn.q_proj" */
    char short_name[32];  /* "q_proj" */
    qt_tensor *w;         /* the base weight (out, in) in the model's paramset, frozen */
    qt_tensor *a;         /* (r, in) in the adapter paramset */
    qt_tensor *b;         /* (out, r) */
    qt_nf4_base *nf4;     /* QLoRA: the base as NF4 (w->data then unused by forward) */
} qt_lora_layer;

typedef struct qt_lora {
    qt_lora_config cfg;   /* targets copied into target_buf */
    char target_buf[QT_LORA_MAX_TARGETS][96];
    const char *target_ptr[QT_LORA_MAX_TARGETS];
    float scaling;
    qt_model *m;
    qt_paramset params;   /* every A and B, in layer order */
    qt_lora_layer *layers; /* (n) */
    int n;
    uint64_t step;        /* mixed into dropout seeds (qt_lora_set_step) */
} qt_lora;

/* Attaches adapters to m (a Llama-family model): selects the layers, freezes every base
 * parameter, makes A and B (one paramset, allocated and initialised), QLoRA-quantizes
 * the selected base weights, installs the hook. Errors name the target or the layer:
 * rank <= 0 or larger than a layer, a target that matches nothing, a model that already
 * has a hook (QAT), GPT-2. */
qt_status qt_lora_attach(qt_lora **out, qt_model *m, const qt_lora_config *cfg);
/* Removes the hook and frees the adapters (the base parameters stay frozen). */
void qt_lora_free(qt_lora *l);
qt_paramset *qt_lora_params(qt_lora *l);
/* The training step, mixed into the dropout masks (a mask per layer per step). */
void qt_lora_set_step(qt_lora *l, uint64_t step);
/* The base a layer's adapter was trained against, as f32 (out * in): W itself, or for
 * QLoRA the dequantized NF4 (what merging folds into). */
qt_status qt_lora_base_weight(const qt_lora *l, int layer, float *out);
/* Folds every adapter into its base: W = base + scaling * B A (QLoRA: base = the
 * dequantized NF4, not the original float weights), writes it into the model's weight,
 * removes the hook. The model is then a plain float model; l keeps the adapters. */
qt_status qt_lora_merge(qt_lora *l);
/* QLoRA: the f32 copies of the NF4-held base weights are given back to the OS at attach
 * (qt_paramset_release), so the model holds each adapted matrix once, as 4.127-bit NF4.
 * qt_lora_restore_base writes their dequantized values back (a checkpoint stores the base
 * as trained against; NF4 of those values is the same NF4), qt_lora_release_base frees
 * them again. No-ops without nf4. */
qt_status qt_lora_restore_base(qt_lora *l);
qt_status qt_lora_release_base(qt_lora *l);
/* Measured storage of the QLoRA base weights: bits per parameter over every selected
 * layer (codes, absmax codes, second-level absmax, offset), 0 without nf4. */
double qt_lora_nf4_bits(const qt_lora *l);

/* PEFT adapters (peft.c): adapter_config.json + adapter_model.safetensors in dir,
 * written atomically (a temporary directory renamed into place). base_name goes to
 * base_model_name_or_path. */
qt_status qt_lora_save_peft(const qt_lora *l, const char *dir, const char *base_name);
/* Reads dir's config (r, lora_alpha, use_rslora, lora_dropout, target_modules), attaches
 * adapters to m with it (nf4: QLoRA base) and loads A and B. Shapes or modules that do
 * not match m are errors naming the tensor. */
qt_status qt_lora_load_peft(qt_lora **out, qt_model *m, const char *dir, bool nf4);

#endif /* QT_LORA_H */
