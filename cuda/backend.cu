/*
 * backend.cu - the CUDA backend's table: device memory (plain cudaMalloc, as the
 * device notes ask: never managed memory), copies, error reporting, and the kernel
 * table filled by each op family's registration function.
 *
 * Memory: the engine's per-step arenas sit on top of alloc (one chunk per arena after
 * the first step), so cudaMalloc is rarely called and no caching allocator is needed.
 */
#include <stdio.h>
#include <string.h>

#include "common.cuh"

static qt_backend cuda_backend;
static bool initialised;
static cublasHandle_t cublas_handle;
static char device_desc[640];

qt_status qt_cuda_fail(cudaError_t e, const char *file, int line, const char *what) {
    cudaGetLastError(); /* a non-sticky error must not resurface at an unrelated check */
    return qt_error_set(e == cudaErrorMemoryAllocation ? QT_ENOMEM : QT_EDEVICE, file, line,
                        "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

qt_status qt_cublas_fail(cublasStatus_t s, const char *file, int line, const char *what) {
    return qt_error_set(s == CUBLAS_STATUS_ALLOC_FAILED ? QT_ENOMEM : QT_EDEVICE, file, line,
                        "%s: cuBLAS status %d (%s)", what, (int)s, cublasGetStatusString(s));
}

cublasHandle_t qt_cublas(void) { return cublas_handle; }

/* One grow-only device buffer for scratch that dies within an op's own launches (the
 * attention chunks, matmul's bf16 dC): kernels run in stream order, so every op can
 * reuse it; per-node arena scratch would stay allocated until the step ends (30 layers
 * x 250 MB). This holds because every launch and cuBLAS call goes to the legacy default
 * stream from one host thread; a second stream or a per-thread default stream would need
 * one workspace per stream. */
static void *workspace;
static size_t workspace_bytes;

void *qt_cuda_workspace(size_t bytes) {
    if (bytes <= workspace_bytes) return workspace;
    if (workspace) cudaFree(workspace); /* synchronises: no kernel still uses it */
    workspace = NULL;
    workspace_bytes = 0;
    if (cudaMalloc(&workspace, bytes) != cudaSuccess) {
        cudaGetLastError();
        workspace = NULL;
        qt_error_set(QT_ENOMEM, __FILE__, __LINE__, "cuda workspace of %zu bytes: out of memory",
                     bytes);
        return NULL;
    }
    workspace_bytes = bytes;
    return workspace;
}

static void *cuda_alloc(size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 256);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky-free error so later calls work */
        qt_error_set(QT_ENOMEM, __FILE__, __LINE__, "cudaMalloc(%zu bytes): %s", bytes,
                     cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cuda_free(void *p) {
    if (!p) return;
    cudaFree(p); /* failures here mean a broken context: the next checked call says so */
}

static qt_status cuda_zero(void *p, size_t bytes) {
    QT_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, 0));
    return QT_OK;
}

static qt_status cuda_copy(void *dst, const void *src, size_t bytes, qt_copy_kind kind) {
    cudaMemcpyKind k = kind == QT_COPY_H2D   ? cudaMemcpyHostToDevice
                       : kind == QT_COPY_D2H ? cudaMemcpyDeviceToHost
                                             : cudaMemcpyDeviceToDevice;
    QT_CUDA_CHECK(cudaMemcpy(dst, src, bytes, k));
    return QT_OK;
}

static qt_status cuda_sync(void) {
    QT_CUDA_CHECK(cudaDeviceSynchronize());
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

/* qt_custom on the GPU: the caller's functions get device tensors and must launch
 * their own kernels (qat/'s fake-quant does, through qt_cuda_fake_quant). */
static qt_status custom_fwd(qt_ctx *ctx, qt_node *n) {
    return n->a.custom.fn->forward(ctx, n->in, n->n_in, n->out, n->a.custom.state);
}
static qt_status custom_bwd(qt_ctx *ctx, qt_node *n) {
    return n->a.custom.fn->backward(ctx, n->in, n->n_in, n->out, n->a.custom.state);
}
void qt_cuda_register_custom(qt_backend *be) {
    be->forward[QT_OP_CUSTOM] = custom_fwd;
    be->backward[QT_OP_CUSTOM] = custom_bwd;
}

extern "C" int qt_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" qt_status qt_cuda_init(int device) {
    if (initialised) return QT_OK;
    int n = qt_cuda_device_count();
    if (device < 0 || device >= n)
        return QT_ERROR(QT_EDEVICE, "cuda: no GPU %d (%d visible%s)", device, n,
                        n ? "" : ": no driver, or CUDA_VISIBLE_DEVICES hides them");
    QT_CUDA_CHECK(cudaSetDevice(device));
    cudaDeviceProp prop;
    QT_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    snprintf(device_desc, sizeof device_desc, "%s, sm_%d%d, %d SMs, %.1f GiB", prop.name,
             prop.major, prop.minor, prop.multiProcessorCount,
             (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    QT_CUBLAS_CHECK(cublasCreate(&cublas_handle));

    qt_backend *be = &cuda_backend;
    memset(be, 0, sizeof *be);
    be->name = "cuda";
    be->alloc = cuda_alloc;
    be->free = cuda_free;
    be->zero = cuda_zero;
    be->copy = cuda_copy;
    be->sync = cuda_sync;
    qt_cuda_register_matmul(be);
    qt_cuda_register_elementwise(be);
    qt_cuda_register_reduce(be);
    qt_cuda_register_shape(be);
    qt_cuda_register_embedding(be);
    qt_cuda_register_norm(be);
    qt_cuda_register_softmax(be);
    qt_cuda_register_attention(be);
    qt_cuda_register_rope(be);
    qt_cuda_register_activation(be);
    qt_cuda_register_loss(be);
    qt_cuda_register_custom(be);
    qt_backend_register(QT_DEV_CUDA, be);
    initialised = true;
    return QT_OK;
}

extern "C" const char *qt_cuda_device_desc(void) { return device_desc; }
extern "C" size_t qt_cuda_used_bytes(void) {
    size_t free_b = 0, total = 0;
    if (cudaMemGetInfo(&free_b, &total) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return total - free_b;
}
