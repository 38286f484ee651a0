/*
 * test_lora_peft.c - PEFT LoRA adapter files (lora/peft.c) against PEFT itself.
 *
 * Fixtures (tests/fixtures/gen_lora_peft.py): a tiny Llama, two adapters PEFT saved
 * (r 4 on q/v/down_proj; rsLoRA r 2 on all-linear, which PEFT saves as 14 full module
 * names) and PeftModel's logits on fixed ids. Checks:
 *   - each adapter loaded onto the base gives PEFT's logits (||a - b|| / ||b|| <= 1e-4);
 *   - target_modules "all-linear" as a string loads the same adapter;
 *   - save -> load into a fresh model gives bit-identical logits, and the saved config
 *     has the keys PEFT needs; saving over a directory that is not an adapter is refused;
 *   - bad input (r 0, a wrong shape, a tensor for a module not adapted, a missing
 *     tensor, no adapter_config.json, peft_type not LORA) fails with a message naming
 *     the file and the key or tensor, and leaves the model without a hook.
 *
 * QT_LORA_REVERSE_DIR=dir also keeps a qtrain-saved adapter (trained-looking: the
 * fixture's A and B perturbed) with its logits there, for tests/lora_peft_reverse.py.
 */
#define _XOPEN_SOURCE 700
#include <cjson/cJSON.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qt_formats.h"
#include "qt_lora.h"
#include "testutil.h"

#define B 2
#define T 7
#define V 64
#define N (B * T * V)

static const char *fx(const char *rel) {
    static char buf[8][2048];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 2048, "%s/lora/%s", QT_FIXTURES, rel);
    return b;
}

static bool read_raw(const char *path, void *dst, size_t n) {
    FILE *f = fopen(path, "rb");
    size_t got = f ? fread(dst, 1, n, f) : 0;
    if (f) fclose(f);
    return got == n;
}

static bool write_raw(const char *path, const void *src, size_t n) {
    FILE *f = fopen(path, "wb");
    size_t put = f ? fwrite(src, 1, n, f) : 0;
    if (f && fclose(f)) put = 0;
    return put == n;
}

static int32_t g_ids[B * T];

/* Logits (B, T, V) into out; false when the forward fails. */
static bool logits(qt_model *m, float *out) {
    qt_ctx *ctx = qt_ctx_new();
    qt_ctx_set_grad_enabled(ctx, false);
    int64_t shape[2] = {B, T};
    qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, shape, g_ids);
    qt_tensor *y = qt_model_forward(ctx, m, x);
    bool ok = y && qt_numel(y) == N;
    if (ok) ok = qt_tensor_read(y, out) == QT_OK;
    else printf("forward failed: %s\n", qt_ctx_error(ctx));
    qt_ctx_free(ctx);
    return ok;
}

static double rel_err(const float *a, const float *b, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num / den);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    remove(p);
    return 0;
}

static void rm_tree(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static char g_tmp[256];

static const char *tmp_path(const char *rel) {
    static char buf[8][512];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 512, "%s/%s", g_tmp, rel);
    return b;
}

static bool copy_file(const char *src, const char *dst) {
    char *buf = malloc(1 << 20);
    FILE *f = fopen(src, "rb");
    size_t n = f ? fread(buf, 1, 1 << 20, f) : 0;
    if (f) fclose(f);
    bool ok = f && n < (1 << 20) && write_raw(dst, buf, n);
    free(buf);
    return ok;
}

/* A copy of an adapter directory in the temp dir: fixture `src`'s files, optionally with
 * the config replaced by `config` text. */
static const char *adapter_copy(const char *name, const char *src, const char *config) {
    const char *d = tmp_path(name);
    char p[1024];
    mkdir(d, 0755);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", d);
    char s[256];
    snprintf(s, sizeof s, "%s/adapter_model.safetensors", src);
    copy_file(fx(s), p);
    snprintf(p, sizeof p, "%s/adapter_config.json", d);
    if (config) {
        write_raw(p, config, strlen(config));
    } else {
        snprintf(s, sizeof s, "%s/adapter_config.json", src);
        copy_file(fx(s), p);
    }
    return d;
}

