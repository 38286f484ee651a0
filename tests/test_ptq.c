/*
 * test_ptq.c - post-training quantization (ptq/qt_ptq.h):
 *   - SHA-256 against the FIPS 180-4 test vectors; calibration sampling (seeded, disjoint
 *     windows, a clear error when the data is too short) and its hash;
 *   - GPTQ on a matrix against a PyTorch implementation of the published algorithm
 *     (tests/fixtures/ptq_ref.safetensors from gen_ptq_fixtures.py): int2/3/4/8,
 *     symmetric and asymmetric, per channel and groups, act-order, static groups;
 *   - GPTQ with an identity Hessian is round-to-nearest exactly; with correlated inputs
 *     its proxy loss tr(dW H dW^T) is well below RTN's;
 *   - whole models: RTN, GPTQ and AWQ on a small Llama with outlier input channels; the
 *     quantized model's output error on held-out tokens: GPTQ and AWQ below RTN; every
 *     quantized weight equals its qt_qtensor's dequantization; AWQ folded its scales into
 *     the norms; bad configurations fail naming the layer or glob.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "qt_ptq.h"
#include "testutil.h"

static uint64_t rng = 0x243f6a8885a308d3ull;
static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((float)(rng >> 40) + 0.5f) / 16777216.0f;
}
static float nrand(void) { return sqrtf(-2.0f * logf(frand())) * cosf(6.2831853f * frand()); }

/* --------------------------------------------------------------- sha / calib ---- */

static void hex(const uint8_t *h, char *out) {
    for (int i = 0; i < 32; i++) sprintf(out + 2 * i, "%02x", h[i]);
}

static void test_sha256(void) {
    /* FIPS 180-4 / NIST CSRC examples */
    struct { const char *msg; const char *digest; } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    uint8_t h[32];
    char s[65];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        qt_sha256(v[i].msg, strlen(v[i].msg), h);
        hex(h, s);
        CHECK(!strcmp(s, v[i].digest), "sha256(\"%s\") = %s", v[i].msg, s);
    }
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    qt_sha256(a, 1000000, h);
    hex(h, s);
    CHECK(!strcmp(s, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
          "sha256(a x 1e6) = %s", s);
    free(a);
}

static void test_calib(void) {
    enum { NT = 10000 };
    int32_t *tok = malloc(NT * sizeof *tok);
    for (int i = 0; i < NT; i++) tok[i] = i; /* a token's value is its position */
    qt_calib a, b, c;
    CHECK(qt_calib_sample(tok, NT, 20, 64, 5, "t", &a) == QT_OK, "sample");
    CHECK(qt_calib_sample(tok, NT, 20, 64, 5, "t", &b) == QT_OK, "sample again");
    CHECK(qt_calib_sample(tok, NT, 20, 64, 6, "t", &c) == QT_OK, "sample, other seed");
    CHECK(!memcmp(a.ids, b.ids, 20 * 64 * sizeof(int32_t)), "same seed, same set");
    CHECK(memcmp(a.ids, c.ids, 20 * 64 * sizeof(int32_t)), "other seed, other set");
    /* each sequence is a contiguous window starting at a multiple of 65, all distinct */
    bool ok = true;
    for (int s = 0; s < 20; s++) {
        ok &= a.ids[s * 64] % 65 == 0;
        for (int j = 1; j < 64; j++) ok &= a.ids[s * 64 + j] == a.ids[s * 64] + j;
        for (int t = 0; t < s; t++) ok &= a.ids[t * 64] != a.ids[s * 64];
    }
    CHECK(ok, "windows contiguous, aligned and distinct");
    char ha[72], hb[72], hc[72];
    qt_calib_hash(&a, ha);
    qt_calib_hash(&b, hb);
    qt_calib_hash(&c, hc);
    CHECK(!strncmp(ha, "sha256:", 7) && strlen(ha) == 71 && !strcmp(ha, hb) && strcmp(ha, hc),
          "hash %s / %s", ha, hc);
    /* the hash is SHA-256 of the ids as little-endian i32 */
    uint8_t h[32];
    uint8_t *le = malloc(20 * 64 * 4);
    for (int i = 0; i < 20 * 64; i++)
        for (int k = 0; k < 4; k++) le[4 * i + k] = (uint8_t)((uint32_t)a.ids[i] >> (8 * k));
    qt_sha256(le, 20 * 64 * 4, h);
    char hs[65];
    hex(h, hs);
    CHECK(!strcmp(ha + 7, hs), "hash of the LE ids");
    free(le);
    qt_calib_free(&a), qt_calib_free(&b), qt_calib_free(&c);
    /* 10000 tokens hold 153 windows of 65: 154 is too many */
    CHECK(qt_calib_sample(tok, NT, 153, 64, 1, "t", &a) == QT_OK, "153 fit");
    qt_calib_free(&a);
    qt_status st = qt_calib_sample(tok, NT, 154, 64, 1, "data.txt", &a);
    CHECK(st == QT_EINVAL && strstr(qt_error_message(), "data.txt") &&
              strstr(qt_error_message(), "153"),
          "too short: %s", qt_error_message());
    free(tok);
}

