/*
 * test_model.c - the model layers and Hugging Face checkpoints (layers/), against
 * transformers (fixtures from tests/fixtures/gen_model_fixtures.py):
 *   - parity: tiny Llama (GQA, untied), Qwen2 (q/k/v bias, tied) and GPT-2 (Conv1D, tied)
 *     checkpoints written by save_pretrained load, and their logits on fixed ids match
 *     transformers' (eager attention, float32). Tolerance, stated once:
 *     max|ours - theirs| <= 1e-4 * max|theirs| over the whole (B, T, vocab) tensor;
 *   - gradients of mean cross-entropy for a few parameters of each (through GPT-2's
 *     q/k/v split, Qwen2's biases, tied embeddings) against torch autograd, same rule;
 *   - the sharded save (model.safetensors.index.json, 4 shards) loads the same weights,
 *     bit for bit, as the single file;
 *   - save then load gives identical weights and logits (f32), every weight rounded to
 *     bf16 / f16 when saved so, both into a new directory and over an existing one,
 *     leaving no temporary behind;
 *   - bad inputs, each a clean status whose message names the file and the key or
 *     tensor: missing directory / config.json / weights, invalid JSON, a key of the
 *     wrong type, a missing key, an unknown architecture, unsupported rope scaling,
 *     truncated safetensors, a tensor of the wrong shape, a missing, an unexpected or an
 *     integer tensor, a config that disagrees with the weights, a bad index;
 *   - forward refuses sequences longer than the model's positions.
 * With QT_MODEL_SAVE_DIR=DIR set, the three models are also saved to DIR/{llama,qwen2,
 * gpt2} (f32) and DIR/<name>_bf16 for `gen_model_fixtures.py --check-saved DIR` (transformers reads our files).
 */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "qt_formats.h"
#include "qt_layers.h"
#include "model_util.h"
#include "testutil.h"

static const char *NAMES[3] = {"llama", "qwen2", "gpt2"};

/* ---------------------------------------------------------------- helpers ---- */

static char *fx(const char *rel) {
    static char buf[8][1024];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 1024, "%s/%s", QT_FIXTURES, rel);
    return b;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f) {
    return remove(p);
}
static void rm_rf(const char *p) { nftw(p, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static char *tmpdir_new(void) {
    char t[] = "/tmp/qt_model_test_XXXXXX";
    if (!mkdtemp(t)) {
        perror("mkdtemp");
        exit(2);
    }
    return strdup(t);
}

static bool exists(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    if (fread(b, 1, (size_t)len, f) != (size_t)len) len = 0;
    b[len] = 0;
    fclose(f);
    if (n) *n = (size_t)len;
    return b;
}

static void spit(const char *dir, const char *name, const void *data, size_t n) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        perror(p);
        exit(2);
    }
    fclose(f);
}

static void copy_file(const char *from, const char *dir, const char *name) {
    size_t n;
    char *b = slurp(from, &n);
    if (!b) {
        perror(from);
        exit(2);
    }
    spit(dir, name, b, n);
    free(b);
}

/* A config.json from a fixture, changed by `edit`, written into dir. */
static void write_config(const char *dir, const char *fixture, void (*edit)(cJSON *)) {
    char *text = slurp(fx(fixture), NULL);
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (edit) edit(j);
    char *out = cJSON_Print(j);
    spit(dir, "config.json", out, strlen(out));
    cJSON_free(out);
    cJSON_Delete(j);
}

static bool same_params(qt_model *a, qt_model *b) {
    qt_paramset *pa = qt_model_params(a), *pb = qt_model_params(b);
    if (pa->n != pb->n || pa->n_total != pb->n_total) return false;
    for (int i = 0; i < pa->n; i++)
        if (strcmp(pa->params[i]->name, pb->params[i]->name) ||
            !qt_same_shape(pa->params[i], pb->params[i]))
            return false;
    return memcmp(pa->data, pb->data, pa->n_total * sizeof(float)) == 0;
}

/* ----------------------------------------------------------------- parity ---- */

static void test_parity(const qt_safetensors *ref) {
    const qt_st_tensor *ids = qt_safetensors_get(ref, "ids");
    CHECK(ids && ids->dtype == QT_I32 && ids->ndim == 2, "fixture ids (B, T) i32");
    if (!ids) return;
    for (int k = 0; k < 3; k++) {
        char dir[64], key[64];
        snprintf(dir, sizeof dir, "tiny_%s", NAMES[k]);
        snprintf(key, sizeof key, "%s_logits", NAMES[k]);
        qt_model m;
        qt_status s = qt_model_load_hf(&m, fx(dir));
        CHECK(s == QT_OK, "%s: load: %s: %s", NAMES[k], qt_status_str(s), qt_error_message());
        if (s != QT_OK) continue;
        CHECK(m.arch == (k == 2 ? QT_ARCH_GPT2 : QT_ARCH_LLAMA), "%s: arch", NAMES[k]);
        if (k == 1)
            CHECK(m.llama.cfg.qkv_bias && m.llama.cfg.tied_embeddings &&
                      m.llama.lm_head == m.llama.embed && m.llama.layers[1].bk,
                  "qwen2: qkv bias and tied lm_head");
        if (k == 0) CHECK(!m.llama.cfg.tied_embeddings && m.llama.cfg.max_seq_len == 64,
                          "llama: untied, max_seq_len 64");
        if (k == 2) CHECK(m.gpt2.lm_head == m.gpt2.wte && m.gpt2.cfg.ffn_dim == 96,
                          "gpt2: tied, n_inner 96");
        const qt_st_tensor *want = qt_safetensors_get(ref, key);
        int64_t n = 0;
        float *got = qt_test_run_logits(&m, ids, &n);
        CHECK(want && got && (int64_t)(want->nbytes / 4) == n, "%s: logits shape", NAMES[k]);
        if (want && got && (int64_t)(want->nbytes / 4) == n) {
            const float *w = want->data;
            double maxerr = 0, maxref = 0;
            for (int64_t i = 0; i < n; i++) {
                double e = fabs((double)got[i] - w[i]);
                if (e > maxerr) maxerr = e;
                if (fabs(w[i]) > maxref) maxref = fabs(w[i]);
            }
            printf("parity %-5s: max|ours - transformers| = %.3g, max|transformers| = %.3g\n",
                   NAMES[k], maxerr, maxref);
            CHECK(maxref > 0.5 && maxerr <= 1e-4 * maxref,
                  "%s: logits differ from transformers: max err %.3g vs tolerance %.3g",
                  NAMES[k], maxerr, 1e-4 * maxref);
        }
        free(got);
        qt_model_free(&m);
    }
}

