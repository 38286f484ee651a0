/*
 * test_engine.c - the engine's contracts other than op math: arena growth and reuse,
 * the sticky error, grad mode, gradient accumulation rules, views, paramsets, dtype
 * conversions, deterministic random numbers, and the Llama model's plumbing.
 */
#include <stdlib.h>
#include <string.h>

#include "qt_autograd.h"
#include "qt_layers.h"
#include "qt_optim.h"
#include "testutil.h"

static qt_tensor *randn(qt_ctx *ctx, int ndim, const int64_t *shape, uint64_t seed) {
    qt_tensor *t = qt_tensor_new(ctx, QT_F32, ndim, shape);
    for (int64_t i = 0; t && i < qt_numel(t); i++)
        ((float *)t->data)[i] = qt_rand_normal(seed, (uint64_t)i);
    return t;
}

static void test_arena(void) {
    qt_ctx *ctx = qt_ctx_new();
    int64_t big[1] = {3 << 20}; /* 12 MiB: more than the first chunk */
    for (int step = 0; step < 3; step++) {
        qt_ctx_reset(ctx);
        for (int i = 0; i < 4; i++) CHECK(qt_tensor_new(ctx, QT_F32, 1, big) != NULL, "alloc");
    }
    size_t held = qt_ctx_arena_bytes(ctx);
    CHECK(held >= 4 * (size_t)(12 << 20), "arena holds %zu bytes", held);
    for (int step = 0; step < 3; step++) {
        qt_ctx_reset(ctx);
        for (int i = 0; i < 4; i++) qt_tensor_new(ctx, QT_F32, 1, big);
        CHECK(qt_ctx_arena_bytes(ctx) == held, "steady steps must not grow the arena (%zu -> %zu)",
              held, qt_ctx_arena_bytes(ctx));
    }
    /* alignment */
    void *p = qt_ctx_alloc(ctx, 3), *q = qt_ctx_alloc(ctx, 5);
    CHECK(((uintptr_t)p % 64) == 0 && ((uintptr_t)q % 64) == 0, "64-byte aligned");
    qt_ctx_free(ctx);
}

static void test_sticky_error(void) {
    qt_ctx *ctx = qt_ctx_new();
    int64_t sa[2] = {2, 3}, sb[2] = {4, 5};
    qt_tensor *a = randn(ctx, 2, sa, 1), *b = randn(ctx, 2, sb, 2);
    qt_tensor *c = qt_matmul(ctx, a, b, false, false);
    CHECK(c == NULL, "mismatched matmul must fail");
    CHECK(qt_ctx_status(ctx) == QT_ESHAPE, "status ESHAPE, got %s",
          qt_status_str(qt_ctx_status(ctx)));
    CHECK(strstr(qt_ctx_error(ctx), "[2, 3]") && strstr(qt_ctx_error(ctx), "[4, 5]"),
          "message names both shapes: %s", qt_ctx_error(ctx));
    CHECK(strstr(qt_ctx_error(ctx), "ops_matmul.c:"), "message has file:line: %s",
          qt_ctx_error(ctx));
    CHECK(qt_add(ctx, a, a) == NULL, "ops after a failure return NULL");
    CHECK(qt_silu(ctx, NULL) == NULL, "NULL input is an error, not a crash");
    qt_ctx_reset(ctx);
    CHECK(qt_ctx_status(ctx) == QT_OK, "reset clears the error");
    /* bad ids and targets are errors, not out-of-bounds reads */
    int64_t sw[2] = {4, 3}, si[1] = {2};
    qt_tensor *w = randn(ctx, 2, sw, 3);
    int32_t bad[2] = {1, 4};
    CHECK(qt_embedding(ctx, w, qt_tensor_from(ctx, QT_I32, 1, si, bad)) == NULL &&
              qt_ctx_status(ctx) == QT_EINVAL,
          "embedding id out of range");
    qt_ctx_reset(ctx);
    int32_t badt[4] = {0, 3, -100, -5};
    int64_t sl[2] = {4, 3}, st[1] = {4};
    CHECK(qt_cross_entropy(ctx, randn(ctx, 2, sl, 4), qt_tensor_from(ctx, QT_I32, 1, st, badt),
                           -100) == NULL,
          "target out of range");
    qt_ctx_reset(ctx);
    CHECK(qt_dropout(ctx, randn(ctx, 2, sl, 4), 1.0f, 0) == NULL, "dropout p=1 rejected");
    qt_ctx_free(ctx);
}

