/*
 * bench_ops.c - forward+backward timings of the engine's heavy ops at transformer
 * shapes (GPT-2 small / Llama-like: T = 512, dim 768, ffn 3072, 12 heads of 64, 4 kv
 * heads, vocab 32000), for comparison with PyTorch eager (bench_torch.py runs the SAME
 * cases; bench/run.sh prints the ratios).
 *
 * Method, identical in both scripts: inputs are built once (f32 inputs require grad);
 * one repetition is { reset the step; clear the inputs' grads; forward; backward from a
 * fixed random dy (1 for a scalar loss) }, timed with a monotonic clock; W warm-up
 * repetitions are dropped and the median of R timed ones is reported.
 *
 * Surprising on purpose: the inputs live in their own context, not in the step context
 * that qt_ctx_reset empties, so a repetition does not pay for re-copying its inputs
 * (65 MB of logits for cross_entropy). Their grads are allocated by backward in the step
 * arena, so the pointer is cleared before each repetition (torch: x.grad = None).
 *
 * Usage: bench_ops [--threads N] [--reps R] [--warmup W] [--case SUBSTR] [--json]
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qt_autograd.h"

#define MAX_IN 10

/* Model dims the cases share. */
enum { T = 512, DIM = 768, FFN = 3072, NH = 12, NKV = 4, HD = 64, VOCAB = 32000 };
#define NORM_EPS 1e-5f
#define ROPE_THETA 10000.0f

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[QT_MAX_DIMS];
    float std;       /* f32: normal(0, std); 0 means an i32 input in [0, VOCAB) */
} in_spec;

typedef qt_tensor *(*fwd_fn)(qt_ctx *ctx, qt_tensor **in);

typedef struct {
    const char *name;
    fwd_fn fwd;
    int n_in;
    in_spec in[MAX_IN];
    double gflop; /* nominal fwd+bwd GFLOP of the matmuls, 0 where not meaningful */
} bench_case;

/* ---- forwards ------------------------------------------------------------------- */

/* y = x W^T, as a Linear layer stores W (out, in). */
static qt_tensor *fwd_linear(qt_ctx *ctx, qt_tensor **in) {
    return qt_matmul(ctx, in[0], in[1], false, true);
}
static qt_tensor *fwd_bmm(qt_ctx *ctx, qt_tensor **in) {
    return qt_matmul(ctx, in[0], in[1], false, false);
}
static qt_tensor *fwd_attention(qt_ctx *ctx, qt_tensor **in) {
    return qt_attention(ctx, in[0], in[1], in[2], 0.0f);
}
static qt_tensor *fwd_rmsnorm(qt_ctx *ctx, qt_tensor **in) {
    return qt_rmsnorm(ctx, in[0], in[1], NORM_EPS);
}
static qt_tensor *fwd_swiglu(qt_ctx *ctx, qt_tensor **in) {
    return qt_swiglu(ctx, in[0], in[1]);
}
static qt_tensor *fwd_cross_entropy(qt_ctx *ctx, qt_tensor **in) {
    return qt_cross_entropy(ctx, in[0], in[1], -100);
}

/* (1, T, nh*HD) -> (1, nh, T, HD) */
static qt_tensor *split_heads(qt_ctx *ctx, qt_tensor *x, int64_t nh) {
    int64_t s[4] = {1, T, nh, HD};
    return qt_transpose(ctx, qt_reshape(ctx, x, 4, s), 1, 2);
}

/* One pre-norm Llama block: x (1, T, DIM); in: x, attn_norm, wq, wk, wv, wo, mlp_norm,
 * w_gate, w_up, w_down. */
