/*
 * trainable.c - what a run trains, as one small set the loop walks (train_internal.h):
 * each entry a paramset with its AdamW (whole, or a ZeRO-1 slice), whether it is trained,
 * its learning-rate multiplier, its checkpoint group, and a few hooks of its owner.
 *
 *   full training   [model: trained]
 *   QAT             [model: trained] [QAT buffers: learnable scales trained from
 *                                      qat.start_step at lr * lr_ratio, no decay; static
 *                                      observers carried, checkpointed, rank-checked]
 *   LoRA / QLoRA    [model: frozen, empty optimizer] [adapters: trained]
 *   ZeRO-1          the first trained entry's optimizer holds this rank's slice
 *
 * Checkpoints keep one layout whatever is trained: /params and /optimizer hold the model
 * (a LoRA run's optimizer is empty), /buffers and /buffers_optimizer the second entry.
 */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train_internal.h"

static qt_trained_set *add(qt_trainables *ts, qt_paramset *ps, qt_ckpt_group group) {
    qt_trained_set *e = &ts->sets[ts->n++];
    memset(e, 0, sizeof *e);
    e->ps = ps;
    e->group = group;
    e->lr_scale = 1.0f;
    return e;
}

/* e's optimizer: whole, or (zero) this rank's slice of its flat grad buffer */
static qt_status init_opt(qt_trained_set *e, const qt_adamw_config *oc, const qt_dist *d,
                          bool zero) {
    e->zero = zero;
    if (!zero) return qt_adamw_init(&e->opt, e->ps, *oc);
    size_t lo, hi;
    qt_dist_shard(d, d->rank, e->ps->n_grad, &lo, &hi);
    return qt_adamw_init_slice(&e->opt, e->ps, *oc, lo, hi);
}

qt_status qt_trainables_model(qt_trainables *ts, qt_paramset *ps, const qt_adamw_config *oc,
                              const qt_dist *d, bool zero) {
    memset(ts, 0, sizeof *ts);
    qt_trained_set *e = add(ts, ps, QT_GROUP_PARAMS);
    e->trained = e->agree = true;
    return init_opt(e, oc, d, zero);
}

/* ---- QAT -------------------------------------------------------------------------- */

static void qat_step_begin(const qt_trainables *ts, long step) {
    qt_qat_set_enabled(ts->owner, step >= ts->start_step);
}

static void qat_learnable_step_begin(const qt_trainables *ts, long step) {
    qat_step_begin(ts, step);
    /* learnable scales start from the weights fake-quant will see (a resumed run past
     * start_step has them from the checkpoint) */
    if (step == ts->start_step && step > 0) qt_qat_init_scales(ts->owner);
}

static void qat_after_update(void *owner) { qt_qat_after_step(owner); }

qt_status qt_trainables_add_qat(qt_trainables *ts, qt_qat *q, const qt_adamw_config *oc,
                                float lr_ratio, long start_step) {
    ts->owner = q;
    ts->start_step = start_step;
    ts->step_begin = qat_step_begin;
    qt_paramset *b = qt_qat_buffers(q);
    if (!b) return QT_OK; /* weight fake-quant alone keeps no state */
    qt_trained_set *e = add(ts, b, QT_GROUP_BUFFERS);
    e->agree = true; /* static observers' ranges are frozen parameters: checked too */
    if (b->n_grad == 0) return QT_OK;
    /* learnable scales: their own AdamW, no weight decay, not before fake-quant is on
     * (AdamW's bias correction would count the idle steps) */
    qt_adamw_config qoc = *oc;
    qoc.weight_decay = 0.0f;
    qt_status st = qt_adamw_init(&e->opt, b, qoc);
    if (st != QT_OK) return st;
    e->trained = true;
    e->lr_scale = lr_ratio;
    e->start_step = start_step;
    e->after_update = qat_after_update;
    ts->step_begin = qat_learnable_step_begin;
    return QT_OK;
}

/* ---- LoRA ------------------------------------------------------------------------- */

static void lora_micro_begin(const qt_trainables *ts, uint64_t id) {
    qt_lora_set_step(ts->owner, id);
}

static qt_status lora_hold_frozen(const qt_trainables *ts, bool on) {
    return on ? qt_lora_restore_base(ts->owner) : qt_lora_release_base(ts->owner);
}

qt_status qt_trainables_lora(qt_trainables *ts, qt_paramset *model, qt_lora *l,
                             const qt_adamw_config *oc, const qt_dist *d, bool zero) {
    memset(ts, 0, sizeof *ts);
    ts->owner = l;
    ts->micro_begin = lora_micro_begin;
    ts->hold_frozen = lora_hold_frozen;
    /* the base is frozen: its optimizer is sized for nothing (an empty paramset), so no
     * step can move it, weight decay included; the checkpoint's /optimizer is empty */
    qt_paramset none;
    qt_paramset_init(&none);
    qt_trained_set *m = add(ts, model, QT_GROUP_PARAMS);
    qt_status st = qt_adamw_init(&m->opt, &none, *oc);
    if (st != QT_OK) return st;
    qt_trained_set *a = add(ts, qt_lora_params(l), QT_GROUP_BUFFERS);
    a->trained = a->agree = true;
    return init_opt(a, oc, d, zero);
}

