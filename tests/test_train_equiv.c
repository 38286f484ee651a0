/*
 * test_train_equiv.c - 200 training steps in qtrain against the same 200 in PyTorch.
 *
 * Fixtures (tests/fixtures/gen_autograd_fixtures.py): initial weights, each step's batch,
 * and torch's loss at each step before that step's update, for
 *   train_mlp.safetensors   x (8,16) -> Linear(16,32) -> gelu(tanh) -> Linear(32,10) -> CE,
 *                           built here straight from ops, biases registered NO_DECAY;
 *   train_attn.safetensors  a 1-layer Llama (vocab 64, dim 32, 4 heads, 2 kv heads, ffn 64)
 *                           through qt_llama_init / qt_llama_forward, fixture weights copied
 *                           in by name; norms must be NO_DECAY, 2-D weights decayed.
 * Both train with torch.optim.AdamW (single-tensor), hyperparameters read from the
 * fixture's __metadata__ so the two sides cannot drift.
 *
 * Tolerance: |loss - torch| <= 1e-4 |torch| at every step. A float64 run of the same
 * torch script stays within 2.5e-6 of the float32 fixture over all 200 steps (measured
 * when the fixtures were made), so float32 rounding alone leaves a 40x margin; a wrong
 * gradient, update rule or decay mask shows up well above it within a few steps.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qt_autograd.h"
#include "qt_formats.h"
#include "qt_layers.h"
#include "qt_optim.h"
#include "testutil.h"

#define REL_TOL 1e-4

/* A __metadata__ number; false (and a failed check) when absent or not a number. */
static bool meta_num(const qt_safetensors *st, const char *file, const char *key, double *out) {
    const char *v = qt_safetensors_meta(st, key);
    char *end = NULL;
    if (v) *out = strtod(v, &end);
    bool ok = v && end != v && *end == '\0';
    qt_check_case(ok, file, "__metadata__ \"%s\" should be a number, got %s", key, v ? v : "(absent)");
    return ok;
}

/* The optimizer's side of a fixture's __metadata__ (and its step count). */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay, steps;
} adamw_meta;

static bool read_adamw_meta(const qt_safetensors *st, const char *file, adamw_meta *h) {
    int ok = 1; /* every key is read, so each missing one is reported */
    ok &= meta_num(st, file, "lr", &h->lr);
    ok &= meta_num(st, file, "beta1", &h->beta1);
    ok &= meta_num(st, file, "beta2", &h->beta2);
    ok &= meta_num(st, file, "eps", &h->eps);
    ok &= meta_num(st, file, "weight_decay", &h->weight_decay);
    ok &= meta_num(st, file, "steps", &h->steps);
    return ok;
}

/* Fixture tensor `name`, required to be `dtype` with `numel` elements. */
static const qt_st_tensor *need(const qt_safetensors *st, const char *file, const char *name,
                                qt_dtype dtype, int64_t numel) {
    const qt_st_tensor *t = qt_safetensors_get(st, name);
    int64_t n = 1;
    if (t)
        for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    bool ok = t && t->dtype == dtype && n == numel;
    qt_check_case(ok, file, "tensor %s: want %s with %lld elements, got %s", name, qt_dtype_name(dtype),
          (long long)numel, t ? qt_dtype_name(t->dtype) : "(absent)");
    return ok ? t : NULL;
}

/* Copies the fixture's value of every parameter of `ps` into it, by name and shape. */
static bool load_params(qt_paramset *ps, const qt_safetensors *st, const char *file) {
    bool ok = true;
    for (int i = 0; i < ps->n; i++) {
        qt_tensor *p = ps->params[i];
        const qt_st_tensor *t = qt_safetensors_get(st, p->name);
        bool same = t && t->dtype == QT_F32 && t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
        if (!same) {
            char buf[64];
            qt_check_case(false, file, "parameter %s %s has no fixture tensor of that shape", p->name,
                  qt_shape_str(p, buf, sizeof buf));
            ok = false;
            continue;
        }
        memcpy(p->data, t->data, t->nbytes);
    }
    return ok;
}

