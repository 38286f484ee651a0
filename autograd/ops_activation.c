/*
 * ops_activation.c - pointwise nonlinearities and dropout.
 *   SiLU:   x * sigmoid(x)                       d/dx = s (1 + x (1 - s))
 *   GELU:   0.5 x (1 + tanh(k (x + 0.044715 x^3))), k = sqrt(2/pi)  (Hendrycks & Gimpel
 *           2016, the tanh approximation GPT-2 uses; torch approximate="tanh")
 *   SwiGLU: silu(gate) * up                      (Shazeer 2020, Llama's MLP)
 *   Dropout: inverted dropout whose mask is qt_rand_uniform(seed, i) >= p, recomputed in
 *           backward from the seed instead of stored.
 */
#include <math.h>

#include "internal.h"

#define PAR_IF(N) if ((N) > 16384)

static inline float sigmoidf(float x) { return 1.0f / (1.0f + qt_expf(-x)); }

/* ---- silu ---- */
static qt_status silu_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    const float *x = qt_f32(n->in[0]);
    float *y = qt_f32(n->out);
    int64_t N = qt_numel(n->out);
#pragma omp parallel for schedule(static) PAR_IF(N)
    for (int64_t i = 0; i < N; i++) y[i] = x[i] * sigmoidf(x[i]);
    return QT_OK;
}

static qt_status silu_bwd_cpu(qt_ctx *ctx, qt_node *n) {
    float *dx = n->in[0]->grad;
    if (!dx) return QT_OK;
    const float *x = qt_f32(n->in[0]), *dy = n->out->grad;
    int64_t N = qt_numel(n->out);
#pragma omp parallel for schedule(static) PAR_IF(N)
    for (int64_t i = 0; i < N; i++) {
        float s = sigmoidf(x[i]);
        dx[i] += dy[i] * s * (1.0f + x[i] * (1.0f - s));
    }
    return QT_OK;
}

const qt_op_def qt_opdef_silu = {
    .name = "silu",
    .forward = {[QT_DEV_CPU] = silu_fwd_cpu},
    .backward = {[QT_DEV_CPU] = silu_bwd_cpu},
};

/* ---- gelu (tanh) ---- */
#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C 0.044715f

static qt_status gelu_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    const float *x = qt_f32(n->in[0]);
    float *y = qt_f32(n->out);
    int64_t N = qt_numel(n->out);
#pragma omp parallel for schedule(static) PAR_IF(N)
    for (int64_t i = 0; i < N; i++) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + tanhf(GELU_K * (v + GELU_C * v * v * v)));
    }
    return QT_OK;
}

static qt_status gelu_bwd_cpu(qt_ctx *ctx, qt_node *n) {
    float *dx = n->in[0]->grad;
    if (!dx) return QT_OK;
    const float *x = qt_f32(n->in[0]), *dy = n->out->grad;
    int64_t N = qt_numel(n->out);
#pragma omp parallel for schedule(static) PAR_IF(N)
    for (int64_t i = 0; i < N; i++) {
        float v = x[i];
        float t = tanhf(GELU_K * (v + GELU_C * v * v * v));
        float dt = GELU_K * (1.0f + 3.0f * GELU_C * v * v) * (1.0f - t * t);
        dx[i] += dy[i] * (0.5f * (1.0f + t) + 0.5f * v * dt);
    }
    return QT_OK;
}

const qt_op_def qt_opdef_gelu = {
    .name = "gelu",
    .forward = {[QT_DEV_CPU] = gelu_fwd_cpu},
    .backward = {[QT_DEV_CPU] = gelu_bwd_cpu},
};

/* ---- swiglu: in[0] gate, in[1] up ---- */
static qt_status swiglu_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    const float *g = qt_f32(n->in[0]), *u = qt_f32(n->in[1]);
    float *y = qt_f32(n->out);
    int64_t N = qt_numel(n->out);
#pragma omp parallel for schedule(static) PAR_IF(N)
    for (int64_t i = 0; i < N; i++) y[i] = g[i] * sigmoidf(g[i]) * u[i];
    return QT_OK;
}

