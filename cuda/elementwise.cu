/*
 * elementwise.cu - add, sub, mul, div (with the suffix broadcast of ops_elementwise.c:
 * attrs i[0] outer, i[1] inner, i[2] small operand 0/1 or -1), scale, and cast.
 *
 * Operands may be f32 or bf16 independently (a bf16 activation plus an f32 bias); the
 * output has the dtype its constructor gave it. The broadcast operand's grad is a
 * column sum over `outer`: one thread per column walking the rows in order, so the sum
 * is deterministic.
 */
#include "common.cuh"

enum { EW_ADD, EW_SUB, EW_MUL, EW_DIV };

static int kind_of(qt_op op) {
    return op == QT_OP_ADD ? EW_ADD : op == QT_OP_SUB ? EW_SUB : op == QT_OP_MUL ? EW_MUL : EW_DIV;
}

__device__ __forceinline__ float ew_apply(int k, float x, float y) {
    return k == EW_ADD ? x + y : k == EW_SUB ? x - y : k == EW_MUL ? x * y : x / y;
}

__device__ __forceinline__ float ew_grad(int k, int which, float a, float b, float dy) {
    switch (k) {
    case EW_ADD: return dy;
    case EW_SUB: return which == 0 ? dy : -dy;
    case EW_MUL: return which == 0 ? dy * b : dy * a;
    default: return which == 0 ? dy / b : -dy * a / (b * b);
    }
}

/* Column of element e under the suffix broadcast: none needed when the shapes are equal;
 * 32-bit modulo when it fits (64-bit division is slow on the GPU). */
__device__ __forceinline__ int64_t ew_col(int64_t e, int64_t inner, int small) {
    if (small < 0) return e;
    return e <= (int64_t)UINT32_MAX && inner <= (int64_t)UINT32_MAX
               ? (int64_t)((uint32_t)e % (uint32_t)inner)
               : e % inner;
}

template <typename TA, typename TB, typename TY>
__global__ void ew_fwd_kernel(int k, const TA *A, const TB *B, TY *Y, int64_t outer,
                              int64_t inner, int small) {
    int64_t n = outer * inner;
    QT_GRID_LOOP(e, n) {
        int64_t i = ew_col(e, inner, small);
        float a = qt_ld(A, small == 0 ? i : e), b = qt_ld(B, small == 1 ? i : e);
        qt_st(Y, e, ew_apply(k, a, b));
    }
}

/* grad of the full-size operand `which` */
template <typename TA, typename TB>
__global__ void ew_bwd_full(int k, int which, const TA *A, const TB *B, const float *dY,
                            float *g, int64_t outer, int64_t inner, int small) {
    int64_t n = outer * inner;
    QT_GRID_LOOP(e, n) {
        int64_t i = ew_col(e, inner, small);
        float a = qt_ld(A, small == 0 ? i : e), b = qt_ld(B, small == 1 ? i : e);
        g[e] += ew_grad(k, which, a, b, dY[e]);
    }
}

/* grad of the broadcast operand: column sums over `outer` rows, in two deterministic
 * stages: blocks of 32 columns x one chunk of rows (EW_CHUNK, more past 16M rows) write a partial sum each
 * (8 row lanes, added in lane order), then one thread per column adds the chunks in
 * order. (One thread walking all rows of its column was 28 ms of GPT-2's 148 ms step.) */
#define EW_CHUNK 256

template <typename TA, typename TB>
__global__ void ew_bwd_small_part(int k, int which, const TA *A, const TB *B, const float *dY,
                                  float *part, int64_t outer, int64_t inner, int small,
                                  int64_t chunk) {
    __shared__ float sh[8][33];
    const int64_t c = (int64_t)blockIdx.x * 32 + threadIdx.x;
    const int64_t o0 = (int64_t)blockIdx.y * chunk;
    const int64_t o1 = o0 + chunk < outer ? o0 + chunk : outer;
    float acc = 0.0f;
    if (c < inner)
        for (int64_t o = o0 + threadIdx.y; o < o1; o += 8) {
            int64_t e = o * inner + c;
            float a = qt_ld(A, small == 0 ? c : e), b = qt_ld(B, small == 1 ? c : e);
            acc += ew_grad(k, which, a, b, dY[e]);
        }
    sh[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < inner) {
        float s = 0.0f;
        for (int y = 0; y < 8; y++) s += sh[y][threadIdx.x];
        part[(int64_t)blockIdx.y * inner + c] = s;
    }
}

__global__ void ew_bwd_small_sum(const float *part, float *g, int64_t chunks, int64_t inner) {
    QT_GRID_LOOP(c, inner) {
        float s = 0.0f;
        for (int64_t k = 0; k < chunks; k++) s += part[k * inner + c];
        g[c] += s;
    }
}

