/*
 * recipe.h - the training recipe: YAML in, typed struct out (private to train/; the CLI
 * and the loop use it). Every key, its type, default and meaning is in the one table in
 * recipe.c, which also prints the reference (`qtrain train --keys`).
 */
#ifndef QT_RECIPE_H
#define QT_RECIPE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "qt_autograd.h"

#define QT_PATH_MAX 512
#define QT_RECIPE_LORA_MAX_TARGETS 16 /* qt_lora's QT_LORA_MAX_TARGETS */

/* A weight format as recipes spell it (qat.weight.*, quantize.*). */
typedef struct {
    char format[16];        /* none | int2..int8 | nf4 | fp4 | fp8_e4m3 | ... | q6_k */
    char granularity[16];   /* group | channel | tensor (int; fp8: channel | tensor) */
    int group_size;         /* int: G; nf4/fp4: blocksize; 0 = format default */
    bool symmetric;
    char scale_dtype[8];    /* f32 | f16 | bf16 (int) */
    bool double_quant;      /* nf4/fp4 */
    bool learnable;         /* int, f32 scales: LSQ learned scales / zero points (QAT) */
    float lr_ratio;         /* their learning rate / optimizer.lr (QAT) */
} qt_recipe_wfmt;

typedef struct {
    char name[128];
    struct {
        char from[QT_PATH_MAX]; /* "" = train from scratch with the sizes below */
        char arch[16];          /* llama */
        int vocab_size, dim, n_layers, n_heads, n_kv_heads, ffn_dim, max_seq_len;
        float rope_theta, norm_eps;
        bool tied_embeddings;
    } model;
    struct {
        char train[QT_PATH_MAX];     /* a text file, or a directory of text files */
        char tokenizer[QT_PATH_MAX]; /* bytes | model | path to a tokenizer.json */
        char format[8];              /* auto | text | jsonl */
        char chat_template[8];       /* auto | none | chatml | llama3 (prompt/response JSONL) */
        float val_fraction;
        int seq_len;
    } data;
    struct {
        long steps;
        int batch_size, grad_accum, threads, max_bad_steps;
        long seed;
        float grad_clip;
        char device[8];             /* cpu | cuda */
        char dtype[8];              /* auto | f32 | bf16 (activations; auto = bf16 on cuda) */
    } train;
    struct {
        char name[16];
        float lr, betas[2], eps, weight_decay;
    } optimizer;
    struct {
        long warmup;
        char decay[16]; /* cosine | linear | constant */
        float min_lr_ratio;
    } schedule;
    struct {                        /* absent / format none = no fake-quant */
        qt_recipe_wfmt weight;
        struct {
            char format[16];        /* none | int2..int8 */
            char granularity[16];   /* per_token (dynamic) | per_tensor (static, observer) */
            bool dynamic, symmetric;
            char observer[16];      /* minmax | moving_average */
            float averaging_constant;
        } activation;
        char layers[1024];          /* '\n'-separated module-name globs; "" = every Linear */
        bool embeddings, lm_head;
        long start_step;            /* fake-quant turns on at this step */
    } qat;
    struct {                        /* LoRA / QLoRA adapters (lora/); rank 0 = absent */
        int rank;                   /* r; 0 = no adapters (unless adapter is set) */
        float alpha, dropout;
        bool rslora;                /* scaling alpha / sqrt(r) instead of alpha / r */
        char targets[1024];         /* '\n'-separated short names / globs / all-linear */
        char base[8];               /* float | nf4 (QLoRA) */
        char adapter[QT_PATH_MAX];  /* PEFT adapter directory to start from; "" = new */
    } lora;
    struct {                        /* qtrain quantize (PTQ); method none = absent */
        char method[8];             /* none | rtn | gptq | awq */
        qt_recipe_wfmt fmt;         /* quantize.format, granularity, group_size, ... */
        char symmetric[8];          /* auto (gptq/rtn: true, awq: false) | true | false */
        char layers[1024];          /* '\n'-separated module-name globs; "" = decoder Linears */
        float damp;                 /* gptq: fraction of mean(diag(H)) */
        int block_size;             /* gptq: lazy-update block */
        bool act_order, static_groups;
        int awq_grid;               /* awq: alpha grid points */
        bool clip;                  /* awq: clip search */
        bool awq_duo;               /* awq: AutoAWQ's duo_scaling */
        int batch;                  /* calibration sequences per forward */
        struct {
            char data[QT_PATH_MAX]; /* "" = data.train (its training part) */
            int samples, seq_len;
            long seed;
        } calibration;
        bool compare;               /* qtrain compare against the float model after export */
        char compare_data[QT_PATH_MAX]; /* "" = data.train's validation part */
        int compare_context;        /* 0 = data.seq_len */
    } quantize;
    struct {                        /* files qtrain quantize writes; "" = not that format */
        char gguf[QT_PATH_MAX], gptq[QT_PATH_MAX], awq[QT_PATH_MAX], bnb_nf4[QT_PATH_MAX],
            fp8[QT_PATH_MAX];
        bool write;                 /* false: no files; compare the model in memory */
        char gguf_float[8];         /* f32 | f16: GGUF type of unquantized weights */
        char st_float[8];           /* f32 | f16 | bf16: safetensors unquantized tensors */
    } export;
    struct {                        /* data parallel under mpirun (train/qt_dist.h) */
        char backend[8];            /* auto | mpi | nccl */
        float bucket_mb;            /* gradient all-reduce bucket size, MiB */
        int zero;                   /* 0 | 1: ZeRO-1 shards the optimizer state */
        bool overlap;               /* all-reduce buckets while backward runs */
    } distributed;
    struct {
        char dir[QT_PATH_MAX];
        int log_every, eval_every, eval_batches, checkpoint_every, sample_tokens;
        char sample_prompt[256];
    } output;
} qt_recipe;

/* Defaults for every key. */
void qt_recipe_defaults(qt_recipe *r);
/* Parses a YAML file over the defaults. On error returns QT_EFORMAT/QT_EINVAL/QT_EIO
 * with "path:line:col: message" in qt_error_message(). */
qt_status qt_recipe_load(const char *path, qt_recipe *r);
/* The same from YAML text (a checkpoint's stored recipe); `name` is used in messages. */
qt_status qt_recipe_load_string(const char *name, const char *text, qt_recipe *r);
/* Applies one "a.b=value" override (from --set). */
qt_status qt_recipe_set(qt_recipe *r, const char *assignment);
/* Cross-key checks (seq_len <= max_seq_len, ...), after loading and overrides. */
qt_status qt_recipe_validate(const qt_recipe *r, const char *path);
/* True when the recipe asks for QAT (a weight format or activation fake-quant). */
bool qt_recipe_has_qat(const qt_recipe *r);
/* True when the recipe asks for LoRA adapters (lora.rank > 0 or lora.adapter). */
bool qt_recipe_has_lora(const qt_recipe *r);

/* Writes the documented key table (key, type, default, meaning). */
void qt_recipe_print_keys(FILE *f);
/* Writes the resolved recipe as YAML (into the run directory and checkpoints). */
void qt_recipe_write(FILE *f, const qt_recipe *r);

#endif
