/*
 * test_cuda_ops.c - every op on the GPU against the CPU reference kernels (label cuda).
 *
 * For each case of op_cases.h (the gradient check's list) and a few model-sized ones:
 * fresh random inputs (normal, never zeros; a new seed every run unless QT_TEST_SEED is
 * set), y = f(inputs) and the input grads of L = sum w*y on the CPU and on the GPU, in
 * two GPU modes:
 *   f32:  the same f32 inputs; tolerance ||gpu - cpu|| / ||cpu|| <= 2e-5 (f32 arithmetic
 *         in another order; cuBLAS in true fp32);
 *   bf16: float inputs cast to bf16 on the GPU, the output cast back to f32; the CPU
 *         reference runs on the same bf16-rounded inputs, so only the GPU's bf16 storage
 *         of intermediates and outputs counts; tolerance 2e-2 (bf16 keeps 8 bits, 4e-3
 *         relative per value; matrix products and reductions add a few roundings).
 * Every value is also checked finite. No GPU: exit 77, which CTest reports as skipped.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "op_cases.h"
#include "gpu_test.h"
#include "testutil.h"

#define TOL_F32 2e-5
#define TOL_BF16 2e-2

/* model-sized cases: the shapes a 124M-parameter model's step runs */
static qt_tensor *f_mm_linear(qt_ctx *c, qt_tensor **x) { return qt_matmul(c, x[0], x[1], false, true); }
static qt_tensor *f_attn_big(qt_ctx *c, qt_tensor **x) { return qt_attention(c, x[0], x[1], x[2], 0.0f); }
static qt_tensor *f_ce_big(qt_ctx *c, qt_tensor **x) { return qt_cross_entropy(c, x[0], x[1], -100); }
static qt_tensor *f_rms_big(qt_ctx *c, qt_tensor **x) { return qt_rmsnorm(c, x[0], x[1], 1e-5f); }
static qt_tensor *f_ln_big(qt_ctx *c, qt_tensor **x) { return qt_layernorm(c, x[0], x[1], x[2], 1e-5f); }
static qt_tensor *f_rope_big(qt_ctx *c, qt_tensor **x) { return qt_rope(c, x[0], 10000.0f, 0); }
static qt_tensor *f_softmax_big(qt_ctx *c, qt_tensor **x) { return qt_softmax(c, x[0]); }

static const gcase big_cases[] = {
    {"BIG linear 256x768 @ 2304x768^T", QT_OP_MATMUL, 2, {3, 2}, {{2, 128, 768}, {2304, 768}},
     {0}, {0}, f_mm_linear},
    {"BIG attention 2x8x300x64 gqa", QT_OP_ATTENTION, 3, {4, 4, 4},
     {{2, 8, 300, 64}, {2, 4, 300, 64}, {2, 4, 300, 64}}, {0}, {0}, f_attn_big},
    {"BIG attention 1x4x200x128", QT_OP_ATTENTION, 3, {4, 4, 4},
     {{1, 4, 200, 128}, {1, 4, 200, 128}, {1, 4, 200, 128}}, {0}, {0}, f_attn_big},
    {"BIG cross_entropy 64x50257", QT_OP_CROSS_ENTROPY, 2, {2, 1}, {{64, 50257}, {64}},
     {0, 50257}, {0}, f_ce_big},
    {"BIG rmsnorm 512x576", QT_OP_RMSNORM, 2, {2, 1}, {{512, 576}, {576}}, {0}, {0}, f_rms_big},
    {"BIG layernorm 512x768", QT_OP_LAYERNORM, 3, {2, 1, 1}, {{512, 768}, {768}, {768}}, {0},
     {0}, f_ln_big},
    {"BIG rope 2x9x256x64", QT_OP_ROPE, 1, {4}, {{2, 9, 256, 64}}, {0}, {0}, f_rope_big},
    {"BIG softmax 96x1000", QT_OP_SOFTMAX, 1, {2}, {{96, 1000}}, {0}, {0}, f_softmax_big},
};

typedef struct {
    float *y;          /* output, f32 */
    float *g[MAXIN];   /* input grads */
    int64_t ny, n[MAXIN];
} result;

static void result_free(result *r) {
    free(r->y);
    for (int k = 0; k < MAXIN; k++) free(r->g[k]);
    memset(r, 0, sizeof *r);
}

/* Runs the case on dev; bf16: float inputs are cast to bf16 first and the output back.
 * Returns false (with the reason printed) when the run itself fails. */
