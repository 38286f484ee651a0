/*
 * ops_attention.c - fused causal scaled-dot-product attention with grouped-query heads.
 *
 * q (B, H, T, D), k and v (B, Hkv, Tk, D); query head h reads kv head h / (H/Hkv)
 * (GQA, Ainslie et al. 2023; Llama/HF repeat_kv order). Query i sees keys
 * j <= i + (Tk - T), so Tk > T is decoding with a cache of earlier positions.
 *
 * The forward pass works on blocks of QT_ATTN_BQ queries: S = scale Q_blk K^T (only
 * the keys the block can see), masked row softmax, O_blk = P V, all through SGEMM.
 * Only the per-row log-sum-exp is kept (B*H*T floats), as in FlashAttention (Dao et
 * al. 2022): backward recomputes P = exp(S - lse) block by block and forms
 *   dV += P^T dO,  dP = dO V^T,  dS = P (dP - rowsum(dO * O)),
 *   dQ += scale dS K,  dK += scale dS^T Q.
 * Scratch is two (BQ x Tk) tiles per thread, never (T x T) per head.
 * Forward is parallel over (batch, head); backward over (batch, kv head) so that the
 * heads sharing one kv head accumulate into dK/dV from a single thread: no races, and
 * the summation order does not depend on the thread count.
 */
#include <math.h>
#include <omp.h>

#include "internal.h"

#define QT_ATTN_BQ 64

typedef struct {
    int64_t B, H, Hkv, T, Tk, D;
    float scale;
} attn_dims;

static attn_dims dims_of(const qt_node *n) {
    const qt_tensor *q = n->in[0], *k = n->in[1];
    attn_dims d = {q->shape[0], q->shape[1], k->shape[1], q->shape[2], k->shape[2],
                   q->shape[3], n->a.attention.scale};
    return d;
}

/* P (nb, kv) = softmax rows of S (already scaled), row r sees keys < lim(r). Writes the
 * row's lse when `lse` is given, else uses it to normalise (backward recomputation). */
static void masked_softmax(float *S, int64_t nb, int64_t kv, int64_t i0, int64_t off,
                           float *lse, bool have_lse) {
    for (int64_t r = 0; r < nb; r++) {
        float *s = S + r * kv;
        int64_t lim = i0 + r + off + 1; /* keys j < lim are visible */
        if (lim > kv) lim = kv;
        float l;
        if (!have_lse) {
            float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
            for (int64_t j = 0; j < lim; j++) mx = s[j] > mx ? s[j] : mx;
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < lim; j++) {
                s[j] = qt_expf(s[j] - mx);
                sum += s[j];
            }
            lse[r] = mx + logf(sum);
            float inv = 1.0f / sum;
#pragma omp simd
            for (int64_t j = 0; j < lim; j++) s[j] *= inv;
            for (int64_t j = lim; j < kv; j++) s[j] = 0.0f;
            continue;
        }
        l = lse[r];
#pragma omp simd
        for (int64_t j = 0; j < lim; j++) s[j] = qt_expf(s[j] - l);
        for (int64_t j = lim; j < kv; j++) s[j] = 0.0f;
    }
}

static qt_status attention_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    attn_dims d = dims_of(n);
    int64_t group = d.H / d.Hkv, off = d.Tk - d.T;
    int nthr = omp_get_max_threads();
    float *lse = qt_ctx_alloc(ctx, (size_t)(d.B * d.H * d.T) * sizeof(float));
    float *scratch = qt_ctx_alloc(ctx, (size_t)nthr * QT_ATTN_BQ * (size_t)d.Tk * sizeof(float));
    if (!lse || !scratch) return ctx->status;
    n->saved = lse;
    const float *Q = qt_f32(n->in[0]), *K = qt_f32(n->in[1]), *V = qt_f32(n->in[2]);
    float *O = qt_f32(n->out);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < d.B * d.H; bh++) {
        int64_t b = bh / d.H, h = bh % d.H, kvh = h / group;
        const float *q = Q + bh * d.T * d.D;
        const float *k = K + (b * d.Hkv + kvh) * d.Tk * d.D;
        const float *v = V + (b * d.Hkv + kvh) * d.Tk * d.D;
        float *o = O + bh * d.T * d.D;
        float *S = scratch + (size_t)omp_get_thread_num() * QT_ATTN_BQ * (size_t)d.Tk;
        for (int64_t i0 = 0; i0 < d.T; i0 += QT_ATTN_BQ) {
            int64_t nb = d.T - i0 < QT_ATTN_BQ ? d.T - i0 : QT_ATTN_BQ;
            int64_t kv = i0 + nb + off; /* keys any row of the block can see */
            qt_sgemm(false, true, nb, kv, d.D, d.scale, q + i0 * d.D, d.D, k, d.D, 0.0f, S, kv);
            masked_softmax(S, nb, kv, i0, off, lse + bh * d.T + i0, false);
            qt_sgemm(false, false, nb, d.D, kv, 1.0f, S, kv, v, d.D, 0.0f, o + i0 * d.D, d.D);
        }
    }
    return QT_OK;
}

