/*
 * quant_iq4.c - IQ4_NL and IQ4_XS, llama.cpp's 4-bit non-linear block types, byte for
 * byte as ggml_quantize_chunk writes them (ggml/src/ggml-quants.c quantize_iq4_nl /
 * quantize_iq4_xs -> quantize_row_iq4_nl_impl with ntry 7, best_index_int8; layouts
 * ggml-common.h block_iq4_nl {f16 d; u8 qs[16]} and block_iq4_xs {f16 d; u16 scales_h;
 * u8 scales_l[4]; u8 qs[128]}).
 *
 * Codes index the 16 levels of kvalues_iq4nl (-127 .. 113, qt_iq4nl_values), not a
 * uniform grid: a value is scale * level. Per block of 32: weights qw * sqrt(sigma2 + x^2)
 * with an importance vector (sigma2 = 2 mean(x^2) over the super-block: the block itself
 * for IQ4_NL, 256 values for IQ4_XS), x^2 without; the scale is the weighted least-squares
 * fit of the nearest levels at 16 trial scales (itry + level[0]) / max, itry = -7..7,
 * beside max / 127. IQ4_NL stores that scale as f16 and recomputes the codes with the
 * f32 scale; IQ4_XS stores d = -max_scale / 32 and a 6-bit scale per block of 32.
 *
 * Surprises, kept because the bytes must match:
 *   - llama-quantize runs this search also without an importance matrix;
 *     quantize_row_iq4_nl_ref (ntry -1, no search) is not what it writes, so qtrain does
 *     not implement it;
 *   - an all-zero block (|x| < 1e-15) of IQ4_NL gets d = 0 and every code 8 (level 1,
 *     the nearest to 0); an all-zero IQ4_XS super-block gets d = -0.0 (f16 0x8000);
 *   - the IQ4_NL codes come from 1 / scale in f32 while d is its f16 rounding, so a
 *     code need not be the nearest level to x / d.
 */
#include <math.h>
#include <string.h>

#include "quant_gguf_internal.h"

/* ggml's best_index_int8: index of the level nearest to x (ties to the upper level
 * only when x - val[mu-1] == val[mu] - x fails the `<`: lower wins ties), by bisection. */
static inline int best_index_int8(int n, const int8_t *val, float x) {
    if (x <= (float)val[0]) return 0;
    if (x >= (float)val[n - 1]) return n - 1;
    int ml = 0, mu = n - 1;
    while (mu - ml > 1) {
        int mav = (ml + mu) / 2;
        if (x < (float)val[mav])
            mu = mav;
        else
            ml = mav;
    }
    return x - (float)val[mu - 1] < (float)val[mu] - x ? mu - 1 : mu;
}

/* quantize_row_iq4_nl_impl with ntry = 7 for one super-block of sb values in blocks of 32
 * (sb = 32: IQ4_NL, sb = 256: IQ4_XS). Writes the f16 d at dh, the packed codes at q4
 * (sb / 2 bytes) and, for IQ4_XS, *scales_h / scales_l (4 bytes). qw: sb values or NULL. */
static void iq4_super_block(int sb, const float *x, const float *qw, uint8_t *dh, uint8_t *q4,
                            uint16_t *scales_h, uint8_t *scales_l) {
    const int8_t *values = qt_iq4nl_values();
    const int ntry = 7, bs = 32, nb = sb / bs;
    uint8_t L[QK_K];
    float weight[32], scales[QK_K / 32];

    float sigma2 = 0;
    for (int j = 0; j < sb; j++) sigma2 += x[j] * x[j];
    sigma2 *= 2.f / (float)sb;

    memset(q4, 0, (size_t)sb / 2);
    put_f16(dh, 0.f);

    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < nb; ib++) {
        const float *xb = x + ib * bs;
        uint8_t *Lb = L + ib * bs;
        if (qw) {
            const float *w = qw + ib * bs;
            for (int j = 0; j < bs; j++) weight[j] = w[j] * sqrtf(sigma2 + xb[j] * xb[j]);
        } else {
            for (int j = 0; j < bs; j++) weight[j] = xb[j] * xb[j];
        }
        float amax = 0, max = 0;
        for (int j = 0; j < bs; j++) {
            float ax = fabsf(xb[j]);
            if (ax > amax) {
                amax = ax;
                max = xb[j];
            }
        }
        if (amax < GROUP_MAX_EPS) {
            scales[ib] = 0;
            continue; /* Lb is set below (IQ4_XS) or from scale 0 (IQ4_NL) */
        }
        float d = -max / (float)values[0];
        float id = 1 / d;
        float sumqx = 0, sumq2 = 0;
        for (int j = 0; j < bs; j++) {
            int l = best_index_int8(16, values, id * xb[j]);
            Lb[j] = (uint8_t)l;
            float q = (float)values[l];
            float w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
        float best = d * sumqx;
        for (int itry = -ntry; itry <= ntry; itry++) {
            id = (float)(itry + values[0]) / max;
            sumqx = sumq2 = 0;
            for (int j = 0; j < bs; j++) {
                int l = best_index_int8(16, values, id * xb[j]);
                float q = (float)values[l];
                float w = weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        float abs_d = fabsf(d);
        if (abs_d > amax_scale) {
            amax_scale = abs_d;
            max_scale = d;
        }
    }

    if (nb > 1) {
        *scales_h = 0;
        float d = -max_scale / 32;
        put_f16(dh, d);
        float id = d ? 1 / d : 0.f;
        for (int ib = 0; ib < nb; ib++) {
            int l = nearest_int(id * scales[ib]);
            l = imax(-32, imin(31, l));
            float dl = d * (float)l;
            float idl = dl ? 1 / dl : 0.f;
            uint8_t *Lb = L + ib * bs;
            const float *xb = x + ib * bs;
            for (int j = 0; j < bs; j++) Lb[j] = (uint8_t)best_index_int8(16, values, idl * xb[j]);
            l += 32;
            uint8_t l_l = (uint8_t)(l & 0xf), l_h = (uint8_t)(l >> 4);
            if (ib % 2 == 0)
                scales_l[ib / 2] = l_l;
            else
                scales_l[ib / 2] = (uint8_t)(scales_l[ib / 2] | (l_l << 4));
            *scales_h = (uint16_t)(*scales_h | (l_h << 2 * (ib % 8)));
        }
    } else {
        put_f16(dh, scales[0]);
        float id = scales[0] ? 1 / scales[0] : 0;
        for (int j = 0; j < sb; j++) L[j] = (uint8_t)best_index_int8(16, values, id * x[j]);
    }

    for (int i = 0; i < sb / 32; i++)
        for (int j = 0; j < 16; j++)
            q4[16 * i + j] = (uint8_t)(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

void qt_gguf_quantize_row_iq4(qt_ggml_type type, const float *x, uint8_t *y, int64_t n,
                              const float *qw) {
    if (type == QT_GGML_IQ4_NL) {
        for (int64_t ib = 0; ib < n / QK_SMALL; ib++, y += 18)
            iq4_super_block(QK_SMALL, x + QK_SMALL * ib, qw ? qw + QK_SMALL * ib : NULL, y, y + 2,
                            NULL, NULL);
        return;
    }
    for (int64_t ib = 0; ib < n / QK_K; ib++, y += 136) {
        uint16_t sh = 0;
        iq4_super_block(QK_K, x + QK_K * ib, qw ? qw + QK_K * ib : NULL, y, y + 8, &sh, y + 4);
        y[2] = (uint8_t)(sh & 0xff); /* scales_h, little-endian */
        y[3] = (uint8_t)(sh >> 8);
    }
}
