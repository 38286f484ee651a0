/*
 * quant.cu - the quantizer core's fake-quant (INT, NF4/FP4, FP8), activation fake-quant,
 * the STE backward and NF4 dequantization on the GPU (qt_cuda_quant.h).
 *
 * Bit-identity with ptq/ (compiled with -ffp-contract=off): every float operation below
 * is the CPU's, in its order, written with __fmul_rn/__fadd_rn/__fsub_rn/__fdiv_rn so
 * nvcc cannot contract a multiply and an add into an FMA (it does by default); the one
 * fmaf is the CPU's own (double quantization). min/max use the CPU's ternaries starting
 * at +0 (order-independent: -0 never wins), so parallel reductions give the same value.
 * The two sequential sums the CPU has (torch's cascade sum for the NF4 offset) run with
 * the CPU's per-accumulator order (one lane per accumulator).
 *
 * Structure of qt_cuda_fake_quant: phase 1, one block per group (INT group/channel/tensor,
 * FP8 channel/tensor, NF4 block) reduces it and stores its scale in scratch; phase 2 is
 * elementwise. Non-finite weights and overflowing scales are recorded with atomicMin of
 * the element / group index in a status word read back at the end (one sync per call).
 * Tables (NF4/FP4 codebooks and bounds, bnb's dynamic map and its 65536-entry LUT) are
 * built on the host with quant_nf4.c's code and copied to __device__ arrays once.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <mutex>

#include "common.cuh"
#include "qt_cuda_quant.h"

#define DQ_BLOCK 256
#define DQ_LUT 65536
#define ABSMAX_MIN 1e-38f
#define E4M3_MAX 448.0f
#define E5M2_MAX 57344.0f

/* ------------------------------------------------------------------ tables ---- */

/* [0] nf4, [1] fp4: the quantizer core's own tables (qt_4bit_tables_get), uploaded */
__device__ float d_code[2][16];
__device__ float d_bounds[2][16];
__device__ uint8_t d_fp4_order[16];
__device__ float d_dyn_map[256];
__device__ uint8_t d_dyn_lut[DQ_LUT];

static std::mutex g_mu;
static bool g_tables_ok = false;

static qt_status upload_tables(void) {
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_tables_ok) return QT_OK;
    qt_4bit_tables t;
    qt_4bit_tables_get(&t);
    if (t.lut_size != DQ_LUT)
        return QT_ERROR(QT_ESTATE, "cuda quant: the core's LUT has %d entries, expected %d",
                        t.lut_size, DQ_LUT);
    for (int k = 0; k < 2; k++) {
        QT_CUDA_CHECK(cudaMemcpyToSymbol(d_code, t.code[k], 16 * sizeof(float),
                                         (size_t)k * 16 * sizeof(float)));
        QT_CUDA_CHECK(cudaMemcpyToSymbol(d_bounds, t.bounds[k], 16 * sizeof(float),
                                         (size_t)k * 16 * sizeof(float)));
    }
    QT_CUDA_CHECK(cudaMemcpyToSymbol(d_fp4_order, t.fp4_order, 16));
    QT_CUDA_CHECK(cudaMemcpyToSymbol(d_dyn_map, t.dyn_map, 256 * sizeof(float)));
    QT_CUDA_CHECK(cudaMemcpyToSymbol(d_dyn_lut, t.dyn_lut, DQ_LUT));
    g_tables_ok = true;
    return QT_OK;
}

/* ----------------------------------------------------- scratch and status ---- */

/* status[0]: smallest index of a non-finite weight; status[1]: smallest group whose scale
 * is not finite (UINT64_MAX: none). */
typedef unsigned long long u64;

/* Scratch of at least `bytes` (+ the status word at its start): the backend's shared
 * workspace, which this call alone uses until it returns. */
static qt_status scratch(size_t bytes, void **out) {
    *out = qt_cuda_workspace(bytes + 256);
    return *out ? QT_OK : QT_ENOMEM;
}

/* ------------------------------------------------------- device helpers ---- */

#define RED_MAX 1024 /* threads of a reduction block: a power of two, 32..1024 */

