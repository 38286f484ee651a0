/*
 * gptq.c - GPTQ on one weight matrix (Frantar et al. 2022, "GPTQ: Accurate Post-Training
 * Quantization for Generative Pre-trained Transformers", Algorithm 1; the reference
 * implementation IST-DASLab/gptq gptq.py fasterquant, and AutoGPTQ's static_groups).
 *
 *   dead inputs (H_ii = 0): H_ii = 1, W[:, i] = 0
 *   act-order: columns visited in decreasing H_ii
 *   H += damp * mean(diag(H)) * I;  U = cholesky(H^-1) upper
 *   for each block of B columns (lazy batch updates, B = 128):
 *     for each column j of the block:
 *       (group start: scales and zero points of the next G columns, from W as it stands)
 *       q_j = Q(w_j);  e_j = (w_j - q_j) / U_jj;  w_k -= e_j U_jk for the block's k > j
 *     W[:, after the block] -= E U[block, after]
 *
 * Scales come from the quantizer core (qt_qint_params) and the codes from qt_qint_code,
 * so the result is an ordinary qt_qtensor and dequantizes through qt_dequantize exactly.
 * As in the reference (and GPTQModel), a group's parameters are computed from W as it
 * stood at the start of the current lazy block: the group's columns have not yet received
 * the updates of the block's earlier columns (the reference updates W only at block
 * boundaries). This matters only when G < B; parameters from the updated columns would
 * lower the proxy loss a little (~5% at G = 32 in tests/test_ptq's fixture) but would no
 * longer be the reference's result. Work is column-major (W^T) so a column is contiguous; the
 * Cholesky factorisations run in double through LAPACK (OpenBLAS), the rest in f32 as
 * the reference does.
 */
#define _GNU_SOURCE /* qsort_r */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "ptq_internal.h"

/* LAPACK (OpenBLAS exports the Fortran symbols) */
extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
extern void dpotri_(const char *uplo, const int *n, double *a, const int *lda, int *info);

static int cmp_diag_desc(const void *a, const void *b, void *ctx) {
    const float *d = ctx;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (d[i] != d[j]) return d[i] > d[j] ? -1 : 1;
    return i < j ? -1 : i > j; /* stable: ties keep input order */
}

/* U = upper Cholesky factor of (H)^-1, H (n x n) symmetric positive definite; in f32
 * row-major (U[i*n + j], j >= i; zero below). */
static qt_status hinv_cholesky(const float *H, int64_t n64, float *U) {
    int n = (int)n64, info = 0;
    double *A = malloc((size_t)(n64 * n64) * sizeof *A);
    if (!A) return QT_ERROR(QT_ENOMEM, "gptq: out of memory for a %d x %d Hessian", n, n);
    for (int64_t i = 0; i < n64 * n64; i++) A[i] = H[i];
    /* symmetric, so row- and column-major are the same matrix: 'L' in Fortran's
     * column-major is the upper triangle in our row-major view, and vice versa */
    dpotrf_("L", &n, A, &n, &info);
    if (info == 0) dpotri_("L", &n, A, &n, &info); /* H^-1, lower (Fortran) filled */
    if (info == 0) {
        /* mirror to a full symmetric matrix, then its Cholesky factor U (H^-1 = U^T U):
         * Fortran 'L' on the row-major view gives L with H^-1 = L L^T column-major, i.e.
         * the row-major upper triangle holds L^T = U */
        for (int j = 0; j < n; j++)
            for (int i = j + 1; i < n; i++) A[(int64_t)i * n + j] = A[(int64_t)j * n + i];
        dpotrf_("L", &n, A, &n, &info);
    }
    if (info != 0) {
        free(A);
        return QT_ERROR(QT_ENUMERIC,
                        "gptq: the damped Hessian is not positive definite (LAPACK info %d); "
                        "raise the damping (quantize.damp) or use more calibration data",
                        info);
    }
    /* Fortran column-major lower L: element (i, j), i >= j, at A[j*n + i]; U = L^T,
     * U[j][i] = L[i][j] -> row-major U[j*n + i] = A[j*n + i]: already in place */
    for (int64_t i = 0; i < n64; i++)
        for (int64_t j = 0; j < n64; j++) U[i * n64 + j] = j >= i ? (float)A[i * n64 + j] : 0.0f;
    free(A);
    return QT_OK;
}

void qt_gptq_hinv_free(qt_gptq_hinv *h) {
    free(h->U);
    free(h->perm);
    free(h->dead);
    memset(h, 0, sizeof *h);
}

