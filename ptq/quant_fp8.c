/*
 * quant_fp8.c - FP8 E4M3 (OCP "e4m3fn": no infinities, max 448, NaN = S.1111.111) and
 * E5M2 (IEEE-like, max 57344) scaled quantization.
 *
 * The scalar conversions round to nearest even exactly as torch's
 * x.to(torch.float8_e4m3fn / float8_e5m2) (c10/util/Float8_*.h) does on in-range values,
 * subnormals included. Out of range we saturate to +-max where torch's e4m3fn gives NaN
 * and its e5m2 gives inf (i.e. we equal torch.clamp(x, -max, max).to(fp8)).
 * Quantization: s = amax / max (f32) per tensor or per channel, q = fp8(w / s) (a
 * division, as compressed-tensors / vLLM's fp8 quantizer), dequantized fp8(q) * s.
 * An all-zero tensor/row (s == 0) gets s = FLT_EPSILON, as INT does.
 */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "quant_internal.h"

#define E4M3_MAX 448.0f   /* 1.75 * 2^8 */
#define E5M2_MAX 57344.0f /* 1.75 * 2^15 */

static inline uint32_t f2u(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}
static inline float u2f(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* Round |x| (finite, < max or saturated) to an fp8 with `mbits` mantissa bits and
 * exponent bias `bias`; returns the 7 magnitude bits. */
static inline uint8_t fp8_mag(float a, int mbits, int bias, float maxv, uint8_t maxcode) {
    if (!(a < maxv)) return maxcode; /* saturate (NaN handled by the caller) */
    const int emin = 1 - bias;        /* exponent of the smallest normal */
    if (a < ldexpf(1.0f, emin)) {
        /* subnormal: multiples of 2^(emin - mbits); rintf rounds half to even, and a
         * result of 2^mbits is exactly the bit pattern of the smallest normal */
        return (uint8_t)rintf(a * ldexpf(1.0f, mbits - emin));
    }
    const int shift = 23 - mbits;
    uint32_t u = f2u(a);
    u += ((1u << (shift - 1)) - 1u) + ((u >> shift) & 1u); /* round to nearest even */
    uint32_t code = (u >> shift) - ((uint32_t)(127 - bias) << mbits);
    return code > maxcode ? maxcode : (uint8_t)code;
}

uint8_t qt_f32_to_e4m3(float x) {
    uint8_t sign = (uint8_t)((f2u(x) >> 24) & 0x80u);
    if (isnan(x)) return sign | 0x7f;
    return sign | fp8_mag(fabsf(x), 3, 7, E4M3_MAX, 0x7e);
}

uint8_t qt_f32_to_e5m2(float x) {
    uint8_t sign = (uint8_t)((f2u(x) >> 24) & 0x80u);
    if (isnan(x)) return sign | 0x7f;
    return sign | fp8_mag(fabsf(x), 2, 15, E5M2_MAX, 0x7b);
}

float qt_e4m3_to_f32(uint8_t b) {
    uint32_t sign = (uint32_t)(b & 0x80) << 24;
    int e = (b >> 3) & 15, m = b & 7;
    if (e == 15 && m == 7) return u2f(sign | 0x7fc00000u);
    float v = e == 0 ? ldexpf((float)m, -9) : ldexpf(1.0f + (float)m / 8.0f, e - 7);
    return u2f(sign | f2u(v));
}

float qt_e5m2_to_f32(uint8_t b) {
    /* e5m2 is the top byte of an f16 */
    return qt_f16_to_f32((uint16_t)((uint16_t)b << 8));
}

/* Lookup tables of the 256 decoded values, built once (decode is on the hot path). */
static float e4m3_tab[256], e5m2_tab[256];
static pthread_once_t tabs_once = PTHREAD_ONCE_INIT;
static void init_tabs(void) {
    for (int i = 0; i < 256; i++) {
        e4m3_tab[i] = qt_e4m3_to_f32((uint8_t)i);
        e5m2_tab[i] = qt_e5m2_to_f32((uint8_t)i);
    }
}
static void build_tabs(void) { pthread_once(&tabs_once, init_tabs); }

static void fp8_scales(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                       float *scales) {
    const float maxv = f->kind == QT_QF_FP8_E4M3 ? E4M3_MAX : E5M2_MAX;
    const int64_t ns = f->gran == QT_QG_CHANNEL ? rows : 1;
    const int64_t L = rows * cols / ns;
    for (int64_t g = 0; g < ns; g++) {
        float m = 0.0f;
        const float *x = w + g * L;
#pragma omp parallel for reduction(max : m) schedule(static) if (ns == 1)
        for (int64_t i = 0; i < L; i++) {
            float a = fabsf(x[i]);
            m = a > m ? a : m;
        }
        float s = m / maxv;
        scales[g] = s == 0.0f ? FLT_EPSILON : s;
    }
}

/* q = fp8(w / s), optionally decoded times s into out and the STE mask. */
static void fp8_rows(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                     const float *scales, uint8_t *codes, float *out, uint8_t *mask) {
    const bool e4 = f->kind == QT_QF_FP8_E4M3;
    const float maxv = e4 ? E4M3_MAX : E5M2_MAX;
    const float *tab = e4 ? e4m3_tab : e5m2_tab;
    const bool per_row = f->gran == QT_QG_CHANNEL;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float s = scales[per_row ? r : 0];
        for (int64_t c = 0; c < cols; c++) {
            int64_t i = r * cols + c;
            float x = w[i] / s;
            uint8_t q = e4 ? qt_f32_to_e4m3(x) : qt_f32_to_e5m2(x);
            if (mask) mask[i] = fabsf(x) <= maxv;
            if (codes) codes[i] = q;
            if (out) out[i] = tab[q] * s;
        }
    }
}

