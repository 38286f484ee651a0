/*
 * test_export_gguf.c - the GGUF exporter (export/export_gguf.c) against the GGUF model
 * loader (layers/gguf_load.c) and the GGUF reader:
 *   - random Llamas (tied / untied, F32 / F16 float weights, and a Qwen2 with q/k/v bias)
 *     whose Linears are quantized with the quantizer core in a mix of every GGUF block
 *     type plus float layers: after export and qt_model_load_gguf every parameter equals,
 *     bit for bit, qt_qlinear_dequantize of its codes (quantized), itself (F32 and norms)
 *     or its f16 rounding (F16);
 *   - the metadata: hyperparameters, general.file_type (llama.h's llama_ftype for the
 *     majority type, _M when Q6_K is mixed in), the bytes tokenizer (256 GPT-2
 *     bytes_to_unicode tokens, no merges) read back by qtrain's tokenizer as ids = bytes,
 *     provenance keys;
 *   - real tokenizers (fixtures tok_gpt2 / tok_llama3 / tok_qwen2 .json) written into the
 *     GGUF encode the same after reading them back; add_prefix_space is refused;
 *   - refusals (an INT-format layer, an act-order permutation, GPT-2, an unwritable path)
 *     with a clear status and message, and no file left behind.
 * With QT_EXPORT_GGUF_DIR set, the mixed-type files are kept there with, beside each,
 * <name>.expected.safetensors: every tensor's expected f32 values in llama.cpp's layout
 * (q/k rows permuted) under its GGUF name, and __metadata__ "type.<tensor>" = ggml type
 * name and "kv.<key>" = expected metadata value, which tests/test_export_gguf.py checks
 * with gguf-py.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qt_export.h"
#include "testutil.h"

static char g_dir[512];

/* ------------------------------------------------------------------ helpers ---- */

static qt_llama_config small_cfg(bool tied, bool qkv_bias) {
    qt_llama_config c = {.vocab_size = 256, .dim = 256, .n_layers = 2, .n_heads = 4,
                         .n_kv_heads = 2, .ffn_dim = 512, .rope_theta = 10000.0f,
                         .norm_eps = 1e-5f, .tied_embeddings = tied, .max_seq_len = 64,
                         .qkv_bias = qkv_bias};
    return c;
}

static qt_tensor *param(qt_model *m, const char *name) {
    qt_paramset *ps = qt_model_params(m);
    for (int i = 0; i < ps->n; i++)
        if (!strcmp(ps->params[i]->name, name)) return ps->params[i];
    return NULL;
}

/* Quantizes parameter `name` of m into qm as format `fmt` ("q4_k", "int4", ...). */
static bool quantize_into(qt_qmodel *qm, const char *name, const char *fmt, int32_t *perm) {
    qt_tensor *w = param(qm->model, name);
    qt_qformat f;
    qt_qtensor q;
    if (!w || qt_qformat_parse(fmt, &f) != QT_OK ||
        qt_quantize(&f, w->data, w->shape[0], w->shape[1], &q) != QT_OK) {
        printf("quantize %s as %s: %s\n", name, fmt, qt_error_message());
        free(perm);
        return false;
    }
    return qt_qmodel_add(qm, name, &q, perm) == QT_OK;
}

static const char *const LINEARS[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                      "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                      "mlp.down_proj"};

/* Every Linear of the blocks (and lm_head when given) in types[k % n], NULL = float. */
static bool quantize_mix(qt_qmodel *qm, const char *const *types, int n, const char *lm_head) {
    int k = 0;
    char name[128];
    for (int l = 0; l < qm->model->llama.cfg.n_layers; l++)
        for (int j = 0; j < 7; j++, k++) {
            if (!types[k % n]) continue;
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, LINEARS[j]);
            if (!quantize_into(qm, name, types[k % n], NULL)) return false;
        }
    if (lm_head && !quantize_into(qm, "lm_head.weight", lm_head, NULL)) return false;
    return true;
}

static bool file_exists(const char *p) { return access(p, F_OK) == 0; }

/* Entries of g_dir other than . and .. whose name starts with prefix. */
static int count_prefix(const char *prefix) {
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, prefix, strlen(prefix))) n++;
    if (d) closedir(d);
    return n;
}

/* The GGUF name gguf_load.c maps an HF parameter name to (test-side copy, so that a
 * wrong exporter name is caught by the loader and by this table independently). */
