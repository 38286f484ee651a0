/*
 * quant_gguf_imat.c - the importance-matrix paths of llama.cpp's block quantizers: what
 * ggml_quantize_chunk computes for Q4_0, Q4_1, Q5_0, Q5_1 and Q2_K .. Q6_K when it is
 * given quant_weights (ggml/src/ggml-quants.c quantize_row_<type>_impl, with the helpers
 * make_qx_quants, make_qkx3_quants, make_qp_quants), byte for byte. llama-quantize runs
 * these for every tensor its --imatrix file has an entry for; without one it runs the
 * reference quantizers of quant_gguf.c. The quant_weights qw are per element of the row
 * (llama.cpp passes the same per-column vector for every row of a 2-D weight).
 *
 * How the importance enters, per type (weights of the weighted least squares):
 *   Q4_0, Q5_0       qw * sqrt(sigma2 + x^2), sigma2 = mean(x^2) over the WHOLE row;
 *                    make_qx_quants' 18-scale search (nmax 8 / 16)
 *   Q4_1, Q5_1       the same weights; make_qkx3_quants (min and scale, 37 steps of
 *                    0.05 from -0.9), d and m stored as f16 directly
 *   Q2_K             qw * sqrt(sigma2 + x^2), sigma2 = mean(x^2) over the super-block;
 *                    make_qkx3_quants per group of 16, then make_qp_quants picks the 4-bit
 *                    scales and mins, weighted by each group's total weight
 *   Q3_K             sigma2 = 2 mean(x^2); make_qx_quants per group (nmax 4), then again
 *                    on the 16 scales (nmax 32) for the 6-bit scales and d
 *   Q4_K, Q5_K       sigma2 = 2 mean(x^2); make_qkx3_quants per group of 32, make_qp_quants
 *                    for the 6-bit scales and mins (Q5_K clamps them to 63, Q4_K does not)
 *   Q6_K             qw itself (no sigma2 term) in make_qx_quants per group of 16
 *
 * Surprises kept because the bytes must match: make_qp_quants stores codes in a uint8_t
 * array, so a negative code (a negative group scale) wraps modulo 256 there while the
 * running sums use the unwrapped int; Q4_K packs its 6-bit scales without clamping them;
 * the Q2_K/Q3_K group weight sums and every expression keep ggml's operand order.
 */
#include <math.h>
#include <string.h>

#include "quant_gguf_internal.h"

/* make_qkx3_quants: asymmetric codes L in [0, nmax] with x ~ scale * L - the_min, by
 * weighted least squares over nstep + 1 candidate scales (rmin + rdelta * is + nmax) /
 * (max - min); squared error (use_mad false, the only use here). */
