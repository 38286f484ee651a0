/*
 * common.cuh - what every .cu of the backend shares: checked calls, dtype-generic loads
 * and stores (f32 or bf16 in memory, f32 in registers), launch helpers.
 *
 * Conventions for kernels (see autograd/internal.h for the node and attrs):
 *   - a backend kernel is qt_kernel_fn: it reads n->in[], n->out and its op's member of
 *     n->a (qt_op_attrs: the attrs the op's constructor set, the same struct the CPU
 *     kernel reads) and launches;
 *   - activations are f32 or bf16 (QT_DISPATCH_FLOAT picks the template); outputs take
 *     the dtype the constructor gave them; every grad is f32 and backward ACCUMULATES
 *     (+=) into n->in[i]->grad when it is non-NULL;
 *   - arithmetic is f32 (bf16 only in memory); a result is rounded to bf16 once, when
 *     stored;
 *   - device scratch and saved tensors come from qt_ctx_alloc_on(ctx, n->out->device,..),
 *     never cudaMalloc.
 */
#ifndef QT_CUDA_COMMON_CUH
#define QT_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "internal.h"
#include "qt_cuda.h"

/* A failed CUDA call -> status with file:line and the CUDA error text. */
qt_status qt_cuda_fail(cudaError_t e, const char *file, int line, const char *what);
qt_status qt_cublas_fail(cublasStatus_t s, const char *file, int line, const char *what);

#define QT_CUDA_CHECK(call)                                                                \
    do {                                                                                   \
        cudaError_t qt_e_ = (call);                                                        \
        if (qt_e_ != cudaSuccess) return qt_cuda_fail(qt_e_, __FILE__, __LINE__, #call);  \
    } while (0)
/* After a launch: a bad configuration shows here; a fault inside the kernel at the next
 * synchronising call. */
#define QT_CUDA_LAUNCHED() QT_CUDA_CHECK(cudaGetLastError())
#define QT_CUBLAS_CHECK(call)                                                              \
    do {                                                                                   \
        cublasStatus_t qt_s_ = (call);                                                     \
        if (qt_s_ != CUBLAS_STATUS_SUCCESS)                                                \
            return qt_cublas_fail(qt_s_, __FILE__, __LINE__, #call);                       \
    } while (0)

/* Row-major C (M,N) = alpha op(A) op(B) + beta C over `batch` problems whose operands
 * sit sA, sB, sC elements apart, through cublasGemmStridedBatchedEx: A and B of dtype
 * ab (f32: true fp32; bf16: tensor cores), C of dtype c, f32 accumulation. */
qt_status qt_cuda_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                       const void *A, int64_t lda, int64_t sA, const void *B, int64_t ldb,
                       int64_t sB, float beta, void *C, int64_t ldc, int64_t sC,
                       int64_t batch, qt_dtype ab, qt_dtype c);
/* The one cuBLAS handle (created by qt_cuda_init). */
cublasHandle_t qt_cublas(void);
/* The backend's shared workspace (grow-only, NULL with the thread error on failure):
 * for scratch that no later launch outside this op reads. Its contents are gone at the
 * next call from any op. */
void *qt_cuda_workspace(size_t bytes);
/* A device scratch buffer of the op's device from the context's arena. */
static inline void *qt_cuda_scratch(qt_ctx *ctx, const qt_node *n, size_t bytes) {
    return qt_ctx_alloc_on(ctx, n->out->device, bytes);
}

typedef __nv_bfloat16 qt_bf16;

__device__ __forceinline__ float qt_ld(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float qt_ld(const qt_bf16 *p, int64_t i) {
    return __bfloat162float(p[i]);
}
__device__ __forceinline__ void qt_st(float *p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void qt_st(qt_bf16 *p, int64_t i, float v) {
    p[i] = __float2bfloat16_rn(v);
}

/* QT_DISPATCH_FLOAT(dtype, T, body): runs body with T = float or qt_bf16. */
#define QT_DISPATCH_FLOAT(dt, T, ...)                                                      \
    do {                                                                                   \
        if ((dt) == QT_F32) {                                                              \
            typedef float T;                                                               \
            __VA_ARGS__;                                                                   \
        } else if ((dt) == QT_BF16) {                                                      \
            typedef qt_bf16 T;                                                             \
            __VA_ARGS__;                                                                   \
        } else {                                                                           \
            return QT_ERROR(QT_EDTYPE, "cuda: dtype %s not supported", qt_dtype_name(dt)); \
        }                                                                                  \
    } while (0)

/* Blocks for a grid-stride loop over n elements. */
static inline unsigned qt_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65535 * 16) b = 65535 * 16;
    return (unsigned)b;
}
#define QT_GRID_LOOP(i, n)                                                                 \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);             \
         i += (int64_t)gridDim.x * blockDim.x)

/* Sum over a warp / a block (blockDim.x a multiple of 32, <= 1024); every thread gets
 * the total. `shm` holds 32 floats. */
__device__ __forceinline__ float qt_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float qt_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float qt_block_sum(float v, float *shm) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = qt_warp_sum(v);
    __syncthreads(); /* shm may still be read from a previous call */
    if (lane == 0) shm[w] = v;
    __syncthreads();
    v = lane < nw ? shm[lane] : 0.0f;
    return qt_warp_sum(v);
}
__device__ __forceinline__ float qt_block_max(float v, float *shm) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = qt_warp_max(v);
    __syncthreads();
    if (lane == 0) shm[w] = v;
    __syncthreads();
    v = lane < nw ? shm[lane] : -INFINITY;
    return qt_warp_max(v);
}

/* The same in double (deterministic sums of many floats). `shm` holds 32 doubles. */
__device__ __forceinline__ double qt_block_sum_d(double v, double *shm) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) shm[w] = v;
    __syncthreads();
    v = lane < nw ? shm[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Kernels more than one family launches (templates, so each .cu gets its own copy):
 * y = x converted (f32 <-> bf16, round to nearest even), and g += s dy (grads). */
template <typename TX, typename TY>
__global__ void qt_cast_kernel(const TX *x, TY *y, int64_t n) {
    QT_GRID_LOOP(i, n) qt_st(y, i, qt_ld(x, i));
}
template <typename T>
__global__ void qt_axpy_kernel(T *g, const T *dy, float s, int64_t n) {
    QT_GRID_LOOP(i, n) g[i] += s * dy[i];
}

/* Each op family's .cu defines one registration function; backend.cu calls them all. */
void qt_cuda_register_matmul(qt_backend *be);
void qt_cuda_register_elementwise(qt_backend *be); /* add sub mul div scale cast */
void qt_cuda_register_reduce(qt_backend *be);      /* sum mean */
void qt_cuda_register_shape(qt_backend *be);       /* reshape permute */
void qt_cuda_register_embedding(qt_backend *be);
void qt_cuda_register_norm(qt_backend *be);        /* rmsnorm layernorm */
void qt_cuda_register_softmax(qt_backend *be);
void qt_cuda_register_attention(qt_backend *be);
void qt_cuda_register_rope(qt_backend *be);
void qt_cuda_register_activation(qt_backend *be);  /* silu gelu swiglu dropout */
void qt_cuda_register_loss(qt_backend *be);        /* cross_entropy */
void qt_cuda_register_custom(qt_backend *be);      /* custom: calls the fn (device-aware) */

#endif /* QT_CUDA_COMMON_CUH */
