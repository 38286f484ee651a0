/*
 * attention.cu - fused causal scaled-dot-product attention with grouped-query heads on
 * the GPU (the CUDA side of autograd/ops_attention.c; same node, attrs and semantics).
 *
 * q (B, H, T, D), k and v (B, Hkv, Tk, D); query head h reads kv head h / (H/Hkv); query
 * i sees keys j <= i + (Tk - T). n->a.attention.scale is already resolved by the
 * constructor (scale <= 0 -> 1/sqrt(D) in qt_attention). n->saved holds the per-row
 * log-sum-exp (B*H*T f32, device arena) for backward, and n->a.attention.path the path
 * the forward ran (att_path), which backward follows.
 *
 * Algorithm: FlashAttention-2 (Dao 2023): forward keeps a running max / sum per query
 * row (online softmax) and never materialises T x T; backward recomputes
 * P = exp(scale q.k - lse) and uses Dsum_i = sum_d dO_i O_i:
 *   dV_j += sum_i P_ij dO_i,  dS_ij = P_ij (dO_i.v_j - Dsum_i),
 *   dQ_i += scale sum_j dS_ij k_j,  dK_j += scale sum_i dS_ij q_i.
 * Deliberately simple kernels (no tensor cores):
 *   - a row (query row, or key row in dK/dV) belongs to a group of ATT_TPR = 4 adjacent
 *     lanes; lane `sub` owns the dims e = kk*4 + sub (kk < DMAX/4) of that row in
 *     registers; a dot product is a per-lane partial sum + 2 xor-shuffles (the 4 lanes
 *     get bitwise the same total, so their branches agree);
 *   - 64 rows per block (256 threads); the other operand is staged in shared memory in
 *     tiles of 32 rows as f32, zero-padded to DMAX dims (64 or 128, picked at run time
 *     from D; D > 128 is QT_ENOTSUP);
 *   - dK/dV: one block per (key block, batch, kv head) loops over the query rows of ALL
 *     the H/Hkv heads of its group, so dK/dV need no atomics; dQ is a separate kernel
 *     over query rows. Results are deterministic.
 * Shuffles and __syncthreads sit outside any per-row condition: padding rows (i >= T or
 * j >= Tk) run the arithmetic on zeros and simply do not update or store.
 */
#include <math.h>

#include <stdlib.h>
#include <string.h>

#include "common.cuh"

#define ATT_TPR 4                         /* lanes per row */
#define ATT_ROWS 64                       /* rows owned per block */
#define ATT_THREADS (ATT_ROWS * ATT_TPR)  /* 256 */
#define ATT_TILE 32                       /* rows of the other operand per smem tile */

typedef struct {
    int64_t B, H, Hkv, T, Tk, D, group, off;
    float scale;
} att_dims;

__device__ __forceinline__ int64_t att_min(int64_t a, int64_t b) { return a < b ? a : b; }
__device__ __forceinline__ int64_t att_max(int64_t a, int64_t b) { return a > b ? a : b; }

/* Sum over the ATT_TPR (= 4, aligned) lanes of a row group; all four get the total. */
__device__ __forceinline__ float att_group_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    return v;
}

/* s[r*DMAX + e] = src[(r0 + r)*D + e] for r < nrows, e < D; 0 elsewhere (r < ATT_TILE).
 * Called by the whole block. */
template <typename U, int DMAX>
__device__ __forceinline__ void att_load_tile(float *s, const U *src, int64_t r0, int nrows,
                                              int D) {
    for (int idx = threadIdx.x; idx < ATT_TILE * DMAX; idx += blockDim.x) {
        int r = idx / DMAX, e = idx % DMAX;
        s[idx] = (r < nrows && e < D) ? qt_ld(src, (r0 + r) * D + e) : 0.0f;
    }
}

