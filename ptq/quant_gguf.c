/*
 * quant_gguf.c - ggml block quantizers: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the K-quants
 * Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, byte for byte as llama.cpp's reference quantizers
 * (ggml/src/ggml-quants.c: quantize_row_<type>_ref, with their helpers nearest_int,
 * make_qx_quants, make_q3_quants, make_qkx2_quants), i.e. what llama_model_quantize
 * writes when no importance matrix is given (ggml_quantize_chunk -> quantize_<type>
 * calls the _ref function when quant_weights is NULL); and the entry points, which send
 * a row with an importance vector to quant_gguf_imat.c (llama.cpp's quant_weights paths)
 * and IQ4_NL / IQ4_XS rows to quant_iq4.c. Dequantization goes through gguf_blocks.c
 * (qt_ggml_dequantize), so fake_quant(w) == dequantize(quantize(w)) bit for bit.
 *
 * Surprises, all kept on purpose because the bytes must match:
 *   - Every float expression keeps ggml's operand order and types: `w*l*l` is
 *     (w*(float)l)*(float)l, `x*sl2/slx` is (x*sl2)/slx, and ptq/ builds with
 *     -ffp-contract=off, as the pip build of llama.cpp (no FMA in libggml-base's
 *     quantizers: objdump finds no vfmadd there). With FMA contraction, 28% of Q2_K,
 *     6% of Q4_K, 30% of Q5_K and 0.4% of Q6_K blocks of random rows come out different.
 *   - A block whose max is an f32 denormal makes 1/d (or 15/max_min, 63/max_scale)
 *     overflow to inf; ggml then casts inf to an integer. nearest_int's bit trick maps
 *     inf to -2^22 (its low byte, shifted, is what ggml stores) and f2i8 pins the
 *     float-to-int8 casts to what x86-64 does, so such rows still match llama.cpp.
 *   - nearest_int rounds through the 1.5 * 2^23 magic number (round half to even, valid
 *     for |x| <= 2^22); roundf (Q8_0) rounds half away from zero; Q4_0/Q5_0/Q4_1 round by
 *     adding 8.5 / 16.5 / 0.5 and truncating toward zero.
 *   - A sub-block whose quantized scale is 0 keeps the codes its make_*_quants search
 *     chose (or 0 for an all-zero group), not a recomputed code.
 *   - fp16 conversions are round to nearest even (ggml's GGML_FP32_TO_FP16).
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant_gguf_internal.h"

/* ---- 32-element blocks --------------------------------------------------------------- */

