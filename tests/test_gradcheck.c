/*
 * test_gradcheck.c - every differentiable op's backward against central finite
 * differences.
 *
 * For a case y = f(x_0, x_1, ...), take L = sum_i w_i y_i with fixed random w; the
 * analytic grads come from qt_backward_from(y, w). For a sample of the elements of each
 * float input, the numeric grad is (L(x + h) - L(x - h)) / 2h with L accumulated in
 * double. The kernels themselves are f32, so h trades truncation error (O(h^2)) against
 * f32 rounding of L (about 6e-8 |L| / h): h = 1e-2 keeps both near 1e-5 for these O(1)
 * inputs, and the check is |fd - an| <= 2e-3 + 1e-2 |an|.
 *
 * The test also walks the op table and fails for any op that has a backward but no
 * case here, so a new op cannot land without its gradient check.
 */
#include <stdlib.h>
#include <string.h>

#include "qt_autograd.h"
#include "testutil.h"

#define H 1e-2
#define ATOL 2e-3
#define RTOL 1e-2
#define SAMPLES 24

#include "op_cases.h"

/* L = sum w_i y_i in double, from a fresh forward on the current input values */
static double eval_loss(qt_ctx *ctx, const gcase *c, qt_tensor **in, const float *w) {
    qt_ctx_set_grad_enabled(ctx, false);
    qt_tensor *y = c->f(ctx, in);
    qt_ctx_set_grad_enabled(ctx, true);
    if (!y) return NAN;
    double L = 0.0;
    const float *yd = y->data;
    for (int64_t i = 0; i < qt_numel(y); i++) L += (double)w[i] * yd[i];
    return L;
}

static void run_case(const gcase *c, uint64_t seed) {
    qt_ctx *ctx = qt_ctx_new();
    qt_tensor *in[MAXIN] = {0};
    for (int k = 0; k < c->n_in; k++) {
        bool is_int = c->int_range[k] > 0;
        in[k] = qt_tensor_new(ctx, is_int ? QT_I32 : QT_F32, c->ndim[k], c->shape[k]);
        if (!in[k]) break;
        for (int64_t i = 0; i < qt_numel(in[k]); i++) {
            uint64_t idx = (uint64_t)k << 32 | (uint64_t)i;
            if (is_int) {
                ((int32_t *)in[k]->data)[i] = (int32_t)(qt_rand_u64(seed, idx) % (uint64_t)c->int_range[k]);
            } else {
                float v = qt_rand_normal(seed, idx);
                if (c->offset[k] > 0) v = (v < 0 ? -1.0f : 1.0f) * (fabsf(v) + c->offset[k]);
                ((float *)in[k]->data)[i] = v;
            }
        }
        in[k]->requires_grad = !is_int;
    }
    qt_tensor *y = c->f(ctx, in);
    CHECK(y != NULL, "%s: forward failed: %s", c->name, qt_ctx_error(ctx));
    if (!y) {
        qt_ctx_free(ctx);
        return;
    }
    int64_t ny = qt_numel(y);
    float *w = malloc((size_t)ny * sizeof(float));
    for (int64_t i = 0; i < ny; i++) w[i] = qt_rand_normal(seed + 7, (uint64_t)i);
    qt_status st = qt_backward_from(ctx, y, w);
    CHECK(st == QT_OK, "%s: backward failed: %s", c->name, qt_error_message());
    double worst = 0.0;
    for (int k = 0; k < c->n_in && st == QT_OK; k++) {
        if (c->int_range[k] > 0) continue;
        float *x = in[k]->data;
        int64_t n = qt_numel(in[k]);
        float *an = malloc((size_t)n * sizeof(float));
        memcpy(an, in[k]->grad, (size_t)n * sizeof(float));
        int64_t step = n > SAMPLES ? n / SAMPLES : 1;
        for (int64_t i = (int64_t)(qt_rand_u64(seed, (uint64_t)k) % (uint64_t)step); i < n;
             i += step) {
            float x0 = x[i];
            x[i] = (float)(x0 + H);
            double lp = eval_loss(ctx, c, in, w);
            x[i] = (float)(x0 - H);
            double lm = eval_loss(ctx, c, in, w);
            x[i] = x0;
            double fd = (lp - lm) / (2 * H), a = an[i], err = fabs(fd - a);
            double excess = err / (ATOL + RTOL * fabs(a));
            if (excess > worst) worst = excess;
            CHECK(err <= ATOL + RTOL * fabs(a), "%s: d/d in%d[%lld]: analytic %.6g, numeric %.6g",
                  c->name, k, (long long)i, a, fd);
        }
        free(an);
    }
    printf("  %-24s worst error %.2f of tolerance\n", c->name, worst);
    free(w);
    qt_ctx_free(ctx);
}

/* cast rounds (a staircase), so finite differences say nothing about it; its backward
 * is the identity on the f32 grad (straight through, as torch's .to()), checked exactly,
 * along with the forward's rounding against qt_f32_to_bf16. */
static void check_cast(void) {
    qt_ctx *ctx = qt_ctx_new();
    int64_t shape[2] = {5, 7};
    float xs[35], w[35], back[35];
    for (int i = 0; i < 35; i++) {
        xs[i] = qt_rand_normal(77, (uint64_t)i) * 3.0f;
        w[i] = qt_rand_normal(78, (uint64_t)i);
    }
    qt_tensor *x = qt_tensor_from(ctx, QT_F32, 2, shape, xs);
    x->requires_grad = true;
    qt_tensor *b = qt_cast(ctx, x, QT_BF16);
    qt_tensor *y = qt_cast(ctx, b, QT_F32);
    CHECK(y && b->dtype == QT_BF16 && y->dtype == QT_F32, "cast: %s", qt_ctx_error(ctx));
    CHECK(qt_cast(ctx, x, QT_F32) == x, "cast to the same dtype must return the input");
    if (y && qt_backward_from(ctx, y, w) == QT_OK) {
        qt_tensor_read(y, back);
        for (int i = 0; i < 35; i++) {
            CHECK(back[i] == qt_bf16_to_f32(qt_f32_to_bf16(xs[i])), "cast: value %d", i);
            CHECK(x->grad[i] == w[i], "cast: grad %d is %g, want %g", i, x->grad[i], w[i]);
        }
    } else {
        CHECK(false, "cast: backward failed: %s", qt_error_message());
    }
    printf("  %-24s exact\n", "cast f32->bf16->f32");
    qt_ctx_free(ctx);
}

int main(void) {
    qt_set_num_threads(2);
    for (int i = 0; i < N_CASES; i++) run_case(&cases[i], 1000 + (uint64_t)i);
    check_cast();

    /* every op with a backward has at least one case above */
    for (int op = 0; op < QT_OP_COUNT; op++) {
        if (qt_op_is_nondifferentiable((qt_op)op)) continue;
        bool covered = op == QT_OP_CAST; /* check_cast */
        for (int i = 0; i < N_CASES; i++) covered |= cases[i].op == (qt_op)op;
        CHECK(covered, "op %s has a backward but no gradient check case", qt_op_name((qt_op)op));
    }
    return qt_test_finish("test_gradcheck");
}
