/*
 * test_lora.c - LoRA and QLoRA (label lora): an attached model starts equal to its base
 * (B = 0); adapter gradients against finite differences; the base frozen (no grads, its
 * weights untouched by training); QLoRA's packed NF4 base dequantizes bit for bit as the
 * quantizer core does and stores 4.127 bits per parameter; the QLoRA forward and input
 * gradient equal a float model holding the dequantized base; merging folds B A into
 * exactly that base (merged logits equal the adapter model's); dropout only in training;
 * bad configurations refused naming the target or layer.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lora_internal.h"
#include "qt_quant.h"
#include "qt_optim.h"
#include "testutil.h"

static const qt_llama_config CFG = {.vocab_size = 48, .dim = 64, .n_layers = 2, .n_heads = 4,
                                    .n_kv_heads = 2, .ffn_dim = 96, .rope_theta = 10000.0f,
                                    .norm_eps = 1e-5f, .max_seq_len = 32};
#define B_ 2
#define T_ 9

static void model_new(qt_model *m, uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->arch = QT_ARCH_LLAMA;
    CHECK(qt_llama_init(&m->llama, &CFG, seed) == QT_OK, "llama init: %s", qt_error_message());
}

static void ids_of(int32_t *ids, int32_t *tgt, uint64_t seed) {
    for (int i = 0; i < B_ * T_; i++) {
        ids[i] = (int32_t)(qt_rand_u64(seed, (uint64_t)i) % CFG.vocab_size);
        tgt[i] = (int32_t)(qt_rand_u64(seed + 1, (uint64_t)i) % CFG.vocab_size);
    }
}

/* logits (B_*T_*V) into out; returns the loss, NAN on failure */
static double run(qt_model *m, const int32_t *ids, const int32_t *tgt, float *logits, bool grad) {
    qt_ctx *ctx = qt_ctx_new();
    qt_ctx_set_grad_enabled(ctx, grad);
    int64_t shape[2] = {B_, T_};
    qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, shape, ids);
    qt_tensor *y = qt_tensor_from(ctx, QT_I32, 2, shape, tgt);
    qt_tensor *lg = qt_model_forward(ctx, m, x);
    qt_tensor *l = qt_cross_entropy(ctx, lg, y, -100);
    double loss = NAN;
    if (l) {
        if (logits) memcpy(logits, lg->data, (size_t)qt_numel(lg) * sizeof(float));
        loss = ((float *)l->data)[0];
        if (grad && qt_backward(ctx, l) != QT_OK) loss = NAN;
    } else {
        printf("  forward failed: %s\n", qt_ctx_error(ctx));
    }
    qt_ctx_free(ctx);
    return loss;
}

static double rel(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return sqrt(d / (s > 0 ? s : 1));
}

static void randomize_b(qt_lora *l, uint64_t seed) {
    for (int i = 0; i < l->n; i++) {
        float *b = l->layers[i].b->data;
        for (int64_t j = 0; j < qt_numel(l->layers[i].b); j++)
            b[j] = 0.05f * qt_rand_normal(seed + (uint64_t)i, (uint64_t)j);
    }
}

#define NLOG (B_ * T_ * 48)