static qt_status attention_bwd_cpu(qt_ctx *ctx, qt_node *n) {
    attn_dims d = dims_of(n);
    int64_t group = d.H / d.Hkv, off = d.Tk - d.T;
    int nthr = omp_get_max_threads();
    size_t tile = QT_ATTN_BQ * (size_t)d.Tk;
    float *scratch = qt_ctx_alloc(ctx, (size_t)nthr * (2 * tile + QT_ATTN_BQ) * sizeof(float));
    if (!scratch) return ctx->status;
    const float *Q = qt_f32(n->in[0]), *K = qt_f32(n->in[1]), *V = qt_f32(n->in[2]);
    const float *O = qt_f32(n->out), *dO = n->out->grad, *lse = n->saved;
    float *dQ = n->in[0]->grad, *dK = n->in[1]->grad, *dV = n->in[2]->grad;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t bk = 0; bk < d.B * d.Hkv; bk++) {
        float *P = scratch + (size_t)omp_get_thread_num() * (2 * tile + QT_ATTN_BQ);
        float *dP = P + tile, *Di = dP + tile;
        const float *k = K + bk * d.Tk * d.D, *v = V + bk * d.Tk * d.D;
        float *dk = dK ? dK + bk * d.Tk * d.D : NULL, *dv = dV ? dV + bk * d.Tk * d.D : NULL;
        int64_t b = bk / d.Hkv, kvh = bk % d.Hkv;
        for (int64_t h = kvh * group; h < (kvh + 1) * group; h++) {
            int64_t bh = b * d.H + h;
            const float *q = Q + bh * d.T * d.D, *o = O + bh * d.T * d.D;
            const float *dout = dO + bh * d.T * d.D;
            float *dq = dQ ? dQ + bh * d.T * d.D : NULL;
            for (int64_t i0 = 0; i0 < d.T; i0 += QT_ATTN_BQ) {
                int64_t nb = d.T - i0 < QT_ATTN_BQ ? d.T - i0 : QT_ATTN_BQ;
                int64_t kv = i0 + nb + off;
                const float *qb = q + i0 * d.D, *dob = dout + i0 * d.D;
                qt_sgemm(false, true, nb, kv, d.D, d.scale, qb, d.D, k, d.D, 0.0f, P, kv);
                masked_softmax(P, nb, kv, i0, off, (float *)(lse + bh * d.T + i0), true);
                if (dv) qt_sgemm(true, false, kv, d.D, nb, 1.0f, P, kv, dob, d.D, 1.0f, dv, d.D);
                if (!dq && !dk) continue;
                qt_sgemm(false, true, nb, kv, d.D, 1.0f, dob, d.D, v, d.D, 0.0f, dP, kv);
                for (int64_t r = 0; r < nb; r++) {
                    const float *orow = o + (i0 + r) * d.D, *dorow = dob + r * d.D;
                    double acc = 0.0;
                    for (int64_t e = 0; e < d.D; e++) acc += (double)orow[e] * dorow[e];
                    Di[r] = (float)acc;
                }
                for (int64_t r = 0; r < nb; r++)
                    for (int64_t j = 0; j < kv; j++)
                        dP[r * kv + j] = P[r * kv + j] * (dP[r * kv + j] - Di[r]); /* dS */
                if (dq)
                    qt_sgemm(false, false, nb, d.D, kv, d.scale, dP, kv, k, d.D, 1.0f,
                             dq + i0 * d.D, d.D);
                if (dk) qt_sgemm(true, false, kv, d.D, nb, d.scale, dP, kv, qb, d.D, 1.0f, dk, d.D);
            }
        }
    }
    return QT_OK;
}

const qt_op_def qt_opdef_attention = {
    .name = "attention",
    .forward = {[QT_DEV_CPU] = attention_fwd_cpu},
    .backward = {[QT_DEV_CPU] = attention_bwd_cpu},
};

qt_tensor *qt_attention(qt_ctx *ctx, qt_tensor *q, qt_tensor *k, qt_tensor *v, float scale) {
    qt_tensor *in[3] = {q, k, v};
    if (!qt_check_inputs(ctx, "attention", 3, in)) return NULL;
    char sq[64], sk[64], sv[64];
    if (q->ndim != 4 || k->ndim != 4 || !qt_same_shape(k, v) || k->shape[0] != q->shape[0] ||
        k->shape[3] != q->shape[3] || k->shape[1] < 1 || q->shape[1] % k->shape[1] ||
        k->shape[2] < q->shape[2])
        return QT_FAIL(ctx, QT_ESHAPE,
                       "attention: need q (B,H,T,D), k = v (B,Hkv,Tk,D) with H %% Hkv == 0 "
                       "and Tk >= T; got q %s, k %s, v %s",
                       qt_shape_str(q, sq, 64), qt_shape_str(k, sk, 64), qt_shape_str(v, sv, 64));
    if (scale <= 0.0f) scale = 1.0f / sqrtf((float)q->shape[3]);
    qt_tensor *out = qt_new_like_shape(ctx, q, 4, q->shape);
    qt_op_attrs at = {.attention = {.scale = scale}};
    return qt_op_run(ctx, QT_OP_ATTENTION, 3, in, out, &at);
}