/* Forward: grid (ceil(T/64), B*H). O = softmax(scale q k^T, causal) v; lse per row. */
template <typename T, int DMAX>
__global__ void __launch_bounds__(ATT_THREADS, DMAX == 64 ? 4 : 1) /* 64: no spill at 64 regs */
att_fwd_kernel(const T *__restrict__ Q, const T *__restrict__ K, const T *__restrict__ V,
               T *__restrict__ O, float *__restrict__ lse, att_dims d) {
    constexpr int DPT = DMAX / ATT_TPR;
    __shared__ float sK[ATT_TILE * DMAX], sV[ATT_TILE * DMAX];
    const int D = (int)d.D, sub = threadIdx.x % ATT_TPR;
    const int64_t bh = blockIdx.y, b = bh / d.H, h = bh % d.H, kvh = h / d.group;
    const int64_t i0 = (int64_t)blockIdx.x * ATT_ROWS, i = i0 + threadIdx.x / ATT_TPR;
    const bool valid = i < d.T;
    const T *q = Q + bh * d.T * d.D;
    const T *k = K + (b * d.Hkv + kvh) * d.Tk * d.D;
    const T *v = V + (b * d.Hkv + kvh) * d.Tk * d.D;

    float qr[DPT], acc[DPT];
#pragma unroll
    for (int kk = 0; kk < DPT; kk++) {
        int e = kk * ATT_TPR + sub;
        qr[kk] = (valid && e < D) ? qt_ld(q, i * d.D + e) : 0.0f;
        acc[kk] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    const int64_t lim = i + d.off;                       /* this row sees keys j <= lim */
    const int64_t ilast = att_min(i0 + ATT_ROWS, d.T) - 1;
    const int64_t kend = att_min(d.Tk, ilast + d.off + 1); /* keys any row here sees */

    for (int64_t j0 = 0; j0 < kend; j0 += ATT_TILE) {
        const int nk = (int)att_min(ATT_TILE, kend - j0);
        __syncthreads(); /* the previous tile is no longer read */
        att_load_tile<T, DMAX>(sK, k, j0, nk, D);
        att_load_tile<T, DMAX>(sV, v, j0, nk, D);
        __syncthreads();
        for (int jj = 0; jj < nk; jj++) {
            const float *kr = sK + jj * DMAX + sub, *vr = sV + jj * DMAX + sub;
            float s = 0.0f;
#pragma unroll
            for (int kk = 0; kk < DPT; kk++) s += qr[kk] * kr[kk * ATT_TPR];
            s = att_group_sum(s) * d.scale;
            if (valid && j0 + jj <= lim) {
                if (s > m) { /* new running max: rescale what is accumulated */
                    float c = expf(m - s); /* m = -inf the first time: c = 0 */
                    l *= c;
#pragma unroll
                    for (int kk = 0; kk < DPT; kk++) acc[kk] *= c;
                    m = s;
                }
                float p = expf(s - m);
                l += p;
#pragma unroll
                for (int kk = 0; kk < DPT; kk++) acc[kk] += p * vr[kk * ATT_TPR];
            }
        }
    }
    if (valid) { /* every row sees key 0 (off >= 0), so l >= 1 */
        float inv = 1.0f / l;
        T *o = O + bh * d.T * d.D + i * d.D;
#pragma unroll
        for (int kk = 0; kk < DPT; kk++) {
            int e = kk * ATT_TPR + sub;
            if (e < D) qt_st(o, e, acc[kk] * inv);
        }
        if (sub == 0) lse[bh * d.T + i] = m + logf(l);
    }
}

/* Dsum[r] = sum_e O[r, e] dO[r, e], one warp per row (rows = B*H*T). */
template <typename T>
__global__ void att_dsum_kernel(const T *__restrict__ O, const float *__restrict__ dO,
                                float *__restrict__ Dsum, int64_t rows, int D) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= rows) return; /* uniform over the warp */
    float s = 0.0f;
    for (int e = lane; e < D; e += 32) s += qt_ld(O, r * D + e) * dO[r * D + e];
    s = qt_warp_sum(s);
    if (lane == 0) Dsum[r] = s;
}