/* Block min and max (ternaries from +0 as the CPU: order-independent) and the smallest
 * index of a non-finite element (as u64; UINT64_MAX none). blockDim.x a power of two. */
struct red_shm {
    float mn[RED_MAX], mx[RED_MAX];
    u64 bad[RED_MAX];
};
__device__ void block_reduce(float &mn, float &mx, u64 &bad, red_shm *sh) {
    const int t = threadIdx.x;
    __syncthreads();
    sh->mn[t] = mn;
    sh->mx[t] = mx;
    sh->bad[t] = bad;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) {
            float a = sh->mn[t + s], b = sh->mx[t + s];
            u64 c = sh->bad[t + s];
            sh->mn[t] = a < sh->mn[t] ? a : sh->mn[t];
            sh->mx[t] = b > sh->mx[t] ? b : sh->mx[t];
            sh->bad[t] = c < sh->bad[t] ? c : sh->bad[t];
        }
        __syncthreads();
    }
    mn = sh->mn[0];
    mx = sh->mx[0];
    bad = sh->bad[0];
}

__device__ __forceinline__ float round_to_dtype(float x, int t) {
    if (t == (int)QT_F16) return __half2float(__float2half_rn(x));
    if (t == (int)QT_BF16) return __bfloat162float(__float2bfloat16_rn(x));
    return x;
}

/* quant_int.c params_from_minmax */
__device__ void int_params(float mn, float mx, int bits, bool sym, int sdt, float *scale,
                           uint8_t *zero) {
    const int qmax = (1 << bits) - 1;
    mn = mn < 0.0f ? mn : 0.0f;
    mx = mx > 0.0f ? mx : 0.0f;
    float s;
    if (sym) {
        float amax = -mn > mx ? -mn : mx;
        s = __fdiv_rn(amax, __fdiv_rn((float)qmax, 2.0f));
    } else {
        s = __fdiv_rn(__fsub_rn(mx, mn), (float)qmax);
    }
    s = round_to_dtype(s, sdt);
    if (s == 0.0f || (isfinite(s) && !isfinite(__fdiv_rn(1.0f, s))))
        s = round_to_dtype(FLT_EPSILON, sdt);
    *scale = s;
    if (sym) {
        *zero = (uint8_t)(1 << (bits - 1));
    } else if (!isfinite(s)) {
        *zero = 0;
    } else {
        float z = -rintf(__fdiv_rn(mn, s));
        z = z < 0.0f ? 0.0f : (z > (float)qmax ? (float)qmax : z);
        *zero = (uint8_t)z;
    }
}

__device__ __forceinline__ float clamp1(float x) {
    return x < -1.0f ? -1.0f : (x > 1.0f ? 1.0f : x);
}

/* ------------------------------------------------------- phase 1 kernels ---- */

enum { RED_INT = 0, RED_FP8 = 1, RED_NF4 = 2 };

/* One block per group g of L elements [g*L, min(g*L+L, n)): INT: scale and zero point;
 * FP8: s = amax / maxv (0 -> FLT_EPSILON); NF4: the stored absmax (partial block clamped).
 * Non-finite elements -> status[0]; INT non-finite scale -> status[1]. */
__global__ void group_params(const float *w, int64_t n, int64_t L, int64_t ng, int mode,
                             int bits, bool sym, int sdt, float maxv, float *scales,
                             uint8_t *zeros, u64 *status) {
    __shared__ red_shm sh;
    for (int64_t g = blockIdx.x; g < ng; g += gridDim.x) {
        const int64_t s0 = g * L, e = s0 + L < n ? s0 + L : n;
        float mn = 0.0f, mx = 0.0f;
        u64 bad = ~0ull;
        for (int64_t i = s0 + threadIdx.x; i < e; i += blockDim.x) {
            float x = w[i];
            if (!isfinite(x)) {
                bad = (u64)i < bad ? (u64)i : bad;
                continue;
            }
            if (mode == RED_INT) {
                mn = x < mn ? x : mn;
                mx = x > mx ? x : mx;
            } else {
                float a = fabsf(x);
                mx = a > mx ? a : mx;
            }
        }
        block_reduce(mn, mx, bad, &sh);
        if (threadIdx.x == 0) {
            if (bad != ~0ull) atomicMin(&status[0], bad);
            if (mode == RED_INT) {
                float s;
                uint8_t z;
                int_params(mn, mx, bits, sym, sdt, &s, &z);
                if (!isfinite(s)) atomicMin(&status[1], (u64)g);
                scales[g] = s;
                zeros[g] = z;
            } else if (mode == RED_FP8) {
                float s = __fdiv_rn(mx, maxv);
                scales[g] = s == 0.0f ? FLT_EPSILON : s;
            } else {
                float m = mx;
                if (e - s0 < L && m < ABSMAX_MIN) m = ABSMAX_MIN;
                scales[g] = m;
            }
        }
    }
}

