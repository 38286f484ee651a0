/*
 * test_imatrix.c - the importance matrix (ptq/imatrix.c) without llama.cpp (that oracle
 * is test_imatrix_llamacpp.py):
 *   - collect on a small Llama: one entry per Linear of the blocks in model order (and
 *     output.weight with process_output), counts = tokens, chunk metadata; the sums of the
 *     first block's q/k/v input against a double-precision recomputation of
 *     attn_norm(embedding) from the parameters; batch size does not change them;
 *   - GGUF and legacy files: round trips (sums exact; the legacy values (sum / count) *
 *     ncall), llama-quantize's weights (sums / count, 1 for a zero count; legacy / ncall),
 *     zero-count entries dropped from .dat, a legacy imatrix refused as GGUF output;
 *   - malformed files: every truncation of a legacy file (only the two lengths without
 *     the optional trailer load), missing metadata, sums without counts and the reverse,
 *     F16 sums, expert (2-count) entries, non-finite sums, a model GGUF, a missing file;
 *   - use in PTQ: RTN with an imatrix equals qt_quantize with those weights and differs from
 *     RTN without; a missing entry, a size mismatch and an entry of another model are
 *     QT_EINVAL naming the tensor and the file; int formats and GPTQ refuse an imatrix;
 *     IQ4_XS on 64 inputs falls back to IQ4_NL (recorded in fallback_from) with the
 *     imatrix applied.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qt_ptq.h"
#include "testutil.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((float)(rng >> 40) + 0.5f) / 16777216.0f;
}

static char tmpdir[64];
static const char *tpath(const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void make_model(qt_model *m, bool tied) {
    qt_llama_config cfg = {.vocab_size = 256, .dim = 64, .n_layers = 2, .n_heads = 4,
                           .n_kv_heads = 2, .ffn_dim = 96, .rope_theta = 10000.0f,
                           .norm_eps = 1e-5f, .max_seq_len = 64, .tied_embeddings = tied};
    memset(m, 0, sizeof *m);
    m->arch = QT_ARCH_LLAMA;
    CHECK(qt_llama_init(&m->llama, &cfg, 31) == QT_OK, "init");
    qt_llama *L = &m->llama;
    float *e = L->embed->data;
    for (int64_t i = 0; i < 256 * 64; i++) e[i] = 2.0f * frand() - 1.0f;
    for (int l = 0; l < 2; l++) {
        float *n1 = L->layers[l].attn_norm->data;
        for (int c = 0; c < 64; c++) n1[c] = 0.25f + 2.0f * frand();
    }
}

static qt_calib make_calib(int64_t n, int64_t len) {
    qt_calib c = {.n = n, .len = len};
    c.ids = malloc((size_t)(n * len) * sizeof *c.ids);
    for (int64_t i = 0; i < n * len; i++) c.ids[i] = (int32_t)(frand() * 256.0f) & 255;
    return c;
}

static const char *const ORDER[7] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                     "ffn_gate", "ffn_up", "ffn_down"};

static void test_collect(qt_imatrix *im_out) {
    qt_model m;
    make_model(&m, false);
    qt_calib cal = make_calib(6, 20);
    qt_imatrix im, im1, imo;
    qt_status st = qt_imatrix_collect(&m, &cal, 4, false, "calib.txt", &im);
    CHECK(st == QT_OK, "collect: %s", qt_error_message());
    if (st != QT_OK) return;
    CHECK(im.n == 14 && im.chunk_size == 20 && im.chunk_count == 6 && im.n_datasets == 1 &&
              !strcmp(im.datasets[0], "calib.txt") && !im.legacy,
          "entries %d, chunk %d x %d, datasets %d", im.n, im.chunk_count, im.chunk_size,
          im.n_datasets);
    for (int i = 0; i < im.n && i < 14; i++) {
        char want[64];
        snprintf(want, sizeof want, "blk.%d.%s.weight", i / 7, ORDER[i % 7]);
        int64_t cols = i % 7 == 3 ? 64 : (i % 7 == 6 ? 96 : 64);
        CHECK(!strcmp(im.e[i].name, want) && im.e[i].count == 120 && im.e[i].n == cols,
              "entry %d: %s n %lld count %lld (want %s)", i, im.e[i].name, (long long)im.e[i].n,
              (long long)im.e[i].count, want);
    }
    /* block 0's q/k/v input is attn_norm(embedding): recomputed in double */
    double *ref = calloc(64, sizeof *ref);
    const float *E = m.llama.embed->data, *g = m.llama.layers[0].attn_norm->data;
    for (int64_t t = 0; t < 120; t++) {
        const float *x = E + (int64_t)cal.ids[t] * 64;
        double ss = 0;
        for (int c = 0; c < 64; c++) ss += (double)x[c] * x[c];
        double r = 1.0 / sqrt(ss / 64 + 1e-5);
        for (int c = 0; c < 64; c++) ref[c] += pow(x[c] * r * g[c], 2);
    }
    double worst = 0;
    for (int k = 0; k < 3; k++)
        for (int c = 0; c < 64; c++) {
            double d = fabs(im.e[k].sums[c] - ref[c]) / ref[c];
            worst = d > worst ? d : worst;
        }
    CHECK(worst < 1e-5, "block 0 q/k/v sums vs double recomputation: relative %.3g", worst);
    free(ref);
    /* one sequence per forward: same sums up to rounding, same counts */
    st = qt_imatrix_collect(&m, &cal, 1, false, NULL, &im1);
    CHECK(st == QT_OK && im1.n == 14 && im1.n_datasets == 0, "batch 1: %s", qt_error_message());
    worst = 0;
    for (int i = 0; st == QT_OK && i < 14; i++)
        for (int64_t c = 0; c < im.e[i].n; c++) {
            double d = fabs(im.e[i].sums[c] - im1.e[i].sums[c]) / fabs(im.e[i].sums[c]);
            worst = d > worst ? d : worst;
        }
    CHECK(worst < 1e-4, "batch 1 vs 4: relative %.3g", worst);
    if (st == QT_OK) { /* no dataset name: an empty imatrix.datasets array */
        qt_imatrix back;
        CHECK(qt_imatrix_save(&im1, tpath("nods.gguf"), false) == QT_OK &&
                  qt_imatrix_load(tpath("nods.gguf"), &back) == QT_OK && back.n_datasets == 0 &&
                  back.n == 14,
              "no datasets: %s", qt_error_message());
        qt_imatrix_free(&back);
        unlink(tpath("nods.gguf"));
        qt_imatrix_free(&im1);
    }
    /* --process-output: the untied lm_head as output.weight */
    st = qt_imatrix_collect(&m, &cal, 4, true, NULL, &imo);
    CHECK(st == QT_OK && imo.n == 15 && !strcmp(imo.e[14].name, "output.weight") &&
              imo.e[14].n == 64 && imo.e[14].count == 120,
          "process_output: %d entries", st == QT_OK ? imo.n : -1);
    if (st == QT_OK) qt_imatrix_free(&imo);
    /* refusals: a tied lm_head is no entry; GPT-2; a model with a hook */
    qt_model t;
    make_model(&t, true);
    st = qt_imatrix_collect(&t, &cal, 4, true, NULL, &imo);
    CHECK(st == QT_OK && imo.n == 14, "tied lm_head: no output.weight entry");
    if (st == QT_OK) qt_imatrix_free(&imo);
    qt_model_free(&t);
    qt_calib bad = cal;
    bad.n = 0;
    CHECK(qt_imatrix_collect(&m, &bad, 4, false, NULL, &imo) == QT_EINVAL, "no calibration");
    qt_calib_free(&cal);
    qt_model_free(&m);
    *im_out = im;
}

