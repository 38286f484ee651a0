/*
 * ops_rope.c - rotary position embedding (Su et al. 2021) in the rotate-half layout of
 * HF transformers' Llama (apply_rotary_pos_emb): the pair rotated together is (i,
 * i + D/2), not (2i, 2i+1) as in the paper and in llama.cpp's GGUF layout.
 *   y[i]     = x[i] cos - x[i+D/2] sin
 *   y[i+D/2] = x[i+D/2] cos + x[i] sin,   angle = (pos0 + t) * theta^(-2i/D)
 * The angles are computed in float the way HF computes them (inv_freq in f32, then
 * position * inv_freq in f32), so logits agree with transformers at long positions.
 * Backward applies the inverse rotation. attrs: a.rope (theta, pos0).
 */
#include <math.h>

#include "internal.h"

/* (T, D/2) cos then (T, D/2) sin, in the arena */
static float *rope_table(qt_ctx *ctx, int64_t T, int64_t D, float theta, int64_t pos0) {
    int64_t h = D / 2;
    float *tab = qt_ctx_alloc(ctx, 2 * (size_t)(T * h) * sizeof(float));
    if (!tab) return NULL;
    for (int64_t i = 0; i < h; i++) {
        float inv = 1.0f / powf(theta, (float)(2 * i) / (float)D);
        for (int64_t t = 0; t < T; t++) {
            float ang = (float)(pos0 + t) * inv;
            tab[t * h + i] = cosf(ang);
            tab[T * h + t * h + i] = sinf(ang);
        }
    }
    return tab;
}

static qt_status rope_apply(qt_ctx *ctx, qt_node *n, const float *X, float *Y, bool inverse,
                            bool accumulate) {
    int64_t D = qt_dim(n->in[0], -1), T = qt_dim(n->in[0], -2), R = qt_rows(n->in[0]);
    int64_t h = D / 2;
    if (!n->saved) {
        n->saved = rope_table(ctx, T, D, n->a.rope.theta, n->a.rope.pos0);
        if (!n->saved) return ctx->status;
    }
    const float *cs = n->saved, *sn = cs + T * h;
    float sgn = inverse ? -1.0f : 1.0f;
#pragma omp parallel for schedule(static) if (R * D > 16384)
    for (int64_t r = 0; r < R; r++) {
        int64_t t = r % T;
        const float *x = X + r * D, *c = cs + t * h, *s = sn + t * h;
        float *y = Y + r * D;
        for (int64_t i = 0; i < h; i++) {
            float x1 = x[i], x2 = x[i + h], si = sgn * s[i];
            float y1 = x1 * c[i] - x2 * si, y2 = x2 * c[i] + x1 * si;
            if (accumulate) {
                y[i] += y1;
                y[i + h] += y2;
            } else {
                y[i] = y1;
                y[i + h] = y2;
            }
        }
    }
    return QT_OK;
}

static qt_status rope_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    return rope_apply(ctx, n, qt_f32(n->in[0]), qt_f32(n->out), false, false);
}

static qt_status rope_bwd_cpu(qt_ctx *ctx, qt_node *n) {
    if (!n->in[0]->grad) return QT_OK;
    return rope_apply(ctx, n, n->out->grad, n->in[0]->grad, true, true);
}

const qt_op_def qt_opdef_rope = {
    .name = "rope",
    .forward = {[QT_DEV_CPU] = rope_fwd_cpu},
    .backward = {[QT_DEV_CPU] = rope_bwd_cpu},
};

qt_tensor *qt_rope(qt_ctx *ctx, qt_tensor *x, float theta, int64_t pos0) {
    if (!qt_check_inputs(ctx, "rope", 1, &x)) return NULL;
    char sb[64];
    if (x->ndim < 2 || qt_dim(x, -1) % 2)
        return QT_FAIL(ctx, QT_ESHAPE, "rope: input must be (..., T, D) with D even, got %s",
                       qt_shape_str(x, sb, 64));
    if (!(theta > 1.0f) || pos0 < 0)
        return QT_FAIL(ctx, QT_EINVAL, "rope: theta must be > 1 and pos0 >= 0 (got %g, %lld)",
                       (double)theta, (long long)pos0);
    qt_tensor *out = qt_new_like_shape(ctx, x, x->ndim, x->shape);
    qt_op_attrs at = {.rope = {.theta = theta, .pos0 = pos0}};
    return qt_op_run(ctx, QT_OP_ROPE, 1, &x, out, &at);
}
