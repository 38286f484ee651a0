/*
 * matmul.cu - qt_matmul on the GPU through cuBLAS (cublasGemmStridedBatchedEx), the
 * same cases as autograd/ops_matmul.c (either operand transposed, B batched or shared).
 *
 * cuBLAS is column-major: a row-major X (r, c) is the column-major X^T, so the row-major
 * C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T, swapping the
 * operands. f32 tensors use CUBLAS_COMPUTE_32F (true fp32, the parity reference); bf16
 * tensors run on the tensor cores with f32 accumulation. Backward gets an f32 dC (grads
 * are f32); with bf16 operands it is rounded to bf16 first (as torch autocast's bf16
 * grads are) and the product accumulates into the f32 grads (beta = 1).
 */
#include "common.cuh"

static cudaDataType cuda_type(qt_dtype t) { return t == QT_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

/* Row-major C (M,N) = alpha op(A) op(B) + beta C over `batch` strided problems.
 * Element strides sA/sB/sC between problems (0 = shared). Declared in common.cuh as
 * qt_cuda_gemm for the other op families (attention). */
qt_status qt_cuda_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                         const void *A, int64_t lda, int64_t sA, const void *B, int64_t ldb,
                         int64_t sB, float beta, void *C, int64_t ldc, int64_t sC,
                         int64_t batch, qt_dtype ab, qt_dtype c) {
    if (M == 0 || N == 0 || batch == 0) return QT_OK;
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || batch > INT32_MAX)
        return QT_ERROR(QT_ENOTSUP, "cuda matmul: dims beyond 2^31");
    QT_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        qt_cublas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N,
        (int)M, (int)K, &alpha, B, cuda_type(ab), (int)ldb, sB, A, cuda_type(ab), (int)lda, sA,
        &beta, C, cuda_type(c), (int)ldc, sC, (int)batch, CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT));
    return QT_OK;
}


static qt_status matmul_fwd(qt_ctx *ctx, qt_node *n) {
    qt_matmul_attrs d = n->a.matmul; /* as the CPU kernel reads them */
    qt_dtype t = n->in[0]->dtype;
    if (n->in[1]->dtype != t)
        return QT_ERROR(QT_EDTYPE, "cuda matmul: operands are %s and %s (cast one)",
                        qt_dtype_name(t), qt_dtype_name(n->in[1]->dtype));
    const void *A = n->in[0]->data, *B = n->in[1]->data;
    void *C = n->out->data;
    int64_t lda = d.ta ? d.M : d.K, ldb = d.tb ? d.K : d.N;
    if (d.shared && !d.ta)
        return qt_cuda_gemm(false, d.tb, d.M * d.batch, d.N, d.K, 1.0f, A, lda, 0, B, ldb, 0, 0.0f,
                       C, d.N, 0, 1, t, t);
    return qt_cuda_gemm(d.ta, d.tb, d.M, d.N, d.K, 1.0f, A, lda, d.M * d.K, B, ldb,
                   d.shared ? 0 : d.K * d.N, 0.0f, C, d.N, d.M * d.N, d.batch, t, t);
}

