/*
 * cmd_model.c - the commands that use a trained checkpoint: `qtrain eval` (perplexity by
 * the standard sliding window), `qtrain generate` (sample text) and `qtrain info` (what a
 * file holds: a qtrain checkpoint or a safetensors file).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "cli.h"
#include "loop.h"
#include "qat_recipe.h"
#include "qt_formats.h"
#include "recipe.h"

typedef qt_cli_model trained;

static int load_model(const char *cmd, const char *path, bool merge_lora, trained *t);


/* Applies QAT fake-quant to the loaded model: the qat: section of `qat_recipe` when
 * given (any model, e.g. a float one: round-to-nearest PTQ of that format), else that
 * of the checkpoint's own recipe (a QAT-trained model is evaluated quantized). */
static int apply_qat(const char *cmd, const char *qat_recipe, trained *t) {
    qt_recipe qr;
    const qt_recipe *src = &t->r;
    const char *name = "the checkpoint's recipe";
    if (qat_recipe) {
        qt_recipe_defaults(&qr);
        qt_status st = qt_recipe_load(qat_recipe, &qr);
        if (st == QT_OK && !qt_recipe_has_qat(&qr))
            st = QT_ERROR(QT_EINVAL, "%s: has no qat: section (qat.weight.format or "
                                     "qat.activation.format)", qat_recipe);
        if (st != QT_OK) {
            fprintf(stderr, "qtrain %s: %s\n", cmd, qt_error_message());
            return 2;
        }
        src = &qr;
        name = qat_recipe;
    }
    /* QAT + LoRA: its qat: section was the base's format, already in the merged weights */
    if (!qat_recipe && t->lora[0]) return 0;
    qt_status st = qt_recipe_qat_prepare(src, name, &t->m, &t->qcfg, &t->qat);
    /* a checkpoint trained with static activation observers: the ranges it learned (with
     * --qat on another model they calibrate on the first batch instead) */
    if (st == QT_OK && t->qat && !qat_recipe && t->path && qt_qat_buffers(t->qat))
        st = qt_checkpoint_load_buffers(t->path, qt_qat_buffers(t->qat), NULL);
    if (st != QT_OK) {
        fprintf(stderr, "qtrain %s: %s\n", cmd, qt_error_message());
        qt_qat_free(t->qat);
        t->qat = NULL;
        return qt_cli_exit_code(st);
    }
    return 0;
}

int qt_cli_load(const char *cmd, const char *path, const char *qat_recipe, trained *t) {
    return qt_cli_load_as(cmd, path, qat_recipe, true, t);
}

int qt_cli_load_as(const char *cmd, const char *path, const char *qat_recipe, bool merge_lora,
                   trained *t) {
    int rc = load_model(cmd, path, merge_lora, t);
    if (rc) return rc;
    rc = apply_qat(cmd, qat_recipe, t);
    if (rc) {
        qt_model_free(&t->m);
        qt_tokenizer_free(t->tok);
        t->tok = NULL;
    }
    return rc;
}

/* A qtrain checkpoint: rebuilds the model it was trained as (from its stored recipe:
 * new, or model.from), loads its weights and its tokenizer; a LoRA run's checkpoint then
 * gets its adapters merged in (unless merge_lora is false). An HF directory or a GGUF
 * file: loads the pretrained model and its tokenizer. On failure prints the reason for
 * `cmd` and returns the exit code; 0 on success (free with trained_free). */
