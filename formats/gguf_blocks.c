/*
 * gguf_blocks.c - ggml's tensor types: block sizes, names, and dequantization of the
 * block formats to f32.
 *
 * Layouts follow ggml's src/ggml-common.h (struct block_q4_0 ... block_q6_K, block_iq4_nl,
 * block_iq4_xs, QK_K = 256) and the arithmetic follows src/ggml-quants.c
 * (dequantize_row_q4_0 ... dequantize_row_q6_K, dequantize_row_iq4_nl / _iq4_xs,
 * get_scale_min_k4); gguf-py's quants.py (Q4_0.dequantize_blocks
 * ...) computes the same products in the same order, and tests/test_gguf.c checks this
 * file against it bit for bit. Each block is read byte by byte (little-endian, any
 * alignment), so a pointer straight into a file buffer is fine.
 *
 * Surprising, and deliberate:
 *   - every value is (f16 scale) * (small integer) [* (small integer)], minus or plus an
 *     optional f16-derived offset. The products are EXACT in f32: an f16 has 11
 *     significant bits and the integers at most 7 (scales) and 6 (quants), 24 bits at
 *     most, so only the final add/subtract rounds. That is why this file matches ggml and
 *     numpy bit for bit whatever the order of the multiplications. It is still compiled
 *     with -ffp-contract=off (formats/CMakeLists.txt), and keeps ggml's order (d * sc
 *     first, then * q), so that a future format whose products are not exact cannot
 *     silently pick up a fused multiply-add;
 *   - Q3_K's high bit is inverted: a SET hmask bit means "no -4 offset" (ggml-quants.c,
 *     dequantize_row_q3_K).
 *   - IQ4_NL / IQ4_XS codes index a table of 16 non-uniform levels (kvalues_iq4nl, -127 ..
 *     113); their products are exact too: f16 d (11 bits) times a 6-bit sub-block scale
 *     (IQ4_XS) times a level of at most 7 bits is 24 bits.
 */
#include "qt_formats.h"

#include <string.h>

/* ------------------------------------------------------------------- types ---- */

/* QK_K of ggml-common.h: elements in a K-quant super-block. */
#define QT_QK_K 256

static const struct {
    const char *name;
    int64_t blck;    /* elements per block */
    size_t size;     /* bytes per block (sizeof(block_xxx) in ggml-common.h) */
    bool dequant;
} qt_ggml_types[QT_GGML_TYPE_LIMIT] = {
    [QT_GGML_F32] = {"F32", 1, 4, true},
    [QT_GGML_F16] = {"F16", 1, 2, true},
    [QT_GGML_Q4_0] = {"Q4_0", 32, 2 + 16, true},          /* d; qs[16] */
    [QT_GGML_Q4_1] = {"Q4_1", 32, 2 + 2 + 16, true},      /* d, m; qs[16] */
    [QT_GGML_Q5_0] = {"Q5_0", 32, 2 + 4 + 16, true},      /* d; qh[4]; qs[16] */
    [QT_GGML_Q5_1] = {"Q5_1", 32, 2 + 2 + 4 + 16, true},  /* d, m; qh[4]; qs[16] */
    [QT_GGML_Q8_0] = {"Q8_0", 32, 2 + 32, true},          /* d; qs[32] */
    /* scales[16]; qs[64]; d; dmin */
    [QT_GGML_Q2_K] = {"Q2_K", QT_QK_K, 16 + 64 + 2 + 2, true},
    /* hmask[32]; qs[64]; scales[12]; d */
    [QT_GGML_Q3_K] = {"Q3_K", QT_QK_K, 32 + 64 + 12 + 2, true},
    /* d; dmin; scales[12]; qs[128] */
    [QT_GGML_Q4_K] = {"Q4_K", QT_QK_K, 2 + 2 + 12 + 128, true},
    /* d; dmin; scales[12]; qh[32]; qs[128] */
    [QT_GGML_Q5_K] = {"Q5_K", QT_QK_K, 2 + 2 + 12 + 32 + 128, true},
    /* ql[128]; qh[64]; scales[16]; d */
    [QT_GGML_Q6_K] = {"Q6_K", QT_QK_K, 128 + 64 + 16 + 2, true},
    /* d; qs[16] */
    [QT_GGML_IQ4_NL] = {"IQ4_NL", 32, 2 + 16, true},
    /* d; scales_h (u16); scales_l[4]; qs[128] */
    [QT_GGML_IQ4_XS] = {"IQ4_XS", QT_QK_K, 2 + 2 + 4 + 128, true},
    [QT_GGML_I8] = {"I8", 1, 1, false},
    [QT_GGML_I16] = {"I16", 1, 2, false},
    [QT_GGML_I32] = {"I32", 1, 4, false},
    [QT_GGML_I64] = {"I64", 1, 8, false},
    [QT_GGML_F64] = {"F64", 1, 8, false},
    [QT_GGML_BF16] = {"BF16", 1, 2, true},
};