static void test_grad_rules(void) {
    qt_ctx *ctx = qt_ctx_new();
    qt_paramset ps;
    qt_paramset_init(&ps);
    int64_t sw[2] = {3, 4}, sb[1] = {3};
    qt_tensor *W = qt_paramset_add(&ps, "w", 2, sw, 0);
    qt_tensor *bias = qt_paramset_add(&ps, "b", 1, sb, QT_PARAM_NO_DECAY);
    qt_tensor *frozen = qt_paramset_add(&ps, "f", 1, sb, QT_PARAM_FROZEN);
    CHECK(qt_paramset_add(&ps, "w", 2, sw, 0) == NULL, "duplicate name rejected");
    CHECK(qt_paramset_alloc(&ps) == QT_OK, "alloc");
    CHECK(ps.n_total == 18 && ps.n_grad == 15, "flat sizes %zu %zu", ps.n_total, ps.n_grad);
    CHECK((float *)bias->data == (float *)W->data + 12, "params are contiguous in one buffer");
    CHECK(frozen->grad == NULL && !frozen->requires_grad, "frozen param has no grad");
    CHECK(qt_paramset_find(&ps, "b") == bias, "find by name");
    for (int i = 0; i < 12; i++) ((float *)W->data)[i] = 0.1f * (float)i;

    int64_t sx[2] = {2, 4};
    float gsum1[12];
    for (int rep = 0; rep < 2; rep++) {
        qt_ctx_reset(ctx);
        qt_tensor *x = randn(ctx, 2, sx, 5);
        qt_tensor *y = qt_add(ctx, qt_matmul(ctx, x, W, false, true), bias);
        y = qt_add(ctx, y, frozen); /* frozen params take part without a grad */
        qt_tensor *l = qt_sum(ctx, qt_mul(ctx, y, y), QT_AXIS_ALL);
        CHECK(qt_backward(ctx, l) == QT_OK, "backward: %s", qt_error_message());
        if (rep == 0) memcpy(gsum1, W->grad, sizeof gsum1);
    }
    bool doubled = true;
    for (int i = 0; i < 12; i++) doubled &= fabsf(W->grad[i] - 2 * gsum1[i]) <= 1e-5f * fabsf(gsum1[i]) + 1e-6f;
    CHECK(doubled, "two backward calls accumulate parameter grads");
    qt_paramset_zero_grad(&ps);
    CHECK(W->grad[0] == 0 && bias->grad[0] == 0, "zero_grad");

    /* fan-out: y = x*x + x -> dy/dx = 2x + 1, activation grads are fresh each backward */
    qt_ctx_reset(ctx);
    int64_t s1[1] = {3};
    qt_tensor *x = randn(ctx, 1, s1, 9);
    x->requires_grad = true;
    qt_tensor *y = qt_sum(ctx, qt_add(ctx, qt_mul(ctx, x, x), x), QT_AXIS_ALL);
    CHECK(qt_backward(ctx, y) == QT_OK, "backward");
    bool ok = true;
    for (int i = 0; i < 3; i++)
        ok &= fabsf(x->grad[i] - (2 * ((float *)x->data)[i] + 1)) < 1e-5f;
    CHECK(ok, "fan-out grads add up");

    /* no-grad mode records nothing; backward then refuses */
    qt_ctx_reset(ctx);
    bool prev = qt_ctx_set_grad_enabled(ctx, false);
    CHECK(prev, "grad mode on by default");
    qt_tensor *z = qt_sum(ctx, qt_matmul(ctx, randn(ctx, 2, sx, 1), W, false, true), QT_AXIS_ALL);
    CHECK(z && qt_ctx_tape_len(ctx) == 0 && !z->requires_grad, "no tape in no-grad mode");
    CHECK(qt_backward(ctx, z) == QT_ESTATE, "backward without tape is an error");
    qt_ctx_set_grad_enabled(ctx, true);

    /* reshape is a view: same data, no copy */
    qt_ctx_reset(ctx);
    qt_tensor *a = randn(ctx, 2, sx, 3);
    int64_t s8[1] = {8};
    qt_tensor *v = qt_reshape(ctx, a, 1, s8);
    CHECK(v && v->data == a->data, "reshape shares data");
    int64_t bad[1] = {7};
    CHECK(qt_reshape(ctx, a, 1, bad) == NULL, "reshape to a wrong count fails");

    qt_paramset_free(&ps);
    qt_ctx_free(ctx);
}

