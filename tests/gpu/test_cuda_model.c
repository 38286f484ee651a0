/*
 * test_cuda_model.c - a whole forward and backward of small Llama (GQA, tied and untied
 * head) and GPT-2 models on the GPU against the CPU (label cuda): the mean cross-entropy
 * and every parameter's grad, ||gpu - cpu|| / ||cpu||, in f32 (tolerance 1e-4: tens of
 * ops deep, each f32 in another order) and in the bf16 mode (f32 master weights cast per
 * step, bf16 activations; tolerance 5e-2 on grads, 1e-2 on the loss: bf16's 8 bits
 * compounded over the depth). Then ten AdamW steps on each device from the same
 * weights: the GPU update is the CPU's operation for operation, so in f32 the losses
 * agree to 1e-4. Fresh random weights and tokens every run (QT_TEST_SEED reruns one).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_test.h"
#include "qt_layers.h"
#include "qt_optim.h"
#include "testutil.h"

static double rel(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return s > 0 ? sqrt(d / s) : sqrt(d);
}

/* loss and the flat grad of the model's params on the device the params are on */
static bool step(qt_model *m, const int32_t *ids, const int32_t *tgt, int64_t B, int64_t T,
                 qt_dtype act, float *loss, float *grad) {
    qt_paramset *ps = qt_model_params(m);
    qt_ctx *ctx = qt_ctx_new();
    qt_ctx_set_device(ctx, ps->device);
    qt_ctx_set_compute_dtype(ctx, act);
    int64_t shape[2] = {B, T};
    qt_paramset_zero_grad(ps);
    qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, shape, ids);
    qt_tensor *y = qt_tensor_from(ctx, QT_I32, 2, shape, tgt);
    qt_tensor *l = qt_cross_entropy(ctx, qt_model_forward(ctx, m, x), y, -100);
    bool ok = l && qt_backward(ctx, l) == QT_OK && qt_tensor_read(l, loss) == QT_OK;
    if (ok && grad)
        ok = qt_device_copy((qt_device){QT_DEV_CPU, 0}, grad, ps->device,
                            ps->dgrad ? ps->dgrad : ps->grad, ps->n_grad * sizeof(float)) == QT_OK;
    if (!ok) printf("  step failed: %s %s\n", qt_ctx_error(ctx), qt_error_message());
    qt_ctx_free(ctx);
    return ok;
}

