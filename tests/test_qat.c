/*
 * test_qat.c - QAT's fake-quant ops against PyTorch (tests/fixtures/qat_ref.safetensors,
 * from gen_qat_fixtures.py) and prepare / convert on a small Llama.
 *
 * Against torch: forward values and the straight-through input gradient must be
 * identical (same float operations: x * (1/s), round half to even, clamp, (q - z) * s);
 * LSQ's scale and zero-point gradients are sums over a channel (40 terms of size O(1)
 * that partly cancel) in an order that differs from torch's: |ours - torch| <= 1e-5 (1 +
 * |torch|).
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qt_formats.h"
#include "qt_qat.h"
#include "testutil.h"

static qt_safetensors *fx;

/* an f32 fixture tensor as a fresh arena tensor (grad required) */
static qt_tensor *fixture(qt_ctx *ctx, const char *name) {
    const qt_st_tensor *t = qt_safetensors_get(fx, name);
    CHECK(t != NULL, "fixture tensor %s missing", name);
    if (!t) return NULL;
    qt_tensor *x = qt_tensor_from(ctx, QT_F32, t->ndim, t->shape, t->data);
    if (x) x->requires_grad = true;
    return x;
}

static const float *ref(const char *name, int64_t *n) {
    const qt_st_tensor *t = qt_safetensors_get(fx, name);
    CHECK(t != NULL, "fixture tensor %s missing", name);
    if (n) *n = t ? (int64_t)(t->nbytes / 4) : 0;
    return t ? t->data : NULL;
}

/* exact comparison (as floats: +0 == -0; torch's dy * mask gives -0 where our grads,
 * accumulated into zeros, give +0), counting mismatches */
static void same(const char *what, const float *got, const char *refname) {
    int64_t n;
    const float *r = ref(refname, &n);
    if (!r || !got) return;
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (!(got[i] == r[i])) {
            if (first < 0) first = i;
            bad++;
        }
    qt_check_case(bad == 0, what, "%lld of %lld values differ from torch (first at %lld: %.9g vs %.9g)",
                  (long long)bad, (long long)n, (long long)first, first >= 0 ? (double)got[first] : 0.0,
                  first >= 0 ? (double)r[first] : 0.0);
}

/* |got - ref| <= tol (1 + |ref|): sums whose terms are O(1) and may cancel */
static void close_to(const char *what, const float *got, const char *refname, double tol) {
    int64_t n;
    const float *r = ref(refname, &n);
    if (!r || !got) return;
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - r[i]) / (1.0 + fabs(r[i]));
        if (e > worst) worst = e;
    }
    qt_check_case(worst <= tol, what, "worst error %.3g > %.1g (1 + |ref|)", worst, tol);
}