/* torch.sum of nb f32 (quant_nf4.c torch_sum_f32) / nb -> *off. One warp: lane = k*8+l
 * owns the accumulators acc[.][k][l], whose adds the CPU performs in this same order. */
#define SUM_W 8
#define SUM_ILP 4
#define SUM_LEVELS 4
__global__ void nf4_mean(const float *a, int64_t n, float *off) {
    const int lane = threadIdx.x; /* 32 threads */
    __shared__ float acc0[32];
    if (n < SUM_W) {
        if (lane == 0) {
            float ps[SUM_ILP] = {0.0f, 0.0f, 0.0f, 0.0f};
            int64_t i = 0;
            if (n >= SUM_ILP)
                for (; i < SUM_ILP; i++) ps[i] = __fadd_rn(ps[i], a[i]);
            for (; i < n; i++) ps[0] = __fadd_rn(ps[0], a[i]);
            for (int k = 1; k < SUM_ILP; k++) ps[0] = __fadd_rn(ps[0], ps[k]);
            *off = __fdiv_rn(ps[0], (float)n);
        }
        return;
    }
    const int64_t nvec = n / SUM_W, size = nvec / SUM_ILP;
    const int k = lane / SUM_W, l = lane % SUM_W;
    float acc[SUM_LEVELS] = {0.0f, 0.0f, 0.0f, 0.0f};
    int cl = 0;
    while (((int64_t)1 << cl) < size) cl++;
    int lp = cl / SUM_LEVELS;
    if (lp < 4) lp = 4;
    const int64_t step = (int64_t)1 << lp, mask = step - 1;
    int64_t i = 0;
    while (i + step <= size) {
        for (int64_t j = 0; j < step; j++, i++) acc[0] = __fadd_rn(acc[0], a[(i * SUM_ILP + k) * SUM_W + l]);
        for (int j = 1; j < SUM_LEVELS; j++) {
            acc[j] = __fadd_rn(acc[j], acc[j - 1]);
            acc[j - 1] = 0.0f;
            if (i & (mask << (j * lp))) break;
        }
    }
    for (; i < size; i++) acc[0] = __fadd_rn(acc[0], a[(i * SUM_ILP + k) * SUM_W + l]);
    for (int j = 1; j < SUM_LEVELS; j++) acc[0] = __fadd_rn(acc[0], acc[j]);
    acc0[lane] = acc[0];
    __syncwarp();
    if (lane == 0) {
        float v[SUM_W];
        for (int q = 0; q < SUM_W; q++) v[q] = acc0[q]; /* k = 0 */
        for (int64_t r = size * SUM_ILP; r < nvec; r++)
            for (int q = 0; q < SUM_W; q++) v[q] = __fadd_rn(v[q], a[r * SUM_W + q]);
        for (int kk = 1; kk < SUM_ILP; kk++)
            for (int q = 0; q < SUM_W; q++) v[q] = __fadd_rn(v[q], acc0[kk * SUM_W + q]);
        float fin = 0.0f;
        for (int64_t q = nvec * SUM_W; q < n; q++) fin = __fadd_rn(fin, a[q]);
        for (int q = 0; q < SUM_W; q++) fin = __fadd_rn(fin, v[q]);
        *off = __fdiv_rn(fin, (float)n);
    }
}