/* q4_0 {f16 d; u8 qs[16]}: d = max / -8 with max the signed element of largest |x|. */
static void quantize_q4_0(const float *x, uint8_t *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += QK_SMALL, y += 18) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK_SMALL; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        put_f16(y, d);
        for (int j = 0; j < QK_SMALL / 2; j++) {
            const float x0 = x[j] * id;
            const float x1 = x[j + QK_SMALL / 2] * id;
            const uint8_t q0 = (uint8_t)imin(15, f2i8(x0 + 8.5f));
            const uint8_t q1 = (uint8_t)imin(15, f2i8(x1 + 8.5f));
            y[2 + j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* q4_1 {f16 d, m; u8 qs[16]}: d = (max - min) / 15, m = min. */
static void quantize_q4_1(const float *x, uint8_t *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += QK_SMALL, y += 20) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK_SMALL; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / ((1 << 4) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        put_f16(y, d);
        put_f16(y + 2, min);
        for (int j = 0; j < QK_SMALL / 2; j++) {
            const float x0 = (x[j] - min) * id;
            const float x1 = (x[j + QK_SMALL / 2] - min) * id;
            const uint8_t q0 = (uint8_t)imin(15, f2i8(x0 + 0.5f));
            const uint8_t q1 = (uint8_t)imin(15, f2i8(x1 + 0.5f));
            y[4 + j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* q5_0 {f16 d; u8 qh[4]; u8 qs[16]}: d = max / -16; bit 4 of code j goes to qh bit j. */
static void quantize_q5_0(const float *x, uint8_t *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += QK_SMALL, y += 22) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK_SMALL; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -16;
        const float id = d ? 1.0f / d : 0.0f;
        put_f16(y, d);
        uint32_t qh = 0;
        for (int j = 0; j < QK_SMALL / 2; j++) {
            const float x0 = x[j] * id;
            const float x1 = x[j + QK_SMALL / 2] * id;
            const uint8_t q0 = (uint8_t)imin(31, f2i8(x0 + 16.5f));
            const uint8_t q1 = (uint8_t)imin(31, f2i8(x1 + 16.5f));
            y[6 + j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= ((q0 & 0x10u) >> 4) << j;
            qh |= ((q1 & 0x10u) >> 4) << (j + QK_SMALL / 2);
        }
        for (int b = 0; b < 4; b++) y[2 + b] = (uint8_t)(qh >> (8 * b)); /* little-endian */
    }
}

/* q5_1 {f16 d, m; u8 qh[4]; u8 qs[16]}: d = (max - min) / 31, m = min. */
static void quantize_q5_1(const float *x, uint8_t *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += QK_SMALL, y += 24) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK_SMALL; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / ((1 << 5) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        put_f16(y, d);
        put_f16(y + 2, min);
        uint32_t qh = 0;
        for (int j = 0; j < QK_SMALL / 2; j++) {
            const float x0 = (x[j] - min) * id;
            const float x1 = (x[j + QK_SMALL / 2] - min) * id;
            const uint8_t q0 = (uint8_t)f2i8(x0 + 0.5f); /* no clamp in ggml either */
            const uint8_t q1 = (uint8_t)f2i8(x1 + 0.5f);
            y[8 + j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= ((q0 & 0x10u) >> 4) << j;
            qh |= ((q1 & 0x10u) >> 4) << (j + QK_SMALL / 2);
        }
        for (int b = 0; b < 4; b++) y[4 + b] = (uint8_t)(qh >> (8 * b));
    }
}

/* q8_0 {f16 d; i8 qs[32]}: d = amax / 127, q = roundf(x / d) (half away from zero). */
static void quantize_q8_0(const float *x, uint8_t *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += QK_SMALL, y += 34) {
        float amax = 0.0f;
        for (int j = 0; j < QK_SMALL; j++) amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]);
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        put_f16(y, d);
        for (int j = 0; j < QK_SMALL; j++) y[2 + j] = (uint8_t)f2i8(roundf(x[j] * id));
    }
}

/* ---- K-quant helpers (ggml-quants.c "Helper functions") ------------------------------ */

/* make_qx_quants, rmse_type 1 (quant_gguf_internal.h): the weight is qw[i], or x[i]^2
 * without an importance vector. */
float qt_gguf_qx_quants(int n, int nmax, const float *x, int8_t *L, const float *qw) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        l = imax(-nmax, imin(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        float w = qw ? qw[i] : x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * x[i]);
            l = imax(-nmax, imin(nmax - 1, l));
            float w = qw ? qw[i] : x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Q3_K's symmetric codes (make_q3_quants, do_rmse = true): start from nmax / max, then
 * up to 5 passes of coordinate descent on the x^2-weighted error. L in [0, 2*nmax), or
 * all 0 for an all-zero group. */
static float q3_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        l = imax(-nmax, imin(nmax - 1, l));
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * (float)L[i] * (float)L[i];
                int new_l = nearest_int(x[i] * sl2 / slx);
                new_l = imax(-nmax, imin(nmax - 1, new_l));
                if (new_l != L[i]) {
                    slx += w * x[i] * (float)new_l;
                    sl2 += w * (float)new_l * (float)new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Asymmetric codes L in [0, nmax] with x ~ scale * L - the_min (make_qkx2_quants):
 * weighted least squares over nstep + 1 candidate scales (rmin + rdelta * is + nmax) /
 * (max - min), keeping the lowest weighted error (|diff| when use_mad, else diff^2). */
static float qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                         float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                         bool use_mad) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)imax(0, imin(nmax, l));
        float diff = scale * (float)L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * (x[i] - min));
            l = imax(0, imin(nmax, l));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * (float)l;
            sum_l2 += w * (float)l * (float)l;
            sum_xl += w * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* q2_K {u8 scales[16]; u8 qs[64]; f16 d, dmin}: 16 groups of 16, 4-bit scale and min
 * per group (low / high nibble) against the super-block's d and dmin (max / 15). */