static void test_torch_fixtures(void) {
    qt_ctx *ctx = qt_ctx_new();

    /* fake_quantize_per_channel_affine: LSQ's forward with integer zero points */
    qt_tensor *x = fixture(ctx, "pc_x"), *s = fixture(ctx, "pc_scale"), *z = fixture(ctx, "pc_zero");
    s->requires_grad = z->requires_grad = false;
    qt_tensor *y = qt_fake_quant_lsq(ctx, x, s, z, 0, 15, 1.0f);
    CHECK(y != NULL, "per-channel: %s", qt_ctx_error(ctx));
    if (y && qt_backward_from(ctx, y, ref("pc_dy", NULL)) == QT_OK) {
        same("per_channel_affine y", y->data, "pc_y");
        same("per_channel_affine dx (STE)", x->grad, "pc_dx");
    }

    /* the learnable variant */
    qt_ctx_reset(ctx);
    x = fixture(ctx, "lsq_x");
    s = fixture(ctx, "lsq_scale");
    z = fixture(ctx, "lsq_zero");
    y = qt_fake_quant_lsq(ctx, x, s, z, -8, 7, 0.3f);
    CHECK(y != NULL, "lsq: %s", qt_ctx_error(ctx));
    if (y && qt_backward_from(ctx, y, ref("lsq_dy", NULL)) == QT_OK) {
        same("learnable y", y->data, "lsq_y");
        same("learnable dx", x->grad, "lsq_dx");
        close_to("learnable dscale", s->grad, "lsq_dscale", 1e-5);
        close_to("learnable dzero_point", z->grad, "lsq_dzero", 1e-5);
    }

    /* int4 g32 symmetric weights with f16 scales: the quantizer core vs torch */
    qt_ctx_reset(ctx);
    x = fixture(ctx, "w_w");
    qt_qformat f;
    qt_qformat_parse("int4", &f); /* group 32, symmetric, f16 scales */
    y = qt_fake_quant_weight(ctx, x, &f);
    CHECK(y != NULL, "weight: %s", qt_ctx_error(ctx));
    if (y && qt_backward_from(ctx, y, ref("w_dy", NULL)) == QT_OK) {
        same("int4 g32 weight y", y->data, "w_y");
        same("int4 g32 weight dx (STE mask)", x->grad, "w_dx");
    }

    /* static per-tensor activations */
    qt_ctx_reset(ctx);
    x = fixture(ctx, "pt_x");
    y = qt_fake_quant_act_static(ctx, x, 0.07f, 131, 8);
    CHECK(y != NULL, "per-tensor: %s", qt_ctx_error(ctx));
    if (y && qt_backward_from(ctx, y, ref("pt_dy", NULL)) == QT_OK) {
        same("per_tensor_affine y", y->data, "pt_y");
        same("per_tensor_affine dx", x->grad, "pt_dx");
    }

    /* dynamic per-token asymmetric int8 */
    qt_ctx_reset(ctx);
    x = fixture(ctx, "tok_x");
    y = qt_fake_quant_act_dynamic(ctx, x, 8, false);
    CHECK(y != NULL, "per-token: %s", qt_ctx_error(ctx));
    if (y && qt_backward_from(ctx, y, ref("tok_dy", NULL)) == QT_OK) {
        same("per-token int8 y", y->data, "tok_y");
        same("per-token int8 dx", x->grad, "tok_dx");
    }
    qt_ctx_free(ctx);
}

/* a NaN in one token leaves that token as it is and quantizes the others */
static void test_act_nan(void) {
    qt_ctx *ctx = qt_ctx_new();
    int64_t sh[2] = {2, 8};
    float d[16];
    for (int i = 0; i < 16; i++) d[i] = 0.37f * (float)(i - 7);
    d[3] = NAN;
    qt_tensor *x = qt_tensor_from(ctx, QT_F32, 2, sh, d);
    qt_tensor *y = qt_fake_quant_act_dynamic(ctx, x, 4, true);
    CHECK(y != NULL, "act nan: %s", qt_ctx_error(ctx));
    if (y) {
        const float *yd = y->data;
        CHECK(isnan(yd[3]), "the NaN reaches the output");
        bool row0 = true, row1_quant = false;
        for (int i = 0; i < 8; i++) row0 &= i == 3 || yd[i] == d[i];
        for (int i = 8; i < 16; i++) row1_quant |= yd[i] != d[i];
        CHECK(row0, "a row with a NaN passes through unchanged");
        CHECK(row1_quant, "the other rows are quantized");
    }
    /* static: the non-finite values themselves pass, the rest is quantized */
    d[5] = INFINITY;
    x = qt_tensor_from(ctx, QT_F32, 2, sh, d);
    y = qt_fake_quant_act_static(ctx, x, 0.05f, 128, 8);
    CHECK(y != NULL, "static act nan: %s", qt_ctx_error(ctx));
    if (y) {
        const float *yd = y->data;
        CHECK(isnan(yd[3]) && yd[5] == INFINITY, "static: NaN and Inf reach the output");
        CHECK(yd[1] != d[1] && fabsf(yd[1] - d[1]) <= 0.025f, "static: finite values quantized");
    }
    qt_ctx_free(ctx);
}

