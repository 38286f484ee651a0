/*
 * quant_internal.h - what the files of ptq/ share: each format family's quantize,
 * dequantize and fake_quant, which qformat.c dispatches to after checking the format.
 * Arguments are already validated (qt_qformat_check) when these are called.
 */
#ifndef QT_QUANT_INTERNAL_H
#define QT_QUANT_INTERNAL_H

#include "qt_quant.h"

/* quant_int.c */
qt_status qt_int_quantize(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                          qt_qtensor *out);
qt_status qt_int_dequantize(const qt_qtensor *q, float *out);
qt_status qt_int_fake_quant(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                            float *out, uint8_t *mask);

/* quant_nf4.c: NF4 and FP4 */
qt_status qt_nf4_quantize(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                          qt_qtensor *out);
qt_status qt_nf4_dequantize(const qt_qtensor *q, float *out);
qt_status qt_nf4_fake_quant(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                            float *out, uint8_t *mask);

/* quant_fp8.c */
qt_status qt_fp8_quantize(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                          qt_qtensor *out);
qt_status qt_fp8_dequantize(const qt_qtensor *q, float *out);
qt_status qt_fp8_fake_quant(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                            float *out, uint8_t *mask);

/* quant_gguf.c */
qt_status qt_gguf_quantize(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                           qt_qtensor *out);
qt_status qt_gguf_dequantize(const qt_qtensor *q, float *out);
qt_status qt_gguf_fake_quant(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                             float *out, uint8_t *mask);

/* qformat.c: QT_ENUMERIC naming the first non-finite (row, col) of w, or QT_OK. */
qt_status qt_check_finite(const float *w, int64_t rows, int64_t cols);
/* qformat.c: QT_EINVAL naming the first importance value (of n) that is not finite and
 * >= 0, or QT_OK. */
qt_status qt_check_importance(const float *importance, int64_t n);

#endif
