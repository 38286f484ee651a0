/*
 * quant_int.c - integer quantization (int2..int8) as qt_quant.h defines it.
 *
 * Scales follow torch.ao's observers: symmetric s = amax / ((2^N - 1) / 2) (int4: amax /
 * 7.5, torch.ao.quantization.observer._calculate_qparams with the unsigned range
 * [0, 2^N - 1] and zero point 2^(N-1)); asymmetric s = (max' - min') / (2^N - 1),
 * z = clamp(-round(min' / s), 0, 2^N - 1) with min' <= 0 <= max' (GPTQ / MinMaxObserver).
 * Codes as torch.fake_quantize_per_channel_affine: inv = 1.0f / s, q = clamp(rint(w * inv)
 * + z, 0, 2^N - 1) (rint: round half to even), dequantized (q - z) * s.
 *
 * Surprises:
 *   - s is rounded to the scale dtype (f16/bf16) BEFORE the codes and the zero point are
 *     computed, so the stored scale is exactly the one the codes were made with.
 *   - a scale of 0 (all-zero group, or a scale that underflows in its dtype, e.g. an f16
 *     scale of a group with amax ~1e-30), or one whose reciprocal overflows (amax ~1e-39
 *     with f32/bf16 scales), becomes FLT_EPSILON rounded to the dtype (torchao
 *     clamps scales to eps), so the group dequantizes to exact zeros. Unlike torch.ao's
 *     observer, non-zero scales below FLT_EPSILON are kept.
 *   - a scale that is not finite after rounding (f16 above 65504: amax > ~491k for
 *     int4 sym) is QT_ENUMERIC naming the group, never a silent inf.
 *
 * Every granularity is a run of L contiguous elements of the row-major matrix (tensor:
 * L = rows*cols, channel: L = cols, group: L = G, which divides cols).
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant_internal.h"

static float round_to_dtype(float x, qt_dtype t) {
    if (t == QT_F16) return qt_f16_to_f32(qt_f32_to_f16(x));
    if (t == QT_BF16) return qt_bf16_to_f32(qt_f32_to_bf16(x));
    return x;
}

static int64_t group_len(const qt_qformat *f, int64_t rows, int64_t cols) {
    if (f->gran == QT_QG_GROUP) return f->group_size;
    if (f->gran == QT_QG_CHANNEL) return cols;
    return rows * cols;
}

static void params_from_minmax(const qt_qformat *f, float mn, float mx, float *scale,
                               uint8_t *zero) {
    const int qmax = (1 << f->bits) - 1;
    mn = mn < 0.0f ? mn : 0.0f; /* min' = min(min, 0), max' = max(max, 0) */
    mx = mx > 0.0f ? mx : 0.0f;
    float s;
    if (f->symmetric) {
        float amax = -mn > mx ? -mn : mx;
        s = amax / ((float)qmax / 2.0f); /* int4: amax / 7.5 */
    } else {
        s = (mx - mn) / (float)qmax;
    }
    s = round_to_dtype(s, f->scale_dtype);
    /* 0, or so small that 1/s overflows (f32/bf16 scales of ~1e-39): w * (1/s) would be
     * 0 * inf = NaN for a zero weight */
    if (s == 0.0f || (isfinite(s) && !isfinite(1.0f / s)))
        s = round_to_dtype(FLT_EPSILON, f->scale_dtype);
    *scale = s;
    if (f->symmetric) {
        *zero = (uint8_t)(1 << (f->bits - 1));
    } else if (!isfinite(s)) {
        *zero = 0;
    } else {
        float z = -rintf(mn / s);
        z = z < 0.0f ? 0.0f : (z > (float)qmax ? (float)qmax : z);
        *zero = (uint8_t)z;
    }
}

void qt_qint_params(const qt_qformat *f, const float *x, int64_t n, float *scale,
                    uint8_t *zero) {
    float mn = 0.0f, mx = 0.0f; /* min' <= 0 <= max' whatever x holds */
    for (int64_t i = 0; i < n; i++) {
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
    }
    params_from_minmax(f, mn, mx, scale, zero);
}

/* Scales and zero points of every group; QT_ENUMERIC for a scale that is not finite. */
static qt_status all_params(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                            float *scales, uint8_t *zeros) {
    const int64_t L = group_len(f, rows, cols), ng = rows * cols / L;
    if (ng == 1) { /* per tensor: parallel min/max over the whole matrix */
        float mn = 0.0f, mx = 0.0f;
        const int64_t n = rows * cols;
#pragma omp parallel for reduction(min : mn) reduction(max : mx) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            mn = w[i] < mn ? w[i] : mn;
            mx = w[i] > mx ? w[i] : mx;
        }
        params_from_minmax(f, mn, mx, &scales[0], &zeros[0]);
    } else {
#pragma omp parallel for schedule(static)
        for (int64_t g = 0; g < ng; g++) qt_qint_params(f, w + g * L, L, &scales[g], &zeros[g]);
    }
    for (int64_t g = 0; g < ng; g++) {
        if (!isfinite(scales[g])) {
            int64_t e = g * L;
            return QT_ERROR(QT_ENUMERIC,
                            "int%d: the scale of the group at (row %lld, col %lld) overflows %s "
                            "(the weights' range is too large for this scale dtype%s)",
                            f->bits, (long long)(e / cols), (long long)(e % cols),
                            qt_dtype_name(f->scale_dtype),
                            f->scale_dtype == QT_F16 ? ", f16 max 65504" : "");
        }
    }
    return QT_OK;
}

