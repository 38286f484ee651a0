/* train_internal.h - what train/'s files share and nothing outside uses. */
#ifndef QT_TRAIN_INTERNAL_H
#define QT_TRAIN_INTERNAL_H

#include "qt_lora.h"
#include "qt_optim.h"
#include "qt_train.h"

/* ------------------------------------------------------------ checkpoints ---- */

/* Writes atomically: path.tmp.<pid>, then rename over path. buffers and bopt (its
 * optimizer, when it has trained parameters) may be NULL. Writes the host copies
 * (ps->data, opt->m/v): for a paramset on a GPU, qt_paramset_pull and qt_adamw_pull
 * first. Loading needs the paramset on the CPU. */
qt_status qt_checkpoint_save(const char *path, const qt_paramset *ps, const qt_adamw *opt,
                             const qt_ckpt_state *st, const char *recipe_yaml,
                             const qt_paramset *buffers, const qt_adamw *bopt);
/* Loads into an allocated paramset of the same parameters (names and shapes must
 * match) and, unless opt is NULL, an initialised optimizer of the same size. */
qt_status qt_checkpoint_load(const char *path, qt_paramset *ps, qt_adamw *opt,
                             qt_ckpt_state *st);
/* Reads /buffers/<name> into every tensor of `buffers` (names and shapes must match) and,
 * unless bopt is NULL, /buffers_optimizer into bopt. */
qt_status qt_checkpoint_load_buffers(const char *path, qt_paramset *buffers, qt_adamw *bopt);
/* The resolved recipe stored in a checkpoint (malloc'd YAML text, caller frees). */
qt_status qt_checkpoint_recipe(const char *path, char **text);

/* ---------------------------------------------------------- recipe sections ---- */

/* When the recipe asks for QAT: prepares it on m (*q set, fake-quant enabled), else
 * *q = NULL. `out` must live as long as *q. */
qt_status qt_recipe_qat_prepare(const qt_recipe *r, const char *path, qt_model *m,
                                qt_recipe_qat *out, qt_qat **q);
/* The recipe's lora: section on m: new adapters (A's init from train.seed) or those of
 * the PEFT adapter lora.adapter; *out stays NULL without LoRA. base_as_stored: m is a
 * checkpoint's base, already as trained against (QAT + LoRA fake-quantizes a fresh base
 * only). Errors name the recipe, the section and the layer. */
qt_status qt_recipe_lora_attach(const qt_recipe *r, const char *rpath, qt_model *m,
                                bool base_as_stored, qt_lora **out);

/* ------------------------------------------------------------------ models ---- */

int qt_model_vocab(const qt_model *m);
/* Where data.tokenizer's chat template lives: model.from (an HF dir or GGUF; through a
 * checkpoint's chain of recipes to the model it started from), the tokenizer.json path
 * (its tokenizer_config.json), or nowhere for bytes (""). */
qt_status qt_recipe_chat_source(const qt_recipe *r, char *out, size_t n);

/* ---------------------------------------------------------- what is trained ---- */

/* The checkpoint groups (checkpoint.c): the model's parameters and their moments
 * (/params, /optimizer), and a second paramset (/buffers, /buffers_optimizer). */
typedef enum { QT_GROUP_PARAMS, QT_GROUP_BUFFERS } qt_ckpt_group;

/* One paramset of a run and what the loop does with it. */
typedef struct {
    qt_paramset *ps;
    qt_adamw opt;       /* its AdamW, whole or this rank's ZeRO-1 slice (opt.lo, opt.n);
                         * opt.m NULL when it has none */
    bool trained;       /* AdamW steps it: its grads are averaged over ranks, counted in
                         * the clipping norm, clipped and zeroed */
    bool zero;          /* ZeRO-1: opt is this rank's slice, the grads are reduce-scattered
                         * and the stepped slices all-gathered */
    bool agree;         /* the ranks must hold it bit for bit (checked at checkpoints) */
    float lr_scale;     /* its learning rate / the schedule's */
    long start_step;    /* stepped from this step on (its grads zeroed before) */
    qt_ckpt_group group;
    void (*after_update)(void *owner); /* after each of its optimizer steps */
} qt_trained_set;