/* -------------------------------------------------------- gradient parity ---- */

/* d mean-CE / d param against torch autograd, for the parameters the fixture holds
 * (<name>_grad.<param>). Same tolerance as the logits: max err <= 1e-4 * max|ref|. */
static void test_grad_parity(const qt_safetensors *ref) {
    const qt_st_tensor *ids = qt_safetensors_get(ref, "ids");
    const qt_st_tensor *tg = qt_safetensors_get(ref, "targets");
    CHECK(tg != NULL, "fixture targets");
    if (!tg) return;
    for (int k = 0; k < 3; k++) {
        char dir[64];
        snprintf(dir, sizeof dir, "tiny_%s", NAMES[k]);
        qt_model m;
        if (qt_model_load_hf(&m, fx(dir)) != QT_OK) {
            CHECK(0, "%s: load: %s", NAMES[k], qt_error_message());
            continue;
        }
        qt_ctx *ctx = qt_ctx_new();
        qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, ids->shape, ids->data);
        qt_tensor *y = qt_tensor_from(ctx, QT_I32, 2, tg->shape, tg->data);
        qt_tensor *loss = qt_cross_entropy(ctx, qt_model_forward(ctx, &m, x), y, -100);
        qt_status s = loss ? qt_backward(ctx, loss) : qt_ctx_status(ctx);
        CHECK(s == QT_OK, "%s: backward: %s", NAMES[k], qt_ctx_error(ctx));
        char prefix[64];
        int npfx = snprintf(prefix, sizeof prefix, "%s_grad.", NAMES[k]), seen = 0;
        for (int i = 0; s == QT_OK && i < qt_safetensors_count(ref); i++) {
            const qt_st_tensor *g = qt_safetensors_at(ref, i);
            if (strncmp(g->name, prefix, (size_t)npfx)) continue;
            seen++;
            qt_tensor *p = qt_paramset_find(qt_model_params(&m), g->name + npfx);
            int64_t n = (int64_t)(g->nbytes / 4);
            if (!p || !p->grad || qt_numel(p) != n) {
                CHECK(0, "%s: no gradient for %s", NAMES[k], g->name + npfx);
                continue;
            }
            const float *w = g->data;
            double maxerr = 0, maxref = 0;
            for (int64_t j = 0; j < n; j++) {
                maxerr = fmax(maxerr, fabs((double)p->grad[j] - w[j]));
                maxref = fmax(maxref, fabs((double)w[j]));
            }
            printf("grad   %-5s %-42s max err %.3g, max|ref| %.3g\n", NAMES[k], g->name + npfx,
                   maxerr, maxref);
            CHECK(maxref > 0 && maxerr <= 1e-4 * maxref, "%s: grad of %s: err %.3g > %.3g",
                  NAMES[k], g->name + npfx, maxerr, 1e-4 * maxref);
        }
        CHECK(seen >= 3, "%s: fixture holds %d gradients", NAMES[k], seen);
        qt_ctx_free(ctx);
        qt_model_free(&m);
    }
}

/* ------------------------------------------------------------ sharded load ---- */

static void test_sharded(void) {
    qt_model a, b;
    qt_status s1 = qt_model_load_hf(&a, fx("tiny_llama"));
    qt_status s2 = qt_model_load_hf(&b, fx("tiny_llama_sharded"));
    CHECK(s1 == QT_OK && s2 == QT_OK, "sharded: load: %s", qt_error_message());
    if (s1 == QT_OK && s2 == QT_OK)
        CHECK(same_params(&a, &b), "sharded load differs from the single-file load");
    if (s1 == QT_OK) qt_model_free(&a);
    if (s2 == QT_OK) qt_model_free(&b);
}

/* ------------------------------------------------------------- save / load ---- */

static float round_to(float x, qt_dtype dt) {
    return dt == QT_BF16 ? qt_bf16_to_f32(qt_f32_to_bf16(x)) : qt_f16_to_f32(qt_f32_to_f16(x));
}