/* a learned scale pushed below zero computes as FLT_EPSILON instead of failing */
static void test_lsq_nonpositive_scale(void) {
    qt_ctx *ctx = qt_ctx_new();
    int64_t sx[2] = {2, 4}, ss[1] = {2};
    float xd[8] = {0.5f, -0.25f, 0.0f, 1e-8f, 3.0f, -3.0f, 0.1f, 0.0f}, sd[2] = {-0.01f, 0.5f};
    qt_tensor *x = qt_tensor_from(ctx, QT_F32, 2, sx, xd), *s = qt_tensor_from(ctx, QT_F32, 1, ss, sd);
    qt_tensor *y = qt_fake_quant_lsq(ctx, x, s, NULL, -8, 7, 1.0f);
    CHECK(y != NULL, "lsq with a negative scale: %s", qt_ctx_error(ctx));
    if (y) {
        const float *yd = y->data;
        CHECK(yd[0] == 7 * FLT_EPSILON && yd[1] == -8 * FLT_EPSILON && yd[2] == 0.0f,
              "row 0 computes with scale FLT_EPSILON: %g %g %g", yd[0], yd[1], yd[2]);
        CHECK(yd[4] == 3.0f && yd[5] == -3.0f, "row 1 keeps its own scale");
    }
    qt_ctx_free(ctx);
}

/* ------------------------------------------------------------ model level ---- */

static void tiny_model_tied(qt_model *m, bool tied) {
    qt_llama_config c = {.vocab_size = 64, .dim = 64, .n_layers = 2, .n_heads = 4,
                         .n_kv_heads = 2, .ffn_dim = 96, .rope_theta = 10000.0f,
                         .norm_eps = 1e-5f, .max_seq_len = 32, .tied_embeddings = tied};
    memset(m, 0, sizeof *m);
    m->arch = QT_ARCH_LLAMA;
    CHECK(qt_llama_init(&m->llama, &c, 7) == QT_OK, "init: %s", qt_error_message());
}

static void tiny_model(qt_model *m) { tiny_model_tied(m, false); }

/* logits on fixed ids, malloc'd */
static float *logits(qt_model *m, int64_t *n) {
    qt_ctx *ctx = qt_ctx_new();
    qt_ctx_set_grad_enabled(ctx, false);
    int32_t ids[2 * 12];
    for (int i = 0; i < 24; i++) ids[i] = (i * 7 + 3) % 64;
    int64_t sh[2] = {2, 12};
    qt_tensor *y = qt_model_forward(ctx, m, qt_tensor_from(ctx, QT_I32, 2, sh, ids));
    float *out = NULL;
    CHECK(y != NULL, "forward: %s", qt_ctx_error(ctx));
    if (y) {
        *n = qt_numel(y);
        out = malloc((size_t)*n * sizeof *out);
        memcpy(out, y->data, (size_t)*n * sizeof *out);
    }
    qt_ctx_free(ctx);
    return out;
}

/* A next-token loss on fixed ids and its backward; returns the context (grads live in
 * it until it is freed). */
static qt_ctx *loss_backward(qt_model *m, const char *what) {
    qt_ctx *ctx = qt_ctx_new();
    int32_t ids[16], tg[16];
    for (int i = 0; i < 16; i++) {
        ids[i] = (i * 5 + 1) % 64;
        tg[i] = (i * 5 + 6) % 64;
    }
    int64_t sh[2] = {2, 8};
    qt_tensor *loss = qt_cross_entropy(
        ctx, qt_model_forward(ctx, m, qt_tensor_from(ctx, QT_I32, 2, sh, ids)),
        qt_tensor_from(ctx, QT_I32, 2, sh, tg), -100);
    qt_check_case(loss && qt_backward(ctx, loss) == QT_OK, what, "backward: %s", qt_ctx_error(ctx));
    return ctx;
}

static bool equal(const float *a, const float *b, int64_t n) {
    return a && b && !memcmp(a, b, (size_t)n * sizeof *a);
}