static bool qt_ggml_known(qt_ggml_type t) {
    return (unsigned)t < QT_GGML_TYPE_LIMIT && qt_ggml_types[t].name != NULL;
}

int64_t qt_ggml_blck_size(qt_ggml_type t) { return qt_ggml_known(t) ? qt_ggml_types[t].blck : 0; }
size_t qt_ggml_type_size(qt_ggml_type t) { return qt_ggml_known(t) ? qt_ggml_types[t].size : 0; }
const char *qt_ggml_type_name(qt_ggml_type t) {
    return qt_ggml_known(t) ? qt_ggml_types[t].name : "?";
}
bool qt_ggml_can_dequantize(qt_ggml_type t) {
    return qt_ggml_known(t) && qt_ggml_types[t].dequant;
}

size_t qt_ggml_nbytes(qt_ggml_type t, int64_t n) {
    if (!qt_ggml_known(t) || n < 0 || n % qt_ggml_types[t].blck != 0)
        return 0;
    uint64_t bytes;
    if (__builtin_mul_overflow((uint64_t)(n / qt_ggml_types[t].blck),
                               (uint64_t)qt_ggml_types[t].size, &bytes) ||
        bytes > SIZE_MAX)
        return 0;
    return (size_t)bytes;
}

/* ------------------------------------------------------------ block readers ---- */

static inline float qt_rd_f16(const uint8_t *p) {
    return qt_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
}

static inline uint32_t qt_rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Q4_0: 32 weights, d * (q - 8); qs[j] holds element j (low nibble) and j + 16 (high). */
static void qt_deq_q4_0(const uint8_t *b, float *y) {
    float d = qt_rd_f16(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((qs[j] & 0x0F) - 8);
        y[j + 16] = d * (float)((qs[j] >> 4) - 8);
    }
}

/* Q4_1: d * q + m. */
static void qt_deq_q4_1(const uint8_t *b, float *y) {
    float d = qt_rd_f16(b), m = qt_rd_f16(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)(qs[j] & 0x0F) + m;
        y[j + 16] = d * (float)(qs[j] >> 4) + m;
    }
}

/* Q5_0: the fifth bit of element j is bit j of the little-endian u32 qh; d * (q - 16). */
static void qt_deq_q5_0(const uint8_t *b, float *y) {
    float d = qt_rd_f16(b);
    uint32_t qh = qt_rd_u32(b + 2);
    const uint8_t *qs = b + 6;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 0x0F) | (int)((qh >> j) & 1) << 4;
        int hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = d * (float)(lo - 16);
        y[j + 16] = d * (float)(hi - 16);
    }
}

/* Q5_1: d * q + m, q in 0..31. */
static void qt_deq_q5_1(const uint8_t *b, float *y) {
    float d = qt_rd_f16(b), m = qt_rd_f16(b + 2);
    uint32_t qh = qt_rd_u32(b + 4);
    const uint8_t *qs = b + 8;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 0x0F) | (int)((qh >> j) & 1) << 4;
        int hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = d * (float)lo + m;
        y[j + 16] = d * (float)hi + m;
    }
}

/* Q8_0: d * q, q signed bytes. */
static void qt_deq_q8_0(const uint8_t *b, float *y) {
    float d = qt_rd_f16(b);
    for (int j = 0; j < 32; j++)
        y[j] = d * (float)(int8_t)b[2 + j];
}

/* Q2_K: 16 groups of 16; scales[g] holds the group's 4-bit scale (low) and 4-bit min
 * (high): y = (d * sc) * q - (dmin * mn). Two halves of 128; within a half, shift s
 * (0, 2, 4, 6) picks the 2-bit field of qs[0..32) for groups 2s, 2s+1. */
static void qt_deq_q2_k(const uint8_t *b, float *y) {
    const uint8_t *scales = b, *qs = b + 16;
    float d = qt_rd_f16(b + 80), dmin = qt_rd_f16(b + 82);
    int g = 0;
    for (int half = 0; half < 2; half++, qs += 32) {
        for (int shift = 0; shift < 8; shift += 2) {
            for (int part = 0; part < 2; part++, g++) {
                float dl = d * (float)(scales[g] & 0x0F);
                float ml = dmin * (float)(scales[g] >> 4);
                const uint8_t *q = qs + 16 * part;
                for (int l = 0; l < 16; l++)
                    *y++ = dl * (float)((q[l] >> shift) & 3) - ml;
            }
        }
    }
}