static void test_conversions(void) {
    CHECK(qt_f32_to_f16(1.0f) == 0x3c00, "f16 1.0");
    CHECK(qt_f32_to_f16(65504.0f) == 0x7bff, "f16 max");
    CHECK(qt_f32_to_f16(65520.0f) == 0x7c00, "f16 overflow to inf");
    CHECK(qt_f32_to_f16(65519.0f) == 0x7bff, "f16 just below the overflow threshold");
    CHECK(qt_f32_to_f16(ldexpf(1.0f, -24)) == 0x0001, "f16 smallest subnormal");
    CHECK(qt_f32_to_f16(ldexpf(1.0f, -25)) == 0x0000, "f16 half of smallest: ties to even (0)");
    CHECK(qt_f32_to_f16(ldexpf(3.0f, -25)) == 0x0002, "f16 1.5 ulp subnormal rounds to even (2)");
    CHECK(qt_f32_to_f16(-2.0f) == 0xc000, "f16 -2");
    CHECK(qt_f32_to_f16(1.0f + ldexpf(1.0f, -11)) == 0x3c00, "f16 tie to even (down)");
    CHECK(qt_f32_to_f16(1.0f + ldexpf(3.0f, -11)) == 0x3c02, "f16 tie to even (up)");
    CHECK(isnan(qt_f16_to_f32(qt_f32_to_f16(NAN))), "f16 NaN");
    CHECK(qt_f16_to_f32(0x0001) == ldexpf(1.0f, -24), "f16 subnormal decode");
    CHECK(qt_f16_to_f32(0x7bff) == 65504.0f, "f16 max decode");
    CHECK(qt_f32_to_bf16(1.0f) == 0x3f80, "bf16 1.0");
    CHECK(qt_f32_to_bf16(1.0f + ldexpf(1.0f, -8)) == 0x3f80, "bf16 tie to even (down)");
    CHECK(qt_f32_to_bf16(1.0f + ldexpf(3.0f, -8)) == 0x3f82, "bf16 tie to even (up)");
    CHECK(isnan(qt_bf16_to_f32(qt_f32_to_bf16(NAN))), "bf16 NaN stays NaN");
    CHECK(qt_bf16_to_f32(qt_f32_to_bf16(3.0e38f)) == INFINITY ||
              qt_bf16_to_f32(qt_f32_to_bf16(3.0e38f)) > 2.9e38f,
          "bf16 large values");
    /* exhaustive round trip of every finite f16 */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        if (qt_f32_to_f16(qt_f16_to_f32((uint16_t)h)) != h) bad++;
    }
    CHECK(bad == 0, "f16 round trip, %d mismatches", bad);
    CHECK(qt_dtype_size(QT_BF16) == 2 && qt_dtype_size(QT_I32) == 4 && qt_dtype_size(QT_U8) == 1,
          "dtype sizes");
}