static void gguf_name(const char *hf, char *out, size_t n) {
    static const char *const map[][2] = {
        {"input_layernorm.weight", "attn_norm.weight"}, {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},   {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.q_proj.bias", "attn_q.bias"},       {"self_attn.k_proj.bias", "attn_k.bias"},
        {"self_attn.v_proj.bias", "attn_v.bias"},       {"self_attn.o_proj.weight", "attn_output.weight"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},    {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"}};
    int l, used = 0;
    snprintf(out, n, "?");
    if (!strcmp(hf, "model.embed_tokens.weight")) snprintf(out, n, "token_embd.weight");
    else if (!strcmp(hf, "model.norm.weight")) snprintf(out, n, "output_norm.weight");
    else if (!strcmp(hf, "lm_head.weight")) snprintf(out, n, "output.weight");
    else if (sscanf(hf, "model.layers.%d.%n", &l, &used) == 1 && used)
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
            if (!strcmp(hf + used, map[i][0])) snprintf(out, n, "blk.%d.%s", l, map[i][1]);
}

/* The value parameter p must load back as: dequantized codes, f16-rounded, or itself. */
static float *expected_values(const qt_qmodel *qm, const qt_tensor *p, qt_ggml_type float_type,
                              const char **type_name) {
    int64_t n = qt_numel(p);
    float *e = malloc((size_t)n * sizeof *e);
    const qt_qlinear *l = qt_qmodel_find(qm, p->name);
    const float *src = p->data;
    if (l) {
        *type_name = qt_ggml_type_name(l->q.fmt.ggml);
        if (qt_qlinear_dequantize(l, e) != QT_OK) printf("dequantize: %s\n", qt_error_message());
    } else if (p->ndim == 2 && float_type == QT_GGML_F16) {
        *type_name = "F16";
        for (int64_t i = 0; i < n; i++) e[i] = qt_f16_to_f32(qt_f32_to_f16(src[i]));
    } else {
        *type_name = "F32";
        memcpy(e, src, (size_t)n * sizeof *e);
    }
    return e;
}

/* Checks that `path` loads back into exactly the expected values; with QT_EXPORT_GGUF_DIR
 * writes <path>.expected.safetensors (llama.cpp layout) for the gguf-py check. */
static void check_roundtrip(const char *what, const qt_qmodel *qm, qt_ggml_type float_type,
                            const char *path, const char *const *kv, int n_kv) {
    qt_model back;
    qt_status st = qt_model_load_gguf(&back, path);
    CHECK(st == QT_OK, "%s: load_gguf: %s", what, qt_error_message());
    if (st != QT_OK) return;
    qt_paramset *ps = qt_model_params(qm->model), *bs = qt_model_params(&back);
    CHECK(ps->n == bs->n, "%s: %d parameters back, expected %d", what, bs->n, ps->n);
    const qt_llama_config *c = &qm->model->llama.cfg, *bc = &back.llama.cfg;
    CHECK(bc->dim == c->dim && bc->n_layers == c->n_layers && bc->n_heads == c->n_heads &&
              bc->n_kv_heads == c->n_kv_heads && bc->ffn_dim == c->ffn_dim &&
              bc->vocab_size == c->vocab_size && bc->norm_eps == c->norm_eps &&
              bc->rope_theta == c->rope_theta && bc->max_seq_len == c->max_seq_len &&
              bc->tied_embeddings == c->tied_embeddings && bc->qkv_bias == c->qkv_bias,
          "%s: config differs after the round trip", what);

    const char *dump_dir = getenv("QT_EXPORT_GGUF_DIR");
    qt_st_tensor *st_t = calloc((size_t)ps->n, sizeof *st_t);
    char (*names)[64] = calloc((size_t)ps->n, sizeof *names);
    float **dumps = calloc((size_t)ps->n, sizeof *dumps);
    const char **meta = calloc((size_t)(2 * ps->n + 2 * n_kv), sizeof *meta);
    char (*metabuf)[80] = calloc((size_t)ps->n, sizeof *metabuf);
    int n_meta = 0;
    for (int i = 0; i < ps->n; i++) {
        const qt_tensor *p = ps->params[i];
        const qt_tensor *b = param(&back, p->name);
        const char *tn = "?";
        float *e = expected_values(qm, p, float_type, &tn);
        int64_t n = qt_numel(p);
        CHECK(b && qt_numel(b) == n, "%s: %s missing or resized", what, p->name);
        if (b && qt_numel(b) == n) {
            int64_t bad = -1;
            for (int64_t k = 0; k < n && bad < 0; k++)
                if (memcmp(&e[k], &((float *)b->data)[k], sizeof(float))) bad = k;
            CHECK(bad < 0, "%s: %s (%s) element %lld: loaded %.9g, expected %.9g", what, p->name,
                  tn, (long long)bad, bad < 0 ? 0.0 : (double)((float *)b->data)[bad],
                  bad < 0 ? 0.0 : (double)e[bad]);
        }
        if (dump_dir) {
            /* llama.cpp's layout: q/k rows permuted (llama only) */
            gguf_name(p->name, names[i], sizeof names[i]);
            bool q = strstr(names[i], "attn_q.weight") != NULL, k = strstr(names[i], "attn_k.weight") != NULL;
            if (!c->qkv_bias && (q || k)) {
                int nh = q ? c->n_heads : c->n_kv_heads;
                int64_t rows = p->shape[0], cols = p->shape[1], hd = rows / nh;
                float *pe = malloc((size_t)n * sizeof *pe);
                for (int64_t r = 0; r < rows; r++) {
                    int64_t h = r / hd, j = r % hd, src = h * hd + (j % 2) * (hd / 2) + j / 2;
                    memcpy(pe + r * cols, e + src * cols, (size_t)cols * sizeof *pe);
                }
                free(e);
                e = pe;
            }
            st_t[i] = (qt_st_tensor){.name = names[i], .dtype = QT_F32, .ndim = p->ndim,
                                     .data = e, .nbytes = (size_t)n * sizeof(float)};
            memcpy(st_t[i].shape, p->shape, sizeof p->shape);
            snprintf(metabuf[i], sizeof metabuf[i], "type.%s", names[i]);
            meta[n_meta++] = metabuf[i];
            meta[n_meta++] = tn;
            dumps[i] = e;
        } else {
            free(e);
        }
    }
    if (dump_dir) {
        for (int i = 0; i < n_kv; i++) {
            meta[n_meta++] = kv[2 * i];
            meta[n_meta++] = kv[2 * i + 1];
        }
        char ep[1100];
        snprintf(ep, sizeof ep, "%s.expected.safetensors", path);
        CHECK(qt_safetensors_write(ep, st_t, ps->n, meta, n_meta / 2) == QT_OK, "%s: dump: %s",
              what, qt_error_message());
    }
    for (int i = 0; i < ps->n; i++) free(dumps[i]);
    free(dumps), free(st_t), free(names), free(meta), free(metabuf);
    qt_model_free(&back);
}

/* Where the file goes: QT_EXPORT_GGUF_DIR (kept) or the test's temporary dir. */
static void out_path(char *buf, size_t n, const char *name) {
    const char *d = getenv("QT_EXPORT_GGUF_DIR");
    snprintf(buf, n, "%s/%s.gguf", d ? d : g_dir, name);
}

/* ------------------------------------------------------------------- cases ---- */

static const char *const MIX[] = {"q8_0", "q4_0", "q4_1", "q5_0", NULL,   "q5_1",  "q2_k",
                                  "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl", "iq4_xs"};

/* A Llama with its Linears in a mix of every type; round trip and metadata. */
static void test_mix(bool tied, bool qkv_bias, qt_ggml_type float_type, const char *name) {
    qt_llama_config cfg = small_cfg(tied, qkv_bias);
    qt_model m = {.arch = QT_ARCH_LLAMA};
    CHECK(qt_llama_init(&m.llama, &cfg, 42 + tied + 2 * qkv_bias) == QT_OK, "init: %s",
          qt_error_message());
    if (qkv_bias) /* init leaves biases at 0; make them matter */
        for (int l = 0; l < cfg.n_layers; l++) {
            qt_tensor *bs[3] = {m.llama.layers[l].bq, m.llama.layers[l].bk, m.llama.layers[l].bv};
            for (int j = 0; j < 3; j++)
                for (int64_t i = 0; i < qt_numel(bs[j]); i++)
                    ((float *)bs[j]->data)[i] = 0.01f * (float)((i * 7 + j * 3 + l) % 13) - 0.06f;
        }
    /* norms at 1 would hide a swap of norms: give them distinct values */
    qt_paramset *ps = qt_model_params(&m);
    for (int i = 0; i < ps->n; i++)
        if (ps->params[i]->ndim == 1 && !strstr(ps->params[i]->name, "bias"))
            for (int64_t k = 0; k < qt_numel(ps->params[i]); k++)
                ((float *)ps->params[i]->data)[k] = 1.0f + 0.001f * (float)((k + i) % 17);
    qt_qmodel qm;
    qt_qmodel_init(&qm, &m, "rtn");
    snprintf(qm.calib_hash, sizeof qm.calib_hash, "sha256:%064d", 7);
    CHECK(quantize_mix(&qm, MIX, (int)(sizeof MIX / sizeof MIX[0]), tied ? NULL : "q6_k"),
          "%s: quantize", name);
    char path[1024];
    out_path(path, sizeof path, name);
    qt_export_opts o = {.version = "0.1.0-test", .gguf_float = float_type};
    qt_status st = qt_export_gguf(&qm, &o, path);
    CHECK(st == QT_OK, "%s: export: %s", name, qt_error_message());
    if (st == QT_OK) {
        const char *arch = qkv_bias ? "qwen2" : "llama";
        char k[24][64];
        const char *kv[48];
        int n = 0;
#define KV(key, val) (snprintf(k[n], sizeof k[n], "kv.%s", key), kv[2 * n] = k[n], kv[2 * n + 1] = val, n++)
        KV("general.architecture", arch);
        KV("general.quantization_version", "2");
        KV("tokenizer.ggml.model", "gpt2");
        KV("tokenizer.ggml.pre", "default");
        KV("qtrain.method", "rtn");
        KV("qtrain.version", "0.1.0-test");
        KV("general.quantized_by", "qtrain");
#undef KV
        check_roundtrip(name, &qm, float_type, path, kv, n);

        qt_gguf *g = NULL;
        CHECK(qt_gguf_open(path, &g) == QT_OK, "%s: open: %s", name, qt_error_message());
        if (g) {
            const char *s = NULL;
            uint32_t u = 0;
            char key[96];
            CHECK(qt_gguf_get_str(g, "general.architecture", &s, NULL) == QT_OK && !strcmp(s, arch),
                  "%s: architecture", name);
            struct { const char *suffix; uint32_t v; } ints[] = {
                {"context_length", 64},  {"embedding_length", 256}, {"block_count", 2},
                {"feed_forward_length", 512}, {"attention.head_count", 4},
                {"attention.head_count_kv", 2}, {"rope.dimension_count", 64}, {"vocab_size", 256}};
            for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
                snprintf(key, sizeof key, "%s.%s", arch, ints[i].suffix);
                CHECK(qt_gguf_get_u32(g, key, &u) == QT_OK && u == ints[i].v, "%s: %s = %u, want %u",
                      name, key, u, ints[i].v);
            }
            float f = 0;
            snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
            CHECK(qt_gguf_get_f32(g, key, &f) == QT_OK && f == 1e-5f, "%s: eps", name);
            CHECK(qt_gguf_get_u32(g, "general.quantization_version", &u) == QT_OK && u == 2,
                  "%s: quantization_version", name);
            CHECK(qt_gguf_get_u32(g, "general.file_type", &u) == QT_OK, "%s: file_type", name);
            CHECK(qt_gguf_get_str(g, "qtrain.calibration_hash", &s, NULL) == QT_OK &&
                      !strcmp(s, qm.calib_hash), "%s: calibration_hash", name);
            CHECK(qt_gguf_get_str(g, "qtrain.format", &s, NULL) == QT_OK && strstr(s, "q4_K") &&
                      strstr(s, "q8_0") && strstr(s, "q2_K"),
                  "%s: qtrain.format = \"%s\"", name, s ? s : "");
            CHECK(qt_gguf_find_key(g, "qtrain.recipe") < 0, "%s: empty recipe written", name);
            CHECK((qt_gguf_tensor_get(g, "output.weight") == NULL) == tied, "%s: output.weight",
                  name);
            const qt_gguf_tensor *t = qt_gguf_tensor_get(g, "blk.0.attn_norm.weight");
            CHECK(t && t->type == QT_GGML_F32, "%s: norms must be F32", name);
            t = qt_gguf_tensor_get(g, "token_embd.weight");
            CHECK(t && t->type == float_type && t->ne[0] == 256 && t->ne[1] == 256,
                  "%s: token_embd type/shape", name);
            /* the bytes tokenizer */
            uint64_t cnt = 0;
            qt_gguf_type et;
            CHECK(qt_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &cnt, NULL) == QT_OK &&
                      cnt == 256, "%s: 256 tokens", name);
            const char *tokA = NULL, *tokSp = NULL, *tokNl = NULL, *tok0 = NULL, *tokFF = NULL;
            qt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 'A', &tokA, NULL);
            qt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", ' ', &tokSp, NULL);
            qt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", '\n', &tokNl, NULL);
            qt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 0, &tok0, NULL);
            qt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 255, &tokFF, NULL);
            /* bytes_to_unicode: 'A' itself, ' ' U+0120, '\n' U+010A, 0 U+0100, 0xFF U+00FF */
            CHECK(tokA && tokSp && tokNl && tok0 && tokFF && !strcmp(tokA, "A") &&
                      !strcmp(tokSp, "\xc4\xa0") && !strcmp(tokNl, "\xc4\x8a") &&
                      !strcmp(tok0, "\xc4\x80") && !strcmp(tokFF, "\xc3\xbf"),
                  "%s: byte tokens", name);
            CHECK(qt_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &cnt, NULL) == QT_OK &&
                      et == QT_GGUF_STRING && cnt == 0, "%s: empty merges", name);
            qt_tokenizer *tok = NULL;
            CHECK(qt_tokenizer_from_gguf(g, path, &tok) == QT_OK, "%s: bytes tokenizer: %s", name,
                  qt_error_message());
            if (tok) {
                const char text[] = "Hello, world!\n  tabs\there \xc3\xa9\xe2\x82\xac 123";
                int32_t *ids = NULL;
                size_t nid = 0;
                qt_status es = qt_tokenizer_encode(tok, text, sizeof text - 1, QT_TOK_ADD_SPECIAL,
                                                   &ids, &nid);
                bool same = es == QT_OK && nid == sizeof text - 1;
                for (size_t i = 0; same && i < nid; i++) same = ids[i] == (uint8_t)text[i];
                CHECK(same, "%s: bytes tokenizer: ids are not the bytes", name);
                char *dec = NULL;
                size_t dl = 0;
                CHECK(es == QT_OK &&
                          qt_tokenizer_decode(tok, ids, nid, 0, &dec, &dl) == QT_OK &&
                          dl == sizeof text - 1 && !memcmp(dec, text, dl),
                      "%s: bytes tokenizer: decode", name);
                free(dec);
                free(ids);
                qt_tokenizer_free(tok);
            }
            qt_gguf_close(g);
        }
    }
    qt_qmodel_free(&qm);
    qt_model_free(&m);
}

