/*
 * test_export.c - the safetensors exporters (GPTQ, AWQ, bitsandbytes NF4, FP8
 * compressed-tensors) and qt_export_load, which reads them back.
 *
 * For each exporter and several formats: a small random llama is quantized layer by
 * layer with the quantizer core (qt_quantize; GPTQ also with a synthetic act-order
 * permutation), exported, loaded back, and every quantized weight must equal
 * qt_qlinear_dequantize bit for bit, every float tensor its st_float rounding. The
 * files' provenance (safetensors __metadata__, config.json "qtrain") and the keys each
 * tool reads are checked. Refusals (wrong format for an exporter, GPTQ v1 zero point 0,
 * a GPT-2 model, a path that is a file, ...) must return QT_EINVAL and leave nothing:
 * no directory, no temporary.
 *
 * With QT_EXPORT_DUMP=<dir> each exported directory is kept as <dir>/<case> with
 * <dir>/<case>.expected.safetensors holding the expected f32 weights (every parameter,
 * as qtrain dequantizes it), for tests/export_reader.py, which reads the exports with
 * independent code (numpy, bitsandbytes) and compares.
 */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "qt_export.h"
#include "testutil.h"

static char g_root[512];    /* scratch directory */
static char g_last[1024];   /* the directory of the last roundtrip */
static const char *g_dump;  /* QT_EXPORT_DUMP or NULL */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    remove(p);
    return 0;
}
static void rm_tree(const char *p) { nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static bool exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* Entries of dir whose name starts with prefix. */
static int count_prefixed(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, prefix, strlen(prefix))) n++;
    closedir(d);
    return n;
}

/* ---------------------------------------------------------------- the model ---- */

static qt_llama_config small_cfg(bool tied) {
    qt_llama_config c = {0};
    c.vocab_size = 96;
    c.dim = 64;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.ffn_dim = 128;
    c.rope_theta = 10000.0f;
    c.norm_eps = 1e-5f;
    c.tied_embeddings = tied;
    c.max_seq_len = 64;
    return c;
}

static bool make_model(qt_model *m, bool tied, uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->arch = QT_ARCH_LLAMA;
    qt_llama_config c = small_cfg(tied);
    qt_status s = qt_llama_init(&m->llama, &c, seed);
    CHECK(s == QT_OK, "qt_llama_init: %s", qt_error_message());
    if (s != QT_OK) return false;
    /* norms of ones would hide a norm/weight mix-up: make them distinct */
    qt_paramset *ps = &m->llama.params;
    for (int i = 0; i < ps->n; i++)
        if (ps->params[i]->ndim == 1) {
            float *d = ps->params[i]->data;
            for (int64_t j = 0; j < qt_numel(ps->params[i]); j++) d[j] = 1.0f + 0.01f * (float)(j % 7) - 0.02f * (float)i;
        }
    return true;
}

static bool is_decoder_linear(const char *name) {
    size_t n = strlen(name);
    return !strncmp(name, "model.layers.", 13) && n > 12 && !strcmp(name + n - 12, "_proj.weight");
}

static uint64_t rng_state = 12345;
static uint32_t rnd(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

/* Quantizes the selected Linears of m with f into qm. perm: a random act-order
 * permutation per layer. only: NULL = every decoder Linear (plus lm_head if with_head),
 * else a single parameter name. */
static bool make_qmodel(qt_model *m, const qt_qformat *f, bool perm, bool with_head,
                        const char *only, qt_qmodel *qm) {
    qt_qmodel_init(qm, m, perm ? "gptq" : "rtn");
    snprintf(qm->calib_hash, sizeof qm->calib_hash, "sha256:%064d", 7);
    qm->recipe = strdup("method: rtn\nformat: test\n");
    qt_paramset *ps = &m->llama.params;
    for (int i = 0; i < ps->n; i++) {
        qt_tensor *p = ps->params[i];
        bool sel = only ? !strcmp(p->name, only)
                        : is_decoder_linear(p->name) || (with_head && !strcmp(p->name, "lm_head.weight"));
        if (!sel) continue;
        int64_t rows = p->shape[0], cols = p->shape[1];
        const float *w = p->data;
        float *src = malloc((size_t)(rows * cols) * sizeof *src);
        int32_t *pm = NULL;
        if (perm) {
            pm = malloc((size_t)cols * sizeof *pm);
            for (int64_t j = 0; j < cols; j++) pm[j] = (int32_t)j;
            for (int64_t j = cols - 1; j > 0; j--) {
                int64_t k = rnd() % (uint32_t)(j + 1);
                int32_t t = pm[j];
                pm[j] = pm[k];
                pm[k] = t;
            }
        }
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < cols; j++) src[r * cols + j] = w[r * cols + (pm ? pm[j] : j)];
        qt_qtensor q;
        qt_status s = qt_quantize(f, src, rows, cols, &q);
        free(src);
        CHECK(s == QT_OK, "qt_quantize %s: %s", p->name, qt_error_message());
        if (s != QT_OK) {
            free(pm);
            return false;
        }
        s = qt_qmodel_add(qm, p->name, &q, pm);
        CHECK(s == QT_OK, "qt_qmodel_add: %s", qt_error_message());
        if (s != QT_OK) return false;
    }
    return true;
}

static float round_dt(float x, qt_dtype dt) {
    if (dt == QT_F16) return qt_f16_to_f32(qt_f32_to_f16(x));
    if (dt == QT_BF16) return qt_bf16_to_f32(qt_f32_to_bf16(x));
    return x;
}

/* Expected f32 value of every parameter after export + load. */
static float *expected_param(const qt_qmodel *qm, const qt_tensor *p, qt_dtype st_float) {
    size_t n = (size_t)qt_numel(p);
    float *e = malloc(n * sizeof *e);
    const qt_qlinear *l = qt_qmodel_find(qm, p->name);
    if (l) {
        qt_status s = qt_qlinear_dequantize(l, e);
        CHECK(s == QT_OK, "dequantize %s: %s", p->name, qt_error_message());
    } else {
        const float *d = p->data;
        for (size_t i = 0; i < n; i++) e[i] = round_dt(d[i], st_float);
    }
    return e;
}

