/*
 * qt_cuda_quant.h - the quantizer core's fake-quant and NF4 dequantization on the GPU
 * (cuda/quant.cu), for QAT (qat/fake_quant.c) and QLoRA.
 *
 * Every function takes DEVICE pointers, launches on the legacy default stream and returns
 * a qt_status (CUDA failures carry file:line). Results are bit-identical to the CPU core
 * (ptq/qt_quant.h) for the same f32 inputs: the kernels run the same f32 operations in
 * the same order (explicit __fmul_rn/__fadd_rn/__fdiv_rn, no FMA contraction except where
 * the CPU calls fmaf), rintf = round half to even.
 *
 * qt_cuda_fake_quant synchronises once per call (it reads back a status word: the CPU
 * contract's QT_ENUMERIC for non-finite weights / overflowing scales). It keeps a small
 * grow-only device scratch (per-group scales, NF4 absmax) and device tables of its own,
 * for the current device: one host thread, one GPU.
 */
#ifndef QT_CUDA_QUANT_H
#define QT_CUDA_QUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "qt_quant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* qt_fake_quant on the GPU: out = dequantize(quantize(w)) (rows*cols f32, may alias w),
 * mask (may be NULL) = 1 where the STE passes. Formats: INT (2..8 bits, sym/asym, tensor
 * / channel / group, f32/f16/bf16 scales), NF4 and FP4 (any blocksize, with or without
 * double quantization), FP8 E4M3 / E5M2 (tensor / channel). GGUF: QT_ENOTSUP. */
qt_status qt_cuda_fake_quant(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                             float *out, uint8_t *mask);

/* Activation fake-quant, as qat/fake_quant.c's CPU path: x viewed as rows x cols.
 * dynamic: per row (token) int`bits` params from its min/max (f32 scale); a row holding
 * NaN/Inf is copied through with mask 1. static: one (scale, zero) for all; a non-finite
 * element passes through with mask 1. */
qt_status qt_cuda_fake_quant_act(const float *x, int64_t rows, int64_t cols, int bits,
                                 bool symmetric, bool dynamic, float scale, int zero, float *y,
                                 uint8_t *mask);

/* Straight-through estimator backward: dx[i] += mask[i] ? dy[i] : 0. */
qt_status qt_cuda_ste_backward(float *dx, const float *dy, const uint8_t *mask, int64_t n);

/* NF4/FP4 dequantization of the flattened elements [start, start + count) of q into out
 * (count values, QT_F32 or QT_BF16 rounded to nearest even), bit-identical to
 * qt_dequantize (bf16: to qt_f32_to_bf16 of it). q is a qt_qtensor whose arrays are
 * DEVICE copies: codes (one code per byte, 0..15), and either scales (the absmax as
 * dequantization uses it, what qt_quantize stores) or, when scales is NULL and
 * fmt.double_quant, absmax_q + absmax2 + offset (absmax = dynamic[absmax_q] * absmax2 +
 * offset, two f32 roundings, as the core computes scales).
 * QLoRA dequantizes one layer's weight (or a tile of it) at a time into arena scratch
 * right before its cuBLAS GEMM, never a full copy of every layer. */
qt_status qt_cuda_nf4_dequant(const qt_qtensor *q, int64_t start, int64_t count,
                              qt_dtype out_dtype, void *out);

#ifdef __cplusplus
}
#endif
#endif /* QT_CUDA_QUANT_H */
