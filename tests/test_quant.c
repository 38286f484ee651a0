/*
 * test_quant.c - the quantizer core (ptq/qt_quant.h):
 *   - NF4/FP4 (plain and double-quantized) codes, absmax, nested statistics and
 *     dequantized values bit-identical to bitsandbytes 0.50.2 on CPU, and the dynamic map;
 *   - FP8 conversions bit-identical to torch on every non-negative f16 and random f32;
 *   - INT fake-quant bit-identical to torch.fake_quantize_per_channel_affine;
 *   - for every format (INT bits x sym x granularity x scale dtype, NF4/FP4 +-dq, FP8,
 *     GGUF) on random and adversarial matrices: fake_quant == dequantize(quantize) bit for
 *     bit, codes in range, INT error within half a step;
 *   - NaN/Inf refusal naming (row, col), malformed formats, bits per weight, names.
 * Fixture: tests/fixtures/quant_ref.safetensors from gen_quant_fixtures.py.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qt_quant.h"
#include "testutil.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform (0, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((float)(rng >> 40) + 0.5f) / 16777216.0f;
}
static float nrand(void) { return sqrtf(-2.0f * logf(frand())) * cosf(6.2831853f * frand()); }

static const qt_st_tensor *get(const qt_safetensors *st, const char *a, const char *b) {
    char key[128];
    snprintf(key, sizeof key, "%s%s", a, b);
    const qt_st_tensor *t = qt_safetensors_get(st, key);
    qt_check_case(t != NULL, key, "missing from the fixture");
    return t;
}

static bool same(const void *a, const void *b, size_t n) { return a && b && !memcmp(a, b, n); }

static int64_t first_diff_f(const float *a, const void *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float y;
        memcpy(&y, (const char *)b + 4 * i, 4);
        if (memcmp(&a[i], &y, 4)) return i;
    }
    return -1;
}

/* ------------------------------------------------------------ bitsandbytes ---- */
static void test_bnb(const qt_safetensors *st) {
    const qt_st_tensor *t = get(st, "dynmap", "");
    if (t) {
        int64_t d = first_diff_f(qt_dynamic_map(), t->data, 256);
        qt_check_case(d < 0, "dynamic map", "differs from bnb at %lld", (long long)d);
    }
    t = get(st, "nf4_code", "");
    if (t) qt_check_case(same(qt_nf4_codebook(), t->data, 64), "nf4 codebook", "differs");
    t = get(st, "fp4_code", "");
    if (t) qt_check_case(same(qt_fp4_codebook(), t->data, 64), "fp4 codebook", "differs");

    const char *cases = qt_safetensors_meta(st, "cases");
    CHECK(cases != NULL, "fixture has no cases");
    if (!cases) return;
    char *list = strdup(cases), *save = NULL;
    int ncase = 0;
    for (char *c = strtok_r(list, ";", &save); c; c = strtok_r(NULL, ";", &save)) {
        char name[64], mat[16], qt[8];
        int bs, dq;
        if (sscanf(c, "%63[^,],%15[^,],%d,%7[^,],%d", name, mat, &bs, qt, &dq) != 5) {
            CHECK(0, "bad case %s", c);
            continue;
        }
        ncase++;
        const qt_st_tensor *tw = get(st, mat, ".w");
        if (!tw) continue;
        int64_t rows = tw->shape[0], cols = tw->shape[1], n = rows * cols;
        float *w = malloc((size_t)n * 4), *dq_out = malloc((size_t)n * 4), *fq = malloc((size_t)n * 4);
        memcpy(w, tw->data, (size_t)n * 4);
        qt_qformat f = {.kind = strcmp(qt, "nf4") ? QT_QF_FP4 : QT_QF_NF4, .bits = 4,
                        .group_size = bs, .double_quant = dq != 0};
        qt_qtensor q;
        qt_status s = qt_quantize(&f, w, rows, cols, &q);
        qt_check_case(s == QT_OK, name, "quantize: %s", qt_status_str(s));
        if (s) goto next;
        int64_t nb = (n + bs - 1) / bs;
        const qt_st_tensor *tc = get(st, name, ".codes"), *ta = get(st, name, ".absmax"),
                           *td = get(st, name, ".deq");
        if (tc) {
            int64_t bad = 0, first = -1;
            for (int64_t i = 0; i < n; i++)
                if (q.codes[i] != ((const uint8_t *)tc->data)[i]) {
                    if (first < 0) first = i;
                    bad++;
                }
            qt_check_case(bad == 0, name, "%lld codes differ from bnb, first at %lld (ours %d, bnb %d)",
                          (long long)bad, (long long)first, first >= 0 ? q.codes[first] : 0,
                          first >= 0 ? ((const uint8_t *)tc->data)[first] : 0);
        }
        if (ta) {
            int64_t d = q.n_scales == nb ? first_diff_f(q.scales, ta->data, nb) : 0;
            qt_check_case(d < 0, name, "absmax differs from bnb at block %lld", (long long)d);
        }
        if (dq) {
            const qt_st_tensor *tr = get(st, name, ".qabsmax"), *t2 = get(st, name, ".absmax2"),
                               *to = get(st, name, ".offset");
            if (to) qt_check_case(!first_diff_f(&q.offset, to->data, 1) ? 0 : 1, name,
                                  "offset %.9g differs from bnb", q.offset);
            if (tr) qt_check_case(same(q.absmax_q, tr->data, (size_t)nb), name, "qabsmax differs");
            if (t2) qt_check_case(q.n_absmax2 == t2->shape[0] &&
                                  first_diff_f(q.absmax2, t2->data, q.n_absmax2) < 0,
                                  name, "absmax2 differs");
        }
        s = qt_dequantize(&q, dq_out);
        qt_check_case(s == QT_OK, name, "dequantize: %s", qt_status_str(s));
        if (td) {
            int64_t d = first_diff_f(dq_out, td->data, n);
            qt_check_case(d < 0, name, "dequantize differs from bnb dequantize_4bit at %lld",
                          (long long)d);
        }
        s = qt_fake_quant(&f, w, rows, cols, fq, NULL);
        qt_check_case(s == QT_OK && same(fq, dq_out, (size_t)n * 4), name,
                      "fake_quant != dequantize(quantize)");
        qt_qtensor_free(&q);
    next:
        free(w);
        free(dq_out);
        free(fq);
    }
    free(list);
    CHECK(ncase >= 10, "only %d bnb cases", ncase);
}

