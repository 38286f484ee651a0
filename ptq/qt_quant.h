/*
 * qt_quant.h - the quantizer core: one definition of every quantization format qtrain
 * knows, used by the fake-quant nodes of QAT (qat/), by the PTQ algorithms and by the
 * exporters. So `fake_quant(W) == dequantize(quantize(W))` holds bit for bit, and what
 * was trained is what ships (../shared/DESIGN.md).
 *
 * A weight is a row-major matrix (rows = out_features, cols = in_features), as an
 * nn.Linear weight. Formats:
 *   - INT: intN, N = 2..8. Codes are unsigned bytes q in [0, 2^N - 1] with a zero point
 *     z: w ~ (q - z) * s. Symmetric: z = 2^(N-1) (implied, not stored), s = amax /
 *     ((2^N - 1) / 2) as torch.ao / torchao compute it (int4: amax / 7.5), so the code
 *     range is [-2^(N-1), 2^(N-1) - 1] around z. Asymmetric: min' = min(min, 0), max' =
 *     max(max, 0), s = (max' - min') / (2^N - 1), z = clamp(-round(min' / s), 0, 2^N-1)
 *     (GPTQ / torch MinMax). s is rounded to the scale dtype (f32, f16, bf16) first and
 *     the codes are computed with the rounded scale: q = clamp(round_half_even(w * (1/s))
 *     + z, 0, 2^N - 1), as torch.fake_quantize_per_channel_affine. Granularity:
 *     per-tensor, per-channel (one scale per output row), per-group (G consecutive
 *     inputs of a row; G divides cols).
 *     A scale of 0 (an all-zero group, or one that underflows in its dtype, e.g. f16 for
 *     amax ~1e-30), or one whose reciprocal is not finite (~1e-39), becomes FLT_EPSILON (torchao's clamp of the scale) rounded to the
 *     dtype, so the group dequantizes to exact zeros.
 *   - NF4 / FP4 (bitsandbytes quantize_4bit): the tensor flattened row-major in blocks of
 *     `group_size` (bitsandbytes' blocksize, default 64; the last block may be partial),
 *     absmax per block (f32), code = nearest codebook entry of w / absmax. Optional double
 *     quantization: absmax - mean(absmax) quantized blockwise (256) with the signed
 *     8-bit dynamic map; dequantization then uses the dequantized absmax.
 *   - FP8 E4M3 (max 448) / E5M2 (max 57344): w / s rounded to nearest even and saturated
 *     at +-max; s = amax / max (f32) per tensor or per channel.
 *   - GGUF block types Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL
 *     and IQ4_XS as llama.cpp's ggml_quantize_chunk computes them (what llama-quantize
 *     writes): without an importance vector, the reference quantizers (quantize_row_*_ref;
 *     IQ4_NL / IQ4_XS: quantize_iq4_nl / _xs with no weights); with one (fmt.importance,
 *     llama.cpp's quant_weights: an imatrix entry's per-column mean of squared
 *     activations, see qt_ptq.h qt_imatrix), the quant_weights paths. Each row is
 *     quantized separately, cols a multiple of the block size (32, or 256 for the K types
 *     and IQ4_XS). Q8_0 ignores the importance, as llama.cpp does.
 *
 * NaN / Inf policy: the quantizer refuses non-finite weights. quantize and fake_quant
 * return QT_ENUMERIC naming the first (row, col) that is not finite and write nothing
 * useful (outputs are left unspecified, codes are freed). Activation fake-quant (qat/)
 * differs: NaN propagates to the output so the training loop's guard skips the step.
 */
#ifndef QT_QUANT_H
#define QT_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qt_autograd.h"
#include "qt_formats.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    QT_QF_INT,
    QT_QF_NF4,
    QT_QF_FP4,
    QT_QF_FP8_E4M3,
    QT_QF_FP8_E5M2,
    QT_QF_GGUF,
    QT_QF_KIND_COUNT
} qt_qkind;

typedef enum { QT_QG_TENSOR, QT_QG_CHANNEL, QT_QG_GROUP } qt_qgran;