/* Step-by-step loss comparison: one check per model, the worst step always printed. */
typedef struct {
    const char *model;
    const float *want; /* (steps) */
    int steps, done, n_bad, first_bad, worst;
    double worst_rel;
} loss_track;

static void track(loss_track *t, int s, float got) {
    double want = t->want[s];
    double rel = fabs((double)got - want) / fabs(want);
    if (isnan(rel)) rel = INFINITY;
    if (rel > t->worst_rel || t->worst < 0) t->worst_rel = rel, t->worst = s;
    if (!(rel <= REL_TOL) && t->n_bad++ == 0) {
        t->first_bad = s;
        printf("%s: first step off: %d, loss %.7f, torch %.7f (rel %.2e)\n", t->model, s, got,
               want, rel);
    }
    t->done = s + 1;
}

static void track_report(const loss_track *t) {
    if (t->worst >= 0)
        printf("%s: worst step %d of %d, rel diff %.3e (loss %.7f -> %.7f in torch)\n",
               t->model, t->worst, t->done, t->worst_rel, t->want[0], t->want[t->steps - 1]);
    qt_check_case(t->done == t->steps, t->model, "stopped after %d of %d steps", t->done, t->steps);
    qt_check_case(t->n_bad == 0, t->model, "%d steps off by more than %.0e relative, first at step %d",
          t->n_bad, REL_TOL, t->first_bad);
}

static float *copy_f32(const qt_st_tensor *t) {
    float *p = malloc(t->nbytes);
    if (p) memcpy(p, t->data, t->nbytes);
    return p;
}

/* ------------------------------------------------------------------------ MLP ---- */

static void test_mlp(qt_ctx *ctx) {
    const char *file = "train_mlp.safetensors";
    qt_safetensors *st = NULL;
    qt_status s = qt_safetensors_open(QT_FIXTURES "/train_mlp.safetensors", &st);
    qt_check_case(s == QT_OK, file, "open: %s", qt_error_message());
    if (s != QT_OK) return;

    enum { B = 8, D_IN = 16, D_H = 32, C = 10, STEPS = 200 };
    adamw_meta h = {0};
    bool ok = read_adamw_meta(st, file, &h);
    double steps = h.steps;
    qt_check_case(!ok || steps == STEPS, file, "%g steps, want %d", steps, STEPS);
    const qt_st_tensor *tx = need(st, file, "data.x", QT_F32, (int64_t)STEPS * B * D_IN);
    const qt_st_tensor *ty = need(st, file, "data.y", QT_I32, (int64_t)STEPS * B);
    const qt_st_tensor *tl = need(st, file, "losses", QT_F32, STEPS);
    if (!ok || steps != STEPS || !tx || !ty || !tl) {
        qt_safetensors_close(st);
        return;
    }

    qt_paramset ps;
    qt_paramset_init(&ps);
    qt_tensor *w1 = qt_paramset_add(&ps, "fc1.weight", 2, (int64_t[]){D_H, D_IN}, 0);
    qt_tensor *b1t = qt_paramset_add(&ps, "fc1.bias", 1, (int64_t[]){D_H}, QT_PARAM_NO_DECAY);
    qt_tensor *w2 = qt_paramset_add(&ps, "fc2.weight", 2, (int64_t[]){C, D_H}, 0);
    qt_tensor *b2t = qt_paramset_add(&ps, "fc2.bias", 1, (int64_t[]){C}, QT_PARAM_NO_DECAY);
    qt_adamw opt = {0};
    float *want = copy_f32(tl);
    loss_track t = {"mlp", want, STEPS, 0, 0, -1, -1, 0};
    ok = w1 && b1t && w2 && b2t && want && qt_paramset_alloc(&ps) == QT_OK;
    qt_check_case(ok, file, "paramset: %s", qt_error_message());
    if (ok) ok = load_params(&ps, st, file);
    if (ok) {
        qt_adamw_config cfg = {(float)h.lr, (float)h.beta1, (float)h.beta2, (float)h.eps,
                                (float)h.weight_decay};
        s = qt_adamw_init(&opt, &ps, cfg);
        qt_check_case(s == QT_OK, file, "qt_adamw_init: %s", qt_error_message());
        ok = s == QT_OK;
    }
    for (int step = 0; ok && step < STEPS; step++) {
        qt_ctx_reset(ctx);
        const char *xb = (const char *)tx->data + (size_t)step * B * D_IN * sizeof(float);
        const char *yb = (const char *)ty->data + (size_t)step * B * sizeof(int32_t);
        qt_tensor *x = qt_tensor_from(ctx, QT_F32, 2, (int64_t[]){B, D_IN}, xb);
        qt_tensor *y = qt_tensor_from(ctx, QT_I32, 1, (int64_t[]){B}, yb);
        qt_tensor *hid = qt_gelu(ctx, qt_add(ctx, qt_matmul(ctx, x, w1, false, true), b1t));
        qt_tensor *logits = qt_add(ctx, qt_matmul(ctx, hid, w2, false, true), b2t);
        qt_tensor *loss = qt_cross_entropy(ctx, logits, y, -100);
        if (!loss || (s = qt_backward(ctx, loss)) != QT_OK) {
            qt_check_case(false, "mlp", "step %d: %s", step, qt_ctx_error(ctx));
            break;
        }
        track(&t, step, ((const float *)loss->data)[0]);
        qt_adamw_step(&opt, &ps, (float)h.lr);
        qt_paramset_zero_grad(&ps);
    }
    if (ok) track_report(&t);
    qt_adamw_free(&opt);
    qt_paramset_free(&ps);
    free(want);
    qt_safetensors_close(st);
}