/* ------------------------------------------------------------------ fp8 -------- */
static void test_fp8(const qt_safetensors *st) {
    const qt_st_tensor *t4 = get(st, "fp8.f16_e4m3", ""), *t5 = get(st, "fp8.f16_e5m2", "");
    if (t4 && t5) {
        const uint8_t *r4 = t4->data, *r5 = t5->data;
        int bad4 = 0, bad5 = 0, first4 = -1, first5 = -1;
        for (int h = 0; h <= 0x7c00; h++) {
            float x = qt_f16_to_f32((uint16_t)h);
            bool ok4 = qt_f32_to_e4m3(x) == r4[h] && qt_f32_to_e4m3(-x) == (r4[h] | 0x80);
            bool ok5 = qt_f32_to_e5m2(x) == r5[h] && qt_f32_to_e5m2(-x) == (r5[h] | 0x80);
            if (!ok4 && !bad4++) first4 = h;
            if (!ok5 && !bad5++) first5 = h;
        }
        qt_check_case(!bad4, "e4m3 all f16", "%d differ from torch, first f16 0x%04x", bad4, first4);
        qt_check_case(!bad5, "e5m2 all f16", "%d differ from torch, first f16 0x%04x", bad5, first5);
    }
    const qt_st_tensor *tx = get(st, "fp8.rand_x", ""), *a = get(st, "fp8.rand_e4m3", ""),
                       *b = get(st, "fp8.rand_e5m2", "");
    if (tx && a && b) {
        int bad = 0;
        for (int64_t i = 0; i < tx->shape[0]; i++) {
            float x;
            memcpy(&x, (const char *)tx->data + 4 * i, 4);
            if (qt_f32_to_e4m3(x) != ((const uint8_t *)a->data)[i] ||
                qt_f32_to_e5m2(x) != ((const uint8_t *)b->data)[i]) {
                if (!bad) printf("  first fp8 mismatch: x = %.9g\n", x);
                bad++;
            }
        }
        qt_check_case(!bad, "fp8 random f32", "%d of %lld differ from torch", bad,
                      (long long)tx->shape[0]);
    }
    int rt = 0;
    for (int i = 0; i < 256; i++) {
        float v4 = qt_e4m3_to_f32((uint8_t)i), v5 = qt_e5m2_to_f32((uint8_t)i);
        if (!isnan(v4) && qt_f32_to_e4m3(v4) != i) rt++;
        if (isfinite(v5) && qt_f32_to_e5m2(v5) != i) rt++;
    }
    CHECK(rt == 0, "%d fp8 codes do not round trip", rt);
    CHECK(qt_e4m3_to_f32(0x7e) == 448.0f && qt_e5m2_to_f32(0x7b) == 57344.0f, "fp8 max values");
    CHECK(qt_f32_to_e4m3(1e30f) == 0x7e && qt_f32_to_e4m3(-INFINITY) == 0xfe &&
          qt_f32_to_e5m2(1e30f) == 0x7b, "fp8 saturation");
    CHECK(isnan(qt_e4m3_to_f32(qt_f32_to_e4m3(NAN))) && isnan(qt_e5m2_to_f32(qt_f32_to_e5m2(NAN))),
          "fp8 NaN -> NaN");
}