/* ------------------------------------------------------------ checks of a dir ---- */

static cJSON *read_json(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return cJSON_Parse(buf);
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
static double jnum(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -12345.0;
}

static void check_provenance(const char *what, const char *dir, const qt_qmodel *qm,
                             const char *quant_method) {
    char path[1100], fmt[64];
    qt_qformat_str(&qm->layers[0].q.fmt, fmt, sizeof fmt);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    qt_safetensors *st = NULL;
    qt_status s = qt_safetensors_open_ex(path, QT_ST_FP8_AS_U8, &st);
    qt_check_case(s == QT_OK, what, "open %s: %s", path, qt_error_message());
    if (s == QT_OK) {
        static const char *const keys[6] = {"format", "qtrain.version", "qtrain.method",
                                            "qtrain.format", "qtrain.calibration_hash",
                                            "qtrain.recipe"};
        const char *want[6] = {"pt", "9.9.9-test", qm->method, fmt, qm->calib_hash, qm->recipe};
        for (int k = 0; k < 6; k++) {
            const char *v = qt_safetensors_meta(st, keys[k]);
            qt_check_case(v && !strcmp(v, want[k]), what, "__metadata__ %s: %s, expected %s",
                          keys[k], v ? v : "(none)", want[k]);
        }
        qt_safetensors_close(st);
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    cJSON *c = read_json(path);
    qt_check_case(c != NULL, what, "config.json parses");
    if (!c) return;
    const cJSON *qc = cJSON_GetObjectItemCaseSensitive(c, "quantization_config");
    const cJSON *pv = cJSON_GetObjectItemCaseSensitive(c, "qtrain");
    const char *v = jstr(qc, "quant_method");
    qt_check_case(v && !strcmp(v, quant_method), what, "quant_method %s", v ? v : "(none)");
    v = jstr(pv, "format");
    qt_check_case(v && !strcmp(v, fmt), what, "config qtrain.format %s", v ? v : "(none)");
    v = jstr(pv, "method");
    qt_check_case(v && !strcmp(v, qm->method), what, "config qtrain.method");
    v = jstr(pv, "calibration_hash");
    qt_check_case(v && !strcmp(v, qm->calib_hash), what, "config qtrain.calibration_hash");
    v = jstr(pv, "version");
    qt_check_case(v && !strcmp(v, "9.9.9-test"), what, "config qtrain.version");
    qt_check_case(jnum(c, "hidden_size") == qm->model->llama.cfg.dim, what, "hidden_size");
    qt_check_case(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(c, "tie_word_embeddings")) &&
                      cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "tie_word_embeddings")) ==
                          qm->model->llama.cfg.tied_embeddings,
                  what, "tie_word_embeddings");
    cJSON_Delete(c);
}

/* Writes <dump>/<name>.expected.safetensors: every parameter as export+load must give. */
static void dump_expected(const char *path, const qt_qmodel *qm, float **exp) {
    const qt_paramset *ps = &qm->model->llama.params;
    qt_st_tensor *t = calloc((size_t)ps->n, sizeof *t);
    for (int i = 0; i < ps->n; i++) {
        t[i].name = ps->params[i]->name;
        t[i].dtype = QT_F32;
        t[i].ndim = ps->params[i]->ndim;
        memcpy(t[i].shape, ps->params[i]->shape, sizeof t[i].shape);
        t[i].data = exp[i];
        t[i].nbytes = (size_t)qt_numel(ps->params[i]) * 4;
    }
    qt_status s = qt_safetensors_write(path, t, ps->n, NULL, 0);
    CHECK(s == QT_OK, "dump %s: %s", path, qt_error_message());
    free(t);
}

typedef qt_status (*export_fn)(const qt_qmodel *, const qt_export_opts *, const char *);

/* Export, load back, compare bit for bit. */
static void roundtrip(const char *name, qt_qmodel *qm, qt_export_format f, qt_dtype st_float,
                      const char *quant_method) {
    char dir[1024], what[256];
    snprintf(what, sizeof what, "%s", name);
    if (g_dump) snprintf(dir, sizeof dir, "%s/%s", g_dump, name);
    else snprintf(dir, sizeof dir, "%s/%s", g_root, name);
    qt_export_opts o;
    qt_export_opts_defaults(&o);
    o.version = "9.9.9-test";
    o.st_float = st_float;
    snprintf(g_last, sizeof g_last, "%s", dir);
    qt_status s = qt_export(qm, f, &o, dir);
    qt_check_case(s == QT_OK, what, "export: %s", qt_error_message());
    if (s != QT_OK) return;
    check_provenance(what, dir, qm, quant_method);
    qt_model m2;
    s = qt_export_load(&m2, dir);
    qt_check_case(s == QT_OK, what, "load: %s", qt_error_message());
    if (s != QT_OK) return;
    const qt_llama *a = &qm->model->llama, *b = &m2.llama;
    qt_check_case(m2.arch == QT_ARCH_LLAMA && b->cfg.dim == a->cfg.dim &&
                      b->cfg.n_layers == a->cfg.n_layers && b->cfg.ffn_dim == a->cfg.ffn_dim &&
                      b->cfg.n_kv_heads == a->cfg.n_kv_heads &&
                      b->cfg.tied_embeddings == a->cfg.tied_embeddings &&
                      b->params.n == a->params.n,
                  what, "loaded config differs");
    float **exp = calloc((size_t)a->params.n, sizeof *exp);
    int bad = 0;
    for (int i = 0; i < a->params.n && b->params.n == a->params.n; i++) {
        const qt_tensor *p = a->params.params[i], *p2 = b->params.params[i];
        exp[i] = expected_param(qm, p, st_float);
        bool same = !strcmp(p->name, p2->name) && qt_same_shape(p, p2) &&
                    !memcmp(exp[i], p2->data, (size_t)qt_numel(p) * 4);
        if (!same && bad++ < 5) {
            int64_t k = 0;
            const float *g = p2->data;
            while (k < qt_numel(p) && !memcmp(&exp[i][k], &g[k], 4)) k++;
            qt_check_case(false, what, "%s: element %lld: loaded %.9g, expected %.9g", p->name,
                          (long long)k, k < qt_numel(p) ? (double)g[k] : 0.0,
                          k < qt_numel(p) ? (double)exp[i][k] : 0.0);
        }
    }
    qt_check_case(bad == 0, what, "%d parameters differ after export + load", bad);
    if (g_dump) {
        char ep[1100];
        snprintf(ep, sizeof ep, "%s/%s.expected.safetensors", g_dump, name);
        dump_expected(ep, qm, exp);
    }
    for (int i = 0; i < a->params.n; i++) free(exp[i]);
    free(exp);
    qt_model_free(&m2);
}