static void quantize_q2_K(const float *x, uint8_t *y, int64_t nb) {
    uint8_t L[QK_K], Laux[16];
    float weights[16], mins[QK_K / 16], scales[QK_K / 16];
    const float q4scale = 15.f;
    for (int64_t i = 0; i < nb; i++, x += QK_K, y += 84) {
        uint8_t *ysc = y, *yd = y + 80, *ydmin = y + 82;
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            for (int l = 0; l < 16; l++) weights[l] = fabsf(x[16 * j + l]);
            /* ggml: rmin -0.5, rdelta 0.1, 15 steps, mean absolute deviation */
            scales[j] = qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux,
                                    -0.5f, 0.1f, 15, true);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        if (max_scale > 0) {
            float iscale = q4scale / max_scale;
            for (int j = 0; j < QK_K / 16; j++) ysc[j] = (uint8_t)nearest_int(iscale * scales[j]);
            put_f16(yd, max_scale / q4scale);
        } else {
            memset(ysc, 0, QK_K / 16);
            put_f16(yd, 0.f);
        }
        if (max_min > 0) {
            float iscale = q4scale / max_min;
            for (int j = 0; j < QK_K / 16; j++)
                ysc[j] = (uint8_t)(ysc[j] | ((unsigned)nearest_int(iscale * mins[j]) << 4));
            put_f16(ydmin, max_min / q4scale);
        } else {
            put_f16(ydmin, 0.f);
        }
        qt_gguf_q2_K_finish(x, L, y);
    }
}

/* Packs 4 rows of 2-bit codes (L[j], L[j+32], L[j+64], L[j+96]) per byte (Q2_K, Q3_K). */
static void pack_2bit(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                      (L[j + l + 96] << 6));
}

void qt_gguf_q2_K_finish(const float *x, uint8_t *L, uint8_t *y) {
    const uint8_t *ysc = y;
    const float dall = get_f16(y + 80), dmall = get_f16(y + 82);
    for (int j = 0; j < QK_K / 16; j++) {
        const float d = dall * (float)(ysc[j] & 0xF);
        if (!d) continue;
        const float dm = dmall * (float)(ysc[j] >> 4);
        for (int ii = 0; ii < 16; ii++) {
            int l = nearest_int((x[16 * j + ii] + dm) / d);
            L[16 * j + ii] = (uint8_t)imax(0, imin(3, l));
        }
    }
    pack_2bit(L, y + 16);
}

/* q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}: 16 groups of 16, 6-bit signed
 * scales (offset 32; low nibbles in scales[0..7], high 2 bits in scales[8..11]), codes
 * -4..3 with bit 2 in hmask. */
static void quantize_q3_K(const float *x, uint8_t *y, int64_t nb) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < nb; i++, x += QK_K, y += 110) {
        uint8_t *ysc = y + 96, *yd = y + 108;
        float max_scale = 0, amax = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            scales[j] = q3_quants(16, 4, x + 16 * j, L + 16 * j);
            float scale = fabsf(scales[j]);
            if (scale > amax) {
                amax = scale;
                max_scale = scales[j];
            }
        }
        memset(ysc, 0, 12);
        if (max_scale) {
            float iscale = -32.f / max_scale;
            for (int j = 0; j < QK_K / 16; j++) {
                int8_t l = (int8_t)nearest_int(iscale * scales[j]);
                l = (int8_t)(imax(-32, imin(31, l)) + 32);
                if (j < 8)
                    ysc[j] = (uint8_t)(l & 0xF);
                else
                    ysc[j - 8] = (uint8_t)(ysc[j - 8] | ((l & 0xF) << 4));
                l = (int8_t)(l >> 4);
                ysc[j % 4 + 8] = (uint8_t)(ysc[j % 4 + 8] | (l << (2 * (j / 4))));
            }
            put_f16(yd, 1 / iscale);
        } else {
            put_f16(yd, 0.f);
        }
        qt_gguf_q3_K_finish(x, L, y);
    }
}

