/*
 * ops_custom.c - ops defined outside the engine, as torch.autograd.Function: the caller
 * gives a forward and a backward (qt_custom_fn) and an opaque state. This is how the
 * layers above add their fused ops without the engine learning about them: qat/'s
 * fake-quant (the quantizer lives in ptq/, which the engine must not know) and lora/'s
 * dequantize-in-the-tile matmul. The node keeps the function table and the state in
 * a.custom; backward receives exactly the inputs forward saw.
 */
#include "internal.h"

static qt_status custom_fwd(qt_ctx *ctx, qt_node *n) {
    return n->a.custom.fn->forward(ctx, n->in, n->n_in, n->out, n->a.custom.state);
}

static qt_status custom_bwd(qt_ctx *ctx, qt_node *n) {
    return n->a.custom.fn->backward(ctx, n->in, n->n_in, n->out, n->a.custom.state);
}

const qt_op_def qt_opdef_custom = {
    .name = "custom",
    .forward = {[QT_DEV_CPU] = custom_fwd},
    .backward = {[QT_DEV_CPU] = custom_bwd},
};

qt_tensor *qt_custom(qt_ctx *ctx, const qt_custom_fn *fn, int n_in, qt_tensor *const *in,
                     int ndim, const int64_t *shape, void *state) {
    if (qt_ctx_status(ctx) != QT_OK) return NULL;
    if (!fn || !fn->name || !fn->forward || !fn->backward)
        return QT_FAIL(ctx, QT_EINVAL, "custom op: needs a name, a forward and a backward");
    if (n_in < 1 || n_in > QT_MAX_INPUTS)
        return QT_FAIL(ctx, QT_EINVAL, "%s: takes 1 to %d inputs, got %d", fn->name,
                       QT_MAX_INPUTS, n_in);
    if (!qt_check_inputs(ctx, fn->name, n_in, in)) return NULL;
    /* f32 whatever the inputs (the header's promise: callers' kernels write floats) */
    qt_tensor *out = qt_tensor_new_on(ctx, in[0]->device, QT_F32, ndim, shape);
    if (!out) return NULL;
    return qt_op_run_custom(ctx, fn, state, n_in, in, out);
}