static qt_qformat int_fmt(int bits, qt_qgran gran, int G, bool sym, qt_dtype sd) {
    qt_qformat f;
    char nm[8];
    snprintf(nm, sizeof nm, "int%d", bits);
    qt_qformat_parse(nm, &f);
    f.gran = gran;
    f.group_size = G;
    f.symmetric = sym;
    f.scale_dtype = sd;
    return f;
}

/* One export case: build, quantize, round trip. */
static void run_case(const char *name, const qt_qformat *f, bool perm, bool tied, bool with_head,
                     qt_export_format ef, qt_dtype st_float, const char *qm_name) {
    qt_model m;
    if (!make_model(&m, tied, 1000 + strlen(name))) return;
    qt_qmodel qm;
    if (make_qmodel(&m, f, perm, with_head, NULL, &qm)) roundtrip(name, &qm, ef, st_float, qm_name);
    qt_qmodel_free(&qm);
    qt_model_free(&m);
}

/* The same on a checkpoint fixture (Qwen2: q/k/v biases stay float beside the codes). */
static void run_fixture_case(const char *name, const char *fixture, const qt_qformat *f,
                             bool perm, qt_export_format ef, qt_dtype st_float,
                             const char *qm_name) {
    qt_model m;
    qt_status s = qt_model_load_hf(&m, fixture);
    CHECK(s == QT_OK, "load %s: %s", fixture, qt_error_message());
    if (s != QT_OK) return;
    qt_qmodel qm;
    if (make_qmodel(&m, f, perm, false, NULL, &qm)) roundtrip(name, &qm, ef, st_float, qm_name);
    qt_qmodel_free(&qm);
    qt_model_free(&m);
}

/* ------------------------------------------------------- format-specific keys ---- */

static void check_gptq_files(const char *dir, int bits, int group, bool desc, bool sym) {
    char path[1100];
    snprintf(path, sizeof path, "%s/quantize_config.json", dir);
    cJSON *j = read_json(path);
    CHECK(j != NULL, "%s exists", path);
    if (!j) return;
    CHECK(jnum(j, "bits") == bits && jnum(j, "group_size") == group, "quantize_config bits/group");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "desc_act")) == desc, "desc_act");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "sym")) == sym, "sym");
    const char *cf = jstr(j, "checkpoint_format");
    CHECK(cf && !strcmp(cf, "gptq"), "checkpoint_format gptq");
    cJSON_Delete(j);
    /* shapes of one layer: down_proj is (64, 128) */
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    qt_safetensors *st;
    if (qt_safetensors_open(path, &st) != QT_OK) {
        CHECK(false, "open %s", path);
        return;
    }
    const qt_st_tensor *qw = qt_safetensors_get(st, "model.layers.1.mlp.down_proj.qweight");
    const qt_st_tensor *qz = qt_safetensors_get(st, "model.layers.1.mlp.down_proj.qzeros");
    const qt_st_tensor *sc = qt_safetensors_get(st, "model.layers.1.mlp.down_proj.scales");
    const qt_st_tensor *gi = qt_safetensors_get(st, "model.layers.1.mlp.down_proj.g_idx");
    int64_t ng = group > 0 ? 128 / group : 1;
    CHECK(qw && qw->dtype == QT_I32 && qw->shape[0] == 128 * bits / 32 && qw->shape[1] == 64,
          "qweight i32 [in*bits/32, out]");
    CHECK(qz && qz->dtype == QT_I32 && qz->shape[0] == ng && qz->shape[1] == 64 * bits / 32,
          "qzeros i32 [groups, out*bits/32]");
    CHECK(sc && sc->dtype == QT_F16 && sc->shape[0] == ng && sc->shape[1] == 64, "scales f16");
    CHECK(gi && gi->dtype == QT_I32 && gi->shape[0] == 128, "g_idx i32 [in]");
    CHECK(!qt_safetensors_get(st, "model.layers.1.mlp.down_proj.weight"), "no float weight");
    qt_safetensors_close(st);
}