static void test_rand(void) {
    CHECK(qt_rand_u64(1, 5) == qt_rand_u64(1, 5), "deterministic");
    CHECK(qt_rand_u64(1, 5) != qt_rand_u64(2, 5), "seed matters");
    double s = 0, ss = 0;
    int n = 200000;
    for (int i = 0; i < n; i++) {
        double v = qt_rand_normal(7, (uint64_t)i);
        s += v;
        ss += v * v;
    }
    CHECK(fabs(s / n) < 0.01 && fabs(ss / n - 1.0) < 0.02, "normal moments %g %g", s / n, ss / n);
}

static void test_llama(void) {
    qt_llama m;
    qt_llama_config bad = {.vocab_size = 10, .dim = 12, .n_layers = 1, .n_heads = 5,
                           .n_kv_heads = 1, .ffn_dim = 8, .rope_theta = 1e4f, .norm_eps = 1e-5f};
    CHECK(qt_llama_init(&m, &bad, 1) == QT_EINVAL, "dim not divisible by heads is rejected");
    qt_llama_config cfg = {.vocab_size = 11, .dim = 16, .n_layers = 2, .n_heads = 4,
                           .n_kv_heads = 2, .ffn_dim = 24, .rope_theta = 1e4f, .norm_eps = 1e-5f,
                           .tied_embeddings = true};
    CHECK(qt_llama_init(&m, &cfg, 1) == QT_OK, "init: %s", qt_error_message());
    CHECK(m.lm_head == m.embed && !qt_paramset_find(&m.params, "lm_head.weight"),
          "tied embeddings share the tensor");
    CHECK(qt_paramset_find(&m.params, "model.layers.1.mlp.down_proj.weight") != NULL, "HF names");
    qt_ctx *ctx = qt_ctx_new();
    int32_t ids[2 * 5] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    int64_t s[2] = {2, 5};
    float loss1 = 0;
    for (int rep = 0; rep < 2; rep++) {
        qt_ctx_reset(ctx);
        qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, s, ids);
        qt_tensor *logits = qt_llama_forward(ctx, &m, x);
        CHECK(logits && logits->ndim == 3 && logits->shape[2] == 11, "logits (B, T, V)");
        qt_tensor *l = qt_cross_entropy(ctx, logits, x, -100);
        CHECK(l && qt_backward(ctx, l) == QT_OK, "llama backward");
        if (rep == 0) loss1 = ((float *)l->data)[0];
        else CHECK(((float *)l->data)[0] == loss1, "same inputs, same loss bit for bit");
    }
    qt_ctx_reset(ctx);
    int64_t s1[1] = {10};
    CHECK(qt_llama_forward(ctx, &m, qt_tensor_from(ctx, QT_I32, 1, s1, ids)) == NULL &&
              qt_ctx_status(ctx) == QT_ESHAPE,
          "1-D ids rejected");
    qt_ctx_free(ctx);
    qt_llama_free(&m);

    qt_paramset ps;
    qt_paramset_init(&ps);
    int64_t s2[1] = {2};
    qt_paramset_add(&ps, "p", 1, s2, 0);
    qt_paramset_alloc(&ps);
    qt_adamw opt;
    qt_adamw_config oc = {.lr = 1e-3f, .beta1 = 1.0f, .beta2 = 0.9f, .eps = 1e-8f};
    CHECK(qt_adamw_init(&opt, &ps, oc) == QT_EINVAL, "beta1 = 1 rejected");
    qt_paramset_free(&ps);
}

/* The grad hook (data parallel's overlap): each parameter reached fires exactly once,
 * when its grad is final (the grad seen in the hook equals the one after backward, also
 * for a parameter read by two ops far apart), in the order backward finishes them; an
 * unused parameter, a frozen one and a non-parameter input never fire; a failing hook
 * stops backward with its status. */
typedef struct {
    qt_tensor *who[8];
    float grad[8][16];
    int n;
    bool fail;
} hook_log;