/* dQ: grid (ceil(T/64), B*H); one row group per query row, loops over its keys. */
template <typename T, int DMAX>
__global__ void __launch_bounds__(ATT_THREADS)
att_bwd_dq_kernel(const T *__restrict__ Q, const T *__restrict__ K, const T *__restrict__ V,
                  const float *__restrict__ dO, const float *__restrict__ lse,
                  const float *__restrict__ Dsum, float *__restrict__ dQ, att_dims d) {
    constexpr int DPT = DMAX / ATT_TPR;
    __shared__ float sK[ATT_TILE * DMAX], sV[ATT_TILE * DMAX];
    const int D = (int)d.D, sub = threadIdx.x % ATT_TPR;
    const int64_t bh = blockIdx.y, b = bh / d.H, h = bh % d.H, kvh = h / d.group;
    const int64_t i0 = (int64_t)blockIdx.x * ATT_ROWS, i = i0 + threadIdx.x / ATT_TPR;
    const bool valid = i < d.T;
    const T *q = Q + bh * d.T * d.D;
    const float *dout = dO + bh * d.T * d.D;
    const T *k = K + (b * d.Hkv + kvh) * d.Tk * d.D;
    const T *v = V + (b * d.Hkv + kvh) * d.Tk * d.D;

    float qr[DPT], dor[DPT], dq[DPT];
#pragma unroll
    for (int kk = 0; kk < DPT; kk++) {
        int e = kk * ATT_TPR + sub;
        qr[kk] = (valid && e < D) ? qt_ld(q, i * d.D + e) : 0.0f;
        dor[kk] = (valid && e < D) ? dout[i * d.D + e] : 0.0f;
        dq[kk] = 0.0f;
    }
    const float lse_i = valid ? lse[bh * d.T + i] : 0.0f;
    const float dsum_i = valid ? Dsum[bh * d.T + i] : 0.0f;
    const int64_t lim = i + d.off;
    const int64_t ilast = att_min(i0 + ATT_ROWS, d.T) - 1;
    const int64_t kend = att_min(d.Tk, ilast + d.off + 1);

    for (int64_t j0 = 0; j0 < kend; j0 += ATT_TILE) {
        const int nk = (int)att_min(ATT_TILE, kend - j0);
        __syncthreads();
        att_load_tile<T, DMAX>(sK, k, j0, nk, D);
        att_load_tile<T, DMAX>(sV, v, j0, nk, D);
        __syncthreads();
        for (int jj = 0; jj < nk; jj++) {
            const float *kr = sK + jj * DMAX + sub, *vr = sV + jj * DMAX + sub;
            float s = 0.0f, dp = 0.0f;
#pragma unroll
            for (int kk = 0; kk < DPT; kk++) {
                s += qr[kk] * kr[kk * ATT_TPR];
                dp += dor[kk] * vr[kk * ATT_TPR];
            }
            s = att_group_sum(s) * d.scale;
            dp = att_group_sum(dp);
            if (valid && j0 + jj <= lim) {
                float p = expf(s - lse_i);
                float ds = p * (dp - dsum_i);
#pragma unroll
                for (int kk = 0; kk < DPT; kk++) dq[kk] += ds * kr[kk * ATT_TPR];
            }
        }
    }
    if (valid) {
        float *g = dQ + bh * d.T * d.D + i * d.D;
#pragma unroll
        for (int kk = 0; kk < DPT; kk++) {
            int e = kk * ATT_TPR + sub;
            if (e < D) g[e] += d.scale * dq[kk];
        }
    }
}

/* dK, dV: grid (ceil(Tk/64), B*Hkv); one row group per key row, loops over the query
 * rows of every head of its GQA group (no other block writes these rows). */