typedef struct {
    qt_qkind kind;
    int bits;             /* INT: 2..8. Others: their fixed width (4, 8; GGUF: nominal) */
    bool symmetric;       /* INT */
    qt_qgran gran;        /* INT: any; FP8: TENSOR or CHANNEL; NF4/FP4/GGUF: ignored */
    int group_size;       /* INT with QT_QG_GROUP: G; NF4/FP4: blocksize, a power of two
                             in 32..4096 as bitsandbytes requires */
    qt_dtype scale_dtype; /* INT: QT_F32, QT_F16 or QT_BF16; FP8: QT_F32 */
    bool double_quant;    /* NF4/FP4: absmax double-quantized (block 256, dynamic map) */
    qt_ggml_type ggml;    /* GGUF: the block type */
    const float *importance; /* GGUF only, may be NULL: (cols) the importance of each input
                                column, llama.cpp's quant_weights (qt_imatrix_weights), finite
                                and >= 0. Borrowed for the call: quantize / fake_quant read it,
                                nothing keeps it (a qt_qtensor's fmt has it NULL) */
} qt_qformat;

/* A quantized matrix. Which arrays are set depends on the kind. */
typedef struct {
    qt_qformat fmt;
    int64_t rows, cols;
    uint8_t *codes;     /* INT, NF4, FP4: (rows*cols) one code per byte (4-bit: 0..15);
                           FP8: (rows*cols) the fp8 bytes; GGUF: NULL */
    float *scales;      /* INT: (n_scales) s, exactly representable in scale_dtype;
                           FP8: (n_scales) s; NF4/FP4: (n_scales) absmax per block as
                           dequantization uses it (after double quantization if on) */
    uint8_t *zeros;     /* INT asymmetric: (n_scales) zero points; else NULL */
    int64_t n_scales;   /* INT: 1, rows or rows*cols/G; FP8: 1 or rows; NF4/FP4: blocks */
    /* NF4/FP4 with double_quant (bitsandbytes' nested quant_state): */
    uint8_t *absmax_q;  /* (n_scales) 8-bit codes of absmax - offset */
    float *absmax2;     /* (n_absmax2) f32 absmax of each block of 256 absmax */
    int64_t n_absmax2;
    float offset;       /* mean of the f32 absmax */
    /* GGUF: */
    uint8_t *blocks;    /* (rows * qt_ggml_nbytes(ggml, cols)) ggml block bytes */
    size_t nbytes;      /* of blocks */
} qt_qtensor;

/* Checks that a format is well formed and can quantize a rows x cols matrix (group size
 * divides cols, bits in range, a GGUF row a multiple of the block, ...). QT_EINVAL with a
 * message saying what is wrong; rows/cols <= 0 checks the format alone. */
qt_status qt_qformat_check(const qt_qformat *f, int64_t rows, int64_t cols);
/* Readable name: "int4 g32 sym f16", "nf4 b64 dq", "fp8_e4m3 per-channel", "q4_K". */
const char *qt_qformat_str(const qt_qformat *f, char *buf, size_t n);
/* Storage cost in bits per weight of a rows x cols matrix (codes + scales + zeros +
 * double-quant statistics; GGUF: block bytes * 8 / elements). */
double qt_qformat_bits_per_weight(const qt_qformat *f, int64_t rows, int64_t cols);

/* floats -> codes and scales. `out` is filled (arrays malloc'd); free with
 * qt_qtensor_free. On failure out owns nothing. */
qt_status qt_quantize(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                      qt_qtensor *out);
/* codes and scales -> floats (rows*cols). */
qt_status qt_dequantize(const qt_qtensor *q, float *out);
/* dequantize(quantize(w)) into out (rows*cols, may alias w), without keeping codes.
 * mask (may be NULL): rows*cols bytes, 1 where the straight-through gradient passes and
 * 0 where w was clipped (INT: round(w/s) + z outside [0, 2^N - 1], as
 * torch.fake_quantize_per_channel_affine; FP8: |w/s| > max; NF4/FP4/GGUF: always 1). */
qt_status qt_fake_quant(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                        float *out, uint8_t *mask);
void qt_qtensor_free(qt_qtensor *q);

