/*
 * quant_nf4.c - NF4 and FP4 4-bit blockwise quantization with optional double
 * quantization, bit for bit as bitsandbytes 0.50 computes it on CPU:
 *   - quantize_4bit: backends/default/ops.py (the torch kernel the CPU backend uses):
 *     the tensor flattened, absmax per block, scaled = clamp(w * (1 / max(absmax, 1e-38)),
 *     -1, 1), code = torch.bucketize(scaled, midpoints of the sorted codebook), i.e. the
 *     number of midpoints strictly below scaled: a value exactly on a midpoint takes the
 *     LOWER code.
 *   - double quantization (functional.quantize_4bit, compress_statistics=True):
 *     offset = absmax.mean(), then quantize_blockwise(absmax - offset, blocksize=256,
 *     create_dynamic_map(signed=True)), which on CPU is csrc/cpu_ops.cpp quantize_cpu_impl.
 *   - dequantization: code[q] * absmax (cpu_ops.cpp dequantizeBlockwise4bitCpu); with
 *     double quantization absmax = dynamic[qabsmax] * absmax2 + offset (two f32 ops,
 *     dequantize_blockwise then `absmax += offset`).
 *
 * Surprises, all reproduced on purpose:
 *   - the last, partial block divides (w / am) where full blocks multiply by the f32
 *     reciprocal, and stores the clamped am = max(absmax, 1e-38); full blocks store the
 *     raw absmax (0 for an all-zero block).
 *   - FP4's codebook holds +0 (code 0) and -0 (code 8). bnb sorts it with torch.argsort,
 *     which puts code 0 before code 8, so scaled values in [-midpoint, 0] get code 0 and
 *     those in (0, +midpoint] get code 8 (both +0.0: bnb's table writes -0 as the
 *     Python integer 0).
 *   - quantize_blockwise on CPU does not take the nearest dynamic-map entry: it maps
 *     scaled x in [-1, 1] to one of 65536 bins, idx = (uint16)fma((x + 1) * 0.5, 65535,
 *     0.5) (the shipped binary contracts this to vfmadd), and a 65536-entry table built
 *     from the map's midpoints gives the code. An all-zero block of 256 gets codes 0.
 *   - offset = torch's mean: its f32 cascade sum (aten/native/cpu/SumKernel.cpp,
 *     vectorized_inner_sum with 8-float vectors, 4-way ILP, 4 levels; scalar_inner_sum below 8 values) divided by n. This
 *     matches torch bit for bit for up to 32768 blocks on one thread; beyond that torch
 *     splits the sum across threads and its own result depends on the thread count.
 *   - create_dynamic_map's torch.linspace runs `start + step * i` contracted to an FMA.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "quant_internal.h"

/* bitsandbytes functional.get_4bit_type("nf4") (QLoRA appendix E) */
static const float nf4_code[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
/* get_4bit_type("fp4"): these over 12 (the max) in f32; filled by init_tables */
static const float fp4_raw[16] = {0.0f, 0.0625f, 8.0f, 12.0f, 4.0f, 6.0f, 2.0f, 3.0f,
                                  0.0f, -0.0625f, -8.0f, -12.0f, -4.0f, -6.0f, -2.0f, -3.0f};
/* torch.argsort(fp4 code) as bnb's _get_4bit_quantize_bounds gets it (+0 before -0) */
static const uint8_t fp4_order[16] = {11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3};

#define DQ_BLOCK 256       /* functional.quantize_4bit: quantize_blockwise(..., blocksize=256) */
#define DQ_LUT 65536       /* cpu_ops.cpp kLUTSize */
#define ABSMAX_MIN 1e-38f  /* default/ops.py: absmax.clamp(min=1e-38) */

static float fp4_code[16];
static float dyn_map[256];
static float nf4_bounds[16], fp4_bounds[16]; /* 15 sorted midpoints, then +inf */
static uint8_t dyn_lut[DQ_LUT];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* functional.create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) */
static void build_dynamic_map(float *map) {
    /* 10 ** (-(max_exponent_bits - 1) + i), cast to f32 when it multiplies the tensor */
    static const double pow10[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
    int n = 0;
    for (int i = 0; i < 7; i++) {
        int items = (1 << i) + 1; /* 2 ** (i + non_sign_bits - max_exponent_bits) + 1 */
        float b[65];
        /* torch.linspace(0.1, 1, items) in f32 (RangeFactoriesKernel.cpp linspace_kernel) */
        const float start = 0.1f, end = 1.0f, step = (end - start) / (float)(items - 1);
        const int half = items / 2;
        for (int k = 0; k < items; k++)
            b[k] = k < half ? fmaf(step, (float)k, start) : fmaf(-step, (float)(items - k - 1), end);
        float scale = (float)pow10[i];
        for (int k = 0; k + 1 < items; k++) map[n++] = scale * ((b[k] + b[k + 1]) / 2.0f);
        for (int k = 0; k + 1 < items; k++) map[n++] = -scale * ((b[k] + b[k + 1]) / 2.0f);
    }
    map[n++] = 0.0f;
    map[n++] = 1.0f; /* 127 + 127 + 2 = 256 = 2^total_bits: no zero padding */
    qsort(map, 256, sizeof *map, cmp_float);
}

static void init_tables(void) {
    for (int i = 0; i < 16; i++) fp4_code[i] = fp4_raw[i] / 12.0f;
    build_dynamic_map(dyn_map);
    for (int i = 0; i < 15; i++) {
        nf4_bounds[i] = (nf4_code[i] + nf4_code[i + 1]) / 2.0f;
        fp4_bounds[i] = (fp4_code[fp4_order[i]] + fp4_code[fp4_order[i + 1]]) / 2.0f;
    }
    nf4_bounds[15] = fp4_bounds[15] = INFINITY;
    /* cpu_ops.cpp build_quantize_lut */
    float mid[255];
    for (int i = 0; i < 255; i++) mid[i] = 0.5f * (dyn_map[i] + dyn_map[i + 1]);
    int c = 0;
    for (int i = 0; i < DQ_LUT; i++) {
        float v = -1.0f + (2.0f * (float)i) / (float)(DQ_LUT - 1);
        while (c < 255 && mid[c] < v) c++;
        dyn_lut[i] = (uint8_t)c;
    }
}

static void tables(void) { pthread_once(&tables_once, init_tables); }

const float *qt_nf4_codebook(void) { return nf4_code; }
const float *qt_fp4_codebook(void) {
    tables();
    return fp4_code;
}
const float *qt_dynamic_map(void) {
    tables();
    return dyn_map;
}

void qt_4bit_tables_get(qt_4bit_tables *t) {
    tables();
    t->code[0] = nf4_code;
    t->code[1] = fp4_code;
    t->bounds[0] = nf4_bounds;
    t->bounds[1] = fp4_bounds;
    t->fp4_order = fp4_order;
    t->dyn_map = dyn_map;
    t->dyn_lut = dyn_lut;
    t->lut_size = DQ_LUT;
}

static inline float clamp1(float x) { return x < -1.0f ? -1.0f : (x > 1.0f ? 1.0f : x); }

/* torch.bucketize(x, bounds, right=False): the number of bounds strictly below x */
static inline int bucket(const float *b, float x) {
    int p = 0;
    if (b[p + 7] < x) p += 8;
    if (b[p + 3] < x) p += 4;
    if (b[p + 1] < x) p += 2;
    if (b[p] < x) p += 1;
    return p;
}

/* The f32 cascade sum torch.sum runs on a contiguous f32 vector (SumKernel.cpp
 * vectorized_inner_sum -> row_sum -> multi_row_sum), with 8-lane vectors. */
#define SUM_W 8
#define SUM_ILP 4
#define SUM_LEVELS 4
static int ceil_log2(int64_t x) {
    int r = 0;
    while (((int64_t)1 << r) < x) r++;
    return r;
}
static float torch_sum_f32(const float *a, int64_t n) {
    if (n < SUM_W) { /* scalar_inner_sum: row_sum with 4-way ILP over single floats */
        float ps[SUM_ILP] = {0.0f, 0.0f, 0.0f, 0.0f};
        int64_t i = 0;
        if (n >= SUM_ILP)
            for (; i < SUM_ILP; i++) ps[i] += a[i];
        for (; i < n; i++) ps[0] += a[i];
        for (int k = 1; k < SUM_ILP; k++) ps[0] += ps[k];
        return ps[0];
    }
    const int64_t nvec = n / SUM_W, size = nvec / SUM_ILP;
    float acc[SUM_LEVELS][SUM_ILP][SUM_W];
    memset(acc, 0, sizeof acc);
    int lp = ceil_log2(size) / SUM_LEVELS;
    if (lp < 4) lp = 4;
    const int64_t step = (int64_t)1 << lp, mask = step - 1;
    int64_t i = 0;
#define ADD_ROW(i_)                                                       \
    for (int k = 0; k < SUM_ILP; k++)                                     \
        for (int l = 0; l < SUM_W; l++) acc[0][k][l] += a[((i_) * SUM_ILP + k) * SUM_W + l];
    while (i + step <= size) {
        for (int64_t j = 0; j < step; j++, i++) { ADD_ROW(i) }
        for (int j = 1; j < SUM_LEVELS; j++) {
            for (int k = 0; k < SUM_ILP; k++)
                for (int l = 0; l < SUM_W; l++) {
                    acc[j][k][l] += acc[j - 1][k][l];
                    acc[j - 1][k][l] = 0.0f;
                }
            if (i & (mask << (j * lp))) break;
        }
    }
    for (; i < size; i++) { ADD_ROW(i) }
#undef ADD_ROW
    for (int j = 1; j < SUM_LEVELS; j++)
        for (int k = 0; k < SUM_ILP; k++)
            for (int l = 0; l < SUM_W; l++) acc[0][k][l] += acc[j][k][l];
    float v[SUM_W];
    for (int l = 0; l < SUM_W; l++) v[l] = acc[0][0][l];
    for (int64_t r = size * SUM_ILP; r < nvec; r++) /* row_sum's leftover vectors */
        for (int l = 0; l < SUM_W; l++) v[l] += a[r * SUM_W + l];
    for (int k = 1; k < SUM_ILP; k++)
        for (int l = 0; l < SUM_W; l++) v[l] += acc[0][k][l];
    float fin = 0.0f;
    for (int64_t k = nvec * SUM_W; k < n; k++) fin += a[k];
    for (int l = 0; l < SUM_W; l++) fin += v[l];
    return fin;
}

/* absmax per block of the flattened tensor, as quantize_4bit stores it. */
static void block_absmax(const float *w, int64_t n, int64_t bs, float *absmax) {
    const int64_t nb = (n + bs - 1) / bs;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        int64_t e = b * bs + bs < n ? b * bs + bs : n;
        float m = 0.0f;
        for (int64_t i = b * bs; i < e; i++) {
            float a = fabsf(w[i]);
            m = a > m ? a : m;
        }
        /* the partial last block's absmax is stored clamped (default/ops.py) */
        if (e - b * bs < bs && m < ABSMAX_MIN) m = ABSMAX_MIN;
        absmax[b] = m;
    }
}