/* quant_nf4.c double_quant: one block (256 threads) per 256 absmax; deq = dequantized. */
__global__ void nf4_double_quant(const float *absmax, int64_t nb, const float *offp,
                                 float *deq) {
    __shared__ red_shm sh;
    const float off = *offp;
    const int64_t s0 = (int64_t)blockIdx.x * DQ_BLOCK, i = s0 + threadIdx.x;
    const bool in = i < nb;
    float mn = 0.0f, m = 0.0f;
    u64 bad = ~0ull;
    if (in) m = fabsf(__fsub_rn(absmax[i], off));
    block_reduce(mn, m, bad, &sh);
    if (!in) return;
    uint8_t q = 0;
    if (m != 0.0f) {
        const float inv = __fdiv_rn(1.0f, m);
        float x = clamp1(__fmul_rn(__fsub_rn(absmax[i], off), inv));
        q = d_dyn_lut[(uint16_t)(int)fmaf(__fmul_rn(__fadd_rn(x, 1.0f), 0.5f),
                                          (float)(DQ_LUT - 1), 0.5f)];
    }
    deq[i] = __fadd_rn(__fmul_rn(d_dyn_map[q], m), off);
}

/* ------------------------------------------------------- phase 2 kernels ---- */

__global__ void int_apply(const float *w, int64_t n, int64_t L, const float *scales,
                          const uint8_t *zeros, int bits, float *out, uint8_t *mask) {
    const float hi = (float)((1 << bits) - 1);
    QT_GRID_LOOP(i, n) {
        const int64_t g = i / L;
        const float s = scales[g];
        const int z = zeros[g];
        float inv = __fdiv_rn(1.0f, s);
        float qf = __fadd_rn(rintf(__fmul_rn(w[i], inv)), (float)z);
        if (mask) mask[i] = qf >= 0.0f && qf <= hi;
        qf = qf < 0.0f ? 0.0f : (qf > hi ? hi : qf);
        out[i] = __fmul_rn((float)((int)(uint8_t)qf - z), s);
    }
}

/* quant_fp8.c fp8_mag / qt_f32_to_e4m3 / qt_f32_to_e5m2 */
__device__ __forceinline__ uint8_t fp8_encode(float x, bool e4) {
    const int mbits = e4 ? 3 : 2, bias = e4 ? 7 : 15;
    const float maxv = e4 ? E4M3_MAX : E5M2_MAX;
    const uint32_t maxcode = e4 ? 0x7eu : 0x7bu;
    uint8_t sign = (uint8_t)((__float_as_uint(x) >> 24) & 0x80u);
    if (isnan(x)) return sign | 0x7f;
    float a = fabsf(x);
    if (!(a < maxv)) return sign | (uint8_t)maxcode;
    const int emin = 1 - bias;
    if (a < ldexpf(1.0f, emin)) return sign | (uint8_t)rintf(__fmul_rn(a, ldexpf(1.0f, mbits - emin)));
    const int shift = 23 - mbits;
    uint32_t u = __float_as_uint(a);
    u += ((1u << (shift - 1)) - 1u) + ((u >> shift) & 1u);
    uint32_t code = (u >> shift) - ((uint32_t)(127 - bias) << mbits);
    return sign | (uint8_t)(code > maxcode ? maxcode : code);
}

/* qt_e4m3_to_f32 / qt_e5m2_to_f32 (every step exact) */
__device__ __forceinline__ float fp8_decode(uint8_t b, bool e4) {
    if (!e4) return __half2float(__ushort_as_half((unsigned short)((unsigned)b << 8)));
    uint32_t sign = (uint32_t)(b & 0x80) << 24;
    int e = (b >> 3) & 15, m = b & 7;
    if (e == 15 && m == 7) return __uint_as_float(sign | 0x7fc00000u);
    float v = e == 0 ? ldexpf((float)m, -9) : ldexpf(__fadd_rn(1.0f, __fdiv_rn((float)m, 8.0f)), e - 7);
    return __uint_as_float(sign | __float_as_uint(v));
}