void qt_gguf_q3_K_finish(const float *x, int8_t *L, uint8_t *y) {
    uint8_t *hmask = y;
    const uint8_t *ysc = y + 96;
    const float dall = get_f16(y + 108);
    for (int j = 0; j < QK_K / 16; j++) {
        int sc = j < 8 ? ysc[j] & 0xF : ysc[j - 8] >> 4;
        sc = (sc | (((ysc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
        float d = dall * (float)sc;
        if (!d) continue;
        for (int ii = 0; ii < 16; ii++) {
            int l = nearest_int(x[16 * j + ii] / d);
            L[16 * j + ii] = (int8_t)(imax(-4, imin(3, l)) + 4);
        }
    }
    /* high bit of codes 0..31 in hmask bit 0, of codes 32..63 in bit 1, ... */
    memset(hmask, 0, QK_K / 8);
    uint8_t Lu[QK_K];
    for (int j = 0; j < QK_K; j++) {
        int l = L[j];
        if (l > 3) {
            hmask[j % (QK_K / 8)] = (uint8_t)(hmask[j % (QK_K / 8)] | (1 << (j / (QK_K / 8))));
            l -= 4;
        }
        Lu[j] = (uint8_t)l;
    }
    pack_2bit(Lu, y + 32);
}

/* Q4_K / Q5_K's 12 scale bytes: 8 groups of 32, 6-bit scale and 6-bit min each (groups
 * 0..3 in the low 6 bits of bytes 0..7, groups 4..7 split: low nibbles in bytes 8..11,
 * high 2 bits in the top of bytes 0..7). */
static void pack_scale_min_k4(const float *scales, const float *mins, float max_scale,
                              float max_min, uint8_t *sc12) {
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            sc12[j] = ls;
            sc12[j + 4] = lm;
        } else {
            sc12[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            sc12[j - 4] = (uint8_t)(sc12[j - 4] | ((ls >> 4) << 6));
            sc12[j] = (uint8_t)(sc12[j] | ((lm >> 4) << 6));
        }
    }
}

static inline void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Shared head of Q4_K (nmax 15, rmin -1, 20 steps) and Q5_K (nmax 31, rmin -0.5, 15
 * steps): per group of 32, weights av_x + |x| with av_x = sqrt(mean(x^2)); fills L with
 * codes 0..nmax and the 16 header bytes {f16 d, dmin; u8 scales[12]} at hdr. */
static void quantize_kx_super(const float *x, int nmax, float rmin, int nstep, uint8_t *hdr,
                              uint8_t *L) {
    uint8_t Laux[32];
    float weights[32], mins[QK_K / 32], scales[QK_K / 32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin,
                                0.1f, nstep, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    pack_scale_min_k4(scales, mins, max_scale, max_min, hdr + 4);
    put_f16(hdr, max_scale / 63.f);
    put_f16(hdr + 2, max_min / 63.f);
}

/* Requantizes each group of 32 with its stored 6-bit scale and min (Q4_K / Q5_K). */
static void kx_requantize(const float *x, int nmax, const uint8_t *hdr, uint8_t *L) {
    const float dall = get_f16(hdr), dmall = get_f16(hdr + 2);
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t sc, m;
        get_scale_min_k4(j, hdr + 4, &sc, &m);
        const float d = dall * (float)sc;
        if (!d) continue;
        const float dm = dmall * (float)m;
        for (int ii = 0; ii < 32; ii++) {
            int l = nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)imax(0, imin(nmax, l));
        }
    }
}

/* q4_K {f16 d, dmin; u8 scales[12]; u8 qs[128]}: qs byte l of each 32-byte chunk holds
 * codes l (low nibble) and l + 32 (high) of a 64-value span. */
void qt_gguf_q4_K_finish(const float *x, uint8_t *L, uint8_t *y) {
    kx_requantize(x, 15, y, L);
    uint8_t *q = y + 16;
    for (int j = 0; j < QK_K; j += 64, q += 32)
        for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
}

static void quantize_q4_K(const float *x, uint8_t *y, int64_t nb) {
    uint8_t L[QK_K];
    for (int64_t i = 0; i < nb; i++, x += QK_K, y += 144) {
        memset(y, 0, 16);
        quantize_kx_super(x, 15, -1.f, 20, y, L);
        qt_gguf_q4_K_finish(x, L, y);
    }
}

/* q5_K {f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}: as Q4_K, bit 4 of the codes
 * of span n/64 in qh bits 2n (low half) and 2n+1 (high half). */
void qt_gguf_q5_K_finish(const float *x, uint8_t *L, uint8_t *y) {
    kx_requantize(x, 31, y, L);
    uint8_t *qh = y + 16, *ql = y + 48;
    memset(qh, 0, QK_K / 8);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < QK_K; n += 64, ql += 32) {
        for (int j = 0; j < 32; j++) {
            int l1 = L[n + j], l2 = L[n + j + 32];
            if (l1 > 15) {
                l1 -= 16;
                qh[j] |= m1;
            }
            if (l2 > 15) {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql[j] = (uint8_t)(l1 | (l2 << 4));
        }
        m1 = (uint8_t)(m1 << 2);
        m2 = (uint8_t)(m2 << 2);
    }
}

static void quantize_q5_K(const float *x, uint8_t *y, int64_t nb) {
    uint8_t L[QK_K];
    for (int64_t i = 0; i < nb; i++, x += QK_K, y += 176) {
        memset(y, 0, 16);
        quantize_kx_super(x, 31, -0.5f, 15, y, L);
        qt_gguf_q5_K_finish(x, L, y);
    }
}

/* q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: 16 groups of 16, 8-bit signed
 * scales against d = max_scale / -128, codes -32..31 (offset 32). */
void qt_gguf_q6_K_finish(const float *x, const float *scales, int8_t *L, uint8_t *y) {
    uint8_t *ql = y, *qh = y + 128, *ysc = y + 192, *yd = y + 208;
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < QK_K / 16; ib++) {
        if (fabsf(scales[ib]) > max_abs_scale) {
            max_abs_scale = fabsf(scales[ib]);
            max_scale = scales[ib];
        }
    }
    if (max_abs_scale < GROUP_MAX_EPS) { /* ggml zeroes the whole block */
        memset(y, 0, 210);
        return;
    }
    float iscale = -128.f / max_scale;
    put_f16(yd, 1 / iscale);
    for (int ib = 0; ib < QK_K / 16; ib++)
        ysc[ib] = (uint8_t)(int8_t)imin(127, nearest_int(iscale * scales[ib]));
    const float dall = get_f16(yd);
    for (int j = 0; j < QK_K / 16; j++) {
        float d = dall * (float)(int8_t)ysc[j];
        if (!d) continue;
        for (int ii = 0; ii < 16; ii++) {
            int l = nearest_int(x[16 * j + ii] / d);
            L[16 * j + ii] = (int8_t)(imax(-32, imin(31, l)) + 32);
        }
    }
    for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; l++) {
            const uint8_t q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF;
            const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
            ql[l] = (uint8_t)(q1 | (q3 << 4));
            ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
            qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                              ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
        }
    }
}