/* --------------------------------------------------------------------- GPTQ ---- */

static const float *f32(const qt_safetensors *st, const char *name, int64_t n) {
    const qt_st_tensor *t = qt_safetensors_get(st, name);
    qt_check_case(t && t->dtype == QT_F32 && (int64_t)(t->nbytes / 4) == n, name, "missing or wrong size");
    return t ? t->data : NULL;
}

static double proxy_loss(const float *w, const float *q, const float *H, int64_t rows, int64_t cols) {
    double s = 0.0;
    double *d = malloc((size_t)cols * sizeof *d);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) d[c] = (double)w[r * cols + c] - q[r * cols + c];
        for (int64_t i = 0; i < cols; i++) {
            double a = 0.0;
            for (int64_t j = 0; j < cols; j++) a += (double)H[i * cols + j] * d[j];
            s += d[i] * a;
        }
    }
    free(d);
    return s;
}

static qt_qformat intfmt(int bits, bool sym, int group) {
    qt_qformat f = {.kind = QT_QF_INT, .bits = bits, .symmetric = sym,
                    .gran = group ? QT_QG_GROUP : QT_QG_CHANNEL, .group_size = group,
                    .scale_dtype = QT_F16};
    return f;
}

static void test_gptq_reference(void) {
    qt_safetensors *st = NULL;
    if (qt_safetensors_open(QT_FIXTURES "/ptq_ref.safetensors", &st) != QT_OK) {
        CHECK(0, "fixture: %s", qt_error_message());
        return;
    }
    const int64_t rows = 48, cols = 256, N = 768;
    const float *x = f32(st, "x", N * cols), *w0 = f32(st, "w", rows * cols);
    if (!x || !w0) {
        qt_safetensors_close(st);
        return;
    }
    float *H = malloc((size_t)(cols * cols) * sizeof *H), *Hc = malloc((size_t)(cols * cols) * sizeof *Hc);
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)cols, (int)cols, (int)N, 2.0f / N, x,
                (int)cols, x, (int)cols, 0.0f, H, (int)cols);
    const char *cases = qt_safetensors_meta(st, "cases");
    CHECK(cases != NULL, "fixture cases");
    int ncase = 0;
    for (const char *p = cases; p && *p;) {
        char name[32];
        int bits, sym, group, act, stat;
        if (sscanf(p, "%31[^,],%d,%d,%d,%d,%d", name, &bits, &sym, &group, &act, &stat) != 6) break;
        qt_qformat f = intfmt(bits, sym, group);
        memcpy(w, w0, (size_t)(rows * cols) * sizeof *w);
        memcpy(Hc, H, (size_t)(cols * cols) * sizeof *H);
        qt_qtensor q;
        int32_t *perm = NULL;
        qt_status s = qt_gptq_quantize_layer(&f, w, rows, cols, Hc, 0.01f, 128, act, stat, &q, &perm);
        qt_check_case(s == QT_OK, name, "gptq: %s", qt_error_message());
        char key[64];
        snprintf(key, sizeof key, "%s.deq", name);
        const float *ref = f32(st, key, rows * cols);
        snprintf(key, sizeof key, "%s.loss", name);
        const float *rl = f32(st, key, 1);
        if (s == QT_OK && ref && rl) {
            /* the same algorithm and quantizer: the weights agree except where float
             * summation order tips a rounding (then the error propagates a little) */
            int64_t same = 0;
            for (int64_t i = 0; i < rows * cols; i++) same += w[i] == ref[i];
            double frac = (double)same / (double)(rows * cols);
            double loss = proxy_loss(w0, w, H, rows, cols);
            qt_check_case(frac >= 0.995, name, "%.4f of the weights equal torch's", frac);
            qt_check_case(fabs(loss / rl[0] - 1.0) < 0.01, name, "loss %.6g vs torch %.6g", loss,
                          (double)rl[0]);
            /* the result dequantizes to exactly what was written back */
            float *dq = malloc((size_t)(rows * cols) * sizeof *dq);
            qt_qlinear l = {.q = q, .perm = perm};
            qt_check_case(qt_qlinear_dequantize(&l, dq) == QT_OK &&
                              !memcmp(dq, w, (size_t)(rows * cols) * sizeof *w),
                          name, "weights != dequantize(codes)");
            free(dq);
            qt_check_case((perm != NULL) == (act && !stat), name, "perm only with act-order");
            if (perm) { /* a permutation, by decreasing diag(H) */
                bool ok = true;
                uint8_t *seen = calloc((size_t)cols, 1);
                for (int64_t i = 0; i < cols; i++) {
                    ok &= perm[i] >= 0 && perm[i] < cols && !seen[perm[i]];
                    if (ok) seen[perm[i]] = 1;
                    if (i) ok &= H[perm[i - 1] * cols + perm[i - 1]] >= H[perm[i] * cols + perm[i]];
                }
                free(seen);
                qt_check_case(ok, name, "perm sorts diag(H) descending");
            }
            /* the dead input's column is zero */
            bool dead = true;
            for (int64_t r = 0; r < rows; r++) dead &= w[r * cols + 200] == 0.0f;
            qt_check_case(dead, name, "dead input column zeroed");
        }
        qt_qtensor_free(&q);
        free(perm);
        ncase++;
        p = strchr(p, ';');
        p = p ? p + 1 : NULL;
    }
    CHECK(ncase == 7, "%d fixture cases", ncase);
    free(H), free(Hc), free(w);
    qt_safetensors_close(st);
}

