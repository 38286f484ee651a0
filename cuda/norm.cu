/*
 * norm.cu - RMSNorm and LayerNorm over the last dim on CUDA; the same maths as the CPU
 * reference (autograd/ops_norm.c), which is the spec:
 *   RMSNorm:   y = x * r * w,            r = 1/sqrt(mean(x^2) + eps)
 *   LayerNorm: y = (x - mu) * r * w + b, r = 1/sqrt(var(x) + eps), biased variance
 * x may be f32 or bf16, weight and bias f32 or bf16 independently (templates on each).
 * One block per row; row statistics are accumulated in double as on the CPU (per-thread
 * double partials, then a fixed-order block reduction, so results are deterministic).
 * n->saved (DEVICE memory): (rows) r, then (rows) mu for LayerNorm. attrs: f[0] eps,
 * i[0] has bias.
 * Weight/bias grads (column sums over rows) are deterministic two-stage sums: blocks of
 * columns x chunks of rows write double partials, then one thread per column adds the
 * chunks in order and accumulates into the f32 grad.
 */
#include "common.cuh"

#define NORM_THREADS 256

/* Sum over the block in double (blockDim.x a multiple of 32); every thread gets it. */

/* ---- RMSNorm ---- */
template <typename T, typename W>
__global__ void rms_fwd_kernel(const T *x, const W *w, T *y, float *rs, int64_t D,
                               float eps) {
    __shared__ double shm[32];
    int64_t r = blockIdx.x;
    const T *xr = x + r * D;
    T *yr = y + r * D;
    double ss = 0.0;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        double v = (double)qt_ld(xr, d);
        ss += v * v;
    }
    ss = qt_block_sum_d(ss, shm);
    float rstd = 1.0f / sqrtf((float)(ss / (double)D) + eps);
    if (threadIdx.x == 0) rs[r] = rstd;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
        qt_st(yr, d, qt_ld(xr, d) * rstd * qt_ld(w, d));
}

template <typename T, typename W>
__global__ void rms_bwd_dx_kernel(const T *x, const W *w, const float *dy, const float *rs,
                                  float *dx, int64_t D) {
    __shared__ double shm[32];
    int64_t r = blockIdx.x;
    const T *xr = x + r * D;
    const float *g = dy + r * D;
    float *o = dx + r * D;
    double dot = 0.0;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
        dot += (double)g[d] * (double)qt_ld(w, d) * (double)qt_ld(xr, d);
    dot = qt_block_sum_d(dot, shm);
    float rstd = rs[r], c = (float)(dot / (double)D) * rstd * rstd * rstd;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
        o[d] += rstd * g[d] * qt_ld(w, d) - qt_ld(xr, d) * c;
}

/* Stage 1 of the weight (and bias) grads: column d = blockIdx.x*blockDim.x + tid, rows
 * [blockIdx.y*ch, +ch). RMSNorm: pw += dy * x * r. LayerNorm: pw += dy * (x - mu) * r,
 * pb += dy. Doubles, as the CPU accumulates. */
template <typename T, bool LN>
__global__ void norm_wgrad_partial_kernel(const T *x, const float *dy, const float *rs,
                                          const float *mus, int64_t R, int64_t D,
                                          int64_t ch, double *pw, double *pb) {
    int64_t d = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (d >= D) return;
    int64_t r0 = (int64_t)blockIdx.y * ch, r1 = r0 + ch < R ? r0 + ch : R;
    double aw = 0.0, ab = 0.0;
    for (int64_t r = r0; r < r1; r++) {
        float g = dy[r * D + d], xv = qt_ld(x, r * D + d);
        if (LN) {
            aw += (double)g * (double)(xv - mus[r]) * (double)rs[r];
            ab += (double)g;
        } else {
            aw += (double)g * (double)xv * (double)rs[r];
        }
    }
    pw[(int64_t)blockIdx.y * D + d] = aw;
    if (LN) pb[(int64_t)blockIdx.y * D + d] = ab;
}

/* Stage 2: one thread per column adds the chunks in order; dW/dB may be NULL. */
__global__ void norm_wgrad_final_kernel(const double *pw, const double *pb, int64_t nch,
                                        int64_t D, float *dW, float *dB) {
    QT_GRID_LOOP(d, D) {
        double sw = 0.0, sb = 0.0;
        for (int64_t c = 0; c < nch; c++) {
            sw += pw[c * D + d];
            if (pb) sb += pb[c * D + d];
        }
        if (dW) dW[d] += (float)sw;
        if (dB) dB[d] += (float)sb;
    }
}

