/*
 * linear.c - the plain Linear every architecture and every qt_linear_hook falls back to:
 * y = x w^T + b (nn.Linear, w (out, in)), or y = x w + b (GPT-2's Conv1D, w (in, out)).
 * The weight is cast to the activations' dtype (bf16 on the GPU); the bias is added as
 * it is (the add takes mixed dtypes on the GPU).
 */
#include "qt_layers.h"

qt_tensor *qt_linear(qt_ctx *ctx, qt_tensor *x, qt_tensor *w, qt_tensor *b, bool w_io) {
    /* f32 master weights meet bf16 activations as bf16 (cast each step; the grad flows
     * back to the f32 weight); with f32 activations this is the weight itself. A NULL x
     * fails the context in qt_matmul. */
    qt_tensor *y = qt_matmul(ctx, x, x ? qt_cast(ctx, w, x->dtype) : w, false, !w_io);
    return b ? qt_add(ctx, y, b) : y;
}