/* With H = c I, GPTQ propagates nothing: it is RTN exactly. With correlated inputs it
 * beats RTN on its own objective. */
static void test_gptq_properties(void) {
    const int64_t rows = 32, cols = 128, N = 512;
    float *w0 = malloc((size_t)(rows * cols) * sizeof *w0), *w = malloc((size_t)(rows * cols) * sizeof *w);
    float *rtn = malloc((size_t)(rows * cols) * sizeof *rtn);
    float *H = calloc((size_t)(cols * cols), sizeof *H), *Hc = malloc((size_t)(cols * cols) * sizeof *Hc);
    float *x = malloc((size_t)(N * cols) * sizeof *x);
    for (int64_t i = 0; i < rows * cols; i++) w0[i] = 0.1f * nrand();
    const qt_qformat fs[] = {intfmt(4, true, 32), intfmt(3, false, 64), intfmt(4, true, 0),
                             intfmt(2, false, 0)};
    for (size_t k = 0; k < sizeof fs / sizeof fs[0]; k++) {
        char nm[64];
        qt_qformat_str(&fs[k], nm, sizeof nm);
        for (int64_t i = 0; i < cols; i++) H[i * cols + i] = 3.0f;
        memcpy(w, w0, (size_t)(rows * cols) * sizeof *w);
        qt_qtensor q, r;
        int32_t *perm = NULL;
        CHECK(qt_gptq_quantize_layer(&fs[k], w, rows, cols, H, 0.01f, 128, false, false, &q, &perm) == QT_OK,
              "%s: %s", nm, qt_error_message());
        CHECK(qt_quantize(&fs[k], w0, rows, cols, &r) == QT_OK, "rtn");
        qt_check_case(!memcmp(q.codes, r.codes, (size_t)(rows * cols)) &&
                          !memcmp(q.scales, r.scales, (size_t)q.n_scales * sizeof(float)),
                      nm, "identity Hessian: GPTQ != RTN");
        qt_qtensor_free(&q), qt_qtensor_free(&r);
        memset(H, 0, (size_t)(cols * cols) * sizeof *H);
    }
    /* correlated inputs */
    for (int64_t i = 0; i < N; i++) {
        float common = nrand();
        for (int64_t c = 0; c < cols; c++) x[i * cols + c] = nrand() + 0.8f * common * (c % 3 ? 1.0f : -1.0f);
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)cols, (int)cols, (int)N, 2.0f / N, x,
                (int)cols, x, (int)cols, 0.0f, H, (int)cols);
    for (size_t k = 0; k < sizeof fs / sizeof fs[0]; k++) {
        char nm[64];
        qt_qformat_str(&fs[k], nm, sizeof nm);
        memcpy(w, w0, (size_t)(rows * cols) * sizeof *w);
        memcpy(Hc, H, (size_t)(cols * cols) * sizeof *H);
        qt_qtensor q;
        int32_t *perm = NULL;
        CHECK(qt_gptq_quantize_layer(&fs[k], w, rows, cols, Hc, 0.01f, 32, true, false, &q, &perm) == QT_OK,
              "%s", qt_error_message());
        CHECK(qt_fake_quant(&fs[k], w0, rows, cols, rtn, NULL) == QT_OK, "rtn");
        double lg = proxy_loss(w0, w, H, rows, cols), lr = proxy_loss(w0, rtn, H, rows, cols);
        qt_check_case(lg < 0.8 * lr, nm, "GPTQ loss %.4g not well below RTN's %.4g", lg, lr);
        qt_qtensor_free(&q);
        free(perm);
    }
    /* refusals */
    qt_qformat nf4 = {.kind = QT_QF_NF4, .bits = 4, .group_size = 64};
    qt_qtensor q;
    int32_t *perm = NULL;
    CHECK(qt_gptq_quantize_layer(&nf4, w, rows, cols, Hc, 0.01f, 128, false, false, &q, &perm) == QT_EINVAL,
          "gptq refuses nf4");
    qt_qformat g48 = intfmt(4, true, 48);
    CHECK(qt_gptq_quantize_layer(&g48, w, rows, cols, Hc, 0.01f, 128, false, false, &q, &perm) != QT_OK,
          "group 48 does not divide 128");
    free(w0), free(w), free(rtn), free(H), free(Hc), free(x);
}

