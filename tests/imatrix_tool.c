/*
 * imatrix_tool.c - test helper for tests/test_imatrix_llamacpp.py: qtrain's importance
 * matrix and imatrix quantization, driven from the command line so llama.cpp's own tools
 * can be run on the same files.
 *
 *   imatrix_tool model OUT.gguf
 *       a random (seeded) byte-level Llama, dim 256, ffn 512, 2 blocks, 4 heads (2 kv),
 *       written as an F32 GGUF with the bytes tokenizer (ids = byte values, no BOS)
 *   imatrix_tool collect MODEL.gguf TEXT CTX OUT [dat]
 *       the importance matrix over TEXT's bytes cut as llama-imatrix cuts its tokens:
 *       floor(n / CTX) chunks of CTX tokens (the vocabulary adds no BOS, so none is
 *       inserted), 4 chunks per forward; written as GGUF, or the legacy format with
 *       "dat"; the dataset is TEXT as given
 *   imatrix_tool convert IN OUT [dat]
 *       reads an imatrix (either format) and writes it again
 *   imatrix_tool quantize MODEL.gguf IMATRIX|- TYPE OUT.gguf
 *       RTN of every Linear of the blocks into the GGUF type with the imatrix's
 *       importance (- for none) through qt_ptq_run, exported with qt_export_gguf
 *   imatrix_tool weights IMATRIX NAME OUT.f32
 *       qt_imatrix_weights of one entry (what llama-quantize would hand its quantizer)
 *
 * Exit 0 on success, 1 with the library's message on stderr otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qt_export.h"

static int fail(const char *what) {
    fprintf(stderr, "imatrix_tool: %s: %s\n", what, qt_error_message());
    return 1;
}

static int cmd_model(const char *out) {
    qt_llama_config cfg = {.vocab_size = 256, .dim = 256, .n_layers = 2, .n_heads = 4,
                           .n_kv_heads = 2, .ffn_dim = 512, .rope_theta = 10000.0f,
                           .norm_eps = 1e-5f, .tied_embeddings = false, .max_seq_len = 512};
    qt_model m = {.arch = QT_ARCH_LLAMA};
    if (qt_llama_init(&m.llama, &cfg, 4242) != QT_OK) return fail("init");
    /* norms away from 1 and a wider spread of weights: activations with structure */
    qt_paramset *ps = qt_model_params(&m);
    uint64_t s = 99;
    for (int i = 0; i < ps->n; i++) {
        qt_tensor *t = ps->params[i];
        float *d = t->data;
        int64_t n = qt_numel(t);
        for (int64_t j = 0; j < n; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            float u = (float)(s >> 40) / 16777216.0f; /* [0, 1) */
            d[j] = t->ndim == 1 ? 0.5f + 1.5f * u : d[j] * (1.0f + 4.0f * u);
        }
    }
    qt_qmodel qm;
    qt_qmodel_init(&qm, &m, "rtn");
    qt_export_opts o;
    qt_export_opts_defaults(&o);
    o.version = "test";
    int rc = qt_export_gguf(&qm, &o, out) == QT_OK ? 0 : fail(out);
    qt_qmodel_free(&qm);
    qt_model_free(&m);
    return rc;
}

static int cmd_collect(const char *model, const char *text, long ctx, const char *out,
                       bool dat) {
    FILE *f = fopen(text, "rb");
    if (!f) return fail(text);
    static unsigned char buf[1 << 22];
    long n = (long)fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (ctx < 1 || n < 2 * ctx) {
        fprintf(stderr, "imatrix_tool: %s: %ld bytes, need 2 * %ld\n", text, n, ctx);
        return 1;
    }
    qt_model m;
    if (qt_model_load_gguf(&m, model) != QT_OK) return fail(model);
    qt_calib cal = {.n = n / ctx, .len = ctx};
    cal.ids = malloc((size_t)(cal.n * ctx) * sizeof *cal.ids);
    for (long i = 0; i < cal.n * ctx; i++) cal.ids[i] = buf[i];
    qt_imatrix im;
    int rc = 0;
    if (qt_imatrix_collect(&m, &cal, 4, false, text, &im) != QT_OK) {
        rc = fail("collect");
    } else {
        if (qt_imatrix_save(&im, out, dat) != QT_OK) rc = fail(out);
        qt_imatrix_free(&im);
    }
    qt_calib_free(&cal);
    qt_model_free(&m);
    return rc;
}