static void test_save_load(const qt_safetensors *ref) {
    const qt_st_tensor *ids = qt_safetensors_get(ref, "ids");
    const char *keep = getenv("QT_MODEL_SAVE_DIR");
    for (int k = 0; k < 3; k++) {
        char src[64];
        snprintf(src, sizeof src, "tiny_%s", NAMES[k]);
        qt_model m;
        if (qt_model_load_hf(&m, fx(src)) != QT_OK) {
            CHECK(0, "%s: load: %s", NAMES[k], qt_error_message());
            continue;
        }
        char *root = tmpdir_new(), dir[512], tmpdir[600];
        snprintf(dir, sizeof dir, "%s/out", root);
        /* f32 into a new directory */
        qt_status s = qt_model_save_hf(&m, dir, QT_F32);
        CHECK(s == QT_OK, "%s: save: %s", NAMES[k], qt_error_message());
        snprintf(tmpdir, sizeof tmpdir, "%s.tmp.%ld", dir, (long)getpid());
        CHECK(!exists(tmpdir), "%s: temporary directory left behind", NAMES[k]);
        qt_model r;
        s = qt_model_load_hf(&r, dir);
        CHECK(s == QT_OK, "%s: reload: %s", NAMES[k], qt_error_message());
        if (s == QT_OK) {
            CHECK(same_params(&m, &r), "%s: saved and reloaded weights differ", NAMES[k]);
            CHECK(!strcmp(m.hf_arch, r.hf_arch), "%s: architecture %s saved as %s", NAMES[k],
                  m.hf_arch, r.hf_arch);
            CHECK(r.arch != QT_ARCH_LLAMA ||
                      (r.llama.cfg.max_seq_len == m.llama.cfg.max_seq_len &&
                       r.llama.cfg.rope_theta == m.llama.cfg.rope_theta &&
                       r.llama.cfg.norm_eps == m.llama.cfg.norm_eps &&
                       r.llama.cfg.tied_embeddings == m.llama.cfg.tied_embeddings),
                  "%s: config round trip", NAMES[k]);
            int64_t n1 = 0, n2 = 0;
            float *a = qt_test_run_logits(&m, ids, &n1), *b = qt_test_run_logits(&r, ids, &n2);
            CHECK(a && b && n1 == n2 && !memcmp(a, b, (size_t)n1 * 4),
                  "%s: logits after save+load differ", NAMES[k]);
            free(a);
            free(b);
            qt_model_free(&r);
        }
        /* over the existing directory, in bf16 then f16 */
        for (int d = 0; d < 2; d++) {
            qt_dtype dt = d ? QT_F16 : QT_BF16;
            s = qt_model_save_hf(&m, dir, dt);
            CHECK(s == QT_OK, "%s: save %s over existing: %s", NAMES[k], qt_dtype_name(dt),
                  qt_error_message());
            s = qt_model_load_hf(&r, dir);
            CHECK(s == QT_OK, "%s: reload %s: %s", NAMES[k], qt_dtype_name(dt),
                  qt_error_message());
            if (s != QT_OK) continue;
            qt_paramset *pa = qt_model_params(&m), *pb = qt_model_params(&r);
            size_t bad = 0;
            for (size_t i = 0; i < pa->n_total; i++) bad += pb->data[i] != round_to(pa->data[i], dt);
            CHECK(pa->n_total == pb->n_total && bad == 0,
                  "%s: %zu weights differ from their %s rounding", NAMES[k], bad,
                  qt_dtype_name(dt));
            qt_model_free(&r);
        }
        char leftovers[700];
        snprintf(leftovers, sizeof leftovers, "%s/config.json.tmp.%ld", dir, (long)getpid());
        CHECK(!exists(leftovers), "%s: config.json temporary left behind", NAMES[k]);
        /* not a directory */
        char fpath[600];
        snprintf(fpath, sizeof fpath, "%s/out/config.json", root);
        s = qt_model_save_hf(&m, fpath, QT_F32);
        CHECK(s == QT_EIO && strstr(qt_error_message(), "not a directory"),
              "%s: save onto a file: %s", NAMES[k], qt_error_message());
        snprintf(fpath, sizeof fpath, "%s/no/such/parent", root);
        s = qt_model_save_hf(&m, fpath, QT_F32);
        CHECK(s == QT_EIO && strstr(qt_error_message(), "no/such/parent"),
              "%s: save under a missing parent: %s", NAMES[k], qt_error_message());
        s = qt_model_save_hf(&m, dir, QT_I32);
        CHECK(s == QT_EDTYPE, "%s: save as i32 refused", NAMES[k]);
        if (keep) {
            char kd[1024];
            mkdir(keep, 0755);
            snprintf(kd, sizeof kd, "%s/%s", keep, NAMES[k]);
            rm_rf(kd);
            s = qt_model_save_hf(&m, kd, QT_F32);
            CHECK(s == QT_OK, "save to QT_MODEL_SAVE_DIR: %s", qt_error_message());
            snprintf(kd, sizeof kd, "%s/%s_bf16", keep, NAMES[k]);
            rm_rf(kd);
            s = qt_model_save_hf(&m, kd, QT_BF16);
            CHECK(s == QT_OK, "save bf16 to QT_MODEL_SAVE_DIR: %s", qt_error_message());
        }
        rm_rf(root);
        free(root);
        qt_model_free(&m);
    }
}

/* ------------------------------------------------------------- bad inputs ---- */