/* Runs both stages; mus NULL for RMSNorm. */
template <typename T>
static qt_status norm_wgrad(qt_ctx *ctx, qt_node *n, const T *x, const float *dy,
                            const float *rs, const float *mus, int64_t R, int64_t D,
                            float *dW, float *dB) {
    bool ln = mus != NULL;
    int64_t ch = (R + 4095) / 4096; /* at most 4096 chunks (gridDim.y <= 65535) */
    if (ch < 64) ch = 64;
    int64_t nch = (R + ch - 1) / ch;
    size_t bytes = (size_t)(nch * D) * sizeof(double);
    double *pw = (double *)qt_cuda_scratch(ctx, n, bytes);
    if (!pw) return ctx->status;
    double *pb = NULL;
    if (ln) {
        pb = (double *)qt_cuda_scratch(ctx, n, bytes);
        if (!pb) return ctx->status;
    }
    dim3 grid((unsigned)((D + NORM_THREADS - 1) / NORM_THREADS), (unsigned)nch);
    if (ln)
        norm_wgrad_partial_kernel<T, true>
            <<<grid, NORM_THREADS>>>(x, dy, rs, mus, R, D, ch, pw, pb);
    else
        norm_wgrad_partial_kernel<T, false>
            <<<grid, NORM_THREADS>>>(x, dy, rs, mus, R, D, ch, pw, pb);
    QT_CUDA_LAUNCHED();
    norm_wgrad_final_kernel<<<qt_blocks(D, NORM_THREADS), NORM_THREADS>>>(pw, pb, nch, D, dW,
                                                                         dB);
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

static qt_status rmsnorm_fwd(qt_ctx *ctx, qt_node *n) {
    const qt_tensor *x = n->in[0], *w = n->in[1];
    int64_t D = qt_dim(x, -1), R = qt_rows(x);
    if (R == 0) return QT_OK;
    float *rs = (float *)qt_cuda_scratch(ctx, n, (size_t)R * sizeof(float));
    if (!rs) return ctx->status;
    n->saved = rs;
    float eps = n->a.norm.eps;
    QT_DISPATCH_FLOAT(x->dtype, T, QT_DISPATCH_FLOAT(w->dtype, Wt, {
        rms_fwd_kernel<T, Wt><<<(unsigned)R, NORM_THREADS>>>(
            (const T *)x->data, (const Wt *)w->data, (T *)n->out->data, rs, D, eps);
        QT_CUDA_LAUNCHED();
    }));
    return QT_OK;
}

static qt_status rmsnorm_bwd(qt_ctx *ctx, qt_node *n) {
    const qt_tensor *x = n->in[0], *w = n->in[1];
    int64_t D = qt_dim(x, -1), R = qt_rows(x);
    if (R == 0) return QT_OK;
    const float *dY = n->out->grad, *rs = (const float *)n->saved;
    float *dX = n->in[0]->grad, *dW = n->in[1]->grad;
    QT_DISPATCH_FLOAT(x->dtype, T, {
        if (dX) {
            QT_DISPATCH_FLOAT(w->dtype, Wt, {
                rms_bwd_dx_kernel<T, Wt><<<(unsigned)R, NORM_THREADS>>>(
                    (const T *)x->data, (const Wt *)w->data, dY, rs, dX, D);
                QT_CUDA_LAUNCHED();
            });
        }
        if (dW) {
            qt_status st = norm_wgrad<T>(ctx, n, (const T *)x->data, dY, rs, NULL, R, D, dW,
                                         NULL);
            if (st != QT_OK) return st;
        }
    });
    return QT_OK;
}

/* ---- LayerNorm ---- */
template <typename T, typename W, typename B>
__global__ void ln_fwd_kernel(const T *x, const W *w, const B *b, T *y, float *rs,
                              float *mus, int64_t D, float eps) {
    __shared__ double shm[32];
    int64_t r = blockIdx.x;
    const T *xr = x + r * D;
    T *yr = y + r * D;
    double s = 0.0;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) s += (double)qt_ld(xr, d);
    s = qt_block_sum_d(s, shm);
    double mu = s / (double)D, ss = 0.0;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        double c = (double)qt_ld(xr, d) - mu;
        ss += c * c;
    }
    ss = qt_block_sum_d(ss, shm);
    float rstd = 1.0f / sqrtf((float)(ss / (double)D) + eps), m = (float)mu;
    if (threadIdx.x == 0) {
        rs[r] = rstd;
        mus[r] = m;
    }
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
        qt_st(yr, d, (qt_ld(xr, d) - m) * rstd * qt_ld(w, d) + (b ? qt_ld(b, d) : 0.0f));
}