static void test_start_equal_and_grads(void) {
    qt_model m;
    model_new(&m, 11);
    int32_t ids[B_ * T_], tgt[B_ * T_];
    ids_of(ids, tgt, 5);
    static float base[NLOG], ad[NLOG];
    run(&m, ids, tgt, base, false);
    const char *targets[] = {"q_proj", "v_proj", "down_proj"};
    qt_lora_config c = {.rank = 4, .alpha = 8, .targets = targets, .n_targets = 3, .seed = 3};
    qt_lora *l = NULL;
    CHECK(qt_lora_attach(&l, &m, &c) == QT_OK, "attach: %s", qt_error_message());
    if (!l) return;
    CHECK(l->n == 6 && fabsf(l->scaling - 2.0f) < 1e-7f, "6 layers, scaling 2: %d %g", l->n,
          l->scaling);
    CHECK(!strcmp(l->layers[0].module, "model.layers.0.self_attn.q_proj"), "module %s",
          l->layers[0].module);
    run(&m, ids, tgt, ad, false);
    CHECK(!memcmp(base, ad, sizeof base), "B = 0: the adapted model equals its base exactly");
    /* A within PEFT's kaiming bound 1/sqrt(in), not all zero */
    float *a = l->layers[0].a->data, amax = 0;
    for (int64_t j = 0; j < qt_numel(l->layers[0].a); j++) amax = fmaxf(amax, fabsf(a[j]));
    CHECK(amax > 0.5f / sqrtf(64.0f) && amax <= 1.0f / sqrtf(64.0f), "A bound: max |A| %g", amax);

    /* gradients of A and B against central differences (B random so dA != 0) */
    randomize_b(l, 77);
    qt_paramset *ps = qt_model_params(&m);
    qt_paramset_zero_grad(&l->params);
    run(&m, ids, tgt, NULL, true);
    for (int i = 0; i < ps->n; i++)
        CHECK(ps->params[i]->grad == NULL && !ps->params[i]->requires_grad,
              "base parameter %s must be frozen", ps->params[i]->name);
    double worst = 0;
    for (int p = 0; p < l->params.n; p++) {
        qt_tensor *t = l->params.params[p];
        float *x = t->data;
        int64_t n = qt_numel(t);
        for (int s = 0; s < 3; s++) {
            int64_t j = (int64_t)(qt_rand_u64(99 + (uint64_t)p, (uint64_t)s) % (uint64_t)n);
            float x0 = x[j], h = 1e-2f;
            x[j] = x0 + h;
            double lp = run(&m, ids, tgt, NULL, false);
            x[j] = x0 - h;
            double lm = run(&m, ids, tgt, NULL, false);
            x[j] = x0;
            double fd = (lp - lm) / (2 * h), an = t->grad[j], err = fabs(fd - an);
            if (err / (2e-3 + 2e-2 * fabs(an)) > worst) worst = err / (2e-3 + 2e-2 * fabs(an));
            CHECK(err <= 2e-3 + 2e-2 * fabs(an), "%s[%lld]: analytic %g, numeric %g", t->name,
                  (long long)j, an, fd);
        }
    }
    printf("  adapter grads vs finite differences: worst %.2f of tolerance\n", worst);

    /* dropout: only while training */
    qt_lora_free(l);
    c.dropout = 0.5f;
    CHECK(qt_lora_attach(&l, &m, &c) == QT_OK, "attach with dropout: %s", qt_error_message());
    randomize_b(l, 78);
    static float e1[NLOG], e2[NLOG], t1[NLOG];
    run(&m, ids, tgt, e1, false);
    qt_lora_set_step(l, 1);
    run(&m, ids, tgt, t1, true);
    qt_lora_set_step(l, 2);
    run(&m, ids, tgt, e2, false);
    CHECK(!memcmp(e1, e2, sizeof e1), "dropout off in evaluation");
    CHECK(memcmp(e1, t1, sizeof e1) != 0, "dropout on while training");
    qt_lora_free(l);
    qt_model_free(&m);
}

static void test_training_only_adapters(void) {
    qt_model m;
    model_new(&m, 12);
    int32_t ids[B_ * T_], tgt[B_ * T_];
    ids_of(ids, tgt, 6);
    qt_paramset *ps = qt_model_params(&m);
    float *w0 = malloc(ps->n_total * sizeof(float));
    memcpy(w0, ps->data, ps->n_total * sizeof(float));
    qt_lora_config c = {.rank = 8, .alpha = 16, .seed = 4}; /* all-linear */
    qt_lora *l = NULL;
    CHECK(qt_lora_attach(&l, &m, &c) == QT_OK, "attach: %s", qt_error_message());
    if (!l) return;
    CHECK(l->n == 2 * 7, "all-linear adapts every decoder Linear: %d", l->n);
    qt_adamw opt;
    qt_adamw_config oc = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                          .weight_decay = 0.0f};
    qt_adamw_init(&opt, &l->params, oc);
    double first = 0, last = 0;
    for (int s = 0; s < 30; s++) {
        qt_paramset_zero_grad(&l->params);
        double loss = run(&m, ids, tgt, NULL, true);
        if (s == 0) first = loss;
        last = loss;
        CHECK(qt_adamw_step(&opt, &l->params, oc.lr) == QT_OK, "adamw");
    }
    printf("  LoRA r 8, 30 steps on one batch: loss %.4f -> %.4f\n", first, last);
    CHECK(last < first - 0.5, "training the adapters lowers the loss: %g -> %g", first, last);
    CHECK(!memcmp(w0, ps->data, ps->n_total * sizeof(float)), "the base weights are untouched");
    qt_adamw_free(&opt);
    qt_lora_free(l);
    free(w0);
    qt_model_free(&m);
}

