/*
 * ops_shape.c - reshape (a view: same data, new shape) and permute/transpose
 * (materialised contiguous, since every tensor is contiguous row-major).
 * A view shares data with its input but not grad: backward adds its grad into the
 * input's, so views need no aliasing rules.
 */
#include <string.h>

#include "internal.h"

static qt_status reshape_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    n->out->data = n->in[0]->data; /* view: no copy */
    return QT_OK;
}

static qt_status reshape_bwd_cpu(qt_ctx *ctx, qt_node *n) {
    float *dx = n->in[0]->grad;
    const float *dy = n->out->grad;
    int64_t N = qt_numel(n->out);
    if (!dx) return QT_OK;
#pragma omp parallel for schedule(static) if (N > 32768)
    for (int64_t i = 0; i < N; i++) dx[i] += dy[i];
    return QT_OK;
}

const qt_op_def qt_opdef_reshape = {
    .name = "reshape",
    .forward = {[QT_DEV_CPU] = reshape_fwd_cpu},
    .backward = {[QT_DEV_CPU] = reshape_bwd_cpu},
};

qt_tensor *qt_reshape(qt_ctx *ctx, qt_tensor *x, int ndim, const int64_t *shape) {
    if (ctx->status != QT_OK) return NULL;
    if (!x) return QT_FAIL(ctx, QT_EINVAL, "reshape: input is NULL");
    bool is_float = x->dtype == QT_F32 || x->dtype == QT_BF16;
    if (is_float && !qt_check_inputs(ctx, "reshape", 1, &x)) return NULL;
    char sb[64];
    if (ndim < 0 || ndim > QT_MAX_DIMS)
        return QT_FAIL(ctx, QT_ESHAPE, "reshape: ndim must be 0..%d, got %d", QT_MAX_DIMS, ndim);
    int64_t s[QT_MAX_DIMS], known = 1;
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (s[i] == -1 && infer < 0) infer = i;
        else if (s[i] < 0)
            return QT_FAIL(ctx, QT_ESHAPE, "reshape: bad dim %lld", (long long)s[i]);
        else known *= s[i];
    }
    int64_t N = qt_numel(x);
    if (infer >= 0) {
        if (known == 0 || N % known)
            return QT_FAIL(ctx, QT_ESHAPE, "reshape: cannot infer a dim of %s",
                           qt_shape_str(x, sb, 64));
        s[infer] = N / known;
        known = N;
    }
    if (known != N)
        return QT_FAIL(ctx, QT_ESHAPE, "reshape: %s has %lld elements, new shape has %lld",
                       qt_shape_str(x, sb, 64), (long long)N, (long long)known);
    if (ctx->status != QT_OK) return NULL;
    qt_tensor *out = qt_ctx_alloc(ctx, sizeof *out);
    if (!out) return NULL;
    memset(out, 0, sizeof *out);
    out->ndim = ndim;
    for (int i = 0; i < ndim; i++) out->shape[i] = s[i];
    out->dtype = x->dtype;
    out->device = x->device;
    out->node = -1;
    out->data = x->data;
    if (!is_float) return out; /* ids and other non-float views: no tape */
    return qt_op_run(ctx, QT_OP_RESHAPE, 1, &x, out, NULL);
}

/* ---- permute ------------------------------------------------------------------------
 * attrs: a.permute, the perm padded to 4 dims with leading size-1 dims. */

/* Strides of the input, reordered by perm, so out[idx] = in[sum idx_k * st[k]]. */
void qt_perm_geometry(const qt_node *n, int64_t os[4], int64_t st[4]) {
    const qt_tensor *x = n->in[0];
    int pad = 4 - x->ndim;
    int64_t xs[4], xst[4];
    for (int i = 0; i < 4; i++) xs[i] = i < pad ? 1 : x->shape[i - pad];
    xst[3] = 1;
    for (int i = 2; i >= 0; i--) xst[i] = xst[i + 1] * xs[i + 1];
    for (int k = 0; k < 4; k++) {
        os[k] = xs[n->a.permute.perm[k]];
        st[k] = xst[n->a.permute.perm[k]];
    }
}

