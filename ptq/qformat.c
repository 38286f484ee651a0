/*
 * qformat.c - the format descriptor of the quantizer core (qt_quant.h): validation,
 * names, storage cost, and the dispatch of quantize / dequantize / fake_quant to each
 * format family (quant_int.c, quant_nf4.c, quant_fp8.c, quant_gguf.c).
 *
 * Every entry point checks the format and the weights first (qt_check_finite), so the
 * family kernels see only valid arguments and finite inputs.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant_internal.h"

static bool is_pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }

qt_status qt_qformat_check(const qt_qformat *f, int64_t rows, int64_t cols) {
    if (!f) return QT_ERROR(QT_EINVAL, "qformat: NULL format");
    bool shape = rows > 0 && cols > 0;
    if (f->importance && f->kind != QT_QF_GGUF)
        return QT_ERROR(QT_EINVAL, "qformat: an importance vector (imatrix) applies to the GGUF "
                                   "block types only");
    switch (f->kind) {
    case QT_QF_INT:
        if (f->bits < 2 || f->bits > 8)
            return QT_ERROR(QT_EINVAL, "qformat: int bits must be 2..8, got %d", f->bits);
        if (f->scale_dtype != QT_F32 && f->scale_dtype != QT_F16 && f->scale_dtype != QT_BF16)
            return QT_ERROR(QT_EINVAL, "qformat: int scale dtype must be f32, f16 or bf16, got %s",
                            qt_dtype_name(f->scale_dtype));
        if (f->gran != QT_QG_TENSOR && f->gran != QT_QG_CHANNEL && f->gran != QT_QG_GROUP)
            return QT_ERROR(QT_EINVAL, "qformat: unknown granularity %d", (int)f->gran);
        if (f->gran == QT_QG_GROUP) {
            if (f->group_size <= 0)
                return QT_ERROR(QT_EINVAL, "qformat: int group size must be positive, got %d",
                                f->group_size);
            if (shape && cols % f->group_size != 0)
                return QT_ERROR(QT_EINVAL,
                                "qformat: int group size %d does not divide cols %lld",
                                f->group_size, (long long)cols);
        }
        return QT_OK;
    case QT_QF_NF4:
    case QT_QF_FP4:
        if (f->bits != 0 && f->bits != 4)
            return QT_ERROR(QT_EINVAL, "qformat: %s is 4 bits, got bits = %d",
                            f->kind == QT_QF_NF4 ? "nf4" : "fp4", f->bits);
        /* bitsandbytes quantize_4bit accepts blocksize 32, 64, ..., 4096 */
        if (!is_pow2(f->group_size) || f->group_size < 32 || f->group_size > 4096)
            return QT_ERROR(QT_EINVAL,
                            "qformat: %s blocksize must be a power of two in 32..4096, got %d",
                            f->kind == QT_QF_NF4 ? "nf4" : "fp4", f->group_size);
        return QT_OK;
    case QT_QF_FP8_E4M3:
    case QT_QF_FP8_E5M2:
        if (f->bits != 0 && f->bits != 8)
            return QT_ERROR(QT_EINVAL, "qformat: fp8 is 8 bits, got bits = %d", f->bits);
        if (f->scale_dtype != QT_F32)
            return QT_ERROR(QT_EINVAL, "qformat: fp8 scales are f32, got %s",
                            qt_dtype_name(f->scale_dtype));
        if (f->gran != QT_QG_TENSOR && f->gran != QT_QG_CHANNEL)
            return QT_ERROR(QT_EINVAL, "qformat: fp8 is per-tensor or per-channel, got %s",
                            f->gran == QT_QG_GROUP ? "per-group" : "unknown granularity");
        return QT_OK;
    case QT_QF_GGUF:
        if (!qt_ggml_can_quantize(f->ggml))
            return QT_ERROR(QT_EINVAL, "qformat: ggml type %s (%d) cannot be quantized",
                            qt_ggml_type_name(f->ggml), (int)f->ggml);
        if (shape && cols % qt_ggml_blck_size(f->ggml) != 0)
            return QT_ERROR(QT_EINVAL, "qformat: %s needs cols a multiple of %lld, got %lld",
                            qt_ggml_type_name(f->ggml), (long long)qt_ggml_blck_size(f->ggml),
                            (long long)cols);
        return QT_OK;
    default:
        return QT_ERROR(QT_EINVAL, "qformat: unknown kind %d", (int)f->kind);
    }
}

