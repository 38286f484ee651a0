/*
 * checkpoint.h - training checkpoints in HDF5 (private to train/).
 *
 * Layout of a checkpoint file:
 *   /params/<name>      f32, the parameter's shape (HF names: model.layers.0...)
 *   /optimizer/m, /v    f32 (n), AdamW moments in the paramset's grad layout
 *   /buffers/<name>     f32, QAT's own parameters (static activation observers, learned
 *                       scales); optional
 *   /buffers_optimizer/m, /v   AdamW moments of the trained ones; optional
 *   root attributes     format ("qtrain-checkpoint"), version, step, adam_step,
 *                       data_epoch, data_pos, seed, recipe (the resolved YAML)
 * The random state needs no field: every draw is a function of (seed, counter) and the
 * counters derive from the step and the data position.
 */
#ifndef QT_CHECKPOINT_H
#define QT_CHECKPOINT_H

#include "qt_autograd.h"
#include "qt_train.h"

typedef struct {
    long step;      /* optimizer steps completed */
    long data_epoch, data_pos;
    long seed;
} qt_ckpt_state;

/* Writes atomically: path.tmp.<pid>, then rename over path. buffers and bopt (its
 * optimizer, when it has trained parameters) may be NULL. Writes the host copies
 * (ps->data, opt->m/v): for a paramset on a GPU, qt_paramset_pull and qt_adamw_pull
 * first. Loading needs the paramset on the CPU. */
qt_status qt_checkpoint_save(const char *path, const qt_paramset *ps, const qt_adamw *opt,
                             const qt_ckpt_state *st, const char *recipe_yaml,
                             const qt_paramset *buffers, const qt_adamw *bopt);
/* Reads /buffers/<name> into every tensor of `buffers` (names and shapes must match) and,
 * unless bopt is NULL, /buffers_optimizer into bopt. */
qt_status qt_checkpoint_load_buffers(const char *path, qt_paramset *buffers, qt_adamw *bopt);
/* Loads into an allocated paramset of the same parameters (names and shapes must
 * match) and, unless opt is NULL, an initialised optimizer of the same size. */
qt_status qt_checkpoint_load(const char *path, qt_paramset *ps, qt_adamw *opt,
                             qt_ckpt_state *st);

/* The resolved recipe stored in a checkpoint (malloc'd YAML text, caller frees). */
qt_status qt_checkpoint_recipe(const char *path, char **text);

#endif
