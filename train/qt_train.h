/*
 * qt_train.h - libqt_train, the training side of qtrain: recipes (YAML in, a typed
 * struct out; every key in one table in recipe.c), the one path from a name to a model
 * (a recipe's model: section or a CLI verb's MODEL), the training loop, HDF5 checkpoints
 * (layout in checkpoint.c), perplexity by sliding windows, sampling, and the parity
 * report of a candidate model against a reference.
 *
 * Nothing here prints: the loop reports through qt_train_opts' event callback, notes
 * about inputs go to qt_log (qt_autograd.h), errors come back as statuses.
 */
#ifndef QT_TRAIN_H
#define QT_TRAIN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "qt_autograd.h"
#include "qt_data.h"
#include "qt_dist.h"
#include "qt_export.h"
#include "qt_layers.h"
#include "qt_ptq.h"
#include "qt_qat.h"

/* ---------------------------------------------------------------- recipes ---- */

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
    struct {                        /* data parallel under mpirun (dist/qt_dist.h) */
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

/* The resolved recipe as YAML text (malloc'd; NULL when out of memory). */
char *qt_recipe_text(const qt_recipe *r);

/* ------------------------------------------- recipe sections as module configs ---- */

/* A recipe's weight format (qat.weight.*, quantize.*; k names the keys in messages) as
 * a qt_qformat, checked. */
qt_status qt_recipe_wformat(const qt_recipe_wfmt *w, const char *path, const char *k,
                            qt_qformat *f);

#define QT_QAT_MAX_GLOBS 32

typedef struct {
    qt_qat_config cfg;       /* cfg.layers points into globs below */
    char globs[QT_QAT_MAX_GLOBS][128];
    const char *ptrs[QT_QAT_MAX_GLOBS];
} qt_recipe_qat;

/* The qat: section as a qt_qat_config, with every check that does not need the model's
 * shapes; messages name `path` and the key. Call only when qt_recipe_has_qat(r). */
qt_status qt_recipe_qat_config(const qt_recipe *r, const char *path, qt_recipe_qat *out);

#define QT_PTQ_MAX_GLOBS 32

typedef struct {
    qt_ptq_config pc;        /* pc.layers points into globs below */
    char globs[QT_PTQ_MAX_GLOBS][128];
    const char *ptrs[QT_PTQ_MAX_GLOBS];
} qt_recipe_ptq;

/* The quantize: section as a qt_ptq_config; errors name the file and key. */
qt_status qt_recipe_ptq_config(const qt_recipe *r, const char *path, qt_recipe_ptq *out);

typedef struct {
    qt_export_format f;
    char path[QT_PATH_MAX + 32];
} qt_recipe_export_job;

/* The files `qtrain quantize` writes: the export: entries, or the quantized format's
 * natural one under output.dir (none with export.write false). jobs: QT_EXPORT_COUNT. */
qt_status qt_recipe_export_jobs(const qt_recipe *r, const char *path, const qt_recipe_ptq *pq,
                                qt_recipe_export_job *jobs, int *n);
/* The exporters' options as the export: section says (tok: the model's tokenizer);
 * o->version is left for the caller. */
void qt_recipe_export_opts(const qt_recipe *r, const qt_tokenizer *tok, qt_export_opts *o);

/* --------------------------------------------------------------- schedule ---- */

/* Monotonic wall-clock seconds, for rates and ETAs. */
double qt_now_s(void);

/* Learning rate at `step` (0-based): linear warmup to lr over `warmup` steps, then decay
 * ("cosine" | "linear" | "constant") to min_ratio * lr at the last step. */
float qt_lr_at(long step, long steps, float lr, long warmup, const char *decay, float min_ratio);

/* --------------------------------------------------------- loading a model ---- */

/* Where a run stands in its checkpoint (checkpoint.c). */
typedef struct {
    long step;      /* optimizer steps completed */
    long data_epoch, data_pos;
    long seed;
} qt_ckpt_state;

/* What to load: a CLI verb's MODEL (path) or the model a recipe describes (recipe). */
typedef struct {
    const char *path;        /* a qtrain checkpoint (.h5), an HF directory (quantized
                              * exports too) or a GGUF file; or NULL, and: */
    const qt_recipe *recipe; /* its model: section (model.from, or new from the sizes)
                              * with data.tokenizer */
    const char *recipe_path; /* names the recipe in messages (NULL: "recipe") */
    bool qat;                /* fake-quant as the model's own qat: section says (a QAT
                              * checkpoint is evaluated quantized; a recipe trains with it) */
    const char *qat_recipe;  /* path mode: fake-quant as this recipe's qat: section says
                              * instead (on a float model: round-to-nearest PTQ) */
    bool keep_lora_base;     /* path mode: a LoRA checkpoint keeps its frozen base, its
                              * adapters unused (as stored), instead of merged */
} qt_model_source;

typedef struct {
    qt_recipe r;             /* the recipe it was trained with (the recipe itself in recipe
                              * mode; for a pretrained file: the defaults, from = path) */
    qt_model m;
    qt_tokenizer *tok;       /* NULL: bytes */
    qt_ckpt_state cs;        /* the checkpoint's state; zeros for anything else */
    char checkpoint[QT_PATH_MAX]; /* path mode: the qtrain checkpoint it came from, else "" */
    qt_recipe_qat qcfg;      /* qat's config (it points into this) */
    qt_qat *qat;             /* fake-quant on the model, or NULL */
    char lora[QT_PATH_MAX + 64]; /* what was merged in: "LoRA r 4 on the float base" (a LoRA
                              * run's checkpoint; in recipe mode model.from's), "" if none */
} qt_loaded_model;

/* The one way qtrain turns a name into a model. A qtrain checkpoint is rebuilt as its
 * stored recipe describes (new, or model.from through the chain of checkpoints it
 * started from: their files must still be there), its weights loaded, a LoRA run's
 * adapters merged (W = base + scaling B A, so the model is a plain float one), its
 * tokenizer the one it was trained with. An HF directory or a GGUF file: the model and
 * its tokenizer (an HF export without tokenizer.json reads bytes). Then QAT, as
 * src->qat / qat_recipe say. On failure *out holds nothing to free. */
qt_status qt_model_open(const qt_model_source *src, qt_loaded_model *out);
void qt_model_close(qt_loaded_model *lm);

/* The longest context the model takes (its max positions; 2048 if unbounded). */
int qt_model_context(const qt_model *m);

/* ------------------------------------------------------ evaluating a model ---- */

/* Reads a text file and tokenizes it (tok NULL: bytes); needs at least 2 bytes and
 * gives at least 2 ids. *ids malloc'd. Errors name the file. */
qt_status qt_read_tokens(const char *path, const qt_tokenizer *tok, int32_t **ids, size_t *n);

/* Sliding windows over n tokens, the method of HF's perplexity guide: windows of up to
 * ctx tokens start every stride tokens; each scores only the tokens the previous window
 * did not, with all the context before them that fits. One iterator for `qtrain eval`
 * and the parity report, so both score the same tokens. */
typedef struct {
    long n, ctx, stride;
    long begin, prev_end; /* the next window's start; where the previous window ended */
    bool done;
} qt_ppl_windows;

void qt_ppl_windows_init(qt_ppl_windows *w, long n, long ctx, long stride);
/* The next window: it feeds tokens [*begin, *begin + *len) and predicts the token after
 * each; predictions j >= *first are scored (the ones before were the previous window's).
 * False when every token has been scored. */
bool qt_ppl_windows_next(qt_ppl_windows *w, long *begin, long *len, long *first);

typedef struct {
    long tokens;  /* scored */
    double nll;   /* summed negative log-likelihood, nats */
    double ppl;   /* exp(nll / tokens); NaN with no tokens */
} qt_ppl_result;

/* Perplexity of m over ids by sliding windows (grad mode off). */
qt_status qt_eval_perplexity(qt_model *m, const int32_t *ids, long n, long ctx, long stride,
                             qt_ppl_result *out);

/* Samples up to n_new tokens after prompt (temperature T, seeded), stopping at EOS;
 * context capped at max_ctx. *out: malloc'd text (prompt included). tok NULL = bytes. */
qt_status qt_generate(qt_ctx *ctx, qt_model *m, const qt_tokenizer *tok, const char *prompt,
                      int n_new, int max_ctx, float temperature, uint64_t seed, char **out);

/* How closely a candidate model (quantized, exported) follows a reference on a text. */
typedef struct {
    long tokens;              /* scored tokens */
    double ppl_ref, ppl_cand; /* perplexity of each (the sliding windows of qtrain eval) */
    double kld_mean, kld_max, kld_p99; /* KL(P_ref || P_cand) of the next-token
                                          distributions, nats per token */
    double top1;              /* fraction of tokens where both argmaxes agree */
} qt_compare_result;

/* Both models over the same windows (qt_ppl_windows). Vocabularies must match. */
qt_status qt_compare_models(qt_model *ref, qt_model *cand, const int32_t *ids, long n,
                            long ctx, long stride, qt_compare_result *out);

/* ---------------------------------------------------------------- training ---- */

/* What a run reports, on rank 0 only; the caller prints it (or not). */
typedef enum {
    QT_TRAIN_EV_LINE,   /* a line of the run's report (text): the setup summary, the data
                         * parallel, QAT and LoRA lines, "resumed from", a skipped step,
                         * where the adapter went */
    QT_TRAIN_EV_STEP,   /* an optimizer step completed (the progress fields) */
    QT_TRAIN_EV_EVAL,   /* a validation (step, val_loss, val_ppl) */
    QT_TRAIN_EV_SAMPLE, /* text sampled after a validation (text) */
} qt_train_event_kind;

typedef struct {
    qt_train_event_kind kind;
    const char *text;       /* LINE: one line without its newline; SAMPLE: the text */
    long step, steps;       /* steps completed (1-based), of the schedule's */
    bool logged;            /* STEP: an output.log_every step (metrics.jsonl has it) */
    double loss, lr, grad_norm;
    double tokens_per_s, elapsed_s, eta_s;
    double val_loss, val_ppl;
} qt_train_event;

typedef void (*qt_train_event_fn)(void *user, const qt_train_event *ev);

typedef struct {
    bool resume;  /* continue from output.dir/checkpoint.h5 */
    long stop_at; /* > 0: checkpoint and stop after this many steps (of the full schedule) */
    const char *recipe_path; /* names the recipe in messages; NULL = "recipe" */
    struct qt_dist *dist;    /* this rank of a data-parallel job; NULL = a single process */
    qt_train_event_fn on_event; /* NULL: the run reports nothing (metrics.jsonl is written) */
    void *user;
} qt_train_opts;

typedef struct {
    long steps;          /* optimizer steps taken */
    long skipped_steps;  /* non-finite steps skipped */
    double first_loss, last_loss, val_loss, val_ppl, seconds;
    /* optional, for tests: the loss of each step (index = step) and the final weights */
    double *losses;
    long max_losses;
    float *weights;
    size_t max_weights;
} qt_train_result;

/* Trains as the recipe says: the model (full training, QAT, LoRA/QLoRA adapters), data,
 * AdamW with the schedule, gradient accumulation, clipping, a guard against non-finite
 * steps, periodic validation and checkpoints, metrics in output.dir/metrics.jsonl. The
 * caller may set res->losses / res->weights before the call (other fields are
 * overwritten). */
qt_status qt_train_run(const qt_recipe *r, const qt_train_opts *opts, qt_train_result *res);

#endif /* QT_TRAIN_H */
