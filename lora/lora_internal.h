/*
 * lora_internal.h - what lora/'s files share: the packed NF4 base of QLoRA.
 */
#ifndef QT_LORA_INTERNAL_H
#define QT_LORA_INTERNAL_H

#include "qt_lora.h"

/* A base weight (rows, cols) as bitsandbytes stores NF4 with double quantization: codes
 * two per byte (element 2j in the high nibble), one 8-bit absmax code per block of
 * `blocksize`, one f32 absmax per 256 blocks, one f32 offset. */
struct qt_nf4_base {
    int64_t rows, cols, n, blocksize, nblocks, n2;
    uint8_t *packed;   /* ((n + 1) / 2) */
    uint8_t *absmax_q; /* (nblocks) */
    float *absmax2;    /* (n2) */
    float offset;
};

/* Quantizes w (rows x cols) through the quantizer core (NF4, double quant) and packs it;
 * checks that the packed form dequantizes to exactly the core's values. */
qt_status qt_nf4_base_new(const float *w, int64_t rows, int64_t cols, int blocksize,
                          qt_nf4_base **out);
void qt_nf4_base_free(qt_nf4_base *b);
/* Rows [r0, r1) dequantized into out ((r1 - r0) x cols), bit-identical to
 * qt_dequantize of the core's tensor. */
void qt_nf4_base_rows(const qt_nf4_base *b, int64_t r0, int64_t r1, float *out);
/* Bytes the packed form holds. */
size_t qt_nf4_base_bytes(const qt_nf4_base *b);
/* y = x W^T for the NF4 base W, as an autograd op: the forward and the input gradient
 * (dx = dy W) dequantize tiles of rows into scratch; W gets no gradient. CPU only. */
qt_tensor *qt_nf4_linear(qt_ctx *ctx, qt_tensor *x, const qt_nf4_base *b);

#endif /* QT_LORA_INTERNAL_H */