/* Double quantization of nb absmax values: fills qabs (nb), absmax2 (ceil(nb/256)),
 * *offset and deq (nb), the absmax dequantization then uses. */
static void double_quant(const float *absmax, int64_t nb, uint8_t *qabs, float *absmax2,
                         float *offset, float *deq) {
    tables();
    const float off = torch_sum_f32(absmax, nb) / (float)nb; /* absmax.mean() */
    const int64_t nb2 = (nb + DQ_BLOCK - 1) / DQ_BLOCK;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb2; b++) {
        int64_t s = b * DQ_BLOCK, e = s + DQ_BLOCK < nb ? s + DQ_BLOCK : nb;
        float m = 0.0f;
        for (int64_t i = s; i < e; i++) {
            float a = fabsf(absmax[i] - off);
            m = a > m ? a : m;
        }
        absmax2[b] = m;
        if (m == 0.0f) {
            for (int64_t i = s; i < e; i++) qabs[i] = 0;
        } else {
            const float inv = 1.0f / m;
            for (int64_t i = s; i < e; i++) {
                float x = clamp1((absmax[i] - off) * inv);
                qabs[i] = dyn_lut[(uint16_t)(int)fmaf((x + 1.0f) * 0.5f, (float)(DQ_LUT - 1), 0.5f)];
            }
        }
        for (int64_t i = s; i < e; i++) {
            float v = dyn_map[qabs[i]] * m;
            deq[i] = v + off;
        }
    }
    *offset = off;
}