static bool run(const gcase *c, void *const *host, const float *w, qt_device dev, bool bf16,
                result *r) {
    qt_ctx *ctx = qt_ctx_new();
    qt_ctx_set_device(ctx, dev);
    qt_tensor *leaf[MAXIN] = {0}, *in[MAXIN] = {0};
    for (int k = 0; k < c->n_in; k++) {
        bool is_int = c->int_range[k] > 0;
        leaf[k] = qt_tensor_from(ctx, is_int ? QT_I32 : QT_F32, c->ndim[k], c->shape[k], host[k]);
        if (!leaf[k]) break;
        leaf[k]->requires_grad = !is_int;
        in[k] = bf16 && !is_int ? qt_cast(ctx, leaf[k], QT_BF16) : leaf[k];
    }
    qt_tensor *y = c->f(ctx, in);
    if (bf16) y = qt_cast(ctx, y, QT_F32);
    bool ok = y != NULL;
    if (ok) {
        r->ny = qt_numel(y);
        r->y = malloc((size_t)r->ny * sizeof(float));
        ok = qt_tensor_read(y, r->y) == QT_OK && qt_backward_from(ctx, y, w) == QT_OK;
    }
    for (int k = 0; ok && k < c->n_in; k++) {
        if (c->int_range[k] > 0) continue;
        r->n[k] = qt_numel(leaf[k]);
        r->g[k] = malloc((size_t)r->n[k] * sizeof(float));
        ok = qt_tensor_read_grad(leaf[k], r->g[k]) == QT_OK;
    }
    if (ok && dev.kind != QT_DEV_CPU) ok = qt_device_sync(dev) == QT_OK;
    if (!ok)
        printf("  %s on %s%s: %s %s\n", c->name, qt_device_name(dev), bf16 ? " bf16" : "",
               qt_ctx_error(ctx), qt_error_message());
    qt_ctx_free(ctx);
    return ok;
}

/* ||a - b|| / ||b||, and whether a is finite everywhere */
static double rel_err(const float *a, const float *b, int64_t n, bool *finite) {
    double d = 0, s = 0;
    *finite = true;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) *finite = false;
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return s > 0 ? sqrt(d / s) : sqrt(d);
}

static void compare(const gcase *c, const char *mode, const result *gpu, const result *cpu,
                    double tol) {
    bool fin;
    double worst = rel_err(gpu->y, cpu->y, cpu->ny, &fin);
    char what[160];
    snprintf(what, sizeof what, "%s [%s] output", c->name, mode);
    qt_check_case(fin && worst <= tol, what, "rel err %.3g (tol %.1g)%s", worst, tol,
                  fin ? "" : ", non-finite values");
    for (int k = 0; k < c->n_in; k++) {
        if (!cpu->g[k]) continue;
        double e = rel_err(gpu->g[k], cpu->g[k], cpu->n[k], &fin);
        snprintf(what, sizeof what, "%s [%s] grad of input %d", c->name, mode, k);
        qt_check_case(fin && e <= tol, what, "rel err %.3g (tol %.1g)%s", e, tol,
                      fin ? "" : ", non-finite values");
        if (e > worst) worst = e;
    }
    printf("  %-34s %-5s worst rel err %.2e (tol %.0e)\n", c->name, mode, worst, tol);
}