/* ---- building blocks other quantizers (GPTQ, AWQ, activations) reuse ---------------- */

/* INT: the scale (rounded to f->scale_dtype) and zero point for the n values x, as
 * quantize computes them for one group / channel / tensor. */
void qt_qint_params(const qt_qformat *f, const float *x, int64_t n, float *scale,
                    uint8_t *zero);
/* INT: code of x for a given scale and zero point: clamp(rint(x * (1/s)) + z, 0, 2^bits-1). */
static inline uint8_t qt_qint_code(float x, float inv_scale, int zero, int bits) {
    float q = __builtin_rintf(x * inv_scale) + (float)zero;
    float hi = (float)((1 << bits) - 1);
    q = q < 0.0f ? 0.0f : (q > hi ? hi : q);
    return (uint8_t)q;
}

/* NF4 and FP4 codebooks (16 f32 values, bitsandbytes' order), and bitsandbytes' signed
 * 8-bit dynamic map (256 values, create_dynamic_map(signed=True)) used by double
 * quantization. */
const float *qt_nf4_codebook(void);
const float *qt_fp4_codebook(void);
const float *qt_dynamic_map(void);
/* Every table the 4-bit quantizers use, for a device backend that must reproduce them
 * bit for bit (cuda/quant.cu uploads these instead of rebuilding them). */
typedef struct {
    const float *code[2];     /* (16) [0] NF4, [1] FP4 codebooks */
    const float *bounds[2];   /* (16) sorted midpoints, then +inf */
    const uint8_t *fp4_order; /* (16) FP4 code of each sorted position */
    const float *dyn_map;     /* (256) the double-quant dynamic map */
    const uint8_t *dyn_lut;   /* (lut_size) value in [-1, 1] -> nearest map index */
    int lut_size;
} qt_4bit_tables;
void qt_4bit_tables_get(qt_4bit_tables *t);

/* FP8 scalar conversions: round to nearest even, saturating to +-max (E4M3 448,
 * E5M2 57344); NaN -> NaN encoding. */
uint8_t qt_f32_to_e4m3(float x);
float qt_e4m3_to_f32(uint8_t b);
uint8_t qt_f32_to_e5m2(float x);
float qt_e5m2_to_f32(uint8_t b);

/* GGUF: quantizes one row of n floats (n a multiple of the block size) into ggml blocks
 * at dst (qt_ggml_nbytes(type, n) bytes), as llama.cpp's ggml_quantize_chunk without an
 * importance matrix (quantize_row_<type>_ref; IQ4_NL / IQ4_XS: quantize_iq4_nl / _xs with
 * quant_weights NULL, which differs from their _ref). Types: Q8_0, Q4_0, Q4_1, Q5_0,
 * Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS. */
qt_status qt_ggml_quantize_row(qt_ggml_type type, const float *src, void *dst, int64_t n);
/* The same with llama.cpp's quant_weights: importance (n values, finite, >= 0; NULL = none,
 * as qt_ggml_quantize_row), one per element of the row, as ggml_quantize_chunk's imatrix
 * argument for a one-row chunk. QT_EINVAL for a non-finite or negative importance. */
qt_status qt_ggml_quantize_row_weighted(qt_ggml_type type, const float *src, void *dst,
                                        int64_t n, const float *importance);
/* True for the types qt_ggml_quantize_row produces. */
bool qt_ggml_can_quantize(qt_ggml_type type);

/* ---- names (qformat_parse.c) ------------------------------------------------------- */

/* A format from its name: int2..int8 (group 32, symmetric, f16 scales: set the fields
 * after to change them), nf4 / fp4 (blocksize 64, double quantization), fp8_e4m3 /
 * fp8_e5m2 (per channel; "fp8" = fp8_e4m3), q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k (GGUF,
 * case-insensitive). QT_EINVAL naming the choices for anything else. */
qt_status qt_qformat_parse(const char *name, qt_qformat *f);
/* "int2..int8|nf4|..." for messages and documentation. */
const char *qt_qformat_names(void);

#ifdef __cplusplus
}
#endif
#endif /* QT_QUANT_H */