static void quantize_q6_K(const float *x, uint8_t *y, int64_t nb) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < nb; i++, x += QK_K, y += 210) {
        for (int ib = 0; ib < QK_K / 16; ib++)
            scales[ib] = qt_gguf_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, NULL);
        qt_gguf_q6_K_finish(x, scales, L, y);
    }
}

/* ---- public entry points ------------------------------------------------------------- */

bool qt_ggml_can_quantize(qt_ggml_type type) {
    switch (type) {
    case QT_GGML_Q8_0:
    case QT_GGML_Q4_0:
    case QT_GGML_Q4_1:
    case QT_GGML_Q5_0:
    case QT_GGML_Q5_1:
    case QT_GGML_Q2_K:
    case QT_GGML_Q3_K:
    case QT_GGML_Q4_K:
    case QT_GGML_Q5_K:
    case QT_GGML_Q6_K:
    case QT_GGML_IQ4_NL:
    case QT_GGML_IQ4_XS:
        return true;
    default:
        return false;
    }
}

qt_status qt_ggml_quantize_row(qt_ggml_type type, const float *src, void *dst, int64_t n) {
    return qt_ggml_quantize_row_weighted(type, src, dst, n, NULL);
}

/* One row, arguments checked: what ggml_quantize_chunk does for a row of n values. */
static void quantize_row(qt_ggml_type type, const float *src, uint8_t *y, int64_t n,
                         const float *qw) {
    const int64_t nb = n / qt_ggml_blck_size(type);
    if (type == QT_GGML_IQ4_NL || type == QT_GGML_IQ4_XS) {
        qt_gguf_quantize_row_iq4(type, src, y, n, qw);
        return;
    }
    if (qw && type != QT_GGML_Q8_0) { /* quantize_q8_0 ignores quant_weights */
        qt_gguf_quantize_row_imat(type, src, y, n, qw);
        return;
    }
    switch (type) {
    case QT_GGML_Q8_0: quantize_q8_0(src, y, nb); break;
    case QT_GGML_Q4_0: quantize_q4_0(src, y, nb); break;
    case QT_GGML_Q4_1: quantize_q4_1(src, y, nb); break;
    case QT_GGML_Q5_0: quantize_q5_0(src, y, nb); break;
    case QT_GGML_Q5_1: quantize_q5_1(src, y, nb); break;
    case QT_GGML_Q2_K: quantize_q2_K(src, y, nb); break;
    case QT_GGML_Q3_K: quantize_q3_K(src, y, nb); break;
    case QT_GGML_Q4_K: quantize_q4_K(src, y, nb); break;
    case QT_GGML_Q5_K: quantize_q5_K(src, y, nb); break;
    case QT_GGML_Q6_K: quantize_q6_K(src, y, nb); break;
    default: break; /* refused by the callers */
    }
}