static int cmd_convert(const char *in, const char *out, bool dat) {
    qt_imatrix im;
    if (qt_imatrix_load(in, &im) != QT_OK) return fail(in);
    int rc = qt_imatrix_save(&im, out, dat) == QT_OK ? 0 : fail(out);
    qt_imatrix_free(&im);
    return rc;
}

static int cmd_quantize(const char *model, const char *imat, const char *type, const char *out) {
    qt_model m;
    if (qt_model_load_gguf(&m, model) != QT_OK) return fail(model);
    qt_imatrix im = {0};
    int rc = 0;
    if (strcmp(imat, "-") && qt_imatrix_load(imat, &im) != QT_OK) rc = fail(imat);
    qt_ptq_config cfg;
    qt_ptq_config_defaults(&cfg, QT_PTQ_RTN);
    if (!rc && qt_qformat_parse(type, &cfg.fmt) != QT_OK) rc = fail(type);
    cfg.imatrix = strcmp(imat, "-") ? &im : NULL;
    qt_qmodel qm;
    if (!rc && qt_ptq_run(&m, &cfg, NULL, stdout, &qm) != QT_OK) rc = fail("rtn");
    if (!rc) {
        qt_export_opts o;
        qt_export_opts_defaults(&o);
        o.version = "test";
        if (qt_export_gguf(&qm, &o, out) != QT_OK) rc = fail(out);
        qt_qmodel_free(&qm);
    }
    qt_imatrix_free(&im);
    qt_model_free(&m);
    return rc;
}

static int cmd_weights(const char *imat, const char *name, const char *out) {
    qt_imatrix im;
    if (qt_imatrix_load(imat, &im) != QT_OK) return fail(imat);
    const qt_imatrix_entry *e = qt_imatrix_find(&im, name);
    int rc = 0;
    if (!e) {
        fprintf(stderr, "imatrix_tool: %s has no entry %s\n", imat, name);
        rc = 1;
    } else {
        float *w = malloc((size_t)e->n * sizeof *w);
        qt_imatrix_weights(&im, e, w);
        FILE *f = fopen(out, "wb");
        if (!f || fwrite(w, sizeof *w, (size_t)e->n, f) != (size_t)e->n) rc = fail(out);
        if (f) fclose(f);
        free(w);
    }
    qt_imatrix_free(&im);
    return rc;
}

int main(int argc, char **argv) {
    qt_set_num_threads(2);
    if (argc == 3 && !strcmp(argv[1], "model")) return cmd_model(argv[2]);
    if ((argc == 6 || argc == 7) && !strcmp(argv[1], "collect"))
        return cmd_collect(argv[2], argv[3], atol(argv[4]), argv[5],
                           argc == 7 && !strcmp(argv[6], "dat"));
    if ((argc == 4 || argc == 5) && !strcmp(argv[1], "convert"))
        return cmd_convert(argv[2], argv[3], argc == 5 && !strcmp(argv[4], "dat"));
    if (argc == 6 && !strcmp(argv[1], "quantize"))
        return cmd_quantize(argv[2], argv[3], argv[4], argv[5]);
    if (argc == 5 && !strcmp(argv[1], "weights")) return cmd_weights(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: imatrix_tool model OUT | collect MODEL TEXT CTX OUT [dat] | convert "
                    "IN OUT [dat] | quantize MODEL IMATRIX|- TYPE OUT | weights IMATRIX NAME "
                    "OUT\n");
    return 2;
}