qt_status qt_fp8_quantize(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                          qt_qtensor *out) {
    const int64_t ns = f->gran == QT_QG_CHANNEL ? rows : 1;
    out->fmt = *f;
    out->rows = rows;
    out->cols = cols;
    out->n_scales = ns;
    out->codes = malloc((size_t)(rows * cols));
    out->scales = malloc((size_t)ns * sizeof(float));
    if (!out->codes || !out->scales)
        return QT_ERROR(QT_ENOMEM, "fp8 quantize: out of memory for %lld x %lld",
                        (long long)rows, (long long)cols);
    fp8_scales(f, w, rows, cols, out->scales);
    fp8_rows(f, w, rows, cols, out->scales, out->codes, NULL, NULL);
    return QT_OK;
}

qt_status qt_fp8_dequantize(const qt_qtensor *q, float *out) {
    const int64_t rows = q->rows, cols = q->cols;
    const bool per_row = q->fmt.gran == QT_QG_CHANNEL;
    if (!q->codes || !q->scales || q->n_scales != (per_row ? rows : 1))
        return QT_ERROR(QT_EINVAL, "fp8 dequantize: expected codes and %lld scales, found %lld",
                        (long long)(per_row ? rows : 1), (long long)q->n_scales);
    build_tabs();
    const float *tab = q->fmt.kind == QT_QF_FP8_E4M3 ? e4m3_tab : e5m2_tab;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float s = q->scales[per_row ? r : 0];
        for (int64_t c = 0; c < cols; c++) out[r * cols + c] = tab[q->codes[r * cols + c]] * s;
    }
    return QT_OK;
}

qt_status qt_fp8_fake_quant(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                            float *out, uint8_t *mask) {
    build_tabs();
    const int64_t ns = f->gran == QT_QG_CHANNEL ? rows : 1;
    float stack[1], *scales = ns == 1 ? stack : malloc((size_t)ns * sizeof(float));
    if (!scales) return QT_ERROR(QT_ENOMEM, "fp8 fake_quant: out of memory for %lld scales", (long long)ns);
    fp8_scales(f, w, rows, cols, scales);
    fp8_rows(f, w, rows, cols, scales, NULL, out, mask);
    if (scales != stack) free(scales);
    return QT_OK;
}