typedef struct qt_trainables qt_trainables;

/* What a run trains: the model's paramset and possibly a second one. Full training,
 * QAT (the model, plus learnable scales or static observers that are checkpointed but
 * not trained), LoRA/QLoRA (the adapters; the base frozen) and ZeRO-1 differ only in
 * how this is built (trainable.c); the loop walks it. */
struct qt_trainables {
    qt_trained_set sets[2];
    int n;
    void *owner;     /* the qt_qat or qt_lora the hooks below act on */
    long start_step; /* QAT: qat.start_step */
    /* at the top of each step (QAT: fake-quant on from start_step, learnable scales
     * initialised there) */
    void (*step_begin)(const qt_trainables *ts, long step);
    /* before each micro-batch's forward; id is unique per micro-batch and rank (LoRA:
     * its dropout masks) */
    void (*micro_begin)(const qt_trainables *ts, uint64_t id);
    /* frozen values a checkpoint stores are made present (true) for a save, and given
     * back (false) after it and after a load (QLoRA: the base's f32 copies) */
    qt_status (*hold_frozen)(const qt_trainables *ts, bool on);
};

/* The whole model trained (zero: ZeRO-1 shards its optimizer over d's ranks). */
qt_status qt_trainables_model(qt_trainables *ts, qt_paramset *ps, const qt_adamw_config *oc,
                              const qt_dist *d, bool zero);
/* QAT on top: its buffers (learnable scales, trained with lr * lr_ratio and no decay from
 * start_step on; static observers' ranges, carried and checked). */
qt_status qt_trainables_add_qat(qt_trainables *ts, qt_qat *q, const qt_adamw_config *oc,
                                float lr_ratio, long start_step);
/* LoRA: the adapters alone (zero: ZeRO-1 shards their optimizer); the model's paramset
 * is frozen and carries an empty optimizer, so a checkpoint reads as any other. */
qt_status qt_trainables_lora(qt_trainables *ts, qt_paramset *model, qt_lora *l,
                             const qt_adamw_config *oc, const qt_dist *d, bool zero);
void qt_trainables_free(qt_trainables *ts);

/* The trained paramsets in order (for qt_dist_grads: a ZeRO-1 one first); their count. */
int qt_trainables_grads(const qt_trainables *ts, qt_paramset *out[2], bool *zero);
/* The global grad norm: every trained set's sum of squares (ZeRO-1: each rank's slice,
 * summed over ranks). */
qt_status qt_trainables_grad_norm(qt_trainables *ts, qt_dist *d, double *norm);
qt_status qt_trainables_clip(qt_trainables *ts, float scale);
void qt_trainables_zero_grad(qt_trainables *ts);
/* One optimizer step of every trained set at the schedule's lr (ZeRO-1: then the
 * all-gather), grads zeroed after. */
qt_status qt_trainables_update(qt_trainables *ts, qt_dist *d, long step, float lr);
/* The parameters and moments to the GPU (after a resume loaded them on the host). */
qt_status qt_trainables_to(qt_trainables *ts, qt_device dev);
/* Their host copies current. */
qt_status qt_trainables_pull(qt_trainables *ts);
/* Ranks hold the same values bit for bit (the sets marked agree). */
qt_status qt_trainables_check_agree(qt_trainables *ts, qt_dist *d, long step);
/* A checkpoint of every set (ZeRO-1: the moments gathered on rank 0, which alone
 * writes); every rank calls it. */
qt_status qt_trainables_save(qt_trainables *ts, qt_dist *d, const char *path,
                             const qt_ckpt_state *cs, const char *recipe_yaml);
/* Resume: every set from the checkpoint (ZeRO-1: this rank's slice of the moments); a
 * checkpoint of another seed is refused once its state is read. */
qt_status qt_trainables_load(qt_trainables *ts, const char *path, long seed, qt_ckpt_state *cs);

#endif /* QT_TRAIN_INTERNAL_H */