/* Loads dir, expects status `want` and a message holding every one of needles[]. */
static void expect_fail(const char *what, const char *dir, qt_status want,
                        const char *const *needles) {
    qt_model m;
    memset(&m, 0x5a, sizeof m);
    qt_status s = qt_model_load_hf(&m, dir);
    const char *msg = qt_error_message();
    bool has_all = true;
    for (int i = 0; needles[i]; i++)
        if (!strstr(msg, needles[i])) {
            has_all = false;
            printf("  (%s: message lacks \"%s\")\n", what, needles[i]);
        }
    CHECK(s == want && has_all, "%s: expected %s, got %s: %s", what, qt_status_str(want),
          qt_status_str(s), msg);
    printf("  %-28s -> %s\n", what, msg);
    if (s == QT_OK) qt_model_free(&m);
    else {
        qt_model zero;
        memset(&zero, 0, sizeof zero);
        CHECK(!memcmp(&m, &zero, sizeof m), "%s: model not left zeroed", what);
    }
}
#define NEEDLES(...) ((const char *const[]){__VA_ARGS__, NULL})

static void edit_type(cJSON *j) {
    cJSON_ReplaceItemInObject(j, "hidden_size", cJSON_CreateString("64"));
}
static void edit_missing(cJSON *j) { cJSON_DeleteItemFromObject(j, "num_hidden_layers"); }
static void edit_arch(cJSON *j) {
    cJSON_ReplaceItemInObject(j, "architectures", cJSON_CreateStringArray(
                                                      (const char *[]){"BertForMaskedLM"}, 1));
}
static void edit_rope(cJSON *j) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "rope_type", "llama3");
    cJSON_AddNumberToObject(r, "factor", 8);
    cJSON_AddItemToObject(j, "rope_scaling", r);
}
static void edit_vocab(cJSON *j) {
    cJSON_ReplaceItemInObject(j, "vocab_size", cJSON_CreateNumber(65));
}
static void edit_layers(cJSON *j) {
    cJSON_ReplaceItemInObject(j, "num_hidden_layers", cJSON_CreateNumber(1));
}
static void edit_huge(cJSON *j) {
    cJSON_ReplaceItemInObject(j, "num_hidden_layers", cJSON_CreateNumber(900000000));
}
static void edit_frac(cJSON *j) {
    cJSON_ReplaceItemInObject(j, "n_head", cJSON_CreateNumber(2.5));
}

/* A copy of tiny_llama's weights with one tensor changed: mode 0 reshaped, 1 dropped,
 * 2 an extra tensor, 3 stored as i32. */
static void write_mutated(const char *dir, int mode) {
    qt_safetensors *st;
    if (qt_safetensors_open(fx("tiny_llama/model.safetensors"), &st) != QT_OK) exit(2);
    int n = qt_safetensors_count(st), k = 0;
    qt_st_tensor *ts = calloc((size_t)n + 1, sizeof *ts);
    const char *victim = "model.layers.1.self_attn.q_proj.weight";
    for (int i = 0; i < n; i++) {
        qt_st_tensor t = *qt_safetensors_at(st, i);
        if (!strcmp(t.name, victim)) {
            if (mode == 0) t.shape[0] = 32, t.shape[1] = 128;
            if (mode == 1) continue;
            if (mode == 3) t.dtype = QT_I32;
        }
        ts[k++] = t;
    }
    static const float extra[2] = {1, 2};
    if (mode == 2)
        ts[k++] = (qt_st_tensor){.name = "model.layers.0.self_attn.extra", .dtype = QT_F32,
                                 .ndim = 1, .shape = {2}, .data = extra, .nbytes = 8};
    char p[1024];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (qt_safetensors_write(p, ts, k, NULL, 0) != QT_OK) {
        printf("write_mutated: %s\n", qt_error_message());
        exit(2);
    }
    free(ts);
    qt_safetensors_close(st);
}

