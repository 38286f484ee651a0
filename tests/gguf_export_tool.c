/*
 * gguf_export_tool.c - test helper for tests/test_export_llamacpp.sh: trains a tiny
 * byte-level Llama on a text file (autograd + AdamW, a few dozen steps, so its
 * predictions have structure and a perplexity well below the 256 of a uniform guess),
 * then for each requested type writes OUTDIR/model_<type>.gguf with qt_export_gguf:
 * "f32" / "f16" keep every weight float, a GGUF block type ("q8_0", "q4_k", ...)
 * round-to-nearest quantizes every Linear of the blocks through the quantizer core.
 * No tokenizer: the files carry the bytes tokenizer (ids = byte values). It also prints
 * the perplexity of the trained float model itself on EVAL with non-overlapping windows of
 * CONTEXT tokens (the windows of `qtrain eval --context N --stride N`), so the test can
 * tell a file that loads consistently wrong in both qtrain and llama.cpp from a right one.
 *
 *   gguf_export_tool [--qkv-bias] TEXT EVAL CONTEXT OUTDIR STEPS TYPE...
 *
 * --qkv-bias: a Qwen2-style model (q/k/v bias), exported as architecture "qwen2".
 *
 * dim 256 and ffn 512 keep every row a multiple of the K-quants' 256-element blocks.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qt_export.h"
#include "qt_optim.h"
#include "qt_train.h"

#define SEQ 64
#define BATCH 4

static int fail(const char *what) {
    fprintf(stderr, "gguf_export_tool: %s: %s\n", what, qt_error_message());
    return 1;
}

static int train(qt_model *m, const unsigned char *text, long n, int steps) {
    qt_paramset *ps = qt_model_params(m);
    qt_adamw opt;
    qt_adamw_config ac = {.lr = 3e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                          .weight_decay = 0.0f};
    if (qt_adamw_init(&opt, ps, ac) != QT_OK) return fail("adamw");
    qt_ctx *ctx = qt_ctx_new();
    int32_t ids[BATCH * SEQ], tg[BATCH * SEQ];
    uint64_t rng = 12345;
    for (int s = 0; s < steps; s++) {
        for (int b = 0; b < BATCH; b++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            long start = (long)((rng >> 33) % (uint64_t)(n - SEQ - 1));
            for (int t = 0; t < SEQ; t++) {
                ids[b * SEQ + t] = text[start + t];
                tg[b * SEQ + t] = text[start + t + 1];
            }
        }
        qt_ctx_reset(ctx);
        int64_t shape[2] = {BATCH, SEQ};
        qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, shape, ids);
        qt_tensor *y = qt_tensor_from(ctx, QT_I32, 2, shape, tg);
        qt_tensor *l = qt_cross_entropy(ctx, qt_model_forward(ctx, m, x), y, -100);
        if (!l || qt_backward(ctx, l) != QT_OK) {
            fprintf(stderr, "gguf_export_tool: step %d: %s\n", s, qt_ctx_error(ctx));
            qt_ctx_free(ctx);
            qt_adamw_free(&opt);
            return 1;
        }
        float lr = ac.lr * (float)(s < 5 ? s + 1 : 5) / 5.0f; /* short warmup */
        qt_adamw_step(&opt, ps, lr);
        qt_paramset_zero_grad(ps);
        if (s % 10 == 0 || s == steps - 1) printf("step %d: loss %.4f\n", s, ((float *)l->data)[0]);
    }
    qt_ctx_free(ctx);
    qt_adamw_free(&opt);
    return 0;
}

/* Perplexity of m on text by non-overlapping windows of ctxlen tokens: window k feeds
 * [k*ctxlen, k*ctxlen + L) and scores the token after each (qt_eval_perplexity with
 * stride = context, the windows of `qtrain eval --context N --stride N`). */
