/*
 * compare.c - the parity report: perplexity of a reference and a candidate model on the
 * same windows, the KL divergence of the candidate's next-token distribution from the
 * reference's (llama.cpp's `perplexity --kl-divergence` reports the same statistic), and
 * how often their top-1 tokens agree, over the windows of `qtrain eval` (qt_ppl_windows).
 * Log-softmax in double. The report's line is the CLI's to print.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train_internal.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* log-softmax of one row of logits into lp (double); returns the argmax */
static int64_t log_softmax(const float *z, int64_t V, double *lp) {
    int64_t am = 0;
    double mx = z[0];
    for (int64_t v = 1; v < V; v++)
        if (z[v] > mx) mx = z[v], am = v;
    double s = 0.0;
    for (int64_t v = 0; v < V; v++) s += exp((double)z[v] - mx);
    double lse = mx + log(s);
    for (int64_t v = 0; v < V; v++) lp[v] = (double)z[v] - lse;
    return am;
}

qt_status qt_compare_models(qt_model *ref, qt_model *cand, const int32_t *text, long n,
                            long ctxlen, long stride, qt_compare_result *out) {
    memset(out, 0, sizeof *out);
    const int64_t V = qt_model_vocab(ref);
    if (qt_model_vocab(cand) != V)
        return QT_ERROR(QT_EINVAL, "compare: the vocabularies differ (%lld vs %lld)", (long long)V,
                        (long long)qt_model_vocab(cand));
    if (ctxlen < 1 || stride < 1 || stride > ctxlen || n < 2)
        return QT_ERROR(QT_EINVAL, "compare: needs context >= stride >= 1 and >= 2 tokens");
    for (long i = 0; i < n; i++)
        if (text[i] < 0 || text[i] >= V)
            return QT_ERROR(QT_EINVAL, "compare: token %ld is id %d, outside the vocabulary of %lld",
                            i, text[i], (long long)V);
    qt_ctx *ctx = qt_ctx_new();
    int32_t *ids = malloc((size_t)ctxlen * sizeof *ids);
    double *lp = malloc((size_t)V * sizeof *lp), *lq = malloc((size_t)V * sizeof *lq);
    double *kls = malloc((size_t)n * sizeof *kls);
    float *zr = malloc((size_t)(ctxlen * V) * sizeof *zr);
    qt_status st = QT_OK;
    if (!ctx || !ids || !lp || !lq || !kls || !zr) {
        st = QT_ERROR(QT_ENOMEM, "compare: out of memory");
        goto done;
    }
    qt_ctx_set_grad_enabled(ctx, false);
    double nll_r = 0, nll_c = 0, kl_sum = 0;
    long count = 0, agree = 0, begin, L, first;
    qt_ppl_windows w;
    qt_ppl_windows_init(&w, n, ctxlen, stride);
    while (qt_ppl_windows_next(&w, &begin, &L, &first)) {
        memcpy(ids, text + begin, (size_t)L * sizeof *ids);
        int64_t shape[2] = {1, L};
        qt_ctx_reset(ctx);
        qt_tensor *yr = qt_model_forward(ctx, ref, qt_tensor_from(ctx, QT_I32, 2, shape, ids));
        if (!yr) {
            st = QT_ERROR(qt_ctx_status(ctx), "compare: reference: %s", qt_ctx_error(ctx));
            break;
        }
        memcpy(zr, yr->data, (size_t)(L * V) * sizeof *zr);
        qt_ctx_reset(ctx);
        qt_tensor *yc = qt_model_forward(ctx, cand, qt_tensor_from(ctx, QT_I32, 2, shape, ids));
        if (!yc) {
            st = QT_ERROR(qt_ctx_status(ctx), "compare: candidate: %s", qt_ctx_error(ctx));
            break;
        }
        const float *zc = yc->data;
        for (long j = first; j < L; j++) {
            long pos = begin + 1 + j; /* the token predicted */
            int64_t ar = log_softmax(zr + j * V, V, lp), ac = log_softmax(zc + j * V, V, lq);
            int32_t tg = text[pos];
            nll_r -= lp[tg];
            nll_c -= lq[tg];
            double kl = 0.0;
            for (int64_t v = 0; v < V; v++) kl += exp(lp[v]) * (lp[v] - lq[v]);
            kl = kl < 0.0 ? 0.0 : kl; /* rounding */
            kls[count++] = kl;
            kl_sum += kl;
            agree += ar == ac;
        }
    }
    if (st == QT_OK && count > 0) {
        out->tokens = count;
        out->ppl_ref = exp(nll_r / (double)count);
        out->ppl_cand = exp(nll_c / (double)count);
        out->kld_mean = kl_sum / (double)count;
        qsort(kls, (size_t)count, sizeof *kls, cmp_double);
        out->kld_max = kls[count - 1];
        out->kld_p99 = kls[(long)floor(0.99 * (double)(count - 1))];
        out->top1 = (double)agree / (double)count;
    }
done:
    qt_ctx_free(ctx);
    free(ids), free(lp), free(lq), free(kls), free(zr);
    return st;
}
