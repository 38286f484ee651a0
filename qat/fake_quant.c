/*
 * fake_quant.c - the fake-quant ops of QAT, as caller-defined autograd ops (qt_custom):
 *   - weights through the quantizer core's fake_quant (ptq/), STE with its clip mask;
 *   - activations, dynamic per token or static per tensor, intN;
 *   - LSQ learnable scale / zero point (torch._fake_quantize_learnable_per_channel_affine).
 * The STE follows torch.fake_quantize_per_channel_affine: the gradient passes where
 * rint(x / s) + z lies in [qmin, qmax] and is zero elsewhere.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "qt_qat.h"
#ifdef QT_HAVE_CUDA
#include "qt_cuda_quant.h"
#endif

/* GPU dispatch: a tensor on QT_DEV_CUDA runs cuda/quant.cu (bit-identical to the CPU). */
static inline bool on_gpu(const qt_tensor *t) { return t->device.kind == QT_DEV_CUDA; }
#ifndef QT_HAVE_CUDA
#define NO_CUDA(what) QT_ERROR(QT_EDEVICE, "%s: tensor on the GPU but qtrain was built without CUDA", what)
#endif

/* A mask of n bytes on t's device: arena memory on the CPU; on the GPU an arena tensor
 * of that device (qt_ctx_alloc_on is not public), f32 elements covering n bytes. */
static uint8_t *mask_alloc(qt_ctx *ctx, const qt_tensor *t, int64_t n) {
    if (!on_gpu(t)) return qt_ctx_alloc(ctx, (size_t)n);
    qt_device prev = qt_ctx_device(ctx);
    qt_ctx_set_device(ctx, t->device);
    int64_t shape[1] = {(n + 3) / 4 > 0 ? (n + 3) / 4 : 1};
    qt_tensor *m = qt_tensor_new(ctx, QT_F32, 1, shape);
    qt_ctx_set_device(ctx, prev);
    return m ? m->data : NULL;
}

/* ------------------------------------------------------------------ weights ---- */

typedef struct {
    qt_qformat f;
    uint8_t *mask; /* (numel) 1 where the gradient passes */
} weight_state;

static qt_status weight_fwd(qt_ctx *ctx, qt_tensor *const *in, int n_in, qt_tensor *out,
                            void *state) {
    weight_state *s = state;
    const qt_tensor *w = in[0];
    if (on_gpu(w)) {
#ifdef QT_HAVE_CUDA
        return qt_cuda_fake_quant(&s->f, w->data, w->shape[0], w->shape[1], out->data, s->mask);
#else
        return NO_CUDA("fake_quant_weight");
#endif
    }
    return qt_fake_quant(&s->f, w->data, w->shape[0], w->shape[1], out->data, s->mask);
}

/* The straight-through estimator: dx += dy where the mask lets it through. */
static qt_status ste_backward(qt_tensor *x, const qt_tensor *out, const uint8_t *mask) {
    float *dx = x->grad;
    const float *dy = out->grad;
    if (!dx) return QT_OK;
    int64_t n = qt_numel(out);
    if (on_gpu(out)) {
#ifdef QT_HAVE_CUDA
        return qt_cuda_ste_backward(dx, dy, mask, n);
#else
        return NO_CUDA("fake_quant backward");
#endif
    }
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) dx[i] += mask[i] ? dy[i] : 0.0f;
    return QT_OK;
}

static qt_status weight_bwd(qt_ctx *ctx, qt_tensor *const *in, int n_in, qt_tensor *out,
                            void *state) {
    return ste_backward(in[0], out, ((weight_state *)state)->mask);
}

static const qt_custom_fn weight_fn = {"fake_quant_weight", weight_fwd, weight_bwd};