static int perplexity(qt_model *m, const unsigned char *text, long n, long ctxlen, double *ppl) {
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    if (!ids) return fail("eval");
    for (long i = 0; i < n; i++) ids[i] = text[i];
    qt_ppl_result r;
    qt_status st = qt_eval_perplexity(m, ids, n, ctxlen, ctxlen, &r);
    free(ids);
    if (st != QT_OK) return fail("eval");
    *ppl = r.ppl;
    return 0;
}

static long read_file(const char *path, unsigned char *buf, long cap) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    long n = (long)fread(buf, 1, (size_t)cap, f);
    fclose(f);
    return n;
}

int main(int argc, char **argv) {
    bool qkv_bias = argc > 1 && !strcmp(argv[1], "--qkv-bias");
    if (qkv_bias) argc--, argv++;
    if (argc < 7) {
        fprintf(stderr,
                "usage: gguf_export_tool [--qkv-bias] TEXT EVAL CONTEXT OUTDIR STEPS TYPE...\n");
        return 2;
    }
    static unsigned char text[1 << 20], eval[1 << 20];
    long n = read_file(argv[1], text, sizeof text), ne = read_file(argv[2], eval, sizeof eval);
    if (ne < 2) {
        fprintf(stderr, "gguf_export_tool: %s: need at least 2 bytes\n", argv[2]);
        return 1;
    }
    if (n < 4 * SEQ) {
        fprintf(stderr, "gguf_export_tool: %s: need at least %d bytes\n", argv[1], 4 * SEQ);
        return 1;
    }
    qt_set_num_threads(2);
    qt_llama_config cfg = {.vocab_size = 256, .dim = 256, .n_layers = 2, .n_heads = 4,
                           .n_kv_heads = 2, .ffn_dim = 512, .rope_theta = 10000.0f,
                           .norm_eps = 1e-5f, .tied_embeddings = false, .max_seq_len = 256,
                           .qkv_bias = qkv_bias};
    qt_model m = {.arch = QT_ARCH_LLAMA};
    if (qt_llama_init(&m.llama, &cfg, 2024) != QT_OK) return fail("init");
    int rc = train(&m, text, n, atoi(argv[5]));
    double ppl = 0;
    if (!rc) rc = perplexity(&m, eval, ne, atol(argv[3]), &ppl);
    if (!rc) printf("float perplexity %.6f\n", ppl);
    static const char *const LIN[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                      "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                      "mlp.down_proj"};
    qt_paramset *ps = qt_model_params(&m);
    for (int a = 6; a < argc && !rc; a++) {
        qt_qmodel qm;
        qt_qmodel_init(&qm, &m, "rtn");
        qt_export_opts o = {.version = "test", .gguf_float = QT_GGML_F32};
        if (!strcmp(argv[a], "f16")) o.gguf_float = QT_GGML_F16;
        if (strcmp(argv[a], "f32") && strcmp(argv[a], "f16")) {
            qt_qformat fmt;
            if (qt_qformat_parse(argv[a], &fmt) != QT_OK) rc = fail(argv[a]);
            for (int l = 0; l < cfg.n_layers && !rc; l++)
                for (int j = 0; j < 7 && !rc; j++) {
                    char name[128];
                    snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, LIN[j]);
                    qt_tensor *w = NULL;
                    for (int i = 0; i < ps->n; i++)
                        if (!strcmp(ps->params[i]->name, name)) w = ps->params[i];
                    qt_qtensor q;
                    if (!w || qt_quantize(&fmt, w->data, w->shape[0], w->shape[1], &q) != QT_OK ||
                        qt_qmodel_add(&qm, name, &q, NULL) != QT_OK)
                        rc = fail(name);
                }
        }
        char path[1024];
        snprintf(path, sizeof path, "%s/model_%s.gguf", argv[4], argv[a]);
        if (!rc && qt_export_gguf(&qm, &o, path) != QT_OK) rc = fail(path);
        if (!rc) printf("wrote %s\n", path);
        qt_qmodel_free(&qm);
    }
    qt_model_free(&m);
    return rc;
}