static void test_bad_inputs(void) {
    char *root = tmpdir_new(), d[256];
    int c = 0;
#define NEWDIR() (snprintf(d, sizeof d, "%s/case%d", root, c++), mkdir(d, 0755), d)

    expect_fail("missing directory", "/nonexistent/qt_model", QT_EIO,
                NEEDLES("/nonexistent/qt_model/config.json"));

    NEWDIR();
    copy_file(fx("tiny_llama/model.safetensors"), d, "model.safetensors");
    expect_fail("missing config.json", d, QT_EIO, NEEDLES("config.json", "cannot open"));

    NEWDIR();
    spit(d, "config.json", "{\"vocab_size\": 64,", 18);
    expect_fail("invalid JSON", d, QT_EFORMAT, NEEDLES("config.json", "not valid JSON"));

    NEWDIR();
    spit(d, "config.json", "[1, 2]", 6);
    expect_fail("config not an object", d, QT_EFORMAT, NEEDLES("config.json", "object"));

    NEWDIR();
    write_config(d, "tiny_llama/config.json", edit_type);
    copy_file(fx("tiny_llama/model.safetensors"), d, "model.safetensors");
    expect_fail("wrong type", d, QT_EFORMAT,
                NEEDLES("config.json", "\"hidden_size\"", "integer", "string \"64\""));

    NEWDIR();
    write_config(d, "tiny_llama/config.json", edit_missing);
    copy_file(fx("tiny_llama/model.safetensors"), d, "model.safetensors");
    expect_fail("missing key", d, QT_EFORMAT, NEEDLES("config.json", "num_hidden_layers", "missing"));

    NEWDIR();
    write_config(d, "tiny_gpt2/config.json", edit_frac);
    copy_file(fx("tiny_gpt2/model.safetensors"), d, "model.safetensors");
    expect_fail("fractional n_head", d, QT_EFORMAT, NEEDLES("config.json", "n_head", "2.5"));

    NEWDIR();
    write_config(d, "tiny_llama/config.json", edit_huge);
    copy_file(fx("tiny_llama/model.safetensors"), d, "model.safetensors");
    expect_fail("absurd size", d, QT_EFORMAT, NEEDLES("config.json", "layers", "more than"));

    NEWDIR();
    write_config(d, "tiny_llama/config.json", edit_arch);
    copy_file(fx("tiny_llama/model.safetensors"), d, "model.safetensors");
    expect_fail("unknown architecture", d, QT_ENOTSUP,
                NEEDLES("config.json", "BertForMaskedLM", "LlamaForCausalLM"));

    NEWDIR();
    write_config(d, "tiny_llama/config.json", edit_rope);
    copy_file(fx("tiny_llama/model.safetensors"), d, "model.safetensors");
    expect_fail("rope scaling", d, QT_ENOTSUP, NEEDLES("config.json", "rope_scaling", "llama3"));

    NEWDIR();
    write_config(d, "tiny_llama/config.json", NULL);
    expect_fail("no weights", d, QT_EIO, NEEDLES("model.safetensors", "no weights"));

    /* truncated safetensors: a few cuts through header and data */
    size_t n;
    char *full = slurp(fx("tiny_llama/model.safetensors"), &n);
    size_t cuts[4] = {0, 5, 100, n - 1};
    for (int i = 0; i < 4; i++) {
        NEWDIR();
        write_config(d, "tiny_llama/config.json", NULL);
        spit(d, "model.safetensors", full, cuts[i]);
        qt_model m;
        qt_status s = qt_model_load_hf(&m, d);
        CHECK(s != QT_OK && strstr(qt_error_message(), "model.safetensors"),
              "truncated at %zu: %s: %s", cuts[i], qt_status_str(s), qt_error_message());
        if (s == QT_OK) qt_model_free(&m);
    }
    free(full);

    NEWDIR();
    write_config(d, "tiny_llama/config.json", NULL);
    write_mutated(d, 0);
    expect_fail("wrong shape", d, QT_ESHAPE,
                NEEDLES("model.safetensors", "model.layers.1.self_attn.q_proj.weight",
                        "expected shape [64, 64]", "found [32, 128]"));

    NEWDIR();
    write_config(d, "tiny_llama/config.json", NULL);
    write_mutated(d, 1);
    expect_fail("missing tensor", d, QT_EFORMAT,
                NEEDLES("model.safetensors", "model.layers.1.self_attn.q_proj.weight", "missing"));

    NEWDIR();
    write_config(d, "tiny_llama/config.json", NULL);
    write_mutated(d, 2);
    expect_fail("unexpected tensor", d, QT_EFORMAT,
                NEEDLES("model.safetensors", "model.layers.0.self_attn.extra", "unexpected"));

    NEWDIR();
    write_config(d, "tiny_llama/config.json", NULL);
    write_mutated(d, 3);
    expect_fail("i32 tensor", d, QT_EDTYPE,
                NEEDLES("model.safetensors", "model.layers.1.self_attn.q_proj.weight", "I32"));

    NEWDIR();
    write_config(d, "tiny_llama/config.json", edit_vocab);
    copy_file(fx("tiny_llama/model.safetensors"), d, "model.safetensors");
    expect_fail("config vs weights", d, QT_ESHAPE,
                NEEDLES("model.safetensors", "expected shape [65, 64]", "found [64, 64]",
                        "config.json"));

    NEWDIR();
    write_config(d, "tiny_llama/config.json", edit_layers);
    copy_file(fx("tiny_llama/model.safetensors"), d, "model.safetensors");
    expect_fail("more layers than config", d, QT_EFORMAT,
                NEEDLES("model.safetensors", "model.layers.1.", "unexpected"));

    /* index naming a shard that is not there, and one outside the directory */
    NEWDIR();
    write_config(d, "tiny_llama/config.json", NULL);
    const char *idx1 = "{\"weight_map\": {\"model.embed_tokens.weight\": \"nope.safetensors\"}}";
    spit(d, "model.safetensors.index.json", idx1, strlen(idx1));
    expect_fail("missing shard", d, QT_EIO, NEEDLES("nope.safetensors"));

    NEWDIR();
    write_config(d, "tiny_llama/config.json", NULL);
    const char *idx2 = "{\"weight_map\": {\"model.embed_tokens.weight\": \"../x.safetensors\"}}";
    spit(d, "model.safetensors.index.json", idx2, strlen(idx2));
    expect_fail("shard outside the directory", d, QT_EFORMAT,
                NEEDLES("model.safetensors.index.json", "../x.safetensors"));

    NEWDIR();
    write_config(d, "tiny_llama/config.json", NULL);
    const char *idx3 = "{\"weight_map\": [1]}";
    spit(d, "model.safetensors.index.json", idx3, strlen(idx3));
    expect_fail("weight_map not an object", d, QT_EFORMAT,
                NEEDLES("model.safetensors.index.json", "weight_map"));

    /* the sharded fixture with its index pointing a tensor at the wrong shard */
    NEWDIR();
    write_config(d, "tiny_llama/config.json", NULL);
    {
        char *text = slurp(fx("tiny_llama_sharded/model.safetensors.index.json"), NULL);
        cJSON *j = cJSON_Parse(text);
        free(text);
        cJSON *wm = cJSON_GetObjectItem(j, "weight_map");
        const cJSON *e;
        cJSON_ArrayForEach(e, wm) {
            char from[512];
            snprintf(from, sizeof from, "tiny_llama_sharded/%s", e->valuestring);
            char dst[1024];
            snprintf(dst, sizeof dst, "%s/%s", d, e->valuestring);
            if (!exists(dst)) copy_file(fx(from), d, e->valuestring);
        }
        /* the map says the embedding's shard for a tensor that another shard holds */
        const char *first = cJSON_GetObjectItem(wm, "model.embed_tokens.weight")->valuestring;
        CHECK(strcmp(first, cJSON_GetObjectItem(wm, "model.norm.weight")->valuestring),
              "fixture: norm and embedding in different shards");
        cJSON_ReplaceItemInObject(wm, "model.norm.weight", cJSON_CreateString(first));
        char *out = cJSON_Print(j);
        spit(d, "model.safetensors.index.json", out, strlen(out));
        cJSON_free(out);
        cJSON_Delete(j);
    }
    {
        qt_model m;
        qt_status s = qt_model_load_hf(&m, d);
        /* the tensor is still found in the shard that really holds it: shards are read
         * whole, the map only lists files; so this loads */
        CHECK(s == QT_OK, "index naming the wrong shard for a tensor: %s", qt_error_message());
        if (s == QT_OK) qt_model_free(&m);
    }
    rm_rf(root);
    free(root);
#undef NEWDIR
}

