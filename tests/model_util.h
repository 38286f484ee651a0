/*
 * model_util.h - helpers the model tests share (header-only, tests only).
 */
#ifndef QT_TEST_MODEL_UTIL_H
#define QT_TEST_MODEL_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qt_formats.h"
#include "qt_layers.h"

/* Logits of model m on the fixture ids (B, T), grad mode off. Returns a malloc'd copy
 * (B*T*V floats) and sets *numel; NULL (with the reason printed) on failure. */
static inline float *qt_test_run_logits(qt_model *m, const qt_st_tensor *ids, int64_t *numel) {
    qt_ctx *ctx = qt_ctx_new();
    qt_ctx_set_grad_enabled(ctx, false);
    qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, ids->shape, ids->data);
    qt_tensor *y = qt_model_forward(ctx, m, x);
    float *out = NULL;
    if (!y) {
        printf("forward failed: %s\n", qt_ctx_error(ctx));
    } else {
        *numel = qt_numel(y);
        out = malloc((size_t)*numel * sizeof *out);
        memcpy(out, y->data, (size_t)*numel * sizeof *out);
    }
    qt_ctx_free(ctx);
    return out;
}

#endif