static int load_model(const char *cmd, const char *path, bool merge_lora, trained *t) {
    memset(t, 0, sizeof *t);
    struct stat sb;
    size_t pl = strlen(path);
    if ((stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) || (pl > 5 && !strcmp(path + pl - 5, ".gguf"))) {
        /* a pretrained model as it is: an HF directory or a GGUF file, its own tokenizer */
        qt_recipe_defaults(&t->r);
        snprintf(t->r.model.from, sizeof t->r.model.from, "%s", path);
        snprintf(t->r.data.tokenizer, sizeof t->r.data.tokenizer, "model");
        if (S_ISDIR(sb.st_mode)) { /* an export of a bytes model has no tokenizer.json */
            char tj[QT_PATH_MAX + 32];
            snprintf(tj, sizeof tj, "%s/tokenizer.json", path);
            if (stat(tj, &sb) != 0) {
                fprintf(stderr, "qtrain %s: %s has no tokenizer.json: reading text as bytes\n",
                        cmd, path);
                snprintf(t->r.data.tokenizer, sizeof t->r.data.tokenizer, "bytes");
            }
        }
        snprintf(t->r.name, sizeof t->r.name, "pretrained");
        qt_status st = qt_recipe_model(&t->r, &t->m, &t->tok);
        if (st == QT_OK) return 0;
        fprintf(stderr, "qtrain %s: %s\n", cmd, qt_error_message());
        return qt_cli_exit_code(st);
    }
    t->path = path;
    char *text = NULL;
    qt_status st = qt_checkpoint_recipe(path, &text);
    qt_recipe_defaults(&t->r);
    if (st == QT_OK) st = qt_recipe_load_string(path, text, &t->r);
    free(text);
    if (st == QT_OK) st = qt_recipe_model(&t->r, &t->m, &t->tok);
    if (st == QT_OK) {
        st = qt_checkpoint_load(path, qt_model_params(&t->m), NULL, &t->cs);
        if (st == QT_OK && merge_lora)
            st = qt_checkpoint_lora_merge(path, &t->r, &t->m, t->lora, sizeof t->lora);
        if (st != QT_OK) {
            qt_model_free(&t->m);
            qt_tokenizer_free(t->tok);
            t->tok = NULL;
        }
    }
    if (st == QT_OK) return 0;
    fprintf(stderr, "qtrain %s: %s\n", cmd, qt_error_message());
    return qt_cli_exit_code(st);
}

void qt_cli_model_free(trained *t) {
    qt_qat_free(t->qat);
    t->qat = NULL;
    qt_model_free(&t->m);
    qt_tokenizer_free(t->tok);
    t->tok = NULL;
}

static bool parse_flag_long(const char *cmd, const char *flag, const char *v, long lo, long *out) {
    if (!v || !qt_cli_parse_long(v, out) || *out < lo) {
        fprintf(stderr, "qtrain %s: %s needs an integer >= %ld, got '%s'\n", cmd, flag, lo,
                v ? v : "");
        return false;
    }
    return true;
}

static bool parse_flag_float(const char *cmd, const char *flag, const char *v, float *out) {
    char *end = NULL;
    double d = v ? strtod(v, &end) : 0;
    if (!v || !*v || *end || !(d > 0) || !isfinite(d)) {
        fprintf(stderr, "qtrain %s: %s needs a positive number, got '%s'\n", cmd, flag, v ? v : "");
        return false;
    }
    *out = (float)d;
    return true;
}

/* Sliding-window perplexity (the method of HF's perplexity guide): windows of `ctx`
 * tokens start every `stride` tokens; each scores only the tokens the previous window
 * did not, with all the context before them that fits. */