/* The fixture adapter's config with key set to the JSON `value` (NULL: key removed). */
static char *config_with(const char *src, const char *key, const char *value) {
    char path[256], *text = NULL;
    snprintf(path, sizeof path, "%s/adapter_config.json", src);
    if (qt_read_text_file(fx(path), &text) != QT_OK) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    cJSON_DeleteItemFromObjectCaseSensitive(j, key);
    if (value) cJSON_AddItemToObject(j, key, cJSON_Parse(value));
    char *out = cJSON_Print(j);
    cJSON_Delete(j);
    return out;
}

/* Loads `dir` onto the fixture base; returns the logits' relative error to `want`, or a
 * negative number when anything fails. */
static double load_and_compare(const char *dir, const float *want, float *got) {
    qt_model m;
    qt_lora *l = NULL;
    double err = -1;
    if (qt_model_load_hf(&m, fx("base")) != QT_OK) {
        printf("base: %s\n", qt_error_message());
        return -1;
    }
    qt_status s = qt_lora_load_peft(&l, &m, dir, false);
    if (s != QT_OK) printf("load %s: %s\n", dir, qt_error_message());
    else if (logits(&m, got)) err = rel_err(got, want, N);
    qt_lora_free(l);
    qt_model_free(&m);
    return err;
}

static void test_parity(const float *base) {
    float want[N], got[N];
    CHECK(read_raw(fx("logits_adapter.bin"), want, sizeof want), "logits_adapter.bin");
    double e = load_and_compare(fx("adapter"), want, got);
    printf("adapter (r 4, q/v/down_proj): rel err vs PEFT %.3g (adapter moves logits by %.3f)\n",
           e, rel_err(want, base, N));
    CHECK(e >= 0 && e <= 1e-4, "adapter: rel err %.3g > 1e-4", e);

    CHECK(read_raw(fx("logits_rslora.bin"), want, sizeof want), "logits_rslora.bin");
    e = load_and_compare(fx("adapter_rslora"), want, got);
    printf("adapter_rslora (r 2, all-linear, rsLoRA): rel err vs PEFT %.3g\n", e);
    CHECK(e >= 0 && e <= 1e-4, "adapter_rslora: rel err %.3g > 1e-4", e);

    /* the same adapter with target_modules the string "all-linear" */
    char *cfg = config_with("adapter_rslora", "target_modules", "\"all-linear\"");
    const char *d = adapter_copy("all_linear", "adapter_rslora", cfg);
    free(cfg);
    e = load_and_compare(d, want, got);
    CHECK(e >= 0 && e <= 1e-4, "target_modules \"all-linear\": rel err %.3g", e);
}