static bool same_entries(const qt_imatrix *a, const qt_imatrix *b) {
    if (a->n != b->n) return false;
    for (int i = 0; i < a->n; i++) {
        const qt_imatrix_entry *e = qt_imatrix_find(b, a->e[i].name);
        if (!e || e->n != a->e[i].n || e->count != a->e[i].count ||
            memcmp(e->sums, a->e[i].sums, (size_t)e->n * 4))
            return false;
    }
    return true;
}

static void test_files(const qt_imatrix *im) {
    qt_imatrix g, d, d2;
    CHECK(qt_imatrix_save(im, tpath("im.gguf"), false) == QT_OK, "save gguf: %s", qt_error_message());
    qt_status st = qt_imatrix_load(tpath("im.gguf"), &g);
    CHECK(st == QT_OK && same_entries(im, &g) && !g.legacy && g.chunk_count == 6 &&
              g.chunk_size == 20 && g.n_datasets == 1 && !strcmp(g.datasets[0], "calib.txt") &&
              g.path && strstr(g.path, "im.gguf"),
          "gguf round trip: %s", qt_error_message());
    /* sorted by name on disk, as llama-imatrix writes */
    for (int i = 1; st == QT_OK && i < g.n; i++)
        CHECK(strcmp(g.e[i - 1].name, g.e[i].name) < 0, "gguf order %s, %s", g.e[i - 1].name,
              g.e[i].name);
    /* legacy: (sum / count) * ncall with ncall = ceil(120 / 20) = 6 */
    CHECK(qt_imatrix_save(im, tpath("im.dat"), true) == QT_OK, "save dat: %s", qt_error_message());
    st = qt_imatrix_load(tpath("im.dat"), &d);
    CHECK(st == QT_OK && d.legacy && d.n == 14 && d.chunk_count == 6 && d.chunk_size == 0 &&
              d.n_datasets == 1 && !strcmp(d.datasets[0], "calib.txt"),
          "legacy load: %s", qt_error_message());
    int bad = 0;
    float w1[96], w2[96];
    for (int i = 0; st == QT_OK && i < im->n; i++) {
        const qt_imatrix_entry *e = qt_imatrix_find(&d, im->e[i].name);
        if (!e || e->count != 6) {
            bad++;
            continue;
        }
        for (int64_t c = 0; c < e->n; c++) bad += e->sums[c] != (im->e[i].sums[c] / 120.0f) * 6.0f;
        /* llama-quantize's weights: GGUF sums / count, legacy values / ncall */
        qt_imatrix_weights(im, &im->e[i], w1);
        qt_imatrix_weights(&d, e, w2);
        for (int64_t c = 0; c < e->n; c++) {
            bad += w1[c] != im->e[i].sums[c] / 120.0f;
            bad += w2[c] != e->sums[c] / 6.0f;
            bad += fabsf(w1[c] - w2[c]) > 1e-6f * w1[c];
        }
    }
    CHECK(bad == 0, "legacy values and weights: %d differ", bad);
    /* a legacy imatrix writes back unchanged as legacy, and is refused as GGUF */
    CHECK(st == QT_OK && qt_imatrix_save(&d, tpath("im2.dat"), true) == QT_OK, "resave dat");
    st = qt_imatrix_load(tpath("im2.dat"), &d2);
    CHECK(st == QT_OK && same_entries(&d, &d2), "legacy round trip");
    if (st == QT_OK) qt_imatrix_free(&d2);
    CHECK(qt_imatrix_save(&d, tpath("x.gguf"), false) == QT_ENOTSUP &&
              strstr(qt_error_message(), "legacy"),
          "legacy -> gguf refused: %s", qt_error_message());
    /* a zero count: weights 1 (GGUF), dropped from a .dat */
    g.e[3].count = 0;
    qt_imatrix_weights(&g, &g.e[3], w1);
    CHECK(w1[0] == 1.0f && w1[g.e[3].n - 1] == 1.0f, "zero count -> weights 1");
    CHECK(qt_imatrix_save(&g, tpath("z.dat"), true) == QT_OK && qt_imatrix_load(tpath("z.dat"), &d2) == QT_OK,
          "zero-count dat");
    CHECK(d2.n == 13 && !qt_imatrix_find(&d2, g.e[3].name), "zero-count entry skipped: %d", d2.n);
    qt_imatrix_free(&d2);
    qt_imatrix_free(&g);
    qt_imatrix_free(&d);
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n);
    if (fread(b, 1, *n, f) != *n) *n = 0;
    fclose(f);
    return b;
}