template <typename T, int DMAX>
__global__ void __launch_bounds__(ATT_THREADS)
att_bwd_dkdv_kernel(const T *__restrict__ Q, const T *__restrict__ K, const T *__restrict__ V,
                    const float *__restrict__ dO, const float *__restrict__ lse,
                    const float *__restrict__ Dsum, float *dK, float *dV, att_dims d) {
    /* dK, dV not __restrict__: they are the same buffer when k and v are one tensor */
    constexpr int DPT = DMAX / ATT_TPR;
    __shared__ float sQ[ATT_TILE * DMAX], sdO[ATT_TILE * DMAX], sL[ATT_TILE], sD[ATT_TILE];
    const int D = (int)d.D, sub = threadIdx.x % ATT_TPR;
    const int64_t bk = blockIdx.y, b = bk / d.Hkv, kvh = bk % d.Hkv;
    const int64_t j0 = (int64_t)blockIdx.x * ATT_ROWS, j = j0 + threadIdx.x / ATT_TPR;
    const bool valid = j < d.Tk;
    const T *k = K + bk * d.Tk * d.D, *v = V + bk * d.Tk * d.D;

    float kr[DPT], vr[DPT], dk[DPT], dv[DPT];
#pragma unroll
    for (int kk = 0; kk < DPT; kk++) {
        int e = kk * ATT_TPR + sub;
        kr[kk] = (valid && e < D) ? qt_ld(k, j * d.D + e) : 0.0f;
        vr[kk] = (valid && e < D) ? qt_ld(v, j * d.D + e) : 0.0f;
        dk[kk] = 0.0f;
        dv[kk] = 0.0f;
    }
    /* query i sees key j iff i >= j - off: earlier queries see none of this block */
    const int64_t istart = att_max(0, j0 - d.off);

    for (int64_t g = 0; g < d.group; g++) {
        const int64_t bh = b * d.H + kvh * d.group + g;
        const T *q = Q + bh * d.T * d.D;
        const float *dout = dO + bh * d.T * d.D;
        const float *lrow = lse + bh * d.T, *drow = Dsum + bh * d.T;
        for (int64_t qi0 = istart; qi0 < d.T; qi0 += ATT_TILE) {
            const int nq = (int)att_min(ATT_TILE, d.T - qi0);
            __syncthreads();
            att_load_tile<T, DMAX>(sQ, q, qi0, nq, D);
            att_load_tile<float, DMAX>(sdO, dout, qi0, nq, D);
            for (int t = threadIdx.x; t < ATT_TILE; t += blockDim.x) {
                sL[t] = t < nq ? lrow[qi0 + t] : 0.0f;
                sD[t] = t < nq ? drow[qi0 + t] : 0.0f;
            }
            __syncthreads();
            for (int ii = 0; ii < nq; ii++) {
                const float *qrow = sQ + ii * DMAX + sub, *dorow = sdO + ii * DMAX + sub;
                float s = 0.0f, dp = 0.0f;
#pragma unroll
                for (int kk = 0; kk < DPT; kk++) {
                    s += qrow[kk * ATT_TPR] * kr[kk];
                    dp += dorow[kk * ATT_TPR] * vr[kk];
                }
                s = att_group_sum(s) * d.scale;
                dp = att_group_sum(dp);
                if (valid && j <= qi0 + ii + d.off) {
                    float p = expf(s - sL[ii]);
                    float ds = p * (dp - sD[ii]);
#pragma unroll
                    for (int kk = 0; kk < DPT; kk++) {
                        dv[kk] += p * dorow[kk * ATT_TPR];
                        dk[kk] += ds * qrow[kk * ATT_TPR];
                    }
                }
            }
        }
    }
    if (valid) {
#pragma unroll
        for (int kk = 0; kk < DPT; kk++) {
            int e = kk * ATT_TPR + sub;
            if (e < D) {
                if (dK) dK[bk * d.Tk * d.D + j * d.D + e] += d.scale * dk[kk];
                if (dV) dV[bk * d.Tk * d.D + j * d.D + e] += dv[kk];
            }
        }
    }
}

/* ---- host side ------------------------------------------------------------------- */

/* Dims from the node (as dims_of in ops_attention.c) plus the launch limits. */
static qt_status att_dims_of(const qt_node *n, att_dims *d) {
    const qt_tensor *q = n->in[0], *k = n->in[1], *v = n->in[2];
    if (k->dtype != q->dtype || v->dtype != q->dtype || n->out->dtype != q->dtype)
        return QT_ERROR(QT_EDTYPE, "attention (cuda): q, k, v, out must share a dtype; got %s, "
                        "%s, %s, %s", qt_dtype_name(q->dtype), qt_dtype_name(k->dtype),
                        qt_dtype_name(v->dtype), qt_dtype_name(n->out->dtype));
    d->B = q->shape[0];
    d->H = q->shape[1];
    d->Hkv = k->shape[1];
    d->T = q->shape[2];
    d->Tk = k->shape[2];
    d->D = q->shape[3];
    d->group = d->H / d->Hkv;
    d->off = d->Tk - d->T;
    d->scale = n->a.attention.scale;
    if (d->D > 128)
        return QT_ERROR(QT_ENOTSUP, "attention (cuda): head dim %lld > 128 not supported",
                        (long long)d->D);
    if (d->B * d->H > 65535)
        return QT_ERROR(QT_ENOTSUP, "attention (cuda): B*H = %lld > 65535 not supported",
                        (long long)(d->B * d->H));
    return QT_OK;
}

static bool att_empty(const att_dims *d) {
    return d->B == 0 || d->H == 0 || d->T == 0 || d->D == 0;
}