qt_tensor *qt_fake_quant_weight(qt_ctx *ctx, qt_tensor *w, const qt_qformat *f) {
    if (qt_ctx_status(ctx) != QT_OK) return NULL;
    if (!w || w->ndim != 2)
        return QT_CTX_FAIL(ctx, QT_ESHAPE, "fake_quant_weight: %s must be a matrix",
                           w && w->name ? w->name : "the weight");
    if (qt_qformat_check(f, w->shape[0], w->shape[1]) != QT_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", qt_error_message());
        return QT_CTX_FAIL(ctx, QT_EINVAL, "fake_quant_weight: %s: %s",
                           w->name ? w->name : "weight", why);
    }
    weight_state *s = qt_ctx_alloc(ctx, sizeof *s);
    uint8_t *mask = mask_alloc(ctx, w, qt_numel(w));
    if (!s || !mask) return NULL;
    s->f = *f;
    s->mask = mask;
    return qt_custom(ctx, &weight_fn, 1, &w, 2, w->shape, s);
}

/* -------------------------------------------------------------- activations ---- */

typedef struct {
    int bits;
    bool symmetric, dynamic;
    float scale; /* static */
    int zero;
    uint8_t *mask;
} act_state;

/* One row (or the whole tensor) with a given scale / zero point: y = (q - z) s. A
 * non-finite x passes through (so the loss sees it), with the gradient. */
static void act_row(const float *x, float *y, uint8_t *mask, int64_t n, float s, int z,
                    int bits) {
    float inv = 1.0f / s, hi = (float)((1 << bits) - 1);
    for (int64_t j = 0; j < n; j++) {
        if (!isfinite(x[j])) {
            y[j] = x[j];
            mask[j] = 1;
            continue;
        }
        float r = rintf(x[j] * inv) + (float)z;
        mask[j] = r >= 0.0f && r <= hi;
        uint8_t q = qt_qint_code(x[j], inv, z, bits);
        y[j] = (float)((int)q - z) * s;
    }
}

static qt_status act_fwd(qt_ctx *ctx, qt_tensor *const *in, int n_in, qt_tensor *out,
                         void *state) {
    act_state *s = state;
    const qt_tensor *x = in[0];
    const float *xd = x->data;
    float *yd = out->data;
    if (on_gpu(x)) {
#ifdef QT_HAVE_CUDA
        int64_t c = x->ndim ? x->shape[x->ndim - 1] : 1;
        if (!s->dynamic) c = qt_numel(x);
        return qt_cuda_fake_quant_act(xd, c ? qt_numel(x) / c : 0, c, s->bits, s->symmetric,
                                      s->dynamic, s->scale, s->zero, yd, s->mask);
#else
        return NO_CUDA("fake_quant_act");
#endif
    }
    if (!s->dynamic) {
        act_row(xd, yd, s->mask, qt_numel(x), s->scale, s->zero, s->bits);
        return QT_OK;
    }
    int64_t cols = x->ndim ? x->shape[x->ndim - 1] : 1, rows = cols ? qt_numel(x) / cols : 0;
    qt_qformat f = {.kind = QT_QF_INT, .bits = s->bits, .symmetric = s->symmetric,
                    .gran = QT_QG_TENSOR, .scale_dtype = QT_F32};
#pragma omp parallel for schedule(static) if (rows * cols > 32768)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = xd + r * cols;
        float *yr = yd + r * cols;
        uint8_t *mr = s->mask + r * cols;
        bool finite = true;
        for (int64_t j = 0; j < cols; j++) finite &= isfinite(xr[j]) != 0;
        if (!finite) { /* NaN/Inf reach the loss; the loop's guard skips the step */
            memcpy(yr, xr, (size_t)cols * sizeof(float));
            memset(mr, 1, (size_t)cols);
            continue;
        }
        float sc;
        uint8_t z;
        qt_qint_params(&f, xr, cols, &sc, &z);
        act_row(xr, yr, mr, cols, sc, z, s->bits);
    }
    return QT_OK;
}

static qt_status act_bwd(qt_ctx *ctx, qt_tensor *const *in, int n_in, qt_tensor *out,
                         void *state) {
    return ste_backward(in[0], out, ((act_state *)state)->mask);
}

static const qt_custom_fn act_fn = {"fake_quant_act", act_fwd, act_bwd};