/* ------------------------------------------------ variants that must load ---- */

static void edit_mistral(cJSON *j) {
    cJSON_ReplaceItemInObject(j, "architectures", cJSON_CreateStringArray(
                                                      (const char *[]){"MistralForCausalLM"}, 1));
    cJSON_ReplaceItemInObject(j, "model_type", cJSON_CreateString("mistral"));
    cJSON_DeleteItemFromObject(j, "sliding_window");
    cJSON_AddNumberToObject(j, "sliding_window", 8);
}
static void edit_untie(cJSON *j) {
    cJSON_ReplaceItemInObject(j, "tie_word_embeddings", cJSON_CreateFalse());
}
static void edit_no_arch(cJSON *j) { cJSON_DeleteItemFromObject(j, "architectures"); }

/* tiny_gpt2's file with the names of the original GPT-2 release (no "transformer."
 * prefix) and its attn.bias buffers, or tiny_qwen2's with a lm_head.weight beside the
 * tied embedding. */
static void write_variant(const char *dir, int mode) {
    qt_safetensors *st;
    const char *src = mode == 0 ? "tiny_gpt2/model.safetensors" : "tiny_qwen2/model.safetensors";
    if (qt_safetensors_open(fx(src), &st) != QT_OK) exit(2);
    int n = qt_safetensors_count(st), k = 0;
    qt_st_tensor *ts = calloc((size_t)n + 2, sizeof *ts);
    const qt_st_tensor *emb = NULL;
    for (int i = 0; i < n; i++) {
        qt_st_tensor t = *qt_safetensors_at(st, i);
        if (mode == 0 && !strncmp(t.name, "transformer.", 12)) t.name += 12;
        if (!strcmp(t.name, "model.embed_tokens.weight")) emb = qt_safetensors_at(st, i);
        ts[k++] = t;
    }
    static float mask[4 * 4];
    if (mode == 0)
        ts[k++] = (qt_st_tensor){.name = "h.0.attn.bias", .dtype = QT_F32, .ndim = 4,
                                 .shape = {1, 1, 4, 4}, .data = mask, .nbytes = sizeof mask};
    if (mode == 1 && emb) {
        ts[k] = *emb;
        ts[k++].name = "lm_head.weight";
    }
    char p[1024];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (qt_safetensors_write(p, ts, k, NULL, 0) != QT_OK) exit(2);
    free(ts);
    qt_safetensors_close(st);
}