/* Q3_K: 16 six-bit scales packed in 12 bytes: the low 4 bits of scale i are nibble
 * i / 8 of byte i % 8, the high 2 bits are bits 2 * (i / 4) of byte 8 + i % 4; the
 * scale is that minus 32. q = 2 low bits from qs (as Q2_K) minus 4 unless the hmask bit
 * (bit `half * 4 + shift / 2` of hmask[l]) is set. */
static void qt_deq_q3_k(const uint8_t *b, float *y) {
    const uint8_t *hmask = b, *qs = b + 32, *sb = b + 96;
    float d = qt_rd_f16(b + 108);
    int sc[16];
    for (int i = 0; i < 16; i++) {
        int lo = (sb[i % 8] >> (4 * (i / 8))) & 0x0F;
        int hi = (sb[8 + i % 4] >> (2 * (i / 4))) & 0x03;
        sc[i] = (lo | hi << 4) - 32;
    }
    int g = 0, bit = 0;
    for (int half = 0; half < 2; half++, qs += 32) {
        for (int shift = 0; shift < 8; shift += 2, bit++) {
            for (int part = 0; part < 2; part++, g++) {
                float dl = d * (float)sc[g];
                const uint8_t *q = qs + 16 * part, *hm = hmask + 16 * part;
                for (int l = 0; l < 16; l++) {
                    int v = ((q[l] >> shift) & 3) - (((hm[l] >> bit) & 1) ? 0 : 4);
                    *y++ = dl * (float)v;
                }
            }
        }
    }
}

/* Q4_K / Q5_K: 8 groups of 32, each a 6-bit scale and a 6-bit min packed in 12 bytes
 * (ggml-quants.c get_scale_min_k4): groups 0..3 take the low 6 bits of bytes j and j+4;
 * groups 4..7 take a nibble of byte j+4 and the top 2 bits of bytes j-4 and j. */
static void qt_k4_scale_min(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0F) | (s[j - 4] >> 6) << 4;
        *mn = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* Q4_K: y = (d * sc) * q - (dmin * mn); qs[32 c .. 32 c + 32) holds group 2c in its low
 * nibbles and group 2c + 1 in its high nibbles. */
static void qt_deq_q4_k(const uint8_t *b, float *y) {
    float d = qt_rd_f16(b), dmin = qt_rd_f16(b + 2);
    const uint8_t *s = b + 4, *qs = b + 16;
    for (int g = 0; g < 8; g++) {
        int sc, mn;
        qt_k4_scale_min(s, g, &sc, &mn);
        float dl = d * (float)sc, ml = dmin * (float)mn;
        const uint8_t *q = qs + 32 * (g / 2);
        int shift = 4 * (g % 2);
        for (int l = 0; l < 32; l++)
            *y++ = dl * (float)((q[l] >> shift) & 0x0F) - ml;
    }
}

/* Q5_K: as Q4_K with a fifth bit: bit g of qh[l] for element l of group g. */
static void qt_deq_q5_k(const uint8_t *b, float *y) {
    float d = qt_rd_f16(b), dmin = qt_rd_f16(b + 2);
    const uint8_t *s = b + 4, *qh = b + 16, *qs = b + 48;
    for (int g = 0; g < 8; g++) {
        int sc, mn;
        qt_k4_scale_min(s, g, &sc, &mn);
        float dl = d * (float)sc, ml = dmin * (float)mn;
        const uint8_t *q = qs + 32 * (g / 2);
        int shift = 4 * (g % 2);
        for (int l = 0; l < 32; l++) {
            int v = ((q[l] >> shift) & 0x0F) | ((qh[l] >> g) & 1) << 4;
            *y++ = dl * (float)v - ml;
        }
    }
}

/* Q6_K: 16 groups of 16 with signed 8-bit scales; y = (d * sc) * (q - 32), q 6 bits.
 * Per half of 128 (ql advances 64, qh 32): element 32 k + l (k = 0..3, l < 32) takes
 * the low nibble (k even) or high nibble (k odd) of ql[l + 32 * (k % 2)] and bits 2k of
 * qh[l] as its top two bits; its scale is sc[8 * half + 2 k + l / 16]. */
static void qt_deq_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = qt_rd_f16(b + 208);
    for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, y += 128) {
        for (int k = 0; k < 4; k++) {
            const uint8_t *lo = ql + 32 * (k % 2);
            int nshift = 4 * (k / 2);
            for (int l = 0; l < 32; l++) {
                int q = ((lo[l] >> nshift) & 0x0F) | ((qh[l] >> (2 * k)) & 3) << 4;
                float dl = d * (float)sc[2 * k + l / 16];
                y[32 * k + l] = dl * (float)(q - 32);
            }
        }
    }
}

/* ggml-common.h kvalues_iq4nl */
static const int8_t qt_kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};