static void test_prepare_convert(const char *fmt_name, bool act) {
    char what[64];
    snprintf(what, sizeof what, "%s%s", fmt_name, act ? " + int8 act" : "");
    qt_model m, ref_m;
    tiny_model(&m);
    tiny_model(&ref_m);
    qt_qat_config cfg = {.weight_on = true};
    CHECK(qt_qformat_parse(fmt_name, &cfg.weight) == QT_OK, "parse %s", fmt_name);
    if (!strcmp(fmt_name, "int4")) cfg.weight.group_size = 16; /* dim 64, ffn 96 */
    if (act) cfg.act = (qt_act_config){.mode = QT_ACT_DYNAMIC_TOKEN, .bits = 8};
    int64_t n0, n1, n2, n3;
    float *plain = logits(&m, &n0);
    qt_qat *q = NULL;
    qt_status st = qt_qat_prepare(&q, &m, &cfg);
    qt_check_case(st == QT_OK, what, "prepare: %s", qt_error_message());
    if (st != QT_OK) {
        free(plain);
        qt_model_free(&m);
        qt_model_free(&ref_m);
        return;
    }
    int with_act, n = qt_qat_count(q, &with_act);
    qt_check_case(n == 14 && with_act == (act ? 14 : 0), what, "selected %d layers (%d with act), "
                  "expected 14", n, with_act);
    float *fq = logits(&m, &n1);
    qt_check_case(fq && !equal(plain, fq, n0), what, "fake-quant changes the logits");

    /* the same as a model whose weights were replaced by fake_quant(W) by hand (the
     * activation quant, when on, is not replaced: skip that comparison) */
    if (!act) {
        qt_llama *r = &ref_m.llama;
        for (int l = 0; l < r->cfg.n_layers; l++) {
            qt_tensor *ws[7] = {r->layers[l].wq, r->layers[l].wk, r->layers[l].wv, r->layers[l].wo,
                                r->layers[l].w_gate, r->layers[l].w_up, r->layers[l].w_down};
            for (int k = 0; k < 7; k++)
                CHECK(qt_fake_quant(&cfg.weight, ws[k]->data, ws[k]->shape[0], ws[k]->shape[1],
                                    ws[k]->data, NULL) == QT_OK, "fake_quant by hand");
        }
        float *byhand = logits(&ref_m, &n2);
        qt_check_case(equal(fq, byhand, n1), what, "QAT logits equal those of hand-quantized weights");
        free(byhand);
    }

    /* gradients reach every selected weight */
    qt_ctx *ctx = loss_backward(&m, what);
    for (int l = 0; l < 2; l++) {
        qt_llama_layer *L = &m.llama.layers[l];
        qt_tensor *ws[7] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
        for (int k = 0; k < 7; k++) {
            double g = 0;
            for (int64_t i = 0; i < qt_numel(ws[k]); i++) g += fabs(ws[k]->grad[i]);
            qt_check_case(g > 0, what, "%s gets a gradient through the fake-quant", ws[k]->name);
        }
    }
    qt_ctx_free(ctx);

    /* convert: the weights now hold dequantize(quantize(W)); logits are unchanged */
    qt_qat_converted *cv = NULL;
    int nc = 0;
    st = qt_qat_convert(q, &cv, &nc);
    qt_check_case(st == QT_OK && nc == 14, what, "convert: %d tensors, %s", nc, qt_error_message());
    float *conv = logits(&m, &n3);
    qt_check_case(equal(fq, conv, n1), what, "converted logits equal the fake-quant logits bit for bit");
    if (nc > 0) {
        qt_check_case(!strcmp(cv[0].name, "model.layers.0.self_attn.q_proj.weight"), what,
                      "first converted tensor is %s", cv[0].name);
        float *dq = malloc((size_t)(cv[0].q.rows * cv[0].q.cols) * sizeof(float));
        qt_dequantize(&cv[0].q, dq);
        qt_check_case(equal(dq, m.llama.layers[0].wq->data, cv[0].q.rows * cv[0].q.cols), what,
                      "the model holds the dequantized converted tensor");
        free(dq);
    }
    qt_qat_converted_free(cv, nc);
    qt_qat_free(q);
    float *after = logits(&m, &n3);
    qt_check_case(equal(conv, after, n3) || act, what, "free removes the hook");
    free(after);
    free(plain);
    free(fq);
    free(conv);
    qt_model_free(&m);
    qt_model_free(&ref_m);
}

