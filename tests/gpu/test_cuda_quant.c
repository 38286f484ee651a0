/*
 * test_cuda_quant.c - GPU fake-quant and NF4 dequantization (cuda/quant.cu) against the
 * CPU quantizer core, bit for bit (memcmp of outputs and STE masks), for every format the
 * GPU implements, on random normal weights (no zeros) of a few shapes; activation
 * fake-quant (dynamic per token, static) against qat/'s CPU op. Exit 77 (skip) without a
 * GPU. Links: qt_qat (-> qt_ptq, qt_cuda, qt_layers, qt_formats, qt_autograd).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "qt_cuda.h"
#include "gpu_test.h"
#include "qt_cuda_quant.h"
#include "qt_qat.h"
#include "testutil.h"

static const qt_device GPU = {QT_DEV_CUDA, 0}, CPU = {QT_DEV_CPU, 0};

static uint64_t rng; /* seeded per run in main */
static double urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((rng >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static float nrand(void) {
    float v;
    do v = (float)(sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand()));
    while (v == 0.0f);
    return v;
}

static void *dalloc(size_t bytes) {
    void *p = NULL; /* test buffers only (leaked at exit) */
    if (cudaMalloc(&p, bytes) != cudaSuccess) return NULL;
    return p;
}

static void one_format(const qt_qformat *f, int64_t rows, int64_t cols, float scale) {
    char name[64], what[128];
    qt_qformat_str(f, name, sizeof name);
    snprintf(what, sizeof what, "%s %lldx%lld", name, (long long)rows, (long long)cols);
    int64_t n = rows * cols;
    float *w = malloc(n * 4), *yc = malloc(n * 4), *yg = malloc(n * 4);
    uint8_t *mc = malloc(n), *mg = malloc(n);
    for (int64_t i = 0; i < n; i++) w[i] = nrand() * scale;
    qt_status s = qt_fake_quant(f, w, rows, cols, yc, mc);
    qt_check_case(s == QT_OK, what, "cpu fake_quant: %s", qt_error_message());
    float *dw = dalloc(n * 4), *dy = dalloc(n * 4);
    uint8_t *dm = dalloc(n);
    qt_device_copy(GPU, dw, CPU, w, n * 4);
    s = qt_cuda_fake_quant(f, dw, rows, cols, dy, dm);
    qt_check_case(s == QT_OK, what, "cuda fake_quant: %s", qt_error_message());
    qt_device_copy(CPU, yg, GPU, dy, n * 4);
    qt_device_copy(CPU, mg, GPU, dm, n);
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++)
        if (memcmp(&yc[i], &yg[i], 4) || mc[i] != mg[i]) bad = i;
    qt_check_case(bad < 0, what, "first mismatch at %lld: cpu %.9g (m %d) gpu %.9g (m %d)",
                  (long long)bad, bad < 0 ? 0.0 : yc[bad], bad < 0 ? 0 : mc[bad],
                  bad < 0 ? 0.0 : yg[bad], bad < 0 ? 0 : mg[bad]);
    printf("%-40s %s\n", what, bad < 0 && s == QT_OK ? "bit-identical" : "MISMATCH");

    if (f->kind == QT_QF_NF4 || f->kind == QT_QF_FP4) { /* dequant vs qt_dequantize */
        qt_qtensor q;
        s = qt_quantize(f, w, rows, cols, &q);
        qt_check_case(s == QT_OK, what, "quantize: %s", qt_error_message());
        qt_dequantize(&q, yc);
        qt_qtensor dq = q;
        dq.codes = dalloc(n);
        dq.scales = dalloc(q.n_scales * 4);
        qt_device_copy(GPU, dq.codes, CPU, q.codes, n);
        qt_device_copy(GPU, dq.scales, CPU, q.scales, q.n_scales * 4);
        dq.absmax_q = NULL;
        dq.absmax2 = NULL;
        if (q.fmt.double_quant) {
            dq.absmax_q = dalloc(q.n_scales);
            dq.absmax2 = dalloc(q.n_absmax2 * 4);
            qt_device_copy(GPU, dq.absmax_q, CPU, q.absmax_q, q.n_scales);
            qt_device_copy(GPU, dq.absmax2, CPU, q.absmax2, q.n_absmax2 * 4);
        }
        for (int variant = 0; variant < (q.fmt.double_quant ? 2 : 1); variant++) {
            qt_qtensor t = dq;
            if (variant) t.scales = NULL; /* from absmax_q / absmax2 / offset */
            s = qt_cuda_nf4_dequant(&t, 0, n, QT_F32, dy);
            qt_device_copy(CPU, yg, GPU, dy, n * 4);
            bool same = s == QT_OK && !memcmp(yc, yg, n * 4);
            qt_check_case(same, what, "nf4 dequant (%s) differs", variant ? "dq arrays" : "scales");
            printf("%-40s dequant %s %s\n", what, variant ? "dq" : "scales",
                   same ? "bit-identical" : "MISMATCH");
        }
        /* a tile, bf16 */
        int64_t st = 77, cnt = n / 3;
        uint16_t *hb = malloc(cnt * 2);
        s = qt_cuda_nf4_dequant(&dq, st, cnt, QT_BF16, dy);
        qt_device_copy(CPU, hb, GPU, dy, cnt * 2);
        int64_t bb = -1;
        for (int64_t i = 0; i < cnt && bb < 0; i++)
            if (hb[i] != qt_f32_to_bf16(yc[st + i])) bb = i;
        qt_check_case(s == QT_OK && bb < 0, what, "bf16 tile differs at %lld", (long long)bb);
        free(hb);
        qt_qtensor_free(&q);
    }
    free(w), free(yc), free(yg), free(mc), free(mg);
}