/* ------------------------------------------------------------- whole models ---- */

static void make_model(qt_model *m) {
    qt_llama_config cfg = {.vocab_size = 256, .dim = 128, .n_layers = 2, .n_heads = 4,
                           .n_kv_heads = 4, .ffn_dim = 256, .rope_theta = 10000.0f,
                           .norm_eps = 1e-5f, .max_seq_len = 64};
    memset(m, 0, sizeof *m);
    m->arch = QT_ARCH_LLAMA;
    CHECK(qt_llama_init(&m->llama, &cfg, 99) == QT_OK, "init");
    qt_llama *L = &m->llama;
    /* LLM-like activations: a few input channels an order of magnitude larger, and
     * weights with some structure (a low-rank part) so the blocks do something */
    for (int l = 0; l < cfg.n_layers; l++) {
        float *n1 = L->layers[l].attn_norm->data, *n2 = L->layers[l].ffn_norm->data;
        for (int c = 0; c < 6; c++) n1[c * 17] = 12.0f, n2[c * 13 + 5] = 12.0f;
    }
    float *e = L->embed->data;
    for (int64_t i = 0; i < 256 * 128; i++) e[i] = nrand();
}

static void copy_params(qt_model *dst, qt_model *src) {
    qt_paramset *a = qt_model_params(dst), *b = qt_model_params(src);
    for (int i = 0; i < a->n; i++)
        memcpy(a->params[i]->data, b->params[i]->data, (size_t)qt_numel(a->params[i]) * sizeof(float));
}

/* mean squared error of m's logits from ref's over a batch of held-out ids */
static double logit_mse(qt_model *ref, qt_model *m, const int32_t *ids, int64_t B, int64_t T) {
    qt_ctx *ctx = qt_ctx_new();
    qt_ctx_set_grad_enabled(ctx, false);
    int64_t shape[2] = {B, T};
    qt_tensor *a = qt_model_forward(ctx, ref, qt_tensor_from(ctx, QT_I32, 2, shape, ids));
    int64_t n = qt_numel(a);
    float *za = malloc((size_t)n * sizeof *za);
    memcpy(za, a->data, (size_t)n * sizeof *za);
    qt_ctx_reset(ctx);
    qt_tensor *b = qt_model_forward(ctx, m, qt_tensor_from(ctx, QT_I32, 2, shape, ids));
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)za[i] - ((float *)b->data)[i];
        s += d * d;
    }
    free(za);
    qt_ctx_free(ctx);
    return s / (double)n;
}