static void spill(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
}

/* A GGUF with the imatrix keys (or not) and the tensors given. */
static qt_status write_gguf(const char *path, bool meta, int n, const char **names,
                            qt_ggml_type *types, const int64_t *ne, const void **data) {
    qt_gguf_writer *w;
    qt_gguf_writer_init(&w);
    if (meta) {
        const char *ds[1] = {"x.txt"};
        qt_gguf_writer_set_str(w, "general.type", "imatrix", 7);
        qt_gguf_writer_set_arr_str(w, "imatrix.datasets", ds, NULL, 1);
        qt_gguf_writer_set_u32(w, "imatrix.chunk_count", 1);
        qt_gguf_writer_set_u32(w, "imatrix.chunk_size", 8);
    }
    for (int i = 0; i < n; i++)
        qt_gguf_writer_add_tensor(w, names[i], types[i], 1, &ne[i], data[i],
                                  qt_ggml_nbytes(types[i], ne[i]));
    qt_status st = qt_gguf_writer_write(w, path);
    qt_gguf_writer_free(w);
    return st;
}

static void test_malformed(void) {
    qt_imatrix im;
    /* every truncation of a legacy file: QT_EFORMAT except the two valid lengths without
     * the optional trailer (after the entries; after the chunk count) */
    size_t n = 0;
    unsigned char *b = slurp(tpath("im.dat"), &n);
    CHECK(b && n > 100, "read im.dat");
    size_t tail = 8 + strlen("calib.txt"); /* chunk count, length, name */
    int wrong = 0;
    for (size_t len = 0; b && len < n; len++) {
        spill(tpath("t.dat"), b, len);
        qt_status st = qt_imatrix_load(tpath("t.dat"), &im);
        bool valid = len == n - tail || len == n - tail + 4;
        if (st == QT_OK) qt_imatrix_free(&im);
        if (valid ? st != QT_OK : st != QT_EFORMAT) {
            if (!wrong) printf("truncated .dat at %zu of %zu: %s\n", len, n, qt_status_str(st));
            wrong++;
        }
    }
    CHECK(wrong == 0, "%d truncations of the legacy file misjudged", wrong);
    /* bytes after the dataset name; a negative name length */
    if (b) {
        unsigned char *x = malloc(n + 3);
        memcpy(x, b, n);
        spill(tpath("t.dat"), x, n + 3);
        CHECK(qt_imatrix_load(tpath("t.dat"), &im) == QT_EFORMAT, "trailing bytes");
        memcpy(x, b, n);
        x[4] = 0xff, x[5] = 0xff, x[6] = 0xff, x[7] = 0xff;
        spill(tpath("t.dat"), x, n);
        CHECK(qt_imatrix_load(tpath("t.dat"), &im) == QT_EFORMAT &&
                  strstr(qt_error_message(), "t.dat"),
              "negative name length: %s", qt_error_message());
        free(x);
    }
    free(b);
    /* every truncation of a GGUF imatrix fails cleanly */
    b = slurp(tpath("im.gguf"), &n);
    wrong = 0;
    /* (the padding after the last tensor's data is not needed by qtrain's GGUF reader) */
    for (size_t len = 0; b && len + 32 < n; len += 7) {
        spill(tpath("t.gguf"), b, len);
        qt_status st = qt_imatrix_load(tpath("t.gguf"), &im);
        if (st == QT_OK) {
            qt_imatrix_free(&im);
            wrong++;
        }
    }
    CHECK(wrong == 0, "%d truncated GGUF imatrices loaded", wrong);
    free(b);

    float sums[8] = {1, 2, 3, 4, 5, 6, 7, 8}, cnt[2] = {8, 8}, nan_sums[8] = {1, NAN};
    uint16_t h[8] = {0};
    const char *nm[2] = {"blk.0.attn_q.weight.in_sum2", "blk.0.attn_q.weight.counts"};
    qt_ggml_type ty[2] = {QT_GGML_F32, QT_GGML_F32};
    int64_t ne[2] = {8, 1};
    const void *dt[2] = {sums, cnt};
    CHECK(write_gguf(tpath("ok.gguf"), true, 2, nm, ty, ne, dt) == QT_OK &&
              qt_imatrix_load(tpath("ok.gguf"), &im) == QT_OK && im.n == 1 && im.e[0].count == 8,
          "minimal imatrix: %s", qt_error_message());
    if (im.n == 1) qt_imatrix_free(&im);
    CHECK(write_gguf(tpath("m.gguf"), false, 2, nm, ty, ne, dt) == QT_OK &&
              qt_imatrix_load(tpath("m.gguf"), &im) == QT_EFORMAT &&
              strstr(qt_error_message(), "imatrix.chunk_count"),
          "missing metadata: %s", qt_error_message());
    CHECK(write_gguf(tpath("s.gguf"), true, 1, nm, ty, ne, dt) == QT_OK &&
              qt_imatrix_load(tpath("s.gguf"), &im) == QT_EFORMAT &&
              strstr(qt_error_message(), "blk.0.attn_q.weight"),
          "sums without counts: %s", qt_error_message());
    CHECK(write_gguf(tpath("c.gguf"), true, 1, nm + 1, ty, ne + 1, dt + 1) == QT_OK &&
              qt_imatrix_load(tpath("c.gguf"), &im) == QT_EFORMAT,
          "counts without sums: %s", qt_error_message());
    CHECK(write_gguf(tpath("e.gguf"), true, 0, nm, ty, ne, dt) == QT_OK &&
              qt_imatrix_load(tpath("e.gguf"), &im) == QT_EFORMAT,
          "no entries: %s", qt_error_message());
    qt_ggml_type ty16[2] = {QT_GGML_F16, QT_GGML_F32};
    const void *d16[2] = {h, cnt};
    CHECK(write_gguf(tpath("h.gguf"), true, 2, nm, ty16, ne, d16) == QT_OK &&
              qt_imatrix_load(tpath("h.gguf"), &im) == QT_EFORMAT &&
              strstr(qt_error_message(), "F32"),
          "F16 sums: %s", qt_error_message());
    int64_t ne2[2] = {8, 2};
    CHECK(write_gguf(tpath("x.gguf"), true, 2, nm, ty, ne2, dt) == QT_OK &&
              qt_imatrix_load(tpath("x.gguf"), &im) == QT_ENOTSUP,
          "expert entry: %s", qt_error_message());
    const void *dn[2] = {nan_sums, cnt};
    CHECK(write_gguf(tpath("n.gguf"), true, 2, nm, ty, ne, dn) == QT_OK &&
              qt_imatrix_load(tpath("n.gguf"), &im) == QT_EFORMAT &&
              strstr(qt_error_message(), "not finite"),
          "NaN sum: %s", qt_error_message());
    CHECK(qt_imatrix_load(tpath("does-not-exist"), &im) == QT_EIO, "missing file");
    CHECK(qt_imatrix_load(QT_FIXTURES "/tiny_llama_f32.gguf", &im) == QT_EFORMAT &&
              strstr(qt_error_message(), "not an importance matrix"),
          "a model GGUF: %s", qt_error_message());
}