void qt_trainables_free(qt_trainables *ts) {
    for (int i = 0; i < ts->n; i++) qt_adamw_free(&ts->sets[i].opt);
    ts->n = 0;
}

/* ---- what the loop does with them ----------------------------------------------- */

int qt_trainables_grads(const qt_trainables *ts, qt_paramset *out[2], bool *zero) {
    int n = 0;
    *zero = false;
    for (int i = 0; i < ts->n; i++) {
        const qt_trained_set *e = &ts->sets[i];
        if (!e->trained) continue;
        if (e->zero) {
            assert(n == 0 && "qt_dist_grads shards its first paramset");
            *zero = true;
        }
        out[n++] = e->ps;
    }
    return n;
}

qt_status qt_trainables_grad_norm(qt_trainables *ts, qt_dist *d, double *norm) {
    double part[2] = {0.0, 0.0};
    qt_status st = QT_OK;
    for (int i = 0; i < ts->n && st == QT_OK; i++) {
        qt_trained_set *e = &ts->sets[i];
        if (!e->trained) continue;
        st = e->zero ? qt_grad_sumsq_range(e->ps, e->opt.lo, e->opt.lo + e->opt.n, &part[i])
                     : qt_grad_sumsq(e->ps, &part[i]);
    }
    /* ZeRO-1: each rank holds its slice's sum */
    for (int i = 0; i < ts->n && st == QT_OK; i++)
        if (ts->sets[i].trained && ts->sets[i].zero)
            st = qt_dist_reduce_f64(d, &part[i], 1, QT_DIST_SUM);
    double sq = 0.0;
    for (int i = 0; i < ts->n; i++) sq += part[i];
    *norm = sqrt(sq);
    return st;
}

qt_status qt_trainables_clip(qt_trainables *ts, float scale) {
    qt_status st = QT_OK;
    for (int i = 0; i < ts->n && st == QT_OK; i++)
        if (ts->sets[i].trained) st = qt_grad_scale(ts->sets[i].ps, scale);
    return st;
}

void qt_trainables_zero_grad(qt_trainables *ts) {
    for (int i = 0; i < ts->n; i++)
        if (ts->sets[i].trained) qt_paramset_zero_grad(ts->sets[i].ps);
}

qt_status qt_trainables_update(qt_trainables *ts, qt_dist *d, long step, float lr) {
    for (int i = 0; i < ts->n; i++) {
        qt_trained_set *e = &ts->sets[i];
        if (!e->trained) continue;
        if (step >= e->start_step) {
            qt_status st = qt_adamw_step(&e->opt, e->ps, lr * e->lr_scale);
            if (st == QT_OK && e->zero) st = qt_dist_allgather_params(d, e->ps);
            if (st != QT_OK) return st;
            if (e->after_update) e->after_update(ts->owner);
        }
        qt_paramset_zero_grad(e->ps);
    }
    return QT_OK;
}

qt_status qt_trainables_to(qt_trainables *ts, qt_device dev) {
    qt_status st = QT_OK;
    for (int i = 0; i < ts->n && st == QT_OK; i++) {
        qt_trained_set *e = &ts->sets[i];
        st = qt_paramset_to(e->ps, dev);
        if (st == QT_OK && e->opt.m) st = qt_adamw_to_device(&e->opt, e->ps);
    }
    return st;
}

qt_status qt_trainables_pull(qt_trainables *ts) {
    qt_status st = QT_OK;
    for (int i = 0; i < ts->n && st == QT_OK; i++) {
        qt_trained_set *e = &ts->sets[i];
        st = qt_paramset_pull(e->ps);
        if (st == QT_OK && e->opt.m) st = qt_adamw_pull(&e->opt, e->ps);
    }
    return st;
}

/* Ranks must hold the same values bit for bit (the same averaged grads, the same
 * update; the same observed ranges); checked at each checkpoint, so a reduction that is
 * not bitwise identical everywhere, or a rank that went its own way, is an error rather
 * than a silent drift. */