static void test_models(void) {
    qt_model ref, m;
    make_model(&ref);
    make_model(&m);
    int64_t ntok = 40000;
    int32_t *tok = malloc((size_t)ntok * sizeof *tok), held[4 * 64];
    /* a token stream with some order: a noisy walk over the vocabulary */
    int32_t cur = 0;
    for (int64_t i = 0; i < ntok; i++) {
        cur = (cur + (int32_t)(frand() * 7.0f) + (frand() < 0.1f ? 100 : 0)) % 256;
        tok[i] = cur;
    }
    for (int i = 0; i < 4 * 64; i++) held[i] = tok[ntok - 4 * 64 + i];
    qt_calib cal;
    CHECK(qt_calib_sample(tok, ntok - 4 * 64, 32, 64, 3, "stream", &cal) == QT_OK, "calib");
    const char *mnames[] = {"rtn", "gptq", "awq"};
    double mse[3] = {0};
    for (int meth = 0; meth < 3; meth++) {
        copy_params(&m, &ref);
        qt_ptq_config c;
        qt_ptq_config_defaults(&c, (qt_ptq_method)meth);
        c.fmt = intfmt(3, meth == 2 ? false : true, 32);
        c.batch = 5;
        qt_qmodel qm;
        qt_status st = qt_ptq_run(&m, &c, &cal, NULL, &qm);
        qt_check_case(st == QT_OK, mnames[meth], "run: %s", qt_error_message());
        if (st != QT_OK) continue;
        qt_check_case(qm.n == 14 && !strcmp(qm.method, mnames[meth]), mnames[meth], "%d layers", qm.n);
        /* the model holds exactly the dequantized codes */
        bool same = true;
        for (int i = 0; i < qm.n; i++) {
            const qt_tensor *w = NULL;
            qt_paramset *ps = qt_model_params(&m);
            for (int p = 0; p < ps->n; p++)
                if (!strcmp(ps->params[p]->name, qm.layers[i].name)) w = ps->params[p];
            float *dq = malloc((size_t)qt_numel(w) * sizeof *dq);
            same &= w && qt_qlinear_dequantize(&qm.layers[i], dq) == QT_OK &&
                    !memcmp(dq, w->data, (size_t)qt_numel(w) * sizeof *dq);
            free(dq);
        }
        qt_check_case(same, mnames[meth], "weights != dequantized codes");
        /* AWQ folded scales into the norms; the others left them alone */
        bool norms_same = !memcmp(m.llama.layers[0].attn_norm->data, ref.llama.layers[0].attn_norm->data,
                                  128 * sizeof(float));
        qt_check_case(norms_same == (meth != 2), mnames[meth], "norms %s", norms_same ? "unchanged" : "changed");
        mse[meth] = logit_mse(&ref, &m, held, 4, 64);
        qt_qmodel_free(&qm);
    }
    printf("test_ptq: int3 g32 logit MSE on held-out tokens: rtn %.5f, gptq %.5f, awq %.5f\n",
           mse[0], mse[1], mse[2]);
    CHECK(mse[1] < 0.9 * mse[0], "GPTQ (%.5f) below RTN (%.5f)", mse[1], mse[0]);
    CHECK(mse[2] < 0.9 * mse[0], "AWQ (%.5f) below RTN (%.5f)", mse[2], mse[0]);
    /* bad configurations */
    qt_ptq_config c;
    qt_qmodel qm;
    qt_ptq_config_defaults(&c, QT_PTQ_GPTQ);
    const char *globs[] = {"*.q_proj", "*.nonexistent"};
    c.layers = globs;
    c.n_layers = 2;
    qt_status st = qt_ptq_run(&m, &c, &cal, NULL, &qm);
    CHECK(st == QT_EINVAL && strstr(qt_error_message(), "*.nonexistent"), "bad glob: %s", qt_error_message());
    qt_ptq_config_defaults(&c, QT_PTQ_GPTQ);
    st = qt_ptq_run(&m, &c, NULL, NULL, &qm);
    CHECK(st == QT_EINVAL && strstr(qt_error_message(), "calibration"), "no calibration: %s", qt_error_message());
    c.fmt.group_size = 96; /* divides neither 128 nor 256 */
    st = qt_ptq_run(&m, &c, &cal, NULL, &qm);
    CHECK(st != QT_OK && strstr(qt_error_message(), "model.layers.0.self_attn.q_proj.weight"),
          "group size: %s", qt_error_message());
    qt_ptq_config_defaults(&c, QT_PTQ_AWQ);
    const char *half[] = {"*.q_proj"}; /* q without k/v: they share AWQ's scales */
    c.layers = half;
    c.n_layers = 1;
    st = qt_ptq_run(&m, &c, &cal, NULL, &qm);
    CHECK(st == QT_EINVAL && strstr(qt_error_message(), "all of them or none"), "awq partial group: %s",
          qt_error_message());
    qt_ptq_config_defaults(&c, QT_PTQ_RTN);
    c.fmt = (qt_qformat){.kind = QT_QF_NF4, .bits = 4, .group_size = 64, .double_quant = true};
    st = qt_ptq_run(&m, &c, NULL, NULL, &qm);
    CHECK(st == QT_OK && qm.n == 14 && qm.layers[0].q.fmt.kind == QT_QF_NF4, "rtn nf4: %s", qt_error_message());
    if (st == QT_OK) qt_qmodel_free(&qm);
    qt_calib_free(&cal);
    free(tok);
    qt_model_free(&ref);
    qt_model_free(&m);
}