qt_status qt_gptq_hinv_init(float *H, int64_t cols, float damp, bool act_order, qt_gptq_hinv *h) {
    memset(h, 0, sizeof *h);
    if (!(damp >= 0.0f)) return QT_ERROR(QT_EINVAL, "gptq: damp must be >= 0");
    h->cols = cols;
    h->U = malloc((size_t)(cols * cols) * sizeof *h->U);
    h->perm = malloc((size_t)cols * sizeof *h->perm);
    h->dead = malloc((size_t)cols);
    float *dg = malloc((size_t)cols * sizeof *dg);
    qt_status st = QT_OK;
    if (!h->U || !h->perm || !h->dead || !dg) {
        st = QT_ERROR(QT_ENOMEM, "gptq: out of memory for a %lld x %lld Hessian", (long long)cols,
                      (long long)cols);
        goto done;
    }
    /* dead inputs: never seen non-zero in calibration */
    for (int64_t c = 0; c < cols; c++) {
        h->dead[c] = H[c * cols + c] == 0.0f;
        if (h->dead[c]) H[c * cols + c] = 1.0f;
        dg[c] = H[c * cols + c];
        h->perm[c] = (int32_t)c;
    }
    h->act_order = act_order;
    if (act_order) qsort_r(h->perm, (size_t)cols, sizeof *h->perm, cmp_diag_desc, dg);
    double mean = 0.0;
    for (int64_t c = 0; c < cols; c++) mean += dg[c];
    const float dampv = (float)(damp * mean / (double)cols);
    float *Hp = h->U; /* scratch: H permuted, then replaced by its factor */
    for (int64_t i = 0; i < cols; i++)
        for (int64_t j = 0; j < cols; j++) Hp[i * cols + j] = H[h->perm[i] * cols + h->perm[j]];
    for (int64_t i = 0; i < cols; i++) Hp[i * cols + i] += dampv;
    st = hinv_cholesky(Hp, cols, h->U);
done:
    free(dg);
    if (st != QT_OK) qt_gptq_hinv_free(h);
    return st;
}

qt_status qt_gptq_quantize_layer(const qt_qformat *f, float *w, int64_t rows, int64_t cols,
                                 float *H, float damp, int block_size, bool act_order,
                                 bool static_groups, qt_qtensor *q, int32_t **perm_out) {
    memset(q, 0, sizeof *q);
    if (perm_out) *perm_out = NULL;
    qt_gptq_hinv h;
    qt_status st = qt_gptq_hinv_init(H, cols, damp, act_order, &h);
    if (st != QT_OK) return st;
    st = qt_gptq_quantize_with(f, w, rows, cols, &h, block_size, static_groups, q, perm_out);
    qt_gptq_hinv_free(&h);
    return st;
}

