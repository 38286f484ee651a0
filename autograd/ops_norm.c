/*
 * ops_norm.c - RMSNorm (Zhang & Sennrich 2019, as Llama uses it) and LayerNorm (Ba et
 * al. 2016), both over the last dim, fused forward and backward.
 *   RMSNorm:   y = x * r * w,            r = 1/sqrt(mean(x^2) + eps)
 *   LayerNorm: y = (x - mu) * r * w + b, r = 1/sqrt(var(x) + eps), biased variance
 * Row statistics are accumulated in double and r (and mu) saved for backward:
 *   RMSNorm:   dx = r*g - x * r^3/D * sum(g*x),               g = dy*w
 *   LayerNorm: dx = r * (g - mean(g) - xhat*mean(g*xhat)),    xhat = (x-mu)*r
 * Weight/bias grads are column sums over rows, split by column across threads.
 */
#include <math.h>

#include "internal.h"

/* saved: (rows) r, then (rows) mu for LayerNorm. attrs: a.norm (eps, has_bias) */

static qt_status rmsnorm_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    const qt_tensor *x = n->in[0];
    int64_t D = qt_dim(x, -1), R = qt_rows(x);
    float *rs = qt_ctx_alloc(ctx, (size_t)R * sizeof(float));
    if (!rs) return ctx->status;
    n->saved = rs;
    const float *X = qt_f32(x), *W = qt_f32(n->in[1]);
    float *Y = qt_f32(n->out), eps = n->a.norm.eps;
#pragma omp parallel for schedule(static) if (R * D > 16384)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = X + r * D;
        double ss = 0.0;
        for (int64_t d = 0; d < D; d++) ss += (double)xr[d] * xr[d];
        float rstd = 1.0f / sqrtf((float)(ss / (double)D) + eps);
        rs[r] = rstd;
        for (int64_t d = 0; d < D; d++) Y[r * D + d] = xr[d] * rstd * W[d];
    }
    return QT_OK;
}

static qt_status rmsnorm_bwd_cpu(qt_ctx *ctx, qt_node *n) {
    const qt_tensor *x = n->in[0];
    int64_t D = qt_dim(x, -1), R = qt_rows(x);
    const float *X = qt_f32(x), *W = qt_f32(n->in[1]), *dY = n->out->grad, *rs = n->saved;
    float *dX = n->in[0]->grad, *dW = n->in[1]->grad;
    if (dX) {
#pragma omp parallel for schedule(static) if (R * D > 16384)
        for (int64_t r = 0; r < R; r++) {
            const float *xr = X + r * D, *dy = dY + r * D;
            double dot = 0.0;
            for (int64_t d = 0; d < D; d++) dot += (double)dy[d] * W[d] * xr[d];
            float rstd = rs[r], c = (float)(dot / (double)D) * rstd * rstd * rstd;
            for (int64_t d = 0; d < D; d++) dX[r * D + d] += rstd * dy[d] * W[d] - xr[d] * c;
        }
    }
    if (dW) {
#pragma omp parallel for schedule(static) if (R * D > 16384)
        for (int64_t d = 0; d < D; d++) {
            double acc = 0.0;
            for (int64_t r = 0; r < R; r++) acc += (double)dY[r * D + d] * X[r * D + d] * rs[r];
            dW[d] += (float)acc;
        }
    }
    return QT_OK;
}

const qt_op_def qt_opdef_rmsnorm = {
    .name = "rmsnorm",
    .forward = {[QT_DEV_CPU] = rmsnorm_fwd_cpu},
    .backward = {[QT_DEV_CPU] = rmsnorm_bwd_cpu},
};

static qt_status layernorm_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    const qt_tensor *x = n->in[0];
    int64_t D = qt_dim(x, -1), R = qt_rows(x);
    float *rs = qt_ctx_alloc(ctx, 2 * (size_t)R * sizeof(float));
    if (!rs) return ctx->status;
    n->saved = rs;
    float *mus = rs + R;
    const float *X = qt_f32(x), *W = qt_f32(n->in[1]);
    const float *Bi = n->a.norm.has_bias ? qt_f32(n->in[2]) : NULL;
    float *Y = qt_f32(n->out), eps = n->a.norm.eps;
#pragma omp parallel for schedule(static) if (R * D > 16384)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = X + r * D;
        double s = 0.0, ss = 0.0;
        for (int64_t d = 0; d < D; d++) s += xr[d];
        double mu = s / (double)D;
        for (int64_t d = 0; d < D; d++) ss += (xr[d] - mu) * (xr[d] - mu);
        float rstd = 1.0f / sqrtf((float)(ss / (double)D) + eps), m = (float)mu;
        rs[r] = rstd;
        mus[r] = m;
        for (int64_t d = 0; d < D; d++)
            Y[r * D + d] = (xr[d] - m) * rstd * W[d] + (Bi ? Bi[d] : 0.0f);
    }
    return QT_OK;
}