static qt_tensor *param(qt_model *m, const char *name) {
    qt_paramset *ps = qt_model_params(m);
    for (int i = 0; i < ps->n; i++)
        if (!strcmp(ps->params[i]->name, name)) return ps->params[i];
    return NULL;
}

static void test_ptq(const qt_imatrix *im0) {
    qt_imatrix im;
    CHECK(qt_imatrix_load(tpath("im.gguf"), &im) == QT_OK, "load im.gguf");
    qt_model m, ref;
    make_model(&m, false);
    make_model(&ref, false);
    qt_ptq_config c;
    qt_ptq_config_defaults(&c, QT_PTQ_RTN);
    qt_qformat_parse("q4_0", &c.fmt);
    c.imatrix = &im;
    qt_qmodel qm, q0;
    qt_status st = qt_ptq_run(&m, &c, NULL, NULL, &qm);
    CHECK(st == QT_OK && qm.n == 14, "rtn q4_0 with imatrix: %s", qt_error_message());
    c.imatrix = NULL;
    qt_status st0 = qt_ptq_run(&ref, &c, NULL, NULL, &q0);
    int same = 0, differ = 0, bad = 0;
    for (int i = 0; st == QT_OK && st0 == QT_OK && i < qm.n && i < q0.n; i++, same++)
        differ += memcmp(qm.layers[i].q.blocks, q0.layers[i].q.blocks, qm.layers[i].q.nbytes) != 0;
    /* the blocks are qt_quantize of the original weights with the entry's weights (the
     * Linear weights of every make_model come from the same seeded init) */
    qt_model fresh;
    make_model(&fresh, false);
    for (int i = 0; st == QT_OK && i < qm.n; i++) {
        qt_tensor *w = param(&fresh, qm.layers[i].name);
        float *imp = malloc((size_t)w->shape[1] * sizeof *imp);
        CHECK(qt_imatrix_weights_for(&im, w, imp) == QT_OK, "weights_for %s", w->name);
        qt_qformat f = c.fmt;
        f.importance = imp;
        qt_qtensor q;
        if (qt_quantize(&f, w->data, w->shape[0], w->shape[1], &q) == QT_OK) {
            bad += q.nbytes != qm.layers[i].q.nbytes || memcmp(q.blocks, qm.layers[i].q.blocks, q.nbytes);
            qt_qtensor_free(&q);
        } else {
            bad++;
        }
        bad += qm.layers[i].fallback_from != QT_GGML_F32;
        free(imp);
    }
    CHECK(bad == 0 && same == 14, "imatrix RTN == qt_quantize with the weights (%d bad)", bad);
    CHECK(differ >= 10, "the imatrix changes the blocks of %d of 14 layers", differ);
    if (st == QT_OK) qt_qmodel_free(&qm);
    if (st0 == QT_OK) qt_qmodel_free(&q0);

    /* IQ4_XS on 64 inputs: llama.cpp's fallback IQ4_NL, recorded, imatrix still applied */
    qt_qformat_parse("iq4_xs", &c.fmt);
    c.imatrix = &im;
    qt_model m2;
    make_model(&m2, false);
    st = qt_ptq_run(&m2, &c, NULL, NULL, &qm);
    bad = 0;
    for (int i = 0; st == QT_OK && i < qm.n; i++) {
        bad += qm.layers[i].q.fmt.ggml != QT_GGML_IQ4_NL ||
               qm.layers[i].fallback_from != QT_GGML_IQ4_XS;
        qt_tensor *w = param(&fresh, qm.layers[i].name);
        float *imp = malloc((size_t)w->shape[1] * sizeof *imp);
        qt_imatrix_weights_for(&im, w, imp);
        qt_qformat f = {.kind = QT_QF_GGUF, .ggml = QT_GGML_IQ4_NL, .importance = imp};
        qt_qtensor q;
        if (qt_quantize(&f, w->data, w->shape[0], w->shape[1], &q) == QT_OK) {
            bad += memcmp(q.blocks, qm.layers[i].q.blocks, q.nbytes) != 0;
            qt_qtensor_free(&q);
        }
        free(imp);
    }
    CHECK(st == QT_OK && bad == 0, "iq4_xs -> iq4_nl fallback with imatrix: %s, %d bad",
          qt_error_message(), bad);
    if (st == QT_OK) qt_qmodel_free(&qm);
    qt_model_free(&m2);

    /* errors name the tensor and the file */
    qt_imatrix_entry saved = im.e[5];
    char *nm = im.e[5].name;
    im.e[5].name = (char *)"blk.9.nothing.weight";
    make_model(&m2, false);
    qt_qformat_parse("q4_k", &c.fmt);
    st = qt_ptq_run(&m2, &c, NULL, NULL, &qm);
    CHECK(st == QT_EINVAL && strstr(qt_error_message(), "blk.9.nothing.weight") &&
              strstr(qt_error_message(), "im.gguf"),
          "entry of another model: %s", qt_error_message());
    im.e[5].name = nm;
    im.e[5].n = 32;
    st = qt_ptq_run(&m2, &c, NULL, NULL, &qm);
    CHECK(st == QT_EINVAL && strstr(qt_error_message(), im.e[5].name) &&
              strstr(qt_error_message(), "im.gguf") && strstr(qt_error_message(), "32"),
          "size mismatch: %s", qt_error_message());
    im.e[5] = saved;
    const char *missing = im.e[im.n - 1].name;
    qt_imatrix part = im;
    part.n = im.n - 1;
    c.imatrix = &part;
    st = qt_ptq_run(&m2, &c, NULL, NULL, &qm);
    CHECK(st == QT_EINVAL && strstr(qt_error_message(), missing) &&
              strstr(qt_error_message(), "im.gguf"),
          "missing entry: %s", qt_error_message());
    c.imatrix = &im;
    qt_qformat_parse("int4", &c.fmt);
    CHECK(qt_ptq_run(&m2, &c, NULL, NULL, &qm) == QT_EINVAL &&
              strstr(qt_error_message(), "GGUF"),
          "int4 + imatrix: %s", qt_error_message());
    qt_ptq_config g;
    qt_ptq_config_defaults(&g, QT_PTQ_GPTQ);
    g.imatrix = &im;
    qt_calib cal = make_calib(2, 16);
    CHECK(qt_ptq_run(&m2, &g, &cal, NULL, &qm) == QT_EINVAL, "gptq + imatrix: %s",
          qt_error_message());
    qt_calib_free(&cal);
    /* the importance vector itself: GGUF only, finite and >= 0 */
    float w[256] = {0}, imp[256], out[256];
    for (int i = 0; i < 256; i++) imp[i] = 1.0f;
    qt_qformat f8 = {.kind = QT_QF_INT, .bits = 8, .symmetric = true, .gran = QT_QG_CHANNEL,
                     .scale_dtype = QT_F32, .importance = imp};
    CHECK(qt_fake_quant(&f8, w, 1, 64, out, NULL) == QT_EINVAL, "int8 + importance");
    qt_qformat fq = {.kind = QT_QF_GGUF, .ggml = QT_GGML_Q4_0, .importance = imp};
    imp[7] = -1.0f;
    CHECK(qt_fake_quant(&fq, w, 1, 64, out, NULL) == QT_EINVAL &&
              strstr(qt_error_message(), "importance"),
          "negative importance: %s", qt_error_message());
    imp[7] = INFINITY;
    CHECK(qt_fake_quant(&fq, w, 1, 64, out, NULL) == QT_EINVAL, "inf importance");
    imp[7] = 1.0f;
    imp[40] = NAN;
    uint8_t blk[256];
    CHECK(qt_ggml_quantize_row_weighted(QT_GGML_Q4_K, w, blk, 256, NULL) == QT_OK &&
              qt_ggml_quantize_row_weighted(QT_GGML_Q4_0, w, blk, 32, imp) == QT_OK &&
              qt_ggml_quantize_row_weighted(QT_GGML_Q4_0, w, blk, 64, imp) == QT_EINVAL,
          "row API importance check");
    qt_model_free(&m2);
    qt_model_free(&fresh);
    qt_model_free(&m);
    qt_model_free(&ref);
    qt_imatrix_free(&im);
    (void)im0;
}