/* learnable scales (LSQ): start equal to plain fake-quant, get gradients, and convert to
 * exactly what was learned */
static void test_learnable(bool symmetric) {
    const char *what = symmetric ? "LSQ sym" : "LSQ asym";
    qt_model m;
    tiny_model(&m);
    qt_qat_config cfg = {.weight_on = true, .learnable = true};
    qt_qformat_parse("int4", &cfg.weight);
    cfg.weight.group_size = 16;
    cfg.weight.symmetric = symmetric;
    qt_qat *q = NULL;
    qt_check_case(qt_qat_prepare(&q, &m, &cfg) == QT_EINVAL, what, "f16 scales are refused");
    cfg.weight.scale_dtype = QT_F32;
    int64_t n;
    /* plain fake-quant logits of the same format, for step 0 */
    cfg.learnable = false;
    qt_check_case(qt_qat_prepare(&q, &m, &cfg) == QT_OK, what, "plain: %s", qt_error_message());
    float *plain = logits(&m, &n);
    qt_qat_free(q);
    cfg.learnable = true;
    qt_check_case(qt_qat_prepare(&q, &m, &cfg) == QT_OK, what, "prepare: %s", qt_error_message());
    if (!q) {
        free(plain);
        qt_model_free(&m);
        return;
    }
    qt_paramset *b = qt_qat_buffers(q);
    /* 14 layers x (64*64, 2 x 32*64, 64*64, 2 x 96*64, 64*96) / 16 groups */
    int64_t groups = 2 * (64 * 64 + 2 * 32 * 64 + 64 * 64 + 2 * 96 * 64 + 64 * 96) / 16;
    qt_check_case(b && (int64_t)b->n_grad == (symmetric ? 1 : 2) * groups, what,
                  "%lld learnable values, expected %lld", b ? (long long)b->n_grad : -1LL,
                  (long long)((symmetric ? 1 : 2) * groups));
    float *l0 = logits(&m, &n);
    qt_check_case(equal(plain, l0, n), what, "step 0 computes what plain fake-quant does");
    /* gradients reach the scales */
    for (int i = 0; i < m.llama.params.n; i++) m.llama.params.params[i]->requires_grad = true;
    qt_ctx *ctx = loss_backward(&m, what);
    double gs = 0;
    for (size_t i = 0; b && i < b->n_grad; i++) gs += fabs(b->grad[i]);
    qt_check_case(gs > 0, what, "the scales get gradients");
    qt_ctx_free(ctx);
    /* "learn": move the scales (and zero points), then convert ships exactly them */
    for (size_t i = 0; b && i < b->n_total; i++) b->data[i] *= 1.0f + 0.05f * (float)(i % 7) / 7.0f;
    float *moved = logits(&m, &n);
    qt_check_case(!equal(moved, l0, n), what, "learned scales change the logits");
    qt_qat_converted *cv = NULL;
    int nc = 0;
    qt_check_case(qt_qat_convert(q, &cv, &nc) == QT_OK && nc == 14, what, "convert: %s",
                  qt_error_message());
    float *conv = logits(&m, &n);
    qt_check_case(equal(moved, conv, n), what, "converted logits equal the LSQ logits bit for bit");
    if (nc > 0) {
        const qt_tensor *ls = qt_paramset_find(b, "model.layers.0.self_attn.q_proj.weight_scale");
        bool same_scales = ls && cv[0].q.n_scales == qt_numel(ls) &&
                           !memcmp(cv[0].q.scales, ls->data, (size_t)qt_numel(ls) * sizeof(float));
        qt_check_case(same_scales, what, "the exported scales are the learned ones");
    }
    qt_qat_converted_free(cv, nc);
    qt_qat_free(q);
    free(plain);
    free(l0);
    free(moved);
    free(conv);
    qt_model_free(&m);
}

