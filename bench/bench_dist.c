/*
 * bench_dist.c - data-parallel step time and the bytes each rank moves per step.
 * Run under mpirun by bench/dist.sh, which compares 1 and N ranks (scaling efficiency)
 * and sets the transport.
 *
 *   [mpirun -np N] bench_dist [--data FILE] [--steps S] [--batch B] [--threads T]
 *                             [--bucket-mb M] [--no-overlap]
 *
 * The quickstart recipe's model (Llama, dim 128, 4 layers, 0.8M parameters, byte tokens
 * of FILE, windows of 128) trains S steps of the training loop's own sequence: forward,
 * backward with the gradient buckets armed (qt_dist_grads_arm), qt_dist_grads_finish,
 * global-norm clipping, AdamW. 3 warm-up steps come first. Per step, on every rank:
 *   - step time (the median; ranks move in lockstep, so rank 0's is the job's);
 *   - wait: time in qt_dist_grads_finish, the communication backward did not hide; on
 *     the rank that waits least (the last to arrive: the transfer itself) and the one
 *     that waits most (that plus the ranks' imbalance), medians;
 *   - payload: bytes handed to collectives (qt_dist's counter);
 *   - wire: bytes that crossed the loopback interface during the timed steps, divided by
 *     the ranks (/proc/net/dev: with Open MPI's TCP transport, --mca btl self,tcp, every
 *     byte one rank sends another on this machine goes through it, IP and TCP headers
 *     included; with shared memory none does and the column reads 0). The machine
 *     should be otherwise quiet on the network.
 * The ring all-reduce's lower bound is 2 (N-1)/N x gradient bytes per rank per step.
 * Rank 0 prints one line "bench_dist: key value ...".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "qt_data.h"
#include "qt_dist.h"
#include "qt_layers.h"
#include "qt_optim.h"

/* Bytes sent through the loopback interface so far (Linux /proc/net/dev, "lo"). Ranks on
 * one machine that talk TCP (Open MPI's --mca btl self,tcp) send every byte there, with
 * the IP and TCP headers (about 0.1% at loopback's 64 KiB MTU). */
static double loopback_tx(void) {
    FILE *f = fopen("/proc/net/dev", "r");
    if (!f) return -1;
    char line[512];
    double out = -1;
    while (fgets(line, sizeof line, f)) {
        char *c = strchr(line, ':');
        if (!c) continue;
        *c = 0;
        char *name = line;
        while (*name == ' ') name++;
        if (strcmp(name, "lo")) continue;
        unsigned long long v[9];
        if (sscanf(c + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7], &v[8]) == 9)
            out = (double)v[8]; /* transmit bytes */
    }
    fclose(f);
    return out;
}

static int fail(qt_dist *d, const char *what) {
    fprintf(stderr, "bench_dist: rank %d: %s: %s\n", d->rank, what, qt_error_message());
    fflush(stderr);
    qt_dist_abort(d, 1); /* ends every rank; returns in a single process */
    qt_dist_finalize(d);
    return 1;
}