/* Runs body(i, g) over every element, parallel over rows; g is i's group. */
#define FOR_EACH_ELEMENT(rows, cols, L, body)                                   \
    _Pragma("omp parallel for schedule(static)")                               \
    for (int64_t r = 0; r < (rows); r++) {                                      \
        int64_t step_ = (L) < (cols) ? (L) : (cols);                            \
        for (int64_t c0 = 0; c0 < (cols); c0 += step_) {                        \
            int64_t i0_ = r * (cols) + c0, g = i0_ / (L);                       \
            for (int64_t i = i0_; i < i0_ + step_; i++) { body; }               \
        }                                                                       \
    }

qt_status qt_int_quantize(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                          qt_qtensor *out) {
    const int64_t L = group_len(f, rows, cols), ng = rows * cols / L;
    out->fmt = *f;
    out->rows = rows;
    out->cols = cols;
    out->n_scales = ng;
    out->codes = malloc((size_t)(rows * cols));
    out->scales = malloc((size_t)ng * sizeof(float));
    out->zeros = malloc((size_t)ng);
    if (!out->codes || !out->scales || !out->zeros)
        return QT_ERROR(QT_ENOMEM, "int quantize: out of memory for %lld x %lld",
                        (long long)rows, (long long)cols);
    qt_status s = all_params(f, w, rows, cols, out->scales, out->zeros);
    if (s) return s;
    const float *sc = out->scales;
    const uint8_t *zp = out->zeros;
    uint8_t *codes = out->codes;
    const int bits = f->bits;
    FOR_EACH_ELEMENT(rows, cols, L, codes[i] = qt_qint_code(w[i], 1.0f / sc[g], zp[g], bits))
    if (f->symmetric) { /* z = 2^(N-1) is implied, not stored */
        free(out->zeros);
        out->zeros = NULL;
    }
    return QT_OK;
}

qt_status qt_int_dequantize(const qt_qtensor *q, float *out) {
    if (!q->codes || !q->scales)
        return QT_ERROR(QT_EINVAL, "int dequantize: tensor has no codes or scales");
    const int64_t rows = q->rows, cols = q->cols, L = group_len(&q->fmt, rows, cols);
    if (q->n_scales != rows * cols / L)
        return QT_ERROR(QT_EINVAL, "int dequantize: expected %lld scales, found %lld",
                        (long long)(rows * cols / L), (long long)q->n_scales);
    if (!q->fmt.symmetric && !q->zeros)
        return QT_ERROR(QT_EINVAL, "int dequantize: asymmetric tensor without zero points");
    const float *sc = q->scales;
    const uint8_t *zp = q->zeros, *codes = q->codes;
    const int zsym = 1 << (q->fmt.bits - 1);
    FOR_EACH_ELEMENT(rows, cols, L,
                     out[i] = (float)((int)codes[i] - (zp ? (int)zp[g] : zsym)) * sc[g])
    return QT_OK;
}

qt_status qt_int_fake_quant(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                            float *out, uint8_t *mask) {
    const int64_t L = group_len(f, rows, cols), ng = rows * cols / L;
    float *sc = malloc((size_t)ng * sizeof(float));
    uint8_t *zp = malloc((size_t)ng);
    if (!sc || !zp) {
        free(sc);
        free(zp);
        return QT_ERROR(QT_ENOMEM, "int fake_quant: out of memory for %lld scales", (long long)ng);
    }
    qt_status s = all_params(f, w, rows, cols, sc, zp);
    if (s) {
        free(sc);
        free(zp);
        return s;
    }
    const int bits = f->bits;
    const float hi = (float)((1 << bits) - 1);
    /* the same arithmetic as qt_qint_code + dequantize, so the result is bit-identical */
    FOR_EACH_ELEMENT(rows, cols, L, {
        float inv = 1.0f / sc[g];
        float qf = __builtin_rintf(w[i] * inv) + (float)zp[g];
        if (mask) mask[i] = qf >= 0.0f && qf <= hi;
        qf = qf < 0.0f ? 0.0f : (qf > hi ? hi : qf);
        out[i] = (float)((int)(uint8_t)qf - (int)zp[g]) * sc[g];
    })
    free(sc);
    free(zp);
    return QT_OK;
}