static void test_variants(const qt_safetensors *ref) {
    const qt_st_tensor *ids = qt_safetensors_get(ref, "ids");
    char *root = tmpdir_new(), d[256];
    qt_model base, m;
    int64_t n0 = 0, n1 = 0;

    /* Mistral = Llama numerically while T <= sliding_window; past it, refused */
    snprintf(d, sizeof d, "%s/mistral", root);
    mkdir(d, 0755);
    write_config(d, "tiny_llama/config.json", edit_mistral);
    copy_file(fx("tiny_llama/model.safetensors"), d, "model.safetensors");
    qt_status s = qt_model_load_hf(&m, d);
    CHECK(s == QT_OK && m.llama.cfg.sliding_window == 8 &&
              !strcmp(m.hf_arch, "MistralForCausalLM"),
          "mistral loads: %s", qt_error_message());
    if (s == QT_OK) {
        qt_ctx *ctx = qt_ctx_new();
        qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, ids->shape, ids->data);
        CHECK(!qt_model_forward(ctx, &m, x) && qt_ctx_status(ctx) == QT_ENOTSUP &&
                  strstr(qt_ctx_error(ctx), "sliding_window"),
              "mistral: T = 12 > sliding_window 8 refused: %s", qt_ctx_error(ctx));
        qt_ctx_free(ctx);
        m.llama.cfg.sliding_window = 64;
        float *a = qt_test_run_logits(&m, ids, &n0);
        CHECK(qt_model_load_hf(&base, fx("tiny_llama")) == QT_OK, "llama load");
        float *b = qt_test_run_logits(&base, ids, &n1);
        CHECK(a && b && n0 == n1 && !memcmp(a, b, (size_t)n0 * 4),
              "mistral within its window == llama");
        free(a);
        free(b);
        qt_model_free(&base);
        /* saved as Mistral, window kept */
        char out[300];
        snprintf(out, sizeof out, "%s/mistral_out", root);
        CHECK(qt_model_save_hf(&m, out, QT_F32) == QT_OK, "mistral save: %s", qt_error_message());
        qt_model r;
        if (qt_model_load_hf(&r, out) == QT_OK) {
            CHECK(!strcmp(r.hf_arch, "MistralForCausalLM") && r.llama.cfg.sliding_window == 64,
                  "mistral round trip keeps the architecture and window");
            qt_model_free(&r);
        } else {
            CHECK(0, "mistral reload: %s", qt_error_message());
        }
        qt_model_free(&m);
    }

    /* original GPT-2 names + attn.bias buffers */
    snprintf(d, sizeof d, "%s/gpt2_orig", root);
    mkdir(d, 0755);
    write_config(d, "tiny_gpt2/config.json", NULL);
    write_variant(d, 0);
    s = qt_model_load_hf(&m, d);
    CHECK(s == QT_OK, "gpt2 with unprefixed names: %s", qt_error_message());
    if (s == QT_OK) {
        CHECK(qt_model_load_hf(&base, fx("tiny_gpt2")) == QT_OK, "gpt2 load");
        CHECK(same_params(&m, &base), "gpt2 unprefixed names load the same weights");
        qt_model_free(&base);
        qt_model_free(&m);
    }

    /* tied Qwen2 whose file also has lm_head.weight: ignored, as transformers does */
    snprintf(d, sizeof d, "%s/qwen2_head", root);
    mkdir(d, 0755);
    write_config(d, "tiny_qwen2/config.json", NULL);
    write_variant(d, 1);
    s = qt_model_load_hf(&m, d);
    CHECK(s == QT_OK && m.llama.lm_head == m.llama.embed, "tied qwen2 with lm_head.weight: %s",
          qt_error_message());
    if (s == QT_OK) qt_model_free(&m);

    /* tie_word_embeddings false but no lm_head.weight: tied */
    snprintf(d, sizeof d, "%s/qwen2_untie", root);
    mkdir(d, 0755);
    write_config(d, "tiny_qwen2/config.json", edit_untie);
    copy_file(fx("tiny_qwen2/model.safetensors"), d, "model.safetensors");
    s = qt_model_load_hf(&m, d);
    CHECK(s == QT_OK && m.llama.cfg.tied_embeddings, "no lm_head.weight means tied: %s",
          qt_error_message());
    if (s == QT_OK) qt_model_free(&m);

    /* no "architectures": model_type decides */
    snprintf(d, sizeof d, "%s/gpt2_noarch", root);
    mkdir(d, 0755);
    write_config(d, "tiny_gpt2/config.json", edit_no_arch);
    copy_file(fx("tiny_gpt2/model.safetensors"), d, "model.safetensors");
    s = qt_model_load_hf(&m, d);
    CHECK(s == QT_OK && m.arch == QT_ARCH_GPT2, "model_type without architectures: %s",
          qt_error_message());
    if (s == QT_OK) qt_model_free(&m);
    rm_rf(root);
    free(root);
}

/* Random byte mutations of config.json and of the shard index: any status, never a
 * crash or a leak (this test also runs under ASan + UBSan). */
static void test_mutations(void) {
    char *root = tmpdir_new();
    size_t cn, in;
    char *cfg = slurp(fx("tiny_llama_sharded/config.json"), &cn);
    char *idx = slurp(fx("tiny_llama_sharded/model.safetensors.index.json"), &in);
    char d[256];
    snprintf(d, sizeof d, "%s/m", root);
    mkdir(d, 0755);
    {
        char *text = idx;
        cJSON *j = cJSON_Parse(text);
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(j, "weight_map")) {
            char from[512], dst[600];
            snprintf(from, sizeof from, "tiny_llama_sharded/%s", e->valuestring);
            snprintf(dst, sizeof dst, "%s/%s", d, e->valuestring);
            if (!exists(dst)) copy_file(fx(from), d, e->valuestring);
        }
        cJSON_Delete(j);
    }
    static const char bytes[] = "{}[]\",:0123456789.-eE tfn\\\x01\xff";
    int ok = 0, failed = 0, with_file = 0;
    for (int it = 0; it < 300; it++) {
        bool in_cfg = it % 2 == 0;
        char *buf = malloc((in_cfg ? cn : in) + 1);
        size_t len = in_cfg ? cn : in;
        memcpy(buf, in_cfg ? cfg : idx, len);
        int flips = 1 + (int)(qt_rand_u64(11, (uint64_t)it * 8) % 3);
        for (int f = 0; f < flips; f++) {
            size_t at = qt_rand_u64(12, (uint64_t)it * 8 + f) % len;
            buf[at] = bytes[qt_rand_u64(13, (uint64_t)it * 8 + f) % (sizeof bytes - 1)];
        }
        spit(d, "config.json", in_cfg ? buf : cfg, in_cfg ? len : cn);
        spit(d, "model.safetensors.index.json", in_cfg ? idx : buf, in_cfg ? in : len);
        free(buf);
        qt_model m;
        qt_status s = qt_model_load_hf(&m, d);
        if (s == QT_OK) {
            ok++;
            qt_model_free(&m);
        } else {
            failed++;
            with_file += strstr(qt_error_message(), root) != NULL;
        }
    }
    printf("mutations: %d loaded, %d refused (%d naming a file)\n", ok, failed, with_file);
    CHECK(ok + failed == 300 && failed > 0 && with_file == failed,
          "every refused mutation names its file");
    free(cfg);
    free(idx);
    rm_rf(root);
    free(root);
}

/* --------------------------------------------------- forward and init checks ---- */

