/*
 * linear.c - the plain Linear every architecture and every qt_linear_hook falls back to:
 * y = x w^T + b (nn.Linear, w (out, in)), or y = x w + b (GPT-2's Conv1D, w (in, out)).
 */
#include "qt_layers.h"

qt_tensor *qt_linear(qt_ctx *ctx, qt_tensor *x, qt_tensor *w, qt_tensor *b, bool w_io) {
    qt_tensor *y = qt_matmul(ctx, x, w, false, !w_io);
    return b ? qt_add(ctx, y, b) : y;
}
