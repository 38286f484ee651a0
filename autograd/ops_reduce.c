/*
 * ops_reduce.c - sum and mean over one axis (removed from the shape) or over all.
 * The input is viewed as (pre, n, post); the output as (pre, post). Sums accumulate in
 * double so that large reductions do not drift with the element order.
 * attrs: a.reduce.
 */
#include "internal.h"

static qt_status reduce_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    int64_t pre = n->a.reduce.pre, len = n->a.reduce.len, post = n->a.reduce.post;
    float mul = n->a.reduce.mul;
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
    int64_t pre = n->a.reduce.pre, len = n->a.reduce.len, post = n->a.reduce.post;
    float mul = n->a.reduce.mul;
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
    qt_op_attrs at = {.reduce = {0}};
    qt_reduce_attrs *r = &at.reduce;
    if (axis == QT_AXIS_ALL) {
        r->pre = 1;
        r->len = qt_numel(x);
        r->post = 1;
    } else {
        int ax = axis < 0 ? axis + x->ndim : axis;
        if (ax < 0 || ax >= x->ndim)
            return QT_FAIL(ctx, QT_EINVAL, "%s: axis %d out of range for %d dims", name, axis,
                           x->ndim);
        r->pre = r->post = 1;
        for (int i = 0; i < x->ndim; i++) {
            if (i < ax) r->pre *= x->shape[i];
            if (i > ax) r->post *= x->shape[i];
            if (i != ax) shape[ndim++] = x->shape[i];
        }
        r->len = x->shape[ax];
    }
    if (op == QT_OP_MEAN && r->len == 0)
        return QT_FAIL(ctx, QT_EINVAL, "mean: over an empty axis");
    r->mul = op == QT_OP_MEAN ? 1.0f / (float)r->len : 1.0f;
    qt_tensor *out = qt_new_like_shape(ctx, x, ndim, shape);
    return qt_op_run(ctx, op, 1, &x, out, &at);
}

qt_tensor *qt_sum(qt_ctx *ctx, qt_tensor *x, int axis) {
    return reduce_make(ctx, QT_OP_SUM, x, axis);
}
qt_tensor *qt_mean(qt_ctx *ctx, qt_tensor *x, int axis) {
    return reduce_make(ctx, QT_OP_MEAN, x, axis);
}