static qt_status log_hook(void *user, qt_tensor *p) {
    hook_log *h = user;
    if (h->fail) return QT_ERROR(QT_EIO, "hook says no");
    if (h->n < 8) {
        h->who[h->n] = p;
        memcpy(h->grad[h->n], p->grad, (size_t)qt_numel(p) * sizeof(float));
    }
    h->n++;
    return QT_OK;
}

static void test_grad_hook(void) {
    qt_ctx *ctx = qt_ctx_new();
    qt_paramset ps;
    qt_paramset_init(&ps);
    int64_t s44[2] = {4, 4}, s4[1] = {4};
    qt_tensor *A = qt_paramset_add(&ps, "a", 2, s44, 0);      /* first and last op */
    qt_tensor *Bm = qt_paramset_add(&ps, "b", 2, s44, 0);     /* the middle */
    qt_tensor *unused = qt_paramset_add(&ps, "u", 1, s4, 0);  /* never read */
    qt_tensor *frozen = qt_paramset_add(&ps, "f", 1, s4, QT_PARAM_FROZEN);
    CHECK(qt_paramset_alloc(&ps) == QT_OK, "alloc");
    for (int i = 0; i < 16; i++) {
        ((float *)A->data)[i] = 0.05f * (float)(i - 7);
        ((float *)Bm->data)[i] = 0.03f * (float)(i % 5 - 2);
    }
    int64_t sx[2] = {3, 4};
    hook_log h = {.n = 0};
    qt_ctx_set_grad_hook(ctx, log_hook, &h);
    qt_ctx_reset(ctx); /* the hook stays set across resets */
    qt_tensor *x = randn(ctx, 2, sx, 11);
    x->requires_grad = true; /* an input with a grad, not a parameter: no hook */
    qt_tensor *y = qt_matmul(ctx, x, A, false, true);
    y = qt_add(ctx, qt_matmul(ctx, y, Bm, false, true), frozen);
    y = qt_matmul(ctx, qt_silu(ctx, y), A, false, false); /* A again, transposed */
    qt_tensor *l = qt_sum(ctx, qt_mul(ctx, y, y), QT_AXIS_ALL);
    CHECK(qt_backward(ctx, l) == QT_OK, "backward with a hook: %s", qt_error_message());
    CHECK(h.n == 2, "two parameters reached, two hook calls (got %d)", h.n);
    CHECK(h.n >= 2 && h.who[0] == Bm && h.who[1] == A,
          "B (read once, mid-graph) finishes before A (read first and last)");
    for (int k = 0; k < 2 && k < h.n; k++)
        CHECK(!memcmp(h.grad[k], h.who[k]->grad, 16 * sizeof(float)),
              "%s: the grad seen by the hook is the final one", h.who[k]->name);
    (void)unused;

    /* a failing hook ends backward with its status; cleared, backward runs plain */
    qt_paramset_zero_grad(&ps);
    qt_ctx_reset(ctx);
    h.fail = true;
    l = qt_sum(ctx, qt_matmul(ctx, randn(ctx, 2, sx, 12), A, false, true), QT_AXIS_ALL);
    CHECK(qt_backward(ctx, l) == QT_EIO && strstr(qt_error_message(), "hook says no"),
          "a failing hook stops backward: %s", qt_error_message());
    qt_ctx_set_grad_hook(ctx, NULL, NULL);
    qt_ctx_reset(ctx);
    int before = h.n;
    l = qt_sum(ctx, qt_matmul(ctx, randn(ctx, 2, sx, 13), A, false, true), QT_AXIS_ALL);
    CHECK(qt_backward(ctx, l) == QT_OK && h.n == before, "a cleared hook is not called");
    qt_paramset_free(&ps);
    qt_ctx_free(ctx);
}

int main(void) {
    test_arena();
    test_sticky_error();
    test_grad_rules();
    test_grad_hook();
    test_conversions();
    test_rand();
    test_llama();
    return qt_test_finish("test_engine");
}