/* Codes of one block [s, e) and, when out is set, code * scale into out. */
static void encode_block(const float *w, int64_t s, int64_t e, int64_t bs, float absmax,
                         bool fp4, uint8_t *codes, float *out, float scale) {
    const float *bounds = fp4 ? fp4_bounds : nf4_bounds;
    const float *code = fp4 ? fp4_code : nf4_code;
    const float am = absmax < ABSMAX_MIN ? ABSMAX_MIN : absmax;
    const bool partial = e - s < bs;
    const float recip = 1.0f / am;
    for (int64_t i = s; i < e; i++) {
        float x = clamp1(partial ? w[i] / am : w[i] * recip);
        int p = bucket(bounds, x);
        uint8_t q = fp4 ? fp4_order[p] : (uint8_t)p;
        if (codes) codes[i] = q;
        if (out) out[i] = code[q] * scale;
    }
}

qt_status qt_nf4_quantize(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                          qt_qtensor *out) {
    tables();
    const int64_t n = rows * cols, bs = f->group_size, nb = (n + bs - 1) / bs;
    const bool fp4 = f->kind == QT_QF_FP4;
    out->fmt = *f;
    out->rows = rows;
    out->cols = cols;
    out->n_scales = nb;
    out->codes = malloc((size_t)n);
    out->scales = malloc((size_t)nb * sizeof(float));
    float *raw = f->double_quant ? malloc((size_t)nb * sizeof(float)) : out->scales;
    if (f->double_quant) {
        out->n_absmax2 = (nb + DQ_BLOCK - 1) / DQ_BLOCK;
        out->absmax_q = malloc((size_t)nb);
        out->absmax2 = malloc((size_t)out->n_absmax2 * sizeof(float));
    }
    if (!out->codes || !out->scales || !raw ||
        (f->double_quant && (!out->absmax_q || !out->absmax2))) {
        if (raw != out->scales) free(raw);
        return QT_ERROR(QT_ENOMEM, "nf4 quantize: out of memory for %lld x %lld",
                        (long long)rows, (long long)cols);
    }
    block_absmax(w, n, bs, raw);
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        int64_t e = b * bs + bs < n ? b * bs + bs : n;
        encode_block(w, b * bs, e, bs, raw[b], fp4, out->codes, NULL, 0.0f);
    }
    if (f->double_quant) {
        double_quant(raw, nb, out->absmax_q, out->absmax2, &out->offset, out->scales);
        free(raw);
    }
    return QT_OK;
}

