/*
 * ops_loss.c - cross-entropy from logits, fused with the log-softmax.
 *   loss = mean over rows with target != ignore of (lse(row) - row[target])
 * Only the per-row log-sum-exp is saved (N floats, not N x V probabilities); backward
 * recomputes softmax from the logits: dlogits = (softmax - onehot) * dloss / count.
 * attrs: a.ce (the ignore index; the count of counted rows, set by forward).
 */
#include <math.h>

#include "internal.h"

qt_status qt_ce_count(qt_ctx *ctx, const int32_t *t, int64_t n, int64_t V, int32_t ignore,
                      int64_t *count) {
    int64_t c = 0;
    for (int64_t r = 0; r < n; r++) {
        if (t[r] == ignore) continue;
        if (t[r] < 0 || t[r] >= V)
            return (QT_FAIL(ctx, QT_EINVAL,
                            "cross_entropy: target %d at row %lld is outside [0, %lld) and is "
                            "not the ignore index %d",
                            t[r], (long long)r, (long long)V, ignore),
                    QT_EINVAL);
        c++;
    }
    *count = c;
    return QT_OK;
}

static qt_status ce_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    const qt_tensor *lg = n->in[0], *tg = n->in[1];
    int64_t V = qt_dim(lg, -1), N = qt_rows(lg);
    const int32_t *t = tg->data;
    int32_t ignore = n->a.ce.ignore_index;
    int64_t count = 0;
    qt_status st = qt_ce_count(ctx, t, N, V, ignore, &count);
    if (st != QT_OK) return st;
    n->a.ce.count = count;
    float *lse = qt_ctx_alloc(ctx, (size_t)(N ? N : 1) * sizeof(float));
    if (!lse) return ctx->status;
    n->saved = lse;
    const float *L = qt_f32(lg);
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (N * V > 16384)
    for (int64_t r = 0; r < N; r++) {
        const float *x = L + r * V;
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int64_t v = 0; v < V; v++) mx = x[v] > mx ? x[v] : mx;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int64_t v = 0; v < V; v++) s += qt_expf(x[v] - mx);
        lse[r] = mx + (float)log(s);
        if (t[r] != ignore) total += (double)lse[r] - x[t[r]];
    }
    qt_f32(n->out)[0] = count ? (float)(total / (double)count) : 0.0f;
    return QT_OK;
}

static qt_status ce_bwd_cpu(qt_ctx *ctx, qt_node *n) {
    float *dL = n->in[0]->grad;
    int64_t count = n->a.ce.count;
    if (!dL || count == 0) return QT_OK;
    const qt_tensor *lg = n->in[0];
    int64_t V = qt_dim(lg, -1), N = qt_rows(lg);
    const int32_t *t = n->in[1]->data;
    int32_t ignore = n->a.ce.ignore_index;
    const float *L = qt_f32(lg), *lse = n->saved;
    float g = n->out->grad[0] / (float)count;
#pragma omp parallel for schedule(static) if (N * V > 16384)
    for (int64_t r = 0; r < N; r++) {
        if (t[r] == ignore) continue;
        const float *x = L + r * V;
        float *d = dL + r * V;
        float l = lse[r];
#pragma omp simd
        for (int64_t v = 0; v < V; v++) d[v] += g * qt_expf(x[v] - l);
        d[t[r]] -= g;
    }
    return QT_OK;
}

const qt_op_def qt_opdef_cross_entropy = {
    .name = "cross_entropy",
    .forward = {[QT_DEV_CPU] = ce_fwd_cpu},
    .backward = {[QT_DEV_CPU] = ce_bwd_cpu},
};

qt_tensor *qt_cross_entropy(qt_ctx *ctx, qt_tensor *logits, qt_tensor *targets,
                            int32_t ignore_index) {
    if (!qt_check_inputs(ctx, "cross_entropy", 1, &logits)) return NULL;
    if (!targets) return QT_FAIL(ctx, QT_EINVAL, "cross_entropy: targets is NULL");
    char sa[64], sb[64];
    if (targets->dtype != QT_I32)
        return QT_FAIL(ctx, QT_EDTYPE, "cross_entropy: targets must be i32, got %s",
                       qt_dtype_name(targets->dtype));
    if (logits->ndim < 1 || qt_numel(targets) != qt_rows(logits))
        return QT_FAIL(ctx, QT_ESHAPE,
                       "cross_entropy: logits %s need one target per row, targets are %s",
                       qt_shape_str(logits, sa, 64), qt_shape_str(targets, sb, 64));
    /* the loss is f32 whatever the logits' dtype (bf16 on the GPU) */
    qt_tensor *out = qt_tensor_new_on(ctx, logits->device, QT_F32, 0, NULL);
    qt_tensor *in[2] = {logits, targets};
    qt_op_attrs at = {.ce = {.ignore_index = ignore_index}};
    return qt_op_run(ctx, QT_OP_CROSS_ENTROPY, 2, in, out, &at);
}