/* logits of ids seeded `seed`, on a fresh context each time (freed after) */
static float *logits_seed(qt_model *m, int seed, int64_t *n) {
    qt_ctx *ctx = qt_ctx_new();
    qt_ctx_set_grad_enabled(ctx, false);
    int32_t ids[24];
    for (int i = 0; i < 24; i++) ids[i] = (i * 7 + 11 * seed) % 64;
    int64_t sh[2] = {2, 12};
    qt_tensor *y = qt_model_forward(ctx, m, qt_tensor_from(ctx, QT_I32, 2, sh, ids));
    float *out = NULL;
    if (y) {
        *n = qt_numel(y);
        out = malloc((size_t)*n * sizeof *out);
        memcpy(out, y->data, (size_t)*n * sizeof *out);
    }
    qt_ctx_free(ctx);
    return out;
}

/* the per-token activation memo never serves a result from another step or context,
 * even when a new context lands at a freed one's address */
static void test_act_memo(void) {
    qt_model m;
    tiny_model(&m);
    const char *globs[] = {"model.layers.0.self_attn.[qkv]_proj"};
    qt_qat_config cfg = {.weight_on = true, .layers = globs, .n_layers = 1,
                         .act = {.mode = QT_ACT_DYNAMIC_TOKEN, .bits = 4}};
    qt_qformat_parse("int8", &cfg.weight);
    cfg.weight.group_size = 16;
    qt_qat *q = NULL;
    CHECK(qt_qat_prepare(&q, &m, &cfg) == QT_OK, "memo: %s", qt_error_message());
    if (!q) {
        qt_model_free(&m);
        return;
    }
    int64_t n;
    float *b_fresh = logits_seed(&m, 2, &n); /* B with nothing remembered */
    qt_qat_free(q);
    CHECK(qt_qat_prepare(&q, &m, &cfg) == QT_OK, "memo: %s", qt_error_message());
    bool ok = true;
    for (int k = 0; k < 8 && q; k++) { /* A then B, fresh contexts, again and again */
        float *a = logits_seed(&m, 1, &n), *b = logits_seed(&m, 2, &n);
        ok &= a && b && equal(b, b_fresh, n) && !equal(a, b, n);
        free(a);
        free(b);
    }
    CHECK(ok, "a forward never reuses another context's quantized activations");
    free(b_fresh);
    qt_qat_free(q);
    qt_model_free(&m);
}

/* tied lm_head / embedding: both or neither, and then convert keeps the logits */
static void test_tied(void) {
    qt_model m;
    tiny_model_tied(&m, true);
    qt_qat *q = NULL;
    qt_qat_config cfg = {.weight_on = true, .lm_head = true};
    qt_qformat_parse("int8", &cfg.weight);
    cfg.weight.group_size = 16;
    CHECK(qt_qat_prepare(&q, &m, &cfg) == QT_EINVAL && strstr(qt_error_message(), "tied"),
          "tied: lm_head without embeddings is refused: %s", qt_error_message());
    cfg.embeddings = true;
    CHECK(qt_qat_prepare(&q, &m, &cfg) == QT_OK, "tied, both: %s", qt_error_message());
    if (q) {
        int64_t n;
        float *fq = logits(&m, &n);
        int nc = 0;
        qt_qat_converted *cv = NULL;
        CHECK(qt_qat_convert(q, &cv, &nc) == QT_OK && nc == 15, "tied convert: %d tensors (14 + "
              "the shared embedding once)", nc);
        float *cl = logits(&m, &n);
        CHECK(equal(fq, cl, n), "tied: converted logits equal the fake-quant logits");
        qt_qat_converted_free(cv, nc);
        free(fq);
        free(cl);
        qt_qat_free(q);
    }
    qt_model_free(&m);
}

