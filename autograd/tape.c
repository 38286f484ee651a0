/*
 * tape.c - recording ops and running them backward.
 *
 * The forward pass appends one node per op whose inputs need a grad (and only while
 * grad mode is on). Backward walks the tape in reverse from the loss, visiting only the
 * nodes the loss depends on. Grads of activations are allocated zeroed in the arena at
 * the start of each backward; parameter grads live in their qt_paramset and are only
 * ever added to, so k forward+backward calls accumulate k micro-batches.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

bool qt_check_inputs(qt_ctx *ctx, const char *op, int n, qt_tensor *const *ts) {
    if (ctx->status != QT_OK) return false;
    for (int i = 0; i < n; i++) {
        if (!ts[i]) {
            QT_FAIL(ctx, QT_EINVAL, "%s: input %d is NULL", op, i);
            return false;
        }
        if (ts[i]->dtype != QT_F32) {
            QT_FAIL(ctx, QT_EDTYPE, "%s: input %d must be f32, got %s", op, i,
                    qt_dtype_name(ts[i]->dtype));
            return false;
        }
        if (ts[i]->device.kind != ts[0]->device.kind ||
            ts[i]->device.index != ts[0]->device.index) {
            QT_FAIL(ctx, QT_EDEVICE, "%s: inputs on different devices", op);
            return false;
        }
        if (!ts[i]->data && qt_numel(ts[i]) > 0) {
            QT_FAIL(ctx, QT_ESTATE, "%s: input %d has no data (parameters not allocated?)", op,
                    i);
            return false;
        }
    }
    return true;
}

static bool tape_reserve(qt_ctx *ctx) {
    if (ctx->tape_len < ctx->tape_cap) return true;
    int cap = ctx->tape_cap ? 2 * ctx->tape_cap : 256;
    qt_node *t = realloc(ctx->tape, (size_t)cap * sizeof *t);
    if (!t) return false;
    ctx->tape = t;
    ctx->tape_cap = cap;
    return true;
}

static qt_tensor *op_run(qt_ctx *ctx, qt_op op, const qt_custom_fn *fn, void *state, int n_in,
                         qt_tensor *const *in, qt_tensor *out, const qt_attrs *a) {
    if (!out || ctx->status != QT_OK) return NULL;
    const qt_op_def *d = qt_op_get(op);
    qt_device_kind dev = out->device.kind;
    if (!d->forward[dev])
        return QT_FAIL(ctx, QT_EDEVICE, "%s: no kernel for device kind %d", d->name, (int)dev);

    bool record = false;
    if (ctx->grad_enabled && !d->nondifferentiable)
        for (int i = 0; i < n_in; i++)
            if (in[i] && in[i]->requires_grad) record = true;

    qt_node local;
    qt_node *node = &local;
    if (record) {
        if (!tape_reserve(ctx)) return QT_FAIL(ctx, QT_ENOMEM, "%s: tape is full", d->name);
        node = &ctx->tape[ctx->tape_len];
    }
    memset(node, 0, sizeof *node);
    node->op = op;
    node->n_in = n_in;
    for (int i = 0; i < n_in; i++) node->in[i] = in[i];
    node->out = out;
    if (a) node->a = *a;
    node->custom = fn;
    if (fn) node->saved = state;

    qt_status st = d->forward[dev](ctx, node);
    if (st != QT_OK) {
        if (ctx->status == QT_OK)
            QT_FAIL(ctx, st, "%s: forward failed: %s", fn ? fn->name : d->name,
                    qt_error_message());
        return NULL;
    }
    if (record) {
        out->requires_grad = true;
        out->node = ctx->tape_len++;
    }
    return out;
}

qt_tensor *qt_op_run(qt_ctx *ctx, qt_op op, int n_in, qt_tensor *const *in, qt_tensor *out,
                     const qt_attrs *a) {
    return op_run(ctx, op, NULL, NULL, n_in, in, out, a);
}

qt_tensor *qt_op_run_custom(qt_ctx *ctx, const qt_custom_fn *fn, void *state, int n_in,
                            qt_tensor *const *in, qt_tensor *out, const qt_attrs *a) {
    return op_run(ctx, QT_OP_CUSTOM, fn, state, n_in, in, out, a);
}

static qt_status backward_impl(qt_ctx *ctx, qt_tensor *y, const float *dy) {
    if (ctx->status != QT_OK)
        return QT_ERROR(ctx->status, "backward: context already failed: %s", ctx->error);
    if (!y) return QT_ERROR(QT_EINVAL, "backward: tensor is NULL");
    if (!y->requires_grad)
        return QT_ERROR(QT_ESTATE, "backward: the tensor does not require grad (no input "
                                   "requires grad, or grad mode was off)");
    int64_t n = qt_numel(y);
    int last = y->node;
    if (last >= ctx->tape_len)
        return QT_ERROR(QT_ESTATE, "backward: tensor is from an earlier step (tape was reset)");

    /* nodes the output depends on */
    bool *reach = NULL;
    if (last >= 0) {
        reach = qt_ctx_alloc(ctx, (size_t)(last + 1));
        if (!reach) return ctx->status;
        memset(reach, 0, (size_t)(last + 1));
        reach[last] = true;
        for (int i = last; i >= 0; i--) {
            if (!reach[i]) continue;
            qt_node *nd = &ctx->tape[i];
            for (int k = 0; k < nd->n_in; k++)
                if (nd->in[k] && nd->in[k]->node >= 0) reach[nd->in[k]->node] = true;
        }
    }

    /* grads: fresh zeros for activations; leaves keep (accumulate) theirs */
    for (int i = last; i >= 0; i--) {
        if (!reach[i]) continue;
        qt_node *nd = &ctx->tape[i];
        qt_tensor *o = nd->out;
        if (!o->grad) o->grad = qt_ctx_alloc(ctx, (size_t)qt_numel(o) * sizeof(float));
        if (!o->grad) return ctx->status;
        memset(o->grad, 0, (size_t)qt_numel(o) * sizeof(float));
        for (int k = 0; k < nd->n_in; k++) {
            qt_tensor *t = nd->in[k];
            if (!t || !t->requires_grad || t->grad || t->node >= 0) continue;
            t->grad = qt_ctx_alloc(ctx, (size_t)qt_numel(t) * sizeof(float));
            if (!t->grad) return ctx->status;
            memset(t->grad, 0, (size_t)qt_numel(t) * sizeof(float));
        }
    }
    if (last < 0 && !y->grad) { /* a leaf: its grad is just dy */
        if (y->is_param) return QT_ERROR(QT_ESTATE, "backward: parameter without grad slot");
        y->grad = qt_ctx_alloc(ctx, (size_t)n * sizeof(float));
        if (!y->grad) return ctx->status;
        memset(y->grad, 0, (size_t)n * sizeof(float));
    }
    for (int64_t i = 0; i < n; i++) y->grad[i] += dy ? dy[i] : 1.0f;

    for (int i = last; i >= 0; i--) {
        if (!reach[i]) continue;
        qt_node *nd = &ctx->tape[i];
        const qt_op_def *d = qt_op_get(nd->op);
        qt_kernel_fn bw = d->backward[nd->out->device.kind];
        if (!bw)
            return QT_ERROR(QT_ENOTSUP, "backward: op %s has no backward on this device",
                            d->name);
        qt_status st = bw(ctx, nd);
        if (st != QT_OK) return st;
    }
    return QT_OK;
}

qt_status qt_backward(qt_ctx *ctx, qt_tensor *loss) {
    if (loss && qt_numel(loss) != 1) {
        char b[64];
        return QT_ERROR(QT_ESHAPE, "backward: loss must have one element, got shape %s",
                        qt_shape_str(loss, b, sizeof b));
    }
    return backward_impl(ctx, loss, NULL);
}

qt_status qt_backward_from(qt_ctx *ctx, qt_tensor *y, const float *dy) {
    if (!dy) return QT_ERROR(QT_EINVAL, "backward_from: dy is NULL");
    return backward_impl(ctx, y, dy);
}
