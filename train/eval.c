/*
 * eval.c - what a model predicts of a text: its tokens read from a file, the sliding
 * windows of a perplexity (the method of HF's perplexity guide, "Perplexity of
 * fixed-length models"), and the perplexity itself. `qtrain eval` and the parity report
 * (compare.c) walk the same windows, so they score the same tokens.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train_internal.h"

qt_status qt_read_tokens(const char *path, const qt_tokenizer *tok, int32_t **ids, size_t *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    char *text = NULL;
    size_t n = 0;
    qt_status st = qt_read_file(path, 0, &text, &n);
    if (st != QT_OK) return st;
    if (n < 2) {
        free(text);
        return QT_ERROR(QT_EINVAL, "%s: needs at least 2 bytes of text", path);
    }
    if (tok) {
        st = qt_tokenizer_encode(tok, text, n, QT_TOK_ADD_SPECIAL, ids, n_ids);
    } else {
        *ids = malloc(n * sizeof(int32_t));
        if (*ids) for (size_t i = 0; i < n; i++) (*ids)[i] = (unsigned char)text[i];
        else st = QT_ERROR(QT_ENOMEM, "%s: out of memory", path);
        *n_ids = n;
    }
    free(text);
    if (st == QT_OK && *n_ids < 2) st = QT_ERROR(QT_EINVAL, "%s: fewer than 2 tokens", path);
    if (st != QT_OK) {
        free(*ids);
        *ids = NULL;
        *n_ids = 0;
    }
    return st;
}

void qt_ppl_windows_init(qt_ppl_windows *w, long n, long ctx, long stride) {
    *w = (qt_ppl_windows){.n = n, .ctx = ctx, .stride = stride};
    w->done = n < 2 || ctx < 1 || stride < 1;
}

bool qt_ppl_windows_next(qt_ppl_windows *w, long *begin, long *len, long *first) {
    if (w->done || w->begin >= w->n - 1) return false;
    long b = w->begin, end = b + w->ctx + 1 < w->n ? b + w->ctx + 1 : w->n; /* tokens [b, end) */
    *begin = b;
    *len = end - b - 1;
    /* prediction j is of token b + 1 + j: scored unless the previous window did */
    *first = w->prev_end > b + 1 ? w->prev_end - b - 1 : 0;
    w->prev_end = end;
    w->begin = b + w->stride;
    w->done = end == w->n;
    return true;
}

qt_status qt_eval_perplexity(qt_model *m, const int32_t *text, long n, long ctxlen, long stride,
                             qt_ppl_result *out) {
    memset(out, 0, sizeof *out);
    qt_ctx *ctx = qt_ctx_new();
    int32_t *ids = malloc((size_t)ctxlen * sizeof(int32_t)), *tg = malloc((size_t)ctxlen * sizeof(int32_t));
    if (!ctx || !ids || !tg) {
        qt_ctx_free(ctx);
        free(ids);
        free(tg);
        return QT_ERROR(QT_ENOMEM, "eval: out of memory");
    }
    qt_ctx_set_grad_enabled(ctx, false);
    double nll = 0.0;
    long count = 0, begin, L, first;
    qt_status st = QT_OK;
    qt_ppl_windows w;
    qt_ppl_windows_init(&w, n, ctxlen, stride);
    while (qt_ppl_windows_next(&w, &begin, &L, &first)) {
        for (long j = 0; j < L; j++) {
            ids[j] = text[begin + j];
            tg[j] = j >= first ? text[begin + 1 + j] : -100;
        }
        long scored = L - first;
        qt_ctx_reset(ctx);
        int64_t shape[2] = {1, L};
        qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, shape, ids);
        qt_tensor *y = qt_tensor_from(ctx, QT_I32, 2, shape, tg);
        qt_tensor *l = qt_cross_entropy(ctx, qt_model_forward(ctx, m, x), y, -100);
        if (!l) {
            st = QT_ERROR(qt_ctx_status(ctx), "eval: %s", qt_ctx_error(ctx));
            break;
        }
        nll += (double)((float *)l->data)[0] * (double)scored;
        count += scored;
    }
    out->tokens = count;
    out->nll = nll;
    out->ppl = count ? exp(nll / (double)count) : NAN;
    qt_ctx_free(ctx);
    free(ids);
    free(tg);
    return st;
}