static qt_tensor *act_make(qt_ctx *ctx, qt_tensor *x, act_state *tmpl) {
    if (qt_ctx_status(ctx) != QT_OK) return NULL;
    if (!x) return QT_CTX_FAIL(ctx, QT_EINVAL, "fake_quant_act: input is NULL");
    if (tmpl->bits < 2 || tmpl->bits > 8)
        return QT_CTX_FAIL(ctx, QT_EINVAL, "fake_quant_act: bits must be 2..8, got %d", tmpl->bits);
    act_state *s = qt_ctx_alloc(ctx, sizeof *s);
    uint8_t *mask = mask_alloc(ctx, x, qt_numel(x));
    if (!s || !mask) return NULL;
    *s = *tmpl;
    s->mask = mask;
    /* the quantizer reads and writes f32: bf16 activations (the GPU mode) go through f32
     * and come back in their dtype */
    qt_dtype dt = x->dtype;
    qt_tensor *x32 = qt_cast(ctx, x, QT_F32);
    if (!x32) return NULL;
    return qt_cast(ctx, qt_custom(ctx, &act_fn, 1, &x32, x32->ndim, x32->shape, s), dt);
}

qt_tensor *qt_fake_quant_act_dynamic(qt_ctx *ctx, qt_tensor *x, int bits, bool symmetric) {
    act_state t = {.bits = bits, .symmetric = symmetric, .dynamic = true};
    return act_make(ctx, x, &t);
}

qt_tensor *qt_fake_quant_act_static(qt_ctx *ctx, qt_tensor *x, float scale, int zero, int bits) {
    if (qt_ctx_status(ctx) == QT_OK && (bits < 2 || bits > 8))
        return QT_CTX_FAIL(ctx, QT_EINVAL, "fake_quant_act: bits must be 2..8, got %d", bits);
    if (qt_ctx_status(ctx) == QT_OK && (!(scale > 0.0f) || !isfinite(scale) || zero < 0 ||
                                        zero > (1 << bits) - 1))
        return QT_CTX_FAIL(ctx, QT_EINVAL,
                           "fake_quant_act: scale must be positive and finite and the zero "
                           "point in [0, %d], got %g and %d", (1 << bits) - 1, (double)scale, zero);
    act_state t = {.bits = bits, .dynamic = false, .scale = scale, .zero = zero};
    return act_make(ctx, x, &t);
}

/* ---------------------------------------------------------------------- LSQ ---- */

typedef struct {
    int qmin, qmax;
    float grad_factor;
} lsq_state;

/* The scale the op computes with: the quantizer core's rule (a scale whose reciprocal
 * is not finite becomes FLT_EPSILON), extended to scales an optimizer step pushed to or
 * below zero (torch would divide by them); convert applies the same rule. The trainer
 * also clamps the stored values (qt_qat_after_step), as torch's LearnableFakeQuantize. */
static inline float lsq_scale(float s) { return s > 0.0f && isfinite(1.0f / s) ? s : FLT_EPSILON; }

/* torch's _get_rounded_zero_point: rint, then clamp to [qmin, qmax] */
static float lsq_zero(const qt_tensor *zp, int64_t c, int qmin, int qmax) {
    if (!zp) return 0.0f;
    float z = rintf(((const float *)zp->data)[c]);
    return z < (float)qmin ? (float)qmin : (z > (float)qmax ? (float)qmax : z);
}

static qt_status lsq_fwd(qt_ctx *ctx, qt_tensor *const *in, int n_in, qt_tensor *out,
                         void *state) {
    const lsq_state *s = state;
    const qt_tensor *x = in[0], *sc = in[1], *zp = n_in > 2 ? in[2] : NULL;
    int64_t C = qt_numel(sc), K = qt_numel(x) / C;
    const float *xd = x->data, *sd = sc->data;
    float *yd = out->data;
    for (int64_t c = 0; c < C; c++) {
        float scale = lsq_scale(sd[c]), inv = 1.0f / scale, z = lsq_zero(zp, c, s->qmin, s->qmax);
        for (int64_t k = 0; k < K; k++) {
            /* torch fake_quantize_per_channel_affine: clamp(rint(x * inv) + z) */
            float q = rintf(xd[c * K + k] * inv) + z;
            q = q < (float)s->qmin ? (float)s->qmin : (q > (float)s->qmax ? (float)s->qmax : q);
            yd[c * K + k] = (q - z) * scale;
        }
    }
    return QT_OK;
}