/* general.file_type for homogeneous and mixed models (include/llama.h llama_ftype). */
static void test_file_type(void) {
    struct {
        const char *main, *v_down; /* q/k/o/gate/up, v/down */
        qt_ggml_type fl;
        uint32_t want;
    } cases[] = {
        {"q8_0", "q8_0", QT_GGML_F32, 7},  {"q4_0", "q4_0", QT_GGML_F32, 2},
        {"q4_k", "q6_k", QT_GGML_F32, 15}, {"q4_k", "q4_k", QT_GGML_F32, 14},
        {"q5_k", "q5_k", QT_GGML_F16, 16}, {"q6_k", "q6_k", QT_GGML_F32, 18},
        {"iq4_nl", "iq4_nl", QT_GGML_F32, 25}, {"iq4_xs", "iq4_xs", QT_GGML_F32, 30},
        {NULL, NULL, QT_GGML_F16, 1},      {NULL, NULL, QT_GGML_F32, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        qt_llama_config cfg = small_cfg(true, false);
        cfg.n_layers = 1;
        qt_model m = {.arch = QT_ARCH_LLAMA};
        qt_llama_init(&m.llama, &cfg, 7);
        qt_qmodel qm;
        qt_qmodel_init(&qm, &m, "rtn");
        const char *types[7] = {cases[c].main, cases[c].main, cases[c].v_down, cases[c].main,
                                cases[c].main, cases[c].main, cases[c].v_down};
        CHECK(quantize_mix(&qm, types, 7, NULL), "file_type %zu: quantize", c);
        char path[1024];
        snprintf(path, sizeof path, "%s/ft%zu.gguf", g_dir, c);
        qt_export_opts o = {.version = "", .gguf_float = cases[c].fl};
        CHECK(qt_export_gguf(&qm, &o, path) == QT_OK, "file_type %zu: %s", c, qt_error_message());
        qt_gguf *g = NULL;
        uint32_t u = 999;
        if (qt_gguf_open(path, &g) == QT_OK) {
            qt_gguf_get_u32(g, "general.file_type", &u);
            CHECK(qt_gguf_find_key(g, "qtrain.format") < 0 || cases[c].main,
                  "file_type %zu: float model has qtrain.format", c);
            CHECK(qt_gguf_find_key(g, "qtrain.version") < 0, "file_type %zu: empty version written", c);
            qt_gguf_close(g);
        }
        CHECK(u == cases[c].want, "file_type %s/%s: %u, want %u", cases[c].main ? cases[c].main : "float",
              cases[c].v_down ? cases[c].v_down : "float", u, cases[c].want);
        unlink(path);
        qt_qmodel_free(&qm);
        qt_model_free(&m);
    }
}

/* A real tokenizer survives the trip through GGUF metadata. */
static void test_tokenizer(const char *fixture, bool refuse) {
    qt_tokenizer *tok = NULL;
    char fp[600];
    snprintf(fp, sizeof fp, "%s/%s", QT_FIXTURES, fixture);
    if (qt_tokenizer_load_json(fp, &tok) != QT_OK) {
        CHECK(0, "%s: %s", fixture, qt_error_message());
        return;
    }
    qt_llama_config cfg = small_cfg(true, false);
    cfg.dim = 64, cfg.ffn_dim = 128, cfg.n_layers = 1;
    cfg.vocab_size = qt_tokenizer_vocab_size(tok) + 3; /* padded as the converter pads */
    qt_model m = {.arch = QT_ARCH_LLAMA};
    qt_llama_init(&m.llama, &cfg, 3);
    qt_qmodel qm;
    qt_qmodel_init(&qm, &m, "rtn");
    char path[1024];
    snprintf(path, sizeof path, "%s/tok_%s.gguf", g_dir, fixture);
    qt_export_opts o = {.version = "", .tok = tok, .gguf_float = QT_GGML_F32};
    qt_status st = qt_export_gguf(&qm, &o, path);
    if (refuse) {
        CHECK(st == QT_ENOTSUP && strstr(qt_error_message(), "pre-tokenizer"),
              "%s: want ENOTSUP naming the pre-tokenizer, got %s: %s", fixture, qt_status_str(st),
              qt_error_message());
        CHECK(!file_exists(path), "%s: refused export left a file", fixture);
    } else {
        CHECK(st == QT_OK, "%s: export: %s", fixture, qt_error_message());
        qt_tokenizer *back = NULL;
        CHECK(st == QT_OK && qt_tokenizer_load_gguf(path, &back) == QT_OK, "%s: reload: %s",
              fixture, qt_error_message());
        if (back) {
            static const char *const texts[] = {
                "Hello world, it's 2024!  Numbers 1234567 and  spaces\n\nnew lines",
                "<|endoftext|> special <|begin_of_text|>x<|im_end|>", "caf\xc3\xa9 na\xc3\xafve \xe2\x82\xac"};
            for (int i = 0; i < 3; i++)
                for (unsigned fl = 0; fl < 4; fl++) {
                    int32_t *a = NULL, *b = NULL;
                    size_t na = 0, nb = 0;
                    qt_tokenizer_encode(tok, texts[i], strlen(texts[i]), fl, &a, &na);
                    qt_tokenizer_encode(back, texts[i], strlen(texts[i]), fl, &b, &nb);
                    CHECK(na == nb && na > 0 && !memcmp(a, b, na * sizeof *a),
                          "%s: text %d flags %u: %zu ids vs %zu after the round trip", fixture, i,
                          fl, na, nb);
                    free(a), free(b);
                }
            CHECK(qt_tokenizer_bos(back) == qt_tokenizer_bos(tok) &&
                      qt_tokenizer_eos(back) == qt_tokenizer_eos(tok),
                  "%s: bos/eos", fixture);
            CHECK(qt_tokenizer_vocab_size(back) == cfg.vocab_size, "%s: vocab %d, want %d",
                  fixture, qt_tokenizer_vocab_size(back), cfg.vocab_size);
            qt_tokenizer_free(back);
        }
        unlink(path);
    }
    qt_qmodel_free(&qm);
    qt_model_free(&m);
    qt_tokenizer_free(tok);
}

/* Refusals: clear status, message naming the problem, no file (nor temporary) left. */
static void test_refusals(void) {
    qt_llama_config cfg = small_cfg(true, false);
    cfg.n_layers = 1;
    qt_model m = {.arch = QT_ARCH_LLAMA};
    qt_llama_init(&m.llama, &cfg, 11);
    char path[1024];
    snprintf(path, sizeof path, "%s/refused.gguf", g_dir);
    qt_export_opts o = {.version = "", .gguf_float = QT_GGML_F32};

    qt_qmodel qm;
    qt_qmodel_init(&qm, &m, "rtn");
    quantize_into(&qm, "model.layers.0.self_attn.q_proj.weight", "q4_k", NULL);
    quantize_into(&qm, "model.layers.0.mlp.up_proj.weight", "int4", NULL);
    qt_status st = qt_export_gguf(&qm, &o, path);
    const char *msg = qt_error_message();
    CHECK(st == QT_EINVAL && strstr(msg, "model.layers.0.mlp.up_proj.weight") &&
              strstr(msg, "int4") && strstr(msg, "q8_0"),
          "INT layer: got %s: %s", qt_status_str(st), msg);
    CHECK(!file_exists(path), "INT layer: file left");
    qt_qmodel_free(&qm);

    qt_qmodel_init(&qm, &m, "gptq");
    int32_t *perm = malloc(256 * sizeof *perm);
    for (int i = 0; i < 256; i++) perm[i] = 255 - i;
    quantize_into(&qm, "model.layers.0.self_attn.k_proj.weight", "q8_0", perm);
    st = qt_export_gguf(&qm, &o, path);
    msg = qt_error_message();
    CHECK(st == QT_EINVAL && strstr(msg, "model.layers.0.self_attn.k_proj.weight") &&
              strstr(msg, "permutation"),
          "perm: got %s: %s", qt_status_str(st), msg);
    CHECK(!file_exists(path), "perm: file left");
    qt_qmodel_free(&qm);

    qt_export_opts bad = {.version = "", .gguf_float = QT_GGML_Q8_0};
    qt_qmodel_init(&qm, &m, "rtn");
    st = qt_export_gguf(&qm, &bad, path);
    CHECK(st == QT_EINVAL && strstr(qt_error_message(), "F32 or F16"), "gguf_float Q8_0: %s",
          qt_error_message());
    CHECK(!file_exists(path), "gguf_float: file left");

    /* unwritable: a directory that does not exist */
    char nodir[1100];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/x.gguf", g_dir);
    st = qt_export_gguf(&qm, &o, nodir);
    CHECK(st == QT_EIO && strstr(qt_error_message(), "no/such/dir"), "unwritable: got %s: %s",
          qt_status_str(st), qt_error_message());
    qt_qmodel_free(&qm);
    qt_model_free(&m);

    qt_gpt2_config gc = {.vocab_size = 256, .n_positions = 32, .dim = 64, .n_layers = 1,
                         .n_heads = 2, .ffn_dim = 256, .norm_eps = 1e-5f};
    qt_model g = {.arch = QT_ARCH_GPT2};
    CHECK(qt_gpt2_init(&g.gpt2, &gc, 5) == QT_OK, "gpt2 init");
    qt_qmodel_init(&qm, &g, "rtn");
    st = qt_export_gguf(&qm, &o, path);
    CHECK(st == QT_EINVAL && strstr(qt_error_message(), "GPT-2"), "gpt2: got %s: %s",
          qt_status_str(st), qt_error_message());
    CHECK(!file_exists(path), "gpt2: file left");
    qt_qmodel_free(&qm);
    qt_model_free(&g);

    CHECK(qt_export_gguf(NULL, &o, path) == QT_EINVAL, "NULL model");
    CHECK(count_prefix("refused") == 0, "a refused export left a file or temporary");
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s/qt_export_gguf_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_mix(true, false, QT_GGML_F32, "mix_tied_f32");
    test_mix(false, false, QT_GGML_F16, "mix_untied_f16");
    test_mix(false, true, QT_GGML_F32, "mix_qwen2_f32");
    test_file_type();
    test_tokenizer("tok_gpt2.json", false);
    test_tokenizer("tok_llama3.json", false);
    test_tokenizer("tok_qwen2.json", false);
    test_tokenizer("tok_smollm.json", false);
    test_tokenizer("tok_gpt2_prefix.json", true);
    test_refusals();
    /* leave the temporary dir clean */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", g_dir);
    return qt_test_finish("test_export_gguf");
}
