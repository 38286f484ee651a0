/*
 * shape.cu - reshape and permute on CUDA, as the CPU reference (autograd/ops_shape.c).
 * Reshape is a view: forward only points out->data at the input's data (the constructor
 * already did; no copy, no launch) and backward adds the f32 grad elementwise (grads are
 * not shared between a view and its input).
 * Permute materialises a contiguous output: attrs i[0..3] is the perm padded to 4 dims
 * with leading size-1 dims; out[a,b,c,d] = x[a*st0 + b*st1 + c*st2 + d*st3] with the
 * input strides reordered by perm (the CPU's perm_strides). One thread per output
 * element; backward scatters dy back (a bijection: no two threads write one element).
 * x f32 or bf16 (the output has its dtype).
 */
#include "common.cuh"

#define SHAPE_THREADS 256

/* ---- reshape ---- */
static qt_status reshape_fwd(qt_ctx *ctx, qt_node *n) {
    n->out->data = n->in[0]->data; /* view: no copy */
    return QT_OK;
}


static qt_status reshape_bwd(qt_ctx *ctx, qt_node *n) {
    float *dx = n->in[0]->grad;
    int64_t N = qt_numel(n->out);
    if (!dx || N == 0) return QT_OK;
    qt_axpy_kernel<float><<<qt_blocks(N, SHAPE_THREADS), SHAPE_THREADS>>>(dx, n->out->grad, 1.0f, N);
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

/* ---- permute ---- */
typedef struct {
    int64_t os[4]; /* output shape (4-d padded) */
    int64_t st[4]; /* input stride of each output dim */
} perm_geom;

static void perm_geometry(const qt_node *n, perm_geom *g) { qt_perm_geometry(n, g->os, g->st); }

/* Input offset of output element i (all os[] > 0). I is uint32_t when every offset fits
 * (the common case: 64-bit division is many times slower on the GPU), else int64_t. */
template <typename I>
__device__ __forceinline__ I perm_src(const perm_geom &g, I i) {
    I d = i % (I)g.os[3];
    i /= (I)g.os[3];
    I c = i % (I)g.os[2];
    i /= (I)g.os[2];
    I b = i % (I)g.os[1];
    I a = i / (I)g.os[1];
    return a * (I)g.st[0] + b * (I)g.st[1] + c * (I)g.st[2] + d * (I)g.st[3];
}

template <typename T, typename I>
__global__ void permute_fwd_kernel(const T *x, T *y, perm_geom g, int64_t N) {
    QT_GRID_LOOP(i, N) qt_st(y, i, qt_ld(x, (int64_t)perm_src<I>(g, (I)i)));
}

template <typename I>
__global__ void permute_bwd_kernel(const float *dy, float *dx, perm_geom g, int64_t N) {
    QT_GRID_LOOP(i, N) dx[(int64_t)perm_src<I>(g, (I)i)] += dy[i];
}

static qt_status permute_fwd(qt_ctx *ctx, qt_node *n) {
    int64_t N = qt_numel(n->out);
    if (N == 0) return QT_OK;
    perm_geom g;
    perm_geometry(n, &g);
    QT_DISPATCH_FLOAT(n->in[0]->dtype, T, {
        if (N <= (int64_t)UINT32_MAX)
            permute_fwd_kernel<T, uint32_t><<<qt_blocks(N, SHAPE_THREADS), SHAPE_THREADS>>>(
                (const T *)n->in[0]->data, (T *)n->out->data, g, N);
        else
            permute_fwd_kernel<T, int64_t><<<qt_blocks(N, SHAPE_THREADS), SHAPE_THREADS>>>(
                (const T *)n->in[0]->data, (T *)n->out->data, g, N);
        QT_CUDA_LAUNCHED();
    });
    return QT_OK;
}

static qt_status permute_bwd(qt_ctx *ctx, qt_node *n) {
    float *dx = n->in[0]->grad;
    int64_t N = qt_numel(n->out);
    if (!dx || N == 0) return QT_OK;
    perm_geom g;
    perm_geometry(n, &g);
    if (N <= (int64_t)UINT32_MAX)
        permute_bwd_kernel<uint32_t><<<qt_blocks(N, SHAPE_THREADS), SHAPE_THREADS>>>(
            n->out->grad, dx, g, N);
    else
        permute_bwd_kernel<int64_t><<<qt_blocks(N, SHAPE_THREADS), SHAPE_THREADS>>>(
            n->out->grad, dx, g, N);
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

void qt_cuda_register_shape(qt_backend *be) {
    be->forward[QT_OP_RESHAPE] = reshape_fwd;
    be->backward[QT_OP_RESHAPE] = reshape_bwd;
    be->forward[QT_OP_PERMUTE] = permute_fwd;
    be->backward[QT_OP_PERMUTE] = permute_bwd;
}
