/*
 * op_cases.h - one list of op cases (shapes, input kinds, the op call) shared by the
 * finite-difference gradient check (test_gradcheck.c) and the CPU-vs-GPU parity test
 * (gpu/test_cuda_ops.c), so a new op gets both checks from one row.
 */
#ifndef QT_OP_CASES_H
#define QT_OP_CASES_H

#include "qt_autograd.h"

#define MAXIN 4

typedef qt_tensor *(*build_fn)(qt_ctx *ctx, qt_tensor **in);

typedef struct {
    const char *name;
    qt_op op;
    int n_in;
    int ndim[MAXIN];
    int64_t shape[MAXIN][4];
    int32_t int_range[MAXIN]; /* > 0: an i32 input with values in [0, range) */
    float offset[MAXIN];      /* added to |x|: keeps divisors away from 0 */
    build_fn f;
} gcase;

static qt_tensor *f_mm_nn(qt_ctx *c, qt_tensor **x) { return qt_matmul(c, x[0], x[1], false, false); }
static qt_tensor *f_mm_tt(qt_ctx *c, qt_tensor **x) { return qt_matmul(c, x[0], x[1], true, true); }
static qt_tensor *f_mm_shared_nt(qt_ctx *c, qt_tensor **x) { return qt_matmul(c, x[0], x[1], false, true); }
static qt_tensor *f_mm_shared_tn(qt_ctx *c, qt_tensor **x) { return qt_matmul(c, x[0], x[1], true, false); }
static qt_tensor *f_mm_batched_tn(qt_ctx *c, qt_tensor **x) { return qt_matmul(c, x[0], x[1], true, false); }
static qt_tensor *f_add(qt_ctx *c, qt_tensor **x) { return qt_add(c, x[0], x[1]); }
static qt_tensor *f_sub(qt_ctx *c, qt_tensor **x) { return qt_sub(c, x[0], x[1]); }
static qt_tensor *f_mul(qt_ctx *c, qt_tensor **x) { return qt_mul(c, x[0], x[1]); }
static qt_tensor *f_div(qt_ctx *c, qt_tensor **x) { return qt_div(c, x[0], x[1]); }
static qt_tensor *f_scale(qt_ctx *c, qt_tensor **x) { return qt_scale(c, x[0], -1.75f); }
static qt_tensor *f_sum1(qt_ctx *c, qt_tensor **x) { return qt_sum(c, x[0], 1); }
static qt_tensor *f_sumall(qt_ctx *c, qt_tensor **x) { return qt_sum(c, x[0], QT_AXIS_ALL); }
static qt_tensor *f_mean_last(qt_ctx *c, qt_tensor **x) { return qt_mean(c, x[0], -1); }
static qt_tensor *f_reshape(qt_ctx *c, qt_tensor **x) {
    int64_t s[2] = {-1, 6};
    return qt_reshape(c, x[0], 2, s);
}
static qt_tensor *f_permute(qt_ctx *c, qt_tensor **x) {
    int p[4] = {2, 0, 3, 1};
    return qt_permute(c, x[0], p);
}
static qt_tensor *f_transpose(qt_ctx *c, qt_tensor **x) { return qt_transpose(c, x[0], 0, 2); }
static qt_tensor *f_embedding(qt_ctx *c, qt_tensor **x) { return qt_embedding(c, x[0], x[1]); }
static qt_tensor *f_rmsnorm(qt_ctx *c, qt_tensor **x) { return qt_rmsnorm(c, x[0], x[1], 1e-5f); }
static qt_tensor *f_layernorm(qt_ctx *c, qt_tensor **x) {
    return qt_layernorm(c, x[0], x[1], x[2], 1e-5f);
}
static qt_tensor *f_layernorm_nb(qt_ctx *c, qt_tensor **x) {
    return qt_layernorm(c, x[0], x[1], NULL, 1e-5f);
}
static qt_tensor *f_softmax(qt_ctx *c, qt_tensor **x) { return qt_softmax(c, x[0]); }
static qt_tensor *f_attn(qt_ctx *c, qt_tensor **x) { return qt_attention(c, x[0], x[1], x[2], 0.0f); }
static qt_tensor *f_attn_scaled(qt_ctx *c, qt_tensor **x) {
    return qt_attention(c, x[0], x[1], x[2], 0.7f);
}
static qt_tensor *f_rope(qt_ctx *c, qt_tensor **x) { return qt_rope(c, x[0], 10000.0f, 5); }
static qt_tensor *f_silu(qt_ctx *c, qt_tensor **x) { return qt_silu(c, x[0]); }
static qt_tensor *f_gelu(qt_ctx *c, qt_tensor **x) { return qt_gelu(c, x[0]); }
static qt_tensor *f_swiglu(qt_ctx *c, qt_tensor **x) { return qt_swiglu(c, x[0], x[1]); }
static qt_tensor *f_dropout(qt_ctx *c, qt_tensor **x) { return qt_dropout(c, x[0], 0.4f, 99); }
static qt_tensor *f_ce(qt_ctx *c, qt_tensor **x) { return qt_cross_entropy(c, x[0], x[1], 3); }

