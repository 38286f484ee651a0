/*
 * gpu_train.c - GPU training throughput of qtrain (issue 8's benchmark): tokens/s and
 * MFU of whole training steps (forward, backward, AdamW) for GPT-2-124M- and
 * SmolLM2-135M-shaped models in the default GPU mode (f32 master weights and AdamW
 * state, bf16 activations), batch B x T tokens, and the same with int4 fake-quant on
 * every Linear (QAT). bench/gpu_train_torch.py runs the same models in PyTorch eager on
 * the same card; tests/gpu/run.sh puts both in one table.
 *
 * MFU counts 6N + 6LCT flops per token (N parameters, L layers, C width, T sequence:
 * the weight products forward and backward, and causal attention's half of 12LCT),
 * over the card's dense bf16 peak (--peak-tflops, 989 for an H100 SXM by its
 * datasheet).
 *
 * usage: gpu_train [--model gpt2|smollm2] [--batch B] [--seq T] [--steps S]
 *                  [--warmup W] [--qat int4|none] [--peak-tflops P] [--profile S]
 * --profile S: S more steps under the op profiler (qt_profile_enable), reported per op.
 * Prints one line "RESULT model=... mode=... ms_step=... tok_s=... mfu=..." per run.
 * A benchmark, not a test.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qt_cuda.h"
#include "qt_layers.h"
#include "qt_qat.h"
#include "qt_optim.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    const char *model = "gpt2", *qat = "none";
    int B = 8, T = 1024, steps = 10, warmup = 3, profile = 0;
    double peak = 989.0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--model")) model = v;
        else if (!strcmp(k, "--qat")) qat = v;
        else if (!strcmp(k, "--batch")) B = atoi(v);
        else if (!strcmp(k, "--seq")) T = atoi(v);
        else if (!strcmp(k, "--steps")) steps = atoi(v);
        else if (!strcmp(k, "--warmup")) warmup = atoi(v);
        else if (!strcmp(k, "--peak-tflops")) peak = atof(v);
        else if (!strcmp(k, "--profile")) profile = atoi(v);
        else {
            fprintf(stderr, "gpu_train: unknown option %s\n", k);
            return 2;
        }
    }
    if (B < 1 || T < 1 || steps < 1 || warmup < 0 || !(peak > 0)) {
        fprintf(stderr, "gpu_train: --batch, --seq, --steps must be positive\n");
        return 2;
    }
    if (qt_cuda_init(0) != QT_OK) {
        fprintf(stderr, "gpu_train: %s\n", qt_error_message());
        return 1;
    }
    qt_model m;
    memset(&m, 0, sizeof m);
    int L, C, V;
    qt_status st;
    if (!strcmp(model, "gpt2")) {
        qt_gpt2_config c = {.vocab_size = 50257, .n_positions = 1024, .dim = 768,
                            .n_layers = 12, .n_heads = 12, .ffn_dim = 3072, .norm_eps = 1e-5f};
        if (T > c.n_positions) c.n_positions = T;
        m.arch = QT_ARCH_GPT2;
        st = qt_gpt2_init(&m.gpt2, &c, 1);
        L = c.n_layers, C = c.dim, V = c.vocab_size;
    } else if (!strcmp(model, "smollm2")) {
        qt_llama_config c = {.vocab_size = 49152, .dim = 576, .n_layers = 30, .n_heads = 9,
                             .n_kv_heads = 3, .ffn_dim = 1536, .rope_theta = 100000.0f,
                             .norm_eps = 1e-5f, .max_seq_len = T, .tied_embeddings = true};
        m.arch = QT_ARCH_LLAMA;
        st = qt_llama_init(&m.llama, &c, 1);
        L = c.n_layers, C = c.dim, V = c.vocab_size;
    } else {
        fprintf(stderr, "gpu_train: --model gpt2 or smollm2\n");
        return 2;
    }
    if (st != QT_OK) {
        fprintf(stderr, "gpu_train: %s\n", qt_error_message());
        return 1;
    }
    qt_qat *q = NULL;
    if (strcmp(qat, "none")) {
        qt_qat_config qc = {.weight_on = true};
        if (qt_qformat_parse(qat, &qc.weight) != QT_OK || qt_qat_prepare(&q, &m, &qc) != QT_OK) {
            fprintf(stderr, "gpu_train: qat %s: %s\n", qat, qt_error_message());
            return 1;
        }
    }
    qt_paramset *ps = qt_model_params(&m);
    const qt_device gpu = {QT_DEV_CUDA, 0};
    qt_adamw opt;
    qt_adamw_config oc = {.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                          .weight_decay = 0.1f};
    if (qt_adamw_init(&opt, ps, oc) != QT_OK || qt_paramset_to(ps, gpu) != QT_OK ||
        qt_adamw_to_device(&opt, ps) != QT_OK) {
        fprintf(stderr, "gpu_train: %s\n", qt_error_message());
        return 1;
    }
    qt_ctx *ctx = qt_ctx_new();
    qt_ctx_set_device(ctx, gpu);
    qt_ctx_set_compute_dtype(ctx, QT_BF16);
    int32_t *ids = malloc((size_t)B * T * sizeof(int32_t));
    int32_t *tgt = malloc((size_t)B * T * sizeof(int32_t));
    for (int64_t i = 0; i < (int64_t)B * T; i++) {
        ids[i] = (int32_t)(qt_rand_u64(3, (uint64_t)i) % (uint64_t)V);
        tgt[i] = (int32_t)(qt_rand_u64(4, (uint64_t)i) % (uint64_t)V);
    }
    int64_t shape[2] = {B, T};
    double t0 = 0, t_end = 0, t_opt = 0;
    float loss = 0;
    /* the timed steps, then `profile` more steps under the op profiler (not timed) */
    for (int s = 0; s < warmup + steps + profile; s++) {
        if (s == warmup) {
            qt_device_sync(gpu);
            t0 = now_s();
        }
        if (s == warmup + steps) {
            qt_device_sync(gpu);
            t_end = now_s();
            qt_profile_reset();
            qt_profile_enable(true);
        }
        qt_ctx_reset(ctx);
        qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, shape, ids);
        qt_tensor *y = qt_tensor_from(ctx, QT_I32, 2, shape, tgt);
        qt_tensor *l = qt_cross_entropy(ctx, qt_model_forward(ctx, &m, x), y, -100);
        if (!l || qt_backward(ctx, l) != QT_OK) {
            fprintf(stderr, "gpu_train: step %d: %s %s\n", s, qt_ctx_error(ctx),
                    qt_error_message());
            return 1;
        }
        double sq, to = 0;
        if (s >= warmup + steps) {
            qt_device_sync(gpu);
            to = now_s();
        }
        qt_grad_sumsq(ps, &sq); /* the clipping pass a real step has */
        qt_adamw_step(&opt, ps, oc.lr);
        qt_paramset_zero_grad(ps);
        if (s >= warmup + steps) {
            qt_device_sync(gpu);
            t_opt += now_s() - to;
        }
        if (s == warmup + steps - 1) qt_tensor_read(l, &loss);
    }
    if (qt_device_sync(gpu) != QT_OK) {
        fprintf(stderr, "gpu_train: %s\n", qt_error_message());
        return 1;
    }
    if (!profile) t_end = now_s();
    double el = t_end - t0, tok_s = (double)B * T * steps / el;
    double N = (double)ps->n_total;
    double flops_tok = 6.0 * N + 6.0 * L * C * T;
    double mfu = flops_tok * tok_s / (peak * 1e12);
    printf("gpu_train: %s %s, %.1fM params, batch %d x %d, %d steps after %d warm-up, %s, "
           "arena peak %.2f GiB, device memory in use %.2f GiB, last loss %.4f\n",
           model, strcmp(qat, "none") ? qat : "float", N / 1e6, B, T, steps, warmup,
           qt_cuda_device_desc(), (double)qt_ctx_arena_peak_on(ctx, gpu) / (1 << 30),
           (double)qt_cuda_used_bytes() / (1 << 30), loss);
    printf("RESULT model=%s mode=%s ms_step=%.2f tok_s=%.0f mfu=%.4f loss=%.4f\n", model,
           strcmp(qat, "none") ? qat : "bf16", 1e3 * el / steps, tok_s, mfu, loss);
    if (profile) {
        qt_profile_enable(false);
        printf("profile of %s %s (each kernel between two syncs; step time above is unprofiled):\n",
               model, strcmp(qat, "none") ? qat : "bf16");
        qt_profile_report(stdout, profile);
        printf("%-14s %10.2f ms per step (norm + AdamW + zero grad)\n", "optimizer",
               1e3 * t_opt / profile);
    }
    qt_ctx_free(ctx);
    qt_adamw_free(&opt);
    qt_qat_free(q);
    qt_model_free(&m);
    free(ids);
    free(tgt);
    return isfinite(loss) ? 0 : 1;
}