static qt_status layernorm_bwd_cpu(qt_ctx *ctx, qt_node *n) {
    const qt_tensor *x = n->in[0];
    int64_t D = qt_dim(x, -1), R = qt_rows(x);
    const float *X = qt_f32(x), *W = qt_f32(n->in[1]), *dY = n->out->grad;
    const float *rs = n->saved, *mus = rs + R;
    float *dX = n->in[0]->grad, *dW = n->in[1]->grad;
    float *dB = n->a.norm.has_bias ? n->in[2]->grad : NULL;
    if (dX) {
#pragma omp parallel for schedule(static) if (R * D > 16384)
        for (int64_t r = 0; r < R; r++) {
            const float *xr = X + r * D, *dy = dY + r * D;
            float rstd = rs[r], mu = mus[r];
            double sg = 0.0, sgx = 0.0;
            for (int64_t d = 0; d < D; d++) {
                float g = dy[d] * W[d];
                sg += g;
                sgx += (double)g * (xr[d] - mu) * rstd;
            }
            float mg = (float)(sg / (double)D), mgx = (float)(sgx / (double)D);
            for (int64_t d = 0; d < D; d++) {
                float xhat = (xr[d] - mu) * rstd;
                dX[r * D + d] += rstd * (dy[d] * W[d] - mg - xhat * mgx);
            }
        }
    }
    if (dW || dB) {
#pragma omp parallel for schedule(static) if (R * D > 16384)
        for (int64_t d = 0; d < D; d++) {
            double aw = 0.0, ab = 0.0;
            for (int64_t r = 0; r < R; r++) {
                float dy = dY[r * D + d];
                aw += (double)dy * (X[r * D + d] - mus[r]) * rs[r];
                ab += dy;
            }
            if (dW) dW[d] += (float)aw;
            if (dB) dB[d] += (float)ab;
        }
    }
    return QT_OK;
}

const qt_op_def qt_opdef_layernorm = {
    .name = "layernorm",
    .forward = {[QT_DEV_CPU] = layernorm_fwd_cpu},
    .backward = {[QT_DEV_CPU] = layernorm_bwd_cpu},
};

static bool check_norm_weight(qt_ctx *ctx, const char *op, const qt_tensor *x,
                              const qt_tensor *w, const char *what) {
    if (w->ndim != 1 || w->shape[0] != qt_dim(x, -1)) {
        char sx[64], sw[64];
        QT_FAIL(ctx, QT_ESHAPE, "%s: %s must be (%lld) for input %s, got %s", op, what,
                (long long)qt_dim(x, -1), qt_shape_str(x, sx, 64), qt_shape_str(w, sw, 64));
        return false;
    }
    return true;
}

qt_tensor *qt_rmsnorm(qt_ctx *ctx, qt_tensor *x, qt_tensor *weight, float eps) {
    qt_tensor *in[2] = {x, weight};
    if (!qt_check_inputs(ctx, "rmsnorm", 2, in)) return NULL;
    if (x->ndim < 1) return QT_FAIL(ctx, QT_ESHAPE, "rmsnorm: input is a scalar");
    if (!check_norm_weight(ctx, "rmsnorm", x, weight, "weight")) return NULL;
    qt_tensor *out = qt_new_like_shape(ctx, x, x->ndim, x->shape);
    qt_op_attrs at = {.norm = {.eps = eps}};
    return qt_op_run(ctx, QT_OP_RMSNORM, 2, in, out, &at);
}

qt_tensor *qt_layernorm(qt_ctx *ctx, qt_tensor *x, qt_tensor *weight, qt_tensor *bias,
                        float eps) {
    qt_tensor *in[3] = {x, weight, bias};
    int n_in = bias ? 3 : 2;
    if (!qt_check_inputs(ctx, "layernorm", n_in, in)) return NULL;
    if (x->ndim < 1) return QT_FAIL(ctx, QT_ESHAPE, "layernorm: input is a scalar");
    if (!check_norm_weight(ctx, "layernorm", x, weight, "weight")) return NULL;
    if (bias && !check_norm_weight(ctx, "layernorm", x, bias, "bias")) return NULL;
    qt_tensor *out = qt_new_like_shape(ctx, x, x->ndim, x->shape);
    qt_op_attrs at = {.norm = {.eps = eps, .has_bias = bias != NULL}};
    return qt_op_run(ctx, QT_OP_LAYERNORM, n_in, in, out, &at);
}