template <typename T, int DMAX>
static qt_status att_fwd_launch(const qt_node *n, const att_dims &d, float *lse) {
    dim3 grid((unsigned)((d.T + ATT_ROWS - 1) / ATT_ROWS), (unsigned)(d.B * d.H));
    att_fwd_kernel<T, DMAX><<<grid, ATT_THREADS>>>(
        (const T *)n->in[0]->data, (const T *)n->in[1]->data, (const T *)n->in[2]->data,
        (T *)n->out->data, lse, d);
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

template <typename T, int DMAX>
static qt_status att_bwd_launch(const qt_node *n, const att_dims &d, float *Dsum) {
    const T *Q = (const T *)n->in[0]->data, *K = (const T *)n->in[1]->data,
            *V = (const T *)n->in[2]->data;
    const float *dO = n->out->grad, *lse = (const float *)n->saved;
    float *dQ = n->in[0]->grad, *dK = n->in[1]->grad, *dV = n->in[2]->grad;
    const int64_t rows = d.B * d.H * d.T;
    att_dsum_kernel<T><<<(unsigned)((rows + 7) / 8), 256>>>((const T *)n->out->data, dO, Dsum,
                                                             rows, (int)d.D);
    QT_CUDA_LAUNCHED();
    if (dQ) {
        dim3 grid((unsigned)((d.T + ATT_ROWS - 1) / ATT_ROWS), (unsigned)(d.B * d.H));
        att_bwd_dq_kernel<T, DMAX><<<grid, ATT_THREADS>>>(Q, K, V, dO, lse, Dsum, dQ, d);
        QT_CUDA_LAUNCHED();
    }
    if (dK || dV) {
        dim3 grid((unsigned)((d.Tk + ATT_ROWS - 1) / ATT_ROWS), (unsigned)(d.B * d.Hkv));
        att_bwd_dkdv_kernel<T, DMAX><<<grid, ATT_THREADS>>>(Q, K, V, dO, lse, Dsum, dK, dV, d);
        QT_CUDA_LAUNCHED();
    }
    return QT_OK;
}


/* ---- the tensor-core path: chunked attention through cuBLAS ------------------------
 * Queries go in chunks of Tq rows; a chunk [q0, q1) needs keys [0, nk), nk =
 * min(Tk, q1 + off), so causal masking wastes only the chunk's diagonal block. For each
 * chunk: S = scale Q K^T (batched GEMM, f32), a row kernel masks and takes the softmax
 * (saving lse, as the fused path does), O = P V (P rounded to the activations' dtype, as
 * FlashAttention rounds P before its PV product). Backward recomputes S and P per chunk
 * and runs the four products dV += P^T dO, dP = dO V^T, dQ += dS K, dK += dS^T Q with
 * dS = scale P (dP - Dsum). Memory: the chunk buffers, Tq x Tk per head, sized to a fixed
 * budget, so it stays linear in T; the (T, Tk) matrix is never whole. They live in the
 * backend's shared workspace, not the step's arena, so layers reuse one allocation.
 * GQA without copies: with h = hkv*G + gi, the query heads of one gi are G*T*D apart as n
 * = b*Hkv + hkv runs, so each product is one strided batched GEMM over n per gi; the G
 * launches that add into the same dK/dV run in order on the stream. */
#define ATT_MM_BUDGET ((size_t)256 << 20) /* bytes of chunk buffers */

typedef struct {
    int64_t Tq, rows, q0, nk, Bn; /* chunk rows, first row, keys, B*Hkv */
} att_chunk;

static int64_t att_chunk_rows; /* qt_cuda_set_attention_chunk; 0 = from the budget */

extern "C" void qt_cuda_set_attention_chunk(int64_t rows) {
    att_chunk_rows = rows > 0 ? rows : 0;
}

static int64_t att_mm_tq(const att_dims &d) {
    if (att_chunk_rows) return att_chunk_rows < d.T ? att_chunk_rows : d.T;
    size_t per_row = (size_t)(d.B * d.H * d.Tk) * 12; /* S f32 + dP f32 + P (<= 4) */
    int64_t tq = (int64_t)(ATT_MM_BUDGET / (per_row ? per_row : 1));
    if (tq >= 64) tq -= tq % 64;
    if (tq < 16) tq = 16;
    return tq < d.T ? tq : d.T;
}

/* One block per (chunk row, gi*Bn + n): masked softmax of S's row into P; lse saved. */
template <typename TP>
__global__ void att_mm_softmax_kernel(const float *S, TP *P, float *lse, att_dims d,
                                      att_chunk c) {
    __shared__ float shm[32];
    const int64_t r = blockIdx.x, g = blockIdx.y; /* g = gi*Bn + n */
    const int64_t gi = g / c.Bn, n = g % c.Bn, i = c.q0 + r, lim = i + d.off;
    const float *s = S + (g * c.rows + r) * c.nk;
    TP *p = P + (g * c.rows + r) * c.nk;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < c.nk && j <= lim; j += blockDim.x) m = fmaxf(m, s[j]);
    m = qt_block_max(m, shm);
    float z = 0.0f;
    for (int64_t j = threadIdx.x; j < c.nk && j <= lim; j += blockDim.x) z += expf(s[j] - m);
    z = qt_block_sum(z, shm);
    float l = m + logf(z);
    for (int64_t j = threadIdx.x; j < c.nk; j += blockDim.x)
        qt_st(p, j, j <= lim ? expf(s[j] - l) : 0.0f);
    if (threadIdx.x == 0) lse[(n * d.group + gi) * d.T + i] = l;
}