/* convert is all or nothing: a weight the format cannot hold changes no weight */
static void test_convert_failure(void) {
    qt_model m;
    tiny_model(&m);
    qt_qat *q = NULL;
    qt_qat_config cfg = {.weight_on = true};
    qt_qformat_parse("int4", &cfg.weight); /* f16 scales */
    cfg.weight.group_size = 16;
    CHECK(qt_qat_prepare(&q, &m, &cfg) == QT_OK, "prepare: %s", qt_error_message());
    qt_paramset *ps = qt_model_params(&m);
    ((float *)m.llama.layers[1].w_up->data)[5] = 1e30f; /* its f16 scale overflows */
    float *before = malloc(ps->n_total * sizeof(float));
    memcpy(before, ps->data, ps->n_total * sizeof(float));
    qt_status st = q ? qt_qat_convert(q, NULL, NULL) : QT_OK;
    CHECK(st == QT_ENUMERIC && strstr(qt_error_message(), "model.layers.1.mlp.up_proj"),
          "convert fails naming the layer: %s", qt_error_message());
    CHECK(!memcmp(before, ps->data, ps->n_total * sizeof(float)), "a failed convert changes no weight");
    free(before);
    qt_qat_free(q);
    qt_model_free(&m);
}

static void test_selection_and_errors(void) {
    qt_model m;
    tiny_model(&m);
    qt_qat *q = NULL;
    const char *globs[] = {"*.q_proj", "*.mlp.down_proj"};
    qt_qat_config cfg = {.weight_on = true, .layers = globs, .n_layers = 2, .lm_head = true};
    qt_qformat_parse("int8", &cfg.weight);
    cfg.weight.group_size = 16;
    CHECK(qt_qat_prepare(&q, &m, &cfg) == QT_OK, "globs: %s", qt_error_message());
    if (q) {
        CHECK(qt_qat_count(q, NULL) == 5, "2 layers x 2 patterns + lm_head = 5, got %d",
              qt_qat_count(q, NULL));
        qt_qat_free(q);
    }
    const char *typo[] = {"*.q_prj"};
    cfg.layers = typo;
    cfg.n_layers = 1;
    CHECK(qt_qat_prepare(&q, &m, &cfg) == QT_EINVAL && strstr(qt_error_message(), "q_prj"),
          "a pattern matching nothing is an error naming it: %s", qt_error_message());
    cfg.layers = NULL;
    cfg.n_layers = 0;
    cfg.weight.group_size = 40; /* divides neither 64 nor 96 */
    CHECK(qt_qat_prepare(&q, &m, &cfg) == QT_EINVAL && strstr(qt_error_message(), "model.layers.0"),
          "a group size that does not divide a layer's rows names the layer: %s",
          qt_error_message());
    cfg.weight.group_size = 16;
    cfg.embeddings = true;
    cfg.act = (qt_act_config){.mode = QT_ACT_DYNAMIC_TOKEN, .bits = 8};
    CHECK(qt_qat_prepare(&q, &m, &cfg) == QT_EINVAL, "activation quant with embeddings is refused");
    cfg.act.mode = QT_ACT_NONE;
    CHECK(qt_qat_prepare(&q, &m, &cfg) == QT_OK, "embedding weight fake-quant: %s", qt_error_message());
    if (q) {
        int64_t n;
        float *a = logits(&m, &n);
        qt_qat_set_enabled(q, false);
        float *b = logits(&m, &n);
        qt_qat_free(q);
        float *c = logits(&m, &n);
        CHECK(a && !equal(a, b, n) && equal(b, c, n), "disabled fake-quant computes in float");
        free(a);
        free(b);
        free(c);
    }
    qt_model_free(&m);
}

/* a static observer learns its range in training (grad mode) and is frozen in eval */
static void grad_forward(qt_model *m, int seed) {
    qt_ctx *ctx = qt_ctx_new();
    int32_t ids[24];
    for (int i = 0; i < 24; i++) ids[i] = (i * 7 + 3 * seed) % 64;
    int64_t sh[2] = {2, 12};
    qt_tensor *y = qt_model_forward(ctx, m, qt_tensor_from(ctx, QT_I32, 2, sh, ids));
    CHECK(y != NULL && qt_ctx_grad_enabled(ctx), "grad-mode forward: %s", qt_ctx_error(ctx));
    qt_ctx_free(ctx);
}