qt_status qt_ggml_quantize_row_weighted(qt_ggml_type type, const float *src, void *dst,
                                        int64_t n, const float *importance) {
    if (!qt_ggml_can_quantize(type))
        return QT_ERROR(QT_EDTYPE, "ggml quantize: no quantizer for type %s (%d)",
                        qt_ggml_type_name(type), (int)type);
    const int64_t bs = qt_ggml_blck_size(type);
    if (n < 0 || n % bs != 0)
        return QT_ERROR(QT_EINVAL, "ggml quantize %s: row length %lld is not a multiple of %lld",
                        qt_ggml_type_name(type), (long long)n, (long long)bs);
    if (n > 0 && (!src || !dst))
        return QT_ERROR(QT_EINVAL, "ggml quantize %s: NULL buffer", qt_ggml_type_name(type));
    if (importance) {
        qt_status s = qt_check_importance(importance, n);
        if (s != QT_OK) return s;
    }
    quantize_row(type, src, dst, n, importance);
    return QT_OK;
}

static bool row_finite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
}

/* Finite weights too large for a block's f16 scale (|w| beyond about 65504 times the
 * type's code range) would dequantize to inf, as llama.cpp's would: refused instead,
 * as the INT formats refuse a scale their dtype cannot hold. */
static qt_status scale_overflow(const qt_qformat *f, int64_t row) {
    return QT_ERROR(QT_ENUMERIC, "%s: row %lld: a block scale overflows f16 (weights too large "
                                 "for this format)", qt_ggml_type_name(f->ggml), (long long)row);
}

static qt_status check_shape(const qt_qformat *f, int64_t rows, int64_t cols, size_t *row_bytes) {
    if (!qt_ggml_can_quantize(f->ggml))
        return QT_ERROR(QT_EDTYPE, "gguf quantize: no quantizer for type %s (%d)",
                        qt_ggml_type_name(f->ggml), (int)f->ggml);
    if (rows <= 0 || cols <= 0 || cols % qt_ggml_blck_size(f->ggml) != 0)
        return QT_ERROR(QT_EINVAL, "gguf quantize %s: %lld x %lld matrix, expected rows > 0 and "
                        "cols a multiple of %lld", qt_ggml_type_name(f->ggml), (long long)rows,
                        (long long)cols, (long long)qt_ggml_blck_size(f->ggml));
    *row_bytes = qt_ggml_nbytes(f->ggml, cols);
    if (*row_bytes == 0 || (size_t)rows > SIZE_MAX / *row_bytes)
        return QT_ERROR(QT_EINVAL, "gguf quantize %s: %lld x %lld matrix is too large",
                        qt_ggml_type_name(f->ggml), (long long)rows, (long long)cols);
    return QT_OK;
}

/* Rows are independent, so they run in parallel; below 64K elements the threads cost
 * more than they save. */
#define GGUF_OMP_MIN_ELEMS 65536