/* Backward row kernel: P again from S and lse (mode 0), or dS = scale P (dP - Dsum)
 * (mode 1), into out. */
template <typename TP>
__global__ void att_mm_bwd_row_kernel(const float *S, const float *dP, const float *lse,
                                      const float *Dsum, TP *out, att_dims d, att_chunk c,
                                      int mode) {
    const int64_t r = blockIdx.x, g = blockIdx.y;
    const int64_t gi = g / c.Bn, n = g % c.Bn, i = c.q0 + r, lim = i + d.off;
    const int64_t row = (n * d.group + gi) * d.T + i;
    const float l = lse[row], ds = mode ? Dsum[row] : 0.0f;
    const float *s = S + (g * c.rows + r) * c.nk;
    const float *dp = mode ? dP + (g * c.rows + r) * c.nk : NULL;
    TP *o = out + (g * c.rows + r) * c.nk;
    for (int64_t j = threadIdx.x; j < c.nk; j += blockDim.x) {
        float p = j <= lim ? expf(s[j] - l) : 0.0f;
        qt_st(o, j, mode ? d.scale * p * (dp[j] - ds) : p);
    }
}


/* S[gi] (Bn, rows, nk) = scale Q_chunk K^T for every gi */
static qt_status att_mm_scores(const att_dims &d, const att_chunk &c, const void *Q,
                               const void *K, float *S, qt_dtype t) {
    size_t es = qt_dtype_size(t);
    for (int64_t gi = 0; gi < d.group; gi++) {
        const char *q = (const char *)Q + (size_t)((gi * d.T + c.q0) * d.D) * es;
        qt_status st = qt_cuda_gemm(false, true, c.rows, c.nk, d.D, d.scale, q, d.D,
                                    d.group * d.T * d.D, K, d.D, d.Tk * d.D, 0.0f,
                                    S + gi * c.Bn * c.rows * c.nk, c.nk, c.rows * c.nk, c.Bn,
                                    t, QT_F32);
        if (st != QT_OK) return st;
    }
    return QT_OK;
}

static qt_status att_mm_fwd(qt_ctx *ctx, qt_node *n, const att_dims &d, float *lse) {
    qt_dtype t = n->in[0]->dtype;
    size_t es = qt_dtype_size(t);
    int64_t tq = att_mm_tq(d), Bn = d.B * d.Hkv;
    size_t cn = (size_t)(d.B * d.H * tq * d.Tk);
    float *S = (float *)qt_cuda_workspace(cn * (4 + es));
    if (!S) return QT_ENOMEM;
    void *P = S + cn;
    const void *Q = n->in[0]->data, *K = n->in[1]->data, *V = n->in[2]->data;
    for (int64_t q0 = 0; q0 < d.T; q0 += tq) {
        att_chunk c = {tq, (d.T - q0 < tq ? d.T - q0 : tq), q0, 0, Bn};
        c.nk = q0 + c.rows + d.off < d.Tk ? q0 + c.rows + d.off : d.Tk;
        qt_status st = att_mm_scores(d, c, Q, K, S, t);
        if (st != QT_OK) return st;
        dim3 grid((unsigned)c.rows, (unsigned)(d.group * Bn));
        QT_DISPATCH_FLOAT(t, TP, att_mm_softmax_kernel<TP><<<grid, 256>>>(S, (TP *)P, lse, d, c));
        QT_CUDA_LAUNCHED();
        for (int64_t gi = 0; gi < d.group; gi++) { /* O_chunk = P V */
            char *o = (char *)n->out->data + (size_t)((gi * d.T + c.q0) * d.D) * es;
            st = qt_cuda_gemm(false, false, c.rows, d.D, c.nk, 1.0f,
                              (const char *)P + (size_t)(gi * Bn * c.rows * c.nk) * es, c.nk,
                              c.rows * c.nk, V, d.D, d.Tk * d.D, 0.0f, o, d.D,
                              d.group * d.T * d.D, Bn, t, t);
            if (st != QT_OK) return st;
        }
    }
    return QT_OK;
}