/* ------------------------------------------------------------ 1-layer Llama ---- */

static void test_attn(qt_ctx *ctx) {
    const char *file = "train_attn.safetensors";
    qt_safetensors *st = NULL;
    qt_status s = qt_safetensors_open(QT_FIXTURES "/train_attn.safetensors", &st);
    qt_check_case(s == QT_OK, file, "open: %s", qt_error_message());
    if (s != QT_OK) return;

    adamw_meta h = {0};
    double V = 0, dim = 0, nl = 0, nh = 0, nkv = 0, ffn = 0, theta = 0, neps = 0, B = 0, T = 0;
    int all = read_adamw_meta(st, file, &h);
    all &= meta_num(st, file, "vocab_size", &V);
    all &= meta_num(st, file, "dim", &dim);
    all &= meta_num(st, file, "n_layers", &nl);
    all &= meta_num(st, file, "n_heads", &nh);
    all &= meta_num(st, file, "n_kv_heads", &nkv);
    all &= meta_num(st, file, "ffn_dim", &ffn);
    all &= meta_num(st, file, "rope_theta", &theta);
    all &= meta_num(st, file, "norm_eps", &neps);
    all &= meta_num(st, file, "batch", &B);
    all &= meta_num(st, file, "seq_len", &T);
    bool ok = all;
    const char *tied = qt_safetensors_meta(st, "tied_embeddings");
    qt_check_case(tied && !strcmp(tied, "False"), file, "tied_embeddings should be False, got %s",
          tied ? tied : "(absent)");
    if (!ok) {
        qt_safetensors_close(st);
        return;
    }
    int n_steps = (int)h.steps, nb = (int)B, nt = (int)T;
    const qt_st_tensor *tids = need(st, file, "data.ids", QT_I32, (int64_t)n_steps * nb * nt);
    const qt_st_tensor *ttg = need(st, file, "data.targets", QT_I32, (int64_t)n_steps * nb * nt);
    const qt_st_tensor *tl = need(st, file, "losses", QT_F32, n_steps);
    if (!tids || !ttg || !tl) {
        qt_safetensors_close(st);
        return;
    }

    qt_llama_config cfg = {
        .vocab_size = (int)V, .dim = (int)dim, .n_layers = (int)nl, .n_heads = (int)nh,
        .n_kv_heads = (int)nkv, .ffn_dim = (int)ffn, .rope_theta = (float)theta,
        .norm_eps = (float)neps, .tied_embeddings = false};
    qt_llama m;
    memset(&m, 0, sizeof m);
    s = qt_llama_init(&m, &cfg, 1);
    qt_check_case(s == QT_OK, file, "qt_llama_init: %s: %s", qt_status_str(s), qt_error_message());
    if (s != QT_OK) {
        qt_safetensors_close(st);
        return;
    }
    ok = load_params(&m.params, st, file);

    /* Every fixture weight has a home in the model (so none is silently left at init),
     * and the decay mask is torch's: 1-D norms NO_DECAY, 2-D weights decayed. */
    int n_weights = 0;
    for (int i = 0; i < qt_safetensors_count(st); i++) {
        const char *name = qt_safetensors_at(st, i)->name;
        if (!strncmp(name, "data.", 5) || !strcmp(name, "losses")) continue;
        n_weights++;
        qt_check_case(qt_paramset_find(&m.params, name) != NULL, file,
              "fixture weight %s is not a parameter of qt_llama", name);
    }
    qt_check_case(n_weights == m.params.n, file, "fixture has %d weights, the model %d parameters",
          n_weights, m.params.n);
    for (int i = 0; i < m.params.n; i++) {
        qt_tensor *p = m.params.params[i];
        bool no_decay = (m.params.flags[i] & QT_PARAM_NO_DECAY) != 0;
        bool want_nd = p->ndim != 2;
        qt_check_case(no_decay == want_nd, "llama decay mask", "%s (%d-D) is %s, torch treats it as %s",
              p->name, p->ndim, no_decay ? "NO_DECAY" : "decayed",
              want_nd ? "no-decay" : "decayed");
        qt_check_case(!(m.params.flags[i] & QT_PARAM_FROZEN), "llama params", "%s is frozen", p->name);
    }

    qt_adamw opt = {0};
    float *want = copy_f32(tl);
    loss_track t = {"attn", want, n_steps, 0, 0, -1, -1, 0};
    ok = ok && want;
    if (ok) {
        qt_adamw_config acfg = {(float)h.lr, (float)h.beta1, (float)h.beta2, (float)h.eps,
                                (float)h.weight_decay};
        s = qt_adamw_init(&opt, &m.params, acfg);
        qt_check_case(s == QT_OK, file, "qt_adamw_init: %s", qt_error_message());
        ok = s == QT_OK;
    }
    for (int step = 0; ok && step < n_steps; step++) {
        qt_ctx_reset(ctx);
        size_t off = (size_t)step * nb * nt * sizeof(int32_t);
        qt_tensor *ids = qt_tensor_from(ctx, QT_I32, 2, (int64_t[]){nb, nt},
                                        (const char *)tids->data + off);
        qt_tensor *tg = qt_tensor_from(ctx, QT_I32, 2, (int64_t[]){nb, nt},
                                       (const char *)ttg->data + off);
        qt_tensor *logits = qt_llama_forward(ctx, &m, ids);
        qt_tensor *loss = qt_cross_entropy(ctx, logits, tg, -100);
        if (!loss || (s = qt_backward(ctx, loss)) != QT_OK) {
            qt_check_case(false, "attn", "step %d: %s", step, qt_ctx_error(ctx));
            break;
        }
        track(&t, step, ((const float *)loss->data)[0]);
        qt_adamw_step(&opt, &m.params, (float)h.lr);
        qt_paramset_zero_grad(&m.params);
    }
    if (ok) track_report(&t);
    qt_adamw_free(&opt);
    qt_llama_free(&m);
    free(want);
    qt_safetensors_close(st);
}

int main(void) {
    qt_ctx *ctx = qt_ctx_new();
    if (!ctx) {
        qt_check_case(false, "qt_ctx_new", "cannot create a context");
        return qt_test_finish("test_train_equiv");
    }
    test_mlp(ctx);
    test_attn(ctx);
    qt_ctx_free(ctx);
    return qt_test_finish("test_train_equiv");
}
