/*
 * ops_elementwise.c - add, sub, mul, div with broadcasting over leading dims, and scale.
 *
 * Broadcasting is numpy's restricted to one case: the smaller operand's shape is a
 * suffix of the larger's, so the result is (outer, inner) with the small operand
 * repeated over `outer`. Its grad is the sum over `outer`. attrs: a.bcast (outer,
 * inner, which operand is small); scale: a.scale.
 */
#include <omp.h>

#include "internal.h"

typedef enum { EW_ADD, EW_SUB, EW_MUL, EW_DIV } ew_kind;

static inline float ew_apply(ew_kind k, float x, float y) {
    switch (k) {
    case EW_ADD: return x + y;
    case EW_SUB: return x - y;
    case EW_MUL: return x * y;
    default: return x / y;
    }
}

static ew_kind kind_of(qt_op op) {
    return op == QT_OP_ADD ? EW_ADD : op == QT_OP_SUB ? EW_SUB : op == QT_OP_MUL ? EW_MUL : EW_DIV;
}

static qt_status ew_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    ew_kind k = kind_of(n->op);
    int64_t outer = n->a.bcast.outer, inner = n->a.bcast.inner;
    int small = n->a.bcast.small;
    const float *A = qt_f32(n->in[0]), *B = qt_f32(n->in[1]);
    float *Y = qt_f32(n->out);
#pragma omp parallel for schedule(static) if (outer * inner > 32768)
    for (int64_t o = 0; o < outer; o++) {
        const float *a = A + (small == 0 ? 0 : o * inner);
        const float *b = B + (small == 1 ? 0 : o * inner);
        float *y = Y + o * inner;
        for (int64_t i = 0; i < inner; i++) y[i] = ew_apply(k, a[i], b[i]);
    }
    return QT_OK;
}

static inline float ew_grad(ew_kind k, int which, float a, float b, float dy) {
    switch (k) {
    case EW_ADD: return dy;
    case EW_SUB: return which == 0 ? dy : -dy;
    case EW_MUL: return which == 0 ? dy * b : dy * a;
    default: return which == 0 ? dy / b : -dy * a / (b * b);
    }
}

/* Grad of each operand. A full-size operand's grad is written row by row; the broadcast
 * operand's grad is a column sum over `outer`, each thread owning a range of columns and
 * walking rows in order (contiguous reads, a fixed summation order). */
static qt_status ew_bwd_cpu(qt_ctx *ctx, qt_node *n) {
    ew_kind k = kind_of(n->op);
    int64_t outer = n->a.bcast.outer, inner = n->a.bcast.inner;
    int small = n->a.bcast.small;
    const float *A = qt_f32(n->in[0]), *B = qt_f32(n->in[1]);
    const float *dY = n->out->grad;
    for (int which = 0; which < 2; which++) {
        float *g = n->in[which]->grad;
        if (!g) continue;
        if (small != which) {
#pragma omp parallel for schedule(static) if (outer * inner > 32768)
            for (int64_t o = 0; o < outer; o++) {
                const float *a = A + (small == 0 ? 0 : o * inner);
                const float *b = B + (small == 1 ? 0 : o * inner);
                const float *dy = dY + o * inner;
                float *go = g + o * inner;
                for (int64_t i = 0; i < inner; i++) go[i] += ew_grad(k, which, a[i], b[i], dy[i]);
            }
        } else {
#pragma omp parallel if (outer * inner > 32768)
            {
                int nt = omp_get_num_threads(), t = omp_get_thread_num();
                int64_t c0 = inner * t / nt, c1 = inner * (t + 1) / nt;
                for (int64_t o = 0; o < outer; o++) {
                    const float *a = A + (small == 0 ? 0 : o * inner);
                    const float *b = B + (small == 1 ? 0 : o * inner);
                    const float *dy = dY + o * inner;
                    for (int64_t i = c0; i < c1; i++) g[i] += ew_grad(k, which, a[i], b[i], dy[i]);
                }
            }
        }
    }
    return QT_OK;
}