static void test_exports(void) {
    qt_qformat f;
    /* GPTQ: 2/3/4/8 bits, sym and asym, groups and per-channel, act-order */
    f = int_fmt(4, QT_QG_GROUP, 32, true, QT_F16);
    run_case("gptq_int4_g32_sym", &f, false, false, false, QT_EXPORT_GPTQ, QT_F16, "gptq");
    check_gptq_files(g_last, 4, 32, false, true);
    f = int_fmt(4, QT_QG_GROUP, 64, false, QT_F16);
    run_case("gptq_int4_g64_asym", &f, false, false, false, QT_EXPORT_GPTQ, QT_BF16, "gptq");
    check_gptq_files(g_last, 4, 64, false, false);
    f = int_fmt(4, QT_QG_GROUP, 32, false, QT_F16);
    run_case("gptq_int4_g32_asym_actorder", &f, true, false, false, QT_EXPORT_GPTQ, QT_F16, "gptq");
    check_gptq_files(g_last, 4, 32, true, false);
    f = int_fmt(2, QT_QG_GROUP, 32, true, QT_F16);
    run_case("gptq_int2_g32_sym", &f, false, false, false, QT_EXPORT_GPTQ, QT_F32, "gptq");
    check_gptq_files(g_last, 2, 32, false, true);
    f = int_fmt(2, QT_QG_CHANNEL, 0, false, QT_F16);
    run_case("gptq_int2_channel_asym", &f, false, false, false, QT_EXPORT_GPTQ, QT_F16, "gptq");
    f = int_fmt(8, QT_QG_CHANNEL, 0, true, QT_F16);
    run_case("gptq_int8_channel_sym_head", &f, false, false, true, QT_EXPORT_GPTQ, QT_F16, "gptq");
    check_gptq_files(g_last, 8, -1, false, true);
    f = int_fmt(8, QT_QG_GROUP, 64, false, QT_F16);
    run_case("gptq_int8_g64_asym_actorder", &f, true, true, false, QT_EXPORT_GPTQ, QT_F16, "gptq");
    f = int_fmt(3, QT_QG_GROUP, 32, true, QT_F16);
    run_case("gptq_int3_g32_sym", &f, false, false, false, QT_EXPORT_GPTQ, QT_F16, "gptq");
    check_gptq_files(g_last, 3, 32, false, true);
    f = int_fmt(3, QT_QG_GROUP, 64, false, QT_F16);
    run_case("gptq_int3_g64_asym_actorder", &f, true, false, false, QT_EXPORT_GPTQ, QT_F16, "gptq");
    /* AWQ */
    f = int_fmt(4, QT_QG_GROUP, 32, true, QT_F16);
    run_case("awq_g32_sym", &f, false, false, false, QT_EXPORT_AWQ, QT_F16, "awq");
    f = int_fmt(4, QT_QG_GROUP, 64, false, QT_F16);
    run_case("awq_g64_asym", &f, false, true, false, QT_EXPORT_AWQ, QT_BF16, "awq");
    /* bitsandbytes NF4 */
    qt_qformat_parse("nf4", &f);
    run_case("bnb_nf4_b64_dq", &f, false, false, false, QT_EXPORT_BNB_NF4, QT_F16, "bitsandbytes");
    f.double_quant = false;
    run_case("bnb_nf4_b64", &f, false, true, false, QT_EXPORT_BNB_NF4, QT_F32, "bitsandbytes");
    f.double_quant = true;
    f.group_size = 128;
    run_case("bnb_nf4_b128_dq_head", &f, false, false, true, QT_EXPORT_BNB_NF4, QT_BF16,
             "bitsandbytes");
    /* checkpoint fixtures: Llama and Qwen2 (biases) */
    f = int_fmt(4, QT_QG_GROUP, 32, false, QT_F16);
    run_fixture_case("gptq_qwen2_int4_g32_asym_actorder", QT_FIXTURES "/tiny_qwen2", &f, true,
                     QT_EXPORT_GPTQ, QT_F16, "gptq");
    run_fixture_case("awq_qwen2_g32_asym", QT_FIXTURES "/tiny_qwen2", &f, false, QT_EXPORT_AWQ,
                     QT_BF16, "awq");
    f = int_fmt(8, QT_QG_GROUP, 32, true, QT_F16);
    run_fixture_case("gptq_llama_int8_g32_sym", QT_FIXTURES "/tiny_llama", &f, false,
                     QT_EXPORT_GPTQ, QT_F32, "gptq");
    qt_qformat_parse("nf4", &f);
    run_fixture_case("bnb_qwen2_nf4_b64_dq", QT_FIXTURES "/tiny_qwen2", &f, false,
                     QT_EXPORT_BNB_NF4, QT_F16, "bitsandbytes");
    qt_qformat_parse("fp8", &f);
    run_fixture_case("fp8_qwen2_channel", QT_FIXTURES "/tiny_qwen2", &f, false, QT_EXPORT_FP8,
                     QT_BF16, "compressed-tensors");
    /* FP8 */
    qt_qformat_parse("fp8_e4m3", &f);
    f.gran = QT_QG_CHANNEL;
    run_case("fp8_channel", &f, false, false, false, QT_EXPORT_FP8, QT_F16, "compressed-tensors");
    f.gran = QT_QG_TENSOR;
    run_case("fp8_tensor_head", &f, false, true, false, QT_EXPORT_FP8, QT_BF16, "compressed-tensors");
    f.gran = QT_QG_TENSOR;
    run_case("fp8_tensor_lmhead_q", &f, false, false, true, QT_EXPORT_FP8, QT_F16,
             "compressed-tensors");
}

/* ------------------------------------------------------------------ refusals ---- */

/* Export must fail with `want`, the message must contain `needle`, and nothing may be
 * left: not dir, nor any <name>.tmp.* / <name>.old.* beside it. */
static void expect_refused(const char *what, const qt_qmodel *qm, qt_export_format f,
                           const char *name, qt_status want, const char *needle) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", g_root, name);
    bool pre = exists(dir);
    qt_export_opts o;
    qt_export_opts_defaults(&o);
    qt_status s = qt_export(qm, f, &o, dir);
    qt_check_case(s == want, what, "status %d, expected %d (%s)", (int)s, (int)want,
                  qt_error_message());
    qt_check_case(s == QT_OK || strstr(qt_error_message(), needle) != NULL, what,
                  "message \"%s\" lacks \"%s\"", qt_error_message(), needle);
    qt_check_case(pre || !exists(dir), what, "%s was created", dir);
    char pfx[300];
    snprintf(pfx, sizeof pfx, "%s.tmp.", name);
    qt_check_case(count_prefixed(g_root, pfx) == 0, what, "temporary %s* left", pfx);
    snprintf(pfx, sizeof pfx, "%s.old.", name);
    qt_check_case(count_prefixed(g_root, pfx) == 0, what, "%s* left", pfx);
}

