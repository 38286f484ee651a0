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

#include "checkpoint.h"
#include "cli.h"
#include "loop.h"
#include "qt_formats.h"
#include "recipe.h"

/* Rebuilds the model a checkpoint was trained as (from its stored recipe) and loads
 * its weights. */
static qt_status load_trained(const char *path, qt_recipe *r, qt_llama *m, qt_ckpt_state *cs) {
    char *text = NULL;
    qt_status st = qt_checkpoint_recipe(path, &text);
    if (st != QT_OK) return st;
    qt_recipe_defaults(r);
    st = qt_recipe_load_string(path, text, r);
    free(text);
    if (st != QT_OK) return st;
    qt_llama_config cfg = {.vocab_size = r->model.vocab_size, .dim = r->model.dim,
                           .n_layers = r->model.n_layers, .n_heads = r->model.n_heads,
                           .n_kv_heads = r->model.n_kv_heads, .ffn_dim = r->model.ffn_dim,
                           .rope_theta = r->model.rope_theta, .norm_eps = r->model.norm_eps,
                           .tied_embeddings = r->model.tied_embeddings};
    st = qt_llama_init(m, &cfg, 0);
    if (st != QT_OK) return st;
    st = qt_checkpoint_load(path, &m->params, NULL, cs);
    if (st != QT_OK) qt_llama_free(m);
    return st;
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
static qt_status perplexity(qt_llama *m, const unsigned char *text, long n, long ctxlen,
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
        qt_tensor *l = qt_cross_entropy(ctx, qt_llama_forward(ctx, m, x), y, -100);
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

int qt_cmd_eval(int argc, char **argv) {
    const char *model = NULL, *data = NULL;
    long context = 0, stride = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: qtrain eval CHECKPOINT.h5 --data FILE [--context N] [--stride S]\n"
                   "  perplexity per token of FILE by sliding windows of N tokens (default the\n"
                   "  model's max_seq_len) advancing S tokens (default N/2)\n");
            return 0;
        }
        if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
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
        fprintf(stderr, "usage: qtrain eval CHECKPOINT.h5 --data FILE [--context N] [--stride S]\n");
        return 2;
    }
    qt_recipe r;
    qt_llama m;
    qt_ckpt_state cs;
    qt_status st = load_trained(model, &r, &m, &cs);
    if (st != QT_OK) {
        fprintf(stderr, "qtrain eval: %s\n", qt_error_message());
        return qt_cli_exit_code(st);
    }
    if (!context) context = r.model.max_seq_len;
    if (!stride) stride = context / 2 ? context / 2 : 1;
    if (stride > context) {
        fprintf(stderr, "qtrain eval: --stride (%ld) must not exceed --context (%ld)\n", stride,
                context);
        qt_llama_free(&m);
        return 2;
    }
    FILE *f = fopen(data, "rb");
    unsigned char *text = NULL;
    long n = 0;
    if (f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0) {
        rewind(f);
        text = malloc((size_t)n + 1);
        if (text && fread(text, 1, (size_t)n, f) != (size_t)n) n = -1;
    }
    if (f) fclose(f);
    if (!f || !text || n < 2) {
        fprintf(stderr, "qtrain eval: %s: %s\n", data,
                !f ? strerror(errno) : n < 2 ? "needs at least 2 bytes of text" : "cannot read");
        free(text);
        qt_llama_free(&m);
        return 2;
    }
    double ppl = 0, nll = 0;
    long count = 0;
    st = perplexity(&m, text, n, context, stride, &ppl, &nll, &count);
    free(text);
    qt_llama_free(&m);
    if (st != QT_OK) {
        fprintf(stderr, "qtrain eval: %s\n", qt_error_message());
        return qt_cli_exit_code(st);
    }
    printf("qtrain eval: %s on %s: %ld tokens (bytes), context %ld, stride %ld: loss %.4f, "
           "perplexity %.4f\n", model, data, count, context, stride, nll / (double)count, ppl);
    return 0;
}

int qt_cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = "";
    long tokens = 200, seed = 1;
    float temperature = 0.8f;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: qtrain generate CHECKPOINT.h5 [--prompt TEXT] [--tokens N] "
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
        fprintf(stderr, "usage: qtrain generate CHECKPOINT.h5 [--prompt TEXT] [--tokens N]\n");
        return 2;
    }
    qt_recipe r;
    qt_llama m;
    qt_ckpt_state cs;
    qt_status st = load_trained(model, &r, &m, &cs);
    if (st != QT_OK) {
        fprintf(stderr, "qtrain generate: %s\n", qt_error_message());
        return qt_cli_exit_code(st);
    }
    size_t cap = strlen(prompt) + (size_t)tokens + 2;
    char *out = malloc(cap);
    qt_ctx *ctx = qt_ctx_new();
    st = out && ctx ? qt_generate_bytes(ctx, &m, prompt, (int)tokens, r.model.max_seq_len,
                                        temperature, (uint64_t)seed, out, cap)
                    : QT_ERROR(QT_ENOMEM, "out of memory");
    if (st == QT_OK) {
        fwrite(out, 1, strlen(out), stdout);
        putchar('\n');
    } else {
        fprintf(stderr, "qtrain generate: %s\n", qt_error_message());
    }
    free(out);
    qt_ctx_free(ctx);
    qt_llama_free(&m);
    return qt_cli_exit_code(st);
}

int qt_cmd_info(int argc, char **argv) {
    if (argc != 1 || argv[0][0] == '-') {
        fprintf(stderr, "usage: qtrain info FILE   (a qtrain checkpoint or a safetensors file)\n");
        return argc == 1 && !strcmp(argv[0], "--help") ? 0 : 2;
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
        qt_recipe r;
        qt_llama m;
        qt_ckpt_state cs;
        qt_status st = load_trained(path, &r, &m, &cs);
        if (st != QT_OK) {
            fprintf(stderr, "qtrain info: %s\n", qt_error_message());
            return qt_cli_exit_code(st);
        }
        printf("%s: qtrain checkpoint of run \"%s\" after %ld steps (data epoch %ld, seed %ld)\n",
               path, r.name, cs.step, cs.data_epoch, cs.seed);
        printf("  model: llama, %d layers, dim %d, %d heads (%d kv), ffn %d, vocab %d, "
               "%zu parameters\n", r.model.n_layers, r.model.dim, r.model.n_heads,
               r.model.n_kv_heads, r.model.ffn_dim, r.model.vocab_size, m.params.n_total);
        for (int i = 0; i < m.params.n; i++) {
            char b[64];
            printf("  %-48s %s\n", m.params.params[i]->name,
                   qt_shape_str(m.params.params[i], b, sizeof b));
        }
        qt_llama_free(&m);
        return 0;
    }
    qt_safetensors *st = NULL;
    qt_status s = qt_safetensors_open(path, &st);
    if (s != QT_OK) {
        fprintf(stderr, "qtrain info: %s is neither a qtrain checkpoint nor a readable "
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
