/*
 * bench_qat.c - what QAT costs per training step on CPU: the same Llama, batch and
 * threads, one forward + backward + AdamW step with fake-quant on every Linear of the
 * decoder (q/k/v/o/gate/up/down) vs the float model, in the same process. Formats are
 * interleaved round by round so that machine noise hits all of them alike; the median
 * step time of each is printed with its ratio to float (goal: <= 1.15x).
 *
 * usage: bench_qat [--threads N] [--reps R] [--dim D] [--layers L] [--ffn F]
 *                  [--batch B] [--seq T]
 * A benchmark, not a test: never registered with CTest.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qt_layers.h"
#include "qt_qat.h"
#include "bench_util.h"
#include "qt_optim.h"



typedef struct {
    const char *name;
    const char *format; /* NULL: float */
    bool act;           /* + int8 dynamic per-token activations */
} config;

int main(int argc, char **argv) {
    qt_blas_reexec_if_slow(argv);
    bench_opts o;
    if (bench_parse(argc, argv, "bench_qat", false, &o)) return 2;
    int threads = o.threads, reps = o.reps, dim = o.dim, layers = o.layers, ffn = o.ffn,
        batch = o.batch, seq = o.seq;
    qt_set_num_threads(threads);
    const config cfgs[] = {
        {"float", NULL, false},       {"int4 g32", "int4", false}, {"8da4w", "int4", true},
        {"int8 g32", "int8", false},  {"nf4 b64 dq", "nf4", false}, {"fp8_e4m3", "fp8_e4m3", false},
        {"q4_k", "q4_k", false},      {"q8_0", "q8_0", false},
    };
    enum { N = sizeof cfgs / sizeof cfgs[0] };
    qt_llama_config lc = {.vocab_size = 256, .dim = dim, .n_layers = layers, .n_heads = dim / 64,
                          .n_kv_heads = dim / 128 ? dim / 128 : 1, .ffn_dim = ffn,
                          .rope_theta = 10000.0f, .norm_eps = 1e-5f, .max_seq_len = seq,
                          .tied_embeddings = true};
    qt_model m = {.arch = QT_ARCH_LLAMA};
    if (qt_llama_init(&m.llama, &lc, 1) != QT_OK) {
        fprintf(stderr, "bench_qat: %s\n", qt_error_message());
        return 1;
    }
    qt_paramset *ps = qt_model_params(&m);
    qt_adamw opt;
    qt_adamw_config oc = {.lr = 1e-5f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f};
    qt_adamw_init(&opt, ps, oc);
    qt_ctx *ctx = qt_ctx_new();
    int32_t *ids, *tgt;
    bench_tokens((int64_t)batch * seq, 256, &ids, &tgt);
    int64_t shape[2] = {batch, seq};
    double *t = calloc((size_t)N * (reps + 1), sizeof(double));
    for (int r = 0; r <= reps; r++) /* round 0 warms up */
        for (int c = 0; c < N; c++) {
            qt_qat *q = NULL;
            if (cfgs[c].format) {
                qt_qat_config qc = {.weight_on = true};
                qt_qformat_parse(cfgs[c].format, &qc.weight);
                if (cfgs[c].act) qc.act = (qt_act_config){.mode = QT_ACT_DYNAMIC_TOKEN, .bits = 8};
                if (qt_qat_prepare(&q, &m, &qc) != QT_OK) {
                    fprintf(stderr, "bench_qat: %s: %s\n", cfgs[c].name, qt_error_message());
                    return 1;
                }
            }
            double t0 = bench_now_s();
            qt_ctx_reset(ctx);
            qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, shape, ids);
            qt_tensor *y = qt_tensor_from(ctx, QT_I32, 2, shape, tgt);
            qt_tensor *l = qt_cross_entropy(ctx, qt_model_forward(ctx, &m, x), y, -100);
            if (!l || qt_backward(ctx, l) != QT_OK) {
                fprintf(stderr, "bench_qat: %s: %s\n", cfgs[c].name, qt_ctx_error(ctx));
                return 1;
            }
            qt_adamw_step(&opt, ps, 1e-5f);
            qt_paramset_zero_grad(ps);
            t[c * (reps + 1) + r] = bench_now_s() - t0;
            qt_qat_free(q);
        }
    double base = 0;
    printf("bench_qat: Llama dim %d, %d layers, ffn %d, %.1fM params; batch %d x %d tokens; "
           "%d threads; median of %d steps (fwd + bwd + AdamW)\n", dim, layers, ffn,
           (double)ps->n_total / 1e6, batch, seq, threads, reps);
    printf("%-14s %10s %8s\n", "fake-quant", "ms/step", "ratio");
    for (int c = 0; c < N; c++) {
        double *row = t + c * (reps + 1) + 1;
        qsort(row, (size_t)reps, sizeof *row, bench_cmp_double);
        double med = row[reps / 2] * 1e3;
        if (c == 0) base = med;
        printf("%-14s %10.1f %7.3fx\n", cfgs[c].name, med, med / base);
    }
    printf("(ratio = step time / float step time; goal <= 1.15x)\n");
    free(t);
    free(ids);
    free(tgt);
    qt_ctx_free(ctx);
    qt_adamw_free(&opt);
    qt_model_free(&m);
    return 0;
}