static void test_refusals(void) {
    qt_model m;
    if (!make_model(&m, false, 77)) return;
    qt_qformat f;
    qt_qmodel qm;

    /* NF4 codes to the INT exporters and fp8; INT to bnb */
    qt_qformat_parse("nf4", &f);
    make_qmodel(&m, &f, false, false, NULL, &qm);
    expect_refused("nf4 -> gptq", &qm, QT_EXPORT_GPTQ, "r1", QT_EINVAL, "model.layers.0.self_attn.q_proj.weight");
    expect_refused("nf4 -> awq", &qm, QT_EXPORT_AWQ, "r1", QT_EINVAL, "needs INT");
    expect_refused("nf4 -> fp8", &qm, QT_EXPORT_FP8, "r1", QT_EINVAL, "nf4");
    qt_qmodel_free(&qm);
    f = int_fmt(4, QT_QG_GROUP, 32, true, QT_F16);
    make_qmodel(&m, &f, false, false, NULL, &qm);
    expect_refused("int4 -> bnb", &qm, QT_EXPORT_BNB_NF4, "r1", QT_EINVAL, "needs NF4");
    expect_refused("int4 -> fp8", &qm, QT_EXPORT_FP8, "r1", QT_EINVAL, "E4M3");
    qt_qmodel_free(&qm);

    /* f32 scales cannot be stored in GPTQ/AWQ's f16 */
    f = int_fmt(4, QT_QG_GROUP, 32, true, QT_F32);
    make_qmodel(&m, &f, false, false, NULL, &qm);
    expect_refused("f32 scales -> gptq", &qm, QT_EXPORT_GPTQ, "r1", QT_EINVAL, "f16");
    qt_qmodel_free(&qm);

    /* 8-bit to AWQ; act-order to AWQ; per-channel AWQ with different in features */
    f = int_fmt(8, QT_QG_GROUP, 32, true, QT_F16);
    make_qmodel(&m, &f, false, false, NULL, &qm);
    expect_refused("int8 -> awq", &qm, QT_EXPORT_AWQ, "r1", QT_EINVAL, "4-bit");
    qt_qmodel_free(&qm);
    f = int_fmt(4, QT_QG_GROUP, 32, true, QT_F16);
    make_qmodel(&m, &f, true, false, NULL, &qm);
    expect_refused("act-order -> awq", &qm, QT_EXPORT_AWQ, "r1", QT_EINVAL, "permutation");
    qt_qmodel_free(&qm);
    f = int_fmt(4, QT_QG_CHANNEL, 0, true, QT_F16);
    make_qmodel(&m, &f, false, false, NULL, &qm);
    expect_refused("awq channel, mixed in", &qm, QT_EXPORT_AWQ, "r1", QT_EINVAL, "one quantization config");
    qt_qmodel_free(&qm);

    /* GPTQ with a decoder Linear left float */
    f = int_fmt(4, QT_QG_GROUP, 32, true, QT_F16);
    make_qmodel(&m, &f, false, false, "model.layers.0.mlp.up_proj.weight", &qm);
    expect_refused("gptq partial", &qm, QT_EXPORT_GPTQ, "r1", QT_EINVAL, "is not quantized");
    qt_qmodel_free(&qm);

    /* GPTQ v1 cannot store zero point 0: a group with no negative value has z = 0 */
    {
        qt_tensor *p = m.llama.layers[1].w_down;
        float *w = p->data;
        float keep[32];
        memcpy(keep, w, sizeof keep);
        for (int j = 0; j < 32; j++) w[j] = 0.01f + 0.001f * (float)j;
        f = int_fmt(4, QT_QG_GROUP, 32, false, QT_F16);
        make_qmodel(&m, &f, false, false, NULL, &qm);
        memcpy(w, keep, sizeof keep);
        const qt_qlinear *l = qt_qmodel_find(&qm, p->name);
        CHECK(l && l->q.zeros && l->q.zeros[0] == 0, "the test's group has zero point 0");
        expect_refused("gptq z=0", &qm, QT_EXPORT_GPTQ, "r1", QT_EINVAL, "symmetric");
        expect_refused("gptq z=0 names layer", &qm, QT_EXPORT_GPTQ, "r1", QT_EINVAL, p->name);
        /* AWQ stores zero points as they are: fine there */
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/awq_z0", g_root);
        qt_export_opts o;
        qt_export_opts_defaults(&o);
        CHECK(qt_export_awq(&qm, &o, dir) == QT_OK, "awq z=0: %s", qt_error_message());
        qt_model m2;
        if (qt_export_load(&m2, dir) == QT_OK) {
            float *e = malloc((size_t)qt_numel(p) * 4);
            qt_qlinear_dequantize(l, e);
            CHECK(!memcmp(e, m2.llama.layers[1].w_down->data, (size_t)qt_numel(p) * 4),
                  "awq z=0 round trip");
            free(e);
            qt_model_free(&m2);
        } else {
            CHECK(false, "awq z=0 load: %s", qt_error_message());
        }
        qt_qmodel_free(&qm);
    }

    /* a path that is a file: refused, file untouched */
    {
        char path[1024];
        snprintf(path, sizeof path, "%s/afile", g_root);
        FILE *fp = fopen(path, "wb");
        fputs("keep me", fp);
        fclose(fp);
        qt_qformat_parse("fp8", &f);
        make_qmodel(&m, &f, false, false, NULL, &qm);
        expect_refused("path is a file", &qm, QT_EXPORT_FP8, "afile", QT_EINVAL, "not a directory");
        char buf[16] = {0};
        fp = fopen(path, "rb");
        size_t n = fp ? fread(buf, 1, sizeof buf - 1, fp) : 0;
        if (fp) fclose(fp);
        CHECK(n == 7 && !strcmp(buf, "keep me"), "the file is untouched");

        /* an existing directory that is not an export (a training run, say) is refused and
         * left as it was; an empty one, or an earlier export, is replaced */
        char dir[1024], stale[1100];
        snprintf(dir, sizeof dir, "%s/replace_me", g_root);
        mkdir(dir, 0755);
        snprintf(stale, sizeof stale, "%s/stale.txt", dir);
        fp = fopen(stale, "wb");
        fputs("x", fp);
        fclose(fp);
        qt_export_opts o;
        qt_export_opts_defaults(&o);
        CHECK(qt_export(&qm, QT_EXPORT_FP8, &o, dir) == QT_EINVAL &&
                  strstr(qt_error_message(), "is not a qtrain export"),
              "export over a foreign dir: %s", qt_error_message());
        CHECK(exists(stale), "the foreign directory is untouched");
        CHECK(count_prefixed(g_root, "replace_me.") == 0, "no temporaries beside it");
        remove(stale);
        CHECK(qt_export(&qm, QT_EXPORT_FP8, &o, dir) == QT_OK, "export over an empty dir: %s",
              qt_error_message());
        snprintf(stale, sizeof stale, "%s/model.safetensors", dir);
        CHECK(exists(stale), "the new directory is in place");
        CHECK(count_prefixed(g_root, "replace_me.") == 0, "no temporaries beside it");
        char slash[1100];
        snprintf(slash, sizeof slash, "%s/", dir);
        CHECK(qt_export(&qm, QT_EXPORT_FP8, &o, slash) == QT_OK && exists(stale) &&
                  count_prefixed(g_root, "replace_me.") == 0 && count_prefixed(dir, ".") == 2,
              "export to \"dir/\" replaces the earlier export, temporaries beside it, none inside");
        qt_qmodel_free(&qm);
    }
    qt_model_free(&m);

    /* a GPT-2 model */
    {
        qt_model g;
        memset(&g, 0, sizeof g);
        g.arch = QT_ARCH_GPT2;
        qt_gpt2_config gc = {.vocab_size = 64, .n_positions = 32, .dim = 32, .n_layers = 1,
                             .n_heads = 2, .ffn_dim = 128, .norm_eps = 1e-5f};
        CHECK(qt_gpt2_init(&g.gpt2, &gc, 3) == QT_OK, "gpt2 init");
        qt_qmodel_init(&qm, &g, "rtn");
        for (int e = QT_EXPORT_GPTQ; e < QT_EXPORT_COUNT; e++)
            expect_refused("gpt2", &qm, (qt_export_format)e, "r2", QT_EINVAL, "llama");
        qt_qmodel_free(&qm);
        qt_model_free(&g);
    }
}