/* qtrain saves, qtrain (and with QT_LORA_REVERSE_DIR, PEFT) reloads. */
static void test_round_trip(void) {
    qt_model m, m2;
    qt_lora *l = NULL, *l2 = NULL;
    if (qt_model_load_hf(&m, fx("base")) != QT_OK) {
        CHECK(false, "base: %s", qt_error_message());
        return;
    }
    qt_status s = qt_lora_load_peft(&l, &m, fx("adapter"), false);
    CHECK(s == QT_OK, "load adapter: %s", qt_error_message());
    if (s != QT_OK) {
        qt_model_free(&m);
        return;
    }
    /* make it differ from the fixture, as training would */
    qt_paramset *ps = qt_lora_params(l);
    for (size_t i = 0; i < ps->n_total; i++) ps->data[i] *= 1.0f + 0.25f * (float)((i * 7919) % 13) / 13;

    static float a[N], b[N];
    CHECK(logits(&m, a), "forward after load");
    const char *dir = tmp_path("saved");
    s = qt_lora_save_peft(l, dir, "tests/fixtures/lora/base");
    CHECK(s == QT_OK, "save: %s", qt_error_message());
    /* saving again replaces the adapter directory it wrote */
    s = qt_lora_save_peft(l, dir, "tests/fixtures/lora/base");
    CHECK(s == QT_OK, "save over a saved adapter: %s", qt_error_message());

    /* the config PEFT reads */
    char path[1024], *text = NULL;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    CHECK(qt_read_text_file(path, &text) == QT_OK, "read saved config");
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(j, "target_modules");
    char *tms = tm ? cJSON_PrintUnformatted(tm) : NULL;
    CHECK(tms && !strcmp(tms, "[\"down_proj\",\"q_proj\",\"v_proj\"]"), "target_modules %s",
          tms ? tms : "(none)");
    free(tms);
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(j, "peft_type");
    CHECK(cJSON_IsString(pt) && !strcmp(pt->valuestring, "LORA"), "peft_type");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "r");
    CHECK(cJSON_IsNumber(r) && r->valueint == 4, "r");
    const cJSON *al = cJSON_GetObjectItemCaseSensitive(j, "lora_alpha");
    CHECK(cJSON_IsNumber(al) && al->valuedouble == 8, "lora_alpha");
    cJSON_Delete(j);
    qt_safetensors *st = NULL;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    CHECK(qt_safetensors_open(path, &st) == QT_OK, "open saved weights: %s", qt_error_message());
    if (st) {
        const char *fmt = qt_safetensors_meta(st, "format");
        CHECK(fmt && !strcmp(fmt, "pt"), "__metadata__ format");
        CHECK(qt_safetensors_count(st) == 12, "12 tensors, got %d", qt_safetensors_count(st));
        const qt_st_tensor *t =
            qt_safetensors_get(st, "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight");
        CHECK(t && t->dtype == QT_F32 && t->shape[0] == 4 && t->shape[1] == 64, "down_proj A");
        qt_safetensors_close(st);
    }

    /* a fresh model */
    if (qt_model_load_hf(&m2, fx("base")) == QT_OK) {
        s = qt_lora_load_peft(&l2, &m2, dir, false);
        CHECK(s == QT_OK, "reload: %s", qt_error_message());
        CHECK(s == QT_OK && logits(&m2, b) && !memcmp(a, b, sizeof a),
              "reloaded logits differ (rel %.3g)", rel_err(b, a, N));
        qt_lora_free(l2);
        qt_model_free(&m2);
    }

    const char *rev = getenv("QT_LORA_REVERSE_DIR");
    if (rev && *rev) {
        char p[1024];
        mkdir(rev, 0755);
        snprintf(p, sizeof p, "%s/adapter", rev);
        CHECK(qt_lora_save_peft(l, p, "tests/fixtures/lora/base") == QT_OK, "reverse save: %s",
              qt_error_message());
        snprintf(p, sizeof p, "%s/logits.bin", rev);
        CHECK(write_raw(p, a, sizeof a), "write %s", p);
        snprintf(p, sizeof p, "%s/ids.bin", rev);
        CHECK(write_raw(p, g_ids, sizeof g_ids), "write %s", p);
        printf("reverse check files in %s\n", rev);
    }

    /* a directory that is not an adapter is never replaced */
    const char *other = tmp_path("not_adapter");
    mkdir(other, 0755);
    snprintf(path, sizeof path, "%s/model.safetensors", other);
    write_raw(path, "x", 1);
    s = qt_lora_save_peft(l, other, NULL);
    CHECK(s == QT_EINVAL && strstr(qt_error_message(), "not a PEFT adapter"),
          "save over a non-adapter: %s", qt_error_message());
    struct stat sb;
    CHECK(stat(path, &sb) == 0, "the non-adapter directory's file survived");
    qt_lora_free(l);
    qt_model_free(&m);
}

/* An adapter on a pattern-selected subset (layer 1's attention only): short names would
 * grow the selection on reload, so the saved target_modules must be full module names. */