/* ---------------------------------------------------------- int vs torch ---- */
static void test_int_torch(const qt_safetensors *st) {
    const qt_st_tensor *tw = get(st, "int.w", "");
    const char *cases = qt_safetensors_meta(st, "int_cases");
    CHECK(tw && cases, "fixture lacks int.w / int_cases");
    if (!tw || !cases) return;
    int64_t rows = tw->shape[0], cols = tw->shape[1], n = rows * cols;
    float *w = malloc((size_t)n * 4), *o = malloc((size_t)n * 4);
    memcpy(w, tw->data, (size_t)n * 4);
    char *list = strdup(cases), *save = NULL;
    int n_cases = 0;
    for (char *c = strtok_r(list, ";", &save); c; c = strtok_r(NULL, ";", &save)) {
        char name[64], dt[16];
        int bits, sym, g;
        CHECK(sscanf(c, "%63[^,],%d,%d,%d,%15s", name, &bits, &sym, &g, dt) == 5,
              "int case '%s' does not parse", c);
        if (sscanf(c, "%63[^,],%d,%d,%d,%15s", name, &bits, &sym, &g, dt) != 5) continue;
        n_cases++;
        qt_qformat f = {.kind = QT_QF_INT, .bits = bits, .symmetric = sym != 0,
                        .gran = g == cols ? QT_QG_CHANNEL : QT_QG_GROUP, .group_size = g,
                        .scale_dtype = !strcmp(dt, "float16") ? QT_F16 : !strcmp(dt, "bfloat16") ? QT_BF16 : QT_F32};
        const qt_st_tensor *tr = get(st, "int.", name);
        qt_status s = qt_fake_quant(&f, w, rows, cols, o, NULL);
        int64_t d = tr && !s ? first_diff_f(o, tr->data, n) : 0;
        qt_check_case(!s && d < 0, name, "differs from torch.fake_quantize_per_channel_affine at %lld",
                      (long long)d);
    }
    CHECK(n_cases >= 5, "only %d int cases against torch in the fixture", n_cases);
    free(list);
    free(w);
    free(o);
}

/* -------------------------------------------------------------- properties ---- */
#define PR 8
#define PC 256
enum { IN_RANDN, IN_ZERO_ROWS, IN_CONST_ROWS, IN_HUGE, IN_TINY, IN_DENORMAL, IN_OUTLIER, IN_COUNT };
static const char *in_name[] = {"randn", "zero-rows", "const-rows", "huge", "tiny", "denormal", "outlier"};

