/*
 * ops_reduce.c - sum and mean over one axis (removed from the shape) or over all.
 * The input is viewed as (pre, n, post); the output as (pre, post). Sums accumulate in
 * double so that large reductions do not drift with the element order.
 * attrs: i[0] pre, i[1] n, i[2] post; f[0] 1 (sum) or 1/n (mean).
 */
#include "internal.h"

static qt_status reduce_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    int64_t pre = n->a.i[0], len = n->a.i[1], post = n->a.i[2];
    float mul = n->a.f[0];
    const float *x = qt_f32(n->in[0]);
    float *y = qt_f32(n->out);
#pragma omp parallel for schedule(static) if (pre * len * post > 32768)
    for (int64_t p = 0; p < pre; p++)
        for (int64_t q = 0; q < post; q++) {
            double acc = 0.0;
            for (int64_t k = 0; k < len; k++) acc += x[(p * len + k) * post + q];
            y[p * post + q] = (float)(acc * mul);
        }
    return QT_OK;
}

static qt_status reduce_bwd_cpu(qt_ctx *ctx, qt_node *n) {
    int64_t pre = n->a.i[0], len = n->a.i[1], post = n->a.i[2];
    float mul = n->a.f[0];
    float *dx = n->in[0]->grad;
    const float *dy = n->out->grad;
    if (!dx) return QT_OK;
#pragma omp parallel for schedule(static) if (pre * len * post > 32768)
    for (int64_t p = 0; p < pre; p++)
        for (int64_t k = 0; k < len; k++)
            for (int64_t q = 0; q < post; q++)
                dx[(p * len + k) * post + q] += dy[p * post + q] * mul;
    return QT_OK;
}

const qt_op_def qt_opdef_sum = {
    .name = "sum",
    .forward = {[QT_DEV_CPU] = reduce_fwd_cpu},
    .backward = {[QT_DEV_CPU] = reduce_bwd_cpu},
};
const qt_op_def qt_opdef_mean = {
    .name = "mean",
    .forward = {[QT_DEV_CPU] = reduce_fwd_cpu},
    .backward = {[QT_DEV_CPU] = reduce_bwd_cpu},
};

static qt_tensor *reduce_make(qt_ctx *ctx, qt_op op, qt_tensor *x, int axis) {
    const char *name = op == QT_OP_SUM ? "sum" : "mean";
    if (!qt_check_inputs(ctx, name, 1, &x)) return NULL;
    int64_t shape[QT_MAX_DIMS];
    int ndim = 0;
    qt_attrs at = {0};
    if (axis == QT_AXIS_ALL) {
        at.i[0] = 1;
        at.i[1] = qt_numel(x);
        at.i[2] = 1;
    } else {
        int ax = axis < 0 ? axis + x->ndim : axis;
        if (ax < 0 || ax >= x->ndim)
            return QT_FAIL(ctx, QT_EINVAL, "%s: axis %d out of range for %d dims", name, axis,
                           x->ndim);
        at.i[0] = at.i[2] = 1;
        for (int i = 0; i < x->ndim; i++) {
            if (i < ax) at.i[0] *= x->shape[i];
            if (i > ax) at.i[2] *= x->shape[i];
            if (i != ax) shape[ndim++] = x->shape[i];
        }
        at.i[1] = x->shape[ax];
    }
    if (op == QT_OP_MEAN && at.i[1] == 0)
        return QT_FAIL(ctx, QT_EINVAL, "mean: over an empty axis");
    at.f[0] = op == QT_OP_MEAN ? 1.0f / (float)at.i[1] : 1.0f;
    qt_tensor *out = qt_new_like_shape(ctx, x, ndim, shape);
    return qt_op_run(ctx, op, 1, &x, out, &at);
}

qt_tensor *qt_sum(qt_ctx *ctx, qt_tensor *x, int axis) {
    return reduce_make(ctx, QT_OP_SUM, x, axis);
}
qt_tensor *qt_mean(qt_ctx *ctx, qt_tensor *x, int axis) {
    return reduce_make(ctx, QT_OP_MEAN, x, axis);
}