static const char *dtype_short(qt_dtype t) {
    return t == QT_F16 ? "f16" : t == QT_BF16 ? "bf16" : t == QT_F32 ? "f32" : "?";
}

const char *qt_qformat_str(const qt_qformat *f, char *buf, size_t n) {
    if (!buf || n == 0) return buf;
    if (!f) {
        snprintf(buf, n, "(null)");
        return buf;
    }
    switch (f->kind) {
    case QT_QF_INT: {
        char gran[32];
        if (f->gran == QT_QG_GROUP)
            snprintf(gran, sizeof gran, "g%d", f->group_size);
        else
            snprintf(gran, sizeof gran, "%s", f->gran == QT_QG_CHANNEL ? "per-channel" : "per-tensor");
        snprintf(buf, n, "int%d %s %s %s", f->bits, gran, f->symmetric ? "sym" : "asym",
                 dtype_short(f->scale_dtype));
        break;
    }
    case QT_QF_NF4:
    case QT_QF_FP4:
        snprintf(buf, n, "%s b%d%s", f->kind == QT_QF_NF4 ? "nf4" : "fp4", f->group_size,
                 f->double_quant ? " dq" : "");
        break;
    case QT_QF_FP8_E4M3:
    case QT_QF_FP8_E5M2:
        snprintf(buf, n, "%s %s", f->kind == QT_QF_FP8_E4M3 ? "fp8_e4m3" : "fp8_e5m2",
                 f->gran == QT_QG_CHANNEL ? "per-channel" : "per-tensor");
        break;
    case QT_QF_GGUF: {
        /* "Q4_K" -> "q4_K", as llama.cpp's ftype names spell them; "IQ4_NL" -> "iq4_nl" */
        snprintf(buf, n, "%s", qt_ggml_type_name(f->ggml));
        if (buf[0] == 'Q') buf[0] = 'q';
        if (buf[0] == 'I')
            for (char *c = buf; *c; c++)
                if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
        break;
    }
    default:
        snprintf(buf, n, "unknown(%d)", (int)f->kind);
    }
    return buf;
}

double qt_qformat_bits_per_weight(const qt_qformat *f, int64_t rows, int64_t cols) {
    if (!f) return 0.0;
    /* rows/cols <= 0: the asymptotic cost of a large matrix */
    bool shape = rows > 0 && cols > 0;
    double numel = shape ? (double)rows * (double)cols : 0.0;
    switch (f->kind) {
    case QT_QF_INT: {
        /* zero points cost `bits` each, as packed exporters (GPTQ qzeros) store them */
        double per_scale = 8.0 * (double)qt_dtype_size(f->scale_dtype) + (f->symmetric ? 0 : f->bits);
        if (f->gran == QT_QG_GROUP) return f->bits + per_scale / f->group_size;
        if (!shape) return f->bits;
        double n_scales = f->gran == QT_QG_CHANNEL ? (double)rows : 1.0;
        return f->bits + per_scale * n_scales / numel;
    }
    case QT_QF_NF4:
    case QT_QF_FP4: {
        double g = f->group_size;
        if (!shape) /* QLoRA sec. 3: 4 + 8/64 + 32/(64*256) = 4.127 with double quant */
            return f->double_quant ? 4.0 + 8.0 / g + 32.0 / (g * 256.0) : 4.0 + 32.0 / g;
        double blocks = ceil(numel / g);
        if (!f->double_quant) return 4.0 + 32.0 * blocks / numel;
        double blocks2 = ceil(blocks / 256.0);
        return 4.0 + (8.0 * blocks + 32.0 * blocks2 + 32.0 /* offset */) / numel;
    }
    case QT_QF_FP8_E4M3:
    case QT_QF_FP8_E5M2:
        if (!shape) return 8.0;
        return 8.0 + 32.0 * (f->gran == QT_QG_CHANNEL ? (double)rows : 1.0) / numel;
    case QT_QF_GGUF: {
        int64_t bs = qt_ggml_blck_size(f->ggml);
        if (bs <= 0) return 0.0;
        return 8.0 * (double)qt_ggml_type_size(f->ggml) / (double)bs;
    }
    default:
        return 0.0;
    }
}