#define EW_DEF(nm)                                   \
    const qt_op_def qt_opdef_##nm = {                \
        .name = #nm,                                 \
        .forward = {[QT_DEV_CPU] = ew_fwd_cpu},      \
        .backward = {[QT_DEV_CPU] = ew_bwd_cpu},     \
    };
EW_DEF(add)
EW_DEF(sub)
EW_DEF(mul)
EW_DEF(div)

static qt_tensor *ew_make(qt_ctx *ctx, qt_op op, const char *name, qt_tensor *a, qt_tensor *b) {
    qt_tensor *in[2] = {a, b};
    if (!qt_check_inputs(ctx, name, 2, in)) return NULL;
    const qt_tensor *big = a->ndim >= b->ndim ? a : b, *sm = big == a ? b : a;
    int off = big->ndim - sm->ndim;
    for (int i = 0; i < sm->ndim; i++) {
        if (sm->shape[i] != big->shape[off + i]) {
            char sa[64], sb[64];
            return QT_FAIL(ctx, QT_ESHAPE,
                           "%s: shapes %s and %s do not broadcast (the smaller must be a "
                           "suffix of the larger)",
                           name, qt_shape_str(a, sa, 64), qt_shape_str(b, sb, 64));
        }
    }
    int64_t inner = qt_numel(sm), total = qt_numel(big);
    qt_op_attrs at = {.bcast = {.outer = inner ? total / inner : 0, .inner = inner}};
    at.bcast.small = sm->ndim == big->ndim ? -1 : sm == a ? 0 : 1;
    qt_tensor *out = qt_new_like_shape(ctx, big, big->ndim, big->shape);
    return qt_op_run(ctx, op, 2, in, out, &at);
}

qt_tensor *qt_add(qt_ctx *ctx, qt_tensor *a, qt_tensor *b) {
    return ew_make(ctx, QT_OP_ADD, "add", a, b);
}
qt_tensor *qt_sub(qt_ctx *ctx, qt_tensor *a, qt_tensor *b) {
    return ew_make(ctx, QT_OP_SUB, "sub", a, b);
}
qt_tensor *qt_mul(qt_ctx *ctx, qt_tensor *a, qt_tensor *b) {
    return ew_make(ctx, QT_OP_MUL, "mul", a, b);
}
qt_tensor *qt_div(qt_ctx *ctx, qt_tensor *a, qt_tensor *b) {
    return ew_make(ctx, QT_OP_DIV, "div", a, b);
}

/* ---- scale: y = s x ---------------------------------------------------------------- */

static qt_status scale_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    const float *x = qt_f32(n->in[0]);
    float *y = qt_f32(n->out), s = n->a.scale.s;
    int64_t N = qt_numel(n->out);
#pragma omp parallel for schedule(static) if (N > 32768)
    for (int64_t i = 0; i < N; i++) y[i] = s * x[i];
    return QT_OK;
}

static qt_status scale_bwd_cpu(qt_ctx *ctx, qt_node *n) {
    float *dx = n->in[0]->grad, s = n->a.scale.s;
    const float *dy = n->out->grad;
    int64_t N = qt_numel(n->out);
    if (!dx) return QT_OK;
#pragma omp parallel for schedule(static) if (N > 32768)
    for (int64_t i = 0; i < N; i++) dx[i] += s * dy[i];
    return QT_OK;
}

const qt_op_def qt_opdef_scale = {
    .name = "scale",
    .forward = {[QT_DEV_CPU] = scale_fwd_cpu},
    .backward = {[QT_DEV_CPU] = scale_bwd_cpu},
};

qt_tensor *qt_scale(qt_ctx *ctx, qt_tensor *x, float s) {
    if (!qt_check_inputs(ctx, "scale", 1, &x)) return NULL;
    qt_tensor *out = qt_new_like_shape(ctx, x, x->ndim, x->shape);
    qt_op_attrs at = {.scale = {s}};
    return qt_op_run(ctx, QT_OP_SCALE, 1, &x, out, &at);
}
