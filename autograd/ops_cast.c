/*
 * ops_cast.c - dtype conversion between f32 and bf16, the one place activations change
 * precision (the GPU's bf16 compute mode: f32 master weights are cast for each step).
 * f32 -> bf16 rounds to nearest even (qt_f32_to_bf16, as torch's .to(torch.bfloat16));
 * bf16 -> f32 is exact. Grads are f32 whatever the dtype, so backward is a plain add.
 */
#include "internal.h"

static qt_status cast_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    const qt_tensor *x = n->in[0];
    qt_tensor *y = n->out;
    int64_t N = qt_numel(x);
    if (x->dtype == QT_F32 && y->dtype == QT_BF16) {
        const float *X = x->data;
        uint16_t *Y = y->data;
#pragma omp parallel for schedule(static) if (N > 65536)
        for (int64_t i = 0; i < N; i++) Y[i] = qt_f32_to_bf16(X[i]);
    } else if (x->dtype == QT_BF16 && y->dtype == QT_F32) {
        const uint16_t *X = x->data;
        float *Y = y->data;
#pragma omp parallel for schedule(static) if (N > 65536)
        for (int64_t i = 0; i < N; i++) Y[i] = qt_bf16_to_f32(X[i]);
    } else {
        return QT_ERROR(QT_EDTYPE, "cast: %s -> %s", qt_dtype_name(x->dtype),
                        qt_dtype_name(y->dtype));
    }
    return QT_OK;
}

static qt_status cast_bwd_cpu(qt_ctx *ctx, qt_node *n) {
    float *g = n->in[0]->grad;
    const float *dy = n->out->grad;
    if (!g) return QT_OK;
    int64_t N = qt_numel(n->out);
#pragma omp parallel for schedule(static) if (N > 65536)
    for (int64_t i = 0; i < N; i++) g[i] += dy[i];
    return QT_OK;
}

const qt_op_def qt_opdef_cast = {
    .name = "cast",
    .forward = {[QT_DEV_CPU] = cast_fwd_cpu},
    .backward = {[QT_DEV_CPU] = cast_bwd_cpu},
};

qt_tensor *qt_cast(qt_ctx *ctx, qt_tensor *x, qt_dtype dtype) {
    if (ctx->status != QT_OK) return NULL;
    if (!x) return QT_FAIL(ctx, QT_EINVAL, "cast: input is NULL");
    if (x->dtype == dtype) return x;
    bool ok = (x->dtype == QT_F32 && dtype == QT_BF16) || (x->dtype == QT_BF16 && dtype == QT_F32);
    if (!ok)
        return QT_FAIL(ctx, QT_EDTYPE, "cast: only f32 <-> bf16, got %s -> %s",
                       qt_dtype_name(x->dtype), qt_dtype_name(dtype));
    qt_tensor *y = qt_tensor_new_on(ctx, x->device, dtype, x->ndim, x->shape);
    return qt_op_run(ctx, QT_OP_CAST, 1, &x, y, NULL);
}
