/*
 * optable.c - the one table of ops, indexed by qt_op. Each entry is defined next to
 * its kernels in the op family's file; the assert below breaks the build when an op is
 * added to the enum without a row here.
 */
#include "internal.h"

static const qt_op_def *const op_table[] = {
    [QT_OP_MATMUL] = &qt_opdef_matmul,
    [QT_OP_ADD] = &qt_opdef_add,
    [QT_OP_SUB] = &qt_opdef_sub,
    [QT_OP_MUL] = &qt_opdef_mul,
    [QT_OP_DIV] = &qt_opdef_div,
    [QT_OP_SCALE] = &qt_opdef_scale,
    [QT_OP_SUM] = &qt_opdef_sum,
    [QT_OP_MEAN] = &qt_opdef_mean,
    [QT_OP_RESHAPE] = &qt_opdef_reshape,
    [QT_OP_PERMUTE] = &qt_opdef_permute,
    [QT_OP_EMBEDDING] = &qt_opdef_embedding,
    [QT_OP_RMSNORM] = &qt_opdef_rmsnorm,
    [QT_OP_LAYERNORM] = &qt_opdef_layernorm,
    [QT_OP_SOFTMAX] = &qt_opdef_softmax,
    [QT_OP_ATTENTION] = &qt_opdef_attention,
    [QT_OP_ROPE] = &qt_opdef_rope,
    [QT_OP_SILU] = &qt_opdef_silu,
    [QT_OP_GELU] = &qt_opdef_gelu,
    [QT_OP_SWIGLU] = &qt_opdef_swiglu,
    [QT_OP_DROPOUT] = &qt_opdef_dropout,
    [QT_OP_CROSS_ENTROPY] = &qt_opdef_cross_entropy,
    [QT_OP_CUSTOM] = &qt_opdef_custom,
    [QT_OP_CAST] = &qt_opdef_cast,
};
_Static_assert(sizeof op_table / sizeof op_table[0] == QT_OP_COUNT,
               "every qt_op needs a row in op_table");
_Static_assert(QT_OP_COUNT == 23, "op count changed: update the table and its tests");

const qt_op_def *qt_op_get(qt_op op) {
    return (unsigned)op < QT_OP_COUNT ? op_table[op] : NULL;
}

const char *qt_op_name(qt_op op) {
    const qt_op_def *d = qt_op_get(op);
    return d && d->name ? d->name : "?";
}

bool qt_op_has_forward(qt_op op, qt_device_kind dev) { return qt_op_kernel(op, dev, false); }

bool qt_op_has_backward(qt_op op, qt_device_kind dev) { return qt_op_kernel(op, dev, true); }

bool qt_op_is_nondifferentiable(qt_op op) {
    const qt_op_def *d = qt_op_get(op);
    return d && d->nondifferentiable;
}