static float qkx3_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                         float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep) {
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
    if (max <= min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    float best_mad = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)imax(0, imin(nmax, l));
        float diff = scale * (float)L[i] + min - x[i];
        diff = diff * diff;
        best_mad += weights[i] * diff;
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
            float mad = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                diff = diff * diff;
                mad += weights[i] * diff;
            }
            if (mad < best_mad) {
                memcpy(L, Laux, (size_t)n);
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* make_qp_quants: non-negative codes L in [0, nmax] for the n values x (a block's group
 * scales or mins) against one scale, weighted by qw: 9 candidate scales around nmax /
 * max, then up to 5 passes of coordinate descent. L is uint8_t as in ggml, so the int
 * codes wrap when stored (see the file comment). Returns the scale. */
static float qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *qw) {
    float max = 0;
    for (int i = 0; i < n; i++) max = max > x[i] ? max : x[i];
    if (max < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = (float)nmax / max;
    for (int i = 0; i < n; i++) L[i] = (uint8_t)nearest_int(iscale * x[i]);
    float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; i++) {
        float diff = x[i] - scale * (float)L[i];
        best_mse += qw[i] * diff * diff;
    }
    for (int is = -4; is <= 4; is++) {
        if (is == 0) continue;
        float iscale_is = (0.1f * (float)is + (float)nmax) / max;
        float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; i++) {
            int l = imin(nmax, nearest_int(iscale_is * x[i]));
            float diff = x[i] - scale_is * (float)l;
            mse += qw[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = imin(nmax, nearest_int(iscale * x[i]));
        L[i] = (uint8_t)l;
        float w = qw[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float w = qw[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            float sl2 = suml2 - w * (float)L[i] * (float)L[i];
            if (slx > 0 && sl2 > 0) {
                int new_l = imin(nmax, nearest_int(x[i] * sl2 / slx));
                if (new_l != L[i]) {
                    slx += w * x[i] * (float)new_l;
                    sl2 += w * (float)new_l * (float)new_l;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* ---- 32-element blocks ---------------------------------------------------------------- */

/* sigma2 of the legacy types: mean of x^2 over the whole row (ggml's n_per_row). */
static float row_sigma2(const float *x, int64_t n) {
    float sum_x2 = 0;
    for (int64_t j = 0; j < n; j++) sum_x2 += x[j] * x[j];
    return sum_x2 / (float)n;
}

static void block_weights(const float *xb, const float *qw, float sigma2, float *weight, int n) {
    for (int j = 0; j < n; j++) weight[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
}

/* q4_0 / q5_0: symmetric codes (nmax 8 / 16) from make_qx_quants; qs/qh as the reference. */
static void quantize_q4_0_w(const float *x, uint8_t *y, int64_t n, const float *qw) {
    float weight[QK_SMALL];
    int8_t L[QK_SMALL];
    const float sigma2 = row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / QK_SMALL; ib++, y += 18) {
        const float *xb = x + QK_SMALL * ib;
        block_weights(xb, qw + QK_SMALL * ib, sigma2, weight, QK_SMALL);
        put_f16(y, qt_gguf_qx_quants(QK_SMALL, 8, xb, L, weight));
        for (int j = 0; j < 16; j++) y[2 + j] = (uint8_t)(L[j] | (L[j + 16] << 4));
    }
}

static void quantize_q5_0_w(const float *x, uint8_t *y, int64_t n, const float *qw) {
    float weight[QK_SMALL];
    int8_t L[QK_SMALL];
    const float sigma2 = row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / QK_SMALL; ib++, y += 22) {
        const float *xb = x + QK_SMALL * ib;
        block_weights(xb, qw + QK_SMALL * ib, sigma2, weight, QK_SMALL);
        put_f16(y, qt_gguf_qx_quants(QK_SMALL, 16, xb, L, weight));
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            const uint8_t q0 = (uint8_t)L[j], q1 = (uint8_t)L[j + 16];
            y[6 + j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= ((q0 & 0x10u) >> 4) << j;
            qh |= ((q1 & 0x10u) >> 4) << (j + 16);
        }
        for (int b = 0; b < 4; b++) y[2 + b] = (uint8_t)(qh >> (8 * b));
    }
}

/* q4_1 / q5_1: asymmetric codes (nmax 15 / 31) from make_qkx3_quants; d = scale and
 * m = -the_min as f16. */
static void quantize_q4_1_w(const float *x, uint8_t *y, int64_t n, const float *qw) {
    float weight[QK_SMALL];
    uint8_t L[QK_SMALL], Laux[QK_SMALL];
    const float sigma2 = row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / QK_SMALL; ib++, y += 20) {
        const float *xb = x + QK_SMALL * ib;
        block_weights(xb, qw + QK_SMALL * ib, sigma2, weight, QK_SMALL);
        float min;
        float d = qkx3_quants(QK_SMALL, 15, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36);
        put_f16(y, d);
        put_f16(y + 2, -min);
        for (int j = 0; j < 16; j++) y[4 + j] = (uint8_t)(L[j] | (L[j + 16] << 4));
    }
}

static void quantize_q5_1_w(const float *x, uint8_t *y, int64_t n, const float *qw) {
    float weight[QK_SMALL];
    uint8_t L[QK_SMALL], Laux[QK_SMALL];
    const float sigma2 = row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / QK_SMALL; ib++, y += 24) {
        const float *xb = x + QK_SMALL * ib;
        block_weights(xb, qw + QK_SMALL * ib, sigma2, weight, QK_SMALL);
        float min;
        float d = qkx3_quants(QK_SMALL, 31, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36);
        put_f16(y, d);
        put_f16(y + 2, -min);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            const uint8_t q0 = L[j], q1 = L[j + 16];
            y[8 + j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= ((q0 & 0x10u) >> 4) << j;
            qh |= ((q1 & 0x10u) >> 4) << (j + 16);
        }
        for (int b = 0; b < 4; b++) y[4 + b] = (uint8_t)(qh >> (8 * b));
    }
}

/* ---- K-quants --------------------------------------------------------------------------- */

static float block_sum_x2(const float *x) {
    float sum_x2 = 0;
    for (int j = 0; j < QK_K; j++) sum_x2 += x[j] * x[j];
    return sum_x2;
}

static void quantize_q2_K_w(const float *x, uint8_t *y, int64_t nb, const float *qw) {
    uint8_t L[QK_K], Laux[16], Ls[QK_K / 16], Lm[QK_K / 16];
    float mins[QK_K / 16], scales[QK_K / 16], sw[QK_K / 16], weight[16];
    for (int64_t i = 0; i < nb; i++, x += QK_K, qw += QK_K, y += 84) {
        const float sigma2 = block_sum_x2(x) / QK_K;
        for (int j = 0; j < QK_K / 16; j++) {
            block_weights(x + 16 * j, qw + 16 * j, sigma2, weight, 16);
            sw[j] = 0;
            for (int l = 0; l < 16; l++) sw[j] += weight[l];
            scales[j] = qkx3_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f,
                                    0.05f, 36);
        }
        put_f16(y + 80, qp_quants(QK_K / 16, 15, scales, Ls, sw));
        put_f16(y + 82, qp_quants(QK_K / 16, 15, mins, Lm, sw));
        for (int j = 0; j < QK_K / 16; j++) y[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
        qt_gguf_q2_K_finish(x, L, y);
    }
}

static void quantize_q3_K_w(const float *x, uint8_t *y, int64_t nb, const float *qw) {
    int8_t L[QK_K], Ls[QK_K / 16];
    float scales[QK_K / 16], weight[16], sw[QK_K / 16];
    for (int64_t i = 0; i < nb; i++, x += QK_K, qw += QK_K, y += 110) {
        const float sigma2 = 2 * block_sum_x2(x) / QK_K;
        for (int j = 0; j < QK_K / 16; j++) {
            block_weights(x + 16 * j, qw + 16 * j, sigma2, weight, 16);
            float sumw = 0;
            for (int l = 0; l < 16; l++) sumw += weight[l];
            sw[j] = sumw;
            scales[j] = qt_gguf_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
        }
        uint8_t *ysc = y + 96;
        memset(ysc, 0, 12);
        float d_block = qt_gguf_qx_quants(QK_K / 16, 32, scales, Ls, sw);
        for (int j = 0; j < QK_K / 16; j++) {
            int l = Ls[j];
            if (j < 8)
                ysc[j] = (uint8_t)(l & 0xF);
            else
                ysc[j - 8] = (uint8_t)(ysc[j - 8] | ((l & 0xF) << 4));
            l >>= 4;
            ysc[j % 4 + 8] = (uint8_t)(ysc[j % 4 + 8] | (l << (2 * (j / 4))));
        }
        put_f16(y + 108, d_block);
        qt_gguf_q3_K_finish(x, L, y);
    }
}

/* Q4_K (nmax 15) and Q5_K (nmax 31): the 16 header bytes {f16 d, dmin; u8 scales[12]}
 * and the codes L from the weighted searches. */
static void kx_header_w(const float *x, const float *qw, int nmax, bool clamp63, uint8_t *y,
                        uint8_t *L) {
    uint8_t Laux[32], Ls[QK_K / 32], Lm[QK_K / 32];
    float weights[32], sw[QK_K / 32], mins[QK_K / 32], scales[QK_K / 32];
    const float sigma2 = 2 * block_sum_x2(x) / QK_K;
    for (int j = 0; j < QK_K / 32; j++) {
        block_weights(x + 32 * j, qw + 32 * j, sigma2, weights, 32);
        float sumw = 0;
        for (int l = 0; l < 32; l++) sumw += weights[l];
        sw[j] = sumw;
        scales[j] = qkx3_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f,
                                0.05f, 36);
    }
    float d_block = qp_quants(QK_K / 32, 63, scales, Ls, sw);
    float m_block = qp_quants(QK_K / 32, 63, mins, Lm, sw);
    uint8_t *sc = y + 4;
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t ls = Ls[j], lm = Lm[j];
        if (clamp63) {
            ls = ls < 63 ? ls : 63;
            lm = lm < 63 ? lm : 63;
        }
        if (j < 4) {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            sc[j - 4] = (uint8_t)(sc[j - 4] | ((ls >> 4) << 6));
            sc[j] = (uint8_t)(sc[j] | ((lm >> 4) << 6));
        }
    }
    put_f16(y, d_block);
    put_f16(y + 2, m_block);
}

static void quantize_q4_K_w(const float *x, uint8_t *y, int64_t nb, const float *qw) {
    uint8_t L[QK_K];
    for (int64_t i = 0; i < nb; i++, x += QK_K, qw += QK_K, y += 144) {
        kx_header_w(x, qw, 15, false, y, L);
        qt_gguf_q4_K_finish(x, L, y);
    }
}

static void quantize_q5_K_w(const float *x, uint8_t *y, int64_t nb, const float *qw) {
    uint8_t L[QK_K];
    for (int64_t i = 0; i < nb; i++, x += QK_K, qw += QK_K, y += 176) {
        kx_header_w(x, qw, 31, true, y, L);
        qt_gguf_q5_K_finish(x, L, y);
    }
}

static void quantize_q6_K_w(const float *x, uint8_t *y, int64_t nb, const float *qw) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < nb; i++, x += QK_K, qw += QK_K, y += 210) {
        for (int ib = 0; ib < QK_K / 16; ib++)
            scales[ib] = qt_gguf_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, qw + 16 * ib);
        qt_gguf_q6_K_finish(x, scales, L, y);
    }
}

void qt_gguf_quantize_row_imat(qt_ggml_type type, const float *x, uint8_t *y, int64_t n,
                               const float *qw) {
    switch (type) {
    case QT_GGML_Q4_0: quantize_q4_0_w(x, y, n, qw); break;
    case QT_GGML_Q4_1: quantize_q4_1_w(x, y, n, qw); break;
    case QT_GGML_Q5_0: quantize_q5_0_w(x, y, n, qw); break;
    case QT_GGML_Q5_1: quantize_q5_1_w(x, y, n, qw); break;
    case QT_GGML_Q2_K: quantize_q2_K_w(x, y, n / QK_K, qw); break;
    case QT_GGML_Q3_K: quantize_q3_K_w(x, y, n / QK_K, qw); break;
    case QT_GGML_Q4_K: quantize_q4_K_w(x, y, n / QK_K, qw); break;
    case QT_GGML_Q5_K: quantize_q5_K_w(x, y, n / QK_K, qw); break;
    case QT_GGML_Q6_K: quantize_q6_K_w(x, y, n / QK_K, qw); break;
    default: break; /* the caller sends only these */
    }
}