static void check_model(const char *name, qt_model *m, uint64_t seed) {
    const qt_device gpu = {QT_DEV_CUDA, 0}, cpu = {QT_DEV_CPU, 0};
    qt_paramset *ps = qt_model_params(m);
    int64_t B = 2, T = 48;
    int V = m->arch == QT_ARCH_GPT2 ? m->gpt2.cfg.vocab_size : m->llama.cfg.vocab_size;
    int32_t ids[96], tgt[96];
    for (int i = 0; i < B * T; i++) {
        ids[i] = (int32_t)(qt_rand_u64(seed, (uint64_t)i) % (uint64_t)V);
        tgt[i] = (int32_t)(qt_rand_u64(seed + 1, (uint64_t)i) % (uint64_t)V);
    }
    size_t ng = ps->n_grad;
    float *gc = malloc(ng * 4), *gg = malloc(ng * 4);
    float lc = 0, lg = 0;
    bool ok = step(m, ids, tgt, B, T, QT_F32, &lc, gc);
    qt_check_case(ok, name, "CPU step failed");
    ok = ok && qt_paramset_to(ps, gpu) == QT_OK;
    char what[128];
    for (int mode = 0; ok && mode < 2; mode++) {
        bool bf16 = mode == 1;
        snprintf(what, sizeof what, "%s [%s]", name, bf16 ? "bf16" : "f32");
        bool g = step(m, ids, tgt, B, T, bf16 ? QT_BF16 : QT_F32, &lg, gg);
        qt_check_case(g, what, "GPU step failed");
        if (!g) continue;
        double el = fabs((double)lg - lc) / fabs((double)lc), eg = rel(gg, gc, ng);
        double tl = bf16 ? 1e-2 : 1e-4, tg = bf16 ? 5e-2 : 1e-4;
        qt_check_case(el <= tl, what, "loss %.6f vs CPU %.6f (rel %.2e, tol %.0e)", lg, lc, el, tl);
        qt_check_case(eg <= tg, what, "grads rel err %.2e (tol %.0e)", eg, tg);
        printf("  %-28s loss %.6f (CPU %.6f, rel %.1e)  grads rel err %.2e\n", what, lg, lc, el,
               eg);
    }
    /* ten AdamW steps on each device from the same start, f32 */
    if (ok) {
        float *w0 = malloc(ps->n_total * 4);
        qt_paramset_to(ps, cpu);
        memcpy(w0, ps->data, ps->n_total * 4);
        qt_adamw_config oc = {.lr = 3e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                              .weight_decay = 0.1f};
        float lcpu[10], lgpu[10];
        for (int dev = 0; dev < 2; dev++) {
            memcpy(ps->data, w0, ps->n_total * 4);
            if (dev == 1) qt_paramset_to(ps, gpu);
            qt_adamw opt;
            qt_adamw_init(&opt, ps, oc);
            qt_adamw_to_device(&opt, ps);
            for (int s = 0; s < 10; s++) {
                float l = NAN;
                step(m, ids, tgt, B, T, QT_F32, &l, NULL);
                qt_adamw_step(&opt, ps, oc.lr);
                (dev ? lgpu : lcpu)[s] = l;
            }
            qt_adamw_free(&opt);
            qt_paramset_to(ps, cpu);
        }
        double worst = 0;
        for (int s = 0; s < 10; s++) {
            double e = fabs((double)lgpu[s] - lcpu[s]) / fabs((double)lcpu[s]);
            if (!(e <= worst)) worst = e;
        }
        snprintf(what, sizeof what, "%s [10 AdamW steps, f32]", name);
        qt_check_case(worst <= 1e-4 && lcpu[9] < lcpu[0], what,
                      "losses %.6f..%.6f (GPU %.6f..%.6f), worst rel %.2e", lcpu[0], lcpu[9],
                      lgpu[0], lgpu[9], worst);
        printf("  %-28s loss %.4f -> %.4f (GPU %.4f -> %.4f), worst rel %.1e\n", what, lcpu[0],
               lcpu[9], lgpu[0], lgpu[9], worst);
        free(w0);
    }
    qt_paramset_to(ps, cpu);
    free(gc);
    free(gg);
}

int main(void) {
    uint64_t seed = qt_gpu_test_begin("test_cuda_model");
    qt_set_num_threads(4);

    qt_model m;
    memset(&m, 0, sizeof m);
    qt_llama_config lc = {.vocab_size = 300, .dim = 128, .n_layers = 2, .n_heads = 4,
                          .n_kv_heads = 2, .ffn_dim = 320, .rope_theta = 10000.0f,
                          .norm_eps = 1e-5f, .max_seq_len = 64};
    m.arch = QT_ARCH_LLAMA;
    CHECK(qt_llama_init(&m.llama, &lc, seed) == QT_OK, "llama init");
    check_model("llama gqa untied", &m, seed + 1);
    qt_model_free(&m);
    lc.tied_embeddings = true;
    lc.n_kv_heads = 4;
    m.arch = QT_ARCH_LLAMA;
    CHECK(qt_llama_init(&m.llama, &lc, seed + 2) == QT_OK, "llama init");
    check_model("llama tied", &m, seed + 3);
    qt_model_free(&m);
    qt_gpt2_config gc = {.vocab_size = 300, .n_positions = 64, .dim = 128, .n_layers = 2,
                         .n_heads = 4, .ffn_dim = 512, .norm_eps = 1e-5f};
    m.arch = QT_ARCH_GPT2;
    CHECK(qt_gpt2_init(&m.gpt2, &gc, seed + 4) == QT_OK, "gpt2 init");
    check_model("gpt2", &m, seed + 5);
    qt_model_free(&m);
    return qt_test_finish("test_cuda_model");
}