static qt_status ew_fwd(qt_ctx *ctx, qt_node *n) {
    int k = kind_of(n->op);
    int64_t outer = n->a.bcast.outer, inner = n->a.bcast.inner;
    int small = n->a.bcast.small;
    int64_t total = outer * inner;
    QT_DISPATCH_FLOAT(n->in[0]->dtype, TA, QT_DISPATCH_FLOAT(n->in[1]->dtype, TB,
        QT_DISPATCH_FLOAT(n->out->dtype, TY,
            ew_fwd_kernel<TA, TB, TY><<<qt_blocks(total, 256), 256>>>(
                k, (const TA *)n->in[0]->data, (const TB *)n->in[1]->data,
                (TY *)n->out->data, outer, inner, small))));
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

static qt_status ew_bwd(qt_ctx *ctx, qt_node *n) {
    int k = kind_of(n->op);
    int64_t outer = n->a.bcast.outer, inner = n->a.bcast.inner;
    int small = n->a.bcast.small;
    for (int which = 0; which < 2; which++) {
        float *g = n->in[which]->grad;
        if (!g) continue;
        QT_DISPATCH_FLOAT(n->in[0]->dtype, TA, QT_DISPATCH_FLOAT(n->in[1]->dtype, TB, {
            const TA *A = (const TA *)n->in[0]->data;
            const TB *B = (const TB *)n->in[1]->data;
            if (small != which)
                ew_bwd_full<TA, TB><<<qt_blocks(outer * inner, 256), 256>>>(
                    k, which, A, B, n->out->grad, g, outer, inner, small);
            else {
                int64_t chunk = outer > 65535 * (int64_t)EW_CHUNK ? (outer + 65534) / 65535
                                                                  : EW_CHUNK;
                int64_t chunks = (outer + chunk - 1) / chunk;
                float *part = (float *)qt_cuda_scratch(ctx, n, (size_t)(chunks * inner) * 4);
                if (!part) return ctx->status;
                dim3 grid((unsigned)((inner + 31) / 32), (unsigned)chunks);
                ew_bwd_small_part<TA, TB><<<grid, dim3(32, 8)>>>(
                    k, which, A, B, n->out->grad, part, outer, inner, small, chunk);
                QT_CUDA_LAUNCHED();
                ew_bwd_small_sum<<<qt_blocks(inner, 128), 128>>>(part, g, chunks, inner);
            }
        }));
        QT_CUDA_LAUNCHED();
    }
    return QT_OK;
}

/* ---- scale -------------------------------------------------------------------------- */

template <typename T>
__global__ void scale_kernel(const T *x, T *y, float s, int64_t n) {
    QT_GRID_LOOP(i, n) qt_st(y, i, s * qt_ld(x, i));
}


static qt_status scale_fwd(qt_ctx *ctx, qt_node *n) {
    int64_t N = qt_numel(n->out);
    QT_DISPATCH_FLOAT(n->in[0]->dtype, T,
        scale_kernel<T><<<qt_blocks(N, 256), 256>>>((const T *)n->in[0]->data,
                                                    (T *)n->out->data, n->a.scale.s, N));
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

static qt_status scale_bwd(qt_ctx *ctx, qt_node *n) {
    if (!n->in[0]->grad) return QT_OK;
    int64_t N = qt_numel(n->out);
    qt_axpy_kernel<float><<<qt_blocks(N, 256), 256>>>(n->in[0]->grad, n->out->grad,
                                                      n->a.scale.s, N);
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

/* ---- cast (f32 <-> bf16, round to nearest even) ------------------------------------ */


static qt_status cast_fwd(qt_ctx *ctx, qt_node *n) {
    int64_t N = qt_numel(n->out);
    QT_DISPATCH_FLOAT(n->in[0]->dtype, TX, QT_DISPATCH_FLOAT(n->out->dtype, TY,
        qt_cast_kernel<TX, TY><<<qt_blocks(N, 256), 256>>>((const TX *)n->in[0]->data,
                                                        (TY *)n->out->data, N)));
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

static qt_status cast_bwd(qt_ctx *ctx, qt_node *n) {
    if (!n->in[0]->grad) return QT_OK;
    int64_t N = qt_numel(n->out);
    qt_axpy_kernel<float><<<qt_blocks(N, 256), 256>>>(n->in[0]->grad, n->out->grad, 1.0f, N);
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

void qt_cuda_register_elementwise(qt_backend *be) {
    const qt_op ew[4] = {QT_OP_ADD, QT_OP_SUB, QT_OP_MUL, QT_OP_DIV};
    for (int i = 0; i < 4; i++) {
        be->forward[ew[i]] = ew_fwd;
        be->backward[ew[i]] = ew_bwd;
    }
    be->forward[QT_OP_SCALE] = scale_fwd;
    be->backward[QT_OP_SCALE] = scale_bwd;
    be->forward[QT_OP_CAST] = cast_fwd;
    be->backward[QT_OP_CAST] = cast_bwd;
}