/* activation fake-quant through the op: CPU tensor vs GPU tensor */
static void one_act(bool dynamic, bool sym, int bits) {
    char what[64];
    snprintf(what, sizeof what, "act %s int%d %s", dynamic ? "dynamic" : "static", bits,
             sym ? "sym" : "asym");
    int64_t shape[2] = {37, 300}, n = shape[0] * shape[1];
    float *x = malloc(n * 4), *yc = malloc(n * 4), *yg = malloc(n * 4), *gc = malloc(n * 4),
          *gg = malloc(n * 4);
    for (int64_t i = 0; i < n; i++) x[i] = nrand() * 3.0f;
    float *res[2][2] = {{yc, gc}, {yg, gg}};
    for (int dev = 0; dev < 2; dev++) {
        qt_ctx *ctx = qt_ctx_new();
        qt_tensor *t = qt_tensor_from(ctx, QT_F32, 2, shape, x);
        if (dev) t = qt_tensor_to(ctx, t, GPU);
        t->requires_grad = true;
        qt_tensor *y = dynamic ? qt_fake_quant_act_dynamic(ctx, t, bits, sym)
                               : qt_fake_quant_act_static(ctx, t, 0.05f, sym ? 0 : 1 << (bits - 1), bits);
        qt_tensor *l = y ? qt_sum(ctx, y, QT_AXIS_ALL) : NULL;
        if (l) qt_backward(ctx, l);
        qt_check_case(qt_ctx_status(ctx) == QT_OK, what, "%s: %s", dev ? "gpu" : "cpu",
                      qt_ctx_error(ctx));
        if (qt_ctx_status(ctx) == QT_OK) {
            qt_tensor_read(y, res[dev][0]);
            qt_tensor_read_grad(t, res[dev][1]);
        }
        qt_ctx_free(ctx);
    }
    bool same = !memcmp(yc, yg, n * 4) && !memcmp(gc, gg, n * 4);
    qt_check_case(same, what, "outputs or grads differ");
    printf("%-40s %s\n", what, same ? "bit-identical" : "MISMATCH");
    free(x), free(yc), free(yg), free(gc), free(gg);
}

int main(void) {
    /* xorshift needs a non-zero state: mix the run's seed */
    rng = qt_rand_u64(qt_gpu_test_begin("test_cuda_quant"), 0) | 1;
    const int64_t shapes[3][2] = {{64, 256}, {96, 128}, {7, 96}};
    for (int si = 0; si < 3; si++) {
        int64_t r = shapes[si][0], c = shapes[si][1];
        for (int bits = 2; bits <= 8; bits += 2) {
            for (int gran = 0; gran < 3; gran++) {
                for (int sym = 0; sym < 2; sym++) {
                    for (int sd = 0; sd < 3; sd++) {
                        qt_qformat f = {.kind = QT_QF_INT, .bits = bits, .symmetric = sym,
                                        .gran = (qt_qgran)gran, .group_size = 32,
                                        .scale_dtype = sd == 0 ? QT_F32 : sd == 1 ? QT_F16 : QT_BF16};
                        one_format(&f, r, c, 0.02f);
                    }
                }
            }
        }
        for (int k = 0; k < 2; k++)
            for (int dq = 0; dq < 2; dq++)
                for (int bs = 32; bs <= 256; bs *= 8) {
                    qt_qformat f = {.kind = k ? QT_QF_FP4 : QT_QF_NF4, .bits = 4, .group_size = bs,
                                    .double_quant = dq};
                    one_format(&f, r, c, 0.02f);
                }
        for (int k = 0; k < 2; k++)
            for (int gran = 0; gran < 2; gran++) {
                qt_qformat f = {.kind = k ? QT_QF_FP8_E5M2 : QT_QF_FP8_E4M3, .bits = 8,
                                .gran = (qt_qgran)gran, .scale_dtype = QT_F32};
                one_format(&f, r, c, 0.02f);
            }
    }
    /* a big NF4 (many blocks: the cascade-sum offset) */
    qt_qformat nf = {.kind = QT_QF_NF4, .bits = 4, .group_size = 64, .double_quant = true};
    one_format(&nf, 1024, 1000, 0.02f);
    /* GGUF: ENOTSUP */
    qt_qformat gg;
    qt_qformat_parse("q4_k", &gg);
    qt_check_case(qt_cuda_fake_quant(&gg, (const float *)16, 8, 256, (float *)16, NULL) == QT_ENOTSUP,
                  "gguf", "expected QT_ENOTSUP");
    for (int dyn = 0; dyn < 2; dyn++)
        for (int sym = 0; sym < 2; sym++) one_act(dyn, sym, 8), one_act(dyn, sym, 4);
    return qt_test_finish("test_cuda_quant");
}