static qt_status perplexity(qt_model *m, const int32_t *text, long n, long ctxlen,
                            long stride, double *ppl, double *nll_out, long *count_out) {
    qt_ctx *ctx = qt_ctx_new();
    int32_t *ids = malloc((size_t)ctxlen * sizeof(int32_t)), *tg = malloc((size_t)ctxlen * sizeof(int32_t));
    if (!ctx || !ids || !tg) {
        qt_ctx_free(ctx);
        free(ids);
        free(tg);
        return QT_ERROR(QT_ENOMEM, "eval: out of memory");
    }
    qt_ctx_set_grad_enabled(ctx, false);
    double nll = 0.0;
    long count = 0, prev_end = 0;
    qt_status st = QT_OK;
    for (long begin = 0; begin < n - 1; begin += stride) {
        long end = begin + ctxlen + 1 < n ? begin + ctxlen + 1 : n; /* tokens [begin, end) */
        long L = end - begin - 1, scored = 0;
        for (long j = 0; j < L; j++) {
            ids[j] = text[begin + j];
            long pos = begin + 1 + j; /* the token predicted */
            tg[j] = pos >= prev_end && pos >= 1 ? text[pos] : -100;
            scored += tg[j] != -100;
        }
        qt_ctx_reset(ctx);
        int64_t shape[2] = {1, L};
        qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, shape, ids);
        qt_tensor *y = qt_tensor_from(ctx, QT_I32, 2, shape, tg);
        qt_tensor *l = qt_cross_entropy(ctx, qt_model_forward(ctx, m, x), y, -100);
        if (!l) {
            st = QT_ERROR(qt_ctx_status(ctx), "eval: %s", qt_ctx_error(ctx));
            break;
        }
        nll += (double)((float *)l->data)[0] * (double)scored;
        count += scored;
        prev_end = end;
        if (end == n) break;
    }
    *ppl = count ? exp(nll / (double)count) : NAN;
    *nll_out = nll;
    *count_out = count;
    qt_ctx_free(ctx);
    free(ids);
    free(tg);
    return st;
}

int qt_cli_read_tokens(const char *cmd, const char *path, const qt_tokenizer *tok,
                       int32_t **ids, size_t *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    FILE *f = fopen(path, "rb");
    unsigned char *text = NULL;
    long n = 0;
    if (f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0) {
        rewind(f);
        text = malloc((size_t)n + 1);
        if (text && fread(text, 1, (size_t)n, f) != (size_t)n) n = -1;
    }
    if (f) fclose(f);
    if (!f || !text || n < 2) {
        fprintf(stderr, "qtrain %s: %s: %s\n", cmd, path,
                !f ? strerror(errno) : n < 2 ? "needs at least 2 bytes of text" : "cannot read");
        free(text);
        return 2;
    }
    qt_status st = QT_OK;
    if (tok) {
        st = qt_tokenizer_encode(tok, (const char *)text, (size_t)n, QT_TOK_ADD_SPECIAL, ids, n_ids);
    } else {
        *ids = malloc((size_t)n * sizeof(int32_t));
        if (*ids) for (long i = 0; i < n; i++) (*ids)[i] = text[i];
        else st = QT_ERROR(QT_ENOMEM, "%s: out of memory", cmd);
        *n_ids = (size_t)n;
    }
    free(text);
    if (st == QT_OK && *n_ids < 2) st = QT_ERROR(QT_EINVAL, "%s: fewer than 2 tokens", path);
    if (st != QT_OK) {
        fprintf(stderr, "qtrain %s: %s\n", cmd, qt_error_message());
        free(*ids);
        *ids = NULL;
        return st == QT_ENOMEM ? 1 : 2;
    }
    return 0;
}