static void test_qlora(void) {
    qt_model m, ref;
    model_new(&m, 13);
    model_new(&ref, 13);
    int32_t ids[B_ * T_], tgt[B_ * T_];
    ids_of(ids, tgt, 7);
    qt_lora_config c = {.rank = 4, .alpha = 16, .rslora = true, .nf4 = true, .seed = 5};
    qt_lora *l = NULL, *lr = NULL;
    CHECK(qt_lora_attach(&l, &m, &c) == QT_OK, "QLoRA attach: %s", qt_error_message());
    if (!l) return;
    CHECK(fabsf(l->scaling - 8.0f) < 1e-6f, "rsLoRA scaling alpha/sqrt(r) = 8: %g", l->scaling);
    /* the packed base dequantizes exactly as the core's qt_dequantize */
    bool exact = true;
    for (int i = 0; i < l->n && exact; i++) {
        qt_lora_layer *L = &l->layers[i];
        int64_t n = qt_numel(L->w);
        float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
        qt_qformat f = {.kind = QT_QF_NF4, .bits = 4, .group_size = 64, .double_quant = true};
        qt_qtensor q;
        /* the original weights: the same seed's model (this one's f32 copy is released) */
        const qt_tensor *orig = qt_paramset_find(qt_model_params(&ref), L->w->name);
        qt_quantize(&f, orig->data, L->w->shape[0], L->w->shape[1], &q);
        qt_dequantize(&q, a);
        qt_lora_base_weight(l, i, b);
        exact = !memcmp(a, b, (size_t)n * 4);
        CHECK(exact, "%s: the packed NF4 base differs from the core's dequantization", L->module);
        qt_qtensor_free(&q);
        free(a);
        free(b);
    }
    /* the f32 copies are released (zeros); restore writes the dequantized NF4 back */
    {
        qt_lora_layer *L = &l->layers[0];
        int64_t n = qt_numel(L->w), nz = 0;
        for (int64_t j = 0; j < n; j++) nz += ((float *)L->w->data)[j] != 0.0f;
        /* whole pages go back; the partial pages at the two ends stay (<= 2 x 4 KiB) */
        CHECK(nz <= 2 * 1024 && nz < n, "the released base reads zero but for its edge pages: "
              "%lld of %lld non-zero", (long long)nz, (long long)n);
        float *d = malloc((size_t)n * 4);
        qt_lora_base_weight(l, 0, d);
        CHECK(qt_lora_restore_base(l) == QT_OK && !memcmp(d, L->w->data, (size_t)n * 4),
              "restore writes the dequantized NF4");
        CHECK(qt_lora_release_base(l) == QT_OK, "release again");
        free(d);
    }
    /* the reference: a float model whose weights are the dequantized NF4, same adapters */
    CHECK(qt_lora_attach(&lr, &ref, &(qt_lora_config){.rank = 4, .alpha = 16, .rslora = true,
                                                      .seed = 5}) == QT_OK,
          "reference attach");
    for (int i = 0; lr && i < l->n; i++) {
        qt_lora_base_weight(l, i, lr->layers[i].w->data);
    }
    randomize_b(l, 80);
    if (lr) {
        memcpy(lr->params.data, l->params.data, l->params.n_total * sizeof(float));
        static float a1[NLOG], a2[NLOG];
        qt_paramset_zero_grad(&l->params);
        qt_paramset_zero_grad(&lr->params);
        run(&m, ids, tgt, a1, true);
        run(&ref, ids, tgt, a2, true);
        double e = rel(a1, a2, NLOG), eg = rel(l->params.grad, lr->params.grad, l->params.n_grad);
        printf("  QLoRA vs float model on the dequantized base: logits rel %.2e, adapter grads "
               "rel %.2e\n", e, eg);
        CHECK(e < 1e-5 && eg < 1e-4, "QLoRA forward/backward equal the dequantized-base model: "
              "%g %g", e, eg);
        /* merge: into the dequantized NF4, logits unchanged */
        static float merged[NLOG];
        CHECK(qt_lora_merge(l) == QT_OK, "merge: %s", qt_error_message());
        run(&m, ids, tgt, merged, false);
        double em = rel(merged, a1, NLOG);
        printf("  merged QLoRA model vs the adapter model: logits rel %.2e\n", em);
        CHECK(em < 1e-5, "merged logits equal the adapter model's: %g", em);
    }
    /* storage: 4.127 bits per parameter on a 4096 x 4096-sized budget of blocks */
    qt_nf4_base *big = NULL;
    int64_t R = 1024, C = 1024;
    float *w = malloc((size_t)(R * C) * 4);
    for (int64_t i = 0; i < R * C; i++) w[i] = qt_rand_normal(9, (uint64_t)i);
    CHECK(qt_nf4_base_new(w, R, C, 64, &big) == QT_OK, "nf4 base: %s", qt_error_message());
    if (big) {
        double bits = 8.0 * (double)qt_nf4_base_bytes(big) / (double)(R * C);
        printf("  NF4 + double quant storage: %.4f bits per parameter (1024 x 1024)\n", bits);
        CHECK(fabs(bits - 4.127) < 0.001, "4.127 bits per parameter, got %.4f", bits);
    }
    qt_nf4_base_free(big);
    free(w);
    qt_lora_free(l);
    qt_lora_free(lr);
    qt_model_free(&m);
    qt_model_free(&ref);
}

/* QAT + LoRA: the frozen base is fake-quantized once, in place, exactly as the quantizer
 * core's fake_quant; merging folds B A into that base */