static void make_input(int kind, float *w) {
    for (int i = 0; i < PR * PC; i++) w[i] = nrand() * 0.05f;
    switch (kind) {
    case IN_ZERO_ROWS:
        memset(w, 0, PC * 4);
        memset(w + 5 * PC, 0, PC * 4);
        break;
    case IN_CONST_ROWS:
        for (int c = 0; c < PC; c++) w[c] = 0.3f, w[3 * PC + c] = -2.0f;
        break;
    case IN_HUGE:
        for (int i = 0; i < PR * PC; i++) w[i] *= 2e31f; /* ~1e30 */
        break;
    case IN_TINY:
        for (int i = 0; i < PR * PC; i++) w[i] *= 2e-29f; /* ~1e-30 */
        break;
    case IN_DENORMAL: /* ~1e-39 and zeros: 1/scale overflows unless the scale is clamped */
        for (int i = 0; i < PR * PC; i++) w[i] = i % 3 ? w[i] * 2e-38f : 0.0f;
        break;
    case IN_OUTLIER:
        w[2 * PC + 17] = 100.0f;
        break;
    }
}

static int n_formats_checked;

static void check_format(const qt_qformat *f) {
    char fname[64], what[128];
    qt_qformat_str(f, fname, sizeof fname);
    if (f->importance) strncat(fname, " imatrix", sizeof fname - strlen(fname) - 1);
    static float w[PR * PC], o1[PR * PC], o2[PR * PC], o3[PR * PC];
    static uint8_t mask[PR * PC];
    n_formats_checked++;
    for (int in = 0; in < IN_COUNT; in++) {
        snprintf(what, sizeof what, "%s / %s", fname, in_name[in]);
        make_input(in, w);
        qt_qtensor q;
        qt_status s1 = qt_quantize(f, w, PR, PC, &q);
        qt_status s2 = qt_fake_quant(f, w, PR, PC, o2, mask);
        /* huge magnitudes overflow an f16 scale: the documented QT_ENUMERIC */
        bool expect_err = in == IN_HUGE && f->kind == QT_QF_INT && f->scale_dtype == QT_F16;
        bool gguf_huge = in == IN_HUGE && f->kind == QT_QF_GGUF; /* f16 block scales */
        if (expect_err || (gguf_huge && s1)) {
            qt_check_case(s1 == QT_ENUMERIC && s2 == QT_ENUMERIC, what,
                          "expected QT_ENUMERIC, got %s / %s", qt_status_str(s1), qt_status_str(s2));
            if (!s1) qt_qtensor_free(&q);
            continue;
        }
        qt_check_case(s1 == QT_OK && s2 == QT_OK, what, "quantize %s, fake_quant %s",
                      qt_status_str(s1), qt_status_str(s2));
        if (s1 || s2) {
            if (!s1) qt_qtensor_free(&q);
            continue;
        }
        qt_status s3 = qt_dequantize(&q, o1);
        qt_check_case(s3 == QT_OK && !memcmp(o1, o2, sizeof o1), what,
                      "fake_quant != dequantize(quantize) (first diff at %lld)",
                      (long long)first_diff_f(o1, o2, PR * PC));
        /* in place (out aliases w) gives the same bits */
        memcpy(o3, w, sizeof o3);
        qt_fake_quant(f, o3, PR, PC, o3, NULL);
        qt_check_case(!memcmp(o3, o2, sizeof o3), what, "in-place fake_quant differs");
        int bad_code = 0, bad_err = 0, nonfinite = 0;
        for (int i = 0; i < PR * PC; i++)
            if (!isfinite(o1[i])) nonfinite++;
        if (f->kind == QT_QF_INT) {
            const int64_t L = f->gran == QT_QG_GROUP ? f->group_size
                              : f->gran == QT_QG_CHANNEL ? PC : PR * PC;
            for (int i = 0; i < PR * PC; i++) {
                float s = q.scales[i / L];
                if (q.codes[i] > (1 << f->bits) - 1) bad_code++;
                float err = fabsf(o1[i] - w[i]);
                /* unclipped: half a step (+ the f32 rounding of w * (1/s)); clipped: one step */
                float rel = f->scale_dtype == QT_BF16 ? 0x1p-8f : f->scale_dtype == QT_F16 ? 0x1p-11f : 0x1p-23f;
                float bound = mask[i] ? 0.5f * s * (1.0f + 1e-3f) + 1e-45f
                                      : s * (1.001f + (float)(1 << f->bits) * rel);
                if (!(err <= bound)) {
                    if (!bad_err)
                        printf("  %s: elem %d w=%g dq=%g s=%g mask=%d\n", what, i, w[i], o1[i], s, mask[i]);
                    bad_err++;
                }
            }
            if (in == IN_ZERO_ROWS)
                for (int c = 0; c < PC; c++)
                    if (f->gran != QT_QG_TENSOR && o1[c] != 0.0f) bad_err++;
        } else if (f->kind == QT_QF_NF4 || f->kind == QT_QF_FP4) {
            for (int i = 0; i < PR * PC; i++)
                if (q.codes[i] > 15 || !mask[i]) bad_code++;
        } else if (f->kind != QT_QF_GGUF) {
            for (int i = 0; i < PR * PC; i++)
                if ((q.codes[i] & 0x7f) == 0x7f || (f->kind == QT_QF_FP8_E5M2 && (q.codes[i] & 0x7c) == 0x7c))
                    bad_code++;
        }
        qt_check_case(!bad_code && !bad_err && !nonfinite, what,
                      "%d codes out of range, %d errors beyond half a step, %d non-finite",
                      bad_code, bad_err, nonfinite);
        qt_qtensor_free(&q);
    }
}