const int8_t *qt_iq4nl_values(void) { return qt_kvalues_iq4nl; }

/* IQ4_NL: 32 weights, d * level[q]; qs[j] holds element j (low nibble) and j + 16 (high). */
static void qt_deq_iq4_nl(const uint8_t *b, float *y) {
    float d = qt_rd_f16(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)qt_kvalues_iq4nl[qs[j] & 0x0F];
        y[j + 16] = d * (float)qt_kvalues_iq4nl[qs[j] >> 4];
    }
}

/* IQ4_XS: 8 sub-blocks of 32 as IQ4_NL, each scaled by d * (ls - 32) with the 6-bit ls
 * split into a nibble of scales_l[ib / 2] (low for even ib) and bits 2 ib, 2 ib + 1 of
 * the little-endian u16 scales_h. */
static void qt_deq_iq4_xs(const uint8_t *b, float *y) {
    float d = qt_rd_f16(b);
    unsigned sh = (unsigned)b[2] | (unsigned)b[3] << 8;
    const uint8_t *sl = b + 4, *qs = b + 8;
    for (int ib = 0; ib < 8; ib++, qs += 16, y += 32) {
        int ls = ((sl[ib / 2] >> (4 * (ib % 2))) & 0x0F) | (int)((sh >> (2 * ib)) & 3) << 4;
        float dl = d * (float)(ls - 32);
        for (int j = 0; j < 16; j++) {
            y[j] = dl * (float)qt_kvalues_iq4nl[qs[j] & 0x0F];
            y[j + 16] = dl * (float)qt_kvalues_iq4nl[qs[j] >> 4];
        }
    }
}

/* ------------------------------------------------------------- dequantize ---- */

qt_status qt_ggml_dequantize(qt_ggml_type type, const void *src, float *dst, int64_t n) {
    if (!qt_ggml_can_dequantize(type))
        return QT_ERROR(QT_EDTYPE, "ggml_dequantize: type %d (%s) has no dequantizer", (int)type,
                        qt_ggml_type_name(type));
    int64_t blck = qt_ggml_types[type].blck;
    if (n < 0 || n % blck != 0)
        return QT_ERROR(QT_EINVAL, "ggml_dequantize: %lld %s elements, expected a non-negative "
                        "multiple of the block size %lld", (long long)n,
                        qt_ggml_types[type].name, (long long)blck);
    if (n > 0 && (!src || !dst))
        return QT_ERROR(QT_EINVAL, "ggml_dequantize: %lld %s elements from %p to %p",
                        (long long)n, qt_ggml_types[type].name, src, (void *)dst);
    const uint8_t *b = src;
    size_t bs = qt_ggml_types[type].size;
    int64_t nb = n / blck;
    switch (type) {
    case QT_GGML_F32:
        if (n > 0)
            memcpy(dst, src, (size_t)n * 4);
        break;
    case QT_GGML_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = qt_rd_f16(b + 2 * i);
        break;
    case QT_GGML_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = qt_bf16_to_f32((uint16_t)(b[2 * i] | b[2 * i + 1] << 8));
        break;
#define QT_DEQ_CASE(T, fn)                                \
    case T:                                               \
        for (int64_t i = 0; i < nb; i++)                  \
            fn(b + (size_t)i * bs, dst + i * blck);       \
        break;
        QT_DEQ_CASE(QT_GGML_Q4_0, qt_deq_q4_0)
        QT_DEQ_CASE(QT_GGML_Q4_1, qt_deq_q4_1)
        QT_DEQ_CASE(QT_GGML_Q5_0, qt_deq_q5_0)
        QT_DEQ_CASE(QT_GGML_Q5_1, qt_deq_q5_1)
        QT_DEQ_CASE(QT_GGML_Q8_0, qt_deq_q8_0)
        QT_DEQ_CASE(QT_GGML_Q2_K, qt_deq_q2_k)
        QT_DEQ_CASE(QT_GGML_Q3_K, qt_deq_q3_k)
        QT_DEQ_CASE(QT_GGML_Q4_K, qt_deq_q4_k)
        QT_DEQ_CASE(QT_GGML_Q5_K, qt_deq_q5_k)
        QT_DEQ_CASE(QT_GGML_Q6_K, qt_deq_q6_k)
        QT_DEQ_CASE(QT_GGML_IQ4_NL, qt_deq_iq4_nl)
        QT_DEQ_CASE(QT_GGML_IQ4_XS, qt_deq_iq4_xs)
#undef QT_DEQ_CASE
    default:
        return QT_ERROR(QT_EDTYPE, "ggml_dequantize: type %s has no dequantizer",
                        qt_ggml_type_name(type));
    }
    return QT_OK;
}
