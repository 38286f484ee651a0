/*
 * tensor.c - dtypes and their conversions, tensor shape helpers, the context (arena,
 * tape storage, grad mode, sticky status) and arena tensors.
 *
 * bf16/f16 conversions round to nearest even as torch's .to() does; NaN stays NaN.
 */
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cblas.h>

#include "internal.h"

static const size_t dtype_sizes[QT_DTYPE_COUNT] = {4, 2, 2, 1, 1, 4};
static const char *const dtype_names[QT_DTYPE_COUNT] = {"f32", "bf16", "f16", "i8", "u8", "i32"};

size_t qt_dtype_size(qt_dtype t) { return (unsigned)t < QT_DTYPE_COUNT ? dtype_sizes[t] : 0; }
const char *qt_dtype_name(qt_dtype t) {
    return (unsigned)t < QT_DTYPE_COUNT ? dtype_names[t] : "?";
}

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t qt_f32_to_bf16(float x) {
    uint32_t u = f2u(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float qt_bf16_to_f32(uint16_t x) { return u2f((uint32_t)x << 16); }

uint16_t qt_f32_to_f16(float x) {
    uint32_t u = f2u(x);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);     /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);    /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {                                       /* subnormal or zero in f16 */
        /* value * 2^24 rounded to nearest even gives the subnormal mantissa */
        float v = u2f(a) * 16777216.0f; /* exact: power-of-two scale */
        uint32_t m = (uint32_t)v;
        float rem = v - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1u))) m++;
        return (uint16_t)(sign | m);
    }
    uint32_t mant = a & 0x7fffffu;
    uint32_t exp = (a >> 23) - 127 + 15;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; /* may carry into exponent: ok */
    return (uint16_t)(sign | h);
}