qt_status qt_nf4_dequantize(const qt_qtensor *q, float *out) {
    tables();
    const int64_t n = q->rows * q->cols, bs = q->fmt.group_size, nb = (n + bs - 1) / bs;
    if (!q->codes || !q->scales || q->n_scales != nb)
        return QT_ERROR(QT_EINVAL, "nf4 dequantize: expected codes and %lld scales, found %lld",
                        (long long)nb, (long long)q->n_scales);
    const float *code = q->fmt.kind == QT_QF_FP4 ? fp4_code : nf4_code;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        int64_t e = b * bs + bs < n ? b * bs + bs : n;
        const float s = q->scales[b];
        for (int64_t i = b * bs; i < e; i++) out[i] = code[q->codes[i] & 15] * s;
    }
    return QT_OK;
}

qt_status qt_nf4_fake_quant(const qt_qformat *f, const float *w, int64_t rows, int64_t cols,
                            float *out, uint8_t *mask) {
    tables();
    const int64_t n = rows * cols, bs = f->group_size, nb = (n + bs - 1) / bs;
    const bool fp4 = f->kind == QT_QF_FP4;
    const int64_t nb2 = (nb + DQ_BLOCK - 1) / DQ_BLOCK;
    /* raw absmax | dequantized absmax | absmax2, then the 8-bit codes */
    size_t fl = (size_t)(f->double_quant ? 2 * nb + nb2 : nb);
    float *buf = malloc(fl * sizeof(float) + (f->double_quant ? (size_t)nb : 0));
    if (!buf) return QT_ERROR(QT_ENOMEM, "nf4 fake_quant: out of memory for %lld blocks", (long long)nb);
    float *raw = buf, *scale = buf;
    block_absmax(w, n, bs, raw);
    if (f->double_quant) {
        float offset;
        scale = buf + nb;
        double_quant(raw, nb, (uint8_t *)(buf + fl), buf + 2 * nb, &offset, scale);
    }
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        int64_t e = b * bs + bs < n ? b * bs + bs : n;
        encode_block(w, b * bs, e, bs, raw[b], fp4, NULL, out, scale[b]);
    }
    if (mask) memset(mask, 1, (size_t)n); /* no clipping: every block spans its absmax */
    free(buf);
    return QT_OK;
}