__global__ void fp8_apply(const float *w, int64_t n, int64_t L, const float *scales, bool e4,
                          float *out, uint8_t *mask) {
    const float maxv = e4 ? E4M3_MAX : E5M2_MAX;
    QT_GRID_LOOP(i, n) {
        const float s = scales[i / L];
        float x = __fdiv_rn(w[i], s);
        uint8_t q = fp8_encode(x, e4);
        if (mask) mask[i] = fabsf(x) <= maxv;
        out[i] = __fmul_rn(fp8_decode(q, e4), s);
    }
}

/* quant_nf4.c encode_block with out: raw = stored absmax, scale = what dequant uses. */
__global__ void nf4_apply(const float *w, int64_t n, int64_t bs, const float *raw,
                          const float *scale, int fp4, float *out, uint8_t *mask) {
    const float *bounds = d_bounds[fp4], *code = d_code[fp4];
    const int64_t nb = (n + bs - 1) / bs;
    const bool last_partial = n % bs != 0;
    QT_GRID_LOOP(i, n) {
        const int64_t b = i / bs;
        const float absmax = raw[b];
        const float am = absmax < ABSMAX_MIN ? ABSMAX_MIN : absmax;
        const bool partial = last_partial && b == nb - 1;
        float x = clamp1(partial ? __fdiv_rn(w[i], am) : __fmul_rn(w[i], __fdiv_rn(1.0f, am)));
        int p = 0;
        if (bounds[p + 7] < x) p += 8;
        if (bounds[p + 3] < x) p += 4;
        if (bounds[p + 1] < x) p += 2;
        if (bounds[p] < x) p += 1;
        int q = fp4 ? d_fp4_order[p] : p;
        out[i] = __fmul_rn(code[q], scale[b]);
        if (mask) mask[i] = 1;
    }
}

/* ----------------------------------------------------------- fake_quant ---- */

static unsigned red_threads(int64_t L) {
    unsigned t = 32;
    while (t < 1024 && (int64_t)t < L) t <<= 1;
    return t > 256 && L < 65536 ? 256 : t; /* 1024 only for a long single group */
}
static unsigned red_grid(int64_t ng) { return (unsigned)(ng < 65535 * 16 ? (ng > 0 ? ng : 1) : 65535 * 16); }

static qt_status read_status(u64 *st, const char *fmt_name, int64_t cols, int bits, int sdt) {
    u64 h[2];
    QT_CUDA_CHECK(cudaMemcpy(h, st, sizeof h, cudaMemcpyDeviceToHost));
    if (h[0] != ~0ull)
        return QT_ERROR(QT_ENUMERIC, "cuda fake_quant %s: weight at (row %lld, col %lld) is not finite",
                        fmt_name, (long long)(h[0] / (u64)cols), (long long)(h[0] % (u64)cols));
    if (h[1] != ~0ull)
        return QT_ERROR(QT_ENUMERIC,
                        "int%d: the scale of group %llu overflows %s (the weights' range is too "
                        "large for this scale dtype%s)",
                        bits, h[1], qt_dtype_name((qt_dtype)sdt),
                        sdt == (int)QT_F16 ? ", f16 max 65504" : "");
    return QT_OK;
}

static size_t al256(size_t x) { return (x + 255) / 256 * 256; }

