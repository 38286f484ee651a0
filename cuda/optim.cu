/*
 * optim.cu - the optimizer's flat-buffer passes on the GPU: AdamW (torch.optim.AdamW's
 * update, in the order optim/adamw.c computes it), the gradient's sum of squares for
 * global-norm clipping, and scaling.
 *
 * sumsq is deterministic: fixed per-block partial sums in double, then one block adds
 * the partials in order, so a run reproduces its clipping bit for bit.
 */
#include "common.cuh"

/* Exactly the update of optim/adamw.c (same operations, same order), one element per
 * thread: decay = 1 - lr*wd (1 for no-decay params), step = lr / (1 - beta1^t),
 * bc2_sqrt = sqrt(1 - beta2^t). */
__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, int64_t n,
                             float decay, float b1c, float b2, float b2c, float eps,
                             float step_size, float bc2_sqrt) {
    QT_GRID_LOOP(j, n) {
        float gj = g[j];
        float pj = p[j] * decay;
        float mj = m[j] + (gj - m[j]) * b1c;
        float vj = v[j] * b2 + b2c * gj * gj;
        m[j] = mj;
        v[j] = vj;
        p[j] = pj - step_size * (mj / (sqrtf(vj) / bc2_sqrt + eps));
    }
}

extern "C" qt_status qt_cuda_adamw(float *p, const float *g, float *m, float *v, size_t n,
                                   float decay, float b1c, float b2, float b2c, float eps,
                                   float step_size, float bc2_sqrt) {
    if (!n) return QT_OK;
    adamw_kernel<<<qt_blocks((int64_t)n, 256), 256>>>(p, g, m, v, (int64_t)n, decay, b1c, b2,
                                                      b2c, eps, step_size, bc2_sqrt);
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

#define SUMSQ_BLOCKS 1024

__global__ void sumsq_partial(const float *x, int64_t n, double *part) {
    __shared__ double sh[256];
    double acc = 0.0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        acc += (double)x[i] * (double)x[i];
    sh[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = sh[0];
}

extern "C" qt_status qt_cuda_sumsq(const float *x, size_t n, double *out) {
    static double *part; /* SUMSQ_BLOCKS doubles, kept for the process */
    if (!part) QT_CUDA_CHECK(cudaMalloc(&part, SUMSQ_BLOCKS * sizeof(double)));
    sumsq_partial<<<SUMSQ_BLOCKS, 256>>>(x, (int64_t)n, part);
    QT_CUDA_LAUNCHED();
    double h[SUMSQ_BLOCKS];
    QT_CUDA_CHECK(cudaMemcpy(h, part, sizeof h, cudaMemcpyDeviceToHost));
    double s = 0.0;
    for (int i = 0; i < SUMSQ_BLOCKS; i++) s += h[i];
    *out = s;
    return QT_OK;
}

__global__ void scale_flat(float *x, int64_t n, float s) { QT_GRID_LOOP(i, n) x[i] *= s; }

extern "C" qt_status qt_cuda_scale(float *x, size_t n, float s) {
    if (!n) return QT_OK;
    scale_flat<<<qt_blocks((int64_t)n, 256), 256>>>(x, (int64_t)n, s);
    QT_CUDA_LAUNCHED();
    return QT_OK;
}
