/*
 * demo.c - `qtrain demo`: trains a tiny Llama-family model on a built-in copy task, to
 * show the engine end to end on a fresh machine. Each sequence is 16 random tokens,
 * then the same 16 again; the loss is taken on the second half only (the first half is
 * the ignore index), which a model can only predict by attending back 16 positions. A
 * working model drives that loss from ln(vocab) = 4.16 towards 0.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "qt_optim.h"

enum { B = 16, HALF = 16, T = 2 * HALF, V = 64 };

/* --steps N --seed N --threads N; 0 on success, else the exit code. */
static int parse_args(int argc, char **argv, long *steps, long *seed, long *threads) {
    for (int i = 0; i < argc; i++) {
        long *dst = NULL;
        if (!strcmp(argv[i], "--steps")) dst = steps;
        else if (!strcmp(argv[i], "--seed")) dst = seed;
        else if (!strcmp(argv[i], "--threads")) dst = threads;
        else {
            fprintf(stderr, "qtrain demo: unknown option '%s' (options: --steps N, --seed N, "
                            "--threads N)\n", argv[i]);
            return 2;
        }
        if (i + 1 >= argc || !qt_cli_parse_long(argv[i + 1], dst) || *dst < 0 ||
            (dst == steps && *dst == 0)) {
            fprintf(stderr, "qtrain demo: %s needs a %s integer, got '%s'\n", argv[i],
                    dst == steps ? "positive" : "non-negative", i + 1 < argc ? argv[i + 1] : "");
            return 2;
        }
        i++;
    }
    return 0;
}

/* Step `step`'s batch: B sequences of HALF random tokens twice; targets on the second
 * half only (predict token t+1 from tokens <= t; the rest is the ignore index). */
static void copy_batch(long step, long seed, int32_t *ids, int32_t *tgt) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < HALF; t++) {
            uint64_t idx = ((uint64_t)step * B + (uint64_t)b) * HALF + (uint64_t)t;
            int32_t tok = (int32_t)(qt_rand_u64((uint64_t)seed + 1, idx) % V);
            ids[b * T + t] = ids[b * T + t + HALF] = tok;
        }
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            tgt[b * T + t] = (t >= HALF - 1 && t < T - 1) ? ids[b * T + t + 1] : -100;
}

int qt_cmd_demo(int argc, char **argv) {
    long steps = 300, seed = 1337, threads = 0;
    int rc = parse_args(argc, argv, &steps, &seed, &threads);
    if (rc) return rc;
    if (threads > 0) qt_set_num_threads((int)threads);

    qt_llama_config cfg = {.vocab_size = V, .dim = 64, .n_layers = 2, .n_heads = 4,
                           .n_kv_heads = 2, .ffn_dim = 128, .rope_theta = 10000.0f,
                           .norm_eps = 1e-5f, .tied_embeddings = false};
    qt_llama model;
    qt_status st = qt_llama_init(&model, &cfg, (uint64_t)seed);
    if (st != QT_OK) {
        fprintf(stderr, "qtrain demo: %s\n", qt_error_message());
        return 1;
    }
    qt_adamw opt;
    qt_adamw_config oc = {.lr = 3e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                          .weight_decay = 0.1f};
    if (qt_adamw_init(&opt, &model.params, oc) != QT_OK) {
        fprintf(stderr, "qtrain demo: %s\n", qt_error_message());
        qt_llama_free(&model);
        return 1;
    }
    qt_ctx *ctx = qt_ctx_new();
    if (!ctx) {
        fprintf(stderr, "qtrain demo: out of memory\n");
        qt_adamw_free(&opt);
        qt_llama_free(&model);
        return 1;
    }
    printf("qtrain demo: tiny Llama (%zu parameters, %d layers, GQA %d/%d heads) on a copy "
           "task, batch %d x %d tokens, %d threads\n",
           model.params.n_total, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, B, T,
           qt_get_num_threads());
    int32_t ids[B * T], tgt[B * T];
    int64_t shape[2] = {B, T};
    double t0 = qt_now_s(), first = 0.0, last = 0.0;
    for (long step = 0; step < steps; step++) {
        copy_batch(step, seed, ids, tgt);
        qt_ctx_reset(ctx);
        qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, shape, ids);
        qt_tensor *y = qt_tensor_from(ctx, QT_I32, 2, shape, tgt);
        qt_tensor *loss = qt_cross_entropy(ctx, qt_llama_forward(ctx, &model, x), y, -100);
        if (!loss || qt_backward(ctx, loss) != QT_OK) {
            fprintf(stderr, "qtrain demo: step %ld failed: %s\n", step,
                    loss ? qt_error_message() : qt_ctx_error(ctx));
            rc = 1;
            break;
        }
        float l = ((float *)loss->data)[0];
        if (!isfinite(l)) {
            fprintf(stderr, "qtrain demo: step %ld: loss is %g, stopping\n", step, (double)l);
            rc = 1;
            break;
        }
        float lr = oc.lr * (step < 30 ? (float)(step + 1) / 30.0f : 1.0f); /* warmup */
        qt_adamw_step(&opt, &model.params, lr);
        qt_paramset_zero_grad(&model.params);
        if (step == 0) first = l;
        last = l;
        if (step % 25 == 0 || step == steps - 1) {
            double el = qt_now_s() - t0;
            printf("step %5ld  loss %.4f  lr %.2e  %.0f tok/s\n", step, (double)l, (double)lr,
                   (double)(step + 1) * B * T / (el > 0 ? el : 1e-9));
            fflush(stdout);
        }
    }
    if (rc == 0)
        printf("qtrain demo: copy-task loss %.4f -> %.4f in %ld steps (%.1f s), arena peak "
               "%.1f MiB\n",
               first, last, steps, qt_now_s() - t0, (double)qt_ctx_arena_peak(ctx) / 1048576.0);
    qt_ctx_free(ctx);
    qt_adamw_free(&opt);
    qt_llama_free(&model);
    return rc;
}