extern "C" qt_status qt_cuda_fake_quant(const qt_qformat *f, const float *w, int64_t rows,
                                        int64_t cols, float *out, uint8_t *mask) {
    if (!f || !w || !out) return QT_ERROR(QT_EINVAL, "cuda fake_quant: NULL format, weights or output");
    if (rows <= 0 || cols <= 0)
        return QT_ERROR(QT_EINVAL, "cuda fake_quant: shape must be positive, got %lld x %lld",
                        (long long)rows, (long long)cols);
    const int64_t n = rows * cols;
    const int T = 256;
    void *sp;
    u64 *st;
    qt_status s;
    switch (f->kind) {
    case QT_QF_INT: {
        if (f->bits < 2 || f->bits > 8)
            return QT_ERROR(QT_EINVAL, "cuda fake_quant: int bits must be 2..8, got %d", f->bits);
        if (f->scale_dtype != QT_F32 && f->scale_dtype != QT_F16 && f->scale_dtype != QT_BF16)
            return QT_ERROR(QT_EINVAL, "cuda fake_quant: int scale dtype must be f32, f16 or bf16");
        int64_t L = f->gran == QT_QG_GROUP ? f->group_size : f->gran == QT_QG_CHANNEL ? cols : n;
        if (L <= 0 || cols % (f->gran == QT_QG_GROUP ? L : 1) != 0)
            return QT_ERROR(QT_EINVAL, "cuda fake_quant: group size %d does not divide %lld columns",
                            f->group_size, (long long)cols);
        const int64_t ng = n / L;
        if ((s = scratch(al256((size_t)ng * 4) + al256((size_t)ng), &sp))) return s;
        st = (u64 *)sp;
        float *sc = (float *)((char *)sp + 256);
        uint8_t *zp = (uint8_t *)((char *)sc + al256((size_t)ng * 4));
        QT_CUDA_CHECK(cudaMemset(st, 0xff, 2 * sizeof(u64)));
        group_params<<<red_grid(ng), red_threads(L)>>>(w, n, L, ng, RED_INT, f->bits, f->symmetric,
                                                      (int)f->scale_dtype, 0.0f, sc, zp, st);
        QT_CUDA_LAUNCHED();
        if ((s = read_status(st, "int", cols, f->bits, (int)f->scale_dtype))) return s;
        int_apply<<<qt_blocks(n, T), T>>>(w, n, L, sc, zp, f->bits, out, mask);
        QT_CUDA_LAUNCHED();
        return QT_OK;
    }
    case QT_QF_FP8_E4M3:
    case QT_QF_FP8_E5M2: {
        const bool e4 = f->kind == QT_QF_FP8_E4M3;
        if (f->gran == QT_QG_GROUP)
            return QT_ERROR(QT_EINVAL, "cuda fake_quant: fp8 is per tensor or per channel");
        const int64_t L = f->gran == QT_QG_CHANNEL ? cols : n, ng = n / L;
        if ((s = scratch(al256((size_t)ng * 4), &sp))) return s;
        st = (u64 *)sp;
        float *sc = (float *)((char *)sp + 256);
        QT_CUDA_CHECK(cudaMemset(st, 0xff, 2 * sizeof(u64)));
        group_params<<<red_grid(ng), red_threads(L)>>>(w, n, L, ng, RED_FP8, 0, false, 0,
                                                      e4 ? E4M3_MAX : E5M2_MAX, sc, NULL, st);
        QT_CUDA_LAUNCHED();
        if ((s = read_status(st, e4 ? "fp8_e4m3" : "fp8_e5m2", cols, 0, 0))) return s;
        fp8_apply<<<qt_blocks(n, T), T>>>(w, n, L, sc, e4, out, mask);
        QT_CUDA_LAUNCHED();
        return QT_OK;
    }
    case QT_QF_NF4:
    case QT_QF_FP4: {
        const int64_t bs = f->group_size;
        if (bs < 32 || bs > 4096 || (bs & (bs - 1)))
            return QT_ERROR(QT_EINVAL, "cuda fake_quant: nf4/fp4 blocksize must be a power of two "
                            "in 32..4096, got %lld", (long long)bs);
        if ((s = upload_tables())) return s;
        const int64_t nb = (n + bs - 1) / bs, nb2 = (nb + DQ_BLOCK - 1) / DQ_BLOCK;
        if ((s = scratch(2 * al256((size_t)nb * 4) + 256, &sp))) return s;
        st = (u64 *)sp;
        float *raw = (float *)((char *)sp + 256);
        float *deq = (float *)((char *)raw + al256((size_t)nb * 4));
        float *off = (float *)((char *)deq + al256((size_t)nb * 4));
        QT_CUDA_CHECK(cudaMemset(st, 0xff, 2 * sizeof(u64)));
        group_params<<<red_grid(nb), red_threads(bs)>>>(w, n, bs, nb, RED_NF4, 0, false, 0, 0.0f,
                                                       raw, NULL, st);
        QT_CUDA_LAUNCHED();
        const float *scale = raw;
        if (f->double_quant) {
            nf4_mean<<<1, 32>>>(raw, nb, off);
            QT_CUDA_LAUNCHED();
            nf4_double_quant<<<(unsigned)nb2, DQ_BLOCK>>>(raw, nb, off, deq);
            QT_CUDA_LAUNCHED();
            scale = deq;
        }
        if ((s = read_status(st, f->kind == QT_QF_FP4 ? "fp4" : "nf4", cols, 0, 0))) return s;
        nf4_apply<<<qt_blocks(n, T), T>>>(w, n, bs, raw, scale, f->kind == QT_QF_FP4, out, mask);
        QT_CUDA_LAUNCHED();
        return QT_OK;
    }
    case QT_QF_GGUF:
        return QT_ERROR(QT_ENOTSUP, "cuda fake_quant: GGUF block formats (q8_0, q4_K, ...) are "
                        "not implemented on the GPU; run fake-quant on the CPU");
    default:
        return QT_ERROR(QT_EINVAL, "cuda fake_quant: unknown kind %d", (int)f->kind);
    }
}