static void run_case(const gcase *c, uint64_t seed) {
    const qt_device cpu = {QT_DEV_CPU, 0}, gpu = {QT_DEV_CUDA, 0};
    void *host[MAXIN] = {0}, *host16[MAXIN] = {0};
    for (int k = 0; k < c->n_in; k++) {
        int64_t n = 1;
        for (int d = 0; d < c->ndim[k]; d++) n *= c->shape[k][d];
        host[k] = malloc((size_t)n * 4);
        host16[k] = malloc((size_t)n * 4);
        for (int64_t i = 0; i < n; i++) {
            uint64_t idx = (uint64_t)k << 40 | (uint64_t)i;
            if (c->int_range[k] > 0) {
                int32_t v = (int32_t)(qt_rand_u64(seed, idx) % (uint64_t)c->int_range[k]);
                ((int32_t *)host[k])[i] = ((int32_t *)host16[k])[i] = v;
            } else {
                float v = qt_rand_normal(seed, idx);
                if (c->offset[k] > 0) v = (v < 0 ? -1.0f : 1.0f) * (fabsf(v) + c->offset[k]);
                ((float *)host[k])[i] = v;
                ((float *)host16[k])[i] = qt_bf16_to_f32(qt_f32_to_bf16(v));
            }
        }
    }
    /* the output's size from a CPU run decides w */
    result ref = {0}, ref16 = {0}, g32 = {0}, g16 = {0};
    float *w = NULL;
    {
        qt_ctx *ctx = qt_ctx_new();
        qt_tensor *in[MAXIN];
        for (int k = 0; k < c->n_in; k++)
            in[k] = qt_tensor_from(ctx, c->int_range[k] > 0 ? QT_I32 : QT_F32, c->ndim[k],
                                   c->shape[k], host[k]);
        bool prev = qt_ctx_set_grad_enabled(ctx, false);
        qt_tensor *y = c->f(ctx, in);
        qt_ctx_set_grad_enabled(ctx, prev);
        int64_t ny = y ? qt_numel(y) : 0;
        w = malloc((size_t)(ny ? ny : 1) * sizeof(float));
        for (int64_t i = 0; i < ny; i++) w[i] = qt_rand_normal(seed + 7, (uint64_t)i);
        qt_ctx_free(ctx);
    }
    bool ok = run(c, host, w, cpu, false, &ref) && run(c, host16, w, cpu, false, &ref16);
    qt_check_case(ok, c->name, "the CPU reference failed");
    if (ok) {
        bool g = run(c, host, w, gpu, false, &g32);
        qt_check_case(g, c->name, "f32 on the GPU failed");
        if (g) compare(c, "f32", &g32, &ref, TOL_F32);
        g = run(c, host16, w, gpu, true, &g16);
        qt_check_case(g, c->name, "bf16 on the GPU failed");
        if (g) compare(c, "bf16", &g16, &ref16, TOL_BF16);
    }
    result_free(&ref);
    result_free(&ref16);
    result_free(&g32);
    result_free(&g16);
    free(w);
    for (int k = 0; k < c->n_in; k++) {
        free(host[k]);
        free(host16[k]);
    }
}

int main(void) {
    uint64_t seed = qt_gpu_test_begin("test_cuda_ops");
    qt_set_num_threads(4);
    /* the custom case's functions read host memory (a CPU-only qt_custom fn); qt_custom
     * on the GPU is covered by test_cuda_quant through QAT's fake-quant */
    for (int i = 0; i < N_CASES; i++)
        if (cases[i].op != QT_OP_CUSTOM) run_case(&cases[i], seed + (uint64_t)i);
    for (size_t i = 0; i < sizeof big_cases / sizeof big_cases[0]; i++)
        run_case(&big_cases[i], seed + 1000 + (uint64_t)i);
    /* attention has two GPU paths (tensor-core chunks by default, fused CUDA-core
     * kernels): the cases above ran the default, these the other */
    printf("attention through the fused kernels (qt_cuda_set_attention_impl(1)):\n");
    qt_cuda_set_attention_impl(1);
    for (int i = 0; i < N_CASES; i++)
        if (cases[i].op == QT_OP_ATTENTION) run_case(&cases[i], seed + 2000 + (uint64_t)i);
    for (size_t i = 0; i < sizeof big_cases / sizeof big_cases[0]; i++)
        if (big_cases[i].op == QT_OP_ATTENTION) run_case(&big_cases[i], seed + 3000 + (uint64_t)i);
    qt_cuda_set_attention_impl(0);
    printf("attention through the tensor-core path in chunks of 16 query rows:\n");
    qt_cuda_set_attention_chunk(16);
    for (int i = 0; i < N_CASES; i++)
        if (cases[i].op == QT_OP_ATTENTION) run_case(&cases[i], seed + 4000 + (uint64_t)i);
    for (size_t i = 0; i < sizeof big_cases / sizeof big_cases[0]; i++)
        if (big_cases[i].op == QT_OP_ATTENTION) run_case(&big_cases[i], seed + 5000 + (uint64_t)i);
    qt_cuda_set_attention_chunk(0);
    /* every op the GPU has forward and backward for */
    for (int op = 0; op < QT_OP_COUNT; op++) {
        qt_check_case(qt_op_has_forward((qt_op)op, QT_DEV_CUDA), qt_op_name((qt_op)op),
                      "no CUDA forward");
        qt_check_case(qt_op_is_nondifferentiable((qt_op)op) ||
                          qt_op_has_backward((qt_op)op, QT_DEV_CUDA),
                      qt_op_name((qt_op)op), "no CUDA backward");
    }
    return qt_test_finish("test_cuda_ops");
}