static void test_fallback_table(void) {
    struct { qt_ggml_type t; int64_t cols; bool fb; qt_ggml_type to; } v[] = {
        {QT_GGML_IQ4_XS, 576, true, QT_GGML_IQ4_NL}, {QT_GGML_Q2_K, 576, true, QT_GGML_Q4_0},
        {QT_GGML_Q3_K, 1536 + 32, true, QT_GGML_Q4_0}, {QT_GGML_Q4_K, 96, true, QT_GGML_Q5_0},
        {QT_GGML_Q5_K, 96, true, QT_GGML_Q5_1},      {QT_GGML_Q6_K, 96, true, QT_GGML_Q8_0},
        {QT_GGML_Q4_K, 512, false, QT_GGML_F32},     {QT_GGML_Q4_0, 48, false, QT_GGML_F32},
        {QT_GGML_Q6_K, 100, false, QT_GGML_F32},     {QT_GGML_IQ4_NL, 64, false, QT_GGML_F32},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        qt_ggml_type out = QT_GGML_F32;
        bool fb = qt_ggml_fallback(v[i].t, v[i].cols, &out);
        CHECK(fb == v[i].fb && out == v[i].to, "fallback %s cols %lld: %d -> %s",
              qt_ggml_type_name(v[i].t), (long long)v[i].cols, fb, qt_ggml_type_name(out));
    }
}

int main(void) {
    qt_set_num_threads(2);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/qt_imatrix_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    qt_imatrix im;
    memset(&im, 0, sizeof im);
    test_collect(&im);
    if (im.n) {
        test_files(&im);
        test_malformed();
        test_ptq(&im);
    }
    test_fallback_table();
    qt_imatrix_free(&im);
    const char *files[] = {"im.gguf", "im.dat", "im2.dat", "z.dat", "t.dat", "t.gguf", "ok.gguf",
                           "m.gguf", "s.gguf", "c.gguf", "e.gguf", "h.gguf", "x.gguf", "n.gguf"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) unlink(tpath(files[i]));
    rmdir(tmpdir);
    return qt_test_finish("test_imatrix");
}