static void test_subset(void) {
    qt_model m, m2;
    qt_lora *l = NULL, *l2 = NULL;
    if (qt_model_load_hf(&m, fx("base")) != QT_OK) return;
    const char *tg[1] = {"model.layers.1.self_attn.*"};
    qt_lora_config c = {.rank = 2, .alpha = 16, .targets = tg, .n_targets = 1, .seed = 5};
    qt_status s = qt_lora_attach(&l, &m, &c);
    CHECK(s == QT_OK && l->n == 4, "attach subset: %s", qt_error_message());
    if (s != QT_OK) {
        qt_model_free(&m);
        return;
    }
    qt_paramset *ps = qt_lora_params(l);
    for (size_t i = 0; i < ps->n_total; i++) /* B is zero at init: make it matter */
        ps->data[i] += 0.05f * (float)((int)((i * 2654435761u) % 21) - 10) / 10;
    static float a[N], b[N];
    CHECK(logits(&m, a), "subset forward");
    const char *dir = tmp_path("subset");
    s = qt_lora_save_peft(l, dir, NULL);
    CHECK(s == QT_OK, "save subset: %s", qt_error_message());
    char path[1024], *text = NULL;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    qt_read_text_file(path, &text);
    CHECK(text && strstr(text, "\"model.layers.1.self_attn.q_proj\"") && !strstr(text, "\"q_proj\""),
          "subset target_modules: %s", text ? text : "(none)");
    free(text);
    if (qt_model_load_hf(&m2, fx("base")) == QT_OK) {
        s = qt_lora_load_peft(&l2, &m2, dir, false);
        CHECK(s == QT_OK && l2->n == 4, "reload subset: %s", qt_error_message());
        CHECK(s == QT_OK && logits(&m2, b) && !memcmp(a, b, sizeof a), "subset logits differ");
        const char *rev = getenv("QT_LORA_REVERSE_DIR");
        if (rev && *rev) {
            snprintf(path, sizeof path, "%s/adapter_subset", rev);
            CHECK(qt_lora_save_peft(l, path, NULL) == QT_OK, "reverse save subset");
            snprintf(path, sizeof path, "%s/logits_subset.bin", rev);
            CHECK(write_raw(path, a, sizeof a), "write %s", path);
        }
        qt_lora_free(l2);
        qt_model_free(&m2);
    }
    qt_lora_free(l);
    qt_model_free(&m);
}

/* dir must fail to load; the message must hold each of the substrings. */
static void expect_fail(const char *what, const char *dir, const char *s1, const char *s2) {
    qt_model m;
    qt_lora *l = (qt_lora *)1;
    if (qt_model_load_hf(&m, fx("base")) != QT_OK) {
        CHECK(false, "base: %s", qt_error_message());
        return;
    }
    qt_status s = qt_lora_load_peft(&l, &m, dir, false);
    const char *msg = qt_error_message();
    printf("  %s -> %s\n", what, msg);
    qt_check_case(s != QT_OK, what, "loaded");
    qt_check_case(l == NULL, what, "*out not NULL on failure");
    qt_check_case(strstr(msg, s1) && (!s2 || strstr(msg, s2)), what,
                  "message lacks \"%s\"%s%s: %s", s1, s2 ? " / " : "", s2 ? s2 : "", msg);
    qt_check_case(!m.llama.hook.linear, what, "hook left installed");
    if (s == QT_OK) qt_lora_free(l);
    qt_model_free(&m);
}