/* ---------------------------------------------------- activation fake-quant ---- */

/* qat/fake_quant.c act_row for one element */
__device__ __forceinline__ void act_elem(float x, float s, float inv, int z, float hi, float *y,
                                         uint8_t *m) {
    if (!isfinite(x)) {
        *y = x;
        *m = 1;
        return;
    }
    float r = __fadd_rn(rintf(__fmul_rn(x, inv)), (float)z);
    *m = r >= 0.0f && r <= hi;
    float q = r < 0.0f ? 0.0f : (r > hi ? hi : r); /* qt_qint_code: same value r */
    *y = __fmul_rn((float)((int)(uint8_t)q - z), s);
}

__global__ void act_static(const float *x, int64_t n, float s, int z, int bits, float *y,
                           uint8_t *mask) {
    const float inv = __fdiv_rn(1.0f, s), hi = (float)((1 << bits) - 1);
    QT_GRID_LOOP(i, n) act_elem(x[i], s, inv, z, hi, &y[i], &mask[i]);
}

/* One block per row: min/max, then qt_qint_params (f32 scale) and act_row; a row with a
 * non-finite value is copied with mask 1. */
__global__ void act_dynamic(const float *x, int64_t rows, int64_t cols, int bits, bool sym,
                            float *y, uint8_t *mask) {
    __shared__ red_shm sh;
    __shared__ float s_sc;
    __shared__ int s_z;
    const float hi = (float)((1 << bits) - 1);
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        uint8_t *mr = mask + r * cols;
        float mn = 0.0f, mx = 0.0f;
        u64 bad = ~0ull;
        for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
            float v = xr[j];
            if (!isfinite(v)) bad = 0;
            mn = v < mn ? v : mn;
            mx = v > mx ? v : mx;
        }
        block_reduce(mn, mx, bad, &sh);
        if (bad != ~0ull) {
            for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
                yr[j] = xr[j];
                mr[j] = 1;
            }
            continue;
        }
        if (threadIdx.x == 0) {
            float sc;
            uint8_t z;
            int_params(mn, mx, bits, sym, (int)QT_F32, &sc, &z);
            s_sc = sc;
            s_z = z;
        }
        __syncthreads();
        const float sc = s_sc, inv = __fdiv_rn(1.0f, sc);
        const int z = s_z;
        for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
            act_elem(xr[j], sc, inv, z, hi, &yr[j], &mr[j]);
        __syncthreads(); /* s_sc is rewritten by the next row */
    }
}