static void copy_buffers(qt_qat *q, float *dst) {
    qt_paramset *b = qt_qat_buffers(q);
    memcpy(dst, b->data, b->n_total * sizeof(float));
}

static void test_static_observer(qt_observer kind) {
    const char *what = kind == QT_OBS_MINMAX ? "minmax observer" : "moving-average observer";
    qt_model m;
    tiny_model(&m);
    for (int i = 0; i < m.llama.params.n; i++) m.llama.params.params[i]->requires_grad = true;
    qt_qat *q = NULL;
    qt_qat_config cfg = {.act = {.mode = QT_ACT_STATIC_TENSOR, .bits = 8, .observer = kind,
                                 .averaging_constant = 0.25f}};
    qt_check_case(qt_qat_prepare(&q, &m, &cfg) == QT_OK, what, "prepare: %s", qt_error_message());
    if (!q) {
        qt_model_free(&m);
        return;
    }
    qt_paramset *b = qt_qat_buffers(q);
    qt_check_case(b && b->n == 14 && b->n_total == 28, what, "one [min, max] per layer");
    float r0[28], r1[28], r2[28], r3[28];
    copy_buffers(q, r0);
    qt_check_case(r0[0] == INFINITY && r0[1] == -INFINITY, what, "starts empty");
    grad_forward(&m, 1); /* batch A */
    copy_buffers(q, r1);
    bool ranged = true;
    for (int i = 0; i < 28; i += 2) ranged &= isfinite(r1[i]) && r1[i] < 0 && r1[i + 1] > 0;
    qt_check_case(ranged, what, "a training forward sets every layer's range");
    grad_forward(&m, 1); /* A again: min-max and the moving average both stay put */
    copy_buffers(q, r2);
    bool still = true;
    for (int i = 0; i < 28; i++) still &= fabsf(r2[i] - r1[i]) <= 1e-6f * fabsf(r1[i]);
    qt_check_case(still, what, "the same batch again leaves the range (o += c (batch - o))");
    grad_forward(&m, 5); /* batch B */
    copy_buffers(q, r3);
    bool moved = false, widened = true;
    for (int i = 0; i < 28; i += 2) {
        moved |= r3[i] != r2[i] || r3[i + 1] != r2[i + 1];
        widened &= r3[i] <= r2[i] && r3[i + 1] >= r2[i + 1];
    }
    qt_check_case(moved, what, "a new batch moves the range");
    if (kind == QT_OBS_MINMAX) qt_check_case(widened, what, "min-max only widens");
    int64_t n;
    float *e1 = logits(&m, &n), *e2 = logits(&m, &n);
    float after[28];
    copy_buffers(q, after);
    qt_check_case(!memcmp(after, r3, sizeof after) && equal(e1, e2, n), what,
                  "eval forwards leave the observers frozen");
    qt_qat_free(q);
    float *plain = logits(&m, &n);
    qt_check_case(!equal(e1, plain, n), what, "static activation quant changes the logits");
    free(e1);
    free(e2);
    free(plain);
    qt_model_free(&m);
}

int main(void) {
    qt_set_num_threads(2);
    qt_status st = qt_safetensors_open(QT_FIXTURES "/qat_ref.safetensors", &fx);
    CHECK(st == QT_OK, "open fixture: %s", qt_error_message());
    if (st == QT_OK) {
        test_torch_fixtures();
        qt_safetensors_close(fx);
    }
    test_act_nan();
    test_lsq_nonpositive_scale();
    const char *fmts[] = {"int4", "int8", "nf4",  "fp4",  "fp8_e4m3",
                          "fp8_e5m2", "q4_0", "q8_0", "iq4_nl"};
    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) test_prepare_convert(fmts[i], false);
    test_prepare_convert("int4", true);
    test_selection_and_errors();
    test_tied();
    test_act_memo();
    test_learnable(true);
    test_learnable(false);
    test_convert_failure();
    test_static_observer(QT_OBS_MINMAX);
    test_static_observer(QT_OBS_MOVING_AVERAGE);
    return qt_test_finish("test_qat");
}
