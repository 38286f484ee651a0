/*
 * reduce.cu - sum and mean over one axis or over all on CUDA, as the CPU reference
 * (autograd/ops_reduce.c): the input is viewed as (pre, len, post), the output as
 * (pre, post); attrs i[0] pre, i[1] len, i[2] post, f[0] 1 (sum) or 1/len (mean).
 * out = (float)(sum_k x[(p*len + k)*post + q] * mul), the sum in double as on the CPU.
 * Two deterministic kernels (no atomics): a block per output (threads stride over k,
 * then a fixed-order block reduction) when post == 1 (contiguous, e.g. QT_AXIS_ALL) or
 * outputs are few; otherwise a thread per output looping over k (coalesced over q).
 * x f32 or bf16; the output has x's dtype. Backward: dx += dy[p, q] * mul.
 */
#include "common.cuh"

#define RED_THREADS 256
#define RED_BLOCK_THREADS 1024


/* A block per output o = p*post + q (block-stride over outputs; the loop bound is the
 * same for the whole block, so the barriers inside are safe). */
template <typename T>
__global__ void reduce_block_kernel(const T *x, T *y, int64_t pre, int64_t len, int64_t post,
                                    float mul) {
    __shared__ double shm[32];
    for (int64_t o = blockIdx.x; o < pre * post; o += gridDim.x) {
        int64_t p = o / post, q = o % post;
        const T *base = x + p * len * post + q;
        double acc = 0.0;
        for (int64_t k = threadIdx.x; k < len; k += blockDim.x)
            acc += (double)qt_ld(base, k * post);
        acc = qt_block_sum_d(acc, shm);
        if (threadIdx.x == 0) qt_st(y, o, (float)(acc * (double)mul));
    }
}

/* A thread per output. */
template <typename T>
__global__ void reduce_thread_kernel(const T *x, T *y, int64_t pre, int64_t len, int64_t post,
                                     float mul) {
    QT_GRID_LOOP(o, pre * post) {
        int64_t p = o / post, q = o % post;
        const T *base = x + p * len * post + q;
        double acc = 0.0;
        for (int64_t k = 0; k < len; k++) acc += (double)qt_ld(base, k * post);
        qt_st(y, o, (float)(acc * (double)mul));
    }
}

__global__ void reduce_bwd_kernel(const float *dy, float *dx, int64_t len, int64_t post,
                                  int64_t total, float mul) {
    QT_GRID_LOOP(i, total) {
        int64_t q = i % post, p = i / (len * post);
        dx[i] += dy[p * post + q] * mul;
    }
}

static qt_status reduce_fwd(qt_ctx *ctx, qt_node *n) {
    int64_t pre = n->a.reduce.pre, len = n->a.reduce.len, post = n->a.reduce.post;
    float mul = n->a.reduce.mul;
    int64_t M = pre * post;
    if (M == 0) return QT_OK;
    const qt_tensor *x = n->in[0];
    QT_DISPATCH_FLOAT(x->dtype, T, {
        if (post == 1 || M < 2048) {
            unsigned grid = (unsigned)(M < (1 << 20) ? M : (1 << 20));
            int threads = len >= 8192 ? RED_BLOCK_THREADS : RED_THREADS;
            reduce_block_kernel<T><<<grid, threads>>>(
                (const T *)x->data, (T *)n->out->data, pre, len, post, mul);
        } else {
            reduce_thread_kernel<T><<<qt_blocks(M, RED_THREADS), RED_THREADS>>>(
                (const T *)x->data, (T *)n->out->data, pre, len, post, mul);
        }
        QT_CUDA_LAUNCHED();
    });
    return QT_OK;
}

static qt_status reduce_bwd(qt_ctx *ctx, qt_node *n) {
    float *dx = n->in[0]->grad;
    if (!dx) return QT_OK;
    int64_t pre = n->a.reduce.pre, len = n->a.reduce.len, post = n->a.reduce.post;
    int64_t total = pre * len * post;
    if (total == 0) return QT_OK;
    reduce_bwd_kernel<<<qt_blocks(total, RED_THREADS), RED_THREADS>>>(n->out->grad, dx, len,
                                                                      post, total, n->a.reduce.mul);
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

void qt_cuda_register_reduce(qt_backend *be) {
    be->forward[QT_OP_SUM] = reduce_fwd;
    be->backward[QT_OP_SUM] = reduce_bwd;
    be->forward[QT_OP_MEAN] = reduce_fwd;
    be->backward[QT_OP_MEAN] = reduce_bwd;
}
