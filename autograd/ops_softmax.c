/*
 * ops_softmax.c - softmax over the last dim, max-subtracted. Backward uses the output:
 * dx = y * (dy - sum(dy * y)).
 */
#include <math.h>

#include "internal.h"

static qt_status softmax_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    int64_t D = qt_dim(n->in[0], -1), R = qt_rows(n->in[0]);
    const float *X = qt_f32(n->in[0]);
    float *Y = qt_f32(n->out);
#pragma omp parallel for schedule(static) if (R * D > 16384)
    for (int64_t r = 0; r < R; r++) {
        const float *x = X + r * D;
        float *y = Y + r * D, mx = -INFINITY;
        for (int64_t d = 0; d < D; d++) mx = fmaxf(mx, x[d]);
        double s = 0.0;
        for (int64_t d = 0; d < D; d++) {
            y[d] = expf(x[d] - mx);
            s += y[d];
        }
        float inv = (float)(1.0 / s);
        for (int64_t d = 0; d < D; d++) y[d] *= inv;
    }
    return QT_OK;
}

static qt_status softmax_bwd_cpu(qt_ctx *ctx, qt_node *n) {
    float *dX = n->in[0]->grad;
    if (!dX) return QT_OK;
    int64_t D = qt_dim(n->in[0], -1), R = qt_rows(n->in[0]);
    const float *Y = qt_f32(n->out), *dY = n->out->grad;
#pragma omp parallel for schedule(static) if (R * D > 16384)
    for (int64_t r = 0; r < R; r++) {
        const float *y = Y + r * D, *dy = dY + r * D;
        double dot = 0.0;
        for (int64_t d = 0; d < D; d++) dot += (double)dy[d] * y[d];
        for (int64_t d = 0; d < D; d++) dX[r * D + d] += y[d] * (dy[d] - (float)dot);
    }
    return QT_OK;
}

const qt_op_def qt_opdef_softmax = {
    .name = "softmax",
    .forward = {[QT_DEV_CPU] = softmax_fwd_cpu},
    .backward = {[QT_DEV_CPU] = softmax_bwd_cpu},
};

qt_tensor *qt_softmax(qt_ctx *ctx, qt_tensor *x) {
    if (!qt_check_inputs(ctx, "softmax", 1, &x)) return NULL;
    if (x->ndim < 1) return QT_FAIL(ctx, QT_ESHAPE, "softmax: input is a scalar");
    qt_tensor *out = qt_new_like_shape(ctx, x, x->ndim, x->shape);
    return qt_op_run(ctx, QT_OP_SOFTMAX, 1, &x, out, NULL);
}