static void test_forward_limits(void) {
    qt_model m;
    if (qt_model_load_hf(&m, fx("tiny_gpt2")) != QT_OK) {
        CHECK(0, "gpt2 load: %s", qt_error_message());
        return;
    }
    qt_ctx *ctx = qt_ctx_new();
    int64_t shape[2] = {1, 65};
    qt_tensor *ids = qt_tensor_zeros(ctx, QT_I32, 2, shape);
    CHECK(!qt_model_forward(ctx, &m, ids) && qt_ctx_status(ctx) == QT_ESHAPE &&
              strstr(qt_ctx_error(ctx), "n_positions"),
          "gpt2: T = 65 > n_positions refused: %s", qt_ctx_error(ctx));
    qt_ctx_free(ctx);
    qt_model_free(&m);

    /* fresh models: init, forward, backward through the q/k/v split and biases */
    qt_gpt2_config gc = {.vocab_size = 32, .n_positions = 16, .dim = 16, .n_layers = 2,
                         .n_heads = 2, .ffn_dim = 32, .norm_eps = 1e-5f};
    qt_gpt2 g;
    CHECK(qt_gpt2_init(&g, &gc, 3) == QT_OK, "gpt2 init: %s", qt_error_message());
    qt_llama_config lc = {.vocab_size = 32, .dim = 16, .n_layers = 1, .n_heads = 4,
                          .n_kv_heads = 2, .ffn_dim = 32, .rope_theta = 10000,
                          .norm_eps = 1e-5f, .qkv_bias = true, .max_seq_len = 8};
    qt_llama l;
    CHECK(qt_llama_init(&l, &lc, 3) == QT_OK, "llama init: %s", qt_error_message());
    CHECK(qt_paramset_find(&l.params, "model.layers.0.self_attn.v_proj.bias") != NULL,
          "qkv bias registered");
    int bias_nodecay = 0;
    for (int i = 0; i < l.params.n; i++)
        if (strstr(l.params.params[i]->name, "proj.bias"))
            bias_nodecay += (l.params.flags[i] & QT_PARAM_NO_DECAY) && *(float *)l.params.params[i]->data == 0.0f;
    CHECK(bias_nodecay == 3, "q/k/v biases: NO_DECAY and zero-initialised (%d of 3)", bias_nodecay);
    ctx = qt_ctx_new();
    int64_t s2[2] = {2, 8};
    int32_t idv[16];
    for (int i = 0; i < 16; i++) idv[i] = (i * 7) % 32;
    qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, s2, idv);
    qt_tensor *y = qt_tensor_from(ctx, QT_I32, 2, s2, idv);
    qt_tensor *loss = qt_cross_entropy(ctx, qt_gpt2_forward(ctx, &g, x), y, -100);
    qt_status s = loss ? qt_backward(ctx, loss) : qt_ctx_status(ctx);
    CHECK(s == QT_OK, "gpt2 forward+backward: %s", qt_ctx_error(ctx));
    double gsum = 0;
    for (size_t i = 0; i < g.params.n_grad; i++) gsum += fabs(g.params.grad[i]);
    CHECK(s == QT_OK && gsum > 0 && isfinite(gsum), "gpt2 grads nonzero and finite");
    /* every c_attn column block (q, k, v) receives gradient */
    qt_tensor *ca = qt_paramset_find(&g.params, "transformer.h.0.attn.c_attn.weight");
    if (ca && ca->grad) {
        double part[3] = {0, 0, 0};
        for (int r = 0; r < 16; r++)
            for (int col = 0; col < 48; col++) part[col / 16] += fabs(ca->grad[r * 48 + col]);
        CHECK(part[0] > 0 && part[1] > 0 && part[2] > 0, "gpt2: q, k, v all get gradient");
    }
    qt_ctx_reset(ctx);
    x = qt_tensor_from(ctx, QT_I32, 2, s2, idv);
    y = qt_tensor_from(ctx, QT_I32, 2, s2, idv);
    loss = qt_cross_entropy(ctx, qt_llama_forward(ctx, &l, x), y, -100);
    s = loss ? qt_backward(ctx, loss) : qt_ctx_status(ctx);
    CHECK(s == QT_OK, "llama qkv-bias forward+backward: %s", qt_ctx_error(ctx));
    qt_tensor *bq = qt_paramset_find(&l.params, "model.layers.0.self_attn.q_proj.bias");
    double bsum = 0;
    for (int i = 0; bq && bq->grad && i < 16; i++) bsum += fabs(bq->grad[i]);
    CHECK(bsum > 0, "q_proj.bias gets gradient");
    qt_ctx_reset(ctx);
    int64_t s9[2] = {1, 9};
    x = qt_tensor_zeros(ctx, QT_I32, 2, s9);
    CHECK(!qt_llama_forward(ctx, &l, x) && strstr(qt_ctx_error(ctx), "max_seq_len"),
          "llama: T = 9 > max_seq_len 8 refused");
    qt_ctx_free(ctx);
    qt_gpt2_free(&g);
    qt_llama_free(&l);
}

int main(void) {
    qt_safetensors *ref;
    qt_status s = qt_safetensors_open(fx("model_logits.safetensors"), &ref);
    CHECK(s == QT_OK, "open model_logits.safetensors: %s", qt_error_message());
    if (s != QT_OK) return qt_test_finish("test_model");
    test_parity(ref);
    test_grad_parity(ref);
    test_sharded();
    test_save_load(ref);
    test_bad_inputs();
    test_variants(ref);
    test_mutations();
    test_forward_limits();
    qt_safetensors_close(ref);
    return qt_test_finish("test_model");
}
