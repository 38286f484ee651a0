/*
 * softmax.cu - softmax over the last dim on the GPU (the CUDA side of
 * autograd/ops_softmax.c; same node, no attrs, nothing saved).
 *
 * Forward: y = exp(x - max) / sum exp(x - max), max-subtracted as on the CPU.
 * Backward uses the output: dx += y * (dy - sum(dy * y)).
 * One block per row (a grid-stride loop over rows when there are very many), block
 * reductions from common.cuh; any row length N (7, 50257, ...). The row is read three
 * times in forward (max, sum, write): it stays in L1/L2, and this keeps the kernel
 * trivially correct. Sums are f32 (the CPU sums in double: differences ~1e-7 relative).
 */
#include <math.h>

#include "common.cuh"

template <typename T>
__global__ void softmax_fwd_kernel(const T *__restrict__ X, T *__restrict__ Y, int64_t R,
                                   int64_t N) {
    __shared__ float shm[32];
    for (int64_t r = blockIdx.x; r < R; r += gridDim.x) { /* uniform over the block */
        const T *x = X + r * N;
        T *y = Y + r * N;
        float mx = -INFINITY;
        for (int64_t c = threadIdx.x; c < N; c += blockDim.x) mx = fmaxf(mx, qt_ld(x, c));
        mx = qt_block_max(mx, shm);
        float s = 0.0f;
        for (int64_t c = threadIdx.x; c < N; c += blockDim.x) s += expf(qt_ld(x, c) - mx);
        s = qt_block_sum(s, shm);
        const float inv = 1.0f / s;
        for (int64_t c = threadIdx.x; c < N; c += blockDim.x)
            qt_st(y, c, expf(qt_ld(x, c) - mx) * inv);
    }
}

template <typename T>
__global__ void softmax_bwd_kernel(const T *__restrict__ Y, const float *__restrict__ dY,
                                   float *__restrict__ dX, int64_t R, int64_t N) {
    __shared__ float shm[32];
    for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
        const T *y = Y + r * N;
        const float *dy = dY + r * N;
        float *dx = dX + r * N;
        float dot = 0.0f;
        for (int64_t c = threadIdx.x; c < N; c += blockDim.x) dot += dy[c] * qt_ld(y, c);
        dot = qt_block_sum(dot, shm);
        for (int64_t c = threadIdx.x; c < N; c += blockDim.x)
            dx[c] += qt_ld(y, c) * (dy[c] - dot);
    }
}

/* Threads per row: a warp for short rows, more for long ones (multiple of 32). */
static int softmax_threads(int64_t N) { return N <= 64 ? 32 : N <= 2048 ? 128 : 512; }
static unsigned softmax_blocks(int64_t R) { return (unsigned)(R < 1048576 ? R : 1048576); }

template <typename T>
static qt_status softmax_fwd_launch(const qt_node *n, int64_t R, int64_t N) {
    softmax_fwd_kernel<T><<<softmax_blocks(R), softmax_threads(N)>>>(
        (const T *)n->in[0]->data, (T *)n->out->data, R, N);
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

template <typename T>
static qt_status softmax_bwd_launch(const qt_node *n, int64_t R, int64_t N) {
    softmax_bwd_kernel<T><<<softmax_blocks(R), softmax_threads(N)>>>(
        (const T *)n->out->data, n->out->grad, n->in[0]->grad, R, N);
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

static qt_status softmax_fwd_cuda(qt_ctx *ctx, qt_node *n) {
    const qt_tensor *x = n->in[0];
    if (n->out->dtype != x->dtype)
        return QT_ERROR(QT_EDTYPE, "softmax (cuda): output dtype %s differs from input %s",
                        qt_dtype_name(n->out->dtype), qt_dtype_name(x->dtype));
    int64_t N = qt_dim(x, -1), R = qt_rows(x);
    if (N <= 0 || R <= 0) return QT_OK;
    QT_DISPATCH_FLOAT(x->dtype, T, return softmax_fwd_launch<T>(n, R, N));
    return QT_OK;
}

static qt_status softmax_bwd_cuda(qt_ctx *ctx, qt_node *n) {
    const qt_tensor *x = n->in[0];
    if (!x->grad || !n->out->grad) return QT_OK;
    int64_t N = qt_dim(x, -1), R = qt_rows(x);
    if (N <= 0 || R <= 0) return QT_OK;
    QT_DISPATCH_FLOAT(n->out->dtype, T, return softmax_bwd_launch<T>(n, R, N));
    return QT_OK;
}

void qt_cuda_register_softmax(qt_backend *be) {
    be->forward[QT_OP_SOFTMAX] = softmax_fwd_cuda;
    be->backward[QT_OP_SOFTMAX] = softmax_bwd_cuda;
}