/* ------------------------------------------------------------ loader errors ---- */

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

static void test_loader_errors(void) {
    qt_model m;
    if (!make_model(&m, false, 5)) return;
    qt_qformat f = int_fmt(4, QT_QG_GROUP, 32, false, QT_F16);
    qt_qmodel qm;
    make_qmodel(&m, &f, false, false, NULL, &qm);
    char dir[1024], path[1100], cfgp[1100];
    snprintf(dir, sizeof dir, "%s/lerr", g_root);
    qt_export_opts o;
    qt_export_opts_defaults(&o);
    CHECK(qt_export_gptq(&qm, &o, dir) == QT_OK, "export: %s", qt_error_message());
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(cfgp, sizeof cfgp, "%s/config.json", dir);

    /* rewrite the file without one qzeros, then with a wrong-shaped scales */
    qt_safetensors *st;
    if (qt_safetensors_open(path, &st) == QT_OK) {
        int n = qt_safetensors_count(st), k = 0;
        qt_st_tensor *t = calloc((size_t)n, sizeof *t);
        const char *gone = "model.layers.1.self_attn.k_proj.qzeros";
        for (int i = 0; i < n; i++)
            if (strcmp(qt_safetensors_at(st, i)->name, gone)) t[k++] = *qt_safetensors_at(st, i);
        char p2[1100];
        snprintf(p2, sizeof p2, "%s/model.safetensors", dir);
        const char *meta[2] = {"format", "pt"};
        /* data lives in st: write to a sibling first, then rename over */
        char p3[1200];
        snprintf(p3, sizeof p3, "%s.new", p2);
        CHECK(qt_safetensors_write(p3, t, k, meta, 1) == QT_OK, "rewrite");
        qt_safetensors_close(st);
        rename(p3, p2);
        free(t);
        qt_model m2;
        memset(&m2, 0xab, sizeof m2);
        qt_status s = qt_export_load(&m2, dir);
        CHECK(s == QT_EFORMAT && strstr(qt_error_message(), gone) &&
                  strstr(qt_error_message(), "model.safetensors"),
              "missing qzeros: %d %s", (int)s, qt_error_message());
        qt_model z;
        memset(&z, 0, sizeof z);
        CHECK(!memcmp(&m2, &z, sizeof z), "*m zeroed on failure");
    } else {
        CHECK(false, "open %s", path);
    }

    /* unknown quant_method, and bitsandbytes 8-bit */
    cJSON *c = read_json(cfgp);
    cJSON *qc = cJSON_GetObjectItemCaseSensitive(c, "quantization_config");
    cJSON_ReplaceItemInObject(qc, "quant_method", cJSON_CreateString("hqq"));
    char *text = cJSON_Print(c);
    write_text(cfgp, text);
    cJSON_free(text);
    qt_model m2;
    qt_status s = qt_export_load(&m2, dir);
    CHECK(s == QT_ENOTSUP && strstr(qt_error_message(), "hqq"), "unknown method: %s",
          qt_error_message());
    /* wrong bits for the file */
    cJSON_ReplaceItemInObject(qc, "quant_method", cJSON_CreateString("gptq"));
    cJSON_ReplaceItemInObject(qc, "bits", cJSON_CreateNumber(8));
    text = cJSON_Print(c);
    write_text(cfgp, text);
    cJSON_free(text);
    s = qt_export_load(&m2, dir);
    CHECK((s == QT_ESHAPE || s == QT_EFORMAT) && strstr(qt_error_message(), "qweight"),
          "bits 8 on a 4-bit file: %d %s", (int)s, qt_error_message());
    cJSON_Delete(c);
    qt_qmodel_free(&qm);
    qt_model_free(&m);

    /* defaults and names */
    qt_export_format ef;
    CHECK(qt_export_format_parse("bnb-nf4", &ef) == QT_OK && ef == QT_EXPORT_BNB_NF4, "parse");
    CHECK(qt_export_format_parse("exl2", &ef) == QT_EINVAL && strstr(qt_error_message(), "gptq"),
          "parse refuses");
    for (int e = 0; e < QT_EXPORT_COUNT; e++) {
        CHECK(qt_export_format_parse(qt_export_format_name((qt_export_format)e), &ef) == QT_OK &&
                  ef == (qt_export_format)e, "name round trip %d", e);
        qt_qformat d;
        qt_export_default_qformat((qt_export_format)e, &d);
        CHECK(qt_qformat_check(&d, 128, 128) == QT_OK, "default format %d checks: %s", e,
              qt_error_message());
    }
    qt_qformat d;
    char b[64];
    qt_export_default_qformat(QT_EXPORT_GPTQ, &d);
    CHECK(!strcmp(qt_qformat_str(&d, b, sizeof b), "int4 g128 sym f16"), "gptq default %s", b);
    qt_export_default_qformat(QT_EXPORT_AWQ, &d);
    CHECK(!d.symmetric && d.group_size == 128 && d.scale_dtype == QT_F16, "awq default");
    qt_export_default_qformat(QT_EXPORT_BNB_NF4, &d);
    CHECK(d.kind == QT_QF_NF4 && d.group_size == 64 && d.double_quant, "bnb default");
}

