/*
 * ops_embedding.c - embedding lookup: out[..., :] = weight[ids[...], :].
 * Backward scatter-adds rows of dy into weight's grad; rows are split across threads
 * by destination column range, so repeated ids never race and the sum order is fixed.
 */
#include <omp.h>

#include "internal.h"

qt_status qt_check_ids(qt_ctx *ctx, const int32_t *ids, int64_t n, int64_t V) {
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return (QT_FAIL(ctx, QT_EINVAL, "embedding: id %d at position %lld is outside "
                                             "[0, %lld)",
                            ids[i], (long long)i, (long long)V),
                    QT_EINVAL);
    return QT_OK;
}

static qt_status embedding_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    const qt_tensor *w = n->in[0], *ids = n->in[1];
    int64_t V = w->shape[0], D = w->shape[1], N = qt_numel(ids);
    const int32_t *id = ids->data;
    qt_status st = qt_check_ids(ctx, id, N, V);
    if (st != QT_OK) return st;
    const float *W = qt_f32(w);
    float *Y = qt_f32(n->out);
#pragma omp parallel for schedule(static) if (N * D > 32768)
    for (int64_t i = 0; i < N; i++)
        for (int64_t d = 0; d < D; d++) Y[i * D + d] = W[(int64_t)id[i] * D + d];
    return QT_OK;
}

static qt_status embedding_bwd_cpu(qt_ctx *ctx, qt_node *n) {
    float *dW = n->in[0]->grad;
    if (!dW) return QT_OK;
    int64_t D = n->in[0]->shape[1], N = qt_numel(n->in[1]);
    const int32_t *id = n->in[1]->data;
    const float *dY = n->out->grad;
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t d0 = D * t / nt, d1 = D * (t + 1) / nt;
        for (int64_t i = 0; i < N; i++) {
            float *row = dW + (int64_t)id[i] * D;
            const float *g = dY + i * D;
            for (int64_t d = d0; d < d1; d++) row[d] += g[d];
        }
    }
    return QT_OK;
}

const qt_op_def qt_opdef_embedding = {
    .name = "embedding",
    .forward = {[QT_DEV_CPU] = embedding_fwd_cpu},
    .backward = {[QT_DEV_CPU] = embedding_bwd_cpu},
};

qt_tensor *qt_embedding(qt_ctx *ctx, qt_tensor *weight, qt_tensor *ids) {
    if (!qt_check_inputs(ctx, "embedding", 1, &weight)) return NULL;
    if (!ids) return QT_FAIL(ctx, QT_EINVAL, "embedding: ids is NULL");
    char sb[64];
    if (weight->ndim != 2)
        return QT_FAIL(ctx, QT_ESHAPE, "embedding: weight must be (V, D), got %s",
                       qt_shape_str(weight, sb, 64));
    if (ids->dtype != QT_I32)
        return QT_FAIL(ctx, QT_EDTYPE, "embedding: ids must be i32, got %s",
                       qt_dtype_name(ids->dtype));
    if (ids->ndim > 3)
        return QT_FAIL(ctx, QT_ESHAPE, "embedding: ids may have at most 3 dims, got %d",
                       ids->ndim);
    int64_t shape[QT_MAX_DIMS];
    for (int i = 0; i < ids->ndim; i++) shape[i] = ids->shape[i];
    shape[ids->ndim] = weight->shape[1];
    qt_tensor *out = qt_new_like_shape(ctx, weight, ids->ndim + 1, shape);
    qt_tensor *in[2] = {weight, ids};
    return qt_op_run(ctx, QT_OP_EMBEDDING, 2, in, out, NULL);
}
