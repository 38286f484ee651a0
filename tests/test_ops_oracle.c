/*
 * test_ops_oracle.c - every op's forward and backward against PyTorch.
 *
 * Fixture: tests/fixtures/ops.safetensors, written by gen_autograd_fixtures.py (next to
 * it). Each case <name> holds inputs <name>.in0.. (f32, or i32 ids/targets), an upstream
 * gradient <name>.dy, the output <name>.y and, for each f32 input i, <name>.g<i> =
 * d(sum(y*dy))/d(in_i) from torch autograd. A scalar output is stored as shape [1]. The
 * fixture's "cases" metadata lists every case; the table below says which qtrain op
 * (and which transpose flags, axis, eps, ...) each one runs, mirroring the generator.
 * A case in the file with no entry here, or an entry with no case in the file, fails.
 *
 * Tolerance, forward and backward alike, elementwise: |got - want| <= 1e-5 + 1e-4*|want|.
 * The reference is float64 rounded to float32, so this budget is the engine's float32
 * error alone. The largest reductions here (attention over up to 150 keys, matmul,
 * norms over 33) stay well inside it: the worst element of any case used under 5% of
 * the budget when the fixtures were made. No case gets a wider one.
 *
 * Also here, because torch cannot be the oracle for them: the sticky error path (a
 * shape-mismatched matmul poisons the context until qt_ctx_reset), dropout (its mask is
 * qtrain's own counter-based RNG), and cross-entropy with every target ignored (qtrain
 * defines the loss as 0 where torch gives NaN).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qt_autograd.h"
#include "qt_formats.h"
#include "testutil.h"

/* ------------------------------------------------------------------ the cases ---- */

typedef struct oracle_case oracle_case;
/* Runs the op on the case's inputs; NULL on failure (the context says why). */
typedef qt_tensor *(*case_fn)(qt_ctx *ctx, qt_tensor **in, int n_in, const oracle_case *c);

struct oracle_case {
    const char *name;
    case_fn run;
    int64_t i[4]; /* integer parameters: transpose flags, axis, shape, perm, ... */
    float f;      /* float parameter: scale, eps, theta, ... */
};

static qt_tensor *run_matmul(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_matmul(ctx, in[0], in[1], c->i[0] != 0, c->i[1] != 0);
}
static qt_tensor *run_add(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_add(ctx, in[0], in[1]);
}
static qt_tensor *run_sub(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_sub(ctx, in[0], in[1]);
}
static qt_tensor *run_mul(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_mul(ctx, in[0], in[1]);
}
static qt_tensor *run_div(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_div(ctx, in[0], in[1]);
}
static qt_tensor *run_scale(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_scale(ctx, in[0], c->f);
}
static qt_tensor *run_sum(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_sum(ctx, in[0], (int)c->i[0]);
}
static qt_tensor *run_mean(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_mean(ctx, in[0], (int)c->i[0]);
}
/* i[0] = ndim, i[1..ndim] = the new shape (ndim <= 3); run_reshape4: i = a 4-D shape. */
static qt_tensor *run_reshape(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_reshape(ctx, in[0], (int)c->i[0], &c->i[1]);
}
static qt_tensor *run_reshape4(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_reshape(ctx, in[0], 4, c->i);
}
static qt_tensor *run_permute(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    int perm[QT_MAX_DIMS];
    for (int d = 0; d < QT_MAX_DIMS; d++) perm[d] = (int)c->i[d];
    return qt_permute(ctx, in[0], perm);
}
static qt_tensor *run_transpose(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_transpose(ctx, in[0], (int)c->i[0], (int)c->i[1]);
}
static qt_tensor *run_embedding(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_embedding(ctx, in[0], in[1]);
}
static qt_tensor *run_rmsnorm(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_rmsnorm(ctx, in[0], in[1], c->f);
}
static qt_tensor *run_layernorm(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_layernorm(ctx, in[0], in[1], n > 2 ? in[2] : NULL, c->f);
}
static qt_tensor *run_softmax(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_softmax(ctx, in[0]);
}
static qt_tensor *run_attention(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_attention(ctx, in[0], in[1], in[2], c->f);
}
static qt_tensor *run_rope(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_rope(ctx, in[0], c->f, c->i[0]);
}
static qt_tensor *run_silu(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_silu(ctx, in[0]);
}
static qt_tensor *run_gelu(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_gelu(ctx, in[0]);
}
static qt_tensor *run_swiglu(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_swiglu(ctx, in[0], in[1]);
}
static qt_tensor *run_ce(qt_ctx *ctx, qt_tensor **in, int n, const oracle_case *c) {
    return qt_cross_entropy(ctx, in[0], in[1], (int32_t)c->i[0]);
}