static qt_status swiglu_bwd_cpu(qt_ctx *ctx, qt_node *n) {
    const float *restrict g = qt_f32(n->in[0]), *restrict u = qt_f32(n->in[1]);
    const float *restrict dy = n->out->grad;
    float *restrict dg = n->in[0]->grad, *restrict du = n->in[1]->grad;
    int64_t N = qt_numel(n->out);
    /* branch-free loops (one per case) so that they vectorize */
    if (dg && du) {
#pragma omp parallel for schedule(static) PAR_IF(N)
        for (int64_t i = 0; i < N; i++) {
            float s = sigmoidf(g[i]);
            dg[i] += dy[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
            du[i] += dy[i] * g[i] * s;
        }
    } else if (dg) {
#pragma omp parallel for schedule(static) PAR_IF(N)
        for (int64_t i = 0; i < N; i++) {
            float s = sigmoidf(g[i]);
            dg[i] += dy[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
        }
    } else if (du) {
#pragma omp parallel for schedule(static) PAR_IF(N)
        for (int64_t i = 0; i < N; i++) du[i] += dy[i] * g[i] * sigmoidf(g[i]);
    }
    return QT_OK;
}

const qt_op_def qt_opdef_swiglu = {
    .name = "swiglu",
    .forward = {[QT_DEV_CPU] = swiglu_fwd_cpu},
    .backward = {[QT_DEV_CPU] = swiglu_bwd_cpu},
};

/* ---- dropout: attrs a.dropout (p, seed) ---- */
static qt_status dropout_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    const float *x = qt_f32(n->in[0]);
    float *y = qt_f32(n->out), p = n->a.dropout.p, keep = 1.0f / (1.0f - p);
    uint64_t seed = n->a.dropout.seed;
    int64_t N = qt_numel(n->out);
#pragma omp parallel for schedule(static) PAR_IF(N)
    for (int64_t i = 0; i < N; i++)
        y[i] = qt_rand_uniform(seed, (uint64_t)i) >= p ? x[i] * keep : 0.0f;
    return QT_OK;
}

static qt_status dropout_bwd_cpu(qt_ctx *ctx, qt_node *n) {
    float *dx = n->in[0]->grad;
    if (!dx) return QT_OK;
    const float *dy = n->out->grad;
    float p = n->a.dropout.p, keep = 1.0f / (1.0f - p);
    uint64_t seed = n->a.dropout.seed;
    int64_t N = qt_numel(n->out);
#pragma omp parallel for schedule(static) PAR_IF(N)
    for (int64_t i = 0; i < N; i++)
        if (qt_rand_uniform(seed, (uint64_t)i) >= p) dx[i] += dy[i] * keep;
    return QT_OK;
}

const qt_op_def qt_opdef_dropout = {
    .name = "dropout",
    .forward = {[QT_DEV_CPU] = dropout_fwd_cpu},
    .backward = {[QT_DEV_CPU] = dropout_bwd_cpu},
};

/* ---- constructors ---- */
static qt_tensor *unary(qt_ctx *ctx, qt_op op, qt_tensor *x, const qt_op_attrs *at) {
    if (!qt_check_inputs(ctx, qt_op_name(op), 1, &x)) return NULL;
    qt_tensor *out = qt_new_like_shape(ctx, x, x->ndim, x->shape);
    return qt_op_run(ctx, op, 1, &x, out, at);
}

qt_tensor *qt_silu(qt_ctx *ctx, qt_tensor *x) { return unary(ctx, QT_OP_SILU, x, NULL); }
qt_tensor *qt_gelu(qt_ctx *ctx, qt_tensor *x) { return unary(ctx, QT_OP_GELU, x, NULL); }

qt_tensor *qt_dropout(qt_ctx *ctx, qt_tensor *x, float p, uint64_t seed) {
    if (!(p >= 0.0f && p < 1.0f))
        return QT_FAIL(ctx, QT_EINVAL, "dropout: p must be in [0, 1), got %g", (double)p);
    if (p == 0.0f) return qt_check_inputs(ctx, "dropout", 1, &x) ? x : NULL;
    qt_op_attrs at = {.dropout = {.p = p, .seed = seed}};
    return unary(ctx, QT_OP_DROPOUT, x, &at);
}

qt_tensor *qt_swiglu(qt_ctx *ctx, qt_tensor *gate, qt_tensor *up) {
    qt_tensor *in[2] = {gate, up};
    if (!qt_check_inputs(ctx, "swiglu", 2, in)) return NULL;
    if (!qt_same_shape(gate, up)) {
        char sa[64], sb[64];
        return QT_FAIL(ctx, QT_ESHAPE, "swiglu: gate %s and up %s differ",
                       qt_shape_str(gate, sa, 64), qt_shape_str(up, sb, 64));
    }
    qt_tensor *out = qt_new_like_shape(ctx, gate, gate->ndim, gate->shape);
    return qt_op_run(ctx, QT_OP_SWIGLU, 2, in, out, NULL);
}