static qt_status lsq_bwd(qt_ctx *ctx, qt_tensor *const *in, int n_in, qt_tensor *out,
                         void *state) {
    const lsq_state *s = state;
    qt_tensor *x = in[0], *sc = in[1], *zp = n_in > 2 ? in[2] : NULL;
    int64_t C = qt_numel(sc), K = qt_numel(x) / C;
    const float *xd = x->data, *sd = sc->data, *dy = out->grad;
    float g = s->grad_factor;
    for (int64_t c = 0; c < C; c++) {
        float scale = lsq_scale(sd[c]), inv = 1.0f / scale, z = lsq_zero(zp, c, s->qmin, s->qmax);
        float small = (float)s->qmin - z, big = (float)s->qmax - z;
        double ds = 0.0, dz = 0.0;
        for (int64_t k = 0; k < K; k++) {
            int64_t i = c * K + k;
            /* torch's learnable backward rounds z + x * inv in one go */
            float xq = rintf(z + xd[i] * inv);
            bool inside = xq >= (float)s->qmin && xq <= (float)s->qmax;
            if (x->grad && inside) x->grad[i] += dy[i];
            if (inside) {
                float xfq = (xq - z) * scale;
                ds += (double)(dy[i] * (xfq - xd[i]) * inv * g);
            } else {
                ds += (double)((xq < (float)s->qmin ? dy[i] * small : dy[i] * big) * g);
                dz += (double)(dy[i] * -1.0f * scale * g);
            }
        }
        if (sc->grad) sc->grad[c] += (float)ds;
        if (zp && zp->grad) zp->grad[c] += (float)dz;
    }
    return QT_OK;
}

static const qt_custom_fn lsq_fn = {"fake_quant_lsq", lsq_fwd, lsq_bwd};

qt_tensor *qt_fake_quant_lsq(qt_ctx *ctx, qt_tensor *x, qt_tensor *scale, qt_tensor *zero_point,
                             int qmin, int qmax, float grad_factor) {
    if (qt_ctx_status(ctx) != QT_OK) return NULL;
    if (!x || !scale) return QT_CTX_FAIL(ctx, QT_EINVAL, "fake_quant_lsq: x and scale are required");
    int64_t C = qt_numel(scale);
    if (C < 1 || qt_numel(x) % C || (zero_point && qt_numel(zero_point) != C))
        return QT_CTX_FAIL(ctx, QT_ESHAPE,
                           "fake_quant_lsq: x (%lld elements) must split into one group per "
                           "scale (%lld), and zero_point must match scale",
                           (long long)qt_numel(x), (long long)C);
    if (qmin >= qmax) return QT_CTX_FAIL(ctx, QT_EINVAL, "fake_quant_lsq: qmin must be < qmax");
    if (on_gpu(x) || on_gpu(scale) || (zero_point && on_gpu(zero_point)))
        return QT_CTX_FAIL(ctx, QT_ENOTSUP, "fake_quant_lsq: learnable scales (LSQ) are not "
                           "implemented on the GPU; train LSQ on the CPU");
    const float *sd = scale->data, *zd = zero_point ? zero_point->data : NULL;
    for (int64_t c = 0; c < C; c++)
        if (!isfinite(sd[c]) || (zd && !isfinite(zd[c])))
            return QT_CTX_FAIL(ctx, QT_ENUMERIC, "fake_quant_lsq: scale[%lld] = %g, zero_point = %g: "
                               "not finite", (long long)c, (double)sd[c], zd ? (double)zd[c] : 0.0);
    lsq_state *s = qt_ctx_alloc(ctx, sizeof *s);
    if (!s) return NULL;
    s->qmin = qmin;
    s->qmax = qmax;
    s->grad_factor = grad_factor;
    qt_tensor *in[3] = {x, scale, zero_point};
    return qt_custom(ctx, &lsq_fn, zero_point ? 3 : 2, in, x->ndim, x->shape, s);
}