qt_status qt_gguf_quantize(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                           qt_qtensor *out) {
    memset(out, 0, sizeof *out);
    size_t row_bytes = 0;
    qt_status s = check_shape(f, rows, cols, &row_bytes);
    if (s != QT_OK) return s;
    if ((s = qt_check_finite(w, rows, cols)) != QT_OK) return s;
    const float *qw = f->importance;
    if (qw && (s = qt_check_importance(qw, cols)) != QT_OK) return s;
    uint8_t *blocks = malloc((size_t)rows * row_bytes);
    if (!blocks)
        return QT_ERROR(QT_ENOMEM, "gguf quantize: %zu bytes of blocks", (size_t)rows * row_bytes);
    const qt_ggml_type type = f->ggml;
    int64_t bad_row = -1; /* the first row whose f16 block scale overflowed */
    int failed = 0;
#pragma omp parallel if (rows * cols >= GGUF_OMP_MIN_ELEMS) reduction(| : failed)
    {
        float *chk = malloc((size_t)cols * sizeof(float));
        if (!chk) failed = 1;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (!chk) continue;
            quantize_row(type, w + r * cols, blocks + (size_t)r * row_bytes, cols, qw);
            qt_ggml_dequantize(type, blocks + (size_t)r * row_bytes, chk, cols);
            if (!row_finite(chk, cols)) {
#pragma omp critical(qt_gguf_bad_row)
                if (bad_row < 0 || r < bad_row) bad_row = r;
            }
        }
        free(chk);
    }
    if (failed) {
        free(blocks);
        return QT_ERROR(QT_ENOMEM, "gguf quantize: %zu bytes of row buffer", (size_t)cols * 4);
    }
    if (bad_row >= 0) {
        free(blocks);
        return scale_overflow(f, bad_row);
    }
    out->fmt = *f;
    out->fmt.importance = NULL; /* borrowed by the call only (qt_quant.h) */
    out->rows = rows;
    out->cols = cols;
    out->blocks = blocks;
    out->nbytes = (size_t)rows * row_bytes;
    return QT_OK;
}

qt_status qt_gguf_dequantize(const qt_qtensor *q, float *out) {
    size_t row_bytes = 0;
    qt_status s = check_shape(&q->fmt, q->rows, q->cols, &row_bytes);
    if (s != QT_OK) return s;
    if (!q->blocks || q->nbytes != (size_t)q->rows * row_bytes)
        return QT_ERROR(QT_EINVAL, "gguf dequantize %s: %zu bytes of blocks, expected %zu",
                        qt_ggml_type_name(q->fmt.ggml), q->blocks ? q->nbytes : 0,
                        (size_t)q->rows * row_bytes);
    return qt_ggml_dequantize(q->fmt.ggml, q->blocks, out, q->rows * q->cols);
}

qt_status qt_gguf_fake_quant(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                             float *out, uint8_t *mask) {
    size_t row_bytes = 0;
    qt_status s = check_shape(f, rows, cols, &row_bytes);
    if (s != QT_OK) return s;
    if ((s = qt_check_finite(w, rows, cols)) != QT_OK) return s;
    const float *qw = f->importance;
    if (qw && (s = qt_check_importance(qw, cols)) != QT_OK) return s;
    const qt_ggml_type type = f->ggml;
    int failed = 0;
    int64_t bad_row = -1;
#pragma omp parallel if (rows * cols >= GGUF_OMP_MIN_ELEMS) reduction(| : failed)
    {
        /* one row of blocks per thread; the row is quantized before out (which may alias
         * w) is written */
        uint8_t *buf = malloc(row_bytes);
        if (!buf) failed = 1;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (!buf) continue;
            quantize_row(type, w + r * cols, buf, cols, qw);
            qt_ggml_dequantize(type, buf, out + r * cols, cols);
            if (!row_finite(out + r * cols, cols)) {
#pragma omp critical(qt_gguf_bad_row)
                if (bad_row < 0 || r < bad_row) bad_row = r;
            }
        }
        free(buf);
    }
    if (failed)
        return QT_ERROR(QT_ENOMEM, "gguf fake_quant: %zu bytes of row buffer", row_bytes);
    if (bad_row >= 0) return scale_overflow(f, bad_row);
    if (mask) memset(mask, 1, (size_t)rows * (size_t)cols);
    return QT_OK;
}