static qt_status matmul_bwd(qt_ctx *ctx, qt_node *n) {
    qt_matmul_attrs d = n->a.matmul; /* as the CPU kernel reads them */
    qt_dtype t = n->in[0]->dtype;
    const void *A = n->in[0]->data, *B = n->in[1]->data;
    const void *dC = n->out->grad;
    float *dA = n->in[0]->grad, *dB = n->in[1]->grad;
    int64_t lda = d.ta ? d.M : d.K, ldb = d.tb ? d.K : d.N;
    if (t == QT_BF16) { /* the product's operands must share a type */
        int64_t nc = qt_numel(n->out);
        /* the shared workspace: only this op's products below read it */
        qt_bf16 *h = (qt_bf16 *)qt_cuda_workspace((size_t)nc * sizeof(qt_bf16));
        if (!h) return QT_ENOMEM;
        qt_cast_kernel<float, qt_bf16><<<qt_blocks(nc, 256), 256>>>(n->out->grad, h, nc);
        QT_CUDA_LAUNCHED();
        dC = h;
    }
    const int64_t sC = d.M * d.N, sA = d.M * d.K, sB = d.shared ? 0 : d.K * d.N;
    qt_status st = QT_OK;
    if (dA) {
        if (d.shared && !d.ta) /* dA (batch*M, K) += dC op(B)^T */
            st = qt_cuda_gemm(false, !d.tb, d.M * d.batch, d.K, d.N, 1.0f, dC, d.N, 0, B, ldb, 0,
                         1.0f, dA, lda, 0, 1, t, QT_F32);
        else if (!d.ta) /* dA (M,K) += dC (M,N) op(B)^T */
            st = qt_cuda_gemm(false, !d.tb, d.M, d.K, d.N, 1.0f, dC, d.N, sC, B, ldb, sB, 1.0f, dA,
                         lda, sA, d.batch, t, QT_F32);
        else /* A stored (K,M): dA = op(B) dC^T */
            st = qt_cuda_gemm(d.tb, true, d.K, d.M, d.N, 1.0f, B, ldb, sB, dC, d.N, sC, 1.0f, dA,
                         lda, sA, d.batch, t, QT_F32);
        if (st != QT_OK) return st;
    }
    if (dB) {
        if (d.shared && !d.ta) { /* A viewed as (batch*M, K) */
            if (!d.tb) /* dB (K,N) += A^T dC */
                st = qt_cuda_gemm(true, false, d.K, d.N, d.M * d.batch, 1.0f, A, lda, 0, dC, d.N, 0,
                             1.0f, dB, ldb, 0, 1, t, QT_F32);
            else /* dB (N,K) += dC^T A */
                st = qt_cuda_gemm(true, false, d.N, d.K, d.M * d.batch, 1.0f, dC, d.N, 0, A, lda, 0,
                             1.0f, dB, ldb, 0, 1, t, QT_F32);
        } else if (!d.shared) {
            if (!d.tb) /* dB (K,N) += op(A)^T dC */
                st = qt_cuda_gemm(!d.ta, false, d.K, d.N, d.M, 1.0f, A, lda, sA, dC, d.N, sC, 1.0f,
                             dB, ldb, d.K * d.N, d.batch, t, QT_F32);
            else /* dB (N,K) += dC^T op(A) */
                st = qt_cuda_gemm(true, d.ta, d.N, d.K, d.M, 1.0f, dC, d.N, sC, A, lda, sA, 1.0f, dB,
                             ldb, d.K * d.N, d.batch, t, QT_F32);
        } else { /* shared B with A transposed: every batch adds into one dB, in order */
            size_t es = qt_dtype_size(t);
            for (int64_t b = 0; b < d.batch && st == QT_OK; b++) {
                const char *Ab = (const char *)A + (size_t)(b * sA) * es;
                const char *dCb = (const char *)dC + (size_t)(b * sC) * es;
                if (!d.tb) /* dB (K,N) += A (K,M) dC (M,N): A is stored transposed */
                    st = qt_cuda_gemm(false, false, d.K, d.N, d.M, 1.0f, Ab, lda, 0, dCb, d.N, 0,
                                 1.0f, dB, ldb, 0, 1, t, QT_F32);
                else
                    st = qt_cuda_gemm(true, true, d.N, d.K, d.M, 1.0f, dCb, d.N, 0, Ab, lda, 0, 1.0f,
                                 dB, ldb, 0, 1, t, QT_F32);
            }
        }
    }
    return st;
}

void qt_cuda_register_matmul(qt_backend *be) {
    be->forward[QT_OP_MATMUL] = matmul_fwd;
    be->backward[QT_OP_MATMUL] = matmul_bwd;
}
