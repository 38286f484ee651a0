/*
 * bench_lora.c - what QLoRA costs per training step against LoRA on a float base (issue
 * 6's benchmark): the same Llama, batch and threads, one forward + backward + AdamW
 * step over the adapters (r 16, all-linear), the base float (LoRA) or NF4 with double
 * quant (QLoRA), rounds interleaved so machine noise hits both alike; the median step
 * of each and their ratio (goal <= 1.3x). Also the storage of the adapted base weights:
 * f32 for LoRA, the packed NF4 for QLoRA (bytes actually held), and their ratio (4.127/32
 * expected).
 *
 * usage: bench_lora [--threads N] [--reps R] [--dim D] [--layers L] [--ffn F]
 *                   [--batch B] [--seq T] [--rank r]
 * A benchmark, not a test: never registered with CTest.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lora_internal.h"
#include "bench_util.h"
#include "qt_optim.h"


/* resident memory of this process, bytes (/proc/self/statm) */
static double rss_bytes(void) {
    long pages = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return (double)res * 4096.0;
}


int main(int argc, char **argv) {
    qt_blas_reexec_if_slow(argv);
    bench_opts o;
    if (bench_parse(argc, argv, "bench_lora", true, &o)) return 2;
    int threads = o.threads, reps = o.reps, dim = o.dim, layers = o.layers, ffn = o.ffn,
        batch = o.batch, seq = o.seq, rank = o.rank;
    qt_set_num_threads(threads);
    qt_llama_config lc = {.vocab_size = 256, .dim = dim, .n_layers = layers, .n_heads = dim / 64,
                          .n_kv_heads = dim / 128 ? dim / 128 : 1, .ffn_dim = ffn,
                          .rope_theta = 10000.0f, .norm_eps = 1e-5f, .max_seq_len = seq,
                          .tied_embeddings = true};
    qt_model m[2];
    qt_lora *l[2] = {NULL, NULL};
    qt_adamw opt[2];
    double rss_delta[2]; /* resident memory the attach added (QLoRA: minus the f32 released) */
    for (int k = 0; k < 2; k++) {
        memset(&m[k], 0, sizeof m[k]);
        m[k].arch = QT_ARCH_LLAMA;
        qt_lora_config c = {.rank = rank, .alpha = 16, .nf4 = k == 1, .seed = 1};
        qt_adamw_config oc = {.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
        if (qt_llama_init(&m[k].llama, &lc, 1) != QT_OK) {
            fprintf(stderr, "bench_lora: %s\n", qt_error_message());
            return 1;
        }
        double r0 = rss_bytes();
        if (qt_lora_attach(&l[k], &m[k], &c) != QT_OK ||
            qt_adamw_init(&opt[k], &l[k]->params, oc) != QT_OK) {
            fprintf(stderr, "bench_lora: %s\n", qt_error_message());
            return 1;
        }
        rss_delta[k] = rss_bytes() - r0;
    }
    qt_ctx *ctx = qt_ctx_new();
    int32_t *ids, *tgt;
    bench_tokens((int64_t)batch * seq, 256, &ids, &tgt);
    int64_t shape[2] = {batch, seq};
    double *t = calloc((size_t)2 * (reps + 1), sizeof(double));
    for (int r = 0; r <= reps; r++) /* round 0 warms up */
        for (int k = 0; k < 2; k++) {
            double t0 = bench_now_s();
            qt_ctx_reset(ctx);
            qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, shape, ids);
            qt_tensor *y = qt_tensor_from(ctx, QT_I32, 2, shape, tgt);
            qt_tensor *loss = qt_cross_entropy(ctx, qt_model_forward(ctx, &m[k], x), y, -100);
            if (!loss || qt_backward(ctx, loss) != QT_OK ||
                qt_adamw_step(&opt[k], &l[k]->params, 1e-4f) != QT_OK) {
                fprintf(stderr, "bench_lora: %s %s\n", qt_ctx_error(ctx), qt_error_message());
                return 1;
            }
            qt_paramset_zero_grad(&l[k]->params);
            t[k * (reps + 1) + r] = bench_now_s() - t0;
        }
    double med[2];
    for (int k = 0; k < 2; k++) {
        double *row = t + k * (reps + 1) + 1;
        qsort(row, (size_t)reps, sizeof *row, bench_cmp_double);
        med[k] = row[reps / 2] * 1e3;
    }
    double f32_bytes = 0, nf4_bytes = 0;
    for (int i = 0; i < l[1]->n; i++) {
        f32_bytes += 4.0 * (double)qt_numel(l[1]->layers[i].w);
        nf4_bytes += (double)qt_nf4_base_bytes(l[1]->layers[i].nf4);
    }
    printf("bench_lora: Llama dim %d, %d layers, ffn %d, %.1fM params; LoRA r %d all-linear "
           "(%zu adapter params); batch %d x %d; %d threads; median of %d steps\n", dim, layers,
           ffn, (double)qt_model_params(&m[0])->n_total / 1e6, rank, l[0]->params.n_total, batch,
           seq, threads, reps);
    printf("%-22s %10s %8s %16s\n", "base", "ms/step", "ratio", "base storage MiB");
    printf("%-22s %10.1f %8.2f %16.2f\n", "float (LoRA)", med[0], 1.0, f32_bytes / 1048576.0);
    printf("%-22s %10.1f %8.2f %16.2f  (%.4f bits/param, %.4f of f32)\n", "NF4 + dq (QLoRA)",
           med[1], med[1] / med[0], nf4_bytes / 1048576.0, qt_lora_nf4_bits(l[1]),
           nf4_bytes / f32_bytes);
    printf("resident memory change at attach (adapters, their optimizer state, and for QLoRA "
           "the NF4 minus the released f32 copies): LoRA %+.1f MiB, QLoRA %+.1f MiB\n",
           rss_delta[0] / 1048576.0, rss_delta[1] / 1048576.0);
    for (int k = 0; k < 2; k++) {
        qt_adamw_free(&opt[k]);
        qt_lora_free(l[k]);
        qt_model_free(&m[k]);
    }
    qt_ctx_free(ctx);
    free(ids);
    free(tgt);
    free(t);
    return 0;
}