static qt_tensor *fwd_block(qt_ctx *ctx, qt_tensor **in) {
    qt_tensor *x = in[0];
    qt_tensor *h = qt_rmsnorm(ctx, x, in[1], NORM_EPS);
    qt_tensor *q = split_heads(ctx, qt_matmul(ctx, h, in[2], false, true), NH);
    qt_tensor *k = split_heads(ctx, qt_matmul(ctx, h, in[3], false, true), NKV);
    qt_tensor *v = split_heads(ctx, qt_matmul(ctx, h, in[4], false, true), NKV);
    q = qt_rope(ctx, q, ROPE_THETA, 0);
    k = qt_rope(ctx, k, ROPE_THETA, 0);
    qt_tensor *a = qt_transpose(ctx, qt_attention(ctx, q, k, v, 0.0f), 1, 2);
    int64_t s[3] = {1, T, DIM};
    a = qt_reshape(ctx, a, 3, s);
    qt_tensor *x2 = qt_add(ctx, x, qt_matmul(ctx, a, in[5], false, true));
    qt_tensor *h2 = qt_rmsnorm(ctx, x2, in[6], NORM_EPS);
    qt_tensor *m = qt_swiglu(ctx, qt_matmul(ctx, h2, in[7], false, true),
                             qt_matmul(ctx, h2, in[8], false, true));
    return qt_add(ctx, x2, qt_matmul(ctx, m, in[9], false, true));
}

/* ---- the cases (bench_torch.py lists the same, in the same order) ------------------ */

#define MM_GFLOP(M, N, K) (3.0 * 2.0 * (M) * (N) * (K) / 1e9) /* fwd + dA + dB */
/* causal attention: fwd QK^T and PV on half the (T x T) scores, bwd 2.5x fwd */
#define ATTN_GFLOP(H) (3.5 * 2.0 * 2.0 * (H) * (double)T * T * HD / 2.0 / 1e9)

static const bench_case CASES[] = {
    {"linear_768x3072", fwd_linear, 2,
     {{"x", 2, {T, DIM}, 1.0f}, {"w", 2, {FFN, DIM}, 0.036f}}, MM_GFLOP(T, FFN, DIM)},
    {"linear_3072x768", fwd_linear, 2,
     {{"x", 2, {T, FFN}, 1.0f}, {"w", 2, {DIM, FFN}, 0.018f}}, MM_GFLOP(T, DIM, FFN)},
    {"bmm_8x512x64x512", fwd_bmm, 2,
     {{"a", 3, {8, T, HD}, 1.0f}, {"b", 3, {8, HD, T}, 1.0f}}, 8 * MM_GFLOP(T, T, HD)},
    {"attention_gqa_12q4kv", fwd_attention, 3,
     {{"q", 4, {1, NH, T, HD}, 1.0f}, {"k", 4, {1, NKV, T, HD}, 1.0f},
      {"v", 4, {1, NKV, T, HD}, 1.0f}},
     ATTN_GFLOP(NH)},
    {"attention_mha_12h", fwd_attention, 3,
     {{"q", 4, {1, NH, T, HD}, 1.0f}, {"k", 4, {1, NH, T, HD}, 1.0f},
      {"v", 4, {1, NH, T, HD}, 1.0f}},
     ATTN_GFLOP(NH)},
    {"rmsnorm_512x768", fwd_rmsnorm, 2, {{"x", 2, {T, DIM}, 1.0f}, {"w", 1, {DIM}, 1.0f}}, 0},
    {"swiglu_512x3072", fwd_swiglu, 2,
     {{"gate", 2, {T, FFN}, 1.0f}, {"up", 2, {T, FFN}, 1.0f}}, 0},
    {"cross_entropy_512x32000", fwd_cross_entropy, 2,
     {{"logits", 2, {T, VOCAB}, 1.0f}, {"targets", 1, {T}, 0.0f}}, 0},
    {"llama_block_768", fwd_block, 10,
     {{"x", 3, {1, T, DIM}, 1.0f},
      {"attn_norm", 1, {DIM}, 1.0f},
      {"wq", 2, {NH * HD, DIM}, 0.036f},
      {"wk", 2, {NKV * HD, DIM}, 0.036f},
      {"wv", 2, {NKV * HD, DIM}, 0.036f},
      {"wo", 2, {DIM, NH * HD}, 0.036f},
      {"mlp_norm", 1, {DIM}, 1.0f},
      {"w_gate", 2, {FFN, DIM}, 0.036f},
      {"w_up", 2, {FFN, DIM}, 0.036f},
      {"w_down", 2, {DIM, FFN}, 0.018f}},
     MM_GFLOP(T, (NH + 2 * NKV) * HD, DIM) + MM_GFLOP(T, DIM, NH * HD) +
         2 * MM_GFLOP(T, FFN, DIM) + MM_GFLOP(T, DIM, FFN) + ATTN_GFLOP(NH)},
};
#define N_CASES ((int)(sizeof CASES / sizeof CASES[0]))