qt_status qt_trainables_check_agree(qt_trainables *ts, qt_dist *d, long step) {
    if (d->world == 1) return QT_OK;
    for (int i = 0; i < ts->n; i++) {
        const qt_paramset *ps = ts->sets[i].ps;
        if (!ts->sets[i].agree) continue;
        int64_t hi = (int64_t)qt_dist_digest(ps), lo = hi;
        qt_status st = qt_dist_reduce_i64(d, &hi, 1, QT_DIST_MAX);
        if (st == QT_OK) st = qt_dist_reduce_i64(d, &lo, 1, QT_DIST_MIN);
        if (st != QT_OK) return st;
        if (hi != lo)
            return QT_ERROR(QT_ESTATE, "step %ld: the ranks hold different values in the "
                                       "parameters of %s, ... (a collective that is not "
                                       "bitwise identical on every rank?)", step,
                            ps->n ? ps->params[0]->name : "?");
    }
    return QT_OK;
}

/* ZeRO-1 checkpoint: every rank's slice of e's moments gathered on rank 0 into a full
 * optimizer state (only rank 0 writes the file). */
static qt_status gather_moments(qt_dist *d, const qt_trained_set *e, qt_adamw *full) {
    memset(full, 0, sizeof *full);
    qt_status st = d->rank == 0 ? qt_adamw_init(full, e->ps, e->opt.cfg) : QT_OK;
    if (st == QT_OK) st = qt_dist_gather_moments(d, &e->opt, full);
    return st;
}

qt_status qt_trainables_save(qt_trainables *ts, qt_dist *d, const char *path,
                             const qt_ckpt_state *cs, const char *recipe_yaml) {
    const qt_paramset *group_ps[2] = {NULL, NULL};
    const qt_adamw *group_opt[2] = {NULL, NULL};
    qt_adamw full = {0}; /* ZeRO-1: the sharded set's whole state, on rank 0 */
    qt_status st = QT_OK;
    for (int i = 0; i < ts->n && st == QT_OK; i++) {
        const qt_trained_set *e = &ts->sets[i];
        group_ps[e->group] = e->ps;
        group_opt[e->group] = e->opt.m ? &e->opt : NULL;
        if (e->zero) {
            st = gather_moments(d, e, &full);
            group_opt[e->group] = &full;
        }
    }
    bool root = d->rank == 0;
    /* QLoRA: the base as trained against (dequantized NF4) for the file, then released */
    if (st == QT_OK && root && ts->hold_frozen) st = ts->hold_frozen(ts, true);
    if (st == QT_OK && root)
        st = qt_checkpoint_save(path, group_ps[QT_GROUP_PARAMS], group_opt[QT_GROUP_PARAMS], cs,
                                recipe_yaml, group_ps[QT_GROUP_BUFFERS],
                                group_opt[QT_GROUP_BUFFERS]);
    if (st == QT_OK && root && ts->hold_frozen) st = ts->hold_frozen(ts, false);
    qt_adamw_free(&full);
    return st;
}

/* ZeRO-1 resume: the checkpoint's full moments of e, this rank's slice of them kept. */
static qt_status load_slice(const char *path, qt_trained_set *e, qt_ckpt_state *cs) {
    qt_adamw full;
    qt_status st = qt_adamw_init(&full, e->ps, e->opt.cfg);
    if (st != QT_OK) return st;
    st = e->group == QT_GROUP_BUFFERS ? qt_checkpoint_load_buffers(path, e->ps, &full)
                                      : qt_checkpoint_load(path, e->ps, &full, cs);
    if (st == QT_OK) {
        memcpy(e->opt.m, full.m + e->opt.lo, e->opt.n * sizeof(float));
        memcpy(e->opt.v, full.v + e->opt.lo, e->opt.n * sizeof(float));
        e->opt.step = full.step;
    }
    qt_adamw_free(&full);
    return st;
}

qt_status qt_trainables_load(qt_trainables *ts, const char *path, long seed, qt_ckpt_state *cs) {
    qt_status st = QT_OK;
    for (int i = 0; i < ts->n && st == QT_OK; i++) { /* /params first: it has the state */
        qt_trained_set *e = &ts->sets[i];
        if (e->group != QT_GROUP_PARAMS) continue;
        st = e->zero ? load_slice(path, e, cs) : qt_checkpoint_load(path, e->ps, &e->opt, cs);
    }
    if (st == QT_OK && cs->seed != seed)
        st = QT_ERROR(QT_EINVAL, "%s: checkpoint was trained with seed %ld, the recipe says %ld",
                      path, cs->seed, seed);
    for (int i = 0; i < ts->n && st == QT_OK; i++) {
        qt_trained_set *e = &ts->sets[i];
        if (e->group != QT_GROUP_BUFFERS) continue;
        st = e->zero ? load_slice(path, e, NULL)
                     : qt_checkpoint_load_buffers(path, e->ps, e->opt.m ? &e->opt : NULL);
    }
    /* QLoRA: the checkpoint's base (the dequantized NF4) went back into the released
     * f32 copies; the NF4 already holds it */
    if (st == QT_OK && ts->hold_frozen) st = ts->hold_frozen(ts, false);
    return st;
}
