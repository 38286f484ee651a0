/*
 * ops_matmul.c - batched matrix product through cblas_sgemm, either operand transposed.
 *
 * A (..., M, K) or, transposed, (..., K, M); B (..., K, N) or (..., N, K); the leading
 * dims of B equal A's, or B is 2-D and shared by every batch (a Linear weight: then,
 * with A not transposed, the whole batch is one GEMM of M*batch rows).
 * Backward, for C = op(A) op(B):  dop(A) = dC op(B)^T,  dop(B) = op(A)^T dC, written
 * back through the transposes; beta = 1 makes every GEMM accumulate into the grads.
 */
#include <cblas.h>
#include <omp.h>

#include "internal.h"

void qt_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
              float *C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (blasint)M, (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb,
                beta, C, (blasint)ldc);
}

/* Batches of small GEMMs run one per thread (OpenBLAS' OpenMP build then runs each
 * single-threaded) instead of each GEMM being split over all threads. */
static bool par_batch(int64_t batch, int64_t M, int64_t N, int64_t K) {
    return batch > 1 && batch >= omp_get_max_threads() && M * N * K <= ((int64_t)1 << 26);
}

static qt_status matmul_fwd_cpu(qt_ctx *ctx, qt_node *n) {
    qt_matmul_attrs d = n->a.matmul;
    const float *A = qt_f32(n->in[0]), *B = qt_f32(n->in[1]);
    float *C = qt_f32(n->out);
    int64_t lda = d.ta ? d.M : d.K, ldb = d.tb ? d.K : d.N;
    if (d.shared && !d.ta) {
        qt_sgemm(false, d.tb, d.M * d.batch, d.N, d.K, 1.0f, A, lda, B, ldb, 0.0f, C, d.N);
        return QT_OK;
    }
#pragma omp parallel for schedule(static) if (par_batch(d.batch, d.M, d.N, d.K))
    for (int64_t b = 0; b < d.batch; b++)
        qt_sgemm(d.ta, d.tb, d.M, d.N, d.K, 1.0f, A + b * d.M * d.K, lda,
                 B + (d.shared ? 0 : b * d.K * d.N), ldb, 0.0f, C + b * d.M * d.N, d.N);
    return QT_OK;
}

static qt_status matmul_bwd_cpu(qt_ctx *ctx, qt_node *n) {
    qt_matmul_attrs d = n->a.matmul;
    const float *A = qt_f32(n->in[0]), *B = qt_f32(n->in[1]);
    const float *dC = n->out->grad;
    float *dA = n->in[0]->grad, *dB = n->in[1]->grad;
    int64_t lda = d.ta ? d.M : d.K, ldb = d.tb ? d.K : d.N;

    if (dA) {
        if (d.shared && !d.ta) {
            /* dA (batch*M, K) += dC (batch*M, N) op(B)^T */
            qt_sgemm(false, !d.tb, d.M * d.batch, d.K, d.N, 1.0f, dC, d.N, B, ldb, 1.0f, dA,
                     lda);
        } else {
#pragma omp parallel for schedule(static) if (par_batch(d.batch, d.M, d.N, d.K))
            for (int64_t b = 0; b < d.batch; b++) {
                const float *Bb = B + (d.shared ? 0 : b * d.K * d.N);
                const float *dCb = dC + b * d.M * d.N;
                float *dAb = dA + b * d.M * d.K;
                if (!d.ta) /* dA (M,K) += dC (M,N) op(B)^T */
                    qt_sgemm(false, !d.tb, d.M, d.K, d.N, 1.0f, dCb, d.N, Bb, ldb, 1.0f, dAb,
                             lda);
                else /* A stored (K,M): dA = op(B) dC^T */
                    qt_sgemm(d.tb, true, d.K, d.M, d.N, 1.0f, Bb, ldb, dCb, d.N, 1.0f, dAb,
                             lda);
            }
        }
    }
    if (dB) {
        if (d.shared && !d.ta) {
            /* all batches at once: A viewed as (batch*M, K) */
            if (!d.tb) /* dB (K,N) += A^T dC */
                qt_sgemm(true, false, d.K, d.N, d.M * d.batch, 1.0f, A, lda, dC, d.N, 1.0f, dB,
                         ldb);
            else /* dB (N,K) += dC^T A */
                qt_sgemm(true, false, d.N, d.K, d.M * d.batch, 1.0f, dC, d.N, A, lda, 1.0f, dB,
                         ldb);
        } else {
#pragma omp parallel for schedule(static) if (!d.shared && par_batch(d.batch, d.M, d.N, d.K))
            for (int64_t b = 0; b < d.batch; b++) {
                const float *Ab = A + b * d.M * d.K;
                const float *dCb = dC + b * d.M * d.N;
                float *dBb = dB + (d.shared ? 0 : b * d.K * d.N);
                if (!d.tb) /* dB (K,N) += op(A)^T dC */
                    qt_sgemm(!d.ta, false, d.K, d.N, d.M, 1.0f, Ab, lda, dCb, d.N, 1.0f, dBb,
                             ldb);
                else /* dB (N,K) += dC^T op(A) */
                    qt_sgemm(true, d.ta, d.N, d.K, d.M, 1.0f, dCb, d.N, Ab, lda, 1.0f, dBb,
                             ldb);
            }
        }
    }
    return QT_OK;
}