int qt_cmd_eval(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *qat_recipe = NULL;
    long context = 0, stride = 0;
    bool convert = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: qtrain eval MODEL --data FILE [--context N] [--stride S] [--qat RECIPE]\n"
                   "                  [--convert]\n"
                   "  MODEL: a qtrain checkpoint (.h5), an HF directory or a GGUF file\n"
                   "  perplexity per token of FILE by sliding windows of N tokens (default the\n"
                   "  model's max_seq_len) advancing S tokens (default N/2)\n"
                   "  A checkpoint trained with QAT is evaluated quantized (its fake-quant on).\n"
                   "  --qat RECIPE: fake-quant as RECIPE's qat: section says instead (on a float\n"
                   "    model: round-to-nearest PTQ in that format)\n"
                   "  --convert: quantize the weights for real through the quantizer and evaluate\n"
                   "    their dequantized values (what an export holds); equals the fake-quant\n"
                   "    perplexity exactly\n");
            return 0;
        }
        if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (!strcmp(argv[i], "--qat") && i + 1 < argc) qat_recipe = argv[++i];
        else if (!strcmp(argv[i], "--convert")) convert = true;
        else if (!strcmp(argv[i], "--context")) {
            if (!parse_flag_long("eval", "--context", i + 1 < argc ? argv[++i] : NULL, 1, &context))
                return 2;
        } else if (!strcmp(argv[i], "--stride")) {
            if (!parse_flag_long("eval", "--stride", i + 1 < argc ? argv[++i] : NULL, 1, &stride))
                return 2;
        } else if (argv[i][0] != '-' && !model) model = argv[i];
        else {
            fprintf(stderr, "qtrain eval: unexpected argument '%s' (see qtrain eval --help)\n",
                    argv[i]);
            return 2;
        }
    }
    if (!model || !data) {
        fprintf(stderr, "usage: qtrain eval MODEL --data FILE [--context N] [--stride S]\n");
        return 2;
    }
    trained t;
    int rc = qt_cli_load("eval", model, qat_recipe, &t);
    if (rc) return rc;
    qt_status st = QT_OK;
    char qdesc[300] = "";
    if (t.qat) {
        char d[256];
        snprintf(qdesc, sizeof qdesc, ", quantized (%s%s)", qt_qat_describe(t.qat, d, sizeof d),
                 convert ? ", converted" : ", fake-quant");
    }
    if (convert && !t.qat) {
        fprintf(stderr, "qtrain eval: --convert needs a QAT model or --qat RECIPE\n");
        qt_cli_model_free(&t);
        return 2;
    }
    if (convert && (st = qt_qat_convert(t.qat, NULL, NULL)) != QT_OK) {
        fprintf(stderr, "qtrain eval: %s\n", qt_error_message());
        qt_cli_model_free(&t);
        return st == QT_ENUMERIC ? 2 : qt_cli_exit_code(st); /* weights the format cannot hold */
    }
    if (!context) context = qt_model_context(&t.m);
    if (!stride) stride = context / 2 ? context / 2 : 1;
    if (stride > context) {
        fprintf(stderr, "qtrain eval: --stride (%ld) must not exceed --context (%ld)\n", stride,
                context);
        qt_cli_model_free(&t);
        return 2;
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    rc = qt_cli_read_tokens("eval", data, t.tok, &ids, &n_ids);
    if (rc) {
        qt_cli_model_free(&t);
        return rc;
    }
    double ppl = 0, nll = 0;
    long count = 0;
    st = perplexity(&t.m, ids, (long)n_ids, context, stride, &ppl, &nll, &count);
    free(ids);
    qt_cli_model_free(&t);
    if (st != QT_OK) {
        fprintf(stderr, "qtrain eval: %s\n", qt_error_message());
        return qt_cli_exit_code(st);
    }
    printf("qtrain eval: %s%s on %s: %ld tokens (%s), context %ld, stride %ld: loss %.4f, "
           "perplexity %.4f\n", model, qdesc, data, count, t.r.data.tokenizer, context, stride,
           nll / (double)count, ppl);
    return 0;
}