qt_status qt_check_finite(const float *w, int64_t rows, int64_t cols) {
    int64_t n = rows * cols;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(w[i]))
            return QT_ERROR(QT_ENUMERIC, "quantize: weight (row %lld, col %lld) is %s; the "
                            "quantizer refuses non-finite weights",
                            (long long)(i / cols), (long long)(i % cols),
                            isnan(w[i]) ? "NaN" : "Inf");
    }
    return QT_OK;
}

qt_status qt_check_importance(const float *importance, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!(importance[i] >= 0.0f) || isinf(importance[i]))
            return QT_ERROR(QT_EINVAL, "quantize: importance (imatrix) value %lld is %g; expected "
                            "a finite value >= 0", (long long)i, (double)importance[i]);
    return QT_OK;
}

static qt_status check_args(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                            const void *out) {
    if (!w || !out) return QT_ERROR(QT_EINVAL, "quantize: NULL weights or output");
    if (rows <= 0 || cols <= 0)
        return QT_ERROR(QT_EINVAL, "quantize: shape must be positive, got %lld x %lld",
                        (long long)rows, (long long)cols);
    qt_status s = qt_qformat_check(f, rows, cols);
    if (s) return s;
    return qt_check_finite(w, rows, cols);
}

qt_status qt_quantize(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                      qt_qtensor *out) {
    if (out) memset(out, 0, sizeof *out);
    qt_status s = check_args(f, w, rows, cols, out);
    if (s) return s;
    switch (f->kind) {
    case QT_QF_INT: s = qt_int_quantize(f, w, rows, cols, out); break;
    case QT_QF_NF4:
    case QT_QF_FP4: s = qt_nf4_quantize(f, w, rows, cols, out); break;
    case QT_QF_FP8_E4M3:
    case QT_QF_FP8_E5M2: s = qt_fp8_quantize(f, w, rows, cols, out); break;
    case QT_QF_GGUF: s = qt_gguf_quantize(f, w, rows, cols, out); break;
    default: s = QT_ERROR(QT_EINVAL, "quantize: unknown kind %d", (int)f->kind);
    }
    if (s) qt_qtensor_free(out);
    return s;
}

qt_status qt_dequantize(const qt_qtensor *q, float *out) {
    if (!q || !out) return QT_ERROR(QT_EINVAL, "dequantize: NULL tensor or output");
    qt_status s = qt_qformat_check(&q->fmt, q->rows, q->cols);
    if (s) return s;
    switch (q->fmt.kind) {
    case QT_QF_INT: return qt_int_dequantize(q, out);
    case QT_QF_NF4:
    case QT_QF_FP4: return qt_nf4_dequantize(q, out);
    case QT_QF_FP8_E4M3:
    case QT_QF_FP8_E5M2: return qt_fp8_dequantize(q, out);
    case QT_QF_GGUF: return qt_gguf_dequantize(q, out);
    default: return QT_ERROR(QT_EINVAL, "dequantize: unknown kind %d", (int)q->fmt.kind);
    }
}

qt_status qt_fake_quant(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                        float *out, uint8_t *mask) {
    qt_status s = check_args(f, w, rows, cols, out);
    if (s) return s;
    switch (f->kind) {
    case QT_QF_INT: return qt_int_fake_quant(f, w, rows, cols, out, mask);
    case QT_QF_NF4:
    case QT_QF_FP4: return qt_nf4_fake_quant(f, w, rows, cols, out, mask);
    case QT_QF_FP8_E4M3:
    case QT_QF_FP8_E5M2: return qt_fp8_fake_quant(f, w, rows, cols, out, mask);
    case QT_QF_GGUF: return qt_gguf_fake_quant(f, w, rows, cols, out, mask);
    default: return QT_ERROR(QT_EINVAL, "fake_quant: unknown kind %d", (int)f->kind);
    }
}

void qt_qtensor_free(qt_qtensor *q) {
    if (!q) return;
    free(q->codes);
    free(q->scales);
    free(q->zeros);
    free(q->absmax_q);
    free(q->absmax2);
    free(q->blocks);
    q->codes = NULL;
    q->scales = NULL;
    q->zeros = NULL;
    q->absmax_q = NULL;
    q->absmax2 = NULL;
    q->blocks = NULL;
    q->n_scales = q->n_absmax2 = 0;
    q->nbytes = 0;
}