static char g_log[2048];
static void capture_log(void *user, qt_log_level level, const char *msg) {
    (void)user;
    if (level == QT_LOG_WARN) snprintf(g_log + strlen(g_log), sizeof g_log - strlen(g_log), "%s\n", msg);
}

/* a K-quant or IQ4_XS on a Linear whose inputs are not a multiple of 256 falls back as
 * llama.cpp's quantizer does (Q4_K -> Q5_0, IQ4_XS -> IQ4_NL for ffn_down of width 384),
 * and the layer records it */
static void test_kquant_fallback(void) {
    qt_llama_config cfg = {.vocab_size = 256, .dim = 256, .n_layers = 1, .n_heads = 4,
                           .n_kv_heads = 4, .ffn_dim = 384, .rope_theta = 10000.0f,
                           .norm_eps = 1e-5f, .max_seq_len = 64};
    qt_model m;
    memset(&m, 0, sizeof m);
    m.arch = QT_ARCH_LLAMA;
    CHECK(qt_llama_init(&m.llama, &cfg, 5) == QT_OK, "init");
    qt_ptq_config c;
    qt_ptq_config_defaults(&c, QT_PTQ_RTN);
    CHECK(qt_qformat_parse("q4_k", &c.fmt) == QT_OK, "parse q4_k");
    qt_qmodel qm;
    g_log[0] = 0;
    qt_log_set(capture_log, NULL);
    qt_status st = qt_ptq_run(&m, &c, NULL, NULL, &qm);
    qt_log_set(NULL, NULL);
    CHECK(strstr(g_log, "model.layers.0.mlp.down_proj.weight: 384 inputs") &&
              strstr(g_log, "Q5_0 instead of Q4_K") && !strstr(g_log, "q_proj"),
          "the fallback is reported through qt_log: \"%s\"", g_log);
    CHECK(st == QT_OK && qm.n == 7, "rtn q4_k: %s", qt_error_message());
    if (st == QT_OK) {
        int k4 = 0, q50 = 0;
        for (int i = 0; i < qm.n; i++) {
            bool down = strstr(qm.layers[i].name, "down_proj") != NULL;
            k4 += !down && qm.layers[i].q.fmt.ggml == QT_GGML_Q4_K &&
                  qm.layers[i].fallback_from == QT_GGML_F32;
            q50 += down && qm.layers[i].q.fmt.ggml == QT_GGML_Q5_0 &&
                   qm.layers[i].fallback_from == QT_GGML_Q4_K;
        }
        CHECK(k4 == 6 && q50 == 1, "q4_k on 6 layers (%d), q5_0 on down_proj (%d)", k4, q50);
        qt_qmodel_free(&qm);
    }
    /* IQ4_XS -> IQ4_NL (llama-quant.cpp tensor_type_fallback) */
    CHECK(qt_qformat_parse("iq4_xs", &c.fmt) == QT_OK, "parse iq4_xs");
    st = qt_ptq_run(&m, &c, NULL, NULL, &qm);
    CHECK(st == QT_OK && qm.n == 7, "rtn iq4_xs: %s", qt_error_message());
    if (st == QT_OK) {
        int xs = 0, nl = 0;
        for (int i = 0; i < qm.n; i++) {
            xs += qm.layers[i].q.fmt.ggml == QT_GGML_IQ4_XS;
            nl += qm.layers[i].q.fmt.ggml == QT_GGML_IQ4_NL &&
                  qm.layers[i].fallback_from == QT_GGML_IQ4_XS;
        }
        CHECK(xs == 6 && nl == 1, "iq4_xs on 6 layers (%d), iq4_nl on down_proj (%d)", xs, nl);
        qt_qmodel_free(&qm);
    }
    qt_model_free(&m);
}

int main(void) {
    qt_set_num_threads(2);
    test_sha256();
    test_calib();
    test_gptq_reference();
    test_gptq_properties();
    test_models();
    test_kquant_fallback();
    return qt_test_finish("test_ptq");
}