int main(int argc, char **argv) {
    qt_blas_reexec_if_slow(argv); /* as qtrain: OpenBLAS's own kernels for this CPU */
    const char *data = "build/data/fortunes.txt";
    int steps = 20, batch = 16, threads = 1;
    double bucket_mb = 25;
    bool overlap = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bucket-mb") && i + 1 < argc) bucket_mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--no-overlap")) overlap = false;
        else {
            fprintf(stderr, "usage: [mpirun -np N] bench_dist [--data FILE] [--steps S] "
                            "[--batch B] [--threads T] [--bucket-mb M] [--no-overlap]\n");
            return 2;
        }
    }
    if (steps < 1 || batch < 1 || threads < 1 || !(bucket_mb > 0)) {
        fprintf(stderr, "bench_dist: --steps, --batch, --threads and --bucket-mb must be > 0\n");
        return 2;
    }
    qt_dist d;
    if (qt_dist_init(&d) != QT_OK) {
        fprintf(stderr, "bench_dist: %s\n", qt_error_message());
        return 1;
    }
    qt_set_num_threads(threads);
    const int seq = 128, warm = 3;
    qt_dataset ds;
    if (qt_dataset_open_bytes(&ds, data, seq, 0.02f, 1337) != QT_OK) return fail(&d, "data");
    if (d.world > 1 && qt_dataset_shard(&ds, d.rank, d.world) != QT_OK) return fail(&d, "shard");
    qt_llama_config lc = {.vocab_size = 256, .dim = 128, .n_layers = 4, .n_heads = 4,
                          .n_kv_heads = 2, .ffn_dim = 384, .max_seq_len = 256,
                          .rope_theta = 10000.0f, .norm_eps = 1e-5f};
    qt_model m = {.arch = QT_ARCH_LLAMA};
    if (qt_llama_init(&m.llama, &lc, 1337) != QT_OK) return fail(&d, "model");
    qt_paramset *ps = qt_model_params(&m);
    qt_adamw opt;
    qt_adamw_config oc = {.lr = 2e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                          .weight_decay = 0.1f};
    if (qt_adamw_init(&opt, ps, oc) != QT_OK) return fail(&d, "adamw");
    qt_dist_grads *g = NULL;
    qt_dist_grads_config gc = {.bucket_bytes = (size_t)(bucket_mb * 1048576.0), .overlap = overlap};
    if (d.world > 1 && qt_dist_grads_new(&d, &ps, 1, &gc, &g) != QT_OK) return fail(&d, "grads");
    qt_ctx *ctx = qt_ctx_new();
    int32_t *ids = malloc((size_t)batch * seq * sizeof(int32_t));
    int32_t *tgt = malloc((size_t)batch * seq * sizeof(int32_t));
    double *step_s = calloc((size_t)steps, sizeof(double));
    double *wait_s = calloc((size_t)steps, sizeof(double));
    if (!ctx || !ids || !tgt || !step_s || !wait_s) return fail(&d, "out of memory");
    int64_t shape[2] = {batch, seq};
    double bytes0 = 0, tx0 = 0;
    long calls0 = 0;
    qt_dist_barrier(&d);
    for (int s = -warm; s < steps; s++) {
        if (s == 0) { /* the timed steps start together */
            qt_dist_barrier(&d);
            bytes0 = d.bytes, calls0 = d.calls, tx0 = loopback_tx();
        }
        double t0 = bench_now_s(), w0 = d.wait_s;
        qt_ctx_reset(ctx);
        qt_dataset_next(&ds, batch, ids, tgt);
        qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, shape, ids);
        qt_tensor *y = qt_tensor_from(ctx, QT_I32, 2, shape, tgt);
        qt_tensor *l = qt_cross_entropy(ctx, qt_model_forward(ctx, &m, x), y, -100);
        if (g) qt_dist_grads_arm(g, ctx);
        if (!l || qt_backward(ctx, l) != QT_OK) return fail(&d, "step");
        if (g && qt_dist_grads_finish(g, ctx) != QT_OK) return fail(&d, "all-reduce");
        double sq;
        qt_grad_sumsq(ps, &sq);
        if (sqrt(sq) > 1.0) qt_grad_scale(ps, (float)(1.0 / sqrt(sq)));
        if (qt_adamw_step(&opt, ps, 2e-3f) != QT_OK) return fail(&d, "adamw");
        qt_paramset_zero_grad(ps);
        if (s >= 0) {
            step_s[s] = bench_now_s() - t0;
            wait_s[s] = d.wait_s - w0;
        }
    }
    qt_dist_barrier(&d);
    double tx = (loopback_tx() - tx0) / d.world / steps; /* every rank's: a share each */
    double payload = (d.bytes - bytes0) / steps, calls = (double)(d.calls - calls0) / steps;
    double med_step = bench_median(step_s, steps), med_wait = bench_median(wait_s, steps);
    double wait_min = med_wait, wait_max = med_wait;
    qt_dist_reduce_f64(&d, &wait_min, 1, QT_DIST_MIN);
    qt_dist_reduce_f64(&d, &wait_max, 1, QT_DIST_MAX);
    qt_dist_reduce_f64(&d, &med_step, 1, QT_DIST_MAX);
    double grad_bytes = (double)ps->n_grad * sizeof(float);
    double ring = d.world > 1 ? 2.0 * (d.world - 1) / d.world * grad_bytes : 0;
    if (d.rank == 0)
        printf("bench_dist: ranks %d threads %d batch %d steps %d ms_per_step %.2f "
               "tok_per_s %.0f grad_mb %.3f payload_mb %.3f wire_mb %.3f ring_mb %.3f "
               "collectives %.1f comm_wait_ms %.2f %.2f overlap %d\n",
               d.world, threads, batch, steps, 1e3 * med_step,
               (double)batch * seq * d.world / med_step, grad_bytes / 1048576.0,
               payload / 1048576.0, d.world > 1 ? tx / 1048576.0 : 0.0, ring / 1048576.0,
               calls, 1e3 * wait_min, 1e3 * wait_max, overlap);
    free(step_s);
    free(wait_s);
    free(ids);
    free(tgt);
    qt_ctx_free(ctx);
    qt_dist_grads_free(g);
    qt_adamw_free(&opt);
    qt_model_free(&m);
    qt_dataset_close(&ds);
    qt_dist_finalize(&d);
    return 0;
}
