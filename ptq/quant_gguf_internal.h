/*
 * quant_gguf_internal.h - what the ggml block quantizers of ptq/ share: ggml's scalar
 * helpers (ggml-quants.c nearest_int, the f16 stores, x86's float-to-int8 casts), its
 * make_qx_quants, and the tails of the K-quants (requantize with the stored scales, pack
 * the codes) that llama.cpp's reference quantizers and its importance-matrix paths have in
 * common.
 *
 *   quant_gguf.c       reference quantizers (no importance matrix) and the entry points
 *   quant_gguf_imat.c  the quant_weights paths of Q4_0 .. Q5_1 and Q2_K .. Q6_K
 *   quant_iq4.c        IQ4_NL and IQ4_XS (with or without an importance matrix)
 *
 * Everything here is private to ptq/ and compiled with -ffp-contract=off (see
 * quant_gguf.c's header for why each detail matters to the bytes).
 */
#ifndef QT_QUANT_GGUF_INTERNAL_H
#define QT_QUANT_GGUF_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "quant_internal.h"

#define QK_SMALL 32 /* ggml-common.h: QK4_0 = QK4_1 = QK5_0 = QK5_1 = QK8_0 = QK4_NL */
#define QK_K 256    /* ggml-common.h: super-block of the K-quants and IQ4_XS */
/* ggml-quants.c GROUP_MAX_EPS: a group whose |max| is below this is "all zero" */
#define GROUP_MAX_EPS 1e-15f

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

static inline void put_f16(uint8_t *p, float x) {
    uint16_t h = qt_f32_to_f16(x);
    p[0] = (uint8_t)(h & 0xff);
    p[1] = (uint8_t)(h >> 8);
}

static inline float get_f16(const uint8_t *p) {
    return qt_f16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
}

/* ggml's nearest_int: adding 12582912 = 1.5 * 2^23 leaves round(x) (half to even) in the
 * low 22 mantissa bits. */
static inline int nearest_int(float fval) {
    float val = fval + 12582912.f;
    int32_t i;
    memcpy(&i, &val, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* ggml's `(int8_t)f` / `(uint8_t)f` casts, as x86-64 executes them: cvttss2si to int32
 * (truncation; NaN and out-of-range give INT32_MIN) and the low byte. In range this is
 * plain truncation; it matters when a denormal block amax makes 1/d overflow to inf
 * (ggml's C is undefined there; this pins down what its x86 build writes). */
static inline int f2i8(float v) {
    int32_t i = (v > -2147483648.f && v < 2147483648.f) ? (int32_t)v : INT32_MIN;
    return (int8_t)(uint8_t)((uint32_t)i & 0xffu) /* gcc: modular */;
}

/* make_qx_quants with rmse_type 1: symmetric codes L[i] in [0, 2*nmax) for n values,
 * weighted least squares over 18 scales around nmax / max; weights qw[i] (n), or x[i]^2
 * when qw is NULL. Returns the scale (0 and L = 0 for an all-zero group). */
float qt_gguf_qx_quants(int n, int nmax, const float *x, int8_t *L, const float *qw);

/* The tails of the K-quant blocks, once the block header (scales, d, dmin) is written:
 * requantize each group with the stored scales (groups whose scale is 0 keep L) and pack
 * L into the block y. */
void qt_gguf_q2_K_finish(const float *x, uint8_t *L, uint8_t *y);
void qt_gguf_q3_K_finish(const float *x, int8_t *L, uint8_t *y);
void qt_gguf_q4_K_finish(const float *x, uint8_t *L, uint8_t *y);
void qt_gguf_q5_K_finish(const float *x, uint8_t *L, uint8_t *y);
/* Q6_K from the 16 group scales and their codes: the 8-bit scales, d, requantize, pack
 * (an all-zero block when every |scale| < GROUP_MAX_EPS). */
void qt_gguf_q6_K_finish(const float *x, const float *scales, int8_t *L, uint8_t *y);

/* quant_gguf_imat.c: one row of n values (a multiple of the block) with the importance
 * qw (n, non-NULL), as ggml-quants.c quantize_<type> with quant_weights. Types Q4_0, Q4_1,
 * Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K. */
void qt_gguf_quantize_row_imat(qt_ggml_type type, const float *x, uint8_t *y, int64_t n,
                               const float *qw);

/* quant_iq4.c: one row of IQ4_NL / IQ4_XS as ggml-quants.c quantize_iq4_nl /
 * quantize_iq4_xs (qw may be NULL). */
void qt_gguf_quantize_row_iq4(qt_ggml_type type, const float *x, uint8_t *y, int64_t n,
                              const float *qw);

#endif