int qt_cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = "";
    long tokens = 200, seed = 1;
    float temperature = 0.8f;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: qtrain generate MODEL [--prompt TEXT] [--tokens N] "
                   "[--temperature T] [--seed S]\n");
            return 0;
        }
        if (!strcmp(argv[i], "--prompt") && i + 1 < argc) prompt = argv[++i];
        else if (!strcmp(argv[i], "--tokens")) {
            if (!parse_flag_long("generate", "--tokens", i + 1 < argc ? argv[++i] : NULL, 1, &tokens))
                return 2;
        } else if (!strcmp(argv[i], "--seed")) {
            if (!parse_flag_long("generate", "--seed", i + 1 < argc ? argv[++i] : NULL, 0, &seed))
                return 2;
        } else if (!strcmp(argv[i], "--temperature")) {
            if (!parse_flag_float("generate", "--temperature", i + 1 < argc ? argv[++i] : NULL,
                                  &temperature))
                return 2;
        } else if (argv[i][0] != '-' && !model) model = argv[i];
        else {
            fprintf(stderr, "qtrain generate: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "usage: qtrain generate MODEL [--prompt TEXT] [--tokens N]\n");
        return 2;
    }
    trained t;
    int rc = qt_cli_load("generate", model, NULL, &t);
    if (rc) return rc;
    char *out = NULL;
    qt_ctx *ctx = qt_ctx_new();
    qt_status st = ctx ? qt_generate(ctx, &t.m, t.tok, prompt, (int)tokens, qt_model_context(&t.m),
                                     temperature, (uint64_t)seed, &out)
                       : QT_ERROR(QT_ENOMEM, "out of memory");
    if (st == QT_OK) {
        fwrite(out, 1, strlen(out), stdout);
        putchar('\n');
    } else {
        fprintf(stderr, "qtrain generate: %s\n", qt_error_message());
    }
    free(out);
    qt_ctx_free(ctx);
    qt_cli_model_free(&t);
    return qt_cli_exit_code(st);
}

/* One metadata value, short: scalars as they are, arrays as type and length. */
static void print_gguf_value(const qt_gguf *g, int64_t i) {
    const char *k = qt_gguf_key_at(g, i);
    union {
        uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
        uint64_t u64; int64_t i64; float f32; double f64; bool b;
    } v;
    switch (qt_gguf_kv_type(g, i)) {
    case QT_GGUF_U8: qt_gguf_get_u8(g, k, &v.u8); printf("%u", v.u8); break;
    case QT_GGUF_I8: qt_gguf_get_i8(g, k, &v.i8); printf("%d", v.i8); break;
    case QT_GGUF_U16: qt_gguf_get_u16(g, k, &v.u16); printf("%u", v.u16); break;
    case QT_GGUF_I16: qt_gguf_get_i16(g, k, &v.i16); printf("%d", v.i16); break;
    case QT_GGUF_U32: qt_gguf_get_u32(g, k, &v.u32); printf("%u", v.u32); break;
    case QT_GGUF_I32: qt_gguf_get_i32(g, k, &v.i32); printf("%d", v.i32); break;
    case QT_GGUF_U64: qt_gguf_get_u64(g, k, &v.u64); printf("%llu", (unsigned long long)v.u64); break;
    case QT_GGUF_I64: qt_gguf_get_i64(g, k, &v.i64); printf("%lld", (long long)v.i64); break;
    case QT_GGUF_F32: qt_gguf_get_f32(g, k, &v.f32); printf("%g", (double)v.f32); break;
    case QT_GGUF_F64: qt_gguf_get_f64(g, k, &v.f64); printf("%g", v.f64); break;
    case QT_GGUF_BOOL: qt_gguf_get_bool(g, k, &v.b); printf("%s", v.b ? "true" : "false"); break;
    case QT_GGUF_STRING: {
        const char *str = NULL;
        size_t len = 0;
        qt_gguf_get_str(g, k, &str, &len);
        printf("\"%.*s%s\"", len > 60 ? 60 : (int)len, str, len > 60 ? "..." : "");
        break;
    }
    case QT_GGUF_ARRAY: {
        qt_gguf_type et;
        uint64_t n = 0;
        qt_gguf_get_arr(g, k, &et, &n, NULL);
        printf("[%s x %llu]", qt_gguf_type_name(et), (unsigned long long)n);
        break;
    }
    default: printf("?");
    }
}