qt_status qt_gptq_quantize_with(const qt_qformat *f, float *w, int64_t rows, int64_t cols,
                                const qt_gptq_hinv *h, int block_size, bool static_groups,
                                qt_qtensor *q, int32_t **perm_out) {
    memset(q, 0, sizeof *q);
    if (perm_out) *perm_out = NULL;
    qt_status st = qt_qformat_check(f, rows, cols);
    if (st != QT_OK) return st;
    if (f->kind != QT_QF_INT || f->gran == QT_QG_TENSOR)
        return QT_ERROR(QT_EINVAL, "gptq: needs an int format per channel or per group");
    if (block_size < 1) return QT_ERROR(QT_EINVAL, "gptq: block_size must be >= 1");
    if (h->cols != cols)
        return QT_ERROR(QT_EINVAL, "gptq: the Hessian is %lld x %lld, the weight has %lld inputs",
                        (long long)h->cols, (long long)h->cols, (long long)cols);
    const bool act_order = h->act_order;
    const float *U = h->U;
    const int64_t G = f->gran == QT_QG_GROUP ? f->group_size : cols, ng = cols / G;
    const int bits = f->bits;
    float *Wt = malloc((size_t)(rows * cols) * sizeof *Wt);      /* (cols, rows) W^T */
    float *E = malloc((size_t)block_size * (size_t)rows * sizeof *E); /* (B, rows) */
    float *S = malloc((size_t)block_size * (size_t)rows * sizeof *S); /* (B, rows) block at its start */
    float *sc = malloc((size_t)(rows * ng) * sizeof *sc);        /* (rows, ng) */
    uint8_t *zp = malloc((size_t)(rows * ng));
    uint8_t *codes = malloc((size_t)(rows * cols));              /* (rows, cols) q order */
    int32_t *perm = malloc((size_t)cols * sizeof *perm);
    float *mn = malloc((size_t)rows * sizeof *mn), *mx = malloc((size_t)rows * sizeof *mx);
    if (!Wt || !E || !S || !sc || !zp || !codes || !perm || !mn || !mx) {
        st = QT_ERROR(QT_ENOMEM, "gptq: out of memory for a %lld x %lld layer", (long long)rows,
                      (long long)cols);
        goto done;
    }
    for (int64_t i = 0; i < rows * cols; i++)
        if (!isfinite(w[i])) {
            st = QT_ERROR(QT_ENUMERIC, "gptq: weight (row %lld, col %lld) is not finite",
                          (long long)(i / cols), (long long)(i % cols));
            goto done;
        }
    memcpy(perm, h->perm, (size_t)cols * sizeof *perm);
    for (int64_t c = 0; c < cols; c++) /* dead inputs carry nothing */
        if (h->dead[c])
            for (int64_t r = 0; r < rows; r++) w[r * cols + c] = 0.0f;
    /* per-channel scales, and static groups: from the whole (original-order) W */
    if (f->gran == QT_QG_CHANNEL || static_groups)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t g = 0; g < ng; g++) {
                float lo = 0, hi = 0;
                for (int64_t c = g * G; c < (g + 1) * G; c++) {
                    float x = w[r * cols + c];
                    lo = x < lo ? x : lo;
                    hi = x > hi ? x : hi;
                }
                qt_qint_params(f, (const float[]){lo, hi}, 2, &sc[r * ng + g], &zp[r * ng + g]);
                if (!isfinite(sc[r * ng + g])) {
                    st = QT_ERROR(QT_ENUMERIC, "gptq: the scale of the group at (row %lld, col "
                                  "%lld) overflows %s", (long long)r, (long long)(g * G),
                                  qt_dtype_name(f->scale_dtype));
                    goto done;
                }
            }
    /* W^T in visiting order */
    for (int64_t i = 0; i < cols; i++)
        for (int64_t r = 0; r < rows; r++) Wt[i * rows + r] = w[r * cols + perm[i]];
    for (int64_t i1 = 0; i1 < cols; i1 += block_size) {
        const int64_t i2 = i1 + block_size < cols ? i1 + block_size : cols, cnt = i2 - i1;
        memcpy(S, Wt + i1 * rows, (size_t)(cnt * rows) * sizeof *S);
        for (int64_t i = i1; i < i2; i++) {
            /* the group this column belongs to, and its parameters */
            int64_t g;
            if (f->gran == QT_QG_CHANNEL) {
                g = 0;
            } else if (static_groups) {
                g = perm[i] / G;
            } else {
                g = i / G;
                if (i % G == 0) { /* from W as it stands (see the header) */
                    for (int64_t r = 0; r < rows; r++) mn[r] = mx[r] = 0.0f;
                    for (int64_t c = i; c < i + G; c++) {
                        const float *col = c < i2 ? S + (c - i1) * rows : Wt + c * rows;
                        for (int64_t r = 0; r < rows; r++) {
                            mn[r] = col[r] < mn[r] ? col[r] : mn[r];
                            mx[r] = col[r] > mx[r] ? col[r] : mx[r];
                        }
                    }
                    for (int64_t r = 0; r < rows; r++) {
                        qt_qint_params(f, (const float[]){mn[r], mx[r]}, 2, &sc[r * ng + g],
                                       &zp[r * ng + g]);
                        if (!isfinite(sc[r * ng + g])) {
                            st = QT_ERROR(QT_ENUMERIC,
                                          "gptq: the scale of the group at (row %lld, col %lld) "
                                          "overflows %s", (long long)r, (long long)perm[i],
                                          qt_dtype_name(f->scale_dtype));
                            goto done;
                        }
                    }
                }
            }
            float *col = Wt + i * rows, *err = E + (i - i1) * rows;
            const float d = U[i * cols + i];
            const int64_t qc = static_groups ? perm[i] : i; /* column of codes */
            for (int64_t r = 0; r < rows; r++) {
                const float s = sc[r * ng + g];
                const int z = zp[r * ng + g];
                uint8_t c8 = qt_qint_code(col[r], 1.0f / s, z, bits);
                codes[r * cols + qc] = c8;
                float deq = (float)((int)c8 - z) * s;
                err[r] = (col[r] - deq) / d;
            }
            /* w_k -= e U_ik for the rest of the block */
            for (int64_t k = i + 1; k < i2; k++) {
                const float u = U[i * cols + k];
                float *ck = Wt + k * rows;
                for (int64_t r = 0; r < rows; r++) ck[r] -= err[r] * u;
            }
        }
        /* lazy update of everything after the block: Wt[i2:, :] -= U[i1:i2, i2:]^T E */
        if (i2 < cols)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(cols - i2), (int)rows,
                        (int)cnt, -1.0f, U + i1 * cols + i2, (int)cols, E, (int)rows, 1.0f,
                        Wt + i2 * rows, (int)rows);
    }
    /* the result as a quantizer-core tensor */
    q->fmt = *f;
    q->rows = rows;
    q->cols = cols;
    q->codes = codes;
    q->n_scales = rows * ng;
    q->scales = sc;
    q->zeros = f->symmetric ? NULL : zp;
    codes = NULL;
    sc = NULL;
    if (!f->symmetric) zp = NULL;
    bool permuted = act_order && !static_groups;
    if (permuted) {
        qt_qlinear l = {.q = *q, .perm = perm};
        st = qt_qlinear_dequantize(&l, w);
    } else {
        st = qt_dequantize(q, w);
    }
    if (st != QT_OK) {
        qt_qtensor_free(q);
        goto done;
    }
    if (permuted && perm_out) {
        *perm_out = perm;
        perm = NULL;
    } else if (permuted) {
        st = QT_ERROR(QT_EINVAL, "gptq: act_order without static groups needs perm_out");
        qt_qtensor_free(q);
    }
done:
    free(Wt);
    free(E);
    free(S);
    free(sc);
    free(zp);
    free(codes);
    free(perm);
    free(mn);
    free(mx);
    return st;
}
