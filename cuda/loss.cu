/*
 * loss.cu - cross-entropy from logits fused with the log-softmax on CUDA, the same as
 * the CPU reference (autograd/ops_loss.c):
 *   loss = mean over rows with target != ignore of (lse(row) - row[target]); 0 when every
 *   target is ignored. Backward: dlogits += (softmax - onehot) * dloss / count.
 * Logits f32 or bf16; the scalar loss has the logits' dtype (the constructor makes it
 * with qt_new_like_shape), targets i32 on the GPU or the CPU.
 * Validation: the targets are copied to the host (rows x 4 bytes, one synchronising
 * copy per call) and checked there with the CPU's loop and message, which also gives
 * the count of counted rows (attrs i[1], as on the CPU). The host copy is then put on
 * the device in n->saved: (rows) f32 log-sum-exp, then (rows) i32 targets (DEVICE
 * memory), so backward never depends on where the targets tensor lives.
 * Forward: one block per row (max, then the sum of exp in double, as the CPU), a
 * per-row double loss term, then one block adds those in a fixed order: deterministic.
 */
#include "common.cuh"

#define CE_THREADS 256
#define CE_FINAL_THREADS 1024


template <typename T>
__global__ void ce_row_kernel(const T *L, const int32_t *tg, int32_t ignore, int64_t V,
                              float *lse, double *rowloss) {
    __shared__ float shf[32];
    __shared__ double shd[32];
    int64_t r = blockIdx.x;
    const T *x = L + r * V;
    float mx = -INFINITY;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, qt_ld(x, v));
    mx = qt_block_max(mx, shf);
    double s = 0.0;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) s += (double)expf(qt_ld(x, v) - mx);
    s = qt_block_sum_d(s, shd);
    if (threadIdx.x == 0) {
        float l = mx + (float)log(s);
        lse[r] = l;
        int32_t t = tg[r];
        rowloss[r] = t != ignore ? (double)l - (double)qt_ld(x, t) : 0.0;
    }
}

/* One block: total of the row terms in a fixed order, mean over count (0 if none). */
template <typename T>
__global__ void ce_final_kernel(const double *rowloss, int64_t N, int64_t count, T *out) {
    __shared__ double shd[32];
    double s = 0.0;
    for (int64_t r = threadIdx.x; r < N; r += blockDim.x) s += rowloss[r];
    s = qt_block_sum_d(s, shd);
    if (threadIdx.x == 0) qt_st(out, 0, count ? (float)(s / (double)count) : 0.0f);
}

template <typename T>
__global__ void ce_bwd_kernel(const T *L, const int32_t *tg, int32_t ignore, int64_t V,
                              const float *lse, const float *dloss, int64_t count,
                              float *dL) {
    int64_t r = blockIdx.x;
    int32_t t = tg[r];
    if (t == ignore) return; /* whole block: no barrier below */
    float g = dloss[0] / (float)count, l = lse[r];
    const T *x = L + r * V;
    float *d = dL + r * V;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
        float val = d[v] + g * expf(qt_ld(x, v) - l);
        if (v == t) val -= g;
        d[v] = val;
    }
}

static qt_status ce_fwd(qt_ctx *ctx, qt_node *n) {
    const qt_tensor *lg = n->in[0], *tgt = n->in[1];
    int64_t V = qt_dim(lg, -1), N = qt_rows(lg);
    int32_t ignore = n->a.ce.ignore_index;
    int32_t *t = (int32_t *)qt_ctx_alloc(ctx, (size_t)(N ? N : 1) * sizeof(int32_t));
    if (!t) return ctx->status;
    if (N) {
        qt_status st = qt_tensor_read(tgt, t);
        if (st != QT_OK) return st;
    }
    int64_t count = 0;
    qt_status cst = qt_ce_count(ctx, t, N, V, ignore, &count);
    if (cst != QT_OK) return cst;
    n->a.ce.count = count; /* for backward */
    size_t nn = (size_t)(N ? N : 1);
    /* saved: lse (N f32) then targets (N i32); scratch: row terms (N f64) */
    float *lse = (float *)qt_cuda_scratch(ctx, n, nn * (sizeof(float) + sizeof(int32_t)));
    if (!lse) return ctx->status;
    int32_t *dt = (int32_t *)(lse + nn);
    double *rowloss = (double *)qt_cuda_scratch(ctx, n, nn * sizeof(double));
    if (!rowloss) return ctx->status;
    n->saved = lse;
    if (N) QT_CUDA_CHECK(cudaMemcpy(dt, t, (size_t)N * sizeof(int32_t), cudaMemcpyHostToDevice));
    QT_DISPATCH_FLOAT(lg->dtype, T, {
        if (N) {
            ce_row_kernel<T><<<(unsigned)N, CE_THREADS>>>((const T *)lg->data, dt, ignore, V,
                                                          lse, rowloss);
            QT_CUDA_LAUNCHED();
        }
    });
    /* the loss is f32 whatever the logits' dtype (the constructor makes it so) */
    ce_final_kernel<float><<<1, CE_FINAL_THREADS>>>(rowloss, N, count, (float *)n->out->data);
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

static qt_status ce_bwd(qt_ctx *ctx, qt_node *n) {
    float *dL = n->in[0]->grad;
    int64_t count = n->a.ce.count;
    if (!dL || count == 0) return QT_OK;
    const qt_tensor *lg = n->in[0];
    int64_t V = qt_dim(lg, -1), N = qt_rows(lg);
    if (N == 0) return QT_OK;
    const float *lse = (const float *)n->saved;
    const int32_t *dt = (const int32_t *)(lse + N);
    QT_DISPATCH_FLOAT(lg->dtype, T, {
        ce_bwd_kernel<T><<<(unsigned)N, CE_THREADS>>>((const T *)lg->data, dt,
                                                      n->a.ce.ignore_index, V, lse,
                                                      n->out->grad, count, dL);
        QT_CUDA_LAUNCHED();
    });
    return QT_OK;
}

void qt_cuda_register_loss(qt_backend *be) {
    be->forward[QT_OP_CROSS_ENTROPY] = ce_fwd;
    be->backward[QT_OP_CROSS_ENTROPY] = ce_bwd;
}