/* The fixture's weights with one tensor replaced or added (F32 2-d). */
static const char *tampered(const char *name, const char *tensor, int64_t d0, int64_t d1,
                            const char *drop) {
    const char *d = adapter_copy(name, "adapter", NULL);
    char path[1024];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", d);
    qt_safetensors *st = NULL;
    if (qt_safetensors_open(fx("adapter/adapter_model.safetensors"), &st) != QT_OK) return d;
    int n = qt_safetensors_count(st), k = 0;
    qt_st_tensor *t = calloc((size_t)n + 1, sizeof *t);
    float *extra = calloc((size_t)(d0 * d1), sizeof *extra);
    bool replaced = false;
    for (int i = 0; i < n; i++) {
        const qt_st_tensor *s = qt_safetensors_at(st, i);
        if (drop && !strcmp(s->name, drop)) continue;
        t[k] = *s;
        if (tensor && !strcmp(s->name, tensor)) {
            t[k].shape[0] = d0;
            t[k].shape[1] = d1;
            t[k].data = extra;
            t[k].nbytes = (size_t)(d0 * d1) * 4;
            replaced = true;
        }
        k++;
    }
    if (tensor && !replaced) {
        t[k] = (qt_st_tensor){.name = tensor, .dtype = QT_F32, .ndim = 2, .shape = {d0, d1},
                              .data = extra, .nbytes = (size_t)(d0 * d1) * 4};
        k++;
    }
    const char *meta[2] = {"format", "pt"};
    if (qt_safetensors_write(path, t, k, meta, 1) != QT_OK) printf("tamper: %s\n", qt_error_message());
    free(t);
    free(extra);
    qt_safetensors_close(st);
    return d;
}

/* The fixture adapter with every tensor stored as dtype (F16 / BF16, rounded). */
static const char *converted(const char *name, qt_dtype dt) {
    const char *d = adapter_copy(name, "adapter", NULL);
    char path[1024];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", d);
    qt_safetensors *st = NULL;
    if (qt_safetensors_open(fx("adapter/adapter_model.safetensors"), &st) != QT_OK) return d;
    int n = qt_safetensors_count(st);
    qt_st_tensor *t = calloc((size_t)n, sizeof *t);
    uint16_t **h = calloc((size_t)n, sizeof *h);
    for (int i = 0; i < n; i++) {
        const qt_st_tensor *s = qt_safetensors_at(st, i);
        size_t k = s->nbytes / 4;
        h[i] = malloc(k * 2);
        for (size_t j = 0; j < k; j++) {
            float v;
            memcpy(&v, (const char *)s->data + 4 * j, 4);
            h[i][j] = dt == QT_BF16 ? qt_f32_to_bf16(v) : qt_f32_to_f16(v);
        }
        t[i] = *s;
        t[i].dtype = dt;
        t[i].data = h[i];
        t[i].nbytes = k * 2;
    }
    const char *meta[2] = {"format", "pt"};
    if (qt_safetensors_write(path, t, n, meta, 1) != QT_OK) printf("convert: %s\n", qt_error_message());
    for (int i = 0; i < n; i++) free(h[i]);
    free(h);
    free(t);
    qt_safetensors_close(st);
    return d;
}

/* F16 / BF16 adapter files, and QLoRA (an NF4 base under the same adapter). */
static void test_dtypes_nf4(void) {
    static float want[N], got[N];
    CHECK(read_raw(fx("logits_adapter.bin"), want, sizeof want), "logits_adapter.bin");
    double e = load_and_compare(converted("f16", QT_F16), want, got);
    printf("adapter stored F16: rel err vs PEFT (f32) %.3g\n", e);
    CHECK(e >= 0 && e <= 2e-3, "F16 adapter: rel err %.3g", e);
    e = load_and_compare(converted("bf16", QT_BF16), want, got);
    printf("adapter stored BF16: rel err vs PEFT (f32) %.3g\n", e);
    CHECK(e >= 0 && e <= 2e-2, "BF16 adapter: rel err %.3g", e);

    qt_model m;
    qt_lora *l = NULL;
    if (qt_model_load_hf(&m, fx("base")) != QT_OK) return;
    qt_status s = qt_lora_load_peft(&l, &m, fx("adapter"), true);
    CHECK(s == QT_OK, "load with nf4: %s", qt_error_message());
    if (s == QT_OK) {
        bool all_nf4 = true;
        for (int i = 0; i < l->n; i++) all_nf4 &= l->layers[i].nf4 != NULL;
        CHECK(all_nf4 && l->n == 6, "nf4: %d layers, all NF4 %d", l->n, all_nf4);
        CHECK(logits(&m, got), "nf4 forward");
        e = rel_err(got, want, N);
        printf("QLoRA (NF4 base) + adapter: rel err vs PEFT's f32 base %.3g\n", e);
        CHECK(e < 0.5, "nf4: rel err %.3g", e);
    }
    qt_lora_free(l);
    qt_model_free(&m);
}