static void test_qat_lora(void) {
    qt_model m;
    model_new(&m, 15);
    qt_tensor *wq = m.llama.layers[1].wq;
    int64_t n = qt_numel(wq);
    float *fq = malloc((size_t)n * 4);
    qt_lora_config c = {.rank = 4, .alpha = 8, .seed = 6, .base_fq = true};
    CHECK(qt_qformat_parse("int4", &c.base_fmt) == QT_OK, "parse int4");
    qt_fake_quant(&c.base_fmt, wq->data, wq->shape[0], wq->shape[1], fq, NULL);
    qt_lora *l = NULL;
    CHECK(qt_lora_attach(&l, &m, &c) == QT_OK, "QAT + LoRA attach: %s", qt_error_message());
    if (!l) return;
    CHECK(!memcmp(wq->data, fq, (size_t)n * 4), "the base is fake_quant(W) bit for bit");
    int32_t ids[B_ * T_], tgt[B_ * T_];
    ids_of(ids, tgt, 8);
    randomize_b(l, 81);
    static float a1[NLOG], a2[NLOG];
    run(&m, ids, tgt, a1, false);
    CHECK(qt_lora_merge(l) == QT_OK, "merge: %s", qt_error_message());
    run(&m, ids, tgt, a2, false);
    double e = rel(a2, a1, NLOG);
    printf("  QAT + LoRA (int4 g32 base): merged vs adapter model logits rel %.2e\n", e);
    CHECK(e < 1e-5, "merged QAT-LoRA logits equal the adapter model's: %g", e);
    qt_lora_free(l);
    free(fq);
    qt_model_free(&m);
    /* NF4 and a fake-quant base together: refused */
    model_new(&m, 16);
    c.nf4 = true;
    l = NULL;
    CHECK(qt_lora_attach(&l, &m, &c) == QT_EINVAL && !l, "nf4 + base_fq refused");
    qt_model_free(&m);
}

static void expect_fail(qt_model *m, qt_lora_config c, qt_status want, const char *needle) {
    qt_lora *l = NULL;
    qt_status st = qt_lora_attach(&l, m, &c);
    CHECK(st == want && !l && strstr(qt_error_message(), needle),
          "want status %d with \"%s\", got %d: %s", (int)want, needle, (int)st,
          qt_error_message());
    qt_lora_free(l);
}

static void test_bad_input(void) {
    qt_model m;
    model_new(&m, 14);
    const char *nope[] = {"nope_proj"}, *pat[] = {"model.layers.9*"};
    expect_fail(&m, (qt_lora_config){.rank = 0, .alpha = 8}, QT_EINVAL, "lora.rank must be >= 1");
    expect_fail(&m, (qt_lora_config){.rank = 80, .alpha = 8}, QT_EINVAL,
                "larger than model.layers.0.self_attn.q_proj (64 x 64)");
    expect_fail(&m, (qt_lora_config){.rank = 4, .alpha = 8, .targets = nope, .n_targets = 1},
                QT_EINVAL, "\"nope_proj\" matches no Linear layer");
    expect_fail(&m, (qt_lora_config){.rank = 4, .alpha = 8, .targets = pat, .n_targets = 1},
                QT_EINVAL, "\"model.layers.9*\" matches no Linear layer");
    expect_fail(&m, (qt_lora_config){.rank = 4, .alpha = 0}, QT_EINVAL, "lora.alpha");
    expect_fail(&m, (qt_lora_config){.rank = 4, .alpha = 8, .dropout = 1.0f}, QT_EINVAL,
                "lora.dropout");
    qt_lora *l = NULL;
    CHECK(qt_lora_attach(&l, &m, &(qt_lora_config){.rank = 2, .alpha = 4}) == QT_OK, "attach");
    expect_fail(&m, (qt_lora_config){.rank = 2, .alpha = 4}, QT_ENOTSUP, "already has a linear hook");
    qt_lora_free(l);
    CHECK(m.llama.hook.linear == NULL, "qt_lora_free removes the hook");
    qt_model_free(&m);
    qt_model g;
    memset(&g, 0, sizeof g);
    g.arch = QT_ARCH_GPT2;
    qt_gpt2_config gc = {.vocab_size = 32, .n_positions = 16, .dim = 32, .n_layers = 1,
                         .n_heads = 2, .ffn_dim = 64, .norm_eps = 1e-5f};
    qt_gpt2_init(&g.gpt2, &gc, 1);
    expect_fail(&g, (qt_lora_config){.rank = 2, .alpha = 4}, QT_ENOTSUP, "only Llama-family");
    qt_model_free(&g);
}

int main(void) {
    qt_set_num_threads(2);
    test_start_equal_and_grads();
    test_training_only_adapters();
    test_qlora();
    test_qat_lora();
    test_bad_input();
    return qt_test_finish("test_lora");
}