/* ---- timing ---------------------------------------------------------------------- */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct {
    double ms, min_ms, fwd_ms, bwd_ms;
} result;

static int64_t spec_numel(const in_spec *s) {
    int64_t n = 1;
    for (int d = 0; d < s->ndim; d++) n *= s->shape[d];
    return n;
}

/* Builds the inputs in `ictx` (seeded per case and input, so runs are repeatable). */
static bool make_inputs(qt_ctx *ictx, const bench_case *c, int ci, qt_tensor **in) {
    for (int i = 0; i < c->n_in; i++) {
        const in_spec *s = &c->in[i];
        int64_t n = spec_numel(s);
        uint64_t seed = 1000u * (uint64_t)ci + (uint64_t)i;
        void *buf = malloc((size_t)n * 4);
        if (!buf) return false;
        if (s->std > 0.0f) {
            float *f = buf;
            for (int64_t j = 0; j < n; j++) f[j] = s->std * qt_rand_normal(seed, (uint64_t)j);
        } else {
            int32_t *t = buf;
            for (int64_t j = 0; j < n; j++)
                t[j] = (int32_t)(qt_rand_u64(seed, (uint64_t)j) % VOCAB);
        }
        in[i] = qt_tensor_from(ictx, s->std > 0.0f ? QT_F32 : QT_I32, s->ndim, s->shape, buf);
        free(buf);
        if (!in[i]) return false;
        in[i]->requires_grad = s->std > 0.0f;
    }
    return true;
}

static bool run_case(const bench_case *c, int ci, int warmup, int reps, result *res) {
    qt_ctx *ictx = qt_ctx_new(), *ctx = qt_ctx_new();
    qt_tensor *in[MAX_IN] = {0};
    float *dy = NULL;
    double *tot = malloc((size_t)reps * sizeof *tot);
    double *fw = malloc((size_t)reps * sizeof *fw), *bw = malloc((size_t)reps * sizeof *bw);
    bool ok = false;
    if (!ictx || !ctx || !tot || !fw || !bw) {
        fprintf(stderr, "%s: out of memory\n", c->name);
        goto done;
    }
    if (!make_inputs(ictx, c, ci, in)) {
        fprintf(stderr, "%s: making inputs: %s\n", c->name, qt_ctx_error(ictx));
        goto done;
    }
    for (int r = 0; r < warmup + reps; r++) {
        double t0 = now_ms();
        qt_ctx_reset(ctx);
        for (int i = 0; i < c->n_in; i++) in[i]->grad = NULL;
        qt_tensor *y = c->fwd(ctx, in);
        double t1 = now_ms();
        if (!y) {
            fprintf(stderr, "%s: forward failed: %s\n", c->name, qt_ctx_error(ctx));
            goto done;
        }
        if (!dy) { /* first pass: the fixed upstream gradient, outside any timing */
            int64_t n = qt_numel(y);
            dy = malloc((size_t)n * sizeof *dy);
            if (!dy) {
                fprintf(stderr, "%s: out of memory\n", c->name);
                goto done;
            }
            for (int64_t j = 0; j < n; j++)
                dy[j] = n == 1 ? 1.0f : qt_rand_normal(777u + (uint64_t)ci, (uint64_t)j);
            t0 += now_ms() - t1; /* do not charge the dy set-up to this (warm-up) pass */
            t1 = now_ms();
        }
        qt_status st = qt_backward_from(ctx, y, dy);
        double t2 = now_ms();
        if (st != QT_OK) {
            fprintf(stderr, "%s: backward failed: %s\n", c->name, qt_error_message());
            goto done;
        }
        if (r >= warmup) {
            tot[r - warmup] = t2 - t0;
            fw[r - warmup] = t1 - t0;
            bw[r - warmup] = t2 - t1;
        }
    }
    /* sanity, untimed: every f32 input got a finite gradient */
    for (int i = 0; i < c->n_in; i++) {
        if (!in[i]->requires_grad) continue;
        if (!in[i]->grad) {
            fprintf(stderr, "%s: input %s got no gradient\n", c->name, c->in[i].name);
            goto done;
        }
        int64_t n = qt_numel(in[i]);
        for (int64_t j = 0; j < n; j++)
            if (!isfinite(in[i]->grad[j])) {
                fprintf(stderr, "%s: gradient of %s is not finite at %lld\n", c->name,
                        c->in[i].name, (long long)j);
                goto done;
            }
    }
    res->fwd_ms = median(fw, reps);
    res->bwd_ms = median(bw, reps);
    res->ms = median(tot, reps); /* sorts tot: min is then tot[0] */
    res->min_ms = tot[0];
    ok = true;
done:
    free(tot);
    free(fw);
    free(bw);
    free(dy);
    qt_ctx_free(ctx);
    qt_ctx_free(ictx);
    return ok;
}