extern "C" qt_status qt_cuda_fake_quant_act(const float *x, int64_t rows, int64_t cols, int bits,
                                            bool symmetric, bool dynamic, float scale, int zero,
                                            float *y, uint8_t *mask) {
    if (!x || !y || !mask) return QT_ERROR(QT_EINVAL, "cuda fake_quant_act: NULL pointer");
    if (bits < 2 || bits > 8)
        return QT_ERROR(QT_EINVAL, "cuda fake_quant_act: bits must be 2..8, got %d", bits);
    const int64_t n = rows * cols;
    if (n <= 0) return QT_OK;
    if (!dynamic) {
        act_static<<<qt_blocks(n, 256), 256>>>(x, n, scale, zero, bits, y, mask);
    } else {
        act_dynamic<<<red_grid(rows), red_threads(cols)>>>(x, rows, cols, bits, symmetric, y, mask);
    }
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

/* ---------------------------------------------------------------- STE ---- */

__global__ void ste_kernel(float *dx, const float *dy, const uint8_t *mask, int64_t n) {
    QT_GRID_LOOP(i, n) dx[i] = __fadd_rn(dx[i], mask[i] ? dy[i] : 0.0f);
}

extern "C" qt_status qt_cuda_ste_backward(float *dx, const float *dy, const uint8_t *mask,
                                          int64_t n) {
    if (!dx || n <= 0) return QT_OK;
    if (!dy || !mask) return QT_ERROR(QT_EINVAL, "cuda ste_backward: NULL dy or mask");
    ste_kernel<<<qt_blocks(n, 256), 256>>>(dx, dy, mask, n);
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

/* ------------------------------------------------------------ NF4 dequant ---- */

template <typename T>
__global__ void nf4_dequant_kernel(const uint8_t *codes, const float *scales,
                                   const uint8_t *absmax_q, const float *absmax2, float offset,
                                   int64_t bs, int fp4, int64_t start, int64_t count, T *out) {
    const float *code = d_code[fp4];
    QT_GRID_LOOP(k, count) {
        const int64_t i = start + k, b = i / bs;
        float s;
        if (scales) {
            s = scales[b];
        } else { /* quant_nf4.c double_quant: v = map[q] * m; deq = v + off */
            s = __fadd_rn(__fmul_rn(d_dyn_map[absmax_q[b]], absmax2[b / DQ_BLOCK]), offset);
        }
        qt_st(out, k, __fmul_rn(code[codes[i] & 15], s));
    }
}

extern "C" qt_status qt_cuda_nf4_dequant(const qt_qtensor *q, int64_t start, int64_t count,
                                         qt_dtype out_dtype, void *out) {
    if (!q || !out || !q->codes)
        return QT_ERROR(QT_EINVAL, "cuda nf4_dequant: NULL tensor, codes or output");
    if (q->fmt.kind != QT_QF_NF4 && q->fmt.kind != QT_QF_FP4)
        return QT_ERROR(QT_EINVAL, "cuda nf4_dequant: tensor is not NF4/FP4");
    const int64_t n = q->rows * q->cols, bs = q->fmt.group_size;
    if (bs <= 0 || start < 0 || count < 0 || start + count > n)
        return QT_ERROR(QT_EINVAL, "cuda nf4_dequant: range [%lld, %lld) outside %lld elements",
                        (long long)start, (long long)(start + count), (long long)n);
    if (!q->scales && !(q->fmt.double_quant && q->absmax_q && q->absmax2))
        return QT_ERROR(QT_EINVAL, "cuda nf4_dequant: needs scales, or absmax_q and absmax2 "
                        "(double quantization)");
    if (count == 0) return QT_OK;
    qt_status s = upload_tables();
    if (s) return s;
    const int fp4 = q->fmt.kind == QT_QF_FP4;
    const unsigned B = qt_blocks(count, 256);
    if (out_dtype == QT_F32)
        nf4_dequant_kernel<float><<<B, 256>>>(q->codes, q->scales, q->absmax_q, q->absmax2,
                                              q->offset, bs, fp4, start, count, (float *)out);
    else if (out_dtype == QT_BF16)
        nf4_dequant_kernel<qt_bf16><<<B, 256>>>(q->codes, q->scales, q->absmax_q, q->absmax2,
                                                q->offset, bs, fp4, start, count, (qt_bf16 *)out);
    else
        return QT_ERROR(QT_EDTYPE, "cuda nf4_dequant: output must be f32 or bf16, got %s",
                        qt_dtype_name(out_dtype));
    QT_CUDA_LAUNCHED();
    return QT_OK;
}
