/*
 * tape.c - recording ops and running them backward.
 *
 * The forward pass appends one node per op whose inputs need a grad (and only while
 * grad mode is on). Backward walks the tape in reverse from the loss, visiting only the
 * nodes the loss depends on. Grads of activations are allocated zeroed in the arena at
 * the start of each backward; parameter grads live in their qt_paramset and are only
 * ever added to, so k forward+backward calls accumulate k micro-batches.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* ---- the op profiler (qt_profile_enable): wall time per op, the device synchronised
 * before and after each kernel so the time is the kernel's own ----------------------- */
static bool prof_on;
static double prof_s[QT_OP_COUNT][2];
static long prof_calls[QT_OP_COUNT][2];

void qt_profile_enable(bool on) { prof_on = on; }

void qt_profile_reset(void) {
    memset(prof_s, 0, sizeof prof_s);
    memset(prof_calls, 0, sizeof prof_calls);
}

static double prof_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static qt_status prof_run(qt_kernel_fn fn, qt_ctx *ctx, qt_node *n, int dir) {
    if (!prof_on) return fn(ctx, n);
    qt_device_sync(n->out->device);
    double t0 = prof_now();
    qt_status st = fn(ctx, n);
    qt_device_sync(n->out->device);
    prof_s[n->op][dir] += prof_now() - t0;
    prof_calls[n->op][dir]++;
    return st;
}

void qt_profile_report(FILE *f, int steps) {
    if (steps < 1) steps = 1;
    double total = 0;
    for (int op = 0; op < QT_OP_COUNT; op++) total += prof_s[op][0] + prof_s[op][1];
    fprintf(f, "%-14s %10s %8s %10s %8s %7s   (ms per step, over %d steps)\n", "op", "forward",
            "calls", "backward", "calls", "share", steps);
    bool done[QT_OP_COUNT] = {0};
    for (int k = 0; k < QT_OP_COUNT; k++) {
        int best = -1;
        for (int op = 0; op < QT_OP_COUNT; op++)
            if (!done[op] && (best < 0 || prof_s[op][0] + prof_s[op][1] >
                                              prof_s[best][0] + prof_s[best][1]))
                best = op;
        done[best] = true;
        double t = prof_s[best][0] + prof_s[best][1];
        if (!prof_calls[best][0] && !prof_calls[best][1]) continue;
        fprintf(f, "%-14s %10.2f %8ld %10.2f %8ld %6.1f%%\n", qt_op_name((qt_op)best),
                1e3 * prof_s[best][0] / steps, prof_calls[best][0] / steps,
                1e3 * prof_s[best][1] / steps, prof_calls[best][1] / steps,
                total > 0 ? 100 * t / total : 0.0);
    }
    fprintf(f, "%-14s %10.2f ms per step in ops\n", "total", 1e3 * total / steps);
}