const qt_op_def qt_opdef_matmul = {
    .name = "matmul",
    .forward = {[QT_DEV_CPU] = matmul_fwd_cpu},
    .backward = {[QT_DEV_CPU] = matmul_bwd_cpu},
};

qt_tensor *qt_matmul(qt_ctx *ctx, qt_tensor *a, qt_tensor *b, bool ta, bool tb) {
    qt_tensor *in[2] = {a, b};
    if (!qt_check_inputs(ctx, "matmul", 2, in)) return NULL;
    char sa[64], sb[64];
    if (a->ndim < 2 || b->ndim < 2)
        return QT_FAIL(ctx, QT_ESHAPE, "matmul: operands need >= 2 dims, got %s and %s",
                       qt_shape_str(a, sa, 64), qt_shape_str(b, sb, 64));
    bool shared = b->ndim == 2 && a->ndim > 2;
    if (!shared && a->ndim != b->ndim)
        return QT_FAIL(ctx, QT_ESHAPE,
                       "matmul: B must have A's leading dims or be 2-D, got %s and %s",
                       qt_shape_str(a, sa, 64), qt_shape_str(b, sb, 64));
    int64_t batch = 1;
    for (int i = 0; i < a->ndim - 2; i++) {
        if (!shared && a->shape[i] != b->shape[i])
            return QT_FAIL(ctx, QT_ESHAPE, "matmul: batch dims differ: %s and %s",
                           qt_shape_str(a, sa, 64), qt_shape_str(b, sb, 64));
        batch *= a->shape[i];
    }
    int64_t M = ta ? qt_dim(a, -1) : qt_dim(a, -2), Ka = ta ? qt_dim(a, -2) : qt_dim(a, -1);
    int64_t Kb = tb ? qt_dim(b, -1) : qt_dim(b, -2), N = tb ? qt_dim(b, -2) : qt_dim(b, -1);
    if (Ka != Kb)
        return QT_FAIL(ctx, QT_ESHAPE,
                       "matmul: inner dims differ (%lld vs %lld) for %s%s x %s%s",
                       (long long)Ka, (long long)Kb, qt_shape_str(a, sa, 64), ta ? "^T" : "",
                       qt_shape_str(b, sb, 64), tb ? "^T" : "");
    int64_t shape[QT_MAX_DIMS];
    for (int i = 0; i < a->ndim - 2; i++) shape[i] = a->shape[i];
    shape[a->ndim - 2] = M;
    shape[a->ndim - 1] = N;
    qt_tensor *out = qt_new_like_shape(ctx, a, a->ndim, shape);
    qt_op_attrs at = {.matmul = {.ta = ta, .tb = tb, .shared = shared, .M = M, .N = N,
                                 .K = Ka, .batch = batch}};
    return qt_op_run(ctx, QT_OP_MATMUL, 2, in, out, &at);
}