static qt_status att_mm_bwd(qt_ctx *ctx, qt_node *n, const att_dims &d, const float *Dsum) {
    qt_dtype t = n->in[0]->dtype;
    size_t es = qt_dtype_size(t);
    int64_t tq = att_mm_tq(d), Bn = d.B * d.Hkv;
    size_t cn = (size_t)(d.B * d.H * tq * d.Tk);
    float *S = (float *)qt_cuda_workspace(cn * (8 + es));
    if (!S) return QT_ENOMEM;
    float *dP = S + cn;
    void *P = dP + cn;
    const void *Q = n->in[0]->data, *K = n->in[1]->data, *V = n->in[2]->data;
    const float *lse = (const float *)n->saved;
    float *dQ = n->in[0]->grad, *dK = n->in[1]->grad, *dV = n->in[2]->grad;
    /* dO in the operands' dtype for the products (bf16: rounded, as torch's bf16 grads) */
    const void *dO = n->out->grad;
    if (t != QT_F32) {
        int64_t no = qt_numel(n->out);
        void *h = qt_cuda_scratch(ctx, n, (size_t)no * es);
        if (!h) return ctx->status;
        QT_DISPATCH_FLOAT(t, TP, qt_cast_kernel<float, TP><<<qt_blocks(no, 256), 256>>>(
                                     n->out->grad, (TP *)h, no));
        QT_CUDA_LAUNCHED();
        dO = h;
    }
    const int64_t sQ = d.group * d.T * d.D, sKV = d.Tk * d.D;
    for (int64_t q0 = 0; q0 < d.T; q0 += tq) {
        att_chunk c = {tq, (d.T - q0 < tq ? d.T - q0 : tq), q0, 0, Bn};
        c.nk = q0 + c.rows + d.off < d.Tk ? q0 + c.rows + d.off : d.Tk;
        const int64_t sP = c.rows * c.nk;
        qt_status st = att_mm_scores(d, c, Q, K, S, t);
        if (st != QT_OK) return st;
        dim3 grid((unsigned)c.rows, (unsigned)(d.group * Bn));
        QT_DISPATCH_FLOAT(t, TP, att_mm_bwd_row_kernel<TP><<<grid, 256>>>(
                                     S, dP, lse, Dsum, (TP *)P, d, c, 0));
        QT_CUDA_LAUNCHED();
        for (int64_t gi = 0; gi < d.group && st == QT_OK; gi++) {
            size_t qoff = (size_t)((gi * d.T + c.q0) * d.D) * es;
            const char *Pg = (const char *)P + (size_t)(gi * Bn * sP) * es;
            if (dV) /* dV (nk, D) += P^T dO_chunk */
                st = qt_cuda_gemm(true, false, c.nk, d.D, c.rows, 1.0f, Pg, c.nk, sP,
                                  (const char *)dO + qoff, d.D, sQ, 1.0f, dV, d.D, sKV, Bn, t,
                                  QT_F32);
            if (st == QT_OK) /* dP (rows, nk) = dO_chunk V^T */
                st = qt_cuda_gemm(false, true, c.rows, c.nk, d.D, 1.0f, (const char *)dO + qoff,
                                  d.D, sQ, V, d.D, sKV, 0.0f, dP + gi * Bn * sP, c.nk, sP, Bn,
                                  t, QT_F32);
        }
        if (st != QT_OK) return st;
        QT_DISPATCH_FLOAT(t, TP, att_mm_bwd_row_kernel<TP><<<grid, 256>>>(
                                     S, dP, lse, Dsum, (TP *)P, d, c, 1)); /* P <- dS */
        QT_CUDA_LAUNCHED();
        for (int64_t gi = 0; gi < d.group && st == QT_OK; gi++) {
            size_t qoff = (size_t)((gi * d.T + c.q0) * d.D) * es;
            const char *dSg = (const char *)P + (size_t)(gi * Bn * sP) * es;
            if (dQ) /* dQ_chunk (rows, D) += dS K */
                st = qt_cuda_gemm(false, false, c.rows, d.D, c.nk, 1.0f, dSg, c.nk, sP, K, d.D,
                                  sKV, 1.0f, dQ + (gi * d.T + c.q0) * d.D, d.D, sQ, Bn, t,
                                  QT_F32);
            if (st == QT_OK && dK) /* dK (nk, D) += dS^T Q_chunk */
                st = qt_cuda_gemm(true, false, c.nk, d.D, c.rows, 1.0f, dSg, c.nk, sP,
                                  (const char *)Q + qoff, d.D, sQ, 1.0f, dK, d.D, sKV, Bn, t,
                                  QT_F32);
        }
        if (st != QT_OK) return st;
    }
    return QT_OK;
}