/* ---- main ------------------------------------------------------------------------ */

static void usage(FILE *f) {
    fprintf(f, "usage: bench_ops [--threads N] [--reps R] [--warmup W] [--case SUBSTR] "
               "[--json] [--list]\n");
}

static bool parse_int(const char *s, int lo, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > 1000000) return false;
    *out = (int)v;
    return true;
}

int main(int argc, char **argv) {
    qt_blas_reexec_if_slow(argv); /* OpenBLAS kernels for this CPU, as qtrain does */
    int threads = 0, reps = 20, warmup = 3;
    bool json = false;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--list")) {
            for (int c = 0; c < N_CASES; c++) printf("%s\n", CASES[c].name);
            return 0;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (v && !strcmp(a, "--threads") && parse_int(v, 1, &threads)) {
            i++;
        } else if (v && !strcmp(a, "--reps") && parse_int(v, 1, &reps)) {
            i++;
        } else if (v && !strcmp(a, "--warmup") && parse_int(v, 0, &warmup)) {
            i++;
        } else if (v && !strcmp(a, "--case")) {
            only = v;
            i++;
        } else {
            fprintf(stderr, "bench_ops: bad argument '%s'%s%s\n", a, v ? " " : "", v ? v : "");
            usage(stderr);
            return 2;
        }
    }
    if (threads > 0) qt_set_num_threads(threads);
    threads = qt_get_num_threads();

    const char *coretype = getenv("OPENBLAS_CORETYPE");
    if (json)
        printf("{\"meta\": true, \"threads\": %d, \"reps\": %d, \"warmup\": %d, "
               "\"openblas_core\": \"%s\", \"openblas_config\": \"%s\", "
               "\"openblas_coretype_env\": \"%s\"}\n",
               threads, reps, warmup, openblas_get_corename(), openblas_get_config(),
               coretype ? coretype : "");
    else
        printf("# threads %d, reps %d (median), warmup %d, %s, core %s%s%s\n", threads,
               reps, warmup, openblas_get_config(), openblas_get_corename(),
               coretype ? ", OPENBLAS_CORETYPE=" : "", coretype ? coretype : "");
    fflush(stdout);

    int ran = 0;
    for (int c = 0; c < N_CASES; c++) {
        if (only && !strstr(CASES[c].name, only)) continue;
        result r;
        if (!run_case(&CASES[c], c, warmup, reps, &r)) return 1;
        ran++;
        if (json) {
            printf("{\"case\": \"%s\", \"ms\": %.4f, \"min_ms\": %.4f, \"fwd_ms\": %.4f, "
                   "\"bwd_ms\": %.4f, \"reps\": %d, \"threads\": %d",
                   CASES[c].name, r.ms, r.min_ms, r.fwd_ms, r.bwd_ms, reps, threads);
            if (CASES[c].gflop > 0)
                printf(", \"gflop\": %.4f, \"gflops\": %.2f", CASES[c].gflop,
                       CASES[c].gflop / (r.ms * 1e-3));
            printf("}\n");
        } else {
            printf("%s %.3f\n", CASES[c].name, r.ms);
        }
        fflush(stdout);
    }
    if (!ran) {
        fprintf(stderr, "bench_ops: no case matches '%s' (see --list)\n", only ? only : "");
        return 2;
    }
    return 0;
}