static int info_gguf(const char *path) {
    qt_gguf *g = NULL;
    if (qt_gguf_open(path, &g) != QT_OK) {
        fprintf(stderr, "qtrain info: %s\n", qt_error_message());
        return 2;
    }
    int64_t nt = qt_gguf_tensor_count(g);
    size_t bytes = 0;
    for (int64_t i = 0; i < nt; i++) bytes += qt_gguf_tensor_at(g, i)->nbytes;
    printf("%s: GGUF v%u, %lld metadata keys, %lld tensors, %zu bytes of tensor data\n", path,
           qt_gguf_version(g), (long long)qt_gguf_kv_count(g), (long long)nt, bytes);
    for (int64_t i = 0; i < qt_gguf_kv_count(g); i++) {
        printf("  %-44s ", qt_gguf_key_at(g, i));
        print_gguf_value(g, i);
        printf("\n");
    }
    for (int64_t i = 0; i < nt; i++) {
        const qt_gguf_tensor *t = qt_gguf_tensor_at(g, i);
        printf("  %-44s %-5s [", t->name, qt_ggml_type_name(t->type));
        for (int d = 0; d < t->n_dims; d++) printf(d ? ", %lld" : "%lld", (long long)t->ne[d]);
        printf("]\n");
    }
    qt_gguf_close(g);
    return 0;
}

int qt_cmd_info(int argc, char **argv) {
    bool help = argc == 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"));
    if (argc != 1 || argv[0][0] == '-') {
        fprintf(help ? stdout : stderr,
                "usage: qtrain info FILE   (a qtrain checkpoint, a GGUF or a safetensors file)\n");
        return help ? 0 : 2;
    }
    const char *path = argv[0];
    unsigned char magic[8] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "qtrain info: %s: %s\n", path, strerror(errno));
        return 2;
    }
    size_t got = fread(magic, 1, 8, f);
    fclose(f);
    if (got == 8 && !memcmp(magic, "\x89HDF\r\n\x1a\n", 8)) {
        trained t;
        int rc = load_model("info", path, true, &t);
        if (rc) return rc;
        const qt_recipe *rp = &t.r;
        printf("%s: qtrain checkpoint of run \"%s\" after %ld steps (data epoch %ld, seed %ld)\n",
               path, rp->name, t.cs.step, t.cs.data_epoch, t.cs.seed);
        qt_paramset *ps = qt_model_params(&t.m);
        if (rp->model.from[0]) printf("  model: fine-tuned from %s", rp->model.from);
        else printf("  model: llama, %d layers, dim %d, %d heads (%d kv), ffn %d, vocab %d",
                    rp->model.n_layers, rp->model.dim, rp->model.n_heads, rp->model.n_kv_heads,
                    rp->model.ffn_dim, rp->model.vocab_size);
        printf(", %zu parameters; tokenizer %s\n", ps->n_total, rp->data.tokenizer);
        if (t.lora[0]) printf("  adapter: %s, merged into the weights below\n", t.lora);
        for (int i = 0; i < ps->n; i++) {
            char b[64];
            printf("  %-48s %s\n", ps->params[i]->name, qt_shape_str(ps->params[i], b, sizeof b));
        }
        qt_cli_model_free(&t);
        return 0;
    }
    if (got >= 4 && !memcmp(magic, "GGUF", 4)) return info_gguf(path);
    qt_safetensors *st = NULL;
    qt_status s = qt_safetensors_open(path, &st);
    if (s != QT_OK) {
        fprintf(stderr, "qtrain info: %s is not a qtrain checkpoint, GGUF or readable "
                        "safetensors file: %s\n", path, qt_error_message());
        return 2;
    }
    int n = qt_safetensors_count(st);
    size_t bytes = 0;
    for (int i = 0; i < n; i++) bytes += qt_safetensors_at(st, i)->nbytes;
    printf("%s: safetensors, %d tensors, %zu bytes of data\n", path, n, bytes);
    for (int i = 0; i < n; i++) {
        const qt_st_tensor *t = qt_safetensors_at(st, i);
        printf("  %-48s %-5s [", t->name, qt_st_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) printf(d ? ", %lld" : "%lld", (long long)t->shape[d]);
        printf("]\n");
    }
    qt_safetensors_close(st);
    return 0;
}