template <typename T, typename W>
__global__ void ln_bwd_dx_kernel(const T *x, const W *w, const float *dy, const float *rs,
                                 const float *mus, float *dx, int64_t D) {
    __shared__ double shm[32];
    int64_t r = blockIdx.x;
    const T *xr = x + r * D;
    const float *gy = dy + r * D;
    float *o = dx + r * D;
    float rstd = rs[r], mu = mus[r];
    double sg = 0.0, sgx = 0.0;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        float g = gy[d] * qt_ld(w, d);
        sg += (double)g;
        sgx += (double)g * (double)(qt_ld(xr, d) - mu) * (double)rstd;
    }
    sg = qt_block_sum_d(sg, shm);
    sgx = qt_block_sum_d(sgx, shm);
    float mg = (float)(sg / (double)D), mgx = (float)(sgx / (double)D);
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        float xhat = (qt_ld(xr, d) - mu) * rstd;
        o[d] += rstd * (gy[d] * qt_ld(w, d) - mg - xhat * mgx);
    }
}

static qt_status layernorm_fwd(qt_ctx *ctx, qt_node *n) {
    const qt_tensor *x = n->in[0], *w = n->in[1];
    const qt_tensor *b = n->a.norm.has_bias ? n->in[2] : NULL;
    int64_t D = qt_dim(x, -1), R = qt_rows(x);
    if (R == 0) return QT_OK;
    float *rs = (float *)qt_cuda_scratch(ctx, n, 2 * (size_t)R * sizeof(float));
    if (!rs) return ctx->status;
    n->saved = rs;
    float *mus = rs + R, eps = n->a.norm.eps;
    /* without a bias the B type is a placeholder (f32) and the pointer NULL */
    qt_dtype bdt = b ? b->dtype : QT_F32;
    const void *bdata = b ? b->data : NULL;
    QT_DISPATCH_FLOAT(x->dtype, T, QT_DISPATCH_FLOAT(w->dtype, Wt, QT_DISPATCH_FLOAT(bdt, Bt, {
        ln_fwd_kernel<T, Wt, Bt><<<(unsigned)R, NORM_THREADS>>>(
            (const T *)x->data, (const Wt *)w->data, (const Bt *)bdata, (T *)n->out->data, rs,
            mus, D, eps);
        QT_CUDA_LAUNCHED();
    })));
    return QT_OK;
}

static qt_status layernorm_bwd(qt_ctx *ctx, qt_node *n) {
    const qt_tensor *x = n->in[0], *w = n->in[1];
    int64_t D = qt_dim(x, -1), R = qt_rows(x);
    if (R == 0) return QT_OK;
    const float *dY = n->out->grad, *rs = (const float *)n->saved, *mus = rs + R;
    float *dX = n->in[0]->grad, *dW = n->in[1]->grad;
    float *dB = n->a.norm.has_bias ? n->in[2]->grad : NULL;
    QT_DISPATCH_FLOAT(x->dtype, T, {
        if (dX) {
            QT_DISPATCH_FLOAT(w->dtype, Wt, {
                ln_bwd_dx_kernel<T, Wt><<<(unsigned)R, NORM_THREADS>>>(
                    (const T *)x->data, (const Wt *)w->data, dY, rs, mus, dX, D);
                QT_CUDA_LAUNCHED();
            });
        }
        if (dW || dB) {
            qt_status st = norm_wgrad<T>(ctx, n, (const T *)x->data, dY, rs, mus, R, D, dW, dB);
            if (st != QT_OK) return st;
        }
    });
    return QT_OK;
}

void qt_cuda_register_norm(qt_backend *be) {
    be->forward[QT_OP_RMSNORM] = rmsnorm_fwd;
    be->backward[QT_OP_RMSNORM] = rmsnorm_bwd;
    be->forward[QT_OP_LAYERNORM] = layernorm_fwd;
    be->backward[QT_OP_LAYERNORM] = layernorm_bwd;
}