float qt_f16_to_f32(uint16_t x) {
    uint32_t sign = (uint32_t)(x & 0x8000u) << 16;
    uint32_t exp = (x >> 10) & 0x1fu;
    uint32_t mant = x & 0x3ffu;
    if (exp == 0) {
        float v = (float)mant * (1.0f / 16777216.0f); /* mant * 2^-24 */
        return sign ? -v : v;
    }
    if (exp == 31) return u2f(sign | 0x7f800000u | (mant << 13));
    return u2f(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

/* ------------------------------------------------------------------- shapes ---- */

int64_t qt_numel(const qt_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

int64_t qt_dim(const qt_tensor *t, int d) {
    if (d < 0) d += t->ndim;
    return (d >= 0 && d < t->ndim) ? t->shape[d] : 1;
}

bool qt_same_shape(const qt_tensor *a, const qt_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

const char *qt_shape_str(const qt_tensor *t, char *buf, size_t n) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

/* ------------------------------------------------------------------ context ---- */

/* Generations are unique across every context of the process (a context freed and
 * another allocated at its address must not look like the same step). */
static uint64_t next_generation(void) {
    static uint64_t counter;
    return __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
}

qt_ctx *qt_ctx_new(void) {
    qt_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return NULL;
    ctx->grad_enabled = true;
    ctx->generation = next_generation();
    ctx->dev = (qt_device){QT_DEV_CPU, 0};
    ctx->compute_dtype = QT_F32;
    return ctx;
}

void qt_ctx_free(qt_ctx *ctx) {
    if (!ctx) return;
    qt_arena_free(&ctx->arena);
    for (int k = 0; k < QT_DEV_KIND_COUNT; k++) qt_arena_free(&ctx->darena[k]);
    free(ctx->tape);
    free(ctx);
}

void qt_ctx_reset(qt_ctx *ctx) {
    qt_arena_reset(&ctx->arena);
    for (int k = 0; k < QT_DEV_KIND_COUNT; k++) qt_arena_reset(&ctx->darena[k]);
    ctx->generation = next_generation();
    ctx->tape_len = 0;
    ctx->status = QT_OK;
    ctx->error[0] = 0;
}

qt_status qt_ctx_status(const qt_ctx *ctx) { return ctx->status; }
uint64_t qt_ctx_generation(const qt_ctx *ctx) { return ctx->generation; }
const char *qt_ctx_error(const qt_ctx *ctx) { return ctx->error; }

bool qt_ctx_set_grad_enabled(qt_ctx *ctx, bool enabled) {
    bool old = ctx->grad_enabled;
    ctx->grad_enabled = enabled;
    return old;
}
bool qt_ctx_grad_enabled(const qt_ctx *ctx) { return ctx->grad_enabled; }
int qt_ctx_tape_len(const qt_ctx *ctx) { return ctx->tape_len; }
size_t qt_ctx_arena_bytes(const qt_ctx *ctx) { return ctx->arena.total; }
size_t qt_ctx_arena_peak(const qt_ctx *ctx) { return ctx->arena.peak; }
size_t qt_ctx_arena_peak_on(const qt_ctx *ctx, qt_device dev) {
    if (dev.kind == QT_DEV_CPU) return ctx->arena.peak;
    return (unsigned)dev.kind < QT_DEV_KIND_COUNT ? ctx->darena[dev.kind].peak : 0;
}

qt_tensor *qt_ctx_fail(qt_ctx *ctx, qt_status s, const char *file, int line,
                       const char *fmt, ...) {
    if (ctx->status != QT_OK) return NULL; /* keep the first error */
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    int n = snprintf(ctx->error, sizeof ctx->error, "%s:%d: ", base, line);
    if (n < 0 || (size_t)n >= sizeof ctx->error) n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->error + n, sizeof ctx->error - (size_t)n, fmt, ap);
    va_end(ap);
    ctx->status = s;
    qt_error_set(s, file, line, "%s", ctx->error + n);
    return NULL;
}

void *qt_ctx_alloc(qt_ctx *ctx, size_t bytes) {
    void *p = qt_arena_alloc(&ctx->arena, bytes);
    if (!p) QT_FAIL(ctx, QT_ENOMEM, "arena: cannot allocate %zu bytes", bytes);
    return p;
}

void *qt_ctx_alloc_on(qt_ctx *ctx, qt_device dev, size_t bytes) {
    if (dev.kind == QT_DEV_CPU) return qt_ctx_alloc(ctx, bytes);
    if ((unsigned)dev.kind >= QT_DEV_KIND_COUNT) {
        QT_FAIL(ctx, QT_EDEVICE, "arena: unknown device kind %d", (int)dev.kind);
        return NULL;
    }
    qt_arena *a = &ctx->darena[dev.kind];
    if (!a->be) a->be = qt_backend_get(dev.kind);
    if (!a->be) {
        QT_FAIL(ctx, QT_EDEVICE, "arena: device %s has no backend (qtrain built without "
                                 "it, or not initialised)", qt_device_name(dev));
        return NULL;
    }
    void *p = qt_arena_alloc(a, bytes);
    if (!p)
        QT_FAIL(ctx, QT_ENOMEM, "arena: cannot allocate %zu bytes on %s: %s", bytes,
                qt_device_name(dev), qt_error_message());
    return p;
}

void qt_ctx_set_device(qt_ctx *ctx, qt_device dev) { ctx->dev = dev; }
qt_device qt_ctx_device(const qt_ctx *ctx) { return ctx->dev; }
void qt_ctx_set_compute_dtype(qt_ctx *ctx, qt_dtype dt) { ctx->compute_dtype = dt; }
qt_dtype qt_ctx_compute_dtype(const qt_ctx *ctx) { return ctx->compute_dtype; }

/* ------------------------------------------------------------ arena tensors ---- */

qt_tensor *qt_tensor_new(qt_ctx *ctx, qt_dtype dtype, int ndim, const int64_t *shape) {
    return qt_tensor_new_on(ctx, ctx->dev, dtype, ndim, shape);
}

qt_tensor *qt_tensor_new_on(qt_ctx *ctx, qt_device dev, qt_dtype dtype, int ndim,
                            const int64_t *shape) {
    if (ctx->status != QT_OK) return NULL;
    if ((unsigned)dtype >= QT_DTYPE_COUNT)
        return QT_FAIL(ctx, QT_EDTYPE, "tensor_new: unknown dtype %d", (int)dtype);
    if (ndim < 0 || ndim > QT_MAX_DIMS)
        return QT_FAIL(ctx, QT_ESHAPE, "tensor_new: ndim must be 0..%d, got %d", QT_MAX_DIMS,
                       ndim);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return QT_FAIL(ctx, QT_ESHAPE, "tensor_new: dim %d is negative (%lld)", i,
                           (long long)shape[i]);
        if (shape[i] && n > INT64_MAX / shape[i])
            return QT_FAIL(ctx, QT_ESHAPE, "tensor_new: element count overflows");
        n *= shape[i];
    }
    qt_tensor *t = qt_ctx_alloc(ctx, sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    if ((uint64_t)n > SIZE_MAX / qt_dtype_size(dtype))
        return QT_FAIL(ctx, QT_ENOMEM, "tensor_new: %lld elements too many", (long long)n);
    t->data = qt_ctx_alloc_on(ctx, dev, (size_t)n * qt_dtype_size(dtype));
    if (!t->data) return NULL;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->dtype = dtype;
    t->device = dev;
    t->node = -1;
    return t;
}

qt_tensor *qt_tensor_zeros(qt_ctx *ctx, qt_dtype dtype, int ndim, const int64_t *shape) {
    qt_tensor *t = qt_tensor_new(ctx, dtype, ndim, shape);
    if (!t) return NULL;
    qt_status st = qt_device_zero(t->device, t->data, (size_t)qt_numel(t) * qt_dtype_size(dtype));
    if (st != QT_OK) return QT_FAIL(ctx, st, "tensor_zeros: %s", qt_error_message());
    return t;
}

qt_tensor *qt_tensor_from(qt_ctx *ctx, qt_dtype dtype, int ndim, const int64_t *shape,
                          const void *data) {
    qt_tensor *t = qt_tensor_new(ctx, dtype, ndim, shape);
    if (!t) return NULL;
    qt_status st = qt_device_copy(t->device, t->data, (qt_device){QT_DEV_CPU, 0}, data,
                                  (size_t)qt_numel(t) * qt_dtype_size(dtype));
    if (st != QT_OK) return QT_FAIL(ctx, st, "tensor_from: %s", qt_error_message());
    return t;
}

qt_tensor *qt_new_like_shape(qt_ctx *ctx, const qt_tensor *like, int ndim,
                             const int64_t *shape) {
    return qt_tensor_new_on(ctx, like->device, like->dtype == QT_BF16 ? QT_BF16 : QT_F32, ndim,
                            shape);
}

/* ------------------------------------------------------------------ threads ---- */

const char *qt_blas_corename(void) { return openblas_get_corename(); }

const char *qt_blas_better_coretype(void) {
    if (getenv("OPENBLAS_CORETYPE")) return NULL;
    const char *core = openblas_get_corename();
    if (!core || strcasecmp(core, "prescott") != 0) return NULL;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

void qt_blas_reexec_if_slow(char **argv) {
    const char *core = qt_blas_better_coretype();
    if (!core || getenv("QT_BLAS_REEXEC")) return; /* once: never loop */
    setenv("OPENBLAS_CORETYPE", core, 1);
    setenv("QT_BLAS_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE"); /* exec failed: carry on with the slower kernels */
}

void qt_set_num_threads(int n) {
    if (n < 1) n = 1;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int qt_get_num_threads(void) { return omp_get_max_threads(); }
