/*
 * embedding.cu - embedding lookup on CUDA: out[..., :] = weight[ids[...], :], as the CPU
 * reference (autograd/ops_embedding.c). weight f32 or bf16 (the output has its dtype),
 * ids i32 on the GPU or the CPU.
 * Validation: the ids are copied to the host (N x 4 bytes, one synchronising copy per
 * call) and checked there with the CPU's loop and message (an id outside [0, V) fails
 * the op with QT_EINVAL). The checked host copy is put on the device in n->saved (DEVICE
 * memory, N i32), which both kernels read, so they never see an unchecked id.
 * Backward scatter-adds rows of dy into weight's f32 grad with atomicAdd: repeated ids
 * make the sum order vary run to run (not bit-reproducible; differences are f32
 * rounding only), unlike the CPU's fixed order.
 */
#include "common.cuh"

#define EMB_THREADS 256

template <typename T>
__global__ void emb_fwd_kernel(const T *W, const int32_t *id, T *Y, int64_t N, int64_t D) {
    QT_GRID_LOOP(k, N * D) {
        int64_t i = k / D, d = k % D;
        qt_st(Y, k, qt_ld(W, (int64_t)id[i] * D + d));
    }
}

__global__ void emb_bwd_kernel(const float *dY, const int32_t *id, float *dW, int64_t N,
                               int64_t D) {
    QT_GRID_LOOP(k, N * D) {
        int64_t i = k / D, d = k % D;
        atomicAdd(dW + (int64_t)id[i] * D + d, dY[k]);
    }
}

static qt_status embedding_fwd(qt_ctx *ctx, qt_node *n) {
    const qt_tensor *w = n->in[0], *ids = n->in[1];
    int64_t V = w->shape[0], D = w->shape[1], N = qt_numel(ids);
    if (N == 0) return QT_OK;
    int32_t *h = (int32_t *)qt_ctx_alloc(ctx, (size_t)N * sizeof(int32_t));
    if (!h) return ctx->status;
    qt_status st = qt_tensor_read(ids, h);
    if (st != QT_OK) return st;
    st = qt_check_ids(ctx, h, N, V);
    if (st != QT_OK) return st;
    /* the checked ids: the tensor itself when it is on the GPU (it lives until backward),
     * else a device copy of the host ones */
    int32_t *did = (int32_t *)ids->data;
    if (ids->device.kind != QT_DEV_CUDA) {
        did = (int32_t *)qt_cuda_scratch(ctx, n, (size_t)N * sizeof(int32_t));
        if (!did) return ctx->status;
        QT_CUDA_CHECK(cudaMemcpy(did, h, (size_t)N * sizeof(int32_t), cudaMemcpyHostToDevice));
    }
    n->saved = did;
    if (D == 0) return QT_OK;
    QT_DISPATCH_FLOAT(w->dtype, T, {
        emb_fwd_kernel<T><<<qt_blocks(N * D, EMB_THREADS), EMB_THREADS>>>(
            (const T *)w->data, did, (T *)n->out->data, N, D);
        QT_CUDA_LAUNCHED();
    });
    return QT_OK;
}

static qt_status embedding_bwd(qt_ctx *ctx, qt_node *n) {
    float *dW = n->in[0]->grad;
    if (!dW) return QT_OK;
    int64_t D = n->in[0]->shape[1], N = qt_numel(n->in[1]);
    if (N == 0 || D == 0) return QT_OK;
    emb_bwd_kernel<<<qt_blocks(N * D, EMB_THREADS), EMB_THREADS>>>(
        n->out->grad, (const int32_t *)n->saved, dW, N, D);
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

void qt_cuda_register_embedding(qt_backend *be) {
    be->forward[QT_OP_EMBEDDING] = embedding_fwd;
    be->backward[QT_OP_EMBEDDING] = embedding_bwd;
}