static qt_status permute_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    int64_t os[4], st[4];
    qt_perm_geometry(n, os, st);
    const float *x = qt_f32(n->in[0]);
    float *y = qt_f32(n->out);
#pragma omp parallel for collapse(2) schedule(static) if (qt_numel(n->out) > 32768)
    for (int64_t a = 0; a < os[0]; a++)
        for (int64_t b = 0; b < os[1]; b++)
            for (int64_t c = 0; c < os[2]; c++) {
                float *yr = y + ((a * os[1] + b) * os[2] + c) * os[3];
                const float *xr = x + a * st[0] + b * st[1] + c * st[2];
                for (int64_t d = 0; d < os[3]; d++) yr[d] = xr[d * st[3]];
            }
    return QT_OK;
}

static qt_status permute_bwd_cpu(qt_ctx *ctx, qt_node *n) {
    float *dx = n->in[0]->grad;
    if (!dx) return QT_OK;
    int64_t os[4], st[4];
    qt_perm_geometry(n, os, st);
    const float *dy = n->out->grad;
    /* a permutation is a bijection: no two output elements hit one input element */
#pragma omp parallel for collapse(2) schedule(static) if (qt_numel(n->out) > 32768)
    for (int64_t a = 0; a < os[0]; a++)
        for (int64_t b = 0; b < os[1]; b++)
            for (int64_t c = 0; c < os[2]; c++) {
                const float *dyr = dy + ((a * os[1] + b) * os[2] + c) * os[3];
                float *dxr = dx + a * st[0] + b * st[1] + c * st[2];
                for (int64_t d = 0; d < os[3]; d++) dxr[d * st[3]] += dyr[d];
            }
    return QT_OK;
}

const qt_op_def qt_opdef_permute = {
    .name = "permute",
    .forward = {[QT_DEV_CPU] = permute_fwd_cpu},
    .backward = {[QT_DEV_CPU] = permute_bwd_cpu},
};

qt_tensor *qt_permute(qt_ctx *ctx, qt_tensor *x, const int *perm) {
    if (!qt_check_inputs(ctx, "permute", 1, &x)) return NULL;
    int seen[QT_MAX_DIMS] = {0};
    int64_t shape[QT_MAX_DIMS];
    qt_op_attrs at = {.permute = {{0, 1, 2, 3}}};
    int pad = 4 - x->ndim;
    for (int i = 0; i < x->ndim; i++) {
        if (perm[i] < 0 || perm[i] >= x->ndim || seen[perm[i]]++)
            return QT_FAIL(ctx, QT_EINVAL, "permute: not a permutation of %d dims", x->ndim);
        shape[i] = x->shape[perm[i]];
        at.permute.perm[pad + i] = pad + perm[i];
    }
    qt_tensor *out = qt_new_like_shape(ctx, x, x->ndim, shape);
    return qt_op_run(ctx, QT_OP_PERMUTE, 1, &x, out, &at);
}

qt_tensor *qt_transpose(qt_ctx *ctx, qt_tensor *x, int d0, int d1) {
    if (!qt_check_inputs(ctx, "transpose", 1, &x)) return NULL;
    if (d0 < 0) d0 += x->ndim;
    if (d1 < 0) d1 += x->ndim;
    if (d0 < 0 || d1 < 0 || d0 >= x->ndim || d1 >= x->ndim)
        return QT_FAIL(ctx, QT_EINVAL, "transpose: dims out of range for %d dims", x->ndim);
    int perm[QT_MAX_DIMS] = {0, 1, 2, 3};
    perm[d0] = d1;
    perm[d1] = d0;
    return qt_permute(ctx, x, perm);
}
