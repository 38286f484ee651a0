/*
 * generate.c - sampling text from a model: softmax(logits / T) drawn with the seeded
 * counter-based generator (qt_rand_uniform), one token at a time over the last max_ctx
 * tokens, until EOS or n_new tokens. A bytes model samples bytes (ids < 256) only.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train_internal.h"

qt_status qt_generate(qt_ctx *ctx, qt_model *m, const qt_tokenizer *tok, const char *prompt,
                      int n_new, int max_ctx, float temperature, uint64_t seed, char **out) {
    *out = NULL;
    int32_t *p = NULL;
    size_t plen = 0;
    if (tok) {
        qt_status st = qt_tokenizer_encode(tok, prompt, strlen(prompt), QT_TOK_ADD_SPECIAL, &p, &plen);
        if (st != QT_OK) return st;
    }
    size_t cap = (tok ? plen : strlen(prompt)) + (size_t)n_new + 1;
    int32_t *toks = malloc(cap * sizeof(int32_t));
    if (!toks) {
        free(p);
        return QT_ERROR(QT_ENOMEM, "generate: out of memory");
    }
    size_t n = 0;
    if (tok) {
        memcpy(toks, p, plen * sizeof(int32_t));
        n = plen;
    } else {
        for (const char *c = prompt; *c; c++) toks[n++] = (unsigned char)*c;
    }
    free(p);
    if (n == 0) toks[n++] = tok && qt_tokenizer_bos(tok) >= 0 ? qt_tokenizer_bos(tok) : '\n';
    bool prev = qt_ctx_set_grad_enabled(ctx, false);
    qt_status st = QT_OK;
    int V = qt_model_vocab(m), Vs = tok ? V : (V < 256 ? V : 256); /* bytes: sample bytes only */
    int32_t eos = tok ? qt_tokenizer_eos(tok) : -1;
    for (int k = 0; k < n_new; k++) {
        size_t start = n > (size_t)max_ctx ? n - (size_t)max_ctx : 0;
        int64_t shape[2] = {1, (int64_t)(n - start)};
        qt_ctx_reset(ctx);
        qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, shape, toks + start);
        qt_tensor *lg = qt_cast(ctx, qt_model_forward(ctx, m, x), QT_F32);
        if (!lg) {
            st = QT_ERROR(qt_ctx_status(ctx), "generate: %s", qt_ctx_error(ctx));
            break;
        }
        float *last = qt_ctx_alloc(ctx, (size_t)V * sizeof(float)); /* logits cast to f32 */
        if (!last) {
            st = QT_ERROR(QT_ENOMEM, "generate: %s", qt_ctx_error(ctx));
            break;
        }
        st = qt_device_copy((qt_device){QT_DEV_CPU, 0}, last, lg->device,
                            (const float *)lg->data + (shape[1] - 1) * V, (size_t)V * sizeof(float));
        if (st != QT_OK) break;
        /* sample from softmax(logits / T) */
        float mx = -INFINITY;
        for (int v = 0; v < Vs; v++) mx = fmaxf(mx, last[v]);
        double z = 0.0;
        for (int v = 0; v < Vs; v++) z += exp((last[v] - mx) / temperature);
        double u = qt_rand_uniform(seed, (uint64_t)k) * z, acc = 0.0;
        int pick = Vs - 1;
        for (int v = 0; v < Vs; v++) {
            acc += exp((last[v] - mx) / temperature);
            if (acc >= u) {
                pick = v;
                break;
            }
        }
        toks[n++] = pick;
        if (pick == eos) break;
    }
    qt_ctx_set_grad_enabled(ctx, prev);
    if (st == QT_OK) {
        if (tok) {
            size_t len;
            st = qt_tokenizer_decode(tok, toks, n, QT_TOK_SKIP_SPECIAL, out, &len);
        } else {
            *out = malloc(n + 1);
            if (!*out) st = QT_ERROR(QT_ENOMEM, "generate: out of memory");
            else {
                for (size_t i = 0; i < n; i++) (*out)[i] = (char)toks[i];
                (*out)[n] = 0;
            }
        }
    }
    free(toks);
    return st;
}