/* a caller-defined op, y = a * b^2 elementwise, through qt_custom */
static qt_status sq_fwd(qt_ctx *c, qt_tensor *const *in, int n, qt_tensor *out, void *st) {
    const float *a = in[0]->data, *b = in[1]->data;
    float *y = out->data;
    for (int64_t i = 0; i < qt_numel(out); i++) y[i] = a[i] * b[i] * b[i];
    return QT_OK;
}
static qt_status sq_bwd(qt_ctx *c, qt_tensor *const *in, int n, qt_tensor *out, void *st) {
    const float *a = in[0]->data, *b = in[1]->data, *dy = out->grad;
    for (int64_t i = 0; i < qt_numel(out); i++) {
        if (in[0]->grad) in[0]->grad[i] += dy[i] * b[i] * b[i];
        if (in[1]->grad) in[1]->grad[i] += dy[i] * 2.0f * a[i] * b[i];
    }
    return QT_OK;
}
static const qt_custom_fn sq_fn = {"a*b^2", sq_fwd, sq_bwd};
static qt_tensor *f_custom(qt_ctx *c, qt_tensor **x) {
    return qt_custom(c, &sq_fn, 2, x, x[0]->ndim, x[0]->shape, NULL);
}

static const gcase cases[] = {
    {"matmul nn 2d", QT_OP_MATMUL, 2, {2, 2}, {{5, 4}, {4, 3}}, {0}, {0}, f_mm_nn},
    {"matmul tt batched", QT_OP_MATMUL, 2, {3, 3}, {{2, 4, 5}, {2, 3, 4}}, {0}, {0}, f_mm_tt},
    {"matmul shared B^T", QT_OP_MATMUL, 2, {3, 2}, {{2, 3, 4}, {5, 4}}, {0}, {0}, f_mm_shared_nt},
    {"matmul shared A^T", QT_OP_MATMUL, 2, {3, 2}, {{2, 4, 3}, {4, 5}}, {0}, {0}, f_mm_shared_tn},
    {"matmul batched A^T 4d", QT_OP_MATMUL, 2, {4, 4}, {{2, 2, 3, 4}, {2, 2, 3, 2}}, {0}, {0},
     f_mm_batched_tn},
    {"add broadcast", QT_OP_ADD, 2, {3, 1}, {{2, 3, 4}, {4}}, {0}, {0}, f_add},
    {"sub broadcast left", QT_OP_SUB, 2, {2, 3}, {{3, 4}, {2, 3, 4}}, {0}, {0}, f_sub},
    {"mul", QT_OP_MUL, 2, {2, 2}, {{3, 5}, {3, 5}}, {0}, {0}, f_mul},
    {"div broadcast", QT_OP_DIV, 2, {3, 2}, {{2, 3, 4}, {3, 4}}, {0}, {0, 0.5f}, f_div},
    {"scale", QT_OP_SCALE, 1, {2}, {{3, 4}}, {0}, {0}, f_scale},
    {"sum axis 1", QT_OP_SUM, 1, {3}, {{2, 3, 4}}, {0}, {0}, f_sum1},
    {"sum all", QT_OP_SUM, 1, {3}, {{2, 3, 4}}, {0}, {0}, f_sumall},
    {"mean last", QT_OP_MEAN, 1, {3}, {{2, 3, 4}}, {0}, {0}, f_mean_last},
    {"reshape", QT_OP_RESHAPE, 1, {3}, {{2, 3, 4}}, {0}, {0}, f_reshape},
    {"permute", QT_OP_PERMUTE, 1, {4}, {{2, 3, 4, 5}}, {0}, {0}, f_permute},
    {"transpose 3d", QT_OP_PERMUTE, 1, {3}, {{2, 3, 4}}, {0}, {0}, f_transpose},
    {"embedding", QT_OP_EMBEDDING, 2, {2, 2}, {{6, 4}, {2, 5}}, {0, 6}, {0}, f_embedding},
    {"rmsnorm", QT_OP_RMSNORM, 2, {3, 1}, {{2, 3, 8}, {8}}, {0}, {0}, f_rmsnorm},
    {"layernorm", QT_OP_LAYERNORM, 3, {2, 1, 1}, {{4, 8}, {8}, {8}}, {0}, {0}, f_layernorm},
    {"layernorm no bias", QT_OP_LAYERNORM, 2, {2, 1}, {{4, 8}, {8}}, {0}, {0}, f_layernorm_nb},
    {"softmax", QT_OP_SOFTMAX, 1, {2}, {{3, 7}}, {0}, {0}, f_softmax},
    {"attention gqa", QT_OP_ATTENTION, 3, {4, 4, 4}, {{2, 4, 5, 4}, {2, 2, 5, 4}, {2, 2, 5, 4}},
     {0}, {0}, f_attn},
    {"attention Tk>T", QT_OP_ATTENTION, 3, {4, 4, 4}, {{1, 2, 3, 4}, {1, 1, 6, 4}, {1, 1, 6, 4}},
     {0}, {0}, f_attn_scaled},
    {"attention T>block", QT_OP_ATTENTION, 3, {4, 4, 4},
     {{1, 2, 70, 2}, {1, 2, 70, 2}, {1, 2, 70, 2}}, {0}, {0}, f_attn},
    {"rope", QT_OP_ROPE, 1, {4}, {{2, 2, 5, 8}}, {0}, {0}, f_rope},
    {"silu", QT_OP_SILU, 1, {2}, {{4, 5}}, {0}, {0}, f_silu},
    {"gelu", QT_OP_GELU, 1, {2}, {{4, 5}}, {0}, {0}, f_gelu},
    {"swiglu", QT_OP_SWIGLU, 2, {2, 2}, {{4, 5}, {4, 5}}, {0}, {0}, f_swiglu},
    {"dropout", QT_OP_DROPOUT, 1, {2}, {{6, 7}}, {0}, {0}, f_dropout},
    {"custom a*b^2", QT_OP_CUSTOM, 2, {2, 2}, {{3, 5}, {3, 5}}, {0}, {0}, f_custom},
    {"cross_entropy", QT_OP_CROSS_ENTROPY, 2, {3, 2}, {{2, 4, 7}, {2, 4}}, {0, 7}, {0},
     f_ce},
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

#endif /* QT_OP_CASES_H */