/* Every tensor of an export removed, or cut by one row, in turn: the load must fail
 * with a message naming the file, and leave *m zeroed (GPTQ's g_idx may be absent). */
static void mutate_tensors(const char *what, const char *dir) {
    char path[1100], keep[1200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(keep, sizeof keep, "%s/orig.bin", g_root);
    rename(path, keep);
    qt_safetensors *st = NULL;
    if (qt_safetensors_open_ex(keep, QT_ST_FP8_AS_U8, &st) != QT_OK) {
        qt_check_case(false, what, "open %s: %s", keep, qt_error_message());
        return;
    }
    int n = qt_safetensors_count(st), bad = 0;
    qt_st_tensor *t = calloc((size_t)n, sizeof *t);
    const char **dn = calloc((size_t)n, sizeof *dn);
    const char *meta[2] = {"format", "pt"};
    qt_model z;
    memset(&z, 0, sizeof z);
    for (int i = 0; i < n; i++) {
        for (int mode = 0; mode < 2; mode++) {
            int k = 0;
            const qt_st_tensor *ti = qt_safetensors_at(st, i);
            /* g_idx is optional; without lm_head.weight the model is tied, as in HF */
            if (mode == 0 && (strstr(ti->name, ".g_idx") || !strcmp(ti->name, "lm_head.weight")))
                continue;
            if (mode == 1 && (ti->ndim == 0 || ti->shape[0] < 2)) continue;
            for (int j = 0; j < n; j++) {
                if (j == i && mode == 0) continue;
                t[k] = *qt_safetensors_at(st, j);
                dn[k] = strcmp(qt_safetensors_dtype_str(st, qt_safetensors_at(st, j)), "F8_E4M3")
                            ? NULL : "F8_E4M3";
                if (j == i) {
                    t[k].nbytes -= t[k].nbytes / (size_t)t[k].shape[0];
                    t[k].shape[0]--;
                }
                k++;
            }
            if (qt_safetensors_write_ex(path, t, k, meta, 1, dn) != QT_OK) {
                qt_check_case(false, what, "rewrite: %s", qt_error_message());
                continue;
            }
            qt_model m2;
            qt_status s = qt_export_load(&m2, dir);
            bool ok = s != QT_OK && strstr(qt_error_message(), "model.safetensors") &&
                      !memcmp(&m2, &z, sizeof z);
            if (s == QT_OK) qt_model_free(&m2);
            if (!ok && bad++ < 3)
                qt_check_case(false, what, "%s %s: status %d, %s", mode ? "cut" : "without",
                              ti->name, (int)s, qt_error_message());
        }
    }
    qt_check_case(bad == 0, what, "%d mutations loaded or failed badly", bad);
    /* the harness itself: the file rewritten unchanged loads */
    for (int j = 0; j < n; j++) {
        t[j] = *qt_safetensors_at(st, j);
        dn[j] = strcmp(qt_safetensors_dtype_str(st, qt_safetensors_at(st, j)), "F8_E4M3")
                    ? NULL : "F8_E4M3";
    }
    qt_model m3;
    qt_status s3 = qt_safetensors_write_ex(path, t, n, meta, 1, dn);
    if (s3 == QT_OK) s3 = qt_export_load(&m3, dir);
    qt_check_case(s3 == QT_OK, what, "unchanged rewrite loads: %s", qt_error_message());
    if (s3 == QT_OK) qt_model_free(&m3);
    free(t);
    free(dn);
    qt_safetensors_close(st);
    remove(path);
    rename(keep, path);
}

static void test_mutations(void) {
    static const struct {
        const char *fmt;
        qt_export_format ef;
    } cases[] = {{"int4", QT_EXPORT_GPTQ}, {"int4", QT_EXPORT_AWQ}, {"nf4", QT_EXPORT_BNB_NF4},
                 {"fp8", QT_EXPORT_FP8}};
    for (int c = 0; c < 4; c++) {
        qt_model m;
        if (!make_model(&m, false, 31)) return;
        qt_qformat f;
        qt_qformat_parse(cases[c].fmt, &f);
        f.scale_dtype = f.kind == QT_QF_INT ? QT_F16 : f.scale_dtype;
        qt_qmodel qm;
        make_qmodel(&m, &f, cases[c].ef == QT_EXPORT_GPTQ, false, NULL, &qm);
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/mut_%d", g_root, c);
        qt_export_opts o;
        qt_export_opts_defaults(&o);
        qt_status s = qt_export(&qm, cases[c].ef, &o, dir);
        CHECK(s == QT_OK, "export %d: %s", c, qt_error_message());
        if (s == QT_OK) mutate_tensors(qt_export_format_name(cases[c].ef), dir);
        qt_qmodel_free(&qm);
        qt_model_free(&m);
    }
}

/* qt_export_load's other inputs: GGUF files and plain HF directories go to their own
 * loaders and give the same model; plain qt_safetensors_open still refuses fp8. */
static void test_load_dispatch(void) {
    const char *dirs[2] = {QT_FIXTURES "/tiny_llama", QT_FIXTURES "/tiny_qwen2"};
    for (int k = 0; k < 2; k++) {
        qt_model a, b;
        qt_status s1 = qt_model_load_hf(&a, dirs[k]);
        qt_status s2 = qt_export_load(&b, dirs[k]);
        CHECK(s1 == QT_OK && s2 == QT_OK, "load %s: %s", dirs[k], qt_error_message());
        if (s1 == QT_OK && s2 == QT_OK) {
            qt_paramset *pa = qt_model_params(&a), *pb = qt_model_params(&b);
            bool same = pa->n == pb->n;
            for (int i = 0; same && i < pa->n; i++)
                same = !memcmp(pa->params[i]->data, pb->params[i]->data,
                               (size_t)qt_numel(pa->params[i]) * 4);
            CHECK(same, "%s: qt_export_load == qt_model_load_hf", dirs[k]);
        }
        if (s1 == QT_OK) qt_model_free(&a);
        if (s2 == QT_OK) qt_model_free(&b);
    }
    qt_model a, b;
    qt_status s1 = qt_model_load_gguf(&a, QT_FIXTURES "/tiny_llama_q8.gguf");
    qt_status s2 = qt_export_load(&b, QT_FIXTURES "/tiny_llama_q8.gguf");
    CHECK(s1 == QT_OK && s2 == QT_OK, "load gguf: %s", qt_error_message());
    if (s1 == QT_OK && s2 == QT_OK) {
        qt_paramset *pa = qt_model_params(&a), *pb = qt_model_params(&b);
        bool same = pa->n == pb->n;
        for (int i = 0; same && i < pa->n; i++)
            same = !memcmp(pa->params[i]->data, pb->params[i]->data,
                           (size_t)qt_numel(pa->params[i]) * 4);
        CHECK(same, "gguf: qt_export_load == qt_model_load_gguf");
    }
    if (s1 == QT_OK) qt_model_free(&a);
    if (s2 == QT_OK) qt_model_free(&b);
    memset(&b, 0x5a, sizeof b);
    CHECK(qt_export_load(&b, QT_FIXTURES "/no_such_model") == QT_EIO, "missing path");

    /* an fp8 export, with a tokenizer.json beside it */
    qt_model m;
    if (!make_model(&m, true, 9)) return;
    qt_qformat f;
    qt_qformat_parse("fp8", &f);
    qt_qmodel qm;
    make_qmodel(&m, &f, false, false, NULL, &qm);
    char dir[1024], path[1100], tok[1100];
    snprintf(dir, sizeof dir, "%s/fp8_tok", g_root);
    snprintf(tok, sizeof tok, "%s/my_tokenizer.json", g_root);
    write_text(tok, "{\"model\": {\"type\": \"BPE\"}}");
    qt_export_opts o;
    qt_export_opts_defaults(&o);
    o.tokenizer_json = tok;
    CHECK(qt_export_fp8(&qm, &o, dir) == QT_OK, "fp8 export: %s", qt_error_message());
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    cJSON *j = read_json(path);
    CHECK(j && cJSON_GetObjectItemCaseSensitive(j, "model"), "tokenizer.json copied");
    cJSON_Delete(j);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    qt_safetensors *st = NULL;
    CHECK(qt_safetensors_open(path, &st) == QT_EDTYPE && !st &&
              strstr(qt_error_message(), "F8_E4M3"),
          "plain open refuses F8_E4M3: %s", qt_error_message());
    CHECK(qt_safetensors_open_ex(path, QT_ST_FP8_AS_U8, &st) == QT_OK, "open_ex");
    if (st) {
        const qt_st_tensor *t = qt_safetensors_get(st, "model.layers.0.mlp.up_proj.weight");
        const qt_st_tensor *sc = qt_safetensors_get(st, "model.layers.0.mlp.up_proj.weight_scale");
        CHECK(t && t->dtype == QT_U8 && !strcmp(qt_safetensors_dtype_str(st, t), "F8_E4M3") &&
                  t->shape[0] == 128 && t->shape[1] == 64, "fp8 weight [out, in] F8_E4M3");
        CHECK(sc && sc->dtype == QT_F32 && sc->ndim == 2 && sc->shape[0] == 128 && sc->shape[1] == 1,
              "weight_scale f32 [out, 1]");
        CHECK(!qt_safetensors_get(st, "lm_head.weight"), "tied lm_head not written");
        qt_safetensors_close(st);
    }
    /* the writer takes an fp8 name only on a U8 tensor */
    float x = 1.0f;
    qt_st_tensor bad = {.name = "a", .dtype = QT_F32, .ndim = 1, .shape = {1}, .data = &x, .nbytes = 4};
    const char *dn[1] = {"F8_E4M3"};
    snprintf(path, sizeof path, "%s/bad.safetensors", g_root);
    CHECK(qt_safetensors_write_ex(path, &bad, 1, NULL, 0, dn) == QT_EINVAL && !exists(path),
          "fp8 name on an F32 tensor refused");
    qt_qmodel_free(&qm);
    qt_model_free(&m);
}

int main(void) {
    g_dump = getenv("QT_EXPORT_DUMP");
    if (g_dump && !*g_dump) g_dump = NULL;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_root, sizeof g_root, "%s/qt_export_test.%ld", tmp && *tmp ? tmp : "/tmp",
             (long)getpid());
    rm_tree(g_root);
    if (mkdir(g_root, 0755) != 0) {
        printf("cannot create %s\n", g_root);
        return 1;
    }
    if (g_dump) mkdir(g_dump, 0755);
    test_exports();
    test_refusals();
    test_loader_errors();
    test_load_dispatch();
    test_mutations();
    rm_tree(g_root);
    return qt_test_finish("test_export");
}