static void test_bad_input(void) {
    char *c = config_with("adapter", "r", "0");
    expect_fail("r 0", adapter_copy("r0", "adapter", c), "adapter_config.json", "\"r\"");
    free(c);
    c = config_with("adapter", "peft_type", "\"IA3\"");
    expect_fail("peft_type IA3", adapter_copy("ia3", "adapter", c), "adapter_config.json",
                "peft_type");
    free(c);
    c = config_with("adapter", "lora_alpha", "\"eight\"");
    expect_fail("lora_alpha a string", adapter_copy("alpha", "adapter", c), "adapter_config.json",
                "lora_alpha");
    free(c);
    c = config_with("adapter", "target_modules", "[\"q_proj\", \"qq_proj\"]");
    expect_fail("target matching nothing", adapter_copy("tm", "adapter", c),
                "adapter_config.json", "qq_proj");
    free(c);
    c = config_with("adapter", "use_dora", "true");
    expect_fail("DoRA", adapter_copy("dora", "adapter", c), "adapter_config.json", "use_dora");
    free(c);
    expect_fail("not JSON", adapter_copy("notjson", "adapter", "{\"peft_type\": \"LORA\", "),
                "adapter_config.json", NULL);

    const char *q0a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    expect_fail("wrong shape", tampered("shape", q0a, 4, 31, NULL), q0a, "[4, 31]");
    expect_fail("wrong shape (rank)", tampered("shape_r", q0a, 3, 32, NULL), "[4, 32]", "[3, 32]");
    const char *k0 = "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight";
    expect_fail("module not adapted", tampered("unknown", k0, 4, 32, NULL), k0,
                "adapter_model.safetensors");
    const char *bad = "base_model.model.model.layers.0.self_attn.q_proj.weight";
    expect_fail("not a LoRA tensor", tampered("notlora", bad, 32, 32, NULL), bad, NULL);
    const char *q1b = "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight";
    expect_fail("missing tensor", tampered("missing", NULL, 1, 1, q1b), q1b,
                "adapter_model.safetensors");

    /* no adapter_config.json */
    const char *d = adapter_copy("noconfig", "adapter", NULL);
    char p[1024];
    snprintf(p, sizeof p, "%s/adapter_config.json", d);
    remove(p);
    expect_fail("no adapter_config.json", d, "adapter_config.json", NULL);
    expect_fail("no directory", tmp_path("nonexistent"), "adapter_config.json", NULL);
    /* no weights */
    d = adapter_copy("noweights", "adapter", NULL);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", d);
    remove(p);
    expect_fail("no adapter_model.safetensors", d, "adapter_model.safetensors", NULL);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/qt_lora_peft_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    static float base[N];
    qt_model m;
    bool ok = read_raw(fx("ids.bin"), g_ids, sizeof g_ids) &&
              read_raw(fx("logits_base.bin"), base, sizeof base);
    CHECK(ok, "fixtures under %s/lora (run tests/fixtures/gen_lora_peft.py)", QT_FIXTURES);
    if (ok && qt_model_load_hf(&m, fx("base")) == QT_OK) {
        static float got[N];
        CHECK(logits(&m, got) && rel_err(got, base, N) <= 1e-4, "base logits vs transformers");
        qt_model_free(&m);
        test_parity(base);
        test_round_trip();
        test_dtypes_nf4();
        test_subset();
        test_bad_input();
    } else {
        CHECK(false, "base: %s", qt_error_message());
    }
    rm_tree(g_tmp);
    return qt_test_finish("test_lora_peft");
}