static void test_properties(void) {
    static const int groups[] = {0, -1, 32, 64, 128, 256}; /* 0 tensor, -1 channel */
    static const qt_dtype sdt[] = {QT_F32, QT_F16, QT_BF16};
    for (int bits = 2; bits <= 8; bits++)
        for (int sym = 0; sym < 2; sym++)
            for (int g = 0; g < 6; g++)
                for (int d = 0; d < 3; d++) {
                    qt_qformat f = {.kind = QT_QF_INT, .bits = bits, .symmetric = sym,
                                    .gran = groups[g] == 0 ? QT_QG_TENSOR : groups[g] < 0 ? QT_QG_CHANNEL : QT_QG_GROUP,
                                    .group_size = groups[g] > 0 ? groups[g] : 0, .scale_dtype = sdt[d]};
                    check_format(&f);
                }
    for (int k = 0; k < 2; k++)
        for (int dq = 0; dq < 2; dq++)
            for (int bs = 32; bs <= 4096; bs *= 4) {
                qt_qformat f = {.kind = k ? QT_QF_FP4 : QT_QF_NF4, .bits = 4, .group_size = bs,
                                .double_quant = dq};
                check_format(&f);
            }
    for (int k = 0; k < 2; k++)
        for (int g = 0; g < 2; g++) {
            qt_qformat f = {.kind = k ? QT_QF_FP8_E5M2 : QT_QF_FP8_E4M3, .bits = 8,
                            .gran = g ? QT_QG_CHANNEL : QT_QG_TENSOR, .scale_dtype = QT_F32};
            check_format(&f);
        }
    static const qt_ggml_type gg[] = {QT_GGML_Q8_0, QT_GGML_Q4_0, QT_GGML_Q4_1, QT_GGML_Q5_0,
                                      QT_GGML_Q5_1, QT_GGML_Q2_K, QT_GGML_Q3_K, QT_GGML_Q4_K,
                                      QT_GGML_Q5_K, QT_GGML_Q6_K, QT_GGML_IQ4_NL, QT_GGML_IQ4_XS};
    /* an importance vector per column (llama.cpp's quant_weights), some zero */
    static float imp[PC];
    for (int c = 0; c < PC; c++) imp[c] = c % 7 == 3 ? 0.0f : 0.05f + (float)((c * 37) % 101);
    for (int i = 0; i < (int)(sizeof gg / sizeof gg[0]); i++)
        for (int w = 0; w < 2; w++) {
            qt_qformat f = {.kind = QT_QF_GGUF, .ggml = gg[i], .importance = w ? imp : NULL};
            if (!qt_ggml_can_quantize(gg[i])) {
                qt_check_case(0, qt_ggml_type_name(gg[i]), "GGUF type not quantizable yet");
                continue;
            }
            check_format(&f);
        }
    printf("property test: %d formats x %d inputs\n", n_formats_checked, IN_COUNT);
}

