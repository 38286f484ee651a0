/*
 * rope.cu - rotary position embedding on CUDA, rotate-half layout of HF Llama, the same
 * as the CPU reference (autograd/ops_rope.c):
 *   y[i]     = x[i] cos - x[i+D/2] sin
 *   y[i+D/2] = x[i+D/2] cos + x[i] sin,   angle = (pos0 + t) * theta^(-2i/D)
 * The (T, D/2) cos table then (T, D/2) sin table is built on the device exactly as the
 * CPU builds it, in f32: inv = 1/powf(theta, 2i/D), ang = (float)(pos0+t) * inv, then
 * cosf/sinf. Surprise to expect: device powf/cosf/sinf (accurate versions, no fast math)
 * may differ from glibc's by an ulp or two, so the tables are not bit-identical to the
 * CPU's. n->saved (DEVICE memory) holds the table; backward reuses it and applies the
 * inverse rotation, accumulating into the f32 grad. attrs: f[0] theta, i[0] pos0.
 * x and y are f32 or bf16 (same dtype); arithmetic is f32.
 */
#include "common.cuh"

#define ROPE_THREADS 256

__global__ void rope_table_kernel(float *tab, int64_t T, int64_t D, float theta,
                                  int64_t pos0) {
    int64_t h = D / 2;
    QT_GRID_LOOP(k, T * h) {
        int64_t t = k / h, i = k % h;
        float inv = 1.0f / powf(theta, (float)(2 * i) / (float)D);
        float ang = (float)(pos0 + t) * inv;
        tab[t * h + i] = cosf(ang);
        tab[T * h + t * h + i] = sinf(ang);
    }
}

/* One thread per rotated pair (row r, i < D/2); row r is at position t = r % T. */
template <typename TI, typename TO, bool ACC>
__global__ void rope_apply_kernel(const TI *X, TO *Y, const float *tab, int64_t R, int64_t T,
                                  int64_t D, float sgn) {
    int64_t h = D / 2;
    QT_GRID_LOOP(k, R * h) {
        int64_t r = k / h, i = k % h, t = r % T;
        float c = tab[t * h + i], si = sgn * tab[T * h + t * h + i];
        const TI *x = X + r * D;
        TO *y = Y + r * D;
        float x1 = qt_ld(x, i), x2 = qt_ld(x, i + h);
        float y1 = x1 * c - x2 * si, y2 = x2 * c + x1 * si;
        if (ACC) {
            y1 += qt_ld(y, i);
            y2 += qt_ld(y, i + h);
        }
        qt_st(y, i, y1);
        qt_st(y, i + h, y2);
    }
}

static qt_status rope_ensure_table(qt_ctx *ctx, qt_node *n, int64_t T, int64_t D) {
    if (n->saved) return QT_OK;
    int64_t h = D / 2;
    float *tab = (float *)qt_cuda_scratch(ctx, n, 2 * (size_t)(T * h) * sizeof(float) + 4);
    if (!tab) return ctx->status;
    rope_table_kernel<<<qt_blocks(T * h, ROPE_THREADS), ROPE_THREADS>>>(
        tab, T, D, n->a.rope.theta, n->a.rope.pos0);
    QT_CUDA_LAUNCHED();
    n->saved = tab;
    return QT_OK;
}

static qt_status rope_fwd(qt_ctx *ctx, qt_node *n) {
    const qt_tensor *x = n->in[0];
    int64_t D = qt_dim(x, -1), T = qt_dim(x, -2), R = qt_rows(x);
    if (R == 0 || D == 0 || T == 0) return QT_OK;
    qt_status st = rope_ensure_table(ctx, n, T, D);
    if (st != QT_OK) return st;
    const float *tab = (const float *)n->saved;
    QT_DISPATCH_FLOAT(x->dtype, T_, {
        rope_apply_kernel<T_, T_, false><<<qt_blocks(R * (D / 2), ROPE_THREADS), ROPE_THREADS>>>(
            (const T_ *)x->data, (T_ *)n->out->data, tab, R, T, D, 1.0f);
        QT_CUDA_LAUNCHED();
    });
    return QT_OK;
}

static qt_status rope_bwd(qt_ctx *ctx, qt_node *n) {
    float *dx = n->in[0]->grad;
    if (!dx) return QT_OK;
    const qt_tensor *x = n->in[0];
    int64_t D = qt_dim(x, -1), T = qt_dim(x, -2), R = qt_rows(x);
    if (R == 0 || D == 0 || T == 0) return QT_OK;
    qt_status st = rope_ensure_table(ctx, n, T, D);
    if (st != QT_OK) return st;
    rope_apply_kernel<float, float, true><<<qt_blocks(R * (D / 2), ROPE_THREADS), ROPE_THREADS>>>(
        n->out->grad, dx, (const float *)n->saved, R, T, D, -1.0f);
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

void qt_cuda_register_rope(qt_backend *be) {
    be->forward[QT_OP_ROPE] = rope_fwd;
    be->backward[QT_OP_ROPE] = rope_bwd;
}