#define BIN(op)                                                                     \
    {#op "_eq", run_##op, {0}, 0}, {#op "_bc1", run_##op, {0}, 0},                  \
        {#op "_bc2", run_##op, {0}, 0}, {#op "_bcrev", run_##op, {0}, 0},           \
        {#op "_bc4", run_##op, {0}, 0}

/* Mirrors gen_ops() in gen_autograd_fixtures.py, case by case. */
static const oracle_case CASES[] = {
    /* matmul: i = {ta, tb} */
    {"matmul_nn", run_matmul, {0, 0}, 0},
    {"matmul_nt", run_matmul, {0, 1}, 0},
    {"matmul_tn", run_matmul, {1, 0}, 0},
    {"matmul_tt", run_matmul, {1, 1}, 0},
    {"bmm3_nn", run_matmul, {0, 0}, 0},
    {"bmm3_tt", run_matmul, {1, 1}, 0},
    {"bmm4_nt", run_matmul, {0, 1}, 0},
    {"bmm4_tn", run_matmul, {1, 0}, 0},
    {"linear3_nt", run_matmul, {0, 1}, 0},
    {"linear3_nn", run_matmul, {0, 0}, 0},
    {"linear4_nt", run_matmul, {0, 1}, 0},
    {"linear3_tn", run_matmul, {1, 0}, 0},
    BIN(add),
    BIN(sub),
    BIN(mul),
    BIN(div),
    {"scale", run_scale, {0}, -0.37f},
    /* reductions: i[0] = axis */
    {"sum_ax0", run_sum, {0}, 0},
    {"sum_ax1", run_sum, {1}, 0},
    {"sum_axm1", run_sum, {-1}, 0},
    {"sum_ax2", run_sum, {2}, 0},
    {"sum_all", run_sum, {QT_AXIS_ALL}, 0},
    {"mean_ax0", run_mean, {0}, 0},
    {"mean_ax1", run_mean, {1}, 0},
    {"mean_axm1", run_mean, {-1}, 0},
    {"mean_ax2", run_mean, {2}, 0},
    {"mean_all", run_mean, {QT_AXIS_ALL}, 0},
    {"mean_ax1_4d", run_mean, {1}, 0},
    /* reshape: {ndim, dims...} / the 4 dims; permute: perm; transpose: d0, d1 */
    {"reshape", run_reshape, {2, 4, -1}, 0},
    {"reshape_4d", run_reshape4, {2, 2, 3, 2}, 0},
    {"permute_0213", run_permute, {0, 2, 1, 3}, 0},
    {"permute_3012", run_permute, {3, 0, 1, 2}, 0},
    {"permute_201", run_permute, {2, 0, 1}, 0},
    {"transpose_02", run_transpose, {0, 2}, 0},
    {"transpose_m1m2", run_transpose, {-1, -2}, 0},
    {"embedding", run_embedding, {0}, 0},
    {"embedding_3d", run_embedding, {0}, 0},
    {"embedding_1d", run_embedding, {0}, 0},
    /* norms: f = eps */
    {"rmsnorm", run_rmsnorm, {0}, 1e-5f},
    {"rmsnorm_2d", run_rmsnorm, {0}, 1e-5f},
    {"layernorm", run_layernorm, {0}, 1e-5f},
    {"layernorm_nobias", run_layernorm, {0}, 1e-5f},
    {"softmax", run_softmax, {0}, 0},
    {"softmax_2d", run_softmax, {0}, 0},
    /* attention: f = scale (0 = 1/sqrt(D)) */
    {"attn_gqa", run_attention, {0}, 0},
    {"attn_mha", run_attention, {0}, 0},
    {"attn_tk", run_attention, {0}, 0},
    {"attn_scale", run_attention, {0}, 0.2f},
    {"attn_long", run_attention, {0}, 0},
    {"attn_long_tk", run_attention, {0}, 0},
    /* rope: f = theta, i[0] = pos0 */
    {"rope", run_rope, {0}, 10000.0f},
    {"rope_pos3", run_rope, {3}, 500000.0f},
    {"rope_3d", run_rope, {0}, 10000.0f},
    {"silu", run_silu, {0}, 0},
    {"gelu", run_gelu, {0}, 0},
    {"swiglu", run_swiglu, {0}, 0},
    /* cross-entropy: i[0] = ignore_index */
    {"ce_2d", run_ce, {-100}, 0},
    {"ce_3d", run_ce, {-100}, 0},
    {"ce_3d_v50", run_ce, {-100}, 0},
};
#define N_CASES ((int)(sizeof CASES / sizeof CASES[0]))

/* ---------------------------------------------------------------- comparison ---- */

/* Inputs per case: attention and layernorm take three. */
#define MAX_IN 4

#define ATOL 1e-5
#define RTOL 1e-4

/* Fixture data are aligned only as the file's offsets allow: copy out, never cast. */
static float *f32_copy(const qt_st_tensor *t) {
    float *p = malloc(t->nbytes ? t->nbytes : 1);
    if (p) memcpy(p, t->data, t->nbytes);
    return p;
}

static int64_t st_numel(const qt_st_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

static void st_shape_str(const qt_st_tensor *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)t->shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* Compares `got` (n floats) against fixture tensor `want` elementwise. */
static void compare(const char *what, const float *got, int64_t n, const qt_st_tensor *want) {
    if (!got) {
        qt_check_case(false, what, "no values (grad is NULL)");
        return;
    }
    if (want->dtype != QT_F32 || st_numel(want) != n) {
        qt_check_case(false, what, "fixture has %lld elements of %s, engine %lld",
              (long long)st_numel(want), qt_dtype_name(want->dtype), (long long)n);
        return;
    }
    float *w = f32_copy(want);
    if (!w) {
        qt_check_case(false, what, "out of memory");
        return;
    }
    int64_t bad = 0, worst = -1;
    double worst_excess = -1;
    for (int64_t i = 0; i < n; i++) {
        double a = got[i], b = w[i];
        double lim = ATOL + RTOL * fabs(b), err = fabs(a - b);
        if (!(err <= lim)) { /* NaN fails too */
            bad++;
            double ex = isnan(err) ? INFINITY : err / lim;
            if (ex > worst_excess) worst_excess = ex, worst = i;
        }
    }
    if (bad)
        qt_check_case(false, what, "%lld of %lld elements out of tolerance; worst [%lld] got %.9g "
              "want %.9g", (long long)bad, (long long)n, (long long)worst, got[worst], w[worst]);
    else
        qt_check_case(true, what, "ok");
    free(w);
}

static const oracle_case *find_case(const char *name) {
    for (int i = 0; i < N_CASES; i++)
        if (!strcmp(CASES[i].name, name)) return &CASES[i];
    return NULL;
}

static const qt_st_tensor *get(const qt_safetensors *st, const char *c, const char *suffix) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", c, suffix);
    return qt_safetensors_get(st, key);
}

static void run_case(qt_ctx *ctx, const qt_safetensors *st, const oracle_case *c) {
    qt_ctx_reset(ctx);
    qt_tensor *in[MAX_IN] = {0};
    int n_in = 0;
    char what[160];
    for (; n_in < MAX_IN; n_in++) {
        char suffix[16];
        snprintf(suffix, sizeof suffix, "in%d", n_in);
        const qt_st_tensor *t = get(st, c->name, suffix);
        if (!t) break;
        in[n_in] = qt_tensor_from(ctx, t->dtype, t->ndim, t->shape, t->data);
        if (!in[n_in]) break;
        in[n_in]->requires_grad = t->dtype == QT_F32;
    }
    const qt_st_tensor *ty = get(st, c->name, "y"), *tdy = get(st, c->name, "dy");
    snprintf(what, sizeof what, "%s: fixture", c->name);
    if (n_in == 0 || !ty || !tdy || qt_ctx_status(ctx) != QT_OK) {
        qt_check_case(false, what, "inputs, y or dy missing or unreadable (%s)", qt_ctx_error(ctx));
        return;
    }

    qt_tensor *y = c->run(ctx, in, n_in, c);
    snprintf(what, sizeof what, "%s: forward", c->name);
    if (!y) {
        qt_check_case(false, what, "op returned NULL: %s", qt_ctx_error(ctx));
        return;
    }
    if (y->dtype != QT_F32) {
        qt_check_case(false, what, "output dtype %s, want f32", qt_dtype_name(y->dtype));
        return;
    }
    /* A scalar is [1] in the fixture and ndim 0 in qtrain. */
    bool scalar_ok = ty->ndim == 1 && ty->shape[0] == 1 && y->ndim == 0;
    bool shape_ok = y->ndim == ty->ndim;
    for (int d = 0; shape_ok && d < y->ndim; d++) shape_ok = y->shape[d] == ty->shape[d];
    if (!scalar_ok && !shape_ok) {
        char a[64], b[64];
        qt_shape_str(y, a, sizeof a);
        st_shape_str(ty, b, sizeof b);
        qt_check_case(false, what, "output shape %s, torch %s", a, b);
        return;
    }
    snprintf(what, sizeof what, "%s: y", c->name);
    compare(what, (const float *)y->data, qt_numel(y), ty);

    float *dy = f32_copy(tdy);
    if (!dy || st_numel(tdy) != qt_numel(y)) {
        qt_check_case(false, what, "dy has %lld elements, y %lld", (long long)st_numel(tdy),
              (long long)qt_numel(y));
        free(dy);
        return;
    }
    qt_status s = qt_backward_from(ctx, y, dy);
    free(dy);
    snprintf(what, sizeof what, "%s: backward", c->name);
    if (s != QT_OK) {
        qt_check_case(false, what, "qt_backward_from: %s: %s", qt_status_str(s), qt_ctx_error(ctx));
        return;
    }
    for (int i = 0; i < n_in; i++) {
        char suffix[16];
        snprintf(suffix, sizeof suffix, "g%d", i);
        const qt_st_tensor *tg = get(st, c->name, suffix);
        snprintf(what, sizeof what, "%s: %s", c->name, suffix);
        if (in[i]->dtype != QT_F32) {
            qt_check_case(!tg, what, "fixture has a gradient for an integer input");
            continue;
        }
        if (!tg) {
            qt_check_case(false, what, "missing in the fixture");
            continue;
        }
        compare(what, in[i]->grad, qt_numel(in[i]), tg);
    }
}

/* Every case the fixture lists runs; every case in the table is in the fixture. */
static void run_oracle(qt_ctx *ctx) {
    const char *path = QT_FIXTURES "/ops.safetensors";
    qt_safetensors *st = NULL;
    qt_status s = qt_safetensors_open(path, &st);
    qt_check_case(s == QT_OK, "open ops.safetensors", "%s: %s", qt_status_str(s), qt_error_message());
    if (s != QT_OK) return;
    const char *list = qt_safetensors_meta(st, "cases");
    qt_check_case(list != NULL, "ops.safetensors", "no \"cases\" metadata");
    if (!list) {
        qt_safetensors_close(st);
        return;
    }
    bool seen[N_CASES] = {0};
    int n_file = 0;
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        char name[96];
        snprintf(name, sizeof name, "%.*s", (int)len, p);
        p += len + (p[len] == ',');
        n_file++;
        const oracle_case *c = find_case(name);
        if (!c) {
            qt_check_case(false, name, "case in the fixture has no entry in CASES");
            continue;
        }
        seen[c - CASES] = true;
        run_case(ctx, st, c);
    }
    for (int i = 0; i < N_CASES; i++)
        qt_check_case(seen[i], CASES[i].name, "case in CASES is not in the fixture");
    printf("ops oracle: %d cases in the fixture\n", n_file);
    qt_safetensors_close(st);
}

/* --------------------------------------------------------------- sticky error ---- */

static void test_sticky_error(qt_ctx *ctx) {
    qt_ctx_reset(ctx);
    float buf[20];
    for (int i = 0; i < 20; i++) buf[i] = 0.25f * (float)(i + 1);
    qt_tensor *a = qt_tensor_from(ctx, QT_F32, 2, (int64_t[]){2, 3}, buf);
    qt_tensor *b = qt_tensor_from(ctx, QT_F32, 2, (int64_t[]){4, 5}, buf); /* K 3 vs 4 */
    qt_tensor *c = qt_tensor_from(ctx, QT_F32, 2, (int64_t[]){2, 3}, buf);
    qt_check_case(a && b && c && qt_ctx_status(ctx) == QT_OK, "sticky: setup", "%s", qt_ctx_error(ctx));
    if (!a || !b || !c) return;
    qt_tensor *m = qt_matmul(ctx, a, b, false, false);
    qt_check_case(m == NULL, "sticky: bad matmul", "(2,3)@(4,5) did not return NULL");
    qt_check_case(qt_ctx_status(ctx) != QT_OK, "sticky: status", "still QT_OK after a failed matmul");
    const char *msg = qt_ctx_error(ctx);
    qt_check_case(msg && msg[0], "sticky: message", "empty");
    qt_tensor *later = qt_add(ctx, a, c); /* valid on its own */
    qt_check_case(later == NULL, "sticky: later op", "a valid add after the failure returned a tensor");
    qt_check_case(qt_ctx_status(ctx) != QT_OK, "sticky: stays", "status cleared by a later op");
    qt_ctx_reset(ctx);
    qt_check_case(qt_ctx_status(ctx) == QT_OK, "sticky: reset", "qt_ctx_reset left %s",
          qt_status_str(qt_ctx_status(ctx)));
    a = qt_tensor_from(ctx, QT_F32, 2, (int64_t[]){2, 3}, buf);
    c = qt_tensor_from(ctx, QT_F32, 2, (int64_t[]){2, 3}, buf);
    qt_check_case(a && c && qt_add(ctx, a, c) != NULL, "sticky: after reset", "add failed: %s",
          qt_ctx_error(ctx));
}

/* -------------------------------------------------------------------- dropout ---- */

/* Kept values must be x scaled by 1/(1-p) with nothing else mixed in. Both usual
 * float32 spellings, x / (1-p) and x * (1/(1-p)), are accepted bit for bit (they can
 * differ in the last place); anything else is a failure. */
static bool scaled_exactly(float got, float x, float keep) {
    return got == x / keep || got == x * (1.0f / keep);
}

static void test_dropout(qt_ctx *ctx) {
    enum { N = 100000 };
    const float p = 0.3f, keep = 1.0f - p;
    const uint64_t seed = 20240601;
    qt_ctx_reset(ctx);
    float *x = malloc(N * sizeof *x), *dy = malloc(N * sizeof *dy);
    float *y1 = malloc(N * sizeof *y1);
    if (!x || !dy || !y1) {
        qt_check_case(false, "dropout", "out of memory");
        free(x), free(dy), free(y1);
        return;
    }
    for (int i = 0; i < N; i++) {
        float u = qt_rand_uniform(99, (uint64_t)i);
        x[i] = (u < 0.5f ? -1.0f : 1.0f) * (0.5f + u); /* never zero: a zero marks a drop */
        dy[i] = qt_rand_normal(98, (uint64_t)i);
    }
    int64_t shape[2] = {N / 100, 100};
    qt_tensor *tx = qt_tensor_from(ctx, QT_F32, 2, shape, x);
    if (tx) tx->requires_grad = true;
    qt_tensor *ty = qt_dropout(ctx, tx, p, seed);
    qt_check_case(ty != NULL, "dropout: forward", "NULL: %s", qt_ctx_error(ctx));
    if (!ty) goto out;
    const float *y = ty->data;
    int64_t kept = 0, bad_val = 0, first_bad = -1;
    for (int i = 0; i < N; i++) {
        if (y[i] != 0.0f) {
            kept++;
            if (!scaled_exactly(y[i], x[i], keep) && bad_val++ == 0) first_bad = i;
        }
    }
    double frac = (double)kept / N;
    qt_check_case(fabs(frac - 0.7) <= 0.01, "dropout: kept fraction", "%.4f, want 0.7 +- 0.01", frac);
    qt_check_case(bad_val == 0, "dropout: kept values", "%lld not x/(1-p); first [%lld] x %.9g y %.9g",
          (long long)bad_val, (long long)first_bad, first_bad >= 0 ? x[first_bad] : 0.0,
          first_bad >= 0 ? y[first_bad] : 0.0);
    memcpy(y1, y, N * sizeof *y1);

    /* backward: dx = dy * mask / (1-p) */
    qt_status s = qt_backward_from(ctx, ty, dy);
    qt_check_case(s == QT_OK && tx->grad, "dropout: backward", "%s: %s", qt_status_str(s),
          qt_ctx_error(ctx));
    if (s == QT_OK && tx->grad) {
        int64_t bad_g = 0, fb = -1;
        for (int i = 0; i < N; i++) {
            bool ok = y1[i] != 0.0f ? scaled_exactly(tx->grad[i], dy[i], keep)
                                    : tx->grad[i] == 0.0f;
            if (!ok && bad_g++ == 0) fb = i;
        }
        qt_check_case(bad_g == 0, "dropout: grad", "%lld elements not dy*mask/(1-p); first [%lld] "
              "dy %.9g grad %.9g kept %d", (long long)bad_g, (long long)fb,
              fb >= 0 ? dy[fb] : 0.0, fb >= 0 ? tx->grad[fb] : 0.0, fb >= 0 && y1[fb] != 0);
    }

    /* same seed, same mask (also on another thread count); another seed, another mask */
    qt_ctx_reset(ctx);
    int threads = qt_get_num_threads();
    qt_set_num_threads(threads > 1 ? 1 : 2);
    tx = qt_tensor_from(ctx, QT_F32, 2, shape, x);
    qt_tensor *ty2 = qt_dropout(ctx, tx, p, seed);
    qt_tensor *ty3 = qt_dropout(ctx, tx, p, seed + 1);
    qt_set_num_threads(threads);
    qt_check_case(ty2 && ty3, "dropout: rerun", "NULL: %s", qt_ctx_error(ctx));
    if (ty2 && ty3) {
        qt_check_case(!memcmp(ty2->data, y1, N * sizeof *y1), "dropout: same seed",
              "a second run with the same seed (and another thread count) differs");
        int64_t differ = 0;
        const float *y3 = ty3->data;
        for (int i = 0; i < N; i++) differ += (y3[i] != 0.0f) != (y1[i] != 0.0f);
        /* independent masks disagree on 2 p (1-p) = 42% of elements */
        qt_check_case(fabs((double)differ / N - 0.42) < 0.02, "dropout: other seed",
              "masks differ on %.4f of elements, want about 0.42", (double)differ / N);
    }

    /* p = 0: x unchanged */
    qt_tensor *t0 = qt_dropout(ctx, tx, 0.0f, seed);
    qt_check_case(t0 && !memcmp(t0->data, x, N * sizeof *x), "dropout: p=0",
          "did not return the input unchanged (%s)", t0 ? "values differ" : qt_ctx_error(ctx));
out:
    free(x), free(dy), free(y1);
}

/* ---------------------------------------------- cross-entropy, all ignored ---- */

static void test_ce_all_ignored(qt_ctx *ctx) {
    qt_ctx_reset(ctx);
    float logits[12];
    for (int i = 0; i < 12; i++) logits[i] = qt_rand_normal(5, (uint64_t)i);
    int32_t targets[3] = {-100, -100, -100};
    qt_tensor *tl = qt_tensor_from(ctx, QT_F32, 2, (int64_t[]){3, 4}, logits);
    qt_tensor *tt = qt_tensor_from(ctx, QT_I32, 1, (int64_t[]){3}, targets);
    if (tl) tl->requires_grad = true;
    qt_tensor *loss = qt_cross_entropy(ctx, tl, tt, -100);
    qt_check_case(loss && ((float *)loss->data)[0] == 0.0f, "ce all ignored: loss",
          "want 0, got %s", loss ? "non-zero" : qt_ctx_error(ctx));
    if (!loss) return;
    qt_status s = qt_backward(ctx, loss);
    bool zero = s == QT_OK && tl->grad;
    for (int i = 0; zero && i < 12; i++) zero = tl->grad[i] == 0.0f;
    qt_check_case(zero, "ce all ignored: grad", "want all zero (%s)", qt_status_str(s));
}

int main(void) {
    qt_ctx *ctx = qt_ctx_new();
    if (!ctx) {
        qt_check_case(false, "qt_ctx_new", "cannot create a context");
        return qt_test_finish("test_ops_oracle");
    }
    run_oracle(ctx);
    test_sticky_error(ctx);
    test_dropout(ctx);
    test_ce_all_ignored(ctx);
    qt_ctx_free(ctx);
    return qt_test_finish("test_ops_oracle");
}