/* Which path runs: the tensor-core one unless QT_ATTENTION=fused (or
 * qt_cuda_set_attention_impl) picks the fused kernels, which use less memory and no
 * cuBLAS. The forward records its choice in qt_attention_attrs.path. */
enum att_path { ATT_PATH_MM = 0, ATT_PATH_FUSED = 1 };
static int att_impl = -1;

extern "C" void qt_cuda_set_attention_impl(int fused) { att_impl = fused ? 1 : 0; }

static bool att_use_fused(void) {
    if (att_impl < 0) {
        const char *e = getenv("QT_ATTENTION");
        att_impl = e && !strcmp(e, "fused") ? 1 : 0;
    }
    return att_impl == 1;
}

static qt_status attention_fwd_cuda(qt_ctx *ctx, qt_node *n) {
    att_dims d;
    qt_status st = att_dims_of(n, &d);
    if (st != QT_OK) return st;
    if (att_empty(&d)) return QT_OK; /* nothing to compute; backward returns early too */
    float *lse = (float *)qt_cuda_scratch(ctx, n, (size_t)(d.B * d.H * d.T) * sizeof(float));
    if (!lse) return ctx->status != QT_OK ? ctx->status : QT_ENOMEM;
    n->saved = lse;
    n->a.attention.path = att_use_fused() ? ATT_PATH_FUSED : ATT_PATH_MM; /* for backward */
    if (n->a.attention.path == ATT_PATH_MM) return att_mm_fwd(ctx, n, d, lse);
    QT_DISPATCH_FLOAT(n->in[0]->dtype, T,
                      return d.D <= 64 ? att_fwd_launch<T, 64>(n, d, lse)
                                       : att_fwd_launch<T, 128>(n, d, lse));
    return QT_OK;
}

static qt_status attention_bwd_cuda(qt_ctx *ctx, qt_node *n) {
    att_dims d;
    qt_status st = att_dims_of(n, &d);
    if (st != QT_OK) return st;
    if (att_empty(&d) || !n->out->grad) return QT_OK;
    if (!n->in[0]->grad && !n->in[1]->grad && !n->in[2]->grad) return QT_OK;
    if (!n->saved)
        return QT_ERROR(QT_ESTATE, "attention (cuda): backward without the forward's lse");
    float *Dsum = (float *)qt_cuda_scratch(ctx, n, (size_t)(d.B * d.H * d.T) * sizeof(float));
    if (!Dsum) return ctx->status != QT_OK ? ctx->status : QT_ENOMEM;
    if (n->a.attention.path == ATT_PATH_MM) { /* the forward's path */
        const int64_t rows = d.B * d.H * d.T;
        QT_DISPATCH_FLOAT(n->in[0]->dtype, T, att_dsum_kernel<T><<<(unsigned)((rows + 7) / 8), 256>>>(
                                                  (const T *)n->out->data, n->out->grad, Dsum,
                                                  rows, (int)d.D));
        QT_CUDA_LAUNCHED();
        return att_mm_bwd(ctx, n, d, Dsum);
    }
    QT_DISPATCH_FLOAT(n->in[0]->dtype, T,
                      return d.D <= 64 ? att_bwd_launch<T, 64>(n, d, Dsum)
                                       : att_bwd_launch<T, 128>(n, d, Dsum));
    return QT_OK;
}

void qt_cuda_register_attention(qt_backend *be) {
    be->forward[QT_OP_ATTENTION] = attention_fwd_cuda;
    be->backward[QT_OP_ATTENTION] = attention_bwd_cuda;
}