/* ---------------------------------------------------- errors, names, sizes ---- */
static void test_errors(void) {
    float w[4 * 64];
    for (int i = 0; i < 4 * 64; i++) w[i] = nrand();
    qt_qformat f = {.kind = QT_QF_INT, .bits = 4, .symmetric = true, .gran = QT_QG_GROUP,
                    .group_size = 32, .scale_dtype = QT_F16};
    float out[4 * 64];
    qt_qtensor q;
    w[2 * 64 + 5] = NAN;
    qt_status s = qt_fake_quant(&f, w, 4, 64, out, NULL);
    CHECK(s == QT_ENUMERIC && strstr(qt_error_message(), "row 2, col 5"),
          "NaN: %s (%s)", qt_status_str(s), qt_error_message());
    w[2 * 64 + 5] = 0.0f;
    w[3 * 64 + 63] = -INFINITY;
    qt_qformat nf = {.kind = QT_QF_NF4, .bits = 4, .group_size = 64};
    s = qt_quantize(&nf, w, 4, 64, &q);
    CHECK(s == QT_ENUMERIC && strstr(qt_error_message(), "row 3, col 63") && !q.codes && !q.scales,
          "Inf: %s (%s)", qt_status_str(s), qt_error_message());
    w[3 * 64 + 63] = 1e6f; /* f16 scale overflow: 1e6 / 7.5 > 65504 */
    s = qt_quantize(&f, w, 4, 64, &q);
    CHECK(s == QT_ENUMERIC && strstr(qt_error_message(), "row 3, col 32") && !q.codes,
          "f16 overflow: %s (%s)", qt_status_str(s), qt_error_message());

    struct { qt_qformat f; int64_t r, c; const char *what; } bad[] = {
        {{.kind = QT_QF_INT, .bits = 1, .scale_dtype = QT_F32}, 4, 64, "bits 1"},
        {{.kind = QT_QF_INT, .bits = 9, .scale_dtype = QT_F32}, 4, 64, "bits 9"},
        {{.kind = QT_QF_INT, .bits = 4, .gran = QT_QG_GROUP, .group_size = 48, .scale_dtype = QT_F32}, 4, 64, "group 48 / 64 cols"},
        {{.kind = QT_QF_INT, .bits = 4, .gran = QT_QG_GROUP, .group_size = 0, .scale_dtype = QT_F32}, 4, 64, "group 0"},
        {{.kind = QT_QF_INT, .bits = 4, .scale_dtype = QT_I32}, 4, 64, "int scale i32"},
        {{.kind = QT_QF_FP8_E4M3, .bits = 8, .scale_dtype = QT_F16}, 4, 64, "fp8 f16 scale"},
        {{.kind = QT_QF_FP8_E4M3, .bits = 8, .gran = QT_QG_GROUP, .group_size = 32, .scale_dtype = QT_F32}, 4, 64, "fp8 per-group"},
        {{.kind = QT_QF_NF4, .bits = 4, .group_size = 48}, 4, 64, "nf4 blocksize 48"},
        {{.kind = QT_QF_NF4, .bits = 4, .group_size = 16}, 4, 64, "nf4 blocksize 16"},
        {{.kind = QT_QF_GGUF, .ggml = QT_GGML_F32}, 4, 64, "gguf f32"},
        {{.kind = QT_QF_GGUF, .ggml = QT_GGML_Q4_K}, 4, 64, "q4_K 64 cols"},
        {{.kind = (qt_qkind)42}, 4, 64, "kind 42"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qt_error_set(QT_OK, "", 0, "%s", "");
        s = qt_qformat_check(&bad[i].f, bad[i].r, bad[i].c);
        qt_check_case(s == QT_EINVAL && qt_error_message()[0], bad[i].what, "got %s", qt_status_str(s));
        qt_check_case(qt_fake_quant(&bad[i].f, w, bad[i].r, bad[i].c, out, NULL) == QT_EINVAL,
                      bad[i].what, "fake_quant accepted it");
    }
    qt_qformat good = {.kind = QT_QF_INT, .bits = 4, .gran = QT_QG_GROUP, .group_size = 48, .scale_dtype = QT_F32};
    CHECK(qt_qformat_check(&good, 0, 0) == QT_OK, "format alone (rows = 0) is fine");
}

static void test_names_bits(void) {
    char b[64];
    qt_qformat i4 = {.kind = QT_QF_INT, .bits = 4, .symmetric = true, .gran = QT_QG_GROUP,
                     .group_size = 32, .scale_dtype = QT_F16};
    qt_qformat nf = {.kind = QT_QF_NF4, .bits = 4, .group_size = 64, .double_quant = true};
    qt_qformat f8 = {.kind = QT_QF_FP8_E4M3, .bits = 8, .gran = QT_QG_CHANNEL, .scale_dtype = QT_F32};
    qt_qformat gg = {.kind = QT_QF_GGUF, .ggml = QT_GGML_Q4_K};
    CHECK(!strcmp(qt_qformat_str(&i4, b, sizeof b), "int4 g32 sym f16"), "name %s", b);
    CHECK(!strcmp(qt_qformat_str(&nf, b, sizeof b), "nf4 b64 dq"), "name %s", b);
    CHECK(!strcmp(qt_qformat_str(&f8, b, sizeof b), "fp8_e4m3 per-channel"), "name %s", b);
    CHECK(!strcmp(qt_qformat_str(&gg, b, sizeof b), "q4_K"), "name %s", b);
    double v = qt_qformat_bits_per_weight(&i4, 4096, 4096);
    CHECK(v == 4.5, "int4 g32 f16 sym: %g bits, expected 4.5", v);
    v = qt_qformat_bits_per_weight(&nf, 4096, 4096);
    CHECK(fabs(v - 4.127) < 5e-4, "nf4 b64 dq: %g bits, expected 4.127 (QLoRA)", v);
    nf.double_quant = false;
    v = qt_qformat_bits_per_weight(&nf, 4096, 4096);
    CHECK(v == 4.5, "nf4 b64: %g bits, expected 4.5", v);
    v = qt_qformat_bits_per_weight(&f8, 4096, 4096);
    CHECK(fabs(v - (8.0 + 32.0 / 4096)) < 1e-12, "fp8 per-channel: %g", v);
    v = qt_qformat_bits_per_weight(&gg, 4096, 4096);
    CHECK(v == 4.5, "q4_K: %g bits, expected 4.5", v);
    qt_qformat i8 = {.kind = QT_QF_INT, .bits = 8, .symmetric = false, .gran = QT_QG_GROUP,
                     .group_size = 128, .scale_dtype = QT_BF16};
    v = qt_qformat_bits_per_weight(&i8, 4096, 4096);
    CHECK(v == 8.0 + 24.0 / 128, "int8 g128 asym bf16: %g", v);
}

int main(void) {
    qt_safetensors *st = NULL;
    qt_status s = qt_safetensors_open(QT_FIXTURES "/quant_ref.safetensors", &st);
    CHECK(s == QT_OK, "open fixture: %s %s", qt_status_str(s), qt_error_message());
    if (st) {
        test_bnb(st);
        test_fp8(st);
        test_int_torch(st);
        qt_safetensors_close(st);
    }
    test_properties();
    test_errors();
    test_names_bits();
    return qt_test_finish("test_quant");
}