bool qt_check_inputs(qt_ctx *ctx, const char *op, int n, qt_tensor *const *ts) {
    if (ctx->status != QT_OK) return false;
    for (int i = 0; i < n; i++) {
        if (!ts[i]) {
            QT_FAIL(ctx, QT_EINVAL, "%s: input %d is NULL", op, i);
            return false;
        }
        /* bf16 activations are a GPU mode (f32 master weights, bf16 compute): every CUDA
         * kernel takes f32 or bf16; the CPU reference kernels take f32 only. */
        bool bf16_ok = ts[i]->device.kind != QT_DEV_CPU;
        if (ts[i]->dtype != QT_F32 && !(bf16_ok && ts[i]->dtype == QT_BF16)) {
            QT_FAIL(ctx, QT_EDTYPE, "%s: input %d must be f32%s, got %s", op, i,
                    bf16_ok ? " or bf16" : "", qt_dtype_name(ts[i]->dtype));
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

qt_tensor *qt_op_run(qt_ctx *ctx, qt_op op, int n_in, qt_tensor *const *in, qt_tensor *out,
                     const qt_op_attrs *a) {
    if (!out || ctx->status != QT_OK) return NULL;
    const qt_op_def *d = qt_op_get(op);
    qt_device_kind dev = out->device.kind;
    qt_kernel_fn fwd = qt_op_kernel(op, dev, false);
    if (!fwd)
        return QT_FAIL(ctx, QT_EDEVICE, "%s: no kernel on %s", d->name,
                       qt_device_name(out->device));

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

    qt_status st = prof_run(fwd, ctx, node, 0);
    if (st != QT_OK) {
        if (ctx->status == QT_OK)
            QT_FAIL(ctx, st, "%s: forward failed: %s",
                    op == QT_OP_CUSTOM ? node->a.custom.fn->name : d->name,
                    qt_error_message());
        return NULL;
    }
    if (record) {
        out->requires_grad = true;
        out->node = ctx->tape_len++;
    }
    return out;
}

qt_tensor *qt_op_run_custom(qt_ctx *ctx, const qt_custom_fn *fn, void *state, int n_in,
                            qt_tensor *const *in, qt_tensor *out) {
    qt_op_attrs a = {.custom = {fn, state}};
    return qt_op_run(ctx, QT_OP_CUSTOM, n_in, in, out, &a);
}

qt_kernel_fn qt_op_kernel(qt_op op, qt_device_kind dev, bool backward) {
    const qt_op_def *d = qt_op_get(op);
    if (!d || (unsigned)dev >= QT_DEV_KIND_COUNT) return NULL;
    if (dev == QT_DEV_CPU) return backward ? d->backward[dev] : d->forward[dev];
    const qt_backend *be = qt_backend_get(dev);
    if (!be) return NULL;
    return backward ? be->backward[op] : be->forward[op];
}

/* A zeroed f32 grad for t on its device (activation grads are per-backward). */
static qt_status zeroed_grad(qt_ctx *ctx, qt_tensor *t) {
    size_t bytes = (size_t)qt_numel(t) * sizeof(float);
    if (!t->grad) t->grad = qt_ctx_alloc_on(ctx, t->device, bytes);
    if (!t->grad) return ctx->status;
    return qt_device_zero(t->device, t->grad, bytes);
}

/* y->grad += dy (ones when dy is NULL). On a device it goes through the host: y is the
 * loss (one element) in every training step, so this costs two tiny copies. */
static qt_status seed_grad(qt_ctx *ctx, qt_tensor *y, const float *dy) {
    int64_t n = qt_numel(y);
    if (y->device.kind == QT_DEV_CPU) {
        for (int64_t i = 0; i < n; i++) y->grad[i] += dy ? dy[i] : 1.0f;
        return QT_OK;
    }
    float *h = qt_ctx_alloc(ctx, (size_t)n * sizeof(float));
    if (!h) return ctx->status;
    qt_status st = qt_tensor_read_grad(y, h);
    if (st != QT_OK) return st;
    for (int64_t i = 0; i < n; i++) h[i] += dy ? dy[i] : 1.0f;
    return qt_device_copy(y->device, y->grad, (qt_device){QT_DEV_CPU, 0}, h,
                          (size_t)n * sizeof(float));
}

void qt_ctx_set_grad_hook(qt_ctx *ctx, qt_grad_hook fn, void *user) {
    ctx->grad_hook = fn;
    ctx->grad_hook_user = user;
}

/* The parameters one backward pass reaches, each with the earliest reached node that
 * reads it (an open-addressing set keyed by the tensor's address, in the arena): once
 * backward has run that node, nothing left can add to the parameter's grad. */
typedef struct {
    qt_tensor **key;
    int *first; /* node index; -1 once the hook has fired */
    size_t cap; /* a power of two; 0 = no hook this pass */
} grad_ready;

static bool hooked_param(const qt_tensor *t) {
    return t && t->is_param && t->requires_grad && t->node < 0;
}

static size_t ready_slot(const grad_ready *r, const qt_tensor *t) {
    size_t h = ((uintptr_t)t >> 4) * 0x9e3779b97f4a7c15ULL;
    for (h &= r->cap - 1; r->key[h] && r->key[h] != t; h = (h + 1) & (r->cap - 1)) {
    }
    return h;
}

static qt_status grad_ready_init(qt_ctx *ctx, const bool *reach, int last, grad_ready *r) {
    size_t n = 0;
    for (int i = 0; i <= last; i++)
        if (reach[i]) n += (size_t)ctx->tape[i].n_in;
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    r->key = qt_ctx_alloc(ctx, cap * sizeof *r->key);
    r->first = qt_ctx_alloc(ctx, cap * sizeof *r->first);
    if (!r->key || !r->first) return ctx->status;
    memset(r->key, 0, cap * sizeof *r->key);
    r->cap = cap;
    for (int i = 0; i <= last; i++) { /* ascending: the first sighting is the earliest */
        if (!reach[i]) continue;
        const qt_node *nd = &ctx->tape[i];
        for (int k = 0; k < nd->n_in; k++) {
            if (!hooked_param(nd->in[k])) continue;
            size_t h = ready_slot(r, nd->in[k]);
            if (!r->key[h]) {
                r->key[h] = nd->in[k];
                r->first[h] = i;
            }
        }
    }
    return QT_OK;
}

/* After node i's backward: the hook for each parameter whose last contribution that was. */
static qt_status grad_ready_fire(qt_ctx *ctx, grad_ready *r, const qt_node *nd, int i) {
    for (int k = 0; k < nd->n_in; k++) {
        if (!hooked_param(nd->in[k])) continue;
        size_t h = ready_slot(r, nd->in[k]);
        if (r->first[h] != i) continue;
        r->first[h] = -1; /* an op reading the same parameter twice fires once */
        qt_status st = ctx->grad_hook(ctx->grad_hook_user, nd->in[k]);
        if (st != QT_OK) return st;
    }
    return QT_OK;
}

static qt_status backward_impl(qt_ctx *ctx, qt_tensor *y, const float *dy) {
    if (ctx->status != QT_OK)
        return QT_ERROR(ctx->status, "backward: context already failed: %s", ctx->error);
    if (!y) return QT_ERROR(QT_EINVAL, "backward: tensor is NULL");
    if (!y->requires_grad)
        return QT_ERROR(QT_ESTATE, "backward: the tensor does not require grad (no input "
                                   "requires grad, or grad mode was off)");
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
        qt_status st = zeroed_grad(ctx, o);
        if (st != QT_OK) return st;
        for (int k = 0; k < nd->n_in; k++) {
            qt_tensor *t = nd->in[k];
            if (!t || !t->requires_grad || t->grad || t->node >= 0) continue;
            if ((st = zeroed_grad(ctx, t)) != QT_OK) return st;
        }
    }
    if (last < 0 && !y->grad) { /* a leaf: its grad is just dy */
        if (y->is_param) return QT_ERROR(QT_ESTATE, "backward: parameter without grad slot");
        qt_status st = zeroed_grad(ctx, y);
        if (st != QT_OK) return st;
    }
    qt_status seed = seed_grad(ctx, y, dy);
    if (seed != QT_OK) return seed;
    grad_ready ready = {0};
    if (ctx->grad_hook && last >= 0) {
        qt_status st = grad_ready_init(ctx, reach, last, &ready);
        if (st != QT_OK) return st;
    }

    for (int i = last; i >= 0; i--) {
        if (!reach[i]) continue;
        qt_node *nd = &ctx->tape[i];
        const qt_op_def *d = qt_op_get(nd->op);
        qt_kernel_fn bw = qt_op_kernel(nd->op, nd->out->device.kind, true);
        if (!bw)
            return QT_ERROR(QT_ENOTSUP, "backward: op %s has no backward on this device",
                            d->name);
        qt_status st = prof_run(bw, ctx, nd, 1);
        if (st == QT_OK && ready.cap) st = grad_ready_fire(ctx, &ready, nd, i);
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
