/*
 * test_optable.c - walks the op table: every op has a name (unique), a CPU forward, and
 * either a CPU backward or an explicit non-differentiable mark; a marked op has no
 * backward (the two must not contradict).
 */
#include <string.h>

#include "qt_autograd.h"
#include "testutil.h"

int main(void) {
    for (int i = 0; i < QT_OP_COUNT; i++) {
        qt_op op = (qt_op)i;
        const char *name = qt_op_name(op);
        CHECK(name && strcmp(name, "?") != 0, "op %d has no name", i);
        for (int j = 0; j < i; j++)
            CHECK(strcmp(name, qt_op_name((qt_op)j)) != 0, "op name %s used twice", name);
        CHECK(qt_op_has_forward(op, QT_DEV_CPU), "op %s has no CPU forward", name);
        bool bw = qt_op_has_backward(op, QT_DEV_CPU), nd = qt_op_is_nondifferentiable(op);
        CHECK(bw || nd, "op %s has neither a backward nor a non-differentiable mark", name);
        CHECK(!(bw && nd), "op %s is marked non-differentiable but has a backward", name);
    }
    CHECK(strcmp(qt_op_name(QT_OP_COUNT), "?") == 0, "out-of-range op must not resolve");
    return qt_test_finish("test_optable");
}
